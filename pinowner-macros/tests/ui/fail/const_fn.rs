use pinowner::pin_tracked;

#[pin_tracked]
pub const fn table_size() -> usize {
    16
}

const SIZE: usize = table_size();

fn main() {
    let _ = SIZE;
}
