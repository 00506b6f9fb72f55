//! Kernel throughput against this machine's limits, measured in the same run:
//! - GEMV for each weight format and path, in GB/s of weights read, against a stream-read
//!   baseline over the same number of bytes (the memory-bandwidth roof);
//! - dot and fused L2 at L1-resident sizes, in GFLOP/s, against a register-only FMA loop
//!   (the compute roof);
//! - GEMM at 256..2048, in GFLOP/s, against the `gemm` crate (its AVX-512 kernels, rayon on
//!   every core) and `matrixmultiply` (threaded) on the same matrices.
//! - conv1d at the VITS HiFi-GAN's shapes, in GFLOP/s on one thread: the direct method
//!   against the im2col GEMM method and, at 32 and 64 channels, against itself with bf16
//!   products, with the FMA roof in the same group.

mod common;

use std::hint::black_box;

use common::values;
use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use rayon::prelude::*;
use spiral::engine::kernels::conv::{Conv1d, ConvMethod, ConvShape};
use spiral::engine::kernels::gemm::{self as gemm_k, View, ViewMut};
use spiral::engine::kernels::gemv::{gemv, Matrix, Weights};
use spiral::engine::kernels::quant::Quant;
use spiral::engine::kernels::{bf16, palette, vector, Cpu, Isa};

/// Weight bytes per GEMV: by default four times the 32 MB L3, so every byte comes from
/// DRAM; `SPIRAL_BENCH_MB` overrides it.
fn bytes() -> usize {
    std::env::var("SPIRAL_BENCH_MB").ok().and_then(|v| v.parse::<usize>().ok()).unwrap_or(128) << 20
}

fn cpus() -> Vec<Cpu> {
    Isa::ALL.into_iter().filter_map(|i| Cpu::forced(i).ok()).collect()
}

fn memory_bound(c: &mut Criterion) {
    let mut group = c.benchmark_group("gemv");
    group.sample_size(20);
    let bytes = bytes();
    group.throughput(Throughput::Bytes(bytes as u64));

    // The roof: read the same number of bytes once (`spiral bench gemv` reads each product
    // against the passes of this roof just before and after it).
    let stream = values(bytes / 4);
    let roof = |b: &mut criterion::Bencher| b.iter(|| spiral::bench::read_all(black_box(&stream)));
    group.bench_function("stream_read_baseline", roof);

    // 2048 columns, as in the Qwen3-TTS projections: x stays in L1 and rows stream by.
    let cols = 2048;
    let rows = bytes / 4 / cols;
    let w = values(rows * cols);
    let x = values(cols);
    let mut y = vec![0.0; rows];
    let m = Matrix::new(rows, cols, Weights::F32(&w)).unwrap();
    for cpu in cpus() {
        group.bench_with_input(BenchmarkId::new("f32_Nx2048", cpu.isa()), &cpu, |b, &cpu| {
            b.iter(|| gemv(cpu, &m, black_box(&x), &mut y))
        });
    }
    drop(w);

    let rows = bytes / 2 / cols;
    let mut wb = vec![0u16; rows * cols];
    bf16::from_f32(&values(rows * cols), &mut wb);
    let x = values(cols);
    let mut y = vec![0.0; rows];
    let m = Matrix::new(rows, cols, Weights::Bf16(&wb)).unwrap();
    for cpu in cpus() {
        group.bench_with_input(BenchmarkId::new("bf16_Nx2048", cpu.isa()), &cpu, |b, &cpu| {
            b.iter(|| gemv(cpu, &m, black_box(&x), &mut y))
        });
    }
    drop(wb);

    // Block formats: size the encoded rows to `bytes`; the throughput is of encoded bytes
    // (weights per second = GB/s ÷ bytes per weight, in docs/BENCHMARKS.md).
    for q in Quant::ALL {
        let rows = bytes / q.row_bytes(cols);
        let wf = values(rows * cols);
        let mut encoded = vec![0u8; rows * q.row_bytes(cols)];
        encoded
            .par_chunks_mut(q.row_bytes(cols))
            .zip(wf.par_chunks(cols))
            .for_each(|(out, row)| q.encode_row(row, out));
        drop(wf);
        let x = values(cols);
        let mut y = vec![0.0; rows];
        let m = Matrix::new(rows, cols, Weights::Quant(q, &encoded)).unwrap();
        group.throughput(Throughput::Bytes(m.bytes() as u64));
        for cpu in cpus() {
            group.bench_with_input(BenchmarkId::new(format!("{}_Nx2048", q.name()), cpu.isa()), &cpu, |b, &cpu| {
                b.iter(|| gemv(cpu, &m, black_box(&x), &mut y))
            });
        }
    }

    // A palette: u8 indices (two stages per 4 weights) looked up in a table made from x
    // per product. Random indices and codebooks: the speed does not depend on their values.
    let stages = 2;
    let rows = bytes / (stages * cols / palette::DIM);
    let indices: Vec<u8> = (0..rows * stages * cols / palette::DIM).map(|i| (i * 7919 % 251) as u8).collect();
    let codebooks = values(stages * palette::DIM * palette::CENTROIDS);
    let scales = values(rows);
    let x = values(cols);
    let mut y = vec![0.0; rows];
    let m = Matrix::new(rows, cols, Weights::Palette { codebooks: &codebooks, scales: &scales, indices: &indices })
        .unwrap();
    group.throughput(Throughput::Bytes(m.bytes() as u64));
    for cpu in cpus() {
        group.bench_with_input(BenchmarkId::new("palette_Nx2048", cpu.isa()), &cpu, |b, &cpu| {
            b.iter(|| gemv(cpu, &m, black_box(&x), &mut y))
        });
    }
    // The roof again: this machine's bandwidth drifts over a run by more than the margin the
    // 80 % bar is decided by, so the products are read against both ends.
    group.bench_function("stream_read_baseline_again", roof);
    group.finish();
}

/// 8 independent chains of FMAs on registers, at the widest vectors this CPU has: the
/// single-core compute roof, as `fma_peak_flops` in `group` (throughput in flops: two per
/// lane of each FMA).
#[cfg(target_arch = "x86_64")]
fn fma_peak(group: &mut criterion::BenchmarkGroup<criterion::measurement::WallTime>) {
    use std::arch::x86_64::*;
    const ITERS: usize = 4096;
    // One body per vector width; `black_box` keeps the chains from being optimized away.
    macro_rules! chains {
        ($name:ident, $features:literal, $splat:ident, $fma:ident) => {
            #[target_feature(enable = $features)]
            unsafe fn $name(iters: usize) {
                let mut acc = [$splat(1.0); 8];
                let (m, a) = ($splat(0.999_999), $splat(1e-7));
                for _ in 0..iters {
                    for v in acc.iter_mut() {
                        *v = $fma(*v, m, a);
                    }
                }
                black_box(&acc);
            }
        };
    }
    chains!(avx512, "avx512f", _mm512_set1_ps, _mm512_fmadd_ps);
    chains!(avx2, "avx2,fma", _mm256_set1_ps, _mm256_fmadd_ps);
    if Isa::Avx512.is_available() {
        group.throughput(Throughput::Elements((ITERS * 8 * 16 * 2) as u64));
        // SAFETY: AVX-512F was checked just above.
        group.bench_function("fma_peak_flops", |b| b.iter(|| unsafe { avx512(black_box(ITERS)) }));
    } else if Isa::Avx2.is_available() {
        group.throughput(Throughput::Elements((ITERS * 8 * 8 * 2) as u64));
        // SAFETY: AVX2 and FMA were checked just above.
        group.bench_function("fma_peak_flops", |b| b.iter(|| unsafe { avx2(black_box(ITERS)) }));
    }
}

#[cfg(not(target_arch = "x86_64"))]
fn fma_peak(_: &mut criterion::BenchmarkGroup<criterion::measurement::WallTime>) {}

fn compute_bound(c: &mut Criterion) {
    let mut group = c.benchmark_group("l1_resident");
    const N: usize = 4096; // two 16 KB vectors: L1 holds both
    fma_peak(&mut group);
    let (a, bv) = (values(N), values(N + 1)[1..].to_vec());
    let mut ab = vec![0u16; N];
    bf16::from_f32(&a, &mut ab);
    group.throughput(Throughput::Elements((2 * N) as u64)); // one FMA (2 flops) per element
    for cpu in cpus() {
        group.bench_with_input(BenchmarkId::new("dot_4096_flops", cpu.isa()), &cpu, |b, &cpu| {
            b.iter(|| vector::dot(cpu, black_box(&a), black_box(&bv)))
        });
        group.bench_with_input(BenchmarkId::new("l2_sq_4096_flops", cpu.isa()), &cpu, |b, &cpu| {
            b.iter(|| vector::l2_sq(cpu, black_box(&a), black_box(&bv)))
        });
        group.bench_with_input(BenchmarkId::new("bf16_dot_4096_flops", cpu.isa()), &cpu, |b, &cpu| {
            b.iter(|| bf16::dot_f32(cpu, black_box(&ab), black_box(&bv)))
        });
    }
    group.finish();
}

/// C = A·B for square row-major matrices, every implementation on the same data.
fn matrix_multiply(c: &mut Criterion) {
    let mut group = c.benchmark_group("gemm");
    group.sample_size(10);
    let best = Cpu::best();
    for n in common::gemm_sizes() {
        let (a, b) = (values(n * n), values(n * n + 3)[3..].to_vec());
        let mut out = vec![0.0f32; n * n];
        group.throughput(Throughput::Elements(2 * (n * n * n) as u64)); // flops
        let ours = |cpu: Cpu, bf16: bool, out: &mut [f32]| {
            let (av, bt) = (View::new(&a, n, n).unwrap(), View::transposed(&b, n, n).unwrap());
            let c = ViewMut::new(out, n, n).unwrap();
            if bf16 {
                gemm_k::gemm_bf16(cpu, av, bt, c, false)
            } else {
                gemm_k::gemm(cpu, av, bt, c, false)
            }
        };
        group.bench_function(BenchmarkId::new("spiral_f32", format!("{}/{n}", best.isa())), |bn| {
            bn.iter(|| ours(best, false, &mut out))
        });
        // The AVX2 path too where a wider one is the best (it is the best one elsewhere).
        if let Some(avx2) = Cpu::forced(Isa::Avx2).ok().filter(|_| best.isa() > Isa::Avx2) {
            group.bench_function(BenchmarkId::new("spiral_f32", format!("avx2/{n}")), |bn| {
                bn.iter(|| ours(avx2, false, &mut out))
            });
        }
        // Each level with its own bf16 product (VDPBF16PS, AMX tiles), so AMX is measured
        // against the AVX-512 path it replaces.
        for cpu in cpus().into_iter().filter(|c| c.isa() >= Isa::Avx512Bf16) {
            group.bench_function(BenchmarkId::new("spiral_bf16", format!("{}/{n}", cpu.isa())), |bn| {
                bn.iter(|| ours(cpu, true, &mut out))
            });
        }
        let threads = rayon::current_num_threads();
        group.bench_function(BenchmarkId::new("gemm_crate_f32", n), |bn| {
            bn.iter(|| common::gemm_crate(n, &a, &b, &mut out, threads))
        });
        group.bench_function(BenchmarkId::new("matrixmultiply_f32", n), |bn| {
            // SAFETY: every pointer addresses an n×n row-major matrix, in matrixmultiply's
            // (row stride, column stride) order.
            bn.iter(|| unsafe {
                matrixmultiply::sgemm(
                    n,
                    n,
                    n,
                    1.0,
                    a.as_ptr(),
                    n as isize,
                    1,
                    b.as_ptr(),
                    n as isize,
                    1,
                    0.0,
                    out.as_mut_ptr(),
                    n as isize,
                    1,
                )
            })
        });
    }
    group.finish();
}

/// The generator's convolutions (in, out, kernel, dilation, input length), "same" padding,
/// by the direct and GEMM methods (and the direct method with bf16 products on the small
/// channel counts) on a one-thread pool: the kernel's own speed, not the pool's.
fn convolutions(c: &mut Criterion) {
    let mut group = c.benchmark_group("conv1d");
    group.sample_size(20);
    let best = Cpu::best();
    let one = rayon::ThreadPoolBuilder::new().num_threads(1).build().expect("a one-thread pool");
    fma_peak(&mut group);
    use ConvMethod::{Direct, DirectBf16, Gemm, Winograd};
    let (both, bf16) = (&[Direct, Gemm][..], &[Direct, DirectBf16][..]);
    // bf16 products (opt-in) against f32 on the generator's 32- and 64-channel convolutions.
    let shapes = [
        ((32, 32, 7, 3, 2048), both),
        ((32, 32, 7, 3, 4096), bf16),
        ((64, 64, 5, 6, 512), &[Direct, Gemm, DirectBf16][..]),
        ((128, 128, 3, 1, 128), both),
        ((192, 256, 7, 1, 16), both),
        // The VITS flow's WaveNet layer and text encoder's FFN, which run Winograd.
        ((192, 384, 5, 1, 300), &[Direct, Gemm, Winograd][..]),
        ((192, 384, 5, 1, 48), &[Direct, Winograd][..]),
        ((192, 768, 3, 1, 100), &[Direct, Winograd][..]),
    ];
    for ((cin, cout, k, d, n), methods) in shapes {
        let s = ConvShape::new(cin, cout, k).dilation(d);
        let (w, bias, x) = (values(cout * cin * k), values(cout + 1)[1..].to_vec(), values(cin * n + 2)[2..].to_vec());
        let pad = ((s.span() - 1) / 2, s.span() - 1 - (s.span() - 1) / 2);
        let conv = Conv1d::new(s, &w, Some(&bias)).expect("a valid shape");
        let mut out = vec![0.0; cout * conv.output_len(n, pad)];
        group.throughput(Throughput::Elements(2 * (cin * cout * k * conv.output_len(n, pad)) as u64)); // flops
        let name = format!("{}/{cin}to{cout}_k{k}_d{d}_n{n}", best.isa());
        let winograd = conv.winograd_weights().ok();
        for &method in methods {
            let conv = conv.with_method(method).expect("one group, stride 1: every method");
            // As a model holds it: weights transformed once, at load.
            let conv = match (method, &winograd) {
                (Winograd, Some(u)) => conv.with_winograd_weights(u).expect("same shape"),
                _ => conv,
            };
            let id = BenchmarkId::new(format!("{method:?}_1thread").to_lowercase(), &name);
            group.bench_function(id, |b| {
                one.install(|| b.iter(|| conv.forward(best, black_box(&x), n, pad, &mut out).expect("sizes match")))
            });
        }
    }
    group.finish();
}

criterion_group!(benches, memory_bound, compute_bound, matrix_multiply, convolutions);
criterion_main!(benches);
