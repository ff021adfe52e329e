//! The produce mode: one producer per thread, runtime and connection, each keeping up to
//! `in_flight` produce requests outstanding, either in closed loop (a new batch as soon as the
//! window allows) or on a fixed-rate schedule whose latency counts from each batch's intended
//! send time, so that a stalled broker cannot hide its stalls (coordinated omission).

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use kafka_protocol::messages::ProduceRequest;
use kafka_protocol::records::Compression;
use sluice_net::client::{produce_request, Client};

use crate::args::ProduceArgs;
use crate::batch::{batch_len, records_per_batch, BatchBuilder};
use crate::cluster::{self, Versions};
use crate::error::{error_name, BenchError};
use crate::harness::{self, Options, Worker};
use crate::stats::{Mode, Sample, Summary, Value};

/// How long a run lasts when neither --messages nor --duration is given.
const DURATION_DEFAULT: Duration = Duration::from_secs(10);
/// Kafka's default `max.message.bytes`: larger batches are refused with MESSAGE_TOO_LARGE.
const KAFKA_BATCH_BYTES_MAX_DEFAULT: usize = 1_048_588;
/// The error code recorded when a produce answer leaves out the partition it was asked about.
const ERROR_CODE_MISSING: i16 = -1;

/// When a producer stops sending.
#[derive(Debug, Clone, Copy)]
enum Limit {
    /// This many measured messages over all producers.
    Messages(u64),
    /// This long after the warm-up.
    Duration(Duration),
}

/// Fixed-rate settings, per producer.
#[derive(Debug, Clone, Copy)]
struct Rate {
    messages_per_s: f64,
    /// Offsets this producer's messages so that all producers' arrivals interleave evenly.
    phase: Duration,
    linger: Duration,
}

/// Everything a producer needs, shared by all of them.
struct Plan {
    addr: SocketAddr,
    topic: String,
    partitions: i32,
    version: i16,
    acks: i16,
    timeout_ms: i32,
    in_flight: usize,
    message_size: usize,
    compression: Compression,
    /// Records per batch: what fits --batch-size, or fewer when --linger-ms closes a batch
    /// first under --rate.
    records_per_batch: usize,
    /// Whether `records_per_batch` is set by the batch size (so a batch leaves when full).
    batch_full_by_size: bool,
    limit: Limit,
    producers: usize,
    /// Messages per second over all producers, under --rate.
    rate: Option<f64>,
    linger: Duration,
}

pub fn run(args: &ProduceArgs) -> Result<Summary, BenchError> {
    let addr = args.common.bootstrap_addr()?;
    let (versions, partitions) = setup(addr, args)?;
    if partitions != args.partitions {
        eprintln!(
            "topic {} exists with {partitions} partitions; producing to all of them",
            args.common.topic
        );
    }
    let full = records_per_batch(args.batch_size, args.message_size);
    let full_len = batch_len(full, args.message_size);
    if full_len > KAFKA_BATCH_BYTES_MAX_DEFAULT {
        eprintln!(
            "batches of {full_len} bytes (before compression) exceed the default \
             max.message.bytes of {KAFKA_BATCH_BYTES_MAX_DEFAULT}; expect MESSAGE_TOO_LARGE"
        );
    }
    let linger = Duration::from_millis(args.linger_ms);
    // Under --rate, a batch holds the messages that arrive within linger of its first one.
    let lingered = args.rate.map_or(full, |rate| {
        let per_producer = rate / args.producers as f64;
        let arrivals = (linger.as_secs_f64() * per_producer).floor() as usize;
        arrivals.saturating_add(1).min(full)
    });
    let limit = match (args.common.messages, args.common.duration) {
        (Some(messages), _) => Limit::Messages(messages),
        (None, Some(duration)) => Limit::Duration(duration),
        (None, None) => Limit::Duration(DURATION_DEFAULT),
    };
    let plan = Arc::new(Plan {
        addr,
        topic: args.common.topic.clone(),
        partitions,
        version: versions.produce,
        acks: args.acks,
        timeout_ms: args.request_timeout_ms,
        in_flight: args.in_flight,
        message_size: args.message_size,
        compression: args.compression.codec(),
        records_per_batch: lingered,
        batch_full_by_size: lingered == full,
        limit,
        producers: args.producers,
        rate: args.rate,
        linger,
    });
    let options = Options {
        mode: Mode::Produce,
        workers: args.producers,
        interval: args.common.interval(),
        warmup: args.common.warmup,
    };
    let settings = settings(args, &plan, &versions);
    let shared = Arc::clone(&plan);
    let outcome = harness::run(&options, move |worker| produce(worker, &shared))?;
    Ok(Summary {
        mode: Mode::Produce,
        settings,
        stats: outcome.total,
        elapsed: outcome.elapsed,
    })
}

/// Negotiates versions and makes sure the topic exists, on a connection of its own.
fn setup(addr: SocketAddr, args: &ProduceArgs) -> Result<(Versions, i32), BenchError> {
    let runtime = compio::runtime::Runtime::new().map_err(BenchError::Runtime)?;
    runtime.block_on(async {
        let mut client = cluster::connect(addr, "sluice-bench-setup".to_owned()).await?;
        let versions = cluster::negotiate(&mut client).await?;
        let topic = &args.common.topic;
        let partitions =
            cluster::ensure_topic(&mut client, &versions, topic, args.partitions).await?;
        // The run does not depend on a clean close; the broker drops the connection anyway.
        let _ = client.close().await;
        Ok((versions, partitions))
    })
}

fn settings(args: &ProduceArgs, plan: &Plan, versions: &Versions) -> Vec<(&'static str, Value)> {
    let (messages_limit, duration_limit) = match plan.limit {
        Limit::Messages(messages) => (Value::from(messages), Value::Null),
        Limit::Duration(duration) => (Value::Null, Value::Float(duration.as_secs_f64())),
    };
    vec![
        ("topic", Value::Text(plan.topic.clone())),
        ("partitions", Value::Int(i64::from(plan.partitions))),
        ("producers", Value::from(plan.producers as u64)),
        ("message_size", Value::from(plan.message_size as u64)),
        ("batch_size", Value::from(args.batch_size as u64)),
        (
            "records_per_batch",
            Value::from(plan.records_per_batch as u64),
        ),
        ("acks", Value::Int(i64::from(plan.acks))),
        (
            "compression",
            Value::Text(args.compression.name().to_owned()),
        ),
        ("in_flight", Value::from(plan.in_flight as u64)),
        ("rate", plan.rate.map_or(Value::Null, Value::Float)),
        ("linger_ms", Value::from(args.linger_ms)),
        ("warmup_s", Value::Float(args.common.warmup.as_secs_f64())),
        ("messages_limit", messages_limit),
        ("duration_limit_s", duration_limit),
        ("produce_version", Value::Int(i64::from(versions.produce))),
    ]
}

/// One producer's whole life, on its own thread.
fn produce(mut worker: Worker, plan: &Plan) -> Result<(), BenchError> {
    let runtime = compio::runtime::Runtime::new().map_err(BenchError::Runtime)?;
    let client_id = format!("sluice-bench-producer-{}", worker.id);
    let client = runtime.block_on(cluster::connect(plan.addr, client_id))?;
    let mut builder = BatchBuilder::new(
        plan.message_size,
        plan.records_per_batch,
        plan.compression,
        worker.id as u64 + 1,
    );
    // Encode (and compress) the common batch before the clock starts.
    builder.batch(plan.records_per_batch, 0)?;
    let origin = worker.start();
    let mut producer = Producer::new(worker, plan, client, builder, origin);
    runtime.block_on(producer.run())
}

/// A produce request sent and not yet answered.
struct Pending {
    /// When the batch was meant to leave (fixed rate) or did leave (closed loop).
    began: Instant,
    partition: i32,
    messages: u64,
    batch_bytes: u64,
}

struct Producer<'a> {
    worker: Worker,
    plan: &'a Plan,
    client: Client,
    builder: BatchBuilder,
    /// Oldest first, as the answers come back in request order.
    pending: VecDeque<Pending>,
    partition_next: i32,
    /// Measured messages this producer still has to send, under --messages.
    remaining: Option<u64>,
    /// When sending stops, under --duration.
    send_until: Option<Instant>,
    schedule: Option<Schedule>,
    errors_reported: bool,
}

impl<'a> Producer<'a> {
    fn new(
        worker: Worker,
        plan: &'a Plan,
        client: Client,
        builder: BatchBuilder,
        origin: Instant,
    ) -> Self {
        let id = worker.id;
        let (remaining, send_until) = match plan.limit {
            Limit::Messages(total) => (Some(share(total, plan.producers, id)), None),
            Limit::Duration(duration) => (None, Some(worker.measure_from() + duration)),
        };
        let schedule = plan.rate.map(|rate| {
            let per_producer = rate / plan.producers as f64;
            Schedule::new(
                origin,
                Rate {
                    messages_per_s: per_producer,
                    phase: Duration::from_secs_f64(id as f64 / rate),
                    linger: plan.linger,
                },
            )
        });
        Self {
            worker,
            plan,
            client,
            builder,
            pending: VecDeque::with_capacity(plan.in_flight),
            partition_next: (id as i32) % plan.partitions,
            remaining,
            send_until,
            schedule,
            errors_reported: false,
        }
    }

    async fn run(&mut self) -> Result<(), BenchError> {
        while let Some((records, due)) = self.next_batch() {
            if self.pending.len() >= self.plan.in_flight {
                self.complete_one().await?;
                continue;
            }
            if due > Instant::now() {
                // Early for the schedule: collect an answer if one is owed, else sleep. An
                // answer that arrives late delays the send, and that delay counts as latency.
                if self.pending.is_empty() {
                    compio::time::sleep_until(due).await;
                } else {
                    self.complete_one().await?;
                }
                continue;
            }
            self.send(records, due).await?;
        }
        while !self.pending.is_empty() {
            self.complete_one().await?;
        }
        Ok(())
    }

    /// The next batch's record count and intended send time, or None when this producer is
    /// done. Only looks; `send` commits.
    fn next_batch(&self) -> Option<(usize, Instant)> {
        if self.worker.stopped() {
            return None;
        }
        let full = self.plan.records_per_batch;
        let due = |records| match &self.schedule {
            Some(schedule) => {
                schedule.due(records, self.plan.batch_full_by_size && records == full)
            }
            None => Instant::now(),
        };
        let first_due = due(full);
        // A fixed-rate producer that has fallen behind stops on the clock too, rather than
        // working through its backlog long after --duration.
        let now = Instant::now();
        if self
            .send_until
            .is_some_and(|end| first_due >= end || now >= end)
        {
            return None;
        }
        let measured = first_due >= self.worker.measure_from();
        match self.remaining {
            Some(0) if measured => None,
            Some(remaining) if measured && (remaining as usize) < full => {
                let records = remaining as usize;
                Some((records, due(records)))
            }
            _ => Some((full, first_due)),
        }
    }

    async fn send(&mut self, records: usize, began: Instant) -> Result<(), BenchError> {
        let plan = self.plan;
        let batch = self.builder.batch(records, unix_millis())?;
        let batch_bytes = batch.len() as u64;
        let partition = self.partition_next;
        self.partition_next = (partition + 1) % plan.partitions;
        if began >= self.worker.measure_from() {
            if let Some(remaining) = &mut self.remaining {
                *remaining = remaining.saturating_sub(records as u64);
            }
        }
        if let Some(schedule) = &mut self.schedule {
            schedule.advance(records);
        }
        let messages = records as u64;
        if plan.acks == 0 {
            // No answer will come, so there is nothing to time or to keep in flight.
            self.client
                .produce(
                    plan.version,
                    &plan.topic,
                    partition,
                    0,
                    plan.timeout_ms,
                    batch,
                )
                .await?;
            let sample = Sample {
                messages,
                payload_bytes: messages * plan.message_size as u64,
                batch_bytes,
                latency: None,
                error: false,
            };
            self.worker.record(&sample, began);
            return Ok(());
        }
        let request = produce_request(&plan.topic, partition, plan.acks, plan.timeout_ms, batch);
        self.client.write_request(plan.version, &request).await?;
        self.pending.push_back(Pending {
            began,
            partition,
            messages,
            batch_bytes,
        });
        Ok(())
    }

    async fn complete_one(&mut self) -> Result<(), BenchError> {
        let response = self.client.read_response::<ProduceRequest>().await?;
        let latency = self.pending.front().map(|p| p.began.elapsed());
        let pending = self
            .pending
            .pop_front()
            .expect("a response is read only while a request is pending");
        let error_code = response
            .responses
            .iter()
            .flat_map(|topic| topic.partition_responses.iter())
            .find(|p| p.index == pending.partition)
            .map_or(ERROR_CODE_MISSING, |p| p.error_code);
        if error_code != 0 && !self.errors_reported {
            // Once per producer: the summary counts the rest.
            self.errors_reported = true;
            eprintln!(
                "producer {}: partition {} answered {}",
                self.worker.id,
                pending.partition,
                error_name(error_code)
            );
        }
        let sample = Sample {
            messages: pending.messages,
            payload_bytes: pending.messages * self.plan.message_size as u64,
            batch_bytes: pending.batch_bytes,
            latency,
            error: error_code != 0,
        };
        self.worker.record(&sample, pending.began);
        Ok(())
    }
}

/// Producer `id`'s part of `total` messages; the first `total % producers` take one more.
fn share(total: u64, producers: usize, id: usize) -> u64 {
    let producers = producers as u64;
    total / producers + u64::from((id as u64) < total % producers)
}

fn unix_millis() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |since| since.as_millis() as i64)
}

/// Fixed-rate timing for one producer. Messages arrive evenly at the producer's rate; a
/// batch leaves when full, or `linger` after its first message arrived, and that moment is
/// its intended send time, from which latency counts.
#[derive(Debug)]
struct Schedule {
    origin: Instant,
    rate: Rate,
    /// The index of the next message to arrive.
    next_message: u64,
}

impl Schedule {
    fn new(origin: Instant, rate: Rate) -> Self {
        assert!(rate.messages_per_s > 0.0);
        Self {
            origin,
            rate,
            next_message: 0,
        }
    }

    fn arrival(&self, message: u64) -> Instant {
        self.origin
            + self.rate.phase
            + Duration::from_secs_f64(message as f64 / self.rate.messages_per_s)
    }

    /// When the next batch of `records` is due: at its last arrival if that fills it,
    /// otherwise when linger runs out.
    fn due(&self, records: usize, fills_batch: bool) -> Instant {
        debug_assert!(records >= 1);
        if fills_batch {
            self.arrival(self.next_message + records as u64 - 1)
        } else {
            self.arrival(self.next_message) + self.rate.linger
        }
    }

    fn advance(&mut self, records: usize) {
        self.next_message += records as u64;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shares_add_up() {
        for (total, producers) in [(10, 3), (1, 4), (1_000_000, 16), (7, 7)] {
            let shares: Vec<u64> = (0..producers)
                .map(|id| share(total, producers, id))
                .collect();
            assert_eq!(shares.iter().sum::<u64>(), total);
            let (min, max) = (shares.iter().min().unwrap(), shares.iter().max().unwrap());
            assert!(max - min <= 1, "{shares:?}");
        }
    }

    #[test]
    fn schedule_sends_full_batches_at_their_last_arrival() {
        let origin = Instant::now();
        let rate = Rate {
            messages_per_s: 1000.0,
            phase: Duration::ZERO,
            linger: Duration::from_millis(50),
        };
        let mut schedule = Schedule::new(origin, rate);
        assert_eq!(schedule.due(10, true), origin + Duration::from_millis(9));
        schedule.advance(10);
        assert_eq!(schedule.due(10, true), origin + Duration::from_millis(19));
    }

    #[test]
    fn schedule_sends_short_batches_when_linger_runs_out() {
        let origin = Instant::now();
        let rate = Rate {
            messages_per_s: 100.0,
            phase: Duration::from_millis(3),
            linger: Duration::from_millis(5),
        };
        let mut schedule = Schedule::new(origin, rate);
        assert_eq!(schedule.due(1, false), origin + Duration::from_millis(8));
        schedule.advance(1);
        assert_eq!(schedule.due(1, false), origin + Duration::from_millis(18));
    }
}
