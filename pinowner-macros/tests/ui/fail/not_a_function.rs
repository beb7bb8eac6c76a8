use pinowner::pin_tracked;

#[pin_tracked]
struct Ring {
    head: u32,
}

#[pin_tracked(subsystem = "dma")]
static QUEUE: u32 = 0;

#[pin_tracked]
mod driver {}

#[pin_tracked]
impl Ring {
    fn head(&self) -> u32 {
        self.head
    }
}

trait Refill {
    #[pin_tracked]
    fn refill(&self);

    #[pin_tracked]
    fn new_ring() -> Self;
}

fn main() {
    let r = Ring { head: QUEUE };
    let _ = r.head();
}
