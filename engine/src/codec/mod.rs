//! Weight codecs: how a weight matrix is held for the products that stream it. At batch 1
//! an autoregressive step reads every weight once, so bytes per weight set the speed.
//!
//! | codec | bytes per weight | grade | GEMV reads |
//! | --- | --- | --- | --- |
//! | `bf16` | 2 | reconstruction (lossless from bf16) | the bf16 values, widened in registers |
//! | `q8` | 1.125 | reconstruction | i8 blocks of 32 with an f32 scale; activations quantized the same way, integer dots (VNNI) |
//!
//! Which tensors a codec touches is decided by their [`Regime`] (the codec lessons in the
//! brief): only the projections whose outputs are ranked or mixed again (attention and MLP
//! weights: the argmax regime) are encoded; embeddings and output heads, where one row must
//! keep its identity, and small tensors stay as stored.
//!
//! ```
//! use spiral_engine::checkpoint::Weight;
//! use spiral_engine::codec::{self, Codec, Regime};
//!
//! assert_eq!(codec::regime("talker.model.layers.0.mlp.up_proj.weight", &[3072, 1024]), Regime::Argmax);
//! assert_eq!(codec::regime("talker.codec_head.weight", &[3072, 1024]), Regime::Index);
//! let w = Weight::from_f32(2, 32, (0..64).map(|i| i as f32 / 64.0).collect());
//! let q = codec::apply(Codec::Q8, "mlp.down_proj.weight", &w);
//! assert_eq!(q.matrix().bytes(), 64 + 2 * 4);
//! ```

pub mod q8;

use crate::checkpoint::{Data, Storage, Weight};
use crate::kernels::bf16;

/// A way to hold weight matrices.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Codec {
    Bf16,
    Q8,
}

/// How tensors are used, which decides what a codec may do to them.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Regime {
    /// Attention and MLP projections: their outputs are mixed and ranked again, so small
    /// reconstruction errors average out.
    Argmax,
    /// Embeddings and output heads: each row is looked up or scored on its own and must keep
    /// its identity (vocabulary rows are nearly orthogonal).
    Index,
    /// Norms, biases and other vectors: a rounding error there reaches every output, and
    /// they are too small to matter for speed, so they stay exact.
    Passthrough,
}

impl Codec {
    pub const ALL: [Codec; 2] = [Codec::Bf16, Codec::Q8];

    pub fn name(self) -> &'static str {
        match self {
            Codec::Bf16 => "bf16",
            Codec::Q8 => "q8",
        }
    }

    /// The codec called `name`, if there is one.
    pub fn parse(name: &str) -> Option<Codec> {
        Codec::ALL.into_iter().find(|c| c.name() == name)
    }

    /// `w` encoded, or `None` where this codec cannot hold its shape (q8 needs rows of
    /// whole blocks).
    pub fn encode(self, w: &Weight) -> Option<Weight> {
        match self {
            Codec::Bf16 => Some(to_bf16(w)),
            Codec::Q8 => q8::encode(w),
        }
    }
}

/// The regime of tensor `name` of `shape`, from its role in Hugging Face naming.
pub fn regime(name: &str, shape: &[usize]) -> Regime {
    if shape.len() < 2 {
        Regime::Passthrough
    } else if ["embedding", "embed_tokens", "lm_head", "codec_head", "_codebook"].iter().any(|k| name.contains(k)) {
        Regime::Index
    } else {
        Regime::Argmax
    }
}

/// `w` (tensor `name`) as `codec` holds it if it is in the argmax regime and the codec can
/// hold its shape, else as stored.
pub fn apply(codec: Codec, name: &str, w: &Weight) -> Weight {
    if regime(name, &[w.rows(), w.cols()]) != Regime::Argmax {
        return w.clone();
    }
    codec.encode(w).unwrap_or_else(|| w.clone())
}

/// `w` rounded to bf16 (unchanged if it already is).
fn to_bf16(w: &Weight) -> Weight {
    if let Data::Bf16(_) = w.data() {
        return w.clone();
    }
    let mut bits = vec![0u16; w.rows() * w.cols()];
    let mut row = vec![0.0; w.cols()];
    for (r, out) in bits.chunks_exact_mut(w.cols()).enumerate() {
        w.row(r, &mut row);
        bf16::from_f32(&row, out);
    }
    Weight::new(w.rows(), w.cols(), Data::Bf16(Storage::Owned(bits))).expect("rows × cols values")
}
