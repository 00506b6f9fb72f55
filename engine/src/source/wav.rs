//! Audio files as a source.

use std::fs::File;
use std::io::BufReader;
use std::path::{Path, PathBuf};

use hound::{SampleFormat, WavReader};

use crate::frame::Frame;
use crate::source::{Source, SourceError};
use crate::units::{FrameIndex, SampleRate};

/// A WAV file (8/16/24/32-bit integer or 32-bit float PCM, any channel count) read lazily
/// in frames of 20 ms, so a long file starts playing at once.
pub struct WavSource {
    path: PathBuf,
    reader: WavReader<BufReader<File>>,
    rate: SampleRate,
    channels: u16,
    /// Multiplier from the integer sample to -1.0..1.0; `None` for float files.
    int_scale: Option<f32>,
    frame_len: usize,
    next_index: u64,
}

impl WavSource {
    /// Default length of one yielded frame in seconds.
    pub const FRAME_SECONDS: f64 = 0.02;

    /// Opens `path` and reads its header.
    pub fn open(path: impl AsRef<Path>) -> Result<Self, SourceError> {
        let path = path.as_ref().to_path_buf();
        let reader = WavReader::open(&path).map_err(|e| file_error(&path, e))?;
        let spec = reader.spec();
        let int_scale = match spec.sample_format {
            SampleFormat::Float if spec.bits_per_sample == 32 => None,
            SampleFormat::Int if (8..=32).contains(&spec.bits_per_sample) => {
                Some(1.0 / (1u64 << (spec.bits_per_sample - 1)) as f32)
            }
            _ => {
                return Err(SourceError::File {
                    path,
                    reason: format!("unsupported sample format {:?} {} bit", spec.sample_format, spec.bits_per_sample),
                    hint: "convert it to 16-bit PCM or 32-bit float, e.g. `sox in.wav -b 16 out.wav`",
                })
            }
        };
        if spec.channels == 0 || spec.sample_rate == 0 {
            return Err(SourceError::File {
                path,
                reason: "header declares zero channels or a zero sample rate".into(),
                hint: "the file is corrupt; re-export it",
            });
        }
        let rate = SampleRate(spec.sample_rate);
        Ok(Self {
            path,
            reader,
            rate,
            channels: spec.channels,
            int_scale,
            frame_len: rate.frames_in(Self::FRAME_SECONDS).max(1) as usize,
            next_index: 0,
        })
    }

    /// Length of the file in sample frames, from its header.
    pub fn len_frames(&self) -> u64 {
        u64::from(self.reader.duration())
    }
}

fn file_error(path: &Path, e: hound::Error) -> SourceError {
    let hint = match &e {
        hound::Error::IoError(io) if io.kind() == std::io::ErrorKind::NotFound => "check the path",
        hound::Error::IoError(_) => "the file may be truncated or unreadable",
        _ => "not a valid WAV file; convert it with `sox in.ext out.wav`",
    };
    SourceError::File { path: path.to_path_buf(), reason: e.to_string(), hint }
}

impl Source for WavSource {
    fn sample_rate(&self) -> SampleRate {
        self.rate
    }

    fn channels(&self) -> u16 {
        self.channels
    }

    fn next_frame(&mut self) -> Result<Option<Frame>, SourceError> {
        let want = self.frame_len * usize::from(self.channels);
        let samples: Result<Vec<f32>, hound::Error> = match self.int_scale {
            None => self.reader.samples::<f32>().take(want).collect(),
            Some(scale) => self.reader.samples::<i32>().take(want).map(|s| s.map(|v| v as f32 * scale)).collect(),
        };
        let mut samples = samples.map_err(|e| file_error(&self.path, e))?;
        // A file cut inside a sample frame keeps only whole sample frames.
        samples.truncate(samples.len() - samples.len() % usize::from(self.channels));
        if samples.is_empty() {
            return Ok(None);
        }
        let frame = Frame::new(FrameIndex(self.next_index), self.rate, self.channels, samples);
        self.next_index += 1;
        Ok(Some(frame))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write_wav(path: &Path, spec: hound::WavSpec, samples: &[i32]) {
        let mut w = hound::WavWriter::create(path, spec).unwrap();
        for &s in samples {
            w.write_sample(s).unwrap();
        }
        w.finalize().unwrap();
    }

    #[test]
    fn reads_int16_stereo_exactly() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("s16.wav");
        let spec =
            hound::WavSpec { channels: 2, sample_rate: 16_000, bits_per_sample: 16, sample_format: SampleFormat::Int };
        let data: Vec<i32> = (0..2000).map(|i| (i * 37 % 65536) - 32768).collect();
        write_wav(&path, spec, &data);
        let mut src = WavSource::open(&path).unwrap();
        assert_eq!((src.sample_rate(), src.channels(), src.len_frames()), (SampleRate(16_000), 2, 1000));
        let mut got = Vec::new();
        while let Some(f) = src.next_frame().unwrap() {
            got.extend(f.samples.iter().map(|&s| (s * 32768.0) as i32));
        }
        assert_eq!(got, data);
    }

    #[test]
    fn missing_and_corrupt_files_name_the_path() {
        let missing = WavSource::open("/nonexistent/x.wav").err().unwrap().to_string();
        assert!(missing.contains("/nonexistent/x.wav") && missing.contains("check the path"), "{missing}");
        let dir = tempfile::tempdir().unwrap();
        let bad = dir.path().join("bad.wav");
        std::fs::write(&bad, b"RIFF\x10\0\0\0WAVEjunkjunk").unwrap();
        let err = WavSource::open(&bad).err().unwrap().to_string();
        assert!(err.contains("bad.wav"), "{err}");
    }

    #[test]
    fn truncated_file_yields_what_it_has_then_stops() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("t.wav");
        let spec =
            hound::WavSpec { channels: 1, sample_rate: 8_000, bits_per_sample: 16, sample_format: SampleFormat::Int };
        write_wav(&path, spec, &vec![1000; 8000]);
        let bytes = std::fs::read(&path).unwrap();
        std::fs::write(&path, &bytes[..bytes.len() / 2 + 1]).unwrap();
        let mut src = WavSource::open(&path).unwrap();
        let mut frames = 0;
        let outcome = loop {
            match src.next_frame() {
                Ok(Some(_)) => frames += 1,
                other => break other,
            }
        };
        assert!(frames > 0);
        let err = outcome.expect_err("the missing half is reported").to_string();
        assert!(err.contains("t.wav"), "{err}");
    }
}
