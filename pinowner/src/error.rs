//! Error types, one per kind of operation. Every message names the page and
//! its state, in lowercase and without a final period.

use crate::alloc::ZoneKind;
use crate::page::PageState;
use crate::Pfn;

/// Why an arena could not be built.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum BuildError {
    /// The arena would have no pages.
    #[error("an arena needs at least one page")]
    ZeroPages,
    /// The page size is not a power of two of at least 4096 bytes.
    #[error("page size {page_size} is not a power of two of at least 4096 bytes")]
    PageSize {
        /// The size asked for.
        page_size: usize,
    },
    /// A byte size is not a whole number of pages.
    #[error("size of {bytes} bytes is not a multiple of the page size {page_size}")]
    SizeNotMultiple {
        /// The size given.
        bytes: usize,
        /// The page size.
        page_size: usize,
    },
    /// The movable zone's byte size
    /// ([`movable_capacity`](crate::ArenaBuilder::movable_capacity)) is not
    /// a whole number of pages.
    #[error("movable zone size of {bytes} bytes is not a multiple of the page size {page_size}")]
    MovableNotMultiple {
        /// The size given.
        bytes: usize,
        /// The page size.
        page_size: usize,
    },
    /// The arena's bytes (pages times page size) overflow the address
    /// space.
    #[error("{pages} pages of {page_size} bytes overflow the address space")]
    SizeOverflow {
        /// The page count.
        pages: u64,
        /// The page size.
        page_size: usize,
    },
    /// A caller-provided region does not start on a page boundary.
    #[error("region base {base:#x} is not aligned to the page size {page_size}")]
    MisalignedBase {
        /// The region's start address.
        base: usize,
        /// The page size.
        page_size: usize,
    },
    /// More pages than an arena may have ([`MAX_PAGES`](crate::MAX_PAGES)).
    #[error("{pages} pages is more than the limit of {max} pages per arena")]
    TooManyPages {
        /// The page count asked for.
        pages: u64,
        /// The limit.
        max: u64,
    },
    /// The size overflows the address space.
    #[error("{bytes} bytes cannot be allocated as one region")]
    TooLarge {
        /// The size asked for.
        bytes: usize,
    },
    /// The movable zone is larger than the arena.
    #[error("movable zone of {movable} pages does not fit an arena of {pages} pages")]
    MovableTooLarge {
        /// Pages asked for the movable zone.
        movable: u64,
        /// Pages in the arena.
        pages: u64,
    },
    /// The maximum order is beyond what the state word holds.
    #[error("max order {max_order} is above the limit {limit}")]
    MaxOrder {
        /// The order asked for.
        max_order: u8,
        /// The largest order supported.
        limit: u8,
    },
    /// A caller-provided region's length differs from the arena's size.
    #[error("the region has {region} bytes but the arena was sized for {wanted}")]
    SizeMismatch {
        /// The region's length.
        region: usize,
        /// The arena's size.
        wanted: usize,
    },
    /// The arena's bookkeeping (descriptor table, free lists, thread
    /// caches) could not be allocated; nothing was mapped or is kept.
    #[error("could not allocate {bytes} bytes for the {what}")]
    Alloc {
        /// What was being allocated.
        what: &'static str,
        /// The bytes asked for.
        bytes: usize,
    },
    /// A [`ThreadCache`](crate::ThreadCache) setting is outside its range
    /// (see [`ThreadCache::MAX_SHARDS`](crate::ThreadCache::MAX_SHARDS) and
    /// [`ThreadCache::MAX_HIGH`](crate::ThreadCache::MAX_HIGH)).
    #[error("thread cache {field} of {value} is outside 1..={limit}")]
    CacheLimit {
        /// The field: `shards`, `high` or `batch`.
        field: &'static str,
        /// The value given.
        value: usize,
        /// The largest value allowed.
        limit: usize,
    },
    /// [`Poison::Protect`](crate::poison::Poison::Protect) needs an
    /// anonymous mapping (`mprotect` of single pages).
    #[error("poison protect mode needs an anonymous backing, not {backing:?}")]
    PoisonBacking {
        /// The backing the arena got.
        backing: crate::BackingKind,
    },
    /// A [`Reporting`](crate::reporting::Reporting) batch outside
    /// `1..=`[`Reporting::MAX_BATCH`](crate::reporting::Reporting::MAX_BATCH).
    #[error("reporting batch of {batch} blocks is outside 1..={limit}")]
    ReportBatch {
        /// The batch given.
        batch: usize,
        /// The largest batch allowed.
        limit: usize,
    },
    /// A [`ThreadCache`](crate::ThreadCache) moves more pages at a time than
    /// it may hold.
    #[error("thread cache batch of {batch} is above its high mark of {high}")]
    CacheBatch {
        /// The batch given.
        batch: usize,
        /// The high mark given.
        high: usize,
    },
    /// The operating system refused the memory.
    #[error("could not map {backing} memory: {source}")]
    Map {
        /// Which backing failed.
        backing: &'static str,
        /// The system error.
        #[source]
        source: std::io::Error,
    },
}

/// Why a get or a pin failed. The arena is unchanged.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum AcquireError {
    /// The page number is beyond the arena.
    #[error("page {pfn:#x} is out of range (the arena has {pages} pages)")]
    OutOfRange {
        /// The page asked for.
        pfn: Pfn,
        /// Pages in the arena.
        pages: usize,
    },
    /// The page is free (or being freed): there is nothing to take a count on.
    #[error("page {pfn:#x} is free ({state})")]
    Free {
        /// The page.
        pfn: Pfn,
        /// Its state when the request was refused.
        state: PageState,
    },
    /// The page's owner holds its bytes mutably.
    #[error("page {pfn:#x} is borrowed exclusively by its block ({state})")]
    Exclusive {
        /// The page.
        pfn: Pfn,
        /// Its state.
        state: PageState,
    },
    /// The reference count is at its limit.
    #[error("page {pfn:#x} has too many references ({state})")]
    RefOverflow {
        /// The page.
        pfn: Pfn,
        /// Its state.
        state: PageState,
    },
    /// The pin count is at its limit.
    #[error("page {pfn:#x} has too many pins ({state})")]
    PinOverflow {
        /// The page.
        pfn: Pfn,
        /// Its state.
        state: PageState,
    },
}

/// Why a raw put or unpin failed. The arena is unchanged.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ReleaseError {
    /// The page number is beyond the arena.
    #[error("page {pfn:#x} is out of range (the arena has {pages} pages)")]
    OutOfRange {
        /// The page asked for.
        pfn: Pfn,
        /// Pages in the arena.
        pages: usize,
    },
    /// No raw reference was taken on this page (handles may hold others;
    /// those are released by dropping the handle).
    #[error("page {pfn:#x} has no raw reference to drop ({state}, {raw} raw)")]
    NoReference {
        /// The page.
        pfn: Pfn,
        /// Its state.
        state: PageState,
        /// Raw references outstanding on it.
        raw: u32,
    },
    /// No raw pin was taken on this page.
    #[error("page {pfn:#x} has no raw pin to drop ({state}, {raw} raw)")]
    NoPin {
        /// The page.
        pfn: Pfn,
        /// Its state.
        state: PageState,
        /// Raw pins outstanding on it.
        raw: u32,
    },
}

/// Why an allocation failed.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum AllocError {
    /// No free block of the order in the zones the request may use.
    #[error(
        "no free block of order {order} in the {zone} zone ({free} pages free, largest free block order {largest})"
    )]
    OutOfMemory {
        /// The order asked for.
        order: u8,
        /// The last zone tried.
        zone: ZoneKind,
        /// Free pages in that zone.
        free: usize,
        /// Order of its largest free block, if any.
        largest: Largest,
    },
    /// The order is above the arena's maximum.
    #[error("order {order} is above the arena's max order {max_order}")]
    OrderTooLarge {
        /// The order asked for.
        order: u8,
        /// The arena's maximum.
        max_order: u8,
    },
}

/// The largest free block order in an error message (`none` if the zone is full).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Largest(pub Option<u8>);

impl core::fmt::Display for Largest {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self.0 {
            Some(o) => write!(f, "{o}"),
            None => f.write_str("none"),
        }
    }
}

/// Why a block could not lend its bytes mutably.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum BorrowError {
    /// Other holders exist: their views would alias the `&mut`.
    #[error("page {pfn:#x} has other holders ({state})")]
    Shared {
        /// The block's head page.
        pfn: Pfn,
        /// Its state.
        state: PageState,
    },
    /// A [`BlockBytesMut`](crate::BlockBytesMut) of this block was leaked (for example
    /// with `mem::forget`): the block stays lent out exclusively until it is
    /// freed.
    #[error("page {pfn:#x} is already lent out exclusively by a leaked guard ({state})")]
    Exclusive {
        /// The block's head page.
        pfn: Pfn,
        /// Its state.
        state: PageState,
    },
}

/// Why a `from_json` ([`OwnerReport::from_json`](crate::OwnerReport::from_json),
/// [`ArenaMap::from_json`](crate::svg::ArenaMap::from_json), ...) could
/// not read a report.
#[cfg(feature = "serde")]
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ReportJsonError {
    /// Not JSON, or not the shape of the report.
    #[error("not a readable report: {0}")]
    Json(#[source] serde_json::Error),
    /// A report of another kind.
    #[error("a report of kind {kind:?}, not {expected:?}")]
    Kind {
        /// The kind the report names (`"(none)"` if it names none).
        kind: String,
        /// The kind asked for.
        expected: &'static str,
    },
    /// A schema version this crate does not read (newer, or missing).
    #[error("schema version {version} is not one this crate reads (1 to {supported})")]
    Version {
        /// The report's version (0 if it has none).
        version: u64,
        /// The newest version this crate reads.
        supported: u32,
    },
}

/// Why a [`discard`](crate::Block::discard) gave nothing back. The handle
/// comes back with the error ([`DiscardRefused`](crate::discard::DiscardRefused)),
/// unchanged.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum DiscardError {
    /// Other references or pins exist: dropping the bytes would zero them
    /// under their holders.
    #[error("page {pfn:#x} has other holders, so its memory cannot be discarded ({state})")]
    Shared {
        /// The block's head page.
        pfn: Pfn,
        /// Its state.
        state: PageState,
    },
    /// A leaked [`BlockBytesMut`](crate::BlockBytesMut) keeps the block lent
    /// out exclusively.
    #[error("page {pfn:#x} is lent out exclusively by a leaked guard ({state})")]
    Exclusive {
        /// The block's head page.
        pfn: Pfn,
        /// Its state.
        state: PageState,
    },
    /// The arena's memory was provided by the caller
    /// ([`Backing::External`](crate::Backing::External)), for example a
    /// driver's DMA window: the arena does not give it back (an `madvise` on
    /// it could drop device memory or memory someone else mapped).
    #[error("page {pfn:#x} is caller-provided memory, which the arena does not give back ({pages} pages)")]
    External {
        /// The block's head page.
        pfn: Pfn,
        /// Pages asked for.
        pages: usize,
    },
    /// The operating system refused the `madvise`.
    #[error("madvise of {pages} pages at page {pfn:#x} failed: {source}")]
    Os {
        /// The first page of the range.
        pfn: Pfn,
        /// Pages in the range.
        pages: usize,
        /// The system error.
        #[source]
        source: std::io::Error,
    },
}

/// Why free page reporting ([`PageArena::report_free`](crate::PageArena::report_free),
/// [`PageArena::start_reporter`](crate::PageArena::start_reporter)) gave
/// nothing (more) back.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ReportError {
    /// The arena's memory cannot be given back page by page: a heap
    /// allocation (the global allocator owns it; zero-filling would cost
    /// time and return nothing) or caller-provided memory (an `madvise`
    /// could drop device memory). Nothing was touched.
    #[error("free pages 0x0..{pages:#x} of a {backing:?} arena cannot be reported to the operating system")]
    Backing {
        /// What the arena's memory is.
        backing: crate::BackingKind,
        /// Pages in the arena.
        pages: usize,
    },
    /// On a `MAP_HUGETLB` mapping `madvise(MADV_DONTNEED)` drops whole
    /// 2 MiB pages: blocks below that order cannot be reported alone.
    #[error("reporting order {order} is below order {needed}, the 2 MiB pages of this hugetlb arena")]
    HugeTlbOrder {
        /// The reporting order.
        order: u8,
        /// The smallest order a hugetlb arena can report.
        needed: u8,
    },
    /// The operating system refused the `madvise` of a free block; the
    /// batch went back unreported, the arena is unchanged.
    #[error("madvise of the free block of {pages} pages at page {pfn:#x} failed (free, in flight): {source}")]
    Os {
        /// The block's head page.
        pfn: Pfn,
        /// Pages in the block.
        pages: usize,
        /// The system error.
        #[source]
        source: std::io::Error,
    },
    /// The background reporter thread could not be started.
    #[error("could not start the reporter thread: {0}")]
    Thread(#[source] std::io::Error),
}
