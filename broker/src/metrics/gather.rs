//! Collecting a scrape: every core's snapshot merged, the per-partition series its owner core
//! reads, and consumer-group lag, which takes two rounds (each core lists its groups' committed
//! offsets, then each committed partition's owner core gives its log end offset).

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::rc::Rc;
use std::sync::atomic::Ordering;

use super::snapshot::{
    Committed, FollowerLag, LagSample, PartitionSample, Snapshot, LAG_SERIES_MAX,
    PARTITION_SERIES_MAX,
};
use crate::metadata::MetadataImage;
use crate::partition::{Partition, PartitionKey};
use crate::shard::Shard;

/// Every core's snapshot, merged, with the samples that need the owner cores (partition
/// series, lag) and the broker-wide values.
pub async fn gather(core: &Rc<Shard>) -> Snapshot {
    let with_partitions = core.shared.dynamic.current().metrics_partition_series;
    let mut total = Snapshot::default();
    for target in 0..core.shared.cores {
        let snapshot = core
            .invoke(target, move |owner| async move {
                let image = owner.shared.metadata.image();
                owner
                    .metrics
                    .forget_deleted_topics(|topic| image.topic(topic).is_some());
                let mut snapshot = owner.metrics.snapshot(owner.id);
                let partitions = owner.partitions.all();
                snapshot.partitions = partitions.len() as u64;
                snapshot.queue_depths = owner
                    .outbox_depths()
                    .into_iter()
                    .map(|(to, depth)| (owner.id, to, depth))
                    .collect();
                snapshot.committed = whole_groups(owner.groups.committed_offsets());
                replication(&owner, &image, &partitions, &mut snapshot);
                if with_partitions {
                    for ((topic, partition), state) in partitions {
                        if snapshot.partition_series.len() >= PARTITION_SERIES_MAX {
                            break;
                        }
                        let stats = state.stats().await;
                        snapshot.partition_series.push(PartitionSample {
                            topic,
                            partition,
                            size_bytes: stats.size_bytes,
                            segments: stats.segments,
                            log_start_offset: stats.offsets.log_start_offset,
                            log_end_offset: stats.offsets.log_end_offset,
                            high_watermark: stats.offsets.high_watermark,
                        });
                    }
                }
                snapshot
            })
            .await;
        total.merge(snapshot.unwrap_or_default());
    }
    if let Some(controller) = &core.shared.controller {
        total.unclean_elections = controller.unclean_elections();
    }
    if core
        .shared
        .controller
        .as_ref()
        .is_some_and(|c| c.is_active())
    {
        total.active_controller = 1;
        let image = core.shared.metadata.image();
        let partitions = image.topics.values().flat_map(|t| &t.partitions);
        total.offline_partitions = partitions.filter(|p| p.leader < 0).count() as u64;
    }
    let committed = whole_groups(std::mem::take(&mut total.committed));
    total.lag = lag(core, committed).await;
    total.connections = core.shared.connections.load(Ordering::Relaxed) as u64;
    let descriptors = &core.shared.descriptors;
    total.descriptors = (descriptors.open(), descriptors.limit());
    total.log_files = (descriptors.log_files_open(), descriptors.log_files_max());
    // Counters of topics deleted while the scrape ran are left out too.
    let image = core.shared.metadata.image();
    total.topics.retain(|topic, _| image.topic(topic).is_some());
    total
}

/// The replication state of the partitions one core leads: under-replicated and under
/// min.insync.replicas counts, and each follower's lag.
fn replication(
    owner: &Shard,
    image: &MetadataImage,
    partitions: &[(PartitionKey, Rc<Partition>)],
    snapshot: &mut Snapshot,
) {
    let default_min_insync = owner.shared.dynamic.current().min_insync_replicas;
    for ((topic, index), state) in partitions {
        let replica = state.replica();
        if !replica.is_leader() {
            continue;
        }
        snapshot.leaders += 1;
        let isr = replica.isr().len();
        if isr < replica.replicas().len() {
            snapshot.under_replicated += 1;
        }
        let min_insync = image
            .topic(topic)
            .and_then(|t| t.configs.get("min.insync.replicas"))
            .and_then(|v| v.parse().ok())
            .unwrap_or(default_min_insync);
        if (isr as i32) < min_insync {
            snapshot.under_min_isr += 1;
        }
        let end = replica.log_end_offset();
        for (follower, progress) in replica.followers() {
            if snapshot.follower_lag.len() >= PARTITION_SERIES_MAX {
                break;
            }
            snapshot.follower_lag.push(FollowerLag {
                topic: topic.clone(),
                partition: *index,
                follower,
                lag: end - progress.log_end_offset.max(0),
            });
        }
    }
}

/// Sorts committed offsets by group, topic and partition and keeps whole groups, in name
/// order, while their partitions fit in `LAG_SERIES_MAX`: a group's sum is never partial.
fn whole_groups(mut committed: Vec<Committed>) -> Vec<Committed> {
    committed.retain(|(_, _, partition, offset)| *partition >= 0 && *offset >= 0);
    committed.sort_unstable();
    let mut kept = 0;
    let mut rest = committed.as_slice();
    while let Some((group, ..)) = rest.first() {
        let run = rest.iter().take_while(|c| &c.0 == group).count();
        if kept + run > LAG_SERIES_MAX {
            break;
        }
        kept += run;
        rest = &rest[run..];
    }
    committed.truncate(kept);
    committed
}

/// Lag of each committed offset against its partition's log end offset, asked of each
/// partition's owner core. Partitions that no longer exist are left out.
async fn lag(core: &Rc<Shard>, committed: Vec<Committed>) -> Vec<LagSample> {
    let mut by_owner: BTreeMap<usize, BTreeSet<(String, i32)>> = BTreeMap::new();
    for (_, topic, partition, _) in &committed {
        let owner = core.shared.owner(topic, *partition);
        by_owner
            .entry(owner)
            .or_default()
            .insert((topic.clone(), *partition));
    }
    let mut ends: HashMap<(String, i32), i64> = HashMap::new();
    for (target, wanted) in by_owner {
        let found = core
            .invoke(target, move |owner| async move {
                let mut found = Vec::with_capacity(wanted.len());
                for (topic, partition) in wanted {
                    if let Some(state) = owner.partition(&topic, partition) {
                        let end = state.offsets().log_end_offset;
                        found.push(((topic, partition), end));
                    }
                }
                found
            })
            .await;
        ends.extend(found.unwrap_or_default());
    }
    committed
        .into_iter()
        .filter_map(|(group, topic, partition, offset)| {
            let end = *ends.get(&(topic.clone(), partition))?;
            Some(LagSample {
                group,
                topic,
                partition,
                lag: end - offset,
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lag_keeps_whole_groups_within_the_bound() {
        let offsets = |group: &str, count: usize| -> Vec<Committed> {
            (0..count)
                .map(|p| (group.to_owned(), "t".to_owned(), p as i32, 1))
                .collect()
        };
        let mut committed = offsets("b", LAG_SERIES_MAX - 2);
        committed.extend(offsets("c", 3));
        committed.extend(offsets("a", 2));
        committed.push(("a".into(), "t".into(), 9, -1));
        let kept = whole_groups(committed);
        // "a" and "b" fit exactly; "c" would be cut, so none of it is served.
        assert_eq!(kept.len(), LAG_SERIES_MAX);
        assert!(kept.iter().all(|c| c.0 != "c" && c.3 >= 0));
        assert!(kept.windows(2).all(|w| w[0] <= w[1]));
    }
}
