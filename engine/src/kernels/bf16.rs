//! bf16 weights: conversion and dot products against f32 or bf16 activations.
//!
//! bf16 is the top half of an f32, so widening is exact (a shift); narrowing rounds to
//! nearest even. Two dot products: bf16 weights × f32 activations, and bf16 × bf16
//! (`VDPBF16PS` from [`Isa::Avx512Bf16`] on; activations rounded to bf16 first).

use super::cpu::{Cpu, Isa};

/// Rounds f32 values to bf16 bit patterns (nearest even; NaN stays NaN).
pub fn from_f32(values: &[f32], out: &mut [u16]) {
    assert_eq!(values.len(), out.len());
    out.iter_mut().zip(values).for_each(|(o, &v)| *o = scalar::narrow(v));
}

/// Widens bf16 bit patterns to f32 (exact).
pub fn to_f32(bits: &[u16], out: &mut [f32]) {
    assert_eq!(bits.len(), out.len());
    out.iter_mut().zip(bits).for_each(|(o, &b)| *o = f32::from_bits(u32::from(b) << 16));
}

/// Σ w·x for bf16 weights `w` and f32 activations `x`, products exact in f32. The GEMV
/// path: it is memory bound, so the activations keep full precision.
pub fn dot_f32(cpu: Cpu, w: &[u16], x: &[f32]) -> f32 {
    assert_eq!(w.len(), x.len(), "bf16 dot of slices of different lengths");
    match cpu.isa() {
        Isa::Scalar => scalar::dot_f32(w, x),
        // SAFETY: the `Cpu` token proves the level's instructions exist.
        Isa::Avx2 => unsafe { avx2::dot_f32(w, x) },
        _ => unsafe { avx512::dot_f32(w, x) },
    }
}

/// Values per block of [`pair_order`]: 8 bf16 pairs, one 256-bit load.
pub const PAIR_BLOCK: usize = 16;

/// Whether [`dot_f32_paired`] is this level's faster bf16 × f32 product, so a matrix
/// product should put its activations in [`pair_order`] once and use it (AVX2; from
/// AVX-512 on, [`dot_f32`] widens 16 weights per zero-extension and already reads at the
/// memory's speed).
pub fn pairs_pay(cpu: Cpu) -> bool {
    cpu.isa() == Isa::Avx2
}

/// `x` in the order [`dot_f32_paired`] reads it: each whole block of [`PAIR_BLOCK`]
/// values as its 8 even-indexed values, then its 8 odd-indexed ones; the tail as it is.
///
/// ```
/// use spiral_engine::kernels::bf16;
/// let x: Vec<f32> = (0..18).map(|i| i as f32).collect();
/// let mut p = vec![0.0; 18];
/// bf16::pair_order(&x, &mut p);
/// assert_eq!(p[..9], [0.0, 2.0, 4.0, 6.0, 8.0, 10.0, 12.0, 14.0, 1.0]);
/// assert_eq!(p[16..], [16.0, 17.0]);
/// ```
pub fn pair_order(x: &[f32], out: &mut [f32]) {
    assert_eq!(x.len(), out.len());
    let whole = x.len() / PAIR_BLOCK * PAIR_BLOCK;
    for (o, b) in out.chunks_exact_mut(PAIR_BLOCK).zip(x.chunks_exact(PAIR_BLOCK)) {
        let (even, odd) = o.split_at_mut(PAIR_BLOCK / 2);
        for (j, pair) in b.chunks_exact(2).enumerate() {
            (even[j], odd[j]) = (pair[0], pair[1]);
        }
    }
    out[whole..].copy_from_slice(&x[whole..]);
}

/// Σ w·x, the sum [`dot_f32`] computes (in another order), with the activations given in
/// [`pair_order`] (`xp`), for matrix products that reorder them once for many rows. On AVX2 a 32-bit pair of
/// weights widens into two f32 vectors with an AND (the odd weight, already the top half)
/// and a shift (the even one), where [`dot_f32`] spends a zero-extension and a shift per 8
/// weights: half the shuffle and shift work, which is what bounds it on a core with
/// 128-bit vector units.
pub fn dot_f32_paired(cpu: Cpu, w: &[u16], xp: &[f32]) -> f32 {
    assert_eq!(w.len(), xp.len(), "bf16 dot of slices of different lengths");
    match cpu.isa() {
        Isa::Scalar => scalar::dot_f32_paired(w, xp),
        // SAFETY: every level above scalar has AVX2 and FMA (the `Cpu` token proves it).
        _ => unsafe { avx2::dot_f32_paired(w, xp) },
    }
}

/// Σ w·x with both sides bf16 (products exact in f32), with `VDPBF16PS` from
/// [`Isa::Avx512Bf16`] on. The path for compute-bound work whose activations are bf16.
pub fn dot_bf16(cpu: Cpu, w: &[u16], x: &[u16]) -> f32 {
    assert_eq!(w.len(), x.len(), "bf16 dot of slices of different lengths");
    match cpu.isa() {
        Isa::Scalar => scalar::dot_bf16(w, x),
        // SAFETY: the `Cpu` token proves the level's instructions exist.
        Isa::Avx2 => unsafe { avx2::dot_bf16(w, x) },
        Isa::Avx512 | Isa::Avx512Vnni => unsafe { avx512::dot_bf16(w, x) },
        Isa::Avx512Bf16 | Isa::Amx => unsafe { avx512bf16::dot(w, x) },
    }
}

pub(crate) mod scalar {
    pub fn widen(b: u16) -> f32 {
        f32::from_bits(u32::from(b) << 16)
    }

    /// f32 to bf16 bits, to nearest even, NaN kept NaN (quieted): what `half` computes, but
    /// without branches, so that loops over it vectorize.
    #[inline(always)]
    pub fn narrow(x: f32) -> u16 {
        let b = x.to_bits();
        // Adding 0x7FFF plus the kept part's lowest bit carries into it exactly when the
        // dropped half is above one half, or equal to it with an odd kept part.
        let rounded = b.wrapping_add(0x7FFF + ((b >> 16) & 1)) >> 16;
        let nan = b & 0x7FFF_FFFF > 0x7F80_0000;
        (if nan { (b >> 16) | 0x40 } else { rounded }) as u16
    }

    pub fn dot_f32(w: &[u16], x: &[f32]) -> f32 {
        w.iter().zip(x).map(|(&w, &x)| widen(w) * x).sum()
    }

    pub fn dot_bf16(w: &[u16], x: &[u16]) -> f32 {
        w.iter().zip(x).map(|(&w, &x)| widen(w) * widen(x)).sum()
    }

    /// [`super::dot_f32_paired`]: weight 2j of a block meets activation j, weight 2j + 1
    /// activation 8 + j.
    pub fn dot_f32_paired(w: &[u16], xp: &[f32]) -> f32 {
        let block = super::PAIR_BLOCK;
        let whole = w.len() / block * block;
        let blocks = w[..whole].chunks_exact(block).zip(xp.chunks_exact(block));
        let paired: f32 = blocks
            .flat_map(|(w, x)| {
                (0..block / 2).map(move |j| widen(w[2 * j]) * x[j] + widen(w[2 * j + 1]) * x[block / 2 + j])
            })
            .sum();
        paired + dot_f32(&w[whole..], &xp[whole..])
    }
}

#[cfg(target_arch = "x86_64")]
mod avx2 {
    use std::arch::x86_64::*;

    use crate::kernels::vector::avx2::reduce;

    #[target_feature(enable = "avx2,fma")]
    unsafe fn widen8(p: *const u16) -> __m256 {
        let w = _mm256_cvtepu16_epi32(_mm_loadu_si128(p as *const __m128i));
        _mm256_castsi256_ps(_mm256_slli_epi32(w, 16))
    }

    #[target_feature(enable = "avx2,fma")]
    pub unsafe fn dot_f32(w: &[u16], x: &[f32]) -> f32 {
        let (pw, px) = (w.as_ptr(), x.as_ptr());
        reduce(
            w.len(),
            |acc, i| _mm256_fmadd_ps(widen8(pw.add(i)), _mm256_loadu_ps(px.add(i)), acc),
            |i| super::scalar::widen(w[i]) * x[i],
        )
    }

    /// Four chains; each 256-bit load of weights feeds two of them (even and odd weights).
    #[target_feature(enable = "avx2,fma")]
    pub unsafe fn dot_f32_paired(w: &[u16], xp: &[f32]) -> f32 {
        let n = w.len();
        let (pw, px) = (w.as_ptr(), xp.as_ptr());
        let top = _mm256_set1_epi32(0xFFFF_0000u32 as i32);
        // Block i: its even weights times xp[i..i + 8], its odd ones times xp[i + 8..i + 16].
        let block = |i: usize, even: &mut __m256, odd: &mut __m256| {
            let pairs = _mm256_loadu_si256(pw.add(i) as *const __m256i);
            let (e, o) = (_mm256_slli_epi32(pairs, 16), _mm256_and_si256(pairs, top));
            *even = _mm256_fmadd_ps(_mm256_castsi256_ps(e), _mm256_loadu_ps(px.add(i)), *even);
            *odd = _mm256_fmadd_ps(_mm256_castsi256_ps(o), _mm256_loadu_ps(px.add(i + 8)), *odd);
        };
        let mut acc = [_mm256_setzero_ps(); 4];
        let mut i = 0;
        while i + 32 <= n {
            let [a0, a1, a2, a3] = &mut acc;
            block(i, a0, a1);
            block(i + 16, a2, a3);
            i += 32;
        }
        if i + 16 <= n {
            let [a0, a1, ..] = &mut acc;
            block(i, a0, a1);
            i += 16;
        }
        let sum = _mm256_add_ps(_mm256_add_ps(acc[0], acc[1]), _mm256_add_ps(acc[2], acc[3]));
        crate::kernels::vector::avx2::hsum(sum) + super::scalar::dot_f32(&w[i..], &xp[i..])
    }

    #[target_feature(enable = "avx2,fma")]
    pub unsafe fn dot_bf16(w: &[u16], x: &[u16]) -> f32 {
        let (pw, px) = (w.as_ptr(), x.as_ptr());
        reduce(
            w.len(),
            |acc, i| _mm256_fmadd_ps(widen8(pw.add(i)), widen8(px.add(i)), acc),
            |i| super::scalar::widen(w[i]) * super::scalar::widen(x[i]),
        )
    }
}

#[cfg(target_arch = "x86_64")]
mod avx512 {
    use std::arch::x86_64::*;

    use crate::kernels::vector::avx512::reduce;

    #[target_feature(enable = "avx512f,avx512bw,avx512vl")]
    unsafe fn widen16(p: *const u16, m: __mmask16) -> __m512 {
        let w = _mm512_cvtepu16_epi32(_mm256_maskz_loadu_epi16(m, p as *const i16));
        _mm512_castsi512_ps(_mm512_slli_epi32(w, 16))
    }

    #[target_feature(enable = "avx512f,avx512bw,avx512vl")]
    pub unsafe fn dot_f32(w: &[u16], x: &[f32]) -> f32 {
        let (pw, px) = (w.as_ptr(), x.as_ptr());
        reduce(w.len(), |acc, i, m| _mm512_fmadd_ps(widen16(pw.add(i), m), _mm512_maskz_loadu_ps(m, px.add(i)), acc))
    }

    #[target_feature(enable = "avx512f,avx512bw,avx512vl")]
    pub unsafe fn dot_bf16(w: &[u16], x: &[u16]) -> f32 {
        let (pw, px) = (w.as_ptr(), x.as_ptr());
        reduce(w.len(), |acc, i, m| _mm512_fmadd_ps(widen16(pw.add(i), m), widen16(px.add(i), m), acc))
    }
}

#[cfg(target_arch = "x86_64")]
mod avx512bf16 {
    use std::arch::x86_64::*;

    /// 32 bf16 pairs per instruction, four accumulators, a masked step for the tail.
    #[target_feature(enable = "avx512f,avx512bw,avx512bf16")]
    pub unsafe fn dot(w: &[u16], x: &[u16]) -> f32 {
        let n = w.len();
        let (pw, px) = (w.as_ptr() as *const i16, x.as_ptr() as *const i16);
        let load = |p: *const i16, m: __mmask32| -> __m512bh {
            // SAFETY: a 512-bit integer vector and a vector of 32 bf16 have the same layout.
            unsafe { std::mem::transmute(_mm512_maskz_loadu_epi16(m, p)) }
        };
        let mut acc = [_mm512_setzero_ps(); 4];
        let mut i = 0;
        while i + 128 <= n {
            for (k, a) in acc.iter_mut().enumerate() {
                let j = i + 32 * k;
                *a = _mm512_dpbf16_ps(*a, load(pw.add(j), u32::MAX), load(px.add(j), u32::MAX));
            }
            i += 128;
        }
        while i < n {
            let m = if n - i >= 32 { u32::MAX } else { (1u32 << (n - i)) - 1 };
            acc[1] = _mm512_dpbf16_ps(acc[1], load(pw.add(i), m), load(px.add(i), m));
            i += 32;
        }
        _mm512_reduce_add_ps(_mm512_add_ps(_mm512_add_ps(acc[0], acc[1]), _mm512_add_ps(acc[2], acc[3])))
    }
}

#[cfg(test)]
mod tests {
    use half::bf16;

    use super::*;
    use crate::kernels::testing::{available, lengths, random};

    fn bits(values: &[f32]) -> Vec<u16> {
        let mut out = vec![0; values.len()];
        from_f32(values, &mut out);
        out
    }

    #[test]
    fn conversion_rounds_to_nearest_even_and_widens_exactly() {
        // 1 + 2^-8 is halfway between two bf16 values: it rounds to the even one (1.0).
        let v = [1.0 + 1.0 / 256.0, 1.0 + 3.0 / 256.0, -0.0, f32::INFINITY, 3.0e38];
        let b = bits(&v);
        let mut back = vec![0.0; v.len()];
        to_f32(&b, &mut back);
        assert_eq!(back[..4], [1.0, 1.0 + 4.0 / 256.0, -0.0, f32::INFINITY]);
        assert!(back[4].is_finite() && (back[4] - 3.0e38).abs() < 3.0e38 / 128.0);
        assert!(scalar::widen(bits(&[f32::NAN])[0]).is_nan());
    }

    #[test]
    fn narrowing_matches_half_bit_for_bit() {
        // Every 251st bit pattern, then both sides of each rounding boundary near 1.
        let patterns = (0..=u32::MAX).step_by(251).chain((0x3F80_7FF0..0x3F80_8010).chain(0x3F81_7FF0..0x3F81_8010));
        for b in patterns.chain([0x7F7F_FFFF, 0xFF7F_FFFF, 0x7F80_0000, 0x7F80_0001, 0xFFFF_FFFF, 0x0000_8000]) {
            let x = f32::from_bits(b);
            assert_eq!(scalar::narrow(x), bf16::from_f32(x).to_bits(), "{b:#010x}");
        }
    }

    #[test]
    fn every_path_matches_the_reference() {
        for cpu in available() {
            for n in lengths() {
                for offset in [0, 1] {
                    let w = &bits(&random(n + offset, 7))[offset..];
                    let x = &random(n + offset, 8)[offset..];
                    let exact: f64 = w.iter().zip(x).map(|(&w, &x)| scalar::widen(w) as f64 * x as f64).sum();
                    let magnitude: f64 =
                        w.iter().zip(x).map(|(&w, &x)| (scalar::widen(w) as f64 * x as f64).abs()).sum();
                    let tol = 4.0 * f64::from(f32::EPSILON) * ((n + 1) as f64).sqrt() * magnitude + 1e-30;
                    let got = dot_f32(cpu, w, x) as f64;
                    assert!((got - exact).abs() <= tol, "{} bf16*f32 n={n}: {got} vs {exact}", cpu.isa());
                    let mut xp = vec![0.0; n];
                    pair_order(x, &mut xp);
                    let got = dot_f32_paired(cpu, w, &xp) as f64;
                    assert!((got - exact).abs() <= tol, "{} bf16*f32 paired n={n}: {got} vs {exact}", cpu.isa());

                    // Against the bf16-rounded reference: the activations are rounded first.
                    let xb = bits(x);
                    let exact: f64 =
                        w.iter().zip(&xb).map(|(&w, &x)| scalar::widen(w) as f64 * scalar::widen(x) as f64).sum();
                    let got = dot_bf16(cpu, w, &xb) as f64;
                    assert!((got - exact).abs() <= tol, "{} bf16*bf16 n={n}: {got} vs {exact}", cpu.isa());
                }
            }
        }
    }
}
