//! `sluice group`: list, describe (committed offset, log end, lag and owner per partition),
//! delete, and reset-offsets (a plan by default, committed with `--execute`), as
//! kafka-consumer-groups does.

use std::collections::{BTreeMap, BTreeSet};

use bytes::{Buf, Bytes};
use clap::{ArgGroup, Args, Subcommand};
use kafka_protocol::messages::describe_groups_response::DescribedGroup;
use kafka_protocol::messages::offset_commit_request::{
    OffsetCommitRequestPartition, OffsetCommitRequestTopic,
};
use kafka_protocol::messages::offset_fetch_request::OffsetFetchRequestGroup;
use kafka_protocol::messages::{
    DeleteGroupsRequest, DescribeGroupsRequest, GroupId, ListGroupsRequest, OffsetCommitRequest,
    OffsetFetchRequest, OffsetFetchResponse,
};
use kafka_protocol::protocol::StrBytes;
use serde::Serialize;
use serde_json::json;
use sluice_broker::error_codes as code;

use super::error::CliError;
use super::offsets::{self, Led};
use super::output::{cell, Printed, Table};
use super::session::{topic_name, Conn, Session};
use super::topic::partitions_of;
use super::Connection;

/// Group states in which a group has no members (Kafka's names).
const MEMBERLESS: &[&str] = &["Empty", "Dead"];

#[derive(Args)]
pub struct GroupCommand {
    #[command(flatten)]
    pub connection: Connection,
    #[command(subcommand)]
    action: GroupAction,
}

#[derive(Subcommand)]
enum GroupAction {
    /// Every consumer group, with its state and coordinator (asked of every broker).
    List,
    /// Per partition: committed offset, log end (high watermark), lag, and the member that
    /// holds it.
    Describe {
        /// The group to describe.
        #[arg(long)]
        group: String,
    },
    /// Delete groups and their committed offsets (only groups without members).
    Delete {
        /// A group to delete; repeat as needed.
        #[arg(long = "group", required = true)]
        groups: Vec<String>,
    },
    /// Plan new committed offsets for a group with no members, and commit them with
    /// --execute.
    ResetOffsets(ResetArgs),
}

#[derive(Args)]
#[command(group(ArgGroup::new("strategy").required(true).args(
    ["to_earliest", "to_latest", "to_datetime", "to_offset", "shift_by"]
)))]
struct ResetArgs {
    /// The group whose committed offsets change.
    #[arg(long)]
    group: String,
    /// TOPIC (every partition) or TOPIC:P,P,...; repeat as needed.
    #[arg(long = "topic", required = true, value_name = "TOPIC[:PARTITIONS]")]
    topics: Vec<String>,
    /// To each partition's log start offset.
    #[arg(long)]
    to_earliest: bool,
    /// To each partition's high watermark (the end consumers can read).
    #[arg(long)]
    to_latest: bool,
    /// To the first offset at or after a UTC time, e.g. 2026-01-01T00:00:00Z (the end when
    /// no record is that new).
    #[arg(long, value_name = "TIME")]
    to_datetime: Option<String>,
    /// To this offset, kept within the log.
    #[arg(long, value_name = "OFFSET")]
    to_offset: Option<i64>,
    /// Move each committed offset by N (negative moves back), kept within the log.
    #[arg(long, value_name = "N", allow_hyphen_values = true)]
    shift_by: Option<i64>,
    /// Commit the plan; without it nothing changes (a dry run).
    #[arg(long)]
    execute: bool,
}

pub async fn run(command: GroupCommand) -> Result<Printed, CliError> {
    let mut session = Session::open(&command.connection).await?;
    match command.action {
        GroupAction::List => list(&mut session).await,
        GroupAction::Describe { group } => describe(&mut session, &group).await,
        GroupAction::Delete { groups } => delete(&mut session, &groups).await,
        GroupAction::ResetOffsets(args) => reset(&mut session, args).await,
    }
}

fn group_id(group: &str) -> GroupId {
    GroupId(StrBytes::from_string(group.to_owned()))
}

async fn list(session: &mut Session) -> Result<Printed, CliError> {
    session.metadata(Some(&[])).await?;
    // Each broker lists only the groups it coordinates, so every broker is asked.
    let mut groups: BTreeMap<String, (String, String, i32)> = BTreeMap::new();
    let mut problems = Vec::new();
    for id in session.broker_ids() {
        let answer = match session.broker(id).await {
            Ok(conn) => conn.call(&ListGroupsRequest::default()).await,
            Err(error) => Err(error),
        };
        let answer = match answer {
            Ok(answer) => answer,
            Err(error) => {
                problems.push(error);
                continue;
            }
        };
        let resource = || format!("broker {id}");
        if let Err(error) = CliError::check("ListGroups", resource, answer.error_code, None) {
            problems.push(error);
            continue;
        }
        for listed in answer.groups {
            let state = if listed.group_state.is_empty() {
                "-".to_owned()
            } else {
                listed.group_state.to_string()
            };
            groups.insert(
                listed.group_id.0.to_string(),
                (state, listed.protocol_type.to_string(), id),
            );
        }
    }
    let mut table = Table::new(&["GROUP", "STATE", "PROTOCOL-TYPE", "COORDINATOR"]);
    let mut listed = Vec::new();
    for (group, (state, protocol_type, coordinator)) in &groups {
        table.row(vec![
            group.clone(),
            state.clone(),
            protocol_type.clone(),
            coordinator.to_string(),
        ]);
        listed.push(json!({
            "group": group,
            "state": state,
            "protocol_type": protocol_type,
            "coordinator": coordinator,
        }));
    }
    let mut printed = Printed::new(table.render(), json!({ "groups": listed }));
    printed.problems = problems;
    Ok(printed)
}

/// One group as DescribeGroups sees it, from its coordinator.
async fn described(conn: &mut Conn, group: &str) -> Result<DescribedGroup, CliError> {
    let request = DescribeGroupsRequest::default().with_groups(vec![group_id(group)]);
    let answer = conn.call(&request).await?;
    let Some(found) = answer
        .groups
        .into_iter()
        .find(|g| g.group_id.0.as_str() == group)
    else {
        return Err(CliError::Kafka {
            api: "DescribeGroups",
            resource: format!("group {group}"),
            error_code: code::UNKNOWN_SERVER_ERROR,
            message: Some("the answer did not mention the group".to_owned()),
        });
    };
    let message = found.error_message.as_deref();
    CliError::check(
        "DescribeGroups",
        || format!("group {group}"),
        found.error_code,
        message,
    )?;
    Ok(found)
}

/// The partitions a consumer-protocol member was assigned; none for another protocol or an
/// assignment that does not parse. The bytes come from a client through the broker, so every
/// count is checked against the bytes left before anything is read or allocated for it
/// (kafka-protocol's decoder would size a `Vec` from the count first).
fn assigned(protocol_type: &str, assignment: Bytes) -> Vec<(String, i32)> {
    if protocol_type != "consumer" {
        return Vec::new();
    }
    parse_assignment(assignment).unwrap_or_default()
}

/// ConsumerProtocolAssignment (any version: each keeps v0's fields first): a version, then
/// an array of (topic, array of partitions); the user data after them is not needed.
fn parse_assignment(mut bytes: Bytes) -> Option<Vec<(String, i32)>> {
    // A topic entry is at least a string length and an array count; a partition is 4 bytes.
    const TOPIC_BYTES_MIN: usize = 2 + 4;
    const PARTITION_BYTES: usize = 4;
    let count = |bytes: &mut Bytes, each: usize| -> Option<usize> {
        let n = usize::try_from((bytes.remaining() >= 4).then(|| bytes.get_i32())?).ok()?;
        (n <= bytes.remaining() / each).then_some(n)
    };
    if bytes.remaining() < 2 || bytes.get_i16() < 0 {
        return None;
    }
    let mut out = Vec::new();
    for _ in 0..count(&mut bytes, TOPIC_BYTES_MIN)? {
        let length = usize::try_from((bytes.remaining() >= 2).then(|| bytes.get_i16())?).ok()?;
        if length > bytes.remaining() {
            return None;
        }
        let topic = String::from_utf8_lossy(&bytes.split_to(length)).into_owned();
        for _ in 0..count(&mut bytes, PARTITION_BYTES)? {
            out.push((topic.clone(), bytes.get_i32()));
        }
    }
    Some(out)
}

/// A group's committed offsets, from its coordinator (every topic).
async fn committed(conn: &mut Conn, group: &str) -> Result<BTreeMap<(String, i32), i64>, CliError> {
    let version = conn.version::<OffsetFetchRequest>()?;
    let mut request = OffsetFetchRequest::default();
    // Version 8 batched the groups; before it, null topics ask for all (version 2 and later).
    if version >= 8 {
        request.groups = vec![OffsetFetchRequestGroup::default()
            .with_group_id(group_id(group))
            .with_topics(None)];
    } else {
        request.group_id = group_id(group);
        request.topics = None;
    }
    let answer = conn.send(version, &request).await?;
    offsets_in(&answer, version, group)
}

fn offsets_in(
    answer: &OffsetFetchResponse,
    version: i16,
    group: &str,
) -> Result<BTreeMap<(String, i32), i64>, CliError> {
    let resource = || format!("group {group}");
    let mut found = BTreeMap::new();
    // Partition errors are skipped: a partition without a readable commit shows none.
    let mut keep = |topic: &str, partition: i32, offset: i64, error_code: i16| {
        if error_code == code::NONE && offset >= 0 {
            found.insert((topic.to_owned(), partition), offset);
        }
    };
    if version >= 8 {
        let Some(answered) = answer
            .groups
            .iter()
            .find(|g| g.group_id.0.as_str() == group)
        else {
            return Err(CliError::Kafka {
                api: "OffsetFetch",
                resource: resource(),
                error_code: code::UNKNOWN_SERVER_ERROR,
                message: Some("the answer did not mention the group".to_owned()),
            });
        };
        CliError::check("OffsetFetch", resource, answered.error_code, None)?;
        for topic in &answered.topics {
            for p in &topic.partitions {
                let name = topic.name.0.as_str();
                keep(name, p.partition_index, p.committed_offset, p.error_code);
            }
        }
    } else {
        CliError::check("OffsetFetch", resource, answer.error_code, None)?;
        for topic in &answer.topics {
            for p in &topic.partitions {
                let name = topic.name.0.as_str();
                keep(name, p.partition_index, p.committed_offset, p.error_code);
            }
        }
    }
    Ok(found)
}

#[derive(Serialize, Clone)]
struct Owner {
    member_id: String,
    client_id: String,
    host: String,
}

#[derive(Serialize)]
struct PartitionLag {
    topic: String,
    partition: i32,
    committed_offset: Option<i64>,
    /// The high watermark: the end a consumer can read to.
    log_end_offset: Option<i64>,
    lag: Option<i64>,
    member: Option<Owner>,
    error: Option<String>,
}

async fn describe(session: &mut Session, group: &str) -> Result<Printed, CliError> {
    let (coordinator, conn) = session.coordinator(group).await?;
    let found = described(conn, group).await?;
    let commits = committed(conn, group).await?;
    if found.group_state.as_str() == "Dead" && commits.is_empty() {
        return Err(CliError::Kafka {
            api: "DescribeGroups",
            resource: format!("group {group}"),
            error_code: code::GROUP_ID_NOT_FOUND,
            message: Some("the coordinator knows no such group".to_owned()),
        });
    }
    let mut owners: BTreeMap<(String, i32), Owner> = BTreeMap::new();
    for member in &found.members {
        let owner = Owner {
            member_id: member.member_id.to_string(),
            client_id: member.client_id.to_string(),
            host: member.client_host.to_string(),
        };
        let protocol_type = found.protocol_type.as_str();
        for key in assigned(protocol_type, member.member_assignment.clone()) {
            owners.insert(key, owner.clone());
        }
    }
    let keys: BTreeSet<(String, i32)> = commits.keys().chain(owners.keys()).cloned().collect();
    let topics: Vec<String> = keys
        .iter()
        .map(|(t, _)| t.clone())
        .collect::<BTreeSet<_>>()
        .into_iter()
        .collect();
    let metadata = session.metadata(Some(topics.as_slice())).await?;
    let led: Vec<Led> = offsets::leaders(&metadata, Some(topics.as_slice()))
        .into_iter()
        .filter(|l| keys.contains(&(l.topic.clone(), l.partition)))
        .collect();
    let ends = offsets::at_leaders(session, &led, offsets::LATEST, offsets::CONSUMER).await;
    let partitions: Vec<PartitionLag> = keys
        .into_iter()
        .map(|key| {
            let committed = commits.get(&key).copied();
            let end = ends.get(&key);
            let log_end = end.and_then(|r| r.as_ref().ok()).copied();
            let error = match end {
                Some(Err(missing)) => Some(missing.to_string()),
                Some(Ok(_)) => None,
                None => Some(code::name(code::UNKNOWN_TOPIC_OR_PARTITION)),
            };
            PartitionLag {
                member: owners.get(&key).cloned(),
                topic: key.0,
                partition: key.1,
                committed_offset: committed,
                log_end_offset: log_end,
                lag: committed.zip(log_end).map(|(c, e)| e - c),
                error,
            }
        })
        .collect();
    let text = describe_text(group, &found, coordinator, &partitions);
    let json = json!({
        "group": group,
        "state": found.group_state.as_str(),
        "protocol_type": found.protocol_type.as_str(),
        "protocol": found.protocol_data.as_str(),
        "coordinator": coordinator,
        "members": found.members.len(),
        "partitions": partitions,
    });
    Ok(Printed::new(text, json))
}

fn describe_text(
    group: &str,
    found: &DescribedGroup,
    coordinator: i32,
    partitions: &[PartitionLag],
) -> String {
    let mut text = format!(
        "Group: {group}  State: {}  Members: {}  Coordinator: {coordinator}\n",
        found.group_state.as_str(),
        found.members.len(),
    );
    let mut table = Table::new(&[
        "TOPIC",
        "PARTITION",
        "CURRENT-OFFSET",
        "LOG-END-OFFSET",
        "LAG",
        "CONSUMER-ID",
        "HOST",
        "CLIENT-ID",
    ]);
    for p in partitions {
        let owner = |field: fn(&Owner) -> &String| {
            p.member
                .as_ref()
                .map_or_else(|| "-".to_owned(), |m| field(m).clone())
        };
        table.row(vec![
            p.topic.clone(),
            p.partition.to_string(),
            cell(p.committed_offset),
            p.error.clone().unwrap_or_else(|| cell(p.log_end_offset)),
            cell(p.lag),
            owner(|m| &m.member_id),
            owner(|m| &m.host),
            owner(|m| &m.client_id),
        ]);
    }
    text.push_str(&table.render());
    text
}

async fn delete(session: &mut Session, groups: &[String]) -> Result<Printed, CliError> {
    let mut table = Table::new(&["GROUP", "RESULT"]);
    let mut results = Vec::new();
    let mut printed = Printed::new(String::new(), json!(null));
    for group in groups {
        let outcome = delete_one(session, group).await;
        let shown = match &outcome {
            Ok(()) => "deleted".to_owned(),
            Err(error) => error.kafka_name().unwrap_or_else(|| error.to_string()),
        };
        table.row(vec![group.clone(), shown.clone()]);
        results.push(json!({ "group": group, "result": shown }));
        if let Err(error) = outcome {
            printed.problems.push(error);
        }
    }
    printed.text = table.render();
    printed.json = json!({ "groups": results });
    Ok(printed)
}

async fn delete_one(session: &mut Session, group: &str) -> Result<(), CliError> {
    let (_, conn) = session.coordinator(group).await?;
    let request = DeleteGroupsRequest::default().with_groups_names(vec![group_id(group)]);
    let answer = conn.call(&request).await?;
    let error_code = answer
        .results
        .iter()
        .find(|r| r.group_id.0.as_str() == group)
        .map_or(code::UNKNOWN_SERVER_ERROR, |r| r.error_code);
    CliError::check(
        "DeleteGroups",
        || format!("group {group}"),
        error_code,
        None,
    )
}

/// One partition's line of a reset plan.
#[derive(Serialize)]
struct Move {
    topic: String,
    partition: i32,
    current_offset: Option<i64>,
    new_offset: i64,
}

/// `TOPIC` or `TOPIC:P,P,...` to the topic and the partitions named (None: all).
fn topic_spec(given: &str) -> Result<(String, Option<Vec<i32>>), CliError> {
    let bad = || CliError::BadTopicPartitions {
        given: given.to_owned(),
    };
    match given.split_once(':') {
        None if !given.is_empty() => Ok((given.to_owned(), None)),
        Some((topic, list)) if !topic.is_empty() => {
            let partitions: Result<Vec<i32>, _> =
                list.split(',').map(|p| p.trim().parse::<i32>()).collect();
            Ok((topic.to_owned(), Some(partitions.map_err(|_| bad())?)))
        }
        _ => Err(bad()),
    }
}

/// How new offsets are chosen.
enum Strategy {
    Earliest,
    Latest,
    At(i64),
    Offset(i64),
    Shift(i64),
}

impl ResetArgs {
    fn strategy(&self) -> Result<Strategy, CliError> {
        Ok(if self.to_earliest {
            Strategy::Earliest
        } else if self.to_latest {
            Strategy::Latest
        } else if let Some(given) = &self.to_datetime {
            Strategy::At(parse_datetime(given)?)
        } else if let Some(offset) = self.to_offset {
            Strategy::Offset(offset)
        } else {
            // clap requires one of the strategies, so this is --shift-by.
            Strategy::Shift(self.shift_by.unwrap_or(0))
        })
    }
}

async fn reset(session: &mut Session, args: ResetArgs) -> Result<Printed, CliError> {
    let strategy = args.strategy()?;
    let group = args.group.as_str();
    let (_, conn) = session.coordinator(group).await?;
    let found = described(conn, group).await?;
    let state = found.group_state.to_string();
    let has_members = !found.members.is_empty() || !MEMBERLESS.contains(&state.as_str());
    if has_members && args.execute {
        return Err(CliError::GroupNotEmpty {
            group: group.to_owned(),
            state,
            members: found.members.len(),
        });
    }
    let current = committed(conn, group).await?;
    let partitions = chosen_partitions(session, &args.topics).await?;
    let bounds = Bounds::of(session, &partitions, &strategy).await?;
    let mut plan = Vec::new();
    for led in &partitions {
        let key = (led.topic.clone(), led.partition);
        let current_offset = current.get(&key).copied();
        let new_offset = bounds.target(&strategy, led, current_offset, group)?;
        plan.push(Move {
            topic: led.topic.clone(),
            partition: led.partition,
            current_offset,
            new_offset,
        });
    }
    if args.execute {
        let (_, conn) = session.coordinator(group).await?;
        commit(conn, group, &plan).await?;
    }
    let mut text = if args.execute {
        format!("Committed new offsets for group {group}:\n")
    } else {
        format!(
            "Plan for group {group} (a dry run: nothing changed; add --execute to commit it):\n"
        )
    };
    if has_members {
        text.push_str(&format!(
            "Note: the group is {state} with {} member(s); --execute needs it empty.\n",
            found.members.len()
        ));
    }
    let mut table = Table::new(&[
        "GROUP",
        "TOPIC",
        "PARTITION",
        "CURRENT-OFFSET",
        "NEW-OFFSET",
    ]);
    for m in &plan {
        table.row(vec![
            group.to_owned(),
            m.topic.clone(),
            m.partition.to_string(),
            cell(m.current_offset),
            m.new_offset.to_string(),
        ]);
    }
    text.push_str(&table.render());
    let json = json!({ "group": group, "executed": args.execute, "partitions": plan });
    Ok(Printed::new(text, json))
}

/// The partitions `--topic` names, each checked against Metadata.
async fn chosen_partitions(session: &mut Session, specs: &[String]) -> Result<Vec<Led>, CliError> {
    let parsed: Vec<(String, Option<Vec<i32>>)> = specs
        .iter()
        .map(|s| topic_spec(s))
        .collect::<Result<_, _>>()?;
    let names: Vec<String> = parsed.iter().map(|(t, _)| t.clone()).collect();
    let metadata = session.metadata(Some(names.as_slice())).await?;
    let mut chosen = Vec::new();
    for (topic, wanted) in parsed {
        let all = partitions_of(&metadata, &topic)?;
        match wanted {
            None => chosen.extend(all),
            Some(wanted) => {
                for partition in wanted {
                    let Some(led) = all.iter().find(|l| l.partition == partition) else {
                        return Err(CliError::NoSuchPartition { topic, partition });
                    };
                    chosen.push(led.clone());
                }
            }
        }
    }
    chosen.sort_by(|a, b| (&a.topic, a.partition).cmp(&(&b.topic, b.partition)));
    chosen.dedup();
    Ok(chosen)
}

/// The log bounds a plan needs: log start and high watermark of every partition, and the
/// offsets at a time for --to-datetime.
struct Bounds {
    starts: offsets::Found,
    ends: offsets::Found,
    at_time: offsets::Found,
}

impl Bounds {
    async fn of(
        session: &mut Session,
        partitions: &[Led],
        strategy: &Strategy,
    ) -> Result<Bounds, CliError> {
        let consumer = offsets::CONSUMER;
        let starts = offsets::at_leaders(session, partitions, offsets::EARLIEST, consumer).await;
        let ends = offsets::at_leaders(session, partitions, offsets::LATEST, consumer).await;
        let at_time = match strategy {
            Strategy::At(ms) => offsets::at_leaders(session, partitions, *ms, consumer).await,
            _ => offsets::Found::new(),
        };
        Ok(Bounds {
            starts,
            ends,
            at_time,
        })
    }

    fn get(found: &offsets::Found, led: &Led) -> Result<i64, CliError> {
        match found.get(&(led.topic.clone(), led.partition)) {
            Some(Ok(offset)) => Ok(*offset),
            Some(Err(missing)) => Err(missing.clone().into_error(&led.topic, led.partition)),
            None => Err(CliError::NoLeader {
                topic: led.topic.clone(),
                partition: led.partition,
            }),
        }
    }

    /// The new offset of one partition, kept within [log start, high watermark] as Kafka's
    /// tool keeps it.
    fn target(
        &self,
        strategy: &Strategy,
        led: &Led,
        current: Option<i64>,
        group: &str,
    ) -> Result<i64, CliError> {
        let start = Self::get(&self.starts, led)?;
        let end = Self::get(&self.ends, led)?;
        let wanted = match strategy {
            Strategy::Earliest => start,
            Strategy::Latest => end,
            // No record at or after the time: the end, as Kafka does.
            Strategy::At(_) => match Self::get(&self.at_time, led)? {
                -1 => end,
                offset => offset,
            },
            Strategy::Offset(offset) => *offset,
            Strategy::Shift(by) => {
                let Some(current) = current else {
                    return Err(CliError::NothingToShift {
                        group: group.to_owned(),
                        topic: led.topic.clone(),
                        partition: led.partition,
                    });
                };
                current.saturating_add(*by)
            }
        };
        Ok(wanted.clamp(start, end.max(start)))
    }
}

/// OffsetCommit of the plan outside any generation (generation -1, no member id), which a
/// coordinator accepts only for a group without members.
async fn commit(conn: &mut Conn, group: &str, plan: &[Move]) -> Result<(), CliError> {
    let mut topics: BTreeMap<&str, Vec<OffsetCommitRequestPartition>> = BTreeMap::new();
    for m in plan {
        topics.entry(&m.topic).or_default().push(
            OffsetCommitRequestPartition::default()
                .with_partition_index(m.partition)
                .with_committed_offset(m.new_offset),
        );
    }
    let request = OffsetCommitRequest::default()
        .with_group_id(group_id(group))
        .with_generation_id_or_member_epoch(-1)
        .with_member_id(StrBytes::from_static_str(""))
        .with_topics(
            topics
                .into_iter()
                .map(|(name, partitions)| {
                    OffsetCommitRequestTopic::default()
                        .with_name(topic_name(name))
                        .with_partitions(partitions)
                })
                .collect(),
        );
    let answer = conn.call(&request).await?;
    for topic in &answer.topics {
        for p in &topic.partitions {
            let resource = || {
                format!(
                    "group {group}, partition {}:{}",
                    topic.name.0, p.partition_index
                )
            };
            CliError::check("OffsetCommit", resource, p.error_code, None)?;
        }
    }
    Ok(())
}

/// Milliseconds since the Unix epoch of `YYYY-MM-DDTHH:MM:SS[.fff](Z|±HH:MM)`; without a
/// zone the time is taken as UTC.
fn parse_datetime(given: &str) -> Result<i64, CliError> {
    let bad = || CliError::BadDatetime {
        given: given.to_owned(),
    };
    let (date, time) = given.split_once('T').ok_or_else(bad)?;
    let number = |text: &str| text.parse::<i64>().map_err(|_| bad());
    let mut date_parts = date.splitn(3, '-');
    let mut next = || date_parts.next().ok_or_else(bad).and_then(number);
    let (year, month, day) = (next()?, next()?, next()?);
    // The zone: Z, +HH:MM or -HH:MM after the clock time.
    let (clock, offset_minutes) = if let Some(clock) = time.strip_suffix('Z') {
        (clock, 0)
    } else if let Some(at) = time.rfind(['+', '-']) {
        let (clock, zone) = time.split_at(at);
        let sign = if zone.starts_with('-') { -1 } else { 1 };
        let (hours, minutes) = zone[1..].split_once(':').ok_or_else(bad)?;
        (clock, sign * (number(hours)? * 60 + number(minutes)?))
    } else {
        (time, 0)
    };
    let (clock, millis) = match clock.split_once('.') {
        Some((clock, fraction)) => {
            let digits: String = fraction.chars().chain("000".chars()).take(3).collect();
            (clock, number(&digits)?)
        }
        None => (clock, 0),
    };
    let mut clock_parts = clock.splitn(3, ':');
    let mut next = || clock_parts.next().ok_or_else(bad).and_then(number);
    let (hour, minute, second) = (next()?, next()?, next()?);
    let valid = (1..=12).contains(&month)
        && (1..=31).contains(&day)
        && (0..24).contains(&hour)
        && (0..60).contains(&minute)
        && (0..61).contains(&second)
        && (0..1000).contains(&millis);
    if !valid {
        return Err(bad());
    }
    let days = days_from_civil(year, month, day);
    let seconds = days * 86_400 + hour * 3600 + minute * 60 + second - offset_minutes * 60;
    Ok(seconds * 1000 + millis)
}

/// Days since 1970-01-01 of a proleptic Gregorian date (Howard Hinnant's algorithm).
fn days_from_civil(year: i64, month: i64, day: i64) -> i64 {
    let year = if month <= 2 { year - 1 } else { year };
    let era = year.div_euclid(400);
    let year_of_era = year - era * 400;
    let month_from_march = (month + 9) % 12;
    let day_of_year = (153 * month_from_march + 2) / 5 + day - 1;
    let day_of_era = year_of_era * 365 + year_of_era / 4 - year_of_era / 100 + day_of_year;
    era * 146_097 + day_of_era - 719_468
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(given: &str, expected: Option<i64>) {
        assert_eq!(parse_datetime(given).ok(), expected, "{given}");
    }

    #[test]
    fn datetimes_are_utc_milliseconds() {
        check("1970-01-01T00:00:00Z", Some(0));
        check("2026-01-01T00:00:00Z", Some(1_767_225_600_000));
        check("2026-01-01T00:00:00.250Z", Some(1_767_225_600_250));
        check("2026-01-01T01:00:00+01:00", Some(1_767_225_600_000));
        check("2000-02-29T12:00:00", Some(951_825_600_000));
        check("2026-13-01T00:00:00Z", None);
        check("yesterday", None);
        check("2026-01-01", None);
    }

    #[test]
    fn assignments_parse_and_lying_counts_do_not() {
        let mut good = Vec::new();
        good.extend_from_slice(&1i16.to_be_bytes()); // version
        good.extend_from_slice(&1i32.to_be_bytes()); // one topic
        good.extend_from_slice(&2i16.to_be_bytes());
        good.extend_from_slice(b"ev");
        good.extend_from_slice(&2i32.to_be_bytes()); // two partitions
        good.extend_from_slice(&0i32.to_be_bytes());
        good.extend_from_slice(&3i32.to_be_bytes());
        good.extend_from_slice(&(-1i32).to_be_bytes()); // no user data
        let parsed = parse_assignment(Bytes::from(good.clone()));
        assert_eq!(
            parsed,
            Some(vec![("ev".to_owned(), 0), ("ev".to_owned(), 3)])
        );
        // A partition count far beyond the bytes is refused before anything is read.
        let mut lying = good[..12].to_vec();
        lying.extend_from_slice(&i32::MAX.to_be_bytes());
        assert_eq!(parse_assignment(Bytes::from(lying)), None);
        for cut in 0..good.len() - 4 {
            let short = Bytes::from(good[..cut].to_vec());
            assert_ne!(parse_assignment(short), parsed, "cut at {cut}");
        }
    }

    #[test]
    fn topic_specs_name_partitions() {
        assert_eq!(topic_spec("t").ok(), Some(("t".to_owned(), None)));
        assert_eq!(
            topic_spec("t:0,2").ok(),
            Some(("t".to_owned(), Some(vec![0, 2])))
        );
        assert!(topic_spec("t:x").is_err());
        assert!(topic_spec(":1").is_err());
    }
}
