//! confluent-kafka (librdkafka 2.x from PyPI) against the real broker: a producer with every
//! compression codec and as an idempotent producer, a consumer by assign() and seek() (no
//! consumer group), and the AdminClient. The checks live in the Python scripts under
//! tests/clients; each exits non-zero, with the reason on stderr, when something differs.
//! After each round trip the test reads the segment file itself: batches stay compressed as
//! the producer sent them, and a fetch sends the bytes on disk.

mod support;

use support::{client_script, python, run, Broker};

/// Runs a client script against `broker` and returns the summary it prints.
fn script(broker: &Broker, name: &str, args: &[&str]) -> String {
    let output = run(python()
        .arg(client_script(name))
        .arg(broker.bootstrap())
        .args(args));
    let summary = String::from_utf8_lossy(&output).trim().to_owned();
    assert!(!summary.is_empty(), "{name} printed no summary");
    println!("{summary}");
    summary
}

fn roundtrip(codec: &str, idempotent: bool) {
    let broker = Broker::start(&[]);
    let mut args = vec![codec];
    if idempotent {
        args.push("--idempotent");
    }
    let summary = script(&broker, "confluent_roundtrip.py", &args);
    assert!(summary.contains("read back 6000 messages"), "{summary}");
    let topic = format!("roundtrip-{codec}") + if idempotent { "-idempotent" } else { "" };
    stored_as_produced(&broker, &topic, codec);
}

/// The broker keeps batches as the producer compressed them: batches on disk carry the
/// producer's codec in their attributes, and a fetch sends exactly the bytes on disk.
/// librdkafka sends a batch uncompressed when compression would not make it smaller (a batch
/// of one short message), so some batches may say none; the others must say the codec.
fn stored_as_produced(broker: &Broker, topic: &str, codec: &str) {
    let codec_id = ["none", "gzip", "snappy", "lz4", "zstd"]
        .iter()
        .position(|c| *c == codec)
        .expect("a known codec") as u16;
    let segment = broker
        .data
        .join(format!("{topic}-0"))
        .join("00000000000000000000.log");
    let on_disk = std::fs::read(&segment).expect("the partition's first segment");
    let mut at = 0;
    let mut codecs = Vec::new();
    while at < on_disk.len() {
        // Kafka's RecordBatch v2 header: batchLength at 8, attributes at 21.
        let length = i32::from_be_bytes(on_disk[at + 8..at + 12].try_into().unwrap()) as usize;
        let attributes = u16::from_be_bytes(on_disk[at + 21..at + 23].try_into().unwrap());
        codecs.push(attributes & 0x7);
        at += 12 + length;
    }
    assert!(
        codecs.iter().all(|&c| c == codec_id || c == 0),
        "codecs of the batches: {codecs:?}, producer's codec {codec_id}"
    );
    assert!(
        codecs.contains(&codec_id),
        "no batch keeps the producer's codec {codec_id}: {codecs:?}"
    );
    let fetched = fetch_raw(broker.address, topic, 0);
    assert!(
        fetched == on_disk,
        "a fetch of the partition sends the bytes on disk"
    );
}

/// The record bytes of one Fetch of a whole partition (all of it fits in one answer here).
fn fetch_raw(address: std::net::SocketAddr, topic: &str, partition: i32) -> Vec<u8> {
    use kafka_protocol::messages::fetch_request::{FetchPartition, FetchTopic};
    use kafka_protocol::messages::{BrokerId, FetchRequest, TopicName};
    use kafka_protocol::protocol::StrBytes;
    let request = FetchRequest::default()
        .with_replica_id(BrokerId(-1))
        .with_max_bytes(64 << 20)
        .with_session_epoch(-1)
        .with_topics(vec![FetchTopic::default()
            .with_topic(TopicName(StrBytes::from_string(topic.to_owned())))
            .with_partitions(vec![FetchPartition::default()
                .with_partition(partition)
                .with_partition_max_bytes(64 << 20)])]);
    let mut conn = support::kafka::Conn::connect(address);
    let answer = conn.call(support::kafka::FETCH_VERSION, &request);
    let data = &answer.responses[0].partitions[0];
    assert_eq!(data.error_code, 0);
    data.records.clone().unwrap_or_default().to_vec()
}

#[test]
fn produce_and_read_back_uncompressed() {
    roundtrip("none", false);
}

#[test]
fn produce_and_read_back_gzip() {
    roundtrip("gzip", false);
}

#[test]
fn produce_and_read_back_snappy() {
    roundtrip("snappy", false);
}

#[test]
fn produce_and_read_back_lz4() {
    roundtrip("lz4", false);
}

#[test]
fn produce_and_read_back_zstd() {
    roundtrip("zstd", false);
}

#[test]
fn idempotent_producer_reads_back_without_gaps_or_duplicates() {
    roundtrip("none", true);
}

#[test]
fn idempotent_producer_with_lz4() {
    roundtrip("lz4", true);
}

fn admin(area: &str) {
    let broker = Broker::start(&[]);
    script(&broker, "confluent_admin.py", &[area]);
}

#[test]
fn admin_creates_and_deletes_topics() {
    admin("topics");
}

#[test]
fn admin_creates_partitions() {
    admin("partitions");
}

#[test]
fn admin_lists_offsets_earliest_latest_and_by_timestamp() {
    admin("offsets");
}

/// Kafka resolves a timestamp to the exact record, also inside a batch of several.
#[test]
fn admin_lists_offsets_by_timestamp_inside_a_batch() {
    admin("offsets-in-batch");
}

#[test]
fn admin_deletes_records() {
    admin("delete-records");
}

#[test]
fn admin_describes_and_alters_configs() {
    admin("configs");
}
