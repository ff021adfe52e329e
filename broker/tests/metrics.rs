//! The Prometheus endpoint after real traffic: promtool accepts the whole text (topics,
//! partition series, histograms); the byte counters grow by at least what was produced, in
//! total and per topic; latency histograms and error counts grow per API; waiting fetches
//! show in the purgatory gauge; consumer-group lag is the log end offset minus the committed
//! offset. Each reactor's busy ratio is its CPU time over the wall time between two scrapes;
//! error codes other than NONE are counted under their request; an endpoint switched off
//! listens nowhere.

mod support;

use std::collections::BTreeSet;
use std::io::Write;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use support::kafka::{self, Conn, Message};
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

#[test]
fn consumer_group_lag_is_log_end_offset_minus_committed_offset() {
    // Four offsets partitions over two reactors: the groups and the topic's partitions are
    // spread over both cores, so the scrape must gather lag across them.
    let broker = Broker::start(&[
        "num.partitions=2",
        "sluice.reactors=2",
        "offsets.topic.num.partitions=4",
    ]);
    let mut conn = Conn::connect(broker.address);
    for (partition, count) in [(0, 7), (1, 3)] {
        let messages: Vec<Message> = (0..count)
            .map(|i| Message::new(format!("k{i}"), format!("v{i}")))
            .collect();
        let request = kafka::produce_request("lagged", partition, Some(kafka::batch(&messages)), 1);
        assert_eq!(kafka::produce(&mut conn, &request).0, 0);
    }
    kafka::commit_standalone(&mut conn, "readers", &[("lagged", 0, 2), ("lagged", 1, 3)]);
    // A group id may hold any character; label values must stay valid Prometheus text.
    let odd = "odd \"group\"\\";
    kafka::commit_standalone(&mut conn, odd, &[("lagged", 0, 6)]);

    let text = broker.scrape();
    let lag = |group: &str, partition: i32| {
        let series = format!(
            "kafka_consumergroup_lag{{consumergroup=\"{group}\",topic=\"lagged\",partition=\"{partition}\"}}"
        );
        assert!(
            text.contains(&format!("{series} ")),
            "{series} missing:\n{text}"
        );
        value(&text, &series)
    };
    assert_eq!(lag("readers", 0), 5.0);
    assert_eq!(lag("readers", 1), 0.0);
    assert_eq!(lag("odd \\\"group\\\"\\\\", 0), 1.0);
    let sum = |group: &str| {
        value(
            &text,
            &format!("kafka_consumergroup_group_sum_lag{{consumergroup=\"{group}\"}}"),
        )
    };
    assert_eq!(sum("readers"), 5.0);
    assert_eq!(sum("odd \\\"group\\\"\\\\"), 1.0);
    promtool(&text);

    // Lag follows the log: two more records on partition 1 behind the committed offset.
    let messages = [Message::new("k", "v"), Message::new("k", "v")];
    let request = kafka::produce_request("lagged", 1, Some(kafka::batch(&messages)), 1);
    assert_eq!(kafka::produce(&mut conn, &request).0, 0);
    let text = broker.scrape();
    let series = "kafka_consumergroup_group_sum_lag{consumergroup=\"readers\"}";
    assert_eq!(value(&text, series), 7.0, "{text}");
}

#[test]
fn an_idle_scraper_is_disconnected_and_scrapes_go_on() {
    use std::io::Read;
    let broker = Broker::start(&[]);
    let address = broker.metrics.expect("metrics endpoint is on");
    let mut idle = std::net::TcpStream::connect(address).expect("connect to metrics");
    // The broker drops a client that sends no request after 10 s; the bound here only keeps a
    // broken broker from hanging the test.
    idle.set_read_timeout(Some(Duration::from_secs(60)))
        .unwrap();
    let started = Instant::now();
    let mut buffer = [0u8; 64];
    let read = idle.read(&mut buffer);
    assert!(
        matches!(read, Ok(0))
            || read
                .as_ref()
                .is_err_and(|e| e.kind() == std::io::ErrorKind::ConnectionReset),
        "the idle connection is closed, not answered nor left open: {read:?} after {:?}",
        started.elapsed()
    );
    assert!(broker.scrape().contains("sluice_"), "scrapes still work");
}

/// The local ports of the listening TCP sockets held by `broker`, read from /proc: the
/// sockets among its open files that the kernel lists as LISTEN.
fn listening_ports(broker: &Broker) -> BTreeSet<u16> {
    const LISTEN: &str = "0A";
    let process = broker.proc_dir();
    let sockets: BTreeSet<String> = std::fs::read_dir(process.join("fd"))
        .unwrap()
        .flatten()
        .filter_map(|fd| {
            let target = std::fs::read_link(fd.path()).ok()?;
            let target = target.to_str()?;
            Some(
                target
                    .strip_prefix("socket:[")?
                    .strip_suffix(']')?
                    .to_owned(),
            )
        })
        .collect();
    let mut ports = BTreeSet::new();
    for table in ["tcp", "tcp6"] {
        let text = std::fs::read_to_string(process.join("net").join(table)).unwrap_or_default();
        // Columns: sl, local address:port (hex), remote, state, queues, timer, retransmits,
        // uid, timeout, inode.
        for fields in text
            .lines()
            .skip(1)
            .map(|l| l.split_whitespace().collect::<Vec<_>>())
        {
            let (Some(local), Some(&state), Some(inode)) =
                (fields.get(1), fields.get(3), fields.get(9))
            else {
                continue;
            };
            if state != LISTEN || !sockets.contains(*inode) {
                continue;
            }
            let port = local
                .rsplit_once(':')
                .map(|(_, port)| port)
                .unwrap_or_default();
            ports.insert(u16::from_str_radix(port, 16).expect("hex port in /proc/net"));
        }
    }
    ports
}

#[test]
fn the_endpoint_switched_off_listens_nowhere() {
    // With the endpoint on, the broker listens on the Kafka port, its controller's port and
    // the metrics port; this shows the /proc reading finds a metrics listener when there is one.
    let on = Broker::start(&["sluice.reactors=2"]);
    let metrics = on.metrics.expect("metrics endpoint is on");
    let controller = on
        .controller
        .expect("a one-node cluster runs its controller");
    assert_eq!(
        listening_ports(&on),
        BTreeSet::from([on.address.port(), metrics.port(), controller.port()])
    );

    // An empty address switches it off; it comes after the support's own address, so it wins.
    let off = Broker::start(&["sluice.reactors=2", "sluice.metrics.address="]);
    assert_eq!(off.metrics, None, "banner: {:?}", off.banner);
    let said = off
        .banner
        .iter()
        .find_map(|line| line.trim().strip_prefix("metrics:"))
        .map(str::trim);
    assert_eq!(said, Some("off"), "banner: {:?}", off.banner);
    let controller = off
        .controller
        .expect("a one-node cluster runs its controller");
    assert_eq!(
        listening_ports(&off),
        BTreeSet::from([off.address.port(), controller.port()])
    );
    kafka::api_versions(off.address);
}

#[test]
fn reactor_busy_ratio_is_the_cpu_time_of_the_load_over_the_wall_time() {
    let broker = Broker::start(&["sluice.reactors=2", "num.partitions=2"]);
    let cpu_seconds = |text: &str, reactor: usize| {
        let series = format!("sluice_reactor_cpu_seconds_total{{reactor=\"{reactor}\"}}");
        assert!(
            text.contains(&format!("{series} ")),
            "{series} missing:\n{text}"
        );
        value(text, &series)
    };
    // The busy ratio covers the time since the previous scrape, so this scrape starts the
    // window; the instants around each scrape bound when the broker took its samples.
    let first_sent = Instant::now();
    let before = broker.scrape();
    let first_answered = Instant::now();
    produce(&broker, "load", 3_000);
    assert_eq!(consume(&broker, "load"), 3_000);
    let second_sent = Instant::now();
    let after = broker.scrape();
    let second_answered = Instant::now();
    let longest = second_answered.duration_since(first_sent).as_secs_f64();
    let shortest = second_sent.duration_since(first_answered).as_secs_f64();

    let mut busy_ratios = Vec::new();
    let mut cpu_spent = 0.0;
    for reactor in 0..2 {
        let spent = cpu_seconds(&after, reactor) - cpu_seconds(&before, reactor);
        assert!(
            spent >= 0.0,
            "reactor {reactor}: CPU seconds went back by {spent}"
        );
        let busy = value(
            &after,
            &format!("sluice_reactor_busy_ratio{{reactor=\"{reactor}\"}}"),
        );
        // busy = spent / the broker's window, and that window lies between the two spans the
        // test measured, so the ratio lies between spent over each.
        let (low, high) = (spent / longest, spent / shortest);
        let slack = 1e-9;
        assert!(
            low - slack <= busy && busy <= high + slack,
            "reactor {reactor}: busy ratio {busy} outside [{low}, {high}] for {spent} CPU seconds"
        );
        busy_ratios.push(busy);
        cpu_spent += spent;
    }
    assert!(cpu_spent > 0.0, "the reactors spent no CPU on 3000 records");
    assert!(
        busy_ratios.iter().any(|&busy| busy > 0.0),
        "no reactor was busy under load: {busy_ratios:?}"
    );
    // Kafka's idle percentages are the mean idle ratio of the reactors.
    let idle = 1.0 - busy_ratios.iter().sum::<f64>() / busy_ratios.len() as f64;
    for name in [
        "kafka_network_socketserver_networkprocessoravgidlepercent",
        "kafka_server_kafkarequesthandlerpool_requesthandleravgidlepercent",
    ] {
        let served = value(&after, name);
        assert!(
            (served - idle).abs() < 1e-9,
            "{name} {served}, expected {idle}"
        );
    }
}

#[test]
fn errors_other_than_none_are_counted_under_their_request() {
    const UNKNOWN_TOPIC_OR_PARTITION: i16 = 3;
    const INVALID_REQUEST: i16 = 42;
    const INVALID_REQUIRED_ACKS: i16 = 21;
    let broker = Broker::start(&[]);
    let mut conn = Conn::connect(broker.address);
    let batch = kafka::batch(&[Message::new("k", "v")]);
    let request = kafka::produce_request("single", 0, Some(batch.clone()), 1);
    assert_eq!(kafka::produce(&mut conn, &request), (0, 0));

    let errors = |request: &str, error: &str| {
        format!(
            "kafka_network_requestmetrics_errors_total{{request=\"{request}\",error=\"{error}\"}}"
        )
    };
    let unknown = errors("Produce", "UNKNOWN_TOPIC_OR_PARTITION");
    let produced = errors("Produce", "NONE");
    let refused = errors("DescribeConfigs", "INVALID_REQUEST");
    let bad_acks = errors("Produce", "INVALID_REQUIRED_ACKS");
    let before = broker.scrape();
    assert_eq!(value(&before, &unknown), 0.0, "{before}");

    // The topic has one partition; partitions 5 and 7 do not exist.
    for partition in [5, 7] {
        let request = kafka::produce_request("single", partition, Some(batch.clone()), 1);
        assert_eq!(
            kafka::produce(&mut conn, &request).0,
            UNKNOWN_TOPIC_OR_PARTITION
        );
    }
    let request = kafka::produce_request("single", 0, Some(batch.clone()), 1);
    assert_eq!(kafka::produce(&mut conn, &request), (0, 1));
    // acks=2 is refused before any partition is looked at, and counted all the same.
    let request = kafka::produce_request("single", 0, Some(batch.clone()), 2);
    assert_eq!(kafka::produce(&mut conn, &request).0, INVALID_REQUIRED_ACKS);
    // Another broker's id is refused per resource, outside the produce path.
    {
        use kafka_protocol::messages::describe_configs_request::DescribeConfigsResource;
        use kafka_protocol::messages::DescribeConfigsRequest;
        use kafka_protocol::protocol::StrBytes;
        let mut resource = DescribeConfigsResource::default();
        resource.resource_type = 4;
        resource.resource_name = StrBytes::from_static_str("5");
        let mut request = DescribeConfigsRequest::default();
        request.resources = vec![resource];
        let response = conn.call(4, &request);
        assert_eq!(response.results[0].error_code, INVALID_REQUEST);
    }

    let after = broker.scrape();
    assert_eq!(value(&after, &unknown), 2.0, "{after}");
    assert_eq!(value(&after, &produced) - value(&before, &produced), 1.0);
    assert_eq!(value(&after, &refused) - value(&before, &refused), 1.0);
    assert_eq!(value(&after, &bad_acks), 1.0, "{after}");
    promtool(&after);
}
