//! Quantized weight rows in block formats, tabulated as ggml tabulates its types: each
//! format says how many values a block holds, how many bytes it takes, how to encode and
//! reconstruct a row, and how to take a row's dot product against activations quantized
//! once per product ([`Activations`]).
//!
//! | format | values per block | bytes per block | bits per weight | block layout (little-endian) |
//! | --- | --- | --- | --- | --- |
//! | [`Quant::Q8_0`] | 32 | 34 | 8.5 | f16 scale `d`, 32 × i8 `q`; `v = d·q` |
//! | [`Quant::Q4_0`] | 32 | 18 | 4.5 | f16 scale `d`, 16 bytes of 4-bit `q` (value `i` low nibble of byte `i`, `i + 16` high); `v = d·(q − 8)` |
//! | [`Quant::Q4K`] | 256 | 144 | 4.5 | f16 `d`, f16 `dmin`, 12 bytes of eight 6-bit scales and mins, 128 bytes of 4-bit `q`; `v = d·sc·q − dmin·m` |
//! | [`Quant::Q5K`] | 256 | 176 | 5.5 | as Q4_K, with 32 bytes of fifth bits before the nibbles; `q ∈ 0..=31` |
//! | [`Quant::Q6K`] | 256 | 210 | 6.5625 | 128 bytes of low 4 bits, 64 of high 2 bits, 16 × i8 scales, f16 `d`; `v = d·sc·(q − 32)` |
//!
//! The layouts are byte for byte ggml's `block_q8_0`, `block_q4_0`, `block_q4_K`, `block_q5_K` and `block_q6_K`, so a GGUF file's
//! tensors of these types are rows spiral multiplies as they are.
//!
//! ```
//! use spiral_engine::kernels::quant::{Activations, Quant};
//! use spiral_engine::kernels::Cpu;
//!
//! let row: Vec<f32> = (0..256).map(|i| (i as f32 * 0.37).sin()).collect();
//! let mut bytes = vec![0u8; Quant::Q4K.row_bytes(256)];
//! Quant::Q4K.encode_row(&row, &mut bytes);
//! let mut x = Activations::default();
//! x.quantize(&row);
//! let dot = Quant::Q4K.dot(Cpu::best(), &bytes, x.vector(0, 256));
//! let exact: f32 = row.iter().map(|v| v * v).sum();
//! assert!((dot - exact).abs() < 0.02 * exact);
//! ```

use super::cpu::{Cpu, Isa};
use super::{q4_0, q4k, q6k, q8};

/// Instantiates a format's AVX-512 dot body (a macro taking the functions' names, their
/// target features and the block product of unsigned by signed bytes) at the AVX-512 level
/// and at the VNNI level, which differ only in how four byte products become one i32 lane:
/// `maddubs` then `madd`, or one `VPDPBUSD`.
macro_rules! avx512_levels {
    ($body:ident! ($($plain:ident),+) ($($vnni:ident),+)) => {
        $body!($($plain,)+ "avx512f,avx512bw,avx512vl,avx2,fma,f16c", |u, s| _mm512_madd_epi16(
            _mm512_maddubs_epi16(u, s),
            _mm512_set1_epi16(1)
        ));
        $body!($($vnni,)+ "avx512f,avx512bw,avx512vl,avx512vnni,avx2,fma,f16c", |u, s| {
            _mm512_dpbusd_epi32(_mm512_setzero_si512(), u, s)
        });
    };
}
pub(crate) use avx512_levels;

/// A block format for weight rows.
#[allow(non_camel_case_types)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Quant {
    /// 8-bit values in blocks of 32 with an f16 scale.
    Q8_0,
    /// 4-bit values in blocks of 32 with an f16 scale.
    Q4_0,
    /// 4-bit values in super-blocks of 256: eight sub-blocks of 32, each with a 6-bit scale
    /// and a 6-bit min, themselves scaled by the block's f16 `d` and `dmin`.
    Q4K,
    /// Q4K with a fifth bit per value (what llama.cpp's Q4_K_S and Q5_K_M files keep some
    /// or most tensors in).
    Q5K,
    /// 6-bit values in super-blocks of 256: sixteen sub-blocks of 16, each with an i8 scale,
    /// themselves scaled by the block's f16 `d` (what llama.cpp's Q4_K_M files keep some
    /// tensors in).
    Q6K,
}

impl Quant {
    pub const ALL: [Quant; 5] = [Quant::Q8_0, Quant::Q4_0, Quant::Q4K, Quant::Q5K, Quant::Q6K];

    /// The name in files and messages (ggml's type name).
    pub fn name(self) -> &'static str {
        match self {
            Quant::Q8_0 => "q8_0",
            Quant::Q4_0 => "q4_0",
            Quant::Q4K => "q4_k",
            Quant::Q5K => "q5_k",
            Quant::Q6K => "q6_k",
        }
    }

    /// The format called `name`.
    pub fn parse(name: &str) -> Option<Quant> {
        Quant::ALL.into_iter().find(|q| q.name() == name)
    }

    /// Values per block: a row's length must be a multiple of it.
    pub fn block(self) -> usize {
        match self {
            Quant::Q8_0 => q8::BLOCK,
            Quant::Q4_0 => q4_0::BLOCK,
            Quant::Q4K | Quant::Q5K => q4k::BLOCK,
            Quant::Q6K => q6k::BLOCK,
        }
    }

    /// The format in smaller blocks with at least as many bits per weight, for rows this
    /// one's blocks do not divide.
    pub fn fallback(self) -> Option<Quant> {
        match self {
            Quant::Q4K => Some(Quant::Q4_0),
            Quant::Q5K | Quant::Q6K => Some(Quant::Q8_0),
            Quant::Q8_0 | Quant::Q4_0 => None,
        }
    }

    /// Bytes per block.
    pub fn block_bytes(self) -> usize {
        match self {
            Quant::Q8_0 => q8::BLOCK_BYTES,
            Quant::Q4_0 => q4_0::BLOCK_BYTES,
            Quant::Q4K => q4k::BLOCK_BYTES,
            Quant::Q5K => q4k::Q5_BLOCK_BYTES,
            Quant::Q6K => q6k::BLOCK_BYTES,
        }
    }

    /// Bytes of a row of `cols` values (a multiple of [`block`](Self::block)).
    pub fn row_bytes(self, cols: usize) -> usize {
        cols / self.block() * self.block_bytes()
    }

    /// Encodes `values` (whole blocks) into `out` ([`row_bytes`](Self::row_bytes) long).
    pub fn encode_row(self, values: &[f32], out: &mut [u8]) {
        assert!(values.len().is_multiple_of(self.block()), "{} rows are whole blocks of {}", self.name(), self.block());
        assert_eq!(out.len(), self.row_bytes(values.len()), "{} row bytes", self.name());
        match self {
            Quant::Q8_0 => q8::encode_row(values, out),
            Quant::Q4_0 => q4_0::encode_row(values, out),
            Quant::Q4K => q4k::encode_row::<false>(values, out),
            Quant::Q5K => q4k::encode_row::<true>(values, out),
            Quant::Q6K => q6k::encode_row(values, out),
        }
    }

    /// Reconstructs the row `bytes` encode into `out`.
    pub fn decode_row(self, bytes: &[u8], out: &mut [f32]) {
        assert_eq!(bytes.len(), self.row_bytes(out.len()), "{} row bytes", self.name());
        match self {
            Quant::Q8_0 => q8::decode_row(bytes, out),
            Quant::Q4_0 => q4_0::decode_row(bytes, out),
            Quant::Q4K => q4k::decode_row::<false>(bytes, out),
            Quant::Q5K => q4k::decode_row::<true>(bytes, out),
            Quant::Q6K => q6k::decode_row(bytes, out),
        }
    }

    /// The dot product of the encoded row `bytes` with the quantized vector `x`.
    /// `out[b]` = [`dot`](Self::dot) of the row with `xs[b]`, bit for bit, reading and
    /// unpacking the row once for several vectors where the format and level have a kernel
    /// for it (q4_k and q5_k from AVX-512 on, four vectors at a time: a prompt's positions).
    pub fn dot_many(self, cpu: Cpu, bytes: &[u8], xs: &[Vector], out: &mut [f32]) {
        assert_eq!(xs.len(), out.len(), "one output per vector");
        let mut done = 0;
        if matches!(self, Quant::Q4K | Quant::Q5K) && cpu.isa() >= Isa::Avx512 {
            for (x4, o4) in xs.chunks_exact(4).zip(out.chunks_exact_mut(4)) {
                let x4: [Vector; 4] = std::array::from_fn(|i| x4[i]);
                for x in x4 {
                    assert_eq!(bytes.len(), self.row_bytes(x.len()), "q4_k row against {} values", x.len());
                }
                // SAFETY: the `Cpu` token proves the level's instructions exist.
                let dots = unsafe {
                    match (self, cpu.isa()) {
                        (Quant::Q4K, Isa::Avx512) => q4k::avx512::dot_many::<false, 4>(bytes, x4),
                        (Quant::Q4K, _) => q4k::avx512::dot_many_vnni::<false, 4>(bytes, x4),
                        (_, Isa::Avx512) => q4k::avx512::dot_many::<true, 4>(bytes, x4),
                        _ => q4k::avx512::dot_many_vnni::<true, 4>(bytes, x4),
                    }
                };
                o4.copy_from_slice(&dots);
                done += 4;
            }
        }
        for (o, x) in out[done..].iter_mut().zip(&xs[done..]) {
            *o = self.dot(cpu, bytes, *x);
        }
    }

    pub fn dot(self, cpu: Cpu, bytes: &[u8], x: Vector) -> f32 {
        let mut out = [0.0];
        self.dot_rows(cpu, bytes, x, &mut out);
        out[0]
    }

    /// `out[i]` = [`dot`](Self::dot) of row `i` of `rows` (rows for `x.len()` values, one
    /// after another) with `x`, bit for bit: the checks and the choice of path made once
    /// for all the rows (per row they cost a sixth of the products' time in the Qwen3-TTS
    /// code predictor).
    pub fn dot_rows(self, cpu: Cpu, rows: &[u8], x: Vector, out: &mut [f32]) {
        let row_bytes = self.row_bytes(x.quants.len());
        assert_eq!(rows.len(), row_bytes * out.len(), "{} rows against {} values", self.name(), x.len());
        if row_bytes == 0 {
            out.fill(0.0);
            return;
        }
        // Generic rather than a closure over `&dyn Fn`: each level's loop calls its kernel
        // directly.
        fn each(out: &mut [f32], rows: &[u8], row_bytes: usize, dot: impl Fn(&[u8]) -> f32) {
            out.iter_mut().zip(rows.chunks_exact(row_bytes)).for_each(|(o, row)| *o = dot(row))
        }
        // Each format has the same paths; the `Cpu` token picks one (`$fifth` picks Q4_K or
        // Q5_K from the body they share).
        macro_rules! by_level {
            ($format:ident $(, $fifth:literal)?) => {
                match cpu.isa() {
                    Isa::Scalar => each(out, rows, row_bytes, |row| $format::scalar::dot$(::<$fifth>)?(row, x)),
                    // SAFETY: the `Cpu` token proves the level's instructions exist.
                    Isa::Avx2 => each(out, rows, row_bytes, |row| unsafe { $format::avx2::dot$(::<$fifth>)?(row, x) }),
                    Isa::Avx512 => {
                        each(out, rows, row_bytes, |row| unsafe { $format::avx512::dot$(::<$fifth>)?(row, x) })
                    }
                    _ => each(out, rows, row_bytes, |row| unsafe { $format::avx512::dot_vnni$(::<$fifth>)?(row, x) }),
                }
            };
        }
        match self {
            Quant::Q8_0 => by_level!(q8),
            Quant::Q4_0 => by_level!(q4_0),
            Quant::Q4K => by_level!(q4k, false),
            Quant::Q5K => by_level!(q4k, true),
            Quant::Q6K => by_level!(q6k),
        }
    }
}

/// Values per activation block: every weight format's blocks are whole activation blocks.
pub const X_BLOCK: usize = 32;

/// Vectors quantized for products with block-format rows: per 32 values one f32 scale
/// (`amax / 127`), the i8 values, and the sum of the values as quantized (which the
/// formats with a min need). Held between products so steady-state calls do not allocate.
#[derive(Clone, Debug, Default)]
pub struct Activations {
    quants: Vec<i8>,
    magnitudes: Vec<u8>,
    scales: Vec<f32>,
    sums: Vec<f32>,
}

/// One quantized vector of [`Activations`].
#[derive(Clone, Copy, Debug)]
pub struct Vector<'a> {
    pub quants: &'a [i8],
    /// `|quants|`: a format whose weights are signed multiplies these by the weights
    /// carrying the values' signs (an unsigned × signed byte product), and every row of a
    /// product would otherwise take them again.
    pub magnitudes: &'a [u8],
    pub scales: &'a [f32],
    pub sums: &'a [f32],
}

impl Vector<'_> {
    /// The vector from block `b` on (a dot's tail).
    pub fn from_block(&self, b: usize) -> Vector<'_> {
        Vector {
            quants: &self.quants[b * X_BLOCK..],
            magnitudes: &self.magnitudes[b * X_BLOCK..],
            scales: &self.scales[b..],
            sums: &self.sums[b..],
        }
    }

    pub fn len(&self) -> usize {
        self.quants.len()
    }

    pub fn is_empty(&self) -> bool {
        self.quants.is_empty()
    }
}

impl Activations {
    /// Quantizes `x` (vectors of a length that is a multiple of [`X_BLOCK`], one after
    /// another), replacing what was held.
    pub fn quantize(&mut self, x: &[f32]) {
        assert!(x.len().is_multiple_of(X_BLOCK), "quantized vectors are whole blocks of {X_BLOCK}");
        let blocks = x.len() / X_BLOCK;
        self.quants.resize(x.len(), 0);
        self.scales.resize(blocks, 0.0);
        self.sums.resize(blocks, 0.0);
        for (((v, q), s), sum) in
            x.chunks_exact(X_BLOCK).zip(self.quants.chunks_exact_mut(X_BLOCK)).zip(&mut self.scales).zip(&mut self.sums)
        {
            let amax = v.iter().fold(0.0f32, |m, x| m.max(x.abs()));
            *s = amax / 127.0;
            let inv = if amax > 0.0 { 127.0 / amax } else { 0.0 };
            q.iter_mut().zip(v).for_each(|(q, &x)| *q = nearest(x * inv));
            *sum = *s * q.iter().map(|&q| i32::from(q)).sum::<i32>() as f32;
        }
        self.magnitudes.clear();
        self.magnitudes.extend(self.quants.iter().map(|q| q.unsigned_abs()));
    }

    /// Vector `b` of those quantized, each `len` values long.
    pub fn vector(&self, b: usize, len: usize) -> Vector<'_> {
        let blocks = len / X_BLOCK;
        Vector {
            quants: &self.quants[b * len..][..len],
            magnitudes: &self.magnitudes[b * len..][..len],
            scales: &self.scales[b * blocks..][..blocks],
            sums: &self.sums[b * blocks..][..blocks],
        }
    }
}

/// `v` rounded half away from zero (as [`f32::round`]) and clamped to ±127. By truncation
/// and the fraction left, exact below 2²³, because `round` is a libm call per value on the
/// baseline target and this loop vectorizes (the quantization was 2 % of the Qwen3-TTS
/// codes' time, most of it in `roundf`; the q8_0 encoder's rounding was a quarter of
/// loading a checkpoint with `--codec q8`). NaN gives 0, as `round` then `as i8` does.
#[inline(always)]
pub(crate) fn nearest(v: f32) -> i8 {
    let v = v.clamp(-127.0, 127.0);
    let t = v as i32;
    let away = if v < 0.0 { -1 } else { 1 };
    (t + if (v - t as f32).abs() >= 0.5 { away } else { 0 }) as i8
}

/// f16 bits to f32 (for the scalar paths and encoders).
pub(crate) fn f16(bits: u16) -> f32 {
    half::f16::from_bits(bits).to_f32()
}

/// The f16 at `p` (little-endian) as f32, by F16C. Converts the eight bytes at `p` (the
/// scale and what follows it in its block; every block has at least that) with one
/// full-register `VCVTPH2PS`: written as intrinsics, the compiler loads only the 16 bits it
/// needs with `VPINSRW` into whichever register it picks, often an accumulator, which
/// chained each block's scale to the previous block's sums (measured in the q8_0 dot).
#[cfg(target_arch = "x86_64")]
#[inline]
#[target_feature(enable = "f16c")]
pub(crate) unsafe fn f16_at(p: *const u8) -> f32 {
    use std::arch::x86_64::*;
    let wide: __m128;
    std::arch::asm!(
        "vcvtph2ps {wide}, qword ptr [{p}]",
        p = in(reg) p,
        wide = out(xmm_reg) wide,
        options(pure, readonly, nostack, preserves_flags),
    );
    _mm_cvtss_f32(wide)
}

/// The f16 scales of the eight blocks of `STRIDE` bytes from `p` (each block's first two
/// bytes), widened by one conversion for all eight.
#[cfg(target_arch = "x86_64")]
#[inline]
#[target_feature(enable = "avx2,f16c")]
pub(crate) unsafe fn f16x8_at<const STRIDE: usize>(p: *const u8) -> std::arch::x86_64::__m256 {
    use std::arch::x86_64::*;
    let at = |b: usize| i16::from_le_bytes([*p.add(b * STRIDE), *p.add(b * STRIDE + 1)]);
    _mm256_cvtph_ps(_mm_setr_epi16(at(0), at(1), at(2), at(3), at(4), at(5), at(6), at(7)))
}

/// Asks for the `BYTES` of a row that lie [`PREFETCH_AHEAD`] bytes past `p` (a whole number
/// of cache lines from there). The block formats' AVX2 loops call it once per round for the
/// bytes the round reads: the hardware prefetcher alone left a Zen 1's q8_0 product waiting
/// on memory at 0.66-0.73 of the read roof, with it 0.90-0.99 (BENCHMARKS.md). A prefetch
/// never faults, so past the end of the weights it asks for nothing harmful.
#[cfg(target_arch = "x86_64")]
#[inline(always)]
pub(crate) fn prefetch<const BYTES: usize>(p: *const u8) {
    use super::prefetch::{lines, LINE_BYTES};
    lines(p.wrapping_add(PREFETCH_AHEAD), BYTES.div_ceil(LINE_BYTES));
}

/// How far ahead [`prefetch`] asks: at 10 GB/s per thread and about 100 ns from memory, a
/// thread has 1 KB in flight; 4 KB leaves room for a slower memory (1 KB measured 0.86-0.92
/// against 0.90-0.97 for 4 KB on the Zen 1).
#[cfg(target_arch = "x86_64")]
const PREFETCH_AHEAD: usize = 4096;

/// f32 to f16 bits, rounded to nearest.
pub(crate) fn to_f16(v: f32) -> u16 {
    half::f16::from_f32(v).to_bits()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kernels::testing::{available, random};

    #[test]
    fn activations_are_within_half_a_step_never_minus_128_with_their_sums_and_magnitudes() {
        let x: Vec<f32> = random(32 * 40, 1).iter().map(|v| v * 3.0).collect();
        let mut a = Activations::default();
        a.quantize(&x);
        let v = a.vector(0, x.len());
        for (b, block) in x.chunks_exact(X_BLOCK).enumerate() {
            for (i, &x) in block.iter().enumerate() {
                let back = v.quants[b * X_BLOCK + i] as f32 * v.scales[b];
                assert!((back - x).abs() <= 0.5 * v.scales[b] * 1.0001, "{x} -> {back}");
            }
            let ints: i32 = v.quants[b * X_BLOCK..][..X_BLOCK].iter().map(|&q| i32::from(q)).sum();
            assert_eq!(v.sums[b], ints as f32 * v.scales[b]);
        }
        assert!(v.quants.iter().all(|&q| q != -128));
        assert!(v.quants.iter().zip(v.magnitudes).all(|(&q, &m)| u8::try_from(i32::from(q).abs()) == Ok(m)));
        let tail = v.from_block(3);
        assert_eq!((tail.quants.len(), tail.magnitudes.len()), (37 * X_BLOCK, 37 * X_BLOCK));
        a.quantize(&[0.0; 32]);
        let zero = a.vector(0, 32);
        assert!(
            zero.quants.iter().all(|&q| q == 0) && zero.magnitudes.iter().all(|&m| m == 0) && zero.scales[0] == 0.0
        );
    }

    #[test]
    fn nearest_rounds_as_round_then_clamp() {
        let specials =
            [0.5, -0.5, 1.5, -2.5, 0.49999997, -0.49999997, 126.5, 127.4, 127.5, -127.5, 300.0, -1e30, 0.0, -0.0];
        let randoms = random(100_000, 9).into_iter().map(|v| v * 140.0);
        for v in specials.into_iter().chain(randoms).chain([f32::NAN, f32::INFINITY, f32::NEG_INFINITY]) {
            assert_eq!(nearest(v), v.round().clamp(-127.0, 127.0) as i8, "{v}");
        }
    }

    /// Σ over weights of (decoded weight) × (dequantized activation), in f64: what every
    /// path's integer arithmetic must reproduce up to the order of its f32 sums.
    fn reference(q: Quant, bytes: &[u8], x: Vector) -> (f64, f64) {
        let mut w = vec![0.0f32; x.len()];
        q.decode_row(bytes, &mut w);
        let mut exact = 0.0f64;
        let mut magnitude = 0.0f64;
        for (i, w) in w.iter().enumerate() {
            let xv = x.quants[i] as f64 * x.scales[i / X_BLOCK] as f64;
            exact += *w as f64 * xv;
            magnitude += (*w as f64 * xv).abs();
        }
        (exact, magnitude)
    }

    #[test]
    fn every_format_and_path_matches_the_reference() {
        for q in Quant::ALL {
            for blocks in [0, 1, 2, 3, 7, 8, 12, 17] {
                let n = blocks * q.block();
                let w: Vec<f32> = random(n, 2).iter().map(|v| v * 0.7 + 0.1).collect();
                let mut bytes = vec![0u8; q.row_bytes(n)];
                q.encode_row(&w, &mut bytes);
                let mut x = random(n, 3);
                if let Some(v) = x.first_mut() {
                    *v = -1.5; // an activation at -127, the sign trick's edge
                }
                let mut a = Activations::default();
                a.quantize(&x);
                let (exact, magnitude) = reference(q, &bytes, a.vector(0, n));
                for cpu in available() {
                    let got = q.dot(cpu, &bytes, a.vector(0, n)) as f64;
                    let tol = 1e-5 * magnitude + 1e-6;
                    assert!((got - exact).abs() <= tol, "{} {} blocks={blocks}: {got} vs {exact}", q.name(), cpu.isa());
                }
            }
        }
    }

    #[test]
    fn rows_reconstruct_closely() {
        // Relative RMS error of a reconstructed Gaussian-like row: the bits decide it.
        for (q, bound) in
            [(Quant::Q8_0, 0.01), (Quant::Q4_0, 0.15), (Quant::Q4K, 0.12), (Quant::Q5K, 0.06), (Quant::Q6K, 0.04)]
        {
            let n = 4096;
            let w: Vec<f32> = random(n, 5).iter().zip(random(n, 6)).map(|(a, b)| a + b).collect();
            let mut bytes = vec![0u8; q.row_bytes(n)];
            q.encode_row(&w, &mut bytes);
            let mut back = vec![0.0; n];
            q.decode_row(&bytes, &mut back);
            let err: f32 = w.iter().zip(&back).map(|(a, b)| (a - b) * (a - b)).sum::<f32>();
            let norm: f32 = w.iter().map(|a| a * a).sum();
            let rel = (err / norm).sqrt();
            assert!(rel < bound, "{}: relative error {rel}", q.name());
            let zero = vec![0.0; q.block()];
            let mut zb = vec![0xAAu8; q.row_bytes(q.block())];
            q.encode_row(&zero, &mut zb);
            q.decode_row(&zb, &mut back[..q.block()]);
            assert!(back[..q.block()].iter().all(|&v| v == 0.0), "{}: zeros stay zero", q.name());
        }
    }
}
