//! The counts-only attribution policy (issue 12): handles count with one
//! atomic add or subtract; a failure still counts every holder precisely
//! and arms, later events are still recorded with stacks; only the names at
//! the moment of failure are missing, and the owner slot never names a
//! departed holder, whichever policy's handles share a block.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Barrier};

use pinowner::{
    pin_tracked, AcquireError, Block, ContigError, CountsOnly, EventKind, LeakCheck, PageArena, PageFlags, PagePin,
    Reason, Tracking,
};

type Counted = PageArena<CountsOnly>;

/// A counts-only arena whose pages are all in the movable zone, where
/// contiguous reservations are made.
fn counted(pages: usize) -> Counted {
    PageArena::builder().pages(pages).movable_pages(pages).attribution().build().unwrap()
}

/// Blocks of order 0 in the movable zone that stay where they are.
fn frames(arena: &Counted, n: usize) -> Vec<Block<&Counted>> {
    (0..n).map(|_| arena.alloc_movable(0).unwrap().into_block()).collect()
}

#[pin_tracked(subsystem = "dma")]
fn dma_map(arena: &Counted, pfn: usize) -> PagePin<&Counted> {
    arena.pin(pfn).unwrap()
}

#[pin_tracked(subsystem = "dma")]
fn dma_unmap(pin: PagePin<&Counted>) {
    drop(pin)
}

/// A failure over counts-only holders counts each block's references and
/// pins exactly and attributes none of them: no name is better than a
/// departed holder's.
#[test]
fn a_counts_only_failure_counts_every_holder_and_names_none() {
    let arena = counted(64);
    let blocks = frames(&arena, 64);
    let pins: Vec<_> = blocks.iter().step_by(2).map(|b| b.pin(0).unwrap()).collect();
    let refs: Vec<_> = blocks.iter().step_by(4).map(|b| b.page_ref(0).clone()).collect();
    let e = arena.reserve_contig(32, 32, Reason::Contig).unwrap_err();
    let ContigError::Busy(f) = e else { panic!("{e}") };
    assert_eq!(f.busy.len(), 32, "{f}");
    assert_eq!((f.holders(), f.pins(), f.attributed()), (32 + 16 + 8, 16, 0), "{f}");
    assert!(f.busy.iter().all(|b| b.attributed.is_none()), "{f}");
    assert!(f.to_string().contains("56 holders (16 pins), 0 attributed"), "{f}");
    drop((refs, pins, blocks));
    assert_eq!(arena.free_pages(), 64);
    arena.verify().unwrap();
}

/// After a counts-only failure arms its blocks, later pins and unpins are
/// recorded with their stacks and their site, and the unpin is paired with
/// its pin, exactly as under the exact policy.
#[test]
fn a_counts_only_arena_arms_and_records_later_events_with_stacks() {
    let tracking = Tracking { capacity: 4096, depth: 16, ..Tracking::default() };
    let arena: Counted =
        PageArena::builder().pages(64).movable_pages(64).tracking(tracking).attribution().build().unwrap();
    let blocks = frames(&arena, 64);
    let pfn = blocks[5].pfn();
    let e = arena.reserve_contig(32, 32, Reason::Contig).unwrap_err();
    let ContigError::Busy(f) = e else { panic!("{e}") };
    assert_eq!((f.holders(), f.attributed()), (32, 0), "{f}");
    assert!(arena.page_state(pfn).unwrap().flags.contains(PageFlags::TRACKED), "armed");
    let pin = dma_map(&arena, pfn);
    let pin2 = pin.clone();
    dma_unmap(pin2);
    let report = arena.owner_report();
    let page = report.pages.iter().find(|p| p.pfn == pfn).expect("the armed block is reported");
    let held = &page.outstanding;
    assert_eq!(held.len(), 1, "{report}");
    assert_eq!(held[0].kind, EventKind::Pin);
    assert_eq!(held[0].owner.as_ref().and_then(|o| o.subsystem.as_deref()), Some("dma"), "{report}");
    assert!(held[0].stack.is_some(), "the pin's stack is recorded");
    let unpin = page.releases.iter().find(|r| r.kind == EventKind::Unpin).expect("the unpin is recorded");
    assert!(unpin.stack.is_some() && unpin.acquired_by.is_some(), "{report}");
    assert_eq!(page.attributed, None, "counts only: the slot names nobody");
    drop(pin);
    drop(blocks);
    assert_eq!(arena.free_pages(), 64);
}

/// Eager tracking on a counts-only arena records each allocation with its
/// caller and stack, and each later count, while the owner slot names
/// nobody: the record is the answer, the slot never is.
#[test]
fn eager_tracking_on_a_counts_only_arena_records_the_allocator_the_slot_does_not_name() {
    let tracking = Tracking { eager: true, ..Tracking::default() };
    let arena: Counted = PageArena::builder().pages(64).tracking(tracking).attribution().build().unwrap();
    let line = line!() + 1;
    let b = arena.alloc(1).unwrap();
    let r = arena.get(b.pfn() + 1).unwrap();
    let events = arena.tracked_events();
    assert_eq!(events.iter().map(|e| e.kind).collect::<Vec<_>>(), [EventKind::Alloc, EventKind::Get]);
    match events[0].who {
        Some(pinowner::Acquirer::Location(l)) => assert_eq!(l.line(), line),
        other => panic!("{other:?}"),
    }
    assert!(events[0].stack.is_some() && events[1].stack.is_some());
    assert_eq!(arena.page_info(b.pfn()).unwrap().acquirer, None, "the slot names nobody");
    let report = arena.owner_report();
    assert_eq!(report.pages[0].outstanding.len(), 2, "alloc and get are both outstanding");
    drop((r, b));
    assert_eq!(arena.tracker_stats().armed_blocks, 0);
    assert_eq!(arena.free_pages(), 64);
}

/// Exact acquisitions reached through `Deref` (the raw API, a long-term
/// pin) keep their attribution on a counts-only arena, and counts-only
/// handles on the same block never keep a departed exact holder named:
/// once it releases, the block is unattributed while they hold.
#[test]
fn counts_only_holders_never_keep_a_departed_exact_holder_named() {
    let arena: Counted = PageArena::builder().pages(64).attribution().build().unwrap();
    let block = arena.alloc(0).unwrap();
    let pfn = block.pfn();
    let named = |arena: &Counted| arena.page_info(pfn).unwrap().acquirer.is_some();
    assert!(!named(&arena), "a counts-only allocation names nobody");
    arena.pin_raw(pfn).unwrap(); // exact: names this line
    assert!(named(&arena));
    let r = arena.get(pfn).unwrap(); // counts only, by number and by handle
    drop(r.clone());
    let q = block.pin(0).unwrap();
    assert!(named(&arena), "the exact holder still holds");
    arena.unpin_raw(pfn).unwrap();
    assert!(!named(&arena), "departed: never named");
    let s = arena.page_state(pfn).unwrap();
    assert_eq!((s.refcount, s.pincount), (2, 1));
    let long = arena.pin_longterm(pfn).unwrap(); // exact again
    assert!(named(&arena));
    drop((r, q, block));
    assert!(named(&arena), "counts-only releases leave the exact holder named");
    drop(long);
    assert_eq!(arena.free_pages(), 64);
    arena.verify().unwrap();
}

/// A counts-only movable block moves like an exact one, and names nobody
/// wherever it lands: a reservation that moves it out of its window
/// succeeds, and the moved block's handle still counts and frees exactly.
#[test]
fn a_counts_only_movable_block_moves_and_names_nobody_where_it_lands() {
    let arena = counted(64);
    let mut frame = arena.alloc_movable(0).unwrap();
    frame.borrow_mut().unwrap().fill(9);
    let before = frame.pfn();
    let run = arena.reserve_range(before & !31, 32, Reason::Shrink).unwrap();
    assert_ne!(frame.pfn(), before, "moved out of the window");
    assert!(frame.borrow().iter().all(|&b| b == 9));
    assert_eq!(arena.page_info(frame.pfn()).unwrap().acquirer, None);
    let pin = frame.pin(0).unwrap();
    assert_eq!(pin.state().refcount, 1);
    drop((pin, frame, run));
    assert_eq!(arena.free_pages(), 64);
    arena.verify().unwrap();
}

/// Bad input on a counts-only arena gets the same typed errors, naming the
/// page and its state, and leaves the counts as they were.
#[test]
fn counts_only_errors_name_the_page_and_leave_the_counts_unchanged() {
    let arena: Counted = PageArena::builder().pages(16).attribution().build().unwrap();
    assert!(matches!(arena.get(3), Err(AcquireError::Free { pfn: 3, .. })));
    assert!(matches!(arena.pin(99), Err(AcquireError::OutOfRange { pfn: 99, .. })));
    let block = arena.alloc(0).unwrap();
    let first = block.pin(0).unwrap();
    let mut pins = Vec::new();
    let err = loop {
        match first.try_clone() {
            Ok(p) => pins.push(p),
            Err(e) => break e,
        }
    };
    let AcquireError::PinOverflow { pfn, state } = err else { panic!("{err}") };
    assert_eq!((pfn, state.pincount as usize), (block.pfn(), pins.len() + 1), "the refused pin is taken back");
    assert_eq!(arena.page_state(block.pfn()).unwrap().pincount as usize, pins.len() + 1);
    drop((pins, first));
    let mut block = block;
    let bytes = block.bytes_mut().unwrap();
    std::mem::forget(bytes); // a leaked guard lends the block out for good
    assert!(matches!(arena.get(block.pfn()), Err(AcquireError::Exclusive { .. })));
    assert!(matches!(block.pin(0), Err(AcquireError::Exclusive { .. })));
    assert_eq!(arena.page_state(block.pfn()).unwrap().refcount, 1, "refused counts are taken back");
    drop(block);
    assert_eq!(arena.free_pages(), 16);
    arena.verify().unwrap();
}

/// A counts-only get is an access: it clears the idle mark, as an exact
/// one does.
#[test]
fn a_counts_only_get_clears_the_idle_mark() {
    let arena: Counted = PageArena::builder().pages(16).attribution().build().unwrap();
    let block = arena.alloc(0).unwrap();
    arena.mark_idle(0..16).unwrap();
    assert_eq!(arena.idle_pages(0..16).unwrap().idle, 1);
    drop(block.page_ref(0));
    assert_eq!(arena.idle_pages(0..16).unwrap().idle, 0, "the reference was an access");
}

/// The leak check runs for a counts-only arena too.
#[test]
fn a_counts_only_arena_dropped_with_pages_held_fails_its_leak_check() {
    let arena: Counted = PageArena::builder().pages(16).leak_check(LeakCheck::Panic).attribution().build().unwrap();
    let got = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        let arena = arena;
        std::mem::forget(arena.alloc(0).unwrap());
        drop(arena);
    }));
    let msg = got.expect_err("dropping with a page held panics");
    let msg = msg.downcast_ref::<String>().cloned().unwrap_or_default();
    assert!(msg.contains("arena dropped with pages still held"), "{msg}");
}

/// Every operation at once on a counts-only arena shared through `Arc`:
/// threads allocating and freeing through their caches, cloning and
/// dropping references and pins by handle and by number, while two
/// threads reserve over the same zone and drain the caches, and another
/// takes reports. Afterwards nothing is held, nothing lost, the allocator
/// verifies, and no block is attributed to anyone.
#[test]
fn counts_only_handles_under_every_operation_at_once_lose_nothing() {
    let tracking = Tracking { capacity: 1 << 14, depth: 4, ..Tracking::default() };
    let arena: Arc<Counted> =
        Arc::new(PageArena::builder().pages(1024).movable_pages(512).tracking(tracking).attribution().build().unwrap());
    let stop = Arc::new(AtomicBool::new(false));
    let start = Arc::new(Barrier::new(6));
    let mut threads = Vec::new();
    for t in 0..3 {
        let (arena, stop, start) = (arena.clone(), stop.clone(), start.clone());
        threads.push(std::thread::spawn(move || {
            start.wait();
            let (mut held, mut movable) = (Vec::new(), Vec::new());
            let mut i = 0u64;
            while !stop.load(Ordering::Relaxed) || i < 2000 {
                i += 1;
                let order = (i % 3) as u8;
                if let Ok(b) = arena.alloc_owned(order) {
                    let r = b.page_ref(0);
                    let by_number = arena.get_owned(b.pfn()).ok();
                    let pin = arena.pin(b.pfn()).ok();
                    let again = pin.as_ref().map(|p| p.try_clone().unwrap());
                    drop((r.clone(), by_number, again, pin));
                    if i % 7 == t {
                        held.push(r);
                    }
                }
                // Movable blocks: reservations move the ones held without
                // a pin, by-number counts on them keep them in place.
                if let Ok(m) = arena.alloc_movable_owned(order) {
                    if let Ok(p) = arena.pin_owned(m.pfn()) {
                        drop(p.clone());
                    }
                    drop(m.page_ref(0));
                    movable.push(m);
                }
                if held.len() > 40 {
                    held.drain(..20);
                }
                if movable.len() > 30 {
                    movable.drain(..15);
                }
            }
        }));
    }
    for _ in 0..2 {
        let (arena, stop, start) = (arena.clone(), stop.clone(), start.clone());
        threads.push(std::thread::spawn(move || {
            start.wait();
            while !stop.load(Ordering::Relaxed) {
                match arena.reserve_contig(16, 16, Reason::Contig) {
                    Ok(run) => drop(run),
                    Err(ContigError::Busy(f)) => assert_eq!(f.attributed(), 0, "counts only: nobody named\n{f}"),
                    Err(e) => panic!("{e}"),
                }
                arena.drain_thread_caches();
            }
        }));
    }
    {
        let (arena, start) = (arena.clone(), start.clone());
        threads.push(std::thread::spawn(move || {
            start.wait();
            for _ in 0..20 {
                let _ = arena.owner_report().to_string();
                let _ = arena.free_pages();
            }
        }));
    }
    std::thread::sleep(std::time::Duration::from_millis(1500));
    stop.store(true, Ordering::Relaxed);
    for t in threads {
        t.join().unwrap();
    }
    arena.drain_thread_caches();
    assert_eq!(arena.free_pages(), 1024);
    arena.verify().unwrap();
    assert!(arena.audit().is_clean());
}
