//! A deterministic test signal: a sequence of sine tones with continuous phase.

use std::f64::consts::TAU;

use crate::frame::Frame;
use crate::source::{Source, SourceError};
use crate::units::{FrameIndex, SampleRate};

/// One segment of a [`ToneSource`].
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Tone {
    /// Frequency in hertz.
    pub hz: f64,
    /// Length in seconds.
    pub seconds: f64,
    /// Peak amplitude (1.0 is full scale).
    pub amplitude: f32,
}

/// Mono tones played back to back, the phase running on across segment edges so the
/// signal has no clicks. Its exact value at any instant is [`ToneSource::value_at`], which
/// tests use as the analytic reference after resampling and capture.
#[derive(Clone, Debug)]
pub struct ToneSource {
    rate: SampleRate,
    tones: Vec<Tone>,
    /// Phase (radians) at the start of each segment.
    start_phase: Vec<f64>,
    /// Start time (seconds) of each segment.
    start_time: Vec<f64>,
    total_frames: u64,
    frame_len: usize,
    next_sample: u64,
    next_index: u64,
}

impl ToneSource {
    /// Default length of one yielded frame: 80 ms, one Qwen3-TTS frame.
    pub const FRAME_SECONDS: f64 = 0.08;

    /// A sequence of tones at `rate`, yielded in frames of [`Self::FRAME_SECONDS`].
    pub fn new(rate: SampleRate, tones: Vec<Tone>) -> Result<Self, SourceError> {
        if rate.hz() == 0 {
            return Err(SourceError::Invalid("sample rate must be positive".into()));
        }
        let nyquist = rate.hz() as f64 / 2.0;
        if let Some(t) = tones.iter().find(|t| !(t.hz >= 0.0 && t.hz < nyquist && t.seconds >= 0.0)) {
            return Err(SourceError::Invalid(format!(
                "tone {} Hz for {} s: frequency must be in 0..{nyquist} Hz and length non-negative",
                t.hz, t.seconds
            )));
        }
        let (mut phase, mut time) = (0.0, 0.0);
        let (mut start_phase, mut start_time) = (Vec::new(), Vec::new());
        for t in &tones {
            start_phase.push(phase);
            start_time.push(time);
            phase = (phase + TAU * t.hz * t.seconds) % TAU;
            time += t.seconds;
        }
        Ok(Self {
            rate,
            total_frames: rate.frames_in(time),
            frame_len: rate.frames_in(Self::FRAME_SECONDS).max(1) as usize,
            tones,
            start_phase,
            start_time,
            next_sample: 0,
            next_index: 0,
        })
    }

    /// A single sine at half scale.
    pub fn sine(rate: SampleRate, hz: f64, seconds: f64) -> Result<Self, SourceError> {
        Self::new(rate, vec![Tone { hz, seconds, amplitude: 0.5 }])
    }

    /// Yield frames of `seconds` each instead of the default.
    pub fn with_frame_seconds(mut self, seconds: f64) -> Self {
        self.frame_len = self.rate.frames_in(seconds).max(1) as usize;
        self
    }

    /// Total length in sample frames.
    pub fn len_frames(&self) -> u64 {
        self.total_frames
    }

    /// The signal's exact value at `t` seconds from its start (0 outside it).
    pub fn value_at(&self, t: f64) -> f32 {
        let seg = self.start_time.partition_point(|&s| s <= t);
        if seg == 0 || t < 0.0 || t >= self.total_frames as f64 / self.rate.hz() as f64 {
            return 0.0;
        }
        let i = seg - 1;
        let tone = &self.tones[i];
        let local = t - self.start_time[i];
        if local >= tone.seconds {
            return 0.0;
        }
        (tone.amplitude as f64 * (self.start_phase[i] + TAU * tone.hz * local).sin()) as f32
    }
}

impl Source for ToneSource {
    fn sample_rate(&self) -> SampleRate {
        self.rate
    }

    fn channels(&self) -> u16 {
        1
    }

    fn next_frame(&mut self) -> Result<Option<Frame>, SourceError> {
        if self.next_sample >= self.total_frames {
            return Ok(None);
        }
        let n = (self.total_frames - self.next_sample).min(self.frame_len as u64);
        let rate = self.rate.hz() as f64;
        let samples = (self.next_sample..self.next_sample + n).map(|s| self.value_at(s as f64 / rate)).collect();
        let frame = Frame::new(FrameIndex(self.next_index), self.rate, 1, samples);
        self.next_sample += n;
        self.next_index += 1;
        Ok(Some(frame))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn yields_exact_length_in_frames() {
        let mut src = ToneSource::sine(SampleRate(22_050), 440.0, 1.0).unwrap();
        let mut total = 0;
        while let Some(f) = src.next_frame().unwrap() {
            assert_eq!(f.index.0 as usize, total / 1764);
            total += f.samples_per_channel();
        }
        assert_eq!(total, 22_050);
    }

    #[test]
    fn phase_is_continuous_across_segments() {
        let tones =
            vec![Tone { hz: 300.0, seconds: 0.0123, amplitude: 0.5 }, Tone { hz: 700.0, seconds: 0.1, amplitude: 0.5 }];
        let src = ToneSource::new(SampleRate(48_000), tones).unwrap();
        let edge = 0.0123;
        let step = 1.0 / 48_000.0;
        let jump = (src.value_at(edge) - src.value_at(edge - step)).abs();
        // A sine at 700 Hz and amplitude 0.5 moves at most 2*pi*700*0.5/48000 per sample.
        assert!(jump < 0.05, "jump {jump}");
    }

    #[test]
    fn rejects_frequencies_above_nyquist() {
        let err = ToneSource::new(SampleRate(8_000), vec![Tone { hz: 5_000.0, seconds: 1.0, amplitude: 0.5 }]);
        assert!(matches!(err, Err(SourceError::Invalid(_))));
    }
}
