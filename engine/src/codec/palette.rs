//! The palette codec: residual vector quantization of each row's direction, with the row's
//! amplitude kept apart ([`kernels::palette`](crate::kernels::palette) holds the layout and
//! the table-lookup product).
//!
//! Each row is divided by its RMS (the amplitude, one f32 per row; the brief's lesson:
//! code direction and amplitude separately), cut into groups of [`DIM`] values, and each
//! group is coded by [`STAGES`] u8 indices: the first stage's nearest centroid, then the
//! nearest centroid of the second stage to what the first left over. A stage's 256
//! centroids are learned per tensor on a sample of its groups: furthest-point
//! initialization (each new centroid the sample farthest from those chosen, as CLAM seeds
//! its clusters) refined by k-means, every distance the fused squared L2 and every
//! assignment one distance per centroid ([`vector::nearest`]). Two stages of 8 bits per 4
//! values: 4 bits per weight, plus 8 KiB of codebooks per tensor and 4 bytes per row.

use rayon::prelude::*;

use crate::checkpoint::{Data, Storage, Weight};
use crate::kernels::palette::{CENTROIDS, DIM};
use crate::kernels::{vector, Cpu};

/// Residual stages (indices per group).
pub const STAGES: usize = 2;
/// Groups a stage's centroids are learned on, at most.
const SAMPLE: usize = 8_192;
/// k-means refinement passes.
const PASSES: usize = 6;

/// Bytes a `rows` × `cols` palette takes: indices, codebooks and row scales.
pub fn bytes(rows: usize, cols: usize) -> usize {
    rows * STAGES * cols / DIM + 4 * (STAGES * DIM * CENTROIDS + rows)
}

/// `w` as a palette, or `None` if it is empty or its rows are not whole groups.
pub fn encode(w: &Weight) -> Option<Weight> {
    let (rows, cols) = (w.rows(), w.cols());
    if !cols.is_multiple_of(DIM) || cols == 0 || rows == 0 {
        return None;
    }
    let cpu = Cpu::best();
    let groups = cols / DIM;
    let mut scales = vec![0.0f32; rows];
    let mut residual = vec![0.0f32; rows * cols];
    residual.par_chunks_mut(cols).zip(scales.par_iter_mut()).enumerate().for_each(|(r, (row, scale))| {
        w.row(r, row);
        let rms = (row.iter().map(|v| v * v).sum::<f32>() / cols as f32).sqrt();
        *scale = rms;
        if rms > 0.0 {
            row.iter_mut().for_each(|v| *v /= rms);
        }
    });
    let mut codebooks = vec![0.0f32; STAGES * DIM * CENTROIDS];
    let mut indices = vec![0u8; rows * STAGES * groups];
    for (s, book) in codebooks.chunks_exact_mut(DIM * CENTROIDS).enumerate() {
        let centroids = learn(cpu, &residual);
        assert!(centroids.len() / DIM <= CENTROIDS, "a palette stage indexes at most {CENTROIDS} centroids with u8");
        // Dimension-major, as the lookup table wants it; unused centroids stay zero.
        for (c, centroid) in centroids.chunks_exact(DIM).enumerate() {
            centroid.iter().enumerate().for_each(|(j, &v)| book[j * CENTROIDS + c] = v);
        }
        residual.par_chunks_mut(cols).zip(indices.par_chunks_mut(STAGES * groups)).for_each(|(row, idx)| {
            for (g, group) in row.chunks_exact_mut(DIM).enumerate() {
                let (c, _) = vector::nearest(cpu, group, &centroids).expect("at least one centroid");
                idx[s * groups + g] = c as u8;
                group.iter_mut().zip(&centroids[c * DIM..][..DIM]).for_each(|(v, m)| *v -= m);
            }
        });
    }
    let data = Data::Palette {
        codebooks: Storage::Owned(codebooks),
        scales: Storage::Owned(scales),
        indices: Storage::Owned(indices),
    };
    Some(Weight::new(rows, cols, data).expect("a palette of rows × cols"))
}

/// Up to [`CENTROIDS`] centroids (row-major, `DIM` wide) for the groups of `values`.
fn learn(cpu: Cpu, values: &[f32]) -> Vec<f32> {
    let all = values.len() / DIM;
    let step = all.div_ceil(SAMPLE).max(1);
    let sample: Vec<&[f32]> = values.chunks_exact(DIM).step_by(step).collect();
    let k = CENTROIDS.min(sample.len());
    // Furthest-point seeds: start from the group of largest norm, then always the sample
    // farthest from every centroid chosen so far.
    let first = (0..sample.len()).max_by(|&a, &b| norm(sample[a]).total_cmp(&norm(sample[b]))).unwrap_or(0);
    let mut centroids: Vec<f32> = sample[first].to_vec();
    let mut nearest: Vec<f32> = sample.iter().map(|v| vector::l2_sq(cpu, v, sample[first])).collect();
    while centroids.len() / DIM < k {
        let far = (0..sample.len()).max_by(|&a, &b| nearest[a].total_cmp(&nearest[b])).expect("a sample");
        if nearest[far] == 0.0 {
            break; // fewer distinct groups than centroids
        }
        let chosen = sample[far].to_vec();
        nearest.iter_mut().zip(&sample).for_each(|(d, v)| *d = d.min(vector::l2_sq(cpu, v, &chosen)));
        centroids.extend(chosen);
    }
    // k-means: each sample to its nearest centroid, each centroid to its members' mean (an
    // empty cluster keeps its place).
    let count = centroids.len() / DIM;
    for _ in 0..PASSES {
        let mut sums = vec![0.0f64; count * DIM];
        let mut members = vec![0usize; count];
        let nearest: Vec<usize> =
            sample.par_iter().map(|v| vector::nearest(cpu, v, &centroids).expect("at least one centroid").0).collect();
        for (v, &c) in sample.iter().zip(&nearest) {
            members[c] += 1;
            sums[c * DIM..][..DIM].iter_mut().zip(v.iter()).for_each(|(s, &x)| *s += f64::from(x));
        }
        for ((centroid, sum), &n) in centroids.chunks_exact_mut(DIM).zip(sums.chunks_exact(DIM)).zip(&members) {
            if n > 0 {
                centroid.iter_mut().zip(sum).for_each(|(c, s)| *c = (s / n as f64) as f32);
            }
        }
    }
    centroids
}

fn norm(v: &[f32]) -> f32 {
    v.iter().map(|x| x * x).sum()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kernels::gemv;
    use crate::kernels::testing::{available, random};

    #[test]
    fn rows_reconstruct_and_the_lookup_product_is_the_reconstructed_product() {
        let (rows, cols) = (300, 128);
        // Rows of different amplitudes: the scale carries them, the palette the direction.
        let values: Vec<f32> =
            random(rows * cols, 1).iter().enumerate().map(|(i, v)| v * (1 + i / cols % 7) as f32).collect();
        let w = Weight::from_f32(rows, cols, values.clone());
        let p = encode(&w).unwrap();
        let mut decoded = vec![0.0; rows * cols];
        decoded.chunks_exact_mut(cols).enumerate().for_each(|(r, row)| p.row(r, row));
        let err: f32 = decoded.iter().zip(&values).map(|(a, b)| (a - b) * (a - b)).sum();
        let norm: f32 = values.iter().map(|v| v * v).sum();
        // Uniform noise, 4 values per 16 bits: far below 4 bits of a scalar code per value
        // would be chance; the bound is what two residual stages reach on it.
        assert!((err / norm).sqrt() < 0.3, "relative error {}", (err / norm).sqrt());
        let x = random(cols, 2);
        let decoded_w = Weight::from_f32(rows, cols, decoded);
        for cpu in available() {
            let (mut y, mut want) = (vec![0.0; rows], vec![0.0; rows]);
            gemv::gemv(cpu, &p.matrix(), &x, &mut y);
            gemv::gemv(cpu, &decoded_w.matrix(), &x, &mut want);
            for (a, b) in y.iter().zip(&want) {
                assert!((a - b).abs() <= 1e-4 * (1.0 + b.abs()), "{cpu:?}: {a} vs {b}");
            }
        }
        // Several vectors at once: each the product of that vector alone.
        let xs = random(3 * cols, 3);
        let mut batched = vec![0.0; 3 * rows];
        gemv::gemv_batch(Cpu::best(), &p.matrix(), &xs, 3, &mut batched);
        for (b, x) in xs.chunks_exact(cols).enumerate() {
            let mut one = vec![0.0; rows];
            gemv::gemv(Cpu::best(), &p.matrix(), x, &mut one);
            assert_eq!(&batched[b * rows..][..rows], &one[..], "vector {b}");
        }
        assert!(encode(&Weight::from_f32(2, 6, vec![0.0; 12])).is_none());
        assert!(encode(&Weight::from_f32(0, 8, Vec::new())).is_none());
        // A tensor with fewer distinct groups than centroids, and an all-zero row.
        let few =
            Weight::from_f32(3, 8, [vec![0.0; 8], vec![1.0; 8], vec![1.0, 2.0, 1.0, 2.0, 1.0, 2.0, 1.0, 2.0]].concat());
        let p = encode(&few).unwrap();
        let mut row = vec![0.0; 8];
        for r in 0..3 {
            p.row(r, &mut row);
            let mut want = vec![0.0; 8];
            few.row(r, &mut want);
            for (a, b) in row.iter().zip(&want) {
                assert!((a - b).abs() < 1e-5, "row {r}: {row:?} vs {want:?}");
            }
        }
    }
}
