//! Q4_0: 4-bit weights in blocks of 32 after an f16 scale (18 bytes, ggml's `block_q4_0`),
//! and their dot product against [`Activations`](super::quant::Activations).
//!
//! A block stores `q[i] = round(v[i] / d) + 8`, `q ∈ 0..=15`, `v ≈ d·(q − 8)`, with the
//! scale `d` searched for the smallest squared error. Byte `i`
//! holds value `i` in its low nibble and value `i + 16` in its high nibble. The dot with
//! an activation block is `d·(s_x·Σ q·q_x − 8·Σx̂)` with `Σx̂` the block's dequantized sum:
//! integers inside, and every path differs only in the order of its f32 sums.

use super::quant::{f16, to_f16, Vector};

/// Values per block.
pub const BLOCK: usize = 32;
/// Bytes per block: the f16 scale, then 16 bytes of nibbles.
pub const BLOCK_BYTES: usize = 2 + BLOCK / 2;

/// The scale `d` for block `v` with the smallest squared error: the block's largest
/// magnitude mapped onto each level from -8 to -5 and 5 to 7 in steps of a quarter, each
/// candidate's levels then refit by least squares (an encoder search in the spirit of
/// ggml's `make_qx_quants`; the layout stays `block_q4_0`).
fn scale(v: &[f32]) -> f32 {
    let extreme = v.iter().fold(0.0f32, |m, &x| if x.abs() > m.abs() { x } else { m });
    if extreme == 0.0 {
        return 0.0;
    }
    let level = |x: f32, d: f32| (x / d).round().clamp(-8.0, 7.0);
    let error = |d: f32| v.iter().map(|&x| (x - d * level(x, d)).powi(2)).sum::<f32>();
    let mut best = (extreme / -8.0, error(extreme / -8.0));
    let candidates = (0..=12).map(|i| -8.0 + 0.25 * i as f32).chain((0..=8).map(|i| 5.0 + 0.25 * i as f32));
    for k in candidates {
        let d = extreme / k;
        let (num, den) = v.iter().fold((0.0f32, 0.0f32), |(n, s), &x| {
            let l = level(x, d);
            (n + x * l, s + l * l)
        });
        for d in [d, if den > 0.0 { num / den } else { d }] {
            let e = error(d);
            if e < best.1 {
                best = (d, e);
            }
        }
    }
    best.0
}

pub(crate) fn encode_row(values: &[f32], out: &mut [u8]) {
    for (v, block) in values.chunks_exact(BLOCK).zip(out.chunks_exact_mut(BLOCK_BYTES)) {
        let d = to_f16(scale(v));
        // Quantize against the scale as stored, so decoding gives the nearest values.
        let inv = if f16(d) != 0.0 { 1.0 / f16(d) } else { 0.0 };
        block[..2].copy_from_slice(&d.to_le_bytes());
        let q = |x: f32| ((x * inv).round() + 8.0).clamp(0.0, 15.0) as u8;
        for i in 0..BLOCK / 2 {
            block[2 + i] = q(v[i]) | (q(v[i + BLOCK / 2]) << 4);
        }
    }
}

pub(crate) fn decode_row(bytes: &[u8], out: &mut [f32]) {
    for (block, o) in bytes.chunks_exact(BLOCK_BYTES).zip(out.chunks_exact_mut(BLOCK)) {
        let d = f16(u16::from_le_bytes([block[0], block[1]]));
        for (i, &b) in block[2..].iter().enumerate() {
            o[i] = d * (f32::from(b & 0xF) - 8.0);
            o[i + BLOCK / 2] = d * (f32::from(b >> 4) - 8.0);
        }
    }
}

pub(crate) mod scalar {
    use super::*;

    pub fn dot(row: &[u8], x: Vector) -> f32 {
        row.chunks_exact(BLOCK_BYTES)
            .zip(x.quants.chunks_exact(BLOCK))
            .zip(x.scales.iter().zip(x.sums))
            .map(|((w, xq), (sx, sum))| {
                let int: i32 = w[2..]
                    .iter()
                    .enumerate()
                    .map(|(i, &b)| i32::from(b & 0xF) * i32::from(xq[i]) + i32::from(b >> 4) * i32::from(xq[i + 16]))
                    .sum();
                f16(u16::from_le_bytes([w[0], w[1]])) * (int as f32 * sx - 8.0 * sum)
            })
            .sum()
    }
}

#[cfg(target_arch = "x86_64")]
pub(crate) mod avx2 {
    use std::arch::x86_64::*;

    use super::*;

    /// The 32 values of the block at `w` as unsigned bytes in activation order.
    #[inline]
    #[target_feature(enable = "avx2,fma,f16c")]
    unsafe fn values(w: *const u8) -> __m256i {
        let q = _mm_loadu_si128(w.add(2) as *const __m128i);
        let nib = _mm_set1_epi8(0x0F);
        _mm256_set_m128i(_mm_and_si128(_mm_srli_epi16(q, 4), nib), _mm_and_si128(q, nib))
    }

    /// Eight blocks per round, their scales widened and multiplied by the activations' at
    /// once; each block's factor broadcast from its lane.
    #[target_feature(enable = "avx2,fma,f16c")]
    pub unsafe fn dot(row: &[u8], x: Vector) -> f32 {
        let blocks = x.scales.len();
        let (mut acc, mut offsets) = ([_mm256_setzero_ps(); 2], _mm256_setzero_ps());
        let ones = _mm256_set1_epi16(1);
        let mut b = 0;
        while b + 8 <= blocks {
            let w = row.as_ptr().add(b * BLOCK_BYTES);
            crate::kernels::quant::prefetch::<{ 8 * BLOCK_BYTES }>(w);
            let d = crate::kernels::quant::f16x8_at::<BLOCK_BYTES>(w);
            let factors = _mm256_mul_ps(d, _mm256_loadu_ps(x.scales.as_ptr().add(b)));
            offsets = _mm256_fmadd_ps(d, _mm256_loadu_ps(x.sums.as_ptr().add(b)), offsets);
            for j in 0..8 {
                let xq = _mm256_loadu_si256(x.quants.as_ptr().add((b + j) * BLOCK) as *const __m256i);
                let ints = _mm256_madd_epi16(_mm256_maddubs_epi16(values(w.add(j * BLOCK_BYTES)), xq), ones);
                let scale = _mm256_permutevar8x32_ps(factors, _mm256_set1_epi32(j as i32));
                acc[j & 1] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(ints), scale, acc[j & 1]);
            }
            b += 8;
        }
        let mut sum = crate::kernels::vector::avx2::hsum(_mm256_add_ps(acc[0], acc[1]))
            - 8.0 * crate::kernels::vector::avx2::hsum(offsets);
        if b < blocks {
            sum += super::scalar::dot(&row[b * BLOCK_BYTES..], x.from_block(b));
        }
        sum
    }
}

#[cfg(target_arch = "x86_64")]
pub(crate) mod avx512 {
    use std::arch::x86_64::*;

    use super::*;

    /// One body, compiled with `VPDPBUSD` where the CPU has VNNI and with `maddubs` + `madd`
    /// where it does not. Eight blocks per round: their scales widened together and
    /// multiplied by the activations' at once, then two blocks per 512-bit step (lanes 0-7
    /// the first block's sums, 8-15 the second's), each lane taking its block's factor by a
    /// permute. The weights are unsigned nibbles, so no sign trick is needed.
    macro_rules! dot_pairs {
        ($name:ident, $features:literal, $ints:expr) => {
            #[target_feature(enable = $features)]
            pub unsafe fn $name(row: &[u8], x: Vector) -> f32 {
                let blocks = x.scales.len();
                // Each block's 16 bytes in two 128-bit lanes, the second shifted right by 4 (one
                // per-lane shift), then one AND: the low nibbles (values 0-15) and the high ones
                // (16-31) of both blocks, in activation order.
                let (nib, shifts) = (
                    _mm512_set1_epi8(0x0F),
                    _mm512_broadcast_i64x4(_mm256_set_m128i(_mm_set1_epi16(4), _mm_setzero_si128())),
                );
                let pair = |w: *const u8| {
                    let block = |w: *const u8| _mm256_broadcastsi128_si256(_mm_loadu_si128(w.add(2) as *const __m128i));
                    let both = _mm512_inserti64x4(_mm512_castsi256_si512(block(w)), block(w.add(BLOCK_BYTES)), 1);
                    _mm512_and_si512(_mm512_srlv_epi16(both, shifts), nib)
                };
                let pick = |p: i32| {
                    let (lo, hi) = (2 * p, 2 * p + 1);
                    _mm512_set_epi32(hi, hi, hi, hi, hi, hi, hi, hi, lo, lo, lo, lo, lo, lo, lo, lo)
                };
                let picks = [pick(0), pick(1), pick(2), pick(3)];
                let (mut acc, mut offsets) = ([_mm512_setzero_ps(); 2], _mm256_setzero_ps());
                let mut b = 0;
                while b + 8 <= blocks {
                    let w = row.as_ptr().add(b * BLOCK_BYTES);
                    let d = crate::kernels::quant::f16x8_at::<BLOCK_BYTES>(w);
                    let factors = _mm512_castps256_ps512(_mm256_mul_ps(d, _mm256_loadu_ps(x.scales.as_ptr().add(b))));
                    offsets = _mm256_fmadd_ps(d, _mm256_loadu_ps(x.sums.as_ptr().add(b)), offsets);
                    for (p, pick) in picks.iter().enumerate() {
                        let xq = _mm512_loadu_si512(x.quants.as_ptr().add((b + 2 * p) * BLOCK) as *const __m512i);
                        let ints: __m512i = $ints(pair(w.add(2 * p * BLOCK_BYTES)), xq);
                        let scale = _mm512_permutexvar_ps(*pick, factors);
                        acc[p & 1] = _mm512_fmadd_ps(_mm512_cvtepi32_ps(ints), scale, acc[p & 1]);
                    }
                    b += 8;
                }
                let mut sum = _mm512_reduce_add_ps(_mm512_add_ps(acc[0], acc[1]))
                    - 8.0 * crate::kernels::vector::avx2::hsum(offsets);
                if b < blocks {
                    sum += super::scalar::dot(&row[b * BLOCK_BYTES..], x.from_block(b));
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
    fn blocks_are_ggml_block_q4_0() {
        // The largest magnitude (-16) lands on q = 0 with d = 2; value i sits in the low
        // nibble of byte i, value i + 16 in the high one.
        let mut v = [0.0f32; BLOCK];
        v[0] = -16.0;
        v[16] = 14.0;
        v[3] = 2.0;
        let mut b = [0u8; BLOCK_BYTES];
        encode_row(&v, &mut b);
        assert_eq!(f16(u16::from_le_bytes([b[0], b[1]])), 2.0);
        assert_eq!((b[2], b[5], b[3]), (15 << 4, 9 | (8 << 4), 8 | (8 << 4)));
        let mut back = [0.0; BLOCK];
        decode_row(&b, &mut back);
        assert_eq!(back, v);
    }
}
