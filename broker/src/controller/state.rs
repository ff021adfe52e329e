//! The controller's state machine: the metadata image that the committed log builds, the
//! batches applied lately (which brokers fetch by index), and durable snapshots of the image.
//! Applying replays each entry's records through a `MetadataDelta`, so a controller and a
//! broker build the same image from the same records.

use std::collections::VecDeque;
use std::fs::File;
use std::io::{Cursor, Write};
use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock, RwLockReadGuard};

use openraft::storage::{RaftStateMachine, Snapshot};
use openraft::{
    BasicNode, Entry, EntryPayload, LogId, OptionalSend, RaftSnapshotBuilder, SnapshotMeta,
    StorageError, StorageIOError, StoredMembership,
};
use serde::{Deserialize, Serialize};

use super::{Applied, Batch, NodeId, TypeConfig, BATCH_VERSION};
use crate::metadata::{MetadataDelta, MetadataImage, MetadataRecord};

type Error = StorageError<NodeId>;

/// Applied batches kept for brokers that fetch by index; one further behind gets the image.
pub const RECENT_BATCHES_MAX: usize = 10_000;
const SNAPSHOT_FILE: &str = "snapshot.json";

/// A batch of records as applied at a log index.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct AppliedBatch {
    pub index: u64,
    pub records: Vec<MetadataRecord>,
}

/// What the committed log amounts to so far.
pub struct MetaState {
    pub last_applied: Option<LogId<NodeId>>,
    pub membership: StoredMembership<NodeId, BasicNode>,
    pub image: Arc<MetadataImage>,
    /// Applied batches, oldest first; every batch applied at an index at or above
    /// `recent_from` is here.
    pub recent: VecDeque<AppliedBatch>,
    pub recent_from: u64,
}

impl MetaState {
    pub fn applied_index(&self) -> u64 {
        self.last_applied.map_or(0, |l| l.index)
    }

    /// The batches applied after `index`, or `None` when some are no longer kept.
    pub fn batches_after(&self, index: u64) -> Option<Vec<AppliedBatch>> {
        if index + 1 < self.recent_from {
            return None;
        }
        let newer = self.recent.iter().filter(|b| b.index > index);
        Some(newer.cloned().collect())
    }
}

/// A snapshot as it is written: the image as records, with where the log stood.
#[derive(Serialize, Deserialize)]
struct SnapshotData {
    version: u16,
    last_applied: Option<LogId<NodeId>>,
    membership: StoredMembership<NodeId, BasicNode>,
    records: Vec<MetadataRecord>,
}

#[derive(Serialize, Deserialize)]
struct StoredSnapshot {
    meta: SnapshotMeta<NodeId, BasicNode>,
    data: Vec<u8>,
}

/// The state machine openraft drives; clones share the state.
#[derive(Clone)]
pub struct StateMachine {
    state: Arc<RwLock<MetaState>>,
    applied: tokio::sync::watch::Sender<u64>,
    dir: PathBuf,
    snapshots_built: u64,
}

impl StateMachine {
    /// The state from the last snapshot in `dir`, if any; openraft re-applies the log after it.
    pub fn open(dir: &Path) -> std::io::Result<Self> {
        std::fs::create_dir_all(dir)?;
        let mut state = MetaState {
            last_applied: None,
            membership: StoredMembership::default(),
            image: Arc::new(MetadataImage::default()),
            recent: VecDeque::new(),
            recent_from: 0,
        };
        if let Some(stored) = read_snapshot(dir)? {
            restore(&mut state, &stored.data).map_err(std::io::Error::other)?;
        }
        let (applied, _) = tokio::sync::watch::channel(state.applied_index());
        Ok(Self {
            state: Arc::new(RwLock::new(state)),
            applied,
            dir: dir.to_owned(),
            snapshots_built: 0,
        })
    }

    pub fn read(&self) -> RwLockReadGuard<'_, MetaState> {
        self.state.read().unwrap_or_else(|e| e.into_inner())
    }

    /// Fires with the applied index after every apply.
    pub fn watch_applied(&self) -> tokio::sync::watch::Receiver<u64> {
        self.applied.subscribe()
    }

    fn snapshot_bytes(
        &self,
    ) -> (
        Vec<u8>,
        Option<LogId<NodeId>>,
        StoredMembership<NodeId, BasicNode>,
    ) {
        let state = self.read();
        let data = SnapshotData {
            version: BATCH_VERSION,
            last_applied: state.last_applied,
            membership: state.membership.clone(),
            records: crate::metadata::delta::image_records(&state.image),
        };
        let bytes = serde_json::to_vec(&data).unwrap_or_default();
        (bytes, state.last_applied, state.membership.clone())
    }
}

/// Replaces `state` with the snapshot in `bytes`.
fn restore(state: &mut MetaState, bytes: &[u8]) -> Result<(), String> {
    let data: SnapshotData = serde_json::from_slice(bytes).map_err(|e| e.to_string())?;
    let mut delta = MetadataDelta::new(Arc::new(MetadataImage::default()));
    for record in data.records {
        delta.replay(record).map_err(|e| e.to_string())?;
    }
    state.image = delta.apply().0;
    state.last_applied = data.last_applied;
    state.membership = data.membership;
    state.recent.clear();
    state.recent_from = state.applied_index() + 1;
    Ok(())
}

fn read_snapshot(dir: &Path) -> std::io::Result<Option<StoredSnapshot>> {
    match std::fs::read(dir.join(SNAPSHOT_FILE)) {
        Ok(bytes) => serde_json::from_slice(&bytes)
            .map(Some)
            .map_err(std::io::Error::other),
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(error) => Err(error),
    }
}

/// Writes `bytes` as `name` in `dir` so that a crash leaves the old file or the new one.
fn write_durably(dir: &Path, name: &str, bytes: &[u8]) -> std::io::Result<()> {
    let temp = dir.join(format!("{name}.tmp"));
    let mut file = File::create(&temp)?;
    file.write_all(bytes)?;
    file.sync_all()?;
    std::fs::rename(&temp, dir.join(name))?;
    File::open(dir)?.sync_all()
}

/// Applies one batch at `index`: all its records, or none when one does not fit.
fn apply_batch(state: &mut MetaState, index: u64, batch: Batch) -> Option<String> {
    if batch.version > BATCH_VERSION {
        return Some(format!(
            "batch version {} is newer than this controller",
            batch.version
        ));
    }
    let mut delta = MetadataDelta::new(state.image.clone());
    delta.set_offset(index as i64);
    for record in batch.records.iter().cloned() {
        if let Err(error) = delta.replay(record) {
            return Some(error.to_string());
        }
    }
    state.image = delta.apply().0;
    state.recent.push_back(AppliedBatch {
        index,
        records: batch.records,
    });
    if state.recent.len() > RECENT_BATCHES_MAX {
        if let Some(dropped) = state.recent.pop_front() {
            state.recent_from = dropped.index + 1;
        }
    }
    None
}

impl RaftSnapshotBuilder<TypeConfig> for StateMachine {
    async fn build_snapshot(&mut self) -> Result<Snapshot<TypeConfig>, Error> {
        let (data, last_applied, membership) = self.snapshot_bytes();
        let id = match last_applied {
            Some(last) => format!("{}-{}-{}", last.leader_id, last.index, self.snapshots_built),
            None => format!("--{}", self.snapshots_built),
        };
        let meta = SnapshotMeta {
            last_log_id: last_applied,
            last_membership: membership,
            snapshot_id: id,
        };
        let stored = StoredSnapshot {
            meta: meta.clone(),
            data: data.clone(),
        };
        // Durable before openraft may purge the log it covers.
        let bytes = serde_json::to_vec(&stored).unwrap_or_default();
        write_durably(&self.dir, SNAPSHOT_FILE, &bytes)
            .map_err(|e| StorageIOError::write_snapshot(Some(meta.signature()), &e))?;
        Ok(Snapshot {
            meta,
            snapshot: Box::new(Cursor::new(data)),
        })
    }
}

impl RaftStateMachine<TypeConfig> for StateMachine {
    type SnapshotBuilder = Self;

    async fn applied_state(
        &mut self,
    ) -> Result<(Option<LogId<NodeId>>, StoredMembership<NodeId, BasicNode>), Error> {
        let state = self.read();
        Ok((state.last_applied, state.membership.clone()))
    }

    async fn apply<I>(&mut self, entries: I) -> Result<Vec<Applied>, Error>
    where
        I: IntoIterator<Item = Entry<TypeConfig>> + OptionalSend,
        I::IntoIter: OptionalSend,
    {
        let mut answers = Vec::new();
        let applied = {
            let mut state = self.state.write().unwrap_or_else(|e| e.into_inner());
            for entry in entries {
                let index = entry.log_id.index;
                state.last_applied = Some(entry.log_id);
                // One answer per entry, blank and membership entries included.
                let error = match entry.payload {
                    EntryPayload::Blank => None,
                    EntryPayload::Membership(membership) => {
                        state.membership = StoredMembership::new(Some(entry.log_id), membership);
                        None
                    }
                    EntryPayload::Normal(batch) => apply_batch(&mut state, index, batch),
                };
                if let Some(error) = &error {
                    tracing::warn!(index, %error, "a metadata batch does not apply; it changes nothing");
                }
                answers.push(Applied { index, error });
            }
            state.applied_index()
        };
        self.applied.send_replace(applied);
        Ok(answers)
    }

    async fn get_snapshot_builder(&mut self) -> Self::SnapshotBuilder {
        self.snapshots_built += 1;
        self.clone()
    }

    async fn begin_receiving_snapshot(&mut self) -> Result<Box<Cursor<Vec<u8>>>, Error> {
        Ok(Box::new(Cursor::new(Vec::new())))
    }

    async fn install_snapshot(
        &mut self,
        meta: &SnapshotMeta<NodeId, BasicNode>,
        snapshot: Box<Cursor<Vec<u8>>>,
    ) -> Result<(), Error> {
        let data = snapshot.into_inner();
        let stored = StoredSnapshot {
            meta: meta.clone(),
            data,
        };
        let bytes = serde_json::to_vec(&stored).unwrap_or_default();
        write_durably(&self.dir, SNAPSHOT_FILE, &bytes)
            .map_err(|e| StorageIOError::write_snapshot(Some(meta.signature()), &e))?;
        let applied = {
            let mut state = self.state.write().unwrap_or_else(|e| e.into_inner());
            restore(&mut state, &stored.data).map_err(|e| {
                let e = std::io::Error::other(e);
                StorageIOError::read_snapshot(Some(meta.signature()), &e)
            })?;
            state.applied_index()
        };
        self.applied.send_replace(applied);
        Ok(())
    }

    async fn get_current_snapshot(&mut self) -> Result<Option<Snapshot<TypeConfig>>, Error> {
        let stored =
            read_snapshot(&self.dir).map_err(|e| StorageIOError::read_snapshot(None, &e))?;
        Ok(stored.map(|s| Snapshot {
            meta: s.meta,
            snapshot: Box::new(Cursor::new(s.data)),
        }))
    }
}
