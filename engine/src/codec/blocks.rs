//! Block-format codecs ([`Quant`]): each row encoded into blocks that the GEMV multiplies
//! as they are (integer dots against activations quantized once per product), never
//! widening the weights to f32.

use rayon::prelude::*;

use crate::checkpoint::{Data, Storage, Weight};
use crate::kernels::quant::Quant;

/// `w` encoded in `q`, or `None` if its rows are not whole blocks of `q`.
pub fn encode(q: Quant, w: &Weight) -> Option<Weight> {
    let (rows, cols) = (w.rows(), w.cols());
    if !cols.is_multiple_of(q.block()) {
        return None;
    }
    let row_bytes = q.row_bytes(cols);
    let mut bytes = vec![0u8; rows * row_bytes];
    // Encoding searches each sub-block's scale: worth every core on a large tensor.
    bytes.par_chunks_mut(row_bytes).enumerate().for_each_init(
        || vec![0.0; cols],
        |row, (r, out)| {
            w.row(r, row);
            q.encode_row(row, out);
        },
    );
    Some(Weight::new(rows, cols, Data::Quant(q, Storage::Owned(bytes))).expect("rows of whole blocks"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kernels::gemv;
    use crate::kernels::testing::{available, random};

    #[test]
    fn encoded_rows_reconstruct_and_products_stay_close_to_f32() {
        let (rows, cols) = (37, 512);
        let values = random(rows * cols, 3);
        let w = Weight::from_f32(rows, cols, values.clone());
        let x = random(cols, 4);
        for (q, bound) in [(Quant::Q8_0, 0.01), (Quant::Q4K, 0.1)] {
            let e = encode(q, &w).unwrap();
            assert_eq!(e.matrix().bytes(), rows * cols / q.block() * q.block_bytes());
            let mut row = vec![0.0; cols];
            let mut direct = vec![0u8; q.row_bytes(cols)];
            for r in [0, 17, rows - 1] {
                e.row(r, &mut row);
                q.encode_row(&values[r * cols..][..cols], &mut direct);
                let mut want = vec![0.0; cols];
                q.decode_row(&direct, &mut want);
                assert_eq!(row, want, "{} row {r}", q.name());
            }
            for cpu in available() {
                let (mut y, mut exact) = (vec![0.0; rows], vec![0.0; rows]);
                gemv::gemv(cpu, &e.matrix(), &x, &mut y);
                gemv::gemv(cpu, &w.matrix(), &x, &mut exact);
                let err: f32 = y.iter().zip(&exact).map(|(a, b)| (a - b) * (a - b)).sum();
                let norm: f32 = exact.iter().map(|b| b * b).sum();
                assert!((err / norm).sqrt() < bound, "{} {cpu:?}: relative error {}", q.name(), (err / norm).sqrt());
            }
        }
        assert!(encode(Quant::Q8_0, &Weight::from_f32(2, 33, vec![0.0; 66])).is_none());
        assert!(encode(Quant::Q4K, &Weight::from_f32(2, 96, vec![0.0; 192])).is_none());
    }
}
