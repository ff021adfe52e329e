//! Fetched record bytes reach the socket by splice only: the broker's count of bytes moved by
//! splice equals the record bytes it put in fetch responses. The metrics text also passes
//! `promtool check metrics`.

mod support;

use std::io::Write;
use std::process::{Command, Stdio};

use support::{run, Broker};

#[test]
fn every_fetched_record_byte_goes_by_splice() {
    let broker = Broker::start(&["num.partitions=4"]);
    let mut input = Vec::new();
    for i in 0..20_000 {
        writeln!(input, "{i}:{}", "v".repeat(200 + i % 300)).unwrap();
    }
    let mut producer = Command::new("kcat")
        .args(["-b", &broker.bootstrap(), "-P", "-t", "spliced", "-K", ":"])
        .stdin(Stdio::piped())
        .spawn()
        .expect("kcat");
    producer.stdin.take().unwrap().write_all(&input).unwrap();
    assert!(producer.wait().unwrap().success());

    let consumed = run(Command::new("kcat").args([
        "-b",
        &broker.bootstrap(),
        "-C",
        "-t",
        "spliced",
        "-o",
        "beginning",
        "-e",
        "-q",
    ]));
    assert_eq!(consumed.iter().filter(|&&b| b == b'\n').count(), 20_000);

    let text = broker.scrape();
    let spliced = Broker::metric(&text, "sluice_zero_copy_bytes_total");
    let served = Broker::metric(&text, "sluice_fetch_record_bytes_total");
    let appended = Broker::metric(&text, "kafka_server_brokertopicmetrics_bytesin_total");
    assert_eq!(spliced, served, "record bytes served must all go by splice");
    assert!(
        served >= appended,
        "the consumer read every batch: served {served} < appended {appended}"
    );
    assert_eq!(
        Broker::metric(&text, "kafka_server_brokertopicmetrics_messagesin_total"),
        20_000
    );
}

#[test]
fn metrics_pass_promtool() {
    let broker = Broker::start(&[]);
    let text = broker.scrape();
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
        "promtool rejects the metrics:\n{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
}
