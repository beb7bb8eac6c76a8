use pinowner::pin_tracked;

// A misspelt argument is an error on the argument; the function is still
// emitted (no "cannot find function" below).
#[pin_tracked(subsytem = "dma")]
fn refill() {}

#[pin_tracked(subsystem = "dma", level = 3)]
fn refill_2() {}

#[pin_tracked(nmae = "rx")]
fn refill_3() {}

#[pin_tracked(krate = ::pinowner)]
fn refill_4() {}

fn main() {
    refill_3();
    refill_4();
    refill();
    refill_2();
}
