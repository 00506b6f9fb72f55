//! The body of the audio callback: ring to device buffer, without allocating, locking,
//! logging or blocking.

use std::cell::UnsafeCell;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crossbeam_channel::Receiver;
use ringbuf::traits::{Consumer, Observer, Producer};
use ringbuf::{HeapCons, HeapProd};
use spiral_engine::SampleRate;

use crate::control::{Control, Status};
use crate::telemetry::CallbackRecord;

/// Turns queued samples into device buffers. Used as the cpal callback body, by the paced
/// null device, and by apps that own their callback (pull mode): one code path for all.
pub struct Renderer {
    ring: HeapCons<f32>,
    channels: usize,
    controls: Receiver<Control>,
    telemetry: HeapProd<CallbackRecord>,
    status: Arc<Status>,
    volume: VolumeRamp,
    position: u64,
    started: bool,
    stopped: bool,
}

impl Renderer {
    /// A renderer reading interleaved `channels`-channel audio at `rate` from `ring`,
    /// taking commands from `controls` and writing one record per call into `telemetry`.
    /// [`crate::play`] and [`crate::pull`] build one; build your own to drive a custom
    /// output or to measure the callback in isolation.
    pub fn new(
        ring: HeapCons<f32>,
        channels: u16,
        rate: SampleRate,
        controls: Receiver<Control>,
        telemetry: HeapProd<CallbackRecord>,
        status: Arc<Status>,
        volume: f32,
    ) -> Self {
        Self {
            ring,
            channels: usize::from(channels.max(1)),
            controls,
            telemetry,
            status,
            volume: VolumeRamp::new(volume, rate),
            position: 0,
            started: false,
            stopped: false,
        }
    }

    /// Interleaved channel count of the buffers this renderer fills.
    pub fn channels(&self) -> usize {
        self.channels
    }

    /// Fills `out` (interleaved) with queued audio, silence where there is none.
    ///
    /// `device_delay` is the host's callback-to-speaker delay, where it reports one. A
    /// trailing partial sample frame in `out` is set to silence.
    pub fn render(&mut self, out: &mut [f32], device_delay: Option<Duration>) {
        let started = Instant::now();
        let flushed = self.apply_controls();
        let whole = out.len() - out.len() % self.channels;
        // Read `source_done` before popping: if it was set, every sample was already in the
        // ring, so a short read is the end of the stream, not an underrun.
        let source_done = self.status.source_done.load(Ordering::Acquire);
        // Audio past the release is gathered for a start: stopping there is a pause.
        let released = self.status.release.load(Ordering::Acquire).saturating_sub(self.position + u64::from(flushed));
        let allowed = if self.stopped {
            0
        } else {
            whole.min(usize::try_from(released).unwrap_or(usize::MAX).saturating_mul(self.channels))
        };
        let got = self.ring.pop_slice(&mut out[..allowed]);
        out[got..].fill(0.0);
        let short = got < whole;
        let underrun = got < allowed && self.started && !source_done;
        if underrun {
            self.status.underruns.fetch_add(1, Ordering::Relaxed);
        }
        if short && source_done && self.ring.is_empty() {
            self.status.drained.store(true, Ordering::Release);
        }
        self.started |= got > 0;
        self.volume.apply(&mut out[..whole], self.channels);

        let played = (got / self.channels) as u32;
        let record = CallbackRecord {
            started,
            duration: started.elapsed(),
            position: self.position,
            requested: (whole / self.channels) as u32,
            flushed,
            played,
            underrun,
            device_delay,
        };
        self.position += u64::from(flushed + played);
        if self.telemetry.try_push(record).is_err() {
            self.status.telemetry_dropped.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// Applies pending commands; returns the sample frames a flush or stop dropped.
    fn apply_controls(&mut self) -> u32 {
        // After a stop, whatever the producer still pushes before it notices is dropped too.
        let mut dropped = if self.stopped { self.ring.clear() } else { 0 };
        while let Ok(c) = self.controls.try_recv() {
            match c {
                Control::Stop => {
                    self.stopped = true;
                    dropped += self.ring.clear();
                }
                Control::Flush => dropped += self.ring.clear(),
                Control::Volume(v) => self.volume.set(v),
            }
        }
        (dropped / self.channels) as u32
    }
}

/// Linear volume ramp, so a volume change never clicks.
struct VolumeRamp {
    current: f32,
    target: f32,
    step: f32,
}

impl VolumeRamp {
    const RAMP_SECONDS: f64 = 0.01;

    fn new(volume: f32, rate: SampleRate) -> Self {
        let v = volume.clamp(0.0, 1.0);
        Self { current: v, target: v, step: (1.0 / (Self::RAMP_SECONDS * rate.hz().max(1) as f64)) as f32 }
    }

    fn set(&mut self, volume: f32) {
        // NaN means "no change"; clamp keeps the limiter's 0 dBFS guarantee.
        if !volume.is_nan() {
            self.target = volume.clamp(0.0, 1.0);
        }
    }

    fn apply(&mut self, out: &mut [f32], channels: usize) {
        if self.current == self.target {
            if self.current != 1.0 {
                out.iter_mut().for_each(|s| *s *= self.current);
            }
            return;
        }
        for frame in out.chunks_exact_mut(channels) {
            let delta = (self.target - self.current).clamp(-self.step, self.step);
            self.current += delta;
            frame.iter_mut().for_each(|s| *s *= self.current);
        }
    }
}

/// Hands a [`Renderer`] from one output to the next (a failed device to the null sink)
/// without a lock: whoever renders holds an ownership token for the length of one callback;
/// a caller that finds the token taken outputs silence instead of waiting.
pub struct RendererSlot {
    busy: AtomicBool,
    channels: usize,
    renderer: UnsafeCell<Renderer>,
}

// SAFETY: the renderer is only reached through `render`, which takes the `busy` token with
// an acquire CAS and releases it after use, so no two threads touch it at once.
unsafe impl Sync for RendererSlot {}

impl RendererSlot {
    pub(crate) fn new(renderer: Renderer) -> Arc<Self> {
        Arc::new(Self {
            busy: AtomicBool::new(false),
            channels: renderer.channels,
            renderer: UnsafeCell::new(renderer),
        })
    }

    /// Renders into `out`; returns false (and writes silence) if another output holds it.
    pub fn render(&self, out: &mut [f32], device_delay: Option<Duration>) -> bool {
        if self.busy.compare_exchange(false, true, Ordering::Acquire, Ordering::Relaxed).is_err() {
            out.fill(0.0);
            return false;
        }
        // SAFETY: the token taken above gives exclusive access until it is released below.
        // `assert_no_alloc` makes any allocation here abort binaries (tests, debug CLI) that
        // install its `AllocDisabler`; elsewhere it costs a thread-local counter.
        assert_no_alloc::assert_no_alloc(|| unsafe { (*self.renderer.get()).render(out, device_delay) });
        self.busy.store(false, Ordering::Release);
        true
    }

    /// Interleaved channel count of the buffers this slot fills.
    pub fn channels(&self) -> usize {
        self.channels
    }
}
