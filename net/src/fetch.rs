//! Fetch, by hand: the request decoder (v4..=v12), and a response encoder that leaves record
//! bytes where they are. A response is a list of chunks: encoded bytes (frame prefix, header,
//! partition fields), then each partition's file regions, then the bytes that follow them, so
//! the sender can splice the regions from the page cache to the socket. For clients, a walk
//! over a response body that names the first field where it leaves the schema of its version.

use bytes::{BufMut, Bytes, BytesMut};

use crate::frame;
use crate::header::{self, RequestHeader};
use crate::wire::{self, Reader};
use crate::CodecError;

/// The Fetch versions this module speaks. v12 is the first flexible one; v13 and later name
/// topics by id only.
pub const FETCH_VERSION_MIN: i16 = 4;
pub const FETCH_VERSION_MAX: i16 = 12;
const FETCH_VERSION_FLEXIBLE_MIN: i16 = 12;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FetchRequest {
    pub replica_id: i32,
    pub max_wait_ms: i32,
    pub min_bytes: i32,
    pub max_bytes: i32,
    pub isolation_level: i8,
    pub session_id: i32,
    pub session_epoch: i32,
    pub topics: Vec<FetchTopic>,
    /// Topics and partitions to drop from an incremental fetch session (v7+).
    pub forgotten: Vec<(String, Vec<i32>)>,
    pub rack_id: String,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FetchTopic {
    pub name: String,
    pub partitions: Vec<FetchPartition>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FetchPartition {
    pub partition: i32,
    /// -1 before v9.
    pub current_leader_epoch: i32,
    pub fetch_offset: i64,
    /// The epoch of the last fetched record, for follower truncation (v12+); -1 before.
    pub last_fetched_epoch: i32,
    /// -1 before v5.
    pub log_start_offset: i64,
    pub partition_max_bytes: i32,
}

/// A run of record bytes that lives somewhere else (a file region); the encoder only needs
/// its length.
pub trait Region {
    fn len(&self) -> u64;
    fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// One piece of an encoded response, in the order it goes to the socket.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Chunk<R> {
    Bytes(Bytes),
    Region(R),
}

impl<R: Region> Chunk<R> {
    pub fn len(&self) -> u64 {
        match self {
            Chunk::Bytes(bytes) => bytes.len() as u64,
            Chunk::Region(region) => region.len(),
        }
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FetchResponse<R> {
    pub throttle_time_ms: i32,
    pub error_code: i16,
    pub session_id: i32,
    pub topics: Vec<FetchTopicResponse<R>>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FetchTopicResponse<R> {
    pub name: String,
    pub partitions: Vec<FetchPartitionResponse<R>>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FetchPartitionResponse<R> {
    pub partition: i32,
    pub error_code: i16,
    pub high_watermark: i64,
    pub last_stable_offset: i64,
    pub log_start_offset: i64,
    /// Concatenated in order; the records field's length is the sum of their lengths.
    pub records: Vec<R>,
    /// For a follower whose log diverged from the leader's: the largest epoch both hold at
    /// the follower's last fetched epoch and the leader's end offset for it (v12+, tag 0).
    pub diverging_epoch: Option<(i32, i64)>,
}

fn check_version(version: i16) -> Result<bool, CodecError> {
    if !(FETCH_VERSION_MIN..=FETCH_VERSION_MAX).contains(&version) {
        return Err(CodecError::UnsupportedVersion { key: 1, version });
    }
    Ok(version >= FETCH_VERSION_FLEXIBLE_MIN)
}

/// The fewest bytes one partition entry of a request takes in `version`.
fn partition_len_min(version: i16) -> usize {
    let mut len = 4 + 8 + 4; // partition, fetch_offset, partition_max_bytes
    if version >= 9 {
        len += 4; // current_leader_epoch
    }
    if version >= 5 {
        len += 8; // log_start_offset
    }
    if version >= 12 {
        len += 4 + 1; // last_fetched_epoch, tags
    }
    len
}

/// Decodes a FetchRequest body (the bytes after the request header).
pub fn decode_fetch_request(body: Bytes, version: i16) -> Result<FetchRequest, CodecError> {
    let flexible = check_version(version)?;
    let mut reader = Reader::new(body);
    let replica_id = reader.i32()?;
    let max_wait_ms = reader.i32()?;
    let min_bytes = reader.i32()?;
    let max_bytes = reader.i32()?;
    let isolation_level = reader.i8()?;
    let (session_id, session_epoch) = if version >= 7 {
        (reader.i32()?, reader.i32()?)
    } else {
        (0, -1)
    };
    let topic_len_min = if flexible { 1 + 1 + 1 } else { 2 + 4 };
    let topic_count = reader.array_len(flexible, topic_len_min)?;
    let mut topics = Vec::with_capacity(topic_count);
    for _ in 0..topic_count {
        topics.push(decode_topic(&mut reader, version, flexible)?);
    }
    let mut forgotten = Vec::new();
    if version >= 7 {
        let count = reader.array_len(flexible, topic_len_min)?;
        forgotten.reserve(count);
        for _ in 0..count {
            let name = reader.string(flexible)?;
            let partition_count = reader.array_len(flexible, 4)?;
            let mut partitions = Vec::with_capacity(partition_count);
            for _ in 0..partition_count {
                partitions.push(reader.i32()?);
            }
            if flexible {
                reader.skip_tagged_fields()?;
            }
            forgotten.push((name, partitions));
        }
    }
    let rack_id = if version >= 11 {
        reader.string(flexible)?
    } else {
        String::new()
    };
    if flexible {
        // The cluster id and replica state arrive as tagged fields; a single broker needs neither.
        reader.skip_tagged_fields()?;
    }
    Ok(FetchRequest {
        replica_id,
        max_wait_ms,
        min_bytes,
        max_bytes,
        isolation_level,
        session_id,
        session_epoch,
        topics,
        forgotten,
        rack_id,
    })
}

fn decode_topic(
    reader: &mut Reader,
    version: i16,
    flexible: bool,
) -> Result<FetchTopic, CodecError> {
    let name = reader.string(flexible)?;
    let count = reader.array_len(flexible, partition_len_min(version))?;
    let mut partitions = Vec::with_capacity(count);
    for _ in 0..count {
        let partition = reader.i32()?;
        let current_leader_epoch = if version >= 9 { reader.i32()? } else { -1 };
        let fetch_offset = reader.i64()?;
        let last_fetched_epoch = if version >= 12 { reader.i32()? } else { -1 };
        let log_start_offset = if version >= 5 { reader.i64()? } else { -1 };
        let partition_max_bytes = reader.i32()?;
        if flexible {
            reader.skip_tagged_fields()?;
        }
        partitions.push(FetchPartition {
            partition,
            current_leader_epoch,
            fetch_offset,
            last_fetched_epoch,
            log_start_offset,
            partition_max_bytes,
        });
    }
    if flexible {
        reader.skip_tagged_fields()?;
    }
    Ok(FetchTopic { name, partitions })
}

/// Collects chunks while the response is written: bytes go into the current buffer, and a
/// region closes it and starts a new one. The first buffer, which holds the frame prefix, is
/// kept aside (its place in `chunks` holds an empty placeholder) so that the prefix can be
/// filled in once every length is known.
struct ChunkWriter<R> {
    chunks: Vec<Chunk<R>>,
    first: Option<BytesMut>,
    buf: BytesMut,
    len: u64,
}

impl<R: Region> ChunkWriter<R> {
    fn push_region(&mut self, region: R) {
        if region.is_empty() {
            return;
        }
        let buf = self.buf.split();
        self.len += buf.len() as u64 + region.len();
        if self.first.is_none() {
            self.first = Some(buf);
            self.chunks.push(Chunk::Bytes(Bytes::new()));
        } else if !buf.is_empty() {
            self.chunks.push(Chunk::Bytes(buf.freeze()));
        }
        self.chunks.push(Chunk::Region(region));
    }

    fn finish(mut self) -> Vec<Chunk<R>> {
        let tail = self.buf.split();
        self.len += tail.len() as u64;
        let mut first = match self.first.take() {
            Some(first) => {
                if !tail.is_empty() {
                    self.chunks.push(Chunk::Bytes(tail.freeze()));
                }
                first
            }
            None => {
                self.chunks.push(Chunk::Bytes(Bytes::new()));
                tail
            }
        };
        // Everything written after the first buffer: later buffers and the regions.
        let rest_len = self.len - first.len() as u64;
        frame::finish_frame(&mut first, rest_len);
        self.chunks[0] = Chunk::Bytes(first.freeze());
        self.chunks
    }
}

/// The whole response frame: length prefix, response header, body. Record bytes are Region
/// chunks, never copied. The version is the request's, checked when the request was decoded.
pub fn encode_fetch_response<R: Region>(
    header: &RequestHeader,
    response: FetchResponse<R>,
) -> Vec<Chunk<R>> {
    let version = header.api_version;
    let flexible = check_version(version).expect("fetch response version checked at decode");
    let mut buf = BytesMut::with_capacity(256);
    frame::start_frame(&mut buf);
    header::encode_response_header(&mut buf, header);
    buf.put_i32(response.throttle_time_ms);
    if version >= 7 {
        buf.put_i16(response.error_code);
        buf.put_i32(response.session_id);
    }
    wire::put_array_len(&mut buf, response.topics.len(), flexible);
    let mut writer = ChunkWriter {
        chunks: Vec::new(),
        first: None,
        buf,
        len: 0,
    };
    for topic in response.topics {
        wire::put_string(&mut writer.buf, &topic.name, flexible);
        wire::put_array_len(&mut writer.buf, topic.partitions.len(), flexible);
        for partition in topic.partitions {
            encode_partition(&mut writer, partition, version, flexible);
        }
        if flexible {
            wire::put_empty_tags(&mut writer.buf);
        }
    }
    if flexible {
        wire::put_empty_tags(&mut writer.buf);
    }
    writer.finish()
}

fn encode_partition<R: Region>(
    writer: &mut ChunkWriter<R>,
    partition: FetchPartitionResponse<R>,
    version: i16,
    flexible: bool,
) {
    let buf = &mut writer.buf;
    buf.put_i32(partition.partition);
    buf.put_i16(partition.error_code);
    buf.put_i64(partition.high_watermark);
    buf.put_i64(partition.last_stable_offset);
    if version >= 5 {
        buf.put_i64(partition.log_start_offset);
    }
    // No aborted transactions: Sluice has no transactions, and null is what Kafka writes
    // when there are none to report.
    if flexible {
        wire::put_uvarint(buf, 0);
    } else {
        buf.put_i32(-1);
    }
    if version >= 11 {
        buf.put_i32(-1); // preferred_read_replica: read from the leader
    }
    let records_len: u64 = partition.records.iter().map(Region::len).sum();
    let records_len = u32::try_from(records_len)
        .ok()
        .filter(|len| *len < i32::MAX as u32);
    let records_len = records_len.expect("records of one partition above i32::MAX bytes");
    if flexible {
        wire::put_uvarint(buf, records_len + 1);
    } else {
        buf.put_i32(records_len as i32);
    }
    for region in partition.records {
        writer.push_region(region);
    }
    if flexible {
        match partition.diverging_epoch {
            Some((epoch, end_offset)) => {
                // One tagged field: tag 0, then the struct's size and bytes (epoch, end
                // offset, and its own empty tag section).
                wire::put_uvarint(&mut writer.buf, 1);
                wire::put_uvarint(&mut writer.buf, 0);
                wire::put_uvarint(&mut writer.buf, 4 + 8 + 1);
                writer.buf.put_i32(epoch);
                writer.buf.put_i64(end_offset);
                wire::put_empty_tags(&mut writer.buf);
            }
            None => wire::put_empty_tags(&mut writer.buf),
        }
    }
}

/// Where a Fetch response leaves Kafka's schema for its version. A client decoder only says
/// that a response does not parse; this names the field and the byte (counted from the start
/// of the body, after the response header) so the report can go to the broker's authors.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FetchResponseDeviation {
    #[error("{field} at byte {offset} runs past the end of the response")]
    Truncated { field: &'static str, offset: usize },
    #[error("{field} at byte {offset}: {problem}")]
    Malformed {
        field: &'static str,
        offset: usize,
        problem: &'static str,
    },
    /// A tag the schema names, sent in a version before the one that introduced it. Kafka's
    /// readers refuse it (unknown tags are skipped, known ones are checked against the version).
    #[error(
        "tagged field {tag} ({name}, {size} bytes) of {field} at byte {offset} belongs to \
         v{since} and later, not v{version}"
    )]
    TagBeforeItsVersion {
        field: &'static str,
        offset: usize,
        tag: u32,
        size: u32,
        name: &'static str,
        since: i16,
        version: i16,
    },
}

/// The tagged fields Kafka's FetchResponse schema defines: where, which tag, its name, and the
/// first version that carries it.
const RESPONSE_TAGS: &[(&str, u32, &str, i16)] = &[
    ("the response", 0, "NodeEndpoints", 16),
    ("a partition", 0, "DivergingEpoch", 12),
    ("a partition", 1, "CurrentLeader", 12),
    ("a partition", 2, "SnapshotId", 12),
];

/// Walks a Fetch response body by the schema of `version`, without keeping anything, and
/// returns the first place it deviates. `Ok` means the walk found nothing wrong.
pub fn check_fetch_response(body: Bytes, version: i16) -> Result<(), FetchResponseDeviation> {
    let Ok(flexible) = check_version(version) else {
        // Outside the versions this module knows the schema of: nothing to say.
        return Ok(());
    };
    let mut walk = Walk {
        total: body.len(),
        reader: Reader::new(body),
        version,
        flexible,
    };
    walk.step("throttle_time_ms", |r| r.i32())?;
    if version >= 7 {
        walk.step("error_code", |r| r.i16())?;
        walk.step("session_id", |r| r.i32())?;
    }
    // A topic takes at least a name length, a partition count and, when flexible, a tag count.
    let topic_len_min = if flexible { 3 } else { 2 + 4 };
    let topic_count = walk.array_len("responses", topic_len_min)?;
    for _ in 0..topic_count {
        walk.step("topic", |r| r.string(flexible))?;
        let partition_count = walk.array_len("partitions", 4 + 2 + 8)?;
        for _ in 0..partition_count {
            walk.partition()?;
        }
        walk.tags("a topic")?;
    }
    walk.tags("the response")
}

struct Walk {
    total: usize,
    reader: Reader,
    version: i16,
    flexible: bool,
}

impl Walk {
    fn offset(&self) -> usize {
        self.total - self.reader.remaining()
    }

    fn step<T>(
        &mut self,
        field: &'static str,
        read: impl FnOnce(&mut Reader) -> Result<T, CodecError>,
    ) -> Result<T, FetchResponseDeviation> {
        let offset = self.offset();
        read(&mut self.reader).map_err(|error| match error {
            CodecError::Malformed(problem) => FetchResponseDeviation::Malformed {
                field,
                offset,
                problem,
            },
            _ => FetchResponseDeviation::Truncated { field, offset },
        })
    }

    /// A non-nullable array's count; null and negative counts are deviations here, since the
    /// schema has no nullable arrays in this response apart from aborted transactions.
    fn array_len(
        &mut self,
        field: &'static str,
        element_len_min: usize,
    ) -> Result<usize, FetchResponseDeviation> {
        let offset = self.offset();
        let flexible = self.flexible;
        let count = self.step(field, |r| {
            if flexible {
                r.uvarint().map(|n| i64::from(n) - 1)
            } else {
                r.i32().map(i64::from)
            }
        })?;
        self.count(field, offset, count, element_len_min)
    }

    fn count(
        &self,
        field: &'static str,
        offset: usize,
        count: i64,
        element_len_min: usize,
    ) -> Result<usize, FetchResponseDeviation> {
        let count = usize::try_from(count).map_err(|_| FetchResponseDeviation::Malformed {
            field,
            offset,
            problem: "null or negative count in a non-nullable array",
        })?;
        if count > self.reader.remaining() / element_len_min {
            return Err(FetchResponseDeviation::Truncated { field, offset });
        }
        Ok(count)
    }

    fn partition(&mut self) -> Result<(), FetchResponseDeviation> {
        let (version, flexible) = (self.version, self.flexible);
        self.step("partition_index", |r| r.i32())?;
        self.step("error_code", |r| r.i16())?;
        self.step("high_watermark", |r| r.i64())?;
        self.step("last_stable_offset", |r| r.i64())?;
        if version >= 5 {
            self.step("log_start_offset", |r| r.i64())?;
        }
        let offset = self.offset();
        let aborted = self.step("aborted_transactions", |r| {
            if flexible {
                r.uvarint().map(|n| i64::from(n) - 1)
            } else {
                r.i32().map(i64::from)
            }
        })?;
        // Nullable: -1 says there are none, as an empty array does.
        if aborted != -1 {
            let entry_len_min = 8 + 8 + usize::from(flexible);
            let count = self.count("aborted_transactions", offset, aborted, entry_len_min)?;
            for _ in 0..count {
                self.step("aborted producer_id", |r| r.i64())?;
                self.step("aborted first_offset", |r| r.i64())?;
                self.tags("an aborted transaction")?;
            }
        }
        if version >= 11 {
            self.step("preferred_read_replica", |r| r.i32())?;
        }
        // Null and empty records both mean no batches; a partial batch at the end is the
        // client's to drop, so the bytes themselves are not walked.
        self.step("records", |r| r.nullable_bytes(flexible))?;
        self.tags("a partition")
    }

    fn tags(&mut self, field: &'static str) -> Result<(), FetchResponseDeviation> {
        if !self.flexible {
            return Ok(());
        }
        let offset = self.offset();
        let count = self.step(field, |r| r.uvarint())?;
        // Each tagged field takes at least a tag and a size byte.
        self.count(field, offset, i64::from(count), 2)?;
        for _ in 0..count {
            let offset = self.offset();
            let tag = self.step(field, |r| r.uvarint())?;
            let size = self.step(field, |r| r.uvarint())?;
            let known = RESPONSE_TAGS
                .iter()
                .find(|(at, known, _, _)| *at == field && *known == tag);
            if let Some(&(_, _, name, since)) = known {
                if self.version < since {
                    return Err(FetchResponseDeviation::TagBeforeItsVersion {
                        field,
                        offset,
                        tag,
                        size,
                        name,
                        since,
                        version: self.version,
                    });
                }
            }
            let size = usize::try_from(size).unwrap_or(usize::MAX);
            self.step(field, |r| r.bytes(size))?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use kafka_protocol::messages::fetch_request as kp_request;
    use kafka_protocol::messages::{BrokerId, TopicName};
    use kafka_protocol::protocol::{Decodable, Encodable, StrBytes};
    use proptest::prelude::*;

    #[derive(Debug, Clone, PartialEq, Eq)]
    struct MemRegion(Bytes);

    impl Region for MemRegion {
        fn len(&self) -> u64 {
            self.0.len() as u64
        }
    }

    fn check(input: &[u8], version: i16, expected: Result<FetchRequest, CodecError>) {
        assert_eq!(
            decode_fetch_request(Bytes::copy_from_slice(input), version),
            expected
        );
    }

    /// The request as an older version carries it: fields the version lacks take defaults.
    fn sample(version: i16) -> FetchRequest {
        FetchRequest {
            replica_id: -1,
            max_wait_ms: 500,
            min_bytes: 1,
            max_bytes: 52_428_800,
            isolation_level: 1,
            session_id: if version >= 7 { 12 } else { 0 },
            session_epoch: if version >= 7 { 3 } else { -1 },
            topics: vec![FetchTopic {
                name: "events".into(),
                partitions: vec![FetchPartition {
                    partition: 4,
                    current_leader_epoch: if version >= 9 { 2 } else { -1 },
                    fetch_offset: 1000,
                    last_fetched_epoch: if version >= 12 { 1 } else { -1 },
                    log_start_offset: if version >= 5 { 10 } else { -1 },
                    partition_max_bytes: 1_048_576,
                }],
            }],
            forgotten: if version >= 7 {
                vec![("old".into(), vec![1, 2])]
            } else {
                vec![]
            },
            rack_id: if version >= 11 {
                "rack-a".into()
            } else {
                String::new()
            },
        }
    }

    fn reference_request(request: &FetchRequest) -> kp_request::FetchRequest {
        kp_request::FetchRequest::default()
            .with_cluster_id(Some(StrBytes::from_static_str("cluster")))
            .with_replica_id(BrokerId(request.replica_id))
            .with_max_wait_ms(request.max_wait_ms)
            .with_min_bytes(request.min_bytes)
            .with_max_bytes(request.max_bytes)
            .with_isolation_level(request.isolation_level)
            .with_session_id(request.session_id)
            .with_session_epoch(request.session_epoch)
            .with_topics(
                request
                    .topics
                    .iter()
                    .map(|topic| {
                        kp_request::FetchTopic::default()
                            .with_topic(TopicName(StrBytes::from_string(topic.name.clone())))
                            .with_partitions(
                                topic
                                    .partitions
                                    .iter()
                                    .map(|p| {
                                        kp_request::FetchPartition::default()
                                            .with_partition(p.partition)
                                            .with_current_leader_epoch(p.current_leader_epoch)
                                            .with_fetch_offset(p.fetch_offset)
                                            .with_last_fetched_epoch(p.last_fetched_epoch)
                                            .with_log_start_offset(p.log_start_offset)
                                            .with_partition_max_bytes(p.partition_max_bytes)
                                    })
                                    .collect(),
                            )
                    })
                    .collect(),
            )
            .with_forgotten_topics_data(
                request
                    .forgotten
                    .iter()
                    .map(|(name, partitions)| {
                        kp_request::ForgottenTopic::default()
                            .with_topic(TopicName(StrBytes::from_string(name.clone())))
                            .with_partitions(partitions.clone())
                    })
                    .collect(),
            )
            .with_rack_id(StrBytes::from_string(request.rack_id.clone()))
    }

    #[test]
    fn decodes_what_kafka_protocol_encodes() {
        for version in FETCH_VERSION_MIN..=FETCH_VERSION_MAX {
            let mut buf = BytesMut::new();
            reference_request(&sample(version))
                .encode(&mut buf, version)
                .unwrap();
            check(&buf, version, Ok(sample(version)));
        }
    }

    #[test]
    fn bad_input() {
        check(&[], 4, Err(CodecError::Truncated));
        let mut huge = vec![0u8; 17];
        huge.extend_from_slice(&[0x7f, 0xff, 0xff, 0xff]);
        check(&huge, 4, Err(CodecError::Truncated));
        check(
            &huge,
            13,
            Err(CodecError::UnsupportedVersion {
                key: 1,
                version: 13,
            }),
        );
    }

    fn sample_response(with_records: bool) -> FetchResponse<MemRegion> {
        let records = if with_records {
            vec![
                MemRegion(Bytes::from_static(b"first-batch")),
                MemRegion(Bytes::from_static(b"second")),
            ]
        } else {
            vec![]
        };
        FetchResponse {
            throttle_time_ms: 3,
            error_code: 0,
            session_id: 99,
            topics: vec![FetchTopicResponse {
                name: "events".into(),
                partitions: vec![
                    FetchPartitionResponse {
                        partition: 0,
                        error_code: 0,
                        high_watermark: 50,
                        last_stable_offset: 50,
                        log_start_offset: 5,
                        records,
                        diverging_epoch: None,
                    },
                    FetchPartitionResponse {
                        partition: 1,
                        error_code: 1,
                        high_watermark: -1,
                        last_stable_offset: -1,
                        log_start_offset: -1,
                        records: vec![],
                        diverging_epoch: None,
                    },
                ],
            }],
        }
    }

    #[test]
    fn a_diverging_epoch_reaches_a_v12_follower() {
        let header = RequestHeader {
            api_key: 1,
            api_version: 12,
            correlation_id: 5,
            client_id: None,
        };
        let mut response = sample_response(false);
        response.topics[0].partitions[0].diverging_epoch = Some((3, 42));
        let mut bytes = concat(&encode_fetch_response(&header, response));
        let _ = bytes.split_to(4);
        kafka_protocol::messages::ResponseHeader::decode(&mut bytes, 1).unwrap();
        let decoded = kafka_protocol::messages::FetchResponse::decode(&mut bytes, 12).unwrap();
        assert!(bytes.is_empty());
        let partitions = &decoded.responses[0].partitions;
        let diverging = &partitions[0].diverging_epoch;
        assert_eq!((diverging.epoch, diverging.end_offset), (3, 42));
        assert_eq!(partitions[1].diverging_epoch.epoch, -1, "absent means -1");
    }

    fn concat(chunks: &[Chunk<MemRegion>]) -> Bytes {
        let mut out = BytesMut::new();
        for chunk in chunks {
            match chunk {
                Chunk::Bytes(bytes) => out.put_slice(bytes),
                Chunk::Region(region) => out.put_slice(&region.0),
            }
        }
        out.freeze()
    }

    #[test]
    fn responses_round_trip_through_kafka_protocol() {
        for version in FETCH_VERSION_MIN..=FETCH_VERSION_MAX {
            for with_records in [true, false] {
                let header = RequestHeader {
                    api_key: 1,
                    api_version: version,
                    correlation_id: 77,
                    client_id: None,
                };
                let chunks = encode_fetch_response(&header, sample_response(with_records));
                let region_count = chunks
                    .iter()
                    .filter(|c| matches!(c, Chunk::Region(_)))
                    .count();
                assert_eq!(region_count, if with_records { 2 } else { 0 });
                let mut bytes = concat(&chunks);
                let frame_len = i32::from_be_bytes(bytes[..4].try_into().unwrap());
                assert_eq!(frame_len as usize, bytes.len() - 4);
                let _ = bytes.split_to(4);
                let response_header = kafka_protocol::messages::ResponseHeader::decode(
                    &mut bytes,
                    if version >= 12 { 1 } else { 0 },
                )
                .unwrap();
                assert_eq!(response_header.correlation_id, 77);
                let decoded =
                    kafka_protocol::messages::FetchResponse::decode(&mut bytes, version).unwrap();
                assert!(bytes.is_empty(), "v{version} left bytes over");
                assert_eq!(decoded.throttle_time_ms, 3);
                if version >= 7 {
                    assert_eq!((decoded.error_code, decoded.session_id), (0, 99));
                }
                let topic = &decoded.responses[0];
                assert_eq!(topic.topic.0.as_str(), "events");
                let first = &topic.partitions[0];
                assert_eq!(
                    (
                        first.partition_index,
                        first.error_code,
                        first.high_watermark,
                        first.last_stable_offset
                    ),
                    (0, 0, 50, 50)
                );
                assert_eq!(first.log_start_offset, if version >= 5 { 5 } else { -1 });
                assert_eq!(first.preferred_read_replica, BrokerId(-1));
                let expected: &[u8] = if with_records {
                    b"first-batchsecond"
                } else {
                    b""
                };
                assert_eq!(first.records.as_deref(), Some(expected));
                let second = &topic.partitions[1];
                assert_eq!((second.partition_index, second.error_code), (1, 1));
                assert_eq!(second.records.as_deref(), Some(&b""[..]));
            }
        }
    }

    /// A v12 response body by hand: one topic "t", one partition 0 holding `records`, no
    /// aborted transactions (compact null), then `partition_tags` and `response_tags` as raw
    /// tagged-field sections (count included).
    fn v12_body(records: Option<&[u8]>, partition_tags: &[u8], response_tags: &[u8]) -> Bytes {
        let mut buf = BytesMut::new();
        buf.put_i32(0); // throttle_time_ms
        buf.put_i16(0); // error_code
        buf.put_i32(0); // session_id
        wire::put_uvarint(&mut buf, 2); // one topic
        wire::put_string(&mut buf, "t", true);
        wire::put_uvarint(&mut buf, 2); // one partition
        buf.put_i32(0);
        buf.put_i16(0);
        buf.put_i64(7); // high_watermark
        buf.put_i64(7); // last_stable_offset
        buf.put_i64(0); // log_start_offset
        wire::put_uvarint(&mut buf, 0); // aborted_transactions: null
        buf.put_i32(-1); // preferred_read_replica
        match records {
            None => wire::put_uvarint(&mut buf, 0),
            Some(records) => {
                wire::put_uvarint(&mut buf, records.len() as u32 + 1);
                buf.put_slice(records);
            }
        }
        buf.put_slice(partition_tags);
        wire::put_empty_tags(&mut buf); // topic
        buf.put_slice(response_tags);
        buf.freeze()
    }

    fn kafka_decodes(body: &Bytes, version: i16) -> bool {
        kafka_protocol::messages::FetchResponse::decode(&mut body.clone(), version).is_ok()
    }

    /// NodeEndpoints (response tag 0) exists from v16. A broker that sends it, even empty, in a
    /// v12 response is refused by Kafka's own readers and by kafka-protocol; the walk names it.
    #[test]
    fn response_tag_zero_before_v16_is_named() {
        // One tagged field: tag 0, size 1, an empty compact array.
        let body = v12_body(Some(b"batch"), &[0], &[1, 0, 1, 1]);
        assert!(!kafka_decodes(&body, 12));
        let offset = body.len() - 4 + 1;
        let deviation = check_fetch_response(body, 12).unwrap_err();
        assert_eq!(
            deviation,
            FetchResponseDeviation::TagBeforeItsVersion {
                field: "the response",
                offset,
                tag: 0,
                size: 1,
                name: "NodeEndpoints",
                since: 16,
                version: 12,
            }
        );
        assert_eq!(
            deviation.to_string(),
            format!(
                "tagged field 0 (NodeEndpoints, 1 bytes) of the response at byte {offset} \
                 belongs to v16 and later, not v12"
            )
        );
    }

    /// What the protocol allows passes the walk and the decoder alike: null or empty records,
    /// a trailing partial batch (the records are not walked), partition tags defined at v12,
    /// and tags the schema does not know.
    #[test]
    fn allowed_shapes_pass() {
        let diverging_epoch = [1, 0, 13, 0, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0, 5, 0];
        for body in [
            v12_body(None, &[0], &[0]),
            v12_body(Some(b""), &[0], &[0]),
            v12_body(Some(&[0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1]), &[0], &[0]),
            v12_body(Some(b"batch"), &diverging_epoch, &[0]),
            v12_body(Some(b"batch"), &[0], &[1, 9, 2, 0xaa, 0xbb]),
        ] {
            assert!(kafka_decodes(&body, 12), "{body:?}");
            assert_eq!(check_fetch_response(body, 12), Ok(()));
        }
    }

    #[test]
    fn walk_names_truncated_and_malformed_fields() {
        let body = v12_body(Some(b"batch"), &[0], &[0]);
        assert_eq!(
            check_fetch_response(body.slice(..24), 12),
            Err(FetchResponseDeviation::Truncated {
                field: "partitions",
                offset: 13,
            })
        );
        // Cut inside the records: their length byte sits before five record bytes and three
        // tag counts.
        assert_eq!(
            check_fetch_response(body.slice(..body.len() - 5), 12),
            Err(FetchResponseDeviation::Truncated {
                field: "records",
                offset: body.len() - 9,
            })
        );
        let mut negative_topics = body.to_vec();
        negative_topics[10] = 0; // compact count 0: a null non-nullable array
        assert_eq!(
            check_fetch_response(Bytes::from(negative_topics), 12),
            Err(FetchResponseDeviation::Malformed {
                field: "responses",
                offset: 10,
                problem: "null or negative count in a non-nullable array",
            })
        );
    }

    #[test]
    fn our_responses_pass_the_walk() {
        for version in FETCH_VERSION_MIN..=FETCH_VERSION_MAX {
            for with_records in [true, false] {
                let header = RequestHeader {
                    api_key: 1,
                    api_version: version,
                    correlation_id: 1,
                    client_id: None,
                };
                let mut bytes = concat(&encode_fetch_response(
                    &header,
                    sample_response(with_records),
                ));
                // Frame prefix, correlation id and, from v12, the header's tag count.
                let _ = bytes.split_to(8 + usize::from(version >= 12));
                assert_eq!(check_fetch_response(bytes, version), Ok(()), "v{version}");
            }
        }
    }

    proptest! {
        #[test]
        fn never_panics(input in proptest::collection::vec(any::<u8>(), 0..256), version in 0i16..16) {
            let _ = decode_fetch_request(Bytes::from(input), version);
        }

        #[test]
        fn walk_never_panics(input in proptest::collection::vec(any::<u8>(), 0..256), version in 0i16..16) {
            let _ = check_fetch_response(Bytes::from(input), version);
        }

        #[test]
        fn never_panics_on_mutated_requests(version in FETCH_VERSION_MIN..=FETCH_VERSION_MAX,
                                           flips in proptest::collection::vec((any::<usize>(), any::<u8>()), 1..4)) {
            let mut buf = BytesMut::new();
            reference_request(&sample(version)).encode(&mut buf, version).unwrap();
            let mut raw = buf.to_vec();
            for (at, byte) in flips {
                let at = at % raw.len();
                raw[at] = byte;
            }
            let _ = decode_fetch_request(Bytes::from(raw), version);
        }
    }
}
