//! Produce, by hand: the request decoder (v3..=v9) hands record batches on as zero-copy slices
//! of the request frame, and the response encoder writes the answer for the same versions.

use bytes::{BufMut, Bytes, BytesMut};

use crate::wire::{self, Reader};
use crate::CodecError;

/// The Produce versions this module speaks. v9 is the first flexible one; v10 and later add
/// tagged leader hints, and v13 names topics by id only.
pub const PRODUCE_VERSION_MIN: i16 = 3;
pub const PRODUCE_VERSION_MAX: i16 = 9;
const PRODUCE_VERSION_FLEXIBLE_MIN: i16 = 9;

/// A topic entry takes at least a name length and a partition count (and a tag count when
/// flexible); a partition entry at least an index and a records length.
const TOPIC_LEN_MIN_CLASSIC: usize = 2 + 4;
const TOPIC_LEN_MIN_FLEXIBLE: usize = 1 + 1 + 1;
const PARTITION_LEN_MIN_CLASSIC: usize = 4 + 4;
const PARTITION_LEN_MIN_FLEXIBLE: usize = 4 + 1 + 1;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProduceRequest {
    pub transactional_id: Option<String>,
    pub acks: i16,
    pub timeout_ms: i32,
    pub topics: Vec<ProduceTopic>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProduceTopic {
    pub name: String,
    pub partitions: Vec<ProducePartition>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProducePartition {
    pub index: i32,
    /// The record batches exactly as sent: a slice of the request frame, never copied.
    pub records: Option<Bytes>,
}

#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ProduceResponse {
    pub topics: Vec<ProduceTopicResponse>,
    pub throttle_time_ms: i32,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProduceTopicResponse {
    pub name: String,
    pub partitions: Vec<ProducePartitionResponse>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProducePartitionResponse {
    pub index: i32,
    pub error_code: i16,
    pub base_offset: i64,
    pub log_append_time_ms: i64,
    pub log_start_offset: i64,
}

fn check_version(version: i16) -> Result<bool, CodecError> {
    if !(PRODUCE_VERSION_MIN..=PRODUCE_VERSION_MAX).contains(&version) {
        return Err(CodecError::UnsupportedVersion { key: 0, version });
    }
    Ok(version >= PRODUCE_VERSION_FLEXIBLE_MIN)
}

/// Decodes a ProduceRequest body (the bytes after the request header).
pub fn decode_produce_request(body: Bytes, version: i16) -> Result<ProduceRequest, CodecError> {
    let flexible = check_version(version)?;
    let mut reader = Reader::new(body);
    let transactional_id = reader.nullable_string(flexible)?;
    let acks = reader.i16()?;
    let timeout_ms = reader.i32()?;
    let topic_len_min = if flexible {
        TOPIC_LEN_MIN_FLEXIBLE
    } else {
        TOPIC_LEN_MIN_CLASSIC
    };
    let topic_count = reader.array_len(flexible, topic_len_min)?;
    let mut topics = Vec::with_capacity(topic_count);
    for _ in 0..topic_count {
        topics.push(decode_topic(&mut reader, flexible)?);
    }
    if flexible {
        reader.skip_tagged_fields()?;
    }
    Ok(ProduceRequest {
        transactional_id,
        acks,
        timeout_ms,
        topics,
    })
}

fn decode_topic(reader: &mut Reader, flexible: bool) -> Result<ProduceTopic, CodecError> {
    let name = reader.string(flexible)?;
    let partition_len_min = if flexible {
        PARTITION_LEN_MIN_FLEXIBLE
    } else {
        PARTITION_LEN_MIN_CLASSIC
    };
    let partition_count = reader.array_len(flexible, partition_len_min)?;
    let mut partitions = Vec::with_capacity(partition_count);
    for _ in 0..partition_count {
        let index = reader.i32()?;
        let records = reader.nullable_bytes(flexible)?;
        if flexible {
            reader.skip_tagged_fields()?;
        }
        partitions.push(ProducePartition { index, records });
    }
    if flexible {
        reader.skip_tagged_fields()?;
    }
    Ok(ProduceTopic { name, partitions })
}

/// Encodes a ProduceResponse body (no frame prefix, no response header).
pub fn encode_produce_response_body(buf: &mut BytesMut, response: &ProduceResponse, version: i16) {
    let flexible = check_version(version).expect("produce response version checked at decode");
    wire::put_array_len(buf, response.topics.len(), flexible);
    for topic in &response.topics {
        wire::put_string(buf, &topic.name, flexible);
        wire::put_array_len(buf, topic.partitions.len(), flexible);
        for partition in &topic.partitions {
            buf.put_i32(partition.index);
            buf.put_i16(partition.error_code);
            buf.put_i64(partition.base_offset);
            buf.put_i64(partition.log_append_time_ms);
            if version >= 5 {
                buf.put_i64(partition.log_start_offset);
            }
            if version >= 8 {
                // No per-batch errors and no error message: the error code says it all.
                wire::put_array_len(buf, 0, flexible);
                wire::put_nullable_string(buf, None, flexible);
            }
            if flexible {
                wire::put_empty_tags(buf);
            }
        }
        if flexible {
            wire::put_empty_tags(buf);
        }
    }
    buf.put_i32(response.throttle_time_ms);
    if flexible {
        wire::put_empty_tags(buf);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use kafka_protocol::messages::produce_request::{PartitionProduceData, TopicProduceData};
    use kafka_protocol::messages::produce_response as kp_response;
    use kafka_protocol::messages::{TopicName, TransactionalId};
    use kafka_protocol::protocol::{Decodable, Encodable, StrBytes};
    use proptest::prelude::*;

    fn check(input: &[u8], version: i16, expected: Result<ProduceRequest, CodecError>) {
        assert_eq!(
            decode_produce_request(Bytes::copy_from_slice(input), version),
            expected
        );
    }

    fn reference_request(request: &ProduceRequest) -> kafka_protocol::messages::ProduceRequest {
        kafka_protocol::messages::ProduceRequest::default()
            .with_transactional_id(
                request
                    .transactional_id
                    .clone()
                    .map(|id| TransactionalId(StrBytes::from_string(id))),
            )
            .with_acks(request.acks)
            .with_timeout_ms(request.timeout_ms)
            .with_topic_data(
                request
                    .topics
                    .iter()
                    .map(|topic| {
                        TopicProduceData::default()
                            .with_name(TopicName(StrBytes::from_string(topic.name.clone())))
                            .with_partition_data(
                                topic
                                    .partitions
                                    .iter()
                                    .map(|p| {
                                        PartitionProduceData::default()
                                            .with_index(p.index)
                                            .with_records(p.records.clone())
                                    })
                                    .collect(),
                            )
                    })
                    .collect(),
            )
    }

    fn sample() -> ProduceRequest {
        ProduceRequest {
            transactional_id: None,
            acks: -1,
            timeout_ms: 30_000,
            topics: vec![ProduceTopic {
                name: "t".into(),
                partitions: vec![
                    ProducePartition {
                        index: 0,
                        records: Some(Bytes::from_static(b"batch")),
                    },
                    ProducePartition {
                        index: 1,
                        records: None,
                    },
                ],
            }],
        }
    }

    #[test]
    fn decodes_what_kafka_protocol_encodes() {
        for version in PRODUCE_VERSION_MIN..=PRODUCE_VERSION_MAX {
            let mut buf = BytesMut::new();
            reference_request(&sample())
                .encode(&mut buf, version)
                .unwrap();
            check(&buf, version, Ok(sample()));
        }
    }

    #[test]
    fn records_are_slices_of_the_frame() {
        let mut buf = BytesMut::new();
        reference_request(&sample()).encode(&mut buf, 7).unwrap();
        let frame = buf.freeze();
        let request = decode_produce_request(frame.clone(), 7).unwrap();
        let records = request.topics[0].partitions[0].records.as_ref().unwrap();
        let frame_range = frame.as_ptr() as usize..frame.as_ptr() as usize + frame.len();
        assert!(frame_range.contains(&(records.as_ptr() as usize)));
    }

    #[test]
    fn bad_input() {
        // A topic count far above what the bytes can hold.
        check(
            &[0xff, 0xff, 0, 1, 0, 0, 0, 0, 0x7f, 0xff, 0xff, 0xff],
            3,
            Err(CodecError::Truncated),
        );
        // A records length past the end.
        check(
            &[
                0xff, 0xff, 0, 1, 0, 0, 0, 0, 0, 0, 0, 1, 0, 1, b't', 0, 0, 0, 1, 0, 0, 0, 0, 0, 0,
                0, 9, 1,
            ],
            3,
            Err(CodecError::Truncated),
        );
        check(&[], 3, Err(CodecError::Truncated));
        check(
            &[0xff, 0xff, 0, 1, 0, 0, 0, 0, 0, 0, 0, 0],
            2,
            Err(CodecError::UnsupportedVersion { key: 0, version: 2 }),
        );
    }

    #[test]
    fn responses_decode_with_kafka_protocol() {
        let response = ProduceResponse {
            topics: vec![ProduceTopicResponse {
                name: "topic".into(),
                partitions: vec![ProducePartitionResponse {
                    index: 2,
                    error_code: 0,
                    base_offset: 42,
                    log_append_time_ms: -1,
                    log_start_offset: 7,
                }],
            }],
            throttle_time_ms: 5,
        };
        for version in PRODUCE_VERSION_MIN..=PRODUCE_VERSION_MAX {
            let mut buf = BytesMut::new();
            encode_produce_response_body(&mut buf, &response, version);
            let mut bytes = buf.freeze();
            let decoded = kp_response::ProduceResponse::decode(&mut bytes, version).unwrap();
            assert!(bytes.is_empty(), "v{version} left bytes over");
            assert_eq!(decoded.throttle_time_ms, 5);
            let topic = &decoded.responses[0];
            assert_eq!(topic.name.0.as_str(), "topic");
            let partition = &topic.partition_responses[0];
            assert_eq!(
                (partition.index, partition.error_code, partition.base_offset),
                (2, 0, 42)
            );
            assert_eq!(partition.log_append_time_ms, -1);
            let expected_start = if version >= 5 { 7 } else { -1 };
            assert_eq!(partition.log_start_offset, expected_start);
        }
    }

    fn arb_request() -> impl Strategy<Value = ProduceRequest> {
        let partition = (
            any::<i32>(),
            proptest::option::of(proptest::collection::vec(any::<u8>(), 0..64)),
        )
            .prop_map(|(index, records)| ProducePartition {
                index,
                records: records.map(Bytes::from),
            });
        let topic = (
            "[a-zA-Z0-9._-]{1,20}",
            proptest::collection::vec(partition, 0..4),
        )
            .prop_map(|(name, partitions)| ProduceTopic { name, partitions });
        (
            proptest::option::of("[a-z]{0,10}"),
            any::<i16>(),
            any::<i32>(),
            proptest::collection::vec(topic, 0..4),
        )
            .prop_map(
                |(transactional_id, acks, timeout_ms, topics)| ProduceRequest {
                    transactional_id,
                    acks,
                    timeout_ms,
                    topics,
                },
            )
    }

    proptest! {
        #[test]
        fn round_trip(request in arb_request(), version in PRODUCE_VERSION_MIN..=PRODUCE_VERSION_MAX) {
            let mut buf = BytesMut::new();
            reference_request(&request).encode(&mut buf, version).unwrap();
            prop_assert_eq!(decode_produce_request(buf.freeze(), version), Ok(request));
        }

        #[test]
        fn never_panics(input in proptest::collection::vec(any::<u8>(), 0..256), version in 0i16..12) {
            let _ = decode_produce_request(Bytes::from(input), version);
        }

        #[test]
        fn never_panics_on_mutated_requests(request in arb_request(), version in PRODUCE_VERSION_MIN..=PRODUCE_VERSION_MAX,
                                           flips in proptest::collection::vec((any::<usize>(), any::<u8>()), 1..4)) {
            let mut buf = BytesMut::new();
            reference_request(&request).encode(&mut buf, version).unwrap();
            let mut raw = buf.to_vec();
            for (at, byte) in flips {
                if !raw.is_empty() {
                    let at = at % raw.len();
                    raw[at] = byte;
                }
            }
            let _ = decode_produce_request(Bytes::from(raw), version);
        }
    }
}
