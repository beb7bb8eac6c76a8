//! Idle tracking: marked blocks stay idle until an access through the API;
//! counts, bitmap and the per-holder view match a known workload; a
//! buffer pool's reclaim clock and idle tracking do not disturb each other.

use pinowner::{pin_tracked, AcquireError, Block, PageArena, PageFlags};

#[pin_tracked(subsystem = "pool")]
fn pool_frame(arena: &PageArena) -> Block<&PageArena> {
    arena.alloc(0).unwrap()
}

#[pin_tracked(subsystem = "index")]
fn index_page(arena: &PageArena) -> Block<&PageArena> {
    arena.alloc(1).unwrap()
}

#[test]
fn a_buffer_pool_workload_leaves_exactly_the_untouched_frames_idle_by_site_and_subsystem() {
    let arena = PageArena::builder().pages(256).build().unwrap();
    let frames: Vec<_> = (0..64).map(|_| pool_frame(&arena)).collect();
    let mut index: Vec<_> = (0..16).map(|_| index_page(&arena)).collect();
    assert_eq!(arena.mark_idle(0..256).unwrap(), 64 + 32);
    assert_eq!(arena.idle_pages(0..256).unwrap().idle, 96);
    // The workload: a quarter of the frames read, a quarter taken by page
    // number and let go, half the index pages written; one frame written
    // through a raw pointer (invisible, as documented).
    for (i, f) in frames.iter().enumerate() {
        match i % 4 {
            0 => assert_eq!(f.bytes()[0], 0),
            1 => drop(arena.get(f.pfn()).unwrap()),
            _ => {}
        }
    }
    for b in index.iter_mut().step_by(2) {
        b.bytes_mut().unwrap()[0] = 1;
    }
    // SAFETY: we hold the frame alone; one byte inside it.
    unsafe { frames[2].as_ptr().as_ptr().write(7) };

    let idle = arena.idle_pages(0..256).unwrap();
    assert_eq!((idle.allocated, idle.idle), (96, 32 + 16));
    for (i, f) in frames.iter().enumerate() {
        assert_eq!(idle.is_idle(f.pfn()), i % 4 >= 2, "frame {i}");
    }
    for (i, b) in index.iter().enumerate() {
        assert_eq!(idle.is_idle(b.pfn()) && idle.is_idle(b.pfn() + 1), i % 2 == 1, "index page {i}");
    }
    assert_eq!(idle.bitmap.iter().map(|w| w.count_ones() as usize).sum::<usize>(), 48);

    let by = arena.idle_holders(0..256).unwrap();
    let site = |name: &str| {
        by.holders
            .iter()
            .find(|h| matches!(h.acquirer, pinowner::Acquirer::Site(s) if s.name().ends_with(name)))
            .map(|h| (h.pages, h.idle))
    };
    // The frames taken by number and let go have no current acquirer.
    assert_eq!(site("::pool_frame"), Some((48, 32)));
    assert_eq!(site("::index_page"), Some((32, 16)));
    assert_eq!(by.unattributed, (16, 0));
    assert_eq!(by.subsystems, [(Some("pool"), 48, 32), (Some("index"), 32, 16)]);
    // A range cut through a block counts only its pages inside.
    assert_eq!(arena.idle_pages(0..1).unwrap().range, 0..1);
    drop((frames, index));
}

#[test]
fn the_reclaim_clock_and_idle_tracking_do_not_disturb_each_other() {
    let arena = PageArena::builder().pages(64).build().unwrap();
    let frames: Vec<_> = (0..8).map(|_| arena.alloc(0).unwrap()).collect();
    let sweep =
        |arena: &PageArena| -> Vec<bool> { frames.iter().map(|f| arena.page_referenced(f.pfn()).unwrap()).collect() };
    arena.mark_idle(0..64).unwrap();
    let _ = frames[0].bytes();
    // The allocations came before the marking: the clock still sees them.
    assert_eq!(sweep(&arena), [true; 8]);
    // ...and its sweep did not end idle tracking: frame 0 was touched, the
    // rest stay idle.
    assert_eq!(arena.idle_pages(0..64).unwrap().idle, 7);
    assert_eq!(sweep(&arena), [false; 8], "nothing accessed since the last sweep");
    drop(arena.pin(frames[1].pfn()).unwrap());
    let s = sweep(&arena);
    assert!(s[1] && s.iter().filter(|&&r| r).count() == 1);
    assert_eq!(arena.idle_pages(0..64).unwrap().idle, 6, "the clock consumed the access, idle tracking kept it");
    // Marking over an unswept access keeps it for the clock.
    let _ = frames[2].bytes();
    arena.mark_idle(0..64).unwrap();
    assert_eq!(arena.idle_pages(0..64).unwrap().idle, 8);
    let s = sweep(&arena);
    assert!(s[2] && s.iter().filter(|&&r| r).count() == 1, "{s:?}");
    assert_eq!(arena.idle_pages(0..64).unwrap().idle, 8, "marking did not fake an access either");
    assert!(arena.page_state(frames[3].pfn()).unwrap().flags.contains(PageFlags::IDLE));
}

#[test]
fn a_freed_and_reallocated_block_starts_accessed() {
    let arena = PageArena::builder().pages(16).build().unwrap();
    let b = arena.alloc(2).unwrap();
    let pfn = b.pfn();
    arena.mark_idle(0..16).unwrap();
    drop(b);
    let again = arena.alloc(2).unwrap();
    assert_eq!(again.pfn(), pfn);
    assert_eq!(arena.idle_pages(0..16).unwrap().idle, 0, "an allocation is an access");
    assert!(!arena.page_state(pfn).unwrap().flags.contains(PageFlags::IDLE));
    arena.verify().unwrap();
}

#[test]
fn bad_ranges_and_free_pages_are_typed_errors_naming_the_page() {
    let arena = PageArena::builder().pages(16).build().unwrap();
    assert!(matches!(arena.mark_idle(0..17), Err(AcquireError::OutOfRange { pfn: 16, pages: 16 })));
    #[allow(clippy::reversed_empty_ranges)]
    let reversed = 9..3;
    assert!(matches!(arena.idle_pages(reversed), Err(AcquireError::OutOfRange { pfn: 9, .. })));
    let e = arena.page_referenced(5).unwrap_err();
    assert!(matches!(e, AcquireError::Free { pfn: 5, .. }), "{e:?}");
    assert!(e.to_string().starts_with("page 0x5 is free"), "{e}");
    assert_eq!(arena.mark_idle(0..16).unwrap(), 0, "free pages are not marked");
}

/// `page_info` shows idle tracking's answer: the reclaim clock re-arming
/// its detector (the same state bit) does not make a page look idle there;
/// `mark_idle` does, and the next access ends it.
#[test]
fn page_info_shows_idle_only_for_blocks_idle_tracking_watches() {
    let arena = PageArena::builder().pages(16).build().unwrap();
    let frame = arena.alloc(0).unwrap();
    let idle = |arena: &PageArena| arena.page_info(frame.pfn()).unwrap().state.flags.contains(PageFlags::IDLE);
    assert!(arena.page_referenced(frame.pfn()).unwrap());
    assert!(!idle(&arena), "the clock's sweep is not idle tracking");
    arena.mark_idle(0..16).unwrap();
    assert!(idle(&arena));
    assert_eq!(arena.idle_pages(0..16).unwrap().idle, 1);
    let _ = frame.bytes();
    assert!(!idle(&arena), "accessed since the mark");
    assert_eq!(arena.idle_pages(0..16).unwrap().idle, 0);
}
