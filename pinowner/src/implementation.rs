//! Design notes (documentation only).
//!
//! # The state word
//!
//! Each page has a 16-byte descriptor: a packed `AtomicU64` state word
//! (refs, pins, order, flags, generation — see the bit table in
//! `page::state`) and an owner slot. Counts of a block live in its head
//! descriptor, so a reference to any page keeps the whole block (the kernel's
//! folio rule), and allocating or freeing an order-9 block touches one
//! descriptor per buddy level, not 512.
//!
//! # Two ways to take a count
//!
//! - **From a handle** (`PageRef::clone`, `Block::pin`): the caller already
//!   holds the block, so it cannot be free. One `fetch_add` and one branch
//!   on the returned value (tracked, idle, exclusive, or an overflow guard
//!   bit), then a relaxed store of the acquirer into the owner slot.
//! - **By page number** (`get`, `pin`, `get_raw`): the page may be free or
//!   dying, so the add is a compare-and-swap that refuses a page that is not
//!   a live allocated head — the kernel's `get_page_unless_zero`. One
//!   read-modify-write when uncontended.
//!
//! A `PageRef` or `PagePin` keeps a pointer to its block's head
//! descriptor (valid while the arena it holds lives) and indexes its own
//! page's descriptor without a bounds check (a handle's pages are pages of
//! its arena by construction). On this VM any load between two locked
//! instructions waits for the first to finish, so the chain of loads from
//! the handle to the state word is what a get+put pays beyond the two
//! read-modify-writes: one load from the handle, not three (handle, arena,
//! descriptor table).
//!
//! Releases are one compare-and-swap that drops a count (and bumps the
//! generation when the released count was the latest acquisition). The last release (refs and pins both zero) is
//! followed by an `Acquire` fence before the block is freed, exactly as in
//! `Arc`.
//!
//! # Attribution without a lock
//!
//! The acquirer writes the owner slot after its count change, tagged with
//! the generation that change produced. The generation moves on every
//! acquisition and when the latest acquisition is released; a handle keeps
//! the generation its acquisition produced, and its release compares it
//! with the state word's inside the compare-and-swap that drops the count.
//! A reader attributes the page only when the slot's generation equals the
//! state word's: then the slot's writer is the latest acquirer and still
//! holds the page. A buffer pool dropping its reference does not hide the
//! DMA pin taken after it. Otherwise the holder is counted as unattributed —
//! never guessed. A raw release, which cannot tell, always moves the
//! generation.
//!
//! An earlier design cleared the slot from the releasing thread (load the
//! slot, clear it if still ours, then `fetch_sub`). The `loom_site` model
//! found an execution where the final reader still named a departed
//! holder; deciding inside the state word's own read-modify-write has no
//! such window, at the price of a compare-and-swap instead of a `fetch_sub`.
//!
//! # Exclusive borrows
//!
//! `Block::bytes_mut` sets `EXCLUSIVE` with a compare-and-swap that requires
//! the block's own reference to be the only count; its `BlockBytesMut` borrows
//! the block mutably and clears the bit when dropped. Meanwhile every new
//! holder is refused: by page number, `is_live_head` excludes the bit; from
//! a handle, the bit is in `ACQUIRE_SLOW`, and the slow path takes the add
//! back. A handle other than the block cannot exist then, so in practice
//! the handle path meets the bit only after a leaked `BlockBytesMut`, and the
//! rule is the `RefCell` one: a leaked guard keeps the loan until the block
//! is freed (freeing clears the bit). The block's own shared view stays
//! available: a leaked guard's borrow has ended, so nothing it lent can be
//! used again.
//!
//! # Raw counts cannot steal
//!
//! Raw releases go through a ledger of raw counts per page, so a misplaced
//! `put_raw` fails with an error instead of dropping a count a handle owns.
//! That is what makes the raw API safe: without it, a stray put could free a
//! page under a live `Block` and let two owners alias its bytes.
//!
//! # Free lists
//!
//! Buddy lists per order are `Vec`s of head page numbers. A free head's owner
//! slot stores its index in its list (tagged so it never decodes as an
//! acquirer), giving O(1) removal of a buddy while coalescing.
//! A bitmap of non-empty orders finds the list to split from without a scan.
//!
//! # Who writes a free page's word
//!
//! Split, merge, allocate and free-under-the-lock are a load and a plain
//! store, not a compare-and-swap loop: while a page is free (or a head whose
//! last count is gone), its word changes only under the zone lock, or by
//! operations that cannot overlap that code (compare-and-swaps from live
//! words — arming and disarming among them — and a cache owner's own
//! allocation inside its cache). `alloc::buddy` lists every writer.
//!
//! # The per-thread cache path
//!
//! An order-0 alloc+free through a cache makes one read-modify-write: the
//! release. Each thread owns the shard of its cache slot (slots are unique
//! among live threads and recycled), like a kernel per-CPU list its CPU,
//! and enters it through a `sync::BiasedLock`: two plain stores and a load,
//! with a compiler fence where the remote side pays with
//! `membarrier(PRIVATE_EXPEDITED)` (the kernel's `drain_all_pages` sends
//! IPIs for the same reason). The last release of a cached-zone order-0
//! page outside an isolated window makes the word `FREE | PCP` in the
//! release's own compare-and-swap, so isolation is checked atomically with
//! the free; the owner then pushes the page. Allocation pops and marks the
//! word with a plain store inside the cache, which is why a reservation
//! writes `ISOLATED` only holding the remote side of every cache of the
//! zone (lock order: caches, then zone). The `loom` models
//! `a_page_freed_into_a_cache_never_coalesces_with_a_concurrent_drain` and
//! `cache_alloc_and_free_against_a_reservation_keep_isolation_exact` fail
//! if the free leaves out `PCP`, if a reservation writes `ISOLATED` without
//! the caches (a page leaks), or if the owner's fence is left out (loom
//! sees the owner and a drain inside one cache at once; under loom both
//! sides use `fence(SeqCst)`, which is what `membarrier` stands for).
//!
//! The owner clears `busy` from a drop guard, so a panic inside its
//! critical section (only a broken internal invariant can raise one there)
//! still lets remotes in, rather than leaving every later drain and
//! reservation of the zone spinning. The lock is not poisoned: the lists
//! stay valid `Vec`s, and at worst a block being moved at the panic is
//! missing from them: lost to the allocator, and, reading as a cached free
//! block in no cache, taken by a reservation whose window covers it for a
//! free in flight, which it waits for.
//!
//! # Tracking armed pages
//!
//! Arming sets `TRACKED` in the head's state word with a compare-and-swap
//! that requires a live block (counts held, not free), after writing the
//! arming's number into the per-page side table. Every count change is a
//! read-modify-write of the same word, so it sees `TRACKED` exactly when it
//! comes after the arming in that word's modification order; the recording
//! path then issues an `Acquire` fence, which — the arming swap being a
//! release and the intervening read-modify-writes continuing its release
//! sequence — makes the side table's write visible. Disarming is the same
//! swap clearing the bit on a live block; the last put sees `TRACKED` in the
//! word its own swap replaced and records `Disarm(Freed)`, and a disarm
//! request that comes later finds the block not live. Hence one disarm per
//! arming (`loom_tracker`).
//!
//! A failed reservation arms its busy blocks before rolling back, still
//! under the zone lock: a busy block freed after the test is isolated and
//! unlisted, so it cannot be reallocated and armed for a new owner.
//!
//! Events go into a bounded lock-free queue (one sequence number per slot);
//! readers drain it into the history under their own lock, so rendering a
//! report never stalls a recording thread. A full queue or history drops the
//! event and counts it, per page and in total.
//!
//! `reserve_contig_wait` reads the release counter of armed blocks before
//! each attempt and sleeps on a condition variable until it moves. Releases
//! bump the counter under the waiters' lock, so no wake-up falls between a
//! waiter's check and its sleep; a holder that let go between the test and
//! the arming (not recorded) is caught by re-reading the window before
//! sleeping. The `loom_tracker` wait model, whose condition variable has no
//! timeout, turns any lost wake-up into a deadlock — it found that a block
//! whose last count was dropped but whose freeing thread was still waiting
//! for the zone lock counted as busy, so a reservation could fail (and a
//! waiter sleep forever) on the arena's own bookkeeping. Such a block is now
//! treated like a page in flight to a cache: the reservation lets the
//! freeing thread finish and tests again.
