//! Topic lifecycle through the metadata. Creating, growing, reconfiguring and deleting a topic
//! become metadata records; a delta replays them over the image in force; the source persists
//! what changed; and every core brings the partitions it owns in line with the change (opens
//! new ones, takes its role as leader or follower, applies new configs) before the new image
//! is published, or, for topics removed, after it. Changes run on core 0 under its admin lock,
//! so two of them never interleave. Handlers and the group coordinator both come here.

use std::collections::BTreeMap;
use std::rc::Rc;
use std::sync::Arc;

use sluice_storage::StorageError;

use crate::clock::now_ms;
use crate::error_codes as code;
use crate::layout;
use crate::metadata::{
    local, MetadataDelta, MetadataImage, MetadataRecord, PartitionImage, TopicChange, TopicImage,
};
use crate::partition::{sole_holder, Partition};
use crate::shard::Shard;

/// Largest partition count a topic may have; bounds the work and memory of one request.
pub const TOPIC_PARTITIONS_MAX: i32 = 10_000;

/// The topic, created with `num.partitions` if it is unknown and auto-creation is on.
pub async fn ensure_topic(core: &Rc<Shard>, name: &str) -> Result<Arc<TopicImage>, i16> {
    if let Some(topic) = core.shared.metadata.topic(name) {
        return Ok(topic);
    }
    if !layout::valid_topic_name(name) {
        return Err(code::INVALID_TOPIC_EXCEPTION);
    }
    if !core.shared.config.auto_create_topics {
        return Err(code::UNKNOWN_TOPIC_OR_PARTITION);
    }
    let partitions = core.shared.config.num_partitions;
    match create_topic(core, name, partitions, BTreeMap::new()).await {
        Ok(topic) => Ok(topic),
        // Another request created it meanwhile.
        Err(code::TOPIC_ALREADY_EXISTS) => core
            .shared
            .metadata
            .topic(name)
            .ok_or(code::UNKNOWN_TOPIC_OR_PARTITION),
        Err(error_code) => Err(error_code),
    }
}

/// Creates a topic whose partitions are placed on this broker.
pub async fn create_topic(
    core: &Rc<Shard>,
    name: &str,
    partitions: i32,
    configs: BTreeMap<String, String>,
) -> Result<Arc<TopicImage>, i16> {
    if !layout::valid_topic_name(name) {
        return Err(code::INVALID_TOPIC_EXCEPTION);
    }
    if !(1..=TOPIC_PARTITIONS_MAX).contains(&partitions) {
        return Err(code::INVALID_PARTITIONS);
    }
    let name = name.to_owned();
    let created = core
        .invoke(0, move |admin| async move {
            let _serial = admin.admin.lock().await;
            let image = admin.shared.metadata.image();
            if image.topic(&name).is_some() {
                return Err(code::TOPIC_ALREADY_EXISTS);
            }
            let topic = TopicImage {
                name: name.clone(),
                id: crate::ids::random_id(),
                partitions: (0..partitions)
                    .map(|_| PartitionImage::new(place_replicas(&admin)))
                    .collect(),
                configs,
            };
            let records = crate::metadata::delta::topic_records(&topic);
            let image = commit(&admin, records).await?;
            image
                .topic(&name)
                .cloned()
                .ok_or(code::UNKNOWN_SERVER_ERROR)
        })
        .await;
    created.unwrap_or(Err(code::UNKNOWN_SERVER_ERROR))
}

/// The replicas of a new partition: this broker, the one broker of a local cluster.
fn place_replicas(admin: &Shard) -> Vec<i32> {
    vec![admin.shared.config.node_id]
}

/// The records that add partitions `from..to` to `topic`, placed as new partitions are.
pub fn partition_records(core: &Shard, topic: &str, from: i32, to: i32) -> Vec<MetadataRecord> {
    (from..to)
        .map(|index| MetadataRecord::Partition {
            topic: topic.to_owned(),
            index,
            partition: PartitionImage::new(place_replicas(core)),
        })
        .collect()
}

/// Changes an existing topic: `change` runs on core 0 under the admin lock and says what to
/// change as records; they are then committed like any change. Errors carry a Kafka code and a
/// message for the client (empty when there is none).
pub async fn update_topic(
    core: &Rc<Shard>,
    name: String,
    validate_only: bool,
    change: impl FnOnce(&Shard, &TopicImage) -> Result<Vec<MetadataRecord>, (i16, String)>
        + Send
        + 'static,
) -> Result<(), (i16, String)> {
    let done = core
        .invoke(0, move |admin| async move {
            let _serial = admin.admin.lock().await;
            let topic = admin
                .shared
                .metadata
                .topic(&name)
                .ok_or((code::UNKNOWN_TOPIC_OR_PARTITION, String::new()))?;
            let records = change(&admin, &topic)?;
            if validate_only {
                return Ok(());
            }
            commit(&admin, records)
                .await
                .map(|_| ())
                .map_err(|error_code| (error_code, String::new()))
        })
        .await;
    done.unwrap_or(Err((code::UNKNOWN_SERVER_ERROR, String::new())))
}

/// Deletes a topic: it leaves the image at once, then its partitions and its file go.
pub async fn delete_topic(core: &Rc<Shard>, name: String) -> Result<(), i16> {
    let done = core
        .invoke(0, move |admin| async move {
            let _serial = admin.admin.lock().await;
            if admin.shared.metadata.topic(&name).is_none() {
                return Err(code::UNKNOWN_TOPIC_OR_PARTITION);
            }
            commit(&admin, vec![MetadataRecord::RemoveTopic { name }])
                .await
                .map(|_| ())
        })
        .await;
    done.unwrap_or(Err(code::UNKNOWN_SERVER_ERROR))
}

/// Replays `records` over the image in force and applies the result. Runs on core 0 under
/// the admin lock.
async fn commit(
    admin: &Rc<Shard>,
    records: Vec<MetadataRecord>,
) -> Result<Arc<MetadataImage>, i16> {
    let mut delta = MetadataDelta::new(admin.shared.metadata.image());
    for record in records {
        if let Err(error) = delta.replay(record) {
            tracing::error!(%error, "a metadata change does not fit the image");
            return Err(code::UNKNOWN_SERVER_ERROR);
        }
    }
    let (image, changes) = delta.apply();
    apply(admin, image, changes).await
}

/// Persists `changes`, has every core follow them, and publishes `image`: partitions are
/// opened before the image that names them is published, and removed only after the image
/// without them is, so a request never finds a published partition missing on its core.
async fn apply(
    admin: &Rc<Shard>,
    image: Arc<MetadataImage>,
    changes: Vec<TopicChange>,
) -> Result<Arc<MetadataImage>, i16> {
    let log_dir = admin.shared.config.log_dir.clone();
    if let Err(error) = local::write_topics(&log_dir, &changes).await {
        tracing::error!(%error, "cannot persist topic metadata");
        return Err(code::KAFKA_STORAGE_ERROR);
    }
    let changes = Arc::new(changes);
    let following = changes.clone();
    let answers = admin
        .broadcast(move |core| async move { follow(&core, &following).await })
        .await;
    let mut failed = false;
    for (target, answer) in answers.into_iter().enumerate() {
        if let Some(Err(error)) = answer {
            tracing::error!(core = target, %error, "cannot open partition logs");
            failed = true;
        }
    }
    if failed {
        return Err(code::KAFKA_STORAGE_ERROR);
    }
    admin.shared.metadata.publish(image.clone());
    let deleted: Vec<&TopicChange> = changes.iter().filter(|c| c.after.is_none()).collect();
    if !deleted.is_empty() {
        for change in &deleted {
            admin.shared.wakeups.remove_topic(&change.name);
        }
        let dropping = changes.clone();
        let answers = admin
            .broadcast(move |core| async move { drop_deleted(&core, &dropping).await })
            .await;
        for (target, answer) in answers.into_iter().enumerate() {
            if let Some(Err(error)) = answer {
                tracing::error!(core = target, %error, "deleting partition files failed");
            }
        }
        local::remove_topics(&log_dir, &changes).await;
    }
    Ok(image)
}

/// Brings this core's partitions in line with `changes`, except for topics deleted outright
/// (see `drop_deleted`): the partitions of a topic re-created under a new id are dropped,
/// partitions added and owned here are opened, every owned partition takes the role its image
/// gives this broker, and changed configs are applied.
pub async fn follow(core: &Shard, changes: &[TopicChange]) -> Result<(), StorageError> {
    for change in changes {
        let Some(after) = &change.after else {
            continue;
        };
        if change.removed() {
            drop_partitions(core, &change.name).await?;
        }
        let config = core.shared.log_config(&after.configs);
        let added = change.added_partitions();
        for (index, image) in (0..).zip(&after.partitions) {
            if core.shared.owner(&after.name, index) != core.id {
                continue;
            }
            if added.contains(&index) && !core.partitions.contains(&after.name, index) {
                let dir = layout::partition_dir(&core.shared.config.log_dir, &after.name, index);
                let appended = core.shared.wakeups.event(&after.name, index);
                let node = core.shared.config.node_id;
                let opened = Partition::open(dir, config.clone(), node, appended, now_ms()).await?;
                core.partitions.insert((after.name.clone(), index), opened);
            }
            let Some(partition) = core.partitions.get(&after.name, index) else {
                continue;
            };
            let before = change.before.as_ref().and_then(|b| b.partition(index));
            if added.contains(&index) || before != Some(image) {
                take_role(core, &partition, image).await;
            }
            if change.configs_changed() {
                partition.reconfigure(config.clone()).await;
            }
        }
    }
    Ok(())
}

/// Leads or follows as the partition's image says.
async fn take_role(core: &Shard, partition: &Partition, image: &PartitionImage) {
    let node = core.shared.config.node_id;
    if image.leader == node {
        let (replicas, isr) = (image.replicas.clone(), image.isr.clone());
        partition
            .become_leader(image.leader_epoch, replicas, isr)
            .await;
    } else {
        let leader = (image.leader >= 0).then_some(image.leader);
        partition.become_follower(image.leader_epoch, image.replicas.clone(), leader);
    }
}

/// Removes this core's partitions of every topic `changes` deleted, and their files.
async fn drop_deleted(core: &Shard, changes: &[TopicChange]) -> Result<(), StorageError> {
    for change in changes.iter().filter(|c| c.after.is_none()) {
        drop_partitions(core, &change.name).await?;
    }
    Ok(())
}

/// Removes this core's partitions of `topic` and deletes their files.
async fn drop_partitions(core: &Shard, topic: &str) -> Result<(), StorageError> {
    // Only the indexes: a held `Rc` would keep `sole_holder` waiting.
    let indexes: Vec<i32> = core
        .partitions
        .of_topic(topic)
        .iter()
        .map(|(i, _)| *i)
        .collect();
    for index in indexes {
        let Some(partition) = core.partitions.remove(topic, index) else {
            continue;
        };
        // Wake fetches waiting on it so they see the topic is gone.
        partition.appended().notify(usize::MAX);
        match sole_holder(partition).await {
            Some(partition) => partition.delete().await?,
            None => set_aside(core, topic, index).await?,
        }
    }
    Ok(())
}

/// Renames a partition directory that cannot be deleted yet out of the way, so a topic
/// created under the same name starts empty and start-up neither revives the old one nor
/// keeps it (`layout::remove_set_aside`).
async fn set_aside(core: &Shard, topic: &str, index: i32) -> Result<(), StorageError> {
    let dir = layout::partition_dir(&core.shared.config.log_dir, topic, index);
    let aside = layout::set_aside_dir(&dir);
    tracing::warn!(dir = %dir.display(), aside = %aside.display(),
        "partition still in use when its topic was deleted; removing it at the next start");
    compio::fs::rename(&dir, &aside).await?;
    Ok(())
}
