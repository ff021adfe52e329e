//! sluice-bench, a load generator for Kafka-compatible brokers. It reaches the broker only
//! through sluice-net's client, as any Kafka client would, never through broker internals.

mod args;
mod batch;
mod clock;
mod cluster;
mod consume;
mod e2e;
mod error;
mod harness;
mod keys;
mod produce;
mod stats;
mod sweep;
mod tune;

use std::process::ExitCode;

use clap::Parser;

use crate::args::{Cli, Command, Output};

fn main() -> ExitCode {
    let cli = Cli::parse();
    let (summary, output) = match &cli.command {
        Command::Sweep(args) => {
            return match sweep::run(args) {
                Ok(()) => ExitCode::SUCCESS,
                Err(error) => {
                    eprintln!("sluice-bench sweep: {error}");
                    ExitCode::FAILURE
                }
            };
        }
        Command::Tune(args) => {
            return match tune::run(args) {
                Ok(()) => ExitCode::SUCCESS,
                Err(error) => {
                    eprintln!("sluice-bench tune: {error}");
                    ExitCode::FAILURE
                }
            };
        }
        Command::Produce(args) => (produce::run(args), args.common.output()),
        Command::Consume(args) => (consume::run(args), args.common.output()),
        Command::EndToEnd(args) => (e2e::run(args), args.produce.common.output()),
    };
    let summary = match summary {
        Ok(summary) => summary,
        Err(error) => {
            eprintln!("sluice-bench: {error}");
            return ExitCode::FAILURE;
        }
    };
    let printed = match output {
        Output::Text => summary.text(),
        Output::Json => summary.json(),
        Output::Csv => summary.csv(),
    };
    println!("{printed}");
    // A run whose requests failed must not pass for a good one in a script.
    if summary.stats.errors > 0 {
        eprintln!("sluice-bench: {} requests failed", summary.stats.errors);
        return ExitCode::FAILURE;
    }
    ExitCode::SUCCESS
}
