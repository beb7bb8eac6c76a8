use pinowner::pin_tracked;

extern "C" {
    #[pin_tracked]
    fn abs(x: i32) -> i32;

    #[pin_tracked(subsystem = "ffi")]
    pub fn labs(x: i64) -> i64;

    #[pin_tracked]
    fn printf(format: *const u8, ...) -> i32;
}

fn main() {}
