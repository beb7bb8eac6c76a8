//! Bad geometry is a typed build error.

use pinowner::{Backing, BuildError, ExternalRegion, PageArena, ThreadCache, MAX_PAGES};

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

/// The input: 2^31 pages passed the old limit, mapped 8 TiB, then
/// aborted allocating a 32 GiB descriptor table. Now it is refused before
/// anything is mapped, naming the limit.
fn two_pow_31_pages_is_refused_naming_the_limit(backing: Backing) {
    let e = PageArena::builder().pages(1 << 31).backing(backing).build().unwrap_err();
    assert!(matches!(e, BuildError::TooManyPages { pages, max } if pages == 1 << 31 && max == MAX_PAGES), "{e:?}");
    assert_eq!(e.to_string(), format!("2147483648 pages is more than the limit of {MAX_PAGES} pages per arena"));
}

#[test]
fn two_pow_31_anonymous_pages_is_a_build_error_not_an_abort() {
    two_pow_31_pages_is_refused_naming_the_limit(Backing::Anonymous);
}

#[test]
fn two_pow_31_hugetlb_pages_is_a_build_error_not_an_abort() {
    two_pow_31_pages_is_refused_naming_the_limit(Backing::HugeTlb);
}

#[test]
fn max_pages_passes_the_geometry_checks_and_fails_only_on_memory() {
    // MAX_PAGES pages of 1 MiB on the heap: the count is accepted, the
    // (lazily zeroed) descriptor table is allocated, and then the 256 TiB
    // heap region is refused, as a typed error.
    let e = PageArena::builder().pages(MAX_PAGES as usize).page_size(1 << 20).build().unwrap_err();
    assert!(
        matches!(e, BuildError::Map { backing: "heap", .. } | BuildError::Alloc { what: "descriptor table", .. }),
        "{e:?}"
    );
}

fn cache_error(cache: ThreadCache) -> BuildError {
    PageArena::builder().pages(64).thread_cache(cache).build().unwrap_err()
}

#[test]
fn thread_cache_with_2_pow_40_shards_is_a_build_error_not_an_abort() {
    let e = cache_error(ThreadCache { shards: 1 << 40, ..ThreadCache::default() });
    assert!(
        matches!(e, BuildError::CacheLimit { field: "shards", value, limit }
            if value == 1 << 40 && limit == ThreadCache::MAX_SHARDS),
        "{e:?}"
    );
    assert_eq!(
        e.to_string(),
        format!("thread cache shards of 1099511627776 is outside 1..={}", ThreadCache::MAX_SHARDS)
    );
}

#[test]
fn thread_cache_with_a_high_mark_of_2_pow_36_is_a_build_error_not_an_abort() {
    let e = cache_error(ThreadCache { high: 1 << 36, ..ThreadCache::default() });
    assert!(
        matches!(e, BuildError::CacheLimit { field: "high", value, limit }
            if value == 1 << 36 && limit == ThreadCache::MAX_HIGH),
        "{e:?}"
    );
    assert_eq!(e.to_string(), format!("thread cache high of 68719476736 is outside 1..={}", ThreadCache::MAX_HIGH));
}

#[test]
fn thread_cache_with_a_high_mark_of_usize_max_is_a_build_error_not_a_capacity_overflow() {
    let e = cache_error(ThreadCache { high: usize::MAX, ..ThreadCache::default() });
    assert!(
        matches!(e, BuildError::CacheLimit { field: "high", value: usize::MAX, limit: ThreadCache::MAX_HIGH }),
        "{e:?}"
    );
}

#[test]
fn thread_cache_batch_above_its_high_mark_is_a_build_error() {
    let e = cache_error(ThreadCache { batch: 64, high: 32, ..ThreadCache::default() });
    assert!(matches!(e, BuildError::CacheBatch { batch: 64, high: 32 }), "{e:?}");
    assert_eq!(e.to_string(), "thread cache batch of 64 is above its high mark of 32");
}

#[test]
fn thread_cache_settings_of_zero_are_build_errors() {
    for (cache, field) in [
        (ThreadCache { shards: 0, ..ThreadCache::default() }, "shards"),
        (ThreadCache { high: 0, ..ThreadCache::default() }, "high"),
        (ThreadCache { batch: 0, ..ThreadCache::default() }, "batch"),
    ] {
        let e = cache_error(cache);
        assert!(matches!(e, BuildError::CacheLimit { field: f, value: 0, .. } if f == field), "{e:?}");
    }
}

#[test]
fn thread_caches_at_their_limits_build_and_allocate() {
    // Every limit at once, on a small arena: the lists' capacity is bounded
    // by the zone, so this costs little memory.
    let cache = ThreadCache {
        batch: ThreadCache::MAX_HIGH,
        high: ThreadCache::MAX_HIGH,
        shards: ThreadCache::MAX_SHARDS,
        orders: ThreadCache::KERNEL_ORDERS,
    };
    let arena = PageArena::builder().pages(64).movable_pages(32).thread_cache(cache).build().unwrap();
    let blocks: Vec<_> = (0..8).map(|_| arena.alloc(0).unwrap()).collect();
    drop(blocks);
    assert_eq!(arena.free_pages(), 64);
}

#[test]
fn a_valid_arena_with_thread_caches_still_builds() {
    let arena = PageArena::builder()
        .capacity(64 << 20)
        .movable_pages(1024)
        .backing(Backing::Anonymous)
        .thread_cache(ThreadCache::default())
        .build()
        .unwrap();
    assert_eq!(arena.pages(), 16384);
    drop(arena.alloc(3).unwrap());
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
