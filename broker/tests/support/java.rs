//! The Java client harness (tests/clients/java, compiled by scripts/test.sh): a subcommand
//! runs as a process, prints lines a test checks, and exits non-zero when something differs.

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::mpsc;
use std::time::Duration;

/// How long one harness run may take before the test kills it. The harness bounds itself
/// well below this (90 s, and its watchdog 15 s later); this only catches a JVM that hangs.
const RUN_TIMEOUT: Duration = Duration::from_secs(150);

/// `java` with the harness and kafka-clients on its class path, as scripts/test.sh builds them.
fn java() -> Command {
    let classpath = std::env::var("SLUICE_TEST_JAVA_CLASSPATH").expect(
        "SLUICE_TEST_JAVA_CLASSPATH is unset: run the tests with scripts/test.sh, which installs the clients",
    );
    harness_is_current(&classpath);
    let mut command = Command::new("java");
    // slf4j-api comes without a logging backend; its warning about that is noise.
    command
        .arg("-Dslf4j.internal.verbosity=ERROR")
        .arg("-cp")
        .arg(classpath)
        .arg("Harness");
    command
}

/// The Java sources of the harness.
fn harness_sources() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests")
        .join("clients")
        .join("java")
}

/// Stale classes would test yesterday's harness: every source must have a class compiled
/// after it in the class path's directory.
fn harness_is_current(classpath: &str) {
    let classes = std::env::split_paths(classpath)
        .find(|entry| entry.is_dir())
        .unwrap_or_else(|| {
            panic!("no directory of classes in SLUICE_TEST_JAVA_CLASSPATH={classpath}")
        });
    let modified = |path: &Path| std::fs::metadata(path).and_then(|m| m.modified()).ok();
    for source in std::fs::read_dir(harness_sources()).expect("tests/clients/java") {
        let source = source.expect("directory entry").path();
        if source.extension().is_none_or(|e| e != "java") {
            continue;
        }
        let class = classes
            .join(source.file_stem().expect("file name"))
            .with_extension("class");
        assert!(
            modified(&class) >= modified(&source),
            "{} is missing or older than {}: run scripts/test.sh to rebuild the Java harness",
            class.display(),
            source.display()
        );
    }
}

/// Runs a harness subcommand against `bootstrap` and returns what it printed, failing the
/// test with its stderr when it fails or outlives `RUN_TIMEOUT`.
pub fn java_harness(bootstrap: &str, subcommand: &str, args: &[&str]) -> String {
    let mut command = java();
    command.arg(subcommand).arg(bootstrap).args(args);
    let output = output_within(command, RUN_TIMEOUT);
    assert!(
        output.status.success(),
        "java harness {subcommand} {args:?} failed with {}:\nstdout:\n{}\nstderr:\n{}",
        output.status,
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    let printed = String::from_utf8(output.stdout).expect("utf-8");
    println!("{subcommand}:\n{printed}");
    printed
}

/// The output of `command`, which is killed if it has not exited within `limit`.
fn output_within(mut command: Command, limit: Duration) -> Output {
    let child = command
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("cannot run {command:?}: {e}"));
    let pid = rustix::process::Pid::from_child(&child);
    let (done, finished) = mpsc::channel();
    std::thread::spawn(move || done.send(child.wait_with_output()));
    let output = match finished.recv_timeout(limit) {
        Ok(output) => output,
        Err(_) => {
            let _ = rustix::process::kill_process(pid, rustix::process::Signal::KILL);
            let output = finished.recv_timeout(Duration::from_secs(10));
            panic!("{command:?} still ran after {limit:?}; killed it: {output:?}");
        }
    };
    output.unwrap_or_else(|e| panic!("waiting for {command:?}: {e}"))
}
