//! Instruction counts for one alloc+free, for callgrind: deterministic, where
//! wall time is not. Each case runs a `#[inline(never)]` function doing one
//! `alloc(order)` and dropping the block, `ITERS` times, on the same arenas
//! `benches/alloc.rs` measures. Count only inside that function and divide:
//!
//! ```text
//! cargo bench --bench alloc_insn --no-run
//! valgrind --tool=callgrind --callgrind-out-file=/dev/null \
//!     --toggle-collect='alloc_insn::order0_cache' target/release/deps/alloc_insn-<hash> --bench
//! ```
//!
//! The "Collected" total divided by `ITERS` (printed) is the count for one
//! alloc+free. Cases: `alloc_insn::order0`, `alloc_insn::order0_cache`,
//! `alloc_insn::order9`, `alloc_insn::order9_cache`, and the peer's
//! `alloc_insn::peer_order0`, `alloc_insn::peer_order9`.

use std::hint::black_box;

use buddy_system_allocator::FrameAllocator;
use pinowner::{PageArena, ThreadCache};

const PAGES: usize = 1 << 16;
const ITERS: usize = 100_000;

fn arena(cache: bool) -> PageArena {
    let b = PageArena::builder().pages(PAGES).max_order(10);
    let b = if cache { b.thread_cache(ThreadCache::default()) } else { b };
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
    // The peer, set up as in `benches/alloc.rs`.
    let mut f = FrameAllocator::<32>::new();
    f.add_frame(0, PAGES);
    let held: Vec<_> = (0..1000).map(|_| f.alloc(1).unwrap()).collect();
    for _ in 0..ITERS {
        peer_order0(&mut f);
    }
    drop(held);
    let mut f = FrameAllocator::<32>::new();
    f.add_frame(0, PAGES);
    for _ in 0..ITERS {
        peer_order9(&mut f);
    }
    let a = arena(false);
    let keep: Vec<_> = (0..1000).map(|_| a.alloc(0).unwrap()).collect();
    for _ in 0..ITERS {
        order0(&a);
    }
    drop(keep);
    let a = arena(true);
    let keep: Vec<_> = (0..1000).map(|_| a.alloc(0).unwrap()).collect();
    for _ in 0..ITERS {
        order0_cache(&a);
    }
    drop(keep);
    let a = arena(false);
    for _ in 0..ITERS {
        order9(&a);
    }
    let a = arena(true);
    for _ in 0..ITERS {
        order9_cache(&a);
    }
    println!("alloc_insn: {ITERS} iterations per case");
}
