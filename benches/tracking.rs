//! Owner tracking: the cost of one recorded event on an armed page, with a
//! 16-frame backtrace and without, against the same get+put on a page that
//! is not armed (the baseline, in the same run); and eager mode's cost on
//! alloc+free against the lazy default.
//!
//! Each armed iteration is a get and a put: two events. The queue is drained
//! (untimed) before it can fill, so every timed event is stored, not dropped.

use std::hint::black_box;
use std::time::{Duration, Instant};

use criterion::{criterion_group, Criterion};
use pinowner::depot::Unwinder;
use pinowner::{PageArena, Reason, ReportOptions, Tracking};

const CAPACITY: usize = 1 << 14;

fn config() -> Criterion {
    Criterion::default()
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(3))
        .sample_size(40)
}

fn arena(depth: usize, eager: bool) -> PageArena {
    arena_with(depth, eager, Unwinder::Dwarf)
}

fn arena_with(depth: usize, eager: bool, unwinder: Unwinder) -> PageArena {
    PageArena::builder()
        .pages(1024)
        .tracking(Tracking { capacity: CAPACITY, depth, eager, unwinder, ..Tracking::default() })
        .build()
        .unwrap()
}

/// Test runners run each bench once without `--bench`.
fn in_test_mode() -> bool {
    !std::env::args().any(|a| a == "--bench")
}

/// Runs `f` `iters` times in chunks that fit the queue, timing only `f`.
fn timed_in_chunks(arena: &PageArena, iters: u64, events_per_iter: u64, mut f: impl FnMut()) -> Duration {
    let chunk = (CAPACITY as u64 / 2 / events_per_iter).max(1);
    let mut total = Duration::ZERO;
    let mut left = iters;
    while left > 0 {
        let n = left.min(chunk);
        let start = Instant::now();
        for _ in 0..n {
            f();
        }
        total += start.elapsed();
        left -= n;
        drop(arena.take_owner_report(&ReportOptions { frames: 0, ..ReportOptions::default() }));
    }
    total
}

fn armed_event(c: &mut Criterion) {
    let mut g = c.benchmark_group("armed_get_put");
    let cases = [
        ("16-frame backtrace", 16, Unwinder::Dwarf),
        ("8-frame backtrace", 8, Unwinder::Dwarf),
        ("16-frame backtrace, frame pointers", 16, Unwinder::FramePointers),
        ("no backtrace", 0, Unwinder::Dwarf),
    ];
    for (name, depth, unwinder) in cases {
        let a = arena_with(depth, false, unwinder);
        let block = a.alloc(0).unwrap();
        let plain = a.alloc(0).unwrap();
        assert_eq!(a.arm(block.pfn()..block.pfn() + 1, Reason::Contig), 1);
        if depth == 16 && unwinder == Unwinder::Dwarf {
            let r = plain.page_ref(0);
            g.bench_function("baseline: PageRef clone+drop, not armed", |b| b.iter(|| drop(black_box(r.clone()))));
            g.bench_function("baseline: depot::capture(0, 16) alone", |b| {
                b.iter(|| black_box(pinowner::depot::capture(0, 16)))
            });
            g.bench_function("baseline: depot::capture_frame_pointers(0, 16) alone", |b| {
                b.iter(|| black_box(pinowner::depot::capture_frame_pointers(0, 16)))
            });
        }
        let r = block.page_ref(0);
        g.bench_function(format!("armed, {name} (2 events)"), |b| {
            b.iter_custom(|iters| timed_in_chunks(&a, iters, 2, || drop(black_box(r.clone()))))
        });
        let stats = a.tracker_stats();
        assert_eq!(stats.dropped, 0, "every timed event was stored");
        if unwinder == Unwinder::FramePointers && !in_test_mode() {
            // Frames kept by the last event: 16 only in a frame-pointer
            // build (`RUSTFLAGS="-C force-frame-pointers=yes"`); otherwise
            // the figure above timed a walk that stopped early.
            drop(r.clone());
            let kept = a.tracked_events().last().and_then(|e| e.stack).map_or(0, |h| a.resolve_stack(h).len());
            eprintln!("frame-pointer walk: the last event kept {kept} frames (after trimming the arena's own)");
        }
        drop(r);
    }
    g.finish();
}

fn eager(c: &mut Criterion) {
    let mut g = c.benchmark_group("alloc_free_order0_tracking");
    let lazy = arena(16, false);
    g.bench_function("baseline: lazy (nothing armed)", |b| b.iter(|| drop(black_box(lazy.alloc(0).unwrap()))));
    let e = arena(16, true);
    g.bench_function("eager (alloc stack + put + disarm)", |b| {
        b.iter_custom(|iters| timed_in_chunks(&e, iters, 3, || drop(black_box(e.alloc(0).unwrap()))))
    });
    g.finish();
}

/// Rendering an owner report at scale (it must stay linear): 100k holders
/// taken on one armed block and then released (200k events to pair), and
/// 100k armed blocks each released once with no recorded acquire (held
/// from before the arming); the baseline is a report over the same number
/// of events as 100k get+put pairs on one block, in the same run.
fn report_scale(c: &mut Criterion) {
    let n: usize = if in_test_mode() { 1_000 } else { 100_000 };
    let tracking = |capacity| Tracking { capacity, depth: 0, ..Tracking::default() };
    let mut g = c.benchmark_group("owner_report_scale");
    g.sample_size(10).measurement_time(Duration::from_secs(5));

    let pairs = PageArena::builder().pages(16).tracking(tracking(4 * n)).build().unwrap();
    let block = pairs.alloc(0).unwrap();
    pairs.arm(block.pfn()..block.pfn() + 1, Reason::Contig);
    for _ in 0..n {
        drop(block.page_ref(0));
    }
    g.bench_function(format!("baseline: {n} get+put pairs on one block"), |b| {
        b.iter(|| black_box(pairs.owner_report_with(&ReportOptions { frames: 0, ..ReportOptions::default() })))
    });

    let holders = PageArena::builder().pages(16).tracking(tracking(4 * n)).build().unwrap();
    let block = holders.alloc(0).unwrap();
    holders.arm(block.pfn()..block.pfn() + 1, Reason::Contig);
    let refs: Vec<_> = (0..n).map(|_| block.page_ref(0)).collect();
    drop(refs);
    g.bench_function(format!("{n} holders on one block, all released"), |b| {
        b.iter(|| black_box(holders.owner_report_with(&ReportOptions { frames: 0, ..ReportOptions::default() })))
    });

    let pages = PageArena::builder().pages(n).max_order(0).tracking(tracking(4 * n)).build().unwrap();
    let blocks: Vec<_> = (0..n).map(|_| pages.alloc(0).unwrap()).collect();
    pages.arm(0..n, Reason::Contig);
    drop(blocks);
    g.bench_function(format!("{n} armed blocks held from before arming, released"), |b| {
        b.iter(|| black_box(pages.owner_report_with(&ReportOptions { frames: 0, ..ReportOptions::default() })))
    });
    g.finish();

    // Recording itself at scale: 60,000 references held at once on one
    // armed block, then released (each release finds and closes its hold),
    // against the same number of get+put pairs one at a time. Linear if a
    // release costs the same with many holds open.
    let n: usize = if in_test_mode() { 1_000 } else { 60_000 };
    let mut g = c.benchmark_group("armed_holds_scale");
    g.sample_size(10).measurement_time(Duration::from_secs(5));
    let fresh = || {
        let a = std::sync::Arc::new(PageArena::builder().pages(16).tracking(tracking(4 * n)).build().unwrap());
        let block = a.alloc_owned(0).unwrap();
        a.arm(block.pfn()..block.pfn() + 1, Reason::Contig);
        (a, block)
    };
    g.bench_function(format!("baseline: {n} get+put pairs, one held at a time"), |b| {
        b.iter_custom(|iters| {
            let mut total = Duration::ZERO;
            for _ in 0..iters {
                let (a, block) = fresh();
                let start = Instant::now();
                for _ in 0..n {
                    drop(black_box(block.page_ref(0)));
                }
                total += start.elapsed();
                drop((block, a));
            }
            total
        })
    });
    g.bench_function(format!("{n} references held at once, then released"), |b| {
        b.iter_custom(|iters| {
            let mut total = Duration::ZERO;
            for _ in 0..iters {
                let (a, block) = fresh();
                let start = Instant::now();
                let refs: Vec<_> = (0..n).map(|_| block.page_ref(0)).collect();
                drop(black_box(refs));
                total += start.elapsed();
                drop((block, a));
            }
            total
        })
    });
    g.finish();
}

/// `tracking --callgrind <armed|armed-no-stack|plain> <iters>`: the armed
/// get+put loop alone, for instruction counts under
/// `valgrind --tool=callgrind` (run twice with different `iters`; the
/// difference divided by the difference in `iters` is the exact cost of one
/// get+put, two events for the armed cases).
fn callgrind_mode() -> bool {
    let args: Vec<String> = std::env::args().collect();
    let Some(i) = args.iter().position(|a| a == "--callgrind") else { return false };
    let case = args[i + 1].as_str();
    let iters: u64 = args[i + 2].parse().unwrap();
    let a = arena(if case == "armed-no-stack" { 0 } else { 16 }, false);
    let block = a.alloc(0).unwrap();
    if case != "plain" {
        a.arm(block.pfn()..block.pfn() + 1, Reason::Contig);
    }
    let r = block.page_ref(0);
    drop(r.clone()); // first capture: the unwinder's one-time set-up
    assert!(2 * iters < CAPACITY as u64, "no drain inside the counted loop");
    for _ in 0..iters {
        drop(black_box(r.clone()));
    }
    assert_eq!(a.tracker_stats().dropped, 0);
    true
}

criterion_group! {
    name = benches;
    config = config();
    targets = armed_event, eager, report_scale
}
fn main() {
    if !callgrind_mode() {
        benches();
        Criterion::default().configure_from_args().final_summary();
    }
}
