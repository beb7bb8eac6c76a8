//! The committed run a successful reservation hands out.

use core::ops::Range;

use crate::handle::ArenaRef;
use crate::page::state::{self, CONTIG};
use crate::sync::Ordering::Relaxed;
use crate::Pfn;

/// A committed contiguous run of pages, owned: dropping it frees the run.
///
/// ```
/// use pinowner::{PageArena, PageFlags, Reason};
///
/// let arena = PageArena::builder().pages(64).movable_pages(32).build()?;
/// let run = arena.reserve_contig(16, 16, Reason::Contig)?;
/// assert_eq!((run.pages(), run.len(), run.pfn() % 16), (16, 16 * 4096, 0));
/// assert!(arena.page_state(run.pfn() + 5)?.flags.contains(PageFlags::CONTIG));
/// // SAFETY: the run is ours alone, and no handle to its pages exists.
/// unsafe { run.as_ptr().as_ptr().write_bytes(0xff, run.len()) };
/// drop(run);
/// assert_eq!(arena.free_pages(), 64, "dropping the run frees it");
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[must_use = "dropping a run frees it"]
#[derive(Debug)]
pub struct ContigRun<A: ArenaRef<Policy = crate::Exact>> {
    pub(super) arena: A,
    pub(super) start: u32,
    pub(super) pages: u32,
    /// The run's blocks: head, generation of our reference.
    pub(super) blocks: Vec<(u32, u16)>,
}

impl<A: ArenaRef<Policy = crate::Exact>> ContigRun<A> {
    /// The arena.
    pub fn arena(&self) -> &A {
        &self.arena
    }

    /// The first page.
    pub fn pfn(&self) -> Pfn {
        self.start as Pfn
    }

    /// Pages in the run.
    pub fn pages(&self) -> usize {
        self.pages as usize
    }

    /// The page range.
    pub fn range(&self) -> Range<Pfn> {
        self.start as Pfn..(self.start + self.pages) as Pfn
    }

    /// Bytes in the run.
    pub fn len(&self) -> usize {
        self.pages() << self.arena.page_shift
    }

    /// Always false.
    pub fn is_empty(&self) -> bool {
        false
    }

    /// A raw pointer to the run's first byte.
    pub fn as_ptr(&self) -> core::ptr::NonNull<u8> {
        let off = (self.start as usize) << self.arena.page_shift;
        self.arena.region.ptr(off, self.len()).cast()
    }
}

impl<A: ArenaRef<Policy = crate::Exact>> Drop for ContigRun<A> {
    fn drop(&mut self) {
        for &(head, gen) in &self.blocks {
            // The run ends here: a block someone else still holds (a page
            // lent out by reference) is an ordinary busy block from now on,
            // not part of a run that no longer exists. We hold a count, so
            // the block is live and this read-modify-write is ours to make.
            self.arena.desc(head).state.fetch_and(!CONTIG, Relaxed);
            self.arena.release(head, head, state::Count::Ref, Some(gen));
        }
    }
}
