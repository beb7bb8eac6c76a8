//! Bad geometry is a typed build error.

use pinowner::{Backing, BuildError, ExternalRegion, PageArena};

#[test]
fn zero_pages_is_an_error() {
    assert!(matches!(PageArena::builder().pages(0).build(), Err(BuildError::ZeroPages)));
    assert!(matches!(PageArena::builder().build(), Err(BuildError::ZeroPages)));
}

#[test]
fn page_size_must_be_a_power_of_two_of_at_least_4k() {
    for ps in [0usize, 1000, 2048, 4097, 12288] {
        let e = PageArena::builder().pages(4).page_size(ps).build().unwrap_err();
        assert!(matches!(e, BuildError::PageSize { page_size } if page_size == ps), "{e:?}");
    }
    assert!(PageArena::builder().pages(2).page_size(2 << 20).backing(Backing::Anonymous).build().is_ok());
}

#[test]
fn capacity_must_be_a_whole_number_of_pages() {
    let e = PageArena::builder().capacity(10_000).build().unwrap_err();
    assert_eq!(e.to_string(), "size of 10000 bytes is not a multiple of the page size 4096");
    assert_eq!(PageArena::builder().capacity(40960).build().unwrap().pages(), 10);
}

#[test]
fn too_many_pages_is_an_error_before_any_memory_is_mapped() {
    let e = PageArena::builder().pages((1 << 31) + 1).backing(Backing::Anonymous).build().unwrap_err();
    assert!(matches!(e, BuildError::TooManyPages { .. }), "{e:?}");
}

#[test]
fn movable_zone_larger_than_the_arena_is_an_error() {
    let e = PageArena::builder().pages(8).movable_pages(9).build().unwrap_err();
    assert_eq!(e.to_string(), "movable zone of 9 pages does not fit an arena of 8 pages");
}

#[test]
fn max_order_above_the_state_word_limit_is_an_error() {
    assert!(matches!(PageArena::builder().pages(8).max_order(32).build(), Err(BuildError::MaxOrder { .. })));
}

#[test]
fn external_region_must_be_page_aligned() {
    let mut buf = vec![0u8; 3 * 4096];
    let base = buf.as_mut_ptr();
    let misaligned = base.wrapping_add(if (base as usize).is_multiple_of(4096) { 8 } else { 0 });
    // SAFETY: the buffer outlives the (never built) arena; nothing else uses it.
    let ext = unsafe { ExternalRegion::new(std::ptr::NonNull::new(misaligned).unwrap(), 4096) };
    let e = PageArena::builder().backing(Backing::External(ext)).build().unwrap_err();
    assert!(matches!(e, BuildError::MisalignedBase { page_size: 4096, .. }), "{e:?}");
}
