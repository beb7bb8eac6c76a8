//! The arena map (`PageArena::map`, `map_svg`): runs by state, armed pages,
//! the failed window, and an SVG whose structure a browser accepts.

use pinowner::svg::{ArenaMap, PageRun, ARMED_COLOUR};
use pinowner::{ContigError, PageArena, PageClass, Reason, ZoneKind};

/// The element names of `svg` in document order, checked to nest: every
/// opened element is closed (by `/>` or its own end tag) in order.
fn balanced_elements(svg: &str) -> Vec<String> {
    let mut stack: Vec<String> = Vec::new();
    let mut seen = Vec::new();
    let mut rest = svg;
    while let Some(i) = rest.find('<') {
        let tag_end = rest[i..].find('>').expect("every tag closes") + i;
        let tag = &rest[i + 1..tag_end];
        assert!(!tag.contains('<'), "a tag inside a tag: {tag}");
        if let Some(name) = tag.strip_prefix('/') {
            assert_eq!(stack.pop().as_deref(), Some(name), "end tag </{name}> out of order");
        } else {
            let name: String = tag.chars().take_while(|c| c.is_ascii_alphanumeric()).collect();
            assert!(!name.is_empty(), "a tag without a name: {tag}");
            seen.push(name.clone());
            if !tag.ends_with('/') {
                stack.push(name);
            }
        }
        rest = &rest[tag_end + 1..];
    }
    assert!(stack.is_empty(), "unclosed elements: {stack:?}");
    seen
}

/// The `class` attribute values of the page rectangles.
fn page_rects(svg: &str) -> Vec<&str> {
    svg.lines()
        .filter_map(|l| l.strip_prefix(r#"<rect class=""#))
        .map(|l| &l[..l.find('"').unwrap()])
        .filter(|c| {
            c.starts_with("free") || c.starts_with("used") || c.starts_with("pinned") || c.starts_with("contig")
        })
        .collect()
}

#[test]
fn a_fresh_arena_is_one_free_run_per_zone() {
    let arena = PageArena::builder().pages(256).movable_pages(64).build().unwrap();
    let map = arena.map();
    assert_eq!(map.pages, 0..256);
    assert_eq!(
        map.zones.iter().map(|z| (z.kind, z.pages.clone())).collect::<Vec<_>>(),
        [(ZoneKind::Normal, 0..192), (ZoneKind::Movable, 192..256)]
    );
    // The zones' free runs touch and are alike, so they merge: one run.
    assert_eq!(map.runs, [PageRun { pages: 0..256, class: PageClass::Free, armed: false }]);
    assert_eq!(map.window, None);
}

#[test]
fn runs_follow_block_states_and_a_pinned_page_is_drawn_pinned() {
    let arena = PageArena::builder().pages(64).build().unwrap();
    let used = arena.alloc(2).unwrap();
    let pinned = arena.alloc(0).unwrap();
    let pin = pinned.pin(0).unwrap();
    let map = arena.map();
    let (u, p) = (used.pfn(), pinned.pfn());
    assert!(map.runs.contains(&PageRun { pages: u..u + 4, class: PageClass::Used, armed: false }), "{map:?}");
    assert!(map.runs.contains(&PageRun { pages: p..p + 1, class: PageClass::Pinned, armed: false }), "{map:?}");
    assert!(map.runs.iter().all(|r| r.class == PageClass::Free || r.pages.start == u || r.pages.start == p));
    let c = map.counts();
    assert_eq!((c.used, c.pinned, c.free, c.armed), (4, 1, 59, 0));

    let svg = arena.map_svg();
    let elements = balanced_elements(&svg);
    assert_eq!(elements.first().map(String::as_str), Some("svg"));
    let rects = page_rects(&svg);
    assert_eq!(rects.iter().filter(|c| **c == "pinned").count(), 1);
    assert_eq!(rects.iter().filter(|c| **c == "used").count(), 1);
    assert!(svg.contains(&format!(r#"fill="{}""#, PageClass::Pinned.colour())));
    assert!(svg.contains(&format!(r#"fill="{}""#, PageClass::Used.colour())));
    assert!(svg.contains(&format!("<title>{p:#x}..{:#x}: 1 pages, pinned</title>", p + 1)), "{svg}");
    drop((pin, pinned, used));
}

#[test]
fn a_run_is_at_most_three_rects_its_first_row_its_full_rows_and_its_last_row() {
    // 64 pages: 16 a row. An order-5 block fills two rows exactly: one
    // rectangle two rows high; the free half after it, another.
    let arena = PageArena::builder().pages(64).build().unwrap();
    let block = arena.alloc(5).unwrap();
    let svg = arena.map_svg();
    assert_eq!(page_rects(&svg), ["used", "free"], "{svg}");
    assert!(svg.contains(r#"width="256.00" height="32.00""#), "two full rows of 16 px cells");
    drop(block);
    // Pages 3..37 used by a reservation: rest of row 0, rows 1 and 2 (full),
    // start of row 3... here 3..16, 16..32, 32..37.
    let run = arena.reserve_range(3, 34, Reason::Contig).unwrap();
    let svg = arena.map_svg();
    assert_eq!(page_rects(&svg), ["free", "contig", "contig", "contig", "free", "free"], "{svg}");
    drop(run);
}

#[test]
fn a_failed_reservation_shows_its_window_and_armed_blocks() {
    let arena = PageArena::builder().pages(128).movable_pages(64).build().unwrap();
    let frame = arena.alloc_movable(0).unwrap().into_block();
    let pin = frame.pin(0).unwrap();
    let Err(ContigError::Busy(failure)) = arena.reserve_contig(64, 64, Reason::Contig) else {
        panic!("the pinned frame blocks the whole movable zone")
    };
    let map = arena.map();
    assert_eq!(map.window, Some(failure.window.clone()), "the latest failure's window");
    let armed: Vec<_> = map.runs.iter().filter(|r| r.armed).collect();
    assert_eq!(armed.len(), 1);
    assert_eq!((armed[0].pages.start, armed[0].class), (frame.pfn(), PageClass::Pinned));

    let svg = failure.map_svg(&arena);
    balanced_elements(&svg);
    assert_eq!(page_rects(&svg).iter().filter(|c| **c == "pinned armed").count(), 1);
    assert!(svg.contains(&format!(r#"stroke="{ARMED_COLOUR}""#)));
    // 128 pages: 32 a row, so the 64-page window is two full rows: one
    // outline.
    assert_eq!(svg.matches(r#"<rect class="window""#).count(), 1, "{svg}");
    drop((pin, frame));
}

#[test]
fn a_failure_alone_maps_its_window() {
    let arena = PageArena::builder().pages(64).movable_pages(32).build().unwrap();
    let frames: Vec<_> = (0..32).map(|_| arena.alloc_movable(0).unwrap().into_block()).collect();
    let a = frames[3].pin(0).unwrap();
    let b = arena.get(frames[9].pfn()).unwrap();
    let (pa, pb) = (frames[3].pfn(), frames[9].pfn());
    drop(frames);
    let Err(ContigError::Busy(failure)) = arena.reserve_contig(32, 32, Reason::Contig) else { panic!() };
    let map = ArenaMap::from_failure(&failure, 4096);
    assert_eq!(map.pages, failure.window);
    let c = map.counts();
    assert_eq!((c.pinned, c.used, c.armed, c.free), (1, 1, 2, 30));
    let pinned = map.runs.iter().find(|r| r.class == PageClass::Pinned).unwrap();
    let used = map.runs.iter().find(|r| r.class == PageClass::Used).unwrap();
    assert_eq!((pinned.pages.start, used.pages.start), (pa, pb));
    balanced_elements(&map.to_svg());
    drop((a, b));
}

#[test]
fn the_map_round_trips_through_json_and_other_reports_are_refused() {
    let arena = PageArena::builder().pages(64).movable_pages(32).build().unwrap();
    let _held = arena.alloc(1).unwrap();
    let map = arena.map();
    let json = map.to_json();
    let v: serde_json::Value = serde_json::from_str(&json).unwrap();
    assert_eq!((v["version"].as_u64(), v["kind"].as_str()), (Some(1), Some("arena_map")));
    assert_eq!(ArenaMap::from_json(&json).unwrap(), map);
    let err = ArenaMap::from_json(&arena.frag_stats().to_json()).unwrap_err();
    assert_eq!(err.to_string(), r#"a report of kind "frag_stats", not "arena_map""#);
    let err = ArenaMap::from_json("{\"kind\": \"arena_map\"}").unwrap_err();
    assert!(matches!(err, pinowner::ReportJsonError::Version { version: 0, .. }), "no version: {err}");
    let newer = json.replacen("\"version\": 1", "\"version\": 99", 1);
    assert!(matches!(ArenaMap::from_json(&newer), Err(pinowner::ReportJsonError::Version { version: 99, .. })));
}
