//! Thread-local state through the shim (`loom::thread_local!` under loom,
//! where std's thread-locals would be shared by all model threads).
//!
//! Also the few process-wide globals that `'static` sites need. Those stay
//! std on both sides: a `static Site` needs a `const fn new` (loom's atomics
//! have none), and the site registry is report-side state that no model
//! checks and that no model thread ever holds across a loom operation.

/// A flag inside a `static` (a site's "registered" bit). std on both sides.
pub(crate) use std::sync::atomic::AtomicBool as ConstAtomicBool;
/// A lock inside a `static` (the site registry). std on both sides.
pub(crate) use std::sync::Mutex as ConstMutex;

/// Declares a thread-local with a `const` initializer: std's `thread_local!`
/// (no lazy-init check, no destructor registration when the type needs no
/// drop: one load from the thread block), or `loom::thread_local!` under loom.
///
/// ```ignore
/// crate::sync::thread_local_const! {
///     static CURRENT: Cell<u32> = const { Cell::new(0) };
/// }
/// ```
macro_rules! thread_local_const {
    ($(#[$attr:meta])* $vis:vis static $name:ident: $t:ty = const $init:block;) => {
        #[cfg(not(loom))]
        std::thread_local! {
            $(#[$attr])* $vis static $name: $t = const $init;
        }
        #[cfg(loom)]
        loom::thread_local! {
            $(#[$attr])* $vis static $name: $t = $init;
        }
    };
}

pub(crate) use thread_local_const;
