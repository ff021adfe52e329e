//! Metrics: plain per-core counters (no atomics shared between cores on the hot path), merged
//! on scrape by asking every core for a snapshot, and served as Prometheus text over HTTP.
//! Names follow Kafka's JMX metrics in the style of Kafka's Prometheus exporters.

use std::cell::Cell;
use std::fmt::Write as _;
use std::rc::Rc;
use std::sync::atomic::Ordering;

use compio::io::{AsyncRead, AsyncWriteExt};
use compio::net::{TcpListener, TcpStream};

use crate::core::Core;

/// Largest HTTP request head read from a scraper.
const HTTP_REQUEST_BYTES_MAX: usize = 8192;

/// One core's counters. Each is touched only by its own core.
#[derive(Default)]
pub struct CoreMetrics {
    pub bytes_in: Cell<u64>,
    pub messages_in: Cell<u64>,
    pub produce_requests: Cell<u64>,
    pub fetch_requests: Cell<u64>,
    pub fetch_record_bytes: Cell<u64>,
    pub zero_copy_bytes: Cell<u64>,
    pub bytes_out: Cell<u64>,
}

impl CoreMetrics {
    pub fn add(cell: &Cell<u64>, amount: u64) {
        cell.set(cell.get().wrapping_add(amount));
    }

    fn snapshot(&self) -> Snapshot {
        Snapshot {
            bytes_in: self.bytes_in.get(),
            messages_in: self.messages_in.get(),
            produce_requests: self.produce_requests.get(),
            fetch_requests: self.fetch_requests.get(),
            fetch_record_bytes: self.fetch_record_bytes.get(),
            zero_copy_bytes: self.zero_copy_bytes.get(),
            bytes_out: self.bytes_out.get(),
            partitions: 0,
        }
    }
}

/// A copy of counters that can cross cores, summed over cores on scrape.
#[derive(Default, Clone, Copy)]
struct Snapshot {
    bytes_in: u64,
    messages_in: u64,
    produce_requests: u64,
    fetch_requests: u64,
    fetch_record_bytes: u64,
    zero_copy_bytes: u64,
    bytes_out: u64,
    partitions: u64,
}

impl Snapshot {
    fn merge(self, other: Snapshot) -> Snapshot {
        Snapshot {
            bytes_in: self.bytes_in + other.bytes_in,
            messages_in: self.messages_in + other.messages_in,
            produce_requests: self.produce_requests + other.produce_requests,
            fetch_requests: self.fetch_requests + other.fetch_requests,
            fetch_record_bytes: self.fetch_record_bytes + other.fetch_record_bytes,
            zero_copy_bytes: self.zero_copy_bytes + other.zero_copy_bytes,
            bytes_out: self.bytes_out + other.bytes_out,
            partitions: self.partitions + other.partitions,
        }
    }
}

async fn gather(core: &Rc<Core>) -> Snapshot {
    let mut total = Snapshot::default();
    for target in 0..core.shared.cores {
        let snapshot = core
            .invoke(target, |owner| async move {
                let mut snapshot = owner.metrics.snapshot();
                snapshot.partitions = owner.partitions().len() as u64;
                snapshot
            })
            .await;
        total = total.merge(snapshot.unwrap_or_default());
    }
    total
}

fn render(core: &Core, s: Snapshot) -> String {
    let mut text = String::new();
    let mut metric = |name: &str, kind: &str, help: &str, value: u64| {
        let _ = writeln!(
            text,
            "# HELP {name} {help}\n# TYPE {name} {kind}\n{name} {value}"
        );
    };
    metric(
        "kafka_server_brokertopicmetrics_bytesin_total",
        "counter",
        "Record bytes appended from producers.",
        s.bytes_in,
    );
    metric(
        "kafka_server_brokertopicmetrics_messagesin_total",
        "counter",
        "Records appended from producers.",
        s.messages_in,
    );
    metric(
        "kafka_server_brokertopicmetrics_bytesout_total",
        "counter",
        "Bytes of fetch responses written to sockets.",
        s.bytes_out,
    );
    metric(
        "kafka_server_brokertopicmetrics_totalproducerequests_total",
        "counter",
        "Produce requests handled.",
        s.produce_requests,
    );
    metric(
        "kafka_server_brokertopicmetrics_totalfetchrequests_total",
        "counter",
        "Fetch requests handled.",
        s.fetch_requests,
    );
    metric(
        "sluice_fetch_record_bytes_total",
        "counter",
        "Record bytes placed in fetch responses.",
        s.fetch_record_bytes,
    );
    metric(
        "sluice_zero_copy_bytes_total",
        "counter",
        "Record bytes sent to sockets by splice, never copied to user space.",
        s.zero_copy_bytes,
    );
    metric(
        "kafka_server_replicamanager_partitioncount",
        "gauge",
        "Partitions on this broker.",
        s.partitions,
    );
    metric(
        "kafka_server_replicamanager_underreplicatedpartitions",
        "gauge",
        "Partitions with fewer in-sync replicas than replicas.",
        0,
    );
    metric(
        "kafka_controller_kafkacontroller_activecontrollercount",
        "gauge",
        "1 on the active controller; a single node is its own.",
        1,
    );
    let connections = core.shared.connections.load(Ordering::Relaxed) as u64;
    metric(
        "kafka_server_socketservermetrics_connections",
        "gauge",
        "Open client connections.",
        connections,
    );
    metric(
        "sluice_reactors",
        "gauge",
        "Reactor threads (one per core).",
        core.shared.cores as u64,
    );
    text
}

/// Serves `GET /metrics` on `listener` until the broker stops. Runs on core 0.
pub async fn serve(core: Rc<Core>, listener: TcpListener) {
    loop {
        let Ok((stream, _)) = listener.accept().await else {
            continue;
        };
        let core = core.clone();
        compio::runtime::spawn(async move {
            let _ = answer(&core, stream).await;
        })
        .detach();
    }
}

async fn answer(core: &Rc<Core>, mut stream: TcpStream) -> std::io::Result<()> {
    let mut head = Vec::new();
    while !head.windows(4).any(|w| w == b"\r\n\r\n") && head.len() < HTTP_REQUEST_BYTES_MAX {
        let buffer = Vec::with_capacity(1024);
        let compio::BufResult(read, buffer) = stream.read(buffer).await;
        if read? == 0 {
            return Ok(());
        }
        head.extend_from_slice(&buffer);
    }
    let response = if head.starts_with(b"GET /metrics ") || head.starts_with(b"GET /metrics?") {
        let body = render(core, gather(core).await);
        format!(
            "HTTP/1.1 200 OK\r\nContent-Type: text/plain; version=0.0.4\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
            body.len()
        )
    } else {
        "HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\nConnection: close\r\n\r\n".to_owned()
    };
    stream.write_all(response.into_bytes()).await.0?;
    Ok(())
}
