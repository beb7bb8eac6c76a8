//! The descriptor's owner slot: who took the last count, in 8 bytes.
//!
//! | bits   | field   | meaning |
//! |--------|---------|---------|
//! | 0..2   | tag     | 0 empty, 1 `&'static Location`, 2 `&'static Site`, 3 free-list index |
//! | 2..48  | payload | the pointer (its low two bits are the tag) or the index shifted left by 2 |
//! | 48..62 | gen     | the state word's generation right after the count change that wrote it |
//! | 62     | pin     | the acquisition was a pin (else a reference) |
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
const PIN_BIT: u64 = 1 << 62;

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

/// Encodes an acquirer with the generation its count change produced, and
/// whether it took a pin. Pointers that do not fit the format are stored as
/// empty (unattributed).
#[inline(always)]
pub(crate) fn encode(acq: Acquirer, gen: u16, pin: bool) -> u64 {
    // The pointer's tag bits are clear (both types are aligned past them,
    // asserted below), so the tag is or-ed in and one test on the result
    // checks that the pointer fits the payload.
    let word = match acq {
        Acquirer::Location(l) => l as *const Location<'static> as u64 | TAG_LOCATION,
        Acquirer::Site(s) => s as *const Site as u64 | TAG_SITE,
    };
    if word & !PAYLOAD_MASK != 0 {
        // Never taken where user addresses fit 48 bits (x86-64 and AArch64
        // by default): a predicted branch, not a conditional move, on the
        // hot path.
        core::hint::cold_path();
        return 0;
    }
    word | gen_bits(gen) | if pin { PIN_BIT } else { 0 }
}

// A reference's address is a multiple of its type's alignment: the two tag
// bits of a `&Location` or a `&Site` are always clear.
const _: () = assert!(core::mem::align_of::<Location<'static>>() > TAG_MASK as usize);
const _: () = assert!(core::mem::align_of::<Site>() > TAG_MASK as usize);

/// Encodes a free-list index.
#[inline(always)]
pub(crate) fn encode_index(index: u32) -> u64 {
    ((index as u64) << 2) | TAG_INDEX
}

/// The free-list index in `word`, if it holds one.
#[inline(always)]
pub(crate) fn index_of(word: u64) -> Option<u32> {
    (word & TAG_MASK == TAG_INDEX).then_some(((word & PAYLOAD_MASK) >> 2) as u32)
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
    let ptr = (word & PAYLOAD_MASK & !TAG_MASK) as usize;
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
        let w = encode(Acquirer::Location(loc), 7, true);
        assert!(is_pin(w));
        assert!(!is_pin(encode(Acquirer::Location(loc), 7, false)));
        assert_eq!(decode_if_current(w, 7), Some(Acquirer::Location(loc)));
        assert_eq!(decode_if_current(w, 8), None);
        assert_eq!(decode_if_current(w, 7 + (1 << 14)), Some(Acquirer::Location(loc)));
    }

    #[test]
    fn a_free_list_index_never_decodes_as_an_acquirer() {
        let w = encode_index(12345);
        assert_eq!(decode_index(w), 12345);
        assert_eq!(decode(w), None);
        assert_eq!(decode_if_current(w, 0), None);
    }
}
