//! Winograd's minimal filtering F(4, r) for a convolution of one group, stride 1 and
//! dilation 1 ([`ConvMethod::Winograd`](super::ConvMethod::Winograd)): four outputs of an
//! r-tap filter from n = r + 3 products instead of 4·r (Lavin & Gray 2015, in one
//! dimension), 2.5 times fewer multiply-adds at r = 5 and 2 at r = 3.
//!
//! Outputs are cut into tiles of [`TILE`] from output 0. Tile t needs the n inputs from
//! 4·t. For each of the n evaluation points ξ (0, ±1, ±2, ±½ and infinity, as many as n
//! needs) the inputs are transformed (`V_ξ[t][c] = Σ_k Bᵀ[ξ][k] x[c][4t + k]`), the
//! weights were transformed once (`U_ξ[o][c] = Σ_j G[ξ][j] w[o][c][j]`), and the sum over
//! input channels is one GEMM per point, `M_ξ = V_ξ · U_ξᵀ` (`[tiles, out]`), on the engine's
//! [`gemm`](crate::kernels::gemm::gemm); the output transform gives
//! `y[o][4t + i] = Σ_ξ Aᵀ[i][ξ] M_ξ[t][o] + bias[o]`. The matrices come from the Toom-Cook
//! construction (evaluate at the points, interpolate), built in f64 and rounded once.
//!
//! Rounding: every output depends only on its tile's inputs, the transformed weights and a
//! fixed order of operations, and tiles start at multiples of [`TILE`] from the signal's
//! first output. So a stream that hands the convolution whole tiles (and the rest at its
//! end, zeros standing in past the input as in the whole-signal call) gives the
//! whole-signal call's output bit for bit, as the other methods do ([`StreamingConv1d`]
//! holds back the outputs of a partial tile until its input is complete). Against the
//! definition the error is that of the direct method's chains of fused multiply-adds, to
//! within a small factor (docs/KERNELS.md).
//!
//! [`StreamingConv1d`]: super::StreamingConv1d

use std::ops::RangeInclusive;
use std::sync::OnceLock;

use rayon::prelude::*;

use super::direct::{Direct, PARALLEL_MACS};
use crate::kernels::cpu::Cpu;
use crate::kernels::gemm::{self, Element, View, ViewMut};
use crate::kernels::rows;

/// Outputs per tile.
pub(super) const TILE: usize = 4;

/// Filter lengths the method takes: r + 3 points, at most the eight below. Longer filters
/// need points (±3, ±⅓) whose transforms lose more precision than they save arithmetic.
pub(super) const KERNELS: RangeInclusive<usize> = 2..=5;

/// The finite evaluation points, smallest magnitudes first; infinity is always the last.
const POINTS: [f64; 7] = [0.0, 1.0, -1.0, 2.0, -2.0, 0.5, -0.5];

/// F(TILE, r)'s three matrices, row-major.
struct Transforms {
    /// Points: r + TILE − 1.
    n: usize,
    /// `Aᵀ`, `[TILE, n]`: the output transform.
    at: Vec<f32>,
    /// `G`, `[n, r]`: the weight transform, kept in f64 (weights are transformed once).
    g: Vec<f64>,
    /// `Bᵀ`, `[n, n]`: the input transform.
    bt: Vec<f32>,
}

impl Transforms {
    fn new(r: usize) -> Transforms {
        let n = TILE + r - 1;
        // The polynomials of degree < `degree` evaluated at the points and at infinity
        // (its leading coefficient): `[n, degree]`.
        let evaluate = |degree: usize| {
            let mut e = vec![0.0; n * degree];
            for (k, p) in POINTS[..n - 1].iter().enumerate() {
                for j in 0..degree {
                    e[k * degree + j] = p.powi(j as i32);
                }
            }
            e[(n - 1) * degree + degree - 1] = 1.0;
            e
        };
        let outputs = evaluate(TILE);
        // The correlation is the transpose of the product's Toom-Cook algorithm:
        // Aᵀ = E_TILEᵀ, G = E_r, Bᵀ = (E_n⁻¹)ᵀ.
        let at = (0..TILE * n).map(|i| outputs[(i % n) * TILE + i / n] as f32).collect();
        let inverse = invert(evaluate(n), n);
        let bt = (0..n * n).map(|i| inverse[(i % n) * n + i / n] as f32).collect();
        Transforms { n, at, g: evaluate(r), bt }
    }

    /// The transforms for an `r`-tap filter (one of [`KERNELS`]), built once per process.
    fn get(r: usize) -> &'static Transforms {
        static ALL: OnceLock<Vec<Transforms>> = OnceLock::new();
        &ALL.get_or_init(|| KERNELS.map(Transforms::new).collect())[r - *KERNELS.start()]
    }
}

/// The inverse of the `n`×`n` matrix `a` by Gauss-Jordan elimination with partial
/// pivoting (a Vandermonde matrix at distinct points: never singular).
fn invert(mut a: Vec<f64>, n: usize) -> Vec<f64> {
    let mut inv: Vec<f64> = (0..n * n).map(|i| if i / n == i % n { 1.0 } else { 0.0 }).collect();
    for col in 0..n {
        let pivot = (col..n).max_by(|&i, &j| a[i * n + col].abs().total_cmp(&a[j * n + col].abs())).unwrap_or(col);
        for k in 0..n {
            a.swap(col * n + k, pivot * n + k);
            inv.swap(col * n + k, pivot * n + k);
        }
        let p = a[col * n + col];
        for k in 0..n {
            a[col * n + k] /= p;
            inv[col * n + k] /= p;
        }
        for row in (0..n).filter(|&row| row != col) {
            let f = a[row * n + col];
            for k in 0..n {
                a[row * n + k] -= f * a[col * n + k];
                inv[row * n + k] -= f * inv[col * n + k];
            }
        }
    }
    inv
}

/// `U_ξ[c][o]` for weights `[out, in, r]`: `[n, in, out]`, each point's block the GEMM's
/// second operand row-major, which the GEMM reads where it lies (a transposed layout would
/// be packed at every call, as costly as the products for the few tiles a stream brings).
pub(super) fn transform_weights<W: Element>(
    weight: &[W],
    in_channels: usize,
    out_channels: usize,
    r: usize,
) -> Vec<f32> {
    let t = Transforms::get(r);
    let mut u = vec![0.0; t.n * in_channels * out_channels];
    for (oc, w) in weight.chunks_exact(r).enumerate() {
        let (o, c) = (oc / in_channels, oc % in_channels);
        for (xi, g) in t.g.chunks_exact(r).enumerate() {
            let v = g.iter().zip(w).map(|(g, w)| g * f64::from(w.to_f32())).sum::<f64>();
            u[(xi * in_channels + c) * out_channels + o] = v as f32;
        }
    }
    u
}

/// `out` (`[out_channels, t_out]`) = the convolution of `d.x` (already padded), from the
/// transformed weights `u` ([`transform_weights`]) or, without them, weights transformed
/// for this call.
pub(super) fn run<W: Element>(cpu: Cpu, d: &Direct<W>, u: Option<&[f32]>, t_out: usize, out: &mut [f32]) {
    debug_assert!(d.dilation == 1 && KERNELS.contains(&d.kernel));
    let (cin, cout, r) = (d.in_channels, d.out_channels, d.kernel);
    let owned;
    let u = match u {
        Some(u) => u,
        None => {
            owned = transform_weights(d.weight, cin, cout, r);
            &owned
        }
    };
    let t = Transforms::get(r);
    let (n, tiles) = (t.n, t_out.div_ceil(TILE));
    // M_ξ = V_ξ · U_ξᵀ for each point, `[n, tiles, out]`; the points are independent tasks.
    let mut m = vec![0.0; n * tiles * cout];
    let point = |(xi, m_xi): (usize, &mut [f32])| {
        let bt = &t.bt[xi * n..][..n];
        let mut v = vec![0.0; tiles * cin];
        for (tile, v) in v.chunks_exact_mut(cin).enumerate() {
            let from = tile * TILE;
            // Inputs past the signal are the zeros the whole-signal call would see there.
            let taps = n.min(d.len.saturating_sub(from));
            for (c, v) in v.iter_mut().enumerate() {
                let x = &d.x[c * d.len + from..][..taps];
                *v = bt[..taps].iter().zip(x).fold(0.0, |s, (b, x)| s + b * x);
            }
        }
        let a = View::new(&v, tiles, cin).expect("tiles × in values");
        let b = View::strided(&u[xi * cin * cout..][..cin * cout], 0, cout, cin, 1, cout as isize)
            .expect("in × out values");
        gemm::gemm(cpu, a, b, ViewMut::new(m_xi, tiles, cout).expect("tiles × out values"), false);
    };
    if n * tiles * cin * cout >= PARALLEL_MACS {
        m.par_chunks_mut(tiles * cout).enumerate().for_each(point);
    } else {
        m.chunks_mut(tiles * cout).enumerate().for_each(point);
    }
    // y[o][4t + i] = Σ_ξ Aᵀ[i][ξ] M_ξ[t][o] + bias[o], a block of output channels at a time
    // so the sums run along contiguous channels of M.
    const BLOCK: usize = 16;
    let m = &m;
    rows::for_each_row_mut(out, BLOCK * t_out, |b, block| {
        let o0 = b * BLOCK;
        let width = block.len() / t_out;
        for tile in 0..tiles {
            let mut y = [[0.0f32; BLOCK]; TILE];
            for xi in 0..n {
                let mt = &m[(xi * tiles + tile) * cout + o0..][..width];
                for (yi, &a) in y.iter_mut().zip(t.at[xi..].iter().step_by(n)) {
                    yi.iter_mut().zip(mt).for_each(|(y, &m)| *y += a * m);
                }
            }
            for (l, row) in block.chunks_exact_mut(t_out).enumerate() {
                let bias = d.bias.map_or(0.0, |b| b[o0 + l]);
                for (i, y) in y.iter().enumerate().take(t_out.saturating_sub(tile * TILE)) {
                    row[tile * TILE + i] = y[l] + bias;
                }
            }
        }
    });
}
