//! Append throughput of `Log<RealDisk>` against a raw sequential write of the same bytes, in the
//! same batch sizes, to a file in the same directory. Both go through io_uring (the raw side
//! with one `write_at` per batch on a plain file); both land in the page cache, without fsync.
//! The log's overhead is what the ratio shows: validation (CRC32C), offset assignment, index
//! upkeep and its bookkeeping.
//!
//! Criterion measures each side on its own (`append/raw/..`, `append/log/..`), with batches
//! built before the clock starts; `side_by_side` then alternates the two iteration by
//! iteration, which drift on a shared machine cannot tilt, and prints median wall and CPU
//! times and their ratios, for those prebuilt batches and for batches copied just before each
//! write, as the broker hands over a batch it has just received.

mod support;

use std::path::Path;
use std::time::{Duration, Instant};

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use sluice_storage::{Disk, DiskFile, Log, LogConfig, RealDisk};

/// Bytes appended per iteration.
const BYTES_PER_ITERATION: usize = 64 << 20;

/// One batch of about `batch_bytes`, and how many of them make an iteration: the timed
/// `BYTES_PER_ITERATION` plus one appended first.
fn batch_and_count(batch_bytes: usize) -> (Vec<u8>, usize) {
    let records = support::records_per_batch(batch_bytes);
    (
        support::batch(records, 1_000),
        BYTES_PER_ITERATION / batch_bytes + 1,
    )
}

/// Where an iteration's batches come from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Source {
    /// All built before the clock starts, so they are cold in the cache when written.
    Prebuilt,
    /// Each copied from one batch just before it is written, on both sides, as the broker's
    /// produce path copies a batch out of the request it received: warm in the cache.
    Received,
}

/// The batches of one iteration, in the order they are written.
fn feed(batch: &[u8], count: usize, source: Source) -> impl Iterator<Item = Vec<u8>> + '_ {
    let mut prebuilt = (source == Source::Prebuilt)
        .then(|| vec![batch.to_vec(); count])
        .map(Vec::into_iter);
    let mut left = count;
    std::iter::from_fn(move || match prebuilt.as_mut() {
        Some(batches) => batches.next(),
        None => (left > 0).then(|| {
            left -= 1;
            batch.to_vec()
        }),
    })
}

/// Wall time and CPU time (all threads of the process) of the timed part of an iteration.
#[derive(Clone, Copy)]
struct Timed {
    wall: Duration,
    cpu: Duration,
}

async fn append_to_log(dir: &Path, mut batches: impl Iterator<Item = Vec<u8>>) -> Timed {
    let log_dir = dir.join("append-0");
    let mut log = Log::open(RealDisk, log_dir, LogConfig::default(), 1_000)
        .await
        .expect("open log");
    // The first append in a leader epoch writes the leader-epoch checkpoint (two fsyncs), a
    // once-per-epoch cost that is not append throughput.
    let first = batches.next().expect("batches");
    log.append(first, 0, 1_000).await.expect("append");
    let cpu = support::cpu(libc::RUSAGE_SELF);
    let started = Instant::now();
    for batch in batches {
        log.append(batch, 0, 1_000).await.expect("append");
    }
    let elapsed = Timed {
        wall: started.elapsed(),
        cpu: support::cpu(libc::RUSAGE_SELF) - cpu,
    };
    log.delete().await.expect("delete log");
    elapsed
}

async fn write_raw(dir: &Path, mut batches: impl Iterator<Item = Vec<u8>>) -> Timed {
    let path = dir.join("raw.log");
    let file = RealDisk.open(&path, true).await.expect("open raw file");
    // As on the log side, one batch goes before the clock starts.
    let first = batches.next().expect("batches");
    let mut position = first.len() as u64;
    file.write_at(first.into(), 0).await.expect("write");
    let cpu = support::cpu(libc::RUSAGE_SELF);
    let started = Instant::now();
    for batch in batches {
        let len = batch.len() as u64;
        file.write_at(batch.into(), position).await.expect("write");
        position += len;
    }
    let elapsed = Timed {
        wall: started.elapsed(),
        cpu: support::cpu(libc::RUSAGE_SELF) - cpu,
    };
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
        let (batch, count) = batch_and_count(batch_bytes);
        let bytes = batch.len() * (count - 1);
        group.throughput(Throughput::Bytes(bytes as u64));
        group.bench_function(BenchmarkId::new("raw", label), |b| {
            b.iter_custom(|iterations| {
                (0..iterations)
                    .map(|_| {
                        let batches = feed(&batch, count, Source::Prebuilt);
                        runtime.block_on(write_raw(dir.path(), batches)).wall
                    })
                    .sum()
            })
        });
        group.bench_function(BenchmarkId::new("log", label), |b| {
            b.iter_custom(|iterations| {
                (0..iterations)
                    .map(|_| {
                        let batches = feed(&batch, count, Source::Prebuilt);
                        runtime.block_on(append_to_log(dir.path(), batches)).wall
                    })
                    .sum()
            })
        });
    }
    group.finish();
}

/// The side-by-side figure: raw and log alternate, iteration by iteration, so that the load
/// other processes put on a shared machine falls on both alike. Prints the median wall time
/// and the median CPU time (all threads, io_uring's kernel workers included) of each, and their
/// ratios (raw / log), for prebuilt (cold) and just-received (warm) batches.
fn side_by_side(_: &mut Criterion) {
    const ROUNDS: usize = 21;
    let runtime = support::runtime();
    let dir = support::scratch_dir("side-by-side");
    for source in [Source::Prebuilt, Source::Received] {
        for (label, batch_bytes) in [("16KiB", 16 << 10), ("1MiB", 1 << 20)] {
            let (batch, count) = batch_and_count(batch_bytes);
            let mut wall = [Vec::new(), Vec::new()];
            let mut cpu = [Vec::new(), Vec::new()];
            for _ in 0..ROUNDS {
                for side in 0..2 {
                    let batches = feed(&batch, count, source);
                    let timed = if side == 0 {
                        runtime.block_on(write_raw(dir.path(), batches))
                    } else {
                        runtime.block_on(append_to_log(dir.path(), batches))
                    };
                    wall[side].push(timed.wall);
                    cpu[side].push(timed.cpu);
                }
            }
            let [raw_wall, log_wall] = wall.map(support::median);
            let [raw_cpu, log_cpu] = cpu.map(support::median);
            println!(
                "append/side_by_side/{source:?}/{label}: wall median raw {raw_wall:.2?} \
                 log {log_wall:.2?} ratio {:.3}; CPU median raw {raw_cpu:.2?} \
                 log {log_cpu:.2?} ratio {:.3}; {ROUNDS} rounds",
                raw_wall.as_secs_f64() / log_wall.as_secs_f64(),
                raw_cpu.as_secs_f64() / log_cpu.as_secs_f64(),
            );
        }
    }
}

criterion_group!(benches, append, side_by_side);
criterion_main!(benches);
