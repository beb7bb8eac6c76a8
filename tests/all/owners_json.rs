//! Stored reports read back by `pinowner-report`: an owner report with
//! every kind of record (releases paired and from before arming, a move,
//! disarms, raw events) and the failure that armed it round-trip through
//! JSON and render as text, a map and flamegraphs naming the holders.

use pinowner::{pin_tracked, ContigError, OwnerReport, PageArena, PagePin, Reason, ReportOptions};
use pinowner_report::{render_flame, render_map, render_text, Flame};

#[pin_tracked(subsystem = "rdma", name = "rdma::reg_mr")]
fn reg_mr(arena: &PageArena, pfn: usize) -> PagePin<&PageArena> {
    arena.pin(pfn).unwrap()
}

/// Everything a long-running service's report holds survives `to_json`
/// and `from_json` unchanged, and the tool's text, map and flamegraphs
/// name the memory registration holding the page.
#[test]
fn owners_a_busy_report_round_trips_through_json_and_the_report_tool() {
    let arena = PageArena::builder().pages(128).movable_pages(64).max_order(5).build().unwrap();
    let frame = arena.alloc_movable(0).unwrap().into_block();
    let pfn = frame.pfn();
    let mover = arena.alloc_movable(0).unwrap();
    let mr = reg_mr(&arena, pfn);
    let failure = match arena.reserve_range(pfn / 32 * 32, 32, Reason::Contig) {
        Err(ContigError::Busy(f)) => f,
        other => panic!("{other:?}"),
    };
    // Armed: raw counts, a paired release, a second pin.
    arena.get_raw(pfn).unwrap();
    arena.put_raw(pfn).unwrap();
    let second = reg_mr(&arena, pfn);
    drop(second);
    assert_eq!(arena.arm(mover.pfn()..mover.pfn() + 1, Reason::Shrink), 1);
    mover.relocate().unwrap();
    let report = arena.owner_report_with(&ReportOptions { events: true, ..ReportOptions::default() });
    let json = report.to_json();
    let read = OwnerReport::from_json(&json).unwrap();
    assert_eq!(read, report);
    let text = render_text(&json).unwrap();
    assert_eq!(text, report.to_string());
    assert!(text.contains("rdma::reg_mr [rdma]"), "{text}");
    let flame = render_flame(&json, Flame::Holders(pinowner::tracker::HoldWeight::Holds)).unwrap();
    assert!(flame.contains("rdma::reg_mr"), "the holder is drawn");
    render_flame(&json, Flame::Paths).unwrap();

    let fjson = failure.to_json();
    let ftext = render_text(&fjson).unwrap();
    assert!(ftext.contains("rdma::reg_mr [rdma]"), "{ftext}");
    assert!(ftext.contains(&format!("{} attributed", failure.attributed())), "{ftext}");
    assert!(render_map(&fjson).unwrap().starts_with("<svg"));
    drop(mr);
    drop(frame);
}
