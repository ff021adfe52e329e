//! The operator subcommands (`sluice topic`, `cluster`, `config`, `group`, `leader-election`,
//! `produce`, `consume`) run as processes against real brokers: what their `--json` output
//! says after each change, what a Kafka error looks like (its name, what to do, a non-zero
//! exit), and the log end offset running ahead of the high watermark while a follower stalls.

mod support;

use std::io::Write;
use std::process::{Command, Output, Stdio};
use std::time::Duration;

use bytes::{BufMut, Bytes, BytesMut};
use kafka_protocol::messages::*;
use kafka_protocol::protocol::{Encodable, StrBytes};
use rustix::process::Signal;
use serde_json::Value;
use support::cluster::{wait_until, Cluster};
use support::kafka::Conn;
use support::Broker;

/// How long a test waits for the cluster to reach a state.
const DEADLINE: Duration = Duration::from_secs(60);
/// Each request of a subcommand gives up after this long, so a stuck broker fails the test
/// rather than hanging it.
const REQUEST_TIMEOUT_MS: &str = "20000";

/// What one run of `sluice` printed and how it ended.
struct Ran {
    success: bool,
    stdout: String,
    stderr: String,
}

fn ran(output: Output) -> Ran {
    Ran {
        success: output.status.success(),
        stdout: String::from_utf8_lossy(&output.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&output.stderr).into_owned(),
    }
}

fn command(bootstrap: &str, args: &[&str]) -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_sluice"));
    command.args(args).args(["--bootstrap-server", bootstrap]);
    if !args.contains(&"--timeout-ms") {
        command.args(["--timeout-ms", REQUEST_TIMEOUT_MS]);
    }
    command
}

fn sluice(bootstrap: &str, args: &[&str]) -> Ran {
    let mut command = command(bootstrap, args);
    ran(command
        .output()
        .unwrap_or_else(|e| panic!("cannot run sluice {args:?}: {e}")))
}

/// `sluice ARGS --json`, which must succeed; its output parsed.
fn json(bootstrap: &str, args: &[&str]) -> Value {
    let mut with_json = args.to_vec();
    with_json.push("--json");
    let out = sluice(bootstrap, &with_json);
    assert!(
        out.success,
        "sluice {args:?} failed:\n{}{}",
        out.stdout, out.stderr
    );
    serde_json::from_str(&out.stdout)
        .unwrap_or_else(|e| panic!("sluice {args:?} printed no JSON ({e}): {}", out.stdout))
}

/// `sluice ARGS`, which must fail naming `error` and saying what to do; its stderr.
fn fails(bootstrap: &str, args: &[&str], error: &str) -> String {
    let out = sluice(bootstrap, args);
    assert!(!out.success, "sluice {args:?} succeeded:\n{}", out.stdout);
    assert!(
        out.stderr.contains(error) && out.stderr.contains("what to do:"),
        "sluice {args:?} should name {error} and what to do:\n{}",
        out.stderr
    );
    out.stderr
}

/// `sluice produce ARGS` with `lines` on stdin; its JSON summary.
fn produce(bootstrap: &str, args: &[&str], lines: &[&str]) -> Value {
    let mut all = vec!["produce"];
    all.extend_from_slice(args);
    all.push("--json");
    let mut child = command(bootstrap, &all)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn sluice produce");
    let mut stdin = child.stdin.take().expect("stdin");
    for line in lines {
        writeln!(stdin, "{line}").expect("write a line");
    }
    drop(stdin);
    let out = ran(child.wait_with_output().expect("sluice produce ends"));
    assert!(
        out.success,
        "sluice produce {args:?} failed:\n{}",
        out.stderr
    );
    serde_json::from_str(&out.stdout).expect("produce prints JSON")
}

/// The described partitions of one topic, by partition number.
/// The described partitions of one topic; none when a filter left the topic out.
fn partitions(described: &Value, topic: &str) -> Vec<Value> {
    let topics = described["topics"].as_array().expect("topics");
    let found = topics.iter().find(|t| t["name"] == topic);
    found.map_or_else(Vec::new, |t| {
        t["partitions"].as_array().expect("partitions").clone()
    })
}

fn ids(value: &Value) -> Vec<i64> {
    let list = value.as_array().expect("a list of ids");
    list.iter().map(|v| v.as_i64().expect("an id")).collect()
}

fn topic_names(listed: &Value) -> Vec<String> {
    let topics = listed["topics"].as_array().expect("topics");
    let names = topics.iter().map(|t| t["name"].as_str().expect("name"));
    names.map(str::to_owned).collect()
}

#[test]
fn topics_are_created_described_altered_and_deleted() {
    let broker = Broker::start(&["sluice.reactors=2"]);
    let bootstrap = broker.bootstrap();
    let b = bootstrap.as_str();
    let created = json(
        b,
        &[
            "topic",
            "create",
            "orders",
            "--partitions",
            "3",
            "--replication-factor",
            "1",
            "--config",
            "retention.ms=3600000",
        ],
    );
    assert_eq!(created["partitions"], 3, "{created}");
    fails(b, &["topic", "create", "orders"], "TOPIC_ALREADY_EXISTS");

    let listed = json(b, &["topic", "list"]);
    assert!(
        topic_names(&listed).contains(&"orders".to_owned()),
        "{listed}"
    );

    produce(
        b,
        &["orders", "--partition", "1"],
        &["a", "b", "c", "d", "e"],
    );
    let described = json(b, &["topic", "describe", "orders"]);
    let orders = partitions(&described, "orders");
    assert_eq!(orders.len(), 3, "{described}");
    for p in &orders {
        let written = if p["partition"] == 1 { 5 } else { 0 };
        assert_eq!(p["leader"], 0, "{p}");
        assert_eq!(ids(&p["replicas"]), vec![0]);
        assert_eq!(ids(&p["isr"]), vec![0]);
        assert_eq!(p["log_start_offset"], 0, "{p}");
        assert_eq!(p["high_watermark"], written, "{p}");
        assert_eq!(p["log_end_offset"], written, "{p}");
        assert!(p["leader_epoch"].as_i64().is_some_and(|e| e >= 0), "{p}");
    }
    let table = sluice(b, &["topic", "describe", "orders"]);
    assert!(
        table.success && table.stdout.contains("HIGH-WATERMARK"),
        "{}",
        table.stdout
    );

    fails(
        b,
        &["topic", "describe", "no-such-topic"],
        "UNKNOWN_TOPIC_OR_PARTITION",
    );
    // With --json the error is one JSON object on stderr, for scripts.
    let out = sluice(b, &["topic", "describe", "no-such-topic", "--json"]);
    assert!(!out.success && out.stdout.is_empty(), "{}", out.stdout);
    let error: Value = serde_json::from_str(out.stderr.trim()).expect("a JSON error");
    assert_eq!(error["error"], "UNKNOWN_TOPIC_OR_PARTITION", "{error}");
    assert!(error["what_to_do"].is_string(), "{error}");

    let retention = |b: &str| {
        let described = json(
            b,
            &[
                "config",
                "describe",
                "--topic",
                "orders",
                "--key",
                "retention.ms",
            ],
        );
        let config = described["configs"][0].clone();
        (config["value"].clone(), config["source"].clone())
    };
    assert_eq!(
        retention(b),
        ("3600000".into(), "DYNAMIC_TOPIC_CONFIG".into())
    );
    json(
        b,
        &[
            "topic",
            "alter-config",
            "orders",
            "--set",
            "retention.ms=1000",
        ],
    );
    assert_eq!(retention(b), ("1000".into(), "DYNAMIC_TOPIC_CONFIG".into()));
    json(
        b,
        &[
            "topic",
            "alter-config",
            "orders",
            "--delete",
            "retention.ms",
        ],
    );
    assert_ne!(retention(b).1, "DYNAMIC_TOPIC_CONFIG");
    fails(
        b,
        &[
            "topic",
            "alter-config",
            "orders",
            "--set",
            "no.such.config=1",
        ],
        "INVALID_CONFIG",
    );

    let deleted = json(b, &["topic", "delete", "orders"]);
    assert_eq!(deleted["topics"][0]["result"], "deleted", "{deleted}");
    wait_until(DEADLINE, "orders leaves the topic list", || {
        !topic_names(&json(b, &["topic", "list"])).contains(&"orders".to_owned())
    });
    fails(
        b,
        &["topic", "delete", "orders"],
        "UNKNOWN_TOPIC_OR_PARTITION",
    );
}

#[test]
fn broker_and_cluster_default_configs_change_and_come_back() {
    let broker = Broker::start(&["sluice.reactors=2"]);
    let bootstrap = broker.bootstrap();
    let b = bootstrap.as_str();
    let config = |args: &[&str], key: &str| {
        let mut all = vec!["config", "describe"];
        all.extend_from_slice(args);
        all.extend_from_slice(&["--key", key]);
        let described = json(b, &all);
        let found = described["configs"].as_array().expect("configs");
        let found = found.iter().find(|c| c["name"] == key).cloned();
        found.map(|c| (c["value"].clone(), c["source"].clone()))
    };
    json(
        b,
        &["config", "set", "--broker", "0", "log.retention.ms=7200000"],
    );
    assert_eq!(
        config(&["--broker", "0"], "log.retention.ms"),
        Some(("7200000".into(), "DYNAMIC_BROKER_CONFIG".into()))
    );
    json(
        b,
        &[
            "config",
            "set",
            "--broker-default",
            "log.retention.bytes=1048576",
        ],
    );
    assert_eq!(
        config(&["--broker-default"], "log.retention.bytes"),
        Some(("1048576".into(), "DYNAMIC_DEFAULT_BROKER_CONFIG".into()))
    );
    json(
        b,
        &["config", "delete", "--broker", "0", "log.retention.ms"],
    );
    let (_, source) = config(&["--broker", "0"], "log.retention.ms").expect("still described");
    assert_ne!(source, "DYNAMIC_BROKER_CONFIG");
    // Only one resource at a time, and a broker that is not in the cluster is named.
    let both = sluice(b, &["config", "describe", "--broker", "0", "--topic", "x"]);
    assert!(!both.success);
    fails(b, &["config", "describe", "--broker", "7"], "broker 7");
}

/// Three brokers: replicas and ISR as described, the quorum and the partition counts, the
/// log end ahead of the high watermark while a follower is paused, the filters and an
/// offline partition after a broker stops, and a preferred election once it is back.
#[test]
fn a_three_broker_cluster_is_described_and_its_filters_find_trouble() {
    let mut cluster = Cluster::start(
        3,
        &[
            // A paused broker keeps its place in the ISR and in the cluster meanwhile.
            "replica.lag.time.max.ms=120000",
            "broker.session.timeout.ms=120000",
            // Leadership goes back to node 2 only when the test asks for it.
            "auto.leader.rebalance.enable=false",
        ],
    );
    let bootstrap = cluster.node(0).bootstrap();
    let b = bootstrap.as_str();
    let create = ["topic", "create", "rep", "--partitions", "3"];
    let settings = [
        "--replication-factor",
        "3",
        "--config",
        "min.insync.replicas=2",
    ];
    json(b, &[&create[..], &settings[..]].concat());
    wait_until(DEADLINE, "every replica of rep is in the ISR", || {
        let described = json(b, &["topic", "describe", "rep"]);
        partitions(&described, "rep").iter().all(|p| {
            ids(&p["replicas"]).len() == 3 && ids(&p["isr"]).len() == 3 && p["error"].is_null()
        })
    });
    let described = json(b, &["topic", "describe", "rep"]);
    let rep = &described["topics"][0];
    assert_eq!(rep["min_insync_replicas"], 2, "{described}");
    assert_eq!(rep["replication_factor"], 3, "{described}");
    cluster_info_names_brokers_and_quorum(b);
    let elected = json(b, &["leader-election", "--preferred", "--topic", "rep"]);
    let results = elected["partitions"].as_array().expect("partitions");
    assert_eq!(results.len(), 3, "{elected}");
    assert!(
        results.iter().all(|r| r["result"] == "ELECTION_NOT_NEEDED"),
        "{elected}"
    );
    log_end_runs_ahead_while_a_follower_is_paused(&cluster, b, &described);
    stopped_broker_shows_in_the_filters(&mut cluster, b);
    restarted_broker_leads_after_a_preferred_election(&mut cluster, b);
    groups_are_found_at_their_coordinator(b);
}

fn cluster_info_names_brokers_and_quorum(b: &str) {
    let info = json(b, &["cluster", "info"]);
    let brokers: Vec<i64> = info["brokers"]
        .as_array()
        .expect("brokers")
        .iter()
        .map(|b| b["id"].as_i64().expect("id"))
        .collect();
    assert_eq!(brokers, vec![0, 1, 2], "{info}");
    assert!((0..3).contains(&info["controller"].as_i64().expect("a controller")));
    assert_eq!(info["partitions"]["offline"], 0, "{info}");
    assert!(info["partitions"]["total"].as_i64() >= Some(3), "{info}");
    let voters = info["quorum"]["voters"].as_array().expect("the voters");
    assert_eq!(voters.len(), 3, "{info}");
    assert!((0..3).contains(&info["quorum"]["leader"].as_i64().expect("a quorum leader")));
    // A broker's own configs are asked of that broker, which refuses another's id.
    for id in ["1", "2"] {
        let args = [
            "config",
            "describe",
            "--broker",
            id,
            "--key",
            "num.replica.fetchers",
        ];
        let described = json(b, &args);
        assert_eq!(
            described["configs"][0]["name"], "num.replica.fetchers",
            "{described}"
        );
    }
}

/// A group's offsets committed and read where FindCoordinator says, which in a cluster is
/// any of the brokers, and listed once however many brokers are asked.
fn groups_are_found_at_their_coordinator(b: &str) {
    let reset = ["group", "reset-offsets", "--group", "ops", "--topic", "rep"];
    // The first group use creates __consumer_offsets; until its leaders are in place the
    // coordinator is not available, so the commit is retried.
    wait_until(DEADLINE, "offsets are committed for group ops", || {
        sluice(b, &[&reset[..], &["--to-latest", "--execute"]].concat()).success
    });
    let described = json(b, &["group", "describe", "--group", "ops"]);
    assert_eq!(described["state"], "Empty", "{described}");
    let topic = json(b, &["topic", "describe", "rep"]);
    for p in partitions(&topic, "rep") {
        let committed = described["partitions"]
            .as_array()
            .expect("partitions")
            .iter()
            .find(|c| c["partition"] == p["partition"])
            .map(|c| (c["committed_offset"].clone(), c["lag"].clone()));
        assert_eq!(
            committed,
            Some((p["high_watermark"].clone(), 0.into())),
            "{described}"
        );
    }
    let listed = json(b, &["group", "list"]);
    let groups = listed["groups"].as_array().expect("groups");
    assert_eq!(
        groups.iter().filter(|g| g["group"] == "ops").count(),
        1,
        "{listed}"
    );
}

/// Pauses node 2 and writes with acks=1 to a partition it follows: the leader's log end
/// moves, the high watermark waits for node 2 until it runs again.
fn log_end_runs_ahead_while_a_follower_is_paused(cluster: &Cluster, b: &str, described: &Value) {
    let partition = partitions(described, "rep")
        .into_iter()
        .find(|p| p["leader"] != 2)
        .expect("a partition node 2 does not lead");
    let index = partition["partition"].to_string();
    let leader = partition["leader"].as_u64().expect("leader") as usize;
    let before = partition["log_end_offset"].as_i64().expect("log end");
    let this_one = |described: &Value| {
        let all = partitions(described, "rep").into_iter();
        let mut found = all.filter(|p| p["partition"] == partition["partition"]);
        found.next().expect("the partition")
    };
    cluster.signal(2, Signal::STOP);
    let leader_address = cluster.node(leader).bootstrap();
    let to_partition = ["rep", "--partition", &index, "--acks", "1"];
    produce(&leader_address, &to_partition, &["one", "two", "three"]);
    // Node 2 does not answer meanwhile, so its own partitions show an error, quickly.
    let describe = ["topic", "describe", "rep", "--timeout-ms", "3000"];
    let stalled = this_one(&json(&leader_address, &describe));
    assert_eq!(stalled["log_end_offset"], before + 3, "{stalled}");
    assert_eq!(stalled["high_watermark"], before, "{stalled}");
    cluster.signal(2, Signal::CONT);
    wait_until(DEADLINE, "the high watermark catches up", || {
        this_one(&json(b, &["topic", "describe", "rep"]))["high_watermark"] == before + 3
    });
}

/// Stops node 2: rep's partitions are under-replicated (and under min.insync.replicas once
/// it is raised to 3), and the partition of a one-replica topic on node 2 is offline.
fn stopped_broker_shows_in_the_filters(cluster: &mut Cluster, b: &str) {
    let all_under = json(b, &["topic", "describe", "--under-replicated-partitions"]);
    assert!(
        all_under["topics"].as_array().is_some_and(Vec::is_empty),
        "{all_under}"
    );
    let create = ["topic", "create", "single", "--partitions", "3"];
    json(b, &[&create[..], &["--replication-factor", "1"]].concat());
    let on_2 = |described: &Value| -> Vec<Value> {
        let all = partitions(described, "single").into_iter();
        all.filter(|p| ids(&p["replicas"]) == [2]).collect()
    };
    wait_until(DEADLINE, "single has a leader for every partition", || {
        let described = json(b, &["topic", "describe", "single"]);
        let all = partitions(&described, "single");
        all.iter().all(|p| p["error"].is_null())
    });
    let described = json(b, &["topic", "describe", "single"]);
    assert_eq!(on_2(&described).len(), 1, "{described}");

    cluster.stop(2);
    let under_replicated = ["topic", "describe", "rep", "--under-replicated-partitions"];
    wait_until(DEADLINE, "rep's partitions are under-replicated", || {
        partitions(&json(b, &under_replicated), "rep").len() == 3
    });
    for p in partitions(&json(b, &under_replicated), "rep") {
        assert_eq!(ids(&p["isr"]).len(), 2, "{p}");
        assert!(!ids(&p["isr"]).contains(&2), "{p}");
    }
    // Two in sync meets min.insync.replicas=2; raising it to 3 puts every partition under.
    let under_min = ["topic", "describe", "rep", "--under-min-isr-partitions"];
    let none = json(b, &under_min);
    assert!(
        none["topics"].as_array().is_some_and(Vec::is_empty),
        "{none}"
    );
    json(
        b,
        &[
            "topic",
            "alter-config",
            "rep",
            "--set",
            "min.insync.replicas=3",
        ],
    );
    assert_eq!(partitions(&json(b, &under_min), "rep").len(), 3);

    wait_until(DEADLINE, "the partition on node 2 is offline", || {
        json(b, &["cluster", "info"])["partitions"]["offline"] == 1
    });
    let info = json(b, &["cluster", "info"]);
    assert_eq!(info["brokers"].as_array().map(Vec::len), Some(2), "{info}");
    let under = info["partitions"]["under_replicated"].as_i64();
    assert!(under >= Some(3), "{info}");
    let offline = on_2(&json(b, &["topic", "describe", "single"])).remove(0);
    assert!(offline["leader"].is_null(), "{offline}");
    assert_eq!(offline["error"], "LEADER_NOT_AVAILABLE", "{offline}");
}

/// Node 2 comes back in sync but leads none of rep's partitions until a preferred election
/// gives it those it is the first replica of.
fn restarted_broker_leads_after_a_preferred_election(cluster: &mut Cluster, b: &str) {
    cluster.restart(&[2]);
    wait_until(DEADLINE, "no partition is offline", || {
        json(b, &["cluster", "info"])["partitions"]["offline"] == 0
    });
    wait_until(DEADLINE, "node 2 is back in every ISR of rep", || {
        let described = json(b, &["topic", "describe", "rep"]);
        let all = partitions(&described, "rep");
        all.iter().all(|p| ids(&p["isr"]).len() == 3)
    });
    let described = json(b, &["topic", "describe", "rep"]);
    let preferring_2: Vec<Value> = partitions(&described, "rep")
        .into_iter()
        .filter(|p| ids(&p["replicas"])[0] == 2)
        .map(|p| p["partition"].clone())
        .collect();
    assert!(!preferring_2.is_empty(), "{described}");
    let elected = json(b, &["leader-election", "--preferred", "--topic", "rep"]);
    for result in elected["partitions"].as_array().expect("partitions") {
        let expected = if preferring_2.contains(&result["partition"]) {
            "elected"
        } else {
            "ELECTION_NOT_NEEDED"
        };
        assert_eq!(result["result"], expected, "{elected}");
    }
    for p in partitions(&json(b, &["topic", "describe", "rep"]), "rep") {
        assert_eq!(p["leader"], ids(&p["replicas"])[0], "{p}");
    }
}

fn s(text: &str) -> StrBytes {
    StrBytes::from_string(text.to_owned())
}

/// Consumer-protocol bytes (a version prefix, then the body) of a subscription or an
/// assignment.
fn consumer_protocol<M: Encodable>(message: &M) -> Bytes {
    let mut out = BytesMut::new();
    out.put_i16(0);
    message.encode(&mut out, 0).expect("encodes");
    out.freeze()
}

/// A consumer that joins `group` alone, takes every partition of `topic`, and commits
/// `offsets`; its member id.
fn join_and_commit(conn: &mut Conn, group: &str, topic: &str, offsets: &[(i32, i64)]) -> String {
    let mut subscription = ConsumerProtocolSubscription::default();
    subscription.topics = vec![s(topic)];
    let mut protocol = join_group_request::JoinGroupRequestProtocol::default();
    protocol.name = s("range");
    protocol.metadata = consumer_protocol(&subscription);
    let mut join = JoinGroupRequest::default();
    join.group_id = GroupId(s(group));
    join.session_timeout_ms = 60_000;
    join.rebalance_timeout_ms = 60_000;
    join.protocol_type = s("consumer");
    join.protocols = vec![protocol];
    // KIP-394: the first join is answered with the member id to join with.
    let first: JoinGroupResponse = conn.call(5, &join);
    join.member_id = first.member_id.clone();
    let joined: JoinGroupResponse = conn.call(5, &join);
    assert_eq!(joined.error_code, 0, "{joined:?}");
    let member = joined.member_id.to_string();

    let mut assigned = consumer_protocol_assignment::TopicPartition::default();
    assigned.topic = TopicName(s(topic));
    assigned.partitions = offsets.iter().map(|(p, _)| *p).collect();
    let mut assignment = ConsumerProtocolAssignment::default();
    assignment.assigned_partitions = vec![assigned];
    let mut given = sync_group_request::SyncGroupRequestAssignment::default();
    given.member_id = s(&member);
    given.assignment = consumer_protocol(&assignment);
    let mut sync = SyncGroupRequest::default();
    sync.group_id = GroupId(s(group));
    sync.generation_id = joined.generation_id;
    sync.member_id = s(&member);
    sync.assignments = vec![given];
    let synced: SyncGroupResponse = conn.call(3, &sync);
    assert_eq!(synced.error_code, 0, "{synced:?}");

    let mut commit = OffsetCommitRequest::default();
    commit.group_id = GroupId(s(group));
    commit.generation_id_or_member_epoch = joined.generation_id;
    commit.member_id = s(&member);
    let mut committed = offset_commit_request::OffsetCommitRequestTopic::default();
    committed.name = TopicName(s(topic));
    for &(partition, offset) in offsets {
        let mut p = offset_commit_request::OffsetCommitRequestPartition::default();
        p.partition_index = partition;
        p.committed_offset = offset;
        committed.partitions.push(p);
    }
    commit.topics = vec![committed];
    let answer: OffsetCommitResponse = conn.call(8, &commit);
    let errors = answer.topics.iter().flat_map(|t| &t.partitions);
    assert!(errors.into_iter().all(|p| p.error_code == 0), "{answer:?}");
    member
}

fn leave(conn: &mut Conn, group: &str, member: &str) {
    let mut leaving = leave_group_request::MemberIdentity::default();
    leaving.member_id = s(member);
    let mut request = LeaveGroupRequest::default();
    request.group_id = GroupId(s(group));
    request.members = vec![leaving];
    let answer: LeaveGroupResponse = conn.call(3, &request);
    assert_eq!(answer.error_code, 0, "{answer:?}");
}

/// (committed offset, lag) of each partition of a group description, by partition.
fn lags(described: &Value) -> Vec<(i64, Value, Value)> {
    let partitions = described["partitions"].as_array().expect("partitions");
    partitions
        .iter()
        .map(|p| {
            let partition = p["partition"].as_i64().expect("partition");
            (partition, p["committed_offset"].clone(), p["lag"].clone())
        })
        .collect()
}

#[test]
fn groups_show_lag_and_their_offsets_reset_only_when_empty() {
    let broker = Broker::start(&["sluice.reactors=2", "group.initial.rebalance.delay.ms=0"]);
    let bootstrap = broker.bootstrap();
    let b = bootstrap.as_str();
    json(b, &["topic", "create", "events", "--partitions", "2"]);
    let ten: Vec<String> = (0..10).map(|i| format!("e{i}")).collect();
    let ten: Vec<&str> = ten.iter().map(String::as_str).collect();
    produce(b, &["events", "--partition", "0"], &ten);
    produce(b, &["events", "--partition", "1"], &ten[..6]);

    let mut conn = Conn::connect(broker.address);
    let member = join_and_commit(&mut conn, "readers", "events", &[(0, 4), (1, 6)]);
    let described = json(b, &["group", "describe", "--group", "readers"]);
    assert_eq!(described["state"], "Stable", "{described}");
    assert_eq!(described["members"], 1, "{described}");
    assert_eq!(
        lags(&described),
        vec![(0, 4.into(), 6.into()), (1, 6.into(), 0.into())],
        "{described}"
    );
    for p in described["partitions"].as_array().expect("partitions") {
        assert_eq!(p["member"]["member_id"], member.as_str(), "{p}");
    }
    let listed = json(b, &["group", "list"]);
    let readers = listed["groups"]
        .as_array()
        .and_then(|g| g.iter().find(|g| g["group"] == "readers").cloned());
    assert_eq!(
        readers.map(|g| g["state"].clone()),
        Some("Stable".into()),
        "{listed}"
    );

    let reset = [
        "group",
        "reset-offsets",
        "--group",
        "readers",
        "--topic",
        "events",
    ];
    let with = |extra: &[&'static str]| [&reset[..], extra].concat();
    let stderr = fails(b, &with(&["--to-earliest", "--execute"]), "member");
    assert!(stderr.contains("Stable"), "{stderr}");
    let plan = json(b, &with(&["--to-earliest"]));
    assert_eq!(plan["executed"], false, "{plan}");
    let news: Vec<Value> = plan["partitions"]
        .as_array()
        .expect("plan")
        .iter()
        .map(|p| p["new_offset"].clone())
        .collect();
    assert_eq!(news, vec![Value::from(0), Value::from(0)], "{plan}");
    let unchanged = json(b, &["group", "describe", "--group", "readers"]);
    assert_eq!(
        lags(&unchanged),
        lags(&described),
        "a dry run changes nothing"
    );

    leave(&mut conn, "readers", &member);
    json(b, &with(&["--to-earliest", "--execute"]));
    let reset_done = json(b, &["group", "describe", "--group", "readers"]);
    assert_eq!(reset_done["state"], "Empty", "{reset_done}");
    assert_eq!(
        lags(&reset_done),
        vec![(0, 0.into(), 10.into()), (1, 0.into(), 6.into())],
        "{reset_done}"
    );
    json(b, &with(&["--shift-by", "3", "--execute"]));
    let committed = |b: &str| -> Vec<Value> {
        let described = json(b, &["group", "describe", "--group", "readers"]);
        lags(&described).into_iter().map(|(_, c, _)| c).collect()
    };
    assert_eq!(committed(b), vec![Value::from(3), Value::from(3)]);
    json(b, &with(&["--shift-by", "-5", "--execute"]));
    assert_eq!(
        committed(b),
        vec![Value::from(0), Value::from(0)],
        "kept within the log"
    );
    json(b, &with(&["--to-latest", "--execute"]));
    assert_eq!(committed(b), vec![Value::from(10), Value::from(6)]);
    json(
        b,
        &with(&["--to-datetime", "2000-01-01T00:00:00Z", "--execute"]),
    );
    assert_eq!(committed(b), vec![Value::from(0), Value::from(0)]);
    json(
        b,
        &[
            "group",
            "reset-offsets",
            "--group",
            "readers",
            "--topic",
            "events:1",
            "--to-offset",
            "5",
            "--execute",
        ],
    );
    assert_eq!(committed(b), vec![Value::from(0), Value::from(5)]);

    let deleted = json(b, &["group", "delete", "--group", "readers"]);
    assert_eq!(deleted["groups"][0]["result"], "deleted", "{deleted}");
    fails(
        b,
        &["group", "describe", "--group", "readers"],
        "GROUP_ID_NOT_FOUND",
    );
}

#[test]
fn produced_lines_are_consumed_and_keys_land_where_kafka_puts_them() {
    let broker = Broker::start(&["sluice.reactors=2"]);
    let bootstrap = broker.bootstrap();
    let b = bootstrap.as_str();
    json(b, &["topic", "create", "lines", "--partitions", "3"]);
    let lines: Vec<String> = (0..30).map(|i| format!("key{i}:value {i}")).collect();
    let lines: Vec<&str> = lines.iter().map(String::as_str).collect();
    let produced = produce(b, &["lines", "--key-separator", ":"], &lines);
    assert_eq!(produced["records"], 30, "{produced}");

    let consumed = sluice(
        b,
        &[
            "consume",
            "lines",
            "--from-beginning",
            "--exit-at-end",
            "--format",
            "%k=%v@%p",
        ],
    );
    assert!(consumed.success, "{}", consumed.stderr);
    let mut got: Vec<(String, String)> = consumed
        .stdout
        .lines()
        .map(|l| {
            let (record, partition) = l.rsplit_once('@').expect("record@partition");
            (record.to_owned(), partition.to_owned())
        })
        .collect();
    got.sort();
    let mut expected: Vec<String> = (0..30).map(|i| format!("key{i}=value {i}")).collect();
    expected.sort();
    let records: Vec<String> = got.iter().map(|(r, _)| r.clone()).collect();
    assert_eq!(records, expected);

    // kcat with Kafka's partitioner puts each key in the same partition.
    let keyed: String = (0..30).map(|i| format!("key{i}:v\n")).collect();
    let mut kcat = Command::new("kcat")
        .args([
            "-b",
            b,
            "-t",
            "lines",
            "-P",
            "-K:",
            "-X",
            "partitioner=murmur2_random",
        ])
        .stdin(Stdio::piped())
        .spawn()
        .expect("kcat is installed (scripts/test.sh installs it)");
    kcat.stdin
        .take()
        .expect("stdin")
        .write_all(keyed.as_bytes())
        .expect("feed kcat");
    assert!(kcat.wait().expect("kcat ends").success());
    let again = sluice(
        b,
        &[
            "consume",
            "lines",
            "--from-beginning",
            "--exit-at-end",
            "--format",
            "%k %p %v",
        ],
    );
    let mut partition_of = std::collections::BTreeMap::new();
    for line in again.stdout.lines() {
        let mut fields = line.splitn(3, ' ');
        let (key, partition) = (
            fields.next().expect("key"),
            fields.next().expect("partition"),
        );
        let earlier = partition_of.insert(key.to_owned(), partition.to_owned());
        assert!(
            earlier.as_deref().is_none_or(|p| p == partition),
            "{key} is in partitions {earlier:?} and {partition}"
        );
    }
    assert_eq!(partition_of.len(), 30);

    let two = sluice(
        b,
        &[
            "consume",
            "lines",
            "--from-beginning",
            "--max-messages",
            "2",
        ],
    );
    assert_eq!(two.stdout.lines().count(), 2, "{}", two.stdout);
    let args = [
        "consume",
        "lines",
        "--from-beginning",
        "--max-messages",
        "2",
        "--json",
    ];
    let two = sluice(b, &args);
    let records: Vec<Value> = two
        .stdout
        .lines()
        .map(|l| serde_json::from_str(l).expect("one JSON object per line"))
        .collect();
    assert_eq!(records.len(), 2, "{}", two.stdout);
    for record in &records {
        assert_eq!(record["topic"], "lines", "{record}");
        assert!(record["key"].as_str().is_some_and(|k| k.starts_with("key")));
    }

    // A topic that stores zstd batches reads back the same records.
    let args = [
        "topic",
        "create",
        "squeezed",
        "--config",
        "compression.type=zstd",
    ];
    json(b, &args);
    let produced = produce(b, &["squeezed", "--key-separator", ":"], &lines);
    assert_eq!(produced["records"], 30, "{produced}");
    let args = ["consume", "squeezed", "--from-beginning", "--exit-at-end"];
    let consumed = sluice(b, &args);
    assert!(consumed.success, "{}", consumed.stderr);
    let mut values: Vec<&str> = consumed.stdout.lines().collect();
    values.sort();
    let mut expected: Vec<String> = (0..30).map(|i| format!("value {i}")).collect();
    expected.sort();
    assert_eq!(values, expected);
}

#[test]
fn every_subcommand_has_help_and_a_missing_broker_is_explained() {
    for args in [
        &["topic", "--help"][..],
        &["topic", "describe", "--help"],
        &["cluster", "info", "--help"],
        &["config", "set", "--help"],
        &["group", "reset-offsets", "--help"],
        &["leader-election", "--help"],
        &["produce", "--help"],
        &["consume", "--help"],
    ] {
        let out = ran(Command::new(env!("CARGO_BIN_EXE_sluice"))
            .args(args)
            .output()
            .expect("run sluice"));
        assert!(out.success, "{args:?}: {}", out.stderr);
        assert!(
            out.stdout.contains("--bootstrap-server"),
            "{args:?}: {}",
            out.stdout
        );
    }
    // Nothing listens on port 1 of loopback.
    let stderr = fails("127.0.0.1:1", &["topic", "list"], "cannot connect");
    assert!(stderr.contains("127.0.0.1:1"), "{stderr}");
    let out = sluice("127.0.0.1:1", &["cluster", "info", "--json"]);
    let error: Value = serde_json::from_str(out.stderr.trim()).expect("a JSON error");
    assert!(error["what_to_do"].is_string(), "{error}");
}
