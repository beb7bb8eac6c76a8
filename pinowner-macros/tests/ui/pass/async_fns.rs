//! `async fn` in every position, with `?`, `impl Trait` returns and
//! borrowed arguments; their futures are `Send` when the body is.
#![deny(warnings)]

use std::fmt::Display;
use std::future::Future;
use std::pin::pin;
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

#[pin_tracked(subsystem = "io")]
async fn parse(s: &str) -> Result<u32, std::num::ParseIntError> {
    let n: u32 = s.parse()?;
    Ok(n)
}

#[pin_tracked]
async fn early(flag: bool) -> Option<&'static str> {
    if flag {
        return None;
    }
    site::current().map(|s| s.name())
}

#[pin_tracked]
async fn shows() -> impl Display {
    42
}

#[pin_tracked]
async fn unit(mut v: Vec<u8>) {
    v.push(1);
}

struct Queue {
    items: Vec<u32>,
}

impl Queue {
    #[pin_tracked(subsystem = "queue")]
    async fn sum(&self) -> u32 {
        self.items.iter().sum()
    }

    #[pin_tracked]
    async fn take(&mut self) -> Vec<u32> {
        std::mem::take(&mut self.items)
    }
}

trait Source {
    fn fetch(&self) -> impl Future<Output = u32> + Send;
}

impl Source for Queue {
    #[pin_tracked]
    async fn fetch(&self) -> u32 {
        self.items.len() as u32
    }
}

fn main() {
    assert_eq!(block_on(assert_send(parse("7"))), Ok(7));
    assert!(block_on(parse("x")).is_err());
    assert_eq!(block_on(early(true)), None);
    assert_eq!(block_on(early(false)), Some(concat!(module_path!(), "::early")));
    assert_eq!(block_on(shows()).to_string(), "42");
    block_on(unit(Vec::new()));
    let mut q = Queue { items: vec![1, 2, 3] };
    assert_eq!(block_on(assert_send(q.sum())), 6);
    assert_eq!(block_on(q.fetch()), 3);
    assert_eq!(block_on(q.take()), [1, 2, 3]);
    assert_eq!(site::current(), None);
}
