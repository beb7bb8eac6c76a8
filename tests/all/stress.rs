//! Threads racing allocation, frees and gets by page number. Each owner
//! writes a canary into every page it holds and checks it on release: a page
//! given to two owners shows up as a torn canary.

use std::sync::atomic::{AtomicUsize, Ordering};

use pinowner::{PageArena, ThreadCache};

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
                        let alloc = if r & 16 == 0 { arena.alloc(order) } else { arena.alloc_movable(order) };
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
