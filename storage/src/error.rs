//! The crate's one error type for operating errors (I/O, malformed input, producer fencing).

use crate::batch::BatchError;

/// Errors a caller of `Log` must handle. Programmer errors are assertions, not variants.
#[derive(Debug, thiserror::Error)]
pub enum StorageError {
    #[error("i/o error: {0}")]
    Io(#[from] std::io::Error),
    #[error("invalid record batch: {0}")]
    Batch(#[from] BatchError),
    #[error("offset {offset} is out of range [{start}, {end}]")]
    OffsetOutOfRange { offset: i64, start: i64, end: i64 },
    /// A replicated batch does not start where the log (or the batch before it) ends; nothing
    /// was appended.
    #[error("batch starts at offset {found}, not at the expected offset {expected}")]
    NonContiguous { expected: i64, found: i64 },
    /// A retried batch that is already in the log; nothing was appended.
    #[error("duplicate sequence; the batch is already at offset {base_offset}")]
    DuplicateSequence { base_offset: i64 },
    #[error("producer {producer_id}: sequence {sequence} does not follow {last_sequence}")]
    OutOfOrderSequence {
        producer_id: i64,
        sequence: i32,
        last_sequence: i32,
    },
    #[error("producer epoch is older than the current one")]
    InvalidProducerEpoch,
    /// The caller's leader epoch is older than one already stamped in this log.
    #[error("leader epoch {epoch} is older than the latest epoch {latest} in the log")]
    FencedLeaderEpoch { epoch: i32, latest: i32 },
    #[error("corrupt log data: {0}")]
    Corrupt(&'static str),
}
