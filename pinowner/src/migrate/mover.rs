//! Movers: what a holder that keeps its own references to a page does when
//! the page moves (the pin page control RFC's `migrate(page, newpage)`, with
//! its putback).

use core::cell::Cell;
use core::fmt;

use crate::reservation::Reason;
use crate::Pfn;

/// A mover's answer to [`Mover::migrate`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum MoveOutcome {
    /// The holder's references now name the new block.
    Moved,
    /// Not now (the holder is using the page): the migration is put back and
    /// tried again on a later pass, a bounded number of times (like the
    /// kernel's `migrate_pages`, which tries ten).
    Busy,
    /// Never: the page stays where it is, and the failure names this holder.
    Refused,
}

/// A holder that can follow its block to a new address.
///
/// Registered with a movable allocation
/// ([`alloc_movable_with`](crate::PageArena::alloc_movable_with)) or with a
/// further holder ([`MovableBlock::share`](crate::MovableBlock::share)).
/// When a reservation, compaction or a long-term pin moves the block, every
/// holder's mover is asked in registration order; the block moves only if
/// all answer [`Moved`](MoveOutcome::Moved). If one does not, the movers
/// that already answered `Moved` are asked to [`putback`](Self::putback),
/// in reverse order, and the block stays where it was.
///
/// Movers run on the thread that moves the block, with the block frozen:
/// its handles' borrows wait until the move ends. A mover must not borrow
/// the block being moved, start a reservation of its zone or take a lock
/// that a borrower of the block may hold while borrowing. A mover that
/// panics counts as a refusal (and is counted in
/// [`TrackerStats::callback_panics`](crate::tracker::TrackerStats::callback_panics)).
///
/// Closures `Fn(&Migration) -> MoveOutcome` are movers with nothing to put
/// back.
pub trait Mover: Send + Sync {
    /// Points the holder's references at `m.new_pfn()` instead of
    /// `m.old_pfn()`.
    /// By the time it is called the bytes were copied, unless
    /// [`copies_bytes`](Self::copies_bytes) says this mover copies them.
    fn migrate(&self, m: &Migration<'_>) -> MoveOutcome;

    /// Undoes a [`migrate`](Self::migrate) that answered `Moved`, because a
    /// later holder did not: the references go back to `m.old_pfn()`, which
    /// keeps the bytes.
    fn putback(&self, m: &Migration<'_>) {
        let _ = m;
    }

    /// True if this mover copies the bytes itself (with
    /// [`Migration::copy_with`]); then the arena does not copy before
    /// asking it. If it answers `Moved` without having copied, the arena
    /// copies. A mover that does not copy is always asked with the bytes
    /// copied: if one registered before this mover does not copy, the
    /// arena copies before asking that one, and this mover's `copy_with`
    /// does nothing. Asked once per move, before any mover moves; a panic
    /// here is a refusal.
    fn copies_bytes(&self) -> bool {
        false
    }
}

impl<F: Fn(&Migration<'_>) -> MoveOutcome + Send + Sync> Mover for F {
    fn migrate(&self, m: &Migration<'_>) -> MoveOutcome {
        self(m)
    }
}

/// One block being moved, as its movers see it.
pub struct Migration<'a> {
    pub(crate) old: Pfn,
    pub(crate) new: Pfn,
    pub(crate) order: u8,
    pub(crate) reason: Reason,
    pub(crate) old_bytes: &'a [u8],
    /// The destination's bytes: the migration owns the new block until it
    /// ends (no handle to it exists), and lends them once.
    pub(crate) new_bytes: Cell<Option<&'a mut [u8]>>,
    pub(crate) copied: Cell<bool>,
}

impl Migration<'_> {
    /// The block's head before the move.
    pub fn old_pfn(&self) -> Pfn {
        self.old
    }

    /// The block's head after the move.
    pub fn new_pfn(&self) -> Pfn {
        self.new
    }

    /// The block's order (both blocks have it).
    pub fn order(&self) -> u8 {
        self.order
    }

    /// Why the block moves.
    pub fn reason(&self) -> Reason {
        self.reason
    }

    /// The bytes at the old address (frozen: nothing writes them through
    /// the arena's API during the move).
    pub fn old_bytes(&self) -> &[u8] {
        self.old_bytes
    }

    /// Fills the new block: `f(old, new)`. For a mover whose
    /// [`copies_bytes`](Mover::copies_bytes) is true; the first call gets
    /// the bytes, later calls (and calls after the arena copied) do nothing
    /// and return false.
    pub fn copy_with(&self, f: impl FnOnce(&[u8], &mut [u8])) -> bool {
        match self.new_bytes.take() {
            Some(new) => {
                f(self.old_bytes, new);
                self.copied.set(true);
                true
            }
            None => false,
        }
    }

    /// The arena's copy, if nobody copied yet.
    pub(crate) fn copy_if_needed(&self) {
        self.copy_with(|old, new| new.copy_from_slice(old));
    }
}

impl fmt::Debug for Migration<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Migration")
            .field("old", &self.old)
            .field("new", &self.new)
            .field("order", &self.order)
            .field("reason", &self.reason)
            .field("copied", &self.copied.get())
            .finish()
    }
}
