//! A Piper voice as a frame [`Source`]: text goes in, and audio comes out a few latent
//! frames at a time, so playback starts long before a sentence is fully synthesized.
//!
//! Per sentence: the text encoder and duration predictor run over the whole sentence
//! (they are small, and attention needs it all); then the flow and the generator both
//! stream, and every frame goes through each once. The flow is fed the prior up to the
//! [`WINDOWS`] ends plus its look-ahead, then the rest in one call (its per-call costs are
//! high next to its arithmetic); the generator gets the latent [`CHUNK`] frames at a time,
//! each step returning the audio completed so far (after a sentence's first chunk, the
//! generator's last stage runs one step behind its others; see [`GeneratorStream`]).
//! Sentences follow one another; with [`SpeechSource::lines`], text keeps arriving while
//! earlier lines play.

use std::collections::VecDeque;
use std::sync::mpsc::Receiver;
use std::sync::Arc;

use rand::rngs::StdRng;
use rand::SeedableRng;

use crate::frame::Frame;
use crate::kernels::Cpu;
use crate::source::{Source, SourceError};
use crate::units::{FrameIndex, SampleRate};

use super::flow::FlowStream;
use super::generator::GeneratorStream;
use super::voice::{PiperVoice, SpeechError};
use super::{Latent, Scales};

/// The latent frames the flow has produced after each of its first calls, from the start of
/// a sentence; the next call brings the rest. The first is short so the first audio waits
/// for little; the second is short too, because it must be ready before the first chunk's
/// audio (the few frames the generator's look-ahead lets out, about 58 ms) has played:
/// with the rest of a long sentence there, a loaded machine underran.
pub const WINDOWS: [usize; 2] = [16, 64];
/// Latent frames fed to the generator per step (16 × 256 samples at 22.05 kHz: 186 ms of
/// audio).
pub const CHUNK: usize = 16;
/// Text handed to the phonemizer at once: paragraphs are cut at line ends below this size,
/// so the first sentence of a long text does not wait for the whole text to be read.
const TEXT_PIECE: usize = 4096;

/// The flow's and the generator's streaming state for one sentence.
struct Streams<'v> {
    flow: FlowStream<'v>,
    generator: GeneratorStream<'v>,
}

self_cell::self_cell!(
    /// [`Streams`], borrowing the voice they belong to.
    struct Decoder {
        owner: Arc<PiperVoice>,
        #[covariant]
        dependent: Streams,
    }
);

/// One sentence being decoded.
struct Utterance {
    prior: Latent,
    /// The next prior frame to feed the flow.
    next: usize,
    /// Latent frames out of the flow, and how many of them the generator has had.
    latent: Latent,
    fed: usize,
    finished: bool,
    decoder: Decoder,
}

/// Speech from a [`PiperVoice`], one [`Frame`] per generator step.
pub struct SpeechSource {
    voice: Arc<PiperVoice>,
    cpu: Cpu,
    scales: Scales,
    rng: StdRng,
    text: VecDeque<String>,
    lines: Option<Receiver<String>>,
    sentences: VecDeque<Vec<i64>>,
    utterance: Option<Utterance>,
    index: u64,
    warn: Box<dyn FnMut(String) + Send>,
}

impl SpeechSource {
    /// Speaks `text`, then ends.
    pub fn new(voice: Arc<PiperVoice>, text: &str) -> SpeechSource {
        let mut source = SpeechSource::with_input(voice, None);
        source.queue(text);
        source
    }

    /// Speaks each text received on `lines` as it arrives; ends when the sender is dropped
    /// and everything received has been spoken.
    pub fn lines(voice: Arc<PiperVoice>, lines: Receiver<String>) -> SpeechSource {
        SpeechSource::with_input(voice, Some(lines))
    }

    fn with_input(voice: Arc<PiperVoice>, lines: Option<Receiver<String>>) -> SpeechSource {
        SpeechSource {
            scales: voice.scales(),
            voice,
            cpu: Cpu::best(),
            rng: StdRng::seed_from_u64(0),
            text: VecDeque::new(),
            lines,
            sentences: VecDeque::new(),
            utterance: None,
            index: 0,
            warn: Box::new(|w| eprintln!("warning: {w}")),
        }
    }

    /// Overrides the voice's noise and length scales.
    pub fn with_scales(mut self, scales: Scales) -> Self {
        self.scales = scales;
        self
    }

    /// Seeds the noise (the same seed and text give the same audio).
    pub fn with_seed(mut self, seed: u64) -> Self {
        self.rng = StdRng::seed_from_u64(seed);
        self
    }

    /// Runs the kernels at this instruction-set level.
    pub fn with_cpu(mut self, cpu: Cpu) -> Self {
        self.cpu = cpu;
        self
    }

    /// Where warnings go (phonemes the voice cannot say); stderr by default.
    pub fn on_warning(mut self, warn: impl FnMut(String) + Send + 'static) -> Self {
        self.warn = Box::new(warn);
        self
    }

    /// Cuts `text` into pieces at line ends, each under [`TEXT_PIECE`] bytes where it can.
    fn queue(&mut self, text: &str) {
        let mut piece = String::new();
        for line in text.split_inclusive('\n') {
            if !piece.is_empty() && piece.len() + line.len() > TEXT_PIECE {
                self.text.push_back(std::mem::take(&mut piece));
            }
            piece.push_str(line);
        }
        if !piece.trim().is_empty() {
            self.text.push_back(piece);
        }
    }

    fn read(&mut self, text: &str) -> Result<(), SpeechError> {
        let (sentences, warn) = (&mut self.sentences, &mut self.warn);
        self.voice.sentences(text, |s| {
            if !s.dropped.is_empty() {
                let symbols: String = s.dropped.iter().collect();
                warn(format!("dropped phonemes the voice has no id for: {symbols:?}"));
            }
            sentences.push_back(s.ids);
        })
    }

    fn start(&mut self, ids: &[i64]) -> Result<Utterance, SpeechError> {
        let model = self.voice.model();
        let encoded = model.encoder().forward(self.cpu, ids)?;
        let durations = model.durations(self.cpu, &encoded, self.scales, &mut self.rng)?;
        let prior = model.prior(&encoded, &durations, self.scales, &mut self.rng)?;
        let decoder = Decoder::new(self.voice.clone(), |voice| Streams {
            flow: voice.model().flow().stream(),
            generator: voice.model().generator().stream(),
        });
        let latent = Latent { z: Vec::new(), channels: prior.channels, frames: 0 };
        Ok(Utterance { prior, next: 0, latent, fed: 0, finished: false, decoder })
    }

    /// The next stretch of audio of the current sentence (empty when the step only ran the
    /// flow); `None` once it has all been returned.
    fn step(&mut self) -> Result<Option<Vec<f32>>, SpeechError> {
        let (cpu, context) = (self.cpu, self.voice.model().flow().context());
        let Some(u) = self.utterance.as_mut() else { return Ok(None) };
        if u.finished {
            return Ok(None);
        }
        let latent = &u.latent;
        if u.fed < latent.frames {
            let n = CHUNK.min(latent.frames - u.fed);
            let z = latent.columns(u.fed, n);
            u.fed += n;
            // The sentence's last latent frames go in with the end of the generator's input.
            u.finished = u.fed == latent.frames && u.next == u.prior.frames;
            return Ok(Some(u.decoder.with_dependent_mut(|_, s| match u.finished {
                false => s.generator.push(cpu, &z, n),
                true => s.generator.finish(cpu, &z, n),
            })?));
        }
        u.fed = 0;
        if u.next < u.prior.frames {
            // Up to the next window's end plus the flow's look-ahead, so the window comes out.
            let window = WINDOWS.iter().map(|w| w + context).find(|&w| w > u.next).unwrap_or(usize::MAX);
            let to = window.min(u.prior.frames);
            let (n, end) = (to - u.next, to == u.prior.frames);
            let z = u.prior.columns(u.next, n);
            u.next += n;
            u.latent = u.decoder.with_dependent_mut(|_, s| match end {
                false => s.flow.push(cpu, &z, n),
                true => s.flow.finish(cpu, &z, n),
            })?;
            return Ok(Some(Vec::new()));
        }
        u.finished = true;
        Ok(Some(u.decoder.with_dependent_mut(|_, s| s.generator.finish(cpu, &[], 0))?))
    }

    fn produce(&mut self) -> Result<Option<Vec<f32>>, SpeechError> {
        loop {
            if self.utterance.is_some() {
                match self.step()? {
                    Some(audio) if !audio.is_empty() => return Ok(Some(audio)),
                    Some(_) => continue,
                    None => self.utterance = None,
                }
            }
            if let Some(ids) = self.sentences.pop_front() {
                self.utterance = Some(self.start(&ids)?);
                continue;
            }
            if let Some(text) = self.text.pop_front() {
                self.read(&text)?;
                continue;
            }
            match self.lines.as_ref().map(Receiver::recv) {
                Some(Ok(line)) => self.queue(&line),
                Some(Err(_)) => self.lines = None,
                None => return Ok(None),
            }
        }
    }
}

impl Source for SpeechSource {
    fn sample_rate(&self) -> SampleRate {
        self.voice.sample_rate()
    }

    fn channels(&self) -> u16 {
        1
    }

    fn next_frame(&mut self) -> Result<Option<Frame>, SourceError> {
        // Run on a pool thread: the kernels' parallel calls then join as a worker would,
        // instead of each handing its job to the pool and sleeping until it is done.
        let produced = rayon::scope(|_| self.produce());
        let Some(samples) = produced.map_err(|e| SourceError::Model(Box::new(e)))? else {
            return Ok(None);
        };
        let frame = Frame::new(FrameIndex(self.index), self.sample_rate(), 1, samples);
        self.index += 1;
        Ok(Some(frame))
    }
}
