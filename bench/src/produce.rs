//! The produce mode: one producer per thread, runtime and connection, either in closed loop
//! (a new batch as soon as one of `in_flight` slots is free) or on a fixed-rate schedule whose
//! latency counts from each batch's intended send time, so that a stalled broker cannot hide
//! its stalls (coordinated omission). A producer's connection is split: one task sends, on
//! time, while another reads the answers, so a slow answer delays a send only when every
//! slot is taken, and then that delay is counted. On a cluster, a producer holds one such
//! connection per leader, with its own slots, and sends each batch to its partition's leader.
//! End-to-end runs reuse these producers.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use kafka_protocol::messages::ProduceRequest;
use kafka_protocol::records::Compression;
use sluice_net::client::{produce_request, ClientReader, ClientWriter};

use crate::args::ProduceArgs;
use crate::batch::{batch_len, payload, records_per_batch, BatchBuilder};
use crate::clock;
use crate::cluster::{self, Layout, Routes, Versions, LATEST_TIMESTAMP};
use crate::e2e::Flow;
use crate::error::{error_name, BenchError};
use crate::harness::{self, Options, Worker};
use crate::keys::{KeyedPartitions, KEY_LEN};
use crate::stats::{Mode, Sample, Summary, Value};

/// How long a run lasts when neither --messages nor --duration is given.
const DURATION_DEFAULT: Duration = Duration::from_secs(10);
/// Kafka's default `max.message.bytes`: larger batches are refused with MESSAGE_TOO_LARGE.
const KAFKA_BATCH_BYTES_MAX_DEFAULT: usize = 1_048_588;
/// Above this much memory for keyed batch templates, a run says so before it starts.
const KEYED_TEMPLATE_BYTES_WARN: usize = 1 << 30;
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
pub struct Plan {
    /// Each partition's leader, and a connection per leader.
    routes: Routes,
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
    pub producers: usize,
    /// Messages per second over all producers, under --rate.
    rate: Option<f64>,
    linger: Duration,
    /// Under --keys: each partition's keys, and the order partitions take batches in.
    keyed: Option<KeyedPartitions>,
    /// Under end-to-end: where producers count what they sent, instead of recording samples.
    pub flow: Option<Arc<Flow>>,
    pub settings: Vec<(&'static str, Value)>,
}

pub fn run(args: &ProduceArgs) -> Result<Summary, BenchError> {
    let addr = args.common.bootstrap_addr()?;
    let (versions, layout, routes) = setup(addr, args)?;
    let plan = Arc::new(plan(args, routes, &versions, &layout, None));
    let options = Options {
        mode: Mode::Produce,
        workers: args.producers,
        interval: args.common.interval(),
        warmup: args.common.warmup,
    };
    let shared = Arc::clone(&plan);
    let outcome = harness::run(&options, move |worker| {
        let index = worker.id;
        produce(worker, index, &shared)
    })?;
    Ok(Summary {
        mode: Mode::Produce,
        settings: plan.settings.clone(),
        stats: outcome.total,
        elapsed: outcome.elapsed,
    })
}

/// The producers' plan for a topic laid out as `layout`.
pub fn plan(
    args: &ProduceArgs,
    routes: Routes,
    versions: &Versions,
    layout: &Layout,
    flow: Option<Arc<Flow>>,
) -> Plan {
    let partitions = layout.partitions();
    if partitions != args.partitions {
        eprintln!(
            "topic {} exists with {partitions} partitions; producing to all of them",
            args.common.topic
        );
    }
    if layout.replication_factor != args.replication_factor as usize {
        eprintln!(
            "topic {} has replication factor {}, not the {} asked for; producing to it as it is",
            args.common.topic, layout.replication_factor, args.replication_factor
        );
    }
    let key_len = args.keys.map(|_| KEY_LEN);
    let full = records_per_batch(args.batch_size, key_len, args.message_size);
    let full_len = batch_len(full, key_len, args.message_size);
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
    if let Some(keys) = args.keys {
        // Keyed batches are built per partition, and each producer keeps one encoded batch
        // for each partition that owns keys, as a Kafka producer keeps one open batch each.
        let keyed_partitions = keys.min(partitions as u64) as usize;
        let template_bytes = keyed_partitions * full_len * args.producers;
        if template_bytes > KEYED_TEMPLATE_BYTES_WARN {
            eprintln!(
                "--keys with {partitions} partitions keeps about {} MiB of batch templates \
                 in memory; a smaller --batch-size keeps less",
                template_bytes >> 20
            );
        }
    }
    let mut plan = Plan {
        routes,
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
        keyed: args.keys.map(|keys| KeyedPartitions::new(keys, partitions)),
        flow,
        settings: Vec::new(),
    };
    plan.settings = settings(args, &plan, versions, layout);
    plan
}

/// Negotiates versions, makes sure the topic exists and finds each partition's leader, on a
/// connection of its own; returns once every leader answers for its partitions.
pub fn setup(
    addr: SocketAddr,
    args: &ProduceArgs,
) -> Result<(Versions, Layout, Routes), BenchError> {
    let runtime = compio::runtime::Runtime::new().map_err(BenchError::Runtime)?;
    runtime.block_on(async {
        let mut client = cluster::connect(addr, "sluice-bench-setup".to_owned()).await?;
        let versions = cluster::negotiate(&mut client).await?;
        let topic = &args.common.topic;
        let new = cluster::NewTopic {
            partitions: args.partitions,
            replication_factor: args.replication_factor,
            configs: &args.topic_configs,
        };
        let layout = cluster::ensure_topic(&mut client, &versions, topic, new).await?;
        let routes = Routes::new(&layout, addr)?;
        // A new topic's leaders take their role as their metadata catches up; asking each
        // for its end offsets waits for that, so the first batches are not refused.
        cluster::offsets_at_leaders(
            &mut client,
            addr,
            &versions,
            topic,
            &routes,
            LATEST_TIMESTAMP,
        )
        .await?;
        // The run does not depend on a clean close; the broker drops the connection anyway.
        let _ = client.close().await;
        Ok((versions, layout, routes))
    })
}

fn settings(
    args: &ProduceArgs,
    plan: &Plan,
    versions: &Versions,
    layout: &Layout,
) -> Vec<(&'static str, Value)> {
    let (messages_limit, duration_limit) = match plan.limit {
        Limit::Messages(messages) => (Value::from(messages), Value::Null),
        Limit::Duration(duration) => (Value::Null, Value::Float(duration.as_secs_f64())),
    };
    vec![
        ("topic", Value::Text(plan.topic.clone())),
        ("partitions", Value::Int(i64::from(plan.partitions))),
        (
            "replication_factor",
            Value::from(layout.replication_factor as u64),
        ),
        ("leaders", Value::from(plan.routes.lanes.len() as u64)),
        ("keys", Value::from(args.keys)),
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

/// Producer `index`'s whole life, on its own thread.
pub fn produce(mut worker: Worker, index: usize, plan: &Plan) -> Result<(), BenchError> {
    // However this producer ends, an end-to-end run's consumers must learn it has.
    let _done = plan.flow.as_ref().map(|flow| flow.producer_guard());
    let runtime = compio::runtime::Runtime::new().map_err(BenchError::Runtime)?;
    let client_id = format!("sluice-bench-producer-{index}");
    let clients = runtime.block_on(async {
        let mut clients = Vec::with_capacity(plan.routes.lanes.len());
        for lane in &plan.routes.lanes {
            clients.push(cluster::connect(lane.addr, client_id.clone()).await?);
        }
        Ok::<_, BenchError>(clients)
    })?;
    let mut builders = Builders::new(plan, index)?;
    let origin = worker.start();
    let mut sender = Sender::new(&worker, index, plan, &mut builders, origin);
    runtime.block_on(async {
        let mut connections = Vec::with_capacity(clients.len());
        let mut receivers = Vec::with_capacity(clients.len());
        for (lane, client) in clients.into_iter().enumerate() {
            let (writer, reader) = client.split();
            // Slots for requests in flight on this connection: the sender takes one per
            // request, the receiver gives it back with the answer.
            let (slot_back, slot_take) = flume::bounded::<()>(plan.in_flight);
            for _ in 0..plan.in_flight {
                slot_back
                    .try_send(())
                    .expect("the slot channel holds in_flight slots");
            }
            let (pending_tx, pending_rx) = flume::unbounded::<Pending>();
            connections.push(Connection {
                lane,
                writer,
                slots: slot_take,
                pending: pending_tx,
            });
            let answers = Answers {
                lane,
                reader,
                pending: pending_rx,
                slots: slot_back,
            };
            receivers.push(receive(&worker, index, plan, answers));
        }
        let sending = sender.run(connections);
        let receiving = futures_util::future::try_join_all(receivers);
        futures_util::try_join!(sending, receiving).map(|_| ())
    })
}

/// The sending end of one connection to a leader.
struct Connection {
    /// Which of the plan's routes this connection is.
    lane: usize,
    writer: ClientWriter,
    /// Free request slots; holds `in_flight` when nothing is in flight.
    slots: flume::Receiver<()>,
    /// What each request in flight is, in the order sent.
    pending: flume::Sender<Pending>,
}

/// The receiving end of one connection to a leader.
struct Answers {
    /// Which of the plan's routes this connection is.
    lane: usize,
    reader: ClientReader,
    pending: flume::Receiver<Pending>,
    slots: flume::Sender<()>,
}

/// One batch builder per partition when records are keyed (a partition's batches hold only
/// its keys), else one for all.
struct Builders {
    shared: Option<BatchBuilder>,
    by_partition: HashMap<i32, BatchBuilder>,
}

impl Builders {
    fn new(plan: &Plan, index: usize) -> Result<Self, BenchError> {
        let seed = index as u64 + 1;
        // One copy of the values for all of this producer's builders; each partition's
        // builder then holds only its encoded batches.
        let values = payload(plan.message_size * plan.records_per_batch, seed);
        let new = |keys| {
            let mut builder = BatchBuilder::with_values(
                plan.message_size,
                plan.records_per_batch,
                plan.compression,
                values.clone(),
                keys,
            );
            // Encode (and compress) the common batch before the clock starts.
            builder.batch(plan.records_per_batch, 0).map(|_| builder)
        };
        let Some(keyed) = &plan.keyed else {
            return Ok(Self {
                shared: Some(new(Vec::new())?),
                by_partition: HashMap::new(),
            });
        };
        let mut by_partition = HashMap::new();
        for (partition, keys) in keyed.keys.iter().enumerate() {
            if !keys.is_empty() {
                by_partition.insert(partition as i32, new(keys.clone())?);
            }
        }
        Ok(Self {
            shared: None,
            by_partition,
        })
    }

    fn get(&mut self, partition: i32) -> &mut BatchBuilder {
        match &mut self.shared {
            Some(builder) => builder,
            None => self
                .by_partition
                .get_mut(&partition)
                .expect("keyed batches go only to partitions that own keys"),
        }
    }
}

/// A produce request sent and not yet answered.
struct Pending {
    /// When the batch was meant to leave (fixed rate) or did leave (closed loop).
    began: Instant,
    partition: i32,
    messages: u64,
    batch_bytes: u64,
}

/// The sending half of a producer.
struct Sender<'a> {
    worker: &'a Worker,
    plan: &'a Plan,
    builders: &'a mut Builders,
    /// Round-robin position over partitions, or over the key rotation when keyed.
    rotation_next: usize,
    /// Measured messages this producer still has to send, under --messages.
    remaining: Option<u64>,
    /// When sending stops, under --duration.
    send_until: Option<Instant>,
    schedule: Option<Schedule>,
}

impl<'a> Sender<'a> {
    fn new(
        worker: &'a Worker,
        index: usize,
        plan: &'a Plan,
        builders: &'a mut Builders,
        origin: Instant,
    ) -> Self {
        let (remaining, send_until) = match plan.limit {
            Limit::Messages(total) => (Some(share(total, plan.producers, index)), None),
            Limit::Duration(duration) => (None, Some(worker.measure_from() + duration)),
        };
        let schedule = plan.rate.map(|rate| {
            let per_producer = rate / plan.producers as f64;
            Schedule::new(
                origin,
                Rate {
                    messages_per_s: per_producer,
                    phase: Duration::from_secs_f64(index as f64 / rate),
                    linger: plan.linger,
                },
            )
        });
        // Producers start at different places in the rotation, so they do not all hit one
        // partition at once.
        let rotation_len = plan
            .keyed
            .as_ref()
            .map_or(plan.partitions as usize, |keyed| keyed.rotation.len());
        Self {
            worker,
            plan,
            builders,
            rotation_next: index % rotation_len,
            remaining,
            send_until,
            schedule,
        }
    }

    /// Sends until done; dropping `connections` at the end tells the receivers so.
    async fn run(&mut self, mut connections: Vec<Connection>) -> Result<(), BenchError> {
        while let Some((records, due)) = self.next_batch() {
            if due > Instant::now() {
                compio::time::sleep_until(due).await;
            }
            let partition = self.next_partition();
            let connection = &mut connections[self.plan.routes.lane_of[partition as usize]];
            if self.plan.acks != 0 && connection.slots.recv_async().await.is_err() {
                // The receiver has gone, which happens only when it failed; it reports that.
                break;
            }
            self.send(connection, partition, records, due).await?;
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

    fn next_partition(&mut self) -> i32 {
        let plan = self.plan;
        let partition = match &plan.keyed {
            Some(keyed) => keyed.rotation[self.rotation_next % keyed.rotation.len()],
            None => (self.rotation_next % plan.partitions as usize) as i32,
        };
        self.rotation_next = self.rotation_next.wrapping_add(1);
        partition
    }

    async fn send(
        &mut self,
        connection: &mut Connection,
        partition: i32,
        records: usize,
        due: Instant,
    ) -> Result<(), BenchError> {
        let plan = self.plan;
        // Closed loop, a batch begins now (it may have waited for a slot); at a fixed rate it
        // began when the schedule said, and every wait since counts.
        let began = if self.schedule.is_some() {
            due
        } else {
            Instant::now()
        };
        // The stamp end-to-end latency counts from: at a fixed rate, the arrival of the
        // batch's first (oldest) message, so that time spent lingering counts as it does for
        // a Kafka producer's records; the request's own round trip still counts from `began`.
        let stamp = self
            .schedule
            .as_ref()
            .map_or(began, |schedule| schedule.arrival(schedule.next_message));
        let batch = self
            .builders
            .get(partition)
            .batch(records, clock::unix_us(stamp))?;
        let batch_bytes = batch.len() as u64;
        if began >= self.worker.measure_from() {
            if let Some(remaining) = &mut self.remaining {
                *remaining = remaining.saturating_sub(records as u64);
            }
        }
        if let Some(schedule) = &mut self.schedule {
            schedule.advance(records);
        }
        let messages = records as u64;
        let request = produce_request(&plan.topic, partition, plan.acks, plan.timeout_ms, batch);
        if plan.acks == 0 {
            // No answer will come, so there is nothing to time or to keep in flight.
            connection
                .writer
                .write_unanswered(plan.version, &request)
                .await
                .map_err(|e| plan.routes.connection_error(connection.lane, e))?;
            let sample = Sample {
                messages,
                payload_bytes: messages * plan.message_size as u64,
                batch_bytes,
                latency: None,
                error: false,
            };
            match &plan.flow {
                Some(flow) => flow.produced(messages),
                None => self.worker.record(&sample, began),
            }
            return Ok(());
        }
        // Queued before the write, so the receiver knows what the answer is for even if it
        // arrives before the write completes.
        let _ = connection.pending.send(Pending {
            began,
            partition,
            messages,
            batch_bytes,
        });
        connection
            .writer
            .write_request(plan.version, &request)
            .await
            .map_err(|e| plan.routes.connection_error(connection.lane, e))?;
        Ok(())
    }
}

/// The receiving half of a producer's connection: reads answers in order until the sender is
/// done and every request has its answer.
async fn receive(
    worker: &Worker,
    index: usize,
    plan: &Plan,
    mut answers: Answers,
) -> Result<(), BenchError> {
    let mut errors_reported = false;
    while let Ok(request) = answers.pending.recv_async().await {
        let response = answers
            .reader
            .read_response::<ProduceRequest>()
            .await
            .map_err(|e| plan.routes.connection_error(answers.lane, e))?;
        let latency = request.began.elapsed();
        // The slot channel has room for every slot, so this never waits.
        let _ = answers.slots.try_send(());
        let error_code = response
            .responses
            .iter()
            .flat_map(|topic| topic.partition_responses.iter())
            .find(|p| p.index == request.partition)
            .map_or(ERROR_CODE_MISSING, |p| p.error_code);
        if cluster::not_leader(error_code) {
            // Every later batch to this partition would be refused too.
            return Err(BenchError::LeaderMoved {
                topic: plan.topic.clone(),
                partition: request.partition,
                broker: plan.routes.lanes[answers.lane].broker_id,
                during: "Produce",
                error_code,
            });
        }
        if error_code != 0 && !errors_reported {
            // Once per producer: the summary counts the rest.
            errors_reported = true;
            eprintln!(
                "producer {index}: partition {} answered {}",
                request.partition,
                error_name(error_code)
            );
        }
        match &plan.flow {
            Some(flow) if error_code == 0 => flow.produced(request.messages),
            Some(flow) => flow.produce_failed(),
            None => {
                let sample = Sample {
                    messages: request.messages,
                    payload_bytes: request.messages * plan.message_size as u64,
                    batch_bytes: request.batch_bytes,
                    latency: Some(latency),
                    error: error_code != 0,
                };
                worker.record(&sample, request.began);
            }
        }
    }
    Ok(())
}

/// Producer `id`'s part of `total` messages; the first `total % producers` take one more.
fn share(total: u64, producers: usize, id: usize) -> u64 {
    let producers = producers as u64;
    total / producers + u64::from((id as u64) < total % producers)
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
