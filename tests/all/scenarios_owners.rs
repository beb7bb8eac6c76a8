//! Scenarios about who is named: overlapping holders across threads and
//! the thread cache's fast path, blocks that moved, several arenas in one
//! process, and threads that exit with pages in their caches.

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;

use pinowner::{
    pin_tracked, Acquirer, Block, ContigError, MoveOutcome, PageArena, PagePin, PageRef, Reason, ThreadCache, ZoneKind,
};

use super::scenarios::{all_back, Lcg};

#[pin_tracked(subsystem = "pool")]
fn pool_frame(arena: &PageArena) -> Block<&PageArena> {
    arena.alloc_movable(0).unwrap().into_block()
}

#[pin_tracked(subsystem = "pool")]
fn pool_frame_owned(arena: &Arc<PageArena>) -> Block<Arc<PageArena>> {
    arena.alloc_movable_owned(0).unwrap().into_block()
}

#[pin_tracked(subsystem = "dma")]
fn dma_pin(arena: &PageArena, pfn: usize) -> PagePin<&PageArena> {
    arena.pin(pfn).unwrap()
}

#[pin_tracked(subsystem = "net")]
fn net_read(arena: &PageArena, pfn: usize) -> PageRef<&PageArena> {
    arena.get(pfn).unwrap()
}

fn subsystem(a: Option<Acquirer>) -> Option<&'static str> {
    a.and_then(|a| a.subsystem())
}

fn with_cache(cache: bool) -> PageArena {
    let b = PageArena::builder().pages(128).movable_pages(64).max_order(5);
    if cache { b } else { b.without_thread_cache() }.build().unwrap()
}

/// A frame allocated by the pool (through the thread cache's inline fast
/// path, and through the zone path) is named for the pool while only the
/// pool holds it; a DMA pin taken on another thread takes the name and
/// keeps it while readers come and go; once the DMA pin is gone the
/// failure never names it, nor a reader who left.
#[test]
fn overlapping_holders_are_named_latest_first_and_departed_ones_never() {
    for cache in [true, false] {
        let arena = with_cache(cache);
        // Warm the cache so the next allocation takes the fast path.
        drop(pool_frame(&arena));
        let frame = pool_frame(&arena);
        let pfn = frame.pfn();
        assert_eq!(subsystem(arena.page_info(pfn).unwrap().acquirer), Some("pool"), "cache {cache}");
        let window = pfn / 32 * 32;
        let busy = |arena: &PageArena| match arena.reserve_range(window, 32, Reason::Contig) {
            Err(ContigError::Busy(f)) => f,
            other => panic!("cache {cache}: {other:?}"),
        };
        let f = busy(&arena);
        assert_eq!((f.holders(), f.attributed()), (1, 1), "cache {cache}: {f}");
        assert_eq!(subsystem(f.busy[0].attributed.map(|(_, a)| a)), Some("pool"));

        let pin = std::thread::scope(|s| s.spawn(|| dma_pin(&arena, pfn)).join().unwrap());
        std::thread::scope(|s| {
            for _ in 0..2 {
                s.spawn(|| {
                    for _ in 0..200 {
                        drop(net_read(&arena, pfn));
                    }
                });
            }
        });
        let f = busy(&arena);
        assert_eq!((f.holders(), f.pins(), f.attributed()), (2, 1, 1), "cache {cache}: {f}");
        assert_eq!(subsystem(f.busy[0].attributed.map(|(_, a)| a)), Some("dma"), "cache {cache}: {f}");
        assert!(f.busy[0].attributed_pin);

        std::thread::scope(|s| {
            s.spawn(move || drop(pin));
        });
        let f = busy(&arena);
        assert_eq!(f.holders(), 1, "cache {cache}: {f}");
        let named = subsystem(f.busy[0].attributed.map(|(_, a)| a));
        assert!(named != Some("dma") && named != Some("net"), "cache {cache}: a departed holder named: {f}");
        drop(frame);
        all_back(&arena);
    }
}

/// The pool's owned frames (`Arc` arena), allocated on worker threads
/// through their caches and handed to a single I/O thread that pins
/// them: every failure's count of holders is exact and names only
/// holders still holding.
#[test]
fn owned_frames_from_worker_caches_pinned_by_an_io_thread_are_counted_exactly() {
    let arena = Arc::new(PageArena::builder().pages(256).movable_pages(128).max_order(5).build().unwrap());
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::scope(|s| {
        for _ in 0..2 {
            let (arena, tx) = (Arc::clone(&arena), tx.clone());
            s.spawn(move || {
                for i in 0..64 {
                    let f = pool_frame_owned(&arena);
                    // Churn the cache in between.
                    if i % 2 == 0 {
                        drop(arena.alloc_movable_owned(0).unwrap());
                    }
                    tx.send(f).unwrap();
                }
            });
        }
    });
    drop(tx);
    let frames: Vec<_> = rx.into_iter().collect();
    let pins: Vec<_> = frames.iter().step_by(3).map(|f| dma_pin(&arena, f.pfn())).collect();
    for start in (128..256).step_by(32) {
        match arena.reserve_range(start, 32, Reason::Contig) {
            Err(ContigError::Busy(f)) => {
                let in_window = frames.iter().filter(|b| (start..start + 32).contains(&b.pfn())).count();
                let pinned = pins.iter().filter(|p| (start..start + 32).contains(&p.pfn())).count();
                assert_eq!(f.holders() as usize, in_window + pinned, "{f}");
                assert_eq!(f.pins() as usize, pinned, "{f}");
                assert_eq!(f.attributed() as usize, in_window, "each frame's latest holder still holds: {f}");
                for b in &f.busy {
                    let who = subsystem(b.attributed.map(|(_, a)| a));
                    let pinned = pins.iter().any(|p| p.pfn() == b.head);
                    assert_eq!(who, Some(if pinned { "dma" } else { "pool" }), "{f}");
                }
            }
            Ok(run) => assert!(frames.iter().all(|b| !run.range().contains(&b.pfn()))),
            Err(e) => panic!("{e}"),
        }
    }
    drop(pins);
    drop(frames);
    all_back(&arena);
}

/// Frames that move keep their data and their name: a movable frame
/// moved by a reservation while other threads pin and unpin it through
/// its handle (pins keep it in place for as long as they live) ends up
/// outside the window, names its latest holder at its new page, and says
/// it moved.
#[test]
fn frames_move_between_pins_and_keep_their_bytes_and_name() {
    for cache in [true, false] {
        let arena = with_cache(cache);
        let moved = Arc::new(AtomicUsize::new(0));
        let frames: Vec<_> = (0..32u8)
            .map(|i| {
                let m = Arc::clone(&moved);
                let mut f = arena
                    .alloc_movable_with(0, move |_: &pinowner::Migration<'_>| {
                        m.fetch_add(1, Ordering::Relaxed);
                        MoveOutcome::Moved
                    })
                    .unwrap();
                f.borrow_mut().unwrap().fill(i);
                f
            })
            .collect();
        let window = frames[0].pfn() / 32 * 32;
        let stop = AtomicBool::new(false);
        std::thread::scope(|s| {
            for t in 0..2u64 {
                let (frames, stop) = (&frames, &stop);
                s.spawn(move || {
                    let mut rng = Lcg(t + 3);
                    while !stop.load(Ordering::Relaxed) {
                        let i = (rng.next() % 32) as usize;
                        let pin = frames[i].pin(0).unwrap();
                        assert!(pin.bytes().iter().all(|&b| b == i as u8), "frame {i} pinned mid-move");
                        drop(pin);
                        let r = frames[i].page_ref(0);
                        assert!(r.bytes().iter().all(|&b| b == i as u8));
                    }
                });
            }
            let run = arena
                .reserve_range_wait(window, 32, Reason::Shrink, std::time::Duration::from_secs(30))
                .unwrap_or_else(|e| panic!("cache {cache}: {e}"));
            stop.store(true, Ordering::Relaxed);
            drop(run);
        });
        for (i, f) in frames.iter().enumerate() {
            assert!(f.borrow().bytes().iter().all(|&b| b == i as u8), "frame {i}");
            if !(window..window + 32).contains(&f.pfn()) && f.migrated().is_some() {
                assert_eq!(f.migrated().unwrap().last_reason, Reason::Shrink);
            }
            let pin = dma_pin(&arena, f.pfn());
            assert_eq!(subsystem(arena.page_info(f.pfn()).unwrap().acquirer), Some("dma"));
            drop(pin);
        }
        assert!(moved.load(Ordering::Relaxed) >= frames.iter().filter(|f| f.migrated().is_some()).count());
        drop(frames);
        all_back(&arena);
    }
}

/// A process with several arenas (a DMA arena and a buffer pool, and
/// short-lived arenas built and dropped over and over, so a new one may
/// land at a dropped one's address): each thread's cache of one arena
/// never hands out another arena's pages, and every arena gets every page
/// back.
#[test]
fn several_arenas_in_one_process_keep_their_thread_caches_apart() {
    let dma = PageArena::builder().pages(256).max_order(4).build().unwrap();
    let pool = PageArena::builder().pages(256).movable_pages(128).max_order(4).build().unwrap();
    std::thread::scope(|s| {
        for t in 0..2u64 {
            let (dma, pool) = (&dma, &pool);
            s.spawn(move || {
                let mut rng = Lcg(t);
                for round in 0..30 {
                    let temp = PageArena::builder().pages(64).max_order(3).build().unwrap();
                    let mut held = Vec::new();
                    for _ in 0..40 {
                        let o = (rng.next() % 3) as u8;
                        let (a, b, c) = (dma.alloc(o).unwrap(), pool.alloc_movable(o).unwrap(), temp.alloc(o).unwrap());
                        assert!(a.pfn() < 256 && b.pfn() < 256 && c.pfn() < 64);
                        assert_eq!(dma.page_state(a.pfn()).unwrap().refcount, 1);
                        assert_eq!(temp.page_state(c.pfn()).unwrap().refcount, 1);
                        if rng.next().is_multiple_of(2) {
                            held.push(a);
                        }
                        drop(b);
                        drop(c);
                    }
                    drop(held);
                    assert_eq!(temp.free_pages(), 64, "round {round}");
                    all_back(&temp);
                }
            });
        }
    });
    all_back(&dma);
    all_back(&pool);
}

/// Worker threads of a pool allocate and free through their caches and
/// exit with pages still cached; new workers take their slots. Nothing is
/// lost: the pages are counted free all along, a reservation of the whole
/// movable zone drains them, and the normal zone's blocks merge again.
#[test]
fn threads_that_exit_with_cached_pages_lose_none_of_them() {
    let cache = ThreadCache { batch: 8, high: 32, shards: 2, orders: ThreadCache::KERNEL_ORDERS };
    let arena = PageArena::builder().pages(512).movable_pages(256).max_order(5).thread_cache(cache).build().unwrap();
    for generation in 0..4u64 {
        std::thread::scope(|s| {
            for t in 0..3u64 {
                let arena = &arena;
                s.spawn(move || {
                    let mut rng = Lcg(generation * 8 + t);
                    let mut held = Vec::new();
                    for _ in 0..200 {
                        let o = (rng.next() % 4) as u8;
                        let b = if rng.next().is_multiple_of(2) {
                            arena.alloc(o).unwrap()
                        } else {
                            arena.alloc_movable(o).unwrap().into_block()
                        };
                        held.push(b);
                        if held.len() > 8 {
                            drop(held.swap_remove((rng.next() % 8) as usize));
                        }
                    }
                });
            }
        });
        assert_eq!(arena.free_pages(), 512, "generation {generation}");
        let stats = arena.frag_stats();
        let z = stats.zone(ZoneKind::Movable).unwrap();
        assert_eq!(z.free_pages + z.cached_pages, 256, "{stats}");
    }
    let run = arena.reserve_contig(256, 256, Reason::Contig).unwrap();
    drop(run);
    all_back(&arena);
}
