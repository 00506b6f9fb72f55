//! What the benches share: their test values, the GEMM sizes and the `gemm` crate anchor,
//! called the same way by every bench that measures against it.

/// `n` values in [-1, 1), the same in every bench.
pub fn values(n: usize) -> Vec<f32> {
    (0..n).map(|i| ((i * 7919 % 1000) as f32 / 500.0) - 1.0).collect()
}

/// The GEMM sizes to measure: `SPIRAL_BENCH_GEMM` (comma-separated) or 256 to 2048.
pub fn gemm_sizes() -> Vec<usize> {
    std::env::var("SPIRAL_BENCH_GEMM")
        .ok()
        .map(|v| v.split(',').filter_map(|s| s.trim().parse().ok()).collect())
        .unwrap_or_else(|| vec![256, 512, 1024, 2048])
}

/// C = A·B by the `gemm` crate on `threads` rayon threads, all three n×n and row-major.
pub fn gemm_crate(n: usize, a: &[f32], b: &[f32], c: &mut [f32], threads: usize) {
    assert!(a.len() >= n * n && b.len() >= n * n && c.len() >= n * n);
    // SAFETY: every pointer addresses an n×n row-major matrix (column stride 1, row stride n).
    unsafe {
        gemm::gemm(
            n,
            n,
            n,
            c.as_mut_ptr(),
            1,
            n as isize,
            false,
            a.as_ptr(),
            1,
            n as isize,
            b.as_ptr(),
            1,
            n as isize,
            0.0,
            1.0,
            false,
            false,
            false,
            gemm::Parallelism::Rayon(threads),
        )
    }
}
