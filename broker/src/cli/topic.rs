//! `sluice topic`: list, describe (with per-partition offsets and the under-replicated and
//! under-min-ISR filters), create, delete, alter-config; as kafka-topics does, plus offsets.

use std::collections::BTreeMap;

use clap::{Args, Subcommand};
use kafka_protocol::messages::create_topics_request::{CreatableTopic, CreatableTopicConfig};
use kafka_protocol::messages::delete_topics_request::DeleteTopicState;
use kafka_protocol::messages::describe_configs_request::DescribeConfigsResource;
use kafka_protocol::messages::metadata_response::{
    MetadataResponsePartition, MetadataResponseTopic,
};
use kafka_protocol::messages::{
    CreateTopicsRequest, DeleteTopicsRequest, DescribeConfigsRequest, MetadataResponse,
};
use kafka_protocol::protocol::StrBytes;
use serde::Serialize;
use serde_json::json;
use sluice_broker::error_codes as code;

use super::config::{self, Resource};
use super::error::CliError;
use super::offsets::{self, Led};
use super::output::{cell, ids, Printed, Table};
use super::session::{topic_name, Session};
use super::Connection;

const MIN_INSYNC_REPLICAS: &str = "min.insync.replicas";

#[derive(Args)]
pub struct TopicCommand {
    #[command(flatten)]
    pub connection: Connection,
    #[command(subcommand)]
    action: TopicAction,
}

#[derive(Subcommand)]
enum TopicAction {
    /// Every topic with its partition count and replication factor.
    List {
        /// Leave out internal topics such as __consumer_offsets.
        #[arg(long)]
        exclude_internal: bool,
    },
    /// Per partition: leader, replicas, ISR, offline replicas, leader epoch, log start offset,
    /// high watermark and log end offset.
    Describe {
        /// Topics to describe; every topic when none is given.
        topics: Vec<String>,
        /// Only partitions whose ISR is smaller than their replica set.
        #[arg(long)]
        under_replicated_partitions: bool,
        /// Only partitions whose ISR is smaller than the topic's min.insync.replicas.
        #[arg(long)]
        under_min_isr_partitions: bool,
    },
    /// Create a topic.
    Create {
        /// The new topic's name.
        topic: String,
        /// Partitions; the broker's num.partitions when not given.
        #[arg(long, value_name = "N")]
        partitions: Option<i32>,
        /// Replicas of each partition; the broker's default.replication.factor when not given.
        #[arg(long, value_name = "R")]
        replication_factor: Option<i16>,
        /// A topic config; repeat as needed. Example: --config retention.ms=3600000
        #[arg(long = "config", value_name = "KEY=VALUE")]
        configs: Vec<String>,
    },
    /// Delete topics and their data.
    Delete {
        /// The topics to delete.
        #[arg(required = true)]
        topics: Vec<String>,
    },
    /// Set or remove a topic's config overrides (IncrementalAlterConfigs).
    AlterConfig {
        /// The topic whose configs change.
        topic: String,
        /// Set KEY to VALUE; repeat as needed.
        #[arg(long = "set", value_name = "KEY=VALUE")]
        set: Vec<String>,
        /// Remove the override of KEY (the broker's default applies again); repeat as needed.
        #[arg(long = "delete", value_name = "KEY")]
        delete: Vec<String>,
    },
}

pub async fn run(command: TopicCommand) -> Result<Printed, CliError> {
    let mut session = Session::open(&command.connection).await?;
    match command.action {
        TopicAction::List { exclude_internal } => list(&mut session, exclude_internal).await,
        TopicAction::Describe {
            topics,
            under_replicated_partitions,
            under_min_isr_partitions,
        } => {
            let filter = Filter {
                under_replicated: under_replicated_partitions,
                under_min_isr: under_min_isr_partitions,
            };
            describe(&mut session, &topics, filter).await
        }
        TopicAction::Create {
            topic,
            partitions,
            replication_factor,
            configs,
        } => {
            create(
                &mut session,
                &topic,
                partitions,
                replication_factor,
                &configs,
            )
            .await
        }
        TopicAction::Delete { topics } => delete(&mut session, &topics).await,
        TopicAction::AlterConfig { topic, set, delete } => {
            config::alter(&mut session, &Resource::Topic(topic), &set, &delete).await
        }
    }
}

fn name_of(topic: &MetadataResponseTopic) -> String {
    topic
        .name
        .as_ref()
        .map_or_else(String::new, |n| n.0.to_string())
}

/// The most replicas any partition of the topic has.
fn replication_factor(topic: &MetadataResponseTopic) -> usize {
    topic
        .partitions
        .iter()
        .map(|p| p.replica_nodes.len())
        .max()
        .unwrap_or(0)
}

async fn list(session: &mut Session, exclude_internal: bool) -> Result<Printed, CliError> {
    let metadata = session.metadata(None).await?;
    let mut topics: Vec<&MetadataResponseTopic> = metadata
        .topics
        .iter()
        .filter(|t| t.error_code == code::NONE && !(exclude_internal && t.is_internal))
        .collect();
    topics.sort_by_key(|t| name_of(t));
    let mut table = Table::new(&["TOPIC", "PARTITIONS", "REPLICATION-FACTOR", "INTERNAL"]);
    let mut listed = Vec::new();
    for topic in topics {
        let name = name_of(topic);
        let replicas = replication_factor(topic);
        table.row(vec![
            name.clone(),
            topic.partitions.len().to_string(),
            replicas.to_string(),
            topic.is_internal.to_string(),
        ]);
        listed.push(json!({
            "name": name,
            "partitions": topic.partitions.len(),
            "replication_factor": replicas,
            "internal": topic.is_internal,
        }));
    }
    Ok(Printed::new(table.render(), json!({ "topics": listed })))
}

#[derive(Clone, Copy)]
struct Filter {
    under_replicated: bool,
    under_min_isr: bool,
}

#[derive(Serialize)]
struct PartitionView {
    partition: i32,
    /// None while the partition has no leader (offline).
    leader: Option<i32>,
    leader_epoch: i32,
    replicas: Vec<i32>,
    isr: Vec<i32>,
    offline_replicas: Vec<i32>,
    log_start_offset: Option<i64>,
    high_watermark: Option<i64>,
    log_end_offset: Option<i64>,
    /// Why an offset is missing: a Kafka error's name or an unreachable leader.
    error: Option<String>,
}

#[derive(Serialize)]
struct TopicView {
    name: String,
    internal: bool,
    partition_count: usize,
    replication_factor: usize,
    min_insync_replicas: Option<i64>,
    partitions: Vec<PartitionView>,
}

impl Filter {
    fn keeps(&self, partition: &PartitionView, min_isr: Option<i64>) -> bool {
        let isr = partition.isr.len();
        let under_replicated = isr < partition.replicas.len();
        let under_min_isr = min_isr.is_some_and(|min| (isr as i64) < min);
        (!self.under_replicated || under_replicated) && (!self.under_min_isr || under_min_isr)
    }
}

async fn describe(
    session: &mut Session,
    wanted: &[String],
    filter: Filter,
) -> Result<Printed, CliError> {
    let metadata = session
        .metadata((!wanted.is_empty()).then_some(wanted))
        .await?;
    let mut topics: Vec<&MetadataResponseTopic> = Vec::new();
    for topic in &metadata.topics {
        let name = name_of(topic);
        CliError::check(
            "Metadata",
            || format!("topic {name}"),
            topic.error_code,
            None,
        )?;
        topics.push(topic);
    }
    topics.sort_by_key(|t| name_of(t));
    let names: Vec<String> = topics.iter().map(|t| name_of(t)).collect();
    let min_isr = min_insync_replicas(session, &names).await?;
    let led = offsets::leaders(&metadata, Some(names.as_slice()));
    let (consumer, debugging) = (offsets::CONSUMER, offsets::DEBUGGING);
    let bounds = Bounds {
        starts: offsets::at_leaders(session, &led, offsets::EARLIEST, consumer).await,
        watermarks: offsets::at_leaders(session, &led, offsets::LATEST, consumer).await,
        ends: offsets::at_leaders(session, &led, offsets::LATEST, debugging).await,
    };
    let mut views = Vec::new();
    for topic in topics {
        let name = name_of(topic);
        let min = min_isr.get(&name).copied().flatten();
        let mut partitions: Vec<PartitionView> = topic
            .partitions
            .iter()
            .map(|p| bounds.view(&name, p))
            .filter(|p| filter.keeps(p, min))
            .collect();
        partitions.sort_by_key(|p| p.partition);
        let filtered = filter.under_replicated || filter.under_min_isr;
        if filtered && partitions.is_empty() {
            continue;
        }
        views.push(TopicView {
            name,
            internal: topic.is_internal,
            partition_count: topic.partitions.len(),
            replication_factor: replication_factor(topic),
            min_insync_replicas: min,
            partitions,
        });
    }
    let text = describe_text(&views);
    Ok(Printed::new(text, json!({ "topics": views })))
}

/// Every partition's log start, high watermark and log end, as its leader answered.
struct Bounds {
    starts: offsets::Found,
    watermarks: offsets::Found,
    ends: offsets::Found,
}

impl Bounds {
    fn view(&self, topic: &str, p: &MetadataResponsePartition) -> PartitionView {
        let key = (topic.to_owned(), p.partition_index);
        let lookups = [&self.starts, &self.watermarks, &self.ends].map(|found| found.get(&key));
        let error = lookups
            .iter()
            .find_map(|found| found.and_then(|r| r.as_ref().err()))
            .map(ToString::to_string);
        let [start, watermark, end] =
            lookups.map(|found| found.and_then(|r| r.as_ref().ok()).copied());
        PartitionView {
            partition: p.partition_index,
            leader: (p.leader_id.0 >= 0).then_some(p.leader_id.0),
            leader_epoch: p.leader_epoch,
            replicas: p.replica_nodes.iter().map(|b| b.0).collect(),
            isr: p.isr_nodes.iter().map(|b| b.0).collect(),
            offline_replicas: p.offline_replicas.iter().map(|b| b.0).collect(),
            log_start_offset: start,
            high_watermark: watermark,
            log_end_offset: end,
            error,
        }
    }
}

fn describe_text(views: &[TopicView]) -> String {
    let mut text = String::new();
    for (i, topic) in views.iter().enumerate() {
        if i > 0 {
            text.push('\n');
        }
        text.push_str(&format!(
            "Topic: {}  PartitionCount: {}  ReplicationFactor: {}  min.insync.replicas: {}{}\n",
            topic.name,
            topic.partition_count,
            topic.replication_factor,
            cell(topic.min_insync_replicas),
            if topic.internal { "  (internal)" } else { "" },
        ));
        let mut table = Table::new(&[
            "PARTITION",
            "LEADER",
            "EPOCH",
            "REPLICAS",
            "ISR",
            "OFFLINE",
            "LOG-START",
            "HIGH-WATERMARK",
            "LOG-END",
            "ERROR",
        ]);
        for p in &topic.partitions {
            table.row(vec![
                p.partition.to_string(),
                cell(p.leader),
                p.leader_epoch.to_string(),
                ids(&p.replicas),
                ids(&p.isr),
                if p.offline_replicas.is_empty() {
                    "-".to_owned()
                } else {
                    ids(&p.offline_replicas)
                },
                cell(p.log_start_offset),
                cell(p.high_watermark),
                cell(p.log_end_offset),
                p.error.clone().unwrap_or_default(),
            ]);
        }
        text.push_str(&table.render());
    }
    text
}

/// Each topic's min.insync.replicas in force, by DescribeConfigs (None where the broker does
/// not report it or it is not a number).
async fn min_insync_replicas(
    session: &mut Session,
    topics: &[String],
) -> Result<BTreeMap<String, Option<i64>>, CliError> {
    if topics.is_empty() {
        return Ok(BTreeMap::new());
    }
    let resources = topics
        .iter()
        .map(|name| {
            DescribeConfigsResource::default()
                .with_resource_type(config::RESOURCE_TOPIC)
                .with_resource_name(StrBytes::from_string(name.clone()))
                .with_configuration_keys(Some(vec![StrBytes::from_static_str(MIN_INSYNC_REPLICAS)]))
        })
        .collect();
    let request = DescribeConfigsRequest::default().with_resources(resources);
    let answer = session.bootstrap().call(&request).await?;
    let mut found = BTreeMap::new();
    for result in &answer.results {
        let name = result.resource_name.to_string();
        let message = result.error_message.as_deref();
        let resource = || format!("topic {name}");
        CliError::check("DescribeConfigs", resource, result.error_code, message)?;
        let value = result
            .configs
            .iter()
            .find(|c| c.name.as_str() == MIN_INSYNC_REPLICAS)
            .and_then(|c| c.value.as_deref())
            .and_then(|v| v.parse().ok());
        found.insert(name, value);
    }
    Ok(found)
}

/// `KEY=VALUE` split in two; the key must not be empty.
pub fn pair(given: &str) -> Result<(String, String), CliError> {
    match given.split_once('=') {
        Some((key, value)) if !key.trim().is_empty() => {
            Ok((key.trim().to_owned(), value.to_owned()))
        }
        _ => Err(CliError::NotAPair {
            given: given.to_owned(),
        }),
    }
}

async fn create(
    session: &mut Session,
    topic: &str,
    partitions: Option<i32>,
    replication_factor: Option<i16>,
    configs: &[String],
) -> Result<Printed, CliError> {
    let mut creatable = CreatableTopic::default()
        .with_name(topic_name(topic))
        // -1 asks for the broker's default (CreateTopics v4 and later).
        .with_num_partitions(partitions.unwrap_or(-1))
        .with_replication_factor(replication_factor.unwrap_or(-1));
    for given in configs {
        let (key, value) = pair(given)?;
        creatable.configs.push(
            CreatableTopicConfig::default()
                .with_name(StrBytes::from_string(key))
                .with_value(Some(StrBytes::from_string(value))),
        );
    }
    let timeout_ms = i32::try_from(session.bootstrap().timeout().as_millis()).unwrap_or(i32::MAX);
    let request = CreateTopicsRequest::default()
        .with_topics(vec![creatable])
        .with_timeout_ms(timeout_ms);
    let answer = session.bootstrap().call(&request).await?;
    let Some(result) = answer.topics.iter().find(|t| t.name.0.as_str() == topic) else {
        return Err(missing("CreateTopics", topic));
    };
    let message = result.error_message.as_deref();
    CliError::check(
        "CreateTopics",
        || format!("topic {topic}"),
        result.error_code,
        message,
    )?;
    // Version 5 and later answer with what was chosen; earlier ones say nothing.
    let known = |n: i64| (n > 0).then_some(n);
    let partitions = known(i64::from(result.num_partitions)).or(partitions.map(i64::from));
    let replicas =
        known(i64::from(result.replication_factor)).or(replication_factor.map(i64::from));
    let text = format!(
        "Created topic {topic} ({} partitions, replication factor {}).\n",
        cell(partitions),
        cell(replicas)
    );
    let json = json!({
        "topic": topic,
        "created": true,
        "partitions": partitions,
        "replication_factor": replicas,
    });
    Ok(Printed::new(text, json))
}

/// The answer left out the resource the request named.
fn missing(api: &'static str, topic: &str) -> CliError {
    CliError::Kafka {
        api,
        resource: format!("topic {topic}"),
        error_code: code::UNKNOWN_SERVER_ERROR,
        message: Some("the answer did not mention the topic".to_owned()),
    }
}

async fn delete(session: &mut Session, topics: &[String]) -> Result<Printed, CliError> {
    let conn = session.bootstrap();
    let version = conn.version::<DeleteTopicsRequest>()?;
    let timeout_ms = i32::try_from(conn.timeout().as_millis()).unwrap_or(i32::MAX);
    let mut request = DeleteTopicsRequest::default().with_timeout_ms(timeout_ms);
    // Version 6 names topics in a struct (by name or id).
    if version >= 6 {
        request.topics = topics
            .iter()
            .map(|t| DeleteTopicState::default().with_name(Some(topic_name(t))))
            .collect();
    } else {
        request.topic_names = topics.iter().map(|t| topic_name(t)).collect();
    }
    let answer = conn.send(version, &request).await?;
    let mut table = Table::new(&["TOPIC", "RESULT"]);
    let mut results = Vec::new();
    let mut printed = Printed::new(String::new(), json!(null));
    for topic in topics {
        let result = answer.responses.iter().find(|r| {
            r.name
                .as_ref()
                .is_some_and(|n| n.0.as_str() == topic.as_str())
        });
        let outcome = match result {
            None => Err(missing("DeleteTopics", topic)),
            Some(result) => CliError::check(
                "DeleteTopics",
                || format!("topic {topic}"),
                result.error_code,
                result.error_message.as_deref(),
            ),
        };
        let shown = match &outcome {
            Ok(()) => "deleted".to_owned(),
            Err(error) => error.kafka_name().unwrap_or_else(|| error.to_string()),
        };
        table.row(vec![topic.clone(), shown.clone()]);
        results.push(json!({ "topic": topic, "result": shown }));
        if let Err(error) = outcome {
            printed.problems.push(error);
        }
    }
    printed.text = table.render();
    printed.json = json!({ "topics": results });
    Ok(printed)
}

/// The partitions of a topic as Metadata lists them, or the topic's error.
pub fn partitions_of(metadata: &MetadataResponse, topic: &str) -> Result<Vec<Led>, CliError> {
    let Some(found) = metadata
        .topics
        .iter()
        .find(|t| t.name.as_ref().is_some_and(|n| n.0.as_str() == topic))
    else {
        return Err(CliError::Kafka {
            api: "Metadata",
            resource: format!("topic {topic}"),
            error_code: code::UNKNOWN_TOPIC_OR_PARTITION,
            message: None,
        });
    };
    CliError::check(
        "Metadata",
        || format!("topic {topic}"),
        found.error_code,
        None,
    )?;
    let name = [topic.to_owned()];
    Ok(offsets::leaders(metadata, Some(name.as_slice())))
}
