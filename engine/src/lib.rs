//! `spiral-engine`: where spiral's audio comes from.
//!
//! Everything that produces audio implements [`Source`]: it yields [`Frame`]s (a block of
//! samples at a known [`SampleRate`], with [`FrameStamps`] that the output spine fills in as
//! the frame travels to the speakers). Test signals ([`ToneSource`]) and files
//! ([`WavSource`]) live here beside the text-to-speech models that later implement the same
//! trait, so the spine never needs to know which kind of source it plays.
//!
//! ```
//! use spiral_engine::{Source, ToneSource, SampleRate};
//!
//! let mut tone = ToneSource::sine(SampleRate(24_000), 440.0, 0.2).unwrap();
//! let first = tone.next_frame().unwrap().unwrap();
//! assert_eq!(first.sample_rate, SampleRate(24_000));
//! assert!(first.samples_per_channel() > 0);
//! ```

pub mod allocator;
pub mod checkpoint;
pub mod codec;
pub mod compress;
pub mod frame;
pub mod gguf;
pub mod kernels;
pub mod models;
pub mod onnx;
pub mod pool;
pub mod route;
pub mod source;
pub mod tensors;
pub mod text;
pub mod units;
pub mod voices;

pub use frame::{Frame, FrameStamps};
pub use source::{Input, Source, SourceError, Tone, ToneSource, WavSource};
pub use units::{FrameIndex, SampleRate};
