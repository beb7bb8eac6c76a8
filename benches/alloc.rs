//! Allocation: order-0 and order-9 alloc+free against
//! `buddy_system_allocator::FrameAllocator` and the fast single-threaded
//! heap allocators (talc, buddy-alloc, linked_list_allocator: see
//! `benches/peers.rs`) in the same run, with and without per-thread caches
//! (`ThreadCache::default()`, which caches orders 0–3 and 9), and two-thread
//! throughput.

use std::hint::black_box;
use std::sync::{Barrier, Mutex};
use std::time::{Duration, Instant};

use buddy_system_allocator::FrameAllocator;
use criterion::{criterion_group, criterion_main, Criterion};
use pinowner::{PageArena, ThreadCache};

mod peers;

const PAGES: usize = 1 << 16;

fn config() -> Criterion {
    Criterion::default()
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(2))
        .sample_size(50)
}

/// A peer allocator over the same page numbers, with some pages held so its
/// free lists are not trivially empty.
fn peer() -> FrameAllocator<32> {
    let mut f = FrameAllocator::<32>::new();
    f.add_frame(0, PAGES);
    f
}

fn arena(cache: bool) -> PageArena {
    let b = PageArena::builder().pages(PAGES).max_order(10);
    let b = if cache { b.thread_cache(ThreadCache::default()) } else { b.without_thread_cache() };
    b.build().unwrap()
}

fn order0(c: &mut Criterion) {
    let mut g = c.benchmark_group("alloc_free_order0");
    let mut f = peer();
    let held: Vec<_> = (0..1000).map(|_| f.alloc(1).unwrap()).collect();
    g.bench_function("baseline: buddy_system_allocator", |b| {
        b.iter(|| {
            let p = f.alloc(black_box(1)).unwrap();
            f.dealloc(black_box(p), 1);
        })
    });
    drop(held);
    fast_peers(&mut g, 0, 1000);
    let mut fl = peers::Floor::new(PAGES);
    let held: Vec<_> = (0..1000).map(|_| fl.alloc(0)).collect();
    g.bench_function("floor: list pop, word store, owner store; load, CAS, push", |b| {
        b.iter(|| {
            let p = fl.alloc(black_box(1));
            fl.free(black_box(p));
        })
    });
    drop(held);
    let a = arena(false);
    let keep: Vec<_> = (0..1000).map(|_| a.alloc(0).unwrap()).collect();
    g.bench_function("pinowner", |b| b.iter(|| drop(black_box(a.alloc(black_box(0)).unwrap()))));
    drop(keep);
    let a = arena(true);
    let keep: Vec<_> = (0..1000).map(|_| a.alloc(0).unwrap()).collect();
    g.bench_function("pinowner, thread cache", |b| b.iter(|| drop(black_box(a.alloc(black_box(0)).unwrap()))));
    drop(keep);
    g.finish();
}

fn order9(c: &mut Criterion) {
    let mut g = c.benchmark_group("alloc_free_order9");
    let mut f = peer();
    g.bench_function("baseline: buddy_system_allocator", |b| {
        b.iter(|| {
            let p = f.alloc(black_box(512)).unwrap();
            f.dealloc(black_box(p), 512);
        })
    });
    fast_peers(&mut g, 9, 0);
    let a = arena(false);
    g.bench_function("pinowner", |b| b.iter(|| drop(black_box(a.alloc(black_box(9)).unwrap()))));
    // Order 9 is cached per thread by default (the kernel's pageblock
    // order): after the first free the block stays in the cache.
    let a = arena(true);
    g.bench_function("pinowner, thread cache", |b| b.iter(|| drop(black_box(a.alloc(black_box(9)).unwrap()))));
    g.finish();
}

/// talc, buddy-alloc and linked_list_allocator over `PAGES` pages each:
/// alloc+free of a block of `order` with `held` blocks of order 0 held.
fn fast_peers(g: &mut criterion::BenchmarkGroup<'_, criterion::measurement::WallTime>, order: u8, held: usize) {
    let layout = peers::layout(order);
    let bytes = PAGES * 4096;
    let mut t = peers::Talc::new(bytes);
    let kept: Vec<_> = (0..held).map(|_| t.alloc(peers::layout(0))).collect();
    g.bench_function("peer: talc", |b| {
        b.iter(|| {
            let p = t.alloc(black_box(layout));
            t.free(black_box(p), layout);
        })
    });
    kept.into_iter().for_each(|p| t.free(p, peers::layout(0)));
    let mut ba = peers::BuddyAlloc::new(bytes);
    let kept: Vec<_> = (0..held).map(|_| ba.alloc(4096)).collect();
    g.bench_function("peer: buddy-alloc", |b| {
        b.iter(|| {
            let p = ba.alloc(black_box(layout.size()));
            ba.free(black_box(p));
        })
    });
    kept.into_iter().for_each(|p| ba.free(p));
    let mut ll = peers::LinkedList::new(bytes);
    let kept: Vec<_> = (0..held).map(|_| ll.alloc(peers::layout(0))).collect();
    g.bench_function("peer: linked_list_allocator", |b| {
        b.iter(|| {
            let p = ll.alloc(black_box(layout));
            ll.free(black_box(p), layout);
        })
    });
    kept.into_iter().for_each(|p| ll.free(p, peers::layout(0)));
}

/// Two threads, each allocating and freeing order-0 pages; time per
/// alloc+free pair, summed over both threads' work.
fn two_threads(c: &mut Criterion) {
    let mut g = c.benchmark_group("alloc_free_order0_2threads");
    let peer = Mutex::new(peer());
    g.bench_function("baseline: buddy_system_allocator in a Mutex", |b| {
        b.iter_custom(|iters| {
            run2(iters, || {
                let p = peer.lock().unwrap().alloc(1).unwrap();
                peer.lock().unwrap().dealloc(p, 1);
            })
        })
    });
    let a = arena(false);
    g.bench_function("pinowner", |b| b.iter_custom(|iters| run2(iters, || drop(black_box(a.alloc(0).unwrap())))));
    let a = arena(true);
    g.bench_function("pinowner, thread cache", |b| {
        b.iter_custom(|iters| run2(iters, || drop(black_box(a.alloc(0).unwrap()))))
    });
    g.finish();
}

/// Runs `iters` operations split over two threads; returns the wall time
/// divided so that criterion reports time per operation of the pair.
fn run2(iters: u64, op: impl Fn() + Sync) -> Duration {
    let per = iters.div_ceil(2);
    let barrier = Barrier::new(2);
    let start = std::sync::OnceLock::new();
    std::thread::scope(|s| {
        for _ in 0..2 {
            s.spawn(|| {
                barrier.wait();
                let _ = start.set(Instant::now());
                for _ in 0..per {
                    op();
                }
            });
        }
    });
    start.get().unwrap().elapsed()
}

criterion_group! { name = benches; config = config(); targets = order0, order9, two_threads }
criterion_main!(benches);
