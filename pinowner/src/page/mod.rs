//! Page descriptors: the arena's `struct page`.
//!
//! A descriptor is 16 bytes: the packed [state word](state) and an
//! owner slot naming the last acquirer. The kernel spends 64 bytes.

pub(crate) mod slot;
pub mod state;

use crate::sync::AtomicU64;

pub use slot::Acquirer;
pub use state::{PageFlags, PageState};

/// One page's descriptor.
#[repr(C, align(16))]
#[derive(Debug)]
pub(crate) struct Descriptor {
    /// The packed state word; see [`state`].
    pub(crate) state: AtomicU64,
    /// The owner slot; see [`slot`].
    pub(crate) owner: AtomicU64,
}

#[cfg(not(loom))]
const _: () = assert!(core::mem::size_of::<Descriptor>() == 16);

impl Descriptor {
    /// A table of `n` descriptors, all zero (tail pages with no counts).
    ///
    /// Outside loom the table comes from a zeroed allocation, so the
    /// operating system maps its memory lazily: descriptors of pages never
    /// touched cost address space only.
    pub(crate) fn table(n: usize) -> Box<[Descriptor]> {
        #[cfg(not(loom))]
        {
            let table = Box::<[Descriptor]>::new_zeroed_slice(n);
            // `Descriptor` is two `AtomicU64`s, for which the all-zero bit
            // pattern is a valid value (0).
            // SAFETY: `new_zeroed_slice` zeroed every byte of all `n` elements.
            unsafe { table.assume_init() }
        }
        #[cfg(loom)]
        {
            (0..n).map(|_| Descriptor { state: AtomicU64::new(0), owner: AtomicU64::new(0) }).collect()
        }
    }
}
