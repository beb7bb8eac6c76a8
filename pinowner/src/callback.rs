//! User code the arena calls while its own state is mid-change.
//!
//! The arena calls out to user code in one place: the `tracing` subscriber
//! that receives its events (a recorded event on an armed page, an arming,
//! each reservation step). Some of those calls happen where a panic
//! unwinding through the arena would leave its state half-changed: a page
//! whose last count is gone but which is not yet on a free list or in a
//! cache, a reservation window still isolated with its free blocks off the
//! lists, a thread's cache entered. So every call out runs behind
//! [`shielded`]: a panic in it is caught there, counted
//! ([`TrackerStats::callback_panics`](crate::tracker::TrackerStats)), and
//! the arena carries on. The panic hook has already printed the panic
//! message by then, so the user still sees it; with `panic = "abort"`
//! there is no unwinding and nothing to shield.

// Not part of the page state machine (a counter read only for reports), so
// it is a plain std atomic rather than one from `crate::sync`.
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};

static PANICS: AtomicU64 = AtomicU64::new(0);

/// Runs `f`, a call out to user code; a panic in it is caught and counted.
#[inline]
pub(crate) fn shielded(f: impl FnOnce()) {
    if std::panic::catch_unwind(std::panic::AssertUnwindSafe(f)).is_err() {
        PANICS.fetch_add(1, Relaxed);
    }
}

/// Panics caught in user callbacks so far, process-wide.
pub(crate) fn panics() -> u64 {
    PANICS.load(Relaxed)
}
