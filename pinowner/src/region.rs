//! Regions: where the arena's bytes live. The only module that touches raw
//! pointers into arena memory.

use core::ptr::NonNull;
use std::alloc::Layout;

use crate::error::BuildError;

/// Where a [`PageArena`](crate::PageArena) gets its memory.
#[derive(Debug, Default)]
pub enum Backing {
    /// Zeroed memory aligned to the page size, the way `calloc` gets it.
    /// The default; works under Miri.
    ///
    /// Building touches none of the arena's pages: a region of at least
    /// 128 KiB (glibc's `malloc` mapping threshold) is a private anonymous mapping, which the operating system zeroes
    /// lazily, so pages never written cost no memory and building is
    /// O(descriptors), whatever the size. A smaller region comes from the
    /// global allocator (`alloc_zeroed`), as does every region under Miri,
    /// which cannot map memory. Unlike [`Backing::Anonymous`], the mapping
    /// is charged against the system's commit limit when it is made (no
    /// `MAP_NORESERVE`), as a large `malloc` is: under strict overcommit an
    /// arena the system cannot back fails to build instead of faulting
    /// later. [`PageArena::backing`] says [`BackingKind::Heap`] either way.
    ///
    /// [`PageArena::backing`]: crate::PageArena::backing
    #[default]
    Heap,
    /// An anonymous private `mmap`, touched lazily: pages never written cost
    /// no memory.
    Anonymous,
    /// `MAP_HUGETLB` with 2 MiB pages; when the system has no hugetlb pages
    /// reserved, an anonymous mapping advised with `MADV_HUGEPAGE`
    /// (transparent hugepages) instead. [`PageArena::backing`] says which,
    /// [`PageArena::backing_fallback_error`] why;
    /// [`ArenaBuilder::hugetlb_fallback`] turns the fallback into a build
    /// error.
    ///
    /// [`PageArena::backing`]: crate::PageArena::backing
    /// [`PageArena::backing_fallback_error`]: crate::PageArena::backing_fallback_error
    /// [`ArenaBuilder::hugetlb_fallback`]: crate::ArenaBuilder::hugetlb_fallback
    HugeTlb,
    /// Memory the caller mapped (for example a driver's DMA window).
    External(ExternalRegion),
}

/// What backing an arena actually got.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BackingKind {
    /// A heap allocation.
    Heap,
    /// An anonymous mapping.
    Anonymous,
    /// A `MAP_HUGETLB` mapping of 2 MiB pages.
    HugeTlb,
    /// An anonymous mapping advised for transparent hugepages, because the
    /// `MAP_HUGETLB` request failed (the error is kept in the arena).
    TransparentHuge,
    /// Caller-provided memory.
    External,
}

/// A caller-provided memory region; see [`ExternalRegion::new`].
#[derive(Debug)]
pub struct ExternalRegion {
    ptr: NonNull<u8>,
    len: usize,
}

impl ExternalRegion {
    /// Wraps `len` bytes at `ptr`, for example a DMA window a driver mapped.
    ///
    /// # Safety
    ///
    /// - `ptr..ptr + len` must be valid for reads and writes for as long as
    ///   the arena built from it lives, and must not be accessed by anything
    ///   else except through the arena's handles (or by a device, which the
    ///   caller synchronises with).
    /// - The memory is not freed or unmapped by the arena; the caller does
    ///   that after the arena is dropped.
    pub unsafe fn new(ptr: NonNull<u8>, len: usize) -> ExternalRegion {
        ExternalRegion { ptr, len }
    }

    /// The region's length in bytes.
    pub fn len(&self) -> usize {
        self.len
    }

    /// True if the region has no bytes.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }
}

// SAFETY: the region is plain memory; the arena mediates all access to it.
unsafe impl Send for ExternalRegion {}
// SAFETY: as above.
unsafe impl Sync for ExternalRegion {}

enum Keep {
    Heap(Layout),
    Map(#[allow(dead_code)] memmap2::MmapMut),
    External,
}

/// The arena's memory.
pub(crate) struct Region {
    base: NonNull<u8>,
    len: usize,
    kind: BackingKind,
    keep: Keep,
    /// Why the `MAP_HUGETLB` request fell back, if it did.
    pub(crate) fallback: Option<Fallback>,
}

/// A `MAP_HUGETLB` request that fell back to transparent hugepages.
pub(crate) struct Fallback {
    /// Why, for [`PageArena::backing_fallback`](crate::PageArena::backing_fallback).
    pub(crate) why: String,
    /// The request's error, for
    /// [`PageArena::backing_fallback_error`](crate::PageArena::backing_fallback_error).
    pub(crate) error: std::io::Error,
}

// `Region` owns (or, for external memory, was promised exclusive use of)
// plain bytes; the arena hands out access only through its handles.
// SAFETY: the handles enforce the aliasing rules, so moving it is sound.
unsafe impl Send for Region {}
// SAFETY: as above.
unsafe impl Sync for Region {}

impl core::fmt::Debug for Region {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("Region").field("base", &self.base).field("len", &self.len).field("kind", &self.kind).finish()
    }
}

const HUGE_2M: usize = 2 << 20;

/// The smallest [`Backing::Heap`] region that is mapped rather than taken
/// from the global allocator: 128 KiB, the default `M_MMAP_THRESHOLD` of
/// glibc's `malloc`. Below it, zeroing the region at build costs at most a
/// 128 KiB `memset`.
pub(crate) const HEAP_MAP_MIN: usize = 128 << 10;

impl Region {
    /// Maps or allocates `len` bytes aligned to `align` (a power of two).
    /// With `hugetlb_fallback` false, a [`Backing::HugeTlb`] request that
    /// gets no `MAP_HUGETLB` mapping is a [`BuildError::Map`] (backing
    /// `"hugetlb"`) instead of a transparent-hugepage mapping.
    pub(crate) fn new(
        backing: Backing,
        len: usize,
        align: usize,
        hugetlb_fallback: bool,
    ) -> Result<Region, BuildError> {
        match backing {
            // Under Miri, which cannot map memory, every heap region comes
            // from the allocator.
            Backing::Heap if len >= HEAP_MAP_MIN && !cfg!(miri) => Self::map(len, align, BackingKind::Heap, None, true),
            Backing::Heap => {
                // Small: at most a `HEAP_MAP_MIN` memset (std calls `calloc`
                // only for small alignments; with page alignment it
                // allocates and zeroes every byte).
                let layout = Layout::from_size_align(len, align).map_err(|_| BuildError::TooLarge { bytes: len })?;
                // SAFETY: `len` is non-zero (the builder rejects empty arenas).
                let ptr = unsafe { std::alloc::alloc_zeroed(layout) };
                let base = NonNull::new(ptr).ok_or(BuildError::Map {
                    backing: "heap",
                    source: std::io::Error::from(std::io::ErrorKind::OutOfMemory),
                })?;
                Ok(Region { base, len, kind: BackingKind::Heap, keep: Keep::Heap(layout), fallback: None })
            }
            Backing::Anonymous => Self::anonymous(len, align, BackingKind::Anonymous, None),
            Backing::HugeTlb => {
                let huge_len = len.checked_next_multiple_of(HUGE_2M).ok_or(BuildError::TooLarge { bytes: len })?;
                let fallback = match memmap2::MmapOptions::new().len(huge_len).huge(Some(21)).map_anon() {
                    Ok(mut map) if (map.as_ptr() as usize).is_multiple_of(align) => {
                        let base = NonNull::new(map.as_mut_ptr()).expect("mmap returned null");
                        let keep = Keep::Map(map);
                        return Ok(Region { base, len, kind: BackingKind::HugeTlb, keep, fallback: None });
                    }
                    Ok(_) => {
                        let why = format!("MAP_HUGETLB mapping is not aligned to {align} bytes");
                        Fallback { error: std::io::Error::new(std::io::ErrorKind::InvalidInput, why.clone()), why }
                    }
                    Err(error) => Fallback { why: format!("MAP_HUGETLB failed: {error}"), error },
                };
                if !hugetlb_fallback {
                    return Err(BuildError::Map { backing: "hugetlb", source: fallback.error });
                }
                Self::anonymous(len, align.max(HUGE_2M), BackingKind::TransparentHuge, Some(fallback))
            }
            Backing::External(ext) => {
                if ext.len != len {
                    return Err(BuildError::SizeMismatch { region: ext.len, wanted: len });
                }
                if !(ext.ptr.as_ptr() as usize).is_multiple_of(align) {
                    return Err(BuildError::MisalignedBase { base: ext.ptr.as_ptr() as usize, page_size: align });
                }
                Ok(Region { base: ext.ptr, len, kind: BackingKind::External, keep: Keep::External, fallback: None })
            }
        }
    }

    /// An anonymous mapping (`MAP_NORESERVE`), over-sized so that an
    /// `align`-aligned window of `len` bytes fits in it (mmap itself aligns
    /// only to the base page).
    fn anonymous(
        len: usize,
        align: usize,
        kind: BackingKind,
        fallback: Option<Fallback>,
    ) -> Result<Region, BuildError> {
        // MAP_NORESERVE: an arena is address space first; pages cost memory
        // only once touched, so a sparse 64 GiB arena maps on a smaller box.
        Self::map(len, align, kind, fallback, false)
    }

    /// A private anonymous mapping of `len` bytes aligned to `align`; with
    /// `reserve`, charged against the commit limit as `malloc`'s mappings
    /// are, else `MAP_NORESERVE`. The kernel zeroes each page when it is
    /// first touched: nothing here writes the region.
    fn map(
        len: usize,
        align: usize,
        kind: BackingKind,
        fallback: Option<Fallback>,
        reserve: bool,
    ) -> Result<Region, BuildError> {
        let slack = if align > 4096 { align } else { 0 };
        let total = len.checked_add(slack).ok_or(BuildError::TooLarge { bytes: len })?;
        let mut options = memmap2::MmapOptions::new();
        options.len(total);
        if !reserve {
            options.no_reserve_swap();
        }
        let backing = if kind == BackingKind::Heap { "heap" } else { "anonymous" };
        let mut map = options.map_anon().map_err(|source| BuildError::Map { backing, source })?;
        let start = map.as_mut_ptr() as usize;
        let offset = start.next_multiple_of(align) - start;
        if kind == BackingKind::TransparentHuge {
            // Best effort: a kernel without THP support refuses the advice,
            // and the mapping still works with base pages.
            let _ = map.advise(memmap2::Advice::HugePage);
        }
        // SAFETY: `offset < slack` when slack is non-zero (else 0), so
        // `offset + len <= total`: the pointer stays inside the mapping.
        let base = unsafe { NonNull::new_unchecked(map.as_mut_ptr().add(offset)) };
        Ok(Region { base, len, kind, keep: Keep::Map(map), fallback })
    }

    pub(crate) fn kind(&self) -> BackingKind {
        self.kind
    }

    /// The region's first byte. It never moves while the region lives.
    #[inline]
    pub(crate) fn base(&self) -> NonNull<u8> {
        self.base
    }

    /// The region's length in bytes (the arena's pages times the page size).
    #[inline]
    pub(crate) fn len(&self) -> usize {
        self.len
    }

    /// A pointer to byte `offset` of the region.
    ///
    /// # Panics
    ///
    /// If `offset + len` passes the region's end.
    #[inline]
    pub(crate) fn ptr(&self, offset: usize, len: usize) -> NonNull<[u8]> {
        assert!(offset.checked_add(len).is_some_and(|end| end <= self.len), "range outside the region");
        // SAFETY: in bounds of the region, checked above.
        let p = unsafe { self.base.add(offset) };
        NonNull::slice_from_raw_parts(p, len)
    }

    /// Shared bytes of a range.
    ///
    /// # Safety
    ///
    /// For the returned lifetime nobody may write the range except through
    /// raw pointers whose users promised not to race with readers.
    #[inline]
    pub(crate) unsafe fn bytes(&self, offset: usize, len: usize) -> &[u8] {
        // In bounds (checked by `ptr`) and initialised (zeroed at birth, or
        // owned by the caller for external memory).
        // SAFETY: not mutated for the lifetime, by the caller's promise.
        unsafe { self.ptr(offset, len).as_ref() }
    }

    /// Mutable bytes of a range.
    ///
    /// # Safety
    ///
    /// The caller has exclusive access to the range for the returned lifetime.
    #[inline]
    #[allow(clippy::mut_from_ref)]
    pub(crate) unsafe fn bytes_mut(&self, offset: usize, len: usize) -> &mut [u8] {
        // SAFETY: in bounds and initialised as above; exclusive by the
        // caller's promise.
        unsafe { self.ptr(offset, len).as_mut() }
    }

    /// Gives the bytes of a range back to the operating system: `madvise`
    /// on a mapping (`dont_need`: `MADV_DONTNEED`, else `MADV_FREE`); on
    /// the heap, a zero-fill of an allocator's block or `MADV_DONTNEED` on
    /// a heap region that is a mapping (either way the range reads as
    /// zeros, whatever `dont_need` asked). Returns whether the range now reads as zeros
    /// (`MADV_FREE` leaves the old bytes until the kernel reclaims them).
    /// Caller-provided memory is not ours to give back: the caller checks
    /// [`kind`](Self::kind) first.
    ///
    /// # Safety
    ///
    /// The caller has exclusive access to the range, page-aligned.
    pub(crate) unsafe fn discard(&self, offset: usize, len: usize, dont_need: bool) -> std::io::Result<bool> {
        let p = self.ptr(offset, len).cast::<u8>();
        match self.kind {
            #[cfg(unix)]
            BackingKind::Heap if matches!(self.keep, Keep::Map(_)) => {
                // The range lies inside our private anonymous mapping (checked
                // by `ptr`), page-aligned; madvise touches no Rust memory.
                // SAFETY: nobody else uses the range (the caller's promise).
                let r = unsafe { libc::madvise(p.as_ptr().cast(), len, libc::MADV_DONTNEED) };
                if r == 0 {
                    Ok(true)
                } else {
                    Err(std::io::Error::last_os_error())
                }
            }
            BackingKind::Heap => {
                // SAFETY: in bounds (checked by `ptr`); exclusive by the
                // caller's promise.
                unsafe { core::ptr::write_bytes(p.as_ptr(), 0, len) };
                Ok(true)
            }
            #[cfg(unix)]
            BackingKind::Anonymous | BackingKind::HugeTlb | BackingKind::TransparentHuge => {
                let advice = if dont_need { libc::MADV_DONTNEED } else { libc::MADV_FREE };
                // The range lies inside our private anonymous mapping (checked
                // by `ptr`), page-aligned; madvise touches no Rust memory.
                // SAFETY: nobody else uses the range (the caller's promise).
                let r = unsafe { libc::madvise(p.as_ptr().cast(), len, advice) };
                if r == 0 {
                    Ok(dont_need)
                } else {
                    Err(std::io::Error::last_os_error())
                }
            }
            _ => Err(std::io::Error::from(std::io::ErrorKind::Unsupported)),
        }
    }

    /// Makes a range inaccessible (`accessible == false`: `PROT_NONE`) or
    /// readable and writable again, on an anonymous mapping (page
    /// poisoning's protect mode, which the builder allows only there).
    ///
    /// # Safety
    ///
    /// The caller has exclusive access to the range, page-aligned: nobody
    /// reads or writes it while it is inaccessible, except by a bug, which
    /// then faults.
    pub(crate) unsafe fn protect(&self, offset: usize, len: usize, accessible: bool) -> std::io::Result<()> {
        let p = self.ptr(offset, len).cast::<u8>();
        #[cfg(unix)]
        {
            let prot = if accessible { libc::PROT_READ | libc::PROT_WRITE } else { libc::PROT_NONE };
            // The range lies inside our private anonymous mapping (checked by
            // `ptr`), page-aligned; mprotect touches no Rust memory.
            // SAFETY: nobody uses the range (the caller's promise).
            let r = unsafe { libc::mprotect(p.as_ptr().cast(), len, prot) };
            if r == 0 {
                Ok(())
            } else {
                Err(std::io::Error::last_os_error())
            }
        }
        #[cfg(not(unix))]
        {
            let _ = (p, accessible);
            Err(std::io::Error::from(std::io::ErrorKind::Unsupported))
        }
    }

    /// Zeroes a range.
    ///
    /// # Safety
    ///
    /// The caller has exclusive access to the range.
    pub(crate) unsafe fn zero(&self, offset: usize, len: usize) {
        let p = self.ptr(offset, len);
        // SAFETY: in bounds; exclusive by the caller's promise.
        unsafe { core::ptr::write_bytes(p.cast::<u8>().as_ptr(), 0, len) };
    }
}

impl crate::PageArena {
    /// The error of the `MAP_HUGETLB` request a [`Backing::HugeTlb`] arena
    /// fell back from (see [`backing_fallback`](crate::PageArena::backing_fallback)),
    /// typed: `ErrorKind::OutOfMemory` (`ENOMEM`) when the system has no
    /// hugetlb pages reserved, `InvalidInput` when the mapping it got was
    /// not aligned to the page size. `None` for every other backing, and
    /// when the hugetlb mapping was made.
    ///
    /// To refuse the fallback instead, build with
    /// [`hugetlb_fallback(false)`](crate::ArenaBuilder::hugetlb_fallback).
    pub fn backing_fallback_error(&self) -> Option<&std::io::Error> {
        self.region.fallback.as_ref().map(|f| &f.error)
    }
}

impl Drop for Region {
    fn drop(&mut self) {
        if let Keep::Heap(layout) = self.keep {
            // SAFETY: allocated in `new` with this layout and not freed since.
            unsafe { std::alloc::dealloc(self.base.as_ptr(), layout) };
        }
    }
}
