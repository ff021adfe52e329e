//! The broker-wide bound on request bytes in flight (`queued.max.request.bytes`), Kafka's
//! memory pool under thread-per-core: a connection takes a permit for a frame's length before
//! it reads the body, and the permit is given back once the request has been handled. When
//! the pool is spent, readers wait for a permit; nothing already read is failed. A frame
//! larger than the whole pool is let in alone, when nothing else holds a permit.

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

    /// Takes `bytes` when they fit (or the pool is empty), without waiting.
    fn try_take(self: &Arc<Self>, bytes: usize) -> Option<Permit> {
        self.used
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |used| {
                (used == 0 || used.saturating_add(bytes) <= self.limit).then(|| used + bytes)
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
    fn permits_fit_the_limit_and_a_freed_one_lets_a_waiter_in() {
        let pool = RequestMemory::new(100);
        let first = pool.try_take(60).expect("fits");
        assert!(pool.try_take(50).is_none());
        let second = pool.try_take(40).expect("fits beside it");
        assert_eq!(pool.used(), 100);
        let waiter = {
            let pool = pool.clone();
            std::thread::spawn(move || block_on(pool.take(60)))
        };
        drop(first);
        let third = waiter.join().expect("waiter");
        assert_eq!(pool.used(), 100);
        drop((second, third));
        assert_eq!(pool.used(), 0);
    }

    #[test]
    fn a_frame_larger_than_the_pool_goes_in_alone() {
        let pool = RequestMemory::new(100);
        let big = pool.try_take(500).expect("alone, it fits");
        assert!(pool.try_take(1).is_none());
        drop(big);
        let small = pool.try_take(1).expect("fits");
        assert!(pool.try_take(500).is_none());
        drop(small);
    }

    fn block_on<F: std::future::Future>(future: F) -> F::Output {
        compio::runtime::Runtime::new()
            .expect("runtime")
            .block_on(future)
    }
}
