//! DescribeConfigs, AlterConfigs and IncrementalAlterConfigs for topics, and DescribeConfigs
//! for the broker. Topic overrides persist in the topic file and reach the owner cores' logs
//! at once; broker configs are static in this version.

use std::collections::BTreeMap;
use std::rc::Rc;

use kafka_protocol::messages::describe_configs_response::{
    DescribeConfigsResourceResult, DescribeConfigsResult, DescribeConfigsSynonym,
};
use kafka_protocol::messages::{
    AlterConfigsRequest, AlterConfigsResponse, DescribeConfigsRequest, DescribeConfigsResponse,
    IncrementalAlterConfigsRequest, IncrementalAlterConfigsResponse,
};
use kafka_protocol::protocol::StrBytes;

use super::metadata::update_topic;
use crate::config::{Source, KEYS};
use crate::core::Core;
use crate::error_codes as code;

const RESOURCE_TOPIC: i8 = 2;
const RESOURCE_BROKER: i8 = 4;

/// Kafka's ConfigSource values.
const SOURCE_TOPIC: i8 = 1;
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
        Check::OneOf(&["producer"]),
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
];

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

fn broker_value(core: &Core, broker_key: &str) -> (String, i8) {
    if let Some(value) = fixed_default(broker_key) {
        return (value.to_owned(), SOURCE_DEFAULT);
    }
    let (value, source) = core.shared.config.properties.value(broker_key);
    let value = if value.is_empty() {
        i64::MAX.to_string()
    } else {
        value
    };
    let source = match source {
        Source::Default => SOURCE_DEFAULT,
        Source::StaticBroker => SOURCE_STATIC_BROKER,
    };
    (value, source)
}

fn entry(name: &str, value: String, source: i8, read_only: bool) -> DescribeConfigsResourceResult {
    let mut out = DescribeConfigsResourceResult::default();
    out.name = StrBytes::from_string(name.to_owned());
    out.value = Some(StrBytes::from_string(value));
    out.config_source = source;
    out.read_only = read_only;
    out
}

fn synonym(name: &str, value: &str, source: i8) -> DescribeConfigsSynonym {
    let mut out = DescribeConfigsSynonym::default();
    out.name = StrBytes::from_string(name.to_owned());
    out.value = Some(StrBytes::from_string(value.to_owned()));
    out.source = source;
    out
}

pub fn describe(
    core: &Rc<Core>,
    version: i16,
    request: DescribeConfigsRequest,
) -> DescribeConfigsResponse {
    let mut response = DescribeConfigsResponse::default();
    for resource in request.resources {
        let mut result = DescribeConfigsResult::default();
        result.resource_type = resource.resource_type;
        result.resource_name = resource.resource_name.clone();
        let wanted = |name: &str| {
            resource
                .configuration_keys
                .as_ref()
                .is_none_or(|keys| keys.iter().any(|k| k.as_str() == name))
        };
        let name = resource.resource_name.to_string();
        match resource.resource_type {
            RESOURCE_TOPIC => match core.shared.topics.get(&name) {
                Some(topic) => {
                    for &(key, broker_key, _) in
                        TOPIC_CONFIGS.iter().filter(|(key, _, _)| wanted(key))
                    {
                        let (broker, broker_source) = broker_value(core, broker_key);
                        let mut synonyms = Vec::new();
                        let described = match topic.configs.get(key) {
                            Some(value) => {
                                synonyms.push(synonym(key, value, SOURCE_TOPIC));
                                entry(key, value.clone(), SOURCE_TOPIC, false)
                            }
                            None => entry(key, broker.clone(), broker_source, false),
                        };
                        synonyms.push(synonym(broker_key, &broker, broker_source));
                        let mut described = described;
                        if request.include_synonyms && version >= 1 {
                            described.synonyms = synonyms;
                        }
                        result.configs.push(described);
                    }
                }
                None => result.error_code = code::UNKNOWN_TOPIC_OR_PARTITION,
            },
            RESOURCE_BROKER => {
                for key in KEYS.iter().filter(|k| wanted(k.name)) {
                    let (value, source) = broker_value(core, key.name);
                    result.configs.push(entry(key.name, value, source, true));
                }
            }
            _ => result.error_code = code::INVALID_REQUEST,
        }
        response.results.push(result);
    }
    response
}

/// Replaces a topic's overrides with what `edit` makes of them: persisted first, then applied
/// on every core. Only topic resources can change; broker configs are static.
async fn replace_topic_configs(
    core: &Rc<Core>,
    resource_type: i8,
    name: String,
    edit: impl FnOnce(&BTreeMap<String, String>) -> Result<BTreeMap<String, String>, String>
        + Send
        + 'static,
    validate_only: bool,
) -> Result<(), (i16, String)> {
    if resource_type != RESOURCE_TOPIC {
        let message = "broker configs are static in this version".to_owned();
        return Err((code::INVALID_REQUEST, message));
    }
    update_topic(core, name, validate_only, move |topic| {
        let configs = edit(&topic.configs).map_err(|message| (code::INVALID_CONFIG, message))?;
        Ok(topic.with_configs(configs))
    })
    .await
}

fn outcome_fields(outcome: Result<(), (i16, String)>) -> (i16, Option<StrBytes>) {
    match outcome {
        Ok(()) => (code::NONE, None),
        Err((error_code, message)) if message.is_empty() => (error_code, None),
        Err((error_code, message)) => (error_code, Some(StrBytes::from_string(message))),
    }
}

pub async fn alter(core: &Rc<Core>, request: AlterConfigsRequest) -> AlterConfigsResponse {
    let mut response = AlterConfigsResponse::default();
    for resource in request.resources {
        let pairs: Vec<(String, Option<String>)> = resource
            .configs
            .iter()
            .map(|c| (c.name.to_string(), c.value.as_ref().map(|v| v.to_string())))
            .collect();
        let outcome = {
            // AlterConfigs replaces the whole set of overrides.
            let edit = move |_: &BTreeMap<String, String>| {
                let mut configs = BTreeMap::new();
                for (name, value) in pairs {
                    if let Some(value) = value {
                        check_topic_config(&name, &value)?;
                        configs.insert(name, value);
                    }
                }
                Ok(configs)
            };
            replace_topic_configs(
                core,
                resource.resource_type,
                resource.resource_name.to_string(),
                edit,
                request.validate_only,
            )
            .await
        };
        let (error_code, error_message) = outcome_fields(outcome);
        let mut out =
            kafka_protocol::messages::alter_configs_response::AlterConfigsResourceResponse::default(
            );
        out.resource_type = resource.resource_type;
        out.resource_name = resource.resource_name;
        out.error_code = error_code;
        out.error_message = error_message;
        response.responses.push(out);
    }
    response
}

pub async fn incremental_alter(
    core: &Rc<Core>,
    request: IncrementalAlterConfigsRequest,
) -> IncrementalAlterConfigsResponse {
    let mut response = IncrementalAlterConfigsResponse::default();
    for resource in request.resources {
        let operations: Vec<(String, i8, Option<String>)> = resource
            .configs
            .iter()
            .map(|c| {
                (
                    c.name.to_string(),
                    c.config_operation,
                    c.value.as_ref().map(|v| v.to_string()),
                )
            })
            .collect();
        let outcome = {
            let edit = move |current: &BTreeMap<String, String>| {
                let mut configs = current.clone();
                for (name, operation, value) in operations {
                    match (operation, value) {
                        (OP_SET, Some(value)) => {
                            check_topic_config(&name, &value)?;
                            configs.insert(name, value);
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
            };
            replace_topic_configs(
                core,
                resource.resource_type,
                resource.resource_name.to_string(),
                edit,
                request.validate_only,
            )
            .await
        };
        let (error_code, error_message) = outcome_fields(outcome);
        let mut out =
            kafka_protocol::messages::incremental_alter_configs_response::AlterConfigsResourceResponse::default();
        out.resource_type = resource.resource_type;
        out.resource_name = resource.resource_name;
        out.error_code = error_code;
        out.error_message = error_message;
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
        check("no.such.config", "1", false);
    }

    #[test]
    fn every_topic_config_falls_back_to_a_known_broker_property() {
        for (key, broker_key, _) in TOPIC_CONFIGS {
            let known =
                KEYS.iter().any(|k| k.name == *broker_key) || fixed_default(broker_key).is_some();
            assert!(known, "{key} falls back to unknown {broker_key}");
        }
    }
}
