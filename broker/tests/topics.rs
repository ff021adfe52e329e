//! Topics and the cluster's description against the real broker: a topic deleted while
//! producers are writing to it is gone, its name can be used again from an empty log, and a
//! restart brings back neither the old topic nor its data; without auto-create an unknown
//! topic stays unknown; DescribeCluster and DescribeLogDirs describe this broker and its
//! partitions.

mod support;

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use kafka_protocol::messages::*;
use kafka_protocol::protocol::StrBytes;
use support::kafka::{self, Conn, Message};
use support::Broker;

const PARTITIONS: i32 = 4;
const DEADLINE: Duration = Duration::from_secs(60);

fn name(text: &str) -> TopicName {
    TopicName(StrBytes::from_string(text.to_owned()))
}

fn create_topic(conn: &mut Conn, topic: &str) -> i16 {
    let mut wanted = create_topics_request::CreatableTopic::default();
    wanted.name = name(topic);
    wanted.num_partitions = PARTITIONS;
    wanted.replication_factor = 1;
    let mut request = CreateTopicsRequest::default();
    request.topics = vec![wanted];
    request.timeout_ms = 10_000;
    let answer: CreateTopicsResponse = conn.call(5, &request);
    answer.topics[0].error_code
}

fn delete_topic(conn: &mut Conn, topic: &str) -> i16 {
    let mut request = DeleteTopicsRequest::default();
    request.topic_names = vec![name(topic)];
    request.timeout_ms = 10_000;
    let answer: DeleteTopicsResponse = conn.call(4, &request);
    answer.responses[0].error_code
}

/// Produces to every partition of `topic`, one request after another, until told to stop;
/// counts the appends that succeeded.
struct Producers {
    stop: Arc<AtomicBool>,
    appended: Arc<AtomicUsize>,
    threads: Vec<std::thread::JoinHandle<()>>,
}

impl Producers {
    /// Stops them and returns how many appends succeeded.
    fn stop(self) -> usize {
        self.stop.store(true, Ordering::Relaxed);
        for thread in self.threads {
            thread.join().expect("producer thread");
        }
        self.appended.load(Ordering::Relaxed)
    }
}

fn keep_producing(broker: &Broker, topic: &'static str) -> Producers {
    let stop = Arc::new(AtomicBool::new(false));
    let appended = Arc::new(AtomicUsize::new(0));
    let address = broker.address;
    let mut threads = Vec::new();
    for partition in 0..PARTITIONS {
        let (stop, appended) = (stop.clone(), appended.clone());
        threads.push(std::thread::spawn(move || {
            let mut conn = Conn::connect(address);
            let value = vec![b'x'; 16 << 10];
            while !stop.load(Ordering::Relaxed) {
                let records = kafka::batch(&[Message::new("k", value.clone())]);
                let request = kafka::produce_request(topic, partition, Some(records), 1);
                if kafka::produce(&mut conn, &request).0 == 0 {
                    appended.fetch_add(1, Ordering::Relaxed);
                }
            }
        }));
    }
    Producers {
        stop,
        appended,
        threads,
    }
}

#[test]
fn a_topic_deleted_under_load_stays_deleted_and_its_name_starts_empty() {
    let overrides = ["auto.create.topics.enable=false", "sluice.reactors=2"];
    let mut broker = Broker::start(&overrides);
    let topic = "doomed";
    let mut conn = Conn::connect(broker.address);
    assert_eq!(create_topic(&mut conn, topic), 0);
    let producers = keep_producing(&broker, topic);
    let deadline = Instant::now() + DEADLINE;
    while producers.appended.load(Ordering::Relaxed) < 200 {
        assert!(Instant::now() < deadline, "producers did not get going");
        std::thread::sleep(Duration::from_millis(10));
    }
    assert_eq!(delete_topic(&mut conn, topic), 0);
    // Producers keep sending to the name; without auto-create they are refused.
    assert_eq!(create_topic(&mut conn, topic), 0);
    let appended = producers.stop();
    // The re-created topic holds what was appended after its creation, none of the at least
    // 200 appends to the deleted one.
    let mut before_restart = 0;
    for partition in 0..PARTITIONS {
        before_restart += kafka::fetch_all(broker.address, topic, partition, 0).len();
    }
    assert!(
        before_restart + 200 <= appended,
        "{before_restart} records in the re-created topic, {appended} appended in all"
    );

    // A restart keeps the re-created topic and what it holds, and nothing else.
    let dir = broker.take_dir();
    let data = broker.data.clone();
    broker.stop();
    let broker = Broker::start_in(&data, &overrides);
    let mut after_restart = 0;
    for partition in 0..PARTITIONS {
        after_restart += kafka::fetch_all(broker.address, topic, partition, 0).len();
    }
    assert_eq!(after_restart, before_restart);
    let leftovers: Vec<String> = std::fs::read_dir(&data)
        .unwrap()
        .flatten()
        .filter_map(|e| e.file_name().into_string().ok())
        .filter(|n| n.ends_with("-delete"))
        .collect();
    assert!(leftovers.is_empty(), "{leftovers:?}");
    drop(dir);
}

/// With `auto.create.topics.enable=false`, neither Metadata nor Produce creates a topic.
#[test]
fn without_auto_create_unknown_topics_stay_unknown() {
    const UNKNOWN_TOPIC_OR_PARTITION: i16 = 3;
    let broker = Broker::start(&["auto.create.topics.enable=false"]);
    let mut conn = Conn::connect(broker.address);
    let mut wanted = metadata_request::MetadataRequestTopic::default();
    wanted.name = Some(name("nowhere"));
    let mut request = MetadataRequest::default();
    request.topics = Some(vec![wanted]);
    request.allow_auto_topic_creation = true;
    let answer: MetadataResponse = conn.call(9, &request);
    assert_eq!(answer.topics[0].error_code, UNKNOWN_TOPIC_OR_PARTITION);
    let records = kafka::batch(&[Message::new("k", "v")]);
    let produce = kafka::produce_request("nowhere", 0, Some(records), 1);
    assert_eq!(
        kafka::produce(&mut conn, &produce).0,
        UNKNOWN_TOPIC_OR_PARTITION
    );
    let answer: MetadataResponse = conn.call(9, &MetadataRequest::default());
    assert!(answer.topics.is_empty(), "{:?}", answer.topics);
}

/// DescribeCluster names this broker as the whole cluster and its controller; DescribeLogDirs
/// gives the log directory, its file system's size, and each partition's bytes on disk.
#[test]
fn describe_cluster_and_log_dirs() {
    let broker = Broker::start(&["node.id=7"]);
    let mut conn = Conn::connect(broker.address);
    assert_eq!(create_topic(&mut conn, "described"), 0);
    let records = kafka::batch(&[Message::new("k", vec![b'v'; 1000])]);
    let produce = kafka::produce_request("described", 2, Some(records), 1);
    assert_eq!(kafka::produce(&mut conn, &produce).0, 0);

    let cluster: DescribeClusterResponse = conn.call(0, &DescribeClusterRequest::default());
    assert_eq!(cluster.error_code, 0);
    assert_eq!(cluster.controller_id, BrokerId(7));
    assert!(!cluster.cluster_id.is_empty());
    let brokers: Vec<(i32, String, i32)> = cluster
        .brokers
        .iter()
        .map(|b| (b.broker_id.0, b.host.to_string(), b.port))
        .collect();
    let port = i32::from(broker.address.port());
    assert_eq!(brokers, vec![(7, "127.0.0.1".to_owned(), port)]);

    let mut wanted = describe_log_dirs_request::DescribableLogDirTopic::default();
    wanted.topic = name("described");
    wanted.partitions = vec![0, 2];
    let mut request = DescribeLogDirsRequest::default();
    request.topics = Some(vec![wanted]);
    let dirs: DescribeLogDirsResponse = conn.call(4, &request);
    assert_eq!(dirs.results.len(), 1);
    let dir = &dirs.results[0];
    assert_eq!(dir.error_code, 0);
    assert_eq!(std::path::Path::new(dir.log_dir.as_str()), broker.data);
    assert!(dir.total_bytes > 0 && (0..=dir.total_bytes).contains(&dir.usable_bytes));
    let sizes: Vec<(i32, i64)> = dir.topics[0]
        .partitions
        .iter()
        .map(|p| (p.partition_index, p.partition_size))
        .collect();
    assert_eq!(sizes.len(), 2);
    assert_eq!(sizes[0], (0, 0), "nothing produced to partition 0");
    assert_eq!(sizes[1].0, 2);
    let on_disk = std::fs::metadata(broker.data.join("described-2/00000000000000000000.log"))
        .expect("segment file")
        .len();
    assert_eq!(sizes[1].1 as u64, on_disk);
    assert!(on_disk > 1000);
}
