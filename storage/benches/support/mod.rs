//! What the storage benchmarks share: batches of 1 KiB records, a runtime, a scratch
//! directory on the same file system as the build (under the target directory), CPU time
//! and medians.

#![allow(dead_code)]

use std::path::PathBuf;
use std::time::Duration;

use sluice_storage::batch::BatchBuilder;
use sluice_storage::records::encode_records;

pub const RECORD_BYTES: usize = 1024;

/// A RecordBatch v2 of `count` records with 1 KiB values, timestamps from `timestamp` on, one
/// millisecond apart.
pub fn batch(count: usize, timestamp: i64) -> Vec<u8> {
    let value = vec![0x5a; RECORD_BYTES];
    let records: Vec<(i64, &[u8])> = (0..count).map(|i| (i as i64, &value[..])).collect();
    BatchBuilder {
        last_offset_delta: count as i32 - 1,
        records_count: count as i32,
        base_timestamp: timestamp,
        max_timestamp: timestamp + count as i64 - 1,
        ..BatchBuilder::default()
    }
    .build(&encode_records(&records))
}

/// How many 1 KiB records fit a batch of at most `batch_bytes`.
pub fn records_per_batch(batch_bytes: usize) -> usize {
    let mut count = batch_bytes / RECORD_BYTES;
    while count > 1 && batch(count, 0).len() > batch_bytes {
        count -= 1;
    }
    count
}

pub fn runtime() -> compio::runtime::Runtime {
    compio::runtime::Runtime::new().expect("compio runtime")
}

/// A fresh directory under the workspace's target directory, removed when dropped.
pub fn scratch_dir(name: &str) -> tempfile::TempDir {
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../target"));
    let parent = target.join("storage-bench");
    std::fs::create_dir_all(&parent).expect("bench directory");
    tempfile::Builder::new()
        .prefix(name)
        .tempdir_in(parent)
        .expect("bench scratch directory")
}

/// CPU time (user and system) so far: of every thread this process has had, io_uring's
/// kernel workers and exited threads included (`libc::RUSAGE_SELF`), or of the calling
/// thread alone (`libc::RUSAGE_THREAD`).
pub fn cpu(who: libc::c_int) -> Duration {
    let mut usage = std::mem::MaybeUninit::<libc::rusage>::zeroed();
    // SAFETY: getrusage writes a whole `rusage` into the pointer it is given.
    let usage = unsafe {
        assert_eq!(libc::getrusage(who, usage.as_mut_ptr()), 0);
        usage.assume_init()
    };
    let micros = |time: libc::timeval| time.tv_sec as u64 * 1_000_000 + time.tv_usec as u64;
    Duration::from_micros(micros(usage.ru_utime) + micros(usage.ru_stime))
}

pub fn median(mut samples: Vec<Duration>) -> Duration {
    samples.sort_unstable();
    samples[samples.len() / 2]
}
