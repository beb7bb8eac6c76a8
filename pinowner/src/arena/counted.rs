//! The count operations of the [`CountsOnly`](crate::CountsOnly) policy:
//! a handle's clone is one `fetch_add` and its drop one `fetch_sub`, each
//! with one branch on the word it returns (see [`crate::policy`]).
//!
//! Nothing here claims the owner slot or moves the generation, so the slot
//! keeps its meaning for the exact acquisitions sharing the arena: a slot
//! that carries the word's generation was written by the latest claiming
//! acquisition, which has not been released (exact releases of it still
//! move the generation; these never do, and never write the slot).
//!
//! The last release drops the count first and frees second: between the
//! two, the block is a head with no counts and no `FREE`, which every other
//! writer already meets (an exact release bound for the buddy lists leaves
//! that word until it takes the zone lock): acquisitions by page number
//! refuse it, a reservation waits for it as a block in flight, and the
//! cache decision is made inside the compare-and-swap that marks it cached,
//! so `ISOLATED` is still checked atomically with it. A `Block`'s drop,
//! most often the last count, reads the word first and frees an unarmed
//! block in one compare-and-swap, as an exact last release does (see
//! [`release_counted_block`](PageArena::release_counted_block)).

use core::panic::Location;

use super::{PageArena, Ticket};
use crate::error::AcquireError;
use crate::page::slot;
use crate::page::state::{self, Count, ACQUIRE_SLOW, COUNTS, EXCLUSIVE, IDLE, PCP, TRACKED};
use crate::page::{Descriptor, PageState};
use crate::sync::Ordering::{Relaxed, Release};
use crate::tracker::Change;
use crate::Pfn;

impl PageArena {
    /// A counted add on a page whose block the caller already holds: one
    /// `fetch_add` and a test of the word it returned. `Err(old)`: the add
    /// is made and returned `old`, with a slow-path flag; finish with
    /// [`acquire_counted_slow`](Self::acquire_counted_slow).
    #[inline(always)]
    pub(crate) fn acquire_counted_fast(hd: &Descriptor, count: Count) -> Result<Ticket, u64> {
        let old = hd.state.fetch_add(count.one(), Relaxed);
        if old & ACQUIRE_SLOW != 0 {
            return Err(old);
        }
        Ok(Ticket::unrecorded(slot::UNCLAIMED))
    }

    /// A counted add that found the block lent out exclusively, at its
    /// limit, idle or armed (`old`: the word before the add).
    #[cold]
    #[inline(never)]
    pub(crate) fn acquire_counted_slow(
        &self,
        hd: &Descriptor,
        pfn: u32,
        count: Count,
        old: u64,
        at: &'static Location<'static>,
    ) -> Result<Ticket, AcquireError> {
        let over = old & count.mask() >= count.limit();
        if old & EXCLUSIVE != 0 || over {
            // Taken back: the caller holds the block, so this is never the
            // last count.
            let now = hd.state.fetch_sub(count.one(), Release).wrapping_sub(count.one());
            let (pfn, state) = (pfn as Pfn, PageState::from_word(now));
            return Err(match count {
                _ if old & EXCLUSIVE != 0 => AcquireError::Exclusive { pfn, state },
                Count::Ref => AcquireError::RefOverflow { pfn, state },
                Count::Pin => AcquireError::PinOverflow { pfn, state },
            });
        }
        if old & IDLE != 0 {
            hd.state.fetch_and(!IDLE, Relaxed);
        }
        let mut hold = 0;
        if old & TRACKED != 0 {
            let (head, new) = (self.pfn_of(hd), old.wrapping_add(count.one()));
            let gen = state::gen(old) | slot::UNCLAIMED;
            let who = crate::site::owner_at(at);
            hold = self.record_armed(Change::acquire(count.acquire_kind(), pfn, head, old, new, who, gen, false));
        }
        Ok(Ticket::new(slot::UNCLAIMED, hold))
    }

    /// Drops a count the caller holds on the block whose head descriptor is
    /// `hd`, taken through page `pfn`: one `fetch_sub` and one branch,
    /// taken for the last count and for an armed block. `hold`: the hold
    /// the handle's acquisition opened (0: none).
    #[inline(always)]
    pub(crate) fn release_counted(&self, hd: &Descriptor, pfn: u32, count: Count, hold: u16) {
        let old = hd.state.fetch_sub(count.one(), Release);
        if !count.release_fast(old) || hold != 0 {
            self.release_counted_slow(hd, pfn, count, old, hold);
        }
    }

    /// A `Block`'s release under the counts-only policy (`hd`: its head's
    /// descriptor, `head` its page number). A block's reference is most
    /// often its last count, which [`release_counted`](Self::release_counted)
    /// frees with a second locked instruction after its `fetch_sub` (the
    /// compare-and-swap that decides the cache against `ISOLATED`); so a
    /// load first, and an unarmed last count is one compare-and-swap
    /// straight to the freed word, as the exact policy's last release
    /// makes it (without moving the generation: nothing here does).
    /// Any other word, or a lost race, is `release_counted`'s.
    #[inline(always)]
    pub(crate) fn release_counted_block(&self, hd: &Descriptor, head: u32, hold: u16) {
        if hold == 0 {
            let old = hd.state.load(Relaxed);
            if old & (COUNTS | TRACKED) == Count::Ref.one() {
                return self.release_counted_last(hd, head, old, crate::sync::cache_slot_hint());
            }
        }
        self.release_counted(hd, head, Count::Ref, hold);
    }

    /// [`release_counted_block`](Self::release_counted_block)'s last count
    /// of an unarmed block, read as `old`. `slot`: the calling thread's
    /// cache slot hint, read by the caller (see `release_last_ref`).
    #[inline(never)]
    fn release_counted_last(&self, hd: &Descriptor, head: u32, old: u64, slot: usize) {
        if self.release_last_to(hd, old, |old| old.wrapping_sub(Count::Ref.one()), slot).is_err() {
            // The word changed (a get by page number, a reservation, an
            // arming): the release starts over as a `fetch_sub`.
            self.release_counted_raced(hd, head);
        }
    }

    /// [`release_counted_last`](Self::release_counted_last) whose
    /// compare-and-swap lost a race.
    #[cold]
    #[inline(never)]
    fn release_counted_raced(&self, hd: &Descriptor, head: u32) {
        self.release_counted(hd, head, Count::Ref, 0);
    }

    /// A counted release that dropped the last count, or on an armed block,
    /// or of a handle keeping a hold. The subtract is made: `old` is the
    /// word before it.
    #[cold]
    #[inline(never)]
    fn release_counted_slow(&self, hd: &Descriptor, pfn: u32, count: Count, old: u64, hold: u16) {
        let head = self.pfn_of(hd);
        let new = old.wrapping_sub(count.one());
        let gen = Some(state::gen(old) | slot::UNCLAIMED);
        self.record_release(head, pfn, count, (old, new), gen, hold);
        if new & COUNTS == 0 {
            self.free_counted(head, new);
        }
    }

    /// Frees a block whose last count a counted release just dropped
    /// (`word`: the word it left). Nobody can add a count any more, but a
    /// reservation may still set `ISOLATED` and arming `TRACKED`: the cache
    /// decision is made inside the compare-and-swap that marks the block
    /// cached, as an exact last release makes it.
    fn free_counted(&self, head: u32, mut word: u64) {
        let zone = self.zone_for(head);
        let d = self.desc(head);
        let cache = loop {
            let Some(pcp) = Self::cache_bound(zone, word) else { break None };
            let cached = crate::alloc::free_head_word(word, state::order(word), PCP);
            match d.state.compare_exchange_weak(word, cached, Relaxed, Relaxed) {
                Ok(_) => break Some(pcp),
                Err(cur) => word = cur,
            }
        };
        self.free_released(zone, cache, head, state::order(word));
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use crate::{ContigError, CountsOnly, PageArena, Reason};

    /// Every counts-only path once, single-threaded (so Miri checks the
    /// arena's policy casts, the handles' count operations and the second
    /// step of the last release): a failure counts both holders and names
    /// neither, and everything is freed once.
    #[test]
    fn counts_only_handles_count_free_once_and_name_nobody() {
        let arena: Arc<PageArena<CountsOnly>> =
            Arc::new(PageArena::builder().pages(16).movable_pages(8).attribution().build().unwrap());
        let block = arena.alloc_movable_owned(0).unwrap().into_block();
        let pfn = block.pfn();
        let pin = block.pin(0).unwrap();
        let by_number = arena.get(pfn).unwrap();
        let again = by_number.clone();
        assert_eq!(block.state().refcount, 3);
        let ContigError::Busy(f) = arena.reserve_contig(8, 8, Reason::Contig).unwrap_err() else { panic!() };
        assert_eq!((f.holders(), f.pins(), f.attributed()), (4, 1, 0), "{f}");
        drop((again, by_number, block));
        assert_eq!(arena.page_state(pfn).unwrap().pincount, 1, "the pin keeps the block");
        drop(pin);
        assert_eq!(arena.free_pages(), 16);
        arena.verify().unwrap();
        let run = arena.reserve_contig(8, 8, Reason::Contig).unwrap();
        drop(run);
        let zeroed = arena.alloc_zeroed(1).unwrap();
        assert!(zeroed.bytes().iter().all(|&b| b == 0));
        drop(zeroed);
        assert_eq!(arena.free_pages(), 16);
        // The same allocation shared as an exact arena, outliving the
        // counts-only `Arc`.
        let exact = arena.exact_arc();
        drop(arena);
        let run = exact.reserve_contig_owned(8, 8, Reason::Contig).unwrap();
        assert_eq!(exact.free_pages(), 8);
        drop(run);
    }
}
