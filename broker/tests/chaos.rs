//! Failover without loss: a short run of the fault harness (`scripts/chaos.py run --short`),
//! three real nodes killed, paused, cut off and restarted under an idempotent acks=all
//! producer and a consumer group, must end with the checker finding no anomaly.

mod support;

use std::fs::File;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

/// The harness bounds each of its own waits; this only catches a harness that hangs.
const HARNESS_LIMIT: Duration = Duration::from_secs(600);

fn script() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../scripts/chaos.py")
}

/// The checker finds each anomaly in a made-up history that has it, and none in a clean one.
#[test]
fn the_checker_finds_every_anomaly_it_is_shown() {
    let out = support::run(support::python().arg(script()).arg("selftest"));
    let printed = String::from_utf8_lossy(&out);
    assert!(!printed.contains("WRONG"), "{printed}");
    assert_eq!(
        printed
            .lines()
            .filter(|l| l.trim_start().starts_with("ok"))
            .count(),
        9,
        "{printed}"
    );
}

#[test]
fn a_short_fault_run_loses_nothing_and_reorders_nothing() {
    let script = script();
    let dir = tempfile::tempdir().expect("temp dir");
    let out = dir.path().join("run");
    let stdout_path = dir.path().join("stdout");
    let stderr_path = dir.path().join("stderr");
    let mut command = support::python();
    command
        .arg(&script)
        .args([
            "run",
            "--short",
            "--binary",
            env!("CARGO_BIN_EXE_sluice"),
            "--out",
        ])
        .arg(&out)
        .stdin(Stdio::null())
        .stdout(File::create(&stdout_path).expect("stdout file"))
        .stderr(File::create(&stderr_path).expect("stderr file"));
    let mut child = command.spawn().expect("start chaos.py");
    let deadline = Instant::now() + HARNESS_LIMIT;
    let status = loop {
        if let Some(status) = child.try_wait().expect("wait for chaos.py") {
            break Some(status);
        }
        if Instant::now() > deadline {
            // SIGTERM lets the harness stop its nodes and remove its namespaces.
            let pid = rustix::process::Pid::from_child(&child);
            let _ = rustix::process::kill_process(pid, rustix::process::Signal::TERM);
            let _ = child.wait();
            break None;
        }
        std::thread::sleep(Duration::from_millis(200));
    };
    let printed = std::fs::read_to_string(&stdout_path).unwrap_or_default();
    let errors = std::fs::read_to_string(&stderr_path).unwrap_or_default();
    let passed = status.is_some_and(|s| s.success());
    if !passed {
        // Keep the history and the node logs for whoever reads the failure.
        let kept = dir.keep();
        panic!(
            "chaos.py {} (history and node logs kept in {}):\n{printed}\n{errors}",
            match status {
                Some(status) => format!("failed with {status}"),
                None => format!("did not finish within {HARNESS_LIMIT:?}"),
            },
            kept.join("run").display(),
        );
    }
    assert!(
        printed.contains("OK: seed"),
        "chaos.py exited 0 without its verdict:\n{printed}"
    );
}
