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

use crate::checkpoint::{Checkpoint, CheckpointError};
use crate::kernels::{activation, Cpu};
use crate::models::qwen3::transformer::{append_kv, attend, rms_rows, Linear, Projections, Rope};

use super::config::DecoderConfig;

#[derive(Clone, Debug)]
struct Layer {
    input_norm: Vec<f32>,
    proj: Projections,
    attn_scale: Vec<f32>,
    post_norm: Vec<f32>,
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
        let widths = c.widths();
        let vector = |name: String| ckpt.f32(&name, &[h]);
        let layers = (0..c.num_hidden_layers)
            .map(|i| {
                let p = format!("{prefix}.layers.{i}");
                Ok(Layer {
                    input_norm: vector(format!("{p}.input_layernorm.weight"))?,
                    proj: Projections::load(ckpt, &p, widths)?,
                    attn_scale: vector(format!("{p}.self_attn_layer_scale.scale"))?,
                    post_norm: vector(format!("{p}.post_attention_layernorm.weight"))?,
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
            heads: c.num_attention_heads,
            kv_heads: c.num_key_value_heads,
            head_dim: hd,
            window: c.sliding_window,
        })
    }

    /// Bytes of weights one call reads.
    pub fn bytes(&self) -> usize {
        self.layers.iter().map(|l| l.proj.bytes()).sum::<usize>() + self.input_proj.bytes() + self.output_proj.bytes()
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
            rms_rows(cpu, &x, &layer.input_norm, self.eps, &mut normed);
            let attn = self.attention(cpu, i, layer, &normed, rows, window);
            add_scaled(&mut x, &layer.attn_scale, &attn);
            rms_rows(cpu, &x, &layer.post_norm, self.eps, &mut normed);
            let mut gate = layer.proj.gate.rows(cpu, &normed, rows);
            let up = layer.proj.up.rows(cpu, &normed, rows);
            activation::silu(cpu, &mut gate);
            gate.iter_mut().zip(&up).for_each(|(g, u)| *g *= u);
            add_scaled(&mut x, &layer.mlp_scale, &layer.proj.down.rows(cpu, &gate, rows));
        }
        window.next += rows;
        window.held = (window.held + rows).min(self.window - 1);
        rms_rows(cpu, &x, &self.norm, self.eps, &mut normed);
        self.output_proj.rows(cpu, &normed, rows)
    }

    /// Self-attention of the new rows over the window and themselves; returns the output
    /// projection and keeps the layer's last `window − 1` keys and values.
    fn attention(&self, cpu: Cpu, index: usize, l: &Layer, x: &[f32], rows: usize, window: &mut Window) -> Vec<f32> {
        let (hd, heads, kv_heads) = (self.head_dim, self.heads, self.kv_heads);
        let mut q = l.proj.q.rows(cpu, x, rows);
        let mut k = l.proj.k.rows(cpu, x, rows);
        let v = l.proj.v.rows(cpu, x, rows);
        let (mut cos, mut sin) = (vec![0.0; hd / 2], vec![0.0; hd / 2]);
        for r in 0..rows {
            self.rope.angles(window.next + r, &mut cos, &mut sin);
            let q_row = q[r * heads * hd..][..heads * hd].chunks_exact_mut(hd);
            let k_row = k[r * kv_heads * hd..][..kv_heads * hd].chunks_exact_mut(hd);
            q_row.chain(k_row).for_each(|head| activation::rope(cpu, head, &cos, &sin));
        }
        let layer = index * kv_heads..(index + 1) * kv_heads;
        append_kv(&mut window.keys[layer.clone()], &mut window.values[layer.clone()], &k, &v, hd);
        // Row r is cached position held + r; it sees the `span` positions up to itself.
        let (held, span) = (window.held, self.window);
        let context = attend(cpu, &q, heads, hd, &window.keys[layer.clone()], &window.values[layer.clone()], |r| {
            (held + r + 1).saturating_sub(span)..held + r + 1
        });
        // Keep what the next positions can see.
        let keep = (held + rows).min(span - 1);
        for buffer in window.keys[layer.clone()].iter_mut().chain(&mut window.values[layer]) {
            buffer.drain(..buffer.len() - keep * hd);
        }
        l.proj.o.rows(cpu, &context, rows)
    }
}

/// x += scale ⊙ delta, row by row (`scale` is one value per channel).
fn add_scaled(x: &mut [f32], scale: &[f32], delta: &[f32]) {
    for (x, d) in x.chunks_exact_mut(scale.len()).zip(delta.chunks_exact(scale.len())) {
        x.iter_mut().zip(scale.iter().zip(d)).for_each(|(x, (s, d))| *x += s * d);
    }
}
