//! One reactor: the partitions it owns, its queues to the other cores, and `invoke`, which runs
//! a closure on the core that owns some state and brings the answer back.

use std::future::Future;
use std::path::PathBuf;
use std::pin::Pin;
use std::rc::Rc;
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicUsize, Ordering};
use std::sync::Arc;

use event_listener::Event;
use futures_util::lock::Mutex as LocalMutex;
use sluice_storage::{LogConfig, StorageError};

use crate::backend::Backend;
use crate::clock::now_ms;
use crate::config::BrokerConfig;
use crate::partition::{sole_holder, Partition, PartitionKey, Partitions};
use crate::topics::{self, TopicInfo, Topics};

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
    pub topics: Topics,
    pub cluster_id: String,
    pub connections: AtomicUsize,
    pub stopping: AtomicBool,
    pub stop: Event,
    next_producer_id: AtomicI64,
}

impl Shared {
    pub fn new(config: BrokerConfig, backend: Backend, cores: usize, cluster_id: String) -> Self {
        // Producer ids only need to be unique per broker lifetime plus restarts; seeding from
        // the clock keeps ids of a restarted broker apart from those it handed out before.
        let seed = now_ms().max(0) << 8;
        Self {
            dynamic: crate::dynamic::LiveConfig::new(config.clone()),
            config,
            backend,
            cores,
            topics: Topics::default(),
            cluster_id,
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
        topics::owner_core(topic, partition, self.cores)
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

    pub fn partition_dir(&self, topic: &str, partition: i32) -> PathBuf {
        topics::partition_dir(&self.shared.config.log_dir, topic, partition)
    }

    /// Opens (creating or recovering) the logs of `topic` that this core owns.
    pub async fn open_owned(&self, topic: &TopicInfo) -> Result<(), StorageError> {
        let config = self.shared.log_config(&topic.configs);
        for (index, info) in topic.partitions.iter().enumerate() {
            let partition = index as i32;
            if self.shared.owner(&topic.name, partition) != self.id {
                continue;
            }
            if self.partition(&topic.name, partition).is_some() {
                continue;
            }
            let dir = self.partition_dir(&topic.name, partition);
            let node = self.shared.config.node_id;
            let appended = info.appended.clone();
            let opened = Partition::open(dir, config.clone(), node, appended, now_ms()).await?;
            // A single node leads every partition alone, in epoch 0.
            opened.become_leader(0, vec![node], vec![node]).await;
            self.partitions
                .insert((topic.name.clone(), partition), opened);
        }
        Ok(())
    }

    /// Removes this core's partitions of `topic` and deletes their files.
    pub async fn delete_owned(&self, topic: &str) -> Result<(), StorageError> {
        // Only the indexes: a held `Rc` would keep `sole_holder` waiting.
        let indexes: Vec<i32> = self
            .partitions
            .of_topic(topic)
            .iter()
            .map(|(i, _)| *i)
            .collect();
        for index in indexes {
            let removed = self.partitions.remove(topic, index);
            if let Some(partition) = removed {
                // Wake fetches waiting on it so they see the topic is gone.
                partition.appended().notify(usize::MAX);
                match sole_holder(partition).await {
                    Some(partition) => partition.delete().await?,
                    None => self.set_aside(&(topic.to_owned(), index)).await?,
                }
            }
        }
        Ok(())
    }

    /// Renames a partition directory that cannot be deleted yet out of the way, so a topic
    /// created under the same name starts empty and start-up neither revives the old one nor
    /// keeps it (`topics::remove_set_aside`).
    async fn set_aside(&self, (topic, partition): &PartitionKey) -> Result<(), StorageError> {
        let dir = topics::partition_dir(&self.shared.config.log_dir, topic, *partition);
        let aside = topics::set_aside_dir(&dir);
        tracing::warn!(dir = %dir.display(), aside = %aside.display(),
            "partition still in use when its topic was deleted; removing it at the next start");
        compio::fs::rename(&dir, &aside).await?;
        Ok(())
    }
    /// Applies new topic configs to this core's partitions of `topic`.
    pub async fn reconfigure_owned(&self, topic: &TopicInfo) {
        let config = self.shared.log_config(&topic.configs);
        for (_, partition) in self.partitions.of_topic(&topic.name) {
            partition.reconfigure(config.clone()).await;
        }
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
