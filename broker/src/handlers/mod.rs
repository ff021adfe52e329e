//! Request dispatch: decodes a frame with net's codecs and runs the handler for its API.
//! Handlers live one file per area; each returns the reply for the connection to send.

mod admin;
mod configs;
mod fetch;
mod groups;
mod metadata;
mod offsets;
mod produce;

use std::net::SocketAddr;
use std::rc::Rc;

use bytes::Bytes;
use kafka_protocol::messages::{RequestKind, ResponseKind};
use sluice_net::{Chunk, CodecError, Request, RequestHeader};

use crate::memory::Permit;
use crate::region::Region;

use crate::shard::Shard;

/// What a request produces for its connection.
pub enum Reply {
    /// A whole response frame.
    Frame(Bytes),
    /// A response whose record bytes go out zero-copy.
    Chunks(Vec<Chunk<Region>>),
    /// No response (acks=0 produce).
    Nothing,
    /// Bad input: close the connection after the responses before it.
    Close(&'static str),
}

/// Decodes one request frame. `Err` carries the reply for a frame that does not decode: an
/// ApiVersions answer for a too-new ApiVersions request (KIP-511), otherwise a close, as Kafka
/// does for input with no error code to carry it.
pub fn decode(frame: Bytes) -> Result<(RequestHeader, Request), Reply> {
    let (header, request) = match sluice_net::decode_request(frame) {
        Ok(decoded) => decoded,
        Err(CodecError::ApiVersionsUnsupported(header)) => {
            let answer = sluice_net::encode_api_versions_unsupported(&header, crate::apis::SERVED);
            return Err(Reply::Frame(answer));
        }
        Err(_) => return Err(Reply::Close("request does not decode")),
    };
    if !crate::apis::served(header.api_key, header.api_version) {
        return Err(Reply::Close("api key or version not supported"));
    }
    Ok((header, request))
}

/// Runs the handler for one decoded request. A produce request brings its turn among its
/// connection's produce requests (see `order`); `peer` is the client's address.
/// Runs one request. `permit` holds the request's bytes in the request memory pool
/// (`queued.max.request.bytes`) until they are no longer needed: a produce gives it back
/// once its appends are queued on their partitions' cores, so that acks=all requests
/// waiting on followers never keep the followers' fetches from being read; others once
/// answered.
pub async fn handle(
    core: Rc<Shard>,
    header: RequestHeader,
    request: Request,
    turn: Option<crate::order::Turn>,
    peer: SocketAddr,
    permit: Permit,
) -> Reply {
    match request {
        Request::Produce(request) => produce::handle(&core, &header, request, turn, permit).await,
        Request::Fetch(request) => {
            let _permit = permit;
            fetch::handle(&core, &header, request).await
        }
        Request::Other(kind) => {
            let _permit = permit;
            let response = other(&core, &header, kind, peer).await;
            if let Some(response) = &response {
                let codes = response_error_codes(response);
                core.metrics.count_errors(header.api_key, codes);
            }
            respond(&header, response)
        }
    }
}

fn respond(header: &RequestHeader, response: Option<ResponseKind>) -> Reply {
    match response {
        Some(response) => match sluice_net::encode_response(header, response) {
            Ok(frame) => Reply::Frame(frame),
            Err(_) => Reply::Close("response does not fit the request's version"),
        },
        None => Reply::Close("request has no handler"),
    }
}

async fn other(
    core: &Rc<Shard>,
    header: &RequestHeader,
    kind: RequestKind,
    peer: SocketAddr,
) -> Option<ResponseKind> {
    let response = match kind {
        RequestKind::ApiVersions(_) => ResponseKind::ApiVersions(admin::api_versions()),
        RequestKind::Metadata(r) => ResponseKind::Metadata(metadata::handle(core, header, r).await),
        RequestKind::ListOffsets(r) => {
            ResponseKind::ListOffsets(offsets::list_offsets(core, header.api_version, r).await)
        }
        RequestKind::CreateTopics(r) => {
            ResponseKind::CreateTopics(admin::create_topics(core, header.api_version, r).await)
        }
        RequestKind::DeleteTopics(r) => {
            ResponseKind::DeleteTopics(admin::delete_topics(core, r).await)
        }
        RequestKind::CreatePartitions(r) => {
            ResponseKind::CreatePartitions(admin::create_partitions(core, r).await)
        }
        RequestKind::DeleteRecords(r) => {
            ResponseKind::DeleteRecords(offsets::delete_records(core, r).await)
        }
        RequestKind::InitProducerId(r) => {
            ResponseKind::InitProducerId(admin::init_producer_id(core, r).await)
        }
        RequestKind::DescribeConfigs(r) => {
            ResponseKind::DescribeConfigs(configs::describe(core, header.api_version, r))
        }
        RequestKind::AlterConfigs(r) => ResponseKind::AlterConfigs(configs::alter(core, r).await),
        RequestKind::IncrementalAlterConfigs(r) => {
            ResponseKind::IncrementalAlterConfigs(configs::incremental_alter(core, r).await)
        }
        RequestKind::DescribeCluster(_) => {
            ResponseKind::DescribeCluster(admin::describe_cluster(core))
        }
        RequestKind::ElectLeaders(r) => {
            ResponseKind::ElectLeaders(admin::elect_leaders(core, r).await)
        }
        RequestKind::DescribeQuorum(_) => {
            ResponseKind::DescribeQuorum(admin::describe_quorum(core).await)
        }
        RequestKind::DescribeLogDirs(r) => {
            ResponseKind::DescribeLogDirs(admin::describe_log_dirs(core, r).await)
        }
        other => return groups_api(core, header, other, peer).await,
    };
    Some(response)
}

/// The consumer-group APIs, answered by the group's coordinator core.
async fn groups_api(
    core: &Rc<Shard>,
    header: &RequestHeader,
    kind: RequestKind,
    peer: SocketAddr,
) -> Option<ResponseKind> {
    let version = header.api_version;
    let response = match kind {
        RequestKind::FindCoordinator(r) => {
            ResponseKind::FindCoordinator(groups::find_coordinator(core, version, r).await)
        }
        RequestKind::JoinGroup(r) => {
            ResponseKind::JoinGroup(groups::join_group(core, header, peer, r).await)
        }
        RequestKind::SyncGroup(r) => {
            ResponseKind::SyncGroup(groups::sync_group(core, version, r).await)
        }
        RequestKind::Heartbeat(r) => ResponseKind::Heartbeat(groups::heartbeat(core, r).await),
        RequestKind::LeaveGroup(r) => {
            ResponseKind::LeaveGroup(groups::leave_group(core, version, r).await)
        }
        RequestKind::OffsetCommit(r) => {
            ResponseKind::OffsetCommit(groups::offset_commit(core, version, r).await)
        }
        RequestKind::OffsetFetch(r) => {
            ResponseKind::OffsetFetch(groups::offset_fetch(core, version, r).await)
        }
        RequestKind::ListGroups(r) => {
            ResponseKind::ListGroups(groups::list_groups(core, version, r).await)
        }
        RequestKind::DescribeGroups(r) => {
            ResponseKind::DescribeGroups(groups::describe_groups(core, version, r).await)
        }
        RequestKind::DeleteGroups(r) => {
            ResponseKind::DeleteGroups(groups::delete_groups(core, r).await)
        }
        RequestKind::OffsetDelete(r) => {
            ResponseKind::OffsetDelete(groups::offset_delete(core, r).await)
        }
        _ => return None,
    };
    Some(response)
}

/// The error codes a response carries, per resource or partition where it has them.
pub fn response_error_codes(response: &ResponseKind) -> Vec<i16> {
    use ResponseKind as R;
    match response {
        R::ApiVersions(r) => vec![r.error_code],
        R::Metadata(r) => r
            .topics
            .iter()
            .flat_map(|t| {
                std::iter::once(t.error_code).chain(t.partitions.iter().map(|p| p.error_code))
            })
            .collect(),
        R::ListOffsets(r) => r
            .topics
            .iter()
            .flat_map(|t| t.partitions.iter().map(|p| p.error_code))
            .collect(),
        R::CreateTopics(r) => r.topics.iter().map(|t| t.error_code).collect(),
        R::DeleteTopics(r) => r.responses.iter().map(|t| t.error_code).collect(),
        R::CreatePartitions(r) => r.results.iter().map(|t| t.error_code).collect(),
        R::DeleteRecords(r) => r
            .topics
            .iter()
            .flat_map(|t| t.partitions.iter().map(|p| p.error_code))
            .collect(),
        R::InitProducerId(r) => vec![r.error_code],
        R::DescribeConfigs(r) => r.results.iter().map(|x| x.error_code).collect(),
        R::AlterConfigs(r) => r.responses.iter().map(|x| x.error_code).collect(),
        R::IncrementalAlterConfigs(r) => r.responses.iter().map(|x| x.error_code).collect(),
        R::DescribeCluster(r) => vec![r.error_code],
        R::DescribeQuorum(r) => vec![r.error_code],
        R::ElectLeaders(r) => std::iter::once(r.error_code)
            .chain(
                r.replica_election_results
                    .iter()
                    .flat_map(|t| t.partition_result.iter().map(|p| p.error_code)),
            )
            .collect(),
        R::DescribeLogDirs(r) => std::iter::once(r.error_code)
            .chain(r.results.iter().map(|x| x.error_code))
            .collect(),
        R::FindCoordinator(r) => std::iter::once(r.error_code)
            .chain(r.coordinators.iter().map(|c| c.error_code))
            .collect(),
        R::JoinGroup(r) => vec![r.error_code],
        R::SyncGroup(r) => vec![r.error_code],
        R::Heartbeat(r) => vec![r.error_code],
        R::LeaveGroup(r) => vec![r.error_code],
        R::OffsetCommit(r) => r
            .topics
            .iter()
            .flat_map(|t| t.partitions.iter().map(|p| p.error_code))
            .collect(),
        R::OffsetFetch(r) => vec![r.error_code],
        R::ListGroups(r) => vec![r.error_code],
        R::DescribeGroups(r) => r.groups.iter().map(|g| g.error_code).collect(),
        R::DeleteGroups(r) => r.results.iter().map(|g| g.error_code).collect(),
        _ => Vec::new(),
    }
}
