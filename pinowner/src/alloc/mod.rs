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

pub(crate) use buddy::{free_head_word, free_head_word_of, FreeArea};
pub use frag::{FragStats, ZoneFrag};
pub use pcp::ThreadCache;
pub(crate) use pcp::{alloc_delta as pcp_alloc_delta, has_order, Lists, Pcp};

use crate::error::BuildError;
use crate::sync::Ordering::SeqCst;
use crate::sync::{AtomicUsize, Gauge, Mutex, SpinGuard, SpinMutex};

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
    pub(crate) area: AreaLock,
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
            area: AreaLock { area: SpinMutex::new(FreeArea::new(max_order, ext)), free: Gauge::default() },
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

    /// Free pages of the zone, in its buddy lists and its caches, as last
    /// published by their writers: no lock, no barrier, O(caches). Exact
    /// when no allocation, free or reservation of the zone is running.
    pub(crate) fn free_pages(&self) -> usize {
        self.area.free_pages() + self.pcp.as_ref().map_or(0, Pcp::pages)
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

/// A zone's buddy lists behind their lock (the zone lock), with their page
/// count published for readers that take no lock
/// ([`free_pages`](Self::free_pages)).
///
/// The lock is a spin lock taken patiently ([`SpinMutex::lock_patient`]):
/// one swap to lock and one store to unlock, where a parking mutex pays a
/// compare-and-swap for each (one read-modify-write less on each side of
/// the zone path: see BENCHMARKS.md, session 8); a waiter polls a few
/// times, then sleeps in growing steps, so the long holds (a reservation's
/// walk of its window, `verify`) cost it no CPU.
#[derive(Debug)]
pub(crate) struct AreaLock {
    area: SpinMutex<FreeArea>,
    /// `FreeArea::free_pages` as of the last unlock.
    free: Gauge,
}

impl AreaLock {
    /// Takes the zone lock. Every change to the lists happens under a guard
    /// from here, which publishes their page count when it unlocks.
    #[inline]
    pub(crate) fn lock(&self) -> AreaGuard<'_> {
        AreaGuard { guard: self.area.lock_patient(), free: &self.free }
    }

    /// Pages in the buddy lists (and in a batch the free page reporter
    /// holds off them) when the zone lock was last released (exact
    /// whenever nobody holds it).
    #[inline]
    pub(crate) fn free_pages(&self) -> usize {
        self.free.get()
    }

    /// Whether some thread holds the zone lock now (for tests).
    #[cfg(all(test, not(loom)))]
    pub(crate) fn is_locked(&self) -> bool {
        self.area.is_locked()
    }
}

/// The zone lock's guard: the lists while it lives; publishes their page
/// count, then unlocks, when dropped.
pub(crate) struct AreaGuard<'a> {
    guard: SpinGuard<'a, FreeArea>,
    free: &'a Gauge,
}

impl core::ops::Deref for AreaGuard<'_> {
    type Target = FreeArea;

    #[inline(always)]
    fn deref(&self) -> &FreeArea {
        &self.guard
    }
}

impl core::ops::DerefMut for AreaGuard<'_> {
    #[inline(always)]
    fn deref_mut(&mut self) -> &mut FreeArea {
        &mut self.guard
    }
}

impl Drop for AreaGuard<'_> {
    #[inline(always)]
    fn drop(&mut self) {
        // Still under the lock (the field unlocks after this): the stores
        // of successive holders are ordered by the lock, so the last one
        // published is the count the lists have now. Pages the free page
        // reporter holds off the lists for a batch are free too.
        self.free.set(self.guard.free_pages + self.guard.reporting_pages);
    }
}

#[cfg(all(test, not(loom)))]
mod tests {
    use std::sync::Arc;
    use std::time::Duration;

    use crate::{PageArena, ThreadCache};

    #[test]
    fn free_pages_is_read_without_the_zone_or_cache_locks() {
        let cache = ThreadCache { batch: 2, high: 4, ..ThreadCache::default() };
        let arena = Arc::new(
            PageArena::builder().pages(256).movable_pages(64).max_order(4).thread_cache(cache).build().unwrap(),
        );
        let held: Vec<_> = (0..9).map(|i| arena.alloc(i % 3).unwrap()).collect();
        drop(held.into_iter().step_by(2).collect::<Vec<_>>());
        let expected = arena.frag_stats().zones.iter().map(|z| z.free_pages + z.cached_pages).sum::<usize>();
        // Every lock a reservation holds: the caches' remote sides, then
        // the zone locks.
        let caches: Vec<_> = arena.zones.iter().map(|z| arena.lock_caches(z)).collect();
        let areas: Vec<_> = arena.zones.iter().map(|z| z.area.lock()).collect();
        assert!(arena.zones.iter().all(|z| z.area.is_locked()));
        let (tx, rx) = std::sync::mpsc::channel();
        let reader = Arc::clone(&arena);
        std::thread::spawn(move || tx.send(reader.free_pages()).unwrap());
        // A bound on a wait that must not happen at all, not a speed check:
        // a `free_pages` that takes either lock never returns here.
        let got = rx.recv_timeout(Duration::from_secs(60)).expect("free_pages() waited for a lock");
        assert_eq!(got, expected);
        drop((areas, caches));
    }
}
