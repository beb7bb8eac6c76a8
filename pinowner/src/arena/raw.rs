//! The raw, page-number API for code that manages counts by hand.
//!
//! Raw counts are real counts on the page (a reservation sees them, the last
//! one frees the block), and each is also entered in a ledger per page. A raw
//! release first takes its count out of the ledger, so it can only drop a
//! count a raw acquire took: a stray `put_raw` can never steal the count a
//! handle holds, and so can never free a page under a live handle.

use crate::error::{AcquireError, ReleaseError};
use crate::page::state::Count;
use crate::page::PageState;
use crate::Pfn;

use super::PageArena;

/// Raw counts outstanding on one page.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(crate) struct RawCounts {
    pub(crate) refs: u32,
    pub(crate) pins: u32,
}

impl RawCounts {
    pub(crate) fn is_zero(c: &RawCounts) -> bool {
        c.refs == 0 && c.pins == 0
    }
}

impl PageArena {
    /// Takes a reference on page `pfn` by number, to be dropped by
    /// [`put_raw`](Self::put_raw).
    ///
    /// # Errors
    ///
    /// As for [`get`](Self::get): out of range, free, exclusively borrowed,
    /// or at the limit. Nothing changes on error.
    #[track_caller]
    pub fn get_raw(&self, pfn: Pfn) -> Result<(), AcquireError> {
        self.acquire_pfn(pfn, Count::Ref, core::panic::Location::caller(), true, true)?;
        self.raw.update(pfn as u32, RawCounts::is_zero, |c| c.refs += 1);
        Ok(())
    }

    /// Pins page `pfn` by number, to be dropped by [`unpin_raw`](Self::unpin_raw).
    ///
    /// # Errors
    ///
    /// As for [`pin`](Self::pin). Nothing changes on error.
    #[track_caller]
    pub fn pin_raw(&self, pfn: Pfn) -> Result<(), AcquireError> {
        self.acquire_pfn(pfn, Count::Pin, core::panic::Location::caller(), true, true)?;
        self.raw.update(pfn as u32, RawCounts::is_zero, |c| c.pins += 1);
        Ok(())
    }

    /// Drops a reference taken by [`get_raw`](Self::get_raw) (or given up by
    /// an `into_raw`). The last count frees the block.
    ///
    /// # Errors
    ///
    /// [`ReleaseError::OutOfRange`], or [`ReleaseError::NoReference`] when no
    /// raw reference is outstanding on the page (references held by handles
    /// are not the caller's to drop). Nothing changes on error.
    pub fn put_raw(&self, pfn: Pfn) -> Result<(), ReleaseError> {
        self.release_raw(pfn, Count::Ref)
    }

    /// Drops a pin taken by [`pin_raw`](Self::pin_raw).
    ///
    /// # Errors
    ///
    /// [`ReleaseError::OutOfRange`], or [`ReleaseError::NoPin`] when no raw
    /// pin is outstanding on the page. Nothing changes on error.
    pub fn unpin_raw(&self, pfn: Pfn) -> Result<(), ReleaseError> {
        self.release_raw(pfn, Count::Pin)
    }

    /// Raw references and pins outstanding on a page.
    pub fn raw_counts(&self, pfn: Pfn) -> (u32, u32) {
        match u32::try_from(pfn) {
            Ok(p) => {
                let c = self.raw.get(p);
                (c.refs, c.pins)
            }
            Err(_) => (0, 0),
        }
    }

    /// Every page with raw counts outstanding: `(pfn, refs, pins)`, by page.
    pub fn raw_outstanding(&self) -> Vec<(Pfn, u32, u32)> {
        let mut v: Vec<_> = self.raw.snapshot().into_iter().map(|(p, c)| (p as Pfn, c.refs, c.pins)).collect();
        v.sort_unstable();
        v
    }

    fn release_raw(&self, pfn: Pfn, count: Count) -> Result<(), ReleaseError> {
        let p = self.check_pfn(pfn).map_err(|_| ReleaseError::OutOfRange { pfn, pages: self.pages() })?;
        let taken = self.raw.update(p, RawCounts::is_zero, |c| {
            let field = match count {
                Count::Ref => &mut c.refs,
                Count::Pin => &mut c.pins,
            };
            if *field == 0 {
                Err(*field)
            } else {
                *field -= 1;
                Ok(())
            }
        });
        if let Err(raw) = taken {
            let state = self.page_info(pfn).map_or(PageState::empty(), |i| i.state);
            return Err(match count {
                Count::Ref => ReleaseError::NoReference { pfn, state, raw },
                Count::Pin => ReleaseError::NoPin { pfn, state, raw },
            });
        }
        // We hold a count on the block, so its structure is stable and the
        // lock-free head search is exact.
        let (head, _) = self.head_of(p).expect("a held page has a head");
        self.release(head, p, count, None);
        Ok(())
    }
}
