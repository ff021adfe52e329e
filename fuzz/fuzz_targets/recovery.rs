//! Storage recovery over arbitrary segment bytes: a log is opened, closed without its
//! clean-shutdown marker, its segment (and, when the first byte says so, its offset index)
//! replaced by the input, and opened again, which scans and truncates what does not hold.
//! No input may panic, and what recovery keeps must read back as whole batches.
#![no_main]

use std::path::{Path, PathBuf};

use bytes::Bytes;
use libfuzzer_sys::fuzz_target;
use sluice_storage::batch::parse_header;
use sluice_storage::{Disk, DiskFile, Log, LogConfig, SimDisk};

const DIR: &str = "/fuzz/t-0";

async fn replace(disk: &SimDisk, path: &Path, bytes: &[u8]) {
    let file = disk.open(path, true).await.expect("sim open");
    file.set_len(0).await.expect("sim truncate");
    file.write_at(Bytes::copy_from_slice(bytes), 0)
        .await
        .expect("sim write");
    file.sync_data().await.expect("sim sync");
}

/// Small index files: the simulated disk holds every preallocated byte in memory.
fn config() -> LogConfig {
    LogConfig {
        segment_index_bytes: 4096,
        ..LogConfig::default()
    }
}

async fn recover(data: &[u8]) {
    let disk = SimDisk::new();
    let dir = PathBuf::from(DIR);
    let log = Log::open(disk.clone(), dir.clone(), config(), 0)
        .await
        .expect("a fresh log opens");
    drop(log);
    let (flags, bytes) = data.split_first().unwrap_or((&0, &[]));
    let (index, segment) = if flags & 1 == 1 {
        bytes.split_at(bytes.len() / 2)
    } else {
        (&[][..], bytes)
    };
    replace(&disk, &dir.join("00000000000000000000.log"), segment).await;
    if flags & 1 == 1 {
        replace(&disk, &dir.join("00000000000000000000.index"), index).await;
    }
    let Ok(log) = Log::open(disk.clone(), dir, config(), 0).await else {
        return;
    };
    let (start, end) = (log.log_start_offset(), log.log_end_offset());
    let Ok(read) = log.read(start, u64::MAX, end).await else {
        return;
    };
    for region in read.regions {
        let len = usize::try_from(region.len).expect("region fits memory");
        let bytes = region
            .file
            .read_at(len, region.position)
            .await
            .expect("a kept region reads back");
        assert_eq!(bytes.len(), len, "a kept region is whole");
        let mut at = 0;
        while at < bytes.len() {
            let header = parse_header(&bytes[at..]).expect("kept batches parse");
            at += header.total_len();
        }
    }
}

thread_local! {
    /// One runtime for every input: setting up an io_uring per input would be most of the work.
    static RUNTIME: compio::runtime::Runtime = compio::runtime::Runtime::new().expect("runtime");
}

fuzz_target!(|data: &[u8]| {
    RUNTIME.with(|runtime| runtime.block_on(recover(data)));
});
