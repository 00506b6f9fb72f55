//! Q4_K: 4-bit weights in super-blocks of 256 (144 bytes, ggml's `block_q4_K`), and their
//! dot product against [`Activations`](super::quant::Activations).
//!
//! A super-block holds eight sub-blocks of 32 values. Sub-block `j` reconstructs as
//! `v = d·sc[j]·q − dmin·m[j]` with `q ∈ 0..=15` and 6-bit `sc[j]`, `m[j]`, so each 32
//! values get their own scale and offset for 4.5 bits per weight in all. Layout: f16 `d`,
//! f16 `dmin`, 12 bytes of scales and mins (bytes 0-3: `sc[0..4]` in the low six bits,
//! 4-7: `m[0..4]`, 8-11: the low nibbles of `sc[4..8]` and of `m[4..8]`; the top two bits
//! of bytes 0-3 and 4-7 are the high bits of `sc[4..8]` and `m[4..8]`), then 128 bytes of
//! values: byte `32c + l` holds value `64c + l` in its low nibble and `64c + 32 + l` in its
//! high nibble.
//!
//! Q5_K (176 bytes, ggml's `block_q5_K`) is the same with a fifth bit per value, `q ∈ 0..=31`:
//! the same 16-byte header, then 32 bytes whose bit `j` of byte `l` is the fifth bit of value
//! `32j + l`, then the 128 bytes of low nibbles as above. Every function here takes the
//! format as `FIFTH` (false: Q4_K, true: Q5_K), so the two share one body.
//!
//! The dot of a sub-block with an activation block is `d·sc·s_x·Σ q·q_x − dmin·m·Σx̂` where
//! `Σx̂` is the activation block's dequantized sum: integers inside, and every path differs
//! only in the order of its f32 sums.

use super::quant::{f16, to_f16, Vector, X_BLOCK};

/// Values per super-block.
pub const BLOCK: usize = 256;
/// Bytes per super-block: Q4_K's, and Q5_K's with its 32 bytes of fifth bits.
pub const BLOCK_BYTES: usize = 144;
pub const Q5_BLOCK_BYTES: usize = 176;
/// Where Q5_K's fifth bits start.
const HIGH: usize = 16;

/// Bytes per super-block of the format.
const fn block_bytes<const FIFTH: bool>() -> usize {
    if FIFTH {
        Q5_BLOCK_BYTES
    } else {
        BLOCK_BYTES
    }
}

/// Where the low nibbles start: after the header, and in Q5_K after the fifth bits.
const fn nibbles<const FIFTH: bool>() -> usize {
    if FIFTH {
        HIGH + 32
    } else {
        HIGH
    }
}

/// The largest `q`.
const fn max_q<const FIFTH: bool>() -> f32 {
    if FIFTH {
        31.0
    } else {
        15.0
    }
}

/// Value `v`'s `q`: its nibble (byte `32c + l` of the nibbles holds values `64c + l` and
/// `64c + 32 + l`) and, in Q5_K, its fifth bit.
#[inline(always)]
fn q<const FIFTH: bool>(block: &[u8], v: usize) -> u8 {
    let (c, l) = (v / 64, v % 32);
    bits::<FIFTH>(block[nibbles::<FIFTH>() + 32 * c + l], block[HIGH + l], v / 32)
}

/// The `q` of sub-block `j` in its nibble byte (the low nibble for even `j`) and, in Q5_K,
/// its byte of fifth bits `high` (for Q4_K, whatever lies there: unread).
#[inline(always)]
fn bits<const FIFTH: bool>(nibbles: u8, high: u8, j: usize) -> u8 {
    let nibble = (nibbles >> (4 * (j % 2))) & 0xF;
    if FIFTH {
        nibble | (((high >> j) & 1) << 4)
    } else {
        nibble
    }
}
/// Values per sub-block (one scale and min each): one activation block.
const SUB: usize = X_BLOCK;
const SUBS: usize = BLOCK / SUB;

/// The eight 6-bit scales and eight 6-bit mins packed in `s`, as two little-endian u64s of
/// bytes.
#[inline(always)]
fn scales_mins(s: &[u8]) -> (u64, u64) {
    let word = |i: usize| u32::from_le_bytes([s[4 * i], s[4 * i + 1], s[4 * i + 2], s[4 * i + 3]]);
    let (w0, w1, w2) = (word(0), word(1), word(2));
    let low6 = 0x3f3f_3f3f;
    let (nib, top) = (0x0f0f_0f0f, 0x0303_0303);
    let sc_hi = (w2 & nib) | (((w0 >> 6) & top) << 4);
    let m_hi = ((w2 >> 4) & nib) | (((w1 >> 6) & top) << 4);
    let join = |lo: u32, hi: u32| u64::from(lo) | (u64::from(hi) << 32);
    (join(w0 & low6, sc_hi), join(w1 & low6, m_hi))
}

/// (scale, min) with `x ≈ scale·q − min`, `q ∈ 0..=max_q`, `min ≥ 0`: the least-squares fit
/// over a few quantization grids around the range's, keeping the one with the smallest
/// squared error (the search ggml's k-quants make).
fn fit(x: &[f32], max_q: f32) -> (f32, f32) {
    let lo = x.iter().fold(0.0f32, |m, &v| m.min(v));
    let hi = x.iter().fold(f32::MIN, |m, &v| m.max(v));
    if hi <= lo {
        return (0.0, -lo);
    }
    let error = |scale: f32, min: f32| -> f32 {
        let inv = if scale > 0.0 { 1.0 / scale } else { 0.0 };
        x.iter()
            .map(|&v| {
                let q = ((v + min) * inv).round().clamp(0.0, max_q);
                let e = scale * q - min - v;
                e * e
            })
            .sum()
    };
    let mut best = ((hi - lo) / max_q, -lo);
    let mut best_error = error(best.0, best.1);
    let n = x.len() as f32;
    for step in 0..=20 {
        let inv = (max_q - 1.0 + 0.1 * step as f32) / (hi - lo);
        let (mut sq, mut sqq, mut sx, mut sqx) = (0.0f32, 0.0f32, 0.0f32, 0.0f32);
        for &v in x {
            let q = ((v - lo) * inv).round().clamp(0.0, max_q);
            sq += q;
            sqq += q * q;
            sx += v;
            sqx += q * v;
        }
        let det = n * sqq - sq * sq;
        if det <= 0.0 {
            continue;
        }
        let (mut scale, mut offset) = ((n * sqx - sq * sx) / det, (sqq * sx - sq * sqx) / det);
        if offset > 0.0 {
            // The offset is a min below zero only: refit the scale through the origin.
            (scale, offset) = (sqx / sqq, 0.0);
        }
        if scale <= 0.0 {
            continue;
        }
        let e = error(scale, -offset);
        if e < best_error {
            (best, best_error) = ((scale, -offset), e);
        }
    }
    best
}

pub(crate) fn encode_row<const FIFTH: bool>(values: &[f32], out: &mut [u8]) {
    for (v, block) in values.chunks_exact(BLOCK).zip(out.chunks_exact_mut(block_bytes::<FIFTH>())) {
        let fits: Vec<(f32, f32)> = v.chunks_exact(SUB).map(|x| fit(x, max_q::<FIFTH>())).collect();
        let max_scale = fits.iter().fold(0.0f32, |m, f| m.max(f.0));
        let max_min = fits.iter().fold(0.0f32, |m, f| m.max(f.1));
        let (d, dmin) = (to_f16(max_scale / 63.0), to_f16(max_min / 63.0));
        let (df, dminf) = (f16(d), f16(dmin));
        let six = |v: f32, unit: f32| if unit > 0.0 { (v / unit).round().clamp(0.0, 63.0) as u8 } else { 0 };
        let sc: Vec<u8> = fits.iter().map(|f| six(f.0, df)).collect();
        let m: Vec<u8> = fits.iter().map(|f| six(f.1, dminf)).collect();
        block[..2].copy_from_slice(&d.to_le_bytes());
        block[2..4].copy_from_slice(&dmin.to_le_bytes());
        let s = &mut block[4..16];
        for j in 0..4 {
            s[j] = sc[j] | ((sc[j + 4] >> 4) << 6);
            s[j + 4] = m[j] | ((m[j + 4] >> 4) << 6);
            s[j + 8] = (sc[j + 4] & 0xF) | ((m[j + 4] & 0xF) << 4);
        }
        // Quantize against the scales as stored, so decoding gives the nearest values.
        let mut q = [0u8; BLOCK];
        for (j, (qs, xs)) in q.chunks_exact_mut(SUB).zip(v.chunks_exact(SUB)).enumerate() {
            let (scale, min) = (df * f32::from(sc[j]), dminf * f32::from(m[j]));
            let inv = if scale > 0.0 { 1.0 / scale } else { 0.0 };
            qs.iter_mut().zip(xs).for_each(|(q, &x)| *q = ((x + min) * inv).round().clamp(0.0, max_q::<FIFTH>()) as u8);
        }
        for (c, bytes) in block[nibbles::<FIFTH>()..].chunks_exact_mut(32).enumerate() {
            for (l, b) in bytes.iter_mut().enumerate() {
                *b = (q[64 * c + l] & 0xF) | ((q[64 * c + 32 + l] & 0xF) << 4);
            }
        }
        if FIFTH {
            for (l, b) in block[HIGH..HIGH + 32].iter_mut().enumerate() {
                *b = (0..SUBS).fold(0, |bits, j| bits | ((q[32 * j + l] >> 4) << j));
            }
        }
    }
}

/// Sub-block `j`'s `(d·sc[j], dmin·m[j])`.
fn factor(d: f32, dmin: f32, (sc, m): (u64, u64), j: usize) -> (f32, f32) {
    (d * ((sc >> (8 * j)) as u8) as f32, dmin * ((m >> (8 * j)) as u8) as f32)
}

/// Sub-block by sub-block, so that the loops vectorize: decoding is how the prompt's
/// prefill multiplies encoded weights (one GEMM on them widened to f32).
pub(crate) fn decode_row<const FIFTH: bool>(bytes: &[u8], out: &mut [f32]) {
    for (block, o) in bytes.chunks_exact(block_bytes::<FIFTH>()).zip(out.chunks_exact_mut(BLOCK)) {
        let (d, dmin) = (f16(u16::from_le_bytes([block[0], block[1]])), f16(u16::from_le_bytes([block[2], block[3]])));
        let scales = scales_mins(&block[4..16]);
        // (Q4_K has no fifth bits: this slice is then its first nibbles, never read.)
        let high = &block[HIGH..HIGH + 32];
        for (c, qs) in block[nibbles::<FIFTH>()..].chunks_exact(32).enumerate() {
            for half in 0..2 {
                let j = 2 * c + half;
                let (scale, min) = factor(d, dmin, scales, j);
                let o = &mut o[SUB * j..][..SUB];
                for ((o, &q), &h) in o.iter_mut().zip(qs).zip(high) {
                    *o = scale * f32::from(bits::<FIFTH>(q, h, j)) - min;
                }
            }
        }
    }
}

pub(crate) mod scalar {
    use super::*;

    pub fn dot<const FIFTH: bool>(row: &[u8], x: Vector) -> f32 {
        let mut sum = 0.0f32;
        for (b, block) in row.chunks_exact(block_bytes::<FIFTH>()).enumerate() {
            let (d, dmin) =
                (f16(u16::from_le_bytes([block[0], block[1]])), f16(u16::from_le_bytes([block[2], block[3]])));
            let scales = scales_mins(&block[4..16]);
            for j in 0..SUBS {
                let xb = b * SUBS + j;
                let xq = &x.quants[xb * SUB..][..SUB];
                let int: i32 =
                    xq.iter().enumerate().map(|(l, &x)| i32::from(q::<FIFTH>(block, SUB * j + l)) * i32::from(x)).sum();
                let (scale, min) = factor(d, dmin, scales, j);
                sum += int as f32 * (scale * x.scales[xb]) - min * x.sums[xb];
            }
        }
        sum
    }
}

#[cfg(target_arch = "x86_64")]
pub(crate) mod avx2 {
    use std::arch::x86_64::*;

    use super::*;

    /// `d·sc[j]·s_x[j]` for the eight sub-blocks, and `dmin·m[j]·Σx̂[j]`.
    #[inline]
    #[target_feature(enable = "avx2,fma,f16c")]
    pub(super) unsafe fn factors(block: *const u8, xs: *const f32, xsum: *const f32) -> (__m256, __m256) {
        // d and dmin in one conversion: a lone 16-bit load would be inserted into whatever
        // register the compiler picks (the mins accumulator, measured), chaining blocks.
        let both = _mm_cvtph_ps(_mm_cvtsi32_si128((block as *const i32).read_unaligned()));
        let d = _mm256_broadcastss_ps(both);
        let dmin = _mm256_broadcastss_ps(_mm_movehdup_ps(both));
        let (sc, m) = scales_mins(std::slice::from_raw_parts(block.add(4), 12));
        let widen = |v: u64| _mm256_cvtepi32_ps(_mm256_cvtepu8_epi32(_mm_cvtsi64_si128(v as i64)));
        let scales = _mm256_mul_ps(_mm256_mul_ps(d, widen(sc)), _mm256_loadu_ps(xs));
        let mins = _mm256_mul_ps(_mm256_mul_ps(dmin, widen(m)), _mm256_loadu_ps(xsum));
        (scales, mins)
    }

    /// Sub-block `j`'s fifth bits (Q5_K), as 16 in each byte: bit `j` of each of the 32
    /// bytes at `high`.
    #[inline]
    #[target_feature(enable = "avx2,fma,f16c")]
    pub(super) unsafe fn fifth(high: __m256i, j: usize) -> __m256i {
        let bit = _mm256_and_si256(_mm256_srl_epi16(high, _mm_cvtsi32_si128(j as i32)), _mm256_set1_epi8(1));
        _mm256_slli_epi16(bit, 4)
    }

    #[target_feature(enable = "avx2,fma,f16c")]
    pub unsafe fn dot<const FIFTH: bool>(row: &[u8], x: Vector) -> f32 {
        let (mut acc, mut mins) = ([_mm256_setzero_ps(); 2], _mm256_setzero_ps());
        let nib = _mm256_set1_epi8(0x0F);
        let ones = _mm256_set1_epi16(1);
        for b in 0..row.len() / block_bytes::<FIFTH>() {
            let block = row.as_ptr().add(b * block_bytes::<FIFTH>());
            crate::kernels::quant::prefetch::<Q5_BLOCK_BYTES>(block); // either format's block
            let (scales, m) = factors(block, x.scales.as_ptr().add(b * SUBS), x.sums.as_ptr().add(b * SUBS));
            mins = _mm256_add_ps(mins, m);
            let lanes: [f32; 8] = std::mem::transmute(scales);
            let high = _mm256_loadu_si256(block.add(HIGH) as *const __m256i);
            for c in 0..4 {
                let q = _mm256_loadu_si256(block.add(nibbles::<FIFTH>() + 32 * c) as *const __m256i);
                for (half, w) in [(0, _mm256_and_si256(q, nib)), (1, _mm256_and_si256(_mm256_srli_epi16(q, 4), nib))] {
                    let j = 2 * c + half;
                    let w = if FIFTH { _mm256_or_si256(w, fifth(high, j)) } else { w };
                    let xq = _mm256_loadu_si256(x.quants.as_ptr().add((b * SUBS + j) * SUB) as *const __m256i);
                    let ints = _mm256_madd_epi16(_mm256_maddubs_epi16(w, xq), ones);
                    acc[half] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(ints), _mm256_set1_ps(lanes[j]), acc[half]);
                }
            }
        }
        crate::kernels::vector::avx2::hsum(_mm256_sub_ps(_mm256_add_ps(acc[0], acc[1]), mins))
    }
}

#[cfg(target_arch = "x86_64")]
pub(crate) mod avx512 {
    use std::arch::x86_64::*;

    use super::*;

    /// One body, compiled with `VPDPBUSD` where the CPU has VNNI and with `maddubs` + `madd`
    /// where it does not. Each 512-bit step takes two sub-blocks: the low nibbles of 32
    /// bytes (sub-block 2c) in lanes 0-7 and the high nibbles (2c + 1) in lanes 8-15, which
    /// is also the order of the 64 activations they meet. The weights are unsigned, so
    /// the unsigned×signed byte product needs no sign trick.
    macro_rules! dot_body {
        ($name:ident, $many:ident, $features:literal, $ints:expr) => {
            #[target_feature(enable = $features)]
            pub unsafe fn $name<const FIFTH: bool>(row: &[u8], x: Vector) -> f32 {
                $many::<FIFTH, 1>(row, [x])[0]
            }

            /// The dot of `row` with each of `N` vectors, unpacking each block of the row
            /// once for all of them; each result is bit for bit the single dot's (every
            /// vector goes through the same operations in the same order).
            #[target_feature(enable = $features)]
            pub unsafe fn $many<const FIFTH: bool, const N: usize>(row: &[u8], xs: [Vector; N]) -> [f32; N] {
                let mut acc = [[_mm512_setzero_ps(); 2]; N];
                let mut mins = [_mm256_setzero_ps(); N];
                let nib = _mm512_set1_epi8(0x0F);
                // The 32 bytes of a step, in both halves of a vector, shifted right by 0 in the
                // low half and by 4 in the high one: one shift yields both sub-blocks' nibbles.
                let shifts = _mm512_inserti64x4(_mm512_setzero_si512(), _mm256_set1_epi16(4), 1);
                // Lane i of the step for sub-blocks (2c, 2c+1) takes factor 2c + i / 8.
                let pick = |c: i32| {
                    _mm512_set_epi32(
                        2 * c + 1,
                        2 * c + 1,
                        2 * c + 1,
                        2 * c + 1,
                        2 * c + 1,
                        2 * c + 1,
                        2 * c + 1,
                        2 * c + 1,
                        2 * c,
                        2 * c,
                        2 * c,
                        2 * c,
                        2 * c,
                        2 * c,
                        2 * c,
                        2 * c,
                    )
                };
                let picks = [pick(0), pick(1), pick(2), pick(3)];
                for b in 0..row.len() / block_bytes::<FIFTH>() {
                    let block = row.as_ptr().add(b * block_bytes::<FIFTH>());
                    let high = _mm256_loadu_si256(block.add(HIGH) as *const __m256i);
                    let mut scales = [_mm512_setzero_ps(); N];
                    for (v, x) in xs.iter().enumerate() {
                        let (s, m) =
                            super::avx2::factors(block, x.scales.as_ptr().add(b * SUBS), x.sums.as_ptr().add(b * SUBS));
                        mins[v] = _mm256_add_ps(mins[v], m);
                        scales[v] = _mm512_castps256_ps512(s);
                    }
                    for (c, pick) in picks.iter().enumerate() {
                        let q = _mm256_loadu_si256(block.add(nibbles::<FIFTH>() + 32 * c) as *const __m256i);
                        let mut w = _mm512_and_si512(_mm512_srlv_epi16(_mm512_broadcast_i64x4(q), shifts), nib);
                        if FIFTH {
                            let (lo, hi) = (super::avx2::fifth(high, 2 * c), super::avx2::fifth(high, 2 * c + 1));
                            w = _mm512_or_si512(w, _mm512_inserti64x4(_mm512_castsi256_si512(lo), hi, 1));
                        }
                        for (v, x) in xs.iter().enumerate() {
                            let xq = _mm512_loadu_si512(x.quants.as_ptr().add(b * BLOCK + 64 * c) as *const __m512i);
                            let ints: __m512i = $ints(w, xq);
                            let scale = _mm512_permutexvar_ps(*pick, scales[v]);
                            acc[v][c & 1] = _mm512_fmadd_ps(_mm512_cvtepi32_ps(ints), scale, acc[v][c & 1]);
                        }
                    }
                }
                std::array::from_fn(|v| {
                    _mm512_reduce_add_ps(_mm512_add_ps(acc[v][0], acc[v][1]))
                        - crate::kernels::vector::avx2::hsum(mins[v])
                })
            }
        };
    }

    crate::kernels::quant::avx512_levels!(dot_body!(dot, dot_many)(dot_vnni, dot_many_vnni));
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scales_and_mins_unpack_as_packed() {
        let sc = [1u8, 63, 17, 0, 45, 33, 2, 60];
        let m = [62u8, 0, 5, 31, 16, 48, 63, 9];
        let mut s = [0u8; 12];
        for j in 0..4 {
            s[j] = sc[j] | ((sc[j + 4] >> 4) << 6);
            s[j + 4] = m[j] | ((m[j + 4] >> 4) << 6);
            s[j + 8] = (sc[j + 4] & 0xF) | ((m[j + 4] & 0xF) << 4);
        }
        let (gs, gm) = scales_mins(&s);
        assert_eq!((gs.to_le_bytes(), gm.to_le_bytes()), (sc, m));
    }

    #[test]
    fn a_block_decodes_as_ggml_lays_it_out() {
        // d = 1, dmin = 0.5, every sub-block scale j + 1 and min 2j: value 64c + l is the low
        // nibble of byte 32c + l, value 64c + 32 + l its high nibble.
        let mut block = [0u8; BLOCK_BYTES];
        block[..2].copy_from_slice(&to_f16(1.0).to_le_bytes());
        block[2..4].copy_from_slice(&to_f16(0.5).to_le_bytes());
        let sc: Vec<u8> = (1..=8).collect();
        let m: Vec<u8> = (0..8).map(|j| 2 * j).collect();
        for j in 0..4 {
            block[4 + j] = sc[j];
            block[8 + j] = m[j];
            block[12 + j] = sc[j + 4] | (m[j + 4] << 4);
        }
        for (i, b) in block[16..].iter_mut().enumerate() {
            *b = (i % 16) as u8 | (((i + 3) % 16) as u8) << 4;
        }
        let mut out = [0.0; BLOCK];
        decode_row::<false>(&block, &mut out);
        for (v, &got) in out.iter().enumerate() {
            let (c, l) = (v / 64, v % 32);
            let byte = block[16 + 32 * c + l];
            let q = if v % 64 < 32 { byte & 0xF } else { byte >> 4 };
            let j = v / 32;
            assert_eq!(got, f32::from(sc[j]) * f32::from(q) - 0.5 * f32::from(m[j]), "value {v}");
        }
    }
}
