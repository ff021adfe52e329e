//! The partition layer: a partition as its owner core holds it. It owns the partition's `Log`
//! privately and offers operations by intent (append as leader or as follower, read for a
//! consumer or for a follower, offsets, delete records, truncate, reconfigure), and it keeps
//! the log and the replication state (`replica`) in step, so the rules for the high watermark
//! and the leader epoch are applied in one place. Everything above calls it; nothing above
//! touches a `Log`.

pub mod replica;

use std::cell::{Cell, RefCell};
use std::collections::{HashMap, HashSet};
use std::path::PathBuf;
use std::rc::Rc;
use std::sync::Arc;

use bytes::Bytes;
use event_listener::Event;
use futures_util::lock::Mutex as LocalMutex;
use sluice_storage::{AppendResult, FileRegion, Log, LogConfig, RealDisk, RealFile, StorageError};

use crate::error_codes as code;
use crate::order::{Turn, Turns};
use replica::{BrokerId, IsrChange, ReplicaState};

/// Why a partition refuses an operation.
#[derive(Debug, thiserror::Error)]
pub enum PartitionError {
    #[error("this broker does not lead the partition")]
    NotLeader,
    /// The client knows an older leader epoch than the partition's (KIP-320).
    #[error("leader epoch {requested} is older than the partition's {current}")]
    FencedLeaderEpoch { requested: i32, current: i32 },
    /// The client knows a newer leader epoch than the partition's: this broker lags.
    #[error("leader epoch {requested} is newer than the partition's {current}")]
    UnknownLeaderEpoch { requested: i32, current: i32 },
    #[error(transparent)]
    Storage(#[from] StorageError),
}

impl PartitionError {
    /// The Kafka error code a client sees for it.
    pub fn code(&self) -> i16 {
        match self {
            PartitionError::NotLeader => code::NOT_LEADER_OR_FOLLOWER,
            PartitionError::FencedLeaderEpoch { .. } => code::FENCED_LEADER_EPOCH,
            PartitionError::UnknownLeaderEpoch { .. } => code::UNKNOWN_LEADER_EPOCH,
            PartitionError::Storage(error) => code::from_storage(error),
        }
    }
}

/// A partition's log bounds and high watermark at one moment.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Offsets {
    pub log_start_offset: i64,
    pub high_watermark: i64,
    pub log_end_offset: i64,
}

/// What a read found: whole batches as file regions, and the partition's offsets when it ran.
pub struct Read {
    pub regions: Vec<FileRegion<RealFile>>,
    pub offsets: Offsets,
    /// The size of the first batch (0 when none): the least a read from here returns.
    pub first_batch_len: u64,
}

/// A follower's fetch of one partition, as the leader reads it.
#[derive(Debug, Clone, Copy)]
pub struct FollowerFetch {
    pub replica: BrokerId,
    pub offset: i64,
    pub current_leader_epoch: i32,
    pub last_fetched_epoch: i32,
}

/// What a follower's fetch gets: batches up to the log end, or where its log diverges; and
/// an ISR expansion for the leader to ask the controller for.
impl Read {
    /// What the log read, with the partition's offsets when it ran.
    fn from_log(read: sluice_storage::ReadResult<RealFile>, offsets: Offsets) -> Self {
        Self {
            regions: read.regions,
            offsets,
            first_batch_len: read.first_batch_len,
        }
    }
}

pub struct FollowerRead {
    pub read: Read,
    pub diverging_epoch: Option<(i32, i64)>,
    pub isr_change: Option<IsrChange>,
}

/// The size of a partition's log, for DescribeLogDirs and the metrics.
#[derive(Debug, Clone, Copy)]
pub struct Stats {
    pub offsets: Offsets,
    pub size_bytes: u64,
    pub segments: usize,
}

/// One partition on its owner core. The log mutex is core-local: it orders appends and reads
/// between tasks of the same core and is never touched by another core.
pub struct Partition {
    log: LocalMutex<Log<RealDisk>>,
    replica: RefCell<ReplicaState>,
    /// Fires when the high watermark moves, so fetches waiting on any core wake.
    appended: Arc<Event>,
    /// Appends take a turn here when they are decided, so they reach the log in that order;
    /// the mutex alone would let a late arrival overtake a waiter.
    appends: Turns,
    /// Idempotent producers answered as duplicates in the leader epoch kept beside them (see
    /// `append_as_leader`).
    reached: RefCell<(i32, HashSet<i64>)>,
    /// Set when the partition's directory was set aside (its topic deleted while a request
    /// still held it): its files' paths may now belong to a topic created under the same
    /// name, so nothing is written through them any more.
    detached: Cell<bool>,
}

impl Partition {
    /// Opens (creating or recovering) the log in `dir`. The partition has no role until
    /// [`Partition::become_leader`] or [`Partition::become_follower`].
    pub async fn open(
        dir: PathBuf,
        config: LogConfig,
        local: BrokerId,
        appended: Arc<Event>,
        now_ms: i64,
        clean_dir: bool,
    ) -> Result<Self, StorageError> {
        let log = Log::open_in(RealDisk, dir, config, now_ms, clean_dir).await?;
        let replica = ReplicaState::new(
            local,
            log.log_start_offset(),
            log.log_end_offset(),
            log.high_watermark(),
        );
        Ok(Self {
            log: LocalMutex::new(log),
            replica: RefCell::new(replica),
            appended,
            appends: Turns::default(),
            reached: RefCell::new((-1, HashSet::new())),
            detached: Cell::new(false),
        })
    }

    /// Leads in `leader_epoch` with `isr` in sync; the high watermark follows the rule in
    /// `replica`.
    pub async fn become_leader(
        &self,
        epochs: (i32, i32),
        replicas: Vec<BrokerId>,
        isr: Vec<BrokerId>,
        now_ms: i64,
    ) {
        let mut log = self.log.lock().await;
        let before = self.replica.borrow().high_watermark();
        self.replica
            .borrow_mut()
            .become_leader(epochs, replicas, isr, now_ms);
        // A new partition's first epoch is checkpointed now rather than by its first append,
        // which would otherwise wait for a file creation and two syncs: producing to many
        // new partitions paid that on each one's first batch. Later epochs are left to
        // their first appends, so that a restart or a leadership change, which gives every
        // partition a new epoch at once, does not write thousands of checkpoints before the
        // broker serves. On failure the first append records the epoch as before.
        if !self.detached.get() && log.leader_epochs().is_empty() {
            if let Err(error) = log.begin_epoch_at_end(epochs.0).await {
                tracing::warn!(epoch = epochs.0, %error, "cannot checkpoint the new leader epoch; its first append will");
            }
        }
        self.publish_high_watermark(&mut log);
        if self.replica.borrow().high_watermark() != before {
            self.appended.notify(usize::MAX);
        }
    }

    /// Follows `leader` in the leader epoch and partition epoch `epochs`. Requests waiting on
    /// this partition as a leader (acks=all producers) are woken to see it is not one.
    pub fn become_follower(
        &self,
        epochs: (i32, i32),
        replicas: Vec<BrokerId>,
        leader: Option<BrokerId>,
    ) {
        self.replica
            .borrow_mut()
            .become_follower(epochs, replicas, leader);
        self.appended.notify(usize::MAX);
    }

    /// Where a follower fetches from: its log end, and the epoch of its last batch (-1 when
    /// it has none).
    pub async fn fetch_position(&self) -> (i64, i32) {
        let log = self.log.lock().await;
        let epoch = log.leader_epochs().last().map_or(-1, |(epoch, _)| *epoch);
        (log.log_end_offset(), epoch)
    }

    /// An ISR change went to the controller (see `ReplicaState::on_isr_change_sent`).
    pub fn isr_change_sent(&self, isr: Vec<BrokerId>) {
        self.replica.borrow_mut().on_isr_change_sent(isr);
    }

    /// An ISR change was refused or lost; another may be sent.
    pub fn isr_change_failed(&self) {
        self.replica.borrow_mut().on_isr_change_failed();
    }

    /// The ISR without followers that lag more than `lag_max_ms`, if any do.
    pub fn isr_shrink(&self, now_ms: i64, lag_max_ms: i64) -> Option<IsrChange> {
        self.replica.borrow().shrink(now_ms, lag_max_ms)
    }

    /// A copy of the replication state, for answers and metrics.
    pub fn replica(&self) -> ReplicaState {
        self.replica.borrow().clone()
    }

    pub fn offsets(&self) -> Offsets {
        let replica = self.replica.borrow();
        Offsets {
            log_start_offset: replica.log_start_offset(),
            high_watermark: replica.high_watermark(),
            log_end_offset: replica.log_end_offset(),
        }
    }

    /// The event that fires when the high watermark moves.
    pub fn appended(&self) -> &Arc<Event> {
        &self.appended
    }

    /// Waits until the high watermark passes `last_offset`, woken by the partition's events
    /// rather than polling (acks=all). Returns the ISR size then, so the caller can hold it
    /// to `min.insync.replicas`; `NotLeader` if leadership moved, `None` past `deadline`.
    pub async fn wait_committed(
        &self,
        last_offset: i64,
        deadline: std::time::Instant,
    ) -> Result<Option<usize>, PartitionError> {
        loop {
            let changed = self.appended.listen();
            {
                let replica = self.replica.borrow();
                if !replica.is_leader() {
                    return Err(PartitionError::NotLeader);
                }
                if replica.high_watermark() > last_offset {
                    return Ok(Some(replica.isr().len()));
                }
            }
            let left = deadline.saturating_duration_since(std::time::Instant::now());
            if left.is_zero() {
                return Ok(None);
            }
            let _ = compio::time::timeout(left, changed).await;
        }
    }

    /// The next place in this partition's line of appends. Take it synchronously where the
    /// append is decided; appends then reach the log in the order their turns were taken.
    pub fn take_turn(&self) -> Turn {
        self.appends.take()
    }

    /// Appends `batches` as the leader: waits for `turn`, gives the batches offsets from the
    /// log end, stamps them with the leader epoch, and moves the high watermark by the rule.
    pub async fn append_as_leader(
        &self,
        turn: &Turn,
        batches: Bytes,
        now_ms: i64,
    ) -> Result<AppendResult, PartitionError> {
        turn.wait().await;
        let mut log = self.log_to_write().await?;
        let leader_epoch = self.leader_epoch_if_leading()?;
        let producer_id =
            sluice_storage::batch::parse_header(&batches).map_or(-1, |header| header.producer_id);
        let appended = log.append(batches, leader_epoch, now_ms).await;
        self.after_append(&mut log);
        match &appended {
            Err(StorageError::OutOfOrderSequence { .. })
                if !self.reached(producer_id) && !self.wrote_in_this_epoch(&log, producer_id) =>
            {
                return Err(PartitionError::NotLeader);
            }
            // An append is found by `wrote_in_this_epoch`; a retry answered as a duplicate
            // writes nothing, so it is remembered here.
            Err(StorageError::DuplicateSequence { .. }) if producer_id >= 0 => {
                let mut reached = self.reached.borrow_mut();
                if reached.0 != leader_epoch {
                    *reached = (leader_epoch, HashSet::new());
                }
                reached.1.insert(producer_id);
            }
            _ => {}
        }
        Ok(appended?)
    }

    /// Whether an append of `producer_id` has reached this partition in its leader epoch.
    fn reached(&self, producer_id: i64) -> bool {
        let reached = self.reached.borrow();
        reached.0 == self.replica.borrow().leader_epoch() && reached.1.contains(&producer_id)
    }

    /// Whether `producer_id` has a batch in this log from this leader's epoch on.
    ///
    /// A sequence gap from a producer that has neither written here nor reached this
    /// partition since this broker took the lead is one whose requests were in flight
    /// across the leader change: an earlier one was refused while this broker was taking
    /// the lead, and the next arrived first. It is answered NOT_LEADER_OR_FOLLOWER, so the
    /// producer sends both again in order, rather than OUT_OF_ORDER_SEQUENCE_NUMBER, on which
    /// librdkafka bumps its producer epoch and renumbers what it had in flight, writing it
    /// twice. Any later gap is out of order, as Kafka answers.
    fn wrote_in_this_epoch(&self, log: &Log<RealDisk>, producer_id: i64) -> bool {
        let start = self.replica.borrow().epoch_start_offset();
        let last = log.producer_last_offset(producer_id);
        matches!((start, last), (Some(start), Some(last)) if last >= start)
    }

    /// The log, for an operation that writes to its files; refused once `detach`ed.
    async fn log_to_write(
        &self,
    ) -> Result<futures_util::lock::MutexGuard<'_, Log<RealDisk>>, StorageError> {
        let log = self.log.lock().await;
        if self.detached.get() {
            return Err(StorageError::Io(std::io::Error::other(
                "the partition's topic was deleted",
            )));
        }
        Ok(log)
    }

    /// Stops every later write through this partition's files (see `detached`); waits for
    /// the one in progress.
    pub async fn detach(&self) {
        let log = self.log.lock().await;
        log.detach_files();
        self.detached.set(true);
    }

    /// The leader epoch, when this broker leads.
    fn leader_epoch_if_leading(&self) -> Result<i32, PartitionError> {
        let replica = self.replica.borrow();
        if !replica.is_leader() {
            return Err(PartitionError::NotLeader);
        }
        Ok(replica.leader_epoch())
    }

    /// Refuses a request for the leader that this broker is not, or whose `current_leader_epoch`
    /// (-1: not given) is not the partition's (KIP-320).
    pub fn check_leader(&self, current_leader_epoch: i32) -> Result<(), PartitionError> {
        let epoch = self.leader_epoch_if_leading()?;
        match current_leader_epoch {
            requested if requested < 0 || requested == epoch => Ok(()),
            requested if requested < epoch => Err(PartitionError::FencedLeaderEpoch {
                requested,
                current: epoch,
            }),
            requested => Err(PartitionError::UnknownLeaderEpoch {
                requested,
                current: epoch,
            }),
        }
    }

    /// Appends batches copied from the leader as they are, offsets and leader epochs kept; the
    /// first must start at this log's end. The high watermark follows the leader's
    /// (`on_leader_high_watermark`), never this append.
    pub async fn append_as_follower(
        &self,
        batches: Bytes,
        now_ms: i64,
    ) -> Result<AppendResult, PartitionError> {
        let mut log = self.log_to_write().await?;
        if self.replica.borrow().is_leader() {
            return Err(PartitionError::NotLeader);
        }
        let appended = log.append_as_follower(batches, now_ms).await;
        self.after_append(&mut log);
        Ok(appended?)
    }

    /// A follower learns the leader's high watermark (from a fetch response); its own is that,
    /// bounded by its log end.
    pub async fn follow_high_watermark(&self, leader_high_watermark: i64) {
        let mut log = self.log.lock().await;
        // A fetch answered before this broker became leader says nothing to a leader.
        if self.replica.borrow().is_leader() {
            return;
        }
        let before = self.replica.borrow().high_watermark();
        self.replica
            .borrow_mut()
            .on_leader_high_watermark(leader_high_watermark);
        self.publish_high_watermark(&mut log);
        if self.replica.borrow().high_watermark() != before {
            self.appended.notify(usize::MAX);
        }
    }

    /// Appends `batches` as the leader, one after another, then flushes and moves the log
    /// start to the first of them, all while holding `turn`: the rewrite that compacts a log
    /// whose live records the caller has read (under the same turn) and re-encoded. Returns
    /// the new log start.
    pub async fn rewrite_as_leader(
        &self,
        turn: &Turn,
        batches: Vec<Bytes>,
        now_ms: i64,
    ) -> Result<i64, PartitionError> {
        turn.wait().await;
        let mut log = self.log_to_write().await?;
        let start = log.log_end_offset();
        let leader_epoch = self.leader_epoch_if_leading()?;
        let mut appended = Ok(());
        for batch in batches {
            if let Err(error) = log.append(batch, leader_epoch, now_ms).await {
                appended = Err(error);
                break;
            }
        }
        // The rewritten records must be durable before the log start passes the originals.
        let rewritten = match appended {
            Ok(()) => log.flush().await,
            Err(error) => Err(error),
        };
        self.after_append(&mut log);
        rewritten?;
        let start = log.delete_records_before(start).await?;
        self.replica.borrow_mut().on_log_start(start);
        self.publish_high_watermark(&mut log);
        Ok(start)
    }

    /// Whole batches from `offset`, at most `max_bytes` (at least one batch), below the high
    /// watermark: what a consumer may see, from the leader in `current_leader_epoch` (-1:
    /// any).
    pub async fn read_for_consumer(
        &self,
        offset: i64,
        max_bytes: u64,
        current_leader_epoch: i32,
    ) -> Result<Read, PartitionError> {
        self.check_leader(current_leader_epoch)?;
        let log = self.log.lock().await;
        let offsets = self.offsets();
        let read = log.read(offset, max_bytes, offsets.high_watermark).await?;
        Ok(Read::from_log(read, offsets))
    }

    /// Whole batches from `offset`, at most `max_bytes` (at least one batch), up to the log
    /// end: what a follower copies.
    pub async fn read_for_follower(
        &self,
        fetch: FollowerFetch,
        max_bytes: u64,
        now_ms: i64,
    ) -> Result<FollowerRead, PartitionError> {
        self.check_leader(fetch.current_leader_epoch)?;
        let mut log = self.log.lock().await;
        // A follower whose last epoch ends earlier here, or is unknown here past its start,
        // holds batches this leader does not: it must truncate first (KIP-320).
        if fetch.last_fetched_epoch >= 0 {
            let ours = log.end_offset_for_epoch(fetch.last_fetched_epoch);
            if let Some((epoch, end)) =
                ours.filter(|(e, end)| *end < fetch.offset || *e < fetch.last_fetched_epoch)
            {
                return Ok(FollowerRead {
                    read: Read {
                        regions: Vec::new(),
                        offsets: self.offsets(),
                        first_batch_len: 0,
                    },
                    diverging_epoch: Some((epoch, end)),
                    isr_change: None,
                });
            }
        }
        let (moved, isr_change) =
            self.replica
                .borrow_mut()
                .on_follower_fetch(fetch.replica, fetch.offset, now_ms);
        if moved.is_some() {
            self.publish_high_watermark(&mut log);
            self.appended.notify(usize::MAX);
        }
        let offsets = self.offsets();
        let read = log
            .read(fetch.offset, max_bytes, offsets.log_end_offset)
            .await?;
        Ok(FollowerRead {
            read: Read::from_log(read, offsets),
            diverging_epoch: None,
            isr_change,
        })
    }

    /// Whole batches from `offset` up to the log end, on the leader: what a group coordinator
    /// loads when it takes a partition of `__consumer_offsets` over (as Kafka loads to the log
    /// end, since a new leader's log end is what it will commit or truncate).
    pub async fn read_to_log_end(
        &self,
        offset: i64,
        max_bytes: u64,
    ) -> Result<Read, PartitionError> {
        self.check_leader(-1)?;
        let log = self.log.lock().await;
        let offsets = self.offsets();
        let read = log.read(offset, max_bytes, offsets.log_end_offset).await?;
        Ok(Read::from_log(read, offsets))
    }

    /// Truncates a follower whose log diverges from its leader's at `diverging` (the epoch and
    /// the leader's end offset for it), to where the two agree as far as this log can tell.
    pub async fn truncate_to_leader(&self, diverging: (i32, i64)) -> Result<i64, PartitionError> {
        let (epoch, leader_end) = diverging;
        let mut log = self.log_to_write().await?;
        let target = match log.end_offset_for_epoch(epoch) {
            Some((ours, end)) if ours == epoch => end.min(leader_end),
            Some((_, end)) => end,
            None => log.log_start_offset(),
        };
        log.truncate_to(target).await?;
        self.after_append(&mut log);
        Ok(log.log_end_offset())
    }

    /// Empties a follower whose whole log lies below the leader's log start, and starts it at
    /// `offset`.
    pub async fn restart_at(&self, offset: i64) -> Result<(), PartitionError> {
        let mut log = self.log_to_write().await?;
        log.truncate_fully_and_start_at(offset).await?;
        self.replica
            .borrow_mut()
            .on_log_start(log.log_start_offset());
        self.after_append(&mut log);
        Ok(())
    }

    /// The first record at or after the log start with a timestamp of at least `timestamp`:
    /// its offset and timestamp.
    pub async fn offset_for_timestamp(
        &self,
        timestamp: i64,
    ) -> Result<Option<(i64, i64)>, StorageError> {
        let log = self.log.lock().await;
        log.offset_for_timestamp(timestamp).await
    }

    /// The largest timestamp in the log and the offset that holds it.
    pub async fn max_timestamp(&self) -> Option<(i64, i64)> {
        let log = self.log.lock().await;
        log.max_timestamp_and_offset()
    }

    /// DeleteRecords: moves the log start to `offset` (-1 means the high watermark, as in
    /// Kafka), which may not pass the high watermark. Returns the new log start.
    pub async fn delete_records(&self, offset: i64) -> Result<i64, PartitionError> {
        self.check_leader(-1)?;
        let mut log = self.log_to_write().await?;
        let offsets = self.offsets();
        let target = if offset == -1 {
            offsets.high_watermark
        } else {
            offset
        };
        if target < 0 || target > offsets.high_watermark {
            return Err(PartitionError::Storage(StorageError::OffsetOutOfRange {
                offset: target,
                start: offsets.log_start_offset,
                end: offsets.high_watermark,
            }));
        }
        let start = log.delete_records_before(target).await?;
        self.replica.borrow_mut().on_log_start(start);
        self.publish_high_watermark(&mut log);
        Ok(start)
    }

    /// Removes everything at and after `offset`: a follower whose log diverged from its leader's.
    pub async fn truncate_to(&self, offset: i64) -> Result<(), StorageError> {
        let mut log = self.log_to_write().await?;
        let truncated = log.truncate_to(offset).await;
        self.after_append(&mut log);
        truncated
    }

    pub async fn reconfigure(&self, config: LogConfig) {
        self.log.lock().await.set_config(config);
    }

    /// Time-based log work: flush.ms, segment.ms rolls and retention.
    pub async fn tick(&self, now_ms: i64) -> Result<(), StorageError> {
        let mut log = self.log_to_write().await?;
        let ticked = log.tick(now_ms).await;
        self.replica
            .borrow_mut()
            .on_log_start(log.log_start_offset());
        self.publish_high_watermark(&mut log);
        ticked
    }

    pub async fn stats(&self) -> Stats {
        let log = self.log.lock().await;
        Stats {
            offsets: self.offsets(),
            size_bytes: log.size_bytes(),
            segments: log.segment_count(),
        }
    }

    /// Flushes and closes the log, leaving its clean-shutdown marker.
    pub async fn close(self) -> Result<(), StorageError> {
        self.log.into_inner().close().await
    }

    /// Flushes and closes the log without its own marker (`Log::close_unmarked`).
    pub async fn close_unmarked(self) -> Result<(), StorageError> {
        self.log.into_inner().close_unmarked().await.map(drop)
    }

    /// Deletes the log's files.
    pub async fn delete(self) -> Result<(), StorageError> {
        self.log.into_inner().delete().await
    }

    /// Brings the replication state to the log's new end after a change, and wakes waiting
    /// fetches when the log end or the high watermark moved: followers wait for the one,
    /// consumers and acks=all producers for the other.
    fn after_append(&self, log: &mut Log<RealDisk>) {
        let end = log.log_end_offset();
        let grew = end != self.replica.borrow().log_end_offset();
        let moved = self.replica.borrow_mut().on_log_end(end);
        self.publish_high_watermark(log);
        if moved.is_some() || grew {
            self.appended.notify(usize::MAX);
        }
    }

    /// Storage keeps the high watermark too (it bounds its own reads and checkpoints); this is
    /// the one place that sets it there, from the replication state.
    fn publish_high_watermark(&self, log: &mut Log<RealDisk>) {
        let high_watermark = self.replica.borrow().high_watermark();
        log.set_high_watermark(high_watermark);
        debug_assert_eq!(log.high_watermark(), high_watermark);
    }
}

/// A partition's name on a core: (topic, index).
pub type PartitionKey = (String, i32);

/// The partitions one core owns. Touched only by that core.
#[derive(Default)]
pub struct Partitions {
    map: RefCell<HashMap<PartitionKey, Rc<Partition>>>,
}

impl Partitions {
    pub fn get(&self, topic: &str, index: i32) -> Option<Rc<Partition>> {
        let key = (topic.to_owned(), index);
        self.map.borrow().get(&key).cloned()
    }

    pub fn contains(&self, topic: &str, index: i32) -> bool {
        self.map.borrow().contains_key(&(topic.to_owned(), index))
    }

    pub fn all(&self) -> Vec<(PartitionKey, Rc<Partition>)> {
        let map = self.map.borrow();
        map.iter().map(|(k, v)| (k.clone(), v.clone())).collect()
    }

    pub fn len(&self) -> usize {
        self.map.borrow().len()
    }

    pub fn is_empty(&self) -> bool {
        self.map.borrow().is_empty()
    }

    pub fn insert(&self, key: PartitionKey, partition: Partition) {
        self.map.borrow_mut().insert(key, Rc::new(partition));
    }

    /// Takes the partition out of the table; requests already holding it keep it alive.
    pub fn remove(&self, topic: &str, index: i32) -> Option<Rc<Partition>> {
        self.map.borrow_mut().remove(&(topic.to_owned(), index))
    }

    /// The partitions of `topic`, with their indexes.
    pub fn of_topic(&self, topic: &str) -> Vec<(i32, Rc<Partition>)> {
        let map = self.map.borrow();
        let found = map.iter().filter(|((t, _), _)| t == topic);
        found.map(|((_, index), p)| (*index, p.clone())).collect()
    }

    /// Time-based log work on every partition.
    pub async fn tick(&self, now_ms: i64) {
        for ((topic, index), partition) in self.all() {
            if let Err(error) = partition.tick(now_ms).await {
                tracing::warn!(%topic, partition = index, %error, "log maintenance failed");
            }
        }
    }

    /// Flushes and closes every log, without their own clean-shutdown markers: the log
    /// directory's marks them all once every core is done. Returns those closed cleanly
    /// and how many were not.
    pub async fn close_all(&self, in_flight: usize) -> (Vec<(String, i32)>, u64) {
        use futures_util::stream::{self, StreamExt};
        let all: Vec<_> = self.map.borrow_mut().drain().collect();
        let closes = all.into_iter().map(|((topic, index), partition)| async move {
            // A request still running holds the partition for one log operation at most.
            let Some(partition) = sole_holder_within(partition, CLOSE_HOLDERS_WAIT_MAX).await
            else {
                tracing::warn!(%topic, partition = index, "log still in use at shutdown; not closed cleanly");
                return Err(());
            };
            if let Err(error) = partition.close_unmarked().await {
                tracing::warn!(%topic, partition = index, %error, "closing log failed");
                return Err(());
            }
            Ok((topic, index))
        });
        stream::iter(closes)
            .buffer_unordered(in_flight)
            .fold((Vec::new(), 0), |(mut clean, unclean), closed| async move {
                match closed {
                    Ok(partition) => {
                        clean.push(partition);
                        (clean, unclean)
                    }
                    Err(()) => (clean, unclean + 1),
                }
            })
            .await
    }
}

/// Requests already running on a partition hold it for one log operation at most (a fetch
/// that waits for data holds only the partition's event). Waits for them, up to a bound, so
/// the partition's files are deleted only when nobody can write to them any more.
pub async fn sole_holder(partition: Rc<Partition>) -> Option<Partition> {
    const HOLDERS_WAIT_MAX: std::time::Duration = std::time::Duration::from_secs(30);
    sole_holder_within(partition, HOLDERS_WAIT_MAX).await
}

/// How long a shutdown waits for the requests still holding a partition.
const CLOSE_HOLDERS_WAIT_MAX: std::time::Duration = std::time::Duration::from_secs(5);

/// `sole_holder`, waiting at most `wait_max`.
async fn sole_holder_within(
    mut partition: Rc<Partition>,
    wait_max: std::time::Duration,
) -> Option<Partition> {
    let deadline = std::time::Instant::now() + wait_max;
    loop {
        match Rc::try_unwrap(partition) {
            Ok(sole) => return Some(sole),
            Err(held) if std::time::Instant::now() < deadline => {
                partition = held;
                compio::time::sleep(std::time::Duration::from_millis(1)).await;
            }
            Err(_) => return None,
        }
    }
}

/// The events that wake fetches waiting on a partition, shared by every core: the owner core
/// fires one when the partition's high watermark moves, and a fetch on any core listens.
/// Events are made on first use by either side, so both always meet on the same one.
#[derive(Default)]
pub struct Wakeups {
    topics: std::sync::RwLock<HashMap<String, Vec<Arc<Event>>>>,
}

impl Wakeups {
    /// The event of partition `index` of `topic`.
    pub fn event(&self, topic: &str, index: i32) -> Arc<Event> {
        let slot = usize::try_from(index).unwrap_or(0);
        {
            let topics = self.topics.read().unwrap_or_else(|e| e.into_inner());
            if let Some(event) = topics.get(topic).and_then(|events| events.get(slot)) {
                return event.clone();
            }
        }
        let mut topics = self.topics.write().unwrap_or_else(|e| e.into_inner());
        let events = topics.entry(topic.to_owned()).or_default();
        if events.len() <= slot {
            events.resize_with(slot + 1, || Arc::new(Event::new()));
        }
        events[slot].clone()
    }

    /// Forgets a deleted topic's events, waking whoever still waits on them so they see it gone.
    pub fn remove_topic(&self, topic: &str) {
        let removed = self
            .topics
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .remove(topic);
        for event in removed.into_iter().flatten() {
            event.notify(usize::MAX);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use sluice_storage::DiskFile;

    fn run(test: impl std::future::Future<Output = ()>) {
        compio::runtime::Runtime::new()
            .expect("runtime")
            .block_on(test);
    }

    async fn open(dir: &std::path::Path, local: BrokerId) -> Partition {
        let config = LogConfig::default();
        let event = Arc::new(Event::new());
        Partition::open(dir.to_owned(), config, local, event, 0, false)
            .await
            .expect("open")
    }

    /// One uncompressed batch of `count` empty records.
    fn batch(count: i32) -> Bytes {
        let records: Vec<u8> = (0..count)
            .flat_map(|delta| {
                // length, attributes, timestamp delta, offset delta, key -1, value -1, 0 headers
                let body = [0u8, 0, (delta as u8) << 1, 1, 1, 0];
                let mut record = vec![(body.len() as u8) << 1];
                record.extend_from_slice(&body);
                record
            })
            .collect();
        let builder = sluice_storage::batch::BatchBuilder {
            records_count: count,
            last_offset_delta: count - 1,
            ..Default::default()
        };
        Bytes::from(builder.build(&records))
    }

    async fn bytes_of(read: &Read) -> Vec<u8> {
        let mut out = Vec::new();
        for region in &read.regions {
            let len = usize::try_from(region.len).expect("small");
            out.extend(
                region
                    .file
                    .read_at(len, region.position)
                    .await
                    .expect("read"),
            );
        }
        out
    }

    fn fetch(replica: BrokerId, offset: i64, epochs: (i32, i32)) -> FollowerFetch {
        FollowerFetch {
            replica,
            offset,
            current_leader_epoch: epochs.0,
            last_fetched_epoch: epochs.1,
        }
    }

    async fn append(partition: &Partition, count: i32) {
        let turn = partition.take_turn();
        partition
            .append_as_leader(&turn, batch(count), 0)
            .await
            .expect("append");
    }

    /// Copies what `leader` serves `follower` from its end, as a fetcher does.
    async fn copy(
        leader: &Partition,
        follower: &Partition,
        id: BrokerId,
        now_ms: i64,
    ) -> FollowerRead {
        let (offset, epoch) = follower.fetch_position().await;
        let current = leader.replica().leader_epoch();
        let served = leader
            .read_for_follower(fetch(id, offset, (current, epoch)), 1 << 20, now_ms)
            .await
            .expect("served");
        let bytes = bytes_of(&served.read).await;
        if !bytes.is_empty() {
            follower
                .append_as_follower(Bytes::from(bytes), now_ms)
                .await
                .expect("copy");
        }
        served
    }

    fn segment(dir: &std::path::Path) -> Vec<u8> {
        std::fs::read(dir.join("00000000000000000000.log")).expect("segment")
    }

    #[test]
    fn a_follower_copies_the_leaders_batches_and_the_high_watermark_follows_it() {
        run(async {
            let dir = tempfile::tempdir().expect("temp dir");
            let leader = open(&dir.path().join("leader"), 1).await;
            let follower = open(&dir.path().join("follower"), 2).await;
            leader
                .become_leader((3, 0), vec![1, 2], vec![1, 2], 0)
                .await;
            follower.become_follower((3, 0), vec![1, 2], Some(1));
            append(&leader, 2).await;
            append(&leader, 5).await;
            // The follower's log end is not known yet: the leader holds its high watermark.
            assert_eq!(leader.offsets().log_end_offset, 7);
            assert_eq!(leader.offsets().high_watermark, 0);
            let first = copy(&leader, &follower, 2, 10).await;
            assert!(first.diverging_epoch.is_none() && first.isr_change.is_none());
            assert_eq!(follower.offsets().log_end_offset, 7);
            // Fetching from 0 told the leader the follower's end is 0; the next fetch moves it.
            assert_eq!(leader.offsets().high_watermark, 0);
            let second = copy(&leader, &follower, 2, 20).await;
            assert_eq!(leader.offsets().high_watermark, 7);
            follower
                .follow_high_watermark(second.read.offsets.high_watermark)
                .await;
            assert_eq!(follower.offsets().high_watermark, 7);
            follower.follow_high_watermark(100).await;
            assert_eq!(follower.offsets().high_watermark, 7);
            let consumed = follower.read_for_consumer(0, 1 << 20, -1).await;
            assert!(matches!(consumed, Err(PartitionError::NotLeader)));
            let stale = leader
                .read_for_follower(fetch(2, 7, (2, 3)), 1 << 20, 30)
                .await;
            assert!(matches!(
                stale,
                Err(PartitionError::FencedLeaderEpoch { .. })
            ));
            leader.close().await.expect("close");
            follower.close().await.expect("close");
            let (leader, follower) = (dir.path().join("leader"), dir.path().join("follower"));
            assert_eq!(
                segment(&leader),
                segment(&follower),
                "byte for byte, epochs included"
            );
        });
    }

    /// KIP-101: a follower that led for a while in an epoch the new leader never saw keeps
    /// none of that epoch's batches: the leader names where they diverge, and it truncates
    /// there rather than to its high watermark.
    #[test]
    fn a_diverged_follower_truncates_to_where_the_leader_agrees() {
        run(async {
            let dir = tempfile::tempdir().expect("temp dir");
            let old = open(&dir.path().join("old"), 2).await;
            let new = open(&dir.path().join("new"), 1).await;
            new.become_leader((3, 0), vec![1, 2], vec![1, 2], 0).await;
            old.become_follower((3, 0), vec![1, 2], Some(1));
            append(&new, 2).await;
            append(&new, 5).await;
            copy(&new, &old, 2, 10).await;
            // Broker 2 leads alone in epoch 4 and appends what broker 1 never gets.
            old.become_leader((4, 1), vec![1, 2], vec![2], 20).await;
            append(&old, 3).await;
            assert_eq!(old.offsets().log_end_offset, 10);
            // Broker 1 is elected in epoch 5 and appends its own batch at 7.
            new.become_leader((5, 2), vec![1, 2], vec![1, 2], 30).await;
            append(&new, 1).await;
            old.become_follower((5, 2), vec![1, 2], Some(1));
            let answer = copy(&new, &old, 2, 40).await;
            assert_eq!(answer.diverging_epoch, Some((3, 7)));
            assert_eq!(old.truncate_to_leader((3, 7)).await.expect("truncate"), 7);
            let answer = copy(&new, &old, 2, 50).await;
            assert_eq!(answer.diverging_epoch, None);
            assert_eq!(old.fetch_position().await, (8, 5));
            old.close().await.expect("close");
            new.close().await.expect("close");
            let (old, new) = (dir.path().join("old"), dir.path().join("new"));
            assert_eq!(segment(&old), segment(&new));
        });
    }

    /// One idempotent batch of `count` empty records from producer 7, epoch 0, at `sequence`.
    fn idempotent(sequence: i32, count: i32) -> Bytes {
        let plain = batch(count);
        let records = &plain[sluice_storage::BATCH_HEADER_LEN..];
        let builder = sluice_storage::batch::BatchBuilder {
            records_count: count,
            last_offset_delta: count - 1,
            producer_id: 7,
            producer_epoch: 0,
            base_sequence: sequence,
            ..Default::default()
        };
        Bytes::from(builder.build(records))
    }

    async fn append_idempotent(
        partition: &Partition,
        sequence: i32,
        count: i32,
    ) -> Result<AppendResult, PartitionError> {
        let turn = partition.take_turn();
        partition
            .append_as_leader(&turn, idempotent(sequence, count), 0)
            .await
    }

    #[test]
    fn a_detached_partition_writes_nothing_more() {
        run(async {
            let dir = tempfile::tempdir().expect("temp dir");
            let partition = open(dir.path(), 1).await;
            partition.become_leader((1, 0), vec![1], vec![1], 0).await;
            append(&partition, 2).await;
            let before = segment(dir.path());
            partition.detach().await;
            let turn = partition.take_turn();
            let refused = partition.append_as_leader(&turn, batch(3), 0).await;
            assert!(
                matches!(refused, Err(PartitionError::Storage(_))),
                "{refused:?}"
            );
            assert!(partition.tick(i64::MAX / 2).await.is_err());
            assert_eq!(partition.offsets().log_end_offset, 2);
            assert_eq!(segment(dir.path()), before);
        });
    }

    #[test]
    fn a_first_sequence_gap_at_a_new_leader_is_retriable_and_later_ones_are_not() {
        run(async {
            let dir = tempfile::tempdir().expect("temp dir");
            let leader = open(dir.path(), 1).await;
            leader.become_leader((1, 0), vec![1], vec![1], 0).await;
            append_idempotent(&leader, 0, 2)
                .await
                .expect("sequences 0-1");
            // A new leader epoch; the producer's request for sequence 2 was refused during
            // the change, and the one for 3 arrives first.
            leader.become_leader((2, 1), vec![1], vec![1], 0).await;
            let gap = append_idempotent(&leader, 3, 1).await;
            assert!(matches!(gap, Err(PartitionError::NotLeader)), "{gap:?}");
            assert_eq!(leader.offsets().log_end_offset, 2);
            append_idempotent(&leader, 2, 1).await.expect("sequence 2");
            append_idempotent(&leader, 3, 1).await.expect("sequence 3");
            // Once it has written in this epoch, a gap is out of order, as Kafka answers.
            let late = append_idempotent(&leader, 9, 1).await;
            assert!(
                matches!(
                    late,
                    Err(PartitionError::Storage(
                        StorageError::OutOfOrderSequence { .. }
                    ))
                ),
                "{late:?}"
            );
            assert_eq!(leader.offsets().log_end_offset, 4);
            // After another change, a producer whose retry reached the new leader (answered
            // as a duplicate) and then skips ahead is out of order at once.
            leader.become_leader((3, 2), vec![1], vec![1], 0).await;
            let retried = append_idempotent(&leader, 3, 1).await;
            assert!(
                matches!(
                    retried,
                    Err(PartitionError::Storage(
                        StorageError::DuplicateSequence { .. }
                    ))
                ),
                "{retried:?}"
            );
            let skipped = append_idempotent(&leader, 9, 1).await;
            assert!(
                matches!(
                    skipped,
                    Err(PartitionError::Storage(
                        StorageError::OutOfOrderSequence { .. }
                    ))
                ),
                "{skipped:?}"
            );
        });
    }
}
