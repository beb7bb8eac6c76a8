//! Loom models of free page reporting against reservations and
//! allocation. Run with
//! `RUSTFLAGS="--cfg loom" LOOM_MAX_PREEMPTIONS=2 cargo test -p pinowner --release --test loom_report`
//! (or `.ci/loom`).
//!
//! What the models protect, and the deliberate breaks that make them fail
//! (each tried by hand; see the report of issue 13):
//!
//! - **In flight means untouchable.** Break: `FreeArea::pull_unreported`
//!   marks a pulled head plain free (`mark_free_head(.., 0)`) instead of
//!   `FREE | PCP`. A reservation's isolation then finds a free block on no
//!   list, carves and commits it while the reporter drops its bytes, and
//!   the reporter's put-back lists a committed block: the run's byte reads
//!   back zero, or `verify` finds a page allocated and listed at once.
//! - **Memory goes back only while the block is held.** Break: in
//!   `PageArena::report_batch`, put the batch back on the lists *before*
//!   the `madvise` loop. An allocation takes the block, writes it, and the
//!   reporter's `ZEROED` mark lands on a block its owner wrote (or the
//!   `madvise` zeroes the write under its owner): a later `alloc_zeroed`
//!   returns written bytes.
//! - **A reservation waits for the batch, never fails.** The reservation
//!   below must succeed in every interleaving, with the reporter pulling
//!   its window's only block.
#![cfg(loom)]

mod common;

use std::sync::Arc;

use common::model;
use loom::thread;
use pinowner::reporting::Reporting;
use pinowner::{Backing, PageArena, PageFlags, Reason};

/// Two zones of one order-1 block each, on an anonymous mapping, reporting
/// order-1 blocks one at a time.
fn arena() -> Arc<PageArena> {
    Arc::new(
        PageArena::builder()
            .pages(4)
            .movable_pages(2)
            .max_order(1)
            .backing(Backing::Anonymous)
            .reporting(Reporting { min_order: Some(1), batch: 1, ..Reporting::default() })
            .without_thread_cache()
            .build()
            .unwrap(),
    )
}

/// Every block, allocated zeroed, reads zero: no `ZEROED` mark was left
/// on a page someone wrote.
fn every_block_allocates_zeroed(arena: &PageArena) {
    let normal = arena.alloc_zeroed(1).unwrap();
    let movable = arena.alloc_movable_zeroed(1).unwrap().into_block();
    assert!(normal.bytes().iter().all(|&x| x == 0), "a stale ZEROED mark on the normal block");
    assert!(movable.bytes().iter().all(|&x| x == 0), "a stale ZEROED mark on the movable block");
}

/// The reporter against a reservation of the movable zone's block and an
/// allocation of the normal zone's: the reservation always succeeds, the
/// allocation (when the reporter does not hold its only block) gets bytes
/// nobody drops under it, and the arena ends consistent, with the marks
/// exactly on the reported blocks.
#[test]
fn reporter_against_reservation_and_allocation() {
    model("reporter_against_reservation_and_allocation", || {
        let arena = arena();
        let a1 = arena.clone();
        let reporter = thread::spawn(move || a1.report_free(2).unwrap().blocks);
        let a2 = arena.clone();
        let reserver = thread::spawn(move || {
            let run = a2.reserve_range(2, 2, Reason::Contig).expect("reporting never fails a reservation");
            let p = run.as_ptr().as_ptr();
            // SAFETY: the run is ours alone; the pointer covers its bytes.
            unsafe { p.write(0xab) };
            loom::thread::yield_now();
            // SAFETY: as above.
            assert_eq!(unsafe { p.read() }, 0xab, "a reporter dropped the bytes of a committed run");
            for q in run.range() {
                assert!(!a2.page_state(q).unwrap().flags.contains(PageFlags::REPORTED));
            }
        });
        // The allocation: the normal zone's one block, unless the reporter
        // holds it right now.
        if let Ok(mut b) = arena.alloc_zeroed(1) {
            assert!(b.bytes().iter().all(|&x| x == 0));
            b.bytes_mut().unwrap()[0] = 0xcd;
            loom::thread::yield_now();
            assert_eq!(b.bytes()[0], 0xcd, "a reporter dropped the bytes of an allocated block");
            assert!(!arena.page_state(b.pfn()).unwrap().flags.contains(PageFlags::REPORTED));
        }
        let reported = reporter.join().unwrap();
        reserver.join().unwrap();
        assert!(reported <= 2);
        arena.verify().unwrap();
        assert_eq!(arena.free_pages(), 4);
        every_block_allocates_zeroed(&arena);
        let s = arena.stats().reservations;
        assert_eq!((s.succeeded, s.busy), (1, 0));
    });
}

/// Two passes of the reporter against a reservation that commits and
/// releases the window: the second pass never reports a committed page,
/// and the boundary keeps reported blocks from being reported twice.
#[test]
fn two_report_passes_against_a_reservation_cycle() {
    model("two_report_passes_against_a_reservation_cycle", || {
        let arena = arena();
        let a1 = arena.clone();
        let reporter = thread::spawn(move || {
            let first = a1.report_free(1).unwrap().blocks;
            first + a1.report_free(2).unwrap().blocks
        });
        let run = arena.reserve_range(2, 2, Reason::Contig).expect("reporting never fails a reservation");
        let p = run.as_ptr().as_ptr();
        // SAFETY: the run is ours alone; the pointer covers its bytes.
        unsafe { p.write(0x11) };
        loom::thread::yield_now();
        // SAFETY: as above.
        assert_eq!(unsafe { p.read() }, 0x11, "a reporter dropped the bytes of a committed run");
        drop(run);
        let reported = reporter.join().unwrap();
        // Each block is reported at most once, except the movable one, which
        // the reservation may hand out and take back in between.
        assert!(reported <= 3, "{reported}");
        arena.verify().unwrap();
        assert_eq!(arena.free_pages(), 4);
        every_block_allocates_zeroed(&arena);
        assert_eq!(arena.report_stats().blocks, reported);
    });
}
