//! Replication between three real brokers on loopback: followers copy their leaders byte for
//! byte, the ISR shrinks when a follower stops and grows when it comes back, acks=all holds to
//! min.insync.replicas, consumers see nothing above the high watermark, and a follower whose
//! log went further than its new leader's truncates to the leader's (KIP-101).
//!
//! Node 0 alone is the controller quorum here, so pausing the other brokers never stops the
//! controller that changes their ISRs.

mod support;

use std::path::PathBuf;
use std::time::Duration;

use rustix::process::Signal;
use serde_json::Value;
use support::cluster::{wait_until, Cluster};
use support::{cluster_client, Broker};

fn partition(described: &Value, index: usize) -> &Value {
    &described["partitions"][index.to_string()]
}

fn ids(value: &Value) -> Vec<i64> {
    let list = value.as_array().expect("a list of ids");
    let mut out: Vec<i64> = list.iter().map(|v| v.as_i64().expect("id")).collect();
    out.sort_unstable();
    out
}

fn isr(bootstrap: &str, topic: &str, index: usize) -> Vec<i64> {
    ids(&partition(&cluster_client(bootstrap, &["describe", topic]), index)["isr"])
}

/// The index of the first partition whose replicas satisfy `fits`, with those replicas.
fn find_partition(described: &Value, fits: impl Fn(&[i64]) -> bool) -> (usize, Vec<i64>) {
    let partitions = described["partitions"].as_object().expect("partitions");
    for (index, p) in partitions {
        let replicas: Vec<i64> = p["replicas"]
            .as_array()
            .expect("replicas")
            .iter()
            .map(|v| v.as_i64().expect("id"))
            .collect();
        if fits(&replicas) {
            return (index.parse().expect("index"), replicas);
        }
    }
    panic!("no partition fits: {described}");
}

fn segment(cluster: &Cluster, node: usize, topic: &str, index: usize) -> PathBuf {
    cluster
        .data(node)
        .join(format!("{topic}-{index}"))
        .join("00000000000000000000.log")
}

fn segment_len(cluster: &Cluster, node: usize, topic: &str, index: usize) -> u64 {
    std::fs::metadata(segment(cluster, node, topic, index)).map_or(0, |m| m.len())
}

fn sent(bootstrap: &str, topic: &str, index: usize, count: usize, acks: &str) -> Value {
    let index = index.to_string();
    let count = count.to_string();
    cluster_client(bootstrap, &["send", topic, &index, &count, acks])["outcomes"].clone()
}

#[test]
fn the_isr_follows_its_followers_and_acks_all_holds_to_min_insync() {
    let mut cluster = Cluster::start_with_voters(
        3,
        1,
        &[
            "replica.lag.time.max.ms=3000",
            "broker.session.timeout.ms=60000",
            // Followers copy through connections with a fixed receive buffer.
            "replica.socket.receive.buffer.bytes=131072",
        ],
    );
    let bootstrap = cluster.bootstrap();
    let created = ["create", "rep", "3", "3", "min.insync.replicas=2"];
    cluster_client(&bootstrap, &created);
    let described = cluster_client(&bootstrap, &["describe", "rep"]);
    // The partition led by node 0, the controller, whose followers can both be paused.
    let (p, replicas) = find_partition(&described, |r| r[0] == 0);
    let (one, two) = (replicas[1] as usize, replicas[2] as usize);
    let leader = cluster.node(0).address.to_string();

    assert_eq!(
        sent(&leader, "rep", p, 100, "all"),
        serde_json::json!({"0": 100})
    );

    // A follower stops: it leaves the ISR, and acks=all goes on with the two left.
    cluster.signal(one, Signal::STOP);
    wait_until(
        Duration::from_secs(30),
        "the stopped follower leaves the ISR",
        || !isr(&leader, "rep", p).contains(&(one as i64)),
    );
    assert_eq!(
        sent(&leader, "rep", p, 100, "all"),
        serde_json::json!({"0": 100})
    );
    let scraped = cluster.node(0).scrape();
    let metric = |name: &str| Broker::metric(&scraped, name);
    assert!(metric("kafka_server_replicamanager_underreplicatedpartitions") >= 1);
    assert!(metric("kafka_server_replicamanager_isrshrinks_total") >= 1);
    let lag = format!(
        "sluice_partition_follower_lag{{topic=\"rep\",partition=\"{p}\",follower=\"{one}\"}}"
    );
    assert!(
        metric(&lag) >= 100,
        "the stopped follower lags by what it missed"
    );

    // It comes back, catches up and rejoins.
    cluster.signal(one, Signal::CONT);
    wait_until(
        Duration::from_secs(30),
        "the follower rejoins the ISR",
        || isr(&leader, "rep", p).len() == 3,
    );
    let scraped = cluster.node(0).scrape();
    assert!(Broker::metric(&scraped, "kafka_server_replicamanager_isrexpands_total") >= 1);

    // Both followers stop. Until the ISR shrinks, an acks=1 write is not committed, so no
    // consumer sees it.
    cluster.signal(one, Signal::STOP);
    cluster.signal(two, Signal::STOP);
    assert_eq!(
        sent(&leader, "rep", p, 10, "1"),
        serde_json::json!({"0": 10})
    );
    let read = cluster_client(&leader, &["consume", "rep", &p.to_string()]);
    assert_eq!(read["per_partition"][p.to_string()], 200, "{read}");
    wait_until(
        Duration::from_secs(30),
        "the ISR shrinks to the leader",
        || isr(&leader, "rep", p) == vec![0],
    );
    let scraped = cluster.node(0).scrape();
    let under_min = "kafka_server_replicamanager_underminisrpartitioncount";
    assert!(Broker::metric(&scraped, under_min) >= 1);
    // NOT_ENOUGH_REPLICAS (19) for acks=all; acks=1 still works.
    assert_eq!(
        sent(&leader, "rep", p, 5, "all"),
        serde_json::json!({"19": 5})
    );
    assert_eq!(sent(&leader, "rep", p, 5, "1"), serde_json::json!({"0": 5}));
    let read = cluster_client(&leader, &["consume", "rep", &p.to_string()]);
    assert_eq!(read["per_partition"][p.to_string()], 215, "{read}");

    cluster.signal(one, Signal::CONT);
    cluster.signal(two, Signal::CONT);
    wait_until(Duration::from_secs(30), "both followers rejoin", || {
        isr(&leader, "rep", p).len() == 3
    });
    let total = |node: usize| segment_len(&cluster, node, "rep", p);
    wait_until(Duration::from_secs(30), "followers hold all of it", || {
        total(one) == total(0) && total(two) == total(0)
    });
    for node in [1, 2, 0] {
        cluster.stop(node);
    }
    let leader_bytes = std::fs::read(segment(&cluster, 0, "rep", p)).expect("segment");
    for follower in [one, two] {
        let bytes = std::fs::read(segment(&cluster, follower, "rep", p)).expect("segment");
        assert!(
            bytes == leader_bytes,
            "node {follower}'s copy differs from the leader's"
        );
    }
}

/// KIP-101: followers copy a write the next leader never got; the leader dies; the next
/// leader writes at that offset; the follower takes the new leader's record, not its own.
#[test]
fn a_follower_ahead_of_its_new_leader_truncates_to_it() {
    // Followers' fetches are answered at once rather than parked: a follower paused while its
    // fetch waits at the leader would otherwise get the next writes when it wakes.
    let mut cluster = Cluster::start_with_voters(
        3,
        1,
        &[
            "broker.session.timeout.ms=4000",
            "broker.heartbeat.interval.ms=500",
            "replica.fetch.wait.max.ms=0",
        ],
    );
    let bootstrap = cluster.bootstrap();
    cluster_client(&bootstrap, &["create", "kip101", "3", "3"]);
    let described = cluster_client(&bootstrap, &["describe", "kip101"]);
    // Replicas [L, A, 0]: L leads, A is next in line, node 0 (the controller) follows.
    let (p, replicas) = find_partition(&described, |r| r[2] == 0);
    let (old, next) = (replicas[0] as usize, replicas[1] as usize);
    let addresses: Vec<String> = (0..3)
        .map(|n| cluster.node(n).address.to_string())
        .collect();
    let address = |node: usize| addresses[node].clone();

    assert_eq!(
        sent(&address(old), "kip101", p, 20, "all"),
        serde_json::json!({"0": 20})
    );
    // A pauses; the leader takes acks=1 writes that only node 0 copies.
    cluster.signal(next, Signal::STOP);
    assert_eq!(
        sent(&address(old), "kip101", p, 5, "1"),
        serde_json::json!({"0": 5})
    );
    wait_until(Duration::from_secs(20), "node 0 copies the writes", || {
        segment_len(&cluster, 0, "kip101", p) == segment_len(&cluster, old, "kip101", p)
    });
    let ahead = segment_len(&cluster, 0, "kip101", p);
    cluster.kill(old);
    cluster.signal(next, Signal::CONT);
    let survivors = format!("{},{}", address(next), address(0));
    wait_until(Duration::from_secs(30), "A takes over", || {
        let described = cluster_client(&survivors, &["describe", "kip101"]);
        partition(&described, p)["leader"] == next as i64
    });
    assert_eq!(
        sent(&address(next), "kip101", p, 3, "all"),
        serde_json::json!({"0": 3})
    );
    let same = || segment_len(&cluster, 0, "kip101", p) == segment_len(&cluster, next, "kip101", p);
    wait_until(
        Duration::from_secs(30),
        "node 0 follows the new leader",
        same,
    );
    assert!(ahead > 0);
    let read = cluster_client(&survivors, &["consume", "kip101", &p.to_string()]);
    assert_eq!(read["per_partition"][p.to_string()], 23, "{read}");
    cluster.stop(0);
    cluster.stop(next);
    let kept = std::fs::read(segment(&cluster, 0, "kip101", p)).expect("segment");
    let leader = std::fs::read(segment(&cluster, next, "kip101", p)).expect("segment");
    assert!(
        kept == leader,
        "node 0 keeps records the new leader does not have"
    );
}
