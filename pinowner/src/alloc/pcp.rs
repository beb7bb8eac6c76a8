//! Per-thread caches of order-0 pages (the kernel's per-CPU page lists).
//!
//! A zone with caches has a small power-of-two number of shards; a thread
//! always uses the shard its [`thread_index`] picks, so with no more threads
//! than shards each cache lock is uncontended and the buddy lock is taken
//! once per `batch` pages instead of once per page. Pages in a cache are free
//! (`FREE | PCP`) but not in the buddy lists: invisible to a contiguous
//! reservation until drained, which is why a reservation drains them.
//!
//! The cache path touches no zone lock and makes three read-modify-writes
//! per alloc+free: the release that frees the page, and the shard lock's
//! swap on each side (unlocking is a store).
//!
//! - **free**: the last release itself turns the live word into a cached
//!   free one (one compare-and-swap, which also checks `ISOLATED`
//!   atomically: a page in an isolated window goes to the buddy lists,
//!   where it stays unlisted). The page is then pushed under the shard
//!   lock. Until it is, it reads `FREE | PCP` and is in no cache: coalescing
//!   skips `PCP` pages, and a reservation that meets one drains and looks
//!   again.
//! - **alloc**: pop under the shard lock and, still under it, a load and a
//!   plain store that make the word allocated ([`alloc_delta`]). Nothing
//!   else writes a cached page's word meanwhile: the last release and
//!   acquisitions by page number compare-and-swap from live words only;
//!   arming writes a free word back unchanged; zone-lock code skips `PCP`
//!   pages except when draining, which holds the shard lock; and a
//!   reservation sets and clears `ISOLATED` with every shard lock of the
//!   zone held ([`PageArena::lock_caches`]). That last rule is the price of
//!   the store: a read-modify-write here would let `ISOLATED` be written
//!   under the zone lock alone.
//!
//! [`PageArena::lock_caches`]: crate::PageArena
//! [`thread_index`]: crate::sync::thread_index

use crate::page::state::{FREE, GEN_ONE, PCP, REF_ONE};
use crate::sync::{thread_index, SpinMutex};

/// Settings for per-thread order-0 caches.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ThreadCache {
    /// Pages moved between a cache and the buddy lists at a time.
    pub batch: usize,
    /// A cache holding more than this returns `batch` pages to the buddy lists.
    pub high: usize,
    /// Number of shards (rounded up to a power of two); defaults to twice
    /// the available parallelism.
    pub shards: usize,
}

impl Default for ThreadCache {
    fn default() -> Self {
        let cpus = std::thread::available_parallelism().map_or(1, |n| n.get());
        ThreadCache { batch: 31, high: 186, shards: 2 * cpus }
    }
}

/// One cache. Its lock is a spin lock: held for a push or a pop (or a batch
/// against the buddy lists), almost never contended, and one
/// read-modify-write plus a store per critical section where a parking
/// mutex needs two read-modify-writes.
#[repr(align(128))]
#[derive(Debug)]
pub(crate) struct Shard(pub(crate) SpinMutex<Vec<u32>>);

/// The caches of one zone.
#[derive(Debug)]
pub(crate) struct Pcp {
    pub(crate) shards: Box<[Shard]>,
    pub(crate) config: ThreadCache,
}

impl Pcp {
    pub(crate) fn new(config: ThreadCache) -> Pcp {
        let n = config.shards.max(1).next_power_of_two();
        let batch = config.batch.max(1);
        let high = config.high.max(batch);
        Pcp {
            shards: (0..n).map(|_| Shard(SpinMutex::new(Vec::with_capacity(high + 1)))).collect(),
            config: ThreadCache { batch, high, shards: n },
        }
    }

    /// The calling thread's shard.
    #[inline]
    pub(crate) fn mine(&self) -> &Shard {
        &self.shards[thread_index() & (self.shards.len() - 1)]
    }
}

/// The delta that turns a cached free page's word into an allocated order-0
/// head with one reference and `flags`: clears `FREE` and `PCP` (both set),
/// adds a reference (none held) and a generation, sets `flags` (clear on
/// every free word). Every other bit, `ISOLATED` included, is untouched.
#[inline(always)]
pub(crate) const fn alloc_delta(flags: u64) -> u64 {
    REF_ONE.wrapping_add(GEN_ONE).wrapping_sub(FREE).wrapping_sub(PCP).wrapping_add(flags)
}
