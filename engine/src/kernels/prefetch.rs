//! Prefetch hints: asking the caches for lines a loop reads a little later, where the
//! hardware prefetchers would not ask in time (a new row every few steps, rows far apart).
//! A hint reads nothing into the program and never faults, so it may name any address.

/// The cache line of every x86-64 CPU spiral runs on.
pub(crate) const LINE_BYTES: usize = 64;

/// Asks for `count` consecutive cache lines, the first being the one `start` lies in.
#[inline(always)]
pub(crate) fn lines(start: *const u8, count: usize) {
    for line in 0..count {
        one(start.wrapping_add(line * LINE_BYTES))
    }
}

/// Asks for every cache line that the `bytes` bytes from `start` touch, wherever `start`
/// lies in its line (a row that does not start a line ends in one more).
#[inline(always)]
pub(crate) fn span(start: *const u8, bytes: usize) {
    let (first, last) = (start as usize, start as usize + bytes.saturating_sub(1));
    // A loop, not `for_each`: LLVM unrolls `for_each` over this range tenfold, 40 prefetches
    // in each microkernel where there were 4.
    for line in first / LINE_BYTES..=last / LINE_BYTES {
        one((line * LINE_BYTES) as *const u8)
    }
}

/// Asks for the cache line `p` lies in (where the target has a prefetch instruction;
/// elsewhere nothing).
#[inline(always)]
#[cfg_attr(not(target_arch = "x86_64"), allow(unused_variables))]
fn one(p: *const u8) {
    // SAFETY: a prefetch is a hint: it reads nothing into the program and cannot fault.
    #[cfg(target_arch = "x86_64")]
    unsafe {
        std::arch::x86_64::_mm_prefetch::<{ std::arch::x86_64::_MM_HINT_T0 }>(p.cast())
    };
}
