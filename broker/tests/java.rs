//! The real Java client, kafka-clients 4.3.0, against the real broker: the AdminClient (topics
//! with configs, the cluster, incremental config changes, a group's offsets), the idempotent
//! producer with every codec, read back by kcat and checked on disk, a classic-protocol
//! consumer group of two members that split the partitions and commit, and two features
//! Sluice lacks (the KIP-848 group protocol and transactions), which must fail fast.
//! The harness is tests/clients/java/*.java, compiled by scripts/test.sh; each subcommand
//! prints lines the test checks and exits non-zero, with the reason on stderr, when something
//! differs or a deadline passes.

mod support;

use std::collections::{BTreeMap, BTreeSet};
use std::process::Command;

use kafka_protocol::records::{Compression, RecordBatchDecoder};
use support::java::java_harness;
use support::{run, Broker};

/// Runs a harness subcommand against `broker` and returns what it printed.
fn harness(broker: &Broker, subcommand: &str, args: &[&str]) -> String {
    java_harness(&broker.bootstrap(), subcommand, args)
}

/// `key=value` fields of a line, after its leading words.
fn fields(line: &str) -> BTreeMap<&str, &str> {
    line.split_whitespace()
        .filter_map(|word| word.split_once('='))
        .collect()
}

fn number(text: &str) -> usize {
    text.parse()
        .unwrap_or_else(|_| panic!("{text:?} is not a number"))
}

#[test]
fn java_admin_manages_topics_configs_and_group_offsets() {
    let broker = Broker::start(&["num.partitions=2"]);
    let printed = harness(&broker, "admin", &[]);
    let (cluster, others): (Vec<&str>, Vec<&str>) =
        printed.lines().partition(|l| l.starts_with("cluster "));
    let expected = [
        "created java-admin partitions=3",
        "created java-admin-defaults partitions=2",
        "exists java-admin TopicExistsException",
        "topic java-admin partitions=3 leaders=0,0,0 replicas=1,1,1 isr=1,1,1",
        "topic java-admin-defaults partitions=2 leaders=0,0 replicas=1,1 isr=1,1",
        "config created java-admin retention.ms=3600000 source=DYNAMIC_TOPIC_CONFIG",
        "config created java-admin segment.bytes=1048576 source=DYNAMIC_TOPIC_CONFIG",
        "config created java-admin max.message.bytes=1048588 source=DEFAULT_CONFIG",
        "config altered java-admin retention.ms=7200000 source=DYNAMIC_TOPIC_CONFIG",
        "config altered java-admin segment.bytes=1073741824 source=DEFAULT_CONFIG",
        "config altered java-admin max.message.bytes=2097152 source=DYNAMIC_TOPIC_CONFIG",
        "rejected java-admin retention.ms=-2 InvalidConfigurationException",
        "config kept java-admin retention.ms=7200000 source=DYNAMIC_TOPIC_CONFIG",
        "config kept java-admin segment.bytes=1073741824 source=DEFAULT_CONFIG",
        "config kept java-admin max.message.bytes=2097152 source=DYNAMIC_TOPIC_CONFIG",
        "offset java-admin-group java-admin 0 5",
        "offset java-admin-group java-admin 2 7",
    ];
    assert_eq!(others, expected);
    assert_eq!(cluster.len(), 1, "{printed}");
    let cluster = fields(cluster[0]);
    assert!(
        cluster.get("id").is_some_and(|id| !id.is_empty()),
        "{cluster:?}"
    );
    assert_eq!(cluster.get("controller"), Some(&"0"), "{cluster:?}");
    let broker_node = format!("0@{}", broker.bootstrap());
    assert_eq!(cluster.get("brokers"), Some(&broker_node.as_str()));
}

const PRODUCED: usize = 3000;
const PRODUCE_PARTITIONS: usize = 3;

/// What ProduceCommand.java sends as record `i`: key, value and `seq` header.
fn expected_record(i: usize) -> (String, String, String) {
    (
        format!("key-{i}"),
        format!("value-{i}-{}", "java".repeat(i % 40)),
        i.to_string(),
    )
}

/// Runs the idempotent producer and returns the acks it counted per partition.
fn produce(broker: &Broker, topic: &str, count: usize, codec: &str) -> BTreeMap<i32, usize> {
    let printed = harness(broker, "produce", &[topic, &count.to_string(), codec]);
    let acked: BTreeMap<i32, usize> = printed
        .lines()
        .filter_map(|l| l.strip_prefix("partition "))
        .map(|rest| {
            let (partition, _) = rest.split_once(' ').expect("partition P acked=C");
            let partition = partition.parse().expect("a partition number");
            (partition, number(fields(rest)["acked"]))
        })
        .collect();
    assert!(
        printed.lines().any(|l| l == format!("acked {count}")),
        "{printed}"
    );
    assert_eq!(acked.values().sum::<usize>(), count, "{printed}");
    acked
}

fn produce_and_read_back(codec: &str, codec_id: Compression) {
    let partitions = PRODUCE_PARTITIONS.to_string();
    let broker = Broker::start(&[&format!("num.partitions={partitions}")]);
    let topic = format!("java-{codec}");
    let acked = produce(&broker, &topic, PRODUCED, codec);
    assert_eq!(
        acked.keys().copied().collect::<Vec<_>>(),
        (0..PRODUCE_PARTITIONS as i32).collect::<Vec<_>>(),
        "the keys spread over every partition"
    );
    let mut seen = BTreeSet::new();
    for (&partition, &count) in &acked {
        let read = read_with_kcat(&broker, &topic, partition);
        assert_eq!(read.len(), count, "{topic}-{partition} as kcat reads it");
        let mut previous = None;
        for (offset, line) in read.iter().enumerate() {
            let mut parts = line.splitn(4, '|');
            let (at, key, value, headers) =
                (parts.next(), parts.next(), parts.next(), parts.next());
            assert_eq!(at, Some(offset.to_string().as_str()), "{line}");
            let i = key
                .and_then(|k| k.strip_prefix("key-"))
                .map(number)
                .unwrap_or_else(|| panic!("a key-i key in {line}"));
            let (want_key, want_value, seq) = expected_record(i);
            assert_eq!(key, Some(want_key.as_str()), "{line}");
            assert_eq!(value, Some(want_value.as_str()), "{line}");
            assert_eq!(headers, Some(format!("seq={seq}").as_str()), "{line}");
            assert!(seen.insert(i), "record {i} read twice");
            // One producer, acks=all and idempotence keep each partition in send order.
            assert!(
                previous < Some(i),
                "{topic}-{partition}: {i} after {previous:?}"
            );
            previous = Some(i);
        }
        stored_idempotent(&broker, &topic, partition, count, codec_id);
    }
    assert_eq!(seen.len(), PRODUCED, "every record read back once");
}

/// A partition's records as kcat prints them: `offset|key|value|headers`.
fn read_with_kcat(broker: &Broker, topic: &str, partition: i32) -> Vec<String> {
    let out = run(Command::new("kcat").args([
        "-b",
        &broker.bootstrap(),
        "-C",
        "-t",
        topic,
        "-p",
        &partition.to_string(),
        "-o",
        "beginning",
        "-e",
        "-q",
        "-f",
        "%o|%k|%s|%h\\n",
    ]));
    String::from_utf8(out)
        .expect("utf-8")
        .lines()
        .map(str::to_owned)
        .collect()
}

/// The batches on disk are the producer's: compressed with its codec, stamped with its
/// producer id, and numbered by sequences that run on without gaps from 0.
fn stored_idempotent(
    broker: &Broker,
    topic: &str,
    partition: i32,
    count: usize,
    codec: Compression,
) {
    let segment = broker
        .data
        .join(format!("{topic}-{partition}"))
        .join("00000000000000000000.log");
    let on_disk = std::fs::read(&segment).expect("the partition's first segment");
    let batches = RecordBatchDecoder::decode_batch_info(&mut bytes::Bytes::from(on_disk))
        .unwrap_or_else(|e| panic!("batches of {}: {e}", segment.display()));
    let producer_id = batches.first().expect("batches on disk").producer_id;
    assert!(
        producer_id >= 0,
        "an idempotent producer's batch: {batches:?}"
    );
    let mut next_sequence = 0;
    for batch in &batches {
        assert_eq!(batch.compression, codec, "{batch:?}");
        assert_eq!(batch.producer_id, producer_id, "{batch:?}");
        assert_eq!(batch.base_sequence, next_sequence, "{batch:?}");
        assert_eq!(
            i64::from(batch.base_sequence),
            batch.min_offset,
            "{batch:?}"
        );
        next_sequence += batch.record_count;
    }
    assert_eq!(next_sequence as usize, count, "records on disk");
}

#[test]
fn java_idempotent_producer_uncompressed() {
    produce_and_read_back("none", Compression::None);
}

#[test]
fn java_idempotent_producer_gzip() {
    produce_and_read_back("gzip", Compression::Gzip);
}

#[test]
fn java_idempotent_producer_snappy() {
    produce_and_read_back("snappy", Compression::Snappy);
}

#[test]
fn java_idempotent_producer_lz4() {
    produce_and_read_back("lz4", Compression::Lz4);
}

#[test]
fn java_idempotent_producer_zstd() {
    produce_and_read_back("zstd", Compression::Zstd);
}

const GROUP_PARTITIONS: usize = 4;
const GROUP_RECORDS: usize = 2000;

/// Two members split four partitions, read every record once and commit what they read; the
/// AdminClient then lists the group's committed offsets at the end of each partition.
#[test]
fn java_consumer_group_splits_partitions_and_commits() {
    let partitions = format!("num.partitions={GROUP_PARTITIONS}");
    let broker = Broker::start(&[
        &partitions,
        "offsets.topic.num.partitions=4",
        "group.initial.rebalance.delay.ms=300",
        "sluice.reactors=2",
    ]);
    let (topic, group) = ("java-group", "java-readers");
    let acked = produce(&broker, topic, GROUP_RECORDS, "lz4");
    let records = GROUP_RECORDS.to_string();
    let printed = harness(&broker, "consume-group", &[topic, group, &records, "2"]);

    let mut owners = BTreeMap::new();
    let mut member_records = Vec::new();
    for line in printed.lines().filter(|l| l.starts_with("member ")) {
        let fields = fields(line);
        let owned: Vec<i32> = fields["partitions"]
            .split(',')
            .filter(|p| !p.is_empty())
            .map(|p| p.parse().expect("a partition"))
            .collect();
        assert!(!owned.is_empty(), "a member without partitions: {printed}");
        for &partition in &owned {
            let before = owners.insert(partition, line);
            assert!(
                before.is_none(),
                "partition {partition} owned twice: {printed}"
            );
        }
        let read = number(fields["records"]);
        let expected: usize = owned.iter().map(|p| acked[p]).sum();
        assert_eq!(read, expected, "a member reads its partitions: {printed}");
        member_records.push(read);
    }
    assert_eq!(member_records.len(), 2, "{printed}");
    assert_eq!(
        owners.keys().copied().collect::<Vec<_>>(),
        (0..GROUP_PARTITIONS as i32).collect::<Vec<_>>(),
        "every partition has an owner: {printed}"
    );
    for (&partition, &count) in &acked {
        let line = format!("partition {partition} records={count} next={count}");
        assert!(printed.lines().any(|l| l == line), "{line} in {printed}");
    }
    assert!(
        printed
            .lines()
            .any(|l| l == format!("consumed {GROUP_RECORDS}")),
        "{printed}"
    );

    let listed = harness(&broker, "offsets", &[group]);
    let expected: Vec<String> = acked
        .iter()
        .map(|(partition, count)| format!("offset {group} {topic} {partition} {count}"))
        .collect();
    assert_eq!(listed.lines().collect::<Vec<_>>(), expected);
}

/// A KIP-848 consumer (group.protocol=consumer) hears that the broker lacks the protocol, and a
/// transactional producer gives up within max.block.ms: the broker answers FindCoordinator for
/// a transactional id with COORDINATOR_NOT_AVAILABLE, which the client retries until then.
/// The harness fails either when it takes more than 20 s.
#[test]
fn java_unsupported_features_fail_fast() {
    let broker = Broker::start(&[]);
    let printed = harness(&broker, "unsupported", &["java-unsupported"]);
    let failed = |what: &str| {
        printed
            .lines()
            .find(|l| l.starts_with(&format!("{what} failed ")))
            .unwrap_or_else(|| panic!("no line on {what} in {printed}"))
            .to_owned()
    };
    let consumer = failed("consumer-protocol");
    assert!(
        consumer.contains(
            "UnsupportedVersionException: The cluster does not support the new CONSUMER group protocol"
        ),
        "{consumer}"
    );
    let transactions = failed("transactions");
    assert!(
        transactions.contains("TimeoutException") && transactions.contains("InitProducerId"),
        "{transactions}"
    );
    assert!(broker.is_running(), "the broker survives both clients");
}
