//! Buddy free lists and the state transitions of free blocks.
//!
//! Everything here runs under the zone lock: the transitions are methods of
//! [`FreeArea`] taking `&mut self`, and the only `&mut FreeArea` is the zone
//! lock's guard.
//!
//! # Plain stores
//!
//! A transition here is a load and a plain store, not a read-modify-write:
//! under the lock, the word cannot change between the two. That rests on one
//! rule, which every writer of a state word keeps:
//!
//! > While a page is free (in a list, isolated, or in a thread cache), a
//! > tail of a free block, or a block head whose last count is gone but
//! > which is not yet freed, its word changes only under the zone lock, or
//! > by an operation that cannot run on the page while the zone-lock code
//! > below can.
//!
//! The writers, one by one:
//!
//! - reservations set and clear `ISOLATED` (`fetch_or`/`fetch_and`) under the
//!   zone lock (and the remote side of every cache of the zone);
//! - adds on a held block (`acquire_held`), the `IDLE` clear after one, and
//!   `BlockBytesMut`'s `EXCLUSIVE` clear run on a block the caller holds, never a
//!   free one;
//! - acquisitions by page number compare-and-swap from a *live* head word
//!   (counts, not free): never from a word this module writes, and they fail
//!   if the word moved;
//! - a release is made by a holder; the last one turns a live head into a
//!   count-zero head (freed here afterwards) or, for an order-0 page bound
//!   for a thread cache, into a cached free page: a compare-and-swap from a
//!   live word, which no code here writes;
//! - arming and disarming (the tracker) compare-and-swap from a *live* head
//!   word only, and eager arming sets `TRACKED` on a block its allocator
//!   holds; none writes a free word;
//! - allocating from a thread cache (a store, see [`super::pcp`]) runs on
//!   a page its owner just popped inside its cache. Code here writes a
//!   cached page only while draining (which holds the cache's remote side and
//!   finds the page in the cache, so it was not popped) and otherwise skips
//!   `PCP` pages: it never merges with, isolates or commits one.
//!
//! The stores are `Release`, as the compare-and-swaps they replace were.
//!
//! # The reported boundary
//!
//! Each list keeps its reported blocks (memory given back to the operating
//! system by [`crate::reporting`]) at its front, `reported[order]` of them,
//! and the others behind: the kernel's per-order reported boundary, so the
//! reporter only ever looks at blocks it has not reported, and allocation
//! (which pops from the back) takes a block still backed by memory first.
//! Moving a block across the boundary is a swap of two entries, O(1) like
//! the rest. The pages of the reported part carry the `REPORTED` mark
//! (`page::ext`), written here under the zone lock: set when the reporter
//! puts a block back, cleared when the block leaves the reported part
//! (allocated, cached, isolated, or merged with an unreported buddy).
//! While the reporter holds a block (between taking it off the list and
//! putting it back) the block reads `FREE | PCP` and is on no list, like a
//! block on its way into a thread cache: coalescing skips it and a
//! reservation waits for it.
//!
//! # Deferred coalescing
//!
//! The zone path (an allocation from the lists or a last release with no
//! thread cache on the way: `PageArena::alloc_buddy`, `free_block`) is a
//! lazy buddy: a block freed there whose buddy is
//! free is *not* merged with it at once ([`give_lazy`](FreeArea::give_lazy)).
//! It is listed at its own order, at the back of the list (where allocation
//! pops first), and its head is recorded in `deferred` (at most [`DEFER`]
//! records). The next allocation of that order takes it straight back: no
//! split on the way out and no merge on the way in, where an eager buddy
//! pays both, once per order between the block and the smallest free block
//! above it, on every alloc+free of a steady state.
//!
//! A deferred block is an ordinary listed free block (a free head of its
//! order, unreported, counted in `free_pages`), so a deferral changes no
//! state word's meaning and the rules above hold unchanged: `verify` finds
//! it where it expects it, a reservation isolates and carves it like any
//! listed block, `free_pages` counts it. What it changes is the shape of
//! the lists (two free buddies both listed), so the records are merged
//! ([`settle`](FreeArea::settle): each one still listed is taken off and
//! given back eagerly, the coalescing its free skipped) wherever the shape
//! matters:
//!
//! - before an allocation splits a larger block or fails (the list of its
//!   order is empty): merging may make a block of the order, and no split
//!   runs while a merge is owed;
//! - when the free page reporter pulls blocks (it reports blocks of its
//!   minimum order and up, which merging makes);
//! - in `frag_stats`, which shows the lists as an eager buddy leaves them;
//! - when the records are full, all of them: the work stays amortized O(1)
//!   a free, never more than the eager merges it replaces.
//!
//! A free next to a buddy in the reported part of its list is not deferred:
//! the merge clears the buddy's marks at once, as it always did.
//!
//! A record is a page number only, and may go stale (its block allocated,
//! merged by its buddy's free, isolated, pulled into a cache or by the
//! reporter): merging skips a record that is not a listed free head at the
//! order of its word.
//!
use std::sync::Arc;

use crate::page::ext::{Mark, PageExt};
use crate::page::slot;
use crate::page::state::{self, COUNTS, EXCLUSIVE, FREE, GEN_ONE, HEAD, MOVABLE, ORDER_MASK, PCP, REF_ONE};
use crate::page::Descriptor;
use crate::sync::Ordering::{Acquire, Relaxed, Release};

use super::pcp::LISTS;
use super::Zone;

// `FreeArea::nonempty` has a bit for every order.
const _: () = assert!((state::MAX_ORDER_LIMIT as u32) < u32::BITS);

/// The index of `order` in the per-order arrays: masked, so no bounds
/// check (every order is below `LISTS`, a power of two).
#[inline(always)]
const fn at(order: u8) -> usize {
    order as usize & (LISTS - 1)
}

/// The most blocks the zone path leaves unmerged (see the module docs):
/// a burst of frees merges at most this many at once.
pub(crate) const DEFER: usize = 32;

/// The free lists of one zone.
#[derive(Debug)]
pub(crate) struct FreeArea {
    /// Per order up to `max_order` (the rest stay empty): an array, so an
    /// order indexes it with no bounds check (see [`at`]).
    lists: [Vec<u32>; LISTS],
    /// Bit `o` is set when the list of order `o` is not empty.
    nonempty: u32,
    /// Pages in the buddy lists (not counting per-thread caches).
    pub(crate) free_pages: usize,
    pub(crate) max_order: u8,
    /// Allocations, frees and failures served by the lists, per order
    /// (plain adds under the zone lock).
    pub(crate) counts: ZoneCounts,
    /// Per order, how many blocks at the front of the list are reported
    /// (see the module docs).
    reported: [u32; LISTS],
    /// Pages the reporter has taken off the lists and not yet put back.
    pub(crate) reporting_pages: usize,
    /// The arena's side bitmaps, for the `REPORTED` mark. Shared with the
    /// arena (an `Arc` for ownership only: every access is an atomic of
    /// the bitmap).
    ext: Arc<PageExt>,
    /// Heads of blocks the zone path listed without merging them with a
    /// free buddy, oldest first; the first `deferred_len` count (see the
    /// module docs). Some may be stale.
    deferred: [u32; DEFER],
    deferred_len: usize,
    /// The zone's pages, as seeded (for merging without a `Zone`).
    start: u32,
    end: u32,
}

/// Per-order counters of a zone's lists (see [`FreeArea::counts`]).
#[derive(Clone, Copy, Debug)]
pub(crate) struct ZoneCounts {
    pub(crate) allocs: [u64; LISTS],
    pub(crate) frees: [u64; LISTS],
    pub(crate) failures: [u64; LISTS],
}

impl ZoneCounts {
    /// Counts a block of `order` allocated from the lists.
    #[inline(always)]
    pub(crate) fn alloc(&mut self, order: u8) {
        // Masked, so no bounds check: every order is below `LISTS`.
        self.allocs[order as usize & (LISTS - 1)] += 1;
    }

    /// Counts a block of `order` freed into the lists by its last holder.
    #[inline(always)]
    pub(crate) fn free(&mut self, order: u8) {
        self.frees[order as usize & (LISTS - 1)] += 1;
    }

    /// Counts an allocation of `order` that found no block.
    pub(crate) fn failure(&mut self, order: u8) {
        self.failures[order as usize & (LISTS - 1)] += 1;
    }
}

/// The word of a free block head of `order` made from `old`: keeps
/// isolation bits and the generation; drops the flags of the allocation
/// (`EXCLUSIVE`, `MOVABLE`, `CONTIG`), `PCP`, `TRACKED` (freeing disarms: a
/// free page has no holders left to track) and `IDLE` (so every allocation
/// starts accessed: see [`crate::idle`]); adds `extra`.
#[inline(always)]
pub(crate) const fn free_head_word(old: u64, order: u8, extra: u64) -> u64 {
    free_head_word_of(state::with_order(old, order), extra)
}

/// [`free_head_word`] of a word that already holds the block's order (a
/// head's word as its last release leaves it): the order is not inserted
/// again.
#[inline(always)]
pub(crate) const fn free_head_word_of(old: u64, extra: u64) -> u64 {
    old & !(EXCLUSIVE | MOVABLE | PCP | state::CONTIG | state::TRACKED | state::IDLE) | HEAD | FREE | extra
}

impl FreeArea {
    pub(crate) fn new(max_order: u8, ext: Arc<PageExt>) -> FreeArea {
        FreeArea {
            lists: core::array::from_fn(|_| Vec::new()),
            nonempty: 0,
            free_pages: 0,
            max_order,
            counts: ZoneCounts { allocs: [0; LISTS], frees: [0; LISTS], failures: [0; LISTS] },
            reported: [0; LISTS],
            reporting_pages: 0,
            ext,
            deferred: [0; DEFER],
            deferred_len: 0,
            start: 0,
            end: 0,
        }
    }

    /// Blocks left unmerged by the zone path, records not yet merged (some
    /// may be stale). For tests.
    #[cfg(all(test, not(loom)))]
    pub(crate) fn deferred(&self) -> usize {
        self.deferred_len
    }

    /// Merges the deferred blocks, if any: the lists as an eager buddy
    /// leaves them (see "Deferred coalescing" in the module docs).
    #[inline(always)]
    pub(crate) fn settle(&mut self, descs: &[Descriptor]) {
        if self.deferred_len != 0 {
            self.merge_deferred(descs);
        }
    }

    /// Merges every deferred block: each record still naming a listed free
    /// head is taken off its list and given back eagerly, coalescing as
    /// its free would have; stale records are dropped.
    #[cold]
    #[inline(never)]
    fn merge_deferred(&mut self, descs: &[Descriptor]) {
        let n = core::mem::take(&mut self.deferred_len);
        for i in 0..n {
            let pfn = self.deferred[i];
            let w = descs[pfn as usize].state.load(Relaxed);
            let order = state::order(w);
            if w & (HEAD | FREE | PCP | state::ISOLATED) != HEAD | FREE || !self.is_listed(descs, pfn, order) {
                continue;
            }
            let reported = self.remove(descs, pfn, order);
            self.coalesce(descs, pfn, order, reported);
        }
    }

    /// Rewrites a state word the rule in the module docs reserves for the
    /// zone lock holder: a load and a plain store.
    #[inline(always)]
    fn set(&mut self, d: &Descriptor, f: impl FnOnce(u64) -> u64) -> u64 {
        let new = f(d.state.load(Relaxed));
        d.state.store(new, Release);
        new
    }

    /// Marks `d` as the head of a free block of `order` (see
    /// [`free_head_word`]).
    #[inline]
    pub(crate) fn mark_free_head(&mut self, d: &Descriptor, order: u8, extra: u64) {
        self.set(d, |old| {
            debug_assert_eq!(old & COUNTS, 0, "freeing a page with counts");
            free_head_word(old, order, extra)
        });
    }

    /// Clears `ISOLATED` on a free page.
    pub(crate) fn clear_isolated(&mut self, d: &Descriptor) {
        self.set(d, |old| old & !state::ISOLATED);
    }

    /// Clears the head bits of a page that became a tail of a larger free block.
    #[inline]
    fn mark_tail(&mut self, d: &Descriptor) {
        self.set(d, |old| old & !(HEAD | FREE | PCP | ORDER_MASK | state::TRACKED | state::IDLE));
    }

    /// Turns a free block head taken off the lists (or isolated) into an
    /// allocated one of `order` with one reference and the given flags
    /// (`MOVABLE`, `CONTIG`); returns the new state word. Done under the
    /// lock: a free-looking head in no list would be "coalesced" by a
    /// concurrent free.
    #[inline]
    pub(crate) fn mark_allocated(&mut self, d: &Descriptor, order: u8, flags: u64) -> u64 {
        self.set(d, |old| {
            debug_assert_eq!(old & (HEAD | FREE | PCP), HEAD | FREE, "allocating a page that is not a free head");
            state::with_order(old & !(FREE | PCP), order).wrapping_add(REF_ONE + GEN_ONE) | flags
        })
    }

    /// Free blocks of `order`.
    pub(crate) fn count(&self, order: u8) -> usize {
        self.lists[at(order)].len()
    }

    /// The head page numbers of the free blocks of `order`.
    pub(crate) fn heads(&self, order: u8) -> &[u32] {
        &self.lists[at(order)]
    }

    #[inline]
    pub(crate) fn push(&mut self, descs: &[Descriptor], pfn: u32, order: u8) {
        let list = &mut self.lists[at(order)];
        descs[pfn as usize].owner.store(slot::encode_index(list.len() as u32), Relaxed);
        list.push(pfn);
        self.nonempty |= 1 << order;
        self.free_pages += 1 << order;
    }

    /// Takes a listed block off its list; returns whether it was reported
    /// (its marks go: see the module docs). Always inlined: coalescing
    /// calls it once per order merged.
    #[inline(always)]
    pub(crate) fn remove(&mut self, descs: &[Descriptor], pfn: u32, order: u8) -> bool {
        let mut idx = slot::decode_index(descs[pfn as usize].owner.load(Relaxed)) as usize;
        debug_assert_eq!(self.lists[at(order)][idx], pfn, "free-list index out of sync");
        let reported = idx < self.reported[at(order)] as usize;
        if reported {
            idx = self.unreport(descs, pfn, order, idx);
        }
        let list = &mut self.lists[at(order)];
        let last = list.pop().expect("free list is empty");
        if last != pfn {
            list[idx] = last;
            descs[last as usize].owner.store(slot::encode_index(idx as u32), Relaxed);
        }
        if list.is_empty() {
            self.nonempty &= !(1 << order);
        }
        self.free_pages -= 1 << order;
        reported
    }

    /// Moves the reported block `pfn` at index `idx` of its list to the
    /// edge of the reported part, shrinks the part past it and clears its
    /// marks; returns its new index.
    #[cold]
    #[inline(never)]
    fn unreport(&mut self, descs: &[Descriptor], pfn: u32, order: u8, idx: usize) -> usize {
        let edge = self.reported[at(order)] as usize - 1;
        self.swap_entries(descs, order, idx, edge);
        self.reported[at(order)] -= 1;
        self.ext.clear(Mark::Reported, pfn, 1 << order);
        edge
    }

    /// Swaps list entries `i` and `j` of `order`, with their index slots.
    fn swap_entries(&mut self, descs: &[Descriptor], order: u8, i: usize, j: usize) {
        if i != j {
            let list = &mut self.lists[at(order)];
            list.swap(i, j);
            descs[list[i] as usize].owner.store(slot::encode_index(i as u32), Relaxed);
            descs[list[j] as usize].owner.store(slot::encode_index(j as u32), Relaxed);
        }
    }

    /// Pushes a block the reporter gave back, at the end of the reported
    /// part of its list, and marks its pages.
    #[cold]
    #[inline(never)]
    pub(crate) fn push_reported(&mut self, descs: &[Descriptor], pfn: u32, order: u8) {
        self.push(descs, pfn, order);
        let last = self.lists[at(order)].len() - 1;
        self.swap_entries(descs, order, self.reported[at(order)] as usize, last);
        self.reported[at(order)] += 1;
        self.ext.set(Mark::Reported, pfn, 1 << order);
    }

    /// Reported free blocks of `order` (at the front of its list).
    pub(crate) fn reported(&self, order: u8) -> usize {
        self.reported[at(order)] as usize
    }

    /// The reporter's pull: takes up to `max` unreported free blocks of
    /// `order` off the list into `out`, each head marked `FREE | PCP` (in
    /// flight: see the module docs), counted in
    /// [`reporting_pages`](Self::reporting_pages). Deferred blocks are
    /// merged first.
    pub(crate) fn pull_unreported(&mut self, descs: &[Descriptor], order: u8, max: usize, out: &mut Vec<u32>) {
        // Merging makes the blocks of the reporter's orders.
        self.settle(descs);
        let o = order as usize;
        for _ in 0..max {
            let Some(&pfn) = self.lists[o].get(self.reported[o] as usize) else { break };
            debug_assert_eq!(descs[pfn as usize].state.load(Relaxed) & state::ISOLATED, 0, "a listed isolated block");
            self.remove(descs, pfn, order);
            self.mark_free_head(&descs[pfn as usize], order, PCP);
            self.reporting_pages += 1 << order;
            out.push(pfn);
        }
    }
    /// True if the free block headed by `pfn` of `order` is on its list
    /// (free blocks isolated by a reservation are not).
    pub(crate) fn is_listed(&self, descs: &[Descriptor], pfn: u32, order: u8) -> bool {
        slot::index_of(descs[pfn as usize].owner.load(Relaxed))
            .is_some_and(|i| self.lists[at(order)].get(i as usize) == Some(&pfn))
    }

    /// Seeds the zone with the largest aligned blocks that fit `start..end`.
    ///
    /// # Errors
    ///
    /// The bytes asked for if the largest order's list cannot be allocated
    /// (the other lists get at most two blocks each).
    pub(crate) fn seed(&mut self, descs: &[Descriptor], start: u32, end: u32) -> Result<(), usize> {
        (self.start, self.end) = (start, end);
        let top = ((end - start) >> self.max_order) as usize + 1;
        self.lists[at(self.max_order)].try_reserve_exact(top).map_err(|_| top * size_of::<u32>())?;
        let mut p = start;
        while p < end {
            let mut o = self.max_order.min(p.trailing_zeros().min(31) as u8);
            while p as u64 + (1u64 << o) > end as u64 {
                o -= 1;
            }
            self.mark_free_head(&descs[p as usize], o, 0);
            self.push(descs, p, o);
            p += 1 << o;
        }
        Ok(())
    }

    /// Takes a free block of exactly `order` off the lists, splitting a
    /// larger one if needed. The returned head still reads as free, possibly
    /// with the larger order it had: the caller marks it (allocated, or
    /// cached) before releasing the lock.
    ///
    /// Inline, the exact fit (a listed block of `order`: the one freed
    /// last, if the zone path deferred it, and then its record goes);
    /// everything else in [`take_split`](Self::take_split).
    #[inline]
    pub(crate) fn take(&mut self, descs: &[Descriptor], order: u8) -> Option<u32> {
        if (self.nonempty >> at(order)) & 1 == 0 {
            return self.take_split(descs, order);
        }
        let list = &mut self.lists[at(order)];
        let pfn = list.pop().expect("non-empty list");
        // Unreported blocks sit at the back: this one was reported only if
        // none was left.
        let reported = list.len() < self.reported[at(order)] as usize;
        if list.is_empty() {
            self.nonempty &= !(1 << at(order));
        }
        self.free_pages -= 1 << order;
        if let Some(last) = self.deferred_len.checked_sub(1) {
            // Masked: `deferred_len` is at most `DEFER`, a power of two.
            if self.deferred[last & (DEFER - 1)] == pfn {
                self.deferred_len = last;
            }
        }
        if reported {
            self.split_reported(descs, pfn, order, order);
        }
        Some(pfn)
    }

    /// [`take`](Self::take) with no block of `order` listed: deferred
    /// blocks are merged first (see the module docs: merging may make a
    /// block of `order`, and no split runs while a merge is owed), then a
    /// block of the smallest order listed is split down to `order`.
    #[cold]
    #[inline(never)]
    fn take_split(&mut self, descs: &[Descriptor], order: u8) -> Option<u32> {
        self.settle(descs);
        let above = self.nonempty >> at(order);
        if above == 0 {
            return None;
        }
        let mut o = order + above.trailing_zeros() as u8;
        let list = &mut self.lists[at(o)];
        let pfn = list.pop().expect("non-empty list");
        let reported = list.len() < self.reported[at(o)] as usize;
        if list.is_empty() {
            self.nonempty &= !(1 << o);
        }
        self.free_pages -= 1 << o;
        if reported {
            self.split_reported(descs, pfn, o, order);
            return Some(pfn);
        }
        while o > order {
            o -= 1;
            let buddy = pfn + (1 << o);
            self.mark_free_head(&descs[buddy as usize], o, 0);
            self.push(descs, buddy, o);
        }
        Some(pfn)
    }

    /// [`take`](Self::take) of a reported block of order `o`, off its list:
    /// the halves split off stay reported (still given back), the block
    /// taken loses its marks.
    #[cold]
    #[inline(never)]
    fn split_reported(&mut self, descs: &[Descriptor], pfn: u32, mut o: u8, order: u8) {
        self.reported[at(o)] -= 1;
        while o > order {
            o -= 1;
            let buddy = pfn + (1 << o);
            self.mark_free_head(&descs[buddy as usize], o, 0);
            self.push_reported(descs, buddy, o);
        }
        self.ext.clear(Mark::Reported, pfn, 1 << order);
    }

    /// Returns a block to the lists, coalescing with free buddies.
    #[inline]
    pub(crate) fn give(&mut self, descs: &[Descriptor], zone: &Zone, pfn: u32, order: u8) {
        self.give_as(descs, zone, pfn, order, false);
    }

    /// Returns a block to the lists, coalescing with free buddies; the
    /// merged block is reported if `reported` and every buddy it took in
    /// was (a merge with an unreported buddy clears the marks). Inlined, so
    /// [`give`](Self::give) pays nothing for the reported case.
    #[inline(always)]
    pub(crate) fn give_as(&mut self, descs: &[Descriptor], zone: &Zone, pfn: u32, order: u8, reported: bool) {
        debug_assert_eq!((zone.start, zone.end), (self.start, self.end), "a block given to another zone's lists");
        self.coalesce(descs, pfn, order, reported);
    }

    /// [`give_as`](Self::give_as), within the zone's seeded bounds.
    #[inline(always)]
    fn coalesce(&mut self, descs: &[Descriptor], mut pfn: u32, mut order: u8, reported: bool) {
        let mut reported = reported;
        if descs[pfn as usize].state.load(Acquire) & state::ISOLATED != 0 {
            // Inside a window a reservation isolated: the block stays out of
            // the lists (and un-merged) until the reservation commits or
            // rolls back.
            self.mark_free_head(&descs[pfn as usize], order, 0);
            return;
        }
        while order < self.max_order {
            let buddy = pfn ^ (1 << order);
            if !self.mergeable(descs, buddy, order) {
                break;
            }
            reported &= self.remove(descs, buddy, order);
            let (head, tail) = if buddy < pfn { (buddy, pfn) } else { (pfn, buddy) };
            self.mark_tail(&descs[tail as usize]);
            pfn = head;
            order += 1;
        }
        self.mark_free_head(&descs[pfn as usize], order, 0);
        if reported {
            self.push_reported(descs, pfn, order);
        } else {
            self.push(descs, pfn, order);
        }
    }

    /// Whether `buddy` heads a listed free block of `order` inside the
    /// zone, one a block of `order` next to it merges with.
    #[inline(always)]
    fn mergeable(&self, descs: &[Descriptor], buddy: u32, order: u8) -> bool {
        if buddy < self.start || buddy as u64 + (1u64 << order) > self.end as u64 {
            return false;
        }
        let b = descs[buddy as usize].state.load(Acquire);
        b & (HEAD | FREE | PCP | state::ISOLATED) == HEAD | FREE && state::order(b) == order
    }

    /// Whether the listed block `pfn` of `order` is in the reported part
    /// of its list.
    #[inline(always)]
    fn listed_reported(&self, descs: &[Descriptor], pfn: u32, order: u8) -> bool {
        let part = self.reported[at(order)];
        part != 0 && slot::decode_index(descs[pfn as usize].owner.load(Relaxed)) < part
    }

    /// The zone path's free (see "Deferred coalescing" in the module docs):
    /// a block whose buddy is free is listed at its own order and recorded,
    /// not merged. Inline: that, and a block whose buddy is not free (no
    /// merge to do: listed as it is); the rest in
    /// [`give_lazy_slow`](Self::give_lazy_slow).
    #[inline(always)]
    pub(crate) fn give_lazy(&mut self, descs: &[Descriptor], zone: &Zone, pfn: u32, order: u8) {
        debug_assert_eq!((zone.start, zone.end), (self.start, self.end), "a block given to another zone's lists");
        let d = &descs[pfn as usize];
        if order >= self.max_order || d.state.load(Acquire) & state::ISOLATED != 0 {
            return self.give_lazy_slow(descs, pfn, order);
        }
        if self.mergeable(descs, pfn ^ (1 << order), order) {
            if self.deferred_len == DEFER || self.reported[at(order)] != 0 {
                return self.give_lazy_slow(descs, pfn, order);
            }
            self.deferred[self.deferred_len & (DEFER - 1)] = pfn;
            self.deferred_len += 1;
        }
        self.mark_free_head(d, order, 0);
        self.push(descs, pfn, order);
    }

    /// [`give_lazy`](Self::give_lazy) off its inline path: a block of the
    /// largest order or inside an isolated window, full records (merged
    /// first), a list with a reported part (a buddy there is merged with
    /// at once: the merge clears its marks, as it always did).
    #[cold]
    #[inline(never)]
    fn give_lazy_slow(&mut self, descs: &[Descriptor], pfn: u32, order: u8) {
        let buddy = pfn ^ (1 << order);
        if order >= self.max_order
            || descs[pfn as usize].state.load(Acquire) & state::ISOLATED != 0
            || !self.mergeable(descs, buddy, order)
            || self.listed_reported(descs, buddy, order)
        {
            self.coalesce(descs, pfn, order, false);
            return;
        }
        if self.deferred_len == DEFER {
            self.merge_deferred(descs);
        }
        self.deferred[self.deferred_len] = pfn;
        self.deferred_len += 1;
        self.mark_free_head(&descs[pfn as usize], order, 0);
        self.push(descs, pfn, order);
    }
}

#[cfg(all(test, not(loom)))]
mod tests {
    use super::DEFER;
    use crate::PageArena;

    fn no_cache(pages: usize, max_order: u8) -> PageArena {
        PageArena::builder().pages(pages).max_order(max_order).without_thread_cache().build().unwrap()
    }

    #[test]
    fn a_free_beside_a_free_buddy_is_deferred_and_its_page_taken_back_unsplit() {
        let arena = no_cache(64, 6);
        let area = &arena.zones[0].area;
        let a = arena.alloc(0).unwrap();
        let b = arena.alloc(0).unwrap();
        assert_eq!(a.pfn() ^ b.pfn(), 1, "buddies");
        drop(a);
        assert_eq!(area.lock().deferred(), 0, "its buddy is held: nothing to merge, nothing recorded");
        let pb = b.pfn();
        drop(b);
        {
            let lists = area.lock();
            assert_eq!((lists.deferred(), lists.count(0)), (1, 2), "listed unmerged, recorded");
        }
        let again = arena.alloc(0).unwrap();
        assert_eq!(again.pfn(), pb, "the block freed last, unsplit");
        assert_eq!(area.lock().deferred(), 0, "its record went with it");
        drop(again);
        let mut lists = area.lock();
        assert_eq!(lists.deferred(), 1);
        lists.settle(&arena.descs);
        assert_eq!((lists.deferred(), lists.count(0), lists.count(6)), (0, 0, 1));
    }

    #[test]
    fn records_stay_within_their_bound_through_a_burst_of_frees() {
        let arena = no_cache(1024, 10);
        let area = &arena.zones[0].area;
        let mut blocks: Vec<_> = (0..1024).map(|_| arena.alloc(0).unwrap()).collect();
        blocks.sort_by_key(|b| b.pfn());
        let mut most = 0;
        for b in blocks {
            drop(b);
            most = most.max(area.lock().deferred());
        }
        // 512 frees found their buddy free: the records filled and were
        // merged over and over, never past the bound.
        assert_eq!(most, DEFER);
        let mut lists = area.lock();
        lists.settle(&arena.descs);
        assert_eq!(lists.count(10), 1);
        drop(lists);
        arena.verify().unwrap();
    }

    #[test]
    fn stale_records_are_skipped_when_merging() {
        let arena = no_cache(64, 6);
        let area = &arena.zones[0].area;
        let mut blocks: Vec<_> = (0..4).map(|_| arena.alloc(0).unwrap()).collect();
        blocks.sort_by_key(|b| b.pfn());
        let held = blocks.remove(3);
        let tail = blocks[1].pfn();
        drop(blocks); // pages 0..3 free: 1 deferred beside 0, 2 beside nothing
        {
            let mut lists = area.lock();
            assert_eq!(lists.deferred(), 1);
            // Records naming an allocated head and a page inside a free
            // block (as a block allocated, or merged by its buddy's free,
            // leaves them): skipped.
            let n = lists.deferred_len;
            lists.deferred[n] = held.pfn() as u32;
            lists.deferred[n + 1] = tail as u32;
            lists.deferred_len += 2;
            lists.settle(&arena.descs);
            assert_eq!((lists.deferred(), lists.count(0), lists.count(1)), (0, 1, 1), "pages 0..2 merged, 2 alone");
        }
        arena.verify().unwrap();
        drop(held);
        let mut lists = area.lock();
        lists.settle(&arena.descs);
        assert_eq!(lists.count(6), 1);
        drop(lists);
        arena.verify().unwrap();
    }
}
