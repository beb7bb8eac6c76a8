//! Handles: RAII guards over counts. The safe API cannot underflow a count
//! or free a page twice: each guard holds exactly one count and drops it
//! exactly once.

use core::ops::Deref;
use core::ptr::NonNull;
use std::sync::Arc;

use crate::arena::Ticket;
use crate::error::{AcquireError, BorrowError};
use crate::page::state::{Count, COUNTS, EXCLUSIVE, REF_ONE};
use crate::page::{Descriptor, PageState};
use crate::policy::Attribution;
use crate::sync::Ordering::{Acquire, Relaxed, Release};
use crate::{PageArena, Pfn};

mod sealed {
    pub trait Sealed {}
    impl<P> Sealed for &crate::PageArena<P> {}
    impl<P> Sealed for std::sync::Arc<crate::PageArena<P>> {}
}

/// How a handle reaches its arena: a borrow (`&PageArena`, no extra cost) or
/// an `Arc<PageArena>` (handles are `'static`, for spawned threads and async
/// tasks; cloning such a handle also clones the `Arc`). It carries the
/// arena's [attribution policy](crate::policy), which picks the handle's
/// count operations when it is compiled.
pub trait ArenaRef: Deref<Target = PageArena<Self::Policy>> + Clone + sealed::Sealed {
    /// The arena's attribution policy.
    type Policy: Attribution;
}
impl<P: Attribution> ArenaRef for &PageArena<P> {
    type Policy = P;
}
impl<P: Attribution> ArenaRef for Arc<PageArena<P>> {
    type Policy = P;
}

/// An allocated block of `2^order` pages, owned: it holds one reference on
/// the block, and dropping it puts that reference (freeing the block when it
/// is the last holder).
///
/// A block may lend its bytes mutably ([`bytes_mut`](Self::bytes_mut)) only
/// while it is the sole holder. Once other holders exist, the bytes are
/// reachable through shared views and raw pointers only.
///
/// # Exclusive borrows and leaked guards
///
/// While a [`BlockBytesMut`] is out, the block is *lent out exclusively*: no new
/// holder may appear, by any path. The guard borrows the block mutably, so
/// the block's own methods cannot run; acquisitions by page number
/// ([`PageArena::get`], [`PageArena::pin`], their `_raw` and `_owned`
/// forms) fail with [`AcquireError::Exclusive`].
///
/// If the guard is leaked (`mem::forget`, a reference cycle), nothing ever
/// says that it is gone, so the block stays lent out exclusively until it is
/// freed, as a `RefCell` stays borrowed after a leaked `RefMut`. Every path
/// that would add a holder refuses, consistently: by page number as above,
/// and through the block, where [`pin`](Self::pin) returns
/// [`AcquireError::Exclusive`] and [`page_ref`](Self::page_ref) panics with
/// it; [`bytes_mut`](Self::bytes_mut) returns [`BorrowError::Exclusive`].
/// The block's shared view, [`bytes`](Self::bytes), stays available: the
/// leaked guard's borrow of the block has ended, so no `&mut` it lent can
/// still be used. Dropping the block frees it and clears the state.
///
/// # Example
///
/// ```
/// use pinowner::{BorrowError, PageArena};
///
/// let arena = PageArena::builder().pages(64).build()?;
/// let mut block = arena.alloc(2)?; // 4 pages, naturally aligned
/// assert_eq!((block.pages(), block.len(), block.pfn() % 4), (4, 4 * 4096, 0));
/// block.bytes_mut()?.fill(7); // sole holder: mutable bytes
/// let pin = block.pin(3)?; // a device pins the last page
/// assert!(matches!(block.bytes_mut(), Err(BorrowError::Shared { .. })), "shared now");
/// assert!(block.bytes().iter().all(|&b| b == 7)); // a shared view stays
/// drop(block);
/// assert_eq!(arena.free_pages(), 60, "the pin keeps the whole block");
/// drop(pin);
/// assert_eq!(arena.free_pages(), 64);
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[must_use = "dropping a block frees it"]
#[derive(Debug)]
pub struct Block<A: ArenaRef> {
    /// Invariant: `pfn` heads an allocated block of `2^order` pages of this
    /// arena, so every page of the block is below `arena.pages()` (the
    /// count operations index descriptors without a bounds check).
    arena: A,
    /// The head page (low half), and the ticket of our reference (high
    /// half: the generation its acquisition produced, and the hold it
    /// opened if recorded, in eager mode).
    ///
    /// One word, as `order` is: the block is 24 bytes either way, and a
    /// block moved through memory (a `Result` built on the stack, an
    /// `unwrap`) is copied word by word. Two 4-byte fields (or a 1-byte
    /// one) reloaded as a word wait for their stores to retire instead of
    /// forwarding from them: 5–7 ns per order-0 alloc+free through the
    /// thread cache, a quarter of it.
    id: u64,
    order: usize,
}

impl<A: ArenaRef> Block<A> {
    /// `pfn` heads a block of `2^order` pages of `arena` that the caller
    /// just allocated (the type's invariant).
    pub(crate) fn new(arena: A, pfn: u32, order: u8, ticket: Ticket) -> Self {
        Block { arena, id: pfn as u64 | (ticket.bits() as u64) << 32, order: order as usize }
    }

    /// The head page.
    #[inline(always)]
    fn head(&self) -> u32 {
        self.id as u32
    }

    /// Our reference's ticket.
    #[inline(always)]
    fn ticket(&self) -> Ticket {
        Ticket::from_bits((self.id >> 32) as u32)
    }

    /// The first page of the block.
    pub fn pfn(&self) -> Pfn {
        self.head() as Pfn
    }

    /// The block's order.
    pub fn order(&self) -> u8 {
        self.order as u8
    }

    /// Pages in the block.
    pub fn pages(&self) -> usize {
        1 << self.order
    }

    /// Bytes in the block.
    pub fn len(&self) -> usize {
        self.arena.exact().byte_range(self.head(), self.order()).1
    }

    /// Always false: a block has at least one page.
    pub fn is_empty(&self) -> bool {
        false
    }

    /// The arena.
    pub fn arena(&self) -> &A {
        &self.arena
    }

    /// The block's state (its head page's).
    pub fn state(&self) -> PageState {
        PageState::from_word(self.arena.exact().desc(self.head()).state.load(Relaxed))
    }

    /// The block's bytes, shared.
    ///
    /// Safe code cannot write them while this view lives: the only safe
    /// writer, [`bytes_mut`](Self::bytes_mut), needs `&mut self` and the
    /// block as sole holder. Other holders may have raw pointers to the
    /// bytes (a device doing DMA into a pinned page); writing through those
    /// while this view lives is their `unsafe` responsibility. The same rule
    /// holds for [`PageRef::bytes`] and [`PagePin::bytes`].
    pub fn bytes(&self) -> &[u8] {
        self.arena.exact().touched(self.arena.exact().desc(self.head()));
        let (off, len) = self.arena.exact().byte_range(self.head(), self.order());
        // Safe code writes the bytes only through `BlockBytesMut`, which needs
        // `&mut self`; raw-pointer writers promise not to race readers.
        // SAFETY: the block is allocated and held by us: its range is ours.
        unsafe { self.arena.exact().region.bytes(off, len) }
    }

    /// The block's bytes, mutably: only while this block is the sole holder.
    /// While the returned guard lives, nobody can take a reference or pin on
    /// any page of the block (they get [`AcquireError::Exclusive`]); if it is
    /// leaked, that lasts until the block is freed (see the
    /// [type's docs](Block#exclusive-borrows-and-leaked-guards)).
    ///
    /// # Errors
    ///
    /// [`BorrowError::Shared`] if other references or pins exist;
    /// [`BorrowError::Exclusive`] if an earlier guard was leaked.
    pub fn bytes_mut(&mut self) -> Result<BlockBytesMut<'_>, BorrowError> {
        self.arena.exact().lend_exclusive(self.head())?;
        let (off, len) = self.arena.exact().byte_range(self.head(), self.order());
        // EXCLUSIVE stops any new holder until the guard drops, and the guard
        // borrows `self` mutably, so this block lends nothing else meanwhile.
        // SAFETY: so we are and stay the only holder (one ref, ours; no pins).
        let bytes = unsafe { self.arena.exact().region.bytes_mut(off, len) };
        Ok(BlockBytesMut { bytes, arena: self.arena.exact(), pfn: self.head() })
    }

    /// A raw pointer to the block's first byte, for devices and FFI.
    pub fn as_ptr(&self) -> NonNull<u8> {
        let (off, len) = self.arena.exact().byte_range(self.head(), self.order());
        self.arena.exact().region.ptr(off, len).cast()
    }

    /// A reference on page `index` of the block (0 is the head).
    ///
    /// # Panics
    ///
    /// If `index` is not below [`pages`](Self::pages), if the reference
    /// count overflows, or if a leaked [`BlockBytesMut`] keeps the block lent out
    /// exclusively ([`AcquireError::Exclusive`]).
    #[track_caller]
    pub fn page_ref(&self, index: usize) -> PageRef<A> {
        assert!(index < self.pages(), "page {index} is outside a block of {} pages", self.pages());
        let pfn = self.head() + index as u32;
        let hd = self.arena.exact().desc(self.head());
        // SAFETY: `hd` is the block's head descriptor in its arena, and
        // `pfn` is a page of the block (`index < pages`).
        match unsafe { self.arena.acquire_by_policy(hd, pfn, Count::Ref) } {
            Ok(gen) => PageRef::from_parts(self.arena.clone(), hd, pfn, gen),
            Err(e) => panic!("{e}"),
        }
    }

    /// Pins page `index` of the block (0 is the head).
    ///
    /// # Errors
    ///
    /// [`AcquireError::PinOverflow`] at the pin limit;
    /// [`AcquireError::Exclusive`] if a leaked [`BlockBytesMut`] keeps the block
    /// lent out exclusively.
    ///
    /// # Panics
    ///
    /// If `index` is not below [`pages`](Self::pages).
    #[track_caller]
    pub fn pin(&self, index: usize) -> Result<PagePin<A>, AcquireError> {
        assert!(index < self.pages(), "page {index} is outside a block of {} pages", self.pages());
        let pfn = self.head() + index as u32;
        let hd = self.arena.exact().desc(self.head());
        // SAFETY: as in `page_ref`: `hd` is the block's head descriptor,
        // `pfn` a page of the block.
        let gen = unsafe { self.arena.acquire_by_policy(hd, pfn, Count::Pin) }?;
        Ok(PagePin::from_parts(self.arena.clone(), hd, pfn, gen))
    }

    /// Gives up the block's reference as a raw one: the block stays
    /// allocated until [`PageArena::put_raw`] drops it. Returns the block's
    /// first page.
    pub fn into_raw(self) -> Pfn {
        let this = core::mem::ManuallyDrop::new(self);
        this.arena.exact().raw.update(this.head(), crate::arena::RawCounts::is_zero, |c| c.refs += 1);
        this.arena.exact().hold_into_raw(this.head(), false, this.ticket());
        // SAFETY: `this` is never used or dropped again; we move the arena
        // handle out exactly once so it is released normally.
        let _arena = unsafe { core::ptr::read(&this.arena) };
        this.head() as Pfn
    }
}

/// The block's bytes, shared: [`Block::bytes`].
impl<A: ArenaRef> AsRef<[u8]> for Block<A> {
    fn as_ref(&self) -> &[u8] {
        self.bytes()
    }
}

impl<A: ArenaRef> Drop for Block<A> {
    #[inline]
    fn drop(&mut self) {
        // SAFETY: the block's head is a page of its arena (the invariant on
        // `Block`).
        let hd = unsafe { self.arena.exact().desc_unchecked(self.head()) };
        self.arena.release_block_by_policy(hd, self.head(), self.ticket());
    }
}

impl PageArena {
    /// Marks the block headed by `head` lent out exclusively (`EXCLUSIVE`),
    /// if the caller's one reference is its only count: from then on no
    /// holder may appear by any path until the flag is cleared.
    pub(crate) fn lend_exclusive(&self, head: u32) -> Result<(), BorrowError> {
        let d = self.desc(head);
        let mut old = d.state.load(Relaxed);
        loop {
            let (pfn, state) = (head as Pfn, PageState::from_word(old));
            if old & EXCLUSIVE != 0 {
                // The caller lends nothing else now: a guard leaked.
                return Err(BorrowError::Exclusive { pfn, state });
            }
            if old & COUNTS != REF_ONE {
                return Err(BorrowError::Shared { pfn, state });
            }
            // A borrow of the bytes is an access: `IDLE` goes (see `crate::idle`).
            match d.state.compare_exchange_weak(old, (old | EXCLUSIVE) & !crate::page::state::IDLE, Acquire, Relaxed) {
                Ok(_) => return Ok(()),
                Err(cur) => old = cur,
            }
        }
    }
}

/// The mutable bytes of a [`Block`] that is the sole holder of its pages,
/// from [`Block::bytes_mut`]. (Named apart from `bytes::BytesMut`, which
/// users of this crate often import too.)
///
/// Dropping it ends the exclusive loan. Leaking it (`mem::forget`) leaves the
/// block lent out exclusively until the block is freed: no new holder may
/// appear by any path, and the block cannot lend its bytes mutably again
/// (see [`Block`'s docs](Block#exclusive-borrows-and-leaked-guards)).
#[must_use]
pub struct BlockBytesMut<'b> {
    bytes: &'b mut [u8],
    arena: &'b PageArena,
    pfn: u32,
}

impl core::fmt::Debug for BlockBytesMut<'_> {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("BlockBytesMut").field("pfn", &self.pfn).field("len", &self.bytes.len()).finish()
    }
}

impl core::ops::Deref for BlockBytesMut<'_> {
    type Target = [u8];
    fn deref(&self) -> &[u8] {
        self.bytes
    }
}

impl core::ops::DerefMut for BlockBytesMut<'_> {
    fn deref_mut(&mut self) -> &mut [u8] {
        self.bytes
    }
}

impl Drop for BlockBytesMut<'_> {
    fn drop(&mut self) {
        self.arena.exact().desc(self.pfn).state.fetch_and(!EXCLUSIVE, Release);
    }
}

/// A handle's pointer to its block's head descriptor, so that a count
/// change reaches the state word with one load from the handle rather than
/// through the arena's descriptor table (two more dependent loads, on the
/// path between two locked instructions).
#[derive(Clone, Copy)]
struct HeadDesc(NonNull<Descriptor>);

// A `HeadDesc` is only used as a shared `&Descriptor` (two atomics, `Sync`)
// into an arena that its handle keeps alive.
// SAFETY: so sending it to another thread is sending that shared reference.
unsafe impl Send for HeadDesc {}
// SAFETY: as above; sharing it shares a `&Descriptor`.
unsafe impl Sync for HeadDesc {}

macro_rules! count_handle {
    ($(#[$doc:meta])* $name:ident, $count:expr, $what:literal) => {
        $(#[$doc])*
        #[must_use = concat!("dropping the handle drops the ", $what, " at once")]
        pub struct $name<A: ArenaRef> {
            /// Invariant: `head` points to the head descriptor of the block
            /// holding `pfn` in this arena's descriptor table, and `pfn` is a
            /// page of this arena (below `arena.pages()`): every constructor
            /// gets them from the arena (a checked page number, or a page of
            /// a held block). The arena (borrowed or shared) outlives the
            /// handle, and its table never moves, so `head` stays valid; the
            /// count operations index `pfn` without a bounds check.
            arena: A,
            head: HeadDesc,
            pfn: u32,
            /// The generation our acquisition produced, and the hold it
            /// opened on an armed block (the release closes it).
            ticket: Ticket,
        }

        impl<A: ArenaRef> $name<A> {
            /// `head` is the head descriptor, in `arena`, of the block
            /// holding page `pfn` of `arena` (the type's invariant).
            pub(crate) fn from_parts(arena: A, head: &Descriptor, pfn: u32, ticket: Ticket) -> Self {
                debug_assert!(arena.exact().pfn_of(head) <= pfn && (pfn as usize) < arena.exact().pages());
                $name { arena, head: HeadDesc(NonNull::from(head)), pfn, ticket }
            }

            /// The block's head descriptor.
            #[inline(always)]
            fn head_desc(&self) -> &Descriptor {
                // `self.arena` keeps the arena, and so its unmoving descriptor
                // table, alive while `self` lives; descriptors are only shared.
                // SAFETY: `head` points into that table (the type's invariant).
                unsafe { self.head.0.as_ref() }
            }

            /// The page this handle names.
            pub fn pfn(&self) -> Pfn {
                self.pfn as Pfn
            }

            /// The head page of the block the count is held on.
            pub fn head(&self) -> Pfn {
                self.arena.exact().pfn_of(self.head_desc()) as Pfn
            }

            /// The arena.
            pub fn arena(&self) -> &A {
                &self.arena
            }

            /// A raw pointer to the page's first byte (one page long), for a
            /// device or FFI. Reading or writing through it is `unsafe`: the
            /// caller must not race the block's other users.
            pub fn as_ptr(&self) -> NonNull<u8> {
                let (off, len) = self.arena.exact().byte_range(self.pfn, 0);
                self.arena.exact().region.ptr(off, len).cast()
            }

            /// The page's bytes (one page), shared: what a reader of a page
            /// another holder owns needs, like [`Block::bytes`].
            ///
            /// Safe code cannot write the page while this view lives: a
            /// block lends `&mut` bytes only as sole holder, and this
            /// handle is a holder. Writers that go through raw pointers
            /// ([`as_ptr`](Self::as_ptr), [`PageArena::pfn_to_ptr`], a
            /// device) must not write while any such view lives; a buffer
            /// pool does that with a content lock beside each frame, taken
            /// shared to read through this view and exclusive to write
            /// through the pointer:
            ///
            /// ```
            /// use std::sync::RwLock;
            ///
            /// let arena = pinowner::PageArena::builder().pages(16).build()?;
            /// let frame = arena.alloc(0)?; // the pool's own reference
            /// let content = RwLock::new(()); // one per frame
            /// let pin = frame.pin(0)?; // a query's pin
            ///
            /// // A writer: exclusive content lock, then the raw pointer.
            /// {
            ///     let _w = content.write().unwrap();
            ///     // SAFETY: every access to this page's bytes takes
            ///     // `content` (shared to read, exclusive to write), so no
            ///     // `bytes()` view lives now; the pin keeps the page
            ///     // allocated and the pointer covers one page.
            ///     unsafe { pin.as_ptr().as_ptr().write_bytes(0x5a, 8) };
            /// }
            /// // A reader: shared content lock, then the shared view.
            /// let _r = content.read().unwrap();
            /// assert_eq!(&pin.bytes()[..8], &[0x5a; 8]);
            /// # Ok::<(), Box<dyn std::error::Error>>(())
            /// ```
            pub fn bytes(&self) -> &[u8] {
                self.arena.exact().touched(self.head_desc());
                let (off, len) = self.arena.exact().byte_range(self.pfn, 0);
                // Safe code writes bytes only through `BlockBytesMut`, which
                // needs the block as sole holder (we are a holder); raw
                // writers promise not to race readers.
                // SAFETY: the page is held by us, so allocated: its range is
                // part of the arena's region and stays mapped.
                unsafe { self.arena.exact().region.bytes(off, len) }
            }

            /// The state of the page's block.
            pub fn state(&self) -> PageState {
                PageState::from_word(self.head_desc().state.load(Relaxed))
            }

            /// Takes another count on the same page.
            ///
            /// # Errors
            ///
            /// The overflow error for this kind of count, at its limit.
            #[track_caller]
            pub fn try_clone(&self) -> Result<Self, AcquireError> {
                // SAFETY: `head` is a descriptor of `arena` and `pfn` a page
                // of it (the handle's invariant).
                let t = unsafe { self.arena.acquire_by_policy(self.head_desc(), self.pfn, $count) }?;
                Ok($name { arena: self.arena.clone(), head: self.head, pfn: self.pfn, ticket: t })
            }
        }

        impl<A: ArenaRef> Clone for $name<A> {
            /// Takes another count on the same page.
            ///
            /// # Panics
            ///
            /// At the count's limit (after undoing the increment), like
            /// `Arc` aborts on overflow. Use `try_clone` to handle it.
            #[track_caller]
            #[inline]
            fn clone(&self) -> Self {
                // The slow path makes the whole handle, so nothing stays
                // live across its call.
                match self.arena.acquire_fast_by_policy(self.head_desc(), $count, core::panic::Location::caller()) {
                    Ok(ticket) => $name { arena: self.arena.clone(), head: self.head, pfn: self.pfn, ticket },
                    Err(old) => self.clone_slow(old),
                }
            }
        }

        impl<A: ArenaRef> $name<A> {
            /// A clone whose add (already made) returned `old` with a
            /// slow-path flag.
            #[cold]
            #[inline(never)]
            #[track_caller]
            fn clone_slow(&self, old: u64) -> Self {
                let at = core::panic::Location::caller();
                match self.arena.acquire_slow_by_policy(self.head_desc(), self.pfn, $count, old, at) {
                    Ok(ticket) => $name { arena: self.arena.clone(), head: self.head, pfn: self.pfn, ticket },
                    Err(e) => panic!("{e}"),
                }
            }
        }

        impl<A: ArenaRef> Drop for $name<A> {
            #[inline(always)]
            fn drop(&mut self) {
                self.arena.release_by_policy(self.head_desc(), self.pfn, $count, self.ticket);
            }
        }

        /// The page's bytes, shared: `bytes()`.
        impl<A: ArenaRef> AsRef<[u8]> for $name<A> {
            fn as_ref(&self) -> &[u8] {
                self.bytes()
            }
        }

        impl<A: ArenaRef> core::fmt::Debug for $name<A> {
            fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
                f.debug_struct(stringify!($name))
                    .field("pfn", &self.pfn)
                    .field("head", &self.head())
                    .field("state", &self.state())
                    .finish()
            }
        }
    };
}

count_handle! {
    /// A counted reference on a page (the kernel's `get_page`): it keeps the
    /// page's block allocated. Clone = get, drop = put.
    ///
    /// ```
    /// use pinowner::PageArena;
    ///
    /// let arena = PageArena::builder().pages(16).build()?;
    /// let block = arena.alloc(1)?; // two pages, one reference (the block's)
    /// let r = arena.get(block.pfn() + 1)?; // a reference through the tail page
    /// let r2 = r.clone(); // get
    /// assert_eq!((r.head(), r.state().refcount), (block.pfn(), 3));
    /// drop(block); // the owner lets go: the references keep the block
    /// drop(r2); // put
    /// assert_eq!(r.state().refcount, 1);
    /// let pfn = r.pfn();
    /// drop(r); // the last put frees both pages
    /// assert!(arena.get(pfn).is_err());
    /// assert_eq!(arena.free_pages(), 16);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    PageRef, Count::Ref, "reference"
}

count_handle! {
    /// A long-lived pin on a page (the kernel's `pin_user_pages`), counted
    /// apart from references: what a DMA mapping or an RDMA registration
    /// holds. Clone = pin, drop = unpin.
    ///
    /// ```
    /// use pinowner::{PageArena, PageFlags};
    ///
    /// let arena = PageArena::builder().pages(16).build()?;
    /// let frame = arena.alloc(0)?;
    /// let pin = frame.pin(0)?; // the device's pin
    /// let s = pin.state();
    /// assert_eq!((s.refcount, s.pincount), (1, 1), "pins are counted apart");
    /// // The pin names who took it (here this line, without #[pin_tracked]).
    /// assert!(arena.page_info(pin.pfn())?.acquirer.is_some());
    /// drop(frame); // the pool drops its frame; the pin keeps the page
    /// assert!(!arena.page_state(pin.pfn())?.flags.contains(PageFlags::FREE));
    /// drop(pin); // unpin: the last holder frees it
    /// assert_eq!(arena.free_pages(), 16);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    PagePin, Count::Pin, "pin"
}

impl<A: ArenaRef> PageRef<A> {
    /// Gives up the reference as a raw one, dropped later by
    /// [`PageArena::put_raw`].
    pub fn into_raw(self) -> Pfn {
        let this = core::mem::ManuallyDrop::new(self);
        this.arena.exact().raw.update(this.pfn, crate::arena::RawCounts::is_zero, |c| c.refs += 1);
        this.arena.exact().hold_into_raw(this.head() as u32, false, this.ticket);
        // SAFETY: `this` is never used or dropped again.
        let _arena = unsafe { core::ptr::read(&this.arena) };
        this.pfn as Pfn
    }
}

impl<A: ArenaRef> PagePin<A> {
    /// Gives up the pin as a raw one, dropped later by
    /// [`PageArena::unpin_raw`].
    pub fn into_raw(self) -> Pfn {
        let this = core::mem::ManuallyDrop::new(self);
        this.arena.exact().raw.update(this.pfn, crate::arena::RawCounts::is_zero, |c| c.pins += 1);
        this.arena.exact().hold_into_raw(this.head() as u32, true, this.ticket);
        // SAFETY: `this` is never used or dropped again.
        let _arena = unsafe { core::ptr::read(&this.arena) };
        this.pfn as Pfn
    }
}
