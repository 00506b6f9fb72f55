//! Units that travel with audio data, so a count of samples is never mistaken for a rate.

use std::fmt;
use std::time::Duration;

/// Samples per second of one channel, in hertz.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct SampleRate(pub u32);

impl SampleRate {
    /// The rate in hertz.
    pub const fn hz(self) -> u32 {
        self.0
    }

    /// How long `frames` sample frames last at this rate.
    ///
    /// ```
    /// use spiral_engine::SampleRate;
    /// assert_eq!(SampleRate(48_000).duration_of(480).as_millis(), 10);
    /// ```
    pub fn duration_of(self, frames: u64) -> Duration {
        Duration::from_secs_f64(frames as f64 / self.0 as f64)
    }

    /// How many whole sample frames fit in `seconds` at this rate.
    pub fn frames_in(self, seconds: f64) -> u64 {
        (seconds * self.0 as f64).floor().max(0.0) as u64
    }
}

impl fmt::Display for SampleRate {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} Hz", self.0)
    }
}

/// Position of a frame in its source's output, counted from zero.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Default)]
pub struct FrameIndex(pub u64);

impl fmt::Display for FrameIndex {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "#{}", self.0)
    }
}
