//! The buddy allocator, zones, per-thread caches and fragmentation stats.

use pinowner::{AllocError, PageArena, ThreadCache, ZoneKind};

#[test]
fn freeing_everything_coalesces_back_to_maximal_blocks() {
    let arena = PageArena::builder().pages(1024).max_order(10).build().unwrap();
    let blocks: Vec<_> = (0..1024).map(|_| arena.alloc(0).unwrap()).collect();
    assert_eq!(arena.free_pages(), 0);
    drop(blocks);
    // Freed pages wait in the thread's cache (as on the kernel's per-CPU
    // lists) until drained; then they coalesce.
    assert!(arena.drain_thread_caches() > 0);
    let stats = arena.frag_stats();
    let z = stats.zone(ZoneKind::Normal).unwrap();
    assert_eq!(z.free_blocks[10], 1, "{stats}");
    assert_eq!(z.free_blocks.iter().sum::<usize>(), 1);
    assert_eq!(z.largest_free_run, 1024);
}

#[test]
fn blocks_are_naturally_aligned_and_disjoint() {
    let arena = PageArena::builder().pages(512).build().unwrap();
    let mut owned = vec![false; 512];
    let mut held = Vec::new();
    for order in [3u8, 0, 5, 1, 2, 0, 4] {
        let b = arena.alloc(order).unwrap();
        assert_eq!(b.pfn() % (1 << order), 0, "order {order} block at {:#x}", b.pfn());
        for (p, slot) in owned.iter_mut().enumerate().skip(b.pfn()).take(b.pages()) {
            assert!(!*slot, "page {p:#x} handed out twice");
            *slot = true;
        }
        held.push(b);
    }
}

#[test]
fn exhausted_zone_reports_largest_free_block() {
    let arena = PageArena::builder().pages(16).max_order(4).build().unwrap();
    let _a = arena.alloc(3).unwrap();
    let _b = arena.alloc(2).unwrap();
    match arena.alloc(3) {
        Err(AllocError::OutOfMemory { order: 3, zone: ZoneKind::Normal, free: 4, largest }) => {
            assert_eq!(largest.0, Some(2));
        }
        other => panic!("unexpected {other:?}"),
    }
    let e = arena.alloc(3).unwrap_err().to_string();
    assert_eq!(e, "no free block of order 3 in the normal zone (4 pages free, largest free block order 2)");
}

#[test]
fn order_above_max_is_an_error() {
    let arena = PageArena::builder().pages(64).max_order(4).build().unwrap();
    assert_eq!(arena.alloc(5).unwrap_err(), AllocError::OrderTooLarge { order: 5, max_order: 4 });
}

#[test]
fn unmovable_allocations_never_use_the_movable_zone() {
    let arena = PageArena::builder().pages(64).movable_pages(32).build().unwrap();
    let mut held = Vec::new();
    while let Ok(b) = arena.alloc(0) {
        assert_eq!(arena.zone_of(b.pfn()), Some(ZoneKind::Normal));
        held.push(b);
    }
    assert_eq!(held.len(), 32);
    // Movable allocations prefer the movable zone...
    let m = arena.alloc_movable(0).unwrap();
    assert_eq!(arena.zone_of(m.pfn()), Some(ZoneKind::Movable));
    assert!(m.state().flags.contains(pinowner::PageFlags::MOVABLE));
}

#[test]
fn movable_allocations_fall_back_to_the_normal_zone() {
    let arena = PageArena::builder().pages(64).movable_pages(16).build().unwrap();
    let _all_movable = arena.alloc_movable(4).unwrap().into_block();
    let m = arena.alloc_movable(0).unwrap().into_block();
    assert_eq!(arena.zone_of(m.pfn()), Some(ZoneKind::Normal));
}

#[test]
fn alloc_zeroed_clears_bytes_a_previous_owner_wrote() {
    let arena = PageArena::builder().pages(4).build().unwrap();
    let mut b = arena.alloc(2).unwrap();
    b.bytes_mut().unwrap().fill(0x5a);
    drop(b);
    let z = arena.alloc_zeroed(2).unwrap();
    assert!(z.bytes().iter().all(|&x| x == 0));
}

#[test]
fn thread_cache_pages_are_invisible_to_the_lists_until_drained() {
    let cache = ThreadCache { batch: 8, high: 32, shards: 2, orders: ThreadCache::KERNEL_ORDERS };
    let arena = PageArena::builder().pages(64).max_order(6).thread_cache(cache).build().unwrap();
    let b = arena.alloc(0).unwrap();
    drop(b);
    let stats = arena.frag_stats();
    let z = stats.zone(ZoneKind::Normal).unwrap();
    assert_eq!(z.cached_pages, 8, "a batch was pulled into the cache");
    assert_eq!(z.free_pages, 56);
    assert_eq!(z.free_blocks[6], 0);
    assert_eq!(arena.drain_thread_caches(), 8);
    assert_eq!(arena.frag_stats().zone(ZoneKind::Normal).unwrap().free_blocks[6], 1);
    assert!(arena.alloc(6).is_ok());
}

/// The kernel's `drain_all_pages` before an allocation gives up: an
/// order-6 request in a 64-page arena whose pages sit in two threads'
/// caches drains them, coalesces, and succeeds; the caches are empty after.
#[test]
fn an_allocation_that_finds_nothing_drains_the_thread_caches_before_failing() {
    let cache = ThreadCache { batch: 8, high: 32, shards: 2, orders: ThreadCache::KERNEL_ORDERS };
    let arena = PageArena::builder().pages(64).max_order(6).thread_cache(cache).build().unwrap();
    drop(arena.alloc(0).unwrap());
    std::thread::scope(|s| {
        s.spawn(|| drop(arena.alloc(0).unwrap()));
    });
    assert_eq!(arena.frag_stats().zone(ZoneKind::Normal).unwrap().cached_pages, 16);
    let big = arena.alloc(6).expect("the cached pages are drained and coalesce");
    assert_eq!(big.pages(), 64);
    assert_eq!(arena.frag_stats().zone(ZoneKind::Normal).unwrap().cached_pages, 0);
    drop(big);
    assert!(matches!(arena.alloc(7), Err(AllocError::OrderTooLarge { .. })));
}

#[test]
fn thread_cache_returns_a_batch_past_its_high_mark() {
    let cache = ThreadCache { batch: 4, high: 8, shards: 1, orders: ThreadCache::KERNEL_ORDERS };
    let arena = PageArena::builder().pages(64).thread_cache(cache).build().unwrap();
    let blocks: Vec<_> = (0..20).map(|_| arena.alloc(0).unwrap()).collect();
    drop(blocks);
    let z = arena.frag_stats().zone(ZoneKind::Normal).unwrap().clone();
    assert!(z.cached_pages <= 8, "cache holds {} pages", z.cached_pages);
    assert_eq!(z.cached_pages + z.free_pages, 64);
}

#[test]
fn frag_stats_show_why_a_high_order_request_fails() {
    let arena = PageArena::builder().pages(64).max_order(6).build().unwrap();
    let mut all: Vec<_> = (0..64).map(|_| arena.alloc(0).unwrap()).collect();
    all.sort_by_key(|b| b.pfn());
    // Keep every other page: 32 pages free, none of them adjacent.
    let kept: Vec<_> = all.into_iter().enumerate().filter_map(|(i, b)| (i % 2 == 0).then_some(b)).collect();
    arena.drain_thread_caches();
    let stats = arena.frag_stats();
    let z = stats.zone(ZoneKind::Normal).unwrap();
    assert_eq!(z.free_pages, 32);
    assert_eq!(z.free_blocks[0], 32);
    assert_eq!(z.largest_free_run, 1);
    assert_eq!(z.unusable_index(1), 1.0);
    assert!(z.fragmentation_index(4).unwrap() > 0.9, "scattered free pages: failure is fragmentation");
    assert!(stats.to_string().contains("32 of 64 pages free"), "{stats}");
    drop(kept);
}

/// With one shard, at most one of several concurrent threads owns a cache;
/// the others allocate from and free to the buddy lists. Pages freed by a
/// thread without a cache must reach the lists (not stay marked as cached
/// and stranded), and no page may be handed to two threads.
#[test]
fn threads_beyond_the_shard_count_use_the_buddy_lists_and_lose_no_page() {
    const PAGES: usize = 256;
    let cache = ThreadCache { batch: 4, high: 8, shards: 1, orders: ThreadCache::KERNEL_ORDERS };
    let arena = PageArena::builder().pages(PAGES).max_order(8).thread_cache(cache).build().unwrap();
    let start = std::sync::Barrier::new(4);
    std::thread::scope(|s| {
        for t in 0..4u8 {
            let arena = &arena;
            let start = &start;
            s.spawn(move || {
                start.wait();
                for _ in 0..2_000 {
                    let mut held: Vec<_> = (0..3).map(|_| arena.alloc(0).unwrap()).collect();
                    for b in &mut held {
                        b.bytes_mut().unwrap().fill(t);
                    }
                    for b in &held {
                        assert!(b.bytes().iter().all(|&x| x == t), "page {} shared", b.pfn());
                    }
                }
            });
        }
    });
    assert_eq!(arena.free_pages(), PAGES, "cached pages included");
    arena.drain_thread_caches();
    let z = &arena.frag_stats().zones[0];
    assert_eq!(z.cached_pages, 0);
    assert_eq!(z.free_blocks[8], 1, "everything coalesced back: {:?}", z.free_blocks);
}

/// A freed block of a cached order (here 3) parks in the freeing thread's
/// cache, uncoalesced, and serves that thread's next allocation of the
/// order; a contiguous reservation over it drains it.
#[test]
fn a_cached_higher_order_block_is_reused_by_its_thread_and_drained_by_a_reservation() {
    let cache = ThreadCache { batch: 8, high: 32, shards: 64, orders: ThreadCache::KERNEL_ORDERS };
    let arena = PageArena::builder().pages(64).max_order(6).thread_cache(cache).build().unwrap();
    let b = arena.alloc(3).unwrap();
    let pfn = b.pfn();
    drop(b);
    let z = arena.frag_stats().zone(ZoneKind::Normal).unwrap().clone();
    assert_eq!(z.cached_pages, 8, "the order-3 block is cached");
    assert_eq!(z.free_pages, 56);
    assert!(arena.page_state(pfn).unwrap().flags.contains(pinowner::PageFlags::PCP));
    let again = arena.alloc(3).unwrap();
    assert_eq!(again.pfn(), pfn, "served from the cache");
    drop(again);
    // Order 9 is in the kernel set but above this arena's largest order:
    // ignored, not an error.
    let run = arena.reserve_range(0, 64, pinowner::Reason::Contig).unwrap();
    assert_eq!(run.pages(), 64);
    drop(run);
    // The run's pages were freed like any others: into this thread's cache
    // where their order is cached.
    arena.drain_thread_caches();
    assert_eq!(arena.frag_stats().zone(ZoneKind::Normal).unwrap().free_blocks[6], 1);
}

/// Pages of the arena not held in `held`.
fn unheld(arena: &PageArena, held: &[pinowner::Block<&PageArena>]) -> usize {
    arena.pages() - held.iter().map(|b| b.len() / arena.page_size()).sum::<usize>()
}

#[test]
fn free_pages_stays_exact_through_cache_refills_flushes_and_drains() {
    // Small caches, so refills and flushes happen often; orders 0-3 cached.
    let cache = ThreadCache { batch: 3, high: 7, shards: 4, orders: 0b1111 };
    let arena = PageArena::builder().pages(1024).movable_pages(256).max_order(5).thread_cache(cache).build().unwrap();
    std::thread::scope(|s| {
        for t in 0..3u64 {
            let arena = &arena;
            s.spawn(move || {
                let mut held = Vec::new();
                let mut x = 0x9e37_79b9_7f4a_7c15u64 ^ t;
                for _ in 0..4000 {
                    x ^= x << 13;
                    x ^= x >> 7;
                    x ^= x << 17;
                    if !x.is_multiple_of(3) || held.is_empty() {
                        let order = (x >> 8) as u8 % 6;
                        let b = if x & 0x10000 != 0 {
                            arena.alloc_movable(order).map(|m| m.into_block())
                        } else {
                            arena.alloc(order)
                        };
                        if let Ok(b) = b {
                            held.push(b);
                        }
                    } else {
                        drop(held.swap_remove((x >> 20) as usize % held.len()));
                    }
                }
                held.truncate(held.len() / 2);
                held
            });
        }
    });
    // Every thread dropped what it held on exit; now with some held here.
    assert_eq!(arena.free_pages(), arena.pages());
    arena.verify().unwrap();
    let held: Vec<_> = (0..40).map(|i| arena.alloc(i % 4).unwrap()).collect();
    assert_eq!(arena.free_pages(), unheld(&arena, &held));
    arena.verify().unwrap();
    assert!(arena.frag_stats().zones.iter().any(|z| z.cached_pages > 0), "some pages are cached");
    arena.drain_thread_caches();
    assert_eq!(arena.free_pages(), unheld(&arena, &held));
    assert!(arena.frag_stats().zones.iter().all(|z| z.cached_pages == 0));
    arena.verify().unwrap();
    drop(held);
    assert_eq!(arena.free_pages(), arena.pages());
}
