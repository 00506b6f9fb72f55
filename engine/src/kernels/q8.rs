//! Q8_0: blocks of 32 int8 values after an f16 scale (34 bytes, ggml's `block_q8_0`), and
//! their dot product against [`Activations`](super::quant::Activations).
//!
//! A block stores `q[i] = round(v[i] / d)` with `d = max|v| / 127`, so `v ≈ d·q` and
//! `q ∈ [-127, 127]` (never -128, which the sign trick below could not negate). The dot of
//! a weight block with an activation block is exact in integers, `d_w·d_x·Σ q_w·q_x`: every
//! path computes the same integers and differs only in the order of the f32 sums.

use super::quant::{f16, nearest, to_f16, Vector};

/// Values per block.
pub const BLOCK: usize = 32;
/// Bytes per block: the f16 scale, then the values.
pub const BLOCK_BYTES: usize = 2 + BLOCK;

pub(crate) fn encode_row(values: &[f32], out: &mut [u8]) {
    for (v, block) in values.chunks_exact(BLOCK).zip(out.chunks_exact_mut(BLOCK_BYTES)) {
        let amax = v.iter().fold(0.0f32, |m, x| m.max(x.abs()));
        let d = to_f16(amax / 127.0);
        // Quantize against the scale as stored, so decoding reproduces the nearest values.
        let inv = if f16(d) > 0.0 { 1.0 / f16(d) } else { 0.0 };
        block[..2].copy_from_slice(&d.to_le_bytes());
        for (q, &x) in block[2..].iter_mut().zip(v) {
            *q = nearest(x * inv) as u8;
        }
    }
}

pub(crate) fn decode_row(bytes: &[u8], out: &mut [f32]) {
    for (block, o) in bytes.chunks_exact(BLOCK_BYTES).zip(out.chunks_exact_mut(BLOCK)) {
        let d = f16(u16::from_le_bytes([block[0], block[1]]));
        o.iter_mut().zip(&block[2..]).for_each(|(o, &q)| *o = f32::from(q as i8) * d);
    }
}

/// Runs `step(i, acc)` for `i` in `0..steps`, alternating between two accumulators that
/// start at `zero`, and returns both. Named, not indexed by the step: an indexed pair lived
/// on the stack, every step waiting on the store of the one before last.
#[inline(always)]
fn two_chains<V: Copy>(steps: usize, zero: V, step: impl Fn(usize, V) -> V) -> (V, V) {
    let (mut acc0, mut acc1) = (zero, zero);
    let mut i = 0;
    while i + 2 <= steps {
        acc0 = step(i, acc0);
        acc1 = step(i + 1, acc1);
        i += 2;
    }
    if i < steps {
        acc0 = step(i, acc0);
    }
    (acc0, acc1)
}

pub(crate) mod scalar {
    use super::*;

    pub fn dot(row: &[u8], x: Vector) -> f32 {
        row.chunks_exact(BLOCK_BYTES)
            .zip(x.quants.chunks_exact(BLOCK))
            .zip(x.scales)
            .map(|((w, xq), sx)| {
                let int: i32 = w[2..].iter().zip(xq).map(|(&w, &x)| i32::from(w as i8) * i32::from(x)).sum();
                int as f32 * (f16(u16::from_le_bytes([w[0], w[1]])) * sx)
            })
            .sum()
    }
}

#[cfg(target_arch = "x86_64")]
pub(crate) mod avx2 {
    use std::arch::x86_64::*;

    use super::*;

    pub(crate) use crate::kernels::quant::f16_at as scale;

    /// Integer dot of 32 signed weights and 32 activations as 8 i32 lanes: |x| (unsigned,
    /// taken once per product in [`Vector::magnitudes`]) times w with x's sign, by `maddubs`
    /// (pairs to i16; |products| ≤ 2·127², no saturation) then `madd` (to i32).
    #[target_feature(enable = "avx2,fma,f16c")]
    pub(crate) unsafe fn block(w: *const u8, x: *const i8, magnitudes: *const u8) -> __m256i {
        let w = _mm256_loadu_si256(w as *const __m256i);
        let x = _mm256_loadu_si256(x as *const __m256i);
        let magnitudes = _mm256_loadu_si256(magnitudes as *const __m256i);
        let pairs = _mm256_maddubs_epi16(magnitudes, _mm256_sign_epi8(w, x));
        _mm256_madd_epi16(pairs, _mm256_set1_epi16(1))
    }

    /// Eight blocks per round: their scales widened and multiplied by the activations' at
    /// once, each block's factor then broadcast from memory (a load, where a broadcast from
    /// a register or a lane permute is a shuffle competing with the products on Zen 1).
    #[target_feature(enable = "avx2,fma,f16c")]
    pub unsafe fn dot(row: &[u8], x: Vector) -> f32 {
        let blocks = x.scales.len();
        let one = |b: usize, factor: *const f32, acc: __m256| {
            let w = row.as_ptr().add(b * BLOCK_BYTES + 2);
            let ints = block(w, x.quants.as_ptr().add(b * BLOCK), x.magnitudes.as_ptr().add(b * BLOCK));
            _mm256_fmadd_ps(_mm256_cvtepi32_ps(ints), _mm256_broadcast_ss(&*factor), acc)
        };
        let mut acc = [_mm256_setzero_ps(); 2];
        let mut factors = [0.0f32; 8];
        let mut b = 0;
        while b + 8 <= blocks {
            let w = row.as_ptr().add(b * BLOCK_BYTES);
            crate::kernels::quant::prefetch::<{ 8 * BLOCK_BYTES }>(w);
            let scales = crate::kernels::quant::f16x8_at::<BLOCK_BYTES>(w);
            _mm256_storeu_ps(factors.as_mut_ptr(), _mm256_mul_ps(scales, _mm256_loadu_ps(x.scales.as_ptr().add(b))));
            for j in 0..8 {
                acc[j & 1] = one(b + j, &factors[j], acc[j & 1]);
            }
            b += 8;
        }
        for j in 0..blocks - b {
            let factor = scale(row.as_ptr().add((b + j) * BLOCK_BYTES)) * x.scales[b + j];
            acc[j & 1] = one(b + j, &factor, acc[j & 1]);
        }
        crate::kernels::vector::avx2::hsum(_mm256_add_ps(acc[0], acc[1]))
    }
}

#[cfg(target_arch = "x86_64")]
pub(crate) mod avx512 {
    use std::arch::x86_64::*;

    use super::avx2::scale;
    use super::*;

    /// Two blocks' values side by side: |x| as unsigned bytes (taken once per product in
    /// [`Vector::magnitudes`]) and w carrying x's sign, so an unsigned×signed byte product
    /// gives w·x.
    #[inline(always)]
    unsafe fn operands(w: *const u8, x: *const i8, magnitudes: *const u8) -> (__m512i, __m512i) {
        let lo = _mm256_loadu_si256(w.add(2) as *const __m256i);
        let hi = _mm256_loadu_si256(w.add(BLOCK_BYTES + 2) as *const __m256i);
        let w = _mm512_inserti64x4(_mm512_castsi256_si512(lo), hi, 1);
        let x = _mm512_loadu_si512(x as *const __m512i);
        let signed_w = _mm512_mask_sub_epi8(w, _mm512_movepi8_mask(x), _mm512_setzero_si512(), w);
        (_mm512_loadu_si512(magnitudes as *const __m512i), signed_w)
    }

    /// One body, compiled twice: with `VPDPBUSD` where the CPU has VNNI, and with
    /// `maddubs` + `madd` where it does not (a separate function, so the compiler cannot
    /// use VNNI instructions on a CPU without them). Two blocks per 512-bit step: lanes
    /// 0-7 hold the first block's i32 partial sums, lanes 8-15 the second's.
    macro_rules! dot_pairs {
        ($name:ident, $features:literal, $ints:expr) => {
            #[target_feature(enable = $features)]
            pub unsafe fn $name(row: &[u8], x: Vector) -> f32 {
                let blocks = x.scales.len();
                let xs = x.scales.as_ptr();
                // Blocks b and b + 1 added to `acc`.
                let pair = |b: usize, acc: __m512| {
                    let w = row.as_ptr().add(b * BLOCK_BYTES);
                    let (ux, sw) = operands(w, x.quants.as_ptr().add(b * BLOCK), x.magnitudes.as_ptr().add(b * BLOCK));
                    let ints: __m512i = $ints(ux, sw);
                    let scale = _mm512_mask_blend_ps(
                        0xFF00,
                        _mm512_set1_ps(scale(w) * *xs.add(b)),
                        _mm512_set1_ps(scale(w.add(BLOCK_BYTES)) * *xs.add(b + 1)),
                    );
                    _mm512_fmadd_ps(_mm512_cvtepi32_ps(ints), scale, acc)
                };
                let (acc0, acc1) = two_chains(blocks / 2, _mm512_setzero_ps(), |p, acc| pair(2 * p, acc));
                let b = blocks / 2 * 2;
                let mut sum = _mm512_reduce_add_ps(_mm512_add_ps(acc0, acc1));
                if b < blocks {
                    let w = row.as_ptr().add(b * BLOCK_BYTES);
                    let ints = super::avx2::block(
                        w.add(2),
                        x.quants.as_ptr().add(b * BLOCK),
                        x.magnitudes.as_ptr().add(b * BLOCK),
                    );
                    let lanes: [i32; 8] = std::mem::transmute(ints);
                    sum += lanes.iter().sum::<i32>() as f32 * (scale(w) * x.scales[b]);
                }
                sum
            }
        };
    }

    crate::kernels::quant::avx512_levels!(dot_pairs!(dot)(dot_vnni));
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn blocks_are_ggml_block_q8_0() {
        // A block whose max is 127 has scale 1.0 (f16 0x3C00) and stores the values as is.
        let v: Vec<f32> = (0..32).map(|i| i as f32 * 8.0 - 121.0).collect();
        let mut b = [0u8; BLOCK_BYTES];
        encode_row(&v, &mut b);
        assert_eq!(&b[..2], &[0x00, 0x3C]);
        for (q, x) in b[2..].iter().zip(&v) {
            assert_eq!(*q as i8 as f32, *x);
        }
    }
}
