//! Codes to the quantized latent (`SplitResidualVectorQuantizer.decode`): the first
//! codebook (the semantic one) and the rest are two residual quantizers, each summing its
//! codebooks' entries and projecting the sum with its own output projection (a pointwise
//! convolution without bias); the two projections are added.

use crate::checkpoint::{Checkpoint, CheckpointError, Weight};
use crate::kernels::Cpu;

use super::config::DecoderConfig;
use super::DecodeError;
use crate::models::qwen3::transformer::Linear;

/// `EuclideanCodebook`'s floor on a cluster's usage count.
const USAGE_EPS: f32 = 1e-5;

/// One residual quantizer: its codebooks (`[size, dim]` each) and output projection.
#[derive(Clone, Debug)]
struct Residual {
    codebooks: Vec<Vec<f32>>,
    dim: usize,
    project: Linear,
}

impl Residual {
    /// `{prefix}.vq.layers.{l}._codebook` for `count` codebooks and `{prefix}.output_proj`.
    fn load(
        ckpt: &Checkpoint,
        prefix: &str,
        count: usize,
        size: usize,
        dim: usize,
        out: usize,
    ) -> Result<Residual, CheckpointError> {
        let codebooks = (0..count)
            .map(|l| {
                let p = format!("{prefix}.vq.layers.{l}._codebook");
                let usage = ckpt.f32(&format!("{p}.cluster_usage"), &[size])?;
                let mut entries = ckpt.f32(&format!("{p}.embedding_sum"), &[size, dim])?;
                // embedding = embedding_sum / cluster_usage.clamp(min=eps), once at load.
                for (row, u) in entries.chunks_exact_mut(dim).zip(usage) {
                    let u = u.max(USAGE_EPS);
                    row.iter_mut().for_each(|v| *v /= u);
                }
                Ok(entries)
            })
            .collect::<Result<_, CheckpointError>>()?;
        let weight = ckpt.f32(&format!("{prefix}.output_proj.weight"), &[out, dim, 1])?;
        Ok(Residual { codebooks, dim, project: Linear::new(Weight::from_f32(out, dim, weight), None) })
    }

    /// The projected sums for `frames` frames whose code for codebook `l` is
    /// `codes[frame · stride + first + l]`: `frames` × out.
    fn decode(&self, cpu: Cpu, codes: &[u32], stride: usize, first: usize, frames: usize) -> Vec<f32> {
        let dim = self.dim;
        let mut sums = vec![0.0; frames * dim];
        for (f, sum) in sums.chunks_exact_mut(dim).enumerate() {
            // Σ entries in codebook order, from the first (the reference starts at 0 + q₀).
            for (l, book) in self.codebooks.iter().enumerate() {
                let entry = &book[codes[f * stride + first + l] as usize * dim..][..dim];
                sum.iter_mut().zip(entry).for_each(|(s, e)| *s += e);
            }
        }
        self.project.rows(cpu, &sums, frames)
    }
}

/// The split residual quantizer's decoding half.
#[derive(Clone, Debug)]
pub(crate) struct Quantizer {
    first: Residual,
    rest: Residual,
    size: usize,
}

impl Quantizer {
    /// `{prefix}.rvq_first` (one codebook) and `{prefix}.rvq_rest` (the others).
    pub fn load(ckpt: &Checkpoint, prefix: &str, c: &DecoderConfig) -> Result<Quantizer, CheckpointError> {
        let (size, dim, out) = (c.codebook_size, c.codebook_dim / 2, c.codebook_dim);
        Ok(Quantizer {
            first: Residual::load(ckpt, &format!("{prefix}.rvq_first"), 1, size, dim, out)?,
            rest: Residual::load(ckpt, &format!("{prefix}.rvq_rest"), c.num_quantizers - 1, size, dim, out)?,
            size,
        })
    }

    /// Codes per frame.
    pub fn codebooks(&self) -> usize {
        1 + self.rest.codebooks.len()
    }

    /// An error unless `codes` is `frames` frames of one code per codebook, each within its
    /// codebook; `first_frame` numbers the frames in the message.
    pub fn check(&self, codes: &[u32], frames: usize, first_frame: usize) -> Result<(), DecodeError> {
        let codebooks = self.codebooks();
        if frames.checked_mul(codebooks) != Some(codes.len()) {
            return Err(DecodeError::Shape { codes: codes.len(), frames, codebooks });
        }
        match codes.iter().position(|&c| c as usize >= self.size) {
            Some(i) => Err(DecodeError::CodeOutOfRange {
                frame: first_frame + i / codebooks,
                codebook: i % codebooks,
                code: codes[i],
                size: self.size,
            }),
            None => Ok(()),
        }
    }

    /// The quantized latent of `frames` checked frames: `frames` × codebook_dim.
    pub fn decode(&self, cpu: Cpu, codes: &[u32], frames: usize) -> Vec<f32> {
        let stride = self.codebooks();
        let mut out = self.first.decode(cpu, codes, stride, 0, frames);
        let rest = self.rest.decode(cpu, codes, stride, 1, frames);
        out.iter_mut().zip(rest).for_each(|(a, b)| *a += b);
        out
    }
}
