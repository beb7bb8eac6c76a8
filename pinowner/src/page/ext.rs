//! Page extensions: per-page side bits beside the descriptors (the kernel's
//! `page_ext`), for facts the state word has no room for (all 64 of its
//! bits are taken; see [`state`](super::state)).
//!
//! Each [`Mark`] is a bitmap of one bit per page (an `AtomicU64` per 64
//! pages, 1/128 of the descriptor table) and a sticky flag saying whether
//! the mark was ever set, so the allocator skips the bitmap entirely until
//! the first page is marked.
//!
//! # The `ZEROED` mark
//!
//! Set on a page when its bytes are known to be zero because the operating
//! system dropped them (`MADV_DONTNEED`) or the arena zero-filled them, *as
//! the page is about to be freed* by a discard that holds the block
//! exclusively (so no holder can write it between the mark and the free).
//! Cleared whenever the page is handed out again: a plain allocation clears
//! it (the new owner may write through any pointer, so the mark cannot be
//! kept), a zeroed allocation consumes it (the marked pages are not
//! written, the others are zeroed), and a reservation clears the marks of
//! its run. So a marked page is always a free page whose bytes are zero, and
//! `alloc_zeroed` never returns non-zero bytes. Every path that hands a page
//! out must call [`PageExt::handed_out`] or [`PageExt::take_zeroed`].
//!
//! # The `WATCHED` and `YOUNG` marks
//!
//! Idle tracking's two side bits, on block heads: see [`crate::idle`].
//! They are read only together with the head's `IDLE` bit, which every
//! allocation starts clear, so marks left on a freed block mean nothing.
//!
//! # The `REPORTED` mark
//!
//! Set on every page of a free block the reporter (see
//! [`crate::reporting`]) gave back to the operating system, when it puts
//! the block back on its free list, and only while the block stays in the
//! reported part of its list: the bits are written under the zone lock by
//! the free lists themselves (`alloc::buddy`), and cleared when the block
//! leaves that part (allocated, taken into a thread cache, isolated by a
//! reservation, or merged with an unreported buddy). So a marked page is
//! always a free, listed page whose memory the operating system has, and
//! [`PageArena::verify`](crate::PageArena::verify) checks exactly that.
//! The reporter sets `ZEROED` with it when the report used
//! `MADV_DONTNEED`, before the block goes back (the `ZEROED` rule above).

use crate::sync::Ordering::{Acquire, Relaxed, Release};
use crate::sync::{AtomicBool, AtomicU64};

/// A per-page fact kept in a side bitmap.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Mark {
    /// The page's bytes are zero (see the module docs).
    Zeroed = 0,
    /// The page's memory was reported free to the operating system (see
    /// the module docs).
    Reported = 1,
    /// Idle tracking watches the block headed here (set by `mark_idle`,
    /// cleared when the reclaim clock consumes an access): see
    /// [`crate::idle`]. On block heads only.
    Watched = 2,
    /// An access the idle tracker's marking hid from the reclaim clock (the
    /// kernel's `PG_young`): see [`crate::idle`]. On block heads only.
    Young = 3,
    /// The free page holds the poison pattern, to be checked when it is
    /// handed out: see [`crate::poison`].
    Poisoned = 4,
}

/// How many marks there are.
const MARKS: usize = 5;

/// One mark's bitmap.
#[derive(Debug)]
struct Bits {
    words: Box<[AtomicU64]>,
    /// Some page was marked once: until then, nobody looks at `words`.
    ever: AtomicBool,
}

/// The side bitmaps of an arena; see the module docs.
#[derive(Debug)]
pub(crate) struct PageExt {
    marks: [Bits; MARKS],
}

impl PageExt {
    /// Bitmaps for `pages` pages, all clear, or the bytes they would take
    /// if they cannot be allocated.
    pub(crate) fn new(pages: usize) -> Result<PageExt, usize> {
        let n = pages.div_ceil(64);
        let bits = || -> Result<Bits, usize> {
            let mut words = Vec::new();
            words.try_reserve_exact(n).map_err(|_| n * 8)?;
            words.extend((0..n).map(|_| AtomicU64::new(0)));
            Ok(Bits { words: words.into_boxed_slice(), ever: AtomicBool::new(false) })
        };
        Ok(PageExt { marks: [bits()?, bits()?, bits()?, bits()?, bits()?] })
    }

    fn bits(&self, mark: Mark) -> &Bits {
        &self.marks[mark as usize]
    }

    /// Marks pages `start..start + n`. The caller holds them exclusively
    /// until it frees them, after this (see the module docs).
    pub(crate) fn set(&self, mark: Mark, start: u32, n: u32) {
        let b = self.bits(mark);
        // Before the bits: whoever sees a bit (after the free that follows)
        // sees the flag too.
        b.ever.store(true, Relaxed);
        for_words(start, n, |w, m| {
            b.words[w].fetch_or(m, Release);
        });
    }

    /// True if page `pfn` carries `mark`.
    pub(crate) fn test(&self, mark: Mark, pfn: u32) -> bool {
        let b = self.bits(mark);
        b.ever.load(Relaxed) && b.words[pfn as usize / 64].load(Acquire) & (1 << (pfn % 64)) != 0
    }

    /// Pages carrying `mark`.
    pub(crate) fn count(&self, mark: Mark) -> usize {
        self.bits(mark).words.iter().map(|w| w.load(Relaxed).count_ones() as usize).sum()
    }

    /// Pages of `start..start + n` carrying `mark`.
    pub(crate) fn count_in(&self, mark: Mark, start: u32, n: u32) -> usize {
        let b = self.bits(mark);
        if !b.ever.load(Relaxed) {
            return 0;
        }
        let mut c = 0;
        for_words(start, n, |w, m| c += (b.words[w].load(Relaxed) & m).count_ones() as usize);
        c
    }

    /// A block of `2^order` pages at `head` is handed out to an owner who
    /// may write it: its `ZEROED` marks go. One load and a branch until a
    /// page was ever marked.
    #[inline(always)]
    pub(crate) fn handed_out(&self, head: u32, order: u8) {
        self.handed_out_pages(head, 1 << order);
    }

    /// [`handed_out`](Self::handed_out) for `n` pages at `start` (a
    /// reservation's run).
    #[inline(always)]
    pub(crate) fn handed_out_pages(&self, start: u32, n: u32) {
        if self.bits(Mark::Zeroed).ever.load(Relaxed) {
            self.clear(Mark::Zeroed, start, n);
        }
    }

    /// Clears `mark` on `start..start + n`.
    #[cold]
    #[inline(never)]
    pub(crate) fn clear(&self, mark: Mark, start: u32, n: u32) {
        let b = self.bits(mark);
        for_words(start, n, |w, m| {
            // A load first: most words have nothing to clear.
            if b.words[w].load(Relaxed) & m != 0 {
                b.words[w].fetch_and(!m, Relaxed);
            }
        });
    }

    /// A block of `n` pages at `start` is handed out zeroed: calls
    /// `zero(first, pages)` for each run of pages not known to be zero, and
    /// clears the `ZEROED` marks of the others (the caller holds the block
    /// exclusively).
    pub(crate) fn take_zeroed(&self, start: u32, n: u32, mut zero: impl FnMut(u32, u32)) {
        let b = self.bits(Mark::Zeroed);
        if !b.ever.load(Relaxed) {
            return zero(start, n);
        }
        let mut run: Option<u32> = None;
        for p in start..start + n {
            let marked = b.words[p as usize / 64].load(Acquire) & (1 << (p % 64)) != 0;
            match (marked, run) {
                (false, None) => run = Some(p),
                (true, Some(r)) => {
                    zero(r, p - r);
                    run = None;
                }
                _ => {}
            }
        }
        if let Some(r) = run {
            zero(r, start + n - r);
        }
        self.clear(Mark::Zeroed, start, n);
    }
}

/// Calls `f(word, mask)` for each bitmap word covering pages
/// `start..start + n`, with the mask of those pages in it.
fn for_words(start: u32, n: u32, mut f: impl FnMut(usize, u64)) {
    let (mut p, end) = (start as usize, start as usize + n as usize);
    while p < end {
        let (w, bit) = (p / 64, p % 64);
        let len = (64 - bit).min(end - p);
        let m = if len == 64 { u64::MAX } else { ((1u64 << len) - 1) << bit };
        f(w, m);
        p += len;
    }
}

#[cfg(all(test, not(loom)))]
mod tests {
    use super::*;

    #[test]
    fn marks_cover_exactly_the_pages_asked_across_word_edges() {
        let ext = PageExt::new(200).unwrap();
        ext.set(Mark::Zeroed, 60, 70);
        assert_eq!(ext.count(Mark::Zeroed), 70);
        assert!(!ext.test(Mark::Zeroed, 59) && ext.test(Mark::Zeroed, 60) && ext.test(Mark::Zeroed, 129));
        assert!(!ext.test(Mark::Zeroed, 130));
        ext.handed_out(64, 6);
        assert_eq!(ext.count(Mark::Zeroed), 6, "60..64 and 128..130 stay");
    }

    #[test]
    fn a_zeroed_handout_zeroes_the_unmarked_runs_and_consumes_the_marks() {
        let ext = PageExt::new(64).unwrap();
        let mut zeroed = Vec::new();
        ext.take_zeroed(0, 8, |p, n| zeroed.push((p, n)));
        assert_eq!(zeroed, [(0, 8)], "nothing marked yet");
        ext.set(Mark::Zeroed, 2, 3);
        ext.set(Mark::Zeroed, 7, 1);
        zeroed.clear();
        ext.take_zeroed(0, 8, |p, n| zeroed.push((p, n)));
        assert_eq!(zeroed, [(0, 2), (5, 2)]);
        assert_eq!(ext.count(Mark::Zeroed), 0);
    }
}
