//! Topic deletion against the real broker: a topic deleted while producers are writing to it
//! is gone, its name can be used again from an empty log, and a restart brings back neither
//! the old topic nor its data.

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
