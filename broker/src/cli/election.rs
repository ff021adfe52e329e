//! `sluice leader-election`: ElectLeaders for the preferred replica or, where no in-sync
//! replica is alive, any live one (unclean), as kafka-leader-election does.

use std::collections::BTreeMap;

use clap::{ArgGroup, Args};
use kafka_protocol::messages::elect_leaders_request::TopicPartitions;
use kafka_protocol::messages::ElectLeadersRequest;
use serde_json::json;
use sluice_broker::error_codes as code;

use super::error::CliError;
use super::output::{Printed, Table};
use super::session::{topic_name, Session};
use super::topic::partitions_of;
use super::Connection;

/// The partitions of `topic` to elect for: `partition`, or all of them.
async fn chosen(
    session: &mut Session,
    topic: &str,
    partition: Option<i32>,
) -> Result<TopicPartitions, CliError> {
    let metadata = session.metadata(Some(&[topic.to_owned()])).await?;
    let all: Vec<i32> = partitions_of(&metadata, topic)?
        .iter()
        .map(|l| l.partition)
        .collect();
    let chosen = match partition {
        None => all,
        Some(p) if all.contains(&p) => vec![p],
        Some(partition) => {
            return Err(CliError::NoSuchPartition {
                topic: topic.to_owned(),
                partition,
            })
        }
    };
    Ok(TopicPartitions::default()
        .with_topic(topic_name(topic))
        .with_partitions(chosen))
}

/// ElectLeaders election types.
const PREFERRED: i8 = 0;
const UNCLEAN: i8 = 1;

#[derive(Args)]
#[command(group(ArgGroup::new("election").required(true).args(["preferred", "unclean"])))]
pub struct ElectionCommand {
    #[command(flatten)]
    pub connection: Connection,
    /// Give leadership back to each partition's first replica, where it is alive and in sync.
    #[arg(long)]
    preferred: bool,
    /// Give a partition whose in-sync replicas are all gone a leader from the other live
    /// replicas. Records they do not have are lost.
    #[arg(long)]
    unclean: bool,
    /// Only this topic's partitions (every partition of the cluster when not given).
    #[arg(long)]
    topic: Option<String>,
    /// Only this partition of --topic.
    #[arg(long, requires = "topic")]
    partition: Option<i32>,
}

pub async fn run(command: ElectionCommand) -> Result<Printed, CliError> {
    let mut session = Session::open(&command.connection).await?;
    let partitions = match &command.topic {
        None => None,
        Some(topic) => Some(vec![chosen(&mut session, topic, command.partition).await?]),
    };
    let conn = session.bootstrap();
    let timeout_ms = i32::try_from(conn.timeout().as_millis()).unwrap_or(i32::MAX);
    let request = ElectLeadersRequest::default()
        .with_election_type(if command.unclean { UNCLEAN } else { PREFERRED })
        .with_topic_partitions(partitions)
        .with_timeout_ms(timeout_ms);
    let answer = conn.call(&request).await?;
    CliError::check(
        "ElectLeaders",
        || "the cluster".to_owned(),
        answer.error_code,
        None,
    )?;
    let mut results: BTreeMap<(String, i32), (i16, Option<String>)> = BTreeMap::new();
    for topic in &answer.replica_election_results {
        for p in &topic.partition_result {
            let message = p.error_message.as_ref().map(|m| m.to_string());
            results.insert(
                (topic.topic.0.to_string(), p.partition_id),
                (p.error_code, message),
            );
        }
    }
    let mut table = Table::new(&["TOPIC", "PARTITION", "RESULT"]);
    let mut listed = Vec::new();
    let mut printed = Printed::new(String::new(), json!(null));
    for ((topic, partition), (error_code, message)) in results {
        let shown = match error_code {
            code::NONE => "elected".to_owned(),
            other => code::name(other),
        };
        table.row(vec![topic.clone(), partition.to_string(), shown.clone()]);
        listed.push(json!({ "topic": topic, "partition": partition, "result": shown }));
        // A partition already led by the replica asked for is not a failure.
        if !matches!(error_code, code::NONE | code::ELECTION_NOT_NEEDED) {
            printed.problems.push(CliError::Kafka {
                api: "ElectLeaders",
                resource: format!("partition {topic}:{partition}"),
                error_code,
                message,
            });
        }
    }
    printed.text = table.render();
    printed.json = json!({ "partitions": listed });
    Ok(printed)
}
