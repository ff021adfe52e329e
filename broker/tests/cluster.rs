//! Three real brokers in combined mode on loopback: a controller quorum on Raft, replicas
//! placed across the brokers, clients routed to the leaders, a controller killed, a broker
//! paused until it is fenced, and the whole cluster restarted.

mod support;

use std::collections::BTreeMap;
use std::time::Duration;

use kafka_protocol::messages::incremental_alter_configs_request::{
    AlterConfigsResource, AlterableConfig,
};
use kafka_protocol::messages::IncrementalAlterConfigsRequest;
use kafka_protocol::protocol::StrBytes;
use rustix::process::Signal;
use serde_json::Value;
use support::cluster::{wait_until, Cluster};
use support::java::java_harness;
use support::kafka::Conn;
use support::{cluster_client, run};

/// Session settings short enough for a test, and far above a Raft failover (about 1-2 s).
const FAST_SESSIONS: &[&str] = &[
    "broker.session.timeout.ms=4000",
    "broker.heartbeat.interval.ms=500",
];

fn describe(bootstrap: &str, topic: &str) -> Value {
    cluster_client(bootstrap, &["describe", topic])
}

/// Leader of each partition, from a description.
fn leaders(described: &Value) -> BTreeMap<String, i64> {
    let partitions = described["partitions"].as_object().expect("partitions");
    partitions
        .iter()
        .map(|(p, d)| (p.clone(), d["leader"].as_i64().expect("leader")))
        .collect()
}

/// IncrementalAlterConfigs SET of one key on a broker resource (`""`: the cluster default,
/// which confluent-kafka cannot name), sent to `broker`; the error code.
fn set_broker_config(broker: &support::Broker, resource: &str, key: &str, value: &str) -> i16 {
    let mut config = AlterableConfig::default();
    config.name = StrBytes::from_string(key.to_owned());
    config.value = Some(StrBytes::from_string(value.to_owned()));
    let mut altered = AlterConfigsResource::default();
    altered.resource_type = 4;
    altered.resource_name = StrBytes::from_string(resource.to_owned());
    altered.configs = vec![config];
    let mut request = IncrementalAlterConfigsRequest::default();
    request.resources = vec![altered];
    let mut conn = Conn::connect(broker.address);
    conn.call(1, &request).responses[0].error_code
}

fn brokers(described: &Value) -> Vec<i64> {
    let list = described["brokers"].as_array().expect("brokers");
    list.iter().map(|b| b.as_i64().expect("id")).collect()
}

#[test]
fn three_brokers_spread_leaders_and_every_client_follows_them() {
    let cluster = Cluster::start(3, &[]);
    let bootstrap = cluster.bootstrap();
    cluster_client(&bootstrap, &["create", "spread", "6", "3"]);
    let described = describe(&bootstrap, "spread");
    assert_eq!(brokers(&described), vec![0, 1, 2]);
    assert!((0..3).contains(&described["controller"].as_i64().expect("controller")));
    let partitions = described["partitions"].as_object().expect("partitions");
    assert_eq!(partitions.len(), 6);
    for (index, partition) in partitions {
        let replicas = partition["replicas"].as_array().expect("replicas");
        assert_eq!(replicas.len(), 3, "partition {index}: {partition}");
        assert_eq!(partition["isr"].as_array().map(Vec::len), Some(3));
        assert_eq!(partition["leader"], replicas[0], "the first replica leads");
    }
    let mut led = BTreeMap::new();
    for leader in leaders(&described).values() {
        *led.entry(*leader).or_insert(0) += 1;
    }
    assert_eq!(led, BTreeMap::from([(0, 2), (1, 2), (2, 2)]), "{described}");

    // confluent-kafka produces to and reads from every leader.
    let produced = cluster_client(&bootstrap, &["produce", "spread", "600"]);
    assert_eq!(produced["delivered"], 600);
    let read = cluster_client(&bootstrap, &["consume", "spread"]);
    assert_eq!(read["read"], 600, "{read}");

    // The Java client: an idempotent producer (acks=all) and a group of two consumers.
    cluster_client(&bootstrap, &["create", "java", "6", "3"]);
    let produced = java_harness(&bootstrap, "produce", &["java", "300", "lz4"]);
    assert!(produced.lines().any(|l| l == "acked 300"), "{produced}");
    let consumed = java_harness(
        &bootstrap,
        "consume-group",
        &["java", "java-group", "300", "2"],
    );
    assert!(consumed.lines().any(|l| l == "consumed 300"), "{consumed}");

    // DescribeQuorum, as kafka-metadata-quorum asks it through a broker.
    let quorum = java_harness(&bootstrap, "quorum", &[]);
    let controller = described["controller"].as_i64().expect("controller");
    assert!(
        quorum.starts_with(&format!("leader id={controller} ")),
        "{quorum}"
    );
    assert_eq!(
        quorum.lines().filter(|l| l.starts_with("voter ")).count(),
        3,
        "{quorum}"
    );

    // kcat, given only one broker, finds the others from Metadata.
    let one = cluster.node(1).address.to_string();
    let mut kcat_in = std::process::Command::new("kcat");
    kcat_in.args(["-b", &one, "-t", "spread", "-P", "-p", "-1", "-K:"]);
    kcat_in.stdin(std::process::Stdio::piped());
    let mut child = kcat_in.spawn().expect("kcat");
    {
        use std::io::Write;
        let stdin = child.stdin.as_mut().expect("stdin");
        for i in 0..60 {
            writeln!(stdin, "kcat{i}:value{i}").expect("write");
        }
    }
    drop(child.stdin.take());
    assert!(child.wait().expect("kcat").success());
    let consumed = run(std::process::Command::new("kcat").args([
        "-b",
        &one,
        "-t",
        "spread",
        "-C",
        "-e",
        "-o",
        "beginning",
        "-q",
        "-f",
        "%k\n",
    ]));
    let keys = String::from_utf8_lossy(&consumed);
    assert_eq!(keys.lines().count(), 660);
    assert_eq!(keys.lines().filter(|k| k.starts_with("kcat")).count(), 60);
}

/// The node whose controller is active, from Metadata.
fn active_controller(bootstrap: &str) -> usize {
    let described = describe(bootstrap, "none");
    described["controller"].as_u64().expect("a controller") as usize
}

#[test]
fn killing_the_active_controller_elects_another_and_keeps_the_metadata() {
    let mut cluster = Cluster::start(3, FAST_SESSIONS);
    let bootstrap = cluster.bootstrap();
    cluster_client(
        &bootstrap,
        &["create", "kept", "4", "3", "retention.ms=123456"],
    );
    let active = active_controller(&bootstrap);
    cluster.kill(active);
    let bootstrap = cluster.bootstrap();
    wait_until(
        Duration::from_secs(30),
        "another controller takes over",
        || {
            let now = describe(&bootstrap, "kept")["controller"].as_i64();
            now.is_some_and(|c| c >= 0 && c as usize != active)
        },
    );
    let quorum = java_harness(&bootstrap, "quorum", &[]);
    assert!(
        !quorum.starts_with(&format!("leader id={active} ")),
        "{quorum}"
    );
    let described = describe(&bootstrap, "kept");
    assert_eq!(
        described["partitions"].as_object().map(|p| p.len()),
        Some(4)
    );
    let configs = cluster_client(&bootstrap, &["configs", "kept"]);
    assert_eq!(configs["retention.ms"], "123456");

    // A new topic: every remaining broker serves it.
    cluster_client(&bootstrap, &["create", "after", "2", "2"]);
    for node in (0..3).filter(|n| *n != active) {
        let address = cluster.node(node).address.to_string();
        wait_until(
            Duration::from_secs(10),
            "each broker knows the topic",
            || {
                describe(&address, "after")["partitions"]
                    .as_object()
                    .map(|p| p.len())
                    == Some(2)
            },
        );
    }
    let produced = cluster_client(&bootstrap, &["produce", "after", "50"]);
    assert_eq!(produced["delivered"], 50);
    assert_eq!(
        cluster_client(&bootstrap, &["consume", "after"])["read"],
        50
    );
}

#[test]
fn a_broker_that_stops_heartbeating_is_fenced_and_its_partitions_get_new_leaders() {
    let cluster = Cluster::start(3, FAST_SESSIONS);
    let bootstrap = cluster.bootstrap();
    cluster_client(&bootstrap, &["create", "fenced", "6", "3"]);
    let active = active_controller(&bootstrap);
    let paused = (active + 1) % 3;
    let others: Vec<String> = (0..3)
        .filter(|n| *n != paused)
        .map(|n| cluster.node(n).address.to_string())
        .collect();
    let others = others.join(",");
    let before = leaders(&describe(&others, "fenced"));
    assert!(before.values().any(|l| *l == paused as i64));
    cluster.signal(paused, Signal::STOP);
    wait_until(
        Duration::from_secs(30),
        "the paused broker is fenced",
        || {
            let described = describe(&others, "fenced");
            let gone = !brokers(&described).contains(&(paused as i64));
            let moved = leaders(&described).values().all(|l| *l != paused as i64);
            gone && moved
        },
    );
    let after = describe(&others, "fenced");
    for (partition, leader) in leaders(&after) {
        assert!(leader >= 0, "partition {partition} has a leader: {after}");
        let isr = after["partitions"][&partition]["isr"]
            .as_array()
            .expect("isr");
        assert!(!isr.contains(&Value::from(paused as i64)), "{after}");
    }
    cluster.signal(paused, Signal::CONT);
    wait_until(
        Duration::from_secs(30),
        "the broker is back and unfenced",
        || brokers(&describe(&others, "fenced")).contains(&(paused as i64)),
    );
}

#[test]
fn a_whole_cluster_restart_keeps_topics_configs_and_committed_offsets() {
    // Stopping hands leaderships over (controlled shutdown); the preferred replicas take
    // them back after the restart, at the next imbalance check.
    let mut cluster = Cluster::start(3, &["leader.imbalance.check.interval.seconds=1"]);
    let bootstrap = cluster.bootstrap();
    cluster_client(
        &bootstrap,
        &["create", "durable", "3", "3", "retention.ms=7654321"],
    );
    assert_eq!(
        cluster_client(&bootstrap, &["produce", "durable", "90"])["delivered"],
        90
    );
    cluster_client(&bootstrap, &["commit", "keeper", "durable", "17"]);
    // Dynamic broker configs are metadata records: set through broker 0, a cluster default
    // reaches every broker and broker 2's own value reaches broker 2.
    let first = cluster.node(0);
    assert_eq!(
        set_broker_config(first, "", "log.retention.ms", "86400000"),
        0
    );
    assert_eq!(
        set_broker_config(first, "2", "num.replica.fetchers", "2"),
        0
    );
    let dynamic_configs_everywhere = |cluster: &Cluster| {
        let by_default = serde_json::json!(["86400000", "DYNAMIC_DEFAULT_BROKER_CONFIG"]);
        let own = serde_json::json!(["2", "DYNAMIC_BROKER_CONFIG"]);
        (0..3).all(|node| {
            let id = node.to_string();
            let seen = cluster_client(&cluster.node(node).bootstrap(), &["broker-configs", &id]);
            let fetchers = &seen["num.replica.fetchers"];
            seen["log.retention.ms"] == by_default
                && (if node == 2 {
                    *fetchers == own
                } else {
                    fetchers.is_null()
                })
        })
    };
    wait_until(
        Duration::from_secs(30),
        "every broker has the dynamic configs",
        || dynamic_configs_everywhere(&cluster),
    );
    let before = describe(&bootstrap, "durable");
    for node in 0..3 {
        cluster.stop(node);
    }
    cluster.restart(&[0, 1, 2]);
    let bootstrap = cluster.bootstrap();
    let configs = cluster_client(&bootstrap, &["configs", "durable"]);
    assert_eq!(configs["retention.ms"], "7654321");
    wait_until(
        Duration::from_secs(30),
        "the dynamic configs are in force after the restart",
        || dynamic_configs_everywhere(&cluster),
    );
    wait_until(
        Duration::from_secs(60),
        "the leaders before the restart lead again",
        || leaders(&describe(&bootstrap, "durable")) == leaders(&before),
    );
    assert_eq!(
        cluster_client(&bootstrap, &["consume", "durable"])["read"],
        90
    );
    let committed = cluster_client(&bootstrap, &["committed", "keeper", "durable"]);
    let offsets = committed["offsets"].as_object().expect("offsets");
    assert_eq!(offsets.len(), 3);
    assert!(offsets.values().all(|o| o == 17), "{committed}");
}

#[test]
fn a_replica_that_cannot_open_leaves_its_leadership_and_the_isr() {
    let mut cluster = Cluster::start(3, FAST_SESSIONS);
    let bootstrap = cluster.bootstrap();
    cluster_client(&bootstrap, &["create", "torn", "3", "3"]);
    cluster_client(&bootstrap, &["send", "torn", "0", "5", "all"]);
    let leader = leaders(&describe(&bootstrap, "torn"))["0"] as usize;
    cluster.stop(leader);
    // Its copy of partition 0 cannot be opened once it starts again.
    let log = cluster
        .data(leader)
        .join("torn-0")
        .join("00000000000000000000.log");
    std::fs::remove_file(&log).expect("remove the log");
    std::fs::create_dir(&log).expect("a directory in its place");
    cluster.restart(&[leader]);
    let bootstrap = cluster.bootstrap();
    let node = Value::from(leader as i64);
    wait_until(
        Duration::from_secs(30),
        "the broker is back, and out of partition 0 only",
        || {
            let described = describe(&bootstrap, "torn");
            let partitions = &described["partitions"];
            let back = brokers(&described).contains(&(leader as i64));
            let left = partitions["0"]["leader"] != node
                && !partitions["0"]["isr"]
                    .as_array()
                    .is_some_and(|isr| isr.contains(&node));
            let kept = ["1", "2"].iter().all(|p| {
                partitions[*p]["isr"]
                    .as_array()
                    .is_some_and(|isr| isr.contains(&node))
            });
            back && left && kept
        },
    );
    let sent = cluster_client(&bootstrap, &["send", "torn", "0", "5", "all"]);
    assert_eq!(sent["outcomes"], serde_json::json!({"0": 5}), "{sent}");
}
