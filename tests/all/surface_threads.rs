//! Handles, errors and arenas across threads and teardown: what is `Send`
//! and `Sync`, arenas kept alive by their last `Arc` handle, leak checks
//! that name what leaked, and counters that add up when threads come and go.

use std::sync::Arc;

use pinowner::{LeakCheck, PageArena, Reason};

#[test]
fn surface_handles_and_errors_are_send_and_sync_as_documented() {
    fn send_sync<T: Send + Sync>() {}
    fn error<T: std::error::Error + Send + Sync + 'static>() {}
    send_sync::<PageArena>();
    send_sync::<PageArena<pinowner::CountsOnly>>();
    send_sync::<pinowner::Block<&PageArena>>();
    send_sync::<pinowner::Block<Arc<PageArena>>>();
    send_sync::<pinowner::PageRef<Arc<PageArena>>>();
    send_sync::<pinowner::PagePin<&PageArena>>();
    send_sync::<pinowner::ContigRun<Arc<PageArena>>>();
    send_sync::<pinowner::allocator::ArenaAllocator>();
    send_sync::<pinowner::Stats>();
    send_sync::<pinowner::OwnerReport>();
    error::<pinowner::BuildError>();
    error::<pinowner::AcquireError>();
    error::<pinowner::ReleaseError>();
    error::<pinowner::AllocError>();
    error::<pinowner::BorrowError>();
    error::<pinowner::ContigError>();
    error::<pinowner::DiscardError>();
    error::<pinowner::ReportError>();
    error::<pinowner::ReportJsonError>();
    error::<pinowner::VerifyError>();
    error::<pinowner::RangePinError>();
    error::<pinowner::LongtermPinError>();
}

fn shared() -> Arc<PageArena> {
    Arc::new(PageArena::builder().pages(64).movable_pages(32).leak_check(LeakCheck::Panic).build().unwrap())
}

#[test]
fn surface_the_last_owned_handle_drops_a_clean_arena_on_any_thread() {
    let arena = shared();
    let block = arena.alloc_owned(1).unwrap();
    let pin = block.pin(0).unwrap();
    let page = block.page_ref(1);
    let run = arena.reserve_contig_owned(8, 8, Reason::Contig).unwrap();
    drop(arena);
    // Each release runs before the handle's `Arc` goes: the arena's leak
    // check (a panic here) finds nothing when the last one drops it.
    std::thread::spawn(move || drop(block)).join().unwrap();
    std::thread::spawn(move || drop(run)).join().unwrap();
    drop(page);
    std::thread::spawn(move || drop(pin)).join().unwrap();
}

#[test]
fn surface_a_leak_check_names_raw_counts_and_their_acquirer() {
    let arena = PageArena::builder().pages(64).leak_check(LeakCheck::Panic).build().unwrap();
    let block = arena.alloc(0).unwrap();
    let pfn = block.pfn();
    let _ = block.into_raw();
    arena.pin_raw(pfn).unwrap();
    let line = line!() - 1;
    let panic = std::panic::catch_unwind(std::panic::AssertUnwindSafe(move || drop(arena))).unwrap_err();
    let msg = panic.downcast_ref::<String>().expect("a formatted message");
    assert!(msg.starts_with("arena dropped with pages still held"), "{msg}");
    assert!(msg.contains(&format!("pfn={pfn:#x} order=0 zone=normal count=1 pincount=1 raw=1r/1p")), "{msg}");
    assert!(msg.contains(&format!("surface_threads.rs:{line}")), "the raw pin's caller: {msg}");
}

#[test]
fn surface_stats_add_up_across_threads_that_exit() {
    let arena = Arc::new(PageArena::builder().pages(1024).movable_pages(256).max_order(6).build().unwrap());
    for round in 1..=3u64 {
        let workers: Vec<_> = (0..3u64)
            .map(|t| {
                let arena = arena.clone();
                std::thread::spawn(move || {
                    let mut held = Vec::new();
                    for i in 0..150u64 {
                        let order = ((i + t) % 4) as u8;
                        if i % 5 == 0 {
                            // A movable block: dropped at once.
                            drop(arena.alloc_movable(order).unwrap());
                            continue;
                        }
                        let b = arena.alloc(order).unwrap();
                        if i % 3 == 0 {
                            held.push(b);
                        }
                    }
                    let stats = arena.stats();
                    assert!(stats.zones.iter().map(|z| z.live_blocks()).sum::<u64>() >= held.len() as u64);
                })
            })
            .collect();
        workers.into_iter().for_each(|w| w.join().unwrap());
        let stats = arena.stats();
        let allocs: u64 = stats.zones.iter().map(|z| z.total_allocs()).sum();
        let frees: u64 = stats.zones.iter().map(|z| z.total_frees()).sum();
        assert_eq!((allocs, frees), (round * 450, round * 450), "round {round}: {stats:?}");
        assert_eq!(arena.free_pages(), arena.pages());
        let frag = arena.frag_stats();
        assert_eq!(frag.zones.iter().map(|z| z.free_pages + z.cached_pages).sum::<usize>(), arena.pages());
    }
    arena.verify().unwrap();
}
