//! The speech tokenizer's `speech_tokenizer/config.json` (`Qwen3TTSTokenizerV2Config`): the
//! decoder's shape (`decoder_config`, with the reference's defaults) and the output rate.
//!
//! The encoder's half of the file is not read: spiral only decodes. Values whose arithmetic
//! is not implemented here (another activation, attention biases, a rope type other than
//! the default, an upsampling product that disagrees with `decode_upsample_rate`) are errors
//! that name the file and the field.
//!
//! ```
//! use spiral_engine::models::qwen3::speech::config::SpeechConfig;
//!
//! let json = r#"{"model_type": "qwen3_tts_tokenizer_12hz", "decode_upsample_rate": 1920,
//!     "decoder_config": {"codebook_dim": 512}}"#;
//! let config = SpeechConfig::from_json("config.json", json)?;
//! assert_eq!(config.decoder_config.upsample_rates, [8, 5, 4, 3]);
//! assert_eq!(config.decoder_config.head_dim(), 64);
//! # Ok::<(), spiral_engine::models::qwen3::config::ConfigError>(())
//! ```

use std::path::Path;

use serde::Deserialize;

use crate::models::qwen3::config::{attention_problem, parse, read, ConfigError};
use crate::models::qwen3::transformer::Widths;

/// The one tokenizer type this decoder is: the 12.5 Hz, 16-codebook one.
pub const MODEL_TYPE: &str = "qwen3_tts_tokenizer_12hz";

/// The speech tokenizer (`Qwen3TTSTokenizerV2Config`), decoder side.
#[derive(Clone, Debug, Deserialize)]
pub struct SpeechConfig {
    #[serde(default)]
    pub model_type: Option<String>,
    pub decoder_config: DecoderConfig,
    #[serde(default = "d_rate")]
    pub output_sample_rate: u32,
    /// Samples per frame of codes.
    #[serde(default = "d_upsample")]
    pub decode_upsample_rate: usize,
}

/// The decoder (`Qwen3TTSTokenizerV2DecoderConfig`): codebooks, the pre-transformer and the
/// convolutional upsampler.
#[derive(Clone, Debug, Deserialize)]
pub struct DecoderConfig {
    #[serde(default = "d_codebook_size")]
    pub codebook_size: usize,
    /// The width the quantizer's output projections give; each codebook's entries are half
    /// of it. Not among the reference class's arguments (its model reads it from the file),
    /// so a file without it cannot be loaded by the reference either: it is required here.
    pub codebook_dim: usize,
    #[serde(default = "d_1024")]
    pub hidden_size: usize,
    #[serde(default = "d_1024")]
    pub latent_dim: usize,
    #[serde(default = "d_theta")]
    pub rope_theta: f64,
    #[serde(default)]
    pub rope_scaling: Option<serde_json::Value>,
    #[serde(default = "d_16")]
    pub num_attention_heads: usize,
    #[serde(default = "d_16")]
    pub num_key_value_heads: usize,
    /// Per-head width; absent means hidden_size / num_attention_heads.
    #[serde(default)]
    pub head_dim: Option<usize>,
    #[serde(default)]
    pub attention_bias: bool,
    /// Keys each query sees, itself included.
    #[serde(default = "d_window")]
    pub sliding_window: usize,
    #[serde(default = "d_intermediate")]
    pub intermediate_size: usize,
    #[serde(default = "d_silu")]
    pub hidden_act: String,
    #[serde(default = "d_eps")]
    pub rms_norm_eps: f32,
    #[serde(default = "d_layers")]
    pub num_hidden_layers: usize,
    #[serde(default = "d_16")]
    pub num_quantizers: usize,
    /// The decoder blocks' upsampling factors (each halves the channels).
    #[serde(default = "d_upsample_rates")]
    pub upsample_rates: Vec<usize>,
    /// The factors of the upsampling stages before the decoder blocks.
    #[serde(default = "d_upsampling_ratios")]
    pub upsampling_ratios: Vec<usize>,
    #[serde(default = "d_decoder_dim")]
    pub decoder_dim: usize,
}

impl DecoderConfig {
    pub fn head_dim(&self) -> usize {
        self.widths().head_dim
    }

    /// The widths of each pre-transformer layer's projections.
    pub(crate) fn widths(&self) -> Widths {
        let (heads, kv_heads) = (self.num_attention_heads, self.num_key_value_heads);
        Widths::from_config(self.hidden_size, heads, kv_heads, self.head_dim, self.intermediate_size)
    }

    /// Samples each frame of codes becomes: the product of every upsampling factor.
    pub fn samples_per_frame(&self) -> usize {
        self.upsample_rates.iter().chain(&self.upsampling_ratios).product()
    }

    /// Channels after decoder block `i`: `decoder_dim / 2^(i+1)`, rounded down as the
    /// reference does.
    pub fn block_channels(&self, i: usize) -> usize {
        self.decoder_dim >> (i + 1)
    }

    /// Errors for values whose arithmetic is not implemented here, or that the reference
    /// could not build.
    fn check(&self, file: &Path) -> Result<(), ConfigError> {
        let bad = |field: &str, problem: String| {
            Err(ConfigError::Unsupported { file: file.into(), field: format!("decoder_config.{field}"), problem })
        };
        if self.hidden_act != "silu" {
            return bad("hidden_act", format!("is {:?}; the Qwen3-TTS speech decoder uses \"silu\"", self.hidden_act));
        }
        if self.attention_bias {
            return bad("attention_bias", "is true; the Qwen3-TTS speech decoder's attention has no biases".into());
        }
        if let Some(rope) = self.rope_scaling.as_ref().filter(|r| !r.is_null()) {
            let kind = rope.get("rope_type").or_else(|| rope.get("type")).and_then(|t| t.as_str());
            if kind != Some("default") {
                return bad("rope_scaling", format!("is {rope}; only the default rotary embedding is implemented"));
            }
        }
        if self.codebook_dim == 0 || !self.codebook_dim.is_multiple_of(2) {
            let d = self.codebook_dim;
            return bad("codebook_dim", format!("is {d}; it must be even and positive (each codebook is half of it)"));
        }
        if let Some((field, problem)) =
            attention_problem(self.num_attention_heads, self.num_key_value_heads, self.head_dim())
        {
            return bad(field, problem);
        }
        if self.sliding_window == 0 {
            return bad("sliding_window", "is 0; every query must see at least itself".into());
        }
        if self.num_quantizers < 2 {
            return bad(
                "num_quantizers",
                format!(
                    "is {}; the split quantizer needs the first codebook and at least one more",
                    self.num_quantizers
                ),
            );
        }
        for (field, value) in [
            ("codebook_size", self.codebook_size),
            ("hidden_size", self.hidden_size),
            ("latent_dim", self.latent_dim),
            ("intermediate_size", self.intermediate_size),
        ] {
            if value == 0 {
                return bad(field, "is 0".into());
            }
        }
        if let Some(r) = self.upsample_rates.iter().chain(&self.upsampling_ratios).find(|&&r| r == 0) {
            return bad("upsample_rates", format!("or upsampling_ratios has a factor {r}; factors are at least 1"));
        }
        let blocks = self.upsample_rates.len();
        if u32::try_from(blocks).ok().and_then(|b| self.decoder_dim.checked_shr(b)).unwrap_or(0) == 0 {
            return bad(
                "decoder_dim",
                format!("is {}; each of the {blocks} decoder blocks halves it, and none may reach 0", self.decoder_dim),
            );
        }
        Ok(())
    }
}

impl SpeechConfig {
    /// Reads and checks `dir/config.json` (`dir` is a checkpoint's `speech_tokenizer/`).
    pub fn load(dir: &Path) -> Result<SpeechConfig, ConfigError> {
        let file = dir.join("config.json");
        SpeechConfig::from_json(&file, &read(&file)?)
    }

    /// Parses and checks a config; `file` is named in errors.
    pub fn from_json(file: impl AsRef<Path>, text: &str) -> Result<SpeechConfig, ConfigError> {
        let file = file.as_ref();
        let config: SpeechConfig = parse(file, text)?;
        let bad = |field: &str, problem: String| {
            Err(ConfigError::Unsupported { file: file.into(), field: field.into(), problem })
        };
        if let Some(t) = config.model_type.as_deref().filter(|t| *t != MODEL_TYPE) {
            return bad("model_type", format!("is {t:?}; spiral decodes the {MODEL_TYPE:?} speech tokenizer"));
        }
        config.decoder_config.check(file)?;
        let product = config.decoder_config.samples_per_frame();
        if config.decode_upsample_rate != product {
            return bad(
                "decode_upsample_rate",
                format!(
                    "is {} but decoder_config's upsample_rates and upsampling_ratios multiply to {product}",
                    config.decode_upsample_rate
                ),
            );
        }
        if config.output_sample_rate == 0 {
            return bad("output_sample_rate", "is 0".into());
        }
        Ok(config)
    }
}

// The reference's defaults (configuration_qwen3_tts_tokenizer_v2.py).
fn d_rate() -> u32 {
    24000
}
fn d_upsample() -> usize {
    1920
}
fn d_codebook_size() -> usize {
    2048
}
fn d_1024() -> usize {
    1024
}
fn d_16() -> usize {
    16
}
fn d_theta() -> f64 {
    10000.0
}
fn d_window() -> usize {
    72
}
fn d_intermediate() -> usize {
    3072
}
fn d_silu() -> String {
    "silu".into()
}
fn d_eps() -> f32 {
    1e-5
}
fn d_layers() -> usize {
    8
}
fn d_upsample_rates() -> Vec<usize> {
    vec![8, 5, 4, 3]
}
fn d_upsampling_ratios() -> Vec<usize> {
    vec![2, 2]
}
fn d_decoder_dim() -> usize {
    1536
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(decoder: &str) -> Result<SpeechConfig, ConfigError> {
        SpeechConfig::from_json("speech_tokenizer/config.json", &format!(r#"{{"decoder_config": {decoder}}}"#))
    }

    #[test]
    fn defaults_are_the_reference_classes() {
        let c = parse(r#"{"codebook_dim": 512}"#).unwrap();
        let d = &c.decoder_config;
        assert_eq!((c.output_sample_rate, c.decode_upsample_rate, d.samples_per_frame()), (24000, 1920, 1920));
        assert_eq!((d.hidden_size, d.latent_dim, d.num_hidden_layers, d.sliding_window), (1024, 1024, 8, 72));
        assert_eq!((d.codebook_size, d.num_quantizers, d.decoder_dim, d.block_channels(3)), (2048, 16, 1536, 96));
        assert_eq!(d.rms_norm_eps, 1e-5);
    }

    #[test]
    fn unsupported_values_name_the_file_and_the_field() {
        for (json, field) in [
            (r#"{}"#, "codebook_dim"),
            (r#"{"codebook_dim": 7}"#, "decoder_config.codebook_dim"),
            (r#"{"codebook_dim": 8, "hidden_act": "gelu"}"#, "decoder_config.hidden_act"),
            (r#"{"codebook_dim": 8, "attention_bias": true}"#, "decoder_config.attention_bias"),
            (r#"{"codebook_dim": 8, "rope_scaling": {"rope_type": "yarn"}}"#, "decoder_config.rope_scaling"),
            (r#"{"codebook_dim": 8, "num_key_value_heads": 3}"#, "decoder_config.num_key_value_heads"),
            (r#"{"codebook_dim": 8, "sliding_window": 0}"#, "decoder_config.sliding_window"),
            (r#"{"codebook_dim": 8, "num_quantizers": 1}"#, "decoder_config.num_quantizers"),
            (r#"{"codebook_dim": 8, "decoder_dim": 8}"#, "decoder_config.decoder_dim"),
            (r#"{"codebook_dim": 8, "upsample_rates": [2, 2]}"#, "decode_upsample_rate"),
            (r#"{"codebook_dim": "many"}"#, "decoder_config.codebook_dim"),
        ] {
            let e = parse(json).unwrap_err().to_string();
            assert!(e.contains("speech_tokenizer/config.json") && e.contains(field), "{json}: {e}");
        }
        let json = r#"{"model_type": "qwen3_tts_tokenizer_25hz", "decoder_config": {"codebook_dim": 8}}"#;
        let e = SpeechConfig::from_json("c.json", json).unwrap_err();
        assert!(e.to_string().contains("model_type"), "{e}");
        assert!(parse(r#"{"codebook_dim": 8, "rope_scaling": null}"#).is_ok());
    }
}
