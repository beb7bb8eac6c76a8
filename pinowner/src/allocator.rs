//! The arena as an [`allocator_api2::alloc::Allocator`] (feature
//! `allocator-api2`), so allocator-aware collections
//! (`allocator_api2::vec::Vec`, `hashbrown::HashMap` with its
//! `allocator-api2` feature, bumpalo's) keep their memory in arena pages:
//! a buffer pool's page table next to its frames, counted and reported by
//! the same arena.
//!
//! It is page-granular: a request of `size` bytes gets a block of the
//! smallest order whose `page_size << order` bytes hold it (the returned
//! slice says the whole block is usable, so a `Vec` grows into it for
//! free). An alignment above the page size raises the order until the block
//! is that aligned. Refused with [`AllocError`]:
//!
//! - a size or an alignment above the largest block (`page_size <<
//!   max_order`);
//! - an alignment above the alignment of the arena's base address (blocks
//!   are aligned relative to it: at least the page size, 2 MiB on a
//!   hugepage arena);
//! - no free block of the order in the normal zone (the allocator uses
//!   [`PageArena::alloc`], never the movable zone).
//!
//! Each block is held as a raw reference (as [`Block::into_raw`] leaves it),
//! so [`PageArena::audit`] and [`PageArena::stats`] show it like any other.
//! `grow` and `shrink` keep the block when the order does not change, and
//! otherwise move to a block of the new order. Zero-sized requests get a
//! dangling, aligned pointer and no page.
//!
//! ```
//! use allocator_api2::vec::Vec;
//! use pinowner::PageArena;
//!
//! let arena = PageArena::builder().pages(64).build()?;
//! let mut v: Vec<u64, _> = Vec::new_in(&arena);
//! v.extend(0..1000); // 8000 bytes: an order-1 block of 4 KiB pages
//! assert_eq!(arena.free_pages(), 62);
//! drop(v);
//! assert_eq!(arena.free_pages(), 64);
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
//!
//! [`Block::into_raw`]: crate::Block::into_raw

use core::alloc::Layout;
use core::ptr::NonNull;
use std::sync::Arc;

use allocator_api2::alloc::{AllocError, Allocator};

use crate::PageArena;

impl PageArena {
    /// The order of the block that serves `layout`, if any can.
    fn order_for(&self, layout: Layout) -> Option<u8> {
        let align_ok = 1usize << self.as_ptr().as_ptr().addr().trailing_zeros().min(usize::BITS - 1);
        if layout.align() > align_ok {
            return None;
        }
        let need = layout.size().max(layout.align()).max(1);
        let pages = need.div_ceil(self.page_size());
        let order = pages.checked_next_power_of_two()?.trailing_zeros();
        (order <= u32::from(self.max_order)).then_some(order as u8)
    }

    /// Bytes in a block of `order`.
    fn block_bytes(&self, order: u8) -> usize {
        self.page_size() << order
    }

    fn api_alloc(&self, layout: Layout, zeroed: bool) -> Result<NonNull<[u8]>, AllocError> {
        if layout.size() == 0 {
            return Ok(dangling(layout));
        }
        let order = self.order_for(layout).ok_or(AllocError)?;
        let block = if zeroed { self.alloc_zeroed(order) } else { self.alloc(order) }.map_err(|_| AllocError)?;
        let ptr = block.as_ptr();
        block.into_raw();
        Ok(NonNull::slice_from_raw_parts(ptr, self.block_bytes(order)))
    }

    /// # Safety
    ///
    /// `ptr` came from [`api_alloc`](Self::api_alloc) of this arena with a
    /// non-zero size, and was not freed since.
    unsafe fn api_free(&self, ptr: NonNull<u8>, layout: Layout) {
        if layout.size() == 0 {
            return;
        }
        let pfn = self.ptr_to_pfn(ptr.as_ptr()).expect("a pointer this arena's allocator handed out");
        // The raw reference `api_alloc` kept: refused only for a pointer
        // the caller did not get from us (their contract says they did).
        let released = self.put_raw(pfn);
        debug_assert!(released.is_ok(), "{released:?}");
    }

    /// Moves an allocation to a block for `new` (same block if the order is
    /// the same), keeping `min(old, new)` bytes.
    ///
    /// # Safety
    ///
    /// As for [`Allocator::grow`] / [`Allocator::shrink`].
    unsafe fn api_realloc(
        &self,
        ptr: NonNull<u8>,
        old: Layout,
        new: Layout,
        zeroed: bool,
    ) -> Result<NonNull<[u8]>, AllocError> {
        if old.size() != 0 && new.size() != 0 {
            let order = self.order_for(new).ok_or(AllocError)?;
            let same = self.order_for(old) == Some(order);
            if same && (ptr.as_ptr().addr() & (new.align() - 1)) == 0 {
                // In place. The block's size does not change, so nothing past
                // the memory block we returned before needs zeroing for
                // `grow_zeroed` (bytes between the old layout's size and the
                // block's may be kept, the trait says).
                return Ok(NonNull::slice_from_raw_parts(ptr, self.block_bytes(order)));
            }
        }
        let to = self.api_alloc(new, zeroed)?;
        let keep = old.size().min(new.size());
        // SAFETY: both blocks are at least `keep` bytes and distinct (the old
        // one is still held); the caller owns the old one's bytes.
        unsafe { core::ptr::copy_nonoverlapping(ptr.as_ptr(), to.cast::<u8>().as_ptr(), keep) };
        // SAFETY: `ptr` with `old` came from us (the caller's contract).
        unsafe { self.api_free(ptr, old) };
        Ok(to)
    }
}

/// A zero-sized allocation: a dangling pointer aligned to `layout`.
fn dangling(layout: Layout) -> NonNull<[u8]> {
    // A non-zero power of two: never null.
    let p = NonNull::new(core::ptr::without_provenance_mut::<u8>(layout.align())).expect("alignment is non-zero");
    NonNull::slice_from_raw_parts(p, 0)
}

// Blocks are arena pages, valid until deallocated (they are held by a raw
// reference until then) or the arena is dropped, which a borrow
// (`&PageArena`, through allocator-api2's impl for references) or the
// collection owning the allocator orders after the frees; moving a
// `PageArena` does not move its region.
// SAFETY: so each block stays valid while allocated and is handed out once.
unsafe impl Allocator for PageArena {
    fn allocate(&self, layout: Layout) -> Result<NonNull<[u8]>, AllocError> {
        self.api_alloc(layout, false)
    }

    fn allocate_zeroed(&self, layout: Layout) -> Result<NonNull<[u8]>, AllocError> {
        self.api_alloc(layout, true)
    }

    unsafe fn deallocate(&self, ptr: NonNull<u8>, layout: Layout) {
        // SAFETY: the caller's contract: `ptr` is a live allocation of ours.
        unsafe { self.api_free(ptr, layout) }
    }

    unsafe fn grow(&self, ptr: NonNull<u8>, old: Layout, new: Layout) -> Result<NonNull<[u8]>, AllocError> {
        // SAFETY: the caller's contract, passed on.
        unsafe { self.api_realloc(ptr, old, new, false) }
    }

    unsafe fn grow_zeroed(&self, ptr: NonNull<u8>, old: Layout, new: Layout) -> Result<NonNull<[u8]>, AllocError> {
        // SAFETY: the caller's contract, passed on.
        unsafe { self.api_realloc(ptr, old, new, true) }
    }

    unsafe fn shrink(&self, ptr: NonNull<u8>, old: Layout, new: Layout) -> Result<NonNull<[u8]>, AllocError> {
        // SAFETY: the caller's contract, passed on.
        unsafe { self.api_realloc(ptr, old, new, false) }
    }
}

/// An [`Allocator`] over an arena shared through `Arc`: collections that
/// use it are `'static` and keep the arena alive, like
/// [`PageArena::alloc_owned`]'s blocks. Cloning it clones the `Arc`.
///
/// ```
/// use std::sync::Arc;
/// use pinowner::{allocator::ArenaAllocator, PageArena};
///
/// let arena = Arc::new(PageArena::builder().pages(64).build()?);
/// let mut v = allocator_api2::vec::Vec::new_in(ArenaAllocator::new(arena.clone()));
/// v.push(1u8);
/// let t = std::thread::spawn(move || v.len());
/// assert_eq!(t.join().unwrap(), 1);
/// assert_eq!(arena.free_pages(), 64);
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Clone, Debug)]
pub struct ArenaAllocator(Arc<PageArena>);

impl ArenaAllocator {
    /// An allocator over `arena`.
    pub fn new(arena: Arc<PageArena>) -> Self {
        ArenaAllocator(arena)
    }

    /// The arena.
    pub fn arena(&self) -> &Arc<PageArena> {
        &self.0
    }
}

// Every clone reaches the same arena, which the `Arc` keeps alive while any
// clone (and so any collection using one) lives.
// SAFETY: so the arena's own impl's promises hold for every clone.
unsafe impl Allocator for ArenaAllocator {
    fn allocate(&self, layout: Layout) -> Result<NonNull<[u8]>, AllocError> {
        self.0.api_alloc(layout, false)
    }

    fn allocate_zeroed(&self, layout: Layout) -> Result<NonNull<[u8]>, AllocError> {
        self.0.api_alloc(layout, true)
    }

    unsafe fn deallocate(&self, ptr: NonNull<u8>, layout: Layout) {
        // SAFETY: the caller's contract: `ptr` is a live allocation of ours.
        unsafe { self.0.api_free(ptr, layout) }
    }

    unsafe fn grow(&self, ptr: NonNull<u8>, old: Layout, new: Layout) -> Result<NonNull<[u8]>, AllocError> {
        // SAFETY: the caller's contract, passed on.
        unsafe { self.0.api_realloc(ptr, old, new, false) }
    }

    unsafe fn grow_zeroed(&self, ptr: NonNull<u8>, old: Layout, new: Layout) -> Result<NonNull<[u8]>, AllocError> {
        // SAFETY: the caller's contract, passed on.
        unsafe { self.0.api_realloc(ptr, old, new, true) }
    }

    unsafe fn shrink(&self, ptr: NonNull<u8>, old: Layout, new: Layout) -> Result<NonNull<[u8]>, AllocError> {
        // SAFETY: the caller's contract, passed on.
        unsafe { self.0.api_realloc(ptr, old, new, false) }
    }
}
