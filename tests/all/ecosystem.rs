//! What users of the wider ecosystem expect: region accessors as
//! `memmap2::MmapMut` has them (registered whole, the way io_uring
//! `register_buffers` takes an `iovec`), bytes through pins and references.

use pinowner::{Backing, PageArena};

/// The arena registered the way io_uring `register_buffers` takes it: one
/// `iovec` over `as_ptr()..len()`.
fn register_whole(arena: &PageArena) -> libc::iovec {
    libc::iovec { iov_base: arena.as_ptr().as_ptr().cast(), iov_len: arena.len() }
}

#[test]
fn every_block_lies_at_pfn_to_ptr_inside_the_registered_region() {
    let arena = PageArena::builder().pages(256).movable_pages(64).backing(Backing::Anonymous).build().unwrap();
    let iov = register_whole(&arena);
    assert_eq!(iov.iov_len, 256 * arena.page_size());
    let base = iov.iov_base as usize;
    let blocks: Vec<_> = [0u8, 3, 1, 0, 5, 2, 0].iter().map(|&o| arena.alloc(o).unwrap()).collect();
    let movable = arena.alloc_movable(4).unwrap().into_block();
    for b in blocks.iter().chain([&movable]) {
        let at = b.as_ptr().as_ptr() as usize;
        assert_eq!(arena.pfn_to_ptr(b.pfn()).unwrap(), b.as_ptr(), "block {:#x}", b.pfn());
        assert_eq!(at, base + b.pfn() * arena.page_size(), "the layout promise");
        assert!(at >= base && at + b.len() <= base + iov.iov_len, "block {:#x} outside the iovec", b.pfn());
        for i in 0..b.pages() {
            let page = at + i * arena.page_size();
            // First and last byte of each page map back to it.
            assert_eq!(arena.ptr_to_pfn(page as *const u8), Some(b.pfn() + i));
            assert_eq!(arena.ptr_to_pfn((page + arena.page_size() - 1) as *const u8), Some(b.pfn() + i));
        }
    }
    assert_eq!(arena.ptr_to_pfn((base + iov.iov_len) as *const u8), None, "one past the end");
    assert_eq!(arena.ptr_to_pfn(base.wrapping_sub(1) as *const u8), None, "one before the start");
}

#[test]
fn a_write_through_the_registered_region_is_seen_through_the_pin() {
    let arena = PageArena::builder().pages(64).backing(Backing::Anonymous).build().unwrap();
    let iov = register_whole(&arena);
    let block = arena.alloc(1).unwrap();
    let pin = block.pin(1).unwrap();
    let off = pin.pfn() * arena.page_size();
    // What the kernel does for a READ_FIXED into buffer `pfn`: writes at
    // the registered base plus the page's offset.
    // SAFETY: the page is pinned by us and nothing else reads or writes it
    // meanwhile; the offset is inside the registered region.
    unsafe { iov.iov_base.cast::<u8>().add(off).write_bytes(0xc3, arena.page_size()) };
    assert!(pin.bytes().iter().all(|&b| b == 0xc3));
    assert_eq!(pin.bytes().len(), arena.page_size());
    let r = arena.get(pin.pfn()).unwrap();
    assert_eq!(r.bytes(), pin.bytes());
    assert_eq!(AsRef::<[u8]>::as_ref(&r), pin.bytes());
    assert_eq!(&block.bytes()[arena.page_size()..], pin.bytes(), "the block's second page");
    assert!(block.bytes()[..arena.page_size()].iter().all(|&b| b == 0), "the first page untouched");
}

#[test]
fn pfn_to_ptr_of_a_page_beyond_the_arena_names_it() {
    let arena = PageArena::builder().pages(16).build().unwrap();
    let e = arena.pfn_to_ptr(16).unwrap_err();
    assert_eq!(e, pinowner::AcquireError::OutOfRange { pfn: 16, pages: 16 });
    assert_eq!(e.to_string(), "page 0x10 is out of range (the arena has 16 pages)");
    assert!(arena.pfn_to_ptr(15).is_ok());
}

#[test]
fn owned_runs_keep_their_arena_alive_and_free_their_pages_on_drop() {
    use pinowner::Reason;
    use std::sync::Arc;
    use std::time::Duration;

    let arena = Arc::new(PageArena::builder().pages(128).movable_pages(64).build().unwrap());
    let free = arena.free_pages();
    let a = arena.reserve_range_owned(64, 16, Reason::Shrink).unwrap();
    let b = arena.reserve_contig_owned(16, 16, Reason::Contig).unwrap();
    let c = arena.reserve_contig_wait_owned(16, 16, Reason::Contig, Duration::from_secs(5)).unwrap();
    let d = arena.reserve_range_wait_owned(112, 16, Reason::Shrink, Duration::from_secs(5)).unwrap();
    assert_eq!(a.range(), 64..80);
    assert_eq!(d.range(), 112..128);
    assert_eq!(arena.free_pages(), free - 64);
    let weak = Arc::downgrade(&arena);
    drop(arena);
    // The runs are 'static: another thread drops them.
    std::thread::spawn(move || {
        let arena = a.arena().clone();
        drop((a, b, c, d));
        assert_eq!(arena.free_pages(), free);
        arena.verify().unwrap();
    })
    .join()
    .unwrap();
    assert!(weak.upgrade().is_none(), "the last run let the arena go");
}
