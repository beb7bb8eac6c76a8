//! Quickstart: a high-order request fails; who holds the pages in its way?
//!
//! A DMA ring keeps long pins scattered across the arena, a buffer pool holds
//! ordinary references, and an order-9 (2 MiB) request cannot be served. The
//! example prints the fragmentation statistics and, for the best 2 MiB window,
//! every busy page with its counts and attributed acquirer.

use pinowner::{PageArena, PageFlags, ZoneKind};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let arena = PageArena::builder().capacity(16 << 20).movable_capacity(16 << 20).build()?;

    // A buffer pool fills the movable zone with 4 KiB pages.
    let pool: Vec<_> =
        (0..arena.zone_range(ZoneKind::Movable).len()).map(|_| arena.alloc_movable(0)).collect::<Result<_, _>>()?;
    // A DMA ring pins one page in every 64 and keeps those pins.
    let ring: Vec<_> = pool.iter().step_by(64).map(|b| b.pin(0)).collect::<Result<_, _>>()?;
    // The pool shrinks; the pinned pages stay.
    drop(pool);

    let err = arena.alloc_movable(9).map(|_| ()).unwrap_err();
    println!("order-9 allocation failed: {err}\n");
    println!("{}", arena.frag_stats());

    // The movable zone's 2 MiB windows, ranked by busy pages.
    let zone = arena.zone_range(ZoneKind::Movable);
    let best = zone
        .clone()
        .step_by(512)
        .min_by_key(|&w| {
            (w..w + 512).filter(|&p| !arena.page_state(p).unwrap().flags.contains(PageFlags::FREE)).count()
        })
        .expect("a movable zone of at least one window");
    println!("best window: pfn {:#x}..{:#x}", best, best + 512);
    for p in best..best + 512 {
        let info = arena.page_info(p)?;
        if info.state.flags.contains(PageFlags::FREE) {
            continue;
        }
        let who = info.acquirer.map_or_else(|| "unattributed".to_string(), |a| a.to_string());
        println!(
            "  pfn={:#x} count={} pincount={} zone={} acquirer={}",
            p, info.state.refcount, info.state.pincount, info.zone, who
        );
    }
    drop(ring);
    println!(
        "\nafter the ring releases its pins: order-9 allocation {}",
        if arena.alloc_movable(9).is_ok() { "succeeds" } else { "still fails" }
    );
    Ok(())
}
