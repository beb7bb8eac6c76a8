//! Loom models of the stack depot: concurrent inserts of one stack yield one
//! handle; distinct stacks get distinct handles; the byte bound holds when
//! threads race for the last bytes.
//!
//! Run: `RUSTFLAGS="--cfg loom" LOOM_MAX_PREEMPTIONS=2 cargo test -p pinowner
//! --release --test loom_depot -- --nocapture`.
#![cfg(loom)]

mod common;

use std::sync::Arc;

use common::model;
use loom::thread;
use pinowner::depot::{StackDepot, StackHandle};

const A: [usize; 4] = [0x5555_0000_1000, 0x5555_0000_2040, 0x5555_0000_3080, 0x5555_0000_40c0];
const B: [usize; 4] = [0x5555_0000_1000, 0x5555_0000_2040, 0x5555_0000_3080, 0x5555_0000_50c0];

/// Three threads intern the same stack at once: one stored copy, one handle.
#[test]
fn concurrent_inserts_of_one_stack_yield_one_handle() {
    model("concurrent_inserts_of_one_stack_yield_one_handle", || {
        let depot = Arc::new(StackDepot::new(4096));
        let spawn = |depot: &Arc<StackDepot>| {
            let depot = depot.clone();
            thread::spawn(move || depot.intern(&A))
        };
        let (t1, t2) = (spawn(&depot), spawn(&depot));
        let h0 = depot.intern(&A);
        let (h1, h2) = (t1.join().unwrap(), t2.join().unwrap());
        assert!(!h0.is_failed());
        assert_eq!(h0, h1);
        assert_eq!(h0, h2);
        let stats = depot.stats();
        assert_eq!(stats.unique_stacks, 1, "{stats:?}");
        assert_eq!(stats.hits, 2, "{stats:?}");
        assert_eq!(stats.failures, 0, "{stats:?}");
        assert_eq!(depot.frames(h0).unwrap().as_slice(), &A);
    });
}

/// Two distinct stacks inserted concurrently (one of them twice) get two
/// distinct handles, each naming its own frames.
#[test]
fn concurrent_inserts_of_two_stacks_yield_two_handles() {
    model("concurrent_inserts_of_two_stacks_yield_two_handles", || {
        let depot = Arc::new(StackDepot::new(4096));
        let d1 = depot.clone();
        let t1 = thread::spawn(move || d1.intern(&A));
        let d2 = depot.clone();
        let t2 = thread::spawn(move || d2.intern(&B));
        let a_again = depot.intern(&A);
        let (a, b) = (t1.join().unwrap(), t2.join().unwrap());
        assert!(!a.is_failed() && !b.is_failed());
        assert_eq!(a, a_again);
        assert_ne!(a, b);
        assert_eq!(depot.frames(a).unwrap().as_slice(), &A);
        assert_eq!(depot.frames(b).unwrap().as_slice(), &B);
        let stats = depot.stats();
        assert_eq!((stats.unique_stacks, stats.hits, stats.failures), (2, 1, 0), "{stats:?}");
    });
}

/// A depot with room for one stack, two threads inserting two stacks: one
/// wins, the other gets the sentinel and is counted; the bound holds.
#[test]
fn racing_for_the_last_bytes_never_passes_the_bound() {
    model("racing_for_the_last_bytes_never_passes_the_bound", || {
        // What one 4-frame stack costs, measured on a private depot.
        let probe = StackDepot::new(4096);
        probe.intern(&A);
        let one = probe.stats().bytes as usize;
        let depot = Arc::new(StackDepot::new(one + one / 2));
        let d1 = depot.clone();
        let t1 = thread::spawn(move || d1.intern(&A));
        let b = depot.intern(&B);
        let a = t1.join().unwrap();
        assert!(a.is_failed() != b.is_failed(), "exactly one fits: {a:?} {b:?}");
        let stats = depot.stats();
        assert_eq!((stats.unique_stacks, stats.failures), (1, 1), "{stats:?}");
        assert_eq!(stats.bytes as usize, one);
        let (won, frames) = if a.is_failed() { (b, B) } else { (a, A) };
        assert_ne!(won, StackHandle::FAILED);
        assert_eq!(depot.frames(won).unwrap().as_slice(), &frames);
    });
}
