//! The Qwen3 decoder stack both the talker and the code predictor are made of: pre-norm
//! layers of grouped-query attention (RMSNorm on each query and key head, rotary
//! positions, a KV cache) and a SiLU-gated MLP, then a final RMSNorm.
//!
//! A call takes any number of new positions: the prompt in one call (products as GEMMs),
//! then one position per step (products as GEMVs, which stream each weight once).

use rayon::prelude::*;

use crate::checkpoint::{Checkpoint, CheckpointError, Data, Weight};
use crate::kernels::gemm::{self, View, ViewMut};
use crate::kernels::gemv;
use crate::kernels::{activation, vector, Cpu};

use super::config::StackConfig;

/// Up to this many positions a product reads the weights once for all of them (batched
/// GEMV); more go through the GEMM, whose packing then pays for itself.
const GEMV_ROWS: usize = 64;

/// y = x·Wᵀ (+ b) for a `[out, in]` weight.
#[derive(Clone, Debug)]
pub struct Linear {
    weight: Weight,
    bias: Option<Vec<f32>>,
}

impl Linear {
    /// `{name}.weight` of shape `[out, inp]`, and `{name}.bias` if `bias`; the weight is
    /// held resident (every step streams it).
    pub fn load(ckpt: &Checkpoint, name: &str, out: usize, inp: usize, bias: bool) -> Result<Linear, CheckpointError> {
        let weight = ckpt.resident_matrix(&format!("{name}.weight"), out, inp)?;
        let bias = if bias { Some(ckpt.f32(&format!("{name}.bias"), &[out])?) } else { None };
        Ok(Linear { weight, bias })
    }

    pub fn new(weight: Weight, bias: Option<Vec<f32>>) -> Linear {
        Linear { weight, bias }
    }

    pub fn out_features(&self) -> usize {
        self.weight.rows()
    }

    pub fn in_features(&self) -> usize {
        self.weight.cols()
    }

    /// Bytes of weights one product reads.
    pub fn bytes(&self) -> usize {
        self.weight.matrix().bytes()
    }

    /// `out` (`rows` × out_features) = `x` (`rows` × in_features) · Wᵀ + b.
    pub fn forward(&self, cpu: Cpu, x: &[f32], rows: usize, out: &mut [f32]) {
        let (n, k) = (self.weight.rows(), self.weight.cols());
        assert_eq!((x.len(), out.len()), (rows * k, rows * n), "linear: wrong buffer sizes");
        let a = || View::new(x, rows, k).expect("sizes checked above");
        match self.weight.data() {
            _ if rows <= GEMV_ROWS => gemv::gemv_batch(cpu, &self.weight.matrix(), x, rows, out),
            Data::F32(w) => gemm::gemm(
                cpu,
                a(),
                View::new(w, n, k).expect("rows × cols"),
                ViewMut::new(out, rows, n).expect("checked"),
                false,
            ),
            Data::Bf16(w) => gemm::gemm(
                cpu,
                a(),
                View::new(w, n, k).expect("rows × cols"),
                ViewMut::new(out, rows, n).expect("checked"),
                false,
            ),
            // Many positions: encoded weights decoded to f32 once (rows across the pool) and
            // one GEMM, rather than batches of products that unpack every row per position.
            Data::Quant(..) | Data::Palette { .. } => {
                let mut wide = vec![0.0; n * k];
                wide.par_chunks_mut(k).enumerate().for_each(|(r, row)| self.weight.row(r, row));
                gemm::gemm(
                    cpu,
                    a(),
                    View::new(&wide, n, k).expect("rows × cols"),
                    ViewMut::new(out, rows, n).expect("checked"),
                    false,
                )
            }
        }
        self.add_bias(out);
    }

    /// [`forward`](Self::forward) of several linears over the same `x`, each output what
    /// its own call gives; one position goes through [`gemv::gemv_many`] (one quantization
    /// of `x`, one pass over the thread pool for all of them).
    pub fn forward_many(cpu: Cpu, x: &[f32], rows: usize, products: &mut [(&Linear, &mut [f32])]) {
        if rows != 1 {
            products.iter_mut().for_each(|(l, out)| l.forward(cpu, x, rows, out));
            return;
        }
        let matrices: Vec<gemv::Matrix> = products.iter().map(|(l, _)| l.weight.matrix()).collect();
        let mut jobs: Vec<(&gemv::Matrix, &mut [f32])> =
            matrices.iter().zip(products.iter_mut()).map(|(m, (_, out))| (m, &mut **out)).collect();
        gemv::gemv_many(cpu, x, &mut jobs);
        products.iter_mut().for_each(|(l, out)| l.add_bias(out));
    }

    /// `rows` × out_features from `x`, every output row bit for bit the GEMV of that input
    /// row alone, however many come together: for streams whose output must not depend on
    /// how their input was cut. The weights are still read once per call.
    pub fn rows(&self, cpu: Cpu, x: &[f32], rows: usize) -> Vec<f32> {
        let mut out = vec![0.0; rows * self.weight.rows()];
        if rows > 0 {
            gemv::gemv_batch(cpu, &self.weight.matrix(), x, rows, &mut out);
            self.add_bias(&mut out);
        }
        out
    }

    fn add_bias(&self, out: &mut [f32]) {
        if let Some(b) = &self.bias {
            out.chunks_exact_mut(b.len()).for_each(|row| row.iter_mut().zip(b).for_each(|(y, b)| *y += b));
        }
    }
}

/// Rotary position embedding with the default inverse frequencies θ^(−2i/d).
#[derive(Clone, Debug)]
pub struct Rope {
    inv_freq: Vec<f32>,
}

impl Rope {
    pub fn new(head_dim: usize, theta: f64) -> Rope {
        // f32 as the reference computes it: 1 / θ^(2i/d) with the exponent in f32.
        let inv_freq = (0..head_dim / 2).map(|i| (1.0 / theta.powf((2 * i) as f32 as f64 / head_dim as f64)) as f32);
        Rope { inv_freq: inv_freq.collect() }
    }

    /// cos and sin of every pair's angle at `position`.
    pub(crate) fn angles(&self, position: usize, cos: &mut [f32], sin: &mut [f32]) {
        for ((c, s), &f) in cos.iter_mut().zip(sin.iter_mut()).zip(&self.inv_freq) {
            let angle = (position as f32 * f) as f64;
            (*c, *s) = (angle.cos() as f32, angle.sin() as f32);
        }
    }
}

/// Keys and values of every position seen so far, per layer and key-value head, each a
/// run of `positions × head_dim` values.
#[derive(Clone, Debug, Default)]
pub struct Cache {
    keys: Vec<Vec<f32>>,
    values: Vec<Vec<f32>>,
    len: usize,
}

impl Cache {
    /// Positions held.
    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Forgets every position, keeping the memory.
    pub fn clear(&mut self) {
        self.keys.iter_mut().chain(self.values.iter_mut()).for_each(Vec::clear);
        self.len = 0;
    }
}

/// The widths of a decoder layer's projections.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Widths {
    pub hidden: usize,
    pub heads: usize,
    pub kv_heads: usize,
    pub head_dim: usize,
    pub intermediate: usize,
}

impl Widths {
    /// The widths a Hugging Face config gives, where an absent `head_dim` means
    /// `hidden / heads` (both the talker's stacks and the speech decoder read it this way).
    pub fn from_config(
        hidden: usize,
        heads: usize,
        kv_heads: usize,
        head_dim: Option<usize>,
        intermediate: usize,
    ) -> Self {
        let head_dim = head_dim.unwrap_or(hidden / heads.max(1));
        Widths { hidden, heads, kv_heads, head_dim, intermediate }
    }

    /// Each projection's module name under a layer (Hugging Face's Qwen3 naming, which the
    /// speech decoder shares) and its weight's `[out, in]` shape.
    pub fn projections(&self) -> [(&'static str, [usize; 2]); 7] {
        let (h, i) = (self.hidden, self.intermediate);
        let (q, kv) = (self.heads * self.head_dim, self.kv_heads * self.head_dim);
        [
            ("self_attn.q_proj", [q, h]),
            ("self_attn.k_proj", [kv, h]),
            ("self_attn.v_proj", [kv, h]),
            ("self_attn.o_proj", [h, q]),
            ("mlp.gate_proj", [i, h]),
            ("mlp.up_proj", [i, h]),
            ("mlp.down_proj", [h, i]),
        ]
    }
}

/// A decoder layer's attention and MLP projections (no biases).
#[derive(Clone, Debug)]
pub(crate) struct Projections {
    pub q: Linear,
    pub k: Linear,
    pub v: Linear,
    pub o: Linear,
    pub gate: Linear,
    pub up: Linear,
    pub down: Linear,
}

impl Projections {
    /// The projections of the layer under `prefix` (e.g. `talker.model.layers.3`).
    pub fn load(ckpt: &Checkpoint, prefix: &str, widths: Widths) -> Result<Projections, CheckpointError> {
        let [q, k, v, o, gate, up, down] = widths
            .projections()
            .map(|(name, [out, inp])| Linear::load(ckpt, &format!("{prefix}.{name}"), out, inp, false));
        Ok(Projections { q: q?, k: k?, v: v?, o: o?, gate: gate?, up: up?, down: down? })
    }

    /// Bytes of weights one pass reads.
    pub fn bytes(&self) -> usize {
        [&self.q, &self.k, &self.v, &self.o, &self.gate, &self.up, &self.down].iter().map(|w| w.bytes()).sum()
    }
}

/// out = RMSNorm of each row of `x` (rows as wide as `weight`).
pub(crate) fn rms_rows(cpu: Cpu, x: &[f32], weight: &[f32], eps: f32, out: &mut [f32]) {
    let n = weight.len();
    for (x, out) in x.chunks_exact(n).zip(out.chunks_exact_mut(n)) {
        activation::rms_norm(cpu, x, weight, eps, out);
    }
}

/// Appends `rows` positions of keys `k` and values `v` (rows × kv_heads × head_dim) to one
/// layer's cache: `keys[g]` and `values[g]` for key-value head g.
pub(crate) fn append_kv(keys: &mut [Vec<f32>], values: &mut [Vec<f32>], k: &[f32], v: &[f32], head_dim: usize) {
    let kv_heads = keys.len();
    for (g, (keys, values)) in keys.iter_mut().zip(values.iter_mut()).enumerate() {
        for (k, v) in k.chunks_exact(kv_heads * head_dim).zip(v.chunks_exact(kv_heads * head_dim)) {
            keys.extend_from_slice(&k[g * head_dim..][..head_dim]);
            values.extend_from_slice(&v[g * head_dim..][..head_dim]);
        }
    }
}

/// Scaled dot-product attention of `q` (rows × heads × head_dim) over one layer's cached
/// `keys` and `values` (one run per key-value head, positions × head_dim; query head h reads
/// key-value head h / (heads / kv_heads)), row r attending to cached positions `visible(r)`.
/// Returns the context, rows × heads × head_dim; heads run on the pool.
pub(crate) fn attend(
    cpu: Cpu,
    q: &[f32],
    heads: usize,
    head_dim: usize,
    keys: &[Vec<f32>],
    values: &[Vec<f32>],
    visible: impl Fn(usize) -> std::ops::Range<usize> + Sync,
) -> Vec<f32> {
    let group = heads / keys.len();
    let scale = (head_dim as f32).powf(-0.5);
    let mut context = vec![0.0; q.len()];
    context.par_chunks_mut(head_dim).enumerate().for_each(|(i, ctx)| {
        let (r, h) = (i / heads, i % heads);
        let (keys, values) = (&keys[h / group], &values[h / group]);
        let span = visible(r);
        let span = span.start * head_dim..span.end * head_dim;
        let query = &q[i * head_dim..][..head_dim];
        let mut scores: Vec<f32> =
            keys[span.clone()].chunks_exact(head_dim).map(|key| vector::dot(cpu, query, key) * scale).collect();
        activation::softmax(cpu, &mut scores);
        ctx.fill(0.0);
        for (p, value) in scores.iter().zip(values[span].chunks_exact(head_dim)) {
            vector::axpy(cpu, *p, value, ctx);
        }
    });
    context
}

#[derive(Clone, Debug)]
struct Layer {
    input_norm: Vec<f32>,
    proj: Projections,
    q_norm: Vec<f32>,
    k_norm: Vec<f32>,
    post_norm: Vec<f32>,
}

/// A decoder stack with its final norm.
#[derive(Clone, Debug)]
pub struct Stack {
    layers: Vec<Layer>,
    norm: Vec<f32>,
    eps: f32,
    rope: Rope,
    hidden: usize,
    heads: usize,
    kv_heads: usize,
    head_dim: usize,
}

impl Stack {
    /// The stack under `prefix` (e.g. `talker.model`).
    pub fn load(ckpt: &Checkpoint, prefix: &str, c: &StackConfig) -> Result<Stack, CheckpointError> {
        let (h, hd) = (c.hidden_size, c.head_dim());
        let widths = c.widths();
        let layers = (0..c.num_hidden_layers)
            .map(|i| {
                let p = format!("{prefix}.layers.{i}");
                Ok(Layer {
                    input_norm: ckpt.f32(&format!("{p}.input_layernorm.weight"), &[h])?,
                    proj: Projections::load(ckpt, &p, widths)?,
                    q_norm: ckpt.f32(&format!("{p}.self_attn.q_norm.weight"), &[hd])?,
                    k_norm: ckpt.f32(&format!("{p}.self_attn.k_norm.weight"), &[hd])?,
                    post_norm: ckpt.f32(&format!("{p}.post_attention_layernorm.weight"), &[h])?,
                })
            })
            .collect::<Result<Vec<_>, CheckpointError>>()?;
        Ok(Stack {
            layers,
            norm: ckpt.f32(&format!("{prefix}.norm.weight"), &[h])?,
            eps: c.rms_norm_eps,
            rope: Rope::new(hd, c.rope_theta),
            hidden: h,
            heads: c.num_attention_heads,
            kv_heads: c.num_key_value_heads,
            head_dim: hd,
        })
    }

    pub fn hidden_size(&self) -> usize {
        self.hidden
    }

    /// Bytes of weights one position's pass reads.
    pub fn bytes(&self) -> usize {
        self.layers.iter().map(|l| l.proj.bytes()).sum()
    }

    /// An empty cache for this stack.
    pub fn cache(&self) -> Cache {
        let n = self.layers.len() * self.kv_heads;
        Cache { keys: vec![Vec::new(); n], values: vec![Vec::new(); n], len: 0 }
    }

    /// Runs `rows` new positions (`x`, rows × hidden, replaced by the normed output) after
    /// the ones `cache` holds, and adds them to it.
    pub fn forward(&self, cpu: Cpu, x: &mut [f32], rows: usize, cache: &mut Cache) {
        assert_eq!(x.len(), rows * self.hidden, "stack input is rows × hidden");
        let mut normed = vec![0.0; x.len()];
        let mut delta = vec![0.0; x.len()];
        for (i, layer) in self.layers.iter().enumerate() {
            rms_rows(cpu, x, &layer.input_norm, self.eps, &mut normed);
            self.attention(cpu, i, layer, &normed, rows, cache, &mut delta);
            x.iter_mut().zip(&delta).for_each(|(x, d)| *x += d);
            rms_rows(cpu, x, &layer.post_norm, self.eps, &mut normed);
            mlp(cpu, &layer.proj, &normed, rows, &mut delta);
            x.iter_mut().zip(&delta).for_each(|(x, d)| *x += d);
        }
        cache.len += rows;
        normed.copy_from_slice(x);
        rms_rows(cpu, &normed, &self.norm, self.eps, x);
    }

    /// Self-attention of the new rows over the cache and themselves (causal); writes the
    /// output projection to `out` and the rows' keys and values to the cache.
    #[allow(clippy::too_many_arguments)]
    fn attention(&self, cpu: Cpu, index: usize, l: &Layer, x: &[f32], rows: usize, cache: &mut Cache, out: &mut [f32]) {
        let (hd, heads, kv_heads) = (self.head_dim, self.heads, self.kv_heads);
        let mut q = vec![0.0; rows * heads * hd];
        let mut k = vec![0.0; rows * kv_heads * hd];
        let mut v = vec![0.0; rows * kv_heads * hd];
        Linear::forward_many(cpu, x, rows, &mut [(&l.proj.q, &mut q), (&l.proj.k, &mut k), (&l.proj.v, &mut v)]);
        let (mut cos, mut sin) = (vec![0.0; hd / 2], vec![0.0; hd / 2]);
        let mut tmp = vec![0.0; hd];
        for r in 0..rows {
            self.rope.angles(cache.len + r, &mut cos, &mut sin);
            for (heads, norm) in [
                (&mut q[r * heads * hd..][..heads * hd], &l.q_norm),
                (&mut k[r * kv_heads * hd..][..kv_heads * hd], &l.k_norm),
            ] {
                for head in heads.chunks_exact_mut(hd) {
                    tmp.copy_from_slice(head);
                    activation::rms_norm(cpu, &tmp, norm, self.eps, head);
                    activation::rope(cpu, head, &cos, &sin);
                }
            }
        }
        let layer = index * kv_heads..(index + 1) * kv_heads;
        append_kv(&mut cache.keys[layer.clone()], &mut cache.values[layer.clone()], &k, &v, hd);
        let past = cache.len;
        let context = attend(cpu, &q, heads, hd, &cache.keys[layer.clone()], &cache.values[layer], |r| 0..past + r + 1);
        l.proj.o.forward(cpu, &context, rows, out);
    }
}

/// down(silu(gate·x) ⊙ up·x).
fn mlp(cpu: Cpu, l: &Projections, x: &[f32], rows: usize, out: &mut [f32]) {
    let n = l.gate.out_features();
    let mut gate = vec![0.0; rows * n];
    let mut up = vec![0.0; rows * n];
    Linear::forward_many(cpu, x, rows, &mut [(&l.gate, &mut gate), (&l.up, &mut up)]);
    activation::silu(cpu, &mut gate);
    gate.iter_mut().zip(&up).for_each(|(g, u)| *g *= u);
    l.down.forward(cpu, &gate, rows, out);
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kernels::bf16;
    use crate::kernels::testing::{available, random};

    fn bf16_weight(n: usize, k: usize, seed: u64) -> Weight {
        let bits: Vec<u8> = random(n * k, seed).iter().flat_map(|&v| bf16::scalar::narrow(v).to_le_bytes()).collect();
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("model.safetensors");
        let view = safetensors::tensor::TensorView::new(safetensors::Dtype::BF16, vec![n, k], &bits).unwrap();
        safetensors::serialize_to_file(vec![("w".to_string(), view)], None, &file).unwrap();
        Checkpoint::open(&file).unwrap().resident_matrix("w", n, k).unwrap()
    }

    /// Each row of a several-row call equals the GEMV of that row alone, bit for bit, and
    /// the batched product agrees with it to rounding.
    #[test]
    fn rows_are_each_the_gemv_of_that_row_alone_on_every_path() {
        let cases = [
            (Linear::new(Weight::from_f32(37, 45, random(37 * 45, 1)), Some(random(37, 3))), 9),
            (Linear::new(Weight::from_f32(300, 256, random(300 * 256, 4)), None), 5),
            (Linear::new(bf16_weight(19, 70, 5), Some(random(19, 6))), 12),
        ];
        for (lin, rows) in &cases {
            let (n, k) = (lin.out_features(), lin.in_features());
            let x = random(rows * k, 2);
            for cpu in available() {
                let all = lin.rows(cpu, &x, *rows);
                let mut product = vec![0.0; rows * n];
                lin.forward(cpu, &x, *rows, &mut product);
                for (i, row) in x.chunks_exact(k).enumerate() {
                    let mut want = vec![0.0; n];
                    gemv::gemv(cpu, &lin.weight.matrix(), row, &mut want);
                    lin.add_bias(&mut want);
                    assert_eq!(&all[i * n..][..n], &want[..], "{} row {i}", cpu.isa());
                    assert_eq!(lin.rows(cpu, row, 1), want, "{} row {i} alone", cpu.isa());
                    for (p, w) in product[i * n..][..n].iter().zip(&want) {
                        assert!((p - w).abs() <= 1e-4 * (1.0 + w.abs()), "{} row {i}: {p} vs {w}", cpu.isa());
                    }
                }
            }
            assert!(lin.rows(Cpu::best(), &[], 0).is_empty());
        }
    }

    /// A prompt longer than the batched GEMV takes over block-format weights is the GEMM of
    /// their decoded values, bit for bit.
    #[test]
    fn long_prompts_over_blocks_multiply_the_decoded_weights() {
        let (n, k, rows) = (40, 256, GEMV_ROWS + 6);
        let f32_weight = Weight::from_f32(n, k, random(n * k, 7));
        let bias = Some(random(n, 8));
        let x = random(rows * k, 9);
        for codec in [crate::codec::Codec::Q8, crate::codec::Codec::Q4] {
            let encoded = crate::codec::apply(codec, "mlp.up_proj.weight", &f32_weight);
            assert!(matches!(encoded.data(), Data::Quant(..)));
            let mut decoded = vec![0.0; n * k];
            decoded.chunks_exact_mut(k).enumerate().for_each(|(r, row)| encoded.row(r, row));
            let (blocks, wide) =
                (Linear::new(encoded, bias.clone()), Linear::new(Weight::from_f32(n, k, decoded), bias.clone()));
            for cpu in available() {
                let (mut got, mut want) = (vec![0.0; rows * n], vec![0.0; rows * n]);
                blocks.forward(cpu, &x, rows, &mut got);
                wide.forward(cpu, &x, rows, &mut want);
                assert_eq!(got, want, "{codec:?} {}", cpu.isa());
            }
        }
    }
}
