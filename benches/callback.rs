//! The audio callback body: time to fill one 10 ms device block (480 sample frames, stereo,
//! 48 kHz) from spiral's ring, against a plain copy of the same block as the anchor (the
//! least any callback must do). The ring is refilled outside the timed region, half a
//! second at a time (the default ring size), so every timed call renders real audio.

use std::hint::black_box;
use std::sync::Arc;
use std::time::{Duration, Instant};

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use ringbuf::traits::{Consumer, Producer, Split};
use ringbuf::HeapRb;
use spiral::nodes::{CallbackRecord, Control, Renderer, Status};
use spiral::SampleRate;

const FRAMES: usize = 480;
const CHANNELS: usize = 2;
const BLOCKS_PER_FILL: u64 = 50;

/// Times `iters` renders of one block, refilling the ring every [`BLOCKS_PER_FILL`] blocks
/// with the clock stopped. `volume` sets a volume first (the ramp then the scaled path).
fn render_audio(iters: u64, volume: Option<f32>) -> Duration {
    let block = FRAMES * CHANNELS;
    let (mut ring, cons) = HeapRb::<f32>::new(block * BLOCKS_PER_FILL as usize).split();
    let (tel_prod, mut telemetry) = HeapRb::<CallbackRecord>::new(BLOCKS_PER_FILL as usize).split();
    let (tx, rx) = crossbeam_channel::bounded(4);
    let status = Arc::new(Status::default());
    let mut renderer = Renderer::new(cons, CHANNELS as u16, SampleRate(48_000), rx, tel_prod, status, 1.0);
    if let Some(v) = volume {
        tx.send(Control::Volume(v)).unwrap();
    }
    let audio: Vec<f32> = (0..block * BLOCKS_PER_FILL as usize).map(|i| ((i as f32) * 0.01).sin() * 0.5).collect();
    let mut out = vec![0.0f32; block];
    let mut timed = Duration::ZERO;
    let mut done = 0;
    while done < iters {
        ring.push_slice(&audio);
        let n = BLOCKS_PER_FILL.min(iters - done);
        let t = Instant::now();
        for _ in 0..n {
            renderer.render(black_box(&mut out), None);
        }
        timed += t.elapsed();
        telemetry.clear();
        done += n;
    }
    timed
}

fn callback(c: &mut Criterion) {
    let mut group = c.benchmark_group("callback_10ms_block");
    group.throughput(Throughput::Elements(FRAMES as u64));
    let source = vec![0.25f32; FRAMES * CHANNELS];
    let mut out = vec![0.0f32; FRAMES * CHANNELS];
    group.bench_function("anchor_copy", |b| b.iter(|| out.copy_from_slice(black_box(&source))));
    group.bench_function("render_audio", |b| b.iter_custom(|iters| render_audio(iters, None)));
    group.bench_function("render_audio_volume_0.5", |b| b.iter_custom(|iters| render_audio(iters, Some(0.5))));
    group.finish();
}

criterion_group!(benches, callback);
criterion_main!(benches);
