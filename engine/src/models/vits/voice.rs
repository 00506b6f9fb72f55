//! A Piper voice ready to speak: its model, its config and the text front end that turns
//! text into the model's phoneme ids.

use std::sync::Arc;

use thiserror::Error;

use crate::checkpoint::CheckpointError;
use crate::codec::{self, Codec};
use crate::onnx::OnnxError;
use crate::text::{PhonemeIdMap, Phonemizer, TextError};
use crate::units::SampleRate;
use crate::voices::Voice;

use super::config::{ConfigError, VoiceConfig};
use super::speech::SpeechSource;
use super::{weights, Precision, Scales, Vits, VitsError};
use crate::kernels::Cpu;

/// Why a voice could not be loaded or could not speak a text.
#[derive(Debug, Error)]
pub enum SpeechError {
    #[error(transparent)]
    Config(#[from] ConfigError),
    #[error(transparent)]
    Onnx(#[from] OnnxError),
    #[error(transparent)]
    Checkpoint(#[from] CheckpointError),
    #[error(transparent)]
    Model(#[from] VitsError),
    #[error(transparent)]
    Text(#[from] TextError),
    #[error("{name}: phoneme type {kind:?} is not supported (spiral speaks espeak-phoneme voices)")]
    PhonemeType { name: String, kind: String },
}

/// One sentence as the model takes it.
#[derive(Clone, Debug, PartialEq)]
pub struct Sentence {
    pub ids: Vec<i64>,
    /// Phonemes the voice has no id for, dropped (the caller may warn).
    pub dropped: Vec<char>,
}

pub struct PiperVoice {
    name: String,
    model: Vits,
    config: VoiceConfig,
    phonemizer: Phonemizer,
    ids: PhonemeIdMap,
}

impl PiperVoice {
    /// Loads the voice's config and model and starts its text front end.
    pub fn load(voice: &Voice) -> Result<PiperVoice, SpeechError> {
        PiperVoice::load_with(voice, None)
    }

    /// [`load`](Self::load), with the weights `codec` encodes replaced by their
    /// reconstruction ([`codec::reconstruct`]): the voice as that codec would hold it.
    pub fn load_with(voice: &Voice, codec: Option<Codec>) -> Result<PiperVoice, SpeechError> {
        let config = voice.load_config()?;
        if config.phoneme_type != "espeak" {
            return Err(SpeechError::PhonemeType { name: voice.name.clone(), kind: config.phoneme_type.clone() });
        }
        let (mut tensors, convs) = weights::read(&voice.model)?;
        if let Some(codec) = codec {
            codec::reconstruct(codec, &mut tensors);
        }
        let mut model = Vits::new(tensors, &move |m: &str| convs.get(m).copied())?;
        model.set_precision(Precision::for_cpu(Cpu::best()));
        let phonemizer = Phonemizer::new(&config.espeak_voice)?;
        let ids = PhonemeIdMap::new(config.phoneme_id_map.clone())?;
        Ok(PiperVoice { name: voice.name.clone(), model, config, phonemizer, ids })
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    pub fn model(&self) -> &Vits {
        &self.model
    }

    /// Speaks one short sentence into nothing, through the streaming path every real
    /// sentence takes ([`SpeechSource`]), so the first real sentence does not pay for the
    /// thread pool's start, first-touch page faults and the kernels' and streams' scratch
    /// buffers. Warming the whole-signal path instead (as before 2026-11-26) left the
    /// streaming buffers cold: a first sentence of 3.8 s then took 103 ms to produce instead
    /// of 98, and its first audio 23 ms instead of 21 (docs/BENCHMARKS.md).
    pub fn warm_up(self: &Arc<Self>, cpu: Cpu) -> Result<(), SpeechError> {
        let scales = Scales { noise_scale: 0.0, length_scale: 1.0, noise_w: 0.0 };
        SpeechSource::new(self.clone(), "Hello.").with_scales(scales).with_cpu(cpu).run_to_end()
    }

    /// Overrides the arithmetic chosen for this CPU (see [`Precision`]).
    pub fn with_precision(mut self, precision: Precision) -> Self {
        self.model.set_precision(precision);
        self
    }

    pub fn sample_rate(&self) -> SampleRate {
        SampleRate(self.config.sample_rate)
    }

    /// The scales the voice's config asks for.
    pub fn scales(&self) -> Scales {
        Scales {
            noise_scale: self.config.noise_scale,
            length_scale: self.config.length_scale,
            noise_w: self.config.noise_w,
        }
    }

    /// Per latent frame of a sentence (`durations` frames for each of `ids`), whether the
    /// text pauses there: the frames of punctuation and boundary symbols and of the pads
    /// after them.
    pub fn pauses(&self, ids: &[i64], durations: &[usize]) -> Vec<bool> {
        let mut after_pause = false;
        let mut frames = Vec::with_capacity(durations.iter().sum());
        for (&id, &d) in ids.iter().zip(durations) {
            after_pause = self.ids.is_pause(id, after_pause);
            frames.extend(std::iter::repeat_n(after_pause, d));
        }
        frames
    }

    /// Each sentence of `text` as phoneme ids, handed to `each` as soon as it is read.
    pub fn sentences(&self, text: &str, mut each: impl FnMut(Sentence)) -> Result<(), SpeechError> {
        self.phonemizer.for_each_sentence(text, |phonemes| {
            each(self.sentence(&phonemes));
            std::ops::ControlFlow::Continue(())
        })?;
        Ok(())
    }

    /// The sentences of `text` up to its first sentence end that more text follows, as
    /// phoneme ids; returns where the rest begins, `None` once all of it was read
    /// ([`Phonemizer::next_sentences`](crate::text::Phonemizer::next_sentences)).
    pub fn next_sentences(&self, text: &str, mut each: impl FnMut(Sentence)) -> Result<Option<usize>, SpeechError> {
        Ok(self.phonemizer.next_sentences(text, |phonemes| each(self.sentence(&phonemes)))?)
    }

    fn sentence(&self, phonemes: &[char]) -> Sentence {
        let (ids, dropped) = self.ids.ids(phonemes);
        Sentence { ids, dropped }
    }
}
