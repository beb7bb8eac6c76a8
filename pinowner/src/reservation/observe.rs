//! What every public reservation does around its work: a `tracing` span
//! (target `pinowner::reserve`, level INFO) carrying the request, the
//! window and the outcome; the arena's reservation counters; and, when pages
//! are in the way, an INFO event naming who holds them. The reservation
//! itself is untouched.
//!
//! Without a subscriber, `tracing`'s callsite interest makes the span and
//! the event a load and a branch each.

use core::fmt;
use std::time::Duration;

use super::{ContigError, ContigFailure, ContigRun, Reason};
use crate::page::state;
use crate::stats::ReserveCounters;
use crate::sync::Ordering::Relaxed;
use crate::{PageArena, Pfn};

/// What a public reservation call asked for, as its span shows it.
#[derive(Clone, Copy, Debug)]
pub(super) struct Ask {
    /// The public function.
    pub(super) call: &'static str,
    pub(super) reason: Reason,
    pub(super) pages: usize,
    /// `reserve_range*`: the window's first page.
    pub(super) start: Option<Pfn>,
    /// `reserve_contig*`: the alignment.
    pub(super) align: Option<usize>,
    /// `*_wait`: how long it may wait.
    pub(super) timeout: Option<Duration>,
}

impl Ask {
    /// A `reserve_range*` call.
    pub(super) fn range(
        call: &'static str,
        start: Pfn,
        pages: usize,
        reason: Reason,
        timeout: Option<Duration>,
    ) -> Ask {
        Ask { call, reason, pages, start: Some(start), align: None, timeout }
    }

    /// A `reserve_contig*` call.
    pub(super) fn contig(
        call: &'static str,
        pages: usize,
        align: usize,
        reason: Reason,
        timeout: Option<Duration>,
    ) -> Ask {
        Ask { call, reason, pages, start: None, align: Some(align), timeout }
    }
}

impl PageArena {
    /// Runs `reserve` (a reservation as `ask` describes it) inside its span,
    /// counts its outcome, and says who is in the way if pages were held.
    pub(super) fn observed<'a>(
        &'a self,
        ask: Ask,
        reserve: impl FnOnce() -> Result<ContigRun<&'a PageArena>, ContigError>,
    ) -> Result<ContigRun<&'a PageArena>, ContigError> {
        let counters = &self.reserve_counters;
        ReserveCounters::bump(&counters.tried, 1);
        let span = tracing::info_span!(
            target: "pinowner::reserve",
            "reserve",
            call = ask.call,
            reason = %ask.reason,
            pages = ask.pages,
            start = ask.start,
            align = ask.align,
            timeout_ms = ask.timeout.map(|t| t.as_millis().min(u64::MAX as u128) as u64),
            window_start = tracing::field::Empty,
            window_end = tracing::field::Empty,
            outcome = tracing::field::Empty,
        );
        let result = span.in_scope(reserve);
        let _entered = span.enter();
        match &result {
            Ok(run) => {
                ReserveCounters::bump(&counters.succeeded, 1);
                ReserveCounters::bump(&counters.pages, run.pages() as u64);
                self.count_run(run);
                // The run's owner may write it: no page of it is known to
                // be zero any more.
                self.ext.handed_out_pages(run.start, run.pages);
                if self.poison != crate::poison::Poison::Off {
                    self.unpoison_run(run.start, run.pages);
                }
                span.record("window_start", run.pfn());
                span.record("window_end", run.range().end);
                span.record("outcome", "reserved");
            }
            Err(ContigError::Busy(f)) => {
                ReserveCounters::bump(&counters.busy, 1);
                span.record("window_start", f.window.start);
                span.record("window_end", f.window.end);
                span.record("outcome", "busy");
                in_the_way(f);
            }
            Err(e) => {
                ReserveCounters::bump(&counters.refused, 1);
                span.record("outcome", "refused");
                tracing::debug!(target: "pinowner::reserve", error = %e, "reservation refused");
            }
        }
        result
    }

    /// Counts the blocks of a committed run as allocations of its zone.
    fn count_run(&self, run: &ContigRun<&PageArena>) {
        let zone = self.zone_for(run.start);
        let mut area = zone.area.lock();
        for &(head, _) in &run.blocks {
            // We hold the block: its order does not change under us.
            area.counts.alloc(state::order(self.desc(head).state.load(Relaxed)));
        }
    }
}

/// How many acquirers the INFO event names.
const NAMED: usize = 3;

/// The INFO event of a failure: the window, its load, and the top holders
/// by name ([`ContigFailure::by_acquirer`]), not just a count.
fn in_the_way(f: &ContigFailure) {
    if !tracing::enabled!(target: "pinowner::reserve", tracing::Level::INFO) {
        return;
    }
    let groups = f.by_acquirer();
    let top = groups.first().and_then(|g| g.acquirer).map(|a| a.to_string());
    tracing::info!(
        target: "pinowner::reserve",
        reason = %f.reason,
        window_start = f.window.start,
        window_end = f.window.end,
        busy_pages = f.busy_pages(),
        holders = f.holders(),
        pins = f.pins(),
        attributed = f.attributed(),
        top = top.as_deref(),
        in_the_way = %InTheWay(&groups),
        "reservation blocked by {}",
        top.as_deref().unwrap_or("unattributed holders"),
    );
}

/// The ranked holders, at most [`NAMED`]: `1. who: 2 blocks, 0 refs, 2 pins; 2. ...`.
struct InTheWay<'a>(&'a [super::AcquirerGroup]);

impl fmt::Display for InTheWay<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, g) in self.0.iter().take(NAMED).enumerate() {
            if i > 0 {
                f.write_str("; ")?;
            }
            match g.acquirer {
                Some(a) => write!(f, "{}. {a}", i + 1)?,
                None => write!(f, "{}. (unattributed)", i + 1)?,
            }
            write!(f, ": {} blocks, {} refs, {} pins", g.blocks, g.refs, g.pins)?;
        }
        if self.0.len() > NAMED {
            write!(f, "; and {} more", self.0.len() - NAMED)?;
        }
        Ok(())
    }
}
