//! Partition logs in Kafka's on-disk format: RecordBatch v2 framing, segments with sparse offset and
//! time indexes, atomic checkpoints, crash recovery, retention and idempotent-producer state.
//!
//! This crate knows nothing of sockets or Kafka API keys. It is generic over [`disk::Disk`] so the
//! same `Log` runs on real files (`RealDisk`, io_uring through compio) and on an in-memory
//! simulator with crash injection (`SimDisk`).
//!
//! Which file operations go where:
//! - Through io_uring (compio ops): open/create (`openat`), `write_at`, `read_at`, `fsync`
//!   (`sync_data` on files and on directories opened read-only), `ftruncate` (`set_len`; compio
//!   falls back to its blocking pool on kernels older than 6.9), `unlink`, `rename`, `mkdir`,
//!   `statx` (file length).
//! - Through compio's blocking pool (`compio::runtime::spawn_blocking`): directory listing
//!   (`read_dir`), which io_uring cannot do. It runs only when a log is opened or deleted.
//! - Never `std::fs` on a reactor thread.

pub mod batch;
pub mod checkpoint;
pub mod disk;
pub mod epoch;
pub mod error;
pub mod files;
pub mod index;
pub mod log;
pub mod producer;
pub mod records;
mod segment;

pub use batch::{validate_batches, BatchError, BatchHeader, BATCH_HEADER_LEN};
pub use disk::{Disk, DiskFile, RealDisk, RealFile, SimDisk, SimFile};
pub use error::StorageError;
pub use files::OpenFiles;
pub use log::{AppendResult, FileRegion, Log, LogConfig, ReadResult};
