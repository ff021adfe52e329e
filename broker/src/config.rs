//! Broker configuration: Kafka's property names, read from a `server.properties` file and
//! `--override key=value` arguments, with Kafka's defaults where Sluice has the same knob.

use std::collections::BTreeMap;
use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};

/// Where a configuration value came from, in Kafka's DescribeConfigs terms.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Source {
    Default,
    StaticBroker,
    /// Set at run time for the whole cluster (the broker resource named "").
    DynamicDefault,
    /// Set at run time for this broker (the broker resource named by its id).
    DynamicBroker,
}

/// Broker properties that IncrementalAlterConfigs and AlterConfigs may change while the broker
/// runs; every other property is read-only and needs a restart. Each of these reaches its
/// users without a restart: log settings through every log's config, `max.connections` at
/// the next accept, the metrics switch at the next scrape, pinning when every reactor applies
/// it to its own thread, `num.replica.fetchers` when the fetchers re-spread their partitions.
pub const DYNAMIC_KEYS: &[&str] = &[
    "log.segment.bytes",
    "log.roll.ms",
    "log.index.size.max.bytes",
    "log.index.interval.bytes",
    "log.retention.ms",
    "log.retention.bytes",
    "log.flush.interval.messages",
    "log.flush.interval.ms",
    "message.max.bytes",
    "max.connections",
    "max.connections.per.ip",
    "max.connections.per.ip.overrides",
    "num.replica.fetchers",
    "sluice.metrics.partition.series",
    "sluice.pin.cores",
    "unclean.leader.election.enable",
];

/// Whether `key`, or the key it is a synonym of, can change while the broker runs.
pub fn is_dynamic(key: &str) -> bool {
    DYNAMIC_KEYS.contains(&canonical(key))
}

/// The key a synonym sets (`log.retention.minutes` sets `log.retention.ms`), or `key` itself.
pub fn canonical(key: &str) -> &str {
    SYNONYMS
        .iter()
        .find(|(alias, _, _)| *alias == key)
        .map_or(key, |&(_, canonical, _)| canonical)
}

/// The names that set `key` with their unit multipliers, in Kafka's precedence within one
/// layer: the key itself, then its synonyms from the finest unit to the coarsest.
fn names_setting(key: &str) -> impl Iterator<Item = (&str, i64)> {
    let synonyms = SYNONYMS
        .iter()
        .filter(move |(_, canonical, _)| *canonical == key)
        .map(|&(alias, _, unit)| (alias, unit));
    std::iter::once((key, 1)).chain(synonyms)
}

/// One property Sluice knows, with its default and a line for `--help` and the README.
pub struct Key {
    pub name: &'static str,
    pub default: &'static str,
    pub doc: &'static str,
}

/// Every property Sluice accepts. Unknown properties are kept (so a Kafka `server.properties`
/// can be used unchanged) but reported once at start-up.
pub const KEYS: &[Key] = &[
    Key { name: "listeners", default: "PLAINTEXT://127.0.0.1:9092", doc: "Addresses to listen on, `NAME://host:port` comma-separated: the client listener, and a controller listener named in `controller.listener.names`." },
    Key { name: "advertised.listeners", default: "", doc: "Address given to clients in Metadata; defaults to the client listener." },
    Key { name: "node.id", default: "0", doc: "This broker's id (`broker.id` is accepted as a synonym)." },
    Key { name: "process.roles", default: "", doc: "`broker`, `controller` or both; unset runs a one-node cluster in combined mode." },
    Key { name: "controller.quorum.voters", default: "", doc: "The controller quorum, `id@host:port` comma-separated; unset means this node alone." },
    Key { name: "controller.listener.names", default: "CONTROLLER", doc: "The listener that serves the controller quorum and brokers' registrations." },
    Key { name: "broker.session.timeout.ms", default: "9000", doc: "A broker not heard from for this long is fenced and its leaderships move." },
    Key { name: "broker.heartbeat.interval.ms", default: "2000", doc: "How often a broker heartbeats to the active controller." },
    Key { name: "log.dirs", default: "./data", doc: "Directory that holds partition logs and broker state." },
    Key { name: "num.partitions", default: "1", doc: "Partitions of an auto-created topic." },
    Key { name: "auto.create.topics.enable", default: "true", doc: "Create unknown topics on Produce and Metadata." },
    Key { name: "log.segment.bytes", default: "1073741824", doc: "Roll the active segment at this size." },
    Key { name: "log.roll.ms", default: "604800000", doc: "Roll the active segment at this age (`log.roll.hours` accepted)." },
    Key { name: "log.index.size.max.bytes", default: "10485760", doc: "Preallocated size of each offset and time index." },
    Key { name: "log.index.interval.bytes", default: "4096", doc: "Bytes of log between two offset index entries." },
    Key { name: "log.retention.ms", default: "604800000", doc: "Delete sealed segments older than this; -1 keeps forever (`log.retention.minutes`/`hours` accepted)." },
    Key { name: "log.retention.bytes", default: "-1", doc: "Delete the oldest sealed segments beyond this partition size; -1 is unlimited." },
    Key { name: "log.retention.check.interval.ms", default: "300000", doc: "How often each reactor applies retention and time-based rolls." },
    Key { name: "log.flush.interval.messages", default: "9223372036854775807", doc: "fsync after this many messages; 1 makes every append durable before it is acknowledged." },
    Key { name: "log.flush.interval.ms", default: "", doc: "fsync at least this often; unset leaves flushing to the page cache, as Kafka does." },
    Key { name: "message.max.bytes", default: "1048588", doc: "Largest record batch a producer may send." },
    Key { name: "socket.request.max.bytes", default: "104857600", doc: "Largest request frame; a bigger one closes the connection." },
    Key { name: "fetch.max.bytes", default: "57671680", doc: "Largest fetch response, whatever the consumer asks (at least one batch still goes out)." },
    Key { name: "max.connections", default: "2147483647", doc: "Connections accepted at once across all reactors." },
    Key { name: "queued.max.requests", default: "500", doc: "Requests in flight per connection before reading stops (backpressure)." },
    Key { name: "queued.max.request.bytes", default: "536870912", doc: "Request bytes held at once across all connections; past it, reactors stop reading request bodies until handled requests free memory. -1: no bound, as Kafka's default." },
    Key { name: "max.connections.per.ip", default: "2147483647", doc: "Connections accepted at once from one IP address; more are closed on accept." },
    Key { name: "max.connections.per.ip.overrides", default: "", doc: "Per-address exceptions to max.connections.per.ip, as ip:count,ip:count (IP addresses, not host names)." },
    Key { name: "socket.send.buffer.bytes", default: "-1", doc: "SO_SNDBUF of every accepted client connection; -1 leaves the OS default (and its autotuning)." },
    Key { name: "socket.receive.buffer.bytes", default: "-1", doc: "SO_RCVBUF of every accepted client connection; -1 leaves the OS default (and its autotuning)." },
    Key { name: "replica.socket.receive.buffer.bytes", default: "-1", doc: "SO_RCVBUF of each follower fetcher's connection to a leader; -1 leaves the OS default." },
    Key { name: "connections.max.idle.ms", default: "600000", doc: "Close a connection with no request in flight that has neither sent nor been sent anything for this long, a frame stalled halfway included." },
    Key { name: "num.network.threads", default: "3", doc: "Accepted and ignored: reactors do network work (see `sluice.reactors`)." },
    Key { name: "num.io.threads", default: "8", doc: "Accepted and ignored: reactors do disk work (see `sluice.reactors`)." },
    Key { name: "num.replica.fetchers", default: "1", doc: "Follower fetchers per source broker; partition p of topic t goes to fetcher abs(31 * hash(t) + p) % this, as in Kafka." },
    Key { name: "replica.lag.time.max.ms", default: "30000", doc: "A follower not caught up with the leader for this long leaves the ISR." },
    Key { name: "replica.fetch.max.bytes", default: "1048576", doc: "Bytes a follower asks for per partition in one fetch (at least one batch comes)." },
    Key { name: "replica.fetch.response.max.bytes", default: "10485760", doc: "Bytes a follower asks for in one fetch, all partitions together." },
    Key { name: "replica.fetch.wait.max.ms", default: "500", doc: "How long a follower's fetch waits at the leader for data." },
    Key { name: "replica.fetch.min.bytes", default: "1", doc: "Bytes a follower's fetch waits for at the leader." },
    Key { name: "replica.fetch.backoff.ms", default: "1000", doc: "Pause of a follower's fetcher after its leader failed it." },
    Key { name: "unclean.leader.election.enable", default: "false", doc: "Let a replica outside the ISR lead when the whole ISR is gone, at the cost of the records only the ISR had (also a topic config)." },
    Key { name: "auto.leader.rebalance.enable", default: "true", doc: "Give leaderships back to preferred (first) replicas that are in sync again." },
    Key { name: "leader.imbalance.check.interval.seconds", default: "300", doc: "How often the active controller looks for leaderships away from their preferred replicas." },
    Key { name: "leader.imbalance.per.broker.percentage", default: "10", doc: "Share of a broker's preferred leaderships held elsewhere above which they move back." },
    Key { name: "min.insync.replicas", default: "1", doc: "Replicas that must have an acks=-1 write." },
    Key { name: "default.replication.factor", default: "1", doc: "Replication factor of auto-created topics and of CreateTopics asking for the default." },
    Key { name: "offsets.topic.replication.factor", default: "3", doc: "Replication factor of `__consumer_offsets`, capped by the live brokers when it is created." },
    Key { name: "offsets.topic.num.partitions", default: "50", doc: "Partitions of `__consumer_offsets`, created on first group use; a group lives on partition hash(group) % this." },
    Key { name: "offsets.retention.minutes", default: "10080", doc: "Committed offsets of an empty group expire this long after the later of their commit and the group becoming empty." },
    Key { name: "offsets.retention.check.interval.ms", default: "600000", doc: "How often each reactor looks for expired committed offsets." },
    Key { name: "group.initial.rebalance.delay.ms", default: "3000", doc: "How long the first rebalance of an empty group waits for more members to join." },
    Key { name: "group.min.session.timeout.ms", default: "6000", doc: "Smallest `session.timeout.ms` a group member may ask for." },
    Key { name: "group.max.session.timeout.ms", default: "1800000", doc: "Largest `session.timeout.ms` a group member may ask for." },
    Key { name: "sluice.reactors", default: "0", doc: "Reactor threads, one per core; 0 means one per available core." },
    Key { name: "sluice.pin.cores", default: "false", doc: "Pin reactor N to the N-th CPU the process may run on (its cpuset or `taskset`), wrapping around when there are more reactors than CPUs." },
    Key { name: "sluice.metrics.address", default: "127.0.0.1:9101", doc: "Where Prometheus scrapes GET /metrics; empty switches the endpoint off." },
    Key { name: "sluice.metrics.partition.series", default: "false", doc: "Serve per-partition log size, segment count and offsets (one series per partition, capped)." },
];

/// Synonyms Kafka accepts, mapped to the key Sluice stores, with a unit multiplier. Synonyms
/// of one key are listed from the finest unit to the coarsest, which is Kafka's precedence.
const SYNONYMS: &[(&str, &str, i64)] = &[
    ("broker.id", "node.id", 1),
    ("log.dir", "log.dirs", 1),
    ("log.roll.hours", "log.roll.ms", 3_600_000),
    ("log.retention.minutes", "log.retention.ms", 60_000),
    ("log.retention.hours", "log.retention.ms", 3_600_000),
];

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("line {line} of {path}: expected key=value")]
    Syntax { path: PathBuf, line: usize },
    #[error("override `{0}`: expected key=value")]
    Override(String),
    #[error("{key}={value}: {reason}")]
    Value {
        key: String,
        value: String,
        reason: &'static str,
    },
}

/// The raw properties after files, synonyms and overrides, with where each came from. The
/// dynamic layers hold what AlterConfigs set on the broker resources; they win over the file.
#[derive(Debug, Clone, Default)]
pub struct Properties {
    values: BTreeMap<String, String>,
    dynamic_default: BTreeMap<String, String>,
    dynamic_broker: BTreeMap<String, String>,
}

impl Properties {
    /// Reads a Java-style properties file: `key=value` or `key: value`, `#`/`!` comments.
    pub fn load(path: &Path) -> Result<Self, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_owned(),
            source,
        })?;
        let mut properties = Self::default();
        for (index, raw) in text.lines().enumerate() {
            let line = raw.trim();
            if line.is_empty() || line.starts_with('#') || line.starts_with('!') {
                continue;
            }
            let (key, value) = split_pair(line).ok_or_else(|| ConfigError::Syntax {
                path: path.to_owned(),
                line: index + 1,
            })?;
            properties.set(key, value)?;
        }
        Ok(properties)
    }

    /// Applies one `key=value` override from the command line.
    pub fn apply_override(&mut self, pair: &str) -> Result<(), ConfigError> {
        let (key, value) =
            split_pair(pair).ok_or_else(|| ConfigError::Override(pair.to_owned()))?;
        self.set(key, value)
    }

    /// Stores a value under its canonical name, converting units of synonyms.
    pub fn set(&mut self, key: &str, value: &str) -> Result<(), ConfigError> {
        let synonym = SYNONYMS.iter().find(|(alias, _, _)| *alias == key);
        let Some(&(_, canonical, unit)) = synonym else {
            self.values.insert(key.to_owned(), value.to_owned());
            return Ok(());
        };
        let converted = convert(value, unit).ok_or_else(|| ConfigError::Value {
            key: key.to_owned(),
            value: value.to_owned(),
            reason: "not an integer",
        })?;
        self.values.insert(canonical.to_owned(), converted);
        Ok(())
    }

    pub fn get(&self, key: &str) -> Option<&str> {
        self.values.get(key).map(String::as_str)
    }

    /// Keys that Sluice does not know; they are kept but have no effect.
    pub fn unknown_keys(&self) -> Vec<&str> {
        let known = |key: &str| KEYS.iter().any(|k| k.name == key);
        self.values
            .keys()
            .map(String::as_str)
            .filter(|key| !known(key))
            .collect()
    }

    /// The value in force and its source: dynamic per-broker, then dynamic cluster default,
    /// then the file or `--override`, then the default, as Kafka orders them.
    /// Within one layer a key set under its own name wins over its synonyms, and a finer
    /// synonym over a coarser one (`log.retention.ms`, then `.minutes`, then `.hours`). The
    /// value comes in the key's own unit.
    pub fn value(&self, key: &str) -> (String, Source) {
        let mut layers = self.layers(key);
        debug_assert!(!layers.is_empty(), "the default layer is always there");
        let first = layers.swap_remove(0);
        (first.value_in_key_unit(), first.source)
    }

    /// Every layer that sets `key` or one of its synonyms, the one in force first, ending with
    /// the default. These are the synonyms DescribeConfigs reports, in Kafka's order.
    pub fn layers(&self, key: &str) -> Vec<Layer> {
        let mut layers = Vec::with_capacity(4);
        let set = [
            (&self.dynamic_broker, Source::DynamicBroker),
            (&self.dynamic_default, Source::DynamicDefault),
            (&self.values, Source::StaticBroker),
        ];
        for (map, source) in set {
            for (name, unit) in names_setting(key) {
                if let Some(value) = map.get(name) {
                    let name = name.to_owned();
                    let value = value.clone();
                    layers.push(Layer {
                        name,
                        value,
                        source,
                        unit,
                    });
                }
            }
        }
        let default = KEYS
            .iter()
            .find(|k| k.name == key)
            .map_or("", |k| k.default);
        layers.push(Layer {
            name: key.to_owned(),
            value: default.to_owned(),
            source: Source::Default,
            unit: 1,
        });
        layers
    }

    /// The same static properties under other dynamic layers.
    pub fn with_dynamic(
        &self,
        dynamic_default: BTreeMap<String, String>,
        dynamic_broker: BTreeMap<String, String>,
    ) -> Self {
        Self {
            values: self.values.clone(),
            dynamic_default,
            dynamic_broker,
        }
    }

    /// The dynamic layer of one broker resource: the cluster default or this broker.
    pub fn dynamic(&self, cluster_default: bool) -> &BTreeMap<String, String> {
        if cluster_default {
            &self.dynamic_default
        } else {
            &self.dynamic_broker
        }
    }
}

/// One layer that sets a key: the name it was set under (the key or a synonym), the value as
/// it was given, and where it came from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Layer {
    pub name: String,
    pub value: String,
    pub source: Source,
    unit: i64,
}

impl Layer {
    /// The value in the unit of the key it sets; a value that is not a number stays as given,
    /// so the typed parse of the key reports it.
    pub fn value_in_key_unit(&self) -> String {
        convert(&self.value, self.unit).unwrap_or_else(|| self.value.clone())
    }
}

/// A synonym's value in its key's unit: `None` when a unit needs converting but the value is
/// not an integer. Kafka reads any negative duration as "forever", shown as -1.
fn convert(value: &str, unit: i64) -> Option<String> {
    if unit == 1 {
        return Some(value.to_owned());
    }
    let amount: i64 = value.trim().parse().ok()?;
    Some(amount.saturating_mul(unit).max(-1).to_string())
}

fn split_pair(line: &str) -> Option<(&str, &str)> {
    let at = line.find(['=', ':'])?;
    let key = line[..at].trim();
    if key.is_empty() {
        return None;
    }
    Some((key, line[at + 1..].trim()))
}

/// Typed broker configuration, derived once at start-up from [`Properties`].
#[derive(Debug, Clone)]
pub struct BrokerConfig {
    pub properties: Properties,
    /// The client listener.
    pub listener: SocketAddr,
    /// The controller listener, when `listeners` names one.
    pub controller_listener: Option<SocketAddr>,
    pub roles: Roles,
    /// `controller.quorum.voters`: (node id, host, port); empty means this node alone.
    pub quorum_voters: Vec<(i32, String, u16)>,
    pub broker_session_timeout_ms: u64,
    pub broker_heartbeat_interval_ms: u64,
    pub default_replication_factor: i16,
    pub offsets_replication_factor: i16,
    pub advertised_host: String,
    pub advertised_port: u16,
    pub node_id: i32,
    pub log_dir: PathBuf,
    pub num_partitions: i32,
    pub auto_create_topics: bool,
    pub segment_bytes: u64,
    pub roll_ms: u64,
    pub index_size_max_bytes: u64,
    pub index_interval_bytes: u64,
    pub retention_ms: i64,
    pub retention_bytes: i64,
    pub retention_check_interval_ms: u64,
    pub flush_interval_messages: Option<u64>,
    pub flush_interval_ms: Option<u64>,
    pub message_max_bytes: usize,
    pub socket_request_max_bytes: usize,
    pub fetch_response_bytes_max: u64,
    pub connections_max: usize,
    pub requests_in_flight_max: usize,
    /// `queued.max.request.bytes`; `usize::MAX` for -1 (no bound).
    pub request_bytes_max: usize,
    pub connections_max_idle_ms: u64,
    pub connections_max_per_ip: usize,
    /// SO_SNDBUF and SO_RCVBUF for client connections, and SO_RCVBUF for follower
    /// connections; `None` leaves the OS default.
    pub socket_send_buffer_bytes: Option<usize>,
    pub socket_receive_buffer_bytes: Option<usize>,
    pub replica_socket_receive_buffer_bytes: Option<usize>,
    pub connections_max_per_ip_overrides: BTreeMap<IpAddr, usize>,
    pub num_replica_fetchers: u32,
    pub replica_lag_time_max_ms: i64,
    pub replica_fetch_max_bytes: i32,
    pub replica_fetch_response_max_bytes: i32,
    pub replica_fetch_wait_max_ms: i32,
    pub replica_fetch_min_bytes: i32,
    pub replica_fetch_backoff_ms: u64,
    pub min_insync_replicas: i32,
    pub unclean_leader_election: bool,
    pub auto_leader_rebalance: bool,
    pub leader_imbalance_check_interval_s: u64,
    pub leader_imbalance_percentage: u32,
    pub reactors: usize,
    pub pin_cores: bool,
    pub metrics_address: Option<SocketAddr>,
    pub metrics_partition_series: bool,
}

impl BrokerConfig {
    pub fn from_properties(properties: Properties) -> Result<Self, ConfigError> {
        let p = &properties;
        let controller_name = p.value("controller.listener.names").0;
        let controller_name = controller_name
            .split(',')
            .next()
            .unwrap_or("")
            .trim()
            .to_owned();
        let listeners = parse_listeners(&p.value("listeners").0)?;
        let (client, controller): (Vec<_>, Vec<_>) = listeners
            .into_iter()
            .partition(|(name, _)| !name.eq_ignore_ascii_case(&controller_name));
        let roles = Roles::parse(&p.value("process.roles").0)?;
        let listener_text = match client.first() {
            Some((_, text)) => text.clone(),
            // A controller-only node serves no clients; it still needs an address to bind.
            None if !roles.broker => "PLAINTEXT://127.0.0.1:0".to_owned(),
            None => {
                return Err(invalid(
                    "listeners",
                    &p.value("listeners").0,
                    "no client listener",
                ))
            }
        };
        let listener = parse_listener(&listener_text)?;
        let controller_listener = match controller.first() {
            Some((_, text)) => Some(parse_listener(text)?),
            None => None,
        };
        let advertised_text = match p.value("advertised.listeners").0 {
            text if text.is_empty() => listener_text.clone(),
            text => text,
        };
        let (advertised_host, advertised_port) = parse_host_port(&advertised_text)?;
        let flush_messages: u64 = number(p, "log.flush.interval.messages")?;
        let flush_ms_text = p.value("log.flush.interval.ms").0;
        let config = Self {
            listener,
            controller_listener,
            roles,
            quorum_voters: parse_voters(&p.value("controller.quorum.voters").0)?,
            broker_session_timeout_ms: positive(p, "broker.session.timeout.ms")?,
            broker_heartbeat_interval_ms: positive(p, "broker.heartbeat.interval.ms")?,
            default_replication_factor: positive(p, "default.replication.factor")?,
            offsets_replication_factor: positive(p, "offsets.topic.replication.factor")?,
            advertised_host,
            advertised_port,
            node_id: number(p, "node.id")?,
            log_dir: PathBuf::from(p.value("log.dirs").0.split(',').next().unwrap_or("./data")),
            num_partitions: positive(p, "num.partitions")?,
            auto_create_topics: boolean(p, "auto.create.topics.enable")?,
            segment_bytes: positive(p, "log.segment.bytes")?,
            roll_ms: positive(p, "log.roll.ms")?,
            index_size_max_bytes: positive(p, "log.index.size.max.bytes")?,
            index_interval_bytes: positive(p, "log.index.interval.bytes")?,
            retention_ms: number(p, "log.retention.ms")?,
            retention_bytes: number(p, "log.retention.bytes")?,
            retention_check_interval_ms: positive(p, "log.retention.check.interval.ms")?,
            flush_interval_messages: (flush_messages < i64::MAX as u64).then_some(flush_messages),
            flush_interval_ms: if flush_ms_text.is_empty() {
                None
            } else {
                Some(number(p, "log.flush.interval.ms")?)
            },
            message_max_bytes: positive(p, "message.max.bytes")?,
            socket_request_max_bytes: positive(p, "socket.request.max.bytes")?,
            fetch_response_bytes_max: fetch_bytes_max(p)?,
            connections_max: positive(p, "max.connections")?,
            requests_in_flight_max: positive(p, "queued.max.requests")?,
            request_bytes_max: request_bytes_max(p)?,
            connections_max_idle_ms: positive(p, "connections.max.idle.ms")?,
            connections_max_per_ip: positive(p, "max.connections.per.ip")?,
            socket_send_buffer_bytes: buffer_size(p, "socket.send.buffer.bytes")?,
            socket_receive_buffer_bytes: buffer_size(p, "socket.receive.buffer.bytes")?,
            replica_socket_receive_buffer_bytes: buffer_size(
                p,
                "replica.socket.receive.buffer.bytes",
            )?,
            connections_max_per_ip_overrides: per_ip_overrides(p)?,
            num_replica_fetchers: positive(p, "num.replica.fetchers")?,
            replica_lag_time_max_ms: positive(p, "replica.lag.time.max.ms")?,
            replica_fetch_max_bytes: positive(p, "replica.fetch.max.bytes")?,
            replica_fetch_response_max_bytes: positive(p, "replica.fetch.response.max.bytes")?,
            replica_fetch_wait_max_ms: number(p, "replica.fetch.wait.max.ms")?,
            replica_fetch_min_bytes: number(p, "replica.fetch.min.bytes")?,
            replica_fetch_backoff_ms: number(p, "replica.fetch.backoff.ms")?,
            min_insync_replicas: positive(p, "min.insync.replicas")?,
            unclean_leader_election: boolean(p, "unclean.leader.election.enable")?,
            auto_leader_rebalance: boolean(p, "auto.leader.rebalance.enable")?,
            leader_imbalance_check_interval_s: positive(
                p,
                "leader.imbalance.check.interval.seconds",
            )?,
            leader_imbalance_percentage: number(p, "leader.imbalance.per.broker.percentage")?,
            reactors: number(p, "sluice.reactors")?,
            pin_cores: boolean(p, "sluice.pin.cores")?,
            metrics_address: optional_address(p, "sluice.metrics.address")?,
            metrics_partition_series: boolean(p, "sluice.metrics.partition.series")?,
            properties,
        };
        Ok(config)
    }

    /// Takes the dynamic fields and the property layers of `fresh`, keeping every read-only
    /// field (listeners, directories, the advertised port chosen at bind) as it is.
    pub fn take_dynamic(&mut self, fresh: BrokerConfig) {
        self.segment_bytes = fresh.segment_bytes;
        self.roll_ms = fresh.roll_ms;
        self.index_size_max_bytes = fresh.index_size_max_bytes;
        self.index_interval_bytes = fresh.index_interval_bytes;
        self.retention_ms = fresh.retention_ms;
        self.retention_bytes = fresh.retention_bytes;
        self.flush_interval_messages = fresh.flush_interval_messages;
        self.flush_interval_ms = fresh.flush_interval_ms;
        self.message_max_bytes = fresh.message_max_bytes;
        self.connections_max = fresh.connections_max;
        self.connections_max_per_ip = fresh.connections_max_per_ip;
        self.connections_max_per_ip_overrides = fresh.connections_max_per_ip_overrides;
        self.num_replica_fetchers = fresh.num_replica_fetchers;
        self.metrics_partition_series = fresh.metrics_partition_series;
        self.pin_cores = fresh.pin_cores;
        self.unclean_leader_election = fresh.unclean_leader_election;
        self.properties = fresh.properties;
    }

    /// Reactor threads to start: the configured count, or one per available core.
    pub fn reactor_count(&self) -> usize {
        if self.reactors > 0 {
            return self.reactors;
        }
        std::thread::available_parallelism().map_or(1, |n| n.get())
    }
}

fn invalid(key: &str, value: &str, reason: &'static str) -> ConfigError {
    ConfigError::Value {
        key: key.to_owned(),
        value: value.to_owned(),
        reason,
    }
}

fn number<T: std::str::FromStr>(p: &Properties, key: &str) -> Result<T, ConfigError> {
    let (value, _) = p.value(key);
    value
        .trim()
        .parse()
        .map_err(|_| invalid(key, &value, "not a valid number"))
}

fn positive<T: std::str::FromStr + PartialOrd + Default>(
    p: &Properties,
    key: &str,
) -> Result<T, ConfigError> {
    let parsed: T = number(p, key)?;
    if parsed <= T::default() {
        return Err(invalid(key, &p.value(key).0, "must be positive"));
    }
    Ok(parsed)
}

/// `fetch.max.bytes`, at most a quarter of what an i32 frame length can hold, so a response
/// of that many bytes plus one oversized batch still fits its frame.
fn fetch_bytes_max(p: &Properties) -> Result<u64, ConfigError> {
    const CEILING: u64 = i32::MAX as u64 / 4;
    let key = "fetch.max.bytes";
    let value: u64 = positive(p, key)?;
    if value > CEILING {
        return Err(invalid(key, &p.value(key).0, "must be at most 536870911"));
    }
    Ok(value)
}

fn optional_address(p: &Properties, key: &str) -> Result<Option<SocketAddr>, ConfigError> {
    let (value, _) = p.value(key);
    if value.trim().is_empty() {
        return Ok(None);
    }
    let address = value
        .trim()
        .parse()
        .map_err(|_| invalid(key, &value, "expected ip:port"))?;
    Ok(Some(address))
}

/// A socket buffer size: positive, or -1 for the OS default (`None`).
fn buffer_size(p: &Properties, key: &str) -> Result<Option<usize>, ConfigError> {
    let value: i64 = number(p, key)?;
    match value {
        -1 => Ok(None),
        1.. => Ok(Some(usize::try_from(value).unwrap_or(usize::MAX))),
        _ => Err(invalid(key, &p.value(key).0, "must be positive, or -1")),
    }
}

/// `queued.max.request.bytes`: positive, or -1 for no bound.
fn request_bytes_max(p: &Properties) -> Result<usize, ConfigError> {
    Ok(buffer_size(p, "queued.max.request.bytes")?.unwrap_or(usize::MAX))
}

/// `max.connections.per.ip.overrides`: `ip:count` pairs separated by commas (an IPv6
/// address in brackets), each count zero or more.
fn per_ip_overrides(p: &Properties) -> Result<BTreeMap<IpAddr, usize>, ConfigError> {
    let key = "max.connections.per.ip.overrides";
    let (value, _) = p.value(key);
    let mut overrides = BTreeMap::new();
    for entry in value.split(',').map(str::trim).filter(|e| !e.is_empty()) {
        let bad = || invalid(key, &value, "expected ip:count,ip:count");
        let (ip, count) = entry.rsplit_once(':').ok_or_else(bad)?;
        let ip = ip.trim_start_matches('[').trim_end_matches(']');
        let ip: IpAddr = ip.parse().map_err(|_| bad())?;
        let count: usize = count.parse().map_err(|_| bad())?;
        overrides.insert(ip, count);
    }
    Ok(overrides)
}

impl BrokerConfig {
    /// How many connections `ip` may hold at once.
    pub fn connections_max_for(&self, ip: IpAddr) -> usize {
        self.connections_max_per_ip_overrides
            .get(&ip)
            .copied()
            .unwrap_or(self.connections_max_per_ip)
    }
}

fn boolean(p: &Properties, key: &str) -> Result<bool, ConfigError> {
    let (value, _) = p.value(key);
    match value.trim() {
        "true" => Ok(true),
        "false" => Ok(false),
        _ => Err(invalid(key, &value, "expected true or false")),
    }
}

/// `PLAINTEXT://host:port` (the first of a comma-separated list) to a host and port.
fn parse_host_port(text: &str) -> Result<(String, u16), ConfigError> {
    let first = text.split(',').next().unwrap_or("").trim();
    let address = first.split_once("://").map_or(first, |(_, rest)| rest);
    let (host, port) = address
        .rsplit_once(':')
        .ok_or_else(|| invalid("listeners", text, "expected PLAINTEXT://host:port"))?;
    let port = port
        .parse()
        .map_err(|_| invalid("listeners", text, "port is not a number"))?;
    let host = host.trim_start_matches('[').trim_end_matches(']');
    let host = if host.is_empty() { "0.0.0.0" } else { host };
    Ok((host.to_owned(), port))
}

/// `NAME://host:port,...` as (name, the whole entry). An entry without a name is PLAINTEXT.
fn parse_listeners(text: &str) -> Result<Vec<(String, String)>, ConfigError> {
    let mut out = Vec::new();
    for entry in text.split(',').map(str::trim).filter(|e| !e.is_empty()) {
        let name = entry
            .split_once("://")
            .map_or("PLAINTEXT", |(name, _)| name);
        if name.is_empty() {
            return Err(invalid("listeners", text, "a listener has an empty name"));
        }
        out.push((name.to_owned(), entry.to_owned()));
    }
    Ok(out)
}

/// `id@host:port,...`.
fn parse_voters(text: &str) -> Result<Vec<(i32, String, u16)>, ConfigError> {
    let mut voters = Vec::new();
    for entry in text.split(',').map(str::trim).filter(|e| !e.is_empty()) {
        let bad = || {
            invalid(
                "controller.quorum.voters",
                text,
                "expected id@host:port,...",
            )
        };
        let (id, address) = entry.split_once('@').ok_or_else(bad)?;
        let (host, port) = address.rsplit_once(':').ok_or_else(bad)?;
        let id: i32 = id.trim().parse().map_err(|_| bad())?;
        let port: u16 = port.parse().map_err(|_| bad())?;
        if id < 0 || host.is_empty() || voters.iter().any(|(known, _, _)| *known == id) {
            return Err(bad());
        }
        voters.push((id, host.to_owned(), port));
    }
    Ok(voters)
}

/// What this process does in the cluster.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Roles {
    pub broker: bool,
    pub controller: bool,
}

impl Roles {
    /// `process.roles`; unset means both (a one-node cluster in combined mode).
    fn parse(text: &str) -> Result<Self, ConfigError> {
        let mut roles = Roles {
            broker: false,
            controller: false,
        };
        for role in text.split(',').map(str::trim).filter(|r| !r.is_empty()) {
            match role {
                "broker" => roles.broker = true,
                "controller" => roles.controller = true,
                _ => {
                    return Err(invalid(
                        "process.roles",
                        text,
                        "expected broker, controller or both",
                    ))
                }
            }
        }
        if !roles.broker && !roles.controller {
            roles = Roles {
                broker: true,
                controller: true,
            };
        }
        Ok(roles)
    }
}

fn parse_listener(text: &str) -> Result<SocketAddr, ConfigError> {
    let (host, port) = parse_host_port(text)?;
    let host = if host == "localhost" {
        "127.0.0.1".to_owned()
    } else {
        host
    };
    let ip = host
        .parse()
        .map_err(|_| invalid("listeners", text, "host must be an IP address or localhost"))?;
    Ok(SocketAddr::new(ip, port))
}

/// The two dynamic layers of one broker: the cluster default and its own.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Layers {
    pub cluster_default: BTreeMap<String, String>,
    pub broker: BTreeMap<String, String>,
}

/// The broker configuration in force, swapped whole when a dynamic config changes.
pub struct LiveConfig {
    current: RwLock<Arc<BrokerConfig>>,
}

impl LiveConfig {
    pub fn new(config: BrokerConfig) -> Self {
        Self {
            current: RwLock::new(Arc::new(config)),
        }
    }

    pub fn current(&self) -> Arc<BrokerConfig> {
        self.current
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// Puts `config` in force. Only the dynamic-config path calls this.
    pub fn replace(&self, config: BrokerConfig) {
        *self.current.write().unwrap_or_else(|e| e.into_inner()) = Arc::new(config);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(overrides: &[&str], expected: impl Fn(&BrokerConfig)) {
        let mut properties = Properties::default();
        for pair in overrides {
            properties.apply_override(pair).expect("override parses");
        }
        expected(&BrokerConfig::from_properties(properties).expect("config is valid"));
    }

    #[test]
    fn per_ip_overrides_parse_addresses_and_counts() {
        let overrides = "max.connections.per.ip.overrides=10.0.0.1:5, [::1]:0";
        check(&["max.connections.per.ip=3", overrides], |c| {
            assert_eq!(c.connections_max_for("10.0.0.1".parse().unwrap()), 5);
            assert_eq!(c.connections_max_for("::1".parse().unwrap()), 0);
            assert_eq!(c.connections_max_for("10.0.0.2".parse().unwrap()), 3);
        });
        for bad in ["host.example:5", "10.0.0.1", "10.0.0.1:-1"] {
            let mut properties = Properties::default();
            let pair = format!("max.connections.per.ip.overrides={bad}");
            properties.apply_override(&pair).unwrap();
            assert!(BrokerConfig::from_properties(properties).is_err(), "{bad}");
        }
    }

    #[test]
    fn defaults_match_kafka() {
        check(&[], |c| {
            // Not Kafka's fixed sizes: the OS default keeps Linux's buffer autotuning.
            assert_eq!(c.socket_send_buffer_bytes, None);
            assert_eq!(c.socket_receive_buffer_bytes, None);
            assert_eq!(c.replica_socket_receive_buffer_bytes, None);
            assert_eq!(c.listener, "127.0.0.1:9092".parse().unwrap());
            assert_eq!(c.log_dir, PathBuf::from("./data"));
            assert_eq!(c.segment_bytes, 1 << 30);
            assert_eq!(c.message_max_bytes, 1_048_588);
            assert_eq!(c.socket_request_max_bytes, 100 << 20);
            assert!(c.auto_create_topics);
            assert_eq!(c.flush_interval_messages, None);
            assert_eq!(c.flush_interval_ms, None);
        });
    }

    #[test]
    fn synonyms_convert_units() {
        check(&["log.retention.hours=2", "broker.id=7"], |c| {
            assert_eq!(c.retention_ms, 7_200_000);
            assert_eq!(c.node_id, 7);
        });
    }

    #[test]
    fn dynamic_synonyms_follow_kafka_precedence() {
        let mut properties = Properties::default();
        properties.apply_override("log.retention.hours=2").unwrap();
        let layer = |pairs: &[(&str, &str)]| {
            let pairs = pairs.iter().map(|(k, v)| (k.to_string(), v.to_string()));
            pairs.collect::<BTreeMap<_, _>>()
        };
        let cases: &[(&[(&str, &str)], &str)] = &[
            (&[], "7200000"),
            (&[("log.retention.hours", "3")], "10800000"),
            (
                &[("log.retention.hours", "3"), ("log.retention.minutes", "5")],
                "300000",
            ),
            (
                &[("log.retention.minutes", "5"), ("log.retention.ms", "10")],
                "10",
            ),
            (&[("log.retention.minutes", "-1")], "-1"),
            (&[("log.retention.hours", "-5")], "-1"),
        ];
        for &(pairs, expected) in cases {
            let layered = properties.with_dynamic(BTreeMap::new(), layer(pairs));
            assert_eq!(layered.value("log.retention.ms").0, expected, "{pairs:?}");
        }
        assert!(is_dynamic("log.retention.minutes"));
        assert!(is_dynamic("log.roll.hours"));
        assert!(!is_dynamic("broker.id"));
    }

    #[test]
    fn overrides_and_listeners() {
        check(
            &[
                "listeners=PLAINTEXT://0.0.0.0:19092",
                "log.flush.interval.messages=1",
            ],
            |c| {
                assert_eq!(c.listener.port(), 19092);
                assert_eq!(c.advertised_host, "0.0.0.0");
                assert_eq!(c.flush_interval_messages, Some(1));
            },
        );
    }

    #[test]
    fn bad_values_are_errors() {
        let mut properties = Properties::default();
        properties.apply_override("num.partitions=0").unwrap();
        assert!(BrokerConfig::from_properties(properties).is_err());
        assert!(Properties::default().apply_override("novalue").is_err());
    }

    #[test]
    fn properties_file_parses() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("server.properties");
        std::fs::write(&path, "# comment\nnum.partitions = 3\nsome.kafka.only=x\n").unwrap();
        let properties = Properties::load(&path).unwrap();
        assert_eq!(properties.get("num.partitions"), Some("3"));
        assert_eq!(properties.unknown_keys(), vec!["some.kafka.only"]);
    }
}
