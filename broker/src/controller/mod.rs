//! The controller quorum, in the shape of Kafka's KRaft mode: the cluster metadata is a log
//! replicated by Raft (openraft 0.9, on this process's controller thread under a current-
//! thread tokio runtime), whose entries are batches of metadata records. The voter that leads
//! is the active controller (`active.rs`); every voter applies the committed log to the same
//! image (`state.rs`) and serves it to brokers, which fetch it by index. The controller knows
//! nothing of partitions' data, shards or reactors.
//!
//! - `log_store.rs`: the Raft log on disk; `state.rs`: the state machine and snapshots;
//! - `rpc.rs`: the private RPCs, their framing, and the client brokers call with;
//! - `network.rs`: Raft between voters; `server.rs`: the CONTROLLER listener.

pub mod active;
pub mod log_store;
mod network;
pub mod rpc;
mod server;
pub mod state;

use std::collections::BTreeMap;
use std::io::Cursor;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use openraft::error::{InitializeError, RaftError};
use openraft::{BasicNode, Config, SnapshotPolicy};
use serde::{Deserialize, Serialize};

use crate::metadata::MetadataRecord;

pub use rpc::{Command, Done, Refusal};
pub use server::describe_quorum_response;

/// A voter's id: the broker id Kafka calls `node.id`, never negative.
pub type NodeId = u64;

/// What a metadata log entry carries: records applied together or not at all.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Batch {
    pub version: u16,
    pub records: Vec<MetadataRecord>,
}

/// The format of batches this build writes; it reads any version up to this one.
pub const BATCH_VERSION: u16 = 1;

/// What applying an entry gave: its index, and why it changed nothing when it did not fit.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Applied {
    pub index: u64,
    pub error: Option<String>,
}

openraft::declare_raft_types!(
    pub TypeConfig:
        D = Batch,
        R = Applied,
        NodeId = NodeId,
        Node = BasicNode,
        Entry = openraft::Entry<TypeConfig>,
        SnapshotData = Cursor<Vec<u8>>,
        AsyncRuntime = openraft::TokioRuntime,
);

pub type Raft = openraft::Raft<TypeConfig>;

/// How a controller runs.
pub struct QuorumConfig {
    pub node_id: NodeId,
    /// Every voter and the address it listens on, this node included.
    pub voters: BTreeMap<NodeId, SocketAddr>,
    /// This node's CONTROLLER listener, already bound.
    pub listener: std::net::TcpListener,
    /// Where the log and snapshots live.
    pub dir: PathBuf,
    pub session_timeout: Duration,
    pub default_replication_factor: i16,
    pub elections: active::ElectionSettings,
    /// Records for a cluster formed by this node (the cluster id first, then whatever an
    /// older data directory held); proposed once, by the first leader of a pristine log.
    pub bootstrap: Vec<MetadataRecord>,
}

#[derive(Debug, thiserror::Error)]
pub enum ControllerError {
    #[error("controller storage: {0}")]
    Storage(#[from] std::io::Error),
    #[error("controller start: {0}")]
    Start(String),
}

/// A running controller; usable from any thread.
pub struct Controller {
    context: server::Context,
    runtime: tokio::runtime::Handle,
    address: SocketAddr,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

/// Raft timings for loopback clusters on shared machines: a failover takes about 1-2 s.
fn raft_config() -> Result<Arc<Config>, ControllerError> {
    let config = Config {
        cluster_name: "sluice-metadata".into(),
        heartbeat_interval: 100,
        election_timeout_min: 400,
        election_timeout_max: 800,
        install_snapshot_timeout: 2000,
        snapshot_policy: SnapshotPolicy::LogsSinceLast(5000),
        max_in_snapshot_log_to_keep: 1000,
        ..Default::default()
    };
    Ok(Arc::new(
        config
            .validate()
            .map_err(|e| ControllerError::Start(e.to_string()))?,
    ))
}

impl Controller {
    /// Starts the controller thread and returns once Raft runs and the listener accepts.
    pub fn start(config: QuorumConfig) -> Result<Controller, ControllerError> {
        let address = config.listener.local_addr()?;
        let (ready, ready_rx) = std::sync::mpsc::channel();
        let (stop, stop_rx) = tokio::sync::oneshot::channel::<()>();
        let id = config.node_id;
        let thread = std::thread::Builder::new()
            .name(format!("sluice-controller-{id}"))
            .spawn(move || {
                let runtime = match tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                {
                    Ok(runtime) => runtime,
                    Err(error) => {
                        let _ = ready.send(Err(ControllerError::Start(error.to_string())));
                        return;
                    }
                };
                runtime.block_on(async move {
                    match run(config).await {
                        Ok(context) => {
                            let handle = tokio::runtime::Handle::current();
                            let _ = ready.send(Ok((context.clone(), handle)));
                            let _ = stop_rx.await;
                            let _ = context.raft.shutdown().await;
                        }
                        Err(error) => {
                            let _ = ready.send(Err(error));
                        }
                    }
                });
            })?;
        let (context, runtime) = ready_rx
            .recv()
            .map_err(|_| ControllerError::Start("controller thread exited".into()))??;
        Ok(Controller {
            context,
            runtime,
            address,
            stop: Some(stop),
            thread: Some(thread),
        })
    }

    /// The CONTROLLER listener's address.
    pub fn address(&self) -> SocketAddr {
        self.address
    }

    /// Whether this node is the active controller now.
    pub fn is_active(&self) -> bool {
        self.context.active.is_active()
    }

    /// Leaders this controller elected from outside the ISR since it started.
    pub fn unclean_elections(&self) -> u64 {
        self.context
            .active
            .unclean_elections
            .load(std::sync::atomic::Ordering::Relaxed)
    }

    /// The quorum as this node sees it.
    pub fn describe(&self) -> rpc::QuorumView {
        server::describe(&self.context)
    }

    /// Runs `work` on the controller thread; the handle is a future any runtime can await.
    pub fn spawn<F>(&self, work: F) -> tokio::task::JoinHandle<F::Output>
    where
        F: std::future::Future + Send + 'static,
        F::Output: Send + 'static,
    {
        self.runtime.spawn(work)
    }
}

impl Drop for Controller {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// On the controller thread: storage, Raft, the listener, the first election, the fencer.
async fn run(config: QuorumConfig) -> Result<server::Context, ControllerError> {
    let log = log_store::LogStore::open(&config.dir)?;
    let state = state::StateMachine::open(&config.dir)?;
    let voters: BTreeMap<NodeId, BasicNode> = config
        .voters
        .iter()
        .map(|(id, address)| (*id, BasicNode::new(address)))
        .collect();
    let raft = Raft::new(
        config.node_id,
        raft_config()?,
        network::Network,
        log,
        state.clone(),
    )
    .await
    .map_err(|e| ControllerError::Start(e.to_string()))?;
    config.listener.set_nonblocking(true)?;
    let listener = tokio::net::TcpListener::from_std(config.listener)?;
    let settings = active::Settings {
        node_id: config.node_id,
        session_timeout: config.session_timeout,
        default_replication_factor: config.default_replication_factor,
        voters: config
            .voters
            .iter()
            .map(|(id, address)| (*id, address.to_string()))
            .collect(),
        elections: config.elections.clone(),
    };
    let active = Arc::new(active::Active::new(
        raft.clone(),
        state.clone(),
        settings,
        config.bootstrap,
    ));
    let context = server::Context {
        raft: raft.clone(),
        state: state.clone(),
        active: active.clone(),
    };
    tokio::spawn(server::serve(listener, context.clone()));
    // Only the lowest voter forms a new cluster: several voters forming it at once would
    // depose each other's first leader.
    let former = voters.keys().next() == Some(&config.node_id);
    let pristine = !raft
        .is_initialized()
        .await
        .map_err(|e| ControllerError::Start(e.to_string()))?;
    if former && pristine {
        match raft.initialize(voters).await {
            Ok(()) | Err(RaftError::APIError(InitializeError::NotAllowed(_))) => {}
            Err(error) => return Err(ControllerError::Start(error.to_string())),
        }
    }
    tokio::spawn(async move {
        let mut formed = false;
        loop {
            tokio::time::sleep(active::FENCE_CHECK_INTERVAL).await;
            if !formed {
                formed = active.form_cluster().await;
            }
            active.fence_stale_broker().await;
            active.elect_leaderless().await;
            active.rebalance_if_due().await;
        }
    });
    Ok(context)
}
