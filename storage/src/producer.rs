//! Idempotent-producer state: for each producer id, its epoch and the sequence ranges and offsets
//! of its last few batches, so a retried batch is answered with its original offset instead of
//! being written twice, and a gap in sequences is refused.
//!
//! The state is rebuilt after a restart from a snapshot (`producer-state.snapshot`, written with
//! the recovery-point checkpoint) plus the batch headers after the snapshot's offset.

use std::collections::{HashMap, VecDeque};

use crate::batch::BatchHeader;
use crate::error::StorageError;

/// Batches remembered per producer, as Kafka does (max.in.flight.requests.per.connection <= 5).
pub const PRODUCER_BATCHES_MAX: usize = 5;

const SNAPSHOT_MAGIC: &[u8; 4] = b"SLPS";
const SNAPSHOT_VERSION: u16 = 1;
const SNAPSHOT_HEADER_LEN: usize = 4 + 2 + 8 + 4;
const SNAPSHOT_ENTRY_HEADER_LEN: usize = 8 + 2 + 1;
const SNAPSHOT_BATCH_LEN: usize = 4 + 4 + 8 + 8;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BatchMetadata {
    pub first_sequence: i32,
    pub last_sequence: i32,
    pub base_offset: i64,
    pub last_offset: i64,
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ProducerEntry {
    pub epoch: i16,
    pub batches: VecDeque<BatchMetadata>,
}

impl ProducerEntry {
    fn record(&mut self, header: &BatchHeader) {
        if header.producer_epoch != self.epoch {
            self.epoch = header.producer_epoch;
            self.batches.clear();
        }
        self.batches.push_back(BatchMetadata {
            first_sequence: header.base_sequence,
            last_sequence: header.last_sequence(),
            base_offset: header.base_offset,
            last_offset: header.last_offset(),
        });
        while self.batches.len() > PRODUCER_BATCHES_MAX {
            self.batches.pop_front();
        }
    }
}

fn in_sequence(last: i32, next: i32) -> bool {
    next == last.wrapping_add(1) || (next == 0 && last == i32::MAX)
}

fn is_idempotent(header: &BatchHeader) -> bool {
    header.producer_id >= 0 && header.base_sequence >= 0 && !header.is_control()
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ProducerStates {
    producers: HashMap<i64, ProducerEntry>,
}

/// Producer entries changed by an append that has not been written yet.
pub type Staged = HashMap<i64, ProducerEntry>;

impl ProducerStates {
    pub fn get(&self, producer_id: i64) -> Option<&ProducerEntry> {
        self.producers.get(&producer_id)
    }

    pub fn len(&self) -> usize {
        self.producers.len()
    }

    pub fn is_empty(&self) -> bool {
        self.producers.is_empty()
    }

    /// Checks one batch (with its final offsets) against the current and staged state, and
    /// stages its effect. Nothing changes in `self` until [`ProducerStates::commit`].
    pub fn stage(&self, staged: &mut Staged, header: &BatchHeader) -> Result<(), StorageError> {
        if !is_idempotent(header) {
            return Ok(());
        }
        let current = staged
            .get(&header.producer_id)
            .or_else(|| self.producers.get(&header.producer_id));
        if let Some(entry) = current {
            if header.producer_epoch < entry.epoch {
                return Err(StorageError::InvalidProducerEpoch);
            }
            if header.producer_epoch == entry.epoch {
                let duplicate = entry.batches.iter().find(|batch| {
                    batch.first_sequence == header.base_sequence
                        && batch.last_sequence == header.last_sequence()
                });
                if let Some(batch) = duplicate {
                    return Err(StorageError::DuplicateSequence {
                        base_offset: batch.base_offset,
                    });
                }
                if let Some(last) = entry.batches.back() {
                    if !in_sequence(last.last_sequence, header.base_sequence) {
                        return Err(StorageError::OutOfOrderSequence {
                            producer_id: header.producer_id,
                            sequence: header.base_sequence,
                            last_sequence: last.last_sequence,
                        });
                    }
                }
            } else if header.base_sequence != 0 {
                // A new epoch restarts sequences at zero.
                return Err(StorageError::OutOfOrderSequence {
                    producer_id: header.producer_id,
                    sequence: header.base_sequence,
                    last_sequence: -1,
                });
            }
        }
        let mut entry = current.cloned().unwrap_or_default();
        entry.record(header);
        staged.insert(header.producer_id, entry);
        Ok(())
    }

    /// Stages a batch that a leader already accepted, as [`ProducerStates::apply`] records it:
    /// a follower never refuses a batch for its sequence or producer epoch, because the leader
    /// decided, but it keeps the same state so that it deduplicates once it leads.
    pub fn stage_replicated(&self, staged: &mut Staged, header: &BatchHeader) {
        if !is_idempotent(header) {
            return;
        }
        staged
            .entry(header.producer_id)
            .or_insert_with(|| {
                self.producers
                    .get(&header.producer_id)
                    .cloned()
                    .unwrap_or_default()
            })
            .record(header);
    }

    pub fn commit(&mut self, staged: Staged) {
        self.producers.extend(staged);
    }

    /// Applies a batch read back from the log, without checks (recovery trusts the log).
    pub fn apply(&mut self, header: &BatchHeader) {
        if is_idempotent(header) {
            self.producers
                .entry(header.producer_id)
                .or_insert_with(|| ProducerEntry {
                    epoch: header.producer_epoch,
                    batches: VecDeque::new(),
                })
                .record(header);
        }
    }

    /// Forgets producers whose every remembered batch lies before `log_start_offset`.
    pub fn remove_before(&mut self, log_start_offset: i64) {
        self.producers.retain(|_, entry| {
            entry
                .batches
                .back()
                .is_some_and(|batch| batch.last_offset >= log_start_offset)
        });
    }

    /// Forgets batches at or after `end_offset` (the log was truncated there).
    pub fn truncate_from_end(&mut self, end_offset: i64) {
        for entry in self.producers.values_mut() {
            entry.batches.retain(|batch| batch.last_offset < end_offset);
        }
        self.producers.retain(|_, entry| !entry.batches.is_empty());
    }

    /// Snapshot of the state as of `offset` (the log end offset when taken), CRC-protected.
    pub fn encode_snapshot(&self, offset: i64) -> Vec<u8> {
        let mut out = Vec::new();
        out.extend_from_slice(SNAPSHOT_MAGIC);
        out.extend_from_slice(&SNAPSHOT_VERSION.to_be_bytes());
        out.extend_from_slice(&offset.to_be_bytes());
        let count = u32::try_from(self.producers.len()).expect("producer count fits u32");
        out.extend_from_slice(&count.to_be_bytes());
        for (producer_id, entry) in &self.producers {
            out.extend_from_slice(&producer_id.to_be_bytes());
            out.extend_from_slice(&entry.epoch.to_be_bytes());
            debug_assert!(entry.batches.len() <= PRODUCER_BATCHES_MAX);
            out.push(entry.batches.len() as u8);
            for batch in &entry.batches {
                out.extend_from_slice(&batch.first_sequence.to_be_bytes());
                out.extend_from_slice(&batch.last_sequence.to_be_bytes());
                out.extend_from_slice(&batch.base_offset.to_be_bytes());
                out.extend_from_slice(&batch.last_offset.to_be_bytes());
            }
        }
        let crc = crate::batch::crc32c(&out);
        out.extend_from_slice(&crc.to_be_bytes());
        out
    }

    /// Parses a snapshot; `None` for anything damaged.
    pub fn decode_snapshot(bytes: &[u8]) -> Option<(i64, Self)> {
        let (body, crc) = bytes.split_at_checked(bytes.len().checked_sub(4)?)?;
        if crate::batch::crc32c(body).to_be_bytes() != crc {
            return None;
        }
        let mut reader = Reader { bytes: body };
        if reader.take(4)? != SNAPSHOT_MAGIC || reader.u16()? != SNAPSHOT_VERSION {
            return None;
        }
        let offset = reader.i64()?;
        let count = reader.u32()? as usize;
        // Each entry needs at least its header, so the count is bounded by what remains.
        if count > reader.bytes.len() / SNAPSHOT_ENTRY_HEADER_LEN {
            return None;
        }
        let mut states = Self::default();
        for _ in 0..count {
            let producer_id = reader.i64()?;
            let epoch = reader.u16()? as i16;
            let batch_count = usize::from(reader.take(1)?[0]);
            if batch_count > PRODUCER_BATCHES_MAX {
                return None;
            }
            let mut entry = ProducerEntry {
                epoch,
                batches: VecDeque::with_capacity(batch_count),
            };
            for _ in 0..batch_count {
                entry.batches.push_back(BatchMetadata {
                    first_sequence: reader.u32()? as i32,
                    last_sequence: reader.u32()? as i32,
                    base_offset: reader.i64()?,
                    last_offset: reader.i64()?,
                });
            }
            states.producers.insert(producer_id, entry);
        }
        if !reader.bytes.is_empty() {
            return None;
        }
        Some((offset, states))
    }
}

const _: () = assert!(SNAPSHOT_HEADER_LEN == 18 && SNAPSHOT_BATCH_LEN == 24);

struct Reader<'a> {
    bytes: &'a [u8],
}

impl<'a> Reader<'a> {
    fn take(&mut self, len: usize) -> Option<&'a [u8]> {
        let (head, rest) = self.bytes.split_at_checked(len)?;
        self.bytes = rest;
        Some(head)
    }

    fn u16(&mut self) -> Option<u16> {
        let raw = self.take(2)?;
        Some(u16::from_be_bytes([raw[0], raw[1]]))
    }

    fn u32(&mut self) -> Option<u32> {
        let raw = self.take(4)?;
        Some(u32::from_be_bytes([raw[0], raw[1], raw[2], raw[3]]))
    }

    fn i64(&mut self) -> Option<i64> {
        let mut raw = [0u8; 8];
        raw.copy_from_slice(self.take(8)?);
        Some(i64::from_be_bytes(raw))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::batch::{parse_header, BatchBuilder};
    use proptest::prelude::*;

    fn header(producer_id: i64, epoch: i16, sequence: i32, count: i32, offset: i64) -> BatchHeader {
        let mut header = parse_header(
            &BatchBuilder {
                producer_id,
                producer_epoch: epoch,
                base_sequence: sequence,
                last_offset_delta: count - 1,
                records_count: count,
                ..BatchBuilder::default()
            }
            .build(b""),
        )
        .unwrap();
        header.base_offset = offset;
        header
    }

    fn check(states: &mut ProducerStates, batch: BatchHeader, expected: Result<(), String>) {
        let mut staged = Staged::new();
        let got = states.stage(&mut staged, &batch).map_err(|e| e.to_string());
        assert_eq!(got, expected);
        states.commit(staged);
    }

    #[test]
    fn sequences() {
        let mut states = ProducerStates::default();
        check(&mut states, header(7, 0, 0, 3, 0), Ok(()));
        check(&mut states, header(7, 0, 3, 2, 3), Ok(()));
        let duplicate = Err(StorageError::DuplicateSequence { base_offset: 0 }.to_string());
        check(&mut states, header(7, 0, 0, 3, 5), duplicate);
        let gap = StorageError::OutOfOrderSequence {
            producer_id: 7,
            sequence: 9,
            last_sequence: 4,
        };
        check(&mut states, header(7, 0, 9, 1, 5), Err(gap.to_string()));
        check(
            &mut states,
            header(7, 1, 4, 1, 5),
            Err(StorageError::OutOfOrderSequence {
                producer_id: 7,
                sequence: 4,
                last_sequence: -1,
            }
            .to_string()),
        );
        check(&mut states, header(7, 1, 0, 1, 5), Ok(()));
        let fenced = Err(StorageError::InvalidProducerEpoch.to_string());
        check(&mut states, header(7, 0, 5, 1, 6), fenced);
        // Non-idempotent batches are never checked.
        check(&mut states, header(-1, -1, -1, 1, 6), Ok(()));
        // An unknown producer may start anywhere (its earlier batches may have been deleted).
        check(&mut states, header(8, 0, 40, 1, 7), Ok(()));
    }

    /// Replicated batches are recorded whatever their sequences and epochs, exactly as
    /// recovery's `apply` records them, and the result then checks a leader's appends.
    #[test]
    fn replicated_batches_are_recorded_never_refused() {
        let batches = [
            header(7, 1, 0, 3, 0),
            header(7, 1, 9, 1, 3),  // a gap
            header(7, 1, 0, 3, 4),  // a duplicate
            header(7, 0, 20, 1, 7), // an older producer epoch
            header(7, 2, 5, 2, 8),  // a new epoch not starting at zero
            header(-1, -1, -1, 1, 10),
            header(8, 0, 0, 1, 11),
        ];
        let mut replicated = ProducerStates::default();
        let mut applied = ProducerStates::default();
        for batch in &batches {
            let mut staged = Staged::new();
            replicated.stage_replicated(&mut staged, batch);
            replicated.commit(staged);
            applied.apply(batch);
        }
        assert_eq!(replicated, applied);
        assert_eq!(replicated.len(), 2);
        let duplicate = StorageError::DuplicateSequence { base_offset: 8 };
        check(
            &mut replicated,
            header(7, 2, 5, 2, 12),
            Err(duplicate.to_string()),
        );
        check(&mut replicated, header(7, 2, 7, 1, 12), Ok(()));
    }

    #[test]
    fn only_last_five_batches_are_remembered() {
        let mut states = ProducerStates::default();
        for i in 0..7 {
            check(&mut states, header(1, 0, i, 1, i64::from(i)), Ok(()));
        }
        assert_eq!(states.get(1).unwrap().batches.len(), PRODUCER_BATCHES_MAX);
        let duplicate = StorageError::DuplicateSequence { base_offset: 2 };
        check(
            &mut states,
            header(1, 0, 2, 1, 9),
            Err(duplicate.to_string()),
        );
        let stale = StorageError::OutOfOrderSequence {
            producer_id: 1,
            sequence: 1,
            last_sequence: 6,
        };
        check(&mut states, header(1, 0, 1, 1, 9), Err(stale.to_string()));
    }

    #[test]
    fn snapshot_round_trip() {
        let mut states = ProducerStates::default();
        for i in 0..3 {
            states.apply(&header(i, 2, 10, 4, i * 10));
        }
        let bytes = states.encode_snapshot(99);
        assert_eq!(
            ProducerStates::decode_snapshot(&bytes),
            Some((99, states.clone()))
        );
        let mut damaged = bytes.clone();
        damaged[10] ^= 4;
        assert_eq!(ProducerStates::decode_snapshot(&damaged), None);
        states.remove_before(12);
        assert_eq!(states.len(), 2);
        states.truncate_from_end(20);
        assert_eq!(states.len(), 1);
    }

    proptest! {
        #[test]
        fn arbitrary_snapshots_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..200)) {
            let _ = ProducerStates::decode_snapshot(&bytes);
        }
    }
}
