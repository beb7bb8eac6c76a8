//! Scenarios at the limits: counts at their overflow, page numbers handed
//! through an FFI boundary as raw counts, a tracker too small for the
//! events it sees, and reservations waiting on the zone path.

use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use pinowner::discard::Discard;
use pinowner::{AcquireError, ContigError, CountsOnly, PageArena, Reason, Tracking};

use super::scenarios::{all_back, Lcg};

/// An RDMA registration that pins one page past the pin limit: the pin
/// that does not fit is a typed error naming the page (by handle, by
/// clone, by page number and raw), the count stays at the limit, and
/// dropping the pins frees the block.
#[test]
fn pinning_past_the_limit_is_a_typed_error_and_leaves_the_count_at_the_limit() {
    fn run<P: pinowner::Attribution>(arena: &PageArena<P>, exact: &PageArena) {
        let block = arena.alloc(1).unwrap();
        let pfn = block.pfn() + 1;
        let mut pins = Vec::new();
        let limit = loop {
            match block.pin(1) {
                Ok(p) => pins.push(p),
                Err(AcquireError::PinOverflow { pfn: p, .. }) => {
                    assert_eq!(p, pfn);
                    break pins.len();
                }
                Err(e) => panic!("{e}"),
            }
        };
        assert!(limit >= 1 << 14, "{limit}");
        assert_eq!(block.state().pincount as usize, limit);
        assert!(matches!(pins[0].try_clone(), Err(AcquireError::PinOverflow { .. })));
        assert!(matches!(exact.pin(pfn), Err(AcquireError::PinOverflow { .. })));
        assert!(matches!(exact.pin_raw(pfn), Err(AcquireError::PinOverflow { .. })));
        assert_eq!(block.state().pincount as usize, limit, "failed pins leave no count behind");
        assert_eq!(exact.raw_counts(pfn), (0, 0));
        // Still usable: references are counted apart.
        let r = block.page_ref(0);
        drop(pins);
        drop(block);
        assert_eq!(exact.free_pages(), exact.pages() - 2);
        drop(r);
        all_back(exact);
    }
    let exact = PageArena::builder().pages(64).build().unwrap();
    run(&exact, &exact);
    let counted: PageArena<CountsOnly> = PageArena::builder().pages(64).attribution().build().unwrap();
    run(&counted, counted.exact());
}

/// An SPDK-style driver passes pages to C as page numbers: handles turned
/// into raw counts on one thread are dropped by page number on another,
/// through the thread caches, while other pages churn. Every raw count is
/// accounted for and every page comes back.
#[test]
fn raw_counts_handed_through_ffi_across_threads_are_released_exactly() {
    let arena = PageArena::builder().pages(256).movable_pages(128).max_order(4).build().unwrap();
    // Bounded: the driver waits for C to catch up, as a ring would.
    let (tx, rx) = std::sync::mpsc::sync_channel::<(usize, u8)>(8);
    std::thread::scope(|s| {
        let arena = &arena;
        s.spawn(move || {
            let mut rng = Lcg(5);
            for _ in 0..300 {
                let order = (rng.next() % 3) as u8;
                let b = arena.alloc(order).unwrap();
                let pfn = b.pfn();
                let pin = arena.pin(pfn + (1 << order) - 1).unwrap();
                let r = arena.get(pfn).unwrap();
                match rng.next() % 3 {
                    0 => {
                        tx.send((b.into_raw(), 0)).unwrap();
                        tx.send((pin.into_raw(), 1)).unwrap();
                        drop(r);
                    }
                    1 => {
                        tx.send((r.into_raw(), 0)).unwrap();
                        drop(b);
                        drop(pin);
                    }
                    _ => {
                        arena.get_raw(pfn).unwrap();
                        tx.send((pfn, 0)).unwrap();
                        drop((b, pin, r));
                    }
                }
            }
            drop(tx);
        });
        s.spawn(move || {
            for (pfn, kind) in rx {
                if kind == 0 {
                    arena.put_raw(pfn).unwrap();
                } else {
                    arena.unpin_raw(pfn).unwrap();
                }
            }
        });
    });
    assert_eq!(arena.raw_outstanding(), vec![]);
    assert!(arena.audit().is_clean());
    all_back(&arena);
}

/// A tracker too small for what it sees drops events and says so: the
/// report's kept and dropped events add up to those recorded, and the
/// outstanding holders are still exact.
#[test]
fn a_tracker_that_overflows_counts_every_dropped_event() {
    let arena = PageArena::builder()
        .pages(64)
        .movable_pages(32)
        .tracking(Tracking { capacity: 16, depth: 2, ..Tracking::default() })
        .build()
        .unwrap();
    let frame = arena.alloc_movable(0).unwrap().into_block();
    let pfn = frame.pfn();
    let _ = arena.reserve_contig(32, 32, Reason::Contig).unwrap_err();
    std::thread::scope(|s| {
        for _ in 0..2 {
            s.spawn(|| {
                for _ in 0..100 {
                    drop(arena.get(pfn).unwrap());
                }
            });
        }
    });
    let kept = arena.tracked_events().len() as u64;
    let stats = arena.tracker_stats();
    assert!(stats.dropped > 0, "{stats:?}");
    assert_eq!(kept + stats.dropped, stats.recorded, "{stats:?}");
    let report = arena.owner_report();
    assert_eq!(report.events_dropped, stats.dropped);
    assert_eq!(report.events_recorded, stats.recorded);
    assert!(report.to_string().contains("dropped"), "{report}");
    let held = arena.pin(pfn).unwrap();
    let report = arena.owner_report();
    let page = report.pages.iter().find(|p| p.pfn == pfn).expect("the armed page is in the report");
    assert_eq!(page.holders(), 2, "the frame (found at arming) and the new pin: {report}");
    drop(held);
    drop(frame);
    all_back(&arena);
}

/// A buffer pool on the zone path (no thread caches: every free goes to
/// the lists, lazily merged) waits for a 64-page window while its
/// workers free the frames in it one by one, in an order that leaves
/// buddies unmerged, and keep allocating elsewhere: the wait succeeds.
#[test]
fn a_waiting_reservation_on_the_zone_path_succeeds_as_frames_are_freed_unmerged() {
    let arena = PageArena::builder().pages(256).movable_pages(128).max_order(6).without_thread_cache().build().unwrap();
    let mut frames: Vec<_> = (0..128).map(|_| arena.alloc_movable(0).unwrap().into_block()).collect();
    frames.sort_by_key(|b| b.pfn());
    let window: Vec<_> = frames.drain(..64).collect();
    let start = window[0].pfn();
    assert_eq!(start % 64, 0);
    let stop = AtomicBool::new(false);
    std::thread::scope(|s| {
        s.spawn(|| {
            let mut rng = Lcg(17);
            let mut window = window;
            while !window.is_empty() {
                let i = (rng.next() as usize) % window.len();
                drop(window.swap_remove(i));
                std::thread::yield_now();
            }
        });
        s.spawn(|| {
            while !stop.load(Ordering::Relaxed) {
                drop(arena.alloc(0).unwrap());
                drop(arena.alloc(1).unwrap());
            }
        });
        let run = arena.reserve_range_wait(start, 64, Reason::Shrink, Duration::from_secs(60));
        stop.store(true, Ordering::Relaxed);
        assert_eq!(run.map(|r| r.range()).unwrap(), start..start + 64);
    });
    drop(frames);
    all_back(&arena);
}

/// A buffer pool that shrank gives a reserved run's memory back
/// (anonymous backing), then frees it: the pages come back zeroed and
/// counted, on every backing that allows it, and the heap arena refuses
/// with the run intact.
#[test]
fn a_discarded_run_comes_back_free_and_zeroed() {
    for backing in [pinowner::Backing::Anonymous, pinowner::Backing::HugeTlb, pinowner::Backing::Heap] {
        let arena = PageArena::builder().pages(128).movable_pages(64).max_order(5).backing(backing).build().unwrap();
        let run = arena.reserve_contig(64, 64, Reason::Shrink).unwrap();
        // SAFETY: the run is ours alone.
        unsafe { core::ptr::write_bytes(run.as_ptr().as_ptr(), 9, run.len()) };
        match run.discard(Discard::DontNeed) {
            Ok(()) => {
                let b = arena.alloc_movable_zeroed(5).unwrap();
                assert!(b.borrow().bytes().iter().all(|&x| x == 0));
            }
            Err(refused) => drop(refused.handle),
        }
        all_back(&arena);
    }
}

/// A reservation of the whole movable zone while its pages are spread
/// over blocks freed into several threads' caches and the zone path:
/// it drains them all and succeeds, then its release merges the zone.
#[test]
fn reserving_the_whole_zone_drains_every_cache_and_merges_back() {
    let arena = PageArena::builder().pages(512).movable_pages(256).max_order(8).build().unwrap();
    std::thread::scope(|s| {
        for t in 0..3u64 {
            let arena = &arena;
            s.spawn(move || {
                let mut rng = Lcg(t + 40);
                let blocks: Vec<_> = (0..40).filter_map(|_| arena.alloc_movable((rng.next() % 4) as u8).ok()).collect();
                drop(blocks);
            });
        }
    });
    let err = arena.reserve_contig(256, 1, Reason::Contig);
    let run = match err {
        Ok(run) => run,
        Err(ContigError::Busy(f)) => panic!("{f}"),
        Err(e) => panic!("{e}"),
    };
    assert_eq!(run.range(), 256..512);
    drop(run);
    all_back(&arena);
}

/// A driver's window whose size is not a power of two, with a movable
/// zone that starts off any block boundary: the whole zone reserves as
/// one run, with blocks held and freed around it on both zone paths, and
/// every page comes back merged as far as the geometry allows.
#[test]
fn an_unaligned_movable_zone_reserves_whole_and_merges_back() {
    for cache in [true, false] {
        let b = PageArena::builder().pages(100).movable_pages(37).max_order(4);
        let arena = if cache { b } else { b.without_thread_cache() }.build().unwrap();
        assert_eq!(arena.zone_range(pinowner::ZoneKind::Movable), 63..100);
        let mut frames: Vec<_> = (0..37).map(|_| arena.alloc_movable(0).unwrap().into_block()).collect();
        frames.sort_by_key(|b| b.pfn());
        assert_eq!(frames.first().map(|b| b.pfn()), Some(63));
        // Freed in page order: the zone path leaves buddies unmerged.
        drop(frames);
        let run = arena.reserve_range(63, 37, Reason::Shrink).unwrap();
        assert_eq!(run.range(), 63..100);
        assert!(matches!(arena.alloc_movable(0).map(|b| arena.zone_of(b.pfn())), Ok(Some(pinowner::ZoneKind::Normal))));
        drop(run);
        let run = arena.reserve_contig(32, 32, Reason::Contig).unwrap();
        assert_eq!(run.range(), 64..96);
        drop(run);
        for start in 63..100 {
            let run = arena.reserve_range(start, 100 - start, Reason::Contig).unwrap();
            drop(run);
        }
        assert_eq!(arena.free_pages(), 100);
        arena.drain_thread_caches();
        arena.verify().unwrap();
        let stats = arena.frag_stats();
        let z = stats.zone(pinowner::ZoneKind::Movable).unwrap();
        // 63..100 merges to 63, 64..80, 80..96, 96..100.
        assert_eq!(z.free_blocks, vec![1, 0, 1, 0, 2], "{stats}");
        assert_eq!(z.largest_free_run, 37, "{stats}");
    }
}

/// An RDMA deregistration on a counts-only arena releases the pins a
/// waiting reservation is blocked on: the wait ends with the run (the
/// counts-only release path wakes waiters as the exact one does).
#[test]
fn a_counts_only_release_ends_a_waiting_reservation() {
    let arena: std::sync::Arc<PageArena<CountsOnly>> = std::sync::Arc::new(
        PageArena::builder().pages(128).movable_pages(64).max_order(6).attribution().build().unwrap(),
    );
    let mr = arena.alloc_movable(0).unwrap().into_block();
    let pins: Vec<_> = (0..4).map(|_| arena.pin_owned(mr.pfn()).unwrap()).collect();
    drop(mr);
    std::thread::scope(|s| {
        s.spawn(move || {
            std::thread::sleep(Duration::from_millis(5));
            drop(pins);
        });
        let run = arena.reserve_contig_wait(64, 64, Reason::Contig, Duration::from_secs(60));
        assert_eq!(run.map(|r| r.range()).unwrap(), 64..128);
    });
    all_back(arena.exact());
}
