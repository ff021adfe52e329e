//! Dynamic broker configs: the values AlterConfigs and IncrementalAlterConfigs set on the
//! broker resources (a broker by id, or the cluster default ""), and how a change reaches
//! every core without a restart.
//!
//! The values live in the cluster metadata log as `BrokerConfig` records, so every broker
//! sees the same cluster default and each broker its own layer, whichever broker an operator
//! asked. Each time the metadata image changes, core 0 compares this broker's two layers in
//! it with the layers in force and publishes the difference.
//!
//! The configuration in force is an `Arc<BrokerConfig>` behind a lock that only control paths
//! read (opening or reconfiguring a log, accepting a connection, DescribeConfigs, a scrape).
//! Values the data path needs live in each partition's `LogConfig`, owned by its core: a change
//! is broadcast as a job to every core over the core-pair queues, and each core re-derives the
//! configs of the logs it owns, exactly as a topic config change does.
//!
//! Data directories from before the metadata log held these values keep them in
//! [`DYNAMIC_FILE`]: its values are in force from start-up, and `cluster.rs` sends them to the
//! controller once the broker has joined (where the metadata has nothing for a key) and
//! renames the file to `<name>.imported`.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::rc::Rc;

use crate::config::{is_dynamic, BrokerConfig, ConfigError};
use crate::layout::META_DIR;
use crate::metadata::MetadataImage;
use crate::shard::Shard;

/// Where older data directories kept the dynamic layers, under `log.dirs`.
pub const DYNAMIC_FILE: &str = "dynamic-broker.properties";

/// Line prefixes in [`DYNAMIC_FILE`]: `default.<key>=<value>` for the cluster default and
/// `broker.<id>.<key>=<value>` for one broker.
const PREFIX_DEFAULT: &str = "default.";
const PREFIX_BROKER: &str = "broker.";

/// Which broker resource a request names.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BrokerResource {
    /// The empty name: the default for every broker of the cluster.
    ClusterDefault,
    /// One broker, named by its id.
    Broker(i32),
}

impl BrokerResource {
    /// Parses a resource name: the empty name or a broker id.
    pub fn parse(name: &str) -> Result<Self, String> {
        if name.is_empty() {
            return Ok(Self::ClusterDefault);
        }
        match name.parse::<i32>() {
            Ok(id) if id >= 0 => Ok(Self::Broker(id)),
            _ => Err(format!(
                "Invalid broker resource name {name:?}: expected a broker id or the empty string"
            )),
        }
    }

    /// Parses a name that must be this broker or the cluster default (what DescribeConfigs
    /// answers for); `Err` carries Kafka's message for another broker's id.
    pub fn parse_local(name: &str, node_id: i32) -> Result<Self, String> {
        match Self::parse(name) {
            Ok(Self::Broker(id)) if id != node_id => Err(format!(
                "Unexpected broker id, expected {node_id} or empty string, but received {name}"
            )),
            parsed => parsed,
        }
    }

    pub fn is_cluster_default(self) -> bool {
        self == Self::ClusterDefault
    }

    /// The resource's name in the metadata log: `""` or the broker id.
    pub fn name(self) -> String {
        match self {
            Self::ClusterDefault => String::new(),
            Self::Broker(id) => id.to_string(),
        }
    }
}

pub use crate::config::Layers;

/// Broker `node_id`'s layers as the metadata image holds them.
pub fn layers_in(image: &MetadataImage, node_id: i32) -> Layers {
    Layers {
        cluster_default: image.broker_configs(""),
        broker: image.broker_configs(&node_id.to_string()),
    }
}

pub fn file_path(log_dir: &Path) -> PathBuf {
    log_dir.join(META_DIR).join(DYNAMIC_FILE)
}

/// Parses the file; lines that do not parse are skipped with a warning, never fatal.
pub fn decode(text: &str, node_id: i32) -> Layers {
    let mut layers = Layers::default();
    for line in text.lines().filter(|l| !l.trim().is_empty()) {
        let Some((key, value)) = line.split_once('=') else {
            tracing::warn!(line, "ignoring a damaged line in {DYNAMIC_FILE}");
            continue;
        };
        if let Some(key) = key.strip_prefix(PREFIX_DEFAULT) {
            layers
                .cluster_default
                .insert(key.to_owned(), value.to_owned());
            continue;
        }
        let per_broker = key
            .strip_prefix(PREFIX_BROKER)
            .and_then(|rest| rest.split_once('.'))
            .and_then(|(id, key)| Some((id.parse::<i32>().ok()?, key)));
        match per_broker {
            Some((id, key)) if id == node_id => {
                layers.broker.insert(key.to_owned(), value.to_owned());
            }
            // Another broker id: a data directory whose node.id changed. Kafka keys dynamic
            // configs by id, so those values do not apply to this broker.
            Some(_) => {}
            None => tracing::warn!(line, "ignoring a damaged line in {DYNAMIC_FILE}"),
        }
    }
    layers
}

/// `config` with the dynamic layers applied: the properties carry both layers (for
/// DescribeConfigs) and every dynamic field takes the value in force. Read-only fields keep
/// their values, so a layer can never move a listener or a directory.
pub fn with_layers(config: &BrokerConfig, layers: &Layers) -> Result<BrokerConfig, ConfigError> {
    let properties = config
        .properties
        .with_dynamic(layers.cluster_default.clone(), layers.broker.clone());
    let fresh = BrokerConfig::from_properties(properties)?;
    let mut next = config.clone();
    next.take_dynamic(fresh);
    Ok(next)
}

/// The layers `config` carries now.
pub fn layers_of(config: &BrokerConfig) -> Layers {
    Layers {
        cluster_default: config.properties.dynamic(true).clone(),
        broker: config.properties.dynamic(false).clone(),
    }
}

/// Reads the persisted layers at start-up (before any reactor runs, so `std::fs` is fine) and
/// applies them. An entry that does not validate, or names a read-only key, is reported and
/// left out, never fatal: the broker starts with every other dynamic value in force.
pub fn load_at_start(config: BrokerConfig) -> BrokerConfig {
    let path = file_path(&config.log_dir);
    let text = match std::fs::read_to_string(&path) {
        Ok(text) => text,
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => return config,
        Err(error) => {
            tracing::warn!(file = %path.display(), %error, "cannot read dynamic broker configs");
            return config;
        }
    };
    let layers = decode(&text, config.node_id);
    with_valid_entries(config, layers, &path.display().to_string())
}

/// `config` with its layers replaced by every entry of `layers` that validates, added one at
/// a time so that a bad entry costs only itself; each entry left out is reported, naming
/// `source`.
fn with_valid_entries(config: BrokerConfig, layers: Layers, source: &str) -> BrokerConfig {
    let mut kept = Layers::default();
    let mut next = None;
    let entries = (layers
        .cluster_default
        .into_iter()
        .map(|entry| (true, entry)))
    .chain(layers.broker.into_iter().map(|entry| (false, entry)));
    for (cluster_default, (key, value)) in entries {
        if !is_dynamic(&key) {
            tracing::warn!(
                source,
                key,
                "ignoring a read-only key among the dynamic broker configs"
            );
            continue;
        }
        layer_mut(&mut kept, cluster_default).insert(key.clone(), value.clone());
        match with_layers(&config, &kept) {
            Ok(candidate) => next = Some(candidate),
            Err(error) => {
                tracing::warn!(source, key, value, %error, "ignoring a dynamic broker config that does not validate");
                layer_mut(&mut kept, cluster_default).remove(&key);
            }
        }
    }
    match next {
        Some(next) => next,
        // Nothing kept: no layer at all, rather than the layers `config` had.
        None => with_layers(&config, &Layers::default()).unwrap_or(config),
    }
}

fn layer_mut(layers: &mut Layers, cluster_default: bool) -> &mut BTreeMap<String, String> {
    if cluster_default {
        &mut layers.cluster_default
    } else {
        &mut layers.broker
    }
}

/// Puts this broker's layers from the metadata image in force, when they differ from the ones
/// last put in force. Runs on core 0 each time the metadata changes; does nothing until the
/// import of an older data directory's file is done (until then, the file's values are in
/// force).
pub async fn follow_image(admin: &Rc<Shard>) {
    let _serial = admin.admin.lock().await;
    let image = admin.shared.metadata.image();
    let wanted = layers_in(&image, admin.shared.config.node_id);
    {
        let in_force = admin.shared.dynamic_layers.lock();
        let in_force = in_force.unwrap_or_else(|e| e.into_inner());
        match &*in_force {
            Some(layers) if *layers != wanted => {}
            _ => return,
        }
    }
    let live = admin.shared.dynamic.current();
    let next = with_valid_entries((*live).clone(), wanted.clone(), "the metadata log");
    publish(admin, next).await;
    *admin
        .shared
        .dynamic_layers
        .lock()
        .unwrap_or_else(|e| e.into_inner()) = Some(wanted);
}

/// From now on this broker follows the metadata image's layers, starting from the ones in
/// force (see `follow_image`).
pub fn start_following(admin: &Shard) {
    let in_force = layers_of(&admin.shared.dynamic.current());
    *admin
        .shared
        .dynamic_layers
        .lock()
        .unwrap_or_else(|e| e.into_inner()) = Some(in_force);
}

/// Puts `config` in force and has every core re-derive the configs of the logs it owns.
/// Runs on core 0. The job goes to every core before any answer is awaited, so the cores
/// reconfigure side by side and a change costs the slowest core, not the sum of them.
async fn publish(core: &Rc<Shard>, config: BrokerConfig) {
    core.shared.dynamic.replace(config);
    core.broadcast(|owner| async move { reconfigure_all(&owner).await })
        .await;
    // The replica fetchers spread their partitions again (`num.replica.fetchers`).
    core.shared.metadata_changed.notify(usize::MAX);
}

/// Applies the broker configuration in force to this core: its thread's pinning, and the
/// config of every log it owns (a topic's own overrides still win).
async fn reconfigure_all(core: &Shard) {
    apply_pinning(core.id, core.shared.dynamic.current().pin_cores);
    let mut configs = BTreeMap::new();
    for ((topic, _), partition) in core.partitions.all() {
        if !configs.contains_key(&topic) {
            let Some(info) = core.shared.metadata.topic(&topic) else {
                continue;
            };
            configs.insert(topic.clone(), core.shared.log_config(&info.configs));
        }
        if let Some(config) = configs.get(&topic) {
            partition.reconfigure(config.clone()).await;
        }
    }
}

/// Pins the calling reactor thread to the `core_id`-th CPU the process may run on (wrapping
/// around when there are more reactors than CPUs), or gives it back all of those CPUs. The
/// allowed set is the main thread's, which is never pinned; it may be a cpuset or `taskset`
/// restriction, so CPU numbers are never assumed. Failure is reported, not fatal: the reactor
/// keeps running where it is.
pub fn apply_pinning(core_id: usize, pin: bool) {
    use rustix::thread::{sched_getaffinity, sched_setaffinity, CpuSet};
    let allowed = match sched_getaffinity(Some(rustix::process::getpid())) {
        Ok(cpus) => cpus,
        Err(error) => {
            tracing::warn!(core = core_id, %error, "cannot read the process's CPUs");
            return;
        }
    };
    let cpus = if pin {
        let numbers: Vec<usize> = (0..CpuSet::MAX_CPU)
            .filter(|&cpu| allowed.is_set(cpu))
            .collect();
        let Some(&cpu) = numbers.get(core_id % numbers.len().max(1)) else {
            tracing::warn!(core = core_id, "the process may run on no CPU; not pinning");
            return;
        };
        let mut cpus = CpuSet::new();
        cpus.set(cpu);
        cpus
    } else {
        allowed
    };
    if let Err(error) = sched_setaffinity(None, &cpus) {
        tracing::warn!(core = core_id, pin, %error, "cannot change the reactor's CPU affinity");
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{Properties, Source};

    fn map(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn older_file_decodes() {
        assert_eq!(
            decode(
                "default.log.retention.ms=1000\nbroker.3.log.segment.bytes=2048\nbroker.4.x=1\n",
                3
            ),
            Layers {
                cluster_default: map(&[("log.retention.ms", "1000")]),
                broker: map(&[("log.segment.bytes", "2048")]),
            },
        );
        assert_eq!(decode("garbage\n\nbroker.x=1\n", 0), Layers::default());
    }

    #[test]
    fn per_broker_wins_over_cluster_default_over_static() {
        let mut properties = Properties::default();
        properties.apply_override("log.retention.ms=5000").unwrap();
        properties
            .apply_override("listeners=PLAINTEXT://127.0.0.1:0")
            .unwrap();
        let config = BrokerConfig::from_properties(properties).unwrap();
        let layers = Layers {
            cluster_default: map(&[("log.retention.ms", "4000"), ("max.connections", "7")]),
            broker: map(&[("log.retention.ms", "3000")]),
        };
        let next = with_layers(&config, &layers).unwrap();
        assert_eq!(next.retention_ms, 3000);
        assert_eq!(next.connections_max, 7);
        let sources: Vec<Source> = next
            .properties
            .layers("log.retention.ms")
            .into_iter()
            .map(|layer| layer.source)
            .collect();
        assert_eq!(
            sources,
            [
                Source::DynamicBroker,
                Source::DynamicDefault,
                Source::StaticBroker,
                Source::Default
            ]
        );
        let bad = Layers {
            broker: map(&[("log.retention.ms", "soon")]),
            cluster_default: BTreeMap::new(),
        };
        assert!(with_layers(&config, &bad).is_err());
    }

    #[test]
    fn a_bad_persisted_entry_costs_only_itself() {
        let dir = tempfile::tempdir().unwrap();
        let mut properties = Properties::default();
        let log_dirs = format!("log.dirs={}", dir.path().display());
        properties.apply_override(&log_dirs).unwrap();
        let config = BrokerConfig::from_properties(properties).unwrap();
        let path = file_path(&config.log_dir);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        let text = "default.max.connections=7\ndefault.log.retention.ms=soon\n\
                    broker.0.log.segment.bytes=2048\nbroker.0.listeners=PLAINTEXT://1.2.3.4:1\n\
                    broker.0.log.retention.minutes=5\nbroker.0.log.roll.ms=0\n";
        std::fs::write(&path, text).unwrap();

        let loaded = load_at_start(config.clone());
        assert_eq!(loaded.connections_max, 7);
        assert_eq!(loaded.segment_bytes, 2048);
        assert_eq!(loaded.retention_ms, 300_000);
        assert_eq!(loaded.roll_ms, config.roll_ms, "log.roll.ms=0 is left out");
        assert_eq!(loaded.listener, config.listener, "listeners is read-only");
        assert_eq!(
            layers_of(&loaded),
            Layers {
                cluster_default: map(&[("max.connections", "7")]),
                broker: map(&[
                    ("log.retention.minutes", "5"),
                    ("log.segment.bytes", "2048")
                ]),
            }
        );
    }

    #[test]
    fn broker_resource_names() {
        assert_eq!(
            BrokerResource::parse(""),
            Ok(BrokerResource::ClusterDefault)
        );
        assert_eq!(BrokerResource::parse("2"), Ok(BrokerResource::Broker(2)));
        assert!(BrokerResource::parse("-1").is_err());
        assert!(BrokerResource::parse("one").is_err());
        assert_eq!(
            BrokerResource::parse_local("1", 1),
            Ok(BrokerResource::Broker(1))
        );
        assert!(BrokerResource::parse_local("2", 1).is_err());
        assert_eq!(BrokerResource::Broker(7).name(), "7");
        assert_eq!(BrokerResource::ClusterDefault.name(), "");
    }

    #[test]
    fn emptied_layers_leave_no_value_behind() {
        let mut properties = Properties::default();
        properties.apply_override("log.retention.ms=5000").unwrap();
        let config = BrokerConfig::from_properties(properties).unwrap();
        let layers = Layers {
            cluster_default: map(&[("log.retention.ms", "4000")]),
            broker: BTreeMap::new(),
        };
        let set = with_valid_entries(config, layers, "test");
        assert_eq!(set.retention_ms, 4000);
        let cleared = with_valid_entries(set, Layers::default(), "test");
        assert_eq!(cleared.retention_ms, 5000);
        assert_eq!(layers_of(&cleared), Layers::default());
    }
}
