//! Partition offsets asked of each partition's leader with ListOffsets: the log start, the
//! high watermark, the log end, or the first offset at a time. Shared by topic describe and
//! the group commands.

use std::collections::BTreeMap;

use kafka_protocol::messages::list_offsets_request::{ListOffsetsPartition, ListOffsetsTopic};
use kafka_protocol::messages::{BrokerId, ListOffsetsRequest, MetadataResponse};
use sluice_broker::error_codes as code;

use super::error::CliError;
use super::session::{topic_name, Session};

/// ListOffsets timestamps for the log start and the latest offset.
pub const EARLIEST: i64 = -2;
pub const LATEST: i64 = -1;
/// A consumer's replica id: its LATEST is the high watermark.
pub const CONSUMER: i32 = -1;
/// The debugging replica id Kafka's tools send: its LATEST is the log end.
pub const DEBUGGING: i32 = -2;

/// A partition and the broker leading it (-1: none).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Led {
    pub topic: String,
    pub partition: i32,
    pub leader: i32,
}

/// Why a partition's offset is not known.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Missing {
    /// The leader answered with this Kafka error code (LEADER_NOT_AVAILABLE with no leader).
    Kafka(i16),
    /// The leader could not be asked; what went wrong.
    Unreached(String),
}

impl std::fmt::Display for Missing {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Missing::Kafka(error_code) => f.write_str(&code::name(*error_code)),
            Missing::Unreached(why) => f.write_str(why),
        }
    }
}

impl Missing {
    /// This as an error of the command, for a partition it cannot do without.
    pub fn into_error(self, topic: &str, partition: i32) -> CliError {
        let resource = format!("partition {topic}:{partition}");
        match self {
            Missing::Kafka(error_code) => CliError::Kafka {
                api: "ListOffsets",
                resource,
                error_code,
                message: None,
            },
            Missing::Unreached(why) => CliError::Kafka {
                api: "ListOffsets",
                resource,
                error_code: code::LEADER_NOT_AVAILABLE,
                message: Some(why),
            },
        }
    }
}

/// Each partition's offset, or why there is none.
pub type Found = BTreeMap<(String, i32), Result<i64, Missing>>;

/// The partitions of `topics` in a Metadata answer with their leaders (all topics for
/// `None`).
pub fn leaders(metadata: &MetadataResponse, topics: Option<&[String]>) -> Vec<Led> {
    let mut out = Vec::new();
    for topic in &metadata.topics {
        let Some(name) = topic.name.as_ref().map(|n| n.0.to_string()) else {
            continue;
        };
        if topics.is_some_and(|wanted| !wanted.contains(&name)) {
            continue;
        }
        for partition in &topic.partitions {
            out.push(Led {
                topic: name.clone(),
                partition: partition.partition_index,
                leader: partition.leader_id.0,
            });
        }
    }
    out.sort_by(|a, b| (&a.topic, a.partition).cmp(&(&b.topic, b.partition)));
    out
}

/// The offset for `timestamp` of every partition in `partitions`, one request per leader.
pub async fn at_leaders(
    session: &mut Session,
    partitions: &[Led],
    timestamp: i64,
    replica_id: i32,
) -> Found {
    let mut found = Found::new();
    let mut by_leader: BTreeMap<i32, Vec<&Led>> = BTreeMap::new();
    for led in partitions {
        if led.leader < 0 {
            let none = Missing::Kafka(code::LEADER_NOT_AVAILABLE);
            found.insert((led.topic.clone(), led.partition), Err(none));
        } else {
            by_leader.entry(led.leader).or_default().push(led);
        }
    }
    for (leader, led) in by_leader {
        let answers = ask_leader(session, leader, &led, timestamp, replica_id).await;
        for one in &led {
            let key = (one.topic.clone(), one.partition);
            let answer = match &answers {
                Ok(answers) => answers.get(&key).cloned().unwrap_or_else(|| {
                    let why = format!("broker {leader} left the partition out of its answer");
                    Err(Missing::Unreached(why))
                }),
                Err(reason) => Err(Missing::Unreached(reason.clone())),
            };
            found.insert(key, answer);
        }
    }
    found
}

/// One ListOffsets to `leader` for its partitions; the whole request's failure as text.
async fn ask_leader(
    session: &mut Session,
    leader: i32,
    partitions: &[&Led],
    timestamp: i64,
    replica_id: i32,
) -> Result<Found, String> {
    let mut topics: BTreeMap<&str, Vec<ListOffsetsPartition>> = BTreeMap::new();
    for led in partitions {
        topics.entry(led.topic.as_str()).or_default().push(
            ListOffsetsPartition::default()
                .with_partition_index(led.partition)
                .with_timestamp(timestamp),
        );
    }
    let request = ListOffsetsRequest::default()
        .with_replica_id(BrokerId(replica_id))
        .with_topics(
            topics
                .into_iter()
                .map(|(name, partitions)| {
                    ListOffsetsTopic::default()
                        .with_name(topic_name(name))
                        .with_partitions(partitions)
                })
                .collect(),
        );
    let conn = session.broker(leader).await.map_err(|e| e.to_string())?;
    let answer = conn.call(&request).await.map_err(|e| e.to_string())?;
    let mut found = Found::new();
    for topic in &answer.topics {
        for partition in &topic.partitions {
            let key = (topic.name.0.to_string(), partition.partition_index);
            let value = if partition.error_code == code::NONE {
                Ok(partition.offset)
            } else {
                Err(Missing::Kafka(partition.error_code))
            };
            found.insert(key, value);
        }
    }
    Ok(found)
}
