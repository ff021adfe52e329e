//! `sluice serve` says what it is running on, stops cleanly on SIGTERM, and refuses to start
//! on an address another process already listens on.

mod support;

use std::io::{BufRead, BufReader, Read};
use std::process::{Command, ExitStatus, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use support::kafka::{self, Conn};
use support::Broker;

#[test]
fn banner_names_version_listener_data_reactors_and_backend() {
    let broker = Broker::start(&["sluice.reactors=2"]);
    let banner = broker.banner.join("\n");
    assert!(
        banner.contains(&format!("sluice {}", env!("CARGO_PKG_VERSION"))),
        "{banner}"
    );
    assert!(banner.contains("data directory:"), "{banner}");
    assert!(banner.contains("reactors:       2"), "{banner}");
    assert!(
        banner.contains("I/O backend:    io_uring")
            || banner.contains("I/O backend:    epoll fallback ("),
        "{banner}"
    );
    assert!(
        banner.contains(&format!("listening on:   {}", broker.address)),
        "{banner}"
    );
    let status = broker.stop();
    assert!(status.success(), "exit status {status}");
}

#[test]
fn help_describes_every_property() {
    let output = support::run(
        std::process::Command::new(env!("CARGO_BIN_EXE_sluice")).args(["serve", "--help"]),
    );
    let help = String::from_utf8_lossy(&output);
    for key in sluice_broker::config::KEYS {
        assert!(help.contains(key.name), "serve --help lacks {}", key.name);
    }
    for option in ["--config", "--override", "--log"] {
        assert!(help.contains(option), "serve --help lacks {option}");
    }
}

/// Runs `sluice serve` with `overrides` and expects it to fail at start-up: returns its exit
/// status and stderr. Fails the test if it prints `ready` or is still running at the deadline.
fn failed_start(overrides: &[String]) -> (ExitStatus, String) {
    let dir = tempfile::tempdir().expect("temp dir");
    let mut command = Command::new(env!("CARGO_BIN_EXE_sluice"));
    command.args(["serve", "--log", "warn"]);
    command
        .arg("--override")
        .arg(format!("log.dirs={}", dir.path().join("data").display()));
    for pair in overrides {
        command.arg("--override").arg(pair);
    }
    let mut child = command
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn sluice");
    let stdout = child.stdout.take().expect("stdout");
    let (ready_tx, ready) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            if line == "ready" {
                let _ = ready_tx.send(());
            }
        }
    });
    let deadline = Instant::now() + support::START_TIMEOUT;
    let status = loop {
        if let Some(status) = child.try_wait().expect("wait") {
            break status;
        }
        if ready.try_recv().is_ok() {
            let _ = child.kill();
            let _ = child.wait();
            panic!("a second broker started on a taken address: {overrides:?}");
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!(
                "sluice neither started nor failed within {:?}",
                support::START_TIMEOUT
            );
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    let mut stderr = String::new();
    child
        .stderr
        .take()
        .expect("stderr")
        .read_to_string(&mut stderr)
        .expect("read stderr");
    (status, stderr)
}

/// The running broker still answers on its Kafka port and serves metrics.
fn still_serving(broker: &Broker) {
    let mut conn = Conn::connect(broker.address);
    let versions: kafka_protocol::messages::ApiVersionsResponse = conn.call(
        kafka::API_VERSIONS_VERSION,
        &kafka_protocol::messages::ApiVersionsRequest::default(),
    );
    assert_eq!(versions.error_code, 0);
    assert!(broker
        .scrape()
        .contains("kafka_server_socketservermetrics_connections"));
}

#[test]
fn a_second_broker_on_a_taken_address_exits_naming_it() {
    let first = Broker::start(&[]);
    let metrics = first.metrics.expect("metrics endpoint");

    let (status, stderr) = failed_start(&[
        format!("listeners=PLAINTEXT://{}", first.address),
        "sluice.metrics.address=127.0.0.1:0".to_owned(),
    ]);
    assert!(!status.success(), "exit status {status}");
    let expected = format!("cannot listen on {} (listeners)", first.address);
    assert!(stderr.contains(&expected), "{stderr}");
    assert!(stderr.contains("address already in use"), "{stderr}");
    still_serving(&first);

    let (status, stderr) = failed_start(&[
        "listeners=PLAINTEXT://127.0.0.1:0".to_owned(),
        format!("sluice.metrics.address={metrics}"),
    ]);
    assert!(!status.success(), "exit status {status}");
    let expected = format!("cannot listen on {metrics} (sluice.metrics.address)");
    assert!(stderr.contains(&expected), "{stderr}");
    assert!(stderr.contains("address already in use"), "{stderr}");
    still_serving(&first);

    let status = first.stop();
    assert!(status.success(), "exit status {status}");
}

/// The kernel's view (`ss -tm`) of the broker's end of a client connection: its receive and
/// send buffer sizes (`rb`, `tb`), which Linux keeps at twice the size a program sets.
fn broker_side_buffers(broker: &Broker) -> Option<(u64, u64)> {
    let port = broker.address.port();
    let out = Command::new("ss")
        .args([
            "-tmnH",
            "state",
            "established",
            "sport",
            "=",
            &format!(":{port}"),
        ])
        .output()
        .expect("ss runs (iproute2; scripts/test.sh installs it)");
    let text = String::from_utf8_lossy(&out.stdout);
    let memory = text.split("skmem:(").nth(1)?;
    let field = |name: &str| -> Option<u64> {
        let fields = memory.split([',', ')']);
        fields
            .filter_map(|f| f.strip_prefix(name))
            .find_map(|n| n.parse().ok())
    };
    Some((field("rb")?, field("tb")?))
}

#[test]
fn socket_buffer_settings_reach_every_accepted_connection() {
    let broker = Broker::start(&[
        "socket.receive.buffer.bytes=50000",
        "socket.send.buffer.bytes=40000",
    ]);
    // The connection stays open while `ss` looks at it.
    let mut conn = Conn::connect(broker.address);
    let versions: kafka_protocol::messages::ApiVersionsResponse = conn.call(
        kafka::API_VERSIONS_VERSION,
        &kafka_protocol::messages::ApiVersionsRequest::default(),
    );
    assert_eq!(versions.error_code, 0);
    assert_eq!(broker_side_buffers(&broker), Some((100_000, 80_000)));
}
