//! f32 GEMM against the `gemm` crate, the two taking turns call by call:
//! `cargo bench --bench gemm_turns`.
//!
//! Criterion measures one implementation for seconds and then the next, so on a shared
//! machine whose speed swings between phases (on the Zen 1 box one core has run at two
//! thirds of the other's speed for a whole run) the ratio depends on which phase each drew.
//! Here every round runs each implementation once on the same matrices, in an order that
//! rotates, and the ratios are of medians and means over the same rounds. The matrices are the criterion bench's;
//! `SPIRAL_BENCH_GEMM` picks the sizes and `SPIRAL_BENCH_SECONDS` the time per size (default
//! 6).

mod common;

use std::time::Instant;

use spiral::engine::kernels::gemm::{gemm, View, ViewMut};
use spiral::engine::kernels::Cpu;

/// An implementation by name: C = A·B into the slice given.
type Product<'a> = (&'static str, &'a dyn Fn(&mut [f32]));

fn main() {
    let cpu = Cpu::best();
    let threads = rayon::current_num_threads();
    let seconds: f64 = std::env::var("SPIRAL_BENCH_SECONDS").ok().and_then(|v| v.parse().ok()).unwrap_or(6.0);
    println!("f32 GEMM, C = A·B, n×n row-major; spiral on {}, {threads} threads; turns call by call", cpu.isa());
    println!("{:>5}  {:<15} {:>10} {:>10} {:>10} {:>8}", "n", "", "p10 µs", "median µs", "mean µs", "GFLOP/s");
    for n in common::gemm_sizes() {
        let (a, b) = (common::values(n * n), common::values(n * n + 3)[3..].to_vec());
        let mut c = vec![0.0f32; n * n];
        let ours = |c: &mut [f32]| {
            let (av, bt) = (View::new(&a, n, n).unwrap(), View::transposed(&b, n, n).unwrap());
            gemm(cpu, av, bt, ViewMut::new(c, n, n).unwrap(), false)
        };
        // Not `matrixmultiply` (the criterion bench has it): its threads stay awake after a
        // product and slowed whichever one came next to 0.55-0.7 of its speed at 256³.
        let runs: [Product; 2] = [("spiral", &ours), ("gemm crate", &|c| common::gemm_crate(n, &a, &b, c, threads))];
        // One untimed round, which also sizes the timed ones.
        let start = Instant::now();
        runs.iter().for_each(|(_, run)| run(&mut c));
        let rounds = ((seconds / start.elapsed().as_secs_f64()) as usize).clamp(5, 2000);
        let mut times = vec![Vec::with_capacity(rounds); runs.len()];
        // Each round starts with the other implementation, so each follows the other as
        // often as itself.
        for round in 0..rounds {
            for i in (0..runs.len()).map(|i| (i + round) % runs.len()) {
                let start = Instant::now();
                runs[i].1(&mut c);
                times[i].push(start.elapsed().as_secs_f64() * 1e6);
            }
        }
        let stats: Vec<(f64, f64, f64)> = times
            .iter_mut()
            .map(|t| {
                t.sort_by(f64::total_cmp);
                (t[t.len() / 10], t[t.len() / 2], t.iter().sum::<f64>() / t.len() as f64)
            })
            .collect();
        for ((name, _), &(p10, median, mean)) in runs.iter().zip(&stats) {
            let gflops = 2.0 * (n * n * n) as f64 / median / 1e3;
            println!("{n:>5}  {name:<15} {p10:>10.0} {median:>10.0} {mean:>10.0} {gflops:>8.1}");
        }
        let (ours, anchor) = (stats[0], stats[1]);
        println!(
            "{n:>5}  spiral / gemm crate speed: {:.3} at the tenth percentile, {:.3} median, {:.3} mean ({rounds} rounds)",
            anchor.0 / ours.0,
            anchor.1 / ours.1,
            anchor.2 / ours.2
        );
    }
}
