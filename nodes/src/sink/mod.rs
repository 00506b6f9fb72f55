//! Where rendered audio goes: a real device (cpal), a clock-paced null device, a WAV file.

pub mod device;
pub mod null;
pub mod wav;

use spiral_engine::SampleRate;
use thiserror::Error;

/// Creates the directory `path` will be written in, so an output never fails for a missing
/// folder.
pub fn create_parent_dir(path: &std::path::Path) -> std::io::Result<()> {
    match path.parent().filter(|d| !d.as_os_str().is_empty()) {
        Some(dir) => std::fs::create_dir_all(dir),
        None => Ok(()),
    }
}

/// Sample rate and interleaved channel count of an output.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct OutputFormat {
    pub sample_rate: SampleRate,
    pub channels: u16,
}

/// An output could not be opened or written.
#[derive(Debug, Error)]
pub enum SinkError {
    /// The audio host or device refused.
    #[error("audio device {device}: {reason}")]
    Device { device: String, reason: String },
    /// A file could not be created or written.
    #[error("{path}: {reason}")]
    File { path: std::path::PathBuf, reason: String },
    /// The settings describe no usable output.
    #[error("invalid output settings: {0}")]
    Invalid(String),
}
