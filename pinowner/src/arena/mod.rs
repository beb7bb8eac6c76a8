//! The arena: descriptors over a region, zones, and the count operations.

mod builder;
mod raw;
mod verify;

pub use builder::{ArenaBuilder, DEFAULT_MAX_ORDER, MAX_PAGES};
pub use verify::VerifyError;

use crate::alloc::{FragStats, FreeArea, Lists, Pcp, Zone, ZoneFrag, ZoneKind};
use crate::error::{AcquireError, AllocError, Largest};
use crate::handle::Block;
use crate::page::slot::{self, Acquirer};
use crate::page::state::{self, Count, COUNTS, FREE, GEN_ONE, HEAD, IDLE, PCP, TRACKED};
use crate::page::{Descriptor, PageState};
use crate::region::{BackingKind, Region};
use crate::sync::Ordering::{Acquire, Relaxed, Release};
use crate::sync::{fence, RemoteGuard, ShardedMap};
use crate::tracker::Change;
use crate::Pfn;

pub(crate) use raw::RawCounts;

/// A page arena: pages over one region, with refcounts, pins, a buddy
/// allocator in two zones, and owner attribution. See the [crate
/// docs](crate) for the model.
#[derive(Debug)]
pub struct PageArena {
    pub(crate) region: Region,
    pub(crate) descs: Box<[Descriptor]>,
    pub(crate) pages: u32,
    pub(crate) page_shift: u32,
    pub(crate) max_order: u8,
    /// Normal, then movable (either may be empty).
    pub(crate) zones: [Zone; 2],
    /// Raw references and pins per page, so a raw release can only drop a
    /// count a raw acquire took.
    pub(crate) raw: ShardedMap<RawCounts>,
    /// The owner tracker, allocated on first arming (or at build in eager
    /// mode).
    pub(crate) tracker: crate::tracker::TrackerCell,
    /// What dropping the arena does when pages are still held.
    pub(crate) leak_check: crate::audit::LeakCheck,
}

/// What an acquisition hands its handle: the generation it produced (or
/// that with [`slot::UNCLAIMED`]; see [`slot`]) and the hold it opened on
/// an armed block (0: none; see `tracker::holds`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(transparent)]
pub(crate) struct Ticket(u32);

impl Ticket {
    /// A ticket with no hold: the unarmed paths.
    #[inline(always)]
    pub(crate) const fn unrecorded(gen: u16) -> Ticket {
        Ticket(gen as u32)
    }

    /// A ticket with a hold.
    #[inline(always)]
    pub(crate) const fn new(gen: u16, hold: u16) -> Ticket {
        Ticket(gen as u32 | (hold as u32) << 16)
    }

    /// The generation.
    #[inline(always)]
    pub(crate) const fn gen(self) -> u16 {
        self.0 as u16
    }

    /// The hold (0: none).
    #[inline(always)]
    pub(crate) const fn hold(self) -> u16 {
        (self.0 >> 16) as u16
    }
}

/// A snapshot of one page: its block, zone, state and attributed acquirer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PageInfo {
    /// The page.
    pub pfn: Pfn,
    /// The head page of its block (itself for order-0 blocks).
    pub head: Pfn,
    /// Its zone.
    pub zone: ZoneKind,
    /// The block's state.
    pub state: PageState,
    /// Who took the latest count on this page, if that holder still holds
    /// it (the generation in the owner slot matches). `None` means
    /// unattributed, never a guess.
    pub acquirer: Option<Acquirer>,
}

impl PageArena {
    /// A builder; see [`ArenaBuilder`].
    ///
    /// ```
    /// use pinowner::{Backing, PageArena};
    ///
    /// let arena = PageArena::builder()
    ///     .pages(1024)
    ///     .movable_pages(512)
    ///     .backing(Backing::Anonymous)
    ///     .build()?;
    /// assert_eq!(arena.pages(), 1024);
    /// # Ok::<(), pinowner::BuildError>(())
    /// ```
    pub fn builder() -> ArenaBuilder {
        ArenaBuilder::default()
    }

    /// Number of pages.
    pub fn pages(&self) -> usize {
        self.pages as usize
    }

    /// Page size in bytes.
    pub fn page_size(&self) -> usize {
        1 << self.page_shift
    }

    /// The largest buddy order.
    pub fn max_order(&self) -> u8 {
        self.max_order
    }

    /// What memory the arena got.
    pub fn backing(&self) -> BackingKind {
        self.region.kind()
    }

    /// Why a [`Backing::HugeTlb`](crate::Backing::HugeTlb) request fell back
    /// to transparent hugepages, if it did.
    pub fn backing_fallback(&self) -> Option<&str> {
        self.region.fallback.as_deref()
    }

    /// The page-number range of a zone.
    pub fn zone_range(&self, zone: ZoneKind) -> core::ops::Range<Pfn> {
        let z = self.zone(zone);
        z.start as Pfn..z.end as Pfn
    }

    /// The zone of a page, or `None` if out of range.
    pub fn zone_of(&self, pfn: Pfn) -> Option<ZoneKind> {
        let p = u32::try_from(pfn).ok()?;
        self.zones.iter().find(|z| z.contains(p)).map(|z| z.kind)
    }

    pub(crate) fn zone(&self, kind: ZoneKind) -> &Zone {
        match kind {
            ZoneKind::Normal => &self.zones[0],
            ZoneKind::Movable => &self.zones[1],
        }
    }

    #[inline]
    pub(crate) fn zone_for(&self, pfn: u32) -> &Zone {
        if pfn < self.zones[1].start {
            &self.zones[0]
        } else {
            &self.zones[1]
        }
    }

    #[inline]
    pub(crate) fn desc(&self, pfn: u32) -> &Descriptor {
        &self.descs[pfn as usize]
    }

    /// The descriptor of `pfn`, without the bounds check: for handles, which
    /// name pages of their arena by construction.
    ///
    /// # Safety
    ///
    /// `pfn` is below [`pages`](Self::pages).
    #[inline(always)]
    pub(crate) unsafe fn desc_unchecked(&self, pfn: u32) -> &Descriptor {
        debug_assert!(pfn < self.pages, "page {pfn} beyond an arena of {} pages", self.pages);
        // `descs` has exactly `pages` entries (both fixed at build).
        // SAFETY: so `pfn < pages`, which the caller promises, is in bounds.
        unsafe { self.descs.get_unchecked(pfn as usize) }
    }

    /// The page number of `d`, a descriptor of this arena (handles keep
    /// their head's descriptor and find its number only on slow paths).
    #[inline]
    pub(crate) fn pfn_of(&self, d: &Descriptor) -> u32 {
        let off = (d as *const Descriptor as usize).wrapping_sub(self.descs.as_ptr() as usize);
        let pfn = off / core::mem::size_of::<Descriptor>();
        debug_assert!(pfn < self.pages as usize, "a descriptor of another arena");
        pfn as u32
    }

    #[inline]
    pub(crate) fn check_pfn(&self, pfn: Pfn) -> Result<u32, AcquireError> {
        if pfn < self.pages as usize {
            Ok(pfn as u32)
        } else {
            Err(self.out_of_range(pfn))
        }
    }

    #[cold]
    fn out_of_range(&self, pfn: Pfn) -> AcquireError {
        AcquireError::OutOfRange { pfn, pages: self.pages as usize }
    }

    // ----- allocation -------------------------------------------------

    /// Allocates a block of `2^order` pages from the normal zone.
    ///
    /// # Errors
    ///
    /// [`AllocError::OrderTooLarge`] above [`max_order`](Self::max_order);
    /// [`AllocError::OutOfMemory`] when no block of that order is free.
    ///
    /// ```
    /// let arena = pinowner::PageArena::builder().pages(64).build()?;
    /// let block = arena.alloc(2)?;
    /// assert_eq!(block.pages(), 4);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    #[track_caller]
    pub fn alloc(&self, order: u8) -> Result<Block<&PageArena>, AllocError> {
        let who = crate::owner_here();
        self.alloc_in(order, false, who).map(|(pfn, gen)| Block::new(self, pfn, order, gen))
    }

    /// Like [`alloc`](Self::alloc), with the block's bytes zeroed.
    ///
    /// # Errors
    ///
    /// As for [`alloc`](Self::alloc).
    #[track_caller]
    pub fn alloc_zeroed(&self, order: u8) -> Result<Block<&PageArena>, AllocError> {
        let who = crate::owner_here();
        let (pfn, gen) = self.alloc_in(order, false, who)?;
        self.zero_block(pfn, order);
        Ok(Block::new(self, pfn, order, gen))
    }

    /// Allocates a movable block: from the movable zone, falling back to
    /// the normal zone when the movable zone has no block of that order (the
    /// kernel's rule: movable allocations may use either zone, unmovable
    /// ones never use the movable zone).
    ///
    /// # Errors
    ///
    /// As for [`alloc`](Self::alloc).
    #[track_caller]
    pub fn alloc_movable(&self, order: u8) -> Result<Block<&PageArena>, AllocError> {
        let who = crate::owner_here();
        self.alloc_in(order, true, who).map(|(pfn, gen)| Block::new(self, pfn, order, gen))
    }

    /// Like [`alloc_movable`](Self::alloc_movable), with the bytes zeroed.
    ///
    /// # Errors
    ///
    /// As for [`alloc`](Self::alloc).
    #[track_caller]
    pub fn alloc_movable_zeroed(&self, order: u8) -> Result<Block<&PageArena>, AllocError> {
        let who = crate::owner_here();
        let (pfn, gen) = self.alloc_in(order, true, who)?;
        self.zero_block(pfn, order);
        Ok(Block::new(self, pfn, order, gen))
    }

    /// [`alloc`](Self::alloc) for an arena shared through `Arc`: the block
    /// keeps the arena alive and is `'static`.
    ///
    /// # Errors
    ///
    /// As for [`alloc`](Self::alloc).
    #[track_caller]
    pub fn alloc_owned(self: &std::sync::Arc<Self>, order: u8) -> Result<Block<std::sync::Arc<PageArena>>, AllocError> {
        let who = crate::owner_here();
        self.alloc_in(order, false, who).map(|(pfn, gen)| Block::new(self.clone(), pfn, order, gen))
    }

    /// [`alloc_movable`](Self::alloc_movable) for an arena shared through `Arc`.
    ///
    /// # Errors
    ///
    /// As for [`alloc`](Self::alloc).
    #[track_caller]
    pub fn alloc_movable_owned(
        self: &std::sync::Arc<Self>,
        order: u8,
    ) -> Result<Block<std::sync::Arc<PageArena>>, AllocError> {
        let who = crate::owner_here();
        self.alloc_in(order, true, who).map(|(pfn, gen)| Block::new(self.clone(), pfn, order, gen))
    }

    fn zero_block(&self, pfn: u32, order: u8) {
        let (off, len) = self.byte_range(pfn, order);
        // SAFETY: the block was just allocated and no handle to it exists yet:
        // we have exclusive access to its bytes.
        unsafe { self.region.zero(off, len) };
    }

    #[inline]
    pub(crate) fn byte_range(&self, pfn: u32, order: u8) -> (usize, usize) {
        ((pfn as usize) << self.page_shift, 1usize << (self.page_shift + order as u32))
    }

    /// Allocates and returns the block's head and the ticket of its first
    /// reference.
    #[inline(always)]
    pub(crate) fn alloc_in(&self, order: u8, movable: bool, who: Acquirer) -> Result<(u32, Ticket), AllocError> {
        if order > self.max_order {
            return Err(AllocError::OrderTooLarge { order, max_order: self.max_order });
        }
        let flags = if movable { state::MOVABLE } else { 0 };
        let first = if movable { &self.zones[1] } else { &self.zones[0] };
        let got = match (&first.pcp, order) {
            _ if first.pages() == 0 => None,
            (Some(pcp), o) if pcp.caches(o) => self.alloc_pcp(first, pcp, o, flags),
            _ => self.alloc_buddy(first, order, flags),
        };
        let (pfn, word) = match got {
            Some(got) => got,
            None => self.alloc_fallback(order, movable, flags)?,
        };
        self.desc(pfn).owner.store(slot::encode(who, state::gen(word), false), Relaxed);
        let mut ticket = Ticket::unrecorded(state::gen(word));
        if self.tracker.config.eager {
            ticket = Ticket::new(ticket.gen(), self.eager_arm(pfn, word, who));
        }
        Ok((pfn, ticket))
    }

    /// The first zone had nothing: a movable allocation falls back to the
    /// normal zone; otherwise (or if that fails too) out of memory.
    #[cold]
    #[inline(never)]
    fn alloc_fallback(&self, order: u8, movable: bool, flags: u64) -> Result<(u32, u64), AllocError> {
        let mut last = if movable { &self.zones[1] } else { &self.zones[0] };
        if movable && self.zones[0].pages() != 0 {
            last = &self.zones[0];
            let got = match (&last.pcp, order) {
                (Some(pcp), o) if pcp.caches(o) => self.alloc_pcp(last, pcp, o, flags),
                _ => self.alloc_buddy(last, order, flags),
            };
            if let Some(got) = got {
                return Ok(got);
            }
        }
        let area = last.area.lock();
        let largest = (0..=area.max_order).rev().find(|&o| area.count(o) > 0);
        Err(AllocError::OutOfMemory { order, zone: last.kind, free: area.free_pages, largest: Largest(largest) })
    }

    /// A block from the buddy lists, marked allocated under the lock (a
    /// free-looking head that is in no list would be "coalesced" by a
    /// concurrent free). Returns its head and new state word.
    #[inline]
    fn alloc_buddy(&self, zone: &Zone, order: u8, flags: u64) -> Option<(u32, u64)> {
        let mut area = zone.area.lock();
        let pfn = area.take(&self.descs, order)?;
        let word = area.mark_allocated(self.desc(pfn), order, flags);
        Some((pfn, word))
    }

    /// A block of a cached order from the calling thread's cache, refilled
    /// from the buddy lists when empty; from the buddy lists directly for a
    /// thread without a cache. Returns the head and its new state word.
    #[inline(always)]
    fn alloc_pcp(&self, zone: &Zone, pcp: &Pcp, order: u8, flags: u64) -> Option<(u32, u64)> {
        let take = |cache: &mut Lists| {
            let pfn = match cache.of(order).pop() {
                Some(p) => p,
                None => self.refill(zone, pcp, order, cache)?,
            };
            // A plain store inside the cache: see `alloc::pcp` for why
            // nothing else writes the word meanwhile.
            let d = self.desc(pfn);
            let old = d.state.load(Relaxed);
            debug_assert_eq!(
                old & (HEAD | FREE | PCP | COUNTS | state::ORDER_MASK),
                HEAD | FREE | PCP | state::with_order(0, order),
                "not a cached block of order {order}"
            );
            debug_assert_eq!(old & flags, 0);
            let word = old.wrapping_add(crate::alloc::pcp_alloc_delta(flags));
            d.state.store(word, Release);
            Some((pfn, word))
        };
        pcp.with_mine(take, || self.alloc_buddy(zone, order, flags))
    }

    /// Moves a batch of blocks of `order` from the buddy lists into an
    /// empty cache list (its owner inside the cache) and takes one of them.
    #[cold]
    #[inline(never)]
    fn refill(&self, zone: &Zone, pcp: &Pcp, order: u8, cache: &mut Lists) -> Option<u32> {
        let mut area = zone.area.lock();
        let list = cache.of(order);
        for _ in 0..pcp.batch(order) {
            let Some(p) = area.take(&self.descs, order) else { break };
            // Cached blocks are marked PCP, which keeps coalescing away
            // from them, also after they leave the cache.
            area.mark_free_head(self.desc(p), order, PCP);
            list.push(p);
        }
        list.pop()
    }

    /// Returns a block of a cached order, already marked as a cached free
    /// block by the release that freed it, to the calling thread's cache (a
    /// list over its high mark returns a batch to the buddy lists), or to
    /// the buddy lists if the thread has no cache.
    #[inline]
    fn free_to_cache(&self, zone: &Zone, pcp: &Pcp, head: u32, order: u8) {
        pcp.with_mine(
            |cache| {
                let list = cache.of(order);
                list.push(head);
                if list.len() > pcp.high(order) {
                    self.flush(zone, pcp, order, list);
                }
            },
            || self.free_uncached(zone, head, order),
        )
    }

    /// A cached free block of a thread without a cache goes to the buddy lists.
    #[cold]
    #[inline(never)]
    fn free_uncached(&self, zone: &Zone, head: u32, order: u8) {
        zone.area.lock().give(&self.descs, zone, head, order);
    }

    #[cold]
    #[inline(never)]
    fn flush(&self, zone: &Zone, pcp: &Pcp, order: u8, list: &mut Vec<u32>) {
        let n = pcp.batch(order).min(list.len());
        let mut area = zone.area.lock();
        for p in list.drain(..n) {
            area.give(&self.descs, zone, p, order);
        }
    }

    /// Returns a block whose last count was just dropped to the buddy lists.
    #[inline]
    pub(crate) fn free_block(&self, head: u32, order: u8) {
        let zone = self.zone_for(head);
        zone.area.lock().give(&self.descs, zone, head, order);
    }

    /// Takes the remote side of every cache of `zone` (before any zone lock:
    /// the lock order everywhere is cache, then zone). Holding them all
    /// keeps every cached page where it is and lets `ISOLATED` be written
    /// on cached pages (see `alloc::pcp`). Costs one `membarrier`.
    pub(crate) fn lock_caches<'z>(&self, zone: &'z Zone) -> Vec<RemoteGuard<'z, Lists>> {
        zone.pcp.as_ref().map_or_else(Vec::new, |pcp| pcp.lock_all())
    }

    /// Empties `caches` (the remote sides of `zone`'s caches) into the buddy
    /// lists, under the zone lock `area`; returns the pages drained.
    pub(crate) fn drain_caches(
        &self,
        zone: &Zone,
        caches: &mut [RemoteGuard<'_, Lists>],
        area: &mut FreeArea,
    ) -> usize {
        let mut drained = 0;
        for cache in caches {
            cache.with(|cache| {
                drained += cache.pages();
                cache.drain(|p, o| area.give(&self.descs, zone, p, o));
            });
        }
        drained
    }

    /// Returns every page parked in per-thread caches to the buddy lists, so
    /// that it can coalesce and serve higher orders. Returns the number of
    /// pages drained.
    pub fn drain_thread_caches(&self) -> usize {
        let mut drained = 0;
        for zone in &self.zones {
            let Some(pcp) = &zone.pcp else { continue };
            let mut caches = pcp.lock_all();
            drained += self.drain_caches(zone, &mut caches, &mut zone.area.lock());
        }
        drained
    }

    /// Free pages in all zones, cached ones included.
    pub fn free_pages(&self) -> usize {
        self.frag_stats().zones.iter().map(|z| z.free_pages + z.cached_pages).sum()
    }

    /// Fragmentation statistics: free blocks per order, largest free run,
    /// and the unusable-free-space and fragmentation indexes per order.
    pub fn frag_stats(&self) -> FragStats {
        let mut zones = Vec::new();
        for zone in &self.zones {
            if zone.pages() == 0 {
                continue;
            }
            let cached = zone.pcp.as_ref().map_or(0, |p| p.lock_all().iter_mut().map(|c| c.with(|c| c.pages())).sum());
            let area = zone.area.lock();
            let mut runs: Vec<(u32, u32)> =
                (0..=area.max_order).flat_map(|o| area.heads(o).iter().map(move |&p| (p, 1u32 << o))).collect();
            runs.sort_unstable();
            let mut largest = 0usize;
            let mut cur_end = u32::MAX;
            let mut cur_len = 0usize;
            for (p, n) in runs {
                if p == cur_end {
                    cur_len += n as usize;
                } else {
                    cur_len = n as usize;
                }
                cur_end = p + n;
                largest = largest.max(cur_len);
            }
            zones.push(ZoneFrag {
                zone: zone.kind,
                pages: zone.pages() as usize,
                free_blocks: (0..=area.max_order).map(|o| area.count(o)).collect(),
                free_pages: area.free_pages,
                cached_pages: cached,
                largest_free_run: largest,
            });
        }
        FragStats { zones }
    }

    // ----- counts ------------------------------------------------------

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
        who: Acquirer,
    ) -> Result<Ticket, AcquireError> {
        let old = hd.state.fetch_add(count.acquire_delta(), Relaxed);
        let gen = state::gen(old.wrapping_add(GEN_ONE));
        if old & count.acquire_slow() != 0 {
            return self.acquire_slow(self.pfn_of(hd), pfn, count, old, gen, who);
        }
        hd.owner.store(slot::encode(who, gen, count == Count::Pin), Relaxed);
        Ok(Ticket::unrecorded(gen))
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
        who: Acquirer,
    ) -> Result<Ticket, AcquireError> {
        if old & state::EXCLUSIVE != 0 {
            // A leaked `BytesMut` (a live one borrows the block): refused
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
    /// descriptor and the acquisition's ticket.
    #[inline]
    pub(crate) fn acquire_pfn(
        &self,
        pfn: Pfn,
        count: Count,
        who: Acquirer,
        raw: bool,
    ) -> Result<(&Descriptor, Ticket), AcquireError> {
        // One bounds check: the table has one descriptor per page.
        let Some(d) = self.descs.get(pfn) else { return Err(self.out_of_range(pfn)) };
        let p = pfn as u32;
        let old = d.state.load(Relaxed);
        let new = old.wrapping_add(count.acquire_delta());
        if state::is_live_head(old)
            && old & count.acquire_slow() == 0
            && d.state.compare_exchange(old, new, Acquire, Relaxed).is_ok()
        {
            d.owner.store(slot::encode(who, state::gen(new), count == Count::Pin), Relaxed);
            return Ok((d, Ticket::unrecorded(state::gen(new))));
        }
        self.acquire_pfn_slow(p, count, who, raw)
    }

    /// A reference by number on a pinned, live, unarmed head (the common
    /// slow case: a reader of a buffer its driver pinned): the count alone,
    /// without the general slow path's block search. `None`: not that case,
    /// or the word moved; take the general path.
    #[inline]
    fn acquire_pfn_pinned(&self, d: &Descriptor, count: Count) -> Option<u16> {
        let old = d.state.load(Relaxed);
        if !state::is_live_head(old) || old & state::ACQUIRE_SLOW != 0 || count.claims(old) {
            return None;
        }
        let new = old.wrapping_add(count.one());
        d.state.compare_exchange(old, new, Acquire, Relaxed).ok()?;
        Some(state::gen(new) | slot::UNCLAIMED)
    }

    #[cold]
    #[inline(never)]
    fn acquire_pfn_slow(
        &self,
        pfn: u32,
        count: Count,
        who: Acquirer,
        raw: bool,
    ) -> Result<(&Descriptor, Ticket), AcquireError> {
        let d = self.desc(pfn);
        if let Some(gen) = self.acquire_pfn_pinned(d, count) {
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
                let claims = count.claims(old);
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
        let mut p = start;
        while p < end {
            let Some((head, _)) = self.head_of(p) else {
                p += 1;
                continue;
            };
            let w = self.desc(head).state.load(Acquire);
            f(head, w);
            p = (head + (1u32 << state::order(w))).max(p + 1);
        }
    }

    /// The acquirer of a live block's latest claiming acquisition, if that
    /// holder still holds it (the head's owner slot carries the generation
    /// of the block's word `w`: never a guess), with the block's head and
    /// whether the acquisition was a pin.
    pub(crate) fn latest_hold(&self, head: u32, w: u64) -> Option<(Pfn, Acquirer, bool)> {
        let word = self.desc(head).owner.load(Acquire);
        slot::decode_if_current(word, state::gen(w)).map(|a| (head as Pfn, a, slot::is_pin(word)))
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
                return self.release_last(self.pfn_of(hd), pfn, count, mine, old);
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
    /// slot is current (it may be the one the slot names), and only then,
    /// so a stale slot never comes back to life (see [`slot`]).
    #[inline(always)]
    fn release_delta(count: Count, mine: Option<u16>, old: u64, hd: &Descriptor) -> u64 {
        let latest = match mine {
            Some(g) => g == state::gen(old),
            None => slot::is_current(hd.owner.load(Relaxed), state::gen(old)),
        };
        if latest {
            count.release_delta()
        } else {
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
    #[inline(never)]
    fn release_last(&self, head: u32, pfn: u32, count: Count, mine: Option<u16>, old: u64) {
        let zone = self.zone_for(head);
        let cache = Self::cache_bound(zone, old);
        let new = Self::last_release_word(old, count, mine, cache.is_some(), self.desc(head));
        if let Err(cur) = self.desc(head).state.compare_exchange(old, new, Release, Relaxed) {
            return self.release_slow(head, pfn, count, mine, cur, 0);
        }
        self.free_released(zone, cache, head, state::order(old));
    }

    /// The cache a block whose last count is dropped from word `old` goes
    /// to: the zone's, if it caches the block's order and the block lies
    /// outside any isolated window (decided inside the release's
    /// compare-and-swap, so `ISOLATED` is checked atomically with it).
    #[inline(always)]
    fn cache_bound(zone: &Zone, old: u64) -> Option<&Pcp> {
        zone.pcp.as_ref().filter(|p| p.caches(state::order(old)) && old & state::ISOLATED == 0)
    }

    /// The word the last release writes: a count-zero head, or a cached
    /// free block (`FREE | PCP`) when it goes to a cache.
    #[inline(always)]
    fn last_release_word(old: u64, count: Count, mine: Option<u16>, cached: bool, hd: &Descriptor) -> u64 {
        let new = old.wrapping_add(Self::release_delta(count, mine, old, hd));
        if cached {
            crate::alloc::free_head_word(new, state::order(old), PCP)
        } else {
            new
        }
    }

    /// Frees a block whose last count the caller's compare-and-swap just
    /// dropped: into `cache`, or to the buddy lists.
    #[inline(always)]
    fn free_released(&self, zone: &Zone, cache: Option<&Pcp>, head: u32, order: u8) {
        // Like `Arc`: every holder's release was `Release`; this acquire
        // makes all their accesses happen before the block is reused.
        fence(Acquire);
        match cache {
            Some(pcp) => self.free_to_cache(zone, pcp, head, order),
            None => self.free_block(head, order),
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
        if old & TRACKED != 0 {
            // The word as a release of the count alone leaves it (not the
            // cached free word the last release may have written).
            let new = if cache.is_some() { old.wrapping_add(Self::release_delta(count, mine, old, hd)) } else { new };
            let site = crate::site::current().map(Acquirer::Site);
            let kind = count.release_kind();
            let raw = mine.is_none();
            self.record_armed(Change {
                kind,
                pfn,
                head,
                old,
                new,
                who: site,
                gen: mine,
                raw,
                hold,
                from_arming: false,
            });
            if old & COUNTS == count.one() {
                self.record_freed(head, old, new);
            }
        } else if hold != 0 {
            self.close_hold(hold);
        }
        if last {
            self.free_released(zone, cache, head, state::order(old));
        }
    }

    // ----- inspection ----------------------------------------------------

    /// A snapshot of a page: block, zone, state and attributed acquirer.
    ///
    /// # Errors
    ///
    /// [`AcquireError::OutOfRange`] for a page beyond the arena.
    pub fn page_info(&self, pfn: Pfn) -> Result<PageInfo, AcquireError> {
        let p = self.check_pfn(pfn)?;
        let zone = self.zone_for(p).kind;
        for _ in 0..16 {
            let Some((head, _)) = self.head_of(p) else {
                crate::sync::spin_hint();
                continue;
            };
            let hd = self.desc(head);
            let s1 = hd.state.load(Acquire);
            let owner = hd.owner.load(Acquire);
            fence(Acquire);
            let s2 = hd.state.load(Relaxed);
            if s1 != s2 || s1 & HEAD == 0 {
                continue;
            }
            let mut state = PageState::from_word(s1);
            let own = PageState::from_word(self.desc(p).state.load(Relaxed)).flags;
            state.flags = state.flags | (own & (crate::PageFlags::ISOLATED | crate::PageFlags::TRACKED));
            let live = s1 & FREE == 0 && s1 & COUNTS != 0;
            let acquirer = if live { slot::decode_if_current(owner, state::gen(s1)) } else { None };
            return Ok(PageInfo { pfn, head: head as Pfn, zone, state, acquirer });
        }
        // A page whose block is being split or merged right now: report it
        // with its own word.
        let w = self.desc(p).state.load(Acquire);
        Ok(PageInfo { pfn, head: pfn, zone, state: PageState::from_word(w), acquirer: None })
    }

    /// The state of a page's block.
    ///
    /// # Errors
    ///
    /// [`AcquireError::OutOfRange`] for a page beyond the arena.
    pub fn page_state(&self, pfn: Pfn) -> Result<PageState, AcquireError> {
        self.page_info(pfn).map(|i| i.state)
    }

    /// Takes a reference on page `pfn`; dropping the [`PageRef`] puts it.
    ///
    /// # Errors
    ///
    /// [`AcquireError`] if the page is out of range, free, lent out
    /// exclusively, or at its reference limit. Nothing changes on error.
    ///
    /// [`PageRef`]: crate::PageRef
    #[track_caller]
    #[inline]
    pub fn get(&self, pfn: Pfn) -> Result<crate::PageRef<&PageArena>, AcquireError> {
        let who = crate::owner_here();
        let (hd, gen) = self.acquire_pfn(pfn, Count::Ref, who, false)?;
        Ok(crate::PageRef::from_parts(self, hd, pfn as u32, gen))
    }

    /// Pins page `pfn` (a long-lived count, kept apart from references);
    /// dropping the [`PagePin`] unpins it.
    ///
    /// # Errors
    ///
    /// As for [`get`](Self::get), with the pin limit.
    ///
    /// [`PagePin`]: crate::PagePin
    #[track_caller]
    #[inline]
    pub fn pin(&self, pfn: Pfn) -> Result<crate::PagePin<&PageArena>, AcquireError> {
        let who = crate::owner_here();
        let (hd, gen) = self.acquire_pfn(pfn, Count::Pin, who, false)?;
        Ok(crate::PagePin::from_parts(self, hd, pfn as u32, gen))
    }

    /// [`get`](Self::get) for an arena shared through `Arc`.
    ///
    /// # Errors
    ///
    /// As for [`get`](Self::get).
    #[track_caller]
    pub fn get_owned(
        self: &std::sync::Arc<Self>,
        pfn: Pfn,
    ) -> Result<crate::PageRef<std::sync::Arc<PageArena>>, AcquireError> {
        let who = crate::owner_here();
        let (hd, gen) = self.acquire_pfn(pfn, Count::Ref, who, false)?;
        Ok(crate::PageRef::from_parts(self.clone(), hd, pfn as u32, gen))
    }

    /// [`pin`](Self::pin) for an arena shared through `Arc`.
    ///
    /// # Errors
    ///
    /// As for [`pin`](Self::pin).
    #[track_caller]
    pub fn pin_owned(
        self: &std::sync::Arc<Self>,
        pfn: Pfn,
    ) -> Result<crate::PagePin<std::sync::Arc<PageArena>>, AcquireError> {
        let who = crate::owner_here();
        let (hd, gen) = self.acquire_pfn(pfn, Count::Pin, who, false)?;
        Ok(crate::PagePin::from_parts(self.clone(), hd, pfn as u32, gen))
    }
}
