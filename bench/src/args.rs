//! The command line: each mode's knobs (with Kafka's names where Kafka has one) and the parsers
//! for sizes, durations and counts that those knobs accept.

use std::net::{SocketAddr, ToSocketAddrs};
use std::time::Duration;

use clap::{Args, Parser, Subcommand, ValueEnum};
use kafka_protocol::records::Compression;

use crate::error::BenchError;

/// The largest batch the tool builds. Kafka's default `message.max.bytes` is 1048588, so
/// anything above 64 MiB is a typo rather than an experiment, and it bounds our buffers.
pub const BATCH_SIZE_MAX: usize = 64 * 1024 * 1024;
/// The largest message value; a record's length is a signed 32-bit varint on the wire.
pub const MESSAGE_SIZE_MAX: usize = BATCH_SIZE_MAX;
/// Bounds on how many connections one run opens, each with its own thread.
pub const CLIENTS_MAX: usize = 1024;
/// Requests in flight per connection; each holds a whole batch in memory.
pub const IN_FLIGHT_MAX: usize = 1024;

const _: () = assert!(MESSAGE_SIZE_MAX <= i32::MAX as usize);

#[derive(Debug, Parser)]
#[command(
    name = "sluice-bench",
    version,
    about = "Load generator for Kafka-compatible brokers",
    long_about = "Load generator for Kafka-compatible brokers. Speaks the Kafka protocol through \
                  sluice-net's client, prints one line per interval to stderr, and a summary \
                  (text, --json or --csv) to stdout."
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Produce record batches to a topic, creating it if missing.
    Produce(ProduceArgs),
    /// Fetch a topic from the beginning and count its records.
    Consume(ConsumeArgs),
    /// Produce and consume in one run; latency runs from each batch's send time (under
    /// --rate, the arrival of its first message, so lingering counts) to its consumption.
    ///
    /// Consumers start at the topic's end offsets, so they read only this run's records, and
    /// the run ends when the producers are done and everything they sent has been read. Each
    /// batch carries its send time in microseconds in the first 8 bytes of its first value;
    /// compressed batches, and values shorter than 8 bytes, carry it only in the batch
    /// timestamp, to the millisecond. Throughput and latency are the consumers'; one sample
    /// per batch.
    #[command(name = "end-to-end")]
    EndToEnd(EndToEndArgs),
    /// Run a plan: a matrix of client and broker parameters, one run per combination, with
    /// CSV, Markdown and plots (SVG and PNG) as output.
    ///
    /// A plan is TOML: `name`, `mode` (produce, consume or end-to-end; a consume run fills
    /// its topic with a produce first and reports the consumer), `output`, a `[fixed]` table of
    /// flags for every run, a `[client]` table whose lists are the matrix's axes (flag names
    /// or Kafka's, such as "batch.size"), and a `[broker]` table: either `command`,
    /// `data-dir` and `listener` for a broker the sweep starts and restarts with
    /// `--override key=value` per parameter (with `nodes = N`, a cluster of N nodes on this
    /// host, node i on the listener's port + i, its quorum on port + 100 + i; with
    /// `fresh = true`, a new one with empty data for every run), or `bootstrap`
    /// for one it reconfigures with IncrementalAlterConfigs; its `[broker.params]` lists are
    /// axes too, and a managed broker's `[broker.builds]` (name = program) adds a `build`
    /// axis that runs each build of the broker side by side. Each run is this program as a child process, on a topic of its own. See
    /// bench/plans/example.toml and bench/plans/replication.toml.
    Sweep(SweepArgs),
    /// Run the tuning plans (bench/plans/tuning/) and write the tuning guide: one row per
    /// tip with its measured effect, the median of each plan's rounds, and the plots.
    ///
    /// Each plan is a sweep plan with `repeat` and one or more `[[tip]]` tables: the advice,
    /// its goal (throughput, or latency at a percentile), the `baseline` combination it is
    /// compared with and the `advised` one, and `why` it holds or not here. A tip's effect
    /// in each round is advised over baseline for throughput and baseline over advised for
    /// latency, so above 1 means the advice helped; the guide shows the median and the
    /// spread of the rounds.
    Tune(TuneArgs),
}

/// Knobs every mode shares.
#[derive(Debug, Args)]
pub struct CommonArgs {
    /// Broker address, host:port (also as --bootstrap-server, Kafka's tools' name for it).
    #[arg(long, alias = "bootstrap-server", default_value = "127.0.0.1:9092")]
    pub bootstrap: String,

    /// Topic to produce to or consume from.
    #[arg(long, default_value = "sluice-bench")]
    pub topic: String,

    /// Stop after this many messages (after warm-up), e.g. 1000000 or 1M.
    #[arg(long, value_parser = parse_count, conflicts_with = "duration")]
    pub messages: Option<u64>,

    /// Stop after this long (after warm-up), e.g. 30s, 500ms, 2m.
    #[arg(long, value_parser = parse_duration)]
    pub duration: Option<Duration>,

    /// Run this long before measuring; its messages count in neither the summary nor --messages.
    #[arg(long, value_parser = parse_duration, default_value = "0s")]
    pub warmup: Duration,

    /// Milliseconds between progress lines on stderr.
    #[arg(long = "interval-ms", default_value_t = 1000,
          value_parser = clap::value_parser!(u64).range(1..))]
    pub interval_ms: u64,

    /// Print the summary as one JSON object.
    #[arg(long, conflicts_with = "csv")]
    pub json: bool,

    /// Print the summary as CSV: a header line, then one row.
    #[arg(long)]
    pub csv: bool,
}

impl CommonArgs {
    pub fn output(&self) -> Output {
        if self.json {
            Output::Json
        } else if self.csv {
            Output::Csv
        } else {
            Output::Text
        }
    }

    pub fn interval(&self) -> Duration {
        Duration::from_millis(self.interval_ms)
    }

    /// The broker's first resolved address.
    pub fn bootstrap_addr(&self) -> Result<SocketAddr, BenchError> {
        let resolve_error = |source| BenchError::Resolve {
            bootstrap: self.bootstrap.clone(),
            source,
        };
        self.bootstrap
            .to_socket_addrs()
            .map_err(resolve_error)?
            .next()
            .ok_or_else(|| BenchError::NoAddress(self.bootstrap.clone()))
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Output {
    Text,
    Json,
    Csv,
}

#[derive(Debug, Args)]
pub struct ProduceArgs {
    #[command(flatten)]
    pub common: CommonArgs,

    /// Partitions to create the topic with if it does not exist; batches go round-robin over
    /// all of the topic's partitions.
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(i32).range(1..))]
    pub partitions: i32,

    /// Replicas of each partition if the topic is created (Kafka's replication.factor). On a
    /// cluster, each partition's batches go to its leader.
    #[arg(long = "replication-factor", default_value_t = 1,
          value_parser = clap::value_parser!(i16).range(1..))]
    pub replication_factor: i16,

    /// A topic config for the topic if it is created, as `kafka-topics --config` takes it,
    /// e.g. compression.type=zstd; repeat for several.
    #[arg(long = "topic-config", value_name = "KEY=VALUE", value_parser = parse_topic_config)]
    pub topic_configs: Vec<(String, String)>,

    /// Distinct keys; records are keyed and go to the partition Kafka's default partitioner
    /// picks for their key (murmur2). Without it, records have null keys and batches go
    /// round-robin.
    #[arg(long, value_parser = parse_keys)]
    pub keys: Option<u64>,

    /// Bytes of value per message, e.g. 1024 or 1KiB.
    #[arg(long = "message-size", value_parser = parse_message_size, default_value = "1024")]
    pub message_size: usize,

    /// Producers, each on its own thread with its own runtime, and one connection to each
    /// partition leader; every producer sends to all partitions in turn.
    #[arg(long, default_value_t = 1, value_parser = parse_clients)]
    pub producers: usize,

    /// Acknowledgements: all (-1), 0 or 1.
    #[arg(long, value_parser = parse_acks, default_value = "1", allow_hyphen_values = true)]
    pub acks: i16,

    /// Bytes per record batch before compression (Kafka's batch.size), e.g. 16KiB, 1MiB.
    #[arg(long = "batch-size", value_parser = parse_batch_size, default_value = "16KiB")]
    pub batch_size: usize,

    /// With --rate, how long a batch waits for more messages before it is sent.
    #[arg(long = "linger-ms", default_value_t = 5)]
    pub linger_ms: u64,

    /// Codec for the batches. Each batch shape is compressed once before the run and then
    /// restamped per send, so the run measures the broker, not the producer's compressor.
    #[arg(long, value_enum, default_value_t = CompressionArg::None)]
    pub compression: CompressionArg,

    /// Fixed-rate mode: messages per second over all producers. Latency is then measured from
    /// each batch's intended send time, so a stalled broker cannot hide its stalls.
    #[arg(long, value_parser = parse_rate)]
    pub rate: Option<f64>,

    /// Produce requests outstanding per connection (Kafka's
    /// max.in.flight.requests.per.connection).
    #[arg(long = "in-flight", default_value_t = 5, value_parser = parse_in_flight)]
    pub in_flight: usize,

    /// The broker waits at most this long for acknowledgements.
    #[arg(long = "request-timeout-ms", default_value_t = 30_000,
          value_parser = clap::value_parser!(i32).range(1..))]
    pub request_timeout_ms: i32,
}

#[derive(Debug, Args)]
pub struct ConsumeArgs {
    #[command(flatten)]
    pub common: CommonArgs,

    /// Consumers, each on its own thread; partitions are dealt round-robin among them, and
    /// each consumer fetches from every leader of its partitions on a connection of its own.
    #[arg(long, default_value_t = 1, value_parser = parse_clients)]
    pub consumers: usize,

    #[command(flatten)]
    pub fetch: FetchArgs,
}

#[derive(Debug, Args)]
pub struct EndToEndArgs {
    #[command(flatten)]
    pub produce: ProduceArgs,

    /// Consumers, each on its own thread; partitions are dealt round-robin, and each consumer
    /// fetches from every leader of its partitions on a connection of its own.
    #[arg(long, default_value_t = 1, value_parser = parse_clients)]
    pub consumers: usize,

    #[command(flatten)]
    pub fetch: FetchArgs,
}

#[derive(Debug, Args)]
pub struct SweepArgs {
    /// The plan, a TOML file (see bench/plans/ for an example).
    pub plan: std::path::PathBuf,

    /// Where the CSV, Markdown table and plots go; by default the plan's `output`, else
    /// sweep-results/<plan name> in the current directory.
    #[arg(long)]
    pub out: Option<std::path::PathBuf>,

    /// Print the runs the plan expands to, and do nothing else.
    #[arg(long = "dry-run")]
    pub dry_run: bool,
}

#[derive(Debug, Args)]
pub struct TuneArgs {
    /// The plans: every .toml file in this directory, in name order.
    #[arg(long, default_value = "bench/plans/tuning")]
    pub plans: std::path::PathBuf,

    /// The guide to write (Markdown).
    #[arg(long, default_value = "bench/TUNING.md")]
    pub out: std::path::PathBuf,

    /// Each plan's tables and plots go into a directory of its own under this one.
    #[arg(long, default_value = "bench/results/tuning")]
    pub results: std::path::PathBuf,

    /// Only the plans whose file name contains this text; repeat for several.
    #[arg(long)]
    pub only: Vec<String>,

    /// Check that every plan works, quickly: one round of only the baseline and advised
    /// combinations, 300 ms each without warm-up. Its figures mean nothing.
    #[arg(long)]
    pub quick: bool,

    /// Run nothing: write the guide again from the results a run left in --results, for
    /// example after editing a tip's `why`.
    #[arg(long, conflicts_with = "quick")]
    pub report: bool,

    /// Run this broker binary in place of the first word of each plan's broker command.
    #[arg(long, value_name = "PATH")]
    pub sluice: Option<std::path::PathBuf>,

    /// Keep the brokers' data under this directory instead of each plan's data-dir.
    #[arg(long = "data-dir", value_name = "DIR")]
    pub data_dir: Option<std::path::PathBuf>,
}

/// Consumer fetch knobs, named after Kafka's consumer configs.
#[derive(Debug, Args)]
pub struct FetchArgs {
    /// The broker answers a fetch once it has this many bytes (or the wait is over).
    #[arg(long = "fetch-min-bytes", default_value_t = 1,
          value_parser = clap::value_parser!(i32).range(0..))]
    pub fetch_min_bytes: i32,

    /// The longest the broker may hold a fetch waiting for --fetch-min-bytes.
    #[arg(long = "fetch-max-wait-ms", default_value_t = 500,
          value_parser = clap::value_parser!(i32).range(0..))]
    pub fetch_max_wait_ms: i32,

    /// Bytes per fetch response over all partitions (Kafka's fetch.max.bytes).
    #[arg(long = "fetch-max-bytes", default_value_t = 52_428_800,
          value_parser = clap::value_parser!(i32).range(1..))]
    pub fetch_max_bytes: i32,

    /// Bytes per partition per fetch (Kafka's max.partition.fetch.bytes).
    #[arg(long = "max-partition-fetch-bytes", default_value_t = 1_048_576,
          value_parser = clap::value_parser!(i32).range(1..))]
    pub max_partition_fetch_bytes: i32,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum CompressionArg {
    None,
    Gzip,
    Snappy,
    Lz4,
    Zstd,
}

impl CompressionArg {
    pub fn codec(self) -> Compression {
        match self {
            CompressionArg::None => Compression::None,
            CompressionArg::Gzip => Compression::Gzip,
            CompressionArg::Snappy => Compression::Snappy,
            CompressionArg::Lz4 => Compression::Lz4,
            CompressionArg::Zstd => Compression::Zstd,
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            CompressionArg::None => "none",
            CompressionArg::Gzip => "gzip",
            CompressionArg::Snappy => "snappy",
            CompressionArg::Lz4 => "lz4",
            CompressionArg::Zstd => "zstd",
        }
    }
}

/// A byte size: a whole number with an optional unit, B, KB/MB/GB (powers of 1000) or
/// KiB/MiB/GiB (powers of 1024), case-insensitive.
pub fn parse_size(text: &str) -> Result<u64, String> {
    let text = text.trim();
    let split = text
        .find(|c: char| !c.is_ascii_digit() && c != '_')
        .unwrap_or(text.len());
    let (number, unit) = text.split_at(split);
    let number = parse_digits(number)?;
    let multiplier: u64 = match unit.trim().to_ascii_lowercase().as_str() {
        "" | "b" => 1,
        "kb" => 1000,
        "mb" => 1000 * 1000,
        "gb" => 1000 * 1000 * 1000,
        "kib" => 1 << 10,
        "mib" => 1 << 20,
        "gib" => 1 << 30,
        other => {
            return Err(format!(
                "unknown size unit {other:?} (use B, KiB, MiB, KB, MB...)"
            ))
        }
    };
    number
        .checked_mul(multiplier)
        .ok_or_else(|| format!("{text} is too large"))
}

/// A count of messages: a whole number with an optional k, M or G (powers of 1000).
/// `key=value`, both non-empty.
pub fn parse_topic_config(text: &str) -> Result<(String, String), String> {
    match text.split_once('=') {
        Some((key, value)) if !key.is_empty() && !value.is_empty() => {
            Ok((key.to_owned(), value.to_owned()))
        }
        _ => Err(format!("{text:?} is not key=value")),
    }
}

pub fn parse_count(text: &str) -> Result<u64, String> {
    let text = text.trim();
    let (number, multiplier) = match text.char_indices().last() {
        Some((i, 'k' | 'K')) => (&text[..i], 1000),
        Some((i, 'M')) => (&text[..i], 1000 * 1000),
        Some((i, 'G')) => (&text[..i], 1000 * 1000 * 1000),
        _ => (text, 1),
    };
    let count = parse_digits(number)?
        .checked_mul(multiplier)
        .ok_or_else(|| format!("{text} is too large"))?;
    if count == 0 {
        return Err("must be at least 1".to_owned());
    }
    Ok(count)
}

/// A duration: a number (fractions allowed) with ms, s, m or h; a bare number is seconds.
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    let text = text.trim();
    let split = text
        .find(|c: char| !c.is_ascii_digit() && c != '.')
        .unwrap_or(text.len());
    let (number, unit) = text.split_at(split);
    let value: f64 = number
        .parse()
        .map_err(|_| format!("{text:?} is not a duration (try 30s, 500ms, 2m)"))?;
    let seconds = match unit {
        "ms" => value / 1000.0,
        "" | "s" => value,
        "m" => value * 60.0,
        "h" => value * 3600.0,
        other => return Err(format!("unknown duration unit {other:?} (use ms, s, m, h)")),
    };
    Duration::try_from_secs_f64(seconds).map_err(|e| format!("{text}: {e}"))
}

fn parse_digits(number: &str) -> Result<u64, String> {
    let digits: String = number.chars().filter(|&c| c != '_').collect();
    if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return Err(format!("{number:?} is not a whole number"));
    }
    digits.parse().map_err(|_| format!("{number} is too large"))
}

fn parse_bounded_size(text: &str, min: u64, max: usize) -> Result<usize, String> {
    let size = parse_size(text)?;
    if size < min || size > max as u64 {
        return Err(format!("{size} is outside {min}..={max}"));
    }
    Ok(size as usize)
}

fn parse_message_size(text: &str) -> Result<usize, String> {
    parse_bounded_size(text, 0, MESSAGE_SIZE_MAX)
}

fn parse_batch_size(text: &str) -> Result<usize, String> {
    // A batch header alone is 61 bytes; anything smaller still gets one record per batch.
    parse_bounded_size(text, 1, BATCH_SIZE_MAX)
}

fn parse_clients(text: &str) -> Result<usize, String> {
    parse_bounded_count(text, CLIENTS_MAX)
}

fn parse_in_flight(text: &str) -> Result<usize, String> {
    parse_bounded_count(text, IN_FLIGHT_MAX)
}

fn parse_bounded_count(text: &str, max: usize) -> Result<usize, String> {
    let count = parse_digits(text.trim())?;
    if count == 0 || count > max as u64 {
        return Err(format!("{count} is outside 1..={max}"));
    }
    Ok(count as usize)
}

fn parse_keys(text: &str) -> Result<u64, String> {
    let keys = parse_count(text)?;
    if keys > crate::keys::KEYS_MAX {
        return Err(format!("at most {} keys", crate::keys::KEYS_MAX));
    }
    Ok(keys)
}

fn parse_acks(text: &str) -> Result<i16, String> {
    match text.trim() {
        "all" | "-1" => Ok(-1),
        "0" => Ok(0),
        "1" => Ok(1),
        other => Err(format!("{other:?} is not one of all, -1, 0, 1")),
    }
}

/// Messages per second, fractions allowed, with an optional k, M or G as in counts.
fn parse_rate(text: &str) -> Result<f64, String> {
    let text = text.trim();
    let (number, multiplier) = match text.char_indices().last() {
        Some((i, 'k' | 'K')) => (&text[..i], 1e3),
        Some((i, 'M')) => (&text[..i], 1e6),
        Some((i, 'G')) => (&text[..i], 1e9),
        _ => (text, 1.0),
    };
    let rate = number
        .replace('_', "")
        .parse::<f64>()
        .map(|rate| rate * multiplier)
        .map_err(|_| format!("{text:?} is not a number of messages per second"))?;
    if !(rate.is_finite() && rate > 0.0) {
        return Err("must be a positive number of messages per second".to_owned());
    }
    Ok(rate)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(args: &[&str]) -> Result<Command, clap::Error> {
        let argv = std::iter::once("sluice-bench").chain(args.iter().copied());
        Cli::try_parse_from(argv).map(|cli| cli.command)
    }

    fn produce(args: &[&str]) -> ProduceArgs {
        match parse(&[&["produce"], args].concat()) {
            Ok(Command::Produce(produce)) => produce,
            other => panic!("expected produce arguments, got {other:?}"),
        }
    }

    fn consume(args: &[&str]) -> ConsumeArgs {
        match parse(&[&["consume"], args].concat()) {
            Ok(Command::Consume(consume)) => consume,
            other => panic!("expected consume arguments, got {other:?}"),
        }
    }

    #[test]
    fn produce_defaults_follow_kafka() {
        let args = produce(&[]);
        assert_eq!(args.common.bootstrap, "127.0.0.1:9092");
        assert_eq!(args.common.topic, "sluice-bench");
        assert_eq!(args.common.messages, None);
        assert_eq!(args.common.duration, None);
        assert_eq!(args.common.warmup, Duration::ZERO);
        assert_eq!(args.common.interval_ms, 1000);
        assert_eq!(args.common.output(), Output::Text);
        assert_eq!(args.partitions, 1);
        assert_eq!(args.replication_factor, 1);
        assert_eq!(args.message_size, 1024);
        assert_eq!(args.producers, 1);
        assert_eq!(args.acks, 1);
        assert_eq!(args.batch_size, 16384);
        assert_eq!(args.linger_ms, 5);
        assert_eq!(args.compression, CompressionArg::None);
        assert_eq!(args.rate, None);
        assert_eq!(args.in_flight, 5);
    }

    #[test]
    fn produce_takes_every_knob() {
        let args = produce(&[
            "--bootstrap=localhost:19192",
            "--topic=t1",
            "--partitions=16",
            "--replication-factor=3",
            "--message-size=1KiB",
            "--messages=1M",
            "--warmup=2s",
            "--producers=4",
            "--acks=all",
            "--batch-size=1MiB",
            "--linger-ms=10",
            "--compression=zstd",
            "--rate=50000",
            "--in-flight=8",
            "--interval-ms=250",
            "--topic-config=compression.type=zstd",
            "--topic-config",
            "retention.ms=-1",
            "--json",
        ]);
        assert_eq!(args.common.bootstrap, "localhost:19192");
        let configs: Vec<(&str, &str)> = args
            .topic_configs
            .iter()
            .map(|(k, v)| (k.as_str(), v.as_str()))
            .collect();
        assert_eq!(
            configs,
            [("compression.type", "zstd"), ("retention.ms", "-1")]
        );
        assert!(parse_topic_config("retention.ms").is_err());
        assert!(parse_topic_config("=1").is_err());
        assert_eq!(args.common.topic, "t1");
        assert_eq!(args.partitions, 16);
        assert_eq!(args.replication_factor, 3);
        assert_eq!(args.message_size, 1024);
        assert_eq!(args.common.messages, Some(1_000_000));
        assert_eq!(args.common.warmup, Duration::from_secs(2));
        assert_eq!(args.producers, 4);
        assert_eq!(args.acks, -1);
        assert_eq!(args.batch_size, 1 << 20);
        assert_eq!(args.linger_ms, 10);
        assert_eq!(args.compression.codec(), Compression::Zstd);
        assert_eq!(args.rate, Some(50_000.0));
        assert_eq!(args.in_flight, 8);
        assert_eq!(args.common.interval(), Duration::from_millis(250));
        assert_eq!(args.common.output(), Output::Json);
    }

    #[test]
    fn bootstrap_server_is_kafkas_name_for_bootstrap() {
        let args = produce(&["--bootstrap-server=10.0.0.1:9092"]);
        assert_eq!(args.common.bootstrap, "10.0.0.1:9092");
    }

    #[test]
    fn end_to_end_takes_producer_and_consumer_knobs() {
        let args = match parse(&[
            "end-to-end",
            "--partitions=8",
            "--keys=1k",
            "--producers=2",
            "--consumers=3",
            "--rate=10k",
            "--fetch-max-wait-ms=5",
            "--duration=3s",
            "--csv",
        ]) {
            Ok(Command::EndToEnd(args)) => args,
            other => panic!("expected end-to-end arguments, got {other:?}"),
        };
        assert_eq!(args.produce.partitions, 8);
        assert_eq!(args.produce.keys, Some(1000));
        assert_eq!(args.produce.producers, 2);
        assert_eq!(args.consumers, 3);
        assert_eq!(args.produce.rate, Some(10_000.0));
        assert_eq!(args.fetch.fetch_max_wait_ms, 5);
        assert_eq!(args.fetch.fetch_min_bytes, 1);
        assert_eq!(args.produce.common.duration, Some(Duration::from_secs(3)));
        assert_eq!(args.produce.common.output(), Output::Csv);
        assert!(parse(&["end-to-end", "--keys=0"]).is_err());
        assert!(parse(&["end-to-end", "--keys=20M"]).is_err());
        assert!(parse(&["produce", "--consumers=2"]).is_err());
    }

    #[test]
    fn acks_accepts_minus_one_as_a_value() {
        assert_eq!(produce(&["--acks", "-1"]).acks, -1);
        assert_eq!(produce(&["--acks=0"]).acks, 0);
        assert!(parse(&["produce", "--acks=2"]).is_err());
    }

    #[test]
    fn rejects_contradictions_and_out_of_range_values() {
        for bad in [
            &["produce", "--messages=10", "--duration=5s"][..],
            &["produce", "--json", "--csv"],
            &["produce", "--partitions=0"],
            &["produce", "--replication-factor=0"],
            &["produce", "--producers=0"],
            &["produce", "--in-flight=0"],
            &["produce", "--batch-size=0"],
            &["produce", "--batch-size=65MiB"],
            &["produce", "--rate=0"],
            &["produce", "--rate=-5"],
            &["produce", "--messages=0"],
            &["produce", "--interval-ms=0"],
            &["produce", "--compression=brotli"],
            &["consume", "--consumers=0"],
            &["consume", "--partitions=3"],
        ] {
            assert!(parse(bad).is_err(), "{bad:?} should not parse");
        }
    }

    #[test]
    fn consume_takes_fetch_knobs() {
        let args = consume(&[
            "--topic=t1",
            "--consumers=2",
            "--fetch-min-bytes=65536",
            "--fetch-max-wait-ms=100",
            "--duration=10s",
            "--csv",
        ]);
        assert_eq!(args.common.topic, "t1");
        assert_eq!(args.consumers, 2);
        assert_eq!(args.fetch.fetch_min_bytes, 65536);
        assert_eq!(args.fetch.fetch_max_wait_ms, 100);
        assert_eq!(args.fetch.fetch_max_bytes, 52_428_800);
        assert_eq!(args.fetch.max_partition_fetch_bytes, 1_048_576);
        assert_eq!(args.common.duration, Some(Duration::from_secs(10)));
        assert_eq!(args.common.output(), Output::Csv);
    }

    #[test]
    fn sizes() {
        let check = |text: &str, expected: Option<u64>| {
            assert_eq!(parse_size(text).ok(), expected, "{text}");
        };
        check("1024", Some(1024));
        check("1_048_576", Some(1 << 20));
        check("16KiB", Some(16 * 1024));
        check("1mib", Some(1 << 20));
        check("2 GiB", Some(2 << 30));
        check("1KB", Some(1000));
        check("3MB", Some(3_000_000));
        check("7B", Some(7));
        check("", None);
        check("KiB", None);
        check("1.5MiB", None);
        check("-1", None);
        check("10 parsecs", None);
        check("99999999999999999999", None);
        check("99999999999GiB", None);
    }

    #[test]
    fn counts() {
        let check = |text: &str, expected: Option<u64>| {
            assert_eq!(parse_count(text).ok(), expected, "{text}");
        };
        check("1", Some(1));
        check("1_000_000", Some(1_000_000));
        check("250k", Some(250_000));
        check("1M", Some(1_000_000));
        check("2G", Some(2_000_000_000));
        check("0", None);
        check("1m", None);
        check("M", None);
        check("1.5M", None);
    }

    #[test]
    fn rates() {
        let check = |text: &str, expected: Option<f64>| {
            assert_eq!(parse_rate(text).ok(), expected, "{text}");
        };
        check("100", Some(100.0));
        check("0.5", Some(0.5));
        check("2.5k", Some(2500.0));
        check("3M", Some(3e6));
        check("1_000", Some(1000.0));
        check("0", None);
        check("-3", None);
        check("inf", None);
        check("NaN", None);
        check("fast", None);
    }

    #[test]
    fn durations() {
        let check = |text: &str, expected: Option<Duration>| {
            assert_eq!(parse_duration(text).ok(), expected, "{text}");
        };
        check("30", Some(Duration::from_secs(30)));
        check("30s", Some(Duration::from_secs(30)));
        check("1.5s", Some(Duration::from_millis(1500)));
        check("250ms", Some(Duration::from_millis(250)));
        check("2m", Some(Duration::from_secs(120)));
        check("1h", Some(Duration::from_secs(3600)));
        check("0s", Some(Duration::ZERO));
        check("s", None);
        check("-1s", None);
        check("5 fortnights", None);
    }
}
