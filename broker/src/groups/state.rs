//! The groups one core coordinates, and the coordinator's settings: plain state that the
//! core's shard holds and the coordinator (`groups/mod.rs`) works on.

use std::cell::RefCell;
use std::collections::HashMap;

use super::group::Group;
use crate::config::BrokerConfig;

pub const OFFSETS_TOPIC: &str = "__consumer_offsets";

/// Kafka's placement: `abs(groupId.hashCode()) % partitions`, with Java's String hash over
/// UTF-16 code units and Kafka's `Utils.abs` (which maps i32::MIN to 0).
pub fn partition_for(group: &str, partitions: i32) -> i32 {
    debug_assert!(partitions > 0);
    crate::ids::kafka_abs(crate::ids::java_hash(group)) % partitions.max(1)
}

/// The coordinator's settings, from the broker's properties.
#[derive(Debug, Clone)]
pub struct GroupConfig {
    pub offsets_partitions: i32,
    pub initial_delay_ms: i64,
    pub retention_ms: i64,
    pub retention_check_ms: u64,
    pub session_timeout_min_ms: i32,
    pub session_timeout_max_ms: i32,
    /// `offsets.commit.timeout.ms`: how long a write to `__consumer_offsets` waits for the
    /// in-sync replicas.
    pub commit_timeout_ms: u64,
}

impl GroupConfig {
    pub fn from_config(config: &BrokerConfig) -> Self {
        fn get<T: std::str::FromStr>(config: &BrokerConfig, key: &str, default: T) -> T {
            config
                .properties
                .value(key)
                .0
                .trim()
                .parse()
                .unwrap_or(default)
        }
        let retention_minutes: i64 = get(config, "offsets.retention.minutes", 10_080);
        Self {
            offsets_partitions: get(config, "offsets.topic.num.partitions", 50).max(1),
            initial_delay_ms: get(config, "group.initial.rebalance.delay.ms", 3_000).max(0),
            retention_ms: retention_minutes.saturating_mul(60_000),
            retention_check_ms: get(config, "offsets.retention.check.interval.ms", 600_000).max(1),
            session_timeout_min_ms: get(config, "group.min.session.timeout.ms", 6_000),
            session_timeout_max_ms: get(config, "group.max.session.timeout.ms", 1_800_000),
            commit_timeout_ms: get(config, "offsets.commit.timeout.ms", 5_000).max(1),
        }
    }
}

/// Where a core stands with one partition of `__consumer_offsets`, by the leader epoch in
/// which it became its coordinator.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Load {
    /// Replaying the partition; group requests wait (COORDINATOR_LOAD_IN_PROGRESS).
    Loading(i32),
    /// Its groups are in memory and this core answers for them.
    Loaded(i32),
}

/// The groups one core coordinates.
#[derive(Default)]
pub struct CoreGroups {
    pub(super) groups: RefCell<HashMap<String, Group>>,
    /// The partitions of `__consumer_offsets` this core has loaded or is loading.
    pub(super) partitions: RefCell<HashMap<i32, Load>>,
    config: std::cell::OnceCell<GroupConfig>,
    /// Whether this core has replayed its partitions of `__consumer_offsets`. Until then its
    /// groups are incomplete, and group operations answer COORDINATOR_LOAD_IN_PROGRESS.
    pub(super) loaded: std::cell::Cell<bool>,
    /// Numbers each group created on this core, so a write that awaited its append can tell
    /// the group it was decided for from one of the same name created since.
    pub(super) incarnations: std::cell::Cell<u64>,
}

impl CoreGroups {
    pub fn loaded(&self) -> bool {
        self.loaded.get()
    }

    /// This broker no longer leads `partition` of `__consumer_offsets` (one of
    /// `partition_count`): its groups are forgotten here, and a later leadership loads them
    /// again. Whether this core was coordinating them.
    pub fn release(&self, partition: i32, partition_count: i32) -> bool {
        let held = self.partitions.borrow_mut().remove(&partition).is_some();
        if held {
            self.forget(partition, partition_count);
        }
        held
    }

    /// Drops the groups that live on `partition`. Members waiting on a rebalance are answered
    /// as if they were unknown, and join again at the new coordinator.
    pub(super) fn forget(&self, partition: i32, partition_count: i32) {
        if partition_count > 0 {
            let mut groups = self.groups.borrow_mut();
            groups.retain(|id, _| partition_for(id, partition_count) != partition);
        }
    }

    pub fn config(&self, broker: &BrokerConfig) -> &GroupConfig {
        self.config.get_or_init(|| GroupConfig::from_config(broker))
    }

    /// Every committed offset of the groups on this core: (group, topic, partition, offset).
    /// Cheap enough for a metrics scrape: one pass over in-memory maps.
    pub fn committed_offsets(&self) -> Vec<(String, String, i32, i64)> {
        let groups = self.groups.borrow();
        let mut out = Vec::new();
        for (id, group) in groups.iter() {
            for ((topic, partition), value) in &group.offsets {
                out.push((id.clone(), topic.clone(), *partition, value.offset));
            }
        }
        out
    }
}
