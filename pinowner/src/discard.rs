//! Giving memory back: [`Block::discard`] and [`ContigRun::discard`] drop
//! the bytes of a block or run the caller is done with and free it.
//!
//! | backing | what happens | later reads | `alloc_zeroed` skips zeroing |
//! |---|---|---|---|
//! | anonymous, THP, hugetlb | `madvise(MADV_DONTNEED)`: resident memory released now | zeros, faulted in on touch | yes |
//! | same, [`Discard::Free`] | `madvise(MADV_FREE)`: released when the kernel needs memory | old bytes or zeros | no |
//! | heap of 128 KiB or more (a mapping), either mode | `madvise(MADV_DONTNEED)`: resident memory released now | zeros, faulted in on touch | yes |
//! | heap under 128 KiB (or under Miri) | zero-filled (the allocator owns the memory; nothing is released) | zeros | yes |
//! | caller-provided | refused: [`DiscardError::External`] | unchanged | — |
//!
//! A discard needs the handle to be the block's (or each of the run's
//! blocks') only holder: another holder's bytes would turn to zeros under
//! it. While the memory is dropped the block is held exclusively (no new
//! reference or pin can appear), and it is freed right after, so nothing
//! can write it between the discard and the free: the pages the OS zeroed
//! are marked so that [`PageArena::alloc_zeroed`] does not write (or, on an
//! anonymous arena, even fault in) them, and any other allocation clears
//! the mark (see `page::ext`). Pointers into the block taken before the
//! discard dangle after it, as after any free.
//!
//! [`ContigRun::discard`]: crate::ContigRun::discard

use crate::error::DiscardError;
use crate::handle::{ArenaRef, Block};
use crate::page::ext::Mark;
use crate::page::state::{COUNTS, EXCLUSIVE, REF_ONE};
use crate::page::PageState;
use crate::region::BackingKind;
use crate::sync::Ordering::{Acquire, Relaxed, Release};
use crate::{PageArena, Pfn};

/// How [`Block::discard`] and [`ContigRun::discard`](crate::ContigRun::discard)
/// give memory back on a mapped arena (see the [module docs](self)).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Discard {
    /// `MADV_DONTNEED`: resident memory is released at once; the pages read
    /// as zeros afterwards, and the arena remembers it.
    #[default]
    DontNeed,
    /// `MADV_FREE`: cheaper; the kernel takes the memory only under
    /// pressure, and until then the old bytes may remain, so the pages are
    /// not known to be zero.
    Free,
}

/// A refused discard: the error and the handle, unchanged, to retry or
/// drop (like `Arc::try_unwrap` gives the `Arc` back).
#[derive(Debug)]
pub struct DiscardRefused<H> {
    /// The handle the discard was called on.
    pub handle: H,
    /// Why nothing was given back.
    pub error: DiscardError,
}

impl<H> core::fmt::Display for DiscardRefused<H> {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        core::fmt::Display::fmt(&self.error, f)
    }
}

impl<H: core::fmt::Debug> std::error::Error for DiscardRefused<H> {
    /// The error's own source (its message is this one's).
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        std::error::Error::source(&self.error)
    }
}

/// The error alone, dropping the handle (for `?` in functions that return
/// [`DiscardError`]).
impl<H> From<DiscardRefused<H>> for DiscardError {
    fn from(r: DiscardRefused<H>) -> DiscardError {
        r.error
    }
}

impl<H> DiscardRefused<H> {
    /// The handle back.
    pub fn into_inner(self) -> H {
        self.handle
    }
}

impl<A: ArenaRef> Block<A> {
    /// Gives the block's memory back to the operating system and frees the
    /// block: for a block whose contents are no longer needed (an evicted
    /// frame, an idle buffer). See the [module docs](crate::discard) for
    /// what each backing does.
    ///
    /// # Errors
    ///
    /// [`DiscardRefused`] with the block: [`DiscardError::Shared`] if other
    /// references or pins exist, [`DiscardError::Exclusive`] after a leaked
    /// [`BlockBytesMut`](crate::BlockBytesMut), [`DiscardError::External`]
    /// on caller-provided memory, [`DiscardError::Os`] if `madvise` fails.
    ///
    /// ```
    /// use pinowner::{discard::Discard, Backing, PageArena};
    ///
    /// let arena = PageArena::builder().pages(64).backing(Backing::Anonymous).build()?;
    /// let mut block = arena.alloc(4)?;
    /// block.bytes_mut()?.fill(0xff); // 16 pages resident
    /// let pin = block.pin(0)?;
    /// let refused = block.discard(Discard::DontNeed).unwrap_err(); // pinned: refused
    /// drop(pin);
    /// // Released and freed. (`.map_err(..)`: the refusal holds a borrowed
    /// // block, which a `Box<dyn Error>` cannot keep.)
    /// refused.into_inner().discard(Discard::DontNeed).map_err(|r| r.error)?;
    /// let again = arena.alloc_zeroed(4)?; // the same pages, not written again
    /// assert!(again.bytes().iter().all(|&b| b == 0));
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn discard(self, how: Discard) -> Result<(), DiscardRefused<Self>> {
        let blocks = [(self.pfn() as u32, self.order())];
        match self.arena().exact().discard_blocks(&blocks, how) {
            Ok(()) => Ok(()),
            Err(error) => Err(DiscardRefused { handle: self, error }),
        }
    }
}

impl PageArena {
    /// Discards blocks (head, order) the caller holds one reference on
    /// each: takes each exclusively, drops their bytes, marks the pages
    /// the OS zeroed. On success the caller frees the blocks at once (the
    /// exclusive loan ends with the free); on error nothing changed.
    pub(crate) fn discard_blocks(&self, blocks: &[(u32, u8)], how: Discard) -> Result<(), DiscardError> {
        let Some(&(first, _)) = blocks.first() else { return Ok(()) };
        if self.backing() == BackingKind::External {
            let pages = blocks.iter().map(|&(_, o)| 1usize << o).sum();
            return Err(DiscardError::External { pfn: first as Pfn, pages });
        }
        for (i, &(head, _)) in blocks.iter().enumerate() {
            if let Err(e) = self.take_exclusive(head) {
                self.end_exclusive(&blocks[..i]);
                return Err(e);
            }
        }
        let mut zeroed = true;
        for &(head, order) in blocks {
            let (off, len) = self.byte_range(head, order);
            // SAFETY: we hold the block's only count and `EXCLUSIVE` keeps
            // any other holder from appearing: its bytes are ours alone,
            // and a block is page-aligned.
            match unsafe { self.region.discard(off, len, how == Discard::DontNeed) } {
                Ok(z) => zeroed &= z,
                Err(source) => {
                    self.end_exclusive(blocks);
                    return Err(DiscardError::Os { pfn: head as Pfn, pages: 1 << order, source });
                }
            }
        }
        if zeroed {
            for &(head, order) in blocks {
                self.ext.set(Mark::Zeroed, head, 1 << order);
            }
        }
        Ok(())
    }

    /// Sets `EXCLUSIVE` on a block whose one count the caller holds, as
    /// [`Block::bytes_mut`] does.
    fn take_exclusive(&self, head: u32) -> Result<(), DiscardError> {
        let d = self.desc(head);
        let mut old = d.state.load(Relaxed);
        loop {
            let (pfn, state) = (head as Pfn, PageState::from_word(old));
            if old & EXCLUSIVE != 0 {
                return Err(DiscardError::Exclusive { pfn, state });
            }
            if old & COUNTS != REF_ONE {
                return Err(DiscardError::Shared { pfn, state });
            }
            match d.state.compare_exchange_weak(old, old | EXCLUSIVE, Acquire, Relaxed) {
                Ok(_) => return Ok(()),
                Err(cur) => old = cur,
            }
        }
    }

    /// Ends the exclusive loans of a refused discard.
    fn end_exclusive(&self, blocks: &[(u32, u8)]) {
        for &(head, _) in blocks {
            self.desc(head).state.fetch_and(!EXCLUSIVE, Release);
        }
    }

    /// Pages known to be zero because a discard dropped them, which
    /// [`alloc_zeroed`](Self::alloc_zeroed) will not write.
    pub fn zeroed_pages(&self) -> usize {
        self.ext.count(Mark::Zeroed)
    }
}
