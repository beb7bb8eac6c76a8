//! The hot path: a get+put (or pin+unpin) pair on a page, against a bare
//! atomic increment/decrement pair and an `Arc` clone/drop in the same run,
//! under both attribution policies (`PageArena` and `PageArena<CountsOnly>`).

use std::hint::black_box;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Arc;
use std::time::Duration;

use criterion::{criterion_group, criterion_main, Criterion};
use pinowner::{CountsOnly, PageArena};

fn config() -> Criterion {
    Criterion::default()
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(2))
        .sample_size(50)
}

/// Keeps a handle in memory until the end of the iteration, then drops it:
/// by reference, so `black_box` does not copy it (see
/// `benches/hot_path_insn.rs`: a copy's reloads stall store forwarding).
#[inline(always)]
fn hold<T>(handle: T) {
    black_box(&handle);
}

fn bare_pair(c: &AtomicU32) {
    c.fetch_add(1, Ordering::Relaxed);
    c.fetch_sub(1, Ordering::Release);
}

fn get_put(c: &mut Criterion) {
    let arena = PageArena::builder().pages(64).build().unwrap();
    let block = arena.alloc(0).unwrap();
    let pfn = block.pfn();
    let r = block.page_ref(0);
    let counted: PageArena<CountsOnly> = PageArena::builder().pages(64).attribution().build().unwrap();
    let cblock = counted.alloc(0).unwrap();
    let cpfn = cblock.pfn();
    let cr = cblock.page_ref(0);
    let counter = AtomicU32::new(1);
    let arc = Arc::new(0u64);

    let mut g = c.benchmark_group("get_put");
    g.bench_function("baseline: AtomicU32 add+sub", |b| b.iter(|| bare_pair(black_box(&counter))));
    g.bench_function("baseline: Arc clone+drop", |b| b.iter(|| hold(Arc::clone(black_box(&arc)))));
    g.bench_function("PageRef clone+drop", |b| b.iter(|| hold(black_box(&r).clone())));
    g.bench_function("counts only: PageRef clone+drop", |b| b.iter(|| hold(black_box(&cr).clone())));
    g.bench_function("arena.get(pfn)+drop", |b| b.iter(|| hold(arena.get(black_box(pfn)).unwrap())));
    g.bench_function("counts only: arena.get(pfn)+drop", |b| b.iter(|| hold(counted.get(black_box(cpfn)).unwrap())));
    g.bench_function("get_raw+put_raw", |b| {
        b.iter(|| {
            arena.get_raw(black_box(pfn)).unwrap();
            arena.put_raw(black_box(pfn)).unwrap();
        })
    });
    g.finish();
}

fn pin_unpin(c: &mut Criterion) {
    let arena = PageArena::builder().pages(64).build().unwrap();
    let block = arena.alloc(0).unwrap();
    let pfn = block.pfn();
    let p = block.pin(0).unwrap();
    let counted: PageArena<CountsOnly> = PageArena::builder().pages(64).attribution().build().unwrap();
    let cblock = counted.alloc(0).unwrap();
    let cp = cblock.pin(0).unwrap();
    let counter = AtomicU32::new(1);
    let arc = Arc::new(0u64);

    let mut g = c.benchmark_group("pin_unpin");
    g.bench_function("baseline: AtomicU32 add+sub", |b| b.iter(|| bare_pair(black_box(&counter))));
    g.bench_function("baseline: Arc clone+drop", |b| b.iter(|| hold(Arc::clone(black_box(&arc)))));
    g.bench_function("PagePin clone+drop", |b| b.iter(|| hold(black_box(&p).clone())));
    g.bench_function("counts only: PagePin clone+drop", |b| b.iter(|| hold(black_box(&cp).clone())));
    g.bench_function("arena.pin(pfn)+drop", |b| b.iter(|| hold(arena.pin(black_box(pfn)).unwrap())));
    g.finish();
}

criterion_group! { name = benches; config = config(); targets = get_put, pin_unpin }
criterion_main!(benches);
