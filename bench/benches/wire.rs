//! Micro-benchmarks of the broker's per-request hot paths that live in sluice-net and need
//! no disk: splitting and decoding request frames, the CRC32C a produce is validated with,
//! and encoding a fetch response around file regions. Storage append and lookup have their
//! own benchmarks in storage/benches/.
//!
//! cargo bench -p sluice-bench --bench wire

use bytes::{BufMut, Bytes, BytesMut};
use criterion::{criterion_group, criterion_main, BatchSize, Criterion, Throughput};
use kafka_protocol::messages::fetch_request::{FetchPartition, FetchTopic};
use kafka_protocol::messages::{ApiKey, BrokerId, FetchRequest, TopicName};
use kafka_protocol::protocol::{Encodable, StrBytes};
use kafka_protocol::records::{
    Compression, Record, RecordBatchEncoder, RecordEncodeOptions, TimestampType,
};
use sluice_net::client::produce_request;
use sluice_net::fetch::{FetchPartitionResponse, FetchResponse, FetchTopicResponse};
use sluice_net::frame::{split_frame, REQUEST_SIZE_MAX_DEFAULT};
use sluice_net::header::{encode_request_header, request_header_version, RequestHeader};
use sluice_net::{decode_request, encode_fetch_response, Region, Request};

/// The part of a RecordBatch v2 the CRC32C covers: attributes to the end.
const CRC_COVERS_FROM: usize = 21;
const PRODUCE_VERSION: i16 = 9;
const FETCH_VERSION: i16 = 12;

/// An uncompressed batch of `records` records with 1 KiB values, as producers send them.
fn batch(records: usize) -> Bytes {
    let value = Bytes::from(vec![b'v'; 1024]);
    let records: Vec<Record> = (0..records)
        .map(|i| Record {
            transactional: false,
            control: false,
            partition_leader_epoch: -1,
            producer_id: -1,
            producer_epoch: -1,
            timestamp_type: TimestampType::Creation,
            offset: i as i64,
            sequence: i as i32 - 1,
            timestamp: 1_700_000_000_000,
            key: None,
            value: Some(value.clone()),
            headers: Default::default(),
            delete_horizon: false,
        })
        .collect();
    let mut buf = BytesMut::new();
    let options = RecordEncodeOptions {
        version: 2,
        compression: Compression::None,
    };
    RecordBatchEncoder::encode(&mut buf, &records, &options).expect("batch encodes");
    buf.freeze()
}

/// A whole request frame (length prefix included), as it arrives from a socket.
fn frame<R: Encodable>(api_key: i16, version: i16, request: &R) -> BytesMut {
    let header = RequestHeader {
        api_key,
        api_version: version,
        correlation_id: 7,
        client_id: Some("bench".to_owned()),
    };
    let mut body = BytesMut::new();
    let header_version = request_header_version(api_key, version).expect("known api");
    encode_request_header(&mut body, &header, header_version);
    request.encode(&mut body, version).expect("request encodes");
    let mut frame = BytesMut::with_capacity(4 + body.len());
    frame.put_i32(body.len() as i32);
    frame.extend_from_slice(&body);
    frame
}

fn fetch_request(partitions: i32) -> FetchRequest {
    let partitions = (0..partitions)
        .map(|partition| {
            FetchPartition::default()
                .with_partition(partition)
                .with_fetch_offset(1_000_000)
                .with_partition_max_bytes(1 << 20)
        })
        .collect();
    FetchRequest::default()
        .with_replica_id(BrokerId(-1))
        .with_max_wait_ms(500)
        .with_min_bytes(1)
        .with_max_bytes(50 << 20)
        .with_topics(vec![FetchTopic::default()
            .with_topic(TopicName(StrBytes::from_static_str("bench")))
            .with_partitions(partitions)])
}

fn frame_decode(c: &mut Criterion) {
    let mut group = c.benchmark_group("frame_decode");
    for (name, records) in [("produce_16KiB", 15), ("produce_1MiB", 1014)] {
        let request = produce_request("bench", 3, 1, 30_000, batch(records));
        let template = frame(ApiKey::Produce as i16, PRODUCE_VERSION, &request);
        // Per request, not per byte: batches stay slices of the frame, so the decode cost
        // does not grow with their size.
        group.throughput(Throughput::Elements(1));
        group.bench_function(name, |b| {
            b.iter_batched(
                || template.clone(),
                |mut buf| {
                    let frame = split_frame(&mut buf, REQUEST_SIZE_MAX_DEFAULT)
                        .expect("valid frame")
                        .expect("whole frame");
                    let (_, request) = decode_request(frame).expect("decodes");
                    assert!(matches!(request, Request::Produce(_)));
                    request
                },
                BatchSize::SmallInput,
            )
        });
    }
    let template = frame(ApiKey::Fetch as i16, FETCH_VERSION, &fetch_request(16));
    group.throughput(Throughput::Elements(1));
    group.bench_function("fetch_16_partitions", |b| {
        b.iter_batched(
            || template.clone(),
            |mut buf| {
                let frame = split_frame(&mut buf, REQUEST_SIZE_MAX_DEFAULT)
                    .expect("valid frame")
                    .expect("whole frame");
                decode_request(frame).expect("decodes")
            },
            BatchSize::SmallInput,
        )
    });
    group.finish();
}

fn produce_crc(c: &mut Criterion) {
    let mut group = c.benchmark_group("produce_crc32c");
    for (name, records) in [("16KiB", 15), ("1MiB", 1014)] {
        let batch = batch(records);
        let covered = &batch[CRC_COVERS_FROM..];
        group.throughput(Throughput::Bytes(covered.len() as u64));
        group.bench_function(name, |b| b.iter(|| crc32c::crc32c(covered)));
    }
    group.finish();
}

/// A file region stand-in: the encoder only asks a region for its length.
#[derive(Debug, Clone, Copy)]
struct FakeRegion(u64);

impl Region for FakeRegion {
    fn len(&self) -> u64 {
        self.0
    }
}

fn fetch_encode(c: &mut Criterion) {
    let mut group = c.benchmark_group("fetch_encode");
    let header = RequestHeader {
        api_key: ApiKey::Fetch as i16,
        api_version: FETCH_VERSION,
        correlation_id: 7,
        client_id: Some("bench".to_owned()),
    };
    for partitions in [1, 16] {
        let response = FetchResponse {
            throttle_time_ms: 0,
            error_code: 0,
            session_id: 0,
            topics: vec![FetchTopicResponse {
                name: "bench".to_owned(),
                partitions: (0..partitions)
                    .map(|partition| FetchPartitionResponse {
                        partition,
                        error_code: 0,
                        high_watermark: 2_000_000,
                        last_stable_offset: 2_000_000,
                        log_start_offset: 0,
                        records: vec![FakeRegion(1 << 20)],
                        diverging_epoch: None,
                    })
                    .collect(),
            }],
        };
        group.throughput(Throughput::Elements(1));
        group.bench_function(format!("{partitions}_partitions_1MiB_regions"), |b| {
            b.iter_batched(
                || response.clone(),
                |response| encode_fetch_response(&header, response),
                BatchSize::SmallInput,
            )
        });
    }
    group.finish();
}

criterion_group!(benches, frame_decode, produce_crc, fetch_encode);
criterion_main!(benches);
