//! Per-core counters and histograms: plain cells touched only by their own core, so the hot
//! path shares no atomics between cores. A scrape copies them into a `Snapshot`.

use std::cell::{Cell, RefCell};
use std::collections::HashMap;
use std::time::{Duration, Instant};

use super::snapshot::{
    HistogramSnapshot, ReactorSample, Snapshot, TopicCounters, LATENCY_BUCKETS_US, TIME_PARTS,
};

/// API keys below this get request counts and latency histograms; Kafka's keys are all below.
pub const API_KEY_LIMIT: usize = 96;

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
    /// ISR changes this broker's partitions made as leader.
    pub isr_shrinks: Cell<u64>,
    pub isr_expands: Cell<u64>,
    /// Record bytes copied from leaders.
    pub replication_bytes_in: Cell<u64>,
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
            isr_shrinks: Cell::default(),
            isr_expands: Cell::default(),
            replication_bytes_in: Cell::default(),
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
    pub fn forget_deleted_topics(&self, exists: impl Fn(&str) -> bool) {
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

    pub fn snapshot(&self, core_id: usize) -> Snapshot {
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
            isr_shrinks: self.isr_shrinks.get(),
            isr_expands: self.isr_expands.get(),
            replication_bytes_in: self.replication_bytes_in.get(),
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
}
