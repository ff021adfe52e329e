//! The one list of Kafka APIs the broker serves, with the versions it advertises, and their
//! names as Kafka's request metrics spell them. Dispatch, ApiVersions and the metrics all read
//! it; net's own list says what its codecs can decode, which covers this one (checked below).

use kafka_protocol::messages::ApiKey;

/// APIs this broker answers, with the versions it advertises: (key, min, max).
pub const SERVED: &[(i16, i16, i16)] = &[
    (ApiKey::Produce as i16, 3, 9),
    (ApiKey::Fetch as i16, 4, 12),
    (ApiKey::ListOffsets as i16, 1, 7),
    (ApiKey::Metadata as i16, 0, 12),
    (ApiKey::OffsetCommit as i16, 2, 8),
    (ApiKey::OffsetFetch as i16, 1, 8),
    (ApiKey::FindCoordinator as i16, 0, 4),
    (ApiKey::JoinGroup as i16, 0, 9),
    (ApiKey::Heartbeat as i16, 0, 4),
    (ApiKey::LeaveGroup as i16, 0, 5),
    (ApiKey::SyncGroup as i16, 0, 5),
    (ApiKey::DescribeGroups as i16, 0, 5),
    (ApiKey::ListGroups as i16, 0, 4),
    (ApiKey::ApiVersions as i16, 0, 4),
    (ApiKey::CreateTopics as i16, 2, 7),
    (ApiKey::DeleteTopics as i16, 1, 6),
    (ApiKey::DeleteRecords as i16, 0, 2),
    (ApiKey::InitProducerId as i16, 0, 4),
    (ApiKey::DescribeConfigs as i16, 1, 4),
    (ApiKey::AlterConfigs as i16, 0, 2),
    (ApiKey::DescribeLogDirs as i16, 1, 4),
    (ApiKey::CreatePartitions as i16, 0, 3),
    (ApiKey::DeleteGroups as i16, 0, 2),
    (ApiKey::ElectLeaders as i16, 0, 2),
    (ApiKey::IncrementalAlterConfigs as i16, 0, 1),
    (ApiKey::OffsetDelete as i16, 0, 0),
    (ApiKey::DescribeCluster as i16, 0, 1),
    (ApiKey::DescribeQuorum as i16, 0, 2),
];

/// Whether the broker serves `key` at `version`.
pub fn served(key: i16, version: i16) -> bool {
    SERVED
        .iter()
        .any(|&(k, min, max)| k == key && (min..=max).contains(&version))
}

/// Kafka's name of an API (`Produce`, `OffsetCommit`), as its RequestMetrics `request` tag
/// spells it; `ApiKey<n>` for a key Kafka does not define.
pub fn name(key: i16) -> String {
    match ApiKey::try_from(key) {
        Ok(api) => format!("{api:?}"),
        Err(_) => format!("ApiKey{key}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn served_versions_are_decodable() {
        for &(key, min, max) in SERVED {
            let decodable = sluice_net::SUPPORTED_APIS
                .iter()
                .any(|&(k, lo, hi)| k == key && lo <= min && max <= hi);
            assert!(
                decodable,
                "api {key} {min}..={max} is served but net cannot decode it"
            );
        }
    }

    #[test]
    fn names_are_kafkas() {
        assert_eq!(name(0), "Produce");
        assert_eq!(name(44), "IncrementalAlterConfigs");
        assert_eq!(name(60), "DescribeCluster");
        assert_eq!(name(-5), "ApiKey-5");
    }
}
