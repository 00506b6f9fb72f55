//! Winograd's minimal filtering F(4, r) for a convolution of one group, stride 1 and
//! dilation 1 ([`ConvMethod::Winograd`](super::ConvMethod::Winograd)): four outputs of an
//! r-tap filter from n = r + 3 products instead of 4·r (Lavin & Gray 2015, in one
//! dimension), 2.5 times fewer multiply-adds at r = 5 and 2 at r = 3.
//!
//! Outputs are cut into tiles of [`TILE`] from output 0; tile t reads the n inputs from 4·t.
//! For each of the n evaluation points ξ (0, ±1, ±2, ±½ and infinity, as many as n needs):
//! - the weights were transformed once, `U_ξ[c][o] = Σ_j G[ξ][j] w[o][c][j]`, and stored in
//!   panels of [`PANEL`] output channels, `[in][PANEL]` each, so every panel is one
//!   contiguous stream (read once per call, often from memory);
//! - the inputs are transformed per call, `V_ξ[c][t] = Σ_k Bᵀ[ξ][k] x[c][4t + k]`;
//! - the sum over input channels is a product of V_ξᵀ and each panel of U_ξ, on a register
//!   tile of up to 12 tiles × 32 output channels, every value one chain of fused
//!   multiply-adds over the channels in order;
//!
//! then `y[o][4t + i] = Σ_ξ Aᵀ[i][ξ] M_ξ[t][o] + bias[o]`, by the same task that made the
//! panel's M_ξ (one parallel region for the inputs, one for the panels). The matrices come
//! from the Toom-Cook construction (evaluate at the points, interpolate), built in f64; the
//! weights are transformed in f64, once. The per-call transforms run in f32, a tile's n values
//! held in registers (the point count is a constant of each instance) and every sum one chain
//! of fused multiply-adds. Against the reference the VITS flow's latent came out at least as
//! close as with the f64 transforms they replaced, in less time (docs/KERNELS.md).
//!
//! Rounding is the same whatever the call: every output depends only on its tile's inputs,
//! the transformed weights and a fixed order of operations, and tiles start at multiples of
//! [`TILE`] from the signal's first output. So a stream that hands the convolution whole
//! tiles (and the rest at its end, zeros standing in past the input as in the whole-signal
//! call) gives the whole-signal call's output bit for bit, as the other methods do
//! ([`StreamingConv1d`] holds back the outputs of a partial tile until its input is
//! complete). Every level computes the same values: the products and the transforms are FMA
//! chains on each (`f32::mul_add` in the scalar reference).
//!
//! [`StreamingConv1d`]: super::StreamingConv1d

use std::cell::RefCell;
use std::ops::RangeInclusive;
use std::sync::OnceLock;

use rayon::prelude::*;

use super::direct::{Direct, PARALLEL_MACS};
use crate::kernels::cpu::{Cpu, Isa};
use crate::kernels::gemm::Element;
use crate::kernels::scratch::Scratch;
use crate::kernels::shared::Shared;

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

/// Output channels per panel of transformed weights: a panel is `[in][PANEL]`, one
/// contiguous stream that the product reads once per call.
const PANEL: usize = 32;

/// `U_ξ[c][o]` for weights `[out, in, r]`, as `[panels][n][in][PANEL]` (output channels
/// padded with zeros to whole panels): each panel one contiguous stream, which the
/// prefetchers follow when the weights come from memory (a row-major `[in][out]` block read
/// a panel at a time ran at a third of the speed there).
pub(super) fn transform_weights<W: Element>(
    weight: &[W],
    in_channels: usize,
    out_channels: usize,
    r: usize,
) -> Vec<f32> {
    let t = Transforms::get(r);
    let (n, panels, block) = (t.n, out_channels.div_ceil(PANEL), in_channels * PANEL);
    // Per panel: its weights as `[in][r][PANEL]` in f64, then for each point and input
    // channel the panel's values along contiguous output channels: `[n][in][PANEL]`.
    let panel = |(p, u): (usize, &mut [f32])| {
        let mut taps = vec![0.0f64; in_channels * r * PANEL];
        for (l, o) in (p * PANEL..out_channels.min((p + 1) * PANEL)).enumerate() {
            for (q, w) in weight[o * in_channels * r..][..in_channels * r].iter().enumerate() {
                taps[q * PANEL + l] = f64::from(w.to_f32());
            }
        }
        widest(Cpu::best(), WeightPanel { g: &t.g, r, taps: &taps, u });
    };
    let mut u = vec![0.0; panels * n * block];
    u.par_chunks_mut(n * block).enumerate().for_each(panel);
    u
}

/// `out` (`[out_channels, t_out]`) = the convolution of `d.x` (already padded), from the
/// transformed weights `u` ([`transform_weights`]) or, without them, weights transformed
/// for this call. The first tile starts `lead` outputs before `out`'s first (0 to 3; those
/// outputs are not computed, their inputs count as zeros): where a stream's tiles lie.
pub(super) fn run<W: Element>(cpu: Cpu, d: &Direct<W>, u: Option<&[f32]>, lead: usize, t_out: usize, out: &mut [f32]) {
    debug_assert!(d.dilation == 1 && KERNELS.contains(&d.kernel) && lead < TILE);
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
    let call = Call { t, x: d.x, len: d.len, cin, lead, t_out, tiles: (t_out + lead).div_ceil(TILE) };
    let (n, tiles, panels) = (t.n, call.tiles, cout.div_ceil(PANEL));
    let parallel = n * tiles * cin * cout >= PARALLEL_MACS && rayon::current_num_threads() > 1;
    // Both buffers are written whole before they are read; taken out of their slot, not
    // borrowed: a thread waiting on the pool may run another convolution.
    let (mut v_buf, mut m_buf) = SCRATCH.take();
    // V_ξ[c][t], `[n][in][tiles]`, a block of input channels per task.
    const CHANNELS: usize = 16;
    let v = v_buf.get::<f32>(n * cin * tiles);
    {
        let v = Shared(v.as_mut_ptr());
        let transform = |block: usize| {
            let channels = block * CHANNELS..(cin.min((block + 1) * CHANNELS));
            // Each task writes the rows of its own channels only.
            widest(cpu, Input { call: &call, channels, v })
        };
        if parallel {
            (0..cin.div_ceil(CHANNELS)).into_par_iter().for_each(transform);
        } else {
            (0..cin.div_ceil(CHANNELS)).for_each(transform);
        }
    }
    // Per panel of output channels, one task: M_ξ = V_ξᵀ · U_ξ for every point ξ
    // (`[panels][n][tiles][PANEL]`), then the panel's outputs from its M while it is in
    // cache, with no barrier between the two (a task per point and panel, and a second
    // parallel region for the outputs, cost a pool hand-off per convolution).
    let m = m_buf.get::<f32>(panels * n * tiles * PANEL);
    let v = &*v;
    let panel = |(p, (m, block)): (usize, (&mut [f32], &mut [f32]))| {
        for (xi, m) in m.chunks_exact_mut(tiles * PANEL).enumerate() {
            let v = &v[xi * cin * tiles..][..cin * tiles];
            let u = &u[(p * n + xi) * cin * PANEL..][..cin * PANEL];
            panel_product(cpu, v, u, tiles, cin, m);
        }
        let bias = d.bias.map(|b| &b[p * PANEL..][..block.len() / t_out]);
        widest(cpu, Output { call: &call, m, stride: tiles * PANEL, bias, out: block })
    };
    let m_panels = n * tiles * PANEL;
    if parallel {
        m.par_chunks_mut(m_panels).zip(out.par_chunks_mut(PANEL * t_out)).enumerate().for_each(panel);
    } else {
        m.chunks_mut(m_panels).zip(out.chunks_mut(PANEL * t_out)).enumerate().for_each(panel);
    }
    SCRATCH.set((v_buf, m_buf));
}

thread_local! {
    /// `V` and `M` of a call, reused so a stream's calls neither allocate nor zero them.
    static SCRATCH: RefCell<(Scratch, Scratch)> = RefCell::default();
}

/// Work run by [`widest`]: `run` is inlined into a `target_feature` function, so its plain
/// loops vectorize to that level's width. (A closure would not be: it is compiled on its
/// own, for the baseline's 2-lane SSE2, which is how the transforms first ran, at half the
/// speed of the products they feed.)
trait Job {
    type Out;
    fn run(self) -> Self::Out;
}

/// `job`, compiled for the widest vectors `cpu` has.
fn widest<J: Job>(cpu: Cpu, job: J) -> J::Out {
    #[cfg(target_arch = "x86_64")]
    {
        #[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512dq")]
        unsafe fn avx512<J: Job>(job: J) -> J::Out {
            job.run()
        }
        #[target_feature(enable = "avx2,fma")]
        unsafe fn avx2<J: Job>(job: J) -> J::Out {
            job.run()
        }
        // SAFETY: the level's instructions exist (the `Cpu` token says so).
        match cpu.isa() {
            Isa::Avx2 => return unsafe { avx2(job) },
            isa if isa >= Isa::Avx512 => return unsafe { avx512(job) },
            _ => {}
        }
    }
    job.run()
}

/// One panel of transformed weights: `u` (`[n][in][PANEL]`) from the panel's `taps`
/// (`[in][r][PANEL]`, f64) and the rows of G (`[n][r]`).
struct WeightPanel<'a> {
    g: &'a [f64],
    r: usize,
    taps: &'a [f64],
    u: &'a mut [f32],
}

impl Job for WeightPanel<'_> {
    type Out = ();
    #[inline(always)]
    fn run(self) {
        let block = self.taps.len() / self.r;
        for (g, u) in self.g.chunks_exact(self.r).zip(self.u.chunks_exact_mut(block)) {
            for (taps, u) in self.taps.chunks_exact(self.r * PANEL).zip(u.chunks_exact_mut(PANEL)) {
                let mut sum = [0.0f64; PANEL];
                for (&g, tap) in g.iter().zip(taps.chunks_exact(PANEL)) {
                    for (s, &w) in sum.iter_mut().zip(tap) {
                        *s += g * w;
                    }
                }
                for (u, s) in u.iter_mut().zip(sum) {
                    *u = s as f32;
                }
            }
        }
    }
}

/// [`Call::input`] for `channels`, into the V at `v`; made only where no other task writes
/// those channels' rows meanwhile.
struct Input<'a> {
    call: &'a Call<'a>,
    channels: std::ops::Range<usize>,
    v: Shared<f32>,
}

impl Job for Input<'_> {
    type Out = ();
    #[inline(always)]
    fn run(self) {
        // SAFETY: `v` holds the call's V, and no other task writes these channels' rows.
        unsafe { self.call.input(self.channels, self.v.get()) }
    }
}

/// [`Call::output`] for one panel.
struct Output<'a> {
    call: &'a Call<'a>,
    m: &'a [f32],
    stride: usize,
    bias: Option<&'a [f32]>,
    out: &'a mut [f32],
}

impl Job for Output<'_> {
    type Out = ();
    #[inline(always)]
    fn run(self) {
        self.call.output(self.m, self.stride, self.bias, self.out)
    }
}

/// One call's geometry and its transforms: plain f32 loops (see [`widest`]) whose sums are
/// chains of fused multiply-adds in a fixed order, so every level rounds them alike.
#[derive(Clone, Copy)]
struct Call<'a> {
    t: &'static Transforms,
    /// The padded input, `[cin][len]`.
    x: &'a [f32],
    len: usize,
    cin: usize,
    /// Outputs of the first tile before the call's first.
    lead: usize,
    t_out: usize,
    tiles: usize,
}

/// Calls `$f::<N>($args)` for the call's number of points N (r + 3 for r in [`KERNELS`]): a
/// fixed N lets the compiler keep a tile's N values in registers.
macro_rules! with_points {
    ($n:expr, $f:ident($($arg:expr),*)) => {
        match $n {
            5 => $f::<5>($($arg),*),
            6 => $f::<6>($($arg),*),
            7 => $f::<7>($($arg),*),
            8 => $f::<8>($($arg),*),
            _ => unreachable!("r + 3 points for r in KERNELS"),
        }
    };
}

impl Call<'_> {
    /// `V[ξ][c][t] = Σ_k Bᵀ[ξ][k] x[c][4t + k − lead]` (`[n][in][tiles]` at `v`) for the
    /// input channels `channels`, zeros standing in outside the input.
    ///
    /// # Safety
    /// `v` points at `n · in · tiles` values, and nothing else touches the rows of
    /// `channels` meanwhile.
    #[inline(always)]
    unsafe fn input(&self, channels: std::ops::Range<usize>, v: *mut f32) {
        let (n, tiles) = (self.t.n, self.tiles);
        // The input as four phases (`x[c][4t + j − lead]`), so tap k reads phase k % 4 from
        // tile t + k / 4: contiguous values for every tap.
        let width = tiles + (n - 1) / TILE;
        let mut phases = vec![0.0f32; TILE * width];
        for c in channels {
            split(&self.x[c * self.len..][..self.len], self.lead, &mut phases, width);
            // SAFETY: the rows (ξ, c) of V, which only this task writes.
            unsafe {
                with_points!(n, input_rows(&self.t.bt, &phases, width, tiles, self.cin * tiles, v.add(c * tiles)))
            }
        }
    }

    /// One panel of output channels (`out`, `[channels][t_out]`, at most a panel) from its
    /// products `m` (point ξ's `[tiles][PANEL]` at `ξ · stride`) and `bias`.
    #[inline(always)]
    fn output(&self, m: &[f32], stride: usize, bias: Option<&[f32]>, out: &mut [f32]) {
        with_points!(self.t.n, output_tiles(self, m, stride, bias, out))
    }
}

/// One channel's rows of V (row ξ at `v + ξ · rows`, `tiles` values) from its `phases`
/// (`[TILE][width]`): a tile's N taps loaded once, each row's value one chain of fused
/// multiply-adds over the taps in order from zero (Bᵀ's zeros included: they add nothing).
///
/// # Safety
/// The N rows at `v` hold `tiles` values each, and nothing else touches them meanwhile.
#[inline(always)]
unsafe fn input_rows<const N: usize>(bt: &[f32], phases: &[f32], width: usize, tiles: usize, rows: usize, v: *mut f32) {
    let bt: [[f32; N]; N] = std::array::from_fn(|xi| std::array::from_fn(|k| bt[xi * N + k]));
    let taps: [&[f32]; N] = std::array::from_fn(|k| &phases[(k % TILE) * width + k / TILE..][..tiles]);
    #[allow(clippy::needless_range_loop)] // t indexes N slices and N rows at once
    for t in 0..tiles {
        let x: [f32; N] = std::array::from_fn(|k| taps[k][t]);
        for (xi, b) in bt.iter().enumerate() {
            let sum = b.iter().zip(&x).fold(0.0f32, |sum, (&b, &x)| b.mul_add(x, sum));
            // SAFETY: value t of row ξ.
            unsafe { *v.add(xi * rows + t) = sum };
        }
    }
}

/// [`Call::output`] for N points: per tile, `y[i][o] = bias[o] + Σ_ξ Aᵀ[i][ξ] M_ξ[t][o]`
/// along the panel's channels, each value one chain of fused multiply-adds over the points
/// in order from the bias; then the outputs that lie in the call.
#[inline(always)]
fn output_tiles<const N: usize>(call: &Call<'_>, m: &[f32], stride: usize, bias: Option<&[f32]>, out: &mut [f32]) {
    let t_out = call.t_out;
    let rows = out.len() / t_out;
    let at: [[f32; N]; TILE] = std::array::from_fn(|i| std::array::from_fn(|xi| call.t.at[i * N + xi]));
    let mut b = [0.0f32; PANEL];
    if let Some(bias) = bias {
        b[..rows].copy_from_slice(&bias[..rows]);
    }
    for tile in 0..call.tiles {
        let mt: [&[f32]; N] = std::array::from_fn(|xi| &m[xi * stride + tile * PANEL..][..PANEL]);
        let mut y = [[0.0f32; PANEL]; TILE];
        for (y, a) in y.iter_mut().zip(&at) {
            for (l, y) in y.iter_mut().enumerate() {
                *y = a.iter().zip(&mt).fold(b[l], |sum, (&a, m)| a.mul_add(m[l], sum));
            }
        }
        // Outputs tile·4 + i − lead that lie in this call.
        let first = tile * TILE;
        let from = call.lead.saturating_sub(first).min(TILE);
        let to = (t_out + call.lead).saturating_sub(first).clamp(from, TILE);
        for (l, row) in out.chunks_exact_mut(t_out).enumerate() {
            for (i, y) in y.iter().enumerate().take(to).skip(from) {
                row[first + i - call.lead] = y[l];
            }
        }
    }
}

/// `phases[j][t] = row[4t + j − lead]` (`phases` is `[TILE][width]`), zeros where the row has
/// no value.
#[inline(always)]
fn split(row: &[f32], lead: usize, phases: &mut [f32], width: usize) {
    // The tiles whose four inputs all lie in the row.
    let first = lead.div_ceil(TILE).min(width);
    let last = ((row.len() + lead) / TILE).clamp(first, width);
    for t in (0..first).chain(last..width) {
        for j in 0..TILE {
            let at = (TILE * t + j).wrapping_sub(lead);
            phases[j * width + t] = if at < row.len() { row[at] } else { 0.0 };
        }
    }
    let (p0, rest) = phases.split_at_mut(width);
    let (p1, rest) = rest.split_at_mut(width);
    let (p2, p3) = rest.split_at_mut(width);
    let (p0, p1, p2, p3) = (&mut p0[first..last], &mut p1[first..last], &mut p2[first..last], &mut p3[first..last]);
    let src = row[TILE * first - lead..][..TILE * (last - first)].chunks_exact(TILE);
    // An interleaved group of four, which the compiler turns into shuffles.
    for ((((s, p0), p1), p2), p3) in src.zip(p0).zip(p1).zip(p2).zip(p3) {
        (*p0, *p1, *p2, *p3) = (s[0], s[1], s[2], s[3]);
    }
}

/// `m` (`[rows, PANEL]`) = `v`ᵀ (`v` is `[k, rows]`) · `u` (`[k, PANEL]`): each value one chain of
/// fused multiply-adds over k in order from zero, on every level, so every level and every
/// number of rows gives the same bits.
fn panel_product(cpu: Cpu, v: &[f32], u: &[f32], rows: usize, k: usize, m: &mut [f32]) {
    match cpu.isa() {
        #[cfg(target_arch = "x86_64")]
        Isa::Avx2 => unsafe { simd::avx2(v, u, rows, k, m) },
        #[cfg(target_arch = "x86_64")]
        isa if isa >= Isa::Avx512 => unsafe { simd::avx512(v, u, rows, k, m) },
        _ => {
            for (r, mr) in m.chunks_exact_mut(PANEL).take(rows).enumerate() {
                mr.fill(0.0);
                for (c, ur) in u.chunks_exact(PANEL).take(k).enumerate() {
                    let a = v[c * rows + r];
                    mr.iter_mut().zip(ur).for_each(|(m, &u)| *m = a.mul_add(u, *m));
                }
            }
        }
    }
}

#[cfg(target_arch = "x86_64")]
mod simd {
    use super::PANEL;
    use crate::kernels::conv::direct::avx2::Avx2;
    use crate::kernels::conv::direct::avx512::Avx512;
    use crate::kernels::conv::direct::tile::{rows_of_tile, Simd};

    /// 6 rows × 2 vectors, the panel in two strips of 16 channels: 12 accumulators, like the
    /// direct kernel's tile. At 2 rows × the whole panel (4 vectors) its 8 chains were just
    /// the two FMA pipes' latency on a Zen 3; 6 × 2 ran the flow's and the text encoder's
    /// shapes 1.11-1.29 times as fast on one thread, 1.17-1.24 on two (docs/KERNELS.md).
    ///
    /// # Safety
    /// On a CPU with AVX2 and FMA; the slices as [`super::panel_product`]'s.
    #[target_feature(enable = "avx2,fma")]
    pub(super) unsafe fn avx2(v: &[f32], u: &[f32], rows: usize, k: usize, m: &mut [f32]) {
        unsafe { product::<Avx2, 6, 2>(v, u, rows, k, m) }
    }

    /// 12 rows × the panel (2 vectors): 24 accumulators.
    ///
    /// # Safety
    /// On a CPU with AVX-512 F/BW/VL/DQ; the slices as [`super::panel_product`]'s.
    #[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512dq")]
    pub(super) unsafe fn avx512(v: &[f32], u: &[f32], rows: usize, k: usize, m: &mut [f32]) {
        unsafe { product::<Avx512, 12, 2>(v, u, rows, k, m) }
    }

    /// Tiles of `R` rows (then 4, 2, 1 for the last rows, as [`rows_of_tile`] splits them) ×
    /// strips of `NV` vectors across the panel.
    #[inline(always)]
    unsafe fn product<S: Simd, const R: usize, const NV: usize>(
        v: &[f32],
        u: &[f32],
        rows: usize,
        k: usize,
        m: &mut [f32],
    ) {
        let width = NV * S::LANES;
        debug_assert!(
            PANEL.is_multiple_of(width) && v.len() >= rows * k && u.len() >= k * PANEL && m.len() >= rows * PANEL
        );
        let mut r0 = 0;
        while r0 < rows {
            let h = rows_of_tile(rows - r0, &[R, 4, 2, 1]);
            for col in (0..PANEL).step_by(width) {
                // SAFETY (each call): rows r0..r0 + h and columns col..col + width lie inside
                // v, u and m.
                unsafe {
                    match h {
                        h if h == R => tile::<S, R, NV>(v, u, rows, r0, k, col, m),
                        4 => tile::<S, 4, NV>(v, u, rows, r0, k, col, m),
                        2 => tile::<S, 2, NV>(v, u, rows, r0, k, col, m),
                        _ => tile::<S, 1, NV>(v, u, rows, r0, k, col, m),
                    }
                }
            }
            r0 += h;
        }
    }

    /// Rows `r0..r0 + H` × columns `col..col + NV · LANES` of `m`.
    #[inline(always)]
    unsafe fn tile<S: Simd, const H: usize, const NV: usize>(
        v: &[f32],
        u: &[f32],
        rows: usize,
        r0: usize,
        k: usize,
        col: usize,
        m: &mut [f32],
    ) {
        unsafe {
            let mut acc = [[S::zero(); NV]; H];
            let (vp, up) = (v.as_ptr().add(r0), u.as_ptr().add(col));
            for c in 0..k {
                let w: [S::V; NV] = std::array::from_fn(|j| S::load(up.add(c * PANEL + j * S::LANES)));
                for (h, acc) in acc.iter_mut().enumerate() {
                    let a = S::splat(*vp.add(c * rows + h));
                    for (acc, &w) in acc.iter_mut().zip(&w) {
                        *acc = S::fma(a, w, *acc);
                    }
                }
            }
            let mp = m.as_mut_ptr().add(r0 * PANEL + col);
            for (h, acc) in acc.iter().enumerate() {
                for (j, &a) in acc.iter().enumerate() {
                    S::store(mp.add(h * PANEL + j * S::LANES), a);
                }
            }
        }
    }
}
