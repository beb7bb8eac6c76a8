//! Reservations for an arena shared through `Arc`: the run keeps the arena
//! alive and is `'static`, like [`PageArena::alloc_owned`]'s block, so a
//! pool can store it next to its `Arc<PageArena>` or move it into a task.
//! Each is the borrowed form re-homed onto the `Arc`; nothing is reserved
//! differently.

use std::sync::Arc;
use std::time::Duration;

use super::{ContigError, ContigRun, Reason};
use crate::{PageArena, Pfn};

impl ContigRun<&PageArena> {
    /// The same run, keeping the arena alive through `arena` (the `Arc` of
    /// the arena it was reserved in).
    fn into_owned(mut self, arena: Arc<PageArena>) -> ContigRun<Arc<PageArena>> {
        debug_assert!(core::ptr::eq(self.arena, &*arena), "a run re-homed onto another arena");
        // The blocks move to the new run; `self` drops with none, releasing
        // nothing.
        let blocks = core::mem::take(&mut self.blocks);
        ContigRun { arena, start: self.start, pages: self.pages, blocks }
    }
}

impl PageArena {
    /// [`reserve_range`](Self::reserve_range) for an arena shared through
    /// `Arc`: the run keeps the arena alive and is `'static`.
    ///
    /// # Errors
    ///
    /// As for [`reserve_range`](Self::reserve_range).
    ///
    /// ```
    /// use std::sync::Arc;
    /// use pinowner::{ContigRun, PageArena, Reason};
    ///
    /// struct Pool {
    ///     arena: Arc<PageArena>,
    ///     frames: Option<ContigRun<Arc<PageArena>>>,
    /// }
    /// let arena = Arc::new(PageArena::builder().pages(64).movable_pages(32).build()?);
    /// let frames = arena.reserve_range_owned(32, 16, Reason::Shrink)?;
    /// let pool = Pool { arena: arena.clone(), frames: Some(frames) };
    /// let handle = std::thread::spawn(move || pool.frames.map(|f| f.pages()));
    /// assert_eq!(handle.join().unwrap(), Some(16));
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    #[track_caller]
    pub fn reserve_range_owned(
        self: &Arc<Self>,
        start: Pfn,
        pages: usize,
        reason: Reason,
    ) -> Result<ContigRun<Arc<PageArena>>, ContigError> {
        self.reserve_range(start, pages, reason).map(|run| run.into_owned(self.clone()))
    }

    /// [`reserve_contig`](Self::reserve_contig) for an arena shared through
    /// `Arc`.
    ///
    /// # Errors
    ///
    /// As for [`reserve_contig`](Self::reserve_contig).
    ///
    /// ```
    /// use std::sync::Arc;
    /// use pinowner::{PageArena, Reason};
    ///
    /// let arena = Arc::new(PageArena::builder().pages(64).movable_pages(32).build()?);
    /// let run = arena.reserve_contig_owned(16, 16, Reason::Contig)?;
    /// drop(arena); // the run keeps the arena alive
    /// assert_eq!(run.arena().pages(), 64);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    #[track_caller]
    pub fn reserve_contig_owned(
        self: &Arc<Self>,
        pages: usize,
        align: usize,
        reason: Reason,
    ) -> Result<ContigRun<Arc<PageArena>>, ContigError> {
        self.reserve_contig(pages, align, reason).map(|run| run.into_owned(self.clone()))
    }

    /// [`reserve_contig_wait`](Self::reserve_contig_wait) for an arena
    /// shared through `Arc`.
    ///
    /// # Errors
    ///
    /// As for [`reserve_contig_wait`](Self::reserve_contig_wait).
    #[track_caller]
    pub fn reserve_contig_wait_owned(
        self: &Arc<Self>,
        pages: usize,
        align: usize,
        reason: Reason,
        timeout: Duration,
    ) -> Result<ContigRun<Arc<PageArena>>, ContigError> {
        self.reserve_contig_wait(pages, align, reason, timeout).map(|run| run.into_owned(self.clone()))
    }

    /// [`reserve_range_wait`](Self::reserve_range_wait) for an arena shared
    /// through `Arc`.
    ///
    /// # Errors
    ///
    /// As for [`reserve_range_wait`](Self::reserve_range_wait).
    #[track_caller]
    pub fn reserve_range_wait_owned(
        self: &Arc<Self>,
        start: Pfn,
        pages: usize,
        reason: Reason,
        timeout: Duration,
    ) -> Result<ContigRun<Arc<PageArena>>, ContigError> {
        self.reserve_range_wait(start, pages, reason, timeout).map(|run| run.into_owned(self.clone()))
    }
}
