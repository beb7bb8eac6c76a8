//! Cumulative counters, like jemalloc's `stats.*`: what a database or a
//! driver exports to its metrics. One [`PageArena::stats`] call sums them.
//!
//! Where each count lives keeps the hot path free of them: `get`, `put`,
//! `pin` and `unpin` count nothing. An allocation or a free counts where it
//! already is exclusive: inside the calling thread's cache (a plain add its
//! owner makes inside its biased lock) or under the zone lock (a plain
//! add). Reservations, rare and slow, count with relaxed atomics on the
//! arena. `stats()` reads the caches by taking their remote sides (one
//! `membarrier` per zone, as [`PageArena::frag_stats`] does).

use crate::alloc::ZoneKind;
use crate::sync::AtomicU64;
use crate::sync::Ordering::Relaxed;
use crate::tracker::TrackerStats;
use crate::PageArena;

/// An arena's cumulative counters; see [`PageArena::stats`].
#[derive(Clone, Debug, PartialEq, Eq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
pub struct Stats {
    /// Per zone, normal first; a zone of zero pages is left out.
    pub zones: Vec<ZoneStats>,
    /// Contiguous reservations.
    pub reservations: ReservationStats,
    /// The owner tracker's counters: blocks armed now, armings, events
    /// recorded and dropped, the stack depot.
    pub tracker: TrackerStats,
}

/// The allocation counters of one zone, per order (index = order, up to
/// the arena's [`max_order`](PageArena::max_order)).
#[derive(Clone, Debug, PartialEq, Eq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
pub struct ZoneStats {
    /// The zone.
    pub zone: ZoneKind,
    /// Blocks allocated from the zone: by the `alloc*` calls (a movable
    /// allocation that fell back to the normal zone counts there), and the
    /// blocks of committed contiguous runs.
    pub allocs: Vec<u64>,
    /// Blocks of the zone freed by their last holder (a dropped run frees
    /// its blocks one by one).
    pub frees: Vec<u64>,
    /// Allocations that found no free block, counted in the last zone they
    /// tried.
    pub failures: Vec<u64>,
}

impl ZoneStats {
    /// Blocks allocated, all orders.
    pub fn total_allocs(&self) -> u64 {
        saturating_sum(&self.allocs)
    }

    /// Blocks freed, all orders.
    pub fn total_frees(&self) -> u64 {
        saturating_sum(&self.frees)
    }

    /// Failed allocations, all orders.
    pub fn total_failures(&self) -> u64 {
        saturating_sum(&self.failures)
    }

    /// Blocks allocated and not freed yet, all orders: what is live now
    /// (read without stopping allocation, so only exact on a quiet arena).
    pub fn live_blocks(&self) -> u64 {
        self.total_allocs().saturating_sub(self.total_frees())
    }
}

/// The sum of per-order counters, saturating (counters read back from a
/// JSON report may be anything).
fn saturating_sum(counts: &[u64]) -> u64 {
    counts.iter().fold(0, |sum, &n| sum.saturating_add(n))
}

/// Counters of contiguous reservations (`reserve_*`, their `_wait` and
/// `_owned` forms).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
#[cfg_attr(feature = "serde", serde(default))]
pub struct ReservationStats {
    /// Reservation calls (a `_wait` call is one, however often it retries).
    pub tried: u64,
    /// Calls that returned a run.
    pub succeeded: u64,
    /// Calls that failed because pages of the window were held
    /// ([`ContigError::Busy`](crate::ContigError::Busy)).
    pub busy: u64,
    /// Calls refused for any other reason: bad geometry, an overlap with a
    /// reserved run, a timeout before the first attempt.
    pub refused: u64,
    /// Extra attempts `_wait` calls made after a failure.
    pub retried: u64,
    /// Pages in the runs returned.
    pub pages_reserved: u64,
    /// Times a reservation met free blocks pulled off the lists by the
    /// free page reporter and waited for their batch (never a failure; see
    /// [`crate::reporting`]).
    pub report_waits: u64,
}

/// The arena's reservation counters (relaxed atomics: reservations are
/// rare and take locks anyway).
#[derive(Debug)]
pub(crate) struct ReserveCounters {
    pub(crate) tried: AtomicU64,
    pub(crate) succeeded: AtomicU64,
    pub(crate) busy: AtomicU64,
    pub(crate) refused: AtomicU64,
    pub(crate) retried: AtomicU64,
    pub(crate) pages: AtomicU64,
    pub(crate) report_waits: AtomicU64,
}

impl ReserveCounters {
    pub(crate) fn new() -> Self {
        let z = || AtomicU64::new(0);
        ReserveCounters {
            tried: z(),
            succeeded: z(),
            busy: z(),
            refused: z(),
            retried: z(),
            pages: z(),
            report_waits: z(),
        }
    }

    /// Adds one to `counter`.
    pub(crate) fn bump(counter: &AtomicU64, n: u64) {
        counter.fetch_add(n, Relaxed);
    }

    fn snapshot(&self) -> ReservationStats {
        ReservationStats {
            tried: self.tried.load(Relaxed),
            succeeded: self.succeeded.load(Relaxed),
            busy: self.busy.load(Relaxed),
            refused: self.refused.load(Relaxed),
            retried: self.retried.load(Relaxed),
            pages_reserved: self.pages.load(Relaxed),
            report_waits: self.report_waits.load(Relaxed),
        }
    }
}

impl PageArena {
    /// The arena's cumulative counters: allocations, frees and failures
    /// per zone and order, reservations tried, succeeded, failed and
    /// retried, and the tracker's counters (blocks armed, events recorded
    /// and dropped). Serialisable ([`Stats::to_json`]).
    ///
    /// Cheap to keep: the hot path (`get`/`put`/`pin`/`unpin`) counts
    /// nothing, and an allocation or free adds one to a counter where it is
    /// already exclusive (see the [module docs](crate::stats)). Asking
    /// costs one `membarrier` per zone with thread caches.
    ///
    /// ```
    /// use pinowner::{PageArena, Reason};
    ///
    /// let arena = PageArena::builder().pages(64).movable_pages(32).build()?;
    /// drop(arena.alloc(2)?);
    /// assert!(arena.alloc(9).is_err()); // no block of 512 pages
    /// drop(arena.reserve_contig(8, 8, Reason::Contig)?);
    /// let stats = arena.stats();
    /// let normal = &stats.zones[0];
    /// assert_eq!((normal.allocs[2], normal.frees[2], normal.total_failures()), (1, 1, 1));
    /// assert_eq!((stats.reservations.tried, stats.reservations.succeeded), (1, 1));
    /// assert_eq!(stats.zones[1].live_blocks(), 0);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn stats(&self) -> Stats {
        let orders = self.max_order as usize + 1;
        let zones = self
            .zones
            .iter()
            .filter(|z| z.pages() != 0)
            .map(|zone| {
                let (mut allocs, mut frees, failures) = {
                    let area = zone.area.lock();
                    let c = &area.counts;
                    (c.allocs[..orders].to_vec(), c.frees[..orders].to_vec(), c.failures[..orders].to_vec())
                };
                if let Some(pcp) = &zone.pcp {
                    for mut cache in pcp.lock_all() {
                        let (a, f) = cache.with(|l| l.counts());
                        for o in 0..orders {
                            allocs[o] += a[o];
                            frees[o] += f[o];
                        }
                    }
                }
                ZoneStats { zone: zone.kind, allocs, frees, failures }
            })
            .collect();
        Stats { zones, reservations: self.reserve_counters.snapshot(), tracker: self.tracker_stats() }
    }
}
