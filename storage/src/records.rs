//! The records inside a RecordBatch v2, walked where an append checks them (the record
//! framing of an uncompressed batch, Kafka's INVALID_RECORD checks) and where a lookup needs
//! record-level answers: the first record at or after a timestamp (ListOffsets by timestamp)
//! and the record holding a batch's max timestamp. Reads and recovery never look inside
//! batches.
//!
//! A record is: length (varint), attributes (i8), timestampDelta (varlong), offsetDelta
//! (varint), key length (varint, negative for null) and key, value length and value, header
//! count (varint), and per header its key length (not negative) and key, value length and
//! value. Varints are zigzag-encoded as in protobuf, at most 5 bytes (10 for a varlong). Every
//! length is checked against the bytes that remain before it is used, and a walk never
//! allocates from a length it read.
//!
//! Compressed batches are decompressed here, and only here, as a stream that stops at the
//! answer: gzip (`flate2`, pure Rust), lz4 frames (`lz4`), zstd (`zstd`) and snappy in the
//! xerial framing Java producers write or as one raw block (`snap`). At most
//! [`DECOMPRESSED_BYTES_MAX`] bytes are decompressed per batch. [`recompress`] turns a batch
//! into another codec, for topics whose `compression.type` names one.

use std::io::{self, Read};

use std::io::Write as _;

use crate::batch::{check_crcs, with_records, BatchError, BatchHeader, BATCH_HEADER_LEN};

/// Attribute bits naming the compression codec.
pub const ATTRIBUTE_COMPRESSION_MASK: i16 = 0x07;
/// Attribute bit: every record's timestamp is the batch's max timestamp (LogAppendTime).
pub const ATTRIBUTE_LOG_APPEND_TIME: i16 = 0x08;
/// The most bytes one lookup decompresses from one batch; a batch that inflates beyond it is
/// answered at batch level.
pub const DECOMPRESSED_BYTES_MAX: u64 = 64 << 20;

/// The largest zstd window a lookup accepts (16 MiB); producers' defaults stay well below.
const ZSTD_WINDOW_LOG_MAX: u32 = 24;
/// Bytes of a varint (i32) and a varlong (i64) at most.
const VARINT_BYTES_MAX: u32 = 5;
const VARLONG_BYTES_MAX: u32 = 10;
/// The xerial snappy framing: an 8-byte magic, a version and a compatible version (i32 each).
const XERIAL_MAGIC: &[u8; 8] = b"\x82SNAPPY\x00";
const XERIAL_HEADER_LEN: usize = 16;

const _: () = assert!(XERIAL_MAGIC.len() + 8 == XERIAL_HEADER_LEN);
const _: () = assert!(DECOMPRESSED_BYTES_MAX <= i32::MAX as u64);

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Compression {
    None,
    Gzip,
    Snappy,
    Lz4,
    Zstd,
}

impl Compression {
    /// The codec named by a batch's attributes, or `None` for an unknown codec.
    pub fn from_attributes(attributes: i16) -> Option<Self> {
        match attributes & ATTRIBUTE_COMPRESSION_MASK {
            0 => Some(Self::None),
            1 => Some(Self::Gzip),
            2 => Some(Self::Snappy),
            3 => Some(Self::Lz4),
            4 => Some(Self::Zstd),
            _ => None,
        }
    }
}

/// Kafka's levels for the codecs that have one: gzip's default, zstd's default (3); lz4 uses
/// its fast mode, as librdkafka does by default.
const GZIP_LEVEL: u32 = 6;
const ZSTD_LEVEL: i32 = 3;
/// Bytes per block in the xerial snappy framing, as Java's producer writes it.
const XERIAL_BLOCK_BYTES: usize = 32 * 1024;

impl Compression {
    /// What a topic's `compression.type` asks for: `Some(None)` for `producer` (keep what the
    /// producer sent), `Some(Some(codec))` for a codec, `None` for a value Kafka does not know.
    pub fn from_topic_config(value: &str) -> Option<Option<Self>> {
        match value {
            "producer" => Some(None),
            "none" | "uncompressed" => Some(Some(Self::None)),
            "gzip" => Some(Some(Self::Gzip)),
            "snappy" => Some(Some(Self::Snappy)),
            "lz4" => Some(Some(Self::Lz4)),
            "zstd" => Some(Some(Self::Zstd)),
            _ => None,
        }
    }

    fn attribute(self) -> i16 {
        match self {
            Self::None => 0,
            Self::Gzip => 1,
            Self::Snappy => 2,
            Self::Lz4 => 3,
            Self::Zstd => 4,
        }
    }
}

/// The batch at the start of `batch` (whose header is `header`) with its records in codec
/// `to`, as Kafka's broker rewrites a batch for a topic whose `compression.type` is a codec:
/// the CRC is checked first (a damaged batch is not given a good one), the records are
/// decompressed (at most [`DECOMPRESSED_BYTES_MAX`]) and must frame as an uncompressed
/// batch's do, then are compressed again. The header's other fields, producer id, sequence
/// and timestamps included, are kept. A batch already in `to`, or a control batch, comes back
/// as it is.
pub fn recompress(
    batch: &[u8],
    header: &BatchHeader,
    to: Compression,
) -> Result<Option<Vec<u8>>, BatchError> {
    let codec = header.attributes & ATTRIBUTE_COMPRESSION_MASK;
    let from = Compression::from_attributes(header.attributes)
        .ok_or(BatchError::UnsupportedCompression(codec as u8))?;
    if from == to || header.is_control() {
        return Ok(None);
    }
    check_crcs(batch, std::slice::from_ref(header))?;
    let section = batch
        .get(BATCH_HEADER_LEN..header.total_len())
        .ok_or(BatchError::Truncated)?;
    let decompressed;
    let records = match from {
        Compression::None => section,
        _ => {
            decompressed = decompress(section, from)
                .map_err(|_| BatchError::InvalidRecords("the records do not decompress"))?;
            &decompressed[..]
        }
    };
    validate_record_framing(records, header.records_count)?;
    let compressed =
        compress(records, to).map_err(|_| BatchError::InvalidRecords("compression failed"))?;
    let attributes = (header.attributes & !ATTRIBUTE_COMPRESSION_MASK) | to.attribute();
    with_records(batch, attributes, &compressed).map(Some)
}

/// The whole record section of a compressed batch, refused past [`DECOMPRESSED_BYTES_MAX`].
fn decompress(section: &[u8], codec: Compression) -> Result<Vec<u8>, RecordError> {
    let mut out = Vec::new();
    let limit = DECOMPRESSED_BYTES_MAX + 1;
    match codec {
        Compression::None => out.extend_from_slice(section),
        Compression::Gzip => {
            flate2::read::GzDecoder::new(section)
                .take(limit)
                .read_to_end(&mut out)?;
        }
        Compression::Lz4 => {
            lz4::Decoder::new(section)?
                .take(limit)
                .read_to_end(&mut out)?;
        }
        Compression::Zstd => {
            let mut decoder = zstd::stream::read::Decoder::with_buffer(section)?;
            decoder.window_log_max(ZSTD_WINDOW_LOG_MAX)?;
            decoder.take(limit).read_to_end(&mut out)?;
        }
        Compression::Snappy => out = snappy_decompress(section)?,
    }
    if out.len() as u64 > DECOMPRESSED_BYTES_MAX {
        return Err(RecordError::Malformed);
    }
    Ok(out)
}

/// `records` in `codec`: snappy in the xerial framing, which every Kafka client reads.
fn compress(records: &[u8], codec: Compression) -> io::Result<Vec<u8>> {
    match codec {
        Compression::None => Ok(records.to_vec()),
        Compression::Gzip => {
            let level = flate2::Compression::new(GZIP_LEVEL);
            let mut encoder = flate2::write::GzEncoder::new(Vec::new(), level);
            encoder.write_all(records)?;
            encoder.finish()
        }
        Compression::Lz4 => {
            let mut encoder = lz4::EncoderBuilder::new().build(Vec::new())?;
            encoder.write_all(records)?;
            let (out, result) = encoder.finish();
            result.map(|()| out)
        }
        Compression::Zstd => zstd::bulk::compress(records, ZSTD_LEVEL),
        Compression::Snappy => {
            let mut out = XERIAL_MAGIC.to_vec();
            // The framing's version and the oldest version that reads it.
            out.extend_from_slice(&1i32.to_be_bytes());
            out.extend_from_slice(&1i32.to_be_bytes());
            let mut encoder = snap::raw::Encoder::new();
            for block in records.chunks(XERIAL_BLOCK_BYTES) {
                let compressed = encoder.compress_vec(block).map_err(io::Error::other)?;
                let len = i32::try_from(compressed.len()).map_err(io::Error::other)?;
                out.extend_from_slice(&len.to_be_bytes());
                out.extend_from_slice(&compressed);
            }
            Ok(out)
        }
    }
}

/// Why the records of a batch could not be walked. The batch itself passed its CRC, so this
/// means a producer wrote a malformed record section, an unknown codec, or one that inflates
/// past [`DECOMPRESSED_BYTES_MAX`].
#[derive(Debug, thiserror::Error)]
pub enum RecordError {
    #[error("record section is malformed")]
    Malformed,
    #[error("unknown compression codec {0}")]
    UnknownCodec(i16),
    #[error("decompression failed: {0}")]
    Decompress(#[from] io::Error),
}

/// Checks what an append checks of a batch beyond its framing and CRC, as Kafka's broker does:
/// a known compression codec, at least one record, a last offset delta of `records_count - 1`,
/// and for an uncompressed batch, records that frame exactly as the header says: each inside
/// its declared length and wholly used by its fields, offset deltas 0, 1, 2, ..., as many
/// records as the count says, and nothing after the last. A compressed batch is not
/// decompressed. `batch` holds the whole batch, whose header is `header`.
pub fn validate_contents(batch: &[u8], header: &BatchHeader) -> Result<(), BatchError> {
    let codec = header.attributes & ATTRIBUTE_COMPRESSION_MASK;
    let Some(compression) = Compression::from_attributes(header.attributes) else {
        return Err(BatchError::UnsupportedCompression(codec as u8));
    };
    if header.records_count == 0 {
        return Err(BatchError::InvalidRecords("the batch holds no records"));
    }
    if i64::from(header.last_offset_delta) != i64::from(header.records_count) - 1 {
        return Err(BatchError::InvalidRecords(
            "the last offset delta does not match the record count",
        ));
    }
    if compression != Compression::None {
        return Ok(());
    }
    let records = batch
        .get(BATCH_HEADER_LEN..header.total_len())
        .ok_or(BatchError::Truncated)?;
    validate_record_framing(records, header.records_count)
}

fn invalid(reason: &'static str) -> BatchError {
    BatchError::InvalidRecords(reason)
}

/// Walks an uncompressed record section that must hold exactly `count` records. Each loop
/// consumes at least one byte or fails, so a count or header count read from the batch bounds
/// nothing but the walk over bytes that are there.
fn validate_record_framing(mut records: &[u8], count: i32) -> Result<(), BatchError> {
    let mut index: i32 = 0;
    while !records.is_empty() {
        if index == count {
            return Err(invalid("bytes follow the last record"));
        }
        let length = take_varint(&mut records)?;
        let length = usize::try_from(length).map_err(|_| invalid("negative record length"))?;
        let (mut record, rest) = records
            .split_at_checked(length)
            .ok_or(invalid("a record runs past the end of the batch"))?;
        records = rest;
        record.byte().map_err(|_| invalid(OVERRUN))?; // attributes
        take_varlong(&mut record)?; // timestamp delta
        if take_varint(&mut record)? != index {
            return Err(invalid(
                "an offset delta does not match the record's position",
            ));
        }
        skip_nullable(&mut record)?; // key
        skip_nullable(&mut record)?; // value
        let header_count = take_varint(&mut record)?;
        if header_count < 0 {
            return Err(invalid("negative header count"));
        }
        for _ in 0..header_count {
            let key_length = take_varint(&mut record)?;
            let key_length =
                u64::try_from(key_length).map_err(|_| invalid("negative header key length"))?;
            record.skip(key_length).map_err(|_| invalid(OVERRUN))?;
            skip_nullable(&mut record)?; // header value
        }
        if !record.is_empty() {
            return Err(invalid("a record is longer than its fields"));
        }
        index += 1;
    }
    if index != count {
        return Err(invalid("the record count does not match the records"));
    }
    Ok(())
}

const OVERRUN: &str = "a record's fields run past its length";
const VARINT_CUT: &str = "a varint is cut short or longer than 5 bytes";
const VARLONG_CUT: &str = "a varlong is cut short or longer than 10 bytes";

/// A zigzag varint that fits an i32, from the front of `bytes`.
fn take_varint(bytes: &mut &[u8]) -> Result<i32, BatchError> {
    let (value, _) = read_varint(bytes, VARINT_BYTES_MAX).map_err(|_| invalid(VARINT_CUT))?;
    i32::try_from(value).map_err(|_| invalid("a varint is out of range"))
}

/// A zigzag varlong, from the front of `bytes`.
fn take_varlong(bytes: &mut &[u8]) -> Result<i64, BatchError> {
    let (value, _) = read_varint(bytes, VARLONG_BYTES_MAX).map_err(|_| invalid(VARLONG_CUT))?;
    Ok(value)
}

/// Skips a length-prefixed byte string; a negative length is null, as Kafka reads it.
fn skip_nullable(bytes: &mut &[u8]) -> Result<(), BatchError> {
    let length = take_varint(bytes)?;
    if let Ok(length) = u64::try_from(length) {
        bytes.skip(length).map_err(|_| invalid(OVERRUN))?;
    }
    Ok(())
}

/// A record's offset and timestamp.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RecordStamp {
    pub offset: i64,
    pub timestamp: i64,
}

/// The first record of the batch at the start of `batch` whose offset is at least `min_offset`
/// and whose timestamp is at least `timestamp`. `batch` must hold the whole batch (its header
/// already parsed into `header`). Compressed batches are decompressed.
pub fn first_record_at_or_after(
    batch: &[u8],
    header: &BatchHeader,
    min_offset: i64,
    timestamp: i64,
) -> Result<Option<RecordStamp>, RecordError> {
    if min_offset > header.last_offset() {
        return Ok(None);
    }
    if header.attributes & ATTRIBUTE_LOG_APPEND_TIME != 0 {
        // Every record carries the batch's max timestamp.
        return Ok((header.max_timestamp >= timestamp).then(|| RecordStamp {
            offset: min_offset.max(header.base_offset),
            timestamp: header.max_timestamp,
        }));
    }
    let records = records_section(batch, header)?;
    let wanted =
        |record: &RecordStamp| record.offset >= min_offset && record.timestamp >= timestamp;
    let codec = Compression::from_attributes(header.attributes).ok_or(
        RecordError::UnknownCodec(header.attributes & ATTRIBUTE_COMPRESSION_MASK),
    )?;
    match codec {
        Compression::None => find_record(records, header, wanted),
        Compression::Gzip => find_record(
            Stream::new(flate2::read::GzDecoder::new(records).take(DECOMPRESSED_BYTES_MAX)),
            header,
            wanted,
        ),
        Compression::Lz4 => find_record(
            Stream::new(lz4::Decoder::new(records)?.take(DECOMPRESSED_BYTES_MAX)),
            header,
            wanted,
        ),
        Compression::Zstd => {
            let mut decoder = zstd::stream::read::Decoder::with_buffer(records)?;
            // The frame names its window size; a hostile one must not make us allocate it.
            decoder.window_log_max(ZSTD_WINDOW_LOG_MAX)?;
            find_record(
                Stream::new(decoder.take(DECOMPRESSED_BYTES_MAX)),
                header,
                wanted,
            )
        }
        Compression::Snappy => find_record(&snappy_decompress(records)?[..], header, wanted),
    }
}

/// The offset of the first record holding the batch's max timestamp, without decompressing:
/// exact for uncompressed batches, the batch's last offset for compressed ones (the record
/// holding the newest timestamp is usually the last one a producer added), and for a record
/// section that cannot be walked.
pub fn offset_of_max_timestamp(batch: &[u8], header: &BatchHeader) -> i64 {
    if header.attributes & ATTRIBUTE_LOG_APPEND_TIME != 0 {
        return header.base_offset;
    }
    if header.attributes & ATTRIBUTE_COMPRESSION_MASK != 0 {
        return header.last_offset();
    }
    let Ok(records) = records_section(batch, header) else {
        return header.last_offset();
    };
    let wanted = |record: &RecordStamp| record.timestamp >= header.max_timestamp;
    match find_record(records, header, wanted) {
        Ok(Some(record)) => record.offset,
        _ => header.last_offset(),
    }
}

fn records_section<'a>(batch: &'a [u8], header: &BatchHeader) -> Result<&'a [u8], RecordError> {
    batch
        .get(BATCH_HEADER_LEN..header.total_len())
        .ok_or(RecordError::Malformed)
}

/// A source of record bytes: a slice (skips are free) or a decompressing stream.
trait RecordBytes {
    fn byte(&mut self) -> Result<u8, RecordError>;
    fn skip(&mut self, len: u64) -> Result<(), RecordError>;
}

impl RecordBytes for &[u8] {
    fn byte(&mut self) -> Result<u8, RecordError> {
        let (&first, rest) = self.split_first().ok_or(RecordError::Malformed)?;
        *self = rest;
        Ok(first)
    }

    fn skip(&mut self, len: u64) -> Result<(), RecordError> {
        let len = usize::try_from(len).map_err(|_| RecordError::Malformed)?;
        *self = self.get(len..).ok_or(RecordError::Malformed)?;
        Ok(())
    }
}

/// A decompressing reader, buffered so that byte-sized reads stay cheap.
struct Stream<R>(io::BufReader<R>);

impl<R: Read> Stream<R> {
    fn new(reader: R) -> Self {
        Self(io::BufReader::new(reader))
    }
}

impl<R: Read> RecordBytes for Stream<R> {
    fn byte(&mut self) -> Result<u8, RecordError> {
        let mut byte = [0u8; 1];
        self.0.read_exact(&mut byte).map_err(|error| {
            if error.kind() == io::ErrorKind::UnexpectedEof {
                RecordError::Malformed
            } else {
                RecordError::Decompress(error)
            }
        })?;
        Ok(byte[0])
    }

    fn skip(&mut self, len: u64) -> Result<(), RecordError> {
        let skipped = io::copy(&mut (&mut self.0).take(len), &mut io::sink())?;
        if skipped != len {
            return Err(RecordError::Malformed);
        }
        Ok(())
    }
}

/// Walks at most `records_count` records; returns the first that `wanted` accepts.
fn find_record(
    mut bytes: impl RecordBytes,
    header: &BatchHeader,
    wanted: impl Fn(&RecordStamp) -> bool,
) -> Result<Option<RecordStamp>, RecordError> {
    for _ in 0..header.records_count {
        let record = read_record_stamp(&mut bytes, header)?;
        if wanted(&record) {
            return Ok(Some(record));
        }
    }
    Ok(None)
}

/// Reads one record's offset and timestamp and skips the rest of it.
fn read_record_stamp(
    bytes: &mut impl RecordBytes,
    header: &BatchHeader,
) -> Result<RecordStamp, RecordError> {
    let (length, _) = read_varint(bytes, VARINT_BYTES_MAX)?;
    let length = u64::try_from(length).map_err(|_| RecordError::Malformed)?;
    let _attributes = bytes.byte()?;
    let (timestamp_delta, timestamp_len) = read_varint(bytes, VARLONG_BYTES_MAX)?;
    let (offset_delta, offset_len) = read_varint(bytes, VARINT_BYTES_MAX)?;
    let rest = length
        .checked_sub(1 + timestamp_len + offset_len)
        .ok_or(RecordError::Malformed)?;
    bytes.skip(rest)?;
    if !(0..=i64::from(header.last_offset_delta)).contains(&offset_delta) {
        return Err(RecordError::Malformed);
    }
    let timestamp = header
        .base_timestamp
        .checked_add(timestamp_delta)
        .ok_or(RecordError::Malformed)?;
    Ok(RecordStamp {
        offset: header.base_offset + offset_delta,
        timestamp,
    })
}

/// A zigzag varint of at most `bytes_max` bytes, and how many bytes it took.
fn read_varint(bytes: &mut impl RecordBytes, bytes_max: u32) -> Result<(i64, u64), RecordError> {
    let mut raw: u64 = 0;
    for i in 0..bytes_max {
        let byte = bytes.byte()?;
        raw |= u64::from(byte & 0x7f) << (7 * i);
        if byte & 0x80 == 0 {
            return Ok(((raw >> 1) as i64 ^ -((raw & 1) as i64), u64::from(i) + 1));
        }
    }
    Err(RecordError::Malformed)
}

/// Decompresses snappy as Java producers write it (xerial framing: a header, then blocks each
/// prefixed by a big-endian i32 length) or as one raw block, as librdkafka may.
fn snappy_decompress(input: &[u8]) -> Result<Vec<u8>, RecordError> {
    let mut out = Vec::new();
    if input.len() >= XERIAL_HEADER_LEN && input.starts_with(XERIAL_MAGIC) {
        let mut rest = &input[XERIAL_HEADER_LEN..];
        while !rest.is_empty() {
            let Some((len, tail)) = rest.split_first_chunk::<4>() else {
                return Err(RecordError::Malformed);
            };
            let len =
                usize::try_from(i32::from_be_bytes(*len)).map_err(|_| RecordError::Malformed)?;
            let block = tail.get(..len).ok_or(RecordError::Malformed)?;
            snappy_block(block, &mut out)?;
            rest = &tail[len..];
        }
    } else {
        snappy_block(input, &mut out)?;
    }
    Ok(out)
}

/// Appends one raw snappy block to `out`, refusing to grow `out` past the decompression bound.
fn snappy_block(block: &[u8], out: &mut Vec<u8>) -> Result<(), RecordError> {
    let len = snap::raw::decompress_len(block).map_err(|_| RecordError::Malformed)?;
    if (out.len() + len) as u64 > DECOMPRESSED_BYTES_MAX {
        return Err(RecordError::Malformed);
    }
    let start = out.len();
    out.resize(start + len, 0);
    let written = snap::raw::Decoder::new()
        .decompress(block, &mut out[start..])
        .map_err(|_| RecordError::Malformed)?;
    out.truncate(start + written);
    Ok(())
}

/// Encodes records for tests and tools: (timestamp delta, value) pairs, offset deltas 0, 1, ...
pub fn encode_records(records: &[(i64, &[u8])]) -> Vec<u8> {
    let mut out = Vec::new();
    for (offset_delta, (timestamp_delta, value)) in records.iter().enumerate() {
        let mut body = vec![0u8]; // attributes
        put_varint(&mut body, *timestamp_delta);
        put_varint(&mut body, offset_delta as i64);
        put_varint(&mut body, -1); // no key
        put_varint(&mut body, value.len() as i64);
        body.extend_from_slice(value);
        put_varint(&mut body, 0); // no headers
        put_varint(&mut out, body.len() as i64);
        out.extend_from_slice(&body);
    }
    out
}

fn put_varint(out: &mut Vec<u8>, value: i64) {
    let mut raw = ((value << 1) ^ (value >> 63)) as u64;
    while raw >= 0x80 {
        out.push((raw as u8) | 0x80);
        raw >>= 7;
    }
    out.push(raw as u8);
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::batch::{parse_header, BatchBuilder};
    use std::io::Write;

    /// A batch at base offset 100 and base timestamp 1000 holding records with these
    /// timestamp deltas, its record section encoded by `compress`.
    fn batch(deltas: &[i64], attributes: i16, compress: impl Fn(&[u8]) -> Vec<u8>) -> Vec<u8> {
        let value = [7u8; 300];
        let records: Vec<(i64, &[u8])> = deltas.iter().map(|&d| (d, &value[..])).collect();
        let count = deltas.len() as i32;
        BatchBuilder {
            base_offset: 100,
            attributes,
            last_offset_delta: count - 1,
            records_count: count,
            base_timestamp: 1_000,
            max_timestamp: 1_000 + deltas.iter().copied().max().unwrap_or(0),
            ..BatchBuilder::default()
        }
        .build(&compress(&encode_records(&records)))
    }

    fn check(bytes: &[u8], min_offset: i64, timestamp: i64, expected: Option<(i64, i64)>) {
        let header = parse_header(bytes).unwrap();
        let got = first_record_at_or_after(bytes, &header, min_offset, timestamp).unwrap();
        assert_eq!(
            got.map(|r| (r.offset, r.timestamp)),
            expected,
            "min offset {min_offset}, timestamp {timestamp}"
        );
    }

    type Compress = Box<dyn Fn(&[u8]) -> Vec<u8>>;

    /// Each codec's attribute value and a compressor for it.
    fn codecs() -> Vec<(i16, Compress)> {
        vec![
            (0, Box::new(|b: &[u8]| b.to_vec())),
            (
                1,
                Box::new(|b: &[u8]| {
                    let mut e = flate2::write::GzEncoder::new(Vec::new(), Default::default());
                    e.write_all(b).unwrap();
                    e.finish().unwrap()
                }),
            ),
            (
                2,
                Box::new(|b: &[u8]| snap::raw::Encoder::new().compress_vec(b).unwrap()),
            ),
            (2, Box::new(xerial)),
            (
                3,
                Box::new(|b: &[u8]| {
                    let mut e = lz4::EncoderBuilder::new().build(Vec::new()).unwrap();
                    e.write_all(b).unwrap();
                    let (out, result) = e.finish();
                    result.unwrap();
                    out
                }),
            ),
            (4, Box::new(|b: &[u8]| zstd::encode_all(b, 3).unwrap())),
        ]
    }

    /// Snappy in the xerial framing, in blocks of 1000 bytes.
    fn xerial(bytes: &[u8]) -> Vec<u8> {
        let mut out = XERIAL_MAGIC.to_vec();
        out.extend_from_slice(&1i32.to_be_bytes());
        out.extend_from_slice(&1i32.to_be_bytes());
        for chunk in bytes.chunks(1000) {
            let block = snap::raw::Encoder::new().compress_vec(chunk).unwrap();
            out.extend_from_slice(&(block.len() as i32).to_be_bytes());
            out.extend_from_slice(&block);
        }
        out
    }

    #[test]
    fn finds_the_first_record_at_or_after_a_timestamp_with_every_codec() {
        for (attributes, compress) in codecs() {
            // Timestamps 1000, 1020, 1010, 1030, 1040: not monotonic inside the batch.
            let bytes = batch(&[0, 20, 10, 30, 40], attributes, compress);
            check(&bytes, 0, 0, Some((100, 1_000)));
            check(&bytes, 0, 1_005, Some((101, 1_020)));
            check(&bytes, 0, 1_010, Some((101, 1_020)));
            check(&bytes, 102, 1_010, Some((102, 1_010)));
            check(&bytes, 0, 1_035, Some((104, 1_040)));
            check(&bytes, 0, 1_041, None);
            check(&bytes, 105, 0, None);
            let header = parse_header(&bytes).unwrap();
            let expected_max = if attributes == 0 {
                104
            } else {
                header.last_offset()
            };
            assert_eq!(offset_of_max_timestamp(&bytes, &header), expected_max);
        }
    }

    #[test]
    fn recompression_keeps_the_records_and_the_header() {
        let targets = [
            Compression::None,
            Compression::Gzip,
            Compression::Snappy,
            Compression::Lz4,
            Compression::Zstd,
        ];
        for (attributes, compress) in codecs() {
            let original = batch(&[0, 20, 10, 30, 40], attributes, compress);
            let header = parse_header(&original).unwrap();
            for to in targets {
                let Some(rewritten) = recompress(&original, &header, to).unwrap() else {
                    assert_eq!(Compression::from_attributes(attributes), Some(to));
                    continue;
                };
                let new = parse_header(&rewritten).unwrap();
                assert_eq!(new.total_len(), rewritten.len());
                assert_eq!(Compression::from_attributes(new.attributes), Some(to));
                check_crcs(&rewritten, &[new]).unwrap();
                validate_contents(&rewritten, &new).unwrap();
                let same = |h: &BatchHeader| {
                    (
                        h.base_offset,
                        h.records_count,
                        h.base_timestamp,
                        h.max_timestamp,
                    )
                };
                assert_eq!(same(&new), same(&header));
                // The same records: every lookup answers as on the original.
                check(&rewritten, 0, 1_005, Some((101, 1_020)));
                check(&rewritten, 102, 1_010, Some((102, 1_010)));
                check(&rewritten, 0, 1_041, None);
                let back = recompress(&rewritten, &new, Compression::None).unwrap();
                let plain = batch(&[0, 20, 10, 30, 40], 0, |b| b.to_vec());
                assert_eq!(back.as_deref().unwrap_or(&rewritten), &plain[..]);
            }
        }
    }

    #[test]
    fn recompression_refuses_damaged_and_bloated_batches() {
        let mut damaged = batch(&[0, 1], 0, |b| b.to_vec());
        let last = damaged.len() - 1;
        damaged[last] ^= 1;
        let header = parse_header(&damaged).unwrap();
        assert_eq!(
            recompress(&damaged, &header, Compression::Lz4),
            Err(BatchError::CorruptCrc)
        );
        // Records that frame wrongly once decompressed are refused, not stored.
        let garbage = BatchBuilder {
            attributes: 4,
            last_offset_delta: 1,
            records_count: 2,
            ..BatchBuilder::default()
        }
        .build(&zstd::encode_all(&[1u8, 2, 3][..], 3).unwrap());
        let header = parse_header(&garbage).unwrap();
        assert!(matches!(
            recompress(&garbage, &header, Compression::None),
            Err(BatchError::InvalidRecords(_))
        ));
        // A bomb: more than the bound of zeros in a small zstd frame.
        let zeros = vec![0u8; DECOMPRESSED_BYTES_MAX as usize + 1];
        let bomb = BatchBuilder {
            attributes: 4,
            ..BatchBuilder::default()
        }
        .build(&zstd::encode_all(&zeros[..], 19).unwrap());
        let header = parse_header(&bomb).unwrap();
        assert!(matches!(
            recompress(&bomb, &header, Compression::Gzip),
            Err(BatchError::InvalidRecords(_))
        ));
        assert_eq!(Compression::from_topic_config("producer"), Some(None));
        assert_eq!(
            Compression::from_topic_config("uncompressed"),
            Some(Some(Compression::None))
        );
        assert_eq!(Compression::from_topic_config("brotli"), None);
    }

    #[test]
    fn max_timestamp_is_the_first_record_holding_it() {
        let bytes = batch(&[5, 40, 40, 1], 0, |b| b.to_vec());
        let header = parse_header(&bytes).unwrap();
        assert_eq!(offset_of_max_timestamp(&bytes, &header), 101);
    }

    #[test]
    fn log_append_time_answers_from_the_header() {
        let bytes = batch(&[0, 20, 10], ATTRIBUTE_LOG_APPEND_TIME, |b| b.to_vec());
        check(&bytes, 0, 1_020, Some((100, 1_020)));
        check(&bytes, 101, 1_000, Some((101, 1_020)));
        check(&bytes, 0, 1_021, None);
    }

    #[test]
    fn malformed_records_are_errors_not_panics() {
        let bytes = batch(&[0, 1, 2], 0, |b| b.to_vec());
        let header = parse_header(&bytes).unwrap();
        for cut in BATCH_HEADER_LEN..bytes.len() {
            let mut short = BatchBuilder {
                base_offset: 100,
                last_offset_delta: 2,
                records_count: 3,
                base_timestamp: 1_000,
                max_timestamp: 1_002,
                ..BatchBuilder::default()
            }
            .build(&bytes[BATCH_HEADER_LEN..cut]);
            let short_header = parse_header(&short).unwrap();
            let _ = first_record_at_or_after(&short, &short_header, 0, 1_002);
            let _ = offset_of_max_timestamp(&short, &short_header);
            short.truncate(BATCH_HEADER_LEN + 1);
            assert!(first_record_at_or_after(&short, &header, 0, 0).is_err());
        }
        let garbage = BatchBuilder {
            attributes: 4,
            records_count: 1,
            ..BatchBuilder::default()
        }
        .build(b"not zstd at all");
        let garbage_header = parse_header(&garbage).unwrap();
        assert!(first_record_at_or_after(&garbage, &garbage_header, 0, 0).is_err());
        let unknown = BatchBuilder {
            attributes: 6,
            ..BatchBuilder::default()
        }
        .build(b"");
        let unknown_header = parse_header(&unknown).unwrap();
        assert!(matches!(
            first_record_at_or_after(&unknown, &unknown_header, 0, 0),
            Err(RecordError::UnknownCodec(6))
        ));
    }

    #[test]
    fn varints_round_trip() {
        for value in [
            0i64,
            1,
            -1,
            63,
            -64,
            64,
            300,
            -300,
            i64::from(i32::MAX),
            i64::MIN,
            i64::MAX,
        ] {
            let mut bytes = Vec::new();
            put_varint(&mut bytes, value);
            let (got, len) = read_varint(&mut &bytes[..], VARLONG_BYTES_MAX).unwrap();
            assert_eq!((got, len), (value, bytes.len() as u64));
        }
        assert!(read_varint(&mut &[0x80u8; 6][..], VARINT_BYTES_MAX).is_err());
    }

    /// A batch with these attributes, record count and last offset delta, whose record
    /// section is `section` verbatim.
    fn raw_batch(attributes: i16, count: i32, last_offset_delta: i32, section: &[u8]) -> Vec<u8> {
        BatchBuilder {
            attributes,
            last_offset_delta,
            records_count: count,
            ..BatchBuilder::default()
        }
        .build(section)
    }

    /// An uncompressed batch whose header counts `count` records.
    fn counted(count: i32, section: &[u8]) -> Vec<u8> {
        raw_batch(0, count, count.max(1) - 1, section)
    }

    /// One record with a length prefix around `body`, taken as it is.
    fn framed(body: &[u8]) -> Vec<u8> {
        let mut out = Vec::new();
        put_varint(&mut out, body.len() as i64);
        out.extend_from_slice(body);
        out
    }

    type Header<'a> = (&'a [u8], Option<&'a [u8]>);

    /// The body of a record at `offset_delta` (timestamp delta 5), with a key, a value and
    /// headers; `None` is written as length -1.
    fn body(
        offset_delta: i64,
        key: Option<&[u8]>,
        value: Option<&[u8]>,
        headers: &[Header],
    ) -> Vec<u8> {
        let nullable = |out: &mut Vec<u8>, bytes: Option<&[u8]>| match bytes {
            Some(bytes) => {
                put_varint(out, bytes.len() as i64);
                out.extend_from_slice(bytes);
            }
            None => put_varint(out, -1),
        };
        let mut out = vec![0u8];
        put_varint(&mut out, 5);
        put_varint(&mut out, offset_delta);
        nullable(&mut out, key);
        nullable(&mut out, value);
        put_varint(&mut out, headers.len() as i64);
        for (key, value) in headers {
            nullable(&mut out, Some(key));
            nullable(&mut out, *value);
        }
        out
    }

    /// A plain record at `offset_delta`: no key, a short value, no headers.
    fn plain(offset_delta: i64) -> Vec<u8> {
        framed(&body(offset_delta, None, Some(b"value"), &[]))
    }

    fn check_contents(batch: &[u8], expected: Result<(), BatchError>) {
        let header = parse_header(batch).unwrap();
        assert_eq!(validate_contents(batch, &header), expected);
    }

    fn invalid(reason: &'static str) -> Result<(), BatchError> {
        Err(BatchError::InvalidRecords(reason))
    }

    #[test]
    fn well_formed_batches_pass() {
        let one = plain(0);
        check_contents(&counted(1, &one), Ok(()));
        let headers: [Header; 3] = [(b"trace", Some(b"abc")), (b"", None), (b"k", Some(b""))];
        let section = [
            framed(&body(0, Some(b"key"), None, &headers)),
            framed(&body(1, None, Some(&[7; 300]), &headers[..1])),
            framed(&body(2, Some(b""), Some(b""), &[])),
        ]
        .concat();
        check_contents(&counted(3, &section), Ok(()));
        let encoded = encode_records(&[(0, &b"a"[..]), (-3, &b""[..]), (i64::MAX, &b"c"[..])]);
        check_contents(&counted(3, &encoded), Ok(()));
        // Kafka reads any negative key or value length as null.
        check_contents(&counted(1, &framed(&[0, 0, 0, 3, 5, 0])), Ok(()));
    }

    #[test]
    fn record_counts_must_match_the_records() {
        let one = plain(0);
        check_contents(
            &counted(3, &one),
            invalid("the record count does not match the records"),
        );
        check_contents(
            &counted(i32::MAX, &one),
            invalid("the record count does not match the records"),
        );
        check_contents(
            &raw_batch(0, i32::MAX, 0, &one),
            invalid("the last offset delta does not match the record count"),
        );
        check_contents(
            &raw_batch(0, 1, 2, &one),
            invalid("the last offset delta does not match the record count"),
        );
        check_contents(&counted(0, &one), invalid("the batch holds no records"));
        check_contents(&counted(0, b""), invalid("the batch holds no records"));
        let two = [plain(0), plain(1)].concat();
        check_contents(&counted(1, &two), invalid("bytes follow the last record"));
        check_contents(&counted(2, &two), Ok(()));
    }

    #[test]
    fn offset_deltas_must_count_up_from_zero() {
        let wrong = || invalid("an offset delta does not match the record's position");
        check_contents(&counted(1, &plain(1)), wrong());
        check_contents(&counted(2, &[plain(0), plain(0)].concat()), wrong());
        check_contents(&counted(2, &[plain(1), plain(0)].concat()), wrong());
        check_contents(&counted(1, &plain(-1)), wrong());
    }

    #[test]
    fn records_must_fill_their_length_and_the_batch_exactly() {
        let record = body(0, Some(b"key"), Some(b"value"), &[(b"h", Some(b"v"))]);
        // The declared length runs past the batch.
        let mut section = Vec::new();
        put_varint(&mut section, record.len() as i64 + 1);
        section.extend_from_slice(&record);
        check_contents(
            &counted(1, &section),
            invalid("a record runs past the end of the batch"),
        );
        // The fields run past the declared length, at every place they can be cut.
        for cut in 0..record.len() {
            let batch = counted(1, &framed(&record[..cut]));
            let error = validate_contents(&batch, &parse_header(&batch).unwrap()).unwrap_err();
            assert!(
                matches!(
                    error,
                    BatchError::InvalidRecords(OVERRUN | VARINT_CUT | VARLONG_CUT)
                ),
                "cut at {cut}: {error:?}"
            );
        }
        // The declared length holds more than the fields.
        let padded = [record.clone(), vec![0]].concat();
        check_contents(
            &counted(1, &framed(&padded)),
            invalid("a record is longer than its fields"),
        );
        // Trailing bytes after the last record, whole or not.
        for garbage in [&[0u8][..], &[0x80], &plain(1)[..3]] {
            let section = [framed(&record), garbage.to_vec()].concat();
            check_contents(
                &counted(1, &section),
                invalid("bytes follow the last record"),
            );
        }
        let negative = [1u8, 0]; // length -1
        check_contents(&counted(1, &negative), invalid("negative record length"));
    }

    #[test]
    fn headers_must_frame() {
        let mut record = body(0, None, None, &[]);
        record.pop();
        let with_headers = |tail: &[u8]| counted(1, &framed(&[&record[..], tail].concat()));
        check_contents(&with_headers(&[1]), invalid("negative header count"));
        // One header whose key length is -1.
        check_contents(
            &with_headers(&[2, 1, 0]),
            invalid("negative header key length"),
        );
        // Two headers announced, one present.
        check_contents(&with_headers(&[4, 2, b'k', 0]), invalid(VARINT_CUT));
        check_contents(&with_headers(&[2, 2, b'k', 1]), Ok(()));
    }

    #[test]
    fn varints_must_be_short_and_in_range() {
        let too_long = invalid(VARINT_CUT);
        // A record length of zero written in six bytes.
        let section = [0x80, 0x80, 0x80, 0x80, 0x80, 0x00];
        check_contents(&counted(1, &section), too_long);
        // Five bytes, but past i32.
        let section = [0xff, 0xff, 0xff, 0xff, 0x7f];
        check_contents(&counted(1, &section), invalid("a varint is out of range"));
        // A timestamp delta of eleven bytes.
        let mut record = vec![0u8];
        record.extend_from_slice(&[0x80; 10]);
        record.push(0);
        check_contents(&counted(1, &framed(&record)), invalid(VARLONG_CUT));
        // A ten-byte varlong is fine.
        let mut record = vec![0u8];
        put_varint(&mut record, i64::MIN);
        assert_eq!(record.len(), 11);
        record.extend_from_slice(&body(0, None, None, &[])[2..]);
        check_contents(&counted(1, &framed(&record)), Ok(()));
    }

    #[test]
    fn codecs_are_checked_but_compressed_records_are_not_walked() {
        for codec in 5..=7 {
            let batch = raw_batch(codec, 1, 0, &plain(0));
            check_contents(&batch, Err(BatchError::UnsupportedCompression(codec as u8)));
            let batch = raw_batch(codec | ATTRIBUTE_LOG_APPEND_TIME, 1, 0, &plain(0));
            check_contents(&batch, Err(BatchError::UnsupportedCompression(codec as u8)));
        }
        for codec in 1..=4 {
            // Whatever the compressed bytes hold, only the header is checked.
            check_contents(&raw_batch(codec, 3, 2, b"not compressed at all"), Ok(()));
            check_contents(&raw_batch(codec, 3, 2, b""), Ok(()));
            check_contents(
                &raw_batch(codec, 0, 0, b""),
                invalid("the batch holds no records"),
            );
            check_contents(
                &raw_batch(codec, 3, 0, b"x"),
                invalid("the last offset delta does not match the record count"),
            );
        }
        for (attributes, compress) in codecs() {
            check_contents(&batch(&[0, 3, 1], attributes, compress), Ok(()));
        }
    }

    proptest::proptest! {
        #[test]
        fn encoded_records_are_valid(
            stamps in proptest::collection::vec(proptest::prelude::any::<i64>(), 1..20),
            value_len in 0usize..200,
        ) {
            let value = vec![1u8; value_len];
            let records: Vec<(i64, &[u8])> = stamps.iter().map(|&t| (t, &value[..])).collect();
            let bytes = counted(records.len() as i32, &encode_records(&records));
            let header = parse_header(&bytes).unwrap();
            proptest::prop_assert_eq!(validate_contents(&bytes, &header), Ok(()));
        }

        #[test]
        fn arbitrary_contents_never_panic(
            records in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..200),
            attributes in proptest::prelude::any::<i16>(),
            count in proptest::prelude::any::<i32>(),
        ) {
            let bytes = raw_batch(attributes, count.max(0), count.max(1) - 1, &records);
            let header = parse_header(&bytes).unwrap();
            let _ = validate_contents(&bytes, &header);
            let _ = validate_contents(&bytes[..bytes.len() / 2], &header);
        }

        #[test]
        fn mutated_records_never_panic(
            at in 0usize..400,
            value in proptest::prelude::any::<u8>(),
        ) {
            let headers: [Header; 2] = [(b"h", Some(b"v")), (b"", None)];
            let section = [
                framed(&body(0, Some(b"key"), Some(b"value"), &headers)),
                framed(&body(1, None, Some(&[3; 100]), &[])),
            ]
            .concat();
            let mut bytes = counted(2, &section);
            let at = BATCH_HEADER_LEN + at % section.len();
            bytes[at] = value;
            let header = parse_header(&bytes).unwrap();
            let _ = validate_contents(&bytes, &header);
        }
    }

    proptest::proptest! {
        #[test]
        fn arbitrary_record_sections_never_panic(
            records in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..200),
            attributes in 0i16..8,
            count in 0i32..50,
        ) {
            let bytes = BatchBuilder {
                attributes,
                last_offset_delta: count.max(1) - 1,
                records_count: count,
                max_timestamp: 5,
                ..BatchBuilder::default()
            }
            .build(&records);
            let header = parse_header(&bytes).unwrap();
            let _ = first_record_at_or_after(&bytes, &header, 0, 3);
            let _ = offset_of_max_timestamp(&bytes, &header);
        }
    }
}
