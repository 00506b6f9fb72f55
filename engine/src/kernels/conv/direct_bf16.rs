//! The direct convolution with bf16 products ([`ConvMethod::DirectBf16`](super::ConvMethod::DirectBf16)):
//! weights and inputs rounded to bf16 (to nearest even, as [`bf16::from_f32`]), products
//! summed in f32. The bias stays f32: it is where each chain starts.
//!
//! From [`Isa::Avx512Bf16`] on, `VDPBF16PS` adds two products per f32 lane, so the inputs are
//! packed once per call as pairs of channels: with `h = ⌈in/2⌉`, pair p holds channels p and
//! p + h (a zero channel stands in for channel `in` when `in` is odd), and the 32-bit value
//! at `[p][t]` is `(x[p][t], x[p + h][t])`, so one zmm is 16 times × one pair. The weights are
//! packed alike, per output row `[o][p][j] = (w[o][p][j], w[o][p + h][j])`. Pairing p with
//! p + h (rather than 2p with 2p + 1) makes both packings one flat, vectorized loop over two
//! contiguous halves of a row. The tile is the f32 one's (8 output rows × 3 vectors of 16
//! times, bias-initialised accumulators, masked time tails); each output is one chain of
//! `VDPBF16PS` over (pair, tap) in a fixed order, so the streaming form stays bit-for-bit
//! equal to the whole-signal call, as in f32.
//!
//! Packing per call is cheap next to the products (the weights are `out·in·k/2` words, each
//! used at every time; the input `in·len/2`, each used `out·k` times): about 5 % of a call at
//! the bench shapes (docs/KERNELS.md), part of it the zero padding, which the packing adds
//! instead of a separate padded copy. It lets [`Conv1d`](super::Conv1d) stay a `Copy` borrow
//! of the checkpoint's tensors.
//!
//! Below the BF16 level the same mode runs the f32 direct kernel on the bf16-rounded
//! operands: the same products, summed in a different order, so the last bits may differ
//! from the BF16 level's.
//!
//! [`bf16::from_f32`]: crate::kernels::bf16::from_f32

use super::direct::{self, Direct};
use crate::kernels::bf16::scalar::{narrow, widen};
use crate::kernels::cpu::Cpu;
#[cfg(target_arch = "x86_64")]
use crate::kernels::cpu::Isa;
use crate::kernels::gemm::Element;

/// `out` (`[out_channels, t_out]`) = the convolution of `d.x` padded by `pad` (left, right)
/// zeros, with bf16 products. The padding is added while the input is rounded or packed.
pub(super) fn run<W: Element>(cpu: Cpu, d: &Direct<W>, pad: (usize, usize), t_out: usize, out: &mut [f32]) {
    #[cfg(target_arch = "x86_64")]
    if cpu.isa() >= Isa::Avx512Bf16 {
        pairs::run(d, pad, t_out, out);
        return;
    }
    rounded(cpu, d, pad, t_out, out);
}

/// `out` = the convolution of an input already packed as channel pairs (`[pairs, len]` words,
/// see the module comment; what [`pack_activated`] makes), with bf16 products: the same
/// values as [`run`] on the unpacked input.
pub(super) fn run_packed<W: Element>(cpu: Cpu, d: &Direct<W>, words: &[u32], t_out: usize, out: &mut [f32]) {
    #[cfg(target_arch = "x86_64")]
    if cpu.isa() >= Isa::Avx512Bf16 {
        pairs::run_packed(d, words, t_out, out);
        return;
    }
    // Below the BF16 level: the channels back as f32 (the bf16 values exactly), then as [`run`].
    let (half, len) = (d.in_channels.div_ceil(2), d.len);
    scratch::values(d.in_channels * len, |x| {
        for (p, pair) in words.chunks_exact(len.max(1)).take(half).enumerate() {
            for (t, &w) in pair.iter().enumerate() {
                x[p * len + t] = widen(w as u16);
                if p + half < d.in_channels {
                    x[(p + half) * len + t] = widen((w >> 16) as u16);
                }
            }
        }
        rounded(cpu, &Direct { x: &*x, ..*d }, (0, 0), t_out, out);
    });
}

/// [`pack`] of the leaky ReLU of `slope` (`max(v, slope·v)`) of each value, if any: one pass
/// from the f32 signal to the words [`run_packed`] reads.
pub(super) fn pack_activated(cpu: Cpu, lo: &[f32], hi: &[f32], slope: Option<f32>, dst: &mut [u32]) {
    #[inline(always)]
    fn each(lo: &[f32], hi: &[f32], slope: Option<f32>, dst: &mut [u32]) {
        match slope {
            Some(s) => pack_mapped(lo, hi, |v: f32| v.max(v * s), dst),
            None => pack(lo, hi, dst),
        }
    }
    #[cfg(target_arch = "x86_64")]
    if cpu.isa() >= Isa::Avx512 {
        /// # Safety
        /// The CPU has AVX-512 F/BW/VL/DQ.
        #[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512dq")]
        unsafe fn wide(lo: &[f32], hi: &[f32], slope: Option<f32>, dst: &mut [u32]) {
            each(lo, hi, slope, dst)
        }
        // SAFETY: the `Cpu` token proves the level.
        unsafe { wide(lo, hi, slope, dst) };
        return;
    }
    each(lo, hi, slope, dst)
}

/// Scratch kept per thread so steady-state calls do not allocate. Taken out while in use, so
/// a call re-entered on the same thread (rayon work stealing) gets a fresh one instead of
/// a conflict.
mod scratch {
    use std::cell::RefCell;

    thread_local! {
        static WORDS: RefCell<Vec<u32>> = const { RefCell::new(Vec::new()) };
        static VALUES: RefCell<Vec<f32>> = const { RefCell::new(Vec::new()) };
        static HALVES: RefCell<Vec<u16>> = const { RefCell::new(Vec::new()) };
    }

    fn with<T: Copy + Default, R>(
        key: &'static std::thread::LocalKey<RefCell<Vec<T>>>,
        len: usize,
        f: impl FnOnce(&mut [T]) -> R,
    ) -> R {
        let mut buf = key.take();
        buf.resize(len.max(buf.len()), T::default());
        let r = f(&mut buf[..len]);
        key.set(buf);
        r
    }

    /// `f` with `len` 32-bit words (contents unspecified).
    #[cfg_attr(not(target_arch = "x86_64"), allow(dead_code))]
    pub fn words<R>(len: usize, f: impl FnOnce(&mut [u32]) -> R) -> R {
        with(&WORDS, len, f)
    }

    /// `f` with `len` f32 values (contents unspecified).
    pub fn values<R>(len: usize, f: impl FnOnce(&mut [f32]) -> R) -> R {
        with(&VALUES, len, f)
    }

    /// `f` with `len` bf16 bit patterns (contents unspecified).
    pub fn halves<R>(len: usize, f: impl FnOnce(&mut [u16]) -> R) -> R {
        with(&HALVES, len, f)
    }
}

/// Below the BF16 level: the f32 direct kernel on the rounded (and padded) inputs and weights.
fn rounded<W: Element>(cpu: Cpu, d: &Direct<W>, pad: (usize, usize), t_out: usize, out: &mut [f32]) {
    let len = d.len + pad.0 + pad.1;
    scratch::values(d.in_channels * len, |x| {
        for (row, src) in x.chunks_exact_mut(len).zip(d.x.chunks_exact(d.len.max(1))) {
            let (left, rest) = row.split_at_mut(pad.0);
            let (mid, right) = rest.split_at_mut(d.len);
            left.fill(0.0);
            mid.iter_mut().zip(src).for_each(|(r, &v)| *r = widen(narrow(v)));
            right.fill(0.0);
        }
        if d.len == 0 {
            x.fill(0.0);
        }
        scratch::halves(d.weight.len(), |w| {
            w.iter_mut().zip(d.weight).for_each(|(r, &v)| *r = v.to_bf16());
            let rounded = Direct {
                weight: &*w,
                bias: d.bias,
                in_channels: d.in_channels,
                out_channels: d.out_channels,
                kernel: d.kernel,
                dilation: d.dilation,
                pairs: None,
                x: &*x,
                len,
            };
            direct::run(cpu, &rounded, t_out, out);
        })
    })
}

/// `dst[m] = (bf16(lo[m]), bf16(hi[m]))`, low half first, for `m < lo.len()`, with zeros for
/// `hi` past its end (`hi` is at most as long as `lo`). One flat loop that the compiler
/// vectorizes (the rounding is branchless); inlined into the caller's `target_feature`
/// function, at that width.
#[cfg_attr(not(target_arch = "x86_64"), allow(dead_code))]
#[inline(always)]
fn pack<W: Element>(lo: &[W], hi: &[W], dst: &mut [u32]) {
    pack_mapped(lo, hi, |v| v, dst)
}

/// [`pack`] of `map` of each value.
#[inline(always)]
fn pack_mapped<W: Element>(lo: &[W], hi: &[W], map: impl Fn(W) -> W, dst: &mut [u32]) {
    debug_assert!(dst.len() == lo.len() && hi.len() <= lo.len());
    let (paired, alone) = dst.split_at_mut(hi.len());
    for ((d, &l), &h) in paired.iter_mut().zip(lo).zip(hi) {
        *d = u32::from(map(l).to_bf16()) | u32::from(map(h).to_bf16()) << 16;
    }
    for (d, &l) in alone.iter_mut().zip(&lo[hi.len()..]) {
        *d = u32::from(map(l).to_bf16());
    }
}

/// `weight` (`[out, in, kernel]`) as `[out][pair][kernel]` words pairing input channel p with
/// p + ⌈in/2⌉, as the `VDPBF16PS` tile reads them.
pub(super) fn pack_weight_pairs<W: Element>(weight: &[W], in_channels: usize, kernel: usize) -> Vec<u32> {
    let (per_in, per_out) = (in_channels * kernel, in_channels.div_ceil(2) * kernel);
    let mut words = vec![0; weight.len() / per_in.max(1) * per_out];
    pack_rows(weight, per_in, per_out, &mut words);
    words
}

/// Each `per_in`-long weight row to `per_out` pairs (its first half with its second).
#[inline(always)]
fn pack_rows<W: Element>(w: &[W], per_in: usize, per_out: usize, dst: &mut [u32]) {
    for (dst, row) in dst.chunks_exact_mut(per_out).zip(w.chunks_exact(per_in)) {
        let (lo, hi) = row.split_at(per_out);
        pack(lo, hi, dst);
    }
}

/// The `VDPBF16PS` path.
#[cfg(target_arch = "x86_64")]
mod pairs {
    use std::arch::x86_64::*;

    use rayon::prelude::*;

    use super::super::direct::tile::{self, Tiles};
    use super::super::direct::{schedule, Block, Direct, Work, PARALLEL_MACS};
    use super::{pack, pack_rows, scratch};
    use crate::kernels::gemm::Element;

    /// A call's operands, packed as channel pairs (see the module comment).
    struct Packed<'a> {
        /// `[pairs, len]` input pairs.
        x: &'a [u32],
        /// `[out_channels, pairs, kernel]` weight pairs.
        w: &'a [u32],
        bias: Option<&'a [f32]>,
        pairs: usize,
        kernel: usize,
        dilation: usize,
        len: usize,
    }

    /// Packs the operands, then runs the tiles over the same blocks and threads as f32.
    pub(super) fn run<W: Element>(d: &Direct<W>, pad: (usize, usize), t_out: usize, out: &mut [f32]) {
        let pairs = d.in_channels.div_ceil(2);
        let len = d.len + pad.0 + pad.1;
        let (nx, per_out) = (pairs * len, pairs * d.kernel);
        let macs = d.out_channels * d.in_channels * d.kernel * t_out;
        let threaded = macs >= PARALLEL_MACS && rayon::current_num_threads() > 1;
        let packed_w = if d.pairs.is_some() { 0 } else { d.out_channels * per_out };
        scratch::words(nx + packed_w, |buf| {
            let (x, w) = buf.split_at_mut(nx);
            let channel = |c: usize| if c < d.in_channels { &d.x[c * d.len..][..d.len] } else { &[][..] };
            // SAFETY (both packings): this path is only taken at `Isa::Avx512Bf16` or above.
            let row = |(p, dst): (usize, &mut [u32])| unsafe { pack_padded(channel(p), channel(p + pairs), pad, dst) };
            if threaded {
                x.par_chunks_mut(len).enumerate().for_each(row);
            } else {
                x.chunks_mut(len).enumerate().for_each(row);
            }
            multiply(d, x, len, t_out, w, out);
        });
    }

    /// As [`run`] on an input already packed (`words`, `[pairs, d.len]`).
    pub(super) fn run_packed<W: Element>(d: &Direct<W>, words: &[u32], t_out: usize, out: &mut [f32]) {
        let packed_w = if d.pairs.is_some() { 0 } else { d.out_channels * d.in_channels.div_ceil(2) * d.kernel };
        scratch::words(packed_w, |w| multiply(d, words, d.len, t_out, w, out));
    }

    /// The tiles over packed input `x` (`[pairs, len]`), with the weights packed in advance
    /// or, if they were not, into `w`.
    fn multiply<W: Element>(d: &Direct<W>, x: &[u32], len: usize, t_out: usize, w: &mut [u32], out: &mut [f32]) {
        let pairs = d.in_channels.div_ceil(2);
        let per_out = pairs * d.kernel;
        let macs = d.out_channels * d.in_channels * d.kernel * t_out;
        let w = match d.pairs {
            Some(packed) => packed,
            None => {
                // SAFETY: this path is only taken at `Isa::Avx512Bf16` or above.
                unsafe { pack_weights(d.weight, d.in_channels * d.kernel, per_out, w) };
                &*w
            }
        };
        let p = Packed { x, w, bias: d.bias, pairs, kernel: d.kernel, dilation: d.dilation, len };
        let span = (d.kernel - 1) * d.dilation + 1;
        // One tile of the tallest height a block.
        let rows = <Bf16Tiles as Tiles>::HEIGHTS[0];
        let work = Work { out_channels: d.out_channels, rows, t_out, span, input_bytes_per_time: 4 * pairs };
        // SAFETY: blocks are disjoint parts of `out`; the level has AVX-512 BF16.
        schedule(work, macs, out, |at| unsafe { block(&p, at) });
    }

    /// One row of input pairs: `pad.0` zeros, the pairs of `lo` and `hi`, `pad.1` zeros.
    ///
    /// # Safety
    /// The CPU has AVX-512 F/BW/VL/DQ.
    #[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512dq")]
    unsafe fn pack_padded(lo: &[f32], hi: &[f32], pad: (usize, usize), dst: &mut [u32]) {
        let (left, rest) = dst.split_at_mut(pad.0);
        let (mid, right) = rest.split_at_mut(lo.len());
        left.fill(0);
        pack(lo, hi, mid);
        right.fill(0);
    }

    /// Each `per_in`-long weight row to `per_out` pairs (its first half with its second).
    ///
    /// # Safety
    /// The CPU has AVX-512 F/BW/VL/DQ.
    #[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512dq")]
    unsafe fn pack_weights<W: Element>(w: &[W], per_in: usize, per_out: usize, dst: &mut [u32]) {
        pack_rows(w, per_in, per_out, dst)
    }

    /// The tile: 8 rows × 3 vectors of 16 f32 accumulators, as in f32 (24 accumulators, 3
    /// input vectors and a broadcast of the 32 zmm); each step is a pair of channels.
    struct Bf16Tiles<'p, 'a>(&'p Packed<'a>);

    impl Tiles for Bf16Tiles<'_, '_> {
        type Mask = __mmask16;
        const LANES: usize = 16;
        const HEIGHTS: &'static [usize] = &[8, 4, 2, 1];

        #[inline(always)]
        unsafe fn mask(lanes: usize) -> __mmask16 {
            ((1u32 << lanes) - 1) as __mmask16
        }

        #[inline(always)]
        unsafe fn tile<const R: usize, const NV: usize, const TAIL: bool>(
            &self,
            at: &Block,
            o: usize,
            t: usize,
            last: __mmask16,
        ) {
            let p = self.0;
            // SAFETY (the transmutes): 512 bits of integers and 32 bf16 have the same layout.
            unsafe {
                let per_out = p.pairs * p.kernel;
                let w: [*const u32; R] = std::array::from_fn(|r| p.w.as_ptr().add((o + r) * per_out));
                let mut acc: [[__m512; NV]; R] = std::array::from_fn(|r| {
                    [p.bias.map_or(_mm512_setzero_ps(), |b| _mm512_set1_ps(*b.get_unchecked(o + r))); NV]
                });
                let mut xi = p.x.as_ptr().add(t);
                let mut q = 0;
                for _ in 0..p.pairs {
                    let mut xj = xi;
                    for _ in 0..p.kernel {
                        let xv: [__m512bh; NV] = std::array::from_fn(|v| {
                            let at = xj.add(v * 16) as *const i32;
                            std::mem::transmute(if !TAIL || v + 1 < NV {
                                _mm512_loadu_epi32(at)
                            } else {
                                _mm512_maskz_loadu_epi32(last, at)
                            })
                        });
                        for r in 0..R {
                            let wv: __m512bh = std::mem::transmute(_mm512_set1_epi32(*w[r].add(q) as i32));
                            for v in 0..NV {
                                acc[r][v] = _mm512_dpbf16_ps(acc[r][v], wv, xv[v]);
                            }
                        }
                        q += 1;
                        xj = xj.add(p.dilation);
                    }
                    xi = xi.add(p.len);
                }
                for (r, row) in acc.iter().enumerate() {
                    let y = at.out.add((o + r) * at.t_out + t);
                    for (v, &a) in row.iter().enumerate() {
                        if !TAIL || v + 1 < NV {
                            _mm512_storeu_ps(y.add(v * 16), a)
                        } else {
                            _mm512_mask_storeu_ps(y.add(v * 16), last, a)
                        }
                    }
                }
            }
        }
    }

    /// # Safety
    /// As the f32 kernel's blocks (nothing else writes this block of `at.out`), on a CPU
    /// with AVX-512 BF16.
    #[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512dq,avx512bf16")]
    unsafe fn block(p: &Packed, at: &Block) {
        unsafe { tile::block::<_, 3>(&Bf16Tiles(p), at) }
    }
}
