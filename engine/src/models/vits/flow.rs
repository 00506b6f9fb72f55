//! The VITS prior flow, run in reverse: mean-only residual coupling layers, each a WaveNet
//! stack (gated tanh·sigmoid units) predicting a shift for one half of the channels from
//! the other, with the channel order reversed between layers.

use rayon::prelude::*;

use crate::kernels::activation;
use crate::kernels::conv::{ChunkedConv, ConvError, ConvShape, StreamingConv1d};
use crate::kernels::Cpu;
use crate::models::nn::{rows_per_task, Conv};
use crate::models::stream::{Block, Chain, Queue, Stream};
use crate::tensors::{TensorError, Tensors};

use super::{dim, indices, Latent, VitsError};

/// One WaveNet layer: a dilated convolution to 2·hidden gate inputs and a 1×1 convolution
/// to the residual and skip outputs (skip only, in the last layer).
struct WaveNetLayer {
    input: Conv,
    res_skip: Conv,
}

struct Coupling {
    pre: Conv,
    layers: Vec<WaveNetLayer>,
    post: Conv,
    hidden: usize,
}

pub struct Flow {
    /// In forward order; reverse runs them last to first.
    couplings: Vec<Coupling>,
    channels: usize,
}

impl Flow {
    pub fn load(t: &mut Tensors) -> Result<Flow, TensorError> {
        let mut couplings = Vec::new();
        let mut channels = 0;
        for i in indices(t, "flow.flows.", ".pre.weight") {
            let p = format!("flow.flows.{i}");
            let [hidden, half, _] = dim::<3>(t, &format!("{p}.pre.weight"))?;
            channels = 2 * half;
            let pre = Conv::same(t, &format!("{p}.pre"), ConvShape::new(half, hidden, 1))?;
            let mut layers = Vec::new();
            while t.contains(&format!("{p}.enc.in_layers.{}.weight", layers.len())) {
                let l = format!("{p}.enc");
                let j = layers.len();
                let [_, _, kernel] = dim::<3>(t, &format!("{l}.in_layers.{j}.weight"))?;
                let [res_skip, ..] = dim::<3>(t, &format!("{l}.res_skip_layers.{j}.weight"))?;
                // Every Piper voice's flow has kernel 5 and no dilation: Winograd does 2.5
                // times fewer multiply-adds.
                let input = Conv::same(t, &format!("{l}.in_layers.{j}"), ConvShape::new(hidden, 2 * hidden, kernel))?
                    .winograd_where_supported();
                layers.push(WaveNetLayer {
                    input,
                    res_skip: Conv::same(t, &format!("{l}.res_skip_layers.{j}"), ConvShape::new(hidden, res_skip, 1))?,
                });
            }
            let post = Conv::same(t, &format!("{p}.post"), ConvShape::new(hidden, half, 1))?;
            couplings.push(Coupling { pre, layers, post, hidden });
        }
        // Winograd tiles placed so that a stream fed whole tiles (multiples of 4 frames)
        // holds none back: each convolution's phase is the flow's lag at its output, in the
        // order the reverse flow runs them.
        let mut lag = 0;
        for layer in couplings.iter_mut().rev().flat_map(|c| &mut c.layers) {
            lag += layer.input.pad().1;
            layer.input.set_winograd_phase(lag % 4).expect("below 4");
        }
        Ok(Flow { couplings, channels })
    }

    /// Channels of the latent it maps.
    pub fn channels(&self) -> usize {
        self.channels
    }

    /// Input frames past a latent frame that [`Flow::stream`] needs before it lets that
    /// frame out, when it is fed multiples of 4 frames (as the speech source does): each
    /// WaveNet convolution's right half-span. Fed other counts, its Winograd convolutions
    /// hold back up to 3 frames each until a tile is whole.
    pub fn look_ahead(&self) -> usize {
        self.couplings.iter().flat_map(|c| &c.layers).map(|l| l.input.pad().1).sum()
    }

    /// Maps `z` (`[channels, len]`) from the prior to the decoder's latent: the stream fed
    /// at once.
    pub fn reverse(&self, cpu: Cpu, z: &[f32], len: usize) -> Result<Vec<f32>, VitsError> {
        Ok(self.stream().finish(cpu, z, len)?.z)
    }

    /// The reverse flow fed the prior a few frames at a time: what it returns, concatenated,
    /// is [`reverse`](Self::reverse)'s output bit for bit, [`look_ahead`](Self::look_ahead)
    /// frames behind the input until [`FlowStream::finish`] when fed multiples of 4 frames.
    pub fn stream(&self) -> FlowStream<'_> {
        let couplings = self.couplings.iter().rev().map(|c| c.stream(self.channels)).collect();
        FlowStream { chain: Chain(couplings), channels: self.channels }
    }
}

/// The flow run incrementally; see [`Flow::stream`].
pub struct FlowStream<'f> {
    chain: Chain<CouplingStream<'f>>,
    channels: usize,
}

impl FlowStream<'_> {
    /// Feeds `frames` frames of the prior (`[channels, frames]`); returns the latent frames
    /// they complete.
    pub fn push(&mut self, cpu: Cpu, z: &[f32], frames: usize) -> Result<Latent, VitsError> {
        self.feed(cpu, z, frames, false)
    }

    /// Feeds the last `frames` frames of the prior (possibly none); returns every latent
    /// frame still to come.
    pub fn finish(&mut self, cpu: Cpu, z: &[f32], frames: usize) -> Result<Latent, VitsError> {
        self.feed(cpu, z, frames, true)
    }

    fn feed(&mut self, cpu: Cpu, z: &[f32], frames: usize, end: bool) -> Result<Latent, VitsError> {
        Ok(self.chain.push(cpu, &Block::new(z.to_vec(), self.channels, frames), end)?.into())
    }
}

impl Coupling {
    fn stream(&self, channels: usize) -> CouplingStream<'_> {
        let last = self.layers.len().saturating_sub(1);
        let layers = self.layers.iter().enumerate().map(|(i, l)| l.stream(self.hidden, i == 0, i == last)).collect();
        let half = channels / 2;
        CouplingStream { coupling: self, wave_net: Chain(layers), x0: Queue::new(half), x1: Queue::new(half) }
    }
}

/// One coupling layer in reverse: the channels flipped back, then the second half shifted by
/// what the WaveNet predicts from the first; both halves wait for the WaveNet's look-ahead.
struct CouplingStream<'f> {
    coupling: &'f Coupling,
    wave_net: Chain<WaveNetStream<'f>>,
    x0: Queue,
    x1: Queue,
}

impl CouplingStream<'_> {
    /// The coupled output for the WaveNet's new skip sum.
    fn couple(&mut self, cpu: Cpu, skip: Block) -> Result<Block, ConvError> {
        let n = skip.len;
        let shift = self.coupling.post.forward(cpu, &skip.data, n)?;
        let x0 = self.x0.take(n);
        let mut x1 = self.x1.take(n);
        x1.data.iter_mut().zip(&shift).for_each(|(v, m)| *v -= m);
        let mut data = x0.data;
        data.extend_from_slice(&x1.data);
        Ok(Block::new(data, 2 * x0.channels, n))
    }
}

impl Stream for CouplingStream<'_> {
    fn push(&mut self, cpu: Cpu, z: &Block, end: bool) -> Result<Block, ConvError> {
        // Undo the flip that followed this layer: reverse the channel order.
        let (n, half) = (z.len, z.channels / 2);
        let flipped: Vec<f32> = z.data.chunks_exact(n.max(1)).rev().flatten().copied().collect();
        let (x0, x1) = flipped.split_at(half * n);
        let h = self.coupling.pre.forward(cpu, x0, n)?;
        self.x0.push(Block::new(x0.to_vec(), half, n));
        self.x1.push(Block::new(x1.to_vec(), half, n));
        let skip = self.wave_net.push(cpu, &Block::new(h, self.coupling.hidden, n), end)?;
        self.couple(cpu, skip)
    }
}

impl WaveNetLayer {
    fn stream(&self, hidden: usize, first: bool, last: bool) -> WaveNetStream<'_> {
        WaveNetStream {
            layer: self,
            input: StreamingConv1d::new(self.input.kernel(), self.input.pad()),
            x: Queue::new(hidden),
            skip: Queue::new(hidden),
            hidden,
            first,
            last,
        }
    }
}

/// One WaveNet layer over `[x; skip]` blocks (`x` alone into the first layer, the skip sum
/// alone out of the last): the gated convolution of `x` is added to `x` and to the skip
/// sum, which wait for it in queues.
struct WaveNetStream<'f> {
    layer: &'f WaveNetLayer,
    input: StreamingConv1d<'f, f32>,
    x: Queue,
    skip: Queue,
    hidden: usize,
    first: bool,
    last: bool,
}

impl WaveNetStream<'_> {
    /// The layer's output for `n` new gate columns in `gates`.
    fn output(&mut self, cpu: Cpu, mut gates: Vec<f32>, n: usize) -> Result<Block, ConvError> {
        let h = self.hidden * n;
        let (a, b) = gates.split_at_mut(h);
        // On the pool, blocks of rows (flow stage on a Zen 1 about 5 % faster).
        let rows = rows_per_task(n);
        a.par_chunks_mut(rows).zip(b.par_chunks_mut(rows)).for_each(|(a, b)| {
            activation::tanh(cpu, a);
            activation::sigmoid(cpu, b);
            a.iter_mut().zip(b.iter()).for_each(|(t, s)| *t *= s);
        });
        let out = self.layer.res_skip.forward(cpu, a, n)?;
        let (res, skip_part) = if self.last { (&[][..], &out[..]) } else { out.split_at(h) };
        // The skip sum starts at zero, as the whole-signal reference's does.
        let mut skip = if self.first { Block::new(vec![0.0; h], self.hidden, n) } else { self.skip.take(n) };
        skip.data.iter_mut().zip(skip_part).for_each(|(v, s)| *v += s);
        let mut x = self.x.take(n);
        if self.last {
            return Ok(skip);
        }
        x.data.iter_mut().zip(res).for_each(|(v, r)| *v += r);
        x.data.extend_from_slice(&skip.data);
        Ok(Block::new(x.data, 2 * self.hidden, n))
    }
}

impl Stream for WaveNetStream<'_> {
    fn push(&mut self, cpu: Cpu, block: &Block, end: bool) -> Result<Block, ConvError> {
        let n = block.len;
        let (x, skip) = block.data.split_at(self.hidden * n);
        self.x.push(Block::new(x.to_vec(), self.hidden, n));
        if !self.first {
            self.skip.push(Block::new(skip.to_vec(), self.hidden, n));
        }
        let mut gates = Vec::new();
        let m =
            if end { self.input.finish(cpu, x, n, &mut gates)? } else { self.input.process(cpu, x, n, &mut gates)? };
        self.output(cpu, gates, m)
    }
}
