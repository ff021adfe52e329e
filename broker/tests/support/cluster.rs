//! Several real `sluice` processes on loopback forming one cluster, each with its own data
//! directory, client port (chosen by the kernel) and controller port (chosen here, since every
//! node must know the voters'). The first `voters` nodes are brokers and controller voters
//! (combined mode); the others are brokers only.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use super::{Broker, Starting};

pub struct Cluster {
    pub nodes: Vec<Option<Broker>>,
    /// The controller ports of the voters, nodes 0 to `voters - 1`.
    controller_ports: Vec<u16>,
    extra: Vec<String>,
    dir: tempfile::TempDir,
}

/// A port nobody listens on now (bound with port 0, then released).
pub fn free_port() -> u16 {
    let probe = std::net::TcpListener::bind("127.0.0.1:0").expect("bind a probe");
    probe.local_addr().expect("probe address").port()
}

impl Cluster {
    /// `count` nodes, every one a voter, each with `overrides` on top of the cluster's own
    /// settings.
    pub fn start(count: usize, overrides: &[&str]) -> Cluster {
        Self::start_with_voters(count, count, overrides)
    }

    /// `count` nodes of which the first `voters` are controller voters.
    pub fn start_with_voters(count: usize, voters: usize, overrides: &[&str]) -> Cluster {
        assert!((1..=count).contains(&voters));
        let controller_ports: Vec<u16> = (0..voters).map(|_| free_port()).collect();
        let mut cluster = Cluster {
            nodes: (0..count).map(|_| None).collect(),
            controller_ports,
            extra: overrides.iter().map(|s| (*s).to_owned()).collect(),
            dir: tempfile::tempdir().expect("temp dir"),
        };
        let starting: Vec<Starting> = (0..count).map(|i| cluster.spawn(i)).collect();
        for (i, node) in starting.into_iter().enumerate() {
            cluster.nodes[i] = Some(node.wait());
        }
        cluster
    }

    /// The node's data directory (`log.dirs`).
    pub fn data(&self, node: usize) -> PathBuf {
        self.dir.path().join(format!("node-{node}"))
    }

    fn overrides(&self, node: usize) -> Vec<String> {
        let voters: Vec<String> = (0..self.controller_ports.len())
            .map(|i| format!("{i}@127.0.0.1:{}", self.controller_ports[i]))
            .collect();
        let (roles, listeners) = match self.controller_ports.get(node) {
            Some(port) => (
                "broker,controller",
                format!("PLAINTEXT://127.0.0.1:0,CONTROLLER://127.0.0.1:{port}"),
            ),
            None => ("broker", "PLAINTEXT://127.0.0.1:0".to_owned()),
        };
        let mut overrides = vec![
            format!("node.id={node}"),
            format!("process.roles={roles}"),
            format!("listeners={listeners}"),
            format!("controller.quorum.voters={}", voters.join(",")),
            "sluice.reactors=2".to_owned(),
        ];
        overrides.extend(self.extra.iter().cloned());
        overrides
    }

    fn spawn(&self, node: usize) -> Starting {
        let overrides = self.overrides(node);
        let refs: Vec<&str> = overrides.iter().map(String::as_str).collect();
        Starting::spawn(&self.data(node), &refs)
    }

    pub fn node(&self, node: usize) -> &Broker {
        self.nodes[node].as_ref().expect("node is running")
    }

    /// The client addresses of the running nodes, comma-separated.
    pub fn bootstrap(&self) -> String {
        let running = self.nodes.iter().flatten();
        running
            .map(|b| b.address.to_string())
            .collect::<Vec<_>>()
            .join(",")
    }

    /// SIGKILL one node.
    pub fn kill(&mut self, node: usize) {
        if let Some(broker) = self.nodes[node].take() {
            broker.kill();
        }
    }

    /// SIGTERM one node and wait for it to exit.
    pub fn stop(&mut self, node: usize) {
        if let Some(broker) = self.nodes[node].take() {
            assert!(broker.stop().success(), "node {node} exits cleanly");
        }
    }

    /// Starts stopped nodes again on their data directories, all at once (a quorum may need
    /// more than one of them), and waits until each is ready.
    pub fn restart(&mut self, nodes: &[usize]) {
        let starting: Vec<(usize, Starting)> = nodes.iter().map(|&n| (n, self.spawn(n))).collect();
        for (node, starting) in starting {
            self.nodes[node] = Some(starting.wait());
        }
    }

    /// SIGSTOP or SIGCONT one node: a pause, as a long GC or a frozen VM would cause.
    pub fn signal(&self, node: usize, signal: rustix::process::Signal) {
        let pid = self.node(node).pid();
        rustix::process::kill_process(pid, signal).expect("signal the node");
    }
}

/// Waits until `condition` holds, checking every 200 ms, and fails the test after `limit`.
pub fn wait_until(limit: Duration, what: &str, mut condition: impl FnMut() -> bool) {
    let deadline = Instant::now() + limit;
    while !condition() {
        assert!(
            Instant::now() < deadline,
            "{what} did not happen within {limit:?}"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}
