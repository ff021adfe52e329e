//! Raft between controllers: openraft's network traits over the controller's private RPCs,
//! on tokio. One connection per peer, one request in flight on it, opened lazily and dropped
//! after an error or a timeout so a late answer can never be read as the next one's.

use openraft::error::{
    InstallSnapshotError, NetworkError, RPCError, RaftError, RemoteError, Unreachable,
};
use openraft::network::{RPCOption, RaftNetwork, RaftNetworkFactory};
use openraft::raft::{
    AppendEntriesRequest, AppendEntriesResponse, InstallSnapshotRequest, InstallSnapshotResponse,
    VoteRequest, VoteResponse,
};
use openraft::BasicNode;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use super::rpc::{self, Request, Response};
use super::{NodeId, TypeConfig};

pub struct Network;

impl RaftNetworkFactory<TypeConfig> for Network {
    type Network = Peer;

    async fn new_client(&mut self, target: NodeId, node: &BasicNode) -> Peer {
        Peer {
            target,
            address: node.addr.clone(),
            stream: None,
            correlation_id: 0,
        }
    }
}

pub struct Peer {
    target: NodeId,
    address: String,
    stream: Option<TcpStream>,
    correlation_id: i32,
}

type Failed<E> = RPCError<NodeId, BasicNode, E>;

fn network_error<E: std::error::Error>(error: std::io::Error) -> Failed<E> {
    RPCError::Network(NetworkError::new(&error))
}

impl Peer {
    async fn call<E: std::error::Error>(
        &mut self,
        request: Request,
        option: &RPCOption,
    ) -> Result<Response, Failed<E>> {
        if self.stream.is_none() {
            let stream = TcpStream::connect(&self.address)
                .await
                .map_err(|e| RPCError::Unreachable(Unreachable::new(&e)))?;
            let _ = stream.set_nodelay(true);
            self.stream = Some(stream);
        }
        self.correlation_id = self.correlation_id.wrapping_add(1);
        let correlation_id = self.correlation_id;
        let frame = rpc::encode_request(correlation_id, &request).map_err(network_error)?;
        let Some(stream) = self.stream.as_mut() else {
            return Err(network_error(std::io::Error::other("no connection")));
        };
        let exchange = async {
            stream.write_all(&frame).await?;
            let mut prefix = [0u8; 4];
            stream.read_exact(&mut prefix).await?;
            let mut body = vec![0u8; rpc::frame_len(prefix)?];
            stream.read_exact(&mut body).await?;
            rpc::decode_response(&body, correlation_id)
        };
        match tokio::time::timeout(option.hard_ttl(), exchange).await {
            Ok(Ok(response)) => Ok(response),
            Ok(Err(error)) => {
                self.stream = None;
                Err(network_error(error))
            }
            Err(_) => {
                self.stream = None;
                Err(network_error(std::io::ErrorKind::TimedOut.into()))
            }
        }
    }

    fn unexpected<E: std::error::Error>() -> Failed<E> {
        network_error(std::io::Error::other("unexpected answer"))
    }
}

impl RaftNetwork<TypeConfig> for Peer {
    async fn append_entries(
        &mut self,
        request: AppendEntriesRequest<TypeConfig>,
        option: RPCOption,
    ) -> Result<AppendEntriesResponse<NodeId>, Failed<RaftError<NodeId>>> {
        match self.call(Request::Append(request), &option).await? {
            Response::Append(answer) => {
                answer.map_err(|e| RPCError::RemoteError(RemoteError::new(self.target, e)))
            }
            _ => Err(Self::unexpected()),
        }
    }

    async fn install_snapshot(
        &mut self,
        request: InstallSnapshotRequest<TypeConfig>,
        option: RPCOption,
    ) -> Result<InstallSnapshotResponse<NodeId>, Failed<RaftError<NodeId, InstallSnapshotError>>>
    {
        match self
            .call(Request::InstallSnapshot(request), &option)
            .await?
        {
            Response::InstallSnapshot(answer) => {
                answer.map_err(|e| RPCError::RemoteError(RemoteError::new(self.target, e)))
            }
            _ => Err(Self::unexpected()),
        }
    }

    async fn vote(
        &mut self,
        request: VoteRequest<NodeId>,
        option: RPCOption,
    ) -> Result<VoteResponse<NodeId>, Failed<RaftError<NodeId>>> {
        match self.call(Request::Vote(request), &option).await? {
            Response::Vote(answer) => {
                answer.map_err(|e| RPCError::RemoteError(RemoteError::new(self.target, e)))
            }
            _ => Err(Self::unexpected()),
        }
    }
}
