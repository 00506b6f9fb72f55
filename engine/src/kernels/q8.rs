//! 8-bit integer weights in blocks of 32 with one f32 scale per block, and their dot
//! product against activations quantized the same way.
//!
//! A block stores `q[i] = round(v[i] / s)` with `s = max|v| / 127`, so `v ≈ s·q` and
//! `q ∈ [-127, 127]` (never -128, which the sign trick below could not negate). The dot of
//! two quantized rows is exact in integers per block, `Σ_blocks s_w·s_x·Σ q_w·q_x`: every
//! path computes the same integers and differs only in the order of the f32 sums.

use super::cpu::{Cpu, Isa};

/// Values per block.
pub const BLOCK: usize = 32;

/// Quantizes `values` (a multiple of [`BLOCK`] long) into `quants` and one scale per block.
pub fn quantize(values: &[f32], quants: &mut [i8], scales: &mut [f32]) {
    assert_eq!(values.len() % BLOCK, 0, "q8 rows are whole blocks of {BLOCK}");
    assert_eq!((quants.len(), scales.len()), (values.len(), values.len() / BLOCK));
    for ((v, q), s) in values.chunks_exact(BLOCK).zip(quants.chunks_exact_mut(BLOCK)).zip(scales.iter_mut()) {
        let amax = v.iter().fold(0.0f32, |m, x| m.max(x.abs()));
        *s = amax / 127.0;
        let inv = if amax > 0.0 { 127.0 / amax } else { 0.0 };
        q.iter_mut().zip(v).for_each(|(q, &x)| *q = (x * inv).round().clamp(-127.0, 127.0) as i8);
    }
}

/// Σ over blocks of `sw·sx·Σ qw·qx` for one quantized row against quantized activations.
pub fn dot(cpu: Cpu, qw: &[i8], sw: &[f32], qx: &[i8], sx: &[f32]) -> f32 {
    assert_eq!(qw.len(), qx.len(), "q8 dot of rows of different lengths");
    assert!(
        qw.len().is_multiple_of(BLOCK) && sw.len() == qw.len() / BLOCK && sx.len() == sw.len(),
        "q8 scales do not match"
    );
    match cpu.isa() {
        Isa::Scalar => scalar::dot(qw, sw, qx, sx),
        // SAFETY: the `Cpu` token proves the level's instructions exist.
        Isa::Avx2 => unsafe { avx2::dot(qw, sw, qx, sx) },
        Isa::Avx512 => unsafe { avx512::dot(qw, sw, qx, sx) },
        _ => unsafe { avx512::dot_vnni(qw, sw, qx, sx) },
    }
}

pub(crate) mod scalar {
    use super::BLOCK;

    pub fn dot(qw: &[i8], sw: &[f32], qx: &[i8], sx: &[f32]) -> f32 {
        qw.chunks_exact(BLOCK)
            .zip(qx.chunks_exact(BLOCK))
            .zip(sw.iter().zip(sx))
            .map(|((w, x), (sw, sx))| {
                let int: i32 = w.iter().zip(x).map(|(&w, &x)| i32::from(w) * i32::from(x)).sum();
                int as f32 * (sw * sx)
            })
            .sum()
    }
}

#[cfg(target_arch = "x86_64")]
mod avx2 {
    use std::arch::x86_64::*;

    use super::BLOCK;

    /// Integer dot of one block as 8 i32 lanes: |x| (unsigned) times w with x's sign, by
    /// `maddubs` (pairs to i16; |products| ≤ 2·127², no saturation) then `madd` (to i32).
    #[target_feature(enable = "avx2,fma")]
    pub(crate) unsafe fn block(w: *const i8, x: *const i8) -> __m256i {
        let w = _mm256_loadu_si256(w as *const __m256i);
        let x = _mm256_loadu_si256(x as *const __m256i);
        let pairs = _mm256_maddubs_epi16(_mm256_sign_epi8(x, x), _mm256_sign_epi8(w, x));
        _mm256_madd_epi16(pairs, _mm256_set1_epi16(1))
    }

    #[target_feature(enable = "avx2,fma")]
    pub unsafe fn dot(qw: &[i8], sw: &[f32], qx: &[i8], sx: &[f32]) -> f32 {
        let mut acc = [_mm256_setzero_ps(); 2];
        for b in 0..sw.len() {
            let ints = block(qw.as_ptr().add(b * BLOCK), qx.as_ptr().add(b * BLOCK));
            let scale = _mm256_set1_ps(sw[b] * sx[b]);
            acc[b & 1] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(ints), scale, acc[b & 1]);
        }
        crate::kernels::vector::avx2::hsum(_mm256_add_ps(acc[0], acc[1]))
    }
}

#[cfg(target_arch = "x86_64")]
mod avx512 {
    use std::arch::x86_64::*;

    use super::BLOCK;

    /// |x| as unsigned bytes and w carrying x's sign, so an unsigned×signed byte product
    /// gives w·x.
    #[inline(always)]
    unsafe fn operands(w: *const i8, x: *const i8) -> (__m512i, __m512i) {
        let w = _mm512_loadu_si512(w as *const __m512i);
        let x = _mm512_loadu_si512(x as *const __m512i);
        let signed_w = _mm512_mask_sub_epi8(w, _mm512_movepi8_mask(x), _mm512_setzero_si512(), w);
        (_mm512_abs_epi8(x), signed_w)
    }

    /// One body, compiled twice: with `VPDPBUSD` where the CPU has VNNI, and with
    /// `maddubs` + `madd` where it does not (a separate function, so the compiler cannot
    /// use VNNI instructions on a CPU without them). Two blocks per 512-bit step: lanes
    /// 0-7 hold the first block's i32 partial sums, lanes 8-15 the second's.
    macro_rules! dot_pairs {
        ($name:ident, $features:literal, $ints:expr) => {
            #[target_feature(enable = $features)]
            pub unsafe fn $name(qw: &[i8], sw: &[f32], qx: &[i8], sx: &[f32]) -> f32 {
                let blocks = sw.len();
                let mut acc = [_mm512_setzero_ps(); 2];
                let mut b = 0;
                while b + 2 <= blocks {
                    let (ux, sw_) = operands(qw.as_ptr().add(b * BLOCK), qx.as_ptr().add(b * BLOCK));
                    let ints: __m512i = $ints(ux, sw_);
                    let scale = _mm512_mask_blend_ps(
                        0xFF00,
                        _mm512_set1_ps(sw[b] * sx[b]),
                        _mm512_set1_ps(sw[b + 1] * sx[b + 1]),
                    );
                    acc[(b / 2) & 1] = _mm512_fmadd_ps(_mm512_cvtepi32_ps(ints), scale, acc[(b / 2) & 1]);
                    b += 2;
                }
                let mut sum = _mm512_reduce_add_ps(_mm512_add_ps(acc[0], acc[1]));
                if b < blocks {
                    let ints = super::avx2::block(qw.as_ptr().add(b * BLOCK), qx.as_ptr().add(b * BLOCK));
                    let lanes: [i32; 8] = std::mem::transmute(ints);
                    sum += lanes.iter().sum::<i32>() as f32 * (sw[b] * sx[b]);
                }
                sum
            }
        };
    }

    dot_pairs!(dot, "avx512f,avx512bw,avx512vl,avx2,fma", |ux, sw| _mm512_madd_epi16(
        _mm512_maddubs_epi16(ux, sw),
        _mm512_set1_epi16(1)
    ));
    dot_pairs!(dot_vnni, "avx512f,avx512bw,avx512vl,avx512vnni,avx2,fma", |ux, sw| _mm512_dpbusd_epi32(
        _mm512_setzero_si512(),
        ux,
        sw
    ));
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kernels::testing::{available, random};

    fn quantized(n: usize, seed: u64) -> (Vec<i8>, Vec<f32>, Vec<f32>) {
        let v: Vec<f32> = random(n, seed).iter().map(|x| x * 3.0).collect();
        let (mut q, mut s) = (vec![0; n], vec![0.0; n / BLOCK]);
        quantize(&v, &mut q, &mut s);
        (q, s, v)
    }

    #[test]
    fn quantization_is_within_half_a_step_and_never_minus_128() {
        let (q, s, v) = quantized(32 * 40, 1);
        for (b, block) in v.chunks_exact(BLOCK).enumerate() {
            for (i, &x) in block.iter().enumerate() {
                let back = q[b * BLOCK + i] as f32 * s[b];
                assert!((back - x).abs() <= 0.5 * s[b] * 1.0001, "{x} -> {back}");
            }
        }
        assert!(q.iter().all(|&q| q != -128));
        let (mut zq, mut zs) = (vec![1; 32], vec![1.0; 1]);
        quantize(&[0.0; 32], &mut zq, &mut zs);
        assert!(zq.iter().all(|&q| q == 0) && zs[0] == 0.0);
    }

    #[test]
    fn every_path_matches_the_integer_reference() {
        for cpu in available() {
            for blocks in [0, 1, 2, 3, 7, 64, 129] {
                let n = blocks * BLOCK;
                let (qw, sw, _) = quantized(n, 2);
                let (mut qx, sx, _) = quantized(n, 3);
                if let Some(q) = qx.first_mut() {
                    *q = -127; // the sign trick at its edge
                }
                let exact: f64 = qw
                    .chunks_exact(BLOCK)
                    .zip(qx.chunks_exact(BLOCK))
                    .zip(sw.iter().zip(&sx))
                    .map(|((w, x), (a, b))| {
                        w.iter().zip(x).map(|(&w, &x)| i64::from(w) * i64::from(x)).sum::<i64>() as f64
                            * (*a as f64 * *b as f64)
                    })
                    .sum();
                let magnitude: f64 =
                    exact.abs() + sw.iter().zip(&sx).map(|(a, b)| (a * b) as f64 * 127.0 * 127.0).sum::<f64>();
                let got = dot(cpu, &qw, &sw, &qx, &sx) as f64;
                let tol = 4.0 * f64::from(f32::EPSILON) * ((blocks + 1) as f64).sqrt() * magnitude + 1e-30;
                assert!((got - exact).abs() <= tol, "{} blocks={blocks}: {got} vs {exact}", cpu.isa());
            }
        }
    }
}
