//! The convolutional back end (`Qwen3TTSTokenizerV2Decoder.decoder`): an input convolution
//! to `decoder_dim` channels, decoder blocks that each upsample by their rate and halve the
//! channels (SnakeBeta, a causal transposed convolution of kernel 2·rate, then residual
//! units with dilations 1, 3 and 9), and a SnakeBeta and a convolution to one channel.

use crate::checkpoint::Checkpoint;
use crate::kernels::conv::ConvShape;
use crate::models::nn::Precision;
use crate::models::qwen3::LoadError;
use crate::models::stream::{Chain, Stream};

use super::config::DecoderConfig;
use super::conv::{CausalConv, CausalUp, Residual, SnakeConv};
use super::snake::SnakeBeta;

/// The residual units' dilations, fixed in the reference.
const DILATIONS: [usize; 3] = [1, 3, 9];

/// `x + conv2(snake2(conv1(snake1(x))))`, conv1 7 taps dilated, conv2 pointwise.
#[derive(Clone, Debug)]
struct ResidualUnit {
    act1: SnakeBeta,
    conv1: CausalConv,
    act2: SnakeBeta,
    conv2: CausalConv,
}

impl ResidualUnit {
    fn load(ckpt: &Checkpoint, module: &str, dim: usize, dilation: usize) -> Result<ResidualUnit, LoadError> {
        Ok(ResidualUnit {
            act1: SnakeBeta::load(ckpt, &format!("{module}.act1"), dim)?,
            conv1: CausalConv::load(ckpt, &format!("{module}.conv1"), ConvShape::new(dim, dim, 7).dilation(dilation))?,
            act2: SnakeBeta::load(ckpt, &format!("{module}.act2"), dim)?,
            conv2: CausalConv::load(ckpt, &format!("{module}.conv2"), ConvShape::new(dim, dim, 1))?,
        })
    }

    fn stream(&self) -> Box<dyn Stream + Send + '_> {
        let body = Chain(vec![
            SnakeConv::new(Some(&self.act1), self.conv1.stream()),
            SnakeConv::new(Some(&self.act2), self.conv2.stream()),
        ]);
        Box::new(Residual(body))
    }
}

/// A decoder block (`decoder.{i}.block`): SnakeBeta, the upsampling, three residual units.
#[derive(Clone, Debug)]
struct DecoderBlock {
    snake: SnakeBeta,
    up: CausalUp,
    units: Vec<ResidualUnit>,
}

impl DecoderBlock {
    fn load(ckpt: &Checkpoint, module: &str, inp: usize, out: usize, rate: usize) -> Result<DecoderBlock, LoadError> {
        let up = CausalUp::load(ckpt, &format!("{module}.1"), ConvShape::new(inp, out, 2 * rate).stride(rate))?;
        let units = DILATIONS
            .iter()
            .enumerate()
            .map(|(i, &d)| ResidualUnit::load(ckpt, &format!("{module}.{}", i + 2), out, d))
            .collect::<Result<_, _>>()?;
        Ok(DecoderBlock { snake: SnakeBeta::load(ckpt, &format!("{module}.0"), inp)?, up, units })
    }
}

/// The back end, from the upsampled latent (`[latent_dim, len]`) to one channel of audio
/// before the clamp.
#[derive(Clone, Debug)]
pub(crate) struct Vocoder {
    input: CausalConv,
    blocks: Vec<DecoderBlock>,
    snake: SnakeBeta,
    output: CausalConv,
}

impl Vocoder {
    /// The modules under `prefix` (`decoder.decoder`), numbered as the reference's list.
    pub fn load(ckpt: &Checkpoint, prefix: &str, c: &DecoderConfig) -> Result<Vocoder, LoadError> {
        let input = CausalConv::load(ckpt, &format!("{prefix}.0"), ConvShape::new(c.latent_dim, c.decoder_dim, 7))?;
        let mut inp = c.decoder_dim;
        let mut blocks = Vec::new();
        for (i, &rate) in c.upsample_rates.iter().enumerate() {
            let out = c.block_channels(i);
            blocks.push(DecoderBlock::load(ckpt, &format!("{prefix}.{}.block", i + 1), inp, out, rate)?);
            inp = out;
        }
        let n = blocks.len();
        let snake = SnakeBeta::load(ckpt, &format!("{prefix}.{}", n + 1), inp)?;
        let output = CausalConv::load(ckpt, &format!("{prefix}.{}", n + 2), ConvShape::new(inp, 1, 7))?;
        Ok(Vocoder { input, blocks, snake, output })
    }

    /// Sets the arithmetic of the blocks' upsampling and of their residual units' dilated
    /// convolutions (nine tenths of the back end's multiply-adds; the pointwise ones stay
    /// with the GEMM their shape picks).
    pub fn set_precision(&mut self, precision: Precision) {
        let method = precision.method();
        for block in &mut self.blocks {
            block.up.set_method(method).expect("a direct method does every one-group upsampling");
            for unit in &mut block.units {
                unit.conv1.set_method(method).expect("a direct method does every stride-1, one-group convolution");
            }
        }
    }

    /// The stream pieces, in order.
    pub fn streams(&self) -> Vec<Box<dyn Stream + Send + '_>> {
        let mut pieces: Vec<Box<dyn Stream + Send + '_>> = vec![Box::new(SnakeConv::new(None, self.input.stream()))];
        for block in &self.blocks {
            pieces.push(Box::new(SnakeConv::new(Some(&block.snake), block.up.stream())));
            pieces.extend(block.units.iter().map(ResidualUnit::stream));
        }
        pieces.push(Box::new(SnakeConv::new(Some(&self.snake), self.output.stream())));
        pieces
    }
}
