//! Produce: validate acks and topics, send each partition's batch to its owner core, append
//! there, and answer once every partition has (or not at all for acks=0).

use std::rc::Rc;

use bytes::Bytes;
use sluice_net::produce::{
    ProducePartitionResponse, ProduceRequest, ProduceResponse, ProduceTopicResponse,
};
use sluice_net::RequestHeader;
use sluice_storage::StorageError;

use crate::conn::Reply;
use crate::core::{now_ms, Core};
use crate::error_codes as code;
use crate::handlers::ensure_topic;
use crate::metrics::CoreMetrics;
use crate::topics::TopicInfo;

/// The leader epoch stamped on appended batches; a single node never changes leader.
const LEADER_EPOCH: i32 = 0;

pub async fn handle(core: &Rc<Core>, header: &RequestHeader, request: ProduceRequest) -> Reply {
    CoreMetrics::add(&core.metrics.produce_requests, 1);
    let acks = request.acks;
    if !matches!(acks, -1..=1) {
        return answer(header, &request, |_| error(code::INVALID_REQUIRED_ACKS));
    }
    let min_insync_default = core.shared.config.min_insync_replicas;
    let mut response = ProduceResponse {
        topics: Vec::with_capacity(request.topics.len()),
        throttle_time_ms: 0,
    };
    for topic in request.topics {
        // One registry lookup per topic serves every partition below.
        let found = ensure_topic(core, &topic.name).await;
        let mut partitions = Vec::with_capacity(topic.partitions.len());
        for partition in topic.partitions {
            let result = match &found {
                Err(error_code) => error(*error_code),
                // One node means an ISR of one: acks=-1 cannot be met when more are required.
                Ok(info) if acks == -1 && min_insync(info, min_insync_default) > 1 => {
                    error(code::NOT_ENOUGH_REPLICAS)
                }
                Ok(info) => append(core, info, partition.index, partition.records).await,
            };
            partitions.push(ProducePartitionResponse {
                index: partition.index,
                ..result
            });
        }
        response.topics.push(ProduceTopicResponse {
            name: topic.name,
            partitions,
        });
    }
    let codes = response.topics.iter().flat_map(|t| &t.partitions);
    core.metrics
        .count_errors(header.api_key, codes.map(|p| p.error_code));
    if acks == 0 {
        let failed = response
            .topics
            .iter()
            .flat_map(|t| &t.partitions)
            .any(|p| p.error_code != code::NONE);
        // With acks=0 there is no response to carry an error; Kafka closes the connection.
        return if failed {
            Reply::Close("acks=0 produce failed")
        } else {
            Reply::Nothing
        };
    }
    Reply::Frame(sluice_net::encode_produce_response(header, &response))
}

/// The topic's `min.insync.replicas`, or the broker's.
fn min_insync(topic: &TopicInfo, default: i32) -> i32 {
    let configured = topic
        .configs
        .get("min.insync.replicas")
        .and_then(|v| v.parse().ok());
    configured.unwrap_or(default)
}

fn error(error_code: i16) -> ProducePartitionResponse {
    ProducePartitionResponse {
        index: -1,
        error_code,
        base_offset: -1,
        log_append_time_ms: -1,
        log_start_offset: -1,
    }
}

/// Every partition of the request answered the same way, without appending.
fn answer(
    header: &RequestHeader,
    request: &ProduceRequest,
    each: impl Fn(i32) -> ProducePartitionResponse,
) -> Reply {
    if request.acks == 0 {
        return Reply::Close("acks=0 produce failed");
    }
    let topics = request
        .topics
        .iter()
        .map(|topic| ProduceTopicResponse {
            name: topic.name.clone(),
            partitions: topic
                .partitions
                .iter()
                .map(|p| ProducePartitionResponse {
                    index: p.index,
                    ..each(p.index)
                })
                .collect(),
        })
        .collect();
    let response = ProduceResponse {
        topics,
        throttle_time_ms: 0,
    };
    Reply::Frame(sluice_net::encode_produce_response(header, &response))
}

/// Appends one partition's batch on its owner core.
async fn append(
    core: &Rc<Core>,
    info: &TopicInfo,
    index: i32,
    records: Option<Bytes>,
) -> ProducePartitionResponse {
    let Some(records) = records else {
        return error(code::INVALID_RECORD);
    };
    let topic = info.name.as_str();
    if index < 0 || index >= info.partition_count() {
        return error(code::UNKNOWN_TOPIC_OR_PARTITION);
    }
    let owner = core.shared.owner(topic, index);
    let topic = topic.to_owned();
    let answer = core
        .invoke(owner, move |owner| async move {
            append_on_owner(&owner, &topic, index, records).await
        })
        .await;
    answer.unwrap_or_else(|| error(code::UNKNOWN_SERVER_ERROR))
}

async fn append_on_owner(
    core: &Core,
    topic: &str,
    index: i32,
    records: Bytes,
) -> ProducePartitionResponse {
    let Some(partition) = core.partition(topic, index) else {
        return error(code::UNKNOWN_TOPIC_OR_PARTITION);
    };
    // A producer sends one batch per partition; storage accepts several (followers append
    // many), so the produce path checks the first batch's length covers the whole record set.
    if sluice_storage::batch::parse_header(&records).is_ok_and(|h| h.total_len() < records.len()) {
        return error(code::INVALID_RECORD);
    }
    let appended = {
        let _waiting = crate::metrics::Waiting::enter(&core.metrics.appends_waiting);
        let mut log = partition.log.lock().await;
        let appended = log.append(records.to_vec(), LEADER_EPOCH, now_ms()).await;
        // One node: the ISR is this broker alone, so an appended batch is committed.
        let end = log.log_end_offset();
        log.set_high_watermark(end);
        appended
    };
    match appended {
        Ok(result) => {
            partition.appended.notify(usize::MAX);
            let messages = (result.last_offset - result.base_offset + 1) as u64;
            CoreMetrics::add(&core.metrics.bytes_in, records.len() as u64);
            CoreMetrics::add(&core.metrics.messages_in, messages);
            core.metrics.topic_in(topic, records.len() as u64, messages);
            ProducePartitionResponse {
                index,
                error_code: code::NONE,
                base_offset: result.base_offset,
                log_append_time_ms: -1,
                log_start_offset: result.log_start_offset,
            }
        }
        // A retried batch that was already appended: acknowledge it with its original offset.
        Err(StorageError::DuplicateSequence { base_offset, .. }) => ProducePartitionResponse {
            index,
            error_code: code::NONE,
            base_offset,
            log_append_time_ms: -1,
            log_start_offset: -1,
        },
        Err(e) => {
            if matches!(e, StorageError::Io(_)) {
                tracing::error!(%topic, partition = index, error = %e, "append failed");
            }
            error(code::from_storage(&e))
        }
    }
}
