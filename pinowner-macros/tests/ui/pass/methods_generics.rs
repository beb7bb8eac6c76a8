//! Methods, trait implementations, default methods and generic functions.
#![deny(warnings)]

use std::fmt::Debug;

use pinowner::{pin_tracked, site};

struct Nic<T> {
    queue: Vec<T>,
}

impl<T: Clone + Debug> Nic<T> {
    #[pin_tracked(subsystem = "net")]
    fn new() -> Self {
        Nic { queue: Vec::new() }
    }

    #[pin_tracked]
    fn push(&mut self, item: T) -> &mut Self {
        self.queue.push(item);
        self
    }

    #[pin_tracked]
    fn first<'a>(&'a self) -> Option<&'a T>
    where
        T: 'a,
    {
        self.queue.first()
    }

    #[pin_tracked]
    fn into_queue(self: Box<Self>) -> Vec<T> {
        self.queue
    }
}

trait Driver {
    fn name(&self) -> &'static str;

    #[pin_tracked(subsystem = "default")]
    fn describe(&self) -> String {
        format!("{} under {}", self.name(), site::current().unwrap().name())
    }
}

impl<T> Driver for Nic<T> {
    #[pin_tracked(name = "nic_name")]
    fn name(&self) -> &'static str {
        site::current().unwrap().name()
    }
}

#[pin_tracked]
fn generic<T: Debug, const N: usize>(items: [T; N], extra: impl Debug) -> String {
    format!("{items:?} {extra:?}")
}

fn main() {
    let mut nic = Nic::<u8>::new();
    nic.push(1).push(2);
    assert_eq!(nic.first(), Some(&1));
    assert_eq!(nic.name(), "nic_name");
    assert_eq!(nic.describe(), concat!("nic_name under ", module_path!(), "::describe"));
    assert_eq!(Box::new(nic).into_queue(), [1, 2]);
    assert_eq!(generic([1, 2], "x"), "[1, 2] \"x\"");
}
