//! `spiral-graph`: the frame graph between the engine and the output spine.
//!
//! Each frame a model's decoder plays becomes one 60-byte [`AudioNode`] vertex in a
//! petgraph ([`FrameGraph`]), analysed from its audio ([`analysis`]) and addressed by
//! stream, position and role ([`SpiralAddress`]). Before the decoder runs on a frame, the
//! [`Scheduler`] (an engine [`Router`](spiral_engine::route::Router)) asks the HHTL cascade
//! whether it can be skipped (silence), reused (a near duplicate of a frame already
//! decoded) or must be decoded.

pub mod address;
pub mod analysis;
pub mod cascade;
pub mod node;
pub mod palette;
pub mod pvq;
pub mod scheduler;

pub use address::{Role, SpiralAddress};
pub use analysis::{Analysis, Analyzer, Thresholds};
pub use cascade::{CascadeConfig, CascadeStats, Edge, FrameGraph, Match};
pub use node::{AudioNode, Phase};
pub use palette::Palette;
pub use scheduler::{Scheduler, SchedulerConfig};

/// Bands of CELT's layout, the resolution of a node's spectrum.
pub const BANDS: usize = 21;
