//! The movable handle and its borrows.

use core::ptr::NonNull;
use std::sync::Arc;

use super::{Entry, Migrated, Mover};
use crate::arena::Ticket;
use crate::error::{AcquireError, AllocError, BorrowError};
use crate::handle::{ArenaRef, PagePin, PageRef};
use crate::page::state::{Count, EXCLUSIVE};
use crate::page::PageState;
use crate::sync::Ordering::{Relaxed, Release};
use crate::{PageArena, Pfn};

/// A movable allocation: a block of `2^order` pages whose owner does not
/// keep its address, so reservations, compaction and long-term pins may
/// move it (the kernel's movable pages, with the handle as the page table
/// entry that migration rewrites).
///
/// The handle holds one reference on whatever block currently holds the
/// data, and reaches it through one indirection. Its bytes are lent only
/// through a [`MoveBorrow`], which keeps the block in place while it
/// lives; between borrows the block may move, so [`pfn`](Self::pfn) and
/// the borrow's address can differ from one borrow to the next. A move
/// freezes the block: a borrow started meanwhile waits until the move has
/// ended and then sees the new block, bytes copied.
///
/// Other holders make the block unmovable unless they have a mover: a
/// [`pin`](Self::pin) or [`page_ref`](Self::page_ref) (and any count by
/// page number) keeps it in place while it lives; a
/// [`share`](Self::share) is a second handle with its own [`Mover`], asked
/// (with the allocation's mover, if any) whenever the block moves.
///
/// ```
/// use pinowner::{PageArena, Reason};
///
/// let arena = PageArena::builder().pages(64).movable_pages(32).build()?;
/// let mut frame = arena.alloc_movable(0)?;
/// frame.borrow_mut().unwrap().fill(7);
/// let before = frame.pfn();
/// // A reservation of the whole movable zone moves the frame out of it.
/// let run = arena.reserve_range(32, 32, Reason::Shrink)?;
/// assert_ne!(frame.pfn(), before);
/// assert!(frame.borrow().iter().all(|&b| b == 7));
/// # drop(run);
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
pub struct MovableBlock<A: ArenaRef> {
    arena: A,
    entry: crate::sync::TrackedArc<Entry>,
    /// This handle's registration among the entry's holders.
    key: u64,
}

// `Entry` is shared by atomics and a mutex; the handle is like an `Arc`.
const _: () = {
    const fn sync_send<T: Send + Sync>() {}
    sync_send::<MovableBlock<&PageArena>>();
};

impl<P: crate::Attribution> PageArena<P> {
    /// Allocates a movable block: from the movable zone, falling back to
    /// the normal zone when the movable zone has no block of that order (the
    /// kernel's rule: movable allocations may use either zone, unmovable
    /// ones never use the movable zone). The block may move whenever no
    /// borrow, pin or holder without a mover holds it; see
    /// [`MovableBlock`].
    ///
    /// # Errors
    ///
    /// As for [`alloc`](Self::alloc).
    #[track_caller]
    pub fn alloc_movable(&self, order: u8) -> Result<MovableBlock<&Self>, AllocError> {
        MovableBlock::alloc(self, order, None, false)
    }

    /// Like [`alloc_movable`](Self::alloc_movable), with the bytes zeroed.
    ///
    /// # Errors
    ///
    /// As for [`alloc`](Self::alloc).
    #[track_caller]
    pub fn alloc_movable_zeroed(&self, order: u8) -> Result<MovableBlock<&Self>, AllocError> {
        MovableBlock::alloc(self, order, None, true)
    }

    /// Like [`alloc_movable`](Self::alloc_movable), with a mover: a holder
    /// that keeps its own references to the block (a buffer pool's page
    /// table) and is asked to follow it when it moves.
    ///
    /// # Errors
    ///
    /// As for [`alloc`](Self::alloc).
    #[track_caller]
    pub fn alloc_movable_with(
        &self,
        order: u8,
        mover: impl Mover + 'static,
    ) -> Result<MovableBlock<&Self>, AllocError> {
        MovableBlock::alloc(self, order, Some(Arc::new(mover)), false)
    }

    /// [`alloc_movable`](Self::alloc_movable) for an arena shared through
    /// `Arc`.
    ///
    /// # Errors
    ///
    /// As for [`alloc`](Self::alloc).
    #[track_caller]
    pub fn alloc_movable_owned(self: &Arc<Self>, order: u8) -> Result<MovableBlock<Arc<Self>>, AllocError> {
        MovableBlock::alloc(self.clone(), order, None, false)
    }

    /// [`alloc_movable_with`](Self::alloc_movable_with) for an arena shared
    /// through `Arc`.
    ///
    /// # Errors
    ///
    /// As for [`alloc`](Self::alloc).
    #[track_caller]
    pub fn alloc_movable_owned_with(
        self: &Arc<Self>,
        order: u8,
        mover: impl Mover + 'static,
    ) -> Result<MovableBlock<Arc<Self>>, AllocError> {
        MovableBlock::alloc(self.clone(), order, Some(Arc::new(mover)), false)
    }
}

impl<A: ArenaRef> MovableBlock<A> {
    #[track_caller]
    fn alloc(arena: A, order: u8, mover: Option<Arc<dyn Mover>>, zeroed: bool) -> Result<Self, AllocError> {
        let who = crate::owner_here();
        // The owner slot names the allocation (here and wherever the block
        // moves) only under the exact policy; the entry's holders name
        // their handles under both (each leaves as its handle drops).
        let exact = <A::Policy as crate::Attribution>::EXACT;
        let slot = if exact { who } else { crate::page::slot::Who::NONE };
        let a = arena.exact();
        let (head, ticket) = a.alloc_in(order, true, who, exact)?;
        if zeroed {
            a.zero_block(head, order);
        } else {
            a.handed_out(head, order);
        }
        let entry = a.new_entry(head, order, slot);
        let key = entry.add_holder(mover, who.acquirer(), Some(ticket));
        Ok(MovableBlock { arena, entry, key })
    }

    /// The block's head page now. It stays the block's only while a borrow
    /// of this handle lives.
    pub fn pfn(&self) -> Pfn {
        self.entry.head() as Pfn
    }

    /// The block's order.
    pub fn order(&self) -> u8 {
        self.entry.order
    }

    /// Pages in the block.
    pub fn pages(&self) -> usize {
        1 << self.entry.order
    }

    /// Bytes in the block.
    pub fn len(&self) -> usize {
        self.pages() << self.arena.exact().page_shift
    }

    /// Never true: a block has at least one page.
    pub fn is_empty(&self) -> bool {
        false
    }

    /// The arena.
    pub fn arena(&self) -> &A {
        &self.arena
    }

    /// The block's state now (its head page's).
    pub fn state(&self) -> PageState {
        let head = self.entry.enter();
        let s = PageState::from_word(self.arena.exact().desc(head).state.load(Relaxed));
        self.entry.leave();
        s
    }

    /// How often the block moved, and why last.
    pub fn migrated(&self) -> Option<Migrated> {
        self.arena.exact().migrated(self.entry.head())
    }

    /// Borrows the bytes, keeping the block in place until the borrow
    /// drops. Waits while the block is being moved (a move copies one
    /// block: microseconds, plus what its movers take).
    pub fn borrow(&self) -> MoveBorrow<'_> {
        let head = self.entry.enter();
        MoveBorrow { arena: self.arena.exact(), entry: &self.entry, head }
    }

    /// Borrows the bytes unless the block is being moved right now.
    pub fn try_borrow(&self) -> Option<MoveBorrow<'_>> {
        let head = self.entry.try_enter()?;
        Some(MoveBorrow { arena: self.arena.exact(), entry: &self.entry, head })
    }

    /// Borrows the bytes mutably: only while this handle is the block's
    /// sole holder (no share, pin or reference).
    ///
    /// # Errors
    ///
    /// [`BorrowError::Shared`] if other holders exist;
    /// [`BorrowError::Exclusive`] if a leaked exclusive guard of the block
    /// (through [`pin`](Self::pin)'s block) keeps it lent out.
    pub fn borrow_mut(&mut self) -> Result<MoveBorrowMut<'_>, BorrowError> {
        let head = self.entry.enter();
        if let Err(e) = self.arena.exact().lend_exclusive(head) {
            self.entry.leave();
            return Err(e);
        }
        let (off, len) = self.arena.exact().byte_range(head, self.entry.order);
        // `EXCLUSIVE` stops any new holder and the borrow stops any move
        // until the guard drops; the guard borrows `self` mutably.
        // SAFETY: so we are and stay the block's only holder (one ref, ours).
        let bytes = unsafe { self.arena.exact().region.bytes_mut(off, len) };
        Ok(MoveBorrowMut { bytes, arena: self.arena.exact(), entry: &self.entry, head })
    }

    /// Another holder of the block with its own mover, asked (after the
    /// holders registered before it) whenever the block moves. The block
    /// is freed when its last handle drops.
    #[track_caller]
    pub fn share(&self, mover: impl Mover + 'static) -> MovableBlock<A> {
        let who = crate::owner_here();
        let head = self.entry.enter();
        let hd = self.arena.exact().desc(head);
        // SAFETY: `hd` is the head descriptor of the block we borrow, `head`
        // its page.
        let ticket = match unsafe { self.arena.acquire_by_policy(hd, head, Count::Ref) } {
            Ok(t) => t,
            Err(e) => {
                self.entry.leave();
                panic!("{e}");
            }
        };
        let key = self.entry.add_holder(Some(Arc::new(mover)), who.acquirer(), Some(ticket));
        self.entry.leave();
        MovableBlock { arena: self.arena.clone(), entry: self.entry.clone(), key }
    }

    /// Pins page `index` of the block where it is now: while the pin lives
    /// the block does not move (the kernel's rule: pinned pages are not
    /// migrated).
    ///
    /// # Errors
    ///
    /// As for [`Block::pin`](crate::Block::pin).
    ///
    /// # Panics
    ///
    /// If `index` is not below [`pages`](Self::pages).
    #[track_caller]
    pub fn pin(&self, index: usize) -> Result<PagePin<A>, AcquireError> {
        let at = core::panic::Location::caller();
        self.with_page(index, |hd, pfn| {
            // SAFETY: `hd` is the borrowed block's head descriptor and `pfn`
            // a page of it.
            let t = unsafe { self.arena.acquire_by_policy_at(hd, pfn, Count::Pin, at) }?;
            Ok(PagePin::from_parts(self.arena.clone(), hd, pfn, t))
        })
    }

    /// A reference on page `index` of the block where it is now: while it
    /// lives the block does not move (it is a holder without a mover).
    ///
    /// # Panics
    ///
    /// As for [`Block::page_ref`](crate::Block::page_ref).
    #[track_caller]
    pub fn page_ref(&self, index: usize) -> PageRef<A> {
        let at = core::panic::Location::caller();
        let r = self.with_page(index, |hd, pfn| {
            // SAFETY: as in `pin`.
            let t = unsafe { self.arena.acquire_by_policy_at(hd, pfn, Count::Ref, at) }?;
            Ok(PageRef::from_parts(self.arena.clone(), hd, pfn, t))
        });
        r.unwrap_or_else(|e: AcquireError| panic!("{e}"))
    }

    /// Moves the block now, to a free block anywhere (the movable zone
    /// first), as compaction does; returns the new head. The user-space
    /// `move_pages`: for a caller that knows a block is in the way.
    ///
    /// # Errors
    ///
    /// Why the block stays (see [`Unmovable`](super::Unmovable)); a block
    /// being moved by someone else right now counts as
    /// [`Borrowed`](super::Unmovable::Borrowed).
    pub fn relocate(&self) -> Result<Pfn, super::Unmovable> {
        let head = self.entry.head();
        self.arena
            .exact()
            .migrate_entry(&self.entry, head, crate::Reason::Compaction, super::Dest::Any)
            .map(|p| p as Pfn)
    }

    /// A long-term pin on page `index` of the block: moved to the normal
    /// zone first if it is in the movable zone; see
    /// [`PageArena::pin_longterm`].
    ///
    /// # Errors
    ///
    /// As for [`PageArena::pin_longterm`].
    #[track_caller]
    pub fn pin_longterm(&self, index: usize) -> Result<PagePin<&PageArena>, super::LongtermPinError> {
        assert!(index < self.pages(), "page {index} is outside a block of {} pages", self.pages());
        let who = crate::owner_here();
        // Through the handle's own entry, not its page number: a move
        // between reading the head and pinning it would pin a freed page,
        // or another block's.
        let a = self.arena.exact();
        a.pin_longterm_entry(&self.entry, index as u32, self.entry.head() as Pfn + index, who)
    }

    /// Turns this handle into an ordinary [`Block`](crate::Block), which
    /// keeps its address: the block never moves again while the block
    /// handle lives (it is a holder without a mover). Other handles of the
    /// block stay valid.
    pub fn into_block(self) -> crate::Block<A> {
        let this = core::mem::ManuallyDrop::new(self);
        let order = this.entry.order;
        let head = this.entry.enter();
        let (ticket, last) = this.unregister();
        if last {
            this.arena.exact().drop_entry(head);
        }
        this.entry.leave();
        // An ordinary allocation from now on (we hold a count: the flag is
        // ours to clear).
        let word = this.arena.exact().desc(head).state.fetch_and(!crate::page::state::MOVABLE, Relaxed);
        let gen = crate::page::state::gen(word);
        let ticket = ticket.unwrap_or(Ticket::unrecorded(gen));
        // SAFETY: `this` is never used or dropped again: its arena and entry
        // are moved out exactly once.
        let (arena, entry) = unsafe { (core::ptr::read(&this.arena), core::ptr::read(&this.entry)) };
        drop(entry);
        crate::Block::new(arena, head, order, ticket)
    }

    /// Removes this handle's registration; returns its ticket and whether
    /// it was the last handle.
    fn unregister(&self) -> (Option<Ticket>, bool) {
        self.entry.remove_holder(self.key)
    }

    fn with_page<T>(
        &self,
        index: usize,
        f: impl FnOnce(&crate::page::Descriptor, u32) -> Result<T, AcquireError>,
    ) -> Result<T, AcquireError> {
        assert!(index < self.pages(), "page {index} is outside a block of {} pages", self.pages());
        let head = self.entry.enter();
        let r = f(self.arena.exact().desc(head), head + index as u32);
        self.entry.leave();
        r
    }
}

impl<A: ArenaRef> Drop for MovableBlock<A> {
    fn drop(&mut self) {
        // Inside a borrow the block stays where it is while this handle's
        // registration and its reference go, together.
        let head = self.entry.enter();
        let (ticket, last) = self.unregister();
        if last {
            self.arena.exact().drop_entry(head);
        }
        match (<A::Policy as crate::Attribution>::EXACT, ticket) {
            (true, _) => self.arena.exact().release_ticket(head, Count::Ref, ticket),
            // A moved handle's ticket is gone (`None`): no hold to close.
            (false, t) => {
                let a = self.arena.exact();
                a.release_counted(a.desc(head), head, Count::Ref, t.map_or(0, |t| t.hold()));
            }
        }
        self.entry.leave();
    }
}

impl<A: ArenaRef> core::fmt::Debug for MovableBlock<A> {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("MovableBlock").field("pfn", &self.pfn()).field("order", &self.order()).finish()
    }
}

impl PageArena {
    /// Drops a count taken with `ticket` (its generation and hold), or by
    /// a handle whose block moved since (`None`: the count is anonymous,
    /// as a raw one).
    pub(crate) fn release_ticket(&self, head: u32, count: Count, ticket: Option<Ticket>) {
        match ticket {
            Some(t) if t.hold() != 0 => self.release_hold(self.desc(head), head, count, Some(t.gen()), t.hold()),
            Some(t) => self.release(head, head, count, Some(t.gen())),
            None => self.release(head, head, count, None),
        }
    }
}

/// A shared borrow of a [`MovableBlock`]'s bytes: the block stays in place
/// while it lives.
///
/// The bytes are shared: other holders may have raw pointers to the block
/// (taken during their own borrows); writing through those while this view
/// lives is their `unsafe` responsibility. A raw pointer taken from a
/// borrow is valid only until the borrow drops: the block may move then.
pub struct MoveBorrow<'b> {
    arena: &'b PageArena,
    entry: &'b Entry,
    head: u32,
}

impl MoveBorrow<'_> {
    /// The block's head page during this borrow.
    pub fn pfn(&self) -> Pfn {
        self.head as Pfn
    }

    /// The bytes.
    pub fn bytes(&self) -> &[u8] {
        self.arena.exact().touched(self.arena.exact().desc(self.head));
        let (off, len) = self.arena.exact().byte_range(self.head, self.entry.order);
        // Safe code writes the bytes only through `MoveBorrowMut`, which
        // needs the handle mutably and sole; raw-pointer writers promise
        // not to race readers.
        // SAFETY: the block is held by the handle and kept in place by us.
        unsafe { self.arena.exact().region.bytes(off, len) }
    }

    /// A raw pointer to the first byte, valid while the borrow lives.
    pub fn as_ptr(&self) -> NonNull<u8> {
        let (off, len) = self.arena.exact().byte_range(self.head, self.entry.order);
        self.arena.exact().region.ptr(off, len).cast()
    }
}

impl core::ops::Deref for MoveBorrow<'_> {
    type Target = [u8];
    fn deref(&self) -> &[u8] {
        self.bytes()
    }
}

impl Drop for MoveBorrow<'_> {
    fn drop(&mut self) {
        self.entry.leave();
    }
}

impl core::fmt::Debug for MoveBorrow<'_> {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("MoveBorrow").field("pfn", &self.head).finish()
    }
}

/// A mutable borrow of a [`MovableBlock`] that is its block's sole holder.
/// Leaking it keeps the block in place and lent out for good.
#[must_use]
pub struct MoveBorrowMut<'b> {
    bytes: &'b mut [u8],
    arena: &'b PageArena,
    entry: &'b Entry,
    head: u32,
}

impl MoveBorrowMut<'_> {
    /// The block's head page during this borrow.
    pub fn pfn(&self) -> Pfn {
        self.head as Pfn
    }
}

impl core::ops::Deref for MoveBorrowMut<'_> {
    type Target = [u8];
    fn deref(&self) -> &[u8] {
        self.bytes
    }
}

impl core::ops::DerefMut for MoveBorrowMut<'_> {
    fn deref_mut(&mut self) -> &mut [u8] {
        self.bytes
    }
}

impl Drop for MoveBorrowMut<'_> {
    fn drop(&mut self) {
        self.arena.exact().desc(self.head).state.fetch_and(!EXCLUSIVE, Release);
        self.entry.leave();
    }
}

impl core::fmt::Debug for MoveBorrowMut<'_> {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("MoveBorrowMut").field("pfn", &self.head).field("len", &self.bytes.len()).finish()
    }
}
