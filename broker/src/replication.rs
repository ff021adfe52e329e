//! Replication between brokers. As a follower, this broker copies its leaders' logs with
//! `num.replica.fetchers` fetchers per leader, each sending one Fetch (with its replica id)
//! for all the partitions Kafka's hash gives it, and appending what comes back on the
//! partitions' owner cores, byte for byte. As a leader, it asks the controller to change an
//! ISR when a follower falls behind or catches up (the rules are in `partition/replica.rs`).

use std::cell::{Cell, RefCell};
use std::collections::{BTreeMap, HashMap};
use std::net::SocketAddr;
use std::rc::Rc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use bytes::Bytes;
use event_listener::Event;
use kafka_protocol::messages::fetch_request::{FetchPartition, FetchTopic};
use kafka_protocol::messages::{BrokerId, FetchRequest, TopicName};
use kafka_protocol::protocol::StrBytes;
use sluice_net::client::Client;

use crate::clock::now_ms;
use crate::cluster;
use crate::controller::Command;
use crate::error_codes as code;
use crate::ids::{java_hash, kafka_abs};
use crate::metadata::MetadataImage;
use crate::metrics::cells::CoreMetrics;
use crate::partition::replica::IsrChange;
use crate::shard::Shard;

/// The Fetch version followers send: the last one that names topics, with diverging epochs.
const FOLLOWER_FETCH_VERSION: i16 = 12;

/// The fetcher a partition goes to, as Kafka assigns it.
pub fn fetcher_for(topic: &str, partition: i32, fetchers: u32) -> u32 {
    let hash = java_hash(topic).wrapping_mul(31).wrapping_add(partition);
    (kafka_abs(hash) as u32) % fetchers.max(1)
}

/// Sends an ISR change for a partition this core owns and leads to the controller, one at a
/// time; the change takes effect when the broker applies the committed metadata.
pub fn request_isr_change(core: &Rc<Shard>, topic: &str, partition: i32, change: IsrChange) {
    let Some(state) = core.partition(topic, partition) else {
        return;
    };
    let before = state.replica().isr().len();
    state.isr_change_sent(change.isr.clone());
    let core = core.clone();
    let topic = topic.to_owned();
    compio::runtime::spawn(async move {
        let shrink = change.isr.len() < before;
        let command = Command::AlterPartition {
            broker: core.shared.config.node_id,
            broker_epoch: core.shared.broker_epoch.load(Ordering::Relaxed),
            topic: topic.clone(),
            partition,
            leader_epoch: change.leader_epoch,
            partition_epoch: change.partition_epoch,
            isr: change.isr.clone(),
        };
        let deadline = Instant::now() + Duration::from_secs(10);
        match cluster::command_until(&core, command, deadline).await {
            Ok(_) => {
                let counter = if shrink {
                    &core.metrics.isr_shrinks
                } else {
                    &core.metrics.isr_expands
                };
                CoreMetrics::add(counter, 1);
                tracing::info!(%topic, partition, isr = ?change.isr, "ISR changed");
            }
            Err((error_code, message)) => {
                tracing::warn!(%topic, partition, error_code, %message, "ISR change refused");
                if let Some(state) = core.partition(&topic, partition) {
                    state.isr_change_failed();
                }
            }
        }
    })
    .detach();
}

/// Shrinks the ISR of every partition this core leads whose followers lag too long.
pub fn check_isr(core: &Rc<Shard>) {
    let lag_max_ms = core.shared.dynamic.current().replica_lag_time_max_ms;
    let now = now_ms();
    for ((topic, partition), state) in core.partitions.all() {
        if let Some(change) = state.isr_shrink(now, lag_max_ms) {
            request_isr_change(core, &topic, partition, change);
        }
    }
}

/// A fetcher: which leader it copies from, and the partitions it copies.
type FetcherKey = (i32, u32);

/// One partition a fetcher copies: where it fetches from next, once known.
#[derive(Debug, Clone, Copy, Default)]
struct Position {
    offset: Option<(i64, i32)>,
}

struct Fetcher {
    partitions: RefCell<BTreeMap<(String, i32), Position>>,
    stopped: Cell<bool>,
    changed: Event,
}

/// Fetch loops still running on this core, and an event when one ends.
#[derive(Default)]
struct Running {
    count: Cell<usize>,
    ended: Event,
}

thread_local! {
    static RUNNING: Running = Running::default();
}

/// Waits (up to a few seconds) until the fetch loops have seen the stop and let their
/// connections go, so nothing of theirs is left when the reactor's runtime ends.
pub async fn stopped(_admin: &Rc<Shard>) {
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let ended = RUNNING.with(|r| r.ended.listen());
        if RUNNING.with(|r| r.count.get()) == 0 {
            return;
        }
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() || compio::time::timeout(left, ended).await.is_err() {
            return;
        }
    }
}

/// Runs the fetchers of this broker on core 0: after every metadata change (and a change of
/// `num.replica.fetchers`) it works out which partitions each fetcher copies, starts fetchers
/// for new (leader, fetcher) pairs and stops those left with nothing.
pub async fn run_fetchers(admin: Rc<Shard>) {
    let mut fetchers: HashMap<FetcherKey, Rc<Fetcher>> = HashMap::new();
    loop {
        let changed = admin.shared.metadata_changed.listen();
        if admin.shared.stopping.load(Ordering::Relaxed) {
            for fetcher in fetchers.values() {
                fetcher.stopped.set(true);
                fetcher.changed.notify(usize::MAX);
            }
            return;
        }
        let image = admin.shared.metadata.image();
        let count = admin.shared.dynamic.current().num_replica_fetchers;
        let wanted = assignments(&image, admin.shared.config.node_id, count);
        fetchers.retain(|key, fetcher| {
            let keep = wanted.contains_key(key);
            if !keep {
                fetcher.stopped.set(true);
                fetcher.changed.notify(usize::MAX);
            }
            keep
        });
        for (key, partitions) in wanted {
            let fetcher = fetchers.entry(key).or_insert_with(|| {
                let fetcher = Rc::new(Fetcher {
                    partitions: RefCell::default(),
                    stopped: Cell::new(false),
                    changed: Event::new(),
                });
                compio::runtime::spawn(fetch_loop(admin.clone(), key.0, fetcher.clone())).detach();
                fetcher
            });
            let mut current = fetcher.partitions.borrow_mut();
            current.retain(|p, _| partitions.contains(p));
            for partition in partitions {
                current.entry(partition).or_default();
            }
            fetcher.changed.notify(usize::MAX);
        }
        changed.await;
    }
}

/// For each (leader, fetcher): the partitions this broker follows there.
fn assignments(
    image: &MetadataImage,
    node: i32,
    fetchers: u32,
) -> HashMap<FetcherKey, Vec<(String, i32)>> {
    let mut out: HashMap<FetcherKey, Vec<(String, i32)>> = HashMap::new();
    for topic in image.topics.values() {
        for (index, partition) in (0..).zip(&topic.partitions) {
            let leader = partition.leader;
            // A copy this broker could not open has nothing to append to.
            let here = partition.replicas.contains(&node) && !partition.offline.contains(&node);
            if leader < 0 || leader == node || !here {
                continue;
            }
            let key = (leader, fetcher_for(&topic.name, index, fetchers));
            out.entry(key)
                .or_default()
                .push((topic.name.clone(), index));
        }
    }
    out
}

/// Copies from `leader` until the fetcher is stopped.
async fn fetch_loop(admin: Rc<Shard>, leader: i32, fetcher: Rc<Fetcher>) {
    RUNNING.with(|r| r.count.set(r.count.get() + 1));
    copy_from(&admin, leader, &fetcher).await;
    RUNNING.with(|r| {
        r.count.set(r.count.get() - 1);
        r.ended.notify(usize::MAX);
    });
}

async fn copy_from(admin: &Rc<Shard>, leader: i32, fetcher: &Fetcher) {
    let mut client: Option<Client> = None;
    while !fetcher.stopped.get() {
        let config = admin.shared.dynamic.current();
        let backoff = Duration::from_millis(config.replica_fetch_backoff_ms);
        if admin.shared.session_lost() {
            // Out of its session this broker's view of who leads may be stale; it waits
            // for a heartbeat to get through and the metadata to catch up.
            wait_or_change(fetcher, backoff).await;
            continue;
        }
        let image = admin.shared.metadata.image();
        let Some(address) = leader_address(&image, leader) else {
            wait_or_change(fetcher, backoff).await;
            continue;
        };
        if client.is_none() {
            let buffer = admin.shared.config.replica_socket_receive_buffer_bytes;
            match Client::connect_with_receive_buffer(address, buffer).await {
                Ok(mut connected) => {
                    connected
                        .set_client_id(format!("sluice-replica-{}", admin.shared.config.node_id));
                    client = Some(connected);
                }
                Err(error) => {
                    tracing::debug!(leader, %error, "cannot reach the leader");
                    wait_or_change(fetcher, backoff).await;
                    continue;
                }
            }
        }
        let request = match request(admin, &image, fetcher).await {
            Some(request) => request,
            None => {
                fetcher.changed.listen().await;
                continue;
            }
        };
        let Some(connection) = client.as_mut() else {
            continue;
        };
        let answer = connection
            .send_request(FOLLOWER_FETCH_VERSION, &request)
            .await;
        match answer {
            Ok(response) => {
                if !apply(admin, fetcher, response).await {
                    wait_or_change(fetcher, backoff).await;
                }
            }
            Err(error) => {
                tracing::debug!(leader, %error, "fetch from the leader failed");
                client = None;
                wait_or_change(fetcher, backoff).await;
            }
        }
    }
}

async fn wait_or_change(fetcher: &Fetcher, pause: Duration) {
    let changed = fetcher.changed.listen();
    let _ = compio::time::timeout(pause, changed).await;
}

fn leader_address(image: &MetadataImage, leader: i32) -> Option<SocketAddr> {
    let broker = image.brokers.get(&leader).filter(|b| !b.fenced)?;
    use std::net::ToSocketAddrs;
    (broker.host.as_str(), broker.port)
        .to_socket_addrs()
        .ok()?
        .next()
}

/// The Fetch for every partition of the fetcher, each from its position (read from the
/// owner core the first time).
async fn request(
    admin: &Rc<Shard>,
    image: &MetadataImage,
    fetcher: &Fetcher,
) -> Option<FetchRequest> {
    let config = admin.shared.dynamic.current();
    let wanted: Vec<((String, i32), Position)> = fetcher
        .partitions
        .borrow()
        .iter()
        .map(|(k, v)| (k.clone(), *v))
        .collect();
    if wanted.is_empty() {
        return None;
    }
    let mut topics: BTreeMap<String, Vec<FetchPartition>> = BTreeMap::new();
    for ((topic, index), position) in wanted {
        let (offset, last_epoch) = match position.offset {
            Some(known) => known,
            None => {
                let Some(found) = position_of(admin, &topic, index).await else {
                    continue;
                };
                if let Some(p) = fetcher
                    .partitions
                    .borrow_mut()
                    .get_mut(&(topic.clone(), index))
                {
                    p.offset = Some(found);
                }
                found
            }
        };
        let current_epoch = image
            .topic(&topic)
            .and_then(|t| t.partition(index))
            .map_or(-1, |p| p.leader_epoch);
        let mut partition = FetchPartition::default();
        partition.partition = index;
        partition.current_leader_epoch = current_epoch;
        partition.fetch_offset = offset;
        partition.last_fetched_epoch = last_epoch;
        partition.log_start_offset = -1;
        partition.partition_max_bytes = config.replica_fetch_max_bytes;
        topics.entry(topic).or_default().push(partition);
    }
    let mut request = FetchRequest::default();
    request.replica_id = BrokerId(admin.shared.config.node_id);
    request.max_wait_ms = config.replica_fetch_wait_max_ms;
    request.min_bytes = config.replica_fetch_min_bytes;
    request.max_bytes = config.replica_fetch_response_max_bytes;
    request.session_id = 0;
    request.session_epoch = -1;
    request.topics = topics
        .into_iter()
        .map(|(name, partitions)| {
            let mut topic = FetchTopic::default();
            topic.topic = TopicName(StrBytes::from_string(name));
            topic.partitions = partitions;
            topic
        })
        .collect();
    Some(request)
}

/// A followed partition's log end and last epoch, from its owner core.
async fn position_of(admin: &Rc<Shard>, topic: &str, index: i32) -> Option<(i64, i32)> {
    let owner = admin.shared.owner(topic, index);
    let topic = topic.to_owned();
    admin
        .invoke(owner, move |core| async move {
            let partition = core.partition(&topic, index)?;
            Some(partition.fetch_position().await)
        })
        .await
        .flatten()
}

/// What one partition of a fetch response asks of its owner core.
enum Step {
    /// Append these bytes (may be empty) and take the leader's high watermark.
    Copy { records: Bytes, high_watermark: i64 },
    /// Truncate where the logs diverge.
    Truncate { epoch: i32, end_offset: i64 },
    /// Start over at the leader's log start.
    Restart { log_start_offset: i64 },
}

/// Applies a fetch response partition by partition; false when the leader failed some
/// partition in a way worth a pause (it is not the leader, or this broker lags its epochs).
async fn apply(
    admin: &Rc<Shard>,
    fetcher: &Fetcher,
    response: kafka_protocol::messages::FetchResponse,
) -> bool {
    let mut all_well = true;
    for topic in response.responses {
        let name = topic.topic.0.to_string();
        for data in topic.partitions {
            let index = data.partition_index;
            let step = match data.error_code {
                code::NONE if data.diverging_epoch.epoch >= 0 => Step::Truncate {
                    epoch: data.diverging_epoch.epoch,
                    end_offset: data.diverging_epoch.end_offset,
                },
                code::NONE => Step::Copy {
                    records: data.records.unwrap_or_default(),
                    high_watermark: data.high_watermark,
                },
                code::OFFSET_OUT_OF_RANGE if data.log_start_offset > 0 => Step::Restart {
                    log_start_offset: data.log_start_offset,
                },
                error => {
                    tracing::debug!(topic = %name, partition = index, error, "leader refused a follower fetch");
                    all_well = false;
                    continue;
                }
            };
            let position = run_step(admin, &name, index, step).await;
            if let Some(p) = fetcher
                .partitions
                .borrow_mut()
                .get_mut(&(name.clone(), index))
            {
                p.offset = position;
            }
        }
    }
    all_well
}

/// Carries out one step on the partition's owner core; returns the position to fetch from
/// next (`None`: read it again from the log).
async fn run_step(admin: &Rc<Shard>, topic: &str, index: i32, step: Step) -> Option<(i64, i32)> {
    let owner = admin.shared.owner(topic, index);
    let name = topic.to_owned();
    admin
        .invoke(owner, move |core| async move {
            let partition = core.partition(&name, index)?;
            let done = match step {
                Step::Copy {
                    records,
                    high_watermark,
                } => {
                    if !records.is_empty() {
                        let bytes = records.len() as u64;
                        if let Err(error) = partition.append_as_follower(records, now_ms()).await {
                            tracing::warn!(topic = %name, partition = index, %error, "cannot append what the leader sent");
                            return None;
                        }
                        CoreMetrics::add(&core.metrics.replication_bytes_in, bytes);
                    }
                    partition.follow_high_watermark(high_watermark).await;
                    Ok(())
                }
                Step::Truncate { epoch, end_offset } => {
                    tracing::info!(topic = %name, partition = index, epoch, end_offset, "truncating where this log diverges from the leader's");
                    partition.truncate_to_leader((epoch, end_offset)).await.map(|_| ())
                }
                Step::Restart { log_start_offset } => partition.restart_at(log_start_offset).await,
            };
            if let Err(error) = done {
                tracing::warn!(topic = %name, partition = index, %error, "follower step failed");
                return None;
            }
            Some(partition.fetch_position().await)
        })
        .await
        .flatten()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn partitions_go_to_fetchers_by_kafkas_hash() {
        // Java: Math.abs(31 * "orders".hashCode() + 2) % 3
        let hash = java_hash("orders");
        assert_eq!(hash, -1_008_770_331);
        let expected = (31i32.wrapping_mul(hash).wrapping_add(2)).unsigned_abs() % 3;
        assert_eq!(fetcher_for("orders", 2, 3), expected);
        assert_eq!(fetcher_for("orders", 2, 1), 0);
        let spread: std::collections::BTreeSet<u32> =
            (0..12).map(|p| fetcher_for("t", p, 4)).collect();
        assert_eq!(spread.len(), 4);
    }

    #[test]
    fn followers_fetch_their_copies_but_not_ones_they_could_not_open() {
        use crate::metadata::image::{PartitionImage, TopicImage};
        let mut open = PartitionImage::new(vec![1, 2]);
        let mut offline = PartitionImage::new(vec![1, 2]);
        offline.offline = vec![2];
        open.isr = vec![1, 2];
        let topic = TopicImage {
            name: "t".into(),
            id: [0; 16],
            partitions: vec![open, offline],
            configs: Default::default(),
        };
        let mut image = MetadataImage::default();
        image.topics.insert("t".into(), std::sync::Arc::new(topic));
        let assigned = assignments(&image, 2, 1);
        let copies: Vec<&(String, i32)> = assigned.values().flatten().collect();
        assert_eq!(copies, [&("t".to_owned(), 0)]);
        assert!(
            assignments(&image, 1, 1).is_empty(),
            "the leader fetches nothing"
        );
    }
}
