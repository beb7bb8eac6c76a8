//! Shared by the loom model binaries.

/// Runs a loom model and prints how many interleavings it explored.
pub fn model(name: &str, f: impl Fn() + Sync + Send + 'static) {
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::Arc;
    let runs = Arc::new(AtomicUsize::new(0));
    let r = runs.clone();
    loom::model(move || {
        r.fetch_add(1, Ordering::Relaxed);
        f()
    });
    println!("loom model {name}: {} interleavings", runs.load(Ordering::Relaxed));
}
