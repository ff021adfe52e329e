//! Time- and size-driven upkeep of a log, seen from outside: flush.ms, segment.ms, rolls when an
//! index is full, index files rebuilt when missing or damaged, and retention that never pulls
//! data from under a reader.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use sluice_storage::batch::BatchBuilder;
use sluice_storage::records::encode_records;
use sluice_storage::{validate_batches, Disk, DiskFile, Log, LogConfig, RealDisk, SimDisk};

const DIR: &str = "/data/t-0";

fn block_on<F: std::future::Future>(future: F) -> F::Output {
    compio::runtime::Runtime::new()
        .expect("runtime")
        .block_on(future)
}

fn config() -> LogConfig {
    LogConfig {
        segment_bytes: 700,
        index_interval_bytes: 150,
        segment_index_bytes: 1024,
        retention_ms: -1,
        ..LogConfig::default()
    }
}

/// A batch of `count` records, all stamped `timestamp`.
fn batch(count: usize, timestamp: i64) -> Vec<u8> {
    let value = [9u8; 30];
    let records: Vec<(i64, &[u8])> = (0..count).map(|_| (0, &value[..])).collect();
    BatchBuilder {
        last_offset_delta: count as i32 - 1,
        records_count: count as i32,
        base_timestamp: timestamp,
        max_timestamp: timestamp,
        ..BatchBuilder::default()
    }
    .build(&encode_records(&records))
}

fn file(base: i64, suffix: &str) -> PathBuf {
    Path::new(DIR).join(format!("{base:020}{suffix}"))
}

async fn open_with(disk: &SimDisk, config: LogConfig, now_ms: i64) -> Log<SimDisk> {
    Log::open(disk.clone(), PathBuf::from(DIR), config, now_ms)
        .await
        .unwrap()
}

/// Appends `timestamps.len()` batches of two records; returns (base offset, timestamp) each.
async fn fill<D: Disk>(log: &mut Log<D>, timestamps: &[i64]) -> Vec<(i64, i64)> {
    let mut appended = Vec::new();
    for &timestamp in timestamps {
        let result = log.append(batch(2, timestamp), 0, 1_000).await.unwrap();
        appended.push((result.base_offset, timestamp));
    }
    appended
}

/// Every batch base offset a full read returns.
async fn read_bases<D: Disk>(log: &Log<D>) -> Vec<i64> {
    let result = log
        .read(log.log_start_offset(), u64::MAX, i64::MAX)
        .await
        .unwrap();
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
    if bytes.is_empty() {
        return Vec::new();
    }
    validate_batches(&bytes, usize::MAX)
        .unwrap()
        .iter()
        .map(|h| h.base_offset)
        .collect()
}

#[test]
fn flush_ms_syncs_on_a_tick_once_due() {
    block_on(async {
        let disk = SimDisk::new();
        let flushing = LogConfig {
            flush_ms: Some(500),
            ..config()
        };
        let mut log = open_with(&disk, flushing, 1_000).await;
        log.append(batch(1, 5), 0, 1_000).await.unwrap();
        let active = file(0, ".log");
        let len = disk.file_len(&active).unwrap();
        assert!(disk.unsynced_from(&active).unwrap() < len);
        let syncs = disk.sync_count();
        log.tick(1_499).await.unwrap();
        assert_eq!(disk.sync_count(), syncs, "not due yet");
        log.tick(1_500).await.unwrap();
        assert!(disk.sync_count() > syncs);
        assert_eq!(
            disk.unsynced_from(&active),
            Some(len),
            "the log bytes are durable"
        );
        disk.crash();
        let log = open_with(&disk, config(), 2_000).await;
        assert_eq!(log.log_end_offset(), 1);
    });
}

#[test]
fn flush_ms_unset_never_syncs_on_tick() {
    block_on(async {
        let disk = SimDisk::new();
        let mut log = open_with(&disk, config(), 1_000).await;
        log.append(batch(1, 5), 0, 1_000).await.unwrap();
        log.tick(1_000_000).await.unwrap();
        // The periodic recovery checkpoint syncs its own files, never the segment.
        let active = file(0, ".log");
        assert!(disk.unsynced_from(&active).unwrap() < disk.file_len(&active).unwrap());
    });
}

/// The broker drives `tick` from a timer with the wall clock; a flush then happens within
/// flush.ms of real time.
#[test]
fn flush_ms_on_the_wall_clock() {
    block_on(async {
        let tmp = tempfile::tempdir().unwrap();
        let flushing = LogConfig {
            flush_ms: Some(50),
            ..config()
        };
        let now_ms = || {
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap()
                .as_millis() as i64
        };
        // The same log on the simulator shows the sync; the real disk shows nothing breaks.
        let disk = SimDisk::new();
        let mut sim = open_with(&disk, flushing.clone(), now_ms()).await;
        let mut real = Log::open(RealDisk, tmp.path().join("t-0"), flushing, now_ms())
            .await
            .unwrap();
        sim.append(batch(1, 5), 0, now_ms()).await.unwrap();
        real.append(batch(1, 5), 0, now_ms()).await.unwrap();
        let active = file(0, ".log");
        let len = disk.file_len(&active).unwrap();
        let deadline = Instant::now() + Duration::from_secs(10);
        while disk.unsynced_from(&active) != Some(len) {
            assert!(Instant::now() < deadline, "no flush within 10 s");
            compio::time::sleep(Duration::from_millis(10)).await;
            sim.tick(now_ms()).await.unwrap();
            real.tick(now_ms()).await.unwrap();
        }
        drop(real);
        let real = Log::open(RealDisk, tmp.path().join("t-0"), config(), now_ms())
            .await
            .unwrap();
        assert_eq!(real.log_end_offset(), 1);
    });
}

#[test]
fn segment_ms_rolls_on_tick_and_on_append() {
    block_on(async {
        let disk = SimDisk::new();
        let rolling = LogConfig {
            segment_ms: 1_000,
            segment_bytes: 1 << 20,
            ..config()
        };
        let mut log = open_with(&disk, rolling, 0).await;
        // An empty segment never rolls, however old.
        log.tick(50_000).await.unwrap();
        assert_eq!(log.segment_count(), 1);
        // The clock starts at the first batch's timestamp, as in Kafka.
        log.append(batch(1, 60_000), 0, 60_000).await.unwrap();
        log.tick(60_999).await.unwrap();
        assert_eq!(log.segment_count(), 1);
        log.tick(61_000).await.unwrap();
        assert_eq!(log.segment_base_offsets(), vec![0, 1]);
        log.append(batch(1, 61_100), 0, 61_100).await.unwrap();
        // An append past segment.ms rolls first, then lands in the new segment.
        log.append(batch(1, 62_200), 0, 62_200).await.unwrap();
        assert_eq!(log.segment_base_offsets(), vec![0, 1, 2]);
        assert_eq!(read_bases(&log).await, vec![0, 1, 2]);
        assert!(disk.file_len(&file(0, ".timeindex")).unwrap() > 0);
    });
}

#[test]
fn a_full_index_rolls_the_segment() {
    block_on(async {
        let disk = SimDisk::new();
        // Room for 4 offset entries (32 bytes) and 3 time entries (36 bytes); an entry per batch.
        let tiny_index = LogConfig {
            segment_bytes: 1 << 20,
            segment_index_bytes: 36,
            index_interval_bytes: 1,
            ..config()
        };
        // Constant timestamps: the offset index fills first.
        let mut log = open_with(&disk, tiny_index.clone(), 0).await;
        fill(&mut log, &[7; 20]).await;
        let bases = log.segment_base_offsets();
        assert!(bases.len() >= 4, "rolled on a full offset index: {bases:?}");
        for &base in &bases[..bases.len() - 1] {
            let index_len = disk.file_len(&file(base, ".index")).unwrap();
            assert!(
                index_len > 0 && index_len <= 32,
                "sealed .index is {index_len} bytes"
            );
            assert!(disk.file_len(&file(base, ".log")).unwrap() < 1 << 20);
        }
        assert_eq!(read_bases(&log).await.len(), 20);
        // Rising timestamps: the time index fills first (one entry is kept for sealing).
        let disk = SimDisk::new();
        let mut log = open_with(&disk, tiny_index, 0).await;
        let rising: Vec<i64> = (0..20).map(|i| i * 10).collect();
        fill(&mut log, &rising).await;
        let bases = log.segment_base_offsets();
        assert!(bases.len() >= 6, "rolled on a full time index: {bases:?}");
        for &base in &bases[..bases.len() - 1] {
            let time_len = disk.file_len(&file(base, ".timeindex")).unwrap();
            assert!(
                time_len > 0 && time_len <= 36,
                "sealed .timeindex is {time_len} bytes"
            );
        }
        for (i, timestamp) in rising.iter().enumerate() {
            let found = log.offset_for_timestamp(*timestamp).await.unwrap();
            assert_eq!(found, Some((2 * i as i64, *timestamp)));
        }
    });
}

/// A log of several sealed segments, closed cleanly; returns the batches appended.
async fn closed_log(disk: &SimDisk, config: LogConfig) -> Vec<(i64, i64)> {
    let mut log = open_with(disk, config, 1_000).await;
    let timestamps: Vec<i64> = (0..40).map(|i| 100 + i * 10).collect();
    let appended = fill(&mut log, &timestamps).await;
    assert!(log.segment_count() >= 4);
    log.close().await.unwrap();
    appended
}

async fn check_lookups(log: &Log<SimDisk>, appended: &[(i64, i64)]) {
    let bases: Vec<i64> = appended.iter().map(|a| a.0).collect();
    assert_eq!(read_bases(log).await, bases);
    for &(base, timestamp) in appended {
        for offset in [base, base + 1] {
            let result = log.read(offset, 1, i64::MAX).await.unwrap();
            let region = &result.regions[0];
            let bytes = region
                .file
                .read_at(region.len as usize, region.position)
                .await
                .unwrap();
            assert_eq!(
                validate_batches(&bytes, usize::MAX).unwrap()[0].base_offset,
                base
            );
        }
        assert_eq!(
            log.offset_for_timestamp(timestamp - 5).await.unwrap(),
            Some((base, timestamp))
        );
    }
}

async fn overwrite(disk: &SimDisk, path: &Path, bytes: Vec<u8>) {
    let file = disk.open(path, false).await.unwrap();
    file.set_len(0).await.unwrap();
    file.write_at(bytes.into(), 0).await.unwrap();
    disk.sync_everything();
}

#[test]
fn missing_index_files_are_rebuilt_on_open() {
    block_on(async {
        let disk = SimDisk::new();
        let appended = closed_log(&disk, config()).await;
        let base = appended[0].0;
        let original_index = disk.contents(&file(base, ".index")).unwrap();
        let original_times = disk.contents(&file(base, ".timeindex")).unwrap();
        assert!(!original_index.is_empty() && !original_times.is_empty());
        disk.remove_file(&file(base, ".index")).await.unwrap();
        disk.remove_file(&file(base, ".timeindex")).await.unwrap();
        let log = open_with(&disk, config(), 2_000).await;
        check_lookups(&log, &appended).await;
        assert_eq!(
            disk.contents(&file(base, ".index")).unwrap(),
            original_index
        );
        assert_eq!(
            disk.contents(&file(base, ".timeindex")).unwrap(),
            original_times
        );
    });
}

/// Index files that parse and are monotonic, but point at the wrong places.
#[test]
fn damaged_index_files_that_look_sane_are_rebuilt() {
    block_on(async {
        let disk = SimDisk::new();
        // Ten batches per segment, so each index has several entries and the checks on open
        // (the last offset entry, the last time entry) leave the first entries to the lookups.
        let ten_batches = LogConfig {
            segment_bytes: 1_400,
            ..config()
        };
        let appended = closed_log(&disk, ten_batches).await;
        let bases: Vec<i64> = {
            let log = open_with(&disk, config(), 2_000).await;
            let bases = log.segment_base_offsets();
            log.close().await.unwrap();
            bases
        };
        let (first, second) = (bases[0], bases[1]);
        let index_first = disk.contents(&file(first, ".index")).unwrap();
        let index_second = disk.contents(&file(second, ".index")).unwrap();
        let times_second = disk.contents(&file(second, ".timeindex")).unwrap();
        assert!(index_first.len() >= 24 && index_second.len() >= 24 && times_second.len() >= 36);

        // First segment: every position one byte early (still increasing, all inside the log).
        let mut shifted = index_first.clone();
        for entry in shifted.chunks_exact_mut(8) {
            let position = u32::from_be_bytes(entry[4..8].try_into().unwrap());
            entry[4..8].copy_from_slice(&(position - 1).to_be_bytes());
        }
        overwrite(&disk, &file(first, ".index"), shifted).await;
        // Second segment: only the first entry is wrong, so the check on open passes, and the
        // first time entry names the next batch instead of the one that set its timestamp.
        let mut early = index_second.clone();
        let position = u32::from_be_bytes(early[4..8].try_into().unwrap());
        early[4..8].copy_from_slice(&(position - 3).to_be_bytes());
        overwrite(&disk, &file(second, ".index"), early).await;
        let mut late_times = times_second.clone();
        let relative = u32::from_be_bytes(late_times[8..12].try_into().unwrap());
        late_times[8..12].copy_from_slice(&(relative + 2).to_be_bytes());
        overwrite(&disk, &file(second, ".timeindex"), late_times).await;

        let mut log = open_with(&disk, config(), 3_000).await;
        // The first segment was caught on open and rebuilt there.
        assert_eq!(disk.contents(&file(first, ".index")).unwrap(), index_first);
        // The second is caught by the lookups, which still answer right.
        check_lookups(&log, &appended).await;
        assert_eq!(log.rebuild_damaged_indexes().await.unwrap(), 1);
        assert_eq!(
            disk.contents(&file(second, ".index")).unwrap(),
            index_second
        );
        assert_eq!(
            disk.contents(&file(second, ".timeindex")).unwrap(),
            times_second
        );
        check_lookups(&log, &appended).await;
        assert_eq!(log.rebuild_damaged_indexes().await.unwrap(), 0);
    });
}

/// Retention judged by each segment's newest timestamp, from the outside: the oracle is the
/// timestamps appended to each segment.
#[test]
fn retention_removes_exactly_the_expired_sealed_segments() {
    block_on(async {
        let disk = SimDisk::new();
        let mut log = open_with(&disk, config(), 1_000).await;
        let timestamps: Vec<i64> = (0..40).map(|i| 1_000 + i * 100).collect();
        let appended = fill(&mut log, &timestamps).await;
        let bases = log.segment_base_offsets();
        let segment_max = |i: usize| {
            let end = bases.get(i + 1).copied().unwrap_or(i64::MAX);
            appended
                .iter()
                .filter(|(base, _)| (bases[i]..end).contains(base))
                .map(|&(_, t)| t)
                .max()
                .unwrap()
        };
        let now = 4_000;
        let retention_ms = 1_500;
        let expected = (0..bases.len() - 1)
            .take_while(|&i| now - segment_max(i) > retention_ms)
            .count();
        assert!(expected >= 2 && expected < bases.len() - 1);
        log.set_config(LogConfig {
            retention_ms,
            ..config()
        });
        log.tick(now).await.unwrap();
        assert_eq!(log.segment_base_offsets(), bases[expected..].to_vec());
        assert_eq!(log.log_start_offset(), bases[expected]);
        for &base in &bases[..expected] {
            assert_eq!(disk.file_len(&file(base, ".log")), None);
        }
        // Far in the future everything sealed goes, the active segment never does.
        log.tick(1_000_000).await.unwrap();
        assert_eq!(log.segment_base_offsets(), vec![*bases.last().unwrap()]);
    });
}

/// A region a reader holds stays readable, byte for byte, after retention deletes its segment
/// file from a real file system.
#[test]
fn retention_never_pulls_a_held_region() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("t-0");
    block_on(async {
        let mut log = Log::open(RealDisk, dir.clone(), config(), 1_000)
            .await
            .unwrap();
        let timestamps: Vec<i64> = (0..30).map(|i| 1_000 + i).collect();
        fill(&mut log, &timestamps).await;
        let held = log.read(0, u64::MAX, i64::MAX).await.unwrap();
        let first = &held.regions[0];
        let before = first
            .file
            .read_at(first.len as usize, first.position)
            .await
            .unwrap();
        let first_log = dir.join(format!("{:020}.log", 0));
        assert!(first_log.exists());
        log.set_config(LogConfig {
            retention_ms: 10,
            ..config()
        });
        log.tick(1_000_000).await.unwrap();
        assert_eq!(log.segment_count(), 1);
        assert!(!first_log.exists(), "the segment file is gone");
        for region in &held.regions {
            let bytes = region
                .file
                .read_at(region.len as usize, region.position)
                .await
                .unwrap();
            assert_eq!(bytes.len() as u64, region.len);
            validate_batches(&bytes, usize::MAX).expect("a held region stays whole");
        }
        let after = first
            .file
            .read_at(first.len as usize, first.position)
            .await
            .unwrap();
        assert_eq!(before, after);
    });
}
