//! A blocking Kafka wire client on std sockets, for tests that must send exact (and
//! deliberately wrong) bytes and look at the raw answer: frames, requests encoded with
//! kafka-protocol, record batches, and a reader that reports a closed connection.

use std::io::{ErrorKind, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use kafka_protocol::indexmap::IndexMap;
use kafka_protocol::messages::fetch_request::{FetchPartition, FetchTopic};
use kafka_protocol::messages::produce_request::{PartitionProduceData, TopicProduceData};
use kafka_protocol::messages::{
    ApiKey, ApiVersionsRequest, ApiVersionsResponse, FetchRequest, ProduceRequest, RequestHeader,
    TopicName,
};
use kafka_protocol::protocol::{Decodable, Encodable, HeaderVersion, Request, StrBytes};
use kafka_protocol::records::{
    Compression, Record, RecordBatchDecoder, RecordBatchEncoder, RecordEncodeOptions, TimestampType,
};

/// How long a test waits for one answer (or for the broker to close) before it fails.
pub const ANSWER_TIMEOUT: Duration = Duration::from_secs(10);

/// The Produce version tests use unless they test versions: the newest non-flexible one.
pub const PRODUCE_VERSION: i16 = 7;
/// The Fetch version tests use: the newest that still names topics (and is not flexible).
pub const FETCH_VERSION: i16 = 11;
/// The ApiVersions version a modern client sends first.
pub const API_VERSIONS_VERSION: i16 = 3;

/// What the next read from a connection brought.
#[derive(Debug)]
pub enum Answer {
    /// One response frame, without its length prefix.
    Frame(Vec<u8>),
    /// The broker closed (or reset) the connection.
    Closed,
}

/// One client connection.
pub struct Conn {
    stream: TcpStream,
    next_correlation_id: i32,
}

impl Conn {
    pub fn connect(address: SocketAddr) -> Conn {
        let stream = TcpStream::connect_timeout(&address, ANSWER_TIMEOUT)
            .unwrap_or_else(|e| panic!("cannot connect to the broker at {address}: {e}"));
        stream.set_read_timeout(Some(ANSWER_TIMEOUT)).unwrap();
        stream.set_write_timeout(Some(ANSWER_TIMEOUT)).unwrap();
        stream.set_nodelay(true).unwrap();
        Conn {
            stream,
            next_correlation_id: 1,
        }
    }

    /// Writes bytes as they are. An error means the broker has already closed.
    pub fn send_raw(&mut self, bytes: &[u8]) -> std::io::Result<()> {
        self.stream.write_all(bytes)
    }

    /// Writes a length prefix and then `body`.
    pub fn send_frame(&mut self, body: &[u8]) -> std::io::Result<()> {
        let mut framed = Vec::with_capacity(4 + body.len());
        framed.extend_from_slice(&(body.len() as i32).to_be_bytes());
        framed.extend_from_slice(body);
        self.send_raw(&framed)
    }

    /// Sends a well-formed request and returns its correlation id.
    pub fn send<R: Request>(&mut self, version: i16, request: &R) -> i32 {
        let correlation_id = self.next_correlation_id;
        self.next_correlation_id += 1;
        let body = encode_request(version, correlation_id, request);
        self.send_frame(&body).expect("send request");
        correlation_id
    }

    /// Reads the next frame, or notices that the broker closed the connection. Fails the
    /// test when neither happens within `ANSWER_TIMEOUT`.
    pub fn receive(&mut self) -> Answer {
        let mut prefix = [0u8; 4];
        match self.read_exactly(&mut prefix) {
            Ok(true) => {}
            Ok(false) => return Answer::Closed,
            Err(e) => panic!("no answer within {ANSWER_TIMEOUT:?}: {e}"),
        }
        let len = i32::from_be_bytes(prefix);
        assert!(len >= 0, "response frame length {len}");
        let mut frame = vec![0u8; len as usize];
        match self.read_exactly(&mut frame) {
            Ok(true) => Answer::Frame(frame),
            Ok(false) => panic!("connection closed inside a {len}-byte response frame"),
            Err(e) => panic!("response frame of {len} bytes did not arrive: {e}"),
        }
    }

    /// `Ok(false)` when the connection ended (EOF or reset) before `buf` was filled.
    fn read_exactly(&mut self, buf: &mut [u8]) -> std::io::Result<bool> {
        let mut filled = 0;
        while filled < buf.len() {
            match self.stream.read(&mut buf[filled..]) {
                Ok(0) => return Ok(false),
                Ok(n) => filled += n,
                Err(e) if e.kind() == ErrorKind::Interrupted => {}
                Err(e) if closed_error(&e) => return Ok(false),
                Err(e) => return Err(e),
            }
        }
        Ok(true)
    }

    /// Reads the response to request `correlation_id` and decodes it.
    pub fn receive_response<R: Request>(
        &mut self,
        version: i16,
        correlation_id: i32,
    ) -> R::Response {
        let frame = match self.receive() {
            Answer::Frame(frame) => frame,
            Answer::Closed => panic!(
                "the broker closed the connection instead of answering api {} v{version}",
                R::KEY
            ),
        };
        decode_response::<R>(version, correlation_id, frame)
    }

    /// Sends a request and decodes its response.
    pub fn call<R: Request>(&mut self, version: i16, request: &R) -> R::Response {
        let correlation_id = self.send(version, request);
        self.receive_response::<R>(version, correlation_id)
    }

    /// Fails the test unless the broker closes the connection, without answering, within
    /// `ANSWER_TIMEOUT`.
    pub fn expect_closed(&mut self, after: &str) {
        match self.receive() {
            Answer::Closed => {}
            Answer::Frame(frame) => panic!(
                "expected the broker to close the connection after {after}, but it answered \
                 with a {}-byte frame: {:02x?}",
                frame.len(),
                &frame[..frame.len().min(64)]
            ),
        }
    }
}

fn closed_error(error: &std::io::Error) -> bool {
    matches!(
        error.kind(),
        ErrorKind::ConnectionReset | ErrorKind::ConnectionAborted | ErrorKind::BrokenPipe
    )
}

/// Request header and body, as a client would put them after the length prefix.
pub fn encode_request<R: Request>(version: i16, correlation_id: i32, request: &R) -> Vec<u8> {
    let mut buf = BytesMut::new();
    RequestHeader::default()
        .with_request_api_key(R::KEY)
        .with_request_api_version(version)
        .with_correlation_id(correlation_id)
        .with_client_id(Some(StrBytes::from_static_str("sluice-tests")))
        .encode(&mut buf, R::header_version(version))
        .expect("request header encodes");
    request
        .encode(&mut buf, version)
        .expect("request body encodes");
    buf.to_vec()
}

/// Checks the response header of `frame` and decodes its body.
pub fn decode_response<R: Request>(
    version: i16,
    correlation_id: i32,
    frame: Vec<u8>,
) -> R::Response {
    let mut bytes = Bytes::from(frame);
    let header = kafka_protocol::messages::ResponseHeader::decode(
        &mut bytes,
        R::Response::header_version(version),
    )
    .expect("response header decodes");
    assert_eq!(
        header.correlation_id, correlation_id,
        "response to the wrong request"
    );
    let response = R::Response::decode(&mut bytes, version)
        .unwrap_or_else(|e| panic!("api {} v{version}: response does not decode: {e}", R::KEY));
    assert!(
        bytes.is_empty(),
        "api {} v{version}: {} bytes left after the response",
        R::KEY,
        bytes.len()
    );
    response
}

/// A key and value the tests produce and expect back.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Message {
    pub key: Vec<u8>,
    pub value: Vec<u8>,
}

impl Message {
    pub fn new(key: impl Into<Vec<u8>>, value: impl Into<Vec<u8>>) -> Message {
        Message {
            key: key.into(),
            value: value.into(),
        }
    }
}

/// One uncompressed RecordBatch v2 holding `messages`, as a non-idempotent producer sends it.
pub fn batch(messages: &[Message]) -> Bytes {
    assert!(!messages.is_empty());
    let now_ms = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64;
    let records: Vec<Record> = messages
        .iter()
        .enumerate()
        .map(|(i, message)| Record {
            transactional: false,
            control: false,
            delete_horizon: false,
            partition_leader_epoch: -1,
            producer_id: -1,
            producer_epoch: -1,
            timestamp_type: TimestampType::Creation,
            offset: i as i64,
            // offset - sequence is the same for every record, so the encoder keeps them in one
            // batch, and the batch's base sequence comes out as -1 (no sequence).
            sequence: i as i32 - 1,
            timestamp: now_ms,
            key: Some(Bytes::copy_from_slice(&message.key)),
            value: Some(Bytes::copy_from_slice(&message.value)),
            headers: IndexMap::new(),
        })
        .collect();
    let mut buf = BytesMut::new();
    RecordBatchEncoder::encode(
        &mut buf,
        &records,
        &RecordEncodeOptions {
            version: 2,
            compression: Compression::None,
        },
    )
    .expect("batch encodes");
    let batch = buf.freeze();
    debug_assert_eq!(
        RecordBatchDecoder::decode_all(&mut batch.clone())
            .expect("batch decodes")
            .len(),
        1,
        "one batch"
    );
    batch
}

/// A Produce request for one partition of one topic.
pub fn produce_request(
    topic: &str,
    partition: i32,
    records: Option<Bytes>,
    acks: i16,
) -> ProduceRequest {
    ProduceRequest::default()
        .with_acks(acks)
        .with_timeout_ms(10_000)
        .with_topic_data(vec![TopicProduceData::default()
            .with_name(TopicName(StrBytes::from_string(topic.to_owned())))
            .with_partition_data(vec![PartitionProduceData::default()
                .with_index(partition)
                .with_records(records)])])
}

/// The (error code, base offset) a single-partition produce got.
pub fn produce(conn: &mut Conn, request: &ProduceRequest) -> (i16, i64) {
    let response = conn.call(PRODUCE_VERSION, request);
    assert_eq!(response.responses.len(), 1, "{response:?}");
    let topic = &response.responses[0];
    assert_eq!(topic.partition_responses.len(), 1, "{response:?}");
    let partition = &topic.partition_responses[0];
    (partition.error_code, partition.base_offset)
}

/// A record as a consumer sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Consumed {
    pub offset: i64,
    pub message: Message,
}

/// Reads a partition from `offset` up to its high watermark with plain Fetch requests,
/// decoding (and CRC-checking) every batch. Fails the test on any error code.
pub fn fetch_all(address: SocketAddr, topic: &str, partition: i32, offset: i64) -> Vec<Consumed> {
    fetch_all_or_error(address, topic, partition, offset)
        .unwrap_or_else(|code| panic!("fetching {topic}-{partition} from {offset}: error {code}"))
}

/// What a partition holds: nothing when the topic does not exist (UNKNOWN_TOPIC_OR_PARTITION),
/// else every record from offset 0.
pub fn stored(address: SocketAddr, topic: &str) -> Vec<Consumed> {
    const UNKNOWN_TOPIC_OR_PARTITION: i16 = 3;
    match fetch_all_or_error(address, topic, 0, 0) {
        Ok(consumed) => consumed,
        Err(UNKNOWN_TOPIC_OR_PARTITION) => Vec::new(),
        Err(code) => panic!("fetching {topic}-0: error {code}"),
    }
}

/// Like `fetch_all`, but a partition error code is returned rather than failing the test.
pub fn fetch_all_or_error(
    address: SocketAddr,
    topic: &str,
    partition: i32,
    mut offset: i64,
) -> Result<Vec<Consumed>, i16> {
    let mut conn = Conn::connect(address);
    let mut consumed = Vec::new();
    let deadline = Instant::now() + ANSWER_TIMEOUT;
    loop {
        assert!(
            Instant::now() < deadline,
            "fetching {topic}-{partition} took too long"
        );
        let request = FetchRequest::default()
            .with_replica_id(kafka_protocol::messages::BrokerId(-1))
            .with_max_wait_ms(0)
            .with_min_bytes(1)
            .with_max_bytes(8 << 20)
            .with_isolation_level(0)
            .with_session_epoch(-1)
            .with_topics(vec![FetchTopic::default()
                .with_topic(TopicName(StrBytes::from_string(topic.to_owned())))
                .with_partitions(vec![FetchPartition::default()
                    .with_partition(partition)
                    .with_fetch_offset(offset)
                    .with_partition_max_bytes(4 << 20)])]);
        let response = conn.call(FETCH_VERSION, &request);
        assert_eq!(response.error_code, 0, "fetch error");
        let data = &response.responses[0].partitions[0];
        if data.error_code != 0 {
            return Err(data.error_code);
        }
        let mut records = data.records.clone().unwrap_or_default();
        if records.is_empty() {
            assert_eq!(
                offset, data.high_watermark,
                "an empty fetch below the high watermark"
            );
            return Ok(consumed);
        }
        for set in RecordBatchDecoder::decode_all(&mut records).expect("fetched batches decode") {
            for record in set.records {
                if record.offset < offset {
                    // A batch is returned whole even when the fetch starts inside it.
                    continue;
                }
                assert_eq!(record.offset, offset, "offsets are dense");
                offset += 1;
                consumed.push(Consumed {
                    offset: record.offset,
                    message: Message::new(
                        record.key.unwrap_or_default().to_vec(),
                        record.value.unwrap_or_default().to_vec(),
                    ),
                });
            }
        }
    }
}

/// ApiVersions on a fresh connection: the broker is up and answering.
pub fn api_versions(address: SocketAddr) -> ApiVersionsResponse {
    let mut conn = Conn::connect(address);
    let request = ApiVersionsRequest::default()
        .with_client_software_name(StrBytes::from_static_str("sluice-tests"))
        .with_client_software_version(StrBytes::from_static_str("1"));
    conn.call(API_VERSIONS_VERSION, &request)
}

/// An api key's name, for messages.
pub fn api_name(key: i16) -> String {
    match ApiKey::try_from(key) {
        Ok(api) => format!("{api:?}"),
        Err(()) => format!("api {key}"),
    }
}

/// Commits `offsets` (topic, partition, offset) for `group` as a standalone consumer does
/// (no member, no generation), and checks every partition was accepted.
pub fn commit_standalone(conn: &mut Conn, group: &str, offsets: &[(&str, i32, i64)]) {
    use kafka_protocol::messages::offset_commit_request::{
        OffsetCommitRequestPartition, OffsetCommitRequestTopic,
    };
    use kafka_protocol::messages::{GroupId, OffsetCommitRequest, TopicName};
    use kafka_protocol::protocol::StrBytes;
    let text = |s: &str| StrBytes::from_string(s.to_owned());
    let mut request = OffsetCommitRequest::default();
    request.group_id = GroupId(text(group));
    request.generation_id_or_member_epoch = -1;
    for &(topic, partition, offset) in offsets {
        let mut p = OffsetCommitRequestPartition::default();
        p.partition_index = partition;
        p.committed_offset = offset;
        let mut t = OffsetCommitRequestTopic::default();
        t.name = TopicName(text(topic));
        t.partitions = vec![p];
        request.topics.push(t);
    }
    let response = conn.call(8, &request);
    for topic in &response.topics {
        for p in &topic.partitions {
            assert_eq!(p.error_code, 0, "commit of {group} {:?}", topic.name);
        }
    }
}
