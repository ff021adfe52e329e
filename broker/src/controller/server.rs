//! The CONTROLLER listener, on the controller's tokio thread. Frames are Kafka requests: an
//! ApiVersions from a Kafka client gets the controller's (short) list, the private api key
//! carries the controller's RPCs, and any other Kafka API is refused by closing the
//! connection, as a Kafka controller refuses client APIs on its listener.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use kafka_protocol::messages::api_versions_response::ApiVersion;
use kafka_protocol::messages::{ApiKey, ApiVersionsResponse, ResponseKind};
use openraft::ServerState;
use sluice_net::CodecError;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

use super::active::Active;
use super::rpc::{self, Fetched, QuorumView, Request, Response, VoterView};
use super::state::StateMachine;
use super::Raft;

/// Longest a metadata fetch waits for something new.
const FETCH_WAIT_MAX: Duration = Duration::from_secs(5);

/// The Kafka APIs a controller answers on its listener: (key, min, max).
const CONTROLLER_APIS: &[(i16, i16, i16)] = &[(ApiKey::ApiVersions as i16, 0, 4)];

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
    let voters = metrics
        .membership_config
        .membership()
        .voter_ids()
        .map(|id| {
            let matched = if leading {
                progress.get(&id).copied().flatten()
            } else {
                None
            };
            VoterView {
                id,
                log_end: matched.map_or(-1, |log| log.index as i64 + 1),
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
