//! The arena as an `allocator_api2` allocator, with real clients:
//! `allocator_api2::vec::Vec` and `hashbrown::HashMap` growing, shrinking
//! and dropping in arena pages.

use std::alloc::Layout;
use std::collections::hash_map::RandomState;
use std::sync::Arc;

use allocator_api2::alloc::Allocator;
use allocator_api2::vec::Vec;
use pinowner::allocator::ArenaAllocator;
use pinowner::{Backing, PageArena};

fn arena() -> PageArena {
    PageArena::builder().pages(1024).max_order(8).backing(Backing::Anonymous).build().unwrap()
}

/// Every page is free again and the allocator's invariants hold.
fn all_free(arena: &PageArena) {
    assert_eq!(arena.free_pages(), arena.pages());
    assert!(arena.raw_outstanding().is_empty(), "{:?}", arena.raw_outstanding());
    arena.verify().unwrap();
}

#[test]
fn a_vec_grows_through_orders_shrinks_and_frees_every_page() {
    let arena = arena();
    let mut v: Vec<u32, _> = Vec::new_in(&arena);
    let mut last_cap = 0;
    for i in 0..100_000u32 {
        v.push(i);
        if v.capacity() != last_cap {
            last_cap = v.capacity();
            // Each buffer is a block of its own, starting at its head page.
            let pfn = arena.ptr_to_pfn(v.as_ptr()).expect("the buffer is in the arena");
            assert_eq!(arena.pfn_to_ptr(pfn).unwrap().as_ptr() as *const u32, v.as_ptr());
            assert_eq!(arena.page_info(pfn).unwrap().head, pfn, "capacity {last_cap}");
        }
    }
    assert!(v.iter().copied().eq(0..100_000), "growth kept every element");
    assert_eq!(last_cap, 131_072, "400,000 bytes in a 128-page block");
    assert_eq!(arena.free_pages(), 1024 - 128);
    v.truncate(1000);
    v.shrink_to_fit();
    assert_eq!(v.capacity(), 1000);
    assert!(v.iter().copied().eq(0..1000), "shrinking kept the prefix");
    assert_eq!(arena.free_pages(), 1023, "moved to a one-page block");
    drop(v);
    all_free(&arena);
}

#[test]
fn a_hashbrown_map_lives_in_arena_pages() {
    let arena = arena();
    let mut map = hashbrown::HashMap::with_hasher_in(RandomState::new(), &arena);
    for i in 0..20_000u64 {
        map.insert(i, i * 3);
    }
    assert!(arena.free_pages() < 1024, "the table is in the arena");
    assert_eq!(map.get(&12_345), Some(&37_035));
    map.retain(|k, _| k % 10 == 0);
    map.shrink_to_fit();
    assert_eq!(map.len(), 2_000);
    assert!((0..20_000u64).step_by(10).all(|k| map[&k] == k * 3));
    let stats = arena.stats();
    assert!(stats.zones[0].total_allocs() >= 2, "growth and shrink moved the table: {stats:?}");
    drop(map);
    all_free(&arena);
}

#[test]
fn growing_within_the_block_keeps_the_pointer_and_moving_keeps_the_bytes() {
    let arena = arena();
    let small = Layout::from_size_align(100, 8).unwrap();
    let a = arena.allocate(small).unwrap();
    assert_eq!(a.len(), 4096, "the whole page is usable");
    let p = a.cast::<u8>();
    // SAFETY: `p` is a live allocation of `small`; 100 bytes are ours.
    unsafe { p.as_ptr().write_bytes(0x11, 100) };
    let page = Layout::from_size_align(4096, 8).unwrap();
    // SAFETY: `p` was allocated with `small` by this allocator.
    let b = unsafe { arena.grow(p, small, page) }.unwrap();
    assert_eq!(b.cast::<u8>(), p, "same order: in place");
    let big = Layout::from_size_align(3 * 4096, 8).unwrap();
    // SAFETY: `p` is live with layout `page`.
    let c = unsafe { arena.grow_zeroed(p, page, big) }.unwrap();
    assert_eq!(c.len(), 4 * 4096);
    // SAFETY: `c` is live and `c.len()` bytes long.
    let bytes = unsafe { c.as_ref() };
    assert!(bytes[..100].iter().all(|&x| x == 0x11), "moved bytes kept");
    assert!(bytes[4096..].iter().all(|&x| x == 0), "grown bytes zeroed");
    // SAFETY: `c` is live with layout `big`.
    let d = unsafe { arena.shrink(c.cast(), big, small) }.unwrap();
    assert_eq!(arena.free_pages(), 1023, "shrinking to a smaller order gives pages back");
    // SAFETY: `d` is live with layout `small`.
    unsafe { arena.deallocate(d.cast(), small) };
    all_free(&arena);
}

#[test]
fn layouts_the_arena_cannot_serve_are_refused() {
    let arena = PageArena::builder().pages(64).max_order(4).build().unwrap();
    let largest = 4096 << 4;
    let too_big = Layout::from_size_align(largest + 1, 8).unwrap();
    assert!(arena.allocate(too_big).is_err(), "above the largest block");
    let base_align = 1usize << (arena.as_ptr().as_ptr() as usize).trailing_zeros();
    if base_align <= largest {
        let over_aligned = Layout::from_size_align(8, base_align * 2).unwrap();
        assert!(arena.allocate(over_aligned).is_err(), "above the base's alignment");
    }
    // An alignment of a few pages is served by a block that large.
    let aligned = Layout::from_size_align(8, 4 * 4096).unwrap();
    if base_align >= aligned.align() {
        let p = arena.allocate(aligned).unwrap();
        assert_eq!(p.cast::<u8>().as_ptr() as usize % aligned.align(), 0);
        assert_eq!(p.len(), 4 * 4096);
        // SAFETY: allocated above with `aligned`.
        unsafe { arena.deallocate(p.cast(), aligned) };
    }
    // Out of pages: a fallible reservation says so and changes nothing.
    let mut v: Vec<u8, _> = Vec::new_in(&arena);
    assert!(v.try_reserve(largest * 2).is_err());
    // Zero-sized values take no page.
    let mut units: Vec<(), _> = Vec::new_in(&arena);
    units.extend(std::iter::repeat_n((), 1000));
    assert_eq!(arena.free_pages(), 64);
    drop((v, units));
    all_free(&arena);
}

#[test]
fn an_arena_allocator_is_static_and_keeps_its_arena() {
    let arena = Arc::new(arena());
    let alloc = ArenaAllocator::new(arena.clone());
    let mut v: Vec<String, _> = Vec::new_in(alloc.clone());
    v.extend((0..500).map(|i| i.to_string()));
    let map = std::thread::spawn(move || {
        let mut m = hashbrown::HashMap::with_hasher_in(RandomState::new(), alloc);
        m.extend(v.iter().map(|s| (s.clone(), s.len())));
        m
    })
    .join()
    .unwrap();
    assert_eq!(map.len(), 500);
    drop(map);
    all_free(&arena);
}
