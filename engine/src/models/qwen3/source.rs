//! Qwen3-TTS as a [`Source`]: each frame of codes the talker and the code predictor make is
//! decoded to audio at once and handed to the output spine, 80 ms per frame. The talker and
//! code predictor run on a thread and thread pool of their own, one frame ahead of the
//! decoder, once the first frame's audio is out: they mostly wait on memory and the
//! decoder mostly computes, so the two overlap on the same cores.
//!
//! ```no_run
//! use std::sync::Arc;
//! use spiral_engine::models::qwen3::{Options, Qwen3Source, Qwen3Tts, Request};
//! use spiral_engine::Source;
//!
//! let model = Arc::new(Qwen3Tts::load("Qwen3-TTS-12Hz-0.6B-CustomVoice".as_ref())?);
//! let request = Request { text: "Hello.".into(), speaker: Some("ryan".into()), language: "english".into() };
//! let options = Options::from_config(model.generation_config());
//! let mut source = Qwen3Source::new(model, request, options);
//! while let Some(frame) = source.next_frame()? {
//!     assert_eq!(frame.samples.len(), 1920); // 80 ms at 24 kHz
//! }
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

use std::sync::mpsc::{self, Receiver, SyncSender};
use std::sync::{Arc, OnceLock};
use std::thread::JoinHandle;
use std::time::Instant;

use crate::frame::Frame;
use crate::kernels::Cpu;
use crate::models::cuts::{crossfade_frame, Live, LiveStep};
use crate::route::{Hint, Pending, Route, RouteCounts, Router};
use crate::source::{Source, SourceError};
use crate::units::{FrameIndex, SampleRate};

use super::speech::DecoderStream;
use super::{Options, Qwen3Tts, Request, SpeakError};

self_cell::self_cell!(
    /// The decoder's stream, borrowing the model it belongs to.
    struct Audio {
        owner: Arc<Qwen3Tts>,
        #[covariant]
        dependent: DecoderStream,
    }
);

/// What [`Qwen3Source::with_code_observer`] calls with each frame's codes.
type CodeObserver = Box<dyn FnMut(&[u32]) + Send>;

/// Frames of codes the generation may run ahead of the decoder.
const AHEAD: usize = 1;

/// The generation thread: frames of codes as it makes them (the channel closes at the
/// end); dropping `first_heard` lets it go on past the first frame; the thread itself, to
/// tell its end from a panic.
struct Codes {
    frames: Receiver<Result<Vec<u32>, SpeakError>>,
    first_heard: Option<SyncSender<()>>,
    thread: Option<JoinHandle<()>>,
}

/// The pool the generation runs its products on, beside the one the decoder uses: the
/// talker and code predictor mostly wait on memory and the decoder mostly computes, so
/// the two overlap on the same cores (measured at the 0.6B shapes, auto codec: 92 → 80 ms
/// per frame in f32, 90 → 72-75 ms with the decoder in mixed precision).
fn generation_pool() -> Option<&'static rayon::ThreadPool> {
    static POOL: OnceLock<Option<rayon::ThreadPool>> = OnceLock::new();
    POOL.get_or_init(|| {
        rayon::ThreadPoolBuilder::new()
            .num_threads(rayon::current_num_threads())
            .thread_name(|i| format!("spiral-codes-{i}"))
            .build()
            .ok()
    })
    .as_ref()
}

/// Speech from a [`Qwen3Tts`] checkpoint, one [`Frame`] per frame of codes.
pub struct Qwen3Source {
    cpu: Cpu,
    request: Request,
    options: Options,
    /// The codes, from a generation started by the first [`next_frame`](Source::next_frame)
    /// (so that the prompt's prefill counts in the time to first audio) on a thread of its
    /// own, which makes the next frame's codes while this one is decoded.
    codes: Option<Codes>,
    audio: Audio,
    observer: Option<CodeObserver>,
    router: Option<Box<dyn Router>>,
    live: Live,
    counts: RouteCounts,
    /// The previous frame's codes (to warm a restarted decoder up) and fill (to fade in from).
    previous: (Vec<u32>, Option<Arc<[f32]>>),
    index: u64,
}

impl Qwen3Source {
    pub fn new(model: Arc<Qwen3Tts>, request: Request, options: Options) -> Qwen3Source {
        Qwen3Source {
            cpu: Cpu::best(),
            request,
            options,
            codes: None,
            audio: Audio::new(model, |m| m.speech().stream()),
            observer: None,
            router: None,
            live: Live::default(),
            counts: RouteCounts::default(),
            previous: (Vec::new(), None),
            index: 0,
        }
    }

    /// Asks `router` about each frame of codes before the speech decoder runs on it (its
    /// features: the frame's quantized latent; the text gives no pauses here) and tells it
    /// how the frame played. The decoder has no look-ahead, so runs of frames it skips are
    /// cut as [`LiveStep`] describes. Without a router every frame is decoded.
    pub fn with_router(mut self, router: impl Router + 'static) -> Qwen3Source {
        self.router = Some(Box::new(router));
        self
    }

    /// Runs the kernels on `cpu` instead of the best path this CPU has.
    pub fn with_cpu(mut self, cpu: Cpu) -> Qwen3Source {
        self.cpu = cpu;
        self
    }

    /// Calls `observe` with each frame's codes (one per codebook) as they are made.
    pub fn with_code_observer(mut self, observe: impl FnMut(&[u32]) + Send + 'static) -> Qwen3Source {
        self.observer = Some(Box::new(observe));
        self
    }

    /// Starts the generation on its own thread. It waits after the first frame until that
    /// frame is decoded, so the first audio has the cores to itself.
    fn start(&self) -> Result<Codes, SourceError> {
        let (tx, frames) = mpsc::sync_channel(AHEAD);
        let (first_heard, heard) = mpsc::sync_channel::<()>(0);
        let (model, cpu) = (self.audio.borrow_owner().clone(), self.cpu);
        let (request, options) = (self.request.clone(), self.options.clone());
        let generate = move || match model.generate(cpu, &request, &options) {
            Err(e) => drop(tx.send(Err(e))),
            Ok(mut generation) => {
                let mut first = true;
                // A send fails once the source is gone: the generation stops with it.
                while generation.next_frame().is_some_and(|codes| tx.send(Ok(codes)).is_ok()) {
                    if std::mem::take(&mut first) {
                        // Returns when the source drops its end, after the first decode.
                        let _ = heard.recv();
                    }
                }
            }
        };
        let thread = std::thread::Builder::new()
            .name("spiral-codes".into())
            .spawn(move || match generation_pool() {
                Some(pool) => pool.install(generate),
                None => generate(),
            })
            .map_err(|e| SourceError::Model(Box::new(e)))?;
        Ok(Codes { frames, first_heard: Some(first_heard), thread: Some(thread) })
    }

    /// The next frame's codes; `None` at the end of the generation.
    fn next_codes(&mut self) -> Result<Option<Vec<u32>>, SourceError> {
        if self.codes.is_none() {
            self.codes = Some(self.start()?);
        }
        let Some(codes) = &mut self.codes else { return Ok(None) };
        match codes.frames.recv() {
            Ok(frame) => frame.map(Some).map_err(error),
            Err(_) => match codes.thread.take().map(JoinHandle::join) {
                Some(Err(_)) => Err(SourceError::Model("the generation thread panicked".into())),
                _ => Ok(None),
            },
        }
    }

    fn produce(&mut self) -> Result<Option<Vec<f32>>, SourceError> {
        let Some(codes) = self.next_codes()? else {
            return Ok(None);
        };
        if let Some(observe) = &mut self.observer {
            observe(&codes);
        }
        let (cpu, model) = (self.cpu, self.audio.borrow_owner().clone());
        let Some(router) = &mut self.router else {
            let (samples, ms) = decode(&mut self.audio, cpu, &codes)?;
            self.counts.add(Route::Decode, 1, ms);
            return Ok(Some(samples));
        };
        let latent = model.speech().latent(cpu, &codes, 1).map_err(error)?;
        let pending = Pending { position: self.index, features: &latent, pause: false };
        let hint = router.assign_route_hints(&[pending]).pop().unwrap_or(Hint::DECODE);
        let per_frame = model.speech().samples_per_frame();
        let fill = hint.audio.filter(|a| hint.route == Route::Reuse && a.len() == per_frame);
        let (samples, route) = match self.live.step(hint.route) {
            LiveStep::Fill => {
                self.counts.add(hint.route, 1, 0.0);
                (fill.as_deref().map_or_else(|| vec![0.0; per_frame], <[f32]>::to_vec), hint.route)
            }
            step => {
                if let LiveStep::Decode { restart: true, .. } = step {
                    self.audio = Audio::new(model.clone(), |m| m.speech().stream());
                    let (_, ms) = decode(&mut self.audio, cpu, &self.previous.0)?;
                    self.counts.warm(ms);
                }
                let (mut samples, ms) = decode(&mut self.audio, cpu, &codes)?;
                match step {
                    LiveStep::Decode { fade_in: true, .. } => {
                        crossfade_frame(&mut samples, self.previous.1.as_deref(), true)
                    }
                    LiveStep::FadeOut => crossfade_frame(&mut samples, fill.as_deref(), false),
                    _ => {}
                }
                self.counts.add(Route::Decode, 1, ms);
                (samples, Route::Decode)
            }
        };
        router.played(&pending, route, &samples, SampleRate(model.speech().sample_rate()));
        self.previous = (codes, fill);
        Ok(Some(samples))
    }
}

/// One frame of codes through the decoder stream, and the milliseconds it took.
fn decode(audio: &mut Audio, cpu: Cpu, codes: &[u32]) -> Result<(Vec<f32>, f64), SourceError> {
    let started = Instant::now();
    let samples = audio.with_dependent_mut(|_, stream| stream.push(cpu, codes, 1)).map_err(error)?;
    Ok((samples, started.elapsed().as_secs_f64() * 1e3))
}

fn error(e: impl std::error::Error + Send + Sync + 'static) -> SourceError {
    SourceError::Model(Box::new(e))
}

impl Source for Qwen3Source {
    fn sample_rate(&self) -> SampleRate {
        SampleRate(self.audio.borrow_owner().speech().sample_rate())
    }

    fn channels(&self) -> u16 {
        1
    }

    fn next_frame(&mut self) -> Result<Option<Frame>, SourceError> {
        // On a pool thread, so the kernels' parallel calls join as a worker would.
        let Some(samples) = rayon::scope(|_| self.produce())? else {
            return Ok(None);
        };
        // The first audio is out: the generation may run ahead now.
        if let Some(codes) = &mut self.codes {
            codes.first_heard = None;
        }
        let frame = Frame::new(FrameIndex(self.index), self.sample_rate(), 1, samples);
        self.index += 1;
        Ok(Some(frame))
    }

    fn route_counts(&self) -> Option<RouteCounts> {
        Some(self.counts)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A request the generation refuses is the first frame's error, not a silent end.
    #[test]
    fn a_refused_request_is_an_error_from_the_generation_thread() {
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/fixtures/qwen3/gqa4_dialect");
        let model = Arc::new(Qwen3Tts::load(&dir).unwrap());
        let request = Request { text: "  ".into(), speaker: Some("eric".into()), language: "chinese".into() };
        let options = Options::from_config(model.generation_config()).greedy();
        let e = Qwen3Source::new(model, request, options).next_frame().unwrap_err().to_string();
        assert!(e.contains("no text"), "{e}");
    }

    /// The source's audio is the decode of the codes it reports, frame by frame.
    #[test]
    fn frames_are_the_decoded_codes() {
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/fixtures/qwen3/gqa4_dialect");
        let model = Arc::new(Qwen3Tts::load(&dir).unwrap());
        let request = Request { text: "Hello.".into(), speaker: Some("eric".into()), language: "chinese".into() };
        let mut options = Options::from_config(model.generation_config()).greedy();
        options.max_new_tokens = 6;
        let codes = Arc::new(std::sync::Mutex::new(Vec::new()));
        let sink = codes.clone();
        let mut source = Qwen3Source::new(model.clone(), request, options)
            .with_code_observer(move |c| sink.lock().unwrap().extend_from_slice(c));
        let mut audio = Vec::new();
        while let Some(frame) = source.next_frame().unwrap() {
            assert_eq!((frame.sample_rate.0, frame.samples.len()), (24_000, model.speech().samples_per_frame()));
            audio.extend(frame.samples);
        }
        let codes = codes.lock().unwrap();
        let frames = codes.len() / model.groups();
        assert_eq!(frames, 5, "the cap of 6 tokens gives 5 frames");
        assert_eq!(audio, model.speech().decode(Cpu::best(), &codes, frames).unwrap());
    }
}
