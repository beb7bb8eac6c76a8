//! Loom model of idle marking against the last release. Run with
//! `RUSTFLAGS="--cfg loom" LOOM_MAX_PREEMPTIONS=2 cargo test -p pinowner --release --test loom_idle`
//! (or `.ci/loom`).
//!
//! What it protects: `mark_idle` sets `IDLE` only by a compare-and-swap
//! from a live head word, so it never writes a free word (which only the
//! zone lock holder, or a cache owner, may write) and a freed block never
//! comes back idle: every allocation is an access. Break it on purpose
//! (replace the compare-and-swap loop in `PageArena::mark_idle` with an
//! unconditional `fetch_or(IDLE)`) and the reallocated block reads idle.
#![cfg(loom)]

mod common;

use std::sync::Arc;

use common::model;
use loom::thread;
use pinowner::{PageArena, PageFlags, ThreadCache};

/// One page freed by its last holder, into a thread cache, while another
/// thread marks the arena idle; then reallocated.
#[test]
fn idle_marking_against_the_last_put_never_marks_a_free_block() {
    model("idle_marking_against_the_last_put_never_marks_a_free_block", || {
        let cache = ThreadCache { batch: 1, high: 1, shards: 4, orders: ThreadCache::ORDER_0 };
        let arena = Arc::new(PageArena::builder().pages(2).max_order(0).thread_cache(cache).build().unwrap());
        let block = arena.alloc_owned(0).unwrap();
        let pfn = block.pfn();
        let a2 = arena.clone();
        let marker = thread::spawn(move || a2.mark_idle(0..2).unwrap());
        drop(block);
        let marked = marker.join().unwrap();
        assert!(marked <= 1);
        assert!(!arena.page_state(pfn).unwrap().flags.contains(PageFlags::IDLE), "a free block marked idle");
        let again = arena.alloc(0).unwrap();
        assert!(!again.state().flags.contains(PageFlags::IDLE), "an allocation is an access");
        assert_eq!(arena.idle_pages(0..2).unwrap().idle, 0);
        drop(again);
        arena.drain_thread_caches();
        arena.verify().unwrap();
    });
}
