//! The zone path (no thread cache: every allocation and free under the zone
//! lock) coalesces lazily: a block freed next to a free buddy stays unmerged
//! until something needs the merge. What must hold regardless: every free
//! page is found by reservations, counted by `free_pages`, accepted by
//! `verify`, shown merged by `frag_stats`, and reported by free page
//! reporting.

use std::sync::atomic::{AtomicUsize, Ordering};

use pinowner::reporting::Reporting;
use pinowner::{Backing, PageArena, Reason};

/// A no-cache arena of `pages` pages (`movable` of them movable).
fn zone_path(pages: usize, movable: usize, max_order: u8) -> PageArena {
    PageArena::builder()
        .pages(pages)
        .movable_pages(movable)
        .max_order(max_order)
        .without_thread_cache()
        .build()
        .unwrap()
}

/// Frees every page of `blocks` (order-0 blocks covering whole aligned
/// pairs) in page order: the second page of each pair finds its buddy free.
fn free_in_page_order(mut blocks: Vec<pinowner::Block<&PageArena>>) {
    blocks.sort_by_key(|b| b.pfn());
    for b in blocks {
        drop(b);
    }
}

/// The order the lock-free page state shows for `pfn` (a free block left
/// unmerged shows its own order, not the merged one).
fn order_of(arena: &PageArena, pfn: usize) -> u8 {
    arena.page_info(pfn).unwrap().state.order
}

#[test]
fn a_reservation_over_pages_held_unmerged_succeeds() {
    let arena = zone_path(64, 32, 5);
    let blocks: Vec<_> = (0..32).map(|_| arena.alloc_movable(0).unwrap().into_block()).collect();
    free_in_page_order(blocks);
    // The precondition: pages of the movable zone sit free but unmerged.
    assert!((32..64).any(|p| order_of(&arena, p) == 0), "nothing was left unmerged");
    assert_eq!(arena.free_pages(), 64);
    let run = arena.reserve_range(32, 32, Reason::Contig).unwrap();
    assert_eq!(run.range(), 32..64);
    assert_eq!(arena.free_pages(), 32);
    drop(run);
    let run = arena.reserve_contig(32, 32, Reason::Contig).unwrap();
    drop(run);
    arena.verify().unwrap();
    assert_eq!(arena.free_pages(), 64);
}

#[test]
fn free_pages_and_verify_are_exact_over_unmerged_blocks_and_frag_stats_merges_them() {
    let arena = zone_path(256, 0, 6);
    let blocks: Vec<_> = (0..256).map(|_| arena.alloc(0).unwrap()).collect();
    free_in_page_order(blocks);
    assert!((0..256).any(|p| order_of(&arena, p) == 0), "nothing was left unmerged");
    // Deferred blocks are listed free blocks: counted, and consistent.
    assert_eq!(arena.free_pages(), 256);
    arena.verify().unwrap();
    assert!((0..256).any(|p| order_of(&arena, p) == 0), "verify changes nothing");
    // `frag_stats` shows the lists as an eager buddy leaves them.
    let stats = arena.frag_stats();
    let z = &stats.zones[0];
    assert_eq!(z.free_blocks, vec![0, 0, 0, 0, 0, 0, 4], "{stats}");
    assert_eq!((z.free_pages, z.largest_free_run), (256, 256));
    assert!((0..256).step_by(64).all(|p| order_of(&arena, p) == 6));
    arena.verify().unwrap();
}

#[test]
fn a_higher_order_allocation_merges_unmerged_blocks_before_it_splits_or_fails() {
    // One block of the largest order: only merging every page back makes it.
    let arena = zone_path(16, 0, 4);
    let blocks: Vec<_> = (0..16).map(|_| arena.alloc(0).unwrap()).collect();
    free_in_page_order(blocks);
    assert!((0..16).any(|p| order_of(&arena, p) == 0), "nothing was left unmerged");
    let whole = arena.alloc(4).unwrap();
    assert_eq!(whole.pfn(), 0);
    assert_eq!(arena.free_pages(), 0);
    drop(whole);
    // And an order between: the merge runs before any split.
    let blocks: Vec<_> = (0..16).map(|_| arena.alloc(0).unwrap()).collect();
    free_in_page_order(blocks);
    let pair = arena.alloc(1).unwrap();
    drop(pair);
    arena.verify().unwrap();
    assert_eq!(arena.frag_stats().zones[0].free_blocks, vec![0, 0, 0, 0, 1]);
}

#[test]
fn the_page_freed_last_comes_back_first_and_the_lists_stay_exact() {
    let arena = zone_path(1024, 0, 10);
    let held: Vec<_> = (0..1000).map(|_| arena.alloc(0).unwrap()).collect();
    let before = arena.frag_stats();
    for _ in 0..100 {
        let b = arena.alloc(0).unwrap();
        let pfn = b.pfn();
        drop(b);
        // The zone path's steady state: the same page, unsplit, each time.
        assert_eq!(arena.alloc(0).unwrap().pfn(), pfn);
    }
    assert_eq!(arena.frag_stats(), before);
    arena.verify().unwrap();
    drop(held);
    assert_eq!(arena.frag_stats().zones[0].free_blocks[10], 1);
    arena.verify().unwrap();
}

#[test]
fn free_page_reporting_reports_blocks_whose_pieces_were_left_unmerged() {
    let arena = PageArena::builder()
        .pages(2048)
        .max_order(10)
        .backing(Backing::Anonymous)
        .reporting(Reporting { min_order: Some(9), ..Reporting::default() })
        .without_thread_cache()
        .build()
        .unwrap();
    let blocks: Vec<_> = (0..2048).map(|_| arena.alloc(0).unwrap()).collect();
    free_in_page_order(blocks);
    assert!((0..2048).any(|p| order_of(&arena, p) == 0), "nothing was left unmerged");
    let report = arena.report_free(usize::MAX).unwrap();
    assert_eq!((report.blocks, report.pages), (2, 2048));
    assert_eq!(arena.reported_pages(), 2048);
    arena.verify().unwrap();
    // A free next to a reported buddy merges at once and clears its marks.
    let a = arena.alloc(9).unwrap();
    let b = arena.alloc(9).unwrap();
    let pb = b.pfn();
    drop(a);
    assert_eq!(arena.report_free(usize::MAX).unwrap().blocks, 1);
    drop(b);
    assert_eq!(order_of(&arena, pb & !1023), 10, "merged with its reported buddy");
    assert_eq!(arena.reported_pages(), 1024, "the other order-10 block only");
    arena.verify().unwrap();
}

/// Threads allocating and freeing order 0 and higher orders on a no-cache
/// arena, one reserving windows of the movable zone, one reading
/// `frag_stats` (each snapshot self-consistent), both until the others are
/// done: nothing is lost, and the lists end merged and verified.
#[test]
fn racing_zone_path_frees_reservations_and_frag_stats_lose_no_page() {
    let pages = 4096;
    let arena = zone_path(pages, 2048, 8);
    let iters = 50_000;
    let working = AtomicUsize::new(3);
    std::thread::scope(|s| {
        for t in 0..3u64 {
            let (arena, working) = (&arena, &working);
            s.spawn(move || {
                let mut seed = 0x2545_f491_4f6c_dd1du64 ^ (t + 1) << 40;
                let mut next = move || {
                    seed ^= seed << 13;
                    seed ^= seed >> 7;
                    seed ^= seed << 17;
                    seed
                };
                // Movable blocks stay movable: a reservation migrates them
                // with its window isolated and the zone lock released, while
                // frees land in and beside the window.
                let (mut held, mut movable) = (Vec::new(), Vec::new());
                for _ in 0..iters {
                    let r = next();
                    if held.len() + movable.len() < 64 && r % 5 < 3 {
                        // Mostly order 0; one thread also asks for higher orders.
                        let order = if t == 0 && r & 0x300 == 0 { (r >> 12) as u8 % 6 } else { 0 };
                        if r & 0x10 == 0 {
                            held.extend(arena.alloc(order));
                        } else {
                            movable.extend(arena.alloc_movable(order));
                        }
                    } else if r & 0x20 == 0 && !held.is_empty() {
                        drop(held.swap_remove((r >> 20) as usize % held.len()));
                    } else if !movable.is_empty() {
                        drop(movable.swap_remove((r >> 20) as usize % movable.len()));
                    }
                }
                drop((held, movable));
                working.fetch_sub(1, Ordering::Release);
            });
        }
        let (arena, working) = (&arena, &working);
        s.spawn(move || {
            let mut i = 0;
            while working.load(Ordering::Acquire) != 0 {
                let start = 2048 + (i * 64) % 2048;
                if let Ok(run) = arena.reserve_range(start, 64, Reason::Contig) {
                    assert_eq!(run.range(), start..start + 64);
                }
                drop(arena.reserve_contig(32, 32, Reason::Contig));
                i += 1;
            }
        });
        s.spawn(move || {
            while working.load(Ordering::Acquire) != 0 {
                for z in arena.frag_stats().zones {
                    let listed: usize = z.free_blocks.iter().enumerate().map(|(o, n)| n << o).sum();
                    assert_eq!(listed, z.free_pages, "a snapshot is taken under the zone lock");
                }
            }
        });
    });
    arena.verify().unwrap();
    assert_eq!(arena.free_pages(), pages);
    for z in arena.frag_stats().zones {
        assert_eq!(z.free_blocks[8] << 8, z.pages, "{z:?}");
    }
}
