//! Talking to the cluster before the load starts: version negotiation with ApiVersions, topic
//! lookup and creation with Metadata and CreateTopics, where each partition's leader is
//! (the routes that producers and consumers follow), and start and end offsets with
//! ListOffsets, asked of each partition's leader.

use std::net::{SocketAddr, ToSocketAddrs};
use std::ops::RangeInclusive;
use std::time::{Duration, Instant};

use kafka_protocol::messages::api_versions_response::ApiVersion;
use kafka_protocol::messages::create_topics_request::{CreatableTopic, CreatableTopicConfig};
use kafka_protocol::messages::list_offsets_request::{ListOffsetsPartition, ListOffsetsTopic};
use kafka_protocol::messages::metadata_request::MetadataRequestTopic;
use kafka_protocol::messages::{
    ApiKey, ApiVersionsRequest, BrokerId, CreateTopicsRequest, ListOffsetsRequest, MetadataRequest,
    TopicName,
};
use kafka_protocol::protocol::StrBytes;
use sluice_net::client::{Client, ClientError};

use crate::error::BenchError;

/// Kafka error codes this module acts on.
const UNKNOWN_TOPIC_OR_PARTITION: i16 = 3;
const LEADER_NOT_AVAILABLE: i16 = 5;
const NOT_LEADER_OR_FOLLOWER: i16 = 6;
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

/// One broker as Metadata names it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BrokerInfo {
    pub id: i32,
    pub host: String,
    pub port: i32,
}

/// A topic as Metadata describes it: the cluster's brokers and each partition's leader.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Layout {
    pub brokers: Vec<BrokerInfo>,
    /// The leader's broker id of partition p at index p; -1 while it has none.
    pub leaders: Vec<i32>,
    /// The fewest replicas any partition has.
    pub replication_factor: usize,
}

impl Layout {
    pub fn partitions(&self) -> i32 {
        self.leaders.len() as i32
    }

    /// The first partition whose leader is not among the brokers, if any.
    pub fn leaderless(&self) -> Option<i32> {
        self.leaders
            .iter()
            .position(|&leader| !self.brokers.iter().any(|b| b.id == leader))
            .map(|partition| partition as i32)
    }
}

/// The topic's layout, or None if the broker does not know the topic.
pub async fn describe_topic(
    client: &mut Client,
    versions: &Versions,
    topic: &str,
) -> Result<Option<Layout>, BenchError> {
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
        0 if found.partitions.is_empty() => return Ok(None),
        0 => {}
        UNKNOWN_TOPIC_OR_PARTITION => return Ok(None),
        error_code => {
            return Err(BenchError::Topic {
                topic: topic.to_owned(),
                during: "Metadata",
                error_code,
            })
        }
    }
    // Partitions are numbered from 0; one the answer leaves out keeps leader -1 and so
    // counts as leaderless.
    let mut leaders = vec![-1; found.partitions.len()];
    for partition in &found.partitions {
        let slot = usize::try_from(partition.partition_index)
            .ok()
            .and_then(|index| leaders.get_mut(index));
        if let Some(slot) = slot {
            *slot = partition.leader_id.0;
        }
    }
    let replication_factor = found
        .partitions
        .iter()
        .map(|p| p.replica_nodes.len())
        .min()
        .unwrap_or(0);
    let brokers = response
        .brokers
        .iter()
        .map(|broker| BrokerInfo {
            id: broker.node_id.0,
            host: broker.host.to_string(),
            port: broker.port,
        })
        .collect();
    Ok(Some(Layout {
        brokers,
        leaders,
        replication_factor,
    }))
}

/// The topic's layout once every partition has a leader, waiting for that with a deadline;
/// None if the broker does not know the topic.
pub async fn await_leaders(
    client: &mut Client,
    versions: &Versions,
    topic: &str,
) -> Result<Option<Layout>, BenchError> {
    let started = Instant::now();
    loop {
        let Some(layout) = describe_topic(client, versions, topic).await? else {
            return Ok(None);
        };
        let Some(partition) = layout.leaderless() else {
            return Ok(Some(layout));
        };
        if started.elapsed() > TOPIC_READY_TIMEOUT {
            return Err(BenchError::Leaderless {
                topic: topic.to_owned(),
                partition,
                waited_ms: started.elapsed().as_millis(),
            });
        }
        compio::time::sleep(TOPIC_READY_POLL).await;
    }
}

/// How to create a topic that does not exist yet.
pub struct NewTopic<'a> {
    pub partitions: i32,
    pub replication_factor: i16,
    pub configs: &'a [(String, String)],
}

/// The topic's layout, creating it as `new` says if it does not exist, once every partition
/// has a leader.
pub async fn ensure_topic(
    client: &mut Client,
    versions: &Versions,
    topic: &str,
    new: NewTopic<'_>,
) -> Result<Layout, BenchError> {
    if let Some(existing) = await_leaders(client, versions, topic).await? {
        return Ok(existing);
    }
    let configs = new
        .configs
        .iter()
        .map(|(key, value)| {
            CreatableTopicConfig::default()
                .with_name(StrBytes::from_string(key.clone()))
                .with_value(Some(StrBytes::from_string(value.clone())))
        })
        .collect();
    let wanted = CreatableTopic::default()
        .with_name(topic_name(topic))
        .with_num_partitions(new.partitions)
        .with_replication_factor(new.replication_factor)
        .with_configs(configs);
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
        if let Some(layout) = await_leaders(client, versions, topic).await? {
            return Ok(layout);
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

/// One connection's worth of partitions: a leader and where to reach it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Lane {
    pub broker_id: i32,
    pub addr: SocketAddr,
}

/// Where each partition's requests go: one lane per broker that leads any partition, so a
/// producer or consumer holds one connection per lane.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Routes {
    pub lanes: Vec<Lane>,
    /// The lane of partition p at index p.
    pub lane_of: Vec<usize>,
}

impl Routes {
    /// Routes for `layout`. A cluster of one broker is reached at `bootstrap`, whatever it
    /// advertises, so a single broker runs exactly as before this tool knew of leaders;
    /// otherwise each leader is reached at the address Metadata gives, as Kafka clients do.
    pub fn new(layout: &Layout, bootstrap: SocketAddr) -> Result<Self, BenchError> {
        let groups = group_by_leader(&layout.leaders);
        let mut lanes = Vec::with_capacity(groups.len());
        let mut lane_of = vec![usize::MAX; layout.leaders.len()];
        for (lane, (leader, partitions)) in groups.iter().enumerate() {
            let addr = if layout.brokers.len() == 1 {
                bootstrap
            } else {
                let broker = layout.brokers.iter().find(|b| b.id == *leader).ok_or(
                    BenchError::UnknownLeader {
                        partition: partitions[0],
                        leader: *leader,
                    },
                )?;
                resolve(broker)?
            };
            lanes.push(Lane {
                broker_id: *leader,
                addr,
            });
            for &partition in partitions {
                lane_of[partition as usize] = lane;
            }
        }
        debug_assert!(lane_of.iter().all(|&lane| lane < lanes.len()));
        Ok(Self { lanes, lane_of })
    }

    /// A failure of lane `lane`'s connection, naming the broker it went to.
    pub fn connection_error(&self, lane: usize, source: ClientError) -> BenchError {
        let Lane { broker_id, addr } = self.lanes[lane];
        BenchError::Connection {
            broker: broker_id,
            addr,
            source,
        }
    }

    /// The partitions lane `lane` serves, in order.
    pub fn partitions_of(&self, lane: usize) -> Vec<i32> {
        (0..self.lane_of.len())
            .filter(|&partition| self.lane_of[partition] == lane)
            .map(|partition| partition as i32)
            .collect()
    }
}

/// Partitions grouped by leader, leaders in ascending id order, partitions in order.
pub fn group_by_leader(leaders: &[i32]) -> Vec<(i32, Vec<i32>)> {
    let mut groups: Vec<(i32, Vec<i32>)> = Vec::new();
    for (partition, &leader) in leaders.iter().enumerate() {
        match groups.iter_mut().find(|(id, _)| *id == leader) {
            Some((_, partitions)) => partitions.push(partition as i32),
            None => groups.push((leader, vec![partition as i32])),
        }
    }
    groups.sort_by_key(|(leader, _)| *leader);
    groups
}

fn resolve(broker: &BrokerInfo) -> Result<SocketAddr, BenchError> {
    let name = format!("{}:{}", broker.host, broker.port);
    let port = u16::try_from(broker.port).map_err(|_| BenchError::NoAddress(name.clone()))?;
    (broker.host.as_str(), port)
        .to_socket_addrs()
        .map_err(|source| BenchError::Resolve {
            bootstrap: name.clone(),
            source,
        })?
        .next()
        .ok_or(BenchError::NoAddress(name))
}

/// Whether an error code says a request went to a broker that does not lead the partition.
pub fn not_leader(error_code: i16) -> bool {
    matches!(error_code, LEADER_NOT_AVAILABLE | NOT_LEADER_OR_FOLLOWER)
}

/// Whether a leader may just not serve a partition yet: a new topic's leaders take their
/// role as their metadata catches up.
fn not_leader_yet(error_code: i16) -> bool {
    not_leader(error_code) || error_code == UNKNOWN_TOPIC_OR_PARTITION
}

/// The offset for `timestamp` of every partition (index p for partition p), each asked of
/// its leader. `setup` is a connection to `setup_addr`, used for the lane at that address;
/// other leaders get a connection of their own. A leader that does not serve its partitions
/// yet (a topic just created) is asked again until a deadline.
pub async fn offsets_at_leaders(
    setup: &mut Client,
    setup_addr: SocketAddr,
    versions: &Versions,
    topic: &str,
    routes: &Routes,
    timestamp: i64,
) -> Result<Vec<i64>, BenchError> {
    let mut offsets = vec![0; routes.lane_of.len()];
    for (index, lane) in routes.lanes.iter().enumerate() {
        let partitions = routes.partitions_of(index);
        let mut own;
        let client = if lane.addr == setup_addr {
            &mut *setup
        } else {
            own = connect(lane.addr, "sluice-bench-setup".to_owned()).await?;
            &mut own
        };
        let started = Instant::now();
        let found = loop {
            match list_offsets(client, versions, topic, &partitions, timestamp).await {
                Err(BenchError::Partition { error_code, .. })
                    if not_leader_yet(error_code) && started.elapsed() < TOPIC_READY_TIMEOUT =>
                {
                    compio::time::sleep(TOPIC_READY_POLL).await;
                }
                other => break other?,
            }
        };
        for (&partition, offset) in partitions.iter().zip(found) {
            offsets[partition as usize] = offset;
        }
    }
    Ok(offsets)
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

    fn broker(id: i32, port: i32) -> BrokerInfo {
        BrokerInfo {
            id,
            host: "127.0.0.1".to_owned(),
            port,
        }
    }

    fn layout(brokers: Vec<BrokerInfo>, leaders: Vec<i32>) -> Layout {
        Layout {
            brokers,
            leaders,
            replication_factor: 1,
        }
    }

    fn addr(port: u16) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], port))
    }

    #[test]
    fn groups_partitions_by_leader() {
        let check = |leaders: &[i32], expected: &[(i32, &[i32])]| {
            let expected: Vec<(i32, Vec<i32>)> = expected
                .iter()
                .map(|(leader, partitions)| (*leader, partitions.to_vec()))
                .collect();
            assert_eq!(group_by_leader(leaders), expected, "{leaders:?}");
        };
        check(&[], &[]);
        check(&[0, 0, 0], &[(0, &[0, 1, 2])]);
        check(
            &[2, 0, 1, 2, 0, 1],
            &[(0, &[1, 4]), (1, &[2, 5]), (2, &[0, 3])],
        );
        check(&[7, 3], &[(3, &[1]), (7, &[0])]);
    }

    #[test]
    fn a_single_broker_is_reached_at_the_bootstrap_address() {
        // A broker on port 0 advertises what it was told; the bootstrap is what works.
        let single = layout(vec![broker(5, 0)], vec![5; 4]);
        let routes = Routes::new(&single, addr(19092)).unwrap();
        assert_eq!(
            routes.lanes,
            [Lane {
                broker_id: 5,
                addr: addr(19092)
            }]
        );
        assert_eq!(routes.lane_of, [0; 4]);
        assert_eq!(routes.partitions_of(0), [0, 1, 2, 3]);
    }

    #[test]
    fn a_cluster_is_reached_at_each_leaders_address() {
        let brokers = vec![broker(0, 9092), broker(1, 9093), broker(2, 9094)];
        let cluster = layout(brokers, vec![1, 2, 0, 1, 2, 0, 1]);
        let routes = Routes::new(&cluster, addr(9092)).unwrap();
        let lanes: Vec<(i32, SocketAddr)> = routes
            .lanes
            .iter()
            .map(|lane| (lane.broker_id, lane.addr))
            .collect();
        assert_eq!(lanes, [(0, addr(9092)), (1, addr(9093)), (2, addr(9094))]);
        assert_eq!(routes.lane_of, [1, 2, 0, 1, 2, 0, 1]);
        assert_eq!(routes.partitions_of(1), [0, 3, 6]);
        // Brokers that lead nothing get no lane.
        let one_leader = layout(cluster.brokers.clone(), vec![2, 2]);
        let routes = Routes::new(&one_leader, addr(9092)).unwrap();
        assert_eq!(routes.lanes.len(), 1);
        assert_eq!(routes.lanes[0].addr, addr(9094));
    }

    #[test]
    fn a_partition_without_a_known_leader_is_found() {
        let brokers = vec![broker(0, 9092), broker(1, 9093)];
        assert_eq!(layout(brokers.clone(), vec![0, 1, 0]).leaderless(), None);
        assert_eq!(
            layout(brokers.clone(), vec![0, -1, 0]).leaderless(),
            Some(1)
        );
        let unknown = layout(brokers, vec![0, 1, 4]);
        assert_eq!(unknown.leaderless(), Some(2));
        assert!(matches!(
            Routes::new(&unknown, addr(9092)),
            Err(BenchError::UnknownLeader {
                partition: 2,
                leader: 4
            })
        ));
    }
}
