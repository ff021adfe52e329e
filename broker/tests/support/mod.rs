//! Starts the real `sluice` binary on a loopback port chosen by the kernel, with its own data
//! directory, and stops it (cleanly or with SIGKILL) when the test is done. `kafka` is a
//! blocking wire client for tests that send exact bytes.

#![allow(dead_code)]

pub mod cluster;
pub mod java;
pub mod kafka;

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

/// How long a broker may take to print `ready`.
pub const START_TIMEOUT: Duration = Duration::from_secs(30);

pub struct Broker {
    child: Option<Child>,
    pub address: SocketAddr,
    pub metrics: Option<SocketAddr>,
    /// The controller listener, on a node that is a voter (every node by default).
    pub controller: Option<SocketAddr>,
    pub banner: Vec<String>,
    pub data: PathBuf,
    _dir: Option<tempfile::TempDir>,
}

/// A broker process that has been started but may not be ready yet (a cluster node becomes
/// ready only once a quorum of controllers runs).
pub struct Starting {
    child: Child,
    lines: mpsc::Receiver<String>,
    data: PathBuf,
}

impl Starting {
    pub fn spawn(data: &Path, overrides: &[&str]) -> Starting {
        Self::spawn_limited(data, overrides, None)
    }

    /// Like `spawn`, with the open-files limit (soft and hard) set to `nofile`.
    pub fn spawn_limited(data: &Path, overrides: &[&str], nofile: Option<u64>) -> Starting {
        let mut command = Command::new(env!("CARGO_BIN_EXE_sluice"));
        if let Some(limit) = nofile {
            use std::os::unix::process::CommandExt;
            let limit = rustix::process::Rlimit {
                current: Some(limit),
                maximum: Some(limit),
            };
            // SAFETY: setrlimit is a single system call, safe between fork and exec.
            unsafe {
                command.pre_exec(move || {
                    rustix::process::setrlimit(rustix::process::Resource::Nofile, limit)
                        .map_err(std::io::Error::from)
                });
            }
        }
        command.arg("serve").arg("--log").arg("warn");
        command
            .arg("--override")
            .arg("listeners=PLAINTEXT://127.0.0.1:0");
        command
            .arg("--override")
            .arg(format!("log.dirs={}", data.display()));
        // Each broker gets its own metrics port, so parallel tests never scrape each other.
        command
            .arg("--override")
            .arg("sluice.metrics.address=127.0.0.1:0");
        for pair in overrides {
            command.arg("--override").arg(pair);
        }
        let mut child = command
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("spawn sluice");
        let stdout = child.stdout.take().expect("stdout");
        let (lines_tx, lines) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if lines_tx.send(line).is_err() {
                    return;
                }
            }
        });
        Starting {
            child,
            lines,
            data: data.to_owned(),
        }
    }

    /// Waits until the broker prints `ready`, and reads the addresses from its banner.
    pub fn wait(mut self) -> Broker {
        let deadline = Instant::now() + START_TIMEOUT;
        let mut banner = Vec::new();
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            let line = self.lines.recv_timeout(left).unwrap_or_else(|_| {
                let _ = self.child.kill();
                panic!("sluice did not print ready within {START_TIMEOUT:?}; output so far: {banner:?}")
            });
            if line == "ready" {
                break;
            }
            banner.push(line);
        }
        let address = banner
            .iter()
            .find_map(|l| l.trim().strip_prefix("listening on:"))
            .and_then(|rest| rest.split_whitespace().next())
            .and_then(|a| a.parse().ok())
            .expect("banner names the listening address");
        let metrics = banner
            .iter()
            .find_map(|l| l.trim().strip_prefix("metrics:"))
            .and_then(|rest| rest.trim().strip_prefix("http://"))
            .and_then(|rest| rest.strip_suffix("/metrics"))
            .and_then(|a| a.parse().ok());
        let controller = banner
            .iter()
            .find_map(|l| l.trim().strip_prefix("controller:"))
            .and_then(|rest| rest.trim().parse().ok());
        Broker {
            child: Some(self.child),
            address,
            metrics,
            controller,
            banner,
            data: self.data,
            _dir: None,
        }
    }
}

impl Broker {
    /// A broker on a fresh data directory.
    pub fn start(overrides: &[&str]) -> Broker {
        let dir = tempfile::tempdir().expect("temp dir");
        let data = dir.path().join("data");
        let mut broker = Self::start_in(&data, overrides);
        broker._dir = Some(dir);
        broker
    }

    /// A broker on an existing data directory (for restarts).
    pub fn start_in(data: &Path, overrides: &[&str]) -> Broker {
        Starting::spawn(data, overrides).wait()
    }

    /// The Prometheus text the broker serves now.
    pub fn scrape(&self) -> String {
        use std::io::{Read, Write};
        let address = self.metrics.expect("metrics endpoint is on");
        let mut stream = std::net::TcpStream::connect(address).expect("connect to metrics");
        stream
            .set_read_timeout(Some(Duration::from_secs(10)))
            .expect("timeout");
        stream
            .write_all(b"GET /metrics HTTP/1.1\r\nHost: sluice\r\n\r\n")
            .expect("send");
        let mut response = String::new();
        stream.read_to_string(&mut response).expect("read metrics");
        let (head, body) = response.split_once("\r\n\r\n").expect("http response");
        assert!(head.starts_with("HTTP/1.1 200"), "{head}");
        body.to_owned()
    }

    /// One sample's value from a scrape.
    pub fn metric(text: &str, name: &str) -> u64 {
        text.lines()
            .find_map(|line| {
                line.strip_prefix(name)?
                    .strip_prefix(' ')?
                    .trim()
                    .parse()
                    .ok()
            })
            .unwrap_or_else(|| panic!("metric {name} missing from:\n{text}"))
    }

    /// The broker's process id.
    pub fn pid(&self) -> rustix::process::Pid {
        let child = self.child.as_ref().expect("the broker is running");
        rustix::process::Pid::from_child(child)
    }

    /// The broker's `/proc/<pid>` directory.
    pub fn proc_dir(&self) -> PathBuf {
        let child = self.child.as_ref().expect("the broker is running");
        PathBuf::from(format!("/proc/{}", child.id()))
    }

    /// Whether the broker process is still alive (not exited, not a zombie awaiting reaping).
    pub fn is_running(&self) -> bool {
        let Some(child) = &self.child else {
            return false;
        };
        let stat = std::fs::read_to_string(format!("/proc/{}/stat", child.id()));
        // The state is the first field after the parenthesised command name.
        stat.ok()
            .and_then(|s| {
                s.rsplit_once(')')
                    .map(|(_, rest)| rest.trim_start().to_owned())
            })
            .is_some_and(|rest| !rest.starts_with('Z') && !rest.starts_with('X'))
    }

    pub fn bootstrap(&self) -> String {
        self.address.to_string()
    }

    /// SIGTERM, then wait for a clean exit.
    pub fn stop(mut self) -> std::process::ExitStatus {
        let mut child = self.child.take().expect("running");
        let _ = rustix::process::kill_process(
            rustix::process::Pid::from_child(&child),
            rustix::process::Signal::TERM,
        );
        wait_with_deadline(&mut child, Duration::from_secs(30))
    }

    /// SIGKILL: the broker gets no chance to flush or close.
    pub fn kill(mut self) {
        let mut child = self.child.take().expect("running");
        let _ = child.kill();
        let _ = child.wait();
    }

    /// Keeps the data directory alive beyond this broker (for a restart).
    pub fn take_dir(&mut self) -> Option<tempfile::TempDir> {
        self._dir.take()
    }
}

fn wait_with_deadline(child: &mut Child, limit: Duration) -> std::process::ExitStatus {
    let deadline = Instant::now() + limit;
    loop {
        if let Some(status) = child.try_wait().expect("wait") {
            return status;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!("sluice did not exit within {limit:?} of SIGTERM");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

impl Drop for Broker {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// Runs a command to completion and returns its stdout, failing the test with its stderr.
pub fn run(command: &mut Command) -> Vec<u8> {
    let output = command
        .output()
        .unwrap_or_else(|e| panic!("cannot run {command:?}: {e}"));
    assert!(
        output.status.success(),
        "{command:?} failed with {}:\n{}",
        output.status,
        String::from_utf8_lossy(&output.stderr)
    );
    output.stdout
}

/// The Python interpreter with confluent-kafka, as scripts/test.sh installs it.
pub fn python() -> Command {
    let python = std::env::var("SLUICE_TEST_PYTHON")
        .expect("SLUICE_TEST_PYTHON is unset: run the tests with scripts/test.sh, which installs the clients");
    Command::new(python)
}

/// Node with kafkajs on its module path, as scripts/test.sh installs it.
pub fn node() -> Command {
    let modules = std::env::var("SLUICE_TEST_NODE_PATH").expect(
        "SLUICE_TEST_NODE_PATH is unset: run the tests with scripts/test.sh, which installs the clients",
    );
    let mut command = Command::new("node");
    command
        .env("NODE_PATH", modules)
        .env("KAFKAJS_NO_PARTITIONER_WARNING", "1");
    command
}

/// A client script from broker/tests/clients.
pub fn client_script(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests")
        .join("clients")
        .join(name)
}

/// Runs `cluster_client.py` against `bootstrap` and returns the JSON it prints.
pub fn cluster_client(bootstrap: &str, args: &[&str]) -> serde_json::Value {
    let mut command = python();
    command
        .arg(client_script("cluster_client.py"))
        .arg(bootstrap)
        .args(args);
    let out = run(&mut command);
    serde_json::from_slice(&out).unwrap_or_else(|e| {
        panic!(
            "cluster_client.py {args:?} printed no JSON ({e}): {}",
            String::from_utf8_lossy(&out)
        )
    })
}
