//! Long-term pins (the kernel's `FOLL_LONGTERM`: moved out of the movable
//! zone first) and range pins (memory registration: all or nothing).

use core::ops::Range;

use super::{Dest, Unmovable};
use crate::error::AcquireError;
use crate::handle::{ArenaRef, PagePin};
use crate::page::state::{self, Count};
use crate::reservation::Reason;
use crate::{PageArena, Pfn, ZoneKind};

/// Why a long-term pin was not taken.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum LongtermPinError {
    /// The page could not be pinned at all.
    #[error(transparent)]
    Acquire(#[from] AcquireError),
    /// The page is in the movable zone and its block could not be moved
    /// out of it (a long-term pin never stays in the movable zone).
    #[error("page {pfn:#x} is in the movable zone and its block cannot move to the normal zone: {why}")]
    Unmovable {
        /// The page asked for.
        pfn: Pfn,
        /// Why its block stays.
        why: Unmovable,
    },
}

/// Why a range pin was not taken: the first page that could not be pinned.
/// Nothing of the range is pinned.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("page {pfn:#x} of the range cannot be pinned: {error}")]
pub struct RangePinError {
    /// The first page that could not be pinned.
    pub pfn: Pfn,
    /// Why.
    pub error: AcquireError,
}

/// Pins on every block covering a range of pages, taken all at once and
/// dropped together: a memory registration (an RDMA memory region,
/// io_uring's `register_buffers`). While it lives no page of the range is
/// freed or moved. One pin per block (a count on a block holds all its
/// pages), attributed to the caller, so every page of the range names it.
#[must_use = "dropping the range pin unpins the range at once"]
pub struct RangePin<A: ArenaRef> {
    range: Range<Pfn>,
    pins: Vec<PagePin<A>>,
}

impl<A: ArenaRef> RangePin<A> {
    /// The pages pinned.
    pub fn range(&self) -> Range<Pfn> {
        self.range.clone()
    }

    /// The pins, one per block covering the range, in page order.
    pub fn pins(&self) -> &[PagePin<A>] {
        &self.pins
    }
}

impl<A: ArenaRef> core::fmt::Debug for RangePin<A> {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("RangePin").field("range", &self.range).field("blocks", &self.pins.len()).finish()
    }
}

impl PageArena {
    /// Pins `pages` pages from `start`, all or nothing: every block
    /// covering the range gets one pin, or none does.
    ///
    /// # Errors
    ///
    /// [`RangePinError`] naming the first page that could not be pinned
    /// (free, out of range, lent out exclusively, at the pin limit); the
    /// pins already taken are dropped.
    ///
    /// ```
    /// use pinowner::PageArena;
    ///
    /// let arena = PageArena::builder().pages(64).build()?;
    /// let a = arena.alloc(2)?;
    /// let b = arena.alloc(0)?;
    /// let reg = arena.pin_range(a.pfn(), 4)?;
    /// assert_eq!(reg.pins().len(), 1);
    /// assert_eq!(arena.page_state(a.pfn() + 3)?.pincount, 1);
    /// // A range that runs into free pages is refused, naming the first.
    /// let e = arena.pin_range(b.pfn(), 2).unwrap_err();
    /// assert_eq!(e.pfn, b.pfn() + 1);
    /// assert_eq!(arena.page_state(b.pfn())?.pincount, 0, "nothing stays pinned");
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    #[track_caller]
    pub fn pin_range(&self, start: Pfn, pages: usize) -> Result<RangePin<&PageArena>, RangePinError> {
        // An empty range may sit at the arena's end, not past it (as a
        // slice's may).
        if start > self.pages() {
            let error = AcquireError::OutOfRange { pfn: start, pages: self.pages() };
            return Err(RangePinError { pfn: start, error });
        }
        let end = start.saturating_add(pages);
        let mut pins = Vec::new();
        let mut p = start;
        while p < end {
            let pin = self.pin(p).map_err(|error| RangePinError { pfn: p, error })?;
            // On to the first page past the pinned block.
            let order = state::order(self.desc(pin.head() as u32).state.load(crate::sync::Ordering::Relaxed));
            p = (pin.head() + (1usize << order)).max(p + 1);
            pins.push(pin);
        }
        Ok(RangePin { range: start..end, pins })
    }

    /// A long-term pin on page `pfn` (`FOLL_LONGTERM`): a page of the
    /// normal zone is pinned in place; a page of a movable allocation in
    /// the movable zone is first moved, with its block, to the normal zone
    /// (its handles follow it), and the pin is taken there — see the
    /// returned pin's [`pfn`](PagePin::pfn). Long-term pins never stay in
    /// the movable zone, so they never block its reservations.
    ///
    /// # Errors
    ///
    /// [`LongtermPinError::Acquire`] if the page cannot be pinned (free,
    /// out of range, ...); [`LongtermPinError::Unmovable`] if it is in the
    /// movable zone and its block cannot move (not a movable allocation,
    /// pinned already, held without a mover, refused, no free block in the
    /// normal zone).
    ///
    /// ```
    /// use pinowner::{PageArena, ZoneKind};
    ///
    /// let arena = PageArena::builder().pages(64).movable_pages(32).build()?;
    /// let buf = arena.alloc_movable(0)?;
    /// assert_eq!(arena.zone_of(buf.pfn()), Some(ZoneKind::Movable));
    /// let pin = arena.pin_longterm(buf.pfn())?;
    /// assert_eq!(arena.zone_of(pin.pfn()), Some(ZoneKind::Normal));
    /// assert_eq!(buf.pfn(), pin.pfn(), "the handle followed its block");
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    #[track_caller]
    pub fn pin_longterm(&self, pfn: Pfn) -> Result<PagePin<&PageArena>, LongtermPinError> {
        let who = crate::owner_here();
        let info = self.page_info(pfn)?;
        if info.zone == ZoneKind::Normal {
            return Ok(self.pin(pfn)?);
        }
        let head = info.head as u32;
        let offset = (pfn - info.head) as u32;
        let Some(entry) = self.moves.get().and_then(|t| t.entry_at(head)) else {
            let w = self.desc(head).state.load(crate::sync::Ordering::Relaxed);
            if w & state::FREE != 0 {
                return Err(AcquireError::Free { pfn, state: info.state }.into());
            }
            return Err(LongtermPinError::Unmovable { pfn, why: Unmovable::NotMovable });
        };
        self.pin_longterm_entry(&entry, offset, pfn, who)
    }

    /// The long-term pin of page `offset` of the movable block `entry`
    /// names, wherever the block is (`pfn`: the page asked for, for
    /// errors): moved to the normal zone, then pinned inside a borrow, so
    /// the pin lands where the block is; if a reservation or compaction
    /// moved it in between (back to the movable zone, or while this tried
    /// to move it), again.
    pub(crate) fn pin_longterm_entry(
        &self,
        entry: &crate::sync::TrackedArc<super::Entry>,
        offset: u32,
        pfn: Pfn,
        who: crate::page::slot::Who,
    ) -> Result<PagePin<&PageArena>, LongtermPinError> {
        for _ in 0..10 {
            let at = entry.enter();
            if self.zone_for(at).kind == ZoneKind::Normal {
                let hd = self.desc(at);
                // SAFETY: `hd` is the head of the block we borrow, and
                // `at + offset` a page of it.
                let t = unsafe { self.acquire_held(hd, at + offset, Count::Pin, who) };
                entry.leave();
                return Ok(PagePin::from_parts(self, hd, at + offset, t?));
            }
            entry.leave();
            match self.migrate_entry(entry, at, Reason::LongtermPin, Dest::Normal) {
                // Moved meanwhile by someone else, or moving right now: look
                // where it is now.
                Ok(_) | Err(Unmovable::Borrowed) => crate::sync::yield_now(),
                Err(why) => return Err(LongtermPinError::Unmovable { pfn, why }),
            }
        }
        Err(LongtermPinError::Unmovable { pfn, why: Unmovable::Borrowed })
    }
}
