//! Q6_K: 6-bit weights in super-blocks of 256 (210 bytes, ggml's `block_q6_K`), and their
//! dot product against [`Activations`](super::quant::Activations). llama.cpp's Q4_K_M files
//! hold some tensors in it (the value and down projections of some layers, the output
//! head), so a GGUF checkpoint of that kind loads only with it.
//!
//! A super-block holds sixteen sub-blocks of 16 values, each with an i8 scale, and one f16
//! `d`: value `v` reconstructs as `d·sc[v / 16]·(q − 32)` with `q ∈ 0..=63`. Layout: 128
//! bytes `ql` of low four bits, 64 bytes `qh` of high two bits, 16 bytes of scales, then
//! `d`. In half `h` of the block (values `128h..`), value `128h + 32g + l` (`g ∈ 0..4`,
//! `l ∈ 0..32`) has its low bits in byte `64h + 32·(g mod 2) + l` of `ql` (the low nibble for
//! `g < 2`, the high one after) and its high bits at bit `2g` of byte `32h + l` of `qh`.
//!
//! The dot of an activation block (32 values, two sub-blocks) is
//! `s_x·d·Σₖ sc[k]·(Σ q·q_x − 32·Σ q_x)`: integers inside, every path differing only in the
//! order of its f32 sums.

use super::quant::{f16, to_f16, Vector, X_BLOCK};

/// Values per super-block.
pub const BLOCK: usize = 256;
/// Bytes per super-block.
pub const BLOCK_BYTES: usize = 210;
/// Values per sub-block (one scale each).
const SUB: usize = 16;
const QH: usize = 128;
const SCALES: usize = 192;
const D: usize = 208;

/// Value `v`'s stored `q` (0..=63).
fn q(block: &[u8], v: usize) -> u8 {
    let (h, u) = (v / 128, v % 128);
    let (g, l) = (u / 32, u % 32);
    bits(block[64 * h + 32 * (g & 1) + l], block[QH + 32 * h + l], g)
}

/// The `q` of group `g` of a half in its `ql` byte `low` and its `qh` byte `high`.
#[inline(always)]
fn bits(low: u8, high: u8, g: usize) -> u8 {
    ((low >> (4 * (g >> 1))) & 0xF) | (((high >> (2 * g)) & 3) << 4)
}

fn d(block: &[u8]) -> f32 {
    f16(u16::from_le_bytes([block[D], block[D + 1]]))
}

fn scale(block: &[u8], sub: usize) -> f32 {
    f32::from(block[SCALES + sub] as i8)
}

pub(crate) fn encode_row(values: &[f32], out: &mut [u8]) {
    for (v, block) in values.chunks_exact(BLOCK).zip(out.chunks_exact_mut(BLOCK_BYTES)) {
        // Each sub-block's largest magnitude onto 31 steps, the scales onto 127 steps of d.
        let steps: Vec<f32> =
            v.chunks_exact(SUB).map(|s| s.iter().fold(0.0f32, |m, x| m.max(x.abs())) / 31.0).collect();
        let d = to_f16(steps.iter().fold(0.0f32, |m, &s| m.max(s)) / 127.0);
        let df = f16(d);
        block.fill(0);
        for (k, (&step, xs)) in steps.iter().zip(v.chunks_exact(SUB)).enumerate() {
            let sc = if df > 0.0 { (step / df).round().clamp(0.0, 127.0) } else { 0.0 };
            block[SCALES + k] = sc as i8 as u8;
            // Quantize against the scale as stored, so decoding gives the nearest values.
            let unit = df * sc;
            for (i, &x) in xs.iter().enumerate() {
                let q = if unit > 0.0 { (x / unit).round().clamp(-32.0, 31.0) as i32 + 32 } else { 32 } as u8;
                let (h, u) = ((SUB * k + i) / 128, (SUB * k + i) % 128);
                let (g, l) = (u / 32, u % 32);
                block[64 * h + 32 * (g & 1) + l] |= (q & 0xF) << (4 * (g >> 1));
                block[QH + 32 * h + l] |= (q >> 4) << (2 * g);
            }
        }
        block[D..].copy_from_slice(&d.to_le_bytes());
    }
}

/// Run by run of 32 values, so that the loops vectorize (the prompt's prefill decodes the
/// weights it multiplies).
pub(crate) fn decode_row(bytes: &[u8], out: &mut [f32]) {
    for (block, o) in bytes.chunks_exact(BLOCK_BYTES).zip(out.chunks_exact_mut(BLOCK)) {
        let d = d(block);
        for (run, o) in o.chunks_exact_mut(32).enumerate() {
            let (h, g) = (run / 4, run % 4);
            let low = &block[64 * h + 32 * (g & 1)..][..32];
            let high = &block[QH + 32 * h..][..32];
            for (i, o) in o.chunks_exact_mut(SUB).enumerate() {
                // (d·sc)·(q − 32) in f32, as ggml and gguf-py reconstruct it.
                let scale = d * scale(block, 2 * run + i);
                for ((o, &l), &hb) in o.iter_mut().zip(&low[SUB * i..]).zip(&high[SUB * i..]) {
                    *o = scale * (f32::from(bits(l, hb, g)) - 32.0);
                }
            }
        }
    }
}

pub(crate) mod scalar {
    use super::*;

    pub fn dot(row: &[u8], x: Vector) -> f32 {
        let mut sum = 0.0f32;
        for (b, block) in row.chunks_exact(BLOCK_BYTES).enumerate() {
            let d = d(block);
            for j in 0..BLOCK / X_BLOCK {
                let xb = b * (BLOCK / X_BLOCK) + j;
                let xq = &x.quants[xb * X_BLOCK..][..X_BLOCK];
                let mut part = 0.0f32;
                for (k, xs) in xq.chunks_exact(SUB).enumerate() {
                    let sub = 2 * j + k;
                    let int: i32 = xs
                        .iter()
                        .enumerate()
                        .map(|(i, &x)| (i32::from(q(block, SUB * sub + i)) - 32) * i32::from(x))
                        .sum();
                    part += d * scale(block, sub) * int as f32;
                }
                sum += part * x.scales[xb];
            }
        }
        sum
    }
}

#[cfg(target_arch = "x86_64")]
pub(crate) mod avx2 {
    use std::arch::x86_64::*;

    use super::*;

    /// `d·sc[k]·s_x` for the sixteen sub-blocks, as two vectors of eight (halves 0 and 1).
    #[inline]
    #[target_feature(enable = "avx2,fma,f16c")]
    pub(super) unsafe fn factors(block: *const u8, xs: *const f32) -> [__m256; 2] {
        // Not `f16_at`: it reads eight bytes, and `d` ends the block.
        let bits = u16::from_le_bytes([*block.add(D), *block.add(D + 1)]);
        let d = _mm256_broadcastss_ps(_mm_cvtph_ps(_mm_set1_epi16(bits as i16)));
        let scales = _mm_loadu_si128(block.add(SCALES) as *const __m128i);
        let sx = _mm256_loadu_ps(xs);
        // Sub-blocks 2j and 2j + 1 meet activation block j.
        let pairs =
            |h: i32| _mm256_setr_epi32(4 * h, 4 * h, 4 * h + 1, 4 * h + 1, 4 * h + 2, 4 * h + 2, 4 * h + 3, 4 * h + 3);
        let half = |sc: __m128i, h: i32| {
            let sc = _mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(sc));
            _mm256_mul_ps(_mm256_mul_ps(d, sc), _mm256_permutevar8x32_ps(sx, pairs(h)))
        };
        [half(scales, 0), half(_mm_srli_si128(scales, 8), 1)]
    }

    #[target_feature(enable = "avx2,fma,f16c")]
    pub unsafe fn dot(row: &[u8], x: Vector) -> f32 {
        let (nib, three, thirty_two, ones) =
            (_mm256_set1_epi8(0x0F), _mm256_set1_epi8(3), _mm256_set1_epi8(32), _mm256_set1_epi16(1));
        let (mut acc0, mut acc1) = (_mm256_setzero_ps(), _mm256_setzero_ps());
        for b in 0..row.len() / BLOCK_BYTES {
            let block = row.as_ptr().add(b * BLOCK_BYTES);
            crate::kernels::quant::prefetch::<BLOCK_BYTES>(block);
            let factors = factors(block, x.scales.as_ptr().add(b * (BLOCK / X_BLOCK)));
            for (h, &factor) in factors.iter().enumerate() {
                let qh = _mm256_loadu_si256(block.add(QH + 32 * h) as *const __m256i);
                for g in 0..4 {
                    let low = _mm256_loadu_si256(block.add(64 * h + 32 * (g & 1)) as *const __m256i);
                    let low = _mm256_and_si256(_mm256_srl_epi16(low, _mm_cvtsi32_si128(4 * (g >> 1) as i32)), nib);
                    let high = _mm256_and_si256(_mm256_srl_epi16(qh, _mm_cvtsi32_si128(2 * g as i32)), three);
                    let q = _mm256_or_si256(low, _mm256_slli_epi16(high, 4));
                    let xq = _mm256_loadu_si256(x.quants.as_ptr().add(b * BLOCK + 128 * h + 32 * g) as *const __m256i);
                    let ints = _mm256_sub_epi32(
                        _mm256_madd_epi16(_mm256_maddubs_epi16(q, xq), ones),
                        _mm256_madd_epi16(_mm256_maddubs_epi16(thirty_two, xq), ones),
                    );
                    // Lanes 0-3 are sub-block 2g of the half, 4-7 sub-block 2g + 1.
                    let pick = _mm256_setr_epi32(
                        2 * g as i32,
                        2 * g as i32,
                        2 * g as i32,
                        2 * g as i32,
                        2 * g as i32 + 1,
                        2 * g as i32 + 1,
                        2 * g as i32 + 1,
                        2 * g as i32 + 1,
                    );
                    let scale = _mm256_permutevar8x32_ps(factor, pick);
                    if g & 1 == 0 {
                        acc0 = _mm256_fmadd_ps(_mm256_cvtepi32_ps(ints), scale, acc0);
                    } else {
                        acc1 = _mm256_fmadd_ps(_mm256_cvtepi32_ps(ints), scale, acc1);
                    }
                }
            }
        }
        crate::kernels::vector::avx2::hsum(_mm256_add_ps(acc0, acc1))
    }
}

#[cfg(target_arch = "x86_64")]
pub(crate) mod avx512 {
    use std::arch::x86_64::*;

    use super::*;

    /// One body, compiled with `VPDPBUSD` where the CPU has VNNI and with `maddubs` + `madd`
    /// where it does not. Two 512-bit steps per half of a block: values 0-63 (the low
    /// nibbles of `ql`, `qh` bits 0-3) and 64-127 (the high nibbles, bits 4-7), each four
    /// sub-blocks of four i32 lanes; `q` is unsigned, so `q·x − 32·x` needs no sign trick.
    macro_rules! dot_body {
        ($name:ident, $features:literal, $ints:expr) => {
            #[target_feature(enable = $features)]
            pub unsafe fn $name(row: &[u8], x: Vector) -> f32 {
                let (nib, three, thirty_two) = (_mm512_set1_epi8(0x0F), _mm512_set1_epi8(3), _mm512_set1_epi8(32));
                // Lanes 4i..4i + 4 of step t take the factor of sub-block 4t + i.
                let pick = |t: i32| {
                    let s = |i: i32| 4 * t + i;
                    _mm512_setr_epi32(
                        s(0),
                        s(0),
                        s(0),
                        s(0),
                        s(1),
                        s(1),
                        s(1),
                        s(1),
                        s(2),
                        s(2),
                        s(2),
                        s(2),
                        s(3),
                        s(3),
                        s(3),
                        s(3),
                    )
                };
                let picks = [pick(0), pick(1), pick(2), pick(3)];
                let halves = |lo: i16, hi: i16| _mm512_inserti64x4(_mm512_set1_epi16(lo), _mm256_set1_epi16(hi), 1);
                let shifts = [halves(0, 2), halves(4, 6)];
                let (mut acc0, mut acc1) = (_mm512_setzero_ps(), _mm512_setzero_ps());
                for b in 0..row.len() / BLOCK_BYTES {
                    let block = row.as_ptr().add(b * BLOCK_BYTES);
                    let [f0, f1] = super::avx2::factors(block, x.scales.as_ptr().add(b * (BLOCK / X_BLOCK)));
                    // (insertf32x8 is AVX512DQ, which these levels do not name.)
                    let wide = _mm512_castps256_ps512(f0);
                    let factors = _mm512_castpd_ps(_mm512_insertf64x4(_mm512_castps_pd(wide), _mm256_castps_pd(f1), 1));
                    // Values `64·t..` of the block, `q` assembled from the low bits and two
                    // high-bit shifts of the half's `qh`.
                    // `qh` is in both halves of a register; `shifts` moves the half's two pairs of
                    // bits (0 and 2, or 4 and 6) into place with one per-lane shift.
                    let step = |acc: __m512, t: usize, low: __m512i, qh: __m512i, shifts: __m512i| {
                        let high = _mm512_and_si512(_mm512_srlv_epi16(qh, shifts), three);
                        let q = _mm512_or_si512(_mm512_and_si512(low, nib), _mm512_slli_epi16(high, 4));
                        let xq = _mm512_loadu_si512(x.quants.as_ptr().add(b * BLOCK + 64 * t) as *const __m512i);
                        let ints = _mm512_sub_epi32($ints(q, xq), $ints(thirty_two, xq));
                        _mm512_fmadd_ps(_mm512_cvtepi32_ps(ints), _mm512_permutexvar_ps(picks[t], factors), acc)
                    };
                    for h in 0..2 {
                        let ql = _mm512_loadu_si512(block.add(64 * h) as *const __m512i);
                        let qh = _mm512_broadcast_i64x4(_mm256_loadu_si256(block.add(QH + 32 * h) as *const __m256i));
                        acc0 = step(acc0, 2 * h, ql, qh, shifts[0]);
                        acc1 = step(acc1, 2 * h + 1, _mm512_srli_epi16(ql, 4), qh, shifts[1]);
                    }
                }
                _mm512_reduce_add_ps(_mm512_add_ps(acc0, acc1))
            }
        };
    }

    crate::kernels::quant::avx512_levels!(dot_body!(dot)(dot_vnni));
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_block_decodes_as_ggml_lays_it_out() {
        // d = 0.5, sub-block k's scale k - 8; value 128h + 32g + l has low bits (l + g) mod 16
        // and high bits (h + g) mod 4, placed where ggml's dequantize_row_q6_K reads them.
        let mut block = [0u8; BLOCK_BYTES];
        for v in 0..BLOCK {
            let (h, u) = (v / 128, v % 128);
            let (g, l) = (u / 32, u % 32);
            let (low, high) = (((l + g) % 16) as u8, ((h + g) % 4) as u8);
            block[64 * h + 32 * (g & 1) + l] |= low << (4 * (g >> 1));
            block[QH + 32 * h + l] |= high << (2 * g);
        }
        for k in 0..BLOCK / SUB {
            block[SCALES + k] = (k as i8 - 8) as u8;
        }
        block[D..].copy_from_slice(&to_f16(0.5).to_le_bytes());
        let mut out = [0.0; BLOCK];
        decode_row(&block, &mut out);
        for (v, &got) in out.iter().enumerate() {
            let (h, u) = (v / 128, v % 128);
            let (g, l) = (u / 32, u % 32);
            let q = ((l + g) % 16 + 16 * ((h + g) % 4)) as f32;
            assert_eq!(got, 0.5 * ((v / SUB) as f32 - 8.0) * (q - 32.0), "value {v}");
        }
    }
}
