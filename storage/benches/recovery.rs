//! Recovery scan speed: opening a log whose 1 GiB active segment was not closed cleanly, so
//! every batch is read and its CRC32C checked, and the indexes are rebuilt. The segment is warm
//! in the page cache, so this measures the scan, not the disk.

mod support;

use std::time::Duration;

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use sluice_storage::{Log, LogConfig, RealDisk};

const SEGMENT_BYTES: u64 = 1 << 30;
const BATCH_BYTES: usize = 1 << 20;

fn recovery(c: &mut Criterion) {
    let runtime = support::runtime();
    let dir = support::scratch_dir("recovery");
    let log_dir = dir.path().join("recovery-0");
    let config = LogConfig {
        segment_bytes: SEGMENT_BYTES + (16 << 20),
        ..LogConfig::default()
    };
    let records = support::records_per_batch(BATCH_BYTES);
    let size = runtime.block_on(async {
        let mut log = Log::open(RealDisk, log_dir.clone(), config.clone(), 0)
            .await
            .expect("open log");
        let batch = support::batch(records, 0);
        while log.size_bytes() + (batch.len() as u64) <= SEGMENT_BYTES {
            log.append(batch.clone(), 0, 0).await.expect("append");
        }
        // Dropped without close: the next open is unclean.
        log.size_bytes()
    });

    let mut group = c.benchmark_group("recovery");
    group
        .sample_size(10)
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(10))
        .throughput(Throughput::Bytes(size));
    group.bench_function("unclean_open_1GiB_active_segment", |b| {
        b.iter(|| {
            let log = runtime
                .block_on(Log::open(RealDisk, log_dir.clone(), config.clone(), 0))
                .expect("recover");
            assert_eq!(log.size_bytes(), size);
            assert_eq!(log.segment_count(), 1);
            // Dropped without close, so every iteration recovers.
        })
    });
    group.finish();
}

criterion_group!(benches, recovery);
criterion_main!(benches);
