//! confluent-kafka (librdkafka 2.x from PyPI) against the real broker: a producer with every
//! compression codec and as an idempotent producer, a consumer by assign() and seek() (no
//! consumer group), and the AdminClient. The checks live in the Python scripts under
//! tests/clients; each exits non-zero, with the reason on stderr, when something differs.

mod support;

use support::{client_script, python, run, Broker};

/// Runs a client script against `broker` and returns the summary it prints.
fn script(broker: &Broker, name: &str, args: &[&str]) -> String {
    let output = run(python()
        .arg(client_script(name))
        .arg(broker.bootstrap())
        .args(args));
    let summary = String::from_utf8_lossy(&output).trim().to_owned();
    assert!(!summary.is_empty(), "{name} printed no summary");
    println!("{summary}");
    summary
}

fn roundtrip(codec: &str, idempotent: bool) {
    let broker = Broker::start(&[]);
    let mut args = vec![codec];
    if idempotent {
        args.push("--idempotent");
    }
    let summary = script(&broker, "confluent_roundtrip.py", &args);
    assert!(summary.contains("read back 6000 messages"), "{summary}");
}

#[test]
fn produce_and_read_back_uncompressed() {
    roundtrip("none", false);
}

#[test]
fn produce_and_read_back_gzip() {
    roundtrip("gzip", false);
}

#[test]
fn produce_and_read_back_snappy() {
    roundtrip("snappy", false);
}

#[test]
fn produce_and_read_back_lz4() {
    roundtrip("lz4", false);
}

#[test]
fn produce_and_read_back_zstd() {
    roundtrip("zstd", false);
}

#[test]
fn idempotent_producer_reads_back_without_gaps_or_duplicates() {
    roundtrip("none", true);
}

#[test]
fn idempotent_producer_with_lz4() {
    roundtrip("lz4", true);
}

fn admin(area: &str) {
    let broker = Broker::start(&[]);
    script(&broker, "confluent_admin.py", &[area]);
}

#[test]
fn admin_creates_and_deletes_topics() {
    admin("topics");
}

#[test]
fn admin_creates_partitions() {
    admin("partitions");
}

#[test]
fn admin_lists_offsets_earliest_latest_and_by_timestamp() {
    admin("offsets");
}

/// Kafka resolves a timestamp to the exact record, also inside a batch of several.
#[test]
fn admin_lists_offsets_by_timestamp_inside_a_batch() {
    admin("offsets-in-batch");
}

#[test]
fn admin_deletes_records() {
    admin("delete-records");
}

#[test]
fn admin_describes_and_alters_configs() {
    admin("configs");
}
