//! Attribution that holds up (issue 9): the pinner is never hidden by a
//! passing reader, each acquirer is credited only with what it is known to
//! hold, and no number of acquisitions makes a departed holder named again.

use std::sync::atomic::{AtomicBool, Ordering};

use pinowner::{pin_tracked, Acquirer, ContigError, PageArena, PagePin, PageRef, Reason};

#[pin_tracked(subsystem = "dma")]
fn rx_refill(arena: &PageArena, pfn: usize) -> PagePin<&PageArena> {
    arena.pin(pfn).unwrap()
}

#[pin_tracked(subsystem = "net")]
fn read_header(arena: &PageArena, pfn: usize) -> PageRef<&PageArena> {
    arena.get(pfn).unwrap()
}

#[pin_tracked(subsystem = "pool")]
fn pool_get(arena: &PageArena, pfn: usize) -> PageRef<&PageArena> {
    arena.get(pfn).unwrap()
}

fn subsystem(a: Option<Acquirer>) -> Option<&'static str> {
    a.and_then(|a| a.subsystem())
}

fn arena() -> PageArena {
    PageArena::builder().pages(64).movable_pages(32).build().unwrap()
}

/// Item 1: a DMA pin kept while the network stack takes and drops
/// references on the same page (by number, by cloning a handle, through the
/// block): the failure names the pinner (before the fix: "1 holders (1
/// pins), 0 attributed").
#[test]
fn a_transient_reader_never_hides_the_long_term_pinner() {
    let arena = arena();
    let block = arena.alloc_movable(0).unwrap().into_block();
    let pfn = block.pfn();
    let pin = rx_refill(&arena, pfn);
    drop(block);
    let r = read_header(&arena, pfn);
    let r2 = r.clone();
    drop(r);
    assert_eq!(subsystem(arena.page_info(pfn).unwrap().acquirer), Some("dma"), "while a reader holds");
    drop(r2);
    let ContigError::Busy(f) = arena.reserve_contig(32, 32, Reason::Contig).unwrap_err() else { panic!() };
    assert_eq!((f.holders(), f.pins(), f.attributed()), (1, 1, 1), "{f}");
    assert_eq!(subsystem(f.busy[0].attributed.map(|(_, a)| a)), Some("dma"));
    assert!(f.busy[0].attributed_pin);
    assert!(f.to_string().contains("1 holders (1 pins), 1 attributed"), "{f}");
    drop(pin);
}

/// Item 1 at the level users run it: a pinner and three threads taking and
/// dropping references by page number as fast as they can, while this
/// thread reserves over the page again and again: every failure names the
/// pinner, never a reader (who may have left by the time it is read).
#[test]
fn concurrent_readers_never_hide_the_pinner_from_a_failure() {
    let arena = arena();
    let block = arena.alloc_movable(0).unwrap().into_block();
    let pfn = block.pfn();
    let pin = rx_refill(&arena, pfn);
    drop(block);
    let stop = AtomicBool::new(false);
    std::thread::scope(|s| {
        for _ in 0..3 {
            s.spawn(|| {
                while !stop.load(Ordering::Relaxed) {
                    let r = read_header(&arena, pfn);
                    std::hint::black_box(&r);
                }
            });
        }
        for _ in 0..2_000 {
            let ContigError::Busy(f) = arena.reserve_contig(32, 32, Reason::Contig).unwrap_err() else { panic!() };
            let b = &f.busy[0];
            assert_eq!(subsystem(b.attributed.map(|(_, a)| a)), Some("dma"), "{f}");
            assert!(b.attributed_pin, "{f}");
            assert_eq!(subsystem(arena.page_info(pfn).unwrap().acquirer), Some("dma"));
        }
        stop.store(true, Ordering::Relaxed);
    });
    drop(pin);
}

/// Item 2: with `dma` holding 3 pins and `rdma` 1 on one block, the
/// ranking credits the latest acquirer with its one pin and shows the
/// other three as unattributed (before the fix, all four went to it).
#[test]
fn counts_are_credited_only_to_the_holder_known_to_hold_them() {
    #[pin_tracked(subsystem = "rdma")]
    fn register_mr(arena: &PageArena, pfn: usize) -> PagePin<&PageArena> {
        arena.pin(pfn).unwrap()
    }
    let arena = arena();
    let block = arena.alloc_movable(0).unwrap().into_block();
    let pfn = block.pfn();
    let dma: Vec<_> = (0..3).map(|_| rx_refill(&arena, pfn)).collect();
    let rdma = register_mr(&arena, pfn);
    let ContigError::Busy(f) = arena.reserve_contig(32, 32, Reason::Contig).unwrap_err() else { panic!() };
    let groups: Vec<_> = f.by_acquirer().iter().map(|g| (subsystem(g.acquirer), g.blocks, g.refs, g.pins)).collect();
    assert_eq!(groups, [(Some("rdma"), 1, 0, 1), (None, 1, 1, 3)], "{f}");
    let audit = arena.audit();
    let groups: Vec<_> = audit.by_acquirer.iter().map(|g| (subsystem(g.acquirer), g.refs, g.pins)).collect();
    assert_eq!(groups, [(Some("rdma"), 0, 1), (None, 1, 3)]);
    drop((dma, rdma, block));
}

/// Item 9: on an order-1 block, a reference taken and dropped on page p,
/// then 8,191 get/put pairs and one held get on page p+1. With an owner
/// slot per page, the 14-bit generation wrapped back to the dropped get's
/// and named it; with one slot per block, the held get is named.
#[test]
fn a_wrapped_generation_never_names_a_departed_holder() {
    let arena = arena();
    let block = arena.alloc(1).unwrap();
    let p = block.pfn();
    drop(pool_get(&arena, p));
    for _ in 0..8_191 {
        drop(arena.get(p + 1).unwrap());
    }
    let held = read_header(&arena, p + 1);
    for q in [p, p + 1] {
        assert_eq!(subsystem(arena.page_info(q).unwrap().acquirer), Some("net"), "page {q}");
    }
    assert_eq!(subsystem(arena.audit().blocks[0].latest), Some("net"));
    drop((held, block));
}

/// Item 9, raw releases: they cannot tell whether theirs was the latest
/// acquisition, so they used to move the generation on every put; 16,384
/// of them after a handle's release brought its generation back and named
/// the departed handle. Now they move it only while the slot is current.
#[test]
fn raw_releases_never_bring_a_departed_holder_back() {
    let arena = arena();
    let block = arena.alloc(0).unwrap();
    let p = block.pfn();
    for _ in 0..(1 << 14) {
        arena.get_raw(p).unwrap();
    }
    drop(pool_get(&arena, p));
    for n in 0..(1 << 14) {
        arena.put_raw(p).unwrap();
        assert_eq!(arena.page_info(p).unwrap().acquirer, None, "after {n} raw puts");
    }
    drop(block);
}

fn tracked_arena(capacity: usize) -> PageArena {
    let tracking = pinowner::Tracking { capacity, depth: 0, ..pinowner::Tracking::default() };
    PageArena::builder().pages(64).movable_pages(32).tracking(tracking).build().unwrap()
}

fn owner_sub(o: &Option<pinowner::tracker::Owner>) -> Option<&str> {
    o.as_ref().and_then(|o| o.subsystem.as_deref())
}

/// Item 3: the failure names the pinner; after a recorded get and put by
/// someone else, the report still starts from what the failure knew: the
/// pinner is the top holder and attributed, and its later unpin names it as
/// the acquirer (text and JSON).
#[test]
fn the_report_starts_from_the_holder_the_failure_named() {
    let arena = tracked_arena(4096);
    let block = arena.alloc_movable(0).unwrap().into_block();
    let pfn = block.pfn();
    let pin = rx_refill(&arena, pfn);
    drop(block);
    let ContigError::Busy(f) = arena.reserve_contig(32, 32, Reason::Contig).unwrap_err() else { panic!() };
    assert_eq!(subsystem(f.busy[0].attributed.map(|(_, a)| a)), Some("dma"));
    drop(pool_get(&arena, pfn));
    let report = arena.owner_report();
    let top = report.top_holder().expect("a holder");
    assert_eq!((owner_sub(&top.owner), top.pins), (Some("dma"), 1), "{report}");
    assert_eq!(owner_sub(&report.pages[0].attributed), Some("dma"), "{report}");
    assert!(report.pages[0].outstanding.iter().any(|h| h.from_arming && owner_sub(&h.owner) == Some("dma")));
    drop(pin);
    let report = arena.owner_report();
    let unpin = report.pages[0].releases.iter().find(|r| r.kind == pinowner::EventKind::Unpin).unwrap();
    assert_eq!(owner_sub(&unpin.acquired_by), Some("dma"), "{report}");
    let json: serde_json::Value = serde_json::from_str(&report.to_json()).unwrap();
    let releases = json["pages"][0]["releases"].as_array().unwrap();
    let unpin = releases.iter().find(|r| r["kind"] == "unpin").unwrap();
    assert_eq!(unpin["acquired_by"]["subsystem"], "dma");
    assert!(report.to_string().contains("taken before arming by all::attribution::rx_refill [dma]"), "{report}");
}

/// Item 4: a bounded history (capacity 1001) and 10,001 events on one
/// page: outstanding holders are only those provably held (the long-term
/// pin and one held reference), never references whose release was
/// dropped, and the long-term pin ranks above the busy but harmless pool.
#[test]
fn history_overflow_never_invents_holders() {
    let arena = tracked_arena(1001);
    let block = arena.alloc_movable(0).unwrap().into_block();
    let pfn = block.pfn();
    let pin = rx_refill(&arena, pfn);
    drop(block);
    assert!(arena.reserve_contig(32, 32, Reason::Contig).is_err());
    for _ in 0..5_000 {
        drop(pool_get(&arena, pfn));
    }
    let held = read_header(&arena, pfn);
    let stats = arena.tracker_stats();
    assert!(stats.dropped > 8_000, "{stats:?}");
    let report = arena.owner_report();
    let page = &report.pages[0];
    let holders: Vec<_> = page.outstanding.iter().map(|h| (h.kind, owner_sub(&h.owner))).collect();
    assert_eq!(holders, [(pinowner::EventKind::Pin, Some("dma")), (pinowner::EventKind::Get, Some("net"))], "{report}");
    assert_eq!((page.unrecorded_refs, page.unrecorded_pins), (0, 0));
    assert!(page.dropped > 8_000, "the report says what it dropped");
    let ranked: Vec<_> = report.by_site.iter().map(|g| (owner_sub(&g.owner), g.refs + g.pins)).collect();
    assert_eq!(ranked[0], (Some("dma"), 1), "{ranked:?}");
    assert!(ranked.contains(&(Some("pool"), 0)), "the busy pool holds nothing: {ranked:?}");
    drop((pin, held));
}

/// Item 9, pairing: a long-term holder H, a second held reference, then
/// 8,192 short get/put pairs on the armed page (their 14-bit generations
/// come round to H's): the outstanding holders are exactly H and the held
/// reference, and every short release names the short getter.
#[test]
fn pairing_stays_right_across_any_number_of_acquisitions() {
    let arena = tracked_arena(1 << 16);
    let block = arena.alloc_movable(0).unwrap().into_block();
    let pfn = block.pfn();
    assert!(arena.reserve_contig(32, 32, Reason::Contig).is_err());
    let h = rx_refill(&arena, pfn);
    let second = read_header(&arena, pfn);
    drop(block);
    for _ in 0..8_192 {
        drop(pool_get(&arena, pfn));
    }
    let report = arena.owner_report();
    let page = &report.pages[0];
    let holders: Vec<_> = page.outstanding.iter().map(|h| owner_sub(&h.owner)).collect();
    assert_eq!(holders, [Some("dma"), Some("net")], "{report}");
    let short: Vec<_> = page.releases.iter().filter(|r| r.held_ns.is_some()).collect();
    assert_eq!(short.len(), 8_192);
    assert!(short.iter().all(|r| owner_sub(&r.acquired_by) == Some("pool")));
    drop((h, second));
}

/// Item 6: a waiting reservation succeeds as soon as any suitable window
/// is free, not only when the window its first failure armed is (before,
/// it slept until its timeout and failed).
#[test]
fn a_wait_succeeds_when_another_window_frees() {
    let arena = PageArena::builder().pages(128).movable_pages(64).build().unwrap();
    let all: Vec<_> = (0..64).map(|_| arena.alloc_movable(0).unwrap().into_block()).collect();
    let (mut a, mut b) = (None, None);
    for blk in all {
        match blk.pfn() {
            65 => a = Some(blk),
            100 => b = Some(blk),
            _ => drop(blk),
        }
    }
    let (a, b) = (a.unwrap(), b.unwrap());
    std::thread::scope(|s| {
        let waiter = s.spawn(|| {
            arena.reserve_contig_wait(32, 32, Reason::Contig, std::time::Duration::from_secs(20)).map(|r| r.range())
        });
        // Let it fail once and sleep (its best window is the first).
        while arena.armings().is_empty() {
            std::thread::yield_now();
        }
        let freed = std::time::Instant::now();
        drop(b); // frees the second window, which nothing armed
        assert_eq!(waiter.join().unwrap(), Ok(96..128));
        // Woken by the free, not by its 20 s timeout (a bound 100 times
        // what it takes, so a loaded machine does not fail it).
        assert!(freed.elapsed() < std::time::Duration::from_secs(5), "woke after {:?}", freed.elapsed());
    });
    drop(a);
}

/// Item 6: `reserve_range_wait` waits for exactly its range, and a wait
/// after a failed `reserve_range` of the same range continues that
/// failure's arming instead of adding one.
#[test]
fn reserve_range_wait_waits_for_its_range_and_continues_its_arming() {
    let arena = arena();
    let block = arena.alloc_movable(0).unwrap().into_block();
    let pfn = block.pfn();
    let w = pfn & !7;
    assert!(matches!(arena.reserve_range(w, 8, Reason::Shrink), Err(ContigError::Busy(_))));
    assert_eq!(arena.armings().len(), 1);
    let e = arena.reserve_range_wait(w, 8, Reason::Shrink, std::time::Duration::from_millis(30)).unwrap_err();
    let ContigError::Busy(f) = e else { panic!("{e}") };
    assert!(f.waited.unwrap().attempts >= 1);
    assert_eq!(arena.armings().len(), 1, "the wait continued the failure's arming");
    std::thread::scope(|s| {
        s.spawn(move || {
            std::thread::sleep(std::time::Duration::from_millis(20));
            drop(block);
        });
        let run = arena.reserve_range_wait(w, 8, Reason::Shrink, std::time::Duration::from_secs(20));
        assert_eq!(run.map(|r| r.range()), Ok(w..w + 8));
    });
}

/// A raw holder the failure named is recorded at arming; its raw release
/// (which cannot say which acquisition it ends) closes that record once it
/// moves the generation, so the report never lists it after it left.
#[test]
fn a_raw_holder_found_at_arming_is_gone_once_released() {
    let arena = tracked_arena(64);
    let block = arena.alloc_movable(0).unwrap().into_block();
    let pfn = block.pfn();
    drop(block);
    // The block alone: only the raw reference holds it now.
    let block = arena.alloc_movable(0).unwrap().into_block();
    assert_eq!(block.pfn(), pfn);
    let head = block.into_raw();
    arena.get_raw(head).unwrap();
    assert!(arena.reserve_contig(32, 32, Reason::Contig).is_err());
    assert_eq!(arena.tracker_stats().holds, 1, "the raw holder the failure named");
    arena.put_raw(head).unwrap();
    assert_eq!(arena.tracker_stats().holds, 0, "{}", arena.owner_report());
    arena.put_raw(head).unwrap();
}

/// Item 8: the holders' flamegraph is weighted by what is held, not by how
/// busy a path was: a busy reader that holds nothing is absent, the
/// long-term pinner found at arming appears under its site, and runtime
/// frames below the test thread's start are trimmed.
#[test]
fn the_holders_flamegraph_weighs_what_is_held() {
    let arena = PageArena::builder()
        .pages(64)
        .movable_pages(32)
        .tracking(pinowner::Tracking { depth: 32, ..pinowner::Tracking::default() })
        .build()
        .unwrap();
    let block = arena.alloc_movable(0).unwrap().into_block();
    let pfn = block.pfn();
    let pin = rx_refill(&arena, pfn);
    drop(block);
    assert!(arena.reserve_contig(32, 32, Reason::Contig).is_err());
    for _ in 0..100 {
        drop(pool_get(&arena, pfn));
    }
    let held = read_header(&arena, pfn);
    let report = arena.owner_report();
    let holders = report.folded_holders(pinowner::tracker::HoldWeight::Holds);
    let lines: Vec<&str> = holders.lines().collect();
    assert_eq!(lines.len(), 2, "{holders}");
    assert!(
        lines.iter().any(|l| l.starts_with("held;all::attribution::rx_refill [dma];(held since before arming) 1")),
        "{holders}"
    );
    let reader = lines.iter().find(|l| l.contains("read_header")).expect("the held reader");
    assert!(reader.starts_with("held;all::attribution::"), "runtime frames trimmed: {reader}");
    assert!(reader.ends_with(" 1"));
    assert!(!holders.contains("pool_get"), "the busy pool holds nothing: {holders}");
    // The event view still shows how busy the pool was.
    assert!(report.folded().lines().any(|l| l.contains("pool_get") && l.ends_with(" 100")), "{}", report.folded());
    let timed = report.folded_holders(pinowner::tracker::HoldWeight::HeldMicros);
    assert_eq!(timed.lines().count(), 2);
    drop((pin, held));
}

/// Item 7: a failure, an audit, fragmentation statistics and the tracker's
/// counters have the owner report's versioned JSON form, with acquirers as
/// its owner objects.
#[test]
fn every_report_has_a_versioned_json_form() {
    let arena = tracked_arena(64);
    let block = arena.alloc_movable(0).unwrap().into_block();
    let pfn = block.pfn();
    let pin = rx_refill(&arena, pfn);
    let ContigError::Busy(f) = arena.reserve_contig(32, 32, Reason::Contig).unwrap_err() else { panic!() };
    let parse = |s: String| serde_json::from_str::<serde_json::Value>(&s).unwrap();
    let v = parse(f.to_json());
    assert_eq!((v["version"].as_u64(), v["kind"].as_str()), (Some(1), Some("contig_failure")));
    assert_eq!(v["busy"][0]["head"], pfn);
    assert_eq!(v["busy"][0]["attributed"]["subsystem"], "dma");
    assert_eq!(v["busy"][0]["attributed_pin"], true);
    assert_eq!(v["by_acquirer"][0]["acquirer"]["function"], "all::attribution::rx_refill");
    assert_eq!((v["holders"].as_u64(), v["attributed"].as_u64()), (Some(2), Some(1)));
    let v = parse(arena.audit().to_json());
    assert_eq!((v["version"].as_u64(), v["kind"].as_str()), (Some(1), Some("audit")));
    assert_eq!(v["blocks"][0]["latest"]["subsystem"], "dma");
    let v = parse(arena.frag_stats().to_json());
    assert_eq!(v["kind"], "frag_stats");
    assert_eq!(v["zones"][1]["zone"], "movable");
    let v = parse(arena.tracker_stats().to_json());
    assert_eq!(v["kind"], "tracker_stats");
    assert_eq!(v["armings"], 1);
    assert!(v["depot"]["unique_stacks"].is_u64());
    drop((pin, block));
}
