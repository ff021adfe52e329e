//! What a scrape collects: a copy of every core's counters, and the partition, group and lag
//! samples, that can cross cores and be summed. `cells.rs` fills one per core, `gather.rs`
//! merges them, `text.rs` renders the result.

use std::collections::BTreeMap;

/// Upper bounds of the latency histogram buckets, in microseconds (50 µs to 30 s, the longest
/// a fetch may wait). The `+Inf` bucket is the count.
pub const LATENCY_BUCKETS_US: [u64; 18] = [
    50, 100, 250, 500, 1_000, 2_500, 5_000, 10_000, 25_000, 50_000, 100_000, 250_000, 500_000,
    1_000_000, 2_500_000, 5_000_000, 10_000_000, 30_000_000,
];

/// Partition series served at most, whatever the partition count, so a scrape stays bounded.
pub const PARTITION_SERIES_MAX: usize = 10_000;
/// Consumer-group lag series (one per committed partition of a group) served at most.
pub const LAG_SERIES_MAX: usize = PARTITION_SERIES_MAX;

/// The five parts of a request's time, as Kafka splits them.
pub const TIME_PARTS: [&str; 5] = ["total", "requestqueue", "local", "remote", "responsesend"];

#[derive(Default, Clone, Copy)]
pub struct TopicCounters {
    pub bytes_in: u64,
    pub messages_in: u64,
    pub bytes_out: u64,
}

#[derive(Default, Clone, Copy)]
pub struct HistogramSnapshot {
    pub buckets: [u64; LATENCY_BUCKETS_US.len()],
    pub count: u64,
    pub sum_us: u64,
}

impl HistogramSnapshot {
    pub fn merge(&mut self, other: &HistogramSnapshot) {
        for (mine, theirs) in self.buckets.iter_mut().zip(other.buckets) {
            *mine += theirs;
        }
        self.count += other.count;
        self.sum_us += other.sum_us;
    }
}

#[derive(Clone, Copy)]
pub struct ReactorSample {
    pub core: usize,
    pub cpu_seconds: f64,
    pub busy_ratio: f64,
}

/// One partition's log, for the per-partition series.
pub struct PartitionSample {
    pub topic: String,
    pub partition: i32,
    pub size_bytes: u64,
    pub segments: usize,
    pub log_start_offset: i64,
    pub log_end_offset: i64,
    pub high_watermark: i64,
}

/// One committed offset of a group coordinated on some core: (group, topic, partition, offset).
pub type Committed = (String, String, i32, i64);

/// How far one follower is behind the leader's log end on one partition.
#[derive(Debug, Clone)]
pub struct FollowerLag {
    pub topic: String,
    pub partition: i32,
    pub follower: i32,
    pub lag: i64,
}

/// One group's lag on one partition.
pub struct LagSample {
    pub group: String,
    pub topic: String,
    pub partition: i32,
    /// The log end offset minus the committed offset, as Kafka's consumer-groups tool counts
    /// it: negative when the log was truncated below the commit.
    pub lag: i64,
}

pub type ApiSnapshot = (u64, [HistogramSnapshot; TIME_PARTS.len()]);

/// A copy of counters that can cross cores, summed over cores on scrape.
#[derive(Default)]
pub struct Snapshot {
    pub bytes_in: u64,
    pub messages_in: u64,
    pub produce_requests: u64,
    pub fetch_requests: u64,
    pub fetch_record_bytes: u64,
    pub zero_copy_bytes: u64,
    pub bytes_out: u64,
    pub fetches_waiting: u64,
    pub appends_waiting: u64,
    pub partitions: u64,
    /// Partitions this broker leads, those of them with an ISR smaller than their replicas,
    /// and those with an ISR below their `min.insync.replicas`.
    pub leaders: u64,
    pub under_replicated: u64,
    pub under_min_isr: u64,
    pub isr_shrinks: u64,
    pub isr_expands: u64,
    pub replication_bytes_in: u64,
    /// On the active controller: 1, and the partitions without a leader; 0 elsewhere.
    pub active_controller: u64,
    pub offline_partitions: u64,
    /// Leaders this node's controller elected from outside the ISR, since it started.
    pub unclean_elections: u64,
    /// Each follower's lag behind a partition this broker leads, in offsets.
    pub follower_lag: Vec<FollowerLag>,
    /// Open client connections, broker-wide.
    pub connections: u64,
    /// Open descriptors as last counted, and the open-files limit.
    pub descriptors: (u64, u64),
    /// Segment log files held open, and how many may be.
    pub log_files: (u64, u64),
    pub topics: BTreeMap<String, TopicCounters>,
    pub apis: BTreeMap<i16, ApiSnapshot>,
    pub errors: BTreeMap<(i16, i16), u64>,
    pub reactors: Vec<ReactorSample>,
    /// (from core, to core, jobs waiting).
    pub queue_depths: Vec<(usize, usize, usize)>,
    pub partition_series: Vec<PartitionSample>,
    /// Committed offsets of the groups on the core (whole groups, at most `LAG_SERIES_MAX`).
    pub committed: Vec<Committed>,
    pub lag: Vec<LagSample>,
}

impl Snapshot {
    pub fn merge(&mut self, other: Snapshot) {
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
        self.leaders += other.leaders;
        self.under_replicated += other.under_replicated;
        self.under_min_isr += other.under_min_isr;
        self.isr_shrinks += other.isr_shrinks;
        self.isr_expands += other.isr_expands;
        self.replication_bytes_in += other.replication_bytes_in;
        let room = PARTITION_SERIES_MAX.saturating_sub(self.follower_lag.len());
        self.follower_lag
            .extend(other.follower_lag.into_iter().take(room));
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
