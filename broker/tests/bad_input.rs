//! Bad input from a socket, row by row from DESIGN.md ("Bad input, and what Kafka answers"):
//! each test sends raw bytes to the real broker, checks the answer (an error code, or a closed
//! connection), and then checks that a fresh connection is served and that data acknowledged
//! before the bad input is still there, byte for byte.

mod support;

use std::time::{Duration, Instant};

use bytes::Bytes;
use kafka_protocol::messages::create_topics_request::CreatableTopic;
use kafka_protocol::messages::fetch_request::{FetchPartition, FetchTopic};
use kafka_protocol::messages::{
    ApiVersionsRequest, ApiVersionsResponse, BrokerId, CreateTopicsRequest, FetchRequest,
    MetadataRequest, ProduceRequest, TopicName,
};
use kafka_protocol::protocol::{Decodable, Encodable, StrBytes};
use support::kafka::{
    api_versions, batch, encode_request, fetch_all, produce, produce_request, stored, Answer, Conn,
    Consumed, Message, API_VERSIONS_VERSION, FETCH_VERSION, PRODUCE_VERSION,
};
use support::Broker;

const INVALID_RECORD: i16 = 87;
const CORRUPT_MESSAGE: i16 = 2;
const MESSAGE_TOO_LARGE: i16 = 10;
const INVALID_TOPIC_EXCEPTION: i16 = 17;
const INVALID_REQUIRED_ACKS: i16 = 21;
const NOT_ENOUGH_REPLICAS: i16 = 19;
const UNSUPPORTED_VERSION: i16 = 35;

/// Kafka's default `message.max.bytes`, which the broker uses unless told otherwise.
const MESSAGE_MAX_BYTES_DEFAULT: usize = 1_048_588;

/// Offset of the magic byte and of the CRC-covered part (attributes on) in a RecordBatch v2.
const MAGIC_AT: usize = 16;
const ATTRIBUTES_AT: usize = 21;

/// A broker with a few acknowledged messages in topic `kept`, which every test reads back
/// after its bad input.
struct Fixture {
    broker: Broker,
    kept: Vec<Message>,
}

impl Fixture {
    fn start(overrides: &[&str]) -> Fixture {
        let broker = Broker::start(overrides);
        let kept: Vec<Message> = (0..3)
            .map(|i| Message::new(format!("key-{i}"), format!("acknowledged value {i}")))
            .collect();
        // acks=1, so that a broker with min.insync.replicas=2 takes it too.
        let mut conn = Conn::connect(broker.address);
        let request = produce_request("kept", 0, Some(batch(&kept)), 1);
        assert_eq!(
            produce(&mut conn, &request),
            (0, 0),
            "producing the kept messages"
        );
        Fixture { broker, kept }
    }

    fn conn(&self) -> Conn {
        Conn::connect(self.broker.address)
    }

    /// The broker still answers a fresh connection, and still serves what it acknowledged.
    fn assert_still_serving(&self, after: &str) {
        assert!(
            self.broker.is_running(),
            "the broker process died after {after}"
        );
        let versions = api_versions(self.broker.address);
        assert_eq!(
            versions.error_code, 0,
            "ApiVersions on a fresh connection after {after}"
        );
        let expected: Vec<Consumed> = self
            .kept
            .iter()
            .enumerate()
            .map(|(offset, message)| Consumed {
                offset: offset as i64,
                message: message.clone(),
            })
            .collect();
        assert_eq!(
            fetch_all(self.broker.address, "kept", 0, 0),
            expected,
            "acknowledged data after {after}"
        );
    }

    /// Sends one request frame (header and body, without the prefix) on a fresh connection
    /// and expects the broker to close it without an answer.
    fn expect_frame_closes(&self, frame: &[u8], what: &str) {
        let mut conn = self.conn();
        // The broker may close before reading everything; a failed write is a close too.
        if conn.send_frame(frame).is_ok() {
            conn.expect_closed(what);
        }
        self.assert_still_serving(what);
    }

    /// Produces `records` to `topic` with acks=-1 on a fresh connection and returns the
    /// partition's error code.
    fn produce_error(&self, topic: &str, records: Option<Bytes>) -> i16 {
        let mut conn = self.conn();
        produce(&mut conn, &produce_request(topic, 0, records, -1)).0
    }
}

fn messages(count: usize, prefix: &str) -> Vec<Message> {
    (0..count)
        .map(|i| Message::new(format!("{prefix}-key-{i}"), format!("{prefix}-value-{i}")))
        .collect()
}

/// A valid batch with its CRC recomputed after `edit`, so only the edit is wrong with it.
fn edited_batch(edit: impl FnOnce(&mut Vec<u8>)) -> Bytes {
    let mut bytes = batch(&messages(2, "edited")).to_vec();
    edit(&mut bytes);
    let crc = crc32c(&bytes[ATTRIBUTES_AT..]);
    bytes[ATTRIBUTES_AT - 4..ATTRIBUTES_AT].copy_from_slice(&crc.to_be_bytes());
    Bytes::from(bytes)
}

/// CRC-32C (Castagnoli), bit by bit: tests only checksum a few small batches.
fn crc32c(bytes: &[u8]) -> u32 {
    let mut crc = !0u32;
    for &byte in bytes {
        crc ^= u32::from(byte);
        for _ in 0..8 {
            crc = if crc & 1 != 0 {
                (crc >> 1) ^ 0x82f6_3b78
            } else {
                crc >> 1
            };
        }
    }
    !crc
}

/// The header of a request frame by hand: api key, version, correlation id, null client id
/// (request header v1).
fn header_v1(api_key: i16, version: i16) -> Vec<u8> {
    let mut frame = Vec::new();
    frame.extend_from_slice(&api_key.to_be_bytes());
    frame.extend_from_slice(&version.to_be_bytes());
    frame.extend_from_slice(&7i32.to_be_bytes());
    frame.extend_from_slice(&(-1i16).to_be_bytes());
    frame
}

#[test]
fn the_test_crc_agrees_with_the_batch_encoder() {
    let bytes = batch(&messages(3, "crc"));
    let stored = u32::from_be_bytes(bytes[17..21].try_into().unwrap());
    assert_eq!(crc32c(&bytes[ATTRIBUTES_AT..]), stored);
}

#[test]
fn negative_frame_length_closes_the_connection() {
    let fixture = Fixture::start(&[]);
    for prefix in [-1i32, i32::MIN] {
        let mut conn = fixture.conn();
        conn.send_raw(&prefix.to_be_bytes()).expect("send prefix");
        conn.expect_closed(&format!("frame length {prefix}"));
        fixture.assert_still_serving(&format!("frame length {prefix}"));
    }
}

#[test]
fn frame_above_socket_request_max_bytes_closes_the_connection() {
    // The default limit (100 MiB): only the prefix is sent, the broker must not wait for
    // (or allocate) the body.
    let fixture = Fixture::start(&[]);
    let mut conn = fixture.conn();
    conn.send_raw(&(100 * 1024 * 1024 + 1i32).to_be_bytes())
        .expect("send prefix");
    conn.expect_closed("a frame length of 100 MiB + 1");
    let mut conn = fixture.conn();
    conn.send_raw(&i32::MAX.to_be_bytes()).expect("send prefix");
    conn.expect_closed("a frame length of i32::MAX");
    fixture.assert_still_serving("frame lengths above the default limit");

    // A lowered limit: a request at the limit is served, one byte more is not.
    let limit = 64 * 1024;
    let fixture = Fixture::start(&[&format!("socket.request.max.bytes={limit}")]);
    let mut value = vec![b'v'; limit - 200];
    let frame = loop {
        let request = produce_request(
            "limited",
            0,
            Some(batch(&[Message::new("k", value.clone())])),
            -1,
        );
        let frame = encode_request(PRODUCE_VERSION, 1, &request);
        match frame.len().cmp(&limit) {
            std::cmp::Ordering::Equal => break frame,
            std::cmp::Ordering::Greater => value.truncate(value.len() - (frame.len() - limit)),
            std::cmp::Ordering::Less => {
                value.extend(std::iter::repeat_n(b'v', limit - frame.len()))
            }
        }
    };
    let mut conn = fixture.conn();
    conn.send_frame(&frame).expect("send");
    let Answer::Frame(_) = conn.receive() else {
        panic!("a request of exactly socket.request.max.bytes must be served")
    };
    let mut conn = fixture.conn();
    let mut too_big = frame.clone();
    too_big.push(0);
    if conn.send_frame(&too_big).is_ok() {
        conn.expect_closed("a frame one byte above socket.request.max.bytes");
    }
    fixture.assert_still_serving("a frame above socket.request.max.bytes");
    let stored = fetch_all(fixture.broker.address, "limited", 0, 0);
    assert_eq!(
        stored.len(),
        1,
        "only the request at the limit was appended"
    );
    assert_eq!(stored[0].message.value, value);
}

#[test]
fn unknown_api_key_closes_the_connection() {
    let fixture = Fixture::start(&[]);
    for api_key in [999i16, -1, i16::MAX] {
        let frame = header_v1(api_key, 0);
        fixture.expect_frame_closes(&frame, &format!("unknown api key {api_key}"));
    }
}

#[test]
fn unsupported_version_closes_the_connection() {
    let fixture = Fixture::start(&[]);
    let mut produce_body = bytes::BytesMut::new();
    produce_request("kept", 0, Some(batch(&messages(1, "v"))), -1)
        .encode(&mut produce_body, PRODUCE_VERSION)
        .expect("encodes");
    // Produce below v3 (message sets of magic 0 and 1), Fetch v13 (topic ids), Metadata v13,
    // and JoinGroup and FindCoordinator, which the broker does not advertise at all.
    for (api_key, version) in [(0i16, 2i16), (0, 10), (1, 13), (3, 13), (11, 0), (10, 0)] {
        let mut frame = header_v1(api_key, version);
        frame.extend_from_slice(&produce_body);
        fixture.expect_frame_closes(
            &frame,
            &format!("{} v{version}", support::kafka::api_name(api_key)),
        );
    }
}

#[test]
fn body_that_does_not_parse_closes_the_connection() {
    let fixture = Fixture::start(&[]);
    // Truncated bodies, for a hand-decoded API (Produce) and a kafka-protocol one (Metadata).
    let produce = encode_request(
        PRODUCE_VERSION,
        1,
        &produce_request("kept", 0, Some(batch(&messages(2, "cut"))), -1),
    );
    for cut in [1, 20, produce.len() / 2] {
        fixture.expect_frame_closes(
            &produce[..produce.len() - cut],
            &format!("a Produce body short by {cut} bytes"),
        );
    }
    let metadata = encode_request(
        1,
        1,
        &MetadataRequest::default().with_topics(Some(vec![
            kafka_protocol::messages::metadata_request::MetadataRequestTopic::default()
                .with_name(Some(TopicName(StrBytes::from_static_str("kept")))),
        ])),
    );
    fixture.expect_frame_closes(
        &metadata[..metadata.len() - 2],
        "a Metadata body short by 2 bytes",
    );
    // A header that ends inside the client id.
    let mut header = header_v1(18, 0);
    header.truncate(header.len() - 1);
    fixture.expect_frame_closes(&header, "a header cut inside the client id");
    // A topic name that is not UTF-8.
    let mut bad_name = header_v1(0, PRODUCE_VERSION);
    bad_name.extend_from_slice(&(-1i16).to_be_bytes()); // no transactional id
    bad_name.extend_from_slice(&(-1i16).to_be_bytes()); // acks
    bad_name.extend_from_slice(&10_000i32.to_be_bytes()); // timeout
    bad_name.extend_from_slice(&1i32.to_be_bytes()); // one topic
    bad_name.extend_from_slice(&2i16.to_be_bytes());
    bad_name.extend_from_slice(&[0xff, 0xfe]);
    bad_name.extend_from_slice(&0i32.to_be_bytes()); // no partitions
    fixture.expect_frame_closes(&bad_name, "a topic name that is not UTF-8");
    // A negative string length other than -1 (null).
    let mut negative = header_v1(0, PRODUCE_VERSION);
    negative.extend_from_slice(&(-7i16).to_be_bytes());
    negative.extend_from_slice(&[0; 16]);
    fixture.expect_frame_closes(&negative, "a transactional id of length -7");
}

/// Produce and Fetch are decoded by hand; their collection lengths are checked against the
/// bytes that remain.
#[test]
fn produce_collection_length_above_remaining_bytes_closes_the_connection() {
    let fixture = Fixture::start(&[]);
    let prologue = |version: i16| {
        let mut frame = header_v1(0, version);
        if version >= 9 {
            // Request header v2 adds an empty tag section after the client id.
            frame.push(0);
            frame.push(0); // null compact transactional id
        } else {
            frame.extend_from_slice(&(-1i16).to_be_bytes());
        }
        frame.extend_from_slice(&(-1i16).to_be_bytes()); // acks
        frame.extend_from_slice(&10_000i32.to_be_bytes());
        frame
    };
    // v7: a topic count of i32::MAX.
    let mut topics = prologue(7);
    topics.extend_from_slice(&i32::MAX.to_be_bytes());
    topics.extend_from_slice(&[0; 32]);
    fixture.expect_frame_closes(&topics, "Produce v7 with 2^31-1 topics");
    // v7: one topic with a partition count of i32::MAX.
    let mut partitions = prologue(7);
    partitions.extend_from_slice(&1i32.to_be_bytes());
    partitions.extend_from_slice(&4i16.to_be_bytes());
    partitions.extend_from_slice(b"kept");
    partitions.extend_from_slice(&i32::MAX.to_be_bytes());
    partitions.extend_from_slice(&[0; 32]);
    fixture.expect_frame_closes(&partitions, "Produce v7 with 2^31-1 partitions");
    // v7: a records length past the end of the frame.
    let mut records = prologue(7);
    records.extend_from_slice(&1i32.to_be_bytes());
    records.extend_from_slice(&4i16.to_be_bytes());
    records.extend_from_slice(b"kept");
    records.extend_from_slice(&1i32.to_be_bytes());
    records.extend_from_slice(&0i32.to_be_bytes());
    records.extend_from_slice(&1_000_000i32.to_be_bytes());
    records.extend_from_slice(&[0; 100]);
    fixture.expect_frame_closes(&records, "Produce v7 with records longer than the frame");
    // v9 (flexible): a compact topic count of u32::MAX - 1.
    let mut compact = prologue(9);
    compact.extend_from_slice(&[0xff, 0xff, 0xff, 0xff, 0x0f]);
    compact.extend_from_slice(&[0; 32]);
    fixture.expect_frame_closes(&compact, "Produce v9 with a compact topic count of 2^32-2");
}

/// The other APIs are decoded with kafka-protocol: a huge collection count must close the
/// connection too, and must never make the broker allocate for it.
#[test]
fn metadata_and_create_topics_collection_length_above_remaining_bytes_closes_the_connection() {
    let fixture = Fixture::start(&[]);
    // Metadata v1 (classic): topics array of i32::MAX entries, then nothing.
    let mut metadata = header_v1(3, 1);
    metadata.extend_from_slice(&i32::MAX.to_be_bytes());
    fixture.expect_frame_closes(&metadata, "Metadata v1 with 2^31-1 topics");
    // Metadata v9 (flexible, header v2): compact array of 2^32-2 entries.
    let mut compact = header_v1(3, 9);
    compact.push(0); // header tags
    compact.extend_from_slice(&[0xff, 0xff, 0xff, 0xff, 0x0f]);
    fixture.expect_frame_closes(&compact, "Metadata v9 with 2^32-2 topics");
    // CreateTopics v4: topics array of i32::MAX entries.
    let mut create = header_v1(19, 4);
    create.extend_from_slice(&i32::MAX.to_be_bytes());
    create.extend_from_slice(&[0; 8]);
    fixture.expect_frame_closes(&create, "CreateTopics v4 with 2^31-1 topics");
}

#[test]
fn batch_with_magic_other_than_2_is_invalid_record() {
    let fixture = Fixture::start(&[]);
    for magic in [0u8, 1, 3, 0xff] {
        let records = edited_batch(|bytes| bytes[MAGIC_AT] = magic);
        assert_eq!(
            fixture.produce_error("magic", Some(records)),
            INVALID_RECORD,
            "magic {magic}"
        );
        fixture.assert_still_serving(&format!("a batch of magic {magic}"));
    }
    assert!(stored(fixture.broker.address, "magic").is_empty());
}

#[test]
fn zero_batches_is_invalid_record() {
    let fixture = Fixture::start(&[]);
    assert_eq!(
        fixture.produce_error("empty", Some(Bytes::new())),
        INVALID_RECORD,
        "empty records"
    );
    assert_eq!(
        fixture.produce_error("empty", None),
        INVALID_RECORD,
        "null records"
    );
    fixture.assert_still_serving("produce requests without batches");
    assert!(stored(fixture.broker.address, "empty").is_empty());
}

#[test]
fn more_than_one_batch_in_a_partition_is_invalid_record() {
    let fixture = Fixture::start(&[]);
    let mut two = batch(&messages(2, "first")).to_vec();
    two.extend_from_slice(&batch(&messages(2, "second")));
    assert_eq!(
        fixture.produce_error("two-batches", Some(Bytes::from(two))),
        INVALID_RECORD,
        "two batches in one partition's records"
    );
    fixture.assert_still_serving("two batches in one partition");
    assert!(
        stored(fixture.broker.address, "two-batches").is_empty(),
        "nothing of a refused request is stored"
    );
}

#[test]
fn crc_mismatch_is_corrupt_message() {
    let fixture = Fixture::start(&[]);
    let good = batch(&messages(2, "crc"));
    // A flipped bit in a record, in the attributes, and in the stored CRC itself.
    for at in [good.len() - 1, ATTRIBUTES_AT + 1, 18] {
        let mut bad = good.to_vec();
        bad[at] ^= 0x10;
        assert_eq!(
            fixture.produce_error("crc", Some(Bytes::from(bad))),
            CORRUPT_MESSAGE,
            "bit flipped at byte {at}"
        );
        fixture.assert_still_serving(&format!("a CRC mismatch at byte {at}"));
    }
    assert!(stored(fixture.broker.address, "crc").is_empty());
}

#[test]
fn batch_above_max_message_bytes_is_message_too_large() {
    let fixture = Fixture::start(&[]);
    let big = batch(&[Message::new("big", vec![b'x'; MESSAGE_MAX_BYTES_DEFAULT])]);
    assert!(big.len() > MESSAGE_MAX_BYTES_DEFAULT);
    assert_eq!(fixture.produce_error("large", Some(big)), MESSAGE_TOO_LARGE);
    // Just below the limit is accepted.
    let fits = batch(&[Message::new(
        "fits",
        vec![b'y'; MESSAGE_MAX_BYTES_DEFAULT - 200],
    )]);
    assert!(fits.len() <= MESSAGE_MAX_BYTES_DEFAULT);
    assert_eq!(fixture.produce_error("large", Some(fits)), 0);
    fixture.assert_still_serving("a batch above message.max.bytes");
    let stored = fetch_all(fixture.broker.address, "large", 0, 0);
    assert_eq!(stored.len(), 1);
    assert_eq!(stored[0].message.key, b"fits");

    // A lowered broker limit applies the same way.
    let fixture = Fixture::start(&["message.max.bytes=1000"]);
    let over = batch(&[Message::new("k", vec![b'z'; 1000])]);
    assert_eq!(
        fixture.produce_error("lowered", Some(over)),
        MESSAGE_TOO_LARGE
    );
    fixture.assert_still_serving("a batch above a lowered message.max.bytes");
}

#[test]
fn invalid_topic_names_are_invalid_topic_exception() {
    let fixture = Fixture::start(&[]);
    let too_long = "a".repeat(250);
    let names = ["", ".", "..", too_long.as_str(), "a/b", "has space", "ünï"];
    for name in names {
        assert_eq!(
            fixture.produce_error(name, Some(batch(&messages(1, "name")))),
            INVALID_TOPIC_EXCEPTION,
            "produce to {name:?}"
        );
    }
    // CreateTopics refuses the same names, topic by topic.
    let mut conn = fixture.conn();
    let request = CreateTopicsRequest::default()
        .with_timeout_ms(10_000)
        .with_topics(
            names
                .iter()
                .map(|name| {
                    CreatableTopic::default()
                        .with_name(TopicName(StrBytes::from_string((*name).to_owned())))
                        .with_num_partitions(1)
                        .with_replication_factor(1)
                })
                .collect(),
        );
    let response = conn.call(5, &request);
    assert_eq!(response.topics.len(), names.len());
    for (name, result) in names.iter().zip(&response.topics) {
        assert_eq!(result.name.0.as_str(), *name);
        assert_eq!(
            result.error_code, INVALID_TOPIC_EXCEPTION,
            "CreateTopics {name:?}"
        );
    }
    // Nothing was created for the illegal names.
    fixture.assert_still_serving("invalid topic names");
    let listed = conn.call(1, &MetadataRequest::default().with_topics(None));
    let listed: Vec<String> = listed
        .topics
        .iter()
        .filter_map(|t| t.name.as_ref().map(|n| n.0.to_string()))
        .collect();
    assert_eq!(listed, vec!["kept".to_owned()]);
}

/// The other side of the name rule: 249 characters is legal in Kafka, for produce
/// (auto-creation) and for CreateTopics alike.
#[test]
fn longest_legal_topic_name_is_accepted() {
    let fixture = Fixture::start(&[]);
    let produced = "p".repeat(249);
    assert_eq!(
        fixture.produce_error(&produced, Some(batch(&messages(1, "longest")))),
        0,
        "produce to a 249-character topic"
    );
    let created = "c".repeat(249);
    let mut conn = fixture.conn();
    let response = conn.call(
        5,
        &CreateTopicsRequest::default()
            .with_timeout_ms(10_000)
            .with_topics(vec![CreatableTopic::default()
                .with_name(TopicName(StrBytes::from_string(created.clone())))
                .with_num_partitions(1)
                .with_replication_factor(1)]),
    );
    assert_eq!(
        response.topics[0].error_code, 0,
        "CreateTopics of a 249-character topic"
    );
    assert_eq!(
        fetch_all(fixture.broker.address, &produced, 0, 0)
            .into_iter()
            .map(|c| c.message)
            .collect::<Vec<_>>(),
        messages(1, "longest")
    );
}

#[test]
fn acks_outside_minus_one_to_one_is_invalid_required_acks() {
    let fixture = Fixture::start(&[]);
    for acks in [2i16, 3, -2, i16::MAX] {
        let mut conn = fixture.conn();
        let request = produce_request("acks", 0, Some(batch(&messages(1, "acks"))), acks);
        assert_eq!(
            produce(&mut conn, &request).0,
            INVALID_REQUIRED_ACKS,
            "acks={acks}"
        );
    }
    fixture.assert_still_serving("invalid acks");
    assert!(
        stored(fixture.broker.address, "acks").is_empty(),
        "nothing is appended with invalid acks"
    );
}

/// One broker is an ISR of one: with `min.insync.replicas=2` an acks=-1 write cannot be
/// committed and Kafka refuses it; acks=1 does not wait for the ISR and is accepted.
#[test]
fn acks_all_below_min_insync_replicas_is_not_enough_replicas() {
    let fixture = Fixture::start(&["min.insync.replicas=2"]);
    let mut conn = fixture.conn();
    let all = produce_request("isr", 0, Some(batch(&messages(1, "all"))), -1);
    assert_eq!(
        produce(&mut conn, &all).0,
        NOT_ENOUGH_REPLICAS,
        "acks=-1 with an ISR of 1 and min.insync.replicas=2"
    );
    let leader = produce_request("isr", 0, Some(batch(&messages(1, "leader"))), 1);
    assert_eq!(
        produce(&mut conn, &leader).0,
        0,
        "acks=1 is not held to the ISR"
    );
    fixture.assert_still_serving("acks=-1 below min.insync.replicas");
    let stored: Vec<Message> = stored(fixture.broker.address, "isr")
        .into_iter()
        .map(|c| c.message)
        .collect();
    assert_eq!(
        stored,
        messages(1, "leader"),
        "only the acks=1 write is stored"
    );
}

#[test]
fn acks_zero_without_error_gets_no_response_and_the_connection_goes_on() {
    let fixture = Fixture::start(&[]);
    let mut conn = fixture.conn();
    let request = produce_request("quiet", 0, Some(batch(&messages(2, "quiet"))), 0);
    conn.send(PRODUCE_VERSION, &request);
    // The next answer on this connection belongs to the next request.
    let versions: ApiVersionsResponse = conn.call(
        API_VERSIONS_VERSION,
        &ApiVersionsRequest::default()
            .with_client_software_name(StrBytes::from_static_str("t"))
            .with_client_software_version(StrBytes::from_static_str("1")),
    );
    assert_eq!(versions.error_code, 0);
    let stored: Vec<Message> = fetch_all(fixture.broker.address, "quiet", 0, 0)
        .into_iter()
        .map(|c| c.message)
        .collect();
    assert_eq!(stored, messages(2, "quiet"));
}

#[test]
fn acks_zero_with_an_error_closes_the_connection() {
    let fixture = Fixture::start(&[]);
    let good = batch(&messages(1, "acks0"));
    let mut corrupt = good.to_vec();
    let last = corrupt.len() - 1;
    corrupt[last] ^= 1;
    let cases: Vec<(&str, ProduceRequest)> = vec![
        (
            "a CRC mismatch",
            produce_request("acks0", 0, Some(Bytes::from(corrupt)), 0),
        ),
        (
            "an invalid topic name",
            produce_request("a/b", 0, Some(good.clone()), 0),
        ),
        (
            "a partition that does not exist",
            produce_request("kept", 5, Some(good.clone()), 0),
        ),
        (
            "zero batches",
            produce_request("acks0", 0, Some(Bytes::new()), 0),
        ),
        (
            "a wrong magic",
            produce_request("acks0", 0, Some(edited_batch(|b| b[MAGIC_AT] = 1)), 0),
        ),
    ];
    for (what, request) in cases {
        let mut conn = fixture.conn();
        conn.send(PRODUCE_VERSION, &request);
        conn.expect_closed(&format!("an acks=0 produce with {what}"));
        fixture.assert_still_serving(&format!("an acks=0 produce with {what}"));
    }
    assert!(stored(fixture.broker.address, "acks0").is_empty());
}

#[test]
fn api_versions_above_v4_gets_error_35_with_a_v0_body() {
    let fixture = Fixture::start(&[]);
    for version in [5i16, 9, i16::MAX] {
        let mut conn = fixture.conn();
        let request = ApiVersionsRequest::default()
            .with_client_software_name(StrBytes::from_static_str("future"))
            .with_client_software_version(StrBytes::from_static_str("9"));
        // Encoded as v3 (the newest layout we know), then relabelled.
        let mut frame = encode_request(3, 41, &request);
        frame[2..4].copy_from_slice(&version.to_be_bytes());
        conn.send_frame(&frame).expect("send");
        let Answer::Frame(answer) = conn.receive() else {
            panic!("ApiVersions v{version} closed the connection instead of answering 35")
        };
        let mut body = Bytes::from(answer);
        let correlation_id = i32::from_be_bytes(body[..4].try_into().unwrap());
        assert_eq!(correlation_id, 41);
        let _ = body.split_to(4);
        let parsed = ApiVersionsResponse::decode(&mut body, 0).expect("a v0 body");
        assert!(body.is_empty(), "the body is exactly v0");
        assert_eq!(parsed.error_code, UNSUPPORTED_VERSION);
        let api_versions_entry = parsed
            .api_keys
            .iter()
            .find(|k| k.api_key == 18)
            .expect("the list names ApiVersions");
        assert_eq!(
            (
                api_versions_entry.min_version,
                api_versions_entry.max_version
            ),
            (0, 4)
        );
        assert!(
            parsed.api_keys.iter().any(|k| k.api_key == 0),
            "the list names Produce"
        );
        // The client retries with a version from the list, on the same connection.
        let retried: ApiVersionsResponse = conn.call(
            api_versions_entry.max_version,
            &ApiVersionsRequest::default()
                .with_client_software_name(StrBytes::from_static_str("future"))
                .with_client_software_version(StrBytes::from_static_str("9")),
        );
        assert_eq!(retried.error_code, 0);
    }
    fixture.assert_still_serving("ApiVersions of unsupported versions");
}

/// KIP-511's fallback list must be the broker's real list: a client may pick versions from it.
#[test]
fn api_versions_fallback_lists_exactly_what_the_broker_advertises() {
    let fixture = Fixture::start(&[]);
    let advertised: Vec<(i16, i16, i16)> = api_versions(fixture.broker.address)
        .api_keys
        .iter()
        .map(|k| (k.api_key, k.min_version, k.max_version))
        .collect();
    let mut conn = fixture.conn();
    let mut frame = encode_request(3, 5, &ApiVersionsRequest::default());
    frame[2..4].copy_from_slice(&7i16.to_be_bytes());
    conn.send_frame(&frame).expect("send");
    let Answer::Frame(answer) = conn.receive() else {
        panic!("ApiVersions v7 closed the connection")
    };
    let mut body = Bytes::from(answer);
    let _ = body.split_to(4);
    let fallback = ApiVersionsResponse::decode(&mut body, 0).expect("a v0 body");
    let fallback: Vec<(i16, i16, i16)> = fallback
        .api_keys
        .iter()
        .map(|k| (k.api_key, k.min_version, k.max_version))
        .collect();
    let extra: Vec<_> = fallback
        .iter()
        .filter(|entry| !advertised.contains(entry))
        .collect();
    let missing: Vec<_> = advertised
        .iter()
        .filter(|entry| !fallback.contains(entry))
        .collect();
    assert!(
        extra.is_empty() && missing.is_empty(),
        "the error-35 list differs from ApiVersions v3: listed but not advertised {extra:?}, \
         advertised but not listed {missing:?}"
    );
}

/// Kafka handles one request per connection at a time and closes the connection at the first
/// bad one, so a request the client pipelined behind it is never executed: its producer sees
/// the close and retries, and an executed-but-unanswered produce would be stored twice. The
/// broker runs requests as concurrent tasks, so this is a race; each case is tried many times.
#[test]
fn requests_pipelined_behind_bad_input_are_not_executed() {
    const TRIES: usize = 40;
    let fixture = Fixture::start(&[]);
    let cases: Vec<(&str, Vec<u8>, &str)> = vec![
        (
            "an unknown api key",
            header_v1(999, 0),
            "behind-unknown-api",
        ),
        (
            "a body that does not parse",
            header_v1(3, 1)[..7].to_vec(),
            "behind-truncated",
        ),
        (
            "an acks=0 produce with an invalid topic",
            encode_request(
                PRODUCE_VERSION,
                8,
                &produce_request("a/b", 0, Some(batch(&messages(1, "x"))), 0),
            ),
            "behind-acks0-error",
        ),
    ];
    for (what, bad, topic) in cases {
        let behind = encode_request(
            PRODUCE_VERSION,
            9,
            &produce_request(topic, 0, Some(batch(&messages(1, topic))), 1),
        );
        let mut bytes = Vec::new();
        for frame in [&bad, &behind] {
            bytes.extend_from_slice(&(frame.len() as i32).to_be_bytes());
            bytes.extend_from_slice(frame);
        }
        for _ in 0..TRIES {
            let mut conn = fixture.conn();
            // Both frames in one write, as a pipelining client sends them.
            conn.send_raw(&bytes).expect("send");
            conn.expect_closed(what);
        }
        fixture.assert_still_serving(what);
        let executed = stored(fixture.broker.address, topic).len();
        assert_eq!(
            executed, 0,
            "{executed} of {TRIES} produce requests pipelined behind {what} were executed \
             although their connection was closed without an answer"
        );
    }
}

/// A connection the broker closes for bad input must be released on the broker's side too,
/// even while the client keeps its end open: with `max.connections=1`, the next client must
/// get in.
#[test]
fn a_connection_closed_for_bad_input_frees_its_slot() {
    let fixture = Fixture::start(&["max.connections=1"]);
    let cases: Vec<(&str, Vec<u8>)> = vec![
        ("a negative frame length", Vec::new()),
        ("an unknown api key", header_v1(999, 0)),
        (
            "an acks=0 produce with an invalid topic",
            encode_request(
                PRODUCE_VERSION,
                1,
                &produce_request("a/b", 0, Some(batch(&messages(1, "slot"))), 0),
            ),
        ),
    ];
    for (what, frame) in cases {
        let mut holder = admitted(&fixture, what);
        if frame.is_empty() {
            holder
                .send_raw(&(-5i32).to_be_bytes())
                .expect("send prefix");
        } else {
            holder.send_frame(&frame).expect("send");
        }
        holder.expect_closed(what);
        // `holder` stays open on our side. The broker has closed it, so a new client must be
        // served (soon: the slot is freed just after the close).
        drop(admitted(&fixture, what));
        drop(holder);
    }
}

/// A connection that the broker has admitted (it answered ApiVersions on it). With
/// `max.connections=1` a connection is refused until the broker has noticed that the previous
/// one ended, so this retries until a deadline.
fn admitted(fixture: &Fixture, after: &str) -> Conn {
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let mut conn = fixture.conn();
        let correlation_id = conn.send(API_VERSIONS_VERSION, &ApiVersionsRequest::default());
        if let Answer::Frame(frame) = conn.receive() {
            let response = support::kafka::decode_response::<ApiVersionsRequest>(
                API_VERSIONS_VERSION,
                correlation_id,
                frame,
            );
            assert_eq!(response.error_code, 0);
            return conn;
        }
        assert!(
            Instant::now() < deadline,
            "after {after}, no new connection was admitted within 5 s: the broker still counts \
             a connection it closed against max.connections=1 while the client keeps its end open"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// A client that pipelines without reading answers is not read without bound: once
/// `queued.max.requests` requests wait on a connection, the broker stops reading it, so the
/// client's writes stall once the socket buffers are full, and other connections are served.
#[test]
fn pipelining_beyond_queued_max_requests_stops_reading_the_connection() {
    use std::io::{ErrorKind, Write};

    let fixture = Fixture::start(&["queued.max.requests=4"]);
    let mut stream = std::net::TcpStream::connect(fixture.broker.address).expect("connect");
    stream
        .set_write_timeout(Some(Duration::from_secs(2)))
        .unwrap();
    let framed = |body: Vec<u8>| [(body.len() as i32).to_be_bytes().to_vec(), body].concat();
    // A fetch at the end of `kept` parks for 30 s, and answers leave in request order, so
    // nothing behind it is answered meanwhile.
    let fetch = parked_fetch(3, 30_000);
    let fetch = framed(encode_request(support::kafka::FETCH_VERSION, 1, &fetch));
    stream.write_all(&fetch).expect("send the fetch");
    // Large requests that are cheap to answer, so that the broker, if it kept reading, would
    // take bytes far faster than the client writes them.
    let name = "a".repeat(64 << 10);
    let request =
        ApiVersionsRequest::default().with_client_software_name(StrBytes::from_string(name));
    let versions = framed(encode_request(API_VERSIONS_VERSION, 2, &request));
    let chunk = versions.repeat((1 << 20) / versions.len());
    // What the two socket buffers can hold at most, plus room for the few requests the broker
    // takes: writing more than that means the broker went on reading.
    let limit = socket_buffers_max() + (8 << 20);
    let (mut written, mut at) = (0usize, 0usize);
    let stalled = loop {
        if written >= limit {
            break false;
        }
        match stream.write(&chunk[at..]) {
            Ok(n) => {
                written += n;
                at = (at + n) % chunk.len();
            }
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {
                break true;
            }
            Err(e) => panic!("write failed after {written} bytes: {e}"),
        }
    };
    assert!(
        stalled,
        "the broker read {written} bytes of pipelined requests while none was answered"
    );
    fixture.assert_still_serving("a connection stalled at queued.max.requests");
}

/// The largest receive plus send buffer TCP autotuning may give a socket (Linux sysctls).
fn socket_buffers_max() -> usize {
    ["tcp_rmem", "tcp_wmem"]
        .iter()
        .map(|name| {
            let path = format!("/proc/sys/net/ipv4/{name}");
            let text = std::fs::read_to_string(&path).expect("a Linux TCP sysctl");
            let max = text
                .split_whitespace()
                .nth(2)
                .expect("min, default and max");
            max.parse::<usize>().expect("a byte count")
        })
        .sum()
}

/// The CONTROLLER listener serves the quorum: a Kafka client there gets ApiVersions with the
/// controller's APIs, and a client API (Metadata) closes the connection, as Kafka refuses it.
#[test]
fn client_apis_on_the_controller_listener_close_the_connection() {
    let broker = Broker::start(&[]);
    let controller = broker
        .controller
        .expect("a one-node cluster runs a controller");
    let versions = api_versions(controller);
    assert_eq!(versions.error_code, 0);
    let keys: Vec<i16> = versions.api_keys.iter().map(|a| a.api_key).collect();
    assert_eq!(keys, vec![18, 55], "ApiVersions and DescribeQuorum only");
    let request = kafka_protocol::messages::MetadataRequest::default();
    let frame = encode_request(9, 7, &request);
    let mut conn = Conn::connect(controller);
    if conn.send_frame(&frame).is_ok() {
        conn.expect_closed("Metadata on the controller listener");
    }
    assert!(broker.is_running());
    assert_eq!(api_versions(broker.address).error_code, 0);
}

/// `connections.max.idle.ms` closes a connection that sends nothing and one stalled halfway
/// through a frame, while a long-poll fetch in flight for longer keeps its connection open.
#[test]
fn idle_and_half_frame_connections_are_closed_after_connections_max_idle_ms() {
    let fixture = Fixture::start(&["connections.max.idle.ms=1000"]);
    let mut idle = fixture.conn();
    let mut stalled = fixture.conn();
    stalled
        .send_raw(&100i32.to_be_bytes())
        .expect("send a prefix");
    stalled.send_raw(&[0; 10]).expect("send part of the body");

    let end = fixture.kept.len() as i64;
    let waiting = parked_fetch(end, 3000);
    let mut polling = fixture.conn();
    let answered = polling.call(FETCH_VERSION, &waiting);
    assert_eq!(answered.responses[0].partitions[0].error_code, 0);
    let versions: ApiVersionsResponse = polling.call(
        API_VERSIONS_VERSION,
        &ApiVersionsRequest::default()
            .with_client_software_name(StrBytes::from_static_str("t"))
            .with_client_software_version(StrBytes::from_static_str("1")),
    );
    assert_eq!(versions.error_code, 0, "the long poll kept its connection");

    idle.expect_closed("connections.max.idle.ms with nothing sent");
    stalled.expect_closed("connections.max.idle.ms inside a frame");
    fixture.assert_still_serving("closing idle connections");
}

/// A consumer fetch of `kept` partition 0 from `offset` that waits up to `wait_ms` for a byte.
fn parked_fetch(offset: i64, wait_ms: i32) -> FetchRequest {
    FetchRequest::default()
        .with_replica_id(BrokerId(-1))
        .with_max_wait_ms(wait_ms)
        .with_min_bytes(1)
        .with_max_bytes(1 << 20)
        .with_session_epoch(-1)
        .with_topics(vec![FetchTopic::default()
            .with_topic(TopicName(StrBytes::from_static_str("kept")))
            .with_partitions(vec![FetchPartition::default()
                .with_partition(0)
                .with_fetch_offset(offset)
                .with_partition_max_bytes(1 << 20)])])
}

/// Whether a fresh connection is served: an ApiVersions on it gets an answer.
fn served(conn: &mut Conn) -> bool {
    let request = ApiVersionsRequest::default()
        .with_client_software_name(StrBytes::from_static_str("t"))
        .with_client_software_version(StrBytes::from_static_str("1"));
    // The broker may close before the request is written: a failed write is a close too.
    let frame = encode_request(API_VERSIONS_VERSION, 1, &request);
    conn.send_frame(&frame).is_ok() && matches!(conn.receive(), Answer::Frame(_))
}

/// Opens connections until `count` are served, within a deadline: connections the test
/// closed a moment ago may still count against the limit until the broker sees them go.
fn served_connections(fixture: &Fixture, count: usize) -> Vec<Conn> {
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut kept = Vec::new();
    while kept.len() < count {
        assert!(
            Instant::now() < deadline,
            "only {} connections served",
            kept.len()
        );
        let mut conn = fixture.conn();
        if served(&mut conn) {
            kept.push(conn);
        }
    }
    kept
}

/// `max.connections.per.ip` closes connections from one address past the limit, a closed one
/// frees its slot, and `max.connections.per.ip.overrides` sets another limit for an address.
#[test]
fn connections_past_max_connections_per_ip_are_closed() {
    let fixture = Fixture::start(&["max.connections.per.ip=2"]);
    let mut open = served_connections(&fixture, 2);
    assert!(
        !served(&mut fixture.conn()),
        "a third connection from 127.0.0.1"
    );
    open.pop();
    open.extend(served_connections(&fixture, 1));
    assert!(
        !served(&mut fixture.conn()),
        "again two connections are the limit"
    );
    drop(open);

    let fixture = Fixture::start(&[
        "max.connections.per.ip=1",
        "max.connections.per.ip.overrides=127.0.0.1:3,[::1]:5",
    ]);
    let _open = served_connections(&fixture, 3);
    assert!(
        !served(&mut fixture.conn()),
        "a fourth connection from 127.0.0.1"
    );
}

/// The broker's resident memory, in bytes.
fn resident_bytes(broker: &Broker) -> u64 {
    let status = std::fs::read_to_string(broker.proc_dir().join("status")).expect("status");
    let kib: u64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|rest| rest.split_whitespace().next())
        .and_then(|n| n.parse().ok())
        .expect("VmRSS");
    kib * 1024
}

/// Connects, announces a frame of `frame` bytes and sends up to `body` bytes of it, stopping
/// when a write makes no progress for a while; reports the bytes of the body sent, and holds
/// the connection open until `release`.
fn send_part_of_a_frame(
    address: std::net::SocketAddr,
    (frame, body): (usize, usize),
    sent_tx: std::sync::mpsc::Sender<usize>,
    release: std::sync::Arc<std::sync::Barrier>,
) {
    use std::io::Write;
    let mut stream = std::net::TcpStream::connect(address).expect("connect");
    stream
        .set_write_timeout(Some(Duration::from_secs(3)))
        .expect("write timeout");
    stream
        .write_all(&(frame as i32).to_be_bytes())
        .expect("prefix");
    let chunk = vec![0u8; 1 << 20];
    let mut sent = 0;
    while sent < body {
        match stream.write(&chunk[..chunk.len().min(body - sent)]) {
            Ok(0) | Err(_) => break,
            Ok(n) => sent += n,
        }
    }
    sent_tx.send(sent).expect("report");
    release.wait();
}

#[test]
fn request_memory_stays_bounded_under_oversized_frames_from_many_connections() {
    // The body is larger than what loopback sockets buffer here, so a sender the broker does
    // not read from stops short of it. A frame is let in while the pool holds less than its
    // limit, so with a frame larger than the pool, one at a time is read.
    const POOL: usize = 64 << 20;
    const FRAME: usize = 96 << 20;
    const BODY: usize = 90 << 20;
    const CONNECTIONS: usize = 8;
    let fixture = Fixture::start(&[&format!("queued.max.request.bytes={POOL}")]);
    let before = resident_bytes(&fixture.broker);
    let address = fixture.broker.address;
    let (sent_tx, sent_rx) = std::sync::mpsc::channel();
    let release = std::sync::Arc::new(std::sync::Barrier::new(CONNECTIONS + 1));
    let senders: Vec<_> = (0..CONNECTIONS)
        .map(|_| {
            let (sent_tx, release) = (sent_tx.clone(), release.clone());
            std::thread::spawn(move || {
                send_part_of_a_frame(address, (FRAME, BODY), sent_tx, release)
            })
        })
        .collect();
    let sent: Vec<usize> = sent_rx.iter().take(CONNECTIONS).collect();
    let grown = resident_bytes(&fixture.broker).saturating_sub(before);
    release.wait();
    for sender in senders {
        sender.join().expect("sender");
    }
    // One 96 MiB frame at a time: one sender got its body read, the others stopped once
    // their socket buffers filled.
    let whole = sent.iter().filter(|s| **s == BODY).count();
    assert_eq!(whole, 1, "bodies sent in full: {sent:?}");
    let unbounded = (CONNECTIONS * BODY) as u64;
    assert!(
        grown < (POOL + FRAME) as u64,
        "resident memory grew by {grown} bytes (unbounded, {unbounded})"
    );
    // With the connections gone, their permits are back and requests are read again.
    fixture.assert_still_serving("oversized frames from many connections");
}
