//! The allocator adapter under Rust's allocator contracts, as a buffer
//! pool's collections use it: `Box`, zero-sized and over-aligned layouts,
//! shrinking to nothing, freeing with the block's full length, exhaustion,
//! and frees on another thread.

use std::alloc::Layout;
use std::sync::Arc;

use allocator_api2::alloc::Allocator;
use allocator_api2::boxed::Box;
use pinowner::allocator::ArenaAllocator;
use pinowner::PageArena;

fn all_free(arena: &PageArena) {
    assert_eq!(arena.free_pages(), arena.pages());
    assert!(arena.raw_outstanding().is_empty(), "{:?}", arena.raw_outstanding());
    arena.verify().unwrap();
}

#[test]
fn surface_a_box_in_the_arena_keeps_its_bytes_and_frees_its_block() {
    let arena = PageArena::builder().pages(64).max_order(6).build().unwrap();
    let b = Box::new_in([7u8; 5000], &arena);
    assert_eq!(arena.free_pages(), 62, "5000 bytes: one order-1 block");
    assert!(b.iter().all(|&x| x == 7));
    assert!(arena.ptr_to_pfn(b.as_ptr()).is_some());
    drop(b);
    all_free(&arena);
}

#[test]
fn surface_zero_sized_and_block_length_layouts_follow_the_contract() {
    let arena = PageArena::builder().pages(64).max_order(6).build().unwrap();
    let zst = Layout::from_size_align(0, 64).unwrap();
    let p = arena.allocate(zst).unwrap();
    assert_eq!((p.len(), p.cast::<u8>().as_ptr() as usize % 64), (0, 0));
    // Growing from nothing allocates; the dangling pointer is never freed.
    let small = Layout::from_size_align(100, 64).unwrap();
    // SAFETY: `p` was allocated with `zst`.
    let q = unsafe { arena.grow(p.cast(), zst, small) }.unwrap();
    // SAFETY: `q` is live, 100 bytes ours.
    unsafe { q.cast::<u8>().as_ptr().write_bytes(3, 100) };
    assert_eq!(arena.free_pages(), 63);
    // Freed with the length the allocation returned (the memory "fits" it).
    let whole = Layout::from_size_align(q.len(), 64).unwrap();
    // SAFETY: `q` is live; `whole` fits it (size between 100 and q.len()).
    let r = unsafe { arena.shrink(q.cast(), whole, Layout::from_size_align(0, 64).unwrap()) }.unwrap();
    assert_eq!(r.len(), 0);
    all_free(&arena);
    let a = arena.allocate(small).unwrap();
    // SAFETY: `a` is live; `whole` fits it.
    unsafe { arena.deallocate(a.cast(), whole) };
    all_free(&arena);
}

#[test]
fn surface_an_exhausted_arena_refuses_without_changing_anything() {
    let arena = PageArena::builder().pages(64).max_order(6).build().unwrap();
    let page = Layout::from_size_align(4096, 8).unwrap();
    let held: Vec<_> = std::iter::from_fn(|| arena.allocate(page).ok()).collect();
    assert_eq!(held.len(), 64, "every page served, including those in thread caches");
    assert!(arena.allocate(page).is_err() && arena.allocate_zeroed(page).is_err());
    let first = held[0].cast::<u8>();
    // SAFETY: `first` is live with `page`; 4096 bytes ours.
    unsafe { first.as_ptr().write_bytes(9, 4096) };
    // A grow that finds no block leaves the old one live and intact.
    // SAFETY: `first` is live with `page`.
    assert!(unsafe { arena.grow(first, page, Layout::from_size_align(8192, 8).unwrap()) }.is_err());
    // SAFETY: still live.
    assert!(unsafe { core::slice::from_raw_parts(first.as_ptr(), 4096) }.iter().all(|&x| x == 9));
    for p in held {
        // SAFETY: each is live with `page`.
        unsafe { arena.deallocate(p.cast(), page) };
    }
    all_free(&arena);
}

#[test]
fn surface_allocations_freed_on_other_threads_return_every_page() {
    let arena = Arc::new(PageArena::builder().pages(512).max_order(6).build().unwrap());
    let alloc = ArenaAllocator::new(arena.clone());
    // Bounded: at most about 11 vectors (16 pages each at most) are alive
    // at once, however far the freeing thread lags.
    let (tx, rx) = std::sync::mpsc::sync_channel(8);
    let makers: Vec<_> = (0..2)
        .map(|t| {
            let (alloc, tx) = (alloc.clone(), tx.clone());
            std::thread::spawn(move || {
                for i in 0..100usize {
                    let mut v = allocator_api2::vec::Vec::with_capacity_in(1 + (i * 37 + t) % 9000, alloc.clone());
                    v.push(i as u32);
                    tx.send(v).unwrap();
                }
            })
        })
        .collect();
    drop(tx);
    let freer = std::thread::spawn(move || rx.iter().map(|v| v[0] as usize).sum::<usize>());
    makers.into_iter().for_each(|m| m.join().unwrap());
    assert_eq!(freer.join().unwrap(), 2 * (0..100).sum::<usize>());
    drop(alloc);
    all_free(&arena);
    let stats = arena.stats();
    assert_eq!(stats.zones[0].total_allocs(), 200);
    assert_eq!(stats.zones[0].live_blocks(), 0);
}
