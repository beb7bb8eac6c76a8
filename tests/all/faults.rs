//! Faults in user code and in timing: a subscriber that stalls or panics
//! inside a freeing put, two reservations over one window while a block is
//! in flight, waits that must honour their timeouts. The arena stays
//! consistent ([`PageArena::verify`]) and loses no page.

use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use pinowner::{Block, ContigError, PageArena, PageFlags, Reason, ThreadCache, Tracking};

/// A `tracing` subscriber that calls `f` on every event.
struct OnEvent<F>(F);

impl<F: Fn(&tracing::Event<'_>) + Send + Sync + 'static> tracing::Subscriber for OnEvent<F> {
    fn enabled(&self, _: &tracing::Metadata<'_>) -> bool {
        true
    }
    fn new_span(&self, _: &tracing::span::Attributes<'_>) -> tracing::span::Id {
        tracing::span::Id::from_u64(1)
    }
    fn record(&self, _: &tracing::span::Id, _: &tracing::span::Record<'_>) {}
    fn record_follows_from(&self, _: &tracing::span::Id, _: &tracing::span::Id) {}
    fn event(&self, e: &tracing::Event<'_>) {
        (self.0)(e)
    }
    fn enter(&self, _: &tracing::span::Id) {}
    fn exit(&self, _: &tracing::span::Id) {}
}

/// 64 pages, the upper 32 movable, order-0 thread caches.
fn cached_arena() -> Arc<PageArena> {
    let cache = ThreadCache { batch: 4, high: 16, shards: 8, orders: ThreadCache::ORDER_0 };
    let tracking = Tracking { depth: 4, ..Tracking::default() };
    Arc::new(PageArena::builder().pages(64).movable_pages(32).thread_cache(cache).tracking(tracking).build().unwrap())
}

/// The order-0 movable block at `pfn`, armed (the rest given back).
fn armed_page(arena: &Arc<PageArena>, pfn: usize) -> Block<Arc<PageArena>> {
    let mut all: Vec<_> = (0..32).map(|_| arena.alloc_movable_owned(0).unwrap().into_block()).collect();
    let i = all.iter().position(|b| b.pfn() == pfn).expect("every movable page was allocated");
    let block = all.swap_remove(i);
    drop(all);
    assert_eq!(arena.arm(pfn..pfn + 1, Reason::Custom("test")), 1);
    block
}

/// Drops `block` on a new thread whose subscriber stops inside the freeing
/// put's event, with the page already marked free but not yet in the
/// thread's cache: the block is in flight until the returned sender sends
/// (or is dropped). Returns once the thread is stopped there.
fn free_in_flight(block: Block<Arc<PageArena>>) -> (mpsc::Sender<()>, std::thread::JoinHandle<()>) {
    let (entered_tx, entered_rx) = mpsc::channel();
    let (go_tx, go_rx) = mpsc::channel::<()>();
    let go_rx = Mutex::new(go_rx);
    let entered_tx = Mutex::new(Some(entered_tx));
    let freer = std::thread::spawn(move || {
        let stall = OnEvent(move |_: &tracing::Event<'_>| {
            if let Some(tx) = entered_tx.lock().unwrap().take() {
                tx.send(()).unwrap();
                let _ = go_rx.lock().unwrap().recv();
            }
        });
        tracing::subscriber::with_default(stall, || drop(block));
    });
    entered_rx.recv_timeout(Duration::from_secs(30)).expect("the freeing put records an event");
    (go_tx, freer)
}

fn wait_until(what: &str, f: impl Fn() -> bool) {
    for _ in 0..30_000 {
        if f() {
            return;
        }
        std::thread::sleep(Duration::from_millis(1));
    }
    panic!("timed out waiting until {what}");
}

/// Issue 8.1, deterministic: a reservation whose window holds a block in
/// flight keeps its window isolated between passes; a second reservation
/// overlapping it must wait for it, never carve, commit or roll back pages
/// inside it. (Before the fix the second one committed inside the first
/// one's window, and dropping it left a free page on no list.)
#[test]
fn an_overlapping_reservation_waits_for_one_whose_window_holds_a_block_in_flight() {
    let arena = cached_arena();
    let block = armed_page(&arena, 40);
    let (go, freer) = free_in_flight(block);
    assert!(arena.page_state(40).unwrap().flags.contains(PageFlags::FREE | PageFlags::PCP));
    std::thread::scope(|s| {
        let first = s.spawn(|| arena.reserve_range(32, 12, Reason::Contig));
        wait_until("the first reservation isolated its window", || {
            arena.page_state(33).unwrap().flags.contains(PageFlags::ISOLATED)
        });
        let second = s.spawn(|| arena.reserve_range(40, 4, Reason::Contig).map(|r| r.range()));
        std::thread::sleep(Duration::from_millis(100));
        assert!(!second.is_finished(), "the second reservation ran inside the first one's isolated window");
        go.send(()).unwrap();
        // The first one met the block in flight, waited for it, and
        // committed; the second one came after it and found the run (still
        // held here).
        let run = first.join().unwrap().unwrap();
        assert_eq!(run.range(), 32..44);
        let second = second.join().unwrap();
        assert!(matches!(second, Err(ContigError::Overlap { run: 32..=43, .. })), "{second:?}");
    });
    freer.join().unwrap();
    // The run is dropped: everything is back.
    arena.drain_thread_caches();
    arena.verify().unwrap();
    assert_eq!(arena.free_pages(), 64);
}

/// Issue 8.3: a subscriber panicking inside the freeing put of an armed
/// page (marked free, not yet in the thread's cache) neither unwinds
/// through the arena nor leaves the page in limbo: the put completes, the
/// page lands in the cache, a reservation over it succeeds.
#[test]
fn a_panicking_subscriber_in_a_freeing_put_leaves_no_page_in_limbo() {
    let arena = cached_arena();
    let block = armed_page(&arena, 40);
    let panics_before = arena.tracker_stats().callback_panics;
    let freer = std::thread::spawn(move || {
        let panicky = OnEvent(|_: &tracing::Event<'_>| panic!("a subscriber bug"));
        std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            tracing::subscriber::with_default(panicky, || drop(block))
        }))
        .is_ok()
    });
    assert!(freer.join().unwrap(), "the subscriber's panic unwound out of the put");
    assert!(arena.tracker_stats().callback_panics > panics_before, "the caught panic is counted");
    arena.drain_thread_caches();
    arena.verify().unwrap();
    assert_eq!(arena.free_pages(), 64);
    let run = arena.reserve_range(32, 32, Reason::Contig).unwrap();
    assert_eq!(run.pages(), 32);
}

/// Issue 8.3: `reserve_contig_wait` honours its timeout while its window
/// holds a block in flight (before the fix a 100 ms wait spun until the
/// block landed, seconds later); the failure names the block.
#[test]
fn a_wait_honours_its_timeout_while_a_block_is_in_flight() {
    let arena = cached_arena();
    let block = armed_page(&arena, 40);
    let (go, freer) = free_in_flight(block);
    let (tx, rx) = mpsc::channel();
    let waiter = {
        let arena = arena.clone();
        std::thread::spawn(move || {
            let got = arena.reserve_contig_wait(32, 32, Reason::Contig, Duration::from_millis(100)).map(|r| r.range());
            tx.send(got).unwrap();
        })
    };
    let got = rx.recv_timeout(Duration::from_secs(20));
    go.send(()).unwrap();
    freer.join().unwrap();
    waiter.join().unwrap();
    let got = got.expect("the wait returned while the block was still in flight");
    let Err(ContigError::Busy(f)) = got else { panic!("{got:?}") };
    assert_eq!(f.busy.len(), 1, "{f}");
    assert_eq!(f.busy[0].head, 40);
    assert!(f.busy[0].state.flags.contains(PageFlags::FREE), "named as being freed: {f}");
    assert!(f.waited.unwrap().waited < Duration::from_secs(10));
    arena.drain_thread_caches();
    arena.verify().unwrap();
    assert_eq!(arena.free_pages(), 64);
}

/// Issue 9.5: after a run is dropped, a page of it that someone still
/// holds is an ordinary busy page: a later reservation fails on it (not
/// with an overlap of a run that no longer exists), arms it, and a waiting
/// reservation succeeds once it is let go.
#[test]
fn a_page_of_a_dropped_run_still_held_is_an_ordinary_busy_page() {
    let arena = Arc::new(PageArena::builder().pages(64).movable_pages(32).build().unwrap());
    let run = arena.reserve_range(32, 32, Reason::Contig).unwrap();
    let lent = arena.get_owned(40).unwrap();
    drop(run);
    let flags = arena.page_state(40).unwrap().flags;
    assert!(!flags.contains(PageFlags::CONTIG), "{flags}");
    let e = arena.reserve_contig(32, 32, Reason::Contig).unwrap_err();
    let ContigError::Busy(f) = &e else { panic!("{e}") };
    assert!(f.busy.iter().any(|b| b.pages_in_window.contains(&40)), "{f}");
    assert!(f.attributed() >= 1, "the lender is named: {f}");
    assert!(arena.page_state(40).unwrap().flags.contains(PageFlags::TRACKED));
    let waiter = {
        let arena = arena.clone();
        std::thread::spawn(move || {
            arena.reserve_contig_wait(32, 32, Reason::Contig, Duration::from_secs(60)).map(|r| r.pages())
        })
    };
    std::thread::sleep(Duration::from_millis(20));
    drop(lent);
    assert_eq!(waiter.join().unwrap(), Ok(32));
    arena.verify().unwrap();
}

/// Issue 8.5: in eager mode a later success of a request does not disarm
/// blocks that are still held: every block stays armed until it is freed.
#[test]
fn eager_mode_keeps_held_blocks_armed_after_a_request_succeeds() {
    let tracking = Tracking { eager: true, depth: 0, ..Tracking::default() };
    let arena = Arc::new(PageArena::builder().pages(64).movable_pages(32).tracking(tracking).build().unwrap());
    let mut all: Vec<_> = (0..32).map(|_| arena.alloc_movable_owned(0).unwrap().into_block()).collect();
    let x = all.remove(all.iter().position(|b| b.pfn() == 33).unwrap());
    let y = all.remove(all.iter().position(|b| b.pfn() == 50).unwrap());
    drop(all);
    // Both 16-page windows are busy; then the second one frees up.
    assert!(matches!(arena.reserve_contig(16, 16, Reason::Contig), Err(ContigError::Busy(_))));
    drop(y);
    let run = arena.reserve_contig(16, 16, Reason::Contig).unwrap();
    assert_eq!(run.range(), 48..64);
    assert!(arena.page_state(33).unwrap().flags.contains(PageFlags::TRACKED), "disarmed by the success");
    let before = arena.tracked_events().len();
    drop(arena.get(33).unwrap());
    assert_eq!(arena.tracked_events().len(), before + 2, "the get and put are recorded");
    drop(x);
}

/// Issue 8.6: an alignment no window of the zone can meet is said so, not
/// reported as a size larger than the zone.
#[test]
fn an_alignment_no_window_meets_is_named_as_such() {
    let arena = PageArena::builder().pages(256).movable_pages(128).build().unwrap();
    let e = arena.reserve_contig(4, 1 << 20, Reason::Contig).unwrap_err();
    assert!(matches!(e, ContigError::NoAlignedWindow { pages: 4, align: 0x100000, .. }), "{e:?}");
    assert_eq!(e.to_string(), "no window of 4 pages aligned to 1048576 pages fits the movable zone 0x80..0x100");
    assert!(matches!(arena.reserve_contig(256, 1, Reason::Contig), Err(ContigError::TooLarge { .. })));
}
