//! Backings: heap, anonymous mmap, hugetlb with its fallback, external.

use pinowner::{Backing, BackingKind, ExternalRegion, PageArena};

#[test]
fn anonymous_arena_of_untouched_pages_maps_lazily() {
    // 64 GiB of address space; only descriptors and what we touch are resident.
    let arena = PageArena::builder().capacity(64 << 30).backing(Backing::Anonymous).build().unwrap();
    assert_eq!(arena.backing(), BackingKind::Anonymous);
    assert_eq!(arena.pages(), 16 << 20);
    let mut b = arena.alloc(0).unwrap();
    b.bytes_mut().unwrap()[4095] = 1;
    assert_eq!(b.bytes()[4095], 1);
}

#[test]
fn hugetlb_falls_back_to_transparent_hugepages_and_says_so() {
    let arena = PageArena::builder().capacity(4 << 20).page_size(2 << 20).backing(Backing::HugeTlb).build().unwrap();
    let reserved: u64 =
        std::fs::read_to_string("/proc/sys/vm/nr_hugepages").ok().and_then(|s| s.trim().parse().ok()).unwrap_or(0);
    match arena.backing() {
        BackingKind::HugeTlb => assert!(reserved > 0, "hugetlb pages were used though none are reserved"),
        BackingKind::TransparentHuge => {
            let why = arena.backing_fallback().expect("a fallback says why");
            assert!(why.contains("MAP_HUGETLB"), "{why}");
        }
        other => panic!("unexpected backing {other:?}"),
    }
    let b = arena.alloc_zeroed(0).unwrap();
    assert_eq!(b.len(), 2 << 20);
    assert_eq!(b.as_ptr().as_ptr() as usize % (2 << 20), 0, "2 MiB pages are 2 MiB aligned");
}

#[test]
fn external_region_is_used_in_place() {
    let layout = std::alloc::Layout::from_size_align(8 * 4096, 4096).unwrap();
    // SAFETY: non-zero size.
    let mem = unsafe { std::alloc::alloc_zeroed(layout) };
    let ptr = std::ptr::NonNull::new(mem).unwrap();
    {
        // SAFETY: the allocation lives until after the arena is dropped below
        // and is touched only through the arena meanwhile.
        let ext = unsafe { ExternalRegion::new(ptr, 8 * 4096) };
        let arena = PageArena::builder().backing(Backing::External(ext)).build().unwrap();
        assert_eq!(arena.backing(), BackingKind::External);
        assert_eq!(arena.pages(), 8);
        let mut b = arena.alloc(0).unwrap();
        let off = b.pfn() * 4096;
        b.bytes_mut().unwrap()[0] = 0xee;
        // SAFETY: in bounds of the allocation; the block's guard is gone.
        assert_eq!(unsafe { *mem.add(off) }, 0xee);
        assert_eq!(b.as_ptr().as_ptr(), mem.wrapping_add(off));
    }
    // SAFETY: allocated above with this layout; the arena is dropped.
    unsafe { std::alloc::dealloc(mem, layout) };
}

#[test]
fn a_large_heap_arena_is_not_resident_before_use() {
    // 256 MiB on the default heap backing: building must not write the
    // pages (a page-aligned `alloc_zeroed` memsets them all).
    let arena = PageArena::builder().capacity(256 << 20).build().unwrap();
    assert_eq!(arena.backing(), BackingKind::Heap);
    let (base, len) = (arena.as_ptr().as_ptr(), arena.pages() * arena.page_size());
    let resident = crate::discard::resident(base, len);
    assert!(resident <= 16, "{resident} of {} pages resident before any use", arena.pages());
    // Zeroed all the same, and a written page costs one page.
    let mut b = arena.alloc(0).unwrap();
    assert!(b.bytes().iter().all(|&x| x == 0));
    b.bytes_mut().unwrap().fill(7);
    assert!(crate::discard::resident(base, len) <= resident + 1);
    drop(b);
    let z = arena.alloc_zeroed(3).unwrap();
    assert!(z.bytes().iter().all(|&x| x == 0));
}

#[test]
fn a_small_heap_arena_comes_from_the_allocator_and_reads_as_zeros() {
    let arena = PageArena::builder().pages(4).build().unwrap();
    assert_eq!(arena.backing(), BackingKind::Heap);
    let b = arena.alloc(2).unwrap();
    assert!(b.bytes().iter().all(|&x| x == 0));
}
