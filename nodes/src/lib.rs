//! `spiral-nodes`: the output spine, from frames to the speakers.
//!
//! ```text
//! Source ─► producer thread: resample ─► channel map ─► limiter ─┬─► WAV tap
//!                                                                └─► SPSC ring ─► Renderer (callback)
//!                                                                              ─► cpal device | null device | app (pull)
//! ```
//!
//! The [`Renderer`] is the only code on the real-time thread: it pops the ring, applies the
//! volume ramp and control commands, counts underruns and records one fixed-size
//! [`CallbackRecord`] per callback into a second ring. The supervisor collects those and
//! the producer's [`FrameRecord`]s into a [`LatencyReport`].

pub mod channels;
pub mod control;
mod gate;
pub mod limiter;
pub mod player;
mod producer;
pub mod render;
pub mod report;
pub mod resample;
pub mod sink;
pub mod telemetry;

pub use channels::ChannelMap;
pub use control::{Control, ControlError, Controller, Status};
pub use limiter::Limiter;
pub use player::{play, pull, PlayError, PlayOptions, Playback, PullReader, Sink};
pub use render::{Renderer, RendererSlot};
pub use report::{FrameLatency, InputLatency, LatencyReport, Run, Underrun};
pub use resample::{ResampleError, StreamResampler};
pub use sink::device::{list_outputs, DeviceInfo};
pub use sink::{OutputFormat, SinkError};
pub use telemetry::{CallbackRecord, FrameRecord};
