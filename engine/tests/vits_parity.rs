//! The en_US-joe-medium voice on spiral's kernels against onnxruntime running the same ONNX
//! file (fixtures made by scripts/fixtures/vits_model.py, noise scales 0 so both are
//! deterministic). The voice is fetched through the same code path a user's first
//! `spiral speak` takes, into the user's cache.

use std::path::PathBuf;
use std::sync::{Arc, OnceLock};

use rand::rngs::StdRng;
use rand::SeedableRng;
use serde_json::Value;
use spiral_engine::kernels::{Cpu, Isa};
use spiral_engine::models::vits::speech::WINDOWS;
use spiral_engine::models::vits::{PiperVoice, Precision, Scales, SpeechSource};
use spiral_engine::Source;

/// The default voice in f32 throughout (the parity runs), fetched and loaded once.
fn voice() -> Arc<PiperVoice> {
    static VOICE: OnceLock<Arc<PiperVoice>> = OnceLock::new();
    VOICE.get_or_init(|| Arc::new(load().with_precision(Precision::F32))).clone()
}

fn load() -> PiperVoice {
    let voice = spiral_engine::voices::default_voice().expect("fetch the default voice");
    PiperVoice::load(&voice).expect("load the default voice")
}

fn fixtures() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../tests/fixtures/vits")
}

fn cases() -> Vec<Value> {
    let text = std::fs::read_to_string(fixtures().join("cases.json")).unwrap();
    serde_json::from_str::<Value>(&text).unwrap()["cases"].as_array().unwrap().clone()
}

/// A case's tensor, if the fixture has it.
fn tensor(case: &Value, name: &str) -> Option<Vec<f32>> {
    let file = case["tensors"][name]["file"].as_str()?;
    let bytes = std::fs::read(fixtures().join(file)).unwrap();
    Some(bytes.chunks_exact(4).map(|b| f32::from_le_bytes(b.try_into().unwrap())).collect())
}

fn ids(case: &Value) -> Vec<i64> {
    case["ids"].as_array().unwrap().iter().map(|v| v.as_i64().unwrap()).collect()
}

fn scales(case: &Value) -> Scales {
    let s: Vec<f32> = case["scales"].as_array().unwrap().iter().map(|v| v.as_f64().unwrap() as f32).collect();
    Scales { noise_scale: s[0], length_scale: s[1], noise_w: s[2] }
}

/// Signal-to-error ratio of `got` against `want`, in dB.
fn snr_db(got: &[f32], want: &[f32]) -> f64 {
    assert_eq!(got.len(), want.len(), "lengths differ");
    let noise: f64 = got.iter().zip(want).map(|(a, b)| f64::from(a - b).powi(2)).sum();
    let signal: f64 = want.iter().map(|v| f64::from(*v).powi(2)).sum();
    10.0 * (signal / noise.max(1e-300)).log10()
}

/// `got` within `rel` of `want`, relative to the largest value of `want`.
fn close(what: &str, got: &[f32], want: &[f32], rel: f32) {
    assert_eq!(got.len(), want.len(), "{what}: lengths differ");
    let scale = want.iter().fold(1e-6f32, |m, v| m.max(v.abs()));
    let worst = got.iter().zip(want).map(|(a, b)| (a - b).abs()).fold(0.0f32, f32::max);
    assert!(worst <= rel * scale, "{what}: worst error {worst:e} above {rel:e} of {scale}");
}

fn cpus() -> Vec<Cpu> {
    Isa::ALL.into_iter().filter_map(|i| Cpu::forced(i).ok()).filter(|c| c.isa() <= Isa::Avx512Bf16).collect()
}

#[test]
fn every_stage_matches_onnxruntime_on_every_path() {
    let voice = voice();
    let model = voice.model();
    let mut rng = StdRng::seed_from_u64(0);
    for cpu in cpus() {
        for case in cases() {
            let name = format!("{} on {}", case["name"], cpu.isa());
            let scales = scales(&case);
            let encoded = model.encoder().forward(cpu, &ids(&case)).unwrap();
            for (key, got) in [("x", &encoded.hidden), ("m_p", &encoded.mean), ("logs_p", &encoded.log_scale)] {
                if let Some(want) = tensor(&case, key) {
                    close(&format!("{name} {key}"), got, &want, 1e-5);
                }
            }
            let durations = model.durations(cpu, &encoded, scales, &mut rng).unwrap();
            let want: Vec<usize> = tensor(&case, "w_ceil").unwrap().iter().map(|&d| d as usize).collect();
            assert_eq!(durations, want, "{name}: durations");
            let prior = model.prior(&encoded, &durations, scales, &mut rng).unwrap();
            if let Some(want) = tensor(&case, "z_p") {
                close(&format!("{name} z_p"), &prior.z, &want, 1e-5);
            }
            let latent = model.latent(cpu, &prior).unwrap();
            if let Some(want) = tensor(&case, "z") {
                close(&format!("{name} z"), &latent.z, &want, 1e-5);
            }
            let audio = model.decode(cpu, &latent).unwrap();
            let snr = snr_db(&audio, &tensor(&case, "audio").unwrap());
            eprintln!("{name}: audio SNR {snr:.1} dB against onnxruntime");
            // The bar is 40 dB; f32 arithmetic gives about 90, so 60 catches any real slip.
            assert!(snr >= 60.0, "{name}: audio SNR {snr:.1} dB");
        }
    }
}

/// bf16 products in the last two upsampling stages: within the 40 dB of the
/// reference on every fixture sentence (measured 46-48), on every level this machine has
/// (below the BF16 level the same rounding runs on the f32 kernels).
#[test]
fn mixed_precision_stays_within_40_db_of_onnxruntime() {
    let voice = load().with_precision(Precision::Mixed);
    let model = voice.model();
    let mut rng = StdRng::seed_from_u64(0);
    for cpu in cpus() {
        for case in cases() {
            let audio = model.synthesize(cpu, &ids(&case), scales(&case), &mut rng).unwrap();
            let snr = snr_db(&audio, &tensor(&case, "audio").unwrap());
            eprintln!("{} on {}, mixed precision: audio SNR {snr:.1} dB", case["name"], cpu.isa());
            assert!(snr >= 40.0, "{}: mixed-precision audio SNR {snr:.1} dB", case["name"]);
        }
    }
}

#[test]
fn the_fixture_texts_give_the_reference_phoneme_ids() {
    let voice = voice();
    for case in cases() {
        let mut sentences = Vec::new();
        voice.sentences(case["text"].as_str().unwrap(), |s| sentences.push(s)).unwrap();
        assert_eq!(sentences.len(), 1, "{}", case["name"]);
        assert!(sentences[0].dropped.is_empty());
        assert_eq!(sentences[0].ids, ids(&case), "{}", case["name"]);
    }
}

/// `[channels, frames]` fed to `feed` in chunks of `chunk` frames, the last one with the end
/// (`true`); the pieces it returns (channel-major), joined in time.
fn streamed(
    z: &[f32],
    channels: usize,
    frames: usize,
    chunk: usize,
    mut feed: impl FnMut(&[f32], usize, bool) -> (Vec<f32>, usize),
) -> Vec<f32> {
    let mut pieces = Vec::new();
    for start in (0..frames).step_by(chunk) {
        let n = chunk.min(frames - start);
        let piece: Vec<f32> = (0..channels).flat_map(|c| z[c * frames + start..][..n].to_vec()).collect();
        pieces.push(feed(&piece, n, start + n == frames));
    }
    let total: usize = pieces.iter().map(|p| p.1).sum();
    let rows = pieces.iter().find(|p| p.1 > 0).map_or(0, |p| p.0.len() / p.1);
    let mut whole = vec![0.0; rows * total];
    let mut at = 0;
    for (data, n) in pieces {
        for r in 0..rows {
            whole[r * total + at..][..n].copy_from_slice(&data[r * n..][..n]);
        }
        at += n;
    }
    whole
}

#[test]
fn chunks_of_the_flow_and_of_the_decoder_equal_the_whole() {
    let voice = voice();
    let model = voice.model();
    let cpu = Cpu::best();
    let case = &cases()[3];
    let mut rng = StdRng::seed_from_u64(0);
    let encoded = model.encoder().forward(cpu, &ids(case)).unwrap();
    let durations = model.durations(cpu, &encoded, scales(case), &mut rng).unwrap();
    let prior = model.prior(&encoded, &durations, scales(case), &mut rng).unwrap();
    let whole = model.latent(cpu, &prior).unwrap();
    for chunk in [1, 7, 48, prior.frames - 1] {
        let mut flow = model.flow().stream();
        let out = streamed(&prior.z, prior.channels, prior.frames, chunk, |z, n, end| {
            let l = if end { flow.finish(cpu, z, n) } else { flow.push(cpu, z, n) }.unwrap();
            (l.z, l.frames)
        });
        assert!(out == whole.z, "the flow fed {chunk} frames at a time differs from the whole");
    }
    // Fed multiples of 4 frames, as the speech source feeds it, the flow lags by its
    // look-ahead and no more: the first window comes out whole (and not with fewer frames,
    // which would shrink the first audio).
    let (look_ahead, mut flow) = (model.flow().look_ahead(), model.flow().stream());
    let (mut fed, mut out) = (0, 0);
    for end in [8, 8 + 4 * 3, WINDOWS[0] + look_ahead, WINDOWS[1] + look_ahead] {
        let z: Vec<f32> = (0..prior.channels).flat_map(|c| prior.z[c * prior.frames..][fed..end].to_vec()).collect();
        out += flow.push(cpu, &z, end - fed).unwrap().frames;
        fed = end;
        assert_eq!(out, end.saturating_sub(look_ahead), "the flow fed {end} frames");
    }
    let audio = model.decode(cpu, &whole).unwrap();
    for chunk in [1, 3, 16] {
        let mut generator = model.generator().stream();
        let out = streamed(&whole.z, whole.channels, whole.frames, chunk, |z, n, end| {
            let a = if end { generator.finish(cpu, z, n) } else { generator.push(cpu, z, n) }.unwrap();
            let len = a.len();
            (a, len)
        });
        assert!(out == audio, "chunks of {chunk} frames differ from the whole decode");
    }
    // Ending with no frames gives what ending with the last ones does.
    let mut generator = model.generator().stream();
    let mut out = generator.push(cpu, &whole.z, whole.frames).unwrap();
    out.extend(generator.finish(cpu, &[], 0).unwrap());
    assert!(out == audio, "an empty last push differs");
}

#[test]
fn the_speech_source_streams_what_the_reference_says() {
    let voice = voice();
    let case = &cases()[4];
    let mut source = SpeechSource::new(voice.clone(), case["text"].as_str().unwrap()).with_scales(scales(case));
    assert_eq!(source.sample_rate().0, 22_050);
    let mut audio = Vec::new();
    let mut frames = 0;
    while let Some(frame) = source.next_frame().unwrap() {
        assert_eq!(frame.index.0, frames);
        frames += 1;
        audio.extend(frame.samples);
    }
    assert!(frames > 1, "one sentence should arrive in several frames");
    let snr = snr_db(&audio, &tensor(case, "audio").unwrap());
    assert!(snr >= 60.0, "streamed audio SNR {snr:.1} dB");
}

#[test]
fn odd_text_is_spoken_or_skipped_never_a_panic() {
    let voice = voice();
    let speak = |text: &str| {
        let mut warnings = Vec::new();
        let (tx, rx) = std::sync::mpsc::channel();
        let mut source = SpeechSource::new(voice.clone(), text).on_warning(move |w| tx.send(w).unwrap());
        let mut samples = 0;
        while let Some(frame) = source.next_frame().unwrap() {
            samples += frame.samples.len();
        }
        warnings.extend(rx.try_iter());
        (samples, warnings)
    };
    assert_eq!(speak("").0, 0);
    assert_eq!(speak("   \n\t ").0, 0);
    let (samples, _) = speak("Emoji 🦀 and symbols ∑ ≠ §, then words.");
    assert!(samples > 22_050 / 2);
    let (samples, _) = speak("One.\nTwo!\n\nThree? Four; five: six.");
    assert!(samples > 22_050);
    let err = voice.model().encoder().forward(Cpu::best(), &[1, 0, 999, 2]).err().unwrap().to_string();
    assert!(err.contains("999"), "{err}");
    // No ids at all (the library's callers may pass them): an empty sentence, no audio.
    let mut rng = StdRng::seed_from_u64(0);
    let scales = Scales { noise_scale: 0.0, length_scale: 1.0, noise_w: 0.0 };
    assert!(voice.model().synthesize(Cpu::best(), &[], scales, &mut rng).unwrap().is_empty());
}
