//! Matrix × vector for batch-1 inference, where every weight is read once per step: the
//! speed limit is memory bandwidth, so the work is split by rows across threads and each
//! row is one streaming dot product in the weights' own format.

use std::cell::RefCell;

use rayon::prelude::*;
use thiserror::Error;

use super::cpu::Cpu;
use super::quant::{Activations, Quant, Vector};
use super::{bf16, palette, vector};

/// The storage of a row-major weight matrix.
#[derive(Clone, Copy, Debug)]
pub enum Weights<'a> {
    F32(&'a [f32]),
    /// bf16 bit patterns.
    Bf16(&'a [u16]),
    /// Rows of blocks in a [`Quant`] format, one after another.
    Quant(Quant, &'a [u8]),
    /// [`palette`] rows: codebooks `[stages, DIM, CENTROIDS]`, a scale per row, and per row
    /// `stages × cols / DIM` indices.
    Palette {
        codebooks: &'a [f32],
        scales: &'a [f32],
        indices: &'a [u8],
    },
}

impl Weights<'_> {
    /// The format's name: `f32`, `bf16` or the block format's.
    pub fn format(&self) -> &'static str {
        match self {
            Weights::F32(_) => "f32",
            Weights::Bf16(_) => "bf16",
            Weights::Quant(q, _) => q.name(),
            Weights::Palette { .. } => "palette",
        }
    }
}

/// A weight matrix whose shape has been checked against its storage.
#[derive(Clone, Copy, Debug)]
pub struct Matrix<'a> {
    rows: usize,
    cols: usize,
    weights: Weights<'a>,
}

/// Storage that does not hold the shape it is said to have.
#[derive(Debug, Error, PartialEq, Eq)]
#[error("a {rows}x{cols} {kind} matrix needs {expected}, got {got}")]
pub struct ShapeError {
    rows: usize,
    cols: usize,
    kind: &'static str,
    expected: String,
    got: String,
}

impl<'a> Matrix<'a> {
    /// `weights` as a `rows` × `cols` matrix, if the sizes agree.
    pub fn new(rows: usize, cols: usize, weights: Weights<'a>) -> Result<Self, ShapeError> {
        let err = |kind, expected: String, got: String| ShapeError { rows, cols, kind, expected, got };
        let n = rows * cols;
        match weights {
            Weights::F32(d) if d.len() != n => return Err(err("f32", format!("{n} values"), d.len().to_string())),
            Weights::Bf16(d) if d.len() != n => return Err(err("bf16", format!("{n} values"), d.len().to_string())),
            Weights::Quant(q, d) if !cols.is_multiple_of(q.block()) || d.len() != rows * q.row_bytes(cols) => {
                return Err(err(
                    q.name(),
                    format!("cols a multiple of {} and {} bytes", q.block(), rows * q.row_bytes(cols)),
                    format!("{} bytes", d.len()),
                ));
            }
            Weights::Palette { codebooks, scales, indices } => {
                let stages = codebooks.len() / (palette::DIM * palette::CENTROIDS);
                let whole = stages > 0 && codebooks.len() == stages * palette::DIM * palette::CENTROIDS;
                if !whole
                    || !cols.is_multiple_of(palette::DIM)
                    || scales.len() != rows
                    || indices.len() != rows * stages * cols / palette::DIM
                {
                    return Err(err(
                        "palette",
                        format!(
                            "cols a multiple of {}, codebooks of whole stages, {rows} scales and their indices",
                            palette::DIM
                        ),
                        format!(
                            "{} codebook values, {} scales, {} indices",
                            codebooks.len(),
                            scales.len(),
                            indices.len()
                        ),
                    ));
                }
            }
            _ => {}
        }
        Ok(Self { rows, cols, weights })
    }

    pub fn rows(&self) -> usize {
        self.rows
    }

    /// Rows `first..` against each vector, as many rows as `out` has room for: `out` holds
    /// each row's outputs one after another, output `b` of a row for the operands' vector
    /// `b`. Palette rows multiply a table instead, per vector, so they never come here.
    fn row_dots(&self, cpu: Cpu, first: usize, x: &Operands, out: &mut [f32]) {
        let cols = self.cols;
        let batch = match self.weights {
            Weights::Quant(..) => x.quantized.len(),
            _ => x.values.len() / cols.max(1),
        };
        let count = out.len() / batch.max(1);
        let each = |out: &mut [f32], values: &[f32], dot: &dyn Fn(usize, &[f32]) -> f32| {
            for (r, out) in (first..first + count).zip(out.chunks_exact_mut(batch)) {
                out.iter_mut().zip(values.chunks_exact(cols)).for_each(|(v, x)| *v = dot(r, x))
            }
        };
        match self.weights {
            Weights::F32(w) => each(out, x.values, &|r, x| vector::dot(cpu, &w[r * cols..][..cols], x)),
            Weights::Bf16(w) if bf16::pairs_pay(cpu) => {
                each(out, x.paired, &|r, x| bf16::dot_f32_paired(cpu, &w[r * cols..][..cols], x))
            }
            Weights::Bf16(w) => each(out, x.values, &|r, x| bf16::dot_f32(cpu, &w[r * cols..][..cols], x)),
            Weights::Quant(q, w) => {
                let row_bytes = q.row_bytes(cols);
                let rows = &w[first * row_bytes..][..count * row_bytes];
                match x.quantized {
                    [x] => q.dot_rows(cpu, rows, *x, out),
                    xq => rows
                        .chunks_exact(row_bytes)
                        .zip(out.chunks_exact_mut(batch))
                        .for_each(|(row, out)| q.dot_many(cpu, row, xq, out)),
                }
            }
            Weights::Palette { .. } => unreachable!("palette rows multiply a table, one vector at a time"),
        }
    }

    pub fn cols(&self) -> usize {
        self.cols
    }

    /// Bytes of weights (and scales) one product reads.
    pub fn bytes(&self) -> usize {
        match self.weights {
            Weights::F32(d) => d.len() * 4,
            Weights::Bf16(d) => d.len() * 2,
            Weights::Quant(_, d) => d.len(),
            Weights::Palette { codebooks, scales, indices } => indices.len() + 4 * (scales.len() + codebooks.len()),
        }
    }
}

/// The vectors a product multiplies, in each form its rows read: as given (f32 rows, and
/// bf16 rows where [`bf16::pairs_pay`] does not), in [`bf16::pair_order`] (bf16 rows
/// where it does), quantized to 8-bit blocks (block-format rows). Each form is made once
/// per call, only when some matrix reads it.
struct Operands<'a> {
    values: &'a [f32],
    paired: &'a [f32],
    quantized: &'a [Vector<'a>],
}

/// `x` (vectors of `cols`) in [`bf16::pair_order`], into `paired`, when bf16 rows will
/// read that order (`bf16_rows`, and the level is one where it pays); else nothing.
fn pair_if_read<'p>(cpu: Cpu, x: &[f32], cols: usize, bf16_rows: bool, paired: &'p mut Vec<f32>) -> &'p [f32] {
    if !bf16_rows || !bf16::pairs_pay(cpu) {
        return &[];
    }
    paired.resize(x.len(), 0.0);
    for (p, x) in paired.chunks_exact_mut(cols.max(1)).zip(x.chunks_exact(cols.max(1))) {
        bf16::pair_order(x, p);
    }
    paired
}

/// Below this many bytes of weights one thread is faster than waking the pool.
const PARALLEL_BYTES: usize = 256 * 1024;

thread_local! {
    /// Quantized activations for block-format products, reused so steady-state calls do not
    /// allocate.
    static QUANT_X: RefCell<Activations> = RefCell::new(Activations::default());
    /// Activations in [`bf16::pair_order`] for bf16 products, reused likewise.
    static PAIRED_X: RefCell<Vec<f32>> = const { RefCell::new(Vec::new()) };
    /// The lookup table of palette products, reused likewise.
    static PALETTE_TABLE: RefCell<Vec<f32>> = const { RefCell::new(Vec::new()) };
}

/// y = W·x, with `x.len() == W.cols()` and `y.len() == W.rows()`.
///
/// f32 and bf16 rows take `x` at full precision; block-format rows take `x` quantized to
/// 8-bit blocks once per call ([`Activations`]), so the inner loops are integer dots.
///
/// ```
/// use spiral_engine::kernels::{gemv, Cpu};
/// let w = [1.0, 2.0, 3.0, 4.0, 5.0, 6.0];
/// let m = gemv::Matrix::new(2, 3, gemv::Weights::F32(&w)).unwrap();
/// let mut y = [0.0; 2];
/// gemv::gemv(Cpu::best(), &m, &[1.0, 0.0, -1.0], &mut y);
/// assert_eq!(y, [-2.0, -2.0]);
/// ```
pub fn gemv(cpu: Cpu, m: &Matrix, x: &[f32], y: &mut [f32]) {
    gemv_batch(cpu, m, x, 1, y);
}

/// Y = X·Wᵀ for `batch` vectors at once (`x`: batch × cols, `y`: batch × rows, both
/// row-major), reading each weight row once for all of them: a few positions cost about
/// what one does, without a GEMM's packing. Each output is the same dot product [`gemv`]
/// computes for that vector alone.
///
/// ```
/// use spiral_engine::kernels::{gemv, Cpu};
/// let w = [1.0, 2.0, 3.0, 4.0, 5.0, 6.0];
/// let m = gemv::Matrix::new(2, 3, gemv::Weights::F32(&w)).unwrap();
/// let mut y = [0.0; 4];
/// gemv::gemv_batch(Cpu::best(), &m, &[1.0, 0.0, -1.0, 0.0, 1.0, 0.0], 2, &mut y);
/// assert_eq!(y, [-2.0, -2.0, 2.0, 5.0]);
/// ```
pub fn gemv_batch(cpu: Cpu, m: &Matrix, x: &[f32], batch: usize, y: &mut [f32]) {
    let cols = m.cols;
    assert_eq!(x.len(), batch * cols, "gemv: x has {} values for {batch} × {} columns", x.len(), cols);
    assert_eq!(y.len(), batch * m.rows, "gemv: y has {} values for {batch} × {} rows", y.len(), m.rows);
    let xs = |b: usize| &x[b * cols..][..cols];
    match m.weights {
        Weights::F32(_) | Weights::Bf16(_) => {
            // Taken out, not borrowed: while this thread waits on the pool it may run another
            // product that wants the buffer too (it then allocates its own).
            let mut paired = PAIRED_X.take();
            let x = Operands {
                values: x,
                paired: pair_if_read(cpu, x, cols, matches!(m.weights, Weights::Bf16(_)), &mut paired),
                quantized: &[],
            };
            by_rows(m, batch, y, |first, out| m.row_dots(cpu, first, &x, out));
            PAIRED_X.set(paired);
        }
        Weights::Quant(..) => {
            // Taken out, as above.
            let mut ax = QUANT_X.take();
            ax.quantize(x);
            let xq: Vec<_> = (0..batch).map(|b| ax.vector(b, cols)).collect();
            let x = Operands { values: x, paired: &[], quantized: &xq };
            by_rows(m, batch, y, |first, out| m.row_dots(cpu, first, &x, out));
            drop(xq);
            QUANT_X.set(ax);
        }
        // One table per vector (a table is as large as a few rows of weights), so the
        // vectors go one at a time.
        Weights::Palette { codebooks, scales, indices } => {
            let mut table = PALETTE_TABLE.take();
            let per_row = indices.len() / m.rows.max(1);
            for (b, y) in y.chunks_exact_mut(m.rows).enumerate() {
                palette::table(xs(b), codebooks, &mut table);
                by_rows(m, 1, y, |first, out| {
                    for (r, out) in (first..).zip(out) {
                        *out = scales[r] * palette::dot(cpu, &indices[r * per_row..][..per_row], &table)
                    }
                });
            }
            PALETTE_TABLE.set(table);
        }
    }
}

/// yᵢ = Wᵢ·x for several matrices that read the same `x` (a layer's query, key and value
/// projections; its gate and up projections): `x` is quantized once for all block-format
/// matrices and the rows of all of them are shared out in one pass over the thread pool,
/// instead of one wake-up and one quantization per matrix. Each output is the one [`gemv`]
/// gives that matrix alone, bit for bit. Palette matrices (a table per product) go one at
/// a time.
///
/// ```
/// use spiral_engine::kernels::{gemv, Cpu};
/// let (a, b) = ([1.0, 2.0, 3.0, 4.0], [1.0, -1.0]);
/// let ma = gemv::Matrix::new(2, 2, gemv::Weights::F32(&a)).unwrap();
/// let mb = gemv::Matrix::new(1, 2, gemv::Weights::F32(&b)).unwrap();
/// let (mut ya, mut yb) = ([0.0; 2], [0.0; 1]);
/// gemv::gemv_many(Cpu::best(), &[1.0, 1.0], &mut [(&ma, &mut ya[..]), (&mb, &mut yb[..])]);
/// assert_eq!((ya, yb), ([3.0, 7.0], [0.0]));
/// ```
pub fn gemv_many(cpu: Cpu, x: &[f32], products: &mut [(&Matrix, &mut [f32])]) {
    for (m, y) in products.iter() {
        assert_eq!(
            (x.len(), y.len()),
            (m.cols, m.rows),
            "gemv_many: x or y does not fit a {}x{} matrix",
            m.rows,
            m.cols
        );
    }
    if products.iter().any(|(m, _)| matches!(m.weights, Weights::Palette { .. })) {
        products.iter_mut().for_each(|(m, y)| gemv(cpu, m, x, y));
        return;
    }
    let (mut ax, mut paired) = (QUANT_X.take(), PAIRED_X.take());
    let quantized;
    let xq: &[Vector] = if products.iter().any(|(m, _)| matches!(m.weights, Weights::Quant(..))) {
        ax.quantize(x);
        quantized = [ax.vector(0, x.len())];
        &quantized
    } else {
        &[]
    };
    let bf16_rows = products.iter().any(|(m, _)| matches!(m.weights, Weights::Bf16(_)));
    let operands = Operands { values: x, paired: pair_if_read(cpu, x, x.len(), bf16_rows, &mut paired), quantized: xq };
    let bytes: usize = products.iter().map(|(m, _)| m.bytes()).sum();
    if bytes < PARALLEL_BYTES {
        for (m, y) in products.iter_mut() {
            m.row_dots(cpu, 0, &operands, y);
        }
    } else {
        let rows: usize = products.iter().map(|(m, _)| m.rows).sum();
        let chunk = rows.div_ceil(rayon::current_num_threads() * 4).max(1);
        let mut jobs: Vec<(&Matrix, usize, &mut [f32])> = Vec::new();
        for (m, y) in products.iter_mut() {
            jobs.extend(y.chunks_mut(chunk).enumerate().map(|(c, ys)| (&**m, c * chunk, ys)));
        }
        jobs.into_par_iter().for_each(|(m, first, ys)| m.row_dots(cpu, first, &operands, ys));
    }
    QUANT_X.set(ax);
    PAIRED_X.set(paired);
}

thread_local! {
    /// Row-major outputs of batched products before they are transposed into place.
    static BATCH_Y: RefCell<Vec<f32>> = const { RefCell::new(Vec::new()) };
}

/// Fills y[b][r] for every weight row r and vector b (`rows(first, outs)` writes the
/// `batch` outputs of each row from `first` on, as many rows as `outs` holds), across the
/// thread pool when the matrix is large; the vectors of one row are done together so the
/// row is read from memory once.
fn by_rows(m: &Matrix, batch: usize, y: &mut [f32], rows: impl Fn(usize, &mut [f32]) + Sync) {
    if batch == 0 {
        return;
    }
    let mut by_row = if batch == 1 { Vec::new() } else { BATCH_Y.take() };
    let dest: &mut [f32] = if batch == 1 {
        &mut *y
    } else {
        by_row.resize(y.len(), 0.0);
        &mut by_row
    };
    if m.bytes() < PARALLEL_BYTES {
        rows(0, dest);
    } else {
        // A few chunks per thread so a slow core does not hold the step back.
        let chunk = m.rows.div_ceil(rayon::current_num_threads() * 4).max(1);
        dest.par_chunks_mut(chunk * batch).enumerate().for_each(|(c, outs)| rows(c * chunk, outs));
    }
    if batch > 1 {
        for (r, outs) in by_row.chunks_exact(batch).enumerate() {
            outs.iter().enumerate().for_each(|(b, v)| y[b * m.rows + r] = *v);
        }
        BATCH_Y.set(by_row);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kernels::testing::{available, random};

    fn reference(rows: usize, cols: usize, w: impl Fn(usize, usize) -> f64, x: &[f64]) -> Vec<f64> {
        (0..rows).map(|r| (0..cols).map(|c| w(r, c) * x[c]).sum()).collect()
    }

    fn check(got: &[f32], want: &[f64], magnitude: f64, cols: usize, what: &str) {
        let tol = 4.0 * f64::from(f32::EPSILON) * ((cols + 1) as f64).sqrt() * magnitude + 1e-30;
        for (r, (g, w)) in got.iter().zip(want).enumerate() {
            assert!((*g as f64 - w).abs() <= tol, "{what} row {r}: {g} vs {w}");
        }
    }

    /// `wf` (rows of `cols`) encoded in `q`, or `None` where rows are not whole blocks.
    fn encoded(q: Quant, wf: &[f32], cols: usize) -> Option<Vec<u8>> {
        cols.is_multiple_of(q.block()).then(|| {
            let mut out = vec![0u8; wf.len() / cols * q.row_bytes(cols)];
            for (row, bytes) in wf.chunks_exact(cols).zip(out.chunks_exact_mut(q.row_bytes(cols))) {
                q.encode_row(row, bytes);
            }
            out
        })
    }

    #[test]
    fn batched_and_fused_products_equal_one_vector_at_a_time() {
        for (rows, cols, batch) in [(3, 64, 2), (37, 256, 3), (301, 1024, 5), (9, 512, 8)] {
            let wf = random(rows * cols, 21);
            let x = random(batch * cols, 22);
            let mut wb = vec![0u16; wf.len()];
            bf16::from_f32(&wf, &mut wb);
            let quants: Vec<(Quant, Vec<u8>)> =
                Quant::ALL.into_iter().filter_map(|q| Some((q, encoded(q, &wf, cols)?))).collect();
            let mut formats = vec![Weights::F32(&wf), Weights::Bf16(&wb)];
            formats.extend(quants.iter().map(|(q, bytes)| Weights::Quant(*q, bytes)));
            for cpu in available() {
                for &weights in &formats {
                    let m = Matrix::new(rows, cols, weights).unwrap();
                    let mut batched = vec![0.0; batch * rows];
                    gemv_batch(cpu, &m, &x, batch, &mut batched);
                    for b in 0..batch {
                        let mut one = vec![0.0; rows];
                        gemv(cpu, &m, &x[b * cols..][..cols], &mut one);
                        assert_eq!(&batched[b * rows..][..rows], &one[..], "{cpu:?} {} vector {b}", weights.format());
                    }
                }
                // Every format in one fused product: each output is its own GEMV's.
                let matrices: Vec<Matrix> = formats.iter().map(|&w| Matrix::new(rows, cols, w).unwrap()).collect();
                let mut outs = vec![vec![f32::NAN; rows]; matrices.len()];
                let mut products: Vec<(&Matrix, &mut [f32])> =
                    matrices.iter().zip(outs.iter_mut()).map(|(m, y)| (m, &mut y[..])).collect();
                gemv_many(cpu, &x[..cols], &mut products);
                for (m, y) in matrices.iter().zip(&outs) {
                    let mut one = vec![0.0; rows];
                    gemv(cpu, m, &x[..cols], &mut one);
                    assert_eq!(y, &one, "{cpu:?} {} in gemv_many", m.weights.format());
                }
            }
        }
    }

    #[test]
    fn every_format_and_path_matches_the_reference() {
        // Small (one thread) and large enough to split across the pool; odd row counts.
        for (rows, cols) in [(1, 32), (3, 64), (5, 96), (37, 160), (7, 256), (301, 1024)] {
            let wf = random(rows * cols, 11);
            let x = random(cols, 12);
            let xd: Vec<f64> = x.iter().map(|&v| v as f64).collect();
            let mut wb = vec![0u16; wf.len()];
            bf16::from_f32(&wf, &mut wb);
            let want_f32 = reference(rows, cols, |r, c| wf[r * cols + c] as f64, &xd);
            let want_bf16 = reference(rows, cols, |r, c| bf16::scalar::widen(wb[r * cols + c]) as f64, &xd);
            let magnitude = cols as f64; // |w|, |x| ≤ 1
            for cpu in available() {
                let mut y = vec![f32::NAN; rows];
                let what = format!("{} {rows}x{cols}", cpu.isa());
                gemv(cpu, &Matrix::new(rows, cols, Weights::F32(&wf)).unwrap(), &x, &mut y);
                check(&y, &want_f32, magnitude, cols, &format!("f32 {what}"));
                gemv(cpu, &Matrix::new(rows, cols, Weights::Bf16(&wb)).unwrap(), &x, &mut y);
                check(&y, &want_bf16, magnitude, cols, &format!("bf16 {what}"));
            }
            // Block formats: each row is the format's dot against x quantized once.
            let mut ax = Activations::default();
            ax.quantize(&x);
            for q in Quant::ALL {
                let Some(bytes) = encoded(q, &wf, cols) else { continue };
                let m = Matrix::new(rows, cols, Weights::Quant(q, &bytes)).unwrap();
                for cpu in available() {
                    let mut y = vec![f32::NAN; rows];
                    gemv(cpu, &m, &x, &mut y);
                    for (r, got) in y.iter().enumerate() {
                        let row = &bytes[r * q.row_bytes(cols)..][..q.row_bytes(cols)];
                        assert_eq!(*got, q.dot(cpu, row, ax.vector(0, cols)), "{} {} row {r}", q.name(), cpu.isa());
                    }
                }
            }
        }
    }

    #[test]
    fn mismatched_storage_is_a_shape_error() {
        assert!(Matrix::new(2, 3, Weights::F32(&[0.0; 5])).is_err());
        assert!(Matrix::new(2, 3, Weights::Bf16(&[0; 7])).is_err());
        let e = Matrix::new(1, 48, Weights::Quant(Quant::Q8_0, &[0; 51])).unwrap_err();
        assert!(e.to_string().contains("multiple of 32"), "{e}");
        assert!(Matrix::new(1, 64, Weights::Quant(Quant::Q8_0, &[0; 68])).is_ok());
        let e = Matrix::new(2, 256, Weights::Quant(Quant::Q4K, &[0; 144])).unwrap_err();
        assert!(e.to_string().contains("288 bytes"), "{e}");
    }
}
