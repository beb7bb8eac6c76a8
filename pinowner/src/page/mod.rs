//! Page descriptors: the arena's `struct page`.
//!
//! A descriptor is 16 bytes: the packed [state word](state) and an
//! owner slot naming the last acquirer. The kernel spends 64 bytes.

pub(crate) mod ext;
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
    /// A table of `n` descriptors, all zero (tail pages with no counts), or
    /// the bytes it would take if they cannot be allocated.
    ///
    /// Outside loom the table comes from a zeroed allocation, so the
    /// operating system maps its memory lazily: descriptors of pages never
    /// touched cost address space only.
    pub(crate) fn try_table(n: usize) -> Result<Box<[Descriptor]>, usize> {
        let bytes = n.saturating_mul(core::mem::size_of::<Descriptor>());
        #[cfg(not(loom))]
        {
            let layout = std::alloc::Layout::array::<Descriptor>(n).map_err(|_| bytes)?;
            if layout.size() == 0 {
                return Ok(Box::default());
            }
            // SAFETY: the layout has a non-zero size (checked above).
            let ptr = unsafe { std::alloc::alloc_zeroed(layout) }.cast::<Descriptor>();
            if ptr.is_null() {
                return Err(bytes);
            }
            // `Descriptor` is two `AtomicU64`s, for which the all-zero bit
            // pattern is a valid value (0).
            // SAFETY: `ptr` is a live allocation of the global allocator with
            // the layout of `[Descriptor; n]` (what `Box<[Descriptor]>` frees
            // with), and all `n` elements are zeroed, so initialised.
            Ok(unsafe { Box::from_raw(core::ptr::slice_from_raw_parts_mut(ptr, n)) })
        }
        #[cfg(loom)]
        {
            let mut table = Vec::new();
            table.try_reserve_exact(n).map_err(|_| bytes)?;
            table.extend((0..n).map(|_| Descriptor { state: AtomicU64::new(0), owner: AtomicU64::new(0) }));
            Ok(table.into_boxed_slice())
        }
    }
}

#[cfg(all(test, not(loom)))]
mod tests {
    use super::*;

    #[test]
    #[cfg_attr(miri, ignore = "Miri stops at an allocation this large instead of failing it")]
    fn a_descriptor_table_too_large_to_allocate_is_an_error_naming_its_bytes() {
        // 2^58 descriptors: 4 EiB, which no allocator can give.
        assert_eq!(Descriptor::try_table(1 << 58).unwrap_err(), 1 << 62);
        // 2^59: 8 EiB, not even a valid layout.
        assert_eq!(Descriptor::try_table(1 << 59).unwrap_err(), 1 << 63);
        // Overflowing the layout saturates the byte count.
        assert_eq!(Descriptor::try_table(usize::MAX).unwrap_err(), usize::MAX);
    }

    #[test]
    fn a_descriptor_table_is_zeroed() {
        let t = Descriptor::try_table(1000).unwrap();
        assert_eq!(t.len(), 1000);
        assert!(t.iter().all(|d| d.state.load(crate::sync::Ordering::Relaxed) == 0));
    }
}
