//! Elementwise activations (exp, tanh, sigmoid, SiLU, both GELUs, sin, SnakeBeta),
//! rounding, softmax, RMS / layer normalisation and rotary position embedding.
//!
//! Each has a scalar reference and AVX2 / AVX-512 paths. The transcendental ones share one
//! vector `exp` per instruction set. Both SIMD paths finish a slice with one masked load and
//! store rather than a scalar loop, so a value gets the same bits wherever it sits in the
//! slice: cutting a stream into chunks of any size does not change the output. None
//! allocates.
//!
//! The tolerances below hold on every path; the tests check them against f64 on the same
//! f32 inputs. The scalar path takes `exp`, `tanh` and `sin` from std.

use std::f32::consts::{FRAC_1_SQRT_2, LOG2_E};
use std::f64::consts::{FRAC_1_SQRT_2 as FRAC_1_SQRT_2_F64, FRAC_2_SQRT_PI};

use super::cpu::{Cpu, Isa};
use super::vector;

/// e^x = 2^n·e^r with x = n·ln 2 + r. ln 2 is split in two; the high part has 9 significant
/// bits, so n·LN2_HI is exact for every n in range and r stays accurate to its last bit.
const LN2_HI: f32 = 355.0 / 512.0;
const LN2_LO: f32 = -2.121_944_4e-4;
/// e^r ≈ 1 + r + r²·P(r) on |r| ≤ ln2/2 (Cephes `expf`), highest degree first.
#[allow(clippy::excessive_precision)] // as published
const EXP_POLY: [f32; 6] =
    [1.9875691500e-4, 1.3981999507e-3, 8.3334519073e-3, 4.1665795894e-2, 1.6666665459e-1, 5.0000001201e-1];
/// The smallest f32 whose e^x is a normal float and the largest whose e^x is finite; below
/// them the vector exp gives 0, above +∞.
const EXP_LO: f32 = -87.33654;
const EXP_HI: f32 = 88.72283;

/// tanh x ≈ x + x³·P(x²) below TANH_SMALL (Cephes `tanhf`), where (1 − e^−2|x|)/(1 + e^−2|x|)
/// would lose relative precision to cancellation.
#[allow(clippy::excessive_precision)] // as published
const TANH_POLY: [f32; 5] =
    [-5.70498872745e-3, 2.06390887954e-2, -5.37397155531e-2, 1.33314422036e-1, -3.33332819422e-1];
const TANH_SMALL: f32 = 0.625;

/// erfc z ≈ t·e^(P(t) − z²) with t = 1/(1 + z/2) for z ≥ 0: Numerical Recipes' `erfcc`, a
/// Chebyshev fit with relative error below 1.2e-7 everywhere. Being relative, it keeps GELU's
/// negative tail accurate where 1 + erf(x) would cancel.
#[allow(clippy::excessive_precision)] // as published
const ERFC_POLY: [f32; 10] = [
    0.17087277,
    -0.82215223,
    1.48851587,
    -1.13520398,
    0.27886807,
    -0.18628806,
    0.09678418,
    0.37409196,
    1.00002368,
    -1.26551223,
];

/// 1 + tanh u = 2σ(2u), so GELU's tanh form is x·σ(x·(K + K3·x²)) without the cancellation
/// of 1 + tanh for negative x.
const GELU_K: f32 = (2.0 * FRAC_2_SQRT_PI * FRAC_1_SQRT_2_F64) as f32;
const GELU_K3: f32 = (2.0 * FRAC_2_SQRT_PI * FRAC_1_SQRT_2_F64 * 0.044715) as f32;

/// sin y = ±sin r or ±cos r with y = q·π/2 + r, |r| ≤ π/4 (Cody–Waite). π/2 is split in
/// three f32s; q·PIO2_HI is a multiple of 2⁻²³ and so is y from |y| ≥ 1 on (below, q is 0 or
/// ±1), so the first fused step y − q·PIO2_HI is exact, and the three parts leave 1e-23·|q|
/// of π/2 out.
const PIO2_HI: f32 = 1.570_796_4;
const PIO2_MID: f32 = -4.371_139e-8;
const PIO2_LO: f32 = -1.715_124_5e-15;
const FRAC_2_PI: f32 = std::f32::consts::FRAC_2_PI;
/// sin r ≈ r + r³·P(r²) and cos r ≈ 1 − r²/2 + r⁴·Q(r²) on |r| ≤ π/4 (Cephes `sinf`, `cosf`),
/// highest degree first.
#[allow(clippy::excessive_precision)] // as published
const SIN_POLY: [f32; 3] = [-1.9515295891e-4, 8.3321608736e-3, -1.6666654611e-1];
#[allow(clippy::excessive_precision)] // as published
const COS_POLY: [f32; 3] = [2.443315711809948e-5, -1.388731625493765e-3, 4.166664568298827e-2];
/// Up to this |y| the SIMD reduction keeps sin within its bound (checked on every f32 below
/// it); lanes beyond it, ±∞ included, take std's sin, whose reduction is exact at any size.
const SIN_REDUCED_MAX: f32 = 65536.0;

/// The three-way match on `cpu`'s level, calling `$f` from that level's module.
macro_rules! dispatch {
    ($cpu:expr, $f:ident($($arg:expr),*)) => {
        match $cpu.isa() {
            Isa::Scalar => scalar::$f($($arg),*),
            // SAFETY: the `Cpu` token proves the level's instructions exist.
            Isa::Avx2 => unsafe { avx2::$f($($arg),*) },
            _ => unsafe { avx512::$f($($arg),*) },
        }
    };
}

/// Applies `$op` in place: `scalar::$op` per value, or the level's `$op` per vector.
macro_rules! elementwise {
    ($cpu:expr, $x:expr, $op:ident) => {
        match $cpu.isa() {
            Isa::Scalar => $x.iter_mut().for_each(|v| *v = scalar::$op(*v)),
            // SAFETY: the `Cpu` token proves the level's instructions exist.
            Isa::Avx2 => unsafe { avx2::map($x, |v| avx2::$op(v)) },
            _ => unsafe { avx512::map($x, |v| avx512::$op(v)) },
        }
    };
}

/// x ← e^x. Relative error ≤ 1.2e-7 (about 1 ulp) where e^x is a normal f32; below
/// x = −87.34 the SIMD paths give 0 where std gives subnormals, above 88.72 all give +∞.
/// NaN stays NaN.
pub fn exp(cpu: Cpu, x: &mut [f32]) {
    elementwise!(cpu, x, exp)
}

/// x ← tanh x. Relative error ≤ 2e-7 (an odd polynomial near 0, e^−2|x| beyond); ±∞ give
/// ±1, NaN stays NaN.
pub fn tanh(cpu: Cpu, x: &mut [f32]) {
    elementwise!(cpu, x, tanh)
}

/// x ← σ(x) = 1/(1 + e^−x), from e^−|x| so nothing overflows. Relative error ≤ 2.5e-7;
/// below x = −87.34, where σ(x) is subnormal, the SIMD paths give 0. ±∞ give 1 and 0.
pub fn sigmoid(cpu: Cpu, x: &mut [f32]) {
    elementwise!(cpu, x, sigmoid)
}

/// x ← x·σ(x) (SiLU, swish). Relative error ≤ 3e-7; below x = −87.34 (results under
/// 1.2e-36) the SIMD paths give −0. −∞ gives NaN (−∞·0).
pub fn silu(cpu: Cpu, x: &mut [f32]) {
    elementwise!(cpu, x, silu)
}

/// x ← x/2·(1 + tanh(√(2/π)(x + 0.044715x³))), GELU's tanh approximation, computed as
/// x·σ(u) with u = 2√(2/π)(x + 0.044715x³). Relative error ≤ 3e-7 + 2e-7·|u|: rounding u to
/// f32 costs |u| times its own error through σ's slope in the negative tail. That is under
/// 1.7e-6 for |x| ≤ 3 and 1.4e-5 at x = −9, where the result is −1e-28. −∞ gives NaN.
pub fn gelu_tanh(cpu: Cpu, x: &mut [f32]) {
    elementwise!(cpu, x, gelu_tanh)
}

/// x ← x/2·(1 + erf(x/√2)), exact GELU, with erf from a Chebyshev fit of erfc (relative
/// error 1.2e-7; the erf it implies is within 6e-7 absolute). Relative error of the result
/// ≤ 5e-7 + 4e-8·x², under 9e-7 for |x| ≤ 3: in the negative tail the f32 rounding of the
/// exponent −x²/2 dominates. −∞ gives NaN.
pub fn gelu_erf(cpu: Cpu, x: &mut [f32]) {
    elementwise!(cpu, x, gelu_erf)
}

/// x ← sin x. Relative error ≤ 1.7e-7 (1.4 ulp) for every finite x, including near the
/// zeros of sin: below |x| = 65536 the SIMD paths reduce x by π/2 in three parts (checked
/// on every f32 there), beyond they call std, as the scalar path does everywhere (0.53 ulp).
/// ±∞ and NaN give NaN.
pub fn sin(cpu: Cpu, x: &mut [f32]) {
    elementwise!(cpu, x, sin)
}

/// x ← x + sin²(αx)·inv_beta, SnakeBeta (BigVGAN's periodic activation) on one channel whose
/// β is given as 1/β. αx is rounded to f32 first, as an f32 model computes it; from there
/// the error is [`sin`]'s twice over on sin², plus the roundings of the square and the
/// result: within 4.6e-7·|sin²(αx)·inv_beta| + ε/2·|result|.
pub fn snake_beta(cpu: Cpu, x: &mut [f32], alpha: f32, inv_beta: f32) {
    dispatch!(cpu, snake_beta(x, alpha, inv_beta))
}

/// `out` ← max(x, slope·x), the leaky ReLU for a slope below 1, while copying `x` into
/// `out` (as long as `x`): bit-exact with `x.max(x * slope)` on every path (NaN stays NaN).
pub fn leaky_relu_into(cpu: Cpu, x: &[f32], slope: f32, out: &mut [f32]) {
    assert_eq!(x.len(), out.len(), "leaky_relu_into: input and output lengths differ");
    dispatch!(cpu, leaky_relu_into(x, slope, out))
}

/// x ← ⌊x⌋, bit-exact with [`f32::floor`] (signed zeros, ±∞ and NaN pass through).
pub fn floor(cpu: Cpu, x: &mut [f32]) {
    elementwise!(cpu, x, floor)
}

/// x ← ⌈x⌉, bit-exact with [`f32::ceil`] (ceil(−0.5) = −0).
pub fn ceil(cpu: Cpu, x: &mut [f32]) {
    elementwise!(cpu, x, ceil)
}

/// x ← x rounded to the nearest integer, halves away from zero: bit-exact with
/// [`f32::round`] (round(−0.3) = −0, round(0.49999997) = 0).
pub fn round(cpu: Cpu, x: &mut [f32]) {
    elementwise!(cpu, x, round)
}

/// x ← x rounded toward zero, bit-exact with [`f32::trunc`].
pub fn trunc(cpu: Cpu, x: &mut [f32]) {
    elementwise!(cpu, x, trunc)
}

/// x ← e^(x − max x) / Σ e^(x − max x). Subtracting the maximum keeps every exponent ≤ 0, so
/// no input overflows; −∞ entries (masked positions) get exactly 0. Relative error per entry
/// ≤ 5e-7 + |x − max x|·ε/2 (rounding x − max x to f32) + 4ε·√n (the sum). Empty input is
/// left as is; a NaN, +∞ or an all-−∞ input gives NaN everywhere.
pub fn softmax(cpu: Cpu, x: &mut [f32]) {
    dispatch!(cpu, softmax(x))
}

/// out = x / √(mean(x²) + eps) · weight. Relative error per entry ≤ 5e-7 plus the sum of
/// squares' rounding, 2ε·√n. Panics if the slices' lengths differ.
pub fn rms_norm(cpu: Cpu, x: &[f32], weight: &[f32], eps: f32, out: &mut [f32]) {
    assert!(weight.len() == x.len() && out.len() == x.len(), "rms_norm of slices of different lengths");
    let scale = 1.0 / (vector::dot(cpu, x, x) / x.len() as f32 + eps).sqrt();
    dispatch!(cpu, affine(x, 0.0, scale, weight, None, out))
}

/// out = (x − mean x) / √(var x + eps) · weight + bias, with the population variance. The
/// variance is summed about the mean in a second pass, since `E[x²] − mean²` cancels when the
/// mean dwarfs the spread. Error per entry ≤ 1e-6 + 4ε·√n relative to
/// |x − mean|·scale·|weight| + |mean|·scale·|weight| + |bias|. Panics if the slices' lengths
/// differ.
pub fn layer_norm(cpu: Cpu, x: &[f32], weight: &[f32], bias: &[f32], eps: f32, out: &mut [f32]) {
    assert!(
        weight.len() == x.len() && bias.len() == x.len() && out.len() == x.len(),
        "layer_norm of slices of different lengths"
    );
    let n = x.len() as f32;
    let mean = dispatch!(cpu, sum(x)) / n;
    let scale = 1.0 / (dispatch!(cpu, sq_dev(x, mean)) / n + eps).sqrt();
    dispatch!(cpu, affine(x, mean, scale, weight, Some(bias), out))
}

/// Rotary position embedding on one head, rotate-half layout (GPT-NeoX, Hugging Face Qwen):
/// with `h = x.len() / 2`, each pair `(x[i], x[i+h])` becomes
/// `(x[i]·cos[i] − x[i+h]·sin[i], x[i+h]·cos[i] + x[i]·sin[i])`. `cos` and `sin` hold h
/// values for this position. Each output's error is at most 2ε times the sum of its two
/// products' magnitudes. Panics unless `x` is twice as long as `cos` and `sin`.
pub fn rope(cpu: Cpu, x: &mut [f32], cos: &[f32], sin: &[f32]) {
    assert_eq!(cos.len(), sin.len(), "rope with cos and sin tables of different lengths");
    assert_eq!(x.len(), 2 * cos.len(), "rope needs a head twice as long as its cos and sin tables");
    dispatch!(cpu, rope(x, cos, sin))
}

/// Recomputes with std's sin the lanes of `v` (the SIMD sin of `y`) set in `far`: the SIMD
/// paths' way out for arguments beyond SIN_REDUCED_MAX, which never occur in practice.
#[cold]
fn std_sin_lanes(y: &[f32], v: &mut [f32], far: u32) {
    for (i, (y, v)) in y.iter().zip(v).enumerate() {
        if far >> i & 1 == 1 {
            *v = y.sin();
        }
    }
}

mod scalar {
    use super::{ERFC_POLY, GELU_K, GELU_K3};
    use std::f32::consts::FRAC_1_SQRT_2;

    /// Horner's rule, coefficients highest degree first.
    fn poly(x: f32, c: &[f32]) -> f32 {
        c[1..].iter().fold(c[0], |acc, &k| acc * x + k)
    }

    pub fn exp(x: f32) -> f32 {
        x.exp()
    }

    pub fn tanh(x: f32) -> f32 {
        x.tanh()
    }

    pub fn sin(x: f32) -> f32 {
        x.sin()
    }

    pub fn leaky_relu_into(x: &[f32], slope: f32, out: &mut [f32]) {
        out.iter_mut().zip(x).for_each(|(o, &v)| *o = v.max(v * slope));
    }

    pub fn snake_beta(x: &mut [f32], alpha: f32, inv_beta: f32) {
        for v in x {
            let s = (*v * alpha).sin();
            *v += inv_beta * (s * s);
        }
    }

    pub fn sigmoid(x: f32) -> f32 {
        let z = (-x.abs()).exp();
        let s = 1.0 / (1.0 + z);
        if x.is_sign_negative() {
            z * s
        } else {
            s
        }
    }

    pub fn silu(x: f32) -> f32 {
        x * sigmoid(x)
    }

    pub fn gelu_tanh(x: f32) -> f32 {
        x * sigmoid(x * (GELU_K + GELU_K3 * x * x))
    }

    pub fn gelu_erf(x: f32) -> f32 {
        let t = 1.0 / (1.0 + 0.5 * FRAC_1_SQRT_2 * x.abs());
        // Fused like the SIMD paths, so the exponent rounds once.
        let half_erfc = 0.5 * t * (-0.5 * x).mul_add(x, poly(t, &ERFC_POLY)).exp();
        x * if x.is_sign_negative() { half_erfc } else { 1.0 - half_erfc }
    }

    pub fn floor(x: f32) -> f32 {
        x.floor()
    }

    pub fn ceil(x: f32) -> f32 {
        x.ceil()
    }

    pub fn round(x: f32) -> f32 {
        x.round()
    }

    pub fn trunc(x: f32) -> f32 {
        x.trunc()
    }

    pub fn softmax(x: &mut [f32]) {
        let max = x.iter().copied().fold(f32::NEG_INFINITY, f32::max);
        x.iter_mut().for_each(|v| *v = (*v - max).exp());
        let inv = 1.0 / sum(x);
        x.iter_mut().for_each(|v| *v *= inv);
    }

    pub fn sum(x: &[f32]) -> f32 {
        x.iter().sum()
    }

    pub fn sq_dev(x: &[f32], c: f32) -> f32 {
        x.iter().map(|v| (v - c) * (v - c)).sum()
    }

    pub fn affine(x: &[f32], shift: f32, scale: f32, weight: &[f32], bias: Option<&[f32]>, out: &mut [f32]) {
        for (i, o) in out.iter_mut().enumerate() {
            let y = (x[i] - shift) * scale * weight[i];
            *o = bias.map_or(y, |b| y + b[i]);
        }
    }

    pub fn rope(x: &mut [f32], cos: &[f32], sin: &[f32]) {
        let (lo, hi) = x.split_at_mut(cos.len());
        for (((a, b), c), s) in lo.iter_mut().zip(hi).zip(cos).zip(sin) {
            (*a, *b) = (*a * c - *b * s, *b * c + *a * s);
        }
    }
}

#[cfg(target_arch = "x86_64")]
mod avx2 {
    use std::arch::x86_64::*;

    use super::{
        std_sin_lanes, COS_POLY, ERFC_POLY, EXP_HI, EXP_LO, EXP_POLY, FRAC_1_SQRT_2, FRAC_2_PI, GELU_K, GELU_K3,
        LN2_HI, LN2_LO, LOG2_E, PIO2_HI, PIO2_LO, PIO2_MID, SIN_POLY, SIN_REDUCED_MAX, TANH_POLY, TANH_SMALL,
    };
    use crate::kernels::vector::avx2::{hsum, lanes, load, store, W};

    /// out ← max(x, slope·x); where x is NaN so is slope·x, and `max` returns a NaN.
    #[target_feature(enable = "avx2,fma")]
    pub unsafe fn leaky_relu_into(x: &[f32], slope: f32, out: &mut [f32]) {
        let (n, px, po, slope) = (x.len(), x.as_ptr(), out.as_mut_ptr(), _mm256_set1_ps(slope));
        for i in (0..n).step_by(W) {
            let v = load(px.add(i), n - i);
            store(po.add(i), n - i, _mm256_max_ps(v, _mm256_mul_ps(v, slope)));
        }
    }

    /// x ← op(x), 8 lanes at a time.
    #[target_feature(enable = "avx2,fma")]
    pub unsafe fn map(x: &mut [f32], op: impl Fn(__m256) -> __m256) {
        let (n, p) = (x.len(), x.as_mut_ptr());
        for i in (0..n).step_by(W) {
            store(p.add(i), n - i, op(load(p.add(i), n - i)));
        }
    }

    /// `step` folded over `x` from `init`, 8 lanes at a time; in a short tail the lanes past
    /// the end keep their value.
    #[target_feature(enable = "avx2,fma")]
    unsafe fn fold(x: &[f32], init: __m256, step: impl Fn(__m256, __m256) -> __m256) -> __m256 {
        let (n, p) = (x.len(), x.as_ptr());
        let mut acc = init;
        for i in (0..n).step_by(W) {
            let next = step(acc, load(p.add(i), n - i));
            acc = if n - i >= W { next } else { _mm256_blendv_ps(acc, next, _mm256_castsi256_ps(lanes(n - i))) };
        }
        acc
    }

    /// Horner's rule, coefficients highest degree first.
    #[target_feature(enable = "avx2,fma")]
    unsafe fn poly(x: __m256, c: &[f32]) -> __m256 {
        c[1..].iter().fold(_mm256_set1_ps(c[0]), |acc, &k| _mm256_fmadd_ps(acc, x, _mm256_set1_ps(k)))
    }

    #[target_feature(enable = "avx2,fma")]
    unsafe fn abs(x: __m256) -> __m256 {
        _mm256_andnot_ps(_mm256_set1_ps(-0.0), x)
    }

    #[target_feature(enable = "avx2,fma")]
    unsafe fn sign(x: __m256) -> __m256 {
        _mm256_and_ps(_mm256_set1_ps(-0.0), x)
    }

    #[target_feature(enable = "avx2,fma")]
    pub unsafe fn exp(x: __m256) -> __m256 {
        let n = _mm256_round_ps::<{ _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC }>(_mm256_mul_ps(
            x,
            _mm256_set1_ps(LOG2_E),
        ));
        let r = _mm256_fnmadd_ps(n, _mm256_set1_ps(LN2_LO), _mm256_fnmadd_ps(n, _mm256_set1_ps(LN2_HI), x));
        let y = _mm256_fmadd_ps(poly(r, &EXP_POLY), _mm256_mul_ps(r, r), r);
        let y = _mm256_add_ps(y, _mm256_set1_ps(1.0));
        // Adding n to the exponent field scales by 2^n; inside EXP_LO..=EXP_HI the result is
        // a normal float, outside it the blends below replace whatever this made.
        let y = _mm256_castsi256_ps(_mm256_add_epi32(
            _mm256_castps_si256(y),
            _mm256_slli_epi32::<23>(_mm256_cvtps_epi32(n)),
        ));
        let y = _mm256_blendv_ps(y, _mm256_setzero_ps(), _mm256_cmp_ps::<_CMP_LT_OQ>(x, _mm256_set1_ps(EXP_LO)));
        _mm256_blendv_ps(y, _mm256_set1_ps(f32::INFINITY), _mm256_cmp_ps::<_CMP_GT_OQ>(x, _mm256_set1_ps(EXP_HI)))
    }

    #[target_feature(enable = "avx2,fma")]
    pub unsafe fn tanh(x: __m256) -> __m256 {
        let (one, a) = (_mm256_set1_ps(1.0), abs(x));
        let e = exp(_mm256_mul_ps(a, _mm256_set1_ps(-2.0)));
        let large = _mm256_or_ps(_mm256_div_ps(_mm256_sub_ps(one, e), _mm256_add_ps(one, e)), sign(x));
        let z = _mm256_mul_ps(x, x);
        let small = _mm256_fmadd_ps(_mm256_mul_ps(poly(z, &TANH_POLY), z), x, x);
        _mm256_blendv_ps(large, small, _mm256_cmp_ps::<_CMP_LT_OQ>(a, _mm256_set1_ps(TANH_SMALL)))
    }

    #[target_feature(enable = "avx2,fma")]
    pub unsafe fn sin(y: __m256) -> __m256 {
        let q = _mm256_round_ps::<{ _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC }>(_mm256_mul_ps(
            y,
            _mm256_set1_ps(FRAC_2_PI),
        ));
        let r = _mm256_fnmadd_ps(q, _mm256_set1_ps(PIO2_HI), y);
        let r = _mm256_fnmadd_ps(q, _mm256_set1_ps(PIO2_MID), r);
        let r = _mm256_fnmadd_ps(q, _mm256_set1_ps(PIO2_LO), r);
        let z = _mm256_mul_ps(r, r);
        let s = _mm256_fmadd_ps(_mm256_mul_ps(poly(z, &SIN_POLY), z), r, r);
        let c = _mm256_fmadd_ps(
            _mm256_mul_ps(poly(z, &COS_POLY), z),
            z,
            _mm256_fnmadd_ps(_mm256_set1_ps(0.5), z, _mm256_set1_ps(1.0)),
        );
        // Odd quadrants take the cosine; quadrants 2 and 3 (bit 1 of q, moved to the sign
        // bit) negate. q is integral, so the conversion is exact.
        let quadrant = _mm256_cvtps_epi32(q);
        let odd = _mm256_cmpeq_epi32(_mm256_and_si256(quadrant, _mm256_set1_epi32(1)), _mm256_set1_epi32(1));
        let v = _mm256_blendv_ps(s, c, _mm256_castsi256_ps(odd));
        let flip = _mm256_slli_epi32::<30>(_mm256_and_si256(quadrant, _mm256_set1_epi32(2)));
        let v = _mm256_xor_ps(v, _mm256_castsi256_ps(flip));
        let far = _mm256_movemask_ps(_mm256_cmp_ps::<_CMP_GT_OQ>(abs(y), _mm256_set1_ps(SIN_REDUCED_MAX)));
        if far == 0 {
            return v;
        }
        let (mut ys, mut vs) = ([0.0; W], [0.0; W]);
        _mm256_storeu_ps(ys.as_mut_ptr(), y);
        _mm256_storeu_ps(vs.as_mut_ptr(), v);
        std_sin_lanes(&ys, &mut vs, far as u32);
        _mm256_loadu_ps(vs.as_ptr())
    }

    #[target_feature(enable = "avx2,fma")]
    pub unsafe fn snake_beta(x: &mut [f32], alpha: f32, inv_beta: f32) {
        let (alpha, inv_beta) = (_mm256_set1_ps(alpha), _mm256_set1_ps(inv_beta));
        map(x, |v| {
            let s = sin(_mm256_mul_ps(v, alpha));
            _mm256_fmadd_ps(_mm256_mul_ps(s, s), inv_beta, v)
        })
    }

    #[target_feature(enable = "avx2,fma")]
    pub unsafe fn sigmoid(x: __m256) -> __m256 {
        // z = e^−|x| ≤ 1; σ is 1/(1 + z) for x ≥ 0 and z/(1 + z) below, neither overflowing.
        let one = _mm256_set1_ps(1.0);
        let z = exp(_mm256_or_ps(x, _mm256_set1_ps(-0.0)));
        let s = _mm256_div_ps(one, _mm256_add_ps(one, z));
        // blendv keys on each lane's sign bit, which for x is exactly "x is negative".
        _mm256_blendv_ps(s, _mm256_mul_ps(z, s), x)
    }

    #[target_feature(enable = "avx2,fma")]
    pub unsafe fn silu(x: __m256) -> __m256 {
        _mm256_mul_ps(x, sigmoid(x))
    }

    #[target_feature(enable = "avx2,fma")]
    pub unsafe fn gelu_tanh(x: __m256) -> __m256 {
        let u = _mm256_mul_ps(x, _mm256_fmadd_ps(_mm256_mul_ps(x, x), _mm256_set1_ps(GELU_K3), _mm256_set1_ps(GELU_K)));
        _mm256_mul_ps(x, sigmoid(u))
    }

    #[target_feature(enable = "avx2,fma")]
    pub unsafe fn gelu_erf(x: __m256) -> __m256 {
        let (one, half) = (_mm256_set1_ps(1.0), _mm256_set1_ps(0.5));
        let z = _mm256_mul_ps(abs(x), _mm256_set1_ps(FRAC_1_SQRT_2));
        let t = _mm256_div_ps(one, _mm256_fmadd_ps(half, z, one));
        // The exponent P(t) − x²/2 is taken from x, not from the rounded z (whose error would
        // cost x²·6e-8 relative), and fused so that it rounds once.
        let e = exp(_mm256_fnmadd_ps(_mm256_mul_ps(half, x), x, poly(t, &ERFC_POLY)));
        let half_erfc = _mm256_mul_ps(_mm256_mul_ps(half, t), e);
        // Φ(x) = erfc(−x/√2)/2: half_erfc itself for negative x, 1 − half_erfc otherwise.
        _mm256_mul_ps(x, _mm256_blendv_ps(_mm256_sub_ps(one, half_erfc), half_erfc, x))
    }

    #[target_feature(enable = "avx2,fma")]
    pub unsafe fn floor(x: __m256) -> __m256 {
        _mm256_round_ps::<{ _MM_FROUND_TO_NEG_INF | _MM_FROUND_NO_EXC }>(x)
    }

    #[target_feature(enable = "avx2,fma")]
    pub unsafe fn ceil(x: __m256) -> __m256 {
        _mm256_round_ps::<{ _MM_FROUND_TO_POS_INF | _MM_FROUND_NO_EXC }>(x)
    }

    #[target_feature(enable = "avx2,fma")]
    pub unsafe fn trunc(x: __m256) -> __m256 {
        _mm256_round_ps::<{ _MM_FROUND_TO_ZERO | _MM_FROUND_NO_EXC }>(x)
    }

    #[target_feature(enable = "avx2,fma")]
    pub unsafe fn round(x: __m256) -> __m256 {
        // x − trunc x is exact, so comparing it with ½ settles halfway cases (adding ½ first
        // would round 0.49999997 up). The step carries x's sign so that −0.3 gives −0.
        let t = trunc(x);
        let half_or_more = _mm256_cmp_ps::<_CMP_GE_OQ>(abs(_mm256_sub_ps(x, t)), _mm256_set1_ps(0.5));
        _mm256_add_ps(t, _mm256_or_ps(_mm256_and_ps(half_or_more, _mm256_set1_ps(1.0)), sign(x)))
    }

    #[target_feature(enable = "avx2,fma")]
    pub unsafe fn softmax(x: &mut [f32]) {
        let lanes_max = fold(x, _mm256_set1_ps(f32::NEG_INFINITY), |a, v| _mm256_max_ps(a, v));
        // Once per call, so a scalar pass over the 8 lanes is as good as a shuffle ladder.
        let mut max = [0.0; W];
        _mm256_storeu_ps(max.as_mut_ptr(), lanes_max);
        let max = _mm256_set1_ps(max.into_iter().fold(f32::NEG_INFINITY, f32::max));
        map(x, |v| exp(_mm256_sub_ps(v, max)));
        let inv = _mm256_set1_ps(1.0 / sum(x));
        map(x, |v| _mm256_mul_ps(v, inv));
    }

    #[target_feature(enable = "avx2,fma")]
    pub unsafe fn sum(x: &[f32]) -> f32 {
        hsum(fold(x, _mm256_setzero_ps(), |a, v| _mm256_add_ps(a, v)))
    }

    #[target_feature(enable = "avx2,fma")]
    pub unsafe fn sq_dev(x: &[f32], c: f32) -> f32 {
        let c = _mm256_set1_ps(c);
        hsum(fold(x, _mm256_setzero_ps(), |a, v| {
            let d = _mm256_sub_ps(v, c);
            _mm256_fmadd_ps(d, d, a)
        }))
    }

    #[target_feature(enable = "avx2,fma")]
    pub unsafe fn affine(x: &[f32], shift: f32, scale: f32, weight: &[f32], bias: Option<&[f32]>, out: &mut [f32]) {
        let (n, px, pw, po) = (x.len(), x.as_ptr(), weight.as_ptr(), out.as_mut_ptr());
        let (shift, scale) = (_mm256_set1_ps(shift), _mm256_set1_ps(scale));
        for i in (0..n).step_by(W) {
            let y = _mm256_mul_ps(_mm256_sub_ps(load(px.add(i), n - i), shift), scale);
            let y = _mm256_mul_ps(y, load(pw.add(i), n - i));
            let y = bias.map_or(y, |b| _mm256_add_ps(y, load(b.as_ptr().add(i), n - i)));
            store(po.add(i), n - i, y);
        }
    }

    #[target_feature(enable = "avx2,fma")]
    pub unsafe fn rope(x: &mut [f32], cos: &[f32], sin: &[f32]) {
        let (h, p, pc, ps) = (cos.len(), x.as_mut_ptr(), cos.as_ptr(), sin.as_ptr());
        for i in (0..h).step_by(W) {
            let (a, b) = (load(p.add(i), h - i), load(p.add(h + i), h - i));
            let (c, s) = (load(pc.add(i), h - i), load(ps.add(i), h - i));
            store(p.add(i), h - i, _mm256_fmsub_ps(a, c, _mm256_mul_ps(b, s)));
            store(p.add(h + i), h - i, _mm256_fmadd_ps(b, c, _mm256_mul_ps(a, s)));
        }
    }
}

#[cfg(target_arch = "x86_64")]
mod avx512 {
    use std::arch::x86_64::*;

    use super::{
        std_sin_lanes, COS_POLY, ERFC_POLY, EXP_HI, EXP_LO, EXP_POLY, FRAC_1_SQRT_2, FRAC_2_PI, GELU_K, GELU_K3,
        LN2_HI, LN2_LO, LOG2_E, PIO2_HI, PIO2_LO, PIO2_MID, SIN_POLY, SIN_REDUCED_MAX, TANH_POLY, TANH_SMALL,
    };
    use crate::kernels::vector::avx512::{lanes, load, store, W};

    /// out ← max(x, slope·x); where x is NaN so is slope·x, and `max` returns a NaN.
    #[target_feature(enable = "avx512f,avx512dq")]
    pub unsafe fn leaky_relu_into(x: &[f32], slope: f32, out: &mut [f32]) {
        let (n, px, po, slope) = (x.len(), x.as_ptr(), out.as_mut_ptr(), _mm512_set1_ps(slope));
        for i in (0..n).step_by(W) {
            let v = load(px.add(i), n - i);
            store(po.add(i), n - i, _mm512_max_ps(v, _mm512_mul_ps(v, slope)));
        }
    }

    /// x ← op(x), 16 lanes at a time.
    #[target_feature(enable = "avx512f,avx512dq")]
    pub unsafe fn map(x: &mut [f32], op: impl Fn(__m512) -> __m512) {
        let (n, p) = (x.len(), x.as_mut_ptr());
        for i in (0..n).step_by(W) {
            store(p.add(i), n - i, op(load(p.add(i), n - i)));
        }
    }

    /// `step` folded over `x` from `init`, 16 lanes at a time; in a short tail the lanes
    /// past the end keep their value.
    #[target_feature(enable = "avx512f,avx512dq")]
    unsafe fn fold(x: &[f32], init: __m512, step: impl Fn(__m512, __m512) -> __m512) -> __m512 {
        let (n, p) = (x.len(), x.as_ptr());
        let mut acc = init;
        for i in (0..n).step_by(W) {
            acc = _mm512_mask_mov_ps(acc, lanes(n - i), step(acc, load(p.add(i), n - i)));
        }
        acc
    }

    /// Horner's rule, coefficients highest degree first.
    #[target_feature(enable = "avx512f,avx512dq")]
    unsafe fn poly(x: __m512, c: &[f32]) -> __m512 {
        c[1..].iter().fold(_mm512_set1_ps(c[0]), |acc, &k| _mm512_fmadd_ps(acc, x, _mm512_set1_ps(k)))
    }

    #[target_feature(enable = "avx512f,avx512dq")]
    unsafe fn sign(x: __m512) -> __m512 {
        _mm512_and_ps(_mm512_set1_ps(-0.0), x)
    }

    /// Lanes whose sign bit is set.
    #[target_feature(enable = "avx512f,avx512dq")]
    unsafe fn negative(x: __m512) -> __mmask16 {
        _mm512_movepi32_mask(_mm512_castps_si512(x))
    }

    #[target_feature(enable = "avx512f,avx512dq")]
    pub unsafe fn exp(x: __m512) -> __m512 {
        let n = _mm512_roundscale_ps::<{ _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC }>(_mm512_mul_ps(
            x,
            _mm512_set1_ps(LOG2_E),
        ));
        let r = _mm512_fnmadd_ps(n, _mm512_set1_ps(LN2_LO), _mm512_fnmadd_ps(n, _mm512_set1_ps(LN2_HI), x));
        let y = _mm512_fmadd_ps(poly(r, &EXP_POLY), _mm512_mul_ps(r, r), r);
        let y = _mm512_add_ps(y, _mm512_set1_ps(1.0));
        // As in the AVX2 path: an exponent-field add, valid inside EXP_LO..=EXP_HI.
        let y = _mm512_castsi512_ps(_mm512_add_epi32(
            _mm512_castps_si512(y),
            _mm512_slli_epi32::<23>(_mm512_cvtps_epi32(n)),
        ));
        let y = _mm512_mask_mov_ps(y, _mm512_cmp_ps_mask::<_CMP_LT_OQ>(x, _mm512_set1_ps(EXP_LO)), _mm512_setzero_ps());
        _mm512_mask_mov_ps(
            y,
            _mm512_cmp_ps_mask::<_CMP_GT_OQ>(x, _mm512_set1_ps(EXP_HI)),
            _mm512_set1_ps(f32::INFINITY),
        )
    }

    #[target_feature(enable = "avx512f,avx512dq")]
    pub unsafe fn tanh(x: __m512) -> __m512 {
        let (one, a) = (_mm512_set1_ps(1.0), _mm512_abs_ps(x));
        let e = exp(_mm512_mul_ps(a, _mm512_set1_ps(-2.0)));
        let large = _mm512_or_ps(_mm512_div_ps(_mm512_sub_ps(one, e), _mm512_add_ps(one, e)), sign(x));
        let z = _mm512_mul_ps(x, x);
        let small = _mm512_fmadd_ps(_mm512_mul_ps(poly(z, &TANH_POLY), z), x, x);
        _mm512_mask_mov_ps(large, _mm512_cmp_ps_mask::<_CMP_LT_OQ>(a, _mm512_set1_ps(TANH_SMALL)), small)
    }

    #[target_feature(enable = "avx512f,avx512dq")]
    pub unsafe fn sin(y: __m512) -> __m512 {
        let q = _mm512_roundscale_ps::<{ _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC }>(_mm512_mul_ps(
            y,
            _mm512_set1_ps(FRAC_2_PI),
        ));
        let r = _mm512_fnmadd_ps(q, _mm512_set1_ps(PIO2_HI), y);
        let r = _mm512_fnmadd_ps(q, _mm512_set1_ps(PIO2_MID), r);
        let r = _mm512_fnmadd_ps(q, _mm512_set1_ps(PIO2_LO), r);
        let z = _mm512_mul_ps(r, r);
        let s = _mm512_fmadd_ps(_mm512_mul_ps(poly(z, &SIN_POLY), z), r, r);
        let c = _mm512_fmadd_ps(
            _mm512_mul_ps(poly(z, &COS_POLY), z),
            z,
            _mm512_fnmadd_ps(_mm512_set1_ps(0.5), z, _mm512_set1_ps(1.0)),
        );
        // As in the AVX2 path: the cosine in odd quadrants, negated in quadrants 2 and 3.
        let quadrant = _mm512_cvtps_epi32(q);
        let v = _mm512_mask_mov_ps(s, _mm512_test_epi32_mask(quadrant, _mm512_set1_epi32(1)), c);
        let flip = _mm512_slli_epi32::<30>(_mm512_and_si512(quadrant, _mm512_set1_epi32(2)));
        let v = _mm512_xor_ps(v, _mm512_castsi512_ps(flip));
        let far = _mm512_cmp_ps_mask::<_CMP_GT_OQ>(_mm512_abs_ps(y), _mm512_set1_ps(SIN_REDUCED_MAX));
        if far == 0 {
            return v;
        }
        let (mut ys, mut vs) = ([0.0; W], [0.0; W]);
        _mm512_storeu_ps(ys.as_mut_ptr(), y);
        _mm512_storeu_ps(vs.as_mut_ptr(), v);
        std_sin_lanes(&ys, &mut vs, u32::from(far));
        _mm512_loadu_ps(vs.as_ptr())
    }

    #[target_feature(enable = "avx512f,avx512dq")]
    pub unsafe fn snake_beta(x: &mut [f32], alpha: f32, inv_beta: f32) {
        let (alpha, inv_beta) = (_mm512_set1_ps(alpha), _mm512_set1_ps(inv_beta));
        map(x, |v| {
            let s = sin(_mm512_mul_ps(v, alpha));
            _mm512_fmadd_ps(_mm512_mul_ps(s, s), inv_beta, v)
        })
    }

    #[target_feature(enable = "avx512f,avx512dq")]
    pub unsafe fn sigmoid(x: __m512) -> __m512 {
        // As in the AVX2 path: 1/(1 + z) or z/(1 + z) with z = e^−|x|.
        let one = _mm512_set1_ps(1.0);
        let z = exp(_mm512_or_ps(x, _mm512_set1_ps(-0.0)));
        let s = _mm512_div_ps(one, _mm512_add_ps(one, z));
        _mm512_mask_mul_ps(s, negative(x), z, s)
    }

    #[target_feature(enable = "avx512f,avx512dq")]
    pub unsafe fn silu(x: __m512) -> __m512 {
        _mm512_mul_ps(x, sigmoid(x))
    }

    #[target_feature(enable = "avx512f,avx512dq")]
    pub unsafe fn gelu_tanh(x: __m512) -> __m512 {
        let u = _mm512_mul_ps(x, _mm512_fmadd_ps(_mm512_mul_ps(x, x), _mm512_set1_ps(GELU_K3), _mm512_set1_ps(GELU_K)));
        _mm512_mul_ps(x, sigmoid(u))
    }

    #[target_feature(enable = "avx512f,avx512dq")]
    pub unsafe fn gelu_erf(x: __m512) -> __m512 {
        let (one, half) = (_mm512_set1_ps(1.0), _mm512_set1_ps(0.5));
        let z = _mm512_mul_ps(_mm512_abs_ps(x), _mm512_set1_ps(FRAC_1_SQRT_2));
        let t = _mm512_div_ps(one, _mm512_fmadd_ps(half, z, one));
        let e = exp(_mm512_fnmadd_ps(_mm512_mul_ps(half, x), x, poly(t, &ERFC_POLY)));
        let half_erfc = _mm512_mul_ps(_mm512_mul_ps(half, t), e);
        _mm512_mul_ps(x, _mm512_mask_mov_ps(_mm512_sub_ps(one, half_erfc), negative(x), half_erfc))
    }

    #[target_feature(enable = "avx512f,avx512dq")]
    pub unsafe fn floor(x: __m512) -> __m512 {
        _mm512_roundscale_ps::<{ _MM_FROUND_TO_NEG_INF | _MM_FROUND_NO_EXC }>(x)
    }

    #[target_feature(enable = "avx512f,avx512dq")]
    pub unsafe fn ceil(x: __m512) -> __m512 {
        _mm512_roundscale_ps::<{ _MM_FROUND_TO_POS_INF | _MM_FROUND_NO_EXC }>(x)
    }

    #[target_feature(enable = "avx512f,avx512dq")]
    pub unsafe fn trunc(x: __m512) -> __m512 {
        _mm512_roundscale_ps::<{ _MM_FROUND_TO_ZERO | _MM_FROUND_NO_EXC }>(x)
    }

    #[target_feature(enable = "avx512f,avx512dq")]
    pub unsafe fn round(x: __m512) -> __m512 {
        // As in the AVX2 path: trunc x, plus a signed step where |x − trunc x| ≥ ½.
        let t = trunc(x);
        let half_or_more = _mm512_cmp_ps_mask::<_CMP_GE_OQ>(_mm512_abs_ps(_mm512_sub_ps(x, t)), _mm512_set1_ps(0.5));
        _mm512_add_ps(t, _mm512_or_ps(_mm512_maskz_mov_ps(half_or_more, _mm512_set1_ps(1.0)), sign(x)))
    }

    #[target_feature(enable = "avx512f,avx512dq")]
    pub unsafe fn softmax(x: &mut [f32]) {
        let max = fold(x, _mm512_set1_ps(f32::NEG_INFINITY), |a, v| _mm512_max_ps(a, v));
        let max = _mm512_set1_ps(_mm512_reduce_max_ps(max));
        map(x, |v| exp(_mm512_sub_ps(v, max)));
        let inv = _mm512_set1_ps(1.0 / sum(x));
        map(x, |v| _mm512_mul_ps(v, inv));
    }

    #[target_feature(enable = "avx512f,avx512dq")]
    pub unsafe fn sum(x: &[f32]) -> f32 {
        _mm512_reduce_add_ps(fold(x, _mm512_setzero_ps(), |a, v| _mm512_add_ps(a, v)))
    }

    #[target_feature(enable = "avx512f,avx512dq")]
    pub unsafe fn sq_dev(x: &[f32], c: f32) -> f32 {
        let c = _mm512_set1_ps(c);
        _mm512_reduce_add_ps(fold(x, _mm512_setzero_ps(), |a, v| {
            let d = _mm512_sub_ps(v, c);
            _mm512_fmadd_ps(d, d, a)
        }))
    }

    #[target_feature(enable = "avx512f,avx512dq")]
    pub unsafe fn affine(x: &[f32], shift: f32, scale: f32, weight: &[f32], bias: Option<&[f32]>, out: &mut [f32]) {
        let (n, px, pw, po) = (x.len(), x.as_ptr(), weight.as_ptr(), out.as_mut_ptr());
        let (shift, scale) = (_mm512_set1_ps(shift), _mm512_set1_ps(scale));
        for i in (0..n).step_by(W) {
            let y = _mm512_mul_ps(_mm512_sub_ps(load(px.add(i), n - i), shift), scale);
            let y = _mm512_mul_ps(y, load(pw.add(i), n - i));
            let y = bias.map_or(y, |b| _mm512_add_ps(y, load(b.as_ptr().add(i), n - i)));
            store(po.add(i), n - i, y);
        }
    }

    #[target_feature(enable = "avx512f,avx512dq")]
    pub unsafe fn rope(x: &mut [f32], cos: &[f32], sin: &[f32]) {
        let (h, p, pc, ps) = (cos.len(), x.as_mut_ptr(), cos.as_ptr(), sin.as_ptr());
        for i in (0..h).step_by(W) {
            let (a, b) = (load(p.add(i), h - i), load(p.add(h + i), h - i));
            let (c, s) = (load(pc.add(i), h - i), load(ps.add(i), h - i));
            store(p.add(i), h - i, _mm512_fmsub_ps(a, c, _mm512_mul_ps(b, s)));
            store(p.add(h + i), h - i, _mm512_fmadd_ps(b, c, _mm512_mul_ps(a, s)));
        }
    }
}

#[cfg(test)]
mod tests {
    use std::f64::consts::{PI, SQRT_2};

    use super::*;
    use crate::kernels::testing::{available, lengths, random};

    /// Offsets into a larger buffer, so slices start at every alignment.
    const OFFSETS: [usize; 3] = [0, 1, 3];
    /// Floats on each side of a slice that a kernel must leave alone.
    const GUARD: usize = 17;
    const SENTINEL: f32 = -1234.5;
    const EPS: f64 = f32::EPSILON as f64;

    /// `values` at `offset` in a buffer of sentinels, GUARD of them after the values.
    fn guarded(values: &[f32], offset: usize) -> Vec<f32> {
        let mut buf = vec![SENTINEL; offset + values.len() + GUARD];
        buf[offset..offset + values.len()].copy_from_slice(values);
        buf
    }

    fn assert_untouched_around(buf: &[f32], offset: usize, n: usize, what: &str) {
        let mut outside = buf[..offset].iter().chain(&buf[offset + n..]);
        assert!(outside.all(|&v| v == SENTINEL), "{what} wrote outside its slice (n={n})");
    }

    /// |got − want| / |want|, where differences up to `tiny` count as none; 0 where both are
    /// NaN or the same infinity, ∞ where only one is.
    fn rel_err(got: f32, want: f64, tiny: f64) -> f64 {
        let want32 = want as f32;
        if got.is_nan() || want32.is_nan() || got.is_infinite() || want32.is_infinite() {
            let same = (got.is_nan() && want32.is_nan()) || got == want32;
            return if same { 0.0 } else { f64::INFINITY };
        }
        let d = (f64::from(got) - want).abs() - tiny;
        if d <= 0.0 {
            0.0
        } else {
            d / want.abs()
        }
    }

    fn sigmoid64(x: f64) -> f64 {
        1.0 / (1.0 + (-x).exp())
    }

    /// erfc to about 1e-13 relative: its Taylor series below 2, the continued fraction above.
    fn erfc64(z: f64) -> f64 {
        if z < 0.0 {
            return 2.0 - erfc64(-z);
        }
        if z < 2.0 {
            let mut term = z;
            let mut erf = 0.0;
            for n in 0..60 {
                erf += term / f64::from(2 * n + 1);
                term *= -z * z / f64::from(n + 1);
            }
            return 1.0 - erf * 2.0 / PI.sqrt();
        }
        let fraction = (1..=60).rev().fold(z, |f, k| z + f64::from(k) / 2.0 / f);
        (-z * z).exp() / PI.sqrt() / fraction
    }

    /// One elementwise op: its f64 truth, the input range it is tested over, and its
    /// documented tolerance (relative, as a function of x; below `tiny` absolute).
    struct Case {
        name: &'static str,
        run: fn(Cpu, &mut [f32]),
        truth: fn(f64) -> f64,
        range: f32,
        tol: fn(f64) -> f64,
        tiny: f64,
    }

    /// Inputs every elementwise op also sees: extremes, and both sides of each branch point.
    const SPECIALS: [f32; 24] = [
        0.0,
        -0.0,
        100.0,
        -100.0,
        f32::INFINITY,
        f32::NEG_INFINITY,
        f32::NAN,
        1e30,
        -1e30,
        EXP_LO,
        -87.33655,
        EXP_HI,
        88.72284,
        -88.0,
        TANH_SMALL,
        -TANH_SMALL,
        0.62499994,
        -0.62499994,
        1e-20,
        -1e-20,
        1e-40,
        -1e-40,
        14.5,
        -14.5,
    ];

    /// Runs `case` on every path over `lengths()` and OFFSETS, on random inputs in
    /// −range..range with SPECIALS every fifth element, and prints each path's worst error.
    fn check(case: &Case) {
        let cpus = available();
        let mut worst = vec![(0.0f64, 0.0f32); cpus.len()];
        for n in lengths() {
            let values: Vec<f32> = random(n, n as u64)
                .iter()
                .enumerate()
                .map(|(i, &r)| if i % 5 == 4 { SPECIALS[(i / 5 + n) % SPECIALS.len()] } else { r * case.range })
                .collect();
            let truth: Vec<f64> = values.iter().map(|&x| (case.truth)(f64::from(x))).collect();
            for (cpu, worst) in cpus.iter().zip(&mut worst) {
                for offset in OFFSETS {
                    let mut buf = guarded(&values, offset);
                    (case.run)(*cpu, &mut buf[offset..offset + n]);
                    assert_untouched_around(&buf, offset, n, case.name);
                    for ((&x, &want), &got) in values.iter().zip(&truth).zip(&buf[offset..]) {
                        let err = rel_err(got, want, case.tiny);
                        // Non-finite inputs must give exactly the non-finite truth.
                        let tol = if x.is_finite() { (case.tol)(f64::from(x)) } else { 0.0 };
                        assert!(
                            err <= tol,
                            "{} {} x={x:e}: {got:e} vs {want:e}, error {err:.2e} > {tol:.2e}",
                            case.name,
                            cpu.isa()
                        );
                        if err > worst.0 {
                            *worst = (err, x);
                        }
                    }
                }
            }
        }
        for (cpu, (err, x)) in cpus.iter().zip(worst) {
            eprintln!("{} {}: max relative error {err:.3e} (at x = {x:e})", case.name, cpu.isa());
        }
    }

    /// Prints each path's largest error, for comparing paths and tolerances.
    fn report(name: &str, unit: &str, cpus: &[Cpu], worst: &[f64]) {
        for (cpu, err) in cpus.iter().zip(worst) {
            eprintln!("{name} {}: max {unit} error {err:.3e}", cpu.isa());
        }
    }

    const FLT_MIN: f64 = f32::MIN_POSITIVE as f64;

    #[test]
    fn exp_matches_f64() {
        check(&Case { name: "exp", run: exp, truth: f64::exp, range: 90.0, tol: |_| 1.2e-7, tiny: FLT_MIN });
    }

    #[test]
    fn tanh_matches_f64() {
        check(&Case { name: "tanh", run: tanh, truth: f64::tanh, range: 20.0, tol: |_| 2e-7, tiny: FLT_MIN });
    }

    #[test]
    fn sigmoid_matches_f64() {
        check(&Case { name: "sigmoid", run: sigmoid, truth: sigmoid64, range: 20.0, tol: |_| 2.5e-7, tiny: FLT_MIN });
    }

    #[test]
    fn silu_matches_f64() {
        check(&Case {
            name: "silu",
            run: silu,
            truth: |x| x * sigmoid64(x),
            range: 20.0,
            tol: |_| 3e-7,
            tiny: 100.0 * FLT_MIN,
        });
    }

    #[test]
    fn sin_matches_f64() {
        // One period, the range SnakeBeta's arguments reach, and beyond the SIMD reduction.
        for range in [4.0, 1e4, 1e6] {
            check(&Case { name: "sin", run: sin, truth: f64::sin, range, tol: |_| 1.7e-7, tiny: FLT_MIN });
        }
    }

    /// The documented bound on every positive f32 below SIN_REDUCED_MAX, where the SIMD
    /// reduction runs (sin is odd and every step of it is symmetric in the sign, so the
    /// negative ones follow), and the largest error in ulp. About a minute in release.
    #[test]
    #[ignore = "1.2e9 values per path; run in release"]
    fn sin_is_within_its_bound_on_every_f32_the_simd_reduction_takes() {
        use rayon::prelude::*;
        let end = SIN_REDUCED_MAX.to_bits() + 1;
        for cpu in available() {
            let chunk = 1 << 16;
            let (rel, ulp) = (0..end.div_ceil(chunk))
                .into_par_iter()
                .map(|c| {
                    let bits = c * chunk..(c * chunk + chunk).min(end);
                    let x: Vec<f32> = bits.map(f32::from_bits).collect();
                    let mut got = x.clone();
                    sin(cpu, &mut got);
                    x.iter().zip(&got).fold((0.0f64, 0.0f64), |(rel, ulp), (&x, &got)| {
                        let want = f64::from(x).sin();
                        let ulp_size = f64::from(want as f32).abs().max(f64::from(f32::MIN_POSITIVE)) * EPS;
                        let err = (f64::from(got) - want).abs();
                        (rel.max(rel_err(got, want, FLT_MIN)), ulp.max(err / ulp_size))
                    })
                })
                .reduce(|| (0.0, 0.0), |a, b| (a.0.max(b.0), a.1.max(b.1)));
            eprintln!("sin {} on [0, {SIN_REDUCED_MAX}]: max relative error {rel:.3e}, {ulp:.2} ulp", cpu.isa());
            assert!(rel <= 1.7e-7, "sin {}: {rel:e}", cpu.isa());
        }
    }

    #[test]
    fn snake_beta_matches_f64() {
        let cpus = available();
        let mut worst = vec![0.0f64; cpus.len()];
        for n in lengths() {
            let x: Vec<f32> = random(n, n as u64).iter().map(|v| v * 8.0).collect();
            for (alpha, inv_beta) in [(0.3f32, 2.5f32), (1.0, 1.0), (7.5, 0.2), (60.0, 40.0)] {
                let truth = |v: f32| {
                    let s = f64::from(v * alpha).sin();
                    let term = f64::from(inv_beta) * s * s;
                    (f64::from(v) + term, 4.6e-7 * term + EPS / 2.0 * (f64::from(v) + term).abs())
                };
                for (cpu, worst) in cpus.iter().zip(&mut worst) {
                    for offset in OFFSETS {
                        let mut buf = guarded(&x, offset);
                        snake_beta(*cpu, &mut buf[offset..offset + n], alpha, inv_beta);
                        assert_untouched_around(&buf, offset, n, "snake_beta");
                        for (&v, &got) in x.iter().zip(&buf[offset..]) {
                            let (want, tol) = truth(v);
                            let err = (f64::from(got) - want).abs();
                            assert!(err <= tol, "snake_beta {} x={v:e} α={alpha}: {got:e} vs {want:e}", cpu.isa());
                            *worst = worst.max(err / tol);
                        }
                    }
                }
            }
        }
        report("snake_beta", "(share of the bound)", &cpus, &worst);
    }

    /// The sigmoid's argument in GELU's tanh form: x/2·(1 + tanh(u/2)) = x·σ(u).
    fn gelu_u(x: f64) -> f64 {
        2.0 * (2.0 / PI).sqrt() * (x + 0.044715 * x * x * x)
    }

    #[test]
    fn gelu_tanh_matches_f64() {
        // The truth is x·σ(u) too: f64 would lose the negative tail to 1 + tanh's cancellation.
        let truth = |x: f64| x * sigmoid64(gelu_u(x));
        let tol = |x: f64| 3e-7 + 2e-7 * gelu_u(x).abs();
        check(&Case { name: "gelu_tanh", run: gelu_tanh, truth, range: 10.0, tol, tiny: 100.0 * FLT_MIN });
    }

    #[test]
    fn gelu_erf_matches_f64() {
        let truth = |x: f64| 0.5 * x * erfc64(-x / SQRT_2);
        let tol = |x: f64| 5e-7 + 4e-8 * x * x;
        check(&Case { name: "gelu_erf", run: gelu_erf, truth, range: 10.0, tol, tiny: 100.0 * FLT_MIN });
    }

    #[test]
    fn rounding_matches_std_bit_for_bit() {
        let specials = [
            0.0,
            -0.0,
            0.5,
            -0.5,
            1.5,
            -1.5,
            2.5,
            -2.5,
            0.49999997,
            -0.49999997,
            0.50000006,
            -0.50000006,
            0.99999994,
            -0.99999994,
            4_194_303.8,
            -4_194_303.8,
            8_388_607.5,
            -8_388_607.5,
            8_388_608.0,
            -8_388_609.0,
            16_777_216.0,
            1e30,
            -1e30,
            f32::MAX,
            f32::MIN,
            f32::MIN_POSITIVE,
            -f32::MIN_POSITIVE,
            1e-40,
            -1e-40,
            f32::INFINITY,
            f32::NEG_INFINITY,
            f32::NAN,
            -f32::NAN,
        ];
        /// A kernel, named, with the std method it must match.
        type Rounding = (&'static str, fn(Cpu, &mut [f32]), fn(f32) -> f32);
        let ops: [Rounding; 4] = [
            ("floor", floor, f32::floor),
            ("ceil", ceil, f32::ceil),
            ("round", round, f32::round),
            ("trunc", trunc, f32::trunc),
        ];
        // Every magnitude from fractions to past 2^23, where every float is an integer.
        let scales = [1.0, 4.0, 1e4, 1e7, 3e7];
        for n in lengths() {
            let values: Vec<f32> = random(n, n as u64)
                .iter()
                .enumerate()
                .map(
                    |(i, &r)| {
                        if i % 3 == 0 {
                            specials[(i / 3 + n) % specials.len()]
                        } else {
                            r * scales[i % scales.len()]
                        }
                    },
                )
                .collect();
            for cpu in available() {
                for offset in OFFSETS {
                    for (name, op, std_op) in ops {
                        let mut buf = guarded(&values, offset);
                        op(cpu, &mut buf[offset..offset + n]);
                        assert_untouched_around(&buf, offset, n, name);
                        for (&x, &got) in values.iter().zip(&buf[offset..]) {
                            let want = std_op(x);
                            let same = got.to_bits() == want.to_bits() || (got.is_nan() && want.is_nan());
                            assert!(same, "{name} {} x={x:e}: {got:e} vs {want:e}", cpu.isa());
                        }
                    }
                }
            }
        }
    }

    #[test]
    fn leaky_relu_matches_std_max_bit_for_bit() {
        let specials = [0.0, -0.0, 1e-40, -1e-40, f32::MAX, f32::MIN, f32::INFINITY, f32::NEG_INFINITY, f32::NAN];
        for n in lengths() {
            let values: Vec<f32> = random(n, n as u64)
                .iter()
                .enumerate()
                .map(|(i, &r)| if i % 4 == 0 { specials[(i / 4 + n) % specials.len()] } else { r * 10.0 })
                .collect();
            for cpu in available() {
                for offset in OFFSETS {
                    for slope in [0.1, 0.01] {
                        let mut buf = guarded(&values, offset);
                        leaky_relu_into(cpu, &values, slope, &mut buf[offset..offset + n]);
                        assert_untouched_around(&buf, offset, n, "leaky_relu_into");
                        for (&x, &got) in values.iter().zip(&buf[offset..]) {
                            let want = x.max(x * slope);
                            let same = got.to_bits() == want.to_bits() || (got.is_nan() && want.is_nan());
                            assert!(same, "{} x={x:e} slope {slope}: {got:e} vs {want:e}", cpu.isa());
                        }
                    }
                }
            }
        }
    }

    /// Error bound for an f32 sum of n terms, relative to the sum of their magnitudes.
    fn sum_bound(n: usize) -> f64 {
        4.0 * EPS * ((n + 1) as f64).sqrt()
    }

    #[test]
    fn softmax_matches_f64() {
        let cpus = available();
        let mut worst = vec![0.0f64; cpus.len()];
        for n in lengths() {
            let values: Vec<f32> = random(n, n as u64).iter().map(|v| v * 20.0).collect();
            let max = values.iter().fold(f64::NEG_INFINITY, |m, &v| m.max(f64::from(v)));
            let total: f64 = values.iter().map(|&v| (f64::from(v) - max).exp()).sum();
            for (cpu, worst) in cpus.iter().zip(&mut worst) {
                for offset in OFFSETS {
                    let mut buf = guarded(&values, offset);
                    softmax(*cpu, &mut buf[offset..offset + n]);
                    assert_untouched_around(&buf, offset, n, "softmax");
                    for (&x, &got) in values.iter().zip(&buf[offset..]) {
                        let want = (f64::from(x) - max).exp() / total;
                        let err = rel_err(got, want, 0.0);
                        // Rounding x − max to f32 alone costs |x − max|·ε/2.
                        let tol = 5e-7 + (f64::from(x) - max).abs() * EPS / 2.0 + sum_bound(n);
                        assert!(err <= tol, "softmax {} n={n}: {got:e} vs {want:e}", cpu.isa());
                        *worst = worst.max(err);
                    }
                }
            }
        }
        report("softmax", "relative", &cpus, &worst);
    }

    #[test]
    fn softmax_edge_cases() {
        for cpu in available() {
            softmax(cpu, &mut []);

            let mut one = [3.0];
            softmax(cpu, &mut one);
            assert_eq!(one, [1.0], "{}", cpu.isa());

            // Large inputs neither overflow nor lose the winner; −∞ entries come out exactly 0.
            let mut x = [1000.0, 0.0, f32::NEG_INFINITY, -1000.0, 1000.0];
            softmax(cpu, &mut x);
            assert_eq!(x, [0.5, 0.0, 0.0, 0.0, 0.5], "{}", cpu.isa());

            let mut x = [1.0, f32::NAN, 2.0];
            softmax(cpu, &mut x);
            assert!(x.iter().all(|v| v.is_nan()), "{} {x:?}", cpu.isa());
        }
    }

    #[test]
    fn rms_norm_matches_f64() {
        let cpus = available();
        let mut worst = vec![0.0f64; cpus.len()];
        for n in lengths() {
            let x: Vec<f32> = random(n, n as u64).iter().map(|v| v * 3.0).collect();
            let weight: Vec<f32> = random(n, n as u64 + 1).iter().map(|v| 1.0 + v / 2.0).collect();
            let eps = 1e-6;
            let mean_sq = x.iter().map(|&v| f64::from(v).powi(2)).sum::<f64>() / n as f64;
            let scale = 1.0 / (mean_sq + f64::from(eps)).sqrt();
            let tol = 5e-7 + sum_bound(n) / 2.0;
            for (cpu, worst) in cpus.iter().zip(&mut worst) {
                for offset in OFFSETS {
                    let mut out = guarded(&vec![0.0; n], offset);
                    rms_norm(*cpu, &x, &weight, eps, &mut out[offset..offset + n]);
                    assert_untouched_around(&out, offset, n, "rms_norm");
                    for ((&v, &w), &got) in x.iter().zip(&weight).zip(&out[offset..]) {
                        let want = f64::from(v) * scale * f64::from(w);
                        let err = rel_err(got, want, 0.0);
                        assert!(err <= tol, "rms_norm {} n={n}: {got:e} vs {want:e}", cpu.isa());
                        *worst = worst.max(err);
                    }
                }
            }
        }
        report("rms_norm", "relative", &cpus, &worst);
    }

    #[test]
    fn layer_norm_matches_f64() {
        let cpus = available();
        let mut worst = vec![0.0f64; cpus.len()];
        for n in lengths() {
            // A mean well away from zero, as the second pass about the mean is there for.
            let x: Vec<f32> = random(n, n as u64).iter().map(|v| 4.0 + v).collect();
            let weight: Vec<f32> = random(n, n as u64 + 1).iter().map(|v| 1.0 + v / 2.0).collect();
            let bias = random(n, n as u64 + 2);
            let eps = 1e-5;
            let mean = x.iter().map(|&v| f64::from(v)).sum::<f64>() / n as f64;
            let var = x.iter().map(|&v| (f64::from(v) - mean).powi(2)).sum::<f64>() / n as f64;
            let scale = 1.0 / (var + f64::from(eps)).sqrt();
            let tol = 1e-6 + sum_bound(n);
            for (cpu, worst) in cpus.iter().zip(&mut worst) {
                for offset in OFFSETS {
                    let mut out = guarded(&vec![0.0; n], offset);
                    layer_norm(*cpu, &x, &weight, &bias, eps, &mut out[offset..offset + n]);
                    assert_untouched_around(&out, offset, n, "layer_norm");
                    for (((&v, &w), &b), &got) in x.iter().zip(&weight).zip(&bias).zip(&out[offset..]) {
                        let (v, w, b) = (f64::from(v), f64::from(w), f64::from(b));
                        let want = (v - mean) * scale * w + b;
                        let magnitude = ((v - mean).abs() + mean.abs()) * scale * w.abs() + b.abs();
                        let err = (f64::from(got) - want).abs() / magnitude;
                        assert!(err <= tol, "layer_norm {} n={n}: {got:e} vs {want:e}", cpu.isa());
                        *worst = worst.max(err);
                    }
                }
            }
        }
        report("layer_norm", "scaled", &cpus, &worst);
    }

    #[test]
    fn rope_matches_f64() {
        let cpus = available();
        let mut worst = vec![0.0f64; cpus.len()];
        for h in lengths() {
            let x: Vec<f32> = random(2 * h, h as u64);
            let angles: Vec<f64> = (0..h).map(|i| 37.0 * 10_000f64.powf(-(i as f64) / h as f64)).collect();
            let cos: Vec<f32> = angles.iter().map(|a| a.cos() as f32).collect();
            let sin: Vec<f32> = angles.iter().map(|a| a.sin() as f32).collect();
            for (cpu, worst) in cpus.iter().zip(&mut worst) {
                for offset in OFFSETS {
                    let mut buf = guarded(&x, offset);
                    rope(*cpu, &mut buf[offset..offset + 2 * h], &cos, &sin);
                    assert_untouched_around(&buf, offset, 2 * h, "rope");
                    let got = &buf[offset..offset + 2 * h];
                    for i in 0..h {
                        let (a, b) = (f64::from(x[i]), f64::from(x[h + i]));
                        let (c, s) = (f64::from(cos[i]), f64::from(sin[i]));
                        let outputs = [
                            (got[i], a * c - b * s, (a * c).abs() + (b * s).abs()),
                            (got[h + i], b * c + a * s, (b * c).abs() + (a * s).abs()),
                        ];
                        for (g, want, magnitude) in outputs {
                            let err = (f64::from(g) - want).abs() / magnitude;
                            assert!(err <= 2.0 * EPS, "rope {} h={h} i={i}: {g:e} vs {want:e}", cpu.isa());
                            *worst = worst.max(err);
                        }
                    }
                }
            }
        }
        report("rope", "scaled", &cpus, &worst);
    }

    #[test]
    #[should_panic(expected = "twice as long")]
    fn rope_rejects_a_head_of_the_wrong_length() {
        rope(Cpu::best(), &mut [0.0; 5], &[1.0, 1.0], &[0.0, 0.0]);
    }
}
