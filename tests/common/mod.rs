//! Helpers shared by the integration tests: signal comparison and the audio server.

#![allow(dead_code)] // each test binary uses its own subset

use std::path::PathBuf;
use std::process::Command;

use realfft::RealFftPlanner;

/// Lag (in samples) at which `reference` best matches `captured`, by FFT cross-correlation.
pub fn best_lag(captured: &[f32], reference: &[f32]) -> usize {
    let n = (captured.len() + reference.len()).next_power_of_two();
    let mut planner = RealFftPlanner::<f64>::new();
    let fwd = planner.plan_fft_forward(n);
    let inv = planner.plan_fft_inverse(n);
    let spectrum = |x: &[f32]| {
        let mut buf = vec![0.0f64; n];
        buf.iter_mut().zip(x).for_each(|(b, &v)| *b = v as f64);
        let mut out = fwd.make_output_vec();
        fwd.process(&mut buf, &mut out).unwrap();
        out
    };
    let (a, b) = (spectrum(captured), spectrum(reference));
    let mut prod: Vec<_> = a.iter().zip(&b).map(|(x, y)| x * y.conj()).collect();
    let mut corr = vec![0.0f64; n];
    inv.process(&mut prod, &mut corr).unwrap();
    // Non-negative lags only: the capture starts before playback.
    let valid = captured.len().saturating_sub(reference.len() / 2).max(1);
    corr[..valid].iter().enumerate().fold((0, f64::MIN), |m, (i, &v)| if v > m.1 { (i, v) } else { m }).0
}

/// Signal-to-noise ratio (dB) of `captured` against `reference`, after a least-squares gain
/// (the server's volume is not ours to judge).
pub fn snr_db(captured: &[f32], reference: &[f32]) -> f64 {
    let (mut cr, mut rr) = (0.0f64, 0.0f64);
    for (&c, &r) in captured.iter().zip(reference) {
        cr += c as f64 * r as f64;
        rr += r as f64 * r as f64;
    }
    let gain = cr / rr.max(1e-30);
    let noise: f64 = captured.iter().zip(reference).map(|(&c, &r)| (c as f64 - gain * r as f64).powi(2)).sum();
    10.0 * (rr * gain * gain / noise.max(1e-30)).log10()
}

/// Fails with instructions unless PulseAudio answers and has the `spiral` null sink.
pub fn require_pulse_null_sink() {
    let sinks = Command::new("pactl").args(["list", "short", "sinks"]).output();
    let ok = sinks.as_ref().is_ok_and(|o| {
        o.status.success()
            && String::from_utf8_lossy(&o.stdout).lines().any(|l| l.split_whitespace().nth(1) == Some("spiral"))
    });
    assert!(ok, "no PulseAudio server with the `spiral` null sink: run `scripts/test.sh` (it starts one), or `scripts/setup.sh --test`");
}

/// A fresh directory for one test's files, removed when the test passes (a failing test
/// leaves it, and its path is in the failure's messages).
pub fn scratch_dir(name: &str) -> ScratchDir {
    let dir = std::env::temp_dir().join(format!("spiral-test-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    ScratchDir(dir)
}

/// See [`scratch_dir`]; used as the `Path` it holds.
pub struct ScratchDir(PathBuf);

impl std::ops::Deref for ScratchDir {
    type Target = std::path::Path;
    fn deref(&self) -> &std::path::Path {
        &self.0
    }
}

impl AsRef<std::path::Path> for ScratchDir {
    fn as_ref(&self) -> &std::path::Path {
        &self.0
    }
}

impl AsRef<std::ffi::OsStr> for ScratchDir {
    fn as_ref(&self) -> &std::ffi::OsStr {
        self.0.as_os_str()
    }
}

impl Drop for ScratchDir {
    fn drop(&mut self) {
        if !std::thread::panicking() {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }
}

/// Reads a latency report written by the CLI.
pub fn read_report(path: &std::path::Path) -> serde_json::Value {
    let text = std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    serde_json::from_str(&text).unwrap()
}
