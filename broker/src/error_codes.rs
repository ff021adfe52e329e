//! Kafka error codes: the one table the broker answers with, and the one place where storage
//! errors become codes. The numbers and names come from kafka-protocol's `ResponseError`, which
//! is generated from Kafka's own list, so no code is written down twice.

use kafka_protocol::ResponseError as E;
use sluice_storage::{BatchError, StorageError};

pub const NONE: i16 = 0;
pub const UNKNOWN_SERVER_ERROR: i16 = E::UnknownServerError.code();
pub const OFFSET_OUT_OF_RANGE: i16 = E::OffsetOutOfRange.code();
pub const CORRUPT_MESSAGE: i16 = E::CorruptMessage.code();
pub const UNKNOWN_TOPIC_OR_PARTITION: i16 = E::UnknownTopicOrPartition.code();
pub const LEADER_NOT_AVAILABLE: i16 = E::LeaderNotAvailable.code();
pub const NOT_LEADER_OR_FOLLOWER: i16 = E::NotLeaderOrFollower.code();
pub const REQUEST_TIMED_OUT: i16 = E::RequestTimedOut.code();
pub const MESSAGE_TOO_LARGE: i16 = E::MessageTooLarge.code();
pub const OFFSET_METADATA_TOO_LARGE: i16 = E::OffsetMetadataTooLarge.code();
pub const COORDINATOR_LOAD_IN_PROGRESS: i16 = E::CoordinatorLoadInProgress.code();
pub const COORDINATOR_NOT_AVAILABLE: i16 = E::CoordinatorNotAvailable.code();
pub const NOT_COORDINATOR: i16 = E::NotCoordinator.code();
pub const INVALID_TOPIC_EXCEPTION: i16 = E::InvalidTopicException.code();
pub const NOT_ENOUGH_REPLICAS: i16 = E::NotEnoughReplicas.code();
pub const NOT_ENOUGH_REPLICAS_AFTER_APPEND: i16 = E::NotEnoughReplicasAfterAppend.code();
pub const INVALID_REQUIRED_ACKS: i16 = E::InvalidRequiredAcks.code();
pub const ILLEGAL_GENERATION: i16 = E::IllegalGeneration.code();
pub const INCONSISTENT_GROUP_PROTOCOL: i16 = E::InconsistentGroupProtocol.code();
pub const INVALID_GROUP_ID: i16 = E::InvalidGroupId.code();
pub const UNKNOWN_MEMBER_ID: i16 = E::UnknownMemberId.code();
pub const INVALID_SESSION_TIMEOUT: i16 = E::InvalidSessionTimeout.code();
pub const REBALANCE_IN_PROGRESS: i16 = E::RebalanceInProgress.code();
pub const UNSUPPORTED_VERSION: i16 = E::UnsupportedVersion.code();
pub const TOPIC_ALREADY_EXISTS: i16 = E::TopicAlreadyExists.code();
pub const INVALID_PARTITIONS: i16 = E::InvalidPartitions.code();
pub const INVALID_REPLICATION_FACTOR: i16 = E::InvalidReplicationFactor.code();
pub const INVALID_CONFIG: i16 = E::InvalidConfig.code();
pub const POLICY_VIOLATION: i16 = E::PolicyViolation.code();
pub const NOT_CONTROLLER: i16 = E::NotController.code();
pub const INVALID_REQUEST: i16 = E::InvalidRequest.code();
pub const OUT_OF_ORDER_SEQUENCE_NUMBER: i16 = E::OutOfOrderSequenceNumber.code();
pub const INVALID_PRODUCER_EPOCH: i16 = E::InvalidProducerEpoch.code();
pub const KAFKA_STORAGE_ERROR: i16 = E::KafkaStorageError.code();
pub const NON_EMPTY_GROUP: i16 = E::NonEmptyGroup.code();
pub const GROUP_ID_NOT_FOUND: i16 = E::GroupIdNotFound.code();
pub const FETCH_SESSION_ID_NOT_FOUND: i16 = E::FetchSessionIdNotFound.code();
pub const FENCED_LEADER_EPOCH: i16 = E::FencedLeaderEpoch.code();
pub const UNKNOWN_LEADER_EPOCH: i16 = E::UnknownLeaderEpoch.code();
pub const UNSUPPORTED_COMPRESSION_TYPE: i16 = E::UnsupportedCompressionType.code();
pub const STALE_BROKER_EPOCH: i16 = E::StaleBrokerEpoch.code();
pub const BROKER_ID_NOT_REGISTERED: i16 = E::BrokerIdNotRegistered.code();
pub const INVALID_UPDATE_VERSION: i16 = E::InvalidUpdateVersion.code();
pub const INELIGIBLE_REPLICA: i16 = E::IneligibleReplica.code();
pub const MEMBER_ID_REQUIRED: i16 = E::MemberIdRequired.code();
pub const FENCED_INSTANCE_ID: i16 = E::FencedInstanceId.code();
pub const GROUP_SUBSCRIBED_TO_TOPIC: i16 = E::GroupSubscribedToTopic.code();
pub const INVALID_RECORD: i16 = E::InvalidRecord.code();
pub const PREFERRED_LEADER_NOT_AVAILABLE: i16 = E::PreferredLeaderNotAvailable.code();
pub const ELIGIBLE_LEADERS_NOT_AVAILABLE: i16 = E::EligibleLeadersNotAvailable.code();
pub const ELECTION_NOT_NEEDED: i16 = E::ElectionNotNeeded.code();

/// Kafka's name of an error code as its `Errors` enum and its ErrorsPerSec `error` tag spell
/// it (`NOT_LEADER_OR_FOLLOWER`); `CODE_<n>` for a code Kafka does not define.
pub fn name(code: i16) -> String {
    match E::try_from_code(code) {
        None => "NONE".to_owned(),
        Some(E::Unknown(code)) => format!("CODE_{code}"),
        Some(known) => screaming_snake(&known.to_string()),
    }
}

/// `NotLeaderOrFollower` -> `NOT_LEADER_OR_FOLLOWER`.
fn screaming_snake(camel: &str) -> String {
    let mut out = String::with_capacity(camel.len() + 8);
    for (i, c) in camel.chars().enumerate() {
        if c.is_ascii_uppercase() && i > 0 {
            out.push('_');
        }
        out.push(c.to_ascii_uppercase());
    }
    out
}

/// The Kafka error code a producer or consumer should see for a storage error.
pub fn from_storage(error: &StorageError) -> i16 {
    match error {
        StorageError::Batch(batch) => from_batch(batch),
        StorageError::OffsetOutOfRange { .. } => OFFSET_OUT_OF_RANGE,
        StorageError::OutOfOrderSequence { .. } => OUT_OF_ORDER_SEQUENCE_NUMBER,
        StorageError::FencedLeaderEpoch { .. } => FENCED_LEADER_EPOCH,
        StorageError::InvalidProducerEpoch => INVALID_PRODUCER_EPOCH,
        StorageError::Io(_) => KAFKA_STORAGE_ERROR,
        _ => UNKNOWN_SERVER_ERROR,
    }
}

pub fn from_batch(error: &BatchError) -> i16 {
    match error {
        BatchError::CorruptCrc => CORRUPT_MESSAGE,
        BatchError::TooLarge { .. } => MESSAGE_TOO_LARGE,
        BatchError::UnsupportedCompression(_) => UNSUPPORTED_COMPRESSION_TYPE,
        _ => INVALID_RECORD,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(code: i16, expected: &str) {
        assert_eq!(name(code), expected, "code {code}");
    }

    #[test]
    fn names_are_kafkas() {
        check(NONE, "NONE");
        check(UNKNOWN_SERVER_ERROR, "UNKNOWN_SERVER_ERROR");
        check(NOT_LEADER_OR_FOLLOWER, "NOT_LEADER_OR_FOLLOWER");
        check(INVALID_TOPIC_EXCEPTION, "INVALID_TOPIC_EXCEPTION");
        check(KAFKA_STORAGE_ERROR, "KAFKA_STORAGE_ERROR");
        check(FETCH_SESSION_ID_NOT_FOUND, "FETCH_SESSION_ID_NOT_FOUND");
        check(9999, "CODE_9999");
    }

    #[test]
    fn codes_are_kafkas() {
        assert_eq!(NOT_LEADER_OR_FOLLOWER, 6);
        assert_eq!(INVALID_RECORD, 87);
        assert_eq!(UNSUPPORTED_COMPRESSION_TYPE, 76);
        assert_eq!(FENCED_LEADER_EPOCH, 74);
    }
}
