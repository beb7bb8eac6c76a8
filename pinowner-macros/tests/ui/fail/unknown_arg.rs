use pinowner::pin_tracked;

// A misspelt argument is an error on the argument; the function is still
// emitted (no "cannot find function" below).
#[pin_tracked(subsytem = "dma")]
fn refill() {}

#[pin_tracked(subsystem = "dma", level = 3)]
fn refill_2() {}

fn main() {
    refill();
    refill_2();
}
