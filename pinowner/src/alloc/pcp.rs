//! Per-thread caches of order-0 pages (the kernel's per-CPU page lists).
//!
//! A zone with caches has a small power-of-two number of shards; a thread
//! always uses the shard its [`thread_index`] picks, so with no more threads
//! than shards each cache lock is uncontended and the buddy lock is taken
//! once per `batch` pages instead of once per page. Pages in a cache are free
//! (`FREE | PCP`) but not in the buddy lists: invisible to a contiguous
//! reservation until drained, which is why a reservation drains them.
//!
//! [`thread_index`]: crate::sync::thread_index

use crate::sync::{thread_index, Mutex};

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

#[repr(align(128))]
#[derive(Debug)]
pub(crate) struct Shard(pub(crate) Mutex<Vec<u32>>);

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
            shards: (0..n).map(|_| Shard(Mutex::new(Vec::with_capacity(high + 1)))).collect(),
            config: ThreadCache { batch, high, shards: n },
        }
    }

    /// The calling thread's shard.
    #[inline]
    pub(crate) fn mine(&self) -> &Shard {
        &self.shards[thread_index() & (self.shards.len() - 1)]
    }
}
