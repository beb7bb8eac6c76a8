use pinowner::pin_tracked;

#[pin_tracked(subsystem = "dma", name = "a", subsystem = "net")]
fn refill() {}

#[pin_tracked(crate = ::pinowner, crate = ::pinowner)]
fn refill_2() {}

fn main() {
    refill();
    refill_2();
}
