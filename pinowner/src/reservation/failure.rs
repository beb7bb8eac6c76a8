//! What a failed reservation says: the blocks in the way, who holds them
//! and why they stayed, ranked by acquirer.

use core::ops::Range;
use std::time::Duration;

use super::Reason;
use crate::alloc::ZoneKind;
use crate::migrate::Unmovable;
use crate::page::slot::Acquirer;
use crate::page::PageState;
use crate::Pfn;

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
    /// Why the block was not moved out of the window.
    pub why: Unmovable,
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
    /// Busy blocks in the window that could not be moved out of it, in page
    /// order, each with [why](BusyBlock::why).
    pub busy: Vec<BusyBlock>,
    /// Busy blocks in the window that could have moved out, had the ones
    /// in [`busy`](Self::busy) not failed the window (they were left where
    /// they were: moving them would not have made room).
    pub movable: usize,
    /// For `reserve_contig` when every window considered had a block that
    /// cannot move: those blocks in the other windows (the first
    /// 64 of them), so one failure names every holder to ask. Empty
    /// otherwise.
    pub elsewhere: Vec<BusyBlock>,
    /// Aligned windows considered (1 for `reserve_range`).
    pub windows_considered: usize,
    /// What happened while [`PageArena::reserve_contig_wait`](crate::PageArena::reserve_contig_wait) waited, if it
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
                Some((p, who)) => write!(f, " owner=pfn {p:#x} by {who}")?,
                None => write!(f, " owner=unattributed")?,
            }
            writeln!(f, " unmovable: {}", b.why)?;
        }
        if !self.elsewhere.is_empty() {
            writeln!(f, "  every window has a block that cannot move; in the other windows:")?;
            for b in &self.elsewhere {
                let who = b.attributed.map_or_else(|| "unattributed".to_owned(), |(_, a)| a.to_string());
                writeln!(f, "    pfn={:#x} order={} {who} unmovable: {}", b.head, b.order, b.why)?;
            }
        }
        if self.movable > 0 {
            writeln!(f, "  {} more busy blocks could have moved out", self.movable)?;
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
    /// [`PageArena::reserve_contig_wait`](crate::PageArena::reserve_contig_wait)'s timeout passed while another
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

#[cfg(all(test, not(loom)))]
mod tests {
    use std::cell::Cell;
    use std::rc::Rc;
    use std::sync::Arc;

    use crate::{ContigError, PageArena, Reason, ThreadCache, Tracking};

    #[test]
    fn the_first_failure_builds_the_tracker_while_the_zone_allocates_on() {
        let tracking = Tracking { capacity: 1 << 16, ..Tracking::default() };
        let arena = Arc::new(
            PageArena::builder()
                .pages(256)
                .movable_pages(128)
                .max_order(4)
                .thread_cache(ThreadCache::default())
                .tracking(tracking)
                .build()
                .unwrap(),
        );
        let busy = arena.alloc_movable(0).unwrap().into_block();
        let built = Rc::new(Cell::new(false));
        let (a, b) = (Arc::clone(&arena), Rc::clone(&built));
        crate::tracker::ON_BUILD.with(|hook| {
            *hook.borrow_mut() = Some(Box::new(move || {
                // What an allocation in the zone waits for: the zone lock
                // (and the caches, taken before it).
                assert!(!a.zones[1].area.is_locked(), "the tracker is built under the zone lock");
                // And one does run meanwhile, from another thread's cache
                // and from the buddy lists.
                let other = Arc::clone(&a);
                std::thread::spawn(move || {
                    drop(other.alloc_movable(0).unwrap());
                    drop(other.alloc_movable(4).unwrap());
                })
                .join()
                .unwrap();
                b.set(true);
            }));
        });
        let e = arena.reserve_range(busy.pfn(), 1, Reason::Contig).unwrap_err();
        crate::tracker::ON_BUILD.with(|hook| hook.borrow_mut().take());
        assert!(matches!(e, ContigError::Busy(_)), "{e:?}");
        assert!(built.get(), "the failure built the tracker");
        assert_eq!(arena.tracker_stats().armed_blocks, 1, "and armed the busy block with it");
        arena.verify().unwrap();
    }
}
