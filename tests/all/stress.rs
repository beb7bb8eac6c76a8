//! Threads racing allocation, frees and gets by page number. Each owner
//! writes a canary into every page it holds and checks it on release: a page
//! given to two owners shows up as a torn canary.

use std::sync::atomic::{AtomicUsize, Ordering};

use pinowner::{MovableBlock, PageArena, ThreadCache};

fn hammer(arena: &PageArena, threads: usize, iters: usize) {
    let published: Vec<AtomicUsize> = (0..64).map(|_| AtomicUsize::new(0)).collect();
    std::thread::scope(|s| {
        for t in 0..threads {
            let published = &published;
            s.spawn(move || {
                let mut seed = 0x9e37_79b9_7f4a_7c15u64 ^ (t as u64) << 32;
                let mut next = move || {
                    seed ^= seed << 13;
                    seed ^= seed >> 7;
                    seed ^= seed << 17;
                    seed
                };
                let mut held = Vec::new();
                for i in 0..iters {
                    let r = next();
                    if held.len() < 8 && r % 3 != 0 {
                        let order = (r >> 8) as u8 % 3;
                        let alloc = if r & 16 == 0 {
                            arena.alloc(order)
                        } else {
                            arena.alloc_movable(order).map(MovableBlock::into_block)
                        };
                        if let Ok(mut b) = alloc {
                            let canary = ((t as u8) << 5) ^ (i as u8);
                            // Another thread may hold a transient count from a
                            // stale published page number: wait it out.
                            loop {
                                if let Ok(mut bytes) = b.bytes_mut() {
                                    bytes.fill(canary);
                                    break;
                                }
                                std::thread::yield_now();
                            }
                            published[(r >> 20) as usize % 64].store(b.pfn() + 1, Ordering::Relaxed);
                            held.push((b, canary));
                        }
                    } else if !held.is_empty() {
                        let (mut b, canary) = held.swap_remove((r >> 4) as usize % held.len());
                        // Wait out transient refs taken by other threads.
                        let pfn = b.pfn();
                        loop {
                            if let Ok(bytes) = b.bytes_mut() {
                                assert!(bytes.iter().all(|&x| x == canary), "torn canary in block {pfn:#x}");
                                break;
                            }
                            std::thread::yield_now();
                        }
                        drop(b);
                    }
                    // Take and drop a count on some page another thread published:
                    // it may be live, free, or being reallocated right now.
                    let p = published[(r >> 40) as usize % 64].load(Ordering::Relaxed);
                    if p != 0 {
                        if r & 1 == 0 {
                            drop(arena.get(p - 1));
                        } else {
                            drop(arena.pin(p - 1));
                        }
                    }
                }
            });
        }
    });
}

#[test]
fn concurrent_owners_never_share_a_page() {
    let arena = PageArena::builder().pages(256).movable_pages(64).max_order(4).build().unwrap();
    hammer(&arena, 4, 20_000);
    assert_eq!(arena.free_pages(), 256);
}

#[test]
fn concurrent_owners_never_share_a_page_with_thread_caches() {
    let cache = ThreadCache { batch: 4, high: 16, shards: 2, orders: ThreadCache::KERNEL_ORDERS };
    let arena = PageArena::builder().pages(256).max_order(4).thread_cache(cache).build().unwrap();
    hammer(&arena, 4, 20_000);
    arena.drain_thread_caches();
    assert_eq!(arena.free_pages(), 256);
    assert_eq!(arena.frag_stats().zones[0].free_blocks[4], 16);
}

/// Reservations racing cache allocations and frees: cached pages are marked
/// allocated with a plain store inside their owner's cache, so reservations
/// write `ISOLATED` holding every cache. Whatever interleaves, no page
/// is handed to two owners, and once all is freed nothing stays isolated,
/// cached or uncoalesced.
#[test]
fn reservations_racing_thread_caches_leave_no_page_isolated_or_lost() {
    use std::sync::atomic::AtomicBool;
    let cache = ThreadCache { batch: 4, high: 16, shards: 2, orders: ThreadCache::KERNEL_ORDERS };
    let arena = PageArena::builder().pages(256).movable_pages(128).max_order(4).thread_cache(cache).build().unwrap();
    let stop = AtomicBool::new(false);
    std::thread::scope(|s| {
        s.spawn(|| {
            let mut i = 0usize;
            while !stop.load(Ordering::Relaxed) {
                let start = 128 + (i * 16) % 128;
                i += 1;
                match arena.reserve_range(start, 16, pinowner::Reason::Contig) {
                    Ok(run) => assert_eq!(run.pages(), 16),
                    Err(pinowner::ContigError::Busy(_)) => {}
                    // A block of an earlier run, kept alive past the run's
                    // drop by a get on a published page number, is still
                    // part of that run.
                    Err(pinowner::ContigError::Overlap { .. }) => {}
                    Err(e) => panic!("unexpected {e}"),
                }
            }
        });
        hammer(&arena, 3, 20_000);
        stop.store(true, Ordering::Relaxed);
    });
    arena.drain_thread_caches();
    assert_eq!(arena.free_pages(), 256);
    for z in &arena.frag_stats().zones {
        assert_eq!(z.free_blocks[4], 8, "{z:?}");
    }
    for p in 0..256 {
        let f = arena.page_state(p).unwrap().flags;
        assert!(!f.contains(pinowner::PageFlags::ISOLATED) && !f.contains(pinowner::PageFlags::PCP), "page {p}: {f}");
    }
}

/// Issue 8.1 under load: workers allocating, freeing, getting and pinning by
/// page number, while three threads reserve overlapping windows (by range,
/// by best window, and waiting), and another drains caches and renders
/// owner reports and audits, all at once. Before reservations of a zone
/// were serialised, two overlapping ones corrupted the free lists (lost
/// pages, allocator panics, hung reservations). Afterwards every page is
/// back, nothing is isolated or cached, and the allocator verifies.
fn every_operation_at_once(cache: Option<ThreadCache>) {
    use std::sync::atomic::AtomicBool;
    use std::time::Duration;

    use pinowner::{ContigError, Reason, Tracking};

    let mut b = PageArena::builder().pages(512).movable_pages(256).max_order(6).tracking(Tracking {
        depth: 4,
        capacity: 512,
        ..Tracking::default()
    });
    b = match cache {
        Some(cache) => b.thread_cache(cache),
        None => b.without_thread_cache(),
    };
    let arena = b.build().unwrap();
    let stop = AtomicBool::new(false);
    let reserved = AtomicUsize::new(0);
    let check = |got: Result<pinowner::ContigRun<&PageArena>, ContigError>, pages: usize| match got {
        Ok(run) => {
            assert_eq!(run.pages(), pages);
            reserved.fetch_add(1, Ordering::Relaxed);
            std::thread::yield_now();
        }
        Err(ContigError::Busy(_) | ContigError::Overlap { .. } | ContigError::Timeout { .. }) => {}
        Err(e) => panic!("unexpected {e}"),
    };
    std::thread::scope(|s| {
        for (t, len) in [(0usize, 32usize), (1, 12)] {
            let (arena, stop, check) = (&arena, &stop, &check);
            s.spawn(move || {
                let mut i = t * 7;
                while !stop.load(Ordering::Relaxed) {
                    let start = 256 + (i * 8) % (256 - len);
                    i += 1;
                    check(arena.reserve_range(start, len, Reason::Contig), len);
                }
            });
        }
        s.spawn(|| {
            let mut i = 0u32;
            while !stop.load(Ordering::Relaxed) {
                i += 1;
                if i.is_multiple_of(8) {
                    check(arena.reserve_contig_wait(16, 16, Reason::Shrink, Duration::from_millis(2)), 16);
                } else {
                    check(arena.reserve_contig(16, 16, Reason::Compaction), 16);
                }
            }
        });
        s.spawn(|| {
            while !stop.load(Ordering::Relaxed) {
                arena.drain_thread_caches();
                let _ = arena.frag_stats();
                let _ = arena.owner_report().to_string();
                let _ = arena.audit();
                std::thread::sleep(Duration::from_millis(1));
            }
        });
        hammer(&arena, 3, 20_000);
        stop.store(true, Ordering::Relaxed);
    });
    assert!(reserved.load(Ordering::Relaxed) > 0, "no reservation ever succeeded");
    arena.drain_thread_caches();
    arena.verify().unwrap();
    assert_eq!(arena.free_pages(), 512);
}

#[test]
fn several_reservations_racing_every_operation_lose_no_page() {
    every_operation_at_once(None);
}

#[test]
fn several_reservations_racing_every_operation_lose_no_page_with_thread_caches() {
    every_operation_at_once(Some(ThreadCache { batch: 4, high: 16, shards: 8, orders: ThreadCache::KERNEL_ORDERS }));
}
