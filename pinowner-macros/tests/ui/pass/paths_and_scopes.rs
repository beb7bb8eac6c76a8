//! `crate = path`, a module without the prelude, and `pin_scope!`.
#![deny(warnings)]

mod reexport {
    pub use pinowner as inner;
}

#[pinowner::pin_tracked(crate = ::pinowner)]
fn absolute() {}

#[reexport::inner::pin_tracked(crate = crate::reexport::inner, subsystem = "re")]
fn through_reexport() -> Option<&'static str> {
    reexport::inner::site::current().and_then(|s| s.subsystem())
}

mod no_prelude {
    #![no_implicit_prelude]

    #[::pinowner::pin_tracked(subsystem = "bare")]
    pub fn bare() -> ::core::option::Option<&'static str> {
        ::pinowner::site::current().and_then(|s| s.subsystem())
    }

    #[::pinowner::pin_tracked]
    pub async fn bare_async(x: u32) -> ::core::result::Result<u32, ()> {
        ::core::result::Result::Ok(x)
    }
}

fn with_scope(x: u32) -> Result<u32, String> {
    let y = pinowner::pin_scope!("scoped", subsystem = "blk", {
        if x == 0 {
            return Err("zero".to_string());
        }
        x * 2
    });
    let z = pinowner::pin_scope!(concat!("scoped", "_2"), { y + 1 },);
    Ok(z)
}

fn main() {
    absolute();
    assert_eq!(through_reexport(), Some("re"));
    assert_eq!(no_prelude::bare(), Some("bare"));
    drop(no_prelude::bare_async(1));
    assert_eq!(with_scope(2), Ok(5));
    assert_eq!(with_scope(0), Err("zero".to_string()));
    assert_eq!(pinowner::site::current(), None);
}
