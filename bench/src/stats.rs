//! Measurements: each worker's window of counters and latency histogram, the progress line the
//! reporter prints per interval, and the final summary as text, JSON or CSV.

use std::fmt::Write as _;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use hdrhistogram::Histogram;

/// The longest latency the histograms hold, in microseconds; longer samples are clamped. An
/// hour is far past any request timeout, so clamping never hides a real figure.
pub const LATENCY_US_MAX: u64 = 3_600_000_000;
/// Three significant figures: p99.99 of 1.234 ms is told apart from 1.235 ms.
const LATENCY_SIGNIFICANT_FIGURES: u8 = 3;
/// Percentiles every report shows, as (label, quantile).
pub const PERCENTILES: [(&str, f64); 5] = [
    ("p50", 0.50),
    ("p90", 0.90),
    ("p99", 0.99),
    ("p99.9", 0.999),
    ("p99.99", 0.9999),
];

/// Counters and request latencies over some span of a run.
#[derive(Debug, Clone)]
pub struct Stats {
    pub messages: u64,
    /// Message value bytes, known only where the tool made the messages (produce).
    pub payload_bytes: u64,
    /// Record batch bytes as they crossed the wire (compressed, if they were).
    pub batch_bytes: u64,
    pub requests: u64,
    /// Requests that returned an error code for their partition.
    pub errors: u64,
    pub latency_us: Histogram<u64>,
}

impl Default for Stats {
    fn default() -> Self {
        Self::new()
    }
}

impl Stats {
    pub fn new() -> Self {
        let latency_us = Histogram::new_with_bounds(1, LATENCY_US_MAX, LATENCY_SIGNIFICANT_FIGURES)
            .expect("constant histogram bounds are valid");
        Self {
            messages: 0,
            payload_bytes: 0,
            batch_bytes: 0,
            requests: 0,
            errors: 0,
            latency_us,
        }
    }

    pub fn record(&mut self, sample: &Sample) {
        self.requests += 1;
        if sample.error {
            self.errors += 1;
        } else {
            self.messages += sample.messages;
            self.payload_bytes += sample.payload_bytes;
            self.batch_bytes += sample.batch_bytes;
        }
        if let Some(latency) = sample.latency {
            let micros = u64::try_from(latency.as_micros()).unwrap_or(u64::MAX);
            self.latency_us.saturating_record(micros.max(1));
        }
    }

    pub fn merge(&mut self, other: &Stats) {
        self.messages += other.messages;
        self.payload_bytes += other.payload_bytes;
        self.batch_bytes += other.batch_bytes;
        self.requests += other.requests;
        self.errors += other.errors;
        self.latency_us
            .add(&other.latency_us)
            .expect("histograms with the same bounds always merge");
    }

    /// The latency at `quantile` in microseconds, or None before the first sample.
    pub fn latency_at(&self, quantile: f64) -> Option<u64> {
        (!self.latency_us.is_empty()).then(|| self.latency_us.value_at_quantile(quantile))
    }

    pub fn latency_max(&self) -> Option<u64> {
        (!self.latency_us.is_empty()).then(|| self.latency_us.max())
    }
}

/// One request's outcome, as a worker reports it.
#[derive(Debug, Clone, Copy, Default)]
pub struct Sample {
    pub messages: u64,
    pub payload_bytes: u64,
    pub batch_bytes: u64,
    /// None where there is no answer to time (acks=0).
    pub latency: Option<Duration>,
    pub error: bool,
}

/// What one worker has measured: the reporter empties `interval` on every tick, while `total`
/// only takes samples from after the warm-up.
#[derive(Debug, Default)]
pub struct Window {
    pub interval: Stats,
    pub total: Stats,
    /// Messages since the start, warm-up included, for the progress line.
    pub messages_all: u64,
    pub last_completion: Option<Instant>,
}

impl Window {
    pub fn record(&mut self, sample: &Sample, measured: bool, now: Instant) {
        self.interval.record(sample);
        if !sample.error {
            self.messages_all += sample.messages;
        }
        if measured {
            self.total.record(sample);
            self.last_completion = Some(now);
        }
    }
}

/// Workers lock their window once per request, the reporter once per interval; the lock is
/// never contended for longer than a histogram merge.
pub type SharedWindow = Arc<Mutex<Window>>;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    Produce,
    Consume,
    EndToEnd,
}

impl Mode {
    pub fn name(self) -> &'static str {
        match self {
            Mode::Produce => "produce",
            Mode::Consume => "consume",
            Mode::EndToEnd => "end-to-end",
        }
    }
}

fn per_second(count: u64, elapsed: Duration) -> f64 {
    let seconds = elapsed.as_secs_f64();
    if seconds > 0.0 {
        count as f64 / seconds
    } else {
        0.0
    }
}

/// Megabytes are 10^6 bytes throughout, so figures compare with network and disk ratings.
const MB: f64 = 1e6;

fn millis(micros: Option<u64>) -> String {
    match micros {
        Some(micros) => format!("{:.3}", micros as f64 / 1000.0),
        None => "-".to_owned(),
    }
}

/// The progress line for one interval, as printed to stderr.
pub fn interval_line(
    mode: Mode,
    since_start: Duration,
    span: Duration,
    stats: &Stats,
    messages_all: u64,
    warmup: bool,
) -> String {
    let bytes = match mode {
        Mode::Produce | Mode::EndToEnd => stats.payload_bytes,
        Mode::Consume => stats.batch_bytes,
    };
    let mut line = format!(
        "{:>8.1}s {} {:>10.0} msg/s {:>9.1} MB/s  lat ms p50 {} p99 {} max {}  total {}",
        since_start.as_secs_f64(),
        mode.name(),
        per_second(stats.messages, span),
        per_second(bytes, span) / MB,
        millis(stats.latency_at(0.5)),
        millis(stats.latency_at(0.99)),
        millis(stats.latency_max()),
        messages_all,
    );
    if stats.errors > 0 {
        let _ = write!(line, "  errors {}", stats.errors);
    }
    if warmup {
        line.push_str("  (warm-up)");
    }
    line
}

/// A value in the summary's machine-readable forms.
#[derive(Debug, Clone, PartialEq)]
pub enum Value {
    Int(i64),
    Float(f64),
    Text(String),
    Null,
}

impl From<u64> for Value {
    fn from(value: u64) -> Self {
        Value::Int(i64::try_from(value).unwrap_or(i64::MAX))
    }
}

impl From<Option<u64>> for Value {
    fn from(value: Option<u64>) -> Self {
        value.map_or(Value::Null, Value::from)
    }
}

/// The outcome of a run: its settings and everything measured after the warm-up.
#[derive(Debug)]
pub struct Summary {
    pub mode: Mode,
    /// The run's settings, in the order they are reported.
    pub settings: Vec<(&'static str, Value)>,
    pub stats: Stats,
    /// From the end of the warm-up to the last measured answer.
    pub elapsed: Duration,
}

impl Summary {
    /// Every reported figure, named as in the JSON and CSV forms; latencies in microseconds.
    pub fn fields(&self) -> Vec<(String, Value)> {
        let stats = &self.stats;
        let mut fields: Vec<(String, Value)> =
            vec![("mode".to_owned(), Value::Text(self.mode.name().to_owned()))];
        fields.extend(
            self.settings
                .iter()
                .map(|(k, v)| ((*k).to_owned(), v.clone())),
        );
        let payload_mb_per_s = match self.mode {
            Mode::Produce | Mode::EndToEnd => {
                Value::Float(per_second(stats.payload_bytes, self.elapsed) / MB)
            }
            Mode::Consume => Value::Null,
        };
        let figures = [
            ("messages", Value::from(stats.messages)),
            ("payload_bytes", Value::from(stats.payload_bytes)),
            ("batch_bytes", Value::from(stats.batch_bytes)),
            ("requests", Value::from(stats.requests)),
            ("errors", Value::from(stats.errors)),
            ("elapsed_s", Value::Float(self.elapsed.as_secs_f64())),
            (
                "msgs_per_s",
                Value::Float(per_second(stats.messages, self.elapsed)),
            ),
            ("payload_mb_per_s", payload_mb_per_s),
            (
                "batch_mb_per_s",
                Value::Float(per_second(stats.batch_bytes, self.elapsed) / MB),
            ),
        ];
        fields.extend(figures.into_iter().map(|(k, v)| (k.to_owned(), v)));
        for (label, quantile) in PERCENTILES {
            let name = format!("latency_{}_us", label.replace('.', "_"));
            fields.push((name, stats.latency_at(quantile).into()));
        }
        fields.push(("latency_max_us".to_owned(), stats.latency_max().into()));
        fields
    }

    pub fn json(&self) -> String {
        let body: Vec<String> = self
            .fields()
            .iter()
            .map(|(name, value)| format!("{}:{}", json_string(name), json_value(value)))
            .collect();
        format!("{{{}}}", body.join(","))
    }

    /// A header line and one row, so runs can be appended to one file (skip the header).
    pub fn csv(&self) -> String {
        let fields = self.fields();
        let header: Vec<&str> = fields.iter().map(|(name, _)| name.as_str()).collect();
        let row: Vec<String> = fields.iter().map(|(_, value)| csv_value(value)).collect();
        format!("{}\n{}", header.join(","), row.join(","))
    }

    pub fn text(&self) -> String {
        let stats = &self.stats;
        let settings: Vec<String> = self
            .settings
            .iter()
            .map(|(name, value)| format!("{name}={}", text_value(value)))
            .collect();
        let mut out = format!("{}: {}\n", self.mode.name(), settings.join(" "));
        let _ = write!(
            out,
            "{} messages in {:.3} s: {:.0} msg/s",
            stats.messages,
            self.elapsed.as_secs_f64(),
            per_second(stats.messages, self.elapsed),
        );
        let batch_mb = per_second(stats.batch_bytes, self.elapsed) / MB;
        match self.mode {
            Mode::Produce | Mode::EndToEnd => {
                let payload_mb = per_second(stats.payload_bytes, self.elapsed) / MB;
                let _ = writeln!(
                    out,
                    ", {payload_mb:.1} MB/s of values ({batch_mb:.1} MB/s of batches)"
                );
            }
            Mode::Consume => {
                let _ = writeln!(out, ", {batch_mb:.1} MB/s of batches");
            }
        }
        match self.mode {
            Mode::EndToEnd => {
                // Each consumed batch is one sample, timed from its send stamp.
                let _ = writeln!(out, "{} batches, {} errors", stats.requests, stats.errors);
                out.push_str("end-to-end latency ms:");
            }
            Mode::Produce | Mode::Consume => {
                let _ = writeln!(out, "{} requests, {} errors", stats.requests, stats.errors);
                out.push_str("request latency ms:");
            }
        }
        for (label, quantile) in PERCENTILES {
            let _ = write!(out, " {label} {}", millis(stats.latency_at(quantile)));
        }
        let _ = write!(out, " max {}", millis(stats.latency_max()));
        out
    }
}

fn json_string(text: &str) -> String {
    let mut out = String::with_capacity(text.len() + 2);
    out.push('"');
    for c in text.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            c if u32::from(c) < 0x20 => {
                let _ = write!(out, "\\u{:04x}", u32::from(c));
            }
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

fn json_value(value: &Value) -> String {
    match value {
        Value::Int(n) => n.to_string(),
        // JSON has no NaN or infinity.
        Value::Float(x) if x.is_finite() => format!("{x:.3}"),
        Value::Float(_) | Value::Null => "null".to_owned(),
        Value::Text(text) => json_string(text),
    }
}

fn csv_value(value: &Value) -> String {
    match value {
        Value::Int(n) => n.to_string(),
        Value::Float(x) if x.is_finite() => format!("{x:.3}"),
        Value::Float(_) | Value::Null => String::new(),
        Value::Text(text) if text.contains([',', '"', '\n', '\r']) => {
            format!("\"{}\"", text.replace('"', "\"\""))
        }
        Value::Text(text) => text.clone(),
    }
}

fn text_value(value: &Value) -> String {
    match value {
        Value::Int(n) => n.to_string(),
        Value::Float(x) => format!("{x}"),
        Value::Text(text) => text.clone(),
        Value::Null => "-".to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample(messages: u64, latency_ms: Option<u64>, error: bool) -> Sample {
        Sample {
            messages,
            payload_bytes: messages * 100,
            batch_bytes: messages * 110,
            latency: latency_ms.map(Duration::from_millis),
            error,
        }
    }

    fn summary() -> Summary {
        let mut stats = Stats::new();
        for latency_ms in 1..=100 {
            stats.record(&sample(10, Some(latency_ms), false));
        }
        stats.record(&sample(10, Some(5000), true));
        Summary {
            mode: Mode::Produce,
            settings: vec![
                ("topic", Value::Text("t\"1".to_owned())),
                ("partitions", Value::Int(16)),
                ("rate", Value::Null),
            ],
            stats,
            elapsed: Duration::from_secs(2),
        }
    }

    #[test]
    fn errors_count_requests_but_not_messages() {
        let summary = summary();
        assert_eq!(summary.stats.requests, 101);
        assert_eq!(summary.stats.errors, 1);
        assert_eq!(summary.stats.messages, 1000);
        assert_eq!(summary.stats.payload_bytes, 100_000);
        // The failed request still took its time.
        let max = summary.stats.latency_max().unwrap();
        assert!((5_000_000..5_010_000).contains(&max), "{max}");
    }

    #[test]
    fn percentiles_come_from_the_histogram() {
        let stats = summary().stats;
        let p50 = stats.latency_at(0.5).unwrap();
        assert!((51_000..=51_100).contains(&p50), "{p50}");
        let p99 = stats.latency_at(0.99).unwrap();
        assert!((99_000..=100_100).contains(&p99), "{p99}");
        assert_eq!(Stats::new().latency_at(0.5), None);
    }

    #[test]
    fn merging_adds_counts_and_histograms() {
        let mut a = Stats::new();
        a.record(&sample(3, Some(1), false));
        let mut b = Stats::new();
        b.record(&sample(4, Some(9), false));
        b.record(&sample(1, None, false));
        a.merge(&b);
        assert_eq!((a.messages, a.requests, a.errors), (8, 3, 0));
        assert_eq!(a.latency_us.len(), 2);
    }

    #[test]
    fn warmup_samples_reach_the_interval_only() {
        let mut window = Window::default();
        let now = Instant::now();
        window.record(&sample(5, Some(1), false), false, now);
        window.record(&sample(7, Some(1), false), true, now);
        assert_eq!(window.interval.messages, 12);
        assert_eq!(window.total.messages, 7);
        assert_eq!(window.messages_all, 12);
        assert_eq!(window.last_completion, Some(now));
    }

    #[test]
    fn json_is_one_flat_object() {
        let json = summary().json();
        assert!(
            json.starts_with(r#"{"mode":"produce","topic":"t\"1","partitions":16,"rate":null,"#)
        );
        assert!(json.contains(r#""messages":1000,"#));
        assert!(json.contains(r#""msgs_per_s":500.000,"#));
        assert!(json.contains(r#""payload_mb_per_s":0.050,"#));
        assert!(json.contains(r#""latency_p99_9_us":"#));
        assert!(json.ends_with('}'));
        assert!(!json.contains('\n'));
    }

    #[test]
    fn csv_has_a_header_and_a_row_of_the_same_width() {
        let csv = summary().csv();
        let lines: Vec<&str> = csv.lines().collect();
        assert_eq!(lines.len(), 2);
        assert!(lines[0].starts_with("mode,topic,partitions,rate,messages,"));
        assert!(lines[1].starts_with("produce,\"t\"\"1\",16,,1000,"));
        assert_eq!(lines[0].split(',').count(), lines[1].split(',').count());
    }

    #[test]
    fn text_names_the_figures() {
        let text = summary().text();
        assert!(text.starts_with("produce: topic=t\"1 partitions=16 rate=-\n"));
        assert!(text.contains("1000 messages in 2.000 s: 500 msg/s, 0.1 MB/s of values"));
        assert!(text.contains("101 requests, 1 errors"));
        assert!(text.contains("p99.99 "));
    }

    #[test]
    fn end_to_end_summaries_name_batches_and_count_values() {
        let mut summary = summary();
        summary.mode = Mode::EndToEnd;
        let text = summary.text();
        assert!(text.starts_with("end-to-end: "), "{text}");
        assert!(text.contains("MB/s of values"), "{text}");
        assert!(text.contains("101 batches, 1 errors"), "{text}");
        assert!(text.contains("end-to-end latency ms: p50 "), "{text}");
        let json = summary.json();
        assert!(json.contains(r#""payload_mb_per_s":0.050,"#), "{json}");
        let line = interval_line(
            Mode::EndToEnd,
            Duration::from_secs(1),
            Duration::from_secs(1),
            &summary.stats,
            1000,
            false,
        );
        assert!(line.contains("end-to-end       1000 msg/s"), "{line}");
    }

    #[test]
    fn interval_lines_show_rates_over_their_span() {
        let mut stats = Stats::new();
        stats.record(&sample(500, Some(2), false));
        let line = interval_line(
            Mode::Produce,
            Duration::from_secs(3),
            Duration::from_millis(500),
            &stats,
            4000,
            true,
        );
        assert!(line.contains("produce       1000 msg/s"), "{line}");
        assert!(line.contains("0.1 MB/s"), "{line}");
        assert!(line.contains("p50 2.000"), "{line}");
        assert!(line.contains("total 4000"), "{line}");
        assert!(line.ends_with("(warm-up)"), "{line}");
    }
}
