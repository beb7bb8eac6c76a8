//! Compaction (kcompactd's job): movable blocks move out of aligned windows
//! so those windows become high-order free blocks.

use core::ops::Range;
use std::time::Instant;

use crate::alloc::ZoneKind;
use crate::page::slot::Who;
use crate::reservation::{ContigError, Reason, Request};
use crate::{PageArena, Pfn};

/// What a compaction did.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Compaction {
    /// The order compacted for (windows of `2^order` pages).
    pub order: u8,
    /// Aligned windows looked at.
    pub windows: usize,
    /// Windows that were already free.
    pub already_free: usize,
    /// Windows made free by moving their blocks out, each counted when it
    /// was made free: a later window's blocks may have moved into it since,
    /// so [`free_after`](Self::free_after) is the net result.
    pub freed: usize,
    /// Windows left alone: something in them cannot move (a pin, a block
    /// that keeps its address, a run).
    pub skipped: usize,
    /// Windows tried whose blocks did not all move (a borrow, a refusal,
    /// no free block elsewhere); what did move stays moved.
    pub failed: usize,
    /// Blocks moved.
    pub blocks_moved: u64,
    /// Pages moved.
    pub pages_moved: u64,
    /// Free blocks of `order` (or larger, counted in `order` units) in the
    /// range's zone before and after.
    pub free_before: usize,
    /// See [`free_before`](Self::free_before).
    pub free_after: usize,
}

impl PageArena {
    /// Compacts a zone for blocks of `order`: see
    /// [`compact_range`](Self::compact_range).
    ///
    /// ```
    /// use pinowner::{PageArena, ZoneKind};
    ///
    /// let arena = PageArena::builder().pages(128).movable_pages(64).build()?;
    /// // Every fourth page held, by movable blocks: no free order-2 block.
    /// let all: Vec<_> = (0..64).map(|_| arena.alloc_movable(0)).collect::<Result<_, _>>()?;
    /// let held: Vec<_> = all.into_iter().enumerate().filter(|(i, _)| i % 4 == 0).map(|(_, b)| b).collect();
    /// let c = arena.compact(ZoneKind::Movable, 2);
    /// assert!(c.freed > 0 && c.free_after > c.free_before, "{c:?}");
    /// # drop(held);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    #[track_caller]
    pub fn compact(&self, zone: ZoneKind, order: u8) -> Compaction {
        let z = self.zone(zone);
        self.compact_range(z.start as Pfn..z.end as Pfn, order)
    }

    /// Compacts `range` for blocks of `order`: each aligned window of
    /// `2^order` pages in it, from the lowest, whose busy blocks are all
    /// movable is cleared the way a reservation clears one (isolated, its
    /// blocks moved to free blocks elsewhere — the smallest free block
    /// that fits, so holes fill first — then let go as one free block).
    /// Windows with anything unmovable are skipped. Runs one window at a
    /// time under the zone's reservation lock, so it never races a
    /// reservation of the zone.
    #[track_caller]
    pub fn compact_range(&self, range: Range<Pfn>, order: u8) -> Compaction {
        let who = crate::owner_here();
        let order = order.min(self.max_order);
        let size = 1usize << order;
        let zone = self.zone_for(range.start.min(self.pages().saturating_sub(1)) as u32);
        let end = range.end.min(zone.end as Pfn);
        // A start past the last aligned window (up to `usize::MAX`) has no
        // window: rounding it up must not overflow.
        let start = range.start.max(zone.start as Pfn).checked_next_multiple_of(size).unwrap_or(end);
        let mut c = Compaction {
            order,
            windows: 0,
            already_free: 0,
            freed: 0,
            skipped: 0,
            failed: 0,
            blocks_moved: 0,
            pages_moved: 0,
            free_before: self.free_blocks_of(zone.kind, order),
            free_after: 0,
        };
        let (blocks0, pages0) = super::moved_here();
        let mut w = start;
        while w + size <= end {
            c.windows += 1;
            let load = self.window_load(w as u32, (w + size) as u32);
            if load.busy == 0 {
                c.already_free += 1;
            } else if load.unmovable > 0 || load.run.is_some() {
                c.skipped += 1;
            } else {
                match self.compact_window(zone, w, size, who) {
                    Ok(()) => c.freed += 1,
                    Err(_) => c.failed += 1,
                }
            }
            w += size;
        }
        let (blocks1, pages1) = super::moved_here();
        c.blocks_moved = blocks1 - blocks0;
        c.pages_moved = pages1 - pages0;
        c.free_after = self.free_blocks_of(zone.kind, order);
        tracing::debug!(target: "pinowner", ?c, "compaction");
        c
    }

    fn compact_window(&self, zone: &crate::alloc::Zone, w: Pfn, size: usize, who: Who) -> Result<(), ContigError> {
        let _serial = Self::reserving(zone, None)?;
        let request = Request { reason: Reason::Compaction, pages: size, align: size, start: Some(w) };
        // No deadline: a block being freed is waited for, as a
        // reservation waits.
        let deadline: Option<Instant> = None;
        self.clear_window(zone, w as u32, size as u32, request, 1, who, deadline, false).map(|_| ())
    }

    /// Free blocks of at least `order` in a zone, in `order` units.
    fn free_blocks_of(&self, zone: ZoneKind, order: u8) -> usize {
        let stats = self.frag_stats();
        stats.zone(zone).map_or(0, |z| {
            z.free_blocks.iter().enumerate().skip(order as usize).map(|(o, n)| n << (o - order as usize)).sum()
        })
    }
}
