//! The render path (the body of every audio callback) never allocates: this binary installs
//! `assert_no_alloc`'s allocator, which aborts on any allocation inside the renderer, and
//! drives the renderer through every situation it handles.

use std::process::Command;
use std::time::{Duration, Instant};

use assert_no_alloc::AllocDisabler;
use spiral_engine::{SampleRate, Tone, ToneSource};
use spiral_nodes::{play, pull, OutputFormat, PlayOptions, Sink};

#[global_allocator]
static ALLOCATOR: AllocDisabler = AllocDisabler;

fn tone(seconds: f64) -> ToneSource {
    let tones = vec![Tone { hz: 440.0, seconds, amplitude: 1.5 }]; // loud: the limiter works
    ToneSource::new(SampleRate(22_050), tones).unwrap()
}

#[test]
fn pull_render_never_allocates() {
    let format = OutputFormat { sample_rate: SampleRate(48_000), channels: 2 };
    let (mut reader, playback) = pull(tone(0.6), format, PlayOptions::default()).unwrap();
    let controller = playback.controller();
    let mut block = vec![0.0f32; 480 * 2 + 1]; // a trailing partial sample frame too
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut calls = 0;
    while !reader.is_finished() && Instant::now() < deadline {
        match calls {
            5 => controller.set_volume(0.3).unwrap(),
            9 => controller.set_volume(f32::NAN).unwrap(),
            20 => controller.flush().unwrap(),
            _ => {}
        }
        reader.fill(&mut block); // underruns at first, then audio, flushes, the end
        calls += 1;
        std::thread::sleep(Duration::from_millis(2));
    }
    for _ in 0..3 {
        reader.fill(&mut block); // after the end
    }
    assert!(reader.is_finished());
    drop(reader);
    assert!(playback.wait().unwrap().frames > 0);
}

#[test]
fn null_device_render_never_allocates() {
    let options = PlayOptions {
        sink: Sink::Null {
            format: OutputFormat { sample_rate: SampleRate(44_100), channels: 1 },
            period: Duration::from_millis(10),
        },
        ..PlayOptions::default()
    };
    let report = play(tone(0.3), options).unwrap().wait().unwrap();
    assert_eq!(report.frames_dropped, 0);
    assert!(report.callbacks > 20);
}

/// The check above is only worth something if an allocation in the renderer's scope really
/// aborts: run one in a child process and watch it die.
#[test]
fn an_allocation_under_the_guard_aborts() {
    if std::env::var_os("SPIRAL_ALLOC_CANARY").is_some() {
        assert_no_alloc::assert_no_alloc(|| std::hint::black_box(vec![1u8; 64]).len());
        return;
    }
    let exe = std::env::current_exe().unwrap();
    let out = Command::new(exe)
        .args(["--exact", "an_allocation_under_the_guard_aborts", "--nocapture"])
        .env("SPIRAL_ALLOC_CANARY", "1")
        .output()
        .unwrap();
    assert!(!out.status.success(), "an allocation inside assert_no_alloc went unnoticed");
}
