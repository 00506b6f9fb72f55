//! The upsampling stages between the pre-transformer and the decoder blocks: each a causal
//! transposed convolution (kernel = stride = its ratio) and a ConvNeXt block.

use crate::checkpoint::Checkpoint;
use crate::kernels::conv::{ChunkedConv, ConvError, ConvShape, StreamingConv1d};
use crate::kernels::{activation, Cpu};
use crate::models::qwen3::LoadError;
use crate::models::stream::{Block, Stream};

use super::conv::{CausalConv, CausalUp, Residual, SnakeConv};
use super::transpose;
use crate::models::qwen3::transformer::Linear;

/// nn.LayerNorm's epsilon in the ConvNeXt block.
const NORM_EPS: f32 = 1e-6;

/// A ConvNeXt block (`Qwen3TTSTokenizerV2ConvNeXtBlock`): a causal depthwise convolution,
/// then per time step LayerNorm, a 4× GELU MLP and a per-channel gain, added to the input.
#[derive(Clone, Debug)]
struct ConvNeXt {
    dwconv: CausalConv,
    norm_weight: Vec<f32>,
    norm_bias: Vec<f32>,
    pwconv1: Linear,
    pwconv2: Linear,
    gamma: Vec<f32>,
}

impl ConvNeXt {
    fn load(ckpt: &Checkpoint, module: &str, dim: usize) -> Result<ConvNeXt, LoadError> {
        let vector = |name: &str| ckpt.f32(&format!("{module}.{name}"), &[dim]);
        Ok(ConvNeXt {
            dwconv: CausalConv::load(ckpt, &format!("{module}.dwconv"), ConvShape::new(dim, dim, 7).groups(dim))?,
            norm_weight: vector("norm.weight")?,
            norm_bias: vector("norm.bias")?,
            pwconv1: Linear::load(ckpt, &format!("{module}.pwconv1"), 4 * dim, dim, true)?,
            pwconv2: Linear::load(ckpt, &format!("{module}.pwconv2"), dim, 4 * dim, true)?,
            gamma: vector("gamma")?,
        })
    }

    /// The block's branch after the depthwise convolution, on `y` (`[dim, len]`): every time
    /// step on its own, so any chunking gives the same bits.
    fn pointwise(&self, cpu: Cpu, y: &[f32], len: usize) -> Vec<f32> {
        let dim = self.gamma.len();
        let steps = transpose(y, dim, len);
        let mut normed = vec![0.0; steps.len()];
        for (x, out) in steps.chunks_exact(dim).zip(normed.chunks_exact_mut(dim)) {
            activation::layer_norm(cpu, x, &self.norm_weight, &self.norm_bias, NORM_EPS, out);
        }
        let mut hidden = self.pwconv1.rows(cpu, &normed, len);
        activation::gelu_erf(cpu, &mut hidden);
        let mut out = self.pwconv2.rows(cpu, &hidden, len);
        out.chunks_exact_mut(dim).for_each(|step| step.iter_mut().zip(&self.gamma).for_each(|(v, g)| *v *= g));
        transpose(&out, len, dim)
    }
}

/// The ConvNeXt branch as a stream: the depthwise convolution carries its left context.
struct ConvNeXtBranch<'d> {
    block: &'d ConvNeXt,
    dwconv: StreamingConv1d<'d, f32>,
}

impl Stream for ConvNeXtBranch<'_> {
    fn push(&mut self, cpu: Cpu, x: &Block, end: bool) -> Result<Block, ConvError> {
        let mut y = Vec::new();
        let len = if end {
            self.dwconv.finish(cpu, &x.data, x.len, &mut y)?
        } else {
            self.dwconv.process(cpu, &x.data, x.len, &mut y)?
        };
        Ok(Block::new(self.block.pointwise(cpu, &y, len), x.channels, len))
    }
}

/// One upsampling stage: `upsample.{i}.0` (the transposed convolution) and `upsample.{i}.1`
/// (the ConvNeXt block).
#[derive(Clone, Debug)]
pub(crate) struct UpStage {
    up: CausalUp,
    block: ConvNeXt,
}

impl UpStage {
    pub fn load(ckpt: &Checkpoint, module: &str, dim: usize, ratio: usize) -> Result<UpStage, LoadError> {
        let up = CausalUp::load(ckpt, &format!("{module}.0"), ConvShape::new(dim, dim, ratio).stride(ratio))?;
        Ok(UpStage { up, block: ConvNeXt::load(ckpt, &format!("{module}.1"), dim)? })
    }

    /// The stage's stream pieces, in order.
    pub fn streams(&self) -> Vec<Box<dyn Stream + Send + '_>> {
        let branch = ConvNeXtBranch { block: &self.block, dwconv: self.block.dwconv.stream() };
        vec![Box::new(SnakeConv::new(None, self.up.stream())), Box::new(Residual(branch))]
    }
}
