//! Buddy free lists and the state transitions of free blocks.
//!
//! Everything here runs under the zone lock. Free blocks have no counts and
//! nobody can take one (gets refuse free pages), but other threads may flip
//! flag bits (tracking, idle) at any time, so every state change is a
//! read-modify-write that keeps the bits it does not own.

use crate::page::slot;
use crate::page::state::{self, COUNTS, EXCLUSIVE, FREE, GEN_ONE, HEAD, MOVABLE, ORDER_MASK, PCP, REF_ONE};
use crate::page::Descriptor;
use crate::sync::Ordering::{Acquire, Relaxed, Release};

use super::Zone;

/// The free lists of one zone.
#[derive(Debug)]
pub(crate) struct FreeArea {
    lists: Vec<Vec<u32>>,
    /// Pages in the buddy lists (not counting per-thread caches).
    pub(crate) free_pages: usize,
    pub(crate) max_order: u8,
}

/// Applies `f` to a descriptor's state word atomically; returns the new word.
#[inline]
pub(crate) fn update(d: &Descriptor, f: impl Fn(u64) -> u64) -> u64 {
    let mut old = d.state.load(Relaxed);
    loop {
        let new = f(old);
        match d.state.compare_exchange_weak(old, new, Release, Relaxed) {
            Ok(_) => return new,
            Err(cur) => old = cur,
        }
    }
}

/// Marks `pfn` as the head of a free block of `order` (keeping isolation,
/// tracking and idle bits, and the generation).
pub(crate) fn mark_free_head(d: &Descriptor, order: u8, extra: u64) {
    update(d, |old| {
        debug_assert_eq!(old & COUNTS, 0, "freeing a page with counts");
        // Freeing disarms: a free page has no holders left to track.
        state::with_order(old & !(EXCLUSIVE | MOVABLE | PCP | state::CONTIG | state::TRACKED), order)
            | HEAD
            | FREE
            | extra
    });
}

/// Clears the head bits of a page that became a tail of a larger free block.
fn mark_tail(d: &Descriptor) {
    update(d, |old| old & !(HEAD | FREE | PCP | ORDER_MASK | state::TRACKED));
}

/// Turns a free block head into an allocated one with one reference and the
/// given flags (`MOVABLE`, `CONTIG`); returns the new state word.
pub(crate) fn mark_allocated(d: &Descriptor, order: u8, flags: u64) -> u64 {
    update(d, |old| {
        debug_assert_eq!(old & (HEAD | FREE), HEAD | FREE, "allocating a page that is not a free head");
        state::with_order(old & !(FREE | PCP), order).wrapping_add(REF_ONE + GEN_ONE) | flags
    })
}

impl FreeArea {
    pub(crate) fn new(max_order: u8) -> FreeArea {
        FreeArea { lists: (0..=max_order).map(|_| Vec::new()).collect(), free_pages: 0, max_order }
    }

    /// Free blocks of `order`.
    pub(crate) fn count(&self, order: u8) -> usize {
        self.lists[order as usize].len()
    }

    /// The head page numbers of the free blocks of `order`.
    pub(crate) fn heads(&self, order: u8) -> &[u32] {
        &self.lists[order as usize]
    }

    pub(crate) fn push(&mut self, descs: &[Descriptor], pfn: u32, order: u8) {
        let list = &mut self.lists[order as usize];
        descs[pfn as usize].owner.store(slot::encode_index(list.len() as u32), Relaxed);
        list.push(pfn);
        self.free_pages += 1 << order;
    }

    pub(crate) fn remove(&mut self, descs: &[Descriptor], pfn: u32, order: u8) {
        let idx = slot::decode_index(descs[pfn as usize].owner.load(Relaxed)) as usize;
        let list = &mut self.lists[order as usize];
        debug_assert_eq!(list[idx], pfn, "free-list index out of sync");
        let last = list.pop().expect("free list is empty");
        if last != pfn {
            list[idx] = last;
            descs[last as usize].owner.store(slot::encode_index(idx as u32), Relaxed);
        }
        self.free_pages -= 1 << order;
    }

    /// True if the free block headed by `pfn` of `order` is on its list
    /// (free blocks isolated by a reservation are not).
    pub(crate) fn is_listed(&self, descs: &[Descriptor], pfn: u32, order: u8) -> bool {
        slot::index_of(descs[pfn as usize].owner.load(Relaxed))
            .is_some_and(|i| self.lists[order as usize].get(i as usize) == Some(&pfn))
    }

    /// Seeds the zone with the largest aligned blocks that fit `start..end`.
    pub(crate) fn seed(&mut self, descs: &[Descriptor], start: u32, end: u32) {
        let mut p = start;
        while p < end {
            let mut o = self.max_order.min(p.trailing_zeros().min(31) as u8);
            while p as u64 + (1u64 << o) > end as u64 {
                o -= 1;
            }
            mark_free_head(&descs[p as usize], o, 0);
            self.push(descs, p, o);
            p += 1 << o;
        }
    }

    /// Takes a free block of exactly `order`, splitting a larger one if
    /// needed. The returned block's head is still marked free; the caller
    /// turns it into what it needs.
    pub(crate) fn take(&mut self, descs: &[Descriptor], order: u8) -> Option<u32> {
        let mut o = (order..=self.max_order).find(|&o| !self.lists[o as usize].is_empty())?;
        let pfn = self.lists[o as usize].pop().expect("non-empty list");
        self.free_pages -= 1 << o;
        while o > order {
            o -= 1;
            let buddy = pfn + (1 << o);
            mark_free_head(&descs[buddy as usize], o, 0);
            self.push(descs, buddy, o);
        }
        update(&descs[pfn as usize], |old| state::with_order(old, order));
        Some(pfn)
    }

    /// Returns a block to the lists, coalescing with free buddies.
    pub(crate) fn give(&mut self, descs: &[Descriptor], zone: &Zone, mut pfn: u32, mut order: u8) {
        if descs[pfn as usize].state.load(Acquire) & state::ISOLATED != 0 {
            // Inside a window a reservation isolated: the block stays out of
            // the lists (and un-merged) until the reservation commits or
            // rolls back.
            mark_free_head(&descs[pfn as usize], order, 0);
            return;
        }
        while order < self.max_order {
            let buddy = pfn ^ (1 << order);
            if !zone.contains(buddy) || (buddy as u64 + (1u64 << order)) > zone.end as u64 {
                break;
            }
            let b = descs[buddy as usize].state.load(Acquire);
            if b & (HEAD | FREE | PCP | state::ISOLATED) != HEAD | FREE || state::order(b) != order {
                break;
            }
            self.remove(descs, buddy, order);
            let (head, tail) = if buddy < pfn { (buddy, pfn) } else { (pfn, buddy) };
            mark_tail(&descs[tail as usize]);
            pfn = head;
            order += 1;
        }
        mark_free_head(&descs[pfn as usize], order, 0);
        self.push(descs, pfn, order);
    }
}
