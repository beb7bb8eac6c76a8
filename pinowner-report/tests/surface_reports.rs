//! Every report kind a service writes parses back and renders, and a
//! malformed, truncated or hand-edited report is an error or odd numbers,
//! never a panic of the tool.

use pinowner::svg::ArenaMap;
use pinowner::{ContigError, FragStats, OwnerReport, PageArena, Reason, Stats};
use pinowner_report::{render_flame, render_map, render_text, CliError, Flame};
use serde_json::{json, Value};

/// Every report kind, from one arena with a failed reservation and a pin
/// recorded after it.
fn reports() -> Vec<(&'static str, String)> {
    let arena = PageArena::builder().pages(128).movable_pages(64).build().unwrap();
    let frame = arena.alloc_movable(0).unwrap().into_block();
    let pin = frame.pin(0).unwrap();
    let Err(ContigError::Busy(failure)) = arena.reserve_contig(64, 64, Reason::Contig) else { panic!() };
    let pin2 = frame.pin(0).unwrap();
    drop(arena.alloc(3).unwrap());
    let out = vec![
        ("owner_report", arena.owner_report().to_json()),
        ("frag_stats", arena.frag_stats().to_json()),
        ("tracker_stats", arena.tracker_stats().to_json()),
        ("audit", arena.audit().to_json()),
        ("arena_map", arena.map().to_json()),
        ("contig_failure", failure.to_json()),
        ("stats", arena.stats().to_json()),
    ];
    drop((pin, pin2));
    out
}

/// Renders `json` with every command; a panic fails the test naming `what`.
fn render_all(what: &str, json: &str) {
    for cmd in ["text", "map", "flame", "flame --paths"] {
        let r = std::panic::catch_unwind(|| match cmd {
            "text" => render_text(json).map(drop),
            "map" => render_map(json).map(drop),
            "flame" => render_flame(json, Flame::Holders(pinowner::tracker::HoldWeight::HeldMicros)).map(drop),
            _ => render_flame(json, Flame::Paths).map(drop),
        });
        assert!(r.is_ok(), "`{cmd}` panicked on {what}");
    }
}

#[test]
fn surface_the_arenas_counters_read_back_and_render_as_text() {
    let arena = PageArena::builder().pages(64).movable_pages(32).build().unwrap();
    drop(arena.alloc(2).unwrap());
    assert!(arena.alloc(9).is_err());
    drop(arena.reserve_contig(8, 8, Reason::Contig).unwrap());
    let stats = arena.stats();
    let json = stats.to_json();
    assert_eq!(Stats::from_json(&json).unwrap(), stats);
    let text = render_text(&json).unwrap();
    assert!(text.starts_with("arena stats:\n  zone normal: 1 allocs, 1 frees, 1 failures, 0 live blocks"), "{text}");
    assert!(text.contains("allocs by order: 2:1") && text.contains("failures by order: 9:1"), "{text}");
    assert!(text.contains("reservations: 1 tried, 1 succeeded"), "{text}");
    assert!(text.contains("tracker: 0 blocks armed now"), "{text}");
    // The tool's command line takes it too, and `map` says it cannot draw it.
    assert!(matches!(render_map(&json), Err(CliError::WrongKind { .. })));
}

#[test]
fn surface_every_report_kind_renders_and_truncations_are_errors() {
    for (kind, json) in reports() {
        render_text(&json).unwrap_or_else(|e| panic!("{kind}: {e}"));
        let v: Value = serde_json::from_str(&json).unwrap();
        assert_eq!(v["kind"], kind);
        for cut in (0..json.len() - 1).step_by(11) {
            let e = render_text(&json[..cut]).expect_err("a truncated report does not render");
            assert!(matches!(e, CliError::Json(_)), "{kind} cut at {cut}: {e}");
            assert!(e.to_string().starts_with("not JSON: "), "{e}");
        }
    }
}

/// Paths to every number in `v`.
fn numbers(v: &Value, path: &mut Vec<String>, out: &mut Vec<Vec<String>>) {
    match v {
        Value::Number(_) => out.push(path.clone()),
        Value::Object(m) => m.iter().for_each(|(k, x)| {
            path.push(k.clone());
            numbers(x, path, out);
            path.pop();
        }),
        Value::Array(a) => a.iter().enumerate().for_each(|(i, x)| {
            path.push(i.to_string());
            numbers(x, path, out);
            path.pop();
        }),
        _ => {}
    }
}

#[test]
fn surface_reports_with_any_number_changed_render_without_a_panic() {
    for (kind, json) in reports() {
        let v: Value = serde_json::from_str(&json).unwrap();
        let mut paths = Vec::new();
        numbers(&v, &mut Vec::new(), &mut paths);
        for path in paths.iter().filter(|p| p[0] != "version") {
            for n in [json!(u64::MAX), json!(u32::MAX), json!(300)] {
                let mut w = v.clone();
                let slot = path.iter().fold(&mut w, |at, k| match k.parse::<usize>() {
                    Ok(i) if at.is_array() => &mut at[i],
                    _ => &mut at[k.as_str()],
                });
                *slot = n.clone();
                render_all(&format!("{kind} with {path:?} = {n}"), &w.to_string());
            }
        }
    }
}

#[test]
fn surface_inconsistent_fragmentation_statistics_render_bounded_indices() {
    let arena = PageArena::builder().pages(64).build().unwrap();
    let mut v: Value = serde_json::from_str(&arena.frag_stats().to_json()).unwrap();
    // More blocks than free pages, and orders past the word size.
    v["zones"][0]["free_pages"] = json!(1);
    v["zones"][0]["free_blocks"] = json!(vec![3usize; 70]);
    let frag = FragStats::from_json(&v.to_string()).unwrap();
    let z = &frag.zones[0];
    for o in [0, 1, 63, 64, 69, 255] {
        let i = z.unusable_index(o);
        assert!((0.0..=1.0).contains(&i), "order {o}: {i}");
        assert!(z.fragmentation_index(o).is_none_or(|f| f.is_finite()), "order {o}");
    }
    let text = render_text(&v.to_string()).unwrap();
    assert_eq!(text, frag.to_string());
    assert_eq!(text.lines().nth(1).unwrap().split_whitespace().count(), 3 + 70, "{text}");
}

#[test]
fn surface_a_map_spanning_the_address_space_renders_bounded() {
    let arena = PageArena::builder().pages(16).build().unwrap();
    let mut map = arena.map();
    map.pages = 0..usize::MAX;
    map.runs[0].pages = 0..usize::MAX;
    map.runs.push(map.runs[0].clone());
    let json = map.to_json();
    let svg = render_map(&json).unwrap();
    assert!(svg.starts_with("<svg") && svg.len() < 1 << 20, "{} bytes", svg.len());
    assert_eq!(ArenaMap::from_json(&json).unwrap().counts().free, usize::MAX, "saturated");
    let text = render_text(&json).unwrap();
    assert!(text.starts_with("arena map: pages 0x0..0xffffffffffffffff"), "{text}");
}

#[test]
fn surface_an_owner_report_with_counts_past_the_state_word_renders() {
    let json = reports().into_iter().find(|(k, _)| *k == "owner_report").unwrap().1;
    let mut v: Value = serde_json::from_str(&json).unwrap();
    v["pages"][0]["count"] = json!(u32::MAX);
    v["pages"][0]["pincount"] = json!(u32::MAX);
    v["pages"][0]["unrecorded_refs"] = json!(u32::MAX);
    v["pages"][0]["unrecorded_pins"] = json!(u32::MAX);
    let report = OwnerReport::from_json(&v.to_string()).unwrap();
    assert_eq!(report.pages[0].holders(), u32::MAX);
    let text = render_text(&v.to_string()).unwrap();
    assert!(text.contains(&format!("holders: {}", u32::MAX)), "{text}");
    assert!(report.folded_holders(pinowner::tracker::HoldWeight::Holds).contains(" 8589934590"));
}
