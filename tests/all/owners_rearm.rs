//! Who the owner report names after a block is armed, disarmed and armed
//! again: a holder recorded during the first arming is never listed twice,
//! and never after it let go.

use pinowner::{pin_tracked, ContigError, OwnerReport, PageArena, PagePin, Reason, ReportOptions};

#[pin_tracked(subsystem = "dma")]
fn dma_map(arena: &PageArena, pfn: usize) -> PagePin<&PageArena> {
    arena.pin(pfn).unwrap()
}

fn arena() -> PageArena {
    PageArena::builder().pages(128).movable_pages(64).max_order(5).build().unwrap()
}

fn fail_over(arena: &PageArena, pfn: usize) {
    match arena.reserve_range(pfn, 1, Reason::Contig) {
        Err(ContigError::Busy(_)) => {}
        other => panic!("{other:?}"),
    }
}

/// The report without stacks: no symbol resolution, so it stays fast.
fn report(arena: &PageArena) -> OwnerReport {
    arena.owner_report_with(&ReportOptions { frames: 0, ..ReportOptions::default() })
}

fn dma_holders(arena: &PageArena, pfn: usize) -> usize {
    let report = report(arena);
    let page = report.pages.iter().find(|p| p.pfn == pfn).expect("the block is in the report");
    page.outstanding.iter().filter(|h| h.owner.as_ref().and_then(|o| o.subsystem.as_deref()) == Some("dma")).count()
}

/// A pin recorded while the block was armed, still held when the block is
/// disarmed by request and armed again by a second failure, is one holder
/// (not one recorded and one "found at arming"), and once unpinned it is
/// no holder at all.
#[test]
fn owners_a_recorded_pin_found_again_at_rearming_is_one_holder_and_gone_once_unpinned() {
    let arena = arena();
    let frame = arena.alloc_movable(0).unwrap().into_block();
    let pfn = frame.pfn();
    fail_over(&arena, pfn);
    let pin = dma_map(&arena, pfn);
    assert_eq!(dma_holders(&arena, pfn), 1);
    assert_eq!(arena.disarm(pfn..pfn + 1), 1);
    fail_over(&arena, pfn);
    assert_eq!(dma_holders(&arena, pfn), 1, "{}", report(&arena));
    drop(pin);
    assert_eq!(dma_holders(&arena, pfn), 0, "a departed holder is listed: {}", report(&arena));
    let report = report(&arena);
    let page = report.pages.iter().find(|p| p.pfn == pfn).unwrap();
    assert_eq!(page.holders(), 1, "only the frame's own reference: {report}");
    drop(frame);
}

#[pin_tracked(subsystem = "exit")]
fn batch_collect(arena: &PageArena) -> pinowner::Block<&PageArena> {
    arena.alloc_movable(0).unwrap().into_block()
}

#[pin_tracked(subsystem = "net")]
fn net_read(arena: &PageArena, pfn: usize) -> pinowner::PageRef<&PageArena> {
    arena.get(pfn).unwrap()
}

/// The holder a failure named, given up to C with `into_raw` after the
/// arming and released with `put_raw` once a reader came, is gone from the
/// report's outstanding holders.
#[test]
fn owners_a_holder_found_at_arming_released_raw_after_into_raw_is_gone() {
    let arena = arena();
    let frame = batch_collect(&arena);
    let pfn = frame.pfn();
    fail_over(&arena, pfn);
    let raw = frame.into_raw();
    let reader = net_read(&arena, pfn);
    arena.put_raw(raw).unwrap();
    let report = report(&arena);
    let page = report.pages.iter().find(|p| p.pfn == pfn).unwrap();
    let exit =
        page.outstanding.iter().filter(|h| h.owner.as_ref().and_then(|o| o.subsystem.as_deref()) == Some("exit"));
    assert_eq!(exit.count(), 0, "a departed holder is listed: {report}");
    assert_eq!(page.holders(), 1, "{report}");
    drop(reader);
}
