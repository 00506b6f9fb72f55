//! A raw pointer that a kernel hands to the tasks of one parallel region.

/// A buffer the tasks of one parallel region share: each writes only its own disjoint part,
/// and nothing reads a part while another task may write it (each user says how, where it
/// makes one). Read through [`Shared::get`], so that closures capture this `Sync` wrapper
/// rather than the raw field.
#[derive(Clone, Copy)]
pub(crate) struct Shared<P>(pub(crate) *mut P);
// SAFETY: as its users promise above.
unsafe impl<P> Send for Shared<P> {}
unsafe impl<P> Sync for Shared<P> {}

impl<P> Shared<P> {
    pub(crate) fn get(self) -> *mut P {
        self.0
    }
}
