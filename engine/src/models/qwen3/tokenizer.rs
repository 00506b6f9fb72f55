//! The text tokenizer of a Qwen3-TTS checkpoint: Qwen2's byte-level BPE, read from
//! `tokenizer.json` or, as the published checkpoints ship it, from `vocab.json`,
//! `merges.txt` and the special tokens in `tokenizer_config.json`.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use thiserror::Error;
use tokenizers::models::bpe::BPE;
use tokenizers::normalizers::unicode::NFC;
use tokenizers::pre_tokenizers::byte_level::ByteLevel;
use tokenizers::pre_tokenizers::sequence::Sequence;
use tokenizers::pre_tokenizers::split::{Split, SplitPattern};
use tokenizers::{AddedToken, SplitDelimiterBehavior, Tokenizer};

/// Qwen2's pre-tokenizer split (transformers' `Qwen2Converter`).
const PATTERN: &str =
    r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+";

#[derive(Debug, Error)]
pub enum TokenizerError {
    #[error("{}: no tokenizer.json, and no vocab.json with merges.txt; copy the model's tokenizer files into it", dir.display())]
    Missing { dir: PathBuf },
    #[error("{}: {message}", file.display())]
    Invalid { file: PathBuf, message: String },
    #[error("cannot tokenize {text:?}: {message}")]
    Encode { text: String, message: String },
}

/// Text to token ids.
pub struct TextTokenizer {
    inner: Tokenizer,
}

impl std::fmt::Debug for TextTokenizer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TextTokenizer").field("vocab", &self.inner.get_vocab_size(true)).finish()
    }
}

impl TextTokenizer {
    /// The tokenizer in model directory `dir`.
    pub fn load(dir: &Path) -> Result<TextTokenizer, TokenizerError> {
        let json = dir.join("tokenizer.json");
        let invalid = |file: &Path, e: &dyn std::fmt::Display| TokenizerError::Invalid {
            file: file.into(),
            message: e.to_string(),
        };
        if json.is_file() {
            let inner = Tokenizer::from_file(&json).map_err(|e| invalid(&json, &e))?;
            return Ok(TextTokenizer { inner });
        }
        let (vocab, merges) = (dir.join("vocab.json"), dir.join("merges.txt"));
        if !vocab.is_file() || !merges.is_file() {
            return Err(TokenizerError::Missing { dir: dir.into() });
        }
        let (Some(v), Some(m)) = (vocab.to_str(), merges.to_str()) else {
            return Err(invalid(&vocab, &"the path is not UTF-8"));
        };
        let bpe = BPE::from_file(v, m).build().map_err(|e| invalid(&vocab, &e))?;
        let mut inner = Tokenizer::new(bpe);
        let split = Split::new(SplitPattern::Regex(PATTERN.into()), SplitDelimiterBehavior::Isolated, false)
            .expect("the Qwen2 pattern compiles");
        inner.with_pre_tokenizer(Some(Sequence::new(vec![split.into(), ByteLevel::new(false, false, false).into()])));
        inner.with_normalizer(Some(NFC)).map_err(|e| invalid(&vocab, &e))?;
        inner.with_decoder(Some(ByteLevel::default()));
        add_special_tokens(&mut inner, &dir.join("tokenizer_config.json"))?;
        Ok(TextTokenizer { inner })
    }

    /// The ids of `text`, special tokens such as `<|im_start|>` recognised as one id.
    pub fn encode(&self, text: &str) -> Result<Vec<u32>, TokenizerError> {
        let enc = self
            .inner
            .encode(text, false)
            .map_err(|e| TokenizerError::Encode { text: text.chars().take(80).collect(), message: e.to_string() })?;
        Ok(enc.get_ids().to_vec())
    }

    /// Tokens in the vocabulary, special ones included.
    pub fn vocab_size(&self) -> usize {
        self.inner.get_vocab_size(true)
    }
}

/// Adds `added_tokens_decoder` from `tokenizer_config.json` in id order, checking that
/// each lands on the id the file gives it.
fn add_special_tokens(inner: &mut Tokenizer, file: &Path) -> Result<(), TokenizerError> {
    let invalid = |message: String| TokenizerError::Invalid { file: file.into(), message };
    let text = match std::fs::read_to_string(file) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(invalid(e.to_string())),
    };
    #[derive(serde::Deserialize)]
    struct Added {
        content: String,
        #[serde(default)]
        special: bool,
    }
    #[derive(serde::Deserialize)]
    struct Config {
        #[serde(default)]
        added_tokens_decoder: BTreeMap<String, Added>,
    }
    let config: Config = serde_json::from_str(&text).map_err(|e| invalid(e.to_string()))?;
    let mut tokens: Vec<(u32, Added)> = config
        .added_tokens_decoder
        .into_iter()
        .map(|(id, t)| {
            id.parse().map(|id| (id, t)).map_err(|_| invalid(format!("added token id {id:?} is not a number")))
        })
        .collect::<Result<_, _>>()?;
    tokens.sort_by_key(|(id, _)| *id);
    for (id, t) in tokens {
        let token = AddedToken::from(t.content.clone(), t.special);
        if t.special { inner.add_special_tokens([token]) } else { inner.add_tokens([token]) }
            .map_err(|e| invalid(e.to_string()))?;
        if inner.token_to_id(&t.content) != Some(id) {
            return Err(invalid(format!(
                "added token {:?} should be id {id} but became {:?}; vocab.json and tokenizer_config.json disagree",
                t.content,
                inner.token_to_id(&t.content)
            )));
        }
    }
    Ok(())
}
