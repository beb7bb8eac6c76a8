//! Lazy owner tracking: arming, recording, pairing, disarming, bounds,
//! eager mode, reports in every format, the teardown audit, and waiting
//! reservations.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use pinowner::tracker::{DisarmCause, StackGroupKind};
use pinowner::{
    pin_tracked, Acquirer, ContigError, EventKind, LeakCheck, PageArena, PageFlags, Reason, ReportOptions, Tracking,
};

fn arena() -> PageArena {
    PageArena::builder().pages(256).movable_pages(128).max_order(6).build().unwrap()
}

fn kinds(arena: &PageArena) -> Vec<EventKind> {
    arena.tracked_events().iter().map(|e| e.kind).collect()
}

#[pin_tracked(subsystem = "dma")]
fn dma_pin<'a>(arena: &'a PageArena, pfn: usize) -> pinowner::PagePin<&'a PageArena> {
    arena.pin(pfn).unwrap()
}

#[pin_tracked(subsystem = "pool", name = "pool::batch_release")]
fn batch_release(refs: Vec<pinowner::PageRef<&PageArena>>) {
    drop(refs);
}

#[pin_tracked(subsystem = "pool")]
fn pool_get<'a>(arena: &'a PageArena, pfn: usize) -> pinowner::PageRef<&'a PageArena> {
    arena.get(pfn).unwrap()
}

/// Fails a one-page reservation over `pfn`, arming its block.
fn fail_over(arena: &PageArena, pfn: usize, reason: Reason) {
    let e = arena.reserve_range(pfn, 1, reason).unwrap_err();
    assert!(matches!(e, ContigError::Busy(_)), "{e:?}");
}

#[test]
fn nothing_is_recorded_or_allocated_while_nothing_is_armed() {
    let arena = arena();
    let b = arena.alloc_movable(0).unwrap().into_block();
    let r = arena.get(b.pfn()).unwrap();
    let p = b.pin(0).unwrap();
    drop((r, p));
    assert_eq!(arena.tracker_stats(), Default::default());
    assert!(arena.tracked_events().is_empty());
    assert!(arena.owner_report().pages.is_empty());
}

#[test]
fn a_failure_arms_its_busy_block_and_later_count_changes_are_recorded_with_stacks() {
    let arena = arena();
    let b = arena.alloc_movable(0).unwrap().into_block();
    let pfn = b.pfn();
    fail_over(&arena, pfn, Reason::Shrink);
    assert!(arena.page_state(pfn).unwrap().flags.contains(PageFlags::TRACKED));
    let pin = dma_pin(&arena, pfn);
    let r = pool_get(&arena, pfn);
    drop(r);
    drop(pin);
    let events = arena.tracked_events();
    let k: Vec<_> = events.iter().map(|e| e.kind).collect();
    assert_eq!(k, [EventKind::Arm, EventKind::Pin, EventKind::Get, EventKind::Put, EventKind::Unpin]);
    let pin_ev = &events[1];
    assert_eq!((pin_ev.pfn, pin_ev.head), (pfn, pfn));
    assert_eq!((pin_ev.refs, pin_ev.pins), ((1, 1), (0, 1)));
    match pin_ev.who {
        Some(Acquirer::Site(s)) => assert_eq!((s.name(), s.subsystem()), ("all::track::dma_pin", Some("dma"))),
        other => panic!("{other:?}"),
    }
    assert_eq!(events[3].refs, (2, 1), "the put's counts before and after");
    assert!(events.windows(2).all(|w| w[0].seq < w[1].seq && w[0].at <= w[1].at));
    let armings = arena.armings();
    assert_eq!(armings.len(), 1);
    assert_eq!(armings[0].reason, Reason::Shrink);
    assert!(events.iter().all(|e| e.arming == armings[0].id));
    // The stack is unresolved until asked, and names the caller.
    let frames = arena.resolve_stack(pin_ev.stack.expect("a stack"));
    assert!(frames.iter().any(|f| f.function.as_deref().is_some_and(|n| n.contains("dma_pin"))), "{frames:#?}");
    assert!(
        !frames[0].function.as_deref().unwrap_or("").starts_with("pinowner::"),
        "the arena's own frames are trimmed: {frames:#?}"
    );
}

#[test]
fn the_report_pairs_releases_with_acquires_and_counts_holders_from_before_arming() {
    let arena = arena();
    let b = arena.alloc_movable(0).unwrap().into_block();
    let pfn = b.pfn();
    let early = arena.get(pfn).unwrap(); // before arming: never recorded
    fail_over(&arena, pfn, Reason::Contig);
    let pin = dma_pin(&arena, pfn);
    let held = pool_get(&arena, pfn);
    let gone = pool_get(&arena, pfn);
    batch_release(vec![gone, early]);
    let report = arena.owner_report();
    assert_eq!(report.version, pinowner::tracker::REPORT_VERSION);
    assert_eq!(report.pages.len(), 1);
    let page = &report.pages[0];
    assert_eq!((page.pfn, page.count, page.pincount), (pfn, 2, 1));
    assert_eq!(page.outstanding.len(), 2, "the pin and the held ref: {page:#?}");
    assert_eq!((page.unrecorded_refs, page.unrecorded_pins), (1, 0), "the block's own ref");
    assert_eq!(page.releases.len(), 2);
    let paired = page.releases.iter().find(|r| r.held_ns.is_some()).expect("one release paired");
    assert_eq!(paired.acquired_by.as_ref().and_then(|o| o.function.as_deref()), Some("all::track::pool_get"));
    assert_eq!(paired.site.as_ref().and_then(|o| o.function.as_deref()), Some("pool::batch_release"));
    let unpaired = page.releases.iter().find(|r| r.held_ns.is_none()).unwrap();
    assert_eq!(unpaired.site.as_ref().and_then(|o| o.subsystem.as_deref()), Some("pool"));
    // Views: the pin holder and the pool getter hold one count each.
    let top = report.top_holder().unwrap();
    assert_eq!(
        top.owner.as_ref().and_then(|o| o.function.as_deref()),
        Some("all::track::dma_pin"),
        "{:#?}",
        report.by_site
    );
    assert_eq!((top.pins, top.refs, top.pages), (1, 0, 1));
    let dma = report.by_subsystem.iter().find(|s| s.subsystem.as_deref() == Some("dma")).unwrap();
    assert_eq!(dma.pins, 1);
    let release_paths: Vec<_> = report.stacks.iter().filter(|s| s.kind == StackGroupKind::Release).collect();
    assert!(!release_paths.is_empty());
    assert!(release_paths.iter().any(|s| s.frames.iter().any(|f| f.contains("batch_release"))), "{release_paths:#?}");
    let text = report.to_string();
    assert!(text.contains(&format!("pfn={pfn:#x} order=0 count=2 pincount=1 reason=contig armed=yes")), "{text}");
    assert!(text.contains("     => "), "{text}");
    // The early reference was the latest acquirer when the failure armed
    // the block: found at arming, its release names it.
    assert!(text.contains("taken before arming by tests/all/track.rs:"), "{text}");
    let early_release = page.releases.iter().find(|r| r.held_ns.is_none()).unwrap();
    assert!(early_release.acquired_by.as_ref().is_some_and(|o| o.function.is_none()), "{early_release:?}");
    drop((held, pin, b));
}

#[test]
fn a_holder_from_before_arming_is_attributed_through_a_tail_page() {
    let arena = arena();
    let b = arena.alloc_movable(1).unwrap().into_block();
    let pin = dma_pin(&arena, b.pfn() + 1); // through the tail, before arming
    fail_over(&arena, b.pfn(), Reason::Contig);
    let report = arena.owner_report();
    let page = &report.pages[0];
    // The failure attributed the pin: the arming lists it as found held.
    assert_eq!((page.pfn, page.unrecorded_pins, page.outstanding.len()), (b.pfn(), 0, 1), "{page:#?}");
    assert!(page.outstanding[0].from_arming);
    assert_eq!(page.outstanding[0].owner.as_ref().and_then(|o| o.subsystem.as_deref()), Some("dma"));
    assert_eq!(page.attributed.as_ref().and_then(|o| o.subsystem.as_deref()), Some("dma"), "{page:#?}");
    let top = report.top_holder().expect("the pin's site holds a count");
    assert_eq!((top.owner.as_ref().and_then(|o| o.subsystem.as_deref()), top.pins), (Some("dma"), 1));
    drop((pin, b));
}

#[test]
fn the_last_put_disarms_exactly_once_and_the_history_stays() {
    let arena = arena();
    let b = arena.alloc_movable(0).unwrap().into_block();
    let pfn = b.pfn();
    fail_over(&arena, pfn, Reason::Contig);
    assert_eq!(arena.tracker_stats().armed_blocks, 1);
    drop(b);
    assert_eq!(kinds(&arena), [EventKind::Arm, EventKind::Put, EventKind::Disarm(DisarmCause::Freed)]);
    assert!(!arena.page_state(pfn).unwrap().flags.contains(PageFlags::TRACKED));
    assert_eq!(arena.tracker_stats().armed_blocks, 0);
    assert_eq!(arena.disarm_all(), 0, "a freed block is not disarmed twice");
    // Reallocated, it is not armed for its new owner.
    let again = arena.alloc_movable(0).unwrap().into_block();
    assert_eq!(again.pfn(), pfn);
    drop(arena.get(pfn).unwrap());
    assert_eq!(arena.tracked_events().len(), 3);
    let report = arena.owner_report();
    assert_eq!(report.pages[0].disarmed, Some(DisarmCause::Freed));
    drop(again);
}

#[test]
fn disarm_on_request_leaves_the_history_and_stops_recording() {
    let arena = arena();
    let a = arena.alloc_movable(0).unwrap().into_block();
    fail_over(&arena, a.pfn(), Reason::Contig);
    assert_eq!(arena.disarm(a.pfn()..a.pfn() + 1), 1);
    assert_eq!(arena.disarm(a.pfn()..a.pfn() + 1), 0, "exactly once");
    drop(arena.get(a.pfn()).unwrap());
    assert_eq!(kinds(&arena), [EventKind::Arm, EventKind::Disarm(DisarmCause::Request)]);
    assert_eq!(arena.owner_report().pages[0].disarmed, Some(DisarmCause::Request));
    drop(a);
}

#[test]
fn a_later_success_of_the_same_request_disarms_what_its_failure_armed() {
    let arena = arena();
    let movable = arena.zone_range(pinowner::ZoneKind::Movable);
    let c = arena.alloc_movable(0).unwrap().into_block();
    let other = if (movable.start..movable.start + 64).contains(&c.pfn()) { movable.start + 64 } else { movable.start };
    let blocker = arena.reserve_range(other, 64, Reason::Contig).unwrap();
    let e = arena.reserve_contig(64, 64, Reason::Compaction).unwrap_err();
    let ContigError::Busy(f) = e else { panic!("{e:?}") };
    assert_eq!(f.busy.iter().map(|x| x.head).collect::<Vec<_>>(), [c.pfn()]);
    assert!(arena.page_state(c.pfn()).unwrap().flags.contains(PageFlags::TRACKED));
    // A different request succeeding changes nothing.
    drop(arena.reserve_range(c.pfn() ^ 1, 1, Reason::Compaction).unwrap());
    assert!(arena.page_state(c.pfn()).unwrap().flags.contains(PageFlags::TRACKED));
    drop(blocker);
    let run = arena.reserve_contig(64, 64, Reason::Compaction).unwrap();
    assert_eq!(run.pfn(), other);
    assert!(!arena.page_state(c.pfn()).unwrap().flags.contains(PageFlags::TRACKED), "disarmed by the success");
    assert_eq!(kinds(&arena).last(), Some(&EventKind::Disarm(DisarmCause::Succeeded)));
    drop((run, c));
}

#[test]
fn a_full_history_drops_and_counts_per_page_and_in_total() {
    let arena = PageArena::builder()
        .pages(64)
        .movable_pages(32)
        .tracking(Tracking { capacity: 8, depth: 4, ..Tracking::default() })
        .build()
        .unwrap();
    let b = arena.alloc_movable(0).unwrap().into_block();
    fail_over(&arena, b.pfn(), Reason::Contig);
    for _ in 0..50 {
        drop(arena.get(b.pfn()).unwrap());
    }
    let stats = arena.tracker_stats();
    assert_eq!(stats.recorded, 101);
    assert_eq!(stats.dropped, 101 - 8);
    let report = arena.owner_report();
    assert_eq!(report.events_dropped, 93);
    assert_eq!(report.pages[0].dropped, 93);
    assert!(report.to_string().contains("dropped=93"), "{report}");
    // Taking the history makes room again.
    let taken = arena.take_owner_report(&ReportOptions::default());
    assert_eq!(taken.events_in_report, 8);
    drop(arena.get(b.pfn()).unwrap());
    assert_eq!(arena.tracked_events().len(), 2);
}

#[test]
fn an_overflowing_pin_on_an_armed_page_records_nothing_and_keeps_the_attribution() {
    let arena = PageArena::builder()
        .pages(64)
        .movable_pages(32)
        .tracking(Tracking { depth: 0, ..Tracking::default() })
        .build()
        .unwrap();
    let b = arena.alloc_movable(0).unwrap().into_block();
    let pins: Vec<_> = (0..32767).map(|_| b.pin(0).unwrap()).collect();
    fail_over(&arena, b.pfn(), Reason::Contig);
    let last = dma_pin(&arena, b.pfn()); // the 32768th: at the limit
    let recorded = arena.tracker_stats().recorded;
    assert!(matches!(b.pin(0), Err(pinowner::AcquireError::PinOverflow { .. })));
    assert_eq!(arena.tracker_stats().recorded, recorded, "a refused pin is no event (nor a put)");
    match arena.page_info(b.pfn()).unwrap().acquirer {
        Some(Acquirer::Site(s)) => assert_eq!(s.subsystem(), Some("dma"), "the latest holder stays attributed"),
        other => panic!("{other:?}"),
    }
    drop((last, pins, b));
}

#[test]
fn arming_records_are_bounded_and_the_forgotten_ones_counted() {
    let max = pinowner::tracker::MAX_ARMINGS;
    let arena =
        PageArena::builder().pages(4 * max).tracking(Tracking { depth: 0, ..Tracking::default() }).build().unwrap();
    let blocks: Vec<_> = (0..max + 3).map(|_| arena.alloc(0).unwrap()).collect();
    for b in &blocks {
        // A different window each time: a new arming record.
        arena.arm(b.pfn()..b.pfn() + 1, Reason::Custom("watch"));
    }
    let stats = arena.tracker_stats();
    assert_eq!((stats.armings, stats.armings_dropped, stats.armed_blocks), (max as u64 + 3, 3, max as u64 + 3));
    assert_eq!(arena.armings().len(), max);
    let report = arena.owner_report();
    assert_eq!(report.armings_dropped, 3);
    assert!(report.to_string().contains("(3 older ones forgotten)"), "{}", report.to_string().lines().next().unwrap());
    // Every armed block can still be disarmed (disarming walks the pages).
    assert_eq!(arena.disarm_all(), max + 3);
}

#[test]
fn eager_mode_records_every_allocation_with_its_stack_from_the_start() {
    let arena =
        PageArena::builder().pages(64).tracking(Tracking { eager: true, ..Tracking::default() }).build().unwrap();
    let line = line!() + 1;
    let b = arena.alloc(1).unwrap();
    let r = arena.get(b.pfn() + 1).unwrap();
    let events = arena.tracked_events();
    assert_eq!(events.iter().map(|e| e.kind).collect::<Vec<_>>(), [EventKind::Alloc, EventKind::Get]);
    match events[0].who {
        Some(Acquirer::Location(l)) => assert_eq!(l.line(), line),
        other => panic!("{other:?}"),
    }
    assert!(events[0].stack.is_some());
    let report = arena.owner_report();
    assert_eq!(report.pages[0].outstanding.len(), 2, "alloc and get are both outstanding");
    assert_eq!(report.pages[0].reason.as_deref(), Some("eager"));
    let other = arena.alloc(0).unwrap();
    assert_eq!(arena.disarm_all(), 2, "eagerly armed blocks can be disarmed too");
    drop((r, b, other));
    assert_eq!(arena.tracker_stats().armed_blocks, 0);
}

#[test]
fn reports_filter_by_reason_and_range_and_apply_the_stack_threshold() {
    let arena = arena();
    let a = arena.alloc_movable(0).unwrap().into_block();
    let b = arena.alloc_movable(0).unwrap().into_block();
    fail_over(&arena, a.pfn(), Reason::Shrink);
    fail_over(&arena, b.pfn(), Reason::LongtermPin);
    let pa = dma_pin(&arena, a.pfn());
    let pb = dma_pin(&arena, b.pfn());
    let shrink = arena.owner_report_with(&ReportOptions { reason: Some(Reason::Shrink), ..Default::default() });
    assert_eq!(shrink.pages.iter().map(|p| p.pfn).collect::<Vec<_>>(), [a.pfn()]);
    assert_eq!(shrink.armings.len(), 1);
    let ranged = arena.owner_report_with(&ReportOptions { range: Some(b.pfn()..b.pfn() + 1), ..Default::default() });
    assert_eq!(ranged.pages.iter().map(|p| p.pfn).collect::<Vec<_>>(), [b.pfn()]);
    let all = arena.owner_report_with(&ReportOptions { threshold: 2, ..Default::default() });
    assert_eq!(all.pages.len(), 2);
    assert!(all.stacks.iter().all(|s| s.count >= 2), "{:#?}", all.stacks);
    assert!(all.stacks_below_threshold > 0 || all.stacks.iter().any(|s| s.count == 2));
    drop((pa, pb, a, b));
}

#[test]
fn json_is_versioned_and_folded_stacks_are_flamegraph_lines() {
    let arena = arena();
    let b = arena.alloc_movable(0).unwrap().into_block();
    fail_over(&arena, b.pfn(), Reason::Custom("resize"));
    let pin = dma_pin(&arena, b.pfn());
    let report = arena.owner_report_with(&ReportOptions { events: true, ..Default::default() });
    let v: serde_json::Value = serde_json::from_str(&report.to_json()).unwrap();
    assert_eq!(v["version"], 1);
    assert_eq!(v["pages"][0]["pfn"], b.pfn());
    assert_eq!(v["pages"][0]["reason"], "resize");
    // The block's own reference, which the failure attributed, is found at
    // arming; the pin after it is recorded.
    assert_eq!(v["pages"][0]["outstanding"][0]["from_arming"], true);
    assert_eq!(v["pages"][0]["outstanding"][1]["owner"]["function"], "all::track::dma_pin");
    assert_eq!(v["pages"][0]["outstanding"][1]["owner"]["subsystem"], "dma");
    assert_eq!(v["events"].as_array().unwrap().len(), 2);
    let folded = report.folded();
    assert!(!folded.is_empty());
    for line in folded.lines() {
        let (stack, count) = line.rsplit_once(' ').unwrap();
        assert!(stack.starts_with("acquire;") || stack.starts_with("release;"), "{line}");
        assert!(count.parse::<u32>().unwrap() >= 1);
    }
    assert!(folded.contains("dma_pin"), "{folded}");
    drop((pin, b));
}

/// A `tracing` writer into a shared buffer.
#[derive(Clone, Default)]
struct Captured(Arc<Mutex<Vec<u8>>>);

impl std::io::Write for Captured {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

fn capture_tracing(f: impl FnOnce()) -> String {
    let buf = Captured::default();
    let out = buf.clone();
    let subscriber = tracing_subscriber::fmt()
        .with_max_level(tracing::Level::DEBUG)
        .with_writer(move || out.clone())
        .with_ansi(false)
        .finish();
    tracing::subscriber::with_default(subscriber, f);
    let bytes = buf.0.lock().unwrap().clone();
    String::from_utf8(bytes).unwrap()
}

#[test]
fn each_recorded_event_is_a_tracing_event_with_target_pinowner_tracker() {
    let arena = arena();
    let b = arena.alloc_movable(0).unwrap().into_block();
    let pfn = b.pfn();
    let log = capture_tracing(|| {
        fail_over(&arena, pfn, Reason::Contig);
        drop(dma_pin(&arena, pfn));
    });
    assert!(log.contains("pinowner::tracker: busy blocks armed"), "{log}");
    let lines: Vec<_> = log.lines().filter(|l| l.contains("armed page event")).collect();
    assert_eq!(lines.len(), 3, "arm, pin, unpin: {log}");
    assert!(lines[1].contains("kind=\"pin\"") && lines[1].contains(&format!("pfn={pfn}")), "{}", lines[1]);
    assert!(lines[1].contains("subsystem=\"dma\""), "{}", lines[1]);
    drop(b);
}

#[test]
fn every_reservation_step_is_a_tracing_event() {
    let arena = arena();
    let b = arena.alloc_movable(0).unwrap().into_block();
    let pfn = b.pfn();
    let log = capture_tracing(|| {
        fail_over(&arena, pfn, Reason::Contig);
        drop(b);
        drop(arena.reserve_range(pfn, 1, Reason::Contig).unwrap());
    });
    let steps: Vec<_> = log
        .lines()
        .filter(|l| l.contains("reservation step"))
        .map(|l| l.split("step=").nth(1).unwrap().split_whitespace().next().unwrap().trim_matches('"').to_owned())
        .collect();
    assert_eq!(steps, ["isolate", "drain", "test", "rollback", "isolate", "drain", "test", "commit"]);
}

#[test]
fn the_audit_lists_held_blocks_by_site_and_a_leaky_drop_warns_or_panics() {
    let arena = arena();
    let b = arena.alloc(0).unwrap();
    let p = dma_pin(&arena, b.pfn());
    let audit = arena.audit();
    assert_eq!(audit.blocks.len(), 1);
    assert_eq!((audit.blocks[0].refs, audit.blocks[0].pins), (1, 1));
    // The pinner is credited with its pin; the block's own reference,
    // taken before it, is unattributed.
    assert_eq!(audit.by_acquirer.len(), 2);
    assert!(matches!(audit.by_acquirer[0].acquirer, Some(Acquirer::Site(s)) if s.name() == "all::track::dma_pin"));
    assert_eq!((audit.by_acquirer[0].refs, audit.by_acquirer[0].pins), (0, 1));
    assert_eq!((audit.by_acquirer[1].acquirer, audit.by_acquirer[1].refs), (None, 1));
    assert!(audit.to_string().contains("dma_pin"), "{audit}");
    drop((p, b));
    assert!(arena.audit().is_clean());

    // A leaked raw pin: the default check warns through tracing.
    let log = capture_tracing(|| {
        let arena = PageArena::builder().pages(16).build().unwrap();
        let b = arena.alloc(0).unwrap();
        arena.pin_raw(b.pfn()).unwrap();
        drop(b);
        drop(arena);
    });
    assert!(log.contains("WARN") && log.contains("arena dropped with pages still held"), "{log}");
    assert!(log.contains("raw=0r/1p"), "{log}");

    let leaked = std::panic::catch_unwind(|| {
        let arena = PageArena::builder().pages(16).leak_check(LeakCheck::Panic).build().unwrap();
        std::mem::forget(arena.alloc(0).unwrap());
    });
    let msg = leaked.unwrap_err();
    let msg = msg.downcast_ref::<String>().unwrap();
    assert!(msg.contains("1 blocks still held (1 refs, 0 pins)"), "{msg}");
}

#[test]
fn reserve_contig_wait_is_woken_by_the_release_and_succeeds() {
    let arena = PageArena::builder().pages(64).movable_pages(32).build().unwrap();
    let held = arena.alloc_movable(0).unwrap().into_block();
    std::thread::scope(|s| {
        let waiter = s.spawn(|| arena.reserve_contig_wait(32, 32, Reason::Contig, Duration::from_secs(60)));
        // Wait until the waiter's failure armed the block, then release it.
        while arena.tracker_stats().armed_blocks == 0 {
            std::thread::yield_now();
        }
        drop(held);
        let run = waiter.join().unwrap().unwrap();
        assert_eq!(run.pages(), 32);
    });
}

#[test]
fn reserve_contig_wait_times_out_with_what_happened_while_waiting() {
    let arena = PageArena::builder().pages(64).movable_pages(32).build().unwrap();
    let held = arena.alloc_movable(0).unwrap().into_block();
    let e = arena.reserve_contig_wait(32, 32, Reason::Contig, Duration::from_millis(50)).unwrap_err();
    let ContigError::Busy(f) = e else { panic!("{e:?}") };
    let w = f.waited.expect("a wait log");
    assert!(w.waited >= Duration::from_millis(50));
    assert_eq!(w.releases, 0);
    assert!(f.to_string().contains("waited "), "{f}");
    drop(held);
}

/// A report after an armed block was freed and merged into a larger free
/// block describes the armed block, not the larger one its page now lies
/// in (which ran past the arena's end and panicked while a report was
/// rendered as blocks merged).
#[test]
fn a_report_on_an_armed_block_merged_away_since_stays_inside_the_arena() {
    let arena = pinowner::PageArena::builder().pages(64).max_order(6).build().unwrap();
    let blocks: Vec<_> = (0..64).map(|_| arena.alloc(0).unwrap()).collect();
    let last = blocks.iter().map(|b| b.pfn()).max().unwrap();
    assert_eq!(arena.arm(last..last + 1, pinowner::Reason::Contig), 1);
    drop(blocks);
    arena.drain_thread_caches();
    assert_eq!(arena.frag_stats().zones[0].free_blocks[6], 1, "merged into one block");
    // The events are taken; the arming still lists the block.
    let _ = arena.take_owner_report(&pinowner::ReportOptions::default());
    let report = arena.owner_report();
    assert!(report.pages.iter().all(|p| p.pfn + (1 << p.order) <= 64), "{report}");
}

/// Armings are numbered from 1 (eager mode has its own number), so the
/// first failure's arming is "arming 1" in reports.
#[test]
fn the_first_arming_is_numbered_one() {
    let arena = pinowner::PageArena::builder().pages(64).movable_pages(32).build().unwrap();
    let block = arena.alloc_movable(0).unwrap().into_block();
    assert!(arena.reserve_contig(32, 32, pinowner::Reason::Contig).is_err());
    let armings = arena.armings();
    assert_eq!(armings.iter().map(|a| a.id).collect::<Vec<_>>(), [1]);
    assert_eq!(arena.tracked_events()[0].arming, 1);
    assert_eq!(arena.tracker_stats().armings, 1);
    drop(block);
}

/// Linux and Android only: elsewhere capture takes the `backtrace` lock.
#[cfg(any(target_os = "linux", target_os = "android"))]
#[test]
#[cfg_attr(miri, ignore = "under Miri capture takes the backtrace lock")]
fn recording_does_not_wait_for_the_backtrace_lock_a_resolution_holds() {
    let arena = Arc::new(PageArena::builder().pages(16).build().unwrap());
    let b = arena.alloc(0).unwrap();
    let pfn = b.pfn();
    assert_eq!(arena.arm(pfn..pfn + 1, Reason::Contig), 1);
    let mut recorded = None;
    // `backtrace::trace` holds the crate's process-wide lock while it calls
    // back, as `backtrace::resolve` holds it while a report's first
    // resolution loads debug info (tens of milliseconds).
    backtrace::trace(|_| {
        let (tx, rx) = std::sync::mpsc::channel();
        let other = Arc::clone(&arena);
        // Detached: if its capture waits for the lock, it finishes once we
        // let go.
        std::thread::spawn(move || {
            drop(other.get(pfn).unwrap());
            let _ = tx.send(());
        });
        // A bound on a wait that must not happen at all, not a speed check:
        // a capture that takes the lock cannot record while we hold it. No
        // assertion in here: the unwinder cannot unwind through a panic.
        recorded = Some(rx.recv_timeout(Duration::from_secs(60)).is_ok());
        false
    });
    assert_eq!(recorded, Some(true), "an armed event waited for the backtrace lock");
    let events = arena.tracked_events();
    let get = events.iter().find(|e| e.kind == EventKind::Get).expect("the get was recorded");
    assert!(get.stack.is_some_and(|s| !s.is_failed()), "with its stack");
    drop(b);
}
