//! Matrix × matrix for compute-bound work (vocoder convolutions, prompt prefill):
//! `C = A·Bᵀ` or `C += A·Bᵀ`, with A an M×K view, Bᵀ an N×K view and C an M×N row-major
//! block of f32.
//!
//! Both operands are given with K along their rows, as a linear layer stores its weights
//! (`[out, in]`), so `y = x·Wᵀ` needs no transposition; [`View::transposed`] turns a row-major
//! K×N matrix into the N×K view this wants. A [`View`]'s columns may be indexed on two levels
//! (groups of columns, each group strided), which is exactly the im2col matrix of a
//! convolution: the packing reads it straight from the input signal, without the copy.
//!
//! The scheme is the classic blocked one (Goto; BLIS): for each NC-wide block of Bᵀ and each
//! KC-deep slice of K, the block is packed into NR-wide micro-panels; for each MC-tall block
//! of A, A is packed into MR-tall micro-panels; a register-blocked microkernel multiplies one
//! A micro-panel by one B micro-panel into an MR×NR tile of C. Packing hides every operand
//! layout from the microkernel, zero-pads ragged edges and converts element types. Large
//! products run on the rayon pool: all threads pack the shared Bᵀ block together, then each
//! packs and multiplies its own share of A's panels against it (or, when A has fewer panels
//! than there are threads, shares out B's panels instead), so nothing is packed twice.
//! Packing runs inside each kernel's `target_feature` function and has fast paths for the
//! two common f32 layouts: straight copies, and 4×4 SSE transposes.
//!
//! Microkernels by level: scalar 4×8; AVX2 6×16 (FMA); AVX-512 6×64 (FMA). [`gemm_bf16`]
//! rounds both operands to bf16 and multiplies them with f32 sums: 6×64 `VDPBF16PS` on
//! k-pairs from [`Isa::Avx512Bf16`], 32×32 `TDPBF16PS` tiles on [`Isa::Amx`] (the tile
//! registers hold 2×2 C tiles, two A and two B tiles); below those levels it runs the f32
//! kernels on the rounded values, so every level computes the same products.

use std::cell::RefCell;
use std::marker::PhantomData;

use thiserror::Error;

use super::bf16;
use super::cpu::{Cpu, Isa};
use super::deal::{share, Deal, MAX_THREADS};
use super::prefetch::{self, LINE_BYTES};
use super::scratch::{Plain, Scratch};
use super::shared::Shared;

/// A matrix element the packing reads: f32, or bf16 bit patterns held in a `u16` (as in
/// every kernel here).
pub trait Element: Copy + Send + Sync + sealed::Sealed {
    /// The value, widened exactly.
    fn to_f32(self) -> f32;
    /// The value as bf16 bits (f32 rounds to nearest even).
    fn to_bf16(self) -> u16;
}

impl Element for f32 {
    #[inline(always)]
    fn to_f32(self) -> f32 {
        self
    }
    #[inline(always)]
    fn to_bf16(self) -> u16 {
        bf16::scalar::narrow(self)
    }
}

impl Element for u16 {
    #[inline(always)]
    fn to_f32(self) -> f32 {
        bf16::scalar::widen(self)
    }
    #[inline(always)]
    fn to_bf16(self) -> u16 {
        self
    }
}

mod sealed {
    pub trait Sealed: Sized {
        /// `p` as f32, when the element is f32 (packing's fast copies use it).
        fn as_f32(_p: *const Self) -> Option<*const f32> {
            None
        }
    }
    impl Sealed for f32 {
        fn as_f32(p: *const f32) -> Option<*const f32> {
            Some(p)
        }
    }
    impl Sealed for u16 {}
}

/// A read-only matrix over a slice. Element (r, c), with `c = g·group_len + j`, is
/// `data[origin + r·row_stride + g·group_stride + j·col_stride]`; strides may be negative.
/// Construction checks that every element lies inside the slice, so the kernels read
/// without bounds checks.
///
/// ```
/// use spiral_engine::kernels::gemm::View;
/// let m = [1.0, 2.0, 3.0, 4.0, 5.0, 6.0]; // 2x3, row-major
/// let t = View::transposed(&m, 2, 3).unwrap(); // its 3x2 transpose
/// assert_eq!((t.rows(), t.cols(), t.get(2, 1)), (3, 2, 6.0));
/// assert!(View::new(&m, 4, 2).is_err());
/// ```
#[derive(Clone, Copy, Debug)]
pub struct View<'a, T> {
    data: &'a [T],
    origin: usize,
    rows: usize,
    row_stride: isize,
    groups: usize,
    group_stride: isize,
    group_len: usize,
    col_stride: isize,
}

/// A view whose elements would lie outside its slice.
#[derive(Debug, Error, PartialEq, Eq)]
#[error("a {rows}x{cols} matrix view reaches elements {lowest}..={highest} of a slice of {len}")]
pub struct ViewError {
    rows: usize,
    cols: usize,
    lowest: isize,
    highest: isize,
    len: usize,
}

impl<'a, T: Copy> View<'a, T> {
    /// The row-major `rows` × `cols` matrix that is all of `data`.
    pub fn new(data: &'a [T], rows: usize, cols: usize) -> Result<Self, ViewError> {
        if data.len() != rows * cols {
            return Err(ViewError { rows, cols, lowest: 0, highest: (rows * cols) as isize - 1, len: data.len() });
        }
        Self::strided(data, 0, rows, cols, cols as isize, 1)
    }

    /// The `cols` × `rows` transpose of the row-major `rows` × `cols` matrix that is all of
    /// `data` (a K×N matrix as the N×K operand [`gemm`] takes).
    pub fn transposed(data: &'a [T], rows: usize, cols: usize) -> Result<Self, ViewError> {
        if data.len() != rows * cols {
            return Err(ViewError {
                rows: cols,
                cols: rows,
                lowest: 0,
                highest: (rows * cols) as isize - 1,
                len: data.len(),
            });
        }
        Self::strided(data, 0, cols, rows, 1, cols as isize)
    }

    /// `rows` × `cols` elements from `origin`, rows `row_stride` apart and columns
    /// `col_stride` apart.
    pub fn strided(
        data: &'a [T],
        origin: usize,
        rows: usize,
        cols: usize,
        row_stride: isize,
        col_stride: isize,
    ) -> Result<Self, ViewError> {
        Self::grouped(data, origin, rows, row_stride, (1, 0), (cols, col_stride))
    }

    /// `rows` rows `row_stride` apart, whose columns are `groups.0` groups `groups.1` apart,
    /// each of `within.0` columns `within.1` apart: `groups.0 · within.0` columns in all.
    /// The im2col matrix of a convolution is one: columns (input channel, tap) read
    /// `signal[channel·len + tap·dilation + t]` for row t.
    pub fn grouped(
        data: &'a [T],
        origin: usize,
        rows: usize,
        row_stride: isize,
        groups: (usize, isize),
        within: (usize, isize),
    ) -> Result<Self, ViewError> {
        let view = View {
            data,
            origin,
            rows,
            row_stride,
            groups: groups.0,
            group_stride: groups.1,
            group_len: within.0,
            col_stride: within.1,
        };
        if view.rows == 0 || view.cols() == 0 {
            return Ok(view);
        }
        // Each index term is linear in its own coordinate: the extremes are at the corners.
        let span = |count: usize, stride: isize| (count as isize - 1) * stride;
        let terms = [span(rows, row_stride), span(groups.0, groups.1), span(within.0, within.1)];
        let lowest = origin as isize + terms.iter().map(|t| t.min(&0)).sum::<isize>();
        let highest = origin as isize + terms.iter().map(|t| t.max(&0)).sum::<isize>();
        if lowest < 0 || highest >= data.len() as isize {
            return Err(ViewError { rows, cols: view.cols(), lowest, highest, len: data.len() });
        }
        Ok(view)
    }

    pub fn rows(&self) -> usize {
        self.rows
    }

    pub fn cols(&self) -> usize {
        self.groups * self.group_len
    }

    /// Element (r, c); panics outside the view.
    pub fn get(&self, r: usize, c: usize) -> T {
        assert!(r < self.rows && c < self.cols(), "({r}, {c}) is outside a {}x{} view", self.rows, self.cols());
        self.data[self.index(r, c) as usize]
    }

    /// The offsets of columns `k0..k0 + kc` from column `k0`, walking the groups without a
    /// division per column.
    fn col_offsets(&self, k0: usize, kc: usize) -> impl Iterator<Item = isize> + '_ {
        let (mut g, mut j) = ((k0 / self.group_len) as isize, (k0 % self.group_len) as isize);
        let start = g * self.group_stride + j * self.col_stride;
        (0..kc).map(move |_| {
            let off = g * self.group_stride + j * self.col_stride - start;
            j += 1;
            if j == self.group_len as isize {
                (g, j) = (g + 1, 0);
            }
            off
        })
    }

    fn index(&self, r: usize, c: usize) -> isize {
        let (g, j) = (c / self.group_len, c % self.group_len);
        self.origin as isize
            + r as isize * self.row_stride
            + g as isize * self.group_stride
            + j as isize * self.col_stride
    }
}

impl<T: Element> View<'_, T> {
    /// Where element (0, 0) is and how far apart rows are, when the view is f32 rows whose
    /// columns are contiguous (a kernel can then read its rows in place).
    fn f32_rows(&self) -> Option<(Shared<f32>, usize)> {
        self.f32_lines(self.col_stride, self.row_stride)
    }

    /// Where element (0, 0) is and how far apart columns are, when the view is f32 columns
    /// whose rows are contiguous (the transpose of a row-major matrix).
    fn f32_columns(&self) -> Option<(Shared<f32>, usize)> {
        self.f32_lines(self.row_stride, self.col_stride)
    }

    /// (0, 0) and `apart`, when `along` is 1 and `apart` positive.
    fn f32_lines(&self, along: isize, apart: isize) -> Option<(Shared<f32>, usize)> {
        let plain = self.groups == 1 && along == 1 && apart > 0 && self.rows > 0 && self.cols() > 0;
        // SAFETY: (0, 0) is inside the view, which is not empty.
        let first = plain.then(|| unsafe { self.data.as_ptr().offset(self.index(0, 0)) })?;
        // Read only: the pointer is shared with the threads of one product.
        Some((Shared(T::as_f32(first)?.cast_mut()), apart as usize))
    }
}

/// The f32 output of a product: `rows` × `cols` from `origin`, rows `row_stride` apart.
#[derive(Debug)]
pub struct ViewMut<'a> {
    data: &'a mut [f32],
    origin: usize,
    rows: usize,
    cols: usize,
    row_stride: usize,
}

impl<'a> ViewMut<'a> {
    /// The row-major `rows` × `cols` matrix that is all of `data`.
    pub fn new(data: &'a mut [f32], rows: usize, cols: usize) -> Result<Self, ViewError> {
        if data.len() != rows * cols {
            let len = data.len();
            return Err(ViewError { rows, cols, lowest: 0, highest: (rows * cols) as isize - 1, len });
        }
        Ok(ViewMut { data, origin: 0, rows, cols, row_stride: cols })
    }

    /// `rows` × `cols` from `origin`, rows `row_stride` (≥ `cols`) apart: a block of a wider
    /// matrix.
    pub fn strided(
        data: &'a mut [f32],
        origin: usize,
        rows: usize,
        cols: usize,
        row_stride: usize,
    ) -> Result<Self, ViewError> {
        let highest = origin + rows.saturating_sub(1) * row_stride + cols;
        if rows > 0 && cols > 0 && (row_stride < cols || highest > data.len()) {
            let len = data.len();
            return Err(ViewError { rows, cols, lowest: origin as isize, highest: highest as isize - 1, len });
        }
        Ok(ViewMut { data, origin, rows, cols, row_stride })
    }

    pub fn rows(&self) -> usize {
        self.rows
    }

    pub fn cols(&self) -> usize {
        self.cols
    }

    fn out(&mut self) -> Out<'_> {
        // SAFETY: construction checked that origin lies inside the slice (or the view is empty).
        let ptr = unsafe { self.data.as_mut_ptr().add(self.origin.min(self.data.len())) };
        Out { ptr, row_stride: self.row_stride, _data: PhantomData }
    }
}

/// C as the kernels write it. Tasks on different threads hold copies that address disjoint
/// tiles.
#[derive(Clone, Copy)]
struct Out<'a> {
    ptr: *mut f32,
    row_stride: usize,
    _data: PhantomData<&'a mut [f32]>,
}

// SAFETY: the driver hands each task a disjoint block of C.
unsafe impl Send for Out<'_> {}
unsafe impl Sync for Out<'_> {}

impl Out<'_> {
    /// The block whose top-left element is (r, c).
    fn at(self, r: usize, c: usize) -> Self {
        // SAFETY: callers stay inside the checked M×N view.
        Out { ptr: unsafe { self.ptr.add(r * self.row_stride + c) }, ..self }
    }

    /// Fetches every cache line of the m×n tile at the top left, which the kernel needs only
    /// after its FMAs: all of them, wherever a row starts (a row of C need not start a line;
    /// missing its last line cost 256³ a tenth of its speed on Zen 1).
    #[cfg(target_arch = "x86_64")]
    #[inline(always)]
    fn prefetch(self, m: usize, n: usize) {
        (0..m).for_each(|r| prefetch::span(self.ptr.wrapping_add(r * self.row_stride).cast(), n * size_of::<f32>()));
    }
}

/// C = A·Bᵀ (or C += A·Bᵀ with `accumulate`) in f32 arithmetic; bf16 operands are widened
/// exactly. Panics if the shapes disagree.
///
/// ```
/// use spiral_engine::kernels::{gemm, Cpu};
/// let a = [1.0, 2.0, 3.0, 4.0]; // 2x2
/// let bt = [1.0, 0.0, 1.0, 1.0]; // rows of Bᵀ: (1, 0) and (1, 1)
/// let mut c = [0.0; 4];
/// gemm::gemm(
///     Cpu::best(),
///     gemm::View::new(&a, 2, 2).unwrap(),
///     gemm::View::new(&bt, 2, 2).unwrap(),
///     gemm::ViewMut::new(&mut c, 2, 2).unwrap(),
///     false,
/// );
/// assert_eq!(c, [1.0, 3.0, 3.0, 7.0]);
/// ```
pub fn gemm<A: Element, B: Element>(cpu: Cpu, a: View<A>, bt: View<B>, c: ViewMut, accumulate: bool) {
    match cpu.isa() {
        Isa::Scalar => product(&scalar::F32, Exact, a, bt, c, accumulate),
        Isa::Avx2 => product(&avx2::F32, Exact, a, bt, c, accumulate),
        _ => product(&avx512::F32, Exact, a, bt, c, accumulate),
    }
}

/// C = A·Bᵀ (or C += A·Bᵀ) with both operands rounded to bf16 and products summed in f32:
/// half the packed bytes of [`gemm`] and, with `VDPBF16PS` or AMX, twice the arithmetic per
/// instruction. Compare it with a reference on bf16-rounded inputs. Panics if the shapes
/// disagree.
pub fn gemm_bf16<A: Element, B: Element>(cpu: Cpu, a: View<A>, bt: View<B>, c: ViewMut, accumulate: bool) {
    match cpu.isa() {
        Isa::Scalar => product(&scalar::F32, ViaBf16, a, bt, c, accumulate),
        Isa::Avx2 => product(&avx2::F32, ViaBf16, a, bt, c, accumulate),
        Isa::Avx512 | Isa::Avx512Vnni => product(&avx512::F32, ViaBf16, a, bt, c, accumulate),
        Isa::Avx512Bf16 => product(&avx512bf16::PAIRS, Bf16Bits, a, bt, c, accumulate),
        Isa::Amx => product(&amx::TILES, Bf16Bits, a, bt, c, accumulate),
    }
}

/// How a packed micro-panel of `ROWS` rows (MR of A or NR of Bᵀ) by `kc` values of K is
/// laid out: in blocks of `UNIT` consecutive K values of every row, each block `ROWS · UNIT`
/// contiguous values, row-major within the block. A type, so that the index arithmetic is
/// resolved at compile time.
///
/// | layout | UNIT | block | used by |
/// | --- | --- | --- | --- |
/// | `KMajor<1, R>` | 1 | one k of R rows | the f32 FMA kernels |
/// | `KMajor<2, R>` | 2 | a k-pair of R rows, pairs adjacent | `VDPBF16PS`, AMX B tiles |
/// | `RowMajor<R>` | all of K | one row | AMX A tiles |
trait Layout {
    const ROWS: usize;
    /// K values per block; `None` when a block is a whole row (all of the padded K).
    const UNIT: Option<usize>;
}

struct KMajor<const U: usize, const R: usize>;
impl<const U: usize, const R: usize> Layout for KMajor<U, R> {
    const ROWS: usize = R;
    const UNIT: Option<usize> = Some(U);
}

struct RowMajor<const R: usize>;
impl<const R: usize> Layout for RowMajor<R> {
    const ROWS: usize = R;
    const UNIT: Option<usize> = None;
}

/// What the blocked driver needs from a microkernel.
trait Kernel: Sync {
    /// The packed A and Bᵀ micro-panels; their row counts are the tile's MR and NR.
    type A: Layout;
    type B: Layout;
    /// A packed K slice is padded to a multiple of this.
    const K_ALIGN: usize;
    /// What packed panels hold: f32, or bf16 bits.
    type P: Plain + Default + Send + Sync;
    const BLOCKING: Blocking;

    /// C tile (+)= A micro-panel · B micro-panel over `kc` (a multiple of `K_ALIGN`) values of
    /// K. Only the first `m` rows and `n` columns of the MR×NR tile are written.
    ///
    /// # Safety
    /// `a` and `b` hold whole packed micro-panels of `kc`; `c` addresses `m` × `n` writable
    /// floats, rows `c.row_stride` apart; the CPU runs the kernel's instructions.
    #[allow(clippy::too_many_arguments)]
    unsafe fn tile(
        &self,
        kc: usize,
        a: *const Self::P,
        b: *const Self::P,
        c: Out,
        m: usize,
        n: usize,
        accumulate: bool,
    );

    /// Whether [`Kernel::tile_strided`] exists: the tile with f32 operands read through
    /// strides, so they can be read where they lie instead of from packed panels. Only
    /// kernels whose packed values are f32 (`P = f32`) set it.
    const STRIDED: bool = false;

    /// [`Kernel::tile`] over f32 operands addressed by strides ([`Strided`]), for products
    /// too small to repay packing, on a tile as tall as the rows asked for need (2, 4 or 6),
    /// so a product's last few rows do not pay for a whole tile. Only for kernels that set
    /// [`Kernel::STRIDED`], whose tiles are 6 rows tall.
    ///
    /// # Safety
    /// As [`Kernel::tile`], with every address of `at` readable for the MR rows, NR columns
    /// and `kc` k-steps.
    unsafe fn tile_strided(&self, kc: usize, at: Strided, c: Out, m: usize, n: usize, accumulate: bool) {
        debug_assert!(Self::STRIDED && Self::A::ROWS == 6);
        match m {
            0..=2 => self.strided_rows::<2>(kc, at, c, m, n, accumulate),
            3..=4 => self.strided_rows::<4>(kc, at, c, m, n, accumulate),
            _ => self.strided_rows::<6>(kc, at, c, m, n, accumulate),
        }
    }

    /// The R-row tile [`Kernel::tile_strided`] runs, adding to C where `add` (`accumulate`
    /// above). Only kernels that set [`Kernel::STRIDED`] implement it.
    ///
    /// # Safety
    /// As [`Kernel::tile_strided`], for `m` ≤ R rows.
    unsafe fn strided_rows<const R: usize>(&self, _kc: usize, _at: Strided, _c: Out, _m: usize, _n: usize, _add: bool) {
        unreachable!("only kernels with STRIDED take strided operands")
    }

    /// Called on a thread before its first tile and after its last (AMX loads and releases its
    /// tile configuration).
    fn begin(&self) {}
    fn end(&self) {}

    /// Runs `f` inside a function compiled for this kernel's instruction set, into which `f`
    /// is inlined: the driver's own loops. The chunks of work handed to the threads are
    /// closures called through `dyn Fn`, compiled on their own without these features, so
    /// their packing copies 128 bits at a time (wider copies are untried: a Zen 1 splits a
    /// 256-bit move in two anyway, a Zen 3 or AVX-512 CPU might gain).
    #[inline(always)]
    fn enter<R>(&self, f: impl FnOnce() -> R) -> R {
        f()
    }
}

/// Where a strided tile reads its f32 operands: row r's k-step p of A at
/// `a + p·a_step + r·a_row`, and k-step p of the NR columns of B at `b + p·b_step` (columns
/// contiguous). A packed A panel is `a_step` MR and `a_row` 1, rows of A in place 1 and
/// their stride; a packed B panel has `b_step` NR, a row-major B in place its row stride.
#[derive(Clone, Copy)]
struct Strided {
    a: *const f32,
    a_step: usize,
    a_row: usize,
    b: *const f32,
    b_step: usize,
}

/// How operand elements become packed values.
trait Convert: Copy + Sync {
    type P;
    /// Whether f32 elements pass unchanged (and `P` is f32).
    const KEEPS_F32: bool = false;
    fn convert<T: Element>(self, x: T) -> Self::P;
}

/// Exact f32.
#[derive(Clone, Copy)]
struct Exact;
impl Convert for Exact {
    type P = f32;
    const KEEPS_F32: bool = true;
    #[inline(always)]
    fn convert<T: Element>(self, x: T) -> f32 {
        x.to_f32()
    }
}

/// Rounded to bf16, held as f32 (exact): bf16 products on f32 kernels.
#[derive(Clone, Copy)]
struct ViaBf16;
impl Convert for ViaBf16 {
    type P = f32;
    #[inline(always)]
    fn convert<T: Element>(self, x: T) -> f32 {
        bf16::scalar::widen(x.to_bf16())
    }
}

/// bf16 bits, for the bf16 kernels.
#[derive(Clone, Copy)]
struct Bf16Bits;
impl Convert for Bf16Bits {
    type P = u16;
    #[inline(always)]
    fn convert<T: Element>(self, x: T) -> u16 {
        x.to_bf16()
    }
}

/// Cache blocking: Bᵀ blocks of `nc` rows, K slices of `kc`, A blocks of `mc` rows.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Blocking {
    mc: usize,
    kc: usize,
    nc: usize,
}

/// The longest row stride, in B micro-panel widths, at which the single-region product reads
/// a row-major B where it lies. A micro-panel's k-steps are a row stride apart, so a stride of
/// a large power of two maps all of them onto a few sets of the caches. With AVX-512's 64
/// columns: at 2048 values (8 KB) one thread ran 256×2048×512 at 101 GFLOP/s in place and 109
/// with B packed, at 1024 and below in place was as fast or faster (the copy costs more than
/// the conflicts). With AVX2's 16 columns on Zen 1, two threads, 512³ took 4.5 ms in place at
/// 512 values and 3.7 packed, while 256³ and 384³ ran 1-2 % faster in place: the same 16
/// widths.
const IN_PLACE_MAX_STRIDE: usize = 16;

/// How many steps of K ahead a pack asks for the source's lines.
const PACK_AHEAD: usize = 8;

/// How many chunks of a product each thread may take where A is read in place (a chunk then
/// costs only another read of A's blocks): more balance a thread that runs slower than the
/// others, and each reads A once more.
const CHUNKS_PER_THREAD: usize = 4;

/// Below this many multiply-adds one thread is faster than waking the pool; a product gets
/// at most one thread per this many (on many cores a small product split across all of them
/// spends its time starting and joining them: 256³ on 16 threads ran at a third of the speed
/// it reaches on 8).
const PARALLEL_MACS: usize = 1 << 21;

fn product<K: Kernel, C: Convert<P = K::P>, A: Element, B: Element>(
    kernel: &K,
    convert: C,
    a: View<A>,
    bt: View<B>,
    mut c: ViewMut,
    accumulate: bool,
) {
    let macs = a.rows * bt.rows * a.cols();
    let threads = rayon::current_num_threads().min(macs / PARALLEL_MACS).max(1);
    product_with(kernel, K::BLOCKING, threads, convert, a, bt, &mut c, accumulate);
}

/// The product with explicit blocking and thread count (tests shrink the blocks to reach
/// every edge with small matrices).
#[allow(clippy::too_many_arguments)]
fn product_with<K: Kernel, C: Convert<P = K::P>, A: Element, B: Element>(
    kernel: &K,
    blocking: Blocking,
    threads: usize,
    convert: C,
    a: View<A>,
    bt: View<B>,
    c: &mut ViewMut,
    accumulate: bool,
) {
    let (m, n, k) = (a.rows, bt.rows, a.cols());
    assert_eq!(bt.cols(), k, "gemm: A has {k} columns but Bᵀ has {}", bt.cols());
    assert!(c.rows == m && c.cols == n, "gemm: C is {}x{}, the product {m}x{n}", c.rows, c.cols);
    if m == 0 || n == 0 {
        return;
    }
    if k == 0 {
        if !accumulate {
            (0..m).for_each(|r| c.data[c.origin + r * c.row_stride..][..n].fill(0.0));
        }
        return;
    }
    let out = c.out();
    kernel.enter(|| blocked(kernel, blocking, threads.clamp(1, MAX_THREADS), convert, &a, &bt, out, accumulate));
}

thread_local! {
    /// Packed A and Bᵀ blocks, reused so steady-state products do not allocate.
    static PACKED: RefCell<(Scratch, Scratch)> = RefCell::default();
}

/// Runs `f(id, chunk)` for every chunk of `0..chunks` on up to `parts` threads (`id` names
/// the thread that runs it).
type Each<'a> = dyn Fn(usize, usize, &(dyn Fn(usize, usize) + Sync)) + 'a;

/// The loops over blocks of Bᵀ, K and A around the microkernel (Goto's order). With several
/// threads, each packed block is filled by all of them and then shared, and the block's tiles
/// are split between them: no operand is packed twice.
#[inline(always)]
#[allow(clippy::too_many_arguments)]
fn blocked<K: Kernel, C: Convert<P = K::P>, A: Element, B: Element>(
    kernel: &K,
    blocking: Blocking,
    threads: usize,
    convert: C,
    a: &View<A>,
    bt: &View<B>,
    c: Out,
    accumulate: bool,
) {
    let (m, n, k) = (a.rows, bt.rows, a.cols());
    let (mr, nr) = (K::A::ROWS, K::B::ROWS);
    debug_assert!(blocking.kc <= MAX_KC && blocking.kc.is_multiple_of(K::K_ALIGN));
    // Equal slices rather than full ones and a thin remainder: every pass over C then does
    // as much arithmetic as the last.
    let balanced = |len: usize, step: usize, align: usize| len.div_ceil(len.div_ceil(step)).next_multiple_of(align);
    // Whether the kernel reads whole panels of both operands where they lie: a row-major A,
    // and a row-major B (Bᵀ a transposed view) whose rows are not too far apart.
    let in_place = K::STRIDED
        && C::KEEPS_F32
        && a.f32_rows().is_some()
        && bt.f32_columns().is_some_and(|(_, ldb)| ldb <= IN_PLACE_MAX_STRIDE * K::B::ROWS);
    // A product of one block of Bᵀ and one slice of K runs in a single parallel region:
    // each thread packs its own columns of Bᵀ and all of A, so no thread waits for another's
    // packing (a second region costs more than packing A twice at these sizes). On one thread
    // this is the path that reads the operands in place, which small products need: 256³
    // ran at 0.93 of the `gemm` crate with both packed, 1.00 in place. Read in place, K may
    // be as deep as a pack allows, with fewer rows per block of A so that a block stays as
    // large as a packed one, while all of A is at most 2 MB (beyond it the packed blocks
    // win: 1024³ ran at 0.95-0.98 of the crate this way, 0.99-1.04 packed): 79×1024×1024
    // went from 0.82 to 1.07-1.25 of the crate, 256×512×1024 from 0.87 to 1.05-1.16.
    let deep = in_place && k <= MAX_KC && m * k <= 1 << 19;
    let single = n <= blocking.nc && (k <= blocking.kc || deep) && n.div_ceil(nr) >= threads;
    let rows_per_block = if single { blocking.mc * blocking.kc / k.max(blocking.kc) } else { blocking.mc };
    let blocking = Blocking {
        mc: balanced(m, rows_per_block.max(mr), mr),
        kc: balanced(k, blocking.kc, K::K_ALIGN),
        nc: balanced(n, blocking.nc, nr),
    };
    // Taken out, not borrowed: a thread waiting on the pool may run another product.
    let (mut a_buf, mut b_buf) = PACKED.take();
    let a_panels_max = blocking.mc.min(m).div_ceil(mr);
    let kc_max = if single { k } else { blocking.kc.min(k) }.next_multiple_of(K::K_ALIGN);
    // Otherwise each thread packs its own rows of A into a region of its own, when there are
    // enough panels of A for every thread.
    let by_rows = !single && m.div_ceil(mr) >= threads;
    let a_region = a_panels_max * mr * kc_max;
    let regions = if by_rows || single { threads } else { 1 };
    let packed_b = b_buf.get::<K::P>(blocking.nc.min(n).next_multiple_of(nr) * kc_max);
    // The threads fill disjoint parts of it and read them only after the region that filled
    // them has ended (A's own rows, shared the same way, are only read).
    let packed_a = Shared(a_buf.get::<K::P>(a_region * regions).as_mut_ptr());
    // Runs `f(id, chunk)` for every chunk: thread 0 is the calling thread, the others run on
    // the pool. A caller outside the pool (an app's thread, a benchmark) then works instead
    // of handing the whole product to the pool and sleeping until it is done, which cost two
    // wake-ups per product: 256³ on two threads, 400 products per run, six alternating runs,
    // took 158-161 µs at the tenth percentile and 173-183 on average before, 153-156 and
    // 167-174 after (BENCHMARKS.md). The chunks are dealt (`Deal`), not handed out as equal
    // shares, so that a thread that starts late or shares its core does less. With equal
    // halves on the Zen 1, one 512³ product in ten took twice as long (none did with the two
    // threads pinned to the two cores), and in runs where one core ran at two thirds of the
    // other's speed the product went from 0.80-1.01 of the `gemm` crate's speed to 0.97-1.23
    // (above 1.16 in four runs of six) with four chunks a thread, then taken in turn from one
    // counter, which cost 1-3 % more than dealing them where C's rows do not start cache
    // lines; where the cores ran alike, dealt chunks lost 1-3 % at 256³ and 512³.
    let each = |parts: usize, chunks: usize, f: &(dyn Fn(usize, usize) + Sync)| {
        let parts = parts.min(chunks).max(1);
        let deal = Deal::new(chunks, parts);
        let work = |id: usize| {
            while let Some(chunk) = deal.next(id) {
                f(id, chunk)
            }
        };
        if parts == 1 {
            work(0)
        } else {
            let work = &work;
            rayon::in_place_scope(|s| {
                for id in 1..parts {
                    s.spawn(move |_| work(id));
                }
                work(0)
            })
        }
    };
    // Multiplies rows `rows` (panels of the packed A at `a`) of block `ic` by columns `cols`
    // (panels of the packed Bᵀ block at `b`, whose first column is `jc`).
    #[allow(clippy::too_many_arguments)]
    let tiles = |a: *const K::P,
                 b: *const K::P,
                 ic: usize,
                 mc: usize,
                 rows: std::ops::Range<usize>,
                 jc: usize,
                 nc: usize,
                 cols: std::ops::Range<usize>,
                 kc_pad: usize,
                 accumulate: bool| {
        kernel.begin();
        for pj in cols {
            for (local, pi) in rows.clone().enumerate() {
                let (ir, jr) = (pi * mr, pj * nr);
                // SAFETY: both panels were packed with kc_pad values of K; the tile lies inside
                // C and no other share writes it; the kernel's level was checked by the `Cpu`
                // token that chose it.
                unsafe {
                    kernel.tile(
                        kc_pad,
                        a.add(local * mr * kc_pad),
                        b.add(pj * nr * kc_pad),
                        c.at(ic + ir, jc + jr),
                        mr.min(mc - ir),
                        nr.min(nc - jr),
                        accumulate,
                    )
                };
            }
        }
        kernel.end();
    };
    if single {
        let (kc_pad, b_panels) = (k.next_multiple_of(K::K_ALIGN), n.div_ceil(nr));
        // Each thread would pack all of A: where the kernel takes strided operands it reads
        // the whole panels of A, and of B when `in_place`, where they lie.
        let a_rows = if K::STRIDED && C::KEEPS_F32 { a.f32_rows() } else { None };
        // B's rows are read where they lie only when they start cache lines, so that a product's
        // speed does not depend on where its B happens to start. Past a line each panel row
        // straddles two: on the Zen 1, 256³ on two threads with B 48 bytes past a line ran at
        // 507-511 µs (medians) in place and 480-482 packed; 4, 16 or 32 bytes past, in place
        // was 0-2 % faster than packed (471-478 µs against 479-482; 2026-11-27).
        let lines = |(b0, ldb): &(Shared<f32>, usize)| {
            (b0.get() as usize).is_multiple_of(LINE_BYTES) && (ldb * size_of::<f32>()).is_multiple_of(LINE_BYTES)
        };
        let b_rows = if in_place { bt.f32_columns().filter(lines) } else { None };
        let packed_b = Shared(packed_b.as_mut_ptr());
        // Narrow chunks of columns balance the threads, where A is read in place; where each
        // chunk packs all of A, and on one thread, one chunk a thread (each chunk reads all of
        // A again: 512³ on one thread ran at 0.964-0.972 of the `gemm` crate in four chunks,
        // 0.978-0.990 in one).
        let chunks = if a_rows.is_some() && threads > 1 { b_panels.min(threads * CHUNKS_PER_THREAD) } else { threads };
        each(threads, chunks, &|id, chunk| {
            let cols = share(b_panels, chunks, chunk);
            // SAFETY: one thread alone writes this chunk's panels of Bᵀ, and only thread id
            // writes region id of A.
            let (b_mine, a_mine) = unsafe {
                (
                    std::slice::from_raw_parts_mut(
                        packed_b.get().add(cols.start * nr * kc_pad),
                        cols.len() * nr * kc_pad,
                    ),
                    std::slice::from_raw_parts_mut(packed_a.get().add(id * a_region), a_region),
                )
            };
            // The B panels read in place: whole ones, when B allows it; the others are packed.
            let b_in_place = |pj: usize| b_rows.is_some() && (pj + 1) * nr <= n;
            let packed_from = cols.clone().find(|&pj| !b_in_place(pj)).unwrap_or(cols.end);
            if packed_from < cols.end {
                let (first, count) = (packed_from * nr, (cols.end * nr).min(n) - packed_from * nr);
                let dst = &mut b_mine[(packed_from - cols.start) * nr * kc_pad..];
                pack::<_, _, K::B>(bt, first, count, 0, k, kc_pad, convert, dst);
            }
            for ic in (0..m).step_by(blocking.mc) {
                let mc = blocking.mc.min(m - ic);
                let Some((a0, lda)) = a_rows else {
                    pack::<_, _, K::A>(a, ic, mc, 0, k, kc_pad, convert, a_mine);
                    let (b, cols) = (packed_b.get(), cols.clone());
                    tiles(a_mine.as_ptr(), b, ic, mc, 0..mc.div_ceil(mr), 0, n, cols, kc_pad, accumulate);
                    continue;
                };
                // Whole panels of A from its rows; a last partial one packed.
                let whole = mc / mr;
                if whole * mr < mc {
                    pack::<_, _, K::A>(a, ic + whole * mr, mc - whole * mr, 0, k, kc_pad, convert, a_mine);
                }
                kernel.begin();
                for pj in cols.clone() {
                    let jr = pj * nr;
                    let (b, b_step) = match b_rows {
                        Some((b0, ldb)) if b_in_place(pj) => (b0.get().wrapping_add(jr).cast_const().cast(), ldb),
                        _ => (packed_b.get().wrapping_add(pj * nr * kc_pad).cast_const(), nr),
                    };
                    for pi in 0..mc.div_ceil(mr) {
                        let (a, a_step, a_row) = match pi < whole {
                            true => (a0.get().wrapping_add((ic + pi * mr) * lda).cast_const().cast(), 1, lda),
                            false => (a_mine.as_ptr(), mr, 1),
                        };
                        // SAFETY: whole panels lie inside A and B (mr rows, nr columns, k steps),
                        // the others were packed above with kc_pad = k; the tile lies in C and
                        // only this thread writes its columns.
                        unsafe {
                            let rows = mr.min(mc - pi * mr);
                            let at = c.at(ic + pi * mr, jr);
                            let operands = Strided { a: a.cast(), a_step, a_row, b: b.cast(), b_step };
                            kernel.tile_strided(kc_pad, operands, at, rows, nr.min(n - jr), accumulate)
                        };
                    }
                }
                kernel.end();
            }
        });
        PACKED.set((a_buf, b_buf));
        return;
    }
    for jc in (0..n).step_by(blocking.nc) {
        let nc = blocking.nc.min(n - jc);
        let b_panels = nc.div_ceil(nr);
        for pc in (0..k).step_by(blocking.kc) {
            let kc = blocking.kc.min(k - pc);
            let kc_pad = kc.next_multiple_of(K::K_ALIGN);
            let accumulate = accumulate || pc > 0;
            pack_shared::<_, _, K::B>(threads, bt, jc, nc, pc, kc, kc_pad, convert, packed_b, &each);
            let b = Shared(packed_b.as_mut_ptr());
            let tiles =
                |a, ic, mc, rows, cols, accumulate| tiles(a, b.get(), ic, mc, rows, jc, nc, cols, kc_pad, accumulate);
            if by_rows {
                // One region for all of A: each share of A's rows is packed and multiplied, in
                // blocks, against the whole shared Bᵀ block by the thread that takes it, in that
                // thread's region (an even share of all the panels, not of each block, which
                // would hand the same thread every odd panel). Finer chunks lost here: 1024³
                // went from 1.00-1.02 of the `gemm` crate to 0.95 in chunks of one block of A
                // (eleven, for two threads) and 0.98 in eight chunks, whose blocks are thinner.
                let chunks = threads;
                each(threads, chunks, &|id, chunk| {
                    // SAFETY: region id of the A buffer is this thread's alone.
                    let mine = unsafe { std::slice::from_raw_parts_mut(packed_a.get().add(id * a_region), a_region) };
                    let panels = share(m.div_ceil(mr), chunks, chunk);
                    let (first, last) = (panels.start * mr, (panels.end * mr).min(m));
                    for ic in (first..last).step_by(blocking.mc) {
                        let mc = blocking.mc.min(last - ic);
                        pack::<_, _, K::A>(a, ic, mc, pc, kc, kc_pad, convert, mine);
                        tiles(mine.as_ptr(), ic, mc, 0..mc.div_ceil(mr), 0..b_panels, accumulate);
                    }
                });
            } else {
                // Fewer panels of A than threads: A is packed whole, the tiles split by columns.
                for ic in (0..m).step_by(blocking.mc) {
                    let mc = blocking.mc.min(m - ic);
                    // SAFETY: the buffer holds a whole block; no tile runs while it is written.
                    let all = unsafe { std::slice::from_raw_parts_mut(packed_a.get(), a_region) };
                    pack::<_, _, K::A>(a, ic, mc, pc, kc, kc_pad, convert, all);
                    let parts = threads.min(b_panels);
                    each(parts, parts, &|_, chunk| {
                        tiles(packed_a.get(), ic, mc, 0..mc.div_ceil(mr), share(b_panels, parts, chunk), accumulate)
                    });
                }
            }
        }
    }
    PACKED.set((a_buf, b_buf));
}

/// Packs rows `r0..r0 + rows` of `view` as [`pack`] does, the panels shared out between
/// up to `threads` threads by `each`.
#[inline(always)]
#[allow(clippy::too_many_arguments)]
fn pack_shared<T: Element, C: Convert, L: Layout>(
    threads: usize,
    view: &View<T>,
    r0: usize,
    rows: usize,
    k0: usize,
    kc: usize,
    kc_pad: usize,
    convert: C,
    dst: &mut [C::P],
    each: &Each,
) where
    C::P: Copy + Default + Send,
{
    let panels = rows.div_ceil(L::ROWS);
    let parts = threads.min(panels);
    let panel = L::ROWS * kc_pad;
    let dst = Shared(dst[..panels * panel].as_mut_ptr());
    each(parts, parts, &|_, chunk| {
        let mine = share(panels, parts, chunk);
        let (first, count) = (mine.start * L::ROWS, (mine.end * L::ROWS).min(rows) - mine.start * L::ROWS);
        // SAFETY: shares are disjoint ranges of whole panels inside `dst`.
        let dst = unsafe { std::slice::from_raw_parts_mut(dst.get().add(mine.start * panel), mine.len() * panel) };
        pack::<_, _, L>(view, r0 + first, count, k0, kc, kc_pad, convert, dst);
    });
}

/// The largest K slice a blocking may ask for (the packer keeps a table of its offsets).
const MAX_KC: usize = 1024;

/// Packs rows `r0..r0 + rows` and K values `k0..k0 + kc` of `view` into `dst` as
/// consecutive panels of `L::ROWS` rows laid out as `L`, each `L::ROWS · kc_pad` long; rows
/// past the end and K values past `kc` are zeros.
#[inline(always)]
#[allow(clippy::too_many_arguments)]
fn pack<T: Element, C: Convert, L: Layout>(
    view: &View<T>,
    r0: usize,
    rows: usize,
    k0: usize,
    kc: usize,
    kc_pad: usize,
    convert: C,
    dst: &mut [C::P],
) where
    C::P: Copy + Default,
{
    let dst = &mut dst[..rows.div_ceil(L::ROWS) * L::ROWS * kc_pad];
    assert!(kc <= kc_pad && kc <= MAX_KC);
    if !rows.is_multiple_of(L::ROWS) || kc < kc_pad {
        dst.fill(C::P::default());
    }
    let (rs, cs) = (view.row_stride, view.col_stride);
    // SAFETY: (r0, k0) is inside the view.
    let src = unsafe { view.data.as_ptr().offset(view.index(r0, k0)) };
    let out = dst.as_mut_ptr();
    let panel = Panel { src, rows, kc, kc_pad, convert, out, layout: PhantomData::<L> };
    // SAFETY (every `walk`): (r0 + i, k0 + kk) for i < rows, kk < kc is inside the view,
    // whose elements construction checked, and every panel stays inside `dst`.
    if k0 % view.group_len + kc <= view.group_len {
        // The slice lies inside one group of columns: K is a single stride. Literal strides
        // in the two common layouts let the compiler turn the walk into plain copies.
        match (rs, cs) {
            (1, _) => unsafe { panel.walk_rows_contiguous(cs) },
            (_, 1) => unsafe { panel.walk_k_contiguous(rs) },
            _ => unsafe { panel.walk(rs, |kk| kk as isize * cs, rs.unsigned_abs() < cs.unsigned_abs()) },
        }
    } else {
        // Across groups (an im2col view): the offsets of the slice's columns, once.
        let mut offsets = [0isize; MAX_KC];
        offsets.iter_mut().zip(view.col_offsets(k0, kc)).for_each(|(o, v)| *o = v);
        let rows_adjacent = rs.unsigned_abs() < cs.unsigned_abs() || view.group_len == 1;
        unsafe { panel.walk(rs, |kk| offsets[kk], rows_adjacent) }
    }
}

/// The packing of one block of panels: where it reads and writes, and how.
#[derive(Clone, Copy)]
struct Panel<T, C: Convert, L> {
    src: *const T,
    rows: usize,
    kc: usize,
    kc_pad: usize,
    convert: C,
    out: *mut C::P,
    layout: PhantomData<L>,
}

impl<T: Element, C: Convert, L: Layout> Panel<T, C, L>
where
    C::P: Copy + Default,
{
    /// Copies the block's rows (row i, column kk at `i·rs + col(kk)`) into its panels, in
    /// the order each panel keeps them, so that stores are sequential. Where the source's
    /// rows are adjacent (a transposed matrix, an im2col signal), K is the outer loop across
    /// all panels, so that reads run along the source's rows rather than striding down its
    /// columns page after page. Always inlined, so that literal strides at the call reach
    /// the loops.
    ///
    /// # Safety
    /// Every source element of the block and every value of its panels must be valid.
    #[inline(always)]
    unsafe fn walk(&self, rs: isize, col: impl Fn(usize) -> isize, rows_adjacent: bool) {
        // Locals, not fields: stores through `out` could alias `self`, which would make the
        // compiler reload every field after every store.
        let Panel { src, rows, kc, kc_pad, convert, out, .. } = *self;
        let (r, panels) = (L::ROWS, rows.div_ceil(L::ROWS));
        // Row i of the block, whose source column kk is at `off`, to panel position `at`.
        let put = |i: usize, off: isize, at: usize| {
            *out.add(at) = convert.convert(*src.offset(i as isize * rs + off));
        };
        let Some(u) = L::UNIT else {
            // Whole rows: row i of panel p is `kc_pad` contiguous values.
            for i in 0..rows {
                let row = (i / r) * r * kc_pad + (i % r) * kc_pad;
                (0..kc).for_each(|kk| put(i, col(kk), row + kk));
            }
            return;
        };
        // Value kk of panel p's rows; a literal row count for whole panels unrolls the inner
        // loop into straight copies.
        let column = |p: usize, kk: usize, off: isize| {
            let at = p * r * kc_pad + (kk / u) * r * u + kk % u;
            if (p + 1) * r <= rows {
                (0..r).for_each(|j| put(p * r + j, off, at + j * u));
            } else {
                (0..rows - p * r).for_each(|j| put(p * r + j, off, at + j * u));
            }
        };
        if rows_adjacent {
            for kk in 0..kc {
                let off = col(kk);
                (0..panels).for_each(|p| column(p, kk, off));
            }
        } else {
            for p in 0..panels {
                (0..kc).for_each(|kk| column(p, kk, col(kk)));
            }
        }
    }

    /// [`Panel::walk`] for a source whose rows are adjacent (a transposed row-major matrix):
    /// kept f32 into one-value-per-k panels, each panel's row of one k is a straight copy.
    ///
    /// # Safety
    /// As for [`Panel::walk`] with `rs = 1`, `col(kk) = kk·cs`.
    #[inline(always)]
    unsafe fn walk_rows_contiguous(&self, cs: isize) {
        if let (true, Some(1), Some(src)) = (C::KEEPS_F32, L::UNIT, T::as_f32(self.src)) {
            let Panel { rows, kc, kc_pad, out, .. } = *self;
            let (r, out) = (L::ROWS, out as *mut f32);
            let whole = rows - rows % r;
            for kk in 0..kc {
                // The rows are far apart (a matrix's rows, a signal's channels), so each step
                // waits on new lines unless they were asked for earlier: 512³ on two threads
                // spent 4 % of its time in this copy.
                prefetch::span(src.offset((kk + PACK_AHEAD).min(kc - 1) as isize * cs).cast(), rows * size_of::<f32>());
                let (from, to) = (src.offset(kk as isize * cs), out.add(kk * r));
                // A whole panel's row is a copy of a length known here, made inline.
                for first in (0..whole).step_by(r) {
                    std::ptr::copy_nonoverlapping(from.add(first), to.add(first * kc_pad), r);
                }
                if whole < rows {
                    std::ptr::copy_nonoverlapping(from.add(whole), to.add(whole * kc_pad), rows - whole);
                }
            }
            return;
        }
        self.walk(1, |kk| kk as isize * cs, true)
    }

    /// [`Panel::walk`] for a source whose rows hold K contiguously (a row-major A, weights
    /// stored `[out, in]`). f32 into one-value-per-k panels of a multiple of 4 rows is a
    /// transposition: 4×4 blocks of SSE shuffles (baseline x86-64) do it at about one
    /// instruction per value, where the element-wise walk takes several.
    ///
    /// # Safety
    /// As for [`Panel::walk`] with `col(kk) = kk`.
    #[inline(always)]
    unsafe fn walk_k_contiguous(&self, rs: isize) {
        #[cfg(target_arch = "x86_64")]
        if let (true, Some(1), 0, Some(src)) = (C::KEEPS_F32, L::UNIT, L::ROWS % 4, T::as_f32(self.src)) {
            use std::arch::x86_64::*;
            let Panel { rows, kc, kc_pad, out, .. } = *self;
            let (r, out) = (L::ROWS, out as *mut f32);
            let whole = kc - kc % 4;
            for p in 0..rows / r {
                let panel = out.add(p * r * kc_pad);
                for g in (0..r).step_by(4) {
                    let row = |j: usize| src.offset((p * r + g + j) as isize * rs);
                    let (r0, r1, r2, r3) = (row(0), row(1), row(2), row(3));
                    for kk in (0..whole).step_by(4) {
                        let (a, b) = (_mm_loadu_ps(r0.add(kk)), _mm_loadu_ps(r1.add(kk)));
                        let (c, d) = (_mm_loadu_ps(r2.add(kk)), _mm_loadu_ps(r3.add(kk)));
                        // Rows (a, b, c, d) to columns: interleave pairs, then halves.
                        let (ab_lo, ab_hi) = (_mm_unpacklo_ps(a, b), _mm_unpackhi_ps(a, b));
                        let (cd_lo, cd_hi) = (_mm_unpacklo_ps(c, d), _mm_unpackhi_ps(c, d));
                        let to = panel.add(kk * r + g);
                        _mm_storeu_ps(to, _mm_movelh_ps(ab_lo, cd_lo));
                        _mm_storeu_ps(to.add(r), _mm_movehl_ps(cd_lo, ab_lo));
                        _mm_storeu_ps(to.add(2 * r), _mm_movelh_ps(ab_hi, cd_hi));
                        _mm_storeu_ps(to.add(3 * r), _mm_movehl_ps(cd_hi, ab_hi));
                    }
                    for kk in whole..kc {
                        (0..4).for_each(|j| *panel.add(kk * r + g + j) = *row(j).add(kk));
                    }
                }
            }
            // The ragged last panel, if any, element by element.
            let done = rows / r * r;
            if done < rows {
                let rest = Panel {
                    src: self.src.offset(done as isize * rs),
                    rows: rows - done,
                    out: self.out.add(done * kc_pad),
                    ..*self
                };
                rest.walk(rs, |kk| kk as isize, false);
            }
            return;
        }
        self.walk(rs, |kk| kk as isize, false)
    }
}

mod scalar {
    use super::{Blocking, KMajor, Kernel, Out};

    /// The reference: plain multiply and add, no SIMD beyond what the compiler finds.
    pub struct F32Kernel;
    pub const F32: F32Kernel = F32Kernel;

    const MR: usize = 4;
    const NR: usize = 8;

    impl Kernel for F32Kernel {
        const K_ALIGN: usize = 1;
        type A = KMajor<1, MR>;
        type B = KMajor<1, NR>;
        type P = f32;
        const BLOCKING: Blocking = Blocking { mc: 64, kc: 512, nc: 2048 };

        unsafe fn tile(&self, kc: usize, a: *const f32, b: *const f32, c: Out, m: usize, n: usize, accumulate: bool) {
            let (a, b) = (std::slice::from_raw_parts(a, kc * MR), std::slice::from_raw_parts(b, kc * NR));
            let mut acc = [[0.0f32; NR]; MR];
            for (ak, bk) in a.chunks_exact(MR).zip(b.chunks_exact(NR)) {
                for (row, &av) in acc.iter_mut().zip(ak) {
                    row.iter_mut().zip(bk).for_each(|(s, &bv)| *s += av * bv);
                }
            }
            for (r, row) in acc.iter().enumerate().take(m) {
                let out = std::slice::from_raw_parts_mut(c.ptr.add(r * c.row_stride), n);
                for (o, &v) in out.iter_mut().zip(row) {
                    *o = if accumulate { *o + v } else { v };
                }
            }
        }
    }
}

#[cfg(target_arch = "x86_64")]
mod avx2 {
    use std::arch::x86_64::*;

    use super::{Blocking, KMajor, Kernel, Out, Strided};
    use crate::kernels::vector::avx2::{load, store};

    pub struct F32Kernel;
    pub const F32: F32Kernel = F32Kernel;

    const MR: usize = 6;
    const NR: usize = 16;

    impl Kernel for F32Kernel {
        const K_ALIGN: usize = 1;
        type A = KMajor<1, MR>;
        type B = KMajor<1, NR>;
        type P = f32;
        const BLOCKING: Blocking = Blocking { mc: 96, kc: 512, nc: 2048 };

        unsafe fn tile(&self, kc: usize, a: *const f32, b: *const f32, c: Out, m: usize, n: usize, accumulate: bool) {
            tile(kc, a, b, c, m, n, accumulate)
        }

        const STRIDED: bool = true;

        unsafe fn strided_rows<const R: usize>(&self, kc: usize, at: Strided, c: Out, m: usize, n: usize, add: bool) {
            rows::<R>(kc, at, c, m, n, add)
        }

        fn enter<R>(&self, f: impl FnOnce() -> R) -> R {
            // SAFETY: this kernel is only chosen at `Isa::Avx2` or above.
            unsafe { enter(f) }
        }
    }

    #[target_feature(enable = "avx2,fma")]
    #[inline]
    unsafe fn enter<R>(f: impl FnOnce() -> R) -> R {
        f()
    }

    /// 6×16: twelve accumulators, two B vectors and a broadcast fill the 16 registers.
    #[target_feature(enable = "avx2,fma")]
    unsafe fn tile(kc: usize, a: *const f32, b: *const f32, c: Out, m: usize, n: usize, accumulate: bool) {
        rows::<MR>(kc, Strided { a, a_step: MR, a_row: 1, b, b_step: NR }, c, m, n, accumulate)
    }

    /// The R×16 tile over operands where `at` says.
    #[target_feature(enable = "avx2,fma")]
    #[inline]
    unsafe fn rows<const R: usize>(kc: usize, at: Strided, c: Out, m: usize, n: usize, accumulate: bool) {
        let Strided { a, a_step, a_row, b, b_step } = at;
        c.prefetch(m, n);
        let mut acc = [[_mm256_setzero_ps(); 2]; R];
        for p in 0..kc {
            let b = b.add(p * b_step);
            let (b0, b1) = (_mm256_loadu_ps(b), _mm256_loadu_ps(b.add(8)));
            for (r, row) in acc.iter_mut().enumerate() {
                let av = _mm256_broadcast_ss(&*a.add(p * a_step + r * a_row));
                row[0] = _mm256_fmadd_ps(av, b0, row[0]);
                row[1] = _mm256_fmadd_ps(av, b1, row[1]);
            }
        }
        for (r, row) in acc.iter().enumerate().take(m) {
            for (v, &sum) in row.iter().enumerate().take(n.div_ceil(8)) {
                let (p, rem) = (c.ptr.add(r * c.row_stride + 8 * v), n - 8 * v);
                store(p, rem, if accumulate { _mm256_add_ps(load(p, rem), sum) } else { sum });
            }
        }
    }
}

#[cfg(target_arch = "x86_64")]
mod avx512 {
    use std::arch::x86_64::*;

    use super::{Blocking, KMajor, Kernel, Out, Strided};
    use crate::kernels::vector::avx512::{load, store};

    /// 6×64 rather than 12×32: the same 24 accumulators, but each k-step broadcasts 6 values
    /// of A instead of 12, and an A micro-panel is half as large, so it stays in L1 beside the
    /// B stream. Both reach the FMA roof on operands in L1; over real blocks 6×64 ran 3-8 %
    /// faster, and one thread against the `gemm` crate in alternating runs went from
    /// 0.93-0.97 to 1.00-1.04, 256 to 2048 (KERNELS.md).
    pub const NR: usize = 64;
    pub const MR: usize = 6;
    /// Shared with the bf16 pair kernel, whose tiles have the same shape: an A block of
    /// 32 panels (384 KB of f32) stays in the 1 MB L2 while B micro-panels stream past it.
    pub const BLOCKING: Blocking = Blocking { mc: 192, kc: 512, nc: 2048 };

    pub struct F32Kernel;
    pub const F32: F32Kernel = F32Kernel;

    impl Kernel for F32Kernel {
        const K_ALIGN: usize = 1;
        type A = KMajor<1, MR>;
        type B = KMajor<1, NR>;
        type P = f32;
        const BLOCKING: Blocking = BLOCKING;

        unsafe fn tile(&self, kc: usize, a: *const f32, b: *const f32, c: Out, m: usize, n: usize, accumulate: bool) {
            f32_tile(kc, a, b, c, m, n, accumulate)
        }

        const STRIDED: bool = true;

        unsafe fn strided_rows<const R: usize>(&self, kc: usize, at: Strided, c: Out, m: usize, n: usize, add: bool) {
            rows::<R>(kc, at, c, m, n, add)
        }

        fn enter<R>(&self, f: impl FnOnce() -> R) -> R {
            // SAFETY: this kernel is only chosen at `Isa::Avx512` or above.
            unsafe { enter(f) }
        }
    }

    #[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512dq")]
    #[inline]
    unsafe fn enter<R>(f: impl FnOnce() -> R) -> R {
        f()
    }

    /// The 6×64 register tile over packed values of which `$u` make one k-step of a row
    /// (1 for f32, 2 for bf16 pairs): 24 accumulators, four B vectors and a broadcast of the 32
    /// registers. `$load_b` reads 16 lanes' worth of B, `$bcast_a` one row's k-step of A into
    /// every lane, `$madd` adds their products to an accumulator. A macro rather than a
    /// function taking closures: expanded inside each kernel's `target_feature` function, the
    /// closures inline whatever extra instructions that kernel enables (`VDPBF16PS`). Row r's
    /// k-step p of A is read at `p · a_step + r · a_row` and k-step p of B at `p · b_step`:
    /// packed panels by default, or (with the strides given) operands in place.
    macro_rules! tile {
        ($p:ty, $u:expr, ($kc:expr, $a:expr, $b:expr, $c:expr, $m:expr, $n:expr, $accumulate:expr),
         $load_b:expr, $bcast_a:expr, $madd:expr) => {
            tile!($p, $u, ($kc, $a, $b, $c, $m, $n, $accumulate), (MR * $u, $u, NR * $u), MR, $load_b, $bcast_a, $madd)
        };
        ($p:ty, $u:expr, ($kc:expr, $a:expr, $b:expr, $c:expr, $m:expr, $n:expr, $accumulate:expr),
         ($a_step:expr, $a_row:expr, $b_step:expr), $rows:expr, $load_b:expr, $bcast_a:expr, $madd:expr) => {{
            let (kc, a, b, c, m, n, accumulate): (usize, *const $p, *const $p, Out, usize, usize, bool) =
                ($kc, $a, $b, $c, $m, $n, $accumulate);
            let (load_b, bcast_a, madd) = ($load_b, $bcast_a, $madd);
            // Where row r's k-step p of A and k-step p of B are: packed panels, or in place.
            let (a_step, a_row, b_step): (usize, usize, usize) = ($a_step, $a_row, $b_step);
            c.prefetch(m, n);
            // `$rows` (at most MR) rows of the tile: fewer for the last rows of A.
            let mut acc = [[_mm512_setzero_ps(); NR / 16]; $rows];
            for p in 0..kc / $u {
                let bv: [_; NR / 16] = std::array::from_fn(|v| load_b(b.add(p * b_step + v * 16 * $u)));
                for (r, row) in acc.iter_mut().enumerate() {
                    let av = bcast_a(a.add(p * a_step + r * a_row));
                    for (sum, &bv) in row.iter_mut().zip(&bv) {
                        *sum = madd(*sum, av, bv);
                    }
                }
            }
            for (r, row) in acc.iter().enumerate().take(m) {
                for (v, &sum) in row.iter().enumerate().take(n.div_ceil(16)) {
                    let (p, rem) = (c.ptr.add(r * c.row_stride + 16 * v), n - 16 * v);
                    store(p, rem, if accumulate { _mm512_add_ps(load(p, rem), sum) } else { sum });
                }
            }
        }};
    }
    pub(super) use tile;

    #[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512dq")]
    unsafe fn f32_tile(kc: usize, a: *const f32, b: *const f32, c: Out, m: usize, n: usize, accumulate: bool) {
        tile!(
            f32,
            1,
            (kc, a, b, c, m, n, accumulate),
            |p: *const f32| _mm512_load_ps(p),
            |p: *const f32| _mm512_set1_ps(*p),
            |acc, a, b| _mm512_fmadd_ps(a, b, acc)
        )
    }

    /// [`f32_tile`] with R rows over operands where `at` says.
    #[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512dq")]
    #[inline]
    unsafe fn rows<const R: usize>(kc: usize, at: Strided, c: Out, m: usize, n: usize, accumulate: bool) {
        let Strided { a, a_step, a_row, b, b_step } = at;
        tile!(
            f32,
            1,
            (kc, a, b, c, m, n, accumulate),
            (a_step, a_row, b_step),
            R,
            |p: *const f32| _mm512_loadu_ps(p),
            |p: *const f32| _mm512_set1_ps(*p),
            |acc, a, b| _mm512_fmadd_ps(a, b, acc)
        )
    }
}

#[cfg(target_arch = "x86_64")]
mod avx512bf16 {
    use std::arch::x86_64::*;

    use super::avx512::{tile, BLOCKING, MR, NR};
    use super::{Blocking, KMajor, Kernel, Out};
    use crate::kernels::vector::avx512::{load, store};

    /// The AVX-512 tile on bf16 pairs: `VDPBF16PS` adds two products per lane per
    /// instruction, so each k-step covers two values of K.
    pub struct PairKernel;
    pub const PAIRS: PairKernel = PairKernel;

    impl Kernel for PairKernel {
        const K_ALIGN: usize = 2;
        type A = KMajor<2, MR>;
        type B = KMajor<2, NR>;
        type P = u16;
        const BLOCKING: Blocking = BLOCKING;

        unsafe fn tile(&self, kc: usize, a: *const u16, b: *const u16, c: Out, m: usize, n: usize, accumulate: bool) {
            pair_tile(kc, a, b, c, m, n, accumulate)
        }

        fn enter<R>(&self, f: impl FnOnce() -> R) -> R {
            // SAFETY: this kernel is only chosen at `Isa::Avx512Bf16` or above.
            unsafe { enter(f) }
        }
    }

    #[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512dq,avx512bf16")]
    #[inline]
    unsafe fn enter<R>(f: impl FnOnce() -> R) -> R {
        f()
    }

    #[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512dq,avx512bf16")]
    unsafe fn pair_tile(kc: usize, a: *const u16, b: *const u16, c: Out, m: usize, n: usize, accumulate: bool) {
        // SAFETY (both transmutes): 512 bits of integers and 32 bf16 have the same layout.
        tile!(
            u16,
            2,
            (kc, a, b, c, m, n, accumulate),
            |p: *const u16| -> __m512bh { std::mem::transmute(_mm512_load_si512(p as *const __m512i)) },
            |p: *const u16| -> __m512bh { std::mem::transmute(_mm512_set1_epi32((p as *const i32).read_unaligned())) },
            |acc, a, b| _mm512_dpbf16_ps(acc, a, b)
        )
    }
}

/// The AMX tile kernel. Its packing and addressing are shared with a model of the tile
/// instruction in the tests, which checks them on any machine; the instructions themselves
/// run only where the CPU has AMX and the OS grants tile state.
#[cfg(target_arch = "x86_64")]
mod amx {
    use std::arch::asm;

    use super::{Blocking, KMajor, Kernel, Out, RowMajor};

    pub const MR: usize = 32;
    pub const NR: usize = 32;
    /// One A tile row is 64 bytes: 32 bf16 values of K.
    pub const K_STEP: usize = 32;
    /// Bytes between rows of a packed B panel: NR columns × a bf16 pair.
    pub const B_STRIDE: usize = NR * 4;

    pub struct TileKernel;
    pub const TILES: TileKernel = TileKernel;

    /// Palette 1; tiles 0-3 accumulate C (16 rows × 16 f32), 4-5 hold A (16 rows × 32 bf16),
    /// 6-7 hold B (16 k-pairs × 16 columns × 2 bf16): all are 16 rows of 64 bytes.
    #[repr(C, align(64))]
    struct TileConfig {
        palette: u8,
        start_row: u8,
        reserved: [u8; 14],
        colsb: [u16; 16],
        rows: [u8; 16],
    }

    static CONFIG: TileConfig = TileConfig {
        palette: 1,
        start_row: 0,
        reserved: [0; 14],
        colsb: [64, 64, 64, 64, 64, 64, 64, 64, 0, 0, 0, 0, 0, 0, 0, 0],
        rows: [16, 16, 16, 16, 16, 16, 16, 16, 0, 0, 0, 0, 0, 0, 0, 0],
    };

    #[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512dq,avx512bf16")]
    #[inline]
    unsafe fn enter<R>(f: impl FnOnce() -> R) -> R {
        f()
    }

    /// Offset in bf16 values of A tile `half` (rows 16·half..) for K values `kb..kb + 32` of a
    /// panel packed row-major with `kc` values per row; rows are `2·kc` bytes apart.
    pub fn a_tile(half: usize, kb: usize, kc: usize) -> usize {
        half * 16 * kc + kb
    }

    /// Offset in bf16 values of B tile `half` (columns 16·half..) for K values `kb..kb + 32`:
    /// 16 rows of k-pairs, `B_STRIDE` bytes apart.
    pub fn b_tile(half: usize, kb: usize) -> usize {
        (kb / 2) * NR * 2 + half * 32
    }

    impl Kernel for TileKernel {
        const K_ALIGN: usize = K_STEP;
        type A = RowMajor<MR>;
        type B = KMajor<2, NR>;
        type P = u16;
        const BLOCKING: Blocking = Blocking { mc: 128, kc: 512, nc: 2048 };

        fn begin(&self) {
            // SAFETY: this kernel is only chosen when `Isa::Amx` is available, which includes
            // the OS granting tile data; the configuration is 64 valid bytes.
            unsafe { asm!("ldtilecfg [{}]", in(reg) &CONFIG, options(nostack, readonly)) };
        }

        fn end(&self) {
            // SAFETY: as in `begin`.
            unsafe { asm!("tilerelease", options(nostack, nomem)) };
        }

        fn enter<R>(&self, f: impl FnOnce() -> R) -> R {
            // SAFETY: AMX is above AVX512-BF16, which `Isa::Amx` includes.
            unsafe { enter(f) }
        }

        unsafe fn tile(&self, kc: usize, a: *const u16, b: *const u16, c: Out, m: usize, n: usize, accumulate: bool) {
            #[repr(C, align(64))]
            struct Tile([[f32; NR]; MR]);
            let mut sums = Tile([[0.0; NR]; MR]);
            asm!("tilezero tmm0", "tilezero tmm1", "tilezero tmm2", "tilezero tmm3", options(nostack, nomem));
            for kb in (0..kc).step_by(K_STEP) {
                asm!(
                    "tileloadd tmm4, [{a0} + {sa}*1]",
                    "tileloadd tmm5, [{a1} + {sa}*1]",
                    "tileloadd tmm6, [{b0} + {sb}*1]",
                    "tileloadd tmm7, [{b1} + {sb}*1]",
                    "tdpbf16ps tmm0, tmm4, tmm6",
                    "tdpbf16ps tmm1, tmm4, tmm7",
                    "tdpbf16ps tmm2, tmm5, tmm6",
                    "tdpbf16ps tmm3, tmm5, tmm7",
                    a0 = in(reg) a.add(a_tile(0, kb, kc)),
                    a1 = in(reg) a.add(a_tile(1, kb, kc)),
                    b0 = in(reg) b.add(b_tile(0, kb)),
                    b1 = in(reg) b.add(b_tile(1, kb)),
                    sa = in(reg) kc * 2,
                    sb = in(reg) B_STRIDE,
                    options(nostack, readonly),
                );
            }
            let s = sums.0.as_mut_ptr() as *mut f32;
            asm!(
                "tilestored [{c00} + {st}*1], tmm0",
                "tilestored [{c01} + {st}*1], tmm1",
                "tilestored [{c10} + {st}*1], tmm2",
                "tilestored [{c11} + {st}*1], tmm3",
                c00 = in(reg) s,
                c01 = in(reg) s.add(16),
                c10 = in(reg) s.add(16 * NR),
                c11 = in(reg) s.add(16 * NR + 16),
                st = in(reg) NR * 4,
                options(nostack),
            );
            for (r, row) in sums.0.iter().enumerate().take(m) {
                let out = std::slice::from_raw_parts_mut(c.ptr.add(r * c.row_stride), n);
                for (o, &v) in out.iter_mut().zip(row) {
                    *o = if accumulate { *o + v } else { v };
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kernels::testing::{available, random};

    /// Small blocks, so that modest matrices cross every block edge.
    const TINY: Blocking = Blocking { mc: 24, kc: 40, nc: 64 };

    fn rounded(v: &[f32]) -> Vec<f32> {
        v.iter().map(|&x| bf16::scalar::widen(x.to_bf16())).collect()
    }

    /// C (+)= A·Bᵀ in f64 from element getters, with the sums of |products| for the bound.
    fn reference(
        m: usize,
        n: usize,
        k: usize,
        a: impl Fn(usize, usize) -> f32,
        bt: impl Fn(usize, usize) -> f32,
    ) -> (Vec<f64>, Vec<f64>) {
        let mut want = vec![0.0; m * n];
        let mut magnitude = vec![0.0; m * n];
        for i in 0..m {
            for j in 0..n {
                for p in 0..k {
                    let prod = f64::from(a(i, p)) * f64::from(bt(j, p));
                    want[i * n + j] += prod;
                    magnitude[i * n + j] += prod.abs();
                }
            }
        }
        (want, magnitude)
    }

    /// f32 sums of k terms: rounding errors of random sign grow with √k.
    fn check(got: &[f32], want: &[f64], magnitude: &[f64], k: usize, what: &str) {
        let bound = 4.0 * f64::from(f32::EPSILON) * ((k + 1) as f64).sqrt();
        for (i, ((&g, &w), &mag)) in got.iter().zip(want).zip(magnitude).enumerate() {
            assert!((f64::from(g) - w).abs() <= bound * mag + 1e-30, "{what} element {i}: {g} vs {w}");
        }
    }

    /// Runs `f(kernel, blocking, threads)` for every f32 kernel this CPU has.
    fn for_each_level(mut f: impl FnMut(Cpu, Blocking, usize)) {
        for cpu in available() {
            for (blocking, threads) in [(TINY, 1), (TINY, 3), (default_blocking(cpu), 2)] {
                f(cpu, blocking, threads);
            }
        }
    }

    fn default_blocking(cpu: Cpu) -> Blocking {
        match cpu.isa() {
            Isa::Scalar => <scalar::F32Kernel as Kernel>::BLOCKING,
            Isa::Avx2 => <avx2::F32Kernel as Kernel>::BLOCKING,
            _ => <avx512::F32Kernel as Kernel>::BLOCKING,
        }
    }

    /// The f32 product on `cpu`'s kernel with explicit blocking and threads.
    #[allow(clippy::too_many_arguments)]
    fn f32_with<A: Element, B: Element>(
        cpu: Cpu,
        blocking: Blocking,
        threads: usize,
        a: View<A>,
        bt: View<B>,
        c: &mut ViewMut,
        accumulate: bool,
    ) {
        match cpu.isa() {
            Isa::Scalar => product_with(&scalar::F32, blocking, threads, Exact, a, bt, c, accumulate),
            Isa::Avx2 => product_with(&avx2::F32, blocking, threads, Exact, a, bt, c, accumulate),
            _ => product_with(&avx512::F32, blocking, threads, Exact, a, bt, c, accumulate),
        }
    }

    /// Shapes with empty, single and ragged dimensions on both sides of every tile and block.
    const SHAPES: [(usize, usize, usize); 10] = [
        (0, 5, 3),
        (4, 0, 3),
        (1, 1, 1),
        (3, 5, 7),
        (13, 33, 41),
        (25, 31, 80),
        (12, 65, 17),
        (37, 97, 129),
        (50, 7, 90),
        (7, 130, 3),
    ];

    #[test]
    fn every_level_matches_the_reference_on_every_edge() {
        for_each_level(|cpu, blocking, threads| {
            for (m, n, k) in SHAPES {
                let (a, bt) = (random(m * k, 21), random(n * k, 22));
                let (want, magnitude) = reference(m, n, k, |i, p| a[i * k + p], |j, p| bt[j * k + p]);
                let mut c = vec![f32::NAN; m * n];
                let mut out = ViewMut::new(&mut c, m, n).unwrap();
                let (av, bv) = (View::new(&a, m, k).unwrap(), View::new(&bt, n, k).unwrap());
                f32_with(cpu, blocking, threads, av, bv, &mut out, false);
                let what = format!("{} {blocking:?} x{threads} {m}x{n}x{k}", cpu.isa());
                check(&c, &want, &magnitude, k, &what);
            }
        });
    }

    #[test]
    fn accumulates_into_a_block_of_a_wider_matrix_and_leaves_the_rest() {
        let (m, n, k, stride) = (29, 45, 33, 50);
        let (a, bt) = (random(m * k, 31), random(n * k, 32));
        let before = random(3 + m * stride, 33);
        let (want, magnitude) = reference(m, n, k, |i, p| a[i * k + p], |j, p| bt[j * k + p]);
        for_each_level(|cpu, blocking, threads| {
            let mut c = before.clone();
            let mut out = ViewMut::strided(&mut c, 3, m, n, stride).unwrap();
            let (av, bv) = (View::new(&a, m, k).unwrap(), View::new(&bt, n, k).unwrap());
            f32_with(cpu, blocking, threads, av, bv, &mut out, true);
            for (idx, (&g, &b)) in c.iter().zip(&before).enumerate() {
                let (r, col) =
                    ((idx as isize - 3).div_euclid(stride as isize), (idx as isize - 3).rem_euclid(stride as isize));
                if idx < 3 || r >= m as isize || col >= n as isize {
                    assert_eq!(g.to_bits(), b.to_bits(), "{} wrote outside C at {idx}", cpu.isa());
                } else {
                    let e = r as usize * n + col as usize;
                    let w = want[e] + f64::from(b);
                    let tol =
                        4.0 * f64::from(f32::EPSILON) * ((k + 2) as f64).sqrt() * (magnitude[e] + f64::from(b.abs()));
                    assert!((f64::from(g) - w).abs() <= tol, "{} accumulate ({r}, {col}): {g} vs {w}", cpu.isa());
                }
            }
        });
    }

    #[test]
    fn reads_transposed_negative_stride_and_grouped_views() {
        let (m, n, k) = (19, 23, 35);
        // A as the transpose of a K×M matrix.
        let a_km = random(k * m, 41);
        let a = View::transposed(&a_km, k, m).unwrap();
        // Bᵀ with its rows in reverse order: a negative row stride.
        let b_nk = random(n * k, 42);
        let bt = View::strided(&b_nk, (n - 1) * k, n, k, -(k as isize), 1).unwrap();
        let (want, magnitude) = reference(m, n, k, |i, p| a_km[p * m + i], |j, p| b_nk[(n - 1 - j) * k + p]);
        for_each_level(|cpu, blocking, threads| {
            let mut c = vec![0.0; m * n];
            f32_with(cpu, blocking, threads, a, bt, &mut ViewMut::new(&mut c, m, n).unwrap(), false);
            check(&c, &want, &magnitude, k, &format!("{} transposed/reversed", cpu.isa()));
        });

        // An im2col view: row t, column (channel, tap) reads signal[channel·len + tap·dil + t].
        let (channels, taps, dil, len, t_out) = (5, 3, 2, 40, 36);
        let signal = random(channels * len, 43);
        let cols = View::grouped(&signal, 0, t_out, 1, (channels, len as isize), (taps, dil)).unwrap();
        let weights = random(7 * channels * taps, 44);
        let w = View::new(&weights, 7, channels * taps).unwrap();
        let im2col = |t: usize, c: usize| signal[(c / taps) * len + (c % taps) * dil as usize + t];
        let (want, magnitude) = reference(7, t_out, channels * taps, |i, p| weights[i * channels * taps + p], im2col);
        for_each_level(|cpu, blocking, threads| {
            let mut c = vec![0.0; 7 * t_out];
            f32_with(cpu, blocking, threads, w, cols, &mut ViewMut::new(&mut c, 7, t_out).unwrap(), false);
            check(&c, &want, &magnitude, channels * taps, &format!("{} im2col", cpu.isa()));
        });
    }

    /// A row-major A and a row-major B (Bᵀ its transposed view): the layouts a one-region
    /// product reads in place, whole panels from the operands and edge panels packed. B starts
    /// a cache line (read in place where its row length is a multiple of a line, 64 and 96
    /// columns here) and 12 bytes past one (packed).
    #[test]
    fn row_major_operands_read_in_place_match_the_reference() {
        for (m, n, k) in [
            (37, 97, 129),
            (12, 64, 40),
            (5, 33, 7),
            (25, 31, 80),
            (13, 130, 3),
            (7, 1030, 9),
            (13, 70, 600),
            (31, 96, 200),
        ] {
            let (a, b_kn) = (random(m * k, 51), random(k * n, 52));
            let (want, magnitude) = reference(m, n, k, |i, p| a[i * k + p], |j, p| b_kn[p * n + j]);
            for past_line in [0, 12] {
                let mut buffer = vec![0.0f32; b_kn.len() + LINE_BYTES];
                let start = buffer.as_ptr().align_offset(LINE_BYTES) + past_line / 4;
                buffer[start..][..b_kn.len()].copy_from_slice(&b_kn);
                let b_kn = &buffer[start..][..b_kn.len()];
                assert_eq!(b_kn.as_ptr() as usize % LINE_BYTES, past_line);
                for_each_level(|cpu, blocking, threads| {
                    for accumulate in [false, true] {
                        let mut c = vec![if accumulate { 0.0 } else { f32::NAN }; m * n];
                        let (av, bt) = (View::new(&a, m, k).unwrap(), View::transposed(b_kn, k, n).unwrap());
                        let c_view = &mut ViewMut::new(&mut c, m, n).unwrap();
                        f32_with(cpu, blocking, threads, av, bt, c_view, accumulate);
                        let what = format!(
                            "{} {blocking:?} x{threads} {m}x{n}x{k} B {past_line} bytes past a line, accumulate {accumulate}",
                            cpu.isa()
                        );
                        check(&c, &want, &magnitude, k, &what);
                    }
                });
            }
        }
    }

    #[test]
    fn views_outside_their_slice_are_errors() {
        let d = [0.0f32; 12];
        assert!(View::new(&d, 3, 4).is_ok());
        assert!(View::new(&d, 4, 4).is_err());
        assert!(View::strided(&d, 2, 3, 4, 4, 1).is_err());
        assert!(View::strided(&d, 11, 3, 4, -4, -1).is_ok());
        assert!(View::strided(&d, 10, 3, 4, -4, -1).is_err());
        assert!(View::grouped(&d, 0, 2, 1, (3, 4), (2, 2)).is_ok());
        let e = View::grouped(&d, 0, 2, 1, (3, 4), (2, 3)).unwrap_err();
        assert!(e.to_string().contains("elements 0..=12 of a slice of 12"), "{e}");
        assert!(View::<f32>::strided(&[], 0, 0, 9, 9, 1).is_ok());
        let mut out = [0.0f32; 10];
        assert!(ViewMut::strided(&mut out, 1, 3, 3, 3).is_ok());
        assert!(ViewMut::strided(&mut out, 2, 3, 3, 3).is_err());
        assert!(ViewMut::strided(&mut out, 0, 2, 4, 3).is_err());
    }

    #[test]
    fn empty_k_clears_or_keeps_c() {
        for cpu in available() {
            let mut c = vec![5.0; 6];
            let (a, bt) = (View::<f32>::new(&[], 2, 0).unwrap(), View::<f32>::new(&[], 3, 0).unwrap());
            gemm(cpu, a, bt, ViewMut::new(&mut c, 2, 3).unwrap(), true);
            assert_eq!(c, [5.0; 6]);
            gemm(cpu, a, bt, ViewMut::new(&mut c, 2, 3).unwrap(), false);
            assert_eq!(c, [0.0; 6]);
        }
    }

    #[test]
    #[should_panic(expected = "A has 3 columns but Bᵀ has 4")]
    fn mismatched_k_panics_with_the_shapes() {
        let (a, b, mut c) = ([0.0f32; 6], [0.0f32; 8], [0.0f32; 4]);
        let (av, bv) = (View::new(&a, 2, 3).unwrap(), View::new(&b, 2, 4).unwrap());
        gemm(Cpu::best(), av, bv, ViewMut::new(&mut c, 2, 2).unwrap(), false);
    }

    #[test]
    fn bf16_operands_widen_exactly_in_the_f32_product() {
        let (m, n, k) = (21, 40, 57);
        let a = random(m * k, 51);
        let bt_f = random(n * k, 52);
        let mut bt = vec![0u16; n * k];
        bf16::from_f32(&bt_f, &mut bt);
        let (want, magnitude) = reference(m, n, k, |i, p| a[i * k + p], |j, p| bf16::scalar::widen(bt[j * k + p]));
        for cpu in available() {
            let mut c = vec![0.0; m * n];
            let (av, bv) = (View::new(&a, m, k).unwrap(), View::new(&bt, n, k).unwrap());
            gemm(cpu, av, bv, ViewMut::new(&mut c, m, n).unwrap(), false);
            check(&c, &want, &magnitude, k, &format!("{} f32 x bf16", cpu.isa()));
        }
    }

    #[test]
    fn bf16_products_match_the_bf16_rounded_reference() {
        for (m, n, k) in SHAPES.into_iter().chain([(70, 90, 600)]) {
            let (a, bt) = (random(m * k, 61), random(n * k, 62));
            let (ar, br) = (rounded(&a), rounded(&bt));
            let (want, magnitude) = reference(m, n, k, |i, p| ar[i * k + p], |j, p| br[j * k + p]);
            for cpu in available() {
                let mut c = vec![f32::NAN; m * n];
                let (av, bv) = (View::new(&a, m, k).unwrap(), View::new(&bt, n, k).unwrap());
                gemm_bf16(cpu, av, bv, ViewMut::new(&mut c, m, n).unwrap(), false);
                check(&c, &want, &magnitude, k, &format!("{} bf16 {m}x{n}x{k}", cpu.isa()));
            }
        }
    }

    #[test]
    fn bf16_pair_kernel_on_every_edge() {
        let Ok(cpu) = Cpu::forced(Isa::Avx512Bf16) else {
            eprintln!("VDPBF16PS kernel not run: this CPU lacks AVX512-BF16");
            return;
        };
        for (blocking, threads) in [(TINY, 1), (TINY, 3)] {
            for (m, n, k) in SHAPES {
                let (a, bt) = (random(m * k, 71), random(n * k, 72));
                let (ar, br) = (rounded(&a), rounded(&bt));
                let (want, magnitude) = reference(m, n, k, |i, p| ar[i * k + p], |j, p| br[j * k + p]);
                let mut c = vec![f32::NAN; m * n];
                let (av, bv) = (View::new(&a, m, k).unwrap(), View::new(&bt, n, k).unwrap());
                let mut out = ViewMut::new(&mut c, m, n).unwrap();
                product_with(&avx512bf16::PAIRS, blocking, threads, Bf16Bits, av, bv, &mut out, false);
                check(&c, &want, &magnitude, k, &format!("{} pairs {m}x{n}x{k}", cpu.isa()));
            }
        }
    }

    /// TDPBF16PS as the ISA reference defines it, reading tiles from memory exactly where
    /// the AMX kernel's `tileloadd`s do: a check of its packing and addressing that runs on
    /// every machine. It is a test model, never a stand-in for the instruction.
    fn amx_model(kc: usize, a: &[u16], b: &[u16]) -> [[f32; amx::NR]; amx::MR] {
        let mut c = [[0.0f32; amx::NR]; amx::MR];
        let w = bf16::scalar::widen;
        for kb in (0..kc).step_by(amx::K_STEP) {
            for (ha, hb) in [(0, 0), (0, 1), (1, 0), (1, 1)] {
                let (a0, b0) = (amx::a_tile(ha, kb, kc), amx::b_tile(hb, kb));
                // A: 16 rows of 64 bytes, 2·kc bytes apart; B: 16 rows of 64 bytes, B_STRIDE apart.
                for m in 0..16 {
                    for nn in 0..16 {
                        let mut acc = c[16 * ha + m][16 * hb + nn];
                        for pair in 0..16 {
                            let arow = &a[a0 + m * kc..][..32];
                            let brow = &b[b0 + pair * amx::B_STRIDE / 2..][..32];
                            acc += w(arow[2 * pair]) * w(brow[2 * nn]) + w(arow[2 * pair + 1]) * w(brow[2 * nn + 1]);
                        }
                        c[16 * ha + m][16 * hb + nn] = acc;
                    }
                }
            }
        }
        c
    }

    #[test]
    fn amx_packing_and_addressing_match_the_tile_model() {
        for (m, n, k) in [(32, 32, 32), (5, 17, 40), (32, 9, 100), (1, 1, 1)] {
            let (a, bt) = (random(m * k, 81), random(n * k, 82));
            let (ar, br) = (rounded(&a), rounded(&bt));
            let (want, magnitude) = reference(m, n, k, |i, p| ar[i * k + p], |j, p| br[j * k + p]);
            let kc = k.next_multiple_of(amx::K_STEP);
            let (mut pa, mut pb) = (vec![0u16; amx::MR * kc], vec![0u16; amx::NR * kc]);
            let (av, bv) = (View::new(&a, m, k).unwrap(), View::new(&bt, n, k).unwrap());
            pack::<_, _, RowMajor<{ amx::MR }>>(&av, 0, m, 0, k, kc, Bf16Bits, &mut pa);
            pack::<_, _, KMajor<2, { amx::NR }>>(&bv, 0, n, 0, k, kc, Bf16Bits, &mut pb);
            let tile = amx_model(kc, &pa, &pb);
            let got: Vec<f32> = (0..m).flat_map(|i| tile[i][..n].to_vec()).collect();
            check(&got, &want, &magnitude, k, &format!("AMX model {m}x{n}x{k}"));
        }
    }

    #[test]
    fn amx_kernel_on_every_edge() {
        let Ok(cpu) = Cpu::forced(Isa::Amx) else {
            eprintln!("AMX kernel not run: this CPU or OS lacks AMX (its packing is checked by the tile model)");
            return;
        };
        for (m, n, k) in SHAPES.into_iter().chain([(70, 90, 600)]) {
            let (a, bt) = (random(m * k, 91), random(n * k, 92));
            let (ar, br) = (rounded(&a), rounded(&bt));
            let (want, magnitude) = reference(m, n, k, |i, p| ar[i * k + p], |j, p| br[j * k + p]);
            for threads in [1, 2] {
                let mut c = vec![f32::NAN; m * n];
                let (av, bv) = (View::new(&a, m, k).unwrap(), View::new(&bt, n, k).unwrap());
                let mut out = ViewMut::new(&mut c, m, n).unwrap();
                let blocking = Blocking { mc: 64, kc: 64, nc: 64 };
                product_with(&amx::TILES, blocking, threads, Bf16Bits, av, bv, &mut out, false);
                check(&c, &want, &magnitude, k, &format!("{} tiles {m}x{n}x{k}", cpu.isa()));
            }
        }
    }
}
