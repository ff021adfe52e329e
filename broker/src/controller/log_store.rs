//! The metadata log on disk, as openraft stores its log: one append-only file of frames
//! (`u32` length, `u32` CRC32C, a JSON record), replayed at start-up. A torn or corrupt tail
//! is cut off; every write that openraft must find after a crash (the vote, appended entries,
//! truncations, purges) is fsynced before it is acknowledged. Runs on the controller's own
//! thread, where a blocking write stalls no reactor.

use std::collections::BTreeMap;
use std::fmt::Debug;
use std::fs::{File, OpenOptions};
use std::io::{Read, Write};
use std::ops::{Bound, RangeBounds};
use std::path::Path;
use std::sync::{Arc, Mutex, MutexGuard};

use openraft::storage::{LogFlushed, LogState, RaftLogStorage};
use openraft::{Entry, LogId, OptionalSend, RaftLogReader, StorageError, StorageIOError, Vote};
use serde::{Deserialize, Serialize};

use super::{NodeId, TypeConfig};

type Error = StorageError<NodeId>;

/// Largest frame read back; a length beyond it is a corrupt tail.
const FRAME_BYTES_MAX: usize = 64 << 20;
/// Bytes before a frame's JSON: its length and its CRC.
const FRAME_HEADER_BYTES: usize = 8;
/// The log file under the controller's directory.
pub const LOG_FILE: &str = "raft.log";

/// One frame of the log file.
#[derive(Serialize, Deserialize)]
enum Frame {
    Vote(Vote<NodeId>),
    Committed(Option<LogId<NodeId>>),
    Entries(Vec<Entry<TypeConfig>>),
    Truncate(u64),
    Purge(LogId<NodeId>),
}

#[derive(Default)]
struct Inner {
    file: Option<File>,
    vote: Option<Vote<NodeId>>,
    committed: Option<LogId<NodeId>>,
    last_purged: Option<LogId<NodeId>>,
    entries: BTreeMap<u64, Entry<TypeConfig>>,
}

impl Inner {
    fn replay(&mut self, frame: Frame) {
        match frame {
            Frame::Vote(vote) => self.vote = Some(vote),
            Frame::Committed(committed) => self.committed = committed,
            Frame::Entries(entries) => {
                for entry in entries {
                    self.entries.insert(entry.log_id.index, entry);
                }
            }
            Frame::Truncate(from) => {
                self.entries.split_off(&from);
            }
            Frame::Purge(upto) => {
                self.entries = self.entries.split_off(&(upto.index + 1));
                self.last_purged = Some(upto);
            }
        }
    }

    /// Appends one frame, fsynced when `sync`.
    fn write(&mut self, frame: &Frame, sync: bool) -> std::io::Result<()> {
        let body = serde_json::to_vec(frame).map_err(std::io::Error::other)?;
        let crc = sluice_storage::batch::crc32c(&body);
        let mut bytes = Vec::with_capacity(FRAME_HEADER_BYTES + body.len());
        bytes.extend_from_slice(&(body.len() as u32).to_be_bytes());
        bytes.extend_from_slice(&crc.to_be_bytes());
        bytes.extend_from_slice(&body);
        let file = self
            .file
            .as_mut()
            .ok_or_else(|| std::io::Error::other("log file closed"))?;
        file.write_all(&bytes)?;
        if sync {
            file.sync_data()?;
        }
        Ok(())
    }
}

/// The log; clones share it, and it is its own reader.
#[derive(Clone)]
pub struct LogStore(Arc<Mutex<Inner>>);

impl LogStore {
    /// Opens the log in `dir`, replaying it, and cuts a torn or corrupt tail off.
    pub fn open(dir: &Path) -> std::io::Result<Self> {
        std::fs::create_dir_all(dir)?;
        let path = dir.join(LOG_FILE);
        let mut inner = Inner::default();
        let mut bytes = Vec::new();
        if let Ok(mut file) = File::open(&path) {
            file.read_to_end(&mut bytes)?;
        }
        let good = replay_frames(&bytes, &mut inner);
        if good < bytes.len() {
            tracing::warn!(file = %path.display(), kept = good, found = bytes.len(),
                "cutting a torn or corrupt tail off the metadata log");
        }
        let file = OpenOptions::new().create(true).append(true).open(&path)?;
        file.set_len(good as u64)?;
        file.sync_all()?;
        inner.file = Some(file);
        Ok(Self(Arc::new(Mutex::new(inner))))
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        self.0.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// Replays whole, intact frames from the start of `bytes`; returns how many bytes they take.
fn replay_frames(bytes: &[u8], inner: &mut Inner) -> usize {
    let mut at = 0;
    while let Some(header) = bytes.get(at..at + FRAME_HEADER_BYTES) {
        let len = u32::from_be_bytes([header[0], header[1], header[2], header[3]]) as usize;
        let crc = u32::from_be_bytes([header[4], header[5], header[6], header[7]]);
        if len > FRAME_BYTES_MAX {
            break;
        }
        let Some(body) = bytes.get(at + FRAME_HEADER_BYTES..at + FRAME_HEADER_BYTES + len) else {
            break;
        };
        if sluice_storage::batch::crc32c(body) != crc {
            break;
        }
        let Ok(frame) = serde_json::from_slice::<Frame>(body) else {
            break;
        };
        inner.replay(frame);
        at += FRAME_HEADER_BYTES + len;
    }
    at
}

fn bound(bound: Bound<&u64>) -> Bound<u64> {
    match bound {
        Bound::Included(x) => Bound::Included(*x),
        Bound::Excluded(x) => Bound::Excluded(*x),
        Bound::Unbounded => Bound::Unbounded,
    }
}

impl RaftLogReader<TypeConfig> for LogStore {
    async fn try_get_log_entries<RB: RangeBounds<u64> + Clone + Debug + OptionalSend>(
        &mut self,
        range: RB,
    ) -> Result<Vec<Entry<TypeConfig>>, Error> {
        let inner = self.lock();
        let range = (bound(range.start_bound()), bound(range.end_bound()));
        Ok(inner.entries.range(range).map(|(_, e)| e.clone()).collect())
    }
}

impl RaftLogStorage<TypeConfig> for LogStore {
    type LogReader = Self;

    async fn get_log_state(&mut self) -> Result<LogState<TypeConfig>, Error> {
        let inner = self.lock();
        let last = inner.entries.values().next_back().map(|e| e.log_id);
        Ok(LogState {
            last_purged_log_id: inner.last_purged,
            last_log_id: last.or(inner.last_purged),
        })
    }

    async fn get_log_reader(&mut self) -> Self::LogReader {
        self.clone()
    }

    async fn save_vote(&mut self, vote: &Vote<NodeId>) -> Result<(), Error> {
        let mut inner = self.lock();
        let written = inner.write(&Frame::Vote(*vote), true);
        written.map_err(|e| StorageIOError::write_vote(&e))?;
        inner.vote = Some(*vote);
        Ok(())
    }

    async fn read_vote(&mut self) -> Result<Option<Vote<NodeId>>, Error> {
        Ok(self.lock().vote)
    }

    async fn save_committed(&mut self, committed: Option<LogId<NodeId>>) -> Result<(), Error> {
        // Not fsynced: start-up only uses it to re-apply committed entries sooner.
        let mut inner = self.lock();
        let written = inner.write(&Frame::Committed(committed), false);
        written.map_err(|e| StorageIOError::write(&e))?;
        inner.committed = committed;
        Ok(())
    }

    async fn read_committed(&mut self) -> Result<Option<LogId<NodeId>>, Error> {
        Ok(self.lock().committed)
    }

    async fn append<I>(&mut self, entries: I, callback: LogFlushed<TypeConfig>) -> Result<(), Error>
    where
        I: IntoIterator<Item = Entry<TypeConfig>> + OptionalSend,
        I::IntoIter: OptionalSend,
    {
        let entries: Vec<_> = entries.into_iter().collect();
        let mut inner = self.lock();
        // The entries count toward a quorum only once the callback runs: after the fsync.
        let frame = Frame::Entries(entries);
        inner
            .write(&frame, true)
            .map_err(|e| StorageIOError::write_logs(&e))?;
        inner.replay(frame);
        drop(inner);
        callback.log_io_completed(Ok(()));
        Ok(())
    }

    async fn truncate(&mut self, log_id: LogId<NodeId>) -> Result<(), Error> {
        let mut inner = self.lock();
        let frame = Frame::Truncate(log_id.index);
        inner
            .write(&frame, true)
            .map_err(|e| StorageIOError::write_logs(&e))?;
        inner.replay(frame);
        Ok(())
    }

    async fn purge(&mut self, log_id: LogId<NodeId>) -> Result<(), Error> {
        let mut inner = self.lock();
        let frame = Frame::Purge(log_id);
        inner
            .write(&frame, true)
            .map_err(|e| StorageIOError::write_logs(&e))?;
        inner.replay(frame);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use openraft::{CommittedLeaderId, EntryPayload};

    fn entry(index: u64) -> Entry<TypeConfig> {
        Entry {
            log_id: LogId::new(CommittedLeaderId::new(1, 0), index),
            payload: EntryPayload::Blank,
        }
    }

    fn frames(frames: &[Frame]) -> Vec<u8> {
        let mut inner = Inner::default();
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("f");
        inner.file = Some(File::create(&path).unwrap());
        for frame in frames {
            inner.write(frame, false).unwrap();
        }
        std::fs::read(&path).unwrap()
    }

    #[test]
    fn a_torn_or_flipped_tail_is_cut_at_the_last_whole_frame() {
        let bytes = frames(&[
            Frame::Entries(vec![entry(1), entry(2)]),
            Frame::Entries(vec![entry(3)]),
        ]);
        let mut whole = Inner::default();
        assert_eq!(replay_frames(&bytes, &mut whole), bytes.len());
        assert_eq!(whole.entries.len(), 3);
        let mut torn = Inner::default();
        let first = replay_frames(&bytes[..bytes.len() - 3], &mut torn);
        assert!(first < bytes.len() - 3);
        assert_eq!(torn.entries.len(), 2);
        let mut flipped = bytes.clone();
        let last = flipped.len() - 2;
        flipped[last] ^= 0x40;
        let mut corrupt = Inner::default();
        assert_eq!(replay_frames(&flipped, &mut corrupt), first);
        assert_eq!(corrupt.entries.len(), 2);
    }

    #[test]
    fn truncate_and_purge_replay_as_they_were_written() {
        let bytes = frames(&[
            Frame::Entries((1..=5).map(entry).collect()),
            Frame::Truncate(4),
            Frame::Purge(entry(2).log_id),
        ]);
        let mut inner = Inner::default();
        replay_frames(&bytes, &mut inner);
        assert_eq!(inner.entries.keys().copied().collect::<Vec<_>>(), vec![3]);
        assert_eq!(inner.last_purged.map(|l| l.index), Some(2));
    }
}
