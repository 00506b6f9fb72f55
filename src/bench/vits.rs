//! `spiral bench vits`: a Piper voice's speed on given sentences, in one warm process, the way
//! `scripts/bench_vits.py` measures piper-tts (its reference): each sentence spoken once
//! untimed, then `repeats` times timed, medians reported.
//!
//! The per-process numbers of `spiral speak --latency-report` (a fresh process per sentence)
//! include what a cold process pays; these do not, so set against piper's in-process numbers
//! they compare the two runtimes under the same method.

use std::sync::Arc;
use std::time::{Duration, Instant};

use spiral_engine::kernels::Cpu;
use spiral_engine::models::vits::{PiperVoice, SpeechSource};
use spiral_engine::route::Router;
use spiral_engine::Source;

use super::median;

/// One sentence's medians.
#[derive(Clone, Debug)]
pub struct VitsBench {
    pub index: usize,
    pub audio_seconds: f64,
    /// From the text handed to a new [`SpeechSource`] to its first frame of audio.
    pub ttfa_ms: f64,
    /// From the text handed over to its last frame.
    pub synth_ms: f64,
    pub rtf: f64,
    pub repeats: usize,
}

impl VitsBench {
    pub fn line(&self) -> String {
        format!(
            "vits index={} audio_s={:.4} synth_ms={:.2} rtf={:.4} ttfa_ms={:.2} repeats={}",
            self.index, self.audio_seconds, self.synth_ms, self.rtf, self.ttfa_ms, self.repeats
        )
    }
}

/// (first audio, total, samples) of one run of `text` to its end.
fn speak(
    voice: &Arc<PiperVoice>,
    cpu: Cpu,
    text: &str,
    router: impl Router + 'static,
) -> Result<(Duration, Duration, usize), String> {
    let start = Instant::now();
    let mut source = SpeechSource::new(voice.clone(), text).with_cpu(cpu).with_router(router);
    let (mut first, mut samples) = (None, 0);
    while let Some(frame) = source.next_frame().map_err(|e| format!("{text:?}: {e}"))? {
        if frame.samples.is_empty() {
            continue;
        }
        first.get_or_insert_with(|| start.elapsed());
        samples += frame.samples.len();
    }
    let first = first.ok_or_else(|| format!("{text:?}: the voice produced no audio"))?;
    Ok((first, start.elapsed(), samples))
}

/// Speaks each of `texts` once untimed and then `repeats` times (at least once) timed, each
/// run with a fresh router from `router`, on the voice's own scales and seed 0 (what
/// `spiral speak` does); `report` gets each sentence's medians as they are done.
pub fn run_vits<R: Router + 'static>(
    voice: &Arc<PiperVoice>,
    cpu: Cpu,
    texts: &[String],
    repeats: usize,
    router: impl Fn() -> R,
    mut report: impl FnMut(&VitsBench),
) -> Result<Vec<VitsBench>, String> {
    let rate = f64::from(voice.sample_rate().0);
    let mut results = Vec::new();
    for (index, text) in texts.iter().enumerate() {
        speak(voice, cpu, text, router())?;
        let mut runs = Vec::new();
        for _ in 0..repeats.max(1) {
            runs.push(speak(voice, cpu, text, router())?);
        }
        let audio_seconds = runs[0].2 as f64 / rate;
        let synth = median(&mut runs.iter().map(|r| r.1.as_secs_f64()).collect::<Vec<_>>());
        let result = VitsBench {
            index,
            audio_seconds,
            ttfa_ms: median(&mut runs.iter().map(|r| r.0.as_secs_f64() * 1e3).collect::<Vec<_>>()),
            synth_ms: synth * 1e3,
            rtf: synth / audio_seconds,
            repeats: runs.len(),
        };
        report(&result);
        results.push(result);
    }
    Ok(results)
}
