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
//!    bookkeeping never fails a reservation). Steps 1, 2, 3 and 5 run
//!    holding every cache of the zone and the zone lock; one `membarrier`
//!    per pass.
//! 3. **test** — every block of the window must be free.
//! 4. **migrate** — if every busy block may move (a [`MovableBlock`]
//!    held only by its handles, none borrowing), the locks are let go and
//!    each is moved out of the window (see [`crate::migrate`]): the window
//!    stays isolated, so the freed pages land in it; then back to step 2.
//!    At most ten such passes (the kernel's `migrate_pages` tries ten); a
//!    block that cannot move (pinned, not movable, held without a mover,
//!    refused) fails the window without moving the others for nothing.
//! 5. **commit** the free blocks into a [`ContigRun`], or **roll back**
//!    completely: isolation cleared, every free block back on the lists,
//!    coalesced. A failure names every block in the way and why it
//!    stayed ([`BusyBlock::why`]).
//!
//! [`MovableBlock`]: crate::MovableBlock

use std::collections::HashMap;

mod discard;
mod observe;
mod owned;
use std::time::{Duration, Instant};

use crate::alloc::{FreeArea, Zone, ZoneKind};
use crate::migrate::{Dest, Unmovable};
use crate::page::slot::{self, Who};
use crate::page::state::{self, CONTIG, COUNTS, FREE, ISOLATED, PCP};
use crate::page::PageState;
use crate::sync::Ordering::Relaxed;
use crate::{PageArena, Pfn};
use observe::Ask;

mod run;

pub use run::ContigRun;

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
pub(crate) struct Request {
    pub(crate) reason: Reason,
    pub(crate) pages: usize,
    pub(crate) align: usize,
    pub(crate) start: Option<Pfn>,
}

impl Request {
    fn key(&self) -> crate::tracker::RequestKey {
        (self.pages, self.align, self.start)
    }
}

mod failure;

pub use failure::{AcquirerGroup, BusyBlock, ContigError, ContigFailure, WaitLog};

impl PageArena {
    /// Reserves `pages` contiguous pages starting at `start` (any zone, the
    /// window must lie inside one).
    ///
    /// # Errors
    ///
    /// [`ContigError`]: bad geometry, an overlap with a reserved run, or
    /// [`ContigError::Busy`] naming every busy block of the window. The arena
    /// is left exactly as before on error.
    ///
    /// ```
    /// use pinowner::{ContigError, PageArena, Reason};
    ///
    /// let arena = PageArena::builder().pages(64).build()?;
    /// let held = arena.alloc(0)?;
    /// let e = arena.reserve_range(held.pfn(), 8, Reason::Contig).unwrap_err();
    /// let ContigError::Busy(failure) = e else { panic!("{e}") };
    /// assert_eq!(failure.busy[0].head, held.pfn(), "names the page in the way");
    /// assert_eq!(arena.free_pages(), 63, "and rolls back");
    /// let run = arena.reserve_range(held.pfn() + 1, 8, Reason::Contig)?;
    /// assert_eq!(run.range(), held.pfn() + 1..held.pfn() + 9);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
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
        who: Who,
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
    pub(crate) fn reserving(zone: &Zone, wait: Option<(Instant, Instant)>) -> Result<impl Sized + '_, ContigError> {
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
    ///
    /// ```
    /// use pinowner::{ContigError, PageArena, Reason};
    ///
    /// let arena = PageArena::builder().pages(128).movable_pages(64).build()?;
    /// // One page pinned in the first 32-page window of the movable zone, two
    /// // in the second: the best window is the one with the fewest busy pages.
    /// let frames: Vec<_> = (0..64).map(|_| arena.alloc_movable(0)).collect::<Result<_, _>>()?;
    /// let pins = [arena.pin(70)?, arena.pin(100)?, arena.pin(101)?];
    /// drop(frames);
    /// let Err(ContigError::Busy(f)) = arena.reserve_contig(32, 32, Reason::Contig) else { panic!() };
    /// assert_eq!((f.window.clone(), f.busy_pages(), f.windows_considered), (64..96, 1, 2));
    /// drop(pins);
    /// assert_eq!(arena.reserve_contig(32, 32, Reason::Contig)?.pfn() % 32, 0);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
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
        who: Who,
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
        // that overlap a committed run last, then by busy pages that cannot
        // move, then by busy pages, then by holders. Read without the zone lock; the chosen window is then
        // reserved properly.
        let mut best: Option<(WindowLoad, u32)> = None;
        let mut considered = 0;
        let mut w = first;
        while w + pages <= zone.end as usize {
            considered += 1;
            let load = self.window_load_below(w as u32, (w + pages) as u32, best.as_ref().map(|(b, _)| b.key()));
            if best.as_ref().is_none_or(|(b, _)| load.key() < b.key()) {
                best = Some((load, w as u32));
            }
            if load.key() == (false, 0, 0, 0) {
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
        let r = self.reserve_window(zone, start, pages as u32, request, considered, who, deadline);
        match r {
            Err(ContigError::Busy(mut f)) if load.unmovable > 0 => {
                // Every window had something that cannot move: name it in
                // the others too, so one failure lists every holder to ask.
                let mut w = first;
                let mut windows = 0;
                f.elsewhere.reserve(MAX_ELSEWHERE.min(considered));
                while w + pages <= zone.end as usize && windows < MAX_ELSEWHERE {
                    let (ws, we) = (w as u32, (w + pages) as u32);
                    if ws != start {
                        windows += 1;
                        self.for_each_block(ws, we, |head, word| {
                            if word & FREE == 0 && word & COUNTS != 0 {
                                if let Some(why) = self.why_unmovable(head, word) {
                                    f.elsewhere.push(self.busy_block(head, word, ws, we, why));
                                }
                            }
                        });
                    }
                    w += align;
                }
                Err(ContigError::Busy(f))
            }
            r => r,
        }
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
    /// // A block that keeps its address (a movable one would just move).
    /// let block = arena.alloc_movable(0)?.into_block();
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
    ///
    /// ```
    /// use std::time::Duration;
    /// use pinowner::{ContigError, PageArena, Reason};
    ///
    /// let arena = PageArena::builder().pages(64).build()?;
    /// let held = arena.alloc(0)?;
    /// let start = held.pfn();
    /// // Nobody lets go: the wait times out with the failure and what it saw.
    /// let Err(ContigError::Busy(f)) = arena.reserve_range_wait(start, 4, Reason::Shrink, Duration::from_millis(20))
    /// else { panic!() };
    /// assert!(f.waited.unwrap().attempts >= 1);
    /// // The holder lets go while we wait: the release wakes the waiter.
    /// std::thread::scope(|s| {
    ///     s.spawn(move || drop(held));
    ///     let run = arena.reserve_range_wait(start, 4, Reason::Shrink, Duration::from_secs(10));
    ///     assert_eq!(run.map(|r| r.pfn()), Ok(start));
    /// });
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
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
    pub(crate) fn window_load(&self, start: u32, end: u32) -> WindowLoad {
        self.window_load_below(start, end, None)
    }

    /// [`window_load`](Self::window_load), cut short once the window's
    /// key reaches `bound`: every part of the key only grows as the walk
    /// goes on, so such a window cannot rank strictly better (the ranking
    /// keeps the first of equals), and its partial load is enough to say
    /// so.
    fn window_load_below(&self, start: u32, end: u32, bound: Option<(bool, usize, usize, u32)>) -> WindowLoad {
        let mut load = WindowLoad { unmovable: 0, busy: 0, holders: 0, run: None };
        self.walk_blocks(start, end, |head, w| {
            if w & FREE == 0 {
                let last = (head + (1u32 << state::order(w))).min(end);
                let pages = (last - head.max(start)) as usize;
                load.busy += pages;
                if w & COUNTS != 0 && self.why_unmovable(head, w).is_some() {
                    load.unmovable += pages;
                }
                load.holders += state::refs(w) + state::pins(w);
                if w & CONTIG != 0 && load.run.is_none() {
                    load.run = Some(head);
                }
                if bound.is_some_and(|b| load.key() >= b) {
                    return false;
                }
            }
            true
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
        who: Who,
        deadline: Option<Instant>,
    ) -> Result<ContigRun<&PageArena>, ContigError> {
        self.clear_window(zone, start, pages, request, considered, who, deadline, true)
            .map(|run| run.expect("a committed window is a run"))
    }

    /// Clears one window: isolates it, moves what is movable out of it,
    /// and then commits it as a run (`commit`), or only lets it go as free
    /// blocks, coalesced (compaction). The caller holds the zone's
    /// `reserving` lock. A failure arms the blocks in the way only when
    /// committing (a compaction's failure is nobody's request).
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn clear_window(
        &self,
        zone: &Zone,
        start: u32,
        pages: u32,
        request: Request,
        considered: usize,
        who: Who,
        deadline: Option<Instant>,
        commit: bool,
    ) -> Result<Option<ContigRun<&PageArena>>, ContigError> {
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
        // Migration: passes that moved blocks (bounded like `migrate_pages`'
        // ten tries), blocks that will not move (not tried again), and the
        // last reason each block stayed.
        let mut passes = 0;
        let mut stuck: HashMap<u32, Unmovable> = HashMap::new();
        let mut stayed: HashMap<u32, Unmovable> = HashMap::new();
        let mut tried = std::collections::HashSet::new();
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
                self.isolate(start, end);
                self.isolate_free(&mut area, start, end);
                step("isolate", start, end, reason, 0);
                isolated = true;
            }
            // 2. drain the zone's per-thread caches (blocks in the window
            // land isolated); then test; 3. migrate what is movable and test
            // again; 4. commit or roll back.
            let drained = self.drain_caches(zone, &mut caches, &mut area);
            step("drain", start, end, reason, drained);
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
            let time_left = deadline.is_none_or(|d| Instant::now() < d);
            if !in_flight.is_empty() && area.reporting_pages != 0 {
                // A free page report batch is out: wait for it, whatever
                // the deadline (see `crate::reporting`), and test again.
                drop(area);
                drop(caches);
                self.wait_for_report_batch(zone);
                continue;
            }
            if !in_flight.is_empty() {
                // A page freed into a cache just before isolation reached it,
                // or a block whose last count is gone and whose freeing thread
                // waits for this lock: the arena's own bookkeeping, never a
                // reason to fail. Let the freeing thread finish (its window
                // stays isolated; the zone's `reserving` lock keeps other
                // reservations out of it meanwhile); the next pass isolates
                // the page. Only a caller's deadline ends the wait: then the
                // blocks still in flight count as busy.
                if time_left {
                    drop(area);
                    drop(caches);
                    backoff.sleep();
                    continue;
                }
                for &(h, _) in &in_flight {
                    stayed.insert(h, Unmovable::InFlight);
                }
                busy.append(&mut in_flight);
                busy.sort_unstable_by_key(|&(h, _)| h);
            }
            if busy.is_empty() && !commit {
                self.rollback(&mut area, zone, start, end);
                drop(area);
                step("release", start, end, reason, 0);
                return Ok(None);
            }
            if busy.is_empty() {
                let run = self.commit(&mut area, start, end, who);
                drop(area);
                step("commit", start, end, reason, 0);
                // The request is met: what its earlier failures armed
                // needs no more watching.
                self.disarm_request(reason, request.key());
                return Ok(Some(run));
            }
            // 3. migrate: with no lock held but the zone's `reserving` (the
            // window stays isolated, so a moved block's old pages land in it
            // and no destination is taken from it), then test again.
            // Only when every busy block may move: one that cannot fails
            // the window anyway, and moving the others would be copying for
            // nothing. A movable block held for now by a pin or a count
            // without a mover (a query's short pin, an I/O in flight) may
            // be let go soon: the pass waits and tests again, as
            // `migrate_pages` retries a page whose count is raised.
            let mut movable = Vec::new();
            let mut held_for_now = 0;
            for &(h, w) in &busy {
                if stuck.contains_key(&h) {
                    continue;
                }
                match self.why_unmovable(h, w) {
                    None => movable.push((h, state::order(w))),
                    Some(Unmovable::Pinned | Unmovable::NoMover { .. }) if self.is_movable_allocation(h, w) => {
                        held_for_now += 1;
                    }
                    Some(_) => {}
                }
            }
            let may_clear = movable.len() + held_for_now == busy.len();
            // The deadline bounds waiting, not trying: the first pass moves
            // what can move now even if the deadline has passed (a zero
            // timeout does what a reservation without one does once).
            if may_clear && passes < MIGRATE_PASSES && (time_left || passes == 0) {
                drop(area);
                drop(caches);
                passes += 1;
                if held_for_now > 0 {
                    step("migrate", start, end, reason, 0);
                    migrate_wait(passes);
                    continue;
                }
                let mut moved = 0;
                for (head, order) in movable.iter().copied() {
                    tried.insert(head);
                    match self.migrate_block(head, reason, Dest::Any) {
                        Ok(_) => {
                            moved += 1;
                            crate::migrate::count_moved_here(order);
                        }
                        // Tried again on the next pass: what may end by
                        // itself soon (`migrate_pages`' -EAGAIN). No memory
                        // for a destination is not retried (its -ENOMEM).
                        // A count taken meanwhile is retried the same way.
                        Err(
                            why @ (Unmovable::Borrowed
                            | Unmovable::Refused { temporary: true, .. }
                            | Unmovable::Pinned
                            | Unmovable::NoMover { .. }),
                        ) => {
                            stayed.insert(head, why);
                        }
                        Err(why) => {
                            stuck.insert(head, why);
                        }
                    }
                }
                step("migrate", start, end, reason, moved);
                if moved == 0 {
                    migrate_wait(passes);
                }
                continue;
            }
            // The blocks in the way, each with why it stayed; blocks that
            // could have moved (had the others) are only counted.
            let mut in_the_way = Vec::new();
            let mut could_move = 0;
            for &(h, w) in &busy {
                let why = stuck.get(&h).or(stayed.get(&h)).copied().or_else(|| self.why_unmovable(h, w));
                match why {
                    Some(why) => in_the_way.push(self.busy_block(h, w, start, end, why)),
                    None if tried.contains(&h) => {
                        // Every pass ran out with this block movable but
                        // never moved: a borrow or a race each time.
                        in_the_way.push(self.busy_block(h, w, start, end, Unmovable::Borrowed));
                    }
                    None => could_move += 1,
                }
            }
            let failure = ContigFailure {
                reason,
                window: start as Pfn..end as Pfn,
                busy: in_the_way,
                movable: could_move,
                elsewhere: Vec::new(),
                windows_considered: considered,
                waited: None,
            };
            // Armed before the rollback, under the zone lock: a busy block
            // freed since the test is isolated and unlisted, so it cannot be
            // reallocated and armed for its next owner by mistake (arming
            // requires a live block).
            if commit {
                if self.tracker.get().is_none() {
                    // The first failure to arm anything builds the tracker:
                    // its event ring (up to 16 Mi events, written slot by
                    // slot), page side table and depot. Built with no lock
                    // held (the window stays isolated under `reserving`),
                    // then the locks are taken again, in their order:
                    // built under the zone lock and the zone's caches, it
                    // stalled every allocation of the zone for as long
                    // (162 ms at 1 Mi events). What was freed meanwhile
                    // landed isolated and is not live, so it is not armed.
                    drop(area);
                    drop(caches);
                    self.tracker();
                    caches = self.lock_caches(zone);
                    area = zone.area.lock();
                }
                let heads: Vec<u32> = failure.busy.iter().map(|b| b.head as u32).collect();
                self.arm_blocks(&heads, reason, start..end, who.acquirer(), Some(request.key()));
            }
            self.rollback(&mut area, zone, start, end);
            drop(area);
            drop(caches);
            step("rollback", start, end, reason, failure.busy.len());
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
            // Isolated: a split may just have made this page a head.
            area.mark_free_head(self.desc(head), order, ISOLATED);
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

    fn busy_block(&self, head: u32, w: u64, start: u32, end: u32, why: Unmovable) -> BusyBlock {
        let order = state::order(w);
        let last = head + (1u32 << order);
        let hold = self.latest_hold(head, w);
        let why = if self.is_quarantined(head) { Unmovable::Quarantined } else { why };
        BusyBlock {
            head: head as Pfn,
            order,
            pages_in_window: head.max(start) as Pfn..last.min(end) as Pfn,
            state: PageState::from_word(w & !ISOLATED),
            zone: self.zone_for(head).kind,
            attributed: hold.map(|(a, _)| (head as Pfn, a)),
            attributed_pin: hold.is_some_and(|(_, pin)| pin),
            why,
        }
    }

    /// Marks the window isolated (zone lock and caches held): `ISOLATED`
    /// on the head of every block that starts in it, as the kernel marks
    /// pageblocks rather than pages. That is every page a free decides by:
    /// a freed block's head. A block whose head lies before the window is
    /// not marked; if it is freed it goes to the lists, and the next
    /// `isolate_free` pulls it back and carves it (which marks the heads it
    /// makes inside the window).
    fn isolate(&self, start: u32, end: u32) {
        self.for_each_block(start, end, |head, _| {
            if head >= start {
                self.desc(head).state.fetch_or(ISOLATED, Relaxed);
            }
        });
    }

    /// Clears the window's isolation bits (zone lock held). While a window
    /// is isolated, blocks in it split (carving) but never merge, so the
    /// marked pages are heads of blocks starting in it.
    fn unisolate(&self, start: u32, end: u32) {
        self.for_each_block(start, end, |head, w| {
            if w & ISOLATED != 0 {
                self.desc(head).state.fetch_and(!ISOLATED, Relaxed);
            }
        });
    }

    /// Turns the isolated free blocks of the window into one run (zone lock
    /// held, every block of the window free and inside it).
    fn commit(&self, area: &mut FreeArea, start: u32, end: u32, who: Who) -> ContigRun<&PageArena> {
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
/// `isolate`, `drain` (pages drained), `test` (busy blocks), `migrate`
/// (blocks moved; only when there is something to move, then `drain` and
/// `test` again), then `commit` or `rollback` (blocks in the way).
fn step(step: &'static str, start: u32, end: u32, reason: Reason, n: usize) {
    // Under the zone lock, with the window isolated: shielded from a
    // panicking subscriber.
    crate::callback::shielded(
        || tracing::debug!(target: "pinowner::reserve", step, start_pfn = start, end_pfn = end, %reason, n, "reservation step"),
    );
}

/// Other windows whose unmovable blocks a failed `reserve_contig` names, at
/// most.
const MAX_ELSEWHERE: usize = 64;

/// Passes of a reservation that move blocks out of its window, at most (the
/// kernel's `migrate_pages` tries ten times; three in the loom models, which
/// explore every interleaving of each pass).
#[cfg(not(loom))]
const MIGRATE_PASSES: u32 = 10;
#[cfg(loom)]
const MIGRATE_PASSES: u32 = 3;

/// Between migration passes that could not move everything: 20 µs, doubling
/// up to 5 ms (about 15 ms over ten passes), for a short pin or a borrow to
/// end.
fn migrate_wait(pass: u32) {
    #[cfg(not(loom))]
    std::thread::sleep(Duration::from_micros(20 << pass.min(8)));
    #[cfg(loom)]
    {
        let _ = pass;
        crate::sync::yield_now();
    }
}

/// What stands in a window: busy pages, their holders, and a committed run.
#[derive(Clone, Copy, Debug)]
pub(crate) struct WindowLoad {
    /// Busy pages that cannot be moved out.
    pub(crate) unmovable: usize,
    pub(crate) busy: usize,
    holders: u32,
    /// A block of a committed run in the window.
    pub(crate) run: Option<u32>,
}

impl WindowLoad {
    /// Windows rank by this, least first.
    fn key(&self) -> (bool, usize, usize, u32) {
        (self.run.is_some(), self.unmovable, self.busy, self.holders)
    }
}
