//! Giving memory back: `discard` releases resident memory, refuses what it
//! must not drop, and `alloc_zeroed` trusts only pages nobody could write.

use pinowner::discard::Discard;
use pinowner::{Backing, DiscardError, ExternalRegion, PageArena, Reason};

/// Resident pages of `len` bytes at `ptr` (page-aligned), by `mincore`.
pub(crate) fn resident(ptr: *const u8, len: usize) -> usize {
    let page = 4096;
    let mut vec = vec![0u8; len.div_ceil(page)];
    // SAFETY: `ptr..ptr + len` is a mapped, page-aligned range of the
    // arena's mapping; mincore only reads the page tables and writes `vec`,
    // which has one byte per page.
    let r = unsafe { libc::mincore(ptr as *mut libc::c_void, len, vec.as_mut_ptr()) };
    assert_eq!(r, 0, "mincore: {}", std::io::Error::last_os_error());
    vec.iter().filter(|&&v| v & 1 != 0).count()
}

fn anonymous(pages: usize) -> PageArena {
    PageArena::builder().pages(pages).max_order(4).backing(Backing::Anonymous).build().unwrap()
}

#[test]
fn discard_releases_the_resident_memory_of_an_anonymous_arena() {
    let arena = anonymous(16);
    let mut b = arena.alloc(4).unwrap();
    b.bytes_mut().unwrap().fill(0xff);
    let (ptr, len) = (b.as_ptr().as_ptr(), b.len());
    assert_eq!(resident(ptr, len), 16);
    b.discard(Discard::DontNeed).unwrap();
    assert_eq!(resident(ptr, len), 0, "MADV_DONTNEED dropped every page");
    assert_eq!(arena.zeroed_pages(), 16);
    // A zeroed allocation of the same pages neither writes nor faults them in.
    let z = arena.alloc_zeroed(4).unwrap();
    assert_eq!(z.as_ptr().as_ptr(), ptr);
    assert_eq!(resident(ptr, len), 0, "alloc_zeroed skipped the pages the OS zeroed");
    assert!(z.bytes().iter().all(|&b| b == 0));
    assert_eq!(arena.zeroed_pages(), 0, "handing the pages out took the marks");
}

#[test]
fn a_discard_on_a_large_heap_arena_gives_the_memory_back() {
    // 64 pages: at least 128 KiB, so the heap region is a mapping.
    let arena = PageArena::builder().pages(64).max_order(4).build().unwrap();
    let mut b = arena.alloc(4).unwrap();
    b.bytes_mut().unwrap().fill(0xff);
    let (ptr, len) = (b.as_ptr().as_ptr(), b.len());
    assert_eq!(resident(ptr, len), 16);
    b.discard(Discard::Free).unwrap();
    assert_eq!(resident(ptr, len), 0, "the pages went back to the OS, not zero-filled in place");
    assert_eq!(arena.zeroed_pages(), 16, "and read as zeros");
    let z = arena.alloc_zeroed(4).unwrap();
    assert!(z.bytes().iter().all(|&x| x == 0));
}

#[test]
fn a_page_written_after_a_discard_and_reallocation_is_zeroed_again() {
    for backing in [Backing::Anonymous, Backing::Heap] {
        let arena = PageArena::builder().pages(16).max_order(4).backing(backing).build().unwrap();
        let mut b = arena.alloc(4).unwrap();
        b.bytes_mut().unwrap().fill(1);
        b.discard(Discard::DontNeed).unwrap();
        // Reallocated without zeroing: the new owner writes through a raw
        // pointer, which the arena cannot see.
        let again = arena.alloc(4).unwrap();
        assert_eq!(arena.zeroed_pages(), 0, "a plain allocation clears the marks");
        // SAFETY: we hold the block alone; the pointer covers its bytes.
        unsafe { again.as_ptr().as_ptr().write_bytes(0xab, again.len()) };
        drop(again);
        let z = arena.alloc_zeroed(4).unwrap();
        assert!(z.bytes().iter().all(|&b| b == 0), "{:?}: alloc_zeroed returned written bytes", arena.backing());
    }
}

#[test]
fn a_discarded_page_reserved_into_a_run_is_not_trusted_as_zero_after_the_run() {
    let arena = PageArena::builder().pages(32).movable_pages(16).max_order(4).build().unwrap();
    let b = arena.alloc_movable(4).unwrap().into_block();
    let pfn = b.pfn();
    b.discard(Discard::DontNeed).unwrap();
    assert_eq!(arena.zeroed_pages(), 16);
    let run = arena.reserve_range(pfn, 16, Reason::Contig).unwrap();
    assert_eq!(arena.zeroed_pages(), 0, "a reservation hands its pages out");
    // SAFETY: the run is ours alone; the pointer covers its bytes.
    unsafe { run.as_ptr().as_ptr().write_bytes(7, run.len()) };
    drop(run);
    let z = arena.alloc_movable_zeroed(4).unwrap().into_block();
    assert!(z.bytes().iter().all(|&b| b == 0));
}

#[test]
fn madv_free_gives_memory_back_without_promising_zeros() {
    let arena = anonymous(16);
    let mut b = arena.alloc(2).unwrap();
    b.bytes_mut().unwrap().fill(3);
    b.discard(Discard::Free).unwrap();
    assert_eq!(arena.zeroed_pages(), 0, "MADV_FREE may leave the old bytes");
    let z = arena.alloc_zeroed(2).unwrap();
    assert!(z.bytes().iter().all(|&b| b == 0), "so alloc_zeroed zeroes them");
}

#[test]
fn discard_of_a_block_others_hold_is_refused_naming_it_and_returns_the_block() {
    let arena = anonymous(16);
    let mut b = arena.alloc(0).unwrap();
    b.bytes_mut().unwrap()[0] = 9;
    let r = arena.get(b.pfn()).unwrap();
    let refused = b.discard(Discard::DontNeed).unwrap_err();
    assert!(matches!(refused.error, DiscardError::Shared { pfn, state } if pfn == r.pfn() && state.refcount == 2));
    assert!(refused.to_string().starts_with(&format!("page {:#x} has other holders", r.pfn())), "{refused}");
    let b = refused.into_inner();
    assert_eq!(r.bytes()[0], 9, "nothing was dropped under the reference");
    let again = arena.get(b.pfn()).expect("the block is not left lent out exclusively");
    drop((r, again));
    b.discard(Discard::DontNeed).unwrap();
    arena.verify().unwrap();
}

#[test]
fn discard_of_a_run_with_a_pinned_page_is_refused_and_the_run_stays_whole() {
    let arena = PageArena::builder().pages(64).movable_pages(32).max_order(3).build().unwrap();
    let run = arena.reserve_contig(32, 32, Reason::Shrink).unwrap();
    let pin = arena.pin(run.pfn() + 20).unwrap();
    let refused = run.discard(Discard::DontNeed).unwrap_err();
    assert!(matches!(refused.error, DiscardError::Shared { pfn: 48, .. }), "{:?}", refused.error);
    let run = refused.into_inner();
    assert!(arena.get(run.pfn()).is_ok(), "no block of the run is left exclusive");
    drop(pin);
    run.discard(Discard::DontNeed).unwrap();
    assert_eq!(arena.zeroed_pages(), 32);
    assert_eq!(arena.free_pages(), 64);
    arena.verify().unwrap();
}

#[test]
fn discard_on_caller_provided_memory_is_refused_and_leaves_it_alone() {
    let layout = std::alloc::Layout::from_size_align(8 * 4096, 4096).unwrap();
    // SAFETY: non-zero size.
    let mem = unsafe { std::alloc::alloc_zeroed(layout) };
    let ptr = std::ptr::NonNull::new(mem).unwrap();
    {
        // SAFETY: the memory is ours, valid and unused until the arena is
        // dropped (below, before the dealloc).
        let ext = unsafe { ExternalRegion::new(ptr, 8 * 4096) };
        let arena = PageArena::builder().backing(Backing::External(ext)).build().unwrap();
        let mut b = arena.alloc(1).unwrap();
        b.bytes_mut().unwrap().fill(5);
        let refused = b.discard(Discard::DontNeed).unwrap_err();
        assert!(matches!(refused.error, DiscardError::External { pages: 2, .. }), "{:?}", refused.error);
        let b = refused.into_inner();
        assert!(b.bytes().iter().all(|&x| x == 5));
    }
    // SAFETY: allocated above with this layout; the arena is gone.
    unsafe { std::alloc::dealloc(mem, layout) };
}
