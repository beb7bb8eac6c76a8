//! A database buffer pool whose frames live in the movable zone.
//!
//! The pool keeps a page table (page id → frame's page number) for its
//! lookups, and registers a mover with every frame that updates the table
//! when the frame moves. Queries pin the frames they read for as long as
//! they read them. While queries run, the pool shrinks by reserving the top
//! 2 MiB of its memory (`Reason::Shrink`): frames there move instead of
//! blocking the shrink; the one frame a long scan keeps pinned does block
//! it, and the failure names that scan. When the scan ends, the shrink
//! succeeds.
//!
//! `cargo run --release -p pinowner-examples --example buffer_pool`

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use pinowner::{
    pin_tracked, ContigError, Migration, MovableBlock, MoveOutcome, PageArena, PagePin, Pfn, Reason, Unmovable,
    ZoneKind,
};

/// 4 KiB frames; 2 MiB is 512 of them.
const WINDOW: usize = 512;
const FRAMES: usize = 1200;

type PageTable = Arc<Mutex<HashMap<u64, Pfn>>>;

struct Pool {
    arena: Arc<PageArena>,
    frames: Vec<(u64, MovableBlock<Arc<PageArena>>)>,
    table: PageTable,
    moved: Arc<AtomicUsize>,
}

impl Pool {
    fn new(arena: Arc<PageArena>) -> Pool {
        let table: PageTable = Arc::default();
        let moved = Arc::new(AtomicUsize::new(0));
        let mut frames = Vec::new();
        for id in 0..FRAMES as u64 {
            let (t, m) = (table.clone(), moved.clone());
            // The mover: the page table follows the frame.
            let mover = move |mig: &Migration<'_>| {
                let mut t = t.lock().unwrap();
                let slot = t.get_mut(&id).expect("a frame in the table");
                assert_eq!(*slot, mig.old_pfn(), "the table named the old frame");
                *slot = mig.new_pfn();
                m.fetch_add(1, Ordering::Relaxed);
                MoveOutcome::Moved
            };
            let mut frame = arena.alloc_movable_owned_with(0, mover).expect("room for the pool");
            // A page "read from disk": its id in every 8-byte word.
            for word in frame.borrow_mut().expect("a new frame is ours alone").chunks_mut(8) {
                word.copy_from_slice(&id.to_ne_bytes());
            }
            table.lock().unwrap().insert(id, frame.pfn());
            frames.push((id, frame));
        }
        Pool { arena, frames, table, moved }
    }

    /// The frame of page `id`, checked against the page table.
    fn frame(&self, id: u64) -> &MovableBlock<Arc<PageArena>> {
        let (_, f) = &self.frames[id as usize];
        f
    }
}

/// A query reading a frame: pins it while it reads (a short pin).
#[pin_tracked(subsystem = "query", name = "point_lookup")]
fn point_lookup(pool: &Pool, id: u64) -> u64 {
    let frame = pool.frame(id);
    let pin: PagePin<Arc<PageArena>> = frame.pin(0).expect("pin a frame");
    assert_eq!(pool.table.lock().unwrap()[&id], pin.pfn(), "the page table names the pinned frame");
    let word = u64::from_ne_bytes(pin.bytes()[..8].try_into().unwrap());
    assert_eq!(word, id, "frame {id} holds its page");
    word
}

/// A long scan: keeps one frame pinned until told to stop.
#[pin_tracked(subsystem = "query", name = "long_scan")]
fn long_scan(pool: &Pool, id: u64) -> PagePin<Arc<PageArena>> {
    pool.frame(id).pin(0).expect("pin the scanned frame")
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let arena = Arc::new(PageArena::builder().pages(4 * WINDOW).movable_pages(3 * WINDOW).build()?);
    let pool = Pool::new(arena.clone());
    let movable = arena.zone_range(ZoneKind::Movable);
    let top = movable.end - WINDOW;
    println!("buffer pool: {FRAMES} frames of 4 KiB in a movable zone of {} pages", movable.len());

    // The long scan pins a frame in the top 2 MiB.
    let scanned = pool.frames.iter().find(|(_, f)| f.pfn() >= top).map(|(id, _)| *id).expect("a frame up there");
    let scan = long_scan(&pool, scanned);
    println!("long_scan pins page {scanned} in frame {:#x}", scan.pfn());

    let stop = AtomicBool::new(false);
    let lookups = AtomicUsize::new(0);
    std::thread::scope(|s| {
        for t in 0..2u64 {
            let (pool, stop, lookups) = (&pool, &stop, &lookups);
            s.spawn(move || {
                let mut id = t;
                while !stop.load(Ordering::Relaxed) {
                    // Hot pages only: the scanned page is cold (a lookup's
                    // pin on it would be the latest acquirer, and once it
                    // let go the page's holder would be unattributed: see
                    // "What is named" in the README).
                    if id % FRAMES as u64 != scanned {
                        point_lookup(pool, id % FRAMES as u64);
                    }
                    lookups.fetch_add(1, Ordering::Relaxed);
                    id += 7;
                }
            });
        }
        // Shrink while the queries run (the lookups stop when it is done,
        // however it ends).
        let shrink = || -> Result<(), Box<dyn std::error::Error>> {
            // The scan's pin blocks it.
            match arena.reserve_range(top, WINDOW, Reason::Shrink) {
                Err(ContigError::Busy(f)) => {
                    println!("\nshrink while the scan runs fails, naming who is in the way:\n{f}");
                    // A lookup may hold a short pin on another frame of the
                    // window at this instant: that block is pinned too, and
                    // named for its lookup. The scan's block names the scan.
                    let named_scan = f.busy.iter().any(|b| {
                        b.why == Unmovable::Pinned
                            && b.attributed.is_some_and(|(_, a)| a.to_string().contains("long_scan"))
                    });
                    assert!(named_scan, "the failure names the scan:\n{f}");
                }
                Err(e) => return Err(e.into()),
                Ok(_) => panic!("a pinned frame cannot move"),
            }
            drop(scan);
            // The scan is over: the frames in the top 2 MiB move (the
            // lookups' short pins only make a pass wait and try again).
            let run = arena.reserve_range(top, WINDOW, Reason::Shrink)?;
            println!(
                "\nshrink after the scan: reserved {:#x}..{:#x}; {} frames moved, the page table followed them; {} lookups ran meanwhile",
                run.range().start,
                run.range().end,
                pool.moved.load(Ordering::Relaxed),
                lookups.load(Ordering::Relaxed),
            );
            Ok(())
        };
        // The lookups stop however the shrink ends, a panic included (or
        // the scope would wait for them forever).
        struct Stop<'a>(&'a AtomicBool);
        impl Drop for Stop<'_> {
            fn drop(&mut self) {
                self.0.store(true, Ordering::Relaxed);
            }
        }
        let _stop = Stop(&stop);
        shrink()
    })?;
    for (id, f) in &pool.frames {
        assert_eq!(pool.table.lock().unwrap()[id], f.pfn());
        assert_eq!(point_lookup(&pool, *id), *id);
    }
    let _ = &pool.arena;
    println!("every frame still holds its page, where the page table says");
    Ok(())
}
