//! End to end through a real audio server: spiral plays a known signal through cpal (ALSA,
//! routed to PulseAudio) at the default buffer size; the null sink's monitor is captured
//! with `parec` and compared with the analytic signal at the capture rate.

mod common;

use std::process::{Command, Stdio};
use std::time::Duration;

use spiral::{demo_phrase, SampleRate};

const CAPTURE_RATE: u32 = 48_000;

#[test]
fn tone_through_pulseaudio_is_captured_intact() {
    common::require_pulse_null_sink();
    let dir = common::scratch_dir("pulse-e2e");
    let capture_path = dir.join("capture.f32");
    let report_path = dir.join("report.json");
    let (source_rate, base_hz, seconds) = (22_050, 330.0, 2.0);

    let capture = Command::new("parec")
        .args(["-d", "spiral.monitor", "--raw", "--format=float32le", "--channels=2", "--latency-msec=10"])
        .arg(format!("--rate={CAPTURE_RATE}"))
        .stdout(std::fs::File::create(&capture_path).unwrap())
        .spawn()
        .expect("parec (pulseaudio-utils) runs");
    let mut capture = KillOnDrop(capture);
    std::thread::sleep(Duration::from_millis(300));
    // An idle null sink sleeps in 2 s blocks and adopts the recorder's 10 ms latency only
    // when it next wakes; a suspend/resume cycle makes it wake now, so playback starts on a
    // sink that behaves like a sound card.
    for suspend in ["1", "0"] {
        Command::new("pactl").args(["suspend-sink", "spiral", suspend]).status().unwrap();
    }
    std::thread::sleep(Duration::from_millis(100));

    let status = Command::new(env!("CARGO_BIN_EXE_spiral"))
        .args(["play", "--tone", &base_hz.to_string(), "--seconds", &seconds.to_string()])
        .args(["--tone-rate", &source_rate.to_string(), "--sink", "cpal", "--no-fallback", "-q"])
        .arg("--latency-report")
        .arg(&report_path)
        .env("PULSE_SINK", "spiral")
        .stdout(Stdio::null())
        .status()
        .unwrap();
    assert!(status.success(), "spiral play failed: {status}");
    std::thread::sleep(Duration::from_millis(400));
    capture.0.kill().ok();
    capture.0.wait().ok();

    let report = common::read_report(&report_path);
    assert_eq!(report["underruns"], 0, "{report}");
    assert_eq!(report["fell_back_to_null"], false, "{report}");
    assert_eq!(report["sink"], "cpal");

    let bytes = std::fs::read(&capture_path).unwrap();
    let left: Vec<f32> = bytes.chunks_exact(8).map(|f| f32::from_le_bytes([f[0], f[1], f[2], f[3]])).collect();
    let phrase = demo_phrase(SampleRate(source_rate), base_hz, seconds).unwrap();
    let len = (phrase.len_frames() * u64::from(CAPTURE_RATE)).div_ceil(u64::from(source_rate)) as usize;
    let at = |offset: f64| -> Vec<f32> {
        (0..len).map(|n| phrase.value_at((n as f64 - offset) / f64::from(CAPTURE_RATE))).collect()
    };
    // Coarse alignment by cross-correlation, then the best fractional offset nearby (the
    // reference is analytic, so it can be evaluated between samples).
    let coarse = common::best_lag(&left, &at(0.0));
    let (snr, lag) = (-16..=16)
        .map(|quarter| {
            let lag = coarse as f64 + quarter as f64 / 4.0;
            let start = lag.floor() as usize;
            let window = left.get(start..start + len).unwrap_or(&[]);
            (common::snr_db(window, &at(lag - start as f64)), lag)
        })
        .fold((f64::MIN, 0.0), |best, x| if x.0 > best.0 { x } else { best });
    println!(
        "captured {} samples, signal at {lag:.2}, SNR {snr:.1} dB, reconnects {}",
        left.len(),
        report["device_reconnects"]
    );
    assert!(snr >= 30.0, "SNR {snr:.1} dB against the resampled signal (report {report})");
}

struct KillOnDrop(std::process::Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}
