//! sluice-bench against the real `sluice` binary: produce then consume, end-to-end with keys,
//! and a two-run sweep, each checked by what it reports. The broker binary comes from the
//! same target directory as this test (cargo builds it for the workspace's tests; alone,
//! `cargo build -p sluice-broker` first).

use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

const START_TIMEOUT: Duration = Duration::from_secs(30);

struct Broker {
    child: Child,
    address: String,
    _data: tempfile::TempDir,
}

impl Drop for Broker {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// target/<profile>/sluice, beside the directory that holds this test's executable.
fn sluice_binary() -> PathBuf {
    let exe = std::env::current_exe().expect("test executable path");
    let profile_dir = exe
        .parent()
        .and_then(|deps| deps.parent())
        .expect("test runs from target/<profile>/deps");
    let binary = profile_dir.join("sluice");
    assert!(
        binary.exists(),
        "{} is missing: build it with `cargo build -p sluice-broker`",
        binary.display()
    );
    binary
}

fn start_broker() -> Broker {
    let data = tempfile::tempdir().expect("temp dir");
    let mut child = Command::new(sluice_binary())
        .args(["serve", "--log", "warn"])
        .args(["--override", "listeners=PLAINTEXT://127.0.0.1:0"])
        .args(["--override", "sluice.metrics.address="])
        .arg("--override")
        .arg(format!("log.dirs={}", data.path().join("data").display()))
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("spawn sluice");
    let stdout = child.stdout.take().expect("stdout");
    let (lines_tx, lines_rx) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            if lines_tx.send(line).is_err() {
                return;
            }
        }
    });
    let deadline = Instant::now() + START_TIMEOUT;
    let mut address = None;
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        let Ok(line) = lines_rx.recv_timeout(left) else {
            let _ = child.kill();
            panic!("sluice did not print ready within {START_TIMEOUT:?}");
        };
        if line == "ready" {
            break;
        }
        if let Some(rest) = line.trim().strip_prefix("listening on:") {
            address = rest.split_whitespace().next().map(str::to_owned);
        }
    }
    Broker {
        child,
        address: address.expect("sluice names its listener"),
        _data: data,
    }
}

/// Runs sluice-bench with `args` and returns its stdout; fails the test if it fails.
fn bench(args: &[&str]) -> String {
    let output = Command::new(env!("CARGO_BIN_EXE_sluice-bench"))
        .args(args)
        .stderr(Stdio::inherit())
        .output()
        .expect("run sluice-bench");
    let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
    assert!(
        output.status.success(),
        "sluice-bench {args:?} failed: {stdout}"
    );
    stdout
}

/// A field of the one-line JSON summary, as text.
fn field<'a>(json: &'a str, name: &str) -> &'a str {
    let key = format!("\"{name}\":");
    let start = json
        .find(&key)
        .unwrap_or_else(|| panic!("no {name} in {json}"))
        + key.len();
    let rest = &json[start..];
    let end = rest.find([',', '}']).expect("field ends");
    &rest[..end]
}

#[test]
fn produce_then_consume_counts_every_message() {
    let broker = start_broker();
    let bootstrap = format!("--bootstrap={}", broker.address);
    let produced = bench(&[
        "produce",
        &bootstrap,
        "--topic=pc",
        "--partitions=4",
        "--messages=6000",
        "--message-size=300",
        "--batch-size=16KiB",
        "--producers=2",
        "--json",
    ]);
    assert_eq!(field(&produced, "messages"), "6000");
    assert_eq!(field(&produced, "errors"), "0");
    assert_ne!(field(&produced, "latency_p99_us"), "null");
    let consumed = bench(&[
        "consume",
        &bootstrap,
        "--topic=pc",
        "--consumers=2",
        "--json",
    ]);
    assert_eq!(field(&consumed, "messages"), "6000");
    assert_eq!(field(&consumed, "records_at_start"), "6000");
    assert_eq!(field(&consumed, "errors"), "0");
}

#[test]
fn end_to_end_with_keys_and_a_rate_consumes_what_it_produced() {
    let broker = start_broker();
    let bootstrap = format!("--bootstrap={}", broker.address);
    let summary = bench(&[
        "end-to-end",
        &bootstrap,
        "--topic=e2e",
        "--partitions=4",
        "--keys=40",
        "--messages=4000",
        "--message-size=200",
        "--rate=20000",
        "--linger-ms=2",
        "--fetch-max-wait-ms=50",
        "--consumers=2",
        "--csv",
    ]);
    let lines: Vec<&str> = summary.lines().collect();
    assert_eq!(lines.len(), 2, "{summary}");
    let header: Vec<&str> = lines[0].split(',').collect();
    let row: Vec<&str> = lines[1].split(',').collect();
    let get = |name: &str| row[header.iter().position(|h| *h == name).expect(name)];
    assert_eq!(get("mode"), "end-to-end");
    assert_eq!(get("messages"), "4000");
    assert_eq!(get("errors"), "0");
    assert_eq!(get("keys"), "40");
    let p50: u64 = get("latency_p50_us").parse().expect("a p50 latency");
    let max: u64 = get("latency_max_us").parse().expect("a max latency");
    assert!(p50 >= 1 && p50 <= max, "p50 {p50} max {max}");
}

#[test]
fn a_sweep_writes_tables_and_plots() {
    let broker = start_broker();
    let dir = tempfile::tempdir().expect("temp dir");
    let plan = dir.path().join("plan.toml");
    let out = dir.path().join("out");
    std::fs::write(
        &plan,
        format!(
            "name = \"tiny\"\n[fixed]\nmessages = 2000\nmessage-size = 100\n\
             [client]\n\"batch.size\" = [\"4KiB\", \"32KiB\"]\n\
             [broker]\nbootstrap = \"{}\"\n",
            broker.address
        ),
    )
    .expect("write plan");
    let status = Command::new(env!("CARGO_BIN_EXE_sluice-bench"))
        .arg("sweep")
        .arg(&plan)
        .arg("--out")
        .arg(&out)
        .status()
        .expect("run sweep");
    assert!(status.success());
    let csv = std::fs::read_to_string(out.join("results.csv")).expect("results.csv");
    let lines: Vec<&str> = csv.lines().collect();
    assert_eq!(lines.len(), 3, "{csv}");
    assert!(lines[0].starts_with("run,round,status,batch-size,"));
    assert!(lines[1].starts_with("0,0,ok,4KiB,"), "{}", lines[1]);
    assert!(lines[2].starts_with("1,0,ok,32KiB,"), "{}", lines[2]);
    let md = std::fs::read_to_string(out.join("results.md")).expect("results.md");
    assert_eq!(md.lines().count(), 4, "{md}");
    for plot in ["throughput-by-batch-size", "latency-vs-throughput"] {
        let svg = std::fs::read_to_string(out.join(format!("{plot}.svg"))).expect("svg");
        assert!(svg.contains("<svg"));
        let png = std::fs::read(out.join(format!("{plot}.png"))).expect("png");
        assert!(png.starts_with(b"\x89PNG"));
    }
}

#[test]
fn a_sweep_restarts_a_managed_broker_per_broker_combination() {
    let dir = tempfile::tempdir().expect("temp dir");
    // A port the kernel just handed out and took back; the sweep refuses it if taken since.
    let listener = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free port")
        .to_string();
    let plan = dir.path().join("plan.toml");
    let out = dir.path().join("out");
    std::fs::write(
        &plan,
        format!(
            "name = \"managed\"\n[fixed]\nmessages = 2000\nmessage-size = 100\n\
             [broker]\ncommand = [\"{}\", \"serve\", \"--log\", \"warn\", \
             \"--override\", \"sluice.metrics.address=\"]\n\
             data-dir = \"{}\"\nlistener = \"{listener}\"\n\
             [broker.params]\n\"log.segment.bytes\" = [1048576, 2097152]\n",
            sluice_binary().display(),
            dir.path().join("data").display()
        ),
    )
    .expect("write plan");
    let output = Command::new(env!("CARGO_BIN_EXE_sluice-bench"))
        .arg("sweep")
        .arg(&plan)
        .arg("--out")
        .arg(&out)
        .stderr(Stdio::piped())
        .output()
        .expect("run sweep");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "{stderr}");
    assert_eq!(stderr.matches("starting broker:").count(), 2, "{stderr}");
    assert!(
        stderr.contains("--override log.segment.bytes=2097152"),
        "{stderr}"
    );
    let csv = std::fs::read_to_string(out.join("results.csv")).expect("results.csv");
    let lines: Vec<&str> = csv.lines().collect();
    assert_eq!(lines.len(), 3, "{csv}");
    assert!(lines[1].starts_with("0,0,ok,1048576,"), "{}", lines[1]);
    assert!(lines[2].starts_with("1,0,ok,2097152,"), "{}", lines[2]);
    // Each broker's data directory is removed once it stops.
    let left: Vec<_> = std::fs::read_dir(dir.path().join("data"))
        .map(|entries| entries.flatten().collect())
        .unwrap_or_default();
    assert!(left.is_empty(), "{left:?}");
}

/// Every tuning plan in bench/plans/tuning runs: a quick tune (one short round of each tip's
/// two combinations) against this build's broker writes a guide with a row per tip, every
/// run reports, and the guide can be written again from the results alone.
#[test]
fn every_tuning_plan_runs_in_a_quick_tune() {
    let dir = tempfile::tempdir().expect("temp dir");
    let plans = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("plans/tuning");
    let results = dir.path().join("results");
    let tune = |guide: &str, extra: &[&str]| {
        let output = Command::new(env!("CARGO_BIN_EXE_sluice-bench"))
            .arg("tune")
            .args(extra)
            .arg("--plans")
            .arg(&plans)
            .arg("--out")
            .arg(dir.path().join(guide))
            .arg("--results")
            .arg(&results)
            .arg("--data-dir")
            .arg(dir.path().join("data"))
            .arg("--sluice")
            .arg(sluice_binary())
            .stderr(Stdio::piped())
            .output()
            .expect("run tune");
        let stderr = String::from_utf8_lossy(&output.stderr).into_owned();
        assert!(output.status.success(), "{stderr}");
        std::fs::read_to_string(dir.path().join(guide)).expect("the guide")
    };
    let guide = tune("TUNING.md", &["--quick"]);
    let mut stems = Vec::new();
    let mut tips = 0;
    for entry in std::fs::read_dir(&plans).expect("plans") {
        let path = entry.expect("entry").path();
        if path.extension().is_some_and(|ext| ext == "toml") {
            let text = std::fs::read_to_string(&path).expect("plan");
            tips += text.matches("[[tip]]").count();
            stems.push(
                path.file_stem()
                    .expect("stem")
                    .to_string_lossy()
                    .into_owned(),
            );
        }
    }
    assert!(tips >= stems.len() && stems.len() >= 10, "{stems:?}");
    let rows: Vec<&str> = guide.lines().filter(|l| l.starts_with("| [")).collect();
    assert_eq!(rows.len(), tips, "{guide}");
    for stem in &stems {
        let csv = std::fs::read_to_string(results.join(stem).join("results.csv"))
            .unwrap_or_else(|e| panic!("{stem}: {e}"));
        let runs: Vec<&str> = csv.lines().skip(1).collect();
        assert!(runs.len() >= 2, "{stem}: {csv}");
        for run in runs {
            assert_eq!(run.split(',').nth(2), Some("ok"), "{stem}: {run}");
        }
        assert!(guide.contains(&format!("\n## {stem}\n")), "{stem}");
    }
    // Every managed broker's data is gone once its plan is done.
    let left: Vec<_> = std::fs::read_dir(dir.path().join("data"))
        .map(|entries| {
            entries
                .flatten()
                .flat_map(|e| std::fs::read_dir(e.path()))
                .flatten()
                .collect()
        })
        .unwrap_or_default();
    assert!(left.is_empty(), "{left:?}");
    let again = tune("AGAIN.md", &["--report"]);
    let table = |text: &str| -> Vec<String> {
        text.lines()
            .filter(|l| l.starts_with('|'))
            .map(str::to_owned)
            .collect()
    };
    assert_eq!(table(&again), table(&guide));
}
