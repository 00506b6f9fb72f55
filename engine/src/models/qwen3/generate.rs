//! The autoregressive loop: the CustomVoice prompt exactly as the reference's `generate`
//! builds it (streaming text: one text token joins each frame's input), then one frame per
//! step: the talker picks codebook 0, the code predictor the rest, and their embeddings
//! plus the next text token become the talker's next input.

use std::sync::Arc;

use crate::kernels::Cpu;

use super::config::Config;
use super::sampling::{Sampler, Sampling};
use super::transformer::Cache;
use super::{Qwen3Tts, SpeakError};

/// The reference's `min_new_tokens`: end-of-speech may not be the first or second token.
const MIN_NEW_TOKENS: usize = 2;
/// Talker ids from `vocab − 1024` up are control tokens, never generated (except EOS).
const CONTROL_TOKENS: usize = 1024;

/// What to say and how.
#[derive(Clone, Debug, PartialEq)]
pub struct Request {
    pub text: String,
    /// A speaker of the checkpoint (`spk_id`), or none.
    pub speaker: Option<String>,
    /// A `codec_language_id` key, or `auto`.
    pub language: String,
}

/// Sampling settings; [`Options::from_config`] takes the checkpoint's defaults.
#[derive(Clone, Debug, PartialEq)]
pub struct Options {
    pub talker: Sampling,
    pub predictor: Sampling,
    pub repetition_penalty: f32,
    /// Tokens the talker may generate, end-of-speech included.
    pub max_new_tokens: usize,
    /// Never end on end-of-speech, only at `max_new_tokens` (benchmarks on random weights).
    pub ignore_eos: bool,
    /// Feed the text one token per frame after the first (the reference's
    /// `non_streaming_mode=False`) instead of all of it in the prompt (its default for
    /// CustomVoice): a shorter prompt, so the first frame comes sooner.
    pub stream_text: bool,
    pub seed: u64,
}

impl Options {
    /// The defaults of the checkpoint's `generation_config.json`.
    pub fn from_config(g: &super::config::GenerationConfig) -> Options {
        let sampling = |on, temperature, top_k, top_p| {
            if on {
                Sampling::Sample { temperature, top_k, top_p }
            } else {
                Sampling::Greedy
            }
        };
        Options {
            talker: sampling(g.do_sample, g.temperature, g.top_k, g.top_p),
            predictor: sampling(g.subtalker_dosample, g.subtalker_temperature, g.subtalker_top_k, g.subtalker_top_p),
            repetition_penalty: g.repetition_penalty,
            max_new_tokens: g.max_new_tokens,
            ignore_eos: false,
            stream_text: false,
            seed: 0,
        }
    }

    /// Both stages greedy (the reference with `do_sample=False, subtalker_dosample=False`).
    pub fn greedy(mut self) -> Options {
        self.talker = Sampling::Greedy;
        self.predictor = Sampling::Greedy;
        self
    }
}

/// The talker's input before the first frame.
#[derive(Clone, Debug)]
pub struct Prompt {
    /// Text token ids of the chat-formatted text.
    pub ids: Vec<u32>,
    /// Prefill embeddings, `rows` × hidden.
    pub prefill: Vec<f32>,
    pub rows: usize,
    /// Text fed one row per frame after the prefill, each row hidden wide (with streamed
    /// text: the rest of it, then end-of-text); `pad` after it runs out.
    pub trailing: Vec<f32>,
    pub pad: Vec<f32>,
}

impl Qwen3Tts {
    /// The prompt for `request`, as the reference's `generate` builds it for a
    /// CustomVoice checkpoint without an instruction.
    pub fn prompt(&self, cpu: Cpu, request: &Request, options: &Options) -> Result<Prompt, SpeakError> {
        let c: &Config = &self.config;
        let talker = &c.talker_config;
        let h = self.talker.hidden_size();
        let text = format!("<|im_start|>assistant\n{}<|im_end|>\n<|im_start|>assistant\n", request.text);
        let ids = self.tokenizer.encode(&text)?;
        // Role (3 tokens), at least one text token, then the 5-token tail.
        if ids.len() < 9 || request.text.trim().is_empty() {
            return Err(SpeakError::NoText);
        }
        // Checked before any work: an enormous text would otherwise allocate a prompt the
        // model cannot attend over anyway. The prompt adds up to 7 codec tags to the ids, and
        // the first frame needs a position.
        let limit = talker.stack.max_position_embeddings;
        if ids.len() + 8 > limit {
            return Err(SpeakError::TooLong { tokens: ids.len(), limit });
        }
        if let Some(&id) = ids.iter().find(|&&id| id as usize >= self.talker.text_vocab_size()) {
            return Err(SpeakError::TokenOutOfRange { id, vocab: self.talker.text_vocab_size() });
        }
        let speaker = match request.speaker.as_deref().filter(|s| !s.is_empty()) {
            None => None,
            Some(name) => Some((name, talker.speaker(name).ok_or_else(|| SpeakError::UnknownSpeaker(name.into()))?)),
        };
        let language = request.language.to_lowercase();
        let mut language_id = match language.as_str() {
            "auto" => None,
            l => Some(*talker.codec_language_id.get(l).ok_or_else(|| SpeakError::UnknownLanguage(l.into()))?),
        };
        if let Some(dialect) = speaker.and_then(|(name, _)| talker.dialect(name)) {
            if language == "chinese" || language == "auto" {
                language_id = talker.codec_language_id.get(dialect).copied();
            }
        }

        let special = self.talker.text(cpu, &[c.tts_bos_token_id, c.tts_eos_token_id, c.tts_pad_token_id]);
        let (bos, eos, pad) = (&special[..h], &special[h..2 * h], &special[2 * h..]);
        let mut codec: Vec<u32> = match language_id {
            None => vec![talker.codec_nothink_id, talker.codec_think_bos_id, talker.codec_think_eos_id],
            Some(l) => vec![talker.codec_think_id, talker.codec_think_bos_id, l, talker.codec_think_eos_id],
        };
        codec.extend(speaker.map(|(_, id)| id));
        codec.extend([talker.codec_pad_id, talker.codec_bos_id]);

        // Role tokens; then pad text over the codec tags and text-bos over the last tag
        // but one; codec-bos comes with the text.
        let mut prefill = self.talker.text(cpu, &ids[..3]);
        let (tags, last) = codec.split_at(codec.len() - 1);
        for (i, &tag) in tags.iter().enumerate() {
            let mut row = if i + 1 < tags.len() { pad.to_vec() } else { bos.to_vec() };
            self.talker.add_codec(tag, &mut row);
            prefill.extend_from_slice(&row);
        }
        let text = &ids[3..ids.len() - 5];
        let mut trailing = Vec::new();
        if options.stream_text {
            // The first text token with codec-bos; the rest, then end-of-text, one per frame.
            let mut row = self.talker.text(cpu, &text[..1]);
            self.talker.add_codec(last[0], &mut row);
            prefill.extend_from_slice(&row);
            trailing = self.talker.text(cpu, &text[1..]);
            trailing.extend_from_slice(eos);
        } else {
            // All the text and end-of-text over codec-pad, then pad text over codec-bos;
            // every frame is then fed pad text.
            let mut rows = self.talker.text(cpu, text);
            rows.extend_from_slice(eos);
            for row in rows.chunks_exact_mut(h) {
                self.talker.add_codec(talker.codec_pad_id, row);
            }
            prefill.extend_from_slice(&rows);
            let mut row = pad.to_vec();
            self.talker.add_codec(last[0], &mut row);
            prefill.extend_from_slice(&row);
        }
        let rows = prefill.len() / h;
        Ok(Prompt { ids, prefill, rows, trailing, pad: pad.to_vec() })
    }

    /// Starts generating `request`; frames come from [`Generation::next_frame`].
    pub fn generate(
        self: &Arc<Self>,
        cpu: Cpu,
        request: &Request,
        options: &Options,
    ) -> Result<Generation, SpeakError> {
        let prompt = self.prompt(cpu, request, options)?;
        let mut cache = self.talker.cache();
        let mut x = prompt.prefill.clone();
        let hidden_size = self.talker.hidden_size();
        let logits = self.talker.forward(cpu, &mut x, prompt.rows, &mut cache);
        let hidden = x[(prompt.rows - 1) * hidden_size..].to_vec();
        let mut talker = Sampler::new(options.talker, options.seed);
        talker.repetition_penalty = options.repetition_penalty;
        let talker_config = &self.config.talker_config;
        let vocab = self.talker.vocab_size();
        let eos = talker_config.codec_eos_token_id;
        let suppressed =
            (vocab.saturating_sub(CONTROL_TOKENS)..vocab).map(|t| t as u32).filter(|&t| t != eos).collect();
        Ok(Generation {
            model: self.clone(),
            cpu,
            cache,
            predictor_cache: self.predictor.cache(),
            logits,
            hidden,
            history: Vec::new(),
            prompt,
            talker,
            predictor: Sampler::new(options.predictor, options.seed.wrapping_add(1)),
            suppressed,
            eos,
            min_new_tokens: if options.ignore_eos { usize::MAX } else { MIN_NEW_TOKENS },
            max_new_tokens: options.max_new_tokens,
            end: None,
        })
    }
}

/// Why generation stopped.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum End {
    /// The talker chose end-of-speech.
    Eos,
    /// `max_new_tokens` were generated.
    Cap,
}

/// A generation in progress: the talker's cache and the logits for its next token.
pub struct Generation {
    model: Arc<Qwen3Tts>,
    cpu: Cpu,
    cache: Cache,
    predictor_cache: Cache,
    logits: Vec<f32>,
    hidden: Vec<f32>,
    history: Vec<u32>,
    prompt: Prompt,
    talker: Sampler,
    predictor: Sampler,
    suppressed: Vec<u32>,
    eos: u32,
    /// End-of-speech is banned until this many tokens exist.
    min_new_tokens: usize,
    max_new_tokens: usize,
    end: Option<End>,
}

impl Generation {
    pub fn prompt(&self) -> &Prompt {
        &self.prompt
    }

    /// The talker's raw logits for the next codebook-0 token (before any processing).
    pub fn logits(&self) -> &[f32] {
        &self.logits
    }

    /// Why it stopped, once it has.
    pub fn end(&self) -> Option<End> {
        self.end
    }

    /// Frames produced so far.
    pub fn frames(&self) -> usize {
        self.history.len().saturating_sub(usize::from(self.end.is_some()))
    }

    /// The next frame's codes (one per codebook), or `None` once speech has ended.
    pub fn next_frame(&mut self) -> Option<Vec<u32>> {
        self.next_frame_observed(&mut |_, _| {})
    }

    /// [`next_frame`](Self::next_frame), letting `observe(g, logits)` see the code
    /// predictor's raw logits before it chooses codebook g+1.
    pub fn next_frame_observed(&mut self, observe: &mut dyn FnMut(usize, &[f32])) -> Option<Vec<u32>> {
        if self.end.is_some() {
            return None;
        }
        let model = &*self.model;
        let mut banned = self.suppressed.clone();
        if self.history.len() < self.min_new_tokens {
            banned.push(self.eos);
        }
        let mut logits = self.logits.clone();
        let token = self.talker.pick(&mut logits, &self.history, &banned);
        self.history.push(token);
        if token == self.eos {
            self.end = Some(End::Eos);
            return None;
        }
        if self.history.len() >= self.max_new_tokens {
            // The reference samples the capped token but never runs it to get its codes.
            self.end = Some(End::Cap);
            return None;
        }
        let h = self.hidden.len();
        let mut codes = vec![0; model.predictor.groups()];
        codes[0] = token;
        let mut first = vec![0.0; h];
        model.talker.add_codec(token, &mut first);
        let mut next = first.clone();
        model.predictor.predict(
            self.cpu,
            &self.hidden,
            &first,
            &mut self.predictor,
            &mut self.predictor_cache,
            &mut codes,
            &mut next,
            observe,
        );
        let step = self.history.len() - 1;
        let text = self.prompt.trailing.chunks_exact(h).nth(step).unwrap_or(&self.prompt.pad);
        next.iter_mut().zip(text).for_each(|(x, t)| *x += t);
        self.logits = model.talker.forward(self.cpu, &mut next, 1, &mut self.cache);
        self.hidden = next;
        Some(codes)
    }
}
