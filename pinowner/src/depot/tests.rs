//! Tests of the stack depot and the unwinders.
use super::*;

fn fake_stack(seed: usize, len: usize) -> Vec<usize> {
    (0..len).map(|i| 0x5555_0000_0000 + seed * 0x1_0000 + i * 0x40).collect()
}

#[test]
fn same_frames_intern_to_one_handle_and_count_hits() {
    let depot = StackDepot::default();
    let stack = fake_stack(1, 16);
    let a = depot.intern(&stack);
    let b = depot.intern(&stack);
    let c = depot.intern(&stack.clone());
    assert!(!a.is_failed());
    assert_eq!(a, b);
    assert_eq!(a, c);
    let stats = depot.stats();
    assert_eq!(stats.unique_stacks, 1);
    assert_eq!(stats.hits, 2);
    assert_eq!(stats.failures, 0);
    assert_eq!(stats.bytes, (16 * std::mem::size_of::<usize>() + PER_STACK_OVERHEAD) as u64);
    assert_eq!(depot.frames(a).unwrap().as_slice(), &stack[..]);
}

#[test]
fn distinct_stacks_get_distinct_handles() {
    let depot = StackDepot::default();
    let a = depot.intern(&fake_stack(1, 16));
    let b = depot.intern(&fake_stack(2, 16));
    // A prefix is a different stack.
    let c = depot.intern(&fake_stack(1, 15));
    let empty = depot.intern(&[]);
    let all = [a, b, c, empty];
    for (i, x) in all.iter().enumerate() {
        assert!(!x.is_failed());
        for y in &all[i + 1..] {
            assert_ne!(x, y);
        }
    }
    assert_eq!(depot.stats().unique_stacks, 4);
    assert_eq!(depot.stats().hits, 0);
    assert_eq!(depot.frames(empty).unwrap().len(), 0);
}

#[test]
fn a_hash_collision_keeps_both_stacks() {
    // Force two different stacks under one hash through the shard
    // directly: the chain must tell them apart.
    let mut shard = Shard::default();
    let (x, y) = (fake_stack(1, 4), fake_stack(2, 4));
    let lx = shard.push(7, &x).unwrap();
    let ly = shard.push(7, &y).unwrap();
    assert_ne!(lx, ly);
    assert_eq!(shard.find(7, &x), Some(lx));
    assert_eq!(shard.find(7, &y), Some(ly));
    assert_eq!(shard.find(7, &fake_stack(3, 4)), None);
}

#[test]
fn a_full_depot_hands_out_the_sentinel_counts_it_and_still_finds_stored_stacks() {
    let one = (16 * std::mem::size_of::<usize>() + PER_STACK_OVERHEAD) as u64;
    let depot = StackDepot::new((2 * one + one / 2) as usize);
    let first = depot.intern(&fake_stack(0, 16));
    let second = depot.intern(&fake_stack(1, 16));
    assert!(!first.is_failed() && !second.is_failed());
    for seed in 2..10 {
        assert_eq!(depot.intern(&fake_stack(seed, 16)), StackHandle::FAILED);
    }
    // A smaller stack that still fits is taken.
    let small = depot.intern(&[0x1234]);
    assert!(!small.is_failed());
    // Stored stacks are still found when full.
    assert_eq!(depot.intern(&fake_stack(0, 16)), first);
    let stats = depot.stats();
    assert_eq!(stats.failures, 8);
    assert_eq!(stats.unique_stacks, 3);
    assert_eq!(stats.hits, 1);
    assert!(stats.bytes <= depot.max_bytes(), "{stats:?}");
    assert_eq!(depot.frames(StackHandle::FAILED), None);
    assert!(depot.resolve(StackHandle::FAILED).is_empty());

    let zero = StackDepot::new(0);
    assert!(zero.intern(&[]).is_failed());
    assert_eq!(zero.stats(), DepotStats { unique_stacks: 0, bytes: 0, hits: 0, failures: 1 });
}

#[test]
fn handles_stay_valid_after_many_inserts() {
    // Fewer under Miri, still past the first few growths of every
    // shard's tables.
    const N: usize = if cfg!(miri) { 400 } else { 5000 };
    let depot = StackDepot::new(64 << 20);
    let stacks: Vec<Vec<usize>> = (0..N).map(|s| fake_stack(s, 1 + s % 40)).collect();
    let handles: Vec<StackHandle> = stacks.iter().map(|s| depot.intern(s)).collect();
    for (stack, &h) in stacks.iter().zip(&handles) {
        assert!(!h.is_failed());
        assert_eq!(depot.frames(h).unwrap().as_slice(), &stack[..]);
        assert_eq!(depot.intern(stack), h);
    }
    let mut sorted = handles.clone();
    sorted.sort();
    sorted.dedup();
    assert_eq!(sorted.len(), N);
    // Handles are small: about one per stored stack.
    assert!(sorted.last().unwrap().get() < N as u32 + 64 * SHARDS as u32, "{:?}", sorted.last());
    assert_eq!(depot.stats().unique_stacks, N as u64);
    assert_eq!(depot.stats().hits, N as u64);
}

#[test]
fn frames_longer_than_max_depth_are_truncated() {
    let depot = StackDepot::default();
    let long = fake_stack(9, MAX_DEPTH + 10);
    let h = depot.intern(&long);
    assert_eq!(depot.frames(h).unwrap().as_slice(), &long[..MAX_DEPTH]);
    assert_eq!(depot.intern(&long[..MAX_DEPTH]), h);
}

#[inline(never)]
fn recurse_and_capture(levels: usize, skip: usize, depth: usize) -> StackTrace {
    if levels == 0 {
        capture(skip, depth)
    } else {
        std::hint::black_box(recurse_and_capture(levels - 1, skip, depth))
    }
}

#[test]
fn capture_keeps_at_most_depth_frames() {
    for depth in [0, 1, 3, 16, MAX_DEPTH, MAX_DEPTH + 100] {
        let trace = recurse_and_capture(80, 0, depth);
        assert_eq!(trace.len(), depth.min(MAX_DEPTH), "depth {depth}");
    }
    let shallow = capture(0, 16);
    assert!(!shallow.is_empty() && shallow.len() <= 16);
}

#[test]
#[cfg_attr(miri, ignore = "Miri gives one function several addresses: captures of one site differ")]
fn the_same_call_site_captured_twice_interns_to_one_handle() {
    let depot = StackDepot::default();
    let mut handles = Vec::new();
    for _ in 0..2 {
        let trace = capture(0, DEFAULT_DEPTH);
        assert!(!trace.is_empty());
        handles.push(depot.intern(&trace));
    }
    assert_eq!(handles[0], handles[1]);
    // A different call site is a different stack.
    let other = depot.intern(&capture(0, DEFAULT_DEPTH));
    assert_ne!(other, handles[0]);
    assert_eq!(depot.stats().unique_stacks, 2);
    assert_eq!(depot.stats().hits, 1);
}

#[test]
fn skip_drops_the_innermost_frames() {
    let full = recurse_and_capture(4, 0, 8);
    let skipped = recurse_and_capture(4, 1, 8);
    // full: [the `capture` call in the innermost level, 4 recursive call
    // sites, this test, ...]; skipping one drops exactly the first.
    assert_ne!(full[0], skipped[0]);
    assert_eq!(&full[1..5], &skipped[..4]);
}

#[test]
#[cfg_attr(miri, ignore = "Miri's frames cannot be resolved from a stored address")]
fn resolve_names_the_capturing_test_function_and_caches_it() {
    let depot = StackDepot::default();
    let h = depot.intern(&capture(0, DEFAULT_DEPTH));
    let frames = depot.resolve(h);
    let first = frames.first().expect("at least one frame");
    let name = first.function.as_deref().unwrap_or("");
    // The first frame is the caller of `capture`: this test, not the
    // unwinder or `capture` itself.
    assert!(name.contains("resolve_names_the_capturing_test_function_and_caches_it"), "{frames:#?}");
    assert!(first.file.as_deref().is_some_and(|f| f.ends_with("depot/tests.rs")), "{first:?}");
    assert!(first.line.is_some());
    let cached = depot.symbols.lock().len();
    assert!(cached > 0);
    assert_eq!(depot.resolve(h), frames);
    assert_eq!(depot.symbols.lock().len(), cached);
}

/// Three nested non-inlined calls; the innermost captures with `walk`.
#[inline(never)]
fn outer_fn(walk: fn(usize, usize) -> StackTrace) -> StackTrace {
    core::hint::black_box(middle_fn(walk))
}

#[inline(never)]
fn middle_fn(walk: fn(usize, usize) -> StackTrace) -> StackTrace {
    core::hint::black_box(inner_fn(walk))
}

#[inline(never)]
fn inner_fn(walk: fn(usize, usize) -> StackTrace) -> StackTrace {
    core::hint::black_box(walk(0, 8))
}

fn names(depot: &StackDepot, trace: &StackTrace) -> Vec<String> {
    depot.resolve(depot.intern(trace)).into_iter().filter_map(|f| f.function).collect()
}

#[test]
fn a_frame_pointer_walk_stays_in_bounds_in_any_build() {
    // In a build without frame pointers the chain is garbage: the walk
    // must still end without faulting, within its depth, from shallow
    // and deep stacks alike.
    fn recurse(n: usize) -> usize {
        if n == 0 {
            (0..100).map(|d| capture_frame_pointers(0, d % (MAX_DEPTH + 8)).len()).max().unwrap()
        } else {
            core::hint::black_box(recurse(n - 1))
        }
    }
    for n in [0, 5, 50] {
        assert!(recurse(n) <= MAX_DEPTH);
    }
    assert!(outer_fn(capture_frame_pointers).len() <= 8);
    let on_thread = std::thread::spawn(|| outer_fn(capture_frame_pointers).len()).join().unwrap();
    assert!(on_thread <= 8);
}

/// Run by `.ci/frame-pointers` in a build with
/// `-C force-frame-pointers=yes` (it sets
/// `PINOWNER_EXPECT_FRAME_POINTERS=1`): the walk names the same callers,
/// in the same order, as the DWARF unwinder.
#[test]
fn with_frame_pointers_the_walk_names_the_callers_like_the_dwarf_unwinder() {
    if std::env::var_os("PINOWNER_EXPECT_FRAME_POINTERS").is_none() || !fp::SUPPORTED {
        return;
    }
    let depot = StackDepot::default();
    let fp = names(&depot, &outer_fn(capture_frame_pointers));
    let dwarf = names(&depot, &outer_fn(capture));
    let ours = |v: &[String]| -> Vec<String> {
        v.iter()
            .filter(|n| n.contains("inner_fn") || n.contains("middle_fn") || n.contains("outer_fn"))
            .cloned()
            .collect()
    };
    assert_eq!(ours(&fp).len(), 3, "frame pointers: {fp:#?}");
    assert_eq!(ours(&fp), ours(&dwarf), "frame pointers {fp:#?} vs DWARF {dwarf:#?}");
    assert!(fp[0].contains("inner_fn"), "the first frame is the caller of the walk: {fp:#?}");
}

/// Calls `walk` with the frame-pointer register set to `fp`, as code
/// built without frame pointers may leave it (x86-64 only: the register
/// cannot be an operand, so the asm saves it, sets it and restores it).
#[cfg(target_arch = "x86_64")]
fn with_frame_pointer(fp: usize, walk: extern "C" fn(*mut StackTrace)) -> StackTrace {
    let mut out = StackTrace::new();
    // `rbp` is saved and restored around the call, and the stack pointer
    // is back where it started (two 8-byte adjustments, so the call sees
    // the 16-byte alignment the asm block starts with); `walk` is an
    // `extern "C"` function taking one pointer (in `rdi`) to a live
    // `StackTrace` it may write.
    // SAFETY: as just said; `clobber_abi("C")` declares every register the call may change.
    unsafe {
        core::arch::asm!(
            "push rbp",
            "sub rsp, 8",
            "mov rbp, {fp}",
            "call {walk}",
            "add rsp, 8",
            "pop rbp",
            fp = in(reg) fp,
            walk = in(reg) walk,
            in("rdi") &mut out as *mut StackTrace,
            clobber_abi("C"),
        );
    }
    out
}

#[cfg(target_arch = "x86_64")]
extern "C" fn walk_frame_pointers(out: *mut StackTrace) {
    let trace = core::hint::black_box(capture_frame_pointers(0, MAX_DEPTH));
    // SAFETY: `with_frame_pointer` passes a pointer to its live local.
    unsafe { *out = trace };
}

/// An address no thread may read: the page just below the calling
/// thread's stack (its guard page, or the gap below the main thread's
/// stack reservation).
#[cfg(target_arch = "x86_64")]
fn below_this_threads_stack() -> usize {
    let (lo, _) = fp::thread_stack_for_tests().expect("stack bounds on Linux");
    lo - 4096
}

#[cfg(target_arch = "x86_64")]
#[test]
#[cfg_attr(miri, ignore = "inline assembly")]
fn a_garbage_frame_pointer_register_ends_the_walk_without_faulting() {
    let heap = Box::new([0usize; 4]);
    let local = 0usize;
    let here = core::hint::black_box(&local) as *const usize as usize;
    for fp in [
        0,
        8,
        usize::MAX & !7,
        usize::MAX - 15,
        here + 1,
        below_this_threads_stack(),
        &*heap as *const [usize; 4] as usize,
        walk_frame_pointers as extern "C" fn(*mut StackTrace) as usize & !7,
    ] {
        let trace = with_frame_pointer(fp, walk_frame_pointers);
        assert!(trace.len() <= MAX_DEPTH, "{fp:#x}: {trace:?}");
    }
}

#[cfg(target_arch = "x86_64")]
#[test]
#[cfg_attr(miri, ignore = "inline assembly and a stack of its own")]
fn on_a_stacker_segment_a_frame_pointer_into_the_gap_below_the_threads_stack_does_not_fault() {
    // The crash: on a segment `stacker::grow` mapped (below this
    // thread's stack, as the kernel places new mappings), the frame
    // pointer holds an address between the segment and the thread's
    // stack: unmapped.
    let gap = below_this_threads_stack();
    let trace = stacker::grow(1 << 20, || with_frame_pointer(gap, walk_frame_pointers));
    assert!(trace.is_empty(), "off the thread's own stack the walk refuses: {trace:?}");
    // And with whatever the register holds there.
    let trace = stacker::grow(1 << 20, || outer_fn(capture_frame_pointers));
    assert!(trace.is_empty(), "{trace:?}");
}

#[test]
#[cfg_attr(miri, ignore = "backtraces and a stack of its own")]
fn on_a_stacker_segment_the_frame_pointer_unwinder_falls_back_to_dwarf() {
    fn unwind(skip: usize, depth: usize) -> StackTrace {
        Unwinder::FramePointers.capture(skip, depth)
    }
    let on_segment = stacker::grow(1 << 20, || outer_fn(unwind));
    assert!(!on_segment.is_empty() && on_segment.len() <= 8, "{on_segment:?}");
    let depot = StackDepot::default();
    let names = names(&depot, &on_segment);
    let ours: Vec<&str> =
        ["inner_fn", "middle_fn", "outer_fn"].into_iter().filter(|f| names.iter().any(|n| n.ends_with(f))).collect();
    assert_eq!(ours, ["inner_fn", "middle_fn", "outer_fn"], "the callers, from the segment: {names:#?}");
    let at = |f: &str| names.iter().position(|n| n.ends_with(f)).unwrap();
    assert!(at("inner_fn") < at("middle_fn") && at("middle_fn") < at("outer_fn"), "{names:#?}");
}

#[test]
#[cfg_attr(miri, ignore = "backtraces and a stack of its own")]
fn the_tracker_with_the_frame_pointer_unwinder_records_stacks_on_a_stacker_segment() {
    #[inline(never)]
    fn take_a_ref(arena: &crate::PageArena, pfn: usize) {
        drop(core::hint::black_box(arena.get(pfn).unwrap()));
    }
    let arena = crate::PageArena::builder()
        .pages(16)
        .tracking(crate::Tracking { unwinder: Unwinder::FramePointers, ..crate::Tracking::default() })
        .build()
        .unwrap();
    let block = arena.alloc(0).unwrap();
    assert_eq!(arena.arm(block.pfn()..block.pfn() + 1, crate::Reason::Contig), 1);
    stacker::grow(1 << 20, || take_a_ref(&arena, block.pfn()));
    let events = arena.tracked_events();
    let moves: Vec<_> = events.iter().filter(|e| e.kind.is_acquire() || e.kind.is_release()).collect();
    assert_eq!(moves.len(), 2);
    for e in moves {
        let stack = e.stack.expect("a stack");
        let frames = arena.tracker.get().unwrap().depot.resolve(stack);
        assert!(
            frames.iter().any(|f| f.function.as_deref().is_some_and(|n| n.contains("take_a_ref"))),
            "{:?}: {frames:#?}",
            e.kind
        );
    }
}

#[test]
fn failed_handle_is_distinct_and_displays() {
    assert!(StackHandle::FAILED.is_failed());
    assert_eq!(StackHandle::FAILED.get(), u32::MAX);
    let depot = StackDepot::default();
    let h = depot.intern(&[1, 2, 3]);
    assert!(!h.is_failed());
    assert_eq!(h.to_string(), format!("stack#{}", h.get()));
    assert_eq!(StackHandle::FAILED.to_string(), "stack#failed");
    assert_eq!(std::mem::size_of::<Option<StackHandle>>(), 4);
}
