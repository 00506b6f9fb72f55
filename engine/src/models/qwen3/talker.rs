//! The talker: a Qwen3 decoder over the sum of text and codec embeddings whose head
//! predicts each frame's first codebook.

use crate::checkpoint::{Checkpoint, CheckpointError, Weight};
use crate::kernels::{activation, Cpu};

use super::config::TalkerConfig;
use super::transformer::{Cache, Linear, Stack};

#[derive(Clone, Debug)]
pub struct Talker {
    text_embedding: Weight,
    text_fc1: Linear,
    text_fc2: Linear,
    codec_embedding: Weight,
    stack: Stack,
    codec_head: Linear,
}

impl Talker {
    pub fn load(ckpt: &Checkpoint, c: &TalkerConfig) -> Result<Talker, CheckpointError> {
        let (h, th) = (c.stack.hidden_size, c.text_hidden_size);
        Ok(Talker {
            text_embedding: ckpt.matrix("talker.model.text_embedding.weight", c.text_vocab_size, th)?,
            text_fc1: Linear::load(ckpt, "talker.text_projection.linear_fc1", th, th, true)?,
            text_fc2: Linear::load(ckpt, "talker.text_projection.linear_fc2", h, th, true)?,
            codec_embedding: ckpt.matrix("talker.model.codec_embedding.weight", c.stack.vocab_size, h)?,
            stack: Stack::load(ckpt, "talker.model", &c.stack)?,
            codec_head: Linear::load(ckpt, "talker.codec_head", c.stack.vocab_size, h, false)?,
        })
    }

    pub fn hidden_size(&self) -> usize {
        self.stack.hidden_size()
    }

    pub fn vocab_size(&self) -> usize {
        self.codec_head.out_features()
    }

    pub fn text_vocab_size(&self) -> usize {
        self.text_embedding.rows()
    }

    /// Bytes of weights one generated frame reads (stack and head; embeddings are rows).
    pub fn bytes_per_step(&self) -> usize {
        self.stack.bytes() + self.codec_head.bytes()
    }

    pub fn cache(&self) -> Cache {
        self.stack.cache()
    }

    /// Text tokens embedded and projected to the talker's width: `ids.len()` × hidden.
    pub fn text(&self, cpu: Cpu, ids: &[u32]) -> Vec<f32> {
        let (th, rows) = (self.text_embedding.cols(), ids.len());
        let mut e = vec![0.0; rows * th];
        for (&id, row) in ids.iter().zip(e.chunks_exact_mut(th)) {
            self.text_embedding.row(id as usize, row);
        }
        let mut mid = vec![0.0; rows * th];
        self.text_fc1.forward(cpu, &e, rows, &mut mid);
        activation::silu(cpu, &mut mid);
        let mut out = vec![0.0; rows * self.hidden_size()];
        self.text_fc2.forward(cpu, &mid, rows, &mut out);
        out
    }

    /// Adds codec token `id`'s embedding to `out`.
    pub fn add_codec(&self, id: u32, out: &mut [f32]) {
        let mut row = vec![0.0; out.len()];
        self.codec_embedding.row(id as usize, &mut row);
        out.iter_mut().zip(&row).for_each(|(o, r)| *o += r);
    }

    /// Runs `rows` positions (`x`, replaced by the final hidden states) and returns the
    /// codec logits of the last one.
    pub fn forward(&self, cpu: Cpu, x: &mut [f32], rows: usize, cache: &mut Cache) -> Vec<f32> {
        self.stack.forward(cpu, x, rows, cache);
        let last = &x[(rows - 1) * self.hidden_size()..];
        let mut logits = vec![0.0; self.vocab_size()];
        self.codec_head.forward(cpu, last, 1, &mut logits);
        logits
    }
}
