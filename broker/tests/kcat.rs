//! kcat (librdkafka, from Debian) against the real broker: produce keyed messages with
//! headers, read them back byte for byte, and list metadata.

mod support;

use std::io::Write;
use std::process::{Command, Stdio};

use support::{run, Broker};

const MESSAGES: usize = 100_000;

fn kcat(broker: &Broker) -> Command {
    let mut command = Command::new("kcat");
    command.arg("-b").arg(broker.bootstrap());
    command
}

fn produce(broker: &Broker, topic: &str, input: &[u8]) {
    let mut child = kcat(broker)
        .args([
            "-P",
            "-t",
            topic,
            "-K",
            ":",
            "-H",
            "origin=kcat",
            "-H",
            "run=1",
        ])
        .stdin(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("kcat is installed (scripts/test.sh installs it)");
    child
        .stdin
        .take()
        .expect("stdin")
        .write_all(input)
        .expect("write to kcat");
    let output = child.wait_with_output().expect("kcat exits");
    assert!(
        output.status.success(),
        "kcat -P failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
}

#[test]
fn keyed_messages_with_headers_round_trip_byte_exact() {
    let broker = Broker::start(&[]);
    let mut input = Vec::new();
    for i in 0..MESSAGES {
        writeln!(input, "key-{i}:value-{i}-{}", "x".repeat(i % 97)).unwrap();
    }
    produce(&broker, "kcat-roundtrip", &input);
    let consumed = run(kcat(&broker).args([
        "-C",
        "-t",
        "kcat-roundtrip",
        "-o",
        "beginning",
        "-e",
        "-q",
        "-f",
        "%k:%s|%h\\n",
    ]));
    let consumed = String::from_utf8(consumed).expect("utf-8");
    let lines: Vec<&str> = consumed.lines().collect();
    assert_eq!(lines.len(), MESSAGES, "every message comes back once");
    for (i, line) in lines.iter().enumerate() {
        let expected = format!("key-{i}:value-{i}-{}|origin=kcat,run=1", "x".repeat(i % 97));
        assert_eq!(*line, expected, "message {i}");
    }
}

#[test]
fn metadata_lists_topics_and_partitions() {
    let broker = Broker::start(&["num.partitions=3"]);
    produce(&broker, "listed", b"k:v\n");
    let listing =
        String::from_utf8(run(kcat(&broker).args(["-L", "-t", "listed"]))).expect("utf-8");
    assert!(
        listing.contains("topic \"listed\" with 3 partitions"),
        "{listing}"
    );
    for partition in 0..3 {
        assert!(
            listing.contains(&format!("partition {partition}, leader 0")),
            "{listing}"
        );
    }
}
