//! The producer thread: pulls frames from the source, converts them to the output format
//! and queues them for the device, waiting (never dropping) when the ring is full.

use spiral_engine::route::RouteCounts;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use ringbuf::traits::{Observer, Producer};
use ringbuf::HeapProd;
use spiral_engine::{FrameStamps, Input, SampleRate, Source};

use crate::channels::ChannelMap;
use crate::control::Status;
use crate::gate::Gate;
use crate::limiter::Limiter;
use crate::resample::{ResampleError, StreamResampler};
use crate::sink::wav::WavTap;
use crate::sink::OutputFormat;
use crate::telemetry::FrameRecord;

/// Source format to output format: resample, map channels, limit.
pub struct Pipeline {
    resampler: Option<StreamResampler>,
    from: SampleRate,
    to: SampleRate,
    map: ChannelMap,
    /// Interleaved channels of the source.
    channels: usize,
    limiter: Option<Limiter>,
    out_channels: usize,
    resampled: Vec<f32>,
    mapped: Vec<f32>,
    /// Source and output sample frames in all, and where the stretch since the last
    /// [`Pipeline::finish`] began in each (the resampler starts afresh there).
    source_frames: u64,
    output_frames: u64,
    stretch: (u64, u64),
}

impl Pipeline {
    /// A pipeline from `from` at `channels` to `to`, with the 0 dBFS limiter if `limit`.
    pub fn new(from: SampleRate, channels: u16, to: OutputFormat, limit: bool) -> Result<Self, ResampleError> {
        let resampler =
            if from == to.sample_rate { None } else { Some(StreamResampler::new(from, to.sample_rate, channels)?) };
        Ok(Self {
            resampler,
            from,
            to: to.sample_rate,
            map: ChannelMap::new(channels, to.channels),
            channels: usize::from(channels.max(1)),
            limiter: limit.then(|| Limiter::new(to.sample_rate)),
            out_channels: usize::from(to.channels),
            resampled: Vec::new(),
            mapped: Vec::new(),
            source_frames: 0,
            output_frames: 0,
            stretch: (0, 0),
        })
    }

    /// Output position (output sample frames) of source sample frame `source_frame`.
    pub fn output_position(&self, source_frame: u64) -> u64 {
        let (source, output) = self.stretch;
        output + source_frame.saturating_sub(source) * u64::from(self.to.hz()) / u64::from(self.from.hz())
    }

    /// Converts a block of source samples; returns the output that is ready.
    pub fn process(&mut self, input: &[f32]) -> Result<&[f32], ResampleError> {
        self.resampled.clear();
        let channels = self.channels;
        self.source_frames += (input.len() / channels) as u64;
        let converted = match &mut self.resampler {
            Some(r) => {
                r.process(input, &mut self.resampled)?;
                &self.resampled[..]
            }
            None => input,
        };
        self.output_frames += (converted.len() / channels) as u64;
        Ok(Self::shape(&self.map, &mut self.limiter, self.out_channels, converted, &mut self.mapped))
    }

    /// Flushes the resampler's tail: the end of the stream, or a pause in it after which
    /// the resampler starts afresh.
    pub fn finish(&mut self) -> Result<&[f32], ResampleError> {
        self.resampled.clear();
        if let Some(r) = &mut self.resampler {
            r.finish(&mut self.resampled)?;
        }
        self.output_frames += (self.resampled.len() / self.channels) as u64;
        self.stretch = (self.source_frames, self.output_frames);
        Ok(Self::shape(&self.map, &mut self.limiter, self.out_channels, &self.resampled, &mut self.mapped))
    }

    /// Channel-maps and limits a block at the output rate into `out`.
    fn shape<'a>(
        map: &ChannelMap,
        limiter: &mut Option<Limiter>,
        channels: usize,
        block: &[f32],
        out: &'a mut Vec<f32>,
    ) -> &'a [f32] {
        out.clear();
        map.apply(block, out);
        if let Some(l) = limiter {
            l.process(out, channels);
        }
        out
    }
}

/// The producer's end of the sample ring, with back-pressure.
pub struct RingWriter {
    ring: HeapProd<f32>,
    channels: usize,
    pushed: u64,
}

impl RingWriter {
    /// How long the producer sleeps when the ring is full: a fraction of any device period.
    const BACKOFF: Duration = Duration::from_millis(2);

    pub(crate) fn new(ring: HeapProd<f32>, channels: u16) -> Self {
        Self { ring, channels: usize::from(channels.max(1)), pushed: 0 }
    }

    /// Queues all of `samples` in whole sample frames, sleeping while the ring is full.
    /// `progress` gets the running total of sample frames queued after each push. Returns
    /// false if a stop was requested before everything fit.
    pub fn push(&mut self, mut samples: &[f32], status: &Status, mut progress: impl FnMut(u64)) -> bool {
        while !samples.is_empty() {
            let room = self.ring.vacant_len() / self.channels * self.channels;
            let n = room.min(samples.len());
            if n > 0 {
                self.ring.push_slice(&samples[..n]);
                samples = &samples[n..];
                self.pushed += (n / self.channels) as u64;
                status.queued_frames.store(self.pushed, Ordering::Release);
                progress(self.pushed);
            } else if status.stop_requested.load(Ordering::Acquire) {
                return false;
            } else {
                // A full ring plays whatever it holds: nothing more can be gathered.
                status.release.store(u64::MAX, Ordering::Release);
                std::thread::sleep(Self::BACKOFF);
            }
        }
        true
    }
}

/// What the producer thread hands back when the source is exhausted or stopped.
pub struct ProducerOutcome {
    pub frames: Vec<FrameRecord>,
    /// Sample frames the source produced, at the source rate.
    pub source_frames: u64,
    /// Time spent inside the source's `next_frame`.
    pub production: Duration,
    /// Why production ended early, if it did.
    pub error: Option<String>,
    /// The source's decoder routes, if it has them.
    pub routes: Option<RouteCounts>,
}

/// Where the producer delivers converted audio.
pub struct Outputs {
    pub ring: Option<RingWriter>,
    pub wav: Option<WavTap>,
    /// Interleaved channel count of the output.
    pub channels: usize,
}

/// How long the producer waits for a paused source's input before it looks for a stop.
const INPUT_POLL: Duration = Duration::from_millis(20);

/// Runs `source` to its end (or a stop) through `pipeline` into `outputs`, then marks the
/// stream done so the renderer can tell the end from an underrun. While the source awaits
/// input, what it said plays out whole and `gate` holds the ring for the next start.
pub fn run(
    mut source: Box<dyn Source>,
    mut pipeline: Pipeline,
    outputs: Outputs,
    status: &Status,
    mut gate: Gate,
) -> ProducerOutcome {
    let (rate, channels) = (source.sample_rate(), source.channels());
    let mut sink = Delivery { outputs, status, frames: Vec::new(), unqueued: 0, written: 0, error: None };
    let mut source_frames = 0u64;
    let mut production = Duration::ZERO;
    let mut paused = false;
    while !status.stop_requested.load(Ordering::Acquire) {
        if source.input(if paused { INPUT_POLL } else { Duration::ZERO }) == Input::Awaiting {
            if !paused {
                paused = true;
                if !sink.flush(&mut pipeline) {
                    break;
                }
                gate.hold(status, status.queued_frames.load(Ordering::Acquire));
            }
            continue;
        }
        paused = false;
        let requested = Instant::now();
        let frame = match source.next_frame() {
            Ok(Some(f)) => f,
            Ok(None) => break,
            Err(e) => {
                sink.fail(e.to_string());
                break;
            }
        };
        let produced = Instant::now();
        production += produced - requested;
        if frame.samples.is_empty() {
            continue;
        }
        if frame.sample_rate != rate || frame.channels != channels {
            sink.fail(format!(
                "frame {} is {} with {} channels but the source declared {rate} with {channels}",
                frame.index, frame.sample_rate, frame.channels
            ));
            break;
        }
        let start = pipeline.output_position(source_frames);
        source_frames += frame.samples_per_channel() as u64;
        let stamps = FrameStamps {
            requested: frame.stamps.requested.or(Some(requested)),
            produced: frame.stamps.produced.or(Some(produced)),
            input: frame.stamps.input,
            ..FrameStamps::default()
        };
        gate.frame(stamps.input, requested);
        let output_len = pipeline.output_position(source_frames) - start;
        sink.frames.push(FrameRecord { index: frame.index, output_start: start, output_len, stamps });
        match pipeline.process(&frame.samples) {
            Ok(block) => {
                if !sink.deliver(block) {
                    break;
                }
            }
            Err(e) => {
                sink.fail(e.to_string());
                break;
            }
        }
        gate.queued(status, status.queued_frames.load(Ordering::Acquire));
    }
    // After a stop too: the ring takes none of it (or what fits, which is never played), but
    // the file keeps every sample produced.
    sink.flush(&mut pipeline);
    if let Some(wav) = sink.outputs.wav.take() {
        if let Err(e) = wav.finish() {
            sink.fail(e.to_string());
        }
    }
    gate.release(status);
    status.source_done.store(true, Ordering::Release);
    ProducerOutcome { frames: sink.frames, source_frames, production, error: sink.error, routes: source.route_counts() }
}

/// The producer's outputs plus the bookkeeping of which frames have reached them.
struct Delivery<'a> {
    outputs: Outputs,
    status: &'a Status,
    frames: Vec<FrameRecord>,
    /// First frame not yet marked enqueued.
    unqueued: usize,
    /// Output sample frames written with no device (the file is the sink).
    written: u64,
    error: Option<String>,
}

impl Delivery<'_> {
    /// Sends a block to the file and the ring; false if a stop cut it short.
    fn deliver(&mut self, block: &[f32]) -> bool {
        if let Some(wav) = &mut self.outputs.wav {
            if let Err(e) = wav.write(block) {
                // The device keeps playing; the report says why the file stopped.
                self.error.get_or_insert(e.to_string());
                self.outputs.wav = None;
            }
        }
        let Some(mut ring) = self.outputs.ring.take() else {
            self.written += (block.len() / self.outputs.channels) as u64;
            self.mark(self.written, true);
            return true;
        };
        let complete = ring.push(block, self.status, |total| self.mark(total, false));
        self.outputs.ring = Some(ring);
        complete
    }

    /// Stamps every frame whose first sample is below output position `total` as enqueued,
    /// and as handed too when the file is the sink (`file_only`).
    fn mark(&mut self, total: u64, file_only: bool) {
        let now = Instant::now();
        for f in self.frames[self.unqueued..].iter_mut().take_while(|f| f.output_start < total) {
            f.stamps.enqueued = Some(now);
            if file_only {
                f.stamps.handed = Some(now);
                f.stamps.playback = Some(now);
            }
            self.unqueued += 1;
        }
    }

    /// Delivers the pipeline's held-back tail; false if that failed or a stop cut it short.
    fn flush(&mut self, pipeline: &mut Pipeline) -> bool {
        match pipeline.finish() {
            Ok(tail) => self.deliver(tail),
            Err(e) => {
                self.fail(e.to_string());
                false
            }
        }
    }

    fn fail(&mut self, message: String) {
        self.error.get_or_insert(message);
    }
}
