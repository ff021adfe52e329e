//! Fetch behaviour a consumer depends on, against the real broker on the wire: the long poll
//! (`fetch.min.bytes`, `fetch.max.wait.ms`, woken by an append rather than by its timer), the
//! byte limits per request and per partition with at least one batch always returned, and
//! sessionless fetching (KIP-227).

mod support;

use std::time::{Duration, Instant};

use kafka_protocol::messages::fetch_request::{FetchPartition, FetchTopic};
use kafka_protocol::messages::{BrokerId, FetchRequest, FetchResponse, TopicName};
use kafka_protocol::protocol::StrBytes;
use kafka_protocol::records::RecordBatchDecoder;
use support::kafka::{self, Conn, Message, ANSWER_TIMEOUT, FETCH_VERSION};
use support::Broker;

/// Longer than a test waits for any answer, so a fetch answered within `ANSWER_TIMEOUT` was
/// not answered by its timer.
const LONG_WAIT_MS: i32 = 30_000;
const _: () = assert!(LONG_WAIT_MS as u128 > ANSWER_TIMEOUT.as_millis());

fn fetch_request(
    topic: &str,
    partitions: &[(i32, i64, i32)],
    min_bytes: i32,
    max_wait_ms: i32,
    max_bytes: i32,
) -> FetchRequest {
    let partitions = partitions
        .iter()
        .map(|&(partition, offset, partition_max_bytes)| {
            FetchPartition::default()
                .with_partition(partition)
                .with_fetch_offset(offset)
                .with_partition_max_bytes(partition_max_bytes)
        })
        .collect();
    FetchRequest::default()
        .with_replica_id(BrokerId(-1))
        .with_max_wait_ms(max_wait_ms)
        .with_min_bytes(min_bytes)
        .with_max_bytes(max_bytes)
        .with_session_epoch(-1)
        .with_topics(vec![FetchTopic::default()
            .with_topic(TopicName(StrBytes::from_string(topic.to_owned())))
            .with_partitions(partitions)])
}

/// (partition, error code, base offsets of the batches returned) per partition answered.
fn batches(response: &FetchResponse) -> Vec<(i32, i16, Vec<i64>)> {
    assert_eq!(response.error_code, 0);
    response.responses[0]
        .partitions
        .iter()
        .map(|p| {
            let mut records = p.records.clone().unwrap_or_default();
            let bases = if records.is_empty() {
                Vec::new()
            } else {
                RecordBatchDecoder::decode_all(&mut records)
                    .expect("whole, valid batches")
                    .iter()
                    .map(|set| set.records[0].offset)
                    .collect()
            };
            (p.partition_index, p.error_code, bases)
        })
        .collect()
}

/// Appends one batch of `count` records of `value_bytes` each to `topic`-`partition`.
fn append(conn: &mut Conn, topic: &str, partition: i32, count: usize, value_bytes: usize) {
    let messages: Vec<Message> = (0..count)
        .map(|i| Message::new(format!("k{i}"), vec![b'v'; value_bytes]))
        .collect();
    let request = kafka::produce_request(topic, partition, Some(kafka::batch(&messages)), 1);
    assert_eq!(kafka::produce(conn, &request).0, 0);
}

fn start() -> Broker {
    Broker::start(&["num.partitions=2", "sluice.reactors=2"])
}

#[test]
fn min_bytes_zero_answers_at_once_with_nothing() {
    let broker = start();
    let mut conn = Conn::connect(broker.address);
    append(&mut conn, "idle", 0, 1, 10);
    // At the end of the log, a fetch with fetch.min.bytes=0 is answered without waiting.
    let request = fetch_request("idle", &[(0, 1, 1 << 20)], 0, LONG_WAIT_MS, 1 << 20);
    let answer: FetchResponse = conn.call(FETCH_VERSION, &request);
    assert_eq!(batches(&answer), vec![(0, 0, vec![])]);
}

#[test]
fn a_waiting_fetch_wakes_when_data_is_appended() {
    let broker = start();
    let mut producer = Conn::connect(broker.address);
    append(&mut producer, "polled", 0, 1, 10);
    append(&mut producer, "polled", 1, 1, 10);
    // Both partitions are at their end; the fetch parks for up to LONG_WAIT_MS.
    let mut consumer = Conn::connect(broker.address);
    let request = fetch_request(
        "polled",
        &[(0, 1, 1 << 20), (1, 1, 1 << 20)],
        1,
        LONG_WAIT_MS,
        1 << 20,
    );
    let sent = consumer.send(FETCH_VERSION, &request);
    // The fetch is parked once the broker's fetch purgatory counts it.
    let deadline = Instant::now() + ANSWER_TIMEOUT;
    let parked = "kafka_server_delayedoperationpurgatory_purgatorysize{delayedoperation=\"Fetch\"}";
    while Broker::metric(&broker.scrape(), parked) == 0 {
        assert!(Instant::now() < deadline, "the fetch never parked");
        std::thread::sleep(Duration::from_millis(10));
    }
    append(&mut producer, "polled", 1, 3, 10);
    let answer: FetchResponse = consumer.receive_response::<FetchRequest>(FETCH_VERSION, sent);
    assert_eq!(batches(&answer), vec![(0, 0, vec![]), (1, 0, vec![1])]);
}

#[test]
fn min_bytes_not_reached_is_answered_at_max_wait_with_what_there_is() {
    let broker = start();
    let mut conn = Conn::connect(broker.address);
    append(&mut conn, "trickle", 0, 2, 100);
    let request = fetch_request("trickle", &[(0, 0, 1 << 20)], 10 << 20, 200, 50 << 20);
    let answer: FetchResponse = conn.call(FETCH_VERSION, &request);
    assert_eq!(batches(&answer), vec![(0, 0, vec![0])]);
}

#[test]
fn byte_limits_return_whole_batches_and_at_least_one() {
    let broker = start();
    let mut conn = Conn::connect(broker.address);
    for partition in 0..2 {
        for _ in 0..3 {
            append(&mut conn, "limited", partition, 4, 4096);
        }
    }
    // A partition limit of one byte still returns the first batch, whole.
    let request = fetch_request("limited", &[(0, 0, 1)], 1, 0, 50 << 20);
    let answer: FetchResponse = conn.call(FETCH_VERSION, &request);
    assert_eq!(batches(&answer), vec![(0, 0, vec![0])]);
    // Starting inside a batch returns that batch from its start.
    let request = fetch_request("limited", &[(0, 5, 1)], 1, 0, 50 << 20);
    let answer: FetchResponse = conn.call(FETCH_VERSION, &request);
    assert_eq!(batches(&answer), vec![(0, 0, vec![4])]);
    // A batch is about 16 KiB: a partition limit of 20 KiB takes one, then a second would
    // pass the limit.
    let request = fetch_request("limited", &[(0, 0, 20 << 10)], 1, 0, 50 << 20);
    let answer: FetchResponse = conn.call(FETCH_VERSION, &request);
    assert_eq!(batches(&answer), vec![(0, 0, vec![0])]);
    // The request limit is spent across partitions in order: the first partition's first
    // batch goes out even though it passes the limit, and nothing else follows it.
    let both = [(0, 0, 1 << 20), (1, 0, 1 << 20)];
    let request = fetch_request("limited", &both, 1, 0, 1);
    let answer: FetchResponse = conn.call(FETCH_VERSION, &request);
    assert_eq!(batches(&answer), vec![(0, 0, vec![0]), (1, 0, vec![])]);
    // A budget of five and a half batches takes partition 0 whole and two batches of
    // partition 1 (each batch is a little over 16 KiB).
    let request = fetch_request("limited", &both, 1, 0, 5 * 16384 + 8000);
    let answer: FetchResponse = conn.call(FETCH_VERSION, &request);
    assert_eq!(
        batches(&answer),
        vec![(0, 0, vec![0, 4, 8]), (1, 0, vec![0, 4])]
    );
    // With room for everything, everything comes.
    let request = fetch_request("limited", &both, 1, 0, 50 << 20);
    let answer: FetchResponse = conn.call(FETCH_VERSION, &request);
    assert_eq!(
        batches(&answer),
        vec![(0, 0, vec![0, 4, 8]), (1, 0, vec![0, 4, 8])]
    );
}

#[test]
fn a_later_partition_whose_batches_fit_what_is_left_still_gets_them() {
    let broker = start();
    let mut conn = Conn::connect(broker.address);
    for _ in 0..3 {
        append(&mut conn, "mixed", 0, 4, 4096);
    }
    for _ in 0..100 {
        append(&mut conn, "mixed", 1, 1, 100);
    }
    // Two and a half large batches of the budget go to partition 0 (two whole batches); the
    // half batch left takes a run of partition 1's small batches, from its first.
    let both = [(0, 0, 1 << 20), (1, 0, 1 << 20)];
    let budget = 5 * 16384 / 2;
    let request = fetch_request("mixed", &both, 1, 0, budget);
    let answer: FetchResponse = conn.call(FETCH_VERSION, &request);
    let found = batches(&answer);
    assert_eq!(found[0], (0, 0, vec![0, 4]));
    let (partition, code, small) = &found[1];
    assert_eq!((*partition, *code), (1, 0));
    assert!(
        small.len() > 1 && small.len() < 100,
        "{} small batches",
        small.len()
    );
    assert!(small.iter().copied().eq(0..small.len() as i64));
    let bytes: usize = answer.responses[0]
        .partitions
        .iter()
        .map(|p| p.records.as_ref().map_or(0, |r| r.len()))
        .sum();
    assert!(
        bytes <= budget as usize,
        "{bytes} bytes for a budget of {budget}"
    );
}

#[test]
fn an_unknown_fetch_session_gets_fetch_session_id_not_found() {
    let broker = start();
    let mut conn = Conn::connect(broker.address);
    append(&mut conn, "sessions", 0, 1, 10);
    let mut request = fetch_request("sessions", &[(0, 0, 1 << 20)], 1, 0, 1 << 20);
    request.session_id = 12345;
    request.session_epoch = 3;
    let answer: FetchResponse = conn.call(FETCH_VERSION, &request);
    assert_eq!(answer.error_code, 70, "FETCH_SESSION_ID_NOT_FOUND");
    assert!(answer.responses.is_empty());
    // A full fetch that asks for a new session is served without one (session id 0), so
    // the client goes on with full fetches.
    let mut request = fetch_request("sessions", &[(0, 0, 1 << 20)], 1, 0, 1 << 20);
    request.session_epoch = 0;
    let answer: FetchResponse = conn.call(FETCH_VERSION, &request);
    assert_eq!(answer.session_id, 0);
    assert_eq!(batches(&answer), vec![(0, 0, vec![0])]);
}

/// The broker's `fetch.max.bytes` caps the response whatever the request asks for.
#[test]
fn the_broker_fetch_max_bytes_caps_what_a_request_asks_for() {
    let broker = Broker::start(&["fetch.max.bytes=20000"]);
    let mut conn = Conn::connect(broker.address);
    for _ in 0..3 {
        append(&mut conn, "capped", 0, 4, 4096);
    }
    let request = fetch_request("capped", &[(0, 0, 50 << 20)], 1, 0, 50 << 20);
    let answer: FetchResponse = conn.call(FETCH_VERSION, &request);
    assert_eq!(batches(&answer), vec![(0, 0, vec![0])]);
}
