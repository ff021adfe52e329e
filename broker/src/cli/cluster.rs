//! `sluice cluster info`: the brokers and the controller (Metadata), the controller quorum
//! (DescribeQuorum, where the broker answers it) and the partitions' health.

use clap::{Args, Subcommand};
use kafka_protocol::messages::describe_quorum_request::{PartitionData, TopicData};
use kafka_protocol::messages::{DescribeQuorumRequest, DescribeQuorumResponse, MetadataResponse};
use serde::Serialize;
use serde_json::json;
use sluice_broker::error_codes as code;

use super::error::CliError;
use super::output::{cell, Printed, Table};
use super::session::{topic_name, Session};
use super::Connection;

/// The topic and partition of KRaft's metadata log, which DescribeQuorum asks about.
const METADATA_TOPIC: &str = "__cluster_metadata";

#[derive(Args)]
pub struct ClusterCommand {
    #[command(flatten)]
    pub connection: Connection,
    #[command(subcommand)]
    action: ClusterAction,
}

#[derive(Subcommand)]
enum ClusterAction {
    /// Brokers, the controller, the quorum, and partition counts (total, offline,
    /// under-replicated).
    Info,
}

#[derive(Serialize)]
struct Broker {
    id: i32,
    host: String,
    port: i32,
    rack: Option<String>,
}

#[derive(Serialize, Default)]
struct Partitions {
    total: usize,
    /// Without a leader.
    offline: usize,
    /// With an ISR smaller than the replica set.
    under_replicated: usize,
}

#[derive(Serialize)]
struct Voter {
    id: i32,
    log_end_offset: i64,
    /// How far its log end is behind the leader's.
    lag: Option<i64>,
    role: &'static str,
}

#[derive(Serialize)]
struct Quorum {
    leader: i32,
    leader_epoch: i32,
    high_watermark: i64,
    voters: Vec<Voter>,
    observers: Vec<Voter>,
}

pub async fn run(command: ClusterCommand) -> Result<Printed, CliError> {
    let mut session = Session::open(&command.connection).await?;
    match command.action {
        ClusterAction::Info => info(&mut session).await,
    }
}

async fn info(session: &mut Session) -> Result<Printed, CliError> {
    let metadata = session.metadata(None).await?;
    let mut brokers: Vec<Broker> = metadata
        .brokers
        .iter()
        .map(|b| Broker {
            id: b.node_id.0,
            host: b.host.to_string(),
            port: b.port,
            rack: b.rack.as_ref().map(|r| r.to_string()),
        })
        .collect();
    brokers.sort_by_key(|b| b.id);
    let partitions = count(&metadata);
    // A broker that does not serve DescribeQuorum (older Kafka, ZooKeeper mode) or cannot
    // reach the quorum still has the rest of the answer worth printing.
    let (quorum, quorum_error) = match quorum(session).await {
        Ok(quorum) => (Some(quorum), None),
        Err(error) => (None, Some(error)),
    };
    let controller = metadata.controller_id.0;
    let cluster_id = metadata.cluster_id.as_ref().map(|c| c.to_string());
    let text = info_text(
        cluster_id.as_deref(),
        controller,
        &brokers,
        &partitions,
        quorum.as_ref(),
        quorum_error.as_ref(),
    );
    let json = json!({
        "cluster_id": cluster_id,
        "controller": (controller >= 0).then_some(controller),
        "brokers": brokers,
        "partitions": partitions,
        "quorum": quorum,
        "quorum_error": quorum_error.as_ref().map(|e| e.to_string()),
    });
    Ok(Printed::new(text, json))
}

fn count(metadata: &MetadataResponse) -> Partitions {
    let mut counts = Partitions::default();
    for topic in metadata
        .topics
        .iter()
        .filter(|t| t.error_code == code::NONE)
    {
        for partition in &topic.partitions {
            counts.total += 1;
            if partition.leader_id.0 < 0 {
                counts.offline += 1;
            }
            if partition.isr_nodes.len() < partition.replica_nodes.len() {
                counts.under_replicated += 1;
            }
        }
    }
    counts
}

async fn quorum(session: &mut Session) -> Result<Quorum, CliError> {
    let request = DescribeQuorumRequest::default().with_topics(vec![TopicData::default()
        .with_topic_name(topic_name(METADATA_TOPIC))
        .with_partitions(vec![PartitionData::default().with_partition_index(0)])]);
    let answer = session.bootstrap().call(&request).await?;
    quorum_of(&answer)
}

fn quorum_of(answer: &DescribeQuorumResponse) -> Result<Quorum, CliError> {
    let message = answer.error_message.as_deref();
    let resource = || METADATA_TOPIC.to_owned();
    CliError::check("DescribeQuorum", resource, answer.error_code, message)?;
    let Some(partition) = answer
        .topics
        .iter()
        .flat_map(|t| t.partitions.iter())
        .next()
    else {
        return Err(CliError::Kafka {
            api: "DescribeQuorum",
            resource: resource(),
            error_code: code::UNKNOWN_SERVER_ERROR,
            message: Some("the answer described no partition".to_owned()),
        });
    };
    let message = partition.error_message.as_deref();
    CliError::check("DescribeQuorum", resource, partition.error_code, message)?;
    let leader = partition.leader_id.0;
    let leader_end = partition
        .current_voters
        .iter()
        .find(|v| v.replica_id.0 == leader)
        .map(|v| v.log_end_offset);
    let replica = |role_if_not_leader: &'static str| {
        move |state: &kafka_protocol::messages::describe_quorum_response::ReplicaState| Voter {
            id: state.replica_id.0,
            log_end_offset: state.log_end_offset,
            lag: leader_end.map(|end| end - state.log_end_offset),
            role: if state.replica_id.0 == leader {
                "leader"
            } else {
                role_if_not_leader
            },
        }
    };
    Ok(Quorum {
        leader,
        leader_epoch: partition.leader_epoch,
        high_watermark: partition.high_watermark,
        voters: partition
            .current_voters
            .iter()
            .map(replica("follower"))
            .collect(),
        observers: partition
            .observers
            .iter()
            .map(replica("observer"))
            .collect(),
    })
}

fn info_text(
    cluster_id: Option<&str>,
    controller: i32,
    brokers: &[Broker],
    partitions: &Partitions,
    quorum: Option<&Quorum>,
    quorum_error: Option<&CliError>,
) -> String {
    let mut text = format!(
        "Cluster: {}  Controller: {}\n\n",
        cluster_id.unwrap_or("-"),
        cell((controller >= 0).then_some(controller))
    );
    let mut table = Table::new(&["BROKER", "HOST", "PORT", "RACK", "CONTROLLER"]);
    for b in brokers {
        table.row(vec![
            b.id.to_string(),
            b.host.clone(),
            b.port.to_string(),
            b.rack.clone().unwrap_or_else(|| "-".to_owned()),
            if b.id == controller { "yes" } else { "" }.to_owned(),
        ]);
    }
    text.push_str(&table.render());
    text.push('\n');
    match (quorum, quorum_error) {
        (Some(quorum), _) => {
            text.push_str(&format!(
                "Quorum: leader {}  epoch {}  high watermark {}\n",
                quorum.leader, quorum.leader_epoch, quorum.high_watermark
            ));
            let mut table = Table::new(&["NODE", "ROLE", "LOG-END", "LAG"]);
            for voter in quorum.voters.iter().chain(&quorum.observers) {
                table.row(vec![
                    voter.id.to_string(),
                    voter.role.to_owned(),
                    voter.log_end_offset.to_string(),
                    cell(voter.lag),
                ]);
            }
            text.push_str(&table.render());
        }
        (None, Some(error)) => text.push_str(&format!("Quorum: not described ({error})\n")),
        (None, None) => {}
    }
    text.push_str(&format!(
        "\nPartitions: {} total, {} offline, {} under-replicated\n",
        partitions.total, partitions.offline, partitions.under_replicated
    ));
    text
}
