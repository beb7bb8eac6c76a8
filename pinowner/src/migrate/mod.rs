//! Migration: movable blocks move out of the way (the kernel's
//! `migrate_pages`, as `alloc_contig_range` and compaction use it).
//!
//! A movable allocation ([`MovableBlock`]) does not keep its address: its
//! handles reach the block through one indirection, an entry whose word
//! holds the block's head, a count of live borrows and a `FROZEN` bit. A
//! borrow adds to the count (waiting while `FROZEN`), so the block stays
//! put while any borrow lives. Holders that keep their own references to
//! the block register a [`Mover`] and are asked to follow it.
//!
//! Moving one block (`PageArena::migrate_block`), with no zone lock held:
//!
//! 1. **freeze the entry**: compare-and-swap its word from "this head, no
//!    borrows" to `FROZEN` (new borrows wait; the swap acquires what every
//!    ended borrow released);
//! 2. **freeze the block**: compare-and-swap its state word from exactly
//!    the holders' references and no pins to the same with `EXCLUSIVE`, so
//!    no acquisition by page number succeeds from then on (a count taken
//!    by anyone else in between fails the swap: the block has a holder
//!    without a mover and stays);
//! 3. **allocate the destination** outside any isolated window (the movable
//!    zone first, then the normal zone; only the normal zone for a
//!    long-term pin), copy the bytes;
//! 4. **ask every mover** in registration order; a refusal puts back the
//!    ones that moved, frees the destination and unfreezes both words;
//! 5. **switch**: the destination gets the holders' references, the entry's
//!    word gets the new head (unfreezing it: waiting borrows see the new
//!    block, with its bytes), and the old block's word drops every count in
//!    one swap (so a `get(pfn)` on the old page fails: never resurrected)
//!    and the block is freed (into its window, if one is isolated).

mod compact;
mod handle;
mod mover;
mod pins;

use std::sync::Arc;

pub use compact::Compaction;
pub use handle::{MovableBlock, MoveBorrow, MoveBorrowMut};
pub use mover::{Migration, MoveOutcome, Mover};
pub use pins::{LongtermPinError, RangePin, RangePinError};

use crate::page::slot::{Acquirer, Who};
use crate::page::state::{self, COUNTS, EXCLUSIVE, FREE, GEN_ONE, HEAD, MOVABLE, PCP, REF_ONE, TRACKED};
use crate::reservation::Reason;
use crate::sync::Mutex;
use crate::sync::Ordering::{Acquire, Relaxed, Release};
use crate::sync::{AtomicPtr, AtomicU32, AtomicU64, TrackedArc};
use crate::{PageArena, Pfn};

/// Why a busy block could not be moved out of a window.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Unmovable {
    /// The block has pins (a pinned page never moves); the block's
    /// attribution names the pinner when it is known.
    Pinned,
    /// Not a movable allocation: a [`Block`](crate::Block), a run or a raw
    /// allocation, whose owner keeps the address.
    NotMovable,
    /// Movable, but held by `holders` holders without a mover (references
    /// or pins taken by page number or through a page handle).
    NoMover {
        /// Counts on the block beyond its movable handles.
        holders: u32,
    },
    /// A borrow of the movable handle was live on every pass.
    Borrowed,
    /// A holder's mover did not move it.
    Refused {
        /// The holder that refused (where it registered its mover).
        by: Option<Acquirer>,
        /// True for [`MoveOutcome::Busy`] on the last pass, false for
        /// [`MoveOutcome::Refused`] (or a mover that panicked).
        temporary: bool,
    },
    /// No free block of its order outside the window.
    NoDestination,
    /// Being freed by another thread when the reservation's deadline
    /// passed.
    InFlight,
    /// Quarantined by pattern poisoning: written after it was freed (see
    /// [`PageArena::poison_errors`](crate::PageArena::poison_errors)), so
    /// kept allocated for good and held by nobody.
    Quarantined,
}

impl Unmovable {
    /// True if trying again later may succeed without any holder letting
    /// go (a borrow ending, a busy mover, memory freed elsewhere).
    pub fn is_temporary(self) -> bool {
        matches!(
            self,
            Unmovable::Borrowed
                | Unmovable::Refused { temporary: true, .. }
                | Unmovable::NoDestination
                | Unmovable::InFlight
        )
    }
}

impl core::fmt::Display for Unmovable {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self {
            Unmovable::Pinned => f.write_str("pinned"),
            Unmovable::NotMovable => f.write_str("not movable"),
            Unmovable::NoMover { holders } => write!(f, "{holders} holders without a mover"),
            Unmovable::Borrowed => f.write_str("borrowed"),
            Unmovable::Refused { by, temporary } => {
                let what = if *temporary { "busy" } else { "refused" };
                match by {
                    Some(a) => write!(f, "{what} by {a}"),
                    None => f.write_str(what),
                }
            }
            Unmovable::NoDestination => f.write_str("no free block outside the window"),
            Unmovable::InFlight => f.write_str("being freed"),
            Unmovable::Quarantined => f.write_str("quarantined (written after free)"),
        }
    }
}

/// How often a page moved, and why last (page_owner's "Page has been
/// migrated, last migrate reason").
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Migrated {
    /// Moves of the block this page belongs to, counted across blocks (a
    /// page's count is its block's when it moved here).
    pub times: u32,
    /// Why it moved last.
    pub last_reason: Reason,
}

/// Where a destination may come from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Dest {
    /// The movable zone, then the normal zone.
    Any,
    /// The normal zone only (before a long-term pin).
    Normal,
}

// ----- entries ------------------------------------------------------------

/// The entry word: the block's head in the low 32 bits, live borrows above.
const PFN_MASK: u64 = u32::MAX as u64;
const BORROW_ONE: u64 = 1 << 32;
const BORROW_MASK: u64 = ((1 << 24) - 1) << 32;
/// A migration owns the block: borrows wait.
const FROZEN: u64 = 1 << 62;

/// One registered holder of a movable block.
#[derive(Clone)]
pub(crate) struct Holder {
    pub(crate) key: u64,
    pub(crate) mover: Option<Arc<dyn Mover>>,
    pub(crate) who: Option<Acquirer>,
    /// The ticket of its reference, valid while the block has not moved
    /// since (after a move the references are the destination's,
    /// unrecorded): see [`Holder::ticket`].
    ticket: Option<crate::arena::Ticket>,
    /// The entry's move count when the ticket was taken.
    moves: u32,
}

impl Holder {
    /// The holder's ticket if the block has not moved since it was taken
    /// (read inside a borrow, which orders it after the last move).
    pub(crate) fn ticket(&self, entry: &Entry) -> Option<crate::arena::Ticket> {
        self.ticket.filter(|_| self.moves == entry.moves.load(Relaxed))
    }
}

/// The indirection of one movable allocation.
pub(crate) struct Entry {
    word: AtomicU64,
    pub(crate) order: u8,
    /// Who allocated it (the destination's owner slot keeps naming it).
    pub(crate) owner: Who,
    /// The handles that hold a reference each, in registration order.
    /// Changed only inside a borrow, so stable while the entry is frozen.
    pub(crate) holders: Mutex<Vec<Holder>>,
    /// How many of `holders` have a mover: a migration of a block whose
    /// holders have none (the common case) reads the holders' count and
    /// this, not the list.
    movers: AtomicU32,
    /// `holders.len()`, readable without the lock.
    handles: AtomicU32,
    /// Moves so far (bumped by the frozen migration only): a holder's
    /// ticket is valid while this has not changed since it was taken.
    moves: AtomicU32,
    next_key: AtomicU64,
}

impl Entry {
    /// Starts a borrow: waits while a migration owns the block; returns the
    /// head, which stays the block's until [`leave`](Self::leave).
    pub(crate) fn enter(&self) -> u32 {
        let mut backoff = crate::sync::Backoff::default();
        loop {
            if let Some(head) = self.try_enter() {
                return head;
            }
            backoff.sleep();
        }
    }

    /// Starts a borrow unless a migration owns the block.
    pub(crate) fn try_enter(&self) -> Option<u32> {
        let mut w = self.word.load(Acquire);
        while w & FROZEN == 0 {
            assert!(w & BORROW_MASK != BORROW_MASK, "too many live borrows of one movable block");
            match self.word.compare_exchange_weak(w, w + BORROW_ONE, Acquire, Acquire) {
                Ok(_) => return Some((w & PFN_MASK) as u32),
                Err(cur) => w = cur,
            }
        }
        None
    }

    /// Ends a borrow: what it did to the bytes happens before any later
    /// migration's copy.
    pub(crate) fn leave(&self) {
        self.word.fetch_sub(BORROW_ONE, Release);
    }

    /// The head right now (it may change as soon as this returns, unless
    /// the caller borrows).
    pub(crate) fn head(&self) -> u32 {
        (self.word.load(Acquire) & PFN_MASK) as u32
    }

    pub(crate) fn add_holder(
        &self,
        mover: Option<Arc<dyn Mover>>,
        who: Option<Acquirer>,
        ticket: Option<crate::arena::Ticket>,
    ) -> u64 {
        let key = self.next_key.fetch_add(1, Relaxed);
        let mut holders = self.holders.lock();
        if mover.is_some() {
            self.movers.fetch_add(1, Relaxed);
        }
        let moves = self.moves.load(Relaxed);
        holders.push(Holder { key, mover, who, ticket, moves });
        self.handles.store(holders.len() as u32, Relaxed);
        key
    }

    /// Removes the holder registered as `key` (inside a borrow); returns
    /// its ticket (if still valid) and whether it was the last holder.
    pub(crate) fn remove_holder(&self, key: u64) -> (Option<crate::arena::Ticket>, bool) {
        let mut holders = self.holders.lock();
        let i = holders.iter().position(|h| h.key == key).expect("a movable handle is registered");
        let h = holders.remove(i);
        if h.mover.is_some() {
            self.movers.fetch_sub(1, Relaxed);
        }
        self.handles.store(holders.len() as u32, Relaxed);
        (h.ticket(self), holders.is_empty())
    }
}

crate::sync::thread_local_const! {
    /// Blocks and pages this thread's reservations and compactions have
    /// moved (plain adds, no shared counter): a compaction counts its own
    /// moves as the difference, exactly, whatever other threads move
    /// meanwhile.
    static MOVED_HERE: core::cell::Cell<(u64, u64)> = const { core::cell::Cell::new((0, 0)) };
}

/// Blocks and pages the calling thread's reservations and compactions
/// have moved so far.
pub(crate) fn moved_here() -> (u64, u64) {
    MOVED_HERE.with(|m| m.get())
}

/// Counts a block of `order` a reservation or compaction of this thread
/// moved.
pub(crate) fn count_moved_here(order: u8) {
    MOVED_HERE.with(|m| {
        let (blocks, pages) = m.get();
        m.set((blocks + 1, pages + (1u64 << order)));
    });
}

/// The arena's movable allocations: entries by block head, and every
/// page's migration history. Made on the first movable allocation (16
/// bytes per page of the arena).
///
/// `by_head[head]` is the entry of the movable block headed by `head`
/// (null for any other page), a pointer made by `Arc::into_raw` that owns
/// one strong count. A move re-keys its entry with two stores and no lock
/// (store at the new head, then clear the old one; the count moves with
/// it). Only readers that clone an entry out of the table
/// ([`entry_at`](Self::entry_at)) and the removal of an entry (the
/// count's release, [`PageArena::drop_entry`]) take `readers`: so a
/// reader never clones an entry whose count is being dropped.
pub(crate) struct MoveTable {
    /// Block head → its entry (see above).
    by_head: Box<[AtomicPtr<Entry>]>,
    /// Serialises cloning an entry out of `by_head` with removing one.
    readers: Mutex<()>,
    /// Per page: moves (low 32 bits) and the last reason's index in
    /// `reasons` (high 32 bits); 0 if it never moved.
    history: Box<[AtomicU64]>,
    reasons: Mutex<Vec<Reason>>,
}

impl core::fmt::Debug for MoveTable {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("MoveTable")
            .field("entries", &self.by_head.iter().filter(|p| !p.load(Relaxed).is_null()).count())
            .finish_non_exhaustive()
    }
}

impl Drop for MoveTable {
    fn drop(&mut self) {
        for slot in &*self.by_head {
            let p = slot.load(Acquire);
            if !p.is_null() {
                // SAFETY: the slot owns a count of this entry (a leaked
                // handle's block): released once, here.
                drop(unsafe { TrackedArc::from_raw(p) });
            }
        }
    }
}

impl MoveTable {
    fn new(pages: u32) -> MoveTable {
        MoveTable {
            by_head: (0..pages).map(|_| AtomicPtr::new(core::ptr::null_mut())).collect(),
            readers: Mutex::new(()),
            history: (0..pages).map(|_| AtomicU64::new(0)).collect(),
            reasons: Mutex::new(Vec::new()),
        }
    }

    /// The entry of the movable block headed by `head`, if it is one.
    pub(crate) fn entry_at(&self, head: u32) -> Option<TrackedArc<Entry>> {
        let slot = self.by_head.get(head as usize)?;
        let _readers = self.readers.lock();
        let p = slot.load(Acquire);
        if p.is_null() {
            return None;
        }
        // The slot's own count, borrowed (never dropped here) to clone ours.
        // SAFETY: `p` is the slot's count (`Arc::into_raw`), released only under `readers`, held.
        let slots = core::mem::ManuallyDrop::new(unsafe { TrackedArc::from_raw(p) });
        Some(TrackedArc::clone(&slots))
    }

    /// True if `head` heads a movable block (no lock: nothing is cloned).
    fn has_entry(&self, head: u32) -> bool {
        self.by_head.get(head as usize).is_some_and(|p| !p.load(Relaxed).is_null())
    }

    /// The reason's index: the four built-in reasons are fixed (no lock on
    /// the moving path), a caller's own label is interned.
    #[inline]
    fn reason_index(&self, reason: Reason) -> u64 {
        match reason {
            Reason::Contig => 0,
            Reason::Compaction => 1,
            Reason::Shrink => 2,
            Reason::LongtermPin => 3,
            Reason::Custom(_) => {
                let mut reasons = self.reasons.lock();
                let i = match reasons.iter().position(|r| *r == reason) {
                    Some(i) => i,
                    None => {
                        reasons.push(reason);
                        reasons.len() - 1
                    }
                };
                4 + i as u64
            }
        }
    }

    fn reason_at(&self, index: u64) -> Reason {
        match index {
            0 => Reason::Contig,
            1 => Reason::Compaction,
            2 => Reason::Shrink,
            3 => Reason::LongtermPin,
            i => self.reasons.lock()[(i - 4) as usize],
        }
    }

    pub(crate) fn migrated(&self, pfn: u32) -> Option<Migrated> {
        let h = self.history.get(pfn as usize)?.load(Relaxed);
        let times = h as u32;
        if times == 0 {
            return None;
        }
        let last_reason = self.reason_at(h >> 32);
        Some(Migrated { times, last_reason })
    }
}

impl PageArena {
    /// The movable table, made on first use.
    pub(crate) fn moves(&self) -> &MoveTable {
        self.moves.get_or_init(|| MoveTable::new(self.pages))
    }

    /// A page's migration history, if it ever received a moved block.
    pub(crate) fn migrated(&self, pfn: u32) -> Option<Migrated> {
        self.moves.get()?.migrated(pfn)
    }

    /// Registers a freshly allocated movable block (one reference, the
    /// allocating handle's).
    pub(crate) fn new_entry(&self, head: u32, order: u8, owner: Who) -> TrackedArc<Entry> {
        let entry = TrackedArc::new(Entry {
            word: AtomicU64::new(head as u64),
            order,
            owner,
            holders: Mutex::new(Vec::new()),
            movers: AtomicU32::new(0),
            handles: AtomicU32::new(0),
            moves: AtomicU32::new(0),
            next_key: AtomicU64::new(0),
        });
        let old = self.moves().by_head[head as usize].swap(TrackedArc::into_raw(entry.clone()).cast_mut(), Release);
        debug_assert!(old.is_null(), "page {head} already heads a movable block");
        entry
    }

    /// Forgets the entry of the block headed by `head` (its last handle is
    /// letting go, inside a borrow).
    pub(crate) fn drop_entry(&self, head: u32) {
        let table = self.moves();
        let p = {
            let _readers = table.readers.lock();
            table.by_head[head as usize].swap(core::ptr::null_mut(), Acquire)
        };
        if !p.is_null() {
            // SAFETY: the slot owned this count (see `MoveTable`); it is out
            // of the table, and no reader is cloning it any more.
            drop(unsafe { TrackedArc::from_raw(p) });
        }
    }

    /// True if the block headed by `head` (word `w`) is a movable
    /// allocation: it moves once its pins and holders without a mover let
    /// go.
    pub(crate) fn is_movable_allocation(&self, head: u32, w: u64) -> bool {
        w & MOVABLE != 0 && self.moves.get().is_some_and(|t| t.has_entry(head))
    }

    /// Why the busy block headed by `head` (word `w`) cannot be moved, or
    /// `None` if it is a candidate (a movable allocation held only by its
    /// handles, none borrowing).
    pub(crate) fn why_unmovable(&self, head: u32, w: u64) -> Option<Unmovable> {
        if state::pins(w) != 0 {
            return Some(Unmovable::Pinned);
        }
        if w & MOVABLE == 0 {
            return Some(Unmovable::NotMovable);
        }
        let Some(entry) = self.moves.get().and_then(|t| t.entry_at(head)) else {
            // A movable allocation whose handles are all gone: what holds it
            // now are counts without a mover.
            return Some(Unmovable::NoMover { holders: state::refs(w) });
        };
        let handles = entry.handles.load(Relaxed);
        if state::refs(w) > handles {
            return Some(Unmovable::NoMover { holders: state::refs(w) - handles });
        }
        None
    }

    /// Moves the block headed by `head` (see the module docs). Returns the
    /// new head, or why the block stays.
    pub(crate) fn migrate_block(&self, head: u32, reason: Reason, dest: Dest) -> Result<u32, Unmovable> {
        let Some(entry) = self.moves.get().and_then(|t| t.entry_at(head)) else {
            return Err(Unmovable::NotMovable);
        };
        self.migrate_entry(&entry, head, reason, dest)
    }

    /// [`migrate_block`](Self::migrate_block) for a caller that has the
    /// block's entry (a handle moving its own block).
    pub(crate) fn migrate_entry(
        &self,
        entry: &TrackedArc<Entry>,
        head: u32,
        reason: Reason,
        dest: Dest,
    ) -> Result<u32, Unmovable> {
        // 1. Freeze the entry.
        let ew = entry.word.load(Acquire);
        if ew & PFN_MASK != head as u64 || ew & FROZEN != 0 {
            return Err(Unmovable::Borrowed); // moving or moved meanwhile
        }
        if ew & BORROW_MASK != 0 {
            return Err(Unmovable::Borrowed);
        }
        if entry.word.compare_exchange(ew, ew | FROZEN, Acquire, Relaxed).is_err() {
            return Err(Unmovable::Borrowed);
        }
        // Holders change only inside a borrow: stable while frozen (the
        // freezing swap acquired their counts). Their movers are taken out,
        // without the lock when none has one: the lock is not held across
        // the destination's allocation or the movers, as a reservation
        // holding a zone lock may look at the holders.
        let handles = entry.handles.load(Relaxed);
        if entry.movers.load(Relaxed) == 0 {
            return self.migrate_frozen(entry, head, reason, dest, handles, &[]);
        }
        let movers: Vec<(Arc<dyn Mover>, Option<Acquirer>)> =
            entry.holders.lock().iter().filter_map(|h| h.mover.clone().map(|m| (m, h.who))).collect();
        self.migrate_frozen(entry, head, reason, dest, handles, &movers)
    }

    /// Steps 2 to 5 of a move, once the entry is frozen (see the module
    /// docs), with the holders' count and their movers.
    fn migrate_frozen(
        &self,
        entry: &TrackedArc<Entry>,
        head: u32,
        reason: Reason,
        dest: Dest,
        handles: u32,
        movers: &[(Arc<dyn Mover>, Option<Acquirer>)],
    ) -> Result<u32, Unmovable> {
        let unfreeze_entry = || entry.word.fetch_and(!FROZEN, Release);
        // 2. Freeze the block.
        let d = self.desc(head);
        let old = d.state.load(Relaxed);
        let why = if old & (HEAD | FREE | EXCLUSIVE) != HEAD {
            Some(Unmovable::Borrowed)
        } else if state::pins(old) != 0 {
            Some(Unmovable::Pinned)
        } else if state::refs(old) != handles {
            Some(Unmovable::NoMover { holders: state::refs(old).saturating_sub(handles) })
        } else {
            None
        };
        if let Some(why) = why {
            unfreeze_entry();
            return Err(why);
        }
        if d.state.compare_exchange(old, old | EXCLUSIVE, Acquire, Relaxed).is_err() {
            unfreeze_entry();
            let now = d.state.load(Relaxed);
            return Err(self.why_unmovable(head, now).unwrap_or(Unmovable::Borrowed));
        }
        let frozen = old | EXCLUSIVE;
        let unfreeze = || {
            d.state.fetch_and(!EXCLUSIVE, Release);
            unfreeze_entry();
        };
        // 3. The destination: outside every isolated window (isolated free
        // blocks are on no list), with the allocation's owner.
        let order = entry.order;
        let Ok((new, ticket)) = self.alloc_in(order, dest == Dest::Any, entry.owner, true) else {
            unfreeze();
            return Err(Unmovable::NoDestination);
        };
        if dest == Dest::Normal {
            self.desc(new).state.fetch_or(MOVABLE, Relaxed);
        }
        // Written below: no longer known to be zero.
        self.handed_out(new, order);
        let (old_off, len) = self.byte_range(head, order);
        let (new_off, _) = self.byte_range(new, order);
        // SAFETY: the old block is frozen (no borrow live or starting, no count
        // addable through the API): nothing writes it while this lives.
        let old_bytes = unsafe { self.region.bytes(old_off, len) };
        // SAFETY: the new block was just allocated for this migration and
        // no handle to it exists: the bytes are ours.
        let new_bytes = unsafe { self.region.bytes_mut(new_off, len) };
        let m = Migration {
            old: head as Pfn,
            new: new as Pfn,
            order,
            reason,
            old_bytes,
            new_bytes: core::cell::Cell::new(Some(new_bytes)),
            copied: core::cell::Cell::new(false),
        };
        // Which movers copy the bytes themselves: asked once each, shielded
        // (user code: a mover that panics there refuses, before anyone is
        // asked to move).
        let mut refusal = None;
        let mut copies = Vec::with_capacity(movers.len());
        for (mv, who) in movers {
            let mut c = None;
            crate::callback::shielded(|| c = Some(mv.copies_bytes()));
            if c.is_none() {
                refusal = Some(Unmovable::Refused { by: *who, temporary: false });
                break;
            }
            copies.push(c == Some(true));
        }
        // 4. Ask every mover. One that does not copy is promised the bytes
        // at the new address when it is asked: copied before it, even when
        // a mover registered after it would have copied them itself (that
        // one's `copy_with` then does nothing, as after the arena's copy).
        let mut moved: Vec<&Arc<dyn Mover>> = Vec::new();
        let asked = if refusal.is_some() { 0 } else { movers.len() };
        for ((mover, who), &copies) in movers[..asked].iter().zip(&copies) {
            if !copies {
                m.copy_if_needed();
            }
            let mut answer = MoveOutcome::Refused;
            crate::callback::shielded(|| answer = mover.migrate(&m));
            match answer {
                MoveOutcome::Moved => moved.push(mover),
                MoveOutcome::Busy => {
                    refusal = Some(Unmovable::Refused { by: *who, temporary: true });
                    break;
                }
                MoveOutcome::Refused => {
                    refusal = Some(Unmovable::Refused { by: *who, temporary: false });
                    break;
                }
            }
        }
        if let Some(why) = refusal {
            for mover in moved.into_iter().rev() {
                crate::callback::shielded(|| mover.putback(&m));
            }
            self.release_ticket(new, state::Count::Ref, Some(ticket));
            unfreeze();
            return Err(why);
        }
        m.copy_if_needed();
        // 5. Switch. The destination holds the handles' references.
        if handles > 1 {
            self.desc(new).state.fetch_add(u64::from(handles - 1) * REF_ONE, Relaxed);
        }
        let table = self.moves();
        // Re-key: the slot's count moves from the old head to the new one
        // (a reader sees the entry at either, both live).
        let p = table.by_head[head as usize].load(Relaxed);
        debug_assert_eq!(p.cast_const(), TrackedArc::as_ptr(entry));
        table.by_head[new as usize].store(p, Release);
        table.by_head[head as usize].store(core::ptr::null_mut(), Release);
        let pages = 1usize << order;
        let before = table.history[head as usize].load(Relaxed) as u32;
        let record = u64::from(before.saturating_add(1)) | table.reason_index(reason) << 32;
        for p in &table.history[new as usize..new as usize + pages] {
            p.store(record, Relaxed);
        }
        // A move is not an access (the kernel's `folio_migrate_flags`
        // carries `PG_idle` and `PG_young` over): the idle detector and its
        // marks go with the bytes, before any holder can reach the new
        // block (it is ours alone until the entry names it).
        self.carry_idle(head, new, d.state.load(Relaxed));
        // Every holder's ticket is now stale (see `Holder::ticket`).
        entry.moves.store(entry.moves.load(Relaxed).wrapping_add(1), Relaxed);
        entry.word.store(new as u64, Release);
        // The old block: every count gone in one swap (a by-number
        // acquisition needs a count, so the old page is never resurrected),
        // then freed like a last release.
        let zone = self.zone_for(head);
        let mut was = frozen;
        let (dead, cache) = loop {
            // Only flags move on a frozen block (an arming's `TRACKED`).
            debug_assert_eq!(was & (COUNTS | EXCLUSIVE), frozen & (COUNTS | EXCLUSIVE));
            let dead = (was & !(COUNTS | EXCLUSIVE)).wrapping_add(GEN_ONE);
            // Like a last release: into the thread's cache when its order
            // is cached and no window is isolated over it (decided in this
            // swap); an armed block goes to the lists, after its record.
            let cache = if was & TRACKED == 0 { Self::cache_bound(zone, was) } else { None };
            let word = if cache.is_some() { crate::alloc::free_head_word(dead, order, PCP) } else { dead };
            match d.state.compare_exchange_weak(was, word, Release, Relaxed) {
                Ok(_) => break (dead, cache),
                Err(cur) => was = cur,
            }
        };
        if was & TRACKED != 0 {
            self.record_migrated(head, new, was, dead);
        }
        self.free_released(zone, cache, head, order);
        Ok(new)
    }

    /// Carries the idle state of the block headed by `old` (frozen, word
    /// `word`) to its destination `new` (allocated for the move, no handle
    /// to it yet): the `IDLE` detector bit and the `WATCHED` and `YOUNG`
    /// marks (see [`crate::idle`]), which leave the old head.
    fn carry_idle(&self, old: u32, new: u32, word: u64) {
        use crate::page::ext::Mark;
        if word & state::IDLE != 0 {
            self.desc(new).state.fetch_or(state::IDLE, Relaxed);
        }
        for mark in [Mark::Watched, Mark::Young] {
            if self.ext.test(mark, old) {
                self.ext.set(mark, new, 1);
                self.ext.clear(mark, old, 1);
            } else if self.ext.test(mark, new) {
                // A stale mark of an earlier block headed here.
                self.ext.clear(mark, new, 1);
            }
        }
    }
}
