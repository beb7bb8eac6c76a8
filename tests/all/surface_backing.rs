//! Backings and geometry as a driver or a database meets them: caller-provided
//! (DMA) memory used in place and never given back, hugetlb with its fallback
//! (or without it, as a typed error), and builder errors that name the field.

use std::io::ErrorKind;
use std::ptr::NonNull;

use pinowner::discard::Discard;
use pinowner::{Backing, BackingKind, BuildError, DiscardError, ExternalRegion, LeakCheck, PageArena, ReportError};

/// A private anonymous mapping standing in for a driver's DMA window.
struct Window {
    ptr: NonNull<u8>,
    len: usize,
}

impl Window {
    fn new(len: usize) -> Window {
        let (rw, flags) = (libc::PROT_READ | libc::PROT_WRITE, libc::MAP_PRIVATE | libc::MAP_ANONYMOUS);
        // SAFETY: a new anonymous mapping; no Rust memory is involved.
        let p = unsafe { libc::mmap(core::ptr::null_mut(), len, rw, flags, -1, 0) };
        assert_ne!(p, libc::MAP_FAILED, "{}", std::io::Error::last_os_error());
        Window { ptr: NonNull::new(p.cast()).unwrap(), len }
    }

    /// The window as an arena's region.
    fn region(&self) -> ExternalRegion {
        // SAFETY: the mapping outlives every arena built from it (it is
        // unmapped in `Drop`, after the tests drop their arenas), and the
        // tests touch it only through the arena while one lives.
        unsafe { ExternalRegion::new(self.ptr, self.len) }
    }

    /// Pages of the window resident in memory (`mincore`): a mapping the
    /// arena unmapped or gave back would not keep the ones written.
    fn resident(&self) -> usize {
        let pages = self.len / 4096;
        let mut vec = vec![0u8; pages];
        // SAFETY: the mapping is ours and page-aligned; `vec` has a byte per page.
        let r = unsafe { libc::mincore(self.ptr.as_ptr().cast(), self.len, vec.as_mut_ptr()) };
        assert_eq!(r, 0, "mincore: {} (the window was unmapped)", std::io::Error::last_os_error());
        vec.iter().filter(|&&b| b & 1 != 0).count()
    }

    fn byte(&self, at: usize) -> u8 {
        assert!(at < self.len);
        // SAFETY: in bounds of the live mapping; no arena uses it now.
        unsafe { self.ptr.as_ptr().add(at).read() }
    }
}

impl Drop for Window {
    fn drop(&mut self) {
        // SAFETY: mapped in `new` with this length; every arena is gone.
        unsafe { libc::munmap(self.ptr.as_ptr().cast(), self.len) };
    }
}

#[test]
fn surface_external_memory_keeps_the_callers_bytes_and_outlives_the_arena() {
    let window = Window::new(16 * 4096);
    // SAFETY: no arena exists yet; the window is ours.
    unsafe { window.ptr.as_ptr().write_bytes(0xab, window.len) };
    {
        let arena = PageArena::builder()
            .backing(Backing::External(window.region()))
            .leak_check(LeakCheck::Off)
            .build()
            .unwrap();
        assert_eq!((arena.backing(), arena.pages(), arena.as_ptr()), (BackingKind::External, 16, window.ptr));
        // Building wrote nothing: the device's bytes are there.
        let mut b = arena.alloc(0).unwrap();
        assert!(b.bytes().iter().all(|&x| x == 0xab), "the caller's bytes, not zeros");
        b.bytes_mut().unwrap()[..4].copy_from_slice(b"dma!");
        let off = b.pfn() * 4096;
        // `alloc_zeroed` zeroes memory the arena never saw zeroed.
        let z = arena.alloc_zeroed(2).unwrap();
        assert!(z.bytes().iter().all(|&x| x == 0));
        // Neither discarding nor free page reporting gives the caller's memory back.
        let refused = z.discard(Discard::DontNeed).unwrap_err();
        assert!(matches!(refused.error, DiscardError::External { .. }), "{refused}");
        let err = arena.report_free(usize::MAX).unwrap_err();
        assert!(matches!(err, ReportError::Backing { backing: BackingKind::External, .. }), "{err}");
        // Dropped with a block still held (leaked): the arena still must not unmap.
        std::mem::forget(b);
        assert_eq!(window.byte(off), b'd');
    }
    assert!(window.resident() >= 16, "the arena unmapped or gave back the caller's window");
    assert_eq!(window.byte(0x3000 + 3), 0xab);
}

#[test]
fn surface_external_region_sizes_are_checked_with_typed_errors() {
    let window = Window::new(4 << 20);
    let ext = |len| {
        // SAFETY: inside the live window; each arena is dropped at once.
        Backing::External(unsafe { ExternalRegion::new(window.ptr, len) })
    };
    let e = PageArena::builder().backing(ext(10_000)).build().unwrap_err();
    assert!(matches!(e, BuildError::SizeNotMultiple { bytes: 10_000, page_size: 4096 }), "{e:?}");
    let e = PageArena::builder().backing(ext(0)).build().unwrap_err();
    assert!(matches!(e, BuildError::ZeroPages), "{e:?}");
    let e = PageArena::builder().pages(4).backing(ext(8 * 4096)).build().unwrap_err();
    assert!(matches!(e, BuildError::SizeMismatch { region: 32768, wanted: 16384 }), "{e:?}");
    assert_eq!(e.to_string(), "the region has 32768 bytes but the arena was sized for 16384");
    // 2 MiB pages need a 2 MiB-aligned base; one page in, it is not.
    let base =
        window.ptr.as_ptr().wrapping_add(if (window.ptr.as_ptr() as usize).is_multiple_of(2 << 20) { 4096 } else { 0 });
    // SAFETY: 2 MiB inside the 4 MiB window.
    let odd = unsafe { ExternalRegion::new(NonNull::new(base).unwrap(), 2 << 20) };
    let e = PageArena::builder().page_size(2 << 20).backing(Backing::External(odd)).build().unwrap_err();
    assert!(matches!(e, BuildError::MisalignedBase { base: b, page_size: 0x20_0000 } if b == base as usize), "{e:?}");
    assert!(e.to_string().contains(&format!("{:#x}", base as usize)), "{e}");
    // A refused build leaves the caller's memory mapped and usable.
    let ok = PageArena::builder().pages(8).backing(ext(8 * 4096)).build().unwrap();
    drop(ok.alloc(3).unwrap());
}

#[test]
fn surface_hugetlb_without_fallback_is_a_typed_error_or_real_hugetlb_pages() {
    let reserved: u64 =
        std::fs::read_to_string("/proc/sys/vm/nr_hugepages").ok().and_then(|s| s.trim().parse().ok()).unwrap_or(0);
    let built = PageArena::builder().capacity(2 << 20).backing(Backing::HugeTlb).hugetlb_fallback(false).build();
    match built {
        Ok(arena) => {
            assert_eq!(arena.backing(), BackingKind::HugeTlb, "no fallback was allowed");
            assert!(arena.backing_fallback().is_none() && arena.backing_fallback_error().is_none());
            let mut b = arena.alloc(0).unwrap();
            b.bytes_mut().unwrap()[0] = 1;
            assert_eq!(arena.as_ptr().as_ptr() as usize % (2 << 20), 0);
        }
        Err(BuildError::Map { backing, source }) => {
            assert_eq!(backing, "hugetlb");
            if reserved == 0 {
                assert_eq!(source.kind(), ErrorKind::OutOfMemory, "MAP_HUGETLB with no pages is ENOMEM: {source}");
            }
        }
        Err(e) => panic!("not a typed hugetlb failure: {e:?}"),
    }
}

#[test]
fn surface_hugetlb_fallback_keeps_the_typed_error_and_serves_small_arenas() {
    // 12 KiB: less than one 2 MiB page, on 4 KiB pages.
    let arena = PageArena::builder().capacity(12 << 10).backing(Backing::HugeTlb).build().unwrap();
    match arena.backing() {
        BackingKind::HugeTlb => assert!(arena.backing_fallback_error().is_none()),
        BackingKind::TransparentHuge => {
            let why = arena.backing_fallback().unwrap();
            let error = arena.backing_fallback_error().expect("the fallback keeps the system's error");
            assert!(why.contains(&error.to_string()), "{why} / {error}");
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(arena.pages(), 3);
    let mut b = arena.alloc(1).unwrap();
    b.bytes_mut().unwrap().fill(5);
    drop(b);
    let z = arena.alloc_zeroed(1).unwrap();
    assert!(z.bytes().iter().all(|&x| x == 0));
    // Other backings never report a fallback.
    let heap = PageArena::builder().pages(4).hugetlb_fallback(false).build().unwrap();
    assert!(heap.backing_fallback().is_none() && heap.backing_fallback_error().is_none());
}

#[test]
fn surface_a_movable_capacity_of_partial_pages_is_named_as_the_movable_zones() {
    let e = PageArena::builder().pages(16).movable_capacity(10_000).build().unwrap_err();
    assert!(matches!(e, BuildError::MovableNotMultiple { bytes: 10_000, page_size: 4096 }), "{e:?}");
    assert_eq!(e.to_string(), "movable zone size of 10000 bytes is not a multiple of the page size 4096");
    // The arena's own size keeps its error.
    let e = PageArena::builder().capacity(10_000).movable_capacity(4096).build().unwrap_err();
    assert!(matches!(e, BuildError::SizeNotMultiple { bytes: 10_000, .. }), "{e:?}");
}

#[test]
fn surface_pages_times_page_size_overflowing_names_both() {
    let e = PageArena::builder().pages(4).page_size(1 << 62).build().unwrap_err();
    assert!(matches!(e, BuildError::SizeOverflow { pages: 4, page_size: 0x4000_0000_0000_0000 }), "{e:?}");
    assert_eq!(e.to_string(), "4 pages of 4611686018427387904 bytes overflow the address space");
}
