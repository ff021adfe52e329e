//! One reactor: the partitions it owns, its queues to the other cores, and `invoke`, which runs
//! a closure on the core that owns some state and brings the answer back.

use std::future::Future;
use std::pin::Pin;
use std::rc::Rc;
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicUsize, Ordering};
use std::sync::Arc;

use event_listener::Event;
use futures_util::lock::Mutex as LocalMutex;
use sluice_storage::LogConfig;

use crate::backend::Backend;
use crate::clock::now_ms;
use crate::config::BrokerConfig;
use crate::partition::{Partition, Partitions};

/// Jobs waiting in one core-pair queue before the sender waits: backpressure between cores.
pub const CROSS_CORE_QUEUE_DEPTH_MAX: usize = 1024;

/// Work sent to another core: a closure that builds a future on the target core, so the
/// future itself (which holds `Rc`s and is not `Send`) never crosses threads.
pub type Job = Box<dyn FnOnce(Rc<Core>) -> Pin<Box<dyn Future<Output = ()>>> + Send>;

/// State every core shares. Only metadata lives here; partition data belongs to one core.
pub struct Shared {
    /// The configuration at start-up; read-only properties come from here.
    pub config: BrokerConfig,
    /// The configuration in force, dynamic broker configs included.
    pub dynamic: crate::dynamic::LiveConfig,
    pub backend: Backend,
    pub cores: usize,
    /// The cluster metadata image in force.
    pub metadata: crate::metadata::Metadata,
    /// Events that wake fetches waiting on a partition.
    pub wakeups: crate::partition::Wakeups,
    pub connections: AtomicUsize,
    pub stopping: AtomicBool,
    pub stop: Event,
    next_producer_id: AtomicI64,
}

impl Shared {
    pub fn new(config: BrokerConfig, backend: Backend, cores: usize) -> Self {
        // Producer ids only need to be unique per broker lifetime plus restarts; seeding from
        // the clock keeps ids of a restarted broker apart from those it handed out before.
        let seed = now_ms().max(0) << 8;
        Self {
            dynamic: crate::dynamic::LiveConfig::new(config.clone()),
            config,
            backend,
            cores,
            metadata: Default::default(),
            wakeups: Default::default(),
            connections: AtomicUsize::new(0),
            stopping: AtomicBool::new(false),
            stop: Event::new(),
            next_producer_id: AtomicI64::new(seed),
        }
    }

    pub fn next_producer_id(&self) -> i64 {
        self.next_producer_id.fetch_add(1, Ordering::Relaxed)
    }

    pub fn owner(&self, topic: &str, partition: i32) -> usize {
        owner_core(topic, partition, self.cores)
    }

    /// Broker defaults (dynamic ones included) overlaid with a topic's own configs, in
    /// storage's terms.
    pub fn log_config(
        &self,
        topic_configs: &std::collections::BTreeMap<String, String>,
    ) -> LogConfig {
        let live = self.dynamic.current();
        let c = &*live;
        let get = |key: &str| topic_configs.get(key).and_then(|v| v.parse::<i64>().ok());
        let positive =
            |key: &str, default: u64| get(key).filter(|v| *v > 0).map_or(default, |v| v as u64);
        let flush_messages = get("flush.messages").map_or(c.flush_interval_messages, |v| {
            (v > 0 && v < i64::MAX).then_some(v as u64)
        });
        let flush_ms = get("flush.ms").map_or(c.flush_interval_ms, |v| {
            (v > 0 && v < i64::MAX).then_some(v as u64)
        });
        LogConfig {
            segment_bytes: positive("segment.bytes", c.segment_bytes),
            segment_ms: positive("segment.ms", c.roll_ms),
            segment_index_bytes: positive("segment.index.bytes", c.index_size_max_bytes),
            index_interval_bytes: positive("index.interval.bytes", c.index_interval_bytes),
            retention_ms: get("retention.ms").unwrap_or(c.retention_ms),
            retention_bytes: get("retention.bytes").unwrap_or(c.retention_bytes),
            flush_messages,
            flush_ms,
            max_message_bytes: positive("max.message.bytes", c.message_max_bytes as u64) as usize,
        }
    }
}

pub struct Core {
    pub id: usize,
    pub shared: Arc<Shared>,
    outboxes: Vec<Option<flume::Sender<Job>>>,
    /// The partitions this core owns.
    pub partitions: Partitions,
    /// Serialises topic creation and deletion; only used on core 0, where they all run.
    pub admin: LocalMutex<()>,
    pub metrics: crate::metrics::CoreMetrics,
    /// The consumer groups this core coordinates.
    pub groups: crate::groups::CoreGroups,
}

impl Core {
    pub fn new(id: usize, shared: Arc<Shared>, outboxes: Vec<Option<flume::Sender<Job>>>) -> Self {
        debug_assert_eq!(outboxes.len(), shared.cores);
        debug_assert!(outboxes[id].is_none(), "a core has no queue to itself");
        Self {
            id,
            shared,
            outboxes,
            partitions: Partitions::default(),
            admin: LocalMutex::new(()),
            metrics: Default::default(),
            groups: Default::default(),
        }
    }

    /// Runs `work` on core `target` and returns its answer. On the calling core it runs
    /// inline; otherwise it travels through the bounded queue for this core pair.
    pub async fn invoke<T, F, Fut>(self: &Rc<Self>, target: usize, work: F) -> Option<T>
    where
        T: Send + 'static,
        F: FnOnce(Rc<Core>) -> Fut + Send + 'static,
        Fut: Future<Output = T> + 'static,
    {
        self.post(target, work).await.await
    }

    /// Hands `work` to core `target` and returns once it is queued there, with a future for
    /// its answer. `work` itself (not the future it returns) runs in queue order: on the
    /// target core as the job is taken off the queue, or right away on the calling core.
    /// Whatever it does synchronously, such as taking a turn, is therefore ordered by when
    /// it was posted.
    pub async fn post<T, F, Fut>(
        self: &Rc<Self>,
        target: usize,
        work: F,
    ) -> Pin<Box<dyn Future<Output = Option<T>>>>
    where
        T: Send + 'static,
        F: FnOnce(Rc<Core>) -> Fut + Send + 'static,
        Fut: Future<Output = T> + 'static,
    {
        if target == self.id {
            let running = work(self.clone());
            return Box::pin(async move { Some(running.await) });
        }
        let (reply, answer) = flume::bounded(1);
        let job: Job = Box::new(move |core| {
            let running = work(core);
            Box::pin(async move {
                // The asker may have gone (connection closed); the answer is then dropped.
                let _ = reply.send(running.await);
            })
        });
        let Some(outbox) = self.outboxes.get(target).and_then(Option::as_ref) else {
            return Box::pin(async { None });
        };
        if outbox.send_async(job).await.is_err() {
            return Box::pin(async { None });
        }
        Box::pin(async move { answer.recv_async().await.ok() })
    }

    /// Runs `work` on every core side by side: each job is posted before any answer is
    /// awaited, so the whole takes as long as the slowest core, not the sum. Answers come in
    /// core order; `None` where a core could not be reached.
    pub async fn broadcast<T, F, Fut>(self: &Rc<Self>, work: F) -> Vec<Option<T>>
    where
        T: Send + 'static,
        F: FnOnce(Rc<Core>) -> Fut + Clone + Send + 'static,
        Fut: Future<Output = T> + 'static,
    {
        let mut answers = Vec::with_capacity(self.shared.cores);
        for target in 0..self.shared.cores {
            answers.push(self.post(target, work.clone()).await);
        }
        futures_util::future::join_all(answers).await
    }

    /// Jobs waiting in each of this core's outgoing queues: (target core, depth).
    pub fn outbox_depths(&self) -> Vec<(usize, usize)> {
        let outboxes = self.outboxes.iter().enumerate();
        outboxes
            .filter_map(|(target, outbox)| Some((target, outbox.as_ref()?.len())))
            .collect()
    }

    pub fn partition(&self, topic: &str, partition: i32) -> Option<Rc<Partition>> {
        self.partitions.get(topic, partition)
    }

    /// Periodic log work on this core: time-based flushes and rolls, then retention.
    pub async fn tick(&self) {
        self.partitions.tick(now_ms()).await;
    }

    /// Flushes and closes every log this core owns, leaving clean-shutdown markers.
    pub async fn close_all(&self) {
        self.partitions.close_all().await;
    }
}

/// The core that owns a partition (the shard table). Partitions of one topic go round-robin
/// over the cores from a per-topic starting core, so a topic's load spreads and different
/// topics start apart. Which broker leads a partition is the metadata's question, not this.
pub fn owner_core(topic: &str, partition: i32, cores: usize) -> usize {
    debug_assert!(cores > 0);
    debug_assert!(partition >= 0);
    // FNV-1a: stable across runs and releases, unlike the standard library's hasher.
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for byte in topic.bytes() {
        hash ^= u64::from(byte);
        hash = hash.wrapping_mul(0x0100_0000_01b3);
    }
    ((hash % cores as u64) as usize + partition as usize) % cores
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn partitions_of_a_topic_spread_over_cores() {
        let cores = 4;
        let owners: Vec<usize> = (0..8).map(|p| owner_core("t", p, cores)).collect();
        for core in 0..cores {
            assert_eq!(owners.iter().filter(|&&c| c == core).count(), 2);
        }
        assert_eq!(owner_core("t", 3, 1), 0);
    }
}
