//! The 12 Hz speech tokenizer's decoder: codes (16 codebooks per 80 ms frame) to 24 kHz audio.
//!
//! `Qwen3TTSTokenizerV2Decoder` of the reference (qwen-tts), loaded from a checkpoint's
//! `speech_tokenizer/` directory (its `config.json` and `model.safetensors`; the encoder's
//! weights are not read):
//!
//! ```text
//! codes ─► split RVQ: Σ first codebook ─► proj ─┐
//!                     Σ other codebooks ─► proj ─┴► + ─► causal conv (k3) ─► pre-transformer
//!   (8 layers, sliding window 72, layer scale) ─► [transposed conv ×2 ─► ConvNeXt] ×2
//!   ─► causal conv (k7) ─► decoder blocks [SnakeBeta ─► transposed conv ×8,5,4,3 ─►
//!   residual units, dilations 1, 3, 9] ─► SnakeBeta ─► conv (k7) ─► clamp to [-1, 1]
//! ```
//!
//! # Streaming
//!
//! Every piece is causal: convolutions pad on the left only, transposed convolutions crop
//! on the right only, attention looks back over a fixed window. So [`DecoderStream::push`]
//! decodes a frame as soon as it arrives, holding nothing back: each push returns exactly
//! `frames × samples_per_frame` samples, the continuation of the audio so far. The stream
//! carries what the next frames need (each convolution's left context, the last
//! `sliding_window − 1` keys and values of each layer, the frame position) and computes
//! every value with the same operations in the same order as a push of the whole signal, so
//! any chunking gives the same samples bit for bit; [`SpeechDecoder::decode`] is the stream
//! fed everything at once.
//!
//! The reference streams differently: its `chunked_decode` (which its `decode` calls, with
//! chunks of 300 frames) decodes each chunk afresh with 25 frames of left context, so
//! beyond the first chunk it is only close to a whole decode (the context is shorter than
//! the convolutions' and the attention's reach). The exact stream here equals the
//! reference's whole decode, which is what its chunked decode approximates, and is what
//! the parity tests compare against.
//!
//! Codes are `0..codebook_size`; the reference's `decode` clamps negative (padding) codes
//! to 0 and trims the audio to the frames before the padding, which a caller does by not
//! pushing padding. A code out of range is an error, as is a frame of the wrong width.
//!
//! ```no_run
//! use spiral_engine::kernels::Cpu;
//! use spiral_engine::models::qwen3::speech::SpeechDecoder;
//!
//! let decoder = SpeechDecoder::load("Qwen3-TTS-12Hz-0.6B-CustomVoice/speech_tokenizer".as_ref())?;
//! let mut stream = decoder.stream();
//! let frame = vec![0u32; decoder.codebooks()];
//! let audio = stream.push(Cpu::best(), &frame, 1)?;
//! assert_eq!(audio.len(), decoder.samples_per_frame()); // 1920 samples: 80 ms at 24 kHz
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

pub mod config;
mod conv;
mod quantizer;
mod snake;
mod transformer;
mod upsample;
mod vocoder;

use std::path::Path;

use thiserror::Error;

use crate::checkpoint::Checkpoint;
use crate::codec::Codec;
use crate::kernels::conv::{ConvError, ConvShape};
use crate::kernels::{rows, Cpu};
use crate::models::nn::Precision;
use crate::models::stream::{Block, Chain, Stream};

use super::LoadError;
use config::SpeechConfig;
use conv::{CausalConv, SnakeConv};
use quantizer::Quantizer;
use transformer::{PreTransformer, Window};
use upsample::UpStage;
use vocoder::Vocoder;

/// The speech tokenizer's directory inside a Qwen3-TTS checkpoint.
pub const SUBDIR: &str = "speech_tokenizer";

/// Why codes could not be decoded. The stream is unchanged by a failed push.
#[derive(Debug, Error)]
pub enum DecodeError {
    #[error("{codes} codes for {frames} frames: each frame has one code for each of the {codebooks} codebooks")]
    Shape { codes: usize, frames: usize, codebooks: usize },
    #[error("frame {frame}, codebook {codebook}: code {code} is outside the codebook's {size} entries (padding must be cut off before decoding)")]
    CodeOutOfRange { frame: usize, codebook: usize, code: u32, size: usize },
    #[error("internal shape error: {0}")]
    Conv(#[from] ConvError),
}

/// A loaded speech tokenizer decoder.
#[derive(Clone, Debug)]
pub struct SpeechDecoder {
    config: SpeechConfig,
    quantizer: Quantizer,
    pre_conv: CausalConv,
    transformer: PreTransformer,
    upsample: Vec<UpStage>,
    vocoder: Vocoder,
}

impl SpeechDecoder {
    /// Loads the decoder from a speech tokenizer directory (a checkpoint's [`SUBDIR`]).
    pub fn load(dir: &Path) -> Result<SpeechDecoder, LoadError> {
        SpeechDecoder::load_with(dir, None)
    }

    /// [`load`](Self::load), holding the matrices (the pre-transformer's and the upsampling
    /// stages' pointwise layers) in `codec`; the convolutions and codebooks stay as stored.
    pub fn load_with(dir: &Path, codec: Option<Codec>) -> Result<SpeechDecoder, LoadError> {
        let config = SpeechConfig::load(dir)?;
        let ckpt = Checkpoint::open(dir)?;
        let ckpt = match codec {
            Some(c) => ckpt.with_codec(c),
            None => ckpt,
        };
        SpeechDecoder::from_checkpoint(config, &ckpt)
    }

    /// The decoder from `ckpt`'s `decoder.*` tensors, shaped by `config`.
    pub fn from_checkpoint(config: SpeechConfig, ckpt: &Checkpoint) -> Result<SpeechDecoder, LoadError> {
        let c = &config.decoder_config;
        let pre_conv = CausalConv::load(ckpt, "decoder.pre_conv", ConvShape::new(c.codebook_dim, c.latent_dim, 3))?;
        let upsample = c
            .upsampling_ratios
            .iter()
            .enumerate()
            .map(|(i, &ratio)| UpStage::load(ckpt, &format!("decoder.upsample.{i}"), c.latent_dim, ratio))
            .collect::<Result<_, _>>()?;
        Ok(SpeechDecoder {
            quantizer: Quantizer::load(ckpt, "decoder.quantizer", c)?,
            pre_conv,
            transformer: PreTransformer::load(ckpt, "decoder.pre_transformer", c)?,
            upsample,
            vocoder: Vocoder::load(ckpt, "decoder.decoder", c)?,
            config,
        })
    }

    pub fn config(&self) -> &SpeechConfig {
        &self.config
    }

    /// Codes per frame (one per codebook).
    pub fn codebooks(&self) -> usize {
        self.quantizer.codebooks()
    }

    /// Audio samples per frame of codes.
    pub fn samples_per_frame(&self) -> usize {
        self.config.decode_upsample_rate
    }

    pub fn sample_rate(&self) -> u32 {
        self.config.output_sample_rate
    }

    /// Bytes of transformer weights each push reads (its products stream them once a push).
    pub fn transformer_bytes(&self) -> usize {
        self.transformer.bytes()
    }

    /// The audio of `frames` frames of codes (`codes[frame · codebooks + codebook]`):
    /// `frames × samples_per_frame` samples in [-1, 1]. The same as any chunking of them
    /// through [`stream`](Self::stream).
    pub fn decode(&self, cpu: Cpu, codes: &[u32], frames: usize) -> Result<Vec<f32>, DecodeError> {
        self.stream().push(cpu, codes, frames)
    }

    /// The arithmetic of the convolutional back end's upsampling and dilated convolutions
    /// (f32 unless set). [`Precision::Mixed`] at the 0.6B shapes on this project's 2-core
    /// Zen 4: 45 → 36 ms per frame; on random weights the audio moves to 16 dB from the
    /// f32 audio (a trained checkpoint, unavailable here, is likely closer, as VITS is).
    pub fn set_precision(&mut self, precision: Precision) {
        self.vocoder.set_precision(precision);
    }

    /// The quantized latent of `frames` frames of codes, `codebook_dim` values per frame:
    /// what the decoder's convolutions and transformer start from.
    pub fn latent(&self, cpu: Cpu, codes: &[u32], frames: usize) -> Result<Vec<f32>, DecodeError> {
        self.quantizer.check(codes, frames, 0)?;
        Ok(self.quantizer.decode(cpu, codes, frames))
    }

    /// A decoder fed frames as they come (see the module's description).
    pub fn stream(&self) -> DecoderStream<'_> {
        let mut pieces: Vec<Box<dyn Stream + Send + '_>> = vec![
            Box::new(SnakeConv::new(None, self.pre_conv.stream())),
            Box::new(TransformerStage { model: &self.transformer, window: self.transformer.window() }),
        ];
        pieces.extend(self.upsample.iter().flat_map(UpStage::streams));
        pieces.extend(self.vocoder.streams());
        DecoderStream { decoder: self, chain: Chain(pieces), frames: 0 }
    }
}

/// The decoder run incrementally; see [`SpeechDecoder::stream`].
pub struct DecoderStream<'d> {
    decoder: &'d SpeechDecoder,
    chain: Chain<Box<dyn Stream + Send + 'd>>,
    frames: usize,
}

impl DecoderStream<'_> {
    /// Decodes `frames` more frames of codes (`codes[frame · codebooks + codebook]`) and
    /// returns their `frames × samples_per_frame` samples, clamped to [-1, 1] as the
    /// reference does. Bad codes are an error that leaves the stream as it was.
    pub fn push(&mut self, cpu: Cpu, codes: &[u32], frames: usize) -> Result<Vec<f32>, DecodeError> {
        let quantizer = &self.decoder.quantizer;
        quantizer.check(codes, frames, self.frames)?;
        if frames == 0 {
            return Ok(Vec::new());
        }
        let latent = quantizer.decode(cpu, codes, frames);
        let channels = latent.len() / frames;
        let x = Block::new(transpose(&latent, frames, channels), channels, frames);
        let mut audio = self.chain.push(cpu, &x, false)?.data;
        audio.iter_mut().for_each(|v| *v = v.clamp(-1.0, 1.0));
        self.frames += frames;
        Ok(audio)
    }

    /// Frames decoded so far.
    pub fn frames(&self) -> usize {
        self.frames
    }
}

/// The pre-transformer as a stream piece: channels-first in and out, its window carried.
struct TransformerStage<'d> {
    model: &'d PreTransformer,
    window: Window,
}

impl Stream for TransformerStage<'_> {
    fn push(&mut self, cpu: Cpu, x: &Block, _end: bool) -> Result<Block, ConvError> {
        let out = self.model.forward(cpu, &transpose(&x.data, x.channels, x.len), x.len, &mut self.window);
        let channels = out.len().checked_div(x.len).unwrap_or(0);
        Ok(Block::new(transpose(&out, x.len, channels), channels, x.len))
    }
}

/// The `cols × rows` transpose of a row-major `rows × cols` matrix (time-major steps to
/// channels-first signal and back).
fn transpose(x: &[f32], rows: usize, cols: usize) -> Vec<f32> {
    let mut out = vec![0.0; x.len()];
    rows::for_each_row_mut(&mut out, rows, |c, column| {
        column.iter_mut().enumerate().for_each(|(r, v)| *v = x[r * cols + c]);
    });
    out
}

pub mod synthetic;

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kernels::testing::available;
    use crate::models::nn::Precision;

    /// A small decoder with every feature the real one has (grouped-query attention, a
    /// window shorter than the signal, several upsampling stages and decoder blocks).
    const SMALL: &str = r#"{"codebook_dim": 16, "codebook_size": 32, "hidden_size": 32, "latent_dim": 24,
        "intermediate_size": 40, "num_attention_heads": 4, "num_key_value_heads": 2, "head_dim": 8,
        "num_hidden_layers": 2, "sliding_window": 3, "num_quantizers": 4, "upsample_rates": [2, 3],
        "upsampling_ratios": [2, 2], "decoder_dim": 16}"#;

    fn small(bf16_weights: bool) -> (tempfile::TempDir, SpeechDecoder) {
        let dir = tempfile::tempdir().unwrap();
        synthetic::write(dir.path(), &synthetic::config_json(SMALL), bf16_weights).unwrap();
        let decoder = SpeechDecoder::load(dir.path()).unwrap();
        (dir, decoder)
    }

    fn codes(frames: usize, codebooks: usize, size: u32) -> Vec<u32> {
        (0..frames * codebooks).map(|i| (i as u32).wrapping_mul(2_654_435_761) % size).collect()
    }

    #[test]
    fn any_chunking_equals_the_whole_decode_bit_for_bit_on_every_path() {
        for bf16_weights in [false, true] {
            let (_dir, decoder) = small(bf16_weights);
            let (q, frames) = (decoder.codebooks(), 17);
            let codes = codes(frames, q, 32);
            for cpu in available() {
                let whole = decoder.decode(cpu, &codes, frames).unwrap();
                assert_eq!(whole.len(), frames * decoder.samples_per_frame());
                assert!(whole.iter().all(|v| v.abs() <= 1.0) && whole.iter().any(|&v| v != 0.0));
                for sizes in [vec![1; frames], vec![3, 0, 1, 7, 2, 4]] {
                    let mut stream = decoder.stream();
                    let mut streamed = Vec::new();
                    let mut at = 0;
                    for n in sizes {
                        streamed.extend(stream.push(cpu, &codes[at * q..(at + n) * q], n).unwrap());
                        at += n;
                    }
                    assert_eq!(stream.frames(), frames);
                    assert!(streamed == whole, "{} bf16 {bf16_weights}: a chunked stream differs", cpu.isa());
                }
            }
        }
    }

    /// Mixed precision streams like f32 does (any chunking, bit for bit) and moves the
    /// audio by bf16 rounding only.
    #[test]
    fn mixed_precision_streams_exactly_and_stays_near_f32() {
        let (_dir, mut decoder) = small(false);
        let (q, frames, cpu) = (decoder.codebooks(), 17, Cpu::best());
        let codes = codes(frames, q, 32);
        let exact = decoder.decode(cpu, &codes, frames).unwrap();
        decoder.set_precision(Precision::F32);
        assert!(decoder.decode(cpu, &codes, frames).unwrap() == exact, "f32 is what the shapes pick");
        decoder.set_precision(Precision::Mixed);
        let mixed = decoder.decode(cpu, &codes, frames).unwrap();
        let mut stream = decoder.stream();
        let mut chunked = stream.push(cpu, &codes[..5 * q], 5).unwrap();
        chunked.extend(stream.push(cpu, &codes[5 * q..], frames - 5).unwrap());
        assert!(chunked == mixed);
        let noise: f64 = exact.iter().zip(&mixed).map(|(a, b)| f64::from(a - b).powi(2)).sum();
        let signal: f64 = exact.iter().map(|a| f64::from(*a).powi(2)).sum();
        let snr = 10.0 * (signal / noise).log10();
        assert!(noise > 0.0 && snr > 30.0, "mixed against f32: {snr:.1} dB");
    }

    #[test]
    fn bad_codes_are_errors_that_leave_the_stream_as_it_was() {
        let (_dir, decoder) = small(false);
        let q = decoder.codebooks();
        let codes = codes(5, q, 32);
        let want = decoder.decode(Cpu::best(), &codes, 5).unwrap();
        let mut stream = decoder.stream();
        let mut got = stream.push(Cpu::best(), &codes[..2 * q], 2).unwrap();
        let mut bad = codes[2 * q..].to_vec();
        bad[q + 2] = 32;
        let e = stream.push(Cpu::best(), &bad, 3).unwrap_err().to_string();
        assert!(e.contains("frame 3, codebook 2: code 32") && e.contains("32 entries"), "{e}");
        let e = stream.push(Cpu::best(), &codes[2 * q..], 2).unwrap_err().to_string();
        assert!(e.contains(&format!("{} codes for 2 frames", 3 * q)) && e.contains(&format!("{q} codebooks")), "{e}");
        got.extend(stream.push(Cpu::best(), &codes[2 * q..], 3).unwrap());
        assert!(got == want);
    }

    #[test]
    fn missing_and_damaged_weights_are_load_errors_naming_the_tensor_or_file() {
        let (dir, _) = small(false);
        let file = dir.path().join("model.safetensors");
        let bytes = std::fs::read(&file).unwrap();
        std::fs::write(&file, &bytes[..bytes.len() - 100]).unwrap();
        let e = SpeechDecoder::load(dir.path()).unwrap_err().to_string();
        assert!(e.contains("model.safetensors") && e.contains("truncated"), "{e}");
        let config = SpeechConfig::from_json("config.json", &synthetic::config_json(SMALL)).unwrap();
        for missing in ["decoder.decoder.2.block.3.act2.beta", "decoder.pre_transformer.layers.1.mlp_layer_scale.scale"]
        {
            let list: Vec<_> =
                synthetic::tensors(&config.decoder_config).into_iter().filter(|(n, _)| n != missing).collect();
            let bytes: Vec<Vec<u8>> = list.iter().map(|(_, s)| vec![0; 4 * s.iter().product::<usize>()]).collect();
            let views = list.iter().zip(&bytes).map(|((n, s), b)| {
                (n.clone(), safetensors::tensor::TensorView::new(safetensors::Dtype::F32, s.clone(), b).unwrap())
            });
            safetensors::serialize_to_file(views, None, &file).unwrap();
            let e = SpeechDecoder::load(dir.path()).unwrap_err().to_string();
            assert!(e.contains(missing) && e.contains("missing"), "{e}");
        }
    }

    /// One frame at a time at the reference's default shapes (hidden 1024, 8 layers,
    /// decoder_dim 1536, codebook_dim 512), random f32 weights, or bf16 matrices with
    /// SPIRAL_BF16=1, or the decoder of a checkpoint directory's `speech_tokenizer` with
    /// SPIRAL_DECODER=DIR (a compressed one included); the speech decoder's default (f32)
    /// arithmetic, or bf16 products with SPIRAL_PRECISION=mixed: the time per 80 ms frame
    /// and where it goes.
    /// `cargo test --release -p spiral-engine --lib speech::tests::frame_time -- --ignored --nocapture`
    #[test]
    #[ignore = "writes a 700 MB checkpoint; run in release"]
    fn frame_time_at_the_real_shapes() {
        let bf16_weights = std::env::var("SPIRAL_BF16").is_ok_and(|v| v == "1");
        let dir = tempfile::tempdir().unwrap();
        let (mut decoder, weights) = match std::env::var("SPIRAL_DECODER") {
            Ok(given) => (SpeechDecoder::load(Path::new(&given)).unwrap(), given),
            Err(_) => {
                synthetic::write(dir.path(), &synthetic::config_json("{}"), bf16_weights).unwrap();
                (SpeechDecoder::load(dir.path()).unwrap(), if bf16_weights { "bf16" } else { "f32" }.to_string())
            }
        };
        let mixed = std::env::var("SPIRAL_PRECISION").is_ok_and(|v| v == "mixed");
        decoder.set_precision(if mixed { Precision::Mixed } else { Precision::F32 });
        let c = &decoder.config.decoder_config;
        let mut labels = vec!["pre_conv".to_string(), "transformer".into()];
        for (i, r) in c.upsampling_ratios.iter().enumerate() {
            labels.extend([format!("upsample.{i} x{r} transposed conv"), format!("upsample.{i} ConvNeXt")]);
        }
        labels.push("decoder.0 conv".into());
        for (i, r) in c.upsample_rates.iter().enumerate() {
            let ch = c.block_channels(i);
            labels.push(format!("block {} snake + transposed conv x{r} ({ch} ch)", i + 1));
            labels.extend(std::iter::repeat_n(format!("block {} residual units ({ch} ch)", i + 1), 3));
        }
        labels.push("snake + output conv".into());
        let cpu = Cpu::best();
        let mut stream = decoder.stream();
        assert_eq!(stream.chain.0.len(), labels.len());
        let q = decoder.codebooks();
        let (warm, frames) = (3, 40);
        let mut by_label: Vec<(String, Vec<f64>)> = Vec::new();
        let mut totals = Vec::new();
        for f in 0..warm + frames {
            let codes: Vec<u32> = (0..q).map(|i| ((f * q + i) as u32).wrapping_mul(2_654_435_761) % 2048).collect();
            let mut times = vec![("quantizer".to_string(), 0.0)];
            let start = std::time::Instant::now();
            let latent = decoder.quantizer.decode(cpu, &codes, 1);
            let mut x = Block::new(latent.clone(), latent.len(), 1);
            times[0].1 = start.elapsed().as_secs_f64();
            for (piece, label) in stream.chain.0.iter_mut().zip(&labels) {
                let t = std::time::Instant::now();
                x = piece.push(cpu, &x, false).unwrap();
                times.push((label.clone(), t.elapsed().as_secs_f64()));
            }
            assert_eq!(x.len, decoder.samples_per_frame());
            if f >= warm {
                totals.push(start.elapsed().as_secs_f64());
                for (label, t) in times {
                    match by_label.iter_mut().find(|(l, _)| *l == label) {
                        Some((_, v)) => v.push(t),
                        None => by_label.push((label, vec![t])),
                    }
                }
            }
        }
        let mean = |v: &[f64]| v.iter().sum::<f64>() / v.len() as f64 * 1e3;
        totals.sort_by(f64::total_cmp);
        eprintln!(
            "{} weights, {} arithmetic, {} on {} threads: one frame (80 ms of audio) in {:.1} ms mean, {:.1} ms median, \
             {:.1} ms p90",
            weights,
            if mixed { "mixed" } else { "f32" },
            cpu.isa(),
            rayon::current_num_threads(),
            mean(&totals),
            totals[totals.len() / 2] * 1e3,
            totals[totals.len() * 9 / 10] * 1e3
        );
        eprintln!("transformer weights read per push: {} MB", decoder.transformer_bytes() / 1_000_000);
        for (label, v) in &by_label {
            eprintln!("  {label:48} {:7.2} ms", v.iter().sum::<f64>() / frames as f64 * 1e3);
        }
    }
}
