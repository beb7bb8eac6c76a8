//! The descriptor's owner slot: who took the last count, in 8 bytes.
//!
//! | bits   | field   | meaning |
//! |--------|---------|---------|
//! | 0..2   | tag     | 0 empty, 1 `&'static Location`, 2 `&'static Site`, 3 free-list index |
//! | 2      | pin     | the acquisition was a pin (else a reference); 0 in a free-list index |
//! | 3..48  | payload | the pointer (its low three bits are the tag and pin bit) or the index shifted left by 3 |
//! | 48..62 | gen     | the state word's generation right after the count change that wrote it |
//!
//! The acquirer's half (tag and pointer, [`Who`]) is made once per call
//! without a branch on the acquirer's kind: the thread's current site is
//! kept tagged, and the caller's location is a constant. (On a target whose
//! `Location` or `Site` is aligned to less than 8 bytes, the pin bit is bit
//! 62 instead.)
//!
//! A block has one slot that counts: its **head** page's (a count through
//! any page is a count on the block). An acquirer writes it after its count
//! change, tagged with the generation that change produced. The generation
//! moves on every acquisition that claims the slot and on the release of
//! the latest such acquisition (handles remember the generation their
//! acquisition produced and compare it inside the release's
//! compare-and-swap; a raw release, which cannot tell, moves it if the slot
//! is current). So a reader that sees the state word's current generation
//! in the slot knows the slot's writer is the latest acquirer and has not
//! released: the slot is *attributed*. Releases of older counts leave it
//! attributed (a buffer pool dropping its reference does not hide the DMA
//! pin taken after it). Any other generation means "unattributed", never a
//! guess.
//!
//! **Pins keep the slot.** A reference taken on a block that has pins does
//! not claim the slot and does not move the generation (by page number it
//! adds the count alone; through a handle, whose add moved the generation
//! already, it takes the move back if nothing changed since), so a reader
//! passing through a pinned DMA buffer never hides its pinner. Its handle
//! carries `UNCLAIMED` in its generation, so its release never moves it.
//!
//! **No wrap.** The 14-bit generation wraps, but a stale slot can never
//! come back to life: once the generation has moved past a slot's value,
//! the next move needs another claiming acquisition (releases move it only
//! if their own acquisition is the latest, raw ones only if the slot is
//! current), and that acquisition rewrites the one slot. (A slot per page,
//! as the first version had, let a page's stale slot survive 2^14 moves
//! made through the block's other pages and name a departed holder.)
//!
//! The allocator
//! reuses the slot of a free block head as its free-list index; a pointer tag
//! is only ever written by a holder with a real `'static` pointer, so decoding
//! a stale slot is always memory-safe.

use core::panic::Location;

use crate::site::Site;

const TAG_MASK: u64 = 0b11;
const TAG_LOCATION: u64 = 1;
const TAG_SITE: u64 = 2;
const TAG_INDEX: u64 = 3;
const PAYLOAD_MASK: u64 = (1 << 48) - 1;
const GEN_SHIFT: u32 = 48;
const GEN_MASK: u64 = ((1 << 14) - 1) << GEN_SHIFT;
/// Bit 2 where both pointer kinds leave it clear (8-byte alignment), so the
/// pin bit folds into the constant or-ed with the tag.
const PIN_BIT: u64 = if core::mem::align_of::<Location<'static>>() >= 8 && core::mem::align_of::<Site>() >= 8 {
    1 << 2
} else {
    1 << 62
};
/// The low bits of a pointer word that are not the pointer's.
const LOW_BITS: u64 = TAG_MASK | (PIN_BIT & PAYLOAD_MASK);
/// A free-list index's shift (above the tag and the pin bit).
const INDEX_SHIFT: u32 = 3;

/// Or-ed into the generation a handle keeps when its acquisition did not
/// claim the slot (a reference on a pinned block): no state word generation
/// (14 bits) ever equals it, so the handle's release never counts as the
/// latest one.
pub(crate) const UNCLAIMED: u16 = 0x8000;

/// Who acquired a count on a page: the `#[pin_tracked]` site that was current,
/// or else the caller's source location (`#[track_caller]`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Acquirer {
    /// A `#[track_caller]` location: the line that called `get`, `pin` or `alloc`.
    Location(&'static Location<'static>),
    /// A site declared with `#[pin_tracked]` or `pin_scope!`.
    Site(&'static Site),
}

impl Acquirer {
    /// The subsystem, if the acquirer is a site that declared one.
    pub fn subsystem(&self) -> Option<&'static str> {
        match self {
            Acquirer::Location(_) => None,
            Acquirer::Site(s) => s.subsystem(),
        }
    }
}

impl core::fmt::Display for Acquirer {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self {
            Acquirer::Location(l) => write!(f, "{}:{}:{}", l.file(), l.line(), l.column()),
            Acquirer::Site(s) => core::fmt::Display::fmt(s, f),
        }
    }
}

/// The 14-bit generation stored alongside a slot value.
#[inline(always)]
fn gen_bits(gen: u16) -> u64 {
    ((gen as u64) & ((1 << 14) - 1)) << GEN_SHIFT
}

/// An acquirer as the owner slot stores it: its tagged pointer (tag and
/// pointer, no generation, no pin bit), or 0 if the pointer does not fit the
/// slot's 48 bits (no such address on x86-64 or AArch64 Linux by default;
/// the count then goes unattributed rather than misnamed).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Who(u64);

impl Who {
    /// No acquirer: a slot written with it is never attributed.
    pub(crate) const NONE: Who = Who(0);

    /// From a tagged pointer ([`site_word`] or [`location_word`]).
    #[inline(always)]
    pub(crate) fn from_tagged(word: u64) -> Who {
        // The pointer's tag bits are clear (both types are aligned past
        // them, asserted below), so the tag is or-ed in and one test on the
        // result checks that the pointer fits the payload.
        if word & !PAYLOAD_MASK != 0 {
            // Never taken where user addresses fit 48 bits: a predicted
            // branch, not a conditional move, on the hot path.
            core::hint::cold_path();
            return Who::NONE;
        }
        Who(word)
    }

    /// The acquirer's slot form.
    pub(crate) fn of(acq: Acquirer) -> Who {
        match acq {
            Acquirer::Location(l) => Who::from_tagged(location_word(l)),
            Acquirer::Site(s) => Who::from_tagged(site_word(s)),
        }
    }

    /// The acquirer, if there is one.
    #[inline]
    pub(crate) fn acquirer(self) -> Option<Acquirer> {
        decode(self.0)
    }
}

/// A site's tagged pointer (the form the thread's current site is kept in).
#[inline(always)]
pub(crate) fn site_word(site: &'static Site) -> u64 {
    site as *const Site as u64 | TAG_SITE
}

/// A source location's tagged pointer.
#[inline(always)]
pub(crate) fn location_word(loc: &'static Location<'static>) -> u64 {
    loc as *const Location<'static> as u64 | TAG_LOCATION
}

/// The site a tagged word names (0, or a word of [`site_word`]).
#[inline(always)]
pub(crate) fn site_of(word: u64) -> Option<&'static Site> {
    match decode(word) {
        Some(Acquirer::Site(s)) => Some(s),
        _ => None,
    }
}

/// Encodes an acquirer with the generation its count change produced, and
/// whether it took a pin: two or-s of the acquirer's word (the pin bit is a
/// constant at every call).
#[inline(always)]
pub(crate) fn encode(who: Who, gen: u16, pin: bool) -> u64 {
    who.0 | gen_bits(gen) | if pin { PIN_BIT } else { 0 }
}

// A reference's address is a multiple of its type's alignment: the two tag
// bits of a `&Location` or a `&Site` are always clear.
const _: () = assert!(core::mem::align_of::<Location<'static>>() > TAG_MASK as usize);
const _: () = assert!(core::mem::align_of::<Site>() > TAG_MASK as usize);

/// Encodes a free-list index.
#[inline(always)]
pub(crate) fn encode_index(index: u32) -> u64 {
    ((index as u64) << INDEX_SHIFT) | TAG_INDEX
}

/// The free-list index in `word`, if it holds one.
#[inline(always)]
pub(crate) fn index_of(word: u64) -> Option<u32> {
    (word & TAG_MASK == TAG_INDEX).then_some(((word & PAYLOAD_MASK) >> INDEX_SHIFT) as u32)
}

/// Decodes a free-list index written by [`encode_index`].
///
/// # Panics
///
/// If the slot holds no index: the free lists are out of sync.
#[inline(always)]
pub(crate) fn decode_index(word: u64) -> u32 {
    index_of(word).expect("owner slot does not hold a free-list index")
}

/// Decodes the acquirer in `word` if it was written by the count change that
/// produced generation `gen`.
pub(crate) fn decode_if_current(word: u64, gen: u16) -> Option<Acquirer> {
    if !is_current(word, gen) {
        return None;
    }
    decode(word)
}

/// True if `word` was written by the count change that produced `gen` (an
/// empty slot or a free-list index never is: it decodes to no acquirer).
#[inline(always)]
pub(crate) fn is_current(word: u64, gen: u16) -> bool {
    word & GEN_MASK == gen_bits(gen)
}

/// True if the acquisition that wrote `word` took a pin.
pub(crate) fn is_pin(word: u64) -> bool {
    word & PIN_BIT != 0
}

/// Decodes whatever acquirer the slot holds, current or not.
pub(crate) fn decode(word: u64) -> Option<Acquirer> {
    let ptr = (word & PAYLOAD_MASK & !LOW_BITS) as usize;
    match word & TAG_MASK {
        TAG_LOCATION => {
            // SAFETY: a slot tagged LOCATION is only ever written by `encode`
            // from a `&'static Location<'static>`; the pointer is unchanged
            // (it fit the payload and had clear tag bits) and lives forever.
            Some(Acquirer::Location(unsafe { &*(ptr as *const Location<'static>) }))
        }
        TAG_SITE => {
            // SAFETY: as above, from a `&'static Site`.
            Some(Acquirer::Site(unsafe { &*(ptr as *const Site) }))
        }
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    #[track_caller]
    fn a_slot_is_attributed_only_for_its_own_generation() {
        let loc = Location::caller();
        let w = encode(Who::of(Acquirer::Location(loc)), 7, true);
        assert!(is_pin(w));
        assert!(!is_pin(encode(Who::of(Acquirer::Location(loc)), 7, false)));
        assert_eq!(decode_if_current(w, 7), Some(Acquirer::Location(loc)));
        assert_eq!(decode_if_current(w, 8), None);
        assert_eq!(decode_if_current(w, 7 + (1 << 14)), Some(Acquirer::Location(loc)));
    }

    #[test]
    fn the_pin_bit_never_changes_the_pointer_decoded() {
        static S: Site = Site::new("s", module_path!(), file!(), line!(), Some("dma"));
        for pin in [false, true] {
            let w = encode(Who::of(Acquirer::Site(&S)), 3, pin);
            assert_eq!(is_pin(w), pin);
            assert_eq!(decode_if_current(w, 3), Some(Acquirer::Site(&S)));
            assert_eq!(site_of(site_word(&S)).map(|s| s as *const Site), Some(&S as *const Site));
        }
        assert_eq!(decode(encode(Who::NONE, 3, true)), None);
    }

    #[test]
    fn a_free_list_index_never_decodes_as_an_acquirer() {
        let w = encode_index(12345);
        assert_eq!(decode_index(w), 12345);
        assert_eq!(decode(w), None);
        assert_eq!(decode_if_current(w, 0), None);
    }
}
