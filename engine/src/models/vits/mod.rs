//! VITS (Kim et al. 2021) as Piper voices export it: phoneme ids → text encoder →
//! stochastic durations → expanded prior → reverse flow → HiFi-GAN → audio.
//!
//! Hyperparameters are read off the tensors (their shapes and which ones exist) and, for
//! convolution strides and dilations, off the graph, so every Piper quality level loads
//! through the same code.

pub mod config;
pub mod duration;
pub mod flow;
pub mod generator;
pub mod speech;
pub mod text_encoder;
pub mod voice;
pub mod weights;

use rand::Rng;
use rand_distr::StandardNormal;
use thiserror::Error;

use crate::kernels::conv::ConvError;
use crate::kernels::Cpu;
use crate::onnx::ConvAttrs;
use crate::tensors::{TensorError, Tensors};

pub use crate::models::nn::Precision;
pub use duration::DurationPredictor;
pub use flow::{Flow, FlowStream};
pub use generator::Generator;
pub use speech::{Line, SpeechSource};
pub use text_encoder::{Encoded, TextEncoder};
pub use voice::{PiperVoice, Sentence, SpeechError};

/// Looks up a convolution's attributes (stride, padding, dilation) by module name
/// (`dec.ups.0`): the weights do not show them, the graph does.
pub type ConvLookup = dyn Fn(&str) -> Option<ConvAttrs>;

#[derive(Debug, Error)]
pub enum VitsError {
    #[error(transparent)]
    Tensor(#[from] TensorError),
    #[error(transparent)]
    Layer(#[from] crate::models::nn::LayerError),
    #[error("phoneme id {id} is outside this voice's {symbols} symbols; the phoneme map and the model do not belong together")]
    PhonemeId { id: i64, symbols: usize },
    #[error("internal shape error: {0}")]
    Conv(#[from] ConvError),
    #[error("the model file does not state the stride and dilation of {0}; it is not a complete VITS export")]
    Geometry(String),
    #[error("{0} must be finite and not negative (got {1})")]
    Scale(&'static str, f32),
}

/// The three knobs of VITS inference, as Piper's `scales` input orders them.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Scales {
    /// Standard deviation multiplier of the prior sample (0: its mean).
    pub noise_scale: f32,
    /// Duration multiplier: above 1 speaks slower.
    pub length_scale: f32,
    /// Noise multiplier of the duration predictor (0: its deterministic path).
    pub noise_w: f32,
}

impl Scales {
    fn check(&self) -> Result<(), VitsError> {
        for (name, v) in
            [("noise_scale", self.noise_scale), ("length_scale", self.length_scale), ("noise_w", self.noise_w)]
        {
            if !v.is_finite() || v < 0.0 {
                return Err(VitsError::Scale(name, v));
            }
        }
        Ok(())
    }
}

/// The decoder's input for one utterance, or a stretch of it: `[channels, frames]`.
#[derive(Clone, Debug)]
pub struct Latent {
    pub z: Vec<f32>,
    pub channels: usize,
    pub frames: usize,
}

impl Latent {
    /// Frames `from..from + n`, `[channels, n]`.
    pub fn columns(&self, from: usize, n: usize) -> Vec<f32> {
        let mut z = vec![0.0; self.channels * n];
        for (c, row) in z.chunks_exact_mut(n.max(1)).enumerate().take(self.channels) {
            row.copy_from_slice(&self.z[c * self.frames + from..][..n]);
        }
        z
    }
}

impl From<crate::models::stream::Block> for Latent {
    fn from(b: crate::models::stream::Block) -> Latent {
        Latent { z: b.data, channels: b.channels, frames: b.len }
    }
}

/// Under [`Precision::Mixed`] the generator's convolutions reading at most
/// [`generator::BF16_CHANNELS`] channels multiply in bf16; the audio stays 46-48 dB from the
/// reference's (f32: about 90 dB).
pub struct Vits {
    encoder: TextEncoder,
    duration: DurationPredictor,
    flow: Flow,
    generator: Generator,
}

impl Vits {
    /// Builds the model from a voice's tensors; every tensor it needs must be there with
    /// the shape the others imply.
    pub fn new(mut t: Tensors, attrs: &ConvLookup) -> Result<Vits, VitsError> {
        Ok(Vits {
            encoder: TextEncoder::load(&mut t)?,
            duration: DurationPredictor::load(&mut t)?,
            flow: Flow::load(&mut t)?,
            generator: Generator::load(&mut t, attrs)?,
        })
    }

    /// See [`Precision`].
    pub fn set_precision(&mut self, precision: Precision) {
        self.generator.set_precision(precision);
    }

    pub fn encoder(&self) -> &TextEncoder {
        &self.encoder
    }

    pub fn flow(&self) -> &Flow {
        &self.flow
    }

    pub fn generator(&self) -> &Generator {
        &self.generator
    }

    /// Values per latent frame (the decoder's input channels).
    pub fn latent_channels(&self) -> usize {
        self.flow.channels()
    }

    /// Audio samples per latent frame.
    pub fn hop(&self) -> usize {
        self.generator.hop()
    }

    /// Frames per phoneme: ⌈e^logw · length_scale⌉, from the duration predictor run on
    /// `noise_w`-scaled noise.
    pub fn durations(
        &self,
        cpu: Cpu,
        encoded: &Encoded,
        scales: Scales,
        rng: &mut impl Rng,
    ) -> Result<Vec<usize>, VitsError> {
        scales.check()?;
        let noise = normal(rng, 2 * encoded.len, scales.noise_w);
        let log_w = self.duration.reverse(cpu, &encoded.hidden, encoded.len, noise)?;
        Ok(log_w.iter().map(|l| (l.exp() * scales.length_scale).ceil().max(0.0) as usize).collect())
    }

    /// The prior over output frames: each phoneme's mean repeated for its frames, plus
    /// `noise_scale`-scaled noise times its standard deviation (`[channels, frames]`).
    pub fn prior(
        &self,
        encoded: &Encoded,
        durations: &[usize],
        scales: Scales,
        rng: &mut impl Rng,
    ) -> Result<Latent, VitsError> {
        scales.check()?;
        let (channels, len) = (encoded.mean.len() / encoded.len.max(1), encoded.len);
        let frames: usize = durations.iter().sum();
        let mut z = normal(rng, channels * frames, scales.noise_scale);
        for (c, row) in z.chunks_exact_mut(frames.max(1)).enumerate().take(channels) {
            let mut f = 0;
            for (p, &d) in durations.iter().enumerate() {
                let (m, s) = (encoded.mean[c * len + p], encoded.log_scale[c * len + p].exp());
                for v in &mut row[f..f + d] {
                    *v = m + *v * s;
                }
                f += d;
            }
        }
        Ok(Latent { z, channels, frames })
    }

    /// The whole latent (the decoder's input) from the prior, through the reverse flow.
    pub fn latent(&self, cpu: Cpu, prior: &Latent) -> Result<Latent, VitsError> {
        let z = self.flow.reverse(cpu, &prior.z, prior.frames)?;
        Ok(Latent { z, channels: prior.channels, frames: prior.frames })
    }

    /// Audio for a whole latent.
    pub fn decode(&self, cpu: Cpu, latent: &Latent) -> Result<Vec<f32>, VitsError> {
        self.generator.forward(cpu, &latent.z, latent.frames)
    }

    /// Audio for one sentence's phoneme ids.
    pub fn synthesize(&self, cpu: Cpu, ids: &[i64], scales: Scales, rng: &mut impl Rng) -> Result<Vec<f32>, VitsError> {
        let encoded = self.encoder.forward(cpu, ids)?;
        let durations = self.durations(cpu, &encoded, scales, rng)?;
        let prior = self.prior(&encoded, &durations, scales, rng)?;
        let latent = self.latent(cpu, &prior)?;
        self.decode(cpu, &latent)
    }
}

/// `n` standard-normal values times `scale`; zeros, drawing nothing, when `scale` is 0.
fn normal(rng: &mut impl Rng, n: usize, scale: f32) -> Vec<f32> {
    if scale == 0.0 {
        return vec![0.0; n];
    }
    (0..n).map(|_| rng.sample::<f32, _>(StandardNormal) * scale).collect()
}

/// The shape of tensor `name`, which must have `N` dimensions.
fn dim<const N: usize>(t: &Tensors, name: &str) -> Result<[usize; N], TensorError> {
    let shape = t.get(name)?.shape();
    shape.try_into().map_err(|_| TensorError::Rank {
        name: name.into(),
        want: N,
        got: shape.to_vec(),
        file: t.file().to_path_buf(),
    })
}

/// The sorted indices i for which a tensor `{prefix}{i}{suffix}` exists.
fn indices(t: &Tensors, prefix: &str, suffix: &str) -> Vec<usize> {
    let mut found: Vec<usize> =
        t.names().iter().filter_map(|n| n.strip_prefix(prefix)?.strip_suffix(suffix)?.parse().ok()).collect();
    found.sort_unstable();
    found
}
