//! The Qwen3-TTS speech tokenizer decoder against the reference (qwen-tts 0.1.1): fixtures
//! made by scripts/fixtures/qwen3_tts.py, tiny random-weight checkpoints whose
//! `speech_tokenizer/` decoded each case's codes (`waveform.f32`, the package's
//! `speech_tokenizer.decode`, a whole decode at these lengths).

use std::path::{Path, PathBuf};

use serde_json::Value;
use spiral_engine::kernels::{Cpu, Isa};
use spiral_engine::models::qwen3::speech::{SpeechDecoder, SUBDIR};

fn fixtures() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../tests/fixtures/qwen3")
}

/// Every case directory (one with a reference.json), sorted.
fn cases() -> Vec<PathBuf> {
    let mut cases: Vec<PathBuf> = std::fs::read_dir(fixtures())
        .expect("tests/fixtures/qwen3: run scripts/fixtures/qwen3_tts.py")
        .map(|e| e.unwrap().path())
        .filter(|p| p.join("reference.json").is_file())
        .collect();
    cases.sort();
    assert!(!cases.is_empty(), "no case in tests/fixtures/qwen3: run scripts/fixtures/qwen3_tts.py");
    cases
}

fn read_f32(path: &Path) -> Vec<f32> {
    let bytes = std::fs::read(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    bytes.chunks_exact(4).map(|b| f32::from_le_bytes(b.try_into().unwrap())).collect()
}

/// The case's codes, frame-major, and the frame count.
fn codes(case: &Path) -> (Vec<u32>, usize) {
    let text = std::fs::read_to_string(case.join("reference.json")).unwrap();
    let reference: Value = serde_json::from_str(&text).unwrap();
    let frames = reference["codes"]["frames"].as_array().expect("codes.frames");
    let flat = frames.iter().flat_map(|f| f.as_array().unwrap().iter().map(|c| c.as_u64().unwrap() as u32)).collect();
    (flat, frames.len())
}

/// Signal-to-error ratio of `got` against `want`, in dB.
fn snr_db(got: &[f32], want: &[f32]) -> f64 {
    assert_eq!(got.len(), want.len(), "lengths differ");
    let noise: f64 = got.iter().zip(want).map(|(a, b)| f64::from(a - b).powi(2)).sum();
    let signal: f64 = want.iter().map(|v| f64::from(*v).powi(2)).sum();
    10.0 * (signal / noise.max(1e-300)).log10()
}

fn cpus() -> Vec<Cpu> {
    Isa::ALL.into_iter().filter_map(|i| Cpu::forced(i).ok()).collect()
}

/// `codes` pushed `chunk` frames at a time, the outputs concatenated.
fn streamed(decoder: &SpeechDecoder, cpu: Cpu, codes: &[u32], chunk: usize) -> Vec<f32> {
    let mut stream = decoder.stream();
    let mut audio = Vec::new();
    for piece in codes.chunks(chunk * decoder.codebooks()) {
        let frames = piece.len() / decoder.codebooks();
        let out = stream.push(cpu, piece, frames).unwrap();
        assert_eq!(out.len(), frames * decoder.samples_per_frame(), "a push returns its frames' samples");
        audio.extend(out);
    }
    audio
}

#[test]
fn whole_decode_matches_the_reference_and_every_chunking_matches_it_bit_for_bit_on_every_path() {
    for case in cases() {
        let name = case.file_name().unwrap().to_string_lossy().into_owned();
        let decoder = SpeechDecoder::load(&case.join(SUBDIR)).unwrap();
        let (codes, frames) = codes(&case);
        let want = read_f32(&case.join("waveform.f32"));
        let chunked = read_f32(&case.join("waveform_chunked.f32"));
        eprintln!("{name}: the reference's own chunked_decode vs its whole decode: {:.1} dB", snr_db(&chunked, &want));
        for cpu in cpus() {
            let whole = decoder.decode(cpu, &codes, frames).unwrap();
            let snr = snr_db(&whole, &want);
            eprintln!("{name} on {}: SNR {snr:.1} dB over {} samples", cpu.isa(), want.len());
            assert!(snr >= 40.0, "{name} on {}: SNR {snr:.1} dB", cpu.isa());
            for chunk in [1, 3, frames] {
                assert!(
                    streamed(&decoder, cpu, &codes, chunk) == whole,
                    "{name} on {}: pushes of {chunk} frames differ from the whole decode",
                    cpu.isa()
                );
            }
        }
    }
}

/// A copy of the first case's speech tokenizer directory, to damage.
fn scratch_copy() -> (tempfile::TempDir, PathBuf) {
    let source = cases()[0].join(SUBDIR);
    let dir = tempfile::tempdir().unwrap();
    for file in ["config.json", "model.safetensors"] {
        std::fs::copy(source.join(file), dir.path().join(file)).unwrap();
    }
    let path = dir.path().to_path_buf();
    (dir, path)
}

#[test]
fn bad_codes_are_clear_errors() {
    let case = &cases()[0];
    let decoder = SpeechDecoder::load(&case.join(SUBDIR)).unwrap();
    let (mut codes, frames) = codes(case);
    let (q, size) = (decoder.codebooks(), decoder.config().decoder_config.codebook_size);
    let e = decoder.decode(Cpu::best(), &codes[..codes.len() - 1], frames).unwrap_err().to_string();
    assert!(e.contains(&format!("{q} codebooks")), "{e}");
    let e = decoder.decode(Cpu::best(), &codes, frames + 1).unwrap_err().to_string();
    assert!(e.contains(&format!("for {} frames", frames + 1)), "{e}");
    codes[2 * q + 5] = size as u32;
    let e = decoder.decode(Cpu::best(), &codes, frames).unwrap_err().to_string();
    assert!(e.contains(&format!("frame 2, codebook 5: code {size}")), "{e}");
    codes[2 * q + 5] = u32::MAX;
    assert!(decoder.decode(Cpu::best(), &codes, frames).is_err());
}

#[test]
fn damaged_checkpoints_are_clear_errors() {
    // A truncated weights file.
    let (_keep, dir) = scratch_copy();
    let file = dir.join("model.safetensors");
    let bytes = std::fs::read(&file).unwrap();
    for cut in [0, 7, bytes.len() / 2, bytes.len() - 1] {
        std::fs::write(&file, &bytes[..cut]).unwrap();
        let e = SpeechDecoder::load(&dir).unwrap_err().to_string();
        assert!(e.contains("model.safetensors") && e.contains("truncated"), "cut at {cut}: {e}");
    }

    // A tensor left out.
    let st = safetensors::SafeTensors::deserialize(&bytes).unwrap();
    let missing = "decoder.decoder.3.block.4.conv1.conv.weight";
    let kept: Vec<_> = st.tensors().into_iter().filter(|(name, _)| name != missing).collect();
    assert!(kept.len() + 1 == st.len(), "the fixture has {missing}");
    safetensors::serialize_to_file(kept, None, &file).unwrap();
    let e = SpeechDecoder::load(&dir).unwrap_err().to_string();
    assert!(e.contains(missing) && e.contains("missing"), "{e}");

    // A config that disagrees with the weights, and one the decoder cannot run.
    std::fs::write(&file, &bytes).unwrap();
    let config = std::fs::read_to_string(dir.join("config.json")).unwrap();
    let mut json: Value = serde_json::from_str(&config).unwrap();
    json["decoder_config"]["latent_dim"] = Value::from(24);
    std::fs::write(dir.join("config.json"), json.to_string()).unwrap();
    let e = SpeechDecoder::load(&dir).unwrap_err().to_string();
    assert!(e.contains("has shape") && e.contains("config.json and the weights disagree"), "{e}");
    json["decoder_config"]["hidden_act"] = Value::from("gelu");
    std::fs::write(dir.join("config.json"), json.to_string()).unwrap();
    let e = SpeechDecoder::load(&dir).unwrap_err().to_string();
    assert!(e.contains("config.json") && e.contains("decoder_config.hidden_act"), "{e}");
    std::fs::remove_file(dir.join("config.json")).unwrap();
    let e = SpeechDecoder::load(&dir).unwrap_err().to_string();
    assert!(e.contains("config.json"), "{e}");
}
