//! The operator subcommands of `sluice` (topic, cluster, config, group, leader-election,
//! produce, consume), in the manner of kafka-topics, kafka-configs, kafka-consumer-groups and
//! kcat. They reach a cluster through the Kafka protocol alone, with sluice-net's client, so
//! they work against any Kafka-compatible broker; of the library they use only its tables of
//! Kafka's API and error names.

mod cluster;
mod config;
mod election;
mod error;
mod group;
mod offsets;
mod output;
mod records;
mod session;
mod topic;

use std::process::ExitCode;
use std::time::Duration;

use clap::{Args, Subcommand};

use error::CliError;
use output::Printed;

/// The operator subcommands, flattened into `sluice`'s own.
#[derive(Subcommand)]
pub enum Admin {
    /// List, describe, create and delete topics, and change a topic's configs.
    Topic(topic::TopicCommand),
    /// The brokers, the controller, the quorum and partition health of a cluster.
    Cluster(cluster::ClusterCommand),
    /// Describe and change broker, cluster-default and topic configs.
    Config(config::ConfigCommand),
    /// List, describe and delete consumer groups, and reset their committed offsets.
    Group(group::GroupCommand),
    /// Move partition leadership back to the preferred replica, or to any live one.
    LeaderElection(election::ElectionCommand),
    /// Produce the lines of stdin to a topic, one record per line.
    Produce(records::ProduceCommand),
    /// Print a topic's records (kcat-like).
    Consume(records::ConsumeCommand),
}

/// How every subcommand reaches the cluster and prints what it found.
#[derive(Args, Clone, Debug)]
pub struct Connection {
    /// Broker(s) to start from, HOST:PORT[,HOST:PORT...]; the rest are found from Metadata.
    #[arg(
        long = "bootstrap-server",
        value_name = "HOST:PORT",
        default_value = "127.0.0.1:9092",
        global = true
    )]
    pub bootstrap_server: String,
    /// Print JSON for scripts instead of a table (errors too, on stderr).
    #[arg(long, global = true)]
    pub json: bool,
    /// Give up on a request not answered within this many milliseconds.
    #[arg(long, value_name = "MS", default_value_t = 30_000, global = true)]
    pub timeout_ms: u64,
}

impl Connection {
    pub fn timeout(&self) -> Duration {
        Duration::from_millis(self.timeout_ms)
    }
}

impl Admin {
    fn connection(&self) -> &Connection {
        match self {
            Admin::Topic(c) => &c.connection,
            Admin::Cluster(c) => &c.connection,
            Admin::Config(c) => &c.connection,
            Admin::Group(c) => &c.connection,
            Admin::LeaderElection(c) => &c.connection,
            Admin::Produce(c) => &c.connection,
            Admin::Consume(c) => &c.connection,
        }
    }
}

/// Runs one operator subcommand to the end: its output on stdout, or the error with what to
/// do about it on stderr and a non-zero exit.
pub fn run(admin: Admin) -> ExitCode {
    let json = admin.connection().json;
    let runtime = match compio::runtime::Runtime::new() {
        Ok(runtime) => runtime,
        Err(error) => {
            output::report(&CliError::Runtime(error), json);
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(dispatch(admin)) {
        Ok(printed) => {
            printed.emit(json);
            for problem in &printed.problems {
                output::report(problem, json);
            }
            if printed.problems.is_empty() {
                ExitCode::SUCCESS
            } else {
                ExitCode::FAILURE
            }
        }
        Err(error) => {
            output::report(&error, json);
            ExitCode::FAILURE
        }
    }
}

async fn dispatch(admin: Admin) -> Result<Printed, CliError> {
    match admin {
        Admin::Topic(command) => topic::run(command).await,
        Admin::Cluster(command) => cluster::run(command).await,
        Admin::Config(command) => config::run(command).await,
        Admin::Group(command) => group::run(command).await,
        Admin::LeaderElection(command) => election::run(command).await,
        Admin::Produce(command) => records::produce(command).await,
        Admin::Consume(command) => records::consume(command).await,
    }
}
