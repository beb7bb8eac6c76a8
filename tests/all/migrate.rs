//! Migration: movable blocks move out of a reservation's window; movers
//! follow them; pins, borrows, holders without movers and refusals keep
//! them, and the failure says which and why.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use pinowner::{
    pin_scope, AcquireError, ContigError, EventKind, MovableBlock, MoveOutcome, PageArena, Reason, Unmovable, ZoneKind,
};

/// 2 MiB windows of 4 KiB pages.
const WINDOW: usize = 512;

fn arena(normal: usize, movable: usize) -> PageArena {
    PageArena::builder().pages(normal + movable).movable_pages(movable).build().unwrap()
}

fn busy(e: ContigError) -> Box<pinowner::ContigFailure> {
    match e {
        ContigError::Busy(f) => f,
        other => panic!("expected a busy failure, got {other}"),
    }
}

/// Fills `n` order-0 movable blocks, each with its own canary byte.
fn fill(arena: &PageArena, n: usize) -> Vec<(MovableBlock<&PageArena>, u8)> {
    (0..n)
        .map(|i| {
            let mut b = arena.alloc_movable(0).unwrap();
            let canary = (i % 251) as u8 + 1;
            b.borrow_mut().unwrap().fill(canary);
            (b, canary)
        })
        .collect()
}

fn check(blocks: &[(MovableBlock<&PageArena>, u8)]) {
    for (b, canary) in blocks {
        let bytes = b.borrow();
        assert!(bytes.iter().all(|x| x == canary), "block now at {:#x} lost its bytes", b.pfn());
    }
}

#[test]
fn a_reservation_in_a_movable_zone_90_percent_full_of_movable_blocks_succeeds_every_time() {
    // 8 windows of 2 MiB in the movable zone, 90% of its pages held by
    // order-0 movable blocks spread over every window; a small normal zone.
    let movable = 8 * WINDOW;
    let arena = arena(256, movable);
    let mut blocks = fill(&arena, movable);
    // Free every tenth so the holes spread through all windows.
    let mut i = 0;
    blocks.retain(|_| {
        i += 1;
        i % 10 != 0
    });
    for round in 0..4 {
        let run = arena.reserve_contig(WINDOW, WINDOW, Reason::Contig).unwrap_or_else(|e| panic!("round {round}: {e}"));
        let window = run.range();
        for (b, _) in &blocks {
            assert!(!window.contains(&b.pfn()), "a block still in the reserved window");
        }
        check(&blocks);
        drop(run);
    }
    arena.verify().unwrap();
    drop(blocks);
    assert_eq!(arena.free_pages(), arena.pages());
}

#[test]
fn with_one_pinned_page_in_every_window_the_failure_names_the_pinner_and_moves_nothing_else() {
    let arena = arena(WINDOW, 4 * WINDOW);
    let blocks = fill(&arena, 4 * WINDOW - 64);
    // One pin per window.
    let mut pins = Vec::new();
    for w in 0..4 {
        let start = WINDOW + w * WINDOW;
        let b = blocks.iter().find(|(b, _)| (start..start + WINDOW).contains(&b.pfn())).unwrap();
        pins.push(pin_scope!("nic::rx_refill", subsystem = "dma", { b.0.pin(0).unwrap() }));
    }
    let f = busy(arena.reserve_contig(WINDOW, WINDOW, Reason::Contig).unwrap_err());
    let pinned: Vec<_> = f.busy.iter().filter(|b| b.why == Unmovable::Pinned).collect();
    assert_eq!(pinned.len(), 1, "{f}");
    let who = pinned[0].attributed.expect("the pinner is named").1;
    assert_eq!(who.subsystem(), Some("dma"));
    assert!(f.to_string().contains("unmovable: pinned"), "{f}");
    // Nothing else stood in the way: every other busy block could move,
    // and none was moved for nothing.
    assert_eq!(f.busy.len(), 1, "{f}");
    let in_window = blocks.iter().filter(|(b, _)| f.window.contains(&b.pfn())).count();
    assert_eq!(f.movable + 1, in_window, "{f}");
    // The other windows' pinners are named too: one failure, every holder
    // to ask.
    assert_eq!(f.elsewhere.len(), 3, "{f}");
    for b in &f.elsewhere {
        assert_eq!(b.why, Unmovable::Pinned);
        assert_eq!(b.attributed.map(|(_, a)| a.subsystem()), Some(Some("dma")), "{f}");
        assert!(!f.window.contains(&b.head));
    }
    check(&blocks);
    drop(pins);
    let run = arena.reserve_contig(WINDOW, WINDOW, Reason::Contig).unwrap();
    check(&blocks);
    drop(run);
    arena.verify().unwrap();
}

#[test]
fn a_page_number_taken_before_a_move_never_reaches_the_new_owner() {
    let arena = arena(64, 64);
    let mut b = arena.alloc_movable(0).unwrap();
    b.borrow_mut().unwrap().fill(0xAB);
    let old = b.pfn();
    let run = arena.reserve_range(old, 1, Reason::Shrink).unwrap();
    assert_ne!(b.pfn(), old);
    // The old page now belongs to the run: a get by the stale number is
    // refused as it would be for any page of a run... and once the run is
    // dropped, the page is free.
    drop(run);
    assert!(matches!(arena.get(old), Err(AcquireError::Free { .. })));
    assert!(b.borrow().iter().all(|&x| x == 0xAB));
}

#[test]
fn a_live_borrow_keeps_the_block_where_it_is() {
    let arena = arena(64, 64);
    let b = arena.alloc_movable(0).unwrap();
    let pfn = b.pfn();
    let borrow = b.borrow();
    let f = busy(arena.reserve_range(pfn, 1, Reason::Shrink).unwrap_err());
    assert_eq!(f.busy[0].why, Unmovable::Borrowed);
    assert!(f.busy[0].why.is_temporary());
    assert_eq!(borrow.pfn(), pfn);
    drop(borrow);
    let run = arena.reserve_range(pfn, 1, Reason::Shrink).unwrap();
    assert_ne!(b.pfn(), pfn);
    drop(run);
}

#[test]
fn a_mover_hears_old_and_new_and_finds_the_bytes_copied() {
    let arena = arena(64, 64);
    let table: Arc<Mutex<HashMap<u32, usize>>> = Arc::default();
    let t = table.clone();
    let copied_ok = Arc::new(AtomicU32::new(0));
    let c = copied_ok.clone();
    let mut b = arena
        .alloc_movable_with(1, move |m: &pinowner::Migration<'_>| {
            let mut t = t.lock().unwrap();
            assert_eq!(t.insert(7, m.new_pfn()), Some(m.old_pfn()), "the mover's table named the old block");
            assert_eq!(m.order(), 1);
            c.store(u32::from(m.old_bytes()[0] == 0x5A), Ordering::Relaxed);
            MoveOutcome::Moved
        })
        .unwrap();
    b.borrow_mut().unwrap().fill(0x5A);
    table.lock().unwrap().insert(7, b.pfn());
    let old = b.pfn();
    let run = arena.reserve_range(old, 2, Reason::Shrink).unwrap();
    assert_eq!(table.lock().unwrap()[&7], b.pfn());
    assert_eq!(copied_ok.load(Ordering::Relaxed), 1);
    assert!(b.borrow().iter().all(|&x| x == 0x5A));
    let info = arena.page_info(b.pfn()).unwrap();
    assert_eq!(info.migrated.map(|m| (m.times, m.last_reason)), Some((1, Reason::Shrink)));
    assert!(info.state.flags.contains(pinowner::PageFlags::MOVABLE));
    drop(run);
    // Moved again: the history follows the data.
    let again = arena.reserve_range(b.pfn(), 2, Reason::Compaction).unwrap();
    let info = arena.page_info(b.pfn()).unwrap();
    assert_eq!(info.migrated.map(|m| (m.times, m.last_reason)), Some((2, Reason::Compaction)));
    drop(again);
}

/// A mover that answers from a script and counts putbacks.
struct Scripted {
    answers: Mutex<Vec<MoveOutcome>>,
    putbacks: Arc<AtomicU32>,
}

impl pinowner::Mover for Scripted {
    fn migrate(&self, _: &pinowner::Migration<'_>) -> MoveOutcome {
        let mut a = self.answers.lock().unwrap();
        if a.len() > 1 {
            a.remove(0)
        } else {
            a[0]
        }
    }

    fn putback(&self, _: &pinowner::Migration<'_>) {
        self.putbacks.fetch_add(1, Ordering::Relaxed);
    }
}

fn scripted(answers: &[MoveOutcome], putbacks: &Arc<AtomicU32>) -> Scripted {
    Scripted { answers: Mutex::new(answers.to_vec()), putbacks: putbacks.clone() }
}

#[test]
fn one_refusal_puts_back_every_holder_that_moved_and_names_the_refuser() {
    let arena = arena(64, 64);
    let owner_putbacks = Arc::new(AtomicU32::new(0));
    let mut b = arena.alloc_movable_with(0, scripted(&[MoveOutcome::Moved], &owner_putbacks)).unwrap();
    b.borrow_mut().unwrap().fill(3);
    let share_putbacks = Arc::new(AtomicU32::new(0));
    let share =
        pin_scope!("io::register", subsystem = "io", { b.share(scripted(&[MoveOutcome::Refused], &share_putbacks)) });
    let pfn = b.pfn();
    let f = busy(arena.reserve_range(pfn, 1, Reason::Shrink).unwrap_err());
    let Unmovable::Refused { by, temporary } = f.busy[0].why else { panic!("{f}") };
    assert!(!temporary);
    assert_eq!(by.and_then(|a| a.subsystem()), Some("io"));
    assert_eq!(owner_putbacks.load(Ordering::Relaxed), 1, "the owner's move was put back");
    assert_eq!(share_putbacks.load(Ordering::Relaxed), 0, "the refuser moved nothing");
    assert_eq!((b.pfn(), share.pfn()), (pfn, pfn));
    assert!(share.borrow().iter().all(|&x| x == 3));
    assert_eq!(arena.page_state(pfn).unwrap().refcount, 2);
    drop(share);
    drop(b);
    assert_eq!(arena.free_pages(), arena.pages());
    arena.verify().unwrap();
}

#[test]
fn a_busy_mover_is_asked_again_on_a_later_pass() {
    let arena = arena(64, 64);
    let putbacks = Arc::new(AtomicU32::new(0));
    let busy_twice = [MoveOutcome::Busy, MoveOutcome::Busy, MoveOutcome::Moved];
    let b = arena.alloc_movable_with(0, scripted(&busy_twice, &putbacks)).unwrap();
    let pfn = b.pfn();
    let run = arena.reserve_range(pfn, 1, Reason::Shrink).unwrap();
    assert_ne!(b.pfn(), pfn);
    drop(run);
    // Always busy: the failure says so, and that it is temporary.
    let always = arena.alloc_movable_with(0, scripted(&[MoveOutcome::Busy], &putbacks)).unwrap();
    let f = busy(arena.reserve_range(always.pfn(), 1, Reason::Shrink).unwrap_err());
    assert!(matches!(f.busy[0].why, Unmovable::Refused { temporary: true, .. }), "{f}");
}

#[test]
fn holders_without_a_mover_keep_the_block_and_are_counted() {
    let arena = arena(64, 64);
    let b = arena.alloc_movable(0).unwrap();
    let r = b.page_ref(0);
    let by_number = arena.get(b.pfn()).unwrap();
    let f = busy(arena.reserve_range(b.pfn(), 1, Reason::Shrink).unwrap_err());
    assert_eq!(f.busy[0].why, Unmovable::NoMover { holders: 2 });
    drop((r, by_number));
    let plain = arena.alloc(0).unwrap();
    let f = busy(arena.reserve_range(plain.pfn(), 1, Reason::Shrink).unwrap_err());
    assert_eq!(f.busy[0].why, Unmovable::NotMovable);
}

#[test]
fn with_no_free_block_outside_the_window_the_failure_says_so() {
    let arena = arena(0, 64);
    let blocks = fill(&arena, 64);
    let f = busy(arena.reserve_range(0, 1, Reason::Shrink).unwrap_err());
    assert_eq!(f.busy[0].why, Unmovable::NoDestination);
    check(&blocks);
}

#[test]
fn a_block_falls_back_to_the_normal_zone_when_the_movable_zone_is_full() {
    let arena = arena(64, 32);
    let blocks = fill(&arena, 32);
    let run = arena.reserve_range(64, 32, Reason::Shrink).unwrap();
    for (b, _) in &blocks {
        assert_eq!(arena.zone_of(b.pfn()), Some(ZoneKind::Normal));
    }
    check(&blocks);
    drop(run);
}

#[test]
fn an_armed_block_records_that_it_moved() {
    let tracking = pinowner::Tracking { depth: 0, ..pinowner::Tracking::default() };
    let arena = PageArena::builder().pages(128).movable_pages(64).tracking(tracking).build().unwrap();
    let b = arena.alloc_movable(0).unwrap();
    let old = b.pfn();
    assert_eq!(arena.arm(old..old + 1, Reason::Custom("watch")), 1);
    let run = arena.reserve_range(old, 1, Reason::Shrink).unwrap();
    let events = arena.tracked_events();
    let moved = events.iter().find(|e| matches!(e.kind, EventKind::Migrated { .. })).expect("a migrated event");
    assert_eq!(moved.head, old);
    assert_eq!(moved.kind, EventKind::Migrated { to: b.pfn() });
    drop(run);
}

#[test]
fn the_last_handle_frees_the_block_wherever_it_moved() {
    let arena = arena(64, 64);
    let b = arena.alloc_movable(2).unwrap();
    let share = b.share(|_: &pinowner::Migration<'_>| MoveOutcome::Moved);
    let run = arena.reserve_range(b.pfn(), 4, Reason::Shrink).unwrap();
    assert_eq!(b.pfn(), share.pfn());
    assert_eq!(arena.page_state(b.pfn()).unwrap().refcount, 2);
    drop(run);
    drop(b);
    assert_eq!(arena.free_pages(), arena.pages() - 4);
    drop(share);
    assert_eq!(arena.free_pages(), arena.pages());
    arena.verify().unwrap();
}

#[test]
fn a_movable_block_turned_into_a_block_stays_put() {
    let arena = arena(64, 64);
    let b = arena.alloc_movable(0).unwrap().into_block();
    let f = busy(arena.reserve_range(b.pfn(), 1, Reason::Shrink).unwrap_err());
    assert_eq!(f.busy[0].why, Unmovable::NotMovable);
}

#[test]
fn a_longterm_pin_moves_its_page_out_of_the_movable_zone_first() {
    let arena = arena(64, 64);
    let mut b = arena.alloc_movable(1).unwrap();
    b.borrow_mut().unwrap().fill(9);
    let old = b.pfn();
    let pin = arena.pin_longterm(old + 1).unwrap();
    assert_eq!(arena.zone_of(pin.pfn()), Some(ZoneKind::Normal));
    assert_eq!(pin.pfn(), b.pfn() + 1, "the handle followed its block");
    let info = arena.page_info(pin.pfn()).unwrap();
    assert_eq!(info.migrated.map(|m| m.last_reason), Some(Reason::LongtermPin));
    assert!(b.borrow().iter().all(|&x| x == 9));
    // The movable zone is free of it: its whole range reserves at once.
    let run = arena.reserve_range(64, 64, Reason::Contig).unwrap();
    drop(run);
    // In the normal zone already: pinned in place.
    let again = b.pin_longterm(0).unwrap();
    assert_eq!(again.pfn(), b.pfn());
}

#[test]
fn a_longterm_pin_that_cannot_move_says_why_and_pins_nothing() {
    let arena = arena(64, 64);
    let plain = arena.alloc_movable(0).unwrap().into_block();
    match arena.pin_longterm(plain.pfn()) {
        Err(pinowner::LongtermPinError::Unmovable { pfn, why: Unmovable::NotMovable }) => assert_eq!(pfn, plain.pfn()),
        other => panic!("{other:?}"),
    }
    let pinned = arena.alloc_movable(0).unwrap();
    let short = pinned.pin(0).unwrap();
    match arena.pin_longterm(pinned.pfn()) {
        Err(pinowner::LongtermPinError::Unmovable { why: Unmovable::Pinned, .. }) => {}
        other => panic!("{other:?}"),
    }
    assert_eq!(arena.page_state(pinned.pfn()).unwrap().pincount, 1, "only the short pin");
    drop(short);
    assert!(matches!(arena.pin_longterm(9), Err(pinowner::LongtermPinError::Acquire(AcquireError::Free { .. }))));
}

#[test]
fn a_range_pin_is_all_or_nothing_and_names_the_first_page_it_could_not_pin() {
    let arena = arena(64, 0);
    let blocks: Vec<_> = (0..8).map(|_| arena.alloc(1).unwrap()).collect();
    let start = blocks.iter().map(|b| b.pfn()).min().unwrap();
    let reg = arena.pin_range(start, 16).unwrap();
    assert_eq!(reg.pins().len(), 8);
    assert_eq!(reg.range(), start..start + 16);
    for p in start..start + 16 {
        assert_eq!(arena.page_state(p).unwrap().pincount, 1);
        assert!(arena.page_info(p).unwrap().acquirer.is_some(), "page {p} names the registration");
    }
    drop(reg);
    let e = arena.pin_range(start, 17).unwrap_err();
    assert_eq!(e.pfn, start + 16);
    assert!(matches!(e.error, AcquireError::Free { .. }));
    for p in start..start + 16 {
        assert_eq!(arena.page_state(p).unwrap().pincount, 0, "page {p} stayed pinned");
    }
}

#[test]
fn compaction_makes_high_order_free_blocks_from_scattered_movable_ones() {
    let arena = arena(64, 256);
    let all = fill(&arena, 256);
    // Keep every eighth block: no free order-3 block is left anywhere.
    let kept: Vec<_> = all.into_iter().enumerate().filter(|(i, _)| i % 8 == 0).map(|(_, b)| b).collect();
    let before = arena.frag_stats();
    let at: Vec<_> = kept.iter().map(|(b, _)| b.pfn()).collect();
    let c = arena.compact(ZoneKind::Movable, 3);
    let after = arena.frag_stats();
    assert!(c.freed > 0 && c.blocks_moved > 0, "{c:?}");
    // Every move counted once: the kept blocks' own histories add up to it
    // (a block may move twice, into a window compacted later).
    let moves: u64 = kept.iter().map(|(b, _)| b.migrated().map_or(0, |m| u64::from(m.times))).sum();
    assert!(kept.iter().zip(&at).any(|((b, _), &p)| b.pfn() != p));
    assert_eq!((c.blocks_moved, c.pages_moved), (moves, moves), "{c:?}");
    assert!(c.free_after > c.free_before, "{c:?}\n{before}\n{after}");
    let high = |s: &pinowner::FragStats| s.zone(ZoneKind::Movable).unwrap().free_blocks[3..].iter().sum::<usize>();
    assert!(high(&after) > high(&before), "{before}\n{after}");
    check(&kept);
    // A pinned block's window is skipped, not failed.
    let pin = kept[0].0.pin(0).unwrap();
    let c = arena.compact(ZoneKind::Movable, 6);
    assert_eq!((c.windows, c.skipped, c.failed), (4, 1, 0), "{c:?}");
    drop(pin);
    arena.verify().unwrap();
}

#[test]
fn relocate_moves_a_block_on_request() {
    let arena = arena(64, 64);
    let mut b = arena.alloc_movable(0).unwrap();
    b.borrow_mut().unwrap().fill(4);
    let old = b.pfn();
    let new = b.relocate().unwrap();
    assert_eq!(b.pfn(), new);
    assert_ne!(new, old);
    assert!(b.borrow().iter().all(|&x| x == 4));
    let borrow = b.borrow();
    // Its own borrow keeps it.
    let again = b.relocate();
    assert_eq!(again, Err(Unmovable::Borrowed));
    drop(borrow);
}

/// Threads borrowing, writing, sharing, pinning and relocating movable
/// blocks (thread caches on, the default) while two
/// threads reserve overlapping windows, one compacts and one pins long
/// term: no borrow ever sees another block's bytes, every block ends where
/// its handle says with its bytes, and the allocator verifies.
#[test]
fn migration_under_every_operation_at_once_loses_nothing() {
    let arena = arena(512, 1024);
    let iters = if cfg!(miri) { 20 } else { 3000 };
    std::thread::scope(|s| {
        for t in 0..3u8 {
            let arena = &arena;
            s.spawn(move || {
                let mut held: Vec<(MovableBlock<&PageArena>, u8)> = Vec::new();
                let mut seed = 0x2545_f491_4f6c_dd1du64 ^ u64::from(t) << 40;
                for i in 0..iters {
                    seed ^= seed << 13;
                    seed ^= seed >> 7;
                    seed ^= seed << 17;
                    let canary = t.wrapping_mul(61) ^ (i as u8) | 1;
                    match seed % 6 {
                        0 | 1 if held.len() < 48 => {
                            if let Ok(mut b) = arena.alloc_movable((seed >> 8) as u8 % 2) {
                                b.borrow_mut().unwrap().fill(canary);
                                held.push((b, canary));
                            }
                        }
                        2 if !held.is_empty() => {
                            let (b, c) = held.swap_remove((seed >> 16) as usize % held.len());
                            assert!(b.borrow().iter().all(|&x| x == c));
                        }
                        3 if !held.is_empty() => {
                            let (b, c) = &held[(seed >> 16) as usize % held.len()];
                            let share = b.share(|_: &pinowner::Migration<'_>| MoveOutcome::Moved);
                            let pin = b.pin(0).ok();
                            assert!(share.borrow().iter().all(|x| x == c));
                            drop((pin, share));
                        }
                        5 if !held.is_empty() => {
                            // The holder moves its own block, as `move_pages`.
                            let (b, c) = &held[(seed >> 16) as usize % held.len()];
                            if b.relocate().is_ok() {
                                // (A reservation may have moved it again since.)
                                let bytes = b.borrow();
                                assert!(bytes.iter().all(|x| x == c), "moved block at {:#x}", bytes.pfn());
                            }
                        }
                        _ if !held.is_empty() => {
                            let (b, c) = &held[(seed >> 16) as usize % held.len()];
                            let bytes = b.borrow();
                            assert!(bytes.iter().all(|x| x == c), "block at {:#x}", bytes.pfn());
                        }
                        _ => {}
                    }
                }
                for (b, c) in held {
                    assert!(b.borrow().iter().all(|&x| x == c));
                }
            });
        }
        let arena = &arena;
        for r in 0..2usize {
            s.spawn(move || {
                for i in 0..iters / 30 {
                    let start = 512 + ((i * 7 + r * 3) % 6) * 128;
                    if let Ok(run) = arena.reserve_range(start, 256, Reason::Shrink) {
                        drop(run);
                    }
                }
            });
        }
        s.spawn(move || {
            for i in 0..iters / 60 {
                let c = arena.compact(if i % 2 == 0 { ZoneKind::Movable } else { ZoneKind::Normal }, 4);
                assert_eq!(c.windows, c.already_free + c.freed + c.skipped + c.failed);
            }
        });
    });
    arena.verify().unwrap();
    assert_eq!(arena.free_pages(), arena.pages());
}

#[test]
fn a_pin_held_past_the_threshold_is_flagged_long_in_reports() {
    let tracking = pinowner::Tracking { depth: 0, long_pin: Duration::from_millis(30), ..Default::default() };
    let arena = PageArena::builder().pages(64).movable_pages(32).tracking(tracking).build().unwrap();
    let b = arena.alloc_movable(0).unwrap();
    assert_eq!(arena.arm(b.pfn()..b.pfn() + 1, Reason::Custom("watch")), 1);
    let long = b.pin(0).unwrap();
    std::thread::sleep(Duration::from_millis(60));
    let short = b.pin(0).unwrap();
    let report = arena.owner_report();
    let pins: Vec<_> = report.pages[0].outstanding.iter().filter(|h| h.kind == EventKind::Pin).collect();
    assert_eq!(pins.len(), 2);
    assert_eq!(pins.iter().filter(|h| h.long).count(), 1, "{report}");
    assert!(report.to_string().contains("(a long pin)"), "{report}");
    drop((long, short));
}

/// Isolation marks block heads, and carving a free block that straddles
/// the window's edge makes new heads inside it: those are marked too, so a
/// block freed beside one while the window is isolated (here the refused
/// move's destination, the only free movable page outside the window)
/// stays apart from it instead of merging with a block no list holds.
#[test]
fn a_destination_freed_beside_a_carved_piece_of_an_isolated_window_never_merges_with_it() {
    // The buddy lists' exact shape: no thread caches.
    let arena = PageArena::builder().pages(16).movable_pages(8).max_order(3).without_thread_cache().build().unwrap();
    let s = 8;
    // Every movable page as an order-0 block, by page number; the block on
    // page s + 2 refuses to move.
    let mut blocks: Vec<_> = (0..8).map(|_| arena.alloc_movable(0).unwrap()).collect();
    blocks.sort_by_key(|b| b.pfn());
    assert_eq!(blocks[0].pfn(), s);
    drop(blocks.remove(2));
    let m = arena.alloc_movable_with(0, |_: &pinowner::Migration<'_>| MoveOutcome::Refused).unwrap();
    assert_eq!(m.pfn(), s + 2);
    // Pages s and s + 1 free: one order-1 block straddling the window's
    // start.
    drop(blocks.drain(..2));
    // The second free found its buddy free and left the merge for later
    // (the zone path coalesces lazily); `frag_stats` merges it.
    arena.frag_stats();
    assert_eq!(arena.page_info(s).unwrap().state.order, 1);
    let err = arena.reserve_range(s + 1, 2, Reason::Shrink).unwrap_err();
    let ContigError::Busy(f) = err else { panic!("{err}") };
    assert!(matches!(f.busy[0].why, Unmovable::Refused { temporary: false, .. }), "{f}");
    arena.verify().unwrap();
    // The window's pages are listed again and coalesced.
    assert_eq!(arena.page_info(s).unwrap().state.order, 1);
    drop(m);
    drop(blocks);
    arena.verify().unwrap();
    assert_eq!(arena.free_pages(), 16);
}

/// An empty range pin may sit at the arena's end, as an empty slice may,
/// but one starting past it is refused with a typed error naming the page,
/// like any other page out of range.
#[test]
fn an_empty_range_pin_past_the_arena_is_out_of_range() {
    let arena = PageArena::builder().pages(64).build().unwrap();
    assert!(arena.pin_range(64, 0).unwrap().pins().is_empty(), "empty at the end");
    let e = arena.pin_range(65, 0).unwrap_err();
    assert_eq!(e.pfn, 65);
    assert_eq!(e.error, pinowner::AcquireError::OutOfRange { pfn: 65, pages: 64 });
    let e = arena.pin_range(usize::MAX, 0).unwrap_err();
    assert_eq!(e.pfn, usize::MAX);
}
