//! The `sluice` command: `sluice serve` runs the broker; the operator subcommands (`topic`,
//! `cluster`, `config`, `group`, ...) in `cli/` administer any Kafka-compatible cluster.

mod cli;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use sluice_broker::config::{BrokerConfig, Properties, KEYS};
use sluice_broker::{backend, server};

#[derive(Parser)]
#[command(
    name = "sluice",
    version,
    about = "A Kafka-compatible broker for Linux: thread-per-core, io_uring, zero-copy fetch."
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the broker until SIGINT or SIGTERM (then flush and close every log cleanly).
    #[command(after_long_help = properties_help())]
    Serve {
        /// A Kafka-style server.properties file (key=value lines, # comments).
        #[arg(long, value_name = "FILE")]
        config: Option<PathBuf>,
        /// Set one property, after the file; repeat as needed. Example: --override num.partitions=8
        #[arg(long = "override", value_name = "KEY=VALUE")]
        overrides: Vec<String>,
        /// Log filter for messages on stderr (tracing's env-filter syntax; RUST_LOG also works).
        #[arg(long, value_name = "FILTER", default_value = "info")]
        log: String,
    },
    #[command(flatten)]
    Admin(cli::Admin),
}

fn properties_help() -> String {
    let mut text = String::from("Properties (Kafka's names; defaults in brackets):\n");
    for key in KEYS {
        let default = if key.default.is_empty() {
            "unset"
        } else {
            key.default
        };
        text.push_str(&format!(
            "  {} [{}]\n      {}\n",
            key.name, default, key.doc
        ));
    }
    text
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Command::Serve {
            config,
            overrides,
            log,
        } => serve(config, overrides, &log),
        Command::Admin(admin) => cli::run(admin),
    }
}

fn serve(config_path: Option<PathBuf>, overrides: Vec<String>, log: &str) -> ExitCode {
    // openraft narrates every election at info; its warnings and errors are what operators need.
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(format!("openraft=warn,{log}")));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .init();

    let config = match load_config(config_path, &overrides) {
        Ok(config) => config,
        Err(error) => {
            eprintln!("sluice: {error}");
            return ExitCode::from(2);
        }
    };
    for key in config.properties.unknown_keys() {
        tracing::warn!(key, "unknown property; it has no effect");
    }
    for key in ["num.network.threads", "num.io.threads"] {
        if config.properties.get(key).is_some() {
            tracing::warn!(
                key,
                "ignored under thread-per-core; set sluice.reactors instead"
            );
        }
    }
    let backend = backend::probe();
    if !backend.is_io_uring() {
        tracing::warn!("io_uring unavailable, running on epoll: {backend}");
    }
    let reactors = config.reactor_count();
    println!("sluice {}", env!("CARGO_PKG_VERSION"));
    println!("  data directory: {}", config.log_dir.display());
    println!(
        "  reactors:       {reactors}{}",
        if config.pin_cores { " (pinned)" } else { "" }
    );
    println!("  I/O backend:    {backend}");
    println!("  descriptors:    {}", raise_descriptor_limit());
    let result = server::serve(config, backend, |ready| {
        if let Some(address) = ready.client {
            println!("  listening on:   {address} (PLAINTEXT)");
        }
        if let Some(address) = ready.controller {
            println!("  controller:     {address}");
        }
        match ready.metrics {
            Some(metrics) => println!("  metrics:        http://{metrics}/metrics"),
            None => println!("  metrics:        off"),
        }
        println!("ready");
    });
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("sluice: {error}");
            ExitCode::FAILURE
        }
    }
}

fn load_config(
    path: Option<PathBuf>,
    overrides: &[String],
) -> Result<BrokerConfig, Box<dyn std::error::Error>> {
    let mut properties = match path {
        Some(path) => Properties::load(&path)?,
        None => Properties::default(),
    };
    for pair in overrides {
        properties.apply_override(pair)?;
    }
    Ok(BrokerConfig::from_properties(properties)?)
}

/// Raises the soft limit on open files to the hard limit: each partition holds descriptors
/// for its segment and indexes, and each connection one or more, so the usual soft limit of
/// 1024 is far below what a broker needs. Says what the limits are.
fn raise_descriptor_limit() -> String {
    use rustix::process::{getrlimit, setrlimit, Resource, Rlimit};
    let shown = |limit: Option<u64>| limit.map_or("unlimited".to_owned(), |n| n.to_string());
    let before = getrlimit(Resource::Nofile);
    let hard = before.maximum;
    if before.current == hard {
        return format!("{} (the hard limit)", shown(hard));
    }
    let raised = Rlimit {
        current: hard,
        maximum: hard,
    };
    match setrlimit(Resource::Nofile, raised) {
        Ok(()) => format!(
            "{} (raised from {} to the hard limit)",
            shown(hard),
            shown(before.current)
        ),
        Err(error) => {
            tracing::warn!(%error, "cannot raise the open-file limit to the hard limit");
            format!("{} (hard limit {})", shown(before.current), shown(hard))
        }
    }
}
