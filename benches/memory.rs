//! Descriptor memory per page, measured: resident memory of a 1 Mi-page
//! anonymous arena, divided by its page count, untouched and after every
//! page has been allocated once (every descriptor written); then what arming
//! one page and recording its events adds.

use pinowner::{Backing, PageArena};

fn rss_bytes() -> usize {
    let statm = std::fs::read_to_string("/proc/self/statm").expect("/proc/self/statm");
    let resident: usize = statm.split_whitespace().nth(1).unwrap().parse().unwrap();
    resident * 4096
}

fn main() {
    // `cargo bench` passes `--bench`; test runners listing or running bench
    // targets in test mode do not, and get nothing to run.
    if !std::env::args().any(|a| a == "--bench") {
        return;
    }
    const PAGES: usize = 1 << 20;
    let before = rss_bytes();
    let arena = PageArena::builder().pages(PAGES).backing(Backing::Anonymous).build().unwrap();
    let built = rss_bytes();
    println!(
        "1 Mi-page anonymous arena (4 GiB of address space), fresh: {:.2} bytes resident per page",
        (built - before) as f64 / PAGES as f64
    );
    // Allocate every page as order 0 (writes every descriptor), then free all.
    let all: Vec<_> = (0..PAGES).map(|_| arena.alloc(0).unwrap()).collect();
    let held = rss_bytes();
    drop(all);
    let freed = rss_bytes();
    println!(
        "after allocating every page once: {:.2} bytes resident per page (free-list and handle vectors included: {:.2} while all {} blocks were held)",
        (freed - before) as f64 / PAGES as f64,
        (held - before) as f64 / PAGES as f64,
        PAGES
    );
    // Tracking costs nothing until a failure arms a page; then the tracker
    // (event queue, stack depot, an 8-byte-per-page side table from a
    // zeroed, lazily mapped allocation) comes into being.
    let block = arena.alloc(0).unwrap();
    let before_arm = rss_bytes();
    arena.arm(block.pfn()..block.pfn() + 1, pinowner::Reason::Contig);
    for _ in 0..1000 {
        drop(block.page_ref(0));
    }
    let armed = rss_bytes();
    println!(
        "after arming one page and recording 2001 events: +{} KiB resident ({} events kept, {} distinct stacks, {} B in the depot)",
        (armed - before_arm) / 1024,
        arena.tracked_events().len(),
        arena.tracker_stats().depot.unique_stacks,
        arena.tracker_stats().depot.bytes
    );
    drop(block);
    drop(arena);
}
