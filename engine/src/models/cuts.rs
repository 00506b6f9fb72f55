//! Where a streaming decoder stops and restarts around runs of frames it does not decode,
//! and how the audio is joined there.
//!
//! A convolutional decoder's output for a frame depends on its neighbours, so leaving one
//! frame out saves nothing; leaving out a run does. For a run of frames hinted Skip or
//! Reuse, the decoder still decodes [`MARGIN`] frames into each end of it (a sentence's
//! first and last frames need no margin), finishes its stream there, and starts a new one
//! at the far margin. The margins are crossfaded (raised cosine) between the decoded audio
//! and the fill (silence for Skip, the reused frame's audio for Reuse); the frames between
//! them are fill alone. A run that would leave fewer than [`MIN_CUT`] frames undecoded is
//! decoded whole.

use std::ops::Range;

use crate::route::{Hint, Route};

/// Frames decoded into each end of a cut run, over which the audio crossfades (23 ms for
/// VITS frames of 256 samples at 22.05 kHz). Measured on the joe voice over 20 sentences
/// against decoding everything (scripts/route_quality.py): margins of 4 frames cost 0.04 dB
/// of log-spectral distance and skip 3.6 % of frames, 2 frames 0.17 dB and 6.1 %, 1 frame
/// 0.25 dB and 7.2 % (SNR down to 23 dB).
pub const MARGIN: usize = 2;
/// The fewest undecoded frames for which a decoder stream is stopped and restarted.
pub const MIN_CUT: usize = 2;

/// A run of frames hinted not to be decoded, and the part of it that is not.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Cut {
    pub run: Range<usize>,
    pub fill: Range<usize>,
}

/// The cuts of one utterance, as far as its hints are known.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Plan {
    pub cuts: Vec<Cut>,
    /// Frames before this are settled; a run reaching the last known frame of an
    /// incomplete utterance may still grow.
    pub decided: usize,
}

impl Plan {
    /// The plan for `hints` (the utterance's known frames); `complete` when they are all of it.
    pub fn new(hints: &[Hint], complete: bool) -> Plan {
        let n = hints.len();
        let (mut cuts, mut i) = (Vec::new(), 0);
        while i < n {
            if hints[i].route == Route::Decode {
                i += 1;
                continue;
            }
            let j = i + hints[i..].iter().take_while(|h| h.route != Route::Decode).count();
            if j == n && !complete {
                return Plan { cuts, decided: i };
            }
            let from = if i == 0 { 0 } else { i + MARGIN };
            let to = if j == n { n } else { j.saturating_sub(MARGIN) };
            if to >= from + MIN_CUT {
                cuts.push(Cut { run: i..j, fill: from..to });
            }
            i = j;
        }
        Plan { cuts, decided: n }
    }

    /// The cut whose fill starts at `frame`.
    pub fn fill_at(&self, frame: usize) -> Option<&Cut> {
        self.cuts.iter().find(|c| c.fill.start == frame)
    }

    /// Where the next fill at or after `frame` starts.
    pub fn next_fill(&self, frame: usize) -> Option<usize> {
        self.cuts.iter().map(|c| c.fill.start).find(|&s| s >= frame)
    }

    /// How `frame` was made: its hint's route inside a fill, else decoded.
    pub fn route(&self, hints: &[Hint], frame: usize) -> Route {
        match self.cuts.iter().any(|c| c.fill.contains(&frame)) {
            true => hints[frame].route,
            false => Route::Decode,
        }
    }

    /// Crossfades decoded audio that starts at sample `start` of the utterance into the
    /// fill wherever it lies in a cut's margin.
    pub fn crossfade(&self, hints: &[Hint], hop: usize, start: usize, audio: &mut [f32]) {
        let span = start..start + audio.len();
        for cut in &self.cuts {
            // Fading out before the fill, fading in after it.
            for (margin, rising) in [(cut.run.start..cut.fill.start, false), (cut.fill.end..cut.run.end, true)] {
                let samples = margin.start * hop..margin.end * hop;
                let (lo, hi) = (samples.start.max(span.start), samples.end.min(span.end));
                for s in lo..hi {
                    let w = weight(s - samples.start, samples.len(), rising);
                    let fill = fill_sample(hints, hop, s);
                    let x = &mut audio[s - start];
                    *x = w * *x + (1.0 - w) * fill;
                }
            }
        }
    }

    /// The audio of a cut's fill frames.
    pub fn fill(&self, hints: &[Hint], hop: usize, frames: Range<usize>) -> Vec<f32> {
        (frames.start * hop..frames.end * hop).map(|s| fill_sample(hints, hop, s)).collect()
    }
}

/// The decoded audio's share at sample `at` of a crossfade `len` samples long: a raised
/// cosine, falling to the fill or rising from it.
fn weight(at: usize, len: usize, rising: bool) -> f32 {
    let fade = 0.5 + 0.5 * (std::f32::consts::PI * (at as f32 + 0.5) / len as f32).cos();
    if rising {
        1.0 - fade
    } else {
        fade
    }
}

/// What a decoder fed one frame at a time, without look-ahead, does with the next frame
/// (Qwen3-TTS: each frame of codes is decoded the moment it exists). A run of frames not
/// to be decoded cannot be seen whole in advance, so its first frame is decoded and faded
/// out into the fill, the frames after it are fill alone, and the first frame decoded
/// after the run restarts the decoder (its state missed the run), warming it up on the
/// run's last frame, and fades in from the fill. A run of L frames then costs 2 decodes
/// instead of L.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LiveStep {
    Decode {
        /// Make a new decoder stream and feed it the previous frame first (output dropped).
        restart: bool,
        /// Crossfade from the previous frame's fill.
        fade_in: bool,
    },
    /// Decode, crossfading into this frame's fill.
    FadeOut,
    /// The fill alone; the decoder does not see the frame.
    Fill,
}

/// The state behind [`LiveStep`]s: how the last frame was made.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Live {
    last: Option<LiveStep>,
}

impl Live {
    pub fn step(&mut self, route: Route) -> LiveStep {
        let step = match (route, self.last) {
            (Route::Decode, Some(LiveStep::Fill)) => LiveStep::Decode { restart: true, fade_in: true },
            (Route::Decode, Some(LiveStep::FadeOut)) => LiveStep::Decode { restart: false, fade_in: true },
            (Route::Decode, _) => LiveStep::Decode { restart: false, fade_in: false },
            (_, Some(LiveStep::Decode { .. })) => LiveStep::FadeOut,
            (_, _) => LiveStep::Fill,
        };
        self.last = Some(step);
        step
    }
}

/// Crossfades one frame of decoded audio with `fill` (silence when `None`).
pub fn crossfade_frame(audio: &mut [f32], fill: Option<&[f32]>, rising: bool) {
    let len = audio.len();
    for (i, x) in audio.iter_mut().enumerate() {
        let w = weight(i, len, rising);
        let f = fill.and_then(|f| f.get(i)).copied().unwrap_or(0.0);
        *x = w * *x + (1.0 - w) * f;
    }
}

/// Sample `s` of the fill: the reused frame's audio under a Reuse hint, else silence.
fn fill_sample(hints: &[Hint], hop: usize, s: usize) -> f32 {
    match &hints[s / hop].audio {
        Some(audio) if hints[s / hop].route == Route::Reuse && audio.len() == hop => audio[s % hop],
        _ => 0.0,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hints(routes: &str) -> Vec<Hint> {
        routes.chars().map(|c| if c == 's' { Hint::SKIP } else { Hint::DECODE }).collect()
    }

    #[test]
    fn runs_get_margins_and_short_runs_are_decoded() {
        assert_eq!((MARGIN, MIN_CUT), (2, 2));
        // A leading run (no margin), a short run, a long one, a trailing one (no margin).
        let h = hints("ssssssssdddsssssdddssssssssssssdddssssssss");
        let plan = Plan::new(&h, true);
        // (Written for margins of 2 and runs of at least 2.)
        let cuts =
            [Cut { run: 0..8, fill: 0..6 }, Cut { run: 19..31, fill: 21..29 }, Cut { run: 34..42, fill: 36..42 }];
        assert_eq!(plan.cuts, cuts);
        assert_eq!(plan.decided, h.len());
        assert_eq!(plan.route(&h, 3), Route::Skip);
        assert_eq!(plan.route(&h, 14), Route::Decode, "a run of 5 leaves 1 frame: decoded");
        assert_eq!(plan.route(&h, 20), Route::Decode, "margin frames are decoded");
        assert_eq!(plan.next_fill(7), Some(21));
    }

    #[test]
    fn a_run_at_the_known_end_waits_for_more_frames() {
        let plan = Plan::new(&hints("dddddssssssssssss"), false);
        assert_eq!((plan.cuts.len(), plan.decided), (0, 5));
        assert_eq!(Plan::new(&hints("dddddssssssssssss"), true).cuts, vec![Cut { run: 5..17, fill: 7..17 }]);
    }

    #[test]
    fn a_live_decoder_fades_out_fills_and_restarts() {
        let mut live = Live::default();
        let steps: Vec<LiveStep> = [Route::Skip, Route::Decode, Route::Decode, Route::Skip, Route::Decode]
            .into_iter()
            .chain([Route::Skip, Route::Skip, Route::Reuse, Route::Decode])
            .map(|r| live.step(r))
            .collect();
        let plain = LiveStep::Decode { restart: false, fade_in: false };
        let restart = LiveStep::Decode { restart: true, fade_in: true };
        assert_eq!(
            steps,
            [LiveStep::Fill, restart, plain, LiveStep::FadeOut, LiveStep::Decode { restart: false, fade_in: true }]
                .into_iter()
                .chain([LiveStep::FadeOut, LiveStep::Fill, LiveStep::Fill, restart])
                .collect::<Vec<_>>()
        );
        let mut audio = vec![1.0; 64];
        crossfade_frame(&mut audio, Some(&[0.5; 64]), false);
        assert!(audio[0] > 0.99 && (audio[63] - 0.5).abs() < 0.01);
    }

    #[test]
    fn margins_fade_to_the_fill_and_back() {
        let h = hints("ddsssssssssssssdd");
        let plan = Plan::new(&h, true);
        assert_eq!(plan.cuts, vec![Cut { run: 2..15, fill: 4..13 }]);
        let hop = 8;
        let mut audio = vec![1.0; 17 * hop];
        plan.crossfade(&h, hop, 0, &mut audio);
        assert_eq!(audio[2 * hop - 1], 1.0);
        assert!(audio[2 * hop] > 0.99 && audio[4 * hop - 1] < 0.01);
        assert!(audio[4 * hop..13 * hop].iter().all(|&x| x == 1.0), "the fill is not the decoder's to change");
        assert!(audio[13 * hop] < 0.01 && audio[15 * hop - 1] > 0.99);
        assert!(audio[2 * hop..4 * hop].windows(2).all(|w| w[1] <= w[0]));
        // The same, handed over in pieces.
        let mut pieces = vec![1.0; 17 * hop];
        for (i, piece) in pieces.chunks_mut(5).enumerate() {
            plan.crossfade(&h, hop, i * 5, piece);
        }
        assert_eq!(pieces, audio);
    }
}
