//! Record batches on both sides of the broker: the producer's batches, built once per record
//! count with kafka-protocol's encoder and restamped for every send, and the consumer's
//! counter, which walks fetched bytes by RecordBatch v2 headers without decoding records.
//!
//! Every batch carries its send time for end-to-end latency: in microseconds since the Unix
//! epoch in the first 8 bytes of its first record's value when the batch is uncompressed and
//! values are at least 8 bytes long, and otherwise only in the batch timestamp, in
//! milliseconds (a compressed batch would have to be compressed again to change a value).

use std::collections::HashMap;
use std::error::Error;

use bytes::{Bytes, BytesMut};
use kafka_protocol::records::{
    Compression, Record, RecordBatchEncoder, RecordEncodeOptions, TimestampType,
    NO_PARTITION_LEADER_EPOCH, NO_PRODUCER_EPOCH, NO_PRODUCER_ID,
};

/// RecordBatch v2 header layout (Kafka's DefaultRecordBatch), as byte offsets into a batch.
const BASE_OFFSET_OFFSET: usize = 0;
const LENGTH_OFFSET: usize = 8;
const MAGIC_OFFSET: usize = 16;
const CRC_OFFSET: usize = 17;
const ATTRIBUTES_OFFSET: usize = 21;
const LAST_OFFSET_DELTA_OFFSET: usize = 23;
const FIRST_TIMESTAMP_OFFSET: usize = 27;
const MAX_TIMESTAMP_OFFSET: usize = 35;
const RECORDS_COUNT_OFFSET: usize = 57;
pub const BATCH_HEADER_LEN: usize = 61;
/// Bytes that precede what the length field counts: the base offset and the length itself.
const LOG_OVERHEAD: usize = LENGTH_OFFSET + 4;
const MAGIC_V2: i8 = 2;

const _: () = assert!(BASE_OFFSET_OFFSET + 8 == LENGTH_OFFSET);
const _: () = assert!(MAGIC_OFFSET + 1 == CRC_OFFSET && CRC_OFFSET + 4 == ATTRIBUTES_OFFSET);
const _: () = assert!(FIRST_TIMESTAMP_OFFSET + 8 == MAX_TIMESTAMP_OFFSET);
const _: () = assert!(RECORDS_COUNT_OFFSET + 4 == BATCH_HEADER_LEN);

/// The most records one batch may hold; the count is a signed 32-bit field.
pub const RECORDS_PER_BATCH_MAX: usize = i32::MAX as usize;

#[derive(Debug, thiserror::Error)]
pub enum BatchError {
    #[error("a batch of {records} records does not encode: {source}")]
    Encode {
        records: usize,
        #[source]
        source: Box<dyn Error + Send + Sync>,
    },
    #[error("fetched batch at byte {position} has length {length}, shorter than a header")]
    Length { position: usize, length: i32 },
    #[error("fetched batch at byte {position} has magic {magic}, not 2")]
    Magic { position: usize, magic: i8 },
    #[error("fetched batch at byte {position} claims {count} records")]
    Count { position: usize, count: i32 },
}

/// How many bytes a varint (zigzag, as Kafka's records use) takes for `value`.
pub fn varint_len(value: i64) -> usize {
    let zigzag = ((value << 1) ^ (value >> 63)) as u64;
    let bits = 64 - zigzag.leading_zeros() as usize;
    bits.div_ceil(7).max(1)
}

/// The length of a send stamp at the start of a value.
pub const STAMP_LEN: usize = 8;
/// Compression codec bits of a batch's attributes.
const COMPRESSION_MASK: i16 = 0x7;

/// The encoded size of one record as this module builds them: a key of `key_len` bytes (or
/// none), no headers, and the batch's timestamp, so the timestamp delta is zero.
pub fn record_len(offset_delta: usize, key_len: Option<usize>, value_len: usize) -> usize {
    let key = key_len.map_or(varint_len(-1), |len| varint_len(len as i64) + len);
    let body = 1 // attributes
        + varint_len(0) // timestamp delta
        + varint_len(offset_delta as i64)
        + key
        + varint_len(value_len as i64)
        + value_len
        + varint_len(0); // header count
    varint_len(body as i64) + body
}

/// How many records of `message_size` (with keys of `key_len`) fit an uncompressed batch of
/// at most `batch_size` bytes, as Kafka's batch.size counts them. Always at least one, as in
/// Kafka, where a record larger than batch.size goes out in a batch of its own.
pub fn records_per_batch(batch_size: usize, key_len: Option<usize>, message_size: usize) -> usize {
    let mut total = BATCH_HEADER_LEN + record_len(0, key_len, message_size);
    let mut records = 1;
    while records < RECORDS_PER_BATCH_MAX {
        let next = record_len(records, key_len, message_size);
        if total + next > batch_size {
            break;
        }
        total += next;
        records += 1;
    }
    records
}

/// The uncompressed size of a batch of `records` records of `message_size`.
pub fn batch_len(records: usize, key_len: Option<usize>, message_size: usize) -> usize {
    BATCH_HEADER_LEN
        + (0..records)
            .map(|delta| record_len(delta, key_len, message_size))
            .sum::<usize>()
}

/// Message values that read like text: words drawn at random (xorshift) from a small
/// vocabulary, with spaces. Every value differs, yet words repeat as in logs and JSON, so
/// each codec finds what it would in real traffic: LZ matches for lz4 and snappy, and
/// entropy coding on top for gzip and zstd.
pub fn payload(len: usize, seed: u64) -> Bytes {
    const WORDS: [&[u8]; 32] = [
        b"the",
        b"broker",
        b"partition",
        b"offset",
        b"record",
        b"batch",
        b"of",
        b"and",
        b"topic",
        b"leader",
        b"replica",
        b"to",
        b"fetch",
        b"produce",
        b"in",
        b"log",
        b"segment",
        b"index",
        b"timestamp",
        b"key",
        b"value",
        b"a",
        b"is",
        b"consumer",
        b"group",
        b"commit",
        b"{\"id\":",
        b"\"ts\":",
        b"true",
        b"false",
        b"null",
        b"},",
    ];
    let mut state = seed | 1;
    let mut out = Vec::with_capacity(len + 16);
    while out.len() < len {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        out.extend_from_slice(WORDS[(state % WORDS.len() as u64) as usize]);
        // A number now and then, as real messages carry ids and counts.
        if state & 0x700 == 0 {
            out.extend_from_slice((state >> 40).to_string().as_bytes());
        }
        out.push(b' ');
    }
    out.truncate(len);
    Bytes::from(out)
}

/// Builds batches of `message_size` records. Encoding (and compressing) a batch costs more
/// than sending it, and would make the tool measure itself, so each distinct record count is
/// encoded once; every send then copies the template with a fresh timestamp and CRC.
pub struct BatchBuilder {
    message_size: usize,
    compression: Compression,
    /// Record i takes key i modulo their number; none means null keys.
    keys: Vec<Bytes>,
    /// One value per record slot, sliced without copying into each record.
    values: Bytes,
    records_max: usize,
    /// Encoded batches by record count, with where the first value starts if it can hold a
    /// send stamp.
    templates: HashMap<usize, (Vec<u8>, Option<usize>)>,
}

impl BatchBuilder {
    #[cfg(test)]
    pub fn new(
        message_size: usize,
        records_max: usize,
        compression: Compression,
        seed: u64,
        keys: Vec<Bytes>,
    ) -> Self {
        assert!(records_max >= 1);
        let values = payload(message_size * records_max, seed);
        Self::with_values(message_size, records_max, compression, values, keys)
    }

    /// As `new`, with values made by `payload` beforehand, so builders for many partitions
    /// can share one copy.
    pub fn with_values(
        message_size: usize,
        records_max: usize,
        compression: Compression,
        values: Bytes,
        keys: Vec<Bytes>,
    ) -> Self {
        assert!(records_max >= 1);
        assert!(values.len() >= message_size * records_max);
        Self {
            message_size,
            compression,
            keys,
            values,
            records_max,
            templates: HashMap::new(),
        }
    }

    /// A batch of `records` records stamped with its send time, `sent_unix_us`, ready to
    /// produce.
    pub fn batch(&mut self, records: usize, sent_unix_us: u64) -> Result<Bytes, BatchError> {
        assert!((1..=self.records_max).contains(&records));
        let (template, stamp_at) = match self.templates.entry(records) {
            std::collections::hash_map::Entry::Occupied(entry) => entry.into_mut(),
            std::collections::hash_map::Entry::Vacant(entry) => {
                let batch = encode(
                    &self.values,
                    &self.keys,
                    self.message_size,
                    records,
                    self.compression,
                )?;
                let stamp_at = first_value(&batch)
                    .filter(|value| value.len >= STAMP_LEN)
                    .map(|value| value.start);
                entry.insert((batch, stamp_at))
            }
        };
        if let Some(at) = *stamp_at {
            template[at..at + STAMP_LEN].copy_from_slice(&sent_unix_us.to_be_bytes());
        }
        let timestamp_ms = i64::try_from(sent_unix_us / 1000).unwrap_or(i64::MAX);
        restamp(template, timestamp_ms);
        Ok(Bytes::copy_from_slice(template))
    }
}

fn encode(
    values: &Bytes,
    keys: &[Bytes],
    message_size: usize,
    count: usize,
    compression: Compression,
) -> Result<Vec<u8>, BatchError> {
    let records: Vec<Record> = (0..count)
        .map(|i| Record {
            transactional: false,
            control: false,
            partition_leader_epoch: NO_PARTITION_LEADER_EPOCH,
            producer_id: NO_PRODUCER_ID,
            producer_epoch: NO_PRODUCER_EPOCH,
            timestamp_type: TimestampType::Creation,
            offset: i as i64,
            // The encoder starts a new batch wherever offset minus sequence changes, and
            // takes the base sequence from the first record; this keeps one batch with base
            // sequence -1, as a non-idempotent producer sends.
            sequence: i as i32 - 1,
            timestamp: 0,
            key: (!keys.is_empty()).then(|| keys[i % keys.len()].clone()),
            value: Some(values.slice(i * message_size..(i + 1) * message_size)),
            headers: Default::default(),
            delete_horizon: false,
        })
        .collect();
    let options = RecordEncodeOptions {
        version: 2,
        compression,
    };
    let mut buf = BytesMut::new();
    RecordBatchEncoder::encode(&mut buf, &records, &options).map_err(|e| BatchError::Encode {
        records: count,
        source: e.into(),
    })?;
    let batch = buf.to_vec();
    debug_assert_eq!(read_i32(&batch, RECORDS_COUNT_OFFSET), Some(count as i32));
    debug_assert_eq!(
        read_i32(&batch, LENGTH_OFFSET).map(|len| len as usize + LOG_OVERHEAD),
        Some(batch.len()),
        "the encoder made more than one batch"
    );
    Ok(batch)
}

/// Sets both batch timestamps (every record has delta zero) and the CRC32C, which covers
/// everything from the attributes to the end.
pub fn restamp(batch: &mut [u8], timestamp_ms: i64) {
    assert!(batch.len() >= BATCH_HEADER_LEN);
    let stamp = timestamp_ms.to_be_bytes();
    batch[FIRST_TIMESTAMP_OFFSET..FIRST_TIMESTAMP_OFFSET + 8].copy_from_slice(&stamp);
    batch[MAX_TIMESTAMP_OFFSET..MAX_TIMESTAMP_OFFSET + 8].copy_from_slice(&stamp);
    let crc = crc32c::crc32c(&batch[ATTRIBUTES_OFFSET..]);
    batch[CRC_OFFSET..CRC_OFFSET + 4].copy_from_slice(&crc.to_be_bytes());
}

/// Where a batch's first record value lies, if the batch is uncompressed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ValueAt {
    pub start: usize,
    pub len: usize,
}

/// Finds the first record's value in an uncompressed batch by walking its varints, each read
/// checked against the bytes there are.
pub fn first_value(batch: &[u8]) -> Option<ValueAt> {
    let attributes = i16::from_be_bytes(
        batch
            .get(ATTRIBUTES_OFFSET..ATTRIBUTES_OFFSET + 2)?
            .try_into()
            .ok()?,
    );
    if attributes & COMPRESSION_MASK != 0 || read_i32(batch, RECORDS_COUNT_OFFSET)? < 1 {
        return None;
    }
    let mut at = BATCH_HEADER_LEN;
    let _record_len = read_varint(batch, &mut at)?;
    at += 1; // attributes
    let _timestamp_delta = read_varint(batch, &mut at)?;
    let _offset_delta = read_varint(batch, &mut at)?;
    let key_len = read_varint(batch, &mut at)?;
    if key_len > 0 {
        at = at.checked_add(usize::try_from(key_len).ok()?)?;
    }
    let value_len = usize::try_from(read_varint(batch, &mut at)?).ok()?;
    let end = at.checked_add(value_len)?;
    (end <= batch.len()).then_some(ValueAt {
        start: at,
        len: value_len,
    })
}

/// The send time a batch carries, in microseconds since the Unix epoch: the stamp in its
/// first value where there is one, else its first timestamp (milliseconds).
pub fn sent_unix_us(batch: &[u8]) -> Option<u64> {
    if let Some(value) = first_value(batch).filter(|value| value.len >= STAMP_LEN) {
        let stamp = batch.get(value.start..value.start + STAMP_LEN)?;
        return Some(u64::from_be_bytes(stamp.try_into().ok()?));
    }
    let first_ms = read_i64(batch, FIRST_TIMESTAMP_OFFSET)?;
    u64::try_from(first_ms).ok()?.checked_mul(1000)
}

/// A zigzag varint, as records use; None past the end or beyond 64 bits.
fn read_varint(bytes: &[u8], at: &mut usize) -> Option<i64> {
    let mut value: u64 = 0;
    for shift in (0..64).step_by(7) {
        let byte = *bytes.get(*at)?;
        *at += 1;
        value |= u64::from(byte & 0x7f) << shift;
        if byte & 0x80 == 0 {
            return Some(((value >> 1) as i64) ^ -((value & 1) as i64));
        }
    }
    None
}

/// What a fetched partition's record bytes held.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Counted {
    pub batches: u64,
    pub records: u64,
    /// Bytes of whole batches; a partial batch at the end is not counted.
    pub bytes: u64,
    /// The offset after the last whole batch, where the next fetch starts.
    pub next_offset: Option<i64>,
}

/// Counts the whole batches in fetched record bytes by their headers. A broker may cut the
/// last batch short at its byte limit; that tail is left for the next fetch.
#[cfg(test)]
pub fn count_batches(records: &[u8]) -> Result<Counted, BatchError> {
    count_batches_each(records, |_, _| {})
}

/// As `count_batches`, calling `each` with every whole batch and its record count.
pub fn count_batches_each(
    records: &[u8],
    mut each: impl FnMut(&[u8], u64),
) -> Result<Counted, BatchError> {
    let mut counted = Counted::default();
    let mut position = 0;
    while let Some(length) = read_i32(records, position + LENGTH_OFFSET) {
        if length < (BATCH_HEADER_LEN - LOG_OVERHEAD) as i32 {
            return Err(BatchError::Length { position, length });
        }
        let end = position + LOG_OVERHEAD + length as usize;
        let Some(batch) = records.get(position..end) else {
            break;
        };
        let magic = batch[MAGIC_OFFSET] as i8;
        if magic != MAGIC_V2 {
            return Err(BatchError::Magic { position, magic });
        }
        let fields = (
            read_i64(batch, BASE_OFFSET_OFFSET),
            read_i32(batch, LAST_OFFSET_DELTA_OFFSET),
            read_i32(batch, RECORDS_COUNT_OFFSET),
        );
        let (Some(base_offset), Some(last_offset_delta), Some(count)) = fields else {
            unreachable!("a batch checked to be at least a header long holds its fields");
        };
        if count < 0 {
            return Err(BatchError::Count { position, count });
        }
        counted.batches += 1;
        counted.records += count as u64;
        each(batch, count as u64);
        counted.bytes += batch.len() as u64;
        counted.next_offset = Some(base_offset + i64::from(last_offset_delta) + 1);
        position = end;
    }
    Ok(counted)
}

fn read_i32(bytes: &[u8], at: usize) -> Option<i32> {
    let field = bytes.get(at..at.checked_add(4)?)?;
    Some(i32::from_be_bytes(field.try_into().ok()?))
}

fn read_i64(bytes: &[u8], at: usize) -> Option<i64> {
    let field = bytes.get(at..at.checked_add(8)?)?;
    Some(i64::from_be_bytes(field.try_into().ok()?))
}

#[cfg(test)]
mod tests {
    use super::*;
    use kafka_protocol::records::RecordBatchDecoder;

    fn check_build(message_size: usize, records: usize, compression: Compression) -> Vec<u8> {
        let mut builder = BatchBuilder::new(message_size, records, compression, 7, Vec::new());
        let batch = builder.batch(records, 1_700_000_000_123_456).unwrap();
        let counted = count_batches(&batch).unwrap();
        assert_eq!(counted.batches, 1);
        assert_eq!(counted.records, records as u64);
        assert_eq!(counted.bytes, batch.len() as u64);
        assert_eq!(counted.next_offset, Some(records as i64));
        if compression == Compression::None {
            assert_eq!(batch.len(), batch_len(records, None, message_size));
        }
        // kafka-protocol's decoder checks the CRC, so this also proves the restamp.
        let mut bytes = batch.clone();
        let set = RecordBatchDecoder::decode(&mut bytes).unwrap();
        assert_eq!(set.records.len(), records);
        for (i, record) in set.records.iter().enumerate() {
            assert_eq!(record.offset, i as i64);
            assert_eq!(record.timestamp, 1_700_000_000_123);
            assert_eq!(record.producer_id, NO_PRODUCER_ID);
            assert_eq!(record.value.as_ref().map(|v| v.len()), Some(message_size));
        }
        assert_eq!(set.records[0].sequence, -1);
        batch.to_vec()
    }

    #[test]
    fn builds_one_uncompressed_batch_of_the_predicted_size() {
        for (message_size, records) in [(0, 1), (1, 1), (100, 3), (1024, 200), (70_000, 2)] {
            check_build(message_size, records, Compression::None);
        }
    }

    #[test]
    fn builds_compressed_batches_that_decode() {
        for compression in [
            Compression::Gzip,
            Compression::Snappy,
            Compression::Lz4,
            Compression::Zstd,
        ] {
            let batch = check_build(1024, 100, compression);
            let attributes = i16::from_be_bytes([batch[21], batch[22]]);
            assert_eq!(attributes & 7, compression as i16);
            assert!(
                batch.len() < batch_len(100, None, 1024),
                "{compression:?} did not shrink"
            );
        }
    }

    #[test]
    fn restamping_changes_timestamps_stamp_and_crc_only() {
        let mut builder = BatchBuilder::new(10, 4, Compression::None, 1, Vec::new());
        let first = builder.batch(4, 1_000_123).unwrap();
        let second = builder.batch(4, 2_000_456).unwrap();
        let value = first_value(&second).unwrap();
        assert_eq!(value.len, 10);
        let differing: Vec<usize> = (0..first.len())
            .filter(|&i| first[i] != second[i])
            .collect();
        assert!(differing
            .iter()
            .all(|&i| (CRC_OFFSET..CRC_OFFSET + 4).contains(&i)
                || (FIRST_TIMESTAMP_OFFSET..MAX_TIMESTAMP_OFFSET + 8).contains(&i)
                || (value.start..value.start + STAMP_LEN).contains(&i)));
        assert_eq!(read_i64(&second, FIRST_TIMESTAMP_OFFSET), Some(2000));
        assert_eq!(read_i64(&second, MAX_TIMESTAMP_OFFSET), Some(2000));
        assert_eq!(sent_unix_us(&second), Some(2_000_456));
    }

    #[test]
    fn send_stamps_fall_back_to_the_batch_timestamp() {
        // Values too short for a stamp, and compressed values, carry milliseconds only.
        let mut short = BatchBuilder::new(4, 2, Compression::None, 1, Vec::new());
        assert_eq!(
            sent_unix_us(&short.batch(2, 7_000_999).unwrap()),
            Some(7_000_000)
        );
        let mut zstd = BatchBuilder::new(100, 5, Compression::Zstd, 1, Vec::new());
        let batch = zstd.batch(5, 9_123_456).unwrap();
        assert_eq!(first_value(&batch), None);
        assert_eq!(sent_unix_us(&batch), Some(9_123_000));
        // Cut short, a batch yields no stamp rather than a wrong one.
        let mut plain = BatchBuilder::new(100, 1, Compression::None, 1, Vec::new());
        let whole = plain.batch(1, 5_000_001).unwrap();
        assert_eq!(first_value(&whole[..BATCH_HEADER_LEN + 20]), None);
    }

    #[test]
    fn keyed_batches_carry_their_keys_and_predicted_size() {
        let keys = vec![
            Bytes::from_static(b"key-0001"),
            Bytes::from_static(b"key-0002"),
        ];
        let mut builder = BatchBuilder::new(64, 3, Compression::None, 1, keys.clone());
        let batch = builder.batch(3, 42_000_000).unwrap();
        assert_eq!(batch.len(), batch_len(3, Some(8), 64));
        let mut bytes = batch.clone();
        let set = RecordBatchDecoder::decode(&mut bytes).unwrap();
        let got: Vec<_> = set.records.iter().map(|r| r.key.clone().unwrap()).collect();
        assert_eq!(got, [keys[0].clone(), keys[1].clone(), keys[0].clone()]);
        assert_eq!(sent_unix_us(&batch), Some(42_000_000));
    }

    #[test]
    fn records_per_batch_fills_without_overflowing() {
        let check = |batch_size: usize, message_size: usize, expected: usize| {
            let records = records_per_batch(batch_size, None, message_size);
            assert_eq!(records, expected, "{batch_size} / {message_size}");
            assert!(records == 1 || batch_len(records, None, message_size) <= batch_size);
            assert!(batch_len(records + 1, None, message_size) > batch_size);
        };
        // A 1024-byte value makes records of 1033 bytes (offset delta < 64) and 1034 after.
        check(1 << 20, 1024, 1014);
        check(16384, 1024, 15);
        check(61 + 1033, 1024, 1);
        check(61 + 1033 + 1033, 1024, 2);
        check(61 + 1033 + 1032, 1024, 1);
        // Smaller than one record: still one record, as Kafka does.
        check(10, 1024, 1);
        check(1, 0, 1);
    }

    #[test]
    fn varint_lengths_match_zigzag() {
        let check =
            |value: i64, expected: usize| assert_eq!(varint_len(value), expected, "{value}");
        check(0, 1);
        check(-1, 1);
        check(63, 1);
        check(64, 2);
        check(-64, 1);
        check(-65, 2);
        check(8191, 2);
        check(8192, 3);
        check(i64::from(i32::MAX), 5);
        check(i64::MAX, 10);
    }

    #[test]
    fn counts_consecutive_batches_and_stops_at_a_partial_one() {
        let mut builder = BatchBuilder::new(50, 10, Compression::None, 3, Vec::new());
        let mut first = builder.batch(10, 5).unwrap().to_vec();
        let mut second = builder.batch(3, 5).unwrap().to_vec();
        // The broker rewrites base offsets; give the batches consecutive ones.
        first[..8].copy_from_slice(&100i64.to_be_bytes());
        second[..8].copy_from_slice(&110i64.to_be_bytes());
        let whole: Vec<u8> = [first.clone(), second.clone()].concat();
        let both = Counted {
            batches: 2,
            records: 13,
            bytes: whole.len() as u64,
            next_offset: Some(113),
        };
        assert_eq!(count_batches(&whole).unwrap(), both);
        let only_first = Counted {
            batches: 1,
            records: 10,
            bytes: first.len() as u64,
            next_offset: Some(110),
        };
        for cut in [
            first.len() + 1,
            first.len() + 11,
            first.len() + 12,
            whole.len() - 1,
        ] {
            assert_eq!(
                count_batches(&whole[..cut]).unwrap(),
                only_first,
                "cut {cut}"
            );
        }
        assert_eq!(count_batches(&[]).unwrap(), Counted::default());
        assert_eq!(count_batches(&whole[..5]).unwrap(), Counted::default());
    }

    #[test]
    fn rejects_malformed_headers() {
        let mut builder = BatchBuilder::new(8, 1, Compression::None, 3, Vec::new());
        let good = builder.batch(1, 5).unwrap().to_vec();

        let mut short = good.clone();
        short[LENGTH_OFFSET..LENGTH_OFFSET + 4].copy_from_slice(&10i32.to_be_bytes());
        assert!(matches!(
            count_batches(&short),
            Err(BatchError::Length {
                position: 0,
                length: 10
            })
        ));

        let mut old = good.clone();
        old[MAGIC_OFFSET] = 1;
        let doubled = [good.clone(), old].concat();
        assert!(matches!(
            count_batches(&doubled),
            Err(BatchError::Magic { magic: 1, position }) if position == good.len()
        ));

        let mut negative = good.clone();
        negative[RECORDS_COUNT_OFFSET..RECORDS_COUNT_OFFSET + 4]
            .copy_from_slice(&(-3i32).to_be_bytes());
        assert!(matches!(
            count_batches(&negative),
            Err(BatchError::Count { count: -3, .. })
        ));
    }

    #[test]
    fn payload_is_printable_and_seeded() {
        let a = payload(1000, 1);
        assert_eq!(a.len(), 1000);
        assert!(a.iter().all(|b| b.is_ascii_graphic() || *b == b' '));
        assert_eq!(a, payload(1000, 1));
        assert_ne!(a, payload(1000, 2));
        assert!(payload(0, 1).is_empty());
    }
}
