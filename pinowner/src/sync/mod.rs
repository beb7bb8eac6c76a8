//! The one door to concurrency.
//!
//! Every atomic, lock, sharded map and thread-local the page state machine
//! uses comes from here. Under `cfg(loom)` the same names map to `loom`, so the
//! models in `tests/loom.rs` explore every interleaving of the real code.
//! parking_lot and dashmap do not run under loom; their stand-ins keep the
//! same API.

mod biased;
mod local;
pub(crate) use biased::{Barrier, BiasedLock, RemoteGuard};
#[allow(unused_imports)]
pub(crate) use local::*;

#[cfg(loom)]
pub(crate) use loom::sync::Arc as TrackedArc;
/// An `Arc` whose counts loom tracks under the models (a count added to a
/// released one panics there), `std`'s otherwise. Sized values only.
#[cfg(not(loom))]
pub(crate) use std::sync::Arc as TrackedArc;

#[cfg(not(loom))]
pub(crate) use std::sync::atomic::{fence, AtomicBool, AtomicPtr, AtomicU32, AtomicU64, AtomicUsize, Ordering};

#[cfg(loom)]
pub(crate) use loom::sync::atomic::{fence, AtomicBool, AtomicPtr, AtomicU32, AtomicU64, AtomicUsize, Ordering};

/// A statistic published for lock-free readers: a count that one writer
/// at a time changes (under a lock it holds) and anyone reads, relaxed.
///
/// Always std's atomic, under loom too: a gauge decides nothing in the
/// state machine (readers only report it), so its orderings need no model,
/// and loom exploring its loads and stores would only multiply the
/// interleavings of the models that run the allocator.
///
/// On a cache line of its own (128 bytes, a pair of 64-byte lines as the
/// adjacent-line prefetcher fetches them): a reader polling it takes only
/// this line from its writer, not the line of the writer's lock and data.
#[derive(Debug, Default)]
#[repr(align(128))]
pub(crate) struct Gauge(std::sync::atomic::AtomicUsize);

impl Gauge {
    /// The value last published.
    #[inline]
    pub(crate) fn get(&self) -> usize {
        self.0.load(std::sync::atomic::Ordering::Relaxed)
    }

    /// Publishes `value`. Writers are serialised by a lock of their own, so
    /// a plain store (no read-modify-write) loses nothing.
    #[inline(always)]
    pub(crate) fn set(&self, value: usize) {
        self.0.store(value, std::sync::atomic::Ordering::Relaxed);
    }
}

/// A condition variable paired with [`Mutex`]: parking_lot's normally,
/// loom's under the models.
#[cfg(not(loom))]
#[derive(Debug, Default)]
pub(crate) struct Condvar(parking_lot::Condvar);

#[cfg(not(loom))]
impl Condvar {
    pub(crate) fn new() -> Self {
        Self(parking_lot::Condvar::new())
    }

    /// Waits until notified or until `timeout` passes; returns the guard.
    pub(crate) fn wait_for<'a, T>(
        &self,
        mut guard: parking_lot::MutexGuard<'a, T>,
        timeout: std::time::Duration,
    ) -> parking_lot::MutexGuard<'a, T> {
        self.0.wait_for(&mut guard, timeout);
        guard
    }

    pub(crate) fn notify_all(&self) {
        self.0.notify_all();
    }
}

/// A condition variable paired with [`Mutex`]: parking_lot's normally,
/// loom's under the models.
#[cfg(loom)]
#[derive(Debug)]
pub(crate) struct Condvar(loom::sync::Condvar);

#[cfg(loom)]
impl Condvar {
    pub(crate) fn new() -> Self {
        Self(loom::sync::Condvar::new())
    }

    /// Waits until notified (loom has no time: a timeout is a plain wait).
    pub(crate) fn wait_for<'a, T>(
        &self,
        guard: loom::sync::MutexGuard<'a, T>,
        _timeout: std::time::Duration,
    ) -> loom::sync::MutexGuard<'a, T> {
        self.0.wait(guard).unwrap()
    }

    pub(crate) fn notify_all(&self) {
        self.0.notify_all();
    }
}

/// Interior mutability checked by loom: `with_mut` hands out the raw
/// pointer; the caller's protocol makes the access exclusive.
#[cfg(not(loom))]
#[derive(Debug)]
pub(crate) struct UnsafeCell<T>(core::cell::UnsafeCell<T>);

#[cfg(not(loom))]
impl<T> UnsafeCell<T> {
    pub(crate) fn new(value: T) -> Self {
        Self(core::cell::UnsafeCell::new(value))
    }

    #[inline]
    pub(crate) fn with_mut<R>(&self, f: impl FnOnce(*mut T) -> R) -> R {
        f(self.0.get())
    }
}

#[cfg(loom)]
pub(crate) use loom::cell::UnsafeCell;

/// A mutex whose `lock()` returns the guard directly, on both sides.
#[cfg(not(loom))]
#[derive(Debug, Default)]
pub(crate) struct Mutex<T>(parking_lot::Mutex<T>);

#[cfg(not(loom))]
impl<T> Mutex<T> {
    pub(crate) fn new(value: T) -> Self {
        Self(parking_lot::Mutex::new(value))
    }

    #[inline]
    pub(crate) fn lock(&self) -> parking_lot::MutexGuard<'_, T> {
        self.0.lock()
    }

    /// Locks, waiting until `deadline` at most (`None`: no limit).
    pub(crate) fn lock_until(&self, deadline: Option<std::time::Instant>) -> Option<parking_lot::MutexGuard<'_, T>> {
        match deadline {
            Some(d) => self.0.try_lock_until(d),
            None => Some(self.0.lock()),
        }
    }
}

/// A mutex whose `lock()` returns the guard directly, on both sides.
#[cfg(loom)]
#[derive(Debug)]
pub(crate) struct Mutex<T>(loom::sync::Mutex<T>);

#[cfg(loom)]
impl<T> Mutex<T> {
    pub(crate) fn new(value: T) -> Self {
        Self(loom::sync::Mutex::new(value))
    }

    pub(crate) fn lock(&self) -> loom::sync::MutexGuard<'_, T> {
        // A panic while holding a lock is already a bug the model reports.
        self.0.lock().unwrap()
    }

    /// Locks (loom has no time: a deadline never passes).
    pub(crate) fn lock_until(&self, _deadline: Option<std::time::Instant>) -> Option<loom::sync::MutexGuard<'_, T>> {
        Some(self.lock())
    }

    /// `SpinMutex::lock_patient` under loom (where the spin lock is this
    /// mutex): a plain lock.
    pub(crate) fn lock_patient(&self) -> loom::sync::MutexGuard<'_, T> {
        self.lock()
    }
}

/// A spin lock whose `lock()` returns the guard: one swap to lock, one
/// store to unlock (a parking mutex pays a second read-modify-write to
/// unlock, to see whether anyone sleeps). For short critical sections that
/// are almost never contended, like a thread's own page cache; a waiter
/// spins briefly, then yields. Under loom it is the loom mutex.
#[cfg(not(loom))]
pub(crate) struct SpinMutex<T> {
    locked: std::sync::atomic::AtomicBool,
    value: core::cell::UnsafeCell<T>,
}

// The lock hands the value to one thread at a time (`Acquire` swap to take
// it, `Release` store to give it back).
#[cfg(not(loom))]
// SAFETY: so sharing the lock only moves the value: `T: Send` suffices.
unsafe impl<T: Send> Sync for SpinMutex<T> {}

#[cfg(not(loom))]
impl<T> SpinMutex<T> {
    pub(crate) fn new(value: T) -> Self {
        Self { locked: std::sync::atomic::AtomicBool::new(false), value: core::cell::UnsafeCell::new(value) }
    }

    #[inline]
    pub(crate) fn lock(&self) -> SpinGuard<'_, T> {
        if self.locked.swap(true, Ordering::Acquire) {
            self.lock_contended();
        }
        SpinGuard { lock: self, _marker: core::marker::PhantomData }
    }

    #[cold]
    #[inline(never)]
    fn lock_contended(&self) {
        let mut backoff = Backoff::default();
        loop {
            while self.locked.load(Ordering::Relaxed) {
                backoff.snooze();
            }
            if !self.locked.swap(true, Ordering::Acquire) {
                return;
            }
        }
    }

    /// [`lock`](Self::lock) for a lock held for a moment almost always and
    /// sometimes for long (the zone lock, which reservations, statistics
    /// and `verify` hold over a walk): the same swap to lock and store to
    /// unlock, but a waiter polls only a few times, then polls after each
    /// of up to 32 yields, then sleeps (20 µs, doubling to about 1.3 ms),
    /// so a long hold costs its waiters no CPU and a contended lock mostly
    /// stays with the core that has it instead of its line moving at every
    /// poll. The price of the store unlock: nobody wakes a sleeper, which
    /// finds the lock free on a later try, and nothing makes the lock fair.
    /// The yields keep the wait of a caller near a parking mutex's: without
    /// them (sleeping after the polls; Linux rounds a short sleep up to its
    /// 50 µs timer slack) the 99.9th-percentile call took 77–224 µs under
    /// contention against `parking_lot`'s 4–58 µs (`alloc_insn
    /// --contention`, BENCHMARKS.md, session 8).
    #[inline]
    pub(crate) fn lock_patient(&self) -> SpinGuard<'_, T> {
        if self.locked.swap(true, Ordering::Acquire) {
            self.lock_patient_contended();
        }
        SpinGuard { lock: self, _marker: core::marker::PhantomData }
    }

    #[cold]
    #[inline(never)]
    fn lock_patient_contended(&self) {
        /// Polls before the first yield.
        const POLLS: u32 = 8;
        /// Polls, each after a yield, before the first sleep.
        const YIELDS: u32 = 32;
        let mut tries = 0u32;
        loop {
            while self.locked.load(Ordering::Relaxed) {
                if tries < POLLS {
                    spin_hint();
                } else if tries < POLLS + YIELDS {
                    yield_now();
                } else {
                    let n = (tries - POLLS - YIELDS).min(6);
                    std::thread::sleep(std::time::Duration::from_micros(20 << n));
                }
                tries += 1;
            }
            if !self.locked.swap(true, Ordering::Acquire) {
                return;
            }
        }
    }

    /// Whether some thread holds the lock now (for tests).
    #[cfg(test)]
    pub(crate) fn is_locked(&self) -> bool {
        self.locked.load(Ordering::Relaxed)
    }
}

#[cfg(not(loom))]
impl<T> core::fmt::Debug for SpinMutex<T> {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("SpinMutex").field("locked", &self.locked.load(Ordering::Relaxed)).finish_non_exhaustive()
    }
}

/// The guard of a [`SpinMutex`]: the value while it lives, unlocked on drop.
#[cfg(not(loom))]
pub(crate) struct SpinGuard<'a, T> {
    lock: &'a SpinMutex<T>,
    /// Not `Send`, and `Sync` only for `T: Sync` (below), like std's guard:
    /// without this a shared guard would hand `&T` to several threads for
    /// any `T: Send`.
    _marker: core::marker::PhantomData<*mut T>,
}

#[cfg(not(loom))]
// SAFETY: a `&SpinGuard` gives only `&T`, so sharing one across threads is
// sharing `&T`: sound exactly when `T: Sync`.
unsafe impl<T: Sync> Sync for SpinGuard<'_, T> {}

#[cfg(not(loom))]
impl<T> core::ops::Deref for SpinGuard<'_, T> {
    type Target = T;
    #[inline]
    fn deref(&self) -> &T {
        // The `&self` borrow keeps the reference from outliving the guard.
        // SAFETY: the guard exists only while we hold the lock: no other reference is live.
        unsafe { &*self.lock.value.get() }
    }
}

#[cfg(not(loom))]
impl<T> core::ops::DerefMut for SpinGuard<'_, T> {
    #[inline]
    fn deref_mut(&mut self) -> &mut T {
        // SAFETY: as in `deref`; `&mut self` makes this the only reference
        // derived from the guard.
        unsafe { &mut *self.lock.value.get() }
    }
}

#[cfg(not(loom))]
impl<T> Drop for SpinGuard<'_, T> {
    #[inline]
    fn drop(&mut self) {
        self.lock.locked.store(false, Ordering::Release);
    }
}

/// Under loom the spin lock is the loom mutex (loom explores its
/// interleavings the same way).
#[cfg(loom)]
pub(crate) type SpinMutex<T> = Mutex<T>;

/// The guard of a [`SpinMutex`] (a loom mutex guard under loom).
#[cfg(loom)]
pub(crate) type SpinGuard<'a, T> = loom::sync::MutexGuard<'a, T>;

/// A concurrent map from page numbers to small counters.
///
/// `dashmap` normally; a `Mutex<HashMap>` under loom. Callers never hold an
/// entry across another call on the same map: every operation is one closure.
#[derive(Debug, Default)]
pub(crate) struct ShardedMap<V> {
    #[cfg(not(loom))]
    inner: dashmap::DashMap<u32, V>,
    #[cfg(loom)]
    inner: loom::sync::Mutex<std::collections::HashMap<u32, V>>,
}

impl<V: Default + Clone> ShardedMap<V> {
    pub(crate) fn new() -> Self {
        Self {
            #[cfg(not(loom))]
            inner: dashmap::DashMap::new(),
            #[cfg(loom)]
            inner: loom::sync::Mutex::new(std::collections::HashMap::new()),
        }
    }

    /// Runs `f` on the entry for `key` (a default one if absent). When `f`
    /// leaves the entry equal to `remove_if`, the entry is removed.
    pub(crate) fn update<R>(&self, key: u32, remove_if: impl Fn(&V) -> bool, f: impl FnOnce(&mut V) -> R) -> R {
        #[cfg(not(loom))]
        {
            use dashmap::mapref::entry::Entry;
            match self.inner.entry(key) {
                Entry::Occupied(mut e) => {
                    let r = f(e.get_mut());
                    if remove_if(e.get()) {
                        e.remove();
                    }
                    r
                }
                Entry::Vacant(e) => {
                    let mut v = V::default();
                    let r = f(&mut v);
                    if !remove_if(&v) {
                        e.insert(v);
                    }
                    r
                }
            }
        }
        #[cfg(loom)]
        {
            let mut map = self.inner.lock().unwrap();
            let mut v = map.remove(&key).unwrap_or_default();
            let r = f(&mut v);
            if !remove_if(&v) {
                map.insert(key, v);
            }
            r
        }
    }

    /// The value for `key`, or the default.
    pub(crate) fn get(&self, key: u32) -> V {
        #[cfg(not(loom))]
        {
            self.inner.get(&key).map(|v| v.clone()).unwrap_or_default()
        }
        #[cfg(loom)]
        {
            self.inner.lock().unwrap().get(&key).cloned().unwrap_or_default()
        }
    }

    /// Every entry, copied out (no guard is held when this returns).
    pub(crate) fn snapshot(&self) -> Vec<(u32, V)> {
        #[cfg(not(loom))]
        {
            self.inner.iter().map(|e| (*e.key(), e.value().clone())).collect()
        }
        #[cfg(loom)]
        {
            self.inner.lock().unwrap().iter().map(|(k, v)| (*k, v.clone())).collect()
        }
    }
}

thread_local_const! {
    /// This thread's index, `usize::MAX` until first asked for.
    static INDEX: core::cell::Cell<usize> = const { core::cell::Cell::new(usize::MAX) };
}

/// A small per-thread number, stable for the thread's life and never
/// reused: names the thread in tracker events. A `const` thread-local, so
/// asking is one load from the thread block.
#[inline]
pub(crate) fn thread_index() -> usize {
    let i = INDEX.with(|i| i.get());
    if i != usize::MAX {
        i
    } else {
        assign_thread_index()
    }
}

#[cold]
#[inline(never)]
fn assign_thread_index() -> usize {
    #[cfg(not(loom))]
    let i = {
        static NEXT: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
        NEXT.fetch_add(1, Ordering::Relaxed)
    };
    #[cfg(loom)]
    let i = {
        loom::lazy_static! {
            static ref NEXT: AtomicUsize = AtomicUsize::new(0);
        }
        NEXT.fetch_add(1, Ordering::Relaxed)
    };
    // Never `usize::MAX` in practice (that many threads cannot exist).
    INDEX.with(|c| c.set(i));
    i
}

/// A thread's cache slot: unique among live threads, handed back when the
/// thread exits and reused lowest first, so slots stay dense. Slot `i` owns
/// shard `i` of every zone's cache (when there is one); a thread owns its
/// shard alone, which is what lets it use the shard without a
/// read-modify-write ([`BiasedLock`]). A thread that is exiting (its slot
/// already handed back) gets `NO_SLOT`. Under loom, model threads never
/// exit mid-model and the slot is the thread index.
#[inline]
pub(crate) fn cache_slot() -> usize {
    #[cfg(not(loom))]
    {
        let s = SLOT.with(|s| s.get());
        if s < NO_SLOT {
            s
        } else if s == NO_SLOT {
            NO_SLOT
        } else {
            assign_cache_slot()
        }
    }
    #[cfg(loom)]
    thread_index()
}

/// The calling thread's cache slot if it has one, without assigning one:
/// one thread-local load. A thread that has no slot yet reads `usize::MAX`,
/// an exiting one [`NO_SLOT`]: both beyond any shard count (at most
/// [`ThreadCache::MAX_SHARDS`](crate::ThreadCache::MAX_SHARDS)), so a
/// caller that indexes its shards with the hint and falls back to
/// [`cache_slot`] when the index is out of range gets `cache_slot`'s answer.
#[inline(always)]
pub(crate) fn cache_slot_hint() -> usize {
    #[cfg(not(loom))]
    {
        SLOT.with(|s| s.get())
    }
    #[cfg(loom)]
    thread_index()
}

/// The slot of a thread that has none (it is exiting): above any shard.
#[cfg(not(loom))]
pub(crate) const NO_SLOT: usize = usize::MAX - 1;

#[cfg(not(loom))]
std::thread_local! {
    /// This thread's cache slot; `usize::MAX` until first asked for,
    /// [`NO_SLOT`] once handed back.
    static SLOT: core::cell::Cell<usize> = const { core::cell::Cell::new(usize::MAX) };
    /// Hands the slot back when the thread exits.
    static SLOT_OWNER: SlotOwner = const { SlotOwner(core::cell::Cell::new(NO_SLOT)) };
}

/// Free slots below `next`, and the next never-used slot.
#[cfg(not(loom))]
static SLOTS: std::sync::Mutex<(std::collections::BinaryHeap<core::cmp::Reverse<usize>>, usize)> =
    std::sync::Mutex::new((std::collections::BinaryHeap::new(), 0));

#[cfg(not(loom))]
struct SlotOwner(core::cell::Cell<usize>);

#[cfg(not(loom))]
impl Drop for SlotOwner {
    fn drop(&mut self) {
        let slot = self.0.get();
        if slot == NO_SLOT {
            return;
        }
        // Nothing on this thread uses the slot after this (a later
        // destructor that allocates gets `NO_SLOT`).
        hand_back_slot(slot);
    }
}

/// Returns this thread's slot to the pool and leaves it without one; the
/// pool's mutex orders our last use before the next owner's first.
#[cfg(not(loom))]
fn hand_back_slot(slot: usize) {
    SLOT.with(|s| s.set(NO_SLOT));
    SLOTS.lock().unwrap_or_else(|p| p.into_inner()).0.push(core::cmp::Reverse(slot));
}

#[cfg(not(loom))]
#[cold]
#[inline(never)]
fn assign_cache_slot() -> usize {
    let slot = {
        let mut slots = SLOTS.lock().unwrap_or_else(|p| p.into_inner());
        match slots.0.pop() {
            Some(core::cmp::Reverse(s)) => s,
            None => {
                slots.1 += 1;
                slots.1 - 1
            }
        }
    };
    // Registering the destructor fails only while the thread's locals are
    // being destroyed: then the thread goes without a slot.
    if SLOT_OWNER.try_with(|o| o.0.set(slot)).is_err() {
        hand_back_slot(slot);
        return NO_SLOT;
    }
    SLOT.with(|s| s.set(slot));
    slot
}

/// Lets other threads run while waiting for one of them (a loom yield
/// under loom, so the model can make progress).
#[inline]
pub(crate) fn yield_now() {
    #[cfg(not(loom))]
    std::thread::yield_now();
    #[cfg(loom)]
    loom::thread::yield_now();
}

/// Waiting for another thread to let go of something it holds briefly:
/// spins a while, then yields (the holder may have been preempted).
#[derive(Default)]
pub(crate) struct Backoff(u32);

impl Backoff {
    /// One wait step.
    #[inline]
    pub(crate) fn snooze(&mut self) {
        if self.0 < 100 {
            self.0 += 1;
            spin_hint();
        } else {
            yield_now();
        }
    }

    /// One wait step for something that may take long (another thread's
    /// user callback, say): spins, then yields, then sleeps, doubling from
    /// 10 µs to 1 ms, so a long wait costs no CPU (a yield under loom).
    pub(crate) fn sleep(&mut self) {
        if self.0 < 100 {
            self.snooze();
            return;
        }
        #[cfg(not(loom))]
        {
            let n = (self.0 - 100).min(7);
            self.0 = self.0.saturating_add(1);
            std::thread::sleep(std::time::Duration::from_micros(10 << n));
        }
        #[cfg(loom)]
        yield_now();
    }
}

/// A hint to the processor inside a retry loop; a yield under loom so the
/// model can make progress.
#[inline]
pub(crate) fn spin_hint() {
    #[cfg(not(loom))]
    std::hint::spin_loop();
    #[cfg(loom)]
    loom::thread::yield_now();
}

#[cfg(all(test, not(loom)))]
mod tests {
    use super::SpinMutex;

    #[test]
    fn cache_slots_are_unique_among_live_threads_and_reused_after_exit() {
        let barrier = std::sync::Barrier::new(4);
        let live: Vec<usize> = std::thread::scope(|s| {
            let hs: Vec<_> = (0..4)
                .map(|_| {
                    s.spawn(|| {
                        let slot = super::cache_slot();
                        barrier.wait(); // all four alive at once
                        assert_eq!(super::cache_slot(), slot, "stable for the thread's life");
                        slot
                    })
                })
                .collect();
            hs.into_iter().map(|h| h.join().unwrap()).collect()
        });
        let mut sorted = live.clone();
        sorted.sort_unstable();
        sorted.dedup();
        assert_eq!(sorted.len(), 4, "live threads share no slot: {live:?}");
        // The four exited: a new thread gets one of their slots back (other
        // tests' threads may take some, never a slot held by a live one).
        let again = std::thread::spawn(super::cache_slot).join().unwrap();
        assert!(again < super::NO_SLOT);
    }

    #[test]
    fn spin_mutex_excludes_concurrent_critical_sections() {
        // Smaller under Miri, which runs threads some 1,000 times slower.
        const N: u64 = if cfg!(miri) { 200 } else { 10_000 };
        let m = SpinMutex::new(0u64);
        std::thread::scope(|s| {
            for _ in 0..4 {
                s.spawn(|| {
                    for _ in 0..N {
                        // A read and a write apart: a lost update if two
                        // threads were inside at once.
                        let mut g = m.lock();
                        let v = *g;
                        *g = v + 1;
                    }
                });
            }
        });
        assert_eq!(*m.lock(), 4 * N);
    }
}
