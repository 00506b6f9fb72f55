//! The HiFi-GAN generator: the latent (`[channels, frames]`) to audio, through transposed
//! convolutions that upsample by the hop size in stages, each followed by the mean of
//! multi-receptive-field residual blocks.

use rayon::prelude::*;

use crate::kernels::conv::{ConvError, ConvShape, StreamingConv1d};
use crate::kernels::Cpu;
use crate::kernels::{activation, rows};
use crate::models::nn::{Conv, ConvTranspose};
use crate::models::stream::{Block, Chain, ConvStream, Queue, Stream};
use crate::tensors::Tensors;

use super::{dim, ConvLookup, Precision, VitsError};
use crate::onnx::ConvAttrs;

/// Under [`Precision::Mixed`], convolutions reading at most this many channels multiply in
/// bf16: the last two upsampling stages, 70 % of the generator's arithmetic. Measured on
/// the joe voice: audio 46-48 dB from the reference's (all stages in bf16: 38-44 dB).
pub const BF16_CHANNELS: usize = 128;

/// HiFi-GAN's leaky-ReLU slope inside the network; the last one uses PyTorch's default.
const SLOPE: f32 = 0.1;
const POST_SLOPE: f32 = 0.01;

/// A residual block: stages of (leaky ReLU, convolution)… whose output is added back.
/// HiFi-GAN's type-1 blocks have two convolutions per stage, type-2 blocks one.
struct ResBlock {
    stages: Vec<Vec<Conv>>,
}

struct Stage {
    up: ConvTranspose,
    blocks: Vec<ResBlock>,
}

pub struct Generator {
    pre: Conv,
    stages: Vec<Stage>,
    post: Conv,
    hop: usize,
}

/// A `same`-padded convolution with the dilation the graph states.
fn conv(t: &mut Tensors, attrs: &ConvLookup, module: &str) -> Result<Conv, VitsError> {
    let [out, inp, kernel] = dim::<3>(t, &format!("{module}.weight"))?;
    let dilation = geometry(attrs, module)?.dilation;
    let bias = t.contains(&format!("{module}.bias"));
    let shape = ConvShape::new(inp, out, kernel).dilation(dilation);
    Ok(Conv::load(t, module, shape, (shape.span() - 1) / 2, bias)?)
}

/// HiFi-GAN configurations differ in strides and dilations, which the weights do not show.
fn geometry(attrs: &ConvLookup, module: &str) -> Result<ConvAttrs, VitsError> {
    attrs(module).ok_or_else(|| VitsError::Geometry(module.to_string()))
}

impl ResBlock {
    fn load(t: &mut Tensors, attrs: &ConvLookup, module: &str) -> Result<ResBlock, VitsError> {
        let mut stages = Vec::new();
        if t.contains(&format!("{module}.convs1.0.weight")) {
            // Type 1: (conv, conv) per stage.
            while t.contains(&format!("{module}.convs1.{}.weight", stages.len())) {
                let i = stages.len();
                let first = conv(t, attrs, &format!("{module}.convs1.{i}"))?;
                stages.push(vec![first, conv(t, attrs, &format!("{module}.convs2.{i}"))?]);
            }
        } else {
            // Type 2: one conv per stage.
            while t.contains(&format!("{module}.convs.{}.weight", stages.len())) {
                stages.push(vec![conv(t, attrs, &format!("{module}.convs.{}", stages.len()))?]);
            }
        }
        Ok(ResBlock { stages })
    }
}

impl Generator {
    pub fn load(t: &mut Tensors, attrs: &ConvLookup) -> Result<Generator, VitsError> {
        let pre = conv(t, attrs, "dec.conv_pre")?;
        let mut stages = Vec::new();
        let mut block = 0;
        while t.contains(&format!("dec.ups.{}.weight", stages.len())) {
            let i = stages.len();
            let module = format!("dec.ups.{i}");
            let [inp, out, kernel] = dim::<3>(t, &format!("{module}.weight"))?;
            let ConvAttrs { stride, pads: (crop, _), .. } = geometry(attrs, &module)?;
            let up = ConvTranspose::load(t, &module, ConvShape::new(inp, out, kernel).stride(stride), crop)?;
            // Blocks are numbered across stages; a stage's blocks have its channel count.
            let mut blocks = Vec::new();
            t.get(&format!("dec.resblocks.{block}.convs.0.weight"))
                .or_else(|_| t.get(&format!("dec.resblocks.{block}.convs1.0.weight")))?;
            while block_channels(t, block) == Some(out) {
                blocks.push(ResBlock::load(t, attrs, &format!("dec.resblocks.{block}"))?);
                block += 1;
            }
            stages.push(Stage { up, blocks });
        }
        let post = conv(t, attrs, "dec.conv_post")?;
        let hop = stages.iter().map(|s| s.up.shape().stride).product();
        Ok(Generator { pre, stages, post, hop })
    }

    /// Audio samples per latent frame.
    pub fn hop(&self) -> usize {
        self.hop
    }

    /// Sets the arithmetic of the residual blocks' convolutions (and the output
    /// convolution) that read at most `BF16_CHANNELS` channels.
    pub fn set_precision(&mut self, precision: Precision) {
        let method = precision.method();
        let blocks = self.stages.iter_mut().flat_map(|s| &mut s.blocks).flat_map(|b| &mut b.stages).flatten();
        for conv in blocks.chain([&mut self.post]) {
            if conv.shape().in_channels <= BF16_CHANNELS {
                conv.set_method(method).expect("a direct method does every stride-1, one-group convolution");
            }
        }
        for stage in &mut self.stages {
            if stage.up.shape().in_channels <= BF16_CHANNELS {
                stage.up.set_method(method).expect("a direct method does every one-group upsampling");
            }
        }
    }

    /// `hop · frames` samples from `z` (`[channels, frames]`): the stream fed at once.
    pub fn forward(&self, cpu: Cpu, z: &[f32], frames: usize) -> Result<Vec<f32>, VitsError> {
        self.stream().finish(cpu, z, frames)
    }

    /// A decoder fed the latent a few frames at a time, whose output, concatenated, is
    /// [`forward`](Self::forward)'s bit for bit.
    pub fn stream(&self) -> GeneratorStream<'_> {
        let mut chain: Vec<Box<dyn Stream + Send + '_>> = vec![Box::new(ConvStream::new(&self.pre, None))];
        for stage in &self.stages {
            chain.push(Box::new(ConvStream::up(&stage.up, SLOPE)));
            let branches = stage.blocks.iter().map(|b| b.stream()).collect();
            chain.push(Box::new(Mean::new(branches, stage.up.shape().out_channels)));
        }
        chain.push(Box::new(ConvStream::new(&self.post, Some(POST_SLOPE))));
        // The last stage (upsampler, residual blocks, output convolution) is the back.
        let back = Chain(chain.split_off(chain.len().saturating_sub(3)));
        let channels = self.pre.shape().in_channels;
        GeneratorStream { front: Chain(chain), back, pending: None, pushes: 0, channels }
    }
}

/// Pushes of a stream that go straight through before the pipeline fills. The first is the
/// first audio. The second is the audio that must come before the first push's has played
/// (in the speech source, after the flow's second call): filling the pipeline there made it
/// wait for two pushes, and a Zen 1 with four busy loops on its two cores underran 99 times
/// in 36 sentences, against 29 with the second push straight (docs/BENCHMARKS.md).
/// One push of a sentence's dozen loses the overlap, which gains about 7 % a push.
pub const STRAIGHT: usize = 2;

/// The generator run incrementally; see [`Generator::stream`].
///
/// It runs as two pipelined halves: after the first [`STRAIGHT`] pushes, the last stage works
/// on the previous push's frames while the earlier stages work on this push's, both at once
/// on the pool, which fills the gaps each leaves between its parallel kernels. So a later push
/// returns the audio of the push before it (the straight ones return their own, and the one
/// after them none); the concatenated output is the same.
pub struct GeneratorStream<'g> {
    front: Chain<Box<dyn Stream + Send + 'g>>,
    back: Chain<Box<dyn Stream + Send + 'g>>,
    /// The front's output of the last push, not yet through the back.
    pending: Option<Block>,
    /// Pushes that have gone through.
    pushes: usize,
    channels: usize,
}

impl GeneratorStream<'_> {
    /// Feeds `frames` latent frames (`[channels, frames]`) and returns the audio completed
    /// so far (see the type's description); the rest follows with later frames or at
    /// [`finish`](Self::finish).
    pub fn push(&mut self, cpu: Cpu, z: &[f32], frames: usize) -> Result<Vec<f32>, VitsError> {
        self.feed(cpu, z, frames, false)
    }

    /// Feeds the last `frames` latent frames (possibly none) and returns all the audio
    /// still to come, including what was held back for the right context.
    pub fn finish(&mut self, cpu: Cpu, z: &[f32], frames: usize) -> Result<Vec<f32>, VitsError> {
        self.feed(cpu, z, frames, true)
    }

    fn feed(&mut self, cpu: Cpu, z: &[f32], frames: usize, end: bool) -> Result<Vec<f32>, VitsError> {
        let block = Block::new(z.to_vec(), self.channels, frames);
        let (front, back) = (&mut self.front, &mut self.back);
        self.pushes += 1;
        let mut audio = match self.pending.take() {
            // Nothing in flight: the first pushes go straight through, so their audio waits
            // for nothing; the one after them fills the pipeline.
            None if self.pushes > STRAIGHT && !end => {
                self.pending = Some(front.push(cpu, &block, false)?);
                Vec::new()
            }
            None => {
                let mid = front.push(cpu, &block, end)?;
                back.push(cpu, &mid, end)?.data
            }
            Some(previous) => {
                let (mid, out) = rayon::join(|| front.push(cpu, &block, end), || back.push(cpu, &previous, false));
                let mut audio = out?.data;
                let mid = mid?;
                if end {
                    audio.extend(back.push(cpu, &mid, true)?.data);
                } else {
                    self.pending = Some(mid);
                }
                audio
            }
        };
        activation::tanh(cpu, &mut audio);
        Ok(audio)
    }
}

/// `x + f(x)`: the input waits in `skip` until `f` (which lags by its right padding) has
/// produced the matching outputs.
struct Residual<'g> {
    body: Chain<ConvStream<StreamingConv1d<'g, f32>>>,
    skip: Queue,
}

impl Stream for Residual<'_> {
    fn push(&mut self, cpu: Cpu, x: &Block, end: bool) -> Result<Block, ConvError> {
        let mut y = self.body.push(cpu, x, end)?;
        // f(x) + x, as the reference adds them.
        self.skip.push_and_add_into(cpu, x, &mut y);
        Ok(y)
    }
}

impl ResBlock {
    fn stream(&self) -> Box<dyn Stream + Send + '_> {
        let stages = self
            .stages
            .iter()
            .map(|convs| {
                let body = Chain(convs.iter().map(|c| ConvStream::new(c, Some(SLOPE))).collect());
                Residual { body, skip: Queue::new(convs[0].shape().in_channels) }
            })
            .collect();
        Box::new(Chain(stages))
    }
}

/// The mean of parallel branches fed the same input (run on the thread pool: they are
/// independent); each branch's output waits in its queue until every branch has reached
/// that point.
struct Mean<'g> {
    branches: Vec<Box<dyn Stream + Send + 'g>>,
    queues: Vec<Queue>,
}

impl<'g> Mean<'g> {
    fn new(branches: Vec<Box<dyn Stream + Send + 'g>>, channels: usize) -> Self {
        let queues = branches.iter().map(|_| Queue::new(channels)).collect();
        Mean { branches, queues }
    }
}

impl Stream for Mean<'_> {
    fn push(&mut self, cpu: Cpu, x: &Block, end: bool) -> Result<Block, ConvError> {
        let outputs: Vec<Result<Block, ConvError>> =
            self.branches.par_iter_mut().map(|branch| branch.push(cpu, x, end)).collect();
        for (queue, out) in self.queues.iter_mut().zip(outputs) {
            queue.push(out?);
        }
        // Σ branches in order, then ÷ n, as the reference computes the mean.
        let ready = self.queues.iter().map(Queue::len).min().unwrap_or(0);
        let (first, rest) = self.queues.split_first_mut().expect("a stage has residual blocks");
        let mut sum = first.take(ready);
        for queue in rest {
            queue.add_into(cpu, &mut sum);
        }
        let n = self.branches.len() as f32;
        rows::for_each_row_mut(&mut sum.data, ready, |_, row| row.iter_mut().for_each(|s| *s /= n));
        Ok(sum)
    }
}

fn block_channels(t: &Tensors, block: usize) -> Option<usize> {
    ["convs", "convs1"]
        .iter()
        .find_map(|c| t.get(&format!("dec.resblocks.{block}.{c}.0.weight")).ok().map(|w| w.shape()[0]))
}
