//! End to end: reports written by a real arena's `to_json`, rendered by the
//! tool's functions and by its command line.

use pinowner::svg::ArenaMap;
use pinowner::tracker::HoldWeight;
use pinowner::{pin_tracked, ContigError, ContigFailure, PageArena, PagePin, Reason};
use pinowner_report::{render_flame, render_map, render_text, run, CliError, Flame};

#[pin_tracked(subsystem = "dma", name = "rx_refill")]
#[inline(never)]
fn rx_refill(arena: &PageArena, pfn: usize) -> PagePin<&PageArena> {
    arena.pin(pfn).unwrap()
}

/// Runs `f` on an arena whose reservation failed on a frame pinned by
/// `rx_refill`; the failure armed the frame, so a second pin taken after
/// it is recorded with its stack.
fn with_failure(f: impl FnOnce(&PageArena, &ContigFailure)) {
    let arena = PageArena::builder().pages(128).movable_pages(64).build().unwrap();
    let frame = arena.alloc_movable(0).unwrap().into_block();
    let pfn = frame.pfn();
    let first = rx_refill(&arena, pfn);
    drop(frame);
    let Err(ContigError::Busy(failure)) = arena.reserve_contig(64, 64, Reason::Contig) else { panic!() };
    let second = rx_refill(&arena, pfn);
    f(&arena, &failure);
    drop((first, second));
}

#[test]
fn text_names_the_acquirer_of_a_failure_and_renders_every_kind() {
    with_failure(|arena, failure| {
        let text = render_text(&failure.to_json()).unwrap();
        assert!(text.starts_with(&format!(
            "reservation failed: reason=contig window={:#x}..{:#x}",
            failure.window.start, failure.window.end
        )));
        assert!(text.contains("pincount=1"), "one pin at the failure: {text}");
        assert!(text.contains("1. rx_refill [dma]"), "the ranking names the pinner: {text}");
        // Reports that read back render exactly as the library prints them.
        let report = arena.owner_report();
        assert_eq!(render_text(&report.to_json()).unwrap(), report.to_string());
        let frag = arena.frag_stats();
        assert_eq!(render_text(&frag.to_json()).unwrap(), frag.to_string());
        let stats = render_text(&arena.tracker_stats().to_json()).unwrap();
        assert!(stats.starts_with("tracker: 1 blocks armed now, 1 armings"), "{stats}");
        let audit = render_text(&arena.audit().to_json()).unwrap();
        assert!(audit.starts_with("audit: 1 blocks held"), "{audit}");
        assert!(audit.contains("pins=2") && audit.contains("rx_refill [dma]"), "{audit}");
        let map = render_text(&arena.map().to_json()).unwrap();
        assert!(map.contains("pinned 1, contig 0, armed 1"), "{map}");
    });
}

#[test]
fn the_map_of_an_arena_map_report_is_the_arenas_own_svg() {
    with_failure(|arena, failure| {
        let map = arena.map();
        assert_eq!(render_map(&map.to_json()).unwrap(), map.to_svg());
        // A failure alone maps its window as the library does (page size
        // unknown from the JSON).
        let svg = render_map(&failure.to_json()).unwrap();
        assert_eq!(svg, ArenaMap::from_failure(failure, 0).to_svg());
        assert_eq!(svg.matches(r#"class="pinned armed""#).count(), 1, "{svg}");
    });
}

#[test]
fn the_holder_flamegraph_is_an_inferno_svg_naming_the_holder() {
    with_failure(|arena, _| {
        let json = arena.owner_report().to_json();
        let svg = render_flame(&json, Flame::Holders(HoldWeight::Holds)).unwrap();
        assert!(svg.contains("<svg") && svg.trim_end().ends_with("</svg>"), "{svg}");
        assert!(svg.contains("pinowner: holders in the way"));
        // The pin found at arming appears under its site; the recorded one
        // under its stack.
        assert!(svg.contains("rx_refill [dma]"), "the found holder by site");
        assert!(svg.contains("held"), "the root frame");
        let by_time = render_flame(&json, Flame::Holders(HoldWeight::HeldMicros)).unwrap();
        assert!(by_time.contains("µs held"));
        let paths = render_flame(&json, Flame::Paths).unwrap();
        assert!(paths.contains("acquire"), "the recorded pin's path");
    });
}

#[test]
fn commands_refuse_reports_they_cannot_draw() {
    let arena = PageArena::builder().pages(16).build().unwrap();
    let frag = arena.frag_stats().to_json();
    let e = render_flame(&frag, Flame::Paths).unwrap_err();
    assert_eq!(e.to_string(), "flame needs an owner_report, and this is a frag_stats report");
    let e = render_map(&frag).unwrap_err();
    assert!(matches!(e, CliError::WrongKind { command: "map", .. }), "{e}");
    // An owner report with nothing armed has no holders to draw.
    let e = render_flame(&arena.owner_report().to_json(), Flame::Holders(HoldWeight::Holds)).unwrap_err();
    assert_eq!(e.to_string(), "the owner report has no outstanding holders to draw");
    assert!(matches!(render_text(r#"{"kind": "mystery"}"#), Err(CliError::UnknownKind(k)) if k == "mystery"));
    assert!(matches!(render_text("not json"), Err(CliError::Json(_))));
}

fn args(a: &[&str]) -> Vec<String> {
    a.iter().map(|s| (*s).to_owned()).collect()
}

#[test]
fn the_command_line_reads_a_file_and_writes_stdout_or_the_output_file() {
    let dir = std::env::temp_dir().join(format!("pinowner-report-test-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    with_failure(|arena, failure| {
        let failure_json = dir.join("failure.json");
        std::fs::write(&failure_json, failure.to_json()).unwrap();
        let report_json = dir.join("owner.json");
        std::fs::write(&report_json, arena.owner_report().to_json()).unwrap();

        let mut out = Vec::new();
        run(&args(&["text", failure_json.to_str().unwrap()]), &mut out).unwrap();
        assert!(String::from_utf8(out).unwrap().contains("rx_refill [dma]"));

        let svg = dir.join("flame.svg");
        let mut out = Vec::new();
        run(&args(&["flame", report_json.to_str().unwrap(), "-o", svg.to_str().unwrap(), "--time"]), &mut out).unwrap();
        assert!(out.is_empty(), "the SVG went to the file");
        assert!(std::fs::read_to_string(&svg).unwrap().contains("µs held"));
    });
    let mut out = Vec::new();
    run(&args(&["--help"]), &mut out).unwrap();
    assert!(String::from_utf8(out).unwrap().starts_with("usage: pinowner-report"));
    for (bad, why) in [
        (&["text"][..], "text needs a report file (or - for stdin)"),
        (&["draw", "x.json"][..], "unknown command \"draw\""),
        (&["map", "x.json", "--time"][..], "--time and --paths are options of flame"),
        (&["text", "a.json", "b.json"][..], "unexpected argument \"b.json\""),
        (&["text", "a.json", "-o"][..], "-o needs a file name"),
    ] {
        match run(&args(bad), &mut Vec::new()) {
            Err(CliError::Usage(m)) => assert_eq!(m, why),
            other => panic!("{bad:?}: {other:?}"),
        }
    }
    let missing = dir.join("missing.json");
    let e = run(&args(&["text", missing.to_str().unwrap()]), &mut Vec::new()).unwrap_err();
    assert!(matches!(e, CliError::Io { .. }), "{e}");
    let _ = std::fs::remove_dir_all(&dir);
}
