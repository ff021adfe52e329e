//! Dynamic broker configs: changed with IncrementalAlterConfigs and AlterConfigs on the broker
//! resources while the broker runs, in force at once, and still in force after a restart.
//! The confluent-kafka AdminClient drives the broker resource by id; the cluster default ""
//! (which librdkafka cannot address) goes over the wire client.
//!
//! Each config that changes live is checked by what it does (a roll, a refused batch, deleted
//! segments), not only by how DescribeConfigs shows it. `log.flush.interval.*` is the
//! exception: an fsync leaves nothing a client can see, and the recovery-point checkpoint that
//! would record it is rewritten at most once a minute, so only its description is checked.

mod support;

use std::io::Write;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use bytes::Bytes;
use kafka_protocol::messages::alter_configs_request::{
    AlterConfigsResource, AlterableConfig as ReplacedConfig,
};
use kafka_protocol::messages::describe_configs_request::DescribeConfigsResource;
use kafka_protocol::messages::describe_configs_response::DescribeConfigsResourceResult;
use kafka_protocol::messages::incremental_alter_configs_request::{
    AlterConfigsResource as IncrementalResource, AlterableConfig,
};
use kafka_protocol::messages::{
    AlterConfigsRequest, DescribeConfigsRequest, IncrementalAlterConfigsRequest,
};
use kafka_protocol::protocol::StrBytes;
use support::kafka::{self, Conn, Message};
use support::{client_script, python, run, Broker};

const RESOURCE_TOPIC: i8 = 2;
const RESOURCE_BROKER: i8 = 4;
const SOURCE_TOPIC: i8 = 1;
const SOURCE_DYNAMIC_BROKER: i8 = 2;
const SOURCE_DYNAMIC_DEFAULT: i8 = 3;
const SOURCE_STATIC: i8 = 4;
const SOURCE_DEFAULT: i8 = 5;
const INVALID_REQUEST: i16 = 42;

/// Small segments and a fast retention check, so retention is quick to observe.
const FAST_RETENTION: &[&str] = &[
    "log.segment.bytes=2048",
    "log.retention.check.interval.ms=100",
];

fn produce(broker: &Broker, topic: &str, messages: usize) {
    let mut input = Vec::new();
    for i in 0..messages {
        writeln!(input, "message {i:05} {}", "x".repeat(80)).unwrap();
    }
    // Small batches, so the log rolls into many segments.
    let mut kcat = Command::new("kcat")
        .args(["-b", &broker.bootstrap(), "-P", "-t", topic])
        .args(["-X", "batch.num.messages=5", "-X", "linger.ms=0"])
        .stdin(Stdio::piped())
        .spawn()
        .expect("kcat is installed (scripts/test.sh installs it)");
    kcat.stdin.take().unwrap().write_all(&input).unwrap();
    assert!(kcat.wait().unwrap().success(), "kcat -P failed");
}

/// Base offsets of the segment files in a partition directory, sorted.
fn segments(dir: &Path) -> Vec<u64> {
    let mut bases: Vec<u64> = std::fs::read_dir(dir)
        .map(|entries| {
            entries
                .flatten()
                .filter_map(|e| {
                    let name = e.file_name().into_string().ok()?;
                    name.strip_suffix(".log")?.parse().ok()
                })
                .collect()
        })
        .unwrap_or_default();
    bases.sort_unstable();
    bases
}

fn wait_for(what: &str, limit: Duration, mut done: impl FnMut() -> bool) {
    let deadline = Instant::now() + limit;
    while !done() {
        assert!(Instant::now() < deadline, "{what} within {limit:?}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn script(broker: &Broker, step: &str) {
    let output = run(python()
        .arg(client_script("confluent_dynamic.py"))
        .arg(broker.bootstrap())
        .arg(step));
    println!("{}", String::from_utf8_lossy(&output).trim());
}

#[test]
fn admin_client_lowers_retention_live_and_the_change_survives_a_restart() {
    let mut broker = Broker::start(FAST_RETENTION);
    produce(&broker, "aging", 300);
    let dir = broker.data.join("aging-0");
    let before = segments(&dir);
    assert!(
        before.len() > 3,
        "the log rolled into several segments and default retention kept them: {before:?}"
    );

    script(&broker, "lower-retention");
    wait_for(
        "sealed segments deleted by the lowered retention",
        Duration::from_secs(30),
        || segments(&dir).len() == 1,
    );
    let kept = segments(&dir);
    assert_eq!(
        kept,
        [*before.last().unwrap()],
        "only the active segment stays"
    );

    let dir_guard = broker.take_dir();
    let data = broker.data.clone();
    assert!(broker.stop().success());
    let broker = Broker::start_in(&data, FAST_RETENTION);
    script(&broker, "after-restart");
    produce(&broker, "aging", 300);
    // Retention is still 1 ms: the new sealed segments go too, without any further alter.
    wait_for(
        "new sealed segments deleted after the restart",
        Duration::from_secs(30),
        || {
            let now = segments(&dir);
            now.len() == 1 && now[0] > kept[0]
        },
    );
    drop(broker);
    drop(dir_guard);
}

fn describe(
    conn: &mut Conn,
    resource_type: i8,
    name: &str,
) -> (i16, Vec<DescribeConfigsResourceResult>) {
    let mut resource = DescribeConfigsResource::default();
    resource.resource_type = resource_type;
    resource.resource_name = StrBytes::from_string(name.to_owned());
    let mut request = DescribeConfigsRequest::default();
    request.resources = vec![resource];
    request.include_synonyms = true;
    let mut response = conn.call(4, &request);
    let result = response.results.remove(0);
    (result.error_code, result.configs)
}

/// (value, source, read-only, synonym sources) of one config.
fn described(
    configs: &[DescribeConfigsResourceResult],
    key: &str,
) -> (Option<String>, i8, bool, Vec<i8>) {
    let entry = configs
        .iter()
        .find(|c| c.name.as_str() == key)
        .unwrap_or_else(|| panic!("{key} is described"));
    let synonyms = entry.synonyms.iter().map(|s| s.source).collect();
    (
        entry.value.as_ref().map(|v| v.to_string()),
        entry.config_source,
        entry.read_only,
        synonyms,
    )
}

fn incremental(conn: &mut Conn, name: &str, pairs: &[(&str, &str)], validate_only: bool) -> i16 {
    let operations: Vec<(&str, Option<&str>)> = pairs
        .iter()
        .map(|&(key, value)| (key, Some(value)))
        .collect();
    incremental_on(conn, RESOURCE_BROKER, name, &operations, validate_only)
}

/// IncrementalAlterConfigs on one resource of any type: `Some(value)` sets a key (SET) and
/// `None` removes it (DELETE), so the layer below shows through again.
fn incremental_on(
    conn: &mut Conn,
    resource_type: i8,
    name: &str,
    operations: &[(&str, Option<&str>)],
    validate_only: bool,
) -> i16 {
    const OP_SET: i8 = 0;
    const OP_DELETE: i8 = 1;
    let mut resource = IncrementalResource::default();
    resource.resource_type = resource_type;
    resource.resource_name = StrBytes::from_string(name.to_owned());
    for (key, value) in operations {
        let mut config = AlterableConfig::default();
        config.name = StrBytes::from_string(key.to_string());
        config.config_operation = if value.is_some() { OP_SET } else { OP_DELETE };
        config.value = value.map(|v| StrBytes::from_string(v.to_owned()));
        resource.configs.push(config);
    }
    let mut request = IncrementalAlterConfigsRequest::default();
    request.resources = vec![resource];
    request.validate_only = validate_only;
    conn.call(1, &request).responses[0].error_code
}

/// AlterConfigs (not incremental) on a broker resource: its dynamic layer becomes exactly
/// `pairs`, and every key left out goes back to the layer below.
fn replace(conn: &mut Conn, name: &str, pairs: &[(&str, &str)]) -> i16 {
    let mut resource = AlterConfigsResource::default();
    resource.resource_type = RESOURCE_BROKER;
    resource.resource_name = StrBytes::from_string(name.to_owned());
    for (key, value) in pairs {
        let mut config = ReplacedConfig::default();
        config.name = StrBytes::from_string(key.to_string());
        config.value = Some(StrBytes::from_string(value.to_string()));
        resource.configs.push(config);
    }
    let mut request = AlterConfigsRequest::default();
    request.resources = vec![resource];
    conn.call(1, &request).responses[0].error_code
}

#[test]
fn cluster_default_per_broker_and_read_only_configs() {
    let broker = Broker::start(&["log.retention.bytes=4194304"]);
    let mut conn = Conn::connect(broker.address);

    let (_, configs) = describe(&mut conn, RESOURCE_BROKER, "0");
    let static_value = (Some("4194304".to_owned()), SOURCE_STATIC, false);
    let (value, source, read_only, synonyms) = described(&configs, "log.retention.bytes");
    assert_eq!((value, source, read_only), static_value);
    assert_eq!(synonyms, [SOURCE_STATIC, SOURCE_DEFAULT]);
    assert!(described(&configs, "listeners").2, "listeners is read-only");

    // The cluster default wins over the static file.
    let cluster_default = [("log.retention.bytes", "2097152")];
    assert_eq!(incremental(&mut conn, "", &cluster_default, true), 0);
    let (_, configs) = describe(&mut conn, RESOURCE_BROKER, "");
    assert!(configs.is_empty(), "validate_only changes nothing");
    assert_eq!(incremental(&mut conn, "", &cluster_default, false), 0);
    let (error, configs) = describe(&mut conn, RESOURCE_BROKER, "");
    assert_eq!(error, 0);
    let (value, source, _, _) = described(&configs, "log.retention.bytes");
    assert_eq!(
        (value.as_deref(), source),
        (Some("2097152"), SOURCE_DYNAMIC_DEFAULT)
    );
    let (_, configs) = describe(&mut conn, RESOURCE_BROKER, "0");
    let (value, source, _, synonyms) = described(&configs, "log.retention.bytes");
    assert_eq!(
        (value.as_deref(), source),
        (Some("2097152"), SOURCE_DYNAMIC_DEFAULT)
    );
    assert_eq!(
        synonyms,
        [SOURCE_DYNAMIC_DEFAULT, SOURCE_STATIC, SOURCE_DEFAULT]
    );

    // This broker's own value wins over the cluster default.
    let per_broker = [("log.retention.bytes", "1048576")];
    assert_eq!(incremental(&mut conn, "0", &per_broker, false), 0);
    let (_, configs) = describe(&mut conn, RESOURCE_BROKER, "0");
    let (value, source, _, synonyms) = described(&configs, "log.retention.bytes");
    assert_eq!(
        (value.as_deref(), source),
        (Some("1048576"), SOURCE_DYNAMIC_BROKER)
    );
    assert_eq!(
        synonyms,
        [
            SOURCE_DYNAMIC_BROKER,
            SOURCE_DYNAMIC_DEFAULT,
            SOURCE_STATIC,
            SOURCE_DEFAULT
        ]
    );

    // A topic inherits the value in force and names the broker layers as its synonyms.
    produce(&broker, "inherits", 1);
    let (error, configs) = describe(&mut conn, RESOURCE_TOPIC, "inherits");
    assert_eq!(error, 0);
    let (value, source, _, synonyms) = described(&configs, "retention.bytes");
    assert_eq!(
        (value.as_deref(), source),
        (Some("1048576"), SOURCE_DYNAMIC_BROKER)
    );
    assert_eq!(synonyms[0], SOURCE_DYNAMIC_BROKER);
    assert!(!synonyms.contains(&SOURCE_TOPIC));

    // Read-only configs, bad values and other brokers are refused as Kafka refuses them.
    for (name, pairs) in [
        ("0", [("listeners", "PLAINTEXT://127.0.0.1:1")]),
        ("", [("sluice.reactors", "3")]),
        ("0", [("log.retention.bytes", "lots")]),
        ("5", [("log.retention.bytes", "1")]),
    ] {
        assert_eq!(
            incremental(&mut conn, name, &pairs, false),
            INVALID_REQUEST,
            "{name:?} {pairs:?}"
        );
    }
    let (error, _) = describe(&mut conn, RESOURCE_BROKER, "5");
    assert_eq!(error, INVALID_REQUEST, "describing another broker");

    // AlterConfigs replaces this broker's whole dynamic layer: the cluster default shows again.
    let mut config = ReplacedConfig::default();
    config.name = StrBytes::from_static_str("max.connections");
    config.value = Some(StrBytes::from_static_str("1000"));
    let mut resource = AlterConfigsResource::default();
    resource.resource_type = RESOURCE_BROKER;
    resource.resource_name = StrBytes::from_static_str("0");
    resource.configs = vec![config];
    let mut request = AlterConfigsRequest::default();
    request.resources = vec![resource];
    assert_eq!(conn.call(1, &request).responses[0].error_code, 0);
    let (_, configs) = describe(&mut conn, RESOURCE_BROKER, "0");
    let (value, source, _, _) = described(&configs, "log.retention.bytes");
    assert_eq!(
        (value.as_deref(), source),
        (Some("2097152"), SOURCE_DYNAMIC_DEFAULT)
    );
    let (value, source, _, _) = described(&configs, "max.connections");
    assert_eq!(
        (value.as_deref(), source),
        (Some("1000"), SOURCE_DYNAMIC_BROKER)
    );
}

#[test]
fn retention_and_roll_synonyms_are_dynamic() {
    let broker = Broker::start(&["log.retention.hours=2"]);
    let mut conn = Conn::connect(broker.address);
    let minutes = [("log.retention.minutes", "5")];
    assert_eq!(incremental(&mut conn, "0", &minutes, false), 0);
    let (_, configs) = describe(&mut conn, RESOURCE_BROKER, "0");
    let (value, source, read_only, sources) = described(&configs, "log.retention.ms");
    assert_eq!(
        (value.as_deref(), source, read_only),
        (Some("300000"), SOURCE_DYNAMIC_BROKER, false)
    );
    assert_eq!(
        sources,
        [SOURCE_DYNAMIC_BROKER, SOURCE_STATIC, SOURCE_DEFAULT]
    );
    let entry = configs
        .iter()
        .find(|c| c.name.as_str() == "log.retention.ms")
        .unwrap();
    let first = &entry.synonyms[0];
    assert_eq!(
        (first.name.as_str(), first.value.as_deref()),
        ("log.retention.minutes", Some("5")),
        "the synonym is named as it was set"
    );

    // Within one layer the key itself wins over its synonyms, as in Kafka.
    let both = [("log.retention.ms", "60000"), ("log.retention.hours", "3")];
    assert_eq!(incremental(&mut conn, "", &both, false), 0);
    let cluster_ms = [("log.retention.ms", "60000")];
    assert_eq!(incremental(&mut conn, "0", &cluster_ms, false), 0);
    let (_, configs) = describe(&mut conn, RESOURCE_BROKER, "0");
    let (value, _, _, sources) = described(&configs, "log.retention.ms");
    assert_eq!(value.as_deref(), Some("60000"));
    assert_eq!(
        sources,
        [
            SOURCE_DYNAMIC_BROKER,
            SOURCE_DYNAMIC_BROKER,
            SOURCE_DYNAMIC_DEFAULT,
            SOURCE_DYNAMIC_DEFAULT,
            SOURCE_STATIC,
            SOURCE_DEFAULT
        ]
    );

    assert_eq!(
        incremental(&mut conn, "0", &[("log.roll.hours", "1")], false),
        0
    );
    let (_, configs) = describe(&mut conn, RESOURCE_BROKER, "0");
    let (value, source, _, _) = described(&configs, "log.roll.ms");
    assert_eq!(
        (value.as_deref(), source),
        (Some("3600000"), SOURCE_DYNAMIC_BROKER)
    );
    let read_only_synonym = [("broker.id", "3")];
    assert_eq!(
        incremental(&mut conn, "0", &read_only_synonym, false),
        INVALID_REQUEST
    );
}

#[test]
fn max_connections_applies_to_the_next_accept() {
    let broker = Broker::start(&[]);
    let mut first = Conn::connect(broker.address);
    assert_eq!(
        incremental(&mut first, "0", &[("max.connections", "1")], false),
        0
    );
    // The first connection stays; a second one is over the limit and closed at accept.
    let mut second = Conn::connect(broker.address);
    second.expect_closed("connecting beyond max.connections");
    let (error, _) = describe(&mut first, RESOURCE_BROKER, "0");
    assert_eq!(error, 0, "the connection within the limit still works");
    assert_eq!(
        incremental(&mut first, "0", &[("max.connections", "10")], false),
        0
    );
    let mut third = Conn::connect(broker.address);
    let (error, _) = describe(&mut third, RESOURCE_BROKER, "0");
    assert_eq!(error, 0, "raising the limit lets connections in again");
}

/// The CPUs each of the `REACTORS` reactor threads of `broker` may run on, as the kernel
/// reports them, in the order the threads started (reactor 0 first). Threads of the runtime's
/// blocking pool take their creator's name, so the reactors are the first threads so named.
fn reactor_cpus(broker: &Broker) -> Vec<String> {
    let pid = broker.proc_dir();
    let mut cpus: Vec<(u32, String)> = std::fs::read_dir(pid.join("task"))
        .unwrap()
        .flatten()
        .filter_map(|task| {
            // The kernel keeps 15 bytes of a thread's name, so the reactor number is cut off.
            let name = std::fs::read_to_string(task.path().join("comm")).ok()?;
            name.starts_with("sluice-reactor").then_some(())?;
            let tid = task.file_name().to_str()?.parse().ok()?;
            let status = std::fs::read_to_string(task.path().join("status")).ok()?;
            let allowed = status
                .lines()
                .find_map(|l| l.strip_prefix("Cpus_allowed_list:"))?
                .trim()
                .to_owned();
            Some((tid, allowed))
        })
        .collect();
    cpus.sort();
    cpus.into_iter()
        .take(REACTORS)
        .map(|(_, allowed)| allowed)
        .collect()
}

/// Reactors of the brokers the pinning test starts.
const REACTORS: usize = 2;

/// The CPUs this process may run on (a cpuset or `taskset` may leave out any of them); the
/// broker it starts inherits them.
fn allowed_cpus() -> Vec<usize> {
    use rustix::thread::{sched_getaffinity, CpuSet};
    let allowed = sched_getaffinity(Some(rustix::process::getpid())).expect("read CPU affinity");
    (0..CpuSet::MAX_CPU)
        .filter(|&cpu| allowed.is_set(cpu))
        .collect()
}

#[test]
fn reactor_pinning_changes_live() {
    // Reactor N pins to the N-th CPU the process may run on; two reactors need two CPUs to
    // tell pinned from unpinned apart.
    let allowed = allowed_cpus();
    if allowed.len() < 2 {
        println!("skipped: the process may run on {allowed:?} only; pinning needs two CPUs");
        return;
    }
    let broker = Broker::start(&["sluice.reactors=2"]);
    let mut conn = Conn::connect(broker.address);
    let unpinned = reactor_cpus(&broker);
    assert_eq!(unpinned.len(), 2, "{unpinned:?}");
    assert_eq!(
        incremental(&mut conn, "0", &[("sluice.pin.cores", "true")], false),
        0
    );
    let pinned: Vec<String> = allowed[..2].iter().map(|cpu| cpu.to_string()).collect();
    assert_eq!(reactor_cpus(&broker), pinned);
    assert_eq!(
        incremental(&mut conn, "0", &[("sluice.pin.cores", "false")], false),
        0
    );
    assert_eq!(reactor_cpus(&broker), unpinned);

    // Pinned from the start, each reactor takes the same CPU a live change gives it.
    let broker = Broker::start(&["sluice.reactors=2", "sluice.pin.cores=true"]);
    assert_eq!(reactor_cpus(&broker), pinned);
}

const MESSAGE_TOO_LARGE: i16 = 10;
const OFFSET_OUT_OF_RANGE: i16 = 1;

/// One uncompressed batch of one record with a `value_len`-byte value. Every call with the
/// same length gives a batch of the same size, so segment sizes can be counted in batches.
fn one_record(value_len: usize) -> Bytes {
    kafka::batch(&[Message::new("k", "v".repeat(value_len))])
}

/// Produces `batch` to partition 0 of `topic` with acks=1: (error code, base offset).
fn produce_batch(conn: &mut Conn, topic: &str, batch: &Bytes) -> (i16, i64) {
    let request = kafka::produce_request(topic, 0, Some(batch.clone()), 1);
    kafka::produce(conn, &request)
}

/// Sizes in bytes of the segment files in a partition directory, oldest first.
fn segment_sizes(dir: &Path) -> Vec<u64> {
    segments(dir)
        .into_iter()
        .map(|base| {
            let file = dir.join(format!("{base:020}.log"));
            std::fs::metadata(&file)
                .unwrap_or_else(|e| panic!("{}: {e}", file.display()))
                .len()
        })
        .collect()
}

#[test]
fn lowering_segment_bytes_rolls_at_the_new_size_without_a_restart() {
    let broker = Broker::start(&[]);
    let mut conn = Conn::connect(broker.address);
    let series = "kafka_log_log_numlogsegments{topic=\"rolling\",partition=\"0\"}";
    // The per-partition series are a dynamic knob too: off at start, on without a restart.
    assert!(!broker.scrape().contains("kafka_log_log_numlogsegments"));
    let partition_series = [("sluice.metrics.partition.series", "true")];
    assert_eq!(incremental(&mut conn, "0", &partition_series, false), 0);

    let batch = one_record(200);
    for expected in 0..4 {
        assert_eq!(produce_batch(&mut conn, "rolling", &batch), (0, expected));
    }
    let dir = broker.data.join("rolling-0");
    assert_eq!(
        segments(&dir),
        [0],
        "the default segment size holds four batches"
    );
    assert_eq!(Broker::metric(&broker.scrape(), series), 1);

    // Room for three batches and a half: the active segment already holds four, so the next
    // append rolls, and from then on every segment takes exactly three.
    let segment_bytes = (3 * batch.len() + batch.len() / 2).to_string();
    let lowered = [("log.segment.bytes", segment_bytes.as_str())];
    assert_eq!(incremental(&mut conn, "0", &lowered, false), 0);
    for expected in 4..11 {
        assert_eq!(produce_batch(&mut conn, "rolling", &batch), (0, expected));
    }
    assert_eq!(segments(&dir), [0, 4, 7, 10]);
    let batch_len = batch.len() as u64;
    assert_eq!(
        segment_sizes(&dir),
        [4 * batch_len, 3 * batch_len, 3 * batch_len, batch_len]
    );
    assert_eq!(Broker::metric(&broker.scrape(), series), 4);
    assert_eq!(kafka::fetch_all(broker.address, "rolling", 0, 0).len(), 11);
}

#[test]
fn lowering_message_max_bytes_refuses_a_larger_batch_at_once() {
    let broker = Broker::start(&[]);
    let mut conn = Conn::connect(broker.address);
    let batch = one_record(500);
    let exact = batch.len().to_string();
    let one_less = (batch.len() - 1).to_string();
    assert_eq!(produce_batch(&mut conn, "capped", &batch), (0, 0));
    // A topic's own max.message.bytes wins over the broker's message.max.bytes, as in Kafka.
    assert_eq!(produce_batch(&mut conn, "roomy", &batch), (0, 0));
    let own_limit = [("max.message.bytes", Some(exact.as_str()))];
    assert_eq!(
        incremental_on(&mut conn, RESOURCE_TOPIC, "roomy", &own_limit, false),
        0
    );

    // The limit is inclusive: a batch of exactly message.max.bytes is taken.
    let at_limit = [("message.max.bytes", exact.as_str())];
    assert_eq!(incremental(&mut conn, "0", &at_limit, false), 0);
    assert_eq!(produce_batch(&mut conn, "capped", &batch), (0, 1));

    let too_large_counted = "kafka_network_requestmetrics_errors_total{request=\"Produce\",error=\"MESSAGE_TOO_LARGE\"}";
    let before = broker.scrape();
    assert!(!before.contains(too_large_counted), "{before}");
    let below = [("message.max.bytes", one_less.as_str())];
    assert_eq!(incremental(&mut conn, "0", &below, false), 0);
    assert_eq!(
        produce_batch(&mut conn, "capped", &batch).0,
        MESSAGE_TOO_LARGE
    );
    assert_eq!(produce_batch(&mut conn, "roomy", &batch), (0, 1));
    assert_eq!(Broker::metric(&broker.scrape(), too_large_counted), 1);
    assert_eq!(
        kafka::fetch_all(broker.address, "capped", 0, 0).len(),
        2,
        "the refused batch left nothing in the log"
    );

    // Removing the broker's value brings back the default limit, again without a restart.
    let removed = [("message.max.bytes", None)];
    assert_eq!(
        incremental_on(&mut conn, RESOURCE_BROKER, "0", &removed, false),
        0
    );
    assert_eq!(produce_batch(&mut conn, "capped", &batch), (0, 2));
}

#[test]
fn lowering_retention_bytes_deletes_old_segments_down_to_the_bound() {
    let batch = one_record(200);
    let batch_len = batch.len() as u64;
    // Three batches per segment.
    let segment_bytes = format!("log.segment.bytes={}", 3 * batch_len + batch_len / 2);
    let broker = Broker::start(&[&segment_bytes, "log.retention.check.interval.ms=100"]);
    let mut conn = Conn::connect(broker.address);
    for expected in 0..20 {
        assert_eq!(produce_batch(&mut conn, "bounded", &batch), (0, expected));
    }
    let dir = broker.data.join("bounded-0");
    assert_eq!(
        segments(&dir),
        [0, 3, 6, 9, 12, 15, 18],
        "retention.bytes is unbounded by default"
    );

    // 20 batches are on disk and 8.5 may stay: deleting the oldest three segments (9 batches)
    // leaves 11, and deleting a fourth would leave 8, below the bound, so Kafka keeps it.
    let bound = (8 * batch_len + batch_len / 2).to_string();
    let lowered = [("log.retention.bytes", bound.as_str())];
    assert_eq!(incremental(&mut conn, "0", &lowered, false), 0);
    wait_for(
        "the oldest segments deleted by the lowered retention.bytes",
        Duration::from_secs(30),
        || segments(&dir).first().is_some_and(|&base| base >= 9),
    );
    assert_eq!(segments(&dir), [9, 12, 15, 18]);
    assert_eq!(
        segment_sizes(&dir),
        [3 * batch_len, 3 * batch_len, 3 * batch_len, 2 * batch_len]
    );
    assert_eq!(
        kafka::fetch_all_or_error(broker.address, "bounded", 0, 0).err(),
        Some(OFFSET_OUT_OF_RANGE),
        "offsets below the new log start are gone"
    );
    let kept = kafka::fetch_all(broker.address, "bounded", 0, 9);
    assert_eq!(kept.len(), 11);
}

#[test]
fn alter_configs_on_the_cluster_default_applies_persists_and_yields_to_the_broker() {
    let mut broker = Broker::start(&[]);
    let mut conn = Conn::connect(broker.address);
    let batch = one_record(500);
    let one_less = (batch.len() - 1).to_string();
    assert_eq!(produce_batch(&mut conn, "shared", &batch), (0, 0));

    let pairs = [
        ("message.max.bytes", one_less.as_str()),
        ("log.retention.bytes", "1048576"),
    ];
    assert_eq!(replace(&mut conn, "", &pairs), 0);
    assert_eq!(
        produce_batch(&mut conn, "shared", &batch).0,
        MESSAGE_TOO_LARGE
    );
    let (_, configs) = describe(&mut conn, RESOURCE_BROKER, "");
    assert_eq!(configs.len(), 2, "{configs:?}");
    // AlterConfigs replaces the cluster default layer as a whole: a key left out is removed.
    let pairs = [("message.max.bytes", one_less.as_str())];
    assert_eq!(replace(&mut conn, "", &pairs), 0);
    let (_, configs) = describe(&mut conn, RESOURCE_BROKER, "");
    assert_eq!(configs.len(), 1, "{configs:?}");
    let (value, source, _, _) = described(&configs, "message.max.bytes");
    assert_eq!(
        (value.as_deref(), source),
        (Some(one_less.as_str()), SOURCE_DYNAMIC_DEFAULT)
    );

    let dir_guard = broker.take_dir();
    let data = broker.data.clone();
    assert!(broker.stop().success());
    let broker = Broker::start_in(&data, &[]);
    let mut conn = Conn::connect(broker.address);
    assert_eq!(
        produce_batch(&mut conn, "shared", &batch).0,
        MESSAGE_TOO_LARGE,
        "the cluster default is in force after a restart"
    );
    let (_, configs) = describe(&mut conn, RESOURCE_BROKER, "0");
    let (value, source, _, synonyms) = described(&configs, "message.max.bytes");
    assert_eq!(
        (value.as_deref(), source),
        (Some(one_less.as_str()), SOURCE_DYNAMIC_DEFAULT)
    );
    assert_eq!(synonyms, [SOURCE_DYNAMIC_DEFAULT, SOURCE_DEFAULT]);
    let (_, source, _, _) = described(&configs, "log.retention.bytes");
    assert_eq!(source, SOURCE_DEFAULT, "the removed key stayed removed");

    // This broker's own value, set with AlterConfigs too, wins over the cluster default.
    let exact = batch.len().to_string();
    assert_eq!(
        replace(&mut conn, "0", &[("message.max.bytes", exact.as_str())]),
        0
    );
    assert_eq!(produce_batch(&mut conn, "shared", &batch), (0, 1));
    // The broker's own value is in force, with the cluster default and Kafka's default below
    // it as synonyms.
    let broker_value_wins = |conn: &mut Conn| {
        let (_, configs) = describe(conn, RESOURCE_BROKER, "0");
        let (value, source, _, synonyms) = described(&configs, "message.max.bytes");
        assert_eq!(
            (value.as_deref(), source),
            (Some(exact.as_str()), SOURCE_DYNAMIC_BROKER)
        );
        let expected = [
            SOURCE_DYNAMIC_BROKER,
            SOURCE_DYNAMIC_DEFAULT,
            SOURCE_DEFAULT,
        ];
        assert_eq!(synonyms, expected);
    };
    broker_value_wins(&mut conn);

    // Both layers persist, and the broker's still wins after a second restart.
    drop(conn);
    assert!(broker.stop().success());
    let broker = Broker::start_in(&data, &[]);
    let mut conn = Conn::connect(broker.address);
    broker_value_wins(&mut conn);
    assert_eq!(produce_batch(&mut conn, "shared", &batch), (0, 2));
    drop(broker);
    drop(dir_guard);
}

#[test]
fn a_topic_override_is_described_as_topic_config_and_inherited_values_name_their_layer() {
    let broker = Broker::start(&["log.retention.bytes=4194304"]);
    let mut conn = Conn::connect(broker.address);
    assert_eq!(produce_batch(&mut conn, "layered", &one_record(10)), (0, 0));
    let cluster_default = [("log.segment.bytes", "2097152")];
    assert_eq!(incremental(&mut conn, "", &cluster_default, false), 0);
    let per_broker = [("log.flush.interval.messages", "1")];
    assert_eq!(incremental(&mut conn, "0", &per_broker, false), 0);
    let own = [("retention.ms", Some("60000"))];
    assert_eq!(
        incremental_on(&mut conn, RESOURCE_TOPIC, "layered", &own, false),
        0
    );

    let (error, configs) = describe(&mut conn, RESOURCE_TOPIC, "layered");
    assert_eq!(error, 0);
    for (key, value, source, synonyms) in [
        (
            "retention.ms",
            "60000",
            SOURCE_TOPIC,
            &[SOURCE_TOPIC, SOURCE_DEFAULT][..],
        ),
        (
            "retention.bytes",
            "4194304",
            SOURCE_STATIC,
            &[SOURCE_STATIC, SOURCE_DEFAULT],
        ),
        (
            "segment.bytes",
            "2097152",
            SOURCE_DYNAMIC_DEFAULT,
            &[SOURCE_DYNAMIC_DEFAULT, SOURCE_DEFAULT],
        ),
        (
            "flush.messages",
            "1",
            SOURCE_DYNAMIC_BROKER,
            &[SOURCE_DYNAMIC_BROKER, SOURCE_DEFAULT],
        ),
        (
            "index.interval.bytes",
            "4096",
            SOURCE_DEFAULT,
            &[SOURCE_DEFAULT],
        ),
    ] {
        let (got_value, got_source, read_only, got_synonyms) = described(&configs, key);
        assert_eq!(
            (got_value.as_deref(), got_source, read_only),
            (Some(value), source, false),
            "{key}"
        );
        assert_eq!(got_synonyms, synonyms, "{key}");
    }
    // A topic's synonyms after its own value name the broker properties it would fall back to.
    let entry = configs
        .iter()
        .find(|c| c.name.as_str() == "retention.ms")
        .unwrap();
    let names: Vec<&str> = entry.synonyms.iter().map(|s| s.name.as_str()).collect();
    assert_eq!(names, ["retention.ms", "log.retention.ms"]);
    assert_eq!(entry.synonyms[1].value.as_deref(), Some("604800000"));

    // Removing the override hands the value back to the broker layer.
    let removed = [("retention.ms", None)];
    assert_eq!(
        incremental_on(&mut conn, RESOURCE_TOPIC, "layered", &removed, false),
        0
    );
    let (_, configs) = describe(&mut conn, RESOURCE_TOPIC, "layered");
    let (value, source, _, synonyms) = described(&configs, "retention.ms");
    assert_eq!(
        (value.as_deref(), source),
        (Some("604800000"), SOURCE_DEFAULT)
    );
    assert_eq!(synonyms, [SOURCE_DEFAULT]);
}

#[test]
fn admin_client_reads_the_source_of_topic_overrides_and_inherited_values() {
    let broker = Broker::start(&["log.retention.bytes=4194304"]);
    let mut conn = Conn::connect(broker.address);
    assert_eq!(produce_batch(&mut conn, "layered", &one_record(10)), (0, 0));
    script(&broker, "topic-override");
}

/// A data directory from before dynamic broker configs were metadata records keeps them in
/// `__sluice_meta/dynamic-broker.properties`: the broker puts them in force, writes them to
/// the metadata log once, and sets the file aside; they stay in force after a restart.
#[test]
fn an_older_dynamic_config_file_is_imported_into_the_metadata_once() {
    let dir = tempfile::tempdir().expect("temp dir");
    let data = dir.path().join("data");
    let meta = data.join("__sluice_meta");
    std::fs::create_dir_all(&meta).expect("meta dir");
    let file = meta.join("dynamic-broker.properties");
    let text = "default.log.retention.bytes=1048576\nbroker.0.log.flush.interval.messages=7\n";
    std::fs::write(&file, text).expect("write the older file");

    let in_force = |broker: &Broker| {
        let mut conn = Conn::connect(broker.address);
        let (_, configs) = describe(&mut conn, RESOURCE_BROKER, "0");
        let (retention, retention_source, _, _) = described(&configs, "log.retention.bytes");
        let (flush, flush_source, _, _) = described(&configs, "log.flush.interval.messages");
        assert_eq!(
            (retention.as_deref(), retention_source),
            (Some("1048576"), SOURCE_DYNAMIC_DEFAULT)
        );
        assert_eq!(
            (flush.as_deref(), flush_source),
            (Some("7"), SOURCE_DYNAMIC_BROKER)
        );
    };
    let broker = Broker::start_in(&data, &[]);
    in_force(&broker);
    assert!(!file.exists(), "the file is set aside once imported");
    assert!(meta.join("dynamic-broker.properties.imported").exists());
    assert!(broker.stop().success());

    let broker = Broker::start_in(&data, &[]);
    in_force(&broker);
    drop(broker);
}
