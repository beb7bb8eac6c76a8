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

/// The free lists of one zone.
#[derive(Debug)]
pub(crate) struct FreeArea {
    lists: Vec<Vec<u32>>,
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
    state::with_order(old & !(EXCLUSIVE | MOVABLE | PCP | state::CONTIG | state::TRACKED | state::IDLE), order)
        | HEAD
        | FREE
        | extra
}

impl FreeArea {
    pub(crate) fn new(max_order: u8, ext: Arc<PageExt>) -> FreeArea {
        FreeArea {
            lists: (0..=max_order).map(|_| Vec::new()).collect(),
            nonempty: 0,
            free_pages: 0,
            max_order,
            counts: ZoneCounts { allocs: [0; LISTS], frees: [0; LISTS], failures: [0; LISTS] },
            reported: [0; LISTS],
            reporting_pages: 0,
            ext,
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
        self.lists[order as usize].len()
    }

    /// The head page numbers of the free blocks of `order`.
    pub(crate) fn heads(&self, order: u8) -> &[u32] {
        &self.lists[order as usize]
    }

    #[inline]
    pub(crate) fn push(&mut self, descs: &[Descriptor], pfn: u32, order: u8) {
        let list = &mut self.lists[order as usize];
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
        debug_assert_eq!(self.lists[order as usize][idx], pfn, "free-list index out of sync");
        let reported = idx < self.reported[order as usize] as usize;
        if reported {
            idx = self.unreport(descs, pfn, order, idx);
        }
        let list = &mut self.lists[order as usize];
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
        let edge = self.reported[order as usize] as usize - 1;
        self.swap_entries(descs, order, idx, edge);
        self.reported[order as usize] -= 1;
        self.ext.clear(Mark::Reported, pfn, 1 << order);
        edge
    }

    /// Swaps list entries `i` and `j` of `order`, with their index slots.
    fn swap_entries(&mut self, descs: &[Descriptor], order: u8, i: usize, j: usize) {
        if i != j {
            let list = &mut self.lists[order as usize];
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
        let last = self.lists[order as usize].len() - 1;
        self.swap_entries(descs, order, self.reported[order as usize] as usize, last);
        self.reported[order as usize] += 1;
        self.ext.set(Mark::Reported, pfn, 1 << order);
    }

    /// Reported free blocks of `order` (at the front of its list).
    pub(crate) fn reported(&self, order: u8) -> usize {
        self.reported[order as usize] as usize
    }

    /// The reporter's pull: takes up to `max` unreported free blocks of
    /// `order` off the list into `out`, each head marked `FREE | PCP` (in
    /// flight: see the module docs), counted in
    /// [`reporting_pages`](Self::reporting_pages).
    pub(crate) fn pull_unreported(&mut self, descs: &[Descriptor], order: u8, max: usize, out: &mut Vec<u32>) {
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
            .is_some_and(|i| self.lists[order as usize].get(i as usize) == Some(&pfn))
    }

    /// Seeds the zone with the largest aligned blocks that fit `start..end`.
    ///
    /// # Errors
    ///
    /// The bytes asked for if the largest order's list cannot be allocated
    /// (the other lists get at most two blocks each).
    pub(crate) fn seed(&mut self, descs: &[Descriptor], start: u32, end: u32) -> Result<(), usize> {
        let top = ((end - start) >> self.max_order) as usize + 1;
        self.lists[self.max_order as usize].try_reserve_exact(top).map_err(|_| top * size_of::<u32>())?;
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
    #[inline]
    pub(crate) fn take(&mut self, descs: &[Descriptor], order: u8) -> Option<u32> {
        let above = self.nonempty >> order;
        if above == 0 {
            return None;
        }
        let mut o = order + above.trailing_zeros() as u8;
        let list = &mut self.lists[o as usize];
        let pfn = list.pop().expect("non-empty list");
        // Unreported blocks sit at the back: this one was reported only if
        // none was left.
        let reported = list.len() < self.reported[o as usize] as usize;
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
        self.reported[o as usize] -= 1;
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
    pub(crate) fn give_as(&mut self, descs: &[Descriptor], zone: &Zone, mut pfn: u32, mut order: u8, reported: bool) {
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
            if buddy < zone.start || buddy as u64 + (1u64 << order) > zone.end as u64 {
                break;
            }
            let b = descs[buddy as usize].state.load(Acquire);
            if b & (HEAD | FREE | PCP | state::ISOLATED) != HEAD | FREE || state::order(b) != order {
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
}
