//! The consume mode: a topic's partitions dealt round-robin to consumers, each on its own
//! thread, fetching its share from the log start with one Fetch in flight per connection and
//! counting records and bytes from the batch headers, never decoding records. On a cluster, a
//! consumer holds one connection per leader of its partitions and fetches from each at once.
//! End-to-end runs reuse these consumers from the topic's end offsets, reading each batch's
//! send stamp.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use kafka_protocol::messages::fetch_request::{FetchPartition, FetchTopic};
use kafka_protocol::messages::{BrokerId, FetchRequest, FetchResponse};
use sluice_net::client::Client;

use crate::args::{ConsumeArgs, FetchArgs};
use crate::batch::{count_batches_each, sent_unix_us};
use crate::clock;
use crate::cluster::{
    self, topic_name, Layout, Routes, Versions, EARLIEST_TIMESTAMP, LATEST_TIMESTAMP,
};
use crate::e2e::Flow;
use crate::error::BenchError;
use crate::harness::{self, Options, Worker};
use crate::stats::{Mode, Sample, Summary, Value};

/// Fetches in a row that may bring nothing while a partition is still short of its end
/// offset, before the run calls the broker stuck; each waits up to --fetch-max-wait-ms.
const FETCHES_WITHOUT_PROGRESS_MAX: u32 = 20;

/// When consumers stop.
#[derive(Debug, Clone)]
pub enum Limit {
    /// At the high watermarks seen when the run started: the topic as it was, read once.
    EndOffsets,
    /// After this many measured records over all consumers; fetches past the end wait.
    Messages(u64),
    /// This long after the warm-up.
    Duration(Duration),
    /// Until every producer of an end-to-end run is done and all it sent is consumed.
    Follow(Arc<Flow>),
}

/// Where a consumer is in one partition.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Cursor {
    partition: i32,
    offset: i64,
    end: i64,
}

pub struct Plan {
    /// Each partition's leader, and a connection per leader.
    routes: Routes,
    topic: String,
    version: i16,
    min_bytes: i32,
    max_wait_ms: i32,
    max_bytes: i32,
    partition_max_bytes: i32,
    limit: Limit,
    /// Each consumer's partitions.
    assignments: Vec<Vec<Cursor>>,
    /// Measured records over all consumers, for Limit::Messages.
    consumed: AtomicU64,
    /// Value bytes per record, where the run made the records (end-to-end).
    message_size: Option<usize>,
}

pub fn run(args: &ConsumeArgs) -> Result<Summary, BenchError> {
    let addr = args.common.bootstrap_addr()?;
    let (versions, layout, routes, cursors) = setup(addr, &args.common.topic)?;
    let consumers = args.consumers.min(cursors.len());
    if consumers < args.consumers {
        eprintln!(
            "topic {} has {} partitions; running {consumers} consumers, as more would idle",
            args.common.topic,
            cursors.len()
        );
    }
    let limit = match (args.common.messages, args.common.duration) {
        (Some(messages), _) => Limit::Messages(messages),
        (None, Some(duration)) => Limit::Duration(duration),
        (None, None) => Limit::EndOffsets,
    };
    let records_expected: i64 = cursors.iter().map(|c| c.end - c.offset).sum();
    let plan = Arc::new(plan(
        routes,
        &args.common.topic,
        &versions,
        &args.fetch,
        limit,
        deal(&cursors, consumers),
        None,
    ));
    let mut settings = vec![
        ("topic", Value::Text(plan.topic.clone())),
        ("partitions", Value::from(cursors.len() as u64)),
        (
            "replication_factor",
            Value::from(layout.replication_factor as u64),
        ),
        ("leaders", Value::from(plan.routes.lanes.len() as u64)),
        ("consumers", Value::from(consumers as u64)),
    ];
    settings.extend(fetch_settings(&plan));
    settings.extend(limit_settings(args, &plan, records_expected));
    let options = Options {
        mode: Mode::Consume,
        workers: consumers,
        interval: args.common.interval(),
        warmup: args.common.warmup,
    };
    let shared = Arc::clone(&plan);
    let outcome = harness::run(&options, move |worker| {
        let index = worker.id;
        consume(worker, index, &shared)
    })?;
    Ok(Summary {
        mode: Mode::Consume,
        settings,
        stats: outcome.total,
        elapsed: outcome.elapsed,
    })
}

/// The consumers' plan.
pub fn plan(
    routes: Routes,
    topic: &str,
    versions: &Versions,
    fetch: &FetchArgs,
    limit: Limit,
    assignments: Vec<Vec<Cursor>>,
    message_size: Option<usize>,
) -> Plan {
    Plan {
        routes,
        topic: topic.to_owned(),
        version: versions.fetch,
        min_bytes: fetch.fetch_min_bytes,
        max_wait_ms: fetch.fetch_max_wait_ms,
        max_bytes: fetch.fetch_max_bytes,
        partition_max_bytes: fetch.max_partition_fetch_bytes,
        limit,
        assignments,
        consumed: AtomicU64::new(0),
        message_size,
    }
}

/// Negotiates versions, finds each partition's leader, and asks the leaders for every
/// partition's log start and high watermark.
fn setup(
    addr: SocketAddr,
    topic: &str,
) -> Result<(Versions, Layout, Routes, Vec<Cursor>), BenchError> {
    let runtime = compio::runtime::Runtime::new().map_err(BenchError::Runtime)?;
    runtime.block_on(async {
        let mut client = cluster::connect(addr, "sluice-bench-setup".to_owned()).await?;
        let versions = cluster::negotiate(&mut client).await?;
        let layout = cluster::await_leaders(&mut client, &versions, topic)
            .await?
            .ok_or_else(|| BenchError::TopicMissing(topic.to_owned()))?;
        let routes = Routes::new(&layout, addr)?;
        let starts = cluster::offsets_at_leaders(
            &mut client,
            addr,
            &versions,
            topic,
            &routes,
            EARLIEST_TIMESTAMP,
        )
        .await?;
        let ends = cluster::offsets_at_leaders(
            &mut client,
            addr,
            &versions,
            topic,
            &routes,
            LATEST_TIMESTAMP,
        )
        .await?;
        let cursors = starts
            .iter()
            .zip(&ends)
            .enumerate()
            .map(|(partition, (&offset, &end))| Cursor {
                partition: partition as i32,
                offset,
                end,
            })
            .collect();
        // The run does not depend on a clean close; the broker drops the connection anyway.
        let _ = client.close().await;
        Ok((versions, layout, routes, cursors))
    })
}

/// Each partition's high watermark, asked of its leader: where an end-to-end run's
/// consumers start. `client` is a connection to `addr`.
pub async fn end_cursors(
    client: &mut Client,
    addr: SocketAddr,
    versions: &Versions,
    topic: &str,
    routes: &Routes,
) -> Result<Vec<Cursor>, BenchError> {
    let ends = cluster::offsets_at_leaders(client, addr, versions, topic, routes, LATEST_TIMESTAMP)
        .await?;
    Ok(ends
        .iter()
        .enumerate()
        .map(|(partition, &end)| Cursor {
            partition: partition as i32,
            offset: end,
            end: i64::MAX,
        })
        .collect())
}

/// Deals partitions round-robin, so consumer c gets partitions c, c + n, c + 2n...
pub fn deal(cursors: &[Cursor], consumers: usize) -> Vec<Vec<Cursor>> {
    assert!(consumers >= 1);
    let mut hands = vec![Vec::new(); consumers];
    for (i, cursor) in cursors.iter().enumerate() {
        hands[i % consumers].push(*cursor);
    }
    hands
}

/// The fetch knobs, as summaries report them.
pub fn fetch_settings(plan: &Plan) -> Vec<(&'static str, Value)> {
    vec![
        ("fetch_min_bytes", Value::Int(i64::from(plan.min_bytes))),
        ("fetch_max_wait_ms", Value::Int(i64::from(plan.max_wait_ms))),
        ("fetch_max_bytes", Value::Int(i64::from(plan.max_bytes))),
        (
            "max_partition_fetch_bytes",
            Value::Int(i64::from(plan.partition_max_bytes)),
        ),
        ("fetch_version", Value::Int(i64::from(plan.version))),
    ]
}

fn limit_settings(
    args: &ConsumeArgs,
    plan: &Plan,
    records_expected: i64,
) -> Vec<(&'static str, Value)> {
    let (messages_limit, duration_limit) = match &plan.limit {
        Limit::EndOffsets | Limit::Follow(_) => (Value::Null, Value::Null),
        Limit::Messages(messages) => (Value::from(*messages), Value::Null),
        Limit::Duration(duration) => (Value::Null, Value::Float(duration.as_secs_f64())),
    };
    vec![
        ("warmup_s", Value::Float(args.common.warmup.as_secs_f64())),
        ("messages_limit", messages_limit),
        ("duration_limit_s", duration_limit),
        ("records_at_start", Value::Int(records_expected)),
    ]
}

/// Consumer `index`'s whole life, on its own thread: one connection and fetch loop per
/// leader of its partitions, all on this thread's runtime.
pub fn consume(mut worker: Worker, index: usize, plan: &Plan) -> Result<(), BenchError> {
    let runtime = compio::runtime::Runtime::new().map_err(BenchError::Runtime)?;
    let client_id = format!("sluice-bench-consumer-{index}");
    let hands = by_lane(&plan.routes, &plan.assignments[index]);
    let mut clients = runtime.block_on(async {
        let mut clients = Vec::with_capacity(hands.len());
        for (lane, _) in &hands {
            let addr = plan.routes.lanes[*lane].addr;
            clients.push(cluster::connect(addr, client_id.clone()).await?);
        }
        Ok::<_, BenchError>(clients)
    })?;
    worker.start();
    let loops = clients
        .iter_mut()
        .zip(hands)
        .map(|(client, (lane, cursors))| fetch_loop(&worker, plan, lane, client, cursors));
    runtime
        .block_on(futures_util::future::try_join_all(loops))
        .map(|_| ())
}

/// A consumer's cursors split by the lane (leader) of their partition, in lane order.
fn by_lane(routes: &Routes, cursors: &[Cursor]) -> Vec<(usize, Vec<Cursor>)> {
    let mut hands: Vec<(usize, Vec<Cursor>)> = Vec::new();
    for cursor in cursors {
        let lane = routes.lane_of[cursor.partition as usize];
        match hands.iter_mut().find(|(l, _)| *l == lane) {
            Some((_, hand)) => hand.push(*cursor),
            None => hands.push((lane, vec![*cursor])),
        }
    }
    hands.sort_by_key(|(lane, _)| *lane);
    hands
}

/// Fetches `cursors`, all led by lane `lane`'s broker, over `client`.
async fn fetch_loop(
    worker: &Worker,
    plan: &Plan,
    lane: usize,
    client: &mut Client,
    mut cursors: Vec<Cursor>,
) -> Result<(), BenchError> {
    let stop_at = match &plan.limit {
        Limit::Duration(duration) => Some(worker.measure_from() + *duration),
        _ => None,
    };
    let mut stamps = Vec::new();
    let mut idle_fetches = 0;
    // Rotated every fetch: the broker fills a response in request order, so a fixed order
    // would let the first partitions starve the rest of the byte budget.
    let mut first = 0;
    loop {
        let done = match &plan.limit {
            Limit::Messages(messages) => plan.consumed.load(Ordering::Relaxed) >= *messages,
            Limit::Follow(flow) => flow.finished(),
            _ => stop_at.is_some_and(|end| Instant::now() >= end),
        };
        if done || worker.stopped() {
            return Ok(());
        }
        let wanted = wanted(&plan.limit, &cursors, first);
        let Some(&first_wanted) = wanted.first() else {
            return Ok(());
        };
        first = (first + 1) % cursors.len();
        let request = fetch_request(plan, wanted.iter().map(|&i| &cursors[i]));
        let began = Instant::now();
        let response = client
            .send_request(plan.version, &request)
            .await
            .map_err(|e| plan.routes.connection_error(lane, e))?;
        let mut sample = Sample {
            latency: Some(began.elapsed()),
            ..Sample::default()
        };
        let follow = match &plan.limit {
            Limit::Follow(flow) => Some(flow),
            _ => None,
        };
        advance(
            plan,
            &mut cursors,
            &response,
            &mut sample,
            follow.map(|_| &mut stamps),
        )
        .map_err(|error| match error {
            BenchError::Partition {
                topic,
                partition,
                during,
                error_code,
            } if cluster::not_leader(error_code) => BenchError::LeaderMoved {
                topic,
                partition,
                broker: plan.routes.lanes[lane].broker_id,
                during,
                error_code,
            },
            other => other,
        })?;
        if let Some(flow) = follow {
            flow.consumed(sample.messages);
            record_end_to_end(worker, plan, &mut stamps);
        } else {
            if began >= worker.measure_from() {
                plan.consumed.fetch_add(sample.messages, Ordering::Relaxed);
            }
            worker.record(&sample, began);
        }
        idle_fetches = if sample.batch_bytes == 0 {
            idle_fetches + 1
        } else {
            0
        };
        let stalled = match &plan.limit {
            Limit::EndOffsets => true,
            // Once the producers are done, what they sent is all in the log already.
            Limit::Follow(flow) => flow.producers_done(),
            _ => false,
        };
        if stalled && idle_fetches >= FETCHES_WITHOUT_PROGRESS_MAX {
            return Err(BenchError::Stalled {
                topic: plan.topic.clone(),
                partition: cursors[first_wanted].partition,
                fetches: idle_fetches,
            });
        }
    }
}

/// Indexes of the cursors to fetch, starting the rotation at `first`. Reading to the end
/// offsets drops finished partitions; the other limits keep fetching all, waiting for more.
fn wanted(limit: &Limit, cursors: &[Cursor], first: usize) -> Vec<usize> {
    (0..cursors.len())
        .map(|i| (first + i) % cursors.len())
        .filter(|&i| !matches!(limit, Limit::EndOffsets) || cursors[i].offset < cursors[i].end)
        .collect()
}

/// One fetched batch's send stamp, for end-to-end latency.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Stamp {
    sent_unix_us: u64,
    records: u64,
    bytes: u64,
}

/// Records each fetched batch as one end-to-end sample, timed from its send stamp; the stamp
/// also decides whether it falls in the warm-up.
fn record_end_to_end(worker: &Worker, plan: &Plan, stamps: &mut Vec<Stamp>) {
    let now = Instant::now();
    let message_size = plan.message_size.unwrap_or(0) as u64;
    for stamp in stamps.drain(..) {
        let sent = clock::instant_of(stamp.sent_unix_us);
        let sample = Sample {
            messages: stamp.records,
            payload_bytes: stamp.records * message_size,
            batch_bytes: stamp.bytes,
            latency: Some(now.saturating_duration_since(sent)),
            error: false,
        };
        worker.record(&sample, sent);
    }
}

/// Counts what a fetch brought into `sample` and moves each cursor past its whole batches;
/// with `stamps`, also collects every batch's send stamp.
fn advance(
    plan: &Plan,
    cursors: &mut [Cursor],
    response: &FetchResponse,
    sample: &mut Sample,
    mut stamps: Option<&mut Vec<Stamp>>,
) -> Result<(), BenchError> {
    if response.error_code != 0 {
        return Err(BenchError::Request {
            during: "Fetch",
            error_code: response.error_code,
        });
    }
    let answers = response
        .responses
        .iter()
        .filter(|t| t.topic.0.as_str() == plan.topic)
        .flat_map(|t| t.partitions.iter());
    // Answers come in the order the request named the partitions, which is the cursors'
    // order: each search starts where the last one ended, so a response of thousands of
    // partitions costs one pass, not one pass per partition.
    let mut next = 0;
    for answer in answers {
        let count = cursors.len();
        let Some(found) = (0..count)
            .map(|k| (next + k) % count)
            .find(|&i| cursors[i].partition == answer.partition_index)
        else {
            continue;
        };
        next = found + 1;
        let cursor = &mut cursors[found];
        if answer.error_code != 0 {
            return Err(BenchError::Partition {
                topic: plan.topic.clone(),
                partition: cursor.partition,
                during: "Fetch",
                error_code: answer.error_code,
            });
        }
        // Whole batches are counted, so a fetch that starts inside a batch (after
        // DeleteRecords) counts the records before its offset too, as Kafka consumers skip.
        let records = answer.records.as_deref().unwrap_or_default();
        let counted = count_batches_each(records, |batch, count| {
            if let Some(stamps) = stamps.as_deref_mut() {
                // A batch without a readable stamp is not ours to time; it is still counted.
                if let Some(sent_unix_us) = sent_unix_us(batch) {
                    stamps.push(Stamp {
                        sent_unix_us,
                        records: count,
                        bytes: batch.len() as u64,
                    });
                }
            }
        })?;
        sample.messages += counted.records;
        sample.batch_bytes += counted.bytes;
        if let Some(next) = counted.next_offset {
            cursor.offset = next;
        }
    }
    Ok(())
}

fn fetch_request<'a>(plan: &Plan, cursors: impl Iterator<Item = &'a Cursor>) -> FetchRequest {
    let partitions = cursors
        .map(|cursor| {
            FetchPartition::default()
                .with_partition(cursor.partition)
                .with_current_leader_epoch(-1)
                .with_fetch_offset(cursor.offset)
                .with_last_fetched_epoch(-1)
                .with_log_start_offset(-1)
                .with_partition_max_bytes(plan.partition_max_bytes)
        })
        .collect();
    FetchRequest::default()
        .with_replica_id(BrokerId(-1))
        .with_max_wait_ms(plan.max_wait_ms)
        .with_min_bytes(plan.min_bytes)
        .with_max_bytes(plan.max_bytes)
        .with_isolation_level(0)
        // A full fetch, without an incremental session (KIP-227): session 0, epoch -1.
        .with_session_id(0)
        .with_session_epoch(-1)
        .with_topics(vec![FetchTopic::default()
            .with_topic(topic_name(&plan.topic))
            .with_partitions(partitions)])
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::batch::BatchBuilder;
    use bytes::Bytes;
    use kafka_protocol::messages::fetch_response::{FetchableTopicResponse, PartitionData};
    use kafka_protocol::records::Compression;

    fn cursor(partition: i32) -> Cursor {
        Cursor {
            partition,
            offset: 0,
            end: 10,
        }
    }

    #[test]
    fn fetches_rotate_and_drop_finished_partitions() {
        let mut cursors: Vec<Cursor> = (0..3).map(cursor).collect();
        assert_eq!(wanted(&Limit::EndOffsets, &cursors, 1), [1, 2, 0]);
        cursors[2].offset = 10;
        assert_eq!(wanted(&Limit::EndOffsets, &cursors, 1), [1, 0]);
        assert_eq!(wanted(&Limit::Messages(5), &cursors, 2), [2, 0, 1]);
        for cursor in &mut cursors {
            cursor.offset = cursor.end;
        }
        assert!(wanted(&Limit::EndOffsets, &cursors, 0).is_empty());
    }

    fn single_broker(partitions: usize) -> Routes {
        Routes {
            lanes: vec![cluster::Lane {
                broker_id: 0,
                addr: "127.0.0.1:9092".parse().unwrap(),
            }],
            lane_of: vec![0; partitions],
        }
    }

    fn plan(limit: Limit) -> Plan {
        Plan {
            routes: single_broker(1),
            topic: "t".to_owned(),
            version: 12,
            min_bytes: 1,
            max_wait_ms: 500,
            max_bytes: 1 << 20,
            partition_max_bytes: 1 << 20,
            limit,
            assignments: Vec::new(),
            consumed: AtomicU64::new(0),
            message_size: None,
        }
    }

    fn answer(partition: i32, error_code: i16, records: Option<Bytes>) -> PartitionData {
        PartitionData::default()
            .with_partition_index(partition)
            .with_error_code(error_code)
            .with_records(records)
    }

    fn response(topic: &str, partitions: Vec<PartitionData>) -> FetchResponse {
        FetchResponse::default().with_responses(vec![FetchableTopicResponse::default()
            .with_topic(topic_name(topic))
            .with_partitions(partitions)])
    }

    #[test]
    fn advance_counts_batches_and_moves_cursors() {
        let plan = plan(Limit::EndOffsets);
        let mut builder = BatchBuilder::new(100, 7, Compression::None, 1, Vec::new());
        let mut batch = builder.batch(7, 1).unwrap().to_vec();
        batch[..8].copy_from_slice(&3i64.to_be_bytes());
        let mut cursors = vec![cursor(0), cursor(1)];
        let fetched = response(
            "t",
            vec![
                answer(1, 0, Some(Bytes::from(batch.clone()))),
                answer(0, 0, None),
            ],
        );
        let mut sample = Sample::default();
        advance(&plan, &mut cursors, &fetched, &mut sample, None).unwrap();
        assert_eq!(sample.messages, 7);
        assert_eq!(sample.batch_bytes, batch.len() as u64);
        assert_eq!((cursors[0].offset, cursors[1].offset), (0, 10));
        // Another topic's answer is not ours to count.
        let elsewhere = response("u", vec![answer(0, 0, Some(Bytes::from(batch)))]);
        advance(&plan, &mut cursors, &elsewhere, &mut sample, None).unwrap();
        assert_eq!(sample.messages, 7);
    }

    /// A broker may cut a fetch response inside its last batch; the whole batches before it
    /// count and the cursor stops where the cut one begins.
    #[test]
    fn advance_skips_a_partial_trailing_batch() {
        let plan = plan(Limit::EndOffsets);
        let mut builder = BatchBuilder::new(100, 7, Compression::None, 1, Vec::new());
        let batch = builder.batch(7, 1).unwrap().to_vec();
        let mut records = batch.clone();
        records.extend_from_slice(&batch[..batch.len() / 2]);
        let mut cursors = vec![cursor(0)];
        let fetched = response("t", vec![answer(0, 0, Some(Bytes::from(records)))]);
        let mut sample = Sample::default();
        advance(&plan, &mut cursors, &fetched, &mut sample, None).unwrap();
        assert_eq!(sample.messages, 7);
        assert_eq!(sample.batch_bytes, batch.len() as u64);
        assert_eq!(cursors[0].offset, 7);
    }

    /// When ApiVersions offers less than v12, the run fetches at the version negotiated; the
    /// request it builds must encode at every version the tool may pick.
    #[test]
    fn fetch_requests_encode_at_every_negotiable_version() {
        use kafka_protocol::protocol::Encodable;
        for version in 4..=12 {
            let plan = Plan {
                version,
                ..plan(Limit::EndOffsets)
            };
            let request = fetch_request(&plan, [cursor(0), cursor(3)].iter());
            let mut buf = bytes::BytesMut::new();
            assert!(request.encode(&mut buf, version).is_ok(), "v{version}");
        }
    }

    #[test]
    fn advance_fails_on_a_partition_error() {
        let plan = plan(Limit::EndOffsets);
        let mut cursors = vec![cursor(0)];
        let fetched = response("t", vec![answer(0, 1, None)]);
        let result = advance(&plan, &mut cursors, &fetched, &mut Sample::default(), None);
        assert!(matches!(
            result,
            Err(BenchError::Partition {
                partition: 0,
                error_code: 1,
                ..
            })
        ));
    }

    #[test]
    fn deals_partitions_round_robin() {
        let cursors: Vec<Cursor> = (0..5).map(cursor).collect();
        let hands = deal(&cursors, 2);
        let partitions = |hand: &Vec<Cursor>| hand.iter().map(|c| c.partition).collect::<Vec<_>>();
        assert_eq!(partitions(&hands[0]), [0, 2, 4]);
        assert_eq!(partitions(&hands[1]), [1, 3]);
        assert_eq!(deal(&cursors, 1)[0], cursors);
    }

    #[test]
    fn splits_a_hand_by_leader() {
        let routes = Routes {
            lanes: (0..3)
                .map(|broker_id| cluster::Lane {
                    broker_id,
                    addr: format!("127.0.0.1:{}", 9092 + broker_id).parse().unwrap(),
                })
                .collect(),
            lane_of: vec![2, 0, 1, 2, 0, 1, 2],
        };
        let hand: Vec<Cursor> = [0, 2, 4, 6].into_iter().map(cursor).collect();
        let hands = by_lane(&routes, &hand);
        let partitions =
            |cursors: &Vec<Cursor>| cursors.iter().map(|c| c.partition).collect::<Vec<_>>();
        let lanes: Vec<usize> = hands.iter().map(|(lane, _)| *lane).collect();
        assert_eq!(lanes, [0, 1, 2]);
        assert_eq!(partitions(&hands[0].1), [4]);
        assert_eq!(partitions(&hands[1].1), [2]);
        assert_eq!(partitions(&hands[2].1), [0, 6]);
        // A single broker keeps the whole hand on one connection, in its order.
        let one = by_lane(&single_broker(7), &hand);
        assert_eq!(one, [(0, hand.clone())]);
    }
}
