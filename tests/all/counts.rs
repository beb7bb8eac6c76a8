//! References, pins, the raw API and attribution.

use pinowner::{AcquireError, Acquirer, BorrowError, PageArena, PageFlags, ReleaseError};

fn arena() -> PageArena {
    PageArena::builder().pages(64).build().unwrap()
}

#[test]
fn a_ref_on_any_page_keeps_the_whole_block() {
    let arena = arena();
    let b = arena.alloc(2).unwrap();
    let pfn = b.pfn();
    let r = arena.get(pfn + 3).unwrap();
    assert_eq!(r.head(), pfn);
    drop(b);
    assert_eq!(arena.page_state(pfn).unwrap().refcount, 1);
    assert!(!arena.page_state(pfn).unwrap().flags.contains(PageFlags::FREE));
    drop(r);
    assert!(arena.page_state(pfn).unwrap().flags.contains(PageFlags::FREE));
}

#[test]
fn pins_are_counted_apart_from_refs() {
    let arena = arena();
    let b = arena.alloc(0).unwrap();
    let pins: Vec<_> = (0..2000).map(|_| b.pin(0).unwrap()).collect();
    let refs: Vec<_> = (0..3).map(|_| b.page_ref(0)).collect();
    let s = b.state();
    assert_eq!((s.refcount, s.pincount), (4, 2000));
    drop(pins);
    drop(refs);
    let s = b.state();
    assert_eq!((s.refcount, s.pincount), (1, 0));
}

#[test]
fn a_pin_alone_keeps_a_block_allocated() {
    let arena = arena();
    let b = arena.alloc(0).unwrap();
    let pfn = b.pfn();
    let pin = b.pin(0).unwrap();
    drop(b);
    let s = arena.page_state(pfn).unwrap();
    assert_eq!((s.refcount, s.pincount), (0, 1));
    let again = arena.get(pfn).expect("a pinned page is live");
    drop(pin);
    drop(again);
    assert!(arena.page_state(pfn).unwrap().flags.contains(PageFlags::FREE));
}

#[test]
fn get_on_a_free_page_names_the_page_and_changes_nothing() {
    let arena = arena();
    let before = arena.page_state(5).unwrap();
    let e = arena.get(5).unwrap_err();
    assert!(matches!(e, AcquireError::Free { pfn: 5, .. }), "{e:?}");
    assert!(e.to_string().starts_with("page 0x5 is free (refcount 0, pincount 0"), "{e}");
    assert_eq!(arena.page_state(5).unwrap(), before);
    assert!(matches!(arena.pin(5), Err(AcquireError::Free { pfn: 5, .. })));
}

#[test]
fn out_of_range_pages_are_errors() {
    let arena = arena();
    assert_eq!(arena.get(64).unwrap_err(), AcquireError::OutOfRange { pfn: 64, pages: 64 });
    assert!(matches!(arena.pin(usize::MAX), Err(AcquireError::OutOfRange { .. })));
    assert_eq!(arena.put_raw(64).unwrap_err(), ReleaseError::OutOfRange { pfn: 64, pages: 64 });
    assert!(arena.page_info(1 << 40).is_err());
}

#[test]
fn put_raw_cannot_steal_a_handles_reference() {
    let arena = arena();
    let b = arena.alloc(0).unwrap();
    let pfn = b.pfn();
    let e = arena.put_raw(pfn).unwrap_err();
    assert!(matches!(e, ReleaseError::NoReference { raw: 0, .. }), "{e:?}");
    assert_eq!(
        e.to_string(),
        format!("page {pfn:#x} has no raw reference to drop (refcount 1, pincount 0, order 0, flags head, 0 raw)")
    );
    assert_eq!(b.state().refcount, 1, "state untouched");
    assert!(arena.unpin_raw(pfn).unwrap_err().to_string().contains("no raw pin"));
}

#[test]
fn raw_counts_behave_like_handles() {
    let arena = arena();
    let pfn = arena.alloc(1).unwrap().into_raw();
    arena.get_raw(pfn + 1).unwrap();
    arena.pin_raw(pfn + 1).unwrap();
    assert_eq!(arena.raw_counts(pfn + 1), (1, 1));
    assert_eq!(arena.raw_outstanding(), vec![(pfn, 1, 0), (pfn + 1, 1, 1)]);
    let s = arena.page_state(pfn).unwrap();
    assert_eq!((s.refcount, s.pincount), (2, 1));
    arena.put_raw(pfn).unwrap();
    arena.put_raw(pfn + 1).unwrap();
    assert!(!arena.page_state(pfn).unwrap().flags.contains(PageFlags::FREE), "still pinned");
    arena.unpin_raw(pfn + 1).unwrap();
    assert!(arena.page_state(pfn).unwrap().flags.contains(PageFlags::FREE));
    assert!(arena.raw_outstanding().is_empty());
    assert!(matches!(arena.unpin_raw(pfn + 1), Err(ReleaseError::NoPin { .. })));
}

#[test]
fn bytes_mut_needs_sole_ownership_and_blocks_new_holders() {
    let arena = arena();
    let mut b = arena.alloc(1).unwrap();
    let pfn = b.pfn();
    {
        let r = b.page_ref(1);
        drop(r);
    }
    let pin = b.pin(0).unwrap();
    assert!(matches!(b.bytes_mut(), Err(BorrowError::Shared { .. })));
    drop(pin);
    let mut bytes = b.bytes_mut().unwrap();
    bytes[0] = 7;
    assert!(matches!(arena.get(pfn + 1), Err(AcquireError::Exclusive { .. })));
    assert!(matches!(arena.pin_raw(pfn), Err(AcquireError::Exclusive { .. })));
    drop(bytes);
    assert_eq!(b.bytes()[0], 7);
    let r = arena.get(pfn + 1).unwrap();
    assert_eq!(r.state().refcount, 2);
}

/// Issue 8.6: a leaked `BlockBytesMut` keeps its block lent out exclusively until
/// the block is freed, and every path that would add a holder says so: the
/// block's own `pin` and `page_ref` as well as acquisitions by page number.
#[test]
fn a_leaked_bytes_mut_keeps_the_block_exclusive_on_every_path() {
    let arena = std::sync::Arc::new(arena());
    let mut b = arena.alloc(1).unwrap();
    let pfn = b.pfn();
    let mut bytes = b.bytes_mut().unwrap();
    bytes[0] = 9;
    core::mem::forget(bytes);
    let before = b.state();
    assert!(before.flags.contains(PageFlags::EXCLUSIVE));
    assert_eq!((before.refcount, before.pincount), (1, 0));
    let who = arena.page_info(pfn).unwrap().acquirer;

    // By page number, head and tail.
    for p in [pfn, pfn + 1] {
        assert!(matches!(arena.get(p), Err(AcquireError::Exclusive { pfn: e, .. }) if e == p));
        assert!(matches!(arena.pin(p), Err(AcquireError::Exclusive { pfn: e, .. }) if e == p));
        assert!(matches!(arena.get_raw(p), Err(AcquireError::Exclusive { .. })));
        assert!(matches!(arena.pin_raw(p), Err(AcquireError::Exclusive { .. })));
        assert!(matches!(arena.get_owned(p), Err(AcquireError::Exclusive { .. })));
        assert!(matches!(arena.pin_owned(p), Err(AcquireError::Exclusive { .. })));
    }
    // Through the block: refused the same way, and the refused add is
    // taken back without a trace (counts and generation as before).
    for i in 0..2 {
        let e = b.pin(i).unwrap_err();
        assert!(matches!(e, AcquireError::Exclusive { pfn: p, .. } if p == pfn + i), "{e:?}");
        let panic = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| b.page_ref(i))).unwrap_err();
        let msg = panic.downcast_ref::<String>().expect("a formatted panic message");
        assert!(msg.contains("borrowed exclusively"), "{msg}");
    }
    assert_eq!(b.state(), before);
    assert_eq!(arena.page_info(pfn).unwrap().acquirer, who, "a refused acquire is not attributed");

    // The block cannot lend its bytes again, and says why.
    let e = b.bytes_mut().unwrap_err();
    assert!(matches!(e, BorrowError::Exclusive { pfn: p, .. } if p == pfn), "{e:?}");
    assert_eq!(e.to_string(), format!("page {pfn:#x} is already lent out exclusively by a leaked guard ({before})"));
    // Its own shared view stays: the leaked guard's borrow of the block has
    // ended, so no `&mut` from it can be used any more.
    assert_eq!(b.bytes()[0], 9);

    // Freeing the block ends it: the next holder of the pages starts clean.
    drop(b);
    let mut again = arena.alloc(1).unwrap();
    assert_eq!(again.pfn(), pfn);
    assert!(!again.state().flags.contains(PageFlags::EXCLUSIVE));
    drop(again.bytes_mut().unwrap());
    drop(again.pin(1).unwrap());
    drop(arena.get(pfn + 1).unwrap());
}

/// A leaked guard on a block given up as a raw reference: still refused,
/// and `put_raw` still frees the block.
#[test]
fn a_leaked_bytes_mut_on_a_raw_block_is_cleared_when_the_block_is_freed() {
    let arena = arena();
    let mut b = arena.alloc(0).unwrap();
    core::mem::forget(b.bytes_mut().unwrap());
    let pfn = b.into_raw();
    assert!(matches!(arena.get_raw(pfn), Err(AcquireError::Exclusive { .. })));
    arena.put_raw(pfn).unwrap();
    assert!(matches!(arena.get(pfn), Err(AcquireError::Free { .. })));
    let mut again = arena.alloc(0).unwrap();
    assert_eq!(again.pfn(), pfn);
    drop(again.bytes_mut().unwrap());
}

#[test]
fn the_latest_holder_is_attributed_and_a_departed_one_never_is() {
    let arena = arena();
    let b = arena.alloc(0).unwrap();
    let line = line!() + 1;
    let pin = b.pin(0).unwrap();
    let info = arena.page_info(b.pfn()).unwrap();
    match info.acquirer {
        Some(Acquirer::Location(l)) => {
            assert_eq!(l.line(), line);
            assert!(l.file().ends_with("counts.rs"));
        }
        other => panic!("expected the pin's location, got {other:?}"),
    }
    drop(pin);
    // The last count change is a release: nobody is attributed.
    assert_eq!(arena.page_info(b.pfn()).unwrap().acquirer, None);
}

#[test]
fn clone_and_drop_of_handles_keep_exact_counts() {
    let arena = arena();
    let b = arena.alloc(0).unwrap();
    let r = b.page_ref(0);
    let r2 = r.clone();
    let p = b.pin(0).unwrap();
    let p2 = p.try_clone().unwrap();
    assert_eq!(b.state().refcount, 3);
    assert_eq!(b.state().pincount, 2);
    drop((r, r2, p, p2));
    assert_eq!((b.state().refcount, b.state().pincount), (1, 0));
}

#[test]
fn owned_handles_outlive_the_borrow_of_an_arc_arena() {
    let arena = std::sync::Arc::new(arena());
    let b = arena.alloc_owned(0).unwrap();
    let pfn = b.pfn();
    let h = std::thread::spawn(move || {
        let pin = b.pin(0).unwrap();
        drop(b);
        pin
    });
    let pin = h.join().unwrap();
    assert_eq!(arena.page_state(pfn).unwrap().pincount, 1);
    drop(pin);
    assert!(arena.page_state(pfn).unwrap().flags.contains(PageFlags::FREE));
    let r = arena.get_owned(pfn);
    assert!(r.is_err());
}

#[test]
fn pin_count_overflow_is_an_error_and_leaves_the_count_intact() {
    let arena = arena();
    let b = arena.alloc(0).unwrap();
    let pins: Vec<_> = (0..32768).map(|_| b.pin(0).unwrap()).collect();
    let e = b.pin(0).unwrap_err();
    assert!(matches!(e, AcquireError::PinOverflow { pfn, .. } if pfn == b.pfn()), "{e:?}");
    assert!(e.to_string().contains("too many pins (refcount 1, pincount 32768"), "{e}");
    assert!(matches!(arena.pin(b.pfn()), Err(AcquireError::PinOverflow { .. })));
    assert_eq!(b.state().pincount, 32768);
    drop(pins);
    assert_eq!(b.state().pincount, 0);
}

#[test]
fn a_released_pin_leaves_no_attribution_and_an_older_release_keeps_the_latest() {
    static NET: pinowner::Site = pinowner::Site::new("net_rx", module_path!(), file!(), line!(), Some("net"));
    let arena = arena();
    let b = arena.alloc(0).unwrap();
    let pfn = b.pfn();
    let pin = {
        let _s = pinowner::site::enter(&NET);
        arena.pin(pfn).unwrap()
    };
    assert_eq!(arena.page_info(pfn).unwrap().acquirer, Some(Acquirer::Site(&NET)));
    drop(pin);
    assert_eq!(arena.page_info(pfn).unwrap().acquirer, None, "a departed pin is never named");
    // The pool's reference is older than the DMA pin: dropping it keeps the pin named.
    let pin = {
        let _s = pinowner::site::enter(&NET);
        b.pin(0).unwrap()
    };
    drop(b);
    assert_eq!(arena.page_info(pfn).unwrap().acquirer, Some(Acquirer::Site(&NET)));
    drop(pin);
}
