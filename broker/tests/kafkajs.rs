//! kafkajs (npm) against the real broker: the admin client creates topics, producers send
//! keyed messages with headers (plain, gzip, idempotent), and kcat reads them back byte for
//! byte. kafkajs itself consumes only through a consumer group, which it does here too.

mod support;

use std::process::Command;

use support::{client_script, node, run, Broker};

const MESSAGES: usize = 300;
const PARTITIONS: usize = 3;
const TOPICS: [&str; 3] = ["kafkajs-plain", "kafkajs-gzip", "kafkajs-idempotent"];

/// What kafkajs_roundtrip.js sends as message `i` of `topic`: (partition, key, value, seq header).
fn expected(topic: &str, i: usize) -> (usize, String, String) {
    (
        i % PARTITIONS,
        format!("key-{i}"),
        format!("{topic}-value-{i}-{}", "kafkajs".repeat(i % 30)),
    )
}

fn kafkajs(broker: &Broker, mode: &str) -> String {
    let output = run(node()
        .arg(client_script("kafkajs_roundtrip.js"))
        .arg(broker.bootstrap())
        .arg(mode));
    let summary = String::from_utf8_lossy(&output).trim().to_owned();
    println!("{summary}");
    summary
}

#[test]
fn kafkajs_produces_and_kcat_reads_back() {
    let broker = Broker::start(&[]);
    let summary = kafkajs(&broker, "produce");
    for topic in TOPICS {
        assert!(
            summary.contains(&format!("{topic}: {MESSAGES} messages")),
            "{summary}"
        );
        for partition in 0..PARTITIONS {
            let consumed = run(Command::new("kcat").args([
                "-b",
                &broker.bootstrap(),
                "-C",
                "-t",
                topic,
                "-p",
                &partition.to_string(),
                "-o",
                "beginning",
                "-e",
                "-q",
                "-f",
                "%o|%k|%s|%h\\n",
            ]));
            let consumed = String::from_utf8(consumed).expect("utf-8");
            let want: Vec<String> = (0..MESSAGES)
                .map(|i| (i, expected(topic, i)))
                .filter(|(_, (p, _, _))| *p == partition)
                .enumerate()
                .map(|(offset, (i, (_, key, value)))| format!("{offset}|{key}|{value}|seq={i}"))
                .collect();
            let got: Vec<&str> = consumed.lines().collect();
            assert_eq!(got, want, "{topic}-{partition} as kcat reads it");
        }
    }
}

#[test]
fn kafkajs_consumer_group_reads_back() {
    let broker = Broker::start(&[]);
    kafkajs(&broker, "produce");
    let summary = kafkajs(&broker, "consume");
    assert!(
        summary.contains(&format!("read {MESSAGES} messages")),
        "{summary}"
    );
}
