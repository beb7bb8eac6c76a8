//! Everything a buffer pool, a DMA wrapper and a hugepage arena do, at
//! once: movable frames allocated, written, shared, pinned (short and long
//! term), reserved around, compacted, reported and discarded from several
//! threads, with the stats read meanwhile. No frame ever shows another's
//! bytes, no held page is ever reported, discarded memory reads zero, and
//! the arena ends whole.

use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use pinowner::discard::Discard;
use pinowner::reporting::Reporting;
use pinowner::{Backing, MovableBlock, MoveOutcome, PageArena, PageFlags, Reason, ZoneKind};

fn arena() -> PageArena {
    PageArena::builder()
        .pages(1024)
        .movable_pages(512)
        .max_order(6)
        .backing(Backing::Anonymous)
        .reporting(Reporting { min_order: Some(3), batch: 4, ..Reporting::default() })
        .build()
        .unwrap()
}

/// xorshift: the same run every time, per thread.
fn next(seed: &mut u64) -> u64 {
    *seed ^= *seed << 13;
    *seed ^= *seed >> 7;
    *seed ^= *seed << 17;
    *seed
}

/// The frame's bytes are all `canary`, and its pages are not reported
/// (their memory was never given back while held).
fn check(arena: &PageArena, b: &MovableBlock<&PageArena>, canary: u8) {
    let bytes = b.borrow();
    assert!(bytes.iter().all(|&x| x == canary), "frame at {:#x} lost its bytes", bytes.pfn());
    for p in bytes.pfn()..bytes.pfn() + b.pages() {
        let flags = arena.page_info(p).unwrap().state.flags;
        assert!(!flags.contains(PageFlags::REPORTED), "held page {p:#x} is marked reported");
    }
}

/// Stops the helper threads even if a worker's assertion fails.
struct Stop<'a>(&'a AtomicBool);
impl Drop for Stop<'_> {
    fn drop(&mut self) {
        self.0.store(true, Ordering::Relaxed);
    }
}

#[test]
fn moves_frames_pins_reservations_compaction_reporting_and_discards_at_once_lose_nothing() {
    let arena = arena();
    let iters = 8000;
    let stop = AtomicBool::new(false);
    std::thread::scope(|s| {
        let arena = &arena;
        let stop = &stop;
        let mut workers = Vec::new();
        for t in 0..2u64 {
            workers.push(s.spawn(move || {
                let _stop = Stop(stop);
                let mut held: Vec<(MovableBlock<&PageArena>, u8)> = Vec::new();
                let mut seed = 0x9e37_79b9_7f4a_7c15 ^ (t + 1) << 32;
                for i in 0..iters {
                    let r = next(&mut seed);
                    let canary = (i as u8).wrapping_mul(7) ^ (t as u8) << 6 | 1;
                    match r % 8 {
                        0 | 1 if held.len() < 40 => {
                            if let Ok(mut b) = arena.alloc_movable((r >> 8) as u8 % 2) {
                                b.borrow_mut().unwrap().fill(canary);
                                held.push((b, canary));
                            }
                        }
                        2 if !held.is_empty() => {
                            let (b, c) = held.swap_remove((r >> 16) as usize % held.len());
                            check(arena, &b, c);
                        }
                        3 if !held.is_empty() => {
                            // A query pins a frame for a moment; a second holder
                            // follows the frame when it moves.
                            let (b, c) = &held[(r >> 16) as usize % held.len()];
                            let follower = b.share(|_: &pinowner::Migration<'_>| MoveOutcome::Moved);
                            if let Ok(pin) = b.pin(0) {
                                assert_eq!(pin.pfn(), b.pfn(), "a pinned frame does not move");
                                assert!(pin.bytes().iter().all(|x| x == c));
                            }
                            check(arena, &follower, *c);
                        }
                        4 if !held.is_empty() => {
                            // An io_uring registration: a long-term pin lands in
                            // the normal zone, on the frame's own bytes.
                            let (b, c) = &held[(r >> 16) as usize % held.len()];
                            if let Ok(pin) = b.pin_longterm(0) {
                                assert_eq!(arena.zone_of(pin.pfn()), Some(ZoneKind::Normal));
                                assert_eq!(pin.pfn(), b.pfn());
                                assert!(pin.bytes().iter().all(|x| x == c));
                            }
                        }
                        5 => {
                            // An evicted buffer given back, then a zeroed one.
                            if let Ok(mut blk) = arena.alloc((r >> 8) as u8 % 3) {
                                blk.bytes_mut().unwrap().fill(0xee);
                                blk.discard(Discard::DontNeed).unwrap();
                            }
                            if let Ok(z) = arena.alloc_zeroed((r >> 8) as u8 % 3) {
                                assert!(z.bytes().iter().all(|&x| x == 0), "a zeroed block at {:#x}", z.pfn());
                            }
                        }
                        _ if !held.is_empty() => {
                            let (b, c) = &held[(r >> 16) as usize % held.len()];
                            check(arena, b, *c);
                        }
                        _ => {}
                    }
                }
                for (b, c) in held {
                    check(arena, &b, c);
                }
            }));
        }
        s.spawn(move || {
            let mut i = 0usize;
            while !stop.load(Ordering::Relaxed) {
                i += 1;
                match i % 3 {
                    0 => drop(arena.reserve_contig(64, 64, Reason::Shrink)),
                    1 => drop(arena.reserve_contig_wait(32, 32, Reason::Contig, Duration::from_millis(2))),
                    _ => drop(arena.reserve_range(512 + (i * 16) % 448, 48, Reason::Shrink)),
                }
            }
        });
        s.spawn(move || {
            let mut i = 0usize;
            while !stop.load(Ordering::Relaxed) {
                i += 1;
                let c = arena.compact(if i.is_multiple_of(2) { ZoneKind::Movable } else { ZoneKind::Normal }, 3);
                assert_eq!(c.windows, c.already_free + c.freed + c.skipped + c.failed);
                arena.report_free(8).unwrap();
                let f = arena.frag_stats();
                for z in &f.zones {
                    assert!(z.free_pages + z.cached_pages <= z.pages, "{z:?}");
                    assert!(z.reported_pages <= z.free_pages, "{z:?}");
                }
                assert!(arena.free_pages() <= arena.pages());
            }
        });
        for w in workers {
            w.join().unwrap();
        }
    });
    arena.verify().unwrap();
    assert_eq!(arena.free_pages(), arena.pages());
    let f = arena.frag_stats();
    assert_eq!(f.zones.iter().map(|z| z.free_pages + z.cached_pages).sum::<usize>(), arena.pages());
}
