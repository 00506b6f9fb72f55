//! A brick-wall peak limiter at a fixed ceiling.

use spiral_engine::SampleRate;

/// Keeps every output sample within `±ceiling` by gain reduction, not clipping: a peak
/// envelope jumps instantly to the loudest channel of each sample frame and decays
/// exponentially (release); the gain is `ceiling / envelope` while the envelope is above the
/// ceiling and exactly one otherwise. All channels share one gain, so the stereo image holds.
///
/// A signal that never exceeds the ceiling passes bit for bit.
#[derive(Clone, Debug)]
pub struct Limiter {
    ceiling: f32,
    release: f32,
    envelope: f32,
}

impl Limiter {
    /// Full scale: 0 dBFS.
    pub const CEILING_0DBFS: f32 = 1.0;
    /// Time for the gain reduction to recover by a factor of e.
    pub const RELEASE_SECONDS: f64 = 0.05;

    /// A 0 dBFS limiter for audio at `rate`.
    pub fn new(rate: SampleRate) -> Self {
        Self::with_ceiling(rate, Self::CEILING_0DBFS)
    }

    /// A limiter with its ceiling at `ceiling` (linear, positive).
    pub fn with_ceiling(rate: SampleRate, ceiling: f32) -> Self {
        let release = (-1.0 / (Self::RELEASE_SECONDS * rate.hz().max(1) as f64)).exp() as f32;
        Self { ceiling, release, envelope: 0.0 }
    }

    /// Limits interleaved `samples` with `channels` channels in place.
    ///
    /// ```
    /// use spiral_nodes::Limiter;
    /// use spiral_engine::SampleRate;
    /// let mut x = [0.5, 2.0, -3.0, 0.1];
    /// Limiter::new(SampleRate(48_000)).process(&mut x, 2);
    /// assert!(x.iter().all(|s| s.abs() <= 1.0));
    /// ```
    pub fn process(&mut self, samples: &mut [f32], channels: usize) {
        for frame in samples.chunks_exact_mut(channels.max(1)) {
            let peak = frame.iter().fold(0.0f32, |m, s| m.max(s.abs()));
            // The envelope decays in its own domain, where f32 keeps full relative precision;
            // a gain recovering towards 1.0 would stall a few ulps short of it.
            self.envelope = peak.max(self.envelope * self.release);
            if self.envelope > self.ceiling {
                let gain = self.ceiling / self.envelope;
                frame.iter_mut().for_each(|s| *s *= gain);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quiet_signal_is_bit_exact() {
        let input: Vec<f32> = (0..4800).map(|i| 0.99 * (i as f32 * 0.01).sin()).collect();
        let mut out = input.clone();
        Limiter::new(SampleRate(48_000)).process(&mut out, 2);
        assert_eq!(out, input);
    }

    #[test]
    fn loud_signal_never_exceeds_ceiling_and_recovers() {
        let rate = SampleRate(48_000);
        let mut lim = Limiter::new(rate);
        let mut loud: Vec<f32> = (0..4800).map(|i| 4.0 * (i as f32 * 0.05).sin()).collect();
        lim.process(&mut loud, 1);
        assert!(loud.iter().all(|s| s.abs() <= 1.0));
        let peak = loud.iter().fold(0.0f32, |m, s| m.max(s.abs()));
        assert!(peak > 0.9, "limited, not muted: {peak}");
        // After one second of quiet the gain is back to exactly one.
        let mut quiet = vec![0.25f32; 48_000];
        lim.process(&mut quiet, 1);
        assert_eq!(*quiet.last().unwrap(), 0.25);
    }
}
