//! Arming and disarming: a failed reservation's busy blocks (or a range
//! asked for by hand) start being recorded, with the holder the failure
//! named found held; a later success of the request, a request, or the
//! block's freeing stops it.

use core::ops::Range;

use super::{live, Arming, Change, DisarmCause, EventKind, RequestKey, Tracker, MAX_ARMINGS};
use crate::page::slot::Acquirer;
use crate::page::state::{self, TRACKED};
use crate::reservation::Reason;
use crate::sync::Ordering::{Acquire, Relaxed, Release};
use crate::{PageArena, Pfn};

impl PageArena {
    /// Arms a block if it is live; records the arm. Returns `Some(true)` if
    /// this call armed it, `Some(false)` if it was armed already (it moves
    /// to the new arming), `None` if it is not live.
    pub(crate) fn arm_block(&self, t: &Tracker, head: u32, arming: u32, by: Option<Acquirer>) -> Option<bool> {
        t.ext[head as usize].arming.store(arming, Relaxed);
        let d = &self.desc(head).state;
        let mut old = d.load(Relaxed);
        loop {
            if !live(old) {
                return None;
            }
            if old & TRACKED != 0 {
                return Some(false);
            }
            match d.compare_exchange_weak(old, old | TRACKED, Release, Relaxed) {
                Ok(_) => break,
                Err(cur) => old = cur,
            }
        }
        t.armed(old, 1);
        let (_, seq) = t.record(Change::block(EventKind::Arm, head, old, old | TRACKED, by, None), false);
        self.record_found_holder(t, head, old | TRACKED, seq);
        Some(true)
    }

    /// At arming: the holder the owner slot attributes (the failure's
    /// answer) becomes a hold found at arming, so the report starts from
    /// what the failure knew and its release names it. The record mirrors
    /// the slot: if the slot stopped naming that holder before the record
    /// was open (its release, or a newer claim, moved the generation, and
    /// that release was not matched to the record), it is closed again.
    ///
    /// The record is a hold, not an event of the history (nothing happened
    /// then); it carries the arming event's number `seq`.
    fn record_found_holder(&self, t: &Tracker, head: u32, w: u64, seq: u64) {
        let Some((who, pin)) = self.latest_hold(head, w) else { return };
        let gen = state::gen(w);
        let kind = if pin { EventKind::Pin } else { EventKind::Get };
        let c = Change::acquire(kind, head, head, w, w, crate::page::slot::Who::of(who), gen, false);
        let mut found = t.event(&Change { from_arming: true, ..c }, None);
        found.seq = seq;
        let id = {
            let mut holds = t.holds.lock();
            // Armed before (and disarmed since), the block may keep the
            // hold its handle opened then: that holder is recorded already,
            // and its handle closes that hold, so a second record found at
            // arming would outlive it.
            let recorded = |e: &super::Event| e.gen == Some(gen) && e.kind.is_pin() == pin && e.who == Some(who);
            if holds.find(head, recorded).is_some() {
                return;
            }
            holds.open(&mut found)
        };
        if id != 0 && state::gen(self.desc(head).state.load(Acquire)) != gen {
            t.holds.lock().close_if(id, seq);
        }
    }

    /// Disarms a live armed block; records the disarm. Exactly one of this and
    /// the freeing put disarms a given arming.
    pub(crate) fn disarm_block(&self, head: u32, cause: DisarmCause) -> bool {
        let Some(t) = self.tracker.get() else { return false };
        let d = &self.desc(head).state;
        let mut old = d.load(Relaxed);
        loop {
            if !live(old) || old & TRACKED == 0 {
                return false;
            }
            match d.compare_exchange_weak(old, old & !TRACKED, Relaxed, Relaxed) {
                Ok(_) => break,
                Err(cur) => old = cur,
            }
        }
        t.armed(old, -1);
        t.record(Change::block(EventKind::Disarm(cause), head, old, old & !TRACKED, None, None), false);
        true
    }

    /// Opens an arming record and arms `heads`. Returns the number of
    /// blocks this arming armed.
    pub(crate) fn arm_blocks(
        &self,
        heads: &[u32],
        reason: Reason,
        window: Range<u32>,
        by: Option<Acquirer>,
        request: Option<RequestKey>,
    ) -> usize {
        let t = self.tracker();
        let window_pfns = window.start as Pfn..window.end as Pfn;
        let id = {
            let mut armings = t.armings.lock();
            // A retry of the same request over the same window (a waiting
            // reservation) continues its arming instead of adding records.
            let same = armings
                .iter()
                .find(|a| request.is_some() && a.reason == reason && a.request == request && a.window == window_pfns);
            if let Some(a) = same {
                a.id
            } else {
                let id = t.next_arming.fetch_add(1, Relaxed);
                if armings.len() >= MAX_ARMINGS {
                    armings.remove(0);
                    t.armings_dropped.fetch_add(1, Relaxed);
                }
                armings.push(Arming {
                    id,
                    reason,
                    window: window_pfns.clone(),
                    at: t.now(),
                    by,
                    blocks: Vec::new(),
                    request,
                });
                id
            }
        };
        let mut armed = Vec::new();
        let mut n = 0;
        for &h in heads {
            if let Some(new) = self.arm_block(t, h, id, by) {
                armed.push(h as Pfn);
                n += usize::from(new);
            }
        }
        if let Some(a) = t.armings.lock().iter_mut().find(|a| a.id == id) {
            a.blocks.extend(armed);
            a.blocks.sort_unstable();
            a.blocks.dedup();
        }
        // Under the reservation's zone lock: a panicking subscriber must not
        // unwind through it with the window still isolated.
        #[cfg(not(loom))]
        crate::callback::shielded(|| {
            tracing::debug!(
                target: "pinowner::tracker",
                arming = id,
                reason = %reason,
                window_start = window.start,
                window_end = window.end,
                blocks = heads.len(),
                "busy blocks armed"
            )
        });
        n
    }

    /// Disarms the blocks of earlier armings of the same request (reason,
    /// pages, alignment): called when that request succeeds.
    ///
    /// Not in eager mode, which promises every block stays armed until it
    /// is freed (or disarmed by hand).
    pub(crate) fn disarm_request(&self, reason: Reason, request: RequestKey) {
        let Some(t) = self.tracker.get() else { return };
        if t.config.eager {
            return;
        }
        let heads: Vec<Pfn> = t
            .armings
            .lock()
            .iter()
            .filter(|a| a.reason == reason && a.request == Some(request))
            .flat_map(|a| a.blocks.iter().copied())
            .collect();
        for h in heads {
            self.disarm_block(h as u32, DisarmCause::Succeeded);
        }
    }

    /// Arms the live blocks with pages in `range` by hand, as a failed
    /// reservation with `reason` would: their later gets, puts, pins and
    /// unpins are recorded. Returns the number of blocks newly armed.
    ///
    /// ```
    /// use pinowner::{PageArena, Reason};
    ///
    /// let arena = PageArena::builder().pages(16).build()?;
    /// let block = arena.alloc(0)?;
    /// assert_eq!(arena.arm(block.pfn()..block.pfn() + 1, Reason::Custom("watch")), 1);
    /// let r = arena.get(block.pfn())?;
    /// drop(r);
    /// let kinds: Vec<_> = arena.tracked_events().iter().map(|e| e.kind.to_string()).collect();
    /// assert_eq!(kinds, ["arm", "get", "put"]);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    #[track_caller]
    pub fn arm(&self, range: Range<Pfn>, reason: Reason) -> usize {
        let by = crate::owner_here().acquirer();
        let end = range.end.min(self.pages());
        let start = range.start.min(end);
        let heads = self.live_heads(start..end, 0);
        self.arm_blocks(&heads, reason, start as u32..end as u32, by, None)
    }

    /// Heads of the live blocks with pages in `range` whose state word has
    /// all of `flags`, read without locks (the arm and disarm swaps check
    /// again).
    fn live_heads(&self, range: Range<Pfn>, flags: u64) -> Vec<u32> {
        let mut heads = Vec::new();
        self.for_each_block(range.start as u32, range.end as u32, |h, w| {
            if live(w) && w & flags == flags {
                heads.push(h);
            }
        });
        heads
    }

    /// Disarms every armed block with pages in `range` (eagerly armed ones
    /// included); their history stays in the report until taken. Returns the
    /// number of blocks disarmed.
    pub fn disarm(&self, range: Range<Pfn>) -> usize {
        if self.tracker.get().is_none() {
            return 0;
        }
        let end = range.end.min(self.pages());
        let start = range.start.min(end);
        let heads = self.live_heads(start..end, TRACKED);
        heads.into_iter().filter(|&h| self.disarm_block(h, DisarmCause::Request)).count()
    }

    /// Disarms every armed block.
    pub fn disarm_all(&self) -> usize {
        self.disarm(0..self.pages())
    }
}
