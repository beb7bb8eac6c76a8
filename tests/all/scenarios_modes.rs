//! Scenarios in the less common modes: eager tracking for a leak hunt,
//! long-term pins racing reservations, relocation races, the reclaim
//! clock, and handles kept in users' own thread-locals.

use std::cell::RefCell;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use pinowner::{Block, ContigError, MoveOutcome, PageArena, Reason, Tracking, ZoneKind};

use super::scenarios::{all_back, Lcg};

/// A leak hunt: eager tracking on, several threads allocating through the
/// general path, one leaking on purpose. The audit names exactly the
/// leaked blocks; once they are freed nothing stays armed or held.
#[test]
fn an_eager_leak_hunt_names_exactly_the_leaked_blocks_and_disarms_the_rest() {
    let arena = PageArena::builder()
        .pages(256)
        .movable_pages(128)
        .max_order(4)
        .tracking(Tracking { eager: true, depth: 2, capacity: 1 << 14, ..Tracking::default() })
        .build()
        .unwrap();
    let leaked = std::thread::scope(|s| {
        let hs: Vec<_> = (0..2u64)
            .map(|t| {
                let arena = &arena;
                s.spawn(move || {
                    let mut rng = Lcg(t + 21);
                    let mut kept = Vec::new();
                    for i in 0..200 {
                        let o = (rng.next() % 3) as u8;
                        let b = if i % 2 == 0 {
                            arena.alloc(o).unwrap()
                        } else {
                            arena.alloc_movable(o).unwrap().into_block()
                        };
                        let r = b.page_ref(0);
                        drop(b);
                        if t == 0 && i % 50 == 0 {
                            kept.push(r);
                        }
                    }
                    kept
                })
            })
            .collect();
        hs.into_iter().flat_map(|h| h.join().unwrap()).collect::<Vec<_>>()
    });
    let audit = arena.audit();
    assert_eq!(audit.blocks.len(), leaked.len(), "{audit}");
    for r in &leaked {
        assert!(audit.blocks.iter().any(|b| b.head == r.head()), "{audit}");
    }
    assert_eq!(arena.tracker_stats().armed_blocks, leaked.len() as u64);
    drop(leaked);
    assert!(arena.audit().is_clean());
    let stats = arena.tracker_stats();
    assert_eq!((stats.armed_blocks, stats.holds), (0, 0), "{stats:?}");
    all_back(&arena);
}

/// An io_uring wrapper registering buffers for the long term
/// (`FOLL_LONGTERM`) from several threads while the pool reserves the
/// movable zone: each long-term pin ends up in the normal zone with its
/// bytes, never blocks the reservation, and every page comes back.
#[test]
fn longterm_pins_racing_reservations_end_in_the_normal_zone_with_their_bytes() {
    let arena = PageArena::builder().pages(512).movable_pages(256).max_order(5).build().unwrap();
    std::thread::scope(|s| {
        for t in 0..2u8 {
            let arena = &arena;
            s.spawn(move || {
                for i in 0..100u8 {
                    let mut buf = arena.alloc_movable(0).unwrap();
                    buf.borrow_mut().unwrap().fill(t ^ i);
                    let pin = arena.pin_longterm(buf.pfn()).unwrap_or_else(|e| panic!("{e}"));
                    assert_eq!(arena.zone_of(pin.pfn()), Some(ZoneKind::Normal));
                    assert!(pin.bytes().iter().all(|&b| b == t ^ i));
                    let pin2 = buf.pin_longterm(0).unwrap();
                    assert_eq!(pin2.pfn(), pin.pfn());
                    drop((pin, pin2));
                    drop(buf);
                }
            });
        }
        s.spawn(|| {
            for _ in 0..50 {
                match arena.reserve_contig(64, 64, Reason::LongtermPin) {
                    Ok(run) => drop(run),
                    Err(ContigError::Busy(f)) => {
                        assert!(f.busy.iter().all(|b| b.state.pincount == 0 || b.why.is_temporary()), "{f}")
                    }
                    Err(e) => panic!("{e}"),
                }
            }
        });
    });
    all_back(&arena);
}

/// Two threads asking the same shared movable block to relocate at once,
/// while a third borrows it and a reservation runs: the block ends in one
/// place with its bytes, every holder's mover heard each move, and no
/// page is lost.
#[test]
fn concurrent_relocations_of_one_shared_block_keep_it_whole() {
    let arena = PageArena::builder().pages(256).movable_pages(128).max_order(4).build().unwrap();
    let seen = Arc::new(std::sync::Mutex::new(Vec::new()));
    let s1 = Arc::clone(&seen);
    let mut first = arena
        .alloc_movable_with(1, move |m: &pinowner::Migration<'_>| {
            s1.lock().unwrap().push((m.old_pfn(), m.new_pfn()));
            MoveOutcome::Moved
        })
        .unwrap();
    first.borrow_mut().unwrap().fill(0x5a);
    let second = first.share(|_: &pinowner::Migration<'_>| MoveOutcome::Moved);
    let stop = AtomicBool::new(false);
    std::thread::scope(|s| {
        for _ in 0..2 {
            let (first, second) = (&first, &second);
            s.spawn(move || {
                for i in 0..100 {
                    let got = if i % 2 == 0 { first.relocate() } else { second.relocate() };
                    if let Ok(pfn) = got {
                        assert_eq!(pfn % 2, 0);
                    }
                }
            });
        }
        s.spawn(|| {
            while !stop.load(Ordering::Relaxed) {
                let b = second.borrow();
                assert!(b.bytes().iter().all(|&x| x == 0x5a));
            }
        });
        for _ in 0..20 {
            let _ = arena.reserve_contig(16, 16, Reason::Compaction);
        }
        stop.store(true, Ordering::Relaxed);
    });
    assert_eq!(first.pfn(), second.pfn());
    let moves = seen.lock().unwrap().clone();
    if let Some(&(_, last)) = moves.last() {
        assert_eq!(last, first.pfn(), "the mover heard the last move");
    }
    for w in moves.windows(2) {
        assert_eq!(w[0].1, w[1].0, "each move starts where the last ended: {moves:?}");
    }
    assert!(first.borrow().bytes().iter().all(|&x| x == 0x5a));
    drop(first);
    assert_eq!(arena.free_pages(), 254);
    drop(second);
    all_back(&arena);
}

/// A buffer pool's reclaim clock sweeps while idle tracking runs on the
/// same frames and workers touch some of them: neither disturbs the
/// other, and a frame freed and allocated again starts accessed.
#[test]
fn the_reclaim_clock_and_idle_tracking_share_frames_without_disturbing_each_other() {
    let arena = PageArena::builder().pages(128).movable_pages(64).max_order(4).build().unwrap();
    let frames: Vec<_> = (0..32).map(|_| arena.alloc_movable(0).unwrap().into_block()).collect();
    for f in &frames {
        assert!(arena.page_referenced(f.pfn()).unwrap(), "allocation is an access");
        assert!(!arena.page_referenced(f.pfn()).unwrap());
    }
    arena.mark_idle(0..128).unwrap();
    for f in frames.iter().step_by(4) {
        let _ = f.bytes();
    }
    for (i, f) in frames.iter().enumerate() {
        assert_eq!(arena.page_referenced(f.pfn()).unwrap(), i % 4 == 0, "frame {i}");
    }
    let idle = arena.idle_pages(0..128).unwrap();
    assert_eq!(idle.allocated, 32);
    assert_eq!(idle.idle, 24, "the clock's sweep does not hide the accesses from idle tracking");
    // Freed and allocated again: accessed, not idle.
    let pfn = frames[1].pfn();
    drop(frames);
    let again: Vec<_> = (0..32).map(|_| arena.alloc_movable(0).unwrap().into_block()).collect();
    assert!(again.iter().any(|b| b.pfn() == pfn));
    let idle = arena.idle_pages(0..128).unwrap();
    assert_eq!(idle.idle, 0, "new allocations start accessed");
    drop(again);
    all_back(&arena);
}

thread_local! {
    static MY_BUFFERS: RefCell<Vec<Block<Arc<PageArena>>>> = const { RefCell::new(Vec::new()) };
}

struct AllocOnExit(Arc<PageArena>);

impl Drop for AllocOnExit {
    fn drop(&mut self) {
        // A destructor that allocates and frees while the thread exits.
        for o in 0..3 {
            drop(self.0.alloc(o).unwrap());
        }
        let _ = MY_BUFFERS.try_with(|b| b.borrow_mut().clear());
    }
}

thread_local! {
    static ON_EXIT: RefCell<Option<AllocOnExit>> = const { RefCell::new(None) };
}

/// A driver keeps per-thread buffers in its own thread-locals, dropped
/// (and allocated, by another destructor) while the thread exits, in
/// whatever order the runtime runs thread-local destructors: nothing is
/// lost, nothing is cached for a thread that no longer exists in a way
/// a drain cannot return.
#[test]
fn buffers_in_user_thread_locals_dropped_at_thread_exit_all_come_back() {
    let arena = Arc::new(PageArena::builder().pages(256).max_order(4).build().unwrap());
    for round in 0..6 {
        // Joined natively (not scoped threads, whose scope may end before
        // the threads' locals are destroyed): the join waits for them.
        let threads: Vec<_> = (0..3)
            .map(|t| {
                let arena = Arc::clone(&arena);
                std::thread::spawn(move || {
                    if (round + t) % 2 == 0 {
                        ON_EXIT.with(|o| *o.borrow_mut() = Some(AllocOnExit(Arc::clone(&arena))));
                    }
                    MY_BUFFERS.with(|b| {
                        for i in 0..20 {
                            b.borrow_mut().push(arena.alloc_owned((i % 3) as u8).unwrap());
                        }
                    });
                    if (round + t) % 2 == 1 {
                        ON_EXIT.with(|o| *o.borrow_mut() = Some(AllocOnExit(Arc::clone(&arena))));
                    }
                })
            })
            .collect();
        for t in threads {
            t.join().unwrap();
        }
        assert_eq!(arena.free_pages(), 256, "round {round}");
    }
    all_back(&arena);
}
