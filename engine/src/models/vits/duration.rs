//! The stochastic duration predictor, run in reverse: noise (scaled by `noise_w`) goes
//! through the inverse of its normalising flow, conditioned on the text encoding, and comes
//! out as log-durations per phoneme.
//!
//! The flow is VITS's: an element-wise affine map, then coupling layers whose transform is
//! a monotonic rational-quadratic spline (Durkan et al., "Neural Spline Flows") with linear
//! tails, each preceded by a channel flip. As in VITS's inference, the first coupling layer
//! is skipped in reverse (it was trained as a "useless" flow and exports drop it).

use rayon::prelude::*;

use crate::kernels::activation;
use crate::kernels::conv::ConvShape;
use crate::kernels::Cpu;
use crate::models::nn::{rows_per_task, ChannelNorm, Conv};
use crate::tensors::{TensorError, Tensors};

use super::{dim, indices, VitsError};

const NORM_EPS: f32 = 1e-5;
/// The spline's domain is −TAIL_BOUND..TAIL_BOUND; outside it the map is the identity.
const TAIL_BOUND: f32 = 5.0;
const MIN_BIN_WIDTH: f32 = 1e-3;
const MIN_BIN_HEIGHT: f32 = 1e-3;
const MIN_DERIVATIVE: f32 = 1e-3;

/// Dilated depthwise-separable convolutions with residual connections (VITS `DDSConv`).
struct DdsConv {
    layers: Vec<(Conv, ChannelNorm, Conv, ChannelNorm)>,
}

impl DdsConv {
    fn load(t: &mut Tensors, module: &str, channels: usize) -> Result<DdsConv, TensorError> {
        let mut layers = Vec::new();
        while t.contains(&format!("{module}.convs_sep.{}.weight", layers.len())) {
            let i = layers.len();
            let [_, _, kernel] = dim::<3>(t, &format!("{module}.convs_sep.{i}.weight"))?;
            let dilation = kernel.pow(i as u32);
            let sep = ConvShape::new(channels, channels, kernel).groups(channels).dilation(dilation);
            layers.push((
                Conv::same(t, &format!("{module}.convs_sep.{i}"), sep)?,
                ChannelNorm::load(t, &format!("{module}.norms_1.{i}"), channels, NORM_EPS)?,
                Conv::same(t, &format!("{module}.convs_1x1.{i}"), ConvShape::new(channels, channels, 1))?,
                ChannelNorm::load(t, &format!("{module}.norms_2.{i}"), channels, NORM_EPS)?,
            ));
        }
        Ok(DdsConv { layers })
    }

    /// `x` (`[channels, len]`) in place, after adding the condition `g` if given.
    fn forward(&self, cpu: Cpu, x: &mut [f32], len: usize, g: Option<&[f32]>) -> Result<(), VitsError> {
        if let Some(g) = g {
            x.iter_mut().zip(g).for_each(|(a, b)| *a += b);
        }
        for (sep, norm_1, pointwise, norm_2) in &self.layers {
            let mut y = sep.forward(cpu, x, len)?;
            norm_1.apply(&mut y, len);
            gelu(cpu, &mut y, len);
            let mut y = pointwise.forward(cpu, &y, len)?;
            norm_2.apply(&mut y, len);
            gelu(cpu, &mut y, len);
            x.iter_mut().zip(&y).for_each(|(a, b)| *a += b);
        }
        Ok(())
    }
}

/// GELU over `y` (`[channels, len]`), blocks of rows shared out on the pool (sentence 0 of
/// the fixtures, 109 ids, on a Zen 1: durations 6.3-6.8 → 5.0-5.5 ms).
fn gelu(cpu: Cpu, y: &mut [f32], len: usize) {
    y.par_chunks_mut(rows_per_task(len)).for_each(|rows| activation::gelu_erf(cpu, rows));
}

/// A coupling layer: channel 0 conditions a spline applied to channel 1.
struct ConvFlow {
    pre: Conv,
    convs: DdsConv,
    proj: Conv,
    bins: usize,
    filter: usize,
}

impl ConvFlow {
    fn load(t: &mut Tensors, module: &str) -> Result<ConvFlow, TensorError> {
        let [filter, half, _] = dim::<3>(t, &format!("{module}.pre.weight"))?;
        let [params, ..] = dim::<3>(t, &format!("{module}.proj.weight"))?;
        Ok(ConvFlow {
            pre: Conv::same(t, &format!("{module}.pre"), ConvShape::new(half, filter, 1))?,
            convs: DdsConv::load(t, &format!("{module}.convs"), filter)?,
            proj: Conv::same(t, &format!("{module}.proj"), ConvShape::new(filter, params, 1))?,
            // widths, heights (bins each) and the bins − 1 inner derivatives.
            bins: (params / half + 1) / 3,
            filter,
        })
    }

    /// Inverts the layer on `z` (`[2, len]`) in place.
    fn reverse(&self, cpu: Cpu, z: &mut [f32], len: usize, g: &[f32]) -> Result<(), VitsError> {
        let (x0, x1) = z.split_at_mut(len);
        let mut h = self.pre.forward(cpu, x0, len)?;
        self.convs.forward(cpu, &mut h, len, Some(g))?;
        let h = self.proj.forward(cpu, &h, len)?;
        let per = 3 * self.bins - 1;
        let scale = 1.0 / (self.filter as f32).sqrt();
        let mut p = vec![0.0; per];
        for (t, y) in x1.iter_mut().enumerate() {
            for (k, v) in p.iter_mut().enumerate() {
                *v = h[k * len + t];
            }
            *y = spline_inverse(cpu, *y, &p, self.bins, scale);
        }
        Ok(())
    }
}

/// The inverse of the rational-quadratic spline whose `bins` widths, heights and inner
/// derivatives are the unnormalised `p` (widths and heights scaled by `scale`), as
/// `piecewise_rational_quadratic_transform(inverse=True, tails="linear")`.
fn spline_inverse(cpu: Cpu, y: f32, p: &[f32], bins: usize, scale: f32) -> f32 {
    if !(-TAIL_BOUND..=TAIL_BOUND).contains(&y) {
        return y;
    }
    let knots = |raw: &[f32], min: f32| -> Vec<f32> {
        let mut w: Vec<f32> = raw.iter().map(|v| v * scale).collect();
        activation::softmax(cpu, &mut w);
        let mut cum = Vec::with_capacity(bins + 1);
        cum.push(0.0f32);
        let mut sum = 0.0f32;
        for v in &w {
            sum += min + (1.0 - min * bins as f32) * v;
            cum.push(sum);
        }
        for c in cum.iter_mut() {
            *c = 2.0 * TAIL_BOUND * *c - TAIL_BOUND;
        }
        cum[0] = -TAIL_BOUND;
        cum[bins] = TAIL_BOUND;
        cum
    };
    let xs = knots(&p[..bins], MIN_BIN_WIDTH);
    let ys = knots(&p[bins..2 * bins], MIN_BIN_HEIGHT);
    // The end derivatives are pinned to 1: softplus(ln(e^(1 − min) − 1)) + min.
    let derivative = |k: usize| -> f32 {
        if k == 0 || k == bins {
            1.0
        } else {
            MIN_DERIVATIVE + softplus(p[2 * bins + k - 1])
        }
    };
    // The bin whose output range holds y (the last knot nudged up by 1e-6, as the reference).
    let bin = (0..=bins).filter(|&k| y >= if k == bins { ys[k] + 1e-6 } else { ys[k] }).count().clamp(1, bins) - 1;
    let (x_lo, width) = (xs[bin], xs[bin + 1] - xs[bin]);
    let (y_lo, height) = (ys[bin], ys[bin + 1] - ys[bin]);
    let delta = height / width;
    let (d0, d1) = (derivative(bin), derivative(bin + 1));
    let dy = y - y_lo;
    let a = dy * (d0 + d1 - 2.0 * delta) + height * (delta - d0);
    let b = height * d0 - dy * (d0 + d1 - 2.0 * delta);
    let c = -delta * dy;
    let discriminant = (b * b - 4.0 * a * c).max(0.0);
    let root = (2.0 * c) / (-b - discriminant.sqrt());
    root * width + x_lo
}

fn softplus(x: f32) -> f32 {
    // ln(1 + e^x) without overflow, as torch (linear above 20).
    if x > 20.0 {
        x
    } else {
        x.exp().ln_1p()
    }
}

pub struct DurationPredictor {
    pre: Conv,
    convs: DdsConv,
    proj: Conv,
    /// Applied in this order in reverse, each after a channel flip.
    flows: Vec<ConvFlow>,
    /// The element-wise affine flow's mean and e^−log-scale, per channel.
    affine_mean: Vec<f32>,
    affine_inv_scale: Vec<f32>,
}

impl DurationPredictor {
    pub fn load(t: &mut Tensors) -> Result<DurationPredictor, TensorError> {
        let [filter, hidden, _] = dim::<3>(t, "dp.pre.weight")?;
        let pre = Conv::same(t, "dp.pre", ConvShape::new(hidden, filter, 1))?;
        let convs = DdsConv::load(t, "dp.convs", filter)?;
        let proj = Conv::same(t, "dp.proj", ConvShape::new(filter, filter, 1))?;
        let mut present = indices(t, "dp.flows.", ".pre.weight");
        present.reverse();
        let flows = present.iter().map(|i| ConvFlow::load(t, &format!("dp.flows.{i}"))).collect::<Result<_, _>>()?;
        let affine_mean = t.take("dp.flows.0.m", &[2, 1])?;
        // Exports fold e^−logs into a constant; a checkpoint stores logs.
        let affine_inv_scale = if t.contains("dp.flows.0.logs") {
            t.take("dp.flows.0.logs", &[2, 1])?.iter().map(|l| (-l).exp()).collect()
        } else {
            t.take("/dp/flows.0/Exp_output_0", &[2, 1])?
        };
        Ok(DurationPredictor { pre, convs, proj, flows, affine_mean, affine_inv_scale })
    }

    /// Log-durations per phoneme from the encoder's `hidden` (`[channels, len]`) and
    /// `noise` (`[2, len]`, standard normal scaled by `noise_w`; zeros for the mean path).
    pub fn reverse(&self, cpu: Cpu, hidden: &[f32], len: usize, mut noise: Vec<f32>) -> Result<Vec<f32>, VitsError> {
        if len == 0 {
            return Ok(Vec::new());
        }
        let mut g = self.pre.forward(cpu, hidden, len)?;
        self.convs.forward(cpu, &mut g, len, None)?;
        let g = self.proj.forward(cpu, &g, len)?;
        let flip = |z: &mut Vec<f32>| {
            let tail = z.split_off(len);
            z.splice(0..0, tail);
        };
        for flow in &self.flows {
            flip(&mut noise);
            flow.reverse(cpu, &mut noise, len, &g)?;
        }
        flip(&mut noise);
        for (c, row) in noise.chunks_exact_mut(len).enumerate() {
            row.iter_mut().for_each(|v| *v = (*v - self.affine_mean[c]) * self.affine_inv_scale[c]);
        }
        noise.truncate(len);
        Ok(noise)
    }
}
