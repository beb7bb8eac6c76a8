#![doc = include_str!("../../README.md")]
#![deny(unsafe_op_in_unsafe_fn)]
#![warn(missing_docs)]

pub mod alloc;
#[cfg(feature = "allocator-api2")]
pub mod allocator;
mod arena;
pub mod audit;
mod callback;
pub mod depot;
pub mod discard;
pub mod error;
mod handle;
pub mod idle;
pub mod implementation;
#[cfg(feature = "serde")]
mod json;
pub mod migrate;
pub mod page;
pub mod poison;
pub mod policy;
mod region;
pub mod reporting;
pub mod reservation;
pub mod site;
pub mod stats;
pub mod svg;
mod sync;
pub mod tracker;

pub use alloc::{FragStats, ThreadCache, ZoneFrag, ZoneKind};
pub use arena::{ArenaBuilder, PageArena, PageInfo, VerifyError, DEFAULT_MAX_ORDER, MAX_PAGES};
pub use audit::{Audit, LeakCheck};
#[cfg(feature = "serde")]
pub use error::ReportJsonError;
pub use error::{AcquireError, AllocError, BorrowError, BuildError, DiscardError, ReleaseError, ReportError};
pub use handle::{ArenaRef, Block, BlockBytesMut, PagePin, PageRef};
pub use migrate::{
    Compaction, LongtermPinError, Migrated, Migration, MovableBlock, MoveBorrow, MoveBorrowMut, MoveOutcome, Mover,
    RangePin, RangePinError, Unmovable,
};
pub use page::{Acquirer, PageFlags, PageState};
pub use policy::{Attribution, CountsOnly, Exact};
pub use region::{Backing, BackingKind, ExternalRegion};
pub use reservation::{AcquirerGroup, BusyBlock, ContigError, ContigFailure, ContigRun, Reason, WaitLog};
pub use site::Site;
pub use stats::Stats;
pub use svg::{ArenaMap, PageClass};
pub use tracker::{Event, EventKind, OwnerReport, ReportOptions, Tracking};

/// A page number: the index of a page in its arena.
pub type Pfn = usize;

pub(crate) use site::owner_here;

/// `#[pin_tracked]`: makes a function (or each poll of an `async fn`) an
/// owner site, so the pins and references it takes name it. See
/// [`site`] for the model and [`pin_scope!`] for the block form.
#[cfg(feature = "macros")]
pub use pinowner_macros::pin_tracked;

/// What `#[pin_tracked]` expansions name. Not public API.
#[doc(hidden)]
pub mod __private {
    pub use crate::site::{enter, Site, SiteGuard, Tracked};
}
