//! What the real-time side records about itself, and how frames are matched to callbacks.

use std::time::{Duration, Instant};

use spiral_engine::{FrameIndex, FrameStamps, SampleRate};

/// One output callback, recorded by the renderer without allocating.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct CallbackRecord {
    /// When the callback began.
    pub started: Instant,
    /// How long the renderer took.
    pub duration: Duration,
    /// Output sample frames taken from the ring (played or flushed) before this callback.
    pub position: u64,
    /// Sample frames the device asked for.
    pub requested: u32,
    /// Sample frames dropped by a flush or stop at the start of this callback.
    pub flushed: u32,
    /// Sample frames of real audio handed over; the rest was silence.
    pub played: u32,
    /// The ring ran short while the source was still producing.
    pub underrun: bool,
    /// The host's prediction of callback-to-speaker delay, where it gives one.
    pub device_delay: Option<Duration>,
}

/// A frame's journey through the spine, kept by the producer.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct FrameRecord {
    pub index: FrameIndex,
    /// Position of the frame's first sample in the output stream, in output sample frames.
    pub output_start: u64,
    /// Output sample frames the frame occupies.
    pub output_len: u64,
    pub stamps: FrameStamps,
}

/// Fills `handed` and `playback` of each frame from the callback that handed its first
/// sample to the device. Both lists are in stream order, so one sweep does it.
pub fn resolve_handed(frames: &mut [FrameRecord], callbacks: &[CallbackRecord], rate: SampleRate) {
    let mut cbs = callbacks.iter().peekable();
    for frame in frames.iter_mut() {
        while cbs.peek().is_some_and(|cb| cb.position + u64::from(cb.flushed + cb.played) <= frame.output_start) {
            cbs.next();
        }
        let Some(cb) = cbs.peek() else { break };
        let played_from = cb.position + u64::from(cb.flushed);
        if frame.output_start < played_from {
            continue; // flushed before it reached the device
        }
        let offset = rate.duration_of(frame.output_start - played_from);
        frame.stamps.handed = Some(cb.started);
        frame.stamps.playback = cb.device_delay.map(|d| cb.started + d + offset);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frames_map_to_the_callback_holding_their_first_sample() {
        let t0 = Instant::now();
        let cb = |i: u64, position: u64, flushed: u32, played: u32| CallbackRecord {
            started: t0 + Duration::from_millis(10 * i),
            duration: Duration::ZERO,
            position,
            requested: 480,
            flushed,
            played,
            underrun: false,
            device_delay: Some(Duration::from_millis(5)),
        };
        let callbacks = [cb(0, 0, 0, 480), cb(1, 480, 0, 480), cb(2, 960, 480, 0), cb(3, 1440, 0, 200)];
        let frame = |i: u64, start: u64| FrameRecord {
            index: FrameIndex(i),
            output_start: start,
            output_len: 240,
            stamps: FrameStamps::default(),
        };
        let mut frames = [frame(0, 0), frame(1, 240), frame(2, 480), frame(3, 1000), frame(4, 1440), frame(5, 1700)];
        resolve_handed(&mut frames, &callbacks, SampleRate(48_000));
        let handed: Vec<Option<Instant>> = frames.iter().map(|f| f.stamps.handed).collect();
        assert_eq!(handed, [Some(t0), Some(t0), Some(callbacks[1].started), None, Some(callbacks[3].started), None]);
        assert_eq!(frames[1].stamps.playback, Some(t0 + Duration::from_millis(10)));
    }
}
