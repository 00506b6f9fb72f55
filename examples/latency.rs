//! Measures frame latency: plays the demo phrase on the paced null sink (or a device with
//! `--device`) and prints the latency summary and the first frames' time stamps.
//!
//! ```text
//! cargo run --release --example latency
//! ```

use std::time::Duration;

use spiral::{demo_phrase, play, OutputFormat, PlayOptions, SampleRate, Sink};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let sink = if std::env::args().any(|a| a == "--device") {
        Sink::Device { name: None, buffer_frames: None }
    } else {
        Sink::Null {
            format: OutputFormat { sample_rate: SampleRate(48_000), channels: 2 },
            period: Duration::from_millis(10),
        }
    };
    let report =
        play(demo_phrase(SampleRate(24_000), 330.0, 2.0)?, PlayOptions { sink, ..PlayOptions::default() })?.wait()?;
    println!("{}", report.summary());
    println!("  frame  requested   produced   enqueued     handed   (ms since start)");
    for f in report.per_frame.iter().take(8) {
        let v = |x: Option<f64>| x.map_or("-".to_string(), |x| format!("{x:.3}"));
        println!(
            "  {:>5} {:>10} {:>10} {:>10} {:>10}",
            f.index,
            v(f.requested_ms),
            v(f.produced_ms),
            v(f.enqueued_ms),
            v(f.handed_ms)
        );
    }
    Ok(())
}
