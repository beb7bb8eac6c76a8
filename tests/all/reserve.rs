//! Contiguous reservations: success, precise failure, rollback, bad input.

use pinowner::{Acquirer, ContigError, PageArena, PageFlags, Reason, ThreadCache, ZoneKind};

fn arena() -> PageArena {
    PageArena::builder().pages(256).movable_pages(128).max_order(6).build().unwrap()
}

#[test]
fn a_free_window_is_reserved_and_freed_back_on_drop() {
    let arena = arena();
    let fresh = arena.frag_stats();
    let run = arena.reserve_range(130, 40, Reason::Contig).unwrap();
    assert_eq!(run.range(), 130..170);
    assert_eq!(run.len(), 40 * 4096);
    for p in 130..170 {
        let s = arena.page_state(p).unwrap();
        assert!(!s.flags.contains(PageFlags::FREE) && !s.flags.contains(PageFlags::ISOLATED), "{p:#x}: {s}");
        assert!(arena.get(p).is_ok(), "pages of a run are live");
    }
    assert_eq!(arena.free_pages(), 256 - 40);
    drop(run);
    // The run's blocks were freed into the thread's cache: drained, they
    // coalesce back.
    arena.drain_thread_caches();
    assert_eq!(arena.frag_stats(), fresh, "the run coalesces back");
}

#[test]
fn a_pinned_page_fails_the_reservation_and_is_named_with_its_acquirer() {
    let arena = arena();
    let blocks: Vec<_> = (0..128).map(|_| arena.alloc_movable(0).unwrap().into_block()).collect();
    let line = line!() + 1;
    let pin = blocks[5].pin(0).unwrap();
    let pinned = blocks[5].pfn();
    drop(blocks);
    arena.drain_thread_caches();
    let before = arena.frag_stats();
    let w = pinned & !63;
    let e = arena.reserve_range(w, 64, Reason::Shrink).unwrap_err();
    let ContigError::Busy(f) = &e else { panic!("{e:?}") };
    assert_eq!(f.window, w..w + 64);
    assert_eq!(f.reason, Reason::Shrink);
    assert_eq!(f.busy.len(), 1);
    let b = &f.busy[0];
    assert_eq!((b.head, b.state.refcount, b.state.pincount, b.zone), (pinned, 0, 1, ZoneKind::Movable));
    match b.attributed {
        Some((p, Acquirer::Location(l))) => {
            assert_eq!(p, pinned);
            assert_eq!(l.line(), line);
        }
        other => panic!("expected the pin's location, got {other:?}"),
    }
    let text = e.to_string();
    let head = format!(
        "test_pages_isolated: start_pfn={w:#x} end_pfn={:#x} fin_pfn={pinned:#x} ret=fail reason=shrink",
        w + 64
    );
    assert!(text.starts_with(&head), "{text}");
    assert!(text.contains("1 busy pages in 1 blocks; 1 holders (1 pins), 1 attributed"), "{text}");
    // Rolled back: nothing isolated, free lists as before; the busy page is armed.
    assert_eq!(arena.frag_stats(), before);
    for p in w..w + 64 {
        assert!(!arena.page_state(p).unwrap().flags.contains(PageFlags::ISOLATED));
    }
    assert!(arena.page_state(pinned).unwrap().flags.contains(PageFlags::TRACKED));
    drop(pin);
    assert!(!arena.page_state(pinned).unwrap().flags.contains(PageFlags::TRACKED), "freeing disarms");
    assert!(arena.reserve_range(w, 64, Reason::Shrink).is_ok());
}

#[test]
fn reserve_contig_tries_the_window_with_fewest_busy_pages() {
    let arena = arena();
    let blocks: Vec<_> = (0..128).map(|_| arena.alloc_movable(0).unwrap().into_block()).collect();
    // Windows of 32 pages in the movable zone: keep 3, 1, 2 and 4 pins in them.
    let keep: Vec<_> =
        [128usize, 129, 130, 160, 192, 193, 224, 225, 226, 227].iter().map(|&p| arena.pin(p).unwrap()).collect();
    drop(blocks);
    let e = arena.reserve_contig(32, 32, Reason::Contig).unwrap_err();
    let ContigError::Busy(f) = e else { panic!() };
    assert_eq!(f.window, 160..192, "the window with one busy page");
    assert_eq!(f.busy_pages(), 1);
    assert_eq!(f.windows_considered, 4);
    drop(keep);
    let run = arena.reserve_contig(32, 32, Reason::Contig).unwrap();
    assert_eq!(run.pfn() % 32, 0);
}

#[test]
fn a_block_straddling_the_window_is_split_and_only_the_window_is_taken() {
    let arena = arena();
    let run = arena.reserve_range(133, 7, Reason::Contig).unwrap();
    assert_eq!(arena.free_pages(), 256 - 7);
    let a = arena.alloc_movable(0).unwrap().into_block();
    assert!(!(133..140).contains(&a.pfn()));
    drop(a);
    drop(run);
    arena.drain_thread_caches();
    assert_eq!(arena.frag_stats().zone(ZoneKind::Movable).unwrap().free_blocks[6], 2);
}

#[test]
fn cached_pages_in_the_window_are_drained_not_counted_busy() {
    let cache = ThreadCache { batch: 8, high: 64, shards: 2, orders: ThreadCache::KERNEL_ORDERS };
    let arena = PageArena::builder().pages(64).movable_pages(64).max_order(6).thread_cache(cache).build().unwrap();
    drop(arena.alloc_movable(0).unwrap().into_block());
    assert!(arena.frag_stats().zones[0].cached_pages > 0);
    let run = arena.reserve_range(0, 64, Reason::Contig).unwrap();
    assert_eq!(run.pages(), 64);
}

#[test]
fn bad_reservations_are_typed_errors_and_change_nothing() {
    let arena = arena();
    let fresh = arena.frag_stats();
    assert_eq!(arena.reserve_range(0, 0, Reason::Contig).unwrap_err(), ContigError::ZeroPages);
    assert!(matches!(arena.reserve_range(250, 10, Reason::Contig), Err(ContigError::OutOfRange { .. })));
    assert!(matches!(arena.reserve_range(usize::MAX, 2, Reason::Contig), Err(ContigError::OutOfRange { .. })));
    let e = arena.reserve_range(120, 16, Reason::Contig).unwrap_err();
    assert_eq!(e.to_string(), "window 0x78..0x88 is not inside one zone of the arena (256 pages)");
    assert_eq!(arena.reserve_contig(8, 3, Reason::Contig).unwrap_err(), ContigError::BadAlign { align: 3 });
    assert_eq!(
        arena.reserve_contig(129, 1, Reason::Contig).unwrap_err(),
        ContigError::TooLarge { pages: 129, zone_pages: 128 }
    );
    let run = arena.reserve_range(128, 16, Reason::Custom("resize")).unwrap();
    let e = arena.reserve_range(136, 16, Reason::Contig).unwrap_err();
    assert!(matches!(e, ContigError::Overlap { run: 128, .. }), "{e:?}");
    drop(run);
    assert_eq!(arena.frag_stats(), fresh);
}

#[test]
fn a_failure_names_both_subsystems_that_pin_pages_with_correct_counts() {
    #[pinowner::pin_tracked(subsystem = "dma", name = "rx_refill")]
    fn dma_pin(arena: &PageArena, pfn: usize) -> pinowner::PagePin<&PageArena> {
        arena.pin(pfn).unwrap()
    }
    #[pinowner::pin_tracked(subsystem = "rdma", name = "register_mr")]
    fn rdma_pin(arena: &PageArena, pfn: usize) -> pinowner::PagePin<&PageArena> {
        arena.pin(pfn).unwrap()
    }
    let arena = arena();
    let blocks: Vec<_> = (0..128).map(|_| arena.alloc_movable(0).unwrap().into_block()).collect();
    let dma: Vec<_> = [130usize, 131].iter().map(|&p| dma_pin(&arena, p)).collect();
    let rdma: Vec<_> = [140usize, 140, 141].iter().map(|&p| rdma_pin(&arena, p)).collect();
    drop(blocks);
    let ContigError::Busy(f) = arena.reserve_range(128, 32, Reason::LongtermPin).unwrap_err() else { panic!() };
    assert_eq!(f.busy.len(), 4);
    assert_eq!((f.pins(), f.holders(), f.attributed()), (5, 5, 4));
    let by_subsystem = |s: &str| {
        f.busy
            .iter()
            .filter(|b| b.attributed.is_some_and(|(_, a)| a.subsystem() == Some(s)))
            .map(|b| b.state.pincount)
            .sum::<u32>()
    };
    assert_eq!(by_subsystem("dma"), 2);
    assert_eq!(by_subsystem("rdma"), 3);
    let text = f.to_string();
    assert!(text.contains("by dma/rx_refill") && text.contains("by rdma/register_mr"), "{text}");
    // The ranked views credit each acquirer only with what it is known to
    // hold: the latest pin of each block. Page 140's earlier pin could be
    // anyone's (rdma's, here, but the slot cannot know): unattributed.
    let groups = f.by_acquirer();
    let names: Vec<_> = groups.iter().map(|g| g.acquirer.map(|a| a.to_string())).collect();
    assert_eq!(
        groups.iter().map(|g| (g.acquirer.and_then(|a| a.subsystem()), g.blocks, g.pins)).collect::<Vec<_>>(),
        [(Some("dma"), 2, 2), (Some("rdma"), 2, 2), (None, 1, 1)],
        "{names:?}"
    );
    assert_eq!(groups.iter().map(|g| g.pins).sum::<u32>(), f.pins(), "every pin is counted once");
    let subs: Vec<_> = f.by_subsystem().iter().map(|(s, g)| (*s, g.blocks, g.pins)).collect();
    assert_eq!(subs, [(Some("dma"), 2, 2), (Some("rdma"), 2, 2), (None, 1, 1)]);
    assert!(text.contains("in the way, by acquirer:\n    1. dma/rx_refill"), "{text}");
    assert!(text.contains("(unattributed): 1 blocks, 0 refs, 1 pins"), "{text}");
    drop((dma, rdma));
}

/// A failed reservation rolls back free blocks that lie off the lists, here
/// two buddies drained from a thread cache into the isolated window. Giving
/// one back must not coalesce with the other while that one is still off
/// the lists (it used to `remove` it from a list that never held it).
#[test]
fn rollback_of_drained_buddies_coalesces_without_corrupting_the_lists() {
    let cache = ThreadCache { batch: 4, high: 64, shards: 1, orders: ThreadCache::KERNEL_ORDERS };
    let arena = PageArena::builder().pages(4).max_order(2).thread_cache(cache).build().unwrap();
    let blocks: Vec<_> = (0..4).map(|_| arena.alloc(0).unwrap()).collect();
    // Keep page 3; pages 0..3 go back to the cache, not the lists.
    let mut keep = None;
    for b in blocks {
        if b.pfn() == 3 {
            keep = Some(b);
        }
    }
    assert_eq!(arena.frag_stats().zones[0].cached_pages, 3);
    let e = arena.reserve_range(0, 4, Reason::Contig).unwrap_err();
    let ContigError::Busy(f) = e else { panic!("unexpected {e}") };
    assert_eq!(f.busy.len(), 1);
    assert_eq!(f.busy[0].head, 3);
    drop(keep);
    arena.drain_thread_caches();
    let z = &arena.frag_stats().zones[0];
    assert_eq!((z.free_pages, z.free_blocks[2]), (4, 1), "{z:?}");
}
