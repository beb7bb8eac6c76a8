//! The performance bugs of issue 12, each beside its baseline in the same
//! run. A plain `main` (no criterion): the figures are one-off costs, worst
//! latencies and resident memory, which criterion's per-iteration means do
//! not show.
//!
//! ```text
//! cargo bench --bench perf_bugs            # every group
//! cargo bench --bench perf_bugs -- report  # groups whose name contains "report"
//! ```
//!
//! Groups:
//!
//! - `heap_build`: building a 1 GiB heap-backed arena, an anonymous one, and
//!   a bare page-aligned `std::alloc::alloc_zeroed` of the same size (what
//!   the heap backing used to be); time and resident bytes per page before
//!   any use.
//! - `free_pages`: `free_pages()` on a fragmented 1 Mi-page arena, with
//!   thread caches and without, against `frag_stats()` (what it used to
//!   call); order-0 alloc+free throughput of one thread while another polls
//!   either (nonstop, or sleeping between polls), or nothing.
//! - `first_failure`: the worst latency of `alloc_movable` on another thread
//!   while the first failed reservation of an arena with a 1 Mi-event
//!   tracker runs, against the same during 50 later failures (tracker
//!   built) and with no reservation running; and how many times the
//!   allocating thread blocked (voluntary context switches), which the
//!   machine's load does not inflate.
//! - `report`: the worst latency of a recorded event (get+put of an armed
//!   page, 16-frame stacks) on another thread while a report resolves
//!   symbols for the first time in the process, against recording with
//!   depth 0. Each case runs in a fresh child process (the first resolution
//!   happens once per process).

use std::hint::black_box;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed};
use std::sync::Barrier;
use std::time::{Duration, Instant};

use pinowner::{Backing, PageArena, Reason, ThreadCache, Tracking};

fn resident_bytes() -> usize {
    let statm = std::fs::read_to_string("/proc/self/statm").unwrap_or_default();
    let pages: usize = statm.split_whitespace().nth(1).and_then(|v| v.parse().ok()).unwrap_or(0);
    pages * 4096
}

fn min_of<T: PartialOrd + Copy>(v: &[T]) -> T {
    v.iter().copied().fold(v[0], |a, b| if b < a { b } else { a })
}

fn heap_build() {
    const BYTES: usize = 1 << 30;
    let pages = BYTES / 4096;
    println!("heap_build: {} pages of 4 KiB (1 GiB), min of 3 rounds, interleaved", pages);
    let mut rows: Vec<(&str, Vec<f64>, Vec<f64>)> = vec![
        ("anonymous mmap", vec![], vec![]),
        ("heap (default)", vec![], vec![]),
        ("std alloc_zeroed 4 KiB-aligned", vec![], vec![]),
    ];
    for _ in 0..3 {
        for row in rows.iter_mut() {
            let before = resident_bytes();
            let t = Instant::now();
            let kept: Box<dyn std::any::Any> = match row.0 {
                "anonymous mmap" => {
                    Box::new(PageArena::builder().pages(pages).backing(Backing::Anonymous).build().unwrap())
                }
                "heap (default)" => Box::new(PageArena::builder().pages(pages).backing(Backing::Heap).build().unwrap()),
                _ => {
                    let layout = std::alloc::Layout::from_size_align(BYTES, 4096).unwrap();
                    // SAFETY: non-zero size; freed below with the same layout.
                    let p = unsafe { std::alloc::alloc_zeroed(layout) };
                    Box::new(ZeroedAlloc(p, layout))
                }
            };
            let took = t.elapsed().as_secs_f64() * 1e3;
            let grew = resident_bytes().saturating_sub(before);
            row.1.push(took);
            row.2.push(grew as f64 / pages as f64);
            drop(black_box(kept));
        }
    }
    for (name, ms, per_page) in &rows {
        println!("  {name:<34} build {:>9.3} ms   resident before use {:>8.2} B/page", min_of(ms), min_of(per_page));
    }
}

struct ZeroedAlloc(*mut u8, std::alloc::Layout);

impl Drop for ZeroedAlloc {
    fn drop(&mut self) {
        if !self.0.is_null() {
            // SAFETY: allocated with this layout by `alloc_zeroed`.
            unsafe { std::alloc::dealloc(self.0, self.1) };
        }
    }
}

/// A 1 Mi-page anonymous arena, with thread caches or not.
fn fragmented(cache: bool) -> (PageArena, usize) {
    const PAGES: usize = 1 << 20;
    let b = PageArena::builder().pages(PAGES).backing(Backing::Anonymous);
    let b = if cache { b.thread_cache(ThreadCache::default()) } else { b };
    (b.build().unwrap(), PAGES)
}

fn free_pages() {
    for cache in [true, false] {
        free_pages_of(cache);
    }
}

fn free_pages_of(cache: bool) {
    let (arena, pages) = fragmented(cache);
    let mut all: Vec<_> = (0..pages).map(|_| arena.alloc(0).unwrap()).collect();
    let mut keep = Vec::with_capacity(pages / 2);
    for (i, b) in all.drain(..).enumerate() {
        if i % 2 == 0 {
            keep.push(b);
        }
    }
    let free = arena.free_pages();
    let caches = if cache { "on" } else { "off" };
    println!("free_pages: 1 Mi-page arena, thread caches {caches}, every other page held ({free} free)");
    let time = |f: &dyn Fn() -> usize| {
        let mut best = f64::MAX;
        let mut worst: f64 = 0.0;
        for _ in 0..20 {
            let t = Instant::now();
            black_box(f());
            let ns = t.elapsed().as_nanos() as f64;
            best = best.min(ns);
            worst = worst.max(ns);
        }
        (best, worst)
    };
    for _ in 0..2 {
        let (b, w) = time(&|| arena.free_pages());
        println!("  free_pages()          min {:>12.0} ns   max {:>12.0} ns", b, w);
        let (b, w) = time(&|| arena.frag_stats().zones.len());
        println!("  baseline: frag_stats() min {:>12.0} ns   max {:>12.0} ns", b, w);
    }
    // Throughput of order-0 alloc+free on one thread while another polls
    // (in a tight loop, or sleeping `pause` between polls); returns M ops/s
    // and polls/s.
    let run = |poll: Option<&(dyn Fn() + Sync)>, pause: Duration| -> (f64, f64) {
        let stop = AtomicBool::new(false);
        let ops = AtomicU64::new(0);
        let mut polls = 0u64;
        let barrier = Barrier::new(2);
        let polls_per_s = std::thread::scope(|s| {
            s.spawn(|| {
                barrier.wait();
                let t = Instant::now();
                let mut n = 0u64;
                while t.elapsed() < Duration::from_millis(1000) {
                    for _ in 0..256 {
                        drop(black_box(arena.alloc(0).unwrap()));
                    }
                    n += 256;
                }
                ops.store(n, Relaxed);
                stop.store(true, Relaxed);
            });
            barrier.wait();
            let t = Instant::now();
            while !stop.load(Relaxed) {
                match poll {
                    Some(f) => {
                        f();
                        polls += 1;
                        if !pause.is_zero() {
                            std::thread::sleep(pause);
                        }
                    }
                    None => std::thread::sleep(Duration::from_millis(1)),
                }
            }
            polls as f64 / t.elapsed().as_secs_f64()
        });
        (ops.load(Relaxed) as f64 / 1e6, polls_per_s)
    };
    let fp = || {
        black_box(arena.free_pages());
    };
    let fs = || {
        black_box(arena.frag_stats());
    };
    for _ in 0..2 {
        let (quiet, _) = run(None, Duration::ZERO);
        let (tight, tight_polls) = run(Some(&fp), Duration::ZERO);
        let (paced, paced_polls) = run(Some(&fp), Duration::from_micros(50));
        let (frag, frag_polls) = run(Some(&fs), Duration::ZERO);
        println!(
            "  alloc+free order 0, M ops/s: nobody polling {quiet:>6.2} | free_pages() polled nonstop {tight:>6.2} \
             ({:.0} polls/s) | sleeping 50 µs between polls {paced:>6.2} ({:.0} polls/s) | baseline: frag_stats() \
             nonstop {frag:>6.2} ({frag_polls:.0} polls/s)",
            tight_polls, paced_polls
        );
    }
    drop(keep);
}

/// Voluntary context switches of the calling thread so far: the times it
/// blocked (parked on a lock, slept), as opposed to being preempted.
fn blocked_so_far() -> u64 {
    // SAFETY: `rusage` is plain integers and `timeval`s: all-zero bytes are
    // a valid value.
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    // SAFETY: `getrusage` writes the struct we lend it and nothing else.
    unsafe { libc::getrusage(libc::RUSAGE_THREAD, &mut usage) };
    usage.ru_nvcsw as u64
}

/// Worst latency (ns) of `op` run in a loop on another thread while `during`
/// runs here, the number of `op`s that overlapped `during`, and how many
/// times the `op` thread blocked (voluntary context switches) from 20 ms
/// before `during` to 5 ms after it: a count the machine's load does not
/// inflate, unlike the worst latency.
fn worst_during(op: impl Fn() + Sync, during: impl FnOnce()) -> (u64, u64, u64) {
    let stop = AtomicBool::new(false);
    // 0: before `during`, 1: while it runs, 2: after.
    let window = AtomicU64::new(0);
    let worst = AtomicU64::new(0);
    let count = AtomicU64::new(0);
    let blocked = AtomicU64::new(0);
    let started = Barrier::new(2);
    std::thread::scope(|s| {
        s.spawn(|| {
            for _ in 0..1000 {
                op();
            }
            started.wait();
            let csw = blocked_so_far();
            let mut w = 0;
            let mut n = 0;
            while !stop.load(Relaxed) {
                let before = window.load(Relaxed);
                let t = Instant::now();
                op();
                let ns = t.elapsed().as_nanos() as u64;
                let after = window.load(Relaxed);
                // Counted if it overlapped `during` at all: started or ended
                // inside, or spanned it.
                if before == 1 || after == 1 || (before, after) == (0, 2) {
                    w = w.max(ns);
                    n += 1;
                }
            }
            blocked.store(blocked_so_far() - csw, Relaxed);
            worst.store(w, Relaxed);
            count.store(n, Relaxed);
        });
        started.wait();
        std::thread::sleep(Duration::from_millis(20));
        window.store(1, Relaxed);
        during();
        window.store(2, Relaxed);
        std::thread::sleep(Duration::from_millis(5));
        stop.store(true, Relaxed);
    });
    (worst.load(Relaxed), count.load(Relaxed), blocked.load(Relaxed))
}

fn first_failure() {
    println!("first_failure: worst alloc_movable(0)+drop latency on another thread, tracker of 1 Mi events");
    for _ in 0..5 {
        let arena = PageArena::builder()
            .pages(1 << 16)
            .movable_pages(1 << 15)
            .backing(Backing::Anonymous)
            .tracking(Tracking { capacity: 1 << 20, ..Tracking::default() })
            .build()
            .unwrap();
        let busy = arena.alloc_movable(0).unwrap().into_block();
        let pfn = busy.pfn();
        let op = || drop(black_box(arena.alloc_movable(0).unwrap()));
        let t = Instant::now();
        let (first, n1, b1) = worst_during(op, || {
            assert!(arena.reserve_range(pfn, 1, Reason::Contig).is_err());
        });
        let first_took = t.elapsed();
        let (later, n2, b2) = worst_during(op, || {
            for _ in 0..50 {
                assert!(arena.reserve_range(pfn, 1, Reason::Contig).is_err());
            }
        });
        let (idle, n3, b3) = worst_during(op, || std::thread::sleep(Duration::from_millis(2)));
        println!(
            "  first failure: worst {:>10} ns ({n1} ops, blocked {b1}x, {:.1} ms with setup)   50 later failures: \
             worst {:>8} ns ({n2} ops, blocked {b2}x)   no reservation: worst {:>8} ns ({n3} ops, blocked {b3}x)",
            first,
            first_took.as_secs_f64() * 1e3,
            later,
            idle
        );
        drop(busy);
    }
}

#[inline(never)]
fn armed_get_put(arena: &PageArena, pfn: usize) {
    drop(black_box(arena.get(pfn).unwrap()));
}

/// In a child process: the worst recorded get+put latency while a report
/// resolves its stacks for the first time.
fn report_child(depth: usize) {
    let arena = PageArena::builder()
        .pages(64)
        .tracking(Tracking { capacity: 1 << 20, depth, ..Tracking::default() })
        .build()
        .unwrap();
    let b = arena.alloc(0).unwrap();
    let pfn = b.pfn();
    assert_eq!(arena.arm(pfn..pfn + 1, Reason::Contig), 1);
    for _ in 0..100 {
        armed_get_put(&arena, pfn);
    }
    let mut took = Duration::ZERO;
    let (worst, n, blocked) = worst_during(
        || armed_get_put(&arena, pfn),
        || {
            let t = Instant::now();
            black_box(arena.owner_report().to_string());
            took = t.elapsed();
        },
    );
    println!("RESULT {worst} {n} {} {blocked}", took.as_micros());
}

fn report() {
    println!("report: worst recorded get+put latency (armed page) on another thread while a report resolves symbols");
    println!("        for the first time in the process; one child process per case");
    let exe = std::env::current_exe().unwrap();
    for _ in 0..5 {
        for depth in [16usize, 0] {
            let out = std::process::Command::new(&exe)
                .args(["--bench", "--report-child", &depth.to_string()])
                .output()
                .expect("child");
            let text = String::from_utf8_lossy(&out.stdout);
            let line = text.lines().find(|l| l.starts_with("RESULT")).unwrap_or("RESULT ? ? ? ?");
            let f: Vec<&str> = line.split_whitespace().collect();
            println!(
                "  depth {depth:>2}: worst event {:>10} ns   ({} events during a report of {} µs; recorder blocked {}x)",
                f[1], f[2], f[3], f[4]
            );
        }
    }
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    if !args.iter().any(|a| a == "--bench") {
        return;
    }
    if let Some(i) = args.iter().position(|a| a == "--report-child") {
        report_child(args[i + 1].parse().unwrap());
        return;
    }
    let filter = args.iter().skip(1).find(|a| !a.starts_with("--")).cloned().unwrap_or_default();
    let groups: [(&str, fn()); 4] =
        [("heap_build", heap_build), ("free_pages", free_pages), ("first_failure", first_failure), ("report", report)];
    for (name, f) in groups {
        if name.contains(filter.as_str()) {
            f();
        }
    }
}
