//! Metadata: brokers and topics as the metadata image has them, with each partition's
//! leader, replicas, ISR and leader epoch. Unknown topics are created when allowed.

use std::rc::Rc;

use kafka_protocol::messages::metadata_response::{
    MetadataResponseBroker, MetadataResponsePartition, MetadataResponseTopic,
};
use kafka_protocol::messages::{BrokerId, MetadataRequest, MetadataResponse, TopicName};
use kafka_protocol::protocol::StrBytes;
use sluice_net::RequestHeader;

use crate::cluster::ensure_topic;
use crate::error_codes as code;
use crate::metadata::{MetadataImage, TopicImage};
use crate::shard::Shard;

pub async fn handle(
    core: &Rc<Shard>,
    header: &RequestHeader,
    request: MetadataRequest,
) -> MetadataResponse {
    let shared = &core.shared;
    let version = header.api_version;
    // Versions 0-3 have no flag; Kafka auto-creates for them when the broker allows it.
    let may_create = version < 4 || request.allow_auto_topic_creation;
    let mut topics_out = Vec::new();
    match request.topics {
        None => {
            let image = shared.metadata.image();
            for topic in image.topics.values() {
                topics_out.push(describe(topic, version));
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
                        .metadata
                        .topic(&name)
                        .ok_or(code::UNKNOWN_TOPIC_OR_PARTITION)
                };
                topics_out.push(match found {
                    Ok(topic) => describe(&topic, version),
                    Err(error_code) => missing(&name, error_code),
                });
            }
        }
    }
    // The image after any creation above, so the brokers named are those it knows.
    let image = shared.metadata.image();
    let mut response = MetadataResponse::default();
    response.brokers = brokers(&image);
    response.cluster_id = Some(StrBytes::from_string(image.cluster_id.clone()));
    response.controller_id = BrokerId(image.controller_id);
    response.topics = topics_out;
    response
}

/// Every live broker, as clients reach it.
fn brokers(image: &MetadataImage) -> Vec<MetadataResponseBroker> {
    image
        .live_brokers()
        .map(|b| {
            let mut broker = MetadataResponseBroker::default();
            broker.node_id = BrokerId(b.id);
            broker.host = StrBytes::from_string(b.host.clone());
            broker.port = i32::from(b.port);
            broker
        })
        .collect()
}

fn describe(topic: &TopicImage, version: i16) -> MetadataResponseTopic {
    let mut out = MetadataResponseTopic::default();
    out.name = Some(TopicName(StrBytes::from_string(topic.name.clone())));
    // Fields are set only in the versions that carry them.
    if version >= 10 {
        out.topic_id = uuid::Uuid::from_bytes(topic.id);
    }
    out.is_internal = topic.name.starts_with("__");
    let ids = |ids: &[i32]| ids.iter().copied().map(BrokerId).collect::<Vec<_>>();
    out.partitions = (0..)
        .zip(&topic.partitions)
        .map(|(index, image)| {
            let mut partition = MetadataResponsePartition::default();
            partition.partition_index = index;
            partition.leader_id = BrokerId(image.leader);
            if image.leader < 0 {
                partition.error_code = code::LEADER_NOT_AVAILABLE;
            }
            if version >= 7 {
                partition.leader_epoch = image.leader_epoch;
            }
            partition.replica_nodes = ids(&image.replicas);
            partition.isr_nodes = ids(&image.isr);
            if version >= 5 {
                partition.offline_replicas = ids(&image.offline);
            }
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
