//! The Prometheus endpoint after real traffic: promtool accepts the whole text (topics,
//! partition series, histograms); the byte counters grow by at least what was produced, in
//! total and per topic; latency histograms and error counts grow per API; waiting fetches
//! show in the purgatory gauge.

mod support;

use std::io::Write;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use support::{run, Broker};

/// A sample's value, or 0 when the series is not there (yet).
fn value(text: &str, series: &str) -> f64 {
    text.lines()
        .find_map(|line| {
            line.strip_prefix(series)?
                .strip_prefix(' ')?
                .trim()
                .parse()
                .ok()
        })
        .unwrap_or(0.0)
}

fn promtool(text: &str) {
    let mut promtool = Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("promtool is installed (scripts/test.sh installs it)");
    promtool
        .stdin
        .take()
        .unwrap()
        .write_all(text.as_bytes())
        .unwrap();
    let output = promtool.wait_with_output().unwrap();
    assert!(
        output.status.success(),
        "promtool rejects the metrics:\n{}{}\n{text}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
}

/// Produces `messages` values to `topic` with kcat; returns the value bytes sent.
fn produce(broker: &Broker, topic: &str, messages: usize) -> u64 {
    let mut input = Vec::new();
    let mut bytes = 0;
    for i in 0..messages {
        let value = format!("{i:06}:{}", "m".repeat(100 + i % 50));
        bytes += value.len() as u64;
        writeln!(input, "{value}").unwrap();
    }
    let mut kcat = Command::new("kcat")
        .args(["-b", &broker.bootstrap(), "-P", "-t", topic])
        .stdin(Stdio::piped())
        .spawn()
        .expect("kcat is installed");
    kcat.stdin.take().unwrap().write_all(&input).unwrap();
    assert!(kcat.wait().unwrap().success(), "kcat -P failed");
    bytes
}

fn consume(broker: &Broker, topic: &str) -> usize {
    let out = run(Command::new("kcat").args([
        "-b",
        &broker.bootstrap(),
        "-C",
        "-t",
        topic,
        "-o",
        "beginning",
        "-e",
        "-q",
    ]));
    out.iter().filter(|&&b| b == b'\n').count()
}

#[test]
fn metrics_after_traffic_count_what_was_sent_and_pass_promtool() {
    let broker = Broker::start(&[
        "num.partitions=3",
        "sluice.reactors=2",
        "sluice.metrics.partition.series=true",
    ]);
    let before = broker.scrape();
    let metered = produce(&broker, "metered", 2_000) + produce(&broker, "metered", 1_000);
    let other = produce(&broker, "other", 100);
    assert_eq!(consume(&broker, "metered"), 3_000);
    let after = broker.scrape();
    promtool(&after);

    let bytes_in = "kafka_server_brokertopicmetrics_bytesin_total";
    let grown = value(&after, bytes_in) - value(&before, bytes_in);
    assert!(
        grown >= (metered + other) as f64,
        "bytes in grew by {grown}, less than the {} value bytes produced",
        metered + other
    );
    let of_topic = |name: &str, topic: &str| value(&after, &format!("{name}{{topic=\"{topic}\"}}"));
    assert!(of_topic(bytes_in, "metered") >= metered as f64);
    assert!(of_topic(bytes_in, "other") >= other as f64);
    assert_eq!(
        of_topic(
            "kafka_server_brokertopicmetrics_messagesin_total",
            "metered"
        ),
        3_000.0
    );
    assert!(
        of_topic("kafka_server_brokertopicmetrics_bytesout_total", "metered")
            >= of_topic(bytes_in, "metered"),
        "the consumer read every byte of the topic"
    );

    for api in ["Produce", "Fetch", "Metadata", "ApiVersions"] {
        let labels = format!("{{request=\"{api}\"}}");
        let requests = value(
            &after,
            &format!("kafka_network_requestmetrics_requests_total{labels}"),
        );
        assert!(requests > 0.0, "{api} requests counted");
        for part in ["total", "requestqueue", "local", "remote", "responsesend"] {
            let count = format!("kafka_network_requestmetrics_{part}time_seconds_count{labels}");
            assert_eq!(value(&after, &count), requests, "{count}");
            let infinity = format!(
                "kafka_network_requestmetrics_{part}time_seconds_bucket{{request=\"{api}\",le=\"+Inf\"}}"
            );
            assert_eq!(value(&after, &infinity), requests, "{infinity}");
        }
    }
    let produced_ok =
        "kafka_network_requestmetrics_errors_total{request=\"Produce\",error=\"NONE\"}";
    assert!(
        value(&after, produced_ok) > 0.0,
        "partition results of produces counted"
    );

    // Three partitions of `metered` hold the 3000 records between them.
    let end_offsets: f64 = (0..3)
        .map(|p| {
            value(
                &after,
                &format!("kafka_log_log_logendoffset{{topic=\"metered\",partition=\"{p}\"}}"),
            )
        })
        .sum();
    assert_eq!(end_offsets, 3_000.0);
    let size = "kafka_log_log_size{topic=\"metered\",partition=\"0\"}";
    assert!(value(&after, size) > 0.0, "{size}");
    let segments = "kafka_log_log_numlogsegments{topic=\"metered\",partition=\"0\"}";
    assert_eq!(value(&after, segments), 1.0);

    for reactor in 0..2 {
        let busy = value(
            &after,
            &format!("sluice_reactor_busy_ratio{{reactor=\"{reactor}\"}}"),
        );
        assert!((0.0..=1.0).contains(&busy), "busy ratio {busy}");
        let cpu = format!("sluice_reactor_cpu_seconds_total{{reactor=\"{reactor}\"}}");
        assert!(value(&after, &cpu) > 0.0, "{cpu}");
    }
    assert!(after.contains("sluice_cross_core_queue_depth{from=\"0\",to=\"1\"}"));
    assert!(after.contains("sluice_cross_core_queue_depth{from=\"1\",to=\"0\"}"));
    for fixed in [
        (
            "kafka_controller_kafkacontroller_activecontrollercount",
            1.0,
        ),
        (
            "kafka_controller_kafkacontroller_offlinepartitionscount",
            0.0,
        ),
        ("kafka_server_replicamanager_underreplicatedpartitions", 0.0),
        ("kafka_server_replicamanager_isrshrinks_total", 0.0),
        ("kafka_server_replicamanager_isrexpands_total", 0.0),
    ] {
        assert!(
            after.contains(&format!("{} ", fixed.0)),
            "{} is served",
            fixed.0
        );
        assert_eq!(value(&after, fixed.0), fixed.1, "{}", fixed.0);
    }
}

#[test]
fn partition_series_are_off_by_default() {
    let broker = Broker::start(&[]);
    produce(&broker, "quiet", 10);
    let text = broker.scrape();
    assert!(!text.contains("kafka_log_log_size"), "{text}");
    assert!(text.contains("kafka_server_brokertopicmetrics_bytesin_total{topic=\"quiet\"}"));
    promtool(&text);
}

struct Killed(Child);

impl Drop for Killed {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[test]
fn a_long_poll_fetch_shows_in_the_fetch_purgatory() {
    let broker = Broker::start(&[]);
    produce(&broker, "idle", 1);
    // A consumer at the end of an idle partition parks its fetches in a long poll.
    let consumer = Command::new("kcat")
        .args([
            "-b",
            &broker.bootstrap(),
            "-C",
            "-t",
            "idle",
            "-o",
            "end",
            "-q",
        ])
        .args(["-X", "fetch.wait.max.ms=5000"])
        .stdout(Stdio::null())
        .spawn()
        .expect("kcat");
    let _consumer = Killed(consumer);
    let waiting =
        "kafka_server_delayedoperationpurgatory_purgatorysize{delayedoperation=\"Fetch\"}";
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let text = broker.scrape();
        if value(&text, waiting) >= 1.0 {
            break;
        }
        assert!(Instant::now() < deadline, "no parked fetch seen:\n{text}");
        std::thread::sleep(Duration::from_millis(100));
    }
}
