//! Lookup latency in a log of 1,000 segments: `Log::read` of one batch from an offset (binary
//! search over segments, then over the offset index, then a short header scan) and
//! `Log::offset_for_timestamp` (segments by max timestamp, the time index, then the records of
//! one batch). The log is on a real file system, warm in the page cache.

mod support;

use std::time::Duration;

use criterion::{criterion_group, criterion_main, Criterion};
use sluice_storage::{Log, LogConfig, RealDisk};

const SEGMENTS: usize = 1_000;
/// Four batches of 16 KiB (15 records of 1 KiB) per segment: 64 KiB segments, 16 index entries.
const BATCHES_PER_SEGMENT: usize = 4;
const BATCH_BYTES: usize = 16 << 10;

/// A small deterministic generator, so both lookups visit the same spread of targets.
struct Lcg(u64);

impl Lcg {
    fn below(&mut self, bound: i64) -> i64 {
        self.0 = self
            .0
            .wrapping_mul(6_364_136_223_846_793_005)
            .wrapping_add(1_442_695_040_888_963_407);
        ((self.0 >> 33) % bound as u64) as i64
    }
}

fn lookup(c: &mut Criterion) {
    let runtime = support::runtime();
    let dir = support::scratch_dir("lookup");
    let records = support::records_per_batch(BATCH_BYTES);
    let batch_len = support::batch(records, 0).len() as u64;
    let config = LogConfig {
        segment_bytes: batch_len * BATCHES_PER_SEGMENT as u64,
        ..LogConfig::default()
    };
    let base_timestamp = 1_000_000;
    let log = runtime.block_on(async {
        let mut log = Log::open(RealDisk, dir.path().join("lookup-0"), config, 0)
            .await
            .expect("open log");
        for i in 0..SEGMENTS * BATCHES_PER_SEGMENT {
            let timestamp = base_timestamp + (i * records) as i64;
            log.append(support::batch(records, timestamp), 0, 0)
                .await
                .expect("append");
        }
        log
    });
    assert_eq!(log.segment_count(), SEGMENTS);
    let end = log.log_end_offset();

    let mut group = c.benchmark_group("lookup_1000_segments");
    group
        .sample_size(50)
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(5));
    let mut targets = Lcg(7);
    group.bench_function("by_offset", |b| {
        b.iter(|| {
            let offset = targets.below(end);
            let result = runtime
                .block_on(log.read(offset, 1, i64::MAX))
                .expect("read");
            assert_eq!(result.regions.len(), 1);
            result.len
        })
    });
    let mut targets = Lcg(7);
    group.bench_function("by_timestamp", |b| {
        b.iter(|| {
            let offset = targets.below(end);
            let found = runtime
                .block_on(log.offset_for_timestamp(base_timestamp + offset))
                .expect("lookup");
            assert_eq!(found, Some((offset, base_timestamp + offset)));
        })
    });
    group.finish();
    runtime.block_on(log.delete()).expect("delete log");
}

criterion_group!(benches, lookup);
criterion_main!(benches);
