//! Movers' callback contract, waits with deadlines and idle marks across a
//! move: what a holder of a movable block sees when its block moves.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use pinowner::{Migration, MoveOutcome, Mover, PageArena, Reason, ZoneKind};

fn arena(normal: usize, movable: usize) -> PageArena {
    PageArena::builder().pages(normal + movable).movable_pages(movable).build().unwrap()
}

/// A page table entry: reads the frame's header at the new address through
/// the arena's raw pointer when asked to follow, as a buffer pool checks
/// the frame it now points at.
struct HeaderReader {
    arena: Arc<PageArena>,
    seen: Arc<Mutex<Vec<u64>>>,
}

impl Mover for HeaderReader {
    fn migrate(&self, m: &Migration<'_>) -> MoveOutcome {
        let p = self.arena.pfn_to_ptr(m.new_pfn()).unwrap();
        // SAFETY: the new block belongs to this migration, which promises
        // the bytes are copied before a mover that does not copy is asked;
        // nobody writes it meanwhile.
        let header = unsafe { p.cast::<u64>().as_ptr().read_unaligned() };
        self.seen.lock().unwrap().push(header);
        MoveOutcome::Moved
    }
}

/// Copies the bytes itself (a mover that compresses, or copies only what
/// is live).
struct Copier;

impl Mover for Copier {
    fn migrate(&self, m: &Migration<'_>) -> MoveOutcome {
        m.copy_with(|old, new| new.copy_from_slice(old));
        MoveOutcome::Moved
    }
    fn copies_bytes(&self) -> bool {
        true
    }
}

#[test]
fn moves_a_mover_asked_before_a_copying_mover_finds_the_bytes_already_at_the_new_address() {
    let arena = Arc::new(arena(64, 64));
    let seen = Arc::new(Mutex::new(Vec::new()));
    let mut frame =
        arena.alloc_movable_owned_with(0, HeaderReader { arena: arena.clone(), seen: seen.clone() }).unwrap();
    frame.borrow_mut().unwrap()[..8].copy_from_slice(&0x5eed_f00d_u64.to_ne_bytes());
    let copier = frame.share(Copier);
    let before = frame.pfn();
    let run = arena.reserve_range(64, 64, Reason::Shrink).unwrap();
    assert_ne!(frame.pfn(), before);
    assert_eq!(*seen.lock().unwrap(), [0x5eed_f00d], "the first mover read the header at the new address");
    assert_eq!(copier.borrow()[..8], 0x5eed_f00d_u64.to_ne_bytes());
    drop((run, copier, frame));
    arena.verify().unwrap();
    assert_eq!(arena.free_pages(), 128);
}

/// A mover whose `copies_bytes` panics.
struct PanicsWhenAsked;

impl Mover for PanicsWhenAsked {
    fn migrate(&self, _: &Migration<'_>) -> MoveOutcome {
        MoveOutcome::Moved
    }
    fn copies_bytes(&self) -> bool {
        panic!("moves: a mover's copies_bytes panics (expected by the test)")
    }
}

#[test]
fn moves_a_mover_that_panics_in_copies_bytes_refuses_and_leaves_the_block_usable() {
    let arena = arena(64, 64);
    let mut frame = arena.alloc_movable_with(0, PanicsWhenAsked).unwrap();
    frame.borrow_mut().unwrap().fill(0x42);
    let at = frame.pfn();
    let free = arena.free_pages();
    let r = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| arena.reserve_range(64, 64, Reason::Shrink)));
    let r = r.expect("a mover's panic never unwinds out of the arena");
    assert!(r.is_err(), "the block refused (its mover panicked)");
    assert_eq!(frame.pfn(), at);
    let b = frame.try_borrow().expect("the block is not left frozen");
    assert!(b.iter().all(|&x| x == 0x42));
    drop(b);
    assert!(frame.borrow_mut().is_ok(), "nor lent out");
    assert_eq!(arena.free_pages(), free, "no destination leaked");
    arena.verify().unwrap();
    drop(frame);
    assert_eq!(arena.free_pages(), 128);
}

#[test]
fn moves_a_wait_with_a_deadline_already_past_still_moves_what_is_movable() {
    let arena = arena(64, 64);
    let mut frames: Vec<_> = (0..8).map(|_| arena.alloc_movable(0).unwrap()).collect();
    for (i, f) in frames.iter_mut().enumerate() {
        f.borrow_mut().unwrap().fill(i as u8 + 1);
    }
    // The deadline is an input: nothing in the window has to be waited for,
    // so a zero wait does what `reserve_contig` does.
    let run = arena.reserve_contig_wait(64, 64, Reason::Shrink, Duration::ZERO).unwrap();
    assert_eq!(run.range(), 64..128);
    for (i, f) in frames.iter().enumerate() {
        assert_eq!(arena.zone_of(f.pfn()), Some(ZoneKind::Normal));
        assert!(f.borrow().iter().all(|&x| x == i as u8 + 1));
    }
    drop(run);
    // The same for a range: the frames move back to the movable zone.
    let run = arena.reserve_range_wait(0, 64, Reason::Shrink, Duration::ZERO).unwrap();
    for (i, f) in frames.iter().enumerate() {
        assert_eq!(arena.zone_of(f.pfn()), Some(ZoneKind::Movable));
        assert!(f.borrow().iter().all(|&x| x == i as u8 + 1));
    }
    drop(run);
    drop(frames);
    arena.verify().unwrap();
    assert_eq!(arena.free_pages(), 128);
}

#[test]
fn moves_a_block_nobody_touched_stays_idle_after_it_moves() {
    let arena = arena(64, 64);
    let frames: Vec<_> = (0..4).map(|_| arena.alloc_movable(0).unwrap()).collect();
    assert_eq!(arena.mark_idle(0..128).unwrap(), 4);
    let c = arena.reserve_range(64, 64, Reason::Shrink).unwrap();
    let idle = arena.idle_pages(0..128).unwrap();
    assert_eq!((idle.allocated, idle.idle), (64 + 4, 4), "a move is not an access");
    for f in &frames {
        assert!(idle.is_idle(f.pfn()));
    }
    // An access after the move clears it, as before.
    let _ = frames[0].borrow()[0];
    let idle = arena.idle_pages(0..128).unwrap();
    assert_eq!(idle.idle, 3);
    assert!(!idle.is_idle(frames[0].pfn()));
    drop(c);
}

#[test]
fn moves_the_reclaim_clock_does_not_see_a_move_as_a_reference() {
    let arena = arena(64, 64);
    let frame = arena.alloc_movable(0).unwrap();
    assert!(arena.page_referenced(frame.pfn()).unwrap(), "allocation is an access");
    assert!(!arena.page_referenced(frame.pfn()).unwrap());
    frame.relocate().unwrap();
    assert!(!arena.page_referenced(frame.pfn()).unwrap(), "moved, not referenced");
    let _ = frame.borrow()[0];
    assert!(arena.page_referenced(frame.pfn()).unwrap());
}

#[test]
fn moves_a_longterm_pin_through_the_handle_always_lands_on_the_handles_block() {
    let arena = arena(256, 256);
    let frames: Vec<_> = (0..16).map(|_| arena.alloc_movable(0).unwrap()).collect();
    let stop = AtomicBool::new(false);
    let errors = AtomicU64::new(0);
    let iters = 2000;
    /// Stops the mover thread even if an assertion fails (or the scope
    /// would wait for it for ever).
    struct Stop<'a>(&'a AtomicBool);
    impl Drop for Stop<'_> {
        fn drop(&mut self) {
            self.0.store(true, Ordering::Relaxed);
        }
    }
    std::thread::scope(|s| {
        let _stop = Stop(&stop);
        s.spawn(|| {
            // Moves the blocks back and forth between the zones.
            while !stop.load(Ordering::Relaxed) {
                for f in &frames {
                    let _ = f.relocate();
                }
                arena.compact(ZoneKind::Normal, 0);
            }
        });
        for i in 0..iters {
            let f = &frames[i % frames.len()];
            match f.pin_longterm(0) {
                Ok(pin) => {
                    assert_eq!(pin.pfn(), f.pfn(), "the pin is on the handle's own block");
                    assert_eq!(arena.zone_of(pin.pfn()), Some(ZoneKind::Normal));
                }
                Err(e) => {
                    errors.fetch_add(1, Ordering::Relaxed);
                    assert!(!matches!(e, pinowner::LongtermPinError::Acquire(_)), "{e}");
                }
            }
        }
    });
    drop(frames);
    arena.verify().unwrap();
    assert_eq!(arena.free_pages(), 512);
}

#[test]
fn moves_an_idle_frame_accessed_after_its_move_is_not_idle() {
    let arena = arena(64, 64);
    let frames: Vec<_> = (0..3).map(|_| arena.alloc_movable(0).unwrap()).collect();
    arena.mark_idle(0..128).unwrap();
    // A long-term pin moves the first frame to the normal zone, then pins
    // it: the pin is an access at the new address.
    let pin = frames[0].pin_longterm(0).unwrap();
    // The second moves, then a second holder joins it.
    frames[1].relocate().unwrap();
    let share = frames[1].share(|_: &Migration<'_>| MoveOutcome::Moved);
    let idle = arena.idle_pages(0..128).unwrap();
    assert!(!idle.is_idle(frames[0].pfn()), "pinned after the move");
    assert!(!idle.is_idle(frames[1].pfn()), "shared after the move");
    assert!(idle.is_idle(frames[2].pfn()), "untouched");
    assert_eq!(idle.idle, 1);
    drop((pin, share));
}

/// A mover that panics when asked to follow its block.
struct PanicsOnMove;

impl Mover for PanicsOnMove {
    fn migrate(&self, _: &Migration<'_>) -> MoveOutcome {
        panic!("moves: a mover panics (expected by the test)")
    }
}

#[test]
fn moves_a_mover_that_panics_refuses_and_the_other_holders_are_put_back() {
    let arena = arena(64, 64);
    let putbacks = Arc::new(AtomicU64::new(0));
    struct CountsPutbacks(Arc<AtomicU64>);
    impl Mover for CountsPutbacks {
        fn migrate(&self, _: &Migration<'_>) -> MoveOutcome {
            MoveOutcome::Moved
        }
        fn putback(&self, _: &Migration<'_>) {
            self.0.fetch_add(1, Ordering::Relaxed);
        }
    }
    let mut frame = arena.alloc_movable_with(0, CountsPutbacks(putbacks.clone())).unwrap();
    frame.borrow_mut().unwrap().fill(9);
    let panicking = frame.share(PanicsOnMove);
    let at = frame.pfn();
    let free = arena.free_pages();
    let e = arena.reserve_range(64, 64, Reason::Shrink).unwrap_err();
    let pinowner::ContigError::Busy(f) = e else { panic!("{e}") };
    assert!(matches!(f.busy[0].why, pinowner::Unmovable::Refused { temporary: false, .. }), "{f}");
    assert_eq!(putbacks.load(Ordering::Relaxed), 1, "the holder that moved was put back");
    assert_eq!((frame.pfn(), panicking.pfn()), (at, at));
    assert!(panicking.try_borrow().expect("not left frozen").iter().all(|&x| x == 9));
    assert_eq!(arena.free_pages(), free, "the destination went back");
    arena.verify().unwrap();
    drop((panicking, frame));
    assert_eq!(arena.free_pages(), 128);
}

#[test]
fn moves_a_wait_ends_when_the_query_pinning_a_movable_frame_lets_go_and_the_frame_moves() {
    let arena = arena(64, 64);
    let mut frame = arena.alloc_movable(0).unwrap();
    frame.borrow_mut().unwrap().fill(3);
    let pin = frame.pin(0).unwrap();
    std::thread::scope(|s| {
        s.spawn(move || {
            std::thread::sleep(Duration::from_millis(30));
            drop(pin);
        });
        let run = arena.reserve_contig_wait(64, 64, Reason::Shrink, Duration::from_secs(20)).unwrap();
        assert_eq!(run.range(), 64..128);
    });
    assert_eq!(arena.zone_of(frame.pfn()), Some(ZoneKind::Normal));
    assert!(frame.borrow().iter().all(|&x| x == 3));
}
