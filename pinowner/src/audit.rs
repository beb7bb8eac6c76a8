//! Teardown audit: which pages are still held, and by whom.
//!
//! PostgreSQL warns `buffer refcount leak` when a resource owner is released
//! with pins left; it names the buffer, not who pinned it. [`PageArena::audit`]
//! lists every block still held with its counts, raw counts and the latest
//! acquirer the owner slot attributes, grouped by site. Dropping an arena
//! runs the audit ([`LeakCheck`]): by default a warning through `tracing`
//! (target `pinowner`), or a panic, for tests that must not leak.
//!
//! At drop time no borrowing handle can be alive, so anything the audit
//! finds was leaked: a handle passed to `mem::forget`, an `into_raw` never
//! given back, or a `get_raw`/`pin_raw` without its release.

use core::fmt;

use crate::alloc::ZoneKind;
use crate::page::slot::Acquirer;
use crate::page::state::{self, COUNTS, FREE};
use crate::reservation::AcquirerGroup;
use crate::{PageArena, Pfn};

/// What dropping an arena with pages still held does.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum LeakCheck {
    /// Nothing.
    Off,
    /// A `tracing` warning (target `pinowner`) with the audit (the default).
    #[default]
    Warn,
    /// A panic with the audit (unless the thread is already panicking): for
    /// tests.
    Panic,
}

/// A block still held.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HeldBlock {
    /// Its head page.
    pub head: Pfn,
    /// Its order.
    pub order: u8,
    /// Its zone.
    pub zone: ZoneKind,
    /// References on it.
    pub refs: u32,
    /// Pins on it.
    pub pins: u32,
    /// Whether it belongs to a contiguous run.
    pub contig: bool,
    /// The latest claiming acquirer, if it still holds its count (at most
    /// one of the holders; never a guess).
    pub latest: Option<Acquirer>,
    /// Whether `latest` holds a pin (else a reference).
    pub latest_pin: bool,
    /// Raw references and pins (`get_raw`/`pin_raw`) among the counts.
    pub raw: (u32, u32),
}

/// The result of [`PageArena::audit`].
#[derive(Clone, Debug, PartialEq, Eq, Default)]
pub struct Audit {
    /// Blocks still held, by page.
    pub blocks: Vec<HeldBlock>,
    /// The same blocks grouped by latest acquirer, ranked as
    /// [`ContigFailure::by_acquirer`](crate::ContigFailure::by_acquirer)
    /// ranks the blocks in a reservation's way.
    pub by_acquirer: Vec<AcquirerGroup>,
}

impl Audit {
    /// True when nothing is held.
    pub fn is_clean(&self) -> bool {
        self.blocks.is_empty()
    }

    /// References held in all.
    pub fn refs(&self) -> u32 {
        self.blocks.iter().map(|b| b.refs).sum()
    }

    /// Pins held in all.
    pub fn pins(&self) -> u32 {
        self.blocks.iter().map(|b| b.pins).sum()
    }
}

impl fmt::Display for Audit {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "pinowner audit: {} blocks still held ({} refs, {} pins)",
            self.blocks.len(),
            self.refs(),
            self.pins()
        )?;
        for b in &self.blocks {
            write!(
                f,
                "\n  pfn={:#x} order={} zone={} count={} pincount={}{}",
                b.head,
                b.order,
                b.zone,
                b.refs,
                b.pins,
                if b.contig { " contig" } else { "" }
            )?;
            if b.raw != (0, 0) {
                write!(f, " raw={}r/{}p", b.raw.0, b.raw.1)?;
            }
            match &b.latest {
                Some(a) => write!(f, " latest={a}")?,
                None => write!(f, " latest=unattributed")?,
            }
        }
        if !self.by_acquirer.is_empty() {
            write!(f, "\nby site:")?;
            for s in &self.by_acquirer {
                let who = s.acquirer.map_or_else(|| "(unattributed)".to_owned(), |a| a.to_string());
                write!(f, "\n  {who}: {} blocks, {} refs, {} pins", s.blocks, s.refs, s.pins)?;
            }
        }
        Ok(())
    }
}

impl PageArena {
    /// Every block still held, with counts and latest acquirer, grouped by
    /// site. Each zone is walked under its lock, so blocks do not split or
    /// merge during the walk; counts may move (the audit is a snapshot).
    ///
    /// ```
    /// let arena = pinowner::PageArena::builder().pages(16).build()?;
    /// let block = arena.alloc(1)?;
    /// let audit = arena.audit();
    /// assert_eq!(audit.blocks.len(), 1);
    /// assert_eq!((audit.blocks[0].head, audit.blocks[0].refs), (block.pfn(), 1));
    /// drop(block);
    /// assert!(arena.audit().is_clean());
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn audit(&self) -> Audit {
        let mut blocks = Vec::new();
        for zone in &self.zones {
            if zone.pages() == 0 {
                continue;
            }
            let _area = zone.area.lock();
            self.for_each_block(zone.start, zone.end, |head, w| {
                if w & FREE != 0 || w & COUNTS == 0 {
                    return;
                }
                let pages = head..head + (1u32 << state::order(w));
                let raw = pages.fold((0, 0), |(r, n), q| {
                    let (a, b) = self.raw_counts(q as Pfn);
                    (r + a, n + b)
                });
                let hold = self.latest_hold(head, w);
                blocks.push(HeldBlock {
                    head: head as Pfn,
                    order: state::order(w),
                    zone: zone.kind,
                    refs: state::refs(w),
                    pins: state::pins(w),
                    contig: w & state::CONTIG != 0,
                    latest: hold.map(|(a, _)| a),
                    latest_pin: hold.is_some_and(|(_, pin)| pin),
                    raw,
                });
            });
        }
        let by_acquirer = AcquirerGroup::rank(AcquirerGroup::credit(
            blocks.iter().map(|b| (b.latest.map(|a| (a, b.latest_pin)), b.refs, b.pins)),
        ));
        Audit { blocks, by_acquirer }
    }
}

impl<P> Drop for PageArena<P> {
    fn drop(&mut self) {
        let this = self.exact();
        if this.leak_check == LeakCheck::Off || std::thread::panicking() || cfg!(loom) {
            return;
        }
        let audit = this.audit();
        if audit.is_clean() {
            return;
        }
        match this.leak_check {
            LeakCheck::Panic => panic!("arena dropped with pages still held\n{audit}"),
            _ => tracing::warn!(
                target: "pinowner::audit",
                blocks = audit.blocks.len(),
                refs = audit.refs(),
                pins = audit.pins(),
                "arena dropped with pages still held\n{audit}"
            ),
        }
    }
}
