//! Palette (vector-quantized) weight rows and their products by table lookup.
//!
//! A row is cut into groups of [`DIM`] values; each group is the sum over stages of one
//! centroid per stage (residual VQ), scaled by the row's own scale, and stored as one u8
//! index per stage. The product with a vector `x` never rebuilds the weights: a table of
//! `x`'s groups against every centroid is made once per product ([`table`]), and each row's
//! dot is then one lookup per group and stage ([`dot`]).
//!
//! Layouts: codebooks `[stages, DIM, CENTROIDS]` (dimension-major, so the table is a plain
//! multiply-add over centroids); a row's indices `[stages, groups]`; the table
//! `[stages, groups, CENTROIDS]`.

use super::cpu::{Cpu, Isa};

/// Values per group (one index per group and stage).
pub const DIM: usize = 4;
/// Centroids per stage: u8 indices.
pub const CENTROIDS: usize = 256;

/// The table of partial dot products of `x` (a multiple of [`DIM`] long) with every
/// centroid of every stage of `codebooks`, into `out` (resized).
pub fn table(x: &[f32], codebooks: &[f32], out: &mut Vec<f32>) {
    let stages = codebooks.len() / (DIM * CENTROIDS);
    assert_eq!(codebooks.len(), stages * DIM * CENTROIDS, "palette codebooks are [stages, {DIM}, {CENTROIDS}]");
    let groups = x.len() / DIM;
    out.resize(stages * groups * CENTROIDS, 0.0);
    for (s, book) in codebooks.chunks_exact(DIM * CENTROIDS).enumerate() {
        let (c0, rest) = book.split_at(CENTROIDS);
        let (c1, rest) = rest.split_at(CENTROIDS);
        let (c2, c3) = rest.split_at(CENTROIDS);
        for (g, xs) in x.chunks_exact(DIM).enumerate() {
            let t = &mut out[(s * groups + g) * CENTROIDS..][..CENTROIDS];
            for c in 0..CENTROIDS {
                t[c] = xs[0] * c0[c] + xs[1] * c1[c] + xs[2] * c2[c] + xs[3] * c3[c];
            }
        }
    }
}

/// Σ over groups and stages of the table entry each index picks: a row's dot with the
/// vector the table was made from (before the row's scale).
pub fn dot(cpu: Cpu, indices: &[u8], table: &[f32]) -> f32 {
    assert_eq!(table.len(), indices.len() * CENTROIDS, "a palette row against a table of another width");
    match cpu.isa() {
        Isa::Scalar => scalar::dot(indices, table),
        // SAFETY: the `Cpu` token proves the level's instructions exist.
        Isa::Avx2 => unsafe { avx2::dot(indices, table) },
        _ => unsafe { avx512::dot(indices, table) },
    }
}

mod scalar {
    use super::CENTROIDS;

    pub fn dot(indices: &[u8], table: &[f32]) -> f32 {
        indices.iter().enumerate().map(|(i, &c)| table[i * CENTROIDS + c as usize]).sum()
    }
}

#[cfg(target_arch = "x86_64")]
mod avx2 {
    use std::arch::x86_64::*;

    use super::CENTROIDS;

    /// Eight lookups per gather: offsets `i·256 + index`.
    #[target_feature(enable = "avx2,fma")]
    pub unsafe fn dot(indices: &[u8], table: &[f32]) -> f32 {
        let mut acc = [_mm256_setzero_ps(); 2];
        let lanes = _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7);
        let mut i = 0;
        while i + 8 <= indices.len() {
            let idx = _mm256_cvtepu8_epi32(_mm_loadl_epi64(indices.as_ptr().add(i) as *const __m128i));
            let rows = _mm256_add_epi32(lanes, _mm256_set1_epi32(i as i32));
            let offsets = _mm256_add_epi32(_mm256_slli_epi32(rows, 8), idx);
            acc[(i / 8) & 1] = _mm256_add_ps(acc[(i / 8) & 1], _mm256_i32gather_ps::<4>(table.as_ptr(), offsets));
            i += 8;
        }
        let mut sum = crate::kernels::vector::avx2::hsum(_mm256_add_ps(acc[0], acc[1]));
        sum += indices[i..].iter().enumerate().map(|(j, &c)| table[(i + j) * CENTROIDS + c as usize]).sum::<f32>();
        sum
    }
}

#[cfg(target_arch = "x86_64")]
mod avx512 {
    use std::arch::x86_64::*;

    use super::CENTROIDS;

    /// Sixteen lookups per gather: offsets `i·256 + index`.
    #[target_feature(enable = "avx512f,avx2,fma")]
    pub unsafe fn dot(indices: &[u8], table: &[f32]) -> f32 {
        let mut acc = [_mm512_setzero_ps(); 2];
        let lanes = _mm512_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15);
        let mut i = 0;
        while i + 16 <= indices.len() {
            let idx = _mm512_cvtepu8_epi32(_mm_loadu_si128(indices.as_ptr().add(i) as *const __m128i));
            let rows = _mm512_add_epi32(lanes, _mm512_set1_epi32(i as i32));
            let offsets = _mm512_add_epi32(_mm512_slli_epi32(rows, 8), idx);
            let picked = _mm512_i32gather_ps::<4>(offsets, table.as_ptr());
            acc[(i / 16) & 1] = _mm512_add_ps(acc[(i / 16) & 1], picked);
            i += 16;
        }
        let mut sum = _mm512_reduce_add_ps(_mm512_add_ps(acc[0], acc[1]));
        sum += indices[i..].iter().enumerate().map(|(j, &c)| table[(i + j) * CENTROIDS + c as usize]).sum::<f32>();
        sum
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kernels::testing::{available, random};

    #[test]
    fn lookups_equal_the_reconstructed_dot_on_every_path() {
        for (stages, groups) in [(1, 0), (1, 3), (2, 8), (2, 17), (1, 64), (2, 257)] {
            let books = random(stages * DIM * CENTROIDS, 1);
            let x = random(groups * DIM, 2);
            let indices: Vec<u8> = (0..stages * groups).map(|i| (i * 97 % 251) as u8).collect();
            let mut t = Vec::new();
            table(&x, &books, &mut t);
            // The row the indices stand for, rebuilt, against x in f64.
            let mut exact = 0.0f64;
            let mut magnitude = 0.0f64;
            for s in 0..stages {
                for g in 0..groups {
                    let c = indices[s * groups + g] as usize;
                    for j in 0..DIM {
                        let w = books[(s * DIM + j) * CENTROIDS + c] as f64;
                        exact += w * x[g * DIM + j] as f64;
                        magnitude += (w * x[g * DIM + j] as f64).abs();
                    }
                }
            }
            for cpu in available() {
                let got = dot(cpu, &indices, &t) as f64;
                assert!(
                    (got - exact).abs() <= 1e-5 * magnitude + 1e-6,
                    "{} {stages}x{groups}: {got} vs {exact}",
                    cpu.isa()
                );
            }
        }
    }
}
