//! The arena's counters (`stats()`) and its `tracing` output per module:
//! spans around reservations and an INFO event naming who is in the way.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use pinowner::{pin_tracked, ContigError, PageArena, Reason, ThreadCache, ZoneKind};

#[test]
fn stats_count_allocations_frees_and_failures_by_zone_and_order() {
    let arena = PageArena::builder().pages(64).movable_pages(32).max_order(5).build().unwrap();
    let a = arena.alloc(0).unwrap();
    let b = arena.alloc(3).unwrap();
    let c = arena.alloc_movable(1).unwrap().into_block();
    assert!(arena.alloc(5).is_err(), "a 32-page block no longer fits the normal zone");
    drop((a, b));
    let s = arena.stats();
    assert_eq!(s.zones.len(), 2);
    let (normal, movable) = (&s.zones[0], &s.zones[1]);
    assert_eq!((normal.zone, movable.zone), (ZoneKind::Normal, ZoneKind::Movable));
    assert_eq!(normal.allocs, [1, 0, 0, 1, 0, 0]);
    assert_eq!(normal.frees, [1, 0, 0, 1, 0, 0]);
    assert_eq!(normal.failures, [0, 0, 0, 0, 0, 1]);
    assert_eq!((movable.allocs[1], movable.live_blocks(), normal.live_blocks()), (1, 1, 0));
    drop(c);
    assert_eq!(arena.stats().zones[1].live_blocks(), 0);
}

#[test]
fn stats_sum_the_thread_caches_of_every_thread() {
    let cache = ThreadCache { shards: 4, ..ThreadCache::default() };
    let arena = PageArena::builder().pages(1024).thread_cache(cache).build().unwrap();
    std::thread::scope(|s| {
        for _ in 0..3 {
            s.spawn(|| {
                for _ in 0..100 {
                    drop(arena.alloc(0).unwrap());
                }
                drop(arena.alloc(2).unwrap());
            });
        }
    });
    let normal = &arena.stats().zones[0];
    assert_eq!((normal.allocs[0], normal.frees[0]), (300, 300));
    assert_eq!((normal.allocs[2], normal.frees[2]), (3, 3));
}

#[test]
fn stats_count_reservations_and_their_blocks() {
    let arena = PageArena::builder().pages(64).movable_pages(32).max_order(5).build().unwrap();
    let held = arena.alloc_movable(0).unwrap().into_block();
    // The aligned window of 4 pages around it.
    let pfn = held.pfn() & !3;
    assert!(matches!(arena.reserve_range(pfn, 4, Reason::Contig), Err(ContigError::Busy(_))));
    assert!(matches!(arena.reserve_range(pfn, 0, Reason::Contig), Err(ContigError::ZeroPages)));
    std::thread::scope(|s| {
        s.spawn(move || {
            std::thread::sleep(Duration::from_millis(30));
            drop(held);
        });
        let run = arena.reserve_range_wait(pfn, 4, Reason::Contig, Duration::from_secs(10)).unwrap();
        let r = arena.stats().reservations;
        assert_eq!((r.tried, r.succeeded, r.busy, r.refused, r.pages_reserved), (3, 1, 1, 1, 4));
        assert!(r.retried >= 1, "the wait tried again after the release: {r:?}");
        drop(run);
    });
    // The run's blocks count as allocations of the zone and are freed with it.
    let movable = &arena.stats().zones[1];
    assert!(movable.total_allocs() > 1, "{movable:?}");
    assert_eq!(movable.live_blocks(), 0, "{movable:?}");
    let json: serde_json::Value = serde_json::from_str(&arena.stats().to_json()).unwrap();
    assert_eq!(json["kind"], "stats");
    assert_eq!(json["reservations"]["succeeded"], 1);
    assert_eq!(json["tracker"]["armings"], 1);
}

/// A `tracing` writer into a shared buffer.
#[derive(Clone, Default)]
struct Captured(Arc<Mutex<Vec<u8>>>);

impl std::io::Write for Captured {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// What `f` logs at INFO, with a line for each span closed.
fn info_log(f: impl FnOnce()) -> String {
    let buf = Captured::default();
    let out = buf.clone();
    let subscriber = tracing_subscriber::fmt()
        .with_max_level(tracing::Level::INFO)
        .with_span_events(tracing_subscriber::fmt::format::FmtSpan::CLOSE)
        .with_writer(move || out.clone())
        .with_ansi(false)
        .finish();
    tracing::subscriber::with_default(subscriber, f);
    let bytes = buf.0.lock().unwrap().clone();
    String::from_utf8(bytes).unwrap()
}

#[pin_tracked(subsystem = "io")]
fn in_flight_read<'a>(arena: &'a PageArena, pfn: usize) -> pinowner::PagePin<&'a PageArena> {
    arena.pin(pfn).unwrap()
}

#[test]
fn a_blocked_reservation_names_who_is_in_the_way_at_info_in_its_span() {
    let arena = PageArena::builder().pages(64).movable_pages(32).build().unwrap();
    let block = arena.alloc_movable(0).unwrap().into_block();
    let pin = in_flight_read(&arena, block.pfn());
    let log = info_log(|| {
        assert!(arena.reserve_contig(32, 32, Reason::Shrink).is_err());
    });
    let blocked = log.lines().find(|l| l.contains("reservation blocked by")).unwrap_or_else(|| panic!("{log}"));
    assert!(blocked.contains("pinowner::reserve:"), "{blocked}");
    assert!(blocked.contains("reservation blocked by io/all::stats::in_flight_read"), "{blocked}");
    assert!(blocked.contains("1. io/all::stats::in_flight_read"), "the ranking: {blocked}");
    assert!(blocked.contains("reserve{call=\"reserve_contig\" reason=shrink pages=32"), "inside the span: {blocked}");
    let closed = log.lines().find(|l| l.contains("close")).unwrap_or_else(|| panic!("{log}"));
    assert!(closed.contains("outcome=\"busy\"") && closed.contains("window_start=32"), "{closed}");
    assert!(!log.contains("busy blocks armed"), "arming is a debug event of pinowner::tracker: {log}");
    drop((pin, block));
    let log = info_log(|| drop(arena.reserve_contig(32, 32, Reason::Shrink).unwrap()));
    assert!(log.contains("outcome=\"reserved\""), "{log}");
    assert!(!log.contains("reservation blocked"), "{log}");
}

#[test]
fn stats_count_armed_pages_as_well_as_armed_blocks() {
    let arena = PageArena::builder().pages(64).movable_pages(32).build().unwrap();
    let big = arena.alloc(2).unwrap();
    let small = arena.alloc(0).unwrap();
    assert_eq!(arena.arm(big.pfn()..big.pfn() + 4, Reason::Custom("watch")), 1);
    assert_eq!(arena.arm(small.pfn()..small.pfn() + 1, Reason::Custom("watch")), 1);
    let t = arena.stats().tracker;
    assert_eq!((t.armed_blocks, t.armed_pages), (2, 5));
    drop(big);
    let t = arena.stats().tracker;
    assert_eq!((t.armed_blocks, t.armed_pages), (1, 1));
    assert_eq!(arena.disarm_all(), 1);
    assert_eq!(arena.stats().tracker.armed_pages, 0);
    drop(small);
}

/// `frag_stats()` read while other threads' caches flush to the buddy lists,
/// refill from them and are drained into them never counts a page twice: the caches are held
/// while the lists are read, so listed plus cached pages never exceed the
/// zone. (With the caches let go before the zone lock was taken, a flush in
/// between counted its pages both cached and listed.)
#[test]
fn frag_stats_never_counts_a_page_both_cached_and_listed() {
    use std::sync::atomic::{AtomicBool, Ordering};
    let cache = pinowner::ThreadCache { batch: 8, high: 8, shards: 4, orders: pinowner::ThreadCache::ORDER_0 };
    let arena = PageArena::builder().pages(512).max_order(4).thread_cache(cache).build().unwrap();
    let stop = AtomicBool::new(false);
    std::thread::scope(|s| {
        for _ in 0..2 {
            s.spawn(|| {
                let mut held = Vec::new();
                while !stop.load(Ordering::Relaxed) {
                    // Up to 64 blocks held, then all freed: the list goes
                    // over its high mark and flushes, then refills.
                    while held.len() < 64 {
                        held.push(arena.alloc(0).unwrap());
                    }
                    held.clear();
                }
            });
        }
        // And a drain, as a reservation makes: every cache into the lists.
        s.spawn(|| {
            while !stop.load(Ordering::Relaxed) {
                arena.drain_thread_caches();
            }
        });
        // The workers stop whatever happens here (a failed check included).
        let checked = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            for _ in 0..5_000 {
                for z in &arena.frag_stats().zones {
                    let listed: usize = z.free_blocks.iter().enumerate().map(|(o, n)| n << o).sum();
                    let cached = z.cached_pages;
                    assert!(listed + cached <= z.pages, "listed {listed} + cached {cached} > {}", z.pages);
                }
            }
        }));
        stop.store(true, Ordering::Relaxed);
        if let Err(e) = checked {
            std::panic::resume_unwind(e);
        }
    });
}
