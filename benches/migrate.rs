//! Issue 10: what moving costs, against the copy it contains.
//!
//! - `move_4k`: `MovableBlock::relocate` of one 4 KiB page (freeze the
//!   handle and the block, allocate the destination, copy, switch, free the
//!   old block), against a bare 4 KiB `copy_from_slice` between two
//!   pages of the same arena, each borrowed once outside the loop (the bare
//!   copy). Goal: at most 2x the copy. `hot_path_insn`'s `floor_move` case
//!   gives the floor: the copy plus the three compare-and-swaps a move
//!   cannot do without.
//! - `move_2m`: the same for an order-9 block (2 MiB).
//! - `reserve_2mib_migrating`: `reserve_range` of a 2 MiB window in which
//!   10% of the pages (51 order-0 movable blocks, spread) must move out,
//!   against the same reservation of an empty window; and `reserve_contig`
//!   of 2 MiB in a movable zone 90% full of movable blocks (about 460 move);
//!   each iteration gets a fresh arena (set-up not timed).

use std::hint::black_box;
use std::sync::Arc;
use std::time::Duration;

use criterion::{criterion_group, criterion_main, BatchSize, Criterion};
use pinowner::{Backing, PageArena, Reason, ThreadCache};

const WINDOW: usize = 512;

fn config() -> Criterion {
    Criterion::default()
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(2))
        .sample_size(50)
}

fn arena(normal: usize, movable: usize) -> PageArena {
    PageArena::builder()
        .pages(normal + movable)
        .movable_pages(movable)
        .backing(Backing::Anonymous)
        .without_thread_cache()
        .build()
        .unwrap()
}

fn moves(c: &mut Criterion) {
    for (name, order) in [("move_4k", 0u8), ("move_2m", 9)] {
        let a = arena(4 * WINDOW, 4 * WINDOW);
        let mut g = c.benchmark_group(name);
        let len = 4096usize << order;
        // Two blocks of the arena itself as the copy's source and target
        // (same mapping, same alignment, already faulted in).
        let mut src = a.alloc(order).unwrap();
        let mut dst = a.alloc(order).unwrap();
        src.bytes_mut().unwrap().fill(1);
        dst.bytes_mut().unwrap().fill(0);
        {
            // Borrowed once: the bare copy, nothing else per iteration.
            let s = src.bytes();
            let mut d = dst.bytes_mut().unwrap();
            g.bench_function(format!("baseline: copy {len} bytes"), |b| b.iter(|| d.copy_from_slice(black_box(s))));
        }
        let mut m = a.alloc_movable(order).unwrap();
        m.borrow_mut().unwrap().fill(2);
        g.bench_function(format!("relocate order {order}"), |b| b.iter(|| black_box(m.relocate().unwrap())));
        drop(m);
        // The same with the kernel-style per-thread caches (the destination
        // and the freed block through the cache, not the zone lock).
        let cached = PageArena::builder()
            .pages(8 * WINDOW)
            .movable_pages(4 * WINDOW)
            .backing(Backing::Anonymous)
            .thread_cache(ThreadCache::default())
            .build()
            .unwrap();
        let mut m = cached.alloc_movable(order).unwrap();
        m.borrow_mut().unwrap().fill(2);
        g.bench_function(format!("relocate order {order}, thread caches"), |b| {
            b.iter(|| black_box(m.relocate().unwrap()))
        });
        g.finish();
    }
}

fn reserve_migrating(c: &mut Criterion) {
    let mut g = c.benchmark_group("reserve_2mib_migrating");
    let setup = |fill: bool| {
        move || {
            let a = Arc::new(arena(WINDOW, 2 * WINDOW));
            let mut all: Vec<_> = (0..2 * WINDOW).map(|_| a.alloc_movable_owned(0).unwrap()).collect();
            // Every page faulted in: the bench measures moves, not first
            // touches of a fresh mapping.
            for b in &mut all {
                b.borrow_mut().unwrap().fill(3);
            }
            // Keep every tenth page of the first movable window.
            all.retain(|b| fill && (WINDOW..2 * WINDOW).contains(&b.pfn()) && b.pfn() % 10 == 0);
            (a, all)
        }
    };
    g.bench_function("baseline: the same window, empty", |b| {
        b.iter_batched(
            setup(false),
            |(a, held)| {
                drop(black_box(a.reserve_range(WINDOW, WINDOW, Reason::Shrink).unwrap()));
                (a, held) // dropped untimed
            },
            BatchSize::PerIteration,
        )
    });
    g.bench_function("51 of 512 pages held by movable blocks", |b| {
        b.iter_batched(
            setup(true),
            |(a, held)| {
                assert_eq!(held.len(), 51);
                drop(black_box(a.reserve_range(WINDOW, WINDOW, Reason::Shrink).unwrap()));
                (a, held) // dropped untimed
            },
            BatchSize::PerIteration,
        )
    });
    // The case: a movable zone 90% full of movable blocks (every
    // tenth freed, so every window has holes), `reserve_contig` of 2 MiB:
    // about 460 blocks move out of the best window.
    let full = || {
        let a = Arc::new(arena(WINDOW, 4 * WINDOW));
        let mut all: Vec<_> = (0..4 * WINDOW).map(|_| a.alloc_movable_owned(0).unwrap()).collect();
        for b in &mut all {
            b.borrow_mut().unwrap().fill(3);
        }
        let mut i = 0;
        all.retain(|_| {
            i += 1;
            i % 10 != 0
        });
        (a, all)
    };
    g.bench_function("reserve_contig in a movable zone 90% full of movable blocks", |b| {
        b.iter_batched(
            full,
            |(a, held)| {
                drop(black_box(a.reserve_contig(WINDOW, WINDOW, Reason::Contig).unwrap()));
                (a, held)
            },
            BatchSize::PerIteration,
        )
    });
    g.finish();
}

criterion_group! { name = benches; config = config(); targets = moves, reserve_migrating }
criterion_main!(benches);
