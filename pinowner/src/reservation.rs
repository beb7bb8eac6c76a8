//! Contiguous reservations: the kernel's `alloc_contig_range` / `cma_alloc`.
//!
//! A reservation of a window runs these steps, each one deterministic:
//!
//! 1. **isolate** — under the zone lock, mark every page of the window
//!    `ISOLATED` and pull the free blocks inside it off the free lists
//!    (splitting a free block that straddles the window's edge). From now on
//!    a page freed inside the window stays out of the lists.
//! 2. **drain** — return the zone's per-thread caches to the buddy lists,
//!    so free blocks parked there are isolated too (and repeat, if a block
//!    freed towards a cache but not yet in it, or a block whose last count
//!    is gone but which is not yet free, is found: the arena's own
//!    bookkeeping never fails a reservation). Steps 1–5 run holding every
//!    cache of the zone and the zone lock; one `membarrier` per pass.
//! 3. **migrate** — the hook where movable holders will be asked to move
//!    their pages; today only free pages count.
//! 4. **test** — every block of the window must be free.
//! 5. **commit** the free blocks into a [`ContigRun`], or **roll back**
//!    completely: isolation cleared, every free block back on the lists,
//!    coalesced. A failure names every busy block of the window.

mod discard;
mod observe;
mod owned;

use core::ops::Range;
use std::time::{Duration, Instant};

use crate::alloc::{FreeArea, Zone, ZoneKind};
use crate::handle::ArenaRef;
use crate::page::slot::{self, Acquirer};
use crate::page::state::{self, CONTIG, COUNTS, FREE, ISOLATED, PCP};
use crate::page::PageState;
use crate::sync::Ordering::Relaxed;
use crate::{PageArena, Pfn};
use observe::Ask;

/// Why a contiguous run is wanted. Recorded with everything a failure arms;
/// reports can be filtered by it (the page pin owner RFC's `migrate_reason`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Reason {
    /// A plain contiguous allocation (`alloc_contig_range`, CMA).
    Contig,
    /// Compaction: making high-order blocks.
    Compaction,
    /// Giving a region back, like a buffer-pool resize.
    Shrink,
    /// Moving pages out of the movable zone before a long-term pin.
    LongtermPin,
    /// A caller's own label.
    Custom(&'static str),
}

impl core::fmt::Display for Reason {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.write_str(match self {
            Reason::Contig => "contig",
            Reason::Compaction => "compaction",
            Reason::Shrink => "shrink",
            Reason::LongtermPin => "longterm_pin",
            Reason::Custom(s) => s,
        })
    }
}

/// What a reservation asked for: its failures and success are matched by
/// this (a later success disarms what its failures armed).
#[derive(Clone, Copy, Debug)]
struct Request {
    reason: Reason,
    pages: usize,
    align: usize,
    start: Option<Pfn>,
}

impl Request {
    fn key(&self) -> crate::tracker::RequestKey {
        (self.pages, self.align, self.start)
    }
}

/// One busy block inside a reservation window.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BusyBlock {
    /// The first page of the block.
    pub head: Pfn,
    /// The block's order.
    pub order: u8,
    /// The pages of the window the block covers.
    pub pages_in_window: Range<Pfn>,
    /// The block's state when tested.
    pub state: PageState,
    /// The block's zone.
    pub zone: ZoneKind,
    /// The block's head and the acquirer of its latest claiming acquisition
    /// if that holder still holds the block (otherwise `None`:
    /// unattributed, never guessed). A reference taken on a pinned block
    /// does not claim: the pinner stays named.
    pub attributed: Option<(Pfn, Acquirer)>,
    /// Whether the attributed acquirer holds a pin (else a reference): the
    /// one count it is credited with; the block's other counts are
    /// unattributed.
    pub attributed_pin: bool,
}

impl BusyBlock {
    /// Holders of the block: references plus pins.
    pub fn holders(&self) -> u32 {
        self.state.refcount + self.state.pincount
    }
}

/// Why a reservation failed: the window tried and every busy block in it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ContigFailure {
    /// Why the run was wanted.
    pub reason: Reason,
    /// The window tried: for `reserve_contig`, the best one (fewest busy
    /// pages, then fewest holders) — the smallest set of releases that would
    /// let the request succeed.
    pub window: Range<Pfn>,
    /// Busy blocks in the window, in page order.
    pub busy: Vec<BusyBlock>,
    /// Aligned windows considered (1 for `reserve_range`).
    pub windows_considered: usize,
    /// What happened while [`PageArena::reserve_contig_wait`] waited, if it
    /// did.
    pub waited: Option<WaitLog>,
}

/// What happened while a reservation waited for its blocking pages.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct WaitLog {
    /// Time spent, from the first attempt to the last failure.
    pub waited: Duration,
    /// Reservation attempts made.
    pub attempts: u32,
    /// Releases of armed blocks seen while waiting (each woke the waiter).
    pub releases: u64,
    /// Events recorded on armed blocks while waiting.
    pub events: u64,
}

impl ContigFailure {
    /// Busy pages in the window.
    pub fn busy_pages(&self) -> usize {
        self.busy.iter().map(|b| b.pages_in_window.len()).sum()
    }

    /// Holders (refs + pins) of the busy blocks.
    pub fn holders(&self) -> u32 {
        self.busy.iter().map(|b| b.holders()).sum()
    }

    /// Holders that are attributed (at most one per block: the latest).
    pub fn attributed(&self) -> u32 {
        self.busy.iter().filter(|b| b.attributed.is_some()).count() as u32
    }

    /// Pins on the busy blocks.
    pub fn pins(&self) -> u32 {
        self.busy.iter().map(|b| b.state.pincount).sum()
    }

    /// The busy blocks grouped by their attributed acquirer, ranked: most
    /// blocks first, then most holders (a top-N of who is in the way). An
    /// acquirer is credited only with what it is known to hold (its one
    /// pin or reference per block); the group with no acquirer (`None`)
    /// gathers every other count, and a block with both an attributed and
    /// unattributed holders counts in both groups.
    pub fn by_acquirer(&self) -> Vec<AcquirerGroup> {
        AcquirerGroup::rank(AcquirerGroup::credit(self.busy.iter().map(|b| {
            let who = b.attributed.map(|(_, a)| (a, b.attributed_pin));
            (who, b.state.refcount, b.state.pincount)
        })))
    }

    /// The busy blocks grouped by subsystem of their attributed acquirer
    /// (`None`: unattributed blocks and acquirers without a subsystem),
    /// ranked like [`by_acquirer`](Self::by_acquirer).
    pub fn by_subsystem(&self) -> Vec<(Option<&'static str>, AcquirerGroup)> {
        let mut out: Vec<(Option<&'static str>, AcquirerGroup)> = Vec::new();
        for g in self.by_acquirer() {
            let sub = g.acquirer.and_then(|a| a.subsystem());
            match out.iter_mut().find(|(s, _)| *s == sub) {
                Some((_, t)) => {
                    t.blocks += g.blocks;
                    t.refs += g.refs;
                    t.pins += g.pins;
                    if t.acquirer != g.acquirer {
                        t.acquirer = None;
                    }
                }
                None => out.push((sub, g)),
            }
        }
        out.sort_by_key(|(s, g)| (s.is_none(), core::cmp::Reverse((g.blocks, g.refs + g.pins))));
        out
    }
}

/// Blocks that share an attributed acquirer: the busy blocks of a failure
/// ([`ContigFailure::by_acquirer`]) or the blocks still held at an audit
/// ([`Audit::by_acquirer`](crate::Audit::by_acquirer)).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct AcquirerGroup {
    /// The acquirer (`None`: unattributed). In [`ContigFailure::by_subsystem`],
    /// the one acquirer of the subsystem, or `None` if it has several.
    pub acquirer: Option<Acquirer>,
    /// Blocks.
    pub blocks: usize,
    /// References on them.
    pub refs: u32,
    /// Pins on them.
    pub pins: u32,
}

impl AcquirerGroup {
    /// Splits each block, given as (attributed acquirer and whether it
    /// holds a pin, refs, pins), into what its acquirer is known to hold
    /// (one pin or one reference) and the rest, unattributed: the input of
    /// [`rank`](Self::rank).
    pub(crate) fn credit(
        blocks: impl IntoIterator<Item = (Option<(Acquirer, bool)>, u32, u32)>,
    ) -> impl Iterator<Item = (Option<Acquirer>, u32, u32)> {
        blocks.into_iter().flat_map(|(who, refs, pins)| {
            let (known, rest) = match who {
                Some((a, true)) if pins > 0 => (Some((Some(a), 0, 1)), (refs, pins - 1)),
                Some((a, false)) if refs > 0 => (Some((Some(a), 1, 0)), (refs - 1, pins)),
                _ => (None, (refs, pins)),
            };
            let rest = (rest != (0, 0) || known.is_none()).then_some((None, rest.0, rest.1));
            known.into_iter().chain(rest)
        })
    }

    /// Groups blocks, given as (acquirer, refs, pins), by acquirer and ranks
    /// the groups: attributed before unattributed, then most blocks, then
    /// most holders.
    pub(crate) fn rank(blocks: impl IntoIterator<Item = (Option<Acquirer>, u32, u32)>) -> Vec<AcquirerGroup> {
        let mut groups: Vec<AcquirerGroup> = Vec::new();
        for (acquirer, refs, pins) in blocks {
            match groups.iter_mut().find(|g| g.acquirer == acquirer) {
                Some(g) => {
                    g.blocks += 1;
                    g.refs += refs;
                    g.pins += pins;
                }
                None => groups.push(AcquirerGroup { acquirer, blocks: 1, refs, pins }),
            }
        }
        groups.sort_by_key(|g| (g.acquirer.is_none(), core::cmp::Reverse((g.blocks, g.refs + g.pins))));
        groups
    }
}

impl core::fmt::Display for ContigFailure {
    /// Kernel-style text: the failed test line, then one line per busy block.
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        let fin = self.busy.first().map_or(self.window.start, |b| b.pages_in_window.start);
        writeln!(
            f,
            "test_pages_isolated: start_pfn={:#x} end_pfn={:#x} fin_pfn={:#x} ret=fail reason={}",
            self.window.start, self.window.end, fin, self.reason
        )?;
        for b in &self.busy {
            write!(
                f,
                "  pfn={:#x} order={} count={} pincount={} zone={} flags={}",
                b.head, b.order, b.state.refcount, b.state.pincount, b.zone, b.state.flags
            )?;
            match &b.attributed {
                Some((p, who)) => writeln!(f, " owner=pfn {p:#x} by {who}")?,
                None => writeln!(f, " owner=unattributed")?,
            }
        }
        let groups = self.by_acquirer();
        if groups.len() > 1 || groups.first().is_some_and(|g| g.acquirer.is_some()) {
            writeln!(f, "  in the way, by acquirer:")?;
            for (i, g) in groups.iter().enumerate() {
                let who = g.acquirer.map_or_else(|| "(unattributed)".to_owned(), |a| a.to_string());
                writeln!(f, "    {}. {who}: {} blocks, {} refs, {} pins", i + 1, g.blocks, g.refs, g.pins)?;
            }
        }
        if let Some(w) = &self.waited {
            writeln!(
                f,
                "  waited {:.3}s: {} attempts, {} releases of armed blocks, {} events recorded",
                w.waited.as_secs_f64(),
                w.attempts,
                w.releases,
                w.events
            )?;
        }
        write!(
            f,
            "{} busy pages in {} blocks; {} holders ({} pins), {} attributed; {} windows considered",
            self.busy_pages(),
            self.busy.len(),
            self.holders(),
            self.pins(),
            self.attributed(),
            self.windows_considered
        )
    }
}

/// Why a reservation failed.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ContigError {
    /// A reservation of zero pages.
    #[error("a reservation needs at least one page")]
    ZeroPages,
    /// The alignment is not a power of two.
    #[error("alignment {align} is not a power of two")]
    BadAlign {
        /// The alignment asked for.
        align: usize,
    },
    /// The window is not inside one zone of the arena.
    #[error("window {start:#x}..{end:#x} is not inside one zone of the arena ({pages} pages)")]
    OutOfRange {
        /// First page.
        start: Pfn,
        /// One past the last page.
        end: Pfn,
        /// Pages in the arena.
        pages: usize,
    },
    /// More pages than the movable zone has.
    #[error("{pages} pages is more than the movable zone's {zone_pages}")]
    TooLarge {
        /// Pages asked for.
        pages: usize,
        /// Pages in the movable zone.
        zone_pages: usize,
    },
    /// The movable zone has room for the pages, but no window of them
    /// starts on a multiple of the alignment.
    #[error(
        "no window of {pages} pages aligned to {align} pages fits the movable zone {zone_start:#x}..{zone_end:#x}"
    )]
    NoAlignedWindow {
        /// Pages asked for.
        pages: usize,
        /// The alignment asked for, in pages.
        align: usize,
        /// The movable zone's first page.
        zone_start: Pfn,
        /// One past the movable zone's last page.
        zone_end: Pfn,
    },
    /// [`PageArena::reserve_contig_wait`]'s timeout passed while another
    /// reservation of the zone was still running, before this one could
    /// make its first attempt.
    #[error("timed out after {waited:?} waiting for another reservation of the {zone} zone")]
    Timeout {
        /// The zone.
        zone: ZoneKind,
        /// Time spent waiting.
        waited: Duration,
    },
    /// The window overlaps a run already reserved.
    #[error("window {start:#x}..{end:#x} overlaps the reserved run at {run:#x}")]
    Overlap {
        /// First page.
        start: Pfn,
        /// One past the last page.
        end: Pfn,
        /// A page of the reserved run.
        run: Pfn,
    },
    /// Pages in the window are held.
    #[error("{0}")]
    Busy(Box<ContigFailure>),
}

/// A committed contiguous run of pages, owned: dropping it frees the run.
#[must_use = "dropping a run frees it"]
#[derive(Debug)]
pub struct ContigRun<A: ArenaRef> {
    arena: A,
    start: u32,
    pages: u32,
    /// The run's blocks: head, generation of our reference.
    blocks: Vec<(u32, u16)>,
}

impl<A: ArenaRef> ContigRun<A> {
    /// The arena.
    pub fn arena(&self) -> &A {
        &self.arena
    }

    /// The first page.
    pub fn pfn(&self) -> Pfn {
        self.start as Pfn
    }

    /// Pages in the run.
    pub fn pages(&self) -> usize {
        self.pages as usize
    }

    /// The page range.
    pub fn range(&self) -> Range<Pfn> {
        self.start as Pfn..(self.start + self.pages) as Pfn
    }

    /// Bytes in the run.
    pub fn len(&self) -> usize {
        self.pages() << self.arena.page_shift
    }

    /// Always false.
    pub fn is_empty(&self) -> bool {
        false
    }

    /// A raw pointer to the run's first byte.
    pub fn as_ptr(&self) -> core::ptr::NonNull<u8> {
        let off = (self.start as usize) << self.arena.page_shift;
        self.arena.region.ptr(off, self.len()).cast()
    }
}

impl<A: ArenaRef> Drop for ContigRun<A> {
    fn drop(&mut self) {
        for &(head, gen) in &self.blocks {
            // The run ends here: a block someone else still holds (a page
            // lent out by reference) is an ordinary busy block from now on,
            // not part of a run that no longer exists. We hold a count, so
            // the block is live and this read-modify-write is ours to make.
            self.arena.desc(head).state.fetch_and(!CONTIG, Relaxed);
            self.arena.release(head, head, state::Count::Ref, Some(gen));
        }
    }
}

impl PageArena {
    /// Reserves `pages` contiguous pages starting at `start` (any zone, the
    /// window must lie inside one).
    ///
    /// # Errors
    ///
    /// [`ContigError`]: bad geometry, an overlap with a reserved run, or
    /// [`ContigError::Busy`] naming every busy block of the window. The arena
    /// is left exactly as before on error.
    #[track_caller]
    pub fn reserve_range(
        &self,
        start: Pfn,
        pages: usize,
        reason: Reason,
    ) -> Result<ContigRun<&PageArena>, ContigError> {
        let (who, ask) = (crate::owner_here(), Ask::range("reserve_range", start, pages, reason, None));
        self.observed(ask, || self.reserve_range_as(start, pages, reason, who, None))
    }

    /// `wait`: as for `reserve_contig_as`.
    fn reserve_range_as(
        &self,
        start: Pfn,
        pages: usize,
        reason: Reason,
        who: Acquirer,
        wait: Option<(Instant, Instant)>,
    ) -> Result<ContigRun<&PageArena>, ContigError> {
        let zone = self.window_zone(start, pages)?;
        let request = Request { reason, pages, align: 0, start: Some(start) };
        let _serial = Self::reserving(zone, wait)?;
        self.reserve_window(zone, start as u32, pages as u32, request, 1, who, wait.map(|(_, d)| d))
    }

    /// Takes `zone`'s reservation lock (one reservation of a zone at a
    /// time), waiting until the deadline of `wait` (started, deadline) at
    /// most.
    fn reserving(zone: &Zone, wait: Option<(Instant, Instant)>) -> Result<impl Sized + '_, ContigError> {
        zone.reserving.lock_until(wait.map(|(_, d)| d)).ok_or_else(|| ContigError::Timeout {
            zone: zone.kind,
            waited: wait.map_or(Duration::ZERO, |(started, _)| started.elapsed()),
        })
    }

    /// Reserves `pages` contiguous pages aligned to `align` pages in the
    /// movable zone, choosing the best window: the one with the fewest busy
    /// pages (then the fewest holders).
    ///
    /// # Errors
    ///
    /// As for [`reserve_range`](Self::reserve_range); a failure names the
    /// best window's busy blocks.
    #[track_caller]
    pub fn reserve_contig(
        &self,
        pages: usize,
        align: usize,
        reason: Reason,
    ) -> Result<ContigRun<&PageArena>, ContigError> {
        let (who, ask) = (crate::owner_here(), Ask::contig("reserve_contig", pages, align, reason, None));
        self.observed(ask, || self.reserve_contig_as(pages, align, reason, who, None))
    }

    /// `wait`: when the caller gives up (start, deadline); `None` waits as
    /// long as it takes, which is only as long as other reservations of the
    /// zone and blocks in flight take.
    fn reserve_contig_as(
        &self,
        pages: usize,
        align: usize,
        reason: Reason,
        who: Acquirer,
        wait: Option<(Instant, Instant)>,
    ) -> Result<ContigRun<&PageArena>, ContigError> {
        if pages == 0 {
            return Err(ContigError::ZeroPages);
        }
        if !align.is_power_of_two() {
            return Err(ContigError::BadAlign { align });
        }
        let zone = self.zone(ZoneKind::Movable);
        if pages > zone.pages() as usize {
            return Err(ContigError::TooLarge { pages, zone_pages: zone.pages() as usize });
        }
        let first = (zone.start as usize).next_multiple_of(align);
        if first.checked_add(pages).is_none_or(|end| end > zone.end as usize) {
            return Err(ContigError::NoAlignedWindow {
                pages,
                align,
                zone_start: zone.start as Pfn,
                zone_end: zone.end as Pfn,
            });
        }
        let deadline = wait.map(|(_, d)| d);
        let _serial = Self::reserving(zone, wait)?;
        // Rank candidate windows (with no other reservation of the zone
        // running, so a run another one just committed is seen): windows
        // that overlap a committed run last, then by busy pages, then by
        // holders. Read without the zone lock; the chosen window is then
        // reserved properly.
        let mut best: Option<(WindowLoad, u32)> = None;
        let mut considered = 0;
        let mut w = first;
        while w + pages <= zone.end as usize {
            considered += 1;
            let load = self.window_load(w as u32, (w + pages) as u32);
            if best.as_ref().is_none_or(|(b, _)| load.key() < b.key()) {
                best = Some((load, w as u32));
            }
            if load.key() == (false, 0, 0) {
                break;
            }
            w += align;
        }
        let (load, start) = best.expect("at least one aligned window fits");
        if let Some(run) = load.run {
            // Every window overlaps a committed run: no release of a holder
            // can make this succeed, only the run's drop.
            let end = start as Pfn + pages;
            return Err(ContigError::Overlap { start: start as Pfn, end, run: run as Pfn });
        }
        let request = Request { reason, pages, align, start: None };
        self.reserve_window(zone, start, pages as u32, request, considered, who, deadline)
    }

    /// Like [`reserve_contig`](Self::reserve_contig), but on failure waits
    /// until a window can be reserved, or until `timeout` has passed: the
    /// failure arms the blocking pages, and every release of an armed block
    /// and every block freed in the movable zone while someone waits wakes
    /// the waiter (a notification, not a sleep loop) to try again, choosing
    /// the best window anew each time. (As a safety net against a missed
    /// notification it also looks again every 50 ms.)
    ///
    /// # Errors
    ///
    /// As for [`reserve_contig`](Self::reserve_contig); on timeout the last
    /// failure, with [`ContigFailure::waited`] saying what happened while
    /// waiting.
    ///
    /// ```
    /// use std::time::Duration;
    /// use pinowner::{PageArena, Reason};
    ///
    /// let arena = PageArena::builder().pages(64).movable_pages(32).build()?;
    /// let block = arena.alloc_movable(0)?;
    /// std::thread::scope(|s| {
    ///     s.spawn(move || {
    ///         std::thread::sleep(Duration::from_millis(20));
    ///         drop(block); // wakes the waiter
    ///     });
    ///     let run = arena.reserve_contig_wait(32, 32, Reason::Contig, Duration::from_secs(10));
    ///     assert_eq!(run.map(|r| r.pages()), Ok(32));
    /// });
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    #[track_caller]
    pub fn reserve_contig_wait(
        &self,
        pages: usize,
        align: usize,
        reason: Reason,
        timeout: Duration,
    ) -> Result<ContigRun<&PageArena>, ContigError> {
        let (who, ask) = (crate::owner_here(), Ask::contig("reserve_contig_wait", pages, align, reason, Some(timeout)));
        self.observed(ask, || {
            self.wait_for_run(self.zone(ZoneKind::Movable), timeout, |wait| {
                self.reserve_contig_as(pages, align, reason, who, wait)
            })
        })
    }

    /// Like [`reserve_range`](Self::reserve_range), but on failure waits
    /// until the range can be reserved, or until `timeout` has passed (a
    /// buffer pool shrinking its top frames wants exactly those). Woken as
    /// [`reserve_contig_wait`](Self::reserve_contig_wait) is. A wait after
    /// a failed `reserve_range` of the same range continues that failure's
    /// arming instead of adding one.
    ///
    /// # Errors
    ///
    /// As for [`reserve_range`](Self::reserve_range); on timeout the last
    /// failure, with [`ContigFailure::waited`].
    #[track_caller]
    pub fn reserve_range_wait(
        &self,
        start: Pfn,
        pages: usize,
        reason: Reason,
        timeout: Duration,
    ) -> Result<ContigRun<&PageArena>, ContigError> {
        let (who, ask) = (crate::owner_here(), Ask::range("reserve_range_wait", start, pages, reason, Some(timeout)));
        self.observed(ask, || {
            let zone = self.window_zone(start, pages)?;
            self.wait_for_run(zone, timeout, |wait| self.reserve_range_as(start, pages, reason, who, wait))
        })
    }

    /// The wait of `reserve_*_wait`: `attempt` (given when the wait began
    /// and its deadline) until it succeeds or fails other than busy, or
    /// the timeout passes; in between, sleeps until an armed block is
    /// released or a block of `zone` is freed.
    fn wait_for_run<'a>(
        &'a self,
        zone: &Zone,
        timeout: Duration,
        mut attempt: impl FnMut(Option<(Instant, Instant)>) -> Result<ContigRun<&'a PageArena>, ContigError>,
    ) -> Result<ContigRun<&'a PageArena>, ContigError> {
        /// The longest sleep between looks: a safety net for a notification
        /// missed on a path that cannot order itself with the waiter.
        const POLL: Duration = Duration::from_millis(50);
        let started = Instant::now();
        // A timeout too large to add is no deadline at all.
        let deadline = started.checked_add(timeout);
        let wait = deadline.map(|d| (started, d));
        let events_before = self.tracker_stats().recorded;
        let _waiting = zone.wait();
        let mut attempts = 0;
        let mut releases = 0;
        let mut last: Option<Box<ContigFailure>> = None;
        loop {
            if attempts > 0 {
                crate::stats::ReserveCounters::bump(&self.reserve_counters.retried, 1);
            }
            // Read before the attempt: a release after this moves the epoch.
            let epoch = self.tracker.get().map_or(0, |t| t.release_epoch());
            match attempt(wait) {
                Err(ContigError::Busy(f)) => last = Some(f),
                // The deadline passed waiting for another reservation of the
                // zone: the last failure of ours, if there was one.
                Err(ContigError::Timeout { .. }) if last.is_some() => {}
                other => return other,
            }
            attempts += 1;
            let failure = last.as_ref().expect("a failure was just kept");
            let now = Instant::now();
            if deadline.is_some_and(|d| now >= d) {
                let mut failure = last.take().expect("a failure was just kept");
                failure.waited = Some(WaitLog {
                    waited: now - started,
                    attempts,
                    releases,
                    events: self.tracker_stats().recorded - events_before,
                });
                return Err(ContigError::Busy(failure));
            }
            // A holder that let go between the test and the arming was not
            // recorded: look at the window again before sleeping.
            let load = self.window_load(failure.window.start as u32, failure.window.end as u32);
            if (load.busy, load.holders) < (failure.busy_pages(), failure.holders()) {
                continue;
            }
            let left = deadline.map_or(POLL, |d| (d - now).min(POLL));
            if self.tracker().wait_release(epoch, left) {
                releases += 1;
            }
        }
    }

    fn window_zone(&self, start: Pfn, pages: usize) -> Result<&Zone, ContigError> {
        if pages == 0 {
            return Err(ContigError::ZeroPages);
        }
        let end = start.saturating_add(pages);
        let err = ContigError::OutOfRange { start, end, pages: self.pages() };
        if end > self.pages() {
            return Err(err);
        }
        let zone = self.zone_for(start as u32);
        if end > zone.end as usize {
            return Err(err);
        }
        Ok(zone)
    }

    /// Busy pages and holders in a window, and a committed run in it, read
    /// without locks.
    fn window_load(&self, start: u32, end: u32) -> WindowLoad {
        let mut load = WindowLoad { busy: 0, holders: 0, run: None };
        self.for_each_block(start, end, |head, w| {
            if w & FREE == 0 {
                let last = (head + (1u32 << state::order(w))).min(end);
                load.busy += (last - head.max(start)) as usize;
                load.holders += state::refs(w) + state::pins(w);
                if w & CONTIG != 0 && load.run.is_none() {
                    load.run = Some(head);
                }
            }
        });
        load
    }

    /// Reserves one window. The caller holds the zone's `reserving` lock,
    /// so no other reservation touches the zone until this one has
    /// committed or rolled back. `deadline`: a block in flight (being freed
    /// by another thread) is waited for until then, and then counted busy.
    #[allow(clippy::too_many_arguments)]
    fn reserve_window(
        &self,
        zone: &Zone,
        start: u32,
        pages: u32,
        request: Request,
        considered: usize,
        who: Acquirer,
        deadline: Option<Instant>,
    ) -> Result<ContigRun<&PageArena>, ContigError> {
        let reason = request.reason;
        let end = start + pages;
        // Every pass holds the remote side of each of the zone's caches (one
        // `membarrier`) and the zone lock: `ISOLATED` is written with the
        // caches held, because allocating from a cache marks the page with
        // a plain store inside it (see `alloc::pcp`); and holding them until
        // commit or rollback has cleared `ISOLATED` keeps cached blocks
        // where the test saw them.
        let mut isolated = false;
        let mut backoff = crate::sync::Backoff::default();
        loop {
            let mut caches = self.lock_caches(zone);
            let mut area = zone.area.lock();
            // 1. isolate (first pass only).
            if !isolated {
                let mut run = None;
                self.for_each_block(start, end, |head, w| {
                    if w & CONTIG != 0 && run.is_none() {
                        run = Some(head);
                    }
                });
                if let Some(run) = run {
                    return Err(ContigError::Overlap { start: start as Pfn, end: end as Pfn, run: run as Pfn });
                }
                for q in start..end {
                    self.desc(q).state.fetch_or(ISOLATED, Relaxed);
                }
                self.isolate_free(&mut area, start, end);
                step("isolate", start, end, reason, 0);
                isolated = true;
            }
            // 2. drain the zone's per-thread caches (blocks in the window
            // land isolated); 3. migrate (hook: nothing movable yet);
            // 4. test; 5. commit or roll back.
            let drained = self.drain_caches(zone, &mut caches, &mut area);
            step("drain", start, end, reason, drained);
            // The migration hook: no holder is movable yet.
            step("migrate", start, end, reason, 0);
            // Blocks freed since isolation whose head lies outside the window
            // went to the lists: isolate them too.
            self.isolate_free(&mut area, start, end);
            let mut busy = Vec::new();
            let mut in_flight = Vec::new();
            self.for_each_block(start, end, |head, w| {
                if w & (FREE | PCP) == FREE | PCP || (w & FREE == 0 && w & COUNTS == 0) {
                    in_flight.push((head, w));
                } else if w & FREE == 0 {
                    busy.push((head, w));
                }
            });
            step("test", start, end, reason, busy.len());
            if !in_flight.is_empty() {
                // A page freed into a cache just before isolation reached it,
                // or a block whose last count is gone and whose freeing thread
                // waits for this lock: the arena's own bookkeeping, never a
                // reason to fail. Let the freeing thread finish (its window
                // stays isolated; the zone's `reserving` lock keeps other
                // reservations out of it meanwhile); the next pass isolates
                // the page. Only a caller's deadline ends the wait: then the
                // blocks still in flight count as busy.
                if deadline.is_none_or(|d| Instant::now() < d) {
                    drop(area);
                    drop(caches);
                    backoff.sleep();
                    continue;
                }
                busy.append(&mut in_flight);
                busy.sort_unstable_by_key(|&(h, _)| h);
            }
            if busy.is_empty() {
                let run = self.commit(&mut area, start, end, who);
                drop(area);
                step("commit", start, end, reason, 0);
                // The request is met: what its earlier failures armed
                // needs no more watching.
                self.disarm_request(reason, request.key());
                return Ok(run);
            }
            let failure = ContigFailure {
                reason,
                window: start as Pfn..end as Pfn,
                busy: busy.iter().map(|&(h, w)| self.busy_block(h, w, start, end)).collect(),
                windows_considered: considered,
                waited: None,
            };
            // Armed before the rollback, under the zone lock: a busy block
            // freed since the test is isolated and unlisted, so it cannot be
            // reallocated and armed for its next owner by mistake (arming
            // requires a live block).
            let heads: Vec<u32> = busy.iter().map(|&(h, _)| h).collect();
            self.arm_blocks(&heads, reason, start..end, Some(who), Some(request.key()));
            self.rollback(&mut area, zone, start, end);
            drop(area);
            drop(caches);
            step("rollback", start, end, reason, busy.len());
            return Err(ContigError::Busy(Box::new(failure)));
        }
    }

    /// Takes the free blocks of `start..end` off the lists (zone lock held);
    /// a block straddling an edge is split and its outside parts go back.
    fn isolate_free(&self, area: &mut FreeArea, start: u32, end: u32) {
        self.for_each_block(start, end, |head, w| {
            if w & (FREE | PCP) == FREE {
                let order = state::order(w);
                // Not listed if it was freed into the window after isolation,
                // but it may still straddle an edge.
                if area.is_listed(&self.descs, head, order) {
                    area.remove(&self.descs, head, order);
                }
                self.carve(area, head, order, start, end);
            }
        });
    }

    /// Splits a free, unlisted block so the parts outside the window return
    /// to the lists and the parts inside stay isolated and unlisted.
    fn carve(&self, area: &mut FreeArea, head: u32, order: u8, start: u32, end: u32) {
        let block_end = head + (1u32 << order);
        if head >= start && block_end <= end {
            area.mark_free_head(self.desc(head), order, 0);
            return;
        }
        if block_end <= start || head >= end {
            // Wholly outside: back on its list, flags outside the window clear.
            area.clear_isolated(self.desc(head));
            area.mark_free_head(self.desc(head), order, 0);
            area.push(&self.descs, head, order);
            return;
        }
        let half = order - 1;
        let upper = head + (1u32 << half);
        area.mark_free_head(self.desc(head), half, 0);
        area.mark_free_head(self.desc(upper), half, 0);
        self.carve(area, head, half, start, end);
        self.carve(area, upper, half, start, end);
    }

    fn busy_block(&self, head: u32, w: u64, start: u32, end: u32) -> BusyBlock {
        let order = state::order(w);
        let last = head + (1u32 << order);
        let hold = self.latest_hold(head, w);
        BusyBlock {
            head: head as Pfn,
            order,
            pages_in_window: head.max(start) as Pfn..last.min(end) as Pfn,
            state: PageState::from_word(w & !ISOLATED),
            zone: self.zone_for(head).kind,
            attributed: hold.map(|(a, _)| (head as Pfn, a)),
            attributed_pin: hold.is_some_and(|(_, pin)| pin),
        }
    }

    /// Clears the window's isolation bits (zone lock held).
    fn unisolate(&self, start: u32, end: u32) {
        for q in start..end {
            self.desc(q).state.fetch_and(!ISOLATED, Relaxed);
        }
    }

    /// Turns the isolated free blocks of the window into one run (zone lock
    /// held, every block of the window free and inside it).
    fn commit(&self, area: &mut FreeArea, start: u32, end: u32, who: Acquirer) -> ContigRun<&PageArena> {
        self.unisolate(start, end);
        let mut blocks = Vec::new();
        self.for_each_block(start, end, |head, w| {
            let word = area.mark_allocated(self.desc(head), state::order(w), CONTIG);
            self.desc(head).owner.store(slot::encode(who, state::gen(word), false), Relaxed);
            blocks.push((head, state::gen(word)));
        });
        ContigRun { arena: self, start, pages: end - start, blocks }
    }

    /// Undoes isolation: flags cleared, free blocks back on the lists.
    fn rollback(&self, area: &mut FreeArea, zone: &Zone, start: u32, end: u32) {
        // The window's free blocks that are off the lists (isolated, or freed
        // or drained into the window since) go back on the lists first,
        // unmerged, while still `ISOLATED`. Coalescing one right away could
        // meet a buddy that is itself still off the lists but no longer
        // looks isolated, and `remove` a block no list holds.
        let mut back = Vec::new();
        self.for_each_block(start, end, |head, w| {
            if w & (FREE | PCP) == FREE && !area.is_listed(&self.descs, head, state::order(w)) {
                back.push((head, state::order(w)));
            }
        });
        for &(head, order) in &back {
            area.push(&self.descs, head, order);
        }
        self.unisolate(start, end);
        // Now every free block of the window is listed: coalesce the ones
        // put back (unless an earlier one already merged them).
        for (head, order) in back {
            if area.is_listed(&self.descs, head, order) {
                area.remove(&self.descs, head, order);
                area.give(&self.descs, zone, head, order);
            }
        }
    }
}

/// Each step of a reservation is a `tracing` event (target
/// `pinowner::reserve`, level debug, inside the call's `reserve` span):
/// `isolate`, `drain` (pages drained), `migrate`, `test` (busy blocks), then
/// `commit` or `rollback` (busy blocks).
fn step(step: &'static str, start: u32, end: u32, reason: Reason, n: usize) {
    // Under the zone lock, with the window isolated: shielded from a
    // panicking subscriber.
    crate::callback::shielded(
        || tracing::debug!(target: "pinowner::reserve", step, start_pfn = start, end_pfn = end, %reason, n, "reservation step"),
    );
}

/// What stands in a window: busy pages, their holders, and a committed run.
#[derive(Clone, Copy, Debug)]
struct WindowLoad {
    busy: usize,
    holders: u32,
    /// A block of a committed run in the window.
    run: Option<u32>,
}

impl WindowLoad {
    /// Windows rank by this, least first.
    fn key(&self) -> (bool, usize, u32) {
        (self.run.is_some(), self.busy, self.holders)
    }
}
