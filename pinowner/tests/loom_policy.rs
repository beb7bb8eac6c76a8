//! Loom models of the counts-only attribution policy: a handle's clone is
//! one `fetch_add`, its drop one `fetch_sub`, and the last one frees in a
//! second step. Run with
//! `RUSTFLAGS="--cfg loom" LOOM_MAX_PREEMPTIONS=2 cargo test -p pinowner --release --test loom_policy`.
#![cfg(loom)]

mod common;

use std::sync::Arc;

use common::model;
use loom::thread;
use pinowner::{AcquireError, CountsOnly, PageArena, PageFlags, ThreadCache};

type Counted = PageArena<CountsOnly>;

/// A counts-only arena of 2 pages (one order-1 block), without caches.
fn counted() -> Arc<Counted> {
    Arc::new(PageArena::builder().pages(2).max_order(1).without_thread_cache().attribution().build().unwrap())
}

/// A counts-only arena of 2 pages (one order-1 block) with order-0 caches.
fn cached_counted() -> Arc<Counted> {
    let cache = ThreadCache { batch: 1, high: 1, shards: 4, orders: ThreadCache::ORDER_0 };
    Arc::new(PageArena::builder().pages(2).max_order(1).thread_cache(cache).attribution().build().unwrap())
}

/// Reserves the whole zone while `releaser` drops the last count on page
/// `pfn`: the reservation succeeds only once the block is free (else it
/// names the block), and afterwards the page is free exactly once,
/// coalesced, neither cached nor isolated.
fn reserve_the_zone_while(arena: &Counted, pfn: usize, releaser: thread::JoinHandle<()>) {
    let got = arena.reserve_range(0, 2, pinowner::Reason::Contig);
    match &got {
        Ok(run) => {
            let s = arena.page_state(pfn).unwrap();
            assert!(s.flags.contains(PageFlags::CONTIG), "{s}");
            assert_eq!(run.pages(), 2);
        }
        Err(pinowner::ContigError::Busy(f)) => assert_eq!(f.busy[0].head, pfn),
        Err(e) => panic!("unexpected {e}"),
    }
    releaser.join().unwrap();
    drop(got);
    arena.drain_thread_caches();
    arena.verify().unwrap();
    assert_eq!(arena.free_pages(), 2);
    assert_eq!(arena.frag_stats().zones[0].free_blocks[1], 1, "coalesced back");
    for p in 0..2 {
        let f = arena.page_state(p).unwrap().flags;
        assert!(!f.contains(PageFlags::ISOLATED) && !f.contains(PageFlags::PCP), "page {p}: {f}");
    }
}

/// The last counted release of a block (its count dropped by a
/// `fetch_sub`, then the block made a cached free block in a second
/// compare-and-swap that decides against `ISOLATED`) racing a reservation
/// of the whole zone, which isolates the window, drains the caches and
/// tests the block: the reservation succeeds only once the block is free,
/// and afterwards the page is free exactly once, coalesced, neither cached
/// nor isolated.
#[test]
fn a_counted_last_release_against_a_reservation_frees_once_and_keeps_isolation_exact() {
    model("a_counted_last_release_against_a_reservation_frees_once_and_keeps_isolation_exact", || {
        let arena = cached_counted();
        let block = arena.alloc_owned(0).unwrap();
        let pfn = block.pfn();
        let r = block.page_ref(0);
        drop(block);
        reserve_the_zone_while(&arena, pfn, thread::spawn(move || drop(r)));
    });
}

/// A counted block's drop, its last count (a load, then one
/// compare-and-swap straight to the cached free word, deciding against
/// `ISOLATED` in the same instruction), racing a reservation of the whole
/// zone: the reservation succeeds only once the block is free, and
/// afterwards the page is free exactly once, coalesced, neither cached nor
/// isolated. (With a plain store in place of that compare-and-swap, the
/// reservation's `ISOLATED` can be lost and the block cached inside its
/// window.)
#[test]
fn a_counted_block_dropped_against_a_reservation_frees_once_and_keeps_isolation_exact() {
    model("a_counted_block_dropped_against_a_reservation_frees_once_and_keeps_isolation_exact", || {
        let arena = cached_counted();
        let block = arena.alloc_owned(0).unwrap();
        let pfn = block.pfn();
        reserve_the_zone_while(&arena, pfn, thread::spawn(move || drop(block)));
    });
}

/// An exact holder (a raw pin, through `Deref`) releases while counted
/// holders come and go on the same block: whatever interleaves, once the
/// exact holder is gone the block names nobody (counted acquisitions never
/// write the owner slot, so none of them can be named after it leaves).
#[test]
fn counted_holders_never_leave_a_departed_holder_named() {
    model("counted_holders_never_leave_a_departed_holder_named", || {
        let arena = counted();
        let block = arena.alloc_owned(0).unwrap();
        let pfn = block.pfn();
        arena.pin_raw(pfn).unwrap();
        let r = block.page_ref(0);
        let a1 = arena.clone();
        let t1 = thread::spawn(move || a1.unpin_raw(pfn).unwrap());
        let t2 = thread::spawn(move || {
            let again = r.clone();
            drop(r);
            again
        });
        t1.join().unwrap();
        let again = t2.join().unwrap();
        assert_eq!(arena.page_info(pfn).unwrap().acquirer, None, "nobody named holds it");
        drop((again, block));
        assert_eq!(arena.free_pages(), 2);
    });
}

/// A counted get by page number (a compare-and-swap from a live word)
/// racing the block's drop (a load, and for the last count one
/// compare-and-swap to the freed word; after a lost race a `fetch_sub`,
/// then the free): it gets a live block, whose own put then frees it, or
/// sees the page free; never a resurrected page, never a double free.
#[test]
fn a_counted_get_by_number_against_the_last_put_never_resurrects_a_page() {
    model("a_counted_get_by_number_against_the_last_put_never_resurrects_a_page", || {
        let arena = counted();
        let block = arena.alloc_owned(0).unwrap();
        let pfn = block.pfn();
        let a2 = arena.clone();
        let t = thread::spawn(move || match a2.get(pfn) {
            Ok(r) => {
                assert!(!r.state().flags.contains(PageFlags::FREE));
                drop(r);
            }
            Err(AcquireError::Free { .. }) => {}
            Err(e) => panic!("unexpected {e}"),
        });
        drop(block);
        t.join().unwrap();
        arena.verify().unwrap();
        assert_eq!(arena.free_pages(), 2);
        assert_eq!(arena.frag_stats().zones[0].free_blocks[1], 1, "coalesced back");
    });
}

/// The block's reference and a pin, dropped at once on two threads: the
/// pin's release decides from the word its own `fetch_sub` returned, the
/// block's from the word its compare-and-swap replaced (or its own
/// `fetch_sub` after a lost race), so exactly one of them sees the last
/// count and frees the block, once.
#[test]
fn two_counted_releases_at_once_free_the_block_exactly_once() {
    model("two_counted_releases_at_once_free_the_block_exactly_once", || {
        let arena = counted();
        let block = arena.alloc_owned(1).unwrap();
        let pin = block.pin(1).unwrap();
        let t = thread::spawn(move || drop(pin));
        drop(block);
        t.join().unwrap();
        arena.verify().unwrap();
        assert_eq!(arena.free_pages(), 2);
        assert!(arena.page_state(0).unwrap().flags.contains(PageFlags::FREE));
    });
}
