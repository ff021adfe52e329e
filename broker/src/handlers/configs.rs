//! DescribeConfigs, AlterConfigs and IncrementalAlterConfigs for topics and for the broker
//! resources (this broker by id, the cluster default ""). Topic overrides persist in the topic
//! file and dynamic broker configs in the data directory; both reach the owner cores' logs at
//! once. Read-only broker configs are refused as Kafka refuses them.

use std::collections::BTreeMap;
use std::rc::Rc;

use kafka_protocol::messages::alter_configs_response::AlterConfigsResourceResponse as AlterResponse;
use kafka_protocol::messages::describe_configs_response::{
    DescribeConfigsResourceResult, DescribeConfigsResult, DescribeConfigsSynonym,
};
use kafka_protocol::messages::incremental_alter_configs_response::AlterConfigsResourceResponse as IncrementalAlterResponse;
use kafka_protocol::messages::{
    AlterConfigsRequest, AlterConfigsResponse, DescribeConfigsRequest, DescribeConfigsResponse,
    IncrementalAlterConfigsRequest, IncrementalAlterConfigsResponse,
};
use kafka_protocol::protocol::StrBytes;

use crate::cluster;
use crate::config::{is_dynamic, BrokerConfig, Source, KEYS};
use crate::controller::Command;
use crate::dynamic::{self, BrokerResource};
use crate::error_codes as code;
use crate::shard::Shard;

const RESOURCE_TOPIC: i8 = 2;
const RESOURCE_BROKER: i8 = 4;

/// Kafka's ConfigSource values.
const SOURCE_TOPIC: i8 = 1;
const SOURCE_DYNAMIC_BROKER: i8 = 2;
const SOURCE_DYNAMIC_DEFAULT_BROKER: i8 = 3;
const SOURCE_STATIC_BROKER: i8 = 4;
const SOURCE_DEFAULT: i8 = 5;

/// IncrementalAlterConfigs operations.
const OP_SET: i8 = 0;
const OP_DELETE: i8 = 1;

/// Topic configs Sluice honours, the broker property each falls back to, and how a value is
/// checked. Values shown for unset flush settings are Kafka's "never" (Long.MAX_VALUE).
const TOPIC_CONFIGS: &[(&str, &str, Check)] = &[
    (
        "cleanup.policy",
        "log.cleanup.policy",
        Check::OneOf(&["delete"]),
    ),
    (
        "compression.type",
        "compression.type",
        Check::OneOf(&[
            "producer",
            "none",
            "uncompressed",
            "gzip",
            "snappy",
            "lz4",
            "zstd",
        ]),
    ),
    (
        "flush.messages",
        "log.flush.interval.messages",
        Check::Positive,
    ),
    ("flush.ms", "log.flush.interval.ms", Check::Positive),
    (
        "index.interval.bytes",
        "log.index.interval.bytes",
        Check::Positive,
    ),
    ("max.message.bytes", "message.max.bytes", Check::Positive),
    (
        "min.insync.replicas",
        "min.insync.replicas",
        Check::Positive,
    ),
    (
        "retention.bytes",
        "log.retention.bytes",
        Check::AtLeastMinusOne,
    ),
    ("retention.ms", "log.retention.ms", Check::AtLeastMinusOne),
    ("segment.bytes", "log.segment.bytes", Check::Positive),
    (
        "segment.index.bytes",
        "log.index.size.max.bytes",
        Check::Positive,
    ),
    ("segment.ms", "log.roll.ms", Check::Positive),
    (
        "unclean.leader.election.enable",
        "unclean.leader.election.enable",
        Check::OneOf(&["true", "false"]),
    ),
];

/// Topic configs that Kafka 3 deprecated and Kafka 4 removed: accepted with any value and a
/// warning, then dropped, as a Kafka 3 broker ignores them, so that an old client's
/// CreateTopics or AlterConfigs does not fail on them.
const IGNORED_TOPIC_CONFIGS: &[&str] = &["message.format.version"];

/// Whether a topic config is one that is accepted and dropped; warns when it is.
pub fn ignored_topic_config(name: &str) -> bool {
    let ignored = IGNORED_TOPIC_CONFIGS.contains(&name);
    if ignored {
        tracing::warn!(
            config = name,
            "topic config {name} is deprecated (removed in Kafka 4); accepted and ignored"
        );
    }
    ignored
}

#[derive(Clone, Copy)]
enum Check {
    Positive,
    AtLeastMinusOne,
    OneOf(&'static [&'static str]),
}

/// Defaults of broker properties that topic configs fall back to but the broker itself has
/// no knob for.
fn fixed_default(broker_key: &str) -> Option<&'static str> {
    match broker_key {
        "log.cleanup.policy" => Some("delete"),
        "compression.type" => Some("producer"),
        _ => None,
    }
}

/// Checks one topic config; `Err` carries the message for the client.
pub fn check_topic_config(name: &str, value: &str) -> Result<(), String> {
    if IGNORED_TOPIC_CONFIGS.contains(&name) {
        return Ok(());
    }
    let Some(&(_, _, check)) = TOPIC_CONFIGS.iter().find(|(key, _, _)| *key == name) else {
        return Err(format!("unknown or unsupported topic config {name}"));
    };
    let ok = match check {
        Check::Positive => value.parse::<i64>().is_ok_and(|v| v > 0),
        Check::AtLeastMinusOne => value.parse::<i64>().is_ok_and(|v| v >= -1),
        Check::OneOf(allowed) => allowed.contains(&value),
    };
    if ok {
        Ok(())
    } else {
        Err(format!("invalid value {value:?} for {name}"))
    }
}

fn source_code(source: Source) -> i8 {
    match source {
        Source::Default => SOURCE_DEFAULT,
        Source::StaticBroker => SOURCE_STATIC_BROKER,
        Source::DynamicDefault => SOURCE_DYNAMIC_DEFAULT_BROKER,
        Source::DynamicBroker => SOURCE_DYNAMIC_BROKER,
    }
}

/// How a broker value is shown: unset flush settings as Kafka's "never" (Long.MAX_VALUE),
/// other unset values as null.
fn shown(key: &str, value: String) -> Option<String> {
    match value.is_empty() {
        false => Some(value),
        true if key.starts_with("log.flush.interval.") => Some(i64::MAX.to_string()),
        true => None,
    }
}

/// A broker property's layers as (the name it was set under, the value as set, source), the
/// one in force first: a synonym such as `log.retention.minutes` appears under its own name.
fn broker_layers(config: &BrokerConfig, broker_key: &str) -> Vec<(String, Option<String>, i8)> {
    if let Some(value) = fixed_default(broker_key) {
        let value = Some(value.to_owned());
        return vec![(broker_key.to_owned(), value, SOURCE_DEFAULT)];
    }
    let layers = config.properties.layers(broker_key).into_iter();
    layers
        .map(|layer| {
            let value = shown(broker_key, layer.value);
            (layer.name, value, source_code(layer.source))
        })
        .collect()
}

/// A broker property's value in force, in the property's own unit, and its source.
fn broker_value(config: &BrokerConfig, broker_key: &str) -> (Option<String>, i8) {
    if let Some(value) = fixed_default(broker_key) {
        return (Some(value.to_owned()), SOURCE_DEFAULT);
    }
    let (value, source) = config.properties.value(broker_key);
    (shown(broker_key, value), source_code(source))
}

fn entry(
    name: &str,
    value: Option<String>,
    source: i8,
    read_only: bool,
) -> DescribeConfigsResourceResult {
    let mut out = DescribeConfigsResourceResult::default();
    out.name = StrBytes::from_string(name.to_owned());
    out.value = value.map(StrBytes::from_string);
    out.config_source = source;
    out.read_only = read_only;
    out
}

fn synonym(name: &str, value: Option<&str>, source: i8) -> DescribeConfigsSynonym {
    let mut out = DescribeConfigsSynonym::default();
    out.name = StrBytes::from_string(name.to_owned());
    out.value = value.map(|v| StrBytes::from_string(v.to_owned()));
    out.source = source;
    out
}

/// What one DescribeConfigs resource asks for beyond names.
struct Wanted<'a> {
    keys: Option<&'a [StrBytes]>,
    synonyms: bool,
    documentation: bool,
}

impl Wanted<'_> {
    /// Null or empty asks for every config, as Kafka reads it.
    fn key(&self, name: &str) -> bool {
        self.keys
            .is_none_or(|keys| keys.is_empty() || keys.iter().any(|k| k.as_str() == name))
    }
}

pub fn describe(
    core: &Rc<Shard>,
    version: i16,
    request: DescribeConfigsRequest,
) -> DescribeConfigsResponse {
    let mut response = DescribeConfigsResponse::default();
    let config = core.shared.dynamic.current();
    for resource in &request.resources {
        let mut result = DescribeConfigsResult::default();
        result.resource_type = resource.resource_type;
        result.resource_name = resource.resource_name.clone();
        let wanted = Wanted {
            keys: resource.configuration_keys.as_deref(),
            synonyms: request.include_synonyms && version >= 1,
            documentation: request.include_documentation && version >= 3,
        };
        let name = resource.resource_name.as_str();
        let described = match resource.resource_type {
            RESOURCE_TOPIC => describe_topic(core, &config, name, &wanted),
            RESOURCE_BROKER => describe_broker(&config, name, &wanted),
            _ => Err((code::INVALID_REQUEST, None)),
        };
        match described {
            Ok(configs) => result.configs = configs,
            Err((error_code, message)) => {
                result.error_code = error_code;
                result.error_message = message.map(StrBytes::from_string);
            }
        }
        response.results.push(result);
    }
    response
}

type Described = Result<Vec<DescribeConfigsResourceResult>, (i16, Option<String>)>;

fn describe_topic(core: &Shard, config: &BrokerConfig, name: &str, wanted: &Wanted) -> Described {
    let topic = core
        .shared
        .metadata
        .topic(name)
        .ok_or((code::UNKNOWN_TOPIC_OR_PARTITION, None))?;
    let mut configs = Vec::new();
    for &(key, broker_key, _) in TOPIC_CONFIGS.iter().filter(|(key, _, _)| wanted.key(key)) {
        let mut layers: Vec<(String, Option<String>, i8)> = Vec::new();
        let (value, source) = match topic.configs.get(key) {
            Some(value) => {
                layers.push((key.to_owned(), Some(value.clone()), SOURCE_TOPIC));
                (Some(value.clone()), SOURCE_TOPIC)
            }
            None => broker_value(config, broker_key),
        };
        layers.extend(broker_layers(config, broker_key));
        let mut described = entry(key, value, source, false);
        if wanted.synonyms {
            described.synonyms = layers
                .iter()
                .map(|(name, value, source)| synonym(name, value.as_deref(), *source))
                .collect();
        }
        configs.push(described);
    }
    Ok(configs)
}

fn describe_broker(config: &BrokerConfig, name: &str, wanted: &Wanted) -> Described {
    let resource = BrokerResource::parse_local(name, config.node_id)
        .map_err(|message| (code::INVALID_REQUEST, Some(message)))?;
    let mut configs = Vec::new();
    if resource.is_cluster_default() {
        // The cluster default resource shows only what was set on it, as Kafka does.
        for (key, value) in config.properties.dynamic(true) {
            if wanted.key(key) {
                let mut described = entry(
                    key,
                    Some(value.clone()),
                    SOURCE_DYNAMIC_DEFAULT_BROKER,
                    false,
                );
                if wanted.synonyms {
                    let source = SOURCE_DYNAMIC_DEFAULT_BROKER;
                    described.synonyms = vec![synonym(key, Some(value), source)];
                }
                configs.push(described);
            }
        }
        return Ok(configs);
    }
    for key in KEYS.iter().filter(|k| wanted.key(k.name)) {
        let (value, source) = broker_value(config, key.name);
        let mut described = entry(key.name, value, source, !is_dynamic(key.name));
        if wanted.synonyms {
            described.synonyms = broker_layers(config, key.name)
                .iter()
                .map(|(name, value, source)| synonym(name, value.as_deref(), *source))
                .collect();
        }
        if wanted.documentation {
            described.documentation = Some(StrBytes::from_static_str(key.doc));
        }
        configs.push(described);
    }
    Ok(configs)
}

/// What one resource of an alter request asks for.
enum Change {
    /// AlterConfigs: the resource's overrides become exactly these.
    Replace(Vec<(String, Option<String>)>),
    /// IncrementalAlterConfigs: operations on the current overrides.
    Operations(Vec<(String, i8, Option<String>)>),
}

impl Change {
    /// Names the change gives a value to.
    fn names_set(&self) -> Vec<&str> {
        match self {
            Change::Replace(pairs) => pairs
                .iter()
                .filter(|(_, value)| value.is_some())
                .map(|(name, _)| name.as_str())
                .collect(),
            Change::Operations(operations) => operations
                .iter()
                .filter(|(_, operation, _)| *operation != OP_DELETE)
                .map(|(name, _, _)| name.as_str())
                .collect(),
        }
    }

    /// The overrides after the change, each value passed through `check`.
    fn apply(
        self,
        current: &BTreeMap<String, String>,
        check: impl Fn(&str, &str) -> Result<(), String>,
    ) -> Result<BTreeMap<String, String>, String> {
        match self {
            Change::Replace(pairs) => {
                let mut configs = BTreeMap::new();
                for (name, value) in pairs {
                    if let Some(value) = value {
                        check(&name, &value)?;
                        if !ignored_topic_config(&name) {
                            configs.insert(name, value);
                        }
                    }
                }
                Ok(configs)
            }
            Change::Operations(operations) => {
                let mut configs = current.clone();
                for (name, operation, value) in operations {
                    match (operation, value) {
                        (OP_SET, Some(value)) => {
                            check(&name, &value)?;
                            if !ignored_topic_config(&name) {
                                configs.insert(name, value);
                            }
                        }
                        (OP_DELETE, _) => {
                            configs.remove(&name);
                        }
                        _ => {
                            return Err(format!("operation {operation} on {name} is not supported"))
                        }
                    }
                }
                Ok(configs)
            }
        }
    }
}

/// Applies one resource's change: a topic's overrides or a broker resource's dynamic layer.
async fn alter_resource(
    core: &Rc<Shard>,
    resource_type: i8,
    name: String,
    change: Change,
    validate_only: bool,
) -> Result<(), (i16, String)> {
    match resource_type {
        RESOURCE_TOPIC => {
            let topic = core
                .shared
                .metadata
                .topic(&name)
                .ok_or((code::UNKNOWN_TOPIC_OR_PARTITION, String::new()))?;
            let configs = change
                .apply(&topic.configs, check_topic_config)
                .map_err(|message| (code::INVALID_CONFIG, message))?;
            let command = Command::SetTopicConfigs {
                topic: name,
                configs,
                validate_only,
            };
            cluster::change(core, command).await.map(|_| ())
        }
        RESOURCE_BROKER => alter_broker(core, name, change, validate_only).await,
        _ => Err((
            code::INVALID_REQUEST,
            "unsupported resource type".to_owned(),
        )),
    }
}

/// Changes a broker resource's dynamic layer: validated as this broker would hold it, then
/// written to the metadata log through the controller. Every broker puts the change in force
/// when it applies the record; this one has before the answer goes back.
async fn alter_broker(
    core: &Rc<Shard>,
    name: String,
    change: Change,
    validate_only: bool,
) -> Result<(), (i16, String)> {
    let resource =
        BrokerResource::parse(&name).map_err(|message| (code::INVALID_REQUEST, message))?;
    // A synonym is as dynamic as the key it sets: `log.retention.minutes` changes
    // `log.retention.ms`. It is stored under its own name, and the layer's precedence
    // (the key over its synonyms, finer units over coarser) decides the value in force.
    let read_only: Vec<&str> = change
        .names_set()
        .into_iter()
        .filter(|n| !is_dynamic(n))
        .collect();
    if !read_only.is_empty() {
        // Kafka refuses the whole resource with INVALID_REQUEST and this message.
        let message = format!(
            "Cannot update these configs dynamically: [{}]",
            read_only.join(", ")
        );
        return Err((code::INVALID_REQUEST, message));
    }
    let invalid = |message: String| {
        let message = format!("Invalid config value for resource BROKER {name:?}: {message}");
        (code::INVALID_REQUEST, message)
    };
    let image = core.shared.metadata.image();
    let node = core.shared.config.node_id;
    if let BrokerResource::Broker(id) = resource {
        if id != node && !image.brokers.contains_key(&id) {
            let message = format!("Unexpected broker id {id}: no such broker in the cluster");
            return Err((code::INVALID_REQUEST, message));
        }
    }
    let configs = change
        .apply(&image.broker_configs(&resource.name()), |_, _| Ok(()))
        .map_err(invalid)?;
    // Checked against this broker's configuration, standing in for another broker's.
    let live = core.shared.dynamic.current();
    let mut layers = dynamic::layers_in(&image, node);
    match resource {
        BrokerResource::ClusterDefault => layers.cluster_default = configs.clone(),
        BrokerResource::Broker(_) => layers.broker = configs.clone(),
    }
    dynamic::with_layers(&live, &layers).map_err(|e| invalid(e.to_string()))?;
    if validate_only {
        return Ok(());
    }
    let command = Command::SetBrokerConfigs {
        resource: resource.name(),
        configs,
    };
    cluster::change(core, command).await.map(|_| ())
}

fn outcome_fields(outcome: Result<(), (i16, String)>) -> (i16, Option<StrBytes>) {
    match outcome {
        Ok(()) => (code::NONE, None),
        Err((error_code, message)) if message.is_empty() => (error_code, None),
        Err((error_code, message)) => (error_code, Some(StrBytes::from_string(message))),
    }
}

/// One resource's answer: type, name, error code and message, shared by both alter APIs.
type Answer = (i8, StrBytes, i16, Option<StrBytes>);

async fn alter_all(
    core: &Rc<Shard>,
    resources: Vec<(i8, StrBytes, Change)>,
    validate_only: bool,
) -> Vec<Answer> {
    let mut answers = Vec::with_capacity(resources.len());
    for (resource_type, name, change) in resources {
        let outcome =
            alter_resource(core, resource_type, name.to_string(), change, validate_only).await;
        let (error_code, message) = outcome_fields(outcome);
        answers.push((resource_type, name, error_code, message));
    }
    answers
}

pub async fn alter(core: &Rc<Shard>, request: AlterConfigsRequest) -> AlterConfigsResponse {
    let resources = request.resources.into_iter().map(|resource| {
        let pairs = resource.configs.iter();
        let pairs = pairs.map(|c| (c.name.to_string(), c.value.as_ref().map(|v| v.to_string())));
        let change = Change::Replace(pairs.collect());
        (resource.resource_type, resource.resource_name, change)
    });
    let answers = alter_all(core, resources.collect(), request.validate_only).await;
    let mut response = AlterConfigsResponse::default();
    for (resource_type, name, error_code, message) in answers {
        let mut out = AlterResponse::default();
        out.resource_type = resource_type;
        out.resource_name = name;
        out.error_code = error_code;
        out.error_message = message;
        response.responses.push(out);
    }
    response
}

pub async fn incremental_alter(
    core: &Rc<Shard>,
    request: IncrementalAlterConfigsRequest,
) -> IncrementalAlterConfigsResponse {
    let resources = request.resources.into_iter().map(|resource| {
        let operations = resource.configs.iter().map(|c| {
            let value = c.value.as_ref().map(|v| v.to_string());
            (c.name.to_string(), c.config_operation, value)
        });
        let change = Change::Operations(operations.collect());
        (resource.resource_type, resource.resource_name, change)
    });
    let answers = alter_all(core, resources.collect(), request.validate_only).await;
    let mut response = IncrementalAlterConfigsResponse::default();
    for (resource_type, name, error_code, message) in answers {
        let mut out = IncrementalAlterResponse::default();
        out.resource_type = resource_type;
        out.resource_name = name;
        out.error_code = error_code;
        out.error_message = message;
        response.responses.push(out);
    }
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(name: &str, value: &str, expected: bool) {
        assert_eq!(
            check_topic_config(name, value).is_ok(),
            expected,
            "{name}={value}"
        );
    }

    #[test]
    fn topic_configs_are_checked() {
        check("retention.ms", "-1", true);
        check("retention.ms", "-2", false);
        check("segment.bytes", "0", false);
        check("segment.bytes", "1048576", true);
        check("cleanup.policy", "compact", false);
        check("cleanup.policy", "delete", true);
        check("compression.type", "zstd", true);
        check("compression.type", "brotli", false);
        check("no.such.config", "1", false);
        check("message.format.version", "0.10.0", true);
        assert!(ignored_topic_config("message.format.version"));
        assert!(!ignored_topic_config("retention.ms"));
        let kept = Change::Replace(vec![
            ("message.format.version".into(), Some("2.8-IV1".into())),
            ("retention.ms".into(), Some("1".into())),
        ]);
        assert_eq!(
            kept.apply(&BTreeMap::new(), check_topic_config),
            Ok(owned(&[("retention.ms", "1")]))
        );
    }

    #[test]
    fn every_topic_config_falls_back_to_a_known_broker_property() {
        for (key, broker_key, _) in TOPIC_CONFIGS {
            let known =
                KEYS.iter().any(|k| k.name == *broker_key) || fixed_default(broker_key).is_some();
            assert!(known, "{key} falls back to unknown {broker_key}");
        }
    }

    fn owned(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn alter_replaces_and_incremental_edits() {
        let current = owned(&[("a", "1"), ("b", "2")]);
        let replace = Change::Replace(vec![("c".into(), Some("3".into())), ("d".into(), None)]);
        assert_eq!(
            replace.apply(&current, |_, _| Ok(())),
            Ok(owned(&[("c", "3")]))
        );
        let operations = Change::Operations(vec![
            ("a".into(), OP_DELETE, None),
            ("b".into(), OP_SET, Some("5".into())),
        ]);
        assert_eq!(operations.names_set(), ["b"]);
        let edited = operations.apply(&current, |_, _| Ok(()));
        assert_eq!(edited, Ok(owned(&[("b", "5")])));
        let append = Change::Operations(vec![("a".into(), 2, Some("x".into()))]);
        assert!(append.apply(&current, |_, _| Ok(())).is_err());
        let refused = Change::Replace(vec![("a".into(), Some("bad".into()))]);
        assert!(refused.apply(&current, |_, _| Err("no".into())).is_err());
    }

    #[test]
    fn dynamic_keys_are_known_properties() {
        for key in crate::config::DYNAMIC_KEYS {
            assert!(KEYS.iter().any(|k| k.name == *key), "{key}");
        }
    }
}
