//! Quickstart: a 2 MiB reservation fails; who holds the pages in its way?
//!
//! A buffer pool fills the movable zone with 4 KiB frames. A DMA ring pins
//! receive buffers there and keeps them (long-term pins). An exit path
//! batches frames for release and, through a double-buffering bug, holds
//! each batch until the next one is collected — so its pages are never free
//! (the kernel's exit-path batching story from the page_ref tracepoint
//! commit). A scanner reads pool frames briefly. The pool shrinks and a
//! 2 MiB contiguous reservation fails:
//!
//! 1. the failure names every busy page of the best window and the function
//!    and subsystem that took it, at the moment of failure;
//! 2. the failure arms those pages; the workload runs on and every get, put,
//!    pin and unpin on them is recorded with a backtrace;
//! 3. the owner report names the batch-release path as the culprit, with its
//!    stacks and hold times;
//! 4. after the fix (the exit path releases each batch promptly) a waiting
//!    reservation is woken by the release and succeeds.
//!
//! It writes a map of the arena at the failure (`arena-map.svg`) and the
//! reports as JSON (`contig-failure.json`, `arena-map.json`,
//! `owner-report.json`) for `pinowner-report`, in the directory
//! `PINOWNER_OUT` names (else `pinowner-examples` in the temporary
//! directory), and prints their paths.

use std::sync::atomic::{AtomicBool, Ordering};
use std::thread;
use std::time::Duration;

use pinowner::{pin_tracked, ContigError, MovableBlock, PageArena, PagePin, PageRef, Reason, ReportOptions, ZoneKind};
use pinowner_examples::output_path;

/// Writes a JSON report next to the map and says where.
fn write_json(name: &str, json: &str) -> std::io::Result<()> {
    let path = output_path(name)?;
    std::fs::write(&path, json)?;
    println!("{name} written to {}", path.display());
    Ok(())
}

/// The DMA ring's refill: pins a frame for a receive descriptor.
#[pin_tracked(subsystem = "dma", name = "rx_refill")]
fn rx_refill<'a>(frame: &MovableBlock<&'a PageArena>) -> PagePin<&'a PageArena> {
    frame.pin(0).expect("pin a receive buffer")
}

/// The exit path collects a reference on each frame it will release.
#[pin_tracked(subsystem = "exit", name = "batch_collect")]
#[inline(never)]
fn batch_collect<'a>(arena: &'a PageArena, frames: &[usize]) -> Vec<PageRef<&'a PageArena>> {
    frames.iter().map(|&pfn| arena.get(pfn).expect("frame is live")).collect()
}

/// The exit path releases a batch.
#[pin_tracked(subsystem = "exit", name = "batch_release")]
#[inline(never)]
fn batch_release(batch: Vec<PageRef<&PageArena>>) {
    drop(batch);
}

/// The scanner reads a frame if it is still allocated: a short-lived
/// reference.
#[pin_tracked(subsystem = "pool", name = "pool_read")]
#[inline(never)]
fn pool_read(arena: &PageArena, pfn: usize) -> Option<u8> {
    let r = arena.get(pfn).ok()?;
    // SAFETY: the reference keeps the page allocated; a byte load through
    // the shared view does not alias any `&mut`.
    Some(unsafe { r.as_ptr().read_volatile() })
}

/// The exit path: collects a batch of frames to release, then — the bug —
/// holds it until the next batch is due, which on a quiet system is never.
#[inline(never)]
fn exit_path(arena: &PageArena, frames: &[usize], collected: &AtomicBool, fixed: &AtomicBool) {
    let batch = batch_collect(arena, frames);
    collected.store(true, Ordering::Release);
    while !fixed.load(Ordering::Acquire) {
        thread::sleep(Duration::from_millis(5));
    }
    batch_release(batch);
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    // 64 MiB of 4 KiB pages; the top 16 MiB (eight 2 MiB windows) is the
    // movable, contiguous-capable zone.
    let arena = PageArena::builder().capacity(64 << 20).movable_capacity(16 << 20).build()?;
    let movable = arena.zone_range(ZoneKind::Movable);
    println!(
        "arena: {} pages of {} KiB, movable zone pfn {:#x}..{:#x}\n",
        arena.pages(),
        arena.page_size() / 1024,
        movable.start,
        movable.end
    );
    let window = |w: usize| movable.start + w * 512;

    // The buffer pool takes every movable frame.
    let mut pool: Vec<_> = movable.clone().map(|_| arena.alloc_movable(0)).collect::<Result<_, _>>()?;
    pool.sort_by_key(|b| b.pfn());
    let frame = |pfn: usize| &pool[pfn - movable.start];
    // The DMA ring pins 16 receive buffers in each of windows 0..4.
    let ring: Vec<_> =
        (0..4).flat_map(|w| (0..16).map(move |i| window(w) + 7 + i * 31)).map(|p| rx_refill(frame(p))).collect();
    // The exit path's frames: one per window in windows 4..8.
    let exit_frames: Vec<usize> = (4..8).map(|w| window(w) + 300).collect();
    // The scanner's frames: two per window in windows 4..8, one of them the
    // exit path's.
    let scan_frames: Vec<usize> = (4..8).flat_map(|w| [window(w) + 100, window(w) + 300]).collect();

    let fixed = AtomicBool::new(false);
    let stop = AtomicBool::new(false);
    let collected = AtomicBool::new(false);
    thread::scope(|s| -> Result<(), Box<dyn std::error::Error>> {
        thread::Builder::new()
            .name("exit-path".into())
            .spawn_scoped(s, || exit_path(&arena, &exit_frames, &collected, &fixed))?;
        while !collected.load(Ordering::Acquire) {
            thread::yield_now();
        }

        // The pool shrinks: its own references go. What is left holding
        // movable frames is the ring and the exit path.
        drop(pool);

        println!("reserving 2 MiB (512 pages, 512-aligned) in the movable zone...");
        match arena.reserve_contig(512, 512, Reason::Shrink) {
            Ok(_) => println!("unexpected success"),
            Err(ContigError::Busy(failure)) => {
                println!("reservation failed:\n{failure}\n");
                // The picture: zones, free/used/pinned pages, the armed
                // blocks outlined, the best window framed.
                let svg = output_path("arena-map.svg")?;
                std::fs::write(&svg, failure.map_svg(&arena))?;
                println!("arena map written to {}", svg.display());
                let mut map = arena.map();
                map.window = Some(failure.window.clone());
                write_json("arena-map.json", &map.to_json())?;
                write_json("contig-failure.json", &failure.to_json())?;
                println!();
            }
            Err(e) => return Err(e.into()),
        }
        println!("{}\n", arena.frag_stats());

        // The busy pages are armed; the workload runs on and is recorded.
        println!("tracking the armed pages while the workload runs for 300 ms...\n");
        thread::Builder::new().name("scanner".into()).spawn_scoped(s, || {
            while !stop.load(Ordering::Relaxed) {
                for &p in &scan_frames {
                    std::hint::black_box(pool_read(&arena, p));
                }
                thread::sleep(Duration::from_millis(20));
            }
        })?;
        thread::sleep(Duration::from_millis(300));
        // Who is in the way now, for `pinowner-report flame`.
        write_json("owner-report.json", &arena.owner_report().to_json())?;

        // The fix: the exit path releases its batch promptly. A waiting
        // reservation is woken by the release of the armed page.
        fixed.store(true, Ordering::Release);
        let run = arena.reserve_contig_wait(512, 512, Reason::Shrink, Duration::from_secs(10))?;
        println!(
            "after the fix: reserved pfn {:#x}..{:#x} ({} KiB); armed blocks left: {}\n",
            run.range().start,
            run.range().end,
            run.len() / 1024,
            arena.tracker_stats().armed_blocks
        );
        stop.store(true, Ordering::Relaxed);

        let options = ReportOptions { reason: Some(Reason::Shrink), frames: 6, ..ReportOptions::default() };
        let report = arena.owner_report_with(&options);
        println!("{report}\n");
        for page in &report.pages {
            if let Some(r) = page.releases.iter().find(|r| r.left == (0, 0)) {
                let site = r.site.as_ref().map_or_else(|| "(no site)".to_owned(), |o| o.to_string());
                println!("culprit for pfn {:#x}: its last reference was dropped by {site}", page.pfn);
            }
        }
        println!("\nfolded stacks (for flamegraph.pl / inferno):\n{}", report.folded());
        drop(run);
        Ok(())
    })?;
    drop(ring);
    let audit = arena.audit();
    println!("teardown audit: {} blocks held", audit.blocks.len());
    Ok(())
}
