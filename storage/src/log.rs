//! `Log<D>`: one partition's log in a directory: an ordered list of segments (the last is active),
//! offsets, the high watermark, the leader epoch cache, idempotent-producer state, checkpoints,
//! recovery on open, flushing, rolling and retention.
//!
//! Invariants: offsets are dense (each batch starts at the previous batch's next offset, and each
//! segment at the previous segment's end); only the active segment is written; a sealed segment's
//! index files hold exactly its entries; `log_start_offset <= high_watermark <= log_end_offset`.
//!
//! Recovery: with the clean-shutdown marker, indexes are loaded and only the active segment's tail
//! after its last index entry is scanned. Without it, every segment from the one holding the
//! recovery point on is scanned with CRC checks, dense-offset checks and leader-epoch checks (the
//! base offset and epoch are outside the CRC); the log is truncated at the first bad batch and
//! later segments are deleted. A missing or malformed index is rebuilt by a scan, never fatal.

use bytes::{Bytes, BytesMut};
use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;

use crate::batch::{
    check_crcs, frame_batches, parse_header, set_base_offset, set_partition_leader_epoch,
    BatchError, BatchHeader, BATCH_HEADER_LEN,
};
use crate::checkpoint::{self, write_atomic};
use crate::disk::{Disk, DiskFile};
use crate::epoch::LeaderEpochCache;
use crate::error::StorageError;
use crate::index::{OffsetIndex, TimeIndex, OFFSET_ENTRY_LEN, TIME_ENTRY_LEN};
use crate::producer::{ProducerStates, Staged};
use crate::records::{first_record_at_or_after, offset_of_max_timestamp, validate_contents};
use crate::segment::{
    parse_log_name, scan_batch_bytes, scan_batches, IndexFiles, ScanEnd, Segment, SegmentPaths,
};

/// Per-log settings, named after Kafka's topic configs. `Default` gives Kafka's defaults.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogConfig {
    pub segment_bytes: u64,
    pub segment_ms: u64,
    pub segment_index_bytes: u64,
    pub index_interval_bytes: u64,
    /// -1 keeps data forever.
    pub retention_ms: i64,
    /// -1 keeps data forever.
    pub retention_bytes: i64,
    /// `Some(1)` makes every append fsync before it returns.
    pub flush_messages: Option<u64>,
    pub flush_ms: Option<u64>,
    pub max_message_bytes: usize,
}

impl Default for LogConfig {
    fn default() -> Self {
        Self {
            segment_bytes: 1 << 30,
            segment_ms: 7 * 24 * 60 * 60 * 1000,
            segment_index_bytes: 10 << 20,
            index_interval_bytes: 4096,
            retention_ms: 7 * 24 * 60 * 60 * 1000,
            retention_bytes: -1,
            flush_messages: None,
            flush_ms: None,
            max_message_bytes: 1_048_588,
        }
    }
}

/// Index positions are u32, so a segment can never pass this size.
pub const SEGMENT_BYTES_MAX: u64 = i32::MAX as u64;
/// How often `tick` rewrites the recovery-point checkpoint and producer snapshot.
pub const CHECKPOINT_INTERVAL_MS: i64 = 60_000;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AppendResult {
    pub base_offset: i64,
    pub last_offset: i64,
    pub max_timestamp: i64,
    pub log_start_offset: i64,
}

/// Whole batches of one segment: `len` bytes at `position` of `file`.
#[derive(Debug)]
pub struct FileRegion<F> {
    pub file: Arc<F>,
    pub position: u64,
    pub len: u64,
}

impl<F> Clone for FileRegion<F> {
    fn clone(&self) -> Self {
        Self {
            file: self.file.clone(),
            position: self.position,
            len: self.len,
        }
    }
}

#[derive(Debug)]
pub struct ReadResult<F> {
    pub regions: Vec<FileRegion<F>>,
    pub len: u64,
    /// The size of the first batch read (0 when none was): what any read from the same
    /// offset returns at least, whatever its byte limit.
    pub first_batch_len: u64,
}

pub struct Log<D: Disk> {
    disk: D,
    dir: PathBuf,
    config: LogConfig,
    segments: Vec<Segment<D>>,
    log_start_offset: i64,
    high_watermark: i64,
    recovery_point: i64,
    checkpointed_recovery_point: i64,
    last_checkpoint_ms: i64,
    epochs: LeaderEpochCache,
    producers: ProducerStates,
    unflushed_messages: u64,
    last_flush_ms: i64,
    /// What each checkpoint file holds (CRC and length of its bytes), as last written or
    /// read, so a checkpoint that would not change is not written again.
    checkpoints: BTreeMap<&'static str, (u32, usize)>,
}

/// What identifies a checkpoint file's bytes well enough to skip rewriting the same ones.
fn fingerprint(bytes: &[u8]) -> (u32, usize) {
    (crate::batch::crc32c(bytes), bytes.len())
}

fn corrupt(error: std::io::Error) -> StorageError {
    if error.kind() == std::io::ErrorKind::InvalidData {
        StorageError::Corrupt("batch header in segment")
    } else {
        StorageError::Io(error)
    }
}

/// Whether a batch that the leader-epoch cache has no entry for starts below the first entry and
/// carries its epoch or an older one: records before the log start that DeleteRecords left in
/// the first segment. Anything else without an entry is not this log's data.
fn below_first_entry(first_entry: Option<(i32, i64)>, header: &BatchHeader) -> bool {
    first_entry.is_some_and(|(epoch, start)| {
        header.base_offset < start && header.partition_leader_epoch <= epoch
    })
}

/// Frames the batches of an append and checks their contents (codec, record count, record
/// framing; see [`validate_contents`]). A batch whose contents fail but whose CRC fails too is
/// reported as corrupt: bytes damaged on the way are for the producer to send again (Kafka's
/// CORRUPT_MESSAGE is retriable), not a batch it built wrong. Good CRCs are checked later,
/// while the bytes are written.
fn frame_for_append(bytes: &[u8], max_batch_bytes: usize) -> Result<Vec<BatchHeader>, BatchError> {
    let headers = frame_batches(bytes, max_batch_bytes)?;
    let mut at = 0;
    for header in &headers {
        let batch = bytes
            .get(at..at + header.total_len())
            .ok_or(BatchError::Truncated)?;
        if let Err(error) = validate_contents(batch, header) {
            check_crcs(batch, std::slice::from_ref(header))?;
            return Err(error);
        }
        at += header.total_len();
    }
    Ok(headers)
}

impl<D: Disk> Log<D> {
    /// Opens the log in `dir`, creating it or recovering it.
    pub async fn open(
        disk: D,
        dir: PathBuf,
        config: LogConfig,
        now_ms: i64,
    ) -> Result<Self, StorageError> {
        Self::open_in(disk, dir, config, now_ms, false).await
    }

    /// `open` for a log whose whole log directory was closed cleanly: `clean_dir` says the
    /// caller found the directory's marker (and removed it before opening any log), which
    /// stands for the log's own (`close_unmarked`).
    pub async fn open_in(
        disk: D,
        dir: PathBuf,
        config: LogConfig,
        now_ms: i64,
        clean_dir: bool,
    ) -> Result<Self, StorageError> {
        disk.create_dir_all(&dir).await?;
        let names = disk.list_dir(&dir).await?;
        let mut bases: Vec<i64> = names.iter().filter_map(|n| parse_log_name(n)).collect();
        bases.sort_unstable();
        for name in &names {
            if name.ends_with(checkpoint::TEMP_SUFFIX) {
                disk.remove_file(&dir.join(name)).await?;
            }
        }
        let marked = names.iter().any(|n| n == checkpoint::CLEAN_SHUTDOWN_FILE);
        if marked {
            // From here on a crash must look unclean.
            disk.remove_file(&dir.join(checkpoint::CLEAN_SHUTDOWN_FILE))
                .await?;
            disk.sync_dir(&dir).await?;
        }
        let clean = marked || clean_dir;
        let checkpointed_start =
            checkpoint::read_offset(&disk, &dir, checkpoint::LOG_START_OFFSET_FILE).await?;
        let recovery_point_read =
            checkpoint::read_offset(&disk, &dir, checkpoint::RECOVERY_POINT_FILE).await?;
        let recovery_point = recovery_point_read.unwrap_or(0);
        let high_watermark_read =
            checkpoint::read_offset(&disk, &dir, checkpoint::HIGH_WATERMARK_FILE).await?;
        let high_watermark = high_watermark_read.unwrap_or(0);
        let epoch_bytes =
            checkpoint::read_optional(&disk, &dir.join(checkpoint::LEADER_EPOCH_FILE)).await?;
        let epochs = epoch_bytes
            .as_deref()
            .and_then(LeaderEpochCache::decode)
            .unwrap_or_default();
        let snapshot_bytes =
            checkpoint::read_optional(&disk, &dir.join(checkpoint::PRODUCER_SNAPSHOT_FILE)).await?;
        let snapshot = snapshot_bytes
            .as_deref()
            .and_then(ProducerStates::decode_snapshot);
        let mut checkpoints = BTreeMap::new();
        let offsets = [
            (checkpoint::LOG_START_OFFSET_FILE, checkpointed_start),
            (checkpoint::RECOVERY_POINT_FILE, recovery_point_read),
            (checkpoint::HIGH_WATERMARK_FILE, high_watermark_read),
        ];
        for (name, offset) in offsets {
            if let Some(offset) = offset {
                checkpoints.insert(name, fingerprint(&checkpoint::encode_offset(offset)));
            }
        }
        if let (Some(bytes), Some(_)) = (&snapshot_bytes, &snapshot) {
            checkpoints.insert(checkpoint::PRODUCER_SNAPSHOT_FILE, fingerprint(bytes));
        }

        let mut log = Self {
            disk,
            dir,
            config,
            segments: Vec::new(),
            log_start_offset: 0,
            high_watermark: 0,
            recovery_point: 0,
            checkpointed_recovery_point: -1,
            last_checkpoint_ms: now_ms,
            epochs,
            producers: ProducerStates::default(),
            unflushed_messages: 0,
            last_flush_ms: now_ms,
            checkpoints,
        };
        let recovered = log
            .load_segments(&bases, &names, clean, recovery_point, now_ms)
            .await?;
        if log.segments.is_empty() {
            let base = checkpointed_start.unwrap_or(0).max(0);
            let segment = Segment::create(
                &log.disk,
                &log.dir,
                base,
                log.config.segment_index_bytes,
                now_ms,
            )
            .await?;
            log.segments.push(segment);
        }
        let end = log.log_end_offset();
        let first_base = log.segments[0].base_offset;
        log.log_start_offset = checkpointed_start
            .unwrap_or(first_base)
            .clamp(first_base, end);
        log.high_watermark = high_watermark.clamp(log.log_start_offset, end);
        log.restore_producers(snapshot, recovered).await?;
        // After a clean shutdown, an epoch begun at the log end by a leader that took over
        // (`begin_epoch_at_end`) stays: its batches, when they come, start there. After a
        // crash the tail may be gone, and only epochs with batches below the end are kept.
        let keep_from = if clean { end + 1 } else { end };
        let mut epochs_changed = log.epochs.truncate_from_end(keep_from);
        epochs_changed |= log.epochs.truncate_from_start(log.log_start_offset);
        if epochs_changed {
            log.write_epochs().await?;
        }
        log.delete_segments_below_start().await?;
        let active = log
            .segments
            .last_mut()
            .expect("a log always has an active segment");
        // The active segment's indexes were trimmed when it was sealed at the last clean close
        // (or are short after recovery); they get their full preallocation back with their
        // next entry (`write_new_index_entries`).
        active.sealed = false;
        // Everything up to the end was validated; make it durable before trusting it as such.
        log.sync_segments().await?;
        log.write_recovery_checkpoints(now_ms).await?;
        log.write_offset_checkpoint(checkpoint::LOG_START_OFFSET_FILE, log.log_start_offset)
            .await?;
        Ok(log)
    }

    /// Loads or recovers every segment; returns the headers of recovered idempotent batches and the
    /// first offset recovery scanned from (None if nothing was scanned).
    async fn load_segments(
        &mut self,
        bases: &[i64],
        names: &[String],
        clean: bool,
        recovery_point: i64,
        now_ms: i64,
    ) -> Result<Option<(i64, Vec<BatchHeader>)>, StorageError> {
        let mut recovered: Option<(i64, Vec<BatchHeader>)> = None;
        let mut truncated = false;
        for (i, &base) in bases.iter().enumerate() {
            if truncated || self.segments.last().is_some_and(|s| s.next_offset != base) {
                tracing::warn!(dir = %self.dir.display(), base, "deleting segment after a recovered gap");
                self.remove_segment_files(base).await?;
                truncated = true;
                continue;
            }
            let is_last = i + 1 == bases.len();
            let next_base = bases.get(i + 1).copied();
            let mut segment = Segment::open(
                &self.disk,
                &self.dir,
                base,
                self.config.segment_index_bytes,
                now_ms,
            )
            .await?;
            // Opening a segment creates missing index files empty; those must be rebuilt.
            let paths = SegmentPaths::new(&self.dir, base);
            let indexes_exist = [&paths.index, &paths.time_index].iter().all(|path| {
                let name = path.file_name().and_then(|n| n.to_str());
                names.iter().any(|n| Some(n.as_str()) == name)
            });
            let trusted =
                indexes_exist && (clean || next_base.is_some_and(|next| next <= recovery_point));
            let loaded = trusted && self.load_indexes(&mut segment, next_base).await?;
            if !loaded {
                let headers = recovered.get_or_insert_with(|| (base, Vec::new()));
                let complete = self.recover_segment(&mut segment, &mut headers.1).await?;
                if !complete {
                    truncated = true;
                }
                if !is_last && !truncated {
                    segment.seal(&self.disk).await?;
                }
            }
            if !is_last && !truncated {
                segment.sealed = true;
            }
            self.segments.push(segment);
        }
        // A truncated tail may leave the last kept segment sealed; it becomes active again.
        if truncated {
            if let Some(last) = self.segments.last_mut() {
                last.preallocate_indexes(&self.disk).await?;
                last.offsets_written = 0;
                last.times_written = 0;
                last.write_new_index_entries(&self.disk).await?;
            }
        }
        Ok(recovered)
    }

    /// Trusts the segment's index files if they are sane; returns false to ask for a rebuild.
    async fn load_indexes(
        &self,
        segment: &mut Segment<D>,
        next_base: Option<i64>,
    ) -> Result<bool, StorageError> {
        let offset_limit = match next_base {
            Some(next) => (next - segment.base_offset).max(0) as u64,
            None => u64::from(u32::MAX),
        };
        let max_lens = (
            segment.offset_entries_max as u64 * 8,
            segment.time_entries_max as u64 * 12,
        );
        let Some((index_bytes, time_bytes)) =
            segment.read_index_files(&self.disk, max_lens).await?
        else {
            return Ok(false);
        };
        let Some(offsets) = OffsetIndex::decode(&index_bytes, segment.size, offset_limit) else {
            return Ok(false);
        };
        let Some(times) = TimeIndex::decode(&time_bytes, offset_limit) else {
            return Ok(false);
        };
        // A segment with batches always has a time entry: sealing writes its max timestamp.
        if segment.size > 0 && times.is_empty() {
            return Ok(false);
        }
        segment.offsets_written = offsets.len();
        segment.times_written = times.len();
        if index_bytes.len() == offsets.len() * OFFSET_ENTRY_LEN
            && time_bytes.len() == times.len() * TIME_ENTRY_LEN
        {
            segment.index_files = IndexFiles::Exact;
        }
        segment.offsets = offsets;
        segment.times = times;
        if !self.last_entries_match(segment).await? {
            tracing::warn!(dir = %self.dir.display(), base = segment.base_offset,
                "index entries do not match the log; rebuilding");
            return Ok(false);
        }
        if let Some((timestamp, relative)) = segment.times.last() {
            segment.has_batches = true;
            segment.builder.max_timestamp = timestamp;
            segment.builder.offset_of_max_timestamp = segment.base_offset + i64::from(relative);
        }
        match next_base {
            Some(next) => {
                segment.next_offset = next;
                segment.has_batches |= segment.size > 0;
                Ok(segment.size > 0 || next == segment.base_offset)
            }
            None => self.scan_active_tail(segment).await,
        }
    }

    /// Checks the last entry of each index against the batch it names: a cheap guard against
    /// index files that are well formed but belong to other data. Entries before it are checked
    /// when a lookup uses them.
    async fn last_entries_match(&self, segment: &Segment<D>) -> Result<bool, StorageError> {
        if let Some(&(relative, position)) = segment.offsets.entries().last() {
            let bytes = segment
                .log
                .get()
                .await?
                .read_at(BATCH_HEADER_LEN, u64::from(position))
                .await?;
            let last = segment.base_offset + i64::from(relative);
            if !parse_header(&bytes).is_ok_and(|header| header.last_offset() == last) {
                return Ok(false);
            }
        }
        if let Some((timestamp, relative)) = segment.times.last() {
            let offset = segment.base_offset + i64::from(relative);
            let found = segment.find_batch(offset).await.ok().flatten();
            if !found.is_some_and(|(_, header)| {
                header.base_offset <= offset && header.max_timestamp == timestamp
            }) || segment.index_damaged.get()
            {
                return Ok(false);
            }
        }
        Ok(true)
    }

    /// For a trusted active segment: walks the batches after the last index entry to find the end
    /// offset and the index-builder state.
    async fn scan_active_tail(&self, segment: &mut Segment<D>) -> Result<bool, StorageError> {
        let (start, mut next_offset) = match segment.offsets.entries().last() {
            Some(&(relative, position)) => (
                u64::from(position),
                segment.base_offset + i64::from(relative) + 1,
            ),
            None => (0, segment.base_offset),
        };
        let mut tail = Vec::new();
        let mut running_max = segment.has_batches.then_some(segment.builder.max_timestamp);
        let end = scan_batch_bytes(
            &*segment.log.get().await?,
            start,
            segment.size,
            true,
            |_, header, bytes| {
                let mut max_offset = None;
                if running_max.is_none_or(|max| header.max_timestamp > max) {
                    running_max = Some(header.max_timestamp);
                    max_offset = Some(offset_of_max_timestamp(bytes, header));
                }
                tail.push((*header, max_offset));
                Ok(true)
            },
        )
        .await?;
        if end != ScanEnd::Complete {
            return Ok(false);
        }
        // The first batch scanned is the indexed one; its successor starts the unindexed run.
        let mut bytes_since_entry = 0;
        for (i, (header, max_offset)) in tail.iter().enumerate() {
            if i == 0 && !segment.offsets.is_empty() {
                if header.next_offset() != next_offset {
                    return Ok(false);
                }
            } else if header.base_offset != next_offset {
                return Ok(false);
            }
            next_offset = header.next_offset();
            bytes_since_entry += header.total_len() as u64;
            if segment.rolling_timestamp.is_none() {
                segment.rolling_timestamp = Some(header.max_timestamp);
            }
            if let Some(max_offset) = *max_offset {
                segment.builder.max_timestamp = header.max_timestamp;
                segment.builder.offset_of_max_timestamp = max_offset;
            }
            segment.has_batches = true;
        }
        segment.next_offset = next_offset;
        segment.builder.bytes_since_entry = bytes_since_entry;
        Ok(true)
    }

    /// Scans a whole segment with full validation, rebuilding its indexes; truncates at the first
    /// bad batch. Returns whether the segment was intact.
    async fn recover_segment(
        &mut self,
        segment: &mut Segment<D>,
        idempotent: &mut Vec<BatchHeader>,
    ) -> Result<bool, StorageError> {
        // A failed attempt to trust the index files may have left state behind.
        segment.reset_indexes();
        segment.index_damaged.set(false);
        let interval = self.config.index_interval_bytes;
        let epochs = &mut self.epochs;
        let check_epochs = !epochs.entries().is_empty();
        // DeleteRecords moves the first entry's start up to the new log start, so batches below
        // it, still in the log's first segment, have no entry of their own.
        let first_entry = epochs.entries().first().copied();
        let mut batches = Vec::new();
        let mut expected = segment.base_offset;
        let mut running_max: Option<i64> = None;
        let end = scan_batch_bytes(
            &*segment.log.get().await?,
            0,
            segment.size,
            true,
            |position, header, bytes| {
                if header.base_offset != expected {
                    return Err(());
                }
                let epoch = header.partition_leader_epoch;
                if check_epochs {
                    match epochs.epoch_for_offset(header.base_offset) {
                        Some(cached) if cached != epoch => return Err(()),
                        None if epoch >= 0 && !below_first_entry(first_entry, header) => {
                            return Err(())
                        }
                        _ => {}
                    }
                } else {
                    epochs.assign(epoch, header.base_offset);
                }
                expected = header.next_offset();
                let mut max_offset = header.base_offset;
                if running_max.is_none_or(|max| header.max_timestamp > max) {
                    running_max = Some(header.max_timestamp);
                    max_offset = offset_of_max_timestamp(bytes, header);
                }
                batches.push((position, *header, max_offset));
                Ok(true)
            },
        )
        .await?;
        for (position, header, max_offset) in &batches {
            segment.index_batch(*position, header, interval, || *max_offset);
            if header.producer_id >= 0 {
                idempotent.push(*header);
            }
        }
        let intact = match end {
            ScanEnd::Complete => true,
            ScanEnd::Stopped(_) => unreachable!("the recovery visitor never stops"),
            ScanEnd::Invalid(position) => {
                tracing::warn!(dir = %self.dir.display(), base = segment.base_offset, position,
                    "truncating a torn or corrupt log tail");
                segment.forget_lookups();
                segment.log.get().await?.set_len(position).await?;
                segment.size = position;
                false
            }
        };
        if !check_epochs && !self.epochs.entries().is_empty() {
            self.write_epochs().await?;
        }
        segment.preallocate_indexes(&self.disk).await?;
        segment.write_new_index_entries(&self.disk).await?;
        segment.dirty = true;
        Ok(intact)
    }

    async fn restore_producers(
        &mut self,
        snapshot: Option<(i64, ProducerStates)>,
        recovered: Option<(i64, Vec<BatchHeader>)>,
    ) -> Result<(), StorageError> {
        let end = self.log_end_offset();
        let scanned_from = recovered.as_ref().map_or(end, |(from, _)| *from);
        match snapshot {
            // The snapshot is usable when the scanned batches reach back to it (or, after a
            // clean close, when it was taken at the very end).
            Some((offset, states)) if offset <= end && offset >= scanned_from => {
                self.producers = states;
                for header in recovered.iter().flat_map(|(_, headers)| headers) {
                    if header.base_offset >= offset {
                        self.producers.apply(header);
                    }
                }
            }
            _ => self.rebuild_producers().await?,
        }
        self.producers.remove_before(self.log_start_offset);
        Ok(())
    }

    /// Rebuilds producer state from every batch header in the log.
    async fn rebuild_producers(&mut self) -> Result<(), StorageError> {
        let mut producers = ProducerStates::default();
        for segment in &self.segments {
            let end = scan_batches(
                &*segment.log.get().await?,
                0,
                segment.size,
                false,
                |_, header| {
                    producers.apply(header);
                    Ok(true)
                },
            )
            .await?;
            if end != ScanEnd::Complete {
                return Err(StorageError::Corrupt(
                    "batch header while rebuilding producer state",
                ));
            }
        }
        self.producers = producers;
        Ok(())
    }

    async fn remove_segment_files(&self, base: i64) -> Result<(), StorageError> {
        let paths = SegmentPaths::new(&self.dir, base);
        for path in [&paths.log, &paths.index, &paths.time_index] {
            match self.disk.remove_file(path).await {
                Ok(()) => {}
                Err(error) if error.kind() == std::io::ErrorKind::NotFound => {}
                Err(error) => return Err(error.into()),
            }
        }
        Ok(())
    }

    pub fn log_start_offset(&self) -> i64 {
        self.log_start_offset
    }

    pub fn log_end_offset(&self) -> i64 {
        self.segments.last().map_or(0, |s| s.next_offset)
    }

    /// The last offset of the newest batch this log holds from idempotent producer
    /// `producer_id`, if it remembers one.
    pub fn producer_last_offset(&self, producer_id: i64) -> Option<i64> {
        let entry = self.producers.get(producer_id)?;
        entry.batches.back().map(|batch| batch.last_offset)
    }

    pub fn high_watermark(&self) -> i64 {
        self.high_watermark
    }

    pub fn set_high_watermark(&mut self, offset: i64) {
        self.high_watermark = offset.clamp(self.log_start_offset, self.log_end_offset());
    }

    pub fn config(&self) -> &LogConfig {
        &self.config
    }

    pub fn set_config(&mut self, config: LogConfig) {
        self.config = config;
    }

    pub fn size_bytes(&self) -> u64 {
        self.segments.iter().map(|s| s.size).sum()
    }

    pub fn segment_count(&self) -> usize {
        self.segments.len()
    }

    /// Base offsets of the segments, oldest first.
    pub fn segment_base_offsets(&self) -> Vec<i64> {
        self.segments.iter().map(|s| s.base_offset).collect()
    }

    pub fn leader_epochs(&self) -> &[(i32, i64)] {
        self.epochs.entries()
    }

    pub fn producer_states(&self) -> &ProducerStates {
        &self.producers
    }

    pub fn end_offset_for_epoch(&self, epoch: i32) -> Option<(i32, i64)> {
        self.epochs.end_offset_for(epoch, self.log_end_offset())
    }

    /// Records that `epoch` starts at the log end, as a new leader does when it takes over
    /// (Kafka's `maybeAssignEpochStartOffset`), and checkpoints it: the epoch's first append
    /// then finds it known and lands without writing the checkpoint itself, which costs a
    /// file creation and two syncs. Does nothing unless `epoch` is newer than the latest.
    /// Returns whether it recorded the epoch; on error the cache is as it was.
    pub async fn begin_epoch_at_end(&mut self, epoch: i32) -> Result<bool, StorageError> {
        let before = self.epochs.clone();
        if !self.epochs.assign(epoch, self.log_end_offset()) {
            return Ok(false);
        }
        if let Err(error) = self.write_epochs().await {
            self.epochs = before;
            return Err(error);
        }
        Ok(true)
    }

    /// Validates, assigns dense offsets (rewrites base offset and leader epoch in place), checks
    /// idempotent producers, and appends. See the crate contract for producer semantics.
    pub async fn append(
        &mut self,
        batches: impl Into<Bytes>,
        leader_epoch: i32,
        now_ms: i64,
    ) -> Result<AppendResult, StorageError> {
        // A `Vec` or a uniquely held `Bytes` becomes a `BytesMut` without a copy; the offsets
        // are rewritten in place and the same buffer goes to the kernel.
        let mut batches = BytesMut::from(batches.into());
        // Framing and contents now; the CRCs while the bytes are written (see `Segment::append`).
        let mut headers = frame_for_append(&batches, self.config.max_message_bytes)?;
        if let Some((latest, _)) = self.epochs.latest() {
            if leader_epoch < latest {
                return Err(StorageError::FencedLeaderEpoch {
                    epoch: leader_epoch,
                    latest,
                });
            }
        }
        let base_offset = self.log_end_offset();
        let mut next = base_offset;
        let mut position = 0;
        let mut staged = Staged::new();
        for header in &mut headers {
            set_base_offset(&mut batches[position..], next);
            set_partition_leader_epoch(&mut batches[position..], leader_epoch);
            header.base_offset = next;
            header.partition_leader_epoch = leader_epoch;
            self.producers.stage(&mut staged, header)?;
            next = header.next_offset();
            position += header.total_len();
        }
        let new_epoch = self
            .epochs
            .latest()
            .is_none_or(|(latest, _)| leader_epoch > latest)
            && leader_epoch >= 0;
        let epoch_start = [(leader_epoch, base_offset)];
        let new_epochs: &[(i32, i64)] = if new_epoch { &epoch_start } else { &[] };
        self.land(batches.freeze(), &headers, new_epochs, staged, now_ms)
            .await
    }

    /// Appends batches fetched from the leader as they are: their offsets, partition leader
    /// epochs and bytes are kept, never rewritten. The first batch must start at the log end
    /// offset and each next one where the previous one ends; leader epochs must not decrease,
    /// nor fall below the latest epoch in the leader-epoch cache. Each new epoch is assigned at
    /// its first batch's base offset. Producer state is updated from the batches but never
    /// refuses one: the leader already checked its sequence. Framing, CRCs, `max.message.bytes`,
    /// rolling, indexes and `flush.messages` are as in [`Log::append`].
    pub async fn append_as_follower(
        &mut self,
        batches: impl Into<Bytes>,
        now_ms: i64,
    ) -> Result<AppendResult, StorageError> {
        let batches = batches.into();
        let headers = frame_for_append(&batches, self.config.max_message_bytes)?;
        let mut expected = self.log_end_offset();
        // The epoch a batch may not go below: the cache's latest, then the previous batch's.
        let mut floor = self.epochs.latest().map_or(i32::MIN, |(epoch, _)| epoch);
        let mut new_epochs = Vec::new();
        let mut staged = Staged::new();
        for header in &headers {
            if header.base_offset != expected {
                return Err(StorageError::NonContiguous {
                    expected,
                    found: header.base_offset,
                });
            }
            let epoch = header.partition_leader_epoch;
            if epoch < floor {
                return Err(StorageError::FencedLeaderEpoch {
                    epoch,
                    latest: floor,
                });
            }
            if epoch > floor && epoch >= 0 {
                new_epochs.push((epoch, header.base_offset));
            }
            floor = epoch;
            self.producers.stage_replicated(&mut staged, header);
            expected = header.next_offset();
        }
        self.land(batches, &headers, &new_epochs, staged, now_ms)
            .await
    }

    /// Writes framed batches whose offsets and epochs are final, for both append paths: rolls
    /// when the active segment cannot take them, checkpoints the leader epochs they start,
    /// appends, commits their producer state and flushes as `flush.messages` asks.
    /// `new_epochs` are (epoch, start offset) pairs the cache does not hold yet, in order.
    async fn land(
        &mut self,
        batches: Bytes,
        headers: &[BatchHeader],
        new_epochs: &[(i32, i64)],
        staged: Staged,
        now_ms: i64,
    ) -> Result<AppendResult, StorageError> {
        let (Some(first), Some(last)) = (headers.first(), headers.last()) else {
            unreachable!("framing refuses an append without batches");
        };
        let base_offset = first.base_offset;
        let last_offset = last.last_offset();
        debug_assert_eq!(base_offset, self.log_end_offset());
        debug_assert_eq!(
            headers.iter().map(BatchHeader::total_len).sum::<usize>(),
            batches.len()
        );
        let max_timestamp = headers.iter().fold(-1, |max, h| max.max(h.max_timestamp));
        let messages: u64 = headers.iter().map(|h| h.offset_count() as u64).sum();
        let active = self.segments.last().expect("active segment");
        let segment_bytes = self.config.segment_bytes.min(SEGMENT_BYTES_MAX);
        if active.is_full(
            batches.len() as u64,
            headers.len(),
            last_offset,
            segment_bytes,
        ) || active.is_time_to_roll(now_ms, self.config.segment_ms)
        {
            self.roll(now_ms).await?;
        }
        // A segment indexes offsets relative to its base in 32 bits. One batch always fits an
        // empty segment; several whose offsets span more than that do not fit any.
        let active = self.segments.last().expect("active segment");
        if last_offset - active.base_offset > i64::from(i32::MAX) {
            return Err(BatchError::BadOffsetDelta.into());
        }
        // A new leader epoch is checkpointed before its first batch lands, so that batch's CRCs
        // are checked first: a rejected batch must not leave an epoch behind.
        let assigns_epochs = !new_epochs.is_empty();
        if assigns_epochs {
            check_crcs(&batches, headers)?;
            for &(epoch, start) in new_epochs {
                let assigned = self.epochs.assign(epoch, start);
                debug_assert!(assigned, "epoch {epoch} at {start} is not new");
            }
            self.write_epochs().await?;
        }
        let interval = self.config.index_interval_bytes;
        let active = self.segments.last_mut().expect("active segment");
        active
            .append(batches, headers, interval, now_ms, !assigns_epochs)
            .await?;
        if active.index_run_due() {
            active.write_new_index_entries(&self.disk).await?;
        }
        self.producers.commit(staged);
        self.unflushed_messages += messages;
        if self
            .config
            .flush_messages
            .is_some_and(|n| self.unflushed_messages >= n)
        {
            self.sync_segments().await?;
            self.last_flush_ms = now_ms;
        }
        Ok(AppendResult {
            base_offset,
            last_offset,
            max_timestamp,
            log_start_offset: self.log_start_offset,
        })
    }

    /// Seals the active segment and starts a new one at the log end offset.
    pub async fn roll(&mut self, now_ms: i64) -> Result<(), StorageError> {
        let end = self.log_end_offset();
        let active = self.segments.last_mut().expect("active segment");
        if active.size == 0 {
            return Ok(());
        }
        active.seal(&self.disk).await?;
        let segment = Segment::create(
            &self.disk,
            &self.dir,
            end,
            self.config.segment_index_bytes,
            now_ms,
        )
        .await?;
        self.segments.push(segment);
        // The new segment's name must survive a crash once data lands in it.
        self.disk.sync_dir(&self.dir).await?;
        Ok(())
    }

    fn segment_index_for(&self, offset: i64) -> usize {
        let after = self.segments.partition_point(|s| s.base_offset <= offset);
        after.saturating_sub(1)
    }

    /// Regions of whole batches from the batch holding `from_offset`, at most `max_bytes` (but at
    /// least one batch), and only batches wholly below `upper_offset`.
    pub async fn read(
        &self,
        from_offset: i64,
        max_bytes: u64,
        upper_offset: i64,
    ) -> Result<ReadResult<D::File>, StorageError> {
        let end = self.log_end_offset();
        if from_offset < self.log_start_offset || from_offset > end {
            return Err(StorageError::OffsetOutOfRange {
                offset: from_offset,
                start: self.log_start_offset,
                end,
            });
        }
        let mut result = ReadResult {
            regions: Vec::new(),
            len: 0,
            first_batch_len: 0,
        };
        let upper_offset = upper_offset.min(end);
        let mut index = self.segment_index_for(from_offset);
        let mut from = from_offset;
        while from < upper_offset && index < self.segments.len() {
            let segment = &self.segments[index];
            let Some((start, first)) = segment.find_batch(from).await.map_err(corrupt)? else {
                index += 1;
                continue;
            };
            if first.last_offset() >= upper_offset {
                break;
            }
            let hard_end = if upper_offset < segment.next_offset {
                segment
                    .find_batch(upper_offset)
                    .await
                    .map_err(corrupt)?
                    .map_or(segment.size, |(p, _)| p)
            } else {
                segment.size
            };
            let budget = max_bytes.saturating_sub(result.len);
            let at_least_one = result.regions.is_empty();
            if budget == 0 && !at_least_one {
                break;
            }
            let region_end = segment
                .region_end(start, budget, hard_end, at_least_one)
                .await
                .map_err(corrupt)?;
            if region_end > start {
                if result.regions.is_empty() {
                    result.first_batch_len = first.total_len() as u64;
                }
                result.len += region_end - start;
                result.regions.push(FileRegion {
                    file: segment.log.get().await?,
                    position: start,
                    len: region_end - start,
                });
            }
            if region_end < segment.size || hard_end < segment.size {
                break;
            }
            index += 1;
            from = segment.next_offset;
        }
        Ok(result)
    }

    /// The first record at or after the log start whose timestamp is at least `timestamp`: its
    /// offset and timestamp, as Kafka's ListOffsets answers. The time index and the batch headers
    /// find the batch; its records are then walked (decompressed if need be). A batch whose
    /// records cannot be walked is answered at batch level: its first offset at or after the log
    /// start, and its max timestamp.
    pub async fn offset_for_timestamp(
        &self,
        timestamp: i64,
    ) -> Result<Option<(i64, i64)>, StorageError> {
        let log_start = self.log_start_offset;
        for segment in &self.segments {
            let Some((max, _)) = segment.max_timestamp() else {
                continue;
            };
            if max < timestamp || segment.next_offset <= log_start {
                continue;
            }
            let from = self
                .time_index_start(segment, timestamp)
                .await?
                .max(log_start);
            let Some((mut position, _)) = segment.find_batch(from).await.map_err(corrupt)? else {
                continue;
            };
            while let Some((at, header)) =
                Self::next_batch_reaching(segment, position, log_start, timestamp).await?
            {
                let len = header.total_len();
                let bytes = segment.log.get().await?.read_at(len, at).await?;
                if bytes.len() < len {
                    return Err(StorageError::Corrupt("batch shorter than its header says"));
                }
                match first_record_at_or_after(&bytes, &header, log_start, timestamp) {
                    Ok(Some(record)) => return Ok(Some((record.offset, record.timestamp))),
                    Ok(None) => position = at + len as u64,
                    Err(error) => {
                        tracing::warn!(dir = %self.dir.display(), offset = header.base_offset,
                            %error, "answering a timestamp lookup at batch level");
                        return Ok(Some((
                            header.base_offset.max(log_start),
                            header.max_timestamp,
                        )));
                    }
                }
            }
        }
        Ok(None)
    }

    /// The offset from which to scan `segment` for `timestamp`, from its time index. The entry
    /// used is checked against its batch; a mismatch marks the index damaged and scans the whole
    /// segment.
    async fn time_index_start(
        &self,
        segment: &Segment<D>,
        timestamp: i64,
    ) -> Result<i64, StorageError> {
        let base = segment.base_offset;
        let entry = segment.times.entry_below(timestamp);
        let Some((entry_timestamp, relative)) = entry.filter(|_| !segment.index_damaged.get())
        else {
            return Ok(base);
        };
        let offset = base + i64::from(relative);
        match segment.find_batch(offset).await.map_err(corrupt)? {
            Some((_, header))
                if header.base_offset <= offset && header.max_timestamp == entry_timestamp =>
            {
                Ok(offset)
            }
            _ => {
                segment.mark_index_damaged("time index entry does not match its batch");
                Ok(base)
            }
        }
    }

    /// The first batch from `position` on that ends at or after `log_start` and whose max
    /// timestamp reaches `timestamp`.
    async fn next_batch_reaching(
        segment: &Segment<D>,
        position: u64,
        log_start: i64,
        timestamp: i64,
    ) -> Result<Option<(u64, BatchHeader)>, StorageError> {
        let mut found = None;
        let end = scan_batches(
            &*segment.log.get().await?,
            position,
            segment.size,
            false,
            |at, header| {
                if header.last_offset() >= log_start && header.max_timestamp >= timestamp {
                    found = Some((at, *header));
                    return Ok(false);
                }
                Ok(true)
            },
        )
        .await?;
        if let ScanEnd::Invalid(_) = end {
            return Err(StorageError::Corrupt("batch header in segment"));
        }
        Ok(found)
    }

    /// The largest timestamp in the log and the offset of the first record holding it (exact for
    /// uncompressed batches; for a compressed batch, its last offset), at least the log start.
    pub fn max_timestamp_and_offset(&self) -> Option<(i64, i64)> {
        let mut best: Option<(i64, i64)> = None;
        for segment in &self.segments {
            if let Some((timestamp, offset)) = segment.max_timestamp() {
                if best.is_none_or(|(t, _)| timestamp > t) {
                    best = Some((timestamp, offset.max(self.log_start_offset)));
                }
            }
        }
        best
    }

    /// Moves the log start to `offset` (DeleteRecords) and deletes segments wholly below it.
    pub async fn delete_records_before(&mut self, offset: i64) -> Result<i64, StorageError> {
        let end = self.log_end_offset();
        if offset > end || offset < 0 {
            return Err(StorageError::OffsetOutOfRange {
                offset,
                start: self.log_start_offset,
                end,
            });
        }
        if offset <= self.log_start_offset {
            return Ok(self.log_start_offset);
        }
        self.set_log_start(offset).await?;
        self.delete_segments_below_start().await?;
        Ok(self.log_start_offset)
    }

    async fn set_log_start(&mut self, offset: i64) -> Result<(), StorageError> {
        self.log_start_offset = offset;
        self.high_watermark = self.high_watermark.max(offset);
        self.producers.remove_before(offset);
        if self.epochs.truncate_from_start(offset) {
            self.write_epochs().await?;
        }
        // The checkpoint goes first: a crash mid-deletion then leaves only files below the start.
        self.write_offset_checkpoint(checkpoint::LOG_START_OFFSET_FILE, offset)
            .await
    }

    async fn delete_segments_below_start(&mut self) -> Result<(), StorageError> {
        while self.segments.len() > 1 && self.segments[0].next_offset <= self.log_start_offset {
            self.delete_oldest_segment().await?;
        }
        Ok(())
    }

    async fn delete_oldest_segment(&mut self) -> Result<(), StorageError> {
        assert!(
            self.segments.len() > 1,
            "the active segment is never deleted"
        );
        let segment = self.segments.remove(0);
        debug_assert!(segment.sealed);
        if self.log_start_offset < self.segments[0].base_offset {
            self.set_log_start(self.segments[0].base_offset).await?;
        }
        // Readers holding the log file's Arc keep reading it after the unlink.
        self.remove_segment_files(segment.base_offset).await
    }

    /// Removes everything at and after `offset` (rounded down to a batch boundary).
    pub async fn truncate_to(&mut self, offset: i64) -> Result<(), StorageError> {
        if offset >= self.log_end_offset() {
            return Ok(());
        }
        let now_ms = self.segments.last().map_or(0, |s| s.last_modified_ms);
        if offset <= self.segments[0].base_offset {
            self.restart_empty_at(offset.max(0), now_ms).await?;
        } else {
            let keep = self.segment_index_for(offset);
            while self.segments.len() > keep + 1 {
                let segment = self.segments.pop().expect("segment above the kept one");
                self.remove_segment_files(segment.base_offset).await?;
            }
            let segment = self.segments.last_mut().expect("kept segment");
            let cut = segment
                .find_batch(offset)
                .await
                .map_err(corrupt)?
                .map_or(segment.size, |(p, _)| p);
            segment.forget_lookups();
            segment.log.get().await?.set_len(cut).await?;
            segment.size = cut;
            let mut scratch = Vec::new();
            let mut fresh = Segment::open(
                &self.disk,
                &self.dir,
                segment.base_offset,
                self.config.segment_index_bytes,
                now_ms,
            )
            .await?;
            self.recover_segment(&mut fresh, &mut scratch).await?;
            *self.segments.last_mut().expect("kept segment") = fresh;
        }
        let end = self.log_end_offset();
        self.log_start_offset = self.log_start_offset.min(end);
        self.high_watermark = self.high_watermark.min(end);
        if self.epochs.truncate_from_end(end) {
            self.write_epochs().await?;
        }
        self.rebuild_producers().await?;
        self.sync_segments().await?;
        self.recovery_point = self.recovery_point.min(end);
        self.write_recovery_checkpoints(now_ms).await
    }

    /// Removes every segment and starts an empty log at `offset`, as a follower does when the
    /// leader's log start is past its own end (Kafka's `truncateFullyAndStartAt`). The log
    /// start, high watermark and recovery point all become `offset`; the leader-epoch cache and
    /// producer state are emptied, since none of the batches they describe are left.
    pub async fn truncate_fully_and_start_at(&mut self, offset: i64) -> Result<(), StorageError> {
        if offset < 0 {
            return Err(StorageError::OffsetOutOfRange {
                offset,
                start: self.log_start_offset,
                end: self.log_end_offset(),
            });
        }
        let now_ms = self.segments.last().map_or(0, |s| s.last_modified_ms);
        // The emptied cache goes first: were the old entries still checkpointed when a crash
        // leaves only the new segment, they would claim offsets of batches that are gone.
        if !self.epochs.entries().is_empty() {
            self.epochs = LeaderEpochCache::default();
            self.write_epochs().await?;
        }
        self.restart_empty_at(offset, now_ms).await?;
        self.producers = ProducerStates::default();
        self.high_watermark = offset;
        self.unflushed_messages = 0;
        self.recovery_point = offset;
        self.write_recovery_checkpoints(now_ms).await
    }

    /// Removes every segment and starts one empty segment at `start`, which becomes the log
    /// start (checkpointed).
    async fn restart_empty_at(&mut self, start: i64, now_ms: i64) -> Result<(), StorageError> {
        debug_assert!(start >= 0);
        while let Some(segment) = self.segments.pop() {
            self.remove_segment_files(segment.base_offset).await?;
        }
        let segment = Segment::create(
            &self.disk,
            &self.dir,
            start,
            self.config.segment_index_bytes,
            now_ms,
        )
        .await?;
        self.segments.push(segment);
        self.disk.sync_dir(&self.dir).await?;
        self.log_start_offset = start;
        self.write_offset_checkpoint(checkpoint::LOG_START_OFFSET_FILE, start)
            .await
    }

    /// fsyncs every segment written since the last flush (no checkpoint).
    async fn sync_segments(&mut self) -> Result<(), StorageError> {
        for segment in self.segments.iter_mut().rev() {
            segment.sync(&self.disk).await?;
        }
        self.recovery_point = self.log_end_offset();
        self.unflushed_messages = 0;
        Ok(())
    }

    /// fsyncs the log and records the recovery point (with the producer snapshot).
    pub async fn flush(&mut self) -> Result<(), StorageError> {
        self.sync_segments().await?;
        let now_ms = self.last_checkpoint_ms;
        self.write_recovery_checkpoints(now_ms).await
    }

    async fn write_recovery_checkpoints(&mut self, now_ms: i64) -> Result<(), StorageError> {
        let point = self.recovery_point;
        // The snapshot goes first, so it never describes a point before the recovery point.
        let snapshot = self.producers.encode_snapshot(self.log_end_offset());
        self.write_checkpoint(checkpoint::PRODUCER_SNAPSHOT_FILE, snapshot)
            .await?;
        self.write_offset_checkpoint(checkpoint::RECOVERY_POINT_FILE, point)
            .await?;
        self.write_offset_checkpoint(checkpoint::HIGH_WATERMARK_FILE, self.high_watermark)
            .await?;
        self.checkpointed_recovery_point = point;
        self.last_checkpoint_ms = now_ms;
        Ok(())
    }

    async fn write_offset_checkpoint(
        &mut self,
        name: &'static str,
        offset: i64,
    ) -> Result<(), StorageError> {
        self.write_checkpoint(name, checkpoint::encode_offset(offset))
            .await
    }

    /// Replaces checkpoint `name` with `contents`, unless the file already holds exactly
    /// them: each replacement creates a file and syncs twice, which adds up over thousands
    /// of partitions opening or closing at once.
    async fn write_checkpoint(
        &mut self,
        name: &'static str,
        contents: Vec<u8>,
    ) -> Result<(), StorageError> {
        let print = fingerprint(&contents);
        if self.checkpoints.get(name) == Some(&print) {
            return Ok(());
        }
        // Until the replacement is whole, what the file holds is not known.
        self.checkpoints.remove(name);
        write_atomic(&self.disk, &self.dir, name, contents).await?;
        self.checkpoints.insert(name, print);
        Ok(())
    }

    async fn write_epochs(&self) -> Result<(), StorageError> {
        write_atomic(
            &self.disk,
            &self.dir,
            checkpoint::LEADER_EPOCH_FILE,
            self.epochs.encode(),
        )
        .await?;
        Ok(())
    }

    /// Periodic work: flush.ms, segment.ms rolls, retention, rebuilding indexes a lookup found
    /// damaged, and the recovery-point checkpoint.
    pub async fn tick(&mut self, now_ms: i64) -> Result<(), StorageError> {
        self.rebuild_damaged_indexes().await?;
        let active = self.segments.last().expect("active segment");
        if active.is_time_to_roll(now_ms, self.config.segment_ms) {
            self.roll(now_ms).await?;
        }
        if let Some(flush_ms) = self.config.flush_ms {
            let due = now_ms.saturating_sub(self.last_flush_ms)
                >= i64::try_from(flush_ms).unwrap_or(i64::MAX);
            if due && self.unflushed_messages > 0 {
                self.sync_segments().await?;
                self.last_flush_ms = now_ms;
            }
        }
        self.apply_retention(now_ms).await?;
        if self.recovery_point != self.checkpointed_recovery_point
            && now_ms.saturating_sub(self.last_checkpoint_ms) >= CHECKPOINT_INTERVAL_MS
        {
            self.write_recovery_checkpoints(now_ms).await?;
        }
        Ok(())
    }

    /// Rebuilds the indexes of every segment a lookup found damaged. Returns how many.
    pub async fn rebuild_damaged_indexes(&mut self) -> Result<usize, StorageError> {
        let interval = self.config.index_interval_bytes;
        let mut rebuilt = 0;
        for segment in &mut self.segments {
            if !segment.index_damaged.get() || segment.index_rebuild_failed {
                continue;
            }
            if !segment.rebuild_indexes(&self.disk, interval).await? {
                // Lookups keep scanning this segment; its log bytes are reported where read.
                tracing::warn!(dir = %self.dir.display(), base = segment.base_offset,
                    "cannot rebuild indexes: the log file does not scan cleanly");
                segment.index_rebuild_failed = true;
                continue;
            }
            tracing::info!(dir = %self.dir.display(), base = segment.base_offset, "indexes rebuilt");
            rebuilt += 1;
        }
        Ok(rebuilt)
    }

    /// Deletes sealed segments past retention.ms (by their max timestamp) or beyond
    /// retention.bytes, oldest first.
    pub async fn apply_retention(&mut self, now_ms: i64) -> Result<usize, StorageError> {
        let mut deleted = 0;
        if self.config.retention_ms >= 0 {
            while self.segments.len() > 1
                && now_ms.saturating_sub(self.segments[0].retention_timestamp())
                    > self.config.retention_ms
            {
                self.delete_oldest_segment().await?;
                deleted += 1;
            }
        }
        if self.config.retention_bytes >= 0 {
            let mut excess = self
                .size_bytes()
                .saturating_sub(self.config.retention_bytes as u64);
            while self.segments.len() > 1 && self.segments[0].size <= excess {
                excess -= self.segments[0].size;
                self.delete_oldest_segment().await?;
                deleted += 1;
            }
        }
        Ok(deleted)
    }

    /// Flushes, writes every checkpoint, trims the active indexes and leaves the clean marker.
    pub async fn close(self) -> Result<(), StorageError> {
        let dir = self.dir.clone();
        let disk = self.close_unmarked().await?;
        let marker = dir.join(checkpoint::CLEAN_SHUTDOWN_FILE);
        let file = disk.open_small(&marker, true).await?;
        file.sync_data().await?;
        disk.sync_dir(&dir).await?;
        Ok(())
    }

    /// `close` without the log's own clean-shutdown marker: the caller marks the whole log
    /// directory clean once every log in it has closed, one marker for all of them as Kafka
    /// keeps it (see `open_in`). A log that took no write since it was opened closes
    /// without touching a file. Gives the disk back.
    pub async fn close_unmarked(mut self) -> Result<D, StorageError> {
        let now_ms = self.last_checkpoint_ms;
        self.segments
            .last_mut()
            .expect("active segment")
            .seal(&self.disk)
            .await?;
        self.sync_segments().await?;
        self.write_recovery_checkpoints(now_ms).await?;
        self.write_offset_checkpoint(checkpoint::LOG_START_OFFSET_FILE, self.log_start_offset)
            .await?;
        Ok(self.disk.clone())
    }

    /// The segments' log files are not opened again once closed: the directory is about to
    /// be renamed, and its paths may come to name another log's files.
    pub fn detach_files(&self) {
        for segment in &self.segments {
            segment.log.detach();
        }
    }

    /// Removes the partition directory and everything in it.
    pub async fn delete(self) -> Result<(), StorageError> {
        for name in self.disk.list_dir(&self.dir).await? {
            self.disk.remove_file(&self.dir.join(name)).await?;
        }
        self.disk.remove_dir(&self.dir).await?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::batch::{validate_batches, BatchBuilder, BatchError};
    use crate::disk::{RealDisk, SimDisk};
    use proptest::prelude::*;
    use std::path::Path;

    fn block_on<F: std::future::Future>(future: F) -> F::Output {
        compio::runtime::Runtime::new()
            .expect("runtime")
            .block_on(future)
    }

    fn small_config() -> LogConfig {
        LogConfig {
            segment_bytes: 600,
            index_interval_bytes: 150,
            segment_index_bytes: 1024,
            retention_ms: -1,
            ..LogConfig::default()
        }
    }

    /// The record timestamps of `batch(count, timestamp, _)`: not in order inside the batch,
    /// with the maximum, `timestamp`, on the second record when there are several.
    fn record_timestamps(count: i64, timestamp: i64) -> Vec<i64> {
        match count {
            1 => vec![timestamp],
            _ => (0..count)
                .map(|i| timestamp - [2, 0, 1][i as usize % 3])
                .collect(),
        }
    }

    /// A batch of `count` records whose max timestamp is `timestamp`.
    fn batch(count: i32, timestamp: i64, payload: u8) -> Vec<u8> {
        let stamps = record_timestamps(i64::from(count), timestamp);
        let value = [payload; 10];
        let records: Vec<(i64, &[u8])> =
            stamps.iter().map(|t| (t - stamps[0], &value[..])).collect();
        BatchBuilder {
            last_offset_delta: count - 1,
            records_count: count,
            base_timestamp: stamps[0],
            max_timestamp: timestamp,
            ..BatchBuilder::default()
        }
        .build(&crate::records::encode_records(&records))
    }

    fn idempotent(producer_id: i64, sequence: i32, count: i32) -> Vec<u8> {
        let records: Vec<(i64, &[u8])> = (0..count).map(|_| (0, &b"idempotent"[..])).collect();
        BatchBuilder {
            producer_id,
            producer_epoch: 0,
            base_sequence: sequence,
            last_offset_delta: count - 1,
            records_count: count,
            ..BatchBuilder::default()
        }
        .build(&crate::records::encode_records(&records))
    }

    async fn read_all<D: Disk>(log: &Log<D>, from: i64, max_bytes: u64) -> Vec<BatchHeader> {
        read_below(log, from, max_bytes, log.log_end_offset()).await
    }

    /// The headers of what `Log::read` returns, read back and validated.
    async fn read_below<D: Disk>(
        log: &Log<D>,
        from: i64,
        max_bytes: u64,
        upper: i64,
    ) -> Vec<BatchHeader> {
        let result = log.read(from, max_bytes, upper).await.unwrap();
        let mut bytes = Vec::new();
        for region in &result.regions {
            bytes.extend(
                region
                    .file
                    .read_at(region.len as usize, region.position)
                    .await
                    .unwrap(),
            );
        }
        assert_eq!(bytes.len() as u64, result.len);
        if bytes.is_empty() {
            return Vec::new();
        }
        validate_batches(&bytes, usize::MAX).expect("reads return whole valid batches")
    }

    /// Appends and returns (base offset, max timestamp, bytes) per batch, as an oracle.
    async fn fill<D: Disk>(log: &mut Log<D>, timestamps: &[i64]) -> Vec<(i64, i64, i64)> {
        let mut oracle = Vec::new();
        for (i, &timestamp) in timestamps.iter().enumerate() {
            let count = (i % 3) as i32 + 1;
            let result = log
                .append(batch(count, timestamp, i as u8), 0, 1_000)
                .await
                .unwrap();
            oracle.push((result.base_offset, result.last_offset, timestamp));
        }
        oracle
    }

    fn check_lookup(
        oracle: &[(i64, i64, i64)],
        log_start: i64,
        timestamp: i64,
        got: Option<(i64, i64)>,
    ) {
        let expected = oracle
            .iter()
            .flat_map(|&(base, last, t)| {
                let stamps = record_timestamps(last - base + 1, t);
                (base..=last).zip(stamps)
            })
            .find(|&(offset, t)| offset >= log_start && t >= timestamp);
        assert_eq!(got, expected, "timestamp {timestamp}");
    }

    async fn open_sim(disk: &SimDisk, config: LogConfig) -> Log<SimDisk> {
        open_sim_in(disk, "/data/t-0", config).await
    }

    /// Where follower logs live in tests that also hold a leader log in `/data/t-0`.
    const FOLLOWER_DIR: &str = "/data/f-0";

    async fn open_sim_in(disk: &SimDisk, dir: &str, config: LogConfig) -> Log<SimDisk> {
        Log::open(disk.clone(), PathBuf::from(dir), config, 1_000)
            .await
            .unwrap()
    }

    /// `batch` as a leader stamps it: at `base_offset`, in leader epoch `epoch`.
    fn stamped(mut batch: Vec<u8>, base_offset: i64, epoch: i32) -> Vec<u8> {
        set_base_offset(&mut batch, base_offset);
        set_partition_leader_epoch(&mut batch, epoch);
        batch
    }

    /// The bytes of what `Log::read` returns from `from` on: whole batches, at most
    /// `max_bytes` but at least one.
    async fn read_bytes<D: Disk>(log: &Log<D>, from: i64, max_bytes: u64) -> Vec<u8> {
        let mut bytes = Vec::new();
        for region in log.read(from, max_bytes, i64::MAX).await.unwrap().regions {
            let read = region.file.read_at(region.len as usize, region.position);
            bytes.extend(read.await.unwrap());
        }
        bytes
    }

    /// Every segment file (`.log`, `.index`, `.timeindex`) and the leader-epoch checkpoint in
    /// `dir`, by name.
    fn segment_files(disk: &SimDisk, dir: &str) -> std::collections::BTreeMap<String, Vec<u8>> {
        disk.files()
            .into_iter()
            .filter(|path| path.parent() == Some(Path::new(dir)))
            .filter_map(|path| {
                let name = path.file_name()?.to_str()?.to_string();
                let kept = [".log", ".index", ".timeindex"]
                    .iter()
                    .any(|suffix| name.ends_with(suffix))
                    || name == checkpoint::LEADER_EPOCH_FILE;
                kept.then(|| (name, disk.contents(&path).unwrap()))
            })
            .collect()
    }

    /// What a follower log shows of itself: its end, size, leader epochs and files.
    type FollowerState = (
        i64,
        u64,
        Vec<(i32, i64)>,
        std::collections::BTreeMap<String, Vec<u8>>,
    );

    fn follower_state(log: &Log<SimDisk>, disk: &SimDisk) -> FollowerState {
        (
            log.log_end_offset(),
            log.size_bytes(),
            log.leader_epochs().to_vec(),
            segment_files(disk, FOLLOWER_DIR),
        )
    }

    /// Offers `input` to the follower log in `FOLLOWER_DIR`, which must refuse it with
    /// `expected` and stay as it was, files and leader epochs included.
    async fn check_follower_refuses(
        log: &mut Log<SimDisk>,
        disk: &SimDisk,
        input: Vec<u8>,
        expected: StorageError,
    ) {
        let before = follower_state(log, disk);
        let got = log.append_as_follower(input, 1_000).await;
        assert_eq!(
            got.map_err(|error| error.to_string()),
            Err(expected.to_string())
        );
        assert_eq!(follower_state(log, disk), before, "{expected}");
    }

    /// Two logs of many segments on a disk that lets two log files be open at once: every
    /// read, append and reopen works as with no budget, and what segments hold open stays
    /// within it.
    #[test]
    fn logs_keep_working_with_fewer_open_files_than_segments() {
        block_on(async {
            let unlimited = SimDisk::new();
            let tight = SimDisk::with_open_files_max(2);
            let timestamps: Vec<i64> = (0..40).map(|i| i * 10).collect();
            let mut expected = open_sim(&unlimited, small_config()).await;
            fill(&mut expected, &timestamps).await;
            let want = read_bytes(&expected, 0, u64::MAX).await;
            let mut logs = Vec::new();
            for dir in ["/data/t-0", "/data/t-1"] {
                let mut log = open_sim_in(&tight, dir, small_config()).await;
                fill(&mut log, &timestamps).await;
                assert!(log.segment_count() > 5, "small segments roll");
                logs.push(log);
            }
            assert!(tight.open_files().open() <= 2);
            // A read holds every segment it spans (its regions) until they are dropped; the
            // sweep passes over held files, so the count goes back once the next one opens.
            for log in &logs {
                assert_eq!(read_bytes(log, 0, u64::MAX).await, want);
            }
            logs[0].read(0, 1, i64::MAX).await.unwrap();
            assert!(tight.open_files().open() <= 2);
            for log in logs {
                log.close().await.unwrap();
            }
            assert_eq!(tight.open_files().open(), 0);
            for dir in ["/data/t-0", "/data/t-1"] {
                let log = open_sim_in(&tight, dir, small_config()).await;
                assert!(tight.open_files().open() <= 2);
                assert_eq!(read_bytes(&log, 0, u64::MAX).await, want);
            }
        });
    }

    #[test]
    fn appends_reads_and_lookups_agree_with_oracle() {
        block_on(async {
            let disk = SimDisk::new();
            let mut log = open_sim(&disk, small_config()).await;
            let timestamps: Vec<i64> = (0..60).map(|i| (i * 37) % 101).collect();
            let oracle = fill(&mut log, &timestamps).await;
            assert!(log.segment_count() > 5, "small segments roll");
            assert_eq!(log.log_end_offset(), oracle.last().unwrap().1 + 1);
            for &(base, last, _) in &oracle {
                for offset in [base, last] {
                    let headers = read_all(&log, offset, 1).await;
                    assert_eq!(headers.len(), 1, "at least one batch");
                    assert_eq!(headers[0].base_offset, base);
                }
            }
            let everything = read_all(&log, 0, u64::MAX).await;
            let bases: Vec<i64> = everything.iter().map(|h| h.base_offset).collect();
            assert_eq!(bases, oracle.iter().map(|o| o.0).collect::<Vec<_>>());
            // Upper bound: only batches wholly below it.
            let upper = oracle[10].0 + 1;
            let bounded = read_below(&log, 0, u64::MAX, upper).await;
            let bases: Vec<i64> = bounded.iter().map(|h| h.base_offset).collect();
            assert_eq!(bases, oracle[..10].iter().map(|o| o.0).collect::<Vec<_>>());
            assert!(log
                .read(log.log_end_offset(), 100, i64::MAX)
                .await
                .unwrap()
                .regions
                .is_empty());
            assert!(matches!(
                log.read(log.log_end_offset() + 1, 100, i64::MAX).await,
                Err(StorageError::OffsetOutOfRange { .. })
            ));
            for timestamp in -1..105 {
                check_lookup(
                    &oracle,
                    0,
                    timestamp,
                    log.offset_for_timestamp(timestamp).await.unwrap(),
                );
            }
            let max = oracle.iter().map(|o| o.2).max().unwrap();
            let (base, last, _) = oracle.iter().find(|o| o.2 == max).unwrap();
            let first_max = if last > base { base + 1 } else { *base };
            assert_eq!(log.max_timestamp_and_offset(), Some((max, first_max)));

            // Clean restart and unclean restart both give the same answers.
            log.close().await.unwrap();
            let log = open_sim(&disk, small_config()).await;
            for timestamp in [0, 50, 100] {
                check_lookup(
                    &oracle,
                    0,
                    timestamp,
                    log.offset_for_timestamp(timestamp).await.unwrap(),
                );
            }
            assert_eq!(read_all(&log, 0, u64::MAX).await.len(), oracle.len());
            drop(log);
            let log = open_sim(&disk, small_config()).await;
            assert_eq!(read_all(&log, 0, u64::MAX).await.len(), oracle.len());
            for timestamp in [0, 50, 100] {
                check_lookup(
                    &oracle,
                    0,
                    timestamp,
                    log.offset_for_timestamp(timestamp).await.unwrap(),
                );
            }
        });
    }

    #[test]
    fn idempotent_producer_state_survives_restart() {
        block_on(async {
            let disk = SimDisk::new();
            let mut log = open_sim(&disk, small_config()).await;
            let first = log.append(idempotent(9, 0, 2), 0, 1).await.unwrap();
            log.append(idempotent(9, 2, 1), 0, 1).await.unwrap();
            let duplicate = log.append(idempotent(9, 0, 2), 0, 1).await;
            assert!(
                matches!(duplicate, Err(StorageError::DuplicateSequence { base_offset }) if base_offset == first.base_offset)
            );
            assert!(matches!(
                log.append(idempotent(9, 7, 1), 0, 1).await,
                Err(StorageError::OutOfOrderSequence { .. })
            ));
            assert_eq!(log.log_end_offset(), 3);
            // Unclean restart: rebuilt from the scan.
            drop(log);
            let mut log = open_sim(&disk, small_config()).await;
            assert!(matches!(
                log.append(idempotent(9, 2, 1), 0, 1).await,
                Err(StorageError::DuplicateSequence { base_offset: 2 })
            ));
            log.append(idempotent(9, 3, 1), 0, 1).await.unwrap();
            // Clean restart: from the snapshot.
            log.close().await.unwrap();
            let mut log = open_sim(&disk, small_config()).await;
            assert!(matches!(
                log.append(idempotent(9, 3, 1), 0, 1).await,
                Err(StorageError::DuplicateSequence { base_offset: 3 })
            ));
            assert_eq!(log.log_end_offset(), 4);
        });
    }

    /// A log closed without its own marker is trusted when the caller says its directory was
    /// closed cleanly, as after `close`; without that, it is recovered. A bit flipped inside
    /// the first batch after the close tells the two apart: only recovery checks that batch
    /// (a trusted open checks the batches after the last index entry) and cuts the log there.
    #[test]
    fn a_directory_closed_cleanly_stands_for_the_logs_own_marker() {
        block_on(async {
            let config = LogConfig {
                segment_bytes: 1 << 20,
                index_interval_bytes: 1,
                ..small_config()
            };
            let dir = PathBuf::from("/data/t-0");
            let open = |disk: &SimDisk, clean_dir: bool| {
                Log::open_in(disk.clone(), dir.clone(), config.clone(), 1_000, clean_dir)
            };
            let disk = SimDisk::new();
            let mut log = open(&disk, false).await.unwrap();
            fill(&mut log, &[1, 2, 3, 4]).await;
            let end = log.log_end_offset();
            log.close_unmarked().await.unwrap();
            let active = SegmentPaths::new(&dir, 0).log;
            disk.flip_bit(&active, BATCH_HEADER_LEN as u64 + 10, 0);

            let log = open(&disk, true).await.unwrap();
            assert_eq!(log.log_end_offset(), end, "trusted as closed cleanly");
            log.close_unmarked().await.unwrap();
            let log = open(&disk, false).await.unwrap();
            assert_eq!(
                log.log_end_offset(),
                0,
                "recovered: cut at the damaged batch"
            );
        });
    }

    #[test]
    fn an_epoch_begun_at_the_end_survives_a_clean_restart_and_its_first_append() {
        block_on(async {
            let disk = SimDisk::new();
            let mut log = open_sim(&disk, small_config()).await;
            fill(&mut log, &[0, 10, 20]).await;
            let end = log.log_end_offset();
            assert!(log.begin_epoch_at_end(7).await.unwrap());
            assert!(
                !log.begin_epoch_at_end(7).await.unwrap(),
                "only a newer epoch"
            );
            assert!(
                !log.begin_epoch_at_end(3).await.unwrap(),
                "only a newer epoch"
            );
            assert_eq!(log.leader_epochs(), [(0, 0), (7, end)]);
            log.close().await.unwrap();
            let mut log = open_sim(&disk, small_config()).await;
            assert_eq!(log.leader_epochs(), [(0, 0), (7, end)]);
            let appended = log.append(batch(2, 30, 9), 7, 1_000).await.unwrap();
            assert_eq!(appended.base_offset, end);
            assert_eq!(log.leader_epochs(), [(0, 0), (7, end)]);
        });
    }

    #[test]
    fn a_lookup_remembered_before_a_truncation_is_not_served_after_it() {
        block_on(async {
            let disk = SimDisk::new();
            let mut log = open_sim(&disk, LogConfig::default()).await;
            for i in 0..4u8 {
                log.append(batch(2, 10 * i64::from(i), i), 0, 1_000)
                    .await
                    .unwrap();
            }
            // Offset 4 is the third batch; asked twice, the second answer is remembered.
            let first = log.read(4, u64::MAX, i64::MAX).await.unwrap();
            let again = log.read(4, u64::MAX, i64::MAX).await.unwrap();
            let two_records = first.first_batch_len;
            assert_eq!(first.regions[0].position, 2 * two_records);
            assert_eq!(again.regions[0].position, first.regions[0].position);
            // Cut back to offset 2 and append larger batches over where it pointed.
            log.truncate_to(2).await.unwrap();
            log.append(batch(5, 50, 9), 0, 1_000).await.unwrap();
            log.append(batch(5, 60, 9), 0, 1_000).await.unwrap();
            let after = log.read(4, u64::MAX, i64::MAX).await.unwrap();
            assert_eq!(
                after.regions[0].position, two_records,
                "the batch of offsets 2..6"
            );
            assert!(after.first_batch_len > two_records);
        });
    }

    #[test]
    fn retention_deletes_exact_segments_and_held_regions_stay_readable() {
        block_on(async {
            let disk = SimDisk::new();
            let mut log = open_sim(&disk, small_config()).await;
            let timestamps: Vec<i64> = (0..30).map(|i| i * 10).collect();
            fill(&mut log, &timestamps).await;
            let held = log.read(0, 1, i64::MAX).await.unwrap();
            // A one-byte limit still reads the first batch, whole, and says how large it is.
            assert!(held.first_batch_len > 0);
            assert_eq!(held.first_batch_len, held.len);
            let more = log.read(0, u64::MAX, i64::MAX).await.unwrap();
            assert_eq!(more.first_batch_len, held.len);
            let segments_before = log.segment_count();
            // Segments whose max timestamp is older than now - retention go; judge by the oracle.
            let mut config = small_config();
            config.retention_ms = 1_000;
            log.set_config(config);
            let now = 1_150;
            let expected: usize = log.segments[..log.segments.len() - 1]
                .iter()
                .take_while(|s| now - s.retention_timestamp() > 1_000)
                .count();
            assert!(expected > 0);
            assert_eq!(log.apply_retention(now).await.unwrap(), expected);
            assert_eq!(log.segment_count(), segments_before - expected);
            assert_eq!(log.log_start_offset(), log.segments[0].base_offset);
            let region = &held.regions[0];
            let bytes = region
                .file
                .read_at(region.len as usize, region.position)
                .await
                .unwrap();
            assert_eq!(
                validate_batches(&bytes, usize::MAX).unwrap()[0].base_offset,
                0
            );
            assert!(matches!(
                log.read(0, 10, i64::MAX).await,
                Err(StorageError::OffsetOutOfRange { .. })
            ));
        });
    }

    /// The active segment's indexes are preallocated, trimmed when a clean close seals it, and
    /// preallocated again when the log is opened.
    #[test]
    fn active_indexes_are_preallocated_again_with_their_first_entries_after_a_clean_close() {
        block_on(async {
            let disk = SimDisk::new();
            let paths = SegmentPaths::new(Path::new("/data/t-0"), 0);
            let lens = || {
                let index = disk.file_len(&paths.index).unwrap();
                (index, disk.file_len(&paths.time_index).unwrap())
            };
            let preallocated = (1024, 1024 / 12 * 12);
            let mut log = open_sim(&disk, small_config()).await;
            assert_eq!(lens(), (0, 0), "created empty");
            fill(&mut log, &[1, 2]).await;
            log.close().await.unwrap();
            let trimmed = lens();
            assert!(trimmed.0 < 1024 && trimmed.1 < 1024, "trimmed: {trimmed:?}");
            // Opened and closed again without a write: nothing is written or synced but
            // the marker.
            let log = open_sim(&disk, small_config()).await;
            assert_eq!(lens(), trimmed);
            let syncs = disk.sync_count();
            log.close_unmarked().await.unwrap();
            assert_eq!(disk.sync_count(), syncs);
            assert_eq!(lens(), trimmed);
            // An entry for every batch, in the same segment.
            let config = LogConfig {
                segment_bytes: 1 << 20,
                index_interval_bytes: 1,
                ..small_config()
            };
            let dir = PathBuf::from("/data/t-0");
            let mut log = Log::open_in(disk.clone(), dir, config, 1_000, true)
                .await
                .unwrap();
            fill(&mut log, &[3, 4]).await;
            log.flush().await.unwrap();
            assert_eq!(log.segment_count(), 1);
            assert_eq!(lens(), preallocated);
        });
    }

    /// Size retention deletes the oldest sealed segments exactly while what is left stays at
    /// or above `retention.bytes` (Kafka's rule), and never the active segment.
    #[test]
    fn size_retention_stops_at_the_exact_byte() {
        block_on(async {
            let disk = SimDisk::new();
            let mut log = open_sim(&disk, small_config()).await;
            fill(&mut log, &(0..40).collect::<Vec<_>>()).await;
            let sizes: Vec<u64> = log.segments.iter().map(|s| s.size).collect();
            assert!(sizes.len() > 4, "{sizes:?}");
            let total: u64 = sizes.iter().sum();
            let apply = |log: &mut Log<SimDisk>, retention_bytes: u64| {
                let mut config = small_config();
                config.retention_bytes = retention_bytes as i64;
                log.set_config(config);
            };
            // One byte short of room for the first two segments: only the first goes.
            apply(&mut log, total - sizes[0] - sizes[1] + 1);
            assert_eq!(log.apply_retention(0).await.unwrap(), 1);
            assert_eq!(log.size_bytes(), total - sizes[0]);
            // Exactly the size without the next two: both go.
            apply(&mut log, total - sizes[0] - sizes[1] - sizes[2]);
            assert_eq!(log.apply_retention(0).await.unwrap(), 2);
            assert_eq!(log.log_start_offset(), log.segments[0].base_offset);
            // Nothing left to keep: every sealed segment goes, the active one stays.
            apply(&mut log, 0);
            assert_eq!(log.apply_retention(0).await.unwrap(), sizes.len() - 4);
            assert_eq!(log.segment_count(), 1);
            assert_eq!(log.size_bytes(), *sizes.last().unwrap());
        });
    }

    #[test]
    fn truncate_and_delete_records() {
        block_on(async {
            let disk = SimDisk::new();
            let mut log = open_sim(&disk, small_config()).await;
            let oracle = fill(&mut log, &(0..30).collect::<Vec<_>>()).await;
            let cut = oracle[20].0;
            log.truncate_to(cut + 1).await.unwrap();
            assert_eq!(log.log_end_offset(), cut);
            assert_eq!(read_all(&log, 0, u64::MAX).await.len(), 20);
            let result = log.append(batch(1, 5, 1), 3, 1).await.unwrap();
            assert_eq!(result.base_offset, cut);
            assert_eq!(log.end_offset_for_epoch(0), Some((0, cut)));
            assert_eq!(log.end_offset_for_epoch(3), Some((3, cut + 1)));
            let start = log.delete_records_before(oracle[13].0 + 1).await.unwrap();
            assert_eq!(start, oracle[13].0 + 1);
            let first = read_all(&log, start, 1).await;
            assert_eq!(first[0].base_offset, oracle[13].0);
            assert!(log.segments[0].next_offset > start);
            drop(log);
            let log = open_sim(&disk, small_config()).await;
            assert_eq!(log.log_start_offset(), start);
            assert_eq!(log.log_end_offset(), cut + 1);
            assert_eq!(log.leader_epochs().last(), Some(&(3, cut)));
            log.delete().await.unwrap();
            assert!(disk.files().is_empty());
        });
    }

    /// A bad CRC is refused whether it is checked before the write (first batch of a leader
    /// epoch) or while the write is in flight; either way the log and its file are unchanged.
    async fn refuses_bad_crcs<D: Disk>(disk: D, dir: PathBuf, log_file: impl Fn() -> u64) {
        let mut log = Log::open(disk, dir, small_config(), 1_000).await.unwrap();
        let mut bad = batch(2, 10, 1);
        let last = bad.len() - 1;
        bad[last] ^= 1;
        for epoch in [0, 0, 1] {
            let before = (
                log.log_end_offset(),
                log.size_bytes(),
                log.leader_epochs().to_vec(),
            );
            let refused = log.append(bad.clone(), epoch, 1_000).await;
            assert!(matches!(
                refused,
                Err(StorageError::Batch(BatchError::CorruptCrc))
            ));
            let after = (
                log.log_end_offset(),
                log.size_bytes(),
                log.leader_epochs().to_vec(),
            );
            assert_eq!(before, after, "epoch {epoch}");
            assert_eq!(log_file(), log.size_bytes(), "the file is cut back");
            let good = log.append(batch(1, 10, 1), epoch, 1_000).await.unwrap();
            assert_eq!(good.base_offset, before.0);
        }
        assert_eq!(read_all(&log, 0, u64::MAX).await.len(), 3);
    }

    #[test]
    fn bad_crcs_are_refused_and_leave_no_trace() {
        block_on(async {
            let disk = SimDisk::new();
            let active = Path::new("/data/t-0/00000000000000000000.log");
            let files = disk.clone();
            let len = move || files.file_len(active).unwrap_or(0);
            refuses_bad_crcs(disk, PathBuf::from("/data/t-0"), len).await;
        });
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("t-0");
        let active = dir.join("00000000000000000000.log");
        let len = move || std::fs::metadata(&active).map_or(0, |m| m.len());
        block_on(refuses_bad_crcs(RealDisk, dir, len));
    }

    #[test]
    fn follower_appends_keep_bytes_offsets_and_epochs() {
        block_on(async {
            let disk = SimDisk::new();
            let mut log = open_sim_in(&disk, FOLLOWER_DIR, small_config()).await;
            let first = [
                stamped(batch(2, 10, 1), 0, 2),
                stamped(batch(1, 30, 2), 2, 2),
                stamped(batch(3, 20, 3), 3, 5),
            ]
            .concat();
            let result = log.append_as_follower(first.clone(), 1_000).await.unwrap();
            let expected = AppendResult {
                base_offset: 0,
                last_offset: 5,
                max_timestamp: 30,
                log_start_offset: 0,
            };
            assert_eq!(result, expected);
            let second = stamped(batch(1, 40, 4), 6, 7);
            let result = log.append_as_follower(second.clone(), 1_000).await.unwrap();
            assert_eq!((result.base_offset, result.last_offset), (6, 6));
            assert_eq!(log.leader_epochs(), &[(2, 0), (5, 3), (7, 6)]);
            let checkpoint = Path::new(FOLLOWER_DIR).join(checkpoint::LEADER_EPOCH_FILE);
            let checkpointed = LeaderEpochCache::decode(&disk.contents(&checkpoint).unwrap());
            assert_eq!(checkpointed.unwrap().entries(), log.leader_epochs());
            let input = [first, second].concat();
            let file = SegmentPaths::new(Path::new(FOLLOWER_DIR), 0).log;
            assert_eq!(disk.contents(&file).unwrap(), input);
            assert_eq!(read_bytes(&log, 0, u64::MAX).await, input);
            // After a crash, the flushed batches and their epochs are recovered as written.
            log.flush().await.unwrap();
            drop(log);
            disk.crash();
            let log = open_sim_in(&disk, FOLLOWER_DIR, small_config()).await;
            assert_eq!(log.log_end_offset(), 7);
            assert_eq!(log.leader_epochs(), &[(2, 0), (5, 3), (7, 6)]);
            assert_eq!(read_bytes(&log, 0, u64::MAX).await, input);
        });
    }

    #[test]
    fn follower_refuses_batches_that_do_not_continue_the_log() {
        block_on(async {
            let disk = SimDisk::new();
            let mut log = open_sim_in(&disk, FOLLOWER_DIR, small_config()).await;
            log.append_as_follower(stamped(batch(3, 1, 1), 0, 1), 1_000)
                .await
                .unwrap();
            let gap = |expected, found| StorageError::NonContiguous { expected, found };
            let one = |base, epoch| stamped(batch(1, 2, 2), base, epoch);
            let two = |base, epoch| stamped(batch(2, 2, 2), base, epoch);
            check_follower_refuses(&mut log, &disk, one(4, 1), gap(3, 4)).await;
            check_follower_refuses(&mut log, &disk, one(2, 1), gap(3, 2)).await;
            check_follower_refuses(&mut log, &disk, one(0, 1), gap(3, 0)).await;
            // The second batch of an input must start where the first ends. A new epoch in the
            // first must not be left behind.
            let input = [two(3, 2), one(6, 2)].concat();
            check_follower_refuses(&mut log, &disk, input, gap(5, 6)).await;
            let input = [two(3, 1), one(4, 1)].concat();
            check_follower_refuses(&mut log, &disk, input, gap(5, 4)).await;
            // A bad CRC anywhere refuses the whole input, with or without a new epoch.
            for epoch in [1, 2] {
                let mut input = [two(3, epoch), one(5, epoch)].concat();
                let last = input.len() - 1;
                input[last] ^= 1;
                let corrupt = StorageError::Batch(BatchError::CorruptCrc);
                check_follower_refuses(&mut log, &disk, input, corrupt).await;
            }
            let input = [two(3, 1), one(5, 2)].concat();
            assert_eq!(
                log.append_as_follower(input, 1_000)
                    .await
                    .unwrap()
                    .last_offset,
                5
            );
            assert_eq!(log.leader_epochs(), &[(1, 0), (2, 5)]);
        });
    }

    #[test]
    fn follower_refuses_epochs_older_than_the_cache_or_going_back() {
        block_on(async {
            let disk = SimDisk::new();
            let mut log = open_sim_in(&disk, FOLLOWER_DIR, small_config()).await;
            let one = |base, epoch| stamped(batch(1, 2, 2), base, epoch);
            let fenced = |epoch, latest| StorageError::FencedLeaderEpoch { epoch, latest };
            // Batches from before leader epochs existed carry -1 and assign nothing.
            log.append_as_follower(one(0, -1), 1_000).await.unwrap();
            assert_eq!(log.leader_epochs(), &[]);
            log.append_as_follower(one(1, 5), 1_000).await.unwrap();
            assert_eq!(log.leader_epochs(), &[(5, 1)]);
            check_follower_refuses(&mut log, &disk, one(2, 4), fenced(4, 5)).await;
            check_follower_refuses(&mut log, &disk, one(2, -1), fenced(-1, 5)).await;
            // Going back inside one input is refused too, and the newer epoch it held is not
            // left in the cache.
            let input = [one(2, 7), one(3, 6)].concat();
            check_follower_refuses(&mut log, &disk, input, fenced(6, 7)).await;
            let input = [one(2, 5), one(3, 8), one(4, 8), one(5, 9)].concat();
            log.append_as_follower(input, 1_000).await.unwrap();
            assert_eq!(log.leader_epochs(), &[(5, 1), (8, 3), (9, 5)]);
        });
    }

    /// A leader's log copied batch by batch, as a follower's fetches bring it, gives the same
    /// segment files, index files and leader-epoch checkpoint, and the same producer state: a
    /// retried batch is then a duplicate on the follower too.
    #[test]
    fn a_copied_leader_log_is_byte_identical() {
        block_on(async {
            let disk = SimDisk::new();
            let mut leader = open_sim(&disk, small_config()).await;
            let mut follower = open_sim_in(&disk, FOLLOWER_DIR, small_config()).await;
            let mut sequence = 0;
            let mut last_idempotent = None;
            for i in 0..45 {
                let epoch = i / 12 * 2;
                let count = i % 3 + 1;
                let bytes = if i % 4 == 0 {
                    let bytes = idempotent(7, sequence, count);
                    sequence += count;
                    bytes
                } else {
                    batch(count, i64::from(i * 7 % 50), i as u8)
                };
                let result = leader.append(bytes.clone(), epoch, 1_000).await.unwrap();
                if i % 4 == 0 {
                    last_idempotent = Some((bytes, epoch, result.base_offset));
                }
            }
            assert!(leader.segment_count() > 4, "the copy crosses rolls");
            while follower.log_end_offset() < leader.log_end_offset() {
                let bytes = read_bytes(&leader, follower.log_end_offset(), 1).await;
                follower.append_as_follower(bytes, 1_000).await.unwrap();
            }
            let compare = |leader: &Log<SimDisk>, follower: &Log<SimDisk>| {
                assert_eq!(
                    segment_files(&disk, FOLLOWER_DIR),
                    segment_files(&disk, "/data/t-0")
                );
                assert_eq!(
                    follower.segment_base_offsets(),
                    leader.segment_base_offsets()
                );
                assert_eq!(follower.leader_epochs(), leader.leader_epochs());
                assert_eq!(follower.producer_states(), leader.producer_states());
            };
            compare(&leader, &follower);
            leader.flush().await.unwrap();
            follower.flush().await.unwrap();
            compare(&leader, &follower);
            let (retried, epoch, base_offset) = last_idempotent.unwrap();
            assert!(matches!(
                follower.append(retried, epoch, 1_000).await,
                Err(StorageError::DuplicateSequence { base_offset: b }) if b == base_offset
            ));
        });
    }

    #[test]
    fn truncate_fully_and_start_at_leaves_an_empty_log_at_the_offset() {
        block_on(async {
            let disk = SimDisk::new();
            let mut log = open_sim_in(&disk, FOLLOWER_DIR, small_config()).await;
            for i in 0..20 {
                let end = log.log_end_offset();
                let bytes = stamped(idempotent(3, i, 1), end, i / 5);
                log.append_as_follower(bytes, 1_000).await.unwrap();
            }
            assert!(log.segment_count() > 1);
            let at = 1_000;
            log.truncate_fully_and_start_at(at).await.unwrap();
            let check = |log: &Log<SimDisk>| {
                assert_eq!(log.segment_base_offsets(), vec![at]);
                assert_eq!(
                    (
                        log.log_start_offset(),
                        log.high_watermark(),
                        log.log_end_offset()
                    ),
                    (at, at, at)
                );
                assert_eq!(log.leader_epochs(), &[]);
                assert!(log.producer_states().is_empty());
                let names: Vec<String> = segment_files(&disk, FOLLOWER_DIR).into_keys().collect();
                let segment = |suffix| format!("{at:020}{suffix}");
                let expected = [
                    segment(".index"),
                    segment(".log"),
                    segment(".timeindex"),
                    checkpoint::LEADER_EPOCH_FILE.to_string(),
                ];
                assert_eq!(names, expected);
            };
            check(&log);
            drop(log);
            disk.crash();
            let mut log = open_sim_in(&disk, FOLLOWER_DIR, small_config()).await;
            check(&log);
            let bytes = stamped(idempotent(3, 90, 2), at, 4);
            let result = log.append_as_follower(bytes, 1_000).await.unwrap();
            assert_eq!((result.base_offset, result.log_start_offset), (at, at));
            assert_eq!(log.leader_epochs(), &[(4, at)]);
            assert!(matches!(
                log.truncate_fully_and_start_at(-1).await,
                Err(StorageError::OffsetOutOfRange { offset: -1, .. })
            ));
        });
    }

    /// Kafka's content checks (codec, record count, record framing) refuse a batch on both
    /// append paths before anything is written; a batch whose CRC fails too is reported as
    /// corrupt, since bytes damaged on the way are for the producer to send again.
    #[test]
    fn both_append_paths_check_batch_contents() {
        block_on(async {
            let disk = SimDisk::new();
            let mut log = open_sim_in(&disk, FOLLOWER_DIR, small_config()).await;
            log.append(batch(2, 1, 1), 0, 1_000).await.unwrap();
            let records = crate::records::encode_records(&[(0, &b"one"[..])]);
            let build = |attributes, count: i32| {
                BatchBuilder {
                    attributes,
                    last_offset_delta: count - 1,
                    records_count: count,
                    ..BatchBuilder::default()
                }
                .build(&records)
            };
            let mut damaged = build(0, 3);
            let last = damaged.len() - 1;
            damaged[last] ^= 1;
            let cases = [
                (
                    build(0, 3),
                    BatchError::InvalidRecords("the record count does not match the records"),
                ),
                (build(6, 1), BatchError::UnsupportedCompression(6)),
                (damaged, BatchError::CorruptCrc),
            ];
            for (input, expected) in cases {
                let before = follower_state(&log, &disk);
                let got = log.append(input.clone(), 0, 1_000).await;
                assert_eq!(
                    got.map_err(|error| error.to_string()),
                    Err(StorageError::Batch(expected.clone()).to_string())
                );
                assert_eq!(follower_state(&log, &disk), before);
                let input = stamped(input, log.log_end_offset(), 0);
                check_follower_refuses(&mut log, &disk, input, expected.into()).await;
            }
            log.append(build(0, 1), 0, 1_000).await.unwrap();
            let input = stamped(build(3, 1), log.log_end_offset(), 0);
            log.append_as_follower(input, 1_000).await.unwrap();
            assert_eq!(log.log_end_offset(), 4);
        });
    }

    /// A checkpoint whose file already holds what would be written is not written again, and
    /// one that changed is: an idle log opened and closed cleanly replaces none of its four
    /// checkpoint files (each replacement costs two syncs), and after later appends and a
    /// clean close, a crash finds them all.
    #[test]
    fn unchanged_checkpoints_are_not_rewritten() {
        block_on(async {
            let disk = SimDisk::new();
            let mut log = open_sim(&disk, small_config()).await;
            log.append(batch(3, 5, 0), 0, 1).await.unwrap();
            log.close().await.unwrap();
            let cycle = |disk: SimDisk| async move {
                let before = disk.sync_count();
                let log = open_sim(&disk, small_config()).await;
                log.close().await.unwrap();
                disk.sync_count() - before
            };
            let idle = cycle(disk.clone()).await;
            // Marker removed (dir), segment and both indexes synced at the close, the marker
            // (file and dir): no checkpoint among them.
            assert!(idle <= 6, "{idle} syncs for an idle open and close");
            let mut log = open_sim(&disk, small_config()).await;
            log.append(batch(2, 6, 0), 0, 1).await.unwrap();
            log.close().await.unwrap();
            disk.crash();
            let log = open_sim(&disk, small_config()).await;
            assert_eq!(log.log_end_offset(), 5);
        });
    }

    #[test]
    fn flush_messages_one_syncs_every_append() {
        block_on(async {
            let disk = SimDisk::new();
            let config = LogConfig {
                flush_messages: Some(1),
                ..small_config()
            };
            let mut log = open_sim(&disk, config).await;
            for i in 0..5 {
                log.append(batch(1, i, 0), 0, 1).await.unwrap();
            }
            disk.crash();
            let log = open_sim(&disk, small_config()).await;
            assert_eq!(log.log_end_offset(), 5);
        });
    }

    #[test]
    fn real_disk_round_trip() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("topic-0");
        block_on(async {
            let mut log = Log::open(RealDisk, dir.clone(), small_config(), 0)
                .await
                .unwrap();
            let oracle = fill(&mut log, &(0..20).collect::<Vec<_>>()).await;
            let result = log.read(0, u64::MAX, i64::MAX).await.unwrap();
            assert!(result.regions.iter().all(|r| r.file.raw_fd().is_some()));
            log.close().await.unwrap();
            let log = Log::open(RealDisk, dir.clone(), small_config(), 0)
                .await
                .unwrap();
            assert_eq!(read_all(&log, 0, u64::MAX).await.len(), oracle.len());
            drop(log);
            let log = Log::open(RealDisk, dir.clone(), small_config(), 0)
                .await
                .unwrap();
            assert_eq!(log.log_end_offset(), oracle.last().unwrap().1 + 1);
            log.delete().await.unwrap();
        });
        assert!(!Path::new(&dir).exists());
    }

    #[derive(Debug, Clone)]
    enum Crash {
        DropUnsynced,
        Truncate(u64),
        FlipBit(u64, u8),
    }

    fn crash_strategy() -> impl Strategy<Value = Crash> {
        prop_oneof![
            Just(Crash::DropUnsynced),
            any::<u64>().prop_map(Crash::Truncate),
            (any::<u64>(), any::<u8>()).prop_map(|(at, bit)| Crash::FlipBit(at, bit)),
        ]
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(200))]
        #[test]
        fn crashes_never_serve_corruption_nor_lose_flushed_data(
            appends in proptest::collection::vec((1i32..4, any::<bool>(), any::<bool>()), 1..40),
            follower in any::<bool>(),
            crash in crash_strategy(),
            delete_before in proptest::option::of(any::<u64>()),
        ) {
            block_on(async {
                let disk = SimDisk::new();
                let mut log = open_sim(&disk, small_config()).await;
                let mut appended = Vec::new();
                let mut flushed_end = 0;
                let mut epoch = 0;
                let mut epochs = LeaderEpochCache::default();
                for (i, &(count, flush, new_epoch)) in appends.iter().enumerate() {
                    epoch += i32::from(new_epoch);
                    // The bytes as they land: a leader stamps them so, a follower gets them so.
                    let bytes = stamped(batch(count, i as i64, i as u8), log.log_end_offset(), epoch);
                    let result = if follower {
                        log.append_as_follower(bytes.clone(), 1).await
                    } else {
                        log.append(bytes.clone(), epoch, 1).await
                    };
                    let result = result.unwrap();
                    epochs.assign(epoch, result.base_offset);
                    appended.push((result.base_offset, bytes));
                    if flush {
                        log.flush().await.unwrap();
                        flushed_end = log.log_end_offset();
                    }
                }
                // DeleteRecords moves the log start, durably, before the crash.
                let deleted_to = match delete_before {
                    Some(at) => {
                        let to = (at % (log.log_end_offset() as u64 + 1)) as i64;
                        log.delete_records_before(to).await.unwrap()
                    }
                    None => 0,
                };
                epochs.truncate_from_start(deleted_to);
                let active = SegmentPaths::new(Path::new("/data/t-0"), log.segments.last().unwrap().base_offset).log;
                drop(log);
                let unsynced = disk.unsynced_from(&active).unwrap();
                let len = disk.file_len(&active).unwrap();
                match crash {
                    Crash::DropUnsynced => disk.crash(),
                    Crash::Truncate(at) => {
                        let span = len - unsynced + 1;
                        disk.truncate_file(&active, unsynced + at % span);
                    }
                    Crash::FlipBit(at, bit) => {
                        if len > unsynced {
                            disk.flip_bit(&active, unsynced + at % (len - unsynced), bit);
                        }
                    }
                }
                let log = open_sim(&disk, small_config()).await;
                let end = log.log_end_offset();
                assert!(end >= flushed_end, "lost flushed data: end {end} < {flushed_end}");
                let start = log.log_start_offset();
                assert_eq!(start, deleted_to.min(end), "the log start survives the crash");
                epochs.truncate_from_end(end);
                epochs.truncate_from_start(start);
                assert_eq!(log.leader_epochs(), epochs.entries(), "leader epochs survive the crash");
                // The batches from the one holding the log start on.
                let appended: Vec<_> = appended
                    .into_iter()
                    .skip_while(|(base, bytes)| {
                        let count = crate::batch::parse_header(bytes).unwrap().last_offset_delta;
                        base + i64::from(count) < start
                    })
                    .collect();
                let headers = read_all(&log, start, u64::MAX).await;
                let mut expected_offset = headers.first().map_or(end, |_| appended[0].0);
                let mut bytes_read = Vec::new();
                for region in log.read(start, u64::MAX, i64::MAX).await.unwrap().regions {
                    bytes_read.extend(region.file.read_at(region.len as usize, region.position).await.unwrap());
                }
                let mut at = 0;
                for (header, (base, original)) in headers.iter().zip(&appended) {
                    assert_eq!(header.base_offset, expected_offset, "dense offsets");
                    assert_eq!(header.base_offset, *base);
                    assert_eq!(&bytes_read[at..at + original.len()], &original[..], "batch bytes intact");
                    at += original.len();
                    expected_offset = header.next_offset();
                }
                assert_eq!(expected_offset, end);
                assert!(headers.len() <= appended.len());
            });
        }
    }
}
