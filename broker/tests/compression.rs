//! A topic's `compression.type` against the real broker: a codec named there is the codec its
//! batches are stored and served in, whatever the producer sent, with the same records;
//! `producer` keeps the producer's bytes; a value that is no codec is refused.

mod support;

use std::net::SocketAddr;

use bytes::Bytes;
use kafka_protocol::messages::fetch_request::{FetchPartition, FetchTopic};
use kafka_protocol::messages::*;
use kafka_protocol::protocol::StrBytes;
use sluice_storage::batch::parse_header;
use sluice_storage::records::{recompress, Compression};
use support::kafka::{self, Conn, Message};
use support::Broker;

const INVALID_CONFIG: i16 = 40;

fn create_topic(conn: &mut Conn, topic: &str, compression: &str) -> i16 {
    let mut config = create_topics_request::CreatableTopicConfig::default();
    config.name = StrBytes::from_static_str("compression.type");
    config.value = Some(StrBytes::from_string(compression.to_owned()));
    let mut wanted = create_topics_request::CreatableTopic::default();
    wanted.name = TopicName(StrBytes::from_string(topic.to_owned()));
    wanted.num_partitions = 1;
    wanted.replication_factor = 1;
    wanted.configs = vec![config];
    let mut request = CreateTopicsRequest::default();
    request.topics = vec![wanted];
    request.timeout_ms = 10_000;
    let answer: CreateTopicsResponse = conn.call(5, &request);
    answer.topics[0].error_code
}

/// The raw record batches partition 0 of `topic` serves from offset 0.
fn fetched_batches(address: SocketAddr, topic: &str) -> Vec<Vec<u8>> {
    let mut conn = Conn::connect(address);
    let request = FetchRequest::default()
        .with_replica_id(BrokerId(-1))
        .with_max_wait_ms(0)
        .with_min_bytes(1)
        .with_max_bytes(8 << 20)
        .with_session_epoch(-1)
        .with_topics(vec![FetchTopic::default()
            .with_topic(TopicName(StrBytes::from_string(topic.to_owned())))
            .with_partitions(vec![FetchPartition::default()
                .with_partition(0)
                .with_fetch_offset(0)
                .with_partition_max_bytes(4 << 20)])]);
    let response: FetchResponse = conn.call(11, &request);
    let partition = &response.responses[0].partitions[0];
    assert_eq!(partition.error_code, 0, "fetch {topic}");
    let mut bytes = partition.records.clone().unwrap_or_default().to_vec();
    let mut batches = Vec::new();
    while let Ok(header) = parse_header(&bytes) {
        let rest = bytes.split_off(header.total_len());
        batches.push(std::mem::replace(&mut bytes, rest));
    }
    batches
}

fn codec(batch: &[u8]) -> Option<Compression> {
    Compression::from_attributes(parse_header(batch).expect("a batch").attributes)
}

/// `batch` with its records in `to`.
fn in_codec(batch: &[u8], to: Compression) -> Bytes {
    let header = parse_header(batch).expect("a batch");
    let rewritten = recompress(batch, &header, to).expect("recompresses");
    Bytes::from(rewritten.unwrap_or_else(|| batch.to_vec()))
}

fn messages(prefix: &str) -> Vec<Message> {
    (0..50)
        .map(|i| {
            Message::new(
                format!("key-{i}"),
                format!("{prefix} value {i} ").repeat(20),
            )
        })
        .collect()
}

#[test]
fn a_topic_codec_is_what_its_batches_are_stored_and_served_in() {
    let broker = Broker::start(&[]);
    let mut conn = Conn::connect(broker.address);
    let cases = [
        (
            "to-zstd",
            "zstd",
            Compression::None,
            Some(Compression::Zstd),
        ),
        ("to-gzip", "gzip", Compression::Lz4, Some(Compression::Gzip)),
        (
            "to-snappy",
            "snappy",
            Compression::Zstd,
            Some(Compression::Snappy),
        ),
        ("to-lz4", "lz4", Compression::Gzip, Some(Compression::Lz4)),
        (
            "to-none",
            "uncompressed",
            Compression::Snappy,
            Some(Compression::None),
        ),
        ("kept", "producer", Compression::Lz4, Some(Compression::Lz4)),
    ];
    for (topic, config, sent, stored) in cases {
        assert_eq!(create_topic(&mut conn, topic, config), 0, "{topic}");
        let sent_messages = messages(topic);
        let batch = in_codec(&kafka::batch(&sent_messages), sent);
        for _ in 0..2 {
            let request = kafka::produce_request(topic, 0, Some(batch.clone()), 1);
            assert_eq!(kafka::produce(&mut conn, &request).0, 0, "{topic}");
        }
        let batches = fetched_batches(broker.address, topic);
        assert_eq!(batches.len(), 2, "{topic}");
        for batch in &batches {
            assert_eq!(codec(batch), stored, "{topic}: sent {sent:?}");
        }
        // The records are the ones sent, at dense offsets, whatever the codec.
        let plain: Vec<Bytes> = batches
            .iter()
            .map(|batch| in_codec(batch, Compression::None))
            .collect();
        let mut read = Vec::new();
        for mut batch in plain {
            let set = kafka_protocol::records::RecordBatchDecoder::decode(&mut batch)
                .expect("an uncompressed batch decodes");
            for record in set.records {
                read.push((
                    record.offset,
                    record.key.unwrap_or_default().to_vec(),
                    record.value.unwrap_or_default().to_vec(),
                ));
            }
        }
        let expected: Vec<(i64, Vec<u8>, Vec<u8>)> = sent_messages
            .iter()
            .chain(&sent_messages)
            .enumerate()
            .map(|(i, m)| (i as i64, m.key.clone(), m.value.clone()))
            .collect();
        assert_eq!(read, expected, "{topic}");
    }
    assert_eq!(
        create_topic(&mut conn, "brotli", "brotli"),
        INVALID_CONFIG,
        "a codec Kafka does not know"
    );
}

#[test]
fn a_damaged_batch_is_refused_not_recompressed() {
    let broker = Broker::start(&[]);
    let mut conn = Conn::connect(broker.address);
    assert_eq!(create_topic(&mut conn, "damaged", "zstd"), 0);
    let mut batch = kafka::batch(&messages("damaged")).to_vec();
    let last = batch.len() - 1;
    batch[last] ^= 0x55;
    let request = kafka::produce_request("damaged", 0, Some(Bytes::from(batch)), 1);
    const CORRUPT_MESSAGE: i16 = 2;
    assert_eq!(kafka::produce(&mut conn, &request).0, CORRUPT_MESSAGE);
    assert!(fetched_batches(broker.address, "damaged").is_empty());
}
