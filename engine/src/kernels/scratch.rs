//! Scratch memory a kernel reuses from call to call: 64-byte aligned, so packed rows never
//! straddle cache lines, and never zeroed again once grown (a kernel that writes every value
//! before reading it should not pay a memset per call: zeroing the Winograd method's two
//! buffers had cost the default voice 4 % of its time).

use super::prefetch::LINE_BYTES;

/// One cache line.
#[derive(Clone, Copy)]
#[repr(C, align(64))]
struct Line([u8; LINE_BYTES]);

/// A growable buffer of [`Scratch::get`]'s values. Keep one per thread, taken out of its
/// slot for the length of a call (a thread waiting on the pool may run another call).
#[derive(Default)]
pub(crate) struct Scratch(Vec<Line>);

/// The values a [`Scratch`] may hold: plain numbers, for which every bit pattern is valid.
pub(crate) trait Plain: Copy + 'static {}
impl Plain for f32 {}
impl Plain for u16 {}

impl Scratch {
    /// `len` values of `P`, contents unspecified (whatever the last call left).
    pub(crate) fn get<P: Plain>(&mut self, len: usize) -> &mut [P] {
        let bytes = len * size_of::<P>();
        let lines = bytes.div_ceil(LINE_BYTES);
        if self.0.len() < lines {
            self.0.resize(lines, Line([0; LINE_BYTES]));
        }
        // SAFETY: the buffer holds at least `bytes` initialized bytes, aligned to 64 (more
        // than any `Plain` needs), and every bit pattern is a valid `Plain` value.
        unsafe { std::slice::from_raw_parts_mut(self.0.as_mut_ptr() as *mut P, len) }
    }
}
