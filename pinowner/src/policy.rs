//! Attribution policies: what a count change pays so that a failed
//! reservation can name the holders it finds, chosen once per arena type
//! ([`PageArena<P>`](crate::PageArena)).
//!
//! | policy | clone (get / pin) | drop (put / unpin) | at a failure |
//! |---|---|---|---|
//! | [`Exact`] (default) | one add, one branch, the owner-slot store | a load and a compare-and-swap | every holder counted, the latest named |
//! | [`CountsOnly`] | one add, one branch | one subtract, one branch | every holder counted, none named |
//!
//! Both arm the blocks a failure finds and record every later get, put,
//! pin and unpin with its stack, as the page pin owner RFC records lazily;
//! both fail precisely ("N holders, P pins"). They differ only in the names
//! at the moment of failure.
//!
//! **[`Exact`]** keeps, per block, who took the latest claiming count (see
//! the owner slot in [`crate::page`]), and a release moves the block's
//! generation when it drops that count, inside one compare-and-swap, so a
//! departed holder is never named. A failure report says who holds a page
//! *now*, not only who takes it later.
//!
//! **[`CountsOnly`]** makes a handle's clone a `fetch_add` and its drop a
//! `fetch_sub`, each with one branch on the returned word (armed, idle, lent
//! out exclusively, at the limit, or the last count), the kernel's
//! `get_page`/`put_page`. Its acquisitions never claim the owner slot and its
//! releases never move the generation, so the slot keeps meaning "this
//! holder, still holding" for the exact acquisitions that share the arena
//! (a `PageArena<CountsOnly>` reaches the exact arena's other operations
//! through `Deref`, or [`exact`](crate::PageArena::exact) and
//! [`exact_arc`](crate::PageArena::exact_arc) in code generic over the
//! policy; long-term and range pins, reservations and the raw API keep
//! exact attribution there, while allocation, `get`/`pin`, their `_owned`
//! forms and movable blocks follow the arena's policy). An acquisition by page
//! number ([`PageArena::get`](crate::PageArena::get)) is a compare-and-swap
//! under either policy: it must refuse a free page.
//!
//! ```
//! use pinowner::{CountsOnly, PageArena};
//!
//! // A buffer pool that never asks who holds a frame at the moment a
//! // reservation fails: the counts alone, on the hot path.
//! let arena: PageArena<CountsOnly> = PageArena::builder().pages(64).attribution().build()?;
//! let frame = arena.alloc(0)?;
//! let pin = frame.pin(0)?; // one fetch_add
//! let again = pin.clone(); // one fetch_add
//! drop((again, pin)); // two fetch_subs
//! assert_eq!(arena.page_info(frame.pfn())?.acquirer, None, "counts only: nobody is named");
//! drop(frame);
//! assert_eq!(arena.free_pages(), 64);
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

mod sealed {
    pub trait Sealed {}
    impl Sealed for super::Exact {}
    impl Sealed for super::CountsOnly {}
}

/// An attribution policy: [`Exact`] or [`CountsOnly`] (see the
/// [module docs](self)). Sealed.
pub trait Attribution: sealed::Sealed + core::fmt::Debug + Send + Sync + 'static {
    /// True for [`Exact`]: handles keep their acquisition's generation and
    /// releases compare it.
    const EXACT: bool;
}

/// The default policy: a failed reservation names each block's latest
/// holder while it still holds; a release is a load and a compare-and-swap.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Exact;

/// Counts alone on the hot path (`fetch_add` / `fetch_sub` and one branch):
/// a failed reservation counts the holders but names none; armed blocks
/// still record every later event with its stack.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct CountsOnly;

impl Attribution for Exact {
    const EXACT: bool = true;
}

impl Attribution for CountsOnly {
    const EXACT: bool = false;
}
