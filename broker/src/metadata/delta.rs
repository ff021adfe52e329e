//! Metadata records and the delta that applies them. A source (the local files today, a
//! controller quorum's log tomorrow) hands the broker records; a `MetadataDelta` replays them
//! over an image and builds the next image, with the list of topics that changed, so the
//! partitions on each core can follow. This is the one place an image changes.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use serde::{Deserialize, Serialize};

use super::image::{BrokerId, BrokerImage, MetadataImage, PartitionImage, TopicImage};

/// One change to the cluster metadata, in the shape of Kafka's KRaft records. Records are
/// written to the metadata log as JSON, named by kind; a field added later gets a default,
/// so a newer broker reads an older log.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum MetadataRecord {
    /// The cluster's id, set once when the cluster is formed.
    ClusterId(String),
    /// The active controller changed (known from the quorum rather than stored).
    Controller(BrokerId),
    /// A broker registered, or registered again with a newer epoch. An epoch below zero
    /// takes the offset of the record in the metadata log, as Kafka numbers broker epochs.
    RegisterBroker(BrokerImage),
    /// Producer ids below `next` have been handed out in blocks.
    ProducerIds {
        next: i64,
    },
    /// A broker missed its session: it leads nothing until it registers again.
    FenceBroker {
        id: BrokerId,
        epoch: i64,
    },
    /// A registered broker caught up and may lead.
    UnfenceBroker {
        id: BrokerId,
        epoch: i64,
    },
    /// A new topic, with no partitions yet.
    Topic {
        name: String,
        id: [u8; 16],
    },
    /// A new partition of a topic: `index` is the topic's partition count before it.
    Partition {
        topic: String,
        index: i32,
        partition: PartitionImage,
    },
    /// A leader, ISR or replica change. Replaying it raises the partition epoch, and the
    /// leader epoch when the leader changes, as Kafka's replay does.
    PartitionChange {
        topic: String,
        index: i32,
        leader: Option<BrokerId>,
        isr: Option<Vec<BrokerId>>,
        replicas: Option<Vec<BrokerId>>,
    },
    /// A topic config set (`Some`) or removed (`None`).
    TopicConfig {
        topic: String,
        key: String,
        value: Option<String>,
    },
    RemoveTopic {
        name: String,
    },
    /// A broker could not open its copy of a partition. Registering again clears it.
    ReplicaOffline {
        topic: String,
        index: i32,
        broker: BrokerId,
    },
    /// A dynamic broker config set (`Some`) or removed (`None`) on a broker resource: `""`
    /// for the cluster default, a broker's id for that broker.
    BrokerConfig {
        resource: String,
        key: String,
        value: Option<String>,
    },
}

/// A record that does not fit the image it is replayed over.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DeltaError {
    #[error("topic {0} is not in the metadata")]
    UnknownTopic(String),
    #[error("topic {0} is already in the metadata")]
    TopicExists(String),
    #[error("partition {index} of {topic} is out of order or unknown")]
    BadPartition { topic: String, index: i32 },
    #[error("broker {0} is not registered")]
    UnknownBroker(BrokerId),
}

/// What one delta did to one topic: the image before and after (`None` when it did not exist).
#[derive(Debug, Clone)]
pub struct TopicChange {
    pub name: String,
    pub before: Option<Arc<TopicImage>>,
    pub after: Option<Arc<TopicImage>>,
}

impl TopicChange {
    /// Indexes of partitions that exist after the change and did not before (all of them for a
    /// topic created, or re-created under the same name).
    pub fn added_partitions(&self) -> std::ops::Range<i32> {
        let recreated = matches!((&self.before, &self.after), (Some(b), Some(a)) if b.id != a.id);
        let before = match &self.before {
            Some(_) if recreated => 0,
            Some(before) => before.partition_count(),
            None => 0,
        };
        let after = self.after.as_ref().map_or(0, |a| a.partition_count());
        before..after.max(before)
    }

    /// Whether the topic's partitions, as they were, are gone (deleted, or re-created).
    pub fn removed(&self) -> bool {
        match (&self.before, &self.after) {
            (Some(_), None) => true,
            (Some(before), Some(after)) => before.id != after.id,
            _ => false,
        }
    }

    pub fn configs_changed(&self) -> bool {
        matches!((&self.before, &self.after), (Some(b), Some(a)) if b.id == a.id && b.configs != a.configs)
    }
}

/// Records replayed over a base image.
pub struct MetadataDelta {
    base: Arc<MetadataImage>,
    next: MetadataImage,
    touched: BTreeSet<String>,
    /// The metadata log offset of the records being replayed.
    offset: i64,
}

impl MetadataDelta {
    pub fn new(base: Arc<MetadataImage>) -> Self {
        Self {
            next: (*base).clone(),
            base,
            touched: BTreeSet::new(),
            offset: 0,
        }
    }

    /// The metadata log offset of the records replayed next.
    pub fn set_offset(&mut self, offset: i64) {
        self.offset = offset;
    }

    /// The image as the records replayed so far leave it.
    pub fn image(&self) -> &MetadataImage {
        &self.next
    }

    /// Applies one record. On error the delta is unchanged by it.
    pub fn replay(&mut self, record: MetadataRecord) -> Result<(), DeltaError> {
        let next = &mut self.next;
        match record {
            MetadataRecord::ClusterId(id) => next.cluster_id = id,
            MetadataRecord::Controller(id) => next.controller_id = id,
            MetadataRecord::RegisterBroker(mut broker) => {
                if broker.epoch < 0 {
                    broker.epoch = self.offset;
                }
                // A new incarnation tries its copies again.
                let id = broker.id;
                next.brokers.insert(id, broker);
                let names: Vec<String> = next
                    .topics
                    .values()
                    .filter(|t| t.partitions.iter().any(|p| p.offline.contains(&id)))
                    .map(|t| t.name.clone())
                    .collect();
                for name in names {
                    let image = topic_mut(next, &name)?;
                    for partition in &mut image.partitions {
                        partition.offline.retain(|b| *b != id);
                    }
                    self.touched.insert(name);
                }
            }
            MetadataRecord::ProducerIds { next: id } => {
                next.next_producer_id = next.next_producer_id.max(id);
            }
            MetadataRecord::FenceBroker { id, epoch }
            | MetadataRecord::UnfenceBroker { id, epoch } => {
                let fence = matches!(record, MetadataRecord::FenceBroker { .. });
                let broker = next
                    .brokers
                    .get_mut(&id)
                    .ok_or(DeltaError::UnknownBroker(id))?;
                // A record about an older registration says nothing about the newer one.
                if broker.epoch == epoch {
                    broker.fenced = fence;
                }
            }
            MetadataRecord::Topic { name, id } => {
                if next.topics.contains_key(&name) {
                    return Err(DeltaError::TopicExists(name));
                }
                let topic = TopicImage {
                    name: name.clone(),
                    id,
                    partitions: Vec::new(),
                    configs: Default::default(),
                };
                next.topics.insert(name.clone(), Arc::new(topic));
                self.touched.insert(name);
            }
            MetadataRecord::Partition {
                topic,
                index,
                partition,
            } => {
                let image = topic_mut(next, &topic)?;
                if index != image.partition_count() {
                    return Err(DeltaError::BadPartition { topic, index });
                }
                image.partitions.push(partition);
                self.touched.insert(topic);
            }
            MetadataRecord::PartitionChange {
                topic,
                index,
                leader,
                isr,
                replicas,
            } => {
                let partition = partition_mut(next, &topic, index)?;
                if let Some(leader) = leader.filter(|l| *l != partition.leader) {
                    partition.leader = leader;
                    partition.leader_epoch += 1;
                }
                if let Some(isr) = isr {
                    partition.isr = isr;
                }
                if let Some(replicas) = replicas {
                    partition.replicas = replicas;
                }
                partition.partition_epoch += 1;
                self.touched.insert(topic);
            }
            MetadataRecord::TopicConfig { topic, key, value } => {
                let image = topic_mut(next, &topic)?;
                match value {
                    Some(value) => image.configs.insert(key, value),
                    None => image.configs.remove(&key),
                };
                self.touched.insert(topic);
            }
            MetadataRecord::ReplicaOffline {
                topic,
                index,
                broker,
            } => {
                let partition = partition_mut(next, &topic, index)?;
                if !partition.offline.contains(&broker) {
                    partition.offline.push(broker);
                }
                self.touched.insert(topic);
            }
            MetadataRecord::RemoveTopic { name } => {
                if next.topics.remove(&name).is_none() {
                    return Err(DeltaError::UnknownTopic(name));
                }
                self.touched.insert(name);
            }
            MetadataRecord::BrokerConfig {
                resource,
                key,
                value,
            } => {
                let configs = next.broker_configs.entry(resource.clone()).or_default();
                match value {
                    Some(value) => configs.insert(key, value),
                    None => configs.remove(&key),
                };
                if configs.is_empty() {
                    next.broker_configs.remove(&resource);
                }
            }
        }
        next.records_applied += 1;
        Ok(())
    }

    /// The next image, and what changed for each topic touched.
    pub fn apply(self) -> (Arc<MetadataImage>, Vec<TopicChange>) {
        let changes = self
            .touched
            .into_iter()
            .map(|name| TopicChange {
                before: self.base.topic(&name).cloned(),
                after: self.next.topic(&name).cloned(),
                name,
            })
            .filter(|change| change.before != change.after)
            .collect();
        (Arc::new(self.next), changes)
    }
}

fn topic_mut<'a>(
    image: &'a mut MetadataImage,
    name: &str,
) -> Result<&'a mut TopicImage, DeltaError> {
    let topic = image
        .topics
        .get_mut(name)
        .ok_or_else(|| DeltaError::UnknownTopic(name.to_owned()))?;
    Ok(Arc::make_mut(topic))
}

fn partition_mut<'a>(
    image: &'a mut MetadataImage,
    topic: &str,
    index: i32,
) -> Result<&'a mut PartitionImage, DeltaError> {
    let partitions = &mut topic_mut(image, topic)?.partitions;
    usize::try_from(index)
        .ok()
        .and_then(|i| partitions.get_mut(i))
        .ok_or_else(|| DeltaError::BadPartition {
            topic: topic.to_owned(),
            index,
        })
}

/// What taking `after` in place of `before` does to each topic: the delta an image read
/// whole (a snapshot) amounts to.
pub fn changes_between(before: &MetadataImage, after: &MetadataImage) -> Vec<TopicChange> {
    let names: BTreeSet<&String> = before.topics.keys().chain(after.topics.keys()).collect();
    names
        .into_iter()
        .map(|name| TopicChange {
            name: name.clone(),
            before: before.topic(name).cloned(),
            after: after.topic(name).cloned(),
        })
        .filter(|change| change.before != change.after)
        .collect()
}

/// The records that build this image from an empty one (a snapshot): cluster id, brokers,
/// producer ids, then every topic. The controller is not among them; it is not stored.
pub fn image_records(image: &MetadataImage) -> Vec<MetadataRecord> {
    use MetadataRecord as R;
    let mut records = vec![R::ClusterId(image.cluster_id.clone())];
    for broker in image.brokers.values() {
        records.push(R::RegisterBroker(broker.clone()));
    }
    if image.next_producer_id > 0 {
        records.push(R::ProducerIds {
            next: image.next_producer_id,
        });
    }
    for (resource, configs) in &image.broker_configs {
        records.extend(configs.iter().map(|(key, value)| R::BrokerConfig {
            resource: resource.clone(),
            key: key.clone(),
            value: Some(value.clone()),
        }));
    }
    for topic in image.topics.values() {
        records.extend(topic_records(topic));
    }
    records
}

/// The records that take the broker resource `resource` from the configs `image` holds for
/// it to exactly `configs`.
pub fn broker_config_records(
    image: &MetadataImage,
    resource: &str,
    configs: &BTreeMap<String, String>,
) -> Vec<MetadataRecord> {
    let current = image.broker_configs(resource);
    let record = |key: &String, value: Option<&String>| MetadataRecord::BrokerConfig {
        resource: resource.to_owned(),
        key: key.clone(),
        value: value.cloned(),
    };
    let removed = current.keys().filter(|k| !configs.contains_key(*k));
    let mut records: Vec<MetadataRecord> = removed.map(|k| record(k, None)).collect();
    let set = configs.iter().filter(|(k, v)| current.get(*k) != Some(*v));
    records.extend(set.map(|(k, v)| record(k, Some(v))));
    records
}

/// The records that create `topic` as it stands: the topic, each partition, each config.
pub fn topic_records(topic: &TopicImage) -> Vec<MetadataRecord> {
    let mut records = vec![MetadataRecord::Topic {
        name: topic.name.clone(),
        id: topic.id,
    }];
    for (index, partition) in topic.partitions.iter().enumerate() {
        records.push(MetadataRecord::Partition {
            topic: topic.name.clone(),
            index: index as i32,
            partition: partition.clone(),
        });
    }
    for (key, value) in &topic.configs {
        records.push(MetadataRecord::TopicConfig {
            topic: topic.name.clone(),
            key: key.clone(),
            value: Some(value.clone()),
        });
    }
    records
}

#[cfg(test)]
mod tests {
    use super::*;

    fn topic(name: &str, id: u8, partitions: i32) -> Vec<MetadataRecord> {
        let image = TopicImage {
            name: name.to_owned(),
            id: [id; 16],
            partitions: (0..partitions)
                .map(|_| PartitionImage::new(vec![1, 2]))
                .collect(),
            configs: [("retention.ms".to_owned(), "1".to_owned())].into(),
        };
        topic_records(&image)
    }

    fn replay(
        base: Arc<MetadataImage>,
        records: Vec<MetadataRecord>,
    ) -> (Arc<MetadataImage>, Vec<TopicChange>) {
        let mut delta = MetadataDelta::new(base);
        for record in records {
            delta.replay(record).expect("record fits");
        }
        delta.apply()
    }

    #[test]
    fn a_delta_builds_a_new_image_and_leaves_the_old_one_alone() {
        let empty = Arc::new(MetadataImage::default());
        let (image, changes) = replay(empty.clone(), topic("t", 1, 3));
        assert!(empty.topics.is_empty());
        let t = image.topic("t").expect("created");
        assert_eq!(t.partition_count(), 3);
        assert_eq!(t.partition(2).map(|p| p.leader), Some(1));
        assert_eq!(t.configs.get("retention.ms").map(String::as_str), Some("1"));
        assert_eq!(changes.len(), 1);
        assert_eq!(changes[0].added_partitions(), 0..3);
        assert!(!changes[0].removed());
        assert_eq!(image.records_applied, 5);
    }

    #[test]
    fn a_leader_change_raises_both_epochs_and_an_isr_change_only_the_partition_epoch() {
        let (image, _) = replay(Arc::new(MetadataImage::default()), topic("t", 1, 1));
        let change = |leader, isr| MetadataRecord::PartitionChange {
            topic: "t".into(),
            index: 0,
            leader,
            isr,
            replicas: None,
        };
        let (image, _) = replay(image, vec![change(None, Some(vec![1]))]);
        let p = image.topic("t").unwrap().partition(0).unwrap().clone();
        assert_eq!((p.leader, p.leader_epoch, p.partition_epoch), (1, 0, 1));
        let (image, changes) = replay(image, vec![change(Some(2), Some(vec![2]))]);
        let p = image.topic("t").unwrap().partition(0).unwrap().clone();
        assert_eq!((p.leader, p.leader_epoch, p.partition_epoch), (2, 1, 2));
        assert_eq!(p.isr, vec![2]);
        assert_eq!(changes[0].added_partitions(), 1..1);
    }

    #[test]
    fn removing_and_recreating_a_topic_shows_as_removed_and_all_new() {
        let (image, _) = replay(Arc::new(MetadataImage::default()), topic("t", 1, 2));
        let mut records = vec![MetadataRecord::RemoveTopic { name: "t".into() }];
        records.extend(topic("t", 2, 1));
        let (image, changes) = replay(image, records);
        assert_eq!(image.topic("t").map(|t| t.id), Some([2; 16]));
        assert!(changes[0].removed());
        assert_eq!(changes[0].added_partitions(), 0..1);
        let (_, changes) = replay(
            image,
            vec![MetadataRecord::RemoveTopic { name: "t".into() }],
        );
        assert!(changes[0].removed());
        assert!(changes[0].added_partitions().is_empty());
    }

    #[test]
    fn records_that_do_not_fit_are_refused() {
        let mut delta = MetadataDelta::new(Arc::new(MetadataImage::default()));
        let orphan = MetadataRecord::Partition {
            topic: "none".into(),
            index: 0,
            partition: PartitionImage::new(vec![1]),
        };
        assert_eq!(
            delta.replay(orphan),
            Err(DeltaError::UnknownTopic("none".into()))
        );
        for record in topic("t", 1, 1) {
            delta.replay(record).unwrap();
        }
        let skipped = MetadataRecord::Partition {
            topic: "t".into(),
            index: 5,
            partition: PartitionImage::new(vec![1]),
        };
        assert!(matches!(
            delta.replay(skipped),
            Err(DeltaError::BadPartition { .. })
        ));
        let again = MetadataRecord::Topic {
            name: "t".into(),
            id: [9; 16],
        };
        assert_eq!(
            delta.replay(again),
            Err(DeltaError::TopicExists("t".into()))
        );
        let fence = MetadataRecord::FenceBroker { id: 7, epoch: 0 };
        assert_eq!(delta.replay(fence), Err(DeltaError::UnknownBroker(7)));
    }

    #[test]
    fn broker_configs_replay_and_survive_a_snapshot() {
        let set = |resource: &str, key: &str, value: Option<&str>| MetadataRecord::BrokerConfig {
            resource: resource.into(),
            key: key.into(),
            value: value.map(Into::into),
        };
        let (image, changes) = replay(
            Arc::new(MetadataImage::default()),
            vec![
                set("", "log.retention.ms", Some("1000")),
                set("2", "num.replica.fetchers", Some("3")),
                set("2", "num.replica.fetchers", Some("4")),
            ],
        );
        assert!(changes.is_empty(), "no topic changed");
        assert_eq!(
            image.broker_configs("2").get("num.replica.fetchers"),
            Some(&"4".to_owned())
        );
        let (copy, _) = replay(Arc::new(MetadataImage::default()), image_records(&image));
        assert_eq!(copy.broker_configs, image.broker_configs);

        let wanted: BTreeMap<String, String> = [("log.retention.ms".into(), "2000".into())].into();
        let records = broker_config_records(&image, "", &wanted);
        assert_eq!(records, vec![set("", "log.retention.ms", Some("2000"))]);
        let records = broker_config_records(&image, "2", &BTreeMap::new());
        let (image, _) = replay(image, records);
        assert!(
            !image.broker_configs.contains_key("2"),
            "an emptied resource is gone"
        );
    }

    #[test]
    fn fencing_an_old_registration_leaves_the_new_one_alone() {
        let broker = |epoch| BrokerImage {
            id: 1,
            host: "h".into(),
            port: 1,
            epoch,
            fenced: false,
        };
        let (image, _) = replay(
            Arc::new(MetadataImage::default()),
            vec![MetadataRecord::RegisterBroker(broker(5))],
        );
        let (image, _) = replay(image, vec![MetadataRecord::FenceBroker { id: 1, epoch: 4 }]);
        assert_eq!(image.live_brokers().count(), 1);
        let (image, _) = replay(image, vec![MetadataRecord::FenceBroker { id: 1, epoch: 5 }]);
        assert_eq!(image.live_brokers().count(), 0);
    }
}
