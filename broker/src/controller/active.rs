//! The active controller: the one voter that leads the quorum decides every change. It turns
//! commands into metadata records from the image it has applied, proposes them one batch at a
//! time (a single writer, as Kafka's controller is), keeps the brokers' sessions, fences a
//! broker that misses its session and moves the leaderships it held, and places the replicas
//! of new partitions. Sessions live in memory only: a controller that becomes active gives
//! every registered broker a fresh one, as Kafka does.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use openraft::ServerState;

use super::rpc::{Command, Done, Refusal};
use super::state::StateMachine;
use super::{Batch, NodeId, Raft, BATCH_VERSION};
use crate::error_codes as code;
use crate::layout::valid_topic_name;
use crate::metadata::image::BrokerId;
use crate::metadata::{
    delta::{broker_config_records, topic_records},
    BrokerImage, MetadataImage, MetadataRecord, PartitionImage, TopicImage, TOPIC_PARTITIONS_MAX,
};

/// How often the active controller looks for brokers past their session.
pub const FENCE_CHECK_INTERVAL: Duration = Duration::from_millis(250);

/// Settings the active controller decides with.
#[derive(Debug, Clone)]
pub struct Settings {
    pub node_id: NodeId,
    pub session_timeout: Duration,
    pub default_replication_factor: i16,
    /// Where each voter listens, for leader hints.
    pub voters: BTreeMap<NodeId, String>,
    pub elections: ElectionSettings,
}

/// How the active controller chooses leaders beyond fencing.
#[derive(Debug, Clone)]
pub struct ElectionSettings {
    /// `unclean.leader.election.enable`: the default for topics that do not set it.
    pub unclean_default: bool,
    /// `auto.leader.rebalance.enable`: preferred replicas take their leaderships back.
    pub auto_rebalance: bool,
    /// `leader.imbalance.check.interval.seconds`.
    pub imbalance_interval: Duration,
    /// `leader.imbalance.per.broker.percentage`: a broker's share of partitions not led by
    /// their preferred replica above which the check moves them back.
    pub imbalance_percentage: u32,
}

/// The topic config that allows an out-of-sync replica to lead.
pub const UNCLEAN_KEY: &str = "unclean.leader.election.enable";

/// Brokers' sessions, started afresh in each term this controller leads.
#[derive(Default)]
struct Sessions {
    term: u64,
    /// Each broker's last contact.
    seen: HashMap<BrokerId, Instant>,
    /// The index of the record that last unfenced each broker, in this term.
    unfenced_at: HashMap<BrokerId, u64>,
}

pub struct Active {
    raft: Raft,
    state: StateMachine,
    settings: Settings,
    /// The brokers' sessions as this controller keeps them in its current term.
    sessions: Mutex<Sessions>,
    /// One proposal at a time, each computed from the image the previous one left.
    writer: tokio::sync::Mutex<()>,
    /// Records that form the cluster, proposed before anything else by the first leader of
    /// a log with no cluster id (this node's, when it formed the quorum).
    formation: Mutex<Vec<MetadataRecord>>,
    /// Broker incarnations (id, epoch) that completed a controlled shutdown: their heartbeats
    /// no longer unfence them.
    shut_down: Mutex<HashSet<(BrokerId, i64)>>,
    /// When the preferred-leader check last ran.
    last_rebalance: Mutex<Instant>,
    /// Leaders elected from outside the ISR, since start (UncleanLeaderElectionsPerSec).
    pub unclean_elections: AtomicU64,
}

fn refuse(code: i16, message: impl Into<String>) -> Refusal {
    Refusal::Error {
        code,
        message: message.into(),
    }
}

/// The registration of broker `id`, if `epoch` is its current one.
fn registered(image: &MetadataImage, id: BrokerId, epoch: i64) -> Result<&BrokerImage, Refusal> {
    let Some(broker) = image.brokers.get(&id) else {
        return Err(refuse(
            code::BROKER_ID_NOT_REGISTERED,
            "broker not registered",
        ));
    };
    if broker.epoch != epoch {
        return Err(refuse(code::STALE_BROKER_EPOCH, "stale broker epoch"));
    }
    Ok(broker)
}

impl Active {
    pub fn new(
        raft: Raft,
        state: StateMachine,
        settings: Settings,
        formation: Vec<MetadataRecord>,
    ) -> Self {
        Self {
            raft,
            state,
            settings,
            sessions: Mutex::new(Sessions::default()),
            writer: tokio::sync::Mutex::new(()),
            formation: Mutex::new(formation),
            shut_down: Mutex::new(HashSet::new()),
            last_rebalance: Mutex::new(Instant::now()),
            unclean_elections: AtomicU64::new(0),
        }
    }

    /// Forms the cluster if this node leads and the image has no cluster id yet: proposes the
    /// formation records (a fresh cluster id when there are none). Returns whether the
    /// cluster has an id now.
    pub async fn form_cluster(&self) -> bool {
        if self.leading_term().is_err() {
            return !self.image().cluster_id.is_empty();
        }
        let _writer = self.writer.lock().await;
        self.form_if_needed().await.is_ok()
    }

    /// Under the writer lock: proposes the formation records when the image has no id.
    async fn form_if_needed(&self) -> Result<(), Refusal> {
        if !self.image().cluster_id.is_empty() {
            return Ok(());
        }
        let mut records =
            std::mem::take(&mut *self.formation.lock().unwrap_or_else(|e| e.into_inner()));
        if !records
            .iter()
            .any(|r| matches!(r, MetadataRecord::ClusterId(_)))
        {
            let id = crate::ids::hex(&crate::ids::random_id());
            records.insert(0, MetadataRecord::ClusterId(id));
        }
        tracing::info!(records = records.len(), "forming the cluster");
        self.propose(records).await.map(|_| ())
    }

    /// The term this node leads in, or a refusal naming the leader it knows.
    fn leading_term(&self) -> Result<u64, Refusal> {
        let metrics = self.raft.metrics().borrow().clone();
        if metrics.state == ServerState::Leader
            && metrics.current_leader == Some(self.settings.node_id)
        {
            return Ok(metrics.current_term);
        }
        let leader = metrics.current_leader.and_then(|id| {
            let address = self.settings.voters.get(&id)?;
            Some((id, address.clone()))
        });
        Err(Refusal::NotController { leader })
    }

    pub fn is_active(&self) -> bool {
        self.leading_term().is_ok()
    }

    fn image(&self) -> Arc<MetadataImage> {
        self.state.read().image.clone()
    }

    /// Refreshes every registered broker's session when this node has just become active.
    fn sessions_lock(&self) -> std::sync::MutexGuard<'_, Sessions> {
        self.sessions.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn start_sessions_if_new(&self, term: u64, image: &MetadataImage) {
        let mut sessions = self.sessions_lock();
        if sessions.term != term {
            let now = Instant::now();
            sessions.seen = image.brokers.keys().map(|id| (*id, now)).collect();
            sessions.unfenced_at.clear();
            sessions.term = term;
        }
    }

    fn touch(&self, broker: BrokerId) {
        self.sessions_lock().seen.insert(broker, Instant::now());
    }

    /// The metadata index a live broker must have applied before it counts its session as
    /// kept: where this controller last unfenced it, which follows whatever fenced it and
    /// moved its leaderships. Only this term's unfencing is known here; for any other the
    /// answer is the whole log applied so far, which is as safe and merely slower to reach.
    /// Answering the log end every time would make a broker that is busy applying a large
    /// change (thousands of new partitions) count itself out of its session while the
    /// controller still counts it in.
    fn heartbeat_index(&self, broker: BrokerId) -> u64 {
        let known = self.sessions_lock().unfenced_at.get(&broker).copied();
        known.unwrap_or_else(|| self.state.read().applied_index())
    }

    /// Carries out one command on the active controller.
    pub async fn handle(&self, command: Command) -> Result<Done, Refusal> {
        let term = self.leading_term()?;
        let _writer = self.writer.lock().await;
        self.form_if_needed().await?;
        let image = self.image();
        self.start_sessions_if_new(term, &image);
        match command {
            Command::RegisterBroker { id, host, port } => {
                // A new incarnation starts fenced, until it has caught up with the metadata.
                // The old one, if still live, is fenced first: its leaderships move to another
                // ISR member, which holds every committed record, because the process that
                // led them is gone and the new one may hold less (lost page cache). Where it
                // was the last ISR member, the partition waits for it to be unfenced.
                let mut records = match image.brokers.get(&id) {
                    Some(old) if !old.fenced => self.fence_records(&image, old),
                    _ => Vec::new(),
                };
                records.push(MetadataRecord::RegisterBroker(BrokerImage {
                    id,
                    host,
                    port,
                    epoch: -1,
                    fenced: true,
                }));
                self.touch(id);
                let index = self.propose(records).await?;
                Ok(Done::new(index, index as i64))
            }
            Command::Heartbeat {
                id,
                epoch,
                metadata_index,
            } => {
                let broker = registered(&image, id, epoch)?;
                self.touch(id);
                let caught_up = metadata_index as i64 >= broker.epoch;
                let left = self.shut_down_lock().contains(&(id, epoch));
                if broker.fenced && caught_up && !left {
                    let index = self.propose(unfence_records(&image, broker)).await?;
                    self.sessions_lock().unfenced_at.insert(id, index);
                    return Ok(Done::new(index, 0));
                }
                if broker.fenced {
                    let index = self.state.read().applied_index();
                    return Ok(Done::new(index, 1));
                }
                Ok(Done::new(self.heartbeat_index(id), 0))
            }
            Command::CreateTopic {
                name,
                partitions,
                replication_factor,
                configs,
                validate_only,
            } => {
                let records =
                    self.create_topic(&image, name, partitions, replication_factor, configs)?;
                self.propose_unless(validate_only, records).await
            }
            Command::CreatePartitions {
                topic,
                count,
                validate_only,
            } => {
                let records = create_partitions(&image, &topic, count)?;
                self.propose_unless(validate_only, records).await
            }
            Command::SetTopicConfigs {
                topic,
                configs,
                validate_only,
            } => {
                let current = image
                    .topic(&topic)
                    .ok_or_else(|| refuse(code::UNKNOWN_TOPIC_OR_PARTITION, "unknown topic"))?;
                self.propose_unless(validate_only, config_records(current, &configs))
                    .await
            }
            Command::SetBrokerConfigs { resource, configs } => {
                let records = broker_config_records(&image, &resource, &configs);
                self.propose_unless(false, records).await
            }
            Command::DeleteTopic { name } => {
                if image.topic(&name).is_none() {
                    return Err(refuse(code::UNKNOWN_TOPIC_OR_PARTITION, "unknown topic"));
                }
                let index = self
                    .propose(vec![MetadataRecord::RemoveTopic { name }])
                    .await?;
                Ok(Done::new(index, 0))
            }
            Command::AlterPartition {
                broker,
                broker_epoch,
                topic,
                partition,
                leader_epoch,
                partition_epoch,
                isr,
            } => {
                let current = image.brokers.get(&broker).map(|b| b.epoch);
                if current != Some(broker_epoch) {
                    return Err(refuse(code::STALE_BROKER_EPOCH, "stale broker epoch"));
                }
                let epochs = (leader_epoch, partition_epoch);
                let record = alter_isr(&image, broker, &topic, partition, epochs, isr)?;
                let index = self.propose(vec![record]).await?;
                Ok(Done::new(index, 0))
            }
            Command::ControlledShutdown { id, epoch } => {
                let broker = registered(&image, id, epoch)?;
                self.shut_down_lock().insert((id, epoch));
                if broker.fenced {
                    let index = self.state.read().applied_index();
                    return Ok(Done::new(index, 0));
                }
                tracing::info!(broker = id, "controlled shutdown: moving leaderships away");
                let index = self.propose(self.fence_records(&image, broker)).await?;
                Ok(Done::new(index, 0))
            }
            Command::ElectLeaders {
                unclean,
                partitions,
            } => {
                let (records, elections) =
                    self.requested_elections(&image, unclean, partitions.as_deref());
                let index = self.propose_unless(false, records).await?.index;
                Ok(Done {
                    index,
                    value: 0,
                    elections,
                })
            }
            Command::ReplicasOffline {
                id,
                epoch,
                partitions,
            } => {
                registered(&image, id, epoch)?;
                let unclean = |topic: &TopicImage| self.unclean_allowed(&image, topic);
                let (records, unclean_count) =
                    offline_records_with(&image, id, &partitions, &unclean);
                tracing::warn!(
                    broker = id,
                    partitions = partitions.len(),
                    "replicas offline: their broker cannot open them"
                );
                let done = self.propose_unless(false, records).await?;
                self.count_unclean(unclean_count);
                Ok(done)
            }
            Command::AllocateProducerIds { count } => {
                let start = image.next_producer_id.max(1);
                let next = start.saturating_add(count.clamp(1, 1 << 20));
                let index = self
                    .propose(vec![MetadataRecord::ProducerIds { next }])
                    .await?;
                Ok(Done::new(index, start))
            }
        }
    }

    async fn propose_unless(
        &self,
        validate_only: bool,
        records: Vec<MetadataRecord>,
    ) -> Result<Done, Refusal> {
        if validate_only || records.is_empty() {
            let index = self.state.read().applied_index();
            return Ok(Done::new(index, 0));
        }
        let index = self.propose(records).await?;
        Ok(Done::new(index, 0))
    }

    /// Proposes one batch and waits until it is committed and applied here.
    async fn propose(&self, records: Vec<MetadataRecord>) -> Result<u64, Refusal> {
        let batch = Batch {
            version: BATCH_VERSION,
            records,
        };
        match self.raft.client_write(batch).await {
            Ok(written) => match written.data.error {
                None => Ok(written.log_id.index),
                Some(error) => Err(refuse(code::UNKNOWN_SERVER_ERROR, error)),
            },
            Err(error) => {
                tracing::warn!(%error, "metadata proposal failed");
                Err(self
                    .leading_term()
                    .err()
                    .unwrap_or_else(|| refuse(code::NOT_CONTROLLER, error.to_string())))
            }
        }
    }

    fn create_topic(
        &self,
        image: &MetadataImage,
        name: String,
        partitions: i32,
        replication_factor: i16,
        configs: BTreeMap<String, String>,
    ) -> Result<Vec<MetadataRecord>, Refusal> {
        if !valid_topic_name(&name) {
            return Err(refuse(code::INVALID_TOPIC_EXCEPTION, "invalid topic name"));
        }
        if image.topic(&name).is_some() {
            return Err(refuse(
                code::TOPIC_ALREADY_EXISTS,
                format!("Topic '{name}' already exists."),
            ));
        }
        if !(1..=TOPIC_PARTITIONS_MAX).contains(&partitions) {
            return Err(refuse(
                code::INVALID_PARTITIONS,
                "partition count out of range",
            ));
        }
        let factor = match replication_factor {
            -1 => self.settings.default_replication_factor,
            factor => factor,
        };
        let assignment = place_replicas(image, partitions, factor, 0, random_start())?;
        let topic = TopicImage {
            name,
            id: crate::ids::random_id(),
            partitions: assignment.into_iter().map(PartitionImage::new).collect(),
            configs,
        };
        Ok(topic_records(&topic))
    }

    /// Fences the first broker found past its session, moving its leaderships; one per call,
    /// as Kafka fences one stale broker per check. Does nothing unless this node is active.
    pub async fn fence_stale_broker(&self) {
        let Ok(term) = self.leading_term() else {
            return;
        };
        let _writer = self.writer.lock().await;
        let image = self.image();
        self.start_sessions_if_new(term, &image);
        let stale = {
            let sessions = self.sessions_lock();
            image.live_brokers().find(|b| {
                sessions
                    .seen
                    .get(&b.id)
                    .is_none_or(|seen| seen.elapsed() > self.settings.session_timeout)
            })
        };
        if let Some(broker) = stale {
            tracing::warn!(broker = broker.id, "broker missed its session; fencing it");
            if let Err(error) = self.propose(self.fence_records(&image, broker)).await {
                tracing::warn!(broker = broker.id, %error, "cannot fence broker");
            }
        }
    }
}

impl Active {
    fn shut_down_lock(&self) -> std::sync::MutexGuard<'_, HashSet<(BrokerId, i64)>> {
        self.shut_down.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// A topic's own setting, else the cluster-wide dynamic default, else this controller's
    /// static configuration.
    fn unclean_allowed(&self, image: &MetadataImage, topic: &TopicImage) -> bool {
        let cluster_default = image
            .broker_configs
            .get("")
            .and_then(|c| c.get(UNCLEAN_KEY));
        topic
            .configs
            .get(UNCLEAN_KEY)
            .or(cluster_default)
            .map_or(self.settings.elections.unclean_default, |v| v == "true")
    }

    /// Fencing `broker`, with unclean elections where a topic allows them; counted.
    fn fence_records(&self, image: &MetadataImage, broker: &BrokerImage) -> Vec<MetadataRecord> {
        let unclean = |topic: &TopicImage| self.unclean_allowed(image, topic);
        let (records, unclean_count) = fence_records_with(image, broker, &unclean);
        self.count_unclean(unclean_count);
        records
    }

    fn count_unclean(&self, elections: u64) {
        if elections > 0 {
            tracing::warn!(
                elections,
                "unclean leader election: a replica outside the ISR leads"
            );
            self.unclean_elections
                .fetch_add(elections, Ordering::Relaxed);
        }
    }

    /// Leaders for partitions that have none: a live ISR member, or where the topic allows
    /// it, any live replica (its ISR becomes that replica alone). Runs on every tick, so a
    /// topic switched to unclean election gets its offline partitions back without a
    /// restart.
    pub async fn elect_leaderless(&self) {
        if self.leading_term().is_err() {
            return;
        }
        let _writer = self.writer.lock().await;
        let image = self.image();
        let mut records = Vec::new();
        let mut unclean_count = 0;
        for topic in image.topics.values() {
            for (index, partition) in (0..).zip(&topic.partitions) {
                if partition.leader >= 0 {
                    continue;
                }
                let unclean = self.unclean_allowed(&image, topic);
                if let Some((record, was_unclean)) =
                    elect_for(&image, topic, index, partition, unclean)
                {
                    unclean_count += u64::from(was_unclean);
                    records.push(record);
                }
            }
        }
        if records.is_empty() {
            return;
        }
        match self.propose(records).await {
            Ok(_) => self.count_unclean(unclean_count),
            Err(error) => tracing::warn!(%error, "cannot elect leaders"),
        }
    }

    /// Every `leader.imbalance.check.interval.seconds` with `auto.leader.rebalance.enable`:
    /// brokers whose share of partitions led by someone else than their preferred (first)
    /// replica is above `leader.imbalance.per.broker.percentage` get those leaderships back,
    /// where the preferred replica is live and in the ISR.
    pub async fn rebalance_if_due(&self) {
        let elections = &self.settings.elections;
        if !elections.auto_rebalance || self.leading_term().is_err() {
            return;
        }
        {
            let mut last = self
                .last_rebalance
                .lock()
                .unwrap_or_else(|e| e.into_inner());
            if last.elapsed() < elections.imbalance_interval {
                return;
            }
            *last = Instant::now();
        }
        let _writer = self.writer.lock().await;
        let image = self.image();
        let mut preferred: HashMap<BrokerId, (u32, u32)> = HashMap::new();
        for partition in image.topics.values().flat_map(|t| t.partitions.iter()) {
            if let Some(&first) = partition.replicas.first() {
                let entry = preferred.entry(first).or_default();
                entry.0 += 1;
                entry.1 += u32::from(partition.leader != first);
            }
        }
        let imbalanced: HashSet<BrokerId> = preferred
            .into_iter()
            .filter(|(_, (all, moved))| {
                *moved > 0
                    && u64::from(*moved) * 100
                        > u64::from(*all) * u64::from(elections.imbalance_percentage)
            })
            .map(|(broker, _)| broker)
            .collect();
        if imbalanced.is_empty() {
            return;
        }
        let mut records = Vec::new();
        for topic in image.topics.values() {
            for (index, partition) in (0..).zip(&topic.partitions) {
                let Some(&first) = partition.replicas.first() else {
                    continue;
                };
                if imbalanced.contains(&first) && preferred_ready(&image, partition) {
                    records.push(leader_change(&topic.name, index, first));
                }
            }
        }
        if records.is_empty() {
            return;
        }
        tracing::info!(
            partitions = records.len(),
            "moving leaderships back to preferred replicas"
        );
        if let Err(error) = self.propose(records).await {
            tracing::warn!(%error, "cannot move leaderships back");
        }
    }

    /// What an ElectLeaders request decides: records and, per partition, the outcome.
    fn requested_elections(
        &self,
        image: &MetadataImage,
        unclean: bool,
        partitions: Option<&[(String, i32)]>,
    ) -> (Vec<MetadataRecord>, Vec<(String, i32, i16)>) {
        let all: Vec<(String, i32)>;
        let wanted = match partitions {
            Some(list) => list,
            None => {
                all = image
                    .topics
                    .values()
                    .flat_map(|t| (0..t.partition_count()).map(|p| (t.name.clone(), p)))
                    .collect();
                &all
            }
        };
        let mut records = Vec::new();
        let mut outcomes = Vec::new();
        let mut unclean_count = 0;
        for (name, index) in wanted {
            let found = image
                .topic(name)
                .and_then(|t| t.partition(*index).map(|p| (t, p)));
            let Some((topic, partition)) = found else {
                outcomes.push((name.clone(), *index, code::UNKNOWN_TOPIC_OR_PARTITION));
                continue;
            };
            let outcome = if unclean {
                if partition.leader >= 0 {
                    code::ELECTION_NOT_NEEDED
                } else {
                    match elect_for(image, topic, *index, partition, true) {
                        Some((record, was_unclean)) => {
                            unclean_count += u64::from(was_unclean);
                            records.push(record);
                            code::NONE
                        }
                        None => code::ELIGIBLE_LEADERS_NOT_AVAILABLE,
                    }
                }
            } else {
                let first = partition.replicas.first().copied().unwrap_or(-1);
                if partition.leader == first {
                    code::ELECTION_NOT_NEEDED
                } else if preferred_ready(image, partition) {
                    records.push(leader_change(name, *index, first));
                    code::NONE
                } else {
                    code::PREFERRED_LEADER_NOT_AVAILABLE
                }
            };
            outcomes.push((name.clone(), *index, outcome));
        }
        self.count_unclean(unclean_count);
        (records, outcomes)
    }
}

/// Whether a partition's preferred replica may lead now: live and in the ISR.
fn preferred_ready(image: &MetadataImage, partition: &PartitionImage) -> bool {
    partition.replicas.first().is_some_and(|&first| {
        partition.leader != first
            && partition.isr.contains(&first)
            && partition.can_serve(image, first)
    })
}

fn leader_change(topic: &str, index: i32, leader: BrokerId) -> MetadataRecord {
    MetadataRecord::PartitionChange {
        topic: topic.to_owned(),
        index,
        leader: Some(leader),
        isr: None,
        replicas: None,
    }
}

/// A leader for a partition that has none: the first live ISR member in replica order, or
/// with `unclean`, the first live replica, its ISR reset to itself. Returns the record and
/// whether the election was unclean.
fn elect_for(
    image: &MetadataImage,
    topic: &TopicImage,
    index: i32,
    partition: &PartitionImage,
    unclean: bool,
) -> Option<(MetadataRecord, bool)> {
    let live = |r: &&BrokerId| partition.can_serve(image, **r);
    if let Some(&clean) = partition
        .replicas
        .iter()
        .filter(|r| partition.isr.contains(r))
        .find(live)
    {
        return Some((leader_change(&topic.name, index, clean), false));
    }
    if !unclean {
        return None;
    }
    let &chosen = partition.replicas.iter().find(live)?;
    let record = MetadataRecord::PartitionChange {
        topic: topic.name.clone(),
        index,
        leader: Some(chosen),
        isr: Some(vec![chosen]),
        replicas: None,
    };
    Some((record, true))
}

/// An AlterPartition, checked as Kafka checks it: the partition exists, the epochs are the
/// current ones, the sender leads it, the ISR is among the replicas, holds the leader, and
/// every member is live.
fn alter_isr(
    image: &MetadataImage,
    broker: BrokerId,
    topic: &str,
    index: i32,
    epochs: (i32, i32),
    isr: Vec<BrokerId>,
) -> Result<MetadataRecord, Refusal> {
    let partition = image
        .topic(topic)
        .and_then(|t| t.partition(index))
        .ok_or_else(|| refuse(code::UNKNOWN_TOPIC_OR_PARTITION, "unknown partition"))?;
    let (leader_epoch, partition_epoch) = epochs;
    if leader_epoch < partition.leader_epoch {
        return Err(refuse(code::FENCED_LEADER_EPOCH, "stale leader epoch"));
    }
    if partition.leader != broker || leader_epoch != partition.leader_epoch {
        return Err(refuse(code::INVALID_REQUEST, "not the leader"));
    }
    if partition_epoch != partition.partition_epoch {
        return Err(refuse(
            code::INVALID_UPDATE_VERSION,
            "stale partition epoch",
        ));
    }
    if !isr.contains(&broker) || isr.iter().any(|r| !partition.replicas.contains(r)) {
        return Err(refuse(
            code::INVALID_REQUEST,
            "the ISR must hold the leader and only replicas",
        ));
    }
    if isr.iter().any(|r| !partition.can_serve(image, *r)) {
        return Err(refuse(
            code::INELIGIBLE_REPLICA,
            "an ISR member is fenced or offline",
        ));
    }
    Ok(MetadataRecord::PartitionChange {
        topic: topic.to_owned(),
        index,
        leader: None,
        isr: Some(isr),
        replicas: None,
    })
}

/// A random starting broker for a new topic's replicas, as Kafka draws one.
fn random_start() -> usize {
    let bytes = crate::ids::random_id();
    usize::from(bytes[0]) << 8 | usize::from(bytes[1])
}

/// Replicas for partitions `first..first + count` over the live brokers, Kafka's rack-unaware
/// way: partition p's first replica is broker (p + start) mod n, and the others follow it with
/// a shift that grows by one every n partitions, so leaders and followers both spread.
pub fn place_replicas(
    image: &MetadataImage,
    count: i32,
    replication_factor: i16,
    first: i32,
    start: usize,
) -> Result<Vec<Vec<BrokerId>>, Refusal> {
    let brokers: Vec<BrokerId> = image.live_brokers().map(|b| b.id).collect();
    let n = brokers.len();
    let factor = usize::try_from(replication_factor).unwrap_or(0);
    if factor == 0 || factor > n {
        let message =
            format!("Replication factor: {replication_factor} larger than available brokers: {n}.");
        return Err(refuse(code::INVALID_REPLICATION_FACTOR, message));
    }
    let start_index = start % n;
    let mut shift = (start / n.max(1)) % n;
    let mut out = Vec::with_capacity(usize::try_from(count).unwrap_or(0));
    for partition in first..first + count {
        let p = usize::try_from(partition).unwrap_or(0);
        if p > 0 && p % n == 0 {
            shift += 1;
        }
        let leader = (p + start_index) % n;
        let mut replicas = vec![brokers[leader]];
        for j in 0..factor - 1 {
            let follower = (leader + 1 + (shift + j) % (n - 1)) % n;
            replicas.push(brokers[follower]);
        }
        out.push(replicas);
    }
    Ok(out)
}

fn create_partitions(
    image: &MetadataImage,
    topic: &str,
    count: i32,
) -> Result<Vec<MetadataRecord>, Refusal> {
    let current = image
        .topic(topic)
        .ok_or_else(|| refuse(code::UNKNOWN_TOPIC_OR_PARTITION, "unknown topic"))?;
    let have = current.partition_count();
    if count <= have || count > TOPIC_PARTITIONS_MAX {
        return Err(refuse(
            code::INVALID_PARTITIONS,
            "partition count must grow, up to the limit",
        ));
    }
    let factor = current.partitions.first().map_or(1, |p| p.replicas.len()) as i16;
    let assignment = place_replicas(image, count - have, factor, have, random_start())?;
    let records = (have..)
        .zip(assignment)
        .map(|(index, replicas)| MetadataRecord::Partition {
            topic: topic.to_owned(),
            index,
            partition: PartitionImage::new(replicas),
        })
        .collect();
    Ok(records)
}

/// The records that take `topic` from its configs to `configs`.
pub fn config_records(
    topic: &TopicImage,
    configs: &BTreeMap<String, String>,
) -> Vec<MetadataRecord> {
    let record = |key: &String, value: Option<&String>| MetadataRecord::TopicConfig {
        topic: topic.name.clone(),
        key: key.clone(),
        value: value.cloned(),
    };
    let removed = topic.configs.keys().filter(|k| !configs.contains_key(*k));
    let set = configs
        .iter()
        .filter(|(k, v)| topic.configs.get(*k) != Some(*v));
    let mut records: Vec<MetadataRecord> = removed.map(|k| record(k, None)).collect();
    records.extend(set.map(|(k, v)| record(k, Some(v))));
    records
}

/// Fencing `broker` where no topic allows unclean election.
pub fn fence_records(image: &MetadataImage, broker: &BrokerImage) -> Vec<MetadataRecord> {
    fence_records_with(image, broker, &|_| false).0
}

/// Fencing `broker`: it leaves every ISR it is in (unless it is the last member), each
/// partition it led gets the first other replica of its ISR that is live as leader, or where
/// `unclean` allows it for the topic and the ISR has none, the first live replica (its ISR
/// then that replica alone); else none. Returns the records and the unclean elections.
pub fn fence_records_with(
    image: &MetadataImage,
    broker: &BrokerImage,
    unclean: &dyn Fn(&TopicImage) -> bool,
) -> (Vec<MetadataRecord>, u64) {
    let gone = broker.id;
    let mut records = Vec::new();
    let mut unclean_count = 0;
    for topic in image.topics.values() {
        for (index, partition) in (0..).zip(&topic.partitions) {
            if let Some((record, was_unclean)) =
                step_down(image, topic, index, partition, gone, unclean(topic))
            {
                unclean_count += u64::from(was_unclean);
                records.push(record);
            }
        }
    }
    records.push(MetadataRecord::FenceBroker {
        id: gone,
        epoch: broker.epoch,
    });
    (records, unclean_count)
}

/// Unfencing `broker`: it may lead again, and partitions left without a leader whose ISR
/// holds it get it as leader.
/// `gone` stops serving one partition: it leaves the ISR (unless it is the last member) and,
/// where it led, the first other ISR replica that can serve leads, or with `unclean` the
/// first other replica that can (its ISR then that replica alone), else none. Returns the
/// change, if any, and whether the election was unclean.
fn step_down(
    image: &MetadataImage,
    topic: &TopicImage,
    index: i32,
    partition: &PartitionImage,
    gone: BrokerId,
    unclean: bool,
) -> Option<(MetadataRecord, bool)> {
    if partition.leader != gone && !partition.isr.contains(&gone) {
        return None;
    }
    let mut isr: Vec<BrokerId> = partition
        .isr
        .iter()
        .copied()
        .filter(|r| *r != gone)
        .collect();
    let other = |r: &&BrokerId| **r != gone && partition.can_serve(image, **r);
    let mut was_unclean = false;
    let leader = if partition.leader == gone {
        let clean = partition
            .replicas
            .iter()
            .filter(|r| isr.contains(r))
            .find(other)
            .copied();
        match clean {
            Some(leader) => Some(leader),
            None if unclean => match partition.replicas.iter().find(other) {
                Some(&leader) => {
                    was_unclean = true;
                    isr = vec![leader];
                    Some(leader)
                }
                None => Some(-1),
            },
            None => Some(-1),
        }
    } else {
        None
    };
    // Kafka keeps the last ISR member rather than leave the ISR empty.
    let isr = (!isr.is_empty() && isr != partition.isr).then_some(isr);
    if leader.is_none() && isr.is_none() {
        return None;
    }
    let record = MetadataRecord::PartitionChange {
        topic: topic.name.clone(),
        index,
        leader,
        isr,
        replicas: None,
    };
    Some((record, was_unclean))
}

/// `broker` could not open its copies of `partitions`: each is marked offline there and the
/// broker steps down from it. Partitions it holds no replica of are skipped.
pub fn offline_records_with(
    image: &MetadataImage,
    broker: BrokerId,
    partitions: &[(String, i32)],
    unclean: &dyn Fn(&TopicImage) -> bool,
) -> (Vec<MetadataRecord>, u64) {
    let mut records = Vec::new();
    let mut unclean_count = 0;
    for (name, index) in partitions {
        let Some(topic) = image.topic(name) else {
            continue;
        };
        let Some(partition) = topic.partition(*index) else {
            continue;
        };
        if !partition.replicas.contains(&broker) || partition.offline.contains(&broker) {
            continue;
        }
        records.push(MetadataRecord::ReplicaOffline {
            topic: name.clone(),
            index: *index,
            broker,
        });
        let mut marked = partition.clone();
        marked.offline.push(broker);
        if let Some((record, was_unclean)) =
            step_down(image, topic, *index, &marked, broker, unclean(topic))
        {
            unclean_count += u64::from(was_unclean);
            records.push(record);
        }
    }
    (records, unclean_count)
}

pub fn unfence_records(image: &MetadataImage, broker: &BrokerImage) -> Vec<MetadataRecord> {
    let mut records = vec![MetadataRecord::UnfenceBroker {
        id: broker.id,
        epoch: broker.epoch,
    }];
    for topic in image.topics.values() {
        for (index, partition) in (0..).zip(&topic.partitions) {
            if partition.leader < 0
                && partition.isr.contains(&broker.id)
                && !partition.offline.contains(&broker.id)
            {
                records.push(MetadataRecord::PartitionChange {
                    topic: topic.name.clone(),
                    index,
                    leader: Some(broker.id),
                    isr: None,
                    replicas: None,
                });
            }
        }
    }
    records
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::metadata::MetadataDelta;

    fn cluster(
        brokers: &[(BrokerId, bool)],
        topics: &[(&str, Vec<Vec<BrokerId>>)],
    ) -> Arc<MetadataImage> {
        let mut delta = MetadataDelta::new(Arc::new(MetadataImage::default()));
        for &(id, fenced) in brokers {
            let broker = BrokerImage {
                id,
                host: "h".into(),
                port: 1,
                epoch: 1,
                fenced,
            };
            delta
                .replay(MetadataRecord::RegisterBroker(broker))
                .unwrap();
        }
        for (name, assignment) in topics {
            let topic = TopicImage {
                name: (*name).to_owned(),
                id: [1; 16],
                partitions: assignment
                    .iter()
                    .cloned()
                    .map(PartitionImage::new)
                    .collect(),
                configs: BTreeMap::new(),
            };
            for record in topic_records(&topic) {
                delta.replay(record).unwrap();
            }
        }
        delta.apply().0
    }

    fn apply(image: &Arc<MetadataImage>, records: Vec<MetadataRecord>) -> Arc<MetadataImage> {
        let mut delta = MetadataDelta::new(image.clone());
        for record in records {
            delta.replay(record).unwrap();
        }
        delta.apply().0
    }

    #[test]
    fn placement_spreads_leaders_and_followers_as_kafka_does() {
        let image = cluster(
            &[(0, false), (1, false), (2, false), (3, false), (4, false)],
            &[],
        );
        let placed = place_replicas(&image, 10, 3, 0, 0).unwrap();
        let expected: Vec<Vec<BrokerId>> = vec![
            vec![0, 1, 2],
            vec![1, 2, 3],
            vec![2, 3, 4],
            vec![3, 4, 0],
            vec![4, 0, 1],
            vec![0, 2, 3],
            vec![1, 3, 4],
            vec![2, 4, 0],
            vec![3, 0, 1],
            vec![4, 1, 2],
        ];
        assert_eq!(placed, expected);
    }

    #[test]
    fn placement_uses_live_brokers_and_refuses_too_high_a_factor() {
        let image = cluster(&[(1, false), (2, true), (3, false)], &[]);
        let placed = place_replicas(&image, 4, 2, 0, 7).unwrap();
        assert!(placed.iter().flatten().all(|b| *b != 2));
        assert!(placed.iter().all(|r| r.len() == 2 && r[0] != r[1]));
        let refused = place_replicas(&image, 1, 3, 0, 0).unwrap_err();
        assert!(
            matches!(refused, Refusal::Error { code, .. } if code == code::INVALID_REPLICATION_FACTOR)
        );
    }

    #[test]
    fn fencing_moves_leadership_to_the_next_live_isr_member_in_replica_order() {
        let image = cluster(
            &[(1, false), (2, false), (3, false)],
            &[("t", vec![vec![1, 2, 3], vec![2, 3, 1], vec![3, 1, 2]])],
        );
        let broker = image.brokers[&1].clone();
        let image = apply(&image, fence_records(&image, &broker));
        let t = image.topic("t").unwrap();
        let p0 = t.partition(0).unwrap();
        assert_eq!(
            (p0.leader, p0.leader_epoch, p0.isr.clone()),
            (2, 1, vec![2, 3])
        );
        let p1 = t.partition(1).unwrap();
        assert_eq!(
            (p1.leader, p1.leader_epoch, p1.isr.clone()),
            (2, 0, vec![2, 3])
        );
        assert!(image.brokers[&1].fenced);
        assert_eq!(image.live_brokers().count(), 2);
    }

    #[test]
    fn a_last_isr_member_fenced_leaves_the_partition_leaderless_until_it_returns() {
        let image = cluster(&[(1, false), (2, false)], &[("t", vec![vec![1]])]);
        let broker = image.brokers[&1].clone();
        let image = apply(&image, fence_records(&image, &broker));
        let p = image.topic("t").unwrap().partition(0).unwrap().clone();
        assert_eq!((p.leader, p.isr.clone()), (-1, vec![1]));
        let broker = image.brokers[&1].clone();
        let image = apply(&image, unfence_records(&image, &broker));
        let p = image.topic("t").unwrap().partition(0).unwrap().clone();
        assert_eq!((p.leader, p.leader_epoch), (1, 2));
        assert!(!image.brokers[&1].fenced);
    }

    #[test]
    fn an_offline_replica_steps_down_stays_out_until_it_registers_again() {
        let image = cluster(
            &[(1, false), (2, false), (3, false)],
            &[
                ("t", vec![vec![1, 2, 3], vec![2, 3, 1]]),
                ("u", vec![vec![1]]),
            ],
        );
        let wanted = [
            ("t".to_owned(), 0),
            ("t".to_owned(), 1),
            ("u".to_owned(), 0),
        ];
        let (records, unclean) = offline_records_with(&image, 1, &wanted, &|_| false);
        assert_eq!(unclean, 0);
        let image = apply(&image, records);
        let t = image.topic("t").unwrap();
        let (p0, p1) = (t.partition(0).unwrap(), t.partition(1).unwrap());
        assert_eq!(
            (p0.leader, p0.isr.clone(), p0.offline.clone()),
            (2, vec![2, 3], vec![1])
        );
        assert_eq!((p1.leader, p1.isr.clone()), (2, vec![2, 3]));
        // The only replica: no leader, and no election gives it back while offline.
        let u = image.topic("u").unwrap().partition(0).unwrap().clone();
        assert_eq!((u.leader, u.offline.clone()), (-1, vec![1]));
        let topic = image.topic("u").unwrap();
        assert!(elect_for(&image, topic, 0, &u, true).is_none());
        let broker = image.brokers[&1].clone();
        let unfenced = apply(&image, unfence_records(&image, &broker));
        assert_eq!(
            unfenced.topic("u").unwrap().partition(0).unwrap().leader,
            -1
        );
        let refused = alter_isr(&image, 2, "t", 0, (1, p0.partition_epoch), vec![2, 3, 1]);
        assert!(
            matches!(refused, Err(Refusal::Error { code, .. }) if code == code::INELIGIBLE_REPLICA)
        );
        // A new incarnation tries its copies again.
        let again = BrokerImage {
            epoch: 5,
            ..image.brokers[&1].clone()
        };
        let image = apply(&image, vec![MetadataRecord::RegisterBroker(again)]);
        assert!(image
            .topics
            .values()
            .flat_map(|t| &t.partitions)
            .all(|p| p.offline.is_empty()));
    }

    /// Shrinks partition 0 of `t` to the ISR `isr`, as an AlterPartition would.
    fn shrink(image: &Arc<MetadataImage>, isr: Vec<BrokerId>) -> Arc<MetadataImage> {
        apply(
            image,
            vec![MetadataRecord::PartitionChange {
                topic: "t".into(),
                index: 0,
                leader: None,
                isr: Some(isr),
                replicas: None,
            }],
        )
    }

    #[test]
    fn an_unclean_election_takes_a_live_replica_outside_the_isr_only_when_allowed() {
        let image = cluster(
            &[(1, false), (2, false), (3, false)],
            &[("t", vec![vec![1, 2, 3]])],
        );
        let image = shrink(&image, vec![1]);
        let broker = image.brokers[&1].clone();
        let (records, unclean) = fence_records_with(&image, &broker, &|_| false);
        assert_eq!(unclean, 0);
        let clean = apply(&image, records);
        assert_eq!(clean.topic("t").unwrap().partition(0).unwrap().leader, -1);
        let (records, unclean) = fence_records_with(&image, &broker, &|_| true);
        assert_eq!(unclean, 1);
        let image = apply(&image, records);
        let p = image.topic("t").unwrap().partition(0).unwrap();
        assert_eq!((p.leader, p.isr.clone(), p.leader_epoch), (2, vec![2], 1));
    }

    #[test]
    fn a_leaderless_partition_gets_a_live_isr_member_first() {
        let image = cluster(
            &[(1, true), (2, false), (3, false)],
            &[("t", vec![vec![1, 2, 3]])],
        );
        let image = shrink(&image, vec![1, 3]);
        let topic = image.topic("t").unwrap();
        let partition = topic.partition(0).unwrap();
        let (record, unclean) = elect_for(&image, topic, 0, partition, true).unwrap();
        assert!(!unclean, "3 is in the ISR and live");
        assert!(matches!(
            record,
            MetadataRecord::PartitionChange {
                leader: Some(3),
                isr: None,
                ..
            }
        ));
        let image = shrink(&image, vec![1]);
        let topic = image.topic("t").unwrap();
        let partition = topic.partition(0).unwrap();
        assert!(elect_for(&image, topic, 0, partition, false).is_none());
        let (_, unclean) = elect_for(&image, topic, 0, partition, true).unwrap();
        assert!(unclean);
    }

    #[test]
    fn the_preferred_replica_leads_again_once_live_and_in_sync() {
        let image = cluster(
            &[(1, false), (2, false), (3, false)],
            &[("t", vec![vec![1, 2, 3]])],
        );
        let broker = image.brokers[&1].clone();
        let image = apply(&image, fence_records(&image, &broker));
        let p = image.topic("t").unwrap().partition(0).unwrap().clone();
        assert_eq!(p.leader, 2);
        assert!(
            !preferred_ready(&image, &p),
            "1 is fenced and out of the ISR"
        );
        let broker = image.brokers[&1].clone();
        let image = apply(&image, unfence_records(&image, &broker));
        let image = shrink(&image, vec![2, 3, 1]);
        let p = image.topic("t").unwrap().partition(0).unwrap().clone();
        assert!(preferred_ready(&image, &p));
        let image = apply(&image, vec![leader_change("t", 0, 1)]);
        let p = image.topic("t").unwrap().partition(0).unwrap();
        assert_eq!((p.leader, p.leader_epoch), (1, 2));
    }
}
