//! The unit of audio that flows from a source to the speakers.

use std::time::{Duration, Instant};

use crate::units::{FrameIndex, SampleRate};

/// One block of audio as a source produced it: a model frame (80 ms for Qwen3-TTS), a
/// vocoder chunk, or a slice of a file.
///
/// "Frame" here means the source's unit of output; a single instant across all channels is
/// called a *sample frame*, and [`Frame::samples_per_channel`] counts those.
#[derive(Clone, Debug, PartialEq)]
pub struct Frame {
    /// Position in the source's output.
    pub index: FrameIndex,
    /// Rate of `samples`.
    pub sample_rate: SampleRate,
    /// Channel count of `samples` (interleaved).
    pub channels: u16,
    /// Interleaved samples, nominally in -1.0..=1.0.
    pub samples: Vec<f32>,
    /// When this frame passed each stage; filled by whoever knows.
    pub stamps: FrameStamps,
}

impl Frame {
    /// A frame with no time stamps yet.
    pub fn new(index: FrameIndex, sample_rate: SampleRate, channels: u16, samples: Vec<f32>) -> Self {
        Self { index, sample_rate, channels, samples, stamps: FrameStamps::default() }
    }

    /// Number of sample frames (samples per channel).
    pub fn samples_per_channel(&self) -> usize {
        self.samples.len() / usize::from(self.channels.max(1))
    }

    /// How long this frame plays.
    pub fn duration(&self) -> Duration {
        self.sample_rate.duration_of(self.samples_per_channel() as u64)
    }
}

/// The moments a frame passed each stage on its way to the device.
///
/// A source may set `requested` and `produced` itself when it knows better (a model that
/// computes several frames in one step); otherwise the output spine stamps them around the
/// call that returned the frame. The spine sets the rest.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct FrameStamps {
    /// The input whose first audio this frame is (a line of text) became available: set by
    /// a source fed over time (see [`Source::input`](crate::Source::input)), so that each
    /// input's time to first audio counts from its own arrival.
    pub input: Option<Instant>,
    /// The consumer asked the source for this frame.
    pub requested: Option<Instant>,
    /// The source returned it.
    pub produced: Option<Instant>,
    /// Its first sample entered the output ring (or the file, for a file-only output).
    pub enqueued: Option<Instant>,
    /// Its first sample was handed to the device in an output callback. `None` when it was
    /// flushed or stopped before reaching the device.
    pub handed: Option<Instant>,
    /// When the host predicts that first sample leaves the speaker (`handed` plus the
    /// device's reported delay plus the sample's offset in its buffer).
    pub playback: Option<Instant>,
}
