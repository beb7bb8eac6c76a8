//! Page poisoning: a write to a freed block is caught (pattern mode: at
//! the next allocation, the block quarantined; protect mode: at the write,
//! with SIGSEGV), and the arena stays usable.

use std::os::unix::process::ExitStatusExt;
use std::process::{Command, Stdio};

use pinowner::poison::Poison;
use pinowner::{Backing, BuildError, PageArena, PageFlags, Tracking};

#[test]
fn pattern_mode_quarantines_a_block_written_after_free_and_the_arena_stays_usable() {
    let arena = PageArena::builder().pages(8).max_order(0).poison(Poison::Pattern).build().unwrap();
    let mut blocks: Vec<_> = (0..8).map(|_| arena.alloc(0).unwrap()).collect();
    for b in &mut blocks {
        b.bytes_mut().unwrap().fill(1);
    }
    let victim = blocks.remove(3);
    let (pfn, stale) = (victim.pfn(), victim.as_ptr().as_ptr());
    drop(victim);
    assert!(arena.page_state(pfn).unwrap().flags.contains(PageFlags::POISONED));
    // SAFETY: the arena's memory stays mapped; writing a freed page is the
    // bug under test.
    unsafe { stale.add(4000).write_bytes(0x42, 3) };
    drop(blocks);
    // Every block again: seven clean ones; the eighth allocation finds the
    // corrupt block, quarantines it and has nothing else to give.
    let again: Vec<_> = (0..7).map(|_| arena.alloc(0).unwrap()).collect();
    assert!(again.iter().all(|b| b.pfn() != pfn && b.bytes().iter().all(|&x| x == Poison::PATTERN)));
    assert!(arena.alloc(0).is_err(), "the corrupt block is never handed out");
    let found = arena.poison_errors();
    assert_eq!(found.len(), 1);
    let e = &found[0];
    assert_eq!((e.pfn, e.head, e.pages, e.offset, e.pattern), (pfn, pfn, 1, 4000, 0xaa));
    assert_eq!(e.found[..4], [0x42, 0x42, 0x42, 0xaa]);
    assert_eq!(
        e.to_string(),
        format!(
            "page {pfn:#x} (block of 1 pages at {pfn:#x}) was written after it was freed: byte 4000 of the page reads [42, 42, 42, aa, aa, aa, aa, aa, aa, aa, aa, aa, aa, aa, aa, aa], not the poison 0xaa"
        )
    );
    drop(again);
    arena.verify().unwrap();
    assert_eq!(arena.free_pages(), 7, "the quarantined block stays allocated");
    assert_eq!(arena.frag_stats().zones[0].poisoned_pages, 7);
}

#[test]
fn protect_mode_hands_out_accessible_runs_cached_blocks_and_moved_blocks() {
    let arena = PageArena::builder()
        .pages(256)
        .movable_pages(128)
        .backing(Backing::Anonymous)
        .thread_cache(pinowner::ThreadCache::default())
        .poison(Poison::Protect)
        .build()
        .unwrap();
    for _ in 0..3 {
        let mut frames: Vec<_> = (0..64).map(|_| arena.alloc_movable(0).unwrap()).collect();
        for f in &mut frames {
            f.borrow_mut().unwrap().fill(9);
        }
        drop(frames.drain(..32)); // freed, PROT_NONE; the rest must move out
        let run = arena.reserve_contig(64, 64, pinowner::Reason::Contig).unwrap();
        // SAFETY: the run is ours alone; a fault here would be the bug.
        unsafe { run.as_ptr().as_ptr().write_bytes(1, run.len()) };
        assert!(frames.iter().all(|f| f.borrow().bytes().iter().all(|&x| x == 9)), "moved blocks readable");
        drop((run, frames));
        let mut cached = arena.alloc(0).unwrap();
        cached.bytes_mut().unwrap().fill(2);
    }
    arena.verify().unwrap();
}

#[test]
fn pattern_mode_names_the_stack_that_freed_the_block_when_tracking_has_it() {
    let tracking = Tracking { eager: true, ..Tracking::default() };
    let arena = PageArena::builder().pages(1).max_order(0).poison(Poison::Pattern).tracking(tracking).build().unwrap();
    let b = arena.alloc(0).unwrap();
    let stale = b.as_ptr().as_ptr();
    drop(b);
    // SAFETY: as above, the bug under test.
    unsafe { stale.write(0) };
    assert!(arena.alloc(0).is_err());
    let e = &arena.poison_errors()[0];
    let stack = e.freed_by.expect("eager tracking recorded the freeing put");
    assert!(!arena.resolve_stack(stack).is_empty());
}

#[test]
fn poisoning_leaves_reported_and_discarded_pages_alone() {
    let arena = PageArena::builder()
        .pages(1024)
        .max_order(9)
        .backing(Backing::Anonymous)
        .poison(Poison::Pattern)
        .build()
        .unwrap();
    let mut b = arena.alloc(9).unwrap();
    b.bytes_mut().unwrap().fill(1);
    drop(b); // poisoned
    arena.report_free(usize::MAX).unwrap(); // the pattern goes with the bytes
    let z = arena.alloc_zeroed(9).unwrap();
    assert!(z.bytes().iter().all(|&x| x == 0));
    z.discard(pinowner::discard::Discard::DontNeed).unwrap(); // zeroed: not poisoned
    assert!(!arena.page_state(0).unwrap().flags.contains(PageFlags::POISONED));
    let again = arena.alloc_zeroed(9).unwrap();
    assert!(again.bytes().iter().all(|&x| x == 0));
    assert!(arena.poison_errors().is_empty(), "no false alarm: {:?}", arena.poison_errors());
}

#[test]
fn protect_mode_needs_an_anonymous_backing() {
    let e = PageArena::builder().pages(4).poison(Poison::Protect).build().unwrap_err();
    assert!(matches!(e, BuildError::PoisonBacking { backing: pinowner::BackingKind::Heap }), "{e:?}");
    assert_eq!(e.to_string(), "poison protect mode needs an anonymous backing, not Heap");
}

/// The child's half of the test below: a protect-mode arena, a block used
/// and freed, then (`write`) a write through the stale pointer.
fn protect_child(mode: &str) {
    let arena = PageArena::builder().pages(16).backing(Backing::Anonymous).poison(Poison::Protect).build().unwrap();
    let mut b = arena.alloc(0).unwrap();
    b.bytes_mut().unwrap().fill(1);
    let stale = b.as_ptr().as_ptr();
    drop(b);
    if mode == "write" {
        // SAFETY: not sound: a write to a freed, PROT_NONE page, which must
        // kill this child process with SIGSEGV right here.
        unsafe { stale.write_volatile(2) };
    }
    // The arena is still usable: blocks handed out again are accessible.
    let mut again = arena.alloc(0).unwrap();
    again.bytes_mut().unwrap().fill(3);
    assert!(again.bytes().iter().all(|&x| x == 3));
}

#[test]
fn protect_mode_kills_a_write_through_a_stale_pointer_with_sigsegv() {
    const NAME: &str = "poison::protect_mode_kills_a_write_through_a_stale_pointer_with_sigsegv";
    if let Ok(mode) = std::env::var("PINOWNER_POISON_CHILD") {
        protect_child(&mode);
        return;
    }
    let run = |mode: &str| {
        Command::new(std::env::current_exe().unwrap())
            .args([NAME, "--exact", "--nocapture", "--test-threads=1"])
            .env("PINOWNER_POISON_CHILD", mode)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .unwrap()
    };
    let died = run("write");
    assert_eq!(died.signal(), Some(libc::SIGSEGV), "{died:?}");
    let lived = run("none");
    assert!(lived.success(), "without the write the child lives: {lived:?}");
}

/// A block quarantined by pattern poisoning stays allocated for good, with
/// nobody holding it: a reservation over it fails naming it as quarantined,
/// and does not name as its holder the caller whose allocation found the
/// corruption (that caller got another block).
#[test]
fn a_reservation_blocked_by_a_quarantined_block_says_so_and_names_no_holder() {
    let arena = PageArena::builder().pages(8).max_order(3).poison(Poison::Pattern).build().unwrap();
    let victim = arena.alloc(0).unwrap();
    let (pfn, stale) = (victim.pfn(), victim.as_ptr().as_ptr());
    drop(victim);
    // SAFETY: the arena's memory stays mapped; writing a freed page is the
    // bug under test.
    unsafe { stale.write_bytes(0x42, 1) };
    let got = arena.alloc(0).unwrap();
    assert_ne!(got.pfn(), pfn, "the corrupt block is quarantined, another handed out");
    assert_eq!(arena.poison_errors().len(), 1);
    drop(got);
    let e = arena.reserve_range(0, 8, pinowner::Reason::Contig).unwrap_err();
    let pinowner::ContigError::Busy(f) = e else { panic!("{e}") };
    let b = f.busy.iter().find(|b| b.head == pfn).expect("the quarantined block blocks the window");
    assert_eq!(b.why, pinowner::Unmovable::Quarantined, "{b:?}");
    assert_eq!(b.attributed, None, "nobody holds a quarantined block: {b:?}");
    assert!(f.to_string().contains("quarantined"), "{f}");
    arena.verify().unwrap();
}
