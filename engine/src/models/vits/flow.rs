//! The VITS prior flow, run in reverse: mean-only residual coupling layers, each a WaveNet
//! stack (gated tanh·sigmoid units) predicting a shift for one half of the channels from
//! the other, with the channel order reversed between layers.

use crate::kernels::activation;
use crate::kernels::conv::ConvShape;
use crate::kernels::Cpu;
use crate::models::nn::Conv;
use crate::tensors::{TensorError, Tensors};

use super::{dim, indices, VitsError};

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
                layers.push(WaveNetLayer {
                    input: Conv::same(t, &format!("{l}.in_layers.{j}"), ConvShape::new(hidden, 2 * hidden, kernel))?,
                    res_skip: Conv::same(t, &format!("{l}.res_skip_layers.{j}"), ConvShape::new(hidden, res_skip, 1))?,
                });
            }
            let post = Conv::same(t, &format!("{p}.post"), ConvShape::new(hidden, half, 1))?;
            couplings.push(Coupling { pre, layers, post, hidden });
        }
        Ok(Flow { couplings, channels })
    }

    /// Frames of context each side that decide one output frame: the flow is a stack of
    /// convolutions, so a window of the latent padded by this much is exact.
    pub fn context(&self) -> usize {
        self.couplings.iter().flat_map(|c| &c.layers).map(|l| (l.input.shape().span() - 1) / 2).sum()
    }

    /// Maps `z` (`[channels, len]`) from the prior to the decoder's latent, in place.
    pub fn reverse(&self, cpu: Cpu, z: &mut [f32], len: usize) -> Result<(), VitsError> {
        for coupling in self.couplings.iter().rev() {
            // Undo the flip that followed this layer: reverse the channel order.
            for c in 0..self.channels / 2 {
                let (a, b) = z.split_at_mut((self.channels - 1 - c) * len);
                a[c * len..][..len].swap_with_slice(&mut b[..len]);
            }
            coupling.reverse(cpu, z, len)?;
        }
        Ok(())
    }
}

impl Coupling {
    fn reverse(&self, cpu: Cpu, z: &mut [f32], len: usize) -> Result<(), VitsError> {
        let half = z.len() / 2;
        let (x0, x1) = z.split_at_mut(half);
        let mut x = self.pre.forward(cpu, x0, len)?;
        let h = self.hidden * len;
        let mut skip = vec![0.0; h];
        for (i, layer) in self.layers.iter().enumerate() {
            let mut gates = layer.input.forward(cpu, &x, len)?;
            let (a, b) = gates.split_at_mut(h);
            activation::tanh(cpu, a);
            activation::sigmoid(cpu, b);
            a.iter_mut().zip(b.iter()).for_each(|(t, s)| *t *= s);
            let out = layer.res_skip.forward(cpu, a, len)?;
            if i + 1 < self.layers.len() {
                x.iter_mut().zip(&out[..h]).for_each(|(v, r)| *v += r);
                skip.iter_mut().zip(&out[h..]).for_each(|(v, s)| *v += s);
            } else {
                skip.iter_mut().zip(&out).for_each(|(v, s)| *v += s);
            }
        }
        let shift = self.post.forward(cpu, &skip, len)?;
        x1.iter_mut().zip(&shift).for_each(|(v, m)| *v -= m);
        Ok(())
    }
}
