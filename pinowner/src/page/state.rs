//! The packed state word of a page descriptor.
//!
//! One `AtomicU64` per page holds everything the hot path reads:
//!
//! | bits    | field     | meaning |
//! |---------|-----------|---------|
//! | 0..20   | refs      | counted references (`PageRef`, `Block`, raw gets); at most 2^19 |
//! | 20..36  | pins      | long-lived pins (`PagePin`, raw pins), counted apart from refs; at most 2^15 |
//! | 36..41  | order     | order of the block this page heads (meaningful only with `HEAD`) |
//! | 41      | `HEAD`    | this page heads a block (free or allocated); tail pages never have it |
//! | 42      | `FREE`    | the block is free (in a buddy list, a thread cache, or an isolated window) |
//! | 43      | `PCP`     | the free block is parked in a per-thread cache |
//! | 44      | `ISOLATED`| the block headed here starts in a window isolated by a reservation (set on heads only, as the kernel marks pageblocks, not pages) |
//! | 45      | `TRACKED` | armed by a failed reservation: events on it are recorded |
//! | 46      | `MOVABLE` | the allocation was made movable (`alloc_movable`) |
//! | 47      | `EXCLUSIVE` | the owning `Block` lent out `&mut` bytes, or a discard is dropping them before the free; no new holder may appear (until the block is freed, if the `BlockBytesMut` leaked) |
//! | 48      | `IDLE`    | marked idle (`mark_idle`, `page_referenced`): the access detector of [`crate::idle`]; cleared by the next get, pin or byte borrow, and on every free |
//! | 49      | `CONTIG`  | part of a committed contiguous run |
//! | 50..64  | gen       | bumped by every acquisition and by the release of the latest one; wraps. Pairs an owner slot with the acquisition that wrote it |
//!
//! Counts live in the **head** page of a block: a reference to any page of a
//! block keeps the whole block alive (the kernel's folio rule). A block is
//! freed when its head has no refs and no pins.
//!
//! Who may write the word depends on the page's state. A live block's head
//! is changed by read-modify-writes of its holders (and acquisitions by page
//! number, which compare-and-swap from a live word only). A free page's
//! word, a free block's tails, and a head whose last count is gone change
//! only under the zone lock (where the allocator uses plain stores) or by
//! operations that cannot overlap that code; a cached page's word is
//! written by its cache owner's allocation inside the cache, and `ISOLATED`
//! only with the zone lock and every cache of the zone held. The
//! allocator's module docs list every writer.
//!
//! Overflow never spills into a neighbour: the top bit of each count field is
//! a guard. An increment that returns a value at or above the guard is undone
//! and reported; concurrent increments can overshoot the guard by at most the
//! number of racing threads, far below the field's headroom. Decrements come
//! only from holders (guards hold exactly one count each; raw releases are
//! checked against a ledger first), so a count never underflows. The
//! generation sits in the top bits, where the carry out of an add simply
//! vanishes.

/// One reference.
pub(crate) const REF_ONE: u64 = 1;
pub(crate) const REF_BITS: u32 = 20;
pub(crate) const REF_MASK: u64 = (1 << REF_BITS) - 1;
/// A ref count at or above this is an overflow in progress.
pub(crate) const REF_LIMIT: u64 = 1 << (REF_BITS - 1);

pub(crate) const PIN_SHIFT: u32 = 20;
pub(crate) const PIN_BITS: u32 = 16;
/// One pin.
pub(crate) const PIN_ONE: u64 = 1 << PIN_SHIFT;
pub(crate) const PIN_MASK: u64 = ((1 << PIN_BITS) - 1) << PIN_SHIFT;
/// A pin count at or above this is an overflow in progress.
pub(crate) const PIN_LIMIT: u64 = 1 << (PIN_BITS - 1);

pub(crate) const ORDER_SHIFT: u32 = 36;
pub(crate) const ORDER_BITS: u32 = 5;
pub(crate) const ORDER_MASK: u64 = ((1 << ORDER_BITS) - 1) << ORDER_SHIFT;
/// The largest order the state word can hold.
pub const MAX_ORDER_LIMIT: u8 = (1 << ORDER_BITS) - 1;

pub(crate) const HEAD: u64 = 1 << 41;
pub(crate) const FREE: u64 = 1 << 42;
pub(crate) const PCP: u64 = 1 << 43;
pub(crate) const ISOLATED: u64 = 1 << 44;
pub(crate) const TRACKED: u64 = 1 << 45;
pub(crate) const MOVABLE: u64 = 1 << 46;
pub(crate) const EXCLUSIVE: u64 = 1 << 47;
pub(crate) const IDLE: u64 = 1 << 48;
pub(crate) const CONTIG: u64 = 1 << 49;

pub(crate) const GEN_SHIFT: u32 = 50;
pub(crate) const GEN_BITS: u32 = 14;
/// One count event.
pub(crate) const GEN_ONE: u64 = 1 << GEN_SHIFT;

pub(crate) const COUNTS: u64 = REF_MASK | PIN_MASK;

const _: () = assert!(REF_MASK & PIN_MASK == 0);
const _: () = assert!(PIN_MASK & ORDER_MASK == 0);
const _: () = assert!(ORDER_MASK & HEAD == 0);
const _: () = assert!(CONTIG < GEN_ONE);
// `Count::pfn_fast`'s range test needs every flag it rejects above `HEAD`.
const _: () = assert!(FREE > HEAD && EXCLUSIVE > HEAD && TRACKED > HEAD && IDLE > HEAD && PIN_MASK < HEAD);
const _: () = assert!(GEN_SHIFT + GEN_BITS == 64);
// `Count::release_fast`'s range test needs `TRACKED` above the counts.
const _: () = assert!(TRACKED > COUNTS);

/// Bits whose presence sends an acquire (get or pin on a held page) to the
/// slow path. The overflow guards are checked separately by field.
/// `EXCLUSIVE` on a held block means its `BlockBytesMut` was leaked (a live one
/// borrows the block): the slow path refuses the acquire.
pub(crate) const ACQUIRE_SLOW: u64 = TRACKED | IDLE | EXCLUSIVE | REF_LIMIT | (PIN_LIMIT << PIN_SHIFT);

/// What kind of count an operation changes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Count {
    Ref,
    Pin,
}

impl Count {
    #[inline(always)]
    pub(crate) const fn one(self) -> u64 {
        match self {
            Count::Ref => REF_ONE,
            Count::Pin => PIN_ONE,
        }
    }

    #[inline(always)]
    pub(crate) const fn limit(self) -> u64 {
        match self {
            Count::Ref => REF_LIMIT,
            Count::Pin => PIN_LIMIT << PIN_SHIFT,
        }
    }

    #[inline(always)]
    pub(crate) const fn mask(self) -> u64 {
        match self {
            Count::Ref => REF_MASK,
            Count::Pin => PIN_MASK,
        }
    }

    /// Bits of the word before an add of this count that send the add to
    /// the slow path: [`ACQUIRE_SLOW`], and for a reference also any pin
    /// (a reference on a pinned block does not take over its attribution;
    /// see `slot`). One test either way: the mask is a constant.
    #[inline(always)]
    pub(crate) const fn acquire_slow(self) -> u64 {
        match self {
            Count::Ref => ACQUIRE_SLOW | PIN_MASK,
            Count::Pin => ACQUIRE_SLOW,
        }
    }

    /// True if an acquisition by page number may take the fast path on a
    /// page whose word is `old`: a live block head (head, not free, held)
    /// with none of [`ACQUIRE_SLOW`]'s flags, room in this count, and for a
    /// reference no pins. One range test: the word's head, flag and count
    /// bits, less `HEAD + 1`, lie below the count's bound only in exactly
    /// those words (a flag above `HEAD`, or a missing `HEAD`, puts it far
    /// above; no count at all wraps it around).
    #[inline(always)]
    pub(crate) const fn pfn_fast(self, old: u64) -> bool {
        const FIELDS: u64 = HEAD | FREE | EXCLUSIVE | TRACKED | IDLE | PIN_MASK | REF_MASK;
        let bound = match self {
            Count::Ref => REF_LIMIT - 1,
            Count::Pin => (PIN_LIMIT << PIN_SHIFT) - 1,
        };
        (old & FIELDS).wrapping_sub(HEAD + 1) < bound
    }

    /// [`pfn_fast`](Self::pfn_fast) for the counts-only policy, where a
    /// reference on a pinned block takes the fast path too (nothing
    /// claims): for a reference, the same range test over the flags and
    /// the references alone (a live head whose holders all pin wraps
    /// around, to the general path); a pin's test is the exact one.
    #[inline(always)]
    pub(crate) const fn pfn_fast_counted(self, old: u64) -> bool {
        const FIELDS: u64 = HEAD | FREE | EXCLUSIVE | TRACKED | IDLE | REF_MASK;
        match self {
            Count::Ref => (old & FIELDS).wrapping_sub(HEAD + 1) < REF_LIMIT - 1,
            Count::Pin => self.pfn_fast(old),
        }
    }

    /// True if a counts-only release of this count from word `old` (the
    /// word its `fetch_sub` returned) takes the fast path: the block is not
    /// armed and the count is not its last. (The exact release decides the
    /// same with two bit tests before its compare-and-swap: `TRACKED`, then
    /// [`others`](Self::others).) One
    /// range test: the word's counts and `TRACKED`, less one more than this
    /// count's one, lie below `TRACKED` less that only when the counts are
    /// above this one and `TRACKED` is clear (a last count wraps around).
    #[inline(always)]
    pub(crate) const fn release_fast(self, old: u64) -> bool {
        (old & (COUNTS | TRACKED)).wrapping_sub(self.one() + 1) < TRACKED - (self.one() + 1)
    }

    /// The count bits other than this count's lowest. A releaser holds
    /// this count, so the counts field is at least its one, and exceeds it
    /// (the release is not the block's last) exactly when one of these bits
    /// is set: one bit test, one instruction from the word's load.
    #[inline(always)]
    pub(crate) const fn others(self) -> u64 {
        COUNTS & !self.one()
    }

    /// True if an add of this count on a block whose word is `old` claims
    /// the owner slot: every pin, and a reference on a block with no pins.
    #[inline(always)]
    pub(crate) const fn claims(self, old: u64) -> bool {
        match self {
            Count::Ref => old & PIN_MASK == 0,
            Count::Pin => true,
        }
    }

    /// The delta that adds one count and bumps the generation.
    #[inline(always)]
    pub(crate) const fn acquire_delta(self) -> u64 {
        self.one() + GEN_ONE
    }

    /// The delta that drops one count and bumps the generation (applied with
    /// a wrapping add; the caller holds the count, so nothing borrows).
    #[inline(always)]
    pub(crate) const fn release_delta(self) -> u64 {
        GEN_ONE.wrapping_sub(self.one())
    }

    /// The tracker's event kind for an acquire of this count.
    pub(crate) const fn acquire_kind(self) -> crate::tracker::EventKind {
        match self {
            Count::Ref => crate::tracker::EventKind::Get,
            Count::Pin => crate::tracker::EventKind::Pin,
        }
    }

    /// The tracker's event kind for a release of this count.
    pub(crate) const fn release_kind(self) -> crate::tracker::EventKind {
        match self {
            Count::Ref => crate::tracker::EventKind::Put,
            Count::Pin => crate::tracker::EventKind::Unpin,
        }
    }
}

#[inline(always)]
pub(crate) const fn refs(word: u64) -> u32 {
    (word & REF_MASK) as u32
}

#[inline(always)]
pub(crate) const fn pins(word: u64) -> u32 {
    ((word & PIN_MASK) >> PIN_SHIFT) as u32
}

#[inline(always)]
pub(crate) const fn order(word: u64) -> u8 {
    ((word & ORDER_MASK) >> ORDER_SHIFT) as u8
}

#[inline(always)]
pub(crate) const fn gen(word: u64) -> u16 {
    (word >> GEN_SHIFT) as u16
}

#[inline(always)]
pub(crate) const fn with_order(word: u64, order: u8) -> u64 {
    (word & !ORDER_MASK) | ((order as u64) << ORDER_SHIFT)
}

/// True when the word describes a live allocated block head: head, not free,
/// not lent out exclusively, and held by someone (a count of zero means the
/// last holder is freeing it right now).
#[inline(always)]
pub(crate) const fn is_live_head(word: u64) -> bool {
    word & (HEAD | FREE | EXCLUSIVE) == HEAD && word & COUNTS != 0
}

/// Flags of a page, decoded from its state word.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct PageFlags(u16);

macro_rules! flags {
    ($($(#[$doc:meta])* $name:ident = $bit:expr, $text:literal;)*) => {
        impl PageFlags {
            $($(#[$doc])* pub const $name: PageFlags = PageFlags(1 << (($bit).trailing_zeros() - 41));)*
            const ALL: &'static [(PageFlags, &'static str)] = &[$((PageFlags::$name, $text)),*];
        }
    };
}

flags! {
    /// The page heads a block.
    HEAD = HEAD, "head";
    /// The block is free.
    FREE = FREE, "free";
    /// The free block is parked in a per-thread cache.
    PCP = PCP, "pcp";
    /// The block starts in a window isolated by a reservation (a mark on
    /// block heads).
    ISOLATED = ISOLATED, "isolated";
    /// The page is armed for owner tracking.
    TRACKED = TRACKED, "tracked";
    /// The allocation is movable.
    MOVABLE = MOVABLE, "movable";
    /// The block's bytes are borrowed mutably by its owner.
    EXCLUSIVE = EXCLUSIVE, "exclusive";
    /// The block is idle: marked by `PageArena::mark_idle` and not
    /// accessed since (in `PageArena::page_info`; see `crate::idle`).
    IDLE = IDLE, "idle";
    /// The page belongs to a committed contiguous run.
    CONTIG = CONTIG, "contig";
}

impl PageFlags {
    /// Side flag (from the page extensions, not the state word): the page
    /// is free and its memory was given back to the operating system by
    /// the free page reporter ([`crate::reporting`]).
    pub const REPORTED: PageFlags = PageFlags(1 << 9);
    /// Side flag: the page is free and its bytes are known to be zero (the
    /// operating system dropped them), so `alloc_zeroed` will not write it.
    pub const ZEROED: PageFlags = PageFlags(1 << 10);
    /// Side flag: the free page holds the poison pattern ([`crate::poison`]).
    pub const POISONED: PageFlags = PageFlags(1 << 11);
    /// The side flags, in bit order, with their names.
    const SIDE: &'static [(PageFlags, &'static str)] =
        &[(PageFlags::REPORTED, "reported"), (PageFlags::ZEROED, "zeroed"), (PageFlags::POISONED, "poisoned")];

    pub(crate) const fn from_word(word: u64) -> Self {
        PageFlags(((word >> 41) & 0x1ff) as u16)
    }

    /// True if every flag in `other` is set.
    pub const fn contains(self, other: PageFlags) -> bool {
        self.0 & other.0 == other.0
    }

    /// True if no flag is set.
    pub const fn is_empty(self) -> bool {
        self.0 == 0
    }

    /// The raw flag bits (bit 0 is `HEAD`).
    pub const fn bits(self) -> u16 {
        self.0
    }
}

impl core::ops::BitAnd for PageFlags {
    type Output = PageFlags;
    fn bitand(self, rhs: PageFlags) -> PageFlags {
        PageFlags(self.0 & rhs.0)
    }
}

impl core::ops::BitOr for PageFlags {
    type Output = PageFlags;
    fn bitor(self, rhs: PageFlags) -> PageFlags {
        PageFlags(self.0 | rhs.0)
    }
}

impl core::fmt::Display for PageFlags {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        let mut first = true;
        for (flag, name) in PageFlags::ALL.iter().chain(PageFlags::SIDE) {
            if self.contains(*flag) {
                if !first {
                    f.write_str("|")?;
                }
                f.write_str(name)?;
                first = false;
            }
        }
        if first {
            f.write_str("none")?;
        }
        Ok(())
    }
}

impl core::fmt::Debug for PageFlags {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        write!(f, "PageFlags({self})")
    }
}

/// A decoded snapshot of one page's state word, as errors and reports show it.
///
/// For a tail page (one inside a larger block) the counts and order are those
/// of its block's head, since the head carries them for the whole block.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PageState {
    /// Counted references on the page's block.
    pub refcount: u32,
    /// Long-lived pins on the page's block.
    pub pincount: u32,
    /// Order of the block.
    pub order: u8,
    /// Flags of the block's head (and `ISOLATED`/`TRACKED` of the page itself).
    pub flags: PageFlags,
}

impl PageState {
    pub(crate) const fn from_word(word: u64) -> Self {
        PageState { refcount: refs(word), pincount: pins(word), order: order(word), flags: PageFlags::from_word(word) }
    }

    /// A state with no counts and no flags (pages not yet described).
    pub const fn empty() -> Self {
        PageState { refcount: 0, pincount: 0, order: 0, flags: PageFlags(0) }
    }
}

impl core::fmt::Display for PageState {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        write!(f, "refcount {}, pincount {}, order {}, flags {}", self.refcount, self.pincount, self.order, self.flags)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The boundary counts the range tests are checked on.
    const REFS: [u64; 6] = [0, 1, 2, REF_LIMIT - 1, REF_LIMIT, REF_MASK];

    /// Calls `f(word, refs, pins)` for every subset of `flags` with every
    /// reference count of [`REFS`] and every pin count of `pins` (a head of
    /// order 5, generation 77).
    fn each_word(flags: &[u64], pins: &[u64], mut f: impl FnMut(u64, u64, u64)) {
        for set in 0u32..1 << flags.len() {
            let fl: u64 = (0..flags.len()).filter(|i| set & 1 << i != 0).map(|i| flags[i]).sum();
            for &r in &REFS {
                for &p in pins {
                    f(fl | r | (p << PIN_SHIFT) | (5 << ORDER_SHIFT) | (77 * GEN_ONE), r, p);
                }
            }
        }
    }

    const ALL_FLAGS: [u64; 9] = [HEAD, FREE, PCP, ISOLATED, TRACKED, MOVABLE, EXCLUSIVE, IDLE, CONTIG];
    const PINS: [u64; 5] = [0, 1, PIN_LIMIT - 1, PIN_LIMIT, PIN_MASK >> PIN_SHIFT];

    /// The range test is the predicate it replaced (a live head without
    /// the slow flags, and for a reference no pins), on every combination
    /// of flags and boundary counts.
    #[test]
    fn the_by_number_fast_test_admits_exactly_live_heads_without_slow_flags() {
        each_word(&ALL_FLAGS, &PINS, |w, _, _| {
            for c in [Count::Ref, Count::Pin] {
                let mut slow = ACQUIRE_SLOW & !REF_LIMIT;
                if c == Count::Ref {
                    slow = ACQUIRE_SLOW | PIN_MASK;
                }
                let want = is_live_head(w) && w & slow == 0;
                assert_eq!(c.pfn_fast(w), want, "{c:?} on {w:#x}");
            }
        });
    }

    /// The counts-only by-number test: a reference needs a live head with
    /// a reference already (the rest take the general path), no slow flag
    /// and room; pins on the block never send it to the slow path. A pin's
    /// test is the exact one.
    #[test]
    fn the_counts_only_by_number_fast_test_admits_exactly_referenced_heads_without_slow_flags() {
        each_word(&ALL_FLAGS, &PINS, |w, r, _| {
            let want = is_live_head(w) && w & (TRACKED | IDLE | EXCLUSIVE | REF_LIMIT) == 0 && r >= 1;
            assert_eq!(Count::Ref.pfn_fast_counted(w), want, "ref on {w:#x}");
            assert_eq!(Count::Pin.pfn_fast_counted(w), Count::Pin.pfn_fast(w), "pin on {w:#x}");
        });
    }

    /// The release's test (both policies): fast unless the block is
    /// armed or the count dropped is the block's last, for every held word.
    #[test]
    fn the_release_test_sends_exactly_last_counts_and_armed_blocks_to_the_slow_path() {
        let flags = [HEAD, ISOLATED, TRACKED, MOVABLE, EXCLUSIVE, IDLE, CONTIG];
        each_word(&flags, &[0, 1, 2, PIN_LIMIT, PIN_MASK >> PIN_SHIFT], |w, r, p| {
            for (c, held) in [(Count::Ref, r), (Count::Pin, p)] {
                if held == 0 {
                    continue; // the releaser holds one
                }
                let want = w & TRACKED == 0 && w & COUNTS != c.one();
                assert_eq!(c.release_fast(w), want, "{c:?} on {w:#x}");
                // The exact release's two bit tests decide the same.
                assert_eq!(w & TRACKED == 0 && w & c.others() != 0, want, "{c:?} on {w:#x}");
            }
        });
    }

    #[test]
    fn release_delta_drops_one_count_and_bumps_generation() {
        let w = HEAD | 3 | (2 * PIN_ONE) | (5 * GEN_ONE);
        let r = w.wrapping_add(Count::Ref.release_delta());
        assert_eq!(refs(r), 2);
        assert_eq!(pins(r), 2);
        assert_eq!(gen(r), 6);
        let p = w.wrapping_add(Count::Pin.release_delta());
        assert_eq!(refs(p), 3);
        assert_eq!(pins(p), 1);
        assert_eq!(gen(p), 6);
        assert_eq!(p & HEAD, HEAD);
    }

    #[test]
    fn generation_wraps_without_touching_other_fields() {
        let w = HEAD | 1 | (((1u64 << GEN_BITS) - 1) << GEN_SHIFT);
        let r = w.wrapping_add(Count::Ref.acquire_delta());
        assert_eq!(gen(r), 0);
        assert_eq!(refs(r), 2);
        assert_eq!(r & !(REF_MASK), HEAD);
    }

    #[test]
    fn flags_display_in_bit_order() {
        let s = PageState::from_word(HEAD | FREE | ISOLATED);
        assert_eq!(s.to_string(), "refcount 0, pincount 0, order 0, flags head|free|isolated");
    }
}
