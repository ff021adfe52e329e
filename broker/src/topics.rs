//! The topic registry every reactor reads (names, partition counts, topic configs), the shard
//! table that names each partition's owner core, and topic metadata persisted under `log.dirs`.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};

use event_listener::Event;

/// Longest topic name Kafka accepts.
pub const TOPIC_NAME_LENGTH_MAX: usize = 249;

/// Directory under `log.dirs` that holds broker metadata; its name cannot parse as a partition.
pub const META_DIR: &str = "__sluice_meta";

/// Kafka's topic name rule: 1..=249 of `[a-zA-Z0-9._-]`, and not `.` or `..`.
pub fn valid_topic_name(name: &str) -> bool {
    let allowed = |c: char| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-');
    !name.is_empty()
        && name.len() <= TOPIC_NAME_LENGTH_MAX
        && name != "."
        && name != ".."
        && name.chars().all(allowed)
}

/// The core that owns a partition. Partitions of one topic go round-robin over the cores from
/// a per-topic starting core, so a topic's load spreads and different topics start apart.
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

/// What every core knows about one partition. The event fires after each append, so waiting
/// fetches on any core wake without polling.
pub struct PartitionInfo {
    pub appended: Arc<Event>,
}

/// What every core knows about a topic.
pub struct TopicInfo {
    pub name: String,
    pub id: [u8; 16],
    pub partitions: Vec<PartitionInfo>,
    pub configs: BTreeMap<String, String>,
}

impl TopicInfo {
    pub fn new(
        name: &str,
        id: [u8; 16],
        partitions: i32,
        configs: BTreeMap<String, String>,
    ) -> Self {
        let partitions = (0..partitions)
            .map(|_| PartitionInfo {
                appended: Arc::new(Event::new()),
            })
            .collect();
        Self {
            name: name.to_owned(),
            id,
            partitions,
            configs,
        }
    }

    /// The same topic with `count` partitions; existing partitions keep their events so
    /// fetches already waiting on them still wake.
    pub fn grown(&self, count: i32) -> Self {
        debug_assert!(count >= self.partition_count());
        let mut partitions: Vec<PartitionInfo> = self
            .partitions
            .iter()
            .map(|p| PartitionInfo {
                appended: p.appended.clone(),
            })
            .collect();
        partitions.resize_with(count as usize, || PartitionInfo {
            appended: Arc::new(Event::new()),
        });
        Self {
            name: self.name.clone(),
            id: self.id,
            partitions,
            configs: self.configs.clone(),
        }
    }

    /// The same topic with other config overrides.
    pub fn with_configs(&self, configs: BTreeMap<String, String>) -> Self {
        Self {
            configs,
            ..self.grown(self.partition_count())
        }
    }

    pub fn partition_count(&self) -> i32 {
        self.partitions.len() as i32
    }
}

/// The registry. Reads happen per request and writes only on topic creation, deletion and
/// config changes, so one lock shared by all cores never sits on the data path for long.
#[derive(Default)]
pub struct Topics {
    map: RwLock<BTreeMap<String, Arc<TopicInfo>>>,
}

impl Topics {
    pub fn get(&self, name: &str) -> Option<Arc<TopicInfo>> {
        self.map
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .get(name)
            .cloned()
    }

    pub fn all(&self) -> Vec<Arc<TopicInfo>> {
        self.map
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .values()
            .cloned()
            .collect()
    }

    pub fn insert(&self, topic: Arc<TopicInfo>) {
        let mut map = self.map.write().unwrap_or_else(|e| e.into_inner());
        map.insert(topic.name.clone(), topic);
    }

    pub fn remove(&self, name: &str) -> Option<Arc<TopicInfo>> {
        self.map
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .remove(name)
    }
}

/// Path of a partition's directory: `<log.dirs>/<topic>-<partition>`.
pub fn partition_dir(log_dir: &Path, topic: &str, partition: i32) -> PathBuf {
    log_dir.join(format!("{topic}-{partition}"))
}

/// Where a deleted topic's partition directory goes when it cannot be removed at once:
/// `<topic>-<partition>.<random hex>-delete`, as Kafka names them. The suffix keeps the name
/// from parsing as a partition directory.
pub fn set_aside_dir(dir: &Path) -> PathBuf {
    let mut name = dir.file_name().unwrap_or_default().to_os_string();
    name.push(format!(".{}{SET_ASIDE_SUFFIX}", hex(&new_topic_id())));
    dir.with_file_name(name)
}

const SET_ASIDE_SUFFIX: &str = "-delete";

/// Removes the directories `set_aside_dir` named in `log_dir`. Runs at start-up, before any
/// reactor, so it may block.
pub fn remove_set_aside(log_dir: &Path) {
    for entry in std::fs::read_dir(log_dir).into_iter().flatten().flatten() {
        let name = entry.file_name();
        if name.to_str().is_some_and(|n| n.ends_with(SET_ASIDE_SUFFIX)) {
            if let Err(error) = std::fs::remove_dir_all(entry.path()) {
                tracing::warn!(dir = %entry.path().display(), %error, "cannot remove a deleted partition");
            }
        }
    }
}

/// Splits a directory name `<topic>-<partition>` into its parts.
pub fn parse_partition_dir(name: &str) -> Option<(&str, i32)> {
    let (topic, partition) = name.rsplit_once('-')?;
    let partition: i32 = partition.parse().ok()?;
    (valid_topic_name(topic) && partition >= 0).then_some((topic, partition))
}

/// A topic's persisted description: `__sluice_meta/topics/<topic id>.properties`, with
/// `name`, `partitions`, `id` and the topic's config overrides. Files are named by id because a
/// 249-character topic name plus a suffix would pass the file system's 255-byte name limit.
pub fn topic_file(log_dir: &Path, topic: &TopicInfo) -> PathBuf {
    log_dir
        .join(META_DIR)
        .join("topics")
        .join(format!("{}.properties", hex(&topic.id)))
}

pub fn encode_topic_file(topic: &TopicInfo) -> String {
    let mut text = format!(
        "name={}\npartitions={}\nid={}\n",
        topic.name,
        topic.partition_count(),
        hex(&topic.id)
    );
    for (key, value) in &topic.configs {
        text.push_str(&format!("config.{key}={value}\n"));
    }
    text
}

/// Parses a topic file; `None` when it is damaged, so the caller can fall back to directories.
pub fn decode_topic_file(text: &str) -> Option<TopicInfo> {
    let mut name = None;
    let mut partitions = None;
    let mut id = None;
    let mut configs = BTreeMap::new();
    for line in text.lines() {
        let (key, value) = line.split_once('=')?;
        match key {
            "name" => name = Some(value).filter(|n| valid_topic_name(n)),
            "partitions" => partitions = value.parse::<i32>().ok().filter(|p| *p > 0),
            "id" => id = unhex(value),
            _ => {
                let config = key.strip_prefix("config.")?;
                configs.insert(config.to_owned(), value.to_owned());
            }
        }
    }
    Some(TopicInfo::new(name?, id?, partitions?, configs))
}

fn hex(bytes: &[u8; 16]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn unhex(text: &str) -> Option<[u8; 16]> {
    if text.len() != 32 || !text.is_ascii() {
        return None;
    }
    let mut out = [0u8; 16];
    for (i, slot) in out.iter_mut().enumerate() {
        *slot = u8::from_str_radix(&text[i * 2..i * 2 + 2], 16).ok()?;
    }
    Some(out)
}

/// A random 16-byte id for a new topic, from the kernel's generator.
pub fn new_topic_id() -> [u8; 16] {
    let mut id = [0u8; 16];
    let filled = rustix::rand::getrandom(&mut id, rustix::rand::GetRandomFlags::empty());
    if filled.is_err() {
        // No entropy source is a broken host, but a topic id only needs to be unique here.
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos());
        id = nanos.to_le_bytes();
    }
    id
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(name: &str, expected: bool) {
        assert_eq!(valid_topic_name(name), expected, "{name:?}");
    }

    #[test]
    fn topic_names_follow_kafka() {
        check("orders", true);
        check("a.b_c-D9", true);
        check("", false);
        check(".", false);
        check("..", false);
        check("has space", false);
        check("slash/no", false);
        check(&"x".repeat(249), true);
        check(&"x".repeat(250), false);
    }

    #[test]
    fn partitions_of_a_topic_spread_over_cores() {
        let cores = 4;
        let owners: Vec<usize> = (0..8).map(|p| owner_core("t", p, cores)).collect();
        for core in 0..cores {
            assert_eq!(owners.iter().filter(|&&c| c == core).count(), 2);
        }
        assert_eq!(owner_core("t", 3, 1), 0);
    }

    #[test]
    fn set_aside_dirs_are_not_partition_dirs() {
        let aside = set_aside_dir(Path::new("/data/orders-3"));
        let name = aside.file_name().and_then(|n| n.to_str()).unwrap();
        assert!(
            name.starts_with("orders-3.") && name.ends_with("-delete"),
            "{name}"
        );
        assert_eq!(parse_partition_dir(name), None);
        assert_eq!(aside.parent(), Some(Path::new("/data")));
    }

    #[test]
    fn partition_dirs_round_trip() {
        assert_eq!(parse_partition_dir("my-topic-12"), Some(("my-topic", 12)));
        assert_eq!(parse_partition_dir(META_DIR), None);
        assert_eq!(parse_partition_dir("-1"), None);
        assert_eq!(parse_partition_dir("topic-x"), None);
        assert_eq!(parse_partition_dir("x--1"), Some(("x-", 1)));
    }

    #[test]
    fn topic_files_round_trip() {
        let mut configs = BTreeMap::new();
        configs.insert("retention.ms".to_owned(), "1000".to_owned());
        let topic = TopicInfo::new("t", new_topic_id(), 3, configs);
        let back = decode_topic_file(&encode_topic_file(&topic)).expect("parses");
        assert_eq!(back.name, "t");
        assert_eq!(back.partition_count(), 3);
        assert_eq!(back.id, topic.id);
        assert_eq!(back.configs, topic.configs);
        assert!(decode_topic_file("name=t\npartitions=x\n").is_none());
        let long = TopicInfo::new(&"x".repeat(249), new_topic_id(), 1, BTreeMap::new());
        let file = topic_file(Path::new("/d"), &long);
        assert!(file.file_name().unwrap().len() < 255);
    }
}
