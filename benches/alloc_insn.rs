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
//! `alloc_insn::order9`, `alloc_insn::order9_cache`, the buddy peer's
//! `alloc_insn::peer_order0`, `alloc_insn::peer_order9`, and the fast peers'
//! (`benches/peers.rs`) `alloc_insn::talc_order0`, `talc_order9`,
//! `buddy_alloc_order0`, `buddy_alloc_order9`, `linked_list_order0` and
//! `linked_list_order9` (order-0 cases with 1,000 blocks held, as above).

use std::hint::black_box;

use buddy_system_allocator::FrameAllocator;
use pinowner::{PageArena, ThreadCache};

mod peers;

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
fn talc_order0(h: &mut peers::Talc) {
    let p = h.alloc(black_box(peers::layout(0)));
    h.free(black_box(p), peers::layout(0));
}

#[inline(never)]
fn talc_order9(h: &mut peers::Talc) {
    let p = h.alloc(black_box(peers::layout(9)));
    h.free(black_box(p), peers::layout(9));
}

#[inline(never)]
fn buddy_alloc_order0(h: &mut peers::BuddyAlloc) {
    let p = h.alloc(black_box(4096));
    h.free(black_box(p));
}

#[inline(never)]
fn buddy_alloc_order9(h: &mut peers::BuddyAlloc) {
    let p = h.alloc(black_box(2 << 20));
    h.free(black_box(p));
}

#[inline(never)]
fn linked_list_order0(h: &mut peers::LinkedList) {
    let p = h.alloc(black_box(peers::layout(0)));
    h.free(black_box(p), peers::layout(0));
}

#[inline(never)]
fn linked_list_order9(h: &mut peers::LinkedList) {
    let p = h.alloc(black_box(peers::layout(9)));
    h.free(black_box(p), peers::layout(9));
}

/// Runs the fast peers' cases: order 0 with 1,000 blocks held, order 9 with
/// none.
fn fast_peers(iters: usize) {
    let bytes = PAGES * 4096;
    let l0 = peers::layout(0);
    let mut t = peers::Talc::new(bytes);
    let held: Vec<_> = (0..1000).map(|_| t.alloc(l0)).collect();
    (0..iters).for_each(|_| talc_order0(&mut t));
    held.into_iter().for_each(|p| t.free(p, l0));
    (0..iters).for_each(|_| talc_order9(&mut t));
    let mut b = peers::BuddyAlloc::new(bytes);
    let held: Vec<_> = (0..1000).map(|_| b.alloc(4096)).collect();
    (0..iters).for_each(|_| buddy_alloc_order0(&mut b));
    held.into_iter().for_each(|p| b.free(p));
    (0..iters).for_each(|_| buddy_alloc_order9(&mut b));
    let mut l = peers::LinkedList::new(bytes);
    let held: Vec<_> = (0..1000).map(|_| l.alloc(l0)).collect();
    (0..iters).for_each(|_| linked_list_order0(&mut l));
    held.into_iter().for_each(|p| l.free(p, l0));
    (0..iters).for_each(|_| linked_list_order9(&mut l));
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
    fast_peers(iters);
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
