//! Quickstart: a 2 MiB reservation fails; who holds the pages in its way?
//!
//! A buffer pool fills the movable zone with 4 KiB frames. A DMA ring pins a
//! few frames for its receive descriptors and keeps them. An exit path
//! batches frames for release and holds its batch longer than it should (the
//! kernel's page_ref tracepoint story). The pool then shrinks, and a 2 MiB
//! contiguous reservation fails: the failure names every busy page of the
//! best window, with the function and subsystem that took it. After the
//! batch path is fixed (it releases promptly) and the ring is re-posted
//! outside the movable zone, the reservation succeeds.

use pinowner::{pin_tracked, Block, ContigError, PageArena, PageFlags, PagePin, PageRef, Reason, ZoneKind};

/// The DMA ring's refill: pins a frame for a receive descriptor.
#[pin_tracked(subsystem = "dma", name = "rx_refill")]
fn rx_refill<'a>(frame: &Block<&'a PageArena>) -> PagePin<&'a PageArena> {
    frame.pin(0).expect("pin a receive buffer")
}

/// The exit path: takes a reference on each frame it will release in batch.
#[pin_tracked(subsystem = "exit", name = "batch_release")]
fn batch_release_collect<'a>(frame: &Block<&'a PageArena>) -> PageRef<&'a PageArena> {
    frame.page_ref(0)
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    // 64 MiB of 4 KiB pages; the top 16 MiB is the movable (contiguous-capable) zone.
    let arena = PageArena::builder().capacity(64 << 20).movable_capacity(16 << 20).build()?;
    let movable = arena.zone_range(ZoneKind::Movable);
    println!(
        "arena: {} pages of {} KiB, movable zone pfn {:#x}..{:#x}\n",
        arena.pages(),
        arena.page_size() / 1024,
        movable.start,
        movable.end
    );

    // The buffer pool takes every movable frame.
    let pool: Vec<_> = movable.clone().map(|_| arena.alloc_movable(0)).collect::<Result<_, _>>()?;
    // The DMA ring pins one frame in every 512 (one per 2 MiB window).
    let mut ring: Vec<_> = pool.iter().step_by(512).map(rx_refill).collect();
    // The exit path batches a few frames and sits on them.
    let batch: Vec<_> = pool.iter().skip(300).step_by(512).map(batch_release_collect).collect();
    // The pool shrinks: its own references go.
    drop(pool);

    println!("reserving 2 MiB (512 pages, aligned) in the movable zone...");
    match arena.reserve_contig(512, 512, Reason::Contig) {
        Ok(_) => println!("unexpected success"),
        Err(ContigError::Busy(failure)) => {
            println!("reservation failed:\n{failure}\n");
            println!("armed pages (their later gets, puts, pins and unpins are tracked):");
            for b in &failure.busy {
                let s = arena.page_state(b.head)?;
                println!("  pfn={:#x} tracked={}", b.head, s.flags.contains(PageFlags::TRACKED));
            }
        }
        Err(e) => return Err(e.into()),
    }
    println!("\n{}", arena.frag_stats());

    // The fix: the exit path releases its batch at once, and the ring's
    // buffers are re-posted from the normal zone (long-term pins stay out of
    // the movable zone, like FOLL_LONGTERM).
    drop(batch);
    let normal: Vec<_> = (0..ring.len()).map(|_| arena.alloc(0)).collect::<Result<_, _>>()?;
    ring = normal.iter().map(rx_refill).collect();
    let run = arena.reserve_contig(512, 512, Reason::Contig)?;
    println!("after the fix: reserved pfn {:#x}..{:#x} ({} KiB)", run.range().start, run.range().end, run.len() / 1024);
    drop(ring);
    Ok(())
}
