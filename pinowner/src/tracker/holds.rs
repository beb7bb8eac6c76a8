//! The holds table: every count recorded on an armed block that is still
//! held, by a hold id unique among live holds.
//!
//! A report's outstanding holders come from here, not from pairing the
//! event history: the history is bounded and drops events when full, and a
//! 14-bit generation repeats, so pairing alone can invent a holder (an
//! acquire whose release was dropped) or pair a release with the wrong
//! acquire. A handle whose acquisition was recorded keeps its hold id and
//! closes it on release (whether or not its block is still armed), so an id
//! is reused only after its holder let go: releases pair with their
//! acquires exactly, however many acquisitions come between.
//!
//! Three kinds of record:
//! - **handle holds**, opened by a recorded acquisition through the API
//!   that returns a handle; closed by that handle's release, by id;
//! - **raw holds** (`get_raw`/`pin_raw` on an armed block); a raw release
//!   closes the oldest raw hold of its kind on the block (raw counts are
//!   anonymous, as their ledger is);
//! - **holds found at arming**: the holder the owner slot attributed when
//!   the block was armed (the failure's answer), with the generation its
//!   acquisition produced; closed by the release that carries that
//!   generation, or when the slot stops naming it.
//!
//! Raw holds and holds found at arming are closed when their block is
//! disarmed (their releases would no longer be seen); handle holds stay
//! until their handles let go. Everything on a block is closed when it is
//! freed.

use std::collections::{BTreeMap, HashMap};

use super::Event;

/// Live holds at most (ids are `u16`, 0 meaning none); past it a recorded
/// acquisition gets no id and is counted.
pub const MAX_HOLDS: usize = u16::MAX as usize;

/// The table. Lives under the tracker's lock.
#[derive(Debug, Default)]
pub(crate) struct Holds {
    /// Slot `id - 1`: the acquire event of hold `id`.
    slots: Vec<Option<Event>>,
    free: Vec<u16>,
    /// The live holds of each block, by acquire event number (oldest
    /// first): opening, closing and finding the oldest are logarithmic, so
    /// a block with many holders stays cheap to release.
    by_head: HashMap<u32, BTreeMap<u64, u16>>,
    /// Recorded acquisitions that found the table full.
    pub(crate) full: u64,
}

impl Holds {
    /// Opens a hold for the acquire event `e` (its `hold` is set here);
    /// returns the id, or 0 if the table is full.
    pub(crate) fn open(&mut self, e: &mut Event) -> u16 {
        let id = match self.free.pop() {
            Some(id) => id,
            None if self.slots.len() < MAX_HOLDS => {
                self.slots.push(None);
                self.slots.len() as u16
            }
            None => {
                self.full += 1;
                return 0;
            }
        };
        e.hold = id;
        self.slots[usize::from(id) - 1] = Some(*e);
        self.by_head.entry(e.head as u32).or_default().insert(e.seq, id);
        id
    }

    /// Closes hold `id`; returns its acquire event.
    pub(crate) fn close(&mut self, id: u16) -> Option<Event> {
        let e = self.slots.get_mut(usize::from(id).checked_sub(1)?)?.take()?;
        self.free.push(id);
        if let Some(ids) = self.by_head.get_mut(&(e.head as u32)) {
            ids.remove(&e.seq);
            if ids.is_empty() {
                self.by_head.remove(&(e.head as u32));
            }
        }
        Some(e)
    }

    /// Closes hold `id` only if it is still the acquisition numbered `seq`.
    pub(crate) fn close_if(&mut self, id: u16, seq: u64) -> Option<Event> {
        let ours = self.slots.get(usize::from(id).checked_sub(1)?)?.is_some_and(|e| e.seq == seq);
        if ours {
            self.close(id)
        } else {
            None
        }
    }

    /// Hold `id` is now a raw count (its handle was given up as one).
    pub(crate) fn make_raw(&mut self, id: u16) {
        if let Some(Some(e)) = self.slots.get_mut(usize::from(id).wrapping_sub(1)) {
            e.raw = true;
        }
    }

    /// The oldest live hold on `head` that `matches`.
    pub(crate) fn find(&self, head: u32, matches: impl Fn(&Event) -> bool) -> Option<u16> {
        let ids = self.by_head.get(&head)?;
        ids.values().copied().find(|&id| self.slots[usize::from(id) - 1].as_ref().is_some_and(&matches))
    }

    /// Closes the holds on `head` that `matches`.
    pub(crate) fn close_all(&mut self, head: u32, matches: impl Fn(&Event) -> bool) {
        let ids: Vec<u16> = self.by_head.get(&head).map_or_else(Vec::new, |ids| {
            ids.values().copied().filter(|&id| self.slots[usize::from(id) - 1].as_ref().is_some_and(&matches)).collect()
        });
        for id in ids {
            self.close(id);
        }
    }

    /// The live holds on `head`, oldest first.
    pub(crate) fn of(&self, head: u32) -> Vec<Event> {
        self.by_head
            .get(&head)
            .map_or_else(Vec::new, |ids| ids.values().filter_map(|&id| self.slots[usize::from(id) - 1]).collect())
    }

    /// Blocks with live holds.
    pub(crate) fn heads(&self) -> impl Iterator<Item = u32> + '_ {
        self.by_head.keys().copied()
    }

    /// Live holds.
    pub(crate) fn len(&self) -> usize {
        self.slots.len() - self.free.len()
    }
}
