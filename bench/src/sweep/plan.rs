//! A sweep plan: a TOML file naming the mode, the fixed knobs, and the client and broker
//! parameters to vary, and its expansion into one run per combination.
//!
//! ```toml
//! name = "batching"
//! mode = "produce"                 # or "consume", or "end-to-end"
//! [fixed]                          # sluice-bench flags for every run
//! partitions = 4
//! duration = "3s"
//! [client]                         # each list is one axis of the matrix
//! "batch.size" = ["16KiB", "1MiB"] # Kafka's names or the flags' (batch-size)
//! acks = ["1", "all"]
//! [broker]                         # a broker the sweep starts and restarts ...
//! command = ["target/release/sluice", "serve"]
//! data-dir = "/tmp/sweep-data"
//! listener = "127.0.0.1:19392"
//! # nodes = 3                      # a cluster on this host instead of one broker
//! # fresh = true                   # a new broker, with empty data, for every run
//! # bootstrap = "host:9092"        # ... or one it does not manage
//! [broker.params]                  # applied with --override, or IncrementalAlterConfigs
//! "log.segment.bytes" = [1073741824, 16777216]
//! [broker.builds]                  # optional: builds of the broker to compare, by name
//! a-old = "/tmp/sluice-6c161c1"    # (in the order of the names); each replaces command[0],
//! b-new = "target/release/sluice"  # and `build` becomes the first broker axis
//! ```
//!
//! In `consume` mode each run first fills its topic with a produce child (the flags that
//! `sluice-bench produce` takes), then reads it from the start with a consume child (the
//! flags `sluice-bench consume` takes, less the fill's --messages, --duration and --warmup);
//! the run's figures are the consumer's, and the fill's throughput is kept as `fill_*`.
//!
//! `repeat = N` runs the whole matrix N times, round after round, so that a drift in the
//! machine's speed touches every combination alike; tables and plots then show each
//! combination's median. A `[[tip]]` names a piece of tuning advice that the plan tests:
//! which combination follows it, which one it is measured against, and whether it is about
//! throughput or latency (see `sluice-bench tune`).

use std::path::PathBuf;

use toml::{Table, Value};

/// Bounds that keep a typo from starting a week of runs.
pub const RUNS_MAX: usize = 10_000;
pub const AXES_MAX: usize = 16;
/// The most rounds a plan may repeat its matrix.
pub const REPEAT_MAX: usize = 9;
/// The most nodes a managed cluster may have. Node i's controller listens at the client
/// port + CONTROLLER_PORT_OFFSET + i, so this keeps the two port ranges apart.
pub const NODES_MAX: usize = 32;
pub const CONTROLLER_PORT_OFFSET: u16 = 100;

const _: () = assert!(NODES_MAX <= CONTROLLER_PORT_OFFSET as usize);

#[derive(Debug, thiserror::Error, PartialEq)]
pub enum PlanError {
    #[error("the plan is not valid TOML: {0}")]
    Toml(String),
    #[error("{0} must be {1}")]
    Type(String, &'static str),
    #[error("unknown key {0:?} in the plan")]
    UnknownKey(String),
    #[error("mode {0:?} is not produce, consume or end-to-end")]
    Mode(String),
    #[error("{0} sets the flag --{1}, which the sweep sets itself")]
    Reserved(String, String),
    #[error("[broker] needs either command (with data-dir and listener) or bootstrap")]
    Broker,
    #[error("axis {0} has no values")]
    EmptyAxis(String),
    #[error(
        "broker.nodes must be 1 to {NODES_MAX}, and with more than one, broker.listener must \
         be host:port with room for the controller ports above it: {0}"
    )]
    Nodes(String),
    #[error(
        "the plan expands to {0} runs or more axes than allowed ({RUNS_MAX} runs, {AXES_MAX} axes)"
    )]
    TooLarge(usize),
    #[error("repeat must be a whole number from 1 to {REPEAT_MAX}")]
    Repeat,
    #[error("tip {0:?}: {1}")]
    Tip(String, String),
    #[error("[broker.builds] {0}")]
    Builds(String),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RunMode {
    Produce,
    /// A produce child fills the topic, then a consume child reads it; figures are the
    /// consumer's.
    Consume,
    EndToEnd,
}

impl RunMode {
    pub fn command(self) -> &'static str {
        match self {
            RunMode::Produce => "produce",
            RunMode::Consume => "consume",
            RunMode::EndToEnd => "end-to-end",
        }
    }
}

/// The broker axis that picks a build from `[broker.builds]`; not passed as an override.
pub const BUILD_AXIS: &str = "build";

/// One parameter and the values it takes, in the plan's order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Axis {
    pub name: String,
    pub values: Vec<String>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BrokerTarget {
    /// The sweep starts the broker: `command`, plus `--override` for the listener, a fresh
    /// `log.dirs` under `data_dir`, and each broker parameter. With `nodes` above 1, it starts
    /// that many nodes on this host as one cluster, node i on the listener's port + i, and
    /// clients bootstrap from node 0.
    Managed {
        command: Vec<String>,
        data_dir: PathBuf,
        listener: String,
        nodes: usize,
        /// A new broker with empty data for every run, not only when the parameters change,
        /// so that no run inherits the page cache and disk writeback of the runs before it.
        fresh: bool,
    },
    /// A broker already running; parameters go to it by IncrementalAlterConfigs on the
    /// broker resource `broker_id`.
    External {
        bootstrap: String,
        broker_id: String,
    },
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Plan {
    pub name: String,
    pub mode: RunMode,
    pub output: Option<PathBuf>,
    /// Flags for every run, as (flag without dashes, value).
    pub fixed: Vec<(String, String)>,
    pub client: Vec<Axis>,
    pub broker: BrokerTarget,
    pub broker_params: Vec<Axis>,
    /// Builds of a managed broker by name, each the program that replaces the command's
    /// first word when the run's `build` parameter names it.
    pub builds: Vec<(String, String)>,
    /// How many times the matrix runs, round after round.
    pub repeat: usize,
    pub tips: Vec<Tip>,
}

/// What a tip is about: more throughput, or lower latency at a percentile.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Goal {
    Throughput,
    /// The label of the percentile, as the summary names it (p50, p99, p99_9 ...).
    Latency(String),
}

/// A piece of tuning advice and the two combinations that test it: the one that follows the
/// advice, and the one it is compared with. Each names a value for every varied axis.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Tip {
    pub advice: String,
    pub goal: Goal,
    pub baseline: Vec<(String, String)>,
    pub advised: Vec<(String, String)>,
    /// What the result means here: why the advice does or does not hold on this broker.
    pub why: String,
}

/// One combination: the broker's parameters and the client's flags.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Run {
    pub index: usize,
    /// Which repetition of the matrix this run belongs to, from 0.
    pub round: usize,
    pub broker: Vec<(String, String)>,
    pub client: Vec<(String, String)>,
}

/// Flags every run gets from the sweep itself.
const RESERVED_FLAGS: [&str; 5] = ["bootstrap", "topic", "json", "csv", "interval-ms"];

/// A client parameter as a sluice-bench flag: Kafka's dotted names become dashed ones
/// (`batch.size` -> `batch-size`), and `compression.type` is `compression`.
pub fn flag_name(name: &str) -> String {
    let dashed = name.trim_start_matches("--").replace(['.', '_'], "-");
    match dashed.as_str() {
        "compression-type" => "compression".to_owned(),
        _ => dashed,
    }
}

pub fn parse(text: &str) -> Result<Plan, PlanError> {
    let table: Table = text
        .parse()
        .map_err(|e: toml::de::Error| PlanError::Toml(e.to_string()))?;
    for key in table.keys() {
        let known = [
            "name", "mode", "output", "fixed", "client", "broker", "repeat", "tip",
        ];
        if !known.contains(&key.as_str()) {
            return Err(PlanError::UnknownKey(key.clone()));
        }
    }
    let name = match table.get("name") {
        Some(value) => string(value, "name")?,
        None => "sweep".to_owned(),
    };
    let mode = match table.get("mode").map(|v| string(v, "mode")).transpose()? {
        None => RunMode::Produce,
        Some(mode) if mode == "produce" => RunMode::Produce,
        Some(mode) if mode == "consume" => RunMode::Consume,
        Some(mode) if mode == "end-to-end" => RunMode::EndToEnd,
        Some(other) => return Err(PlanError::Mode(other)),
    };
    let output = table
        .get("output")
        .map(|v| string(v, "output").map(PathBuf::from))
        .transpose()?;
    let fixed = match table.get("fixed") {
        None => Vec::new(),
        Some(value) => sub_table(value, "fixed")?
            .iter()
            .map(|(key, value)| Ok((flag_name(key), scalar(value, key)?)))
            .collect::<Result<_, PlanError>>()?,
    };
    let client = match table.get("client") {
        None => Vec::new(),
        Some(value) => axes(sub_table(value, "client")?, flag_name)?,
    };
    for (flag, origin) in fixed
        .iter()
        .map(|(flag, _)| (flag, "[fixed]"))
        .chain(client.iter().map(|axis| (&axis.name, "[client]")))
    {
        if RESERVED_FLAGS.contains(&flag.as_str()) {
            return Err(PlanError::Reserved(origin.to_owned(), flag.clone()));
        }
    }
    let (broker, mut broker_params, builds) = match table.get("broker") {
        None => (
            BrokerTarget::External {
                bootstrap: "127.0.0.1:9092".to_owned(),
                broker_id: "0".to_owned(),
            },
            Vec::new(),
            Vec::new(),
        ),
        Some(value) => broker(sub_table(value, "broker")?)?,
    };
    if !builds.is_empty() {
        if broker_params.iter().any(|axis| axis.name == BUILD_AXIS) {
            return Err(PlanError::Builds(format!(
                "and a broker parameter both name {BUILD_AXIS:?}"
            )));
        }
        let names = builds.iter().map(|(name, _)| name.clone()).collect();
        broker_params.insert(
            0,
            Axis {
                name: BUILD_AXIS.to_owned(),
                values: names,
            },
        );
    }
    let repeat = match table.get("repeat") {
        None => 1,
        Some(value) => value
            .as_integer()
            .and_then(|n| usize::try_from(n).ok())
            .filter(|n| (1..=REPEAT_MAX).contains(n))
            .ok_or(PlanError::Repeat)?,
    };
    let mut plan = Plan {
        name,
        mode,
        output,
        fixed,
        client,
        broker,
        broker_params,
        builds,
        repeat,
        tips: Vec::new(),
    };
    let axes = plan.client.len() + plan.broker_params.len();
    let runs = run_count(&plan).saturating_mul(repeat);
    if axes > AXES_MAX || runs > RUNS_MAX {
        return Err(PlanError::TooLarge(runs));
    }
    if let Some(value) = table.get("tip") {
        let tables = value
            .as_array()
            .ok_or_else(|| PlanError::Type("tip".to_owned(), "an array of tables, [[tip]]"))?;
        for value in tables {
            let tip = tip(&plan, sub_table(value, "tip")?)?;
            plan.tips.push(tip);
        }
    }
    Ok(plan)
}

fn tip(plan: &Plan, table: &Table) -> Result<Tip, PlanError> {
    for key in table.keys() {
        let known = ["advice", "goal", "percentile", "baseline", "advised", "why"];
        if !known.contains(&key.as_str()) {
            return Err(PlanError::UnknownKey(format!("tip.{key}")));
        }
    }
    let advice = match table.get("advice") {
        Some(value) => string(value, "tip.advice")?,
        None => return Err(PlanError::Type("tip.advice".to_owned(), "a string")),
    };
    let fail = |why: &str| PlanError::Tip(advice.clone(), why.to_owned());
    let percentile = table
        .get("percentile")
        .map(|v| string(v, "tip.percentile"))
        .transpose()?;
    let goal = match table
        .get("goal")
        .map(|v| string(v, "tip.goal"))
        .transpose()?
    {
        Some(goal) if goal == "throughput" && percentile.is_none() => Goal::Throughput,
        Some(goal) if goal == "latency" => {
            let label = percentile
                .unwrap_or_else(|| "p99".to_owned())
                .replace('.', "_");
            let known = ["p50", "p90", "p99", "p99_9", "p99_99", "max"];
            if !known.contains(&label.as_str()) {
                return Err(fail(
                    "percentile must be one of p50, p90, p99, p99.9, p99.99, max",
                ));
            }
            Goal::Latency(label)
        }
        _ => {
            return Err(fail(
                "goal must be \"throughput\", or \"latency\" with an optional percentile",
            ))
        }
    };
    let combination = |key: &str| -> Result<Vec<(String, String)>, PlanError> {
        let given = table
            .get(key)
            .and_then(Value::as_table)
            .ok_or_else(|| fail(&format!("{key} must be a table of parameter = value")))?;
        let mut chosen = Vec::new();
        for axis in varied(plan) {
            let value = given
                .iter()
                .find(|(name, _)| name.as_str() == axis.name || flag_name(name) == axis.name)
                .map(|(name, value)| scalar(value, name))
                .transpose()?
                .ok_or_else(|| fail(&format!("{key} names no value for {}", axis.name)))?;
            if !axis.values.contains(&value) {
                return Err(fail(&format!(
                    "{key}: {value:?} is not one of the values of {}",
                    axis.name
                )));
            }
            chosen.push((axis.name.clone(), value));
        }
        if given.len() != chosen.len() {
            return Err(fail(&format!("{key} names a parameter that is not varied")));
        }
        Ok(chosen)
    };
    let baseline = combination("baseline")?;
    let advised = combination("advised")?;
    if baseline == advised {
        return Err(fail("baseline and advised are the same combination"));
    }
    let why = table
        .get("why")
        .map(|v| string(v, "tip.why"))
        .transpose()?
        .unwrap_or_default();
    Ok(Tip {
        advice,
        goal,
        baseline,
        advised,
        why: why.trim().to_owned(),
    })
}

impl Tip {
    /// Whether `run` is the combination `which` (the tip's baseline or advised one) names.
    pub fn matches(which: &[(String, String)], run: &Run) -> bool {
        which.iter().all(|(name, value)| {
            run.broker
                .iter()
                .chain(&run.client)
                .any(|(k, v)| k == name && v == value)
        })
    }
}

/// The broker target, its parameter axes, and the builds to compare.
type BrokerSection = (BrokerTarget, Vec<Axis>, Vec<(String, String)>);

fn broker(table: &Table) -> Result<BrokerSection, PlanError> {
    for key in table.keys() {
        let known = [
            "command",
            "data-dir",
            "listener",
            "nodes",
            "fresh",
            "bootstrap",
            "broker-id",
            "params",
            "builds",
        ];
        if !known.contains(&key.as_str()) {
            return Err(PlanError::UnknownKey(format!("broker.{key}")));
        }
    }
    let get = |key: &str| {
        table
            .get(key)
            .map(|v| string(v, &format!("broker.{key}")))
            .transpose()
    };
    let target = match (table.get("command"), get("bootstrap")?) {
        (Some(command), None) => {
            let command = command
                .as_array()
                .filter(|parts| !parts.is_empty())
                .ok_or_else(|| PlanError::Type("broker.command".to_owned(), "a list of strings"))?
                .iter()
                .map(|part| string(part, "broker.command"))
                .collect::<Result<Vec<_>, _>>()?;
            let (Some(data_dir), Some(listener)) = (get("data-dir")?, get("listener")?) else {
                return Err(PlanError::Broker);
            };
            let nodes = nodes(table.get("nodes"), &listener)?;
            let fresh = match table.get("fresh") {
                None => false,
                Some(value) => value
                    .as_bool()
                    .ok_or_else(|| PlanError::Type("broker.fresh".to_owned(), "true or false"))?,
            };
            BrokerTarget::Managed {
                command,
                data_dir: PathBuf::from(data_dir),
                listener,
                nodes,
                fresh,
            }
        }
        (None, Some(_)) if table.contains_key("nodes") || table.contains_key("fresh") => {
            return Err(PlanError::Nodes(
                "a broker given by bootstrap is not started by the sweep".to_owned(),
            ))
        }
        (None, Some(bootstrap)) => BrokerTarget::External {
            bootstrap,
            broker_id: get("broker-id")?.unwrap_or_else(|| "0".to_owned()),
        },
        _ => return Err(PlanError::Broker),
    };
    let params = match table.get("params") {
        None => Vec::new(),
        Some(value) => axes(sub_table(value, "broker.params")?, str::to_owned)?,
    };
    let builds = match table.get("builds") {
        None => Vec::new(),
        Some(_) if matches!(target, BrokerTarget::External { .. }) => {
            return Err(PlanError::Builds(
                "needs a broker the sweep starts (command), not bootstrap".to_owned(),
            ))
        }
        Some(value) => sub_table(value, "broker.builds")?
            .iter()
            .map(|(name, program)| Ok((name.clone(), string(program, "broker.builds")?)))
            .collect::<Result<Vec<_>, PlanError>>()?,
    };
    Ok((target, params, builds))
}

/// `[broker] nodes`: how many nodes a managed cluster has, 1 when absent.
fn nodes(value: Option<&Value>, listener: &str) -> Result<usize, PlanError> {
    let Some(value) = value else {
        return Ok(1);
    };
    let nodes = value
        .as_integer()
        .and_then(|n| usize::try_from(n).ok())
        .filter(|n| (1..=NODES_MAX).contains(n))
        .ok_or_else(|| {
            let given = value
                .as_integer()
                .map_or_else(|| "not a whole number".to_owned(), |n| n.to_string());
            PlanError::Nodes(format!("nodes is {given}"))
        })?;
    if nodes > 1 {
        let fits = split_listener(listener).is_some_and(|(_, port)| {
            let highest = u32::from(port) + u32::from(CONTROLLER_PORT_OFFSET) + nodes as u32 - 1;
            port > 0 && highest <= u32::from(u16::MAX)
        });
        if !fits {
            return Err(PlanError::Nodes(format!("listener = {listener:?}")));
        }
    }
    Ok(nodes)
}

/// A listener `host:port` split in two; the host may be a bracketed IPv6 address.
pub fn split_listener(listener: &str) -> Option<(&str, u16)> {
    let (host, port) = listener.rsplit_once(':')?;
    let port = port.parse().ok()?;
    (!host.is_empty()).then_some((host, port))
}

fn axes(table: &Table, name: impl Fn(&str) -> String) -> Result<Vec<Axis>, PlanError> {
    table
        .iter()
        .map(|(key, value)| {
            let values = match value {
                Value::Array(values) => values
                    .iter()
                    .map(|v| scalar(v, key))
                    .collect::<Result<Vec<_>, _>>()?,
                single => vec![scalar(single, key)?],
            };
            if values.is_empty() {
                return Err(PlanError::EmptyAxis(key.clone()));
            }
            Ok(Axis {
                name: name(key),
                values,
            })
        })
        .collect()
}

fn sub_table<'a>(value: &'a Value, name: &str) -> Result<&'a Table, PlanError> {
    value
        .as_table()
        .ok_or_else(|| PlanError::Type(name.to_owned(), "a table"))
}

fn string(value: &Value, name: &str) -> Result<String, PlanError> {
    value
        .as_str()
        .map(str::to_owned)
        .ok_or_else(|| PlanError::Type(name.to_owned(), "a string"))
}

/// A value as the command line takes it.
fn scalar(value: &Value, name: &str) -> Result<String, PlanError> {
    match value {
        Value::String(text) => Ok(text.clone()),
        Value::Integer(n) => Ok(n.to_string()),
        Value::Float(x) => Ok(x.to_string()),
        Value::Boolean(b) => Ok(b.to_string()),
        _ => Err(PlanError::Type(
            name.to_owned(),
            "a string, number or boolean (or a list of them)",
        )),
    }
}

fn run_count(plan: &Plan) -> usize {
    plan.broker_params
        .iter()
        .chain(&plan.client)
        .map(|axis| axis.values.len())
        .try_fold(1usize, |runs, values| runs.checked_mul(values))
        .unwrap_or(usize::MAX)
}

/// Every combination, once per round: broker parameters outermost so a managed broker
/// restarts only when they change; within them, the last client axis varies fastest. Every
/// other round takes the broker combinations in reverse, so that no build or broker setting
/// always runs first, or always right after the same one.
pub fn expand(plan: &Plan) -> Vec<Run> {
    let broker = product(&plan.broker_params);
    let client = product(&plan.client);
    let mut runs = Vec::with_capacity(broker.len() * client.len() * plan.repeat);
    for round in 0..plan.repeat {
        let order: Vec<&Vec<(String, String)>> = if round % 2 == 1 {
            broker.iter().rev().collect()
        } else {
            broker.iter().collect()
        };
        for broker in order {
            for client in &client {
                runs.push(Run {
                    index: runs.len(),
                    round,
                    broker: broker.clone(),
                    client: client.clone(),
                });
            }
        }
    }
    runs
}

fn product(axes: &[Axis]) -> Vec<Vec<(String, String)>> {
    let mut combinations = vec![Vec::new()];
    for axis in axes {
        combinations = combinations
            .into_iter()
            .flat_map(|prefix: Vec<(String, String)>| {
                axis.values.iter().map(move |value| {
                    let mut next = prefix.clone();
                    next.push((axis.name.clone(), value.clone()));
                    next
                })
            })
            .collect();
    }
    combinations
}

/// The axes with more than one value: what the tables and plots compare.
pub fn varied(plan: &Plan) -> Vec<&Axis> {
    plan.broker_params
        .iter()
        .chain(&plan.client)
        .filter(|axis| axis.values.len() > 1)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    const EXAMPLE: &str = r#"
        name = "batching"
        mode = "end-to-end"
        output = "results/batching"
        [fixed]
        partitions = 4
        duration = "3s"
        [client]
        "batch.size" = ["16KiB", "1MiB"]
        linger_ms = [0, 5, 20]
        acks = "1"
        [broker]
        command = ["target/release/sluice", "serve"]
        data-dir = "/tmp/sweep"
        listener = "127.0.0.1:19392"
        [broker.params]
        "log.segment.bytes" = [1073741824, 16777216]
    "#;

    fn check_error(text: &str, expected: PlanError) {
        assert_eq!(parse(text), Err(expected), "{text}");
    }

    #[test]
    fn parses_every_section() {
        let plan = parse(EXAMPLE).unwrap();
        assert_eq!(plan.name, "batching");
        assert_eq!(plan.mode, RunMode::EndToEnd);
        assert_eq!(plan.output, Some(PathBuf::from("results/batching")));
        assert_eq!(
            plan.fixed,
            [
                ("duration".to_owned(), "3s".to_owned()),
                ("partitions".to_owned(), "4".to_owned())
            ]
        );
        let names: Vec<&str> = plan.client.iter().map(|a| a.name.as_str()).collect();
        assert_eq!(names, ["acks", "batch-size", "linger-ms"]);
        assert_eq!(plan.client[2].values, ["0", "5", "20"]);
        assert_eq!(
            plan.broker,
            BrokerTarget::Managed {
                command: vec!["target/release/sluice".to_owned(), "serve".to_owned()],
                data_dir: PathBuf::from("/tmp/sweep"),
                listener: "127.0.0.1:19392".to_owned(),
                nodes: 1,
                fresh: false,
            }
        );
        assert_eq!(plan.broker_params[0].name, "log.segment.bytes");
        let varied: Vec<&str> = varied(&plan).iter().map(|a| a.name.as_str()).collect();
        assert_eq!(varied, ["log.segment.bytes", "batch-size", "linger-ms"]);
    }

    #[test]
    fn builds_become_the_first_broker_axis_and_consume_is_a_mode() {
        let plan = parse(
            "mode = \"consume\"\n[client]\npartitions = [1, 16]\n\
             [broker]\ncommand = [\"sluice\", \"serve\"]\ndata-dir = \"/tmp/b\"\n\
             listener = \"127.0.0.1:19500\"\n[broker.params]\n\"log.segment.bytes\" = 1\n\
             [broker.builds]\nold = \"/tmp/old/sluice\"\nnew = \"target/release/sluice\"",
        )
        .unwrap();
        assert_eq!(plan.mode, RunMode::Consume);
        assert_eq!(plan.broker_params[0].name, BUILD_AXIS);
        // TOML tables are read in the order of their keys.
        assert_eq!(plan.broker_params[0].values, ["new", "old"]);
        assert_eq!(
            plan.builds[1],
            ("old".to_owned(), "/tmp/old/sluice".to_owned())
        );
        let runs = expand(&plan);
        assert_eq!(runs.len(), 4);
        assert_eq!(runs[2].broker[0], ("build".to_owned(), "old".to_owned()));
        // A second round takes the builds the other way round.
        let mut twice = plan.clone();
        twice.repeat = 2;
        let expanded = expand(&twice);
        let builds: Vec<&str> = expanded
            .iter()
            .map(|run| run.broker[0].1.as_str())
            .collect();
        assert_eq!(
            builds,
            ["new", "new", "old", "old", "old", "old", "new", "new"]
        );
        let external = "[broker]\nbootstrap = \"h:1\"\n[broker.builds]\na = \"x\"";
        assert!(matches!(parse(external), Err(PlanError::Builds(_))));
        let twice = "[broker]\ncommand = [\"s\"]\ndata-dir = \"/tmp/b\"\n\
                     listener = \"127.0.0.1:1\"\n[broker.params]\nbuild = [1, 2]\n\
                     [broker.builds]\na = \"x\"";
        assert!(matches!(parse(twice), Err(PlanError::Builds(_))));
    }

    #[test]
    fn an_external_broker_takes_a_bootstrap() {
        let plan = parse(
            "[broker]\nbootstrap = \"10.0.0.1:9092\"\n[broker.params]\n\"num.replica.fetchers\" = [1, 4]",
        )
        .unwrap();
        assert_eq!(
            plan.broker,
            BrokerTarget::External {
                bootstrap: "10.0.0.1:9092".to_owned(),
                broker_id: "0".to_owned()
            }
        );
        assert_eq!(plan.mode, RunMode::Produce);
        assert_eq!(expand(&plan).len(), 2);
    }

    #[test]
    fn rejects_bad_plans() {
        check_error("mode = \"replay\"", PlanError::Mode("replay".to_owned()));
        check_error("colour = 1", PlanError::UnknownKey("colour".to_owned()));
        check_error(
            "[client]\ntopic = [\"a\", \"b\"]",
            PlanError::Reserved("[client]".to_owned(), "topic".to_owned()),
        );
        check_error(
            "[client]\nacks = []",
            PlanError::EmptyAxis("acks".to_owned()),
        );
        check_error("[broker]\ncommand = [\"sluice\"]", PlanError::Broker);
        check_error(
            "[broker]\ncommand = [\"s\"]\nbootstrap = \"h:1\"\ndata-dir = \"d\"\nlistener = \"l\"",
            PlanError::Broker,
        );
        check_error(
            "[client]\nacks = [{ a = 1 }]",
            PlanError::Type(
                "acks".to_owned(),
                "a string, number or boolean (or a list of them)",
            ),
        );
        let huge: String = (0..5)
            .map(|i| format!("a{i} = [{}]\n", ["1"; 10].join(",")))
            .collect();
        check_error(&format!("[client]\n{huge}"), PlanError::TooLarge(100_000));
        assert!(matches!(parse("name = "), Err(PlanError::Toml(_))));
    }

    #[test]
    fn expands_the_whole_matrix_broker_outermost() {
        let plan = parse(EXAMPLE).unwrap();
        let runs = expand(&plan);
        assert_eq!(runs.len(), 2 * 2 * 3);
        assert!(runs.iter().enumerate().all(|(i, run)| run.index == i));
        // The broker changes once, halfway.
        let segment = |run: &Run| run.broker[0].1.clone();
        assert!(runs[..6].iter().all(|r| segment(r) == "1073741824"));
        assert!(runs[6..].iter().all(|r| segment(r) == "16777216"));
        // The last axis varies fastest.
        let client = |run: &Run| {
            run.client
                .iter()
                .map(|(k, v)| format!("{k}={v}"))
                .collect::<Vec<_>>()
                .join(" ")
        };
        assert_eq!(client(&runs[0]), "acks=1 batch-size=16KiB linger-ms=0");
        assert_eq!(client(&runs[1]), "acks=1 batch-size=16KiB linger-ms=5");
        assert_eq!(client(&runs[3]), "acks=1 batch-size=1MiB linger-ms=0");
        // Every combination appears once.
        let mut seen: Vec<String> = runs
            .iter()
            .map(|r| format!("{} {}", segment(r), client(r)))
            .collect();
        seen.sort();
        seen.dedup();
        assert_eq!(seen.len(), runs.len());
    }

    #[test]
    fn an_empty_plan_is_one_run() {
        let plan = parse("").unwrap();
        assert_eq!(expand(&plan).len(), 1);
        assert!(varied(&plan).is_empty());
        assert_eq!(flag_name("compression.type"), "compression");
        assert_eq!(flag_name("fetch.max.wait.ms"), "fetch-max-wait-ms");
    }

    #[test]
    fn a_managed_broker_may_be_a_cluster() {
        let plan = |broker: &str| {
            parse(&format!(
                "[broker]\ncommand = [\"sluice\", \"serve\"]\ndata-dir = \"/tmp/c\"\n{broker}"
            ))
        };
        let nodes = |broker: &str| match plan(broker) {
            Ok(Plan {
                broker: BrokerTarget::Managed { nodes, .. },
                ..
            }) => Ok(nodes),
            Ok(other) => panic!("not managed: {other:?}"),
            Err(error) => Err(error),
        };
        assert_eq!(nodes("listener = \"127.0.0.1:19500\""), Ok(1));
        assert_eq!(nodes("listener = \"127.0.0.1:19500\"\nnodes = 3"), Ok(3));
        assert_eq!(nodes("listener = \"localhost:19500\"\nnodes = 1"), Ok(1));
        for bad in [
            "listener = \"127.0.0.1:19500\"\nnodes = 0",
            "listener = \"127.0.0.1:19500\"\nnodes = 33",
            "listener = \"127.0.0.1:19500\"\nnodes = \"3\"",
            "listener = \"127.0.0.1:65500\"\nnodes = 3",
            "listener = \"127.0.0.1\"\nnodes = 3",
            "listener = \"127.0.0.1:0\"\nnodes = 2",
        ] {
            assert!(
                matches!(nodes(bad), Err(PlanError::Nodes(_))),
                "{bad} should not parse"
            );
        }
        check_error(
            "[broker]\nbootstrap = \"h:1\"\nnodes = 3",
            PlanError::Nodes("a broker given by bootstrap is not started by the sweep".to_owned()),
        );
        assert_eq!(split_listener("[::1]:9092"), Some(("[::1]", 9092)));
        assert_eq!(split_listener(":9092"), None);
    }

    #[test]
    fn repeats_round_after_round() {
        let plan = parse("repeat = 3\n[client]\nacks = [\"1\", \"all\"]").unwrap();
        let runs = expand(&plan);
        let seen: Vec<(usize, usize, &str)> = runs
            .iter()
            .map(|r| (r.index, r.round, r.client[0].1.as_str()))
            .collect();
        assert_eq!(
            seen,
            [
                (0, 0, "1"),
                (1, 0, "all"),
                (2, 1, "1"),
                (3, 1, "all"),
                (4, 2, "1"),
                (5, 2, "all")
            ]
        );
        check_error("repeat = 0", PlanError::Repeat);
        check_error("repeat = 10", PlanError::Repeat);
        check_error("repeat = \"3\"", PlanError::Repeat);
    }

    const TIPPED: &str = r#"
        [client]
        "batch.size" = ["16KiB", "1MiB"]
        acks = "1"
        [broker]
        bootstrap = "h:1"
        [broker.params]
        "num.replica.fetchers" = [1, 2]
    "#;

    #[test]
    fn a_tip_names_one_combination_on_each_side() {
        let plan = parse(&format!(
            "{TIPPED}\n[[tip]]\nadvice = \"bigger batches\"\ngoal = \"throughput\"\n\
             baseline = {{ \"batch.size\" = \"16KiB\", \"num.replica.fetchers\" = 1 }}\n\
             advised = {{ batch-size = \"1MiB\", \"num.replica.fetchers\" = 1 }}\n\
             why = \" fewer requests \"\n\
             [[tip]]\nadvice = \"fetchers\"\ngoal = \"latency\"\npercentile = \"p99.9\"\n\
             baseline = {{ \"batch.size\" = \"16KiB\", \"num.replica.fetchers\" = 1 }}\n\
             advised = {{ \"batch.size\" = \"16KiB\", \"num.replica.fetchers\" = 2 }}\n"
        ))
        .unwrap();
        assert_eq!(plan.tips.len(), 2);
        let tip = &plan.tips[0];
        assert_eq!(tip.goal, Goal::Throughput);
        assert_eq!(tip.why, "fewer requests");
        assert_eq!(
            tip.advised,
            [
                ("num.replica.fetchers".to_owned(), "1".to_owned()),
                ("batch-size".to_owned(), "1MiB".to_owned())
            ]
        );
        assert_eq!(plan.tips[1].goal, Goal::Latency("p99_9".to_owned()));
        let runs = expand(&plan);
        let advised: Vec<usize> = runs
            .iter()
            .filter(|run| Tip::matches(&tip.advised, run))
            .map(|run| run.index)
            .collect();
        assert_eq!(advised, [1]);
    }

    #[test]
    fn rejects_tips_that_do_not_pin_a_combination() {
        let tip = |body: &str| {
            parse(&format!("{TIPPED}\n[[tip]]\nadvice = \"a\"\n{body}")).map(|plan| plan.tips.len())
        };
        let both = "baseline = { \"batch.size\" = \"16KiB\", \"num.replica.fetchers\" = 1 }\n\
                    advised = { \"batch.size\" = \"1MiB\", \"num.replica.fetchers\" = 1 }";
        assert_eq!(tip(&format!("goal = \"throughput\"\n{both}")), Ok(1));
        for bad in [
            format!("goal = \"speed\"\n{both}"),
            format!("goal = \"throughput\"\npercentile = \"p99\"\n{both}"),
            format!("goal = \"latency\"\npercentile = \"p42\"\n{both}"),
            "goal = \"throughput\"\nbaseline = { \"batch.size\" = \"16KiB\" }\n\
             advised = { \"batch.size\" = \"1MiB\" }"
                .to_owned(),
            "goal = \"throughput\"\n\
             baseline = { \"batch.size\" = \"2KiB\", \"num.replica.fetchers\" = 1 }\n\
             advised = { \"batch.size\" = \"1MiB\", \"num.replica.fetchers\" = 1 }"
                .to_owned(),
            "goal = \"throughput\"\n\
             baseline = { \"batch.size\" = \"1MiB\", \"num.replica.fetchers\" = 1 }\n\
             advised = { \"batch.size\" = \"1MiB\", \"num.replica.fetchers\" = 1 }"
                .to_owned(),
            format!("goal = \"throughput\"\n{both}\nacks = \"1\""),
        ] {
            assert!(
                matches!(
                    tip(&bad),
                    Err(PlanError::Tip(..) | PlanError::UnknownKey(_))
                ),
                "{bad} should not parse: {:?}",
                tip(&bad)
            );
        }
    }
}
