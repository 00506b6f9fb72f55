//! A Piper voice's `.onnx.json`: sample rate, phonemizer settings, default synthesis
//! scales and the phoneme-symbol to id table.
//!
//! Absent `inference` values and `phoneme_type` take the defaults piper-tts uses
//! (noise_scale 0.667, length_scale 1, noise_w 0.8, phoneme_type "espeak"), so a config
//! piper accepts is accepted here; everything else is required.
//!
//! ```
//! use spiral_engine::models::vits::config::VoiceConfig;
//!
//! let json = r#"{"audio": {"sample_rate": 22050}, "espeak": {"voice": "en-us"},
//!     "phoneme_id_map": {"_": [0], "^": [1], "$": [2], "a": [3]},
//!     "num_symbols": 4, "num_speakers": 1}"#;
//! let config = VoiceConfig::from_json("voice.onnx.json", json)?;
//! assert_eq!((config.sample_rate, config.noise_w), (22_050, 0.8));
//! # Ok::<(), spiral_engine::models::vits::config::ConfigError>(())
//! ```

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use serde::Deserialize;
use thiserror::Error;

/// The settings of one Piper voice.
#[derive(Clone, Debug, PartialEq)]
pub struct VoiceConfig {
    /// Output sample rate in Hz (`audio.sample_rate`).
    pub sample_rate: u32,
    /// espeak-ng voice used to phonemize (`espeak.voice`, e.g. `en-us`).
    pub espeak_voice: String,
    /// Default noise scale of the prior (`inference.noise_scale`).
    pub noise_scale: f32,
    /// Default speaking-rate scale, larger is slower (`inference.length_scale`).
    pub length_scale: f32,
    /// Default noise scale of the duration predictor (`inference.noise_w`).
    pub noise_w: f32,
    /// How text becomes symbols: `espeak` (IPA phonemes) or `text` (characters).
    pub phoneme_type: String,
    /// Symbol (one character, as a string) to the ids it becomes.
    pub phoneme_id_map: HashMap<String, Vec<i64>>,
    /// Rows of the model's symbol embedding.
    pub num_symbols: usize,
    /// Speakers in a multi-speaker voice, 1 otherwise.
    pub num_speakers: usize,
    /// Speaker name to id (empty for single-speaker voices).
    pub speaker_id_map: HashMap<String, i64>,
}

/// Why a voice config could not be used; each names the file and what to fix.
#[derive(Debug, Error)]
pub enum ConfigError {
    #[error("cannot read voice config {file}: {source}; a Piper voice needs its .onnx.json beside the .onnx")]
    Read {
        file: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("voice config {file}: at `{path}`: {message}; fix the file or download the voice again")]
    Json { file: PathBuf, path: String, message: String },
    #[error("voice config {file}: `{field}` {problem}; fix the file or download the voice again")]
    Invalid { file: PathBuf, field: String, problem: String },
}

/// The file as JSON; field names are Piper's.
#[derive(Deserialize)]
struct RawConfig {
    audio: RawAudio,
    espeak: RawEspeak,
    #[serde(default)]
    inference: RawInference,
    #[serde(default = "default_phoneme_type")]
    phoneme_type: String,
    phoneme_id_map: HashMap<String, Vec<i64>>,
    num_symbols: usize,
    num_speakers: usize,
    #[serde(default)]
    speaker_id_map: Option<HashMap<String, i64>>,
}

#[derive(Deserialize)]
struct RawAudio {
    sample_rate: u32,
}

#[derive(Deserialize)]
struct RawEspeak {
    voice: String,
}

#[derive(Deserialize)]
struct RawInference {
    #[serde(default = "default_noise_scale")]
    noise_scale: f32,
    #[serde(default = "default_length_scale")]
    length_scale: f32,
    #[serde(default = "default_noise_w")]
    noise_w: f32,
}

impl Default for RawInference {
    fn default() -> Self {
        RawInference {
            noise_scale: default_noise_scale(),
            length_scale: default_length_scale(),
            noise_w: default_noise_w(),
        }
    }
}

fn default_phoneme_type() -> String {
    "espeak".into()
}
fn default_noise_scale() -> f32 {
    0.667
}
fn default_length_scale() -> f32 {
    1.0
}
fn default_noise_w() -> f32 {
    0.8
}

/// Symbols every Piper voice uses: pad between phonemes, begin and end of an utterance.
pub const REQUIRED_SYMBOLS: [&str; 3] = ["_", "^", "$"];

impl VoiceConfig {
    /// Reads and checks the voice config at `path`.
    pub fn from_file(path: impl AsRef<Path>) -> Result<VoiceConfig, ConfigError> {
        let path = path.as_ref();
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read { file: path.into(), source })?;
        VoiceConfig::from_json(path, &text)
    }

    /// Parses and checks a voice config held in memory; `file` is named in errors.
    pub fn from_json(file: impl AsRef<Path>, text: &str) -> Result<VoiceConfig, ConfigError> {
        let file = file.as_ref();
        let raw: RawConfig =
            serde_path_to_error::deserialize(&mut serde_json::Deserializer::from_str(text)).map_err(|e| {
                ConfigError::Json { file: file.into(), path: e.path().to_string(), message: e.inner().to_string() }
            })?;
        let config = VoiceConfig {
            sample_rate: raw.audio.sample_rate,
            espeak_voice: raw.espeak.voice,
            noise_scale: raw.inference.noise_scale,
            length_scale: raw.inference.length_scale,
            noise_w: raw.inference.noise_w,
            phoneme_type: raw.phoneme_type,
            phoneme_id_map: raw.phoneme_id_map,
            num_symbols: raw.num_symbols,
            num_speakers: raw.num_speakers,
            speaker_id_map: raw.speaker_id_map.unwrap_or_default(),
        };
        config.validate().map_err(|(field, problem)| ConfigError::Invalid { file: file.into(), field, problem })?;
        Ok(config)
    }

    /// The first problem found, as (field, what is wrong with it).
    fn validate(&self) -> Result<(), (String, String)> {
        let fail = |field: &str, problem: String| Err((field.to_string(), problem));
        if self.sample_rate == 0 {
            return fail("audio.sample_rate", "is 0; it must be a positive rate in Hz".into());
        }
        if self.espeak_voice.trim().is_empty() {
            return fail("espeak.voice", "is empty; it names an espeak-ng voice such as en-us".into());
        }
        for (field, value) in [("inference.noise_scale", self.noise_scale), ("inference.noise_w", self.noise_w)] {
            if !(value.is_finite() && value >= 0.0) {
                return fail(field, format!("is {value}; it must be a finite number >= 0"));
            }
        }
        if !(self.length_scale.is_finite() && self.length_scale > 0.0) {
            return fail("inference.length_scale", format!("is {}; it must be a finite number > 0", self.length_scale));
        }
        if self.num_symbols == 0 {
            return fail("num_symbols", "is 0; the model has at least one symbol".into());
        }
        if self.num_speakers == 0 {
            return fail("num_speakers", "is 0; a voice has at least one speaker".into());
        }
        for symbol in REQUIRED_SYMBOLS {
            if !self.phoneme_id_map.contains_key(symbol) {
                return fail("phoneme_id_map", format!("has no {symbol:?}, which every Piper voice needs"));
            }
        }
        // Sorted so the same file always reports the same first problem.
        let mut symbols: Vec<&String> = self.phoneme_id_map.keys().collect();
        symbols.sort_unstable();
        for symbol in symbols {
            let ids = &self.phoneme_id_map[symbol];
            if ids.is_empty() {
                return fail(&format!("phoneme_id_map[{symbol:?}]"), "is an empty list of ids".into());
            }
            if let Some(id) = ids.iter().find(|&&id| id < 0 || id as u64 >= self.num_symbols as u64) {
                let problem = format!("has id {id}, outside 0..{} (num_symbols)", self.num_symbols);
                return fail(&format!("phoneme_id_map[{symbol:?}]"), problem);
            }
        }
        let mut speakers: Vec<(&String, &i64)> = self.speaker_id_map.iter().collect();
        speakers.sort_unstable();
        if let Some((name, id)) = speakers.into_iter().find(|(_, &id)| id < 0 || id as u64 >= self.num_speakers as u64)
        {
            let problem = format!("has id {id}, outside 0..{} (num_speakers)", self.num_speakers);
            return fail(&format!("speaker_id_map[{name:?}]"), problem);
        }
        Ok(())
    }

    /// The ids of `symbol`, if the voice has it.
    pub fn ids_of(&self, symbol: &str) -> Option<&[i64]> {
        self.phoneme_id_map.get(symbol).map(Vec::as_slice)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::{json, Value};

    fn minimal() -> Value {
        json!({
            "audio": {"sample_rate": 16000, "quality": "low"},
            "espeak": {"voice": "de"},
            "inference": {"noise_scale": 0.5, "length_scale": 1.2, "noise_w": 0.6},
            "phoneme_type": "espeak",
            "phoneme_id_map": {"_": [0], "^": [1], "$": [2], "a": [3, 4]},
            "num_symbols": 5,
            "num_speakers": 2,
            "speaker_id_map": {"ann": 0, "bob": 1},
            "piper_version": "1.0.0"
        })
    }

    fn parse(v: &Value) -> Result<VoiceConfig, String> {
        VoiceConfig::from_json("/v/x.onnx.json", &v.to_string()).map_err(|e| e.to_string())
    }

    fn error_with(edit: impl FnOnce(&mut Value)) -> String {
        let mut v = minimal();
        edit(&mut v);
        let e = parse(&v).expect_err("the edited config should be refused");
        assert!(e.contains("/v/x.onnx.json"), "error does not name the file: {e}");
        e
    }

    #[test]
    fn all_fields_read_and_piper_defaults_fill_the_optional_ones() {
        let c = parse(&minimal()).unwrap();
        assert_eq!((c.sample_rate, c.espeak_voice.as_str(), c.phoneme_type.as_str()), (16_000, "de", "espeak"));
        assert_eq!((c.noise_scale, c.length_scale, c.noise_w), (0.5, 1.2, 0.6));
        assert_eq!((c.num_symbols, c.num_speakers), (5, 2));
        assert_eq!(c.ids_of("a"), Some(&[3, 4][..]));
        assert_eq!(c.speaker_id_map["bob"], 1);

        let mut v = minimal();
        let o = v.as_object_mut().unwrap();
        o.remove("inference");
        o.remove("phoneme_type");
        o.insert("speaker_id_map".into(), Value::Null);
        let c = parse(&v).unwrap();
        assert_eq!((c.noise_scale, c.length_scale, c.noise_w), (0.667, 1.0, 0.8));
        assert_eq!(c.phoneme_type, "espeak");
        assert!(c.speaker_id_map.is_empty());
    }

    #[test]
    fn missing_or_mistyped_fields_are_named() {
        let e = error_with(|v| drop(v["audio"].as_object_mut().unwrap().remove("sample_rate")));
        assert!(e.contains("`audio`") && e.contains("sample_rate"), "{e}");
        let e = error_with(|v| v["audio"]["sample_rate"] = json!("fast"));
        assert!(e.contains("`audio.sample_rate`"), "{e}");
        let e = error_with(|v| v["phoneme_id_map"]["a"] = json!(["x"]));
        assert!(e.contains("phoneme_id_map.a"), "{e}");
        let e = error_with(|v| drop(v.as_object_mut().unwrap().remove("num_symbols")));
        assert!(e.contains("num_symbols"), "{e}");
        let e = VoiceConfig::from_json("/v/x.onnx.json", "{ not json").unwrap_err().to_string();
        assert!(e.contains("/v/x.onnx.json") && e.contains("key must be a string"), "{e}");
        let e = VoiceConfig::from_file("/nonexistent/x.onnx.json").unwrap_err().to_string();
        assert!(e.contains("/nonexistent/x.onnx.json") && e.contains("cannot read"), "{e}");
    }

    #[test]
    fn bad_values_are_refused() {
        assert!(error_with(|v| v["audio"]["sample_rate"] = json!(0)).contains("`audio.sample_rate` is 0"));
        assert!(error_with(|v| v["inference"]["length_scale"] = json!(0)).contains("inference.length_scale"));
        assert!(error_with(|v| v["inference"]["noise_w"] = json!(-1.0)).contains("inference.noise_w"));
        let e = error_with(|v| v["phoneme_id_map"]["a"] = json!([3, 5]));
        assert!(e.contains("phoneme_id_map[\"a\"]") && e.contains("id 5, outside 0..5"), "{e}");
        assert!(error_with(|v| v["phoneme_id_map"]["a"] = json!([-1])).contains("id -1"));
        assert!(error_with(|v| v["phoneme_id_map"]["a"] = json!([])).contains("empty list"));
        for symbol in REQUIRED_SYMBOLS {
            let e = error_with(|v| drop(v["phoneme_id_map"].as_object_mut().unwrap().remove(symbol)));
            assert!(e.contains(&format!("has no {symbol:?}")), "{e}");
        }
        assert!(error_with(|v| v["speaker_id_map"]["bob"] = json!(2)).contains("speaker_id_map[\"bob\"]"));
        assert!(error_with(|v| v["num_speakers"] = json!(0)).contains("num_speakers"));
        assert!(error_with(|v| v["espeak"]["voice"] = json!(" ")).contains("espeak.voice"));
    }
}
