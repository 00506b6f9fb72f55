//! The frame-latency report: what `--latency-report` writes and the summary table shows.

use std::fmt::Write as _;
use std::time::{Duration, Instant};

use serde::Serialize;
use spiral_engine::route::RouteCounts;

use crate::telemetry::{CallbackRecord, FrameRecord};

/// Everything measured about one playback. Times are relative to `start` (the moment the
/// text or file was available); `None` (JSON `null`) where a figure does not apply, such as
/// callback timings for a file-only render.
#[derive(Clone, Debug, Serialize, PartialEq)]
pub struct LatencyReport {
    /// From the input's arrival (start, or the arrival stamped on the first frame by a
    /// source fed over time) to the first sample handed to the sink.
    pub time_to_first_audio_ms: Option<f64>,
    /// Frames the source produced.
    pub frames: usize,
    /// Frames flushed or stopped before they reached the sink.
    pub frames_dropped: usize,
    pub callbacks: usize,
    pub callback_us_p50: Option<f64>,
    pub callback_us_p99: Option<f64>,
    pub callback_us_max: Option<f64>,
    /// Mean time between callbacks.
    pub callback_period_ms_mean: Option<f64>,
    /// Deviation of each callback interval from the period its previous buffer implies.
    pub callback_jitter_us_p99: Option<f64>,
    pub callback_jitter_us_max: Option<f64>,
    /// Per frame: first sample enqueued to first sample handed to the device.
    pub queue_latency_ms_p50: Option<f64>,
    pub queue_latency_ms_p99: Option<f64>,
    pub queue_latency_ms_max: Option<f64>,
    /// The host's callback-to-speaker delay (median), where it reports one.
    pub device_delay_ms_p50: Option<f64>,
    /// Production time divided by the duration of the audio produced.
    pub rtf: f64,
    pub audio_seconds: f64,
    pub production_seconds: f64,
    /// What the output was and what happened to it (keys at the top level in JSON).
    #[serde(flatten)]
    pub run: Run,
    /// Each callback counted in `underruns`, in order: when and where the stream ran dry.
    pub underruns_at: Vec<Underrun>,
    /// Each input a source fed over time was given (lines read one by one), in order;
    /// empty for a source given everything at start.
    pub inputs: Vec<InputLatency>,
    pub per_frame: Vec<FrameLatency>,
}

/// One input's wait for its audio: from its arrival to its first sample handed to the sink.
#[derive(Clone, Debug, Serialize, PartialEq)]
pub struct InputLatency {
    /// The first frame of its audio.
    pub frame: u64,
    /// When it arrived, from start.
    pub arrived_ms: f64,
    /// From its arrival to its first sample handed to the sink; `None` if none was.
    pub first_audio_ms: Option<f64>,
}

/// A callback that found the ring short of the audio released to play while the source was
/// still producing (the silence of a source's pause for input, or of a start still being
/// gathered, is not one).
#[derive(Clone, Debug, Serialize, PartialEq)]
pub struct Underrun {
    /// When the callback ran, from start.
    pub at_ms: f64,
    /// Output handed over before the gap (the stream's position), in ms of audio.
    pub stream_ms: f64,
    /// Silence the callback handed over instead of audio.
    pub missing_ms: f64,
    /// The frame the first missing sample belongs to; `None` past the last frame. Its first
    /// sample may already be queued: a resampler holds back a few ms of a frame's end until
    /// the next frame pushes it through.
    pub awaiting_frame: Option<u64>,
}

/// Facts about a playback that its time stamps do not carry.
#[derive(Clone, Debug, Default, Serialize, PartialEq)]
pub struct Run {
    /// Callbacks that found the ring short while the source was still producing.
    pub underruns: u64,
    /// Underruns the device reported on its side.
    pub device_xruns: u64,
    /// Output rate (device or file).
    pub sample_rate: u32,
    pub channels: u16,
    pub source_sample_rate: u32,
    /// `cpal`, `null`, `wav` or `pull`; `cpal+wav` when a file records the device stream.
    pub sink: String,
    pub device: Option<String>,
    /// Stream errors the device reported, in order.
    pub device_errors: Vec<String>,
    /// The device failed and the rest of the stream played on the null sink.
    pub fell_back_to_null: bool,
    /// Times the device was reopened after a stream error.
    pub device_reconnects: u32,
    /// Why the source or file output stopped early, if it did.
    pub error: Option<String>,
    /// Callback records lost to a full telemetry ring (figures above then undercount).
    pub telemetry_dropped: u64,
    /// A model source's frames by route: `frames_skipped`, `frames_reused`,
    /// `frames_decoded`, `frames_warmed`, `decode_ms`, `decode_ms_saved` (keys at the top
    /// level in JSON).
    #[serde(flatten)]
    pub routes: Option<RouteCounts>,
}

/// One frame's time stamps, in milliseconds from start.
#[derive(Clone, Debug, Serialize, PartialEq)]
pub struct FrameLatency {
    pub index: u64,
    pub requested_ms: Option<f64>,
    pub produced_ms: Option<f64>,
    pub enqueued_ms: Option<f64>,
    pub handed_ms: Option<f64>,
    pub playback_ms: Option<f64>,
    pub queue_ms: Option<f64>,
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

/// The `p`-th percentile (0..=100) by nearest rank; `None` for no data.
pub fn percentile(sorted: &[f64], p: f64) -> Option<f64> {
    if sorted.is_empty() {
        return None;
    }
    let rank = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
    Some(sorted[rank.clamp(1, sorted.len()) - 1])
}

fn sorted(mut v: Vec<f64>) -> Vec<f64> {
    v.sort_by(f64::total_cmp);
    v
}

impl LatencyReport {
    /// Builds the report from the frames (with `handed` already resolved) and callbacks.
    /// Times count from `start`; the source made `source_frames` sample frames in
    /// `production`.
    pub fn build(
        frames: &[FrameRecord],
        callbacks: &[CallbackRecord],
        start: Instant,
        source_frames: u64,
        production: Duration,
        run: Run,
    ) -> Self {
        let since = |t: Option<Instant>| t.map(|t| ms(t.saturating_duration_since(start)));
        let per_frame: Vec<FrameLatency> = frames
            .iter()
            .map(|f| FrameLatency {
                index: f.index.0,
                requested_ms: since(f.stamps.requested),
                produced_ms: since(f.stamps.produced),
                enqueued_ms: since(f.stamps.enqueued),
                handed_ms: since(f.stamps.handed),
                playback_ms: since(f.stamps.playback),
                queue_ms: f.stamps.enqueued.zip(f.stamps.handed).map(|(e, h)| ms(h.saturating_duration_since(e))),
            })
            .collect();
        let queue = sorted(per_frame.iter().filter_map(|f| f.queue_ms).collect());
        let durations = sorted(callbacks.iter().map(|c| c.duration.as_secs_f64() * 1e6).collect());
        let rate = f64::from(run.sample_rate.max(1));
        let intervals: Vec<(f64, f64)> = callbacks
            .windows(2)
            .map(|w| {
                let interval = w[1].started.saturating_duration_since(w[0].started).as_secs_f64();
                (interval, (interval - f64::from(w[0].requested) / rate).abs() * 1e6)
            })
            .collect();
        let jitter = sorted(intervals.iter().map(|i| i.1).collect());
        let delays = sorted(callbacks.iter().filter_map(|c| c.device_delay).map(ms).collect());
        let underruns_at = callbacks
            .iter()
            .filter(|c| c.underrun)
            .map(|c| {
                let position = c.position + u64::from(c.flushed + c.played);
                Underrun {
                    at_ms: ms(c.started.saturating_duration_since(start)),
                    stream_ms: position as f64 / rate * 1e3,
                    missing_ms: f64::from(c.requested.saturating_sub(c.played)) / rate * 1e3,
                    awaiting_frame: frames
                        .get(frames.partition_point(|f| f.output_start + f.output_len <= position))
                        .map(|f| f.index.0),
                }
            })
            .collect();
        let inputs: Vec<InputLatency> = frames
            .iter()
            .filter_map(|f| {
                let arrived = f.stamps.input?;
                Some(InputLatency {
                    frame: f.index.0,
                    arrived_ms: ms(arrived.saturating_duration_since(start)),
                    first_audio_ms: f.stamps.handed.map(|h| ms(h.saturating_duration_since(arrived))),
                })
            })
            .collect();
        let origin = frames.first().and_then(|f| f.stamps.input).unwrap_or(start);
        let audio_seconds = source_frames as f64 / f64::from(run.source_sample_rate.max(1));
        let production_seconds = production.as_secs_f64();
        Self {
            time_to_first_audio_ms: frames
                .iter()
                .find_map(|f| f.stamps.handed)
                .map(|h| ms(h.saturating_duration_since(origin))),
            frames: frames.len(),
            frames_dropped: per_frame.iter().filter(|f| f.handed_ms.is_none()).count(),
            callbacks: callbacks.len(),
            callback_us_p50: percentile(&durations, 50.0),
            callback_us_p99: percentile(&durations, 99.0),
            callback_us_max: durations.last().copied(),
            callback_period_ms_mean: (!intervals.is_empty())
                .then(|| intervals.iter().map(|i| i.0).sum::<f64>() / intervals.len() as f64 * 1e3),
            callback_jitter_us_p99: percentile(&jitter, 99.0),
            callback_jitter_us_max: jitter.last().copied(),
            queue_latency_ms_p50: percentile(&queue, 50.0),
            queue_latency_ms_p99: percentile(&queue, 99.0),
            queue_latency_ms_max: queue.last().copied(),
            device_delay_ms_p50: percentile(&delays, 50.0),
            rtf: if audio_seconds > 0.0 { production_seconds / audio_seconds } else { 0.0 },
            audio_seconds,
            production_seconds,
            run,
            underruns_at,
            inputs,
            per_frame,
        }
    }

    /// The report as pretty JSON.
    pub fn to_json(&self) -> String {
        serde_json::to_string_pretty(self).unwrap_or_else(|e| format!("{{\"error\": \"{e}\"}}"))
    }

    /// A fixed-width table of the headline figures.
    pub fn summary(&self) -> String {
        let f = |v: Option<f64>, unit: &str| v.map_or_else(|| "-".to_string(), |v| format!("{v:.3} {unit}"));
        let mut s = String::new();
        let mut row = |k: &str, v: String| {
            let _ = writeln!(s, "  {k:<28} {v}");
        };
        row(
            "sink",
            format!("{}{}", self.run.sink, self.run.device.as_ref().map(|d| format!(" ({d})")).unwrap_or_default()),
        );
        row(
            "output",
            format!(
                "{} Hz, {} ch (source {} Hz)",
                self.run.sample_rate, self.run.channels, self.run.source_sample_rate
            ),
        );
        row("time to first audio", f(self.time_to_first_audio_ms, "ms"));
        if self.inputs.len() > 1 {
            let waits = sorted(self.inputs.iter().filter_map(|i| i.first_audio_ms).collect());
            row(
                "first audio per input",
                format!(
                    "p50 {} / max {} ({} inputs)",
                    f(percentile(&waits, 50.0), "ms"),
                    f(waits.last().copied(), "ms"),
                    self.inputs.len()
                ),
            );
        }
        row("frames (dropped)", format!("{} ({})", self.frames, self.frames_dropped));
        row("underruns (device xruns)", format!("{} ({})", self.run.underruns, self.run.device_xruns));
        if let Some(u) = self.underruns_at.first() {
            let frame = u.awaiting_frame.map_or_else(String::new, |f| format!(", awaiting frame #{f}"));
            row("first underrun", format!("at {:.1} ms (stream at {:.1} ms{frame})", u.at_ms, u.stream_ms));
        }
        row(
            "queue latency p50 / p99",
            format!("{} / {}", f(self.queue_latency_ms_p50, "ms"), f(self.queue_latency_ms_p99, "ms")),
        );
        row(
            "callback p50 / p99 / max",
            format!(
                "{} / {} / {}",
                f(self.callback_us_p50, "us"),
                f(self.callback_us_p99, "us"),
                f(self.callback_us_max, "us")
            ),
        );
        row(
            "callback period / jitter p99",
            format!("{} / {}", f(self.callback_period_ms_mean, "ms"), f(self.callback_jitter_us_p99, "us")),
        );
        row("device delay p50", f(self.device_delay_ms_p50, "ms"));
        row(
            "real-time factor",
            format!("{:.4} ({:.3} s for {:.3} s of audio)", self.rtf, self.production_seconds, self.audio_seconds),
        );
        if let Some(r) = &self.run.routes {
            row(
                "skipped / reused / decoded",
                format!(
                    "{} / {} / {} ({:.1} ms of decoding saved)",
                    r.frames_skipped, r.frames_reused, r.frames_decoded, r.decode_ms_saved
                ),
            );
        }
        if self.run.device_reconnects > 0 {
            row("device reconnects", self.run.device_reconnects.to_string());
        }
        if self.run.fell_back_to_null {
            row("fell back to null sink", self.run.device_errors.join("; "));
        }
        if let Some(e) = &self.run.error {
            row("error", e.clone());
        }
        s
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nearest_rank_percentiles() {
        let v: Vec<f64> = (1..=100).map(f64::from).collect();
        assert_eq!(percentile(&v, 50.0), Some(50.0));
        assert_eq!(percentile(&v, 99.0), Some(99.0));
        assert_eq!(percentile(&v, 100.0), Some(100.0));
        assert_eq!(percentile(&[7.0], 99.0), Some(7.0));
        assert_eq!(percentile(&[], 50.0), None);
    }
}
