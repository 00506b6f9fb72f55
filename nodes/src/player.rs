//! Playback: wires a source, the producer thread, the ring, the renderer and an output
//! together, watches the device, and returns the latency report.

use std::path::PathBuf;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crossbeam_channel::Receiver;
use ringbuf::traits::{Consumer, Split};
use ringbuf::{HeapCons, HeapRb};
use spiral_engine::{Source, SourceError};
use thiserror::Error;

use crate::control::{Controller, Status};
use crate::gate::{Gate, StartRule};
use crate::producer::{self, Outputs, Pipeline, ProducerOutcome, RingWriter};
use crate::render::{Renderer, RendererSlot};
use crate::report::{LatencyReport, Run};
use crate::resample::ResampleError;
use crate::sink::device::OpenDevice;
use crate::sink::null::NullDevice;
use crate::sink::wav::WavTap;
use crate::sink::{OutputFormat, SinkError};
use crate::telemetry::{resolve_handed, CallbackRecord};

/// Where playback goes.
#[derive(Clone, Debug, PartialEq)]
pub enum Sink {
    /// An audio device through cpal: the default one, or the one with this name or id.
    Device {
        name: Option<String>,
        /// A fixed period in sample frames; `None` keeps the host's default.
        buffer_frames: Option<u32>,
    },
    /// A device that discards audio, paced by the real clock.
    Null { format: OutputFormat, period: Duration },
    /// No device: only the WAV file of [`PlayOptions::wav`], written as fast as possible at
    /// the source's rate and channel count.
    FileOnly,
}

/// How to play.
#[derive(Clone, Debug)]
pub struct PlayOptions {
    pub sink: Sink,
    /// Also record the output stream to this WAV file (32-bit float).
    pub wav: Option<PathBuf>,
    /// The 0 dBFS brick-wall limiter.
    pub limiter: bool,
    /// Initial volume, 0..=1.
    pub volume: f32,
    /// Audio the ring holds ahead of the device, in seconds.
    pub buffer_seconds: f64,
    /// On a device error, keep playing on the null sink instead of failing.
    pub fallback_to_null: bool,
    /// Start the output only once the audio queued also covers the time since its input
    /// arrived (`start`, or the arrival a source fed over time stamps on an input's first
    /// frame), so a source that has not kept pace so far (a loaded machine) gets a longer
    /// lead instead of running the device dry; `false` starts at the minimum queued however
    /// slowly it came. A full ring or the source's end or pause starts it either way. A
    /// source that keeps up starts as soon either way. The same rule starts the audio of
    /// each input after a pause ([`spiral_engine::Source::input`]).
    pub paced_start: bool,
    /// When the input (text, file) became available; time to first audio counts from here.
    /// `None`: when `play` is called.
    pub start: Option<Instant>,
}

impl Default for PlayOptions {
    fn default() -> Self {
        Self {
            sink: Sink::Device { name: None, buffer_frames: None },
            wav: None,
            limiter: true,
            volume: 1.0,
            buffer_seconds: 0.5,
            fallback_to_null: true,
            paced_start: true,
            start: None,
        }
    }
}

/// Why playback could not start or finish.
#[derive(Debug, Error)]
pub enum PlayError {
    #[error(transparent)]
    Sink(#[from] SinkError),
    #[error(transparent)]
    Source(#[from] SourceError),
    #[error(transparent)]
    Resample(#[from] ResampleError),
    #[error("playback thread failed: {0}")]
    Thread(String),
}

/// A playback in progress.
pub struct Playback {
    controller: Controller,
    thread: JoinHandle<Result<LatencyReport, PlayError>>,
}

impl Playback {
    /// A remote control for this playback, usable from any thread.
    pub fn controller(&self) -> Controller {
        self.controller.clone()
    }

    /// Waits until everything was played (or stopped) and returns the measurements.
    pub fn wait(self) -> Result<LatencyReport, PlayError> {
        self.thread.join().map_err(|_| PlayError::Thread("the supervisor thread panicked".into()))?
    }
}

/// The app's end of a pull-mode playback: call [`PullReader::fill`] from your own audio
/// callback. It never blocks or allocates.
pub struct PullReader {
    slot: Arc<RendererSlot>,
    status: Arc<Status>,
}

impl PullReader {
    /// Fills `out` (interleaved, in the format given to [`pull`]) with the next samples;
    /// silence where none are ready.
    pub fn fill(&mut self, out: &mut [f32]) {
        self.slot.render(out, None);
    }

    /// Interleaved channel count `fill` expects.
    pub fn channels(&self) -> usize {
        self.slot.channels()
    }

    /// True once every sample has been handed out.
    pub fn is_finished(&self) -> bool {
        self.status.drained.load(Ordering::Acquire)
    }
}

impl Drop for PullReader {
    fn drop(&mut self) {
        // The app stopped pulling: the supervisor must not wait for a drain that never comes.
        self.status.stop_requested.store(true, Ordering::Release);
        self.status.drained.store(true, Ordering::Release);
    }
}

/// Plays `source` to the sink in `options` (push mode).
///
/// ```no_run
/// use spiral_engine::{SampleRate, ToneSource};
/// use spiral_nodes::{play, PlayOptions};
///
/// let tone = ToneSource::sine(SampleRate(24_000), 440.0, 1.0).unwrap();
/// let report = play(tone, PlayOptions::default()).unwrap().wait().unwrap();
/// println!("{}", report.summary());
/// ```
pub fn play<S: Source + 'static>(source: S, options: PlayOptions) -> Result<Playback, PlayError> {
    let start = options.start.unwrap_or_else(Instant::now);
    let source_format = OutputFormat { sample_rate: source.sample_rate(), channels: source.channels() };
    let (output, format) = match &options.sink {
        Sink::Device { name, buffer_frames } => match OpenDevice::open(name.as_deref(), *buffer_frames) {
            Ok(dev) => {
                let format = dev.format();
                (PendingOutput::Device(dev), format)
            }
            Err(e) if options.fallback_to_null => {
                let format = OutputFormat { sample_rate: spiral_engine::SampleRate(48_000), channels: 2 };
                (PendingOutput::Fallback(e.to_string()), format)
            }
            Err(e) => return Err(e.into()),
        },
        Sink::Null { format, period } => (PendingOutput::Null(*period), *format),
        Sink::FileOnly => {
            if options.wav.is_none() {
                return Err(SinkError::Invalid("a file-only output needs a WAV path".into()).into());
            }
            (PendingOutput::FileOnly, source_format)
        }
    };
    let held = matches!(output, PendingOutput::Device(_) | PendingOutput::Fallback(_) | PendingOutput::Null(_));
    Parts::new(source, format, &options, start, held)?.spawn(output, start)
}

/// Plays `source` into buffers the app pulls at `format` (pull mode). The producer runs on
/// its own thread; the returned [`PullReader`] is the real-time end.
pub fn pull<S: Source + 'static>(
    source: S,
    format: OutputFormat,
    options: PlayOptions,
) -> Result<(PullReader, Playback), PlayError> {
    let start = options.start.unwrap_or_else(Instant::now);
    let parts = Parts::new(source, format, &options, start, false)?;
    let reader = PullReader { slot: parts.slot.clone(), status: parts.status.clone() };
    Ok((reader, parts.spawn(PendingOutput::Pull, start)?))
}

/// The output chosen before the supervisor starts it.
enum PendingOutput {
    Device(OpenDevice),
    /// The device could not be opened; play on the null sink and say why.
    Fallback(String),
    Null(Duration),
    FileOnly,
    Pull,
}

/// The running output the supervisor owns.
enum LiveOutput {
    /// Held for its `Drop`, which stops the stream.
    Device {
        _stream: cpal::Stream,
        errors: Receiver<cpal::Error>,
    },
    /// Held for its `Drop`, which stops the pacing thread.
    Null {
        _device: NullDevice,
    },
    None,
}

/// Everything built before the threads start.
struct Parts {
    format: OutputFormat,
    source_rate: u32,
    fallback_to_null: bool,
    /// The device asked for (name, fixed period), to reopen it after an error.
    device_request: Option<(Option<String>, Option<u32>)>,
    records_wav: bool,
    status: Arc<Status>,
    controller: Controller,
    slot: Arc<RendererSlot>,
    telemetry: HeapCons<CallbackRecord>,
    producer: JoinHandle<ProducerOutcome>,
}

impl Parts {
    /// Capacity of the callback telemetry ring: over a minute of 10 ms callbacks.
    const TELEMETRY_CAPACITY: usize = 8192;
    /// How often the supervisor collects telemetry and checks the device.
    const POLL: Duration = Duration::from_millis(10);
    /// Tries at reopening a failed device before falling back to the null sink.
    const RECONNECTS: u32 = 3;
    /// Wait before the first reopening try; later tries wait longer.
    const RECONNECT_DELAY: Duration = Duration::from_millis(50);
    /// How often the supervisor looks for the first queued audio before starting an output.
    const AUDIO_POLL: Duration = Duration::from_micros(500);
    /// Audio queued before an output starts. Started on the first 58 ms of a VITS sentence,
    /// PulseAudio's opening burst ran the ring short (two underruns in most runs); from 60 ms
    /// none in 24 runs, with first audio 17-29 ms through cpal (BENCHMARKS.md).
    const START_AUDIO: Duration = Duration::from_millis(60);
    /// Longest wait for the device to play out what it was handed before it is closed.
    const MAX_TAIL: Duration = Duration::from_secs(1);

    /// The parts for `source`, whose input arrived at `start`; a `held` output starts on the
    /// [`StartRule`] (a live device), the others play whatever is queued from the first
    /// callback (a file, or an app pulling).
    fn new<S: Source + 'static>(
        source: S,
        format: OutputFormat,
        options: &PlayOptions,
        start: Instant,
        held: bool,
    ) -> Result<Self, PlayError> {
        let status = Arc::new(Status::default());
        let rule = StartRule {
            frames: format.sample_rate.frames_in(Self::START_AUDIO.as_secs_f64()),
            paced: options.paced_start,
            rate: format.sample_rate,
        };
        let gate = if held { Gate::held(rule, &status, start) } else { Gate::open(rule) };
        let source_rate = source.sample_rate().hz();
        let pipeline = Pipeline::new(source.sample_rate(), source.channels(), format, options.limiter)?;
        let wav = options.wav.as_deref().map(|p| WavTap::create(p, format)).transpose()?;
        let ring_frames = (format.sample_rate.frames_in(options.buffer_seconds.max(0.01)) as usize).max(64);
        let (ring_prod, ring_cons) = HeapRb::<f32>::new(ring_frames * usize::from(format.channels)).split();
        let (tel_prod, telemetry) = HeapRb::<CallbackRecord>::new(Self::TELEMETRY_CAPACITY).split();
        let (tx, rx) = crossbeam_channel::bounded(64);
        let controller = Controller::new(tx, status.clone());
        let renderer =
            Renderer::new(ring_cons, format.channels, format.sample_rate, rx, tel_prod, status.clone(), options.volume);
        let outputs = Outputs {
            ring: (options.sink != Sink::FileOnly).then(|| RingWriter::new(ring_prod, format.channels)),
            wav,
            channels: usize::from(format.channels),
        };
        let producer_status = status.clone();
        let producer = std::thread::Builder::new()
            .name("spiral-producer".into())
            .spawn(move || producer::run(Box::new(source), pipeline, outputs, &producer_status, gate))
            .map_err(|e| PlayError::Thread(e.to_string()))?;
        Ok(Self {
            format,
            source_rate,
            fallback_to_null: options.fallback_to_null,
            device_request: match &options.sink {
                Sink::Device { name, buffer_frames } => Some((name.clone(), *buffer_frames)),
                _ => None,
            },
            records_wav: options.wav.is_some(),
            status,
            controller,
            slot: RendererSlot::new(renderer),
            telemetry,
            producer,
        })
    }

    /// Starts the supervisor thread for `pending`.
    fn spawn(self, pending: PendingOutput, start: Instant) -> Result<Playback, PlayError> {
        let controller = self.controller.clone();
        let thread = std::thread::Builder::new()
            .name("spiral-playback".into())
            .spawn(move || self.supervise(pending, start))
            .map_err(|e| PlayError::Thread(e.to_string()))?;
        Ok(Playback { controller, thread })
    }

    fn start_device(&self, dev: OpenDevice) -> Result<LiveOutput, SinkError> {
        let (etx, erx) = crossbeam_channel::unbounded();
        Ok(LiveOutput::Device { _stream: dev.start(self.slot.clone(), etx)?, errors: erx })
    }

    /// Reopens the device after a stream error, if it comes back in the same format within
    /// [`Self::RECONNECTS`] tries over the whole playback (`tries` counts them). Glitches such as an audio server that is still settling
    /// or a device that was briefly unplugged then cost nothing.
    fn reconnect(&self, tries: &mut u32) -> Option<LiveOutput> {
        let (name, buffer_frames) = self.device_request.clone()?;
        while *tries < Self::RECONNECTS {
            *tries += 1;
            std::thread::sleep(Self::RECONNECT_DELAY * *tries);
            let Ok(dev) = OpenDevice::open(name.as_deref(), buffer_frames) else { continue };
            if dev.format() != self.format {
                return None; // the renderer and pipeline are built for the old format
            }
            if let Ok(live) = self.start_device(dev) {
                return Some(live);
            }
        }
        None
    }

    /// Returns once the producer has released audio to play: [`Self::START_AUDIO`] of it
    /// and, with a paced start, at least the time since its input arrived (or a full ring,
    /// or all the source said before it paused or ended; see [`crate::gate`]), or a stop
    /// was asked for. An output started before its first audio is ready hands
    /// silence to its first callbacks, and PulseAudio's ALSA plugin asks for a burst at the
    /// start and then waits: the first real samples then waited up to 50 ms for a callback
    /// (first audio of `spiral speak` through cpal was 29-65 ms for 10-12 ms of synthesis).
    /// Started on less than that burst, the device runs short at once. A source whose audio
    /// came slower than real time so far would run the device dry after the start: the
    /// default voice on a Zen 1 with two or four busy loops on its two cores underran 10-14
    /// times in 12-20 sentences started at 60 ms, never with the paced start, which left the
    /// unloaded first audio as it was (docs/BENCHMARKS.md).
    fn wait_for_audio(&self) {
        let ready = || {
            self.status.release.load(Ordering::Acquire) > 0
                || self.status.source_done.load(Ordering::Acquire)
                || self.status.stop_requested.load(Ordering::Acquire)
        };
        while !ready() {
            std::thread::sleep(Self::AUDIO_POLL);
        }
    }

    fn start_null(&self, period: Duration) -> Result<LiveOutput, PlayError> {
        Ok(LiveOutput::Null { _device: NullDevice::start(self.slot.clone(), self.format, period)? })
    }

    /// Runs the output until the stream is drained, falling back to the null sink if the
    /// device fails, then builds the report.
    fn supervise(mut self, pending: PendingOutput, start: Instant) -> Result<LatencyReport, PlayError> {
        let mut device_errors = Vec::new();
        let mut fell_back = false;
        let file_only = matches!(pending, PendingOutput::FileOnly);
        if !matches!(pending, PendingOutput::FileOnly | PendingOutput::Pull) {
            self.wait_for_audio();
        }
        let (mut live, sink, device) = match pending {
            PendingOutput::Device(dev) => {
                let name = dev.name.clone();
                match self.start_device(dev) {
                    Ok(live) => (live, "cpal", Some(name)),
                    Err(e) if self.fallback_to_null => {
                        device_errors.push(e.to_string());
                        fell_back = true;
                        (self.start_null(NullDevice::PERIOD)?, "cpal", Some(name))
                    }
                    Err(e) => return Err(e.into()),
                }
            }
            PendingOutput::Fallback(why) => {
                device_errors.push(why);
                fell_back = true;
                (self.start_null(NullDevice::PERIOD)?, "cpal", None)
            }
            PendingOutput::Null(period) => (self.start_null(period)?, "null", None),
            PendingOutput::FileOnly => (LiveOutput::None, "wav", None),
            PendingOutput::Pull => (LiveOutput::None, "pull", None),
        };
        let mut callbacks: Vec<CallbackRecord> = Vec::new();
        let (mut reconnects, mut reconnect_tries) = (0, 0);
        let mut watch = DeviceWatch::default();
        loop {
            callbacks.extend(self.telemetry.pop_iter());
            let last_callback = callbacks.last().map(|c| c.started);
            if let Some(fatal) = watch.check(&live, &self.status, &mut device_errors, last_callback) {
                watch = DeviceWatch::default();
                // Dropping the stream stops its callback, which frees the renderer for the
                // next output; the ring and everything queued in it stay.
                drop(std::mem::replace(&mut live, LiveOutput::None));
                live = match self.reconnect(&mut reconnect_tries) {
                    Some(reopened) => {
                        reconnects += 1;
                        reopened
                    }
                    None if self.fallback_to_null => {
                        fell_back = true;
                        self.start_null(NullDevice::PERIOD)?
                    }
                    None => {
                        self.controller.stop().ok();
                        let _ = self.producer.join();
                        return Err(SinkError::Device { device: device.unwrap_or_default(), reason: fatal }.into());
                    }
                };
            }
            let done =
                if file_only { self.producer.is_finished() } else { self.status.drained.load(Ordering::Acquire) };
            if done {
                break;
            }
            std::thread::sleep(Self::POLL);
        }
        if !matches!(live, LiveOutput::None) {
            // The last samples were handed over, not yet heard: let the device play them.
            let delay = callbacks.iter().filter_map(|c| c.device_delay).max().unwrap_or_default();
            let period =
                callbacks.last().map_or(Duration::ZERO, |c| self.format.sample_rate.duration_of(c.requested.into()));
            std::thread::sleep((delay + period).min(Self::MAX_TAIL));
        }
        drop(live);
        callbacks.extend(self.telemetry.pop_iter());
        let outcome = self.producer.join().map_err(|_| PlayError::Thread("the producer thread panicked".into()))?;
        let mut frames = outcome.frames;
        if !file_only {
            resolve_handed(&mut frames, &callbacks, self.format.sample_rate);
        }
        let sink = match (sink, self.records_wav && !file_only) {
            (s, true) => format!("{s}+wav"),
            (s, false) => s.to_string(),
        };
        let run = Run {
            sample_rate: self.format.sample_rate.hz(),
            channels: self.format.channels,
            source_sample_rate: self.source_rate,
            sink,
            device,
            device_errors,
            fell_back_to_null: fell_back,
            device_reconnects: reconnects,
            error: outcome.error,
            underruns: self.status.underruns.load(Ordering::Relaxed),
            device_xruns: self.status.device_xruns.load(Ordering::Relaxed),
            telemetry_dropped: self.status.telemetry_dropped.load(Ordering::Relaxed),
            routes: outcome.routes,
        };
        Ok(LatencyReport::build(&frames, &callbacks, start, outcome.source_frames, outcome.production, run))
    }
}

/// Decides when a device stream is beyond saving. cpal keeps a stream running after most
/// errors, and some are transient (the ALSA pulse plugin reports "I/O error" while the
/// server has no timing data yet), so an error alone is only a suspicion: the stream is
/// given up when the device is gone, or when an error is followed by a stall.
#[derive(Default)]
struct DeviceWatch {
    /// When the first unresolved error arrived, and what it said.
    suspect: Option<(Instant, String)>,
}

impl DeviceWatch {
    /// How long a stream may go without a callback after an error before it is given up.
    const STALL: Duration = Duration::from_millis(500);

    /// Reads the device's error reports (xruns are counted, the rest logged once each in a
    /// row) and returns why the stream must be replaced, if it must.
    fn check(
        &mut self,
        live: &LiveOutput,
        status: &Status,
        log: &mut Vec<String>,
        last_callback: Option<Instant>,
    ) -> Option<String> {
        let LiveOutput::Device { errors, .. } = live else { return None };
        for e in errors.try_iter() {
            let message = e.to_string();
            if e.kind() == cpal::ErrorKind::Xrun {
                status.device_xruns.fetch_add(1, Ordering::Relaxed);
                continue;
            }
            if log.last() != Some(&message) {
                log.push(message.clone());
            }
            match e.kind() {
                cpal::ErrorKind::DeviceNotAvailable | cpal::ErrorKind::StreamInvalidated => return Some(message),
                _ => {
                    self.suspect.get_or_insert((Instant::now(), message));
                }
            }
        }
        let (since, why) = self.suspect.as_ref()?;
        if last_callback.is_some_and(|t| t > *since) {
            self.suspect = None; // the stream recovered by itself
            return None;
        }
        (since.elapsed() > Self::STALL).then(|| format!("{why}; no callback for {:?} after it", Self::STALL))
    }
}
