//! The code predictor: a small Qwen3 decoder that, for one frame, predicts codebooks
//! 1..G sequentially from the talker's hidden state and the codes before it, each with
//! its own embedding and head.

use crate::checkpoint::{Checkpoint, CheckpointError, Weight};
use crate::kernels::Cpu;

use super::config::TalkerConfig;
use super::sampling::Sampler;
use super::transformer::{Cache, Linear, Stack};

#[derive(Clone, Debug)]
pub struct CodePredictor {
    /// Talker width to predictor width (absent when they agree).
    projection: Option<Linear>,
    stack: Stack,
    /// Codebook g+1's embedding at the talker's width.
    embeddings: Vec<Weight>,
    /// Codebook g+1's head.
    heads: Vec<Linear>,
}

impl CodePredictor {
    pub fn load(ckpt: &Checkpoint, c: &TalkerConfig) -> Result<CodePredictor, CheckpointError> {
        let p = &c.code_predictor_config.stack;
        let (th, h, vocab) = (c.stack.hidden_size, p.hidden_size, p.vocab_size);
        let prefix = "talker.code_predictor";
        let projection = if th != h {
            Some(Linear::load(ckpt, &format!("{prefix}.small_to_mtp_projection"), h, th, true)?)
        } else {
            None
        };
        let groups = 0..p.num_code_groups - 1;
        Ok(CodePredictor {
            projection,
            stack: Stack::load(ckpt, &format!("{prefix}.model"), p)?,
            embeddings: groups
                .clone()
                .map(|g| ckpt.matrix(&format!("{prefix}.model.codec_embedding.{g}.weight"), vocab, th))
                .collect::<Result<_, _>>()?,
            heads: groups
                .map(|g| Linear::load(ckpt, &format!("{prefix}.lm_head.{g}"), vocab, h, false))
                .collect::<Result<_, _>>()?,
        })
    }

    /// Codebooks per frame, the first (the talker's) included.
    pub fn groups(&self) -> usize {
        self.heads.len() + 1
    }

    /// Bytes of weights one frame reads (a pass per codebook after the first).
    pub fn bytes_per_frame(&self) -> usize {
        let stack = self.stack.bytes() + self.projection.as_ref().map_or(0, Linear::bytes);
        self.heads.iter().map(|h| stack + h.bytes()).sum()
    }

    pub fn cache(&self) -> Cache {
        self.stack.cache()
    }

    /// Codebooks 1..G of a frame whose first code is `first` (embedded, at the talker's
    /// width, as `first_embedding`) after talker state `hidden`. Writes them to
    /// `codes[1..]` and adds their embeddings to `sum` (the next talker input);
    /// `observe(g, logits)` sees each sub-step's raw logits before codebook g+1 is chosen.
    #[allow(clippy::too_many_arguments)]
    pub fn predict(
        &self,
        cpu: Cpu,
        hidden: &[f32],
        first_embedding: &[f32],
        sampler: &mut Sampler,
        cache: &mut Cache,
        codes: &mut [u32],
        sum: &mut [f32],
        observe: &mut dyn FnMut(usize, &[f32]),
    ) {
        let th = hidden.len();
        cache.clear();
        let mut input = [hidden, first_embedding].concat();
        let mut rows = 2;
        let mut embedded = vec![0.0; th];
        for (g, head) in self.heads.iter().enumerate() {
            let mut x = match &self.projection {
                Some(p) => {
                    let mut y = vec![0.0; rows * p.out_features()];
                    p.forward(cpu, &input, rows, &mut y);
                    y
                }
                None => input.clone(),
            };
            self.stack.forward(cpu, &mut x, rows, cache);
            let mut logits = vec![0.0; head.out_features()];
            head.forward(cpu, &x[(rows - 1) * self.stack.hidden_size()..], 1, &mut logits);
            observe(g, &logits);
            let code = sampler.pick(&mut logits, &[], &[]);
            codes[g + 1] = code;
            self.embeddings[g].row(code as usize, &mut embedded);
            sum.iter_mut().zip(&embedded).for_each(|(s, e)| *s += e);
            input.clear();
            input.extend_from_slice(&embedded);
            rows = 1;
        }
    }
}
