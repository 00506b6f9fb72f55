//! The streaming scheduler: a [`Router`] that decides, before a model's decoder runs on a
//! frame, whether to skip it, reuse an earlier frame's audio or decode it, and files every
//! frame that plays into the [`FrameGraph`].
//!
//! What it knows before decoding: the text's pauses (the frames of punctuation and
//! sentence-boundary phonemes, from the durations), and the frame's decoder input, whose
//! entry in an online [`Palette`] says how earlier frames like it sounded once decoded.
//! - **Skip**: a pause frame whose palette entry has not been heard loud (at least two
//!   decoded frames of it, most above the silence level), or any frame whose entry has been
//!   heard silent (at least [`SILENT_AFTER`] decoded frames, 90 % of them silence).
//! - **Reuse**: the cascade, queried with the entry's typical role and bands, finds a
//!   decoded frame whose decoder input is within [`SchedulerConfig::reuse_max`] of this one.
//! - **Decode** otherwise.

use std::collections::VecDeque;
use std::sync::Arc;

use spiral_engine::route::{Hint, Pending, Route, Router};
use spiral_engine::SampleRate;

use crate::address::{Role, SpiralAddress};
use crate::analysis::{Analyzer, Thresholds};
use crate::cascade::{CascadeConfig, FrameGraph};
use crate::node::{AudioNode, Phase};
use crate::palette::Palette;
use crate::BANDS;

/// Decoded frames of a palette entry, 90 % of them silent, after which its frames are
/// skipped wherever they fall.
pub const SILENT_AFTER: u32 = 3;

#[derive(Clone, Copy, Debug, PartialEq)]
pub struct SchedulerConfig {
    /// Route frames at all (`--no-skip` turns this off: every frame is decoded, and still
    /// filed in the graph).
    pub enabled: bool,
    /// LEAF distance (squared L2 between decoder inputs over the frame's own energy)
    /// within which a frame reuses an earlier frame's audio; 0 turns reuse off.
    pub reuse_max: f32,
    /// A decoder input this far from every palette entry (squared, relative) starts one.
    pub novelty: f32,
    pub cascade: CascadeConfig,
    pub thresholds: Thresholds,
    /// The stream number in the frames' addresses.
    pub stream: u16,
}

impl Default for SchedulerConfig {
    /// Skipping on, reuse off: on the joe voice, reusing even the nearest decoded frame
    /// (relative distance 0.02) costs more in spectral distance than it saves (see
    /// docs/GRAPH.md).
    fn default() -> Self {
        SchedulerConfig {
            enabled: true,
            reuse_max: 0.0,
            novelty: 0.25,
            cascade: CascadeConfig::default(),
            thresholds: Thresholds::default(),
            stream: 0,
        }
    }
}

/// How the decoded frames of one palette entry sounded.
#[derive(Clone, Copy, Debug, Default)]
struct Entry {
    roles: [u32; 4],
    /// Running mean of their band energies.
    bands: [f32; BANDS],
    frames: u32,
}

impl Entry {
    fn loud(&self) -> bool {
        self.frames >= 2 && 2 * self.roles[Role::Silence.slot()] < self.frames
    }

    /// Decoded often enough, and nearly always to silence.
    fn silent(&self) -> bool {
        self.frames >= SILENT_AFTER && self.roles[Role::Silence.slot()] * 10 >= self.frames * 9
    }

    fn role(&self) -> Role {
        let slot = (0..4).max_by_key(|&i| self.roles[i]).unwrap_or(0);
        Role::ALL[slot]
    }
}

/// See the [module documentation](self).
pub struct Scheduler {
    config: SchedulerConfig,
    graph: FrameGraph,
    palette: Option<Palette>,
    entries: Vec<Entry>,
    analyzer: Option<Analyzer>,
    /// Decoded frames' audio at their node's index, for reuse.
    audio: Vec<Option<Arc<[f32]>>>,
    /// The nearest palette entry of each frame hinted and not yet played, by position, so
    /// that filing a frame does not search the palette again.
    hinted: VecDeque<(u64, Option<(u8, f32)>)>,
}

impl Scheduler {
    pub fn new(config: SchedulerConfig) -> Scheduler {
        Scheduler {
            graph: FrameGraph::new(config.cascade),
            config,
            palette: None,
            entries: Vec::new(),
            analyzer: None,
            audio: Vec::new(),
            hinted: VecDeque::new(),
        }
    }

    pub fn graph(&self) -> &FrameGraph {
        &self.graph
    }

    /// The graph, to search it ([`FrameGraph::cascade_search`] counts its queries).
    pub fn graph_mut(&mut self) -> &mut FrameGraph {
        &mut self.graph
    }

    fn palette(&mut self, dims: usize) -> &mut Palette {
        let novelty = self.config.novelty;
        self.palette.get_or_insert_with(|| Palette::new(dims, novelty))
    }

    fn hint(&mut self, frame: &Pending<'_>) -> Hint {
        if !self.config.enabled || frame.features.is_empty() {
            return Hint::DECODE;
        }
        let nearest = self.palette(frame.features.len()).nearest(frame.features);
        self.hinted.push_back((frame.position, nearest));
        let p = nearest.map(|(p, _)| p);
        let entry = p.and_then(|p| self.entries.get(usize::from(p))).copied();
        let heard_silent = entry.is_some_and(|e| e.silent());
        if (frame.pause && !entry.is_some_and(|e| e.loud())) || heard_silent {
            return Hint::SKIP;
        }
        let (Some(p), Some(entry)) = (p, entry) else { return Hint::DECODE };
        if self.config.reuse_max <= 0.0 || entry.frames == 0 {
            return Hint::DECODE;
        }
        let address = SpiralAddress::new(self.config.stream, frame.position as u32, entry.role());
        let query = AudioNode::new(&entry.bands, 0, Phase::default(), address, p, Route::Reuse);
        let best = self.graph.cascade_search(&query, frame.features, 1).first().copied();
        match best.filter(|m| m.distance <= self.config.reuse_max) {
            Some(m) => match self.audio.get(m.node.index()).cloned().flatten() {
                Some(audio) => Hint { route: Route::Reuse, audio: Some(audio) },
                None => Hint::DECODE,
            },
            None => Hint::DECODE,
        }
    }
}

impl Router for Scheduler {
    fn assign_route_hints(&mut self, frames: &[Pending<'_>]) -> Vec<Hint> {
        frames.iter().map(|f| self.hint(f)).collect()
    }

    fn played(&mut self, frame: &Pending<'_>, route: Route, audio: &[f32], rate: SampleRate) {
        let thresholds = self.config.thresholds;
        let analyzer =
            self.analyzer.get_or_insert_with(|| Analyzer::new(rate, audio.len()).with_thresholds(thresholds));
        let a = analyzer.analyze(audio);
        while self.hinted.front().is_some_and(|h| h.0 < frame.position) {
            self.hinted.pop_front();
        }
        let hinted = self.hinted.front().filter(|h| h.0 == frame.position).map(|h| h.1);
        let p = match (frame.features.is_empty(), hinted) {
            (true, _) => 0,
            (false, Some(nearest)) => self.palette(frame.features.len()).learn_near(frame.features, nearest),
            (false, None) => self.palette(frame.features.len()).learn(frame.features),
        };
        let at = usize::from(p);
        if self.entries.len() <= at {
            self.entries.resize(at + 1, Entry::default());
        }
        if route == Route::Decode {
            let e = &mut self.entries[at];
            e.roles[a.role.slot()] += 1;
            e.frames += 1;
            let rate = 1.0 / e.frames.min(crate::palette::MEMORY) as f32;
            e.bands.iter_mut().zip(&a.bands).for_each(|(m, b)| *m += rate * (b - *m));
        }
        let address = SpiralAddress::new(self.config.stream, frame.position as u32, a.role);
        let node = AudioNode::new(&a.bands, a.shape_code(), a.peak, address, p, route);
        let features = if frame.features.len() == self.config.cascade.dims { frame.features } else { &[] };
        let index = self.graph.insert(node, features).index();
        if self.audio.len() <= index {
            self.audio.resize(index + 1, None);
        }
        self.audio[index] = (route == Route::Decode && self.config.reuse_max > 0.0).then(|| Arc::from(audio));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const RATE: SampleRate = SampleRate(22_050);
    const HOP: usize = 256;

    fn tone(position: u64) -> Vec<f32> {
        (0..HOP).map(|i| 0.3 * (0.05 * (position as usize * HOP + i) as f32).sin()).collect()
    }

    fn features(seed: f32) -> Vec<f32> {
        (0..8).map(|i| (seed * (i + 1) as f32).sin()).collect()
    }

    fn play(s: &mut Scheduler, position: u64, features: &[f32], pause: bool, audio: &[f32]) -> Hint {
        let pending = Pending { position, features, pause };
        let hint = s.assign_route_hints(&[pending]).remove(0);
        s.played(&pending, hint.route, audio, RATE);
        hint
    }

    fn config(reuse_max: f32) -> SchedulerConfig {
        SchedulerConfig {
            reuse_max,
            cascade: CascadeConfig { dims: 8, ..CascadeConfig::default() },
            ..Default::default()
        }
    }

    #[test]
    fn pauses_are_skipped_until_their_entry_is_heard_loud() {
        let mut s = Scheduler::new(config(0.0));
        let (quiet, loud) = (features(1.0), features(2.0));
        assert_eq!(play(&mut s, 0, &quiet, true, &[0.0; HOP]).route, Route::Skip);
        assert_eq!(play(&mut s, 1, &loud, false, &tone(1)).route, Route::Decode);
        assert_eq!(play(&mut s, 2, &loud, false, &tone(2)).route, Route::Decode);
        // A pause whose decoder input sounded loud twice is decoded after all.
        assert_eq!(play(&mut s, 3, &loud, true, &tone(3)).route, Route::Decode);
        assert_eq!(s.graph().len(), 4);
    }

    #[test]
    fn an_entry_heard_silent_is_skipped_anywhere() {
        let mut s = Scheduler::new(config(0.0));
        let silent = features(1.0);
        for p in 0..SILENT_AFTER as u64 {
            assert_eq!(play(&mut s, p, &silent, false, &[0.0; HOP]).route, Route::Decode);
        }
        assert_eq!(play(&mut s, 10, &silent, false, &[0.0; HOP]).route, Route::Skip);
    }

    #[test]
    fn near_duplicates_of_decoded_frames_are_reused() {
        let mut s = Scheduler::new(config(0.01));
        let voiced = features(2.0);
        let first = tone(11);
        assert_eq!(play(&mut s, 11, &voiced, false, &first).route, Route::Decode);
        let near: Vec<f32> = voiced.iter().map(|v| v * 1.01).collect();
        let hint = play(&mut s, 12, &near, false, &tone(12));
        assert_eq!(hint.route, Route::Reuse);
        assert_eq!(hint.audio.as_deref(), Some(&first[..]));
        let stats = s.graph().stats();
        assert!(stats.queries >= 1 && stats.leaf_out >= 1, "{stats:?}");
        // Far from anything decoded: decode.
        assert_eq!(play(&mut s, 13, &features(5.0), false, &tone(13)).route, Route::Decode);
    }

    #[test]
    fn switched_off_it_decodes_everything_and_still_files_it() {
        let mut s = Scheduler::new(SchedulerConfig { enabled: false, ..config(0.5) });
        for p in 0..20 {
            assert_eq!(play(&mut s, p, &features(1.0), true, &[0.0; HOP]).route, Route::Decode);
        }
        assert_eq!(s.graph().len(), 20);
    }
}
