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
//! `alloc_insn::order9`, `alloc_insn::order9_cache`,
//! `alloc_insn::counted_order0_cache` (`order0_cache` on a
//! `PageArena<CountsOnly>`), the buddy peer's
//! `alloc_insn::peer_order0`, `alloc_insn::peer_order9`, and the fast peers'
//! (`benches/peers.rs`) `alloc_insn::talc_order0`, `talc_order9`,
//! `buddy_alloc_order0`, `buddy_alloc_order9`, `linked_list_order0` and
//! `linked_list_order9` (order-0 cases with 1,000 blocks held, as above),
//! and `alloc_insn::floor_order0`, the floor (`peers::Floor`: what a cached
//! alloc+free with an exact state word cannot drop),
//! `alloc_insn::floor_locked_order0`, the floor with a lock taken on each
//! side (as the zone path takes the zone lock), and (timed only)
//! `floor_plain_order0`, the floor with its free's compare-and-swap made a
//! plain store: the difference is what the one locked instruction of a
//! refcounted free costs, printed after the ratios.
//!
//! `alloc_insn --bench --contention <threads> <ops>` measures the zone
//! lock under contention instead (see `contention` below).
//!
//! `alloc_insn --bench --time <rounds>` times the same functions instead:
//! in each round every case in turn, the least time per call over 5
//! batches of `ALLOC_INSN_ITERS` calls; printed per round, then the least
//! per case over all rounds and its ratio to the fastest peer of its order
//! (interleaved, so a noisy stretch of a shared machine hits every case).

use std::hint::black_box;

use buddy_system_allocator::FrameAllocator;
use pinowner::{CountsOnly, PageArena, ThreadCache};

mod peers;

const PAGES: usize = 1 << 16;
/// Iterations per case: `ALLOC_INSN_ITERS`, or 100,000.
fn iters() -> usize {
    std::env::var("ALLOC_INSN_ITERS").ok().and_then(|v| v.parse().ok()).unwrap_or(100_000)
}

/// A counts-only arena with the default thread caches, as `arena(true)`.
fn counted() -> PageArena<CountsOnly> {
    PageArena::builder().pages(PAGES).max_order(10).attribution().build().unwrap()
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
fn floor_order0(f: &mut peers::Floor) {
    let p = f.alloc(black_box(1));
    f.free(black_box(p));
}

/// The floor without its one locked instruction (the free's
/// compare-and-swap made a plain store): what is left is the cost of a
/// `&mut` allocator that keeps a state word and an owner slot per page.
#[inline(never)]
fn floor_plain_order0(f: &mut peers::Floor) {
    let p = f.alloc(black_box(1));
    f.free_plain(black_box(p));
}

/// The floor with the zone path's locks: the same operations, each side
/// under a lock of its own (std's mutex: a compare-and-swap to lock, a swap
/// to unlock), as the zone path takes the zone lock to allocate and again
/// to free.
#[inline(never)]
fn floor_locked_order0(f: &std::sync::Mutex<peers::Floor>) {
    let p = f.lock().unwrap().alloc(black_box(1));
    f.lock().unwrap().free(black_box(p));
}

#[inline(never)]
fn order0(a: &PageArena) {
    drop(black_box(a.alloc(black_box(0)).unwrap()));
}

#[inline(never)]
fn order0_cache(a: &PageArena) {
    drop(black_box(a.alloc(black_box(0)).unwrap()));
}

/// `order0_cache` on a counts-only arena (`PageArena<CountsOnly>`).
#[inline(never)]
fn counted_order0_cache(a: &PageArena<CountsOnly>) {
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
    let args: Vec<String> = std::env::args().collect();
    if let Some(i) = args.iter().position(|a| a == "--time") {
        let rounds = args.get(i + 1).and_then(|n| n.parse().ok()).expect("--time <rounds>");
        return time(rounds);
    }
    if let Some(i) = args.iter().position(|a| a == "--contention") {
        let threads = args.get(i + 1).and_then(|n| n.parse().ok()).expect("--contention <threads> <ops>");
        let ops = args.get(i + 2).and_then(|n| n.parse().ok()).expect("--contention <threads> <ops>");
        return contention(threads, ops);
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
    let mut fl = peers::Floor::new(PAGES);
    let held: Vec<_> = (0..1000).map(|_| fl.alloc(0)).collect();
    (0..iters).for_each(|_| floor_order0(&mut fl));
    let fl = std::sync::Mutex::new(fl);
    (0..iters).for_each(|_| floor_locked_order0(&fl));
    drop(held);
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
    let a = counted();
    let keep: Vec<_> = (0..1000).map(|_| a.alloc(0).unwrap()).collect();
    for _ in 0..iters {
        counted_order0_cache(&a);
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

/// The least time per call, in ns, over 5 batches of `iters` calls of `f`.
fn least(iters: usize, mut f: impl FnMut()) -> f64 {
    (0..5)
        .map(|_| {
            let t = std::time::Instant::now();
            (0..iters).for_each(|_| f());
            t.elapsed().as_secs_f64() * 1e9 / iters as f64
        })
        .fold(f64::INFINITY, f64::min)
}

/// `--time <rounds>`: see the module docs.
fn time(rounds: usize) {
    let iters = iters();
    let bytes = PAGES * 4096;
    let l0 = peers::layout(0);
    let mut t0 = peers::Talc::new(bytes);
    let _t0_held: Vec<_> = (0..1000).map(|_| t0.alloc(l0)).collect();
    let mut t9 = peers::Talc::new(bytes);
    let mut b0 = peers::BuddyAlloc::new(bytes);
    let _b0_held: Vec<_> = (0..1000).map(|_| b0.alloc(4096)).collect();
    let mut b9 = peers::BuddyAlloc::new(bytes);
    let mut l0h = peers::LinkedList::new(bytes);
    let _l0_held: Vec<_> = (0..1000).map(|_| l0h.alloc(l0)).collect();
    let mut l9 = peers::LinkedList::new(bytes);
    let mut fl = peers::Floor::new(PAGES);
    let _fl_held: Vec<_> = (0..1000).map(|_| fl.alloc(0)).collect();
    let mut flp = peers::Floor::new(PAGES);
    let _flp_held: Vec<_> = (0..1000).map(|_| flp.alloc(0)).collect();
    let mut flz = peers::Floor::new(PAGES);
    let _flz_held: Vec<_> = (0..1000).map(|_| flz.alloc(0)).collect();
    let flz = std::sync::Mutex::new(flz);
    let (z0, c0, z9, c9) = (arena(false), arena(true), arena(false), arena(true));
    let _z0_held: Vec<_> = (0..1000).map(|_| z0.alloc(0).unwrap()).collect();
    let _c0_held: Vec<_> = (0..1000).map(|_| c0.alloc(0).unwrap()).collect();
    let n0 = counted();
    let _n0_held: Vec<_> = (0..1000).map(|_| n0.alloc(0).unwrap()).collect();
    type Case<'a> = (&'static str, Box<dyn FnMut() + 'a>);
    let mut cases: Vec<Case<'_>> = vec![
        ("talc_order0", Box::new(|| talc_order0(&mut t0))),
        ("buddy_alloc_order0", Box::new(|| buddy_alloc_order0(&mut b0))),
        ("linked_list_order0", Box::new(|| linked_list_order0(&mut l0h))),
        ("floor_order0", Box::new(|| floor_order0(&mut fl))),
        ("floor_plain_order0", Box::new(|| floor_plain_order0(&mut flp))),
        ("floor_locked_order0", Box::new(|| floor_locked_order0(&flz))),
        ("order0_cache", Box::new(|| order0_cache(&c0))),
        ("counted_order0_cache", Box::new(|| counted_order0_cache(&n0))),
        ("order0", Box::new(|| order0(&z0))),
        ("talc_order9", Box::new(|| talc_order9(&mut t9))),
        ("buddy_alloc_order9", Box::new(|| buddy_alloc_order9(&mut b9))),
        ("linked_list_order9", Box::new(|| linked_list_order9(&mut l9))),
        ("order9_cache", Box::new(|| order9_cache(&c9))),
        ("order9", Box::new(|| order9(&z9))),
    ];
    let mut best = vec![f64::INFINITY; cases.len()];
    for round in 0..rounds {
        let line: Vec<String> = cases
            .iter_mut()
            .zip(&mut best)
            .map(|((name, f), b)| {
                let ns = least(iters, f);
                *b = b.min(ns);
                format!("{name} {ns:.2}")
            })
            .collect();
        println!("round {round}: {}", line.join(", "));
    }
    for order in ["order0", "order9"] {
        let ours = ["order", "floor", "counted"];
        let peer = |n: &str| n.contains(order) && !ours.iter().any(|o| n.starts_with(o));
        let fastest =
            cases.iter().zip(&best).filter(|((n, _), _)| peer(n)).map(|(_, &b)| b).fold(f64::INFINITY, f64::min);
        let talc = cases.iter().zip(&best).find(|((n, _), _)| *n == format!("talc_{order}")).map(|(_, &b)| b);
        for ((name, _), &b) in cases.iter().zip(&best).filter(|((n, _), _)| n.contains(order)) {
            let vs_talc = talc.map_or(f64::NAN, |t| b / t);
            println!("least {name}: {b:.2} ns, {:.2}x the fastest peer, {vs_talc:.2}x talc", b / fastest);
        }
        if order == "order0" {
            let at = |n: &str| cases.iter().zip(&best).find(|((c, _), _)| *c == n).map_or(f64::NAN, |(_, &b)| b);
            let locked = at("floor_order0") - at("floor_plain_order0");
            println!(
                "one locked instruction (floor_order0 - floor_plain_order0): {locked:.2} ns; \
                 1.5x the fastest peer ({:.2} ns) leaves {:.2} ns for the rest, \
                 which the plain floor alone takes {:.2} ns for",
                1.5 * fastest,
                1.5 * fastest - locked,
                at("floor_plain_order0")
            );
        }
    }
}

/// Runs `f` `ops` times on each of `threads` threads at once, timing every
/// call. Returns the wall time per call over all of them (ns) and every
/// call's latency (ns), sorted.
fn contend(threads: usize, ops: usize, f: impl Fn() + Sync) -> (f64, Vec<u64>) {
    let start = std::time::Instant::now();
    let mut all: Vec<u64> = std::thread::scope(|s| {
        let workers: Vec<_> = (0..threads)
            .map(|_| {
                s.spawn(|| {
                    let mut lat = Vec::with_capacity(ops);
                    for _ in 0..ops {
                        let t = std::time::Instant::now();
                        f();
                        lat.push(t.elapsed().as_nanos() as u64);
                    }
                    lat
                })
            })
            .collect();
        workers.into_iter().flat_map(|w| w.join().unwrap()).collect()
    });
    let wall = start.elapsed().as_secs_f64() * 1e9 / (threads * ops) as f64;
    all.sort_unstable();
    (wall, all)
}

/// `--contention <threads> <ops>`: the zone lock under contention.
/// `threads` threads each do `ops` order-0 alloc+frees on one arena
/// without thread caches (every call takes the zone lock twice), and, as
/// baselines in the same run, the floor (`peers::Floor`) with a lock taken
/// on each side, `parking_lot`'s mutex (the zone lock before session 8)
/// and std's. Prints the wall time per call and the latency percentiles of
/// single calls: throughput under contention and the wait a caller can
/// see (a spin lock's sleeping waiter is not woken; a parking mutex's is).
fn contention(threads: usize, ops: usize) {
    let a = arena(false);
    let _held: Vec<_> = (0..1000).map(|_| a.alloc(0).unwrap()).collect();
    let with_held = |mut fl: peers::Floor| {
        let held: Vec<_> = (0..1000).map(|_| fl.alloc(0)).collect();
        drop(held);
        fl
    };
    let pl = parking_lot::Mutex::new(with_held(peers::Floor::new(PAGES)));
    let st = std::sync::Mutex::new(with_held(peers::Floor::new(PAGES)));
    type Case<'a> = (&'static str, Box<dyn Fn() + Sync + 'a>);
    let cases: Vec<Case<'_>> = vec![
        ("pinowner zone path", Box::new(|| drop(black_box(a.alloc(black_box(0)).unwrap())))),
        (
            "floor, parking_lot mutex each side",
            Box::new(|| {
                let p = pl.lock().alloc(black_box(1));
                pl.lock().free(black_box(p));
            }),
        ),
        (
            "floor, std mutex each side",
            Box::new(|| {
                let p = st.lock().unwrap().alloc(black_box(1));
                st.lock().unwrap().free(black_box(p));
            }),
        ),
    ];
    for (name, f) in &cases {
        let (wall, lat) = contend(threads, ops, f);
        let pct = |p: f64| lat[((lat.len() - 1) as f64 * p) as usize];
        println!(
            "{name}, {threads} threads: {wall:.0} ns/call; latency p50 {} ns, p99 {} ns, p99.9 {} ns, max {} ns",
            pct(0.5),
            pct(0.99),
            pct(0.999),
            lat[lat.len() - 1]
        );
    }
}
