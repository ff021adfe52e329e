//! One consumer group's state machine (Empty, PreparingRebalance, CompletingRebalance, Stable,
//! Dead) as Kafka's classic protocol defines it. It does no I/O and reads no clock: callers pass
//! the time, and what must happen outside (timers, appends to `__consumer_offsets`, answers to
//! parked JoinGroup and SyncGroup requests) comes back as [`Effect`]s for the owning core to do.

use std::collections::{BTreeMap, HashMap};

use bytes::Bytes;

use super::records::{GroupValue, MemberValue, OffsetValue};
use crate::error_codes as code;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum State {
    Empty,
    PreparingRebalance,
    CompletingRebalance,
    Stable,
    Dead,
}

impl State {
    /// The name Kafka's ListGroups and DescribeGroups use.
    pub fn name(self) -> &'static str {
        match self {
            State::Empty => "Empty",
            State::PreparingRebalance => "PreparingRebalance",
            State::CompletingRebalance => "CompletingRebalance",
            State::Stable => "Stable",
            State::Dead => "Dead",
        }
    }
}

/// What a JoinGroup request gets back.
#[derive(Debug, Clone, Default)]
pub struct JoinResult {
    pub error: i16,
    pub generation: i32,
    pub protocol_type: Option<String>,
    pub protocol: Option<String>,
    pub leader: String,
    pub member_id: String,
    /// For the leader only: every member with its metadata for the chosen protocol.
    pub members: Vec<(String, Option<String>, Bytes)>,
}

impl JoinResult {
    fn error(error: i16, member_id: &str) -> Self {
        Self {
            error,
            generation: -1,
            member_id: member_id.to_owned(),
            ..Self::default()
        }
    }
}

/// What a SyncGroup request gets back.
#[derive(Debug, Clone, Default)]
pub struct SyncResult {
    pub error: i16,
    pub protocol_type: Option<String>,
    pub protocol: Option<String>,
    pub assignment: Bytes,
}

impl SyncResult {
    fn error(error: i16) -> Self {
        Self {
            error,
            ..Self::default()
        }
    }
}

/// An answer given now, or a receiver that the state machine answers later.
pub enum Reply<T> {
    Now(T),
    Later(flume::Receiver<T>),
}

/// Work the owning core does after an operation on the group.
pub enum Effect {
    /// Watch this member's session: it is removed if no heartbeat comes in time.
    WatchSession { member_id: String },
    /// The rebalance that started as `epoch` completes at `not_before_ms` once every member
    /// has rejoined, and at `deadline_ms` in any case, without those that have not.
    RebalanceTimer {
        epoch: u64,
        not_before_ms: i64,
        deadline_ms: i64,
    },
    /// Forget the member id handed out with MEMBER_ID_REQUIRED at `at_ms` if its owner has
    /// not joined with it by then, so that a client that died in between does not hold up the
    /// rebalance until its deadline.
    ExpirePending { member_id: String, at_ms: i64 },
    /// Append the group's metadata, then send these SyncGroup answers.
    Persist {
        then: Vec<(flume::Sender<SyncResult>, SyncResult)>,
    },
}

/// A member's JoinGroup arguments.
#[derive(Debug, Clone, Default)]
pub struct JoinArgs {
    pub member_id: String,
    pub instance_id: Option<String>,
    pub client_id: String,
    pub client_host: String,
    pub session_timeout_ms: i32,
    pub rebalance_timeout_ms: i32,
    pub protocol_type: String,
    pub protocols: Vec<(String, Bytes)>,
    /// Whether the client speaks KIP-394 (JoinGroup v4+): a new member first gets its id.
    pub requires_member_id: bool,
}

pub struct Member {
    pub id: String,
    pub instance_id: Option<String>,
    pub client_id: String,
    pub client_host: String,
    pub session_timeout_ms: i32,
    pub rebalance_timeout_ms: i32,
    pub protocol_type: String,
    pub protocols: Vec<(String, Bytes)>,
    pub assignment: Bytes,
    pub last_heartbeat_ms: i64,
    joining: Option<flume::Sender<JoinResult>>,
    syncing: Option<flume::Sender<SyncResult>>,
}

impl Member {
    fn metadata(&self, protocol: &str) -> Bytes {
        self.protocols
            .iter()
            .find(|(name, _)| name == protocol)
            .map(|(_, metadata)| metadata.clone())
            .unwrap_or_default()
    }
}

/// Offset commits between their decision and their append. A write to `__consumer_offsets` is
/// ordered when it is decided, but memory changes only once it is in the log; a delete decided
/// in between must still cover the commit's key, or the log would keep an offset that memory
/// never had. Each decided write to a key gets a sequence number; a commit applies to memory
/// only if no later write to its key was decided meanwhile.
#[derive(Debug, Default)]
pub struct InFlight {
    /// Per key: the sequence of the latest write decided for it, and the commits in flight.
    keys: HashMap<(String, i32), (u64, u32)>,
    next_seq: u64,
}

impl InFlight {
    /// Records a commit to `keys`, decided now; returns its sequence number.
    pub fn decide_commit(&mut self, keys: impl Iterator<Item = (String, i32)>) -> u64 {
        self.next_seq += 1;
        for key in keys {
            let entry = self.keys.entry(key).or_insert((0, 0));
            *entry = (self.next_seq, entry.1 + 1);
        }
        self.next_seq
    }

    /// The commit `seq` is in the log: whether its value for `key` is still the latest.
    pub fn complete_commit(&mut self, key: &(String, i32), seq: u64) -> bool {
        let Some(entry) = self.keys.get_mut(key) else {
            debug_assert!(false, "a commit completed that was never decided");
            return false;
        };
        debug_assert!(entry.1 > 0);
        let latest = entry.0 == seq;
        entry.1 -= 1;
        if entry.1 == 0 {
            self.keys.remove(key);
        }
        latest
    }

    /// A tombstone for `key` was decided now: commits in flight to it must not apply.
    pub fn decide_tombstone(&mut self, key: &(String, i32)) {
        self.next_seq += 1;
        if let Some(entry) = self.keys.get_mut(key) {
            entry.0 = self.next_seq;
        }
    }

    pub fn contains(&self, key: &(String, i32)) -> bool {
        self.keys.contains_key(key)
    }

    pub fn is_empty(&self) -> bool {
        self.keys.is_empty()
    }

    pub fn keys(&self) -> impl Iterator<Item = &(String, i32)> {
        self.keys.keys()
    }
}

pub struct Group {
    pub id: String,
    pub state: State,
    pub state_since_ms: i64,
    pub generation: i32,
    pub protocol_type: Option<String>,
    pub protocol: Option<String>,
    pub leader: Option<String>,
    pub members: BTreeMap<String, Member>,
    /// Member ids handed out with MEMBER_ID_REQUIRED, waiting for their owner's second join.
    pending: HashMap<String, i64>,
    static_members: HashMap<String, String>,
    pub offsets: HashMap<(String, i32), OffsetValue>,
    /// Offset keys with commits decided but not yet in the log. See [`InFlight`].
    pub in_flight: InFlight,
    rebalance_epoch: u64,
    /// The join phase of the current rebalance completes no earlier than this.
    join_not_before_ms: i64,
    pub effects: Vec<Effect>,
    /// Set by the owning core when it creates the group; tells this group from a later one of
    /// the same name.
    pub incarnation: u64,
    /// `group.initial.rebalance.delay.ms`: how long the first rebalance of an empty group
    /// waits for more members.
    initial_delay_ms: i64,
}

impl Group {
    pub fn new(id: &str, now_ms: i64, initial_delay_ms: i64) -> Self {
        Self {
            id: id.to_owned(),
            state: State::Empty,
            state_since_ms: now_ms,
            generation: 0,
            protocol_type: None,
            protocol: None,
            leader: None,
            members: BTreeMap::new(),
            pending: HashMap::new(),
            static_members: HashMap::new(),
            offsets: HashMap::new(),
            in_flight: InFlight::default(),
            rebalance_epoch: 0,
            join_not_before_ms: 0,
            effects: Vec::new(),
            incarnation: 0,
            initial_delay_ms,
        }
    }

    /// The group as persisted metadata says it was; members stay until their sessions expire.
    pub fn restore(&mut self, value: GroupValue, now_ms: i64) {
        self.generation = value.generation;
        self.protocol_type = Some(value.protocol_type).filter(|t| !t.is_empty());
        self.protocol = value.protocol;
        self.leader = value.leader;
        self.state_since_ms = if value.state_ms > 0 {
            value.state_ms
        } else {
            now_ms
        };
        self.members.clear();
        self.static_members.clear();
        for m in value.members {
            if let Some(instance) = &m.instance_id {
                self.static_members
                    .insert(instance.clone(), m.member_id.clone());
            }
            let protocol = self.protocol.clone().unwrap_or_default();
            self.effects.push(Effect::WatchSession {
                member_id: m.member_id.clone(),
            });
            self.members.insert(
                m.member_id.clone(),
                Member {
                    id: m.member_id,
                    instance_id: m.instance_id,
                    client_id: m.client_id,
                    client_host: m.client_host,
                    session_timeout_ms: m.session_timeout_ms,
                    rebalance_timeout_ms: m.rebalance_timeout_ms,
                    protocol_type: self.protocol_type.clone().unwrap_or_default(),
                    protocols: vec![(protocol, m.subscription)],
                    assignment: m.assignment,
                    last_heartbeat_ms: now_ms,
                    joining: None,
                    syncing: None,
                },
            );
        }
        self.state = if self.members.is_empty() {
            State::Empty
        } else {
            State::Stable
        };
    }

    /// The metadata record's value for the group as it is now.
    pub fn metadata_value(&self) -> GroupValue {
        let protocol = self.protocol.clone().unwrap_or_default();
        GroupValue {
            protocol_type: self.protocol_type.clone().unwrap_or_default(),
            generation: self.generation,
            protocol: self.protocol.clone(),
            leader: self.leader.clone(),
            state_ms: self.state_since_ms,
            members: self
                .members
                .values()
                .map(|m| MemberValue {
                    member_id: m.id.clone(),
                    instance_id: m.instance_id.clone(),
                    client_id: m.client_id.clone(),
                    client_host: m.client_host.clone(),
                    rebalance_timeout_ms: m.rebalance_timeout_ms,
                    session_timeout_ms: m.session_timeout_ms,
                    subscription: m.metadata(&protocol),
                    assignment: m.assignment.clone(),
                })
                .collect(),
        }
    }

    fn set_state(&mut self, state: State, now_ms: i64) {
        self.state = state;
        self.state_since_ms = now_ms;
    }

    /// Whether a member with these protocols may join: the same protocol type, and at least
    /// one protocol every member supports.
    fn compatible(&self, protocol_type: &str, protocols: &[(String, Bytes)]) -> bool {
        if protocol_type.is_empty() || protocols.is_empty() {
            return false;
        }
        if self.members.is_empty() {
            return true;
        }
        if self.protocol_type.as_deref() != Some(protocol_type) {
            return false;
        }
        protocols.iter().any(|(name, _)| {
            self.members
                .values()
                .all(|m| m.protocols.iter().any(|(n, _)| n == name))
        })
    }

    pub fn join(
        &mut self,
        args: JoinArgs,
        new_member_id: String,
        now_ms: i64,
    ) -> Reply<JoinResult> {
        if self.state == State::Dead {
            return Reply::Now(JoinResult::error(
                code::COORDINATOR_NOT_AVAILABLE,
                &args.member_id,
            ));
        }
        if !self.compatible(&args.protocol_type, &args.protocols) {
            return Reply::Now(JoinResult::error(
                code::INCONSISTENT_GROUP_PROTOCOL,
                &args.member_id,
            ));
        }
        self.pending.retain(|_, expires_ms| *expires_ms > now_ms);
        if args.member_id.is_empty() {
            if let Some(instance) = args.instance_id.clone() {
                if let Some(old_id) = self.static_members.get(&instance).cloned() {
                    return self.replace_static(old_id, args, new_member_id, now_ms);
                }
                return self.add_member(args, new_member_id, now_ms);
            }
            if args.requires_member_id {
                let expires = now_ms + i64::from(args.session_timeout_ms);
                self.pending.insert(new_member_id.clone(), expires);
                self.effects.push(Effect::ExpirePending {
                    member_id: new_member_id.clone(),
                    at_ms: expires,
                });
                return Reply::Now(JoinResult::error(code::MEMBER_ID_REQUIRED, &new_member_id));
            }
            return self.add_member(args, new_member_id, now_ms);
        }
        if self.pending.remove(&args.member_id).is_some() {
            let id = args.member_id.clone();
            return self.add_member(args, id, now_ms);
        }
        if let Err(error) = self.check_member(&args.member_id, args.instance_id.as_deref()) {
            return Reply::Now(JoinResult::error(error, &args.member_id));
        }
        self.rejoin(args, now_ms)
    }

    /// A known member joins again: a rebalance unless nothing changed for it.
    fn rejoin(&mut self, args: JoinArgs, now_ms: i64) -> Reply<JoinResult> {
        let id = args.member_id.clone();
        let is_leader = self.leader.as_deref() == Some(id.as_str());
        let member = self.members.get_mut(&id).expect("checked by the caller");
        let unchanged = member.protocols == args.protocols;
        member.protocols = args.protocols;
        member.session_timeout_ms = args.session_timeout_ms;
        member.rebalance_timeout_ms = args.rebalance_timeout_ms;
        member.last_heartbeat_ms = now_ms;
        match self.state {
            State::CompletingRebalance if unchanged => Reply::Now(self.join_result(&id)),
            State::Stable if unchanged && !is_leader => Reply::Now(self.join_result(&id)),
            _ => {
                let answer = self.park_join(&id);
                if self.state != State::PreparingRebalance {
                    self.prepare_rebalance(now_ms);
                }
                self.try_complete_join(now_ms, false);
                answer
            }
        }
    }

    fn add_member(&mut self, args: JoinArgs, id: String, now_ms: i64) -> Reply<JoinResult> {
        if let Some(instance) = &args.instance_id {
            self.static_members.insert(instance.clone(), id.clone());
        }
        if self.members.is_empty() {
            self.protocol_type = Some(args.protocol_type.clone());
        }
        self.members.insert(
            id.clone(),
            Member {
                id: id.clone(),
                instance_id: args.instance_id,
                client_id: args.client_id,
                client_host: args.client_host,
                session_timeout_ms: args.session_timeout_ms,
                rebalance_timeout_ms: args.rebalance_timeout_ms,
                protocol_type: args.protocol_type,
                protocols: args.protocols,
                assignment: Bytes::new(),
                last_heartbeat_ms: now_ms,
                joining: None,
                syncing: None,
            },
        );
        self.effects.push(Effect::WatchSession {
            member_id: id.clone(),
        });
        let answer = self.park_join(&id);
        if self.state != State::PreparingRebalance {
            self.prepare_rebalance(now_ms);
        }
        self.try_complete_join(now_ms, false);
        answer
    }

    /// A static member came back under a new member id: the old id is fenced, and when the
    /// group is stable and the member's protocols are unchanged, it gets its old assignment
    /// back without a rebalance.
    fn replace_static(
        &mut self,
        old_id: String,
        args: JoinArgs,
        new_id: String,
        now_ms: i64,
    ) -> Reply<JoinResult> {
        let Some(mut member) = self.members.remove(&old_id) else {
            self.static_members
                .remove(args.instance_id.as_deref().unwrap_or_default());
            return self.add_member(args, new_id, now_ms);
        };
        if let Some(joining) = member.joining.take() {
            let _ = joining.send(JoinResult::error(code::FENCED_INSTANCE_ID, &old_id));
        }
        if let Some(syncing) = member.syncing.take() {
            let _ = syncing.send(SyncResult::error(code::FENCED_INSTANCE_ID));
        }
        let unchanged = member.protocols == args.protocols;
        member.id = new_id.clone();
        member.protocols = args.protocols;
        member.session_timeout_ms = args.session_timeout_ms;
        member.rebalance_timeout_ms = args.rebalance_timeout_ms;
        member.last_heartbeat_ms = now_ms;
        self.members.insert(new_id.clone(), member);
        if let Some(instance) = args.instance_id {
            self.static_members.insert(instance, new_id.clone());
        }
        let old_leader = self.leader.clone().unwrap_or_default();
        if old_leader == old_id {
            self.leader = Some(new_id.clone());
        }
        self.effects.push(Effect::WatchSession {
            member_id: new_id.clone(),
        });
        if self.state == State::Stable && unchanged {
            // As Kafka does, the answer names the leader as it was: a returning leader then
            // does not see itself as leader, assigns nothing, and just fetches its assignment.
            let mut result = self.join_result(&new_id);
            result.leader = old_leader;
            result.members.clear();
            // The new member id must outlive a restart, or the old one would come back.
            self.effects.push(Effect::Persist { then: Vec::new() });
            return Reply::Now(result);
        }
        let answer = self.park_join(&new_id);
        if self.state != State::PreparingRebalance {
            self.prepare_rebalance(now_ms);
        }
        self.try_complete_join(now_ms, false);
        answer
    }

    fn park_join(&mut self, id: &str) -> Reply<JoinResult> {
        let (sender, receiver) = flume::bounded(1);
        if let Some(member) = self.members.get_mut(id) {
            if let Some(previous) = member.joining.replace(sender) {
                let _ = previous.send(JoinResult::error(code::UNKNOWN_MEMBER_ID, id));
            }
        }
        Reply::Later(receiver)
    }

    /// The join answer for `id` in the current generation.
    fn join_result(&self, id: &str) -> JoinResult {
        let protocol = self.protocol.clone().unwrap_or_default();
        let is_leader = self.leader.as_deref() == Some(id);
        let members = if is_leader {
            self.members
                .values()
                .map(|m| (m.id.clone(), m.instance_id.clone(), m.metadata(&protocol)))
                .collect()
        } else {
            Vec::new()
        };
        JoinResult {
            error: code::NONE,
            generation: self.generation,
            protocol_type: self.protocol_type.clone(),
            protocol: self.protocol.clone(),
            leader: self.leader.clone().unwrap_or_default(),
            member_id: id.to_owned(),
            members,
        }
    }

    fn prepare_rebalance(&mut self, now_ms: i64) {
        debug_assert_ne!(self.state, State::PreparingRebalance);
        if self.state == State::CompletingRebalance {
            for member in self.members.values_mut() {
                member.assignment = Bytes::new();
                if let Some(syncing) = member.syncing.take() {
                    let _ = syncing.send(SyncResult::error(code::REBALANCE_IN_PROGRESS));
                }
            }
        }
        let initial = self.state == State::Empty;
        self.set_state(State::PreparingRebalance, now_ms);
        self.rebalance_epoch += 1;
        let rebalance_timeout = self
            .members
            .values()
            .map(|m| i64::from(m.rebalance_timeout_ms))
            .max()
            .unwrap_or(0);
        let delay = if initial {
            self.initial_delay_ms.min(rebalance_timeout)
        } else {
            0
        };
        self.join_not_before_ms = now_ms + delay;
        self.effects.push(Effect::RebalanceTimer {
            epoch: self.rebalance_epoch,
            not_before_ms: now_ms + delay,
            deadline_ms: now_ms + rebalance_timeout.max(delay),
        });
    }

    /// A rebalance timer fired. Returns false when the rebalance it was set for is over.
    pub fn rebalance_timer(&mut self, epoch: u64, now_ms: i64, deadline: bool) -> bool {
        if epoch != self.rebalance_epoch || self.state != State::PreparingRebalance {
            return false;
        }
        self.try_complete_join(now_ms, deadline);
        self.state == State::PreparingRebalance
    }

    /// Completes the join phase when every member has rejoined (or, with `force`, without
    /// those that have not): a new generation, a protocol, a leader, and the answers.
    fn try_complete_join(&mut self, now_ms: i64, force: bool) {
        // Until then the initial delay holds the join open for more members.
        if self.state != State::PreparingRebalance || (!force && now_ms < self.join_not_before_ms) {
            return;
        }
        let all_joined =
            self.members.values().all(|m| m.joining.is_some()) && self.pending.is_empty();
        if !all_joined && !force {
            return;
        }
        if force {
            self.pending.clear();
            let late: Vec<String> = self
                .members
                .values()
                .filter(|m| m.joining.is_none())
                .map(|m| m.id.clone())
                .collect();
            for id in late {
                self.forget_member(&id);
            }
        }
        self.generation += 1;
        if self.members.is_empty() {
            // The protocol type stays: an empty group is still a consumer group to its tools.
            self.protocol = None;
            self.leader = None;
            self.set_state(State::Empty, now_ms);
            self.effects.push(Effect::Persist { then: Vec::new() });
            return;
        }
        self.protocol = self.select_protocol();
        let leader_joined = self
            .leader
            .as_ref()
            .is_some_and(|l| self.members.contains_key(l));
        if !leader_joined {
            self.leader = self.members.keys().next().cloned();
        }
        self.set_state(State::CompletingRebalance, now_ms);
        let ids: Vec<String> = self.members.keys().cloned().collect();
        for id in ids {
            let result = self.join_result(&id);
            let member = self.members.get_mut(&id).expect("listed above");
            member.last_heartbeat_ms = now_ms;
            if let Some(joining) = member.joining.take() {
                let _ = joining.send(result);
            }
        }
    }

    /// The protocol every member supports that most members list first among those.
    fn select_protocol(&self) -> Option<String> {
        let first = self.members.values().next()?;
        let candidates: Vec<&String> = first
            .protocols
            .iter()
            .map(|(name, _)| name)
            .filter(|name| {
                self.members
                    .values()
                    .all(|m| m.protocols.iter().any(|(n, _)| n == *name))
            })
            .collect();
        let mut votes: Vec<(usize, &String)> = candidates.iter().map(|c| (0, *c)).collect();
        for member in self.members.values() {
            let choice = member
                .protocols
                .iter()
                .find(|(name, _)| candidates.contains(&name));
            if let Some((name, _)) = choice {
                if let Some(slot) = votes.iter_mut().find(|(_, c)| *c == name) {
                    slot.0 += 1;
                }
            }
        }
        // The first candidate wins ties: max_by_key keeps the last maximum, so reverse.
        votes
            .iter()
            .rev()
            .max_by_key(|(count, _)| *count)
            .map(|(_, name)| (*name).clone())
    }

    /// Removes a member and answers whatever it had parked.
    fn forget_member(&mut self, id: &str) {
        if let Some(mut member) = self.members.remove(id) {
            if let Some(joining) = member.joining.take() {
                let _ = joining.send(JoinResult::error(code::UNKNOWN_MEMBER_ID, id));
            }
            if let Some(syncing) = member.syncing.take() {
                let _ = syncing.send(SyncResult::error(code::UNKNOWN_MEMBER_ID));
            }
            if let Some(instance) = &member.instance_id {
                if self.static_members.get(instance).map(String::as_str) == Some(id) {
                    self.static_members.remove(instance);
                }
            }
        }
    }

    /// A pending member id's time is up: drop it if its owner never came back.
    pub fn expire_pending(&mut self, id: &str, now_ms: i64) {
        let expired = self.pending.get(id).is_some_and(|at| *at <= now_ms);
        if expired {
            self.pending.remove(id);
            self.try_complete_join(now_ms, false);
        }
    }

    /// A member left (LeaveGroup) or its session expired: the others rebalance.
    pub fn remove_member(&mut self, id: &str, now_ms: i64) {
        if !self.members.contains_key(id) {
            self.pending.remove(id);
            return;
        }
        self.forget_member(id);
        match self.state {
            State::PreparingRebalance => self.try_complete_join(now_ms, false),
            State::Stable | State::CompletingRebalance => {
                self.prepare_rebalance(now_ms);
                self.try_complete_join(now_ms, false);
            }
            State::Empty | State::Dead => {}
        }
    }

    /// The session check for one member: `Some(next check)` while it lives, `None` once it
    /// is gone (removed here when its session has expired).
    pub fn session_check(&mut self, id: &str, now_ms: i64) -> Option<i64> {
        let member = self.members.get(id)?;
        let timeout = i64::from(member.session_timeout_ms);
        // A member parked in JoinGroup is bounded by the rebalance timeout instead.
        if member.joining.is_some() {
            return Some(now_ms + timeout);
        }
        let expires = member.last_heartbeat_ms + timeout;
        if expires > now_ms {
            return Some(expires);
        }
        tracing::info!(group = %self.id, member = %id, "session expired; removing member");
        self.remove_member(id, now_ms);
        None
    }

    /// Membership checks shared by SyncGroup, Heartbeat and OffsetCommit.
    fn check_member(&self, id: &str, instance_id: Option<&str>) -> Result<(), i16> {
        if let Some(instance) = instance_id {
            match self.static_members.get(instance) {
                Some(known) if known == id => {}
                Some(_) => return Err(code::FENCED_INSTANCE_ID),
                None => return Err(code::UNKNOWN_MEMBER_ID),
            }
        }
        if !self.members.contains_key(id) {
            return Err(code::UNKNOWN_MEMBER_ID);
        }
        Ok(())
    }

    pub fn sync(
        &mut self,
        id: &str,
        instance_id: Option<&str>,
        generation: i32,
        assignments: Vec<(String, Bytes)>,
        now_ms: i64,
    ) -> Reply<SyncResult> {
        if let Err(error) = self.check_member(id, instance_id) {
            return Reply::Now(SyncResult::error(error));
        }
        if generation != self.generation {
            return Reply::Now(SyncResult::error(code::ILLEGAL_GENERATION));
        }
        if let Some(member) = self.members.get_mut(id) {
            member.last_heartbeat_ms = now_ms;
        }
        match self.state {
            State::Stable => Reply::Now(self.sync_result(id)),
            State::CompletingRebalance => {
                let (sender, receiver) = flume::bounded(1);
                if let Some(member) = self.members.get_mut(id) {
                    member.syncing = Some(sender);
                }
                if self.leader.as_deref() == Some(id) {
                    self.complete_sync(assignments, now_ms);
                }
                Reply::Later(receiver)
            }
            _ => Reply::Now(SyncResult::error(code::REBALANCE_IN_PROGRESS)),
        }
    }

    fn sync_result(&self, id: &str) -> SyncResult {
        SyncResult {
            error: code::NONE,
            protocol_type: self.protocol_type.clone(),
            protocol: self.protocol.clone(),
            assignment: self
                .members
                .get(id)
                .map(|m| m.assignment.clone())
                .unwrap_or_default(),
        }
    }

    /// The leader's assignment arrived: the group is stable once its metadata is written.
    fn complete_sync(&mut self, assignments: Vec<(String, Bytes)>, now_ms: i64) {
        let mut by_member: HashMap<String, Bytes> = assignments.into_iter().collect();
        for member in self.members.values_mut() {
            member.assignment = by_member.remove(&member.id).unwrap_or_default();
        }
        self.set_state(State::Stable, now_ms);
        let ids: Vec<String> = self.members.keys().cloned().collect();
        let mut then = Vec::new();
        for id in ids {
            let result = self.sync_result(&id);
            if let Some(syncing) = self.members.get_mut(&id).and_then(|m| m.syncing.take()) {
                then.push((syncing, result));
            }
        }
        self.effects.push(Effect::Persist { then });
    }

    pub fn heartbeat(
        &mut self,
        id: &str,
        instance_id: Option<&str>,
        generation: i32,
        now_ms: i64,
    ) -> i16 {
        let error = match self.state {
            State::Dead => return code::COORDINATOR_NOT_AVAILABLE,
            State::Empty => return code::UNKNOWN_MEMBER_ID,
            _ => match self.check_member(id, instance_id) {
                Err(error) => error,
                Ok(()) if generation != self.generation => code::ILLEGAL_GENERATION,
                Ok(()) if self.state == State::PreparingRebalance => code::REBALANCE_IN_PROGRESS,
                Ok(()) => code::NONE,
            },
        };
        // As in Kafka, only a heartbeat of the current generation keeps the session alive.
        if error == code::NONE || error == code::REBALANCE_IN_PROGRESS {
            if let Some(member) = self.members.get_mut(id) {
                member.last_heartbeat_ms = now_ms;
            }
        }
        error
    }

    /// LeaveGroup for one member, named by member id or (static members) by instance id.
    pub fn leave(&mut self, id: &str, instance_id: Option<&str>, now_ms: i64) -> i16 {
        let id = match (id.is_empty(), instance_id) {
            (true, Some(instance)) => match self.static_members.get(instance) {
                Some(known) => known.clone(),
                None => return code::UNKNOWN_MEMBER_ID,
            },
            _ => id.to_owned(),
        };
        if self.pending.remove(&id).is_some() {
            return code::NONE;
        }
        if let Err(error) = self.check_member(&id, instance_id) {
            return error;
        }
        self.remove_member(&id, now_ms);
        code::NONE
    }

    /// Whether a commit from this member in this generation may be written. As in Kafka, a
    /// negative generation commits for an empty group whatever member id it names: the group
    /// then only stores offsets.
    pub fn check_commit(&self, id: &str, instance_id: Option<&str>, generation: i32) -> i16 {
        if self.state == State::Dead {
            return code::COORDINATOR_NOT_AVAILABLE;
        }
        if generation < 0 && self.state == State::Empty {
            return code::NONE;
        }
        if let Err(error) = self.check_member(id, instance_id) {
            return error;
        }
        if generation != self.generation {
            return code::ILLEGAL_GENERATION;
        }
        if self.state == State::CompletingRebalance {
            return code::REBALANCE_IN_PROGRESS;
        }
        code::NONE
    }

    pub fn touch(&mut self, id: &str, now_ms: i64) {
        if let Some(member) = self.members.get_mut(id) {
            member.last_heartbeat_ms = now_ms;
        }
    }

    /// Topics the members subscribe to, from their consumer-protocol metadata. Metadata that
    /// does not parse names no topic.
    pub fn subscribed_topics(&self) -> Vec<String> {
        let protocol = self.protocol.clone().unwrap_or_default();
        let mut topics = Vec::new();
        if self.protocol_type.as_deref() != Some("consumer") {
            return topics;
        }
        for member in self.members.values() {
            if let Ok(names) = super::records::subscription_topics(&member.metadata(&protocol)) {
                topics.extend(names);
            }
        }
        topics
    }

    /// The members as DescribeGroups shows them: (id, instance, client, host, metadata,
    /// assignment). As in Kafka, metadata and assignment are shown only in a Stable group;
    /// before that they are not settled.
    pub fn describe_members(&self) -> Vec<(String, Option<String>, String, String, Bytes, Bytes)> {
        let protocol = self.protocol.clone().unwrap_or_default();
        let stable = self.state == State::Stable;
        self.members
            .values()
            .map(|m| {
                let (metadata, assignment) = if stable {
                    (m.metadata(&protocol), m.assignment.clone())
                } else {
                    (Bytes::new(), Bytes::new())
                };
                (
                    m.id.clone(),
                    m.instance_id.clone(),
                    m.client_id.clone(),
                    m.client_host.clone(),
                    metadata,
                    assignment,
                )
            })
            .collect()
    }

    pub fn mark_dead(&mut self, now_ms: i64) {
        let ids: Vec<String> = self.members.keys().cloned().collect();
        for id in ids {
            self.forget_member(&id);
        }
        self.set_state(State::Dead, now_ms);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const T0: i64 = 1_000_000;

    fn args(member_id: &str, protocols: &[&str]) -> JoinArgs {
        JoinArgs {
            member_id: member_id.into(),
            client_id: "c".into(),
            client_host: "/127.0.0.1".into(),
            session_timeout_ms: 6_000,
            rebalance_timeout_ms: 10_000,
            protocol_type: "consumer".into(),
            protocols: protocols
                .iter()
                .map(|p| (p.to_string(), Bytes::from_static(b"meta")))
                .collect(),
            requires_member_id: true,
            ..JoinArgs::default()
        }
    }

    fn now(reply: Reply<JoinResult>) -> JoinResult {
        match reply {
            Reply::Now(result) => result,
            Reply::Later(receiver) => receiver.try_recv().expect("answered already"),
        }
    }

    fn later<T>(reply: Reply<T>) -> flume::Receiver<T> {
        match reply {
            Reply::Later(receiver) => receiver,
            Reply::Now(_) => panic!("expected a parked request"),
        }
    }

    /// A group with no initial delay in which `ids` have joined and synced.
    fn stable(ids: &[&str]) -> Group {
        let mut group = Group::new("g", T0, 0);
        for id in ids {
            let first = now(group.join(args("", &["range"]), id.to_string(), T0));
            assert_eq!(first.error, code::MEMBER_ID_REQUIRED);
        }
        // With member ids handed out, the join waits until all of them are back.
        let mut waits = Vec::new();
        for id in ids {
            waits.push(group.join(args(id, &["range"]), String::new(), T0));
        }
        let results: Vec<JoinResult> = waits.into_iter().map(now).collect();
        let leader = results[0].leader.clone();
        let generation = results[0].generation;
        let assignments = ids
            .iter()
            .map(|id| (id.to_string(), Bytes::from(id.to_string())))
            .collect();
        let sync = later(group.sync(&leader, None, generation, assignments, T0));
        assert_eq!(group.state, State::Stable);
        for effect in group.effects.drain(..) {
            if let Effect::Persist { then } = effect {
                for (sender, result) in then {
                    let _ = sender.send(result);
                }
            }
        }
        assert_eq!(sync.try_recv().unwrap().error, code::NONE);
        group
    }

    #[test]
    fn members_join_sync_and_get_their_assignment() {
        let mut group = stable(&["a", "b"]);
        assert_eq!(group.generation, 1);
        assert_eq!(group.leader.as_deref(), Some("a"));
        let Reply::Now(b) = group.sync("b", None, 1, vec![], T0) else {
            panic!("stable group answers at once")
        };
        assert_eq!(b.assignment, Bytes::from("b"));
        assert_eq!(group.heartbeat("b", None, 1, T0), code::NONE);
        assert_eq!(group.heartbeat("b", None, 0, T0), code::ILLEGAL_GENERATION);
        assert_eq!(group.heartbeat("x", None, 1, T0), code::UNKNOWN_MEMBER_ID);
    }

    #[test]
    fn a_leaving_member_starts_a_rebalance() {
        let mut group = stable(&["a", "b"]);
        assert_eq!(group.leave("b", None, T0), code::NONE);
        assert_eq!(group.state, State::PreparingRebalance);
        assert_eq!(
            group.heartbeat("a", None, 1, T0),
            code::REBALANCE_IN_PROGRESS
        );
        let rejoined = now(group.join(args("a", &["range"]), String::new(), T0));
        assert_eq!(rejoined.generation, 2);
        assert_eq!(rejoined.members.len(), 1);
        assert_eq!(group.state, State::CompletingRebalance);
    }

    #[test]
    fn expired_session_removes_the_member() {
        let mut group = stable(&["a", "b"]);
        group.heartbeat("a", None, 1, T0 + 5_000);
        assert_eq!(group.session_check("b", T0 + 3_000), Some(T0 + 6_000));
        assert_eq!(group.session_check("b", T0 + 6_000), None);
        assert!(!group.members.contains_key("b"));
        assert_eq!(group.state, State::PreparingRebalance);
    }

    #[test]
    fn rebalance_timeout_drops_members_that_do_not_rejoin() {
        let mut group = stable(&["a", "b"]);
        let wait = later(group.join(args("a", &["range"]), String::new(), T0));
        let epoch = group.rebalance_epoch;
        assert!(group.rebalance_timer(epoch, T0 + 1, false));
        assert!(!group.rebalance_timer(epoch, T0 + 10_000, true));
        let result = wait.try_recv().unwrap();
        assert_eq!(result.members.len(), 1);
        assert!(!group.members.contains_key("b"));
    }

    #[test]
    fn protocol_is_one_every_member_supports() {
        let mut group = Group::new("g", T0, 0);
        now(group.join(args("", &["range", "roundrobin"]), "a".into(), T0));
        let a = group.join(args("a", &["range", "roundrobin"]), String::new(), T0);
        let _ = a;
        assert_eq!(group.state, State::CompletingRebalance);
        let refused = now(group.join(args("", &["sticky"]), "b".into(), T0));
        assert_eq!(refused.error, code::INCONSISTENT_GROUP_PROTOCOL);
        now(group.join(args("", &["roundrobin"]), "b".into(), T0));
        let _b = group.join(args("b", &["roundrobin"]), String::new(), T0);
        let _a = group.join(args("a", &["range", "roundrobin"]), String::new(), T0);
        assert_eq!(group.protocol.as_deref(), Some("roundrobin"));
    }

    #[test]
    fn static_member_rejoins_without_rebalance() {
        let mut group = Group::new("g", T0, 0);
        let mut join = args("", &["range"]);
        join.instance_id = Some("i1".into());
        let first = now(group.join(join.clone(), "i1-a".into(), T0));
        assert_eq!(
            first.error,
            code::NONE,
            "static members need no member id round"
        );
        let sync = later(group.sync(
            "i1-a",
            Some("i1"),
            1,
            vec![("i1-a".into(), Bytes::from("x"))],
            T0,
        ));
        group.effects.clear();
        drop(sync);
        let mut other = args("", &["range"]);
        other.instance_id = Some("i2".into());
        // A second static member: a rebalance of generation 2 in which both take part.
        let _w2 = group.join(other, "i2-a".into(), T0);
        let _w1 = group.join(
            JoinArgs {
                member_id: "i1-a".into(),
                ..join.clone()
            },
            String::new(),
            T0,
        );
        assert_eq!(group.generation, 2);
        let _ = group.sync(
            "i1-a",
            Some("i1"),
            2,
            vec![("i2-a".into(), Bytes::from("y"))],
            T0,
        );
        assert_eq!(group.state, State::Stable);
        // i2 restarts: it comes back with no member id and gets its assignment, same generation.
        let mut again = args("", &["range"]);
        again.instance_id = Some("i2".into());
        let back = now(group.join(again, "i2-b".into(), T0));
        assert_eq!((back.error, back.generation), (code::NONE, 2));
        assert_eq!(group.state, State::Stable);
        assert_eq!(
            group.heartbeat("i2-a", Some("i2"), 2, T0),
            code::FENCED_INSTANCE_ID
        );
        assert_eq!(group.heartbeat("i2-b", Some("i2"), 2, T0), code::NONE);
        // The leader restarts too: still no rebalance, and the answer names the old leader id
        // so that the new one does not assign.
        let back = now(group.join(join.clone(), "i1-b".into(), T0));
        assert_eq!((back.error, back.generation), (code::NONE, 2));
        assert_eq!(back.leader, "i1-a");
        assert!(back.members.is_empty());
        assert_eq!(group.leader.as_deref(), Some("i1-b"));
        assert_eq!(group.state, State::Stable);
    }

    #[test]
    fn initial_delay_holds_the_first_join() {
        let mut group = Group::new("g", T0, 3_000);
        now(group.join(args("", &["range"]), "a".into(), T0));
        let wait = later(group.join(args("a", &["range"]), String::new(), T0));
        assert!(
            wait.try_recv().is_err(),
            "held by group.initial.rebalance.delay.ms"
        );
        let epoch = group.rebalance_epoch;
        group.effects.clear();
        assert!(!group.rebalance_timer(epoch, T0 + 3_000, false));
        assert_eq!(wait.try_recv().unwrap().generation, 1);
    }

    #[test]
    fn a_pending_member_that_never_returns_stops_holding_the_join() {
        let mut group = stable(&["a"]);
        now(group.join(args("", &["range"]), "ghost".into(), T0));
        let wait = later(group.join(args("a", &["range"]), String::new(), T0));
        assert!(wait.try_recv().is_err(), "waits for the pending member");
        group.expire_pending("ghost", T0 + 6_000);
        assert_eq!(wait.try_recv().unwrap().generation, 2);
    }

    #[test]
    fn commits_follow_membership() {
        let group = stable(&["a"]);
        assert_eq!(group.check_commit("a", None, 1), code::NONE);
        assert_eq!(group.check_commit("a", None, 7), code::ILLEGAL_GENERATION);
        assert_eq!(group.check_commit("", None, -1), code::UNKNOWN_MEMBER_ID);
        let empty = Group::new("e", T0, 0);
        assert_eq!(empty.check_commit("", None, -1), code::NONE);
        assert_eq!(empty.check_commit("someone", None, -1), code::NONE);
        assert_eq!(
            empty.check_commit("someone", None, 3),
            code::UNKNOWN_MEMBER_ID
        );
    }

    #[test]
    fn a_stale_commit_during_completing_rebalance_is_an_illegal_generation() {
        let mut group = stable(&["a", "b"]);
        assert_eq!(group.leave("b", None, T0), code::NONE);
        now(group.join(args("a", &["range"]), String::new(), T0));
        assert_eq!(group.state, State::CompletingRebalance);
        assert_eq!(group.check_commit("a", None, 1), code::ILLEGAL_GENERATION);
        assert_eq!(
            group.check_commit("a", None, 2),
            code::REBALANCE_IN_PROGRESS
        );
    }

    #[test]
    fn a_heartbeat_of_an_old_generation_does_not_keep_the_session() {
        let mut group = stable(&["a", "b"]);
        assert_eq!(group.leave("b", None, T0), code::NONE);
        assert_eq!(group.state, State::PreparingRebalance);
        // The generation is checked before the rebalance is reported.
        assert_eq!(
            group.heartbeat("a", None, 0, T0 + 5_000),
            code::ILLEGAL_GENERATION
        );
        assert_eq!(group.members["a"].last_heartbeat_ms, T0);
        assert_eq!(
            group.heartbeat("a", None, 1, T0 + 5_000),
            code::REBALANCE_IN_PROGRESS
        );
        assert_eq!(group.members["a"].last_heartbeat_ms, T0 + 5_000);
    }

    #[test]
    fn describe_shows_metadata_and_assignment_only_when_stable() {
        let mut group = stable(&["a"]);
        let members = group.describe_members();
        assert_eq!(members[0].4, Bytes::from_static(b"meta"));
        assert_eq!(members[0].5, Bytes::from("a"));
        now(group.join(args("a", &["range"]), String::new(), T0));
        assert_eq!(group.state, State::CompletingRebalance);
        let members = group.describe_members();
        assert_eq!((members[0].4.len(), members[0].5.len()), (0, 0));
    }

    #[test]
    fn a_replaced_static_member_is_persisted() {
        let mut group = Group::new("g", T0, 0);
        let mut join = args("", &["range"]);
        join.instance_id = Some("i1".into());
        now(group.join(join.clone(), "i1-a".into(), T0));
        let sync = later(group.sync(
            "i1-a",
            Some("i1"),
            1,
            vec![("i1-a".into(), Bytes::from("x"))],
            T0,
        ));
        drop(sync);
        assert_eq!(group.state, State::Stable);
        group.effects.clear();
        let back = now(group.join(join, "i1-b".into(), T0));
        assert_eq!(back.error, code::NONE);
        let persisted = group
            .effects
            .iter()
            .any(|e| matches!(e, Effect::Persist { .. }));
        assert!(persisted, "the new member id is written");
        let value = group.metadata_value();
        assert_eq!(value.members[0].member_id, "i1-b");
    }
}
