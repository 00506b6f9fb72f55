//! Direct convolution for one group at stride 1 (any dilation), with time as the SIMD
//! dimension: `x[i][t..t + lanes]` is one vector of a channels-first signal, so no im2col
//! operand is packed and small output-channel counts do not starve the FMA units.
//!
//! A register tile holds R output channels × V vectors of time. For each input channel i and
//! tap j (i outer, j inner, always in that order) it loads the V vectors of `x[i]` at
//! `t + j·dilation` and multiply-adds each with a broadcast of `w[o][i][j]` for its R
//! channels. Accumulators start at the bias, and every output value is one chain of fused
//! multiply-adds over (i, j) in the same order whatever tile, lane, chunk or thread computes
//! it, so a time tail may be computed as whole vectors moved back over outputs already
//! written (or, in a block narrower than that, masked). That is what keeps
//! [`StreamingConv1d`](super::StreamingConv1d) bit-for-bit equal to the whole-signal call.
//!
//! Weights are read in place from PyTorch's `[out, in, kernel]` layout: the R channels of a
//! tile are R sequential streams (one per row), which the hardware prefetchers follow, and
//! one broadcast load each per (i, j). Read that way the AVX-512 tile already runs at
//! 94-99 % of the FMA peak on the vocoder's shapes (docs/KERNELS.md), so a repacked copy
//! has little to gain, and it would make [`Conv1d`](super::Conv1d) own memory instead of
//! borrowing the checkpoint's (and stop being `Copy`). bf16 weights widen as they are
//! broadcast, exactly.
//!
//! Work is cut into blocks of a few output channels ([`block_rows`]) × a time chunk sized so
//! that the chunk's input (all input channels, plus the span) stays in L2; large calls share the
//! blocks out on the rayon pool, small ones run on the calling thread. The blocking
//! ([`schedule`]) and the loop that covers a block with tiles ([`tile::block`]) are shared
//! with the bf16-product kernel in `direct_bf16.rs`, which brings its own tile.

use rayon::prelude::*;

use crate::kernels::cpu::{Cpu, Isa};
use crate::kernels::gemm::Element;
use crate::kernels::shared::Shared;

/// A direct convolution over an already padded signal.
pub(super) struct Direct<'a, W> {
    /// `[out_channels, in_channels, kernel]`.
    pub weight: &'a [W],
    pub bias: Option<&'a [f32]>,
    pub in_channels: usize,
    pub out_channels: usize,
    pub kernel: usize,
    pub dilation: usize,
    /// The weights already packed for the bf16-product kernel, if they were.
    pub pairs: Option<&'a [u32]>,
    /// `[in_channels, len]`, at least `(t_out − 1) + span` long.
    pub x: &'a [f32],
    pub len: usize,
}

/// Output channels per block of work on a path: a multiple of its tallest tile, two of
/// AVX2's 6-row tiles, one of AVX-512's 8 rows.
fn block_rows(isa: Isa) -> usize {
    if isa == Isa::Avx2 {
        12
    } else {
        8
    }
}

/// Time positions per tile row on every path (3 vectors of 16 or of 8 lanes divide it), so a
/// time chunk is a whole number of tiles on either.
const TILE_T: usize = 48;

/// Input bytes (all input channels of one time chunk) kept within this, a quarter of the 1 MB
/// L2, so the chunk stays there while every row block reads it.
const CHUNK_BYTES: usize = 256 << 10;

/// Below this many multiply-adds one thread is faster than waking the pool.
pub(super) const PARALLEL_MACS: usize = 1 << 21;

/// `out` (`[out_channels, t_out]`) = the convolution of `d.x`.
pub(super) fn run<W: Element>(cpu: Cpu, d: &Direct<W>, t_out: usize, out: &mut [f32]) {
    debug_assert_eq!(out.len(), d.out_channels * t_out);
    let span = (d.kernel - 1) * d.dilation + 1;
    debug_assert!(d.x.len() == d.in_channels * d.len && d.len + 1 >= t_out + span);
    let work = Work {
        out_channels: d.out_channels,
        rows: block_rows(cpu.isa()),
        t_out,
        span,
        input_bytes_per_time: 4 * d.in_channels,
    };
    let macs = d.out_channels * d.in_channels * d.kernel * t_out;
    // A 1×1 convolution is a one-channel convolution whose taps are the input channels,
    // `len` apart: the same chains in the same order, run by the tile's inner loop instead of
    // one trip of its outer loop per step. On a Zen 3 the voice's 1×1 convolutions ran
    // 1.37-1.56 times as fast on one thread (docs/KERNELS.md). The blocking keeps the real
    // shape's (`work`).
    let pointwise = Direct { in_channels: 1, kernel: d.in_channels, dilation: d.len, len: d.in_channels * d.len, ..*d };
    let d = if d.kernel == 1 { &pointwise } else { d };
    // SAFETY: `schedule` hands each block a disjoint part of `out`, and the `Cpu` token
    // proves the path's instructions exist.
    schedule(work, macs, out, |at| unsafe { run_block(cpu, d, at) });
}

/// What [`schedule`] cuts into blocks.
pub(super) struct Work {
    pub out_channels: usize,
    /// Output channels per block: a multiple of the path's tallest tile.
    pub rows: usize,
    pub t_out: usize,
    /// Input positions one output spans.
    pub span: usize,
    /// Bytes of input (all input channels) per time position, for the L2 budget.
    pub input_bytes_per_time: usize,
}

/// Cuts `out` (`[out_channels, t_out]`) into blocks of `w.rows` output channels × a time chunk
/// whose input fits [`CHUNK_BYTES`] and runs `block` on each: on the rayon pool from
/// [`PARALLEL_MACS`] multiply-adds, else on the calling thread. Shared by the f32 and the bf16
/// kernels, so both block and thread alike.
pub(super) fn schedule(w: Work, macs: usize, out: &mut [f32], block: impl Fn(&Block) + Sync) {
    debug_assert_eq!(out.len(), w.out_channels * w.t_out);
    let row_blocks = w.out_channels.div_ceil(w.rows);
    // The longest chunk whose input fits the budget, whole tiles, at least one tile.
    let fits = (CHUNK_BYTES / w.input_bytes_per_time.max(1)).saturating_sub(w.span) / TILE_T * TILE_T;
    let mut chunk = fits.max(TILE_T);
    let threads = if macs >= PARALLEL_MACS { rayon::current_num_threads() } else { 1 };
    if threads > 1 {
        // Enough blocks for every thread to take a few, so uneven finishing evens out.
        let chunks = w.t_out.div_ceil(chunk).max((4 * threads).div_ceil(row_blocks));
        chunk = w.t_out.div_ceil(chunks).div_ceil(TILE_T).max(1) * TILE_T;
    }
    let chunks = w.t_out.div_ceil(chunk);
    // Each block writes only its own rows × times (see `schedule`).
    let ptr = Shared(out.as_mut_ptr());
    let one = |b: usize| {
        // Chunk-major, so consecutive blocks on one thread reuse the chunk's input from L2.
        let (c, r) = (b / row_blocks, b % row_blocks);
        let (o0, t0) = (r * w.rows, c * chunk);
        let rows = w.rows.min(w.out_channels - o0);
        let t1 = (t0 + chunk).min(w.t_out);
        // Blocks are disjoint: rows o0..o0+rows × times t0..t1 of `out`, inside it.
        block(&Block { o0, rows, t0, t1, out: ptr.get(), t_out: w.t_out });
    };
    if threads > 1 {
        (0..chunks * row_blocks).into_par_iter().for_each(one);
    } else {
        (0..chunks * row_blocks).for_each(one);
    }
}

/// One block of the output.
///
/// # Safety
/// Nothing else writes that block of `at.out` meanwhile; `at.out` is `[out_channels, t_out]`.
unsafe fn run_block<W: Element>(cpu: Cpu, d: &Direct<W>, at: &Block) {
    match cpu.isa() {
        Isa::Scalar => scalar::block(d, at),
        #[cfg(target_arch = "x86_64")]
        Isa::Avx2 => avx2::block(d, at),
        #[cfg(target_arch = "x86_64")]
        _ => avx512::block(d, at),
        #[cfg(not(target_arch = "x86_64"))]
        _ => scalar::block(d, at),
    }
}

/// Where a block writes: rows `o0..o0 + rows` × times `t0..t1` of `out` (`[_, t_out]`).
pub(super) struct Block {
    pub o0: usize,
    pub rows: usize,
    pub t0: usize,
    pub t1: usize,
    pub out: *mut f32,
    pub t_out: usize,
}

mod scalar {
    use super::{Block, Direct};
    use crate::kernels::gemm::Element;

    /// The reference: each output row starts at its bias and adds `w·x` (rounded product,
    /// then rounded sum) over (i, j) in order.
    ///
    /// # Safety
    /// As [`super::run_block`].
    pub(super) unsafe fn block<W: Element>(d: &Direct<W>, at: &Block) {
        let n = at.t1 - at.t0;
        let per_out = d.in_channels * d.kernel;
        for o in at.o0..at.o0 + at.rows {
            // SAFETY: this block's part of row o, which the caller gives to it alone.
            let row = unsafe { std::slice::from_raw_parts_mut(at.out.add(o * at.t_out + at.t0), n) };
            row.fill(d.bias.map_or(0.0, |b| b[o]));
            let w = &d.weight[o * per_out..][..per_out];
            for i in 0..d.in_channels {
                for j in 0..d.kernel {
                    let wv = w[i * d.kernel + j].to_f32();
                    let x = &d.x[i * d.len + at.t0 + j * d.dilation..][..n];
                    row.iter_mut().zip(x).for_each(|(y, &x)| *y += wv * x);
                }
            }
        }
    }
}

/// The register tile, written once over a SIMD vector type, and the loop that covers a block
/// with tiles (shared with the bf16 kernel).
#[cfg(target_arch = "x86_64")]
pub(super) mod tile {
    use std::marker::PhantomData;

    use super::{Block, Direct};
    use crate::kernels::gemm::Element;

    /// The vector operations a tile needs. Every method is `inline(always)`: inlined into the
    /// `target_feature` function of its path, the intrinsics inline with them.
    pub(in crate::kernels::conv) trait Simd {
        type V: Copy;
        /// Which lanes of the last vector of a tile are inside the output.
        type Mask: Copy;
        const LANES: usize;
        /// The tile heights this path's registers hold at `V` vectors of time, tallest first.
        const HEIGHTS: &'static [usize];
        unsafe fn zero() -> Self::V;
        unsafe fn splat(v: f32) -> Self::V;
        unsafe fn mask(lanes: usize) -> Self::Mask;
        unsafe fn load(p: *const f32) -> Self::V;
        /// Loads the masked lanes, zeros elsewhere, reading nothing outside the mask.
        unsafe fn load_masked(p: *const f32, m: Self::Mask) -> Self::V;
        /// `a·b + c` with one rounding.
        unsafe fn fma(a: Self::V, b: Self::V, c: Self::V) -> Self::V;
        unsafe fn store(p: *mut f32, v: Self::V);
        unsafe fn store_masked(p: *mut f32, m: Self::Mask, v: Self::V);
    }

    /// A kernel that computes one register tile: R output rows × NV vectors of time.
    pub(in crate::kernels::conv) trait Tiles {
        /// Which lanes of the last vector of a tile are inside the output.
        type Mask: Copy;
        const LANES: usize;
        /// The tile heights the path's registers hold, tallest first.
        const HEIGHTS: &'static [usize];
        unsafe fn mask(lanes: usize) -> Self::Mask;
        /// Output rows `o..o + R` × `NV` vectors of time from `t`; with `TAIL`, the last
        /// vector only in the lanes of `last`.
        ///
        /// # Safety
        /// Those outputs lie in the block; every lane loaded under the masks reads an input
        /// that exists (`t + lane + j·dilation < len`), which holds for outputs inside `t_out`.
        unsafe fn tile<const R: usize, const NV: usize, const TAIL: bool>(
            &self,
            at: &Block,
            o: usize,
            t: usize,
            last: Self::Mask,
        );
    }

    /// The f32 tile: FMA chains over (input channel, tap) on `S`'s vectors.
    pub(super) struct Fma<'d, 'a, S, W>(pub &'d Direct<'a, W>, pub PhantomData<S>);

    impl<S: Simd, W: Element> Tiles for Fma<'_, '_, S, W> {
        type Mask = S::Mask;
        const LANES: usize = S::LANES;
        const HEIGHTS: &'static [usize] = S::HEIGHTS;
        #[inline(always)]
        unsafe fn mask(lanes: usize) -> S::Mask {
            unsafe { S::mask(lanes) }
        }
        #[inline(always)]
        unsafe fn tile<const R: usize, const NV: usize, const TAIL: bool>(
            &self,
            at: &Block,
            o: usize,
            t: usize,
            last: S::Mask,
        ) {
            unsafe { tile::<S, W, R, NV, TAIL>(self.0, at, o, t, last) }
        }
    }

    /// A block, tile by tile: tiles as tall as [`rows_of_tile`] picks from [`Tiles::HEIGHTS`];
    /// each tile row is `V` (at most 3) vectors of time, fewer at the end.
    ///
    /// # Safety
    /// As [`super::run_block`], and the CPU runs `T`'s instructions.
    #[inline(always)]
    pub(in crate::kernels::conv) unsafe fn block<T: Tiles, const V: usize>(k: &T, at: &Block) {
        let width = V * T::LANES;
        let mut o = at.o0;
        while o < at.o0 + at.rows {
            let left = at.o0 + at.rows - o;
            let r = rows_of_tile(left, T::HEIGHTS);
            // SAFETY (every tile call): rows o..o+r and the tile's times lie in the block.
            let mut t = at.t0;
            while t + width <= at.t1 {
                // Whole tiles load and store unmasked: on AVX2 a mask would take the 16th ymm.
                unsafe { sized::<T, false>(k, r, V, at, o, t, T::mask(T::LANES)) };
                t += width;
            }
            if t < at.t1 {
                let n = at.t1 - t;
                let vecs = n.div_ceil(T::LANES);
                let whole = vecs * T::LANES;
                // The tail as whole vectors, moved back over outputs of the block already
                // written where it does not end on a vector (they are written again with the
                // same values: a value's lane changes nothing). Masked loads cost Zen 1 more
                // than the FMAs they feed; only a block narrower than the tail needs them.
                unsafe {
                    if at.t1 - at.t0 >= whole {
                        sized::<T, false>(k, r, vecs, at, o, at.t1 - whole, T::mask(T::LANES))
                    } else {
                        sized::<T, true>(k, r, vecs, at, o, t, T::mask(n - (vecs - 1) * T::LANES))
                    }
                }
            }
            o += r;
        }
    }

    /// How many rows the next tile of a block takes when `left` remain, from a path's tile
    /// `heights` (tallest first): the tallest that fits, except that where it would leave two
    /// rows and half of `left` is a height, two tiles of half: on AVX2 a 2-row tile's 4
    /// accumulators cannot keep both FMA pipes busy, so a block's last 8 rows go as 4 + 4
    /// rather than 6 + 2 (reasoned from the latencies, not measured apart).
    pub(in crate::kernels::conv) fn rows_of_tile(left: usize, heights: &[usize]) -> usize {
        let tallest = heights.iter().copied().find(|&h| h <= left).unwrap_or(1);
        if left - tallest == 2 && left.is_multiple_of(2) && heights.contains(&(left / 2)) {
            left / 2
        } else {
            tallest
        }
    }

    /// The tile of `rows` (8, 6, 4, 2 or 1) × `vecs` (1 to 3) at `o`, `t`.
    ///
    /// # Safety
    /// As [`Tiles::tile`].
    #[inline(always)]
    unsafe fn sized<T: Tiles, const TAIL: bool>(
        k: &T,
        rows: usize,
        vecs: usize,
        at: &Block,
        o: usize,
        t: usize,
        m: T::Mask,
    ) {
        // Only AVX2 has 6-row tiles, and its blocks are 2 vectors wide.
        debug_assert!(rows != 6 || vecs <= 2, "a 6-row tile is at most 2 vectors wide");
        unsafe {
            match (rows, vecs) {
                (8, 3) => k.tile::<8, 3, TAIL>(at, o, t, m),
                (8, 2) => k.tile::<8, 2, TAIL>(at, o, t, m),
                (8, _) => k.tile::<8, 1, TAIL>(at, o, t, m),
                (6, 2) => k.tile::<6, 2, TAIL>(at, o, t, m),
                (6, _) => k.tile::<6, 1, TAIL>(at, o, t, m),
                (4, 3) => k.tile::<4, 3, TAIL>(at, o, t, m),
                (4, 2) => k.tile::<4, 2, TAIL>(at, o, t, m),
                (4, _) => k.tile::<4, 1, TAIL>(at, o, t, m),
                (2, 3) => k.tile::<2, 3, TAIL>(at, o, t, m),
                (2, 2) => k.tile::<2, 2, TAIL>(at, o, t, m),
                (2, _) => k.tile::<2, 1, TAIL>(at, o, t, m),
                (_, 3) => k.tile::<1, 3, TAIL>(at, o, t, m),
                (_, 2) => k.tile::<1, 2, TAIL>(at, o, t, m),
                _ => k.tile::<1, 1, TAIL>(at, o, t, m),
            }
        }
    }

    /// Output rows `o..o + R` × `NV` vectors of time from `t`; with `TAIL`, the last vector
    /// only in the lanes of `last`.
    ///
    /// # Safety
    /// Those outputs lie in the block; every lane loaded under the masks reads an input that
    /// exists (`t + lane + j·dilation < len`), which holds for outputs inside `t_out`.
    #[inline(always)]
    unsafe fn tile<S: Simd, W: Element, const R: usize, const NV: usize, const TAIL: bool>(
        d: &Direct<W>,
        at: &Block,
        o: usize,
        t: usize,
        last: S::Mask,
    ) {
        unsafe {
            let per_out = d.in_channels * d.kernel;
            let w: [*const W; R] = std::array::from_fn(|r| d.weight.as_ptr().add((o + r) * per_out));
            let mut acc: [[S::V; NV]; R] =
                std::array::from_fn(|r| [d.bias.map_or(S::zero(), |b| S::splat(*b.get_unchecked(o + r))); NV]);
            let mut xi = d.x.as_ptr().add(t);
            let mut q = 0;
            for _ in 0..d.in_channels {
                let mut xj = xi;
                for _ in 0..d.kernel {
                    let xv: [S::V; NV] = std::array::from_fn(|v| {
                        if !TAIL || v + 1 < NV {
                            S::load(xj.add(v * S::LANES))
                        } else {
                            S::load_masked(xj.add(v * S::LANES), last)
                        }
                    });
                    for r in 0..R {
                        let wv = S::splat((*w[r].add(q)).to_f32());
                        for v in 0..NV {
                            acc[r][v] = S::fma(wv, xv[v], acc[r][v]);
                        }
                    }
                    q += 1;
                    xj = xj.add(d.dilation);
                }
                xi = xi.add(d.len);
            }
            for (r, row) in acc.iter().enumerate() {
                let y = at.out.add((o + r) * at.t_out + t);
                for (v, &a) in row.iter().enumerate() {
                    if !TAIL || v + 1 < NV {
                        S::store(y.add(v * S::LANES), a)
                    } else {
                        S::store_masked(y.add(v * S::LANES), last, a)
                    }
                }
            }
        }
    }
}

#[cfg(target_arch = "x86_64")]
pub(super) mod avx2 {
    use std::arch::x86_64::*;

    use std::marker::PhantomData;

    use super::tile::{self, Fma, Simd};
    use super::{Block, Direct};
    use crate::kernels::gemm::Element;

    /// 8 lanes; 6 rows × 2 vectors: 12 accumulators, 2 inputs and a broadcast, 15 of the 16
    /// ymm. Two FMA pipes × 4 cycles of latency (Zen 3) need 8 chains in flight, and 4 × 2 had
    /// exactly 8: on a Zen 3, one thread, the generator's shapes ran 7-19 % faster at 6 × 2
    /// (docs/BENCHMARKS.md). 6 × 3 or 4 × 3 would need all 16 ymm, and the compiler spills.
    pub(in crate::kernels::conv) struct Avx2;

    impl Simd for Avx2 {
        type V = __m256;
        type Mask = __m256i;
        const LANES: usize = 8;
        const HEIGHTS: &'static [usize] = &[6, 4, 2, 1];
        #[inline(always)]
        unsafe fn zero() -> __m256 {
            _mm256_setzero_ps()
        }
        #[inline(always)]
        unsafe fn splat(v: f32) -> __m256 {
            _mm256_set1_ps(v)
        }
        #[inline(always)]
        unsafe fn mask(lanes: usize) -> __m256i {
            _mm256_cmpgt_epi32(_mm256_set1_epi32(lanes as i32), _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7))
        }
        #[inline(always)]
        unsafe fn load(p: *const f32) -> __m256 {
            unsafe { _mm256_loadu_ps(p) }
        }
        #[inline(always)]
        unsafe fn load_masked(p: *const f32, m: __m256i) -> __m256 {
            unsafe { _mm256_maskload_ps(p, m) }
        }
        #[inline(always)]
        unsafe fn fma(a: __m256, b: __m256, c: __m256) -> __m256 {
            _mm256_fmadd_ps(a, b, c)
        }
        #[inline(always)]
        unsafe fn store(p: *mut f32, v: __m256) {
            unsafe { _mm256_storeu_ps(p, v) }
        }
        #[inline(always)]
        unsafe fn store_masked(p: *mut f32, m: __m256i, v: __m256) {
            unsafe { _mm256_maskstore_ps(p, m, v) }
        }
    }

    /// # Safety
    /// As [`super::run_block`], on a CPU with AVX2 and FMA.
    #[target_feature(enable = "avx2,fma")]
    pub(super) unsafe fn block<W: Element>(d: &Direct<W>, at: &Block) {
        unsafe { tile::block::<_, 2>(&Fma::<Avx2, W>(d, PhantomData), at) }
    }
}

#[cfg(target_arch = "x86_64")]
pub(super) mod avx512 {
    use std::arch::x86_64::*;

    use std::marker::PhantomData;

    use super::tile::{self, Fma, Simd};
    use super::{Block, Direct};
    use crate::kernels::gemm::Element;

    /// 16 lanes; 8 rows × 3 vectors is 24 accumulators, with 3 inputs and a broadcast 28 of
    /// the 32 zmm.
    pub(in crate::kernels::conv) struct Avx512;

    impl Simd for Avx512 {
        type V = __m512;
        type Mask = __mmask16;
        const LANES: usize = 16;
        const HEIGHTS: &'static [usize] = &[8, 4, 2, 1];
        #[inline(always)]
        unsafe fn zero() -> __m512 {
            _mm512_setzero_ps()
        }
        #[inline(always)]
        unsafe fn splat(v: f32) -> __m512 {
            _mm512_set1_ps(v)
        }
        #[inline(always)]
        unsafe fn mask(lanes: usize) -> __mmask16 {
            ((1u32 << lanes) - 1) as __mmask16
        }
        #[inline(always)]
        unsafe fn load(p: *const f32) -> __m512 {
            unsafe { _mm512_loadu_ps(p) }
        }
        #[inline(always)]
        unsafe fn load_masked(p: *const f32, m: __mmask16) -> __m512 {
            unsafe { _mm512_maskz_loadu_ps(m, p) }
        }
        #[inline(always)]
        unsafe fn fma(a: __m512, b: __m512, c: __m512) -> __m512 {
            _mm512_fmadd_ps(a, b, c)
        }
        #[inline(always)]
        unsafe fn store(p: *mut f32, v: __m512) {
            unsafe { _mm512_storeu_ps(p, v) }
        }
        #[inline(always)]
        unsafe fn store_masked(p: *mut f32, m: __mmask16, v: __m512) {
            unsafe { _mm512_mask_storeu_ps(p, m, v) }
        }
    }

    /// # Safety
    /// As [`super::run_block`], on a CPU with AVX-512 F/BW/VL/DQ.
    #[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512dq")]
    pub(super) unsafe fn block<W: Element>(d: &Direct<W>, at: &Block) {
        unsafe { tile::block::<_, 3>(&Fma::<Avx512, W>(d, PhantomData), at) }
    }
}
