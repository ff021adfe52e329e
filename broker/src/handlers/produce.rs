//! Produce: validate acks and topics, send each partition's batch to its owner core (rewrite
//! it there into the topic's codec if its `compression.type` names one), append there, and
//! answer once every partition has (or not at all for acks=0).

use std::future::Future;
use std::pin::Pin;
use std::rc::Rc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use sluice_net::produce::{
    ProducePartitionResponse, ProduceRequest, ProduceResponse, ProduceTopicResponse,
};
use sluice_net::RequestHeader;
use sluice_storage::records::Compression;
use sluice_storage::StorageError;

use super::Reply;
use crate::clock::now_ms;
use crate::cluster::ensure_topic;
use crate::error_codes as code;
use crate::memory::Permit;
use crate::metadata::TopicImage;
use crate::metrics::cells::CoreMetrics;
use crate::order::Turn;
use crate::partition::{Partition, PartitionError};
use crate::shard::Shard;

/// `turn` is this request's place among its connection's produce requests: appends are
/// posted to their owner cores in request order, then awaited together.
pub async fn handle(
    core: &Rc<Shard>,
    header: &RequestHeader,
    request: ProduceRequest,
    turn: Option<Turn>,
    permit: Permit,
) -> Reply {
    CoreMetrics::add(&core.metrics.produce_requests, 1);
    let acks = request.acks;
    if !matches!(acks, -1..=1) {
        let partitions = request.topics.iter().map(|t| t.partitions.len()).sum();
        let codes = std::iter::repeat_n(code::INVALID_REQUIRED_ACKS, partitions);
        core.metrics.count_errors(header.api_key, codes);
        return answer(header, &request, |_| error(code::INVALID_REQUIRED_ACKS));
    }
    if core.shared.session_lost() {
        // Cut off from the controller for a whole session: the leaderships may have moved,
        // and an append here could be acknowledged on a stale epoch.
        let partitions = request.topics.iter().map(|t| t.partitions.len()).sum();
        let codes = std::iter::repeat_n(code::NOT_LEADER_OR_FOLLOWER, partitions);
        core.metrics.count_errors(header.api_key, codes);
        if acks == 0 {
            return Reply::Close("acks=0 produce to a broker out of its session");
        }
        return answer(header, &request, |_| error(code::NOT_LEADER_OR_FOLLOWER));
    }
    if let Some(turn) = &turn {
        turn.wait().await;
    }
    let min_insync_default = core.shared.config.min_insync_replicas;
    let timeout = Duration::from_millis(request.timeout_ms.max(0) as u64);
    let deadline = Instant::now() + timeout;
    let mut posted = Vec::with_capacity(request.topics.len());
    for topic in request.topics {
        // One registry lookup per topic serves every partition below.
        let found = ensure_topic(core, &topic.name).await;
        let mut partitions = Vec::with_capacity(topic.partitions.len());
        for partition in topic.partitions {
            let result = match &found {
                Err(error_code) => Posted::Answered(error(*error_code)),
                Ok(info) => {
                    let all = (acks == -1).then(|| AllReplicas {
                        min_insync: min_insync(info, min_insync_default).max(1) as usize,
                        deadline,
                    });
                    post_append(core, info, partition.index, partition.records, all).await
                }
            };
            partitions.push((partition.index, result));
        }
        posted.push((topic.name, partitions));
    }
    // Every append is queued on its owner: later requests on this connection may post theirs,
    // and the request's bytes leave the memory pool's count (an acks=all wait holds none).
    drop(turn);
    drop(permit);
    let mut response = ProduceResponse {
        topics: Vec::with_capacity(posted.len()),
        throttle_time_ms: 0,
    };
    for (name, partitions) in posted {
        let answers = partitions.into_iter().map(|(index, posted)| async move {
            ProducePartitionResponse {
                index,
                ..posted.answer().await
            }
        });
        response.topics.push(ProduceTopicResponse {
            name,
            partitions: futures_util::future::join_all(answers).await,
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
fn min_insync(topic: &TopicImage, default: i32) -> i32 {
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

/// One partition's append: answered already, or posted to its owner core.
enum Posted {
    Answered(ProducePartitionResponse),
    Waiting(Pin<Box<dyn Future<Output = Option<ProducePartitionResponse>>>>),
}

impl Posted {
    async fn answer(self) -> ProducePartitionResponse {
        match self {
            Posted::Answered(answer) => answer,
            Posted::Waiting(answer) => answer
                .await
                .unwrap_or_else(|| error(code::UNKNOWN_SERVER_ERROR)),
        }
    }
}

/// What acks=all asks of an append: an ISR of at least `min_insync` before it, and an answer
/// only once the high watermark passes it, by `deadline`.
#[derive(Clone, Copy)]
struct AllReplicas {
    min_insync: usize,
    deadline: Instant,
}

/// Posts one partition's batch to its owner core, where it takes its turn in the partition's
/// line of appends as soon as it arrives.
async fn post_append(
    core: &Rc<Shard>,
    info: &TopicImage,
    index: i32,
    records: Option<Bytes>,
    all: Option<AllReplicas>,
) -> Posted {
    let Some(records) = records else {
        return Posted::Answered(error(code::INVALID_RECORD));
    };
    let topic = info.name.as_str();
    if !info.has_partition(index) {
        return Posted::Answered(error(code::UNKNOWN_TOPIC_OR_PARTITION));
    }
    if !info.is_led_by(index, core.shared.config.node_id) {
        return Posted::Answered(error(code::NOT_LEADER_OR_FOLLOWER));
    }
    let owner = core.shared.owner(topic, index);
    let topic = topic.to_owned();
    let recompress = recompress_to(info);
    let answer = core
        .post(owner, move |owner| {
            let partition = owner.partition(&topic, index);
            let turn = partition.as_ref().map(|p| p.take_turn());
            async move {
                let target = (partition.clone(), turn);
                let append = Append {
                    records,
                    all,
                    recompress,
                };
                let answer = append_on_owner(&owner, target, (&topic, index), append).await;
                ProducePartitionResponse { index, ..answer }
            }
        })
        .await;
    Posted::Waiting(answer)
}

/// The codec a topic's `compression.type` names, if it names one: its batches are rewritten
/// into it (Kafka's broker-side recompression). `producer`, the default, keeps the bytes.
fn recompress_to(topic: &TopicImage) -> Option<Compression> {
    let value = topic.configs.get("compression.type")?;
    Compression::from_topic_config(value).flatten()
}

/// One partition's part of a produce request, as its owner core appends it.
struct Append {
    records: Bytes,
    all: Option<AllReplicas>,
    recompress: Option<Compression>,
}

/// The batch in `to`'s codec, when it is in another; its CPU is spent on the owner core, and
/// only for topics that ask for it.
fn recompressed(records: Bytes, to: Compression) -> Result<Bytes, i16> {
    let header = sluice_storage::batch::parse_header(&records).map_err(|e| code::from_batch(&e))?;
    match sluice_storage::records::recompress(&records, &header, to) {
        Ok(Some(rewritten)) => Ok(Bytes::from(rewritten)),
        Ok(None) => Ok(records),
        Err(e) => Err(code::from_batch(&e)),
    }
}

async fn append_on_owner(
    core: &Shard,
    (partition, turn): (Option<Rc<Partition>>, Option<Turn>),
    (topic, partition_index): (&str, i32),
    Append {
        records,
        all,
        recompress,
    }: Append,
) -> ProducePartitionResponse {
    let (Some(partition), Some(turn)) = (partition, turn) else {
        return error(core.shared.missing_partition_code(topic, partition_index));
    };
    if all.is_some_and(|all| partition.replica().isr().len() < all.min_insync) {
        return error(code::NOT_ENOUGH_REPLICAS);
    }
    // A producer sends one batch per partition; storage accepts several (followers append
    // many), so the produce path checks the first batch's length covers the whole record set.
    if sluice_storage::batch::parse_header(&records).is_ok_and(|h| h.total_len() < records.len()) {
        return error(code::INVALID_RECORD);
    }
    let record_bytes = records.len() as u64;
    let records = match recompress {
        None => records,
        Some(to) => match recompressed(records, to) {
            Ok(rewritten) => rewritten,
            Err(error_code) => return error(error_code),
        },
    };
    let appended = {
        let _waiting = crate::metrics::cells::Waiting::enter(&core.metrics.appends_waiting);
        partition.append_as_leader(&turn, records, now_ms()).await
    };
    drop(turn);
    match appended {
        Ok(result) => {
            let messages = (result.last_offset - result.base_offset + 1) as u64;
            CoreMetrics::add(&core.metrics.bytes_in, record_bytes);
            CoreMetrics::add(&core.metrics.messages_in, messages);
            core.metrics.topic_in(topic, record_bytes, messages);
            let error_code = match all {
                Some(all) => {
                    let _waiting =
                        crate::metrics::cells::Waiting::enter(&core.metrics.appends_waiting);
                    replicated(&partition, result.last_offset, all).await
                }
                None => code::NONE,
            };
            ProducePartitionResponse {
                index: -1,
                error_code,
                base_offset: result.base_offset,
                log_append_time_ms: -1,
                log_start_offset: result.log_start_offset,
            }
        }
        // A retried batch that was already appended: acknowledge it with its original offset.
        Err(PartitionError::Storage(StorageError::DuplicateSequence { base_offset, .. })) => {
            ProducePartitionResponse {
                index: -1,
                error_code: code::NONE,
                base_offset,
                log_append_time_ms: -1,
                log_start_offset: -1,
            }
        }
        Err(e) => {
            if matches!(e, PartitionError::Storage(StorageError::Io(_))) {
                tracing::error!(%topic, error = %e, "append failed");
            }
            error(e.code())
        }
    }
}

/// Waits until the high watermark passes `last_offset` (Kafka's acks=all): NONE then, or
/// NOT_ENOUGH_REPLICAS_AFTER_APPEND if the ISR shrank below `min.insync.replicas` to get
/// there; NOT_LEADER_OR_FOLLOWER if leadership moved; REQUEST_TIMED_OUT past the request's
/// timeout.
async fn replicated(partition: &Partition, last_offset: i64, all: AllReplicas) -> i16 {
    match partition.wait_committed(last_offset, all.deadline).await {
        Ok(Some(isr)) if isr < all.min_insync => code::NOT_ENOUGH_REPLICAS_AFTER_APPEND,
        Ok(Some(_)) => code::NONE,
        Ok(None) => code::REQUEST_TIMED_OUT,
        Err(error) => error.code(),
    }
}
