//! Weight codecs: how a weight matrix is held for the products that stream it. At batch 1
//! an autoregressive step reads every weight once, so bytes per weight set the speed.
//!
//! | codec | argmax-regime tensors become | bytes per weight | grade |
//! | --- | --- | --- | --- |
//! | `bf16` | bf16 | 2 | lossless from bf16, reconstruction from f32 |
//! | `q8` | [`Quant::Q8_0`] | 1.0625 | reconstruction |
//! | `q4` | [`Quant::Q4K`] | 0.5625 | reconstruction |
//! | `auto` | `q4_k`, but [`Quant::Q6K`] for the value and MLP-down projections and `q8_0` for a voice's vocoder | about 0.63 | reconstruction |
//! | `palette` | two-stage residual VQ of groups of 4, a scale per row ([`palette`]); `q8_0` where the codebooks would not leave it under a byte per weight | 0.5 + 8 KiB per tensor | lookup |
//!
//! Where 256 does not divide a row's length, `q4_k` falls back to [`Quant::Q4_0`] (also
//! 4.5 bits, blocks of 32, one scale and no min each) and `q6_k` to `q8_0`; where 32 does
//! not, any block format falls back to bf16. Each encoded tensor carries its own format
//! ([`Data`]), and the GEMV multiplies it without widening it ([`crate::kernels::quant`]):
//! the codecs are a table of formats, as ggml's are, rather than trait objects, so the hot
//! loop dispatches once per product.
//!
//! Which tensors a codec touches is decided by their [`Regime`] (the codec lessons in the
//! brief): only the projections whose outputs are ranked or mixed again (attention and MLP
//! weights: the argmax regime) are encoded; embeddings and output heads, where one row must
//! keep its identity, and small tensors stay as stored. `auto` keeps more bits where an
//! error passes straight into the residual stream without a later normalization or softmax
//! to absorb it (the value and down projections: 6.56 bits, as llama.cpp's Q4_K_M files
//! hold them), and 8 bits in a Piper voice's vocoder (`dec.`), whose errors go straight into
//! the waveform.
//!
//! ```
//! use spiral_engine::checkpoint::Weight;
//! use spiral_engine::codec::{self, Codec, Encoding, Grade, Regime};
//! use spiral_engine::kernels::quant::Quant;
//!
//! assert_eq!(codec::regime("talker.model.layers.0.mlp.up_proj.weight", &[3072, 1024]), Regime::Argmax);
//! assert_eq!(codec::regime("talker.codec_head.weight", &[3072, 1024]), Regime::Index);
//! assert_eq!(Codec::Auto.encoding("layers.0.mlp.down_proj.weight", 1024, 3072), Encoding::Blocks(Quant::Q6K));
//! assert_eq!(Codec::Q4.encoding("layers.0.mlp.up_proj.weight", 3072, 1024), Encoding::Blocks(Quant::Q4K));
//! let w = Weight::from_f32(2, 32, (0..64).map(|i| i as f32 / 64.0).collect());
//! let q = codec::apply(Codec::Q8, "mlp.up_proj.weight", &w);
//! assert_eq!(q.matrix().bytes(), 2 * 34);
//! assert_eq!(Encoding::Blocks(Quant::Q8_0).grade(w.data()), Grade::Reconstruction);
//! assert_eq!(Encoding::Palette.grade(w.data()), Grade::Lookup);
//! assert_eq!(Encoding::Stored.grade(w.data()), Grade::Lossless);
//! ```

pub mod blocks;
pub mod palette;

use crate::checkpoint::{Data, Storage, Weight};
use crate::kernels::bf16;
use crate::kernels::palette as lookup;
use crate::kernels::quant::Quant;
use crate::tensors::Tensors;

/// A way to hold a model's weight matrices.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Codec {
    Bf16,
    Q8,
    Q4,
    Auto,
    Palette,
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
    /// Residual vector quantization ([`palette`]).
    Palette,
}

/// How faithful an encoding is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Grade {
    /// Every value comes back exactly.
    Lossless,
    /// Values come back approximately, each from its own row's data.
    Reconstruction,
    /// Values come back approximately, from entries of a table the rows share.
    Lookup,
}

impl Encoding {
    /// The name in files, tables and messages.
    pub fn name(self) -> &'static str {
        match self {
            Encoding::Stored => "stored",
            Encoding::Bf16 => "bf16",
            Encoding::Blocks(q) => q.name(),
            Encoding::Palette => "palette",
        }
    }

    /// The grade of this encoding of a tensor stored as `source` (bf16 of bf16 is exact).
    pub fn grade(self, source: &Data) -> Grade {
        match (self, source) {
            (Encoding::Stored, _) | (Encoding::Bf16, Data::Bf16(_)) => Grade::Lossless,
            (Encoding::Palette, _) => Grade::Lookup,
            _ => Grade::Reconstruction,
        }
    }
}

impl Codec {
    pub const ALL: [Codec; 5] = [Codec::Bf16, Codec::Q8, Codec::Q4, Codec::Auto, Codec::Palette];

    pub fn name(self) -> &'static str {
        match self {
            Codec::Bf16 => "bf16",
            Codec::Q8 => "q8",
            Codec::Q4 => "q4",
            Codec::Auto => "auto",
            Codec::Palette => "palette",
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
            std::iter::successors(Some(q), |q| q.fallback())
                .find(|q| cols.is_multiple_of(q.block()))
                .map_or(Encoding::Bf16, Encoding::Blocks)
        };
        match self {
            Codec::Bf16 => Encoding::Bf16,
            Codec::Q8 => blocks(Quant::Q8_0),
            Codec::Q4 => blocks(Quant::Q4K),
            // A voice's vocoder is reconstructed to f32 (fewer bytes would not make it faster),
            // so it keeps 8 bits.
            Codec::Auto if name.starts_with("dec.") => blocks(Quant::Q8_0),
            Codec::Auto if ["v_proj", "down_proj"].iter().any(|k| name.contains(k)) => blocks(Quant::Q6K),
            Codec::Auto => blocks(Quant::Q4K),
            // The brief's lesson: a codebook as large as its tensor is a loss. Below a byte
            // per weight in all, or q8_0.
            Codec::Palette if cols.is_multiple_of(lookup::DIM) && palette::bytes(rows, cols) < rows * cols => {
                Encoding::Palette
            }
            Codec::Palette => blocks(Quant::Q8_0),
        }
    }
}

/// The regime of tensor `name` of `shape`, from its role in Hugging Face naming (and a
/// Piper voice's: `enc_p.emb.weight` is its phoneme embedding).
pub fn regime(name: &str, shape: &[usize]) -> Regime {
    if shape.len() < 2 {
        Regime::Passthrough
    } else if ["embedding", "embed_tokens", "emb.weight", "lm_head", "codec_head", "_codebook"]
        .iter()
        .any(|k| name.contains(k))
    {
        Regime::Index
    } else {
        Regime::Argmax
    }
}

/// `w` (tensor `name`) as `codec` holds it ([`Codec::encoding`]); a weight a file already
/// holds encoded stays as it is (encoding it again would only add error).
pub fn apply(codec: Codec, name: &str, w: &Weight) -> Weight {
    if let Data::Quant(..) | Data::Palette { .. } = w.data() {
        return w.clone();
    }
    encode(codec.encoding(name, w.rows(), w.cols()), w)
}

/// Replaces each weight of `tensors` that `codec` encodes by its reconstruction (a tensor
/// of shape `[out, …]` taken as `out` rows), for models whose products run on f32 weights
/// (the VITS voice: compute-bound convolutions, where fewer bytes would not be faster):
/// they then sound exactly as the codec holds them. Returns the tensors changed and how.
pub fn reconstruct(codec: Codec, tensors: &mut Tensors) -> Vec<(String, Encoding)> {
    let mut changed = Vec::new();
    for (name, shape, values) in tensors.iter_mut() {
        let [rows, rest @ ..] = shape else { continue };
        let cols = rest.iter().product::<usize>();
        let encoding = codec.encoding(name, *rows, cols);
        if rest.is_empty() || encoding == Encoding::Stored {
            continue;
        }
        let encoded = encode(encoding, &Weight::from_f32(*rows, cols, values.to_vec()));
        values.chunks_exact_mut(cols).enumerate().for_each(|(r, row)| encoded.row(r, row));
        changed.push((name.to_string(), encoding));
    }
    changed.sort_unstable_by(|a, b| a.0.cmp(&b.0));
    changed
}

/// `w` in `encoding`.
pub fn encode(encoding: Encoding, w: &Weight) -> Weight {
    match encoding {
        Encoding::Stored => w.clone(),
        Encoding::Bf16 => to_bf16(w),
        Encoding::Blocks(q) => blocks::encode(q, w).unwrap_or_else(|| w.clone()),
        Encoding::Palette => palette::encode(w).unwrap_or_else(|| w.clone()),
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kernels::testing::random;
    use crate::tensors::Tensor;

    #[test]
    fn reconstruction_changes_projections_only_each_as_its_encoding_decodes() {
        let mut t = Tensors::new("voice.onnx");
        let conv = random(8 * 64 * 3, 1);
        t.insert("enc_p.encoder.ffn_layers.0.conv_1.weight", Tensor::new(vec![8, 64, 3], conv.clone()).unwrap())
            .unwrap();
        t.insert("dec.ups.0.weight", Tensor::new(vec![2, 16, 16], random(512, 2)).unwrap()).unwrap();
        t.insert("enc_p.emb.weight", Tensor::new(vec![4, 32], random(128, 3)).unwrap()).unwrap();
        t.insert("enc_p.proj.bias", Tensor::new(vec![32], random(32, 4)).unwrap()).unwrap();
        let kept: Vec<(String, Vec<f32>)> = ["enc_p.emb.weight", "enc_p.proj.bias"]
            .iter()
            .map(|n| (n.to_string(), t.get(n).unwrap().data().to_vec()))
            .collect();
        let changed = reconstruct(Codec::Auto, &mut t);
        // 192 columns are not whole q4_k blocks: q4_0; the vocoder keeps 8 bits under auto.
        assert_eq!(
            changed,
            [
                ("dec.ups.0.weight".to_string(), Encoding::Blocks(Quant::Q8_0)),
                ("enc_p.encoder.ffn_layers.0.conv_1.weight".to_string(), Encoding::Blocks(Quant::Q4_0)),
            ]
        );
        let mut want = vec![0u8; Quant::Q4_0.row_bytes(192)];
        let mut row = vec![0.0; 192];
        Quant::Q4_0.encode_row(&conv[192..384], &mut want);
        Quant::Q4_0.decode_row(&want, &mut row);
        assert_eq!(&t.get("enc_p.encoder.ffn_layers.0.conv_1.weight").unwrap().data()[192..384], &row[..]);
        for (name, values) in kept {
            assert_eq!(t.get(&name).unwrap().data(), &values[..], "{name} stays as stored");
        }
    }
}
