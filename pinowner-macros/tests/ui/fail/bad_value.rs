use pinowner::pin_tracked;

#[pin_tracked(subsystem = dma)]
fn unquoted() {}

#[pin_tracked(name = 3)]
fn number() {}

#[pin_tracked(name = "")]
fn empty() {}

#[pin_tracked(subsystem)]
fn no_value() {}

#[pin_tracked(crate = "pinowner")]
fn crate_string() {}

#[pin_tracked(crate = ::pinowner<u8>)]
fn crate_generic() {}

#[pin_tracked(subsystem = "a" "b")]
fn two_literals() {}

#[pin_tracked(subsystem = "")]
fn empty_subsystem() {}

#[pin_tracked(crate = 5)]
fn crate_number() {}

fn main() {
    empty_subsystem();
    crate_number();
    unquoted();
    number();
    empty();
    no_value();
    crate_string();
    crate_generic();
    two_literals();
}
