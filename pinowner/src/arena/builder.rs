//! Building an arena: geometry checks, region, descriptors, zones.

use crate::alloc::{ThreadCache, Zone, ZoneKind};
use crate::audit::LeakCheck;
use crate::error::BuildError;
use crate::page::state::MAX_ORDER_LIMIT;
use crate::page::Descriptor;
use crate::region::{Backing, Region};
use crate::sync::ShardedMap;
use crate::tracker::{TrackerCell, Tracking};

use super::PageArena;

/// The most pages one arena may have: 2^28, a descriptor table of 4 GiB
/// (16 bytes a page) describing 1 TiB of 4 KiB pages, or 512 TiB of 2 MiB
/// pages.
///
/// Page numbers have room for 2^31 pages, but such a table (32 GiB) is
/// beyond most machines, and a request for it would map the region first.
/// Below the limit the table is allocated, fallibly, before the region is
/// mapped: a machine that cannot give it gets a [`BuildError::Alloc`]
/// naming its bytes.
pub const MAX_PAGES: u64 = 1 << 28;

// Page numbers are `u32`s with a bit to spare.
const _: () = assert!(MAX_PAGES <= 1 << 31);

/// The default largest buddy order: blocks of up to 1024 pages (4 MiB of
/// 4 KiB pages), like the kernel's `MAX_PAGE_ORDER`.
pub const DEFAULT_MAX_ORDER: u8 = 10;

#[derive(Debug, Clone, Copy)]
enum Size {
    Unset,
    Pages(u64),
    Bytes(usize),
}

/// Configures and builds a [`PageArena`]; see [`PageArena::builder`].
///
/// Every setting is checked before memory is mapped; a bad one is a
/// [`BuildError`] naming it.
///
/// ```
/// use pinowner::{Backing, BuildError, LeakCheck, PageArena, ThreadCache, Tracking};
///
/// let arena = PageArena::builder()
///     .capacity(8 << 20) // 8 MiB...
///     .page_size(64 << 10) // ...of 64 KiB pages
///     .movable_capacity(4 << 20)
///     .backing(Backing::Anonymous) // lazily zeroed by the kernel
///     .max_order(6)
///     .thread_cache(ThreadCache::default())
///     .tracking(Tracking { capacity: 1024, ..Tracking::default() })
///     .leak_check(LeakCheck::Panic) // tests: dropping with pages held panics
///     .build()?;
/// assert_eq!((arena.pages(), arena.page_size(), arena.max_order()), (128, 64 << 10, 6));
///
/// let e = PageArena::builder().capacity(10_000).build().unwrap_err();
/// assert!(matches!(e, BuildError::SizeNotMultiple { bytes: 10_000, page_size: 4096 }));
/// assert_eq!(e.to_string(), "size of 10000 bytes is not a multiple of the page size 4096");
/// # Ok::<(), BuildError>(())
/// ```
#[derive(Debug)]
#[must_use = "a builder does nothing until `build` is called"]
pub struct ArenaBuilder<P = crate::Exact> {
    s: Settings,
    policy: core::marker::PhantomData<fn() -> P>,
}

/// Everything a builder sets but the policy (kept apart so a change of
/// policy moves them whole).
#[derive(Debug)]
struct Settings {
    size: Size,
    page_size: usize,
    backing: Backing,
    movable: Size,
    max_order: u8,
    cache: Option<ThreadCache>,
    tracking: Tracking,
    leak_check: LeakCheck,
    reporting: crate::reporting::Reporting,
    poison: crate::poison::Poison,
    hugetlb_fallback: bool,
}

impl Default for ArenaBuilder {
    fn default() -> Self {
        ArenaBuilder { s: Settings::default(), policy: core::marker::PhantomData }
    }
}

impl Default for Settings {
    fn default() -> Self {
        Settings {
            size: Size::Unset,
            page_size: 4096,
            backing: Backing::Heap,
            movable: Size::Pages(0),
            max_order: DEFAULT_MAX_ORDER,
            cache: Some(ThreadCache::default()),
            tracking: Tracking::default(),
            leak_check: LeakCheck::default(),
            reporting: crate::reporting::Reporting::default(),
            poison: crate::poison::Poison::Off,
            hugetlb_fallback: true,
        }
    }
}

impl<P: crate::Attribution> ArenaBuilder<P> {
    /// The [attribution policy](crate::policy) of the arena built:
    /// [`Exact`](crate::Exact) by default (a failure names each block's
    /// latest holder); [`CountsOnly`](crate::CountsOnly) makes handles'
    /// clones and drops one atomic add or subtract each, and a failure
    /// counts the holders without naming them.
    ///
    /// ```
    /// use pinowner::{CountsOnly, PageArena};
    ///
    /// let arena = PageArena::builder().pages(16).attribution::<CountsOnly>().build()?;
    /// let block = arena.alloc(0)?;
    /// let r = block.page_ref(0); // a fetch_add
    /// assert_eq!(r.state().refcount, 2);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn attribution<Q: crate::Attribution>(self) -> ArenaBuilder<Q> {
        ArenaBuilder { s: self.s, policy: core::marker::PhantomData }
    }

    /// The number of pages.
    pub fn pages(mut self, pages: usize) -> Self {
        self.s.size = Size::Pages(pages as u64);
        self
    }

    /// The size in bytes (a whole number of pages).
    pub fn capacity(mut self, bytes: usize) -> Self {
        self.s.size = Size::Bytes(bytes);
        self
    }

    /// The page size: a power of two of at least 4096 bytes (default 4096).
    pub fn page_size(mut self, page_size: usize) -> Self {
        self.s.page_size = page_size;
        self
    }

    /// Where the memory comes from (default [`Backing::Heap`]). With
    /// [`Backing::External`] the size may be left unset: it is the region's.
    pub fn backing(mut self, backing: Backing) -> Self {
        self.s.backing = backing;
        self
    }

    /// Whether a [`Backing::HugeTlb`] arena may fall back to transparent
    /// hugepages when the system gives no `MAP_HUGETLB` mapping (default
    /// true; the arena then says so: [`PageArena::backing`] is
    /// [`BackingKind::TransparentHuge`](crate::BackingKind::TransparentHuge),
    /// [`PageArena::backing_fallback_error`] has the error). With `false`,
    /// that build fails with [`BuildError::Map`] (backing `"hugetlb"`, the
    /// system's error as its source): for drivers that need memory in
    /// hugetlb pages or nothing. No effect on other backings.
    ///
    /// ```
    /// use pinowner::{Backing, BackingKind, BuildError, PageArena};
    ///
    /// let built = PageArena::builder()
    ///     .capacity(2 << 20)
    ///     .backing(Backing::HugeTlb)
    ///     .hugetlb_fallback(false)
    ///     .build();
    /// match built {
    ///     Ok(arena) => assert_eq!(arena.backing(), BackingKind::HugeTlb),
    ///     // `source` is the system's error: `ENOMEM` with no hugetlb pages reserved.
    ///     Err(BuildError::Map { backing, source: _ }) => assert_eq!(backing, "hugetlb"),
    ///     Err(e) => panic!("{e}"),
    /// }
    /// ```
    pub fn hugetlb_fallback(mut self, fallback: bool) -> Self {
        self.s.hugetlb_fallback = fallback;
        self
    }

    /// Pages of the movable zone, at the top of the arena (default 0).
    pub fn movable_pages(mut self, pages: usize) -> Self {
        self.s.movable = Size::Pages(pages as u64);
        self
    }

    /// Bytes of the movable zone (a whole number of pages).
    pub fn movable_capacity(mut self, bytes: usize) -> Self {
        self.s.movable = Size::Bytes(bytes);
        self
    }

    /// The largest buddy order (default [`DEFAULT_MAX_ORDER`]).
    pub fn max_order(mut self, max_order: u8) -> Self {
        self.s.max_order = max_order;
        self
    }

    /// Per-thread caches of free blocks, with these settings (default:
    /// on, with [`ThreadCache::default`], as the kernel's per-CPU page
    /// lists are; see [`ThreadCache`]).
    pub fn thread_cache(mut self, cache: ThreadCache) -> Self {
        self.s.cache = Some(cache);
        self
    }

    /// No per-thread caches: every allocation and free takes the zone
    /// lock, and every freed block goes straight to the buddy lists (what
    /// a single-threaded arena that never wants a cache drain may prefer).
    /// A block freed next to a free buddy may stay unmerged, at the back of
    /// its list, until an allocation needs a larger block, the free page
    /// reporter pulls, or [`frag_stats`](crate::PageArena::frag_stats) is
    /// read (which shows the lists merged, as an eager buddy leaves them);
    /// the next allocation of its order takes it straight back. A
    /// contiguous reservation finds it like any free block.
    pub fn without_thread_cache(mut self) -> Self {
        self.s.cache = None;
        self
    }

    /// Owner tracking settings: event capacity, backtrace depth, depot
    /// bound, eager mode (default [`Tracking::default`]: lazy, 4096 events,
    /// 16 frames, 1 MiB of stacks).
    pub fn tracking(mut self, tracking: Tracking) -> Self {
        self.s.tracking = tracking;
        self
    }

    /// What dropping the arena does when pages are still held (default
    /// [`LeakCheck::Warn`]); see [`PageArena::audit`].
    pub fn leak_check(mut self, check: LeakCheck) -> Self {
        self.s.leak_check = check;
        self
    }

    /// Free page reporting settings (default [`Reporting::default`]: the
    /// 2 MiB order and up, batches of 32, `MADV_DONTNEED`); see
    /// [`crate::reporting`]. Nothing runs until
    /// [`PageArena::report_free`] or [`PageArena::start_reporter`] is called.
    ///
    /// [`Reporting::default`]: crate::reporting::Reporting
    pub fn reporting(mut self, reporting: crate::reporting::Reporting) -> Self {
        self.s.reporting = reporting;
        self
    }

    /// Page poisoning (default [`Poison::Off`]): fill freed blocks with a
    /// pattern checked on allocation, or make them inaccessible on an
    /// anonymous backing; see [`crate::poison`].
    ///
    /// [`Poison::Off`]: crate::poison::Poison::Off
    pub fn poison(mut self, poison: crate::poison::Poison) -> Self {
        self.s.poison = poison;
        self
    }

    /// Builds the arena.
    ///
    /// # Errors
    ///
    /// [`BuildError`] for bad geometry (zero pages, a page size that is not a
    /// power of two of at least 4 KiB, a size that is not a whole number of
    /// pages, a misaligned external region, more than [`MAX_PAGES`] pages, a
    /// movable zone larger than the arena, a max order above the state
    /// word's limit), for [`ThreadCache`] settings outside their documented
    /// ranges, or when the system refuses the memory. Every setting is
    /// checked, and the bookkeeping (descriptor table, caches) allocated,
    /// before the region is mapped; nothing aborts or panics on a size.
    pub fn build(self) -> Result<PageArena<P>, BuildError> {
        // Built by one non-generic function (compiled once, in this
        // crate), then given its policy.
        self.attribution::<crate::Exact>().build_exact().map(PageArena::with_policy)
    }
}

impl ArenaBuilder {
    fn to_pages_of(size: Size, page_size: usize) -> Result<Option<u64>, BuildError> {
        match size {
            Size::Unset => Ok(None),
            Size::Pages(p) => Ok(Some(p)),
            Size::Bytes(b) if b % page_size != 0 => Err(BuildError::SizeNotMultiple { bytes: b, page_size }),
            Size::Bytes(b) => Ok(Some((b / page_size) as u64)),
        }
    }

    #[inline(never)]
    fn build_exact(self) -> Result<PageArena, BuildError> {
        let page_size = self.s.page_size;
        if !page_size.is_power_of_two() || page_size < 4096 {
            return Err(BuildError::PageSize { page_size });
        }
        let size = match (self.s.size, &self.s.backing) {
            (Size::Unset, Backing::External(ext)) => Size::Bytes(ext.len()),
            (s, _) => s,
        };
        let pages = Self::to_pages_of(size, page_size)?.ok_or(BuildError::ZeroPages)?;
        if pages == 0 {
            return Err(BuildError::ZeroPages);
        }
        if pages > MAX_PAGES {
            return Err(BuildError::TooManyPages { pages, max: MAX_PAGES });
        }
        let movable = match Self::to_pages_of(self.s.movable, page_size) {
            Err(BuildError::SizeNotMultiple { bytes, page_size }) => {
                return Err(BuildError::MovableNotMultiple { bytes, page_size })
            }
            m => m?.unwrap_or(0),
        };
        if movable > pages {
            return Err(BuildError::MovableTooLarge { movable, pages });
        }
        if self.s.max_order > MAX_ORDER_LIMIT {
            return Err(BuildError::MaxOrder { max_order: self.s.max_order, limit: MAX_ORDER_LIMIT });
        }
        if let Some(cache) = &self.s.cache {
            cache.validate()?;
        }
        self.s.reporting.validate()?;
        let len = (pages as usize).checked_mul(page_size).ok_or(BuildError::SizeOverflow { pages, page_size })?;
        // The bookkeeping first: the table is lazily zeroed memory, cheap to
        // get and to give back, while the region may be terabytes of
        // address space.
        let descs = Descriptor::try_table(pages as usize)
            .map_err(|bytes| BuildError::Alloc { what: "descriptor table", bytes })?;
        let ext = std::sync::Arc::new(
            crate::page::ext::PageExt::new(pages as usize)
                .map_err(|bytes| BuildError::Alloc { what: "page extension bitmaps", bytes })?,
        );
        let pages = pages as u32;
        let split = pages - movable as u32;
        let zones = [
            Zone::new(ZoneKind::Normal, 0, split, self.s.max_order, self.s.cache, ext.clone())?,
            Zone::new(ZoneKind::Movable, split, pages, self.s.max_order, self.s.cache, ext.clone())?,
        ];
        let region = Region::new(self.s.backing, len, page_size, self.s.hugetlb_fallback)?;
        self.s.poison.validate(region.kind())?;
        if self.s.poison == crate::poison::Poison::Protect {
            // No page was ever handed out: all of them fault until one is.
            // SAFETY: the region is new; nothing else refers to it.
            unsafe { region.protect(0, len, false) }
                .map_err(|source| BuildError::Map { backing: "poison-protected", source })?;
        }
        for z in &zones {
            let mut area = z.area.lock();
            area.seed(&descs, z.start, z.end).map_err(|bytes| BuildError::Alloc { what: "free lists", bytes })?;
        }
        // Poisoning and eager tracking take the general allocation path.
        let plain = self.s.poison == crate::poison::Poison::Off && !self.s.tracking.eager;
        let fast_orders = zones.each_ref().map(|z| z.pcp.as_ref().filter(|_| plain).map_or(0, |p| p.config.orders));
        Ok(PageArena {
            region,
            descs,
            pages,
            page_shift: page_size.trailing_zeros(),
            max_order: self.s.max_order,
            zones,
            raw: ShardedMap::new(),
            tracker: TrackerCell::new(self.s.tracking),
            leak_check: self.s.leak_check,
            moves: std::sync::OnceLock::new(),
            reserve_counters: crate::stats::ReserveCounters::new(),
            ext,
            reporting: crate::reporting::ReportState::new(self.s.reporting),
            poison: self.s.poison,
            fast_orders,
            quarantine: crate::sync::Mutex::new(crate::poison::Quarantine::default()),
            policy: core::marker::PhantomData,
        })
        .inspect(|arena| {
            if self.s.tracking.eager {
                arena.tracker();
            }
        })
    }
}
