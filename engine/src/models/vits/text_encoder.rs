//! The VITS text encoder: phoneme embedding, a transformer whose self-attention adds
//! learned relative-position terms within a window, and a projection to the prior's mean
//! and log-scale per phoneme.

use rayon::prelude::*;

use crate::kernels::activation;
use crate::kernels::conv::ConvShape;
use crate::kernels::gemm::{gemm, View, ViewMut};
use crate::kernels::Cpu;
use crate::models::nn::{ChannelNorm, Conv};
use crate::tensors::{TensorError, Tensors};

use super::{dim, VitsError};

/// VITS's `modules.LayerNorm` epsilon.
const NORM_EPS: f32 = 1e-5;

/// What the encoder hands on, all `[channels, phonemes]`.
pub struct Encoded {
    /// The transformer's output: the duration predictor's input.
    pub hidden: Vec<f32>,
    /// The prior's mean and log standard deviation per phoneme.
    pub mean: Vec<f32>,
    pub log_scale: Vec<f32>,
    pub len: usize,
}

/// Multi-head self-attention with relative-position keys and values shared by all heads.
struct Attention {
    q: Conv,
    k: Conv,
    v: Conv,
    o: Conv,
    /// `[2·window + 1, head_dim]`: relative positions −window..=window.
    rel_k: Vec<f32>,
    rel_v: Vec<f32>,
    heads: usize,
    window: usize,
}

struct Layer {
    attention: Attention,
    norm_1: ChannelNorm,
    ffn_1: Conv,
    ffn_2: Conv,
    norm_2: ChannelNorm,
}

pub struct TextEncoder {
    /// `[symbols, hidden]`.
    embedding: Vec<f32>,
    symbols: usize,
    hidden: usize,
    layers: Vec<Layer>,
    proj: Conv,
}

impl TextEncoder {
    pub fn load(t: &mut Tensors) -> Result<TextEncoder, TensorError> {
        let [symbols, hidden] = dim::<2>(t, "enc_p.emb.weight")?;
        let embedding = t.take("enc_p.emb.weight", &[symbols, hidden])?;
        let [_, relative, head_dim] = dim::<3>(t, "enc_p.encoder.attn_layers.0.emb_rel_k")?;
        let heads = hidden / head_dim.max(1);
        let window = relative / 2;
        let [filter, _, ffn_kernel] = dim::<3>(t, "enc_p.encoder.ffn_layers.0.conv_1.weight")?;
        let mut layers = Vec::new();
        while t.contains(&format!("enc_p.encoder.attn_layers.{}.conv_q.weight", layers.len())) {
            let p = format!("enc_p.encoder.attn_layers.{}", layers.len());
            let square = ConvShape::new(hidden, hidden, 1);
            let attention = Attention {
                q: Conv::same(t, &format!("{p}.conv_q"), square)?,
                k: Conv::same(t, &format!("{p}.conv_k"), square)?,
                v: Conv::same(t, &format!("{p}.conv_v"), square)?,
                o: Conv::same(t, &format!("{p}.conv_o"), square)?,
                rel_k: t.take(&format!("{p}.emb_rel_k"), &[1, relative, head_dim])?,
                rel_v: t.take(&format!("{p}.emb_rel_v"), &[1, relative, head_dim])?,
                heads,
                window,
            };
            let i = layers.len();
            let f = format!("enc_p.encoder.ffn_layers.{i}");
            // Every Piper voice's FFN has kernel 3: Winograd does half the multiply-adds.
            let ffn_1 = Conv::same(t, &format!("{f}.conv_1"), ConvShape::new(hidden, filter, ffn_kernel))?
                .winograd_where_supported();
            let ffn_2 = Conv::same(t, &format!("{f}.conv_2"), ConvShape::new(filter, hidden, ffn_kernel))?
                .winograd_where_supported();
            layers.push(Layer {
                attention,
                norm_1: ChannelNorm::load(t, &format!("enc_p.encoder.norm_layers_1.{i}"), hidden, NORM_EPS)?,
                ffn_1,
                ffn_2,
                norm_2: ChannelNorm::load(t, &format!("enc_p.encoder.norm_layers_2.{i}"), hidden, NORM_EPS)?,
            });
        }
        let [stats, ..] = dim::<3>(t, "enc_p.proj.weight")?;
        let proj = Conv::same(t, "enc_p.proj", ConvShape::new(hidden, stats, 1))?;
        Ok(TextEncoder { embedding, symbols, hidden, layers, proj })
    }

    /// Encodes phoneme ids (each must be below the voice's symbol count).
    pub fn forward(&self, cpu: Cpu, ids: &[i64]) -> Result<Encoded, VitsError> {
        let (len, h) = (ids.len(), self.hidden);
        // Embedding · √hidden, laid out channels-first.
        let scale = (h as f32).sqrt();
        let mut x = vec![0.0; h * len];
        for (t, &id) in ids.iter().enumerate() {
            let row = usize::try_from(id)
                .ok()
                .filter(|&r| r < self.symbols)
                .ok_or(VitsError::PhonemeId { id, symbols: self.symbols })?;
            for (c, &e) in self.embedding[row * h..][..h].iter().enumerate() {
                x[c * len + t] = e * scale;
            }
        }
        for layer in &self.layers {
            let y = layer.attention.forward(cpu, &x, len)?;
            add(&mut x, &y);
            layer.norm_1.apply(&mut x, len);
            let mut y = layer.ffn_1.forward(cpu, &x, len)?;
            y.iter_mut().for_each(|v| *v = v.max(0.0));
            let y = layer.ffn_2.forward(cpu, &y, len)?;
            add(&mut x, &y);
            layer.norm_2.apply(&mut x, len);
        }
        let mut stats = self.proj.forward(cpu, &x, len)?;
        let log_scale = stats.split_off(h * len);
        Ok(Encoded { hidden: x, mean: stats, log_scale, len })
    }
}

impl Attention {
    fn forward(&self, cpu: Cpu, x: &[f32], len: usize) -> Result<Vec<f32>, VitsError> {
        if len == 0 {
            return Ok(Vec::new());
        }
        let mut q = self.q.forward(cpu, x, len)?;
        let k = self.k.forward(cpu, x, len)?;
        let v = self.v.forward(cpu, x, len)?;
        let d = q.len() / len / self.heads;
        // PyTorch scales the query before both products; so do we, for the same rounding.
        let scale = 1.0 / (d as f32).sqrt();
        q.iter_mut().for_each(|v| *v *= scale);
        let (window, relative) = (self.window as isize, 2 * self.window + 1);
        let mut out = vec![0.0; q.len()];
        // The heads are independent: each writes its own rows of `out`, on the pool.
        let head = |(h, out_h): (usize, &mut [f32])| {
            let base = h * d * len;
            let mut scores = vec![0.0; len * len];
            // scores[i, j] = q_i · k_j, with q and k stored [d, len].
            let qt = View::strided(&q, base, len, d, 1, len as isize).unwrap();
            let kt = View::strided(&k, base, len, d, 1, len as isize).unwrap();
            gemm(cpu, qt, kt, ViewMut::new(&mut scores, len, len).unwrap(), false);
            // Plus q_i · rel_k[r] at j = i + r − window: one [len, relative] product.
            let mut rel = vec![0.0; len * relative];
            let rel_k = View::new(&self.rel_k, relative, d).unwrap();
            gemm(cpu, qt, rel_k, ViewMut::new(&mut rel, len, relative).unwrap(), false);
            for (i, row) in scores.chunks_exact_mut(len).enumerate() {
                for (r, &v) in rel[i * relative..][..relative].iter().enumerate() {
                    let j = i as isize + r as isize - window;
                    if (0..len as isize).contains(&j) {
                        row[j as usize] += v;
                    }
                }
                activation::softmax(cpu, row);
            }
            // out[c, i] = Σ_j p[i, j] v[c, j]: V (d × len) times Pᵀ.
            let vh = View::strided(&v, base, d, len, len as isize, 1).unwrap();
            let p = View::new(&scores, len, len).unwrap();
            gemm(cpu, vh, p, ViewMut::new(out_h, d, len).unwrap(), false);
            // Plus Σ_r p[i, i + r − window] rel_v[r][c]: rel_vᵀ (d × relative) times the band
            // of P gathered as [len, relative].
            for (i, row) in rel.chunks_exact_mut(relative).enumerate() {
                for (r, v) in row.iter_mut().enumerate() {
                    let j = i as isize + r as isize - window;
                    *v = if (0..len as isize).contains(&j) { scores[i * len + j as usize] } else { 0.0 };
                }
            }
            let rel_v = View::strided(&self.rel_v, 0, d, relative, 1, d as isize).unwrap();
            let band = View::new(&rel, len, relative).unwrap();
            gemm(cpu, rel_v, band, ViewMut::new(out_h, d, len).unwrap(), true);
        };
        out.par_chunks_mut(d * len).enumerate().for_each(head);
        Ok(self.o.forward(cpu, &out, len)?)
    }
}

fn add(x: &mut [f32], y: &[f32]) {
    x.iter_mut().zip(y).for_each(|(a, b)| *a += b);
}
