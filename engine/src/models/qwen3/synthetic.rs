//! A checkpoint directory with the exact configuration and tensor shapes of the published
//! Qwen3-TTS-12Hz-0.6B-CustomVoice and random bf16 weights: real checkpoints cannot be
//! downloaded everywhere, and speed does not depend on the weights' values, so this is
//! what the benchmark measures (and what the reference runs on beside it).
//!
//! The tokenizer is byte-level BPE over the real vocabulary size with the special tokens
//! at their real ids, but with no merges beyond the chat role's: every byte of the text is
//! one token (about four times the real tokenizer's count, which only lengthens the prompt).

use std::io::Write;
use std::path::Path;

use crate::checkpoint::{write as write_tensors, Spec, Stored};

use super::config::{Config, StackConfig};
use super::speech;

/// The published 0.6B CustomVoice `config.json` (talker and code predictor), with
/// speaker ids of our choosing (the real ones are not needed to measure speed).
pub const CONFIG_0_6B: &str = r#"{
  "architectures": ["Qwen3TTSForConditionalGeneration"],
  "model_type": "qwen3_tts",
  "tts_model_type": "custom_voice",
  "tts_model_size": "0b6",
  "tokenizer_type": "qwen3_tts_tokenizer_12hz",
  "im_start_token_id": 151644,
  "im_end_token_id": 151645,
  "tts_pad_token_id": 151671,
  "tts_bos_token_id": 151672,
  "tts_eos_token_id": 151673,
  "talker_config": {
    "hidden_size": 1024, "intermediate_size": 3072, "num_hidden_layers": 28,
    "num_attention_heads": 16, "num_key_value_heads": 8, "head_dim": 128,
    "hidden_act": "silu", "rms_norm_eps": 1e-06, "rope_theta": 1000000,
    "rope_scaling": {"interleaved": true, "mrope_section": [24, 20, 20], "rope_type": "default"},
    "max_position_embeddings": 32768, "attention_bias": false, "use_sliding_window": false,
    "vocab_size": 3072, "text_vocab_size": 151936, "text_hidden_size": 2048,
    "num_code_groups": 16, "position_id_per_seconds": 13,
    "codec_bos_id": 2149, "codec_eos_token_id": 2150, "codec_pad_id": 2148,
    "codec_think_id": 2154, "codec_nothink_id": 2155,
    "codec_think_bos_id": 2156, "codec_think_eos_id": 2157,
    "codec_language_id": {"english": 2050, "chinese": 2055, "spanish": 2054, "beijing_dialect": 2074},
    "spk_id": {"ryan": 3000, "vivian": 3001, "dylan": 3002},
    "spk_is_dialect": {"ryan": false, "vivian": false, "dylan": "beijing_dialect"},
    "code_predictor_config": {
      "hidden_size": 1024, "intermediate_size": 3072, "num_hidden_layers": 5,
      "num_attention_heads": 16, "num_key_value_heads": 8, "head_dim": 128,
      "hidden_act": "silu", "rms_norm_eps": 1e-06, "rope_theta": 1000000,
      "max_position_embeddings": 65536, "attention_bias": false, "use_sliding_window": false,
      "vocab_size": 2048, "num_code_groups": 16
    }
  }
}"#;

const GENERATION_CONFIG: &str = r#"{
  "do_sample": true, "top_k": 50, "top_p": 1.0, "temperature": 0.9, "repetition_penalty": 1.05,
  "subtalker_dosample": true, "subtalker_top_k": 50, "subtalker_top_p": 1.0,
  "subtalker_temperature": 0.9, "max_new_tokens": 8192
}"#;

/// Every talker and code-predictor tensor of `config`, by name, with its shape: the names
/// and shapes [`super::Qwen3Tts::load`] takes.
pub fn tensors(config: &Config) -> Vec<(String, Vec<usize>)> {
    let t = &config.talker_config;
    let p = &t.code_predictor_config.stack;
    let (h, th) = (t.stack.hidden_size, t.text_hidden_size);
    let mut out = vec![
        ("talker.model.text_embedding.weight".into(), vec![t.text_vocab_size, th]),
        ("talker.text_projection.linear_fc1.weight".into(), vec![th, th]),
        ("talker.text_projection.linear_fc1.bias".into(), vec![th]),
        ("talker.text_projection.linear_fc2.weight".into(), vec![h, th]),
        ("talker.text_projection.linear_fc2.bias".into(), vec![h]),
        ("talker.model.codec_embedding.weight".into(), vec![t.stack.vocab_size, h]),
    ];
    stack(&mut out, "talker.model", &t.stack);
    out.push(("talker.codec_head.weight".into(), vec![t.stack.vocab_size, h]));
    let cp = "talker.code_predictor";
    if p.hidden_size != h {
        out.push((format!("{cp}.small_to_mtp_projection.weight"), vec![p.hidden_size, h]));
        out.push((format!("{cp}.small_to_mtp_projection.bias"), vec![p.hidden_size]));
    }
    stack(&mut out, &format!("{cp}.model"), p);
    for g in 0..p.num_code_groups - 1 {
        out.push((format!("{cp}.model.codec_embedding.{g}.weight"), vec![p.vocab_size, h]));
        out.push((format!("{cp}.lm_head.{g}.weight"), vec![p.vocab_size, p.hidden_size]));
    }
    out
}

fn stack(out: &mut Vec<(String, Vec<usize>)>, prefix: &str, c: &StackConfig) {
    let (h, hd) = (c.hidden_size, c.head_dim());
    let widths = c.widths();
    for l in 0..c.num_hidden_layers {
        let p = format!("{prefix}.layers.{l}");
        out.extend(widths.projections().map(|(name, shape)| (format!("{p}.{name}.weight"), shape.to_vec())));
        for (name, width) in [
            ("input_layernorm.weight", h),
            ("self_attn.q_norm.weight", hd),
            ("self_attn.k_norm.weight", hd),
            ("post_attention_layernorm.weight", h),
        ] {
            out.push((format!("{p}.{name}"), vec![width]));
        }
    }
    out.push((format!("{prefix}.norm.weight"), vec![h]));
}

/// `speech_decoder_json` is the speech tokenizer's `decoder_config` (`{}`: the reference's
/// defaults, the real shapes).
pub fn write(
    dir: &Path,
    config_json: &str,
    speech_decoder_json: &str,
    mut progress: impl FnMut(usize, usize, &str),
) -> std::io::Result<()> {
    let config = Config::from_json(dir.join("config.json"), config_json).map_err(std::io::Error::other)?;
    std::fs::create_dir_all(dir)?;
    std::fs::write(dir.join("config.json"), config_json)?;
    std::fs::write(dir.join("generation_config.json"), GENERATION_CONFIG)?;
    write_tokenizer(dir, &config)?;
    let specs: Vec<Spec> =
        tensors(&config).into_iter().map(|(name, shape)| Spec { name, shape, stored: Stored::Bf16 }).collect();
    let total = specs.len();
    let mut noise = Noise::new(0x9E37_79B9);
    write_tensors(
        &dir.join("model.safetensors"),
        &specs,
        |i, chunk| {
            let name = &specs[i].name;
            if name.ends_with("norm.weight") {
                chunk.fill(1.0);
            } else if name.ends_with(".bias") {
                chunk.fill(0.0);
            } else {
                noise.fill(0.0, 0.02 * 3f32.sqrt(), chunk);
            }
        },
        |i| progress(i + 1, total, &specs[i].name),
    )?;
    let speech_dir = dir.join(speech::SUBDIR);
    speech::synthetic::write(&speech_dir, &speech::synthetic::config_json(speech_decoder_json), true)?;
    // Not read here; the reference's loader wants it to run on the same directory.
    std::fs::write(speech_dir.join("preprocessor_config.json"), PREPROCESSOR_CONFIG)
}

const PREPROCESSOR_CONFIG: &str = r#"{"feature_extractor_type": "EncodecFeatureExtractor", "feature_size": 1,
  "padding_side": "right", "padding_value": 0.0, "return_attention_mask": true, "sampling_rate": 24000}"#;

/// Uniform noise for random weights: xorshift64*, fast, and the values do not matter
/// beyond their scale.
pub(crate) struct Noise(u64);

impl Noise {
    pub fn new(seed: u64) -> Noise {
        Noise(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1)
    }

    /// `out[i] = offset + scale · u` with `u` uniform in [−1, 1).
    pub fn fill(&mut self, offset: f32, scale: f32, out: &mut [f32]) {
        for v in out {
            self.0 ^= self.0 >> 12;
            self.0 ^= self.0 << 25;
            self.0 ^= self.0 >> 27;
            let u = (self.0.wrapping_mul(0x2545_F491_4F6C_DD1D) >> 40) as f32 / (1u64 << 23) as f32 - 1.0;
            *v = offset + scale * u;
        }
    }
}

/// GPT-2's byte-to-symbol table: printable bytes stand for themselves, the others for
/// code points from 256 up.
fn byte_symbols() -> Vec<char> {
    let printable = |b: u32| (33..=126).contains(&b) || (161..=172).contains(&b) || (174..=255).contains(&b);
    let mut extra = 0;
    (0..256u32)
        .map(|b| {
            if printable(b) {
                char::from_u32(b).expect("a byte is a code point")
            } else {
                extra += 1;
                char::from_u32(255 + extra).expect("below the surrogates")
            }
        })
        .collect()
}

/// `vocab.json` (the 256 byte symbols, the merges of "assistant", then fillers up to the
/// first special id), `merges.txt`, and `tokenizer_config.json` with the chat and TTS special
/// tokens at the config's ids (fillers between them).
fn write_tokenizer(dir: &Path, config: &Config) -> std::io::Result<()> {
    const FIRST_SPECIAL: u32 = 151643;
    const ROLE: &str = "assistant";
    let mut vocab = serde_json::Map::new();
    for (id, symbol) in byte_symbols().into_iter().enumerate() {
        vocab.insert(symbol.to_string(), id.into());
    }
    // The chat role is one token, as in the real vocabulary, so the prompt has the
    // reference's layout (role = 3 tokens, tail = 5).
    let mut merges = std::fs::File::create(dir.join("merges.txt"))?;
    writeln!(merges, "#version: 0.2")?;
    for end in 2..=ROLE.len() {
        writeln!(merges, "{} {}", &ROLE[..end - 1], &ROLE[end - 1..end])?;
        vocab.insert(ROLE[..end].to_string(), (vocab.len() as u32).into());
    }
    for id in vocab.len() as u32..FIRST_SPECIAL {
        vocab.insert(format!("<filler_{id}>"), id.into());
    }
    std::fs::write(dir.join("vocab.json"), serde_json::to_string(&vocab).map_err(std::io::Error::other)?)?;
    let named = [
        (FIRST_SPECIAL, "<|endoftext|>"),
        (config.im_start_token_id, "<|im_start|>"),
        (config.im_end_token_id, "<|im_end|>"),
        (config.tts_pad_token_id, "<tts_pad>"),
        (config.tts_bos_token_id, "<tts_text_bos>"),
        (config.tts_eos_token_id, "<tts_text_eod>"),
    ];
    let last = named.iter().map(|(id, _)| *id).max().unwrap_or(FIRST_SPECIAL);
    let mut added = serde_json::Map::new();
    for id in FIRST_SPECIAL..=last {
        let content = named.iter().find(|(i, _)| *i == id).map_or(format!("<|special_{id}|>"), |(_, c)| c.to_string());
        added.insert(id.to_string(), serde_json::json!({"content": content, "special": true}));
    }
    let tokenizer_config = serde_json::json!({
        "tokenizer_class": "Qwen2Tokenizer",
        "added_tokens_decoder": added,
        "eos_token": "<|im_end|>",
        "pad_token": "<|endoftext|>",
        "model_max_length": 131072,
    });
    std::fs::write(dir.join("tokenizer_config.json"), tokenizer_config.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The 0.6B layout at a tenth of the width and depth still loads, so the tensor list
    /// and the loader agree; the real one is the same code with larger numbers.
    #[test]
    fn a_synthetic_checkpoint_loads_and_generates() {
        let small = CONFIG_0_6B
            .replace("\"hidden_size\": 1024", "\"hidden_size\": 64")
            .replace("\"intermediate_size\": 3072", "\"intermediate_size\": 96")
            .replace("\"num_hidden_layers\": 28", "\"num_hidden_layers\": 2")
            .replace("\"num_hidden_layers\": 5", "\"num_hidden_layers\": 1")
            .replace("\"head_dim\": 128", "\"head_dim\": 16")
            .replace("\"text_hidden_size\": 2048", "\"text_hidden_size\": 32");
        let dir = tempfile::tempdir().unwrap();
        let mut seen = 0;
        let decoder = r#"{"hidden_size": 32, "latent_dim": 32, "codebook_dim": 16, "intermediate_size": 48,
            "num_attention_heads": 2, "num_key_value_heads": 2, "num_hidden_layers": 1, "decoder_dim": 32,
            "upsample_rates": [2, 2], "upsampling_ratios": [2]}"#;
        write(dir.path(), &small, decoder, |done, total, _| {
            seen = done;
            assert!(done <= total);
        })
        .unwrap();
        let model = crate::models::qwen3::Qwen3Tts::load(dir.path()).unwrap();
        assert_eq!(seen, tensors(model.config()).len());
        let request = crate::models::qwen3::Request {
            text: "Hi there.".into(),
            speaker: Some("Ryan".into()),
            language: "english".into(),
        };
        let mut options = crate::models::qwen3::Options::from_config(model.generation_config());
        options.stream_text = true;
        let prompt = model.prompt(crate::kernels::Cpu::best(), &request, &options).unwrap();
        // 3 role tokens, think/think-bos/language/think-eos, speaker, pad, then bos with
        // the first text byte; the rest of the 9 bytes and end-of-text trail.
        assert_eq!(prompt.rows, 3 + 4 + 1 + 1 + 1);
        assert_eq!(prompt.trailing.len(), 9 * 64);
        let role = 256 + "assistant".len() as u32 - 2;
        assert_eq!(&prompt.ids[..3], &[151644, role, b'\n' as u32]);
        assert_eq!(prompt.ids.len(), 3 + 9 + 5);
    }
}
