//! The group APIs: FindCoordinator, JoinGroup, SyncGroup, Heartbeat, LeaveGroup, OffsetCommit,
//! OffsetFetch, ListGroups, DescribeGroups, DeleteGroups and OffsetDelete. Each finds the core
//! that coordinates the group (`groups::placement`), runs the work there with `Shard::invoke`,
//! and dresses the answer for the request's version.

use std::net::{IpAddr, SocketAddr};
use std::rc::Rc;

use bytes::Bytes;
use kafka_protocol::messages::delete_groups_response::DeletableGroupResult;
use kafka_protocol::messages::describe_groups_response::{DescribedGroup, DescribedGroupMember};
use kafka_protocol::messages::find_coordinator_response::Coordinator;
use kafka_protocol::messages::join_group_response::JoinGroupResponseMember;
use kafka_protocol::messages::leave_group_response::MemberResponse;
use kafka_protocol::messages::list_groups_response::ListedGroup;
use kafka_protocol::messages::offset_commit_response::{
    OffsetCommitResponsePartition, OffsetCommitResponseTopic,
};
use kafka_protocol::messages::offset_delete_response::{
    OffsetDeleteResponsePartition, OffsetDeleteResponseTopic,
};
use kafka_protocol::messages::offset_fetch_response::{
    OffsetFetchResponseGroup, OffsetFetchResponsePartition, OffsetFetchResponsePartitions,
    OffsetFetchResponseTopic, OffsetFetchResponseTopics,
};
use kafka_protocol::messages::{
    BrokerId, DeleteGroupsRequest, DeleteGroupsResponse, DescribeGroupsRequest,
    DescribeGroupsResponse, FindCoordinatorRequest, FindCoordinatorResponse, GroupId,
    HeartbeatRequest, HeartbeatResponse, JoinGroupRequest, JoinGroupResponse, LeaveGroupRequest,
    LeaveGroupResponse, ListGroupsRequest, ListGroupsResponse, OffsetCommitRequest,
    OffsetCommitResponse, OffsetDeleteRequest, OffsetDeleteResponse, OffsetFetchRequest,
    OffsetFetchResponse, SyncGroupRequest, SyncGroupResponse, TopicName,
};
use kafka_protocol::protocol::StrBytes;
use sluice_net::RequestHeader;

use crate::clock::now_ms;
use crate::error_codes as code;
use crate::groups::group::JoinArgs;
use crate::groups::records::OffsetValue;
use crate::groups::{self, Commit, Placement, OFFSET_METADATA_MAX_BYTES};
use crate::shard::Shard;

/// FindCoordinator's key type for consumer groups (1 is transactions, which Sluice lacks).
const KEY_TYPE_GROUP: i8 = 0;

fn text(s: &str) -> StrBytes {
    StrBytes::from_string(s.to_owned())
}

fn opt_text(s: Option<&str>) -> Option<StrBytes> {
    s.map(text)
}

/// Which group APIs refuse the empty group id. Kafka refuses it for the membership APIs only;
/// OffsetCommit, OffsetFetch, DescribeGroups, DeleteGroups and OffsetDelete take it as a name.
#[derive(Clone, Copy, PartialEq, Eq)]
enum EmptyId {
    Refused,
    Allowed,
}

pub async fn find_coordinator(
    core: &Rc<Shard>,
    version: i16,
    request: FindCoordinatorRequest,
) -> FindCoordinatorResponse {
    let keys: Vec<String> = if version >= 4 {
        request
            .coordinator_keys
            .iter()
            .map(|k| k.to_string())
            .collect()
    } else {
        vec![request.key.to_string()]
    };
    let mut answers = Vec::with_capacity(keys.len());
    for key in keys {
        let found = if request.key_type != KEY_TYPE_GROUP {
            Err(code::COORDINATOR_NOT_AVAILABLE)
        } else {
            coordinator(core, &key).await
        };
        answers.push((key, found));
    }
    let mut response = FindCoordinatorResponse::default();
    if version >= 4 {
        for (key, found) in answers {
            let mut c = Coordinator::default();
            c.key = text(&key);
            match found {
                Ok((node, host, port)) => (c.node_id, c.host, c.port) = (node, host, port),
                Err(error) => (c.error_code, c.node_id, c.port) = (error, BrokerId(-1), -1),
            }
            response.coordinators.push(c);
        }
    } else if let Some((_, found)) = answers.pop() {
        match found {
            Ok((node, host, port)) => {
                (response.node_id, response.host, response.port) = (node, host, port)
            }
            Err(error) => {
                (response.error_code, response.node_id, response.port) = (error, BrokerId(-1), -1)
            }
        }
    }
    response
}

/// The broker that coordinates `group`: the leader of its partition of `__consumer_offsets`,
/// as clients reach it.
async fn coordinator(core: &Rc<Shard>, group: &str) -> Result<(BrokerId, StrBytes, i32), i16> {
    let topic = groups::offsets_topic(core).await?;
    let partition = groups::partition_for(group, topic.partition_count());
    let leader = topic.partition(partition).map_or(-1, |p| p.leader);
    let image = core.shared.metadata.image();
    let broker = image
        .live_brokers()
        .find(|b| b.id == leader)
        .ok_or(code::COORDINATOR_NOT_AVAILABLE)?;
    Ok((
        BrokerId(broker.id),
        text(&broker.host),
        i32::from(broker.port),
    ))
}

/// Runs `work` on the core that coordinates `group`; `Err` carries a coordinator error. A
/// core still loading its groups at start-up answers COORDINATOR_LOAD_IN_PROGRESS, which
/// clients retry.
async fn on_coordinator<T, F, Fut>(
    core: &Rc<Shard>,
    group: &str,
    empty_id: EmptyId,
    work: F,
) -> Result<T, i16>
where
    T: Send + 'static,
    F: FnOnce(Rc<Shard>, Placement) -> Fut + Send + 'static,
    Fut: std::future::Future<Output = T> + 'static,
{
    if empty_id == EmptyId::Refused && group.is_empty() {
        return Err(code::INVALID_GROUP_ID);
    }
    let placement = groups::placement(core, group).await?;
    // Groups are coordinated by the leader of their partition; clients look it up again.
    let offsets = core.shared.metadata.topic(groups::OFFSETS_TOPIC);
    let node = core.shared.config.node_id;
    if !offsets.is_some_and(|t| t.is_led_by(placement.partition, node)) {
        return Err(code::NOT_COORDINATOR);
    }
    core.invoke(placement.core, move |owner| async move {
        groups::ensure_loaded(&owner, placement.partition).await?;
        Ok(work(owner, placement).await)
    })
    .await
    .ok_or(code::COORDINATOR_NOT_AVAILABLE)?
}

/// A member's host as Kafka records it: Java's `InetAddress.toString()` of the connection's
/// peer with no host name, `/127.0.0.1`, or `/0:0:0:0:0:0:0:1` (IPv6 uncompressed).
fn client_host(peer: SocketAddr) -> String {
    match peer.ip() {
        IpAddr::V4(ip) => format!("/{ip}"),
        IpAddr::V6(ip) => {
            let groups: Vec<String> = ip.segments().iter().map(|s| format!("{s:x}")).collect();
            format!("/{}", groups.join(":"))
        }
    }
}

pub async fn join_group(
    core: &Rc<Shard>,
    header: &RequestHeader,
    peer: SocketAddr,
    request: JoinGroupRequest,
) -> JoinGroupResponse {
    let version = header.api_version;
    let group = request.group_id.to_string();
    let args = JoinArgs {
        member_id: request.member_id.to_string(),
        instance_id: request.group_instance_id.as_ref().map(|s| s.to_string()),
        client_id: header.client_id.clone().unwrap_or_default(),
        client_host: client_host(peer),
        session_timeout_ms: request.session_timeout_ms,
        rebalance_timeout_ms: if version >= 1 {
            request.rebalance_timeout_ms
        } else {
            request.session_timeout_ms
        },
        protocol_type: request.protocol_type.to_string(),
        protocols: request
            .protocols
            .iter()
            .map(|p| (p.name.to_string(), p.metadata.clone()))
            .collect(),
        requires_member_id: version >= 4,
    };
    let member_id = args.member_id.clone();
    let answer = on_coordinator(
        core,
        &group.clone(),
        EmptyId::Refused,
        move |owner, at| async move { groups::join(&owner, group, at.partition, args).await },
    )
    .await;
    let mut response = JoinGroupResponse::default();
    let result = match answer {
        Ok(result) => result,
        Err(error) => {
            response.error_code = error;
            response.member_id = text(&member_id);
            return response;
        }
    };
    response.error_code = result.error;
    response.generation_id = result.generation;
    response.member_id = text(&result.member_id);
    response.leader = text(&result.leader);
    if version >= 7 {
        response.protocol_type = opt_text(result.protocol_type.as_deref());
        response.protocol_name = opt_text(result.protocol.as_deref());
    } else {
        response.protocol_name = Some(text(result.protocol.as_deref().unwrap_or_default()));
    }
    response.members = result
        .members
        .into_iter()
        .map(|(id, instance, metadata)| {
            let mut member = JoinGroupResponseMember::default();
            member.member_id = text(&id);
            if version >= 5 {
                member.group_instance_id = opt_text(instance.as_deref());
            }
            member.metadata = metadata;
            member
        })
        .collect();
    response
}

pub async fn sync_group(
    core: &Rc<Shard>,
    version: i16,
    request: SyncGroupRequest,
) -> SyncGroupResponse {
    let group = request.group_id.to_string();
    let member = (
        request.member_id.to_string(),
        request.group_instance_id.as_ref().map(|s| s.to_string()),
        request.generation_id,
    );
    let assignments: Vec<(String, Bytes)> = request
        .assignments
        .iter()
        .map(|a| (a.member_id.to_string(), a.assignment.clone()))
        .collect();
    let answer = on_coordinator(
        core,
        &group.clone(),
        EmptyId::Refused,
        move |owner, at| async move {
            groups::sync(&owner, group, at.partition, member, assignments).await
        },
    )
    .await;
    let mut response = SyncGroupResponse::default();
    match answer {
        Ok(result) => {
            response.error_code = result.error;
            response.assignment = result.assignment;
            if version >= 5 {
                response.protocol_type = opt_text(result.protocol_type.as_deref());
                response.protocol_name = opt_text(result.protocol.as_deref());
            }
        }
        Err(error) => response.error_code = error,
    }
    response
}

pub async fn heartbeat(core: &Rc<Shard>, request: HeartbeatRequest) -> HeartbeatResponse {
    let group = request.group_id.to_string();
    let member = (
        request.member_id.to_string(),
        request.group_instance_id.as_ref().map(|s| s.to_string()),
        request.generation_id,
    );
    let answer = on_coordinator(
        core,
        &group.clone(),
        EmptyId::Refused,
        move |owner, at| async move { groups::heartbeat(&owner, &group, at.partition, member) },
    )
    .await;
    let mut response = HeartbeatResponse::default();
    response.error_code = answer.unwrap_or_else(|error| error);
    response
}

pub async fn leave_group(
    core: &Rc<Shard>,
    version: i16,
    request: LeaveGroupRequest,
) -> LeaveGroupResponse {
    let group = request.group_id.to_string();
    let members: Vec<(String, Option<String>)> = if version >= 3 {
        request
            .members
            .iter()
            .map(|m| {
                let instance = m.group_instance_id.as_ref().map(|s| s.to_string());
                (m.member_id.to_string(), instance)
            })
            .collect()
    } else {
        vec![(request.member_id.to_string(), None)]
    };
    let asked = members.clone();
    let answer = on_coordinator(
        core,
        &group.clone(),
        EmptyId::Refused,
        move |owner, at| async move { groups::leave(&owner, &group, at.partition, members) },
    )
    .await;
    let mut response = LeaveGroupResponse::default();
    match answer {
        Err(error) => response.error_code = error,
        Ok(codes) if version >= 3 => {
            response.members = asked
                .into_iter()
                .zip(codes)
                .map(|((id, instance), error)| {
                    let mut member = MemberResponse::default();
                    member.member_id = text(&id);
                    member.group_instance_id = opt_text(instance.as_deref());
                    member.error_code = error;
                    member
                })
                .collect();
        }
        Ok(codes) => response.error_code = codes.first().copied().unwrap_or(code::NONE),
    }
    response
}

pub async fn offset_commit(
    core: &Rc<Shard>,
    version: i16,
    request: OffsetCommitRequest,
) -> OffsetCommitResponse {
    let group = request.group_id.to_string();
    let member = (
        request.member_id.to_string(),
        if version >= 7 {
            request.group_instance_id.as_ref().map(|s| s.to_string())
        } else {
            None
        },
        request.generation_id_or_member_epoch,
    );
    let now = now_ms();
    // Per-partition checks first; only partitions that pass go to the coordinator.
    let mut answers: Vec<(TopicName, Vec<(i32, i16)>)> = Vec::new();
    let mut commits = Vec::new();
    for topic in &request.topics {
        let name = topic.name.to_string();
        let known = core.shared.metadata.topic(&name);
        let mut partitions = Vec::new();
        for p in &topic.partitions {
            let metadata = p.committed_metadata.as_ref().map(|m| m.to_string());
            let metadata = metadata.unwrap_or_default();
            let exists = known
                .as_ref()
                .is_some_and(|t| (0..t.partition_count()).contains(&p.partition_index));
            let error = if !exists {
                code::UNKNOWN_TOPIC_OR_PARTITION
            } else if metadata.len() > OFFSET_METADATA_MAX_BYTES {
                code::OFFSET_METADATA_TOO_LARGE
            } else {
                commits.push(Commit {
                    topic: name.clone(),
                    partition: p.partition_index,
                    value: OffsetValue {
                        offset: p.committed_offset,
                        leader_epoch: if version >= 6 {
                            p.committed_leader_epoch
                        } else {
                            -1
                        },
                        metadata,
                        commit_ms: now,
                    },
                });
                code::NONE
            };
            partitions.push((p.partition_index, error));
        }
        answers.push((topic.name.clone(), partitions));
    }
    let group_error = if commits.is_empty() {
        code::NONE
    } else {
        on_coordinator(
            core,
            &group.clone(),
            EmptyId::Allowed,
            move |owner, at| async move {
                groups::commit(&owner, group, at.partition, member, commits).await
            },
        )
        .await
        .unwrap_or_else(|error| error)
    };
    let mut response = OffsetCommitResponse::default();
    for (name, partitions) in answers {
        let mut topic = OffsetCommitResponseTopic::default();
        topic.name = name;
        for (index, error) in partitions {
            let mut partition = OffsetCommitResponsePartition::default();
            partition.partition_index = index;
            partition.error_code = if error == code::NONE {
                group_error
            } else {
                error
            };
            topic.partitions.push(partition);
        }
        response.topics.push(topic);
    }
    response
}

type Wanted = Option<Vec<(String, Vec<i32>)>>;

async fn fetch_group(
    core: &Rc<Shard>,
    group: String,
    wanted: Wanted,
) -> Result<groups::TopicOffsets, i16> {
    on_coordinator(
        core,
        &group.clone(),
        EmptyId::Allowed,
        move |owner, _| async move { groups::fetch_offsets(&owner, &group, wanted) },
    )
    .await
}

pub async fn offset_fetch(
    core: &Rc<Shard>,
    version: i16,
    request: OffsetFetchRequest,
) -> OffsetFetchResponse {
    let mut response = OffsetFetchResponse::default();
    if version >= 8 {
        for wanted in request.groups {
            let topics = wanted.topics.map(|topics| {
                topics
                    .into_iter()
                    .map(|t| (t.name.to_string(), t.partition_indexes))
                    .collect()
            });
            let fetched = fetch_group(core, wanted.group_id.to_string(), topics).await;
            let mut group = OffsetFetchResponseGroup::default();
            group.group_id = wanted.group_id;
            match fetched {
                Ok(fetched) => group.topics = fetched.into_iter().map(topics_v8).collect(),
                Err(error) => group.error_code = error,
            }
            response.groups.push(group);
        }
        return response;
    }
    let topics = request.topics.map(|topics| {
        topics
            .into_iter()
            .map(|t| (t.name.to_string(), t.partition_indexes))
            .collect()
    });
    let asked = topics.clone();
    match fetch_group(core, request.group_id.to_string(), topics).await {
        Ok(fetched) => {
            response.topics = fetched
                .into_iter()
                .map(|(name, partitions)| {
                    let mut topic = OffsetFetchResponseTopic::default();
                    topic.name = TopicName(text(&name));
                    topic.partitions = partitions
                        .into_iter()
                        .map(|(index, value)| {
                            let mut p = OffsetFetchResponsePartition::default();
                            p.partition_index = index;
                            fill(&mut p.committed_offset, &mut p.metadata, value.as_ref());
                            if version >= 5 {
                                p.committed_leader_epoch =
                                    value.as_ref().map_or(-1, |v| v.leader_epoch);
                            }
                            p
                        })
                        .collect();
                    topic
                })
                .collect();
        }
        Err(error) if version >= 2 => response.error_code = error,
        // Version 1 has no top-level error code: each requested partition carries it, so the
        // client does not read the answer as "nothing committed".
        Err(error) => {
            response.topics = asked
                .unwrap_or_default()
                .into_iter()
                .map(|(name, partitions)| {
                    let mut topic = OffsetFetchResponseTopic::default();
                    topic.name = TopicName(text(&name));
                    topic.partitions = partitions
                        .into_iter()
                        .map(|index| {
                            let mut p = OffsetFetchResponsePartition::default();
                            p.partition_index = index;
                            fill(&mut p.committed_offset, &mut p.metadata, None);
                            p.error_code = error;
                            p
                        })
                        .collect();
                    topic
                })
                .collect();
        }
    }
    response
}

fn fill(offset: &mut i64, metadata: &mut Option<StrBytes>, value: Option<&OffsetValue>) {
    *offset = value.map_or(-1, |v| v.offset);
    *metadata = Some(text(value.map_or("", |v| v.metadata.as_str())));
}

fn topics_v8(
    (name, partitions): (String, Vec<(i32, Option<OffsetValue>)>),
) -> OffsetFetchResponseTopics {
    let mut topic = OffsetFetchResponseTopics::default();
    topic.name = TopicName(text(&name));
    topic.partitions = partitions
        .into_iter()
        .map(|(index, value)| {
            let mut p = OffsetFetchResponsePartitions::default();
            p.partition_index = index;
            fill(&mut p.committed_offset, &mut p.metadata, value.as_ref());
            p.committed_leader_epoch = value.as_ref().map_or(-1, |v| v.leader_epoch);
            p
        })
        .collect();
    topic
}

pub async fn list_groups(
    core: &Rc<Shard>,
    version: i16,
    request: ListGroupsRequest,
) -> ListGroupsResponse {
    let states: Vec<String> = if version >= 4 {
        request
            .states_filter
            .iter()
            .map(|s| s.to_lowercase())
            .collect()
    } else {
        Vec::new()
    };
    let mut response = ListGroupsResponse::default();
    for target in 0..core.shared.cores {
        let (loaded, listed) = core
            .invoke(target, |owner| async move {
                (owner.groups.loaded(), groups::list(&owner))
            })
            .await
            .unwrap_or((true, Vec::new()));
        if !loaded {
            response.error_code = code::COORDINATOR_LOAD_IN_PROGRESS;
        }
        for (id, protocol_type, state) in listed {
            if !states.is_empty() && !states.contains(&state.to_lowercase()) {
                continue;
            }
            let mut group = ListedGroup::default();
            group.group_id = GroupId(text(&id));
            group.protocol_type = text(&protocol_type);
            if version >= 4 {
                group.group_state = text(state);
            }
            response.groups.push(group);
        }
    }
    response
}

pub async fn describe_groups(
    core: &Rc<Shard>,
    version: i16,
    request: DescribeGroupsRequest,
) -> DescribeGroupsResponse {
    let mut response = DescribeGroupsResponse::default();
    for group_id in request.groups {
        let name = group_id.to_string();
        let found = on_coordinator(
            core,
            &name.clone(),
            EmptyId::Allowed,
            move |owner, _| async move { groups::describe(&owner, &name) },
        )
        .await;
        let mut out = DescribedGroup::default();
        out.group_id = group_id;
        match found {
            Err(error) => out.error_code = error,
            // Kafka describes a group it does not know as Dead, without an error.
            Ok(None) => out.group_state = text("Dead"),
            Ok(Some(description)) => {
                out.group_state = text(description.state);
                out.protocol_type = text(&description.protocol_type);
                out.protocol_data = text(&description.protocol);
                out.members = description
                    .members
                    .into_iter()
                    .map(|(id, instance, client, host, metadata, assignment)| {
                        let mut m = DescribedGroupMember::default();
                        m.member_id = text(&id);
                        if version >= 4 {
                            m.group_instance_id = opt_text(instance.as_deref());
                        }
                        m.client_id = text(&client);
                        m.client_host = text(&host);
                        m.member_metadata = metadata;
                        m.member_assignment = assignment;
                        m
                    })
                    .collect();
            }
        }
        response.groups.push(out);
    }
    response
}

pub async fn delete_groups(core: &Rc<Shard>, request: DeleteGroupsRequest) -> DeleteGroupsResponse {
    let mut response = DeleteGroupsResponse::default();
    for group_id in request.groups_names {
        let name = group_id.to_string();
        let deleted = on_coordinator(
            core,
            &name.clone(),
            EmptyId::Allowed,
            move |owner, at| async move { groups::delete(&owner, name, at.partition).await },
        )
        .await;
        let mut result = DeletableGroupResult::default();
        result.group_id = group_id;
        result.error_code = deleted.unwrap_or_else(|error| error);
        response.results.push(result);
    }
    response
}

pub async fn offset_delete(core: &Rc<Shard>, request: OffsetDeleteRequest) -> OffsetDeleteResponse {
    let group = request.group_id.to_string();
    let wanted: Vec<(String, Vec<i32>)> = request
        .topics
        .iter()
        .map(|t| {
            let partitions = t.partitions.iter().map(|p| p.partition_index).collect();
            (t.name.to_string(), partitions)
        })
        .collect();
    let answer = on_coordinator(
        core,
        &group.clone(),
        EmptyId::Allowed,
        move |owner, at| async move {
            groups::delete_offsets(&owner, group, at.partition, wanted).await
        },
    )
    .await;
    let mut response = OffsetDeleteResponse::default();
    match answer.and_then(|inner| inner) {
        Err(error) => response.error_code = error,
        Ok(topics) => {
            for (name, partitions) in topics {
                let mut topic = OffsetDeleteResponseTopic::default();
                topic.name = TopicName(text(&name));
                for (index, error) in partitions {
                    let mut p = OffsetDeleteResponsePartition::default();
                    p.partition_index = index;
                    p.error_code = error;
                    topic.partitions.push(p);
                }
                response.topics.push(topic);
            }
        }
    }
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(peer: &str, expected: &str) {
        assert_eq!(client_host(peer.parse().expect("address")), expected);
    }

    #[test]
    fn client_host_is_written_as_java_prints_an_address() {
        check("127.0.0.1:50000", "/127.0.0.1");
        check("[::1]:50000", "/0:0:0:0:0:0:0:1");
        check("[fe80::1:abcd]:1", "/fe80:0:0:0:0:0:1:abcd");
    }
}
