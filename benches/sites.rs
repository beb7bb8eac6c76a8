//! Issue 4: what `#[pin_tracked]` adds to a call with nothing armed.
//!
//! Each case is a pair of `#[inline(never)]` functions with the same body,
//! one plain (the baseline) and one `#[pin_tracked]`, measured in the same
//! group:
//!
//! - `site_get_put`: `arena.get(pfn)` and drop (a by-pfn get+put);
//! - `site_clone_drop`: a `PageRef` clone and drop (a held get+put), in two
//!   forms: `drop(black_box(r.clone()))` as in `hot_path`, and
//!   `black_box(&clone)` then drop. They differ only in code generation:
//!   in the tracked function the first form copies the returned `PageRef`
//!   with one 16-byte load from the four smaller stores `clone` just made (a
//!   load that store forwarding cannot serve); the second never copies it;
//! - `site_empty`: an empty body, so the difference is the scope alone.
//!
//! The tracked functions enter their site, so the get records a `Site`
//! instead of a `#[track_caller]` location; no page is armed (`TRACKED`).
//!
//! # Instruction counts
//!
//! `sites --callgrind <case> <iters>` skips criterion and calls one function
//! `iters` times (after one warm-up call that registers the site), for
//! counting under `valgrind --tool=callgrind`. Two runs with different
//! `iters` differ only by the extra calls, so
//! `(Ir(2N) - Ir(N)) / N` is the exact per-call count, loop and call
//! included; the `loop` case (an empty plain function) gives that
//! overhead. See `BENCHMARKS.md` for the figures and the exact commands.

use std::hint::black_box;
use std::time::Duration;

use criterion::{criterion_group, Criterion};
use pinowner::{pin_tracked, PageArena, PageRef, Pfn};

fn config() -> Criterion {
    Criterion::default()
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(2))
        .sample_size(50)
}

#[inline(never)]
fn get_put_untracked(arena: &PageArena, pfn: Pfn) {
    drop(black_box(arena.get(pfn).unwrap()));
}

#[pin_tracked]
#[inline(never)]
fn get_put_tracked(arena: &PageArena, pfn: Pfn) {
    drop(black_box(arena.get(pfn).unwrap()));
}

#[inline(never)]
fn clone_drop_untracked(r: &PageRef<&PageArena>) {
    drop(black_box(r.clone()));
}

#[pin_tracked]
#[inline(never)]
fn clone_drop_tracked(r: &PageRef<&PageArena>) {
    drop(black_box(r.clone()));
}

#[inline(never)]
fn clone_ref_drop_untracked(r: &PageRef<&PageArena>) {
    let c = r.clone();
    black_box(&c);
    drop(c);
}

#[pin_tracked]
#[inline(never)]
fn clone_ref_drop_tracked(r: &PageRef<&PageArena>) {
    let c = r.clone();
    black_box(&c);
    drop(c);
}

#[inline(never)]
fn empty_untracked() {
    black_box(());
}

#[pin_tracked]
#[inline(never)]
fn empty_tracked() {
    black_box(());
}

fn sites(c: &mut Criterion) {
    let arena = PageArena::builder().pages(64).build().unwrap();
    let block = arena.alloc(0).unwrap();
    let pfn = block.pfn();
    let r = block.page_ref(0);

    let mut g = c.benchmark_group("site_get_put");
    g.bench_function("baseline: untracked fn, arena.get(pfn)+drop", |b| {
        b.iter(|| get_put_untracked(black_box(&arena), black_box(pfn)))
    });
    g.bench_function("#[pin_tracked] fn, arena.get(pfn)+drop", |b| {
        b.iter(|| get_put_tracked(black_box(&arena), black_box(pfn)))
    });
    g.finish();

    let mut g = c.benchmark_group("site_clone_drop");
    g.bench_function("baseline: untracked fn, black_box(clone)", |b| b.iter(|| clone_drop_untracked(black_box(&r))));
    g.bench_function("#[pin_tracked] fn, black_box(clone)", |b| b.iter(|| clone_drop_tracked(black_box(&r))));
    g.bench_function("baseline: untracked fn, black_box(&clone)", |b| {
        b.iter(|| clone_ref_drop_untracked(black_box(&r)))
    });
    g.bench_function("#[pin_tracked] fn, black_box(&clone)", |b| b.iter(|| clone_ref_drop_tracked(black_box(&r))));
    g.finish();

    let mut g = c.benchmark_group("site_empty");
    g.bench_function("baseline: untracked empty fn", |b| b.iter(empty_untracked));
    g.bench_function("#[pin_tracked] empty fn", |b| b.iter(empty_tracked));
    g.finish();

    // Nothing was armed, and every count was given back.
    let state = arena.page_state(pfn).unwrap();
    assert!(!state.flags.contains(pinowner::PageFlags::TRACKED), "{state:?}");
    assert_eq!((state.refcount, state.pincount), (2, 0), "the block and `r`");
}

criterion_group! { name = benches; config = config(); targets = sites }

/// `--callgrind <case> <iters>`: calls one case's function `iters` times and
/// prints nothing, for `valgrind --tool=callgrind`.
fn callgrind(case: &str, iters: u64) {
    let arena = PageArena::builder().pages(64).build().unwrap();
    let block = arena.alloc(0).unwrap();
    let pfn = block.pfn();
    let r = block.page_ref(0);
    match case {
        "loop" => repeat(iters, empty_untracked),
        "empty_tracked" => repeat(iters, empty_tracked),
        "get_put_untracked" => repeat(iters, || get_put_untracked(black_box(&arena), black_box(pfn))),
        "get_put_tracked" => repeat(iters, || get_put_tracked(black_box(&arena), black_box(pfn))),
        "clone_drop_untracked" => repeat(iters, || clone_drop_untracked(black_box(&r))),
        "clone_drop_tracked" => repeat(iters, || clone_drop_tracked(black_box(&r))),
        "clone_ref_drop_untracked" => repeat(iters, || clone_ref_drop_untracked(black_box(&r))),
        "clone_ref_drop_tracked" => repeat(iters, || clone_ref_drop_tracked(black_box(&r))),
        other => panic!("unknown case {other:?}"),
    }
}

/// Calls `f` once, then `iters` times. The first call of a tracked function
/// registers its site (a lock and a push), the same in every run, so it
/// cancels out of the difference between two runs.
fn repeat(iters: u64, f: impl Fn()) {
    f();
    for _ in 0..iters {
        f();
    }
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    if let Some(i) = args.iter().position(|a| a == "--callgrind") {
        let case = args.get(i + 1).expect("--callgrind <case> <iters>");
        let iters = args.get(i + 2).and_then(|n| n.parse().ok()).expect("--callgrind <case> <iters>");
        callgrind(case, iters);
        return;
    }
    benches();
    Criterion::default().configure_from_args().final_summary();
}
