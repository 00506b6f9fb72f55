//! # spiral
//!
//! A real-time audio graph engine whose main source is neural text-to-speech. This facade
//! re-exports what an app needs: sources ([`engine`]), the output spine ([`nodes`]) and the
//! frame graph ([`graph`]).
//!
//! Push mode, spiral owns the device:
//!
//! ```no_run
//! use spiral::{play, PlayOptions, SampleRate, ToneSource};
//!
//! let tone = ToneSource::sine(SampleRate(24_000), 440.0, 1.0)?;
//! let playback = play(tone, PlayOptions::default())?;
//! let report = playback.wait()?;
//! println!("first audio after {:?} ms", report.time_to_first_audio_ms);
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
//!
//! Pull mode, the app owns its audio callback and asks spiral to fill buffers:
//!
//! ```
//! use spiral::{pull, OutputFormat, PlayOptions, SampleRate, ToneSource};
//!
//! let tone = ToneSource::sine(SampleRate(22_050), 440.0, 0.1)?;
//! let format = OutputFormat { sample_rate: SampleRate(48_000), channels: 2 };
//! let (mut reader, playback) = pull(tone, format, PlayOptions::default())?;
//! let mut buffer = vec![0.0f32; 480 * 2];
//! while !reader.is_finished() {
//!     reader.fill(&mut buffer); // from the app's real-time callback
//!     std::thread::sleep(std::time::Duration::from_millis(1));
//! }
//! drop(reader);
//! assert!(playback.wait()?.frames > 0);
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

pub mod bench;
pub mod plot;

pub use spiral_engine as engine;
pub use spiral_graph as graph;
pub use spiral_nodes as nodes;

pub use spiral_engine::{Frame, FrameIndex, FrameStamps, SampleRate, Source, SourceError, Tone, ToneSource, WavSource};
pub use spiral_nodes::{
    list_outputs, play, pull, ControlError, Controller, DeviceInfo, LatencyReport, OutputFormat, PlayError,
    PlayOptions, Playback, PullReader, Sink,
};

/// The signal `spiral play --tone` and the examples use until a voice is installed: a short
/// rising phrase, so it is recognisable on a speaker and its alignment is unambiguous in a
/// capture.
pub fn demo_phrase(rate: SampleRate, base_hz: f64, seconds: f64) -> Result<ToneSource, SourceError> {
    const STEPS: [f64; 6] = [1.0, 1.25, 1.5, 2.0, 1.5, 1.25];
    let step = seconds / STEPS.len() as f64;
    ToneSource::new(rate, STEPS.iter().map(|r| Tone { hz: base_hz * r, seconds: step, amplitude: 0.5 }).collect())
}
