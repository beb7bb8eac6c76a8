//! The page allocator: zones, buddy free lists per order, per-thread caches
//! of free blocks, and fragmentation statistics.
//!
//! Each zone keeps its free blocks in one list per order, under one lock.
//! Blocks are naturally aligned in page-number space, so a block's buddy is
//! `pfn ^ (1 << order)`. A list is a `Vec` of head page numbers; the head's
//! owner slot (unused while the block is free) holds the block's index in
//! its list, so removing a buddy during coalescing is O(1) without a second
//! per-page table.

mod buddy;
mod frag;
mod pcp;

pub(crate) use buddy::{free_head_word, FreeArea};
pub use frag::{FragStats, ZoneFrag};
pub use pcp::ThreadCache;
pub(crate) use pcp::{alloc_delta as pcp_alloc_delta, Lists, Pcp};

use crate::error::BuildError;
use crate::sync::Ordering::SeqCst;
use crate::sync::{AtomicUsize, Mutex};

/// The zone a page belongs to.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
#[cfg_attr(feature = "serde", serde(rename_all = "snake_case"))]
pub enum ZoneKind {
    /// Ordinary allocations, movable or not.
    Normal,
    /// The contiguous-capable zone (the kernel's ZONE_MOVABLE / CMA): only
    /// movable allocations and contiguous reservations come from it.
    Movable,
}

impl core::fmt::Display for ZoneKind {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.write_str(match self {
            ZoneKind::Normal => "normal",
            ZoneKind::Movable => "movable",
        })
    }
}

/// One zone: a range of page numbers with its own buddy lists and caches.
#[derive(Debug)]
pub(crate) struct Zone {
    pub(crate) kind: ZoneKind,
    pub(crate) start: u32,
    pub(crate) end: u32,
    pub(crate) area: Mutex<FreeArea>,
    pub(crate) pcp: Option<Pcp>,
    /// Held by a reservation of a window of this zone from its first
    /// isolation to its commit or rollback: one reservation per zone at a
    /// time (the kernel's `cma_mutex`). A reservation's window stays
    /// isolated while it releases the zone lock to let a block in flight
    /// land; no other reservation may carve, commit or roll back pages of
    /// the zone meanwhile.
    pub(crate) reserving: Mutex<()>,
    /// Reservations waiting for blocks of this zone to be freed
    /// (`reserve_*_wait`): while any does, a block freed here wakes them.
    pub(crate) waiters: AtomicUsize,
    /// Held by the reporter for each batch, from taking its blocks off the
    /// lists to putting them back: a reservation that meets a block in
    /// flight waits on it (see [`crate::reporting`]).
    pub(crate) report_batch: Mutex<()>,
}

impl Zone {
    /// The zone of pages `start..end`, with caches if `cache` is set (its
    /// settings already validated).
    ///
    /// # Errors
    ///
    /// [`BuildError::Alloc`] if the caches' memory cannot be allocated.
    pub(crate) fn new(
        kind: ZoneKind,
        start: u32,
        end: u32,
        max_order: u8,
        cache: Option<ThreadCache>,
        ext: std::sync::Arc<crate::page::ext::PageExt>,
    ) -> Result<Zone, BuildError> {
        let pcp = cache.map(|c| Pcp::new(c, max_order, end - start)).transpose()?;
        Ok(Zone {
            kind,
            start,
            end,
            area: Mutex::new(FreeArea::new(max_order, ext)),
            report_batch: Mutex::new(()),
            pcp,
            reserving: Mutex::new(()),
            waiters: AtomicUsize::new(0),
        })
    }

    pub(crate) fn pages(&self) -> u32 {
        self.end - self.start
    }

    pub(crate) fn contains(&self, pfn: u32) -> bool {
        (self.start..self.end).contains(&pfn)
    }

    /// Counts the caller as a waiter until the guard drops.
    pub(crate) fn wait(&self) -> Waiting<'_> {
        // SeqCst, with the freeing side's load: either the waiter's next
        // attempt sees the freed block, or the freer sees the waiter.
        self.waiters.fetch_add(1, SeqCst);
        Waiting(self)
    }
}

/// A waiting reservation, counted in its zone while it lives.
pub(crate) struct Waiting<'a>(&'a Zone);

impl Drop for Waiting<'_> {
    fn drop(&mut self) {
        self.0.waiters.fetch_sub(1, SeqCst);
    }
}
