//! SnakeBeta, the decoder's periodic activation: `x + sin²(αx)/β` per channel, with α and
//! β stored as logarithms (BigVGAN's form).

use crate::checkpoint::{Checkpoint, CheckpointError};
use crate::kernels::{activation, rows, Cpu};
use crate::models::stream::Block;

/// What the reference adds to β so that it never divides by zero.
const NO_DIV_BY_ZERO: f32 = 1e-9;

/// One SnakeBeta's per-channel constants, exponentiated once at load.
#[derive(Clone, Debug)]
pub(crate) struct SnakeBeta {
    alpha: Vec<f32>,
    /// 1 / (e^β + 1e-9), as the reference computes it.
    inv_beta: Vec<f32>,
}

impl SnakeBeta {
    /// `{module}.alpha` and `{module}.beta`, `[channels]` each.
    pub fn load(ckpt: &Checkpoint, module: &str, channels: usize) -> Result<SnakeBeta, CheckpointError> {
        let alpha = ckpt.f32(&format!("{module}.alpha"), &[channels])?.iter().map(|a| a.exp()).collect();
        let beta = ckpt.f32(&format!("{module}.beta"), &[channels])?;
        Ok(SnakeBeta { alpha, inv_beta: beta.iter().map(|b| 1.0 / (b.exp() + NO_DIV_BY_ZERO)).collect() })
    }

    pub fn channels(&self) -> usize {
        self.alpha.len()
    }

    /// x + sin²(αx)/β for `x` (`[channels, len]`), each value on its own, so a stream gets
    /// the same bits as the whole signal. Each row is activated as it is copied, while it is
    /// in cache (the input stays: a residual branch adds it back).
    pub fn apply(&self, cpu: Cpu, x: &Block) -> Block {
        debug_assert_eq!(x.channels, self.channels());
        let mut out = vec![0.0; x.data.len()];
        rows::for_each_row_mut(&mut out, x.len, |c, row| {
            row.copy_from_slice(&x.data[c * x.len..][..x.len]);
            activation::snake_beta(cpu, row, self.alpha[c], self.inv_beta[c]);
        });
        Block::new(out, x.channels, x.len)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn snake_beta_is_x_plus_sin_squared_over_beta() {
        let snake = SnakeBeta { alpha: vec![1.0, 2.0f32.exp()], inv_beta: vec![1.0, 1.0 / (0.5f32.exp() + 1e-9)] };
        let want = |x: f64, a: f64, b: f64| x + (x * a.exp()).sin().powi(2) / b.exp();
        for cpu in crate::kernels::testing::available() {
            let x = snake.apply(cpu, &Block::new(vec![0.5, -1.0, 0.5, -1.0], 2, 2)).data;
            for (got, want) in
                x.iter().zip([want(0.5, 0.0, 0.0), want(-1.0, 0.0, 0.0), want(0.5, 2.0, 0.5), want(-1.0, 2.0, 0.5)])
            {
                assert!((f64::from(*got) - want).abs() < 1e-6, "{} {got} vs {want}", cpu.isa());
            }
        }
    }
}
