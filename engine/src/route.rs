//! How a decoder asks, before it runs, whether each frame of its input needs decoding.
//!
//! A model's decoder (the VITS generator, the Qwen3-TTS speech decoder) turns frames of
//! its input into audio, and it is the most expensive stage. A [`Router`] sees each input
//! frame first ([`Pending`]: its position, its input vector, whether the text says it is a
//! pause) and answers with a [`Hint`]: decode it, skip it (silence), or reuse the audio of
//! a frame already decoded. The router lives downstream (spiral-graph's scheduler), so the
//! engine only defines the questions; the source carries the answers out (cutting its
//! decoder stream around runs of skipped frames, with crossfades) and counts what it did
//! in [`RouteCounts`].

use std::sync::Arc;

use crate::units::SampleRate;

/// What happens to one frame of decoder input.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub enum Route {
    #[default]
    Decode,
    /// Silence instead of the decoder's output.
    Skip,
    /// The audio of an earlier frame instead of the decoder's output.
    Reuse,
}

/// A router's answer for one frame.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Hint {
    pub route: Route,
    /// For [`Route::Reuse`]: the audio to play (one frame's samples).
    pub audio: Option<Arc<[f32]>>,
}

impl Hint {
    pub const DECODE: Hint = Hint { route: Route::Decode, audio: None };
    pub const SKIP: Hint = Hint { route: Route::Skip, audio: None };
}

/// A frame of decoder input, before the decoder has run on it.
#[derive(Clone, Copy, Debug)]
pub struct Pending<'a> {
    /// Position in the source's decoder-input timeline (every sentence continues it).
    pub position: u64,
    /// The decoder's input for this frame (a VITS latent column; a Qwen3-TTS frame's codes
    /// as numbers).
    pub features: &'a [f32],
    /// The text puts this frame in a pause (a punctuation or sentence-boundary phoneme).
    pub pause: bool,
}

/// Decides per frame, from what is known before decoding, and learns from what was played.
pub trait Router: Send {
    /// One hint per frame, for consecutive frames the decoder has not seen. A source may
    /// still decode a frame hinted otherwise (a run of skips too short to pay for cutting
    /// its decoder stream); [`Router::played`] says what it did.
    fn assign_route_hints(&mut self, frames: &[Pending<'_>]) -> Vec<Hint>;

    /// The audio one frame ended up as, and how it was made, in frame order.
    fn played(&mut self, frame: &Pending<'_>, route: Route, audio: &[f32], rate: SampleRate);
}

/// A router shared with the app, which can look at it between frames (the source holds
/// the lock only while it asks or tells, on its producer thread, never in the audio
/// callback).
impl<R: Router + ?Sized> Router for Arc<std::sync::Mutex<R>> {
    fn assign_route_hints(&mut self, frames: &[Pending<'_>]) -> Vec<Hint> {
        self.lock().unwrap_or_else(|e| e.into_inner()).assign_route_hints(frames)
    }

    fn played(&mut self, frame: &Pending<'_>, route: Route, audio: &[f32], rate: SampleRate) {
        self.lock().unwrap_or_else(|e| e.into_inner()).played(frame, route, audio, rate)
    }
}

/// What a source did with its decoder's input frames, for the latency report.
#[derive(Clone, Copy, Debug, Default, PartialEq, serde::Serialize)]
pub struct RouteCounts {
    pub frames_skipped: u64,
    pub frames_reused: u64,
    pub frames_decoded: u64,
    /// Frames decoded again only to restart a decoder after a cut (their audio is not
    /// played; see [`crate::models::cuts::LiveStep`]).
    pub frames_warmed: u64,
    /// Time spent in the decoder, warm-ups included.
    pub decode_ms: f64,
    /// Frames not decoded, less those warmed up, times the mean time a frame took the
    /// decoder in the same run.
    pub decode_ms_saved: f64,
}

impl RouteCounts {
    /// Counts `frames` frames that took `route`; `ms` is the decoder time they cost.
    pub fn add(&mut self, route: Route, frames: u64, ms: f64) {
        match route {
            Route::Decode => self.frames_decoded += frames,
            Route::Skip => self.frames_skipped += frames,
            Route::Reuse => self.frames_reused += frames,
        }
        self.decode_ms += ms;
        self.update();
    }

    /// Counts a frame decoded only to warm a restarted decoder up; `ms` as in [`add`](Self::add).
    pub fn warm(&mut self, ms: f64) {
        self.frames_warmed += 1;
        self.decode_ms += ms;
        self.update();
    }

    fn update(&mut self) {
        let work = self.frames_decoded + self.frames_warmed;
        let per_frame = self.decode_ms / work.max(1) as f64;
        let not_decoded = (self.frames_skipped + self.frames_reused) as f64 - self.frames_warmed as f64;
        self.decode_ms_saved = not_decoded * per_frame;
    }
}
