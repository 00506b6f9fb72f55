//! The decoder's convolutions and the stream stages built from them.
//!
//! Every convolution of the decoder is causal: `Qwen3TTSTokenizerV2CausalConvNet` pads
//! `span − 1` zeros on the left (all its uses have stride 1, so its extra right padding is
//! always 0) and `Qwen3TTSTokenizerV2CausalTransConvNet` crops `kernel − stride` positions
//! from the right. A stream of either therefore returns, for each push, exactly the outputs
//! of the inputs pushed so far (times the stride), holding nothing back; residual branches
//! line up with their inputs without a queue.

use crate::checkpoint::Checkpoint;
use crate::kernels::conv::{
    ChunkedConv, Conv1d, ConvError, ConvMethod, ConvShape, ConvTranspose1d, MethodChoice, StreamingConv1d,
    StreamingConvTranspose1d,
};
use crate::kernels::Cpu;
use crate::models::qwen3::LoadError;
use crate::models::stream::{Block, Stream};

use super::snake::SnakeBeta;

/// A shape the checkpoint's tensors passed but the kernel refused (a config value no
/// convolution can have): named, with its module.
fn refused(ckpt: &Checkpoint, module: &str, e: ConvError) -> LoadError {
    LoadError::Mismatch { dir: ckpt.path().into(), problem: format!("{module}: {e}") }
}

/// A causal convolution: `{module}.conv.weight` (`[out, in/groups, kernel]`) and its bias.
#[derive(Clone, Debug)]
pub(crate) struct CausalConv {
    shape: ConvShape,
    weight: Vec<f32>,
    bias: Vec<f32>,
    method: MethodChoice,
}

impl CausalConv {
    pub fn load(ckpt: &Checkpoint, module: &str, shape: ConvShape) -> Result<CausalConv, LoadError> {
        let per_out = shape.in_channels / shape.groups.max(1);
        let weight = ckpt.f32(&format!("{module}.conv.weight"), &[shape.out_channels, per_out, shape.kernel])?;
        let bias = ckpt.f32(&format!("{module}.conv.bias"), &[shape.out_channels])?;
        Conv1d::new(shape, &weight, Some(&bias)).map_err(|e| refused(ckpt, module, e))?;
        Ok(CausalConv { shape, weight, bias, method: MethodChoice::default() })
    }

    /// Computes with `method` instead of the one the shape picks; an error if it cannot.
    pub fn set_method(&mut self, method: ConvMethod) -> Result<(), ConvError> {
        self.method.set(Conv1d::new(self.shape, &self.weight, Some(&self.bias))?, method)
    }

    /// A stream that starts from the zero padding: its outputs are the whole signal's.
    pub fn stream(&self) -> StreamingConv1d<'_, f32> {
        let conv = Conv1d::new(self.shape, &self.weight, Some(&self.bias)).expect("checked at load");
        StreamingConv1d::new(self.method.apply(conv), (self.shape.span() - 1, 0))
    }
}

/// A causal transposed convolution (upsampling by its stride): `{module}.conv.weight`
/// (`[in, out, kernel]`) and its bias, with `kernel − stride` positions cropped on the right
/// (the decoder's kernels are never shorter than their strides).
#[derive(Clone, Debug)]
pub(crate) struct CausalUp {
    kernel: ConvTranspose1d,
}

impl CausalUp {
    pub fn load(ckpt: &Checkpoint, module: &str, shape: ConvShape) -> Result<CausalUp, LoadError> {
        let weight =
            ckpt.f32(&format!("{module}.conv.weight"), &[shape.in_channels, shape.out_channels, shape.kernel])?;
        let bias = ckpt.f32(&format!("{module}.conv.bias"), &[shape.out_channels])?;
        let kernel = ConvTranspose1d::new(shape, &weight, Some(&bias)).map_err(|e| refused(ckpt, module, e))?;
        Ok(CausalUp { kernel })
    }

    /// See [`ConvTranspose1d::set_method`].
    pub fn set_method(&mut self, method: ConvMethod) -> Result<(), ConvError> {
        self.kernel.set_method(method)
    }

    pub fn stream(&self) -> StreamingConvTranspose1d<'_> {
        let s = self.kernel.shape();
        StreamingConvTranspose1d::new(&self.kernel, (0, s.kernel - s.stride))
    }
}

/// A streaming convolution (plain or transposed) whose input may first go through a
/// SnakeBeta.
pub(crate) struct SnakeConv<'d, S> {
    snake: Option<&'d SnakeBeta>,
    conv: S,
}

impl<'d, S: ChunkedConv> SnakeConv<'d, S> {
    pub fn new(snake: Option<&'d SnakeBeta>, conv: S) -> Self {
        SnakeConv { snake, conv }
    }
}

impl<S: ChunkedConv> Stream for SnakeConv<'_, S> {
    fn push(&mut self, cpu: Cpu, x: &Block, end: bool) -> Result<Block, ConvError> {
        let activated = self.snake.map(|snake| snake.apply(cpu, x));
        let input = activated.as_ref().unwrap_or(x);
        let mut data = Vec::new();
        let len = if end {
            self.conv.finish(cpu, &input.data, input.len, &mut data)?
        } else {
            self.conv.process(cpu, &input.data, input.len, &mut data)?
        };
        Ok(Block::new(data, self.conv.out_channels(), len))
    }
}

/// `x + f(x)` for a causal `f` that keeps the channel count: `f` returns as many steps as it
/// is given, so the input is added as it comes.
pub(crate) struct Residual<S>(pub S);

impl<S: Stream> Stream for Residual<S> {
    fn push(&mut self, cpu: Cpu, x: &Block, end: bool) -> Result<Block, ConvError> {
        let mut y = self.0.push(cpu, x, end)?;
        assert_eq!((y.channels, y.len), (x.channels, x.len), "a causal residual branch returns its input's shape");
        crate::kernels::rows::for_each_row_mut(&mut y.data, x.len, |c, row| {
            row.iter_mut().zip(&x.data[c * x.len..][..x.len]).for_each(|(y, x)| *y += x)
        });
        Ok(y)
    }
}
