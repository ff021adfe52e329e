//! Leaders on the move, with real brokers on loopback: a controlled shutdown hands leaderships
//! over before the broker exits, preferred replicas take them back (on their own and through
//! ElectLeaders), and a partition whose whole ISR is gone stays offline until an unclean
//! election is asked for.

mod support;

use std::collections::BTreeMap;
use std::time::Duration;

use rustix::process::Signal;
use serde_json::Value;
use support::cluster::{wait_until, Cluster};
use support::{cluster_client, Broker};

fn describe(bootstrap: &str, topic: &str) -> Value {
    cluster_client(bootstrap, &["describe", topic])
}

fn ids(value: &Value) -> Vec<i64> {
    let list = value.as_array().expect("a list of ids");
    list.iter().map(|v| v.as_i64().expect("id")).collect()
}

/// Per partition: (leader, replicas, ISR).
fn partitions(described: &Value) -> BTreeMap<String, (i64, Vec<i64>, Vec<i64>)> {
    let all = described["partitions"].as_object().expect("partitions");
    all.iter()
        .map(|(index, p)| {
            let leader = p["leader"].as_i64().expect("leader");
            (index.clone(), (leader, ids(&p["replicas"]), ids(&p["isr"])))
        })
        .collect()
}

fn preferred_lead(described: &Value) -> bool {
    let all = partitions(described);
    !all.is_empty()
        && all
            .values()
            .all(|(leader, replicas, _)| replicas[0] == *leader)
}

/// The client addresses of every running node but `skip`.
fn others(cluster: &Cluster, skip: usize) -> String {
    let running = (0..cluster.nodes.len()).filter(|n| *n != skip);
    let addresses: Vec<String> = running
        .filter_map(|n| cluster.nodes[n].as_ref())
        .map(|b| b.address.to_string())
        .collect();
    addresses.join(",")
}

#[test]
fn a_controlled_shutdown_hands_leaderships_over_and_the_preferred_leaders_return() {
    // Sessions far longer than the test: only a controlled shutdown can move leaderships
    // before the broker is gone.
    let mut cluster = Cluster::start(
        3,
        &[
            "broker.session.timeout.ms=120000",
            "broker.heartbeat.interval.ms=500",
            "min.insync.replicas=2",
            "leader.imbalance.check.interval.seconds=1",
        ],
    );
    let bootstrap = cluster.bootstrap();
    cluster_client(&bootstrap, &["create", "handover", "6", "3"]);
    wait_until(Duration::from_secs(30), "every replica is in sync", || {
        let described = describe(&bootstrap, "handover");
        let all = partitions(&described);
        all.len() == 6 && all.values().all(|(_, _, isr)| isr.len() == 3)
    });
    let leaving = 1;
    let before = partitions(&describe(&bootstrap, "handover"));
    assert!(before.values().any(|(l, _, _)| *l == leaving as i64));
    cluster.stop(leaving);
    let rest = others(&cluster, leaving);
    let after = describe(&rest, "handover");
    for (index, (leader, _, isr)) in partitions(&after) {
        assert!(
            leader >= 0 && leader != leaving as i64,
            "partition {index} moved: {after}"
        );
        assert!(!isr.contains(&(leaving as i64)), "{after}");
    }
    assert!(!ids(&after["brokers"]).contains(&(leaving as i64)));
    // Two replicas are still in sync: acks=all goes on.
    let produced = cluster_client(&rest, &["produce", "handover", "60"]);
    assert_eq!(produced["delivered"], 60, "{produced}");
    cluster.restart(&[leaving]);
    let bootstrap = cluster.bootstrap();
    wait_until(
        Duration::from_secs(60),
        "the preferred replicas lead again",
        || preferred_lead(&describe(&bootstrap, "handover")),
    );
    let read = cluster_client(&bootstrap, &["consume", "handover"]);
    assert_eq!(read["read"], 60, "{read}");
}

#[test]
fn elect_leaders_gives_leaderships_back_to_preferred_replicas() {
    let mut cluster = Cluster::start(
        3,
        &[
            "broker.session.timeout.ms=4000",
            "broker.heartbeat.interval.ms=500",
            "auto.leader.rebalance.enable=false",
        ],
    );
    let bootstrap = cluster.bootstrap();
    cluster_client(&bootstrap, &["create", "elect", "6", "3"]);
    let done = cluster_client(&bootstrap, &["elect", "preferred", "elect"]);
    let outcomes = done["partitions"].as_object().expect("outcomes");
    assert_eq!(outcomes.len(), 6, "{done}");
    assert!(
        outcomes.values().all(|e| e == "ELECTION_NOT_NEEDED"),
        "{done}"
    );
    cluster.stop(2);
    cluster.restart(&[2]);
    let bootstrap = cluster.bootstrap();
    wait_until(
        Duration::from_secs(30),
        "broker 2 is back in every ISR",
        || {
            let all = partitions(&describe(&bootstrap, "elect"));
            all.values().all(|(_, _, isr)| isr.contains(&2))
        },
    );
    let described = describe(&bootstrap, "elect");
    assert!(!preferred_lead(&described), "nothing moves back on its own");
    let moved_back: Vec<String> = partitions(&described)
        .into_iter()
        .filter(|(_, (leader, replicas, _))| replicas[0] != *leader)
        .map(|(index, _)| index)
        .collect();
    let done = cluster_client(&bootstrap, &["elect", "preferred", "elect"]);
    for (index, outcome) in done["partitions"].as_object().expect("outcomes") {
        let expected = if moved_back.contains(index) {
            "NONE"
        } else {
            "ELECTION_NOT_NEEDED"
        };
        assert_eq!(outcome, expected, "partition {index}: {done}");
    }
    wait_until(
        Duration::from_secs(30),
        "every broker applied the election",
        || preferred_lead(&describe(&bootstrap, "elect")),
    );
}

#[test]
fn a_partition_whose_isr_is_gone_stays_offline_until_an_unclean_election() {
    // Node 0 alone is the controller quorum, so pausing and killing the others never costs
    // the quorum.
    let mut cluster = Cluster::start_with_voters(
        3,
        1,
        &[
            "broker.session.timeout.ms=3000",
            "broker.heartbeat.interval.ms=500",
            "auto.leader.rebalance.enable=false",
        ],
    );
    let bootstrap = cluster.bootstrap();
    cluster_client(&bootstrap, &["create", "offline", "6", "2"]);
    let described = describe(&bootstrap, "offline");
    let (index, (leader, replicas, _)) = partitions(&described)
        .into_iter()
        .find(|(_, (_, replicas, _))| !replicas.contains(&0))
        .expect("a partition on nodes 1 and 2 only");
    let leader = leader as usize;
    let follower = replicas.iter().map(|r| *r as usize).find(|r| *r != leader);
    let follower = follower.expect("two replicas");
    let sent = cluster_client(&bootstrap, &["send", "offline", &index, "20", "all"]);
    assert_eq!(sent["outcomes"]["0"], 20, "{sent}");
    // The follower pauses and is fenced: the ISR is the leader alone, which then dies.
    cluster.signal(follower, Signal::STOP);
    let node0 = cluster.node(0).address.to_string();
    wait_until(
        Duration::from_secs(30),
        "the ISR shrinks to the leader",
        || {
            let all = partitions(&describe(&node0, "offline"));
            all[&index].2 == vec![leader as i64]
        },
    );
    let sent = cluster_client(&node0, &["send", "offline", &index, "5", "1"]);
    assert_eq!(
        sent["outcomes"]["0"], 5,
        "only the leader has these: {sent}"
    );
    cluster.kill(leader);
    cluster.signal(follower, Signal::CONT);
    wait_until(
        Duration::from_secs(30),
        "the follower is back and the leader fenced",
        || {
            let brokers = ids(&describe(&node0, "offline")["brokers"]);
            brokers.contains(&(follower as i64)) && !brokers.contains(&(leader as i64))
        },
    );
    let all = partitions(&describe(&node0, "offline"));
    assert_eq!(
        all[&index].0, -1,
        "no clean leader: the partition stays offline"
    );
    let scrape = cluster.node(0).scrape();
    assert!(
        Broker::metric(
            &scrape,
            "kafka_controller_kafkacontroller_offlinepartitionscount"
        ) >= 1
    );
    // The topic config is dynamic: the controller elects the stale follower at its next
    // look at leaderless partitions, and then ElectLeaders has nothing left to do.
    let key = "unclean.leader.election.enable";
    cluster_client(&node0, &["alter", "offline", key, "true"]);
    wait_until(
        Duration::from_secs(30),
        "the follower leads, uncleanly",
        || partitions(&describe(&node0, "offline"))[&index].0 == follower as i64,
    );
    let done = cluster_client(&node0, &["elect", "unclean", "offline"]);
    assert_eq!(done["partitions"][&index], "ELECTION_NOT_NEEDED", "{done}");
    let scrape = cluster.node(0).scrape();
    let unclean = "kafka_controller_controllerstats_uncleanleaderelectionspersec_total";
    assert!(Broker::metric(&scrape, unclean) >= 1);
    // What only the dead leader had is gone; the 20 acknowledged by both are there.
    let read = cluster_client(&node0, &["consume", "offline", &index]);
    assert_eq!(read["read"], 20, "{read}");
}
