//! Metrics: plain per-core counters and histograms (no atomics shared between cores on the hot
//! path), merged on scrape by asking every core for a snapshot, and served as Prometheus text
//! over HTTP.
//!
//! Names map Kafka's JMX names one way: `kafka.<domain>:type=<Type>,name=<Name>,<tag>=<v>`
//! becomes `kafka_<domain>_<type>_<name>{<tag>="<v>"}`, all lower case. A `...PerSec` meter
//! becomes a counter named without `PerSec` and ending in `_total` (Prometheus takes the rate);
//! a `...TimeMs` histogram becomes `..._time_seconds` in seconds, Prometheus' base unit. What
//! Kafka has no JMX name for is named `sluice_...`, except consumer-group lag, which the broker
//! serves under the names the common Kafka exporters give it (`kafka_consumergroup_lag`).

use std::cell::{Cell, RefCell};
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::fmt::Write as _;
use std::rc::Rc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use compio::io::{AsyncRead, AsyncWriteExt};
use compio::net::{TcpListener, TcpStream};
use kafka_protocol::messages::ResponseKind;

use crate::core::Core;

/// Largest HTTP request head read from a scraper.
const HTTP_REQUEST_BYTES_MAX: usize = 8192;
/// How long a scraper has to send its request head, and then to take the response: an idle
/// or stalled client is dropped after this, so it cannot hold a connection forever.
const HTTP_IO_TIMEOUT: Duration = Duration::from_secs(10);
/// Pause after a failed accept. The usual cause is running out of file descriptors (EMFILE),
/// which retrying at once would only repeat at full speed on core 0.
pub(crate) const ACCEPT_RETRY_DELAY: Duration = Duration::from_millis(100);

/// API keys below this get request counts and latency histograms; Kafka's keys are all below.
pub const API_KEY_LIMIT: usize = 96;

/// Upper bounds of the latency histogram buckets, in microseconds (50 µs to 30 s, the longest
/// a fetch may wait). The `+Inf` bucket is the count.
const LATENCY_BUCKETS_US: [u64; 18] = [
    50, 100, 250, 500, 1_000, 2_500, 5_000, 10_000, 25_000, 50_000, 100_000, 250_000, 500_000,
    1_000_000, 2_500_000, 5_000_000, 10_000_000, 30_000_000,
];

/// Partition series served at most, whatever the partition count, so a scrape stays bounded.
pub const PARTITION_SERIES_MAX: usize = 10_000;
/// Consumer-group lag series (one per committed partition of a group) served at most.
pub const LAG_SERIES_MAX: usize = PARTITION_SERIES_MAX;

/// The five parts of a request's time, as Kafka splits them.
const TIME_PARTS: [&str; 5] = ["total", "requestqueue", "local", "remote", "responsesend"];

/// One request's time, split as Kafka splits it (see ARCHITECTURE.md for the definitions
/// under thread-per-core).
#[derive(Debug, Clone, Copy)]
pub struct Timing {
    /// When the whole request frame had been read.
    pub read_at: Instant,
    /// Frame read until the handler first ran.
    pub queue: Duration,
    /// Time the handler spent running on this core.
    pub local: Duration,
    /// Time the handler spent suspended: waiting for other cores, a long poll or I/O.
    pub remote: Duration,
    /// When the handler finished.
    pub handled_at: Instant,
}

/// A latency histogram with fixed buckets, touched only by its own core.
#[derive(Default)]
struct Histogram {
    buckets: [Cell<u64>; LATENCY_BUCKETS_US.len()],
    count: Cell<u64>,
    sum_us: Cell<u64>,
}

impl Histogram {
    fn record(&self, elapsed: Duration) {
        let micros = u64::try_from(elapsed.as_micros()).unwrap_or(u64::MAX);
        if let Some(at) = LATENCY_BUCKETS_US.iter().position(|&bound| micros <= bound) {
            CoreMetrics::add(&self.buckets[at], 1);
        }
        CoreMetrics::add(&self.count, 1);
        CoreMetrics::add(&self.sum_us, micros);
    }

    fn snapshot(&self) -> HistogramSnapshot {
        HistogramSnapshot {
            buckets: std::array::from_fn(|i| self.buckets[i].get()),
            count: self.count.get(),
            sum_us: self.sum_us.get(),
        }
    }
}

#[derive(Default)]
struct ApiStats {
    requests: Cell<u64>,
    times: [Histogram; TIME_PARTS.len()],
}

#[derive(Default, Clone, Copy)]
struct TopicCounters {
    bytes_in: u64,
    messages_in: u64,
    bytes_out: u64,
}

/// One core's counters. Each is touched only by its own core.
pub struct CoreMetrics {
    pub bytes_in: Cell<u64>,
    pub messages_in: Cell<u64>,
    pub produce_requests: Cell<u64>,
    pub fetch_requests: Cell<u64>,
    pub fetch_record_bytes: Cell<u64>,
    pub zero_copy_bytes: Cell<u64>,
    pub bytes_out: Cell<u64>,
    /// Fetches parked in a long poll on this core now.
    pub fetches_waiting: Cell<u64>,
    /// Partition appends in progress on this core: waiting for the log, its write, or the
    /// fsync the flush settings ask for.
    pub appends_waiting: Cell<u64>,
    topics: RefCell<HashMap<String, TopicCounters>>,
    apis: Box<[ApiStats]>,
    /// (api key, error code) -> responses or partitions answered with it.
    errors: RefCell<HashMap<(i16, i16), u64>>,
    /// Thread CPU time and wall time at the previous scrape, for the busy ratio.
    last_busy_sample: Cell<(Duration, Instant)>,
}

impl Default for CoreMetrics {
    /// Built on the reactor thread it belongs to, so the first CPU sample is that thread's.
    fn default() -> Self {
        Self {
            bytes_in: Cell::default(),
            messages_in: Cell::default(),
            produce_requests: Cell::default(),
            fetch_requests: Cell::default(),
            fetch_record_bytes: Cell::default(),
            zero_copy_bytes: Cell::default(),
            bytes_out: Cell::default(),
            fetches_waiting: Cell::default(),
            appends_waiting: Cell::default(),
            topics: RefCell::default(),
            apis: (0..API_KEY_LIMIT).map(|_| ApiStats::default()).collect(),
            errors: RefCell::default(),
            last_busy_sample: Cell::new((thread_cpu_time(), Instant::now())),
        }
    }
}

/// Keeps a waiting-list gauge raised while it lives, so every exit path lowers it again.
pub struct Waiting<'a>(&'a Cell<u64>);

impl<'a> Waiting<'a> {
    pub fn enter(gauge: &'a Cell<u64>) -> Self {
        CoreMetrics::add(gauge, 1);
        Self(gauge)
    }
}

impl Drop for Waiting<'_> {
    fn drop(&mut self) {
        debug_assert!(self.0.get() > 0);
        self.0.set(self.0.get().saturating_sub(1));
    }
}

impl CoreMetrics {
    pub fn add(cell: &Cell<u64>, amount: u64) {
        cell.set(cell.get().wrapping_add(amount));
    }

    /// Records bytes and records appended to `topic` (on the partition's owner core).
    pub fn topic_in(&self, topic: &str, bytes: u64, messages: u64) {
        self.with_topic(topic, |t| {
            t.bytes_in = t.bytes_in.wrapping_add(bytes);
            t.messages_in = t.messages_in.wrapping_add(messages);
        });
    }

    /// Records record bytes of `topic` placed in a fetch response.
    pub fn topic_out(&self, topic: &str, bytes: u64) {
        if bytes > 0 {
            self.with_topic(topic, |t| t.bytes_out = t.bytes_out.wrapping_add(bytes));
        }
    }

    fn with_topic(&self, topic: &str, change: impl FnOnce(&mut TopicCounters)) {
        let mut topics = self.topics.borrow_mut();
        match topics.get_mut(topic) {
            Some(counters) => change(counters),
            None => change(topics.entry(topic.to_owned()).or_default()),
        }
    }

    /// Drops the counters of topics that no longer exist, as Kafka removes their metrics, so a
    /// broker that creates and deletes many topics keeps a bounded map.
    fn forget_deleted_topics(&self, exists: impl Fn(&str) -> bool) {
        self.topics.borrow_mut().retain(|topic, _| exists(topic));
    }

    /// Counts error codes (NONE included, as Kafka's ErrorsPerSec does) of one response.
    pub fn count_errors(&self, api_key: i16, codes: impl IntoIterator<Item = i16>) {
        let mut errors = self.errors.borrow_mut();
        for code in codes {
            *errors.entry((api_key, code)).or_default() += 1;
        }
    }

    /// Records one answered request's count and latency split.
    pub fn record_request(&self, api_key: i16, timing: &Timing, sent_at: Instant) {
        let Some(api) = usize::try_from(api_key).ok().and_then(|k| self.apis.get(k)) else {
            return;
        };
        CoreMetrics::add(&api.requests, 1);
        let parts = [
            sent_at.saturating_duration_since(timing.read_at),
            timing.queue,
            timing.local,
            timing.remote,
            sent_at.saturating_duration_since(timing.handled_at),
        ];
        for (histogram, elapsed) in api.times.iter().zip(parts) {
            histogram.record(elapsed);
        }
    }

    fn snapshot(&self, core_id: usize) -> Snapshot {
        let now = Instant::now();
        let cpu = thread_cpu_time();
        let (last_cpu, last_wall) = self.last_busy_sample.replace((cpu, now));
        let wall = now.saturating_duration_since(last_wall).as_secs_f64();
        let busy = cpu.saturating_sub(last_cpu).as_secs_f64();
        let apis = self.apis.iter().enumerate();
        Snapshot {
            bytes_in: self.bytes_in.get(),
            messages_in: self.messages_in.get(),
            produce_requests: self.produce_requests.get(),
            fetch_requests: self.fetch_requests.get(),
            fetch_record_bytes: self.fetch_record_bytes.get(),
            zero_copy_bytes: self.zero_copy_bytes.get(),
            bytes_out: self.bytes_out.get(),
            fetches_waiting: self.fetches_waiting.get(),
            appends_waiting: self.appends_waiting.get(),
            topics: self
                .topics
                .borrow()
                .iter()
                .map(|(k, v)| (k.clone(), *v))
                .collect(),
            apis: apis
                .filter(|(_, api)| api.requests.get() > 0)
                .map(|(key, api)| {
                    let times = std::array::from_fn(|i| api.times[i].snapshot());
                    (key as i16, (api.requests.get(), times))
                })
                .collect(),
            errors: self.errors.borrow().iter().map(|(k, v)| (*k, *v)).collect(),
            reactors: vec![ReactorSample {
                core: core_id,
                cpu_seconds: cpu.as_secs_f64(),
                busy_ratio: if wall > 0.0 {
                    (busy / wall).clamp(0.0, 1.0)
                } else {
                    0.0
                },
            }],
            ..Snapshot::default()
        }
    }
}

/// CPU time the calling thread has used, user and system.
fn thread_cpu_time() -> Duration {
    let mut now = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: clock_gettime writes one timespec to a valid, exclusively borrowed location.
    let result = unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut now) };
    if result != 0 {
        return Duration::ZERO;
    }
    Duration::new(
        now.tv_sec.max(0) as u64,
        now.tv_nsec.clamp(0, 999_999_999) as u32,
    )
}

#[derive(Default, Clone, Copy)]
struct HistogramSnapshot {
    buckets: [u64; LATENCY_BUCKETS_US.len()],
    count: u64,
    sum_us: u64,
}

impl HistogramSnapshot {
    fn merge(&mut self, other: &HistogramSnapshot) {
        for (mine, theirs) in self.buckets.iter_mut().zip(other.buckets) {
            *mine += theirs;
        }
        self.count += other.count;
        self.sum_us += other.sum_us;
    }
}

#[derive(Clone, Copy)]
struct ReactorSample {
    core: usize,
    cpu_seconds: f64,
    busy_ratio: f64,
}

/// One partition's log, for the per-partition series.
struct PartitionSample {
    topic: String,
    partition: i32,
    size_bytes: u64,
    segments: usize,
    log_start_offset: i64,
    log_end_offset: i64,
    high_watermark: i64,
}

/// One committed offset of a group coordinated on some core: (group, topic, partition, offset).
type Committed = (String, String, i32, i64);

/// One group's lag on one partition.
struct LagSample {
    group: String,
    topic: String,
    partition: i32,
    /// The log end offset minus the committed offset, as Kafka's consumer-groups tool counts
    /// it: negative when the log was truncated below the commit.
    lag: i64,
}

type ApiSnapshot = (u64, [HistogramSnapshot; TIME_PARTS.len()]);

/// A copy of counters that can cross cores, summed over cores on scrape.
#[derive(Default)]
struct Snapshot {
    bytes_in: u64,
    messages_in: u64,
    produce_requests: u64,
    fetch_requests: u64,
    fetch_record_bytes: u64,
    zero_copy_bytes: u64,
    bytes_out: u64,
    fetches_waiting: u64,
    appends_waiting: u64,
    partitions: u64,
    topics: BTreeMap<String, TopicCounters>,
    apis: BTreeMap<i16, ApiSnapshot>,
    errors: BTreeMap<(i16, i16), u64>,
    reactors: Vec<ReactorSample>,
    /// (from core, to core, jobs waiting).
    queue_depths: Vec<(usize, usize, usize)>,
    partition_series: Vec<PartitionSample>,
    /// Committed offsets of the groups on the core (whole groups, at most `LAG_SERIES_MAX`).
    committed: Vec<Committed>,
    lag: Vec<LagSample>,
}

impl Snapshot {
    fn merge(&mut self, other: Snapshot) {
        self.bytes_in += other.bytes_in;
        self.messages_in += other.messages_in;
        self.produce_requests += other.produce_requests;
        self.fetch_requests += other.fetch_requests;
        self.fetch_record_bytes += other.fetch_record_bytes;
        self.zero_copy_bytes += other.zero_copy_bytes;
        self.bytes_out += other.bytes_out;
        self.fetches_waiting += other.fetches_waiting;
        self.appends_waiting += other.appends_waiting;
        self.partitions += other.partitions;
        for (topic, theirs) in other.topics {
            let mine = self.topics.entry(topic).or_default();
            mine.bytes_in += theirs.bytes_in;
            mine.messages_in += theirs.messages_in;
            mine.bytes_out += theirs.bytes_out;
        }
        for (key, (requests, times)) in other.apis {
            let mine = self.apis.entry(key).or_default();
            mine.0 += requests;
            for (mine, theirs) in mine.1.iter_mut().zip(&times) {
                mine.merge(theirs);
            }
        }
        for (key, count) in other.errors {
            *self.errors.entry(key).or_default() += count;
        }
        self.reactors.extend(other.reactors);
        self.queue_depths.extend(other.queue_depths);
        let room = PARTITION_SERIES_MAX.saturating_sub(self.partition_series.len());
        let series = other.partition_series.into_iter().take(room);
        self.partition_series.extend(series);
        // Each group lives on one core, so the cores' lists hold disjoint groups.
        self.committed.extend(other.committed);
    }
}

async fn gather(core: &Rc<Core>) -> Snapshot {
    let with_partitions = core.shared.dynamic.current().metrics_partition_series;
    let mut total = Snapshot::default();
    for target in 0..core.shared.cores {
        let snapshot = core
            .invoke(target, move |owner| async move {
                let image = owner.shared.metadata.image();
                owner
                    .metrics
                    .forget_deleted_topics(|topic| image.topic(topic).is_some());
                let mut snapshot = owner.metrics.snapshot(owner.id);
                let partitions = owner.partitions.all();
                snapshot.partitions = partitions.len() as u64;
                snapshot.queue_depths = owner
                    .outbox_depths()
                    .into_iter()
                    .map(|(to, depth)| (owner.id, to, depth))
                    .collect();
                snapshot.committed = whole_groups(owner.groups.committed_offsets());
                if with_partitions {
                    for ((topic, partition), state) in partitions {
                        if snapshot.partition_series.len() >= PARTITION_SERIES_MAX {
                            break;
                        }
                        let stats = state.stats().await;
                        snapshot.partition_series.push(PartitionSample {
                            topic,
                            partition,
                            size_bytes: stats.size_bytes,
                            segments: stats.segments,
                            log_start_offset: stats.offsets.log_start_offset,
                            log_end_offset: stats.offsets.log_end_offset,
                            high_watermark: stats.offsets.high_watermark,
                        });
                    }
                }
                snapshot
            })
            .await;
        total.merge(snapshot.unwrap_or_default());
    }
    let committed = whole_groups(std::mem::take(&mut total.committed));
    total.lag = lag(core, committed).await;
    total
}

/// Sorts committed offsets by group, topic and partition and keeps whole groups, in name
/// order, while their partitions fit in `LAG_SERIES_MAX`: a group's sum is never partial.
fn whole_groups(mut committed: Vec<Committed>) -> Vec<Committed> {
    committed.retain(|(_, _, partition, offset)| *partition >= 0 && *offset >= 0);
    committed.sort_unstable();
    let mut kept = 0;
    let mut rest = committed.as_slice();
    while let Some((group, ..)) = rest.first() {
        let run = rest.iter().take_while(|c| &c.0 == group).count();
        if kept + run > LAG_SERIES_MAX {
            break;
        }
        kept += run;
        rest = &rest[run..];
    }
    committed.truncate(kept);
    committed
}

/// Lag of each committed offset against its partition's log end offset, asked of each
/// partition's owner core. Partitions that no longer exist are left out.
async fn lag(core: &Rc<Core>, committed: Vec<Committed>) -> Vec<LagSample> {
    let mut by_owner: BTreeMap<usize, BTreeSet<(String, i32)>> = BTreeMap::new();
    for (_, topic, partition, _) in &committed {
        let owner = core.shared.owner(topic, *partition);
        by_owner
            .entry(owner)
            .or_default()
            .insert((topic.clone(), *partition));
    }
    let mut ends: HashMap<(String, i32), i64> = HashMap::new();
    for (target, wanted) in by_owner {
        let found = core
            .invoke(target, move |owner| async move {
                let mut found = Vec::with_capacity(wanted.len());
                for (topic, partition) in wanted {
                    if let Some(state) = owner.partition(&topic, partition) {
                        let end = state.offsets().log_end_offset;
                        found.push(((topic, partition), end));
                    }
                }
                found
            })
            .await;
        ends.extend(found.unwrap_or_default());
    }
    committed
        .into_iter()
        .filter_map(|(group, topic, partition, offset)| {
            let end = *ends.get(&(topic.clone(), partition))?;
            Some(LagSample {
                group,
                topic,
                partition,
                lag: end - offset,
            })
        })
        .collect()
}

/// Prometheus text, one family at a time.
struct Text(String);

impl Text {
    fn family(&mut self, name: &str, kind: &str, help: &str) {
        let _ = writeln!(self.0, "# HELP {name} {help}\n# TYPE {name} {kind}");
    }

    fn sample(&mut self, name: &str, labels: &str, value: impl std::fmt::Display) {
        if labels.is_empty() {
            let _ = writeln!(self.0, "{name} {value}");
        } else {
            let _ = writeln!(self.0, "{name}{{{labels}}} {value}");
        }
    }

    fn single(&mut self, name: &str, kind: &str, help: &str, value: impl std::fmt::Display) {
        self.family(name, kind, help);
        self.sample(name, "", value);
    }

    fn histogram(&mut self, name: &str, labels: &str, h: &HistogramSnapshot) {
        let bucket = format!("{name}_bucket");
        let mut cumulative = 0;
        for (bound, count) in LATENCY_BUCKETS_US.iter().zip(h.buckets) {
            cumulative += count;
            let le = *bound as f64 / 1e6;
            self.sample(&bucket, &format!("{labels},le=\"{le}\""), cumulative);
        }
        self.sample(&bucket, &format!("{labels},le=\"+Inf\""), h.count);
        self.sample(&format!("{name}_sum"), labels, h.sum_us as f64 / 1e6);
        self.sample(&format!("{name}_count"), labels, h.count);
    }
}

fn render(core: &Core, s: &Snapshot) -> String {
    let mut text = Text(String::new());
    render_topic_metrics(core, s, &mut text);
    render_request_metrics(s, &mut text);
    render_reactors(core, s, &mut text);
    render_replication(s, &mut text);
    render_partitions(s, &mut text);
    render_consumer_group_lag(s, &mut text);
    text.0
}

/// A per-topic counter family: name, help, broker total, and the topic's value.
type TopicFamily = (&'static str, &'static str, u64, fn(&TopicCounters) -> u64);

/// A per-partition gauge family: name, help, and the partition's value.
type PartitionFamily = (&'static str, &'static str, fn(&PartitionSample) -> i64);

/// BrokerTopicMetrics: the sample without a topic label is the broker total, as Kafka's MBean
/// without a topic tag is.
fn render_topic_metrics(core: &Core, s: &Snapshot, text: &mut Text) {
    // Counters of topics deleted while the scrape ran are left out too.
    let image = core.shared.metadata.image();
    let live: Vec<(&String, &TopicCounters)> = s
        .topics
        .iter()
        .filter(|(topic, _)| image.topic(topic).is_some())
        .collect();
    let per_topic: [TopicFamily; 3] = [
        (
            "kafka_server_brokertopicmetrics_bytesin_total",
            "Record bytes appended from producers.",
            s.bytes_in,
            |t| t.bytes_in,
        ),
        (
            "kafka_server_brokertopicmetrics_messagesin_total",
            "Records appended from producers.",
            s.messages_in,
            |t| t.messages_in,
        ),
        (
            "kafka_server_brokertopicmetrics_bytesout_total",
            "Bytes of fetch responses written to sockets (per topic: record bytes fetched).",
            s.bytes_out,
            |t| t.bytes_out,
        ),
    ];
    for (name, help, total, of_topic) in per_topic {
        text.family(name, "counter", help);
        text.sample(name, "", total);
        for (topic, counters) in &live {
            text.sample(name, &format!("topic=\"{topic}\""), of_topic(counters));
        }
    }
    text.single(
        "kafka_server_brokertopicmetrics_totalproducerequests_total",
        "counter",
        "Produce requests handled.",
        s.produce_requests,
    );
    text.single(
        "kafka_server_brokertopicmetrics_totalfetchrequests_total",
        "counter",
        "Fetch requests handled.",
        s.fetch_requests,
    );
    text.single(
        "sluice_fetch_record_bytes_total",
        "counter",
        "Record bytes placed in fetch responses.",
        s.fetch_record_bytes,
    );
    text.single(
        "sluice_zero_copy_bytes_total",
        "counter",
        "Record bytes sent to sockets by splice, never copied to user space.",
        s.zero_copy_bytes,
    );
}

/// RequestMetrics: request counts, errors by code, and the latency split per API.
fn render_request_metrics(s: &Snapshot, text: &mut Text) {
    let name = "kafka_network_requestmetrics_requests_total";
    text.family(name, "counter", "Requests answered, by API.");
    for (key, (requests, _)) in &s.apis {
        text.sample(
            name,
            &format!("request=\"{}\"", crate::apis::name(*key)),
            requests,
        );
    }
    let name = "kafka_network_requestmetrics_errors_total";
    text.family(
        name,
        "counter",
        "Error codes in responses (per partition for Produce and Fetch), NONE included.",
    );
    for ((key, code), count) in &s.errors {
        let labels = format!(
            "request=\"{}\",error=\"{}\"",
            crate::apis::name(*key),
            crate::error_codes::name(*code)
        );
        text.sample(name, &labels, count);
    }
    let helps = [
        "Frame read until the response is written.",
        "Frame read until the handler first runs on the connection's core.",
        "Handler running on the connection's core, owner work done inline included.",
        "Handler suspended: waiting for other cores, a long poll, or I/O completions.",
        "Handler done until the response is written, waiting for earlier responses included.",
    ];
    for (part, (label, help)) in TIME_PARTS.iter().zip(helps).enumerate() {
        let name = format!("kafka_network_requestmetrics_{label}time_seconds");
        text.family(&name, "histogram", help);
        for (key, (_, times)) in &s.apis {
            let labels = format!("request=\"{}\"", crate::apis::name(*key));
            text.histogram(&name, &labels, &times[part]);
        }
    }
    let name = "kafka_server_delayedoperationpurgatory_purgatorysize";
    text.family(
        name,
        "gauge",
        "Fetches parked in a long poll, and partition appends in progress (lock, write, fsync).",
    );
    text.sample(name, "delayedoperation=\"Fetch\"", s.fetches_waiting);
    text.sample(name, "delayedoperation=\"Produce\"", s.appends_waiting);
}

/// Reactor load, connections and the queues between cores.
fn render_reactors(core: &Core, s: &Snapshot, text: &mut Text) {
    let name = "sluice_reactor_cpu_seconds_total";
    text.family(name, "counter", "CPU time of each reactor thread.");
    for reactor in &s.reactors {
        let labels = format!("reactor=\"{}\"", reactor.core);
        text.sample(name, &labels, reactor.cpu_seconds);
    }
    let name = "sluice_reactor_busy_ratio";
    text.family(
        name,
        "gauge",
        "Reactor thread CPU time over wall time since the previous scrape.",
    );
    for reactor in &s.reactors {
        let labels = format!("reactor=\"{}\"", reactor.core);
        text.sample(name, &labels, reactor.busy_ratio);
    }
    let reactors = s.reactors.len().max(1) as f64;
    let idle = s.reactors.iter().map(|r| 1.0 - r.busy_ratio).sum::<f64>() / reactors;
    text.single(
        "kafka_network_socketserver_networkprocessoravgidlepercent",
        "gauge",
        "Mean idle ratio of the reactors, which do network work (1 - busy ratio).",
        idle,
    );
    text.single(
        "kafka_server_kafkarequesthandlerpool_requesthandleravgidlepercent",
        "gauge",
        "Mean idle ratio of the reactors, which also run the handlers (1 - busy ratio).",
        idle,
    );
    let name = "sluice_cross_core_queue_depth";
    text.family(
        name,
        "gauge",
        "Jobs waiting in the queue from one core to another.",
    );
    for (from, to, depth) in &s.queue_depths {
        text.sample(name, &format!("from=\"{from}\",to=\"{to}\""), depth);
    }
    let connections = core.shared.connections.load(Ordering::Relaxed) as u64;
    text.single(
        "kafka_server_socketservermetrics_connections",
        "gauge",
        "Open client connections.",
        connections,
    );
    text.single(
        "sluice_reactors",
        "gauge",
        "Reactor threads (one per core).",
        core.shared.cores as u64,
    );
}

/// Replication and controller state: fixed values on a single node, named as Kafka names them
/// so dashboards and alerts work unchanged.
fn render_replication(s: &Snapshot, text: &mut Text) {
    text.single(
        "kafka_server_replicamanager_partitioncount",
        "gauge",
        "Partitions on this broker.",
        s.partitions,
    );
    text.single(
        "kafka_server_replicamanager_underreplicatedpartitions",
        "gauge",
        "Partitions with fewer in-sync replicas than replicas.",
        0,
    );
    text.single(
        "kafka_server_replicamanager_isrshrinks_total",
        "counter",
        "In-sync replica sets that shrank.",
        0,
    );
    text.single(
        "kafka_server_replicamanager_isrexpands_total",
        "counter",
        "In-sync replica sets that grew.",
        0,
    );
    text.single(
        "kafka_controller_kafkacontroller_activecontrollercount",
        "gauge",
        "1 on the active controller; a single node is its own.",
        1,
    );
    text.single(
        "kafka_controller_kafkacontroller_offlinepartitionscount",
        "gauge",
        "Partitions without a live leader.",
        0,
    );
}

/// Per-partition log series, served only when `sluice.metrics.partition.series` is on and at
/// most [`PARTITION_SERIES_MAX`] of them.
fn render_partitions(s: &Snapshot, text: &mut Text) {
    if s.partition_series.is_empty() {
        return;
    }
    let families: [PartitionFamily; 5] = [
        ("kafka_log_log_size", "Bytes of the partition's log.", |p| {
            p.size_bytes as i64
        }),
        (
            "kafka_log_log_numlogsegments",
            "Segments of the partition's log.",
            |p| p.segments as i64,
        ),
        (
            "kafka_log_log_logstartoffset",
            "First offset in the partition's log.",
            |p| p.log_start_offset,
        ),
        (
            "kafka_log_log_logendoffset",
            "Offset the next append gets.",
            |p| p.log_end_offset,
        ),
        (
            "sluice_log_highwatermark",
            "Offset up to which records are committed and readable.",
            |p| p.high_watermark,
        ),
    ];
    for (name, help, value) in families {
        text.family(name, "gauge", help);
        for p in &s.partition_series {
            let labels = format!("topic=\"{}\",partition=\"{}\"", p.topic, p.partition);
            text.sample(name, &labels, value(p));
        }
    }
}

/// Consumer-group lag per committed partition and its sum per group, named and labelled as
/// the common Kafka exporters do (`consumergroup`, `topic`, `partition`).
fn render_consumer_group_lag(s: &Snapshot, text: &mut Text) {
    if s.lag.is_empty() {
        return;
    }
    let name = "kafka_consumergroup_lag";
    text.family(
        name,
        "gauge",
        "Log end offset minus the group's committed offset, per partition.",
    );
    let mut sums: Vec<(&str, i64)> = Vec::new();
    for sample in &s.lag {
        let group = label_value(&sample.group);
        let labels = format!(
            "consumergroup=\"{group}\",topic=\"{}\",partition=\"{}\"",
            sample.topic, sample.partition
        );
        text.sample(name, &labels, sample.lag);
        // Samples are sorted by group, so a group's partitions are adjacent.
        match sums.last_mut() {
            Some((last, sum)) if *last == sample.group => *sum += sample.lag,
            _ => sums.push((&sample.group, sample.lag)),
        }
    }
    let name = "kafka_consumergroup_group_sum_lag";
    text.family(
        name,
        "gauge",
        "Consumer-group lag summed over every partition the group has committed.",
    );
    for (group, sum) in sums {
        let labels = format!("consumergroup=\"{}\"", label_value(group));
        text.sample(name, &labels, sum);
    }
}

/// A Prometheus label value: backslash, double quote and newline escaped. Group ids are any
/// string a client sent; topic names are restricted to characters that need none.
fn label_value(value: &str) -> String {
    let mut out = String::with_capacity(value.len());
    for c in value.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '"' => out.push_str("\\\""),
            '\n' => out.push_str("\\n"),
            c => out.push(c),
        }
    }
    out
}

/// The error codes a response carries, per resource or partition where it has them.
pub fn response_error_codes(response: &ResponseKind) -> Vec<i16> {
    use ResponseKind as R;
    match response {
        R::ApiVersions(r) => vec![r.error_code],
        R::Metadata(r) => r
            .topics
            .iter()
            .flat_map(|t| {
                std::iter::once(t.error_code).chain(t.partitions.iter().map(|p| p.error_code))
            })
            .collect(),
        R::ListOffsets(r) => r
            .topics
            .iter()
            .flat_map(|t| t.partitions.iter().map(|p| p.error_code))
            .collect(),
        R::CreateTopics(r) => r.topics.iter().map(|t| t.error_code).collect(),
        R::DeleteTopics(r) => r.responses.iter().map(|t| t.error_code).collect(),
        R::CreatePartitions(r) => r.results.iter().map(|t| t.error_code).collect(),
        R::DeleteRecords(r) => r
            .topics
            .iter()
            .flat_map(|t| t.partitions.iter().map(|p| p.error_code))
            .collect(),
        R::InitProducerId(r) => vec![r.error_code],
        R::DescribeConfigs(r) => r.results.iter().map(|x| x.error_code).collect(),
        R::AlterConfigs(r) => r.responses.iter().map(|x| x.error_code).collect(),
        R::IncrementalAlterConfigs(r) => r.responses.iter().map(|x| x.error_code).collect(),
        R::DescribeCluster(r) => vec![r.error_code],
        R::DescribeLogDirs(r) => std::iter::once(r.error_code)
            .chain(r.results.iter().map(|x| x.error_code))
            .collect(),
        R::FindCoordinator(r) => std::iter::once(r.error_code)
            .chain(r.coordinators.iter().map(|c| c.error_code))
            .collect(),
        R::JoinGroup(r) => vec![r.error_code],
        R::SyncGroup(r) => vec![r.error_code],
        R::Heartbeat(r) => vec![r.error_code],
        R::LeaveGroup(r) => vec![r.error_code],
        R::OffsetCommit(r) => r
            .topics
            .iter()
            .flat_map(|t| t.partitions.iter().map(|p| p.error_code))
            .collect(),
        R::OffsetFetch(r) => vec![r.error_code],
        R::ListGroups(r) => vec![r.error_code],
        R::DescribeGroups(r) => r.groups.iter().map(|g| g.error_code).collect(),
        R::DeleteGroups(r) => r.results.iter().map(|g| g.error_code).collect(),
        _ => Vec::new(),
    }
}

/// Serves `GET /metrics` on `listener` until the broker stops. Runs on core 0.
pub async fn serve(core: Rc<Core>, listener: TcpListener) {
    loop {
        let stream = match listener.accept().await {
            Ok((stream, _)) => stream,
            Err(error) => {
                tracing::warn!(%error, "metrics accept failed; retrying shortly");
                compio::time::sleep(ACCEPT_RETRY_DELAY).await;
                continue;
            }
        };
        let core = core.clone();
        compio::runtime::spawn(async move {
            let _ = answer(&core, stream).await;
        })
        .detach();
    }
}

fn timed_out(_: compio::time::Elapsed) -> std::io::Error {
    std::io::ErrorKind::TimedOut.into()
}

async fn answer(core: &Rc<Core>, mut stream: TcpStream) -> std::io::Result<()> {
    let head = compio::time::timeout(HTTP_IO_TIMEOUT, read_head(&mut stream))
        .await
        .map_err(timed_out)??;
    if head.is_empty() {
        return Ok(());
    }
    let response = if head.starts_with(b"GET /metrics ") || head.starts_with(b"GET /metrics?") {
        let body = render(core, &gather(core).await);
        format!(
            "HTTP/1.1 200 OK\r\nContent-Type: text/plain; version=0.0.4\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
            body.len()
        )
    } else {
        "HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\nConnection: close\r\n\r\n".to_owned()
    };
    let written = compio::time::timeout(HTTP_IO_TIMEOUT, stream.write_all(response.into_bytes()));
    written.await.map_err(timed_out)?.0?;
    Ok(())
}

/// Reads up to the end of an HTTP request head, at most [`HTTP_REQUEST_BYTES_MAX`] bytes;
/// empty when the client closed before sending anything.
async fn read_head(stream: &mut TcpStream) -> std::io::Result<Vec<u8>> {
    let mut head = Vec::new();
    while !head.windows(4).any(|w| w == b"\r\n\r\n") && head.len() < HTTP_REQUEST_BYTES_MAX {
        let buffer = Vec::with_capacity(1024);
        let compio::BufResult(read, buffer) = stream.read(buffer).await;
        if read? == 0 {
            return Ok(Vec::new());
        }
        head.extend_from_slice(&buffer);
    }
    Ok(head)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(samples: &[u64], expected_buckets: &[(usize, u64)]) {
        let histogram = Histogram::default();
        for &micros in samples {
            histogram.record(Duration::from_micros(micros));
        }
        let snapshot = histogram.snapshot();
        for &(bucket, count) in expected_buckets {
            assert_eq!(snapshot.buckets[bucket], count, "bucket {bucket}");
        }
        assert_eq!(snapshot.count, samples.len() as u64);
        assert_eq!(snapshot.sum_us, samples.iter().sum::<u64>());
    }

    #[test]
    fn histogram_buckets_are_upper_bounds() {
        check(&[0, 50, 51, 100], &[(0, 2), (1, 2), (2, 0)]);
        // Beyond the last bound only the count (the +Inf bucket) grows.
        check(&[60_000_000], &[(LATENCY_BUCKETS_US.len() - 1, 0)]);
    }

    #[test]
    fn bucket_bounds_increase() {
        assert!(LATENCY_BUCKETS_US.windows(2).all(|w| w[0] < w[1]));
    }

    #[test]
    fn waiting_gauge_drops_on_every_exit() {
        let gauge = Cell::new(0);
        {
            let _a = Waiting::enter(&gauge);
            let _b = Waiting::enter(&gauge);
            assert_eq!(gauge.get(), 2);
        }
        assert_eq!(gauge.get(), 0);
    }

    #[test]
    fn lag_keeps_whole_groups_within_the_bound() {
        let offsets = |group: &str, count: usize| -> Vec<Committed> {
            (0..count)
                .map(|p| (group.to_owned(), "t".to_owned(), p as i32, 1))
                .collect()
        };
        let mut committed = offsets("b", LAG_SERIES_MAX - 2);
        committed.extend(offsets("c", 3));
        committed.extend(offsets("a", 2));
        committed.push(("a".into(), "t".into(), 9, -1));
        let kept = whole_groups(committed);
        // "a" and "b" fit exactly; "c" would be cut, so none of it is served.
        assert_eq!(kept.len(), LAG_SERIES_MAX);
        assert!(kept.iter().all(|c| c.0 != "c" && c.3 >= 0));
        assert!(kept.windows(2).all(|w| w[0] <= w[1]));
    }

    #[test]
    fn label_values_are_escaped() {
        assert_eq!(label_value("plain-group.1"), "plain-group.1");
        assert_eq!(label_value("a\"b\\c\nd"), "a\\\"b\\\\c\\nd");
    }
}
