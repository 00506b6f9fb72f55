//! A Qwen3-TTS checkpoint's `config.json` and `generation_config.json`, with the field
//! names and defaults of the reference's configuration classes.
//!
//! Values this implementation does not support (another activation, sliding-window
//! attention, a rope type other than the default, attention biases) are errors that name
//! the field, never silently different arithmetic.
//!
//! ```
//! use spiral_engine::models::qwen3::config::Config;
//!
//! let json = r#"{"tts_model_type": "custom_voice", "tts_pad_token_id": 297, "tts_bos_token_id": 298,
//!     "tts_eos_token_id": 299, "talker_config": {
//!     "hidden_size": 64, "intermediate_size": 128, "num_hidden_layers": 2,
//!     "num_attention_heads": 4, "num_key_value_heads": 2, "head_dim": 16,
//!     "vocab_size": 1088, "text_hidden_size": 32, "text_vocab_size": 300,
//!     "codec_eos_token_id": 1065, "codec_think_id": 1066, "codec_nothink_id": 1067,
//!     "codec_think_bos_id": 1068, "codec_think_eos_id": 1069, "codec_pad_id": 1063,
//!     "codec_bos_id": 1064, "spk_id": {"ryan": 1070}, "codec_language_id": {"english": 1060},
//!     "code_predictor_config": {"hidden_size": 32, "intermediate_size": 64,
//!         "num_hidden_layers": 1, "num_attention_heads": 2, "num_key_value_heads": 1,
//!         "vocab_size": 64}}}"#;
//! let config = Config::from_json("config.json", json)?;
//! assert_eq!(config.talker_config.code_predictor_config.stack.num_code_groups, 32);
//! assert_eq!(config.talker_config.speaker("Ryan"), Some(1070));
//! # Ok::<(), spiral_engine::models::qwen3::config::ConfigError>(())
//! ```

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::Deserialize;
use thiserror::Error;

use super::transformer::Widths;

/// Why a config could not be used; each names the file and the field.
#[derive(Debug, Error)]
pub enum ConfigError {
    #[error("cannot read {}: {source}; a Qwen3-TTS model directory has config.json and speech_tokenizer/config.json", file.display())]
    Read {
        file: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{}: at `{path}`: {message}", file.display())]
    Json { file: PathBuf, path: String, message: String },
    #[error("{}: `{field}` {problem}", file.display())]
    Unsupported { file: PathBuf, field: String, problem: String },
}

/// The whole model's configuration (`Qwen3TTSConfig`).
#[derive(Clone, Debug, Deserialize)]
pub struct Config {
    pub talker_config: TalkerConfig,
    /// `custom_voice`, `voice_design` or `base`.
    #[serde(default)]
    pub tts_model_type: Option<String>,
    #[serde(default)]
    pub tokenizer_type: Option<String>,
    #[serde(default = "d_im_start")]
    pub im_start_token_id: u32,
    #[serde(default = "d_im_end")]
    pub im_end_token_id: u32,
    #[serde(default = "d_tts_pad")]
    pub tts_pad_token_id: u32,
    #[serde(default = "d_tts_bos")]
    pub tts_bos_token_id: u32,
    #[serde(default = "d_tts_eos")]
    pub tts_eos_token_id: u32,
}

/// One decoder stack's shape (the talker's and the code predictor's share these fields).
#[derive(Clone, Debug, Deserialize)]
///
/// Fields whose reference defaults agree for both stacks default here; the others
/// (layer count, widths, vocabulary) are required.
pub struct StackConfig {
    #[serde(default = "d_hidden")]
    pub hidden_size: usize,
    pub intermediate_size: usize,
    pub num_hidden_layers: usize,
    #[serde(default = "d_heads")]
    pub num_attention_heads: usize,
    pub num_key_value_heads: usize,
    /// Per-head width; absent means hidden_size / num_attention_heads.
    #[serde(default)]
    pub head_dim: Option<usize>,
    #[serde(default = "d_silu")]
    pub hidden_act: String,
    #[serde(default = "d_eps")]
    pub rms_norm_eps: f32,
    #[serde(default = "d_theta")]
    pub rope_theta: f64,
    #[serde(default)]
    pub rope_scaling: Option<RopeScaling>,
    #[serde(default)]
    pub attention_bias: bool,
    #[serde(default)]
    pub use_sliding_window: bool,
    pub vocab_size: usize,
    #[serde(default = "d_groups")]
    pub num_code_groups: usize,
    /// Positions the rotary embedding was trained for.
    #[serde(default = "d_positions")]
    pub max_position_embeddings: usize,
}

/// `rope_scaling`: the talker's multimodal sections. Spoken text has one position per
/// token on all three axes, so every section rotates by the same angle and the result is
/// the plain rotary embedding; only the rope type changes the arithmetic.
#[derive(Clone, Debug, Deserialize)]
pub struct RopeScaling {
    #[serde(default, alias = "type")]
    pub rope_type: Option<String>,
    #[serde(default)]
    pub mrope_section: Vec<usize>,
    #[serde(default)]
    pub interleaved: bool,
}

/// The talker (`Qwen3TTSTalkerConfig`).
#[derive(Clone, Debug, Deserialize)]
pub struct TalkerConfig {
    #[serde(flatten)]
    pub stack: StackConfig,
    pub code_predictor_config: CodePredictorConfig,
    pub text_hidden_size: usize,
    pub text_vocab_size: usize,
    pub codec_eos_token_id: u32,
    pub codec_think_id: u32,
    pub codec_nothink_id: u32,
    pub codec_think_bos_id: u32,
    pub codec_think_eos_id: u32,
    pub codec_pad_id: u32,
    pub codec_bos_id: u32,
    /// Speaker name (lower case) to its codec token.
    #[serde(default)]
    pub spk_id: BTreeMap<String, SpeakerId>,
    /// Speaker name to the dialect it speaks (a `codec_language_id` key) or `false`.
    #[serde(default)]
    pub spk_is_dialect: BTreeMap<String, Dialect>,
    /// Language name (lower case) to its codec token.
    #[serde(default)]
    pub codec_language_id: BTreeMap<String, u32>,
}

/// The code predictor (`Qwen3TTSTalkerCodePredictorConfig`).
#[derive(Clone, Debug, Deserialize)]
pub struct CodePredictorConfig {
    #[serde(flatten)]
    pub stack: StackConfig,
}

/// A speaker's codec token, written as a number or a one-element list.
#[derive(Clone, Debug, Deserialize)]
#[serde(untagged)]
pub enum SpeakerId {
    One(u32),
    List(Vec<u32>),
}

/// `spk_is_dialect` values: `false` or the dialect's language name.
#[derive(Clone, Debug, Deserialize)]
#[serde(untagged)]
pub enum Dialect {
    No(bool),
    Yes(String),
}

impl StackConfig {
    pub fn head_dim(&self) -> usize {
        self.widths().head_dim
    }

    /// The widths of each layer's projections.
    pub(crate) fn widths(&self) -> Widths {
        let (heads, kv_heads) = (self.num_attention_heads, self.num_key_value_heads);
        Widths::from_config(self.hidden_size, heads, kv_heads, self.head_dim, self.intermediate_size)
    }

    /// Errors for values whose arithmetic is not implemented here.
    fn check(&self, file: &Path, prefix: &str) -> Result<(), ConfigError> {
        let bad = |field: &str, problem: String| {
            Err(ConfigError::Unsupported { file: file.into(), field: format!("{prefix}.{field}"), problem })
        };
        if self.hidden_act != "silu" {
            return bad("hidden_act", format!("is {:?}; Qwen3-TTS uses \"silu\"", self.hidden_act));
        }
        if self.attention_bias {
            return bad("attention_bias", "is true; Qwen3-TTS attention has no biases".into());
        }
        if self.use_sliding_window {
            return bad("use_sliding_window", "is true; only full attention is implemented".into());
        }
        if let Some(rope) = &self.rope_scaling {
            if let Some(t) = rope.rope_type.as_deref().filter(|t| *t != "default") {
                return bad("rope_scaling.rope_type", format!("is {t:?}; only \"default\" is implemented"));
            }
        }
        if let Some((field, problem)) =
            attention_problem(self.num_attention_heads, self.num_key_value_heads, self.head_dim())
        {
            return bad(field, problem);
        }
        if self.hidden_size == 0 || self.vocab_size == 0 || self.num_code_groups < 2 {
            return bad("hidden_size", "or vocab_size is 0, or num_code_groups < 2".into());
        }
        Ok(())
    }
}

/// What is wrong with an attention's head counts and width, if anything: the key-value
/// heads must divide the query heads, and rotary embeddings need an even head width.
pub(crate) fn attention_problem(heads: usize, kv_heads: usize, head_dim: usize) -> Option<(&'static str, String)> {
    if heads == 0 || kv_heads == 0 || !heads.is_multiple_of(kv_heads) {
        return Some((
            "num_key_value_heads",
            format!("is {kv_heads} for {heads} attention heads; it must divide them"),
        ));
    }
    if head_dim == 0 || !head_dim.is_multiple_of(2) {
        return Some(("head_dim", format!("is {head_dim}; rotary embeddings need an even width")));
    }
    None
}

impl TalkerConfig {
    /// The codec token of speaker `name` (case-insensitive), if the checkpoint has it.
    pub fn speaker(&self, name: &str) -> Option<u32> {
        match self.spk_id.get(&name.to_lowercase())? {
            SpeakerId::One(id) => Some(*id),
            SpeakerId::List(ids) => ids.first().copied(),
        }
    }

    /// The dialect speaker `name` speaks, if it is a dialect speaker.
    pub fn dialect(&self, name: &str) -> Option<&str> {
        match self.spk_is_dialect.get(&name.to_lowercase())? {
            Dialect::Yes(d) => Some(d),
            Dialect::No(_) => None,
        }
    }
}

impl Config {
    /// Reads and checks `dir/config.json`.
    pub fn load(dir: &Path) -> Result<Config, ConfigError> {
        let file = dir.join("config.json");
        Config::from_json(&file, &read(&file)?)
    }

    /// Parses and checks a config; `file` is named in errors.
    pub fn from_json(file: impl AsRef<Path>, text: &str) -> Result<Config, ConfigError> {
        let file = file.as_ref();
        let config: Config = parse(file, text)?;
        let talker = &config.talker_config;
        talker.stack.check(file, "talker_config")?;
        talker.code_predictor_config.stack.check(file, "talker_config.code_predictor_config")?;
        let bad = |field: &str, problem: String| {
            Err(ConfigError::Unsupported { file: file.into(), field: field.into(), problem })
        };
        if let Some(t) = config.tts_model_type.as_deref().filter(|t| *t != "custom_voice") {
            return bad("tts_model_type", format!("is {t:?}; spiral speaks with CustomVoice checkpoints"));
        }
        let predictor = &talker.code_predictor_config.stack;
        if predictor.num_code_groups != talker.stack.num_code_groups {
            return bad(
                "talker_config.code_predictor_config.num_code_groups",
                format!("is {} but the talker has {}", predictor.num_code_groups, talker.stack.num_code_groups),
            );
        }
        // Every token the prompt embeds must have an embedding row.
        let vocab = talker.stack.vocab_size;
        let codec_ids = [
            ("codec_eos_token_id", talker.codec_eos_token_id),
            ("codec_think_id", talker.codec_think_id),
            ("codec_nothink_id", talker.codec_nothink_id),
            ("codec_think_bos_id", talker.codec_think_bos_id),
            ("codec_think_eos_id", talker.codec_think_eos_id),
            ("codec_pad_id", talker.codec_pad_id),
            ("codec_bos_id", talker.codec_bos_id),
        ];
        let named = talker.codec_language_id.iter().map(|(l, &id)| (format!("codec_language_id.{l}"), id));
        let speakers = talker.spk_id.keys().filter_map(|s| talker.speaker(s).map(|id| (format!("spk_id.{s}"), id)));
        for (field, id) in codec_ids.iter().map(|(f, id)| (f.to_string(), *id)).chain(named).chain(speakers) {
            if id as usize >= vocab {
                return bad(
                    &format!("talker_config.{field}"),
                    format!("is {id}, beyond the talker's {vocab} codec tokens"),
                );
            }
        }
        for (field, id) in [
            ("tts_pad_token_id", config.tts_pad_token_id),
            ("tts_bos_token_id", config.tts_bos_token_id),
            ("tts_eos_token_id", config.tts_eos_token_id),
        ] {
            if id as usize >= talker.text_vocab_size {
                return bad(field, format!("is {id}, beyond the {} text embeddings", talker.text_vocab_size));
            }
        }
        for (speaker, dialect) in &talker.spk_is_dialect {
            if let Dialect::Yes(d) = dialect {
                if !talker.codec_language_id.contains_key(d) {
                    return bad(
                        &format!("talker_config.spk_is_dialect.{speaker}"),
                        format!("names {d:?}, which codec_language_id lacks"),
                    );
                }
            }
        }
        Ok(config)
    }
}

/// `generation_config.json`: the sampling defaults, with the reference's fallbacks.
#[derive(Clone, Debug, Deserialize, PartialEq)]
pub struct GenerationConfig {
    #[serde(default = "d_true")]
    pub do_sample: bool,
    #[serde(default = "d_top_k")]
    pub top_k: usize,
    #[serde(default = "d_one")]
    pub top_p: f32,
    #[serde(default = "d_temperature")]
    pub temperature: f32,
    #[serde(default = "d_repetition_penalty")]
    pub repetition_penalty: f32,
    #[serde(default = "d_true")]
    pub subtalker_dosample: bool,
    #[serde(default = "d_top_k")]
    pub subtalker_top_k: usize,
    #[serde(default = "d_one")]
    pub subtalker_top_p: f32,
    #[serde(default = "d_temperature")]
    pub subtalker_temperature: f32,
    #[serde(default = "d_max_new_tokens")]
    pub max_new_tokens: usize,
}

impl Default for GenerationConfig {
    fn default() -> Self {
        serde_json::from_str("{}").expect("every field has a default")
    }
}

impl GenerationConfig {
    /// Reads `dir/generation_config.json`; a directory without one gets the defaults.
    pub fn load(dir: &Path) -> Result<GenerationConfig, ConfigError> {
        let file = dir.join("generation_config.json");
        match std::fs::read_to_string(&file) {
            Ok(text) => parse(&file, &text),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(GenerationConfig::default()),
            Err(source) => Err(ConfigError::Read { file, source }),
        }
    }
}

/// The text of a config file.
pub(crate) fn read(file: &Path) -> Result<String, ConfigError> {
    std::fs::read_to_string(file).map_err(|source| ConfigError::Read { file: file.into(), source })
}

/// `text` as `T`, errors naming `file` and the JSON path.
pub(crate) fn parse<T: for<'de> Deserialize<'de>>(file: &Path, text: &str) -> Result<T, ConfigError> {
    let de = &mut serde_json::Deserializer::from_str(text);
    serde_path_to_error::deserialize(de).map_err(|e| ConfigError::Json {
        file: file.into(),
        path: e.path().to_string(),
        message: e.inner().to_string(),
    })
}

// The reference's defaults (configuration_qwen3_tts.py, qwen3_tts_model.py).
fn d_hidden() -> usize {
    1024
}
fn d_heads() -> usize {
    16
}
fn d_silu() -> String {
    "silu".into()
}
fn d_eps() -> f32 {
    1e-6
}
fn d_theta() -> f64 {
    10000.0
}
fn d_groups() -> usize {
    32
}
fn d_positions() -> usize {
    32768
}
fn d_im_start() -> u32 {
    151644
}
fn d_im_end() -> u32 {
    151645
}
fn d_tts_pad() -> u32 {
    151671
}
fn d_tts_bos() -> u32 {
    151672
}
fn d_tts_eos() -> u32 {
    151673
}
fn d_true() -> bool {
    true
}
fn d_top_k() -> usize {
    50
}
fn d_one() -> f32 {
    1.0
}
fn d_temperature() -> f32 {
    0.9
}
fn d_repetition_penalty() -> f32 {
    1.05
}
fn d_max_new_tokens() -> usize {
    2048
}
