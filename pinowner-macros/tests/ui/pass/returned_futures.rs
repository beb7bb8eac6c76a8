//! Functions that return a future (`impl Future`, `Pin<Box<dyn Future>>`,
//! and `async fn` in an `#[async_trait]` impl): the returned future enters
//! the site on each poll, keeps its type, and stays `Send` when it was.
#![deny(warnings)]

use std::future::Future;
use std::pin::{pin, Pin};
use std::task::{Context, Poll, Waker};

use pinowner::{pin_tracked, site};

fn block_on<F: Future>(fut: F) -> F::Output {
    let mut fut = pin!(fut);
    match fut.as_mut().poll(&mut Context::from_waker(Waker::noop())) {
        Poll::Ready(v) => v,
        Poll::Pending => panic!("pending"),
    }
}

fn assert_send<T: Send>(t: T) -> T {
    t
}

fn current_name() -> Option<&'static str> {
    site::current().map(|s| s.name())
}

#[pin_tracked(name = "impl_future")]
fn impl_future() -> impl Future<Output = Option<&'static str>> + Send {
    async { current_name() }
}

/// An integer literal takes its type from `Output`.
#[pin_tracked]
fn typed_by_output() -> impl Future<Output = u8> {
    async { 7 }
}

/// A borrowed argument, an early `return` and a fully qualified path.
#[pin_tracked(name = "borrowing")]
fn borrowing(s: &str, early: bool) -> impl core::future::Future<Output = usize> + '_ {
    let n = s.len();
    if early {
        return std::future::ready(0);
    }
    std::future::ready(n + s.len())
}

#[pin_tracked(name = "boxed")]
fn boxed(x: u32) -> Pin<Box<dyn Future<Output = (u32, Option<&'static str>)> + Send>> {
    if x == 0 {
        return Box::pin(async { (0, current_name()) });
    }
    Box::pin(async move { (x, current_name()) })
}

/// Elided lifetimes in the output and a borrowed output.
#[pin_tracked]
fn boxed_borrow(s: &str) -> std::pin::Pin<std::boxed::Box<dyn std::future::Future<Output = &str> + '_>> {
    Box::pin(async move { s })
}

struct Queue {
    items: Vec<u32>,
}

trait Source {
    fn fetch(&self) -> impl Future<Output = (u32, Option<&'static str>)> + Send;
}

impl Source for Queue {
    #[pin_tracked(name = "fetch")]
    fn fetch(&self) -> impl Future<Output = (u32, Option<&'static str>)> + Send {
        let len = self.items.len() as u32;
        async move { (len, current_name()) }
    }
}

#[async_trait::async_trait]
trait Store {
    async fn load(&self, key: u32) -> Result<u32, String>;
    async fn names(&self) -> Vec<&'static str>;
}

#[async_trait::async_trait]
impl Store for Queue {
    #[pin_tracked(name = "load", subsystem = "store")]
    async fn load(&self, key: u32) -> Result<u32, String> {
        let i = usize::try_from(key).map_err(|e| e.to_string())?;
        self.items.get(i).copied().ok_or_else(|| format!("no item {key}"))
    }

    #[pin_tracked(name = "names")]
    async fn names(&self) -> Vec<&'static str> {
        site::current_chain().iter().map(|s| s.name()).collect()
    }
}

fn main() {
    // Built here, polled later: the site is current only while polled.
    let fut = assert_send(impl_future());
    assert_eq!(site::current(), None);
    assert_eq!(block_on(fut), Some("impl_future"));
    assert_eq!(block_on(typed_by_output()), 7u8);
    let s = String::from("abc");
    assert_eq!(block_on(borrowing(&s, false)), 6);
    assert_eq!(block_on(borrowing(&s, true)), 0);
    assert_eq!(block_on(assert_send(boxed(0))), (0, Some("boxed")));
    assert_eq!(block_on(boxed(3)), (3, Some("boxed")));
    assert_eq!(block_on(boxed_borrow(&s)), "abc");
    let q = Queue { items: vec![4, 5] };
    assert_eq!(block_on(assert_send(q.fetch())), (2, Some("fetch")));
    assert_eq!(block_on(assert_send(q.load(1))), Ok(5));
    assert_eq!(block_on(q.load(9)), Err("no item 9".to_string()));
    assert_eq!(block_on(q.names()), ["names"]);
    assert_eq!(site::current(), None);
}
