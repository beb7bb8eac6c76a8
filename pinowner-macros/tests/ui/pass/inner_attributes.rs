//! Inner attributes and inner doc comments in a tracked function's body.
#![deny(warnings)]

use std::future::Future;

use pinowner::{pin_tracked, site};

#[pin_tracked]
fn allows(unused: u32) -> Option<&'static str> {
    #![allow(unused_variables)]
    //! The body's own documentation.
    let also_unused = 1;
    site::current().map(|s| s.name())
}

#[pin_tracked(subsystem = "attrs")]
async fn async_allows(unused: u32) {
    #![allow(unused_variables)]
    let also_unused = 1;
}

#[pin_tracked]
fn returns_future(unused: u32) -> impl Future<Output = ()> {
    #![allow(unused_variables)]
    async {}
}

struct Nic;

impl Nic {
    #[pin_tracked]
    fn method(&self, unused: u32) {
        #![allow(unused_variables)]
        /*! A block inner doc comment. */
    }
}

fn main() {
    assert_eq!(allows(1), Some(concat!(module_path!(), "::allows")));
    drop(async_allows(1));
    drop(returns_future(1));
    Nic.method(1);
    assert_eq!(site::current(), None);
}
