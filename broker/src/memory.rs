//! The broker-wide bound on request bytes in flight (`queued.max.request.bytes`), Kafka's
//! memory pool under thread-per-core: a connection takes a permit for a frame's length before
//! it reads the body, and gives it back once the request no longer needs its bytes. As in
//! Kafka, a frame is let in while the pool holds less than its limit, whatever its size, so
//! the pool can run over by one frame and a large frame is never starved by small ones.
//! When the pool is spent, readers wait for a permit; nothing already read is failed.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use event_listener::Event;

#[derive(Debug)]
pub struct RequestMemory {
    limit: usize,
    used: AtomicUsize,
    freed: Event,
}

/// Bytes of the pool held by one request until dropped.
#[derive(Debug)]
pub struct Permit {
    pool: Arc<RequestMemory>,
    bytes: usize,
}

impl RequestMemory {
    pub fn new(limit: usize) -> Arc<Self> {
        Arc::new(Self {
            limit,
            used: AtomicUsize::new(0),
            freed: Event::new(),
        })
    }

    pub fn limit(&self) -> usize {
        self.limit
    }

    /// Bytes held by requests now.
    pub fn used(&self) -> usize {
        self.used.load(Ordering::Relaxed)
    }

    /// Takes `bytes` while the pool holds less than its limit, without waiting.
    fn try_take(self: &Arc<Self>, bytes: usize) -> Option<Permit> {
        self.used
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |used| {
                (used < self.limit).then(|| used.saturating_add(bytes))
            })
            .ok()
            .map(|_| Permit {
                pool: self.clone(),
                bytes,
            })
    }

    /// Takes `bytes`, waiting while the pool cannot hold them.
    pub async fn take(self: &Arc<Self>, bytes: usize) -> Permit {
        loop {
            if let Some(permit) = self.try_take(bytes) {
                return permit;
            }
            let freed = self.freed.listen();
            if let Some(permit) = self.try_take(bytes) {
                return permit;
            }
            freed.await;
        }
    }
}

impl Drop for Permit {
    fn drop(&mut self) {
        self.pool.used.fetch_sub(self.bytes, Ordering::AcqRel);
        self.pool.freed.notify(usize::MAX);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn permits_are_taken_below_the_limit_and_a_freed_one_lets_a_waiter_in() {
        let pool = RequestMemory::new(100);
        let first = pool.try_take(60).expect("below the limit");
        let second = pool
            .try_take(50)
            .expect("still below: the pool may run over by one");
        assert_eq!(pool.used(), 110);
        assert!(pool.try_take(1).is_none());
        let waiter = {
            let pool = pool.clone();
            std::thread::spawn(move || block_on(pool.take(500)))
        };
        drop(first);
        let third = waiter.join().expect("waiter");
        assert_eq!(pool.used(), 550);
        drop((second, third));
        assert_eq!(pool.used(), 0);
    }

    #[test]
    fn a_frame_larger_than_the_pool_is_not_starved_by_small_ones() {
        let pool = RequestMemory::new(100);
        let small = pool.try_take(10).expect("fits");
        let big = pool
            .try_take(500)
            .expect("the pool holds less than its limit");
        assert!(pool.try_take(1).is_none());
        drop((small, big));
        assert_eq!(pool.used(), 0);
    }

    fn block_on<F: std::future::Future>(future: F) -> F::Output {
        compio::runtime::Runtime::new()
            .expect("runtime")
            .block_on(future)
    }
}
