//! The controller's private RPCs and their framing. Everything on the CONTROLLER listener is
//! framed as a Kafka request (`i32` length, request header v1), so a Kafka client that dials
//! it gets Kafka's answers (ApiVersions, or a closed connection); the private messages use one
//! api key Kafka does not define and carry JSON. Controllers call each other for Raft here,
//! and brokers register, heartbeat, send metadata commands and fetch the metadata log.
//! The client side (`call`) runs on a compio reactor; the server side is in `server.rs`.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::time::Duration;

use bytes::{BufMut, Bytes, BytesMut};
use openraft::error::{InstallSnapshotError, RaftError};
use openraft::raft::{
    AppendEntriesRequest, AppendEntriesResponse, InstallSnapshotRequest, InstallSnapshotResponse,
    VoteRequest, VoteResponse,
};
use serde::{Deserialize, Serialize};
use sluice_net::header::{decode_request_header, encode_request_header};
use sluice_net::RequestHeader;

use super::state::AppliedBatch;
use super::{NodeId, TypeConfig};
use crate::metadata::MetadataRecord;

/// The api key of the controller's private requests: outside Kafka's range.
pub const PRIVATE_API_KEY: i16 = 32_000;
const PRIVATE_API_VERSION: i16 = 0;
/// Request header version of private requests: v1 (key, version, correlation id, client id).
const PRIVATE_HEADER_VERSION: i16 = 1;
/// Largest frame either side reads.
pub const FRAME_BYTES_MAX: usize = 64 << 20;

/// What one controller or broker asks a controller.
#[derive(Debug, Serialize, Deserialize)]
pub enum Request {
    Append(AppendEntriesRequest<TypeConfig>),
    Vote(VoteRequest<NodeId>),
    InstallSnapshot(InstallSnapshotRequest<TypeConfig>),
    Command(Command),
    /// The metadata log after `after`, waiting up to `wait_ms` when there is nothing new.
    Fetch {
        after: u64,
        wait_ms: u64,
    },
    /// The quorum as this controller sees it.
    Describe,
}

#[derive(Debug, Serialize, Deserialize)]
pub enum Response {
    Append(Result<AppendEntriesResponse<NodeId>, RaftError<NodeId>>),
    Vote(Result<VoteResponse<NodeId>, RaftError<NodeId>>),
    InstallSnapshot(
        Result<InstallSnapshotResponse<NodeId>, RaftError<NodeId, InstallSnapshotError>>,
    ),
    Command(Result<Done, Refusal>),
    Fetch(Fetched),
    Describe(QuorumView),
}

/// A change only the active controller decides.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub enum Command {
    RegisterBroker {
        id: i32,
        host: String,
        port: u16,
    },
    Heartbeat {
        id: i32,
        epoch: i64,
        metadata_index: u64,
    },
    CreateTopic {
        name: String,
        partitions: i32,
        /// -1 asks for `default.replication.factor`.
        replication_factor: i16,
        configs: BTreeMap<String, String>,
        validate_only: bool,
    },
    CreatePartitions {
        topic: String,
        count: i32,
        validate_only: bool,
    },
    /// The topic's configs become exactly `configs`.
    SetTopicConfigs {
        topic: String,
        configs: BTreeMap<String, String>,
        validate_only: bool,
    },
    /// A broker resource's dynamic configs (`""` for the cluster default, or a broker's
    /// id) become exactly `configs`.
    SetBrokerConfigs {
        resource: String,
        configs: BTreeMap<String, String>,
    },
    DeleteTopic {
        name: String,
    },
    /// A broker could not open its copies of these partitions (Kafka's failed log directory):
    /// they are offline there until it registers again.
    ReplicasOffline {
        id: i32,
        epoch: i64,
        partitions: Vec<(String, i32)>,
    },
    /// A block of `count` producer ids for one broker.
    AllocateProducerIds {
        count: i64,
    },
    /// A broker about to stop asks for its leaderships to move and to leave every ISR
    /// (Kafka's controlled shutdown); it is fenced once they have.
    ControlledShutdown {
        id: i32,
        epoch: i64,
    },
    /// Elect leaders (Kafka's ElectLeaders): the preferred replica, or with `unclean` any live
    /// replica where the ISR has none. `None` means every partition.
    ElectLeaders {
        unclean: bool,
        partitions: Option<Vec<(String, i32)>>,
    },
    /// A partition leader asks for a new ISR (Kafka's AlterPartition), at the epochs it knows.
    AlterPartition {
        broker: i32,
        broker_epoch: i64,
        topic: String,
        partition: i32,
        leader_epoch: i32,
        partition_epoch: i32,
        isr: Vec<i32>,
    },
}

/// A command carried out: the metadata log index it was applied at (brokers wait until they
/// have applied it) and a value that depends on the command (a broker epoch, the first
/// producer id of a block, 1 when a heartbeat leaves the broker fenced), and for an
/// election the outcome per partition.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Done {
    pub index: u64,
    pub value: i64,
    /// (topic, partition, Kafka error code) per partition an election looked at.
    #[serde(default)]
    pub elections: Vec<(String, i32, i16)>,
}

impl Done {
    pub fn new(index: u64, value: i64) -> Self {
        Self {
            index,
            value,
            elections: Vec::new(),
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize, thiserror::Error)]
pub enum Refusal {
    #[error("not the active controller (leader: {leader:?})")]
    NotController { leader: Option<(NodeId, String)> },
    #[error("{message} (Kafka error {code})")]
    Error { code: i16, message: String },
}

/// The metadata log after a broker's index: the batches, or the whole image as records when
/// the batches it lacks are no longer kept.
#[derive(Debug, Serialize, Deserialize)]
pub struct Fetched {
    pub leader: Option<NodeId>,
    pub applied: u64,
    pub batches: Vec<AppliedBatch>,
    pub image: Option<Vec<MetadataRecord>>,
}

/// One voter's progress, as DescribeQuorum shows it.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct VoterView {
    pub id: NodeId,
    /// Index after the last entry it holds, as far as the leader knows (-1 unknown).
    pub log_end: i64,
    /// Where its CONTROLLER listener is.
    pub address: String,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct QuorumView {
    pub leader: Option<NodeId>,
    pub term: u64,
    pub high_watermark: i64,
    pub voters: Vec<VoterView>,
}

/// A private request frame, length prefix included.
pub fn encode_request(correlation_id: i32, request: &Request) -> std::io::Result<Bytes> {
    let body = serde_json::to_vec(request).map_err(std::io::Error::other)?;
    let mut buf = BytesMut::with_capacity(4 + 16 + body.len());
    buf.put_i32(0);
    let header = RequestHeader {
        api_key: PRIVATE_API_KEY,
        api_version: PRIVATE_API_VERSION,
        correlation_id,
        client_id: None,
    };
    encode_request_header(&mut buf, &header, PRIVATE_HEADER_VERSION);
    buf.put_slice(&body);
    let len = i32::try_from(buf.len() - 4).map_err(std::io::Error::other)?;
    buf[..4].copy_from_slice(&len.to_be_bytes());
    Ok(buf.freeze())
}

/// The header and request of a private frame (length prefix removed).
pub fn decode_request(frame: Bytes) -> std::io::Result<(RequestHeader, Request)> {
    let (header, body) =
        decode_request_header(frame, PRIVATE_HEADER_VERSION).map_err(std::io::Error::other)?;
    let request = serde_json::from_slice(&body).map_err(std::io::Error::other)?;
    Ok((header, request))
}

/// A private response frame, length prefix included: the correlation id, then JSON.
pub fn encode_response(correlation_id: i32, response: &Response) -> std::io::Result<Bytes> {
    let body = serde_json::to_vec(response).map_err(std::io::Error::other)?;
    let mut buf = BytesMut::with_capacity(8 + body.len());
    let len = i32::try_from(4 + body.len()).map_err(std::io::Error::other)?;
    buf.put_i32(len);
    buf.put_i32(correlation_id);
    buf.put_slice(&body);
    Ok(buf.freeze())
}

/// The response in a frame (length prefix removed) answering `correlation_id`.
pub fn decode_response(frame: &[u8], correlation_id: i32) -> std::io::Result<Response> {
    let (id, body) = frame
        .split_first_chunk::<4>()
        .ok_or_else(|| std::io::Error::other("response frame too short"))?;
    if i32::from_be_bytes(*id) != correlation_id {
        return Err(std::io::Error::other("response answers another request"));
    }
    serde_json::from_slice(body).map_err(std::io::Error::other)
}

/// The length in a frame's prefix, checked against [`FRAME_BYTES_MAX`].
pub fn frame_len(prefix: [u8; 4]) -> std::io::Result<usize> {
    let len = i32::from_be_bytes(prefix);
    usize::try_from(len)
        .ok()
        .filter(|len| *len <= FRAME_BYTES_MAX)
        .ok_or_else(|| std::io::Error::other("frame length out of range"))
}

/// Sends one request to the controller at `address` on a connection of its own and returns
/// its answer; the whole exchange is bounded by `timeout`. Runs on a compio reactor.
pub async fn call(
    address: SocketAddr,
    request: &Request,
    timeout: Duration,
) -> std::io::Result<Response> {
    use compio::buf::{IntoInner, IoBuf};
    use compio::io::{AsyncReadExt, AsyncWriteExt};
    let frame = encode_request(1, request)?;
    let exchange = async {
        let mut stream = compio::net::TcpStream::connect(address).await?;
        let _ = stream.set_nodelay(true);
        stream.write_all(frame).await.0?;
        let compio::BufResult(read, prefix) = stream.read_exact([0u8; 4]).await;
        read?;
        let len = frame_len(prefix)?;
        let body = Vec::with_capacity(len);
        let compio::BufResult(read, body) = stream.read_exact(body.slice(..len)).await;
        read?;
        decode_response(&body.into_inner(), 1)
    };
    match compio::time::timeout(timeout, exchange).await {
        Ok(answer) => answer,
        Err(_) => Err(std::io::ErrorKind::TimedOut.into()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn private_frames_round_trip_and_look_like_kafka_requests() {
        let request = Request::Fetch {
            after: 7,
            wait_ms: 100,
        };
        let frame = encode_request(42, &request).unwrap();
        let len = frame_len(frame[..4].try_into().unwrap()).unwrap();
        assert_eq!(len, frame.len() - 4);
        let (key, version) = sluice_net::header::peek_api(&frame[4..]).unwrap();
        assert_eq!((key, version), (PRIVATE_API_KEY, 0));
        let (header, back) = decode_request(frame.slice(4..)).unwrap();
        assert_eq!(header.correlation_id, 42);
        assert!(matches!(
            back,
            Request::Fetch {
                after: 7,
                wait_ms: 100
            }
        ));
        let response = Response::Command(Err(Refusal::NotController { leader: None }));
        let frame = encode_response(42, &response).unwrap();
        assert!(matches!(
            decode_response(&frame[4..], 42).unwrap(),
            Response::Command(Err(Refusal::NotController { leader: None }))
        ));
        assert!(decode_response(&frame[4..], 41).is_err());
    }

    #[test]
    fn frame_lengths_out_of_range_are_refused() {
        assert!(frame_len((-1i32).to_be_bytes()).is_err());
        assert!(frame_len(((FRAME_BYTES_MAX + 1) as i32).to_be_bytes()).is_err());
        assert_eq!(frame_len(5i32.to_be_bytes()).unwrap(), 5);
    }
}
