//! Layers shared by the models, owning their weights and running on the kernels.
//!
//! Signals are channels-first `[channels, len]`, as PyTorch stores them, so checkpoint
//! tensors are used as they are.

use crate::kernels::conv::{Conv1d, ConvError, ConvMethod, ConvShape, ConvTranspose1d, MethodChoice};
use crate::kernels::Cpu;
use crate::tensors::{TensorError, Tensors};

/// Values per task of an elementwise pass over a `[channels, len]` signal shared out on the
/// pool: 32 rows. GELU, tanh and σ take several ns a value on AVX2, so even one sentence's
/// worth pays for a fork (the durations' GELU on the calling thread alone had been a quarter
/// of their time; the flow's gates on it, about 5 % of the flow's, on a Zen 1).
pub(crate) fn rows_per_task(len: usize) -> usize {
    (32 * len).max(1)
}

/// A layer that could not be built from a checkpoint.
#[derive(Debug, thiserror::Error)]
pub enum LayerError {
    #[error(transparent)]
    Tensor(#[from] TensorError),
    #[error("{module}: {source}; the model file is damaged or for another architecture")]
    Conv { module: String, source: ConvError },
}

/// The arithmetic of a vocoder's convolutions.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Precision {
    /// f32 throughout: the reference's audio, to rounding.
    F32,
    /// bf16 products (f32 sums) in the convolutions each model names (VITS: its last two
    /// upsampling stages; Qwen3-TTS: see its speech decoder), about twice as fast there
    /// where `VDPBF16PS` doubles the products per cycle, at bf16's 8 significant bits per
    /// operand. Each model's docs give how far its audio moves.
    Mixed,
}

impl Precision {
    /// Mixed where bf16 doubles the products per cycle
    /// ([`Cpu::bf16_doubles_products`]: AMD with `VDPBF16PS`), else f32: elsewhere bf16
    /// would only lose precision, not gain speed.
    pub fn for_cpu(cpu: Cpu) -> Precision {
        if cpu.bf16_doubles_products() {
            Precision::Mixed
        } else {
            Precision::F32
        }
    }

    /// Its name on the command line (`--precision`).
    pub const fn name(self) -> &'static str {
        match self {
            Precision::F32 => "f32",
            Precision::Mixed => "mixed",
        }
    }

    /// The convolution method it asks for.
    pub fn method(self) -> ConvMethod {
        match self {
            Precision::F32 => ConvMethod::Direct,
            Precision::Mixed => ConvMethod::DirectBf16,
        }
    }
}

/// A 1-D convolution with its weights (`[out, in/groups, kernel]`) and `pad` zeros added
/// at each end.
#[derive(Debug)]
pub struct Conv {
    shape: ConvShape,
    pad: (usize, usize),
    weight: Vec<f32>,
    bias: Option<Vec<f32>>,
    /// The kernel's method, when not the one its shape picks.
    method: MethodChoice,
}

impl Conv {
    /// `<module>.weight` (and `<module>.bias` when `bias`), taken from `t`.
    pub fn load(t: &mut Tensors, module: &str, shape: ConvShape, pad: usize, bias: bool) -> Result<Conv, TensorError> {
        let per_out = shape.in_channels / shape.groups.max(1);
        let weight = t.take(&format!("{module}.weight"), &[shape.out_channels, per_out, shape.kernel])?;
        let bias = if bias { Some(t.take(&format!("{module}.bias"), &[shape.out_channels])?) } else { None };
        Ok(Conv { shape, pad: (pad, pad), weight, bias, method: MethodChoice::default() })
    }

    /// A convolution that keeps the length: `pad` = half the span on each side.
    pub fn same(t: &mut Tensors, module: &str, shape: ConvShape) -> Result<Conv, TensorError> {
        Conv::load(t, module, shape, (shape.span() - 1) / 2, true)
    }

    pub fn shape(&self) -> ConvShape {
        self.shape
    }

    pub fn pad(&self) -> (usize, usize) {
        self.pad
    }

    /// Runs this convolution with `method` (for example bf16 products) instead of the one
    /// its shape picks; an error if the method cannot do the shape.
    ///
    /// The weights are dropped once the method has its own form of them
    /// ([`MethodChoice::transformed`]: Winograd's), so a voice holds one copy; after that
    /// the method cannot change (an error).
    pub fn set_method(&mut self, method: ConvMethod) -> Result<(), ConvError> {
        if self.method.transformed() {
            // The kernel says why: it has only the transformed weights.
            return self.kernel().with_method(method).map(|_| ());
        }
        let conv = Conv1d::new(self.shape, &self.weight, self.bias.as_deref())?;
        self.method.set(conv, method)?;
        if self.method.transformed() {
            self.weight = Vec::new();
        }
        Ok(())
    }

    /// This convolution computing by [`ConvMethod::Winograd`] where its shape allows (one
    /// group, stride 1, no dilation, kernel 2 to 5), else as before: f32 like the direct
    /// method, with 2 to 2.5 times fewer multiply-adds.
    pub fn winograd_where_supported(mut self) -> Conv {
        if ConvMethod::Winograd.supports(self.shape) {
            self.set_method(ConvMethod::Winograd).expect("supported");
        }
        self
    }

    /// Places this convolution's Winograd tiles (see [`Conv1d::with_winograd_phase`]); an
    /// error unless `phase` is below 4.
    pub fn set_winograd_phase(&mut self, phase: usize) -> Result<(), ConvError> {
        self.method.set_winograd_phase(phase)
    }

    pub fn kernel(&self) -> Conv1d<'_, f32> {
        self.method.conv(self.shape, &self.weight, self.bias.as_deref()).expect("shapes checked at load")
    }

    pub fn output_len(&self, len: usize) -> usize {
        self.kernel().output_len(len, self.pad)
    }

    /// `x` (`[in, len]`) to a new `[out, output_len]`.
    pub fn forward(&self, cpu: Cpu, x: &[f32], len: usize) -> Result<Vec<f32>, ConvError> {
        let mut out = vec![0.0; self.shape.out_channels * self.output_len(len)];
        self.kernel().forward(cpu, x, len, self.pad, &mut out)?;
        Ok(out)
    }
}

/// A transposed 1-D convolution (`[in, out/groups, kernel]`) cropped by `crop` at each end,
/// as PyTorch's `padding`.
#[derive(Debug)]
pub struct ConvTranspose {
    kernel: ConvTranspose1d,
    crop: usize,
}

impl ConvTranspose {
    pub fn load(t: &mut Tensors, module: &str, shape: ConvShape, crop: usize) -> Result<ConvTranspose, LayerError> {
        let per_in = shape.out_channels / shape.groups.max(1);
        let weight = t.take(&format!("{module}.weight"), &[shape.in_channels, per_in, shape.kernel])?;
        let bias = t.take(&format!("{module}.bias"), &[shape.out_channels])?;
        let kernel = ConvTranspose1d::new(shape, &weight, Some(&bias))
            .map_err(|source| LayerError::Conv { module: module.to_string(), source })?;
        Ok(ConvTranspose { kernel, crop })
    }

    pub fn shape(&self) -> ConvShape {
        self.kernel.shape()
    }

    pub fn crop(&self) -> usize {
        self.crop
    }

    pub fn kernel(&self) -> &ConvTranspose1d {
        &self.kernel
    }

    /// See [`ConvTranspose1d::set_method`].
    pub fn set_method(&mut self, method: ConvMethod) -> Result<(), ConvError> {
        self.kernel.set_method(method)
    }
}

/// Layer normalisation over the channels of each time step (`gamma`, `beta`), as VITS's
/// `modules.LayerNorm` on a `[channels, len]` signal.
#[derive(Debug)]
pub struct ChannelNorm {
    gamma: Vec<f32>,
    beta: Vec<f32>,
    eps: f32,
}

impl ChannelNorm {
    pub fn load(t: &mut Tensors, module: &str, channels: usize, eps: f32) -> Result<ChannelNorm, TensorError> {
        let gamma = t.take(&format!("{module}.gamma"), &[channels])?;
        let beta = t.take(&format!("{module}.beta"), &[channels])?;
        Ok(ChannelNorm { gamma, beta, eps })
    }

    /// Normalises `x` (`[channels, len]`) in place. Time is the vector dimension: each
    /// pass runs along rows (the mean, the variance about it, then the scaling), so no
    /// column is gathered.
    pub fn apply(&self, x: &mut [f32], len: usize) {
        let c = self.gamma.len();
        let (mut mean, mut var) = (vec![0.0f32; len], vec![0.0f32; len]);
        for row in x.chunks_exact(len.max(1)).take(c) {
            mean.iter_mut().zip(row).for_each(|(m, &v)| *m += v);
        }
        mean.iter_mut().for_each(|m| *m /= c as f32);
        for row in x.chunks_exact(len.max(1)).take(c) {
            var.iter_mut().zip(row).zip(&mean).for_each(|((s, &v), &m)| *s += (v - m) * (v - m));
        }
        // The inverse standard deviation, in place of the variance.
        var.iter_mut().for_each(|s| *s = 1.0 / (*s / c as f32 + self.eps).sqrt());
        for ((row, &g), &b) in x.chunks_exact_mut(len.max(1)).zip(&self.gamma).zip(&self.beta) {
            row.iter_mut().zip(&mean).zip(&var).for_each(|((v, &m), &inv)| *v = (*v - m) * inv * g + b);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::{ChannelNorm, Conv, Precision};
    use crate::kernels::conv::{Conv1d, ConvMethod, ConvShape};
    use crate::kernels::testing::random;
    use crate::kernels::{activation, Cpu, Isa};
    use crate::tensors::{Tensor, Tensors};

    /// Without native bf16 products mixed precision would only lose precision: every level
    /// below `avx512bf16` this machine runs defaults to f32.
    #[test]
    fn the_default_precision_is_f32_without_native_bf16() {
        for cpu in Isa::ALL.into_iter().filter(|i| *i < Isa::Avx512Bf16).filter_map(|i| Cpu::forced(i).ok()) {
            assert!(!cpu.bf16_doubles_products(), "{}", cpu.isa());
            assert_eq!(Precision::for_cpu(cpu), Precision::F32, "{}", cpu.isa());
        }
    }

    /// A layer switched to Winograd's method keeps only the transformed weights, computes
    /// what it computed with both, and refuses to switch back.
    #[test]
    fn winograd_layers_drop_their_original_weights() {
        let load = || {
            let mut t = Tensors::new("test");
            t.insert("c.weight", Tensor::new(vec![5, 6, 5], random(150, 1)).unwrap()).unwrap();
            t.insert("c.bias", Tensor::new(vec![5], random(5, 2)).unwrap()).unwrap();
            Conv::same(&mut t, "c", ConvShape::new(6, 5, 5)).unwrap()
        };
        let (mut conv, mut kept) = (load(), load());
        let (x, len) = (random(6 * 23, 3), 23);
        // The same method with the weights kept beside it (disjoint fields).
        let both = Conv1d::new(kept.shape, &kept.weight, kept.bias.as_deref()).unwrap();
        kept.method.set(both, ConvMethod::Winograd).unwrap();
        conv.set_method(ConvMethod::Winograd).unwrap();
        assert!(conv.weight.is_empty() && !kept.weight.is_empty());
        let cpu = Cpu::best();
        assert_eq!(conv.forward(cpu, &x, len).unwrap(), kept.forward(cpu, &x, len).unwrap());
        conv.set_method(ConvMethod::Winograd).unwrap();
        assert!(conv.set_method(ConvMethod::Direct).unwrap_err().to_string().contains("only its Winograd weights"));
    }

    #[test]
    fn channel_norm_is_layer_norm_of_each_time_step() {
        let (channels, len) = (7, 19);
        let (gamma, beta, x) = (random(channels, 1), random(channels, 2), random(channels * len, 3));
        let norm = ChannelNorm { gamma: gamma.clone(), beta: beta.clone(), eps: 1e-5 };
        let mut got = x.clone();
        norm.apply(&mut got, len);
        for t in 0..len {
            let column: Vec<f32> = (0..channels).map(|c| x[c * len + t]).collect();
            let mut want = vec![0.0; channels];
            activation::layer_norm(Cpu::best(), &column, &gamma, &beta, 1e-5, &mut want);
            for c in 0..channels {
                let (g, w) = (got[c * len + t], want[c]);
                assert!((g - w).abs() <= 1e-5 * (1.0 + w.abs()), "channel {c}, time {t}: {g} vs {w}");
            }
        }
    }
}
