//! Instruction counts for the rows of `benches/hot_path.rs`, for callgrind:
//! deterministic, where wall time is not.
//!
//! Each case is an `#[inline(never)]` function whose body is the body of one
//! `hot_path` row, on the same 64-page arena (one order-0 block, a
//! `PageRef` or `PagePin` on it). `hot_path_insn --callgrind <case> <iters>` calls the
//! case's function once, then `iters` times, and prints nothing. Two runs
//! with different `iters` differ only by the extra calls, so
//! `(Ir(2N) - Ir(N)) / N` is the exact per-call count, loop and call
//! included; the `loop` case (an empty function) gives that overhead.
//!
//! ```text
//! B=$(cargo bench --bench hot_path_insn --no-run 2>&1 | grep -o 'target/release/deps/hot_path_insn-[0-9a-f]*')
//! for n in 100000 200000; do
//!     valgrind --tool=callgrind --callgrind-out-file=cg.$case.$n $B --callgrind $case $n
//! done
//! # per call = (total Ir at 200000 - total Ir at 100000) / 100000
//! ```
//!
//! `hot_path_insn --pairs <rounds>` times the clone+drop cases and their
//! baselines in interleaved rounds and prints each handle's excess over its
//! floor (see [`pairs`]).
//!
//! Cases: `loop`, `bare` (the `AtomicU32` add+sub baseline), `ref_clone`
//! (`PageRef` clone+drop), `pin_clone` (`PagePin` clone+drop), `get`
//! (`arena.get(pfn)`+drop), `pin` (`arena.pin(pfn)`+drop), the reference
//! cases on a pinned block (`ref_clone_pinned`, `get_pinned`: the pinner
//! keeps the attribution, which costs a slow path), the counts-only
//! policy's (`counted_ref_clone`, `counted_pin_clone`, `counted_get`, on a
//! `PageArena<CountsOnly>`) with their baselines (`bare_handle`: the bare
//! pair behind a 24-byte handle; `arc_clone`: `Arc<()>`; `cas_handle`: the
//! exact policy's load+CAS floor behind the same handle), and floors on a
//! bare `AtomicU64`: `floor_cas` (add, then load and compare-and-swap: the
//! release the design requires), `floor_cas_store` (the same with the
//! owner-slot store), `floor_pfn` (load and compare-and-swap twice: a
//! by-number get and its release), `floor_load` (the bare pair with one
//! unused load between), and moving: `relocate_4k` (`MovableBlock::relocate`
//! of a 4 KiB block through the zone lock), `relocate_4k_cache` (with
//! thread caches), `copy_4k` (the 4 KiB copy a move contains, between two
//! pages of the same arena) and `floor_move` (that copy with the three
//! compare-and-swaps a move needs, on bare atomics, and a `Vec` free list's
//! pop and push for the destination and the old block). The functions
//! are also the place to read the generated code:
//! `objdump -d --no-show-raw-insn $B | grep -A60 '<hot_path_insn::ref_clone>:'`.

use std::hint::black_box;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};

use pinowner::{CountsOnly, PageArena, PagePin, PageRef, Pfn};

type Counted = PageArena<CountsOnly>;

/// Keeps a handle in memory for the length of the call and drops it: its
/// address escapes to `black_box`, so neither its clone nor its drop can be
/// optimized away, and it is not copied (a by-value `black_box` copies the
/// handle, whose 4-byte fields a copy reloads 8 bytes at a time: a
/// store-forwarding stall that measured the copy, not the counts).
#[inline(always)]
fn hold<T>(handle: T) {
    black_box(&handle);
}

#[inline(never)]
fn empty() {
    black_box(());
}

#[inline(never)]
fn bare(c: &AtomicU32) {
    c.fetch_add(1, Ordering::Relaxed);
    c.fetch_sub(1, Ordering::Release);
}

#[inline(never)]
fn ref_clone(r: &PageRef<&PageArena>) {
    hold(black_box(r).clone());
}

#[inline(never)]
fn pin_clone(p: &PagePin<&PageArena>) {
    hold(black_box(p).clone());
}

#[inline(never)]
fn get(arena: &PageArena, pfn: Pfn) {
    hold(arena.get(black_box(pfn)).unwrap());
}

#[inline(never)]
fn pin(arena: &PageArena, pfn: Pfn) {
    hold(arena.pin(black_box(pfn)).unwrap());
}

// The counts-only policy: the same operations on a `PageArena<CountsOnly>`.
//
// Its baselines: the bare pair as a handle the size of a `PageRef` (24
// bytes: a clone is one add, a drop one subtract, and the benchmark's
// `black_box` makes the clone live in memory as a `PageRef`'s does), and
// `Arc<()>`'s clone and drop (an add, and a subtract with its last-count
// test).

/// A count handle with no policy, 24 bytes like a `PageRef`: a clone is
/// one add; a drop one subtract (`CAS == false`: the bare pair behind a
/// handle), or a load and a compare-and-swap (`CAS == true`: the exact
/// policy's floor, the release it requires with nothing else).
struct BareHandle<'a, const CAS: bool> {
    count: &'a AtomicU64,
    _pfn: u32,
    _ticket: u32,
    _arena: &'a (),
}

impl<const CAS: bool> Clone for BareHandle<'_, CAS> {
    #[inline(always)]
    fn clone(&self) -> Self {
        self.count.fetch_add(1, Ordering::Relaxed);
        BareHandle { count: self.count, _pfn: self._pfn, _ticket: self._ticket, _arena: self._arena }
    }
}

impl<const CAS: bool> Drop for BareHandle<'_, CAS> {
    #[inline(always)]
    fn drop(&mut self) {
        if !CAS {
            self.count.fetch_sub(1, Ordering::Release);
            return;
        }
        let mut old = self.count.load(Ordering::Relaxed);
        while let Err(cur) = self.count.compare_exchange_weak(old, old - 1, Ordering::Release, Ordering::Relaxed) {
            old = cur;
        }
    }
}

#[inline(never)]
fn bare_handle<const CAS: bool>(h: &BareHandle<'_, CAS>) {
    hold(black_box(h).clone());
}

#[inline(never)]
fn arc_clone(a: &std::sync::Arc<()>) {
    hold(black_box(a).clone());
}

#[inline(never)]
fn counted_ref_clone(r: &PageRef<&Counted>) {
    hold(black_box(r).clone());
}

#[inline(never)]
fn counted_pin_clone(p: &PagePin<&Counted>) {
    hold(black_box(p).clone());
}

#[inline(never)]
fn counted_get(arena: &Counted, pfn: Pfn) {
    hold(arena.get(black_box(pfn)).unwrap());
}

// Floors: what the operations the design requires cost by themselves, on
// a bare `AtomicU64` (no arena, no handle, no attribution logic).

/// The release as a compare-and-swap: add, then load and compare-and-swap.
#[inline(never)]
fn floor_cas(w: &AtomicU64) {
    w.fetch_add(1, Ordering::Relaxed);
    let old = w.load(Ordering::Relaxed);
    let _ = w.compare_exchange(old, old - 1, Ordering::Release, Ordering::Relaxed);
}

/// `floor_cas` with the owner-slot store after the add.
#[inline(never)]
fn floor_cas_store(w: &[AtomicU64; 2]) {
    let old = w[0].fetch_add(1, Ordering::Relaxed);
    w[1].store(old << 48 | 0x1000, Ordering::Relaxed);
    let old = w[0].load(Ordering::Relaxed);
    let _ = w[0].compare_exchange(old, old - 1, Ordering::Release, Ordering::Relaxed);
}

/// A by-number get and its release: load and compare-and-swap, twice.
#[inline(never)]
fn floor_pfn(w: &AtomicU64) {
    let old = w.load(Ordering::Relaxed);
    let _ = w.compare_exchange(old, old + 1, Ordering::Acquire, Ordering::Relaxed);
    let old = w.load(Ordering::Relaxed);
    let _ = w.compare_exchange(old, old - 1, Ordering::Release, Ordering::Relaxed);
}

/// The bare pair with one load, whose value is not used, between the two.
#[inline(never)]
fn floor_load(w: &AtomicU64) {
    w.fetch_add(1, Ordering::Relaxed);
    if w.load(Ordering::Relaxed) == 0 {
        black_box(());
    }
    w.fetch_sub(1, Ordering::Release);
}

/// Moves a movable 4 KiB block to another page (issue 10's `move_4k` row).
#[inline(never)]
fn relocate(m: &pinowner::MovableBlock<&PageArena>) {
    black_box(m.relocate().unwrap());
}

/// The copy a 4 KiB move contains.
#[inline(never)]
fn copy_4k(dst: &mut [u8], src: &[u8]) {
    dst.copy_from_slice(black_box(src));
}

/// The floor of a 4 KiB move: the copy, the three compare-and-swaps a
/// move cannot do without (freeze the handle's entry, freeze the block
/// against acquisitions by number, drop the old block's counts in one
/// swap) on bare atomics, and the cheapest free list there is (a `Vec`
/// popped for the destination and pushed with the old block); the
/// destination's claim and the entry's switch are plain stores, as they
/// are through a thread cache.
#[inline(never)]
fn floor_move(w: &[AtomicU64; 2], free: &mut Vec<u32>, dst: &mut [u8], src: &[u8]) {
    let to = free.pop().unwrap_or(0);
    let e = w[0].load(Ordering::Relaxed);
    let _ = w[0].compare_exchange(e, e | 1 << 62, Ordering::Acquire, Ordering::Relaxed);
    let b = w[1].load(Ordering::Relaxed);
    let _ = w[1].compare_exchange(b, b | 1 << 40, Ordering::Acquire, Ordering::Relaxed);
    dst.copy_from_slice(black_box(src));
    w[0].store(e | u64::from(to), Ordering::Release);
    let _ = w[1].compare_exchange(b | 1 << 40, b, Ordering::Release, Ordering::Relaxed);
    free.push(black_box(to));
}

/// Calls `f` once, then `iters` times.
fn repeat(iters: u64, f: impl Fn()) {
    f();
    for _ in 0..iters {
        f();
    }
}

/// `--time <case> <batches>`: the least time per call over `batches`
/// batches of 100,000 calls. On a shared machine the least batch is the one
/// nothing else interrupted, which makes two builds comparable run to run.
fn time(batches: u32, f: impl Fn()) {
    let best = (0..batches).map(|_| batch(&f)).fold(f64::INFINITY, f64::min);
    println!("{best:.2} ns");
}

/// One batch of 100,000 calls of `f`: nanoseconds per call.
fn batch(f: impl Fn()) -> f64 {
    let t = std::time::Instant::now();
    for _ in 0..100_000 {
        f();
    }
    t.elapsed().as_secs_f64() * 1e9 / 100_000.0
}

/// `--pairs <rounds>`: the clone+drop cases and their baselines in
/// interleaved rounds (each round runs one batch of every case, in turn),
/// so a case and its baseline always run seconds apart under the same
/// machine load. Prints each case's least batch, then each handle's excess
/// over its floor: the difference of the least batches, and the median
/// and range of the per-round differences (the round's case batch minus the
/// same round's floor batch).
fn pairs(rounds: usize, cases: &[(&str, &dyn Fn() -> f64)], against: &[(&str, &str)]) {
    let mut times = vec![Vec::with_capacity(rounds); cases.len()];
    for _ in 0..rounds {
        for (t, (_, f)) in times.iter_mut().zip(cases) {
            t.push(f());
        }
    }
    let least = |t: &[f64]| t.iter().copied().fold(f64::INFINITY, f64::min);
    let at = |name: &str| cases.iter().position(|(n, _)| *n == name).expect("a case");
    for ((name, _), t) in cases.iter().zip(&times) {
        println!("least {name}: {:.2} ns", least(t));
    }
    for (case, floor) in against {
        let (c, f) = (&times[at(case)], &times[at(floor)]);
        let mut d: Vec<f64> = c.iter().zip(f).map(|(c, f)| c - f).collect();
        d.sort_by(f64::total_cmp);
        println!(
            "{case} - {floor}: least {:+.2} ns, per round median {:+.2} ns (range {:+.2} .. {:+.2}), ratio of least {:.3}",
            least(c) - least(f),
            d[d.len() / 2],
            d[0],
            d[d.len() - 1],
            least(c) / least(f),
        );
    }
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    // Test runners listing or running bench targets do not pass
    // `--callgrind`: nothing to do.
    let Some(i) = args.iter().position(|a| a == "--callgrind" || a == "--time" || a == "--pairs") else { return };
    let case = args.get(i + 1).expect("--callgrind|--time <case> <n> | --pairs <rounds>");
    let timed = args[i] == "--time";
    let paired = args[i] == "--pairs";
    let n: u64 =
        if paired { 0 } else { args.get(i + 2).and_then(|n| n.parse().ok()).expect("--callgrind|--time <case> <n>") };
    // A macro, not a closure taking `&dyn Fn`: each case's loop calls its
    // function directly, as `hot_path`'s rows do.
    macro_rules! run {
        ($f:expr) => {
            if timed {
                time(n as u32, $f)
            } else {
                repeat(n, $f)
            }
        };
    }
    let arena = PageArena::builder().pages(64).build().unwrap();
    // References on a block with no pins (the common case), and pins on
    // another block, where references do not take over the attribution.
    let block = arena.alloc(0).unwrap();
    let pfn = block.pfn();
    let r = block.page_ref(0);
    let pinned = arena.alloc(0).unwrap();
    let ppfn = pinned.pfn();
    let p = pinned.pin(0).unwrap();
    let rp = pinned.page_ref(0);
    let counter = AtomicU32::new(1);
    let (unit, bare_word, cas_word) = ((), AtomicU64::new(1), AtomicU64::new(1));
    let bare_h = BareHandle::<false> { count: &bare_word, _pfn: 7, _ticket: 0, _arena: &unit };
    let cas_h = BareHandle::<true> { count: &cas_word, _pfn: 7, _ticket: 0, _arena: &unit };
    let arc = std::sync::Arc::new(());
    let counted: Counted = PageArena::builder().pages(64).attribution().build().unwrap();
    let cblock = counted.alloc(0).unwrap();
    let cpfn = cblock.pfn();
    let cr = cblock.page_ref(0);
    let cp = cblock.pin(0).unwrap();
    // Moving: a movable zone, anonymous memory, with and without caches.
    let movable = |cache: bool| {
        let b = PageArena::builder().pages(256).movable_pages(128).backing(pinowner::Backing::Anonymous);
        let b = if cache { b.thread_cache(pinowner::ThreadCache::default()) } else { b.without_thread_cache() };
        b.build().unwrap()
    };
    let (moving, moving_cached) = (movable(false), movable(true));
    let (mut src, mut dst) = (moving.alloc(0).unwrap(), moving.alloc(0).unwrap());
    src.bytes_mut().unwrap().fill(1);
    dst.bytes_mut().unwrap().fill(0);
    let mut mv = moving.alloc_movable(0).unwrap();
    mv.borrow_mut().unwrap().fill(2);
    let mut mvc = moving_cached.alloc_movable(0).unwrap();
    mvc.borrow_mut().unwrap().fill(2);
    let word = [AtomicU64::new(1), AtomicU64::new(0)];
    if paired {
        let rounds = case.parse().expect("--pairs <rounds>");
        let cases: [(&str, &dyn Fn() -> f64); 10] = [
            ("bare", &|| batch(|| bare(black_box(&counter)))),
            ("bare_handle", &|| batch(|| bare_handle(black_box(&bare_h)))),
            ("arc_clone", &|| batch(|| arc_clone(black_box(&arc)))),
            ("counted_ref_clone", &|| batch(|| counted_ref_clone(black_box(&cr)))),
            ("counted_pin_clone", &|| batch(|| counted_pin_clone(black_box(&cp)))),
            ("cas_handle", &|| batch(|| bare_handle(black_box(&cas_h)))),
            ("floor_cas", &|| batch(|| floor_cas(black_box(&word[0])))),
            ("floor_cas_store", &|| batch(|| floor_cas_store(black_box(&word)))),
            ("ref_clone", &|| batch(|| ref_clone(black_box(&r)))),
            ("pin_clone", &|| batch(|| pin_clone(black_box(&p)))),
        ];
        let against = [
            ("ref_clone", "cas_handle"),
            ("pin_clone", "cas_handle"),
            ("floor_cas_store", "floor_cas"),
            ("ref_clone", "bare"),
            ("counted_ref_clone", "bare_handle"),
            ("counted_pin_clone", "bare_handle"),
        ];
        pairs(rounds, &cases, &against);
    } else {
        match case.as_str() {
            "loop" => run!(empty),
            "bare" => run!(|| bare(black_box(&counter))),
            "ref_clone" => run!(|| ref_clone(black_box(&r))),
            "pin_clone" => run!(|| pin_clone(black_box(&p))),
            "get" => run!(|| get(black_box(&arena), black_box(pfn))),
            "pin" => run!(|| pin(black_box(&arena), black_box(ppfn))),
            "ref_clone_pinned" => run!(|| ref_clone(black_box(&rp))),
            "bare_handle" => run!(|| bare_handle(black_box(&bare_h))),
            "arc_clone" => run!(|| arc_clone(black_box(&arc))),
            "cas_handle" => run!(|| bare_handle(black_box(&cas_h))),
            "counted_ref_clone" => run!(|| counted_ref_clone(black_box(&cr))),
            "counted_pin_clone" => run!(|| counted_pin_clone(black_box(&cp))),
            "counted_get" => run!(|| counted_get(black_box(&counted), black_box(cpfn))),
            "get_pinned" => run!(|| get(black_box(&arena), black_box(ppfn))),
            "floor_cas" => run!(|| floor_cas(black_box(&word[0]))),
            "floor_cas_store" => run!(|| floor_cas_store(black_box(&word))),
            "floor_pfn" => run!(|| floor_pfn(black_box(&word[0]))),
            "floor_load" => run!(|| floor_load(black_box(&word[0]))),
            "relocate_4k" => run!(|| relocate(black_box(&mv))),
            "relocate_4k_cache" => run!(|| relocate(black_box(&mvc))),
            "copy_4k" | "floor_move" => {
                // Two pages of the moving arena, borrowed once: the bare copy.
                let s = src.bytes();
                let d = std::cell::RefCell::new(dst.bytes_mut().unwrap());
                let free = std::cell::RefCell::new((0..64u32).collect::<Vec<_>>());
                if case == "copy_4k" {
                    run!(|| copy_4k(&mut d.borrow_mut(), s))
                } else {
                    run!(|| floor_move(black_box(&word), &mut free.borrow_mut(), &mut d.borrow_mut(), s))
                }
            }
            other => panic!("unknown case {other:?}"),
        }
    }
    // Every count was given back: the blocks, `r`, `p` and `rp`.
    let state = arena.page_state(pfn).unwrap();
    assert_eq!((state.refcount, state.pincount), (2, 0), "{state:?}");
    let state = arena.page_state(ppfn).unwrap();
    assert_eq!((state.refcount, state.pincount), (2, 1), "{state:?}");
}
