//! The count operations: acquisitions (by handle and by page number) and
//! releases, with the owner slot, the pinner's priority, armed pages'
//! recording and the last release's free.

use core::panic::Location;

use super::{PageArena, Ticket};
use crate::alloc::{Pcp, Zone};
use crate::error::AcquireError;
use crate::page::slot::{self, Acquirer, Who};
use crate::page::state::{self, Count, COUNTS, FREE, GEN_ONE, HEAD, IDLE, PCP, TRACKED};
use crate::page::{Descriptor, PageState};
use crate::sync::cache_slot_hint;
use crate::sync::fence;
use crate::sync::Ordering::{Acquire, Relaxed, Release};
use crate::tracker::Change;
use crate::Pfn;

impl PageArena {
    /// Adds a count on a page whose block the caller already holds (a
    /// handle's clone): one atomic add and a branch on the returned value.
    /// `hd` is the block's head descriptor, `pfn` the page the count goes
    /// through. Returns the generation the add produced (the handle keeps
    /// it), or for a reference on a pinned block that did not claim the
    /// slot, that generation with [`slot::UNCLAIMED`].
    ///
    /// # Safety
    ///
    /// `hd` is a descriptor of this arena and `pfn` is below
    /// [`pages`](Self::pages) (a handle's pages).
    #[inline]
    pub(crate) unsafe fn acquire_held(
        &self,
        hd: &Descriptor,
        pfn: u32,
        count: Count,
        who: Who,
    ) -> Result<Ticket, AcquireError> {
        match Self::acquire_held_fast(hd, count, who) {
            Ok(ticket) => Ok(ticket),
            Err(old) => self.acquire_held_slow(hd, pfn, count, old, who),
        }
    }

    /// [`acquire_held`](Self::acquire_held)'s add and, when the word it
    /// returned has no slow-path flag, its owner-slot store. `Err(old)`:
    /// the add is made and returned `old`; finish with
    /// [`acquire_held_slow`](Self::acquire_held_slow) (split so a handle's
    /// clone calls the slow path with nothing live across the call).
    #[inline(always)]
    pub(crate) fn acquire_held_fast(hd: &Descriptor, count: Count, who: Who) -> Result<Ticket, u64> {
        let old = hd.state.fetch_add(count.acquire_delta(), Relaxed);
        if old & count.acquire_slow() != 0 {
            return Err(old);
        }
        let gen = state::gen(old.wrapping_add(GEN_ONE));
        hd.owner.store(slot::encode(who, gen, count == Count::Pin), Relaxed);
        Ok(Ticket::unrecorded(gen))
    }

    /// The rest of an acquisition whose add (through page `pfn` of the
    /// block headed by `hd`, a descriptor of this arena) returned `old`
    /// with a slow-path flag.
    #[inline]
    pub(crate) fn acquire_held_slow(
        &self,
        hd: &Descriptor,
        pfn: u32,
        count: Count,
        old: u64,
        who: Who,
    ) -> Result<Ticket, AcquireError> {
        let gen = state::gen(old.wrapping_add(GEN_ONE));
        self.acquire_slow(self.pfn_of(hd), pfn, count, old, gen, who)
    }

    /// Leaked exclusive borrows, overflow, idle and tracked pages after an
    /// add already made; writes the owner slot as the fast path does when
    /// the add stands.
    #[cold]
    #[inline(never)]
    fn acquire_slow(
        &self,
        head: u32,
        pfn: u32,
        count: Count,
        old: u64,
        gen: u16,
        who: Who,
    ) -> Result<Ticket, AcquireError> {
        if old & state::EXCLUSIVE != 0 {
            // A leaked `BlockBytesMut` (a live one borrows the block): refused
            // like an acquisition by page number.
            self.undo_acquire(head, count, gen);
            let state = PageState::from_word(self.desc(head).state.load(Relaxed));
            return Err(AcquireError::Exclusive { pfn: pfn as Pfn, state });
        }
        if old & count.mask() >= count.limit() {
            self.undo_acquire(head, count, gen);
            let state = PageState::from_word(self.desc(head).state.load(Relaxed));
            return Err(match count {
                Count::Ref => AcquireError::RefOverflow { pfn: pfn as Pfn, state },
                Count::Pin => AcquireError::PinOverflow { pfn: pfn as Pfn, state },
            });
        }
        let hd = self.desc(head);
        let mut new = old.wrapping_add(count.acquire_delta());
        let mut gen = gen;
        if !count.claims(old) {
            // A reference on a pinned block: the pinner keeps the slot. Our
            // add moved the generation; take that back if nothing changed
            // since (then the word is as if the add had been the count
            // alone). If something did, claim as usual: the pinner is then
            // unattributed, never misnamed.
            if hd.state.compare_exchange(new, new.wrapping_sub(GEN_ONE), Relaxed, Relaxed).is_ok() {
                new = new.wrapping_sub(GEN_ONE);
                gen = state::gen(old) | slot::UNCLAIMED;
            }
        }
        if old & IDLE != 0 {
            hd.state.fetch_and(!IDLE, Relaxed);
        }
        let mut hold = 0;
        if old & TRACKED != 0 {
            let c = Change::acquire(count.acquire_kind(), pfn, head, old, new, who, gen, false);
            hold = self.record_armed(c);
        }
        if gen & slot::UNCLAIMED == 0 {
            hd.owner.store(slot::encode(who, gen, count == Count::Pin), Relaxed);
        }
        Ok(Ticket::new(gen, hold))
    }

    /// Takes back a refused add (an overflow, or a leaked exclusive
    /// borrow), without a release: nothing is recorded and nothing can be
    /// freed (the caller holds the block). If no
    /// other change came since, the generation goes back too, so the latest
    /// holder before the attempt stays attributed.
    #[cold]
    fn undo_acquire(&self, head: u32, count: Count, gen: u16) {
        let word = &self.desc(head).state;
        let mut old = word.load(Relaxed);
        loop {
            let delta = if state::gen(old) == gen { count.acquire_delta() } else { count.one() };
            match word.compare_exchange_weak(old, old.wrapping_sub(delta), Release, Relaxed) {
                Ok(_) => return,
                Err(cur) => old = cur,
            }
        }
    }

    /// Adds a count on a page named only by its number: succeeds only if the
    /// page belongs to a live allocated block. Returns the block's head
    /// descriptor and the acquisition's ticket. One compare-and-swap when
    /// the page is a live head without flags (the kernel's
    /// `get_page_unless_zero`); `exact`: the acquisition claims the owner
    /// slot for the caller at `at` (the exact policy), else it adds the
    /// count alone and names the caller only to an armed block's record.
    #[inline(always)]
    pub(crate) fn acquire_pfn(
        &self,
        pfn: Pfn,
        count: Count,
        at: &'static Location<'static>,
        raw: bool,
        exact: bool,
    ) -> Result<(&Descriptor, Ticket), AcquireError> {
        // One bounds check: the table has one descriptor per page.
        let Some(d) = self.descs.get(pfn) else { return Err(self.out_of_range(pfn)) };
        let old = d.state.load(Relaxed);
        let (fast, new) = match exact {
            true => (count.pfn_fast(old), old.wrapping_add(count.acquire_delta())),
            false => (count.pfn_fast_counted(old), old.wrapping_add(count.one())),
        };
        if fast && d.state.compare_exchange(old, new, Acquire, Relaxed).is_ok() {
            if !exact {
                return Ok((d, Ticket::unrecorded(slot::UNCLAIMED)));
            }
            let who = crate::site::owner_at(at);
            d.owner.store(slot::encode(who, state::gen(new), count == Count::Pin), Relaxed);
            return Ok((d, Ticket::unrecorded(state::gen(new))));
        }
        self.acquire_pfn_general(pfn as u32, count, crate::site::owner_at(at), raw, exact)
    }

    /// A reference by number on a pinned, live, unarmed head (the common
    /// slow case: a reader of a buffer its driver pinned): the count alone,
    /// without the general slow path's block search. `None`: not that case,
    /// or the word moved; take the general path.
    #[inline]
    fn acquire_pfn_pinned(&self, d: &Descriptor, count: Count, exact: bool) -> Option<u16> {
        let old = d.state.load(Relaxed);
        if !state::is_live_head(old) || old & state::ACQUIRE_SLOW != 0 || (exact && count.claims(old)) {
            return None;
        }
        let new = old.wrapping_add(count.one());
        d.state.compare_exchange(old, new, Acquire, Relaxed).ok()?;
        Some(state::gen(new) | slot::UNCLAIMED)
    }

    /// The general acquisition by page number: finds the block, refuses a
    /// free or exclusive one or a count at its limit, records on an armed
    /// one. `exact`: the acquisition may claim the owner slot (the
    /// [`Exact`](crate::Exact) policy); else it never does.
    #[cold]
    #[inline(never)]
    pub(crate) fn acquire_pfn_general(
        &self,
        pfn: u32,
        count: Count,
        who: Who,
        raw: bool,
        exact: bool,
    ) -> Result<(&Descriptor, Ticket), AcquireError> {
        let d = self.desc(pfn);
        if let Some(gen) = self.acquire_pfn_pinned(d, count, exact) {
            return Ok((d, Ticket::unrecorded(gen)));
        }
        let mut tries = 0u32;
        loop {
            tries += 1;
            let head = if tries > 3 {
                // Stop racing splits and merges: under the zone lock the
                // block structure is stable (counts still move, the CAS
                // below copes with that).
                let zone = self.zone_for(pfn);
                let _area = zone.area.lock();
                self.head_of(pfn)
            } else {
                self.head_of(pfn)
            };
            let Some((head, need)) = head else {
                crate::sync::spin_hint();
                continue;
            };
            let d = self.desc(head);
            let mut old = d.state.load(Relaxed);
            loop {
                let state = PageState::from_word(old);
                if old & HEAD == 0 || state::order(old) < need {
                    break; // the block changed under us: look again
                }
                if old & FREE != 0 || old & COUNTS == 0 {
                    return Err(AcquireError::Free { pfn: pfn as Pfn, state });
                }
                if old & state::EXCLUSIVE != 0 {
                    return Err(AcquireError::Exclusive { pfn: pfn as Pfn, state });
                }
                if old & count.mask() >= count.limit() {
                    return Err(match count {
                        Count::Ref => AcquireError::RefOverflow { pfn: pfn as Pfn, state },
                        Count::Pin => AcquireError::PinOverflow { pfn: pfn as Pfn, state },
                    });
                }
                // A reference on a pinned block adds the count alone: the
                // pinner keeps the slot and the generation.
                let claims = exact && count.claims(old);
                let delta = if claims { count.acquire_delta() } else { count.one() };
                let new = old.wrapping_add(delta) & !IDLE;
                match d.state.compare_exchange_weak(old, new, Acquire, Relaxed) {
                    Ok(_) => {
                        let gen = if claims { state::gen(new) } else { state::gen(new) | slot::UNCLAIMED };
                        if claims {
                            d.owner.store(slot::encode(who, gen, count == Count::Pin), Relaxed);
                        }
                        let mut hold = 0;
                        if old & TRACKED != 0 {
                            let kind = count.acquire_kind();
                            hold = self.record_armed(Change::acquire(kind, pfn, head, old, new, who, gen, raw));
                        }
                        return Ok((d, Ticket::new(gen, hold)));
                    }
                    Err(cur) => {
                        old = cur;
                        crate::sync::spin_hint();
                    }
                }
            }
        }
    }

    /// The head of the block holding `pfn` and the least order that block
    /// must have to contain it, read without the lock (validate before use).
    pub(crate) fn head_of(&self, pfn: u32) -> Option<(u32, u8)> {
        let zone = self.zone_for(pfn);
        for o in 0..=self.max_order {
            let h = pfn & !((1u32 << o) - 1);
            if h < zone.start {
                return None;
            }
            let w = self.desc(h).state.load(Acquire);
            if w & HEAD != 0 && state::order(w) >= o {
                return Some((h, o));
            }
        }
        None
    }

    /// Walks the blocks covering `start..end`: `f(head, word)` for each, in
    /// page order, the word read before `f` runs (so `f` may split or merge
    /// the block). Under the zone lock the walk is exact; without it (a
    /// reservation ranking windows, the tracker finding blocks to arm or
    /// disarm), a page caught mid-split is stepped over.
    pub(crate) fn for_each_block(&self, start: u32, end: u32, mut f: impl FnMut(u32, u64)) {
        self.walk_blocks(start, end, |head, w| {
            f(head, w);
            true
        });
    }

    /// [`for_each_block`](Self::for_each_block) until `f` returns false.
    #[inline]
    pub(crate) fn walk_blocks(&self, start: u32, end: u32, mut f: impl FnMut(u32, u64) -> bool) {
        let window = &self.descs[start as usize..end as usize];
        let mut p = start;
        while let Some(d) = window.get((p - start) as usize) {
            // Blocks tile the zone: after the first block the next page is
            // almost always a head, read once.
            let w = d.state.load(Acquire);
            let (head, w) = if w & HEAD != 0 {
                (p, w)
            } else {
                let Some((head, _)) = self.head_of(p) else {
                    p += 1;
                    continue;
                };
                (head, self.desc(head).state.load(Acquire))
            };
            if !f(head, w) {
                return;
            }
            p = (head + (1u32 << state::order(w))).max(p + 1);
        }
    }

    /// The acquirer of a live block's latest claiming acquisition, if that
    /// holder still holds it (the head's owner slot carries the generation
    /// of the block's word `w`: never a guess), and whether the acquisition
    /// was a pin.
    pub(crate) fn latest_hold(&self, head: u32, w: u64) -> Option<(Acquirer, bool)> {
        let word = self.desc(head).owner.load(Acquire);
        slot::decode_if_current(word, state::gen(w)).map(|a| (a, slot::is_pin(word)))
    }

    /// Drops a count the caller holds on the block headed by `head`, taken
    /// through page `pfn`. `mine` is the generation the caller's acquisition
    /// produced, if it knows it (handles do; the raw API does not).
    ///
    /// The generation moves when the latest acquisition is released (or
    /// when the releaser cannot tell, `mine == None`), so a reader never
    /// attributes a page to a departed holder, while releasing an older
    /// count leaves the latest acquirer attributed. The decision is made
    /// inside one compare-and-swap on the state word: one read-modify-write
    /// when uncontended. The last count and armed pages take the slow path,
    /// which makes the same compare-and-swap.
    #[inline]
    pub(crate) fn release(&self, head: u32, pfn: u32, count: Count, mine: Option<u16>) {
        self.release_held(self.desc(head), pfn, count, mine);
    }

    /// [`release`](Self::release) for a handle, which keeps its block's
    /// head descriptor `hd` (a descriptor of this arena): the fast path
    /// needs no page number, the slow paths compute the head's.
    #[inline]
    pub(crate) fn release_held(&self, hd: &Descriptor, pfn: u32, count: Count, mine: Option<u16>) {
        let word = &hd.state;
        let mut old = word.load(Relaxed);
        loop {
            if old & (COUNTS | TRACKED) == count.one() {
                return self.release_last(hd, pfn, count, mine, old);
            }
            if old & TRACKED != 0 {
                return self.release_slow(self.pfn_of(hd), pfn, count, mine, old, 0);
            }
            match word.compare_exchange_weak(
                old,
                old.wrapping_add(Self::release_delta(count, mine, old, hd)),
                Release,
                Relaxed,
            ) {
                Ok(_) => return,
                Err(cur) => old = cur,
            }
        }
    }

    /// A handle's release under the exact policy: one load and one
    /// compare-and-swap when the block is not armed, the count is not its
    /// last and the handle keeps no hold (a bit test each for the first
    /// two: `TRACKED`, then [`Count::others`]); the last count of an unarmed block goes
    /// straight to [`release_last`](Self::release_last); anything else, a
    /// lost race included, is [`release_exact_slow`](Self::release_exact_slow)'s,
    /// so the fast path stays small enough to inline into a handle's drop.
    #[inline(always)]
    pub(crate) fn release_exact(&self, hd: &Descriptor, pfn: u32, count: Count, ticket: Ticket) {
        if ticket.hold() == 0 {
            let old = hd.state.load(Relaxed);
            // Two one-instruction bit tests on the word, each its own
            // branch, where a combined range test was three dependent
            // instructions between the load and the compare-and-swap
            // (`PagePin` clone+drop 0.25 ns faster in paired rounds).
            if old & TRACKED != 0 {
                core::hint::cold_path();
            } else if old & count.others() != 0 {
                // A branch, not a conditional move: the new word then
                // depends on the load alone (the compare resolves off the
                // chain between the two locked instructions). The handle is
                // most often the latest acquirer; an older one takes the
                // other arm, inline.
                let delta = if ticket.gen() == state::gen(old) {
                    count.release_delta()
                } else {
                    core::hint::cold_path();
                    count.one().wrapping_neg()
                };
                if hd.state.compare_exchange(old, old.wrapping_add(delta), Release, Relaxed).is_ok() {
                    return;
                }
            } else {
                // The last count of an unarmed block: the end of a `Block`.
                return match count {
                    Count::Ref => self.release_last_ref(hd, pfn, ticket.gen(), old, cache_slot_hint()),
                    Count::Pin => self.release_last(hd, pfn, count, Some(ticket.gen()), old),
                };
            }
        }
        self.release_exact_slow(hd, pfn, count, ticket);
    }

    /// [`release_exact`](Self::release_exact)'s other cases: a hold to
    /// close, the last count, an armed block, a lost race.
    #[cold]
    #[inline(never)]
    fn release_exact_slow(&self, hd: &Descriptor, pfn: u32, count: Count, ticket: Ticket) {
        match ticket.hold() {
            0 => self.release_held(hd, pfn, count, Some(ticket.gen())),
            hold => self.release_hold(hd, pfn, count, Some(ticket.gen()), hold),
        }
    }

    /// The release of a handle that keeps a hold (its acquisition was
    /// recorded on an armed block): closes the hold, and records the
    /// release if the block is still armed.
    #[cold]
    #[inline(never)]
    pub(crate) fn release_hold(&self, hd: &Descriptor, pfn: u32, count: Count, mine: Option<u16>, hold: u16) {
        let old = hd.state.load(Relaxed);
        self.release_slow(self.pfn_of(hd), pfn, count, mine, old, hold);
    }

    /// What a release adds to the word: one count off, and the generation
    /// moved if the caller's acquisition is the latest. A raw release
    /// (`mine == None`) cannot tell: it moves the generation if the head's
    /// slot is current and names an acquisition of its kind (it may be the
    /// one the slot names), and only then, so a stale slot never comes back
    /// to life (see [`slot`]). A slot naming a pin is never a raw
    /// reference's own (a reference on a pinned block does not claim), nor
    /// one naming a reference a raw pin's (every pin claims): such a
    /// release leaves the holder the slot names named.
    #[inline(always)]
    fn release_delta(count: Count, mine: Option<u16>, old: u64, hd: &Descriptor) -> u64 {
        let latest = match mine {
            Some(g) => g == state::gen(old),
            None => {
                let word = hd.owner.load(Relaxed);
                slot::is_current(word, state::gen(old)) && slot::is_pin(word) == (count == Count::Pin)
            }
        };
        if latest {
            count.release_delta()
        } else {
            // A branch, not a select: most releases are by the latest
            // acquirer (see `release_exact`).
            core::hint::cold_path();
            count.one().wrapping_neg()
        }
    }

    /// The release of the last count of a block that is not armed, which
    /// frees it: the common end of a `Block`. `old` is the word last read;
    /// if the compare-and-swap finds it changed, the general slow path
    /// takes over.
    ///
    /// A block of a cached order in a zone with caches, outside any
    /// isolated window, becomes a cached free block in this same
    /// compare-and-swap (so `ISOLATED` is checked atomically with it) and
    /// goes to the thread's cache; any other block goes to the buddy lists
    /// under the zone lock.
    ///
    /// `hd` is the head's descriptor.
    #[inline(never)]
    fn release_last(&self, hd: &Descriptor, pfn: u32, count: Count, mine: Option<u16>, old: u64) {
        if let Err(cur) = self.release_last_in(hd, count, mine, old, cache_slot_hint()) {
            self.release_slow(self.pfn_of(hd), pfn, count, mine, cur, 0);
        }
    }

    /// [`release_last`](Self::release_last) of a reference by a handle
    /// whose acquisition has generation `gen`: the end of a `Block`, most
    /// often. Its own copy, with the count and the handle's generation
    /// known, so the word it writes is computed with fewer selects.
    ///
    /// `slot`: the calling thread's [`cache_slot_hint`], read by the
    /// caller. Its inline code is compiled in the user's crate, where an
    /// executable reads a thread-local with one load; here, in a library
    /// compiled position-independent, the read is a `__tls_get_addr` call
    /// (relaxed by the linker, but not before the register allocator made
    /// the function save six registers and copy its arguments around it:
    /// 16 instructions per order-0 alloc+free).
    #[inline(never)]
    fn release_last_ref(&self, hd: &Descriptor, pfn: u32, gen: u16, old: u64, slot: usize) {
        if let Err(cur) = self.release_last_in(hd, Count::Ref, Some(gen), old, slot) {
            self.release_slow(self.pfn_of(hd), pfn, Count::Ref, Some(gen), cur, 0);
        }
    }

    /// The last release's compare-and-swap from `old`, then the freeing
    /// (by the thread whose [`cache_slot_hint`] is `slot`); `Err` with the
    /// word found if it changed, having done nothing.
    #[inline(always)]
    fn release_last_in(
        &self,
        hd: &Descriptor,
        count: Count,
        mine: Option<u16>,
        old: u64,
        slot: usize,
    ) -> Result<(), u64> {
        self.release_last_to(hd, old, |old| old.wrapping_add(Self::release_delta(count, mine, old, hd)), slot)
    }

    /// [`release_last_in`](Self::release_last_in) with the release of the
    /// count alone given as `release` (the word it leaves from `old`): the
    /// compare-and-swap from `old`, then the freeing.
    #[inline(always)]
    pub(crate) fn release_last_to(
        &self,
        hd: &Descriptor,
        old: u64,
        release: impl FnOnce(u64) -> u64,
        slot: usize,
    ) -> Result<(), u64> {
        let head = self.pfn_of(hd);
        let zone = self.zone_for(head);
        let cache = Self::cache_bound(zone, old);
        let new = Self::freed_word(release(old), cache.is_some());
        hd.state.compare_exchange(old, new, Release, Relaxed)?;
        self.free_released_at(zone, cache, head, state::order(old), slot);
        Ok(())
    }

    /// The cache a block whose last count is dropped from word `old` goes
    /// to: the zone's, if it caches the block's order and the block lies
    /// outside any isolated window (decided inside the release's
    /// compare-and-swap, so `ISOLATED` is checked atomically with it).
    #[inline(always)]
    pub(crate) fn cache_bound(zone: &Zone, old: u64) -> Option<&Pcp> {
        zone.pcp.as_ref().filter(|p| p.caches(state::order(old)) && old & state::ISOLATED == 0)
    }

    /// The word the last release writes: a count-zero head, or a cached
    /// free block (`FREE | PCP`) when it goes to a cache.
    #[inline(always)]
    fn last_release_word(old: u64, count: Count, mine: Option<u16>, cached: bool, hd: &Descriptor) -> u64 {
        Self::freed_word(old.wrapping_add(Self::release_delta(count, mine, old, hd)), cached)
    }

    /// The word a last release writes, from the word the release of the
    /// count alone leaves (`released`): it, or a cached free block.
    #[inline(always)]
    fn freed_word(released: u64, cached: bool) -> u64 {
        // The release keeps the order bits (it moves the counts and the
        // generation only).
        if cached {
            crate::alloc::free_head_word_of(released, PCP)
        } else {
            released
        }
    }

    /// Frees a block whose last count the caller's compare-and-swap just
    /// dropped: into `cache`, or to the buddy lists.
    ///
    /// Inline: the push into the calling thread's own cache (no poisoning,
    /// no remote in the cache); everything else is
    /// [`free_released_general`](Self::free_released_general), out of line.
    #[inline(always)]
    pub(crate) fn free_released(&self, zone: &Zone, cache: Option<&Pcp>, head: u32, order: u8) {
        self.free_released_at(zone, cache, head, order, cache_slot_hint());
    }

    /// [`free_released`](Self::free_released) by the thread whose
    /// [`cache_slot_hint`] is `slot`.
    #[inline(always)]
    fn free_released_at(&self, zone: &Zone, cache: Option<&Pcp>, head: u32, order: u8, slot: usize) {
        // Like `Arc`: every holder's release was `Release`; this acquire
        // makes all their accesses happen before the block is reused.
        fence(Acquire);
        if let Some(pcp) = cache.filter(|_| self.poison == crate::poison::Poison::Off) {
            let pushed = pcp.try_mine_at(slot, |cache, pages| {
                let over = cache.push(order, head)?;
                // Inside the cache: its count has one writer at a time.
                pages.set(pages.get() + (1 << order));
                Some(over)
            });
            if let Some(over) = pushed.flatten() {
                // The flush and the wake-up are one cold call: the fast
                // path itself calls nothing.
                if over | (zone.waiters.load(crate::sync::Ordering::SeqCst) != 0) {
                    self.after_cached_free(zone, pcp, order, over);
                }
                return;
            }
        }
        self.free_released_general(zone, cache, head, order);
    }

    /// After the fast path's push: a list left over its high mark returns a
    /// batch to the buddy lists (the owner enters its cache again: a remote
    /// may have drained it meanwhile), then waiting reservations are woken.
    #[cold]
    #[inline(never)]
    fn after_cached_free(&self, zone: &Zone, pcp: &Pcp, order: u8, over: bool) {
        if over {
            pcp.with_mine(
                |cache, pages| {
                    if cache.over_high(order) {
                        self.flush(zone, pcp, order, cache, pages);
                    }
                },
                || (),
            );
        }
        if zone.waiters.load(crate::sync::Ordering::SeqCst) != 0 {
            self.wake_waiters();
        }
    }

    /// [`free_released`](Self::free_released) past its fast path (the
    /// caller's `Acquire` fence already made).
    #[inline(never)]
    fn free_released_general(&self, zone: &Zone, cache: Option<&Pcp>, head: u32, order: u8) {
        if self.poison != crate::poison::Poison::Off {
            self.poison_free(head, order);
        }
        match cache {
            Some(pcp) => self.free_to_cache(zone, pcp, head, order),
            None => self.free_block(zone, head, order),
        }
        if zone.waiters.load(crate::sync::Ordering::SeqCst) != 0 {
            self.wake_waiters();
        }
    }

    /// A block was freed while reservations wait on its zone: wake them.
    #[cold]
    #[inline(never)]
    fn wake_waiters(&self) {
        if let Some(t) = self.tracker.get() {
            t.wake_waiters();
        }
    }

    /// A release of a count on an armed page, or one whose first attempt
    /// lost a race. `old` is the word last read.
    ///
    /// The last release of a block of a cached order in a zone with caches,
    /// outside any isolated window, makes it a cached free block in the same
    /// compare-and-swap (so `ISOLATED` is checked atomically with it); any
    /// other block is freed into the buddy lists under the zone lock.
    ///
    /// `hold`: the hold the releasing handle keeps (0: none), closed here,
    /// recorded with the release if the block is armed.
    #[cold]
    #[inline(never)]
    fn release_slow(&self, head: u32, pfn: u32, count: Count, mine: Option<u16>, mut old: u64, hold: u16) {
        let zone = self.zone_for(head);
        let hd = self.desc(head);
        let (last, cache, new) = loop {
            let last = old & COUNTS == count.one();
            let cache = if last { Self::cache_bound(zone, old) } else { None };
            let new = Self::last_release_word(old, count, mine, cache.is_some(), hd);
            match hd.state.compare_exchange_weak(old, new, Release, Relaxed) {
                Ok(_) => break (last, cache, new),
                Err(cur) => old = cur,
            }
        };
        // The word as a release of the count alone leaves it (not the
        // cached free word the last release may have written).
        let new = if cache.is_some() { old.wrapping_add(Self::release_delta(count, mine, old, hd)) } else { new };
        self.record_release(head, pfn, count, (old, new), mine, hold);
        if last {
            self.free_released(zone, cache, head, state::order(old));
        }
    }

    /// After a release changed the block headed by `head` from `old` to
    /// `new` (the count alone): records it if the block was armed (and its
    /// freeing, if it was the last count), or else closes the releasing
    /// handle's `hold`. `gen`: the releasing handle's generation (`None`:
    /// a raw release, by page number).
    pub(crate) fn record_release(
        &self,
        head: u32,
        pfn: u32,
        count: Count,
        (old, new): (u64, u64),
        gen: Option<u16>,
        hold: u16,
    ) {
        let raw = gen.is_none();
        if old & TRACKED != 0 {
            let who = crate::site::current().map(Acquirer::Site);
            let kind = count.release_kind();
            self.record_armed(Change { kind, pfn, head, old, new, who, gen, raw, hold, from_arming: false });
            if old & COUNTS == count.one() {
                self.record_freed(head, old, new);
            }
        } else if hold != 0 {
            self.close_hold(hold);
        }
    }
}
