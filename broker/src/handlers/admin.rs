//! Cluster-level requests: ApiVersions, topic creation and deletion, partition growth, and
//! producer ids. Topic changes run on core 0 under its admin lock.

use std::collections::BTreeMap;
use std::rc::Rc;

use kafka_protocol::messages::api_versions_response::ApiVersion;
use kafka_protocol::messages::create_partitions_response::CreatePartitionsTopicResult;
use kafka_protocol::messages::create_topics_response::CreatableTopicResult;
use kafka_protocol::messages::delete_topics_response::DeletableTopicResult;
use kafka_protocol::messages::describe_cluster_response::DescribeClusterBroker;
use kafka_protocol::messages::describe_log_dirs_response::{
    DescribeLogDirsPartition, DescribeLogDirsResult, DescribeLogDirsTopic,
};
use kafka_protocol::messages::{
    ApiVersionsResponse, BrokerId, CreatePartitionsRequest, CreatePartitionsResponse,
    CreateTopicsRequest, CreateTopicsResponse, DeleteTopicsRequest, DeleteTopicsResponse,
    DescribeClusterResponse, DescribeLogDirsRequest, DescribeLogDirsResponse,
    InitProducerIdRequest, InitProducerIdResponse, ProducerId, TopicName,
};
use kafka_protocol::protocol::StrBytes;

use crate::cluster::{self, create_topic};
use crate::controller::Command;
use crate::error_codes as code;
use crate::layout;
use crate::metadata::TOPIC_PARTITIONS_MAX;
use crate::shard::Shard;

pub fn api_versions() -> ApiVersionsResponse {
    let mut response = ApiVersionsResponse::default();
    response.api_keys = crate::apis::SERVED
        .iter()
        .map(|&(key, min, max)| {
            let mut api = ApiVersion::default();
            api.api_key = key;
            api.min_version = min;
            api.max_version = max;
            api
        })
        .collect();
    response
}

pub async fn create_topics(
    core: &Rc<Shard>,
    version: i16,
    request: CreateTopicsRequest,
) -> CreateTopicsResponse {
    let mut response = CreateTopicsResponse::default();
    for wanted in request.topics {
        let name = wanted.name.0.to_string();
        let partitions = if wanted.num_partitions == -1 {
            core.shared.config.num_partitions
        } else {
            wanted.num_partitions
        };
        let mut result = CreatableTopicResult::default();
        result.name = wanted.name.clone();
        result.num_partitions = partitions;
        result.replication_factor = match wanted.replication_factor {
            -1 => core.shared.config.default_replication_factor,
            factor => factor,
        };
        let mut configs: BTreeMap<String, String> = wanted
            .configs
            .iter()
            .filter_map(|c| Some((c.name.to_string(), c.value.as_ref()?.to_string())))
            .collect();
        let bad_config = configs
            .iter()
            .find_map(|(k, v)| super::configs::check_topic_config(k, v).err());
        configs.retain(|name, _| !super::configs::ignored_topic_config(name));
        let checked = if !layout::valid_topic_name(&name) {
            Err(code::INVALID_TOPIC_EXCEPTION)
        } else if !(1..=TOPIC_PARTITIONS_MAX).contains(&partitions) {
            Err(code::INVALID_PARTITIONS)
        } else if core.shared.metadata.topic(&name).is_some() {
            Err(code::TOPIC_ALREADY_EXISTS)
        } else if let Some(message) = bad_config {
            result.error_message = Some(StrBytes::from_string(message));
            Err(code::INVALID_CONFIG)
        } else {
            Ok(())
        };
        let factor = wanted.replication_factor;
        let outcome = match checked {
            Ok(()) if request.validate_only => {
                let command = Command::CreateTopic {
                    name: name.clone(),
                    partitions,
                    replication_factor: factor,
                    configs,
                    validate_only: true,
                };
                cluster::change(core, command).await.map(|_| ())
            }
            Ok(()) => create_topic(core, &name, partitions, factor, configs)
                .await
                .map(|topic| {
                    // Topic ids exist in the response from version 7.
                    if version >= 7 {
                        result.topic_id = uuid::Uuid::from_bytes(topic.id);
                    }
                }),
            Err(error_code) => Err((error_code, String::new())),
        };
        if let Err((error_code, message)) = outcome {
            result.error_code = error_code;
            if !message.is_empty() {
                result.error_message = Some(StrBytes::from_string(message));
            }
        }
        response.topics.push(result);
    }
    response
}

pub async fn delete_topics(core: &Rc<Shard>, request: DeleteTopicsRequest) -> DeleteTopicsResponse {
    // Versions 0-5 name topics in `topic_names`; 6 and later in `topics`.
    let mut names: Vec<TopicName> = request.topic_names;
    names.extend(request.topics.into_iter().filter_map(|t| t.name));
    let mut response = DeleteTopicsResponse::default();
    for name in names {
        let mut result = DeletableTopicResult::default();
        result.name = Some(name.clone());
        let command = Command::DeleteTopic {
            name: name.0.to_string(),
        };
        if let Err((error_code, _)) = cluster::change(core, command).await {
            result.error_code = error_code;
        }
        response.responses.push(result);
    }
    response
}

pub async fn create_partitions(
    core: &Rc<Shard>,
    request: CreatePartitionsRequest,
) -> CreatePartitionsResponse {
    let mut response = CreatePartitionsResponse::default();
    for wanted in request.topics {
        let mut result = CreatePartitionsTopicResult::default();
        result.name = wanted.name.clone();
        let name = wanted.name.0.to_string();
        let count = wanted.count;
        let command = Command::CreatePartitions {
            topic: name,
            count,
            validate_only: request.validate_only,
        };
        let outcome = cluster::change(core, command).await;
        if let Err((error_code, message)) = outcome {
            result.error_code = error_code;
            result.error_message = (!message.is_empty()).then(|| StrBytes::from_string(message));
        }
        response.results.push(result);
    }
    response
}

/// A fresh producer id per call; epochs start at 0. Sequence checks happen in storage.
pub async fn init_producer_id(
    core: &Rc<Shard>,
    request: InitProducerIdRequest,
) -> InitProducerIdResponse {
    let mut response = InitProducerIdResponse::default();
    if request.transactional_id.is_some() {
        // Transactions are not supported; Kafka answers a broker without them this way.
        response.error_code = code::COORDINATOR_NOT_AVAILABLE;
        return response;
    }
    match cluster::producer_id(core).await {
        Ok(id) => {
            response.producer_id = ProducerId(id);
            response.producer_epoch = 0;
        }
        Err(error_code) => response.error_code = error_code,
    }
    response
}

pub fn describe_cluster(core: &Rc<Shard>) -> DescribeClusterResponse {
    let image = core.shared.metadata.image();
    let mut response = DescribeClusterResponse::default();
    response.cluster_id = StrBytes::from_string(image.cluster_id.clone());
    response.controller_id = BrokerId(image.controller_id);
    response.brokers = image
        .live_brokers()
        .map(|b| {
            let mut broker = DescribeClusterBroker::default();
            broker.broker_id = BrokerId(b.id);
            broker.host = StrBytes::from_string(b.host.clone());
            broker.port = i32::from(b.port);
            broker
        })
        .collect();
    response
}

/// DescribeQuorum on a broker: the controller quorum's own answer, asked of a voter.
pub async fn describe_quorum(core: &Rc<Shard>) -> kafka_protocol::messages::DescribeQuorumResponse {
    match cluster::describe_quorum(core).await {
        Some(view) => crate::controller::describe_quorum_response(&view),
        None => {
            let mut response = kafka_protocol::messages::DescribeQuorumResponse::default();
            response.error_code = code::NOT_CONTROLLER;
            response
        }
    }
}

/// ElectLeaders: the preferred replica (type 0) or, where the ISR has no live member, any
/// live replica (type 1, unclean) for the partitions asked, or all of them; decided by the
/// active controller, and answered once this broker has applied the outcome.
pub async fn elect_leaders(
    core: &Rc<Shard>,
    request: kafka_protocol::messages::ElectLeadersRequest,
) -> kafka_protocol::messages::ElectLeadersResponse {
    use kafka_protocol::messages::elect_leaders_response::{
        PartitionResult, ReplicaElectionResult,
    };
    let mut response = kafka_protocol::messages::ElectLeadersResponse::default();
    let unclean = match request.election_type {
        0 => false,
        1 => true,
        _ => {
            response.error_code = code::INVALID_REQUEST;
            return response;
        }
    };
    let partitions = request.topic_partitions.map(|topics| {
        topics
            .into_iter()
            .flat_map(|t| {
                let name = t.topic.0.to_string();
                t.partitions.into_iter().map(move |p| (name.clone(), p))
            })
            .collect::<Vec<_>>()
    });
    let command = crate::controller::Command::ElectLeaders {
        unclean,
        partitions,
    };
    let elections = match cluster::change(core, command).await {
        Ok(done) => done.elections,
        Err((error_code, _)) => {
            response.error_code = error_code;
            return response;
        }
    };
    let mut by_topic: std::collections::BTreeMap<String, Vec<PartitionResult>> =
        std::collections::BTreeMap::new();
    for (topic, partition, error_code) in elections {
        let message = (error_code != code::NONE).then(|| StrBytes::from(code::name(error_code)));
        by_topic.entry(topic).or_default().push(
            PartitionResult::default()
                .with_partition_id(partition)
                .with_error_code(error_code)
                .with_error_message(message),
        );
    }
    response.replica_election_results = by_topic
        .into_iter()
        .map(|(topic, results)| {
            ReplicaElectionResult::default()
                .with_topic(TopicName(StrBytes::from(topic)))
                .with_partition_result(results)
        })
        .collect();
    response
}

/// Sizes of the partitions in the one log directory, asked of their owner cores.
pub async fn describe_log_dirs(
    core: &Rc<Shard>,
    request: DescribeLogDirsRequest,
) -> DescribeLogDirsResponse {
    let wanted: Vec<(String, Vec<i32>)> = match request.topics {
        Some(topics) => topics
            .into_iter()
            .map(|t| (t.topic.0.to_string(), t.partitions))
            .collect(),
        None => core
            .shared
            .metadata
            .image()
            .topics
            .values()
            .map(|t| (t.name.clone(), (0..t.partition_count()).collect()))
            .collect(),
    };
    let mut result = DescribeLogDirsResult::default();
    result.log_dir = StrBytes::from_string(core.shared.config.log_dir.display().to_string());
    // The file system's size and free space, as Kafka reports them from v4 on (-1 if unknown).
    // statvfs answers from the superblock the kernel holds, without waiting on the disk.
    if let Ok(stats) = rustix::fs::statvfs(&core.shared.config.log_dir) {
        let block = stats.f_frsize as i64;
        result.total_bytes = (stats.f_blocks as i64).saturating_mul(block);
        result.usable_bytes = (stats.f_bavail as i64).saturating_mul(block);
    } else {
        result.total_bytes = -1;
        result.usable_bytes = -1;
    }
    for (name, partitions) in wanted {
        let mut topic = DescribeLogDirsTopic::default();
        topic.name = TopicName(StrBytes::from_string(name.clone()));
        for index in partitions {
            let owner = core.shared.owner(&name, index.max(0));
            let key = name.clone();
            let size = core
                .invoke(owner, move |owner| async move {
                    let partition = owner.partition(&key, index)?;
                    Some(partition.stats().await.size_bytes)
                })
                .await
                .flatten();
            if let Some(size) = size {
                let mut partition = DescribeLogDirsPartition::default();
                partition.partition_index = index;
                partition.partition_size = size as i64;
                topic.partitions.push(partition);
            }
        }
        result.topics.push(topic);
    }
    let mut response = DescribeLogDirsResponse::default();
    response.results = vec![result];
    response
}
