//! A device that disappears mid-stream: spiral plays through a private PulseAudio server,
//! the server is killed, and the rest of the stream must play on (reconnected or on the null
//! sink) with no frame lost and no panic.

mod common;

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

#[test]
fn killing_the_audio_server_mid_stream_loses_nothing() {
    let dir = common::scratch_dir("device-loss");
    let socket = dir.join("native");
    let server = Command::new("pulseaudio")
        .args(["-n", "--daemonize=no", "--exit-idle-time=-1", "--use-pid-file=no", "--log-target=stderr"])
        .args(["-L", "module-null-sink sink_name=doomed rate=48000 channels=2"])
        .arg("-L")
        .arg(format!("module-native-protocol-unix auth-anonymous=1 socket={}", socket.display()))
        .env("PULSE_RUNTIME_PATH", dir.join("runtime"))
        .env("HOME", &dir)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("pulseaudio runs (scripts/setup.sh installs it)");
    let mut server = Killed(server);
    let deadline = Instant::now() + Duration::from_secs(10);
    while !socket.exists() && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(50));
    }
    assert!(socket.exists(), "the private PulseAudio server did not start");

    let report_path = dir.join("report.json");
    let wav_path = dir.join("out.wav");
    let mut spiral = Command::new(env!("CARGO_BIN_EXE_spiral"))
        .args(["play", "--tone", "440", "--seconds", "3", "--sink", "cpal", "-q"])
        .arg("--latency-report")
        .arg(&report_path)
        .arg("--wav")
        .arg(&wav_path)
        .env("PULSE_SERVER", format!("unix:{}", socket.display()))
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    std::thread::sleep(Duration::from_millis(1200));
    server.0.kill().unwrap(); // the device vanishes mid-sentence
    server.0.wait().unwrap();

    let deadline = Instant::now() + Duration::from_secs(30);
    let status = loop {
        if let Some(s) = spiral.try_wait().unwrap() {
            break s;
        }
        assert!(Instant::now() < deadline, "spiral hung after the device vanished");
        std::thread::sleep(Duration::from_millis(50));
    };
    let stderr = std::io::read_to_string(spiral.stderr.take().unwrap()).unwrap();
    assert!(status.success(), "{status}: {stderr}");
    assert!(!stderr.contains("panicked"), "{stderr}");
    assert!(stderr.contains("warning: audio device"), "the loss was not reported: {stderr}");

    let report = common::read_report(&report_path);
    assert!(!report["device_errors"].as_array().unwrap().is_empty(), "{report}");
    assert!(report["fell_back_to_null"] == true || report["device_reconnects"].as_u64() > Some(0), "{report}");
    assert_eq!(report["frames_dropped"], 0, "queued frames were lost: {report}");
    let frames = report["per_frame"].as_array().unwrap();
    assert!(frames.iter().all(|f| f["handed_ms"].is_number()), "a frame never reached a sink");
    // Everything produced reached the file too.
    let wav = hound::WavReader::open(&wav_path).unwrap();
    assert_eq!(wav.duration(), (22_050u64 * 3 * 48_000).div_ceil(22_050) as u32);
}

struct Killed(std::process::Child);

impl Drop for Killed {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}
