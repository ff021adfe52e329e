//! The CONTROLLER listener, on the controller's tokio thread. Frames are Kafka requests: an
//! ApiVersions from a Kafka client gets the controller's (short) list, the private api key
//! carries the controller's RPCs, and any other Kafka API is refused by closing the
//! connection, as a Kafka controller refuses client APIs on its listener.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use kafka_protocol::messages::api_versions_response::ApiVersion;
use kafka_protocol::messages::{
    ApiKey, ApiVersionsResponse, DescribeQuorumResponse, RequestKind, ResponseKind,
};
use openraft::ServerState;
use sluice_net::CodecError;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

use super::active::Active;
use super::rpc::{self, Fetched, QuorumView, Request, Response, VoterView};
use super::state::StateMachine;
use super::{NodeId, Raft};

/// Longest a metadata fetch waits for something new.
const FETCH_WAIT_MAX: Duration = Duration::from_secs(5);

/// The Kafka APIs a controller answers on its listener: (key, min, max).
const CONTROLLER_APIS: &[(i16, i16, i16)] = &[
    (ApiKey::ApiVersions as i16, 0, 4),
    (ApiKey::DescribeQuorum as i16, 0, 2),
];

#[derive(Clone)]
pub struct Context {
    pub raft: Raft,
    pub state: StateMachine,
    pub active: Arc<Active>,
}

/// Accepts connections until the runtime stops.
pub async fn serve(listener: TcpListener, context: Context) {
    loop {
        let Ok((stream, _)) = listener.accept().await else {
            tokio::time::sleep(Duration::from_millis(100)).await;
            continue;
        };
        let _ = stream.set_nodelay(true);
        tokio::spawn(connection(stream, context.clone()));
    }
}

async fn read_frame(stream: &mut TcpStream) -> std::io::Result<Bytes> {
    let mut prefix = [0u8; 4];
    stream.read_exact(&mut prefix).await?;
    let mut body = vec![0u8; rpc::frame_len(prefix)?];
    stream.read_exact(&mut body).await?;
    Ok(Bytes::from(body))
}

/// One connection; requests are answered in order, one at a time.
async fn connection(mut stream: TcpStream, context: Context) {
    while let Ok(frame) = read_frame(&mut stream).await {
        let Ok((key, _)) = sluice_net::header::peek_api(&frame) else {
            return;
        };
        let answer = if key == rpc::PRIVATE_API_KEY {
            private(frame, &context).await
        } else if key == ApiKey::ApiVersions as i16 {
            api_versions(frame)
        } else if key == ApiKey::DescribeQuorum as i16 {
            quorum(frame, &context)
        } else {
            None
        };
        let Some(answer) = answer else {
            return;
        };
        if stream.write_all(&answer).await.is_err() {
            return;
        }
    }
}

fn api_versions(frame: Bytes) -> Option<Bytes> {
    match sluice_net::decode_request(frame) {
        Ok((header, _)) => {
            let mut response = ApiVersionsResponse::default();
            response.api_keys = CONTROLLER_APIS
                .iter()
                .map(|&(key, min, max)| {
                    let mut api = ApiVersion::default();
                    api.api_key = key;
                    api.min_version = min;
                    api.max_version = max;
                    api
                })
                .collect();
            sluice_net::encode_response(&header, ResponseKind::ApiVersions(response)).ok()
        }
        Err(CodecError::ApiVersionsUnsupported(header)) => Some(
            sluice_net::encode_api_versions_unsupported(&header, CONTROLLER_APIS),
        ),
        Err(_) => None,
    }
}

/// DescribeQuorum on the controller listener, as `kafka-metadata-quorum` asks it.
fn quorum(frame: Bytes, context: &Context) -> Option<Bytes> {
    let (header, request) = sluice_net::decode_request(frame).ok()?;
    if !matches!(
        request,
        sluice_net::Request::Other(RequestKind::DescribeQuorum(_))
    ) {
        return None;
    }
    let response = describe_quorum_response(&describe(context));
    sluice_net::encode_response(&header, ResponseKind::DescribeQuorum(response)).ok()
}

/// Kafka's DescribeQuorum answer for the metadata log (`__cluster_metadata`, partition 0):
/// the leader and its epoch (the Raft term), the high watermark, and how far each voter has
/// caught up as the leader sees it.
pub fn describe_quorum_response(view: &QuorumView) -> DescribeQuorumResponse {
    use kafka_protocol::messages::describe_quorum_response::{
        Listener, Node, PartitionData, ReplicaState, TopicData,
    };
    use kafka_protocol::messages::{BrokerId, TopicName};
    use kafka_protocol::protocol::StrBytes;
    let id = |node: NodeId| BrokerId(i32::try_from(node).unwrap_or(-1));
    let voters = view
        .voters
        .iter()
        .map(|voter| {
            let mut state = ReplicaState::default();
            state.replica_id = id(voter.id);
            state.log_end_offset = voter.log_end;
            state.last_fetch_timestamp = -1;
            state.last_caught_up_timestamp = -1;
            state
        })
        .collect();
    let mut partition = PartitionData::default();
    partition.partition_index = 0;
    partition.leader_id = view.leader.map_or(BrokerId(-1), id);
    partition.leader_epoch = i32::try_from(view.term).unwrap_or(i32::MAX);
    partition.high_watermark = view.high_watermark;
    partition.current_voters = voters;
    let mut topic = TopicData::default();
    topic.topic_name = TopicName(StrBytes::from_static_str("__cluster_metadata"));
    topic.partitions = vec![partition];
    let mut response = DescribeQuorumResponse::default();
    response.topics = vec![topic];
    response.nodes = view
        .voters
        .iter()
        .filter_map(|voter| {
            let (host, port) = voter.address.rsplit_once(':')?;
            let mut listener = Listener::default();
            listener.name = StrBytes::from_static_str("CONTROLLER");
            listener.host = StrBytes::from_string(host.to_owned());
            listener.port = port.parse().ok()?;
            let mut node = Node::default();
            node.node_id = id(voter.id);
            node.listeners = vec![listener];
            Some(node)
        })
        .collect();
    response
}

async fn private(frame: Bytes, context: &Context) -> Option<Bytes> {
    let (header, request) = rpc::decode_request(frame).ok()?;
    let response = match request {
        Request::Append(r) => Response::Append(context.raft.append_entries(r).await),
        Request::Vote(r) => Response::Vote(context.raft.vote(r).await),
        Request::InstallSnapshot(r) => {
            Response::InstallSnapshot(context.raft.install_snapshot(r).await)
        }
        Request::Command(command) => Response::Command(context.active.handle(command).await),
        Request::Fetch { after, wait_ms } => Response::Fetch(fetch(context, after, wait_ms).await),
        Request::Describe => Response::Describe(describe(context)),
    };
    rpc::encode_response(header.correlation_id, &response).ok()
}

/// The committed log after `after`, waiting up to `wait_ms` for more when there is none.
async fn fetch(context: &Context, after: u64, wait_ms: u64) -> Fetched {
    let mut applied = context.state.watch_applied();
    let wait = Duration::from_millis(wait_ms).min(FETCH_WAIT_MAX);
    let _ = tokio::time::timeout(wait, applied.wait_for(|index| *index > after)).await;
    let leader = context.raft.metrics().borrow().current_leader;
    let state = context.state.read();
    match state.batches_after(after) {
        Some(batches) => Fetched {
            leader,
            applied: state.applied_index(),
            batches,
            image: None,
        },
        None => Fetched {
            leader,
            applied: state.applied_index(),
            batches: Vec::new(),
            image: Some(crate::metadata::delta::image_records(&state.image)),
        },
    }
}

/// The quorum as this controller's Raft metrics describe it.
pub fn describe(context: &Context) -> QuorumView {
    let metrics = context.raft.metrics().borrow().clone();
    let leading = metrics.state == ServerState::Leader;
    let progress = metrics.replication.clone().unwrap_or_default();
    let membership = metrics.membership_config.membership();
    let voters = membership
        .voter_ids()
        .map(|id| {
            let matched = if leading {
                progress.get(&id).copied().flatten()
            } else {
                None
            };
            let address = membership.get_node(&id).map(|n| n.addr.clone());
            VoterView {
                id,
                log_end: matched.map_or(-1, |log| log.index as i64 + 1),
                address: address.unwrap_or_default(),
            }
        })
        .collect();
    QuorumView {
        leader: metrics.current_leader,
        term: metrics.current_term,
        high_watermark: metrics.last_applied.map_or(0, |l| l.index as i64 + 1),
        voters,
    }
}
