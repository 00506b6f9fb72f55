//! Streams to the speakers. Until a voice is installed (a later release adds the default
//! VITS voice) it speaks the demo tone phrase through exactly the path speech will take.
//!
//! ```text
//! cargo run --example speak                 # default output device
//! cargo run --example speak -- --sink null  # headless
//! ```

use spiral::{demo_phrase, play, OutputFormat, PlayOptions, SampleRate, Sink};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let headless = std::env::args().any(|a| a == "null");
    let sink = if headless {
        Sink::Null {
            format: OutputFormat { sample_rate: SampleRate(48_000), channels: 2 },
            period: std::time::Duration::from_millis(10),
        }
    } else {
        Sink::Device { name: None, buffer_frames: None }
    };
    let source = demo_phrase(SampleRate(22_050), 330.0, 1.5)?;
    let playback = play(source, PlayOptions { sink, ..PlayOptions::default() })?;
    let report = playback.wait()?;
    println!(
        "spoke {:.2} s of audio; first audio after {:.1} ms",
        report.audio_seconds,
        report.time_to_first_audio_ms.unwrap_or(f64::NAN)
    );
    Ok(())
}
