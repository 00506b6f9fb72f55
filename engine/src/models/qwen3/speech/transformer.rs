//! The decoder's pre-transformer (`Qwen3TTSTokenizerV2DecoderTransformerModel`): an input
//! projection, pre-norm layers of sliding-window causal attention (rotary positions, no
//! query/key norms) and a SiLU-gated MLP, each branch scaled per channel (LayerScale)
//! before it is added back, then RMSNorm and an output projection.
//!
//! It differs from the talker's [`Stack`](crate::models::qwen3::transformer::Stack) in the
//! window, the layer scales, the projections and the missing q/k norms, and in how it
//! multiplies: [`Linear::rows`](crate::models::qwen3::transformer::Linear::rows), so that frames pushed one at a time give the same bits as all
//! at once. Each query sees the `sliding_window` latest positions, itself included (the
//! reference's mask keeps keys `k > q − window`), so the cache only ever holds the last
//! `window − 1` positions.

use rayon::prelude::*;

use crate::checkpoint::{Checkpoint, CheckpointError};
use crate::kernels::{activation, vector, Cpu};
use crate::models::qwen3::transformer::Rope;

use super::config::DecoderConfig;
use crate::models::qwen3::transformer::Linear;

#[derive(Clone, Debug)]
struct Layer {
    input_norm: Vec<f32>,
    q: Linear,
    k: Linear,
    v: Linear,
    o: Linear,
    attn_scale: Vec<f32>,
    post_norm: Vec<f32>,
    gate: Linear,
    up: Linear,
    down: Linear,
    mlp_scale: Vec<f32>,
}

/// The pre-transformer's weights.
#[derive(Clone, Debug)]
pub(crate) struct PreTransformer {
    input_proj: Linear,
    layers: Vec<Layer>,
    norm: Vec<f32>,
    output_proj: Linear,
    eps: f32,
    rope: Rope,
    hidden: usize,
    heads: usize,
    kv_heads: usize,
    head_dim: usize,
    window: usize,
}

/// The keys and values later positions can still see: per layer and key-value head, the
/// last `held` positions (at most `window − 1`), `held × head_dim` values each.
#[derive(Clone, Debug)]
pub(crate) struct Window {
    keys: Vec<Vec<f32>>,
    values: Vec<Vec<f32>>,
    held: usize,
    /// The absolute position of the next frame (its rotary angle).
    next: usize,
}

impl PreTransformer {
    /// The model under `prefix` (`decoder.pre_transformer`).
    pub fn load(ckpt: &Checkpoint, prefix: &str, c: &DecoderConfig) -> Result<PreTransformer, CheckpointError> {
        let (h, hd) = (c.hidden_size, c.head_dim());
        let (q_out, kv_out) = (c.num_attention_heads * hd, c.num_key_value_heads * hd);
        let vector = |name: String| ckpt.f32(&name, &[h]);
        let layers = (0..c.num_hidden_layers)
            .map(|i| {
                let p = format!("{prefix}.layers.{i}");
                let lin = |name: &str, out, inp| Linear::load(ckpt, &format!("{p}.{name}"), out, inp, false);
                Ok(Layer {
                    input_norm: vector(format!("{p}.input_layernorm.weight"))?,
                    q: lin("self_attn.q_proj", q_out, h)?,
                    k: lin("self_attn.k_proj", kv_out, h)?,
                    v: lin("self_attn.v_proj", kv_out, h)?,
                    o: lin("self_attn.o_proj", h, q_out)?,
                    attn_scale: vector(format!("{p}.self_attn_layer_scale.scale"))?,
                    post_norm: vector(format!("{p}.post_attention_layernorm.weight"))?,
                    gate: lin("mlp.gate_proj", c.intermediate_size, h)?,
                    up: lin("mlp.up_proj", c.intermediate_size, h)?,
                    down: lin("mlp.down_proj", h, c.intermediate_size)?,
                    mlp_scale: vector(format!("{p}.mlp_layer_scale.scale"))?,
                })
            })
            .collect::<Result<Vec<_>, CheckpointError>>()?;
        Ok(PreTransformer {
            input_proj: Linear::load(ckpt, &format!("{prefix}.input_proj"), h, c.latent_dim, true)?,
            layers,
            norm: vector(format!("{prefix}.norm.weight"))?,
            output_proj: Linear::load(ckpt, &format!("{prefix}.output_proj"), c.latent_dim, h, true)?,
            eps: c.rms_norm_eps,
            rope: Rope::new(hd, c.rope_theta),
            hidden: h,
            heads: c.num_attention_heads,
            kv_heads: c.num_key_value_heads,
            head_dim: hd,
            window: c.sliding_window,
        })
    }

    /// Bytes of weights one call reads.
    pub fn bytes(&self) -> usize {
        let layer =
            |l: &Layer| [&l.q, &l.k, &l.v, &l.o, &l.gate, &l.up, &l.down].iter().map(|w| w.bytes()).sum::<usize>();
        self.layers.iter().map(layer).sum::<usize>() + self.input_proj.bytes() + self.output_proj.bytes()
    }

    /// An empty window, for a stream's first frame at position 0.
    pub fn window(&self) -> Window {
        let n = self.layers.len() * self.kv_heads;
        Window { keys: vec![Vec::new(); n], values: vec![Vec::new(); n], held: 0, next: 0 }
    }

    /// `rows` new frames (`x`, rows × latent_dim) after those `window` has seen: their
    /// outputs (rows × latent_dim); the window moves on.
    pub fn forward(&self, cpu: Cpu, x: &[f32], rows: usize, window: &mut Window) -> Vec<f32> {
        let mut x = self.input_proj.rows(cpu, x, rows);
        let mut normed = vec![0.0; x.len()];
        for (i, layer) in self.layers.iter().enumerate() {
            self.rms_rows(cpu, &x, &layer.input_norm, &mut normed);
            let attn = self.attention(cpu, i, layer, &normed, rows, window);
            add_scaled(&mut x, &layer.attn_scale, &attn);
            self.rms_rows(cpu, &x, &layer.post_norm, &mut normed);
            let mut gate = layer.gate.rows(cpu, &normed, rows);
            let up = layer.up.rows(cpu, &normed, rows);
            activation::silu(cpu, &mut gate);
            gate.iter_mut().zip(&up).for_each(|(g, u)| *g *= u);
            add_scaled(&mut x, &layer.mlp_scale, &layer.down.rows(cpu, &gate, rows));
        }
        window.next += rows;
        window.held = (window.held + rows).min(self.window - 1);
        self.rms_rows(cpu, &x, &self.norm, &mut normed);
        self.output_proj.rows(cpu, &normed, rows)
    }

    fn rms_rows(&self, cpu: Cpu, x: &[f32], weight: &[f32], out: &mut [f32]) {
        for (x, out) in x.chunks_exact(self.hidden).zip(out.chunks_exact_mut(self.hidden)) {
            activation::rms_norm(cpu, x, weight, self.eps, out);
        }
    }

    /// Self-attention of the new rows over the window and themselves; returns the output
    /// projection and keeps the layer's last `window − 1` keys and values.
    fn attention(&self, cpu: Cpu, index: usize, l: &Layer, x: &[f32], rows: usize, window: &mut Window) -> Vec<f32> {
        let (hd, heads, kv_heads) = (self.head_dim, self.heads, self.kv_heads);
        let mut q = l.q.rows(cpu, x, rows);
        let mut k = l.k.rows(cpu, x, rows);
        let v = l.v.rows(cpu, x, rows);
        let (mut cos, mut sin) = (vec![0.0; hd / 2], vec![0.0; hd / 2]);
        for r in 0..rows {
            self.rope.angles(window.next + r, &mut cos, &mut sin);
            let q_row = q[r * heads * hd..][..heads * hd].chunks_exact_mut(hd);
            let k_row = k[r * kv_heads * hd..][..kv_heads * hd].chunks_exact_mut(hd);
            q_row.chain(k_row).for_each(|head| activation::rope(cpu, head, &cos, &sin));
        }
        let base = index * kv_heads;
        for g in 0..kv_heads {
            for r in 0..rows {
                window.keys[base + g].extend_from_slice(&k[(r * kv_heads + g) * hd..][..hd]);
                window.values[base + g].extend_from_slice(&v[(r * kv_heads + g) * hd..][..hd]);
            }
        }
        let (group, held, span) = (heads / kv_heads, window.held, self.window);
        let scale = (hd as f32).powf(-0.5);
        let (keys, values) = (&window.keys, &window.values);
        let mut context = vec![0.0; rows * heads * hd];
        context.par_chunks_mut(hd).enumerate().for_each(|(i, ctx)| {
            let (r, h) = (i / heads, i % heads);
            let (keys, values) = (&keys[base + h / group], &values[base + h / group]);
            // Row r is cached position held + r; it sees the `span` positions up to itself.
            let end = held + r + 1;
            let start = end.saturating_sub(span);
            let query = &q[i * hd..][..hd];
            let mut scores: Vec<f32> =
                keys[start * hd..end * hd].chunks_exact(hd).map(|key| vector::dot(cpu, query, key) * scale).collect();
            activation::softmax(cpu, &mut scores);
            ctx.fill(0.0);
            for (p, value) in scores.iter().zip(values[start * hd..end * hd].chunks_exact(hd)) {
                vector::axpy(cpu, *p, value, ctx);
            }
        });
        // Keep what the next positions can see.
        let keep = (held + rows).min(span - 1);
        for buffer in window.keys[base..base + kv_heads].iter_mut().chain(&mut window.values[base..base + kv_heads]) {
            buffer.drain(..buffer.len() - keep * hd);
        }
        l.o.rows(cpu, &context, rows)
    }
}

/// x += scale ⊙ delta, row by row (`scale` is one value per channel).
fn add_scaled(x: &mut [f32], scale: &[f32], delta: &[f32]) {
    for (x, d) in x.chunks_exact_mut(scale.len()).zip(delta.chunks_exact(scale.len())) {
        x.iter_mut().zip(scale.iter().zip(d)).for_each(|(x, (s, d))| *x += s * d);
    }
}
