//! One segment: a `.log` file of whole batches starting at `base_offset`, its in-memory indexes
//! and their `.index` / `.timeindex` mirrors. Segment files are named by the base offset in 20
//! digits. Only the last segment of a log (the active one) is appended to; rolling seals it,
//! which trims its index files to their entries.

use std::cell::Cell;
use std::future::Future;
use std::io;
use std::path::{Path, PathBuf};

use bytes::Bytes;

use crate::batch::{self, parse_header, validate_batch, BatchError, BatchHeader, BATCH_HEADER_LEN};
use crate::disk::{Disk, DiskFile};
use crate::error::StorageError;
use crate::files::LogFile;
use crate::index::{OffsetIndex, TimeIndex, OFFSET_ENTRY_LEN, TIME_ENTRY_LEN};
use crate::records::offset_of_max_timestamp;
use std::task::Poll;

pub const LOG_SUFFIX: &str = ".log";
pub const INDEX_SUFFIX: &str = ".index";
pub const TIME_INDEX_SUFFIX: &str = ".timeindex";

/// Bytes read at once when scanning batch headers for a lookup.
const SCAN_CHUNK_BYTES: usize = 16 << 10;
/// Bytes read at once when validating batches during recovery.
const RECOVERY_CHUNK_BYTES: usize = 1 << 20;
/// Index entries an active segment holds in memory before writing them to its index files.
const INDEX_ENTRIES_PENDING_MAX: usize = 128;
/// Appends from this size on check their CRCs while the write is in flight.
const OVERLAP_BYTES_MIN: u64 = 64 << 10;

pub fn segment_name(base_offset: i64, suffix: &str) -> String {
    format!("{base_offset:020}{suffix}")
}

/// The base offset of a `.log` file name, if it is one of ours.
pub fn parse_log_name(name: &str) -> Option<i64> {
    let digits = name.strip_suffix(LOG_SUFFIX)?;
    if digits.len() != 20 || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    digits.parse().ok()
}

/// How a scan over a segment's batches ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ScanEnd {
    /// Every batch up to the end position was visited.
    Complete,
    /// The visitor asked to stop at the batch at this position.
    Stopped(u64),
    /// The bytes at this position are not a valid batch (torn, corrupt, or inconsistent).
    Invalid(u64),
}

/// Visits the batches in `[start, end)` of `file` in order. With `validate`, checks each CRC.
/// The visitor returns `Ok(true)` to continue, `Ok(false)` to stop at this batch, or `Err(())` to
/// declare the batch inconsistent (the scan then ends with `Invalid` at its position).
pub async fn scan_batches<F: DiskFile>(
    file: &F,
    start: u64,
    end: u64,
    validate: bool,
    mut visit: impl FnMut(u64, &BatchHeader) -> Result<bool, ()>,
) -> io::Result<ScanEnd> {
    scan_batch_bytes(file, start, end, validate, |position, header, _| {
        visit(position, header)
    })
    .await
}

/// [`scan_batches`] whose visitor also sees the batch's bytes: the whole batch with `validate`,
/// otherwise at least its header.
pub async fn scan_batch_bytes<F: DiskFile>(
    file: &F,
    start: u64,
    end: u64,
    validate: bool,
    mut visit: impl FnMut(u64, &BatchHeader, &[u8]) -> Result<bool, ()>,
) -> io::Result<ScanEnd> {
    let mut chunk_bytes = if validate {
        RECOVERY_CHUNK_BYTES
    } else {
        SCAN_CHUNK_BYTES
    };
    let mut buffer: Vec<u8> = Vec::new();
    let mut buffer_at = start;
    let mut position = start;
    while position < end {
        let remaining = end - position;
        let offset_in_buffer = (position - buffer_at) as usize;
        let have = buffer.len().saturating_sub(offset_in_buffer);
        if (have as u64) < remaining.min(BATCH_HEADER_LEN as u64) {
            let want = remaining.min(chunk_bytes as u64) as usize;
            buffer = file.read_at(want, position).await?;
            buffer_at = position;
            if (buffer.len() as u64) < remaining.min(BATCH_HEADER_LEN as u64) {
                return Ok(ScanEnd::Invalid(position));
            }
            continue;
        }
        let Ok(header) = parse_header(&buffer[offset_in_buffer..]) else {
            return Ok(ScanEnd::Invalid(position));
        };
        let total = header.total_len() as u64;
        if total > remaining {
            return Ok(ScanEnd::Invalid(position));
        }
        if validate {
            if (have as u64) < total {
                // The batch is longer than what is buffered; `total` is bounded by the file.
                // Later reads are at least this long, so batches of this size are read once.
                chunk_bytes = chunk_bytes.max(total as usize);
                buffer = file
                    .read_at(chunk_bytes.min(remaining as usize), position)
                    .await?;
                buffer_at = position;
                if (buffer.len() as u64) < total {
                    return Ok(ScanEnd::Invalid(position));
                }
            }
            let offset_in_buffer = (position - buffer_at) as usize;
            if validate_batch(&buffer[offset_in_buffer..], usize::MAX).is_err() {
                return Ok(ScanEnd::Invalid(position));
            }
        }
        let offset_in_buffer = (position - buffer_at) as usize;
        match visit(position, &header, &buffer[offset_in_buffer..]) {
            Ok(true) => {}
            Ok(false) => return Ok(ScanEnd::Stopped(position)),
            Err(()) => return Ok(ScanEnd::Invalid(position)),
        }
        position += total;
    }
    Ok(ScanEnd::Complete)
}

/// Index-building state shared by appends and recovery scans, so both produce the same entries.
#[derive(Debug, Clone, Default)]
pub struct IndexBuilder {
    pub bytes_since_entry: u64,
    pub max_timestamp: i64,
    pub offset_of_max_timestamp: i64,
}

pub struct Segment<D: Disk> {
    pub base_offset: i64,
    /// Opened when read or written, closed when the disk's budget of open log files needs
    /// room (`files`).
    pub log: LogFile<D>,
    /// The index files are opened only while they are read or written: the indexes live in
    /// memory, so a segment holds at most one descriptor (its log) whatever its state.
    pub index_path: PathBuf,
    pub time_index_path: PathBuf,
    pub offsets: OffsetIndex,
    pub times: TimeIndex,
    /// Entries already written to the index files.
    pub offsets_written: usize,
    pub times_written: usize,
    pub size: u64,
    pub next_offset: i64,
    pub builder: IndexBuilder,
    /// Whether any batch has been seen (max timestamp is meaningful).
    pub has_batches: bool,
    pub sealed: bool,
    /// Max timestamp of the first batch, which starts the segment.ms clock (as in Kafka).
    pub rolling_timestamp: Option<i64>,
    pub created_ms: i64,
    pub last_modified_ms: i64,
    /// Written since the last fsync.
    pub dirty: bool,
    pub offset_entries_max: usize,
    pub time_entries_max: usize,
    /// A lookup found an index entry that disagrees with the log; lookups of this segment scan
    /// from its start until the indexes are rebuilt.
    pub index_damaged: Cell<bool>,
    /// The last `find_batch` that found a batch: the offset asked for, and where the batch
    /// is. A consumer or follower that has not moved asks for the same offset on every
    /// fetch; this answers it without reading the header again. Appends only add batches
    /// after it; whatever cuts the log back calls `forget_lookups`.
    last_lookup: Cell<Option<(i64, u64, BatchHeader)>>,
    /// The log file did not scan cleanly when the indexes were to be rebuilt; not retried.
    pub index_rebuild_failed: bool,
    /// An active segment preallocates its index files when it first writes entries to them,
    /// and a segment whose files are already exact is sealed without touching them: a
    /// partition that took no index entry since it was opened closes without a write.
    pub index_files: IndexFiles,
}

/// What the index files on disk hold, as far as the segment knows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum IndexFiles {
    /// Not known: the segment has just been opened.
    Unknown,
    /// Exactly the entries written so far, nothing after them (sealed, or loaded so).
    Exact,
    /// Room for every entry the segment may take (an active segment that writes entries).
    Preallocated,
}

pub struct SegmentPaths {
    pub log: PathBuf,
    pub index: PathBuf,
    pub time_index: PathBuf,
}

impl SegmentPaths {
    pub fn new(dir: &Path, base_offset: i64) -> Self {
        Self {
            log: dir.join(segment_name(base_offset, LOG_SUFFIX)),
            index: dir.join(segment_name(base_offset, INDEX_SUFFIX)),
            time_index: dir.join(segment_name(base_offset, TIME_INDEX_SUFFIX)),
        }
    }
}

impl<D: Disk> Segment<D> {
    /// Opens (or creates) the log file of a segment (creating its index files when missing);
    /// the indexes start empty.
    pub async fn open(
        disk: &D,
        dir: &Path,
        base_offset: i64,
        index_bytes: u64,
        now_ms: i64,
    ) -> io::Result<Self> {
        let paths = SegmentPaths::new(dir, base_offset);
        let log = LogFile::new(disk.clone(), paths.log);
        let size = log.open(true).await?.len().await?;
        drop(disk.open_small(&paths.index, true).await?);
        drop(disk.open_small(&paths.time_index, true).await?);
        let index_bytes = usize::try_from(index_bytes).unwrap_or(usize::MAX);
        Ok(Self {
            base_offset,
            log,
            index_path: paths.index,
            time_index_path: paths.time_index,
            offsets: OffsetIndex::default(),
            times: TimeIndex::default(),
            offsets_written: 0,
            times_written: 0,
            size,
            next_offset: base_offset,
            builder: IndexBuilder {
                bytes_since_entry: 0,
                max_timestamp: -1,
                offset_of_max_timestamp: base_offset,
            },
            has_batches: false,
            sealed: false,
            rolling_timestamp: None,
            created_ms: now_ms,
            last_modified_ms: now_ms,
            dirty: false,
            offset_entries_max: (index_bytes / OFFSET_ENTRY_LEN).max(1),
            time_entries_max: (index_bytes / TIME_ENTRY_LEN).max(2),
            index_damaged: Cell::new(false),
            last_lookup: Cell::new(None),
            index_rebuild_failed: false,
            index_files: IndexFiles::Unknown,
        })
    }

    /// Creates a fresh, empty active segment with empty index files (preallocated with
    /// their first entry).
    pub async fn create(
        disk: &D,
        dir: &Path,
        base_offset: i64,
        index_bytes: u64,
        now_ms: i64,
    ) -> io::Result<Self> {
        let mut segment = Self::open(disk, dir, base_offset, index_bytes, now_ms).await?;
        segment.log.get().await?.set_len(0).await?;
        segment.size = 0;
        let (index, time_index) = segment.index_files(disk).await?;
        index.set_len(0).await?;
        time_index.set_len(0).await?;
        segment.index_files = IndexFiles::Exact;
        Ok(segment)
    }

    /// Both index files, opened for one read or write.
    async fn index_files(&self, disk: &D) -> io::Result<(D::File, D::File)> {
        let index = disk.open_small(&self.index_path, true).await?;
        let time_index = disk.open_small(&self.time_index_path, true).await?;
        Ok((index, time_index))
    }

    pub async fn preallocate_indexes(&mut self, disk: &D) -> io::Result<()> {
        let (index, time_index) = self.index_files(disk).await?;
        index
            .set_len((self.offset_entries_max * OFFSET_ENTRY_LEN) as u64)
            .await?;
        time_index
            .set_len((self.time_entries_max * TIME_ENTRY_LEN) as u64)
            .await?;
        self.sealed = false;
        self.index_files = IndexFiles::Preallocated;
        Ok(())
    }

    /// The index files' bytes, as they are on disk.
    pub async fn read_index_files(
        &self,
        disk: &D,
        max_lens: (u64, u64),
    ) -> io::Result<Option<(Vec<u8>, Vec<u8>)>> {
        let (index, time_index) = self.index_files(disk).await?;
        let (index_len, time_len) = (index.len().await?, time_index.len().await?);
        if index_len > max_lens.0 || time_len > max_lens.1 {
            return Ok(None);
        }
        let index_bytes = index.read_at(index_len as usize, 0).await?;
        let time_bytes = time_index.read_at(time_len as usize, 0).await?;
        Ok(Some((index_bytes, time_bytes)))
    }

    fn relative(&self, offset: i64) -> u32 {
        let relative = offset - self.base_offset;
        assert!((0..=i64::from(u32::MAX)).contains(&relative));
        relative as u32
    }

    /// Whether a batch with this max timestamp would set a new segment maximum.
    pub fn raises_max_timestamp(&self, max_timestamp: i64) -> bool {
        !self.has_batches || max_timestamp > self.builder.max_timestamp
    }

    /// Updates indexes for one batch at `position`, exactly as an append would.
    /// `offset_of_max` gives the offset of the record holding the batch's max timestamp; it is
    /// called only when that timestamp is a new segment maximum.
    pub fn index_batch(
        &mut self,
        position: u64,
        header: &BatchHeader,
        interval_bytes: u64,
        offset_of_max: impl FnOnce() -> i64,
    ) {
        debug_assert_eq!(header.base_offset, self.next_offset);
        if !self.has_batches {
            self.rolling_timestamp = Some(header.max_timestamp);
        }
        if self.raises_max_timestamp(header.max_timestamp) {
            self.builder.max_timestamp = header.max_timestamp;
            self.builder.offset_of_max_timestamp = offset_of_max();
        }
        self.has_batches = true;
        if self.builder.bytes_since_entry >= interval_bytes && position > 0 {
            let relative = self.relative(header.last_offset());
            self.offsets.push(relative, position as u32);
            let relative_max = self.relative(self.builder.offset_of_max_timestamp);
            self.times
                .maybe_push(self.builder.max_timestamp, relative_max);
            self.builder.bytes_since_entry = 0;
        }
        self.builder.bytes_since_entry += header.total_len() as u64;
        self.next_offset = header.next_offset();
    }

    /// Index entries added since they were last written.
    pub fn index_entries_pending(&self) -> usize {
        (self.offsets.len() - self.offsets_written).max(self.times.len() - self.times_written)
    }

    /// Writes index entries added since the last call to the index files; an active
    /// segment's files get their preallocation first.
    pub async fn write_new_index_entries(&mut self, disk: &D) -> io::Result<()> {
        if self.index_entries_pending() == 0 {
            return Ok(());
        }
        if !self.sealed && self.index_files != IndexFiles::Preallocated {
            self.preallocate_indexes(disk).await?;
        }
        self.write_entries(disk).await
    }

    /// Writes the pending index entries where they go, whatever the files' length.
    async fn write_entries(&mut self, disk: &D) -> io::Result<()> {
        if self.index_entries_pending() == 0 {
            return Ok(());
        }
        let (index, time_index) = self.index_files(disk).await?;
        if self.offsets.len() > self.offsets_written {
            let bytes = self.offsets.encode_from(self.offsets_written);
            let at = (self.offsets_written * OFFSET_ENTRY_LEN) as u64;
            index.write_at(bytes.into(), at).await?;
            self.offsets_written = self.offsets.len();
        }
        if self.times.len() > self.times_written {
            let bytes = self.times.encode_from(self.times_written);
            let at = (self.times_written * TIME_ENTRY_LEN) as u64;
            time_index.write_at(bytes.into(), at).await?;
            self.times_written = self.times.len();
        }
        Ok(())
    }

    /// Appends framed batches with assigned offsets, checking their CRCs when `check_crcs` is
    /// set. From `OVERLAP_BYTES_MIN` on the CRCs are checked while the write is in flight, on
    /// this thread as a kernel worker copies the bytes; a batch that fails its CRC then cuts the
    /// file back. Smaller appends check first: handing the write to the kernel early costs a
    /// system call, more than checking a few kilobytes.
    pub async fn append(
        &mut self,
        bytes: Bytes,
        headers: &[BatchHeader],
        interval_bytes: u64,
        now_ms: i64,
        check_crcs: bool,
    ) -> Result<(), StorageError> {
        assert!(!self.sealed);
        let len = bytes.len() as u64;
        let check = |bytes: &[u8]| {
            if check_crcs {
                batch::check_crcs(bytes, headers)?;
            }
            Ok::<_, BatchError>(self.max_timestamp_offsets(bytes, headers))
        };
        let file = self.log.get().await?;
        self.log.wrote();
        let checked = if len < OVERLAP_BYTES_MIN {
            let checked = check(&bytes)?;
            file.write_at(bytes, self.size).await?;
            Ok(checked)
        } else {
            let (written, checked) =
                overlap(file.write_at(bytes.clone(), self.size), || check(&bytes)).await;
            written?;
            checked
        };
        let max_offsets = match checked {
            Ok(max_offsets) => max_offsets,
            Err(error) => {
                // Nothing past `size` is ever read; cutting it keeps the file equal to the log.
                file.set_len(self.size).await?;
                return Err(error.into());
            }
        };
        let mut position = self.size;
        for (header, max_offset) in headers.iter().zip(max_offsets) {
            self.index_batch(position, header, interval_bytes, || max_offset);
            position += header.total_len() as u64;
        }
        debug_assert_eq!(position, self.size + len);
        self.size = position;
        self.dirty = true;
        self.last_modified_ms = now_ms;
        // Index files are written in runs, not per append (the log writes a run once
        // `index_run_due`): an active segment's indexes are rebuilt by recovery after a
        // crash, and `sync` and `seal` write what is pending.
        Ok(())
    }

    /// For each batch, the offset of the record holding its max timestamp when that timestamp
    /// raises the segment's maximum (records are walked only then), else its base offset.
    fn max_timestamp_offsets(&self, bytes: &[u8], headers: &[BatchHeader]) -> Vec<i64> {
        let mut max_offsets = Vec::with_capacity(headers.len());
        let mut running_max = self.has_batches.then_some(self.builder.max_timestamp);
        let mut at = 0;
        for header in headers {
            if running_max.is_none_or(|max| header.max_timestamp > max) {
                running_max = Some(header.max_timestamp);
                max_offsets.push(offset_of_max_timestamp(&bytes[at..], header));
            } else {
                max_offsets.push(header.base_offset);
            }
            at += header.total_len();
        }
        debug_assert_eq!(at, bytes.len());
        max_offsets
    }

    /// Whether an append of `len` bytes holding `batch_count` batches up to `last_offset` needs a
    /// new segment first.
    pub fn is_full(
        &self,
        len: u64,
        batch_count: usize,
        last_offset: i64,
        segment_bytes: u64,
    ) -> bool {
        if self.size == 0 {
            return false;
        }
        self.size + len > segment_bytes
            || self.offsets.len() + batch_count > self.offset_entries_max
            // One time entry is kept in reserve for sealing.
            || self.times.len() + batch_count + 1 > self.time_entries_max
            || last_offset - self.base_offset > i64::from(i32::MAX)
    }

    pub fn is_time_to_roll(&self, now_ms: i64, segment_ms: u64) -> bool {
        let Some(started) = self.rolling_timestamp else {
            return false;
        };
        let started = if started < 0 {
            self.created_ms
        } else {
            started
        };
        self.size > 0
            && now_ms.saturating_sub(started) >= i64::try_from(segment_ms).unwrap_or(i64::MAX)
    }

    /// Whether enough index entries are pending for a run to be written.
    pub fn index_run_due(&self) -> bool {
        self.index_entries_pending() >= INDEX_ENTRIES_PENDING_MAX
    }

    /// Stops appends: records the final max timestamp and trims the index files to their entries.
    pub async fn seal(&mut self, disk: &D) -> io::Result<()> {
        if self.has_batches {
            let relative = self.relative(self.builder.offset_of_max_timestamp);
            self.times.maybe_push(self.builder.max_timestamp, relative);
        }
        if self.index_files == IndexFiles::Exact && self.index_entries_pending() == 0 {
            self.sealed = true;
            return Ok(());
        }
        self.write_entries(disk).await?;
        let (index, time_index) = self.index_files(disk).await?;
        index
            .set_len((self.offsets.len() * OFFSET_ENTRY_LEN) as u64)
            .await?;
        time_index
            .set_len((self.times.len() * TIME_ENTRY_LEN) as u64)
            .await?;
        self.sealed = true;
        self.dirty = true;
        self.index_files = IndexFiles::Exact;
        Ok(())
    }

    pub async fn sync(&mut self, disk: &D) -> io::Result<()> {
        if self.dirty {
            self.write_new_index_entries(disk).await?;
            self.log.get().await?.sync_data().await?;
            self.log.synced();
            let (index, time_index) = self.index_files(disk).await?;
            index.sync_data().await?;
            time_index.sync_data().await?;
            self.dirty = false;
        }
        Ok(())
    }

    /// The max timestamp of the segment, or `None` when it holds no batch.
    pub fn max_timestamp(&self) -> Option<(i64, i64)> {
        self.has_batches.then_some((
            self.builder.max_timestamp,
            self.builder.offset_of_max_timestamp,
        ))
    }

    /// The timestamp retention judges the segment by.
    pub fn retention_timestamp(&self) -> i64 {
        match self.max_timestamp() {
            Some((timestamp, _)) if timestamp >= 0 => timestamp,
            _ => self.last_modified_ms,
        }
    }

    /// Position and header of the first batch whose last offset is at or above `offset`.
    pub async fn find_batch(&self, offset: i64) -> io::Result<Option<(u64, BatchHeader)>> {
        if let Some((asked, position, header)) = self.last_lookup.get() {
            if asked == offset && position + header.total_len() as u64 <= self.size {
                return Ok(Some((position, header)));
            }
        }
        let found = self.find_batch_uncached(offset).await;
        if let Ok(Some((position, header))) = &found {
            self.last_lookup.set(Some((offset, *position, *header)));
        }
        found
    }

    /// Drops the remembered lookup: the log is about to be cut back, and a later append
    /// could put another batch where it pointed.
    pub fn forget_lookups(&self) {
        self.last_lookup.set(None);
    }

    async fn find_batch_uncached(&self, offset: i64) -> io::Result<Option<(u64, BatchHeader)>> {
        let entry = if offset <= self.base_offset || self.index_damaged.get() {
            None
        } else {
            let relative = (offset - self.base_offset).min(i64::from(u32::MAX)) as u32;
            self.offsets.entry_at_or_below(relative)
        };
        if let Some(entry) = entry {
            match self.find_batch_from(offset, Some(entry)).await {
                Err(error) if error.kind() == io::ErrorKind::InvalidData => {
                    self.mark_index_damaged("offset index entry does not match its batch")
                }
                found => return found,
            }
        }
        self.find_batch_from(offset, None).await
    }

    /// `find_batch` scanning from an index entry, whose batch must end at the entry's offset, or
    /// from the start of the segment.
    async fn find_batch_from(
        &self,
        offset: i64,
        entry: Option<(u32, u32)>,
    ) -> io::Result<Option<(u64, BatchHeader)>> {
        let start = entry.map_or(0, |(_, position)| u64::from(position));
        let mut expected_last = entry.map(|(relative, _)| self.base_offset + i64::from(relative));
        let mut found = None;
        let file = self.log.get().await?;
        let end = scan_batches(&*file, start, self.size, false, |position, header| {
            if expected_last
                .take()
                .is_some_and(|last| last != header.last_offset())
            {
                return Err(());
            }
            if header.last_offset() >= offset {
                found = Some((position, *header));
                return Ok(false);
            }
            Ok(true)
        })
        .await?;
        if let ScanEnd::Invalid(_) = end {
            return Err(corrupt_header());
        }
        Ok(found)
    }

    /// Notes that an index led a lookup astray; the log rebuilds the indexes on its next tick.
    pub fn mark_index_damaged(&self, why: &'static str) {
        if !self.index_damaged.replace(true) {
            tracing::warn!(
                base = self.base_offset,
                why,
                "index damaged; scanning until rebuilt"
            );
        }
    }

    /// The end of the longest run of whole batches from `start` that fits in `budget` bytes and
    /// ends at or before `hard_end`; at least one batch when `at_least_one`.
    pub async fn region_end(
        &self,
        start: u64,
        budget: u64,
        hard_end: u64,
        at_least_one: bool,
    ) -> io::Result<u64> {
        debug_assert!(start <= hard_end && hard_end <= self.size);
        if hard_end - start <= budget {
            return Ok(hard_end);
        }
        let limit = start + budget;
        let entry = self
            .offsets
            .floor_entry(limit.min(u64::from(u32::MAX)) as u32)
            .filter(|&(_, position)| u64::from(position) > start && !self.index_damaged.get());
        if let Some(entry) = entry {
            match self
                .region_end_from(start, limit, hard_end, at_least_one, Some(entry))
                .await
            {
                Err(error) if error.kind() == io::ErrorKind::InvalidData => {
                    self.mark_index_damaged("offset index entry does not match its batch")
                }
                end => return end,
            }
        }
        self.region_end_from(start, limit, hard_end, at_least_one, None)
            .await
    }

    /// `region_end` scanning from an index entry past `start` (whose batch must end at the
    /// entry's offset) or from `start`.
    async fn region_end_from(
        &self,
        start: u64,
        limit: u64,
        hard_end: u64,
        at_least_one: bool,
        entry: Option<(u32, u32)>,
    ) -> io::Result<u64> {
        let from = entry.map_or(start, |(_, position)| u64::from(position));
        let mut expected_last = entry.map(|(relative, _)| self.base_offset + i64::from(relative));
        let mut end = from;
        let mut first_len = None;
        let file = self.log.get().await?;
        let scan = scan_batches(&*file, from, hard_end, false, |position, header| {
            if expected_last
                .take()
                .is_some_and(|last| last != header.last_offset())
            {
                return Err(());
            }
            let batch_end = position + header.total_len() as u64;
            if first_len.is_none() {
                first_len = Some(batch_end);
            }
            if batch_end > limit {
                return Ok(false);
            }
            end = batch_end;
            Ok(true)
        })
        .await?;
        if let ScanEnd::Invalid(_) = scan {
            return Err(corrupt_header());
        }
        if end == start && at_least_one {
            if let Some(first_end) = first_len {
                end = first_end;
            }
        }
        Ok(end)
    }

    /// Rebuilds both indexes from a validating scan of the whole log file, in memory and on
    /// disk. Returns false, changing nothing, when the log file itself does not scan cleanly.
    pub async fn rebuild_indexes(&mut self, disk: &D, interval_bytes: u64) -> io::Result<bool> {
        let mut batches = Vec::new();
        let mut running_max: Option<i64> = None;
        let log = self.log.get().await?;
        let end = scan_batch_bytes(&*log, 0, self.size, true, |position, header, bytes| {
            let mut max_offset = header.base_offset;
            if running_max.is_none_or(|max| header.max_timestamp > max) {
                running_max = Some(header.max_timestamp);
                max_offset = offset_of_max_timestamp(bytes, header);
            }
            batches.push((position, *header, max_offset));
            Ok(true)
        })
        .await?;
        if end != ScanEnd::Complete {
            return Ok(false);
        }
        self.reset_indexes();
        for (position, header, max_offset) in &batches {
            self.index_batch(*position, header, interval_bytes, || *max_offset);
        }
        let (index, time_index) = self.index_files(disk).await?;
        index.set_len(0).await?;
        time_index.set_len(0).await?;
        drop((index, time_index));
        if self.sealed {
            self.seal(disk).await?;
        } else {
            self.preallocate_indexes(disk).await?;
            self.write_new_index_entries(disk).await?;
        }
        self.dirty = true;
        self.index_damaged.set(false);
        Ok(true)
    }

    /// Forgets the in-memory indexes and everything derived from the batches.
    pub fn reset_indexes(&mut self) {
        self.offsets = OffsetIndex::default();
        self.times = TimeIndex::default();
        self.offsets_written = 0;
        self.times_written = 0;
        self.next_offset = self.base_offset;
        self.builder = IndexBuilder {
            bytes_since_entry: 0,
            max_timestamp: -1,
            offset_of_max_timestamp: self.base_offset,
        };
        self.has_batches = false;
        self.rolling_timestamp = None;
    }
}

/// Runs `work` on this thread while `io` is in flight: `io` is polled once, which queues its
/// operation, the queue is handed to the kernel, and `work` runs before `io` is awaited. Under
/// io_uring a buffered write that cannot finish inline runs on a kernel worker meanwhile.
async fn overlap<T, R>(io: impl Future<Output = T>, work: impl FnOnce() -> R) -> (T, R) {
    let mut io = std::pin::pin!(io);
    let first = std::future::poll_fn(|cx| Poll::Ready(io.as_mut().poll(cx))).await;
    // Outside a compio runtime there is no queue to flush, and nothing is lost by skipping it.
    let _ = compio::runtime::Runtime::try_with_current(|runtime| runtime.flush());
    let result = work();
    let output = match first {
        Poll::Ready(output) => output,
        Poll::Pending => io.await,
    };
    (output, result)
}

fn corrupt_header() -> io::Error {
    io::Error::new(
        io::ErrorKind::InvalidData,
        "corrupt batch header in segment",
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(name: &str, expected: Option<i64>) {
        assert_eq!(parse_log_name(name), expected);
    }

    #[test]
    fn names() {
        assert_eq!(segment_name(42, LOG_SUFFIX), "00000000000000000042.log");
        check("00000000000000000042.log", Some(42));
        check("00000000000000000042.index", None);
        check("42.log", None);
        check("0000000000000000004x.log", None);
    }
}
