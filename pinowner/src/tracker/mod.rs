//! Lazy owner tracking: the page pin owner idea, done in userspace.
//!
//! Nothing here runs while no page is armed. A failed reservation arms the
//! blocks that made it fail by setting `TRACKED` in their state words; the
//! get/put/pin/unpin hot paths already branch on the word their atomic
//! operation returned, and that branch now also leads here. From then on
//! every count change on an armed block is recorded as an [`Event`]: kind,
//! page, counts before and after, thread, time, the acquirer (the
//! `#[pin_tracked]` site or the caller's location) or the releaser's current
//! site, the reason of the failure that armed it, and an unresolved
//! backtrace interned in the arena's [`StackDepot`].
//!
//! # Memory
//!
//! The tracker itself — its event queue, the stack depot and a per-page side
//! table of 8 bytes (the arming that armed the page and its dropped events,
//! the kernel's `page_ext`) — is allocated when the first page is armed (at
//! build time in [eager](Tracking::eager) mode). The side table comes from a
//! zeroed allocation, so the operating system maps only the parts that are
//! touched.
//!
//! # Bounded, never blocking
//!
//! A recording thread pushes its event into a bounded lock-free queue and
//! returns; a report drains the queue into the history. When the queue or the
//! history is full the event is dropped and counted, per page and in total,
//! and reports say so. The only wait on the recording path is a stack depot
//! shard lock held for one hash lookup; on Linux and Android stacks are
//! walked without the `backtrace` crate's process-wide lock, so a report
//! resolving symbols (which holds it for tens of milliseconds the first
//! time) never stalls recording. Elsewhere capture takes that lock too
//! (see [`crate::depot`]).
//!
//! # Arming, disarming, exactly once
//!
//! Arming and disarming are compare-and-swaps on the state word that require
//! the block to be live (counts held, not free), and the thread whose swap
//! changed the bit records the `Arm` or `Disarm` event. A put that drops the
//! last count of an armed block sees `TRACKED` in the word its own
//! compare-and-swap replaced, records the put and the `Disarm(Freed)`, and
//! frees the block, which clears the bit with no further event; a disarm
//! request finds the block no longer live and does nothing. So each arming of
//! a block ends in exactly one `Disarm` event, and an event whose count
//! change came after the arming in the word's modification order is always
//! recorded (the `loom_tracker` models check both).

mod arming;
mod folded;
mod holds;
mod report;
mod ring;
mod text;

pub use folded::HoldWeight;
pub use holds::MAX_HOLDS;

pub use report::{
    ArmingSummary, EventRecord, Holder, Owner, OwnerReport, PageReport, ReleaseRecord, ReportOptions, SiteGroup,
    StackGroup, StackGroupKind, SubsystemGroup, ThreadRef, REPORT_VERSION,
};

use core::ops::Range;
use std::time::{Duration, Instant};

use crate::depot::{self, StackDepot, StackHandle, Unwinder};
use crate::page::slot::{Acquirer, Who};
use crate::page::state::{self, COUNTS, FREE, TRACKED};
use crate::reservation::Reason;
use crate::sync::Ordering::{Acquire, Relaxed, Release};
use crate::sync::{AtomicPtr, AtomicU32, AtomicU64, Condvar, ConstMutex, Mutex};
use crate::{PageArena, Pfn};

use ring::Ring;

/// Settings for owner tracking; see [`ArenaBuilder::tracking`].
///
/// Lazy by default: nothing is recorded until a failed reservation arms
/// its busy blocks. Eager mode arms every allocation from the start, for
/// leak hunts:
///
/// ```
/// use pinowner::{EventKind, PageArena, Tracking};
///
/// let tracking = Tracking { eager: true, depth: 8, ..Tracking::default() };
/// let arena = PageArena::builder().pages(16).tracking(tracking).build()?;
/// let leaked = arena.alloc(0)?;
/// let report = arena.owner_report();
/// assert_eq!(report.pages.len(), 1, "armed at allocation");
/// let holder = &report.pages[0].outstanding[0];
/// assert_eq!(holder.kind, EventKind::Alloc);
/// assert!(holder.owner.as_ref().unwrap().location.contains(file!()), "with its acquirer");
/// # drop(leaked);
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
///
/// [`ArenaBuilder::tracking`]: crate::ArenaBuilder::tracking
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Tracking {
    /// Events kept until a report takes them (default 4096, as Android's
    /// page pinner; at most [`MAX_CAPACITY`]). Events past it are dropped
    /// and counted.
    pub capacity: usize,
    /// Frames of each event's backtrace, the arena's own (at most about 4,
    /// trimmed from reports) included (default [`depot::DEFAULT_DEPTH`], 16;
    /// 0 records no backtraces).
    pub depth: usize,
    /// Byte bound of the stack depot (default [`depot::DEFAULT_MAX_BYTES`]).
    pub depot_bytes: usize,
    /// Eager mode (the kernel's page_owner): every allocated block is armed
    /// from its allocation, with the allocation's stack, until it is freed.
    /// Off by default; for leak hunts and as the cost comparison for the
    /// lazy mode.
    pub eager: bool,
    /// How stacks are walked (default [`Unwinder::Dwarf`], right in any
    /// build). [`Unwinder::FramePointers`] is some 50 times cheaper per
    /// frame, for programs built with frame pointers.
    pub unwinder: Unwinder,
    /// A pin held at least this long is flagged long in reports
    /// ([`Holder::long`](report::Holder::long); default 1 s): plain pins of
    /// movable pages are meant for short I/O, and a long one keeps its page
    /// from moving (the pin page control RFC's "what is 'for a while'").
    pub long_pin: Duration,
}

impl Default for Tracking {
    fn default() -> Self {
        Tracking {
            capacity: 4096,
            depth: depot::DEFAULT_DEPTH,
            depot_bytes: depot::DEFAULT_MAX_BYTES,
            eager: false,
            unwinder: Unwinder::Dwarf,
            long_pin: Duration::from_secs(1),
        }
    }
}

/// Why a block stopped being tracked.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
#[cfg_attr(feature = "serde", serde(rename_all = "snake_case"))]
pub enum DisarmCause {
    /// Its last count was dropped and it was freed.
    Freed,
    /// A reservation of the same request later succeeded.
    Succeeded,
    /// [`PageArena::disarm`] asked for it.
    Request,
}

/// What an event did.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
#[cfg_attr(feature = "serde", serde(rename_all = "snake_case"))]
pub enum EventKind {
    /// The block was allocated (eager mode only).
    Alloc,
    /// A reference was taken.
    Get,
    /// A reference was dropped.
    Put,
    /// A pin was taken.
    Pin,
    /// A pin was dropped.
    Unpin,
    /// The block was armed.
    Arm,
    /// The block was disarmed.
    Disarm(DisarmCause),
    /// The block's data moved to the block headed by `to` (its holders
    /// went with it); the old block is freed.
    Migrated {
        /// The new block's head.
        to: Pfn,
    },
}

impl EventKind {
    /// True for `Alloc`, `Get` and `Pin`: the event added a count.
    pub fn is_acquire(self) -> bool {
        matches!(self, EventKind::Alloc | EventKind::Get | EventKind::Pin)
    }

    /// True for `Put` and `Unpin`: the event dropped a count.
    pub fn is_release(self) -> bool {
        matches!(self, EventKind::Put | EventKind::Unpin)
    }

    /// True if the count involved is a pin.
    pub fn is_pin(self) -> bool {
        matches!(self, EventKind::Pin | EventKind::Unpin)
    }

    pub(crate) fn name(self) -> &'static str {
        match self {
            EventKind::Alloc => "alloc",
            EventKind::Get => "get",
            EventKind::Put => "put",
            EventKind::Pin => "pin",
            EventKind::Unpin => "unpin",
            EventKind::Arm => "arm",
            EventKind::Disarm(DisarmCause::Freed) => "disarm(freed)",
            EventKind::Disarm(DisarmCause::Succeeded) => "disarm(succeeded)",
            EventKind::Disarm(DisarmCause::Request) => "disarm(request)",
            EventKind::Migrated { .. } => "migrated",
        }
    }
}

impl core::fmt::Display for EventKind {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.write_str(self.name())
    }
}

/// One recorded event on an armed block.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Event {
    /// Its place in the order events were recorded (from 0).
    pub seq: u64,
    /// What happened.
    pub kind: EventKind,
    /// The page the count was taken or dropped through.
    pub pfn: Pfn,
    /// The head of its block (counts live on the head).
    pub head: Pfn,
    /// The block's order.
    pub order: u8,
    /// References on the block before and after.
    pub refs: (u32, u32),
    /// Pins on the block before and after.
    pub pins: (u32, u32),
    /// The recording thread's pinowner thread number (see
    /// [`thread_name`]).
    pub thread: u32,
    /// Time since the arena's tracker started.
    pub at: Duration,
    /// For an acquire: who took the count (the `#[pin_tracked]` site or the
    /// caller's location). For a release: the site current in the releasing
    /// thread, if any. For an arm: who made the failed reservation.
    pub who: Option<Acquirer>,
    /// The event's backtrace, if one was captured (`None` with a depth of 0,
    /// for disarm events, or when the depot was full: see
    /// [`StackHandle::FAILED`]).
    pub stack: Option<StackHandle>,
    /// The arming this event belongs to (see [`Arming`]).
    pub arming: u32,
    /// The acquisition key: the generation the acquire produced, or the one
    /// the releasing handle held. `None` for a release that cannot tell (the
    /// raw API), which is paired with the oldest open raw acquire.
    pub gen: Option<u16>,
    /// The count went through the raw, page-number API.
    pub raw: bool,
    /// The hold this event opened (an acquire) or closed (a release): an
    /// id unique among counts held now, so a release names the acquire it
    /// ends exactly. 0: none (a count taken before arming that the failure
    /// did not attribute, or a full holds table; see
    /// [`TrackerStats::holds_untracked`]).
    pub hold: u16,
    /// An acquire found held when the block was armed (the holder the
    /// owner slot attributed at the failure), not seen happening: its time
    /// is the arming's and it has no stack.
    pub from_arming: bool,
    /// For a release: the acquire it ended, as the holds table knew it
    /// (paired when the release happened, so neither dropped events nor a
    /// report taken in between lose it). `None`: a count taken before
    /// arming that the failure did not attribute.
    pub acquired: Option<Acquired>,
}

/// The acquire a release ended (see [`Event::acquired`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Acquired {
    /// Who took the count.
    pub who: Option<Acquirer>,
    /// When, since the tracker started (for a holder found at arming: the
    /// arming's time, so the count was held at least since then).
    pub at: Duration,
    /// The acquire's event number.
    pub seq: u64,
    /// The holder was found at arming, not seen acquiring.
    pub from_arming: bool,
}

/// One arming: a failed reservation (or a request) that armed blocks.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Arming {
    /// Its number ([`EAGER_ARMING`] is eager mode's).
    pub id: u32,
    /// Why the failed reservation wanted its run.
    pub reason: Reason,
    /// The window that failed.
    pub window: Range<Pfn>,
    /// When, since the tracker started.
    pub at: Duration,
    /// Who asked for the reservation.
    pub by: Option<Acquirer>,
    /// Blocks this arming armed (their heads).
    pub blocks: Vec<Pfn>,
    /// The request, for disarming when the same request later succeeds:
    /// pages and alignment.
    pub(crate) request: Option<RequestKey>,
}

/// Arming records kept; past this the oldest are forgotten and counted.
pub const MAX_ARMINGS: usize = 1024;

/// The largest event capacity honoured (16 Mi events); larger settings are
/// capped.
pub const MAX_CAPACITY: usize = 1 << 24;

/// A reservation request: pages, alignment, fixed start.
pub(crate) type RequestKey = (usize, usize, Option<Pfn>);

/// The arming number of eager mode. Armings by failed reservations (and
/// [`PageArena::arm`](crate::PageArena::arm)) are numbered from 1; 0 means
/// no arming.
pub const EAGER_ARMING: u32 = u32::MAX;

/// Counters of an arena's tracker.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
pub struct TrackerStats {
    /// Blocks armed now.
    pub armed_blocks: u64,
    /// Pages in the blocks armed now.
    #[cfg_attr(feature = "serde", serde(default))]
    pub armed_pages: u64,
    /// Armings so far.
    pub armings: u64,
    /// Arming records forgotten because more than [`MAX_ARMINGS`] were kept
    /// (the oldest go first; their events lose their reason).
    pub armings_dropped: u64,
    /// Events recorded (kept or dropped).
    pub recorded: u64,
    /// Events dropped because the queue or the history was full.
    pub dropped: u64,
    /// The stack depot's counters.
    pub depot: depot::DepotStats,
    /// Counts recorded on armed blocks and still held (the report's
    /// outstanding holders).
    pub holds: u64,
    /// Recorded acquisitions that found the holds table full
    /// ([`MAX_HOLDS`]): their holders are reported as unrecorded counts.
    pub holds_untracked: u64,
    /// Panics caught in user callbacks (a `tracing` subscriber) called while
    /// the arena's state was mid-change, process-wide: each was printed by
    /// the panic hook and contained, and the arena stayed consistent.
    pub callback_panics: u64,
}

/// The name of a pinowner thread number, if the thread had a name when it
/// first recorded an event.
pub fn thread_name(thread: u32) -> Option<String> {
    THREAD_NAMES.lock().unwrap_or_else(|p| p.into_inner()).get(&thread).cloned()
}

static THREAD_NAMES: ConstMutex<std::collections::BTreeMap<u32, String>> =
    ConstMutex::new(std::collections::BTreeMap::new());

crate::sync::thread_local_const! {
    static NAMED: core::cell::Cell<bool> = const { core::cell::Cell::new(false) };
}

fn this_thread() -> u32 {
    let index = crate::sync::thread_index() as u32;
    if !NAMED.with(|n| n.replace(true)) {
        if let Some(name) = std::thread::current().name() {
            THREAD_NAMES.lock().unwrap_or_else(|p| p.into_inner()).insert(index, name.to_owned());
        }
    }
    index
}

/// One count or state change to record.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Change {
    pub(crate) kind: EventKind,
    /// The page the count went through.
    pub(crate) pfn: u32,
    /// Its block's head.
    pub(crate) head: u32,
    /// The head's state word before and after.
    pub(crate) old: u64,
    pub(crate) new: u64,
    /// Acquirer, releasing site or arming caller.
    pub(crate) who: Option<Acquirer>,
    /// The acquisition's generation (the pairing key).
    pub(crate) gen: Option<u16>,
    /// Through the raw API.
    pub(crate) raw: bool,
    /// For a release: the hold its handle keeps (0: none).
    pub(crate) hold: u16,
    /// An acquire found held at arming.
    pub(crate) from_arming: bool,
}

impl Change {
    /// An acquire through page `pfn` of the block headed at `head`.
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn acquire(
        kind: EventKind,
        pfn: u32,
        head: u32,
        old: u64,
        new: u64,
        who: Who,
        gen: u16,
        raw: bool,
    ) -> Change {
        Change { kind, pfn, head, old, new, who: who.acquirer(), gen: Some(gen), raw, hold: 0, from_arming: false }
    }

    /// A change of a whole block, not through the raw API.
    fn block(kind: EventKind, head: u32, old: u64, new: u64, who: Option<Acquirer>, gen: Option<u16>) -> Change {
        Change { kind, pfn: head, head, old, new, who, gen, raw: false, hold: 0, from_arming: false }
    }
}

/// Per-page side data, allocated with the tracker (`page_ext`).
#[derive(Debug)]
pub(crate) struct PageExt {
    /// The arming that armed the block headed here (0: none).
    arming: AtomicU32,
    /// Events on this page dropped because the queue or history was full.
    drops: AtomicU32,
}

/// What a report drains the queue into.
#[derive(Debug, Default)]
struct History {
    events: Vec<Event>,
    /// Events the history had no room for.
    dropped: u64,
}

/// An arena's tracker; allocated on first arming.
#[derive(Debug)]
pub(crate) struct Tracker {
    config: Tracking,
    epoch: Instant,
    queue: Ring<Event>,
    ext: Box<[PageExt]>,
    history: Mutex<History>,
    armings: Mutex<Vec<Arming>>,
    /// The next arming number (under the `armings` lock).
    next_arming: AtomicU32,
    armings_dropped: AtomicU64,
    pub(crate) depot: StackDepot,
    seq: AtomicU64,
    dropped: AtomicU64,
    armed_blocks: AtomicU64,
    armed_pages: AtomicU64,
    /// Counts recorded on armed blocks and still held.
    pub(crate) holds: Mutex<holds::Holds>,
    /// Moves on every release of an armed block; `reserve_contig_wait`
    /// waits for it to move.
    releases: AtomicU64,
    wait_lock: Mutex<()>,
    wait_cv: Condvar,
}

impl Tracker {
    /// One block armed (`by` 1) or disarmed (-1), its word being `word`:
    /// the counts of armed blocks and of their pages.
    pub(crate) fn armed(&self, word: u64, by: i64) {
        let pages = 1u64 << state::order(word);
        if by > 0 {
            self.armed_blocks.fetch_add(1, Relaxed);
            self.armed_pages.fetch_add(pages, Relaxed);
        } else {
            self.armed_blocks.fetch_sub(1, Relaxed);
            self.armed_pages.fetch_sub(pages, Relaxed);
        }
    }

    fn new(config: Tracking, pages: usize) -> Tracker {
        #[cfg(not(loom))]
        let ext = {
            let ext = Box::<[PageExt]>::new_zeroed_slice(pages);
            // SAFETY: `PageExt` is two `AtomicU32`s, for which all-zero bits are
            // a valid value, and the allocation is zeroed.
            unsafe { ext.assume_init() }
        };
        #[cfg(loom)]
        let ext = (0..pages).map(|_| PageExt { arming: AtomicU32::new(0), drops: AtomicU32::new(0) }).collect();
        Tracker {
            config,
            epoch: Instant::now(),
            queue: Ring::new(config.capacity.clamp(1, MAX_CAPACITY)),
            ext,
            history: Mutex::new(History::default()),
            armings: Mutex::new(Vec::new()),
            next_arming: AtomicU32::new(1),
            armings_dropped: AtomicU64::new(0),
            depot: StackDepot::new(config.depot_bytes),
            seq: AtomicU64::new(0),
            dropped: AtomicU64::new(0),
            armed_blocks: AtomicU64::new(0),
            armed_pages: AtomicU64::new(0),
            holds: Mutex::new(holds::Holds::default()),
            releases: AtomicU64::new(0),
            wait_lock: Mutex::new(()),
            wait_cv: Condvar::new(),
        }
    }

    pub(crate) fn config(&self) -> Tracking {
        self.config
    }

    fn now(&self) -> Duration {
        self.epoch.elapsed()
    }

    /// The event describing `c` now, unnumbered.
    fn event(&self, c: &Change, stack: Option<StackHandle>) -> Event {
        Event {
            seq: 0,
            kind: c.kind,
            pfn: c.pfn as Pfn,
            head: c.head as Pfn,
            order: state::order(c.old),
            refs: (state::refs(c.old), state::refs(c.new)),
            pins: (state::pins(c.old), state::pins(c.new)),
            thread: this_thread(),
            at: self.now(),
            who: c.who,
            stack,
            arming: self.arming_of(c.head),
            gen: c.gen,
            raw: c.raw,
            hold: 0,
            from_arming: c.from_arming,
            acquired: None,
        }
    }

    /// Records one event: never blocks on a reader, never panics. Returns
    /// the hold an acquire opened (0: none) and the event's number.
    fn record(&self, c: Change, with_stack: bool) -> (u16, u64) {
        let Change { kind, pfn, head, gen, raw, hold, .. } = c;
        let stack = if with_stack && self.config.depth > 0 {
            // The depth includes the arena's own few frames (trimmed when a
            // report renders), as the kernel's page pinner counts its own:
            // every frame walked costs about 0.2 µs.
            let trace = self.config.unwinder.capture(2, self.config.depth.min(depot::MAX_DEPTH));
            Some(self.depot.intern(&trace))
        } else {
            None
        };
        let mut event = self.event(&c, stack);
        // Numbered under the holds lock, so a hold id closed by a release is
        // reused only by an acquire numbered after that release.
        let opened = {
            let mut holds = self.holds.lock();
            event.seq = self.seq.fetch_add(1, Relaxed);
            match kind {
                k if k.is_acquire() => holds.open(&mut event),
                k if k.is_release() => {
                    let pin = k.is_pin();
                    let id = match (hold, gen) {
                        // A raw release closes the oldest raw hold of its
                        // kind; failing that, if it moved the generation, the
                        // holder found at arming that the slot named (it may
                        // have been that holder: the record never outlives
                        // the slot's naming it).
                        (0, _) if raw => holds.find(head, |e| e.raw && e.kind.is_pin() == pin).or_else(|| {
                            let (g, moved) = (state::gen(c.old), state::gen(c.old) != state::gen(c.new));
                            moved.then(|| holds.find(head, |e| e.from_arming && e.gen == Some(g))).flatten()
                        }),
                        // A holder from before arming: the one the failure
                        // attributed, if this release carries its generation.
                        (0, Some(g)) => {
                            holds.find(head, |e| e.from_arming && e.gen == Some(g) && e.kind.is_pin() == pin)
                        }
                        (0, None) => None,
                        (id, _) => Some(id),
                    };
                    if let Some(a) = id.and_then(|id| holds.close(id)) {
                        event.hold = a.hold;
                        event.acquired =
                            Some(Acquired { who: a.who, at: a.at, seq: a.seq, from_arming: a.from_arming });
                    }
                    0
                }
                EventKind::Disarm(DisarmCause::Freed) => {
                    holds.close_all(head, |_| true);
                    0
                }
                // Their releases will not be seen any more; handle holds
                // are closed by their handles.
                EventKind::Disarm(_) => {
                    holds.close_all(head, |e| e.raw || e.from_arming);
                    0
                }
                _ => 0,
            }
        };
        let seq = event.seq;
        // The user's subscriber may panic; this runs where the page's word
        // is already changed and the block perhaps not yet freed.
        crate::callback::shielded(|| emit_tracing(&event));
        if self.queue.push(event).is_err() {
            self.drop_event(pfn);
        }
        if kind.is_release() {
            self.wake_waiters();
        }
        (opened, seq)
    }

    fn drop_event(&self, pfn: u32) {
        self.dropped.fetch_add(1, Relaxed);
        let d = &self.ext[pfn as usize].drops;
        // Saturate instead of wrapping: a count that wrapped would understate.
        let _ = d.fetch_update(Relaxed, Relaxed, |n| n.checked_add(1));
    }

    /// Moves queued events into the history (report side).
    fn drain(&self, history: &mut History) {
        let cap = self.config.capacity.clamp(1, MAX_CAPACITY);
        while let Some(e) = self.queue.pop() {
            if history.events.len() < cap {
                history.events.push(e);
            } else {
                history.dropped += 1;
                self.drop_event(e.pfn as u32);
            }
        }
    }

    /// A copy of the history (drained first), and optionally clears it.
    pub(crate) fn events(&self, take: bool) -> Vec<Event> {
        let mut h = self.history.lock();
        self.drain(&mut h);
        let mut v = if take { std::mem::take(&mut h.events) } else { h.events.clone() };
        v.sort_by_key(|e| e.seq);
        v
    }

    pub(crate) fn armings(&self) -> Vec<Arming> {
        self.armings.lock().clone()
    }

    /// The arming that armed the block headed at `head` (0: none).
    pub(crate) fn arming_of(&self, head: u32) -> u32 {
        self.ext[head as usize].arming.load(Relaxed)
    }

    pub(crate) fn page_drops(&self, pfn: u32) -> u32 {
        self.ext[pfn as usize].drops.load(Relaxed)
    }

    pub(crate) fn stats(&self) -> TrackerStats {
        let (holds, holds_untracked) = {
            let h = self.holds.lock();
            (h.len() as u64, h.full)
        };
        TrackerStats {
            armed_blocks: self.armed_blocks.load(Relaxed),
            armed_pages: self.armed_pages.load(Relaxed),
            armings: u64::from(self.next_arming.load(Relaxed) - 1),
            armings_dropped: self.armings_dropped.load(Relaxed),
            recorded: self.seq.load(Relaxed),
            dropped: self.dropped.load(Relaxed),
            depot: self.depot.stats(),
            callback_panics: crate::callback::panics(),
            holds,
            holds_untracked,
        }
    }

    /// Moves the waiters' epoch and wakes them: a release of an armed
    /// block, or a block freed in a zone where a reservation waits.
    pub(crate) fn wake_waiters(&self) {
        // Under the waiters' lock, so a waiter between its check and its
        // sleep cannot miss the change (a lock held for two instructions;
        // notifying with nobody waiting is one load in parking_lot).
        let _g = self.wait_lock.lock();
        self.releases.fetch_add(1, Relaxed);
        self.wait_cv.notify_all();
    }

    /// Releases of armed blocks so far (`reserve_contig_wait`'s epoch).
    pub(crate) fn release_epoch(&self) -> u64 {
        let _g = self.wait_lock.lock();
        self.releases.load(Relaxed)
    }

    /// Waits until a release of an armed block moves the epoch past `seen`,
    /// or until `timeout`. Returns whether it moved.
    pub(crate) fn wait_release(&self, seen: u64, timeout: Duration) -> bool {
        let deadline = Instant::now() + timeout;
        let mut g = self.wait_lock.lock();
        loop {
            if self.releases.load(Relaxed) != seen {
                return true;
            }
            let now = Instant::now();
            if now >= deadline {
                return false;
            }
            g = self.wait_cv.wait_for(g, deadline - now);
        }
    }
}

#[cfg(not(loom))]
fn emit_tracing(e: &Event) {
    // Nothing is formatted unless a subscriber wants the event.
    if !tracing::enabled!(target: "pinowner::tracker", tracing::Level::DEBUG) {
        return;
    }
    let who = e.who.map(|w| w.to_string());
    let subsystem = e.who.and_then(|w| w.subsystem());
    tracing::debug!(
        target: "pinowner::tracker",
        seq = e.seq,
        kind = e.kind.name(),
        pfn = e.pfn,
        head = e.head,
        refs_before = e.refs.0,
        refs_after = e.refs.1,
        pins_before = e.pins.0,
        pins_after = e.pins.1,
        thread = e.thread,
        who = who.as_deref(),
        subsystem,
        stack = e.stack.map(|s| s.get()),
        arming = e.arming,
        "armed page event"
    );
}

#[cfg(loom)]
fn emit_tracing(_: &Event) {}

// Test-only, so std's: run on the building thread just before a tracker
// is built, to check what that thread holds then.
#[cfg(all(test, not(loom)))]
std::thread_local! {
    pub(crate) static ON_BUILD: core::cell::RefCell<Option<Box<dyn FnMut()>>> = const { core::cell::RefCell::new(None) };
}

/// The lazily allocated tracker of an arena.
#[derive(Debug)]
pub(crate) struct TrackerCell {
    ptr: AtomicPtr<Tracker>,
    init: Mutex<()>,
    pub(crate) config: Tracking,
}

impl TrackerCell {
    pub(crate) fn new(config: Tracking) -> TrackerCell {
        TrackerCell { ptr: AtomicPtr::new(core::ptr::null_mut()), init: Mutex::new(()), config }
    }

    /// The tracker, if one was allocated.
    #[inline]
    pub(crate) fn get(&self) -> Option<&Tracker> {
        let p = self.ptr.load(Acquire);
        // SAFETY: a non-null pointer was published (release) by `get_or_init`
        // from a leaked `Box` and is freed only in `drop`, which has `&mut`.
        (!p.is_null()).then(|| unsafe { &*p })
    }

    pub(crate) fn get_or_init(&self, pages: usize) -> &Tracker {
        if let Some(t) = self.get() {
            return t;
        }
        let _g = self.init.lock();
        if let Some(t) = self.get() {
            return t;
        }
        #[cfg(all(test, not(loom)))]
        ON_BUILD.with(|hook| hook.borrow_mut().as_mut().map(|f| f()));
        let p = Box::into_raw(Box::new(Tracker::new(self.config, pages)));
        self.ptr.store(p, Release);
        // SAFETY: just published; lives until `drop`.
        unsafe { &*p }
    }
}

impl Drop for TrackerCell {
    fn drop(&mut self) {
        let p = self.ptr.load(Acquire);
        if !p.is_null() {
            // SAFETY: the pointer came from `Box::into_raw` and nothing else
            // can reach it once the arena is being dropped.
            drop(unsafe { Box::from_raw(p) });
        }
    }
}

#[inline]
fn live(w: u64) -> bool {
    w & COUNTS != 0 && w & FREE == 0
}

impl PageArena {
    /// The tracker, allocated if needed.
    pub(crate) fn tracker(&self) -> &Tracker {
        self.tracker.get_or_init(self.pages as usize)
    }

    /// Records a count change on an armed block (the hot paths' slow branch).
    #[cold]
    #[inline(never)]
    /// Returns the hold an acquire opened (0: none).
    pub(crate) fn record_armed(&self, c: Change) -> u16 {
        // The word's TRACKED bit was read by a relaxed read-modify-write in a
        // release sequence headed by the arming's release swap: this fence
        // makes the arming's side-table writes visible.
        crate::sync::fence(Acquire);
        // No closure here: in builds without inlining it would be one more
        // frame of ours on every recorded stack.
        match self.tracker.get() {
            Some(t) => t.record(c, true).0,
            None => 0,
        }
    }

    /// A handle on the block headed by `head` (a pin if `pin`, with
    /// `ticket`) given up as a raw count: the hold recording it becomes a
    /// raw hold, closed by a raw release. That is the handle's own hold, or
    /// for a holder found at arming (whose handle keeps none) the record
    /// the arming made of it, which carries the handle's generation.
    pub(crate) fn hold_into_raw(&self, head: u32, pin: bool, ticket: crate::arena::Ticket) {
        let Some(t) = self.tracker.get() else { return };
        let mut holds = t.holds.lock();
        let id = match ticket.hold() {
            0 => {
                let gen = Some(ticket.gen());
                let found = |e: &Event| e.from_arming && !e.raw && e.gen == gen && e.kind.is_pin() == pin;
                let Some(id) = holds.find(head, found) else { return };
                id
            }
            hold => hold,
        };
        holds.make_raw(id);
    }

    /// Closes the hold a handle kept, on its release from a block that is
    /// no longer armed (an armed one's release closes it as it records).
    #[cold]
    #[inline(never)]
    pub(crate) fn close_hold(&self, hold: u16) {
        if let Some(t) = self.tracker.get() {
            t.holds.lock().close(hold);
        }
    }

    /// Eager mode: arms a block just allocated (the caller holds its only
    /// count) and records the allocation with its stack. Returns the hold
    /// the allocation opened (the block keeps it).
    #[cold]
    #[inline(never)]
    pub(crate) fn eager_arm(&self, head: u32, word: u64, who: Who) -> u16 {
        let t = self.tracker();
        t.ext[head as usize].arming.store(EAGER_ARMING, Relaxed);
        // Released like any arming, so a recorder's fence sees the side table.
        let old = self.desc(head).state.fetch_or(TRACKED, Release);
        if old & TRACKED != 0 {
            return 0;
        }
        t.armed(word, 1);
        let before = word & !(COUNTS | TRACKED);
        let gen = Some(state::gen(word));
        t.record(Change::block(EventKind::Alloc, head, before, word | TRACKED, who.acquirer(), gen), true).0
    }

    /// Records that the armed block headed by `head` moved to `to` (its
    /// word went from `old` to `new`, every count gone), and that it is
    /// freed.
    #[cold]
    pub(crate) fn record_migrated(&self, head: u32, to: u32, old: u64, new: u64) {
        if let Some(t) = self.tracker.get() {
            let kind = EventKind::Migrated { to: to as Pfn };
            t.record(Change::block(kind, head, old, new, None, None), true);
        }
        self.record_freed(head, old, new);
    }

    /// Records the disarm of a block whose last count the caller dropped.
    #[cold]
    pub(crate) fn record_freed(&self, head: u32, old: u64, new: u64) {
        if let Some(t) = self.tracker.get() {
            t.armed(old, -1);
            t.record(Change::block(EventKind::Disarm(DisarmCause::Freed), head, old, new, None, None), false);
        }
    }

    /// The events recorded so far, oldest first (the history is kept).
    pub fn tracked_events(&self) -> Vec<Event> {
        self.tracker.get().map_or_else(Vec::new, |t| t.events(false))
    }

    /// Every arming so far: the failed reservations (and requests) that
    /// armed blocks.
    pub fn armings(&self) -> Vec<Arming> {
        self.tracker.get().map_or_else(Vec::new, |t| t.armings())
    }

    /// The tracker's counters (all zero before anything was armed).
    pub fn tracker_stats(&self) -> TrackerStats {
        self.tracker.get().map_or_else(
            || TrackerStats { callback_panics: crate::callback::panics(), ..Default::default() },
            |t| t.stats(),
        )
    }

    /// Resolves an event's stack to frames, innermost first, with the
    /// arena's own frames trimmed (symbols are resolved now and cached).
    pub fn resolve_stack(&self, stack: StackHandle) -> Vec<depot::Frame> {
        self.tracker.get().map_or_else(Vec::new, |t| report::trimmed(t, stack))
    }
}

#[cfg(all(test, not(loom)))]
mod tests {
    use super::*;

    #[inline(never)]
    fn take_a_ref(arena: &PageArena, pfn: usize) {
        drop(core::hint::black_box(arena.get(pfn).unwrap()));
    }

    /// In any build the frame-pointer unwinder records events without
    /// faulting; in a frame-pointer build (`.ci/frame-pointers` sets
    /// `PINOWNER_EXPECT_FRAME_POINTERS=1`) their stacks name the caller.
    #[test]
    fn events_recorded_with_the_frame_pointer_unwinder_name_their_caller() {
        let arena = PageArena::builder()
            .pages(16)
            .tracking(Tracking { unwinder: Unwinder::FramePointers, ..Tracking::default() })
            .build()
            .unwrap();
        let block = arena.alloc(0).unwrap();
        assert_eq!(arena.arm(block.pfn()..block.pfn() + 1, Reason::Contig), 1);
        take_a_ref(&arena, block.pfn());
        let events = arena.tracked_events();
        assert_eq!(events.iter().filter(|e| e.kind.is_acquire() || e.kind.is_release()).count(), 2);
        for e in events.iter().filter(|e| e.kind.is_acquire() || e.kind.is_release()) {
            let stack = e.stack.expect("a stack handle, possibly of an empty trace");
            // Untrimmed: this test's own frames are inside `pinowner::`.
            let frames = arena.tracker.get().unwrap().depot.resolve(stack);
            assert!(frames.iter().map(|f| f.ip).collect::<std::collections::BTreeSet<_>>().len() <= 16);
            if std::env::var_os("PINOWNER_EXPECT_FRAME_POINTERS").is_some() && depot::fp_supported() {
                assert!(
                    frames.iter().any(|f| f.function.as_deref().is_some_and(|n| n.contains("take_a_ref"))),
                    "{:?}: {frames:#?}",
                    e.kind
                );
            }
        }
    }
}
