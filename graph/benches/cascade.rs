//! The frame graph's costs: cascade queries per second at 10 k, 100 k and 1 M retained
//! nodes, the bytes each node takes with the graph's overhead, and the scheduler's work per
//! VITS frame (route, analyse, file), to set against the ~0.23 ms the generator spends on
//! one.
//!
//! Nodes are spread as speech spreads them: roles 15 % silence, 55 % voiced, 20 % unvoiced,
//! 10 % attack; palette indices uniform over 256; band levels around -40 dB with 12 dB of
//! spread. Run: `cargo bench -p spiral-graph --bench cascade`.

use std::hint::black_box;

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use spiral_engine::route::{Pending, Route, Router};
use spiral_engine::SampleRate;
use spiral_graph::{AudioNode, CascadeConfig, FrameGraph, Phase, Role, Scheduler, SchedulerConfig, SpiralAddress};

struct Lcg(u64);

impl Lcg {
    fn next(&mut self) -> f32 {
        self.0 = self.0.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
        (self.0 >> 40) as f32 / (1u64 << 24) as f32
    }
}

fn node(rng: &mut Lcg, position: u32) -> AudioNode {
    let r = rng.next();
    let role = match r {
        r if r < 0.15 => Role::Silence,
        r if r < 0.70 => Role::Voiced,
        r if r < 0.90 => Role::Unvoiced,
        _ => Role::Attack,
    };
    let level = -40.0 + 24.0 * (rng.next() - 0.5);
    let bands = std::array::from_fn(|b| level - b as f32 * 0.5 + 6.0 * (rng.next() - 0.5));
    let palette = (rng.next() * 256.0) as u8;
    AudioNode::new(&bands, 0, Phase::default(), SpiralAddress::new(0, position, role), palette, Route::Decode)
}

fn graph(n: usize) -> FrameGraph {
    let mut g = FrameGraph::new(CascadeConfig { retention: n, ..CascadeConfig::default() });
    let mut rng = Lcg(1);
    for i in 0..n {
        g.insert(node(&mut rng, i as u32), &[]);
    }
    g
}

fn cascade(c: &mut Criterion) {
    let mut group = c.benchmark_group("cascade_search");
    for n in [10_000, 100_000, 1_000_000] {
        let mut g = graph(n);
        println!(
            "{n} nodes: {:.1} bytes per node (60 of them the node), {} edges",
            g.bytes() as f64 / n as f64,
            g.graph().edge_count()
        );
        let mut rng = Lcg(7);
        let queries: Vec<AudioNode> = (0..1024).map(|i| node(&mut rng, i)).collect();
        group.throughput(Throughput::Elements(1));
        group.bench_with_input(BenchmarkId::new("k4", n), &n, |b, _| {
            let mut i = 0;
            b.iter(|| {
                i = (i + 1) % queries.len();
                black_box(g.cascade_search(&queries[i], &[], 4))
            })
        });
        let s = g.stats();
        let [heel, hip, twig, leaf] = s.rejected();
        println!(
            "{n} nodes: per query {:.0} candidates; rejected by HEEL {:.1} %, HIP {:.1} %, TWIG {:.2} %, LEAF {:.3} %",
            s.heel_in as f64 / s.queries as f64,
            100.0 * heel,
            100.0 * hip,
            100.0 * twig,
            100.0 * leaf
        );
    }
    group.finish();
}

/// One VITS frame through the scheduler: its hint, then its analysis and filing.
fn scheduler(c: &mut Criterion) {
    const DIMS: usize = 192;
    const HOP: usize = 256;
    let mut rng = Lcg(3);
    let frames: Vec<(Vec<f32>, Vec<f32>)> = (0..4096)
        .map(|_| {
            let z = (0..DIMS).map(|_| rng.next() - 0.5).collect();
            let audio = (0..HOP).map(|_| 0.2 * (rng.next() - 0.5)).collect();
            (z, audio)
        })
        .collect();
    let mut s = Scheduler::new(SchedulerConfig {
        cascade: CascadeConfig { dims: DIMS, ..CascadeConfig::default() },
        ..SchedulerConfig::default()
    });
    let mut position = 0u64;
    c.bench_function("scheduler_per_vits_frame", |b| {
        b.iter(|| {
            let (z, audio) = &frames[position as usize % frames.len()];
            let pending = Pending { position, features: z, pause: false };
            let hint = s.assign_route_hints(&[pending]);
            s.played(&pending, hint[0].route, audio, SampleRate(22_050));
            position += 1;
        })
    });
}

criterion_group!(benches, cascade, scheduler);
criterion_main!(benches);
