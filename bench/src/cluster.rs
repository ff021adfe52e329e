//! Talking to the broker before the load starts: version negotiation with ApiVersions, topic
//! lookup and creation with Metadata and CreateTopics, and start and end offsets with
//! ListOffsets.

use std::net::SocketAddr;
use std::ops::RangeInclusive;
use std::time::{Duration, Instant};

use kafka_protocol::messages::api_versions_response::ApiVersion;
use kafka_protocol::messages::create_topics_request::CreatableTopic;
use kafka_protocol::messages::list_offsets_request::{ListOffsetsPartition, ListOffsetsTopic};
use kafka_protocol::messages::metadata_request::MetadataRequestTopic;
use kafka_protocol::messages::{
    ApiKey, ApiVersionsRequest, BrokerId, CreateTopicsRequest, ListOffsetsRequest, MetadataRequest,
    TopicName,
};
use kafka_protocol::protocol::StrBytes;
use sluice_net::client::Client;

use crate::error::BenchError;

/// Kafka error codes this module acts on.
const UNKNOWN_TOPIC_OR_PARTITION: i16 = 3;
const TOPIC_ALREADY_EXISTS: i16 = 36;

/// ListOffsets timestamps that ask for the log start and the high watermark.
pub const EARLIEST_TIMESTAMP: i64 = -2;
pub const LATEST_TIMESTAMP: i64 = -1;

/// How long a new topic may take to appear in metadata before the run gives up.
const TOPIC_READY_TIMEOUT: Duration = Duration::from_secs(10);
const TOPIC_READY_POLL: Duration = Duration::from_millis(50);
const ADMIN_TIMEOUT_MS: i32 = 30_000;

/// The versions this tool builds requests for. Fetch stops at 12 and Produce at 9 because
/// later versions name topics by id; Metadata stops at 12, where topic names may be null.
const PRODUCE_VERSIONS: RangeInclusive<i16> = 3..=9;
const FETCH_VERSIONS: RangeInclusive<i16> = 4..=12;
const METADATA_VERSIONS: RangeInclusive<i16> = 1..=12;
const CREATE_TOPICS_VERSIONS: RangeInclusive<i16> = 2..=7;
const LIST_OFFSETS_VERSIONS: RangeInclusive<i16> = 1..=7;
/// ApiVersions v3 is flexible and understood by every broker since Kafka 2.4; older brokers
/// answer with error 35 and a v0 body, which this tool does not try to parse.
const API_VERSIONS_VERSION: i16 = 3;

/// The version of each API the run will use: the highest both sides speak.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Versions {
    pub produce: i16,
    pub fetch: i16,
    pub metadata: i16,
    pub create_topics: i16,
    pub list_offsets: i16,
}

pub async fn negotiate(client: &mut Client) -> Result<Versions, BenchError> {
    let request = ApiVersionsRequest::default()
        .with_client_software_name(StrBytes::from_static_str("sluice-bench"))
        .with_client_software_version(StrBytes::from_static_str(env!("CARGO_PKG_VERSION")));
    let response = client.send_request(API_VERSIONS_VERSION, &request).await?;
    if response.error_code != 0 {
        return Err(BenchError::Request {
            during: "ApiVersions",
            error_code: response.error_code,
        });
    }
    choose_versions(&response.api_keys)
}

/// Picks, for each API, the highest version in both the broker's range and ours.
pub fn choose_versions(offered: &[ApiVersion]) -> Result<Versions, BenchError> {
    let pick = |key: ApiKey, api: &'static str, ours: RangeInclusive<i16>| {
        offered
            .iter()
            .find(|offer| offer.api_key == key as i16)
            .and_then(|offer| {
                let high = offer.max_version.min(*ours.end());
                let low = offer.min_version.max(*ours.start());
                (low <= high).then_some(high)
            })
            .ok_or(BenchError::Unsupported {
                api,
                min: *ours.start(),
                max: *ours.end(),
            })
    };
    Ok(Versions {
        produce: pick(ApiKey::Produce, "Produce", PRODUCE_VERSIONS)?,
        fetch: pick(ApiKey::Fetch, "Fetch", FETCH_VERSIONS)?,
        metadata: pick(ApiKey::Metadata, "Metadata", METADATA_VERSIONS)?,
        create_topics: pick(ApiKey::CreateTopics, "CreateTopics", CREATE_TOPICS_VERSIONS)?,
        list_offsets: pick(ApiKey::ListOffsets, "ListOffsets", LIST_OFFSETS_VERSIONS)?,
    })
}

/// Opens a connection that names itself `client_id` in every request header.
pub async fn connect(addr: SocketAddr, client_id: String) -> Result<Client, BenchError> {
    let mut client = Client::connect(addr)
        .await
        .map_err(|source| BenchError::Connect { addr, source })?;
    client.set_client_id(client_id);
    Ok(client)
}

pub fn topic_name(topic: &str) -> TopicName {
    TopicName(StrBytes::from_string(topic.to_owned()))
}

/// The topic's partition count, or None if the broker does not know the topic.
pub async fn partition_count(
    client: &mut Client,
    versions: &Versions,
    topic: &str,
) -> Result<Option<i32>, BenchError> {
    let request = MetadataRequest::default()
        .with_topics(Some(vec![
            MetadataRequestTopic::default().with_name(Some(topic_name(topic)))
        ]))
        // Only from version 4; earlier brokers create topics on Metadata as they like.
        .with_allow_auto_topic_creation(false);
    let response = client.send_request(versions.metadata, &request).await?;
    let Some(found) = response
        .topics
        .iter()
        .find(|t| t.name.as_ref().is_some_and(|name| name.0.as_str() == topic))
    else {
        return Ok(None);
    };
    match found.error_code {
        0 if found.partitions.is_empty() => Ok(None),
        0 => Ok(Some(found.partitions.len() as i32)),
        UNKNOWN_TOPIC_OR_PARTITION => Ok(None),
        error_code => Err(BenchError::Topic {
            topic: topic.to_owned(),
            during: "Metadata",
            error_code,
        }),
    }
}

/// The topic's partition count, creating the topic with `partitions` if it does not exist.
pub async fn ensure_topic(
    client: &mut Client,
    versions: &Versions,
    topic: &str,
    partitions: i32,
) -> Result<i32, BenchError> {
    if let Some(existing) = partition_count(client, versions, topic).await? {
        return Ok(existing);
    }
    let wanted = CreatableTopic::default()
        .with_name(topic_name(topic))
        .with_num_partitions(partitions)
        .with_replication_factor(1);
    let request = CreateTopicsRequest::default()
        .with_topics(vec![wanted])
        .with_timeout_ms(ADMIN_TIMEOUT_MS);
    let response = client
        .send_request(versions.create_topics, &request)
        .await?;
    for result in &response.topics {
        // Another producer may have won the race; that topic serves as well.
        if !matches!(result.error_code, 0 | TOPIC_ALREADY_EXISTS) {
            return Err(BenchError::Topic {
                topic: topic.to_owned(),
                during: "CreateTopics",
                error_code: result.error_code,
            });
        }
    }
    // Metadata may trail creation on a multi-broker cluster; wait for it with a deadline.
    let started = Instant::now();
    loop {
        if let Some(count) = partition_count(client, versions, topic).await? {
            return Ok(count);
        }
        if started.elapsed() > TOPIC_READY_TIMEOUT {
            return Err(BenchError::TopicNotReady {
                topic: topic.to_owned(),
                waited_ms: started.elapsed().as_millis(),
            });
        }
        compio::time::sleep(TOPIC_READY_POLL).await;
    }
}

/// The offset for `timestamp` (EARLIEST_TIMESTAMP or LATEST_TIMESTAMP) of each partition,
/// in the order asked.
pub async fn list_offsets(
    client: &mut Client,
    versions: &Versions,
    topic: &str,
    partitions: &[i32],
    timestamp: i64,
) -> Result<Vec<i64>, BenchError> {
    let wanted: Vec<ListOffsetsPartition> = partitions
        .iter()
        .map(|&partition| {
            ListOffsetsPartition::default()
                .with_partition_index(partition)
                .with_current_leader_epoch(-1)
                .with_timestamp(timestamp)
        })
        .collect();
    let request = ListOffsetsRequest::default()
        .with_replica_id(BrokerId(-1))
        .with_topics(vec![ListOffsetsTopic::default()
            .with_name(topic_name(topic))
            .with_partitions(wanted)]);
    let response = client.send_request(versions.list_offsets, &request).await?;
    let answers: Vec<_> = response
        .topics
        .iter()
        .filter(|t| t.name.0.as_str() == topic)
        .flat_map(|t| t.partitions.iter())
        .collect();
    partitions
        .iter()
        .map(|&partition| {
            let missing = || BenchError::PartitionMissing {
                topic: topic.to_owned(),
                partition,
                during: "ListOffsets",
            };
            let answer = answers
                .iter()
                .find(|p| p.partition_index == partition)
                .ok_or_else(missing)?;
            if answer.error_code != 0 {
                return Err(BenchError::Partition {
                    topic: topic.to_owned(),
                    partition,
                    during: "ListOffsets",
                    error_code: answer.error_code,
                });
            }
            Ok(answer.offset)
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn offer(key: ApiKey, min: i16, max: i16) -> ApiVersion {
        ApiVersion::default()
            .with_api_key(key as i16)
            .with_min_version(min)
            .with_max_version(max)
    }

    fn full_offer() -> Vec<ApiVersion> {
        vec![
            offer(ApiKey::Produce, 0, 11),
            offer(ApiKey::Fetch, 0, 16),
            offer(ApiKey::Metadata, 0, 12),
            offer(ApiKey::CreateTopics, 0, 7),
            offer(ApiKey::ListOffsets, 0, 8),
        ]
    }

    #[test]
    fn chooses_the_highest_common_version() {
        let versions = choose_versions(&full_offer()).unwrap();
        assert_eq!(
            versions,
            Versions {
                produce: 9,
                fetch: 12,
                metadata: 12,
                create_topics: 7,
                list_offsets: 7,
            }
        );
        let mut older = full_offer();
        older[1] = offer(ApiKey::Fetch, 4, 11);
        older[0] = offer(ApiKey::Produce, 3, 7);
        let versions = choose_versions(&older).unwrap();
        assert_eq!((versions.produce, versions.fetch), (7, 11));
    }

    #[test]
    fn refuses_a_broker_without_a_common_version() {
        let mut offers = full_offer();
        offers[1] = offer(ApiKey::Fetch, 13, 16);
        assert!(matches!(
            choose_versions(&offers),
            Err(BenchError::Unsupported { api: "Fetch", .. })
        ));
        offers.remove(1);
        assert!(matches!(
            choose_versions(&offers),
            Err(BenchError::Unsupported { api: "Fetch", .. })
        ));
    }
}
