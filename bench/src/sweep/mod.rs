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
use plan::{Plan, Run};
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
    let mut broker = Broker::new(plan.broker.clone());
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

/// Runs one combination as a child process and returns its CSV summary as fields.
fn run_one(
    exe: &Path,
    plan: &Plan,
    run: &Run,
    bootstrap: &str,
) -> Result<Vec<(String, String)>, String> {
    let mut command = Command::new(exe);
    command
        .arg(plan.mode.command())
        .arg(format!("--bootstrap={bootstrap}"))
        .arg(format!("--topic={}", topic_for(plan, run)))
        .arg("--csv");
    for (flag, value) in plan.fixed.iter().chain(&run.client) {
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
