//! Free page reporting: giving the memory of free blocks back to the
//! operating system, in small batches, without ever failing a reservation
//! (the kernel's free page reporting, Duyck and Hildenbrand, 2019).
//!
//! A pass ([`PageArena::report_free`], or a background [`Reporter`]) walks
//! each zone's free lists from the largest order down to
//! [`Reporting::min_order`] (by default the 2 MiB order, the kernel's
//! pageblock order, capped by the arena's largest). For each batch of at
//! most [`Reporting::batch`] blocks (default 32, the kernel's
//! `PAGE_REPORTING_CAPACITY`) it:
//!
//! 1. takes the zone's batch lock and, under the zone lock, pulls unreported
//!    blocks off the lists: each head now reads `FREE | PCP` and is on no
//!    list, so no allocation, cache or merge can take it;
//! 2. without the zone lock, gives their memory back with the one mechanism
//!    [`Block::discard`](crate::Block::discard) uses (`madvise`:
//!    `MADV_DONTNEED` or `MADV_FREE`, [`Reporting::how`]), and with
//!    `MADV_DONTNEED` marks the pages `ZEROED`, so
//!    [`alloc_zeroed`](PageArena::alloc_zeroed) neither writes nor faults
//!    them in;
//! 3. under the zone lock, puts the blocks back at the front of their lists,
//!    in the *reported* part (the per-order boundary), their pages marked
//!    `REPORTED`, and lets go of the batch lock.
//!
//! Reported blocks are never looked at again: a pass starts at the
//! boundary. A pass first drains the zone's per-thread caches when they
//! cache a reported order (one barrier per zone), so blocks parked there
//! go back to the lists and are reported too. Allocation takes unreported
//! blocks first; a reported block
//! that is allocated, cached, isolated, or merged with an unreported buddy
//! leaves the reported part and loses its marks (the merged block is
//! reported again, whole, by a later pass).
//!
//! # Reservations stay deterministic
//!
//! The review of the kernel's first version pointed out that a reservation
//! meeting pages pulled off for reporting would fail, and work when tried
//! again. Here:
//!
//! - the reporter takes blocks only from the lists, so it never touches an
//!   isolated window (whose free blocks a reservation took off the lists);
//! - a block in flight is not free-and-listed to a reservation: it cannot
//!   be carved, committed or merged;
//! - a reservation whose test finds blocks in flight while a batch of its
//!   zone is out waits for that batch (its lock: at most one batch of
//!   `madvise` calls), whatever its deadline, and tests again; the batch's
//!   blocks inside the isolated window come back isolated. So a
//!   reservation never fails, nor reports a page busy, because of
//!   reporting. Each such wait is counted
//!   ([`ReservationStats::report_waits`](crate::stats::ReservationStats::report_waits),
//!   [`ReportStats::reservation_waits`]).
//!
//! # Backings
//!
//! | backing | report |
//! |---|---|
//! | anonymous, transparent hugepages | `madvise`; RSS drops (`MADV_DONTNEED` at once, `MADV_FREE` under pressure) |
//! | hugetlb | `madvise` of whole 2 MiB pages: the order must be at least the 2 MiB order, else [`ReportError::HugeTlbOrder`] |
//! | heap, caller-provided | refused: [`ReportError::Backing`], nothing touched |
//!
//! # Costs
//!
//! Nothing on the hot paths: the boundary is one compare when a buddy
//! allocation pops a block, and the marks are written only for reported
//! blocks. A pass costs two zone-lock holds and one `madvise` per block;
//! allocating a reported block costs the page faults of touching it again
//! (see `BENCHMARKS.md`).

use core::time::Duration;

use crate::alloc::Zone;
use crate::discard::Discard;
use crate::error::ReportError;
use crate::page::ext::Mark;
use crate::region::BackingKind;
use crate::sync::AtomicU64;
use crate::sync::Ordering::Relaxed;
use crate::{PageArena, Pfn};

/// Free page reporting settings, chosen when the arena is built
/// ([`ArenaBuilder::reporting`](crate::ArenaBuilder::reporting)).
///
/// ```
/// use pinowner::reporting::Reporting;
/// use pinowner::{discard::Discard, Backing, PageArena};
///
/// let arena = PageArena::builder()
///     .pages(4096)
///     .backing(Backing::Anonymous)
///     .reporting(Reporting { min_order: Some(4), batch: 8, how: Discard::Free })
///     .build()?;
/// assert_eq!(arena.report_min_order(), 4);
/// # Ok::<(), pinowner::BuildError>(())
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Reporting {
    /// The smallest order reported; `None`: the 2 MiB order (9 for 4 KiB
    /// pages, 0 for pages of 2 MiB or more). Capped by the arena's
    /// [`max_order`](PageArena::max_order).
    pub min_order: Option<u8>,
    /// Blocks pulled off the lists at a time, at least 1, at most
    /// [`MAX_BATCH`](Self::MAX_BATCH) (default 32, the kernel's
    /// `PAGE_REPORTING_CAPACITY`): a reservation meeting a batch waits for
    /// at most this many `madvise` calls.
    pub batch: usize,
    /// `MADV_DONTNEED` (default: memory released at once, pages known to be
    /// zero) or `MADV_FREE` (cheaper; released under memory pressure).
    pub how: Discard,
}

impl Reporting {
    /// The largest batch.
    pub const MAX_BATCH: usize = 1024;

    pub(crate) fn validate(&self) -> Result<(), crate::BuildError> {
        if (1..=Self::MAX_BATCH).contains(&self.batch) {
            Ok(())
        } else {
            Err(crate::BuildError::ReportBatch { batch: self.batch, limit: Self::MAX_BATCH })
        }
    }
}

impl Default for Reporting {
    fn default() -> Self {
        Reporting { min_order: None, batch: 32, how: Discard::DontNeed }
    }
}

/// What reporting did: one pass ([`PageArena::report_free`]), a background
/// [`Reporter`]'s life, or the arena's whole history
/// ([`PageArena::report_stats`]).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize))]
pub struct ReportStats {
    /// Free blocks given back to the operating system.
    pub blocks: u64,
    /// Pages in them.
    pub pages: u64,
    /// Batches (each one hold of a zone's batch lock).
    pub batches: u64,
    /// Times a reservation met a batch in flight and waited for it
    /// (cumulative statistics only).
    pub reservation_waits: u64,
}

impl core::ops::AddAssign for ReportStats {
    fn add_assign(&mut self, o: ReportStats) {
        self.blocks += o.blocks;
        self.pages += o.pages;
        self.batches += o.batches;
        self.reservation_waits += o.reservation_waits;
    }
}

/// The arena's reporting settings and counters.
#[derive(Debug)]
pub(crate) struct ReportState {
    pub(crate) config: Reporting,
    blocks: AtomicU64,
    pages: AtomicU64,
    batches: AtomicU64,
    pub(crate) waits: AtomicU64,
}

impl ReportState {
    pub(crate) fn new(config: Reporting) -> Self {
        let z = || AtomicU64::new(0);
        ReportState { config, blocks: z(), pages: z(), batches: z(), waits: z() }
    }
}

impl PageArena {
    /// The smallest order reporting gives back: [`Reporting::min_order`],
    /// or the 2 MiB order, capped by [`max_order`](Self::max_order).
    pub fn report_min_order(&self) -> u8 {
        let two_mib = 21u32.saturating_sub(self.page_shift) as u8;
        self.reporting.config.min_order.unwrap_or(two_mib).min(self.max_order)
    }

    /// Gives the memory of up to `budget` free blocks of at least
    /// [`report_min_order`](Self::report_min_order) back to the operating
    /// system, largest first, in batches (see the [module
    /// docs](crate::reporting)); returns what it did. Blocks reported
    /// before are not looked at again. Safe to call from any thread,
    /// alongside allocations and reservations.
    ///
    /// # Errors
    ///
    /// [`ReportError::Backing`] on a heap or caller-provided arena (nothing
    /// touched); [`ReportError::HugeTlbOrder`] on a hugetlb arena reporting
    /// blocks under 2 MiB; [`ReportError::Os`] if `madvise` fails (that
    /// batch goes back unreported; earlier batches stay reported).
    ///
    /// ```
    /// use pinowner::{Backing, PageArena, PageFlags};
    ///
    /// // 8 MiB of 4 KiB pages: four free blocks of the 2 MiB order (max order 9).
    /// let arena = PageArena::builder().pages(2048).max_order(9).backing(Backing::Anonymous).build()?;
    /// let mut b = arena.alloc(9)?;
    /// b.bytes_mut()?.fill(1); // 2 MiB resident
    /// drop(b);
    /// let done = arena.report_free(usize::MAX)?;
    /// assert_eq!((done.blocks, done.pages), (4, 2048));
    /// assert_eq!(arena.reported_pages(), 2048);
    /// assert!(arena.page_state(0)?.flags.contains(PageFlags::REPORTED));
    /// assert_eq!(arena.report_free(usize::MAX)?.blocks, 0, "nothing new to report");
    /// // Allocation clears the mark; the OS zeroed the pages, so
    /// // `alloc_zeroed` does not write them.
    /// let z = arena.alloc_zeroed(9)?;
    /// assert!(z.bytes().iter().all(|&x| x == 0));
    /// assert_eq!(arena.reported_pages(), 1536);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn report_free(&self, budget: usize) -> Result<ReportStats, ReportError> {
        let min = self.report_min_order();
        self.check_reportable(min)?;
        let config = self.reporting.config;
        let mut done = ReportStats::default();
        let mut batch = Vec::with_capacity(config.batch);
        for zone in self.zones.iter().filter(|z| z.pages() != 0) {
            // Blocks of a reported order parked in thread caches go back to
            // the lists first (one barrier per zone), or a thread that
            // freed them and went quiet would keep them resident for good.
            if zone.pcp.as_ref().is_some_and(|p| p.config.orders >> min != 0) {
                self.drain_zone(zone);
            }
            for order in (min..=self.max_order).rev() {
                while (done.blocks as usize) < budget {
                    let want = config.batch.min(budget - done.blocks as usize);
                    let n = self.report_batch(zone, order, want, config.how, &mut batch)?;
                    if n == 0 {
                        break;
                    }
                    done.blocks += n as u64;
                    done.pages += (n as u64) << order;
                    done.batches += 1;
                }
            }
        }
        let r = &self.reporting;
        r.blocks.fetch_add(done.blocks, Relaxed);
        r.pages.fetch_add(done.pages, Relaxed);
        r.batches.fetch_add(done.batches, Relaxed);
        Ok(done)
    }

    fn check_reportable(&self, min: u8) -> Result<(), ReportError> {
        match self.backing() {
            BackingKind::Anonymous | BackingKind::TransparentHuge => Ok(()),
            BackingKind::HugeTlb => {
                let needed = 21u32.saturating_sub(self.page_shift) as u8;
                if min < needed {
                    Err(ReportError::HugeTlbOrder { order: min, needed })
                } else {
                    Ok(())
                }
            }
            backing @ (BackingKind::Heap | BackingKind::External) => {
                Err(ReportError::Backing { backing, pages: self.pages() })
            }
        }
    }

    /// One batch of up to `want` blocks of `order` in `zone`; returns how
    /// many were reported (0: none left unreported).
    fn report_batch(
        &self,
        zone: &Zone,
        order: u8,
        want: usize,
        how: Discard,
        batch: &mut Vec<u32>,
    ) -> Result<usize, ReportError> {
        batch.clear();
        // Held until the batch is back: a reservation meeting one of its
        // blocks waits on it.
        let _batch = zone.report_batch.lock();
        zone.area.lock().pull_unreported(&self.descs, order, want, batch);
        if batch.is_empty() {
            return Ok(0);
        }
        let mut failed = None;
        let mut reported = 0;
        for &head in batch.iter() {
            let (off, len) = self.byte_range(head, order);
            // The block is free and on no list, its head marked in flight:
            // no allocation, cache, merge or reservation can hand it out
            // until it is put back below, so nobody reads or writes it, and
            // a block is page-aligned.
            // SAFETY: so the range is ours alone, as `discard` requires.
            match unsafe { self.region.discard(off, len, how == Discard::DontNeed) } {
                Ok(zeroed) => {
                    if self.poison == crate::poison::Poison::Pattern {
                        // The pattern went with the bytes.
                        self.ext.clear(Mark::Poisoned, head, 1 << order);
                    }
                    if zeroed {
                        // Before the free below, while held: the `ZEROED` rule.
                        self.ext.set(Mark::Zeroed, head, 1 << order);
                    }
                    reported += 1;
                }
                Err(source) => {
                    failed = Some(ReportError::Os { pfn: head as Pfn, pages: 1 << order, source });
                    break;
                }
            }
        }
        let mut area = zone.area.lock();
        for (i, &head) in batch.iter().enumerate() {
            area.reporting_pages -= 1 << order;
            area.give_as(&self.descs, zone, head, order, i < reported);
        }
        drop(area);

        failed.map_or(Ok(reported), Err)
    }

    /// Pages whose memory the reporter gave back and that are still free
    /// (marked `REPORTED`).
    pub fn reported_pages(&self) -> usize {
        self.ext.count(Mark::Reported)
    }

    /// Everything reporting did in this arena's life, and the reservations
    /// that waited for a batch.
    ///
    /// ```
    /// use pinowner::{reporting::Reporting, Backing, PageArena};
    ///
    /// let arena = PageArena::builder()
    ///     .pages(64)
    ///     .backing(Backing::Anonymous)
    ///     .reporting(Reporting { min_order: Some(3), batch: 2, ..Reporting::default() })
    ///     .build()?;
    /// let one = arena.report_free(3)?; // order 6 first: one block of 64 pages
    /// assert_eq!((one.blocks, one.pages, one.batches), (1, 64, 1));
    /// assert_eq!(arena.report_stats(), one);
    /// assert_eq!(arena.reported_pages(), 64);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn report_stats(&self) -> ReportStats {
        let r = &self.reporting;
        ReportStats {
            blocks: r.blocks.load(Relaxed),
            pages: r.pages.load(Relaxed),
            batches: r.batches.load(Relaxed),
            reservation_waits: r.waits.load(Relaxed),
        }
    }

    /// A reservation's test found blocks in flight while a report batch of
    /// `zone` is out (the caller let go of the zone's caches and lock):
    /// waits for that batch to be put back, and counts the wait.
    pub(crate) fn wait_for_report_batch(&self, zone: &Zone) {
        drop(zone.report_batch.lock());
        self.reporting.waits.fetch_add(1, Relaxed);
        crate::stats::ReserveCounters::bump(&self.reserve_counters.report_waits, 1);
    }

    /// Starts a thread that reports free blocks in the background: every
    /// `delay`, a pass of at most `rate` blocks ([`report_free`](Self::report_free)).
    /// Dropping (or [`stop`](Reporter::stop)ping) the handle stops the
    /// thread and waits for it.
    ///
    /// # Errors
    ///
    /// As for [`report_free`](Self::report_free) (checked before the thread
    /// starts), or [`ReportError::Thread`] if it cannot be spawned.
    ///
    /// ```
    /// use std::{sync::Arc, time::Duration};
    /// use pinowner::{reporting::Background, Backing, PageArena};
    ///
    /// let arena = Arc::new(PageArena::builder().pages(1024).max_order(9).backing(Backing::Anonymous).build()?);
    /// let reporter = arena.start_reporter(Background { delay: Duration::from_millis(1), rate: 64 })?;
    /// while arena.reported_pages() < 1024 {
    ///     std::thread::yield_now();
    /// }
    /// let stats = reporter.stop();
    /// assert_eq!(stats.pages, 1024);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    #[cfg(not(loom))]
    pub fn start_reporter(self: &std::sync::Arc<Self>, background: Background) -> Result<Reporter, ReportError> {
        self.check_reportable(self.report_min_order())?;
        let stop = std::sync::Arc::new((crate::sync::Mutex::new(false), crate::sync::Condvar::new()));
        let (arena, flag) = (self.clone(), stop.clone());
        let thread = std::thread::Builder::new()
            .name("pinowner-reporter".into())
            .spawn(move || {
                let mut total = ReportStats::default();
                loop {
                    {
                        let (lock, cv) = &*flag;
                        let mut stopped = lock.lock();
                        if !*stopped {
                            stopped = cv.wait_for(stopped, background.delay);
                        }
                        if *stopped {
                            return total;
                        }
                    }
                    match arena.report_free(background.rate) {
                        Ok(s) => total += s,
                        Err(e) => tracing::warn!(target: "pinowner::report", error = %e, "free page reporting failed"),
                    }
                }
            })
            .map_err(ReportError::Thread)?;
        Ok(Reporter { stop, thread: Some(thread) })
    }
}

/// Background reporting settings; see [`PageArena::start_reporter`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Background {
    /// The pause before each pass (the kernel waits 2 s after frees).
    pub delay: Duration,
    /// Blocks reported per pass, at most.
    pub rate: usize,
}

impl Default for Background {
    /// 2 s between passes of at most 512 blocks (1 GiB of 2 MiB blocks).
    fn default() -> Self {
        Background { delay: Duration::from_secs(2), rate: 512 }
    }
}

/// A background reporter thread; stopped and joined when dropped.
#[cfg(not(loom))]
#[derive(Debug)]
#[must_use = "dropping the handle stops the reporter"]
pub struct Reporter {
    stop: std::sync::Arc<(crate::sync::Mutex<bool>, crate::sync::Condvar)>,
    thread: Option<std::thread::JoinHandle<ReportStats>>,
}

#[cfg(not(loom))]
impl Reporter {
    /// Stops the thread (after its current pass), waits for it, and
    /// returns what it reported.
    pub fn stop(mut self) -> ReportStats {
        self.halt()
    }

    fn halt(&mut self) -> ReportStats {
        *self.stop.0.lock() = true;
        self.stop.1.notify_all();
        self.thread.take().map_or_else(ReportStats::default, |t| t.join().unwrap_or_default())
    }
}

#[cfg(not(loom))]
impl Drop for Reporter {
    fn drop(&mut self) {
        self.halt();
    }
}
