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
        super::create_parent_dir(path).map_err(|e| err(format!("cannot create its directory: {e}")))?;
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

#[cfg(test)]
mod tests {
    use super::*;
    use spiral_engine::SampleRate;

    #[test]
    fn round_trip_is_bit_exact_and_creates_directories() {
        let dir = std::env::temp_dir().join(format!("spiral-wavtap-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let path = dir.join("a/b/out.wav");
        let format = OutputFormat { sample_rate: SampleRate(44_100), channels: 3 };
        let samples: Vec<f32> = (0..3 * 1001)
            .map(|i| match i % 7 {
                0 => -0.0,
                1 => f32::MIN_POSITIVE / 8.0, // subnormal
                2 => 1.5,                     // above full scale: stored, not clipped
                _ => ((i as f32) * 0.618).sin() * 0.9,
            })
            .collect();
        let mut tap = WavTap::create(&path, format).unwrap();
        tap.write(&samples[..1000]).unwrap();
        tap.write(&samples[1000..]).unwrap();
        tap.finish().unwrap();
        let mut reader = hound::WavReader::open(&path).unwrap();
        assert_eq!((reader.spec().sample_rate, reader.spec().channels), (44_100, 3));
        let back: Vec<u32> = reader.samples::<f32>().map(|s| s.unwrap().to_bits()).collect();
        assert_eq!(back, samples.iter().map(|s| s.to_bits()).collect::<Vec<_>>());
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn unwritable_path_names_the_file() {
        let err = WavTap::create(
            Path::new("/proc/spiral/out.wav"),
            OutputFormat { sample_rate: SampleRate(8_000), channels: 1 },
        )
        .err()
        .unwrap()
        .to_string();
        assert!(err.contains("/proc/spiral"), "{err}");
    }
}
