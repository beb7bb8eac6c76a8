//! Page poisoning (the kernel's `page_poison` and `debug_pagealloc`):
//! catching writes to freed blocks, chosen when the arena is built
//! ([`ArenaBuilder::poison`](crate::ArenaBuilder::poison)), no recompile.
//!
//! | mode | on free | on allocation | catches |
//! |---|---|---|---|
//! | [`Poison::Off`] (default) | nothing | nothing | — |
//! | [`Poison::Pattern`] | fill with `0xaa` ([`Poison::PATTERN`]) | check the pattern; a mismatch is recorded as a [`PoisonError`] and the block **quarantined** (kept allocated, never handed out); the allocation takes another block | a write through a stale pointer, at the next allocation of the block |
//! | [`Poison::Protect`] (anonymous backings) | `mprotect(PROT_NONE)` | `mprotect(PROT_READ \| PROT_WRITE)` | any read or write through a stale pointer, at the faulting instruction (`SIGSEGV`) |
//!
//! Pages whose bytes the operating system dropped (a discard or a report
//! with `MADV_DONTNEED`, marked `ZEROED`) are not filled, so reporting
//! keeps working: their writes are not caught. A report with `MADV_FREE`
//! forgets the pattern of the pages it reports. A contiguous run's pages
//! are checked when it is committed; a mismatch is recorded (the run is
//! handed out: its window was asked for by address).
//!
//! # Costs
//!
//! Off: one predictable branch on a value already in cache per allocation
//! and per free. Pattern: a write and a read of every byte of the block
//! (the kernel's `page_poison`). Protect: two `mprotect` calls (and the
//! TLB shootdown) per alloc+free, as `debug_pagealloc`. See
//! `BENCHMARKS.md`.

use crate::depot::StackHandle;
use crate::error::{AllocError, BuildError};
use crate::page::ext::Mark;
use crate::page::slot::{self, Acquirer, Who};
use crate::region::BackingKind;
use crate::sync::Ordering::Release;
use crate::tracker::EventKind;
use crate::{PageArena, Pfn};

/// Page poisoning mode; see the [module docs](crate::poison).
///
/// ```
/// use pinowner::{poison::Poison, Backing, PageArena};
///
/// let arena = PageArena::builder().pages(64).poison(Poison::Pattern).build()?;
/// let block = arena.alloc(0)?;
/// let stale = block.as_ptr().as_ptr();
/// drop(block); // filled with 0xaa
/// // A use after free (a bug):
/// // SAFETY: the arena's memory stays mapped; only its owner may write it,
/// // which is the bug this shows.
/// unsafe { stale.add(100).write(7) };
/// let next = arena.alloc(0)?; // not the corrupt block: that one is quarantined
/// assert_ne!(next.as_ptr().as_ptr(), stale);
/// let found = arena.poison_errors();
/// assert_eq!((found[0].offset, found[0].found[0]), (100, 7));
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Poison {
    /// No poisoning (the default).
    #[default]
    Off,
    /// Fill freed blocks with [`Poison::PATTERN`], check it on allocation.
    Pattern,
    /// Make freed blocks inaccessible (`mprotect(PROT_NONE)`); anonymous
    /// and transparent-hugepage backings only.
    Protect,
}

impl Poison {
    /// The byte freed blocks are filled with (the kernel's `PAGE_POISON`).
    pub const PATTERN: u8 = 0xaa;

    /// Checks the mode against the backing the arena got.
    pub(crate) fn validate(self, backing: BackingKind) -> Result<(), BuildError> {
        match (self, backing) {
            (Poison::Protect, BackingKind::Anonymous | BackingKind::TransparentHuge)
            | (Poison::Off | Poison::Pattern, _) => Ok(()),
            (Poison::Protect, backing) => Err(BuildError::PoisonBacking { backing }),
        }
    }
}

/// A freed block whose poison pattern was overwritten: a write through a
/// stale pointer. Found when the block was next allocated; the block is
/// quarantined.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error(
    "page {pfn:#x} (block of {pages} pages at {head:#x}) was written after it was freed: byte {offset} of the page reads {found:02x?}, not the poison {pattern:#04x}"
)]
pub struct PoisonError {
    /// The page with the first mismatch.
    pub pfn: Pfn,
    /// The head of its block.
    pub head: Pfn,
    /// Pages in the block.
    pub pages: usize,
    /// Offset of the first mismatching byte in the page.
    pub offset: usize,
    /// Up to 16 bytes from there.
    pub found: Vec<u8>,
    /// The pattern expected.
    pub pattern: u8,
    /// The last release the tracker recorded on the block (the one that
    /// freed it), if it was tracked (armed, or eager tracking): its stack.
    pub freed_by: Option<StackHandle>,
    /// And the site that made it, if known.
    pub freed_at: Option<Acquirer>,
}

/// What pattern poisoning found: every mismatch, and the heads of the
/// blocks it withheld for good.
#[derive(Debug, Default)]
pub(crate) struct Quarantine {
    /// Every mismatch, oldest first.
    pub(crate) errors: Vec<PoisonError>,
    /// Heads of the blocks found corrupt when allocated: each keeps the
    /// one count of its allocation, and nobody holds it.
    pub(crate) withheld: Vec<u32>,
}

impl PageArena {
    /// The poisoning mode the arena was built with.
    pub fn poison_mode(&self) -> Poison {
        self.poison
    }

    /// Every poison mismatch found so far, oldest first. A block found
    /// corrupt when allocated is quarantined: kept allocated for good, held
    /// by nobody, and a reservation it blocks says so
    /// ([`Unmovable::Quarantined`](crate::Unmovable::Quarantined)); a
    /// reserved run's mismatch is recorded and the run still handed out.
    ///
    /// ```
    /// use pinowner::{poison::Poison, PageArena, PageFlags};
    ///
    /// let arena = PageArena::builder().pages(4).poison(Poison::Pattern).build()?;
    /// assert_eq!(arena.poison_mode(), Poison::Pattern);
    /// drop(arena.alloc(2)?);
    /// assert!(arena.page_state(0)?.flags.contains(PageFlags::POISONED));
    /// assert!(arena.alloc(2)?.bytes().iter().all(|&b| b == Poison::PATTERN));
    /// assert!(arena.poison_errors().is_empty(), "nobody wrote the freed block");
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn poison_errors(&self) -> Vec<PoisonError> {
        self.quarantine.lock().errors.clone()
    }

    /// True if the block headed by `head` is quarantined (withheld for
    /// good by pattern poisoning).
    pub(crate) fn is_quarantined(&self, head: u32) -> bool {
        self.poison == Poison::Pattern && self.quarantine.lock().withheld.contains(&head)
    }

    /// A block whose last count is gone, not yet on a list or in a cache
    /// (so ours alone): poison it.
    #[cold]
    #[inline(never)]
    pub(crate) fn poison_free(&self, head: u32, order: u8) {
        let (off, len) = self.byte_range(head, order);
        match self.poison {
            Poison::Off => {}
            Poison::Pattern => {
                for p in head..head + (1u32 << order) {
                    if self.ext.test(Mark::Zeroed, p) {
                        continue;
                    }
                    let (off, len) = self.byte_range(p, 0);
                    // Freed by its last holder and not yet listed or cached:
                    // no handle to it exists, nobody can allocate it.
                    // SAFETY: so its bytes are ours alone.
                    unsafe { self.region.bytes_mut(off, len) }.fill(Poison::PATTERN);
                    self.ext.set(Mark::Poisoned, p, 1);
                }
            }
            Poison::Protect => {
                // SAFETY: as above: the block is ours alone, page-aligned.
                if let Err(e) = unsafe { self.region.protect(off, len, false) } {
                    tracing::warn!(target: "pinowner::poison", pfn = head, error = %e, "mprotect(PROT_NONE) failed");
                }
            }
        }
    }

    /// The allocation with poisoning on: a block checked (or made
    /// accessible again); a corrupt one is quarantined and another taken.
    #[cold]
    #[inline(never)]
    pub(crate) fn alloc_poisoned(
        &self,
        order: u8,
        movable: bool,
        who: Who,
        claim: bool,
    ) -> Result<(u32, crate::arena::Ticket), AllocError> {
        loop {
            let (pfn, ticket) = self.alloc_unchecked(order, movable, who, claim)?;
            match self.unpoison(pfn, 1 << order) {
                None => return Ok((pfn, ticket)),
                Some(e) => {
                    // Quarantined: its one count is never dropped, and it
                    // names nobody (the caller gets another block).
                    tracing::error!(target: "pinowner::poison", %e, "poisoned block written after free; quarantined");
                    self.desc(pfn).owner.store(slot::encode(Who::NONE, ticket.gen(), false), Release);
                    let mut q = self.quarantine.lock();
                    q.errors.push(e);
                    q.withheld.push(pfn);
                }
            }
        }
    }

    /// Pages `start..start + n` are handed out: made accessible again
    /// (protect mode) or checked (pattern mode); returns the first
    /// mismatch.
    pub(crate) fn unpoison(&self, start: u32, n: u32) -> Option<PoisonError> {
        match self.poison {
            Poison::Off => None,
            Poison::Protect => {
                let (off, _) = self.byte_range(start, 0);
                let len = (n as usize) << self.page_shift;
                // SAFETY: the pages were just allocated: ours alone, aligned.
                if let Err(e) = unsafe { self.region.protect(off, len, true) } {
                    tracing::warn!(target: "pinowner::poison", pfn = start, error = %e, "mprotect(PROT_READ|PROT_WRITE) failed");
                }
                None
            }
            Poison::Pattern => {
                let mut first = None;
                for p in start..start + n {
                    if !self.ext.test(Mark::Poisoned, p) {
                        continue;
                    }
                    self.ext.clear(Mark::Poisoned, p, 1);
                    if first.is_some() {
                        continue;
                    }
                    let (off, len) = self.byte_range(p, 0);
                    // SAFETY: just allocated, no handle yet: ours alone.
                    let bytes = unsafe { self.region.bytes(off, len) };
                    if let Some(at) = mismatch(bytes) {
                        first = Some((p, at, bytes[at..len.min(at + 16)].to_vec()));
                    }
                }
                let (pfn, offset, found) = first?;
                let freed = self
                    .tracked_events()
                    .into_iter()
                    .rev()
                    .find(|e| e.head == start as Pfn && matches!(e.kind, EventKind::Put | EventKind::Unpin));
                Some(PoisonError {
                    pfn: pfn as Pfn,
                    head: start as Pfn,
                    pages: n as usize,
                    offset,
                    found,
                    pattern: Poison::PATTERN,
                    freed_by: freed.as_ref().and_then(|e| e.stack),
                    freed_at: freed.and_then(|e| e.who),
                })
            }
        }
    }

    /// A committed run's pages are handed out: checked or made accessible;
    /// a mismatch is recorded (the run is still handed out).
    #[cold]
    #[inline(never)]
    pub(crate) fn unpoison_run(&self, start: u32, pages: u32) {
        if let Some(e) = self.unpoison(start, pages) {
            tracing::error!(target: "pinowner::poison", %e, "poisoned page of a reserved run written after free");
            self.quarantine.lock().errors.push(e);
        }
    }
}

/// The first byte of `bytes` that is not the pattern: compared 4 KiB at a
/// time against a constant page (`memcmp`, vectorised), searched only in
/// the chunk that differs.
fn mismatch(bytes: &[u8]) -> Option<usize> {
    static POISON_PAGE: [u8; 4096] = [Poison::PATTERN; 4096];
    bytes.chunks(4096).enumerate().find_map(|(i, c)| {
        if c == &POISON_PAGE[..c.len()] {
            None
        } else {
            c.iter().position(|&b| b != Poison::PATTERN).map(|at| i * 4096 + at)
        }
    })
}
