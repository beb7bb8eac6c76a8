//! Scenarios written the way the crate's users work: wrappers of userspace
//! DMA and hugepage arenas (io_uring registered buffers, VFIO/SPDK-style
//! drivers with caller-provided memory, RDMA) and database buffer pools,
//! exercising the public API end to end. Each ends by checking that no page
//! was lost or counted twice: `free_pages()`, `frag_stats()` and
//! `verify()` agree with the arena's size once everything is dropped.

use std::sync::mpsc;
use std::sync::Arc;

use pinowner::{
    AcquireError, AllocError, Backing, BackingKind, ContigError, PageArena, PageFlags, Reason, ThreadCache, ZoneKind,
};

/// Every page free, nothing cached, isolated, reported in flight or in a
/// contiguous run; the allocator's invariants hold; and each zone is one
/// free run once merged.
pub(crate) fn all_back(arena: &PageArena) {
    arena.drain_thread_caches();
    assert_eq!(arena.free_pages(), arena.pages(), "free_pages after everything was dropped");
    arena.verify().unwrap();
    let stats = arena.frag_stats();
    for z in &stats.zones {
        assert_eq!(z.free_pages, z.pages, "{stats}");
        assert_eq!(z.cached_pages, 0, "{stats}");
        assert_eq!(z.reporting_pages, 0, "{stats}");
        let range = arena.zone_range(z.zone);
        let largest = 1usize << arena.max_order();
        if range.start.is_multiple_of(largest) && z.pages.is_multiple_of(largest) {
            assert_eq!(z.largest_free_run, z.pages, "{stats}");
            assert_eq!(z.free_blocks[arena.max_order() as usize], z.pages >> arena.max_order(), "{stats}");
        }
    }
    for p in 0..arena.pages() {
        let s = arena.page_state(p).unwrap();
        assert!(
            [PageFlags::ISOLATED, PageFlags::PCP, PageFlags::CONTIG].iter().all(|&f| !s.flags.contains(f)),
            "page {p:#x} left {s}"
        );
        assert_eq!((s.refcount, s.pincount), (0, 0), "page {p:#x}: {s}");
    }
}

/// A small deterministic generator (no `rand` in the suite's hot loops).
pub(crate) struct Lcg(pub(crate) u64);

impl Lcg {
    pub(crate) fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
        self.0 >> 33
    }
}

// ----- io_uring registered buffers on a hugepage arena ------------------

/// An io_uring wrapper registers a hugepage arena (this machine has no
/// hugetlb pages: the transparent-hugepage fallback, which says so), hands
/// buffers out to submitter threads through `Arc`, pins each buffer for
/// the kernel while a read is in flight and unpins it on completion on
/// another thread. The in-flight reads block a 2 MiB reservation and are
/// named; once they complete, the reservation succeeds and every page comes
/// back.
#[test]
fn registered_buffers_on_a_hugepage_arena_pinned_and_completed_across_threads_all_come_back() {
    let arena = Arc::new(
        PageArena::builder().pages(2048).movable_pages(1024).max_order(9).backing(Backing::HugeTlb).build().unwrap(),
    );
    match arena.backing() {
        BackingKind::HugeTlb => {}
        BackingKind::TransparentHuge => assert!(arena.backing_fallback().is_some(), "the fallback says why"),
        other => panic!("a hugepage arena got {other:?}"),
    }
    let (tx, rx) = mpsc::channel();
    std::thread::scope(|s| {
        for t in 0..2u8 {
            let arena = Arc::clone(&arena);
            let tx = tx.clone();
            s.spawn(move || {
                for i in 0..64u8 {
                    // A buffer from the movable zone that keeps its address.
                    let mut buf = arena.alloc_movable_owned(0).unwrap().into_block();
                    buf.bytes_mut().unwrap().fill(t ^ i);
                    // Submission: the kernel's pin, then the submitter lets go.
                    let pin = buf.pin(0).unwrap();
                    drop(buf);
                    tx.send((pin, t ^ i)).unwrap();
                }
            });
        }
    });
    drop(tx);
    let inflight: Vec<_> = rx.into_iter().collect();
    assert_eq!(arena.free_pages(), 2048 - 128);
    let pfns: std::collections::HashSet<_> = inflight.iter().map(|(p, _)| p.pfn()).collect();
    assert_eq!(pfns.len(), 128, "every buffer its own page");
    // The 2 MiB window of the first buffer handed out.
    let first = inflight[0].0.pfn() / 512 * 512;
    let Err(ContigError::Busy(f)) = arena.reserve_range(first, 512, Reason::Contig) else { panic!("not busy") };
    assert!(f.busy_pages() > 0 && f.pins() as usize == f.busy_pages(), "{f}");
    assert_eq!(f.attributed(), f.holders(), "every pin is the latest holder of its page: {f}");
    // Completions on another thread.
    std::thread::scope(|s| {
        s.spawn(move || {
            for (pin, byte) in inflight {
                assert!(pin.bytes().iter().all(|&b| b == byte));
                drop(pin);
            }
        });
    });
    let run = arena.reserve_contig(512, 512, Reason::Contig).unwrap();
    assert_eq!(run.pages(), 512);
    drop(run);
    all_back(&arena);
}

// ----- VFIO/SPDK-style driver with caller-provided memory ----------------

/// Memory a "driver" mapped: page-aligned, owned by the test, freed after
/// the arena.
struct DmaWindow {
    ptr: std::ptr::NonNull<u8>,
    layout: std::alloc::Layout,
}

impl DmaWindow {
    fn new(bytes: usize) -> DmaWindow {
        let layout = std::alloc::Layout::from_size_align(bytes, 4096).unwrap();
        // SAFETY: a non-zero size.
        let ptr = std::ptr::NonNull::new(unsafe { std::alloc::alloc_zeroed(layout) }).unwrap();
        DmaWindow { ptr, layout }
    }

    /// The window from `offset`, `len` bytes, as an arena region.
    fn region(&self, offset: usize, len: usize) -> pinowner::ExternalRegion {
        assert!(offset + len <= self.layout.size());
        // SAFETY: inside our allocation, which outlives every arena built
        // from it in these tests, and nothing else touches it.
        unsafe { pinowner::ExternalRegion::new(self.ptr.add(offset), len) }
    }
}

impl Drop for DmaWindow {
    fn drop(&mut self) {
        // SAFETY: allocated in `new` with this layout.
        unsafe { std::alloc::dealloc(self.ptr.as_ptr(), self.layout) };
    }
}

/// A driver wraps its DMA window: bad geometry is a typed build error
/// (never a panic), and on a good window the arena hands out addresses
/// inside it, refuses what cannot apply to foreign memory (reporting,
/// protect poisoning) with typed errors, and leaves the caller's memory
/// holding what was written.
#[test]
fn a_caller_provided_dma_window_is_checked_at_build_and_served_inside_its_bounds() {
    use pinowner::{BuildError, ReportError};

    let window = DmaWindow::new(65 * 4096);
    let build = |offset: usize, len: usize, pages: usize| {
        PageArena::builder().pages(pages).backing(Backing::External(window.region(offset, len))).build()
    };
    assert!(matches!(build(1, 64 * 4096, 64), Err(BuildError::MisalignedBase { .. })));
    assert!(matches!(
        build(0, 64 * 4096 - 1, 64),
        Err(BuildError::SizeNotMultiple { .. } | BuildError::SizeMismatch { .. })
    ));
    assert!(matches!(build(0, 32 * 4096, 64), Err(BuildError::SizeMismatch { .. })), "a region smaller than the arena");
    let e = PageArena::builder()
        .pages(64)
        .backing(Backing::External(window.region(0, 64 * 4096)))
        .poison(pinowner::poison::Poison::Protect)
        .build();
    assert!(matches!(e, Err(BuildError::PoisonBacking { .. })), "{e:?}");

    let arena = build(4096, 64 * 4096, 64).unwrap();
    assert_eq!(arena.backing(), BackingKind::External);
    assert_eq!(arena.as_ptr().as_ptr() as usize, window.ptr.as_ptr() as usize + 4096);
    let mut blocks = Vec::new();
    for i in 0..16u8 {
        let mut b = arena.alloc(1).unwrap();
        b.bytes_mut().unwrap().fill(i + 1);
        let at = b.as_ptr().as_ptr() as usize - window.ptr.as_ptr() as usize;
        assert!((4096..65 * 4096).contains(&at), "a block outside the window at {at:#x}");
        blocks.push(b);
    }
    assert!(matches!(arena.report_free(usize::MAX), Err(ReportError::Backing { .. })));
    // The driver's own view of the memory sees what was written.
    let b = &blocks[3];
    // SAFETY: inside the window; the block is held and not borrowed mutably.
    let seen = unsafe { *window.ptr.as_ptr().add(4096 + (b.pfn() << 12)) };
    assert_eq!(seen, 4);
    let pins: Vec<_> = blocks.iter().map(|b| b.pin(1).unwrap()).collect();
    drop(blocks);
    assert_eq!(arena.free_pages(), 64 - 32);
    drop(pins);
    all_back(&arena);
    drop(arena);
}

// ----- bad input --------------------------------------------------------

/// Every kind of bad input a wrapper might pass through from its own caller
/// gets a typed error naming the page, and leaves the arena exactly as it
/// was (no page lost, nothing half-done).
#[test]
fn bad_input_is_a_typed_error_naming_the_page_and_changes_nothing() {
    use pinowner::ReleaseError;

    let arena = PageArena::builder().pages(128).movable_pages(64).max_order(5).build().unwrap();
    let held = arena.alloc(0).unwrap();
    let pfn = held.pfn();
    let free_pfn = pfn + 1;
    let before = arena.free_pages();
    let unchanged = |what: &str| {
        assert_eq!(arena.free_pages(), before, "after {what}");
        arena.verify().unwrap_or_else(|e| panic!("after {what}: {e}"));
    };

    for bad in [128, 129, usize::MAX, u32::MAX as usize, u32::MAX as usize + 1] {
        match arena.get(bad) {
            Err(AcquireError::OutOfRange { pfn, pages: 128 }) => assert_eq!(pfn, bad),
            other => panic!("get({bad:#x}): {other:?}"),
        }
        assert!(matches!(arena.pin(bad), Err(AcquireError::OutOfRange { .. })));
        assert!(matches!(arena.get_raw(bad), Err(AcquireError::OutOfRange { .. })));
        assert!(matches!(arena.put_raw(bad), Err(ReleaseError::OutOfRange { .. })));
        assert!(matches!(arena.unpin_raw(bad), Err(ReleaseError::OutOfRange { .. })));
        assert!(arena.page_info(bad).is_err());
        assert!(arena.page_state(bad).is_err());
        assert!(arena.pfn_to_ptr(bad).is_err());
        assert_eq!(arena.raw_counts(bad), (0, 0));
        assert!(arena.pin_longterm(bad).is_err());
        assert!(arena.page_referenced(bad).is_err());
        unchanged("an out-of-range page");
    }
    match arena.get(free_pfn) {
        Err(AcquireError::Free { pfn, .. }) => assert_eq!(pfn, free_pfn),
        other => panic!("{other:?}"),
    }
    let e = arena.put_raw(pfn).unwrap_err();
    assert!(matches!(e, ReleaseError::NoReference { pfn: p, .. } if p == pfn), "{e:?}");
    assert!(e.to_string().contains(&format!("{pfn:#x}")), "{e}");
    assert!(matches!(arena.unpin_raw(free_pfn), Err(ReleaseError::NoPin { .. })));
    unchanged("releases without a count");

    assert!(matches!(arena.alloc(6), Err(AllocError::OrderTooLarge { order: 6, max_order: 5 })));
    assert!(matches!(arena.alloc(u8::MAX), Err(AllocError::OrderTooLarge { .. })));
    assert!(matches!(arena.alloc_movable(200), Err(AllocError::OrderTooLarge { .. })));
    unchanged("orders too large");

    assert_eq!(arena.reserve_range(0, 0, Reason::Contig).unwrap_err(), ContigError::ZeroPages);
    assert!(matches!(arena.reserve_range(usize::MAX, 2, Reason::Contig), Err(ContigError::OutOfRange { .. })));
    assert!(matches!(arena.reserve_range(120, 16, Reason::Contig), Err(ContigError::OutOfRange { .. })));
    assert!(matches!(arena.reserve_range(60, 8, Reason::Contig), Err(ContigError::OutOfRange { .. })), "across zones");
    assert_eq!(arena.reserve_contig(0, 1, Reason::Contig).unwrap_err(), ContigError::ZeroPages);
    assert!(matches!(arena.reserve_contig(8, 3, Reason::Contig), Err(ContigError::BadAlign { align: 3 })));
    assert!(matches!(arena.reserve_contig(8, 0, Reason::Contig), Err(ContigError::BadAlign { align: 0 })));
    assert!(matches!(arena.reserve_contig(65, 1, Reason::Contig), Err(ContigError::TooLarge { .. })));
    assert!(matches!(arena.reserve_contig(usize::MAX, 1, Reason::Contig), Err(ContigError::TooLarge { .. })));
    assert!(arena.reserve_contig(8, 1 << 62, Reason::Contig).is_err());
    assert!(arena.reserve_contig_wait(8, 3, Reason::Contig, std::time::Duration::from_millis(1)).is_err());
    unchanged("bad reservations");

    assert!(arena.pin_range(120, 16).is_err());
    assert!(arena.pin_range(usize::MAX - 1, 4).is_err());
    assert_eq!(arena.pin_range(pfn, 0).map(|r| r.pins().len()).unwrap_or(0), 0);
    unchanged("bad range pins");

    assert!(arena.mark_idle(100..200).is_err());
    assert!(arena.idle_pages(0..usize::MAX).is_err());
    assert!(arena.idle_holders(129..130).is_err());
    #[allow(clippy::reversed_empty_ranges)]
    {
        let _ = arena.mark_idle(10..5);
        let _ = arena.idle_pages(10..5);
        let _ = arena.idle_holders(10..5);
        let _ = arena.arm(10..5, Reason::Contig);
        let _ = arena.disarm(10..5);
        let _ = arena.compact_range(10..5, 2);
    }
    let _ = arena.arm(usize::MAX - 4..usize::MAX, Reason::Contig);
    let _ = arena.compact_range(usize::MAX - 4..usize::MAX, 3);
    let _ = arena.compact_range(0..usize::MAX, 40);
    let _ = arena.compact(ZoneKind::Movable, u8::MAX);
    unchanged("bad ranges for idle tracking, arming and compaction");
    drop(held);
    all_back(&arena);
}

/// A zero-sized or oversized arena, a movable zone larger than the arena,
/// a bad page size, an order past the limit, absurd thread-cache settings:
/// build errors, never a panic or an abort.
#[test]
fn bad_geometry_is_a_build_error_for_every_backing() {
    for backing in [|| Backing::Heap, || Backing::Anonymous, || Backing::HugeTlb] {
        assert!(PageArena::builder().pages(0).backing(backing()).build().is_err());
        assert!(PageArena::builder().pages(64).movable_pages(65).backing(backing()).build().is_err());
        assert!(PageArena::builder().pages(64).page_size(3000).backing(backing()).build().is_err());
        assert!(PageArena::builder().pages(64).page_size(0).backing(backing()).build().is_err());
        assert!(PageArena::builder().pages(64).max_order(64).backing(backing()).build().is_err());
        assert!(PageArena::builder().pages(usize::MAX).backing(backing()).build().is_err());
        assert!(PageArena::builder().capacity(4096 * 3 + 1).backing(backing()).build().is_err());
        let bad_cache = ThreadCache { batch: 0, high: 0, shards: 0, orders: 0 };
        assert!(PageArena::builder().pages(64).thread_cache(bad_cache).backing(backing()).build().is_err());
        let huge_cache = ThreadCache { batch: usize::MAX, high: usize::MAX, shards: usize::MAX, orders: u32::MAX };
        assert!(PageArena::builder().pages(64).thread_cache(huge_cache).backing(backing()).build().is_err());
    }
    // An arena whose size is not a power of two and whose movable zone
    // starts unaligned still serves and reserves every page.
    let arena = PageArena::builder().pages(100).movable_pages(37).max_order(4).build().unwrap();
    let all: Vec<_> = std::iter::from_fn(|| arena.alloc_movable(0).ok()).collect();
    assert_eq!(all.len(), 100, "a movable allocation falls back to the normal zone");
    drop(all);
    all_back(&arena);
}

/// A compaction asked for a range starting near `usize::MAX` (a wrapper
/// passing its caller's page numbers through unchecked) finds no window;
/// rounding the start up to the window size used to overflow and panic.
#[test]
fn compacting_a_range_that_starts_near_usize_max_finds_no_window_instead_of_panicking() {
    let arena = PageArena::builder().pages(128).movable_pages(64).max_order(5).build().unwrap();
    for order in [1, 3, 5] {
        let c = arena.compact_range(usize::MAX - 4..usize::MAX, order);
        assert_eq!((c.windows, c.freed, c.failed), (0, 0, 0), "{c:?}");
    }
    all_back(&arena);
}
