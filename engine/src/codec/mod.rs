//! Weight codecs: how a weight matrix is held for the products that stream it. At batch 1
//! an autoregressive step reads every weight once, so bytes per weight set the speed.
//!
//! | codec | argmax-regime tensors become | bytes per weight | grade |
//! | --- | --- | --- | --- |
//! | `bf16` | bf16 | 2 | lossless from bf16, reconstruction from f32 |
//! | `q8` | [`Quant::Q8_0`] | 1.0625 | reconstruction |
//! | `q4` | [`Quant::Q4K`] | 0.5625 | reconstruction |
//! | `auto` | `q4_k`, but `q8_0` for the value and MLP-down projections | about 0.7 | reconstruction |
//!
//! A block format whose block does not divide a tensor's rows falls back to `q8_0`, then
//! to bf16. Each encoded tensor carries its own format ([`Data`]), and the GEMV multiplies
//! it without widening it ([`crate::kernels::quant`]): the codecs are a table of formats,
//! as ggml's are, rather than trait objects, so the hot loop dispatches once per product.
//!
//! Which tensors a codec touches is decided by their [`Regime`] (the codec lessons in the
//! brief): only the projections whose outputs are ranked or mixed again (attention and MLP
//! weights: the argmax regime) are encoded; embeddings and output heads, where one row must
//! keep its identity, and small tensors stay as stored. `auto` keeps 8 bits where an error
//! passes straight into the residual stream without a later normalization or softmax to
//! absorb it (the value and down projections), as llama.cpp's mixed k-quant files do.
//!
//! ```
//! use spiral_engine::checkpoint::Weight;
//! use spiral_engine::codec::{self, Codec, Encoding, Regime};
//! use spiral_engine::kernels::quant::Quant;
//!
//! assert_eq!(codec::regime("talker.model.layers.0.mlp.up_proj.weight", &[3072, 1024]), Regime::Argmax);
//! assert_eq!(codec::regime("talker.codec_head.weight", &[3072, 1024]), Regime::Index);
//! assert_eq!(Codec::Auto.encoding("layers.0.mlp.down_proj.weight", 1024, 3072), Encoding::Blocks(Quant::Q8_0));
//! assert_eq!(Codec::Q4.encoding("layers.0.mlp.up_proj.weight", 3072, 1024), Encoding::Blocks(Quant::Q4K));
//! let w = Weight::from_f32(2, 32, (0..64).map(|i| i as f32 / 64.0).collect());
//! let q = codec::apply(Codec::Q8, "mlp.up_proj.weight", &w);
//! assert_eq!(q.matrix().bytes(), 2 * 34);
//! ```

pub mod blocks;

use crate::checkpoint::{Data, Storage, Weight};
use crate::kernels::bf16;
use crate::kernels::quant::Quant;

/// A way to hold a model's weight matrices.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Codec {
    Bf16,
    Q8,
    Q4,
    Auto,
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

/// What a codec makes of one tensor.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Encoding {
    /// Left as the file stores it.
    Stored,
    /// Rounded to bf16.
    Bf16,
    /// Encoded in a block format.
    Blocks(Quant),
}

/// How faithful an encoding is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Grade {
    /// Every value comes back exactly.
    Lossless,
    /// Values come back approximately, each from its own row's data.
    Reconstruction,
}

impl Encoding {
    /// The name in files, tables and messages.
    pub fn name(self) -> &'static str {
        match self {
            Encoding::Stored => "stored",
            Encoding::Bf16 => "bf16",
            Encoding::Blocks(q) => q.name(),
        }
    }

    /// The grade of this encoding of a tensor stored as `source` (bf16 of bf16 is exact).
    pub fn grade(self, source: &Data) -> Grade {
        match (self, source) {
            (Encoding::Stored, _) | (Encoding::Bf16, Data::Bf16(_)) => Grade::Lossless,
            _ => Grade::Reconstruction,
        }
    }
}

impl Codec {
    pub const ALL: [Codec; 4] = [Codec::Bf16, Codec::Q8, Codec::Q4, Codec::Auto];

    pub fn name(self) -> &'static str {
        match self {
            Codec::Bf16 => "bf16",
            Codec::Q8 => "q8",
            Codec::Q4 => "q4",
            Codec::Auto => "auto",
        }
    }

    /// The codec called `name`, if there is one.
    pub fn parse(name: &str) -> Option<Codec> {
        Codec::ALL.into_iter().find(|c| c.name() == name)
    }

    /// What this codec makes of tensor `name`, a `rows` × `cols` matrix.
    pub fn encoding(self, name: &str, rows: usize, cols: usize) -> Encoding {
        if regime(name, &[rows, cols]) != Regime::Argmax {
            return Encoding::Stored;
        }
        let blocks = |q: Quant| {
            [q, Quant::Q8_0]
                .into_iter()
                .find(|q| cols.is_multiple_of(q.block()))
                .map_or(Encoding::Bf16, Encoding::Blocks)
        };
        match self {
            Codec::Bf16 => Encoding::Bf16,
            Codec::Q8 => blocks(Quant::Q8_0),
            Codec::Q4 => blocks(Quant::Q4K),
            Codec::Auto if ["v_proj", "down_proj"].iter().any(|k| name.contains(k)) => blocks(Quant::Q8_0),
            Codec::Auto => blocks(Quant::Q4K),
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

/// `w` (tensor `name`) as `codec` holds it ([`Codec::encoding`]); a weight a file already
/// holds encoded stays as it is (encoding it again would only add error).
pub fn apply(codec: Codec, name: &str, w: &Weight) -> Weight {
    if let Data::Quant(..) = w.data() {
        return w.clone();
    }
    encode(codec.encoding(name, w.rows(), w.cols()), w)
}

/// `w` in `encoding`.
pub fn encode(encoding: Encoding, w: &Weight) -> Weight {
    match encoding {
        Encoding::Stored => w.clone(),
        Encoding::Bf16 => to_bf16(w),
        Encoding::Blocks(q) => blocks::encode(q, w).unwrap_or_else(|| w.clone()),
    }
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
