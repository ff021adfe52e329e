//! `sluice-bench tune`: runs every tuning plan (sweep plans that carry `[[tip]]` tables) and
//! writes the guide: one row per tip with its measured effect, then each plan's table of
//! medians and its plots. A tip's effect is taken round by round, advised against baseline
//! within the same round, so that a machine that slows down over the run shifts both sides.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::time::Instant;

use crate::args::TuneArgs;
use crate::sweep::plan::{self, BrokerTarget, Goal, Plan, Run, RunMode, Tip};
use crate::sweep::report::{self, RunResult};
use crate::sweep::{self, SweepError};

/// How much better (or worse) the median must be, with every round on the same side of 1,
/// before the guide says that a tip holds (or that the opposite does).
const CLEAR: f64 = 0.05;

/// The file beside a plan's results that says which command measured them, and when.
const MEASURED_BY: &str = "measured-by.txt";

/// What `--quick` runs each combination for.
const QUICK_DURATION: &str = "300ms";

struct Section {
    stem: String,
    plan: Plan,
    results: Vec<RunResult>,
    out: PathBuf,
}

pub fn run(args: &TuneArgs) -> Result<(), SweepError> {
    let plans = read_plans(args)?;
    let started = Instant::now();
    eprintln!(
        "tune: {} plans from {}{}",
        plans.len(),
        args.plans.display(),
        if args.quick { ", quick" } else { "" }
    );
    let total = plans.len();
    let mut sections = Vec::with_capacity(total);
    for (done, (stem, plan)) in plans.into_iter().enumerate() {
        let plan = adapt(plan, args, &stem);
        let runs = select(&plan, args.quick);
        eprintln!(
            "tune: plan {}/{} {stem}, {} runs, {:.0}s so far",
            done + 1,
            total,
            runs.len(),
            started.elapsed().as_secs_f64()
        );
        let out = args.results.join(&stem);
        let results = if args.report {
            read_results(&plan, &out)?
        } else {
            let results = sweep::execute(&plan, &runs, &out)?;
            report::write(&out.join(MEASURED_BY), &measured_by())?;
            results
        };
        for tip in &plan.tips {
            eprintln!(
                "tune: {}: {}",
                tip.advice,
                Effect::of(tip, &results).brief()
            );
        }
        sections.push(Section {
            stem,
            plan,
            results,
            out,
        });
        // Written after every plan, so an interrupted run keeps what it measured.
        report::write(&args.out, &guide(args, &sections))?;
    }
    eprintln!(
        "tune: done in {:.0}s: {}",
        started.elapsed().as_secs_f64(),
        args.out.display()
    );
    Ok(())
}

/// This command line and the time, for `MEASURED_BY`.
fn measured_by() -> String {
    let command: Vec<String> = std::env::args().collect();
    let when = std::process::Command::new("date")
        .args(["-u", "+%Y-%m-%d %H:%M UTC"])
        .output()
        .ok()
        .map(|out| String::from_utf8_lossy(&out.stdout).trim().to_owned())
        .filter(|when| !when.is_empty())
        .unwrap_or_else(|| "an unknown time".to_owned());
    format!("`{}` at {when}\n", command.join(" "))
}

/// The results a run of the plan left in `out`.
fn read_results(plan: &Plan, out: &Path) -> Result<Vec<RunResult>, SweepError> {
    let path = out.join("results.csv");
    let text = std::fs::read_to_string(&path).map_err(|source| SweepError::Read {
        path: path.clone(),
        source,
    })?;
    report::read_csv(plan, &text).ok_or(SweepError::Results(path))
}

/// Every `.toml` in the plans directory (those whose name contains `--only`), in name order,
/// each with at least one tip.
fn read_plans(args: &TuneArgs) -> Result<Vec<(String, Plan)>, SweepError> {
    let entries = std::fs::read_dir(&args.plans).map_err(|source| SweepError::Read {
        path: args.plans.clone(),
        source,
    })?;
    let mut paths: Vec<PathBuf> = entries
        .flatten()
        .map(|entry| entry.path())
        .filter(|path| path.extension().is_some_and(|ext| ext == "toml"))
        .filter(|path| {
            let name = path.file_name().map(|n| n.to_string_lossy().into_owned());
            let name = name.unwrap_or_default();
            args.only.is_empty() || args.only.iter().any(|only| name.contains(only.as_str()))
        })
        .collect();
    paths.sort();
    let mut plans = Vec::with_capacity(paths.len());
    for path in paths {
        let text = std::fs::read_to_string(&path).map_err(|source| SweepError::Read {
            path: path.clone(),
            source,
        })?;
        let plan = plan::parse(&text).map_err(|source| SweepError::Plan {
            path: path.clone(),
            source,
        })?;
        if plan.tips.is_empty() {
            return Err(SweepError::NoTip(path));
        }
        let stem = path
            .file_stem()
            .map_or_else(|| plan.name.clone(), |s| s.to_string_lossy().into_owned());
        plans.push((stem, plan));
    }
    if plans.is_empty() {
        return Err(SweepError::NoPlans(args.plans.clone()));
    }
    Ok(plans)
}

/// The plan as this run of the guide needs it: another broker binary or data directory, and
/// for `--quick`, one short round.
fn adapt(mut plan: Plan, args: &TuneArgs, stem: &str) -> Plan {
    if let BrokerTarget::Managed {
        command, data_dir, ..
    } = &mut plan.broker
    {
        if let Some(sluice) = &args.sluice {
            command[0] = sluice.display().to_string();
        }
        if let Some(dir) = &args.data_dir {
            *data_dir = dir.join(stem);
        }
    }
    if args.quick {
        plan.repeat = 1;
        plan.fixed
            .retain(|(flag, _)| !["duration", "messages", "warmup"].contains(&flag.as_str()));
        plan.fixed
            .push(("duration".to_owned(), QUICK_DURATION.to_owned()));
        plan.fixed.push(("warmup".to_owned(), "0s".to_owned()));
    }
    plan
}

/// Every run of the plan; for `--quick`, only the combinations its tips compare.
fn select(plan: &Plan, quick: bool) -> Vec<Run> {
    let runs = plan::expand(plan);
    if !quick {
        return runs;
    }
    runs.into_iter()
        .filter(|run| {
            plan.tips
                .iter()
                .any(|tip| Tip::matches(&tip.baseline, run) || Tip::matches(&tip.advised, run))
        })
        .collect()
}

/// A tip's effect in each round that measured both of its combinations: above 1, the
/// advice helped.
struct Effect {
    gains: Vec<f64>,
}

impl Effect {
    fn of(tip: &Tip, results: &[RunResult]) -> Self {
        let rounds = results.iter().map(|r| r.run.round + 1).max().unwrap_or(0);
        let figure = |which: &[(String, String)], round: usize| {
            results
                .iter()
                .filter(|r| r.error.is_none() && r.run.round == round)
                .find(|r| Tip::matches(which, &r.run))
                .and_then(|r| match &tip.goal {
                    Goal::Throughput => r.mb_per_s(),
                    Goal::Latency(label) => r.latency_ms(label),
                })
                .filter(|figure| *figure > 0.0)
        };
        let gains = (0..rounds)
            .filter_map(|round| {
                let baseline = figure(&tip.baseline, round)?;
                let advised = figure(&tip.advised, round)?;
                Some(match tip.goal {
                    Goal::Throughput => advised / baseline,
                    Goal::Latency(_) => baseline / advised,
                })
            })
            .collect();
        Self { gains }
    }

    fn median(&self) -> Option<f64> {
        report::median(self.gains.clone())
    }

    fn spread(&self) -> Option<(f64, f64)> {
        let low = self.gains.iter().copied().reduce(f64::min)?;
        let high = self.gains.iter().copied().reduce(f64::max)?;
        Some((low, high))
    }

    fn verdict(&self) -> &'static str {
        let (Some(median), Some((low, high))) = (self.median(), self.spread()) else {
            return "not measured: runs failed";
        };
        if median >= 1.0 + CLEAR && low > 1.0 {
            "holds"
        } else if median <= 1.0 - CLEAR && high < 1.0 {
            "the opposite holds"
        } else {
            "no clear effect"
        }
    }

    /// The median and, with more than one round, the lowest and highest round.
    fn figure(&self) -> String {
        match (self.median(), self.spread()) {
            (Some(median), Some((low, high))) if self.gains.len() > 1 => {
                format!("×{median:.2} ({low:.2}–{high:.2})")
            }
            (Some(median), _) => format!("×{median:.2}"),
            _ => "-".to_owned(),
        }
    }

    fn brief(&self) -> String {
        format!("{}, {}", self.figure(), self.verdict())
    }
}

fn combination(which: &[(String, String)]) -> String {
    which
        .iter()
        .map(|(name, value)| format!("{name}={value}"))
        .collect::<Vec<_>>()
        .join(", ")
}

fn goal(tip: &Tip) -> String {
    match &tip.goal {
        Goal::Throughput => "throughput".to_owned(),
        Goal::Latency(label) => format!("{} latency", label.replace('_', ".")),
    }
}

/// What every run of the plan shares: the mode, the fixed flags, the parameters with one
/// value, and the broker.
fn held_fixed(plan: &Plan) -> String {
    let mode = match plan.mode {
        RunMode::Produce => "produce",
        RunMode::Consume => "consume (after a produce that fills the topic)",
        RunMode::EndToEnd => "end-to-end (produce and consume)",
    };
    let mut parts = vec![mode.to_owned()];
    parts.extend(
        plan.fixed
            .iter()
            .map(|(flag, value)| format!("`--{flag}={value}`")),
    );
    parts.extend(
        plan.client
            .iter()
            .filter(|axis| axis.values.len() == 1)
            .map(|axis| format!("`--{}={}`", axis.name, axis.values[0])),
    );
    parts.push(match &plan.broker {
        BrokerTarget::Managed { nodes: 1, .. } => "one broker".to_owned(),
        BrokerTarget::Managed { nodes, .. } => format!("a cluster of {nodes} nodes on this host"),
        BrokerTarget::External { bootstrap, .. } => format!("the broker at {bootstrap}"),
    });
    parts.extend(
        plan.broker_params
            .iter()
            .filter(|axis| axis.values.len() == 1)
            .map(|axis| format!("`{}={}`", axis.name, axis.values[0])),
    );
    parts.join(", ")
}

fn swept(plan: &Plan) -> String {
    plan::varied(plan)
        .iter()
        .map(|axis| format!("`{}` over {}", axis.name, axis.values.join(", ")))
        .collect::<Vec<_>>()
        .join("; ")
}

/// `path` as a link from the guide's directory, when it lies beneath it.
fn link(guide: &Path, path: &Path) -> String {
    let base = guide.parent().unwrap_or(Path::new(""));
    path.strip_prefix(base)
        .unwrap_or(path)
        .display()
        .to_string()
}

/// The plots a sweep wrote, PNG only (the SVGs beside them are the same figures).
fn plots(out: &Path) -> Vec<PathBuf> {
    let mut found: Vec<PathBuf> = std::fs::read_dir(out)
        .map(|entries| entries.flatten().map(|e| e.path()).collect())
        .unwrap_or_default();
    found.retain(|path| path.extension().is_some_and(|ext| ext == "png"));
    found.sort();
    found
}

/// The machine in one line, from /proc.
fn machine() -> String {
    let read = |path: &str| std::fs::read_to_string(path).unwrap_or_default();
    let cpuinfo = read("/proc/cpuinfo");
    let model = cpuinfo
        .lines()
        .find_map(|line| line.strip_prefix("model name"))
        .and_then(|rest| rest.split_once(':'))
        .map_or("an unknown CPU", |(_, model)| model.trim())
        .to_owned();
    let cpus = std::thread::available_parallelism().map_or(0, |n| n.get());
    let memory_gib = read("/proc/meminfo")
        .lines()
        .find_map(|line| line.strip_prefix("MemTotal:"))
        .and_then(|rest| {
            rest.trim()
                .trim_end_matches("kB")
                .trim()
                .parse::<f64>()
                .ok()
        })
        .map_or_else(
            || "?".to_owned(),
            |kib| format!("{:.0}", kib / 1024.0 / 1024.0),
        );
    let kernel = read("/proc/sys/kernel/osrelease");
    format!(
        "{model}, {cpus} CPUs, {memory_gib} GiB, Linux {}",
        kernel.trim()
    )
}

fn guide(args: &TuneArgs, sections: &[Section]) -> String {
    let mut md = String::from("# Kafka's tuning tips, measured on Sluice\n\n");
    // The runs that measured the figures (a --report only writes them out again): each command
    // once, with the time of its first and last plan.
    let mut commands: Vec<(String, String, String)> = Vec::new();
    for section in sections {
        let made = std::fs::read_to_string(section.out.join(MEASURED_BY)).unwrap_or_default();
        let Some((command, when)) = made.trim().rsplit_once(" at ") else {
            continue;
        };
        match commands.iter_mut().find(|(c, _, _)| c == command) {
            Some((_, _, last)) => *last = when.to_owned(),
            None => commands.push((command.to_owned(), when.to_owned(), when.to_owned())),
        }
    }
    let runs: Vec<String> = commands
        .iter()
        .map(|(command, first, last)| match first == last {
            true => format!("{command} at {first}"),
            false => format!("{command}, from {first} to {last}"),
        })
        .collect();
    let _ = writeln!(
        md,
        "Measured on {} by {}.\n",
        machine(),
        match runs.len() {
            0 => "an unknown command".to_owned(),
            _ => runs.join(" and "),
        }
    );
    if args.quick {
        md.push_str(
            "**A quick run: one short round of each tip's two combinations. It shows that the \
             plans work; its figures mean nothing.**\n\n",
        );
    }
    let _ = writeln!(
        md,
        "Each tip compares two settings of one plan, run side by side in every round. Its \
         effect is the advised setting's throughput over the baseline's, or the baseline's \
         latency over the advised one's, so above 1 the advice helped: the median of the \
         rounds, then the lowest and highest round. It holds when the median is at least \
         {:.0}% better and every round is better; the opposite holds when the same is true \
         the other way. Each plan below says why, and what it sweeps in place of a tip that \
         means something else on a thread-per-core broker. Re-run one plan with \
         `sluice-bench tune --only NAME`, or a single sweep with `sluice-bench sweep PLAN`.\n",
        CLEAR * 100.0
    );
    md.push_str("| Tip | Goal | Advised vs baseline | Effect | Here |\n|---|---|---|---|---|\n");
    for section in sections {
        for tip in &section.plan.tips {
            let effect = Effect::of(tip, &section.results);
            let _ = writeln!(
                md,
                "| [{}](#{}) | {} | {} vs {} | {} | {} |",
                tip.advice,
                section.stem,
                goal(tip),
                combination(&tip.advised),
                combination(&tip.baseline),
                effect.figure(),
                effect.verdict()
            );
        }
    }
    for section in sections {
        let plan = &section.plan;
        let _ = writeln!(md, "\n## {}\n", section.stem);
        let _ = writeln!(md, "Held fixed: {}.\n", held_fixed(plan));
        let _ = writeln!(md, "Swept: {}.\n", swept(plan));
        if let Ok(made) = std::fs::read_to_string(section.out.join(MEASURED_BY)) {
            let _ = writeln!(md, "Measured by {}.\n", made.trim());
        }
        for tip in &plan.tips {
            let effect = Effect::of(tip, &section.results);
            let _ = writeln!(
                md,
                "**{}** ({}): {}. {}\n",
                tip.advice,
                goal(tip),
                effect.brief(),
                tip.why
            );
        }
        md.push_str(&report::markdown(plan, &report::medians(&section.results)));
        md.push('\n');
        for png in plots(&section.out) {
            let name = png
                .file_stem()
                .map_or_else(String::new, |s| s.to_string_lossy().into_owned());
            let _ = writeln!(md, "![{name}]({})\n", link(&args.out, &png));
        }
    }
    md
}

#[cfg(test)]
mod tests {
    use super::*;

    fn plan() -> Plan {
        plan::parse(
            r#"
repeat = 3
[client]
"batch.size" = ["16KiB", "64KiB", "1MiB"]
[broker]
bootstrap = "h:1"
[[tip]]
advice = "bigger batches"
goal = "throughput"
baseline = { "batch.size" = "16KiB" }
advised = { "batch.size" = "1MiB" }
[[tip]]
advice = "smaller batches for latency"
goal = "latency"
baseline = { "batch.size" = "1MiB" }
advised = { "batch.size" = "16KiB" }
"#,
        )
        .unwrap()
    }

    /// Results with throughput `mb[i]` and p99 `p99[i]` for run i.
    fn results(plan: &Plan, mb: &[f64], p99_ms: &[f64]) -> Vec<RunResult> {
        plan::expand(plan)
            .into_iter()
            .zip(mb.iter().zip(p99_ms))
            .map(|(run, (mb, p99))| {
                RunResult::ok(
                    run,
                    vec![
                        ("payload_mb_per_s".to_owned(), mb.to_string()),
                        ("latency_p99_us".to_owned(), (p99 * 1000.0).to_string()),
                    ],
                )
            })
            .collect()
    }

    #[test]
    fn an_effect_pairs_each_rounds_combinations() {
        let plan = plan();
        // Rounds: (16KiB, 64KiB, 1MiB) x 3, the machine slowing down each round.
        let mb = [100.0, 150.0, 200.0, 50.0, 80.0, 110.0, 25.0, 30.0, 40.0];
        let p99 = [1.0, 1.0, 2.0, 1.0, 1.0, 4.0, 1.0, 1.0, 3.0];
        let results = results(&plan, &mb, &p99);
        let throughput = Effect::of(&plan.tips[0], &results);
        assert_eq!(throughput.gains, [2.0, 2.2, 1.6]);
        assert_eq!(throughput.median(), Some(2.0));
        assert_eq!(throughput.verdict(), "holds");
        assert_eq!(throughput.figure(), "×2.00 (1.60–2.20)");
        let latency = Effect::of(&plan.tips[1], &results);
        assert_eq!(latency.gains, [2.0, 4.0, 3.0]);
        assert_eq!(latency.verdict(), "holds");
    }

    #[test]
    fn verdicts_need_every_round_on_one_side() {
        let effect = |gains: &[f64]| Effect {
            gains: gains.to_vec(),
        };
        assert_eq!(effect(&[1.2, 1.3, 0.9]).verdict(), "no clear effect");
        assert_eq!(effect(&[1.02, 1.03, 1.01]).verdict(), "no clear effect");
        assert_eq!(effect(&[0.5, 0.7, 0.9]).verdict(), "the opposite holds");
        assert_eq!(effect(&[]).verdict(), "not measured: runs failed");
        assert_eq!(effect(&[]).figure(), "-");
        assert_eq!(effect(&[1.5]).figure(), "×1.50");
    }

    #[test]
    fn a_failed_round_drops_out_of_the_effect() {
        let plan = plan();
        let mut results = results(&plan, &[10.0; 9], &[1.0; 9]);
        results[5] = RunResult::failed(results[5].run.clone(), "gone".to_owned());
        assert_eq!(Effect::of(&plan.tips[0], &results).gains, [1.0, 1.0]);
    }

    #[test]
    fn quick_runs_only_what_the_tips_compare_briefly() {
        let args = TuneArgs {
            plans: PathBuf::new(),
            out: PathBuf::from("/x/bench/TUNING.md"),
            results: PathBuf::new(),
            only: Vec::new(),
            quick: true,
            report: false,
            sluice: None,
            data_dir: None,
        };
        let plan = adapt(plan(), &args, "t");
        assert_eq!(plan.repeat, 1);
        assert_eq!(
            plan.fixed,
            [
                ("duration".to_owned(), "300ms".to_owned()),
                ("warmup".to_owned(), "0s".to_owned())
            ]
        );
        let quick = select(&plan, true);
        let chosen: Vec<&str> = quick.iter().map(|run| run.client[0].1.as_str()).collect();
        assert_eq!(chosen, ["16KiB", "1MiB"]);
        assert_eq!(select(&plan, false).len(), 3);
        assert_eq!(
            link(&args.out, Path::new("/x/bench/results/tuning/a.png")),
            "results/tuning/a.png"
        );
    }
}
