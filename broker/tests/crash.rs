//! kill -9 under load: a confluent-kafka producer (acks=all, idempotent) writes as fast as it
//! can while the broker is killed with SIGKILL; the broker restarts on the same data directory
//! and every message the producer saw acknowledged must be read back at its offset, intact and
//! in order. Two rounds, so recovery of an already recovered log is covered too, and a clean
//! restart at the end.

mod support;

use std::fs::File;
use std::path::{Path, PathBuf};
use std::process::{Child, Stdio};
use std::time::{Duration, Instant};

use support::{client_script, python, run, Broker};

const TOPIC: &str = "crash";
const PARTITIONS: usize = 3;
/// Acknowledgements to collect before each kill, so the kill lands in the middle of a stream.
const ACKS_BEFORE_KILL: usize = 20_000;
/// Time for the producer to reach `ACKS_BEFORE_KILL`.
const PRODUCE_TIMEOUT: Duration = Duration::from_secs(120);

fn overrides() -> Vec<String> {
    vec![format!("num.partitions={PARTITIONS}")]
}

fn start_broker(data: Option<&Path>) -> Broker {
    let overrides = overrides();
    let overrides: Vec<&str> = overrides.iter().map(String::as_str).collect();
    match data {
        Some(data) => Broker::start_in(data, &overrides),
        None => Broker::start(&overrides),
    }
}

/// The producer script, writing acknowledgements to `acks` and its log to `log`.
fn start_producer(broker: &Broker, first_sequence: u64, acks: &Path, log: &Path) -> Child {
    python()
        .arg(client_script("crash_producer.py"))
        .arg(broker.bootstrap())
        .arg(TOPIC)
        .arg(PARTITIONS.to_string())
        .arg(first_sequence.to_string())
        .arg(acks)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        // A file, not a pipe: librdkafka logs a lot once the broker is gone, and a full pipe
        // would stall the producer.
        .stderr(File::create(log).expect("producer log"))
        .spawn()
        .expect("start crash_producer.py")
}

fn complete_lines(path: &Path) -> usize {
    std::fs::read(path)
        .map(|bytes| bytes.iter().filter(|&&b| b == b'\n').count())
        .unwrap_or(0)
}

/// Waits until the producer has written `count` acknowledgements, failing the test with the
/// producer's log when it exits early or the deadline passes.
fn wait_for_acks(producer: &mut Child, acks: &Path, log: &Path, count: usize) {
    let deadline = Instant::now() + PRODUCE_TIMEOUT;
    loop {
        let written = complete_lines(acks);
        if written >= count {
            return;
        }
        let log_tail = || {
            let text = std::fs::read_to_string(log).unwrap_or_default();
            let lines: Vec<&str> = text.lines().collect();
            lines[lines.len().saturating_sub(20)..].join("\n")
        };
        if let Some(status) = producer.try_wait().expect("producer status") {
            panic!(
                "the producer exited ({status}) after {written} acknowledgements:\n{}",
                log_tail()
            );
        }
        assert!(
            Instant::now() < deadline,
            "only {written} of {count} acknowledgements within {PRODUCE_TIMEOUT:?}:\n{}",
            log_tail()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn verify(broker: &Broker, ack_files: &[PathBuf], when: &str) {
    let output = run(python()
        .arg(client_script("crash_verify.py"))
        .arg(broker.bootstrap())
        .arg(TOPIC)
        .arg(PARTITIONS.to_string())
        .args(ack_files));
    println!("{when}: {}", String::from_utf8_lossy(&output).trim());
}

#[test]
fn acknowledged_messages_survive_kill_9_and_restart() {
    let work = tempfile::tempdir().expect("work dir");
    let mut broker = start_broker(None);
    // The data directory must outlive the killed broker.
    let _data_dir = broker.take_dir();
    let data = broker.data.clone();
    let mut ack_files = Vec::new();
    for round in 0..2u64 {
        let acks = work.path().join(format!("acks-{round}.txt"));
        let log = work.path().join(format!("producer-{round}.log"));
        let mut producer = start_producer(&broker, round * 1_000_000_000, &acks, &log);
        wait_for_acks(&mut producer, &acks, &log, ACKS_BEFORE_KILL);
        broker.kill();
        // The producer may still be retrying against the dead broker; whatever it has written
        // by now is all it will ever see acknowledged.
        let _ = producer.kill();
        let _ = producer.wait();
        ack_files.push(acks);
        broker = start_broker(Some(&data));
        verify(
            &broker,
            &ack_files,
            &format!("after kill -9 number {}", round + 1),
        );
    }
    let status = broker.stop();
    assert!(status.success(), "clean stop: {status}");
    let broker = start_broker(Some(&data));
    verify(&broker, &ack_files, "after a clean restart");
}
