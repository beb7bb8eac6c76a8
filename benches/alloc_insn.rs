//! Instruction counts for one alloc+free, for callgrind: deterministic, where
//! wall time is not. Each case runs a `#[inline(never)]` function doing one
//! `alloc(order)` and dropping the block, many times, on the same arenas
//! `benches/alloc.rs` measures. Count only inside that function and divide:
//!
//! ```text
//! cargo bench --bench alloc_insn --no-run
//! valgrind --tool=callgrind --callgrind-out-file=/dev/null \
//!     --toggle-collect='alloc_insn::order0_cache' target/release/deps/alloc_insn-<hash> --bench
//! ```
//!
//! The "Collected" total divided by the iterations (printed) is the count
//! for one alloc+free. One-time costs (the first refill of a cache, page
//! faults) fall out when two runs with different `ALLOC_INSN_ITERS` (default
//! 100000) are subtracted: (collected₂ − collected₁) / (iters₂ − iters₁).
//! Cases: `alloc_insn::order0`, `alloc_insn::order0_cache`,
//! `alloc_insn::order9`, `alloc_insn::order9_cache`, and the peer's
//! `alloc_insn::peer_order0`, `alloc_insn::peer_order9`.

use std::hint::black_box;

use buddy_system_allocator::FrameAllocator;
use pinowner::{PageArena, ThreadCache};

const PAGES: usize = 1 << 16;
/// Iterations per case: `ALLOC_INSN_ITERS`, or 100,000.
fn iters() -> usize {
    std::env::var("ALLOC_INSN_ITERS").ok().and_then(|v| v.parse().ok()).unwrap_or(100_000)
}

fn arena(cache: bool) -> PageArena {
    let b = PageArena::builder().pages(PAGES).max_order(10);
    let b = if cache { b.thread_cache(ThreadCache::default()) } else { b.without_thread_cache() };
    b.build().unwrap()
}

#[inline(never)]
fn peer_order0(f: &mut FrameAllocator<32>) {
    let p = f.alloc(black_box(1)).unwrap();
    f.dealloc(black_box(p), 1);
}

#[inline(never)]
fn peer_order9(f: &mut FrameAllocator<32>) {
    let p = f.alloc(black_box(512)).unwrap();
    f.dealloc(black_box(p), 512);
}

#[inline(never)]
fn order0(a: &PageArena) {
    drop(black_box(a.alloc(black_box(0)).unwrap()));
}

#[inline(never)]
fn order0_cache(a: &PageArena) {
    drop(black_box(a.alloc(black_box(0)).unwrap()));
}

#[inline(never)]
fn order9(a: &PageArena) {
    drop(black_box(a.alloc(black_box(9)).unwrap()));
}

#[inline(never)]
fn order9_cache(a: &PageArena) {
    drop(black_box(a.alloc(black_box(9)).unwrap()));
}

fn main() {
    // `cargo bench` passes `--bench`; test runners listing or running bench
    // targets do not, and get no output.
    if !std::env::args().any(|a| a == "--bench") {
        return;
    }
    let iters = iters();
    // The peer, set up as in `benches/alloc.rs`.
    let mut f = FrameAllocator::<32>::new();
    f.add_frame(0, PAGES);
    let held: Vec<_> = (0..1000).map(|_| f.alloc(1).unwrap()).collect();
    for _ in 0..iters {
        peer_order0(&mut f);
    }
    drop(held);
    let mut f = FrameAllocator::<32>::new();
    f.add_frame(0, PAGES);
    for _ in 0..iters {
        peer_order9(&mut f);
    }
    let a = arena(false);
    let keep: Vec<_> = (0..1000).map(|_| a.alloc(0).unwrap()).collect();
    for _ in 0..iters {
        order0(&a);
    }
    drop(keep);
    let a = arena(true);
    let keep: Vec<_> = (0..1000).map(|_| a.alloc(0).unwrap()).collect();
    for _ in 0..iters {
        order0_cache(&a);
    }
    drop(keep);
    let a = arena(false);
    for _ in 0..iters {
        order9(&a);
    }
    let a = arena(true);
    for _ in 0..iters {
        order9_cache(&a);
    }
    println!("alloc_insn: {iters} iterations per case");
}
