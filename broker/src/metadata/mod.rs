//! Cluster metadata as the broker reads it: brokers, topics, partitions with their replicas,
//! leader, ISR and epochs, topic configs and the cluster id. Every reader takes the current
//! immutable image (`image.rs`); changes arrive as records from a source (`local.rs` today)
//! and are applied by a delta (`delta.rs`) in one place, which then publishes the next image.
//! Which broker leads a partition is decided here; which core owns it on this broker is the
//! shard table's question, not this module's.

pub mod delta;
pub mod image;
pub mod local;

use std::sync::{Arc, RwLock};

pub use delta::{DeltaError, MetadataDelta, MetadataRecord, TopicChange};
pub use image::{BrokerId, BrokerImage, MetadataImage, PartitionImage, TopicImage};

/// Largest partition count a topic may have; bounds the work and memory of one change.
pub const TOPIC_PARTITIONS_MAX: i32 = 10_000;

/// The image in force, shared by every core. Read once per request; written only when a
/// delta is published.
#[derive(Default)]
pub struct Metadata {
    current: RwLock<Arc<MetadataImage>>,
}

impl Metadata {
    pub fn image(&self) -> Arc<MetadataImage> {
        self.current
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// The topic as the current image has it.
    pub fn topic(&self, name: &str) -> Option<Arc<TopicImage>> {
        let current = self.current.read().unwrap_or_else(|e| e.into_inner());
        current.topic(name).cloned()
    }

    /// Puts `image` in force. Only the applier of deltas calls this.
    pub fn publish(&self, image: Arc<MetadataImage>) {
        *self.current.write().unwrap_or_else(|e| e.into_inner()) = image;
    }
}
