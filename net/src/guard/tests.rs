//! The guard against kafka-protocol's own encoder: every supported (api, version) with
//! non-empty nested arrays and nullable fields both null and set, every length prefix
//! corrupted, and random mutations under a counting allocator.

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;
use std::collections::BTreeMap;

use bytes::{BufMut, Bytes, BytesMut};
use kafka_protocol::messages::create_partitions_request::*;
use kafka_protocol::messages::create_topics_request::*;
use kafka_protocol::messages::delete_records_request::*;
use kafka_protocol::messages::delete_topics_request::*;
use kafka_protocol::messages::describe_configs_request::*;
use kafka_protocol::messages::describe_log_dirs_request::*;
use kafka_protocol::messages::join_group_request::*;
use kafka_protocol::messages::leave_group_request::*;
use kafka_protocol::messages::list_offsets_request::*;
use kafka_protocol::messages::metadata_request::*;
use kafka_protocol::messages::offset_commit_request::*;
use kafka_protocol::messages::offset_delete_request::*;
use kafka_protocol::messages::offset_fetch_request::*;
use kafka_protocol::messages::offset_for_leader_epoch_request::*;
use kafka_protocol::messages::sync_group_request::*;
use kafka_protocol::messages::*;
use kafka_protocol::protocol::{Encodable, StrBytes};
use proptest::prelude::*;

use super::*;
use crate::codec::{decode_request, SUPPORTED_APIS};

/// Which nullable fields a sample leaves null.
#[derive(Debug, Clone, Copy)]
struct Nulls {
    strings: bool,
    arrays: bool,
}

const NULL_CHOICES: [Nulls; 3] = [
    Nulls {
        strings: false,
        arrays: false,
    },
    Nulls {
        strings: true,
        arrays: false,
    },
    Nulls {
        strings: false,
        arrays: true,
    },
];

fn s(text: &'static str) -> StrBytes {
    StrBytes::from_static_str(text)
}

fn topic(text: &'static str) -> TopicName {
    TopicName(s(text))
}

fn group(text: &'static str) -> GroupId {
    GroupId(s(text))
}

/// `Some(text)` unless this sample leaves strings null.
fn opt(nulls: Nulls, text: &'static str) -> Option<StrBytes> {
    (!nulls.strings).then(|| s(text))
}

/// `Some(items)` unless this sample leaves arrays null.
fn opt_vec<T>(nulls: Nulls, items: Vec<T>) -> Option<Vec<T>> {
    (!nulls.arrays).then_some(items)
}

/// A tagged field kafka-protocol does not know, so the tagged-field section is not empty.
fn tags(flexible: bool) -> BTreeMap<i32, Bytes> {
    let mut tags = BTreeMap::new();
    if flexible {
        tags.insert(900, Bytes::from_static(b"tag"));
    }
    tags
}

fn encoded<T: Encodable>(message: &T, version: i16) -> Vec<u8> {
    let mut buf = BytesMut::new();
    message.encode(&mut buf, version).unwrap_or_else(|error| {
        let name = std::any::type_name::<T>();
        panic!("sample {name} does not encode at v{version}: {error:#}")
    });
    buf.to_vec()
}

/// A request body of `api_key` at `version`, encoded by kafka-protocol.
fn sample(api_key: i16, v: i16, nulls: Nulls) -> Vec<u8> {
    let flexible = v >= schema_for(api_key).unwrap().flexible_from;
    let t = tags(flexible);
    match ApiKey::try_from(api_key).unwrap() {
        ApiKey::ListOffsets => {
            let partition = ListOffsetsPartition::default()
                .with_partition_index(3)
                .with_current_leader_epoch(if v >= 4 { 7 } else { -1 })
                .with_timestamp(-2);
            let request = ListOffsetsRequest::default()
                .with_replica_id(BrokerId(-1))
                .with_isolation_level(if v >= 2 { 1 } else { 0 })
                .with_topics(vec![ListOffsetsTopic::default()
                    .with_name(topic("orders"))
                    .with_partitions(vec![partition.clone(), partition])])
                .with_unknown_tagged_fields(t);
            encoded(&request, v)
        }
        ApiKey::Metadata => {
            let mut name = opt(nulls, "orders").map(TopicName);
            if v < 10 && name.is_none() {
                name = Some(topic("a"));
            }
            let request = MetadataRequest::default()
                .with_topics(opt_vec(
                    nulls,
                    vec![
                        MetadataRequestTopic::default().with_name(name),
                        MetadataRequestTopic::default().with_name(Some(topic("b"))),
                    ],
                ))
                .with_allow_auto_topic_creation(v < 4)
                .with_include_topic_authorized_operations(v >= 8)
                .with_unknown_tagged_fields(t);
            encoded(&request, v)
        }
        ApiKey::OffsetCommit => {
            let partition = OffsetCommitRequestPartition::default()
                .with_partition_index(1)
                .with_committed_offset(42)
                .with_committed_leader_epoch(if v >= 6 { 3 } else { -1 })
                .with_committed_metadata(opt(nulls, "meta"));
            let request = OffsetCommitRequest::default()
                .with_group_id(group("g"))
                .with_generation_id_or_member_epoch(5)
                .with_member_id(s("member-1"))
                .with_group_instance_id(if v >= 7 { opt(nulls, "instance") } else { None })
                .with_retention_time_ms(if v <= 4 { 1000 } else { -1 })
                .with_topics(vec![OffsetCommitRequestTopic::default()
                    .with_name(topic("orders"))
                    .with_partitions(vec![partition.clone(), partition])])
                .with_unknown_tagged_fields(t);
            encoded(&request, v)
        }
        ApiKey::OffsetFetch => {
            let request = if v <= 7 {
                OffsetFetchRequest::default()
                    .with_group_id(group("g"))
                    .with_topics(opt_vec(
                        nulls,
                        vec![OffsetFetchRequestTopic::default()
                            .with_name(topic("orders"))
                            .with_partition_indexes(vec![0, 1, 2])],
                    ))
            } else {
                let group = OffsetFetchRequestGroup::default()
                    .with_group_id(group("g"))
                    .with_member_id(if v >= 9 { opt(nulls, "member") } else { None })
                    .with_member_epoch(if v >= 9 { 4 } else { -1 })
                    .with_topics(opt_vec(
                        nulls,
                        vec![OffsetFetchRequestTopics::default()
                            .with_name(topic("orders"))
                            .with_partition_indexes(vec![0, 1])],
                    ));
                OffsetFetchRequest::default().with_groups(vec![group.clone(), group])
            };
            let request = request
                .with_require_stable(v >= 7)
                .with_unknown_tagged_fields(t);
            encoded(&request, v)
        }
        ApiKey::FindCoordinator => {
            let request = FindCoordinatorRequest::default()
                .with_key(if v <= 3 { s("g") } else { s("") })
                .with_key_type(if v >= 1 { 1 } else { 0 })
                .with_coordinator_keys(if v >= 4 {
                    vec![s("g1"), s("g2")]
                } else {
                    vec![]
                })
                .with_unknown_tagged_fields(t);
            encoded(&request, v)
        }
        ApiKey::JoinGroup => {
            let protocol = JoinGroupRequestProtocol::default()
                .with_name(s("range"))
                .with_metadata(Bytes::from_static(b"\x00\x01subscription"));
            let request = JoinGroupRequest::default()
                .with_group_id(group("g"))
                .with_session_timeout_ms(10_000)
                .with_rebalance_timeout_ms(if v >= 1 { 20_000 } else { -1 })
                .with_member_id(s("member-1"))
                .with_group_instance_id(if v >= 5 { opt(nulls, "instance") } else { None })
                .with_protocol_type(s("consumer"))
                .with_protocols(vec![protocol.clone(), protocol])
                .with_reason(if v >= 8 { opt(nulls, "because") } else { None })
                .with_unknown_tagged_fields(t);
            encoded(&request, v)
        }
        ApiKey::Heartbeat => {
            let request = HeartbeatRequest::default()
                .with_group_id(group("g"))
                .with_generation_id(3)
                .with_member_id(s("member-1"))
                .with_group_instance_id(if v >= 3 { opt(nulls, "instance") } else { None })
                .with_unknown_tagged_fields(t);
            encoded(&request, v)
        }
        ApiKey::LeaveGroup => {
            let member = MemberIdentity::default()
                .with_member_id(s("member-1"))
                .with_group_instance_id(opt(nulls, "instance"))
                .with_reason(if v >= 5 { opt(nulls, "bye") } else { None });
            let request = LeaveGroupRequest::default()
                .with_group_id(group("g"))
                .with_member_id(if v <= 2 { s("member-1") } else { s("") })
                .with_members(if v >= 3 {
                    vec![member.clone(), member]
                } else {
                    vec![]
                })
                .with_unknown_tagged_fields(t);
            encoded(&request, v)
        }
        ApiKey::SyncGroup => {
            let assignment = SyncGroupRequestAssignment::default()
                .with_member_id(s("member-1"))
                .with_assignment(Bytes::from_static(b"\x00\x01assignment"));
            let request = SyncGroupRequest::default()
                .with_group_id(group("g"))
                .with_generation_id(3)
                .with_member_id(s("member-1"))
                .with_group_instance_id(if v >= 3 { opt(nulls, "instance") } else { None })
                .with_protocol_type(if v >= 5 { opt(nulls, "consumer") } else { None })
                .with_protocol_name(if v >= 5 { opt(nulls, "range") } else { None })
                .with_assignments(vec![assignment.clone(), assignment])
                .with_unknown_tagged_fields(t);
            encoded(&request, v)
        }
        ApiKey::DescribeGroups => {
            let request = DescribeGroupsRequest::default()
                .with_groups(vec![group("g1"), group("g2")])
                .with_include_authorized_operations(v >= 3)
                .with_unknown_tagged_fields(t);
            encoded(&request, v)
        }
        ApiKey::ListGroups => {
            let request = ListGroupsRequest::default()
                .with_states_filter(if v >= 4 {
                    vec![s("Stable"), s("Empty")]
                } else {
                    vec![]
                })
                .with_types_filter(if v >= 5 { vec![s("classic")] } else { vec![] })
                .with_unknown_tagged_fields(t);
            encoded(&request, v)
        }
        ApiKey::ApiVersions => {
            let request = ApiVersionsRequest::default()
                .with_client_software_name(s("sluice-test"))
                .with_client_software_version(s("1.0"))
                .with_unknown_tagged_fields(t);
            encoded(&request, v)
        }
        ApiKey::CreateTopics => {
            let assignment = CreatableReplicaAssignment::default()
                .with_partition_index(0)
                .with_broker_ids(vec![BrokerId(0), BrokerId(1)]);
            let config = CreatableTopicConfig::default()
                .with_name(s("retention.ms"))
                .with_value(opt(nulls, "1000"));
            let topic = CreatableTopic::default()
                .with_name(topic("orders"))
                .with_num_partitions(-1)
                .with_replication_factor(-1)
                .with_assignments(vec![assignment.clone(), assignment])
                .with_configs(vec![config.clone(), config]);
            let request = CreateTopicsRequest::default()
                .with_topics(vec![topic.clone(), topic])
                .with_timeout_ms(5000)
                .with_validate_only(true)
                .with_unknown_tagged_fields(t);
            encoded(&request, v)
        }
        ApiKey::DeleteTopics => {
            let request = DeleteTopicsRequest::default()
                .with_topics(if v >= 6 {
                    vec![
                        DeleteTopicState::default().with_name(opt(nulls, "a").map(TopicName)),
                        DeleteTopicState::default().with_name(Some(topic("b"))),
                    ]
                } else {
                    vec![]
                })
                .with_topic_names(if v <= 5 {
                    vec![topic("a"), topic("b")]
                } else {
                    vec![]
                })
                .with_timeout_ms(5000)
                .with_unknown_tagged_fields(t);
            encoded(&request, v)
        }
        ApiKey::DeleteRecords => {
            let partition = DeleteRecordsPartition::default()
                .with_partition_index(0)
                .with_offset(10);
            let request = DeleteRecordsRequest::default()
                .with_topics(vec![DeleteRecordsTopic::default()
                    .with_name(topic("orders"))
                    .with_partitions(vec![partition.clone(), partition])])
                .with_timeout_ms(5000)
                .with_unknown_tagged_fields(t);
            encoded(&request, v)
        }
        ApiKey::InitProducerId => {
            let request = InitProducerIdRequest::default()
                .with_transactional_id(opt(nulls, "txn").map(TransactionalId))
                .with_transaction_timeout_ms(60_000)
                .with_producer_id(ProducerId(if v >= 3 { 17 } else { -1 }))
                .with_producer_epoch(if v >= 3 { 2 } else { -1 })
                .with_unknown_tagged_fields(t);
            encoded(&request, v)
        }
        ApiKey::OffsetForLeaderEpoch => {
            let partition = OffsetForLeaderPartition::default()
                .with_partition(0)
                .with_current_leader_epoch(3)
                .with_leader_epoch(2);
            let request = OffsetForLeaderEpochRequest::default()
                .with_replica_id(BrokerId(if v >= 3 { 1 } else { -2 }))
                .with_topics(vec![OffsetForLeaderTopic::default()
                    .with_topic(topic("orders"))
                    .with_partitions(vec![partition.clone(), partition])])
                .with_unknown_tagged_fields(t);
            encoded(&request, v)
        }
        ApiKey::DescribeConfigs => {
            let resource = DescribeConfigsResource::default()
                .with_resource_type(2)
                .with_resource_name(s("orders"))
                .with_configuration_keys(opt_vec(nulls, vec![s("retention.ms"), s("segment.ms")]));
            let request = DescribeConfigsRequest::default()
                .with_resources(vec![resource.clone(), resource])
                .with_include_synonyms(true)
                .with_include_documentation(v >= 3)
                .with_unknown_tagged_fields(t);
            encoded(&request, v)
        }
        ApiKey::AlterConfigs => {
            let config = alter_configs_request::AlterableConfig::default()
                .with_name(s("retention.ms"))
                .with_value(opt(nulls, "1000"));
            let resource = alter_configs_request::AlterConfigsResource::default()
                .with_resource_type(2)
                .with_resource_name(s("orders"))
                .with_configs(vec![config.clone(), config]);
            let request = AlterConfigsRequest::default()
                .with_resources(vec![resource.clone(), resource])
                .with_validate_only(true)
                .with_unknown_tagged_fields(t);
            encoded(&request, v)
        }
        ApiKey::DescribeLogDirs => {
            let topic = DescribableLogDirTopic::default()
                .with_topic(topic("orders"))
                .with_partitions(vec![0, 1, 2]);
            let request = DescribeLogDirsRequest::default()
                .with_topics(opt_vec(nulls, vec![topic.clone(), topic]))
                .with_unknown_tagged_fields(t);
            encoded(&request, v)
        }
        ApiKey::CreatePartitions => {
            let assignment = CreatePartitionsAssignment::default()
                .with_broker_ids(vec![BrokerId(0), BrokerId(1)]);
            let topic = CreatePartitionsTopic::default()
                .with_name(topic("orders"))
                .with_count(4)
                .with_assignments(opt_vec(nulls, vec![assignment.clone(), assignment]));
            let request = CreatePartitionsRequest::default()
                .with_topics(vec![topic.clone(), topic])
                .with_timeout_ms(5000)
                .with_validate_only(false)
                .with_unknown_tagged_fields(t);
            encoded(&request, v)
        }
        ApiKey::DeleteGroups => {
            let request = DeleteGroupsRequest::default()
                .with_groups_names(vec![group("g1"), group("g2")])
                .with_unknown_tagged_fields(t);
            encoded(&request, v)
        }
        ApiKey::IncrementalAlterConfigs => {
            let config = incremental_alter_configs_request::AlterableConfig::default()
                .with_name(s("retention.ms"))
                .with_config_operation(0)
                .with_value(opt(nulls, "1000"));
            let resource = incremental_alter_configs_request::AlterConfigsResource::default()
                .with_resource_type(2)
                .with_resource_name(s("orders"))
                .with_configs(vec![config.clone(), config]);
            let request = IncrementalAlterConfigsRequest::default()
                .with_resources(vec![resource.clone(), resource])
                .with_validate_only(true)
                .with_unknown_tagged_fields(t);
            encoded(&request, v)
        }
        ApiKey::OffsetDelete => {
            let partition = OffsetDeleteRequestPartition::default().with_partition_index(2);
            let request = OffsetDeleteRequest::default()
                .with_group_id(group("g"))
                .with_topics(vec![OffsetDeleteRequestTopic::default()
                    .with_name(topic("orders"))
                    .with_partitions(vec![partition.clone(), partition])]);
            encoded(&request, v)
        }
        ApiKey::DescribeCluster => {
            let request = DescribeClusterRequest::default()
                .with_include_cluster_authorized_operations(true)
                .with_unknown_tagged_fields(t);
            encoded(&request, v)
        }
        ApiKey::ElectLeaders => {
            use kafka_protocol::messages::elect_leaders_request::TopicPartitions;
            let partitions = TopicPartitions::default()
                .with_topic(topic("t"))
                .with_partitions(vec![0, 1])
                .with_unknown_tagged_fields(t.clone());
            let wanted = opt_vec(nulls, vec![partitions.clone(), partitions]);
            let request = kafka_protocol::messages::ElectLeadersRequest::default()
                .with_election_type(if v >= 1 { 1 } else { 0 })
                .with_topic_partitions(wanted)
                .with_timeout_ms(1000)
                .with_unknown_tagged_fields(t);
            encoded(&request, v)
        }
        ApiKey::DescribeQuorum => {
            use kafka_protocol::messages::describe_quorum_request::{PartitionData, TopicData};
            let partition = PartitionData::default().with_partition_index(0);
            let metadata = TopicData::default()
                .with_topic_name(topic("__cluster_metadata"))
                .with_partitions(vec![partition.clone(), partition]);
            let request = kafka_protocol::messages::DescribeQuorumRequest::default()
                .with_topics(vec![metadata.clone(), metadata])
                .with_unknown_tagged_fields(t);
            encoded(&request, v)
        }
        api => panic!("no sample for {api:?}"),
    }
}

/// Every (api key, version) the guard must cover.
fn walked_versions() -> Vec<(i16, i16)> {
    SUPPORTED_APIS
        .iter()
        .filter(|&&(key, _, _)| key != ApiKey::Produce as i16 && key != ApiKey::Fetch as i16)
        .flat_map(|&(key, min, max)| (min..=max).map(move |version| (key, version)))
        .collect()
}

/// Every sample body: (api key, version, nulls, body).
fn samples() -> Vec<(i16, i16, Nulls, Vec<u8>)> {
    walked_versions()
        .into_iter()
        .flat_map(|(key, version)| {
            NULL_CHOICES.map(|nulls| (key, version, nulls, sample(key, version, nulls)))
        })
        .collect()
}

/// A whole request frame (without its length prefix) around `body`.
fn frame(api_key: i16, version: i16, body: &[u8]) -> Bytes {
    let api = ApiKey::try_from(api_key).unwrap();
    let mut buf = BytesMut::new();
    RequestHeader::default()
        .with_request_api_key(api_key)
        .with_request_api_version(version)
        .with_correlation_id(7)
        .with_client_id(Some(s("guard-test")))
        .encode(&mut buf, api.request_header_version(version))
        .unwrap();
    buf.put_slice(body);
    buf.freeze()
}

fn check_accepts(api_key: i16, version: i16, body: &[u8]) {
    assert_eq!(
        check(api_key, version, body),
        Ok(body.len()),
        "api {api_key} v{version}"
    );
}

#[test]
fn every_supported_api_but_produce_and_fetch_has_a_schema() {
    for (key, version) in walked_versions() {
        assert!(
            schema_for(key).is_some(),
            "api {key} v{version} is in SUPPORTED_APIS but the guard has no schema for it"
        );
    }
    for schema in SCHEMAS {
        assert!(
            SUPPORTED_APIS
                .iter()
                .any(|&(key, _, _)| key == schema.api_key),
            "schema for api {} which is not supported",
            schema.api_key
        );
    }
    assert!(schema_for(ApiKey::Produce as i16).is_none());
    assert!(schema_for(ApiKey::Fetch as i16).is_none());
}

#[test]
fn samples_pass_and_are_consumed_to_the_last_byte() {
    for (key, version, nulls, body) in samples() {
        check_accepts(key, version, &body);
        let decoded = decode_request(frame(key, version, &body));
        assert!(
            decoded.is_ok(),
            "api {key} v{version} {nulls:?}: {decoded:?}"
        );
    }
}

#[test]
fn samples_hold_nested_arrays_and_tagged_fields() {
    // A walk that found no prefix would mean the samples miss what they claim to cover.
    for (key, version, nulls, body) in samples() {
        let prefixes = length_prefixes(key, version, &body).unwrap();
        // ListGroups and ApiVersions before v3 have empty bodies.
        assert!(
            !prefixes.is_empty() || nulls.arrays || body.is_empty(),
            "api {key} v{version} {nulls:?}: {prefixes:?}"
        );
    }
}

#[test]
fn trailing_bytes_are_left_alone() {
    let mut body = sample(3, 1, NULL_CHOICES[0]);
    let len = body.len();
    body.extend_from_slice(&[0xff; 7]);
    assert_eq!(check(3, 1, &body), Ok(len));
    assert!(decode_request(frame(3, 1, &body)).is_ok());
}

/// `body` with the prefix at `at` replaced by the largest count its width can say.
fn with_huge_prefix(body: &[u8], at: usize, prefix: Prefix) -> Vec<u8> {
    let mut corrupt = body[..at].to_vec();
    let rest = match prefix {
        Prefix::I16 => {
            corrupt.extend_from_slice(&i16::MAX.to_be_bytes());
            &body[at + 2..]
        }
        Prefix::I32 => {
            corrupt.extend_from_slice(&i32::MAX.to_be_bytes());
            &body[at + 4..]
        }
        Prefix::Varint(width) => {
            corrupt.extend_from_slice(&[0xff, 0xff, 0xff, 0xff, 0x0f]);
            &body[at + width..]
        }
    };
    corrupt.extend_from_slice(rest);
    corrupt
}

#[test]
fn every_length_prefix_set_huge_is_refused() {
    let mut corrupted = 0;
    for (key, version, nulls, body) in samples() {
        for (at, prefix) in length_prefixes(key, version, &body).unwrap() {
            let corrupt = with_huge_prefix(&body, at, prefix);
            let what = format!("api {key} v{version} {nulls:?}: {prefix:?} at {at}");
            assert!(check(key, version, &corrupt).is_err(), "{what}");
            assert_eq!(
                decode_request(frame(key, version, &corrupt)).map(|_| ()),
                Err(CodecError::Body {
                    api_key: key,
                    version
                }),
                "{what}"
            );
            corrupted += 1;
        }
    }
    assert!(corrupted > 1000, "{corrupted}");
}

#[test]
fn negative_lengths_are_refused_and_null_only_where_nullable() {
    // Metadata v1: topics is a nullable array, a topic name is a nullable string.
    let check_metadata = |body: &[u8]| check(3, 1, body);
    assert_eq!(check_metadata(&(-1i32).to_be_bytes()), Ok(4));
    assert!(check_metadata(&(-2i32).to_be_bytes()).is_err());
    // CreateTopics v4: topics is not nullable.
    let mut create = (-1i32).to_be_bytes().to_vec();
    create.extend_from_slice(&[0; 5]);
    assert!(check(19, 4, &create).is_err());
    // A short body.
    assert_eq!(check(3, 1, &[0, 0]), Err(CodecError::Truncated));
    assert_eq!(check(3, 4, &[0, 0, 0, 0]), Err(CodecError::Truncated));
    // One topic, whose name cannot fit in what remains.
    assert!(check(3, 1, &[0, 0, 0, 1, 0]).is_err());
}

/// Counts the largest single allocation made on this thread while `COUNTING` is set.
struct CountingAllocator;

thread_local! {
    static COUNTING: Cell<bool> = const { Cell::new(false) };
    static LARGEST: Cell<usize> = const { Cell::new(0) };
}

fn note_allocation(size: usize) {
    // `try_with` because the allocator also runs while thread-locals are torn down.
    let counting = COUNTING.try_with(Cell::get).unwrap_or(false);
    if counting {
        let _ = LARGEST.try_with(|largest| largest.set(largest.get().max(size)));
    }
}

unsafe impl GlobalAlloc for CountingAllocator {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        note_allocation(layout.size());
        System.alloc(layout)
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        note_allocation(layout.size());
        System.alloc_zeroed(layout)
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        note_allocation(new_size);
        System.realloc(ptr, layout, new_size)
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        System.dealloc(ptr, layout)
    }
}

#[global_allocator]
static ALLOCATOR: CountingAllocator = CountingAllocator;

/// The largest single allocation `decode_request` makes for `frame`.
fn largest_allocation_decoding(frame: Bytes) -> usize {
    LARGEST.with(|largest| largest.set(0));
    COUNTING.with(|counting| counting.set(true));
    let result = decode_request(frame);
    COUNTING.with(|counting| counting.set(false));
    drop(result);
    LARGEST.with(Cell::get)
}

/// A decoded element is bigger than its smallest encoding (a topic name is a 32-byte handle
/// on the frame, its smallest encoding one byte), so decoding may allocate a small multiple
/// of the frame; what it must never do is allocate from a count the frame cannot hold.
const DECODED_PER_FRAME_BYTE_MAX: usize = 64;
const ALLOCATION_SLACK: usize = 4096;

#[test]
fn a_count_of_i32_max_would_be_seen_by_the_counting_allocator() {
    // The allocator counts what it is asked for even when the request is refused: without
    // the guard the count below would surface here (or abort the test binary).
    let largest = largest_allocation_decoding(frame(3, 1, &i32::MAX.to_be_bytes()));
    assert!(largest < ALLOCATION_SLACK, "{largest}");
    COUNTING.with(|counting| counting.set(true));
    LARGEST.with(|largest| largest.set(0));
    let wide: Vec<u64> = Vec::with_capacity(1 << 16);
    COUNTING.with(|counting| counting.set(false));
    assert_eq!(LARGEST.with(Cell::get), 8 << 16);
    drop(wide);
}

/// One way to spoil a valid body.
#[derive(Debug, Clone)]
enum Mutation {
    Set { at: usize, byte: u8 },
    Insert { at: usize, bytes: Vec<u8> },
    Remove { at: usize, len: usize },
    Truncate { len: usize },
}

fn mutate(body: &mut Vec<u8>, mutation: &Mutation) {
    let len = body.len();
    match mutation {
        Mutation::Set { at, byte } if len > 0 => body[at % len] = *byte,
        Mutation::Insert { at, bytes } => {
            let at = at % (len + 1);
            body.splice(at..at, bytes.iter().copied());
        }
        Mutation::Remove { at, len: count } if len > 0 => {
            let at = at % len;
            let end = (at + count).min(len);
            body.drain(at..end);
        }
        Mutation::Truncate { len: keep } => body.truncate(keep % (len + 1)),
        _ => {}
    }
}

fn mutation() -> impl Strategy<Value = Mutation> {
    prop_oneof![
        4 => (any::<usize>(), any::<u8>()).prop_map(|(at, byte)| Mutation::Set { at, byte }),
        2 => (any::<usize>(), prop_oneof![
                Just(vec![0x7f, 0xff, 0xff, 0xff]),
                Just(vec![0xff, 0xff, 0xff, 0xff, 0x0f]),
                Just(vec![0xff, 0xff]),
                proptest::collection::vec(any::<u8>(), 1..6),
            ]).prop_map(|(at, bytes)| Mutation::Insert { at, bytes }),
        1 => (any::<usize>(), 1usize..6).prop_map(|(at, len)| Mutation::Remove { at, len }),
        1 => any::<usize>().prop_map(|len| Mutation::Truncate { len }),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2000))]

    #[test]
    fn mutated_requests_never_panic_nor_allocate_from_unchecked_counts(
        pick in any::<usize>(),
        mutations in proptest::collection::vec(mutation(), 1..5),
    ) {
        let versions = walked_versions();
        let (key, version) = versions[pick % versions.len()];
        let nulls = NULL_CHOICES[(pick / versions.len()) % NULL_CHOICES.len()];
        let mut body = sample(key, version, nulls);
        for mutation in &mutations {
            mutate(&mut body, mutation);
        }
        let frame = frame(key, version, &body);
        let frame_len = frame.len();
        let largest = largest_allocation_decoding(frame);
        prop_assert!(
            largest <= frame_len * DECODED_PER_FRAME_BYTE_MAX + ALLOCATION_SLACK,
            "api {} v{} allocated {} bytes at once for a {}-byte frame",
            key, version, largest, frame_len
        );
        if let Ok(len) = check(key, version, &body) {
            prop_assert!(len <= body.len());
        }
    }
}
