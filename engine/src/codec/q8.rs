//! The q8 codec: each row in blocks of 32 int8 values with one f32 scale
//! ([`kernels::q8`](crate::kernels::q8)), 1.125 bytes per weight; the GEMV multiplies the
//! blocks directly (integer dots against activations quantized the same way), never
//! widening the weights.

use crate::checkpoint::{Data, Storage, Weight};
use crate::kernels::q8::{quantize, BLOCK};

/// `w` in q8 blocks, or `None` if its rows are not whole blocks.
pub fn encode(w: &Weight) -> Option<Weight> {
    let (rows, cols) = (w.rows(), w.cols());
    if !cols.is_multiple_of(BLOCK) {
        return None;
    }
    let mut quants = vec![0i8; rows * cols];
    let mut scales = vec![0.0f32; rows * cols / BLOCK];
    let mut row = vec![0.0; cols];
    for (r, (q, s)) in quants.chunks_exact_mut(cols).zip(scales.chunks_exact_mut(cols / BLOCK)).enumerate() {
        w.row(r, &mut row);
        quantize(&row, q, s);
    }
    let data = Data::Q8 { quants: Storage::Owned(quants), scales: Storage::Owned(scales) };
    Some(Weight::new(rows, cols, data).expect("rows × cols quants and a scale per block"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kernels::gemv;
    use crate::kernels::testing::{available, random};

    #[test]
    fn rows_reconstruct_within_half_a_step_and_products_match_the_kernel() {
        let (rows, cols) = (37, 96);
        let values = random(rows * cols, 3);
        let w = Weight::from_f32(rows, cols, values.clone());
        let q = encode(&w).unwrap();
        let mut row = vec![0.0; cols];
        for r in 0..rows {
            q.row(r, &mut row);
            for (b, (got, want)) in row.chunks(BLOCK).zip(values[r * cols..][..cols].chunks(BLOCK)).enumerate() {
                let step = want.iter().fold(0.0f32, |m, v| m.max(v.abs())) / 127.0;
                for (g, v) in got.iter().zip(want) {
                    assert!((g - v).abs() <= 0.5 * step * 1.0001, "row {r} block {b}: {g} vs {v}");
                }
            }
        }
        // The GEMV of the encoded weight is the q8 kernel's, and close to the f32 product.
        let x = random(cols, 4);
        for cpu in available() {
            let (mut y, mut exact) = (vec![0.0; rows], vec![0.0; rows]);
            gemv::gemv(cpu, &q.matrix(), &x, &mut y);
            gemv::gemv(cpu, &w.matrix(), &x, &mut exact);
            for (a, b) in y.iter().zip(&exact) {
                assert!((a - b).abs() < 0.05 * (1.0 + b.abs()), "{cpu:?}: {a} vs {b}");
            }
        }
        assert!(encode(&Weight::from_f32(2, 33, vec![0.0; 66])).is_none());
    }
}
