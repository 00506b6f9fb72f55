//! Transposed convolution (upsampling by the stride) computed as one ordinary convolution.
//!
//! Input `x[i, t]` adds `w[i, o, j] · x[i, t]` to output position `q = t·stride + j·dilation`.
//! Split the positions by phase `r = q mod stride`: position `q = m·stride + r` receives tap j
//! from input `t = m − e` with `e = ⌊j·dilation / stride⌋`, for exactly the taps whose
//! `j·dilation` has remainder r. So phase r is a stride-1 convolution of the input with
//! `taps = ⌊(kernel − 1)·dilation / stride⌋ + 1` taps (zero where no tap of the kernel falls),
//! and stacking the phases as output channels turns the whole upsampling into one
//! convolution `[stride · out, in, taps]` over the input, padded by `taps − 1` each side so
//! that column m is output positions `m·stride .. (m + 1)·stride`. That convolution runs on
//! the direct kernels (f32 or bf16 products, blocked and threaded as any other), and one pass
//! interleaves its rows into the output; there is no im2col operand and no col2im scatter.
//! Nothing is multiplied twice: for the usual `kernel = 2·stride` upsampler every stacked tap
//! is a real one.
//!
//! The streaming form is a [`StreamingConv1d`] over the stacked convolution plus the
//! interleaving, so chunked calls equal the whole-signal call bit for bit as that one's do.

use super::{
    expect_len, extend_zeroed, ChunkedConv, Conv1d, ConvError, ConvMethod, ConvShape, MethodChoice, StreamingConv1d,
};
use crate::kernels::cpu::Cpu;
use crate::kernels::gemm::Element;
use crate::kernels::rows;

/// A transposed convolution: weights in PyTorch's `[in, out/groups, kernel]` layout, rearranged
/// once into the stacked phase convolution (see the module comment), which it owns.
///
/// ```
/// use spiral_engine::kernels::conv::{ConvShape, ConvTranspose1d};
/// use spiral_engine::kernels::Cpu;
/// // Upsampling by 2 with a 2-tap kernel repeats each value.
/// let up = ConvTranspose1d::new(ConvShape::new(1, 1, 2).stride(2), &[1.0f32, 1.0], None).unwrap();
/// let mut out = vec![0.0; up.output_len(3, (0, 0))];
/// up.forward(Cpu::best(), &[1.0, 2.0, 3.0], 3, (0, 0), &mut out).unwrap();
/// assert_eq!(out, [1.0, 1.0, 2.0, 2.0, 3.0, 3.0]);
/// ```
#[derive(Clone, Debug)]
pub struct ConvTranspose1d {
    shape: ConvShape,
    /// Taps of each phase's convolution.
    taps: usize,
    /// `[groups · stride · out/groups, in/groups, taps]`: group-major, then phase, then channel.
    stacked: Vec<f32>,
    bias: Option<Vec<f32>>,
    /// How the stacked phase convolution computes.
    method: MethodChoice,
}

impl ConvTranspose1d {
    /// Weights `[in, out/groups, kernel]` and an optional bias `[out]`, checked against `shape`.
    pub fn new<W: Element>(shape: ConvShape, weight: &[W], bias: Option<&[f32]>) -> Result<Self, ConvError> {
        shape.check()?;
        let s = shape;
        let (cig, cog) = (s.in_channels / s.groups, s.out_channels / s.groups);
        expect_len("the weight", weight.len(), s.in_channels * cog * s.kernel, s)?;
        if let Some(b) = bias {
            expect_len("the bias", b.len(), s.out_channels, s)?;
        }
        let taps = (s.kernel - 1) * s.dilation / s.stride + 1;
        let row = |g: usize, r: usize, o: usize| (g * s.stride + r) * cog + o;
        let mut stacked = vec![0.0; s.stride * s.out_channels * cig * taps];
        for g in 0..s.groups {
            for i in 0..cig {
                for o in 0..cog {
                    for j in 0..s.kernel {
                        let q = j * s.dilation;
                        let (r, e) = (q % s.stride, q / s.stride);
                        let w = weight[((g * cig + i) * cog + o) * s.kernel + j].to_f32();
                        stacked[(row(g, r, o) * cig + i) * taps + taps - 1 - e] = w;
                    }
                }
            }
        }
        let bias = bias.map(|b| {
            let mut stacked = vec![0.0; s.stride * s.out_channels];
            for g in 0..s.groups {
                for r in 0..s.stride {
                    stacked[row(g, r, 0)..][..cog].copy_from_slice(&b[g * cog..][..cog]);
                }
            }
            stacked
        });
        Ok(ConvTranspose1d { shape, taps, stacked, bias, method: MethodChoice::default() })
    }

    pub fn shape(&self) -> ConvShape {
        self.shape
    }

    /// How the stacked phase convolution computes (any [`ConvMethod`] that does its shape:
    /// stride 1, and one group for the direct ones).
    pub fn set_method(&mut self, method: ConvMethod) -> Result<(), ConvError> {
        let ConvTranspose1d { shape, taps, stacked, bias, method: choice } = self;
        choice.set(stacked_conv(*shape, *taps, stacked, bias.as_deref()), method)
    }

    /// The stacked phase convolution.
    fn phases(&self) -> Conv1d<'_, f32> {
        self.method.apply(stacked_conv(self.shape, self.taps, &self.stacked, self.bias.as_deref()))
    }

    /// Output length for `len` input values with `crop` (left, right) removed: the full
    /// output has `(len − 1)·stride + span` positions; 0 when the crop takes everything.
    pub fn output_len(&self, len: usize, crop: (usize, usize)) -> usize {
        if len == 0 {
            return 0;
        }
        ((len - 1) * self.shape.stride + self.shape.span()).saturating_sub(crop.0 + crop.1)
    }

    /// `out` (`[out_channels, output_len(len, crop)]`) from `input` (`[in_channels, len]`):
    /// the full output less `crop` (PyTorch's `padding = p, output_padding = q` is a crop
    /// of `(p, p − q)`).
    pub fn forward(
        &self,
        cpu: Cpu,
        input: &[f32],
        len: usize,
        crop: (usize, usize),
        out: &mut [f32],
    ) -> Result<(), ConvError> {
        let s = self.shape;
        expect_len("the input", input.len(), s.in_channels * len, s)?;
        expect_len("the output", out.len(), s.out_channels * self.output_len(len, crop), s)?;
        let mut all = Vec::with_capacity(out.len());
        StreamingConvTranspose1d::new(self, crop).finish(cpu, input, len, &mut all)?;
        out.copy_from_slice(&all);
        Ok(())
    }
}

/// The stacked phase convolution of a transposed one of `shape` (see the module comment).
fn stacked_conv<'w>(shape: ConvShape, taps: usize, stacked: &'w [f32], bias: Option<&'w [f32]>) -> Conv1d<'w, f32> {
    let s = shape;
    let phases = ConvShape::new(s.in_channels, s.stride * s.out_channels, taps).groups(s.groups);
    Conv1d::new(phases, stacked, bias).expect("stacked at construction")
}

/// A [`ConvTranspose1d`] fed in chunks: the output of all chunks and of
/// [`finish`](ChunkedConv::finish), concatenated, is [`ConvTranspose1d::forward`]'s over the
/// whole signal cropped by `crop`, bit for bit. After n inputs the phase columns up to n are
/// final, i.e. positions up to `n·stride`; those that would lie in the right crop if the
/// signal ended there wait (with their columns) for more input or for the end.
#[derive(Clone, Debug)]
pub struct StreamingConvTranspose1d<'w> {
    up: &'w ConvTranspose1d,
    phases: StreamingConv1d<'w, f32>,
    crop: (usize, usize),
    /// Positions held back from each call for the right crop.
    held: usize,
    /// Inputs seen so far, and the next whole-output position to emit.
    seen: usize,
    next: usize,
    /// Phase columns computed but not all emitted, `[stride · out_channels, held]`, the
    /// first of them column `first`.
    columns: Vec<f32>,
    first: usize,
    /// Where new columns land before they join `columns`.
    fresh: Vec<f32>,
}

impl<'w> StreamingConvTranspose1d<'w> {
    pub fn new(up: &'w ConvTranspose1d, crop: (usize, usize)) -> Self {
        let s = up.shape;
        // After n inputs the full output ends at (n − 1)·stride + span less the right crop.
        let held = (crop.1 + s.stride).saturating_sub(s.span());
        let pad = up.taps - 1;
        StreamingConvTranspose1d {
            up,
            phases: StreamingConv1d::new(up.phases(), (pad, pad)),
            crop,
            held,
            seen: 0,
            next: crop.0,
            columns: Vec::new(),
            first: 0,
            fresh: Vec::new(),
        }
    }

    /// The transposed convolution of the leaky ReLU of the input (see
    /// [`StreamingConv1d::leaky_relu`]).
    pub fn leaky_relu(self, slope: f32) -> Self {
        StreamingConvTranspose1d { phases: self.phases.leaky_relu(slope), ..self }
    }

    /// Adds the `n` new phase columns in `fresh` to the held ones, then appends positions
    /// `next..end` to `out`; returns how many.
    fn emit(&mut self, n: usize, end: usize, out: &mut Vec<f32>) -> usize {
        let s = self.up.shape;
        let phase_rows = s.stride * s.out_channels;
        let held = self.columns.len().checked_div(phase_rows).unwrap_or(0);
        let (columns, count) = if held == 0 {
            (&self.fresh, n)
        } else {
            let count = held + n;
            let mut joined = Vec::with_capacity(phase_rows * count);
            for r in 0..phase_rows {
                joined.extend_from_slice(&self.columns[r * held..][..held]);
                joined.extend_from_slice(&self.fresh[r * n..][..n]);
            }
            self.columns = joined;
            (&self.columns, count)
        };
        let m = end.saturating_sub(self.next);
        let (cog, next, first) = (s.out_channels / s.groups, self.next, self.first);
        rows::for_each_row_mut(extend_zeroed(out, s.out_channels * m), m, |o, dst| {
            let (g, o) = (o / cog, o % cog);
            // Output channel o's phase rows: position q is row q mod stride, column q / stride.
            let row = |phase: usize| &columns[((g * s.stride + phase) * cog + o) * count..][..count];
            interleave(s.stride, &row, next - first * s.stride, dst);
        });
        // Keep the columns that still hold positions past `end`.
        let keep_from = (end.max(self.next) / s.stride).max(self.first);
        let drop = (keep_from - self.first).min(count);
        let keep = count - drop;
        let mut kept = std::mem::take(&mut self.columns);
        if keep > 0 {
            let src = if held == 0 { &self.fresh } else { &kept };
            let rest: Vec<f32> =
                (0..phase_rows).flat_map(|r| src[r * count + drop..][..keep].iter().copied()).collect();
            kept = rest;
        } else {
            kept.clear();
        }
        self.columns = kept;
        self.first += drop;
        self.next = self.next.max(end);
        m
    }
}

/// `dst[i] = row(p)[c]` for position `from + i = c·stride + p`: the phase rows interleaved
/// into one signal. Whole groups of `stride` positions run through a loop specialised for the
/// upsampling factors the models use (no division or bounds check per value; this pass was
/// 3 % of the default voice's time as a general loop).
fn interleave<'a>(stride: usize, row: &impl Fn(usize) -> &'a [f32], from: usize, dst: &mut [f32]) {
    // The partial group before the first whole one, and after the last.
    let head = ((stride - from % stride) % stride).min(dst.len());
    let (first, rest) = dst.split_at_mut(head);
    let scalar = |at: usize, dst: &mut [f32]| {
        for (i, v) in dst.iter_mut().enumerate() {
            *v = row((at + i) % stride)[(at + i) / stride];
        }
    };
    scalar(from, first);
    let whole = rest.len() / stride * stride;
    let (groups, tail) = rest.split_at_mut(whole);
    let column = (from + head) / stride;
    fn grouped<'a, const S: usize>(row: &impl Fn(usize) -> &'a [f32], column: usize, dst: &mut [f32]) {
        let n = dst.len() / S;
        let rows: [&[f32]; S] = std::array::from_fn(|p| &row(p)[column..][..n]);
        for (c, group) in dst.chunks_exact_mut(S).enumerate() {
            for (v, r) in group.iter_mut().zip(&rows) {
                *v = r[c];
            }
        }
    }
    match stride {
        2 => grouped::<2>(row, column, groups),
        3 => grouped::<3>(row, column, groups),
        4 => grouped::<4>(row, column, groups),
        5 => grouped::<5>(row, column, groups),
        8 => grouped::<8>(row, column, groups),
        _ => scalar(column * stride, groups),
    }
    scalar(column * stride + whole, tail);
}

impl ChunkedConv for StreamingConvTranspose1d<'_> {
    fn out_channels(&self) -> usize {
        self.up.shape.out_channels
    }

    /// Feeds `chunk` (`[in_channels, n]`) and appends the positions it makes final to `out`
    /// (`[out_channels, m]`); returns m.
    fn process(&mut self, cpu: Cpu, chunk: &[f32], n: usize, out: &mut Vec<f32>) -> Result<usize, ConvError> {
        let s = self.up.shape;
        expect_len("the chunk", chunk.len(), s.in_channels * n, s)?;
        self.fresh.clear();
        let columns = self.phases.process(cpu, chunk, n, &mut self.fresh)?;
        self.seen += n;
        let end = (self.seen * s.stride).saturating_sub(self.held);
        Ok(self.emit(columns, end, out))
    }

    /// Feeds the last `chunk` and appends the positions left (up to the full output less the
    /// right crop) to `out`; returns how many.
    fn finish(&mut self, cpu: Cpu, chunk: &[f32], n: usize, out: &mut Vec<f32>) -> Result<usize, ConvError> {
        let s = self.up.shape;
        self.fresh.clear();
        let columns = self.phases.finish(cpu, chunk, n, &mut self.fresh)?;
        self.seen += n;
        let end = if self.seen == 0 { 0 } else { ((self.seen - 1) * s.stride + s.span()).saturating_sub(self.crop.1) };
        Ok(self.emit(columns, end, out))
    }
}
