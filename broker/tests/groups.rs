//! Consumer groups against the real broker with real clients: confluent-kafka consumers split
//! partitions, survive a killed member and a stalled one, keep their committed offsets across
//! a broker restart, and two groups each read everything; kcat's balanced consumer (`-G`) reads
//! and commits; at the wire level, the broker drops a member that does not rejoin a rebalance
//! in time. Consumers run as separate processes (tests/clients/group_consumer.py) that
//! print what they own, read and commit; the test watches those lines with deadlines.

mod support;

use std::collections::{BTreeMap, BTreeSet};
use std::io::{BufRead, BufReader, Write};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use support::{client_script, python, run, Broker};

/// How long a test waits for a group to reach a state; generous for a loaded 2-core machine.
const DEADLINE: Duration = Duration::from_secs(60);
const PARTITIONS: usize = 6;

/// Small timeouts keep rebalances quick; four offsets partitions spread groups over cores.
fn start_broker() -> Broker {
    Broker::start(OVERRIDES)
}

const OVERRIDES: &[&str] = &[
    "offsets.topic.num.partitions=4",
    "group.initial.rebalance.delay.ms=300",
    "sluice.reactors=2",
];

fn tools(broker: &Broker, args: &[&str]) -> String {
    let output = run(python()
        .arg(client_script("group_tools.py"))
        .arg(broker.bootstrap())
        .args(args));
    String::from_utf8_lossy(&output).trim().to_owned()
}

fn produce(broker: &Broker, topic: &str, first: usize, count: usize) {
    let summary = tools(
        broker,
        &[
            "produce",
            topic,
            &PARTITIONS.to_string(),
            &first.to_string(),
            &count.to_string(),
        ],
    );
    assert_eq!(summary, format!("produced {count}"));
}

/// One consumer process and what it has said.
struct Member {
    child: Child,
    stdin: Option<ChildStdin>,
    assigned: BTreeSet<i32>,
    /// How many times the assignment was reported (once per change).
    assignments: usize,
    /// Each rebalance callback in order: "added", "revoked" or "lost", with its partitions.
    events: Vec<(String, BTreeSet<i32>)>,
    /// (partition, offset, value) in the order processed.
    messages: Vec<(i32, i64, i64)>,
    /// The highest committed offset per partition.
    committed: BTreeMap<i32, i64>,
    closed: bool,
}

/// The consumers of one test, and the channel their output arrives on.
struct Consumers {
    members: Vec<Member>,
    lines: mpsc::Receiver<(usize, String)>,
    sender: mpsc::Sender<(usize, String)>,
}

impl Consumers {
    fn new() -> Self {
        let (sender, lines) = mpsc::channel();
        Self {
            members: Vec::new(),
            lines,
            sender,
        }
    }

    /// Starts a consumer of `group` on `topic` with extra group_consumer.py arguments.
    fn spawn(&mut self, broker: &Broker, group: &str, topic: &str, extra: &[&str]) -> usize {
        let mut child = python()
            .arg(client_script("group_consumer.py"))
            .arg(broker.bootstrap())
            .args([group, topic])
            .args(extra)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("start group_consumer.py");
        let index = self.members.len();
        let stdout = child.stdout.take().expect("stdout");
        let sender = self.sender.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if sender.send((index, line)).is_err() {
                    return;
                }
            }
        });
        self.members.push(Member {
            stdin: child.stdin.take(),
            child,
            assigned: BTreeSet::new(),
            assignments: 0,
            events: Vec::new(),
            messages: Vec::new(),
            committed: BTreeMap::new(),
            closed: false,
        });
        index
    }

    fn record(&mut self, index: usize, line: &str) {
        let member = &mut self.members[index];
        let words: Vec<&str> = line.split_whitespace().collect();
        let number = |i: usize| words.get(i).and_then(|w| w.parse::<i64>().ok());
        // A list of partitions, or "-" for none: "-" parses as no partition.
        let partitions = |i: usize| -> BTreeSet<i32> {
            let list = words.get(i).copied().unwrap_or_default();
            list.split(',').filter_map(|p| p.parse().ok()).collect()
        };
        match words.first().copied() {
            Some("assigned") => {
                member.assignments += 1;
                member.assigned = partitions(1);
            }
            Some(kind @ ("added" | "revoked" | "lost")) => {
                member.events.push((kind.to_owned(), partitions(1)));
            }
            Some("message") => {
                let parsed = (number(1), number(2), number(3));
                let (Some(p), Some(o), Some(v)) = parsed else {
                    panic!("consumer {index} printed {line:?}")
                };
                member.messages.push((p as i32, o, v));
            }
            Some("committed") => {
                let (Some(p), Some(o)) = (number(1), number(2)) else {
                    panic!("consumer {index} printed {line:?}")
                };
                let slot = member.committed.entry(p as i32).or_insert(o);
                *slot = (*slot).max(o);
            }
            Some("closed") => member.closed = true,
            _ => println!("consumer {index}: {line}"),
        }
    }

    /// Reads consumer output until `done` holds, failing the test at the deadline.
    fn wait_until(&mut self, what: &str, done: impl Fn(&Self) -> bool) {
        let deadline = Instant::now() + DEADLINE;
        while !done(self) {
            let left = deadline.saturating_duration_since(Instant::now());
            match self
                .lines
                .recv_timeout(left.min(Duration::from_millis(500)))
            {
                Ok((index, line)) => self.record(index, &line),
                Err(mpsc::RecvTimeoutError::Timeout) if Instant::now() < deadline => {}
                Err(_) => panic!(
                    "{what}: not reached within {DEADLINE:?}; {}",
                    self.summary()
                ),
            }
        }
    }

    fn summary(&self) -> String {
        let members: Vec<String> = self
            .members
            .iter()
            .enumerate()
            .map(|(i, m)| {
                format!(
                    "consumer {i}: owns {:?}, read {}, closed {}",
                    m.assigned,
                    m.messages.len(),
                    m.closed
                )
            })
            .collect();
        members.join("; ")
    }

    /// Every distinct value read by any consumer.
    fn values(&self) -> BTreeSet<i64> {
        let all = self.members.iter().flat_map(|m| &m.messages);
        all.map(|(_, _, v)| *v).collect()
    }

    /// Asks one consumer to close (it leaves the group) and waits until it has.
    fn stop(&mut self, index: usize) {
        if let Some(mut stdin) = self.members[index].stdin.take() {
            let _ = stdin.write_all(b"stop\n");
        }
        self.wait_until("consumer closes", |c| c.members[index].closed);
        let _ = self.members[index].child.wait();
    }

    fn stop_all(&mut self) {
        for index in 0..self.members.len() {
            if !self.members[index].closed && self.members[index].stdin.is_some() {
                self.stop(index);
            }
        }
    }

    /// SIGKILL: the consumer sends no LeaveGroup.
    fn kill(&mut self, index: usize) {
        let member = &mut self.members[index];
        member.child.kill().expect("kill consumer");
        let _ = member.child.wait();
        member.stdin = None;
        // Lines it printed before it died are still in the channel; keep them.
        while let Ok((i, line)) = self.lines.try_recv() {
            self.record(i, &line);
        }
    }
}

impl Drop for Consumers {
    fn drop(&mut self) {
        for member in &mut self.members {
            let _ = member.child.kill();
            let _ = member.child.wait();
        }
    }
}

/// Whether `members` (indexes) own all partitions between them, each exactly once, with the
/// sizes given.
fn split_evenly(c: &Consumers, members: &[usize], each: usize) -> bool {
    let mut all = Vec::new();
    for &i in members {
        if c.members[i].assigned.len() != each {
            return false;
        }
        all.extend(c.members[i].assigned.iter().copied());
    }
    all.sort_unstable();
    all == (0..PARTITIONS as i32).collect::<Vec<_>>()
}

fn three_consumers_get_two_partitions_each(strategy: &str) {
    let broker = start_broker();
    let topic = format!("split-{strategy}");
    produce(&broker, &topic, 0, 60);
    let mut consumers = Consumers::new();
    for _ in 0..3 {
        consumers.spawn(&broker, "splitters", &topic, &["--strategy", strategy]);
    }
    consumers.wait_until("three consumers own two partitions each", |c| {
        split_evenly(c, &[0, 1, 2], 2)
    });
    consumers.wait_until("all 60 messages read", |c| c.values().len() == 60);
    consumers.stop_all();
}

#[test]
fn three_consumers_split_six_partitions() {
    three_consumers_get_two_partitions_each("range");
}

#[test]
fn three_cooperative_sticky_consumers_split_six_partitions() {
    three_consumers_get_two_partitions_each("cooperative-sticky");
}

/// Cooperative-sticky rebalancing is incremental: when a third member joins two stable ones,
/// each of the two gives up only the partitions that move to it, and keeps the others
/// throughout, instead of having its whole assignment revoked and handed back as the eager
/// protocol does.
#[test]
fn cooperative_sticky_members_keep_their_partitions_when_a_third_joins() {
    let broker = start_broker();
    let topic = "incremental";
    produce(&broker, topic, 0, 60);
    let mut consumers = Consumers::new();
    let strategy = ["--strategy", "cooperative-sticky"];
    for _ in 0..2 {
        consumers.spawn(&broker, "incrementals", topic, &strategy);
    }
    consumers.wait_until("two members own three partitions each", |c| {
        split_evenly(c, &[0, 1], 3)
    });
    let before: Vec<BTreeSet<i32>> = (0..2)
        .map(|i| consumers.members[i].assigned.clone())
        .collect();
    let seen: Vec<usize> = (0..2).map(|i| consumers.members[i].events.len()).collect();
    consumers.spawn(&broker, "incrementals", topic, &strategy);
    consumers.wait_until("three members own two partitions each", |c| {
        split_evenly(c, &[0, 1, 2], 2)
    });
    let mut moved = BTreeSet::new();
    for i in 0..2 {
        let member = &consumers.members[i];
        let kept = &member.assigned;
        let given_up: BTreeSet<i32> = before[i].difference(kept).copied().collect();
        let mut revoked = BTreeSet::new();
        for (kind, partitions) in &member.events[seen[i]..] {
            match kind.as_str() {
                "revoked" => revoked.extend(partitions),
                // librdkafka ends each cooperative rebalance with an incremental assignment,
                // empty for a member that gains nothing; one that hands partitions back to
                // a member that had them means they were taken away in between.
                "added" => assert!(
                    partitions.is_empty(),
                    "consumer {i} was given {partitions:?} after keeping {kept:?}"
                ),
                _ => panic!("consumer {i} lost {partitions:?}"),
            }
        }
        assert_eq!(
            revoked, given_up,
            "consumer {i} had revoked what it kept, or more than moved"
        );
        assert!(
            kept.is_subset(&before[i]),
            "consumer {i} went from {:?} to {kept:?}",
            before[i]
        );
        moved.extend(given_up);
    }
    assert_eq!(consumers.members[2].assigned, moved);
    consumers.stop_all();
}

/// A member killed with SIGKILL sends no LeaveGroup: its session expires, its partitions move,
/// and with commits after processing every message is read, duplicates only from what the
/// killed member had read but not committed.
#[test]
fn killed_member_partitions_move_and_nothing_is_lost() {
    let broker = start_broker();
    let topic = "crash";
    let total = 600;
    produce(&broker, topic, 0, total);
    let mut consumers = Consumers::new();
    let args = ["--commit", "--delay-ms", "10"];
    for _ in 0..3 {
        consumers.spawn(&broker, "crashers", topic, &args);
    }
    consumers.wait_until("three members share the partitions", |c| {
        split_evenly(c, &[0, 1, 2], 2)
    });
    consumers.wait_until("the victim has read and committed", |c| {
        c.members[0].committed.len() == 2
    });
    let victim_partitions = consumers.members[0].assigned.clone();
    consumers.kill(0);
    consumers.wait_until("the survivors own every partition", |c| {
        split_evenly(c, &[1, 2], 3)
    });
    for partition in &victim_partitions {
        let survivor_owns = (1..3).any(|i| consumers.members[i].assigned.contains(partition));
        assert!(survivor_owns, "partition {partition} did not move");
    }
    consumers.wait_until("every message read", |c| c.values().len() == total);
    // Each (partition, offset) read twice was never committed by the reader that saw it first.
    let mut first_reader: BTreeMap<(i32, i64), usize> = BTreeMap::new();
    for (index, member) in consumers.members.iter().enumerate() {
        for &(p, o, _) in &member.messages {
            if let Some(&first) = first_reader.get(&(p, o)) {
                let committed = consumers.members[first].committed.get(&p).copied();
                assert!(
                    committed.is_none_or(|c| c <= o),
                    "{p}@{o} read again by {index} though {first} committed {committed:?}"
                );
            } else {
                first_reader.insert((p, o), index);
            }
        }
    }
    consumers.stop_all();
}

/// A member that stops polling exceeds `max.poll.interval.ms`, is removed from the group, and
/// its partitions go to the member that still polls.
#[test]
fn stalled_member_is_removed_and_its_partitions_reassigned() {
    let broker = start_broker();
    let topic = "stall";
    produce(&broker, topic, 0, 60);
    let mut consumers = Consumers::new();
    let poll = ["--max-poll-interval-ms", "7000"];
    consumers.spawn(&broker, "stallers", topic, &poll);
    // The staller joins second, so that the first assignment it gets is shared: had it joined
    // first, it would stall owning everything and the group would wait out its poll interval.
    consumers.wait_until("the polling member owns everything first", |c| {
        c.members[0].assigned.len() == PARTITIONS
    });
    let mut stalling = poll.to_vec();
    stalling.push("--stall-after-assignment");
    consumers.spawn(&broker, "stallers", topic, &stalling);
    consumers.wait_until("both members own partitions", |c| {
        split_evenly(c, &[0, 1], 3)
    });
    consumers.wait_until("the polling member owns everything", |c| {
        c.members[0].assigned.len() == PARTITIONS
    });
    consumers.wait_until("all 60 messages read", |c| c.values().len() == 60);
    consumers.stop_all();
}

/// A static member (`group.instance.id`) that is killed and comes back within its session
/// timeout gets its partitions back without a rebalance: the other member is not disturbed.
#[test]
fn static_member_rejoins_without_a_rebalance() {
    let broker = start_broker();
    let topic = "static";
    produce(&broker, topic, 0, 60);
    let mut consumers = Consumers::new();
    let session = ["--session-timeout-ms", "30000"];
    let with_id = |id: &'static str| [&session[..], &["--instance-id", id]].concat();
    consumers.spawn(&broker, "statics", topic, &with_id("static-a"));
    consumers.spawn(&broker, "statics", topic, &with_id("static-b"));
    consumers.wait_until("two static members share the partitions", |c| {
        split_evenly(c, &[0, 1], 3)
    });
    let (owned_a, owned_b) = (
        consumers.members[0].assigned.clone(),
        consumers.members[1].assigned.clone(),
    );
    let reports_b = consumers.members[1].assignments;
    consumers.kill(0);
    consumers.spawn(&broker, "statics", topic, &with_id("static-a"));
    consumers.wait_until("the restarted member owns its partitions again", |c| {
        c.members[2].assigned == owned_a
    });
    consumers.wait_until("all 60 messages read", |c| c.values().len() == 60);
    assert_eq!(consumers.members[1].assigned, owned_b);
    assert_eq!(
        consumers.members[1].assignments, reports_b,
        "the other member saw a rebalance"
    );
    consumers.stop_all();
}

/// Committed offsets and the group itself survive a broker crash; consumption resumes after
/// the committed offsets.
#[test]
fn committed_offsets_survive_a_broker_restart() {
    let mut broker = start_broker();
    let topic = "restart";
    produce(&broker, topic, 0, 120);
    let mut consumers = Consumers::new();
    consumers.spawn(&broker, "restarters", topic, &["--commit"]);
    consumers.wait_until("all 120 read", |c| c.values().len() == 120);
    consumers.stop(0);
    let before = tools(&broker, &["offsets", "restarters", topic, "6"]);
    assert!(
        before.contains("committed 0:20 1:20 2:20 3:20 4:20 5:20"),
        "{before}"
    );
    let dir = broker.take_dir();
    let data = broker.data.clone();
    broker.kill();
    let broker = Broker::start_in(&data, OVERRIDES);
    let after = tools(&broker, &["offsets", "restarters", topic, "6"]);
    assert!(
        after.contains("committed 0:20 1:20 2:20 3:20 4:20 5:20"),
        "{after}"
    );
    assert!(after.contains("state EMPTY consumer"), "{after}");
    produce(&broker, topic, 120, 30);
    let mut again = Consumers::new();
    again.spawn(&broker, "restarters", topic, &["--commit"]);
    again.wait_until("the 30 new messages read", |c| c.values().len() == 30);
    let values = again.values();
    assert_eq!(
        values.first(),
        Some(&120),
        "resumed from the committed offsets"
    );
    assert_eq!(values.last(), Some(&149));
    again.stop_all();
    drop(dir);
}

/// Publish-subscribe: two groups on one topic each read every message.
#[test]
fn two_groups_each_read_every_message() {
    let broker = start_broker();
    let topic = "pubsub";
    produce(&broker, topic, 0, 200);
    let mut consumers = Consumers::new();
    consumers.spawn(&broker, "readers-a", topic, &[]);
    consumers.spawn(&broker, "readers-b", topic, &[]);
    consumers.wait_until("both groups read all 200", |c| {
        c.members.iter().all(|m| {
            let values: BTreeSet<i64> = m.messages.iter().map(|(_, _, v)| *v).collect();
            values.len() == 200
        })
    });
    consumers.stop_all();
}

fn kcat_group(broker: &Broker, group: &str, topic: &str) -> BTreeSet<i64> {
    let output = run(Command::new("timeout").args([
        "60",
        "kcat",
        "-b",
        &broker.bootstrap(),
        "-G",
        group,
        "-X",
        "auto.offset.reset=earliest",
        "-X",
        "session.timeout.ms=6000",
        "-e",
        "-q",
        "-f",
        "%s\\n",
        topic,
    ]));
    String::from_utf8_lossy(&output)
        .lines()
        .map(|l| l.parse().expect("a number"))
        .collect()
}

/// kcat's balanced consumer joins a group, reads to the end, commits, and a second run of the
/// same group reads only what was produced since.
#[test]
fn kcat_balanced_consumer_reads_and_commits() {
    let broker = start_broker();
    let topic = "kcat-group";
    produce(&broker, topic, 0, 90);
    assert_eq!(kcat_group(&broker, "kcats", topic), (0..90).collect());
    produce(&broker, topic, 90, 12);
    assert_eq!(kcat_group(&broker, "kcats", topic), (90..102).collect());
}

mod wire {
    //! The group APIs byte for byte, with kafka-protocol encoding the requests: the forms real
    //! clients in these tests do not use (batched FindCoordinator and LeaveGroup, multi-group
    //! OffsetFetch, OffsetDelete) and the errors a client must see.

    use super::support::kafka::{self, Conn};
    use super::*;
    use bytes::{BufMut, Bytes, BytesMut};
    use kafka_protocol::messages::*;
    use kafka_protocol::protocol::{Encodable, StrBytes};

    fn s(text: &str) -> StrBytes {
        StrBytes::from_string(text.to_owned())
    }

    /// Consumer-protocol metadata subscribing to `topic`, with its version prefix.
    fn subscription(topic: &str) -> Bytes {
        let mut sub = ConsumerProtocolSubscription::default();
        sub.topics = vec![s(topic)];
        let mut out = BytesMut::new();
        out.put_i16(0);
        sub.encode(&mut out, 0).expect("encodes");
        out.freeze()
    }

    /// The JoinGroup version the tests send.
    const JOIN_VERSION: i16 = 5;

    fn join_request(
        group: &str,
        member: &str,
        topic: &str,
        rebalance_timeout_ms: i32,
    ) -> JoinGroupRequest {
        let mut protocol = join_group_request::JoinGroupRequestProtocol::default();
        protocol.name = s("range");
        protocol.metadata = subscription(topic);
        let mut request = JoinGroupRequest::default();
        request.group_id = GroupId(s(group));
        request.session_timeout_ms = 30_000;
        request.rebalance_timeout_ms = rebalance_timeout_ms;
        request.member_id = s(member);
        request.protocol_type = s("consumer");
        request.protocols = vec![protocol];
        request
    }

    fn join(conn: &mut Conn, group: &str, member: &str, topic: &str) -> JoinGroupResponse {
        conn.call(JOIN_VERSION, &join_request(group, member, topic, 30_000))
    }

    fn offset_fetch_v8(conn: &mut Conn, groups: &[&str]) -> OffsetFetchResponse {
        let mut request = OffsetFetchRequest::default();
        request.groups = groups
            .iter()
            .map(|g| {
                let mut group = offset_fetch_request::OffsetFetchRequestGroup::default();
                group.group_id = GroupId(s(g));
                group.topics = None;
                group
            })
            .collect();
        conn.call(8, &request)
    }

    fn offsets_of(response: &OffsetFetchResponse, group: &str) -> Vec<(i32, i64)> {
        let found = response
            .groups
            .iter()
            .find(|g| g.group_id.0.as_str() == group);
        let group = found.expect("group answered");
        assert_eq!(group.error_code, 0);
        let mut out: Vec<(i32, i64)> = group
            .topics
            .iter()
            .flat_map(|t| t.partitions.iter())
            .map(|p| (p.partition_index, p.committed_offset))
            .collect();
        out.sort_unstable();
        out
    }

    fn describe(conn: &mut Conn, group: &str) -> describe_groups_response::DescribedGroup {
        let mut request = DescribeGroupsRequest::default();
        request.groups = vec![GroupId(s(group))];
        conn.call::<DescribeGroupsRequest>(5, &request)
            .groups
            .remove(0)
    }

    fn delete_group(conn: &mut Conn, group: &str) -> i16 {
        let mut request = DeleteGroupsRequest::default();
        request.groups_names = vec![GroupId(s(group))];
        conn.call::<DeleteGroupsRequest>(2, &request).results[0].error_code
    }

    fn offset_delete(conn: &mut Conn, group: &str, topic: &str, partition: i32) -> (i16, i16) {
        let mut p = offset_delete_request::OffsetDeleteRequestPartition::default();
        p.partition_index = partition;
        let mut t = offset_delete_request::OffsetDeleteRequestTopic::default();
        t.name = TopicName(s(topic));
        t.partitions = vec![p];
        let mut request = OffsetDeleteRequest::default();
        request.group_id = GroupId(s(group));
        request.topics = vec![t];
        let response: OffsetDeleteResponse = conn.call(0, &request);
        let partition_error = response
            .topics
            .first()
            .map_or(-100, |t| t.partitions[0].error_code);
        (response.error_code, partition_error)
    }

    #[test]
    fn group_apis_answer_on_the_wire() {
        let broker = start_broker();
        produce(&broker, "wired", 0, 12);
        let mut conn = Conn::connect(broker.address);

        let mut find = FindCoordinatorRequest::default();
        find.coordinator_keys = vec![s("g1"), s("g2")];
        let found: FindCoordinatorResponse = conn.call(4, &find);
        assert_eq!(found.coordinators.len(), 2);
        for c in &found.coordinators {
            assert_eq!(
                (c.error_code, c.port),
                (0, i32::from(broker.address.port()))
            );
        }

        // KIP-394: a new member first gets its id, then joins with it.
        let first = join(&mut conn, "g1", "", "wired");
        assert_eq!(first.error_code, 79, "MEMBER_ID_REQUIRED");
        let member = first.member_id.to_string();
        assert!(!member.is_empty());
        let joined = join(&mut conn, "g1", &member, "wired");
        assert_eq!(joined.error_code, 0);
        assert_eq!(
            (joined.generation_id, joined.leader.as_str()),
            (1, member.as_str())
        );
        assert_eq!(joined.members.len(), 1);

        let mut assignment = sync_group_request::SyncGroupRequestAssignment::default();
        assignment.member_id = s(&member);
        assignment.assignment = Bytes::from_static(b"all of it");
        let mut sync = SyncGroupRequest::default();
        sync.group_id = GroupId(s("g1"));
        sync.generation_id = 1;
        sync.member_id = s(&member);
        sync.assignments = vec![assignment];
        let synced: SyncGroupResponse = conn.call(3, &sync);
        assert_eq!(synced.error_code, 0);
        assert_eq!(synced.assignment, Bytes::from_static(b"all of it"));

        let mut heartbeat = HeartbeatRequest::default();
        heartbeat.group_id = GroupId(s("g1"));
        heartbeat.generation_id = 1;
        heartbeat.member_id = s(&member);
        assert_eq!(conn.call::<HeartbeatRequest>(3, &heartbeat).error_code, 0);
        heartbeat.generation_id = 7;
        let stale = conn.call::<HeartbeatRequest>(3, &heartbeat).error_code;
        assert_eq!(stale, 22, "ILLEGAL_GENERATION");

        let mut commit = OffsetCommitRequest::default();
        commit.group_id = GroupId(s("g1"));
        commit.generation_id_or_member_epoch = 1;
        commit.member_id = s(&member);
        for (topic, partitions) in [("wired", vec![0, 1]), ("no-such-topic", vec![0])] {
            let mut t = offset_commit_request::OffsetCommitRequestTopic::default();
            t.name = TopicName(s(topic));
            for p in partitions {
                let mut partition = offset_commit_request::OffsetCommitRequestPartition::default();
                partition.partition_index = p;
                partition.committed_offset = 1 + i64::from(p);
                t.partitions.push(partition);
            }
            commit.topics.push(t);
        }
        let committed: OffsetCommitResponse = conn.call(8, &commit);
        let errors: Vec<i16> = committed
            .topics
            .iter()
            .flat_map(|t| t.partitions.iter().map(|p| p.error_code))
            .collect();
        assert_eq!(errors, vec![0, 0, 3]);

        let fetched = offset_fetch_v8(&mut conn, &["g1", "nobody"]);
        assert_eq!(offsets_of(&fetched, "g1"), vec![(0, 1), (1, 2)]);
        assert_eq!(offsets_of(&fetched, "nobody"), vec![]);

        let described = describe(&mut conn, "g1");
        assert_eq!(described.group_state.as_str(), "Stable");
        assert_eq!(described.protocol_data.as_str(), "range");
        assert_eq!(described.members.len(), 1);
        // Kafka names a member's client by the request header's client id and the
        // connection's peer address, written as Java prints an InetAddress.
        let described_member = &described.members[0];
        assert_eq!(described_member.client_id.as_str(), "sluice-tests");
        assert_eq!(described_member.client_host.as_str(), "/127.0.0.1");
        assert_eq!(delete_group(&mut conn, "g1"), 68, "NON_EMPTY_GROUP");
        assert_eq!(offset_delete(&mut conn, "g1", "wired", 0), (0, 86));

        // Batched LeaveGroup: the last member leaves and the group is empty.
        let mut identity = leave_group_request::MemberIdentity::default();
        identity.member_id = s(&member);
        let mut leave = LeaveGroupRequest::default();
        leave.group_id = GroupId(s("g1"));
        leave.members = vec![identity];
        let left: LeaveGroupResponse = conn.call(3, &leave);
        assert_eq!((left.error_code, left.members[0].error_code), (0, 0));
        let mut list = ListGroupsRequest::default();
        list.states_filter = vec![s("Empty")];
        let listed: ListGroupsResponse = conn.call(4, &list);
        let names: Vec<&str> = listed
            .groups
            .iter()
            .map(|g| g.group_id.0.as_str())
            .collect();
        assert_eq!(names, vec!["g1"]);

        assert_eq!(offset_delete(&mut conn, "g1", "wired", 0), (0, 0));
        let fetched = offset_fetch_v8(&mut conn, &["g1"]);
        assert_eq!(offsets_of(&fetched, "g1"), vec![(1, 2)]);
        assert_eq!(delete_group(&mut conn, "g1"), 0);
        assert_eq!(describe(&mut conn, "g1").group_state.as_str(), "Dead");
        assert_eq!(delete_group(&mut conn, "g1"), 69, "GROUP_ID_NOT_FOUND");

        // Tombstones hold across a restart: the deleted group and its offsets stay gone.
        let mut broker = broker;
        let dir = broker.take_dir();
        let data = broker.data.clone();
        broker.kill();
        let broker = Broker::start_in(&data, OVERRIDES);
        let mut conn = Conn::connect(broker.address);
        assert_eq!(describe(&mut conn, "g1").group_state.as_str(), "Dead");
        let fetched = offset_fetch_v8(&mut conn, &["g1"]);
        assert_eq!(offsets_of(&fetched, "g1"), vec![]);
        drop(dir);
    }

    /// Protocol metadata is the client's: a subscription whose topic count is far beyond its
    /// bytes must not take the broker down when OffsetDelete reads the subscribed topics.
    #[test]
    fn hostile_subscription_metadata_is_not_trusted() {
        let broker = start_broker();
        produce(&broker, "wired", 0, 1);
        let mut conn = Conn::connect(broker.address);
        let group = "hostile";
        let mut request = join_request(group, "", "wired", 30_000);
        request.protocols[0].metadata = Bytes::from_static(&[0, 0, 0x7f, 0xff, 0xff, 0xff]);
        let first: JoinGroupResponse = conn.call(JOIN_VERSION, &request);
        assert_eq!(first.error_code, 79, "MEMBER_ID_REQUIRED");
        request.member_id = first.member_id.clone();
        let joined: JoinGroupResponse = conn.call(JOIN_VERSION, &request);
        assert_eq!((joined.error_code, joined.generation_id), (0, 1));
        // The metadata names no topic the broker can read, so none is in use.
        assert_eq!(offset_delete(&mut conn, group, "wired", 0), (0, 0));
        assert_eq!(
            describe(&mut conn, group).group_state.as_str(),
            "CompletingRebalance"
        );
        let mut other = Conn::connect(broker.address);
        assert_eq!(join(&mut other, "after", "", "wired").error_code, 79);
    }

    /// Kafka refuses the empty group id for membership only; offsets can be kept under it.
    #[test]
    fn the_empty_group_id_is_refused_only_for_membership() {
        let broker = start_broker();
        produce(&broker, "wired", 0, 1);
        let mut conn = Conn::connect(broker.address);
        assert_eq!(
            join(&mut conn, "", "", "wired").error_code,
            24,
            "INVALID_GROUP_ID"
        );
        assert_eq!(heartbeat(&mut conn, "", "m", 1), 24, "INVALID_GROUP_ID");
        let mut partition = offset_commit_request::OffsetCommitRequestPartition::default();
        partition.committed_offset = 1;
        let mut topic = offset_commit_request::OffsetCommitRequestTopic::default();
        topic.name = TopicName(s("wired"));
        topic.partitions = vec![partition];
        let mut commit = OffsetCommitRequest::default();
        commit.group_id = GroupId(s(""));
        commit.generation_id_or_member_epoch = -1;
        commit.topics = vec![topic];
        let committed: OffsetCommitResponse = conn.call(8, &commit);
        assert_eq!(committed.topics[0].partitions[0].error_code, 0);
        let fetched = offset_fetch_v8(&mut conn, &[""]);
        assert_eq!(offsets_of(&fetched, ""), vec![(0, 1)]);
        assert_eq!(describe(&mut conn, "").group_state.as_str(), "Empty");
    }

    fn heartbeat(conn: &mut Conn, group: &str, member: &str, generation: i32) -> i16 {
        let mut request = HeartbeatRequest::default();
        request.group_id = GroupId(s(group));
        request.generation_id = generation;
        request.member_id = s(member);
        conn.call::<HeartbeatRequest>(3, &request).error_code
    }

    /// A member that stays alive (it heartbeats, well within its session) but does not rejoin
    /// a rebalance is dropped by the broker when the rebalance timeout ends, and the members
    /// that did rejoin get a generation without it. This is the broker's own timer, not a
    /// client leaving on max.poll.interval.ms.
    #[test]
    fn a_member_that_does_not_rejoin_is_dropped_at_the_rebalance_timeout() {
        let broker = start_broker();
        produce(&broker, "slow", 0, 6);
        let group = "slow-group";
        // Long enough that the heartbeat and describe below come well within it on a loaded
        // machine, and short enough that the parked JoinGroup is answered within the test
        // connection's 10 s read timeout; far below the 30 s session timeout.
        let rebalance_timeout_ms = 9_000;
        let mut conns = [Conn::connect(broker.address), Conn::connect(broker.address)];
        let mut ids = Vec::new();
        for conn in &mut conns {
            let first = join(conn, group, "", "slow");
            assert_eq!(first.error_code, 79, "MEMBER_ID_REQUIRED");
            ids.push(first.member_id.to_string());
        }
        // The first generation completes once both known members have joined.
        let sent: Vec<i32> = conns
            .iter_mut()
            .zip(&ids)
            .map(|(conn, id)| {
                let request = join_request(group, id, "slow", rebalance_timeout_ms);
                conn.send(JOIN_VERSION, &request)
            })
            .collect();
        let joined: Vec<JoinGroupResponse> = conns
            .iter_mut()
            .zip(sent)
            .map(|(conn, id)| conn.receive_response::<JoinGroupRequest>(JOIN_VERSION, id))
            .collect();
        for answer in &joined {
            assert_eq!((answer.error_code, answer.generation_id), (0, 1));
        }
        let leader = joined[0].leader.to_string();
        let (leader_index, slow_index) = if leader == ids[0] { (0, 1) } else { (1, 0) };
        assert_eq!(ids[leader_index], leader);
        assert_eq!(joined[leader_index].members.len(), 2);

        // Both sync: the follower's SyncGroup waits for the leader's assignment.
        let sent: Vec<i32> = (0..2)
            .map(|i| {
                let mut sync = SyncGroupRequest::default();
                sync.group_id = GroupId(s(group));
                sync.generation_id = 1;
                sync.member_id = s(&ids[i]);
                if i == leader_index {
                    sync.assignments = ids
                        .iter()
                        .map(|id| {
                            let mut a = sync_group_request::SyncGroupRequestAssignment::default();
                            a.member_id = s(id);
                            a.assignment = Bytes::from(format!("for {id}"));
                            a
                        })
                        .collect();
                }
                conns[i].send(3, &sync)
            })
            .collect();
        for (i, correlation_id) in sent.into_iter().enumerate() {
            let synced = conns[i].receive_response::<SyncGroupRequest>(3, correlation_id);
            assert_eq!(synced.error_code, 0);
            assert_eq!(synced.assignment, Bytes::from(format!("for {}", ids[i])));
        }
        assert_eq!(
            describe(&mut conns[0], group).group_state.as_str(),
            "Stable"
        );

        // The leader rejoins, which starts a rebalance; its JoinGroup waits.
        let request = join_request(group, &ids[leader_index], "slow", rebalance_timeout_ms);
        let rejoin = conns[leader_index].send(JOIN_VERSION, &request);
        // The rejoin and the requests below travel on different connections, which may be
        // served by different reactors, so the test waits until the group has seen the rejoin.
        let mut slow_conn = Conn::connect(broker.address);
        let deadline = Instant::now() + DEADLINE;
        while describe(&mut slow_conn, group).group_state.as_str() != "PreparingRebalance" {
            assert!(
                Instant::now() < deadline,
                "the rejoin never started a rebalance"
            );
            std::thread::sleep(Duration::from_millis(10));
        }
        // The slow member is alive: its heartbeat is told of the rebalance, and it ignores it.
        let told = heartbeat(&mut slow_conn, group, &ids[slow_index], 1);
        assert_eq!(told, 27, "REBALANCE_IN_PROGRESS");

        // At the rebalance timeout the broker completes the join without the slow member.
        let answer = conns[leader_index].receive_response::<JoinGroupRequest>(JOIN_VERSION, rejoin);
        assert_eq!(answer.error_code, 0);
        assert_eq!(answer.generation_id, 2);
        assert_eq!(answer.leader.as_str(), ids[leader_index]);
        let members: Vec<&str> = answer
            .members
            .iter()
            .map(|m| m.member_id.as_str())
            .collect();
        assert_eq!(members, vec![ids[leader_index].as_str()]);
        let gone = heartbeat(&mut slow_conn, group, &ids[slow_index], 1);
        assert_eq!(gone, 25, "UNKNOWN_MEMBER_ID");
        let described = describe(&mut slow_conn, group);
        let described: Vec<&str> = described
            .members
            .iter()
            .map(|m| m.member_id.as_str())
            .collect();
        assert_eq!(described, vec![ids[leader_index].as_str()]);
    }

    /// A Stable group whose member is alive when the broker crashes comes back as it was: the
    /// same generation, member, protocol and assignment, and the member's heartbeat is
    /// accepted. The member's session runs again from the restart, so once it stops
    /// heartbeating the broker removes it after its session timeout and the group is empty.
    #[test]
    fn a_stable_group_with_a_live_member_survives_a_restart() {
        // group.min.session.timeout.ms's default: the shortest session a member may ask for.
        const SESSION_TIMEOUT_MS: i32 = 6_000;
        let mut broker = start_broker();
        produce(&broker, "kept", 0, 6);
        let group = "kept-group";
        let mut conn = Conn::connect(broker.address);
        let mut request = join_request(group, "", "kept", 30_000);
        request.session_timeout_ms = SESSION_TIMEOUT_MS;
        let first: JoinGroupResponse = conn.call(JOIN_VERSION, &request);
        assert_eq!(first.error_code, 79, "MEMBER_ID_REQUIRED");
        request.member_id = first.member_id.clone();
        let joined: JoinGroupResponse = conn.call(JOIN_VERSION, &request);
        assert_eq!((joined.error_code, joined.generation_id), (0, 1));
        let member = joined.member_id.to_string();
        let mut assignment = sync_group_request::SyncGroupRequestAssignment::default();
        assignment.member_id = s(&member);
        assignment.assignment = Bytes::from_static(b"every partition");
        let mut sync = SyncGroupRequest::default();
        sync.group_id = GroupId(s(group));
        sync.generation_id = 1;
        sync.member_id = s(&member);
        sync.assignments = vec![assignment];
        // The answer comes once the group's metadata is in the log, so the crash below
        // cannot come before the write.
        let synced: SyncGroupResponse = conn.call(3, &sync);
        assert_eq!(synced.error_code, 0);
        assert_eq!(describe(&mut conn, group).group_state.as_str(), "Stable");

        let dir = broker.take_dir();
        let data = broker.data.clone();
        broker.kill();
        let broker = Broker::start_in(&data, OVERRIDES);
        let mut conn = Conn::connect(broker.address);
        let described = describe(&mut conn, group);
        assert_eq!(described.error_code, 0);
        assert_eq!(described.group_state.as_str(), "Stable");
        assert_eq!(described.protocol_type.as_str(), "consumer");
        assert_eq!(described.protocol_data.as_str(), "range");
        let members: Vec<(&str, &str, &Bytes, &Bytes)> = described
            .members
            .iter()
            .map(|m| {
                let client = m.client_id.as_str();
                (
                    m.member_id.as_str(),
                    client,
                    &m.member_metadata,
                    &m.member_assignment,
                )
            })
            .collect();
        let metadata = subscription("kept");
        let assigned = Bytes::from_static(b"every partition");
        assert_eq!(
            members,
            vec![(member.as_str(), "sluice-tests", &metadata, &assigned)]
        );
        // The restored member is a live one, in the generation it had.
        let last_heartbeat = Instant::now();
        assert_eq!(heartbeat(&mut conn, group, &member, 1), 0);

        // No more heartbeats: the broker must notice on its own.
        let deadline = Instant::now() + DEADLINE;
        let described = loop {
            let described = describe(&mut conn, group);
            if described.members.is_empty() {
                break described;
            }
            assert!(
                Instant::now() < deadline,
                "the member was not removed within {DEADLINE:?}"
            );
            std::thread::sleep(Duration::from_millis(100));
        };
        // The broker took the heartbeat after it was sent, so the session cannot have
        // expired earlier than this.
        let session = Duration::from_millis(SESSION_TIMEOUT_MS as u64);
        assert!(
            last_heartbeat.elapsed() >= session,
            "removed {:?} after its last heartbeat, within its session",
            last_heartbeat.elapsed()
        );
        assert_eq!(described.group_state.as_str(), "Empty");
        assert_eq!(
            heartbeat(&mut conn, group, &member, 1),
            25,
            "UNKNOWN_MEMBER_ID"
        );
        drop(dir);
    }

    /// The earliest offset of one partition, by ListOffsets.
    fn earliest_offset(conn: &mut Conn, topic: &str, partition: i32) -> i64 {
        let mut wanted = list_offsets_request::ListOffsetsPartition::default();
        wanted.partition_index = partition;
        wanted.timestamp = -2;
        let mut topic_request = list_offsets_request::ListOffsetsTopic::default();
        topic_request.name = TopicName(s(topic));
        topic_request.partitions = vec![wanted];
        let mut request = ListOffsetsRequest::default();
        request.replica_id = BrokerId(-1);
        request.topics = vec![topic_request];
        let answer: ListOffsetsResponse = conn.call(1, &request);
        let partition = &answer.topics[0].partitions[0];
        assert_eq!(partition.error_code, 0, "{answer:?}");
        partition.offset
    }

    /// Broker-wide retention deletes a plain topic's old segments but never the records of
    /// `__consumer_offsets`, which Kafka compacts instead: a group's committed offsets are still
    /// there after retention has run and the broker has restarted.
    #[test]
    fn broker_retention_leaves_committed_offsets_alone() {
        let overrides = [
            OVERRIDES,
            &[
                "log.retention.ms=1",
                "log.segment.bytes=2048",
                "log.retention.check.interval.ms=100",
            ],
        ]
        .concat();
        let mut broker = Broker::start(&overrides);
        let mut conn = Conn::connect(broker.address);
        // A plain topic under the same retention, of three batches that each fill a segment:
        // once its first segment is gone, retention has had its chance at the offsets topic.
        let value = vec![b'v'; 3000];
        for _ in 0..3 {
            let records = kafka::batch(&[kafka::Message::new("k", value.clone())]);
            let request = kafka::produce_request("aging", 0, Some(records), 1);
            assert_eq!(kafka::produce(&mut conn, &request).0, 0);
        }
        let group = "keeper";
        // Each commit is a record of its own; 100 of them fill several 2 KiB segments.
        for offset in 1..=100 {
            kafka::commit_standalone(&mut conn, group, &[("aging", 0, offset)]);
        }
        let deadline = Instant::now() + DEADLINE;
        while earliest_offset(&mut conn, "aging", 0) == 0 {
            assert!(Instant::now() < deadline, "retention never ran");
            std::thread::sleep(Duration::from_millis(50));
        }
        let partition = java_hash_partition(group, 4);
        assert_eq!(
            earliest_offset(&mut conn, "__consumer_offsets", partition),
            0
        );

        let dir = broker.take_dir();
        let data = broker.data.clone();
        broker.kill();
        let broker = Broker::start_in(&data, &overrides);
        let mut conn = Conn::connect(broker.address);
        let fetched = offset_fetch_v8(&mut conn, &[group]);
        assert_eq!(offsets_of(&fetched, group), vec![(0, 100)]);
        drop(dir);
    }

    /// `__consumer_offsets` is rewritten once it holds far more records than live keys (past
    /// 10,000 extra records): the log start moves past the old records, and after a SIGKILL the
    /// broker restores the latest commit from what is left.
    #[test]
    fn a_long_offsets_log_is_compacted_and_survives_a_crash() {
        let overrides = [OVERRIDES, &["offsets.retention.check.interval.ms=200"]].concat();
        let mut broker = Broker::start(&overrides);
        let mut conn = Conn::connect(broker.address);
        let records = kafka::batch(&[kafka::Message::new("k", "v")]);
        let request = kafka::produce_request("compacted", 0, Some(records), 1);
        assert_eq!(kafka::produce(&mut conn, &request).0, 0);
        let group = "rewritten";
        let commits = 10_100;
        for offset in 1..=commits {
            kafka::commit_standalone(&mut conn, group, &[("compacted", 0, offset)]);
        }
        let partition = java_hash_partition(group, 4);
        let deadline = Instant::now() + DEADLINE;
        // The check may run while the commits are still coming (on a slow machine), so the
        // log start may stop short of the last commit; any move past 0 is a compaction.
        while earliest_offset(&mut conn, "__consumer_offsets", partition) == 0 {
            assert!(Instant::now() < deadline, "never compacted");
            std::thread::sleep(Duration::from_millis(50));
        }
        let dir = broker.take_dir();
        let data = broker.data.clone();
        broker.kill();
        let broker = Broker::start_in(&data, &overrides);
        let mut conn = Conn::connect(broker.address);
        let fetched = offset_fetch_v8(&mut conn, &[group]);
        assert_eq!(offsets_of(&fetched, group), vec![(0, commits)]);
        drop(dir);
    }

    /// Kafka's placement: `abs(group.hashCode()) % partitions`.
    fn java_hash_partition(group: &str, partitions: i32) -> i32 {
        let hash = group.encode_utf16().fold(0i32, |h, unit| {
            h.wrapping_mul(31).wrapping_add(i32::from(unit))
        });
        let positive = if hash == i32::MIN { 0 } else { hash.abs() };
        positive % partitions
    }
}
