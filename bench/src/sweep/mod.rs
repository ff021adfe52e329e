//! `sluice-bench sweep PLAN.toml`: runs one benchmark per combination of a plan's client and
//! broker parameters and writes the results as CSV, a Markdown table and plots. Each run is
//! this same binary started as a child process (so runs share nothing but the broker), with
//! `--csv` output that the sweep reads back. Broker parameters are applied by restarting a
//! broker the sweep manages, or by IncrementalAlterConfigs on one it does not.

mod broker;
pub mod plan;
mod plot;
pub mod report;

use std::io;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Instant;

use crate::args::SweepArgs;
use broker::Broker;
use plan::{Plan, Run, RunMode};
use report::RunResult;

#[derive(Debug, thiserror::Error)]
pub enum SweepError {
    #[error("{path}: {source}")]
    Read {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("{path}: {source}")]
    Plan {
        path: PathBuf,
        #[source]
        source: plan::PlanError,
    },
    #[error("cannot write {path}: {source}")]
    Write {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("cannot find this program to run it: {0}")]
    Exe(#[source] io::Error),
    #[error("{0}: a tuning plan needs at least one [[tip]]")]
    NoTip(PathBuf),
    #[error("no tuning plans (*.toml) in {0}")]
    NoPlans(PathBuf),
    #[error("{0} does not hold the results of this plan: run it again")]
    Results(PathBuf),
}

pub fn run(args: &SweepArgs) -> Result<(), SweepError> {
    let text = std::fs::read_to_string(&args.plan).map_err(|source| SweepError::Read {
        path: args.plan.clone(),
        source,
    })?;
    let plan = plan::parse(&text).map_err(|source| SweepError::Plan {
        path: args.plan.clone(),
        source,
    })?;
    let runs = plan::expand(&plan);
    if args.dry_run {
        for run in &runs {
            println!("{}", describe(run));
        }
        return Ok(());
    }
    let out = args
        .out
        .clone()
        .or_else(|| plan.output.clone())
        .unwrap_or_else(|| Path::new("sweep-results").join(&plan.name));
    execute(&plan, &runs, &out).map(|_| ())
}

/// Runs `runs` of `plan` and writes their tables and plots into `out`; returns every run's
/// result, rounds apart.
pub fn execute(plan: &Plan, runs: &[Run], out: &Path) -> Result<Vec<RunResult>, SweepError> {
    std::fs::create_dir_all(out).map_err(|source| SweepError::Write {
        path: out.to_owned(),
        source,
    })?;
    let exe = std::env::current_exe().map_err(SweepError::Exe)?;
    let cluster = match &plan.broker {
        plan::BrokerTarget::Managed { nodes, .. } if *nodes > 1 => {
            format!(" on a cluster of {nodes} nodes")
        }
        _ => String::new(),
    };
    let rounds = match plan.repeat {
        1 => String::new(),
        n => format!(" in {n} rounds"),
    };
    eprintln!(
        "sweep {}: {} runs{rounds}{cluster}, results in {}",
        plan.name,
        runs.len(),
        out.display()
    );
    let started = Instant::now();
    let mut results = Vec::with_capacity(runs.len());
    let mut broker = Broker::new(plan.broker.clone()).with_builds(plan.builds.clone());
    for (done, run) in runs.iter().enumerate() {
        let outcome = broker
            .apply(&run.broker)
            .and_then(|bootstrap| run_one(&exe, plan, run, &bootstrap));
        let result = match outcome {
            Ok(fields) => RunResult::ok(run.clone(), fields),
            Err(reason) => RunResult::failed(run.clone(), reason),
        };
        eprintln!(
            "[{}/{}] {:.0}s  {}  ->  {}",
            done + 1,
            runs.len(),
            started.elapsed().as_secs_f64(),
            describe(run),
            result.brief()
        );
        results.push(result);
        // Written after every run, so an interrupted sweep keeps what it measured.
        report::write_tables(out, plan, &results)?;
    }
    broker.stop();
    plot::write_all(out, plan, &report::medians(&results))?;
    eprintln!(
        "sweep {} done in {:.0}s: {}",
        plan.name,
        started.elapsed().as_secs_f64(),
        out.display()
    );
    Ok(results)
}

/// A run's parameters as one line, for progress and dry runs.
fn describe(run: &Run) -> String {
    let broker = run.broker.iter().map(|(k, v)| format!("{k}={v}"));
    let client = run.client.iter().map(|(k, v)| format!("--{k}={v}"));
    let parts: Vec<String> = broker.chain(client).collect();
    if parts.is_empty() {
        format!("run {}", run.index)
    } else {
        parts.join(" ")
    }
}

/// A topic name from the plan's name, within Kafka's legal characters.
fn topic_for(plan: &Plan, run: &Run) -> String {
    let name: String = plan
        .name
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-') {
                c
            } else {
                '-'
            }
        })
        .take(200)
        .collect();
    format!("{name}-{}", run.index)
}

/// Flags that shape a consume run's fill and not its read: the consumer reads what the
/// fill wrote, to the end offsets it finds.
const FILL_ONLY_FLAGS: [&str; 3] = ["messages", "duration", "warmup"];
/// The fill's summary fields a consume run keeps, as `fill_<name>`.
const FILL_FIELDS: [&str; 3] = ["msgs_per_s", "payload_mb_per_s", "batch_mb_per_s"];

/// Runs one combination as child processes and returns the CSV summary as fields: one
/// child in produce and end-to-end mode; in consume mode a produce child that fills the
/// topic, then a consume child.
fn run_one(
    exe: &Path,
    plan: &Plan,
    run: &Run,
    bootstrap: &str,
) -> Result<Vec<(String, String)>, String> {
    let flags: Vec<&(String, String)> = plan.fixed.iter().chain(&run.client).collect();
    let topic = topic_for(plan, run);
    if plan.mode != RunMode::Consume {
        return child(exe, plan.mode.command(), bootstrap, &topic, &flags);
    }
    let takes = |command: &str, flag: &str| {
        use clap::CommandFactory as _;
        crate::args::Cli::command()
            .find_subcommand(command)
            .is_some_and(|sub| sub.get_arguments().any(|arg| arg.get_long() == Some(flag)))
    };
    // A flag neither side takes goes to the fill, which refuses it by name.
    let fill: Vec<_> = flags
        .iter()
        .copied()
        .filter(|(flag, _)| takes("produce", flag) || !takes("consume", flag))
        .collect();
    let read: Vec<_> = flags
        .iter()
        .copied()
        .filter(|(flag, _)| takes("consume", flag) && !FILL_ONLY_FLAGS.contains(&flag.as_str()))
        .collect();
    let filled = child(exe, "produce", bootstrap, &topic, &fill)
        .map_err(|reason| format!("the fill: {reason}"))?;
    let mut fields = child(exe, "consume", bootstrap, &topic, &read)?;
    fields.extend(
        filled
            .into_iter()
            .filter(|(name, _)| FILL_FIELDS.contains(&name.as_str()))
            .map(|(name, value)| (format!("fill_{name}"), value)),
    );
    Ok(fields)
}

/// Runs `command` of this program with `flags` and returns its CSV summary as fields.
fn child(
    exe: &Path,
    command: &str,
    bootstrap: &str,
    topic: &str,
    flags: &[&(String, String)],
) -> Result<Vec<(String, String)>, String> {
    let name = command;
    let mut command = Command::new(exe);
    command
        .arg(name)
        .arg(format!("--bootstrap={bootstrap}"))
        .arg(format!("--topic={topic}"))
        .arg("--csv");
    for (flag, value) in flags {
        command.arg(format!("--{flag}={value}"));
    }
    // The child's interval lines are the sweep's progress within a run.
    let output = command
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .output()
        .map_err(|e| format!("cannot start {}: {e}", exe.display()))?;
    let stdout = String::from_utf8_lossy(&output.stdout);
    let fields = report::parse_summary_csv(&stdout);
    match (output.status.success(), fields) {
        (true, Some(fields)) => Ok(fields),
        (false, Some(fields)) => {
            // A run with failed requests still reports; keep its figures, flagged.
            let errors = fields
                .iter()
                .find(|(k, _)| k == "errors")
                .map_or("?", |(_, v)| v.as_str())
                .to_owned();
            Err(format!("{errors} requests failed"))
        }
        (_, None) => Err(format!("exited with {}", output.status)),
    }
}
