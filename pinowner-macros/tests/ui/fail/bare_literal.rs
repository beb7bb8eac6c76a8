use pinowner::pin_tracked;

#[pin_tracked("dma")]
fn refill() {}

#[pin_tracked(name = "rx", "dma")]
fn refill_2() {}

fn main() {
    refill();
    refill_2();
}
