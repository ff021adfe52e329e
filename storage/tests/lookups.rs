//! Offset and timestamp lookups agree with a linear scan over what was appended, across many
//! segments, with per-record timestamps that are not in order inside a batch, compressed and
//! uncompressed batches, a moved log start, and restarts clean and unclean.

use std::io::Write;
use std::path::PathBuf;

use proptest::prelude::*;
use sluice_storage::batch::BatchBuilder;
use sluice_storage::records::encode_records;
use sluice_storage::{validate_batches, DiskFile, Log, LogConfig, SimDisk};

fn block_on<F: std::future::Future>(future: F) -> F::Output {
    compio::runtime::Runtime::new()
        .expect("runtime")
        .block_on(future)
}

fn small_config() -> LogConfig {
    LogConfig {
        segment_bytes: 400,
        index_interval_bytes: 100,
        segment_index_bytes: 1024,
        retention_ms: -1,
        ..LogConfig::default()
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Codec {
    None,
    Gzip,
    Zstd,
}

fn codec_strategy() -> impl Strategy<Value = Codec> {
    prop_oneof![Just(Codec::None), Just(Codec::Gzip), Just(Codec::Zstd)]
}

/// A batch whose records carry these timestamps, its record section encoded with `codec`.
fn batch(timestamps: &[i64], codec: Codec) -> Vec<u8> {
    let value = [3u8; 20];
    let first = timestamps[0];
    let records: Vec<(i64, &[u8])> = timestamps.iter().map(|t| (t - first, &value[..])).collect();
    let plain = encode_records(&records);
    let (attributes, section) = match codec {
        Codec::None => (0, plain),
        Codec::Gzip => {
            let mut encoder = flate2::write::GzEncoder::new(Vec::new(), Default::default());
            encoder.write_all(&plain).unwrap();
            (1, encoder.finish().unwrap())
        }
        Codec::Zstd => (4, zstd::encode_all(&plain[..], 1).unwrap()),
    };
    let count = timestamps.len() as i32;
    BatchBuilder {
        attributes,
        last_offset_delta: count - 1,
        records_count: count,
        base_timestamp: first,
        max_timestamp: *timestamps.iter().max().unwrap(),
        ..BatchBuilder::default()
    }
    .build(&section)
}

/// What was appended: per batch, its base offset, codec and record timestamps.
#[derive(Debug, Default)]
struct Oracle {
    batches: Vec<(i64, Codec, Vec<i64>)>,
}

impl Oracle {
    fn records(&self) -> impl Iterator<Item = (i64, i64)> + '_ {
        self.batches.iter().flat_map(|(base, _, stamps)| {
            stamps
                .iter()
                .enumerate()
                .map(move |(i, &t)| (base + i as i64, t))
        })
    }

    fn offset_for_timestamp(&self, log_start: i64, timestamp: i64) -> Option<(i64, i64)> {
        self.records()
            .find(|&(offset, t)| offset >= log_start && t >= timestamp)
    }

    /// The max timestamp and the offset Sluice reports for it: the first record holding it in
    /// an uncompressed batch, the batch's last offset in a compressed one.
    fn max_timestamp(&self) -> Option<(i64, i64)> {
        let max = self.records().map(|(_, t)| t).max()?;
        let (base, codec, stamps) = self
            .batches
            .iter()
            .find(|(_, _, stamps)| stamps.contains(&max))?;
        let offset = match codec {
            Codec::None => base + stamps.iter().position(|&t| t == max)? as i64,
            _ => base + stamps.len() as i64 - 1,
        };
        Some((max, offset))
    }

    fn batch_holding(&self, offset: i64) -> Option<i64> {
        self.batches
            .iter()
            .find(|(base, _, stamps)| (*base..*base + stamps.len() as i64).contains(&offset))
            .map(|(base, _, _)| *base)
    }
}

async fn open(disk: &SimDisk) -> Log<SimDisk> {
    Log::open(
        disk.clone(),
        PathBuf::from("/data/t-0"),
        small_config(),
        1_000,
    )
    .await
    .unwrap()
}

/// Base offset of the first batch `read(offset, 1)` returns.
async fn first_batch_read(log: &Log<SimDisk>, offset: i64) -> Option<i64> {
    let result = log.read(offset, 1, i64::MAX).await.unwrap();
    let region = result.regions.first()?;
    let bytes = region
        .file
        .read_at(region.len as usize, region.position)
        .await
        .unwrap();
    Some(validate_batches(&bytes, usize::MAX).unwrap()[0].base_offset)
}

async fn check_all(log: &Log<SimDisk>, oracle: &Oracle, probes: &[i64]) {
    let start = log.log_start_offset();
    for &timestamp in probes {
        assert_eq!(
            log.offset_for_timestamp(timestamp).await.unwrap(),
            oracle.offset_for_timestamp(start, timestamp),
            "timestamp {timestamp}, log start {start}"
        );
    }
    for offset in start..log.log_end_offset() {
        assert_eq!(
            first_batch_read(log, offset).await,
            oracle.batch_holding(offset),
            "offset {offset}"
        );
    }
}

proptest! {
    // The default persistence re-runs the seeds in lookups.proptest-regressions first.
    #![proptest_config(ProptestConfig::with_cases(48))]
    #[test]
    fn lookups_agree_with_a_linear_scan(
        batches in proptest::collection::vec(
            (proptest::collection::vec(0i64..500, 1..6), codec_strategy()),
            20..60,
        ),
        delete_fraction in 0.0f64..0.8,
        clean_restart in any::<bool>(),
    ) {
        block_on(async {
            let disk = SimDisk::new();
            let mut log = open(&disk).await;
            let mut oracle = Oracle::default();
            for (stamps, codec) in &batches {
                let result = log.append(batch(stamps, *codec), 0, 1_000).await.unwrap();
                oracle.batches.push((result.base_offset, *codec, stamps.clone()));
            }
            assert!(log.segment_count() >= 4, "the log spans many segments");
            let probes: Vec<i64> = (-1..502).step_by(3).collect();
            check_all(&log, &oracle, &probes).await;
            assert_eq!(log.max_timestamp_and_offset(), oracle.max_timestamp());

            if clean_restart {
                log.close().await.unwrap();
            } else {
                drop(log);
            }
            let mut log = open(&disk).await;
            check_all(&log, &oracle, &probes).await;
            assert_eq!(log.max_timestamp_and_offset(), oracle.max_timestamp());

            // A log start inside a batch: lookups skip the records before it.
            let end = log.log_end_offset();
            let start = (end as f64 * delete_fraction) as i64;
            log.delete_records_before(start).await.unwrap();
            check_all(&log, &oracle, &probes).await;
        });
    }
}

#[test]
fn a_timestamp_inside_a_batch_names_the_record() {
    block_on(async {
        let disk = SimDisk::new();
        let mut log = open(&disk).await;
        for codec in [Codec::None, Codec::Gzip, Codec::Zstd] {
            let base = log
                .append(batch(&[100, 130, 110, 140, 120], codec), 0, 1_000)
                .await
                .unwrap()
                .base_offset;
            assert_eq!(
                log.offset_for_timestamp(125).await.unwrap(),
                Some((base + 1, 130))
            );
            assert_eq!(
                log.offset_for_timestamp(131).await.unwrap(),
                Some((base + 3, 140))
            );
            let (max, offset) = log.max_timestamp_and_offset().unwrap();
            assert_eq!(max, 140);
            let expected = if codec == Codec::None {
                base + 3
            } else {
                base + 4
            };
            assert_eq!(offset, expected, "{codec:?}");
            log.truncate_to(0).await.unwrap();
        }
    });
}

/// A compressed batch whose records do not decompress (appends never decompress, so it is
/// stored as the producer wrote it) is answered at batch level, never with an error.
#[test]
fn malformed_records_are_answered_at_batch_level() {
    block_on(async {
        let disk = SimDisk::new();
        let mut log = open(&disk).await;
        log.append(batch(&[10, 20], Codec::None), 0, 1_000)
            .await
            .unwrap();
        let garbage = BatchBuilder {
            attributes: 1,
            last_offset_delta: 2,
            records_count: 3,
            base_timestamp: 30,
            max_timestamp: 50,
            ..BatchBuilder::default()
        }
        .build(b"\xff\xff\xff\xff\xff\xff not gzip");
        let base = log.append(garbage, 0, 1_000).await.unwrap().base_offset;
        assert_eq!(base, 2);
        assert_eq!(log.offset_for_timestamp(15).await.unwrap(), Some((1, 20)));
        assert_eq!(log.offset_for_timestamp(40).await.unwrap(), Some((2, 50)));
        assert_eq!(log.max_timestamp_and_offset(), Some((50, 4)));
    });
}
