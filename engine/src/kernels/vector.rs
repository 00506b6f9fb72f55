//! Vector primitives: dot product, fused squared L2 distance, axpy, nearest centroid.
//!
//! Each has a scalar reference and AVX2 / AVX-512 paths with four independent
//! accumulators (hiding FMA latency); AVX-512 handles the tail with masked loads, AVX2 with
//! a scalar loop. None allocates.

use super::cpu::{Cpu, Isa};

/// Σ a·b.
pub fn dot(cpu: Cpu, a: &[f32], b: &[f32]) -> f32 {
    assert_eq!(a.len(), b.len(), "dot of slices of different lengths");
    match cpu.isa() {
        Isa::Scalar => scalar::dot(a, b),
        // SAFETY: the `Cpu` token proves the level's instructions exist.
        Isa::Avx2 => unsafe { avx2::dot(a, b) },
        _ => unsafe { avx512::dot(a, b) },
    }
}

/// Σ (a-b)², in one pass, without a square root (orderings of distances are the same).
pub fn l2_sq(cpu: Cpu, a: &[f32], b: &[f32]) -> f32 {
    assert_eq!(a.len(), b.len(), "distance between slices of different lengths");
    match cpu.isa() {
        Isa::Scalar => scalar::l2_sq(a, b),
        // SAFETY: as above.
        Isa::Avx2 => unsafe { avx2::l2_sq(a, b) },
        _ => unsafe { avx512::l2_sq(a, b) },
    }
}

/// y += alpha·x.
pub fn axpy(cpu: Cpu, alpha: f32, x: &[f32], y: &mut [f32]) {
    assert_eq!(x.len(), y.len(), "axpy of slices of different lengths");
    match cpu.isa() {
        Isa::Scalar => scalar::axpy(alpha, x, y),
        // SAFETY: as above.
        Isa::Avx2 => unsafe { avx2::axpy(alpha, x, y) },
        _ => unsafe { avx512::axpy(alpha, x, y) },
    }
}

/// The centroid nearest to `x` among the rows of `centroids` (row-major, `x.len()` wide)
/// and its squared distance; `None` when there are none. One distance per centroid.
pub fn nearest(cpu: Cpu, x: &[f32], centroids: &[f32]) -> Option<(usize, f32)> {
    if x.is_empty() {
        return (!centroids.is_empty()).then_some((0, 0.0));
    }
    assert_eq!(centroids.len() % x.len(), 0, "centroid table is not a whole number of rows");
    let mut best: Option<(usize, f32)> = None;
    for (i, c) in centroids.chunks_exact(x.len()).enumerate() {
        let d = l2_sq(cpu, x, c);
        if best.is_none_or(|(_, b)| d < b) {
            best = Some((i, d));
        }
    }
    best
}

pub(crate) mod scalar {
    pub fn dot(a: &[f32], b: &[f32]) -> f32 {
        a.iter().zip(b).map(|(x, y)| x * y).sum()
    }

    pub fn l2_sq(a: &[f32], b: &[f32]) -> f32 {
        a.iter().zip(b).map(|(x, y)| (x - y) * (x - y)).sum()
    }

    pub fn axpy(alpha: f32, x: &[f32], y: &mut [f32]) {
        y.iter_mut().zip(x).for_each(|(y, x)| *y += alpha * x);
    }
}

#[cfg(target_arch = "x86_64")]
pub(crate) mod avx2 {
    use std::arch::x86_64::*;

    pub(crate) const W: usize = 8;

    /// The first `rem` (< 8) lanes set.
    #[target_feature(enable = "avx2,fma")]
    pub(crate) unsafe fn lanes(rem: usize) -> __m256i {
        _mm256_cmpgt_epi32(_mm256_set1_epi32(rem as i32), _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7))
    }

    /// The 8 floats at `p`, or where only `rem` < 8 remain, those and zeros: the masked load
    /// reads nothing past the slice.
    #[target_feature(enable = "avx2,fma")]
    #[inline]
    pub(crate) unsafe fn load(p: *const f32, rem: usize) -> __m256 {
        if rem >= W {
            _mm256_loadu_ps(p)
        } else {
            _mm256_maskload_ps(p, lanes(rem))
        }
    }

    /// Stores the first `min(rem, 8)` lanes of `v` at `p`.
    #[target_feature(enable = "avx2,fma")]
    #[inline]
    pub(crate) unsafe fn store(p: *mut f32, rem: usize, v: __m256) {
        if rem >= W {
            _mm256_storeu_ps(p, v)
        } else {
            _mm256_maskstore_ps(p, lanes(rem), v)
        }
    }

    #[target_feature(enable = "avx2,fma")]
    pub(crate) unsafe fn hsum(v: __m256) -> f32 {
        let s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
        let s = _mm_add_ps(s, _mm_movehl_ps(s, s));
        let s = _mm_add_ss(s, _mm_shuffle_ps(s, s, 1));
        _mm_cvtss_f32(s)
    }

    /// Four accumulators over 32 floats per step; `step(acc, i)` adds elements i..i+8 and
    /// `tail(i)` one element past the last whole vector.
    #[target_feature(enable = "avx2,fma")]
    pub(crate) unsafe fn reduce(n: usize, step: impl Fn(__m256, usize) -> __m256, tail: impl Fn(usize) -> f32) -> f32 {
        let mut acc = [_mm256_setzero_ps(); 4];
        let mut i = 0;
        while i + 32 <= n {
            for (k, a) in acc.iter_mut().enumerate() {
                *a = step(*a, i + 8 * k);
            }
            i += 32;
        }
        while i + 8 <= n {
            acc[0] = step(acc[0], i);
            i += 8;
        }
        let sum = _mm256_add_ps(_mm256_add_ps(acc[0], acc[1]), _mm256_add_ps(acc[2], acc[3]));
        hsum(sum) + (i..n).map(tail).sum::<f32>()
    }

    #[target_feature(enable = "avx2,fma")]
    pub unsafe fn dot(a: &[f32], b: &[f32]) -> f32 {
        let (pa, pb) = (a.as_ptr(), b.as_ptr());
        reduce(
            a.len(),
            |acc, i| _mm256_fmadd_ps(_mm256_loadu_ps(pa.add(i)), _mm256_loadu_ps(pb.add(i)), acc),
            |i| a[i] * b[i],
        )
    }

    #[target_feature(enable = "avx2,fma")]
    pub unsafe fn l2_sq(a: &[f32], b: &[f32]) -> f32 {
        let (pa, pb) = (a.as_ptr(), b.as_ptr());
        reduce(
            a.len(),
            |acc, i| {
                let d = _mm256_sub_ps(_mm256_loadu_ps(pa.add(i)), _mm256_loadu_ps(pb.add(i)));
                _mm256_fmadd_ps(d, d, acc)
            },
            |i| (a[i] - b[i]) * (a[i] - b[i]),
        )
    }

    /// The tail takes a masked step, not a scalar loop, so every value gets the same fused
    /// multiply-add wherever it sits in the slice: streamed chunks match whole signals.
    #[target_feature(enable = "avx2,fma")]
    pub unsafe fn axpy(alpha: f32, x: &[f32], y: &mut [f32]) {
        let n = x.len();
        let va = _mm256_set1_ps(alpha);
        let (px, py) = (x.as_ptr(), y.as_mut_ptr());
        for i in (0..n).step_by(W) {
            store(py.add(i), n - i, _mm256_fmadd_ps(va, load(px.add(i), n - i), load(py.add(i), n - i)));
        }
    }
}

#[cfg(target_arch = "x86_64")]
pub(crate) mod avx512 {
    use std::arch::x86_64::*;

    /// Mask of the first `n` (< 16) lanes.
    #[inline(always)]
    pub(crate) fn tail_mask(n: usize) -> __mmask16 {
        ((1u32 << n) - 1) as __mmask16
    }

    pub(crate) const W: usize = 16;

    /// All 16 lanes, or the first `rem` where fewer remain.
    #[inline(always)]
    pub(crate) fn lanes(rem: usize) -> __mmask16 {
        if rem >= W {
            0xFFFF
        } else {
            tail_mask(rem)
        }
    }

    /// The 16 floats at `p`, or where only `rem` < 16 remain, those and zeros.
    #[target_feature(enable = "avx512f,avx512dq")]
    #[inline]
    pub(crate) unsafe fn load(p: *const f32, rem: usize) -> __m512 {
        _mm512_maskz_loadu_ps(lanes(rem), p)
    }

    /// Stores the first `min(rem, 16)` lanes of `v` at `p`.
    #[target_feature(enable = "avx512f,avx512dq")]
    #[inline]
    pub(crate) unsafe fn store(p: *mut f32, rem: usize, v: __m512) {
        _mm512_mask_storeu_ps(p, lanes(rem), v)
    }

    /// Four accumulators over 64 floats per step, then single vectors, then one masked
    /// step for the tail. `step(acc, i, mask)` adds elements i..i+16 under `mask`.
    /// Compiled with the whole [`Isa::Avx512`](crate::kernels::Isa) feature set so that
    /// `step` closures using any of it inline here instead of becoming calls.
    #[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512dq")]
    pub(crate) unsafe fn reduce(n: usize, step: impl Fn(__m512, usize, __mmask16) -> __m512) -> f32 {
        let mut acc = [_mm512_setzero_ps(); 4];
        let mut i = 0;
        while i + 64 <= n {
            for (k, a) in acc.iter_mut().enumerate() {
                *a = step(*a, i + 16 * k, 0xFFFF);
            }
            i += 64;
        }
        while i + 16 <= n {
            acc[0] = step(acc[0], i, 0xFFFF);
            i += 16;
        }
        if i < n {
            acc[1] = step(acc[1], i, tail_mask(n - i));
        }
        _mm512_reduce_add_ps(_mm512_add_ps(_mm512_add_ps(acc[0], acc[1]), _mm512_add_ps(acc[2], acc[3])))
    }

    #[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512dq")]
    pub unsafe fn dot(a: &[f32], b: &[f32]) -> f32 {
        let (pa, pb) = (a.as_ptr(), b.as_ptr());
        reduce(a.len(), |acc, i, m| {
            _mm512_fmadd_ps(_mm512_maskz_loadu_ps(m, pa.add(i)), _mm512_maskz_loadu_ps(m, pb.add(i)), acc)
        })
    }

    #[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512dq")]
    pub unsafe fn l2_sq(a: &[f32], b: &[f32]) -> f32 {
        let (pa, pb) = (a.as_ptr(), b.as_ptr());
        reduce(a.len(), |acc, i, m| {
            let d = _mm512_sub_ps(_mm512_maskz_loadu_ps(m, pa.add(i)), _mm512_maskz_loadu_ps(m, pb.add(i)));
            _mm512_fmadd_ps(d, d, acc)
        })
    }

    #[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512dq")]
    pub unsafe fn axpy(alpha: f32, x: &[f32], y: &mut [f32]) {
        let n = x.len();
        let va = _mm512_set1_ps(alpha);
        let (px, py) = (x.as_ptr(), y.as_mut_ptr());
        let mut i = 0;
        while i < n {
            let m = lanes(n - i);
            let r = _mm512_fmadd_ps(va, _mm512_maskz_loadu_ps(m, px.add(i)), _mm512_maskz_loadu_ps(m, py.add(i)));
            _mm512_mask_storeu_ps(py.add(i), m, r);
            i += 16;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kernels::testing::{available, lengths, random};

    /// Error bound for an f32 sum of `n` terms whose magnitudes add up to `magnitude`:
    /// rounding errors of random sign grow with the square root of the count.
    fn bound(n: usize, magnitude: f64) -> f64 {
        4.0 * f64::from(f32::EPSILON) * ((n + 1) as f64).sqrt() * magnitude + 1e-30
    }

    #[test]
    fn every_path_matches_the_reference() {
        for cpu in available() {
            for n in lengths() {
                // Offsets make the slices start at every alignment.
                for offset in [0, 1, 3] {
                    let a = &random(n + offset, 1)[offset..];
                    let b = &random(n + offset, 2)[offset..];
                    let exact: f64 = a.iter().zip(b).map(|(&x, &y)| x as f64 * y as f64).sum();
                    let got = dot(cpu, a, b) as f64;
                    let tol = bound(n, a.iter().zip(b).map(|(&x, &y)| (x as f64 * y as f64).abs()).sum());
                    assert!((got - exact).abs() <= tol, "{} dot n={n}: {got} vs {exact}", cpu.isa());

                    let exact: f64 = a.iter().zip(b).map(|(&x, &y)| (x as f64 - y as f64).powi(2)).sum();
                    let got = l2_sq(cpu, a, b) as f64;
                    assert!((got - exact).abs() <= bound(n, exact), "{} l2 n={n}", cpu.isa());

                    let mut y = b.to_vec();
                    axpy(cpu, 0.75, a, &mut y);
                    let mut reference = b.to_vec();
                    scalar::axpy(0.75, a, &mut reference);
                    for (g, r) in y.iter().zip(&reference) {
                        // One rounding with FMA, two without: at most an ulp apart.
                        assert!((g - r).abs() <= 1e-6 * (1.0 + r.abs()), "{} axpy n={n}", cpu.isa());
                    }
                }
            }
        }
    }

    #[test]
    fn nearest_finds_the_closest_centroid_once_each() {
        for cpu in available() {
            for d in [1, 7, 16, 33, 128] {
                let centroids = random(d * 50, 3);
                let mut x = centroids[d * 17..d * 18].to_vec();
                x.iter_mut().for_each(|v| *v += 1e-3);
                let (i, dist) = nearest(cpu, &x, &centroids).unwrap();
                assert_eq!(i, 17, "{} d={d}", cpu.isa());
                assert!(dist < 1e-4 * d as f32);
            }
            assert_eq!(nearest(cpu, &[1.0, 2.0], &[]), None);
        }
    }
}
