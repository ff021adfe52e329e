//! Partitions and the open-files limit, against the real binary: a broker hosts more
//! partitions than its limit (idle log files are closed), a CreateTopics that fails halfway
//! is taken back whole, and a partition whose files cannot be opened at start-up is offline
//! while the rest are served.

mod support;

use std::path::Path;

use kafka_protocol::messages::create_topics_request::CreatableTopic;
use kafka_protocol::messages::create_topics_response::CreatableTopicResult;
use kafka_protocol::messages::metadata_request::MetadataRequestTopic;
use kafka_protocol::messages::metadata_response::MetadataResponseTopic;
use kafka_protocol::messages::*;
use kafka_protocol::protocol::StrBytes;
use sluice_storage::checkpoint::CLEAN_SHUTDOWN_FILE;
use support::kafka::{self, Conn, Message};
use support::{Broker, Starting};

const KAFKA_STORAGE_ERROR: i16 = 56;
const LEADER_NOT_AVAILABLE: i16 = 5;
/// A limit below the 2,000 partitions the broker is given: half of it goes to log files.
const NOFILE: u64 = 1_500;

fn name(text: &str) -> TopicName {
    TopicName(StrBytes::from_string(text.to_owned()))
}

fn create_topic(conn: &mut Conn, topic: &str, partitions: i32) -> CreatableTopicResult {
    let mut wanted = CreatableTopic::default();
    wanted.name = name(topic);
    wanted.num_partitions = partitions;
    wanted.replication_factor = 1;
    let mut request = CreateTopicsRequest::default();
    request.topics = vec![wanted];
    request.timeout_ms = 30_000;
    let mut answer: CreateTopicsResponse = conn.call(5, &request);
    answer.topics.remove(0)
}

fn metadata(conn: &mut Conn, topic: &str) -> MetadataResponseTopic {
    let mut wanted = MetadataRequestTopic::default();
    wanted.name = Some(name(topic));
    let mut request = MetadataRequest::default();
    request.topics = Some(vec![wanted]);
    request.allow_auto_topic_creation = false;
    let mut answer: MetadataResponse = conn.call(9, &request);
    answer.topics.remove(0)
}

/// Partition directories of `topic` in `data`.
fn dirs_of(data: &Path, topic: &str) -> Vec<String> {
    let prefix = format!("{topic}-");
    let mut found: Vec<String> = std::fs::read_dir(data)
        .expect("data dir")
        .filter_map(|e| e.ok())
        .filter(|e| e.file_type().is_ok_and(|t| t.is_dir()))
        .filter_map(|e| e.file_name().into_string().ok())
        .filter(|n| {
            n.strip_prefix(&prefix)
                .is_some_and(|rest| rest.parse::<u32>().is_ok())
        })
        .collect();
    found.sort();
    found
}

fn produce_one(conn: &mut Conn, topic: &str, partition: i32, value: &str) -> i16 {
    let records = kafka::batch(&[Message::new("k", value)]);
    let request = kafka::produce_request(topic, partition, Some(records), 1);
    kafka::produce(conn, &request).0
}

fn start_limited(data: &Path) -> Broker {
    Starting::spawn_limited(data, &[], Some(NOFILE)).wait()
}

#[test]
fn a_broker_hosts_more_partitions_than_its_open_files_limit() {
    const PARTITIONS: i32 = 2_000;
    let dir = tempfile::tempdir().expect("temp dir");
    let data = dir.path().join("data");
    let broker = start_limited(&data);
    let mut conn = Conn::connect(broker.address);

    assert_eq!(create_topic(&mut conn, "many", PARTITIONS).error_code, 0);
    for partition in 0..PARTITIONS {
        let value = format!("kept {partition}");
        assert_eq!(produce_one(&mut conn, "many", partition, &value), 0);
    }
    // Log files past half the limit were closed again as others opened.
    let held = descriptors_of(&broker);
    assert!(held < NOFILE as usize * 3 / 4, "{held} descriptors open");
    let scrape = broker.scrape();
    assert_eq!(Broker::metric(&scrape, "sluice_log_files_max"), NOFILE / 2);
    assert!(Broker::metric(&scrape, "sluice_log_files_open") <= NOFILE / 2);
    assert_eq!(Broker::metric(&scrape, "process_max_fds"), NOFILE);
    drop(conn);
    assert!(broker.stop().success());
    // Every log was closed cleanly (closing takes descriptors too): the log directory is
    // marked clean only then.
    assert_eq!(dirs_of(&data, "many").len(), PARTITIONS as usize);
    assert!(
        data.join(CLEAN_SHUTDOWN_FILE).exists(),
        "log directory not marked clean"
    );

    let broker = start_limited(&data);
    assert!(
        !data.join(CLEAN_SHUTDOWN_FILE).exists(),
        "a crash from here on must look unclean"
    );
    let held = descriptors_of(&broker);
    assert!(held < NOFILE as usize * 3 / 4, "{held} descriptors open");
    let mut conn = Conn::connect(broker.address);
    for partition in (0..PARTITIONS).step_by(97).chain([PARTITIONS - 1]) {
        let stored = kafka::fetch_all(broker.address, "many", partition, 0);
        let values: Vec<&[u8]> = stored.iter().map(|m| m.message.value.as_slice()).collect();
        assert_eq!(values, [format!("kept {partition}").as_bytes()]);
        assert_eq!(produce_one(&mut conn, "many", partition, "again"), 0);
    }
}

#[test]
fn a_create_topics_that_fails_halfway_is_taken_back_whole() {
    let broker = Broker::start(&[]);
    // A file where partition 3's directory would go: that partition cannot be opened.
    std::fs::write(broker.data.join("torn-3"), b"in the way").expect("plant a file");
    let mut conn = Conn::connect(broker.address);

    let failed = create_topic(&mut conn, "torn", 6);
    assert_eq!(failed.error_code, KAFKA_STORAGE_ERROR, "{failed:?}");
    let message = failed.error_message.expect("a reason").to_string();
    assert!(message.contains("1 of 6 partitions"), "{message}");
    assert!(message.contains("removed"), "{message}");
    support::cluster::wait_until(
        std::time::Duration::from_secs(30),
        "the other partitions' directories are gone",
        || dirs_of(&broker.data, "torn").is_empty(),
    );
    assert_eq!(metadata(&mut conn, "torn").error_code, 3, "unknown topic");

    // Once the way is clear, the same name is created whole.
    std::fs::remove_file(broker.data.join("torn-3")).expect("clear");
    assert_eq!(create_topic(&mut conn, "torn", 6).error_code, 0);
    assert_eq!(produce_one(&mut conn, "torn", 3, "now"), 0);
}

#[test]
fn a_partition_unreadable_at_start_up_is_offline_while_the_rest_serve() {
    let dir = tempfile::tempdir().expect("temp dir");
    let data = dir.path().join("data");
    let broker = Broker::start_in(&data, &[]);
    let mut conn = Conn::connect(broker.address);
    assert_eq!(create_topic(&mut conn, "t", 4).error_code, 0);
    for partition in 0..4 {
        assert_eq!(produce_one(&mut conn, "t", partition, "before"), 0);
    }
    drop(conn);
    assert!(broker.stop().success());

    // Partition 2's log file becomes a directory: it cannot be opened.
    let log = data.join("t-2").join("00000000000000000000.log");
    std::fs::remove_file(&log).expect("remove log");
    std::fs::create_dir(&log).expect("a directory in its place");

    let broker = Broker::start_in(&data, &[]);
    let mut conn = Conn::connect(broker.address);
    let topic = metadata(&mut conn, "t");
    assert_eq!(topic.error_code, 0);
    let offline = &topic.partitions[2];
    assert_eq!(offline.error_code, LEADER_NOT_AVAILABLE, "{offline:?}");
    assert_eq!(offline.leader_id, BrokerId(-1));
    assert_eq!(offline.offline_replicas, vec![BrokerId(0)]);
    assert_ne!(produce_one(&mut conn, "t", 2, "refused"), 0);
    for partition in [0, 1, 3] {
        let stored = kafka::fetch_all(broker.address, "t", partition, 0);
        assert_eq!(stored.len(), 1, "partition {partition}");
        assert_eq!(produce_one(&mut conn, "t", partition, "after"), 0);
    }
}

/// Descriptors the process holds.
fn descriptors_of(broker: &Broker) -> usize {
    std::fs::read_dir(broker.proc_dir().join("fd"))
        .expect("fd dir")
        .count()
}
