//! When queued audio may start playing: an output starts once enough of it is queued, and a
//! source that paused for input (a line reader between lines) starts again the same way.
//!
//! The producer holds the ring at a position ([`Status::release`]): the renderer plays up to
//! it, and a short read there is a pause, not an underrun. Audio pushed past it is gathered
//! until the [`StartRule`] is met, the source pauses or ends, or the ring is full.

use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use spiral_engine::SampleRate;

use crate::control::Status;

/// How much audio a start needs.
#[derive(Clone, Copy, Debug)]
pub(crate) struct StartRule {
    /// Sample frames gathered before a start.
    pub frames: u64,
    /// Also wait until the audio gathered covers the time since its input arrived, so a
    /// source that has not kept pace gets a longer lead (see `PlayOptions::paced_start`).
    pub paced: bool,
    /// Rate of those sample frames.
    pub rate: SampleRate,
}

impl StartRule {
    /// Whether `gathered` sample frames, made over `since` from the input's arrival, may start.
    pub fn ready(&self, gathered: u64, since: Duration) -> bool {
        gathered >= self.frames && (!self.paced || self.rate.duration_of(gathered) >= since)
    }
}

/// The producer's side of the hold on [`Status::release`].
pub(crate) struct Gate {
    rule: StartRule,
    held: Option<Held>,
}

/// Audio gathered for a start.
struct Held {
    /// The output position the hold began at.
    from: u64,
    /// When the input behind the gathered audio arrived; `None` until its first frame.
    since: Option<Instant>,
    /// A frame arrived since the hold began.
    fed: bool,
}

impl Gate {
    /// A gate that holds the ring from its start, for input that arrived at `since`; the
    /// caller makes it before the renderer can read `status`.
    pub fn held(rule: StartRule, status: &Status, since: Instant) -> Gate {
        status.release.store(0, Ordering::Release);
        Gate { rule, held: Some(Held { from: 0, since: Some(since), fed: false }) }
    }

    /// A gate that never holds.
    pub fn open(rule: StartRule) -> Gate {
        Gate { rule, held: None }
    }

    /// Plays everything before output position `at` and holds what comes after, for the
    /// input the source awaits.
    pub fn hold(&mut self, status: &Status, at: u64) {
        status.release.store(at, Ordering::Release);
        self.held = Some(Held { from: at, since: None, fed: false });
    }

    /// A frame is about to be queued: the first after a hold dates the start from its
    /// input's arrival (`input`), or else from when it was asked for (`requested`).
    pub fn frame(&mut self, input: Option<Instant>, requested: Instant) {
        if let Some(h) = self.held.as_mut().filter(|h| !h.fed) {
            h.since = input.or(h.since).or(Some(requested));
            h.fed = true;
        }
    }

    /// The ring has `queued` sample frames in all: starts the held audio if the rule says so
    /// or if the renderer already plays everything (a full ring released it).
    pub fn queued(&mut self, status: &Status, queued: u64) {
        let Some(h) = &self.held else { return };
        let since = h.since.map_or(Duration::ZERO, |t| t.elapsed());
        if status.release.load(Ordering::Acquire) == u64::MAX || self.rule.ready(queued.saturating_sub(h.from), since) {
            self.release(status);
        }
    }

    /// Plays everything queued and everything after it.
    pub fn release(&mut self, status: &Status) {
        status.release.store(u64::MAX, Ordering::Release);
        self.held = None;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const RULE: StartRule = StartRule { frames: 600, paced: true, rate: SampleRate(10_000) };

    #[test]
    fn a_paced_rule_wants_the_minimum_and_the_time_taken() {
        assert!(!RULE.ready(599, Duration::ZERO));
        assert!(RULE.ready(600, Duration::from_millis(60)));
        assert!(!RULE.ready(600, Duration::from_millis(61)));
        assert!(StartRule { paced: false, ..RULE }.ready(600, Duration::from_secs(1)));
    }

    #[test]
    fn a_hold_plays_what_came_before_and_starts_again_on_the_rule() {
        let status = Status::default();
        let mut gate = Gate::held(RULE, &status, Instant::now());
        assert_eq!(status.release.load(Ordering::Acquire), 0);
        gate.frame(None, Instant::now());
        gate.queued(&status, 700);
        assert_eq!(status.release.load(Ordering::Acquire), u64::MAX);
        gate.hold(&status, 700);
        assert_eq!(status.release.load(Ordering::Acquire), 700);
        // The next input arrived 200 ms ago: 100 ms gathered since is not enough when paced.
        gate.frame(Some(Instant::now() - Duration::from_millis(200)), Instant::now());
        gate.queued(&status, 1_700);
        assert_eq!(status.release.load(Ordering::Acquire), 700);
        gate.queued(&status, 2_800);
        assert_eq!(status.release.load(Ordering::Acquire), u64::MAX);
    }
}
