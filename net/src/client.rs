//! A small async Kafka client on compio, for the benchmark tool and, later, follower fetchers.
//! It speaks kafka-protocol messages and keeps correlation ids. A connection splits into a
//! writer and a reader that share the list of requests in flight, so one task can keep
//! sending (on a schedule, or as fast as a pipeline allows) while another reads answers:
//! Kafka answers a connection's requests in order, and the reader checks each answer's
//! correlation id and api key against the oldest request still owed one.

use std::cell::RefCell;
use std::collections::VecDeque;
use std::io;
use std::net::SocketAddr;
use std::rc::Rc;

use bytes::{Bytes, BytesMut};
use compio::buf::{IntoInner as _, IoBuf as _};
use compio::io::{AsyncReadExt, AsyncWriteExt};
use compio::net::TcpStream;
use compio::BufResult;
use kafka_protocol::messages::produce_request::{PartitionProduceData, TopicProduceData};
use kafka_protocol::messages::{
    ApiKey, ProduceRequest, ProduceResponse, ResponseHeader, TopicName,
};
use kafka_protocol::protocol::{Decodable, Request, StrBytes};

use crate::fetch::{self, FetchResponseDeviation};
use crate::frame;
use crate::header::{self, RequestHeader};

/// The largest response we accept; fetch responses are bounded by the request's max bytes.
pub const RESPONSE_SIZE_MAX: usize = 256 * 1024 * 1024;
/// Room reserved in a request buffer for the frame prefix and the request header beyond the
/// client id: api key, version, correlation id, the id's length and a tagged-field count.
const REQUEST_HEADER_SLACK: usize = frame::FRAME_PREFIX_LEN + header::REQUEST_HEADER_FIXED_LEN + 8;

#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error(transparent)]
    Io(#[from] io::Error),
    #[error("request does not encode for api key {api_key} version {version}")]
    Encode { api_key: i16, version: i16 },
    #[error("response does not decode for api key {api_key} version {version}")]
    Decode { api_key: i16, version: i16 },
    /// A Fetch response that leaves Kafka's schema, with the field and byte where it does.
    #[error("Fetch v{version} response does not follow Kafka's schema: {deviation}")]
    FetchSchema {
        version: i16,
        deviation: FetchResponseDeviation,
    },
    #[error("response frame length {0} out of range")]
    FrameLength(i64),
    #[error("expected correlation id {expected}, got {got}")]
    Correlation { expected: i32, got: i32 },
    #[error("the oldest request in flight has api key {in_flight}; the caller read it as {read}")]
    ApiMismatch { in_flight: i16, read: i16 },
    #[error("no request is waiting for a response")]
    NothingInFlight,
}

/// A request sent (or being sent) and not yet answered.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct InFlight {
    correlation_id: i32,
    api_key: i16,
    version: i16,
}

/// Requests in flight on one connection, oldest first, shared by its writer and reader. Both
/// halves live on one runtime thread, so a `RefCell` is enough; no borrow is held across an
/// await.
type InFlightQueue = Rc<RefCell<VecDeque<InFlight>>>;

/// One connection, used from one task: `send_request`, or `write_request` and
/// `read_response` in pairs. `split` gives a writer and a reader for two tasks.
pub struct Client {
    writer: ClientWriter,
    reader: ClientReader,
}

/// The sending half of a connection.
pub struct ClientWriter {
    stream: TcpStream,
    client_id: String,
    correlation_next: i32,
    in_flight: InFlightQueue,
}

/// The receiving half of a connection.
pub struct ClientReader {
    stream: TcpStream,
    in_flight: InFlightQueue,
    /// Where answers are read into. An answer's bytes are handed out as a slice of it, and
    /// once the caller has dropped them the next answer reuses the allocation: a fresh one
    /// per answer of tens of megabytes would be mapped and faulted in page by page each time.
    buffer: BytesMut,
}

impl Client {
    pub async fn connect(addr: SocketAddr) -> Result<Self, ClientError> {
        Self::connect_with_receive_buffer(addr, None).await
    }

    /// Connects with SO_RCVBUF set to `receive_buffer` bytes (`None`: the OS default).
    pub async fn connect_with_receive_buffer(
        addr: SocketAddr,
        receive_buffer: Option<usize>,
    ) -> Result<Self, ClientError> {
        let stream = TcpStream::connect(addr).await?;
        stream.set_nodelay(true)?;
        if let Some(size) = receive_buffer {
            rustix::net::sockopt::set_socket_recv_buffer_size(&stream, size)
                .map_err(io::Error::from)?;
        }
        let (read_stream, write_stream) = stream.into_split();
        let in_flight = InFlightQueue::default();
        Ok(Self {
            writer: ClientWriter {
                stream: write_stream,
                client_id: "sluice-client".to_owned(),
                correlation_next: 1,
                in_flight: Rc::clone(&in_flight),
            },
            reader: ClientReader {
                buffer: BytesMut::new(),
                stream: read_stream,
                in_flight,
            },
        })
    }

    pub fn set_client_id(&mut self, client_id: impl Into<String>) {
        self.writer.client_id = client_id.into();
    }

    /// Requests sent and not yet answered.
    pub fn in_flight(&self) -> usize {
        self.writer.in_flight()
    }

    /// The two halves, for a sending task and a reading task on the same runtime.
    pub fn split(self) -> (ClientWriter, ClientReader) {
        (self.writer, self.reader)
    }

    /// Sends one request and waits for its answer.
    pub async fn send_request<R: Request>(
        &mut self,
        version: i16,
        request: &R,
    ) -> Result<R::Response, ClientError> {
        self.writer.write_request(version, request).await?;
        self.reader.read_response::<R>().await
    }

    /// Sends a request without waiting; pair each call with one `read_response` of the same
    /// type, in the same order. Returns the correlation id.
    pub async fn write_request<R: Request>(
        &mut self,
        version: i16,
        request: &R,
    ) -> Result<i32, ClientError> {
        self.writer.write_request(version, request).await
    }

    /// Reads the answer to the oldest request in flight.
    pub async fn read_response<R: Request>(&mut self) -> Result<R::Response, ClientError> {
        self.reader.read_response::<R>().await
    }

    /// Produces already-encoded record batches to one partition. With acks = 0 there is no
    /// answer, and this returns a default response.
    #[allow(clippy::too_many_arguments)]
    pub async fn produce(
        &mut self,
        version: i16,
        topic: &str,
        partition: i32,
        acks: i16,
        timeout_ms: i32,
        records: Bytes,
    ) -> Result<ProduceResponse, ClientError> {
        let request = produce_request(topic, partition, acks, timeout_ms, records);
        if acks == 0 {
            self.writer.write_unanswered(version, &request).await?;
            return Ok(ProduceResponse::default());
        }
        self.send_request(version, &request).await
    }

    pub async fn close(self) -> io::Result<()> {
        // Both halves share one socket; closing the writer's closes it.
        drop(self.reader);
        self.writer.stream.close().await
    }
}

impl ClientWriter {
    /// Requests sent and not yet answered.
    pub fn in_flight(&self) -> usize {
        self.in_flight.borrow().len()
    }

    /// Sends a request whose answer the paired reader will read. Returns the correlation id.
    pub async fn write_request<R: Request>(
        &mut self,
        version: i16,
        request: &R,
    ) -> Result<i32, ClientError> {
        let (correlation_id, frame) = self.encode(version, request)?;
        // Owed before the first byte leaves: the reader may see the answer before the write
        // completes.
        self.in_flight.borrow_mut().push_back(InFlight {
            correlation_id,
            api_key: R::KEY,
            version,
        });
        let BufResult(result, _) = self.stream.write_all(frame).await;
        result?;
        Ok(correlation_id)
    }

    /// Sends a request that gets no answer (Produce with acks = 0).
    pub async fn write_unanswered<R: Request>(
        &mut self,
        version: i16,
        request: &R,
    ) -> Result<i32, ClientError> {
        let (correlation_id, frame) = self.encode(version, request)?;
        let BufResult(result, _) = self.stream.write_all(frame).await;
        result?;
        Ok(correlation_id)
    }

    /// The whole frame of one request, in a buffer sized for it up front: a produce request
    /// carries its batches, and growing a buffer by doubling would copy them several times.
    fn encode<R: Request>(
        &mut self,
        version: i16,
        request: &R,
    ) -> Result<(i32, Bytes), ClientError> {
        let encode_error = ClientError::Encode {
            api_key: R::KEY,
            version,
        };
        let header_version =
            header::request_header_version(R::KEY, version).ok_or(ClientError::Encode {
                api_key: R::KEY,
                version,
            })?;
        let correlation_id = self.correlation_next;
        self.correlation_next = self.correlation_next.wrapping_add(1);
        let header = RequestHeader {
            api_key: R::KEY,
            api_version: version,
            correlation_id,
            client_id: Some(self.client_id.clone()),
        };
        let body_len = request
            .compute_size(version)
            .map_err(|_| ClientError::Encode {
                api_key: R::KEY,
                version,
            })?;
        let capacity = REQUEST_HEADER_SLACK + self.client_id.len() + body_len;
        let mut buf = BytesMut::with_capacity(capacity);
        frame::start_frame(&mut buf);
        header::encode_request_header(&mut buf, &header, header_version);
        request
            .encode(&mut buf, version)
            .map_err(|_| encode_error)?;
        frame::finish_frame(&mut buf, 0);
        debug_assert!(
            buf.len() <= capacity,
            "the request outgrew its presized buffer"
        );
        Ok((correlation_id, buf.freeze()))
    }

    pub async fn close(self) -> io::Result<()> {
        self.stream.close().await
    }
}

impl ClientReader {
    /// Requests sent and not yet answered.
    pub fn in_flight(&self) -> usize {
        self.in_flight.borrow().len()
    }

    /// Reads the answer to the oldest request in flight, which must be an `R`.
    pub async fn read_response<R: Request>(&mut self) -> Result<R::Response, ClientError> {
        let owed = self
            .in_flight
            .borrow_mut()
            .pop_front()
            .ok_or(ClientError::NothingInFlight)?;
        // Decoding an answer as the wrong type could succeed and yield nonsense, so this is
        // checked in every build, not only in debug ones.
        if owed.api_key != R::KEY {
            return Err(ClientError::ApiMismatch {
                in_flight: owed.api_key,
                read: R::KEY,
            });
        }
        let mut body = self.read_frame().await?;
        let InFlight {
            correlation_id: expected,
            api_key,
            version,
        } = owed;
        let header_version = header::response_header_version(api_key, version);
        let decode_error = || ClientError::Decode { api_key, version };
        let header =
            ResponseHeader::decode(&mut body, header_version).map_err(|_| decode_error())?;
        if header.correlation_id != expected {
            return Err(ClientError::Correlation {
                expected,
                got: header.correlation_id,
            });
        }
        // A clone of `body` is a reference count, kept to say why a Fetch did not decode.
        let kept = body.clone();
        R::Response::decode(&mut body, version).map_err(|_| {
            if api_key != ApiKey::Fetch as i16 {
                return decode_error();
            }
            match fetch::check_fetch_response(kept, version) {
                Err(deviation) => ClientError::FetchSchema { version, deviation },
                Ok(()) => decode_error(),
            }
        })
    }

    async fn read_frame(&mut self) -> Result<Bytes, ClientError> {
        let BufResult(result, prefix) = self
            .stream
            .read_exact(Vec::with_capacity(frame::FRAME_PREFIX_LEN))
            .await;
        result?;
        let prefix: [u8; frame::FRAME_PREFIX_LEN] = prefix
            .get(..frame::FRAME_PREFIX_LEN)
            .and_then(|p| p.try_into().ok())
            .ok_or(ClientError::FrameLength(-1))?;
        // Checked against the bound before anything is allocated from it.
        let len = frame::decode_frame_len(prefix, RESPONSE_SIZE_MAX)
            .map_err(|_| ClientError::FrameLength(i64::from(i32::from_be_bytes(prefix))))?;
        if len == 0 {
            return Ok(Bytes::new());
        }
        let mut buffer = std::mem::take(&mut self.buffer);
        buffer.clear();
        // Reclaims the allocation in place when no earlier answer still holds part of it.
        buffer.reserve(len);
        let BufResult(result, read) = self.stream.read_exact(buffer.slice(..len)).await;
        result?;
        let mut buffer = read.into_inner();
        if buffer.len() != len {
            return Err(ClientError::FrameLength(buffer.len() as i64));
        }
        let body = buffer.split_to(len).freeze();
        self.buffer = buffer;
        Ok(body)
    }
}

/// A single-partition ProduceRequest carrying `records` as they are.
pub fn produce_request(
    topic: &str,
    partition: i32,
    acks: i16,
    timeout_ms: i32,
    records: Bytes,
) -> ProduceRequest {
    let partition = PartitionProduceData::default()
        .with_index(partition)
        .with_records(Some(records));
    let topic = TopicProduceData::default()
        .with_name(TopicName(StrBytes::from_string(topic.to_owned())))
        .with_partition_data(vec![partition]);
    ProduceRequest::default()
        .with_acks(acks)
        .with_timeout_ms(timeout_ms)
        .with_topic_data(vec![topic])
}

/// The api key of a kafka-protocol request type, for callers matching on `ApiKey`.
pub fn api_key_of<R: Request>() -> Option<ApiKey> {
    ApiKey::try_from(R::KEY).ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::codec::{self, decode_request, encode_produce_response, encode_response};
    use crate::produce::{
        ProducePartitionResponse, ProduceResponse as OurProduceResponse, ProduceTopicResponse,
    };
    use compio::net::TcpListener;
    use kafka_protocol::messages::{
        ApiVersionsRequest, ApiVersionsResponse, RequestKind, ResponseKind,
    };

    /// A one-connection server that answers ApiVersions and Produce through the codecs.
    async fn serve(listener: TcpListener, requests: usize) {
        let (mut stream, _) = listener.accept().await.unwrap();
        for _ in 0..requests {
            let BufResult(result, prefix) = stream.read_exact(Vec::with_capacity(4)).await;
            result.unwrap();
            let len = frame::decode_frame_len(
                prefix[..4].try_into().unwrap(),
                frame::REQUEST_SIZE_MAX_DEFAULT,
            )
            .unwrap();
            let BufResult(result, body) = stream.read_exact(Vec::with_capacity(len)).await;
            result.unwrap();
            let (header, request) = decode_request(Bytes::from(body)).unwrap();
            let answer = match request {
                codec::Request::Other(RequestKind::ApiVersions(_)) => {
                    let response = ApiVersionsResponse::default()
                        .with_api_keys(codec::supported_api_versions());
                    encode_response(&header, ResponseKind::ApiVersions(response)).unwrap()
                }
                codec::Request::Produce(produce) => {
                    let topic = &produce.topics[0];
                    let records = topic.partitions[0].records.clone().unwrap();
                    let response = OurProduceResponse {
                        topics: vec![ProduceTopicResponse {
                            name: topic.name.clone(),
                            partitions: vec![ProducePartitionResponse {
                                index: topic.partitions[0].index,
                                error_code: 0,
                                base_offset: records.len() as i64,
                                log_append_time_ms: -1,
                                log_start_offset: 0,
                            }],
                        }],
                        throttle_time_ms: 0,
                    };
                    encode_produce_response(&header, &response)
                }
                other => panic!("unexpected request {other:?}"),
            };
            let BufResult(result, _) = stream.write_all(answer).await;
            result.unwrap();
        }
    }

    #[test]
    fn talks_to_the_codecs_over_loopback() {
        compio::runtime::Runtime::new().unwrap().block_on(async {
            let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
            let addr = listener.local_addr().unwrap();
            let server = compio::runtime::spawn(serve(listener, 4));
            let mut client = Client::connect(addr).await.unwrap();
            for version in [0, 3] {
                let versions = client
                    .send_request(version, &ApiVersionsRequest::default())
                    .await
                    .unwrap();
                assert_eq!(versions.error_code, 0);
                assert_eq!(versions.api_keys.len(), codec::SUPPORTED_APIS.len());
            }
            // Two produce requests in flight at once, answered in order.
            let first = produce_request("bench", 3, 1, 1000, Bytes::from_static(b"abc"));
            let second = produce_request("bench", 3, 1, 1000, Bytes::from_static(b"abcdef"));
            client.write_request(9, &first).await.unwrap();
            client.write_request(7, &second).await.unwrap();
            assert_eq!(client.in_flight(), 2);
            let first = client.read_response::<ProduceRequest>().await.unwrap();
            let second = client.read_response::<ProduceRequest>().await.unwrap();
            assert_eq!(first.responses[0].partition_responses[0].base_offset, 3);
            assert_eq!(second.responses[0].partition_responses[0].base_offset, 6);
            assert_eq!(second.responses[0].partition_responses[0].index, 3);
            server.await.unwrap();
        });
    }

    #[test]
    fn split_halves_pipeline_on_one_runtime() {
        compio::runtime::Runtime::new().unwrap().block_on(async {
            let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
            let addr = listener.local_addr().unwrap();
            let requests = 20;
            let server = compio::runtime::spawn(serve(listener, requests));
            let (mut writer, mut reader) = Client::connect(addr).await.unwrap().split();
            // The reader runs as its own task while the writer keeps sending.
            let reading = compio::runtime::spawn(async move {
                let mut offsets = Vec::new();
                while offsets.len() < requests {
                    if reader.in_flight() == 0 {
                        compio::time::sleep(std::time::Duration::from_millis(1)).await;
                        continue;
                    }
                    let answer = reader.read_response::<ProduceRequest>().await.unwrap();
                    offsets.push(answer.responses[0].partition_responses[0].base_offset);
                }
                offsets
            });
            for len in 1..=requests {
                let records = Bytes::from(vec![b'x'; len]);
                writer
                    .write_request(9, &produce_request("bench", 0, 1, 1000, records))
                    .await
                    .unwrap();
            }
            let offsets = reading.await.unwrap();
            let expected: Vec<i64> = (1..=requests as i64).collect();
            assert_eq!(offsets, expected);
            assert_eq!(writer.in_flight(), 0);
            server.await.unwrap();
        });
    }

    /// A one-connection server that answers each request with the next of `bodies` behind a
    /// flexible response header, whatever was asked.
    async fn serve_bodies(listener: TcpListener, bodies: Vec<&'static [u8]>) {
        let (mut stream, _) = listener.accept().await.unwrap();
        for body in bodies {
            let BufResult(result, prefix) = stream.read_exact(Vec::with_capacity(4)).await;
            result.unwrap();
            let len = frame::decode_frame_len(
                prefix[..4].try_into().unwrap(),
                frame::REQUEST_SIZE_MAX_DEFAULT,
            )
            .unwrap();
            let BufResult(result, request) = stream.read_exact(Vec::with_capacity(len)).await;
            result.unwrap();
            let (header, _) = decode_request(Bytes::from(request)).unwrap();
            let mut answer = Vec::new();
            answer.extend_from_slice(&(4 + 1 + body.len() as i32).to_be_bytes());
            answer.extend_from_slice(&header.correlation_id.to_be_bytes());
            answer.push(0); // no header tags
            answer.extend_from_slice(body);
            let BufResult(result, _) = stream.write_all(answer).await;
            result.unwrap();
        }
    }

    /// A v12 Fetch answer carrying tag 0 (NodeEndpoints, v16+) at the top level is named as
    /// such; the same answer without it decodes.
    #[test]
    fn a_fetch_answer_off_the_schema_says_where() {
        // throttle_time_ms, error_code, session_id, no topics, then the response's tags.
        const WITH_TAG: &[u8] = &[0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1, 1, 0, 1, 1];
        const WITHOUT: &[u8] = &[0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1, 0];
        compio::runtime::Runtime::new().unwrap().block_on(async {
            let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
            let addr = listener.local_addr().unwrap();
            let server = compio::runtime::spawn(serve_bodies(listener, vec![WITH_TAG, WITHOUT]));
            let mut client = Client::connect(addr).await.unwrap();
            let request = kafka_protocol::messages::FetchRequest::default();
            let error = client.send_request(12, &request).await.unwrap_err();
            assert!(
                matches!(
                    &error,
                    ClientError::FetchSchema {
                        version: 12,
                        deviation: FetchResponseDeviation::TagBeforeItsVersion {
                            tag: 0,
                            offset: 12,
                            since: 16,
                            ..
                        },
                    }
                ),
                "{error:?}"
            );
            assert_eq!(
                error.to_string(),
                "Fetch v12 response does not follow Kafka's schema: tagged field 0 \
                 (NodeEndpoints, 1 bytes) of the response at byte 12 belongs to v16 and later, \
                 not v12"
            );
            let fine = client.send_request(12, &request).await.unwrap();
            assert!(fine.responses.is_empty());
            server.await.unwrap();
        });
    }

    #[test]
    fn an_answer_read_as_the_wrong_api_is_an_error() {
        compio::runtime::Runtime::new().unwrap().block_on(async {
            let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
            let addr = listener.local_addr().unwrap();
            let server = compio::runtime::spawn(serve(listener, 1));
            let mut client = Client::connect(addr).await.unwrap();
            client
                .write_request(3, &ApiVersionsRequest::default())
                .await
                .unwrap();
            let misread = client.read_response::<ProduceRequest>().await;
            assert!(matches!(
                misread,
                Err(ClientError::ApiMismatch {
                    in_flight: 18,
                    read: 0
                })
            ));
            assert!(matches!(
                client.read_response::<ProduceRequest>().await,
                Err(ClientError::NothingInFlight)
            ));
            drop(client);
            server.await.unwrap();
        });
    }
}
