//! Compile-time behaviour of `#[pin_tracked]`: what it accepts
//! (`ui/pass`, which also run) and the errors it gives (`ui/fail`, checked
//! against their `.stderr`). Regenerate with `TRYBUILD=overwrite` and review.

#[test]
fn ui() {
    let t = trybuild::TestCases::new();
    t.pass("tests/ui/pass/*.rs");
    t.compile_fail("tests/ui/fail/*.rs");
}
