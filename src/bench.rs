//! `spiral bench qwen3 --synthetic 0.6b`: Qwen3-TTS speed at the real shapes, on a
//! synthetic checkpoint made once in the cache, next to the bandwidth floor measured in
//! the same run. `spiral bench gemv` ([`run_gemv`]): each weight format's product against the
//! read bandwidth measured beside it. `spiral bench vits` ([`run_vits`]): a Piper voice on
//! given sentences in one warm process, measured as the reference runtime is.

mod gemv;
mod vits;
pub use gemv::{run_gemv, GemvBench};
pub use vits::{run_vits, VitsBench};

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use spiral_engine::codec::Codec;
use spiral_engine::kernels::Cpu;
use spiral_engine::models::nn::Precision;
use spiral_engine::models::qwen3::{synthetic, Options, Qwen3Source, Qwen3Tts, Request};
use spiral_engine::Source;

/// Audio per frame of the 12.5 Hz codec.
const FRAME_SECONDS: f64 = 0.08;
/// The sentence the benchmark speaks (its bytes are its tokens in the synthetic vocabulary).
pub const SENTENCE: &str = "The quick brown fox jumps over the lazy dog while the band plays on.";

/// One run's numbers.
#[derive(Clone, Debug)]
pub struct Qwen3Bench {
    pub frames: usize,
    /// Seconds of compute per second of audio.
    pub rtf: f64,
    /// From the request to the first 80 ms of audio (prompt, prefill, one frame's codes
    /// and their decoding).
    pub ttfa_ms: f64,
    /// Time per frame spent waiting for the talker and code predictor (includes the
    /// prefill, spread); they run on their own thread, ahead of the decoder, so this is
    /// the part the decoding did not hide.
    pub codes_ms_per_frame: f64,
    /// Time per frame from its codes to its audio: the speech decoder, sharing the cores
    /// with the generation of the next frame's codes.
    pub decode_ms_per_frame: f64,
    pub peak_rss_mb: f64,
    /// Weight bytes one frame reads (talker, code predictor, decoder transformer).
    pub bytes_per_frame: usize,
    /// Read bandwidth measured in this run, GB/s.
    pub bandwidth_gbs: f64,
    /// The real-time factor if every frame only had to read its weights once at that bandwidth.
    pub floor_rtf: f64,
}

impl Qwen3Bench {
    /// The one-line summary the contract names.
    pub fn line(&self) -> String {
        format!(
            "rtf={:.3} ttfa_ms={:.1} frames_per_s={:.2} peak_rss_mb={:.0} floor_rtf={:.3} frames={} \
             codes_ms_per_frame={:.1} decode_ms_per_frame={:.1} bytes_per_frame={} bandwidth_gbs={:.1}",
            self.rtf,
            self.ttfa_ms,
            1.0 / (self.rtf * FRAME_SECONDS),
            self.peak_rss_mb,
            self.floor_rtf,
            self.frames,
            self.codes_ms_per_frame,
            self.decode_ms_per_frame,
            self.bytes_per_frame,
            self.bandwidth_gbs
        )
    }
}

/// The synthetic 0.6B checkpoint in `cache`, written first if it is not complete.
pub fn synthetic_0_6b(cache: &Path) -> Result<PathBuf, String> {
    let dir = cache.join("synthetic").join("qwen3-tts-12hz-0.6b-customvoice");
    let done = dir.join(".complete");
    if !done.is_file() {
        eprintln!("writing the synthetic 0.6B checkpoint to {} (once; about 2 GB)", dir.display());
        synthetic::write(&dir, synthetic::CONFIG_0_6B, "{}", |i, n, name| {
            if i % 20 == 0 || i == n {
                eprintln!("  [{i:>3}/{n}] {name}");
            }
        })
        .map_err(|e| format!("{}: {e}", dir.display()))?;
        std::fs::write(&done, b"").map_err(|e| format!("{}: {e}", done.display()))?;
    }
    Ok(dir)
}

/// Speaks [`SENTENCE`] for `frames` frames (end-of-speech ignored) with the checkpoint's
/// sampling settings, through the same source `spiral speak --model` plays.
/// `codec` holds the projections (as stored without one); `precision` is the speech
/// decoder's convolutions' arithmetic; `stream_text` feeds the text
/// one token per frame instead of in the prompt.
pub fn run_qwen3(
    dir: &Path,
    cpu: Cpu,
    frames: usize,
    codec: Option<Codec>,
    precision: Precision,
    stream_text: bool,
) -> Result<Qwen3Bench, String> {
    let model = Arc::new(Qwen3Tts::load_with(dir, codec).map_err(|e| e.to_string())?.with_precision(precision));
    let bandwidth = read_bandwidth();
    let request = Request { text: SENTENCE.into(), speaker: Some("ryan".into()), language: "english".into() };
    let mut options = Options::from_config(model.generation_config());
    options.max_new_tokens = frames + 1;
    options.ignore_eos = true;
    options.stream_text = stream_text;
    // When each frame's codes were ready (the decoder then runs until the frame is handed).
    let coded = Arc::new(Mutex::new(Vec::new()));
    let marks = coded.clone();
    let mut source = Qwen3Source::new(model.clone(), request, options)
        .with_cpu(cpu)
        .with_code_observer(move |_| marks.lock().expect("never poisoned").push(Instant::now()));
    let start = Instant::now();
    let mut handed = Vec::new();
    while source.next_frame().map_err(|e| e.to_string())?.is_some() {
        handed.push(Instant::now());
    }
    let seconds = start.elapsed().as_secs_f64();
    let coded = coded.lock().map_err(|_| "lost the timings")?;
    let produced = handed.len();
    let decode: f64 = handed.iter().zip(coded.iter()).map(|(h, c)| h.duration_since(*c).as_secs_f64()).sum();
    let bytes = model.bytes_per_frame() + model.speech().transformer_bytes();
    Ok(Qwen3Bench {
        frames: produced,
        rtf: seconds / (produced as f64 * FRAME_SECONDS),
        ttfa_ms: handed.first().map_or(seconds, |t| t.duration_since(start).as_secs_f64()) * 1e3,
        codes_ms_per_frame: (seconds - decode) / produced.max(1) as f64 * 1e3,
        decode_ms_per_frame: decode / produced.max(1) as f64 * 1e3,
        peak_rss_mb: peak_rss_bytes() as f64 / (1 << 20) as f64,
        bytes_per_frame: bytes,
        bandwidth_gbs: bandwidth / 1e9,
        floor_rtf: bytes as f64 / bandwidth / FRAME_SECONDS,
    })
}

/// Bytes per second one pass of [`read_all`] over a 256 MiB buffer (eight times the
/// last-level cache) reads: the median of seven passes (a shared machine's outliers go both
/// ways).
fn read_bandwidth() -> f64 {
    let buffer = vec![1.0f32; 64 << 20];
    let mut passes: Vec<f64> = (0..7)
        .map(|_| {
            let t = Instant::now();
            std::hint::black_box(read_all(&buffer));
            (buffer.len() * 4) as f64 / t.elapsed().as_secs_f64()
        })
        .collect();
    median(&mut passes)
}

/// The middle value of `v` (the upper one of an even count), sorting it.
fn median(v: &mut [f64]) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

/// Streams each thread reads at once in [`read_all`].
const STREAMS: usize = 4;

/// Reads every value of `buffer` once: the memory-bandwidth roof the benchmarks measure
/// against. The pool's threads each take a few contiguous chunks, as GEMV shares its rows,
/// and read each chunk as four interleaved streams, which keeps more lines in flight than
/// one loop does: over 128 MiB on this machine, five alternating passes read at 32-36 GB/s,
/// a dot product over the same values at 20-35. Returns a value that depends on every bit
/// read, so that the reads cannot be optimized away.
pub fn read_all(buffer: &[f32]) -> u32 {
    use rayon::prelude::*;
    let chunk = buffer.len().div_ceil(rayon::current_num_threads() * 4).max(1);
    buffer.par_chunks(chunk).map(read_streams).reduce(|| 0, |a, b| a ^ b)
}

fn read_streams(chunk: &[f32]) -> u32 {
    let len = chunk.len() / STREAMS;
    let streams: [&[f32]; STREAMS] = std::array::from_fn(|s| &chunk[s * len..][..len]);
    let mut acc = [0u32; 16];
    for start in (0..len).step_by(acc.len()) {
        let end = (start + acc.len()).min(len);
        for stream in &streams {
            for (a, v) in acc.iter_mut().zip(&stream[start..end]) {
                *a ^= v.to_bits();
            }
        }
    }
    let tail = chunk[STREAMS * len..].iter().fold(0, |x, v| x ^ v.to_bits());
    acc.iter().fold(tail, |x, a| x ^ a)
}

/// The process's peak resident memory (`VmHWM`), 0 where /proc is absent.
fn peak_rss_bytes() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        .map_or(0, |kb| kb * 1024)
}
