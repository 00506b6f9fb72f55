//! A Piper voice as a frame [`Source`]: text goes in, and audio comes out a few latent
//! frames at a time, so playback starts long before a sentence is fully synthesized.
//!
//! Per sentence: the text encoder and duration predictor run over the whole sentence
//! (they are small, and attention needs it all); then the flow and the generator both
//! stream, and every frame goes through each once. The flow is fed the prior up to the
//! [`WINDOWS`] ends plus its look-ahead, then the rest in one call (its per-call costs are
//! high next to its arithmetic); the generator gets the first window, then the latent
//! [`CHUNK`] frames at a time, each step returning the audio completed so far (after a
//! sentence's first two steps, the generator's last stage runs one step behind its others;
//! see [`GeneratorStream`]).
//! Sentences follow one another; with [`SpeechSource::lines`], text keeps arriving while
//! earlier lines play.
//!
//! With a [`Router`] ([`SpeechSource::with_router`]), every latent frame out of the flow is
//! routed before the generator sees it, and runs of frames it need not decode are cut out
//! of the generator's stream ([`crate::models::cuts`]).

use std::collections::VecDeque;
use std::sync::mpsc::{Receiver, RecvTimeoutError};
use std::sync::Arc;
use std::time::{Duration, Instant};

use rand::rngs::StdRng;
use rand::SeedableRng;

use crate::frame::Frame;
use crate::kernels::Cpu;
use crate::models::cuts::Plan;
use crate::route::{Hint, Pending, Route, RouteCounts, Router};
use crate::source::{Input, Source, SourceError};
use crate::units::{FrameIndex, SampleRate};

use super::flow::FlowStream;
use super::generator::GeneratorStream;
use super::voice::{PiperVoice, SpeechError};
use super::{Latent, Scales};

/// The latent frames the flow has produced after each of its first calls, from the start of
/// a sentence; the next call brings the rest. The first is short so the first audio waits
/// for little, and it is also the generator's first step: after the look-ahead (about 11
/// frames) it lets out 13 frames, 151 ms of audio, enough for an audio device to start on
/// (the output waits for 60 ms queued: a first step of 16 frames gave 58 ms, so the device
/// waited for the third step, and first audio through cpal was about 40 ms on a long first
/// sentence against 27-29 ms now; into a file it costs 3 ms). The second is short too,
/// because it must be ready before the first step's audio has played: with the rest of a
/// long sentence there, a loaded machine underran.
pub const WINDOWS: [usize; 2] = [24, 64];
/// After the first call, a rest of the sentence up to this many prior frames joins the call
/// before it, at most (see [`joined_rest`] for how many on a given machine). Every flow call
/// costs about 3.5 ms however few frames it brings (its 38 MB of transformed weights stream
/// from memory, and its 16 layers' small products and transforms), against about 0.07 ms a
/// frame: a 12-frame third call cost as much as the 40-frame second. 128 frames make the
/// joined call at most 15 ms on Zen 4, a tenth of the 151 ms of audio the first step brings;
/// with 256, two 324-frame sentences underran at a 10 ms period while two busy loops held
/// both cores (128: none).
pub const JOINED_REST: usize = 128;

/// What the joined call may take, by the first call's rate: a fifth of the first step's
/// audio. On a Zen 1 under two busy loops, a fixed [`JOINED_REST`] of 128 underran up to 16
/// times a sentence there (docs/BENCHMARKS.md); unloaded, a Zen 4's first call (56 frames in
/// about 7 ms) leaves all 128 to join and a Zen 1's (10-11 ms) about 120.
pub const JOIN_BUDGET: Duration = Duration::from_millis(30);

/// How many prior frames of rest may join the flow's second call, from what the sentence's
/// first call cost (`first` for `frames` prior frames): the joined call, the second window's
/// frames and the rest, costs at most [`JOIN_BUDGET`] at the first call's time per frame
/// (which counts the call's fixed cost in, so it overestimates a longer call), and never more
/// than [`JOINED_REST`] frames join.
pub fn joined_rest(first: Duration, frames: usize) -> usize {
    let per_frame = first.as_secs_f64() / frames.max(1) as f64;
    // A float-to-integer cast saturates: an untimeably fast call (∞ frames) lets all join.
    let fit = (JOIN_BUDGET.as_secs_f64() / per_frame) as usize;
    fit.saturating_sub(WINDOWS[1] - WINDOWS[0]).min(JOINED_REST)
}

/// Where the flow's call that starts at prior frame `next` ends, for a sentence of `frames`
/// prior frames and a flow of `look_ahead` frames: at the next of the [`WINDOWS`] plus the
/// look-ahead (so the window comes out), or at the sentence's end when the rest after that
/// is at most `joined` frames (see [`joined_rest`]).
pub fn flow_call_end(next: usize, frames: usize, look_ahead: usize, joined: usize) -> usize {
    let window = WINDOWS.iter().map(|w| w + look_ahead).find(|&w| w > next).unwrap_or(usize::MAX);
    let end = window.min(frames);
    if next > 0 && frames - end <= joined {
        frames
    } else {
        end
    }
}

/// Where the router's next hints end, from latent frame `from`, when the flow has produced
/// `frames`: at the next of the [`WINDOWS`], or at `frames` past the last. So each window is
/// hinted after the frames before it were heard, whether or not the flow's calls joined them.
fn hint_end(from: usize, frames: usize) -> usize {
    WINDOWS.iter().copied().find(|&w| w > from).unwrap_or(usize::MAX).min(frames)
}

/// Latent frames fed to the generator per step after the first (16 × 256 samples at
/// 22.05 kHz: 186 ms of audio); the first step takes the flow's first window.
pub const CHUNK: usize = 16;

/// Where a generator step from latent frame `pos` ends, given that the next cut or the end of
/// the flow's frames is at `end`: a window ([`WINDOWS`]`[0]` frames) for a sentence's `first`
/// step, [`CHUNK`] frames for the others. The first step's size does not depend on where it
/// starts: when a cut of leading silence moved its start to frame 3, a step of [`CHUNK`]
/// frames let out 69 ms of audio instead of 151, and the next audio waited for a second step,
/// the flow's second call and a third (7 of the 10 benchmark sentences start with such a cut;
/// on a Zen 1 under two busy loops they underran 17 times in 20 runs, and none with the
/// window in the same hour; unloaded, first audio came 5 ms later: docs/BENCHMARKS.md).
fn decode_end(pos: usize, first: bool, end: usize) -> usize {
    (pos + if first { WINDOWS[0] } else { CHUNK }).min(end)
}

/// The most text handed to the phonemizer at once. A reading stops at the first sentence
/// end, so this bounds only a text with no sentence end for that long (verse, lists, a
/// long line without punctuation): about 13 ms of espeak-ng on a Zen 1. A window is cut
/// at a space, and it changes the phonemes only of a sentence longer than it, which is
/// cut into parts anyway (`text::MAX_SENTENCE`).
const TEXT_WINDOW: usize = 4096;

/// The length of the next window of `rest` to read: all of it if it is short or has raw
/// `[[ ]]` blocks (a window must not cut one), else up to its last whitespace within
/// [`TEXT_WINDOW`] bytes (or the last character there, in a text without any).
fn window(rest: &str) -> usize {
    if rest.len() <= TEXT_WINDOW || rest.contains("[[") {
        return rest.len();
    }
    let mut end = TEXT_WINDOW;
    while !rest.is_char_boundary(end) {
        end -= 1;
    }
    rest[..end].rfind(char::is_whitespace).filter(|&i| i > 0).unwrap_or(end)
}

/// A text given to the source, read a sentence at a time.
struct Unread {
    text: String,
    /// Bytes of `text` already read into sentences.
    read: usize,
    /// When the text arrived, until its first sentence takes the stamp.
    arrived: Option<Instant>,
}

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

/// Where the sentence's generator stream stands.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum GeneratorState {
    /// Made and not fed yet.
    Fresh,
    /// Fed; its look-ahead holds audio until it is finished.
    Open,
    /// Finished (at a cut): replaced before it decodes again.
    Finished,
}

/// A frame played and not yet told to the router: what [`Router::played`] takes, owned.
struct Heard {
    position: u64,
    features: Vec<f32>,
    pause: bool,
    route: Route,
    audio: Vec<f32>,
}

/// Tells `router` how each of `heard` played, in order.
fn tell(router: Option<&mut (dyn Router + 'static)>, heard: Vec<Heard>, rate: SampleRate) {
    if let Some(router) = router {
        for h in heard {
            router.played(
                &Pending { position: h.position, features: &h.features, pause: h.pause },
                h.route,
                &h.audio,
                rate,
            );
        }
    }
}

/// One sentence being decoded.
struct Utterance {
    prior: Latent,
    /// The next prior frame to feed the flow.
    next: usize,
    /// Latent frames out of the flow so far, frame by frame (`channels` values each).
    z: Vec<f32>,
    channels: usize,
    /// Per latent frame: the text pauses there.
    pauses: Vec<bool>,
    /// Per latent frame out of the flow: the router's hint.
    hints: Vec<Hint>,
    plan: Plan,
    /// The next latent frame to decode or fill.
    pos: usize,
    generator: GeneratorState,
    /// Samples of this sentence handed out, and those of a frame not yet reported whole.
    emitted: usize,
    partial: Vec<f32>,
    reported: usize,
    /// The decoder-input position of the sentence's first frame.
    base: u64,
    decoder: Decoder,
    /// Prior frames of rest that may join the flow's second call, once its first call is
    /// timed ([`joined_rest`]).
    joined: usize,
    /// When the line this sentence begins arrived, until its first audio carries it.
    arrived: Option<Instant>,
}

impl Utterance {
    fn frames(&self) -> usize {
        self.z.len() / self.channels.max(1)
    }

    fn complete(&self) -> bool {
        self.next == self.prior.frames
    }

    /// Frames `range` as the generator takes them, `[channels, n]`.
    fn columns(&self, from: usize, to: usize) -> Vec<f32> {
        let (c, n) = (self.channels, to - from);
        let mut out = vec![0.0; c * n];
        for (t, frame) in self.z[from * c..to * c].chunks_exact(c).enumerate() {
            for (ch, &v) in frame.iter().enumerate() {
                out[ch * n + t] = v;
            }
        }
        out
    }

    /// The frames whose audio is whole in `partial` and not yet told to the router, in
    /// order, taken out for [`tell`] (none without a router: `partial` fills only with one).
    fn heard(&mut self, hop: usize) -> Vec<Heard> {
        let mut heard = Vec::new();
        while self.partial.len() >= hop && self.reported < self.frames() {
            let frame = self.reported;
            let Pending { position, features, pause } = self.pending(frame);
            let (features, route) = (features.to_vec(), self.plan.route(&self.hints, frame));
            heard.push(Heard { position, features, pause, route, audio: self.partial.drain(..hop).collect() });
            self.reported += 1;
        }
        heard
    }

    fn pending(&self, frame: usize) -> Pending<'_> {
        let c = self.channels;
        Pending { position: self.base + frame as u64, features: &self.z[frame * c..][..c], pause: self.pauses[frame] }
    }
}

/// Speech from a [`PiperVoice`], one [`Frame`] per generator step (or per run of frames
/// a [`Router`] had skipped or reused).
pub struct SpeechSource {
    voice: Arc<PiperVoice>,
    cpu: Cpu,
    scales: Scales,
    rng: StdRng,
    /// Texts not yet read into sentences, in order.
    text: VecDeque<Unread>,
    lines: Option<Receiver<Line>>,
    sentences: VecDeque<(Vec<i64>, Option<Instant>)>,
    utterance: Option<Utterance>,
    router: Option<Box<dyn Router>>,
    counts: RouteCounts,
    /// Decoder-input frames of the sentences before the current one.
    position: u64,
    index: u64,
    warn: Box<dyn FnMut(String) + Send>,
}

impl SpeechSource {
    /// Speaks `text`, then ends.
    pub fn new(voice: Arc<PiperVoice>, text: &str) -> SpeechSource {
        let mut source = SpeechSource::with_input(voice, None);
        source.queue(text, None);
        source
    }

    /// Speaks each text received on `lines` as it arrives; ends when the sender is dropped
    /// and everything received has been spoken. Each line's first frame carries its
    /// arrival ([`FrameStamps::input`](crate::FrameStamps::input)).
    ///
    /// [`next_frame`](Source::next_frame) never waits for a line: with everything received
    /// said, it returns an empty frame, and [`input`](Source::input) waits for the next.
    ///
    /// ```no_run
    /// # fn demo(voice: std::sync::Arc<spiral_engine::models::vits::PiperVoice>) -> Result<(), Box<dyn std::error::Error>> {
    /// use spiral_engine::models::vits::{Line, SpeechSource};
    ///
    /// let (lines, received) = std::sync::mpsc::channel();
    /// let source = SpeechSource::lines(voice, received); // hand it to the output (`spiral_nodes::play`)
    /// // From the app's input thread, whenever a line comes; stamped as it is sent.
    /// lines.send(Line::now("Hello there."))?;
    /// drop(lines); // no more lines: the source ends once everything is said
    /// # Ok(()) }
    /// ```
    pub fn lines(voice: Arc<PiperVoice>, lines: Receiver<Line>) -> SpeechSource {
        SpeechSource::with_input(voice, Some(lines))
    }

    fn with_input(voice: Arc<PiperVoice>, lines: Option<Receiver<Line>>) -> SpeechSource {
        SpeechSource {
            scales: voice.scales(),
            voice,
            cpu: Cpu::best(),
            rng: StdRng::seed_from_u64(0),
            text: VecDeque::new(),
            lines,
            sentences: VecDeque::new(),
            utterance: None,
            router: None,
            counts: RouteCounts::default(),
            position: 0,
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

    /// Asks `router` about every latent frame before the generator decodes it, and tells it
    /// how each frame played (see [`crate::route`] and [`crate::models::cuts`]). Without a
    /// router every frame is decoded.
    pub fn with_router(mut self, router: impl Router + 'static) -> Self {
        self.router = Some(Box::new(router));
        self
    }

    /// Where warnings go (phonemes the voice cannot say); stderr by default.
    pub fn on_warning(mut self, warn: impl FnMut(String) + Send + 'static) -> Self {
        self.warn = Box::new(warn);
        self
    }

    fn queue(&mut self, text: &str, arrived: Option<Instant>) {
        if !text.trim().is_empty() {
            self.text.push_back(Unread { text: text.to_owned(), read: 0, arrived });
        }
    }

    /// Reads the first unread text up to its next sentence end (within a [`window`]), so a
    /// sentence is spoken after reading it alone, however long the text (espeak-ng takes
    /// about 3 ms a kilobyte: the first sentence of 100 KB of text waited 450 ms on a Zen 1
    /// when texts were read whole).
    fn read(&mut self) -> Result<(), SpeechError> {
        let Some(unread) = self.text.front_mut() else { return Ok(()) };
        let (sentences, warn, arrived) = (&mut self.sentences, &mut self.warn, &mut unread.arrived);
        let rest = &unread.text[unread.read..];
        let window = window(rest);
        let read = self.voice.next_sentences(&rest[..window], |s| {
            if !s.dropped.is_empty() {
                let symbols: String = s.dropped.iter().collect();
                warn(format!("dropped phonemes the voice has no id for: {symbols:?}"));
            }
            sentences.push_back((s.ids, arrived.take()));
        })?;
        unread.read += read.unwrap_or(window);
        if unread.text[unread.read..].trim().is_empty() {
            self.text.pop_front();
        }
        Ok(())
    }

    /// Something is queued: a sentence under way (its last step, which tells the router
    /// the end of its audio, included), or text to read.
    fn has_work(&self) -> bool {
        self.utterance.is_some() || !self.sentences.is_empty() || !self.text.is_empty()
    }

    fn start(&mut self, ids: &[i64], arrived: Option<Instant>) -> Result<Utterance, SpeechError> {
        let model = self.voice.model();
        let encoded = model.encoder().forward(self.cpu, ids)?;
        let durations = model.durations(self.cpu, &encoded, self.scales, &mut self.rng)?;
        let prior = model.prior(&encoded, &durations, self.scales, &mut self.rng)?;
        let decoder = Decoder::new(self.voice.clone(), |voice| Streams {
            flow: voice.model().flow().stream(),
            generator: voice.model().generator().stream(),
        });
        Ok(Utterance {
            pauses: self.voice.pauses(ids, &durations),
            channels: prior.channels,
            prior,
            next: 0,
            z: Vec::new(),
            hints: Vec::new(),
            plan: Plan::default(),
            pos: 0,
            generator: GeneratorState::Fresh,
            emitted: 0,
            partial: Vec::new(),
            reported: 0,
            base: self.position,
            decoder,
            joined: JOINED_REST,
            arrived,
        })
    }

    /// The next stretch of audio of the current sentence (empty when the step only ran the
    /// flow); `None` once it has all been returned.
    fn step(&mut self) -> Result<Option<Vec<f32>>, SpeechError> {
        let (cpu, look_ahead, hop) = (self.cpu, self.voice.model().flow().look_ahead(), self.voice.model().hop());
        let rate = self.voice.sample_rate();
        let Some(u) = self.utterance.as_mut() else { return Ok(None) };
        let (counts, mut router) = (&mut self.counts, self.router.as_deref_mut());
        let audio = if u.pos < u.plan.decided {
            if let Some(cut) = u.plan.fill_at(u.pos).cloned() {
                for frame in cut.fill.clone() {
                    counts.add(u.hints[frame].route, 1, 0.0);
                }
                // The decoding before a cut finished the stream at the cut.
                debug_assert_ne!(u.generator, GeneratorState::Open);
                u.pos = cut.fill.end;
                u.plan.fill(&u.hints, hop, cut.fill)
            } else {
                let end = u.plan.next_fill(u.pos).unwrap_or(u.plan.decided);
                let to = decode_end(u.pos, u.generator == GeneratorState::Fresh, end);
                let last = u.plan.fill_at(to).is_some() || (to == u.frames() && u.complete());
                let z = u.columns(u.pos, to);
                let n = to - u.pos;
                let finished = u.generator == GeneratorState::Finished;
                // The router hears the frames played so far while the generator decodes
                // these: its analysis is serial, and nothing it learns is asked before the
                // flow's next call, which waits for it (see `heard`).
                let heard = u.heard(hop);
                let (audio, spent) = rayon::join(
                    || {
                        let started = Instant::now();
                        let audio = u.decoder.with_dependent_mut(|voice, s| {
                            if finished {
                                s.generator = voice.model().generator().stream();
                            }
                            match last {
                                false => s.generator.push(cpu, &z, n),
                                true => s.generator.finish(cpu, &z, n),
                            }
                        });
                        (audio, started.elapsed())
                    },
                    || tell(router.as_deref_mut(), heard, rate),
                )
                .0;
                let mut audio = audio?;
                counts.add(Route::Decode, n as u64, spent.as_secs_f64() * 1e3);
                u.generator = if last { GeneratorState::Finished } else { GeneratorState::Open };
                u.pos = to;
                u.plan.crossfade(&u.hints, hop, u.emitted, &mut audio);
                audio
            }
        } else if u.hints.len() < u.frames() {
            // The router hints the flow's frames a window at a time, however the flow's calls
            // were cut, after hearing everything played before the window: the calls' cuts
            // depend on how fast the first one ran (`joined_rest`), and hints must not, or the
            // same text would speak differently from run to run.
            let (known, to) = (u.hints.len(), hint_end(u.hints.len(), u.frames()));
            tell(router.as_deref_mut(), u.heard(hop), rate);
            let mut hints = match router {
                Some(router) => {
                    let frames: Vec<Pending<'_>> = (known..to).map(|f| u.pending(f)).collect();
                    router.assign_route_hints(&frames)
                }
                None => Vec::new(),
            };
            // A router owes one hint per frame; any it did not give is a decode.
            hints.resize(to - known, Hint::DECODE);
            u.hints.extend(hints);
            u.plan = Plan::new(&u.hints, u.complete() && u.hints.len() == u.frames());
            return Ok(Some(Vec::new()));
        } else if u.next < u.prior.frames {
            let to = flow_call_end(u.next, u.prior.frames, look_ahead, u.joined);
            let (n, end, first) = (to - u.next, to == u.prior.frames, u.next == 0);
            let z = u.prior.columns(u.next, n);
            u.next += n;
            let started = Instant::now();
            let latent = u.decoder.with_dependent_mut(|_, s| match end {
                false => s.flow.push(cpu, &z, n),
                true => s.flow.finish(cpu, &z, n),
            })?;
            if first {
                u.joined = joined_rest(started.elapsed(), n);
            }
            u.z.extend(
                (0..latent.frames)
                    .flat_map(|t| (0..latent.channels).map(move |c| (c, t)))
                    .map(|(c, t)| latent.z[c * latent.frames + t]),
            );
            return Ok(Some(Vec::new()));
        } else if u.generator == GeneratorState::Open {
            // The generator's look-ahead holds the last frames' audio.
            u.generator = GeneratorState::Finished;
            let started = Instant::now();
            let mut audio = u.decoder.with_dependent_mut(|_, s| s.generator.finish(cpu, &[], 0))?;
            counts.add(Route::Decode, 0, started.elapsed().as_secs_f64() * 1e3);
            u.plan.crossfade(&u.hints, hop, u.emitted, &mut audio);
            audio
        } else {
            tell(router, u.heard(hop), rate);
            return Ok(None);
        };
        u.emitted += audio.len();
        if router.is_some() {
            u.partial.extend_from_slice(&audio);
        }
        Ok(Some(audio))
    }

    /// Speaks everything queued, dropping the audio (on a pool thread, as
    /// [`next_frame`](Source::next_frame) runs).
    pub(super) fn run_to_end(mut self) -> Result<(), SpeechError> {
        crate::pool::busy(|| {
            while self.produce()?.is_some() {}
            Ok(())
        })
    }

    fn produce(&mut self) -> Result<Option<Vec<f32>>, SpeechError> {
        loop {
            if self.utterance.is_some() {
                match self.step()? {
                    Some(audio) if !audio.is_empty() => return Ok(Some(audio)),
                    Some(_) => continue,
                    None => {
                        let done = self.utterance.take().map_or(0, |u| u.frames());
                        self.position += done as u64;
                    }
                }
            }
            if let Some((ids, arrived)) = self.sentences.pop_front() {
                self.utterance = Some(self.start(&ids, arrived)?);
                continue;
            }
            if !self.text.is_empty() {
                self.read()?;
                continue;
            }
            // Lines may still come: nothing for now (`input` waits for them).
            return Ok(self.lines.as_ref().map(|_| Vec::new()));
        }
    }
}

/// A line of text given to [`SpeechSource::lines`], with when it became available.
#[derive(Clone, Debug)]
pub struct Line {
    /// What to say.
    pub text: String,
    /// When it was typed or received: its time to first audio counts from here.
    pub arrived: Instant,
}

impl Line {
    /// `text`, available now.
    pub fn now(text: impl Into<String>) -> Line {
        Line { text: text.into(), arrived: Instant::now() }
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
        // Run on a pool thread, so the kernels' parallel calls join as a worker would instead
        // of each handing its job to the pool and sleeping until it is done, with the other
        // workers kept awake for the step (see `pool::busy`).
        let produced = crate::pool::busy(|| self.produce());
        let Some(samples) = produced.map_err(|e| SourceError::Model(Box::new(e)))? else {
            return Ok(None);
        };
        let mut frame = Frame::new(FrameIndex(self.index), self.sample_rate(), 1, samples);
        if !frame.samples.is_empty() {
            frame.stamps.input = self.utterance.as_mut().and_then(|u| u.arrived.take());
            self.index += 1;
        }
        Ok(Some(frame))
    }

    fn input(&mut self, wait: Duration) -> Input {
        let deadline = Instant::now() + wait;
        while !self.has_work() {
            let Some(lines) = &self.lines else { break };
            match lines.recv_timeout(deadline.saturating_duration_since(Instant::now())) {
                Ok(line) => self.queue(&line.text, Some(line.arrived)),
                Err(RecvTimeoutError::Timeout) => return Input::Awaiting,
                Err(RecvTimeoutError::Disconnected) => self.lines = None,
            }
        }
        Input::Ready
    }

    /// Every frame is counted, with or without a router.
    fn route_counts(&self) -> Option<RouteCounts> {
        Some(self.counts)
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::{
        decode_end, flow_call_end, joined_rest, window, CHUNK, JOINED_REST, JOIN_BUDGET, TEXT_WINDOW, WINDOWS,
    };
    use crate::models::vits::{PiperVoice, SpeechSource};
    use crate::Source;

    /// The first audio of a long text waits for its first sentence to be read, not for the
    /// whole text; the rest is read a sentence at a time as it is spoken.
    #[test]
    fn a_long_text_is_read_a_sentence_at_a_time() {
        let voice = crate::voices::default_voice().unwrap_or_else(|e| panic!("the joe voice is needed: {e}"));
        let voice = std::sync::Arc::new(PiperVoice::load(&voice).unwrap());
        let sentence = "The quick brown fox jumps over the lazy dog. ";
        let mut source = SpeechSource::new(voice, &sentence.repeat(10));
        assert_eq!(source.text.len(), 1);
        assert!(!source.next_frame().unwrap().unwrap().samples.is_empty());
        let read = source.text[0].read;
        assert!(read > 0 && read <= sentence.len() && source.sentences.is_empty(), "{read} bytes read");
        // Each next sentence is read once the one before it is synthesized, and started.
        for next in 2..=3 {
            while source.text[0].read < next * read {
                assert_eq!(source.text[0].read, (next - 1) * read);
                source.next_frame().unwrap().unwrap();
            }
            assert!(source.text[0].read == next * read && source.sentences.is_empty());
        }
        // A text that never ends a sentence is read a window at a time.
        let words = "and then the fox ran over the hills ".repeat(400); // 14 KB
        let mut source = SpeechSource::new(source.voice.clone(), &words);
        assert!(!source.next_frame().unwrap().unwrap().samples.is_empty());
        let read = source.text[0].read;
        assert!(read > TEXT_WINDOW / 2 && read <= TEXT_WINDOW, "{read} bytes read");
    }

    /// Windows end before a space (or anywhere in a text without one), on a character
    /// boundary, and take short texts and texts with raw phoneme blocks whole.
    #[test]
    fn a_window_ends_at_a_space_within_its_bound() {
        assert_eq!(window("short text"), 10);
        let words = "word ".repeat(2000);
        let w = window(&words);
        assert!(w <= TEXT_WINDOW && words[w..].starts_with(' ') && words[..w].ends_with("word"), "{w}");
        let dense = "é".repeat(3000); // two bytes each, no space
        let w = window(&dense);
        assert!(w <= TEXT_WINDOW && w > TEXT_WINDOW - 2 && dense.is_char_boundary(w), "{w}");
        let raw = format!("{words} [[ hˈɛloʊ ]] {words}");
        assert_eq!(window(&raw), raw.len());
    }

    /// A sentence's first step decodes the flow's first window whole, also after a cut of
    /// leading frames; later steps take a chunk.
    #[test]
    fn the_first_step_reaches_the_end_of_the_first_window_wherever_it_starts() {
        let end = WINDOWS[0];
        assert_eq!(decode_end(0, true, end), end);
        assert_eq!(decode_end(3, true, end), end);
        assert_eq!(decode_end(3, false, end), 3 + CHUNK);
        assert_eq!(decode_end(30, true, 100), 30 + WINDOWS[0]);
        assert_eq!(decode_end(30, false, 100), 30 + CHUNK);
        assert_eq!(decode_end(90, false, 100), 100);
    }

    /// The calls a sentence of `frames` prior frames is fed in.
    fn calls(frames: usize, look_ahead: usize) -> Vec<usize> {
        let (mut ends, mut next) = (Vec::new(), 0);
        while next < frames {
            next = flow_call_end(next, frames, look_ahead, JOINED_REST);
            ends.push(next);
        }
        ends
    }

    /// A first call as fast as the budget allows for the whole rest lets it all join; a
    /// slower one lets less join, and one too slow for the second window alone lets none.
    #[test]
    fn the_rest_that_joins_shrinks_with_the_first_call_s_rate() {
        let second = WINDOWS[1] - WINDOWS[0];
        let at = |frames: usize| JOIN_BUDGET * 56 / frames as u32;
        assert_eq!(joined_rest(at(second + JOINED_REST), 56), JOINED_REST);
        assert_eq!(joined_rest(at(second + JOINED_REST) / 2, 56), JOINED_REST);
        let some = joined_rest(at(second + 50), 56);
        assert!((49..=50).contains(&some), "{some}");
        assert_eq!(joined_rest(JOIN_BUDGET * 2, 56), 0);
        assert_eq!(joined_rest(Duration::ZERO, 56), JOINED_REST);
        // How many join decides the calls: up to the limit, the rest joins the second call.
        let la = 32;
        let end = WINDOWS[1] + la;
        assert_eq!(flow_call_end(WINDOWS[0] + la, end + 10, la, 10), end + 10);
        assert_eq!(flow_call_end(WINDOWS[0] + la, end + 11, la, 10), end);
    }

    #[test]
    fn a_short_rest_joins_the_call_before_it_but_never_the_first() {
        let la = 32;
        let (first, second) = (WINDOWS[0] + la, WINDOWS[1] + la);
        assert_eq!(calls(30, la), [30]);
        // The first call stays short for the first audio, however little follows it.
        assert_eq!(calls(first + 1, la), [first, first + 1]);
        assert_eq!(calls(second + JOINED_REST, la), [first, second + JOINED_REST]);
        assert_eq!(calls(second + JOINED_REST + 1, la), [first, second, second + JOINED_REST + 1]);
        assert_eq!(calls(1000, la), [first, second, 1000]);
    }
}
