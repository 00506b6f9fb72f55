//! `spiral compress`: a model directory written again with its weights in a codec, in a
//! form the engine loads directly (docs/FORMATS.md).
//!
//! The weights go into one `model.safetensors`: tensors a codec encodes as u8 rows of
//! blocks listed under [`ENCODINGS_KEY`](crate::checkpoint::ENCODINGS_KEY), the rest
//! byte for byte as they were. A Qwen3-TTS directory's `speech_tokenizer/` is compressed
//! the same way into the same place (its matrices are 2-D; its convolutions, 3-D, stay as
//! stored). Every other file (configs, tokenizer) is copied as it is. Each tensor is
//! reported as it is written, with how faithfully its encoding reconstructs it.
//!
//! ```no_run
//! use spiral_engine::codec::Codec;
//! use spiral_engine::compress;
//!
//! let report = compress::compress("Qwen3-TTS-0.6B".as_ref(), "Qwen3-TTS-0.6B-q4".as_ref(), Codec::Auto, |t, i, n| {
//!     eprintln!("[{i}/{n}] {} {}", t.name, t.encoding);
//! })?;
//! println!("{} -> {} bytes", report.iter().map(|t| t.bytes_in).sum::<usize>(), report.iter().map(|t| t.bytes_out).sum::<usize>());
//! # Ok::<(), compress::CompressError>(())
//! ```

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use rayon::prelude::*;
use thiserror::Error;

use crate::checkpoint::{self, Checkpoint, CheckpointError, Data, Spec, Stored, Weight};
use crate::codec::{self, palette, Codec, Encoding};
use crate::kernels::palette as lookup;
use crate::models::vits::weights;
use crate::voices::Voice;

/// What can go wrong compressing a model.
#[derive(Debug, Error)]
pub enum CompressError {
    #[error(transparent)]
    Checkpoint(#[from] CheckpointError),
    #[error("{}: {source}", path.display())]
    Io { path: PathBuf, source: std::io::Error },
    #[error("{}: the output must be a new directory, not the model itself", path.display())]
    SamePlace { path: PathBuf },
    #[error("{}: a compressed voice is written as NAME.safetensors (its config beside it as NAME.safetensors.json)", path.display())]
    VoiceName { path: PathBuf },
    #[error("{0}")]
    Voice(String),
}

/// One tensor as compressed.
#[derive(Clone, Debug)]
pub struct TensorReport {
    pub name: String,
    pub shape: Vec<usize>,
    /// How the source file stores it.
    pub source: Stored,
    /// How the output stores it.
    pub stored: Stored,
    /// The codec's choice (`stored`: copied unchanged).
    pub encoding: &'static str,
    /// Bytes in the source's dtype and in the output.
    pub bytes_in: usize,
    pub bytes_out: usize,
    /// Cosine between the source values and their reconstruction, and the reconstruction's
    /// error relative to the values (root of the summed squares over all values); `None`
    /// for tensors copied unchanged.
    pub cosine: Option<f64>,
    pub relative_error: Option<f64>,
}

/// Writes `input` (a model directory: `model.safetensors`, shards or `model.gguf`, whose
/// other files are copied, and a `speech_tokenizer/` with weights of its own compressed
/// too; or one `.safetensors` or `.gguf` file) to `output` (a directory, its weights in
/// `model.safetensors`) with its weights in `codec`; `progress(tensor, i, n)` runs after
/// each tensor is written (the speech tokenizer's tensors named `speech_tokenizer/NAME`,
/// counted on their own).
pub fn compress(
    input: &Path,
    output: &Path,
    codec: Codec,
    mut progress: impl FnMut(&TensorReport, usize, usize),
) -> Result<Vec<TensorReport>, CompressError> {
    let ckpt = Checkpoint::open(input)?;
    if output.exists()
        && std::fs::canonicalize(output).map_err(io(output))? == std::fs::canonicalize(input).map_err(io(input))?
    {
        return Err(CompressError::SamePlace { path: output.into() });
    }
    std::fs::create_dir_all(output).map_err(io(output))?;
    let speech = input.join(SPEECH);
    let speech = (input.is_dir() && has_weights(&speech)).then_some(speech);
    if input.is_dir() {
        copy_other_files(input, output, speech.is_some())?;
    }
    let mut report = write_checkpoint(&ckpt, &output.join("model.safetensors"), codec, "", &mut progress)?;
    if let Some(speech) = speech {
        let ckpt = Checkpoint::open(&speech)?;
        let file = output.join(SPEECH).join("model.safetensors");
        report.extend(write_checkpoint(&ckpt, &file, codec, &format!("{SPEECH}/"), &mut progress)?);
    }
    Ok(report)
}

/// The speech tokenizer's directory in a Qwen3-TTS checkpoint.
const SPEECH: &str = crate::models::qwen3::speech::SUBDIR;

/// A directory holds weights of its own (safetensors, an index of shards, or GGUF).
fn has_weights(dir: &Path) -> bool {
    ["model.safetensors", "model.safetensors.index.json", "model.gguf"].iter().any(|f| dir.join(f).is_file())
}

/// Every tensor of `ckpt` into `file`, reported with its name after `prefix`.
fn write_checkpoint(
    ckpt: &Checkpoint,
    file: &Path,
    codec: Codec,
    prefix: &str,
    progress: &mut impl FnMut(&TensorReport, usize, usize),
) -> Result<Vec<TensorReport>, CompressError> {
    let mut sources = Vec::new();
    for name in ckpt.names() {
        let (stored, bytes) = ckpt.stored(name)?;
        sources.push(Source { name: name.to_string(), shape: ckpt.shape(name)?.to_vec(), stored, bytes });
    }
    let weight = |s: &Source| ckpt.matrix(&s.name, s.shape[0], s.shape[1]);
    let mut report = write_model(file, &sources, weight, codec, &BTreeMap::new(), |t, i, n| {
        let named = TensorReport { name: format!("{prefix}{}", t.name), ..t.clone() };
        progress(&named, i, n)
    })?;
    report.iter_mut().for_each(|t| t.name.insert_str(0, prefix));
    Ok(report)
}

/// Writes the Piper voice `onnx` (with its `.onnx.json`) as `output`, a `.safetensors`
/// with its config beside it as `output.json`, its weights in `codec`; the result loads
/// with `--voice output` ([`crate::models::vits::weights`]).
pub fn compress_voice(
    onnx: &Path,
    output: &Path,
    codec: Codec,
    progress: impl FnMut(&TensorReport, usize, usize),
) -> Result<Vec<TensorReport>, CompressError> {
    if output.extension().is_none_or(|e| e != "safetensors") {
        return Err(CompressError::VoiceName { path: output.into() });
    }
    let voice = Voice::from_path(onnx).map_err(|e| CompressError::Voice(e.to_string()))?;
    let (tensors, convs) = weights::read(onnx).map_err(|e| CompressError::Voice(e.to_string()))?;
    let mut sources = Vec::new();
    let mut flattened = BTreeMap::new();
    let mut names: Vec<&str> = tensors.names();
    names.sort_unstable();
    for name in names {
        let t = tensors.get(name).map_err(|e| CompressError::Voice(e.to_string()))?;
        let mut shape = t.shape().to_vec();
        if let [rows, rest @ ..] = &shape[..] {
            let cols = rest.iter().product::<usize>();
            if rest.len() > 1 && codec.encoding(name, *rows, cols) != Encoding::Stored {
                flattened.insert(name.to_string(), shape.clone());
                shape = vec![*rows, cols];
            }
        }
        sources.push(Source { name: name.to_string(), shape, stored: Stored::F32, bytes: bytes(t.data()) });
    }
    let weight = |s: &Source| {
        let values = tensors.get(&s.name).expect("listed above").data().to_vec();
        Ok(Weight::from_f32(s.shape[0], s.shape[1], values))
    };
    let metadata = weights::metadata(&convs, &flattened);
    let reports = write_model(output, &sources, weight, codec, &metadata, progress)?;
    let config = PathBuf::from(format!("{}.json", output.display()));
    std::fs::copy(&voice.config, &config).map_err(io(&voice.config))?;
    Ok(reports)
}

/// One tensor of a model being compressed, as its source holds it.
struct Source<'a> {
    name: String,
    /// Rows × columns for a matrix a codec may encode.
    shape: Vec<usize>,
    stored: Stored,
    bytes: &'a [u8],
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> CompressError {
    let path = path.to_path_buf();
    move |source| CompressError::Io { path, source }
}

/// Which part of an encoded tensor a written tensor is.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Part {
    /// The tensor itself (a palette's indices).
    Whole,
    /// A palette's codebooks and row scales, written after its indices.
    Codebooks,
    Scales,
}

/// Writes `sources` to `file` as `codec` holds them, reporting each tensor; a tensor the
/// codec encodes is taken as a matrix through `weight`.
fn write_model(
    file: &Path,
    sources: &[Source],
    weight: impl Fn(&Source) -> Result<Weight, CheckpointError>,
    codec: Codec,
    metadata: &BTreeMap<String, String>,
    mut progress: impl FnMut(&TensorReport, usize, usize),
) -> Result<Vec<TensorReport>, CompressError> {
    // (source, encoding, part) for each tensor written, and its spec.
    let mut plan: Vec<(usize, Encoding, Part)> = Vec::new();
    let mut specs: Vec<Spec> = Vec::new();
    for (i, s) in sources.iter().enumerate() {
        let encoding = match (s.stored, &s.shape[..]) {
            (Stored::Quant(_) | Stored::Palette { .. }, _) => Encoding::Stored,
            (_, &[rows, cols]) => codec.encoding(&s.name, rows, cols),
            _ => Encoding::Stored,
        };
        let stored = match encoding {
            Encoding::Stored => s.stored,
            Encoding::Bf16 => Stored::Bf16,
            Encoding::Blocks(q) => Stored::Quant(q),
            Encoding::Palette => Stored::Palette { stages: palette::STAGES },
        };
        plan.push((i, encoding, Part::Whole));
        specs.push(Spec { name: s.name.clone(), shape: s.shape.clone(), stored });
        if let Stored::Palette { stages } = stored {
            let books = vec![stages, lookup::DIM, lookup::CENTROIDS];
            for (part, suffix, shape) in
                [(Part::Codebooks, "codebooks", books), (Part::Scales, "scales", vec![s.shape[0]])]
            {
                plan.push((i, encoding, part));
                specs.push(Spec { name: format!("{}.{suffix}", s.name), shape, stored: Stored::F32 });
            }
        }
    }
    let mut reports = Vec::with_capacity(sources.len());
    // The encoded weight whose parts are still being written.
    let mut current: Option<Weight> = None;
    let written = checkpoint::write_bytes(
        file,
        &specs,
        metadata,
        |i, out| {
            let (at, encoding, part) = plan[i];
            let (spec, source) = (&specs[i], &sources[at]);
            if part != Part::Whole {
                let Some(Data::Palette { codebooks, scales, .. }) = current.as_ref().map(Weight::data) else {
                    unreachable!("a palette's parts follow its indices")
                };
                return out.write_all(bytes(if part == Part::Codebooks { codebooks } else { scales }));
            }
            let mut report = TensorReport {
                name: spec.name.clone(),
                shape: spec.shape.clone(),
                source: source.stored,
                stored: spec.stored,
                encoding: encoding.name(),
                bytes_in: source.bytes.len(),
                bytes_out: spec.stored.bytes(&spec.shape),
                cosine: None,
                relative_error: None,
            };
            if spec.stored == source.stored {
                out.write_all(source.bytes)?;
                if let Stored::Palette { .. } = spec.stored {
                    current = Some(weight(source).map_err(std::io::Error::other)?);
                }
            } else {
                let w = weight(source).map_err(std::io::Error::other)?;
                let encoded = codec::encode(encoding, &w);
                out.write_all(match encoded.data() {
                    Data::F32(s) => bytes(s),
                    Data::Bf16(s) => bytes(s),
                    Data::Quant(_, s) => bytes(s),
                    Data::Palette { indices, codebooks, scales } => {
                        report.bytes_out += 4 * (codebooks.len() + scales.len());
                        bytes(indices)
                    }
                })?;
                let (cosine, error) = fidelity(&w, &encoded);
                (report.cosine, report.relative_error) = (Some(cosine), Some(error));
                current = Some(encoded);
            }
            progress(&report, reports.len() + 1, sources.len());
            reports.push(report);
            Ok(())
        },
        |_| {},
    );
    // A checkpoint error inside the writer comes back as itself, naming the input file.
    written.map_err(|e| {
        if e.get_ref().is_some_and(|inner| inner.is::<CheckpointError>()) {
            CompressError::Checkpoint(*e.into_inner().and_then(|b| b.downcast().ok()).expect("checked above"))
        } else {
            CompressError::Io { path: file.into(), source: e }
        }
    })?;
    Ok(reports)
}

/// Plain little-endian numbers as the bytes a file stores.
fn bytes<T: checkpoint::Plain>(v: &[T]) -> &[u8] {
    // SAFETY: plain little-endian numbers (checked by `Plain`) without padding.
    unsafe { std::slice::from_raw_parts(v.as_ptr().cast::<u8>(), std::mem::size_of_val(v)) }
}

/// (cosine, relative error) of `encoded` against `source`, over every value.
fn fidelity(source: &Weight, encoded: &Weight) -> (f64, f64) {
    let cols = source.cols();
    let (dot, ss, ee, dd) = (0..source.rows())
        .into_par_iter()
        .map_init(
            || (vec![0.0; cols], vec![0.0; cols]),
            |(a, b), r| {
                source.row(r, a);
                encoded.row(r, b);
                a.iter().zip(b.iter()).fold((0.0, 0.0, 0.0, 0.0), |(dot, ss, ee, dd), (&x, &y)| {
                    let (x, y) = (f64::from(x), f64::from(y));
                    (dot + x * y, ss + x * x, ee + y * y, dd + (x - y) * (x - y))
                })
            },
        )
        .reduce(|| (0.0, 0.0, 0.0, 0.0), |a, b| (a.0 + b.0, a.1 + b.1, a.2 + b.2, a.3 + b.3));
    let cosine = if ss > 0.0 && ee > 0.0 { dot / (ss * ee).sqrt() } else { 1.0 };
    let error = if ss > 0.0 { (dd / ss).sqrt() } else { dd.sqrt() };
    (cosine, error)
}

/// Copies every file and directory of `input` to `output` except the weights the
/// checkpoint reads (`model.safetensors`, or the index and its shards, or `model.gguf`),
/// and the speech tokenizer's when `speech` (they are compressed too).
fn copy_other_files(input: &Path, output: &Path, speech: bool) -> Result<(), CompressError> {
    let weights =
        |name: &str| name == "model.safetensors.index.json" || name.ends_with(".safetensors") || name == "model.gguf";
    let speech_dir = input.join(SPEECH);
    copy_tree(input, output, &|path: &Path| {
        let parent = path.parent();
        let ours = parent == Some(input) || (speech && parent == Some(speech_dir.as_path()));
        ours && path.file_name().and_then(|n| n.to_str()).is_some_and(weights)
    })
}

fn copy_tree(from: &Path, to: &Path, skip: &dyn Fn(&Path) -> bool) -> Result<(), CompressError> {
    std::fs::create_dir_all(to).map_err(io(to))?;
    for entry in std::fs::read_dir(from).map_err(io(from))? {
        let path = entry.map_err(io(from))?.path();
        if skip(&path) {
            continue;
        }
        let dest = to.join(path.file_name().expect("a directory entry has a name"));
        if path.is_dir() {
            copy_tree(&path, &dest, skip)?;
        } else {
            std::fs::copy(&path, &dest).map_err(io(&path))?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kernels::quant::Quant;

    fn by_name_in<'r>(report: &'r [TensorReport], name: &str) -> &'r TensorReport {
        report.iter().find(|t| t.name == name).unwrap_or_else(|| panic!("{name} not reported"))
    }

    #[test]
    fn a_directory_compresses_loads_and_reports_each_tensor() {
        let dir = tempfile::tempdir().unwrap();
        let input = dir.path().join("in");
        let spec = |name: &str, shape: Vec<usize>, stored| Spec { name: name.into(), shape, stored };
        let tensors = [
            spec("layers.0.mlp.up_proj.weight", vec![64, 512], Stored::Bf16),
            spec("layers.0.self_attn.v_proj.weight", vec![4, 64], Stored::F32),
            spec("embed_tokens.weight", vec![10, 256], Stored::Bf16),
            spec("layers.0.input_layernorm.weight", vec![64], Stored::F32),
        ];
        checkpoint::write_random(&input.join("model.safetensors"), &tensors, 1);
        std::fs::write(input.join("config.json"), "{}").unwrap();
        std::fs::create_dir_all(input.join("speech_tokenizer")).unwrap();
        let speech = [
            spec("decoder.pre_transformer.layers.0.mlp.down_proj.weight", vec![32, 256], Stored::F32),
            spec("decoder.decoder.1.block.2.conv1.conv.weight", vec![8, 8, 7], Stored::F32),
        ];
        checkpoint::write_random(&input.join("speech_tokenizer/model.safetensors"), &speech, 2);
        std::fs::write(input.join("speech_tokenizer/config.json"), "{\"speech\": 1}").unwrap();

        let output = dir.path().join("out");
        let mut seen = Vec::new();
        let report = compress(&input, &output, Codec::Auto, |t, i, n| seen.push((t.name.clone(), i, n))).unwrap();
        assert_eq!(seen.len(), 6);
        assert_eq!(seen[3].1..=seen[3].2, 4..=4);
        assert_eq!((seen[5].1, seen[5].2), (2, 2), "the speech tokenizer is counted on its own");
        let down = "speech_tokenizer/decoder.pre_transformer.layers.0.mlp.down_proj.weight";
        assert_eq!(by_name_in(&report, down).stored, Stored::Quant(Quant::Q6K));
        let conv = "speech_tokenizer/decoder.decoder.1.block.2.conv1.conv.weight";
        assert_eq!(by_name_in(&report, conv).encoding, "stored", "convolutions stay as stored");
        let speech = Checkpoint::open(&output.join("speech_tokenizer")).unwrap();
        assert_eq!(speech.encoding(&down["speech_tokenizer/".len()..]).unwrap(), Some(Stored::Quant(Quant::Q6K)));
        let speech_in = Checkpoint::open(&input.join("speech_tokenizer")).unwrap();
        let conv = &conv["speech_tokenizer/".len()..];
        assert_eq!(speech.f32(conv, &[8, 8, 7]).unwrap(), speech_in.f32(conv, &[8, 8, 7]).unwrap());
        let by_name = |n: &str| report.iter().find(|t| t.name == n).unwrap();
        let up = by_name("layers.0.mlp.up_proj.weight");
        assert_eq!((up.stored, up.bytes_in, up.bytes_out), (Stored::Quant(Quant::Q4K), 65536, 64 * 288));
        assert!(up.cosine.unwrap() > 0.99 && up.relative_error.unwrap() < 0.12, "{up:?}");
        // auto holds the value projection in q6_k; 256 does not divide its 64 columns, so q8_0.
        assert_eq!(by_name("layers.0.self_attn.v_proj.weight").stored, Stored::Quant(Quant::Q8_0));
        for kept in ["embed_tokens.weight", "layers.0.input_layernorm.weight"] {
            let t = by_name(kept);
            assert_eq!((t.encoding, t.bytes_in, t.cosine), ("stored", t.bytes_out, None), "{kept}");
        }
        assert_eq!(std::fs::read_to_string(output.join("speech_tokenizer/config.json")).unwrap(), "{\"speech\": 1}");
        assert_eq!(std::fs::read_to_string(output.join("config.json")).unwrap(), "{}");

        let back = Checkpoint::open(&output).unwrap();
        assert_eq!(back.encoding("layers.0.mlp.up_proj.weight").unwrap(), Some(Stored::Quant(Quant::Q4K)));
        let (src, out) = (Checkpoint::open(&input).unwrap(), back);
        assert_eq!(src.stored("embed_tokens.weight").unwrap().1, out.stored("embed_tokens.weight").unwrap().1);
        // Compressing a compressed model again keeps its blocks as they are.
        let again = compress(&output, &dir.path().join("again"), Codec::Q8, |_, _, _| {}).unwrap();
        assert_eq!(again.iter().find(|t| t.name == up.name).unwrap().stored, Stored::Quant(Quant::Q4K));

        // A palette: indices, codebooks and scales in three tensors that load as one, and
        // stay one when compressed again.
        let pal = compress(&input, &dir.path().join("pal"), Codec::Palette, |_, _, _| {}).unwrap();
        let t = pal.iter().find(|t| t.name == up.name).unwrap();
        assert_eq!((t.stored, t.bytes_out), (Stored::Palette { stages: 2 }, 64 * 512 / 4 * 2 + 4 * (2 * 4 * 256 + 64)));
        assert_eq!(t.bytes_out, palette::bytes(64, 512));
        // Too small for its codebooks to pay: q8_0 instead.
        assert_eq!(
            pal.iter().find(|t| t.name == "layers.0.self_attn.v_proj.weight").unwrap().stored,
            Stored::Quant(Quant::Q8_0)
        );
        let stored = src.matrix(&up.name, 64, 512).unwrap();
        let at_load = codec::apply(Codec::Palette, &up.name, &stored);
        for name in ["pal", "pal-again"] {
            if name == "pal-again" {
                compress(&dir.path().join("pal"), &dir.path().join(name), Codec::Q8, |_, _, _| {}).unwrap();
            }
            let back = Checkpoint::open(&dir.path().join(name)).unwrap();
            assert_eq!(back.names(), src.names(), "{name}: a palette's parts are not tensors of their own");
            let w = back.matrix(&up.name, 64, 512).unwrap();
            assert!(matches!(w.data(), Data::Palette { indices: crate::checkpoint::Storage::Mapped { .. }, .. }));
            let (mut a, mut b) = (vec![0.0; 512], vec![0.0; 512]);
            for r in 0..64 {
                w.row(r, &mut a);
                at_load.row(r, &mut b);
                assert_eq!(a, b, "{name} row {r}");
            }
        }

        let e = compress(&input, &input, Codec::Q8, |_, _, _| {}).unwrap_err().to_string();
        assert!(e.contains("must be a new directory"), "{e}");
        let e = compress(&dir.path().join("nothing"), &output, Codec::Q8, |_, _, _| {}).unwrap_err().to_string();
        assert!(e.contains("nothing"), "{e}");
    }
}
