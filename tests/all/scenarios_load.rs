//! Scenarios under load: several threads running reservations, drains,
//! reports, statistics, migrations and pins against one arena at once, for
//! every backing, with and without thread caches, exact and counts-only.
//! Counted in operations, never in time.

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use pinowner::reporting::Reporting;
use pinowner::{Backing, ContigError, CountsOnly, MovableBlock, MoveOutcome, PageArena, Reason, ThreadCache, ZoneKind};

use super::scenarios::{all_back, Lcg};

fn small_cache() -> ThreadCache {
    ThreadCache { batch: 4, high: 16, shards: 4, orders: ThreadCache::KERNEL_ORDERS }
}

fn build(backing: Backing, cache: Option<ThreadCache>) -> PageArena {
    let b = PageArena::builder().pages(1024).movable_pages(512).max_order(6).backing(backing).reporting(Reporting {
        min_order: Some(3),
        batch: 4,
        ..Reporting::default()
    });
    match cache {
        Some(c) => b.thread_cache(c),
        None => b.without_thread_cache(),
    }
    .build()
    .unwrap()
}

/// Sets its flag if dropped while its thread panics.
struct StopOnPanic<'a>(&'a AtomicBool);

impl Drop for StopOnPanic<'_> {
    fn drop(&mut self) {
        if std::thread::panicking() {
            self.0.store(true, Ordering::Relaxed);
        }
    }
}

/// A mixed workload: churners allocating and freeing blocks of orders
/// 0..=4 (normal and movable, some written), a thread reserving windows,
/// and one reporting free pages, draining caches, compacting and reading
/// statistics — all at once. Whatever interleaves, each successful
/// reservation is the size asked for, `free_pages()` never exceeds the
/// arena, and once everything is dropped every page is back and merged.
fn everything_at_once(arena: &PageArena, reporting: bool) {
    let stop = AtomicBool::new(false);
    let runs = AtomicUsize::new(0);
    // Rounds of the reserving and the statistics threads: the churners go
    // on until both have run a while alongside them.
    let rounds = [AtomicUsize::new(0), AtomicUsize::new(0)];
    let rounds = &rounds;
    // Set if the reserving or the statistics thread fails a check: the
    // churners, which wait for their rounds, stop instead of spinning.
    let failed = &AtomicBool::new(false);
    std::thread::scope(|s| {
        let churners: Vec<_> = (0..2u64)
            .map(|t| {
                s.spawn(move || {
                    let mut rng = Lcg(t + 1);
                    let mut held: Vec<Option<pinowner::Block<&PageArena>>> = (0..24).map(|_| None).collect();
                    let mut ops = 0;
                    while !failed.load(Ordering::Relaxed)
                        && (ops < 3000 || rounds.iter().any(|r| r.load(Ordering::Relaxed) < 150))
                    {
                        ops += 1;
                        let r = rng.next();
                        let slot = (r % 24) as usize;
                        if held[slot].take().is_none() {
                            let order = ((r >> 8) % 5) as u8;
                            let got = if r >> 16 & 1 == 0 {
                                arena.alloc(order)
                            } else {
                                arena.alloc_movable(order).map(MovableBlock::into_block)
                            };
                            if let Ok(mut b) = got {
                                if r >> 17 & 3 == 0 {
                                    b.bytes_mut().unwrap().fill(r as u8);
                                }
                                held[slot] = Some(b);
                            }
                        }
                    }
                })
            })
            .collect();
        s.spawn(|| {
            let _guard = StopOnPanic(failed);
            let mut rng = Lcg(99);
            while !stop.load(Ordering::Relaxed) {
                rounds[0].fetch_add(1, Ordering::Relaxed);
                let r = rng.next();
                let got = if r & 1 == 0 {
                    arena.reserve_contig(32, 32, Reason::Contig).map(|run| run.pages())
                } else {
                    let start = 512 + ((r >> 1) % 16) as usize * 32;
                    arena.reserve_range(start, 32, Reason::Shrink).map(|run| run.pages())
                };
                match got {
                    Ok(pages) => {
                        assert_eq!(pages, 32);
                        runs.fetch_add(1, Ordering::Relaxed);
                    }
                    Err(ContigError::Busy(_)) => {}
                    Err(e) => panic!("unexpected {e}"),
                }
            }
        });
        s.spawn(|| {
            let _guard = StopOnPanic(failed);
            let mut i = 0u32;
            while !stop.load(Ordering::Relaxed) {
                i += 1;
                rounds[1].fetch_add(1, Ordering::Relaxed);
                if reporting {
                    arena.report_free(8).unwrap();
                }
                let stats = arena.frag_stats();
                for z in &stats.zones {
                    assert!(z.free_pages <= z.pages, "{stats}");
                    let listed: usize = z.free_blocks.iter().enumerate().map(|(o, n)| n << o).sum();
                    assert!(listed + z.cached_pages + z.reporting_pages <= z.pages, "{stats}");
                }
                assert!(arena.free_pages() <= arena.pages());
                if i.is_multiple_of(3) {
                    arena.drain_thread_caches();
                }
                if i.is_multiple_of(5) {
                    arena.compact(ZoneKind::Movable, 3);
                }
            }
        });
        for c in churners {
            c.join().unwrap();
        }
        stop.store(true, Ordering::Relaxed);
    });
    all_back(arena);
    // Nothing was lost to fragmentation either: the whole movable zone
    // reserves in one piece.
    drop(arena.reserve_contig(512, 512, Reason::Contig).unwrap());
    all_back(arena);
}

#[test]
fn everything_at_once_on_an_anonymous_arena_with_thread_caches_loses_no_page() {
    everything_at_once(&build(Backing::Anonymous, Some(small_cache())), true);
}

#[test]
fn everything_at_once_on_an_anonymous_arena_on_the_zone_path_loses_no_page() {
    everything_at_once(&build(Backing::Anonymous, None), true);
}

#[test]
fn everything_at_once_on_a_hugepage_arena_with_default_caches_loses_no_page() {
    let arena = PageArena::builder()
        .pages(1024)
        .movable_pages(512)
        .max_order(6)
        .backing(Backing::HugeTlb)
        .reporting(Reporting { min_order: Some(2), batch: 2, ..Reporting::default() })
        .build()
        .unwrap();
    everything_at_once(&arena, true);
}

#[test]
fn everything_at_once_on_a_heap_arena_with_one_shard_loses_no_page() {
    // One shard: the second thread has no cache and takes the zone path
    // while the first uses its cache.
    let cache = ThreadCache { shards: 1, ..small_cache() };
    everything_at_once(&build(Backing::Heap, Some(cache)), false);
}

/// Pattern poisoning under the same load (thread caches on and off): no
/// block anyone wrote only while holding it is ever reported as written
/// after free, and every page comes back.
#[test]
fn pattern_poisoning_under_load_reports_no_false_corruption_and_loses_no_page() {
    for cache in [Some(small_cache()), None] {
        let b = PageArena::builder().pages(1024).movable_pages(512).max_order(6).backing(Backing::Anonymous);
        let b = b.poison(pinowner::poison::Poison::Pattern);
        let b = b.reporting(Reporting { min_order: Some(3), batch: 4, ..Reporting::default() });
        let arena = match cache {
            Some(c) => b.thread_cache(c),
            None => b.without_thread_cache(),
        }
        .build()
        .unwrap();
        everything_at_once(&arena, true);
        assert_eq!(arena.poison_errors(), vec![], "cache {cache:?}");
    }
}

/// Protect poisoning under the same load: a block handed out, by the
/// allocator or as part of a reserved run, is always accessible (a
/// `SIGSEGV` here would kill the suite).
#[test]
fn protect_poisoning_under_load_hands_out_only_accessible_memory() {
    let arena = PageArena::builder()
        .pages(512)
        .movable_pages(256)
        .max_order(5)
        .backing(Backing::Anonymous)
        .thread_cache(small_cache())
        .poison(pinowner::poison::Poison::Protect)
        .build()
        .unwrap();
    std::thread::scope(|s| {
        for t in 0..2u64 {
            let arena = &arena;
            s.spawn(move || {
                let mut rng = Lcg(t + 7);
                for _ in 0..300 {
                    let order = (rng.next() % 4) as u8;
                    let mut b = arena.alloc_movable(order).unwrap();
                    b.borrow_mut().unwrap().fill(1);
                    let z = arena.alloc_zeroed(order).unwrap();
                    assert!(z.bytes().iter().all(|&x| x == 0));
                }
            });
        }
        s.spawn(|| {
            for _ in 0..40 {
                if let Ok(run) = arena.reserve_contig(32, 32, Reason::Contig) {
                    // SAFETY: the run is ours alone; its pages were handed out.
                    unsafe { core::ptr::write_bytes(run.as_ptr().as_ptr(), 3, run.len()) };
                }
            }
        });
    });
    let run = arena.reserve_contig(256, 256, Reason::Contig).unwrap();
    // SAFETY: as above.
    unsafe { core::ptr::write_bytes(run.as_ptr().as_ptr(), 3, run.len()) };
    drop(run);
    all_back(&arena);
}

// ----- counts-only arenas shared through Arc ----------------------------

/// An RDMA wrapper that gives up failure-time names for the cheapest
/// counts: an `Arc<PageArena<CountsOnly>>` shared by registration threads,
/// each registering memory regions (owned blocks pinned per page) and
/// deregistering them on another thread. Counts stay exact, a failure
/// counts every holder and attributes none, and every page comes back.
#[test]
fn a_counts_only_arena_shared_by_arc_counts_every_holder_across_threads() {
    let arena: Arc<PageArena<CountsOnly>> =
        Arc::new(PageArena::builder().pages(512).movable_pages(256).max_order(5).attribution().build().unwrap());
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::scope(|s| {
        for t in 0..2usize {
            let arena = Arc::clone(&arena);
            let tx = tx.clone();
            s.spawn(move || {
                for i in 0..40usize {
                    let order = ((t + i) % 3) as u8;
                    let mr = arena.alloc_owned(order).unwrap();
                    let pins: Vec<_> = (0..mr.pages()).map(|p| mr.pin(p).unwrap()).collect();
                    let extra = arena.get_owned(mr.pfn()).unwrap();
                    let again = arena.pin_owned(mr.pfn() + mr.pages() - 1).unwrap();
                    let s = mr.state();
                    assert_eq!((s.refcount, s.pincount), (2, mr.pages() as u32 + 1));
                    tx.send((mr, pins, extra, again)).unwrap();
                }
            });
        }
    });
    drop(tx);
    let regions: Vec<_> = rx.into_iter().collect();
    let held: usize = regions.iter().map(|r| r.0.pages()).sum();
    assert_eq!(arena.free_pages(), 512 - held);
    // A reservation over a registered region counts its holders, names none.
    let (mr, pins, _, _) = &regions[0];
    let start = mr.pfn() / 32 * 32;
    let Err(ContigError::Busy(f)) = arena.reserve_range(start, 32, Reason::Contig) else { panic!("not busy") };
    assert_eq!(f.attributed(), 0, "{f}");
    let block = f.busy.iter().find(|b| b.head == mr.pfn()).expect("the region is named by page");
    assert_eq!(block.holders(), 2 + pins.len() as u32 + 1, "{f}");
    // Deregistration on another thread, in a different order.
    std::thread::scope(|s| {
        s.spawn(move || {
            for (mr, pins, extra, again) in regions.into_iter().rev() {
                drop(again);
                drop(mr);
                drop(pins);
                drop(extra);
            }
        });
    });
    all_back(arena.exact());
}

// ----- a database buffer pool -------------------------------------------

/// A buffer pool: frames in the movable zone, each registered with a mover
/// that keeps the pool's page table (key -> page number) current. Reader
/// threads look frames up, borrow them and check their contents, and take
/// short pins for I/O, while the pool shrinks its top 128 pages (the
/// frames there move) and compacts. Every frame keeps its bytes, the page
/// table always names the frame's page once the shrink is done, and every
/// page comes back.
#[test]
fn a_buffer_pool_shrinks_while_readers_borrow_and_pin_its_frames() {
    for cache in [Some(small_cache()), None] {
        let b = PageArena::builder().pages(512).movable_pages(256).max_order(5);
        let arena = match cache {
            Some(c) => b.thread_cache(c),
            None => b.without_thread_cache(),
        }
        .build()
        .unwrap();
        let table: Arc<Mutex<Vec<usize>>> = Arc::new(Mutex::new(vec![0; 192]));
        let mut frames = Vec::new();
        for key in 0..192usize {
            let t = Arc::clone(&table);
            let mover = move |m: &pinowner::Migration<'_>| {
                t.lock().unwrap()[key] = m.new_pfn();
                MoveOutcome::Moved
            };
            let mut f = arena.alloc_movable_with(0, mover).unwrap();
            f.borrow_mut().unwrap().fill(key as u8);
            table.lock().unwrap()[key] = f.pfn();
            frames.push(f);
        }
        let stop = AtomicBool::new(false);
        std::thread::scope(|s| {
            for t in 0..2u64 {
                let (frames, stop, arena) = (&frames, &stop, &arena);
                s.spawn(move || {
                    let mut rng = Lcg(t + 11);
                    while !stop.load(Ordering::Relaxed) {
                        let key = (rng.next() % 192) as usize;
                        let f = &frames[key];
                        let seen = f.borrow();
                        assert!(seen.bytes().iter().all(|&b| b == key as u8), "frame {key}");
                        drop(seen);
                        if rng.next().is_multiple_of(8) {
                            // A short I/O pin, by page number as a driver would.
                            if let Ok(pin) = arena.pin(f.pfn()) {
                                std::hint::black_box(pin.bytes()[0]);
                            }
                        }
                    }
                });
            }
            let run = arena
                .reserve_range_wait(384, 128, Reason::Shrink, std::time::Duration::from_secs(30))
                .unwrap_or_else(|e| panic!("{e}"));
            assert_eq!(run.range(), 384..512);
            arena.compact(ZoneKind::Movable, 2);
            stop.store(true, Ordering::Relaxed);
            drop(run);
        });
        let table = table.lock().unwrap();
        for (key, f) in frames.iter().enumerate() {
            assert_eq!(table[key], f.pfn(), "the page table follows frame {key}");
            assert!(f.borrow().bytes().iter().all(|&b| b == key as u8), "frame {key}");
        }
        drop(table);
        drop(frames);
        all_back(&arena);
    }
}
