//! ListOffsets (earliest, latest, by timestamp, max timestamp) and DeleteRecords, each run on
//! the partition's owner core.

use std::rc::Rc;

use kafka_protocol::messages::delete_records_response::{
    DeleteRecordsPartitionResult, DeleteRecordsTopicResult,
};
use kafka_protocol::messages::list_offsets_response::{
    ListOffsetsPartitionResponse, ListOffsetsTopicResponse,
};
use kafka_protocol::messages::{
    DeleteRecordsRequest, DeleteRecordsResponse, ListOffsetsRequest, ListOffsetsResponse,
};

use crate::error_codes as code;
use crate::partition::Partition;
use crate::shard::Shard;

const LATEST: i64 = -1;
const EARLIEST: i64 = -2;
const MAX_TIMESTAMP: i64 = -3;
/// The replica id of a consumer. Any other (a follower's id, or -2, the debugging id Kafka's
/// tools send) is told the log end for LATEST rather than the high watermark, as Kafka does.
const CONSUMER_REPLICA_ID: i32 = -1;

pub async fn list_offsets(
    core: &Rc<Shard>,
    version: i16,
    request: ListOffsetsRequest,
) -> ListOffsetsResponse {
    let mut response = ListOffsetsResponse::default();
    let from_consumer = request.replica_id.0 == CONSUMER_REPLICA_ID;
    for topic in request.topics {
        let name = topic.name.0.to_string();
        let mut out = ListOffsetsTopicResponse::default();
        out.name = topic.name.clone();
        // Every partition's owner is asked at once; answers keep the request's order.
        let lookups = topic.partitions.iter().map(|wanted| {
            let (index, timestamp) = (wanted.partition_index, wanted.timestamp);
            let epoch = wanted.current_leader_epoch;
            let name = &name;
            async move {
                let looked_up = on_owner(core, name, index, move |partition| async move {
                    lookup(&partition, timestamp, epoch, from_consumer).await
                });
                (index, looked_up.await)
            }
        });
        for (index, looked_up) in futures_util::future::join_all(lookups).await {
            let mut partition = ListOffsetsPartitionResponse::default();
            partition.partition_index = index;
            match looked_up {
                Ok((offset, found_timestamp, leader_epoch)) => {
                    partition.offset = offset;
                    partition.timestamp = found_timestamp;
                    // The field exists from version 4; earlier versions must leave it unset.
                    if version >= 4 {
                        partition.leader_epoch = leader_epoch;
                    }
                }
                Err(error_code) => partition.error_code = error_code,
            }
            out.partitions.push(partition);
        }
        response.topics.push(out);
    }
    response
}

/// (offset, timestamp, leader epoch) for one ListOffsets partition, on the leader.
async fn lookup(
    partition: &Partition,
    timestamp: i64,
    leader_epoch: i32,
    from_consumer: bool,
) -> Result<(i64, i64, i32), i16> {
    partition.check_leader(leader_epoch).map_err(|e| e.code())?;
    let epoch = partition.replica().leader_epoch();
    let (offset, timestamp) = find(partition, timestamp, from_consumer).await?;
    Ok((offset, timestamp, epoch))
}

/// A consumer may read only up to the high watermark, so that is its LATEST; a replica or an
/// operator's tool asks where the log itself ends (Kafka's `isFromConsumer`).
async fn find(
    partition: &Partition,
    timestamp: i64,
    from_consumer: bool,
) -> Result<(i64, i64), i16> {
    match timestamp {
        LATEST if from_consumer => Ok((partition.offsets().high_watermark, -1)),
        LATEST => Ok((partition.offsets().log_end_offset, -1)),
        EARLIEST => Ok((partition.offsets().log_start_offset, -1)),
        MAX_TIMESTAMP => Ok(partition
            .max_timestamp()
            .await
            .map_or((-1, -1), |(ts, offset)| (offset, ts))),
        _ => match partition.offset_for_timestamp(timestamp).await {
            Ok(found) => Ok(found.unwrap_or((-1, -1))),
            Err(e) => Err(code::from_storage(&e)),
        },
    }
}

/// Runs `work` with the partition's log on its owner core.
async fn on_owner<T, F, Fut>(core: &Rc<Shard>, topic: &str, index: i32, work: F) -> Result<T, i16>
where
    T: Send + 'static,
    F: FnOnce(Rc<Partition>) -> Fut + Send + 'static,
    Fut: std::future::Future<Output = Result<T, i16>> + 'static,
{
    let Some(image) = core.shared.metadata.topic(topic) else {
        return Err(code::UNKNOWN_TOPIC_OR_PARTITION);
    };
    if !image.has_partition(index) {
        return Err(code::UNKNOWN_TOPIC_OR_PARTITION);
    }
    if !image.is_led_by(index, core.shared.config.node_id) {
        return Err(code::NOT_LEADER_OR_FOLLOWER);
    }
    let owner = core.shared.owner(topic, index);
    let topic = topic.to_owned();
    core.invoke(owner, move |owner| async move {
        let partition = owner
            .partition(&topic, index)
            .ok_or(code::UNKNOWN_TOPIC_OR_PARTITION)?;
        work(partition).await
    })
    .await
    .unwrap_or(Err(code::UNKNOWN_SERVER_ERROR))
}

pub async fn delete_records(
    core: &Rc<Shard>,
    request: DeleteRecordsRequest,
) -> DeleteRecordsResponse {
    let mut response = DeleteRecordsResponse::default();
    for topic in request.topics {
        let name = topic.name.0.to_string();
        let mut out = DeleteRecordsTopicResult::default();
        out.name = topic.name.clone();
        // Every partition's owner is asked at once; answers keep the request's order.
        let deletions = topic.partitions.iter().map(|wanted| {
            let (index, offset) = (wanted.partition_index, wanted.offset);
            let name = &name;
            async move { (index, delete_before(core, name, index, offset).await) }
        });
        for (index, deleted) in futures_util::future::join_all(deletions).await {
            let mut partition = DeleteRecordsPartitionResult::default();
            partition.partition_index = index;
            match deleted {
                Ok(low_watermark) => partition.low_watermark = low_watermark,
                Err(error_code) => {
                    partition.error_code = error_code;
                    partition.low_watermark = -1;
                }
            }
            out.partitions.push(partition);
        }
        response.topics.push(out);
    }
    response
}

/// DeleteRecords for one partition, on its owner core: the new log start (low watermark).
async fn delete_before(core: &Rc<Shard>, topic: &str, index: i32, offset: i64) -> Result<i64, i16> {
    on_owner(core, topic, index, move |partition| async move {
        partition.delete_records(offset).await.map_err(|e| e.code())
    })
    .await
}
