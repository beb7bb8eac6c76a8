//! User items named like the generated ones stay the user's, in the body
//! of every kind of tracked function.
#![deny(warnings)]

use std::future::Future;

use pinowner::{pin_tracked, site};

static __PINOWNER_SITE: u32 = 7;
#[allow(non_upper_case_globals)]
static __pinowner_site: u32 = 8;
#[allow(non_upper_case_globals)]
const __pinowner_guard: u32 = 9;
#[allow(non_camel_case_types)]
struct __pinowner_ret;
#[allow(non_camel_case_types)]
struct __pinowner_fut;

#[pin_tracked]
fn plain() -> u32 {
    __PINOWNER_SITE + __pinowner_site
}

#[pin_tracked]
fn boxed() -> std::pin::Pin<Box<dyn Future<Output = u32>>> {
    Box::pin(async { __PINOWNER_SITE + __pinowner_guard })
}

#[pin_tracked]
async fn in_async() -> u32 {
    let _ = (__pinowner_ret, __pinowner_fut);
    __PINOWNER_SITE + __pinowner_guard
}

#[pin_tracked]
fn in_future() -> impl Future<Output = u32> {
    let x = __PINOWNER_SITE;
    async move { x + __pinowner_site }
}

fn block_on<F: Future>(fut: F) -> F::Output {
    let mut fut = std::pin::pin!(fut);
    match fut.as_mut().poll(&mut std::task::Context::from_waker(std::task::Waker::noop())) {
        std::task::Poll::Ready(v) => v,
        std::task::Poll::Pending => panic!("pending"),
    }
}

fn main() {
    assert_eq!(plain(), 15);
    assert_eq!(block_on(in_async()), 16);
    assert_eq!(block_on(in_future()), 15);
    assert_eq!(block_on(boxed()), 16);
    assert_eq!(site::current(), None);
}
