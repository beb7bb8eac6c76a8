//! Per-thread caches of order-0 pages (the kernel's per-CPU page lists).
//!
//! A zone with caches has a fixed number of shards. A thread owns the shard
//! of its cache slot ([`cache_slot`]: unique among live threads, recycled
//! lowest first when threads exit), so a shard has at most one owner at a
//! time, as a kernel per-CPU list has one CPU. A thread whose slot is beyond
//! the shard count allocates from and frees to the buddy lists directly.
//! Pages in a cache are free (`FREE | PCP`) but not in the buddy lists:
//! invisible to a contiguous reservation until drained, which is why a
//! reservation drains them.
//!
//! Each shard is a [`BiasedLock`]: its owner enters with plain stores (no
//! read-modify-write at all), other threads (a reservation or a drain, the
//! kernel's `drain_all_pages`) take its remote side, which costs them a
//! process-wide `membarrier`. So the cache path makes one read-modify-write
//! per alloc+free: the release that frees the page.
//!
//! - **free**: the last release itself turns the live word into a cached
//!   free one (one compare-and-swap, which also checks `ISOLATED`
//!   atomically: a page in an isolated window goes to the buddy lists,
//!   where it stays unlisted). The owner then pushes the page into its
//!   shard. Until it does, the page reads `FREE | PCP` and is in no cache:
//!   coalescing skips `PCP` pages, and a reservation that meets one drains
//!   and looks again.
//! - **alloc**: the owner pops a page inside its shard and, still inside, a
//!   load and a plain store make the word allocated ([`alloc_delta`]).
//!   Nothing else writes a cached page's word meanwhile: the last release
//!   and acquisitions by page number compare-and-swap from live words only;
//!   arming writes a free word back unchanged; zone-lock code skips `PCP`
//!   pages except when draining, which holds the shard's remote side; and a
//!   reservation sets and clears `ISOLATED` holding the remote side of every
//!   shard of the zone ([`PageArena::lock_caches`]). That last rule is the
//!   price of the store: a read-modify-write here would let `ISOLATED` be
//!   written under the zone lock alone.
//!
//! [`PageArena::lock_caches`]: crate::PageArena
//! [`cache_slot`]: crate::sync::cache_slot
//! [`BiasedLock`]: crate::sync::BiasedLock

use crate::page::state::{FREE, GEN_ONE, PCP, REF_ONE};
use crate::sync::{cache_slot, Barrier, BiasedLock, RemoteGuard};

/// Settings for per-thread order-0 caches.
///
/// A thread allocates from and frees into its own cache without any
/// read-modify-write; a reservation or [`drain_thread_caches`] reaching into
/// the caches pays one `membarrier(MEMBARRIER_CMD_PRIVATE_EXPEDITED)` (about
/// 0.2 µs) per zone. Where that call is unavailable (not Linux, or a
/// sandbox that filters it), or with the environment variable
/// `PINOWNER_NO_MEMBARRIER` set when the first cached arena is built, the
/// owner side uses a `SeqCst` fence instead.
///
/// [`drain_thread_caches`]: crate::PageArena::drain_thread_caches
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ThreadCache {
    /// Pages moved between a cache and the buddy lists at a time.
    pub batch: usize,
    /// A cache holding more than this returns `batch` pages to the buddy lists.
    pub high: usize,
    /// Number of shards: threads with their own cache at once (threads
    /// beyond it use the buddy lists directly). Defaults to twice the
    /// available parallelism, at least 8.
    pub shards: usize,
}

impl Default for ThreadCache {
    fn default() -> Self {
        let cpus = std::thread::available_parallelism().map_or(1, |n| n.get());
        ThreadCache { batch: 31, high: 186, shards: (2 * cpus).max(8) }
    }
}

/// One cache: the page numbers it holds, behind a lock biased to its owner.
#[repr(align(128))]
#[derive(Debug)]
pub(crate) struct Shard(pub(crate) BiasedLock<Vec<u32>>);

/// The caches of one zone.
#[derive(Debug)]
pub(crate) struct Pcp {
    pub(crate) shards: Box<[Shard]>,
    pub(crate) config: ThreadCache,
    /// The barrier every shard uses, chosen before any is used.
    pub(crate) barrier: Barrier,
}

impl Pcp {
    pub(crate) fn new(config: ThreadCache) -> Pcp {
        let n = config.shards.max(1);
        let batch = config.batch.max(1);
        let high = config.high.max(batch);
        Pcp {
            shards: (0..n).map(|_| Shard(BiasedLock::new(Vec::with_capacity(high + 1)))).collect(),
            config: ThreadCache { batch, high, shards: n },
            barrier: Barrier::best(),
        }
    }

    /// The shard the calling thread owns, if its slot has one.
    #[inline]
    pub(crate) fn mine(&self) -> Option<&Shard> {
        self.shards.get(cache_slot())
    }

    /// Runs `f` on the calling thread's own cache, if it has one.
    #[inline(always)]
    pub(crate) fn with_mine<R>(&self, f: impl FnOnce(&mut Vec<u32>) -> R) -> Option<R> {
        let shard = self.mine()?;
        // SAFETY: the shard is the one of this thread's cache slot, which no
        // other live thread has, so no other thread is its owner; callers
        // never enter a cache from inside one.
        Some(unsafe { shard.0.with_owner(self.barrier, f) })
    }

    /// Takes every shard's remote side (the owners stay out until the
    /// guards drop), with one barrier for all.
    pub(crate) fn lock_all(&self) -> Vec<RemoteGuard<'_, Vec<u32>>> {
        BiasedLock::lock_all(self.shards.iter().map(|s| &s.0), self.barrier)
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
