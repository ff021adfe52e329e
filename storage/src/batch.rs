//! RecordBatch v2 (magic 2) header: parsing, validation (framing, magic, CRC32C) and the two
//! in-place rewrites the broker performs (base offset and partition leader epoch).
//!
//! Layout (big-endian): baseOffset i64 @0, batchLength i32 @8, partitionLeaderEpoch i32 @12,
//! magic i8 @16, crc u32 @17, attributes i16 @21, lastOffsetDelta i32 @23, baseTimestamp i64 @27,
//! maxTimestamp i64 @35, producerId i64 @43, producerEpoch i16 @51, baseSequence i32 @53,
//! recordsCount i32 @57, records @61. batchLength counts the bytes after itself. The CRC covers
//! attributes..end, so rewriting the base offset or the leader epoch keeps it valid.

/// Bytes of the fixed RecordBatch v2 header, up to the first record.
pub const BATCH_HEADER_LEN: usize = 61;
/// Bytes before `batchLength`'s counted region: baseOffset (8) + batchLength (4).
pub const LOG_OVERHEAD: usize = 12;
/// The only message format this crate stores.
pub const MAGIC_V2: i8 = 2;

const BASE_OFFSET_AT: usize = 0;
const BATCH_LENGTH_AT: usize = 8;
const LEADER_EPOCH_AT: usize = 12;
const MAGIC_AT: usize = 16;
const CRC_AT: usize = 17;
const ATTRIBUTES_AT: usize = 21;
const LAST_OFFSET_DELTA_AT: usize = 23;
const BASE_TIMESTAMP_AT: usize = 27;
const MAX_TIMESTAMP_AT: usize = 35;
const PRODUCER_ID_AT: usize = 43;
const PRODUCER_EPOCH_AT: usize = 51;
const BASE_SEQUENCE_AT: usize = 53;
const RECORDS_COUNT_AT: usize = 57;

const _: () = assert!(RECORDS_COUNT_AT + 4 == BATCH_HEADER_LEN);
const _: () = assert!(CRC_AT + 4 == ATTRIBUTES_AT);
const _: () = assert!(BATCH_LENGTH_AT + 4 == LOG_OVERHEAD);

/// Attribute bit: the batch belongs to a transaction.
pub const ATTRIBUTE_TRANSACTIONAL: i16 = 0x10;
/// Attribute bit: the batch is a control batch (transaction markers).
pub const ATTRIBUTE_CONTROL: i16 = 0x20;

/// The fixed header of one RecordBatch v2.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BatchHeader {
    pub base_offset: i64,
    pub batch_length: i32,
    pub partition_leader_epoch: i32,
    pub magic: i8,
    pub crc: u32,
    pub attributes: i16,
    pub last_offset_delta: i32,
    pub base_timestamp: i64,
    pub max_timestamp: i64,
    pub producer_id: i64,
    pub producer_epoch: i16,
    pub base_sequence: i32,
    pub records_count: i32,
}

impl BatchHeader {
    /// Bytes the whole batch occupies, header included.
    pub fn total_len(&self) -> usize {
        debug_assert!(self.batch_length >= 0);
        LOG_OVERHEAD + self.batch_length as usize
    }

    pub fn last_offset(&self) -> i64 {
        self.base_offset + i64::from(self.last_offset_delta)
    }

    /// The offset the next batch in the log must start at.
    pub fn next_offset(&self) -> i64 {
        self.last_offset() + 1
    }

    /// How many offsets the batch occupies.
    pub fn offset_count(&self) -> i64 {
        i64::from(self.last_offset_delta) + 1
    }

    /// The sequence number of the batch's last record, wrapping as Kafka does.
    pub fn last_sequence(&self) -> i32 {
        if self.base_sequence < 0 {
            return self.base_sequence;
        }
        let last = i64::from(self.base_sequence) + i64::from(self.last_offset_delta);
        if last > i64::from(i32::MAX) {
            (last - i64::from(i32::MAX) - 1) as i32
        } else {
            last as i32
        }
    }

    pub fn is_transactional(&self) -> bool {
        self.attributes & ATTRIBUTE_TRANSACTIONAL != 0
    }

    pub fn is_control(&self) -> bool {
        self.attributes & ATTRIBUTE_CONTROL != 0
    }
}

/// Why a byte string is not a valid sequence of RecordBatch v2.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BatchError {
    #[error("batch truncated")]
    Truncated,
    #[error("unsupported magic {0}")]
    InvalidMagic(i8),
    #[error("crc32c mismatch")]
    CorruptCrc,
    #[error("no batches")]
    NoBatches,
    #[error("batch of {size} bytes exceeds the maximum of {max}")]
    TooLarge { size: usize, max: usize },
    #[error("batch length field is out of range")]
    BadLength,
    #[error("last offset delta or record count is out of range")]
    BadOffsetDelta,
    /// The records of a batch do not match its header or do not frame (Kafka's
    /// INVALID_RECORD). Only appends look this deep; see [`crate::records::validate_contents`].
    #[error("invalid records: {0}")]
    InvalidRecords(&'static str),
    /// The compression codec in the attributes is none Kafka defines (0 to 4).
    #[error("unsupported compression codec {0}")]
    UnsupportedCompression(u8),
}

/// CRC32C (Castagnoli), the checksum of RecordBatch v2.
pub fn crc32c(bytes: &[u8]) -> u32 {
    // The algorithm's checksum is 32 bits wide; the upper half of the u64 is always zero.
    crc_fast::checksum(crc_fast::CrcAlgorithm::Crc32Iscsi, bytes) as u32
}

fn be_i16(bytes: &[u8], at: usize) -> i16 {
    i16::from_be_bytes([bytes[at], bytes[at + 1]])
}

fn be_i32(bytes: &[u8], at: usize) -> i32 {
    let mut raw = [0u8; 4];
    raw.copy_from_slice(&bytes[at..at + 4]);
    i32::from_be_bytes(raw)
}

fn be_i64(bytes: &[u8], at: usize) -> i64 {
    let mut raw = [0u8; 8];
    raw.copy_from_slice(&bytes[at..at + 8]);
    i64::from_be_bytes(raw)
}

/// Parses the fixed header at the start of `bytes` and checks what the header alone can tell:
/// magic, a batch length at least as long as the header, non-negative offset delta and count.
/// Does not require the batch body to be present and does not check the CRC.
pub fn parse_header(bytes: &[u8]) -> Result<BatchHeader, BatchError> {
    if bytes.len() < BATCH_HEADER_LEN {
        // The magic sits before the end of the header; report a wrong magic first when we can,
        // because a short read of a foreign format is more useful as "not magic 2".
        if bytes.len() > MAGIC_AT && bytes[MAGIC_AT] as i8 != MAGIC_V2 {
            return Err(BatchError::InvalidMagic(bytes[MAGIC_AT] as i8));
        }
        return Err(BatchError::Truncated);
    }
    let header = BatchHeader {
        base_offset: be_i64(bytes, BASE_OFFSET_AT),
        batch_length: be_i32(bytes, BATCH_LENGTH_AT),
        partition_leader_epoch: be_i32(bytes, LEADER_EPOCH_AT),
        magic: bytes[MAGIC_AT] as i8,
        crc: be_i32(bytes, CRC_AT) as u32,
        attributes: be_i16(bytes, ATTRIBUTES_AT),
        last_offset_delta: be_i32(bytes, LAST_OFFSET_DELTA_AT),
        base_timestamp: be_i64(bytes, BASE_TIMESTAMP_AT),
        max_timestamp: be_i64(bytes, MAX_TIMESTAMP_AT),
        producer_id: be_i64(bytes, PRODUCER_ID_AT),
        producer_epoch: be_i16(bytes, PRODUCER_EPOCH_AT),
        base_sequence: be_i32(bytes, BASE_SEQUENCE_AT),
        records_count: be_i32(bytes, RECORDS_COUNT_AT),
    };
    if header.magic != MAGIC_V2 {
        return Err(BatchError::InvalidMagic(header.magic));
    }
    if header.batch_length < (BATCH_HEADER_LEN - LOG_OVERHEAD) as i32 {
        return Err(BatchError::BadLength);
    }
    if header.last_offset_delta < 0 || header.records_count < 0 {
        return Err(BatchError::BadOffsetDelta);
    }
    Ok(header)
}

/// Validates the one batch at the start of `bytes` (framing, magic, CRC) and returns its header.
/// `bytes` may continue past the batch.
pub fn validate_batch(bytes: &[u8], max_batch_bytes: usize) -> Result<BatchHeader, BatchError> {
    let header = frame_batch(bytes, max_batch_bytes)?;
    check_crc(&bytes[..header.total_len()], &header)?;
    Ok(header)
}

/// Parses the header of the batch at the start of `bytes` and checks that the whole batch is
/// present and within `max_batch_bytes`. The CRC is not checked.
fn frame_batch(bytes: &[u8], max_batch_bytes: usize) -> Result<BatchHeader, BatchError> {
    let header = parse_header(bytes)?;
    let size = header.total_len();
    if size > max_batch_bytes {
        return Err(BatchError::TooLarge {
            size,
            max: max_batch_bytes,
        });
    }
    if bytes.len() < size {
        return Err(BatchError::Truncated);
    }
    Ok(header)
}

/// Checks the CRC32C of one whole batch, `batch`, whose header is `header`.
fn check_crc(batch: &[u8], header: &BatchHeader) -> Result<(), BatchError> {
    debug_assert_eq!(batch.len(), header.total_len());
    if crc32c(&batch[ATTRIBUTES_AT..]) != header.crc {
        return Err(BatchError::CorruptCrc);
    }
    Ok(())
}

/// Validates every batch in `bytes` (framing, magic 2, CRC), returns headers. Zero batches is an
/// error, and so are trailing bytes that do not form a whole batch.
pub fn validate_batches(
    bytes: &[u8],
    max_batch_bytes: usize,
) -> Result<Vec<BatchHeader>, BatchError> {
    let headers = frame_batches(bytes, max_batch_bytes)?;
    check_crcs(bytes, &headers)?;
    Ok(headers)
}

/// The framing half of [`validate_batches`]: headers, magic, lengths, no CRC. An append checks
/// the CRCs with [`check_crcs`] while the bytes are being written.
pub fn frame_batches(bytes: &[u8], max_batch_bytes: usize) -> Result<Vec<BatchHeader>, BatchError> {
    let mut headers = Vec::new();
    let mut rest = bytes;
    while !rest.is_empty() {
        let header = frame_batch(rest, max_batch_bytes)?;
        rest = &rest[header.total_len()..];
        headers.push(header);
    }
    if headers.is_empty() {
        return Err(BatchError::NoBatches);
    }
    Ok(headers)
}

/// The CRC half of [`validate_batches`], for `headers` from [`frame_batches`] over `bytes`.
pub fn check_crcs(bytes: &[u8], headers: &[BatchHeader]) -> Result<(), BatchError> {
    let mut at = 0;
    for header in headers {
        let end = at + header.total_len();
        let batch = bytes.get(at..end).ok_or(BatchError::Truncated)?;
        check_crc(batch, header)?;
        at = end;
    }
    Ok(())
}

/// Overwrites the base offset of the batch at the start of `batch`. The CRC does not cover it.
pub fn set_base_offset(batch: &mut [u8], base_offset: i64) {
    assert!(batch.len() >= BATCH_HEADER_LEN);
    batch[BASE_OFFSET_AT..BASE_OFFSET_AT + 8].copy_from_slice(&base_offset.to_be_bytes());
}

/// Overwrites the partition leader epoch of the batch at the start of `batch`. The CRC does not
/// cover it.
pub fn set_partition_leader_epoch(batch: &mut [u8], epoch: i32) {
    assert!(batch.len() >= BATCH_HEADER_LEN);
    batch[LEADER_EPOCH_AT..LEADER_EPOCH_AT + 4].copy_from_slice(&epoch.to_be_bytes());
}

/// The batch whose header is `batch`'s (its first [`BATCH_HEADER_LEN`] bytes) with these
/// attributes and this record section: its length and CRC made to match.
pub fn with_records(batch: &[u8], attributes: i16, records: &[u8]) -> Result<Vec<u8>, BatchError> {
    let header = batch.get(..BATCH_HEADER_LEN).ok_or(BatchError::Truncated)?;
    let total = BATCH_HEADER_LEN + records.len();
    let batch_length = i32::try_from(total - LOG_OVERHEAD).map_err(|_| BatchError::BadLength)?;
    let mut out = Vec::with_capacity(total);
    out.extend_from_slice(header);
    out.extend_from_slice(records);
    out[BATCH_LENGTH_AT..BATCH_LENGTH_AT + 4].copy_from_slice(&batch_length.to_be_bytes());
    out[ATTRIBUTES_AT..ATTRIBUTES_AT + 2].copy_from_slice(&attributes.to_be_bytes());
    let crc = crc32c(&out[ATTRIBUTES_AT..]);
    out[CRC_AT..CRC_AT + 4].copy_from_slice(&crc.to_be_bytes());
    Ok(out)
}

/// Fields for building a batch in tests and tools; records are opaque bytes here.
#[derive(Debug, Clone)]
pub struct BatchBuilder {
    pub base_offset: i64,
    pub partition_leader_epoch: i32,
    pub attributes: i16,
    pub last_offset_delta: i32,
    pub base_timestamp: i64,
    pub max_timestamp: i64,
    pub producer_id: i64,
    pub producer_epoch: i16,
    pub base_sequence: i32,
    pub records_count: i32,
}

impl Default for BatchBuilder {
    fn default() -> Self {
        Self {
            base_offset: 0,
            partition_leader_epoch: -1,
            attributes: 0,
            last_offset_delta: 0,
            base_timestamp: 0,
            max_timestamp: 0,
            producer_id: -1,
            producer_epoch: -1,
            base_sequence: -1,
            records_count: 1,
        }
    }
}

impl BatchBuilder {
    /// Encodes a batch whose record section is `records` verbatim, with a correct CRC.
    pub fn build(&self, records: &[u8]) -> Vec<u8> {
        let total = BATCH_HEADER_LEN + records.len();
        let batch_length = i32::try_from(total - LOG_OVERHEAD).expect("batch fits in i32");
        let mut out = Vec::with_capacity(total);
        out.extend_from_slice(&self.base_offset.to_be_bytes());
        out.extend_from_slice(&batch_length.to_be_bytes());
        out.extend_from_slice(&self.partition_leader_epoch.to_be_bytes());
        out.push(MAGIC_V2 as u8);
        out.extend_from_slice(&[0; 4]);
        out.extend_from_slice(&self.attributes.to_be_bytes());
        out.extend_from_slice(&self.last_offset_delta.to_be_bytes());
        out.extend_from_slice(&self.base_timestamp.to_be_bytes());
        out.extend_from_slice(&self.max_timestamp.to_be_bytes());
        out.extend_from_slice(&self.producer_id.to_be_bytes());
        out.extend_from_slice(&self.producer_epoch.to_be_bytes());
        out.extend_from_slice(&self.base_sequence.to_be_bytes());
        out.extend_from_slice(&self.records_count.to_be_bytes());
        debug_assert_eq!(out.len(), BATCH_HEADER_LEN);
        out.extend_from_slice(records);
        let crc = crc32c(&out[ATTRIBUTES_AT..]);
        out[CRC_AT..CRC_AT + 4].copy_from_slice(&crc.to_be_bytes());
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn batch(count: i32, records: &[u8]) -> Vec<u8> {
        BatchBuilder {
            last_offset_delta: count - 1,
            records_count: count,
            base_timestamp: 1_000,
            max_timestamp: 1_005,
            ..BatchBuilder::default()
        }
        .build(records)
    }

    fn check(input: &[u8], expected: Result<usize, BatchError>) {
        let got = validate_batches(input, 1 << 20).map(|headers| headers.len());
        assert_eq!(got, expected);
    }

    #[test]
    fn valid_batches_parse() {
        let one = batch(3, b"abcdef");
        check(&one, Ok(1));
        let mut two = one.clone();
        two.extend_from_slice(&batch(1, b""));
        check(&two, Ok(2));
        let header = validate_batches(&one, 1 << 20).unwrap()[0];
        assert_eq!(header.last_offset_delta, 2);
        assert_eq!(header.records_count, 3);
        assert_eq!(header.max_timestamp, 1_005);
        assert_eq!(header.total_len(), one.len());
        assert_eq!(header.next_offset(), 3);
    }

    #[test]
    fn malformed_batches_fail() {
        check(&[], Err(BatchError::NoBatches));
        let one = batch(1, b"xyz");
        check(&one[..one.len() - 1], Err(BatchError::Truncated));
        check(&one[..30], Err(BatchError::Truncated));
        let mut bad_magic = one.clone();
        bad_magic[MAGIC_AT] = 1;
        check(&bad_magic, Err(BatchError::InvalidMagic(1)));
        let mut bad_crc = one.clone();
        let last = bad_crc.len() - 1;
        bad_crc[last] ^= 1;
        check(&bad_crc, Err(BatchError::CorruptCrc));
        let mut bad_len = one.clone();
        bad_len[BATCH_LENGTH_AT..BATCH_LENGTH_AT + 4].copy_from_slice(&10i32.to_be_bytes());
        check(&bad_len, Err(BatchError::BadLength));
        let mut trailing = one.clone();
        trailing.push(0);
        check(&trailing, Err(BatchError::Truncated));
        assert_eq!(
            validate_batches(&one, 10),
            Err(BatchError::TooLarge {
                size: one.len(),
                max: 10
            })
        );
    }

    #[test]
    fn rewrites_keep_crc_valid() {
        let mut one = batch(2, b"payload");
        set_base_offset(&mut one, 42);
        set_partition_leader_epoch(&mut one, 7);
        let header = validate_batches(&one, 1 << 20).unwrap()[0];
        assert_eq!(header.base_offset, 42);
        assert_eq!(header.partition_leader_epoch, 7);
        assert_eq!(header.last_offset(), 43);
    }

    #[test]
    fn last_sequence_wraps() {
        let header = |base_sequence, delta| {
            let bytes = BatchBuilder {
                base_sequence,
                last_offset_delta: delta,
                ..BatchBuilder::default()
            }
            .build(b"");
            parse_header(&bytes).unwrap()
        };
        assert_eq!(header(5, 4).last_sequence(), 9);
        assert_eq!(header(i32::MAX, 1).last_sequence(), 0);
        assert_eq!(header(-1, 3).last_sequence(), -1);
    }

    #[test]
    fn crc_matches_the_reference_at_large_sizes() {
        let bytes: Vec<u8> = (0..(3u32 << 20) + 7)
            .map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8)
            .collect();
        for len in [64, 255, 4096, 65_537, 1 << 20, bytes.len()] {
            assert_eq!(
                crc32c(&bytes[..len]),
                ::crc32c::crc32c(&bytes[..len]),
                "{len}"
            );
            assert_eq!(
                crc32c(&bytes[3..len]),
                ::crc32c::crc32c(&bytes[3..len]),
                "{len}"
            );
        }
    }

    proptest! {
        #[test]
        fn crc_matches_the_reference(bytes in proptest::collection::vec(any::<u8>(), 0..5000)) {
            prop_assert_eq!(crc32c(&bytes), ::crc32c::crc32c(&bytes));
        }

        #[test]
        fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..300)) {
            let _ = validate_batches(&bytes, 1 << 20);
            let _ = parse_header(&bytes);
        }

        #[test]
        fn mutated_batches_never_panic(
            records in proptest::collection::vec(any::<u8>(), 0..64),
            at in 0usize..200,
            value in any::<u8>(),
        ) {
            let original = batch(1, &records);
            let at = at % original.len();
            let mut bytes = original.clone();
            bytes[at] = value;
            let result = validate_batches(&bytes, 1 << 20);
            // Everything from the magic on is covered by the magic check or the CRC, and CRC32C
            // detects every single-byte change.
            if at >= MAGIC_AT && original[at] != value {
                prop_assert!(result.is_err());
            }
        }
    }
}
