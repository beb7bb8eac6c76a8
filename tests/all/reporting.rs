//! Free page reporting: free memory goes back to the OS in batches, the
//! reported state shows in `page_info` and `frag_stats`, and reservations
//! never fail because of it.

use std::sync::Arc;
use std::time::Duration;

use pinowner::discard::Discard;
use pinowner::reporting::{Background, Reporting};
use pinowner::{Backing, BackingKind, ExternalRegion, PageArena, PageFlags, Reason, ReportError};

/// Resident pages of `len` bytes at `ptr` (page-aligned), by `mincore`.
fn resident(ptr: *const u8, len: usize) -> usize {
    let mut vec = vec![0u8; len.div_ceil(4096)];
    // `ptr..ptr + len` is a mapped, page-aligned range of an arena's mapping.
    // SAFETY: so mincore only reads its page tables; it writes `vec`, which
    // has one byte per page.
    let r = unsafe { libc::mincore(ptr as *mut libc::c_void, len, vec.as_mut_ptr()) };
    assert_eq!(r, 0, "mincore: {}", std::io::Error::last_os_error());
    vec.iter().filter(|&&v| v & 1 != 0).count()
}

fn arena_resident(arena: &PageArena) -> usize {
    resident(arena.as_ptr().as_ptr(), arena.len())
}

fn anonymous(pages: usize, reporting: Reporting) -> PageArena {
    PageArena::builder().pages(pages).backing(Backing::Anonymous).reporting(reporting).build().unwrap()
}

#[test]
fn reporting_after_freeing_ninety_percent_leaves_only_the_held_pages_resident() {
    // 80 MiB of 4 KiB pages, written whole, then 36 of 40 2 MiB blocks freed.
    let arena = anonymous(40 * 512, Reporting::default());
    assert_eq!(arena.report_min_order(), 9);
    let mut blocks: Vec<_> = (0..40).map(|_| arena.alloc(9).unwrap()).collect();
    for b in &mut blocks {
        b.bytes_mut().unwrap().fill(0x5a);
    }
    assert_eq!(arena_resident(&arena), 40 * 512);
    let kept: Vec<_> = blocks.drain(..).enumerate().filter(|(i, _)| i % 10 == 0).map(|(_, b)| b).collect();
    let held = kept.len() * 512;
    assert_eq!(arena_resident(&arena), 40 * 512, "freeing alone gives nothing back");
    let done = arena.report_free(usize::MAX).unwrap();
    assert_eq!(done.pages as usize, 36 * 512);
    let rss = arena_resident(&arena);
    assert!(rss >= held && rss * 100 <= held * 105, "resident {rss} pages, {held} held");
    assert_eq!(arena.reported_pages(), 36 * 512);
    let frag = arena.frag_stats();
    assert_eq!(frag.zones[0].reported_pages, 36 * 512);
    assert_eq!(frag.zones[0].reported_blocks.iter().enumerate().map(|(o, n)| n << o).sum::<usize>(), 36 * 512);
    assert!(kept.iter().all(|b| b.bytes().iter().all(|&x| x == 0x5a)), "held blocks untouched");
    arena.verify().unwrap();
}

#[test]
fn a_reported_block_shows_in_page_info_and_loses_the_mark_when_allocated() {
    let arena = anonymous(2048, Reporting::default());
    let mut b = arena.alloc(9).unwrap();
    b.bytes_mut().unwrap().fill(1);
    let pfn = b.pfn();
    drop(b);
    arena.report_free(usize::MAX).unwrap();
    let flags = arena.page_info(pfn + 3).unwrap().state.flags;
    assert!(flags.contains(PageFlags::REPORTED | PageFlags::ZEROED | PageFlags::FREE), "{flags}");
    assert!(flags.to_string().ends_with("reported|zeroed"), "{flags}");
    let ptr = arena.pfn_to_ptr(pfn).unwrap().as_ptr();
    // The whole arena is reported now; a zeroed allocation of 2 MiB takes a
    // reported block and neither writes nor faults it in.
    let z = arena.alloc_zeroed(9).unwrap();
    let zp = z.as_ptr().as_ptr();
    assert_eq!(resident(zp, z.len()), 0, "alloc_zeroed trusted the OS's zeros");
    assert!(z.bytes().iter().all(|&x| x == 0));
    assert!(!arena.page_info(z.pfn()).unwrap().state.flags.contains(PageFlags::REPORTED));
    assert_eq!(arena.reported_pages(), 2048 - 512);
    let _ = ptr;
    drop(z);
    arena.verify().unwrap();
}

#[test]
fn a_merge_with_an_unreported_buddy_clears_the_mark_and_a_later_pass_reports_the_whole() {
    let arena = PageArena::builder()
        .pages(1024)
        .max_order(10)
        .backing(Backing::Anonymous)
        .reporting(Reporting { min_order: Some(9), ..Reporting::default() })
        // Frees go straight to the lists, where they merge.
        .without_thread_cache()
        .build()
        .unwrap();
    let a = arena.alloc(9).unwrap();
    let b = arena.alloc(9).unwrap();
    assert_eq!(a.pfn() ^ b.pfn(), 512, "buddies");
    let (pa, pb) = (a.pfn(), b.pfn());
    drop(a);
    assert_eq!(arena.report_free(usize::MAX).unwrap().blocks, 1);
    assert!(arena.page_state(pa).unwrap().flags.contains(PageFlags::REPORTED));
    drop(b); // merges with the reported buddy: one unreported order-10 block
    assert_eq!(arena.reported_pages(), 0);
    assert!(!arena.page_state(pb).unwrap().flags.contains(PageFlags::REPORTED));
    assert_eq!(arena.frag_stats().zones[0].reported_blocks[10], 0);
    arena.verify().unwrap();
    let again = arena.report_free(usize::MAX).unwrap();
    assert_eq!((again.blocks, again.pages), (1, 1024));
    assert_eq!(arena.frag_stats().zones[0].reported_blocks[10], 1);
    arena.verify().unwrap();
}

#[test]
fn reported_blocks_are_not_reported_again_and_the_budget_bounds_a_pass() {
    let arena = anonymous(8 * 512, Reporting { min_order: Some(9), batch: 3, how: Discard::DontNeed });
    let blocks: Vec<_> = (0..8).map(|_| arena.alloc(9).unwrap()).collect();
    drop(blocks); // coalesces into four order-10 blocks
    let first = arena.report_free(3).unwrap();
    assert_eq!((first.blocks, first.batches), (3, 1));
    let rest = arena.report_free(usize::MAX).unwrap();
    assert_eq!(rest.blocks, 1, "the boundary skips the three reported ones");
    assert_eq!(arena.report_free(usize::MAX).unwrap().blocks, 0);
    assert_eq!(arena.report_stats().blocks, 4);
    arena.verify().unwrap();
}

#[test]
fn madv_free_reports_without_promising_zeros() {
    let arena = anonymous(1024, Reporting { how: Discard::Free, ..Reporting::default() });
    let mut b = arena.alloc(9).unwrap();
    b.bytes_mut().unwrap().fill(7);
    drop(b);
    arena.report_free(usize::MAX).unwrap();
    assert_eq!(arena.reported_pages(), 1024);
    assert_eq!(arena.zeroed_pages(), 0, "MADV_FREE may leave the old bytes");
    let z = arena.alloc_zeroed(9).unwrap();
    assert!(z.bytes().iter().all(|&x| x == 0), "so alloc_zeroed zeroes them");
}

#[test]
fn reporting_refuses_heap_and_caller_provided_memory_with_a_typed_error() {
    let heap = PageArena::builder().pages(1024).build().unwrap();
    let e = heap.report_free(usize::MAX).unwrap_err();
    assert!(matches!(e, ReportError::Backing { backing: BackingKind::Heap, pages: 1024 }), "{e:?}");
    assert_eq!(e.to_string(), "free pages 0x0..0x400 of a Heap arena cannot be reported to the operating system");
    assert_eq!(heap.reported_pages(), 0);

    let layout = std::alloc::Layout::from_size_align(8 * 4096, 4096).unwrap();
    // SAFETY: non-zero size.
    let mem = unsafe { std::alloc::alloc_zeroed(layout) };
    {
        // SAFETY: the memory is ours, valid and unused until the arena is
        // dropped (below, before the dealloc).
        let ext = unsafe { ExternalRegion::new(std::ptr::NonNull::new(mem).unwrap(), 8 * 4096) };
        let arena = PageArena::builder().backing(Backing::External(ext)).build().unwrap();
        assert!(matches!(arena.report_free(1), Err(ReportError::Backing { backing: BackingKind::External, .. })));
    }
    // SAFETY: allocated above with this layout; the arena is gone.
    unsafe { std::alloc::dealloc(mem, layout) };
    let e = PageArena::builder().pages(64).reporting(Reporting { batch: 0, ..Reporting::default() }).build();
    assert_eq!(e.unwrap_err().to_string(), "reporting batch of 0 blocks is outside 1..=1024");
}

#[test]
fn reservations_never_fail_while_a_reporter_thread_reports_in_a_loop() {
    // Small blocks (order 2) so the reporter is nearly always in the
    // movable zone's lists; one reservation after another over it.
    let arena = Arc::new(
        PageArena::builder()
            .pages(2048)
            .movable_pages(1024)
            .max_order(6)
            .backing(Backing::Anonymous)
            .reporting(Reporting { min_order: Some(2), batch: 4, how: Discard::DontNeed })
            .build()
            .unwrap(),
    );
    let reporter = arena.start_reporter(Background { delay: Duration::ZERO, rate: 64 }).unwrap();
    let rounds = if cfg!(debug_assertions) { 300 } else { 2000 };
    for i in 0..rounds {
        let run = arena.reserve_contig(64, 64, Reason::Contig).unwrap_or_else(|e| panic!("round {i}: {e}"));
        // SAFETY: the run is ours alone; the pointer covers its bytes.
        unsafe { run.as_ptr().as_ptr().write_bytes(i as u8, run.len()) };
        let frames: Vec<_> = (0..8).map(|_| arena.alloc_movable(1).unwrap()).collect();
        drop(frames);
        drop(run);
        // Let the reporter catch up now and then: the run's pages free again.
        while i % 50 == 0 && arena.reported_pages() < 512 {
            std::thread::yield_now();
        }
    }
    let by_thread = reporter.stop();
    assert!(by_thread.blocks > 0, "the reporter ran");
    let stats = arena.stats();
    assert_eq!(stats.reservations.succeeded, rounds as u64);
    assert_eq!(stats.reservations.busy, 0);
    assert_eq!(stats.reservations.report_waits, arena.report_stats().reservation_waits);
    arena.verify().unwrap();
}

/// A 2 MiB block freed into the thread's cache (order 9 is cached by
/// default) is reported too: a pass drains the zone's caches first, or a
/// thread that freed it and went quiet would keep it resident for good.
#[test]
fn a_block_parked_in_a_thread_cache_is_reported_too() {
    let arena = PageArena::builder()
        .pages(1024)
        .max_order(10)
        .backing(Backing::Anonymous)
        .reporting(Reporting { min_order: Some(9), ..Reporting::default() })
        .build()
        .unwrap();
    let mut b = arena.alloc(9).unwrap();
    b.bytes_mut().unwrap().fill(1);
    drop(b);
    assert_eq!(arena.frag_stats().zones[0].cached_pages, 512);
    let done = arena.report_free(usize::MAX).unwrap();
    assert_eq!(done.pages, 1024, "{done:?}");
    assert_eq!(arena.frag_stats().zones[0].cached_pages, 0);
    arena.verify().unwrap();
}
