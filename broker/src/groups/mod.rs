//! The group coordinator for Kafka's classic consumer-group protocol. A group lives on the core
//! that owns its partition of `__consumer_offsets` (Kafka's placement: the Java hash of the
//! group id modulo the topic's partition count), so coordination is thread-per-core like the
//! data path. Offsets and group metadata are appended to that partition in Kafka's record
//! format and read back at start-up; timers run on the owning core.
//!
//! A write to `__consumer_offsets` takes its turn in the partition's line of appends (the
//! line produce uses, see `order`) synchronously, at the moment it is decided, so two writes
//! of one group reach the log in the order the group decided them, whatever order their tasks
//! later run in.

pub mod group;
pub mod records;
pub mod state;

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::rc::Rc;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use sluice_storage::DiskFile;

use crate::clock::now_ms;
use crate::metadata::TopicImage;
use crate::order::Turn;
use crate::partition::{Partition, PartitionError};
use crate::shard::Shard;
use group::{Effect, Group, JoinArgs, JoinResult, Reply, State, SyncResult};
use records::{Key, OffsetValue, Record, Value};
use state::Load;
pub use state::{partition_for, CoreGroups, GroupConfig, OFFSETS_TOPIC};

/// Longest metadata string an offset commit may carry (Kafka's `offset.metadata.max.bytes`).
pub const OFFSET_METADATA_MAX_BYTES: usize = 4096;
/// Bytes of `__consumer_offsets` read at a time when loading groups at start-up.
const LOAD_READ_BYTES_MAX: u64 = 1 << 20;

use crate::error_codes as code;

/// The configs `__consumer_offsets` is created with. Kafka compacts the topic, so time and
/// size retention never take a group's latest records; here retention is off and `compact`
/// rewrites the topic instead, whatever the broker-wide retention says. The segment size is
/// Kafka's `offsets.topic.segment.bytes` default.
fn offsets_topic_configs() -> BTreeMap<String, String> {
    [
        ("retention.ms", "-1"),
        ("retention.bytes", "-1"),
        ("segment.bytes", "104857600"),
    ]
    .into_iter()
    .map(|(key, value)| (key.to_owned(), value.to_owned()))
    .collect()
}

/// `__consumer_offsets`, created on first use with `offsets.topic.num.partitions` partitions
/// and `offsets.topic.replication.factor` replicas, capped by the live brokers, as Kafka caps it.
pub async fn offsets_topic(core: &Rc<Shard>) -> Result<Arc<TopicImage>, i16> {
    if let Some(topic) = core.shared.metadata.topic(OFFSETS_TOPIC) {
        return Ok(topic);
    }
    let partitions = core.groups.config(&core.shared.config).offsets_partitions;
    let configs = offsets_topic_configs();
    let live = core.shared.metadata.image().live_brokers().count();
    let factor = core
        .shared
        .config
        .offsets_replication_factor
        .min(i16::try_from(live).unwrap_or(i16::MAX))
        .max(1);
    let created = crate::cluster::create_topic(core, OFFSETS_TOPIC, partitions, factor, configs);
    match created.await {
        Ok(topic) => Ok(topic),
        Err(_) => core
            .shared
            .metadata
            .topic(OFFSETS_TOPIC)
            .ok_or(code::COORDINATOR_NOT_AVAILABLE),
    }
}

/// Where a group lives: its partition of `__consumer_offsets` and that partition's core.
#[derive(Debug, Clone, Copy)]
pub struct Placement {
    pub core: usize,
    pub partition: i32,
}

pub async fn placement(core: &Rc<Shard>, group: &str) -> Result<Placement, i16> {
    let topic = offsets_topic(core).await?;
    let partition = partition_for(group, topic.partition_count());
    Ok(Placement {
        core: core.shared.owner(OFFSETS_TOPIC, partition),
        partition,
    })
}

/// Runs `f` on the group (creating it when `create`), then does the effects it left.
fn with_group<T>(
    core: &Rc<Shard>,
    id: &str,
    partition: i32,
    create: bool,
    f: impl FnOnce(&mut Group) -> T,
) -> Option<T> {
    let (answer, effects) = {
        let mut groups = core.groups.groups.borrow_mut();
        if !groups.contains_key(id) {
            if !create {
                return None;
            }
            let delay = core.groups.config(&core.shared.config).initial_delay_ms;
            let mut group = Group::new(id, now_ms(), delay);
            let incarnation = core.groups.incarnations.get() + 1;
            core.groups.incarnations.set(incarnation);
            group.incarnation = incarnation;
            groups.insert(id.to_owned(), group);
        }
        let group = groups.get_mut(id).expect("inserted above");
        let answer = f(group);
        let drained: Vec<Effect> = group.effects.drain(..).collect();
        let effects: Vec<_> = drained
            .into_iter()
            .map(|effect| match effect {
                Effect::Persist { then } => Action::Persist(group.metadata_value(), then),
                other => Action::Other(other),
            })
            .collect();
        (answer, effects)
    };
    for effect in effects {
        apply(core, id, partition, effect);
    }
    Some(answer)
}

/// SyncGroup answers to send once the group's metadata is written.
type SyncAnswers = Vec<(flume::Sender<SyncResult>, SyncResult)>;

enum Action {
    Persist(records::GroupValue, SyncAnswers),
    Other(Effect),
}

fn apply(core: &Rc<Shard>, id: &str, partition: i32, action: Action) {
    let core = core.clone();
    let id = id.to_owned();
    match action {
        Action::Persist(value, then) => {
            // The turn is taken here, as the group decides the write, not when the task runs.
            let write = Write::decide(&core, partition);
            compio::runtime::spawn(async move {
                let record = Record {
                    key: Key::Group { group: id.clone() },
                    value: Some(Value::Group(value)),
                };
                let written = write.append(&core, &[record]).await;
                for (sender, mut result) in then {
                    if let Err(error) = written {
                        result = SyncResult {
                            error,
                            ..SyncResult::default()
                        };
                    }
                    let _ = sender.send(result);
                }
            })
            .detach();
        }
        Action::Other(Effect::WatchSession { member_id }) => {
            compio::runtime::spawn(watch_session(core, id, partition, member_id)).detach();
        }
        Action::Other(Effect::RebalanceTimer {
            epoch,
            not_before_ms,
            deadline_ms,
        }) => {
            compio::runtime::spawn(async move {
                for (at_ms, deadline) in [(not_before_ms, false), (deadline_ms, true)] {
                    sleep_until(at_ms).await;
                    let live = with_group(&core, &id, partition, false, |g| {
                        g.rebalance_timer(epoch, now_ms(), deadline)
                    });
                    if live != Some(true) {
                        return;
                    }
                }
            })
            .detach();
        }
        Action::Other(Effect::ExpirePending { member_id, at_ms }) => {
            compio::runtime::spawn(async move {
                sleep_until(at_ms).await;
                with_group(&core, &id, partition, false, |g| {
                    g.expire_pending(&member_id, now_ms())
                });
            })
            .detach();
        }
        Action::Other(Effect::Persist { .. }) => unreachable!("mapped to Action::Persist"),
    }
}

async fn sleep_until(at_ms: i64) {
    let wait = at_ms.saturating_sub(now_ms());
    if wait > 0 {
        compio::time::sleep(Duration::from_millis(wait as u64)).await;
    }
}

/// Removes the member when its session expires; ends when the member is gone.
async fn watch_session(core: Rc<Shard>, id: String, partition: i32, member_id: String) {
    loop {
        let next = with_group(&core, &id, partition, false, |g| {
            g.session_check(&member_id, now_ms())
        });
        let Some(Some(next_check_ms)) = next else {
            return;
        };
        if core.shared.stopping.load(Ordering::Relaxed) {
            return;
        }
        sleep_until(next_check_ms).await;
    }
}

/// A write to a group's partition of `__consumer_offsets`, holding its place in that
/// partition's line of appends from the moment it was decided. Lives on the owner core.
struct Write {
    partition: i32,
    place: Option<(Rc<Partition>, Turn)>,
}

impl Write {
    /// Takes the next turn on `partition`. Must be called synchronously where the write is
    /// decided (no await between the decision and this), or two writes can swap.
    fn decide(core: &Shard, partition: i32) -> Write {
        let place = core.partition(OFFSETS_TOPIC, partition).map(|log| {
            let turn = log.take_turn();
            (log, turn)
        });
        Write { partition, place }
    }

    /// Waits for the turn, then appends `records` as one batch. An empty write gives its turn
    /// up at once.
    async fn append(self, core: &Shard, records: &[Record]) -> Result<(), i16> {
        let partition = self.partition;
        if records.is_empty() {
            return Ok(());
        }
        let Some((log, turn)) = self.place else {
            return Err(code::COORDINATOR_NOT_AVAILABLE);
        };
        let appended = {
            let _waiting = crate::metrics::cells::Waiting::enter(&core.metrics.appends_waiting);
            turn.wait().await;
            let now = now_ms();
            let batch = records::encode_batch(records, now);
            log.append_as_leader(&turn, batch.into(), now).await
        };
        drop(turn);
        // As Kafka writes them, with acks=all: the answer waits until every in-sync replica
        // has the records, so a committed offset survives the coordinator's broker.
        let committed = match appended {
            Ok(result) => {
                let timeout = core.groups.config(&core.shared.config).commit_timeout_ms;
                let deadline = std::time::Instant::now() + Duration::from_millis(timeout);
                let _waiting = crate::metrics::cells::Waiting::enter(&core.metrics.appends_waiting);
                log.wait_committed(result.last_offset, deadline).await
            }
            Err(error) => Err(error),
        };
        match committed {
            Ok(Some(_)) => Ok(()),
            // Not replicated in time: Kafka answers a coordinator that is not available.
            Ok(None) => Err(code::COORDINATOR_NOT_AVAILABLE),
            // Leadership moved: the client looks for the new coordinator.
            Err(PartitionError::NotLeader) => Err(code::NOT_COORDINATOR),
            Err(error) => {
                tracing::error!(partition, %error, "cannot append to {OFFSETS_TOPIC}");
                Err(code::COORDINATOR_NOT_AVAILABLE)
            }
        }
    }
}

/// A member id: the client id, a dash and a UUID. The client id is cut (on a character
/// boundary) so the whole id fits a Kafka string's i16 length and is stored whole.
fn new_member_id(client_id: &str) -> String {
    const SUFFIX_LEN: usize = 1 + uuid::fmt::Hyphenated::LENGTH;
    let prefix_len_max = i16::MAX as usize - SUFFIX_LEN;
    let mut cut = client_id.len().min(prefix_len_max);
    while !client_id.is_char_boundary(cut) {
        cut -= 1;
    }
    let id = uuid::Uuid::from_bytes(crate::ids::random_id());
    let member_id = format!("{}-{}", &client_id[..cut], id.hyphenated());
    debug_assert!(member_id.len() <= i16::MAX as usize);
    member_id
}

/// JoinGroup on the owner core; waits while the rebalance runs.
pub async fn join(core: &Rc<Shard>, group: String, partition: i32, args: JoinArgs) -> JoinResult {
    let config = core.groups.config(&core.shared.config).clone();
    let fail = |error| JoinResult {
        error,
        generation: -1,
        member_id: args.member_id.clone(),
        ..JoinResult::default()
    };
    if group.is_empty() {
        return fail(code::INVALID_GROUP_ID);
    }
    let session = args.session_timeout_ms;
    if session < config.session_timeout_min_ms || session > config.session_timeout_max_ms {
        return fail(code::INVALID_SESSION_TIMEOUT);
    }
    let member_id = new_member_id(&args.client_id);
    let reply = with_group(core, &group, partition, true, |g| {
        g.join(args.clone(), member_id, now_ms())
    });
    match reply {
        Some(Reply::Now(result)) => result,
        Some(Reply::Later(receiver)) => receiver
            .recv_async()
            .await
            .unwrap_or_else(|_| fail(code::UNKNOWN_MEMBER_ID)),
        None => fail(code::COORDINATOR_NOT_AVAILABLE),
    }
}

/// SyncGroup on the owner core; followers wait for the leader's assignment.
pub async fn sync(
    core: &Rc<Shard>,
    group: String,
    partition: i32,
    member: (String, Option<String>, i32),
    assignments: Vec<(String, Bytes)>,
) -> SyncResult {
    let (member_id, instance_id, generation) = member;
    let reply = with_group(core, &group, partition, false, |g| {
        g.sync(
            &member_id,
            instance_id.as_deref(),
            generation,
            assignments,
            now_ms(),
        )
    });
    let error = |error| SyncResult {
        error,
        ..SyncResult::default()
    };
    match reply {
        Some(Reply::Now(result)) => result,
        Some(Reply::Later(receiver)) => receiver
            .recv_async()
            .await
            .unwrap_or_else(|_| error(code::REBALANCE_IN_PROGRESS)),
        None => error(code::UNKNOWN_MEMBER_ID),
    }
}

pub fn heartbeat(
    core: &Rc<Shard>,
    group: &str,
    partition: i32,
    member: (String, Option<String>, i32),
) -> i16 {
    let (member_id, instance_id, generation) = member;
    with_group(core, group, partition, false, |g| {
        g.heartbeat(&member_id, instance_id.as_deref(), generation, now_ms())
    })
    .unwrap_or(code::UNKNOWN_MEMBER_ID)
}

/// LeaveGroup for each (member id, instance id); one error code per member.
pub fn leave(
    core: &Rc<Shard>,
    group: &str,
    partition: i32,
    members: Vec<(String, Option<String>)>,
) -> Vec<i16> {
    let count = members.len();
    with_group(core, group, partition, false, |g| {
        members
            .iter()
            .map(|(id, instance)| g.leave(id, instance.as_deref(), now_ms()))
            .collect()
    })
    .unwrap_or_else(|| vec![code::UNKNOWN_MEMBER_ID; count])
}

/// One partition's commit as the handler passes it on.
pub struct Commit {
    pub topic: String,
    pub partition: i32,
    pub value: OffsetValue,
}

/// OffsetCommit on the owner core: checks membership, appends, then applies. The answer is
/// the error for every partition (NONE once the records are in the log).
pub async fn commit(
    core: &Rc<Shard>,
    group: String,
    partition: i32,
    member: (String, Option<String>, i32),
    commits: Vec<Commit>,
) -> i16 {
    let (member_id, instance_id, generation) = member;
    let create = generation < 0;
    let checked = with_group(core, &group, partition, create, |g| {
        let error = g.check_commit(&member_id, instance_id.as_deref(), generation);
        let keys = commits.iter().map(|c| (c.topic.clone(), c.partition));
        let seq = (error == code::NONE).then(|| g.in_flight.decide_commit(keys));
        (error, g.incarnation, seq)
    });
    let (incarnation, seq) = match checked {
        None => return code::ILLEGAL_GENERATION,
        Some((code::NONE, incarnation, Some(seq))) => (incarnation, seq),
        Some((error, _, _)) => return error,
    };
    let records: Vec<Record> = commits
        .iter()
        .map(|c| Record {
            key: Key::Offset {
                group: group.clone(),
                topic: c.topic.clone(),
                partition: c.partition,
            },
            value: Some(Value::Offset(c.value.clone())),
        })
        .collect();
    let write = Write::decide(core, partition);
    let appended = write.append(core, &records).await;
    // A DeleteGroups that ran while the append waited has removed the group and written
    // tombstones for these keys after these records; the offsets are gone, in memory as in the
    // log. An OffsetDelete has done the same for its keys.
    with_group(core, &group, partition, false, |g| {
        if g.incarnation != incarnation {
            return;
        }
        if appended.is_ok() {
            g.touch(&member_id, now_ms());
        }
        for c in commits {
            let key = (c.topic, c.partition);
            if g.in_flight.complete_commit(&key, seq) && appended.is_ok() {
                g.offsets.insert(key, c.value);
            }
        }
    });
    match appended {
        Ok(()) => code::NONE,
        Err(error) => error,
    }
}

/// Committed offsets by topic: (topic, [(partition, offset if committed)]).
pub type TopicOffsets = Vec<(String, Vec<(i32, Option<OffsetValue>)>)>;

/// Committed offsets of `group` for the requested topics and partitions, or all of them.
pub fn fetch_offsets(
    core: &Rc<Shard>,
    group: &str,
    wanted: Option<Vec<(String, Vec<i32>)>>,
) -> TopicOffsets {
    let groups = core.groups.groups.borrow();
    let offsets = groups.get(group).map(|g| &g.offsets);
    match wanted {
        Some(topics) => topics
            .into_iter()
            .map(|(topic, partitions)| {
                let found = partitions
                    .into_iter()
                    .map(|p| (p, offsets.and_then(|o| o.get(&(topic.clone(), p))).cloned()))
                    .collect();
                (topic, found)
            })
            .collect(),
        None => {
            let mut by_topic: BTreeMap<String, Vec<(i32, Option<OffsetValue>)>> = BTreeMap::new();
            for ((topic, p), value) in offsets.into_iter().flatten() {
                by_topic
                    .entry(topic.clone())
                    .or_default()
                    .push((*p, Some(value.clone())));
            }
            for partitions in by_topic.values_mut() {
                partitions.sort_by_key(|(p, _)| *p);
            }
            by_topic.into_iter().collect()
        }
    }
}

/// (group, protocol type, state) of every group on this core.
pub fn list(core: &Rc<Shard>) -> Vec<(String, String, &'static str)> {
    let groups = core.groups.groups.borrow();
    groups
        .values()
        .filter(|g| g.state != State::Dead)
        .map(|g| {
            let protocol_type = g.protocol_type.clone().unwrap_or_default();
            (g.id.clone(), protocol_type, g.state.name())
        })
        .collect()
}

/// DescribeGroups' view of one group; `None` when the coordinator does not know it.
pub struct Description {
    pub state: &'static str,
    pub protocol_type: String,
    pub protocol: String,
    pub members: Vec<(String, Option<String>, String, String, Bytes, Bytes)>,
}

pub fn describe(core: &Rc<Shard>, group: &str) -> Option<Description> {
    let groups = core.groups.groups.borrow();
    let g = groups.get(group)?;
    // As in Kafka, the protocol is shown only once the group is stable with it.
    let settled = g.state == State::Stable;
    Some(Description {
        state: g.state.name(),
        protocol_type: g.protocol_type.clone().unwrap_or_default(),
        protocol: if settled {
            g.protocol.clone().unwrap_or_default()
        } else {
            String::new()
        },
        members: g.describe_members(),
    })
}

/// DeleteGroups for one group: only an empty group goes, with tombstones for its offsets and
/// its metadata.
pub async fn delete(core: &Rc<Shard>, group: String, partition: i32) -> i16 {
    let (tombstones, write) = {
        let mut groups = core.groups.groups.borrow_mut();
        let Some(g) = groups.get_mut(&group) else {
            return code::GROUP_ID_NOT_FOUND;
        };
        if g.state != State::Empty {
            return code::NON_EMPTY_GROUP;
        }
        g.mark_dead(now_ms());
        let removed = groups.remove(&group).expect("present above");
        // Keys of commits still on their way to the log get tombstones too, written after them.
        let mut keys: BTreeSet<(String, i32)> = removed.offsets.keys().cloned().collect();
        keys.extend(removed.in_flight.keys().cloned());
        let tombstones = tombstones_for(&group, keys.into_iter(), true);
        (tombstones, Write::decide(core, partition))
    };
    match write.append(core, &tombstones).await {
        Ok(()) => code::NONE,
        Err(error) => error,
    }
}

fn tombstones_for(
    group: &str,
    offsets: impl Iterator<Item = (String, i32)>,
    with_metadata: bool,
) -> Vec<Record> {
    let mut out: Vec<Record> = offsets
        .map(|(topic, partition)| Record {
            key: Key::Offset {
                group: group.to_owned(),
                topic,
                partition,
            },
            value: None,
        })
        .collect();
    if with_metadata {
        out.push(Record {
            key: Key::Group {
                group: group.to_owned(),
            },
            value: None,
        });
    }
    out
}

/// OffsetDelete: removes committed offsets of topics the group does not consume now. `Err` is
/// a group-level error; otherwise one code per requested partition.
pub async fn delete_offsets(
    core: &Rc<Shard>,
    group: String,
    partition: i32,
    wanted: Vec<(String, Vec<i32>)>,
) -> Result<Vec<(String, Vec<(i32, i16)>)>, i16> {
    let (answer, tombstones, write) = {
        let mut groups = core.groups.groups.borrow_mut();
        let Some(g) = groups.get_mut(&group) else {
            return Err(code::GROUP_ID_NOT_FOUND);
        };
        let subscribed = g.subscribed_topics();
        let mut answer = Vec::new();
        let mut removed = Vec::new();
        for (topic, partitions) in wanted {
            let in_use = subscribed.contains(&topic);
            let mut codes_out = Vec::new();
            for p in partitions {
                if in_use {
                    codes_out.push((p, code::GROUP_SUBSCRIBED_TO_TOPIC));
                    continue;
                }
                let key = (topic.clone(), p);
                let in_flight = g.in_flight.contains(&key);
                if g.offsets.remove(&key).is_some() || in_flight {
                    g.in_flight.decide_tombstone(&key);
                    removed.push(key);
                }
                codes_out.push((p, code::NONE));
            }
            answer.push((topic, codes_out));
        }
        let tombstones = tombstones_for(&group, removed.into_iter(), false);
        (answer, tombstones, Write::decide(core, partition))
    };
    write.append(core, &tombstones).await?;
    Ok(answer)
}

/// Loads this core's groups from the partitions of `__consumer_offsets` it leads and starts
/// the offset-expiry timer. Runs at start-up; other cores may already forward group work here,
/// which is answered COORDINATOR_LOAD_IN_PROGRESS until the load is done.
pub async fn start(core: &Rc<Shard>) {
    debug_assert!(!core.groups.loaded());
    if let Some(topic) = core.shared.metadata.topic(OFFSETS_TOPIC) {
        for partition in 0..topic.partition_count() {
            if core.shared.owner(OFFSETS_TOPIC, partition) != core.id {
                continue;
            }
            if let Some(epoch) = leading_epoch(core, partition) {
                let loading = Load::Loading(epoch);
                core.groups
                    .partitions
                    .borrow_mut()
                    .insert(partition, loading);
                load(core, partition, epoch).await;
            }
        }
    }
    core.groups.loaded.set(true);
    let period = core.groups.config(&core.shared.config).retention_check_ms;
    let core = core.clone();
    compio::runtime::spawn(async move {
        loop {
            compio::time::sleep(Duration::from_millis(period)).await;
            if core.shared.stopping.load(Ordering::Relaxed) {
                return;
            }
            expire_offsets(&core, now_ms()).await;
            compact_when_due(&core).await;
        }
    })
    .detach();
}

/// The leader epoch of `partition` of `__consumer_offsets` if this broker leads it.
fn leading_epoch(core: &Shard, partition: i32) -> Option<i32> {
    let log = core.partition(OFFSETS_TOPIC, partition)?;
    let replica = log.replica();
    replica.is_leader().then(|| replica.leader_epoch())
}

/// Whether this core answers for the groups of `partition` now. The coordinator moves with
/// the partition's leadership: the first request after this broker became its leader replays
/// the partition before it is answered (others arriving meanwhile get
/// COORDINATOR_LOAD_IN_PROGRESS, which clients retry), and the replay is done again whenever
/// the leader epoch changes, since another leader may have written in between. A broker that
/// does not lead it answers NOT_COORDINATOR.
pub async fn ensure_loaded(core: &Rc<Shard>, partition: i32) -> Result<(), i16> {
    if !core.groups.loaded() {
        return Err(code::COORDINATOR_LOAD_IN_PROGRESS);
    }
    let Some(epoch) = leading_epoch(core, partition) else {
        unload(core, partition);
        return Err(code::NOT_COORDINATOR);
    };
    let current = core.groups.partitions.borrow().get(&partition).copied();
    match current {
        Some(Load::Loaded(e)) if e == epoch => Ok(()),
        Some(Load::Loading(e)) if e == epoch => Err(code::COORDINATOR_LOAD_IN_PROGRESS),
        _ => {
            core.groups
                .partitions
                .borrow_mut()
                .insert(partition, Load::Loading(epoch));
            if load(core, partition, epoch).await {
                Ok(())
            } else {
                Err(code::COORDINATOR_LOAD_IN_PROGRESS)
            }
        }
    }
}

/// Replays `partition` into fresh groups, for leader epoch `epoch`; whether this core now
/// answers for them.
async fn load(core: &Rc<Shard>, partition: i32, epoch: i32) -> bool {
    let records = read_partition(core, partition).await;
    let wanted = core.groups.partitions.borrow().get(&partition) == Some(&Load::Loading(epoch));
    if !wanted {
        return false;
    }
    match records {
        Ok(records) => {
            forget_groups(core, partition);
            restore(core, partition, records);
            let mut loads = core.groups.partitions.borrow_mut();
            loads.insert(partition, Load::Loaded(epoch));
            tracing::info!(
                partition,
                epoch,
                "coordinating the groups of {OFFSETS_TOPIC}"
            );
            true
        }
        Err(error) => {
            tracing::error!(partition, %error, "cannot load groups from {OFFSETS_TOPIC}");
            core.groups.partitions.borrow_mut().remove(&partition);
            false
        }
    }
}

fn unload(core: &Shard, partition: i32) {
    if core
        .groups
        .release(partition, offsets_partition_count(core))
    {
        tracing::info!(
            partition,
            "no longer coordinating the groups of {OFFSETS_TOPIC}"
        );
    }
}

fn offsets_partition_count(core: &Shard) -> i32 {
    let topic = core.shared.metadata.topic(OFFSETS_TOPIC);
    topic.map_or(0, |t| t.partition_count())
}

/// Drops the groups that live on `partition`. Members waiting on a rebalance are answered as
/// if they were unknown, and join again at the new coordinator.
fn forget_groups(core: &Shard, partition: i32) {
    core.groups.forget(partition, offsets_partition_count(core));
}

async fn read_partition(core: &Rc<Shard>, partition: i32) -> Result<Vec<Record>, String> {
    let Some(log) = core.partition(OFFSETS_TOPIC, partition) else {
        return Ok(Vec::new());
    };
    let mut from = log.offsets().log_start_offset;
    let mut out = Vec::new();
    while from < log.offsets().log_end_offset {
        let read = match log.read_to_log_end(from, LOAD_READ_BYTES_MAX).await {
            Ok(read) => read,
            // Another broker leads it: its groups are coordinated there.
            Err(PartitionError::NotLeader) => return Ok(Vec::new()),
            Err(error) => return Err(error.to_string()),
        };
        let mut advanced = false;
        for region in read.regions {
            let len = usize::try_from(region.len).map_err(|e| e.to_string())?;
            let bytes = region
                .file
                .read_at(len, region.position)
                .await
                .map_err(|e| e.to_string())?;
            let mut skipped = |error| tracing::warn!(partition, %error, "skipping a record");
            let (records, next) = records::decode_batches(&bytes, &mut skipped);
            out.extend(records);
            if let Some(next) = next.filter(|n| *n > from) {
                from = next;
                advanced = true;
            }
        }
        if !advanced {
            break;
        }
    }
    Ok(out)
}

/// Records a partition of `__consumer_offsets` may hold beyond twice its live keys before it
/// is compacted.
const COMPACT_SLACK_RECORDS: i64 = 10_000;
/// Encoded bytes per batch a compaction writes: far below the topic's `max.message.bytes`.
const COMPACT_BATCH_BYTES: usize = 256 << 10;

/// Kafka compacts `__consumer_offsets`; Sluice rewrites it instead, keeping offsets dense. The
/// latest record of each live key is appended again, the log is flushed, and the log start
/// moves to the first rewritten record (DeleteRecords), so start-up replays only live records
/// and whole segments below the start are deleted. The rewrite takes the partition's next turn
/// and holds it throughout: every write decided before it is in what it reads, every write
/// decided after lands after it. A crash before the log start moves leaves copies of latest
/// values, which replay reads as they are. Returns the records rewritten.
async fn compact(core: &Rc<Shard>, partition: i32) -> Result<usize, String> {
    let Some(place) = core.partition(OFFSETS_TOPIC, partition) else {
        return Ok(0);
    };
    let turn = place.take_turn();
    turn.wait().await;
    let live = latest_per_key(read_partition(core, partition).await?);
    let now = now_ms();
    let batches = chunks_by_size(&live)
        .into_iter()
        .map(|chunk| records::encode_batch(chunk, now).into())
        .collect();
    place
        .rewrite_as_leader(&turn, batches, now)
        .await
        .map_err(|e| e.to_string())?;
    Ok(live.len())
}

/// Splits records into runs whose batches stay near `COMPACT_BATCH_BYTES`, judged by the
/// encoded key and value (record framing adds a few bytes each).
fn chunks_by_size(records: &[Record]) -> Vec<&[Record]> {
    let mut chunks = Vec::new();
    let (mut from, mut bytes) = (0, 0);
    for (i, record) in records.iter().enumerate() {
        let value_len = record
            .value
            .as_ref()
            .map_or(0, |v| records::encode_value(v).len());
        let len = records::encode_key(&record.key).len() + value_len;
        if i > from && bytes + len > COMPACT_BATCH_BYTES {
            chunks.push(&records[from..i]);
            (from, bytes) = (i, 0);
        }
        bytes += len;
    }
    if from < records.len() {
        chunks.push(&records[from..]);
    }
    chunks
}

/// Compacts each of this core's partitions of `__consumer_offsets` that holds more than twice
/// its live keys (a group's metadata and its offsets) plus `COMPACT_SLACK_RECORDS`.
async fn compact_when_due(core: &Rc<Shard>) {
    let Some(topic) = core.shared.metadata.topic(OFFSETS_TOPIC) else {
        return;
    };
    let partitions = topic.partition_count();
    let mut live: HashMap<i32, i64> = HashMap::new();
    for g in core.groups.groups.borrow().values() {
        *live.entry(partition_for(&g.id, partitions)).or_default() += g.offsets.len() as i64 + 1;
    }
    for partition in 0..partitions {
        let Some(place) = core.partition(OFFSETS_TOPIC, partition) else {
            continue;
        };
        let offsets = place.offsets();
        let held = offsets.log_end_offset - offsets.log_start_offset;
        let live = live.get(&partition).copied().unwrap_or(0);
        if held <= 2 * live + COMPACT_SLACK_RECORDS {
            continue;
        }
        match compact(core, partition).await {
            Ok(kept) => tracing::info!(partition, held, kept, "compacted {OFFSETS_TOPIC}"),
            Err(error) => tracing::error!(partition, %error, "cannot compact {OFFSETS_TOPIC}"),
        }
    }
}

/// What records in log order amount to: the latest value of each key that a tombstone did not
/// delete last, in the order the keys first appeared.
fn latest_per_key(records: Vec<Record>) -> Vec<Record> {
    let mut latest: HashMap<Key, Option<Value>> = HashMap::new();
    let mut order: Vec<Key> = Vec::new();
    for record in records {
        if !latest.contains_key(&record.key) {
            order.push(record.key.clone());
        }
        latest.insert(record.key, record.value);
    }
    order
        .into_iter()
        .filter_map(|key| {
            let value = latest.remove(&key).flatten()?;
            Some(Record {
                key,
                value: Some(value),
            })
        })
        .collect()
}

/// Replays records in log order: the latest value per key wins and a tombstone deletes.
fn restore(core: &Rc<Shard>, partition: i32, records: Vec<Record>) {
    let now = now_ms();
    let mut loaded = 0usize;
    let mut with_metadata: HashSet<String> = HashSet::new();
    let mut with_offsets: HashSet<String> = HashSet::new();
    for record in latest_per_key(records) {
        let (key, Some(value)) = (record.key, record.value) else {
            continue;
        };
        match (key, value) {
            (Key::Group { group }, Value::Group(value)) => {
                with_group(core, &group, partition, true, |g| g.restore(value, now));
                with_metadata.insert(group);
                loaded += 1;
            }
            (
                Key::Offset {
                    group,
                    topic,
                    partition: p,
                },
                Value::Offset(value),
            ) => {
                with_group(core, &group, partition, true, |g| {
                    g.offsets.insert((topic, p), value);
                });
                with_offsets.insert(group);
            }
            _ => {}
        }
    }
    // A group known only by its offsets (one that commits without joining) has been empty
    // since its newest commit at the latest, so its retention runs from there, not from now.
    for id in with_offsets.difference(&with_metadata) {
        with_group(core, id, partition, false, |g| {
            if let Some(newest) = g.offsets.values().map(|v| v.commit_ms).max() {
                g.state_since_ms = newest;
            }
        });
    }
    if loaded > 0 {
        tracing::info!(partition, groups = loaded, "loaded consumer groups");
    }
}

/// Drops offsets of empty groups older than `offsets.retention.minutes` (counted from the
/// later of the commit and the moment the group became empty), then empty groups with none.
/// The time is passed in so that tests can stand at either side of the retention.
async fn expire_offsets(core: &Rc<Shard>, now: i64) {
    let Some(topic) = core.shared.metadata.topic(OFFSETS_TOPIC) else {
        return;
    };
    let retention_ms = core.groups.config(&core.shared.config).retention_ms;
    let mut by_partition: BTreeMap<i32, Vec<Record>> = BTreeMap::new();
    {
        let mut groups = core.groups.groups.borrow_mut();
        let mut gone = Vec::new();
        for (id, g) in groups.iter_mut() {
            if g.state != State::Empty {
                continue;
            }
            let since = g.state_since_ms;
            // A key with a commit on its way to the log is fresh, whatever its old value says.
            let expired: Vec<(String, i32)> = g
                .offsets
                .iter()
                .filter(|(key, v)| {
                    now - v.commit_ms.max(since) >= retention_ms && !g.in_flight.contains(key)
                })
                .map(|(k, _)| k.clone())
                .collect();
            for key in &expired {
                g.offsets.remove(key);
            }
            let drop_group =
                g.offsets.is_empty() && g.in_flight.is_empty() && now - since >= retention_ms;
            if expired.is_empty() && !drop_group {
                continue;
            }
            let partition = partition_for(id, topic.partition_count());
            let records = tombstones_for(id, expired.into_iter(), drop_group);
            by_partition.entry(partition).or_default().extend(records);
            if drop_group {
                gone.push(id.clone());
            }
        }
        for id in gone {
            groups.remove(&id);
        }
    }
    let writes: Vec<(Write, Vec<Record>)> = by_partition
        .into_iter()
        .map(|(partition, records)| (Write::decide(core, partition), records))
        .collect();
    for (write, records) in writes {
        tracing::info!(
            partition = write.partition,
            count = records.len(),
            "expiring committed offsets"
        );
        let _ = write.append(core, &records).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{BrokerConfig, Properties};
    use crate::shard::Shared;

    /// A one-core broker state on `dir` with a one-partition `__consumer_offsets`.
    async fn offsets_core(dir: &std::path::Path) -> Rc<Shard> {
        offsets_core_with(dir, &[]).await
    }

    /// Runs `test` on a fresh [`offsets_core`] whose groups count as loaded, then closes it.
    fn on_loaded_core<F, Fut>(test: F)
    where
        F: FnOnce(Rc<Shard>) -> Fut,
        Fut: std::future::Future<Output = ()>,
    {
        let dir = tempfile::tempdir().expect("temp dir");
        let runtime = compio::runtime::Runtime::new().expect("runtime");
        runtime.block_on(async {
            let core = offsets_core(dir.path()).await;
            core.groups.loaded.set(true);
            test(core.clone()).await;
            core.close_all().await;
        });
    }

    /// [`offsets_core`] with broker properties set.
    async fn offsets_core_with(dir: &std::path::Path, properties: &[(&str, &str)]) -> Rc<Shard> {
        let mut set = Properties::default();
        for (key, value) in properties {
            set.set(key, value).expect("a valid property");
        }
        let mut config = BrokerConfig::from_properties(set).expect("valid properties");
        config.log_dir = dir.to_owned();
        let node = config.node_id;
        let shared = Shared::new(config, crate::backend::probe(), 1, Vec::new(), None);
        let core = Rc::new(Shard::new(0, Arc::new(shared), vec![None]));
        let topic = TopicImage {
            name: OFFSETS_TOPIC.to_owned(),
            id: crate::ids::random_id(),
            partitions: vec![crate::metadata::PartitionImage::new(vec![node])],
            configs: BTreeMap::new(),
        };
        let records = crate::metadata::delta::topic_records(&topic);
        crate::cluster::apply_locally(&core, records).await;
        core
    }

    fn offset_record(group: &str) -> Record {
        Record {
            key: Key::Offset {
                group: group.to_owned(),
                topic: "t".to_owned(),
                partition: 0,
            },
            value: Some(Value::Offset(OffsetValue {
                offset: 1,
                leader_epoch: -1,
                metadata: String::new(),
                commit_ms: 0,
            })),
        }
    }

    #[test]
    fn writes_reach_the_log_in_the_order_they_were_decided() {
        let dir = tempfile::tempdir().expect("temp dir");
        let runtime = compio::runtime::Runtime::new().expect("runtime");
        runtime.block_on(async {
            let core = offsets_core(dir.path()).await;
            let first = Write::decide(&core, 0);
            let second = Write::decide(&core, 0);
            // The later write's task runs first and finds the log free; it must still wait.
            let late = compio::runtime::spawn({
                let core = core.clone();
                async move { second.append(&core, &[offset_record("second")]).await }
            });
            let early = compio::runtime::spawn({
                let core = core.clone();
                async move { first.append(&core, &[offset_record("first")]).await }
            });
            assert_eq!(late.await.expect("task"), Ok(()));
            assert_eq!(early.await.expect("task"), Ok(()));
            let records = read_partition(&core, 0).await.expect("read back");
            let groups: Vec<&str> = records
                .iter()
                .map(|r| match &r.key {
                    Key::Offset { group, .. } | Key::Group { group } => group.as_str(),
                })
                .collect();
            assert_eq!(groups, ["first", "second"]);
            // A write decided but never made gives its turn up.
            let abandoned = Write::decide(&core, 0);
            drop(abandoned);
            let write = Write::decide(&core, 0);
            assert_eq!(write.append(&core, &[offset_record("third")]).await, Ok(()));
            core.close_all().await;
        });
    }

    #[test]
    fn a_commit_racing_a_delete_does_not_bring_the_group_back() {
        on_loaded_core(|core| async move {
            // Holding the first turn keeps the commit's append waiting while the delete runs.
            let blocker = Write::decide(&core, 0);
            let commit_task = compio::runtime::spawn({
                let core = core.clone();
                async move { commit(&core, "g".into(), 0, standalone(), commit_of(5)).await }
            });
            let delete_task = compio::runtime::spawn({
                let core = core.clone();
                async move { delete(&core, "g".into(), 0).await }
            });
            compio::runtime::spawn(async move { drop(blocker) }).detach();
            assert_eq!(commit_task.await.expect("task"), code::NONE);
            assert_eq!(delete_task.await.expect("task"), code::NONE);
            assert!(core.groups.groups.borrow().get("g").is_none());
            // The log agrees: replayed, as at start-up, it has no group "g" either.
            let records = read_partition(&core, 0).await.expect("read back");
            assert!(matches!(records.last(), Some(r) if r.value.is_none()));
            restore(&core, 0, records);
            assert!(core.groups.groups.borrow().get("g").is_none());
        })
    }

    /// A commit made outside any generation, as a consumer that assigns itself partitions
    /// makes it: (member id, instance id, generation).
    fn standalone() -> (String, Option<String>, i32) {
        (String::new(), None, -1)
    }

    /// A commit of `offset` for partition 0 of topic "t", made now.
    fn commit_of(offset: i64) -> Vec<Commit> {
        let value = OffsetValue {
            offset,
            leader_epoch: -1,
            metadata: String::new(),
            commit_ms: now_ms(),
        };
        vec![Commit {
            topic: "t".into(),
            partition: 0,
            value,
        }]
    }

    /// Compaction keeps exactly the latest live record of each key and moves the log start
    /// past everything else; replaying the compacted log gives the same groups, and a write
    /// after it lands after it.
    #[test]
    fn compaction_keeps_the_latest_live_records() {
        on_loaded_core(|core| async move {
            for offset in 1..=20 {
                let committed = commit(&core, "keeper".into(), 0, standalone(), commit_of(offset));
                assert_eq!(committed.await, code::NONE);
            }
            let committed = commit(&core, "gone".into(), 0, standalone(), commit_of(7));
            assert_eq!(committed.await, code::NONE);
            assert_eq!(delete(&core, "gone".into(), 0).await, code::NONE);
            let bounds = || async {
                let offsets = core.partition(OFFSETS_TOPIC, 0).expect("owned").offsets();
                (offsets.log_start_offset, offsets.log_end_offset)
            };
            let (start, end) = bounds().await;
            assert_eq!((start, end), (0, 23), "20 commits, 1 commit, 2 tombstones");

            assert_eq!(compact(&core, 0).await, Ok(1));
            assert_eq!(bounds().await, (23, 24));
            let records = read_partition(&core, 0).await.expect("read back");
            assert_eq!(records.len(), 1);
            assert!(matches!(&records[0].value, Some(Value::Offset(v)) if v.offset == 20));

            let committed = commit(&core, "keeper".into(), 0, standalone(), commit_of(21));
            assert_eq!(committed.await, code::NONE);
            assert_eq!(bounds().await, (23, 25));
            let records = read_partition(&core, 0).await.expect("read back");
            core.groups.groups.borrow_mut().clear();
            restore(&core, 0, records);
            let offsets = fetch_offsets(&core, "keeper", None);
            assert_eq!(offsets.len(), 1);
            assert!(matches!(offsets[0].1[..], [(0, Some(ref v))] if v.offset == 21));
            assert!(core.groups.groups.borrow().get("gone").is_none());
        })
    }

    /// An OffsetDelete decided while a commit to the same key waits for its turn removes that
    /// commit too, in memory as in the log; a commit decided after it applies as usual.
    #[test]
    fn an_offset_delete_racing_a_commit_removes_it_everywhere() {
        on_loaded_core(|core| async move {
            assert_eq!(
                commit(&core, "g".into(), 0, standalone(), commit_of(3)).await,
                code::NONE
            );
            let blocker = Write::decide(&core, 0);
            let racing = compio::runtime::spawn({
                let core = core.clone();
                async move { commit(&core, "g".into(), 0, standalone(), commit_of(5)).await }
            });
            // Let the commit decide (and wait on the blocker) before the delete decides.
            while core.groups.groups.borrow()["g"].in_flight.is_empty() {
                compio::runtime::time::sleep(std::time::Duration::from_millis(1)).await;
            }
            let deleting = compio::runtime::spawn({
                let core = core.clone();
                let wanted = vec![("t".to_owned(), vec![0])];
                async move { delete_offsets(&core, "g".into(), 0, wanted).await }
            });
            drop(blocker);
            assert_eq!(racing.await.expect("task"), code::NONE);
            let answer = deleting.await.expect("task").expect("group-level answer");
            assert_eq!(answer, vec![("t".to_owned(), vec![(0, code::NONE)])]);
            let fetched = fetch_offsets(&core, "g", None);
            assert!(fetched.is_empty(), "{fetched:?}");
            assert!(core.groups.groups.borrow()["g"].in_flight.is_empty());
            let records = read_partition(&core, 0).await.expect("read back");
            core.groups.groups.borrow_mut().clear();
            restore(&core, 0, records);
            let replayed = fetch_offsets(&core, "g", None);
            assert!(replayed.is_empty(), "{replayed:?}");
        })
    }

    #[test]
    fn groups_known_by_offsets_alone_keep_their_retention_clock() {
        let dir = tempfile::tempdir().expect("temp dir");
        let runtime = compio::runtime::Runtime::new().expect("runtime");
        runtime.block_on(async {
            let core = offsets_core(dir.path()).await;
            let mut older = offset_record("g");
            let mut newer = offset_record("g");
            if let (Some(Value::Offset(a)), Some(Value::Offset(b))) =
                (&mut older.value, &mut newer.value)
            {
                a.commit_ms = 1_000;
                b.commit_ms = 2_000;
            }
            if let Key::Offset { partition, .. } = &mut newer.key {
                *partition = 1;
            }
            restore(&core, 0, vec![older, newer]);
            let since = core.groups.groups.borrow()["g"].state_since_ms;
            assert_eq!(since, 2_000);
            core.close_all().await;
        });
    }

    /// An empty group as the expiry finds it: empty since `since_ms`, with an offset on
    /// partition `p` of topic "t" committed at `commit_ms` for each `(p, commit_ms)`.
    fn empty_group(id: &str, since_ms: i64, offsets: &[(i32, i64)]) -> Group {
        let mut group = Group::new(id, since_ms, 0);
        for &(partition, commit_ms) in offsets {
            let value = OffsetValue {
                offset: 10,
                leader_epoch: -1,
                metadata: String::new(),
                commit_ms,
            };
            group.offsets.insert(("t".to_owned(), partition), value);
        }
        group
    }

    /// The groups on `core`, each with the partitions it still has offsets for.
    fn offsets_left(core: &Shard) -> BTreeMap<String, Vec<i32>> {
        let groups = core.groups.groups.borrow();
        let partitions = |g: &Group| {
            let mut partitions: Vec<i32> = g.offsets.keys().map(|(_, p)| *p).collect();
            partitions.sort_unstable();
            partitions
        };
        groups
            .iter()
            .map(|(id, g)| (id.clone(), partitions(g)))
            .collect()
    }

    /// What a record of `__consumer_offsets` deletes, if it is a tombstone.
    fn tombstone_of(record: &Record) -> Option<String> {
        if record.value.is_some() {
            return None;
        }
        Some(match &record.key {
            Key::Offset {
                group, partition, ..
            } => format!("{group}/{partition}"),
            Key::Group { group } => format!("{group}/metadata"),
        })
    }

    /// `offsets.retention.minutes` (here 1) counts from the later of a commit and the moment
    /// its group became empty. Expired offsets are removed and tombstoned, an empty group with
    /// nothing left goes too, and a group with members keeps its offsets however old.
    #[test]
    fn offsets_of_empty_groups_expire_after_the_retention() {
        const RETENTION_MS: i64 = 60_000;
        let dir = tempfile::tempdir().expect("temp dir");
        let runtime = compio::runtime::Runtime::new().expect("runtime");
        runtime.block_on(async {
            let properties = [("offsets.retention.minutes", "1")];
            let core = offsets_core_with(dir.path(), &properties).await;
            let config = core.groups.config(&core.shared.config);
            assert_eq!(config.retention_ms, RETENTION_MS);
            let now = 10 * RETENTION_MS;
            // Just old enough to expire, and one millisecond short of it.
            let (old, fresh) = (now - RETENTION_MS, now - RETENTION_MS + 1);
            let mut busy = Group::new("busy", old, 0);
            let join = JoinArgs {
                session_timeout_ms: 6_000,
                rebalance_timeout_ms: 10_000,
                protocol_type: "consumer".into(),
                protocols: vec![("range".into(), Bytes::from_static(b"meta"))],
                ..JoinArgs::default()
            };
            // With no initial delay the join completes at once and the group has a member;
            // the expiry looks only at whether the group is empty.
            let _joining = busy.join(join, "member".into(), old);
            busy.effects.clear();
            assert_ne!(busy.state, State::Empty);
            busy.offsets = empty_group("busy", old, &[(0, 0)]).offsets;
            {
                let mut groups = core.groups.groups.borrow_mut();
                // Every offset old: the offsets and then the group go.
                groups.insert("gone".into(), empty_group("gone", old, &[(0, old), (1, 0)]));
                // One offset old, one fresh: only the old one goes, and the group stays.
                groups.insert(
                    "half".into(),
                    empty_group("half", old, &[(0, old), (1, fresh)]),
                );
                // Offsets long committed, but the group emptied only lately: its clock runs
                // from then.
                groups.insert("emptied".into(), empty_group("emptied", fresh, &[(0, 0)]));
                // A group with members keeps its offsets, however old.
                groups.insert("busy".into(), busy);
            }

            expire_offsets(&core, now).await;

            let left = BTreeMap::from([
                ("busy".to_owned(), vec![0]),
                ("emptied".to_owned(), vec![0]),
                ("half".to_owned(), vec![1]),
            ]);
            assert_eq!(offsets_left(&core), left);
            // The log says the same, so a restart does not bring the expired offsets back.
            let records = read_partition(&core, 0).await.expect("read back");
            let mut deleted: Vec<String> = records.iter().filter_map(tombstone_of).collect();
            deleted.sort_unstable();
            assert_eq!(deleted.len(), records.len(), "only tombstones: {records:?}");
            assert_eq!(deleted, ["gone/0", "gone/1", "gone/metadata", "half/0"]);

            // What is left is not expired again: a second pass at the same time writes nothing.
            expire_offsets(&core, now).await;
            let again = read_partition(&core, 0).await.expect("read back");
            assert_eq!(again.len(), records.len());
            // Once the fresh offset is old too, the rest of the idle groups go.
            expire_offsets(&core, now + RETENTION_MS).await;
            let left = BTreeMap::from([("busy".to_owned(), vec![0])]);
            assert_eq!(offsets_left(&core), left);
            core.close_all().await;
        });
    }

    #[test]
    fn member_ids_fit_a_kafka_string() {
        let short = new_member_id("app");
        assert!(
            short.starts_with("app-") && short.len() == 4 + 36,
            "{short}"
        );
        // Two-byte characters up to past the limit: the cut must fall between them.
        let long = "é".repeat(20_000);
        let id = new_member_id(&long);
        assert!(id.len() <= i16::MAX as usize, "{}", id.len());
        assert!(id.len() > i16::MAX as usize - 2);
        let stored = records::encode_key(&Key::Group { group: id.clone() });
        assert_eq!(
            records::decode_key(&stored),
            Ok(Key::Group { group: id.clone() })
        );
        assert_eq!(new_member_id(&"x".repeat(40_000)).len(), i16::MAX as usize);
    }

    #[test]
    fn placement_matches_kafka() {
        // Java's String.hashCode: h = 31 * h + code unit, wrapping.
        let java_hash = |s: &str| {
            s.encode_utf16()
                .fold(0i32, |h, u| h.wrapping_mul(31).wrapping_add(u as i32))
        };
        assert_eq!(java_hash("a"), 97);
        assert_eq!(java_hash("ab"), 97 * 31 + 98);
        assert_eq!(partition_for("a", 50), 97 % 50);
        assert_eq!(partition_for("", 50), 0);
        for name in [
            "console-consumer-1",
            "kafkajs-reader",
            "ü-group",
            "x".repeat(300).as_str(),
        ] {
            let p = partition_for(name, 50);
            assert!((0..50).contains(&p), "{name}: {p}");
            assert_eq!(p, (java_hash(name) as i64).abs() as i32 % 50);
        }
    }
}
