//! Turns: first come, first served on one core. A task takes a turn synchronously, at the
//! moment its place in line is decided (a request read off a connection, a job taken off a
//! core's queue), and later waits until every earlier turn is over. Produce uses this twice:
//! a connection's produce requests post their appends in request order, and a partition's
//! appends run in the order they were posted, as Kafka keeps them.
//!
//! An async mutex alone does not do this: a waiter woken by an unlock can be overtaken by a
//! task that arrives in between, and two requests pipelined on one connection would land in
//! the log swapped.

use std::cell::{Cell, RefCell};
use std::collections::BTreeSet;
use std::rc::Rc;

use event_listener::Event;

/// A line of turns, handed out in order. Cheap to clone; all clones share the line.
#[derive(Clone, Default)]
pub struct Turns(Rc<Line>);

#[derive(Default)]
struct Line {
    next: Cell<u64>,
    serving: Cell<u64>,
    /// Turns dropped before they came up; skipped when reached.
    abandoned: RefCell<BTreeSet<u64>>,
    changed: Event,
}

impl Turns {
    /// The next place in line. Taking it does not wait.
    pub fn take(&self) -> Turn {
        let number = self.0.next.get();
        self.0.next.set(number + 1);
        Turn {
            line: self.0.clone(),
            number,
        }
    }
}

/// One place in line. Dropping it ends the turn, or gives up the place if it has not come.
pub struct Turn {
    line: Rc<Line>,
    number: u64,
}

impl Turn {
    /// Waits until every earlier turn is over.
    pub async fn wait(&self) {
        loop {
            if self.line.serving.get() == self.number {
                return;
            }
            let listener = self.line.changed.listen();
            if self.line.serving.get() == self.number {
                return;
            }
            listener.await;
        }
    }
}

impl Drop for Turn {
    fn drop(&mut self) {
        let line = &self.line;
        debug_assert!(line.serving.get() <= self.number);
        if line.serving.get() != self.number {
            line.abandoned.borrow_mut().insert(self.number);
            return;
        }
        let mut serving = self.number + 1;
        let mut abandoned = line.abandoned.borrow_mut();
        while abandoned.remove(&serving) {
            serving += 1;
        }
        drop(abandoned);
        line.serving.set(serving);
        line.changed.notify(usize::MAX);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::future::Future;
    use std::pin::pin;
    use std::task::{Context, Poll, Waker};

    fn ready(future: impl Future<Output = ()>) -> bool {
        let mut future = pin!(future);
        let mut cx = Context::from_waker(Waker::noop());
        future.as_mut().poll(&mut cx) == Poll::Ready(())
    }

    #[test]
    fn turns_come_in_the_order_they_were_taken() {
        let turns = Turns::default();
        let first = turns.take();
        let second = turns.take();
        let third = turns.take();
        assert!(!ready(third.wait()));
        assert!(!ready(second.wait()));
        assert!(ready(first.wait()));
        drop(first);
        assert!(ready(second.wait()));
        assert!(!ready(third.wait()));
        drop(second);
        assert!(ready(third.wait()));
    }

    #[test]
    fn an_abandoned_turn_is_skipped() {
        let turns = Turns::default();
        let first = turns.take();
        let second = turns.take();
        let third = turns.take();
        drop(second);
        assert!(!ready(third.wait()));
        drop(first);
        assert!(ready(third.wait()));
        drop(third);
        assert!(ready(turns.take().wait()));
    }
}
