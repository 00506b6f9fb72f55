//! The ring between producer and callback: a slow producer causes counted underruns and
//! never blocks the callback; a fast producer is held back and loses nothing.

use std::time::{Duration, Instant};

use spiral_engine::{Frame, FrameIndex, Input, SampleRate, Source, SourceError};
use spiral_nodes::{play, pull, OutputFormat, PlayOptions, Sink};

const RATE: SampleRate = SampleRate(48_000);

/// A mono ramp 1, 2, 3, ... (scaled), so order, loss and duplication are all visible;
/// optionally slow, sleeping before each frame like a model that cannot keep up.
struct Ramp {
    next: u64,
    total: u64,
    frame: u64,
    delay: Duration,
}

impl Ramp {
    const STEP: f32 = 1.0 / 4_194_304.0; // 2^-22: exact in f32 for every value used here

    fn value(i: u64) -> f32 {
        (i + 1) as f32 * Self::STEP
    }
}

impl Source for Ramp {
    fn sample_rate(&self) -> SampleRate {
        RATE
    }
    fn channels(&self) -> u16 {
        1
    }
    fn next_frame(&mut self) -> Result<Option<Frame>, SourceError> {
        if self.next >= self.total {
            return Ok(None);
        }
        std::thread::sleep(self.delay);
        let end = (self.next + self.frame).min(self.total);
        let samples = (self.next..end).map(Ramp::value).collect();
        let frame = Frame::new(FrameIndex(self.next / self.frame), RATE, 1, samples);
        self.next = end;
        Ok(Some(frame))
    }
}

fn exact_options(buffer_seconds: f64) -> PlayOptions {
    PlayOptions { limiter: false, buffer_seconds, ..PlayOptions::default() }
}

fn expect_ramp(got: &[f32], total: u64) {
    let audio: Vec<f32> = got.iter().copied().filter(|&s| s != 0.0).collect();
    assert_eq!(audio.len() as u64, total, "samples lost or duplicated");
    for (i, &s) in audio.iter().enumerate() {
        assert_eq!(s, Ramp::value(i as u64), "sample {i} out of order");
    }
}

#[test]
fn slow_producer_underruns_are_counted_and_never_block() {
    let total = 4_800; // 100 ms in 10 ms frames, each 60 ms late
    let source = Ramp { next: 0, total, frame: 480, delay: Duration::from_millis(60) };
    let format = OutputFormat { sample_rate: RATE, channels: 1 };
    let (mut reader, playback) = pull(source, format, exact_options(0.5)).unwrap();
    let controller = playback.controller();
    let mut out = Vec::new();
    let mut block = [0.0f32; 480];
    let mut slowest = Duration::ZERO;
    let deadline = Instant::now() + Duration::from_secs(10);
    while !reader.is_finished() && Instant::now() < deadline {
        let t = Instant::now();
        reader.fill(&mut block);
        slowest = slowest.max(t.elapsed());
        out.extend_from_slice(&block);
        std::thread::sleep(Duration::from_millis(10));
    }
    assert!(reader.is_finished(), "playback did not finish");
    // A fill that waited for the producer would take a whole 60 ms frame.
    assert!(slowest < Duration::from_millis(30), "a fill blocked for {slowest:?}");
    let underruns = controller.underruns();
    drop(reader);
    let report = playback.wait().unwrap();
    assert!(underruns >= 5, "expected an underrun per late frame, counted {underruns}");
    assert_eq!(report.run.underruns, underruns);
    // Each is placed: in order, inside the 100 ms stream, waiting for one of the late frames
    // after the first (the output starts on the first), with silence where audio should be.
    assert_eq!(report.underruns_at.len() as u64, underruns);
    for (u, next) in report.underruns_at.iter().zip(report.underruns_at.iter().skip(1)) {
        assert!(u.at_ms < next.at_ms && u.stream_ms <= next.stream_ms, "{u:?} then {next:?}");
    }
    for u in &report.underruns_at {
        assert!(u.stream_ms >= 10.0 && u.stream_ms < 100.0, "{u:?}");
        assert!(u.missing_ms > 0.0 && u.missing_ms <= 10.0, "{u:?}");
        let frame = u.awaiting_frame.expect("an underrun inside the stream awaits a frame");
        assert!((1..10).contains(&frame) && frame == (u.stream_ms / 10.0) as u64, "{u:?}");
    }
    expect_ramp(&out, total);
}

#[test]
fn fast_producer_is_held_back_without_loss() {
    let total = 96_000; // 2 s produced at once into a 20 ms ring
    let source = Ramp { next: 0, total, frame: 3_840, delay: Duration::ZERO };
    let format = OutputFormat { sample_rate: RATE, channels: 1 };
    let (mut reader, playback) = pull(source, format, exact_options(0.02)).unwrap();
    let mut out = Vec::new();
    let mut block = [0.0f32; 480];
    let deadline = Instant::now() + Duration::from_secs(20);
    while !reader.is_finished() && Instant::now() < deadline {
        reader.fill(&mut block);
        out.extend_from_slice(&block);
        std::thread::sleep(Duration::from_micros(200));
    }
    drop(reader);
    let report = playback.wait().unwrap();
    expect_ramp(&out, total);
    // The producer could only run ahead by the ring: the last frame was queued long after
    // the first, because it waited for room.
    let first = report.per_frame[0].enqueued_ms.unwrap();
    let last = report.per_frame.last().unwrap().enqueued_ms.unwrap();
    assert!(last - first > 50.0, "producer was not held back: {first} .. {last} ms");
    assert_eq!(report.frames_dropped, 0);
}

#[test]
fn flush_drops_queued_audio_and_stop_ends_playback() {
    let source = Ramp { next: 0, total: 480_000, frame: 4_800, delay: Duration::ZERO };
    let format = OutputFormat { sample_rate: RATE, channels: 1 };
    let (mut reader, playback) = pull(source, format, exact_options(0.5)).unwrap();
    let controller = playback.controller();
    let mut block = [0.0f32; 480];
    std::thread::sleep(Duration::from_millis(100)); // let the ring fill
    reader.fill(&mut block);
    let before = block[479];
    controller.flush().unwrap();
    std::thread::sleep(Duration::from_millis(50));
    reader.fill(&mut block);
    // The flush skipped the queued half second: the next samples come from far ahead.
    assert!(block[0] == 0.0 || block[0] > before + 0.4 * 48_000.0 * Ramp::STEP, "{before} then {}", block[0]);
    controller.stop().unwrap();
    let deadline = Instant::now() + Duration::from_secs(5);
    while !reader.is_finished() && Instant::now() < deadline {
        reader.fill(&mut block);
        std::thread::sleep(Duration::from_millis(5));
    }
    assert!(reader.is_finished());
    reader.fill(&mut block);
    assert!(block.iter().all(|&s| s == 0.0), "audio after stop");
    drop(reader);
    let report = playback.wait().unwrap();
    assert!(report.frames_dropped > 0);
    assert!(report.frames < 100, "the source was asked for everything despite the stop");
}

/// An output starts once some audio is queued, not before: its first callbacks then hand
/// out audio rather than silence, and a device that asks for a burst at its start (as
/// PulseAudio's ALSA plugin does) does not make the first samples wait for its next call.
#[test]
fn the_output_starts_with_audio_queued() {
    // 10 ms frames made every 5 ms: the first 60 ms of audio are queued after about 30 ms.
    let source = Ramp { next: 0, total: 14_400, frame: 480, delay: Duration::from_millis(5) };
    let sink =
        Sink::Null { format: OutputFormat { sample_rate: RATE, channels: 1 }, period: Duration::from_millis(10) };
    let report = play(source, PlayOptions { sink, ..exact_options(0.5) }).unwrap().wait().unwrap();
    let first_handed = report.per_frame[0].handed_ms.unwrap();
    let sixth_queued = report.per_frame[5].enqueued_ms.unwrap();
    assert!(first_handed >= sixth_queued, "first audio handed at {first_handed} ms, 60 ms queued at {sixth_queued} ms");
    assert_eq!(report.run.underruns, 0);
    assert_eq!(report.frames_dropped, 0);
}

/// A ring smaller than the audio an output waits for before it starts: the output starts on
/// the full ring instead of waiting for the producer, which waits for room.
#[test]
fn an_output_starts_on_a_full_ring_smaller_than_its_start() {
    let source = Ramp { next: 0, total: 9_600, frame: 480, delay: Duration::ZERO };
    let sink =
        Sink::Null { format: OutputFormat { sample_rate: RATE, channels: 1 }, period: Duration::from_millis(10) };
    let playback = play(source, PlayOptions { sink, ..exact_options(0.02) }).unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(playback.wait());
    });
    let report = rx.recv_timeout(Duration::from_secs(10)).expect("playback never finished").unwrap();
    assert_eq!(report.frames_dropped, 0);
    assert_eq!(report.run.underruns, 0);
}

/// A source slower than real time (10 ms frames every 15 ms, 300 ms in all): started at
/// 60 ms queued it runs the device dry; the paced start waits until the audio queued covers
/// the time taken, which this source never does, so it starts at the end and never underruns.
#[test]
fn a_paced_start_waits_for_a_source_that_has_not_kept_pace() {
    let run = |paced_start: bool| {
        let source = Ramp { next: 0, total: 14_400, frame: 480, delay: Duration::from_millis(15) };
        let sink =
            Sink::Null { format: OutputFormat { sample_rate: RATE, channels: 1 }, period: Duration::from_millis(10) };
        play(source, PlayOptions { sink, paced_start, ..exact_options(0.5) }).unwrap().wait().unwrap()
    };
    let early = run(false);
    assert!(early.run.underruns > 0, "started at 60 ms queued, a source at 2/3 of real time ran dry");
    let paced = run(true);
    assert_eq!(paced.run.underruns, 0);
    assert_eq!(paced.frames_dropped, 0);
    // All 30 frames took at least 450 ms to make; the paced start waited for them.
    let first = paced.time_to_first_audio_ms.unwrap();
    assert!(first >= 450.0, "first audio at {first} ms");
    assert!(early.time_to_first_audio_ms.unwrap() < first);
}

/// A source fed over time, like lines typed one by one: each input arrives at its time after
/// the source is made and says `frames` 10 ms frames of a constant `level` at once, the
/// first stamped with its arrival.
struct Typed {
    rate: SampleRate,
    made: Instant,
    arrivals: Vec<Duration>,
    frames: usize,
    level: f32,
    said: usize,
    queued: std::collections::VecDeque<Frame>,
    index: u64,
}

impl Typed {
    fn new(rate: SampleRate, arrivals: &[u64], frames: usize, level: f32) -> Typed {
        let arrivals = arrivals.iter().map(|&ms| Duration::from_millis(ms)).collect();
        Typed { rate, made: Instant::now(), arrivals, frames, level, said: 0, queued: Default::default(), index: 0 }
    }
}

impl Source for Typed {
    fn sample_rate(&self) -> SampleRate {
        self.rate
    }
    fn channels(&self) -> u16 {
        1
    }
    fn next_frame(&mut self) -> Result<Option<Frame>, SourceError> {
        Ok(match self.queued.pop_front() {
            Some(frame) => Some(frame),
            None if self.said < self.arrivals.len() => {
                Some(Frame::new(FrameIndex(self.index), self.rate, 1, Vec::new()))
            }
            None => None,
        })
    }
    fn input(&mut self, wait: Duration) -> Input {
        let Some(&at) = self.arrivals.get(self.said).filter(|_| self.queued.is_empty()) else { return Input::Ready };
        let at = self.made + at;
        if Instant::now() + wait < at {
            std::thread::sleep(wait);
            return Input::Awaiting;
        }
        std::thread::sleep(at.saturating_duration_since(Instant::now()));
        let samples = self.rate.frames_in(0.01) as usize;
        for i in 0..self.frames {
            let mut frame = Frame::new(FrameIndex(self.index), self.rate, 1, vec![self.level; samples]);
            frame.stamps.input = (i == 0).then_some(at);
            self.index += 1;
            self.queued.push_back(frame);
        }
        self.said += 1;
        Input::Ready
    }
}

/// Lines that arrive while the output is running dry: what was said plays out, the pause
/// between inputs is silence but not an underrun, and each input starts again on 60 ms of
/// its own audio, its first audio timed from its arrival.
#[test]
fn a_source_that_pauses_for_input_starts_each_input_without_underruns() {
    let source = Typed::new(SampleRate(24_000), &[50, 450, 900], 10, 0.5);
    let sink =
        Sink::Null { format: OutputFormat { sample_rate: RATE, channels: 1 }, period: Duration::from_millis(10) };
    let report = play(source, PlayOptions { sink, ..exact_options(0.5) }).unwrap().wait().unwrap();
    assert_eq!(report.run.underruns, 0, "{:?}", report.underruns_at);
    assert_eq!(report.frames_dropped, 0);
    assert_eq!(report.inputs.iter().map(|i| i.frame).collect::<Vec<_>>(), [0, 10, 20]);
    for (input, at) in report.inputs.iter().zip([50.0, 450.0, 900.0]) {
        assert!((input.arrived_ms - at).abs() < 5.0, "{input:?}");
        // Made at once, 60 ms of it are queued on arrival: the next callback hands it over
        // (10 ms, with room for a loaded machine).
        let first = input.first_audio_ms.unwrap();
        assert!(first < 50.0, "{input:?}");
    }
    assert_eq!(report.time_to_first_audio_ms, report.inputs[0].first_audio_ms);
    // Production time is the frames' making, not the waits for input.
    assert!(report.production_seconds < 0.2, "{} s", report.production_seconds);
}

/// When a source pauses for input, what it said plays out whole before the next input
/// arrives, including the end the resampler holds back until more audio pushes it through.
#[test]
fn a_pause_flushes_the_resampled_tail() {
    let (level, frames) = (0.5, 10);
    let source = Typed::new(SampleRate(24_000), &[0, 400], frames, level);
    let format = OutputFormat { sample_rate: RATE, channels: 1 };
    let (mut reader, playback) = pull(source, format, exact_options(0.5)).unwrap();
    let start = Instant::now();
    let mut block = [0.0f32; 480];
    let (mut before_second, mut all) = (0, 0);
    let deadline = start + Duration::from_secs(10);
    while !reader.is_finished() && Instant::now() < deadline {
        reader.fill(&mut block);
        let loud = block.iter().filter(|s| s.abs() > level / 2.0).count();
        all += loud;
        if start.elapsed() < Duration::from_millis(380) {
            before_second += loud;
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    drop(reader);
    playback.wait().unwrap();
    let per_input = frames * 480; // 100 ms at the output's 48 kHz
                                  // The resampler's 256-frame chunks would hold back up to 10 ms (480 samples here).
    assert!(before_second + 24 >= per_input, "{before_second} of {per_input} samples played before the pause ended");
    assert!(all.abs_diff(2 * per_input) <= 48, "{all} samples for two inputs of {per_input}");
}

/// A stop while the source waits for input that is long in coming ends the playback at
/// once: the producer looks for a stop between its waits instead of waiting on the source.
#[test]
fn a_stop_during_a_pause_ends_playback() {
    let source = Typed::new(SampleRate(24_000), &[0, 60_000], 5, 0.5);
    let sink =
        Sink::Null { format: OutputFormat { sample_rate: RATE, channels: 1 }, period: Duration::from_millis(10) };
    let playback = play(source, PlayOptions { sink, ..exact_options(0.5) }).unwrap();
    let controller = playback.controller();
    std::thread::sleep(Duration::from_millis(300)); // the first input has played; the second is a minute away
    let stopped = Instant::now();
    controller.stop().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(playback.wait());
    });
    let report = rx.recv_timeout(Duration::from_secs(5)).expect("playback did not end on a stop").unwrap();
    assert!(stopped.elapsed() < Duration::from_secs(2), "ended {:?} after the stop", stopped.elapsed());
    assert_eq!(report.inputs.len(), 1);
    assert!(report.inputs[0].first_audio_ms.is_some());
    assert_eq!(report.run.underruns, 0);
}
