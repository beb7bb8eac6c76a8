//! Loom model: the owner recorded for a pin is visible to any reader that
//! sees the pin, or the pin counts as unattributed; it is never attributed to
//! the wrong site.
//!
//! Two threads pin the same page, each under its own site (entered through
//! the `loom::thread_local!` behind `site::enter`), then unpin it, while a
//! third reads `page_info`. A site that the reader names must hold a pin in
//! the state the reader saw, and must not be one whose unpin the reader
//! already knows happened.
//!
//! Run: `RUSTFLAGS="--cfg loom" LOOM_MAX_PREEMPTIONS=2 cargo test -p pinowner
//! --release --test loom_site`.
#![cfg(loom)]

mod common;

use std::sync::Arc;

use loom::sync::atomic::AtomicBool;
use loom::sync::atomic::Ordering::{Acquire, Release};
use pinowner::site::{self, Site};
use pinowner::{Acquirer, PageArena, PageInfo};

static DMA: Site = Site::new("dma_refill", module_path!(), file!(), line!(), Some("dma"));
static NET: Site = Site::new("net_rx", module_path!(), file!(), line!(), Some("net"));

/// Checks one reading. `released` says which sites the reader knows (by
/// happens-before) to have dropped their pin before it read.
fn check(info: &PageInfo, dma_released: bool, net_released: bool) {
    match info.acquirer {
        Some(Acquirer::Site(s)) => {
            assert!(s == &DMA || s == &NET, "attributed to a stranger: {s}");
            assert!(info.state.pincount >= 1, "attributed to {s} in a state without pins: {:?}", info.state);
            if s == &DMA {
                assert!(!dma_released, "attributed to dma after dma unpinned: {info:?}");
            } else {
                assert!(!net_released, "attributed to net after net unpinned: {info:?}");
            }
        }
        // The allocation itself (outside any site): only while no pin was
        // taken after it.
        Some(Acquirer::Location(_)) => {
            assert_eq!(info.state.pincount, 0, "a pinned page still names its allocation: {info:?}")
        }
        None => {}
    }
}

#[test]
fn a_pin_is_attributed_to_its_own_site_or_to_none() {
    common::model("a_pin_is_attributed_to_its_own_site_or_to_none", || {
        let arena = Arc::new(PageArena::builder().pages(4).max_order(2).without_thread_cache().build().unwrap());
        let block = arena.alloc_owned(0).unwrap();
        let pfn = block.pfn();
        let released = Arc::new([AtomicBool::new(false), AtomicBool::new(false)]);

        let holders: Vec<_> = [(&DMA, 0), (&NET, 1)]
            .into_iter()
            .map(|(site, i)| {
                let arena = arena.clone();
                let released = released.clone();
                loom::thread::spawn(move || {
                    let pin = {
                        let _scope = site::enter(site);
                        let pin = arena.pin_owned(pfn).unwrap();
                        // Each model thread has its own scope stack.
                        assert_eq!(site::current(), Some(site));
                        pin
                    };
                    assert_eq!(site::current(), None);
                    // While we hold our pin, the page names a site that holds one.
                    let info = arena.page_info(pfn).unwrap();
                    assert!(info.state.pincount >= 1);
                    check(&info, i == 0 && released[0].load(Acquire), i == 1 && released[1].load(Acquire));
                    drop(pin);
                    released[i].store(true, Release);
                })
            })
            .collect();

        // The reader: whatever unpins it knows about were ordered before its read.
        let dma_released = released[0].load(Acquire);
        let net_released = released[1].load(Acquire);
        check(&arena.page_info(pfn).unwrap(), dma_released, net_released);

        for h in holders {
            h.join().unwrap();
        }
        // Both pins are gone: nobody is named but (at most) the allocation.
        let info = arena.page_info(pfn).unwrap();
        check(&info, true, true);
        assert_eq!(info.state.pincount, 0);
        drop(block);
    });
}

/// Readers taking and dropping references by page number on a pinned block
/// (the network stack reading the buffer its driver pinned), from two
/// threads at once: afterwards the pinner is still named. A reference on a
/// pinned block adds its count without claiming the owner slot or moving
/// the generation.
#[test]
fn readers_by_number_never_hide_the_pinner() {
    common::model("readers_by_number_never_hide_the_pinner", || {
        let arena = std::sync::Arc::new(
            pinowner::PageArena::builder().pages(2).max_order(1).without_thread_cache().build().unwrap(),
        );
        let block = arena.alloc_owned(0).unwrap();
        let pfn = block.pfn();
        let pin = arena.pin(pfn).unwrap();
        let pinner = arena.page_info(pfn).unwrap().acquirer;
        assert!(pinner.is_some());
        let readers: Vec<_> = (0..2)
            .map(|_| {
                let a = arena.clone();
                loom::thread::spawn(move || drop(a.get(pfn).unwrap()))
            })
            .collect();
        for r in readers {
            r.join().unwrap();
        }
        assert_eq!(arena.page_info(pfn).unwrap().acquirer, pinner);
        drop((pin, block));
    });
}

/// Raw readers (`get_raw` then `put_raw`, as an FFI path peeking at a
/// registered buffer) on a pinned block, from two threads at once:
/// afterwards the pinner is still named. A raw release carries no
/// generation, so it moves the word's only if the slot is current and
/// names an acquisition of its own kind; a slot naming a pin is never a
/// raw reference's (a reference on a pinned block does not claim). (Moving
/// it whenever the slot is current left the pinner unnamed.)
#[test]
fn raw_readers_never_hide_the_pinner() {
    common::model("raw_readers_never_hide_the_pinner", || {
        let arena = Arc::new(PageArena::builder().pages(2).max_order(1).without_thread_cache().build().unwrap());
        let block = arena.alloc_owned(0).unwrap();
        let pfn = block.pfn();
        let pin = {
            let _scope = site::enter(&DMA);
            arena.pin_owned(pfn).unwrap()
        };
        let readers: Vec<_> = (0..2)
            .map(|_| {
                let a = arena.clone();
                loom::thread::spawn(move || {
                    a.get_raw(pfn).unwrap();
                    a.put_raw(pfn).unwrap();
                })
            })
            .collect();
        for r in readers {
            r.join().unwrap();
        }
        assert_eq!(arena.page_info(pfn).unwrap().acquirer, Some(Acquirer::Site(&DMA)));
        drop((pin, block));
    });
}

/// A reference cloned from a handle on a pinned block takes back its
/// generation move only if nothing changed since its add. Racing a pin and
/// unpin by another thread, it must never bring that departed pinner's
/// slot back to life: afterwards the block names its first pinner or
/// nobody, never the one that left.
#[test]
fn a_reference_on_a_pinned_block_never_names_a_departed_holder() {
    common::model("a_reference_on_a_pinned_block_never_names_a_departed_holder", || {
        let arena = std::sync::Arc::new(
            pinowner::PageArena::builder().pages(2).max_order(1).without_thread_cache().build().unwrap(),
        );
        let block = arena.alloc_owned(0).unwrap();
        let pfn = block.pfn();
        let pin = arena.pin(pfn).unwrap();
        let pinner = arena.page_info(pfn).unwrap().acquirer;
        let r = block.page_ref(0);
        let a = arena.clone();
        let passer = loom::thread::spawn(move || drop(a.pin(pfn).unwrap()));
        let reader = loom::thread::spawn(move || {
            drop(r.clone());
            drop(r);
        });
        passer.join().unwrap();
        reader.join().unwrap();
        let now = arena.page_info(pfn).unwrap().acquirer;
        assert!(now.is_none() || now == pinner, "a departed holder is named: {now:?}");
        drop((pin, block));
    });
}
