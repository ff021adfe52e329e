//! The local metadata source: a cluster of one broker whose metadata lives in files under
//! `<log.dirs>/__sluice_meta` (the cluster id, and one file per topic). At start-up the files
//! become records for a delta; after a change, the topics it touched are written back. Every
//! partition has this broker as its one replica, leader and ISR.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use super::delta::{topic_records, MetadataRecord, TopicChange};
use super::image::{BrokerId, BrokerImage, PartitionImage, TopicImage};
use crate::ids;
use crate::layout::{self, write_atomically, META_DIR};

/// Creates the metadata directory and returns the records that describe what is on disk:
/// the cluster id, this broker (registered and the controller), and every topic. Runs at
/// start-up before any reactor, so it may block.
pub fn load(log_dir: &Path, broker: BrokerImage) -> std::io::Result<Vec<MetadataRecord>> {
    std::fs::create_dir_all(topics_dir(log_dir))?;
    let mut records = vec![
        MetadataRecord::ClusterId(load_cluster_id(log_dir)?),
        MetadataRecord::Controller(broker.id),
    ];
    let node = broker.id;
    records.push(MetadataRecord::RegisterBroker(broker));
    for topic in load_topics(log_dir, node) {
        records.extend(topic_records(&topic));
    }
    Ok(records)
}

/// Writes the file of every topic a change created or changed.
pub async fn write_topics(log_dir: &Path, changes: &[TopicChange]) -> std::io::Result<()> {
    for topic in changes.iter().filter_map(|c| c.after.as_ref()) {
        let text = encode_topic_file(topic);
        write_atomically(&topic_file(log_dir, topic.id), text.into_bytes()).await?;
    }
    Ok(())
}

/// Removes the file of every topic a change removed (or re-created under a new id).
pub async fn remove_topics(log_dir: &Path, changes: &[TopicChange]) {
    for change in changes.iter().filter(|c| c.removed()) {
        let Some(before) = &change.before else {
            continue;
        };
        if let Err(error) = compio::fs::remove_file(topic_file(log_dir, before.id)).await {
            tracing::warn!(topic = %before.name, %error, "cannot remove topic file");
        }
    }
}

fn topics_dir(log_dir: &Path) -> PathBuf {
    log_dir.join(META_DIR).join("topics")
}

/// A topic's persisted description: `__sluice_meta/topics/<topic id>.properties`, with
/// `name`, `partitions`, `id` and the topic's config overrides. Files are named by id because a
/// 249-character topic name plus a suffix would pass the file system's 255-byte name limit.
fn topic_file(log_dir: &Path, id: [u8; 16]) -> PathBuf {
    topics_dir(log_dir).join(format!("{}.properties", ids::hex(&id)))
}

fn encode_topic_file(topic: &TopicImage) -> String {
    let mut text = format!(
        "name={}\npartitions={}\nid={}\n",
        topic.name,
        topic.partition_count(),
        ids::hex(&topic.id)
    );
    for (key, value) in &topic.configs {
        text.push_str(&format!("config.{key}={value}\n"));
    }
    text
}

/// A topic on this broker alone: every partition has `node` as its one replica.
fn single_node_topic(
    name: &str,
    id: [u8; 16],
    partitions: i32,
    configs: BTreeMap<String, String>,
    node: BrokerId,
) -> TopicImage {
    TopicImage {
        name: name.to_owned(),
        id,
        partitions: (0..partitions)
            .map(|_| PartitionImage::new(vec![node]))
            .collect(),
        configs,
    }
}

/// Parses a topic file; `None` when it is damaged, so the caller can fall back to directories.
fn decode_topic_file(text: &str, node: BrokerId) -> Option<TopicImage> {
    let mut name = None;
    let mut partitions = None;
    let mut id = None;
    let mut configs = BTreeMap::new();
    for line in text.lines() {
        let (key, value) = line.split_once('=')?;
        match key {
            "name" => name = Some(value).filter(|n| layout::valid_topic_name(n)),
            "partitions" => partitions = value.parse::<i32>().ok().filter(|p| *p > 0),
            "id" => id = ids::unhex(value),
            _ => {
                let config = key.strip_prefix("config.")?;
                configs.insert(config.to_owned(), value.to_owned());
            }
        }
    }
    Some(single_node_topic(name?, id?, partitions?, configs, node))
}

/// The cluster id, created once and kept in `__sluice_meta/cluster.id`.
fn load_cluster_id(log_dir: &Path) -> std::io::Result<String> {
    let path = log_dir.join(META_DIR).join("cluster.id");
    if let Ok(text) = std::fs::read_to_string(&path) {
        let id = text.trim();
        if !id.is_empty() {
            return Ok(id.to_owned());
        }
    }
    let id = ids::hex(&ids::random_id());
    std::fs::write(&path, format!("{id}\n"))?;
    Ok(id)
}

/// Topics from their metadata files, plus any partition directories without one (a topic
/// file lost in a crash must not hide data that is on disk).
fn load_topics(log_dir: &Path, node: BrokerId) -> Vec<TopicImage> {
    let mut found: BTreeMap<String, TopicImage> = BTreeMap::new();
    let topic_dir = topics_dir(log_dir);
    for entry in std::fs::read_dir(&topic_dir)
        .into_iter()
        .flatten()
        .flatten()
    {
        let path = entry.path();
        if path.extension().is_none_or(|e| e != "properties") {
            continue;
        }
        let Ok(text) = std::fs::read_to_string(&path) else {
            continue;
        };
        match decode_topic_file(&text, node) {
            Some(topic) => {
                found.insert(topic.name.clone(), topic);
            }
            None => tracing::warn!(
                file = %path.display(),
                "topic file is damaged; using partition directories"
            ),
        }
    }
    let mut partitions_on_disk: BTreeMap<String, i32> = BTreeMap::new();
    for entry in std::fs::read_dir(log_dir).into_iter().flatten().flatten() {
        let file_name = entry.file_name();
        if let Some((topic, partition)) = file_name.to_str().and_then(layout::parse_partition_dir) {
            let count = partitions_on_disk.entry(topic.to_owned()).or_insert(0);
            *count = (*count).max(partition + 1);
        }
    }
    for (name, count) in partitions_on_disk {
        let known = found.get(&name).map_or(0, |t| t.partition_count());
        if count > known {
            let configs = found.remove(&name).map(|t| t.configs).unwrap_or_default();
            let topic = single_node_topic(&name, ids::random_id(), count, configs, node);
            found.insert(name, topic);
        }
    }
    found.into_values().collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn topic_files_round_trip() {
        let mut configs = BTreeMap::new();
        configs.insert("retention.ms".to_owned(), "1000".to_owned());
        let topic = single_node_topic("t", ids::random_id(), 3, configs, 4);
        let back = decode_topic_file(&encode_topic_file(&topic), 4).expect("parses");
        assert_eq!(back, topic);
        assert_eq!(back.partition(2).map(|p| p.leader), Some(4));
        assert!(decode_topic_file("name=t\npartitions=x\n", 4).is_none());
        let file = topic_file(Path::new("/d"), ids::random_id());
        assert!(file.file_name().unwrap().len() < 255);
    }

    #[test]
    fn partition_directories_without_a_topic_file_still_load() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(dir.path().join("orphan-0")).unwrap();
        std::fs::create_dir_all(dir.path().join("orphan-2")).unwrap();
        let broker = BrokerImage {
            id: 1,
            host: "h".into(),
            port: 9,
            epoch: 0,
            fenced: false,
        };
        let records = load(dir.path(), broker).unwrap();
        let partitions = records
            .iter()
            .filter(|r| matches!(r, MetadataRecord::Partition { topic, .. } if topic == "orphan"))
            .count();
        assert_eq!(partitions, 3);
        assert!(matches!(&records[0], MetadataRecord::ClusterId(id) if id.len() == 32));
    }
}
