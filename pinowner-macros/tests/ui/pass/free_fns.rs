//! Free functions with every argument form and common qualifiers.
#![deny(warnings, missing_docs, unsafe_code)]

use pinowner::{pin_tracked, site};

/// No arguments.
#[pin_tracked]
pub fn plain() -> &'static str {
    site::current().unwrap().name()
}

/// Empty parentheses and a trailing comma.
#[pin_tracked()]
fn empty_parens() {}

/// Every argument, in another order, with a trailing comma.
#[rustfmt::skip]
#[pin_tracked(name = "rx_refill", subsystem = "dma",)]
#[inline]
pub(crate) fn all_args(x: u32) -> u32 {
    x + 1
}

/// A raw identifier names the function without `r#`.
#[pin_tracked]
fn r#match() -> &'static str {
    site::current().unwrap().name()
}

/// Patterns in parameters and `mut` bindings.
#[pin_tracked(subsystem = "patterns")]
fn patterns((a, b): (u32, u32), mut c: u32) -> u32 {
    c += a;
    c + b
}

/// Never returns.
#[pin_tracked]
#[allow(dead_code)]
fn diverges() -> ! {
    loop {}
}

#[allow(unsafe_code)]
mod ffi {
    use pinowner::pin_tracked;

    /// `unsafe` and `extern "C"` functions.
    #[pin_tracked(subsystem = "ffi")]
    pub unsafe extern "C" fn callback(x: u32) -> u32 {
        x * 2
    }
}

#[allow(unsafe_code)]
fn main() {
    assert_eq!(plain(), concat!(module_path!(), "::plain"));
    empty_parens();
    assert_eq!(all_args(1), 2);
    assert_eq!(r#match(), concat!(module_path!(), "::match"));
    assert_eq!(patterns((1, 2), 3), 6);
    // SAFETY: `callback` has no preconditions.
    let doubled = unsafe { ffi::callback(2) };
    assert_eq!(doubled, 4);
    assert_eq!(site::current(), None);
    let names: Vec<_> = site::registered_sites().iter().map(|s| s.name()).collect();
    assert!(names.contains(&"rx_refill"));
}
