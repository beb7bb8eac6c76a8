//! What an owner report says when users read it: stacks that name the
//! functions that took and dropped the counts, counts of what a full ring
//! dropped, several failures armed at once from several threads, and eager
//! tracking's holders.

use std::sync::Barrier;

use pinowner::{
    pin_tracked, ContigError, EventKind, OwnerReport, PageArena, PagePin, PageRef, Reason, ReportOptions, Tracking,
};

#[pin_tracked(subsystem = "db")]
#[inline(never)]
fn buffer_pool_fix(arena: &PageArena, pfn: usize) -> PageRef<&PageArena> {
    arena.get(pfn).unwrap()
}

#[inline(never)]
fn buffer_pool_unfix(r: PageRef<&PageArena>) {
    drop(std::hint::black_box(r));
}

#[pin_tracked(subsystem = "dma")]
fn dma_pin(arena: &PageArena, pfn: usize) -> PagePin<&PageArena> {
    arena.pin(pfn).unwrap()
}

fn fail_over(arena: &PageArena, pfn: usize) {
    match arena.reserve_range(pfn, 1, Reason::Contig) {
        Err(ContigError::Busy(_)) => {}
        other => panic!("{other:?}"),
    }
}

fn no_frames() -> ReportOptions {
    ReportOptions { frames: 0, ..ReportOptions::default() }
}

fn frames_of(report: &OwnerReport, stack: Option<u32>) -> Vec<String> {
    report.stacks.iter().find(|s| Some(s.stack) == stack).map(|s| s.frames.clone()).unwrap_or_default()
}

/// The acquire stack of an outstanding holder names the function that took
/// the count, and the release stack of a put names the function that
/// dropped it, at the top once the arena's own frames are trimmed.
#[test]
fn owners_report_stacks_name_the_functions_that_took_and_dropped_the_counts() {
    let arena = PageArena::builder().pages(64).movable_pages(32).build().unwrap();
    let frame = arena.alloc_movable(0).unwrap().into_block();
    let pfn = frame.pfn();
    fail_over(&arena, pfn);
    let held = buffer_pool_fix(&arena, pfn);
    buffer_pool_unfix(buffer_pool_fix(&arena, pfn));
    let report = arena.owner_report();
    let page = report.pages.iter().find(|p| p.pfn == pfn).unwrap();
    let recorded: Vec<_> = page.outstanding.iter().filter(|h| !h.from_arming).collect();
    assert_eq!(recorded.len(), 1, "{report}");
    let acquire = frames_of(&report, recorded[0].stack);
    assert!(acquire.first().is_some_and(|f| f.contains("buffer_pool_fix")), "{acquire:#?}");
    assert_eq!(page.releases.len(), 1, "{report}");
    let release = frames_of(&report, page.releases[0].stack);
    assert!(release.first().is_some_and(|f| f.contains("buffer_pool_unfix")), "{release:#?}");
    assert_eq!(
        page.releases[0].acquired_by.as_ref().and_then(|o| o.subsystem.as_deref()),
        Some("db"),
        "the put names the fix it ended"
    );
    drop(held);
    drop(frame);
}

/// A ring smaller than the burst drops events and says how many, in total
/// and on the page, while the outstanding holders stay exact.
#[test]
fn owners_a_full_ring_counts_what_it_dropped_and_keeps_holders_exact() {
    let tracking = Tracking { capacity: 8, depth: 0, ..Tracking::default() };
    let arena = PageArena::builder().pages(64).movable_pages(32).tracking(tracking).build().unwrap();
    let frame = arena.alloc_movable(0).unwrap().into_block();
    let pfn = frame.pfn();
    fail_over(&arena, pfn);
    let pin = dma_pin(&arena, pfn);
    for _ in 0..50 {
        drop(buffer_pool_fix(&arena, pfn));
    }
    let report = arena.owner_report_with(&no_frames());
    let stats = arena.tracker_stats();
    assert_eq!(stats.recorded, 1 + 1 + 100, "arm, pin, 50 gets and puts");
    assert!(report.events_dropped > 0 && report.events_dropped == stats.dropped, "{report}");
    assert_eq!(report.events_in_report + report.events_dropped, stats.recorded, "{report}");
    let page = report.pages.iter().find(|p| p.pfn == pfn).unwrap();
    assert_eq!(u64::from(page.dropped), report.events_dropped, "{report}");
    let subs: Vec<_> = page.outstanding.iter().map(|h| h.owner.as_ref().and_then(|o| o.subsystem.clone())).collect();
    assert_eq!(subs.len(), 2, "the frame's reference and the pin: {report}");
    assert!(subs.contains(&Some("dma".to_owned())));
    assert!(report.to_string().contains(&format!("{} dropped", report.events_dropped)));
    drop(pin);
    drop(frame);
}

/// Four threads each fail a reservation over their own pinned frame at the
/// same moment: four armings, and the report names each frame's pinner and
/// no other.
#[test]
fn owners_failures_from_several_threads_at_once_are_armed_and_named_apart() {
    let arena = PageArena::builder().pages(128).movable_pages(64).max_order(5).build().unwrap();
    let frames: Vec<_> = (0..4).map(|_| arena.alloc_movable(0).unwrap().into_block()).collect();
    let barrier = Barrier::new(frames.len());
    let pins: Vec<_> = std::thread::scope(|s| {
        let handles: Vec<_> = frames
            .iter()
            .map(|f| {
                let (arena, barrier) = (&arena, &barrier);
                s.spawn(move || {
                    let pin = dma_pin(arena, f.pfn());
                    barrier.wait();
                    fail_over(arena, f.pfn());
                    pin
                })
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    assert_eq!(arena.armings().len(), 4);
    let report = arena.owner_report_with(&no_frames());
    for f in &frames {
        let page = report.pages.iter().find(|p| p.pfn == f.pfn()).expect("every frame armed");
        assert_eq!(page.pincount, 1);
        let dma: Vec<_> = page
            .outstanding
            .iter()
            .filter(|h| {
                h.kind == EventKind::Pin && h.owner.as_ref().and_then(|o| o.subsystem.as_deref()) == Some("dma")
            })
            .collect();
        assert_eq!(dma.len(), 1, "{report}");
        assert!(dma[0].from_arming, "found held at arming");
        assert_eq!(dma[0].pfn, f.pfn());
    }
    drop(pins);
    let report = arena.owner_report_with(&no_frames());
    for p in &report.pages {
        assert!(p.outstanding.iter().all(|h| h.kind != EventKind::Pin), "{report}");
        assert!(p.releases.iter().any(|r| r.acquired_by.as_ref().and_then(|o| o.subsystem.as_deref()) == Some("dma")));
    }
}

/// Eager tracking: the failure names the latest holder, and the report
/// lists the allocation and the pin as outstanding, not the pin once gone.
#[test]
fn owners_eager_mode_lists_the_allocation_and_later_holders_exactly() {
    let tracking = Tracking { eager: true, depth: 4, ..Tracking::default() };
    let arena = PageArena::builder().pages(64).movable_pages(32).tracking(tracking).build().unwrap();
    let frame = arena.alloc_movable(0).unwrap().into_block();
    let pfn = frame.pfn();
    let pin = dma_pin(&arena, pfn);
    let f = match arena.reserve_range(pfn, 1, Reason::Contig) {
        Err(ContigError::Busy(f)) => f,
        other => panic!("{other:?}"),
    };
    assert_eq!(f.busy[0].attributed.and_then(|(_, a)| a.subsystem()), Some("dma"), "{f}");
    let kinds = |arena: &PageArena| -> Vec<EventKind> {
        let r = arena.owner_report_with(&no_frames());
        let page = r.pages.iter().find(|p| p.pfn == pfn).unwrap().clone();
        page.outstanding.iter().map(|h| h.kind).collect()
    };
    assert_eq!(kinds(&arena), [EventKind::Alloc, EventKind::Pin]);
    drop(pin);
    assert_eq!(kinds(&arena), [EventKind::Alloc]);
    drop(frame);
}
