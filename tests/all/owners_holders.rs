//! Who a failed reservation names when holders overlap the way drivers and
//! buffer pools hold pages: raw FFI counts next to handles, counts given up
//! with `into_raw`, clones taken on other threads, owned blocks behind an
//! `Arc`, counts-only arenas sharing pages with exact holders, and frames
//! that moved. The answer is always a holder that still holds, and is given
//! whenever the latest claiming holder still holds.

use std::sync::Arc;

use pinowner::{pin_tracked, Acquirer, ContigError, ContigFailure, CountsOnly, PageArena, PagePin, PageRef, Reason};

#[pin_tracked(subsystem = "rdma")]
fn register_mr(arena: &PageArena, pfn: usize) -> PagePin<&PageArena> {
    arena.pin(pfn).unwrap()
}

#[pin_tracked(subsystem = "vfio")]
fn vfio_map_raw(arena: &PageArena, pfn: usize) {
    arena.pin_raw(pfn).unwrap();
}

#[pin_tracked(subsystem = "net")]
fn peek_raw(arena: &PageArena, pfn: usize) {
    arena.get_raw(pfn).unwrap();
}

#[pin_tracked(subsystem = "net")]
fn net_read(arena: &PageArena, pfn: usize) -> PageRef<&PageArena> {
    arena.get(pfn).unwrap()
}

#[pin_tracked(subsystem = "uring")]
fn uring_clone(pin: &PagePin<Arc<PageArena>>) -> PagePin<Arc<PageArena>> {
    pin.clone()
}

#[pin_tracked(subsystem = "pool")]
fn pool_frame(arena: &Arc<PageArena>) -> pinowner::Block<Arc<PageArena>> {
    arena.alloc_owned(0).unwrap()
}

fn arena() -> PageArena {
    PageArena::builder().pages(128).movable_pages(64).max_order(5).build().unwrap()
}

fn busy(arena: &PageArena, pfn: usize) -> ContigFailure {
    match arena.reserve_range(pfn, 1, Reason::Contig) {
        Err(ContigError::Busy(f)) => *f,
        other => panic!("{other:?}"),
    }
}

fn named(f: &ContigFailure) -> Option<&'static str> {
    f.busy[0].attributed.and_then(|(_, a)| a.subsystem())
}

/// A reader that takes and drops a raw reference by page number (an FFI
/// path peeking at a registered buffer) does not hide the memory
/// registration's pin: the pinner still holds and is still named.
#[test]
fn owners_a_raw_readers_put_never_hides_the_pinner_still_holding() {
    let arena = arena();
    let frame = arena.alloc_movable(0).unwrap().into_block();
    let pfn = frame.pfn();
    let mr = register_mr(&arena, pfn);
    peek_raw(&arena, pfn);
    assert_eq!(named(&busy(&arena, pfn)), Some("rdma"));
    arena.put_raw(pfn).unwrap();
    let f = busy(&arena, pfn);
    assert_eq!(named(&f), Some("rdma"), "the pinner still holds: {f}");
    assert!(f.busy[0].attributed_pin);
    drop(mr);
    let f = busy(&arena, pfn);
    assert_ne!(named(&f), Some("rdma"), "{f}");
    drop(frame);
}

/// A pin given up to C with `into_raw` is still held: the failure names
/// its taker until `unpin_raw`, and never after.
#[test]
fn owners_a_pin_given_up_with_into_raw_is_named_until_unpin_raw() {
    let arena = arena();
    let frame = arena.alloc_movable(0).unwrap().into_block();
    let pfn = frame.pfn();
    let raw = register_mr(&arena, pfn).into_raw();
    let f = busy(&arena, pfn);
    assert_eq!((named(&f), f.pins()), (Some("rdma"), 1), "{f}");
    // Now armed: a raw pin by another subsystem, then the first one's
    // release.
    vfio_map_raw(&arena, pfn);
    assert_eq!(named(&busy(&arena, pfn)), Some("vfio"));
    arena.unpin_raw(raw).unwrap();
    let f = busy(&arena, pfn);
    assert_ne!(named(&f), Some("rdma"), "a departed holder: {f}");
    arena.unpin_raw(pfn).unwrap();
    let f = busy(&arena, pfn);
    assert!(f.busy[0].attributed.is_none_or(|(_, a)| a.subsystem().is_none()), "{f}");
    assert_eq!((f.holders(), f.pins()), (1, 0));
    drop(frame);
}

/// An io_uring pin cloned on another thread by another subsystem: the clone
/// is the latest holder and is named; once the clone is dropped, it never
/// is, though the original still holds.
#[test]
fn owners_a_clone_on_another_thread_is_named_while_it_holds_and_never_after() {
    let arena = Arc::new(arena());
    let frame = arena.alloc_movable_owned(0).unwrap().into_block();
    let pfn = frame.pfn();
    let pin = arena.pin_owned(pfn).unwrap();
    let clone = std::thread::scope(|s| s.spawn(|| uring_clone(&pin)).join().unwrap());
    let f = busy(&arena, pfn);
    assert_eq!((named(&f), f.pins()), (Some("uring"), 2), "{f}");
    std::thread::scope(|s| {
        s.spawn(move || drop(clone));
    });
    let f = busy(&arena, pfn);
    assert_eq!(f.pins(), 1);
    assert_ne!(named(&f), Some("uring"), "{f}");
    // Armed now: the original's release is recorded and the report lists
    // no uring holder.
    drop(pin);
    let report = arena.owner_report_with(&pinowner::ReportOptions { frames: 0, ..Default::default() });
    let page = report.pages.iter().find(|p| p.pfn == pfn).unwrap();
    assert!(
        page.outstanding.iter().all(|h| h.owner.as_ref().and_then(|o| o.subsystem.as_deref()) != Some("uring")),
        "{report}"
    );
    drop(frame);
}

/// A pool's owned frame (`alloc_owned` on an `Arc` arena) handed to a
/// worker thread is still the pool's while only the pool holds it; a
/// reader on the worker takes nothing from it once gone.
#[test]
fn owners_an_owned_frame_sent_to_a_worker_stays_named_for_the_pool() {
    let arena = Arc::new(PageArena::builder().pages(128).max_order(5).build().unwrap());
    let frame = pool_frame(&arena);
    let pfn = frame.pfn();
    let frame = std::thread::spawn({
        let arena = Arc::clone(&arena);
        move || {
            drop(net_read(&arena, pfn));
            frame
        }
    })
    .join()
    .unwrap();
    let f = match arena.reserve_range(pfn, 1, Reason::Contig) {
        Err(ContigError::Busy(f)) => *f,
        other => panic!("{other:?}"),
    };
    // The reader's release moved the generation: the pool is not named
    // (its claim is older than the reader's), and the reader never is.
    assert_ne!(named(&f), Some("net"), "{f}");
    assert_eq!(f.holders(), 1);
    drop(frame);
    let frame = pool_frame(&arena);
    let f = busy(&arena, frame.pfn());
    assert_eq!(named(&f), Some("pool"), "{f}");
}

/// A counts-only arena shared with an exact holder: the exact pin is named
/// while it holds, counts-only pins taken after it never hide or replace
/// it, and once it is gone nobody is named.
#[test]
fn owners_counts_only_holders_never_displace_or_outlive_an_exact_pinner() {
    let arena: PageArena<CountsOnly> =
        PageArena::builder().pages(128).movable_pages(64).max_order(5).attribution().build().unwrap();
    let frame = arena.alloc_movable(0).unwrap().into_block();
    let pfn = frame.pfn();
    let exact = register_mr(arena.exact(), pfn);
    let counted = arena.pin(pfn).unwrap();
    let counted_ref = arena.get(pfn).unwrap();
    let f = busy(&arena, pfn);
    assert_eq!((named(&f), f.pins(), f.holders()), (Some("rdma"), 2, 4), "{f}");
    drop(counted);
    drop(counted_ref);
    let f = busy(&arena, pfn);
    assert_eq!(named(&f), Some("rdma"), "{f}");
    drop(exact);
    let f = busy(&arena, pfn);
    assert!(f.busy[0].attributed.is_none(), "{f}");
    let again = arena.pin(pfn).unwrap();
    let f = busy(&arena, pfn);
    assert!(f.busy[0].attributed.is_none(), "{f}");
    drop(again);
    drop(frame);
}

/// A buffer-pool frame that moved out of a shrinking window is named for
/// the pool at its new place, the old place names nobody, and a reader
/// there is named while it reads and never after.
#[test]
fn owners_a_moved_frame_is_named_at_its_new_place_and_never_at_the_old() {
    let arena = arena();
    #[pin_tracked(subsystem = "pool")]
    fn frame_in(arena: &PageArena) -> pinowner::MovableBlock<&PageArena> {
        arena.alloc_movable(0).unwrap()
    }
    let frame = frame_in(&arena);
    let old = frame.pfn();
    let window = old / 32 * 32;
    let run = arena.reserve_range(window, 32, Reason::Shrink).unwrap();
    let new = frame.pfn();
    assert_ne!(new, old);
    assert!(!run.range().contains(&new));
    match arena.page_info(new).unwrap().acquirer {
        Some(Acquirer::Site(s)) => assert_eq!(s.subsystem(), Some("pool")),
        other => panic!("{other:?}"),
    }
    let at_old = arena.page_info(old).unwrap().acquirer;
    assert!(at_old.is_none_or(|a| a.subsystem().is_none()), "the old place is the run's now: {at_old:?}");
    // A page reference by number keeps it in place: a failure names it.
    let r = net_read(&arena, new);
    let f = busy(&arena, new);
    assert_eq!((named(&f), f.holders()), (Some("net"), 2), "{f}");
    drop(r);
    let f = arena.audit();
    assert!(f.blocks.iter().filter(|b| b.head == new).all(|b| b.latest.is_none_or(|a| a.subsystem() != Some("net"))));
    drop(run);
    drop(frame);
}
