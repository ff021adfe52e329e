//! Fetch: each partition is read on its owner core, which answers with file regions only;
//! the connection's core writes them out zero-copy. Long polls wait on the partitions'
//! append events, never on a timer loop.

use std::rc::Rc;
use std::time::{Duration, Instant};

use sluice_net::fetch::{FetchPartitionResponse, FetchRequest, FetchResponse, FetchTopicResponse};
use sluice_net::RequestHeader;
use sluice_storage::StorageError;

use super::Reply;
use crate::clock::now_ms;
use crate::error_codes as code;
use crate::metadata::MetadataImage;
use crate::partition::{FollowerFetch, Offsets, PartitionError, Read};
use crate::region::Region;
use crate::replication;
use crate::shard::Shard;

/// Longest a fetch may wait, whatever the client asks: bounds parked requests.
const FETCH_WAIT_MS_MAX: i32 = 30_000;

struct Wanted {
    topic: String,
    partition: i32,
    offset: i64,
    max_bytes: u64,
    /// The leader epoch the client knows (-1: none given), checked as KIP-320 says.
    leader_epoch: i32,
    /// The epoch of the last batch a follower holds (-1 for consumers and before v12).
    last_fetched_epoch: i32,
    /// The fetching follower's broker id; -1 for a consumer.
    replica: i32,
}

pub async fn handle(core: &Rc<Shard>, header: &RequestHeader, request: FetchRequest) -> Reply {
    crate::metrics::cells::CoreMetrics::add(&core.metrics.fetch_requests, 1);
    // Sluice keeps no incremental sessions: a full fetch (epoch -1 or 0 with id 0) gets session
    // id 0, which tells the client to keep sending full requests; anything else is unknown.
    if request.session_id != 0 || request.session_epoch > 0 {
        core.metrics
            .count_errors(header.api_key, [code::FETCH_SESSION_ID_NOT_FOUND]);
        let response: FetchResponse<Region> = FetchResponse {
            throttle_time_ms: 0,
            error_code: code::FETCH_SESSION_ID_NOT_FOUND,
            session_id: 0,
            topics: Vec::new(),
        };
        return Reply::Chunks(sluice_net::fetch::encode_fetch_response(header, response));
    }
    let wanted: Vec<Wanted> = request
        .topics
        .iter()
        .flat_map(|t| {
            t.partitions.iter().map(|p| Wanted {
                topic: t.name.clone(),
                partition: p.partition,
                offset: p.fetch_offset,
                max_bytes: p.partition_max_bytes.max(0) as u64,
                leader_epoch: p.current_leader_epoch,
                last_fetched_epoch: p.last_fetched_epoch,
                replica: request.replica_id,
            })
        })
        .collect();
    let wait = Duration::from_millis(request.max_wait_ms.clamp(0, FETCH_WAIT_MS_MAX) as u64);
    let deadline = Instant::now() + wait;
    let min_bytes = request.min_bytes.max(0) as u64;
    // The broker's `fetch.max.bytes` caps what a consumer asks for (KIP-541), which also keeps
    // the response frame's i32 length far from overflowing.
    let response_bytes_max = core.shared.config.fetch_response_bytes_max;
    let max_bytes = (request.max_bytes.max(0) as u64).min(response_bytes_max);
    // Listeners are registered only once a read falls short, and the read is then repeated,
    // so a fetch that is answered at once pays nothing for waiting and an append between a
    // read and the wait is never missed.
    let mut listeners = None;
    loop {
        let results = read_all(core, &wanted, max_bytes).await;
        let bytes: u64 = results.iter().map(record_bytes).sum();
        let failed = results.iter().any(|r| r.error_code != code::NONE);
        let now = Instant::now();
        // Nothing to wait on (no partition exists) also ends the fetch.
        let nothing_to_wait_on = listeners.as_ref().is_some_and(Vec::is_empty);
        // As in Kafka, `fetch.min.bytes` of 0 answers at once, even with nothing to send.
        if bytes >= min_bytes || failed || now >= deadline || nothing_to_wait_on {
            count(core, header, &wanted, &results);
            let response = build_response(&request, results);
            return Reply::Chunks(sluice_net::fetch::encode_fetch_response(header, response));
        }
        let Some(waiting) = listeners.take() else {
            listeners = Some(listen(core, &wanted));
            continue;
        };
        let any_append = futures_util::future::select_all(waiting);
        let timeout = compio::time::sleep(deadline - now);
        let _parked = crate::metrics::cells::Waiting::enter(&core.metrics.fetches_waiting);
        futures_util::future::select(Box::pin(any_append), Box::pin(timeout)).await;
    }
}

/// Per-topic record bytes out and per-partition error codes, on the connection's core.
fn count(
    core: &Shard,
    header: &RequestHeader,
    wanted: &[Wanted],
    results: &[FetchPartitionResponse<Region>],
) {
    for (w, result) in wanted.iter().zip(results) {
        core.metrics.topic_out(&w.topic, record_bytes(result));
    }
    let codes = results.iter().map(|r| r.error_code);
    core.metrics.count_errors(header.api_key, codes);
}

fn listen(core: &Shard, wanted: &[Wanted]) -> Vec<event_listener::EventListener> {
    let image = core.shared.metadata.image();
    wanted
        .iter()
        .filter(|w| {
            image
                .topic(&w.topic)
                .is_some_and(|t| t.has_partition(w.partition))
        })
        .map(|w| core.shared.wakeups.event(&w.topic, w.partition).listen())
        .collect()
}

/// Reads partitions, spending one response byte budget across them in request order. At most
/// one batch beyond the budget is returned, and only as the first data in the response.
///
/// Every partition is read at once, each up to its own limit and the whole budget, with one
/// trip to each owner core carrying all of that core's partitions: a read only locates
/// batches in a segment, so reading more than the budget allows costs little, while a trip
/// per partition costs a cross-core wake-up each way per partition. The budget is then
/// applied in order; the one partition whose data straddles the end of the budget is read
/// again with what is left, so the answer is exactly what reading one partition after
/// another would give.
async fn read_all(
    core: &Rc<Shard>,
    wanted: &[Wanted],
    max_bytes: u64,
) -> Vec<FetchPartitionResponse<Region>> {
    let (mut results, first_batches) = read_many(core, wanted, max_bytes).await;
    let mut budget = max_bytes;
    let mut first = true;
    for ((w, result), first_batch) in wanted.iter().zip(results.iter_mut()).zip(first_batches) {
        let limit = w.max_bytes.min(budget);
        // Past the first partition with data, one whose first batch is larger than what is
        // left gets nothing, and reading it again would not change that.
        let none_fits = !first && first_batch > limit;
        if record_bytes(result) > limit && limit < w.max_bytes.min(max_bytes) && !none_fits {
            *result = read_one(core, w, limit).await.0;
        }
        if record_bytes(result) > limit && !first {
            result.records.clear();
        }
        budget = budget.saturating_sub(record_bytes(result));
        first &= result.records.is_empty();
    }
    results
}

fn record_bytes(result: &FetchPartitionResponse<Region>) -> u64 {
    result.records.iter().map(|r| r.0.len).sum()
}

/// One partition's read as its owner core runs it.
struct ReadJob {
    topic: String,
    partition: i32,
    offset: i64,
    max_bytes: u64,
    leader_epoch: i32,
    follower: Option<FollowerFetch>,
}

/// What the owner core found: the read (with a follower's diverging epoch) and the
/// partition's offsets; `None` when it holds no such partition.
type Outcome = Option<(Result<(Read, Option<(i32, i64)>), PartitionError>, Offsets)>;

/// A partition's answer, and the size of the first batch in it (0 when none).
type Answer = (FetchPartitionResponse<Region>, u64);

/// Every wanted partition read up to `max_bytes` and its own limit, one trip per owner core;
/// the answers, and the first batch's size in each.
async fn read_many(
    core: &Rc<Shard>,
    wanted: &[Wanted],
    max_bytes: u64,
) -> (Vec<FetchPartitionResponse<Region>>, Vec<u64>) {
    let image = core.shared.metadata.image();
    let mut results: Vec<Option<Answer>> = Vec::new();
    results.resize_with(wanted.len(), || None);
    let mut by_owner: Vec<Vec<(usize, ReadJob)>> = Vec::new();
    by_owner.resize_with(core.shared.cores, Vec::new);
    for (index, w) in wanted.iter().enumerate() {
        match job_for(core, &image, w, w.max_bytes.min(max_bytes)) {
            Ok((owner, job)) => by_owner[owner].push((index, job)),
            Err(answered) => results[index] = Some((answered, 0)),
        }
    }
    let trips = by_owner
        .into_iter()
        .enumerate()
        .filter(|(_, jobs)| !jobs.is_empty())
        .map(|(owner, jobs)| async move {
            let indices: Vec<usize> = jobs.iter().map(|(index, _)| *index).collect();
            let outcomes = core
                .invoke(owner, move |owner| async move {
                    let reads = jobs.into_iter().map(|(_, job)| run_job(&owner, job));
                    futures_util::future::join_all(reads).await
                })
                .await;
            (indices, outcomes)
        });
    for (indices, outcomes) in futures_util::future::join_all(trips).await {
        let mut outcomes = outcomes.map(Vec::into_iter);
        for index in indices {
            let outcome = outcomes.as_mut().and_then(Iterator::next).flatten();
            results[index] = Some(finish(core, &wanted[index], outcome));
        }
    }
    // Every partition was answered above or read; the fallback is never taken.
    results
        .into_iter()
        .zip(wanted)
        .map(|(result, w)| result.unwrap_or_else(|| (empty(w, code::UNKNOWN_SERVER_ERROR), 0)))
        .unzip()
}

/// One partition read on its own, up to `max_bytes`.
async fn read_one(core: &Rc<Shard>, w: &Wanted, max_bytes: u64) -> Answer {
    let (mut results, mut first_batches) =
        read_many(core, std::slice::from_ref(w), max_bytes).await;
    match (results.pop(), first_batches.pop()) {
        (Some(result), Some(first_batch)) => (result, first_batch),
        _ => (empty(w, code::UNKNOWN_SERVER_ERROR), 0),
    }
}

fn empty(w: &Wanted, error_code: i16) -> FetchPartitionResponse<Region> {
    FetchPartitionResponse {
        partition: w.partition,
        error_code,
        high_watermark: -1,
        last_stable_offset: -1,
        log_start_offset: -1,
        records: Vec::new(),
        diverging_epoch: None,
    }
}

/// The owner core and the read to run there, or the answer when there is nothing to read.
fn job_for(
    core: &Shard,
    image: &MetadataImage,
    w: &Wanted,
    max_bytes: u64,
) -> Result<(usize, ReadJob), FetchPartitionResponse<Region>> {
    // A follower's fetch moves the high watermark; a leader out of its session must not let
    // it, as its followers may be copying from a newer leader already.
    if w.replica >= 0 && core.shared.session_lost() {
        return Err(empty(w, code::NOT_LEADER_OR_FOLLOWER));
    }
    let owner = match image.topic(&w.topic) {
        Some(topic) if topic.is_led_by(w.partition, core.shared.config.node_id) => {
            core.shared.owner(&w.topic, w.partition)
        }
        Some(topic) if topic.has_partition(w.partition) => {
            return Err(empty(w, code::NOT_LEADER_OR_FOLLOWER))
        }
        _ => return Err(empty(w, code::UNKNOWN_TOPIC_OR_PARTITION)),
    };
    let follower = (w.replica >= 0).then_some(FollowerFetch {
        replica: w.replica,
        offset: w.offset,
        current_leader_epoch: w.leader_epoch,
        last_fetched_epoch: w.last_fetched_epoch,
    });
    let job = ReadJob {
        topic: w.topic.clone(),
        partition: w.partition,
        offset: w.offset,
        max_bytes,
        leader_epoch: w.leader_epoch,
        follower,
    };
    Ok((owner, job))
}

/// Runs one read on the partition's owner core.
async fn run_job(owner: &Rc<Shard>, job: ReadJob) -> Outcome {
    let ReadJob {
        topic,
        partition,
        offset,
        max_bytes,
        leader_epoch,
        follower,
    } = job;
    let partition_state = owner.partition(&topic, partition)?;
    let read = match follower {
        None => partition_state
            .read_for_consumer(offset, max_bytes, leader_epoch)
            .await
            .map(|read| (read, None)),
        Some(fetch) => {
            let served = partition_state
                .read_for_follower(fetch, max_bytes, now_ms())
                .await;
            served.map(|served| {
                if let Some(change) = served.isr_change {
                    replication::request_isr_change(owner, &topic, partition, change);
                }
                (served.read, served.diverging_epoch)
            })
        }
    };
    Some((read, partition_state.offsets()))
}

/// The answer for one partition from what its owner core found.
fn finish(core: &Shard, w: &Wanted, outcome: Outcome) -> Answer {
    let Some((result, offsets)) = outcome else {
        let code = core.shared.missing_partition_code(&w.topic, w.partition);
        return (empty(w, code), 0);
    };
    let mut diverging_epoch = None;
    let mut first_batch = 0;
    let (error_code, records, offsets) = match result {
        Ok((read, diverging)) => {
            diverging_epoch = diverging;
            first_batch = read.first_batch_len;
            let regions = read.regions.into_iter().map(Region).collect();
            (code::NONE, regions, read.offsets)
        }
        Err(e @ PartitionError::Storage(StorageError::Io(_) | StorageError::Corrupt(_))) => {
            tracing::warn!(topic = %w.topic, partition = w.partition, error = %e, "read failed");
            (e.code(), Vec::new(), offsets)
        }
        Err(e) => (e.code(), Vec::new(), offsets),
    };
    let response = FetchPartitionResponse {
        partition: w.partition,
        error_code,
        high_watermark: offsets.high_watermark,
        last_stable_offset: offsets.high_watermark,
        log_start_offset: offsets.log_start_offset,
        records,
        diverging_epoch,
    };
    (response, first_batch)
}

fn build_response(
    request: &FetchRequest,
    results: Vec<FetchPartitionResponse<Region>>,
) -> FetchResponse<Region> {
    let mut results = results.into_iter();
    let topics = request
        .topics
        .iter()
        .map(|t| FetchTopicResponse {
            name: t.name.clone(),
            partitions: results.by_ref().take(t.partitions.len()).collect(),
        })
        .collect();
    FetchResponse {
        throttle_time_ms: 0,
        error_code: code::NONE,
        session_id: 0,
        topics,
    }
}
