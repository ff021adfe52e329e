//! Start-up and shutdown: loads topics from `log.dirs`, binds one SO_REUSEPORT listener per
//! reactor, starts the reactor threads with their core-pair queues, and stops them on a signal.

use std::net::SocketAddr;
use std::rc::Rc;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use compio::driver::{DriverType, ProactorBuilder};
use compio::runtime::RuntimeBuilder;

use crate::backend::Backend;
use crate::config::BrokerConfig;
use crate::controller::{Controller, QuorumConfig};
use crate::core::{self, CoreQueues};
use crate::layout;
use crate::metadata::{local, BrokerImage, MetadataRecord};
use crate::shard::{Shard, Shared};

#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    #[error("cannot use data directory {path}: {source}")]
    DataDir {
        path: String,
        source: std::io::Error,
    },
    #[error("cannot listen on {address} ({key}): {source}")]
    Listen {
        address: SocketAddr,
        key: &'static str,
        source: std::io::Error,
    },
    #[error(
        "cannot listen on {address} ({key}): address already in use; another process \
         (another broker?) listens there"
    )]
    AddressInUse {
        address: SocketAddr,
        key: &'static str,
    },
    #[error("reactor {core} failed to start: {reason}")]
    Reactor { core: usize, reason: String },
    #[error("controller quorum: {0}")]
    Quorum(String),
}

/// What `serve` tells its caller once everything listens.
pub struct Ready {
    /// The client listener (none on a controller-only node).
    pub client: Option<SocketAddr>,
    pub metrics: Option<SocketAddr>,
    /// The controller listener, when this node is a voter.
    pub controller: Option<SocketAddr>,
}

/// Runs the node until SIGINT or SIGTERM: the controller when `process.roles` names it, and
/// the broker when it names that (both by default). `ready` is called once the controller
/// listens and the broker, registered and caught up with the metadata, accepts connections.
pub fn serve(
    mut config: BrokerConfig,
    backend: Backend,
    ready: impl FnOnce(Ready),
) -> Result<(), ServeError> {
    let log_dir = config.log_dir.clone();
    let data_dir_error = |source| ServeError::DataDir {
        path: log_dir.display().to_string(),
        source,
    };
    std::fs::create_dir_all(log_dir.join(layout::META_DIR)).map_err(data_dir_error)?;
    config = crate::dynamic::load_at_start(config);
    let cores = config.reactor_count();
    let listeners = if config.roles.broker {
        bind_listeners(config.listener, LISTENERS_KEY, cores)?
    } else {
        Vec::new()
    };
    let address = match listeners.first() {
        Some(listener) => Some(listener.local_addr().map_err(|source| ServeError::Listen {
            address: config.listener,
            key: LISTENERS_KEY,
            source,
        })?),
        None => None,
    };
    if let Some(address) = address.filter(|_| config.advertised_port == 0) {
        // Listening on port 0 lets the kernel choose; clients must be told the chosen one.
        config.advertised_port = address.port();
    }
    let controller = if config.roles.controller {
        Some(Arc::new(start_controller(&config)?))
    } else {
        None
    };
    let controllers = controller_addresses(&config, controller.as_deref())?;
    let controller_address = controller.as_ref().map(|c| c.address());
    if !config.roles.broker {
        let stop = watch_signals().map_err(|e| ServeError::Reactor {
            core: 0,
            reason: format!("signal handling: {e}"),
        })?;
        ready(Ready {
            client: None,
            metrics: None,
            controller: controller_address,
        });
        let _ = stop.recv();
        tracing::info!("stopping the controller");
        drop(controller);
        return Ok(());
    }
    let mut metrics_listener = match config.metrics_address {
        Some(address) => Some(bind_listeners(address, METRICS_ADDRESS_KEY, 1)?.remove(0)),
        None => None,
    };
    let metrics_address = metrics_listener.as_ref().and_then(|l| l.local_addr().ok());
    layout::remove_set_aside(&log_dir);
    let clean_start = layout::take_clean_marker(&log_dir).map_err(data_dir_error)?;
    let shared = Arc::new(Shared::new(config, backend, cores, controllers, controller));
    shared.clean_start.store(clean_start, Ordering::Relaxed);

    let (mut outboxes, mut inboxes) = core::mesh::<Shard>(cores);
    let (started, started_rx) = flume::bounded::<Result<usize, String>>(cores);
    let mut threads = Vec::with_capacity(cores);
    for (id, listener) in listeners.into_iter().enumerate() {
        let shared = shared.clone();
        let outbox = std::mem::take(&mut outboxes[id]);
        let inbox = std::mem::take(&mut inboxes[id]);
        let started = started.clone();
        let metrics = if id == 0 {
            metrics_listener.take()
        } else {
            None
        };
        let thread = std::thread::Builder::new()
            .name(format!("sluice-reactor-{id}"))
            .spawn(move || {
                let listeners = (listener, metrics);
                run_reactor(id, shared, (outbox, inbox), listeners, started)
            });
        threads.push(thread.map_err(|e| ServeError::Reactor {
            core: id,
            reason: e.to_string(),
        })?);
    }
    for _ in 0..cores {
        match started_rx.recv() {
            Ok(Ok(_)) => {}
            Ok(Err(reason)) => return Err(ServeError::Reactor { core: 0, reason }),
            Err(_) => {
                return Err(ServeError::Reactor {
                    core: 0,
                    reason: "exited during start-up".into(),
                })
            }
        }
    }
    let stop = watch_signals().map_err(|e| ServeError::Reactor {
        core: 0,
        reason: format!("signal handling: {e}"),
    })?;
    ready(Ready {
        client: address,
        metrics: metrics_address,
        controller: controller_address,
    });
    let _ = stop.recv();
    leave_cluster(&shared);
    tracing::info!("stopping: flushing and closing logs");
    shared.stopping.store(true, Ordering::SeqCst);
    shared.stop.notify(usize::MAX);
    // The replica fetchers wait on metadata changes; this wakes them to see the stop.
    shared.metadata_changed.notify(usize::MAX);
    let mut stopped = true;
    for thread in threads {
        stopped &= thread.join().is_ok();
    }
    let unclean = shared.unclean_logs.load(Ordering::Relaxed);
    let mut clean =
        std::mem::take(&mut *shared.clean_logs.lock().unwrap_or_else(|e| e.into_inner()));
    clean.sort();
    let mut present = layout::partition_dirs(&log_dir);
    present.sort();
    if !stopped || unclean > 0 {
        tracing::warn!(
            unclean,
            "not every log closed cleanly: they are recovered at the next start"
        );
    } else if clean != present {
        tracing::info!(
            clean = clean.len(),
            present = present.len(),
            "log directory holds partitions not closed in this run: not marked clean"
        );
    } else if let Err(error) = layout::mark_clean(&log_dir) {
        tracing::warn!(%error, "cannot mark the log directory clean: its logs are recovered at the next start");
    }
    Ok(())
}

/// Runs the controlled shutdown (on core 0, see `cluster::controlled_shutdown`) and waits
/// for it, a little longer than it bounds itself.
fn leave_cluster(shared: &Shared) {
    use event_listener::Listener as _;
    if !shared.config.roles.broker || !shared.metadata_ready.load(Ordering::SeqCst) {
        return;
    }
    let left = shared.left.listen();
    shared.leaving.store(true, Ordering::Release);
    shared.leave.notify(usize::MAX);
    if !shared.has_left.load(Ordering::Acquire) {
        let limit =
            Duration::from_millis(shared.config.broker_session_timeout_ms) + Duration::from_secs(1);
        if left.wait_timeout(limit).is_none() {
            tracing::warn!("controlled shutdown did not finish in time");
        }
    }
}

/// Where the controller's log and snapshots live under `log.dirs`.
fn controller_dir(config: &BrokerConfig) -> std::path::PathBuf {
    config.log_dir.join(layout::META_DIR).join("raft")
}

/// The voters' addresses, in `controller.quorum.voters` order; this node's own controller
/// alone when none are configured.
fn controller_addresses(
    config: &BrokerConfig,
    controller: Option<&Controller>,
) -> Result<Vec<SocketAddr>, ServeError> {
    if config.quorum_voters.is_empty() {
        return match controller {
            Some(controller) => Ok(vec![controller.address()]),
            None => Err(ServeError::Quorum(
                "a broker without the controller role needs controller.quorum.voters".into(),
            )),
        };
    }
    config
        .quorum_voters
        .iter()
        .map(|(id, host, port)| resolve(host, *port, *id))
        .collect()
}

fn resolve(host: &str, port: u16, id: i32) -> Result<SocketAddr, ServeError> {
    use std::net::ToSocketAddrs;
    (host, port)
        .to_socket_addrs()
        .ok()
        .and_then(|mut found| found.next())
        .ok_or_else(|| ServeError::Quorum(format!("cannot resolve voter {id}@{host}:{port}")))
}

/// Binds the controller listener and starts the controller thread. A node that forms a new
/// cluster takes the cluster id and the topics an older data directory holds with it.
fn start_controller(config: &BrokerConfig) -> Result<Controller, ServeError> {
    let bind = config
        .controller_listener
        .unwrap_or_else(|| SocketAddr::from(([127, 0, 0, 1], 0)));
    let listener = bind_listeners(bind, LISTENERS_KEY, 1)?.remove(0);
    let address = listener.local_addr().map_err(|source| ServeError::Listen {
        address: bind,
        key: LISTENERS_KEY,
        source,
    })?;
    let node_id = u64::try_from(config.node_id)
        .map_err(|_| ServeError::Quorum("a controller's node.id must not be negative".into()))?;
    let mut voters = std::collections::BTreeMap::new();
    if config.quorum_voters.is_empty() {
        voters.insert(node_id, address);
    }
    for (id, host, port) in &config.quorum_voters {
        let id = u64::try_from(*id).map_err(|_| ServeError::Quorum("negative voter id".into()))?;
        voters.insert(id, resolve(host, *port, id as i32)?);
    }
    if !voters.contains_key(&node_id) {
        return Err(ServeError::Quorum(format!(
            "node.id {node_id} is not among controller.quorum.voters"
        )));
    }
    let dir = controller_dir(config);
    let bootstrap = if dir.join(crate::controller::log_store::LOG_FILE).exists() {
        Vec::new()
    } else {
        older_metadata(config)?
    };
    let quorum = QuorumConfig {
        node_id,
        voters,
        listener,
        dir,
        session_timeout: Duration::from_millis(config.broker_session_timeout_ms),
        default_replication_factor: config.default_replication_factor,
        elections: crate::controller::active::ElectionSettings {
            unclean_default: config.unclean_leader_election,
            auto_rebalance: config.auto_leader_rebalance,
            imbalance_interval: Duration::from_secs(config.leader_imbalance_check_interval_s),
            imbalance_percentage: config.leader_imbalance_percentage,
        },
        bootstrap,
    };
    Controller::start(quorum).map_err(|e| ServeError::Quorum(e.to_string()))
}

/// The cluster id and topics of a data directory written before the metadata lived in the
/// controller's log (the files under `__sluice_meta`, and partition directories).
fn older_metadata(config: &BrokerConfig) -> Result<Vec<MetadataRecord>, ServeError> {
    let broker = BrokerImage {
        id: config.node_id,
        host: config.advertised_host.clone(),
        port: config.advertised_port,
        epoch: 0,
        fenced: false,
    };
    let records = local::load(&config.log_dir, broker).map_err(|source| ServeError::DataDir {
        path: config.log_dir.display().to_string(),
        source,
    })?;
    let kept = records.into_iter().filter(|record| {
        !matches!(
            record,
            MetadataRecord::Controller(_) | MetadataRecord::RegisterBroker(_)
        )
    });
    Ok(kept.collect())
}

/// One reactor thread: its runtime and queues; core 0 joins the cluster (every core opening
/// the partitions the metadata gives it) before any core accepts connections.
fn run_reactor(
    id: usize,
    shared: Arc<Shared>,
    (outboxes, inboxes): CoreQueues<Shard>,
    (listener, metrics): (std::net::TcpListener, Option<std::net::TcpListener>),
    started: flume::Sender<Result<usize, String>>,
) {
    let runtime = match build_runtime(id, &shared) {
        Ok(runtime) => runtime,
        Err(error) => {
            let _ = started.send(Err(format!("reactor {id}: {error}")));
            return;
        }
    };
    runtime.block_on(async move {
        let core = Rc::new(Shard::new(id, shared.clone(), outboxes));
        core::serve_inboxes(core.clone(), inboxes);
        if id == 0 {
            shared.descriptors.sample();
            compio::runtime::spawn(sample_descriptors(shared.clone())).detach();
            crate::cluster::join(&core).await;
            shared.metadata_ready.store(true, Ordering::SeqCst);
            shared.metadata_changed.notify(usize::MAX);
            compio::runtime::spawn(crate::replication::run_fetchers(core.clone())).detach();
        }
        loop {
            let listener = shared.metadata_changed.listen();
            if shared.metadata_ready.load(Ordering::SeqCst) {
                break;
            }
            listener.await;
        }
        crate::groups::start(&core).await;
        let listener = match compio::net::TcpListener::from_std(listener) {
            Ok(listener) => listener,
            Err(error) => {
                let _ = started.send(Err(format!("reactor {id} listener: {error}")));
                return;
            }
        };
        if let Some(metrics) = metrics.map(compio::net::TcpListener::from_std) {
            match metrics {
                Ok(metrics) => {
                    compio::runtime::spawn(crate::metrics::http::serve(core.clone(), metrics))
                        .detach()
                }
                Err(error) => tracing::warn!(%error, "metrics endpoint unavailable"),
            }
        }
        spawn_ticker(core.clone());
        let _ = started.send(Ok(id));
        accept_until_stopped(&core, listener).await;
        if id == 0 {
            crate::replication::stopped(&core).await;
        }
        core.close_all().await;
    });
}

/// Counts this process's open descriptors every second, off the reactor, until stopped.
async fn sample_descriptors(shared: Arc<Shared>) {
    while !shared.stopping.load(Ordering::Relaxed) {
        compio::time::sleep(shared.descriptors.next_sample_in()).await;
        let sampling = shared.clone();
        let _ = compio::runtime::spawn_blocking(move || sampling.descriptors.sample()).await;
    }
}

fn build_runtime(id: usize, shared: &Shared) -> std::io::Result<compio::runtime::Runtime> {
    let mut proactor = ProactorBuilder::new();
    if shared.backend.is_io_uring() {
        // One thread submits to each ring, and completions run when the reactor asks for them.
        proactor
            .single_issuer(true)
            .coop_taskrun(true)
            .defer_taskrun(true);
    } else {
        proactor.driver_type(DriverType::Poll);
    }
    let mut builder = RuntimeBuilder::new();
    builder.with_proactor(proactor);
    if shared.config.pin_cores {
        // The same choice of CPU as a live change of `sluice.pin.cores` makes.
        crate::dynamic::apply_pinning(id, true);
    }
    let runtime = builder.build()?;
    let driver = runtime.driver_type();
    if shared.backend.is_io_uring() && !driver.is_iouring() {
        tracing::warn!(
            core = id,
            "io_uring was probed as usable but this reactor runs on {driver:?}"
        );
    }
    Ok(runtime)
}

async fn accept_until_stopped(core: &Rc<Shard>, listener: compio::net::TcpListener) {
    use futures_util::future::{select, Either};
    let shared = core.shared.clone();
    loop {
        let stop = shared.stop.listen();
        if shared.stopping.load(Ordering::SeqCst) {
            return;
        }
        let accepted = match select(Box::pin(listener.accept()), stop).await {
            Either::Left((accepted, _)) => accepted,
            Either::Right(_) => return,
        };
        let (stream, peer) = match accepted {
            Ok(pair) => pair,
            Err(error) => {
                // Out of file descriptors (EMFILE) fails every accept until a connection
                // closes: pause rather than spin the reactor.
                tracing::warn!(%error, "accept failed; pausing before the next accept");
                compio::time::sleep(crate::metrics::http::ACCEPT_RETRY_DELAY).await;
                continue;
            }
        };
        if !shared.descriptors.admit_connection() {
            tracing::warn!(%peer, open = shared.descriptors.open(), limit = shared.descriptors.limit(),
                "open-file descriptors nearly spent; closing new connection to keep room for the partitions");
            continue;
        }
        let live = shared.dynamic.current();
        let open = shared.connections.fetch_add(1, Ordering::Relaxed) + 1;
        if open > live.connections_max {
            forget_connection(&shared);
            tracing::warn!(%peer, "max.connections reached; closing new connection");
            continue;
        }
        if !count_from(&shared, peer.ip(), live.connections_max_for(peer.ip())) {
            forget_connection(&shared);
            tracing::warn!(%peer, "max.connections.per.ip reached; closing new connection");
            continue;
        }
        let core = core.clone();
        compio::runtime::spawn(async move {
            crate::conn::serve_connection(core.clone(), stream, peer).await;
            forget_connection(&core.shared);
            uncount_from(&core.shared, peer.ip());
        })
        .detach();
    }
}

/// Takes a connection out of the broker-wide count and gives its descriptors back.
fn forget_connection(shared: &Shared) {
    shared.connections.fetch_sub(1, Ordering::Relaxed);
    shared
        .descriptors
        .released(crate::descriptors::PER_CONNECTION);
}

/// Counts a new connection from `ip` unless that would pass `limit`.
fn count_from(shared: &Shared, ip: std::net::IpAddr, limit: usize) -> bool {
    let mut counts = shared
        .connections_per_ip
        .lock()
        .unwrap_or_else(|e| e.into_inner());
    let count = counts.entry(ip).or_insert(0);
    if *count >= limit {
        if *count == 0 {
            counts.remove(&ip);
        }
        return false;
    }
    *count += 1;
    true
}

fn uncount_from(shared: &Shared, ip: std::net::IpAddr) {
    let mut counts = shared
        .connections_per_ip
        .lock()
        .unwrap_or_else(|e| e.into_inner());
    if let Some(count) = counts.get_mut(&ip) {
        *count -= 1;
        if *count == 0 {
            counts.remove(&ip);
        }
    }
}

/// Runs time-based log work (flush.ms, segment.ms rolls, retention) on this core, and shrinks
/// the ISRs of partitions it leads whose followers lag.
fn spawn_ticker(core: Rc<Shard>) {
    let period = Duration::from_millis(core.shared.config.retention_check_interval_ms.min(1000));
    compio::runtime::spawn(async move {
        loop {
            compio::time::sleep(period).await;
            if core.shared.stopping.load(Ordering::SeqCst) {
                return;
            }
            core.tick().await;
            crate::replication::check_isr(&core);
        }
    })
    .detach();
}

/// The properties that name the addresses the broker listens on, for start-up errors.
const LISTENERS_KEY: &str = "listeners";
const METRICS_ADDRESS_KEY: &str = "sluice.metrics.address";

/// One listening socket per reactor on the same address, so the kernel spreads connections.
/// `key` is the property that set the address.
fn bind_listeners(
    address: SocketAddr,
    key: &'static str,
    cores: usize,
) -> Result<Vec<std::net::TcpListener>, ServeError> {
    use socket2::{Domain, Protocol, Socket, Type};
    ensure_unused(address, key)?;
    let mut bound = address;
    let mut listeners = Vec::with_capacity(cores);
    for _ in 0..cores {
        let listen_error = |source| ServeError::Listen {
            address,
            key,
            source,
        };
        let socket = Socket::new(
            Domain::for_address(bound),
            Type::STREAM,
            Some(Protocol::TCP),
        )
        .map_err(listen_error)?;
        socket.set_reuse_address(true).map_err(listen_error)?;
        socket.set_reuse_port(true).map_err(listen_error)?;
        socket.set_nonblocking(true).map_err(listen_error)?;
        socket.bind(&bound.into()).map_err(listen_error)?;
        socket.listen(1024).map_err(listen_error)?;
        let listener: std::net::TcpListener = socket.into();
        // With port 0 the first bind picks the port; the other reactors join that one.
        bound = listener.local_addr().map_err(listen_error)?;
        listeners.push(listener);
    }
    Ok(listeners)
}

/// Fails when a socket already listens on `address`. SO_REUSEPORT lets a socket of the same
/// user join a listening group that is already there, so without this check a second broker
/// would start on a taken port and silently take a share of the first one's connections. A
/// probe bound without SO_REUSEPORT cannot share a port with a listener, so its bind tells.
/// It keeps SO_REUSEADDR, so connections of an earlier run left in TIME_WAIT do not count.
/// Port 0 asks the kernel for a free port and needs no probe. The probe closes before the
/// reactors bind; a broker that starts in that instant is not caught, as in any bind-twice
/// scheme, but one that starts after is.
fn ensure_unused(address: SocketAddr, key: &'static str) -> Result<(), ServeError> {
    use socket2::{Domain, Protocol, Socket, Type};
    if address.port() == 0 {
        return Ok(());
    }
    let listen_error = |source| ServeError::Listen {
        address,
        key,
        source,
    };
    let probe = Socket::new(
        Domain::for_address(address),
        Type::STREAM,
        Some(Protocol::TCP),
    )
    .map_err(listen_error)?;
    probe.set_reuse_address(true).map_err(listen_error)?;
    match probe.bind(&address.into()) {
        Ok(()) => Ok(()),
        Err(error) if error.kind() == std::io::ErrorKind::AddrInUse => {
            Err(ServeError::AddressInUse { address, key })
        }
        Err(error) => Err(listen_error(error)),
    }
}

/// Starts a thread that waits for SIGINT or SIGTERM and returns once its handlers are
/// installed, so a signal sent right after `ready` is never lost. The receiver yields when a
/// signal arrives.
fn watch_signals() -> std::io::Result<flume::Receiver<()>> {
    let (installed, installed_rx) = flume::bounded(1);
    let (stop, stop_rx) = flume::bounded(1);
    std::thread::Builder::new()
        .name("sluice-signals".into())
        .spawn(move || {
            let runtime = match compio::runtime::Runtime::new() {
                Ok(runtime) => runtime,
                Err(error) => {
                    let _ = installed.send(Err(error));
                    return;
                }
            };
            runtime.block_on(async move {
                use futures_util::future::select;
                let mut interrupt = Box::pin(compio::signal::ctrl_c());
                let mut terminate = Box::pin(compio::signal::unix::signal(libc::SIGTERM));
                // The first poll installs each handler.
                let _ = futures_util::poll!(&mut interrupt);
                let _ = futures_util::poll!(&mut terminate);
                let _ = installed.send(Ok(()));
                let _ = select(interrupt, terminate).await;
                let _ = stop.send(());
            });
        })?;
    installed_rx
        .recv()
        .map_err(|_| std::io::Error::other("signal thread exited"))??;
    Ok(stop_rx)
}
