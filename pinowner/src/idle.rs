//! Idle tracking (the kernel's `page_idle`): which allocated memory has not
//! been touched since a moment you chose, and who holds it.
//!
//! [`PageArena::mark_idle`] marks every allocated block of a range idle;
//! the block's next **access** clears the mark; [`PageArena::idle_pages`]
//! counts (and maps) the pages still idle, and
//! [`PageArena::idle_holders`] groups them by the holder the owner slot
//! names (the `#[pin_tracked]` site or the caller's location that
//! allocated or last acquired the block) and by subsystem: *which holders
//! keep memory they don't touch*.
//!
//! An access is anything that goes through the API: an allocation (every
//! block starts accessed), a `get` or `pin` (by handle or page number), and
//! a borrow of the bytes ([`Block::bytes`](crate::Block::bytes),
//! [`Block::bytes_mut`](crate::Block::bytes_mut), `PageRef`/`PagePin`
//! `bytes`, a `MovableBlock` borrow). **Accesses through raw pointers**
//! (`as_ptr`, a device's DMA, an io_uring fixed buffer) **are invisible**:
//! like the kernel's page_idle, which sees only accessed bits the MMU sets,
//! the arena sees only what it is asked for.
//!
//! # Three bits, so a reclaim clock and idle tracking don't disturb each other
//!
//! The head's `IDLE` state bit is the access detector: set, it sends the
//! next get or pin to the slow path (it is already in the fast path's
//! mask: the fast path pays nothing), which clears it. Two side marks
//! (`page::ext`) keep the two users apart, as `PG_idle` and `PG_young`
//! do in the kernel:
//!
//! - `WATCHED`: idle tracking watches the block. A block is idle when it is
//!   watched and its `IDLE` bit is still set.
//! - `YOUNG`: `mark_idle` re-armed the detector over an access the reclaim
//!   clock had not seen yet; the clock still counts it.
//!
//! A buffer pool's own reclaim clock uses [`PageArena::page_referenced`]:
//! "accessed since my last look?" (`IDLE` clear, or `YOUNG`); it re-arms
//! the detector, and when it consumes an access it unwatches the block, so
//! idle tracking still sees that access. Neither user's answer changes
//! because the other looked.
//!
//! # Costs
//!
//! None on the get/pin fast path (the `IDLE` bit was already in its slow
//! mask). While a block is marked, its first access pays the slow path
//! once (about the cost of a tracked acquire's branch and one atomic
//! clear); a byte borrow pays a load and a branch. Marking and counting
//! walk the range's blocks.

use core::ops::Range;

use crate::error::AcquireError;
use crate::page::ext::Mark;
use crate::page::slot::{self, Acquirer};
use crate::page::state::{self, FREE, IDLE};
use crate::page::{Descriptor, PageState};
use crate::sync::Ordering::Relaxed;
use crate::{PageArena, Pfn};

/// Idle pages of a range; see [`PageArena::idle_pages`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct IdlePages {
    /// The range looked at.
    pub range: Range<Pfn>,
    /// Allocated pages in it.
    pub allocated: usize,
    /// Idle pages in it: allocated, marked by
    /// [`mark_idle`](PageArena::mark_idle) and not accessed since.
    pub idle: usize,
    /// Bit `i % 64` of word `i / 64` is set when page `range.start + i`
    /// is idle (the layout of `/sys/kernel/mm/page_idle/bitmap`).
    pub bitmap: Vec<u64>,
}

impl IdlePages {
    /// True if page `pfn` (inside [`range`](Self::range)) is idle.
    pub fn is_idle(&self, pfn: Pfn) -> bool {
        self.range.contains(&pfn) && {
            let i = pfn - self.range.start;
            self.bitmap[i / 64] >> (i % 64) & 1 != 0
        }
    }
}

/// Pages one holder keeps in a range, and how many of them are idle.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct IdleHolder {
    /// The holder the owner slot names (its latest acquirer, still holding).
    pub acquirer: Acquirer,
    /// Allocated pages of the range it holds.
    pub pages: usize,
    /// Of those, idle pages.
    pub idle: usize,
}

/// Idle pages by holder and by subsystem; see [`PageArena::idle_holders`].
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct IdleHolders {
    /// Per holder, most idle pages first.
    pub holders: Vec<IdleHolder>,
    /// Per subsystem (`None`: holders without one), most idle pages first:
    /// (subsystem, pages held, idle pages).
    pub subsystems: Vec<(Option<&'static str>, usize, usize)>,
    /// Allocated pages whose latest acquirer is not known any more (it let
    /// go; the slot never guesses), and the idle ones among them.
    pub unattributed: (usize, usize),
}

impl PageArena {
    /// Checks a range of pages.
    fn page_range(&self, range: &Range<Pfn>) -> Result<(u32, u32), AcquireError> {
        if range.start > range.end {
            return Err(AcquireError::OutOfRange { pfn: range.start, pages: self.pages() });
        }
        if range.end > self.pages() {
            return Err(AcquireError::OutOfRange { pfn: range.end - 1, pages: self.pages() });
        }
        Ok((range.start as u32, range.end as u32))
    }

    /// Marks every allocated block with a page in `range` idle; returns the
    /// pages marked (whole blocks). Free blocks, and blocks lent out
    /// mutably right now (in use), are left alone. See the [module
    /// docs](crate::idle).
    ///
    /// # Errors
    ///
    /// [`AcquireError::OutOfRange`] naming the first page beyond the arena.
    ///
    /// ```
    /// let arena = pinowner::PageArena::builder().pages(64).build()?;
    /// let (a, b) = (arena.alloc(2)?, arena.alloc(2)?);
    /// assert_eq!(arena.mark_idle(0..64)?, 8);
    /// let _ = a.bytes(); // an access
    /// let idle = arena.idle_pages(0..64)?;
    /// assert_eq!((idle.allocated, idle.idle), (8, 4));
    /// assert!(idle.is_idle(b.pfn()) && !idle.is_idle(a.pfn()));
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn mark_idle(&self, range: Range<Pfn>) -> Result<usize, AcquireError> {
        let (start, end) = self.page_range(&range)?;
        let mut marked = 0;
        self.for_each_block(start, end, |head, _| {
            let d = self.desc(head);
            let mut old = d.state.load(Relaxed);
            loop {
                if !state::is_live_head(old) {
                    return;
                }
                // A compare-and-swap from a live word only (the rule of
                // `alloc::buddy`): a block being freed is left alone.
                match d.state.compare_exchange_weak(old, old | IDLE, Relaxed, Relaxed) {
                    Ok(_) => break,
                    Err(cur) => old = cur,
                }
            }
            if old & IDLE == 0 {
                // An access the reclaim clock has not seen: keep it for it.
                self.ext.set(Mark::Young, head, 1);
            }
            self.ext.set(Mark::Watched, head, 1);
            marked += 1usize << state::order(old);
        });
        Ok(marked)
    }

    /// True if the block headed by `head`, whose word is `w`, is idle.
    fn block_idle(&self, head: u32, w: u64) -> bool {
        w & (FREE | IDLE) == IDLE && self.ext.test(Mark::Watched, head)
    }

    /// Allocated and idle pages of `range`, with a bitmap of the idle ones.
    ///
    /// # Errors
    ///
    /// [`AcquireError::OutOfRange`] naming the first page beyond the arena.
    ///
    /// ```
    /// let arena = pinowner::PageArena::builder().pages(128).build()?;
    /// let frames: Vec<_> = (0..4).map(|_| arena.alloc(0)).collect::<Result<_, _>>()?;
    /// arena.mark_idle(0..128)?;
    /// drop(arena.pin(frames[1].pfn())?); // an access
    /// let idle = arena.idle_pages(0..128)?;
    /// assert_eq!((idle.allocated, idle.idle), (4, 3));
    /// assert_eq!(idle.bitmap.len(), 2); // one bit a page, 64 a word
    /// assert!(!idle.is_idle(frames[1].pfn()) && idle.is_idle(frames[2].pfn()));
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn idle_pages(&self, range: Range<Pfn>) -> Result<IdlePages, AcquireError> {
        let (start, end) = self.page_range(&range)?;
        let mut out =
            IdlePages { range, allocated: 0, idle: 0, bitmap: vec![0; ((end - start) as usize).div_ceil(64)] };
        self.for_each_block(start, end, |head, w| {
            if w & FREE != 0 {
                return;
            }
            let (first, last) = (head.max(start), (head + (1u32 << state::order(w))).min(end));
            out.allocated += (last - first) as usize;
            if self.block_idle(head, w) {
                out.idle += (last - first) as usize;
                for p in first..last {
                    let i = (p - start) as usize;
                    out.bitmap[i / 64] |= 1 << (i % 64);
                }
            }
        });
        Ok(out)
    }

    /// Allocated and idle pages of `range` by holder (the acquirer the
    /// owner slot names) and by subsystem: which holders keep memory they
    /// don't touch.
    ///
    /// # Errors
    ///
    /// [`AcquireError::OutOfRange`] naming the first page beyond the arena.
    ///
    /// ```
    /// use pinowner::{pin_tracked, PageArena};
    ///
    /// #[pin_tracked(subsystem = "pool")]
    /// fn frame(arena: &PageArena) -> pinowner::Block<&PageArena> {
    ///     arena.alloc(0).unwrap()
    /// }
    ///
    /// let arena = PageArena::builder().pages(64).build()?;
    /// let frames: Vec<_> = (0..8).map(|_| frame(&arena)).collect();
    /// arena.mark_idle(0..64)?;
    /// let _ = frames[0].bytes();
    /// let by = arena.idle_holders(0..64)?;
    /// assert_eq!((by.holders[0].pages, by.holders[0].idle), (8, 7));
    /// assert_eq!(by.subsystems, [(Some("pool"), 8, 7)]);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn idle_holders(&self, range: Range<Pfn>) -> Result<IdleHolders, AcquireError> {
        let (start, end) = self.page_range(&range)?;
        let mut out = IdleHolders::default();
        self.for_each_block(start, end, |head, w| {
            if w & FREE != 0 || w & crate::page::state::COUNTS == 0 {
                return;
            }
            let pages = ((head + (1u32 << state::order(w))).min(end) - head.max(start)) as usize;
            let idle = if self.block_idle(head, w) { pages } else { 0 };
            match slot::decode_if_current(self.desc(head).owner.load(Relaxed), state::gen(w)) {
                None => {
                    out.unattributed.0 += pages;
                    out.unattributed.1 += idle;
                }
                Some(a) => {
                    match out.holders.iter_mut().find(|h| same(&h.acquirer, &a)) {
                        Some(h) => {
                            h.pages += pages;
                            h.idle += idle;
                        }
                        None => out.holders.push(IdleHolder { acquirer: a, pages, idle }),
                    }
                    match out.subsystems.iter_mut().find(|s| s.0 == a.subsystem()) {
                        Some(s) => {
                            s.1 += pages;
                            s.2 += idle;
                        }
                        None => out.subsystems.push((a.subsystem(), pages, idle)),
                    }
                }
            }
        });
        out.holders.sort_by_key(|h| core::cmp::Reverse(h.idle));
        out.subsystems.sort_by_key(|s| core::cmp::Reverse(s.2));
        Ok(out)
    }

    /// The reclaim clock's question about the block of page `pfn`:
    /// accessed since the clock last asked (or since allocation)? Asking
    /// re-arms the detector for the next sweep, without disturbing idle
    /// tracking (see the [module docs](crate::idle)).
    ///
    /// # Errors
    ///
    /// [`AcquireError::OutOfRange`] beyond the arena,
    /// [`AcquireError::Free`] for a free page.
    ///
    /// ```
    /// let arena = pinowner::PageArena::builder().pages(16).build()?;
    /// let frame = arena.alloc(0)?;
    /// assert!(arena.page_referenced(frame.pfn())?, "allocation is an access");
    /// assert!(!arena.page_referenced(frame.pfn())?);
    /// arena.mark_idle(0..16)?; // idle tracking does not hide accesses from the clock...
    /// let _ = frame.bytes();
    /// arena.mark_idle(0..16)?;
    /// assert!(arena.page_referenced(frame.pfn())?);
    /// assert_eq!(arena.idle_pages(0..16)?.idle, 1, "...nor the clock from idle tracking");
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn page_referenced(&self, pfn: Pfn) -> Result<bool, AcquireError> {
        let p = self.check_pfn(pfn)?;
        let free = || AcquireError::Free { pfn, state: PageState::from_word(self.desc(p).state.load(Relaxed)) };
        let (head, _) = self.head_of(p).ok_or_else(free)?;
        let d = self.desc(head);
        let mut old = d.state.load(Relaxed);
        loop {
            if !state::is_live_head(old) {
                if old & FREE == 0 && old & state::EXCLUSIVE != 0 {
                    // Lent out mutably: being accessed right now.
                    return Ok(true);
                }
                return Err(free());
            }
            match d.state.compare_exchange_weak(old, old | IDLE, Relaxed, Relaxed) {
                Ok(_) => break,
                Err(cur) => old = cur,
            }
        }
        let accessed = old & IDLE == 0;
        if accessed {
            // Idle tracking must still see this access after the re-arm.
            self.ext.clear(Mark::Watched, head, 1);
        }
        let young = self.ext.test(Mark::Young, head);
        if young {
            self.ext.clear(Mark::Young, head, 1);
        }
        Ok(accessed || young)
    }

    /// A borrow of a held block's bytes (head descriptor `hd`) is an
    /// access: clears `IDLE`. A load and a branch while nothing is marked.
    #[inline(always)]
    pub(crate) fn touched(&self, hd: &Descriptor) {
        if hd.state.load(Relaxed) & IDLE != 0 {
            Self::clear_idle(hd);
        }
    }

    #[cold]
    #[inline(never)]
    fn clear_idle(hd: &Descriptor) {
        // On a held block: an `IDLE` clear after an access (see `alloc::buddy`).
        hd.state.fetch_and(!IDLE, Relaxed);
    }
}

/// The same holder: the same site or the same source location.
fn same(a: &Acquirer, b: &Acquirer) -> bool {
    match (a, b) {
        (Acquirer::Site(x), Acquirer::Site(y)) => core::ptr::eq(*x, *y),
        (Acquirer::Location(x), Acquirer::Location(y)) => x == y,
        _ => false,
    }
}
