//! Shared by the loom model binaries.

/// Runs a loom model and prints how many interleavings it explored.
///
/// The model's body runs in a loom thread with a 1 MiB stack: loom runs
/// its main thread on a 32 KiB coroutine stack, which building an arena
/// (its zones and caches made of loom's instrumented atomics) can exceed
/// depending on inlining. The main thread only waits for it (one more
/// thread, up to loom's limit of five).
pub fn model(name: &str, f: impl Fn() + Sync + Send + 'static) {
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::Arc;
    let runs = Arc::new(AtomicUsize::new(0));
    let r = runs.clone();
    let f = Arc::new(f);
    let mut builder = loom::model::Builder::new();
    builder.max_threads = loom::MAX_THREADS;
    builder.check(move || {
        r.fetch_add(1, Ordering::Relaxed);
        let f = f.clone();
        loom::thread::Builder::new().stack_size(1 << 20).spawn(move || f()).unwrap().join().unwrap();
    });
    println!("loom model {name}: {} interleavings", runs.load(Ordering::Relaxed));
}
