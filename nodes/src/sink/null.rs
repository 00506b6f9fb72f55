//! A device that plays to nowhere, paced by the real clock like a sound card.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use super::{OutputFormat, SinkError};
use crate::render::RendererSlot;

/// Calls the renderer once per `period` on its own thread, for headless playback and
/// benchmarks: the producer meets the same back-pressure and deadlines as with a card.
pub struct NullDevice {
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl NullDevice {
    /// Default period: 10 ms, the device period the real-time bar is set at.
    pub const PERIOD: Duration = Duration::from_millis(10);

    /// Starts pulling from `slot` every `period`.
    pub fn start(slot: Arc<RendererSlot>, format: OutputFormat, period: Duration) -> Result<Self, SinkError> {
        let frames = format.sample_rate.frames_in(period.as_secs_f64()) as usize;
        if frames == 0 {
            return Err(SinkError::Invalid(format!("a {period:?} period holds no sample at {}", format.sample_rate)));
        }
        // The period as the device sees it: a whole number of sample frames.
        let period = format.sample_rate.duration_of(frames as u64);
        let stop = Arc::new(AtomicBool::new(false));
        let stop_flag = stop.clone();
        let mut buffer = vec![0.0f32; frames * usize::from(format.channels)];
        let thread = std::thread::Builder::new()
            .name("spiral-null-device".into())
            .spawn(move || {
                let mut deadline = Instant::now();
                while !stop_flag.load(Ordering::Acquire) {
                    slot.render(&mut buffer, Some(Duration::ZERO));
                    deadline += period;
                    let now = Instant::now();
                    match deadline.checked_duration_since(now) {
                        Some(wait) => std::thread::sleep(wait),
                        // Fell a whole period behind (the machine stalled): resume from now
                        // rather than firing a burst of catch-up callbacks.
                        None if now - deadline > period => deadline = now,
                        None => {}
                    }
                }
            })
            .map_err(|e| SinkError::Device { device: "null".into(), reason: e.to_string() })?;
        Ok(Self { stop, thread: Some(thread) })
    }
}

impl Drop for NullDevice {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Release);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}
