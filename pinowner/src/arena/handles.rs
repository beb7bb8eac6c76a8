//! The operations that hand out counted handles, for arenas of either
//! [attribution policy](crate::policy): allocation and acquisition by page
//! number. The handles carry the policy in their arena reference
//! ([`ArenaRef::Policy`](crate::ArenaRef::Policy)), so their clones and
//! drops take the policy's count operations with no test at run time.

use core::panic::Location;
use std::sync::Arc;

use super::{PageArena, Ticket};
use crate::error::{AcquireError, AllocError};
use crate::handle::Block;
use crate::page::state::Count;
use crate::page::Descriptor;
use crate::policy::Attribution;
use crate::{PagePin, PageRef, Pfn};

impl<P: Attribution> PageArena<P> {
    /// Allocates a block of `2^order` pages from the normal zone.
    ///
    /// # Errors
    ///
    /// [`AllocError::OrderTooLarge`] above [`max_order`](Self::max_order);
    /// [`AllocError::OutOfMemory`] when no block of that order is free.
    ///
    /// ```
    /// let arena = pinowner::PageArena::builder().pages(64).build()?;
    /// let block = arena.alloc(2)?;
    /// assert_eq!(block.pages(), 4);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    #[track_caller]
    #[inline(always)]
    pub fn alloc(&self, order: u8) -> Result<Block<&Self>, AllocError> {
        // Inline: the thread cache's fast path, about 50 instructions,
        // builds the block in registers (out of line, the result came back
        // through memory, and reading it back stalled: 30 ns per order-0
        // alloc+free against 18 inline). Everything else is one call.
        match self.exact().alloc_fast(order, false, crate::owner_here(), P::EXACT) {
            Some((pfn, ticket)) => Ok(Block::new(self, self.exact().handed_out(pfn, order), order, ticket)),
            None => self.alloc_slow(order),
        }
    }

    /// [`alloc`](Self::alloc) past the thread cache's fast path.
    #[track_caller]
    #[inline(never)]
    fn alloc_slow(&self, order: u8) -> Result<Block<&Self>, AllocError> {
        let (pfn, ticket) = self.exact().alloc_general(order, false, crate::owner_here(), P::EXACT)?;
        Ok(Block::new(self, self.exact().handed_out(pfn, order), order, ticket))
    }

    /// Like [`alloc`](Self::alloc), with the block's bytes zeroed.
    ///
    /// # Errors
    ///
    /// As for [`alloc`](Self::alloc).
    #[track_caller]
    pub fn alloc_zeroed(&self, order: u8) -> Result<Block<&Self>, AllocError> {
        let (pfn, ticket) = self.alloc_ticket(order)?;
        self.exact().zero_block(pfn, order);
        Ok(Block::new(self, pfn, order, ticket))
    }

    /// [`alloc`](Self::alloc) for an arena shared through `Arc`: the block
    /// keeps the arena alive and is `'static`.
    ///
    /// # Errors
    ///
    /// As for [`alloc`](Self::alloc).
    #[track_caller]
    pub fn alloc_owned(self: &Arc<Self>, order: u8) -> Result<Block<Arc<Self>>, AllocError> {
        let (pfn, ticket) = self.alloc_ticket(order)?;
        Ok(Block::new(self.clone(), self.exact().handed_out(pfn, order), order, ticket))
    }

    /// An allocation's head and ticket. Under the exact policy the block's
    /// first reference claims the owner slot for the caller; a counts-only
    /// one leaves it naming nobody (its release will not move the
    /// generation), though eager tracking records the caller.
    #[track_caller]
    #[inline(always)]
    fn alloc_ticket(&self, order: u8) -> Result<(u32, Ticket), AllocError> {
        // Inlined with the allocator's fast paths (`alloc_in`): out of line,
        // the result came back through memory (+20 instructions per
        // order-0 alloc+free through the thread cache).
        self.exact().alloc_in(order, false, crate::owner_here(), P::EXACT)
    }

    /// Takes a reference on page `pfn`; dropping the [`PageRef`] puts it.
    ///
    /// # Errors
    ///
    /// [`AcquireError`] if the page is out of range, free, lent out
    /// exclusively, or at its reference limit. Nothing changes on error.
    #[track_caller]
    #[inline]
    pub fn get(&self, pfn: Pfn) -> Result<PageRef<&Self>, AcquireError> {
        let (hd, ticket) = self.acquire_number(pfn, Count::Ref)?;
        Ok(PageRef::from_parts(self, hd, pfn as u32, ticket))
    }

    /// Pins page `pfn` (a long-lived count, kept apart from references);
    /// dropping the [`PagePin`] unpins it.
    ///
    /// # Errors
    ///
    /// As for [`get`](Self::get), with the pin limit.
    #[track_caller]
    #[inline]
    pub fn pin(&self, pfn: Pfn) -> Result<PagePin<&Self>, AcquireError> {
        let (hd, ticket) = self.acquire_number(pfn, Count::Pin)?;
        Ok(PagePin::from_parts(self, hd, pfn as u32, ticket))
    }

    /// [`get`](Self::get) for an arena shared through `Arc`.
    ///
    /// # Errors
    ///
    /// As for [`get`](Self::get).
    #[track_caller]
    pub fn get_owned(self: &Arc<Self>, pfn: Pfn) -> Result<PageRef<Arc<Self>>, AcquireError> {
        let (hd, ticket) = self.acquire_number(pfn, Count::Ref)?;
        Ok(PageRef::from_parts(self.clone(), hd, pfn as u32, ticket))
    }

    /// [`pin`](Self::pin) for an arena shared through `Arc`.
    ///
    /// # Errors
    ///
    /// As for [`pin`](Self::pin).
    #[track_caller]
    pub fn pin_owned(self: &Arc<Self>, pfn: Pfn) -> Result<PagePin<Arc<Self>>, AcquireError> {
        let (hd, ticket) = self.acquire_number(pfn, Count::Pin)?;
        Ok(PagePin::from_parts(self.clone(), hd, pfn as u32, ticket))
    }

    /// An acquisition by page number under this arena's policy.
    #[track_caller]
    #[inline(always)]
    fn acquire_number(&self, pfn: Pfn, count: Count) -> Result<(&Descriptor, Ticket), AcquireError> {
        self.exact().acquire_pfn(pfn, count, Location::caller(), false, P::EXACT)
    }

    /// Adds a count on page `pfn` of a block the caller holds, whose head
    /// descriptor is `hd`, under this arena's policy (a handle's clone).
    ///
    /// # Safety
    ///
    /// As for [`PageArena::acquire_held`]: `hd` is a descriptor of this
    /// arena and `pfn` is below [`pages`](PageArena::pages).
    #[track_caller]
    #[inline(always)]
    pub(crate) unsafe fn acquire_by_policy(
        &self,
        hd: &Descriptor,
        pfn: u32,
        count: Count,
    ) -> Result<Ticket, AcquireError> {
        // SAFETY: the caller's contract is the same.
        unsafe { self.acquire_by_policy_at(hd, pfn, count, Location::caller()) }
    }

    /// [`acquire_by_policy`](Self::acquire_by_policy) for a caller at `at`
    /// (inside a closure, where `#[track_caller]` does not reach): the
    /// fast path, then the slow one if the add's word asks for it.
    ///
    /// # Safety
    ///
    /// As for [`acquire_by_policy`](Self::acquire_by_policy).
    #[inline(always)]
    pub(crate) unsafe fn acquire_by_policy_at(
        &self,
        hd: &Descriptor,
        pfn: u32,
        count: Count,
        at: &'static Location<'static>,
    ) -> Result<Ticket, AcquireError> {
        match self.acquire_fast_by_policy(hd, count, at) {
            Ok(ticket) => Ok(ticket),
            Err(old) => self.acquire_slow_by_policy(hd, pfn, count, old, at),
        }
    }

    /// A count's add under this arena's policy, split from its slow path:
    /// the add and, when the word it returned allows, the rest; `Err(old)`:
    /// the add is made, finish with
    /// [`acquire_slow_by_policy`](Self::acquire_slow_by_policy). `at`: the
    /// caller, named only by the exact policy (or an armed block).
    #[inline(always)]
    pub(crate) fn acquire_fast_by_policy(
        &self,
        hd: &Descriptor,
        count: Count,
        at: &'static Location<'static>,
    ) -> Result<Ticket, u64> {
        if P::EXACT {
            PageArena::acquire_held_fast(hd, count, crate::site::owner_at(at))
        } else {
            PageArena::acquire_counted_fast(hd, count)
        }
    }

    /// The rest of an acquisition whose add returned `old` with a
    /// slow-path flag (`hd`: a descriptor of this arena, `pfn` the page).
    pub(crate) fn acquire_slow_by_policy(
        &self,
        hd: &Descriptor,
        pfn: u32,
        count: Count,
        old: u64,
        at: &'static Location<'static>,
    ) -> Result<Ticket, AcquireError> {
        if P::EXACT {
            self.exact().acquire_held_slow(hd, pfn, count, old, crate::site::owner_at(at))
        } else {
            self.exact().acquire_counted_slow(hd, pfn, count, old, at)
        }
    }

    /// Drops a handle's count under this arena's policy: `hd` is the
    /// block's head descriptor (a descriptor of this arena), `pfn` the page
    /// the count went through, `ticket` what its acquisition returned.
    #[inline(always)]
    pub(crate) fn release_by_policy(&self, hd: &Descriptor, pfn: u32, count: Count, ticket: Ticket) {
        if P::EXACT {
            self.exact().release_exact(hd, pfn, count, ticket)
        } else {
            self.exact().release_counted(hd, pfn, count, ticket.hold())
        }
    }

    /// [`release_by_policy`](Self::release_by_policy) for a `Block`'s
    /// reference (through its head), most often the block's last count.
    #[inline(always)]
    pub(crate) fn release_block_by_policy(&self, hd: &Descriptor, head: u32, ticket: Ticket) {
        if P::EXACT {
            self.exact().release_exact(hd, head, Count::Ref, ticket)
        } else {
            self.exact().release_counted_block(hd, head, ticket.hold())
        }
    }
}
