//! The Grafana dashboard (docs/grafana/sluice.json) against a real Prometheus scraping a real
//! broker under load: every query of every panel returns data. Grafana itself is not needed:
//! its `$instance` variable is given the value "All" stands for, and each query goes to
//! Prometheus's HTTP API. Prometheus comes from Debian's `prometheus` package, which the test
//! command installs (with promtool).

mod support;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use support::kafka::{self, Conn, Message};
use support::Broker;

const DEADLINE: Duration = Duration::from_secs(90);
const TOPIC: &str = "dashboard";
const GROUP: &str = "dashboard-readers";

struct Prometheus {
    child: Child,
    address: SocketAddr,
    _dir: tempfile::TempDir,
}

impl Drop for Prometheus {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The status and body of a plain HTTP GET, or None if the server does not answer.
fn get(address: SocketAddr, path: &str) -> Option<(u16, String)> {
    let mut stream = TcpStream::connect_timeout(&address, Duration::from_secs(5)).ok()?;
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .ok()?;
    let request = format!("GET {path} HTTP/1.0\r\nHost: prometheus\r\n\r\n");
    stream.write_all(request.as_bytes()).ok()?;
    let mut response = String::new();
    stream.read_to_string(&mut response).ok()?;
    let (head, body) = response.split_once("\r\n\r\n")?;
    let status = head.split_whitespace().nth(1)?.parse().ok()?;
    Some((status, body.to_owned()))
}

fn start_prometheus(target: SocketAddr) -> Prometheus {
    let dir = tempfile::tempdir().expect("temp dir");
    let config = dir.path().join("prometheus.yml");
    std::fs::write(
        &config,
        format!(
            "global:\n  scrape_interval: 1s\n  evaluation_interval: 1s\n\
             scrape_configs:\n  - job_name: sluice\n    static_configs:\n      \
             - targets: ['{target}']\n"
        ),
    )
    .expect("write prometheus.yml");
    let address: SocketAddr = format!("127.0.0.1:{}", support::cluster::free_port())
        .parse()
        .unwrap();
    let child = Command::new("prometheus")
        .arg(format!("--config.file={}", config.display()))
        .arg(format!(
            "--storage.tsdb.path={}",
            dir.path().join("data").display()
        ))
        .arg(format!("--web.listen-address={address}"))
        .arg("--log.level=warn")
        .stdout(Stdio::null())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("prometheus is installed (scripts/test.sh installs Debian's prometheus)");
    let prometheus = Prometheus {
        child,
        address,
        _dir: dir,
    };
    support::cluster::wait_until(DEADLINE, "Prometheus ready", || {
        get(address, "/-/ready").is_some_and(|(status, _)| status == 200)
    });
    prometheus
}

/// `text` percent-encoded for a query string.
fn encode(text: &str) -> String {
    text.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

/// The series an instant query returns now.
fn query(prometheus: &Prometheus, expr: &str) -> Vec<serde_json::Value> {
    let path = format!("/api/v1/query?query={}", encode(expr));
    let Some((200, body)) = get(prometheus.address, &path) else {
        return Vec::new();
    };
    let answer: serde_json::Value = serde_json::from_str(&body).unwrap_or_default();
    answer["data"]["result"]
        .as_array()
        .cloned()
        .unwrap_or_default()
}

/// Every panel's title and query expressions, with Grafana's variables given values.
fn panel_queries() -> Vec<(String, String)> {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../docs/grafana/sluice.json");
    let text = std::fs::read_to_string(path).expect("the dashboard");
    let dashboard: serde_json::Value = serde_json::from_str(&text).expect("the dashboard is JSON");
    let mut queries = Vec::new();
    for panel in dashboard["panels"].as_array().expect("panels") {
        let title = panel["title"].as_str().expect("a title").to_owned();
        let targets = panel["targets"].as_array().expect("targets");
        assert!(!targets.is_empty(), "{title} has no query");
        for target in targets {
            let expr = target["expr"].as_str().expect("an expression");
            queries.push((title.clone(), expr.replace("$instance", ".*")));
        }
    }
    queries
}

#[test]
fn every_dashboard_query_returns_data_from_a_broker_under_load() {
    let queries = panel_queries();
    assert!(queries.len() >= 10, "{queries:?}");
    let broker = Broker::start(&["sluice.reactors=2"]);
    let metrics = broker.metrics.expect("the metrics endpoint is on");
    // Load until the checks are done: produce and read back, and a group that lags.
    let stop = Arc::new(AtomicBool::new(false));
    let load = {
        let stop = Arc::clone(&stop);
        let address = broker.address;
        std::thread::spawn(move || {
            let mut conn = Conn::connect(address);
            let messages: Vec<Message> = (0..100)
                .map(|i| Message::new(format!("k{i}"), "v".repeat(500)))
                .collect();
            let batch = kafka::batch(&messages);
            let mut next = 0;
            while !stop.load(Ordering::Relaxed) {
                let request = kafka::produce_request(TOPIC, 0, Some(batch.clone()), 1);
                assert_eq!(kafka::produce(&mut conn, &request).0, 0, "produce");
                let read = kafka::fetch_all(address, TOPIC, 0, next).len() as i64;
                if next == 0 {
                    // Half of the first batch: the group lags from then on.
                    kafka::commit_standalone(&mut conn, GROUP, &[(TOPIC, 0, read / 2)]);
                }
                next += read;
                // A steady trickle rather than a flood: the machine runs other tests too.
                std::thread::sleep(Duration::from_millis(50));
            }
        })
    };
    let prometheus = start_prometheus(metrics);
    let started = Instant::now();
    let mut missing: Vec<(String, String)> = queries.clone();
    while !missing.is_empty() && started.elapsed() < DEADLINE {
        missing.retain(|(_, expr)| query(&prometheus, expr).is_empty());
        if !missing.is_empty() {
            std::thread::sleep(Duration::from_millis(500));
        }
    }
    stop.store(true, Ordering::Relaxed);
    load.join().expect("the load thread");
    assert!(
        missing.is_empty(),
        "panel queries without data after {DEADLINE:?}: {missing:#?}"
    );
}
