//! Loom models of owner tracking: arming against a concurrent put, disarming
//! exactly once, rollback against a concurrent free, and a waiting
//! reservation that is never left asleep. Run with
//! `RUSTFLAGS="--cfg loom" LOOM_MAX_PREEMPTIONS=2 cargo test -p pinowner --release --test loom_tracker`.
#![cfg(loom)]

mod common;

use std::sync::Arc;
use std::time::Duration;

use common::model;
use loom::thread;
use pinowner::tracker::DisarmCause;
use pinowner::{EventKind, PageArena, PageFlags, Reason, Tracking};

/// Small arenas with no backtraces (loom's threads are not unwound).
fn arena(pages: usize) -> Arc<PageArena> {
    Arc::new(
        PageArena::builder()
            .pages(pages)
            .max_order(1)
            .tracking(Tracking { capacity: 8, depth: 0, ..Tracking::default() })
            .without_thread_cache()
            .build()
            .unwrap(),
    )
}

fn count(arena: &PageArena, kind: EventKind) -> usize {
    arena.tracked_events().iter().filter(|e| e.kind == kind).count()
}

/// Arming races a put. The arm event records the counts it saw: if the put
/// had not happened yet (2 refs), the put came after the arming and must be
/// recorded; if it had (1 ref), it must not be.
#[test]
fn an_event_after_arming_is_never_lost() {
    model("an_event_after_arming_is_never_lost", || {
        let arena = arena(2);
        let block = arena.alloc_owned(0).unwrap();
        let pfn = block.pfn();
        let r = block.page_ref(0);
        let a = arena.clone();
        let armer = thread::spawn(move || a.arm(pfn..pfn + 1, Reason::Contig));
        let putter = thread::spawn(move || drop(r));
        assert_eq!(armer.join().unwrap(), 1);
        putter.join().unwrap();
        let events = arena.tracked_events();
        let arm = events.iter().find(|e| e.kind == EventKind::Arm).expect("the block was live: armed");
        let puts: Vec<_> = events.iter().filter(|e| e.kind == EventKind::Put).collect();
        match arm.refs.0 {
            2 => {
                assert_eq!(puts.len(), 1, "a put after the arming was lost: {events:?}");
                assert_eq!(puts[0].refs, (2, 1));
            }
            1 => assert!(puts.is_empty(), "a put before the arming was recorded: {events:?}"),
            n => panic!("arm saw {n} refs"),
        }
        drop(block);
    });
}

/// A disarm request races the last put (which frees and so disarms): one
/// disarm event, whichever wins, and the block ends unarmed and free.
#[test]
fn a_page_is_disarmed_exactly_once() {
    model("a_page_is_disarmed_exactly_once", || {
        let arena = arena(2);
        let block = arena.alloc_owned(0).unwrap();
        let pfn = block.pfn();
        assert_eq!(arena.arm(pfn..pfn + 1, Reason::Contig), 1);
        let a = arena.clone();
        let disarmer = thread::spawn(move || a.disarm_all());
        let freer = thread::spawn(move || drop(block));
        let by_request = disarmer.join().unwrap();
        freer.join().unwrap();
        let freed = count(&arena, EventKind::Disarm(DisarmCause::Freed));
        let requested = count(&arena, EventKind::Disarm(DisarmCause::Request));
        assert_eq!(freed + requested, 1, "disarmed {freed} + {requested} times");
        assert_eq!(requested, by_request);
        assert_eq!(arena.tracker_stats().armed_blocks, 0);
        assert!(!arena.page_state(pfn).unwrap().flags.contains(PageFlags::TRACKED));
        assert_eq!(arena.free_pages(), 2);
    });
}

/// A failing reservation rolls back while a page of its window is freed:
/// no page stays isolated and the freed page is back on the free lists.
#[test]
fn rollback_leaves_no_page_isolated() {
    model("rollback_leaves_no_page_isolated", || {
        let arena = arena(2);
        let busy = arena.alloc_owned(0).unwrap();
        let freed = arena.alloc_owned(0).unwrap();
        let a = arena.clone();
        let reserver = thread::spawn(move || a.reserve_range(0, 2, Reason::Contig).map(|_| ()));
        let freer = thread::spawn(move || drop(freed));
        assert!(reserver.join().unwrap().is_err(), "a page of the window is held throughout");
        freer.join().unwrap();
        for p in 0..2 {
            assert!(!arena.page_state(p).unwrap().flags.contains(PageFlags::ISOLATED), "page {p} left isolated");
        }
        assert_eq!(arena.free_pages(), 1);
        drop(busy);
        assert_eq!(arena.free_pages(), 2);
    });
}

/// A waiting reservation against the release of its blocking page: it is
/// never left asleep (loom's condition variable has no timeout, so a lost
/// wake-up shows up as a deadlock) and ends with the run.
#[test]
fn a_waiting_reservation_is_woken_by_the_release() {
    model("a_waiting_reservation_is_woken_by_the_release", || {
        let arena = Arc::new(
            PageArena::builder()
                .pages(2)
                .movable_pages(2)
                .max_order(1)
                .tracking(Tracking { capacity: 8, depth: 0, ..Tracking::default() })
                .without_thread_cache()
                .build()
                .unwrap(),
        );
        let held = arena.alloc_movable_owned(0).unwrap().into_block();
        let a = arena.clone();
        let waiter = thread::spawn(move || {
            a.reserve_contig_wait(2, 2, Reason::Contig, Duration::from_secs(3600)).map(|r| r.pages())
        });
        let releaser = thread::spawn(move || drop(held));
        assert_eq!(waiter.join().unwrap(), Ok(2));
        releaser.join().unwrap();
    });
}

/// Arming races the release of the holder the owner slot names: the
/// arming records that holder as found held (the failure's answer), and
/// the release closes that record if it comes after. Whatever interleaves,
/// once the holder has let go no record of it is left: the report never
/// lists a departed holder.
#[test]
fn a_holder_found_at_arming_never_outlives_its_release() {
    model("a_holder_found_at_arming_never_outlives_its_release", || {
        let arena = arena(2);
        let block = arena.alloc_owned(0).unwrap();
        let pfn = block.pfn();
        let pin = block.pin(0).unwrap(); // the latest acquirer: the slot names it
        let a = arena.clone();
        let armer = thread::spawn(move || a.arm(pfn..pfn + 1, Reason::Contig));
        let releaser = thread::spawn(move || drop(pin));
        assert_eq!(armer.join().unwrap(), 1);
        releaser.join().unwrap();
        assert_eq!(arena.tracker_stats().holds, 0, "a record of the departed pinner is left");
        let report = arena.owner_report();
        assert!(report.pages.iter().all(|p| p.outstanding.is_empty()), "{report}");
        drop(block);
    });
}

/// Two handles on one armed block, each released on its own thread: each
/// release closes its own hold, found by id, and names its own acquirer;
/// afterwards no hold is left.
#[test]
fn releases_close_their_own_holds() {
    model("releases_close_their_own_holds", || {
        let arena = arena(2);
        let block = arena.alloc_owned(0).unwrap();
        let pfn = block.pfn();
        assert_eq!(arena.arm(pfn..pfn + 1, Reason::Contig), 1);
        let r = block.page_ref(0);
        let p = block.pin(0).unwrap();
        assert_eq!(arena.tracker_stats().holds, 3, "the block found at arming, the ref, the pin");
        let t1 = thread::spawn(move || drop(r));
        let t2 = thread::spawn(move || drop(p));
        t1.join().unwrap();
        t2.join().unwrap();
        assert_eq!(arena.tracker_stats().holds, 1, "only the block's own reference is left");
        let events = arena.tracked_events();
        for e in events.iter().filter(|e| e.kind.is_release()) {
            let acquired = e.acquired.expect("paired");
            let acquire = events.iter().find(|a| a.seq == acquired.seq).expect("its acquire is recorded");
            assert_eq!(acquire.kind.is_pin(), e.kind.is_pin());
            assert_eq!(acquire.hold, e.hold);
        }
        drop(block);
        assert_eq!(arena.tracker_stats().holds, 0);
    });
}
