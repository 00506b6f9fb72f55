//! Streaming sample-rate conversion with the resampler's delay removed.

use rubato::audioadapter_buffers::direct::InterleavedSlice;
use rubato::{Fft, FixedSync, Indexing, Resampler};
use spiral_engine::SampleRate;
use thiserror::Error;

/// A resampler construction or processing failure.
#[derive(Debug, Error)]
#[error("resampler {from} -> {to}: {message}")]
pub struct ResampleError {
    from: SampleRate,
    to: SampleRate,
    message: String,
}

/// Converts a stream of interleaved audio from one rate to another, block by block.
///
/// Output sample `n` corresponds to input time `n / to` (within half an output sample when
/// downsampling, where the filter's delay is fractional): the FFT resampler's group delay is
/// trimmed from the start and [`StreamResampler::finish`] flushes the tail so the output has
/// exactly `ceil(input_frames * to / from)` sample frames. Blocks of any length go in; output
/// appears whenever a whole internal chunk (about 6 ms) is available. After a `finish` the
/// resampler starts afresh, so a stream that pauses can be flushed whole at each pause.
pub struct StreamResampler {
    inner: Fft<f32>,
    from: SampleRate,
    to: SampleRate,
    channels: usize,
    pending: Vec<f32>,
    chunk_out: Vec<f32>,
    delay_left: usize,
    frames_in: u64,
    frames_out: u64,
}

impl StreamResampler {
    /// Input frames per internal chunk: small, because a chunk must fill before any output.
    const CHUNK: usize = 256;

    /// A resampler from `from` to `to` for `channels` interleaved channels.
    pub fn new(from: SampleRate, to: SampleRate, channels: u16) -> Result<Self, ResampleError> {
        let channels = usize::from(channels.max(1));
        let inner = Fft::<f32>::new(from.hz() as usize, to.hz() as usize, Self::CHUNK, channels, FixedSync::Input)
            .map_err(|e| ResampleError { from, to, message: e.to_string() })?;
        let chunk_out = vec![0.0; inner.output_frames_max() * channels];
        let delay_left = inner.output_delay();
        Ok(Self { inner, from, to, channels, pending: Vec::new(), chunk_out, delay_left, frames_in: 0, frames_out: 0 })
    }

    /// Feeds interleaved `input` and appends whatever output is ready to `out`.
    pub fn process(&mut self, input: &[f32], out: &mut Vec<f32>) -> Result<(), ResampleError> {
        let whole = input.len() - input.len() % self.channels;
        self.pending.extend_from_slice(&input[..whole]);
        self.frames_in += (whole / self.channels) as u64;
        while self.pending.len() / self.channels >= self.inner.input_frames_next() {
            self.run_chunk(None, out)?;
        }
        Ok(())
    }

    /// Flushes the remaining input and the resampler's tail, so the total output has exactly
    /// the length the input implies, then starts a new stream.
    pub fn finish(&mut self, out: &mut Vec<f32>) -> Result<(), ResampleError> {
        let expected = (self.frames_in * u64::from(self.to.hz())).div_ceil(u64::from(self.from.hz()));
        while self.frames_out < expected {
            let partial = (self.pending.len() / self.channels).min(self.inner.input_frames_next());
            self.run_chunk(Some(partial), out)?;
        }
        let excess = (self.frames_out - expected) as usize * self.channels;
        out.truncate(out.len() - excess);
        self.inner.reset();
        self.pending.clear();
        self.delay_left = self.inner.output_delay();
        (self.frames_in, self.frames_out) = (0, 0);
        Ok(())
    }

    fn run_chunk(&mut self, partial: Option<usize>, out: &mut Vec<f32>) -> Result<(), ResampleError> {
        let err = |e: &dyn std::fmt::Display| ResampleError { from: self.from, to: self.to, message: e.to_string() };
        let need = self.inner.input_frames_next();
        // A partial chunk reads only `partial` frames but the adapter must span a full chunk.
        if self.pending.len() < need * self.channels {
            self.pending.resize(need * self.channels, 0.0);
        }
        let out_frames = self.chunk_out.len() / self.channels;
        let input = InterleavedSlice::new(&self.pending[..], self.channels, need).map_err(|e| err(&e))?;
        let mut output =
            InterleavedSlice::new_mut(&mut self.chunk_out[..], self.channels, out_frames).map_err(|e| err(&e))?;
        let indexing = partial.map(|n| Indexing::new().partial_len(n));
        let (used, made) =
            self.inner.process_into_buffer(&input, &mut output, indexing.as_ref()).map_err(|e| err(&e))?;
        let consumed = partial.unwrap_or(used);
        self.pending.drain(..consumed * self.channels);
        if partial.is_some() {
            // The zero padding added above is not input: drop it so it is not read twice.
            self.pending.truncate(self.pending.len().saturating_sub((need - consumed) * self.channels));
        }
        let skip = self.delay_left.min(made);
        self.delay_left -= skip;
        out.extend_from_slice(&self.chunk_out[skip * self.channels..made * self.channels]);
        self.frames_out += (made - skip) as u64;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sine(rate: u32, hz: f64, frames: usize) -> Vec<f32> {
        (0..frames).map(|n| (0.5 * (std::f64::consts::TAU * hz * n as f64 / rate as f64).sin()) as f32).collect()
    }

    fn sine_at(rate: u32, hz: f64, frames: std::ops::Range<usize>, lag: f64) -> Vec<f32> {
        frames.map(|n| (0.5 * (std::f64::consts::TAU * hz * (n as f64 - lag) / rate as f64).sin()) as f32).collect()
    }

    fn snr_db(reference: &[f32], got: &[f32]) -> f64 {
        let signal: f64 = reference.iter().map(|&r| (r as f64).powi(2)).sum();
        let noise: f64 = reference.iter().zip(got).map(|(&r, &g)| (r as f64 - g as f64).powi(2)).sum();
        10.0 * (signal / noise.max(1e-30)).log10()
    }

    #[test]
    fn streamed_in_odd_blocks_matches_the_analytic_sine() {
        for (from, to) in [(22_050, 48_000), (24_000, 44_100), (48_000, 22_050), (24_000, 48_000)] {
            let input = sine(from, 1000.0, from as usize / 2);
            let mut rs = StreamResampler::new(SampleRate(from), SampleRate(to), 1).unwrap();
            let mut out = Vec::new();
            for block in input.chunks(177) {
                rs.process(block, &mut out).unwrap();
            }
            rs.finish(&mut out).unwrap();
            let expected_len = (input.len() as u64 * to as u64).div_ceil(from as u64) as usize;
            assert_eq!(out.len(), expected_len, "{from}->{to}");
            // Edges see the filter run into silence; judge the body.
            let body = out.len() / 10..out.len() * 9 / 10;
            // Downsampling leaves a constant delay of half an output sample: find the best
            // fractional alignment within half a sample and require it to be near perfect.
            let (snr, lag) = (-10..=10)
                .map(|step| {
                    let lag = step as f64 * 0.05;
                    let reference = sine_at(to, 1000.0, body.clone(), lag);
                    (snr_db(&reference, &out[body.clone()]), lag)
                })
                .fold((f64::MIN, 0.0), |best, x| if x.0 > best.0 { x } else { best });
            assert!(snr > 60.0, "{from}->{to}: SNR {snr:.1} dB at lag {lag}");
        }
    }

    #[test]
    fn stereo_channels_stay_separate() {
        let left = sine(24_000, 500.0, 12_000);
        let inter: Vec<f32> = left.iter().flat_map(|&l| [l, 0.0]).collect();
        let mut rs = StreamResampler::new(SampleRate(24_000), SampleRate(48_000), 2).unwrap();
        let mut out = Vec::new();
        rs.process(&inter, &mut out).unwrap();
        rs.finish(&mut out).unwrap();
        assert_eq!(out.len(), 48_000);
        let right_energy: f32 = out.iter().skip(1).step_by(2).map(|s| s * s).sum();
        assert!(right_energy < 1e-6, "{right_energy}");
    }
}
