//! The arena: descriptors over a region, zones, and the count operations.

mod builder;
mod counted;
mod counts;
mod handles;
mod raw;
mod verify;

pub use builder::{ArenaBuilder, DEFAULT_MAX_ORDER, MAX_PAGES};
pub use verify::VerifyError;

use core::ptr::NonNull;

use crate::alloc::{FragStats, FreeArea, Lists, Pcp, Zone, ZoneFrag, ZoneKind};
use crate::error::{AcquireError, AllocError, Largest};
use crate::page::slot::{self, Acquirer, Who};
use crate::page::state::{self, COUNTS, FREE, HEAD, PCP};
use crate::page::{Descriptor, PageState};
use crate::region::{BackingKind, Region};
use crate::sync::Ordering::{Acquire, Relaxed, Release};
use crate::sync::{fence, Gauge, RemoteGuard, ShardedMap};
use crate::Pfn;

pub(crate) use raw::RawCounts;

/// A page arena: pages over one region, with refcounts, pins, a buddy
/// allocator in two zones, and owner attribution. See the [crate
/// docs](crate) for the model.
///
/// ```
/// use std::sync::Arc;
/// use pinowner::{PageArena, ZoneKind};
///
/// // 1 MiB of 4 KiB pages; the top quarter is the movable zone.
/// let arena = PageArena::builder().capacity(1 << 20).movable_capacity(256 << 10).build()?;
/// assert_eq!((arena.pages(), arena.page_size()), (256, 4096));
/// assert_eq!(arena.zone_range(ZoneKind::Movable), 192..256);
///
/// let block = arena.alloc(3)?; // 8 pages from the normal zone
/// let frame = arena.alloc_movable(0)?; // 1 page from the movable zone
/// assert_eq!(arena.zone_of(frame.pfn()), Some(ZoneKind::Movable));
/// assert_eq!(arena.free_pages(), 256 - 9);
/// drop((block, frame));
/// assert!(arena.audit().is_clean(), "nothing held");
///
/// // Shared through an Arc, handles are 'static (for threads and tasks).
/// let arena = Arc::new(arena);
/// let owned = arena.alloc_owned(0)?;
/// std::thread::spawn(move || drop(owned)).join().unwrap();
/// assert_eq!(arena.free_pages(), 256);
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
///
/// The type parameter is the [attribution policy](crate::policy): [`Exact`]
/// by default; a `PageArena<CountsOnly>` ([`ArenaBuilder::attribution`])
/// makes its handles' clones and drops one atomic add or subtract each and
/// reaches every other operation through `Deref` to the exact arena.
///
/// [`Exact`]: crate::Exact
// `repr(C)`: arenas of every policy have one layout (the policy is a
// zero-sized marker, last), so an arena of any policy is also an exact one
// (`exact`).
#[derive(Debug)]
pub struct PageArena<P = crate::Exact> {
    /// Normal, then movable (either may be empty). First: the zones are
    /// cache-line aligned, and `repr(C)` keeps the declared order.
    pub(crate) zones: [Zone; 2],
    pub(crate) region: Region,
    pub(crate) descs: Box<[Descriptor]>,
    pub(crate) pages: u32,
    pub(crate) page_shift: u32,
    pub(crate) max_order: u8,
    /// Raw references and pins per page, so a raw release can only drop a
    /// count a raw acquire took.
    pub(crate) raw: ShardedMap<RawCounts>,
    /// The owner tracker, allocated on first arming (or at build in eager
    /// mode).
    pub(crate) tracker: crate::tracker::TrackerCell,
    /// Movable allocations and migration history, made on the first
    /// movable allocation.
    pub(crate) moves: std::sync::OnceLock<crate::migrate::MoveTable>,
    /// What dropping the arena does when pages are still held.
    pub(crate) leak_check: crate::audit::LeakCheck,
    /// Reservation counters (allocation counters live in the caches and
    /// zones); see [`stats`](Self::stats).
    pub(crate) reserve_counters: crate::stats::ReserveCounters,
    /// Per-page side bits (pages known to be zero); see [`crate::page::ext`].
    pub(crate) ext: std::sync::Arc<crate::page::ext::PageExt>,
    /// Free page reporting: settings and counters; see [`crate::reporting`].
    pub(crate) reporting: crate::reporting::ReportState,
    /// Page poisoning's mode; see [`crate::poison`].
    pub(crate) poison: crate::poison::Poison,
    /// Per zone, the orders an allocation takes from the calling thread's
    /// cache on the inline fast path ([`alloc_in`](Self::alloc_in)): the
    /// zone's cached orders, or none if it has no caches or the arena
    /// poisons pages or tracks eagerly. Fixed at build.
    pub(crate) fast_orders: [u32; 2],
    /// Poison mismatches found, and the blocks quarantined.
    pub(crate) quarantine: crate::sync::Mutex<crate::poison::Quarantine>,
    /// The attribution policy, a marker (`fn() -> P`: `Send` and `Sync`
    /// whatever `P` is).
    pub(crate) policy: core::marker::PhantomData<fn() -> P>,
}

impl<P> PageArena<P> {
    /// The same arena, as an exact one: what it offers besides handles
    /// (reservations, reports, statistics, long-term and range pins, the
    /// raw API) is the same under both policies and written once, for
    /// `PageArena<Exact>`. A `PageArena<CountsOnly>` also reaches it by
    /// `Deref`; this is for code generic over the policy.
    ///
    /// ```
    /// use pinowner::{Attribution, PageArena};
    ///
    /// fn free_share<P: Attribution>(arena: &PageArena<P>) -> f64 {
    ///     arena.exact().free_pages() as f64 / arena.exact().pages() as f64
    /// }
    /// let arena = PageArena::builder().pages(16).build()?;
    /// assert_eq!(free_share(&arena), 1.0);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    #[inline(always)]
    pub fn exact(&self) -> &PageArena {
        // Both types are `repr(C)` with the same fields but for the
        // zero-sized, align-1 marker at the end: one layout.
        // SAFETY: so `self` is a valid `PageArena` for as long as it lives.
        unsafe { &*(self as *const Self).cast::<PageArena>() }
    }

    /// The same shared arena, as an exact one (one more strong count on
    /// the same allocation): for the operations that take `self:
    /// &Arc<PageArena>` (the `_owned` reservations, the background
    /// reporter) on an arena of another policy.
    ///
    /// ```
    /// use std::sync::Arc;
    /// use pinowner::{CountsOnly, PageArena, Reason};
    ///
    /// let arena: Arc<PageArena<CountsOnly>> =
    ///     Arc::new(PageArena::builder().pages(16).movable_pages(8).attribution().build()?);
    /// let run = arena.exact_arc().reserve_contig_owned(8, 8, Reason::Contig)?; // 'static
    /// assert_eq!(run.pages(), 8);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn exact_arc(self: &std::sync::Arc<Self>) -> std::sync::Arc<PageArena> {
        let raw = std::sync::Arc::into_raw(self.clone());
        // `Arc::from_raw` takes a pointer from `Arc<U>::into_raw` for a `U`
        // of the same size and alignment: the two types share one layout
        // (see `exact`), and dropping either drops the same fields through
        // the same `Drop`.
        // SAFETY: so the new `Arc` owns the count `into_raw` gave up.
        unsafe { std::sync::Arc::from_raw(raw.cast::<PageArena>()) }
    }
}

impl PageArena {
    /// This arena with policy `P`: the same value (one layout), moved.
    #[inline(always)]
    pub(crate) fn with_policy<P>(self) -> PageArena<P> {
        let this = core::mem::ManuallyDrop::new(self);
        // Both types are `repr(C)` with the same fields but for the
        // zero-sized marker: one layout. `this` is never used or dropped
        // again, so the value moves exactly once.
        // SAFETY: so the read is of a valid `PageArena<P>`, owned once.
        unsafe { core::ptr::read((&*this as *const PageArena).cast::<PageArena<P>>()) }
    }
}

/// A counts-only arena is an exact arena whose handles count without
/// attribution: everything else (reservations, reports, statistics, movable
/// blocks, long-term and range pins, the raw API) is the exact arena's.
impl core::ops::Deref for PageArena<crate::CountsOnly> {
    type Target = PageArena;

    #[inline(always)]
    fn deref(&self) -> &PageArena {
        self.exact()
    }
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

    /// The ticket as one number (for handles that pack it with a page).
    #[inline(always)]
    pub(crate) const fn bits(self) -> u32 {
        self.0
    }

    /// The ticket of [`bits`](Self::bits).
    #[inline(always)]
    pub(crate) const fn from_bits(bits: u32) -> Ticket {
        Ticket(bits)
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
    /// How often the data on this page moved here, and why last; `None`
    /// if it never did.
    pub migrated: Option<crate::migrate::Migrated>,
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
        self.region.fallback.as_ref().map(|f| f.why.as_str())
    }

    /// The first byte of the arena's memory, like
    /// [`MmapMut::as_ptr`](https://docs.rs/memmap2/latest/memmap2/struct.MmapMut.html#method.as_ptr).
    ///
    /// **Layout promise:** page `pfn` starts at `as_ptr() + pfn *
    /// page_size()` and the region never moves or shrinks while the arena
    /// lives, so the whole arena can be registered once (io_uring
    /// `register_buffers`, an RDMA memory region, a VFIO DMA map) and any
    /// block found in it by address ([`ptr_to_pfn`](Self::ptr_to_pfn)).
    ///
    /// The pointer is for devices and FFI: reading or writing a page
    /// through it is `unsafe` and allowed only for pages you hold (a
    /// [`Block`](crate::Block), [`PageRef`](crate::PageRef), [`PagePin`](crate::PagePin)
    /// or run), without racing the page's other holders (see
    /// [`PagePin::bytes`](crate::PagePin::bytes) for the content-lock
    /// pattern).
    ///
    /// ```
    /// let arena = pinowner::PageArena::builder().pages(16).build()?;
    /// let block = arena.alloc(1)?;
    /// let base = arena.as_ptr().as_ptr() as usize;
    /// assert_eq!(block.as_ptr().as_ptr() as usize, base + block.pfn() * arena.page_size());
    /// assert_eq!(arena.len(), 16 * arena.page_size());
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn as_ptr(&self) -> NonNull<u8> {
        self.region.base()
    }

    /// Bytes of memory: [`pages`](Self::pages) times
    /// [`page_size`](Self::page_size).
    pub fn len(&self) -> usize {
        self.region.len()
    }

    /// Always false: an arena has at least one page.
    pub fn is_empty(&self) -> bool {
        false
    }

    /// The first byte of page `pfn`: `as_ptr() + pfn * page_size()` (see
    /// [`as_ptr`](Self::as_ptr) for the promise and for what the pointer
    /// may be used for).
    ///
    /// # Errors
    ///
    /// [`AcquireError::OutOfRange`] naming the page and the arena's size if
    /// `pfn` is not below [`pages`](Self::pages).
    ///
    /// ```
    /// let arena = pinowner::PageArena::builder().pages(16).build()?;
    /// let pin = arena.alloc(0)?.pin(0)?;
    /// assert_eq!(arena.pfn_to_ptr(pin.pfn())?, pin.as_ptr());
    /// assert!(arena.pfn_to_ptr(16).is_err());
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn pfn_to_ptr(&self, pfn: Pfn) -> Result<NonNull<u8>, AcquireError> {
        let p = self.check_pfn(pfn)?;
        let (off, len) = self.byte_range(p, 0);
        Ok(self.region.ptr(off, len).cast())
    }

    /// The page holding the byte at `ptr`, if it lies inside the arena: any
    /// address inside a page maps to that page (the inverse of
    /// [`pfn_to_ptr`](Self::pfn_to_ptr)), so a completion that carries only
    /// a buffer address finds its page. `None` for addresses outside
    /// `as_ptr()..as_ptr() + len()`.
    ///
    /// ```
    /// let arena = pinowner::PageArena::builder().pages(16).build()?;
    /// let block = arena.alloc(2)?;
    /// let last = block.as_ptr().as_ptr().wrapping_add(block.len() - 1);
    /// assert_eq!(arena.ptr_to_pfn(last), Some(block.pfn() + 3));
    /// assert_eq!(arena.ptr_to_pfn(&0u8), None);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn ptr_to_pfn<T: ?Sized>(&self, ptr: *const T) -> Option<Pfn> {
        let off = ptr.addr().wrapping_sub(self.region.base().as_ptr().addr());
        (off < self.region.len()).then_some(off >> self.page_shift)
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

    /// Zeroes a block just allocated, except the pages known to be zero
    /// already (discarded: see [`crate::page::ext`]), which stay untouched
    /// (on an anonymous arena, not even faulted in).
    pub(crate) fn zero_block(&self, pfn: u32, order: u8) {
        self.ext.take_zeroed(pfn, 1 << order, |first, pages| {
            let (off, _) = self.byte_range(first, 0);
            let len = (pages as usize) << self.page_shift;
            // `first..first + pages` lies inside the block just allocated.
            // SAFETY: no handle to it exists yet: its bytes are ours alone.
            unsafe { self.region.zero(off, len) };
        });
    }

    /// A block just allocated goes to an owner who may write it: it is no
    /// longer known to be zero. Returns `pfn`.
    #[inline(always)]
    pub(crate) fn handed_out(&self, pfn: u32, order: u8) -> u32 {
        self.ext.handed_out(pfn, order);
        pfn
    }

    #[inline]
    pub(crate) fn byte_range(&self, pfn: u32, order: u8) -> (usize, usize) {
        ((pfn as usize) << self.page_shift, 1usize << (self.page_shift + order as u32))
    }

    /// Allocates and returns the block's head and the ticket of its first
    /// reference, taken by `who`. `claim`: that reference claims the owner
    /// slot (the exact policy); else the slot names nobody (eager mode still
    /// records `who` as the allocator).
    ///
    /// Inline: a block of a cached order from the calling thread's own
    /// cache, when it has one and it is not empty (no poisoning, no eager
    /// tracking); everything else is [`alloc_general`](Self::alloc_general),
    /// out of line.
    #[inline(always)]
    pub(crate) fn alloc_in(
        &self,
        order: u8,
        movable: bool,
        who: Who,
        claim: bool,
    ) -> Result<(u32, Ticket), AllocError> {
        match self.alloc_fast(order, movable, who, claim) {
            Some(got) => Ok(got),
            None => self.alloc_general(order, movable, who, claim),
        }
    }

    /// [`alloc_in`](Self::alloc_in)'s fast path alone: `None` if it does
    /// not apply, having changed nothing.
    #[inline(always)]
    pub(crate) fn alloc_fast(&self, order: u8, movable: bool, who: Who, claim: bool) -> Option<(u32, Ticket)> {
        let (pfn, word) = self.alloc_cached(order, movable)?;
        Some((pfn, self.claim_first(pfn, word, who, claim)))
    }

    /// [`alloc_in`](Self::alloc_in) past its fast path: poisoning, eager
    /// tracking, an empty or missing cache, the buddy lists, the fallbacks.
    #[inline]
    pub(crate) fn alloc_general(
        &self,
        order: u8,
        movable: bool,
        who: Who,
        claim: bool,
    ) -> Result<(u32, Ticket), AllocError> {
        if self.poison != crate::poison::Poison::Off {
            return self.alloc_poisoned(order, movable, who, claim);
        }
        self.alloc_unchecked(order, movable, who, claim)
    }

    /// The allocation fast path: a block of `order` popped from the calling
    /// thread's own cache of the zone (`movable`'s), if the order is one of
    /// the zone's [`fast_orders`](Self::fast_orders), the thread has a
    /// cache, no remote holds it, and it is not empty; `None` otherwise,
    /// having changed nothing. Returns the head and its new word.
    #[inline(always)]
    fn alloc_cached(&self, order: u8, movable: bool) -> Option<(u32, u64)> {
        if !crate::alloc::has_order(self.fast_orders[movable as usize], order) {
            return None;
        }
        let pcp = self.zones[movable as usize].pcp.as_ref()?;
        let flags = if movable { state::MOVABLE } else { 0 };
        pcp.try_mine(|lists, pages| self.take_cached(lists, pages, order, flags)).flatten()
    }

    /// The first reference of a block just allocated (head `pfn`, word
    /// `word`): claims the owner slot for `who` if `claim` (else names
    /// nobody); returns its ticket. Without eager tracking.
    #[inline(always)]
    fn claim_first(&self, pfn: u32, word: u64, who: Who, claim: bool) -> Ticket {
        let named = if claim { who } else { Who::NONE };
        // SAFETY: the allocator hands out page numbers of its zones, below
        // `pages`.
        let d = unsafe { self.desc_unchecked(pfn) };
        d.owner.store(slot::encode(named, state::gen(word), false), Relaxed);
        Ticket::unrecorded(state::gen(word))
    }

    /// [`alloc_in`](Self::alloc_in) without page poisoning's check.
    #[inline(always)]
    pub(crate) fn alloc_unchecked(
        &self,
        order: u8,
        movable: bool,
        who: Who,
        claim: bool,
    ) -> Result<(u32, Ticket), AllocError> {
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
        let mut ticket = self.claim_first(pfn, word, who, claim);
        if self.tracker.config.eager {
            ticket = Ticket::new(ticket.gen(), self.eager_arm(pfn, word, who));
        }
        Ok((pfn, ticket))
    }

    /// The first zone had nothing: a movable allocation falls back to the
    /// normal zone; if that fails too, the zones' thread caches are drained
    /// and the lists tried once more; then out of memory.
    #[cold]
    #[inline(never)]
    fn alloc_fallback(&self, order: u8, movable: bool, flags: u64) -> Result<(u32, u64), AllocError> {
        let first = if movable { &self.zones[1] } else { &self.zones[0] };
        let fallback = Some(&self.zones[0]).filter(|z| movable && z.pages() != 0);
        if let Some(zone) = fallback {
            let got = match (&zone.pcp, order) {
                (Some(pcp), o) if pcp.caches(o) => self.alloc_pcp(zone, pcp, o, flags),
                _ => self.alloc_buddy(zone, order, flags),
            };
            if let Some(got) = got {
                return Ok(got);
            }
        }
        // Before failing, what other threads' caches hold goes back to the
        // lists, where it can coalesce, and the lists are tried once more
        // (the kernel's `drain_all_pages` before an allocation gives up).
        let tried = [Some(first), fallback];
        let tried = tried.iter().flatten().filter(|z| z.pages() != 0);
        if tried.clone().map(|z| self.drain_zone(z)).sum::<usize>() != 0 {
            if let Some(got) = tried.clone().find_map(|z| self.alloc_buddy(z, order, flags)) {
                return Ok(got);
            }
        }
        let last = fallback.unwrap_or(first);
        let mut area = last.area.lock();
        // The largest block as an eager buddy would list it.
        area.settle(&self.descs);
        area.counts.failure(order);
        let largest = (0..=area.max_order).rev().find(|&o| area.count(o) > 0);
        Err(AllocError::OutOfMemory { order, zone: last.kind, free: area.free_pages, largest: Largest(largest) })
    }

    /// A block from the buddy lists, marked allocated under the lock (a
    /// free-looking head that is in no list would be "coalesced" by a
    /// concurrent free). Returns its head and new state word. The zone
    /// path: under the lazy lock, where a block freed here last comes
    /// back first, unsplit (see "Deferred coalescing" in `alloc::buddy`).
    #[inline]
    fn alloc_buddy(&self, zone: &Zone, order: u8, flags: u64) -> Option<(u32, u64)> {
        let mut area = zone.area.lock();
        let pfn = area.take(&self.descs, order)?;
        let word = area.mark_allocated(self.desc(pfn), order, flags);
        area.counts.alloc(order);
        Some((pfn, word))
    }

    /// A block of a cached order from the calling thread's cache, refilled
    /// from the buddy lists when empty; from the buddy lists directly for a
    /// thread without a cache. Returns the head and its new state word.
    #[inline(always)]
    fn alloc_pcp(&self, zone: &Zone, pcp: &Pcp, order: u8, flags: u64) -> Option<(u32, u64)> {
        let take = |cache: &mut Lists, pages: &Gauge| {
            if let Some(got) = self.take_cached(cache, pages, order, flags) {
                return Some(got);
            }
            self.refill(zone, pcp, order, cache, pages)?;
            self.take_cached(cache, pages, order, flags)
        };
        pcp.with_mine(take, || self.alloc_buddy(zone, order, flags))
    }

    /// Inside the calling thread's cache: pops a block of `order` and makes
    /// it allocated with `flags`; `None` if the list is empty. Returns the
    /// head and its new word.
    #[inline(always)]
    fn take_cached(&self, cache: &mut Lists, pages: &Gauge, order: u8, flags: u64) -> Option<(u32, u64)> {
        let pfn = cache.pop(order)?;
        // Inside the cache: its count has one writer at a time.
        pages.set(pages.get().wrapping_sub(1 << order));
        // A plain store inside the cache: see `alloc::pcp` for why nothing
        // else writes the word meanwhile. The caches hold page numbers of
        // their zone (a handle's head, or a refill).
        // SAFETY: so `pfn` is below `pages`.
        let d = unsafe { self.desc_unchecked(pfn) };
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
    }

    /// Moves a batch of blocks of `order` from the buddy lists into an
    /// empty cache list (its owner inside the cache), counting them into
    /// the list and `pages`; `None` if the buddy lists had none.
    #[cold]
    #[inline(never)]
    fn refill(&self, zone: &Zone, pcp: &Pcp, order: u8, cache: &mut Lists, pages: &Gauge) -> Option<()> {
        let mut area = zone.area.lock();
        let list = cache.of(order);
        for _ in 0..pcp.batch(order) {
            let Some(p) = area.take(&self.descs, order) else { break };
            // Cached blocks are marked PCP, which keeps coalescing away
            // from them, also after they leave the cache.
            area.mark_free_head(self.desc(p), order, PCP);
            list.push(p);
        }
        let moved = list.len();
        if moved == 0 {
            return None;
        }
        cache.count_refill(order, moved);
        pages.set(pages.get() + (moved << order));
        Some(())
    }

    /// Returns a block of a cached order, already marked as a cached free
    /// block by the release that freed it, to the calling thread's cache (a
    /// list over its high mark returns a batch to the buddy lists), or to
    /// the buddy lists if the thread has no cache.
    #[inline(always)]
    fn free_to_cache(&self, zone: &Zone, pcp: &Pcp, head: u32, order: u8) {
        pcp.with_mine(
            |cache, pages| {
                // Inside the cache: its count has one writer at a time.
                pages.set(pages.get() + (1 << order));
                if cache.push(order, head).expect("a thread cache list at its capacity") {
                    self.flush(zone, pcp, order, cache, pages);
                }
            },
            || self.free_uncached(zone, head, order),
        )
    }

    /// A cached free block of a thread without a cache goes to the buddy
    /// lists: [`free_block`](Self::free_block), out of line (the rare case).
    #[cold]
    #[inline(never)]
    fn free_uncached(&self, zone: &Zone, head: u32, order: u8) {
        self.free_block(zone, head, order);
    }

    /// Returns a batch of the list of `order` (over its high mark) to the
    /// buddy lists, counting it out of the cache and `pages`.
    #[cold]
    #[inline(never)]
    pub(crate) fn flush(&self, zone: &Zone, pcp: &Pcp, order: u8, cache: &mut Lists, pages: &Gauge) {
        let list = cache.of(order);
        let n = pcp.batch(order).min(list.len());
        let mut area = zone.area.lock();
        for p in list.drain(..n) {
            area.give(&self.descs, zone, p, order);
        }
        drop(area);
        cache.count_flush(order, n);
        pages.set(pages.get() - (n << order));
    }

    /// Returns a block of `zone` whose last count was just dropped to the
    /// buddy lists, by the zone path: a merge with a free buddy may be deferred (see
    /// "Deferred coalescing" in `alloc::buddy`).
    #[inline(always)]
    pub(crate) fn free_block(&self, zone: &Zone, head: u32, order: u8) {
        let mut area = zone.area.lock();
        area.counts.free(order);
        area.give_lazy(&self.descs, zone, head, order);
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
        match &zone.pcp {
            Some(pcp) if !caches.is_empty() => pcp.drain(caches, |p, o| area.give(&self.descs, zone, p, o)),
            _ => 0,
        }
    }

    /// Returns every page parked in per-thread caches to the buddy lists, so
    /// that it can coalesce and serve higher orders. Returns the number of
    /// pages drained.
    pub fn drain_thread_caches(&self) -> usize {
        self.zones.iter().map(|z| self.drain_zone(z)).sum()
    }

    /// Empties `zone`'s thread caches into its buddy lists (one barrier);
    /// returns the pages drained.
    pub(crate) fn drain_zone(&self, zone: &Zone) -> usize {
        let Some(pcp) = &zone.pcp else { return 0 };
        let mut caches = pcp.lock_all();
        self.drain_caches(zone, &mut caches, &mut zone.area.lock())
    }

    /// Free pages in all zones: in the lists, in thread caches, and in a
    /// batch the free page reporter holds off the lists for a moment.
    ///
    /// Reads counters the allocator keeps: O(zones + caches), without a
    /// lock, an allocation or a barrier, so it can be polled while other
    /// threads allocate. Exact when no allocation, free, report or
    /// reservation is running; while some run, the sum of counts each zone
    /// and each cache had at some instant of the call, off by at most the
    /// pages moving meanwhile. [`frag_stats`](Self::frag_stats) takes the
    /// locks and gives the breakdown.
    pub fn free_pages(&self) -> usize {
        self.zones.iter().map(Zone::free_pages).sum()
    }

    /// Fragmentation statistics: free blocks per order, largest free run,
    /// and the unusable-free-space and fragmentation indexes per order.
    pub fn frag_stats(&self) -> FragStats {
        let mut zones = Vec::new();
        for zone in &self.zones {
            if zone.pages() == 0 {
                continue;
            }
            // The caches stay held while the lists are read (cache, then
            // zone: the lock order everywhere), so no page is counted both
            // cached and listed: a flush or drain in between moved cached
            // pages to the lists after they were counted in the cache.
            let mut caches = self.lock_caches(zone);
            let cached: usize = caches.iter_mut().map(|c| c.with(|c| c.listed_pages())).sum();
            let mut area = zone.area.lock();
            // The lists as an eager buddy leaves them: what the zone path
            // left unmerged merges now (see `alloc::buddy`).
            area.settle(&self.descs);
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
                reported_blocks: (0..=area.max_order).map(|o| area.reported(o)).collect(),
                reported_pages: (0..=area.max_order).map(|o| area.reported(o) << o).sum(),
                reporting_pages: area.reporting_pages,
                poisoned_pages: self.ext.count_in(crate::page::ext::Mark::Poisoned, zone.start, zone.pages()),
            });
            drop(area);
            drop(caches);
        }
        FragStats { zones }
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
            // `IDLE` shows idle tracking's answer: the bit is also the
            // reclaim clock's detector, so it counts only while idle
            // tracking watches the block (see `crate::idle`).
            let unwatched = s1 & state::IDLE != 0 && !self.ext.test(crate::page::ext::Mark::Watched, head);
            let mut state = PageState::from_word(if unwatched { s1 & !state::IDLE } else { s1 });
            let own = PageState::from_word(self.desc(p).state.load(Relaxed)).flags;
            state.flags =
                state.flags | (own & (crate::PageFlags::ISOLATED | crate::PageFlags::TRACKED)) | self.side_flags(p);
            let live = s1 & FREE == 0 && s1 & COUNTS != 0;
            let acquirer = if live { slot::decode_if_current(owner, state::gen(s1)) } else { None };
            return Ok(PageInfo { pfn, head: head as Pfn, zone, state, acquirer, migrated: self.migrated(p) });
        }
        // A page whose block is being split or merged right now: report it
        // with its own word.
        let w = self.desc(p).state.load(Acquire);
        let mut state = PageState::from_word(w);
        state.flags = state.flags | self.side_flags(p);
        Ok(PageInfo { pfn, head: pfn, zone, state, acquirer: None, migrated: self.migrated(p) })
    }

    /// The side flags of page `p` (`REPORTED`, `ZEROED`, `POISONED`): see `page::ext`.
    fn side_flags(&self, p: u32) -> crate::PageFlags {
        use crate::page::ext::Mark;
        let mut f = crate::PageFlags::default();
        for (mark, flag) in [
            (Mark::Reported, crate::PageFlags::REPORTED),
            (Mark::Zeroed, crate::PageFlags::ZEROED),
            (Mark::Poisoned, crate::PageFlags::POISONED),
        ] {
            if self.ext.test(mark, p) {
                f = f | flag;
            }
        }
        f
    }

    /// The state of a page's block.
    ///
    /// # Errors
    ///
    /// [`AcquireError::OutOfRange`] for a page beyond the arena.
    pub fn page_state(&self, pfn: Pfn) -> Result<PageState, AcquireError> {
        self.page_info(pfn).map(|i| i.state)
    }
}
