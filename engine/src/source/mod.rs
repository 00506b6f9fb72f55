//! The [`Source`] trait and the non-model sources.

mod tone;
mod wav;

use crate::route::RouteCounts;
use std::path::PathBuf;
use std::time::Duration;

use thiserror::Error;

use crate::frame::Frame;
use crate::units::SampleRate;

pub use tone::{Tone, ToneSource};
pub use wav::WavSource;

/// Anything that yields audio frames one at a time, as they are produced.
///
/// Implementations must not block for longer than producing one frame takes: the output
/// spine calls [`Source::next_frame`] on its producer thread and measures the time spent in
/// it as production time. A source fed over time (lines typed one by one) waits for its
/// input in [`Source::input`] instead, which the spine calls first and does not count.
pub trait Source: Send {
    /// Rate of every frame this source yields.
    fn sample_rate(&self) -> SampleRate;

    /// Channel count of every frame this source yields.
    fn channels(&self) -> u16;

    /// The next frame, or `None` once the source has nothing more to say.
    ///
    /// A frame with no samples means nothing for now: a source fed over time returns one
    /// when it has said everything it was given (see [`Source::input`]).
    ///
    /// An error ends the stream; frames already returned stay valid and are still played.
    fn next_frame(&mut self) -> Result<Option<Frame>, SourceError>;

    /// Whether the source has something to say (or has ended), waiting up to `wait` for
    /// more input when it has said everything it was given. A source given all its input
    /// up front is always [`Input::Ready`].
    ///
    /// The output spine asks before each frame. While the answer is [`Input::Awaiting`] it
    /// plays out what it has, and the silence that follows is a pause, not an underrun;
    /// the input's audio then starts again as the stream's first audio did.
    fn input(&mut self, _wait: Duration) -> Input {
        Input::Ready
    }

    /// What a model source did with its decoder's frames (skipped, reused, decoded), for
    /// the latency report; `None` for sources without a routed decoder.
    fn route_counts(&self) -> Option<RouteCounts> {
        None
    }
}

impl<S: Source + ?Sized> Source for Box<S> {
    fn sample_rate(&self) -> SampleRate {
        (**self).sample_rate()
    }
    fn channels(&self) -> u16 {
        (**self).channels()
    }
    fn next_frame(&mut self) -> Result<Option<Frame>, SourceError> {
        (**self).next_frame()
    }
    fn input(&mut self, wait: Duration) -> Input {
        (**self).input(wait)
    }
    fn route_counts(&self) -> Option<RouteCounts> {
        (**self).route_counts()
    }
}

/// What a source has to work on: see [`Source::input`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Input {
    /// [`Source::next_frame`] has a frame to make, or the end to report.
    Ready,
    /// Everything given so far has been said; more input may come.
    Awaiting,
}

/// Why a source could not produce audio.
#[derive(Debug, Error)]
pub enum SourceError {
    /// A file could not be opened or read; `hint` says what to do about it.
    #[error("{path}: {reason} ({hint})")]
    File { path: PathBuf, reason: String, hint: &'static str },
    /// The source was configured with values it cannot honour.
    #[error("invalid source settings: {0}")]
    Invalid(String),
    /// A model failed while producing audio (its text front end or its arithmetic).
    #[error(transparent)]
    Model(Box<dyn std::error::Error + Send + Sync>),
}
