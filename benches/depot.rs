//! The stack depot: what an unresolved capture costs, what interning adds,
//! and how much memory deduplication saves.
//!
//! - `capture`: baselines `backtrace::trace` walking every frame and walking
//!   as many frames as a 16-frame capture does; `depot::capture(0, 16)`
//!   (instruction pointers only, stops after 16 frames); capture + `intern`;
//!   and `intern` alone on a stored stack. All run 16 calls deeper than
//!   criterion's own frames, so every capture finds 16 frames.
//! - memory (printed once before criterion, only under `cargo bench`):
//!   100,000 events over 50 distinct 16-frame stacks, each captured for real
//!   from one of 50 distinct call paths and interned; the depot's bytes plus a
//!   4-byte handle per event, against storing each event's 16 frames
//!   (100,000 × 16 × 8 B).

use std::hint::black_box;
use std::time::{Duration, Instant};

use criterion::{criterion_group, Criterion};
use pinowner::depot::{self, StackDepot, StackHandle, StackTrace, DEFAULT_DEPTH};

fn config() -> Criterion {
    Criterion::default()
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(2))
        .sample_size(50)
}

/// Levels of the call-path tree: 2^6 = 64 distinct paths, 50 used.
const LEVELS: u32 = 6;

/// Descends `level` more levels, going through [`left`] or [`right`] by the
/// low bit of `path`, then captures. The return address in each frame names
/// the branch taken, so each `path` below 2^LEVELS is a distinct stack.
#[inline(never)]
fn left(path: u32, level: u32) -> StackTrace {
    // `black_box` on the result keeps the call out of tail position, so the
    // frame stays on the stack.
    black_box(descend(path, level))
}

/// The other branch of [`left`].
#[inline(never)]
fn right(path: u32, level: u32) -> StackTrace {
    black_box(descend(path, level))
}

#[inline(always)]
fn descend(path: u32, level: u32) -> StackTrace {
    if level == 0 {
        depot::capture(0, DEFAULT_DEPTH)
    } else if path & 1 == 1 {
        left(path >> 1, level - 1)
    } else {
        right(path >> 1, level - 1)
    }
}

/// Captures from call path number `path`.
#[inline(never)]
fn capture_on_path(path: u32) -> StackTrace {
    black_box(descend(path, LEVELS))
}

fn memory() {
    const EVENTS: usize = 100_000;
    const STACKS: u32 = 50;
    let depot = StackDepot::default();
    let mut handles: Vec<StackHandle> = Vec::with_capacity(EVENTS);
    let mut per_event_bytes = 0usize;
    let mut short = 0usize;
    let start = Instant::now();
    for event in 0..EVENTS {
        let trace = capture_on_path(event as u32 % STACKS);
        if trace.len() < DEFAULT_DEPTH {
            short += 1;
        }
        per_event_bytes += trace.len() * std::mem::size_of::<usize>();
        handles.push(depot.intern(&trace));
    }
    let elapsed = start.elapsed();
    let stats = depot.stats();
    assert_eq!(stats.failures, 0, "{stats:?}");
    assert_eq!(stats.unique_stacks, u64::from(STACKS), "the 50 call paths must give 50 distinct stacks: {stats:?}");
    let handle_bytes = handles.len() * std::mem::size_of::<StackHandle>();
    let depot_total = stats.bytes as usize + handle_bytes;
    let saving = 100.0 * (1.0 - depot_total as f64 / per_event_bytes as f64);
    println!("depot memory: {EVENTS} events over {STACKS} distinct stacks, captured for real from {STACKS} call paths");
    println!(
        "  frames per event: {DEFAULT_DEPTH} ({short} events captured fewer); capture + intern took {:.2} µs per event",
        elapsed.as_secs_f64() * 1e6 / EVENTS as f64
    );
    println!(
        "  per-event copies: {per_event_bytes} B ({EVENTS} x {DEFAULT_DEPTH} x {} B)",
        std::mem::size_of::<usize>()
    );
    println!(
        "  depot: {} B for {} stacks ({} hits) + {handle_bytes} B of handles ({EVENTS} x {} B) = {depot_total} B",
        stats.bytes,
        stats.unique_stacks,
        stats.hits,
        std::mem::size_of::<StackHandle>()
    );
    println!("  saving: {saving:.2}% (the kernel's page_owner move to stackdepot: 72%)");
}

/// Runs `f` `levels` calls deeper than the caller, so that every capture
/// benchmarked inside finds more than 16 frames to walk.
#[inline(never)]
fn deeper(levels: u32, f: &mut dyn FnMut()) {
    if levels == 0 {
        f()
    } else {
        deeper(levels - 1, f);
        // Keeps the call out of tail position: the frame stays.
        black_box(());
    }
}

/// Extra stack under every capture benchmark.
const EXTRA_LEVELS: u32 = 16;

/// True under `cargo bench`. Test runners list and run bench targets
/// without `--bench`, and their output must hold only test names.
fn benching() -> bool {
    std::env::args().any(|a| a == "--bench")
}

/// The baseline: walks up to `limit` frames with `backtrace::trace` (the
/// unwinder's own included), reading each instruction pointer; returns how
/// many it walked.
#[inline(never)]
fn trace_frames(limit: usize) -> usize {
    let mut n = 0usize;
    backtrace::trace(|frame| {
        n += 1;
        black_box(frame.ip());
        n < limit
    });
    n
}

fn capture_group(c: &mut Criterion) {
    let depot = StackDepot::default();
    let mut stored = StackTrace::new();
    let mut all_frames = 0;
    deeper(EXTRA_LEVELS, &mut || {
        stored = depot::capture(0, DEFAULT_DEPTH);
        all_frames = trace_frames(usize::MAX);
    });
    let handle = depot.intern(&stored);
    // Symbols for the record (once, outside the measurements): the first
    // frame must be the capturing closure, not the unwinder or `capture`.
    let frames = depot.resolve(handle);
    let say = benching();
    if say {
        println!("first frames of capture(0, 16), resolved: {} / {}", frames[0], frames[1]);
    }
    // The two frames of the unwinder below `capture`'s caller, counted by the
    // bounded baseline so that it walks as far as `capture(0, 16)` does.
    let inner = 2;
    if say {
        println!(
            "stack under the benchmarks: {all_frames} frames in all (the unwinder's included); capture(0, 16) keeps {}",
            stored.len()
        );
    }

    let mut g = c.benchmark_group("capture");
    g.bench_function("baseline: backtrace::trace, all frames", |b| {
        deeper(EXTRA_LEVELS, &mut || b.iter(|| black_box(trace_frames(black_box(usize::MAX)))))
    });
    g.bench_function("baseline: backtrace::trace, first 18 frames", |b| {
        deeper(EXTRA_LEVELS, &mut || b.iter(|| black_box(trace_frames(black_box(DEFAULT_DEPTH + inner)))))
    });
    g.bench_function("capture(0, 16)", |b| {
        deeper(EXTRA_LEVELS, &mut || b.iter(|| black_box(depot::capture(black_box(0), black_box(DEFAULT_DEPTH)))))
    });
    g.bench_function("capture(0, 16) + intern", |b| {
        deeper(EXTRA_LEVELS, &mut || {
            b.iter(|| black_box(depot.intern(&depot::capture(black_box(0), black_box(DEFAULT_DEPTH)))))
        })
    });
    g.bench_function("intern, stored 16-frame stack", |b| b.iter(|| black_box(depot.intern(black_box(&stored)))));
    g.finish();
    if say {
        let stats = depot.stats();
        println!("depot after the benchmarks: {stats:?}");
    }
}

criterion_group! { name = benches; config = config(); targets = capture_group }

fn main() {
    // `cargo bench` passes `--bench`; test runners listing or running bench
    // targets in test mode do not, and skip the memory run.
    if benching() {
        memory();
    }
    benches();
    Criterion::default().configure_from_args().final_summary();
}
