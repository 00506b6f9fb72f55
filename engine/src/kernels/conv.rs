//! 1-D convolutions as HiFi-GAN-style vocoders use them: dilated, strided and grouped
//! convolution, transposed convolution for upsampling, and streaming forms of both that
//! carry their left context between calls.
//!
//! Signals are channels-first (`[channels, len]`, row-major, as PyTorch stores them) and
//! weights are in PyTorch's layouts (`[out, in/groups, kernel]` for a convolution,
//! `[in, out/groups, kernel]` for a transposed one), so a checkpoint's tensors are used as
//! they are.
//!
//! A convolution with one group and stride 1 (every convolution of a HiFi-GAN generator) is
//! computed directly, with time as the SIMD dimension ([`ConvMethod::Direct`], in
//! `conv/direct.rs`); on request with bf16 products, `VDPBF16PS` on channel pairs
//! ([`ConvMethod::DirectBf16`], in `conv/direct_bf16.rs`). Any other is one [`gemm`] per group: the weights are A
//! (`[out, in·kernel]`) and the im2col matrix of the signal is a grouped [`View`] of it, so no
//! im2col copy is made; depthwise convolutions (one channel per group) are a sum of shifted,
//! scaled copies of each channel instead, with [`vector::axpy`]. The method is chosen from
//! the shape alone (see [`ConvMethod::for_shape`]), never from the signal length, so a
//! stream and the whole signal take the same one. A transposed convolution is one ordinary
//! convolution over its input whose output channels are its phases (`conv/transpose.rs`),
//! interleaved into the upsampled output.
//!
//! Streaming: [`StreamingConv1d`] and [`StreamingConvTranspose1d`] accept the signal in
//! chunks of any size and produce, concatenated, exactly what the whole-signal call produces
//! with the same padding: bit for bit, since every output value is computed by the same
//! operations in the same order either way.

use std::cell::RefCell;

use thiserror::Error;

use super::cpu::Cpu;
use super::gemm::{self, Element, View, ViewMut};
use super::{activation, rows, vector};

mod direct;
mod direct_bf16;
mod transpose;
mod winograd;

pub use transpose::{ConvTranspose1d, StreamingConvTranspose1d};

/// The hyperparameters of a convolution (or of a transposed one).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ConvShape {
    pub in_channels: usize,
    pub out_channels: usize,
    pub kernel: usize,
    pub stride: usize,
    pub dilation: usize,
    pub groups: usize,
}

impl ConvShape {
    /// `in_channels` to `out_channels` with `kernel` taps, stride 1, dilation 1, one group.
    pub fn new(in_channels: usize, out_channels: usize, kernel: usize) -> Self {
        ConvShape { in_channels, out_channels, kernel, stride: 1, dilation: 1, groups: 1 }
    }

    pub fn stride(self, stride: usize) -> Self {
        ConvShape { stride, ..self }
    }

    pub fn dilation(self, dilation: usize) -> Self {
        ConvShape { dilation, ..self }
    }

    pub fn groups(self, groups: usize) -> Self {
        ConvShape { groups, ..self }
    }

    /// Input positions one output value spans: `(kernel - 1)·dilation + 1`.
    pub fn span(&self) -> usize {
        (self.kernel - 1) * self.dilation + 1
    }

    /// Values of a convolution's weights, `[out, in/groups, kernel]`.
    fn weight_len(&self) -> usize {
        self.out_channels * (self.in_channels / self.groups) * self.kernel
    }

    fn check(&self) -> Result<(), ConvError> {
        let ConvShape { in_channels, out_channels, kernel, stride, dilation, groups } = *self;
        if kernel == 0 || stride == 0 || dilation == 0 || groups == 0 {
            return Err(ConvError::Shape(format!("{self:?}: kernel, stride, dilation and groups must be at least 1")));
        }
        if in_channels % groups != 0 || out_channels % groups != 0 {
            return Err(ConvError::Shape(format!(
                "{self:?}: {groups} groups do not divide {in_channels} input and {out_channels} output channels"
            )));
        }
        Ok(())
    }
}

/// A convolution that cannot be built or run as asked.
#[derive(Debug, Error, PartialEq, Eq)]
pub enum ConvError {
    #[error("convolution shape: {0}")]
    Shape(String),
    #[error("{what} has {got} values, the convolution {shape:?} needs {expected}")]
    Size { what: &'static str, got: usize, expected: usize, shape: ConvShape },
}

fn expect_len(what: &'static str, got: usize, expected: usize, shape: ConvShape) -> Result<(), ConvError> {
    if got == expected {
        Ok(())
    } else {
        Err(ConvError::Size { what, got, expected, shape })
    }
}

thread_local! {
    /// Padded inputs and transposed-convolution products, reused so steady-state calls do
    /// not allocate.
    static SCRATCH: RefCell<Vec<f32>> = const { RefCell::new(Vec::new()) };
}

/// `f` with a scratch buffer of `len` values (contents unspecified), taken out of the
/// thread's reusable one.
fn with_scratch<R>(len: usize, f: impl FnOnce(&mut [f32]) -> R) -> R {
    let mut buf = SCRATCH.take();
    buf.resize(len.max(buf.len()), 0.0);
    let r = f(&mut buf[..len]);
    SCRATCH.set(buf);
    r
}

/// A convolution: `out[o, t] = bias[o] + Σ w[o, i, j] · x[g·in/groups + i, t·stride + j·dilation]`
/// over the input padded with zeros, for group g of output channel o.
///
/// ```
/// use spiral_engine::kernels::conv::{Conv1d, ConvShape};
/// use spiral_engine::kernels::Cpu;
/// // A 2-tap moving sum over one channel.
/// let conv = Conv1d::new(ConvShape::new(1, 1, 2), &[1.0, 1.0], None).unwrap();
/// let mut out = vec![0.0; conv.output_len(4, (1, 0))];
/// conv.forward(Cpu::best(), &[1.0, 2.0, 3.0, 4.0], 4, (1, 0), &mut out).unwrap();
/// assert_eq!(out, [1.0, 3.0, 5.0, 7.0]);
/// ```
#[derive(Clone, Copy, Debug)]
pub struct Conv1d<'w, W> {
    shape: ConvShape,
    weight: &'w [W],
    bias: Option<&'w [f32]>,
    method: ConvMethod,
    /// The weights as [`ConvMethod::DirectBf16`] reads them, when packed ahead of the calls.
    pairs: Option<&'w Bf16Pairs>,
    /// The weights as [`ConvMethod::Winograd`] reads them, when transformed ahead of the calls.
    winograd: Option<&'w WinogradWeights>,
    /// Outputs of [`ConvMethod::Winograd`]'s first tile before output 0 (see
    /// [`Conv1d::with_winograd_phase`]).
    phase: usize,
}

/// The method chosen for a convolution whose owner keeps its weights, with the weights
/// packed once for it when it is [`ConvMethod::DirectBf16`] (see [`Bf16Pairs`]) or
/// transformed once when it is [`ConvMethod::Winograd`] (see [`WinogradWeights`]; the owner
/// may then drop its own copy); the default is the method the shape picks. Owning layers
/// store one and build their [`Conv1d`] through [`MethodChoice::apply`] or
/// [`MethodChoice::conv`].
#[derive(Clone, Debug, Default)]
pub struct MethodChoice {
    method: Option<ConvMethod>,
    pairs: Option<Bf16Pairs>,
    winograd: Option<WinogradWeights>,
    phase: usize,
}

impl MethodChoice {
    /// Chooses `method` for `conv` (built from the weights the owner keeps); an error if it
    /// cannot do the shape.
    pub fn set<W: Element>(&mut self, conv: Conv1d<'_, W>, method: ConvMethod) -> Result<(), ConvError> {
        let conv = conv.with_method(method)?;
        self.pairs = if method == ConvMethod::DirectBf16 { Some(conv.bf16_pairs()?) } else { None };
        self.winograd = if method == ConvMethod::Winograd { Some(conv.winograd_weights()?) } else { None };
        self.method = Some(method);
        Ok(())
    }

    /// `conv` (the same weights as when the method was set) computing by the chosen method.
    pub fn apply<'w, W: Element>(&'w self, conv: Conv1d<'w, W>) -> Conv1d<'w, W> {
        let conv = match self.method {
            Some(method) => conv.with_method(method).expect("checked when set"),
            None => conv,
        };
        let conv = match &self.pairs {
            Some(pairs) => conv.with_bf16_pairs(pairs).expect("packed from these weights"),
            None => conv,
        };
        match &self.winograd {
            Some(u) => conv.with_winograd_weights(u).expect("transformed from these weights"),
            None => conv,
        }
        .with_winograd_phase(self.phase)
        .expect("checked when set")
    }

    /// Places [`ConvMethod::Winograd`]'s tiles (see [`Conv1d::with_winograd_phase`]); an
    /// error unless the phase is below 4.
    pub fn set_winograd_phase(&mut self, phase: usize) -> Result<(), ConvError> {
        check_phase(phase)?;
        self.phase = phase;
        Ok(())
    }

    /// Whether the chosen method computes from its own form of the weights alone
    /// ([`ConvMethod::Winograd`]'s): the owner may then drop its weights and build the
    /// convolution with [`MethodChoice::conv`] from an empty slice.
    pub fn transformed(&self) -> bool {
        self.winograd.is_some()
    }

    /// The convolution of `shape` over the owner's `weight` and `bias`, computing by the
    /// chosen method; with an empty `weight` once [`MethodChoice::transformed`], from the
    /// method's form of the weights alone. An error if they do not fit `shape`.
    pub fn conv<'w, W: Element>(
        &'w self,
        shape: ConvShape,
        weight: &'w [W],
        bias: Option<&'w [f32]>,
    ) -> Result<Conv1d<'w, W>, ConvError> {
        let conv = match &self.winograd {
            Some(u) if weight.is_empty() && u.shape == shape => Conv1d::transformed(u, bias)?,
            _ => Conv1d::new(shape, weight, bias)?,
        };
        Ok(self.apply(conv))
    }
}

/// Weights prepared ahead (`what`, for `made`) are for the convolution `used`, or an error.
fn made_for(what: &str, made: ConvShape, used: ConvShape) -> Result<(), ConvError> {
    if made == used {
        Ok(())
    } else {
        Err(ConvError::Shape(format!("{what} for {made:?} used for {used:?}")))
    }
}

fn check_phase(phase: usize) -> Result<(), ConvError> {
    if phase < winograd::TILE {
        Ok(())
    } else {
        Err(ConvError::Shape(format!("a Winograd phase of {phase}: it must be below {}", winograd::TILE)))
    }
}

/// A convolution's weights packed once as the bf16-product kernel reads them (pairs of input
/// channels, see `conv/direct_bf16.rs`), so that its calls need not repack them: for a short
/// signal the packing costs as much as the products. Made by [`Conv1d::bf16_pairs`], used
/// through [`Conv1d::with_bf16_pairs`].
#[derive(Clone, Debug, PartialEq)]
pub struct Bf16Pairs {
    shape: ConvShape,
    words: Vec<u32>,
}

/// A convolution's weights transformed once for [`ConvMethod::Winograd`] (`conv/winograd.rs`),
/// in panels of 32 output channels, `[panel][point][in][32]`: transforming them at a call
/// would cost more than that call's products at the lengths a stream brings. Made by
/// [`Conv1d::winograd_weights`], used through [`Conv1d::with_winograd_weights`].
#[derive(Clone, Debug, PartialEq)]
pub struct WinogradWeights {
    shape: ConvShape,
    u: Vec<f32>,
}

/// How a [`Conv1d`] computes its output. `Direct` and `Gemm` give the definition's value to
/// within f32 rounding, `DirectBf16` the definition's value on bf16-rounded weights and
/// inputs; they round differently, so one stream must stay with one method (a [`Conv1d`]
/// does: its method is fixed when it is built).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ConvMethod {
    /// Register tiles of output channels × vectors of time, each output one chain of fused
    /// multiply-adds over (input channel, tap) in order. One group, stride 1 only.
    Direct,
    /// One blocked GEMM per group over an implicit im2col view of the signal (a depthwise
    /// convolution: a shifted axpy per tap). Any shape.
    Gemm,
    /// [`ConvMethod::Direct`] with bf16 products: weights and inputs rounded to bf16 (to
    /// nearest even), products summed in f32 from the f32 bias. `VDPBF16PS` on channel pairs
    /// from [`Isa::Avx512Bf16`](crate::kernels::Isa::Avx512Bf16) on; below it, the f32 direct
    /// kernel on the rounded operands (the last bits may differ between the two). About twice
    /// the f32 rate where the instruction runs at full width, at bf16's precision (8
    /// significant bits per operand): opt in with [`Conv1d::with_method`], never chosen by
    /// [`ConvMethod::for_shape`]. One group, stride 1 only.
    DirectBf16,
    /// Winograd's F(4, r): tiles of 4 outputs from r + 3 products per input channel instead
    /// of 4·r, each product's sum over input channels one GEMM (`conv/winograd.rs`). f32
    /// throughout, within a small factor of [`ConvMethod::Direct`]'s rounding error; 2 to 2.5
    /// times fewer multiply-adds. Opt in with [`Conv1d::with_method`]: a
    /// [`StreamingConv1d`] with it holds back the outputs of a partial tile (up to 3) until
    /// its input is complete. One group, stride 1, dilation 1, kernel 2 to 5.
    Winograd,
}

impl ConvMethod {
    /// Input channels from which a 1×1 convolution goes to the GEMM: there the operand is the
    /// signal itself (nothing to pack but a transpose), and past about 2048 channels a time
    /// chunk of the input no longer stays in L2 for the direct tile (2048→2048 N=256, one
    /// thread: GEMM 97 GFLOP/s, direct 85). Below it the direct method is as fast or faster
    /// at every length, and much faster on the few positions a streamed frame brings, where
    /// the GEMM's 64 columns are mostly empty (768→768 N=32, both threads: 182 µs against
    /// 505; 1536→1536 N=16: 353 against 1687).
    pub const GEMM_POINTWISE_IN_CHANNELS: usize = 2048;

    /// The method [`Conv1d::new`] picks: [`ConvMethod::Direct`] for one group at stride 1,
    /// except 1×1 convolutions over at least [`Self::GEMM_POINTWISE_IN_CHANNELS`] inputs;
    /// [`ConvMethod::Gemm`] for everything else. It depends on the shape alone.
    pub fn for_shape(shape: ConvShape) -> ConvMethod {
        let pointwise_gemm = shape.kernel == 1 && shape.in_channels >= Self::GEMM_POINTWISE_IN_CHANNELS;
        if Self::Direct.supports(shape) && !pointwise_gemm {
            ConvMethod::Direct
        } else {
            ConvMethod::Gemm
        }
    }

    /// Whether this method can compute `shape`.
    pub fn supports(self, shape: ConvShape) -> bool {
        match self {
            ConvMethod::Direct | ConvMethod::DirectBf16 => shape.groups == 1 && shape.stride == 1,
            ConvMethod::Winograd => {
                shape.groups == 1
                    && shape.stride == 1
                    && shape.dilation == 1
                    && winograd::KERNELS.contains(&shape.kernel)
            }
            ConvMethod::Gemm => true,
        }
    }
}

impl<'w, W: Element> Conv1d<'w, W> {
    /// Weights `[out, in/groups, kernel]` and an optional bias `[out]`, checked against `shape`.
    pub fn new(shape: ConvShape, weight: &'w [W], bias: Option<&'w [f32]>) -> Result<Self, ConvError> {
        shape.check()?;
        expect_len("the weight", weight.len(), shape.weight_len(), shape)?;
        if let Some(b) = bias {
            expect_len("the bias", b.len(), shape.out_channels, shape)?;
        }
        Ok(Conv1d { shape, weight, bias, method: ConvMethod::for_shape(shape), pairs: None, winograd: None, phase: 0 })
    }

    /// A convolution that has only its Winograd weights `u` (the owner dropped the weights
    /// they were transformed from): it computes by [`ConvMethod::Winograd`] alone, and asking
    /// it for another method, or for weights in another form, is an error.
    pub fn transformed(u: &'w WinogradWeights, bias: Option<&'w [f32]>) -> Result<Self, ConvError> {
        let shape = u.shape;
        if let Some(b) = bias {
            expect_len("the bias", b.len(), shape.out_channels, shape)?;
        }
        Ok(Conv1d { shape, weight: &[], bias, method: ConvMethod::Winograd, pairs: None, winograd: Some(u), phase: 0 })
    }

    /// Whether it has the weights it was built from (not so when [`Conv1d::transformed`]).
    fn has_weights(&self) -> Result<(), ConvError> {
        let s = self.shape;
        if self.weight.len() == s.weight_len() {
            Ok(())
        } else {
            Err(ConvError::Shape(format!(
                "{s:?}: only its Winograd weights were kept, so it computes by that method alone"
            )))
        }
    }

    /// This convolution computed by `method` instead of the one [`Conv1d::new`] chose (to
    /// compare them, to match output made by another, or to opt into
    /// [`ConvMethod::DirectBf16`]); an error if it cannot do the shape.
    pub fn with_method(self, method: ConvMethod) -> Result<Self, ConvError> {
        if method != ConvMethod::Winograd {
            self.has_weights()?;
        }
        if !method.supports(self.shape) {
            let needs = if method == ConvMethod::Winograd {
                "one group, stride 1, dilation 1 and a kernel of 2 to 5"
            } else {
                "one group and stride 1"
            };
            return Err(ConvError::Shape(format!(
                "{:?}: the {method:?} method needs {needs}; use ConvMethod::Gemm",
                self.shape
            )));
        }
        Ok(Conv1d { method, ..self })
    }

    /// The weights packed for [`ConvMethod::DirectBf16`] (see [`Bf16Pairs`]); an error if it
    /// has only its Winograd weights.
    pub fn bf16_pairs(&self) -> Result<Bf16Pairs, ConvError> {
        self.has_weights()?;
        let s = self.shape;
        Ok(Bf16Pairs { shape: s, words: direct_bf16::pack_weight_pairs(self.weight, s.in_channels, s.kernel) })
    }

    /// This convolution reading its bf16-product weights from `pairs` (made from the same
    /// weights by [`Conv1d::bf16_pairs`]) instead of packing them at every call; an error if
    /// they are for another shape.
    pub fn with_bf16_pairs(self, pairs: &'w Bf16Pairs) -> Result<Self, ConvError> {
        made_for("bf16 weight pairs packed", pairs.shape, self.shape)?;
        Ok(Conv1d { pairs: Some(pairs), ..self })
    }

    /// The weights transformed for [`ConvMethod::Winograd`] (see [`WinogradWeights`]); an
    /// error if the method cannot do the shape or it has only its Winograd weights.
    pub fn winograd_weights(&self) -> Result<WinogradWeights, ConvError> {
        self.has_weights()?;
        let s = self.with_method(ConvMethod::Winograd)?.shape;
        let u = winograd::transform_weights(self.weight, s.in_channels, s.out_channels, s.kernel);
        Ok(WinogradWeights { shape: s, u })
    }

    /// This convolution reading its Winograd weights from `u` (made from the same weights by
    /// [`Conv1d::winograd_weights`]) instead of transforming them at every call; an error if
    /// they are for another shape.
    pub fn with_winograd_weights(self, u: &'w WinogradWeights) -> Result<Self, ConvError> {
        made_for("Winograd weights transformed", u.shape, self.shape)?;
        Ok(Conv1d { winograd: Some(u), ..self })
    }

    /// [`ConvMethod::Winograd`]'s tiles starting `phase` outputs before output 0 (0 to 3;
    /// those outputs are not computed and their inputs count as zeros) rather than at it.
    /// A stream holds back the outputs of a partial tile, so a stream whose calls end where
    /// tiles end (the count of outputs so far plus the phase a multiple of 4) holds back
    /// none: a chain of "same" convolutions fed multiples of 4 keeps its lag at the
    /// convolutions' own when each one's phase is the chain's lag before its output, modulo
    /// 4. Other methods ignore it; the output is the same up to rounding whatever the phase.
    pub fn with_winograd_phase(self, phase: usize) -> Result<Self, ConvError> {
        check_phase(phase)?;
        Ok(Conv1d { phase, ..self })
    }

    pub fn shape(&self) -> ConvShape {
        self.shape
    }

    /// How this convolution computes.
    pub fn method(&self) -> ConvMethod {
        self.method
    }

    /// Output length for `len` input values padded by `pad` (left, right) zeros; 0 when the
    /// padded input is shorter than one span.
    pub fn output_len(&self, len: usize, pad: (usize, usize)) -> usize {
        let padded = len + pad.0 + pad.1;
        if padded < self.shape.span() {
            0
        } else {
            (padded - self.shape.span()) / self.shape.stride + 1
        }
    }

    /// `out` (`[out_channels, output_len]`) from `input` (`[in_channels, len]`) padded by
    /// `pad` (left, right) zeros.
    pub fn forward(
        &self,
        cpu: Cpu,
        input: &[f32],
        len: usize,
        pad: (usize, usize),
        out: &mut [f32],
    ) -> Result<(), ConvError> {
        let s = self.shape;
        expect_len("the input", input.len(), s.in_channels * len, s)?;
        let t_out = self.output_len(len, pad);
        expect_len("the output", out.len(), s.out_channels * t_out, s)?;
        if t_out == 0 {
            return Ok(());
        }
        if pad == (0, 0) {
            self.run(cpu, input, len, 0, t_out, out);
            return Ok(());
        }
        if self.method == ConvMethod::DirectBf16 {
            // It copies its input anyway (rounded, or packed in pairs), padding as it goes.
            direct_bf16::run(cpu, &self.direct(input, len), pad, t_out, out);
            return Ok(());
        }
        let padded = len + pad.0 + pad.1;
        with_scratch(s.in_channels * padded, |x| {
            for (c, row) in x.chunks_exact_mut(padded).enumerate() {
                row.fill(0.0);
                row[pad.0..pad.0 + len].copy_from_slice(&input[c * len..][..len]);
            }
            self.run(cpu, x, padded, 0, t_out, out);
        });
        Ok(())
    }

    /// The direct kernels' view of this convolution over `x` (`[in_channels, len]`).
    fn direct<'a>(&'a self, x: &'a [f32], len: usize) -> direct::Direct<'a, W> {
        let s = self.shape;
        direct::Direct {
            weight: self.weight,
            bias: self.bias,
            in_channels: s.in_channels,
            out_channels: s.out_channels,
            kernel: s.kernel,
            dilation: s.dilation,
            pairs: self.pairs.map(|p| &p.words[..]),
            x,
            len,
        }
    }

    /// The convolution of an already padded `x` (`[in_channels, len]`) into `t_out` outputs,
    /// the first of them output `first` of the signal (where the Winograd tiles lie).
    fn run(&self, cpu: Cpu, x: &[f32], len: usize, first: usize, t_out: usize, out: &mut [f32]) {
        let s = self.shape;
        match self.method {
            ConvMethod::Direct => return direct::run(cpu, &self.direct(x, len), t_out, out),
            ConvMethod::DirectBf16 => return direct_bf16::run(cpu, &self.direct(x, len), (0, 0), t_out, out),
            ConvMethod::Winograd => {
                let u = self.winograd.map(|w| &w.u[..]);
                let lead = (first + self.phase) % winograd::TILE;
                return winograd::run(cpu, &self.direct(x, len), u, lead, t_out, out);
            }
            ConvMethod::Gemm => {}
        }
        let (cig, cog) = (s.in_channels / s.groups, s.out_channels / s.groups);
        for (o, row) in out.chunks_exact_mut(t_out).enumerate() {
            row.fill(self.bias.map_or(0.0, |b| b[o]));
        }
        if cig == 1 && cog == 1 && s.stride == 1 {
            // Depthwise: each tap adds a shifted, scaled copy of its channel.
            for (c, row) in out.chunks_exact_mut(t_out).enumerate() {
                let channel = &x[c * len..][..len];
                for j in 0..s.kernel {
                    let w = self.weight[c * s.kernel + j].to_f32();
                    vector::axpy(cpu, w, &channel[j * s.dilation..][..t_out], row);
                }
            }
            return;
        }
        for g in 0..s.groups {
            let per_out = cig * s.kernel;
            // SAFETY of the unwraps: every view below lies inside its slice by the size checks
            // made in `new` and `forward` (t_out positions, each reaching `span` further).
            let a = View::strided(self.weight, g * cog * per_out, cog, per_out, per_out as isize, 1).unwrap();
            let im2col = View::grouped(
                x,
                g * cig * len,
                t_out,
                s.stride as isize,
                (cig, len as isize),
                (s.kernel, s.dilation as isize),
            )
            .unwrap();
            let c = ViewMut::strided(out, g * cog * t_out, cog, t_out, t_out).unwrap();
            gemm::gemm(cpu, a, im2col, c, true);
        }
    }
}

/// A convolution fed a signal in chunks ([`StreamingConv1d`], [`StreamingConvTranspose1d`]):
/// the outputs of every `process` and of `finish`, concatenated in time, are the output of
/// the whole-signal call. `finish` takes the last chunk, so the end of a signal costs one
/// call, not a call for the chunk and another for the padding behind it.
pub trait ChunkedConv {
    /// Channels of every output chunk.
    fn out_channels(&self) -> usize;

    /// Feeds `chunk` (`[in_channels, n]`) and appends every output it completes to `out`
    /// (channel-major: `[out_channels, m]` for the m new outputs, which it returns).
    fn process(&mut self, cpu: Cpu, chunk: &[f32], n: usize, out: &mut Vec<f32>) -> Result<usize, ConvError>;

    /// Feeds the last chunk (`[in_channels, n]`, n may be 0), ends the signal and appends
    /// the remaining outputs to `out`; returns how many.
    fn finish(&mut self, cpu: Cpu, chunk: &[f32], n: usize, out: &mut Vec<f32>) -> Result<usize, ConvError>;
}

/// A [`Conv1d`] fed in chunks: the output of all chunks, concatenated, is the output of
/// [`Conv1d::forward`] over the whole signal padded by `pad`. The stream keeps the input
/// it still needs (at most one span) between calls; the left padding is its initial
/// context, the right padding enters at [`StreamingConv1d::finish`]. With `pad = (span - 1,
/// 0)` it is a causal convolution; a symmetric padding gives the whole-signal result
/// delayed by the right padding.
#[derive(Clone, Debug)]
pub struct StreamingConv1d<'w, W> {
    conv: Conv1d<'w, W>,
    right_pad: usize,
    /// The slope of a leaky ReLU applied to the input as it enters.
    slope: Option<f32>,
    /// Input not yet consumed, `len` positions of it.
    held: Held,
    len: usize,
    /// Outputs emitted so far.
    emitted: usize,
}

/// A stream's input not yet consumed, as its method reads it, at the front of `pending`
/// (`[rows, len]`), and the buffer where the next `pending` is assembled. Neither buffer
/// shrinks: refilled in place, they are never zeroed again (zeroing the grown part on
/// every push was 3 % of the default voice's time).
#[derive(Clone, Debug)]
enum Held {
    /// `[in_channels, len]` values.
    Values { pending: Vec<f32>, spare: Vec<f32> },
    /// For [`ConvMethod::DirectBf16`]: `[⌈in_channels / 2⌉, len]` channel pairs in bf16, as
    /// its kernel reads them, packed as the input arrives (a pass over the signal and half
    /// its bytes saved on every push).
    Pairs { pending: Vec<u32>, spare: Vec<u32> },
}

impl Held {
    /// `rows` rows of `kept` held positions, then `n` new ones (`fill(row, dst)`), then
    /// `zeros` zeros, assembled in `spare` and swapped in.
    fn rebuild<T: Copy + Default + Send + Sync>(
        pending: &mut Vec<T>,
        spare: &mut Vec<T>,
        rows: usize,
        kept: usize,
        n: usize,
        zeros: usize,
        fill: impl Fn(usize, &mut [T]) + Sync + Send,
    ) {
        let len = kept + n + zeros;
        if spare.len() < rows * len {
            spare.resize(rows * len, T::default());
        }
        let old = &*pending;
        rows::for_each_row_mut(&mut spare[..rows * len], len, |r, row| {
            let (head, rest) = row.split_at_mut(kept);
            let (new, pad) = rest.split_at_mut(n);
            head.copy_from_slice(&old[r * kept..][..kept]);
            fill(r, new);
            pad.fill(T::default());
        });
        std::mem::swap(pending, spare);
    }

    /// Drops the first `consumed` of `len` positions of each of `rows` rows, compacting in
    /// place.
    fn drop_front<T: Copy>(pending: &mut [T], rows: usize, len: usize, consumed: usize) {
        let keep = len - consumed;
        for r in 0..rows {
            pending.copy_within(r * len + consumed..(r + 1) * len, r * keep);
        }
    }
}

impl<'w, W: Element> StreamingConv1d<'w, W> {
    pub fn new(conv: Conv1d<'w, W>, pad: (usize, usize)) -> Self {
        let (len, inputs) = (pad.0, conv.shape.in_channels);
        let held = if conv.method == ConvMethod::DirectBf16 {
            Held::Pairs { pending: vec![0; inputs.div_ceil(2) * len], spare: Vec::new() }
        } else {
            Held::Values { pending: vec![0.0; inputs * len], spare: Vec::new() }
        };
        StreamingConv1d { conv, right_pad: pad.1, slope: None, held, len, emitted: 0 }
    }

    /// The convolution of the leaky ReLU (`max(v, slope·v)`, slope below 1) of the input:
    /// the activation is applied as the input is copied in, so the activated signal costs
    /// no pass of its own (HiFi-GAN activates the input of nearly every convolution).
    pub fn leaky_relu(self, slope: f32) -> Self {
        StreamingConv1d { slope: Some(slope), ..self }
    }

    /// Appends `chunk` (activated) and then `zeros` zero columns (the padding, as it is).
    fn append(&mut self, cpu: Cpu, chunk: &[f32], n: usize, zeros: usize) {
        let (inputs, kept, slope) = (self.conv.shape.in_channels, self.len, self.slope);
        let channel = |c: usize| if c < inputs { &chunk[c * n..][..n] } else { &[][..] };
        match &mut self.held {
            Held::Values { pending, spare } => {
                Held::rebuild(pending, spare, inputs, kept, n, zeros, |c, new| match slope {
                    Some(slope) => activation::leaky_relu_into(cpu, channel(c), slope, new),
                    None => new.copy_from_slice(channel(c)),
                })
            }
            Held::Pairs { pending, spare } => {
                let half = inputs.div_ceil(2);
                Held::rebuild(pending, spare, half, kept, n, zeros, |p, new| {
                    direct_bf16::pack_activated(cpu, channel(p), channel(p + half), slope, new)
                })
            }
        }
        self.len = kept + n + zeros;
    }

    /// Every output whose span is in `pending` (before the `end`, only whole Winograd tiles),
    /// then drops the input no later output needs.
    fn emit(&mut self, cpu: Cpu, out: &mut Vec<f32>, end: bool) -> usize {
        let s = self.conv.shape;
        let mut t_out = self.conv.output_len(self.len, (0, 0));
        if self.conv.method == ConvMethod::Winograd && !end {
            // A partial tile waits for the rest of its input: tiles stay where the whole
            // signal's are, so the outputs match it bit for bit.
            t_out = t_out.saturating_sub((self.emitted + t_out + self.conv.phase) % winograd::TILE);
        }
        if t_out == 0 {
            return 0;
        }
        let dst = extend_zeroed(out, s.out_channels * t_out);
        // The next output starts t_out strides on; keep the rest, compacted in place.
        let consumed = t_out * s.stride;
        match &mut self.held {
            Held::Values { pending, .. } => {
                self.conv.run(cpu, &pending[..s.in_channels * self.len], self.len, self.emitted, t_out, dst);
                Held::drop_front(pending, s.in_channels, self.len, consumed);
            }
            Held::Pairs { pending, .. } => {
                let words = &pending[..s.in_channels.div_ceil(2) * self.len];
                direct_bf16::run_packed(cpu, &self.conv.direct(&[], self.len), words, t_out, dst);
                Held::drop_front(pending, s.in_channels.div_ceil(2), self.len, consumed);
            }
        }
        self.len -= consumed;
        self.emitted += t_out;
        t_out
    }
}

/// Extends `out` by `n` zeros and returns them. A `Vec` without an allocation gets a zeroed
/// one from the allocator, whose zeroing is faster than the loop `resize` compiles to (that
/// loop was 2.5 % of the default voice's time: every streamed output starts this way).
pub(crate) fn extend_zeroed(out: &mut Vec<f32>, n: usize) -> &mut [f32] {
    let start = out.len();
    if out.capacity() == 0 {
        *out = vec![0.0; n];
    } else {
        out.resize(start + n, 0.0);
    }
    &mut out[start..]
}

impl<W: Element> ChunkedConv for StreamingConv1d<'_, W> {
    fn out_channels(&self) -> usize {
        self.conv.shape.out_channels
    }

    /// Feeds `chunk` (`[in_channels, n]`) and appends every output it completes to `out`
    /// (channel-major: `[out_channels, m]` for the m new outputs, which it returns).
    fn process(&mut self, cpu: Cpu, chunk: &[f32], n: usize, out: &mut Vec<f32>) -> Result<usize, ConvError> {
        let s = self.conv.shape;
        expect_len("the chunk", chunk.len(), s.in_channels * n, s)?;
        self.append(cpu, chunk, n, 0);
        Ok(self.emit(cpu, out, false))
    }

    /// Feeds `chunk` and the right padding and appends the last outputs to `out`; returns
    /// how many.
    fn finish(&mut self, cpu: Cpu, chunk: &[f32], n: usize, out: &mut Vec<f32>) -> Result<usize, ConvError> {
        let s = self.conv.shape;
        expect_len("the chunk", chunk.len(), s.in_channels * n, s)?;
        self.append(cpu, chunk, n, self.right_pad);
        Ok(self.emit(cpu, out, true))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kernels::testing::{available, random};
    use crate::kernels::Isa;

    /// out[o, t] in f64 straight from the definition, and the sum of |terms| for the bound.
    fn conv_reference(
        s: ConvShape,
        w: &[f32],
        bias: Option<&[f32]>,
        x: &[f32],
        len: usize,
        pad: (usize, usize),
    ) -> (Vec<f64>, Vec<f64>, usize) {
        let padded = len + pad.0 + pad.1;
        let t_out = if padded < s.span() { 0 } else { (padded - s.span()) / s.stride + 1 };
        let (cig, cog) = (s.in_channels / s.groups, s.out_channels / s.groups);
        let at =
            |c: usize, p: usize| if p < pad.0 || p >= pad.0 + len { 0.0 } else { f64::from(x[c * len + p - pad.0]) };
        let (mut want, mut mag) = (vec![0.0; s.out_channels * t_out], vec![0.0; s.out_channels * t_out]);
        for o in 0..s.out_channels {
            let g = o / cog;
            for t in 0..t_out {
                let b = bias.map_or(0.0, |b| f64::from(b[o]));
                let (mut sum, mut m) = (b, b.abs());
                for i in 0..cig {
                    for j in 0..s.kernel {
                        let v =
                            f64::from(w[(o * cig + i) * s.kernel + j]) * at(g * cig + i, t * s.stride + j * s.dilation);
                        sum += v;
                        m += v.abs();
                    }
                }
                want[o * t_out + t] = sum;
                mag[o * t_out + t] = m;
            }
        }
        (want, mag, t_out)
    }

    fn transpose_reference(
        s: ConvShape,
        w: &[f32],
        bias: Option<&[f32]>,
        x: &[f32],
        len: usize,
        crop: (usize, usize),
    ) -> (Vec<f64>, Vec<f64>, usize) {
        let full = if len == 0 { 0 } else { (len - 1) * s.stride + s.span() };
        let t_out = full.saturating_sub(crop.0 + crop.1);
        let (cig, cog) = (s.in_channels / s.groups, s.out_channels / s.groups);
        let (mut want, mut mag) = (vec![0.0; s.out_channels * t_out], vec![0.0; s.out_channels * t_out]);
        for o in 0..s.out_channels {
            let b = bias.map_or(0.0, |b| f64::from(b[o]));
            for p in 0..t_out {
                want[o * t_out + p] = b;
                mag[o * t_out + p] = b.abs();
            }
        }
        for i in 0..s.in_channels {
            let g = i / cig;
            for ol in 0..cog {
                let o = g * cog + ol;
                for j in 0..s.kernel {
                    for t in 0..len {
                        let p = (t * s.stride + j * s.dilation) as isize - crop.0 as isize;
                        if p >= 0 && (p as usize) < t_out {
                            let v = f64::from(w[(i * cog + ol) * s.kernel + j]) * f64::from(x[i * len + t]);
                            want[o * t_out + p as usize] += v;
                            mag[o * t_out + p as usize] += v.abs();
                        }
                    }
                }
            }
        }
        (want, mag, t_out)
    }

    fn check(got: &[f32], want: &[f64], mag: &[f64], terms: usize, what: &str) {
        assert_eq!(got.len(), want.len(), "{what}: length");
        let bound = 4.0 * f64::from(f32::EPSILON) * ((terms + 1) as f64).sqrt();
        for (i, ((&g, &w), &m)) in got.iter().zip(want).zip(mag).enumerate() {
            assert!((f64::from(g) - w).abs() <= bound * m + 1e-30, "{what} [{i}]: {g} vs {w}");
        }
    }

    /// The shapes a HiFi-GAN generator, a WaveNet flow and a depthwise-separable duration
    /// predictor use, shrunk, plus strides, odd groups and a kernel longer than the input.
    fn conv_cases() -> Vec<(ConvShape, (usize, usize), usize)> {
        vec![
            (ConvShape::new(8, 6, 7), (3, 3), 40),                       // conv_pre / conv_post
            (ConvShape::new(6, 6, 3).dilation(5), (5, 5), 33),           // resblock, dilation 5
            (ConvShape::new(4, 8, 1), (0, 0), 17),                       // 1x1
            (ConvShape::new(6, 6, 5).groups(6).dilation(3), (6, 6), 29), // depthwise, dilated
            (ConvShape::new(6, 6, 3).groups(6).stride(2), (1, 1), 30),   // depthwise, strided
            (ConvShape::new(6, 9, 3).groups(3), (1, 1), 25),             // grouped
            (ConvShape::new(3, 5, 4).stride(3), (2, 0), 31),             // strided, causal-ish pad
            (ConvShape::new(3, 2, 9), (0, 0), 5),                        // kernel longer than input
            (ConvShape::new(2, 3, 3), (2, 0), 0),                        // empty input
            (ConvShape::new(3, 4, 2), (1, 2), 0),                        // outputs of padding alone
            // Direct tiles: 15 rows (8 + 4 + 2 + 1 on AVX-512; on AVX2 a block of 12 rows as
            // 6 + 6, then 2 + 1), time tails around 16 and 48 lanes.
            (ConvShape::new(5, 15, 3).dilation(2), (2, 2), 47),
            (ConvShape::new(3, 15, 5), (2, 2), 97),
            (ConvShape::new(4, 9, 2).dilation(7), (0, 7), 17),
            (ConvShape::new(12, 3, 7).dilation(3), (9, 9), 113),
            // One input channel: in bf16 mode one channel pair, half of it the zero channel.
            (ConvShape::new(1, 3, 4), (1, 2), 21),
            // An odd pair count and 8 + 1 rows over two full tiles and a tail.
            (ConvShape::new(7, 9, 3).dilation(4), (4, 4), 110),
            // Winograd: a WaveNet layer and a transformer FFN shrunk, a tail of 1, 2 and 3
            // outputs past the last whole tile, and 17 output channels (one block and one).
            (ConvShape::new(12, 17, 5), (2, 2), 61),
            (ConvShape::new(10, 7, 3), (1, 1), 50),
            (ConvShape::new(5, 6, 4), (3, 0), 43),
            // 9 tiles of 4 outputs: on AVX2 the product's rows as 6 + 2 + 1.
            (ConvShape::new(6, 5, 3), (1, 1), 36),
        ]
    }

    /// A block's tiles: the tallest that fits, but never a 6-row tile that leaves 2 rows when
    /// two of 4 would do (AVX2); AVX-512's heights split every block as they always did, in
    /// the direct kernel (8 rows) and in Winograd's product (12).
    #[cfg(target_arch = "x86_64")]
    #[test]
    fn a_block_is_cut_into_its_paths_tiles() {
        use super::direct::tile::rows_of_tile;
        let split = |mut left: usize, heights: &[usize]| {
            let mut tiles = Vec::new();
            while left > 0 {
                let r = rows_of_tile(left, heights);
                assert!(heights.contains(&r) && r <= left, "{r} rows of {left}");
                tiles.push(r);
                left -= r;
            }
            tiles
        };
        let avx2 = [6, 4, 2, 1];
        assert_eq!(split(12, &avx2), [6, 6]);
        assert_eq!(split(8, &avx2), [4, 4]);
        assert_eq!(split(10, &avx2), [6, 4]);
        assert_eq!(split(9, &avx2), [6, 2, 1]);
        assert_eq!(split(5, &avx2), [4, 1]);
        for left in 1..=64 {
            for heights in [[8, 4, 2, 1], [12, 4, 2, 1]] {
                let greedy = heights.into_iter().find(|&h| h <= left).unwrap();
                assert_eq!(rows_of_tile(left, &heights), greedy, "AVX-512, {left} rows of {heights:?}");
            }
        }
    }

    /// The methods that can compute `s`.
    fn methods(s: ConvShape) -> Vec<ConvMethod> {
        [ConvMethod::Direct, ConvMethod::DirectBf16, ConvMethod::Gemm, ConvMethod::Winograd]
            .into_iter()
            .filter(|m| m.supports(s))
            .collect()
    }

    /// The values `method` multiplies: rounded to bf16 for [`ConvMethod::DirectBf16`].
    fn operands(method: ConvMethod, v: &[f32]) -> Vec<f32> {
        use crate::kernels::bf16::scalar::{narrow, widen};
        if method == ConvMethod::DirectBf16 {
            v.iter().map(|&v| widen(narrow(v))).collect()
        } else {
            v.to_vec()
        }
    }

    #[test]
    fn convolution_matches_the_definition_on_every_path() {
        for (i, (s, pad, len)) in conv_cases().into_iter().enumerate() {
            let w = random(s.out_channels * s.in_channels / s.groups * s.kernel, 100 + i as u64);
            let bias = random(s.out_channels, 200 + i as u64);
            let x = random(s.in_channels * len, 300 + i as u64);
            for (with_bias, method) in
                [false, true].into_iter().flat_map(|b| methods(s).into_iter().map(move |m| (b, m)))
            {
                let b = with_bias.then_some(&bias[..]);
                // A Winograd phase other than 0 moves its tiles; the values stay the definition's.
                let conv =
                    Conv1d::new(s, &w, b).unwrap().with_method(method).unwrap().with_winograd_phase(i % 4).unwrap();
                let (wr, xr) = (operands(method, &w), operands(method, &x));
                let (want, mag, t_out) = conv_reference(s, &wr, b, &xr, len, pad);
                assert_eq!(conv.output_len(len, pad), t_out);
                // The f32 direct kernel on the rounded operands: what bf16 mode computes below
                // the BF16 level.
                let on_rounded = Conv1d::new(s, &wr, b).unwrap().with_method(ConvMethod::Direct);
                let mut simd: Option<Vec<f32>> = None;
                for cpu in available() {
                    let mut out = vec![f32::NAN; s.out_channels * t_out];
                    conv.forward(cpu, &x, len, pad, &mut out).unwrap();
                    let what = format!("{} {method:?} {s:?} pad {pad:?}", cpu.isa());
                    check(&out, &want, &mag, s.in_channels * s.kernel, &what);
                    // The direct SIMD paths run the same FMA chains, 8 or 16 lanes wide.
                    let fma_chains = method == ConvMethod::Direct
                        || (method == ConvMethod::DirectBf16 && cpu.isa() < Isa::Avx512Bf16);
                    if fma_chains && cpu.isa() >= Isa::Avx2 {
                        assert_eq!(simd.get_or_insert_with(|| out.clone()), &out, "{what}: differs from AVX2");
                    }
                    // Winograd: FMA chains, transforms included, on every level, scalar included.
                    if method == ConvMethod::Winograd {
                        assert_eq!(simd.get_or_insert_with(|| out.clone()), &out, "{what}: differs from scalar");
                    }
                    if method == ConvMethod::DirectBf16 && cpu.isa() < Isa::Avx512Bf16 {
                        let mut same = vec![f32::NAN; out.len()];
                        on_rounded.as_ref().unwrap().forward(cpu, &xr, len, pad, &mut same).unwrap();
                        assert_eq!(out, same, "{what}: not the f32 kernel on the rounded operands");
                    }
                }
            }
        }
    }

    /// The bf16 mode really multiplies bf16 values: on operands that bf16 cannot hold, its
    /// output leaves the f32 definition by far more than f32 rounding (and meets the rounded
    /// one, which the test above checks).
    #[test]
    fn bf16_mode_rounds_its_operands() {
        let s = ConvShape::new(16, 8, 5).dilation(2);
        let (len, pad) = (200, (4, 4));
        let (w, x) = (random(s.out_channels * s.in_channels * s.kernel, 51), random(s.in_channels * len, 52));
        let conv = Conv1d::new(s, &w, None).unwrap().with_method(ConvMethod::DirectBf16).unwrap();
        let (exact, _, t_out) = conv_reference(s, &w, None, &x, len, pad);
        for cpu in available() {
            let mut out = vec![0.0; s.out_channels * t_out];
            conv.forward(cpu, &x, len, pad, &mut out).unwrap();
            let err = out.iter().zip(&exact).map(|(&g, &w)| (f64::from(g) - w).abs()).fold(0.0, f64::max);
            // bf16 keeps 8 significant bits: errors of 2^-9 relative per operand, not 2^-24.
            assert!(err > 1e-4, "{}: largest error {err} is f32's, not bf16's", cpu.isa());
            assert!(err < 0.1, "{}: largest error {err}", cpu.isa());
        }
    }

    #[test]
    fn bf16_weights_packed_ahead_give_the_same_output_bit_for_bit() {
        for (s, pad, len) in conv_cases().into_iter().filter(|c| ConvMethod::DirectBf16.supports(c.0)) {
            let w = random(s.out_channels * s.in_channels * s.kernel, 27);
            let x = random(s.in_channels * len, 29);
            let conv = Conv1d::new(s, &w, None).unwrap().with_method(ConvMethod::DirectBf16).unwrap();
            let pairs = conv.bf16_pairs().unwrap();
            for cpu in available() {
                let mut want = vec![0.0; s.out_channels * conv.output_len(len, pad)];
                conv.forward(cpu, &x, len, pad, &mut want).unwrap();
                let mut got = vec![f32::NAN; want.len()];
                conv.with_bf16_pairs(&pairs).unwrap().forward(cpu, &x, len, pad, &mut got).unwrap();
                assert_eq!(got, want, "{} {s:?}", cpu.isa());
            }
        }
        let other = Conv1d::new(ConvShape::new(2, 2, 3), &[0.0f32; 12], None).unwrap();
        let pairs = Conv1d::new(ConvShape::new(2, 2, 1), &[0.0f32; 4], None).unwrap().bf16_pairs().unwrap();
        assert!(other.with_bf16_pairs(&pairs).unwrap_err().to_string().contains("packed for"));
    }

    #[test]
    fn bf16_weights_are_widened_exactly_by_every_method() {
        let s = ConvShape::new(6, 11, 3).dilation(2);
        let (len, pad) = (53, (2, 2));
        let wf = random(s.out_channels * s.in_channels * s.kernel, 31);
        let wb: Vec<u16> = wf.iter().map(|&v| crate::kernels::bf16::scalar::narrow(v)).collect();
        let widened: Vec<f32> = wb.iter().map(|&b| crate::kernels::bf16::scalar::widen(b)).collect();
        let x = random(s.in_channels * len, 32);
        for method in methods(s) {
            let (want, mag, t_out) = conv_reference(s, &widened, None, &operands(method, &x), len, pad);
            let conv = Conv1d::new(s, &wb, None).unwrap().with_method(method).unwrap();
            let exact = Conv1d::new(s, &widened, None).unwrap().with_method(method).unwrap();
            for cpu in available() {
                let (mut out, mut same) = (vec![0.0; s.out_channels * t_out], vec![0.0; s.out_channels * t_out]);
                conv.forward(cpu, &x, len, pad, &mut out).unwrap();
                exact.forward(cpu, &x, len, pad, &mut same).unwrap();
                check(&out, &want, &mag, s.in_channels * s.kernel, &format!("{} {method:?} bf16", cpu.isa()));
                assert_eq!(out, same, "{} {method:?}: bf16 weights and their f32 widening", cpu.isa());
            }
        }
    }

    /// A vocoder-sized call runs on the pool in blocks; one-sample chunks of the same stream
    /// run on the calling thread, one tile at a time. Both must give the same bits, in f32
    /// and in bf16 mode; the threaded call must also meet the definition.
    #[test]
    fn a_threaded_direct_call_equals_its_stream_bit_for_bit() {
        let s = ConvShape::new(32, 32, 7).dilation(3);
        let (len, pad) = (1500, (9, 9));
        let w = random(s.out_channels * s.in_channels * s.kernel, 41);
        let (bias, x) = (random(s.out_channels, 42), random(s.in_channels * len, 43));
        assert_eq!(Conv1d::new(s, &w, Some(&bias)).unwrap().method(), ConvMethod::Direct);
        let sizes: Vec<usize> = (0..)
            .map(|k| [1, 5, 16, 47, 130][k % 5])
            .scan(0, |at, n| {
                let n = usize::min(n, len - *at);
                *at += n;
                (n > 0).then_some(n)
            })
            .collect();
        for method in [ConvMethod::Direct, ConvMethod::DirectBf16] {
            let conv = Conv1d::new(s, &w, Some(&bias)).unwrap().with_method(method).unwrap();
            let t_out = conv.output_len(len, pad);
            let (want, mag, _) = conv_reference(s, &operands(method, &w), Some(&bias), &operands(method, &x), len, pad);
            let mut whole = vec![0.0; s.out_channels * t_out];
            for cpu in available() {
                conv.forward(cpu, &x, len, pad, &mut whole).unwrap();
                check(&whole, &want, &mag, s.in_channels * s.kernel, &format!("{} {method:?}", cpu.isa()));
                let streamed = stream(cpu, StreamingConv1d::new(conv, pad), &x, s.in_channels, len, &sizes);
                assert!(streamed == whole, "{} {method:?}", cpu.isa());
            }
        }
    }

    #[test]
    fn the_method_follows_the_shape_and_direct_refuses_what_it_cannot_do() {
        let w = [0.0f32; 4 * 4 * 3];
        let pick = |s: ConvShape| Conv1d::new(s, &w[..s.out_channels * s.in_channels / s.groups * s.kernel], None);
        assert_eq!(pick(ConvShape::new(4, 4, 3).dilation(5)).unwrap().method(), ConvMethod::Direct);
        assert_eq!(pick(ConvShape::new(4, 4, 3).stride(2)).unwrap().method(), ConvMethod::Gemm);
        assert_eq!(pick(ConvShape::new(4, 4, 3).groups(2)).unwrap().method(), ConvMethod::Gemm);
        let big = ConvShape::new(ConvMethod::GEMM_POINTWISE_IN_CHANNELS, 4, 1);
        assert_eq!(ConvMethod::for_shape(big), ConvMethod::Gemm);
        assert_eq!(ConvMethod::for_shape(ConvShape::new(big.in_channels, 4, 2)), ConvMethod::Direct);
        for method in [ConvMethod::Direct, ConvMethod::DirectBf16] {
            let e = pick(ConvShape::new(4, 4, 3).groups(2)).unwrap().with_method(method).unwrap_err();
            assert!(e.to_string().contains("one group and stride 1") && e.to_string().contains("Gemm"), "{e}");
            assert!(e.to_string().contains(&format!("{method:?}")), "{e}");
        }
        // bf16 products are opted into, never picked: no shape gets them by default.
        let bf16 = pick(ConvShape::new(4, 4, 3)).unwrap().with_method(ConvMethod::DirectBf16).unwrap();
        assert_eq!(bf16.method(), ConvMethod::DirectBf16);
        for s in conv_cases().into_iter().map(|c| c.0).chain([big, ConvShape::new(64, 64, 5).dilation(6)]) {
            assert_ne!(ConvMethod::for_shape(s), ConvMethod::DirectBf16, "{s:?}");
            assert_ne!(ConvMethod::for_shape(s), ConvMethod::Winograd, "{s:?}");
        }
        // Winograd: one group, stride 1, no dilation, kernels 2 to 5; a phase below 4.
        for s in [ConvShape::new(4, 4, 3).dilation(2), ConvShape::new(4, 4, 3).stride(2), ConvShape::new(4, 4, 7)] {
            let w = vec![0.0f32; 16 * s.kernel];
            let e = Conv1d::new(s, &w, None).unwrap().with_method(ConvMethod::Winograd).unwrap_err().to_string();
            assert!(e.contains("dilation 1 and a kernel of 2 to 5") && e.contains("Gemm"), "{e}");
        }
        assert!(pick(ConvShape::new(4, 4, 3)).unwrap().with_method(ConvMethod::Winograd).is_ok());
        let e = pick(ConvShape::new(4, 4, 3)).unwrap().with_winograd_phase(4).unwrap_err();
        assert!(e.to_string().contains("below 4"), "{e}");
    }

    /// A Winograd stream holds back the outputs of a partial tile, and none when its phase
    /// puts the end of every chunk's outputs at the end of a tile.
    #[test]
    fn a_winograd_stream_holds_back_only_partial_tiles() {
        let (s, pad) = (ConvShape::new(3, 4, 5), (2, 2));
        let w = random(4 * 3 * 5, 71);
        let conv = Conv1d::new(s, &w, None).unwrap().with_method(ConvMethod::Winograd).unwrap();
        // Fed 4 inputs at a time, 2 of them the right context: outputs 2, 6, 10, ... are ready.
        for (phase, lag) in [(2, 2), (0, 4)] {
            let mut stream = StreamingConv1d::new(conv.with_winograd_phase(phase).unwrap(), pad);
            let mut emitted = 0;
            for chunk in 1..=5 {
                emitted += stream.process(Cpu::best(), &random(3 * 4, chunk), 4, &mut vec![]).unwrap();
                assert_eq!(emitted, 4 * chunk as usize - lag, "phase {phase} after {chunk} chunks");
            }
        }
    }

    /// Winograd weights transformed ahead give the per-call transform's output bit for bit,
    /// and weights for another shape are refused.
    #[test]
    fn winograd_weights_transformed_ahead_give_the_same_output_bit_for_bit() {
        for (s, pad, len) in conv_cases().into_iter().filter(|c| ConvMethod::Winograd.supports(c.0)) {
            let (w, x) = (random(s.out_channels * s.in_channels * s.kernel, 61), random(s.in_channels * len, 62));
            let conv = Conv1d::new(s, &w, None).unwrap().with_method(ConvMethod::Winograd).unwrap();
            let u = conv.winograd_weights().unwrap();
            for cpu in available() {
                let t_out = conv.output_len(len, pad);
                let (mut want, mut got) = (vec![0.0; s.out_channels * t_out], vec![1.0; s.out_channels * t_out]);
                conv.forward(cpu, &x, len, pad, &mut want).unwrap();
                conv.with_winograd_weights(&u).unwrap().forward(cpu, &x, len, pad, &mut got).unwrap();
                assert_eq!(got, want, "{} {s:?}", cpu.isa());
                // Without the weights they came from: the same bits, and nothing else.
                let alone = Conv1d::<f32>::transformed(&u, None).unwrap();
                got.fill(1.0);
                alone.forward(cpu, &x, len, pad, &mut got).unwrap();
                assert_eq!(got, want, "{} {s:?}, from the transformed weights alone", cpu.isa());
            }
        }
        let small = Conv1d::new(ConvShape::new(2, 2, 3), &[0.0; 12], None).unwrap().winograd_weights().unwrap();
        let other = Conv1d::new(ConvShape::new(2, 3, 3), &[0.0; 18], None).unwrap();
        assert!(other.with_winograd_weights(&small).unwrap_err().to_string().contains("transformed for"));
        let dilated = Conv1d::new(ConvShape::new(2, 2, 3).dilation(2), &[0.0; 12], None).unwrap();
        assert!(dilated.winograd_weights().unwrap_err().to_string().contains("Winograd"));
        let alone = Conv1d::<f32>::transformed(&small, None).unwrap();
        for method in [ConvMethod::Direct, ConvMethod::DirectBf16, ConvMethod::Gemm] {
            assert!(alone.with_method(method).unwrap_err().to_string().contains("only its Winograd weights"));
        }
        assert!(alone.bf16_pairs().is_err() && alone.winograd_weights().is_err());
        assert!(Conv1d::<f32>::transformed(&small, Some(&[0.0; 3])).is_err(), "a bias of the wrong size");
    }

    /// Transposed shapes: HiFi-GAN's upsamplers, shrunk, and the odd ones (groups, dilation,
    /// a kernel shorter than the stride, crops past `span − stride`).
    fn transposed_cases() -> Vec<(ConvShape, (usize, usize), usize)> {
        vec![
            (ConvShape::new(8, 4, 16).stride(8), (4, 4), 12), // HiFi-GAN x8 upsampling
            (ConvShape::new(6, 4, 16).stride(8), (4, 4), 23),
            (ConvShape::new(4, 4, 4).stride(2), (1, 1), 15), // x2
            (ConvShape::new(4, 3, 4).stride(2), (0, 2), 19), // causal: crop kernel − stride on the right
            (ConvShape::new(4, 6, 3).stride(2).dilation(2).groups(2), (1, 0), 13),
            (ConvShape::new(3, 2, 5).stride(3).dilation(2), (2, 1), 11),
            (ConvShape::new(2, 2, 3).stride(4), (0, 0), 9), // kernel shorter than the stride
            (ConvShape::new(3, 2, 10).stride(5), (2, 3), 14), // x5 (Qwen3's decoder)
            (ConvShape::new(2, 3, 12).stride(6), (1, 4), 9), // a factor without its own loop
            (ConvShape::new(2, 2, 5).stride(1), (3, 1), 8),
            (ConvShape::new(3, 2, 4).stride(2), (0, 3), 10), // a right crop past span − stride
            (ConvShape::new(2, 2, 4).stride(2), (1, 1), 1),
            (ConvShape::new(2, 2, 4).stride(2), (0, 0), 0),
        ]
    }

    #[test]
    fn transposed_convolution_matches_the_definition_on_every_path() {
        for (i, (s, crop, len)) in transposed_cases().into_iter().enumerate() {
            let w = random(s.in_channels * s.out_channels / s.groups * s.kernel, 400 + i as u64);
            let bias = random(s.out_channels, 500 + i as u64);
            let x = random(s.in_channels * len, 600 + i as u64);
            let mut up = ConvTranspose1d::new(s, &w, Some(&bias)).unwrap();
            let (want, mag, t_out) = transpose_reference(s, &w, Some(&bias), &x, len, crop);
            assert_eq!(up.output_len(len, crop), t_out, "{s:?}");
            let phases = ConvShape::new(s.in_channels, s.stride * s.out_channels, 1).groups(s.groups);
            for method in methods(phases) {
                up.set_method(method).unwrap();
                let x = operands(method, &x);
                let (want, mag, _) = match method {
                    ConvMethod::DirectBf16 => transpose_reference(s, &operands(method, &w), Some(&bias), &x, len, crop),
                    _ => (want.clone(), mag.clone(), t_out),
                };
                for cpu in available() {
                    let mut out = vec![f32::NAN; s.out_channels * t_out];
                    up.forward(cpu, &x, len, crop, &mut out).unwrap();
                    let what = format!("{} {method:?} {s:?} crop {crop:?}", cpu.isa());
                    check(&out, &want, &mag, s.in_channels * s.kernel, &what);
                }
            }
        }
    }

    /// Chunk sizes for a stream of `len`: empty, single values and ragged runs.
    fn chunkings(len: usize) -> Vec<Vec<usize>> {
        let mut ragged = vec![];
        let (mut left, mut step) = (len, 0);
        while left > 0 {
            let n = [3, 0, 1, 7, 2, 11][step % 6].min(left);
            ragged.push(n);
            left -= n;
            step += 1;
        }
        vec![vec![len], vec![1; len], ragged]
    }

    /// `x` (`[channels, len]`) fed to `stream` in chunks of `sizes`, the last one with the
    /// end: the outputs concatenated in time.
    fn stream(
        cpu: Cpu,
        mut stream: impl ChunkedConv,
        x: &[f32],
        channels: usize,
        len: usize,
        sizes: &[usize],
    ) -> Vec<f32> {
        let mut pieces = vec![];
        let mut at = 0;
        // No chunks at all still ends the signal, with an empty last chunk.
        let sizes = if sizes.is_empty() { &[0][..] } else { sizes };
        for (i, &n) in sizes.iter().enumerate() {
            let chunk: Vec<f32> = (0..channels).flat_map(|c| x[c * len + at..][..n].to_vec()).collect();
            at += n;
            let mut out = vec![];
            // The last chunk goes in with the end of the signal.
            let m = if i + 1 == sizes.len() {
                stream.finish(cpu, &chunk, n, &mut out)
            } else {
                stream.process(cpu, &chunk, n, &mut out)
            };
            pieces.push((out, m.unwrap()));
        }
        let (outs, total) = (stream.out_channels(), pieces.iter().map(|p| p.1).sum::<usize>());
        let mut whole = vec![0.0; outs * total];
        let mut at = 0;
        for (v, m) in pieces {
            for c in 0..outs {
                whole[c * total + at..][..m].copy_from_slice(&v[c * m..][..m]);
            }
            at += m;
        }
        whole
    }

    #[test]
    fn streamed_convolution_equals_the_whole_signal_bit_for_bit() {
        for (s, pad, len) in conv_cases() {
            let w = random(s.out_channels * s.in_channels / s.groups * s.kernel, 7);
            let bias = random(s.out_channels, 8);
            let x = random(s.in_channels * len, 9);
            for (method, cpu) in methods(s).into_iter().flat_map(|m| available().into_iter().map(move |c| (m, c))) {
                // Winograd's tiles at every phase.
                for phase in 0..if method == ConvMethod::Winograd { 4 } else { 1 } {
                    let conv = Conv1d::new(s, &w, Some(&bias)).unwrap().with_method(method).unwrap();
                    let conv = conv.with_winograd_phase(phase).unwrap();
                    let mut whole = vec![0.0; s.out_channels * conv.output_len(len, pad)];
                    conv.forward(cpu, &x, len, pad, &mut whole).unwrap();
                    for sizes in chunkings(len) {
                        let streamed = stream(cpu, StreamingConv1d::new(conv, pad), &x, s.in_channels, len, &sizes);
                        let what = format!("{} {method:?} phase {phase} {s:?} pad {pad:?} chunks {sizes:?}", cpu.isa());
                        assert_eq!(streamed, whole, "{what}");
                    }
                }
            }
        }
    }

    #[test]
    fn streamed_transposed_convolution_equals_the_whole_signal_bit_for_bit() {
        for (s, crop, len) in transposed_cases() {
            let w = random(s.in_channels * s.out_channels / s.groups * s.kernel, 17);
            let bias = random(s.out_channels, 18);
            let x = random(s.in_channels * len, 19);
            let mut up = ConvTranspose1d::new(s, &w, Some(&bias)).unwrap();
            let phases = ConvShape::new(s.in_channels, s.stride * s.out_channels, 1).groups(s.groups);
            for (method, cpu) in methods(phases).into_iter().flat_map(|m| available().into_iter().map(move |c| (m, c)))
            {
                up.set_method(method).unwrap();
                let mut whole = vec![0.0; s.out_channels * up.output_len(len, crop)];
                up.forward(cpu, &x, len, crop, &mut whole).unwrap();
                for sizes in chunkings(len) {
                    let streamed =
                        stream(cpu, StreamingConvTranspose1d::new(&up, crop), &x, s.in_channels, len, &sizes);
                    assert_eq!(streamed, whole, "{} {method:?} {s:?} crop {crop:?} chunks {sizes:?}", cpu.isa());
                }
            }
        }
    }

    #[test]
    fn a_leaky_relu_at_the_input_of_a_stream_is_the_convolution_of_the_activated_signal() {
        let leaky = |x: &[f32]| x.iter().map(|&v| if v < 0.0 { 0.1 * v } else { v }).collect::<Vec<f32>>();
        let (s, pad, len) = (ConvShape::new(3, 4, 5).dilation(2), (4, 4), 17);
        let (w, x) = (random(4 * 3 * 5, 41), random(3 * len, 42));
        // Every method on every level: bf16 products hold their input as packed pairs,
        // activated and packed in one pass.
        for (method, cpu) in methods(s).into_iter().flat_map(|m| available().into_iter().map(move |c| (m, c))) {
            let conv = Conv1d::new(s, &w, None).unwrap().with_method(method).unwrap();
            let mut want = vec![0.0; 4 * conv.output_len(len, pad)];
            conv.forward(cpu, &leaky(&x), len, pad, &mut want).unwrap();
            for sizes in chunkings(len) {
                let leaky_stream = StreamingConv1d::new(conv, pad).leaky_relu(0.1);
                let got = stream(cpu, leaky_stream, &x, 3, len, &sizes);
                assert_eq!(got, want, "{} {method:?} chunks {sizes:?}", cpu.isa());
            }
        }
        let (s, crop) = (ConvShape::new(3, 2, 8).stride(4), (2, 2));
        let up = ConvTranspose1d::new(s, &random(3 * 2 * 8, 43), None).unwrap();
        let mut want = vec![0.0; 2 * up.output_len(len, crop)];
        up.forward(Cpu::best(), &leaky(&x), len, crop, &mut want).unwrap();
        for sizes in chunkings(len) {
            let leaky_stream = StreamingConvTranspose1d::new(&up, crop).leaky_relu(0.1);
            assert_eq!(stream(Cpu::best(), leaky_stream, &x, 3, len, &sizes), want, "chunks {sizes:?}");
        }
    }

    #[test]
    fn wrong_sizes_are_errors_that_say_what() {
        let s = ConvShape::new(4, 6, 3).groups(2);
        let e = Conv1d::new(s, &[0.0f32; 35], None).unwrap_err();
        assert!(e.to_string().contains("the weight has 35 values") && e.to_string().contains("needs 36"), "{e}");
        assert!(Conv1d::new(s, &[0.0f32; 36], Some(&[0.0; 5])).unwrap_err().to_string().contains("the bias"));
        let e = Conv1d::new(ConvShape::new(4, 6, 3).groups(3), &[0.0f32; 24], None).unwrap_err();
        assert!(e.to_string().contains("do not divide"), "{e}");
        assert!(Conv1d::new(ConvShape::new(4, 6, 0), &[0.0f32; 0], None).is_err());
        let conv = Conv1d::new(s, &[0.0f32; 36], None).unwrap();
        let mut out = vec![0.0; 6 * 8];
        let e = conv.forward(Cpu::best(), &[0.0; 39], 10, (0, 0), &mut out).unwrap_err();
        assert!(e.to_string().contains("the input has 39 values"), "{e}");
        assert!(conv.forward(Cpu::best(), &[0.0; 40], 10, (0, 0), &mut out[..47]).is_err());
        let up = ConvTranspose1d::new(ConvShape::new(2, 2, 4).stride(2), &[0.0f32; 16], None).unwrap();
        assert!(up.forward(Cpu::best(), &[0.0; 8], 4, (0, 0), &mut [0.0; 19]).is_err());
        assert!(up.forward(Cpu::best(), &[0.0; 7], 4, (0, 0), &mut [0.0; 20]).is_err());
        let e = ConvTranspose1d::new(ConvShape::new(2, 2, 4).stride(2), &[0.0f32; 15], None).unwrap_err();
        assert!(e.to_string().contains("the weight has 15 values"), "{e}");
    }
}
