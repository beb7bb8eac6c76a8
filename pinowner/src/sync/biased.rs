//! A lock biased towards one owner thread, and the asymmetric barrier it
//! stands on.
//!
//! A per-thread page cache is used almost only by its own thread; other
//! threads reach into it rarely (a reservation draining it, statistics). A
//! [`BiasedLock`] makes the owner's side free of read-modify-writes: the
//! owner announces itself with a plain store to `busy`, then checks
//! `revoked`; a remote sets `revoked`, then checks `busy`. That is Dekker's
//! store-then-load pattern on both sides, which needs a full barrier between
//! each side's store and load. The owner's barrier is only a compiler fence;
//! the remote pays for both with `membarrier(MEMBARRIER_CMD_PRIVATE_EXPEDITED)`,
//! which makes every running thread of the process execute a full barrier
//! (the kernel's IPI) before it returns. So either the owner's `busy` store
//! is visible to the remote's load, and the remote waits for the owner to
//! leave, or the remote's `revoked` store is visible to the owner's load, and
//! the owner takes the remote side's spin lock instead.
//!
//! Where `membarrier` is not available (not Linux, or an old or restricted
//! kernel: registration fails), and under loom and Miri, both sides use
//! `fence(SeqCst)`: the same protocol with a symmetric barrier, which is
//! exactly what loom can check (`membarrier` is specified as a `SeqCst`
//! fence run on every thread at once). The choice is made once per lock
//! set, before any owner uses it, and never changes ([`Barrier`]).
//!
//! Costs on the 2-core VM of `BENCHMARKS.md`: the owner side is two plain
//! stores, one load and no locked instruction; a remote pays one
//! `membarrier` (about 0.2 µs) per batch of locks it takes.

use core::sync::atomic::compiler_fence;

use super::Ordering::{Acquire, Relaxed, Release, SeqCst};
use super::{fence, AtomicBool, SpinGuard, SpinMutex, UnsafeCell};

/// Which barrier a set of biased locks uses. Fixed before any lock of the
/// set is used (it lives beside the locks and is never written again), so
/// both sides of every lock always agree.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Barrier {
    /// Owner: compiler fence; remote: `membarrier`.
    Asymmetric,
    /// Both: `fence(SeqCst)`.
    Symmetric,
}

impl Barrier {
    /// The best barrier this process can have: registers the process for
    /// private expedited `membarrier` (once; later calls are free) and
    /// returns [`Barrier::Asymmetric`] if that worked.
    pub(crate) fn best() -> Barrier {
        if membarrier::registered() {
            Barrier::Asymmetric
        } else {
            Barrier::Symmetric
        }
    }

    /// The owner's side: between its `busy` store and its `revoked` load.
    #[inline(always)]
    fn light(self) {
        match self {
            Barrier::Asymmetric => compiler_fence(SeqCst),
            Barrier::Symmetric => fence(SeqCst),
        }
    }

    /// The remote's side: between its `revoked` stores and its `busy` loads.
    fn heavy(self) {
        match self {
            Barrier::Asymmetric => membarrier::run(),
            Barrier::Symmetric => fence(SeqCst),
        }
    }
}

#[cfg(all(target_os = "linux", not(loom), not(miri)))]
mod membarrier {
    use std::sync::OnceLock;

    // From <linux/membarrier.h>.
    const CMD_QUERY: libc::c_long = 0;
    const CMD_PRIVATE_EXPEDITED: libc::c_long = 1 << 3;
    const CMD_REGISTER_PRIVATE_EXPEDITED: libc::c_long = 1 << 4;

    fn call(cmd: libc::c_long) -> libc::c_long {
        // SAFETY: membarrier takes two integers (and a CPU id unused without
        // the RSEQ commands); it reads and writes no user memory.
        unsafe { libc::syscall(libc::SYS_membarrier, cmd, 0 as libc::c_long, 0 as libc::c_long) }
    }

    /// True once this process is registered for private expedited barriers.
    pub(super) fn registered() -> bool {
        static REGISTERED: OnceLock<bool> = OnceLock::new();
        *REGISTERED.get_or_init(|| {
            if std::env::var_os("PINOWNER_NO_MEMBARRIER").is_some() {
                return false;
            }
            let supported = call(CMD_QUERY);
            supported >= 0 && supported & CMD_PRIVATE_EXPEDITED != 0 && call(CMD_REGISTER_PRIVATE_EXPEDITED) == 0
        })
    }

    /// A full barrier on every running thread of the process.
    ///
    /// # Panics
    ///
    /// If the kernel refuses a command it accepted the registration for: the
    /// owners rely on it, so going on would be unsound.
    pub(super) fn run() {
        let r = call(CMD_PRIVATE_EXPEDITED);
        assert!(r == 0, "membarrier(PRIVATE_EXPEDITED) failed after registration: {}", std::io::Error::last_os_error());
    }
}

#[cfg(not(all(target_os = "linux", not(loom), not(miri))))]
mod membarrier {
    pub(super) fn registered() -> bool {
        false
    }

    pub(super) fn run() {
        unreachable!("no asymmetric barrier without membarrier")
    }
}

/// A value used almost only by one owner thread: the owner enters and
/// leaves without a read-modify-write; any other thread goes through a spin
/// lock and waits for the owner to leave. See the module docs for the
/// protocol.
///
/// The owner is not recorded: callers guarantee that at most one thread at a
/// time uses [`with_owner`](Self::with_owner) (a cache slot is unique among
/// live threads, [`cache_slot`](super::cache_slot)).
pub(crate) struct BiasedLock<T> {
    /// The owner is inside (fast side).
    busy: AtomicBool,
    /// A remote holds the lock or is taking it.
    revoked: AtomicBool,
    /// Serialises remotes, and an owner that found `revoked` set.
    remote: SpinMutex<()>,
    value: UnsafeCell<T>,
}

// One thread at a time reaches the value: the owner inside `with_owner`
// (remotes excluded by `busy`, or under `remote`) or one remote holding
// `remote` after the owner left; each hand-over is Release/Acquire.
// SAFETY: so, as with a `Mutex`, the value only moves between threads and
// `T: Send` suffices.
unsafe impl<T: Send> Sync for BiasedLock<T> {}

impl<T> core::fmt::Debug for BiasedLock<T> {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("BiasedLock")
            .field("busy", &self.busy.load(Relaxed))
            .field("revoked", &self.revoked.load(Relaxed))
            .finish_non_exhaustive()
    }
}

impl<T> BiasedLock<T> {
    pub(crate) fn new(value: T) -> Self {
        BiasedLock {
            busy: AtomicBool::new(false),
            revoked: AtomicBool::new(false),
            remote: SpinMutex::new(()),
            value: UnsafeCell::new(value),
        }
    }

    /// Runs `f` on the value as the owner.
    ///
    /// If `f` panics, the owner still leaves (a guard clears `busy` while
    /// unwinding, as the remote side's spin guard unlocks), so remotes and
    /// the owner's next entry go on; the lock is not poisoned. The value is
    /// left as `f` left it: whatever `f` had changed stays changed. For the
    /// thread caches that means valid lists (a `Vec` stays consistent when
    /// a push or a drain unwinds), from which a block being moved at the
    /// panic may be missing; the cache code panics only on a broken
    /// internal invariant.
    ///
    /// # Safety
    ///
    /// No other thread may be inside `with_owner` on this lock at the same
    /// time, and `f` must not take this lock again (as owner or remote).
    /// `barrier` must be the one every user of this lock passes.
    #[inline(always)]
    pub(crate) unsafe fn with_owner<R>(&self, barrier: Barrier, f: impl FnOnce(&mut T) -> R) -> R {
        // A remote holds the lock or is taking it: step out of its way and
        // queue on its spin lock (held until after `_leave`). `f` appears
        // once, below, for both cases: inlined into two branches, its
        // captures would become a structure in memory built on the fast
        // path too.
        let _queued = if self.announce(barrier) { None } else { Some(self.owner_queue()) };
        // The one store that ends the stay, on return and on unwind alike
        // (after queueing, `busy` is already clear: storing it again
        // changes nothing a remote can see).
        let _leave = Leave(&self.busy);
        // SAFETY: either `busy` is set and was visible before any remote
        // that could still enter read it (the barrier pair), so remotes wait
        // for us; the Acquire load in `announce` (`revoked` false, last written by a
        // leaving remote's Release) makes every remote's earlier accesses
        // happen before ours. Or we hold `remote`, which every remote holds
        // for its whole stay, and are not on the fast side. The caller
        // guarantees no second owner.
        self.value.with_mut(|v| f(unsafe { &mut *v }))
    }

    /// [`with_owner`](Self::with_owner) without queueing: runs `f` as the
    /// owner and returns its result if no remote holds the lock or is
    /// taking it; otherwise steps out at once (clearing `busy`, so the
    /// remote's wait ends), does not run `f`, and returns `None`. The
    /// caller then takes its general path, which queues behind the remote.
    ///
    /// For the allocator's fast paths: no guard of the queue lives across
    /// `f`, so a fast path that inlines this keeps nothing in memory for it.
    ///
    /// # Safety
    ///
    /// As for [`with_owner`](Self::with_owner).
    #[inline(always)]
    pub(crate) unsafe fn try_owner<R>(&self, barrier: Barrier, f: impl FnOnce(&mut T) -> R) -> Option<R> {
        if !self.announce(barrier) {
            // Out of the remote's way, having touched nothing.
            self.busy.store(false, Release);
            return None;
        }
        let _leave = Leave(&self.busy);
        // SAFETY: `busy` is set and was visible before any remote that could
        // still enter read it (the barrier pair), so remotes wait for us; the
        // Acquire load in `announce` (`revoked` false, last written by a leaving
        // remote's Release) makes every remote's earlier accesses happen
        // before ours. The caller guarantees no second owner.
        Some(self.value.with_mut(|v| f(unsafe { &mut *v })))
    }

    /// The owner's entry: sets `busy`, then (after the light barrier) reads
    /// `revoked`. True if no remote holds the lock or is taking it: the
    /// owner is in. False: a remote is there, and `busy` is still set (the
    /// caller steps out).
    #[inline(always)]
    fn announce(&self, barrier: Barrier) -> bool {
        self.busy.store(true, Relaxed);
        barrier.light();
        !self.revoked.load(Acquire)
    }

    /// The owner's side when a remote holds the lock or is taking it: step
    /// out of its way (clearing `busy`, so the remote's wait ends) and queue
    /// on the spin lock like a remote (without revoking: no owner is
    /// inside). Returns the spin lock's guard.
    #[cold]
    #[inline(never)]
    fn owner_queue(&self) -> SpinGuard<'_, ()> {
        self.busy.store(false, Release);
        self.remote.lock()
    }

    /// Takes every lock of `locks` as a remote, in order, with one heavy
    /// barrier for the lot; the returned guards hold them until dropped.
    pub(crate) fn lock_all<'a>(locks: impl IntoIterator<Item = &'a Self>, barrier: Barrier) -> Vec<RemoteGuard<'a, T>>
    where
        T: 'a,
    {
        let guards: Vec<RemoteGuard<'a, T>> = locks
            .into_iter()
            .map(|lock| {
                let g = lock.remote.lock();
                lock.revoked.store(true, Relaxed);
                RemoteGuard { lock, _remote: g }
            })
            .collect();
        if guards.is_empty() {
            return guards;
        }
        barrier.heavy();
        for g in &guards {
            // The owner is inside for a push or a pop, or a batch against
            // the buddy lists; if it was preempted there, let it run.
            let mut backoff = super::Backoff::default();
            while g.lock.busy.load(Acquire) {
                backoff.snooze();
            }
        }
        guards
    }
}

/// The owner's exit from its fast side: dropping it clears `busy` with
/// Release (so a remote's Acquire load that sees it cleared sees every
/// access the owner made inside), also when the closure unwinds.
struct Leave<'a>(&'a AtomicBool);

impl Drop for Leave<'_> {
    #[inline(always)]
    fn drop(&mut self) {
        self.0.store(false, Release);
    }
}

/// A remote's hold on a [`BiasedLock`]; the owner stays out until it drops.
pub(crate) struct RemoteGuard<'a, T> {
    lock: &'a BiasedLock<T>,
    _remote: SpinGuard<'a, ()>,
}

impl<T> RemoteGuard<'_, T> {
    /// Runs `f` on the value.
    pub(crate) fn with<R>(&mut self, f: impl FnOnce(&mut T) -> R) -> R {
        // SAFETY: we hold `remote` and saw `busy` false after revoking, with
        // the barrier between: the owner is out and stays out (it sees
        // `revoked` and queues on `remote`) until we drop.
        self.lock.value.with_mut(|v| f(unsafe { &mut *v }))
    }
}

impl<T> Drop for RemoteGuard<'_, T> {
    fn drop(&mut self) {
        // Before the spin lock is released (fields drop after this body);
        // Release pairs with the owner's Acquire load of `revoked`.
        self.lock.revoked.store(false, Release);
    }
}

#[cfg(all(test, not(loom)))]
mod tests {
    use super::*;

    /// A pause between a critical section's read and write, so that two
    /// threads inside at once lose an update.
    fn widen() {
        for _ in 0..20 {
            core::hint::spin_loop();
        }
    }

    /// One owner and two remotes add to a counter in read-then-write
    /// steps: a lost update would show two of them inside at once. Run
    /// with both barriers (the asymmetric one where membarrier works).
    /// Without the remote's barrier one round failed one run in three on
    /// the 2-core VM, so the tests run six; loom's models are the proof,
    /// this is the real-thread check.
    ///
    /// With `try_first`, the owner enters as the allocator's fast paths do:
    /// [`try_owner`](BiasedLock::try_owner) first, and `with_owner` (which
    /// queues) only when a remote made it step out.
    fn owner_and_remotes_exclude_each_other(barrier: Barrier, try_first: bool) {
        // Smaller under Miri, which runs threads some 1,000 times slower.
        const N: u64 = if cfg!(miri) { 200 } else { 20_000 };
        let lock = BiasedLock::new(0u64);
        let add = |v: &mut u64| {
            let x = *v;
            widen();
            *v = x + 1;
        };
        std::thread::scope(|s| {
            s.spawn(|| {
                for _ in 0..N {
                    // SAFETY: this is the only thread calling `try_owner`
                    // or `with_owner`, one at a time.
                    let done = try_first && unsafe { lock.try_owner(barrier, add) }.is_some();
                    if !done {
                        // SAFETY: as above.
                        unsafe { lock.with_owner(barrier, add) };
                    }
                }
            });
            for _ in 0..2 {
                s.spawn(|| {
                    for _ in 0..N / 4 {
                        let mut g = BiasedLock::lock_all([&lock], barrier);
                        g[0].with(|v| {
                            let x = *v;
                            widen();
                            *v = x + 1;
                        });
                    }
                });
            }
        });
        let mut g = BiasedLock::lock_all([&lock], barrier);
        assert_eq!(g[0].with(|v| *v), N + 2 * (N / 4));
    }

    #[test]
    fn a_biased_lock_excludes_owner_and_remotes_with_the_best_barrier() {
        for _ in 0..if cfg!(miri) { 1 } else { 6 } {
            owner_and_remotes_exclude_each_other(Barrier::best(), false);
        }
    }

    #[test]
    fn a_biased_lock_excludes_owner_and_remotes_with_symmetric_fences() {
        for _ in 0..if cfg!(miri) { 1 } else { 6 } {
            owner_and_remotes_exclude_each_other(Barrier::Symmetric, false);
        }
    }

    /// The fast paths' entry: an owner that tries first and queues only
    /// after stepping out still excludes the remotes, with either barrier,
    /// and nothing it or they did is lost.
    #[test]
    fn an_owner_trying_first_steps_out_for_remotes_and_still_excludes_them() {
        for barrier in [Barrier::best(), Barrier::Symmetric] {
            for _ in 0..if cfg!(miri) { 1 } else { 6 } {
                owner_and_remotes_exclude_each_other(barrier, true);
            }
        }
    }

    /// An owner whose closure panics must still leave: a remote taking the
    /// lock afterwards finishes (it would spin forever on a `busy` left
    /// set), and the owner can enter again. Run on a thread with a timeout,
    /// so a regression fails instead of hanging.
    fn a_panicking_owner_leaves_the_lock_usable(barrier: Barrier) {
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let lock = BiasedLock::new(vec![1u32, 2, 3]);
            let unwound = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                // SAFETY: this is the only thread calling `with_owner`.
                unsafe {
                    lock.with_owner(barrier, |v| {
                        v.push(4);
                        panic!("inside the owner's critical section");
                    })
                }
            }));
            assert!(unwound.is_err());
            let seen = std::thread::scope(|s| {
                s.spawn(|| {
                    let mut g = BiasedLock::lock_all([&lock], barrier);
                    g[0].with(|v| v.clone())
                })
                .join()
                .unwrap()
            });
            // SAFETY: as above; the remote has left.
            let len = unsafe { lock.with_owner(barrier, |v| v.len()) };
            tx.send((seen, len)).unwrap();
        });
        let (seen, len) =
            rx.recv_timeout(std::time::Duration::from_secs(10)).expect("a remote spun on a panicked owner's `busy`");
        assert_eq!(seen, [1, 2, 3, 4], "the value is left as the closure left it");
        assert_eq!(len, 4);
    }

    #[test]
    fn a_panicking_owner_leaves_the_lock_usable_with_the_best_barrier() {
        a_panicking_owner_leaves_the_lock_usable(Barrier::best());
    }

    #[test]
    fn a_panicking_owner_leaves_the_lock_usable_with_symmetric_fences() {
        a_panicking_owner_leaves_the_lock_usable(Barrier::Symmetric);
    }

    #[cfg(all(target_os = "linux", not(miri)))]
    #[test]
    fn membarrier_is_used_where_the_kernel_has_it() {
        // Every Linux since 4.14 has private expedited membarrier; a
        // sandbox that filters the call falls back (and says so here).
        let best = Barrier::best();
        if std::env::var_os("PINOWNER_NO_MEMBARRIER").is_none() {
            assert_eq!(best, Barrier::Asymmetric, "membarrier unavailable: caches fall back to SeqCst fences");
        }
    }
}
