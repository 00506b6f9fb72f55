//! Writes the output stream to a WAV file.

use std::fs::File;
use std::io::BufWriter;
use std::path::{Path, PathBuf};

use hound::{SampleFormat, WavSpec, WavWriter};

use super::{OutputFormat, SinkError};

/// A 32-bit float WAV file receiving exactly the samples the output gets, so the file is a
/// bit-exact record of what was played.
pub struct WavTap {
    path: PathBuf,
    writer: WavWriter<BufWriter<File>>,
}

impl WavTap {
    /// Creates `path` (and its parent directories) for audio in `format`.
    pub fn create(path: &Path, format: OutputFormat) -> Result<Self, SinkError> {
        let err = |reason: String| SinkError::File { path: path.to_path_buf(), reason };
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir).map_err(|e| err(format!("cannot create directory {}: {e}", dir.display())))?;
        }
        let spec = WavSpec {
            channels: format.channels,
            sample_rate: format.sample_rate.hz(),
            bits_per_sample: 32,
            sample_format: SampleFormat::Float,
        };
        let writer = WavWriter::create(path, spec).map_err(|e| err(e.to_string()))?;
        Ok(Self { path: path.to_path_buf(), writer })
    }

    /// Appends interleaved samples.
    pub fn write(&mut self, samples: &[f32]) -> Result<(), SinkError> {
        for &s in samples {
            self.writer
                .write_sample(s)
                .map_err(|e| SinkError::File { path: self.path.clone(), reason: e.to_string() })?;
        }
        Ok(())
    }

    /// Completes the header; the file is valid only after this.
    pub fn finish(self) -> Result<(), SinkError> {
        self.writer.finalize().map_err(|e| SinkError::File { path: self.path, reason: e.to_string() })
    }
}
