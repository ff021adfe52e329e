//! Metadata, and topic creation (explicit or automatic), which always runs on core 0 so that
//! two cores never create the same topic at once.

use std::collections::BTreeMap;
use std::rc::Rc;
use std::sync::Arc;

use kafka_protocol::messages::metadata_response::{
    MetadataResponseBroker, MetadataResponsePartition, MetadataResponseTopic,
};
use kafka_protocol::messages::{BrokerId, MetadataRequest, MetadataResponse, TopicName};
use kafka_protocol::protocol::StrBytes;
use sluice_net::RequestHeader;

use crate::core::Core;
use crate::error_codes as code;
use crate::topics::{self, TopicInfo};

/// Largest partition count a topic may have; bounds the work and memory of one request.
pub const TOPIC_PARTITIONS_MAX: i32 = 10_000;

/// The topic, created with `num.partitions` if it is unknown and auto-creation is on.
pub async fn ensure_topic(core: &Rc<Core>, name: &str) -> Result<Arc<TopicInfo>, i16> {
    if let Some(topic) = core.shared.topics.get(name) {
        return Ok(topic);
    }
    if !topics::valid_topic_name(name) {
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
            .topics
            .get(name)
            .ok_or(code::UNKNOWN_TOPIC_OR_PARTITION),
        Err(error_code) => Err(error_code),
    }
}

/// Creates a topic: persists its description, opens its logs on their owner cores, then
/// publishes it to every core.
pub async fn create_topic(
    core: &Rc<Core>,
    name: &str,
    partitions: i32,
    configs: BTreeMap<String, String>,
) -> Result<Arc<TopicInfo>, i16> {
    if !topics::valid_topic_name(name) {
        return Err(code::INVALID_TOPIC_EXCEPTION);
    }
    if !(1..=TOPIC_PARTITIONS_MAX).contains(&partitions) {
        return Err(code::INVALID_PARTITIONS);
    }
    let name = name.to_owned();
    let created = core
        .invoke(0, move |admin| async move {
            let _serial = admin.admin.lock().await;
            if admin.shared.topics.get(&name).is_some() {
                return Err(code::TOPIC_ALREADY_EXISTS);
            }
            let topic = Arc::new(TopicInfo::new(
                &name,
                topics::new_topic_id(),
                partitions,
                configs,
            ));
            publish(&admin, topic).await
        })
        .await;
    created.unwrap_or(Err(code::UNKNOWN_SERVER_ERROR))
}

/// Writes the topic file, opens the owned logs on every core, and makes the topic visible.
/// Runs on core 0 under the admin lock.
pub async fn publish(admin: &Rc<Core>, topic: Arc<TopicInfo>) -> Result<Arc<TopicInfo>, i16> {
    let path = topics::topic_file(&admin.shared.config.log_dir, &topic);
    let text = topics::encode_topic_file(&topic);
    if let Err(error) = write_atomically(&path, text.into_bytes()).await {
        tracing::error!(topic = %topic.name, %error, "cannot persist topic");
        return Err(code::KAFKA_STORAGE_ERROR);
    }
    for target in 0..admin.shared.cores {
        let to_open = topic.clone();
        let opened = admin
            .invoke(target, move |owner| async move {
                owner.open_owned(&to_open).await.map_err(|e| e.to_string())
            })
            .await;
        if let Some(Err(error)) = opened {
            tracing::error!(topic = %topic.name, core = target, %error, "cannot open partition logs");
            return Err(code::KAFKA_STORAGE_ERROR);
        }
    }
    admin.shared.topics.insert(topic.clone());
    Ok(topic)
}

/// Changes an existing topic: `change` runs on core 0 under the admin lock, then the result is
/// persisted and every core uses it (new partitions opened, new configs applied to logs).
/// Errors carry a Kafka code and a message for the client (empty when there is none).
pub async fn update_topic(
    core: &Rc<Core>,
    name: String,
    validate_only: bool,
    change: impl FnOnce(&TopicInfo) -> Result<TopicInfo, (i16, String)> + Send + 'static,
) -> Result<(), (i16, String)> {
    let done = core
        .invoke(0, move |admin| async move {
            let _serial = admin.admin.lock().await;
            let topic = admin
                .shared
                .topics
                .get(&name)
                .ok_or((code::UNKNOWN_TOPIC_OR_PARTITION, String::new()))?;
            let changed = change(&topic)?;
            if validate_only {
                return Ok(());
            }
            let updated = publish(&admin, Arc::new(changed))
                .await
                .map_err(|error_code| (error_code, String::new()))?;
            for target in 0..admin.shared.cores {
                let updated = updated.clone();
                admin
                    .invoke(target, move |owner| async move {
                        owner.reconfigure_owned(&updated).await
                    })
                    .await;
            }
            Ok(())
        })
        .await;
    done.unwrap_or(Err((code::UNKNOWN_SERVER_ERROR, String::new())))
}

/// Replaces the file at `path` with `bytes` through storage's checkpoint writer (temp file,
/// fsync, rename, fsync of the directory), so a reader sees the old or the new file. On
/// failure the temp file is removed here: storage's recovery sweeps temp files out of log
/// directories, but nothing sweeps the broker's metadata directory.
pub async fn write_atomically(path: &std::path::Path, bytes: Vec<u8>) -> std::io::Result<()> {
    use sluice_storage::checkpoint::{write_atomic, TEMP_SUFFIX};
    let dir = path.parent().filter(|dir| !dir.as_os_str().is_empty());
    let name = path.file_name().and_then(|name| name.to_str());
    let (Some(dir), Some(name)) = (dir, name) else {
        let message = format!("{} names no file in a directory", path.display());
        return Err(std::io::Error::new(
            std::io::ErrorKind::InvalidInput,
            message,
        ));
    };
    let written = write_atomic(&sluice_storage::RealDisk, dir, name, bytes).await;
    if written.is_err() {
        let temp = dir.join(format!("{name}{TEMP_SUFFIX}"));
        if let Err(error) = compio::fs::remove_file(&temp).await {
            if error.kind() != std::io::ErrorKind::NotFound {
                tracing::warn!(file = %temp.display(), %error, "cannot remove a temp file");
            }
        }
    }
    written
}

pub async fn handle(
    core: &Rc<Core>,
    header: &RequestHeader,
    request: MetadataRequest,
) -> MetadataResponse {
    let shared = &core.shared;
    // Versions 0-3 have no flag; Kafka auto-creates for them when the broker allows it.
    let may_create = header.api_version < 4 || request.allow_auto_topic_creation;
    let mut topics_out = Vec::new();
    match request.topics {
        None => {
            for topic in shared.topics.all() {
                topics_out.push(describe(&topic, shared.config.node_id, header.api_version));
            }
        }
        Some(requested) => {
            for wanted in requested {
                let Some(name) = wanted.name else { continue };
                let name = name.0.to_string();
                let found = if may_create {
                    ensure_topic(core, &name).await
                } else {
                    shared
                        .topics
                        .get(&name)
                        .ok_or(code::UNKNOWN_TOPIC_OR_PARTITION)
                };
                topics_out.push(match found {
                    Ok(topic) => describe(&topic, shared.config.node_id, header.api_version),
                    Err(error_code) => missing(&name, error_code),
                });
            }
        }
    }
    let mut broker = MetadataResponseBroker::default();
    broker.node_id = BrokerId(shared.config.node_id);
    broker.host = StrBytes::from_string(shared.config.advertised_host.clone());
    broker.port = i32::from(shared.config.advertised_port);
    let mut response = MetadataResponse::default();
    response.brokers = vec![broker];
    response.cluster_id = Some(StrBytes::from_string(shared.cluster_id.clone()));
    response.controller_id = BrokerId(shared.config.node_id);
    response.topics = topics_out;
    response
}

fn describe(topic: &TopicInfo, node: i32, version: i16) -> MetadataResponseTopic {
    let mut out = MetadataResponseTopic::default();
    out.name = Some(TopicName(StrBytes::from_string(topic.name.clone())));
    // Fields are set only in the versions that carry them.
    if version >= 10 {
        out.topic_id = uuid::Uuid::from_bytes(topic.id);
    }
    out.is_internal = topic.name.starts_with("__");
    out.partitions = (0..topic.partition_count())
        .map(|index| {
            let mut partition = MetadataResponsePartition::default();
            partition.partition_index = index;
            partition.leader_id = BrokerId(node);
            if version >= 7 {
                partition.leader_epoch = 0;
            }
            partition.replica_nodes = vec![BrokerId(node)];
            partition.isr_nodes = vec![BrokerId(node)];
            partition
        })
        .collect();
    out
}

fn missing(name: &str, error_code: i16) -> MetadataResponseTopic {
    let mut out = MetadataResponseTopic::default();
    out.error_code = error_code;
    out.name = Some(TopicName(StrBytes::from_string(name.to_owned())));
    out
}

#[cfg(test)]
mod tests {
    use super::write_atomically;

    fn run<T>(work: impl std::future::Future<Output = T>) -> T {
        compio::runtime::Runtime::new().unwrap().block_on(work)
    }

    #[test]
    fn replaces_the_file_and_cleans_up_after_a_failed_write() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("topic.properties");
        run(write_atomically(&path, b"old".to_vec())).unwrap();
        run(write_atomically(&path, b"new".to_vec())).unwrap();
        assert_eq!(std::fs::read(&path).unwrap(), b"new");

        // A non-empty directory in the way makes the rename fail after the temp file exists.
        let blocked = dir.path().join("blocked.properties");
        std::fs::create_dir(&blocked).unwrap();
        std::fs::write(blocked.join("inside"), b"x").unwrap();
        assert!(run(write_atomically(&blocked, b"lost".to_vec())).is_err());
        let left: Vec<_> = std::fs::read_dir(dir.path())
            .unwrap()
            .map(|entry| entry.unwrap().file_name())
            .collect();
        assert_eq!(left.len(), 2, "no temp file is left behind: {left:?}");
    }
}
