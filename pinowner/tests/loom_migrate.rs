//! Loom models of migration: a move against acquisitions by page number,
//! against borrows of the movable handle, a refusal against putback, and
//! two reservations migrating into each other's windows. Run with
//! `RUSTFLAGS="--cfg loom" LOOM_MAX_PREEMPTIONS=2 cargo test -p pinowner --release --test loom_migrate`.
#![cfg(loom)]

mod common;

use std::sync::Arc;

use common::model;
use loom::sync::atomic::{AtomicUsize, Ordering};
use loom::thread;
use pinowner::{MoveOutcome, PageArena, PageFlags, Reason, Unmovable};

/// Two normal pages and two movable ones, order 0 only.
fn arena() -> Arc<PageArena> {
    Arc::new(PageArena::builder().pages(4).movable_pages(2).max_order(0).without_thread_cache().build().unwrap())
}

/// A `get(pfn)` on a movable block's page races its move: either the
/// count came first (the block has a holder without a mover and stays), or
/// the move did (the old page is free, or already the run's): never a
/// count on the moved data's old page that the data has left.
#[test]
fn a_get_by_number_racing_a_move_never_resurrects_the_old_page() {
    model("a_get_by_number_racing_a_move_never_resurrects_the_old_page", || {
        let arena: &'static PageArena = Box::leak(Box::new(
            PageArena::builder().pages(4).movable_pages(2).max_order(0).without_thread_cache().build().unwrap(),
        ));
        let mut m = arena.alloc_movable(0).unwrap();
        m.borrow_mut().unwrap().fill(0x5A);
        let old = m.pfn();
        // The count is kept until both are done.
        let getter = thread::spawn(move || arena.get(old).ok().map(|r| (arena.page_state(old).unwrap(), r)));
        let run = arena.reserve_range(old, 1, Reason::Shrink);
        let got = getter.join().unwrap();
        match (&got, &run) {
            (Some((s, _)), Ok(_)) => {
                // Taken after the commit: a count on the run's page.
                assert!(s.flags.contains(PageFlags::CONTIG), "{s}");
                assert_ne!(m.pfn(), old);
            }
            (Some(_), Err(e)) => {
                assert_eq!(m.pfn(), old, "{e}");
            }
            (None, Ok(_)) => assert_ne!(m.pfn(), old),
            (None, Err(e)) => panic!("the get failed and the move too: {e}"),
        }
        assert!(m.borrow().iter().all(|&b| b == 0x5A));
        drop(run);
        drop(got);
        drop(m);
        arena.verify().unwrap();
        assert_eq!(arena.free_pages(), 4);
    });
}

/// A borrow racing a move sees the bytes whole, at the block's address
/// during the borrow, and the move either waits for it or happens first.
#[test]
fn a_borrow_racing_a_move_sees_the_block_whole_where_it_is() {
    model("a_borrow_racing_a_move_sees_the_block_whole_where_it_is", || {
        let arena = arena();
        let mut m = arena.alloc_movable_owned(0).unwrap();
        m.borrow_mut().unwrap().fill(0x33);
        let old = m.pfn();
        let m = Arc::new(m);
        let (a, mm) = (arena.clone(), m.clone());
        let borrower = thread::spawn(move || {
            let b = mm.borrow();
            let s = a.page_state(b.pfn()).unwrap();
            assert!(!s.flags.contains(PageFlags::FREE) && s.refcount == 1, "{s}");
            assert!(b.iter().all(|&x| x == 0x33));
            b.pfn()
        });
        let run = arena.reserve_range(old, 1, Reason::Shrink);
        let seen = borrower.join().unwrap();
        match &run {
            Ok(_) => assert_ne!(m.pfn(), old),
            Err(e) => {
                let pinowner::ContigError::Busy(f) = e else { panic!("{e}") };
                assert_eq!(f.busy[0].why, Unmovable::Borrowed);
                assert_eq!(seen, old);
            }
        }
        assert!(m.borrow().iter().all(|&x| x == 0x33));
        drop(run);
        drop(m);
        arena.verify().unwrap();
        assert_eq!(arena.free_pages(), 4);
    });
}

/// The owner's mover keeps a table entry pointing at the block; a second
/// holder refuses. Whatever a borrower sees, the table names the block it
/// borrows: the move's putback restores it before the block unfreezes.
#[test]
fn a_refusal_puts_the_first_holder_back_before_anyone_sees_the_block() {
    model("a_refusal_puts_the_first_holder_back_before_anyone_sees_the_block", || {
        struct Table(Arc<AtomicUsize>);
        impl pinowner::Mover for Table {
            fn migrate(&self, m: &pinowner::Migration<'_>) -> MoveOutcome {
                self.0.store(m.new_pfn(), Ordering::Relaxed);
                MoveOutcome::Moved
            }
            fn putback(&self, m: &pinowner::Migration<'_>) {
                self.0.store(m.old_pfn(), Ordering::Relaxed);
            }
        }
        let arena = arena();
        let table = Arc::new(AtomicUsize::new(usize::MAX));
        let m = arena.alloc_movable_owned_with(0, Table(table.clone())).unwrap();
        table.store(m.pfn(), Ordering::Relaxed);
        let share = m.share(|_: &pinowner::Migration<'_>| MoveOutcome::Refused);
        let old = m.pfn();
        let t = table.clone();
        let borrower = thread::spawn(move || {
            let b = share.borrow();
            assert_eq!(t.load(Ordering::Relaxed), b.pfn(), "the table names the borrowed block");
            drop(b);
            share
        });
        let run = arena.reserve_range(old, 1, Reason::Shrink);
        let share = borrower.join().unwrap();
        let Err(pinowner::ContigError::Busy(f)) = run else { panic!("a refusing holder let the block move") };
        assert!(matches!(f.busy[0].why, Unmovable::Refused { temporary: false, .. } | Unmovable::Borrowed));
        assert_eq!((m.pfn(), table.load(Ordering::Relaxed)), (old, old));
        drop(share);
        drop(m);
        arena.verify().unwrap();
        assert_eq!(arena.free_pages(), 4);
    });
}

/// A reservation of the normal zone and one of the movable zone at once,
/// each with a movable block to move out: each may only move it outside
/// both isolated windows, at most one can succeed, no block is lost, and
/// nothing deadlocks (each holds its own zone's reservation lock while
/// allocating from the other zone).
#[test]
fn two_reservations_migrating_into_each_others_windows_lose_nothing() {
    model("two_reservations_migrating_into_each_others_windows_lose_nothing", || {
        // Leaked so each thread's run can outlive its closure (a few
        // kilobytes per interleaving).
        let arena: &'static PageArena = Box::leak(Box::new(
            PageArena::builder().pages(4).movable_pages(2).max_order(0).without_thread_cache().build().unwrap(),
        ));
        // Movable blocks at both movable pages, then one in the normal
        // zone (the fallback); the second movable page freed again.
        let mut a = arena.alloc_movable(0).unwrap();
        let b = arena.alloc_movable(0).unwrap();
        let mut n = arena.alloc_movable(0).unwrap();
        assert!(n.pfn() < 2 && a.pfn() >= 2);
        drop(b);
        a.borrow_mut().unwrap().fill(1);
        n.borrow_mut().unwrap().fill(2);
        let movable = thread::spawn(move || arena.reserve_range(2, 2, Reason::Shrink).ok());
        let normal = arena.reserve_range(0, 2, Reason::Shrink).ok();
        let movable = movable.join().unwrap();
        assert!(normal.is_none() || movable.is_none(), "four pages cannot hold two runs and two blocks");
        assert!(a.borrow().iter().all(|&x| x == 1));
        assert!(n.borrow().iter().all(|&x| x == 2));
        for r in normal.iter().chain(movable.iter()) {
            assert!(!r.range().contains(&a.pfn()) && !r.range().contains(&n.pfn()));
        }
        drop((normal, movable));
        drop((a, n));
        arena.verify().unwrap();
        assert_eq!(arena.free_pages(), 4);
    });
}

/// A reservation reads a movable block's entry out of the arena's table
/// (to ask why it stays, and to move it) while the block's last handle
/// drops, which takes the entry out of the table and releases it: the
/// reservation never adds a count to a released entry (loom's `Arc`
/// panics if it does), and no page is lost whichever comes first.
#[test]
fn a_reservation_reading_an_entry_never_revives_one_its_last_handle_released() {
    model("a_reservation_reading_an_entry_never_revives_one_its_last_handle_released", || {
        let arena = arena();
        let m = arena.alloc_movable_owned(0).unwrap();
        let old = m.pfn();
        let dropper = thread::spawn(move || drop(m));
        let run = arena.reserve_range(old, 1, Reason::Shrink);
        dropper.join().unwrap();
        drop(run);
        arena.verify().unwrap();
        assert_eq!(arena.free_pages(), 4);
    });
}
