//! The cluster metadata image: what every reader sees, immutable once built. A change never
//! edits an image; it builds the next one from a delta (`delta.rs`), so a reader holding an
//! image never sees half a change.

use std::collections::BTreeMap;
use std::sync::Arc;

use serde::{Deserialize, Serialize};

/// A broker id, as Kafka numbers brokers.
pub type BrokerId = i32;

/// One registered broker.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BrokerImage {
    pub id: BrokerId,
    /// The host and port clients reach it on (its advertised listener).
    pub host: String,
    pub port: u16,
    /// Raised each time the broker registers again, so a stale session can be told apart.
    pub epoch: i64,
    /// A fenced broker leads nothing and is left out of Metadata.
    pub fenced: bool,
}

/// One partition's replica assignment and leadership.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PartitionImage {
    /// Brokers that hold a copy, the preferred leader first.
    pub replicas: Vec<BrokerId>,
    /// Replicas in sync with the leader, the leader included.
    pub isr: Vec<BrokerId>,
    /// The leading broker, or -1 when none can lead.
    pub leader: BrokerId,
    /// Raised at every leader change; batches are stamped with it.
    pub leader_epoch: i32,
    /// Raised at every change of this partition (leader, ISR or replicas).
    pub partition_epoch: i32,
    /// Replicas whose broker could not open the partition's files; they lead nothing and
    /// stay out of the ISR until that broker registers again.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub offline: Vec<BrokerId>,
}

impl PartitionImage {
    /// A new partition on `replicas`, led by the first of them, all in sync.
    pub fn new(replicas: Vec<BrokerId>) -> Self {
        debug_assert!(!replicas.is_empty());
        Self {
            leader: replicas.first().copied().unwrap_or(-1),
            isr: replicas.clone(),
            replicas,
            leader_epoch: 0,
            partition_epoch: 0,
            offline: Vec::new(),
        }
    }

    /// Whether `broker` may lead or join the ISR of this partition: live, and its copy open.
    pub fn can_serve(&self, image: &MetadataImage, broker: BrokerId) -> bool {
        image.is_live(broker) && !self.offline.contains(&broker)
    }
}

/// One topic: its id, partitions and config overrides.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TopicImage {
    pub name: String,
    pub id: [u8; 16],
    pub partitions: Vec<PartitionImage>,
    /// The topic's own configs; broker defaults fill in the rest.
    pub configs: BTreeMap<String, String>,
}

impl TopicImage {
    pub fn partition_count(&self) -> i32 {
        self.partitions.len() as i32
    }

    pub fn partition(&self, index: i32) -> Option<&PartitionImage> {
        self.partitions.get(usize::try_from(index).ok()?)
    }

    /// Whether `broker` leads partition `index`.
    pub fn is_led_by(&self, index: i32, broker: BrokerId) -> bool {
        self.partition(index).is_some_and(|p| p.leader == broker)
    }

    /// Whether `index` names a partition of this topic.
    pub fn has_partition(&self, index: i32) -> bool {
        self.partition(index).is_some()
    }
}

/// The whole cluster as the metadata log describes it at one offset.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct MetadataImage {
    pub cluster_id: String,
    /// The broker that is the active controller, or -1 while none is.
    pub controller_id: BrokerId,
    pub brokers: BTreeMap<BrokerId, BrokerImage>,
    pub topics: BTreeMap<String, Arc<TopicImage>>,
    /// The first producer id not yet handed out to a broker.
    pub next_producer_id: i64,
    /// Dynamic broker configs by resource, as Kafka names broker resources: `""` for the
    /// default of every broker, a broker's id for that broker alone.
    pub broker_configs: BTreeMap<String, BTreeMap<String, String>>,
    /// How many records built this image; each delta adds its own.
    pub records_applied: u64,
}

impl MetadataImage {
    pub fn topic(&self, name: &str) -> Option<&Arc<TopicImage>> {
        self.topics.get(name)
    }

    /// Brokers that are registered and not fenced, by id.
    pub fn live_brokers(&self) -> impl Iterator<Item = &BrokerImage> {
        self.brokers.values().filter(|b| !b.fenced)
    }

    pub fn is_live(&self, broker: BrokerId) -> bool {
        self.brokers.get(&broker).is_some_and(|b| !b.fenced)
    }

    /// The dynamic configs of one broker resource (`""` for the cluster default).
    pub fn broker_configs(&self, resource: &str) -> BTreeMap<String, String> {
        self.broker_configs
            .get(resource)
            .cloned()
            .unwrap_or_default()
    }
}
