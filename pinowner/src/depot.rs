//! The stack depot: unresolved backtraces, interned.
//!
//! The userspace counterpart of the kernel's `lib/stackdepot.c`. The tracker
//! records a backtrace with every event on an armed page; most of those
//! backtraces repeat (the same few code paths take and drop the same pages),
//! so storing each one per event would waste memory on copies. The depot
//! stores each distinct stack once and hands out a 4-byte [`StackHandle`]
//! for it.
//!
//! - [`capture`] walks the stack with the `backtrace` crate, keeping only
//!   instruction pointers (no symbols), into a fixed-capacity [`StackTrace`]
//!   (no heap allocation), stopping after `depth` frames. On Linux and
//!   Android it walks without the crate's process-wide lock (see
//!   "Capture never waits for resolution" below).
//! - [`StackDepot::intern`] deduplicates by a 64-bit hash of the frames (and
//!   then by comparing them, so a hash collision never merges two stacks)
//!   and returns a small non-zero handle. Storage is append-only: a handle
//!   stays valid for the depot's life.
//! - The depot has a byte bound set at construction. When an insert would
//!   pass it, or when an allocation fails, the depot returns
//!   [`StackHandle::FAILED`] and counts a failure; it never panics and never
//!   blocks for longer than one shard lock.
//! - [`StackDepot::resolve`] turns a handle into function names, files and
//!   lines. It is meant for report rendering only; each instruction pointer is
//!   resolved once and cached by the depot.
//!
//! # Instruction pointers, and Miri
//!
//! A [`StackTrace`] holds instruction pointers as plain `usize` addresses
//! (`frame.ip() as usize`: a cast that exposes the pointer, allowed under
//! any provenance model). The depot never casts one back to a pointer to
//! read through: it hashes them, compares them, stores them, and hands them
//! to the symbolizer, which looks the address up in the debug info. An
//! address used as a number needs no provenance, so Miri's strict
//! provenance has nothing to object to in capture, interning or reports.
//!
//! The exception is symbolizing under Miri itself: there `backtrace` gets
//! its frames from Miri, as pointers into the function's allocation that
//! Miri's resolver dereferences. An integer cannot get that provenance back
//! (a cast-back address is reported as a dangling pointer with no
//! provenance), and keeping `*const c_void` in traces instead would make
//! [`StackTrace`] neither `Send` nor `Sync` and change its `&[usize]` view
//! for the sake of a checker. So under `cfg(miri)`, capture runs as usual
//! but [`StackDepot::resolve`] does not symbolize: each frame carries only
//! its address. The frame-pointer walk does not run under Miri (inline
//! assembly); [`Unwinder::FramePointers`] uses [`capture`] there.
//!
//! # Capture never waits for resolution
//!
//! `backtrace::trace` and `backtrace::resolve` share one process-wide lock,
//! and the first resolution in a process holds it while it loads debug
//! info (65–88 ms on the project's machines): every thread capturing a
//! stack meanwhile (an armed page's events) stalled for as long. The lock
//! guards what is not thread-safe: Windows' dbghelp (walks and symbols
//! alike) and the crate's own symbol cache (resolution only). On Linux and
//! Android the walk is `_Unwind_Backtrace` (libgcc's, or LLVM's libunwind),
//! which is thread-safe — every thread's panics and C++ exceptions unwind
//! concurrently through it — and touches no state of the crate, so
//! [`capture`] walks with `backtrace::trace_unsynchronized` there and never
//! meets a resolution in progress. Elsewhere, and under Miri, it keeps the
//! locked `backtrace::trace`. Resolution stays locked everywhere (the
//! symbol cache needs it), and happens only when a report is rendered.
//!
//! # Concurrency
//!
//! The index is split into shards by hash, each behind its own lock (from
//! `crate::sync`, so the loom model in `tests/loom_depot.rs` checks it). The
//! lookup and the insert of one stack happen under one shard lock, so
//! concurrent inserts of the same stack yield one handle. The byte budget is
//! one atomic counter shared by all shards, reserved with a compare-exchange
//! loop, so concurrent inserts never take the depot past its bound.

use std::collections::HashMap;
use std::fmt;
use std::hash::{BuildHasherDefault, Hasher};
use std::num::NonZeroU32;
use std::ops::Deref;

use crate::sync::{AtomicU64, ConstAtomicBool, Mutex, Ordering};

mod fp;

/// How [`capture`]-style walks find the frames of a stack.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Unwinder {
    /// The DWARF unwinder ([`backtrace::trace`], libgcc's on Linux): right
    /// in any build, about 0.3 µs per frame walked on the project's
    /// machines. The default.
    #[default]
    Dwarf,
    /// The frame-pointer chain ([`capture_frame_pointers`]): a few
    /// nanoseconds per frame, but right only in code built with frame
    /// pointers (`-C force-frame-pointers=yes`, and a standard library built
    /// with them for frames inside it). Elsewhere stacks come out short or
    /// wrong — never unsafe.
    ///
    /// Where the walk refuses, this unwinder falls back to
    /// [`Unwinder::Dwarf`] for that capture: on targets other than x86-64
    /// and AArch64 (and under Miri), where the thread's stack bounds are
    /// unknown, and whenever the code runs on a stack other than its
    /// thread's own — a segment mapped by `stacker::grow` (and so by
    /// `recursive`), a signal stack, a green thread's stack — whose extent
    /// the walk cannot check.
    FramePointers,
}

/// Whether this target has a frame-pointer walk (x86-64 and AArch64).
#[cfg(all(test, not(loom)))]
pub(crate) const fn fp_supported() -> bool {
    fp::SUPPORTED
}

impl Unwinder {
    /// Captures with this unwinder; see [`capture`]. Inline, so `skip`
    /// counts from the caller of this function as it does for [`capture`].
    #[inline(always)]
    pub fn capture(self, skip: usize, depth: usize) -> StackTrace {
        match self {
            // Both walks count `skip` from the caller of this inlined
            // function, so the fallback drops the same frames.
            Unwinder::FramePointers => match fp::capture(skip, depth) {
                Some(trace) => trace,
                None => capture(skip, depth),
            },
            Unwinder::Dwarf => capture(skip, depth),
        }
    }
}

/// Walks the frame-pointer chain: `skip` frames after the caller's are
/// dropped, then up to `depth` (at most [`MAX_DEPTH`]) return addresses are
/// kept, as [`capture`] does.
///
/// Memory-safe in any build and on any stack: it walks only when the stack
/// pointer lies inside the calling thread's own stack, reads only between
/// the stack pointer and that stack's top, and stops at the first link that
/// does not lead further up it. The frames are right only in code built
/// with frame pointers (see [`Unwinder::FramePointers`]).
///
/// The trace is **empty** where the walk refuses:
///
/// - on a stack other than the thread's own: a segment mapped by
///   `stacker::grow` (and so by `recursive`), a `sigaltstack` signal stack,
///   a green thread's stack — their extent cannot be checked;
/// - on the main thread when `RLIMIT_STACK` is unlimited (its stack's lower
///   bound is then unknown);
/// - where the thread's stack bounds cannot be found (other than Linux), on
///   targets without a walk (other than x86-64 and AArch64) and under Miri.
///
/// [`Unwinder::FramePointers`] falls back to [`capture`] in those cases.
///
/// ```
/// let trace = pinowner::depot::capture_frame_pointers(0, 8);
/// assert!(trace.len() <= 8);
/// ```
#[inline(never)]
pub fn capture_frame_pointers(skip: usize, depth: usize) -> StackTrace {
    fp::capture(skip + 1, depth).unwrap_or_default()
}

/// The most frames a [`StackTrace`] holds; deeper requests are capped here.
pub const MAX_DEPTH: usize = 64;

/// The depth the tracker captures by default (as the kernel's page pinner
/// does).
pub const DEFAULT_DEPTH: usize = 16;

/// The byte bound of [`StackDepot::default`]: 1 MiB.
pub const DEFAULT_MAX_BYTES: usize = 1 << 20;

/// Index shards. Few under loom, so the models stay small and distinct
/// stacks are likely to meet on one lock.
#[cfg(not(loom))]
const SHARDS: usize = 16;
#[cfg(loom)]
const SHARDS: usize = 2;

/// Bytes a stored stack costs beyond its frames: its record (boxed slice and
/// collision link), its index entry (hash and local index) and the hash
/// table's control byte.
const PER_STACK_OVERHEAD: usize = std::mem::size_of::<Record>() + std::mem::size_of::<(u64, u32)>() + 1;

/// A backtrace of unresolved instruction pointers, innermost frame first, in
/// a fixed-capacity array (at most [`MAX_DEPTH`] frames; no heap).
///
/// Dereferences to `&[usize]`, the frames.
#[derive(Clone, Copy)]
pub struct StackTrace {
    frames: [usize; MAX_DEPTH],
    len: u8,
}

impl StackTrace {
    /// An empty trace.
    pub const fn new() -> Self {
        Self { frames: [0; MAX_DEPTH], len: 0 }
    }

    /// A trace holding the first [`MAX_DEPTH`] of `frames`.
    pub fn from_slice(frames: &[usize]) -> Self {
        let mut trace = Self::new();
        let n = frames.len().min(MAX_DEPTH);
        trace.frames[..n].copy_from_slice(&frames[..n]);
        trace.len = n as u8;
        trace
    }

    /// The frames, innermost first.
    pub fn as_slice(&self) -> &[usize] {
        &self.frames[..usize::from(self.len)]
    }

    /// Appends a frame; returns `false` (and drops it) when the trace is full.
    fn push(&mut self, ip: usize) -> bool {
        match self.frames.get_mut(usize::from(self.len)) {
            Some(slot) => {
                *slot = ip;
                self.len += 1;
                true
            }
            None => false,
        }
    }
}

impl Default for StackTrace {
    fn default() -> Self {
        Self::new()
    }
}

impl Deref for StackTrace {
    type Target = [usize];

    fn deref(&self) -> &[usize] {
        self.as_slice()
    }
}

impl AsRef<[usize]> for StackTrace {
    fn as_ref(&self) -> &[usize] {
        self.as_slice()
    }
}

impl PartialEq for StackTrace {
    fn eq(&self, other: &Self) -> bool {
        self.as_slice() == other.as_slice()
    }
}

impl Eq for StackTrace {}

impl std::hash::Hash for StackTrace {
    fn hash<H: Hasher>(&self, state: &mut H) {
        self.as_slice().hash(state);
    }
}

impl fmt::Debug for StackTrace {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        struct Hex(usize);
        impl fmt::Debug for Hex {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                write!(f, "{:#x}", self.0)
            }
        }
        f.debug_list().entries(self.as_slice().iter().map(|&ip| Hex(ip))).finish()
    }
}

/// Captures the current thread's backtrace as instruction pointers only: no
/// symbol resolution, no heap allocation.
///
/// The first frame is the caller of `capture` (the frames of `capture` and
/// of the unwinder are left out); `skip` drops that many more frames (a
/// wrapper that captures on behalf of its caller passes `1`). At most
/// `depth` frames are kept, capped at [`MAX_DEPTH`]; the walk stops there.
///
/// Cost: one walk of `skip + depth` frames plus the unwinder's own two:
/// about 4 µs at depth 16 on the project's 2-core x86-64 machines
/// (`benches/depot.rs`), within noise of a bare [`backtrace::trace`] over
/// as many frames. On Linux and Android the walk takes no lock, so it never
/// waits for a symbol resolution running on another thread (see the
/// [module docs](self)); elsewhere it takes the `backtrace` crate's
/// process-wide lock.
///
/// ```
/// let trace = pinowner::depot::capture(0, 4);
/// assert!(trace.len() <= 4);
/// ```
#[inline(never)]
pub fn capture(skip: usize, depth: usize) -> StackTrace {
    let mut trace = StackTrace::new();
    let depth = depth.min(MAX_DEPTH);
    if depth == 0 {
        return trace;
    }
    // Frames of the unwinder (called by this function) lie below this local
    // on the stack; this function's frame and its callers' lie above it.
    // Where the backend reports a frame's canonical frame address (the stack
    // pointer before the call into the frame: x86-64 and AArch64 through
    // `_Unwind_GetCFA`), the first frame above is this function's own; where
    // it reports the frame's stack pointer (32-bit Arm, s390x, Windows), it is
    // the caller's. `own_frame_first` tells the two apart.
    let marker = 0u8;
    let here = std::hint::black_box(&marker) as *const u8 as usize;
    let mut above = false;
    let mut skip = skip;
    walk(|frame| {
        if !above {
            let sp = frame.sp() as usize;
            if sp == 0 {
                // No stack pointers from this backend: find our own frame by
                // its start address (one lookup per frame until found).
                above = frame.symbol_address() as usize == capture as fn(usize, usize) -> StackTrace as usize;
                return true;
            }
            if sp <= here {
                return true; // inside the unwinder
            }
            above = true;
            if own_frame_first(frame) {
                return true; // this function's own frame
            }
        }
        if skip > 0 {
            skip -= 1;
            return true;
        }
        trace.push(frame.ip() as usize);
        trace.len() < depth
    });
    trace
}

/// Walks the calling thread's stack, innermost frame first, until `cb`
/// returns `false`: without the `backtrace` crate's process-wide lock where
/// the walk is thread-safe on its own (see the module docs), with it
/// elsewhere. `cb` must not panic (the unwinder cannot unwind through it).
#[cfg(all(any(target_os = "linux", target_os = "android"), not(miri)))]
#[inline(always)]
fn walk(cb: impl FnMut(&backtrace::Frame) -> bool) {
    // The crate's lock serialises dbghelp (Windows) and its symbol cache
    // (touched by `resolve` only). Here the walk is `_Unwind_Backtrace`,
    // thread-safe by itself, and `capture`'s callback calls only
    // `Frame::ip`, `sp` and `symbol_address` (`_Unwind_GetIP`,
    // `_Unwind_GetCFA`, `_Unwind_FindEnclosingFunction`: reads of the
    // unwinder's context and tables) and never panics.
    // SAFETY: so no walk or resolution on another thread can race this one.
    unsafe { backtrace::trace_unsynchronized(cb) }
}

/// Walks the calling thread's stack under the `backtrace` crate's lock (see
/// the Linux version).
#[cfg(not(all(any(target_os = "linux", target_os = "android"), not(miri))))]
#[inline(always)]
fn walk(cb: impl FnMut(&backtrace::Frame) -> bool) {
    backtrace::trace(cb)
}

/// Whether the first frame above `capture`'s marker is `capture`'s own.
///
/// It depends only on the unwinding backend, so the first capture in the
/// process finds out by looking up that frame's function start (a search of
/// the unwind tables, about a microsecond) and every later one reads the
/// answer. Apple's `symbol_address` is the bare instruction pointer, so there
/// the answer is fixed: its libunwind reports canonical frame addresses.
fn own_frame_first(first_above: &backtrace::Frame) -> bool {
    static KNOWN: ConstAtomicBool = ConstAtomicBool::new(false);
    static OWN: ConstAtomicBool = ConstAtomicBool::new(false);
    if cfg!(target_vendor = "apple") {
        return true;
    }
    if KNOWN.load(Ordering::Acquire) {
        return OWN.load(Ordering::Relaxed);
    }
    // Threads racing here compute the same answer.
    let own = first_above.symbol_address() as usize == capture as fn(usize, usize) -> StackTrace as usize;
    OWN.store(own, Ordering::Relaxed);
    KNOWN.store(true, Ordering::Release);
    own
}

/// A small non-zero handle for a stack interned in a [`StackDepot`].
///
/// A handle from one depot means nothing to another. [`StackHandle::FAILED`]
/// is the one handle that names no stack: the depot hands it out when it is
/// full or an allocation failed (and counts it in [`DepotStats::failures`]).
/// `Option<StackHandle>` is 4 bytes.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct StackHandle(NonZeroU32);

impl StackHandle {
    /// The sentinel for "no stack stored": the depot was full or out of
    /// memory. Its raw value is `u32::MAX`; no stored stack gets it.
    pub const FAILED: StackHandle = StackHandle(NonZeroU32::MAX);

    /// Whether this is [`StackHandle::FAILED`].
    pub const fn is_failed(self) -> bool {
        self.0.get() == u32::MAX
    }

    /// The raw value (non-zero; `u32::MAX` for [`StackHandle::FAILED`]), for
    /// reports and serialized forms.
    pub const fn get(self) -> u32 {
        self.0.get()
    }

    fn encode(shard: usize, local: usize) -> Option<Self> {
        let raw = (local as u64).checked_mul(SHARDS as u64)?.checked_add(shard as u64 + 1)?;
        let raw = u32::try_from(raw).ok().filter(|&r| r != u32::MAX)?;
        NonZeroU32::new(raw).map(StackHandle)
    }

    fn decode(self) -> Option<(usize, usize)> {
        if self.is_failed() {
            return None;
        }
        let v = self.0.get() as usize - 1;
        Some((v % SHARDS, v / SHARDS))
    }
}

impl fmt::Display for StackHandle {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.is_failed() {
            f.write_str("stack#failed")
        } else {
            write!(f, "stack#{}", self.0)
        }
    }
}

/// Counters of a [`StackDepot`].
///
/// Read from separate atomics: while inserts run concurrently, the fields
/// need not be mutually consistent.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
pub struct DepotStats {
    /// Distinct stacks stored.
    pub unique_stacks: u64,
    /// Bytes charged against the bound: for each stored stack, its frames
    /// plus a fixed overhead for its record and index entry. Allocator
    /// overhead, spare capacity of the growable tables and the symbol cache
    /// are not included.
    pub bytes: u64,
    /// Inserts that found their stack already stored.
    pub hits: u64,
    /// Inserts that returned [`StackHandle::FAILED`] (bound reached or
    /// allocation failed).
    pub failures: u64,
}

/// One frame of a resolved stack.
///
/// An instruction pointer inside inlined code resolves to several frames
/// with the same `ip`, innermost first.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Frame {
    /// The instruction pointer (a return address for all but the first
    /// frame of a capture).
    pub ip: usize,
    /// The demangled function name, without its hash suffix, if known.
    pub function: Option<String>,
    /// The source file, if known.
    pub file: Option<String>,
    /// The source line, if known.
    pub line: Option<u32>,
}

impl fmt::Display for Frame {
    /// `function at file:line`, or the bare address when nothing is known.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.function {
            Some(name) => f.write_str(name)?,
            None => write!(f, "{:#x}", self.ip)?,
        }
        if let Some(file) = &self.file {
            write!(f, " at {file}")?;
            if let Some(line) = self.line {
                write!(f, ":{line}")?;
            }
        }
        Ok(())
    }
}

/// A stored stack.
struct Record {
    frames: Box<[usize]>,
    /// Local index + 1 of the next older record with the same hash; 0 for
    /// none.
    next: u32,
}

/// The index keys are already well-mixed hashes: use them as they are.
#[derive(Default)]
struct PreHashed(u64);

impl Hasher for PreHashed {
    fn finish(&self) -> u64 {
        self.0
    }

    fn write(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.0 = self.0.rotate_left(8) ^ u64::from(b);
        }
    }

    fn write_u64(&mut self, n: u64) {
        self.0 = n;
    }
}

#[derive(Default)]
struct Shard {
    /// Hash → local index of the newest record with that hash.
    index: HashMap<u64, u32, BuildHasherDefault<PreHashed>>,
    /// Append-only: a local index, once handed out, names its stack forever.
    records: Vec<Record>,
}

impl Shard {
    fn find(&self, hash: u64, frames: &[usize]) -> Option<usize> {
        let mut local = *self.index.get(&hash)? as usize;
        loop {
            let record = &self.records[local];
            if *record.frames == *frames {
                return Some(local);
            }
            local = (record.next as usize).checked_sub(1)?;
        }
    }

    /// Appends `frames`; `None` when an allocation fails (nothing changes).
    fn push(&mut self, hash: u64, frames: &[usize]) -> Option<usize> {
        let local = self.records.len();
        let local_u32 = u32::try_from(local).ok()?;
        self.records.try_reserve(1).ok()?;
        self.index.try_reserve(1).ok()?;
        let mut stored = Vec::new();
        stored.try_reserve_exact(frames.len()).ok()?;
        stored.extend_from_slice(frames);
        let next = self.index.insert(hash, local_u32).map_or(0, |older| older + 1);
        self.records.push(Record { frames: stored.into_boxed_slice(), next });
        Some(local)
    }
}

/// Interns instruction-pointer lists: one copy of each distinct stack, a
/// small handle for each, a byte bound, and cached symbol resolution.
///
/// See the [module docs](self) for the model.
///
/// ```
/// use pinowner::depot::{self, StackDepot};
///
/// let depot = StackDepot::new(64 * 1024);
/// let mut handles = Vec::new();
/// for _ in 0..3 {
///     // The same call site, captured three times: one stored stack.
///     let trace = depot::capture(0, depot::DEFAULT_DEPTH);
///     handles.push(depot.intern(&trace));
/// }
/// assert!(handles.iter().all(|&h| h == handles[0] && !h.is_failed()));
/// let stats = depot.stats();
/// assert_eq!((stats.unique_stacks, stats.hits, stats.failures), (1, 2, 0));
///
/// // Symbols only when a report asks for them (then cached per address).
/// let frames = depot.resolve(handles[0]);
/// assert!(!frames.is_empty());
///
/// // A full depot hands out the sentinel and counts it.
/// let tiny = StackDepot::new(0);
/// assert!(tiny.intern(&[0x1000, 0x2000]).is_failed());
/// assert_eq!(tiny.stats().failures, 1);
/// ```
pub struct StackDepot {
    shards: Box<[Mutex<Shard>]>,
    max_bytes: u64,
    bytes: AtomicU64,
    unique: AtomicU64,
    hits: AtomicU64,
    failures: AtomicU64,
    /// Instruction pointer → its resolved frames (several when inlined).
    symbols: Mutex<HashMap<usize, Vec<Frame>>>,
}

impl StackDepot {
    /// An empty depot that stores at most `max_bytes` bytes of stacks (as
    /// counted by [`DepotStats::bytes`]). Allocates nothing per stack until
    /// the first insert.
    pub fn new(max_bytes: usize) -> Self {
        Self {
            shards: (0..SHARDS).map(|_| Mutex::new(Shard::default())).collect(),
            max_bytes: max_bytes as u64,
            bytes: AtomicU64::new(0),
            unique: AtomicU64::new(0),
            hits: AtomicU64::new(0),
            failures: AtomicU64::new(0),
            symbols: Mutex::new(HashMap::new()),
        }
    }

    /// The byte bound given to [`StackDepot::new`].
    pub fn max_bytes(&self) -> u64 {
        self.max_bytes
    }

    /// The handle of `frames` (its first [`MAX_DEPTH`] frames), storing it if
    /// it is new. Returns [`StackHandle::FAILED`], and counts a failure, when
    /// storing it would pass the byte bound or an allocation fails; a stack
    /// already stored is still found when the depot is full. Never panics.
    ///
    /// Concurrent calls with the same frames return the same handle.
    pub fn intern(&self, frames: &[usize]) -> StackHandle {
        let frames = &frames[..frames.len().min(MAX_DEPTH)];
        let hash = hash_frames(frames);
        let shard_no = (hash >> 32) as usize % SHARDS;
        let mut shard = self.shards[shard_no].lock();
        if let Some(local) = shard.find(hash, frames) {
            self.hits.fetch_add(1, Ordering::Relaxed);
            // Stored, so its handle was encodable when it was stored.
            return StackHandle::encode(shard_no, local).unwrap_or(StackHandle::FAILED);
        }
        let Some(handle) = StackHandle::encode(shard_no, shard.records.len()) else {
            return self.fail();
        };
        let cost = (std::mem::size_of_val(frames) + PER_STACK_OVERHEAD) as u64;
        if !self.charge(cost) {
            return self.fail();
        }
        if shard.push(hash, frames).is_none() {
            self.bytes.fetch_sub(cost, Ordering::Relaxed);
            return self.fail();
        }
        self.unique.fetch_add(1, Ordering::Relaxed);
        handle
    }

    /// The frames stored for `handle`; `None` for [`StackHandle::FAILED`]
    /// (and for a handle this depot did not hand out).
    pub fn frames(&self, handle: StackHandle) -> Option<StackTrace> {
        let (shard, local) = handle.decode()?;
        let shard = self.shards[shard].lock();
        shard.records.get(local).map(|r| StackTrace::from_slice(&r.frames))
    }

    /// The stack behind `handle` with symbols: function, file and line for
    /// each frame (several frames for one address when code was inlined),
    /// innermost first. Empty for [`StackHandle::FAILED`].
    ///
    /// Resolution reads debug info and is slow the first time in a process
    /// (tens of milliseconds); each address is resolved once and cached in
    /// the depot, so rendering a report again costs only the copies. Call
    /// this when rendering reports, not on the tracked path.
    pub fn resolve(&self, handle: StackHandle) -> Vec<Frame> {
        let Some(trace) = self.frames(handle) else {
            return Vec::new();
        };
        let mut out = Vec::with_capacity(trace.len());
        for &ip in trace.iter() {
            let cached = self.symbols.lock().get(&ip).cloned();
            let frames = match cached {
                Some(frames) => frames,
                None => {
                    // Resolved without holding the cache lock: `backtrace`
                    // takes its own process-wide lock. Two threads may both
                    // resolve one address; they store the same answer.
                    let frames = resolve_ip(ip);
                    self.symbols.lock().entry(ip).or_insert(frames).clone()
                }
            };
            out.extend(frames);
        }
        out
    }

    /// The depot's counters.
    pub fn stats(&self) -> DepotStats {
        DepotStats {
            unique_stacks: self.unique.load(Ordering::Relaxed),
            bytes: self.bytes.load(Ordering::Relaxed),
            hits: self.hits.load(Ordering::Relaxed),
            failures: self.failures.load(Ordering::Relaxed),
        }
    }

    /// Reserves `cost` bytes of the budget; `false` if that would pass the
    /// bound. Relaxed is enough: the counter guards no data, only a total.
    fn charge(&self, cost: u64) -> bool {
        let mut current = self.bytes.load(Ordering::Relaxed);
        loop {
            let Some(next) = current.checked_add(cost).filter(|&n| n <= self.max_bytes) else {
                return false;
            };
            match self.bytes.compare_exchange(current, next, Ordering::Relaxed, Ordering::Relaxed) {
                Ok(_) => return true,
                Err(seen) => current = seen,
            }
        }
    }

    #[cold]
    fn fail(&self) -> StackHandle {
        self.failures.fetch_add(1, Ordering::Relaxed);
        StackHandle::FAILED
    }
}

impl Default for StackDepot {
    /// A depot bounded at [`DEFAULT_MAX_BYTES`] (1 MiB).
    fn default() -> Self {
        Self::new(DEFAULT_MAX_BYTES)
    }
}

impl fmt::Debug for StackDepot {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("StackDepot").field("max_bytes", &self.max_bytes).field("stats", &self.stats()).finish()
    }
}

/// FxHash-style mixing of the frames and their count, then a 64-bit
/// finalizer (MurmurHash3's `fmix64`) so low and high bits are both usable.
fn hash_frames(frames: &[usize]) -> u64 {
    const K: u64 = 0x517c_c1b7_2722_0a95;
    let mut h = (frames.len() as u64).wrapping_mul(K);
    for &ip in frames {
        h = (h.rotate_left(5) ^ ip as u64).wrapping_mul(K);
    }
    h ^= h >> 33;
    h = h.wrapping_mul(0xff51_afd7_ed55_8ccd);
    h ^= h >> 33;
    h = h.wrapping_mul(0xc4ce_b9fe_1a85_ec53);
    h ^ (h >> 33)
}

/// Every symbol `backtrace` knows for `ip` (several when inlined), or one
/// frame with only the address. Under Miri always the bare address (see the
/// module docs, "Instruction pointers").
fn resolve_ip(ip: usize) -> Vec<Frame> {
    let mut frames = Vec::new();
    #[cfg(not(miri))]
    backtrace::resolve(ip as *mut std::ffi::c_void, |symbol| {
        frames.push(Frame {
            ip,
            function: symbol.name().map(|name| format!("{name:#}")),
            file: symbol.filename().map(|path| path.display().to_string()),
            line: symbol.lineno(),
        });
    });
    if frames.is_empty() {
        frames.push(Frame { ip, function: None, file: None, line: None });
    }
    frames
}

#[cfg(test)]
mod tests;
