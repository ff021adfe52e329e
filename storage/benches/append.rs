//! Append throughput of `Log<RealDisk>` against a raw sequential write of the same bytes, in the
//! same batch sizes, to a file in the same directory. Both go through io_uring (the raw side
//! with one `write_at` per batch on a plain file); both land in the page cache, without fsync.
//! The log's overhead is what the ratio shows: validation (CRC32C), offset assignment, index
//! upkeep and its bookkeeping.

mod support;

use std::path::Path;
use std::time::{Duration, Instant};

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use sluice_storage::{Disk, DiskFile, Log, LogConfig, RealDisk};

/// Bytes appended per iteration.
const BYTES_PER_ITERATION: usize = 64 << 20;

/// The batches of one iteration: `BYTES_PER_ITERATION` timed, plus one appended first.
fn batches(batch_bytes: usize) -> Vec<Vec<u8>> {
    let count = support::records_per_batch(batch_bytes);
    let one = support::batch(count, 1_000);
    vec![one; BYTES_PER_ITERATION / batch_bytes + 1]
}

async fn append_to_log(dir: &Path, mut batches: Vec<Vec<u8>>) -> Duration {
    let log_dir = dir.join("append-0");
    let mut log = Log::open(RealDisk, log_dir, LogConfig::default(), 1_000)
        .await
        .expect("open log");
    // The first append in a leader epoch writes the leader-epoch checkpoint (two fsyncs), a
    // once-per-epoch cost that is not append throughput.
    let first = batches.pop().expect("batches");
    log.append(first, 0, 1_000).await.expect("append");
    let started = Instant::now();
    for batch in batches {
        log.append(batch, 0, 1_000).await.expect("append");
    }
    let elapsed = started.elapsed();
    log.delete().await.expect("delete log");
    elapsed
}

async fn write_raw(dir: &Path, mut batches: Vec<Vec<u8>>) -> Duration {
    let path = dir.join("raw.log");
    let file = RealDisk.open(&path, true).await.expect("open raw file");
    // As on the log side, one batch goes before the clock starts.
    let first = batches.pop().expect("batches");
    let mut position = first.len() as u64;
    file.write_at(first.into(), 0).await.expect("write");
    let started = Instant::now();
    for batch in batches {
        let len = batch.len() as u64;
        file.write_at(batch.into(), position).await.expect("write");
        position += len;
    }
    let elapsed = started.elapsed();
    drop(file);
    RealDisk.remove_file(&path).await.expect("remove raw file");
    elapsed
}

fn append(c: &mut Criterion) {
    let runtime = support::runtime();
    let dir = support::scratch_dir("append");
    let mut group = c.benchmark_group("append");
    group
        .sample_size(10)
        .warm_up_time(Duration::from_secs(2))
        .measurement_time(Duration::from_secs(10));
    for (label, batch_bytes) in [("16KiB", 16 << 10), ("1MiB", 1 << 20)] {
        let template = batches(batch_bytes);
        let bytes: usize = template.iter().skip(1).map(Vec::len).sum();
        group.throughput(Throughput::Bytes(bytes as u64));
        group.bench_function(BenchmarkId::new("raw", label), |b| {
            b.iter_custom(|iterations| {
                (0..iterations)
                    .map(|_| runtime.block_on(write_raw(dir.path(), template.clone())))
                    .sum()
            })
        });
        group.bench_function(BenchmarkId::new("log", label), |b| {
            b.iter_custom(|iterations| {
                (0..iterations)
                    .map(|_| runtime.block_on(append_to_log(dir.path(), template.clone())))
                    .sum()
            })
        });
    }
    group.finish();
}

criterion_group!(benches, append);
criterion_main!(benches);
