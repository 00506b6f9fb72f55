//! Qwen3-TTS-12Hz (CustomVoice): the autoregressive text-to-codes loop of the talker and
//! the code predictor, loaded from a Hugging Face checkpoint directory.
//!
//! ```no_run
//! use spiral_engine::kernels::Cpu;
//! use spiral_engine::models::qwen3::{Options, Qwen3Tts, Request};
//!
//! let model = std::sync::Arc::new(Qwen3Tts::load("Qwen3-TTS-12Hz-0.6B-CustomVoice".as_ref())?);
//! let request = Request { text: "Hello.".into(), speaker: Some("ryan".into()), language: "english".into() };
//! let mut generation = model.generate(Cpu::best(), &request, &Options::from_config(model.generation_config()))?;
//! while let Some(codes) = generation.next_frame() {
//!     assert_eq!(codes.len(), 16); // one code per codebook, 80 ms of audio
//! }
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

pub mod code_predictor;
pub mod config;
pub mod generate;
pub mod sampling;
pub mod source;
pub mod speech;
pub mod synthetic;
pub mod talker;
pub mod tokenizer;
pub mod transformer;

use std::path::{Path, PathBuf};

use thiserror::Error;

use crate::checkpoint::{Checkpoint, CheckpointError};
use crate::codec::Codec;
use code_predictor::CodePredictor;
use config::{Config, ConfigError, GenerationConfig};
use speech::SpeechDecoder;
use talker::Talker;
use tokenizer::{TextTokenizer, TokenizerError};

pub use generate::{End, Generation, Options, Prompt, Request};
pub use source::Qwen3Source;

/// Why a checkpoint directory could not be loaded.
#[derive(Debug, Error)]
pub enum LoadError {
    #[error(transparent)]
    Config(#[from] ConfigError),
    #[error(transparent)]
    Weights(#[from] CheckpointError),
    #[error(transparent)]
    Tokenizer(#[from] TokenizerError),
    #[error("{}: {problem}", dir.display())]
    Mismatch { dir: PathBuf, problem: String },
}

/// Why a request could not be spoken.
#[derive(Debug, Error)]
pub enum SpeakError {
    #[error("there is no text to speak")]
    NoText,
    #[error("the text is {tokens} tokens, more than the model's {limit} positions hold; speak it in parts")]
    TooLong { tokens: usize, limit: usize },
    #[error("speaker {0:?} is not in this checkpoint (see config.json talker_config.spk_id)")]
    UnknownSpeaker(String),
    #[error("language {0:?} is not in this checkpoint (use \"auto\" or a key of talker_config.codec_language_id)")]
    UnknownLanguage(String),
    #[error("the text tokenizer gave id {id}, beyond the model's {vocab} text embeddings; the tokenizer files belong to another model")]
    TokenOutOfRange { id: u32, vocab: usize },
    #[error(transparent)]
    Tokenizer(#[from] TokenizerError),
}

/// A loaded Qwen3-TTS checkpoint.
#[derive(Debug)]
pub struct Qwen3Tts {
    config: Config,
    generation: GenerationConfig,
    tokenizer: TextTokenizer,
    talker: Talker,
    predictor: CodePredictor,
    speech: SpeechDecoder,
}

impl Qwen3Tts {
    /// Runs the speech decoder's convolutions at `precision` (see
    /// [`SpeechDecoder::set_precision`]); f32 when not asked.
    pub fn with_precision(mut self, precision: crate::models::nn::Precision) -> Qwen3Tts {
        self.speech.set_precision(precision);
        self
    }

    /// Loads the checkpoint in `dir` (config, generation config, weights, tokenizer, and
    /// the speech tokenizer's decoder from its `speech_tokenizer/`).
    pub fn load(dir: &Path) -> Result<Qwen3Tts, LoadError> {
        Qwen3Tts::load_with(dir, None)
    }

    /// [`load`](Self::load), holding the talker's and the code predictor's projections,
    /// and the speech decoder's matrices, in `codec` (see
    /// [`codec::apply`](crate::codec::apply)); embeddings, heads, norms and the speech
    /// decoder's convolutions stay as stored.
    pub fn load_with(dir: &Path, codec: Option<Codec>) -> Result<Qwen3Tts, LoadError> {
        let config = Config::load(dir)?;
        let generation = GenerationConfig::load(dir)?;
        let ckpt = Checkpoint::open(dir)?;
        let ckpt = match codec {
            Some(c) => ckpt.with_codec(c),
            None => ckpt,
        };
        let talker = Talker::load(&ckpt, &config.talker_config)?;
        let predictor = CodePredictor::load(&ckpt, &config.talker_config)?;
        let tokenizer = TextTokenizer::load(dir)?;
        if tokenizer.vocab_size() > talker.text_vocab_size() {
            return Err(LoadError::Mismatch {
                dir: dir.into(),
                problem: format!(
                    "the tokenizer has {} tokens but the model {} text embeddings; the tokenizer files belong to another model",
                    tokenizer.vocab_size(),
                    talker.text_vocab_size()
                ),
            });
        }
        let speech = SpeechDecoder::load_with(&dir.join(speech::SUBDIR), codec)?;
        let codebook = speech.config().decoder_config.codebook_size;
        let vocab = config.talker_config.code_predictor_config.stack.vocab_size;
        if codebook < vocab {
            return Err(LoadError::Mismatch {
                dir: dir.into(),
                problem: format!(
                    "the speech tokenizer's codebooks hold {codebook} codes but the code predictor makes {vocab}; speech_tokenizer/ belongs to another model"
                ),
            });
        }
        if speech.codebooks() != predictor.groups() {
            return Err(LoadError::Mismatch {
                dir: dir.into(),
                problem: format!(
                    "the speech tokenizer decodes {} codebooks but the talker makes {}; speech_tokenizer/ belongs to another model",
                    speech.codebooks(),
                    predictor.groups()
                ),
            });
        }
        Ok(Qwen3Tts { config, generation, tokenizer, talker, predictor, speech })
    }

    pub fn config(&self) -> &Config {
        &self.config
    }

    pub fn generation_config(&self) -> &GenerationConfig {
        &self.generation
    }

    /// The speech tokenizer's decoder (codes to audio).
    pub fn speech(&self) -> &SpeechDecoder {
        &self.speech
    }

    /// Codebooks per frame.
    pub fn groups(&self) -> usize {
        self.predictor.groups()
    }

    /// Bytes of weights one frame reads: the talker's step and the predictor's passes.
    pub fn bytes_per_frame(&self) -> usize {
        self.talker.bytes_per_step() + self.predictor.bytes_per_frame()
    }
}
