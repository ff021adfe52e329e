//! One core's share of the broker (a shard): the partitions it owns, its metrics cells, the
//! consumer groups it coordinates, and its links to the other cores; and `Shared`, what every
//! core reads (configuration, the metadata image, the shard table). Requests run against the
//! shard of the core they arrived on, and reach other shards through `invoke`.

use std::collections::BTreeMap;
use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::rc::Rc;
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use event_listener::Event;
use futures_util::lock::Mutex as LocalMutex;
use sluice_storage::LogConfig;

use crate::backend::Backend;
use crate::clock::now_ms;
use crate::config::{BrokerConfig, LiveConfig};
use crate::controller::Controller;
use crate::core::{Job, Reactor};
use crate::descriptors::Descriptors;
use crate::groups::state::CoreGroups;
use crate::memory::RequestMemory;
use crate::metadata::Metadata;
use crate::metrics::cells::CoreMetrics;
use crate::partition::{Partition, Partitions, Wakeups};

/// A partition this broker could not open: why, and whether the controller has been told.
#[derive(Debug, Clone)]
pub struct Offline {
    pub error: String,
    pub reported: bool,
}

/// State every core shares. Only metadata lives here; partition data belongs to one core.
pub struct Shared {
    /// The configuration at start-up; read-only properties come from here.
    pub config: BrokerConfig,
    /// The configuration in force, dynamic broker configs included.
    pub dynamic: LiveConfig,
    /// This broker's dynamic layers from the metadata image as last put in force; `None`
    /// until an older data directory's file has been imported (see `dynamic.rs`).
    pub dynamic_layers: Mutex<Option<crate::config::Layers>>,
    pub backend: Backend,
    pub cores: usize,
    /// The cluster metadata image in force.
    pub metadata: Metadata,
    /// Events that wake fetches waiting on a partition.
    pub wakeups: Wakeups,
    pub connections: AtomicUsize,
    /// Open client connections per peer address (`max.connections.per.ip`).
    pub connections_per_ip: Mutex<std::collections::HashMap<std::net::IpAddr, usize>>,
    pub stopping: AtomicBool,
    pub stop: Event,
    /// The controller quorum's voters, and which of them answered as active last.
    pub controllers: Vec<SocketAddr>,
    pub active_controller: AtomicUsize,
    /// This process's controller, when it is a voter.
    pub controller: Option<Arc<Controller>>,
    /// The metadata log index this broker has applied, and an event fired after each apply.
    pub metadata_applied: AtomicU64,
    pub metadata_changed: Event,
    /// Set once this broker has joined the cluster and opened its partitions.
    pub metadata_ready: AtomicBool,
    /// The epoch the controller gave this broker when it registered.
    pub broker_epoch: AtomicI64,
    /// The block of producer ids this broker hands out: (next, end).
    pub producer_ids: Mutex<(i64, i64)>,
    /// When (`clock::monotonic_ms`) a heartbeat last left this broker in its session with the
    /// metadata it answered at applied; see `session_lost`.
    pub session_ok_ms: AtomicI64,
    /// Set when the broker is asked to stop: core 0 then runs the controlled shutdown, and
    /// fires `left` once its leaderships have moved (or it gave up).
    pub leaving: AtomicBool,
    pub leave: Event,
    pub left: Event,
    pub has_left: AtomicBool,
    /// Partitions this broker could not open. They stay offline here until the broker
    /// restarts (or their topic is deleted).
    pub offline: Mutex<BTreeMap<(String, i32), Offline>>,
    /// Set while a report of offline partitions is on its way to the controller.
    pub offline_reporting: AtomicBool,
    /// This process's descriptors, sampled by core 0 (`descriptors.rs`).
    pub descriptors: Descriptors,
    /// The last run closed the log directory cleanly (its marker was found and removed at
    /// start): partitions opened during start-up trust their files as after a clean close.
    pub clean_start: AtomicBool,
    /// Partitions of this run that could not be opened or were not closed cleanly; while
    /// there are any, the log directory is not marked clean at shutdown.
    pub unclean_logs: AtomicU64,
    /// Directories of the partitions closed cleanly at shutdown. The log directory is marked
    /// clean only when they are every partition directory in it: one this run never opened
    /// keeps whatever state an earlier run left it in.
    pub clean_logs: Mutex<Vec<std::path::PathBuf>>,
    /// Request bytes in flight across every connection (`queued.max.request.bytes`).
    pub request_memory: Arc<RequestMemory>,
}

impl Shared {
    pub fn new(
        config: BrokerConfig,
        backend: Backend,
        cores: usize,
        controllers: Vec<SocketAddr>,
        controller: Option<Arc<Controller>>,
    ) -> Self {
        let request_bytes_max = config.request_bytes_max;
        Self {
            dynamic: LiveConfig::new(config.clone()),
            dynamic_layers: Mutex::new(None),
            config,
            backend,
            cores,
            metadata: Default::default(),
            wakeups: Default::default(),
            connections: AtomicUsize::new(0),
            connections_per_ip: Mutex::new(Default::default()),
            stopping: AtomicBool::new(false),
            stop: Event::new(),
            controllers,
            active_controller: AtomicUsize::new(0),
            controller,
            metadata_applied: AtomicU64::new(0),
            metadata_changed: Event::new(),
            metadata_ready: AtomicBool::new(false),
            broker_epoch: AtomicI64::new(-1),
            producer_ids: Mutex::new((0, 0)),
            session_ok_ms: AtomicI64::new(i64::MAX),
            leaving: AtomicBool::new(false),
            leave: Event::new(),
            left: Event::new(),
            has_left: AtomicBool::new(false),
            offline: Mutex::new(BTreeMap::new()),
            offline_reporting: AtomicBool::new(false),
            clean_start: AtomicBool::new(false),
            unclean_logs: AtomicU64::new(0),
            clean_logs: Mutex::new(Vec::new()),
            descriptors: Descriptors::default(),
            request_memory: RequestMemory::new(request_bytes_max),
        }
    }

    /// The partitions this broker could not open.
    pub fn offline(&self) -> std::sync::MutexGuard<'_, BTreeMap<(String, i32), Offline>> {
        self.offline.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The error for a partition this broker should hold but has not open: its copy could not
    /// be opened (KAFKA_STORAGE_ERROR, as for a failed log directory), or it is unknown here.
    pub fn missing_partition_code(&self, topic: &str, partition: i32) -> i16 {
        if self.is_offline(topic, partition) {
            crate::error_codes::KAFKA_STORAGE_ERROR
        } else {
            crate::error_codes::UNKNOWN_TOPIC_OR_PARTITION
        }
    }

    /// Whether this broker failed to open its copy of the partition.
    pub fn is_offline(&self, topic: &str, partition: i32) -> bool {
        let offline = self.offline();
        !offline.is_empty() && offline.contains_key(&(topic.to_owned(), partition))
    }

    /// Whether this broker has gone `broker.session.timeout.ms` without a heartbeat the
    /// controller answered (paused, or cut off from the quorum). By then the controller has
    /// fenced it and moved its leaderships, so it must not act as a leader: its produce and
    /// follower fetches are refused with NOT_LEADER_OR_FOLLOWER until a heartbeat gets
    /// through and the metadata shows where the leaderships went.
    pub fn session_lost(&self) -> bool {
        let ok = self
            .session_ok_ms
            .load(std::sync::atomic::Ordering::Acquire);
        let timeout = i64::try_from(self.config.broker_session_timeout_ms).unwrap_or(i64::MAX);
        crate::clock::monotonic_ms().saturating_sub(ok) > timeout
    }

    /// The next producer id of this broker's block, or `None` when the block is used up.
    pub fn take_producer_id(&self) -> Option<i64> {
        let mut block = self.producer_ids.lock().unwrap_or_else(|e| e.into_inner());
        (block.0 < block.1).then(|| {
            block.0 += 1;
            block.0 - 1
        })
    }

    /// A new block of producer ids, `[start, end)`, from the controller.
    pub fn set_producer_ids(&self, start: i64, end: i64) {
        *self.producer_ids.lock().unwrap_or_else(|e| e.into_inner()) = (start, end);
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

/// One core's state. Touched only by its own core; other cores reach it through `invoke`.
pub struct Shard {
    pub id: usize,
    pub shared: Arc<Shared>,
    reactor: Reactor<Shard>,
    /// The partitions this core owns.
    pub partitions: Partitions,
    /// Serialises changes to the dynamic configs in force; only used on core 0.
    pub admin: LocalMutex<()>,
    pub metrics: CoreMetrics,
    /// The consumer groups this core coordinates.
    pub groups: CoreGroups,
}

impl Shard {
    pub fn new(
        id: usize,
        shared: Arc<Shared>,
        outboxes: Vec<Option<flume::Sender<Job<Shard>>>>,
    ) -> Self {
        debug_assert_eq!(outboxes.len(), shared.cores);
        Self {
            id,
            shared,
            reactor: Reactor::new(id, outboxes),
            partitions: Partitions::default(),
            admin: LocalMutex::new(()),
            metrics: Default::default(),
            groups: Default::default(),
        }
    }

    /// Runs `work` on core `target`'s shard and returns its answer (see `Reactor::invoke`).
    pub async fn invoke<T, F, Fut>(self: &Rc<Self>, target: usize, work: F) -> Option<T>
    where
        T: Send + 'static,
        F: FnOnce(Rc<Shard>) -> Fut + Send + 'static,
        Fut: Future<Output = T> + 'static,
    {
        self.reactor.invoke(self, target, work).await
    }

    /// Queues `work` on core `target`'s shard; the answer comes later (see `Reactor::post`).
    pub async fn post<T, F, Fut>(
        self: &Rc<Self>,
        target: usize,
        work: F,
    ) -> Pin<Box<dyn Future<Output = Option<T>>>>
    where
        T: Send + 'static,
        F: FnOnce(Rc<Shard>) -> Fut + Send + 'static,
        Fut: Future<Output = T> + 'static,
    {
        self.reactor.post(self, target, work).await
    }

    /// Runs `work` on every shard side by side (see `Reactor::broadcast`).
    pub async fn broadcast<T, F, Fut>(self: &Rc<Self>, work: F) -> Vec<Option<T>>
    where
        T: Send + 'static,
        F: FnOnce(Rc<Shard>) -> Fut + Clone + Send + 'static,
        Fut: Future<Output = T> + 'static,
    {
        self.reactor.broadcast(self, work).await
    }

    /// Jobs waiting in each of this core's outgoing queues: (target core, depth).
    pub fn outbox_depths(&self) -> Vec<(usize, usize)> {
        self.reactor.outbox_depths()
    }

    pub fn partition(&self, topic: &str, partition: i32) -> Option<Rc<Partition>> {
        self.partitions.get(topic, partition)
    }

    /// Periodic log work on this core: time-based flushes and rolls, then retention.
    pub async fn tick(&self) {
        self.partitions.tick(now_ms()).await;
    }

    /// Flushes and closes every log this core owns, for the log directory's clean-shutdown
    /// marker (`server::serve` writes it once every core is done).
    pub async fn close_all(&self) {
        let (began, count) = (std::time::Instant::now(), self.partitions.len());
        /// Most closes in flight on one core: each is a chain of small writes and syncs,
        /// which io_uring runs side by side and the file system's journal commits together.
        const CLOSES_IN_FLIGHT: usize = 512;
        let in_flight = self
            .shared
            .descriptors
            .partition_steps_in_flight(self.shared.cores, CLOSES_IN_FLIGHT);
        let (clean, unclean) = self.partitions.close_all(in_flight).await;
        let shared = &self.shared;
        shared.unclean_logs.fetch_add(unclean, Ordering::Relaxed);
        let log_dir = &shared.config.log_dir;
        let dirs = clean
            .iter()
            .map(|(topic, index)| crate::layout::partition_dir(log_dir, topic, *index));
        shared
            .clean_logs
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .extend(dirs);
        let seconds = began.elapsed().as_secs_f64();
        tracing::info!(core = self.id, logs = count, seconds, "logs closed");
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
