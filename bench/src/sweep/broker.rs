//! The broker a sweep runs against. A managed broker is started with each combination of
//! broker parameters as `--override key=value` (Kafka's and Sluice's form) on a fresh data
//! directory, and stopped with SIGTERM before the next combination; a managed cluster is
//! several such nodes on this host, each a broker and a controller voter, all given the same
//! parameters, and counted as started once every node prints `ready`. An external broker
//! gets the parameters as dynamic broker configs through IncrementalAlterConfigs.

use std::io::{BufRead, BufReader};
use std::net::{SocketAddr, TcpStream, ToSocketAddrs};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use kafka_protocol::messages::incremental_alter_configs_request::{
    AlterConfigsResource, AlterableConfig,
};
use kafka_protocol::messages::{ApiKey, ApiVersionsRequest, IncrementalAlterConfigsRequest};
use kafka_protocol::protocol::StrBytes;

use super::plan::{split_listener, BrokerTarget, BUILD_AXIS, CONTROLLER_PORT_OFFSET};
use crate::cluster;
use crate::error::error_name;

/// How long a managed broker may take to accept connections, and to exit once asked.
const START_TIMEOUT: Duration = Duration::from_secs(60);
/// A cluster is ready once a quorum has formed and every node has registered and caught up.
const CLUSTER_START_TIMEOUT: Duration = Duration::from_secs(120);
const STOP_TIMEOUT: Duration = Duration::from_secs(30);
const POLL: Duration = Duration::from_millis(100);
/// Kafka's ConfigResource type for a broker, and the SET operation.
const RESOURCE_TYPE_BROKER: i8 = 4;
const OPERATION_SET: i8 = 0;

/// Parameters as (name, value), in the plan's order.
type Params = Vec<(String, String)>;

pub struct Broker {
    target: BrokerTarget,
    /// The parameters currently applied; None before the first run.
    applied: Option<Vec<(String, String)>>,
    running: Option<Running>,
    starts: usize,
    /// Builds by name (`[broker.builds]`), picked by a run's `build` parameter.
    builds: Vec<(String, String)>,
}

/// What a managed broker or cluster is: its processes and their data directories.
struct Running {
    children: Vec<Child>,
    data: Vec<PathBuf>,
}

impl Broker {
    pub fn new(target: BrokerTarget) -> Self {
        Self {
            target,
            applied: None,
            running: None,
            starts: 0,
            builds: Vec::new(),
        }
    }

    /// The builds a run's `build` parameter may name, each the program to start.
    pub fn with_builds(mut self, builds: Vec<(String, String)>) -> Self {
        self.builds = builds;
        self
    }

    /// The command for `params`, with the named build's program first, and the parameters
    /// that remain to pass as overrides.
    fn resolve(
        &self,
        command: &[String],
        params: &[(String, String)],
    ) -> Result<(Vec<String>, Params), String> {
        let mut command = command.to_vec();
        let mut rest = Vec::with_capacity(params.len());
        for (key, value) in params {
            if key != BUILD_AXIS {
                rest.push((key.clone(), value.clone()));
                continue;
            }
            let (_, program) = self
                .builds
                .iter()
                .find(|(name, _)| name == value)
                .ok_or_else(|| format!("no build named {value:?} in [broker.builds]"))?;
            match command.first_mut() {
                Some(first) => *first = program.clone(),
                None => return Err("empty broker command".to_owned()),
            }
        }
        Ok((command, rest))
    }

    /// Makes the broker run with `params` and returns its bootstrap address.
    pub fn apply(&mut self, params: &[(String, String)]) -> Result<String, String> {
        let unchanged = self.applied.as_deref() == Some(params);
        match self.target.clone() {
            BrokerTarget::Managed {
                command,
                data_dir,
                listener,
                nodes,
                fresh,
            } => {
                if !unchanged || self.running.is_none() || fresh {
                    self.stop();
                    self.applied = None;
                    let (command, overrides) = self.resolve(&command, params)?;
                    if fresh {
                        // The runs before left dirty pages; their writeback is not this run's.
                        let _ = Command::new("sync").status();
                    }
                    if nodes == 1 {
                        self.start(&command, &data_dir, &listener, &overrides)?;
                    } else {
                        self.start_cluster(&command, &data_dir, &listener, nodes, &overrides)?;
                    }
                }
                self.applied = Some(params.to_vec());
                Ok(listener)
            }
            BrokerTarget::External {
                bootstrap,
                broker_id,
            } => {
                if !unchanged && !params.is_empty() {
                    alter_broker_configs(&bootstrap, &broker_id, params)?;
                }
                self.applied = Some(params.to_vec());
                Ok(bootstrap)
            }
        }
    }

    fn start(
        &mut self,
        command: &[String],
        data_dir: &std::path::Path,
        listener: &str,
        params: &[(String, String)],
    ) -> Result<(), String> {
        self.starts += 1;
        let data = data_dir.join(format!("broker-{}", self.starts));
        if data.exists() {
            std::fs::remove_dir_all(&data).map_err(|e| format!("{}: {e}", data.display()))?;
        }
        let addr = listener
            .to_socket_addrs()
            .ok()
            .and_then(|mut addrs| addrs.next())
            .ok_or_else(|| format!("{listener} is not an address"))?;
        refuse_taken(listener)?;
        let (program, rest) = command.split_first().ok_or("empty broker command")?;
        let mut process = Command::new(program);
        process
            .args(rest)
            .arg("--override")
            .arg(format!("listeners=PLAINTEXT://{listener}"))
            .arg("--override")
            .arg(format!("log.dirs={}", data.display()));
        for (key, value) in params {
            process.arg("--override").arg(format!("{key}={value}"));
        }
        eprintln!(
            "starting broker: {program} {} (data in {})",
            params
                .iter()
                .map(|(k, v)| format!("--override {k}={v}"))
                .collect::<Vec<_>>()
                .join(" "),
            data.display()
        );
        let mut child = process
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()
            .map_err(|e| format!("cannot run {program}: {e}"))?;
        if let Err(reason) = wait_listening(&mut child, addr) {
            let _ = child.kill();
            let _ = child.wait();
            return Err(reason);
        }
        self.running = Some(Running {
            children: vec![child],
            data: vec![data],
        });
        Ok(())
    }

    /// Starts `nodes` nodes as one cluster and waits until each has printed `ready`.
    fn start_cluster(
        &mut self,
        command: &[String],
        data_dir: &Path,
        listener: &str,
        nodes: usize,
        params: &[(String, String)],
    ) -> Result<(), String> {
        self.starts += 1;
        let specs = cluster_nodes(listener, nodes, data_dir)?;
        for spec in &specs {
            if spec.data.exists() {
                std::fs::remove_dir_all(&spec.data)
                    .map_err(|e| format!("{}: {e}", spec.data.display()))?;
            }
            for address in [&spec.client, &spec.controller] {
                refuse_taken(address)?;
            }
        }
        let (program, rest) = command.split_first().ok_or("empty broker command")?;
        eprintln!(
            "starting a cluster of {nodes} nodes on {}..: {program} {} (data in {}/node-N)",
            specs[0].client,
            params
                .iter()
                .map(|(k, v)| format!("--override {k}={v}"))
                .collect::<Vec<_>>()
                .join(" "),
            data_dir.display()
        );
        let (ready_tx, ready_rx) = mpsc::channel::<usize>();
        // Recorded as it grows, so a failure part-way stops the nodes already started.
        self.running = Some(Running {
            children: Vec::with_capacity(nodes),
            data: specs.iter().map(|spec| spec.data.clone()).collect(),
        });
        for spec in &specs {
            let mut process = Command::new(program);
            process.args(rest);
            for (key, value) in spec.overrides.iter().chain(params) {
                process.arg("--override").arg(format!("{key}={value}"));
            }
            let spawned = process
                .stdin(Stdio::null())
                .stdout(Stdio::piped())
                .stderr(Stdio::inherit())
                .spawn();
            let mut child = match spawned {
                Ok(child) => child,
                Err(error) => {
                    self.stop();
                    return Err(format!("cannot run {program}: {error}"));
                }
            };
            if let Some(stdout) = child.stdout.take() {
                watch_for_ready(spec.id, stdout, ready_tx.clone());
            }
            if let Some(running) = &mut self.running {
                running.children.push(child);
            }
        }
        let outcome = match &mut self.running {
            Some(running) => wait_ready(&mut running.children, &ready_rx),
            None => Err("the cluster's nodes are gone".to_owned()),
        };
        if outcome.is_err() {
            self.stop();
        }
        outcome
    }

    /// Stops a managed broker or cluster (SIGTERM to every node, then SIGKILL to those still
    /// running after a deadline) and removes its data.
    pub fn stop(&mut self) {
        let Some(mut running) = self.running.take() else {
            return;
        };
        for child in &running.children {
            // std has no SIGTERM; kill(1) sends it, and a clean stop flushes and closes the
            // logs.
            let _ = Command::new("kill")
                .arg("-TERM")
                .arg(child.id().to_string())
                .status();
        }
        let deadline = Instant::now() + STOP_TIMEOUT;
        for child in &mut running.children {
            loop {
                match child.try_wait() {
                    Ok(Some(_)) => break,
                    Ok(None) if Instant::now() < deadline => std::thread::sleep(POLL),
                    _ => {
                        eprintln!(
                            "broker {} did not stop within {STOP_TIMEOUT:?}; killing it",
                            child.id()
                        );
                        let _ = child.kill();
                        let _ = child.wait();
                        break;
                    }
                }
            }
        }
        for data in &running.data {
            let _ = std::fs::remove_dir_all(data);
        }
    }
}

/// One node of a managed cluster: where it listens, where it keeps its data, and the
/// overrides that say so.
#[derive(Debug, Clone, PartialEq, Eq)]
struct NodeSpec {
    id: usize,
    client: String,
    controller: String,
    data: PathBuf,
    overrides: Vec<(String, String)>,
}

/// The nodes of a cluster whose node 0 listens for clients at `listener` (host:port P):
/// node i takes client port P + i, controller port P + 100 + i and `<data_dir>/node-i`, and
/// every node is a broker and a voter of the same quorum (KRaft's combined mode).
fn cluster_nodes(listener: &str, nodes: usize, data_dir: &Path) -> Result<Vec<NodeSpec>, String> {
    let (host, port) =
        split_listener(listener).ok_or_else(|| format!("{listener} is not host:port"))?;
    let port_of = |offset: usize| {
        u16::try_from(usize::from(port) + offset)
            .map_err(|_| format!("{listener}: node ports run past {}", u16::MAX))
    };
    let controller_base = usize::from(CONTROLLER_PORT_OFFSET);
    let controllers = (0..nodes)
        .map(|i| Ok(format!("{host}:{}", port_of(controller_base + i)?)))
        .collect::<Result<Vec<_>, String>>()?;
    let voters = controllers
        .iter()
        .enumerate()
        .map(|(i, controller)| format!("{i}@{controller}"))
        .collect::<Vec<_>>()
        .join(",");
    (0..nodes)
        .map(|i| {
            let client = format!("{host}:{}", port_of(i)?);
            let controller = controllers[i].clone();
            let data = data_dir.join(format!("node-{i}"));
            let overrides = [
                ("node.id", i.to_string()),
                ("process.roles", "broker,controller".to_owned()),
                (
                    "listeners",
                    format!("PLAINTEXT://{client},CONTROLLER://{controller}"),
                ),
                ("controller.quorum.voters", voters.clone()),
                ("log.dirs", data.display().to_string()),
            ]
            .into_iter()
            .map(|(key, value)| (key.to_owned(), value))
            .collect();
            Ok(NodeSpec {
                id: i,
                client,
                controller,
                data,
                overrides,
            })
        })
        .collect()
}

/// Sluice binds with SO_REUSEPORT, so a second broker on a taken port would start and
/// silently share the connections with the first one; refuse to start it.
fn refuse_taken(address: &str) -> Result<(), String> {
    let addr = address
        .to_socket_addrs()
        .ok()
        .and_then(|mut addrs| addrs.next())
        .ok_or_else(|| format!("{address} is not an address"))?;
    if TcpStream::connect_timeout(&addr, POLL).is_ok() {
        return Err(format!("something already listens on {address}"));
    }
    Ok(())
}

/// Reads a node's stdout on a thread of its own and reports its `ready` line. It reads on
/// to the end, so the node never blocks on (or fails at) a full or closed pipe.
fn watch_for_ready(node: usize, stdout: std::process::ChildStdout, ready: mpsc::Sender<usize>) {
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            if line.trim() == "ready" {
                // The sweep may have stopped waiting; the node runs on regardless.
                let _ = ready.send(node);
            }
        }
    });
}

/// Waits until every node has said `ready`, or one exits, or the deadline passes.
fn wait_ready(children: &mut [Child], ready: &mpsc::Receiver<usize>) -> Result<(), String> {
    let deadline = Instant::now() + CLUSTER_START_TIMEOUT;
    let mut is_ready = vec![false; children.len()];
    loop {
        match ready.recv_timeout(POLL) {
            Ok(node) => {
                if let Some(flag) = is_ready.get_mut(node) {
                    *flag = true;
                }
                if is_ready.iter().all(|&r| r) {
                    return Ok(());
                }
            }
            Err(mpsc::RecvTimeoutError::Timeout) => {}
            // Every node's stdout has closed, so every node has gone; try_wait tells which.
            Err(mpsc::RecvTimeoutError::Disconnected) => std::thread::sleep(POLL),
        }
        for (node, child) in children.iter_mut().enumerate() {
            if let Ok(Some(status)) = child.try_wait() {
                return Err(format!("node {node} exited with {status}"));
            }
        }
        if Instant::now() >= deadline {
            let waiting: Vec<String> = (0..is_ready.len())
                .filter(|&node| !is_ready[node])
                .map(|node| node.to_string())
                .collect();
            return Err(format!(
                "nodes {} not ready after {CLUSTER_START_TIMEOUT:?}",
                waiting.join(", ")
            ));
        }
    }
}

impl Drop for Broker {
    fn drop(&mut self) {
        self.stop();
    }
}

/// Waits until the broker accepts connections, or exits, or the deadline passes.
fn wait_listening(child: &mut Child, addr: SocketAddr) -> Result<(), String> {
    let deadline = Instant::now() + START_TIMEOUT;
    loop {
        if let Ok(Some(status)) = child.try_wait() {
            return Err(format!("the broker exited with {status}"));
        }
        if TcpStream::connect_timeout(&addr, POLL).is_ok() {
            return Ok(());
        }
        if Instant::now() >= deadline {
            return Err(format!("nothing listens on {addr} after {START_TIMEOUT:?}"));
        }
        std::thread::sleep(POLL);
    }
}

/// Sets `params` as dynamic configs of broker `broker_id` with IncrementalAlterConfigs.
fn alter_broker_configs(
    bootstrap: &str,
    broker_id: &str,
    params: &[(String, String)],
) -> Result<(), String> {
    let addr = bootstrap
        .to_socket_addrs()
        .ok()
        .and_then(|mut addrs| addrs.next())
        .ok_or_else(|| format!("{bootstrap} is not an address"))?;
    let runtime = compio::runtime::Runtime::new().map_err(|e| e.to_string())?;
    runtime.block_on(async {
        let mut client = cluster::connect(addr, "sluice-bench-sweep".to_owned())
            .await
            .map_err(|e| e.to_string())?;
        let offered = client
            .send_request(3, &ApiVersionsRequest::default())
            .await
            .map_err(|e| e.to_string())?;
        let version = offered
            .api_keys
            .iter()
            .find(|api| api.api_key == ApiKey::IncrementalAlterConfigs as i16)
            .filter(|api| api.min_version <= 1)
            .map(|api| api.max_version.min(1))
            .ok_or("the broker does not offer IncrementalAlterConfigs v0 or v1")?;
        let configs = params
            .iter()
            .map(|(key, value)| {
                AlterableConfig::default()
                    .with_name(StrBytes::from_string(key.clone()))
                    .with_config_operation(OPERATION_SET)
                    .with_value(Some(StrBytes::from_string(value.clone())))
            })
            .collect();
        let request = IncrementalAlterConfigsRequest::default().with_resources(vec![
            AlterConfigsResource::default()
                .with_resource_type(RESOURCE_TYPE_BROKER)
                .with_resource_name(StrBytes::from_string(broker_id.to_owned()))
                .with_configs(configs),
        ]);
        let response = client
            .send_request(version, &request)
            .await
            .map_err(|e| e.to_string())?;
        for result in &response.responses {
            if result.error_code != 0 {
                let message = result.error_message.as_deref().unwrap_or("");
                return Err(format!("{} {message}", error_name(result.error_code)));
            }
        }
        eprintln!(
            "broker {broker_id} at {bootstrap}: set {}",
            params
                .iter()
                .map(|(k, v)| format!("{k}={v}"))
                .collect::<Vec<_>>()
                .join(" ")
        );
        Ok(())
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_build_parameter_picks_the_program_and_is_no_override() {
        let broker = Broker::new(BrokerTarget::External {
            bootstrap: "h:1".to_owned(),
            broker_id: "0".to_owned(),
        })
        .with_builds(vec![("old".to_owned(), "/tmp/old/sluice".to_owned())]);
        let command = ["sluice".to_owned(), "serve".to_owned()];
        let params = [
            ("build".to_owned(), "old".to_owned()),
            ("log.segment.bytes".to_owned(), "1".to_owned()),
        ];
        let (command, rest) = broker.resolve(&command, &params).unwrap();
        assert_eq!(command, ["/tmp/old/sluice", "serve"]);
        assert_eq!(rest, [("log.segment.bytes".to_owned(), "1".to_owned())]);
        let unknown = [("build".to_owned(), "new".to_owned())];
        assert!(broker.resolve(&command, &unknown).is_err());
    }

    #[test]
    fn a_managed_broker_refuses_a_port_already_taken() {
        let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let listener = taken.local_addr().unwrap().to_string();
        let data = std::env::temp_dir().join(format!("sluice-sweep-test-{}", std::process::id()));
        let mut broker = Broker::new(BrokerTarget::Managed {
            command: vec!["true".to_owned()],
            data_dir: data,
            listener: listener.clone(),
            nodes: 1,
            fresh: false,
        });
        let refused = broker.apply(&[]).unwrap_err();
        assert_eq!(refused, format!("something already listens on {listener}"));
    }

    #[test]
    fn a_broker_that_exits_at_once_is_reported() {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap();
        let data = std::env::temp_dir().join(format!("sluice-sweep-exit-{}", std::process::id()));
        let mut broker = Broker::new(BrokerTarget::Managed {
            command: vec!["false".to_owned()],
            data_dir: data,
            listener: port.to_string(),
            nodes: 1,
            fresh: false,
        });
        let failed = broker.apply(&[("log.segment.bytes".to_owned(), "1".to_owned())]);
        assert!(failed.unwrap_err().starts_with("the broker exited with"));
    }

    #[test]
    fn cluster_nodes_get_ports_voters_and_data_of_their_own() {
        let nodes = cluster_nodes("127.0.0.1:19500", 3, Path::new("/tmp/c")).unwrap();
        let voters = "0@127.0.0.1:19600,1@127.0.0.1:19601,2@127.0.0.1:19602";
        let expected = |i: usize| NodeSpec {
            id: i,
            client: format!("127.0.0.1:{}", 19500 + i),
            controller: format!("127.0.0.1:{}", 19600 + i),
            data: PathBuf::from(format!("/tmp/c/node-{i}")),
            overrides: [
                ("node.id", i.to_string()),
                ("process.roles", "broker,controller".to_owned()),
                (
                    "listeners",
                    format!(
                        "PLAINTEXT://127.0.0.1:{},CONTROLLER://127.0.0.1:{}",
                        19500 + i,
                        19600 + i
                    ),
                ),
                ("controller.quorum.voters", voters.to_owned()),
                ("log.dirs", format!("/tmp/c/node-{i}")),
            ]
            .into_iter()
            .map(|(k, v)| (k.to_owned(), v))
            .collect(),
        };
        assert_eq!(nodes, (0..3).map(expected).collect::<Vec<_>>());
        assert!(cluster_nodes("127.0.0.1:65435", 2, Path::new("/tmp/c")).is_err());
        assert!(cluster_nodes("no-port", 2, Path::new("/tmp/c")).is_err());
    }

    #[test]
    fn a_cluster_whose_nodes_exit_is_reported_and_cleaned_up() {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let data =
            std::env::temp_dir().join(format!("sluice-sweep-cluster-{}", std::process::id()));
        let mut broker = Broker::new(BrokerTarget::Managed {
            command: vec!["false".to_owned()],
            data_dir: data.clone(),
            listener: format!("127.0.0.1:{}", port.min(60_000)),
            nodes: 2,
            fresh: false,
        });
        let failed = broker.apply(&[]).unwrap_err();
        assert!(
            failed.starts_with("node 0 exited with") || failed.starts_with("node 1 exited with"),
            "{failed}"
        );
        assert!(broker.running.is_none());
        assert!(!data.join("node-0").exists());
    }
}
