//! Commands to a running playback from any thread, and the state it publishes back.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;

use crossbeam_channel::{Sender, TrySendError};
use thiserror::Error;

/// A command for the real-time renderer.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Control {
    /// Drop the audio queued in the ring and end playback.
    Stop,
    /// Drop the audio queued in the ring; playback goes on with what comes next.
    Flush,
    /// Set the output volume (linear, clamped to 0..=1), ramped over 10 ms.
    Volume(f32),
}

/// Why a command was not delivered.
#[derive(Debug, Error, PartialEq, Eq)]
pub enum ControlError {
    /// The renderer has not caught up with earlier commands; try again.
    #[error("the control queue is full; the output is not consuming commands")]
    Full,
    /// Playback has ended.
    #[error("playback has ended")]
    Ended,
}

/// Counters and flags shared by the producer, the renderer and the supervisor. Everything is
/// an atomic, so the real-time side never waits on anyone.
#[derive(Debug)]
pub struct Status {
    /// Callbacks that found the ring short of the audio released to play, after playback
    /// began and before the source ended.
    pub underruns: AtomicU64,
    /// Underruns the device itself reported (xruns), beyond the ones counted above.
    pub device_xruns: AtomicU64,
    /// Callback records lost because the telemetry ring was full.
    pub telemetry_dropped: AtomicU64,
    /// Stop was requested: the producer stops asking the source for frames.
    pub stop_requested: AtomicBool,
    /// Sample frames the producer has queued so far (at the output rate).
    pub queued_frames: AtomicU64,
    /// The producer has pushed its last sample.
    pub source_done: AtomicBool,
    /// The renderer found the ring empty after `source_done`: everything was handed out.
    pub drained: AtomicBool,
    /// The renderer plays the ring up to this output position (sample frames) and holds
    /// what follows: audio gathered for a start, after the output opens or a source pauses
    /// for input ([`spiral_engine::Source::input`]). `u64::MAX`: all of it.
    pub release: AtomicU64,
}

impl Default for Status {
    fn default() -> Self {
        Self {
            underruns: AtomicU64::new(0),
            device_xruns: AtomicU64::new(0),
            telemetry_dropped: AtomicU64::new(0),
            stop_requested: AtomicBool::new(false),
            queued_frames: AtomicU64::new(0),
            source_done: AtomicBool::new(false),
            drained: AtomicBool::new(false),
            release: AtomicU64::new(u64::MAX),
        }
    }
}

/// A cloneable, thread-safe remote control for one playback.
///
/// ```no_run
/// # fn demo(c: spiral_nodes::Controller) -> Result<(), spiral_nodes::ControlError> {
/// c.set_volume(0.5)?;
/// c.flush()?;
/// c.stop()?;
/// # Ok(()) }
/// ```
#[derive(Clone, Debug)]
pub struct Controller {
    tx: Sender<Control>,
    status: Arc<Status>,
}

impl Controller {
    pub(crate) fn new(tx: Sender<Control>, status: Arc<Status>) -> Self {
        Self { tx, status }
    }

    /// Stops playback: queued audio is dropped and the source is asked for nothing more.
    pub fn stop(&self) -> Result<(), ControlError> {
        self.status.stop_requested.store(true, Ordering::Release);
        self.send(Control::Stop)
    }

    /// Drops the audio queued for the device; what the source makes next still plays.
    pub fn flush(&self) -> Result<(), ControlError> {
        self.send(Control::Flush)
    }

    /// Sets the output volume (linear gain, clamped to 0..=1).
    pub fn set_volume(&self, volume: f32) -> Result<(), ControlError> {
        self.send(Control::Volume(volume))
    }

    /// Underruns counted so far.
    pub fn underruns(&self) -> u64 {
        self.status.underruns.load(Ordering::Relaxed)
    }

    /// True once every sample of the source has been handed to the output.
    pub fn is_finished(&self) -> bool {
        self.status.drained.load(Ordering::Acquire)
    }

    fn send(&self, c: Control) -> Result<(), ControlError> {
        self.tx.try_send(c).map_err(|e| match e {
            TrySendError::Full(_) => ControlError::Full,
            TrySendError::Disconnected(_) => ControlError::Ended,
        })
    }
}
