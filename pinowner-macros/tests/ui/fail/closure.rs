use pinowner::pin_tracked;

fn main() {
    #[pin_tracked]
    let refill = |pfn: usize| pfn + 1;
    let _ = refill(1);

    let drain = #[pin_tracked(subsystem = "dma")]
    move || 2;
    let _ = drain();
}
