//! Prometheus text exposition of a gathered snapshot. No I/O and no state: what a scrape
//! shows is a function of the snapshot.

use std::fmt::Write as _;

use super::snapshot::{
    HistogramSnapshot, PartitionSample, Snapshot, TopicCounters, LATENCY_BUCKETS_US, TIME_PARTS,
};

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

/// The Prometheus text of a gathered snapshot.
pub fn render(s: &Snapshot) -> String {
    let mut text = Text(String::new());
    render_topic_metrics(s, &mut text);
    render_request_metrics(s, &mut text);
    render_reactors(s, &mut text);
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
fn render_topic_metrics(s: &Snapshot, text: &mut Text) {
    let live: Vec<(&String, &TopicCounters)> = s.topics.iter().collect();
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
fn render_reactors(s: &Snapshot, text: &mut Text) {
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
    let connections = s.connections;
    text.single(
        "kafka_server_socketservermetrics_connections",
        "gauge",
        "Open client connections.",
        connections,
    );
    text.single(
        "process_open_fds",
        "gauge",
        "Open file descriptors (counted each second once half the limit is open, else every ten).",
        s.descriptors.0,
    );
    text.single(
        "process_max_fds",
        "gauge",
        "The open-files limit (RLIMIT_NOFILE, raised to the hard limit at start).",
        s.descriptors.1,
    );
    text.single(
        "sluice_log_files_open",
        "gauge",
        "Segment log files held open; idle ones are closed past sluice_log_files_max.",
        s.log_files.0,
    );
    text.single(
        "sluice_log_files_max",
        "gauge",
        "Segment log files that may be held open: half the open-files limit.",
        s.log_files.1,
    );
    text.single(
        "sluice_reactors",
        "gauge",
        "Reactor threads (one per core).",
        s.reactors.len() as u64,
    );
}

/// Replication and controller state: fixed values on a single node, named as Kafka names them
/// so dashboards and alerts work unchanged.
fn render_replication(s: &Snapshot, text: &mut Text) {
    text.single(
        "kafka_server_replicamanager_partitioncount",
        "gauge",
        "Partitions with a replica on this broker.",
        s.partitions,
    );
    text.single(
        "kafka_server_replicamanager_leadercount",
        "gauge",
        "Partitions this broker leads.",
        s.leaders,
    );
    text.single(
        "kafka_server_replicamanager_underreplicatedpartitions",
        "gauge",
        "Partitions this broker leads with fewer in-sync replicas than replicas.",
        s.under_replicated,
    );
    text.single(
        "kafka_server_replicamanager_underminisrpartitioncount",
        "gauge",
        "Partitions this broker leads with fewer in-sync replicas than min.insync.replicas (Kafka's UnderMinIsrPartitionCount).",
        s.under_min_isr,
    );
    text.single(
        "kafka_server_replicamanager_isrshrinks_total",
        "counter",
        "In-sync replica sets this broker shrank as leader.",
        s.isr_shrinks,
    );
    text.single(
        "kafka_server_replicamanager_isrexpands_total",
        "counter",
        "In-sync replica sets this broker grew as leader.",
        s.isr_expands,
    );
    text.single(
        "kafka_server_brokertopicmetrics_replicationbytesin_total",
        "counter",
        "Record bytes copied from leaders.",
        s.replication_bytes_in,
    );
    let name = "sluice_partition_follower_lag";
    text.family(
        name,
        "gauge",
        "Offsets a follower is behind the leader's log end, on partitions this broker leads.",
    );
    for lag in &s.follower_lag {
        let labels = format!(
            "topic=\"{}\",partition=\"{}\",follower=\"{}\"",
            lag.topic, lag.partition, lag.follower
        );
        text.sample(name, &labels, lag.lag);
    }
    text.single(
        "kafka_controller_kafkacontroller_activecontrollercount",
        "gauge",
        "1 on the active controller of the quorum, 0 elsewhere.",
        s.active_controller,
    );
    text.single(
        "kafka_controller_kafkacontroller_offlinepartitionscount",
        "gauge",
        "Partitions without a leader, as the active controller counts them (0 elsewhere).",
        s.offline_partitions,
    );
    text.single(
        "kafka_controller_controllerstats_uncleanleaderelectionspersec_total",
        "counter",
        "Leaders elected from outside the ISR by this node's controller (unclean.leader.election.enable).",
        s.unclean_elections,
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn label_values_are_escaped() {
        assert_eq!(label_value("plain-group.1"), "plain-group.1");
        assert_eq!(label_value("a\"b\\c\nd"), "a\\\"b\\\\c\\nd");
    }
}
