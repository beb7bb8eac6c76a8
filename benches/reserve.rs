//! Issue 3: reserving a 2 MiB run (512 pages of 4 KiB) in a 1 GiB arena
//! (262,144 pages, anonymous mapping), on the success and the failure path.
//!
//! Two arenas of the same geometry, the movable zone being the top quarter
//! (65,536 pages: 128 windows of 512):
//!
//! - *clean*: nothing allocated. `reserve_contig(512, 512)` takes the first
//!   window it ranks; the run is dropped each iteration, so every iteration
//!   isolates, carves a 512-page run out of a free 1024-page block, commits,
//!   and frees it again (the buddy merge included).
//! - *pinned*: one page pinned in every 512-aligned window of the movable
//!   zone (page 7 of each window; the other 511 pages free, in buddy blocks of
//!   orders 0 to 8). `reserve_contig` ranks all 128 windows, tries the best
//!   one (isolating its 511 free pages), finds the pin, builds the
//!   `ContigFailure` (one busy block, attributed), rolls back (the free
//!   blocks go back to the lists and coalesce) and arms the pinned page;
//!   the error is dropped each iteration.
//!
//! `reserve_range` runs the same two paths on one given window. Baselines in
//! the same groups: an order-9 (512-page) alloc+free from the same movable
//! zone, and `buddy_system_allocator`'s `alloc(512)` + `dealloc` over as
//! many frames (success only: it has no failure report to build).

use std::hint::black_box;
use std::time::Duration;

use buddy_system_allocator::FrameAllocator;
use criterion::{criterion_group, criterion_main, Criterion};
use pinowner::{Backing, ContigError, PageArena, Reason, ThreadCache, ZoneKind};

/// 1 GiB of 4 KiB pages.
const PAGES: usize = 1 << 18;
/// The movable zone: the top quarter.
const MOVABLE: usize = PAGES / 4;
/// 2 MiB of 4 KiB pages, aligned to itself.
const RUN: usize = 512;
/// The page pinned in each window of the pinned arena.
const PINNED_OFFSET: usize = 7;

fn config() -> Criterion {
    Criterion::default()
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(2))
        .sample_size(50)
}

fn arena() -> PageArena {
    PageArena::builder()
        .pages(PAGES)
        .movable_pages(MOVABLE)
        .backing(Backing::Anonymous)
        .without_thread_cache()
        .build()
        .unwrap()
}

fn success(c: &mut Criterion) {
    let a = arena();
    let zone = a.zone_range(ZoneKind::Movable);
    let mut peer = FrameAllocator::<32>::new();
    peer.add_frame(0, PAGES);

    let mut g = c.benchmark_group("reserve_2mib_success");
    g.bench_function("baseline: buddy_system_allocator alloc(512)+dealloc", |b| {
        b.iter(|| {
            let p = peer.alloc(black_box(RUN)).unwrap();
            peer.dealloc(black_box(p), RUN);
        })
    });
    g.bench_function("baseline: alloc_movable(9)+drop", |b| {
        b.iter(|| drop(black_box(a.alloc_movable(black_box(9)).unwrap())))
    });
    g.bench_function("reserve_contig(512, 512)+drop", |b| {
        b.iter(|| drop(black_box(a.reserve_contig(black_box(RUN), black_box(RUN), Reason::Contig).unwrap())))
    });
    g.bench_function("reserve_range(one window, 512)+drop", |b| {
        b.iter(|| drop(black_box(a.reserve_range(black_box(zone.start), black_box(RUN), Reason::Contig).unwrap())))
    });
    // With per-thread caches (the default `ThreadCache`, which caches
    // order 9 too): the reservation takes every cache's remote side, one
    // `membarrier` each time, and the freed run parks in this thread's
    // cache until the next reservation drains it.
    let cached = PageArena::builder()
        .pages(PAGES)
        .movable_pages(MOVABLE)
        .backing(Backing::Anonymous)
        .thread_cache(ThreadCache::default())
        .build()
        .unwrap();
    g.bench_function("reserve_range(one window, 512)+drop, thread caches", |b| {
        b.iter(|| drop(black_box(cached.reserve_range(black_box(zone.start), black_box(RUN), Reason::Contig).unwrap())))
    });
    g.finish();
    assert_eq!(a.free_pages(), PAGES, "every run was given back");
    assert_eq!(cached.free_pages(), PAGES, "every run was given back (cached pages included)");
}

fn failure(c: &mut Criterion) {
    let a = arena();
    let zone = a.zone_range(ZoneKind::Movable);
    // Fill the movable zone with single pages, pin page 7 of every window,
    // and give the rest back.
    let blocks: Vec<_> = (0..MOVABLE).map(|_| a.alloc_movable(0).unwrap().into_block()).collect();
    assert!(blocks.iter().all(|b| a.zone_of(b.pfn()) == Some(ZoneKind::Movable)));
    let pins: Vec<_> = blocks.iter().filter(|b| b.pfn() % RUN == PINNED_OFFSET).map(|b| b.pin(0).unwrap()).collect();
    assert_eq!(pins.len(), MOVABLE / RUN);
    drop(blocks);
    assert_eq!(a.free_pages(), PAGES - pins.len());

    let fail_contig = || match a.reserve_contig(RUN, RUN, Reason::Contig) {
        Err(ContigError::Busy(f)) => f,
        other => panic!("expected a busy window, got {other:?}"),
    };
    let f = fail_contig();
    assert_eq!((f.windows_considered, f.busy_pages(), f.pins(), f.attributed()), (MOVABLE / RUN, 1, 1, 1), "{f}");

    let mut g = c.benchmark_group("reserve_2mib_failure");
    g.bench_function("reserve_contig(512, 512), 128 windows each 1 page pinned", |b| {
        b.iter(|| drop(black_box(a.reserve_contig(black_box(RUN), black_box(RUN), Reason::Contig).unwrap_err())))
    });
    g.bench_function("reserve_range(one window, 512), 1 page pinned", |b| {
        b.iter(|| drop(black_box(a.reserve_range(black_box(zone.start), black_box(RUN), Reason::Contig).unwrap_err())))
    });
    g.finish();
    // Every rollback gave the free pages back, coalesced as before.
    assert_eq!(a.free_pages(), PAGES - pins.len());
    let f = fail_contig();
    assert_eq!(f.busy_pages(), 1, "{f}");
    drop(pins);
    assert_eq!(a.free_pages(), PAGES);
}

criterion_group! { name = benches; config = config(); targets = success, failure }
criterion_main!(benches);
