//! Loom models of the page state machine. Run with
//! `RUSTFLAGS="--cfg loom" LOOM_MAX_PREEMPTIONS=2 cargo test -p pinowner --release --test loom`.
#![cfg(loom)]

mod common;

use std::sync::Arc;

use common::model;
use loom::thread;
use pinowner::{AcquireError, PageArena, PageFlags, ThreadCache};

fn arena(pages: usize) -> Arc<PageArena> {
    Arc::new(PageArena::builder().pages(pages).max_order(1).without_thread_cache().build().unwrap())
}

/// An arena with per-thread caches of one page (a batch of one, a high mark
/// of one, one shard per model thread).
fn cached_arena(pages: usize) -> Arc<PageArena> {
    let cache = ThreadCache { batch: 1, high: 1, shards: 4, orders: ThreadCache::ORDER_0 };
    Arc::new(PageArena::builder().pages(pages).max_order(1).thread_cache(cache).build().unwrap())
}

/// Every page free, coalesced into one order-1 block, no flag left behind.
fn assert_all_free_and_coalesced(arena: &PageArena) {
    arena.drain_thread_caches();
    assert_eq!(arena.free_pages(), 2);
    assert_eq!(arena.frag_stats().zones[0].free_blocks[1], 1, "coalesced back");
    for p in 0..2 {
        let f = arena.page_state(p).unwrap().flags;
        assert!(!f.contains(PageFlags::ISOLATED) && !f.contains(PageFlags::PCP), "page {p}: {f}");
    }
}

/// After two order-0 allocations and their frees through the caches: the
/// lists, counts and counters agree, and every page is free and merged.
fn assert_two_allocations_freed_exactly(arena: &PageArena) {
    arena.verify().unwrap();
    assert_eq!(arena.free_pages(), 2);
    let zone = &arena.stats().zones[0];
    assert_eq!((zone.allocs[0], zone.frees[0]), (2, 2));
    assert_all_free_and_coalesced(arena);
}

/// Concurrent clones and drops of refs and pins, by handle and by page
/// number, leave exact counts.
#[test]
fn concurrent_get_put_pin_unpin_keep_exact_counts() {
    model("concurrent_get_put_pin_unpin_keep_exact_counts", || {
        let arena = arena(2);
        let block = arena.alloc_owned(0).unwrap();
        let pfn = block.pfn();
        let r = block.page_ref(0);
        let p = block.pin(0).unwrap();
        let t1 = thread::spawn(move || {
            let r2 = r.clone();
            drop(r);
            let p2 = p.clone();
            drop(p2);
            drop(r2);
            p
        });
        let a2 = arena.clone();
        let t2 = thread::spawn(move || {
            let g = a2.get(pfn).expect("the block is held");
            let q = a2.pin(pfn).expect("the block is held");
            drop(g);
            drop(q);
        });
        let p = t1.join().unwrap();
        t2.join().unwrap();
        let s = arena.page_state(pfn).unwrap();
        assert_eq!((s.refcount, s.pincount), (1, 1));
        drop(p);
        drop(block);
        assert_eq!(arena.free_pages(), 2);
    });
}

/// The last of two concurrent releases (a put and an unpin) frees the block,
/// exactly once.
#[test]
fn last_put_frees_a_page_exactly_once() {
    model("last_put_frees_a_page_exactly_once", || {
        let arena = arena(2);
        let block = arena.alloc_owned(1).unwrap();
        let pin = block.pin(1).unwrap();
        let t = thread::spawn(move || drop(pin));
        drop(block);
        t.join().unwrap();
        // A double free would count the block twice; a missed one, not at all.
        assert_eq!(arena.free_pages(), 2);
        assert!(arena.page_state(0).unwrap().flags.contains(PageFlags::FREE));
    });
}

/// A get by page number racing the last put either gets a live block (and
/// then its own put frees it) or sees the page free; never a resurrected page.
#[test]
fn get_by_pfn_against_last_put_never_resurrects_a_page() {
    model("get_by_pfn_against_last_put_never_resurrects_a_page", || {
        let arena = arena(2);
        let block = arena.alloc_owned(0).unwrap();
        let pfn = block.pfn();
        let a2 = arena.clone();
        let t = thread::spawn(move || match a2.get(pfn) {
            Ok(r) => {
                assert!(!r.state().flags.contains(PageFlags::FREE));
                drop(r);
                true
            }
            Err(AcquireError::Free { .. }) => false,
            Err(e) => panic!("unexpected {e}"),
        });
        drop(block);
        t.join().unwrap();
        assert_eq!(arena.free_pages(), 2);
    });
}

/// Concurrent allocations and frees never hand one page to two owners.
#[test]
fn concurrent_alloc_free_never_hands_a_page_to_two_owners() {
    model("concurrent_alloc_free_never_hands_a_page_to_two_owners", || {
        let arena = arena(2);
        let first = arena.alloc_owned(0).unwrap();
        let a1 = arena.clone();
        let t1 = thread::spawn(move || {
            drop(first);
            a1.alloc_owned(0).ok()
        });
        let a2 = arena.clone();
        let t2 = thread::spawn(move || a2.alloc_owned(0).ok());
        let x = t1.join().unwrap();
        let y = t2.join().unwrap();
        if let (Some(x), Some(y)) = (&x, &y) {
            assert_ne!(x.pfn(), y.pfn(), "one page, two owners");
        }
        assert!(x.is_some() || y.is_some());
        drop((x, y));
        assert_eq!(arena.free_pages(), 2);
        assert_eq!(arena.frag_stats().zones[0].free_blocks[1], 1, "coalesced back");
    });
}

/// A reservation racing the release of the only reference in its window
/// either fails (and rolls back completely) or succeeds only after the
/// reference is gone: never while it is held.
#[test]
fn a_reservation_never_succeeds_while_a_reference_is_held() {
    model("a_reservation_never_succeeds_while_a_reference_is_held", || {
        let arena = arena(2);
        let block = arena.alloc_owned(0).unwrap();
        let pfn = block.pfn();
        let r = block.page_ref(0);
        drop(block);
        let t = thread::spawn(move || drop(r));
        let got = arena.reserve_range(0, 2, pinowner::Reason::Contig);
        match &got {
            Ok(run) => {
                // The run owns both pages; the reference must be gone already,
                // or its drop below would have to free a page of the run.
                let s = arena.page_state(pfn).unwrap();
                assert!(s.flags.contains(PageFlags::CONTIG), "{s}");
                assert_eq!(run.pages(), 2);
            }
            Err(pinowner::ContigError::Busy(f)) => assert_eq!(f.busy[0].head, pfn),
            Err(e) => panic!("unexpected {e}"),
        }
        t.join().unwrap();
        if let Ok(run) = &got {
            let s = arena.page_state(pfn).unwrap();
            assert_eq!((s.refcount, s.pincount), (1, 0), "the run's reference is the only one");
            assert_eq!(run.pages(), 2);
        }
        drop(got);
        // Rolled back or released: no page isolated, everything coalesced.
        for p in 0..2 {
            assert!(!arena.page_state(p).unwrap().flags.contains(PageFlags::ISOLATED));
        }
        assert_eq!(arena.free_pages(), 2);
        assert_eq!(arena.frag_stats().zones[0].free_blocks[1], 1);
    });
}

/// The last release of an order-0 page makes it a cached free page (`FREE |
/// PCP`) in its own compare-and-swap, then pushes it into the thread's cache.
/// A drain returning the page's buddy to the lists at the same time must
/// never coalesce with it, neither before the push nor after: one page
/// freed into a cache while another thread drains.
#[test]
fn a_page_freed_into_a_cache_never_coalesces_with_a_concurrent_drain() {
    model("a_page_freed_into_a_cache_never_coalesces_with_a_concurrent_drain", || {
        let arena = cached_arena(2);
        let a = arena.alloc_owned(0).unwrap();
        let b = arena.alloc_owned(0).unwrap();
        assert_ne!(a.pfn(), b.pfn());
        let t = thread::spawn(move || drop(a));
        let a2 = arena.clone();
        let u = thread::spawn(move || {
            drop(b);
            a2.drain_thread_caches();
        });
        t.join().unwrap();
        u.join().unwrap();
        assert_all_free_and_coalesced(&arena);
    });
}

/// A spawned thread allocates and frees two blocks of `order` (the second
/// served by its cache, where the first was freed) while this thread
/// reserves the whole 2-page zone (setting and clearing `ISOLATED` holding
/// every cache's remote side, and draining the caches): the reservation
/// succeeds only if the block is free, a failure names it, and afterwards
/// nothing stays isolated, cached or uncoalesced.
fn cache_traffic_against_a_reservation(cache_orders: u32, order: u8) {
    let cache = ThreadCache { batch: 1, high: 1, shards: 4, orders: cache_orders };
    let arena = Arc::new(PageArena::builder().pages(2).max_order(1).thread_cache(cache).build().unwrap());
    let a2 = arena.clone();
    let t = thread::spawn(move || {
        // (Either may find the zone reserved already.)
        drop(a2.alloc_owned(order).ok());
        drop(a2.alloc_owned(order).ok());
    });
    let got = arena.reserve_range(0, 2, pinowner::Reason::Contig);
    match &got {
        Ok(run) => assert_eq!(run.pages(), 2),
        Err(pinowner::ContigError::Busy(f)) => assert_eq!(f.busy.len(), 1),
        Err(e) => panic!("unexpected {e}"),
    }
    t.join().unwrap();
    drop(got);
    assert_all_free_and_coalesced(&arena);
}

/// Allocating an order-0 page from a cache (a plain store inside its
/// owner's side) and freeing into it, racing a reservation.
#[test]
fn cache_alloc_and_free_against_a_reservation_keep_isolation_exact() {
    model("cache_alloc_and_free_against_a_reservation_keep_isolation_exact", || {
        cache_traffic_against_a_reservation(ThreadCache::ORDER_0, 0)
    });
}

/// The same race with an order-1 block cached (the kernel caches orders up
/// to 3 and the pageblock order per CPU).
#[test]
fn a_cached_order_1_block_against_a_reservation_keeps_isolation_exact() {
    model("a_cached_order_1_block_against_a_reservation_keeps_isolation_exact", || {
        cache_traffic_against_a_reservation(0b11, 1)
    });
}

/// Two reservations at once over overlapping windows while the last count
/// of a block inside both is dropped, so a reservation meets the block in
/// flight and releases the zone lock between passes with its window still
/// isolated (the case the first version got wrong: the other reservation
/// carved and committed inside that window). Whatever interleaves, each
/// reservation succeeds only over free pages, a success of one excludes
/// the other's overlapping run, and afterwards the allocator verifies
/// with every page free.
#[test]
fn two_overlapping_reservations_with_a_block_in_flight_keep_the_free_lists_exact() {
    model("two_overlapping_reservations_with_a_block_in_flight_keep_the_free_lists_exact", || {
        let arena = Arc::new(
            PageArena::builder().pages(2).movable_pages(2).max_order(1).without_thread_cache().build().unwrap(),
        );
        let block = arena.alloc_movable_owned(0).unwrap().into_block();
        let held = block.pfn();
        let t = thread::spawn(move || drop(block));
        let a = arena.clone();
        let other = thread::spawn(move || {
            let run = a.reserve_range(held, 1, pinowner::Reason::Contig);
            if let Ok(run) = &run {
                let s = a.page_state(run.pfn()).unwrap();
                assert!(s.flags.contains(PageFlags::CONTIG) && s.refcount == 1, "{s}");
            }
            run.is_ok()
        });
        let both = arena.reserve_range(0, 2, pinowner::Reason::Contig);
        if let Ok(run) = &both {
            for p in run.range() {
                let s = arena.page_state(p).unwrap();
                assert!(s.flags.contains(PageFlags::CONTIG) && !s.flags.contains(PageFlags::ISOLATED), "{p}: {s}");
            }
        }
        other.join().unwrap();
        t.join().unwrap();
        drop(both);
        arena.verify().unwrap();
        assert_eq!(arena.free_pages(), 2);
    });
}

/// Two threads end a block each at once, each freeing into its own cache
/// through the release's fast path, which is handed the thread's cache
/// slot by its caller (read where the handle is dropped). Each thread is
/// the only owner of its shard, so the two pushes never meet: the lists,
/// the page counts and the counters stay exact. A release that entered a
/// shard not its own (another thread's, or one shard for all) would be a
/// second owner inside it, which the model reports as a data race.
#[test]
fn two_threads_freeing_into_their_own_caches_at_once_keep_lists_exact() {
    model("two_threads_freeing_into_their_own_caches_at_once_keep_lists_exact", || {
        let arena = cached_arena(2);
        let a2 = arena.clone();
        let t = thread::spawn(move || drop(a2.alloc_owned(0).unwrap()));
        drop(arena.alloc_owned(0).unwrap());
        t.join().unwrap();
        assert_two_allocations_freed_exactly(&arena);
    });
}

/// The owner allocates and frees through its cache (a pop, a push, the
/// shard's page count and the allocation counter, all written inside its
/// side of the biased lock with plain stores) while another thread drains
/// every cache (the remote side: revoke, barrier, wait for the owner to
/// leave). The two never hold the cache at once, and an owner that finds
/// the cache revoked queues behind the remote: so afterwards the lists,
/// the published page count and the counters agree (`verify`), every page
/// is free and every allocation has its free.
#[test]
fn cache_owner_against_a_remote_drain_keeps_lists_and_counts_exact() {
    model("cache_owner_against_a_remote_drain_keeps_lists_and_counts_exact", || {
        let arena = cached_arena(2);
        let a2 = arena.clone();
        let t = thread::spawn(move || {
            drop(a2.alloc_owned(0).unwrap());
            drop(a2.alloc_owned(0).unwrap());
        });
        arena.drain_thread_caches();
        t.join().unwrap();
        assert_two_allocations_freed_exactly(&arena);
    });
}
