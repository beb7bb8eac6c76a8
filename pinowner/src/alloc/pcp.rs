//! Per-thread caches of free blocks (the kernel's per-CPU page lists): of
//! order 0, and by default of orders 1–3 and 9 too, as the kernel keeps
//! `PAGE_ALLOC_COSTLY_ORDER` and pageblock-order (THP) blocks on its
//! per-CPU lists since Linux 5.13.
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

use crate::error::BuildError;
use crate::page::state::{FREE, GEN_ONE, PCP, REF_ONE};
use crate::sync::{cache_slot, cache_slot_hint, Barrier, BiasedLock, Gauge, RemoteGuard};

/// Settings for per-thread caches of free blocks.
///
/// On by default, with [`ThreadCache::default`], as the kernel's per-CPU
/// page lists are; [`without_thread_cache`] turns them off. Pages in a
/// cache are free ([`free_pages`] counts them, [`frag_stats`] shows them
/// as `cached_pages`) but wait there, unmerged, until a drain: a
/// contiguous reservation drains the caches of its zone, and so does an
/// allocation that finds no block before it fails (the kernel's
/// `drain_all_pages`); [`drain_thread_caches`] drains them on demand.
///
/// A thread allocates from and frees into its own cache without any
/// read-modify-write; a reservation or [`drain_thread_caches`] reaching into
/// the caches pays one `membarrier(MEMBARRIER_CMD_PRIVATE_EXPEDITED)` (about
/// 0.2 µs) per zone. Where that call is unavailable (not Linux, or a
/// sandbox that filters it), or with the environment variable
/// `PINOWNER_NO_MEMBARRIER` set when the first cached arena is built, the
/// owner side uses a `SeqCst` fence instead.
///
/// The settings are checked when the arena is built: `shards` in
/// `1..=`[`MAX_SHARDS`](Self::MAX_SHARDS), `high` in
/// `1..=`[`MAX_HIGH`](Self::MAX_HIGH) and `batch` in `1..=high`; anything
/// else is a [`BuildError`] naming the field and its limit. Each shard's
/// lists are allocated up front (so the owner's push never reallocates),
/// for at most the blocks the zone has.
///
/// [`drain_thread_caches`]: crate::PageArena::drain_thread_caches
/// [`without_thread_cache`]: crate::ArenaBuilder::without_thread_cache
/// [`free_pages`]: crate::PageArena::free_pages
/// [`frag_stats`]: crate::PageArena::frag_stats
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ThreadCache {
    /// Order-0 pages moved between a cache and the buddy lists at a time;
    /// for order `o`, `batch >> o` blocks (at least one). At least 1, at
    /// most `high`.
    pub batch: usize,
    /// A cache holding more than this many order-0 pages returns `batch` of
    /// them to the buddy lists; for order `o`, more than `high >> o` blocks
    /// (at least one). At least 1, at most [`MAX_HIGH`](Self::MAX_HIGH).
    pub high: usize,
    /// Number of shards: threads with their own cache at once (threads
    /// beyond it use the buddy lists directly). Defaults to twice the
    /// available parallelism, at least 8 and at most
    /// [`MAX_SHARDS`](Self::MAX_SHARDS).
    pub shards: usize,
    /// Which orders are cached: bit `o` for order `o` (orders above the
    /// arena's largest are ignored). Defaults to [`ThreadCache::KERNEL_ORDERS`].
    /// Cached blocks do not coalesce until drained; a contiguous
    /// reservation drains them.
    pub orders: u32,
}

impl ThreadCache {
    /// Order 0 only.
    pub const ORDER_0: u32 = 1;
    /// Orders 0–3 and 9: the kernel's per-CPU list orders for 4 KiB pages
    /// (up to `PAGE_ALLOC_COSTLY_ORDER`, and the 2 MiB pageblock order).
    pub const KERNEL_ORDERS: u32 = 0b1111 | 1 << 9;

    /// The most shards a zone may have: twice the kernel's largest
    /// `NR_CPUS` default (8192 on x86-64 is `MAXSMP`'s; 4096 threads with a
    /// cache each is already beyond what one arena's zone lock serves). A
    /// shard is 1 KiB before its lists.
    pub const MAX_SHARDS: usize = 4096;

    /// The highest high mark: 65536 order-0 pages (256 MiB of 4 KiB pages)
    /// in one thread's cache. The kernel's per-CPU high mark is a fraction
    /// of its zone, in the thousands of pages on large machines; this bound
    /// keeps a shard's up-front list capacity under 512 KiB.
    pub const MAX_HIGH: usize = 1 << 16;

    /// Checks the settings against their documented ranges.
    pub(crate) fn validate(&self) -> Result<(), BuildError> {
        let range = |field, value, limit| {
            if (1..=limit).contains(&value) {
                Ok(())
            } else {
                Err(BuildError::CacheLimit { field, value, limit })
            }
        };
        range("shards", self.shards, Self::MAX_SHARDS)?;
        range("high", self.high, Self::MAX_HIGH)?;
        if self.batch > self.high {
            return Err(BuildError::CacheBatch { batch: self.batch, high: self.high });
        }
        range("batch", self.batch, self.high)
    }
}

impl Default for ThreadCache {
    fn default() -> Self {
        let cpus = std::thread::available_parallelism().map_or(1, |n| n.get());
        let shards = cpus.saturating_mul(2).clamp(8, ThreadCache::MAX_SHARDS);
        ThreadCache { batch: 31, high: 186, shards, orders: ThreadCache::KERNEL_ORDERS }
    }
}

/// Orders a cache has a list for: every order the state word can hold.
pub(crate) const LISTS: usize = crate::page::state::MAX_ORDER_LIMIT as usize + 1;
const _: () = assert!(LISTS.is_power_of_two());

/// The blocks one cache holds: a list of head page numbers per order
/// (empty lists allocate nothing), each beside its cumulative counters. The
/// pages they hold in all are counted in the shard's [`Shard::pages`]
/// gauge, which whoever changes a list keeps (inside the lock).
#[derive(Debug)]
pub(crate) struct Lists {
    orders: [OrderList; LISTS],
    /// Per order, the most blocks a list keeps after a free: more, and a
    /// batch goes back to the buddy lists. (Here, not in [`Pcp`]: the
    /// arena, which holds the `Pcp`s, is moved on the stack while it is
    /// built, and loom's model threads have small stacks.)
    highs: [u32; LISTS],
}

/// One order of a cache: its blocks, and counters from
/// which the blocks of the order its owner allocated and freed through it
/// follow. The counters sit beside the list the same operation indexes
/// (plain adds inside the cache: only its owner, or a remote holding the
/// cache, touches them), summed by
/// [`PageArena::stats`](crate::PageArena::stats).
///
/// A free into the cache counts nothing: the list's length does. Every
/// block that entered the list came from a free or a refill, and every
/// block that left it went to an allocation (`allocs`) or back to the buddy
/// lists (a flush or a drain); `moved` is the refilled blocks minus the
/// flushed and drained ones (wrapping), so the frees are
/// `len + allocs - moved` ([`Lists::counts`]).
#[derive(Debug, Default)]
struct OrderList {
    /// Capacity allocated up front (at least `high + 1`, see [`Pcp::new`]),
    /// so a push never reallocates.
    blocks: Vec<u32>,
    allocs: u64,
    moved: u64,
}

impl Lists {
    /// The list of `order`.
    #[inline(always)]
    pub(crate) fn of(&mut self, order: u8) -> &mut Vec<u32> {
        &mut self.order(order).blocks
    }

    #[inline(always)]
    fn order(&mut self, order: u8) -> &mut OrderList {
        // Masked, so no bounds check: every order is below `LISTS`.
        &mut self.orders[order as usize & (LISTS - 1)]
    }

    /// Pops a block of `order` for an allocation, counting it; `None` if
    /// the list is empty (nothing counted).
    #[inline(always)]
    pub(crate) fn pop(&mut self, order: u8) -> Option<u32> {
        let l = self.order(order);
        let p = l.blocks.pop()?;
        l.allocs += 1;
        Some(p)
    }

    /// Pushes a freed block of `order` (counted by the list's length);
    /// returns whether the list is now over its high mark, or `None` (and
    /// pushes nothing) if the list is at its capacity.
    ///
    /// A list never holds more than `high + 1` blocks (pushed, then flushed
    /// at once) nor more than its zone has blocks of the order, and
    /// `Pcp::new` reserved room for that many, so `None` means a broken
    /// invariant: the caller's general path panics on it. Not panicking
    /// here keeps unwinding out of the free's fast path (no landing pad to
    /// leave the cache, so no register saved for one).
    #[inline(always)]
    pub(crate) fn push(&mut self, order: u8, head: u32) -> Option<bool> {
        let high = self.high(order);
        let l = self.order(order);
        let len = l.blocks.len();
        if len >= l.blocks.capacity() {
            return None;
        }
        // SAFETY: `len < capacity` (just checked): the slot is allocated,
        // and the new length covers initialised elements only.
        unsafe {
            l.blocks.as_mut_ptr().add(len).write(head);
            l.blocks.set_len(len + 1);
        }
        Some(len + 1 > high)
    }

    /// True if the list of `order` holds more blocks than its high mark.
    pub(crate) fn over_high(&mut self, order: u8) -> bool {
        self.of(order).len() > self.high(order)
    }

    /// The high mark of the list of `order`, in blocks.
    #[inline(always)]
    fn high(&self, order: u8) -> usize {
        // Masked, so no bounds check: every order is below `LISTS`.
        self.highs[order as usize & (LISTS - 1)] as usize
    }

    /// Counts `blocks` blocks of `order` moved into the list from the buddy
    /// lists (a refill).
    #[inline]
    pub(crate) fn count_refill(&mut self, order: u8, blocks: usize) {
        let l = self.order(order);
        l.moved = l.moved.wrapping_add(blocks as u64);
    }

    /// Counts `blocks` blocks of `order` moved out of the list to the buddy
    /// lists (a flush).
    #[inline]
    pub(crate) fn count_flush(&mut self, order: u8, blocks: usize) {
        let l = self.order(order);
        l.moved = l.moved.wrapping_sub(blocks as u64);
    }

    /// The blocks allocated and freed through this cache, per order.
    pub(crate) fn counts(&self) -> ([u64; LISTS], [u64; LISTS]) {
        let frees = |l: &OrderList| (l.blocks.len() as u64 + l.allocs).wrapping_sub(l.moved);
        (core::array::from_fn(|o| self.orders[o].allocs), core::array::from_fn(|o| frees(&self.orders[o])))
    }

    /// Pages held, all orders, as the lists say (what the shard's gauge
    /// must equal; for [`PageArena::verify`](crate::PageArena::verify)).
    pub(crate) fn listed_pages(&self) -> usize {
        self.orders.iter().enumerate().map(|(o, l)| l.blocks.len() << o).sum()
    }

    /// Empties every list: `f(head, order)` for each block.
    pub(crate) fn drain(&mut self, mut f: impl FnMut(u32, u8)) {
        for (o, l) in self.orders.iter_mut().enumerate() {
            l.moved = l.moved.wrapping_sub(l.blocks.len() as u64);
            for p in l.blocks.drain(..) {
                f(p, o as u8);
            }
        }
    }
}

/// One cache: the blocks it holds, behind a lock biased to its owner, and
/// their page count published for readers that take no lock.
#[repr(align(128))]
#[derive(Debug)]
pub(crate) struct Shard {
    pub(crate) lists: BiasedLock<Lists>,
    /// Pages in the lists, all orders: the count itself, kept inside the
    /// lock by whoever changes a list (the owner on each allocation, free,
    /// refill and flush; a remote on a drain), so it has one writer at a
    /// time, and read without the lock by [`Pcp::pages`].
    pub(crate) pages: Gauge,
}

/// The caches of one zone.
#[derive(Debug)]
pub(crate) struct Pcp {
    pub(crate) shards: Box<[Shard]>,
    pub(crate) config: ThreadCache,
    /// The barrier every shard uses, chosen before any is used.
    pub(crate) barrier: Barrier,
}

impl Pcp {
    /// The caches of a zone of `pages` pages, with `config` already
    /// [validated](ThreadCache::validate).
    ///
    /// A list can hold one block over its high mark (pushed, then flushed)
    /// and never more blocks than the zone has; its capacity is allocated
    /// here, fallibly, so the owner's push never reallocates.
    pub(crate) fn new(config: ThreadCache, max_order: u8, pages: u32) -> Result<Pcp, BuildError> {
        debug_assert!(config.validate().is_ok(), "unvalidated {config:?}");
        let ThreadCache { batch, high, shards: n, .. } = config;
        let orders = config.orders & (((1u64 << (max_order as u32 + 1)) - 1) as u32);
        let cap = |o: usize| {
            let in_zone = (pages >> o) as usize;
            if orders >> o & 1 == 0 || in_zone == 0 {
                0
            } else {
                (high >> o).max(1).min(in_zone) + 1
            }
        };
        let caps: [usize; LISTS] = core::array::from_fn(cap);
        let shard_bytes = caps.iter().sum::<usize>() * size_of::<u32>() + size_of::<Shard>();
        let oom = || BuildError::Alloc { what: "thread caches", bytes: shard_bytes.saturating_mul(n) };
        let mut shards = Vec::new();
        shards.try_reserve_exact(n).map_err(|_| oom())?;
        for _ in 0..n {
            let mut lists: [OrderList; LISTS] = Default::default();
            for (l, &c) in lists.iter_mut().zip(&caps) {
                l.blocks.try_reserve_exact(c).map_err(|_| oom())?;
            }
            let highs = core::array::from_fn(|o| (high >> o).max(1) as u32);
            shards.push(Shard { lists: BiasedLock::new(Lists { orders: lists, highs }), pages: Gauge::default() });
        }
        Ok(Pcp {
            shards: shards.into_boxed_slice(),
            config: ThreadCache { batch, high, shards: n, orders },
            barrier: Barrier::best(),
        })
    }

    /// True if blocks of `order` are cached.
    #[inline(always)]
    pub(crate) fn caches(&self, order: u8) -> bool {
        // `orders` has no bit above the arena's largest order, so this also
        // says `order <= max_order`.
        has_order(self.config.orders, order)
    }

    /// Blocks of `order` moved to or from the buddy lists at a time.
    #[inline]
    pub(crate) fn batch(&self, order: u8) -> usize {
        (self.config.batch >> order).max(1)
    }

    /// The shard the calling thread owns, if its slot has one: one
    /// thread-local load and a bounds check while the thread has a slot
    /// (a thread without one yet, or exiting, has a slot value beyond any
    /// shard count and takes the cold path).
    #[inline(always)]
    pub(crate) fn mine(&self) -> Option<&Shard> {
        match self.mine_fast() {
            Some(shard) => Some(shard),
            None => self.mine_slow(),
        }
    }

    /// The shard the calling thread owns, if its slot is assigned and has
    /// one: [`mine`](Self::mine) without its cold path (for fast paths,
    /// whose general path calls `mine`).
    #[inline(always)]
    pub(crate) fn mine_fast(&self) -> Option<&Shard> {
        self.shards.get(cache_slot_hint())
    }

    /// [`mine`](Self::mine) for a thread whose slot is not assigned yet (or
    /// is beyond the shards, or handed back).
    #[cold]
    #[inline(never)]
    fn mine_slow(&self) -> Option<&Shard> {
        self.shards.get(cache_slot())
    }

    /// Runs `f` on the calling thread's own cache and its page count (which
    /// `f` keeps: see [`Shard::pages`]), or `otherwise` if the thread has
    /// none. `f` must not enter a cache.
    #[inline(always)]
    pub(crate) fn with_mine<R>(&self, f: impl FnOnce(&mut Lists, &Gauge) -> R, otherwise: impl FnOnce() -> R) -> R {
        let Some(shard) = self.mine() else { return otherwise() };
        // SAFETY: this thread's cache slot is unique among live threads, so
        // we are the shard's only owner; callers never nest cache entries.
        unsafe { shard.lists.with_owner(self.barrier, |lists| f(lists, &shard.pages)) }
    }

    /// [`with_mine`](Self::with_mine)'s fast path: runs `f` on the calling
    /// thread's own cache if its slot is assigned and has one and no remote
    /// holds it; `None` otherwise, without running `f` (the caller's
    /// general path, which queues, takes over). `f` must not enter a cache.
    #[inline(always)]
    pub(crate) fn try_mine<R>(&self, f: impl FnOnce(&mut Lists, &Gauge) -> R) -> Option<R> {
        self.try_mine_at(cache_slot_hint(), f)
    }

    /// [`try_mine`](Self::try_mine) by the thread whose
    /// [`cache_slot_hint`] is `slot` (read by the caller).
    #[inline(always)]
    pub(crate) fn try_mine_at<R>(&self, slot: usize, f: impl FnOnce(&mut Lists, &Gauge) -> R) -> Option<R> {
        let shard = self.shards.get(slot)?;
        // SAFETY: this thread's cache slot is unique among live threads, so
        // we are the shard's only owner; callers never nest cache entries.
        unsafe { shard.lists.try_owner(self.barrier, |lists| f(lists, &shard.pages)) }
    }

    /// Takes every shard's remote side (the owners stay out until the
    /// guards drop), with one barrier for all. The guards are in shard
    /// order.
    pub(crate) fn lock_all(&self) -> Vec<RemoteGuard<'_, Lists>> {
        BiasedLock::lock_all(self.shards.iter().map(|s| &s.lists), self.barrier)
    }

    /// Empties the caches `caches` (every shard's remote side, from
    /// [`lock_all`](Self::lock_all)): `f(head, order)` for each block.
    /// Returns the pages drained.
    pub(crate) fn drain(&self, caches: &mut [RemoteGuard<'_, Lists>], mut f: impl FnMut(u32, u8)) -> usize {
        debug_assert_eq!(caches.len(), self.shards.len(), "not every shard's guard");
        let mut drained = 0;
        for (cache, shard) in caches.iter_mut().zip(self.shards.iter()) {
            // Inside the shard: the gauge is exact (its writers hold it).
            drained += shard.pages.get();
            cache.with(|lists| lists.drain(&mut f));
            shard.pages.set(0);
        }
        drained
    }

    /// Pages in all the caches, as their writers last published them: no
    /// lock, no barrier.
    pub(crate) fn pages(&self) -> usize {
        self.shards.iter().map(|s| s.pages.get()).sum()
    }
}

/// True if bit `order` of `orders` (a set of orders) is set; an order past
/// the word's width is in no set (no overflowing shift).
#[inline(always)]
pub(crate) fn has_order(orders: u32, order: u8) -> bool {
    orders.checked_shr(order as u32).unwrap_or(0) & 1 != 0
}

/// The delta that turns a cached free block head's word into an allocated
/// head with one reference and `flags`: clears `FREE` and `PCP` (both set),
/// adds a reference (none held) and a generation, sets `flags` (clear on
/// every free word). Every other bit, the order and `ISOLATED` included, is
/// untouched.
#[inline(always)]
pub(crate) const fn alloc_delta(flags: u64) -> u64 {
    REF_ONE.wrapping_add(GEN_ONE).wrapping_sub(FREE).wrapping_sub(PCP).wrapping_add(flags)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A push into a list at its capacity pushes nothing and says so (the
    /// free's fast path then takes the general path, which panics on the
    /// broken invariant) instead of writing past the reserved room; below
    /// it, a push reports whether the list went over its high mark.
    #[test]
    fn a_push_at_capacity_pushes_nothing_and_below_it_reports_the_high_mark() {
        let mut lists = Lists { orders: core::array::from_fn(|_| OrderList::default()), highs: [1; LISTS] };
        lists.of(0).reserve_exact(2);
        let cap = lists.of(0).capacity();
        assert_eq!(lists.push(0, 10), Some(false), "one block: at the high mark, not over");
        assert_eq!(lists.push(0, 11), Some(true), "two blocks: over the high mark of 1");
        for head in 12..cap as u32 + 10 {
            assert!(lists.push(0, head).is_some());
        }
        assert_eq!(lists.push(0, 99), None, "a full list takes no more");
        assert_eq!(lists.of(0).len(), cap);
        assert!(!lists.of(0).contains(&99));
        assert_eq!(lists.pop(0), Some(cap as u32 + 9), "the last pushed comes back first");
    }
}
