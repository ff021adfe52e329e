//! This broker in the cluster, and the one place metadata changes reach it.
//!
//! - Joining: core 0 registers with the active controller (and gets its broker epoch), then
//!   fetches the metadata log until it has what the controller had, then heartbeats until it
//!   is unfenced; only then does the broker serve clients. Afterwards it keeps heartbeating
//!   and keeps fetching the log by index.
//! - Applying: fetched records replay through a `MetadataDelta`; every core brings the
//!   partitions it owns in line with the change (opens new ones, takes its role as leader or
//!   follower, applies new configs) before the new image is published, and drops the
//!   partitions of removed topics after it. Only core 0 applies, one change after another.
//! - Changing: topic creation, growth, config changes and deletion are commands to the active
//!   controller, which decides the records; the caller then waits until this broker has
//!   applied them. Handlers and the group coordinator both come here.

use std::collections::BTreeMap;
use std::rc::Rc;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use sluice_storage::StorageError;

use crate::clock::now_ms;
use crate::controller::rpc::{Fetched, Request, Response};
use crate::controller::{Command, Done, Refusal};
use crate::dynamic::{self, BrokerResource};
use crate::error_codes as code;
use crate::groups::state::OFFSETS_TOPIC;
use crate::layout;
use crate::metadata::delta::changes_between;
use crate::metadata::{
    MetadataDelta, MetadataImage, MetadataRecord, PartitionImage, TopicChange, TopicImage,
};
use crate::partition::{sole_holder, Partition};
use crate::shard::{Offline, Shard, Shared};

/// How long a change waits for the active controller and for this broker to apply it.
pub const CHANGE_TIMEOUT: Duration = Duration::from_secs(30);
/// How long one metadata fetch waits at the controller for something new.
const FETCH_WAIT_MS: u64 = 1000;
/// Pause before retrying a controller that could not be reached.
const RETRY_DELAY: Duration = Duration::from_millis(100);

/// The topic, created with `num.partitions` if it is unknown and auto-creation is on.
pub async fn ensure_topic(core: &Rc<Shard>, name: &str) -> Result<Arc<TopicImage>, i16> {
    if let Some(topic) = core.shared.metadata.topic(name) {
        return Ok(topic);
    }
    if !layout::valid_topic_name(name) {
        return Err(code::INVALID_TOPIC_EXCEPTION);
    }
    if !core.shared.config.auto_create_topics {
        return Err(code::UNKNOWN_TOPIC_OR_PARTITION);
    }
    let partitions = core.shared.config.num_partitions;
    match create_topic(core, name, partitions, -1, BTreeMap::new()).await {
        Ok(topic) => Ok(topic),
        // Another request created it meanwhile.
        Err((code::TOPIC_ALREADY_EXISTS, _)) => core
            .shared
            .metadata
            .topic(name)
            .ok_or(code::UNKNOWN_TOPIC_OR_PARTITION),
        Err((error_code, _)) => Err(error_code),
    }
}

/// A refused change: the Kafka error code and a message for the client (may be empty).
pub type Refused = (i16, String);

/// Creates a topic; the controller places its replicas (`replication_factor` -1: the default).
pub async fn create_topic(
    core: &Rc<Shard>,
    name: &str,
    partitions: i32,
    replication_factor: i16,
    configs: BTreeMap<String, String>,
) -> Result<Arc<TopicImage>, Refused> {
    let command = Command::CreateTopic {
        name: name.to_owned(),
        partitions,
        replication_factor,
        configs,
        validate_only: false,
    };
    change(core, command).await?;
    let topic = core
        .shared
        .metadata
        .topic(name)
        .ok_or((code::UNKNOWN_TOPIC_OR_PARTITION, String::new()))?;
    match unopened(core, &topic) {
        None => Ok(topic),
        Some(why) => {
            // All or nothing: what did open is closed and its files removed with the topic.
            let removal = Command::DeleteTopic {
                name: name.to_owned(),
            };
            let removed = match change(core, removal).await {
                Ok(_) => "the topic was removed",
                Err(_) => "removing the topic failed too; delete it",
            };
            Err((code::KAFKA_STORAGE_ERROR, format!("{why}; {removed}")))
        }
    }
}

/// Why a just-created topic is not whole: its partitions this broker or another could not
/// open, counted, with this broker's first error.
fn unopened(core: &Shard, topic: &TopicImage) -> Option<String> {
    let elsewhere = topic
        .partitions
        .iter()
        .filter(|p| !p.offline.is_empty())
        .count();
    let offline = core
        .shared
        .offline
        .lock()
        .unwrap_or_else(|e| e.into_inner());
    let mut here = offline.range((topic.name.clone(), i32::MIN)..=(topic.name.clone(), i32::MAX));
    let first = here.next().map(|(_, entry)| entry.error.clone());
    let count = (first.is_some() as usize + here.count()).max(elsewhere);
    if count == 0 {
        return None;
    }
    let why = first.map_or_else(
        || "another broker could not open them".to_owned(),
        |error| format!("broker {}: {error}", core.shared.config.node_id),
    );
    Some(format!(
        "{count} of {} partitions could not be opened ({why})",
        topic.partitions.len()
    ))
}

/// Sends `command` to the active controller and waits until this broker has applied what
/// it decided. Any core may call it.
pub async fn change(core: &Rc<Shard>, command: Command) -> Result<Done, Refused> {
    let deadline = Instant::now() + CHANGE_TIMEOUT;
    let done = command_until(core, command, deadline).await?;
    wait_applied(core, done.index, deadline).await?;
    Ok(done)
}

/// Sends `command` to whichever voter is the active controller, following leader hints and
/// retrying unreachable ones until `deadline`.
pub async fn command_until(
    core: &Shard,
    command: Command,
    deadline: Instant,
) -> Result<Done, Refused> {
    let shared = &core.shared;
    let mut last = String::from("no controller answered");
    while Instant::now() < deadline {
        let voters = shared.controllers.len();
        let target = shared.active_controller.load(Ordering::Relaxed) % voters.max(1);
        let Some(address) = shared.controllers.get(target).copied() else {
            return Err((
                code::NOT_CONTROLLER,
                "no controller voters configured".into(),
            ));
        };
        let request = Request::Command(command.clone());
        let left = deadline.saturating_duration_since(Instant::now());
        match crate::controller::rpc::call(address, &request, left).await {
            Ok(Response::Command(Ok(done))) => return Ok(done),
            Ok(Response::Command(Err(Refusal::Error { code, message }))) => {
                return Err((code, message))
            }
            Ok(Response::Command(Err(Refusal::NotController { leader }))) => {
                let hinted = leader.and_then(|(_, address)| {
                    shared
                        .controllers
                        .iter()
                        .position(|a| a.to_string() == address)
                });
                let next = hinted.unwrap_or(target + 1);
                shared.active_controller.store(next, Ordering::Relaxed);
                last = "no active controller yet".into();
                if hinted.is_none() {
                    compio::time::sleep(RETRY_DELAY).await;
                }
            }
            Ok(_) => last = "unexpected controller answer".into(),
            Err(error) => {
                last = error.to_string();
                shared
                    .active_controller
                    .store(target + 1, Ordering::Relaxed);
                compio::time::sleep(RETRY_DELAY).await;
            }
        }
    }
    Err((code::REQUEST_TIMED_OUT, last))
}

/// Waits until this broker has applied the metadata log up to `index`.
pub async fn wait_applied(core: &Shard, index: u64, deadline: Instant) -> Result<(), Refused> {
    let shared = &core.shared;
    loop {
        let listener = shared.metadata_changed.listen();
        if shared.metadata_applied.load(Ordering::Acquire) >= index {
            return Ok(());
        }
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Err((
                code::REQUEST_TIMED_OUT,
                "metadata not applied in time".into(),
            ));
        }
        let _ = compio::time::timeout(left, listener).await;
    }
}

/// Joins the cluster from core 0: registers, catches up with the metadata log, and waits to
/// be unfenced; then keeps heartbeating and fetching in the background.
pub async fn join(admin: &Rc<Shard>) {
    debug_assert_eq!(admin.id, 0);
    let config = &admin.shared.config;
    let register = Command::RegisterBroker {
        id: config.node_id,
        host: config.advertised_host.clone(),
        port: config.advertised_port,
    };
    let registered = loop {
        match command_until(
            admin,
            register.clone(),
            Instant::now() + Duration::from_secs(5),
        )
        .await
        {
            Ok(done) => break done,
            Err((code, message)) => {
                tracing::warn!(code, %message, "waiting for the controller quorum to register");
            }
        }
    };
    let epoch = registered.value;
    admin.shared.broker_epoch.store(epoch, Ordering::Relaxed);
    tracing::info!(epoch, "registered with the controller quorum");
    while admin.shared.metadata_applied.load(Ordering::Acquire) < registered.index {
        fetch_once(admin).await;
    }
    // Copies that would not open leave their leaderships before this broker may lead.
    if let Some(index) = report_offline(admin).await {
        while admin.shared.metadata_applied.load(Ordering::Acquire) < index {
            fetch_once(admin).await;
        }
    }
    // Unfenced, and with the metadata that unfenced it (leaderships it got back) applied.
    loop {
        let sent = crate::clock::monotonic_ms();
        match heartbeat(admin, epoch).await {
            Some(done) if done.value == 0 => {
                while admin.shared.metadata_applied.load(Ordering::Acquire) < done.index {
                    fetch_once(admin).await;
                }
                admin.shared.session_ok_ms.store(sent, Ordering::Release);
                break;
            }
            _ => fetch_once(admin).await,
        }
    }
    let follower = admin.clone();
    compio::runtime::spawn(async move {
        while !follower.shared.stopping.load(Ordering::Relaxed) {
            fetch_once(&follower).await;
        }
    })
    .detach();
    // Before the broker counts as started: the dynamic configs of the metadata in force.
    import_dynamic_configs_and_follow(admin).await;
    let heart = admin.clone();
    compio::runtime::spawn(async move {
        let interval = Duration::from_millis(heart.shared.config.broker_heartbeat_interval_ms);
        loop {
            compio::time::sleep(interval).await;
            let shared = &heart.shared;
            // A stopping broker keeps its session until its logs are closed (this task ends
            // with core 0's reactor), unless the controlled shutdown already fenced it: a
            // broker with no one to hand its leaderships to would otherwise be fenced while
            // it flushes thousands of logs, and start again with leaderless partitions.
            if shared.stopping.load(Ordering::Relaxed) && fenced_here(shared) {
                return;
            }
            let sent = crate::clock::monotonic_ms();
            let epoch = shared.broker_epoch.load(Ordering::Relaxed);
            // The session counts as kept from when the heartbeat left, once the metadata it
            // was answered at is applied here: a broker whose leaderships moved while it was
            // away learns so before it may act as a leader again.
            if let Some(done) = heartbeat(&heart, epoch).await {
                if done.value == 0
                    && wait_applied(&heart, done.index, Instant::now() + interval)
                        .await
                        .is_ok()
                {
                    shared.session_ok_ms.fetch_max(sent, Ordering::AcqRel);
                }
            }
        }
    })
    .detach();
    let leaving = admin.clone();
    compio::runtime::spawn(async move { controlled_shutdown(&leaving).await }).detach();
}

/// Whether the metadata applied here shows this broker fenced.
fn fenced_here(shared: &Shared) -> bool {
    let image = shared.metadata.image();
    image
        .brokers
        .get(&shared.config.node_id)
        .is_none_or(|broker| broker.fenced)
}

/// Once this broker has joined: sends the values of an older data directory's file that the
/// metadata does not hold yet to the controller, renames the file, and from then on follows
/// the metadata. A failure leaves the file for the next start and follows the metadata
/// anyway, so that no change made since is ignored.
async fn import_dynamic_configs_and_follow(admin: &Rc<Shard>) {
    let path = dynamic::file_path(&admin.shared.config.log_dir);
    if path.exists() {
        let live = admin.shared.dynamic.current();
        let from_file = dynamic::layers_of(&live);
        let image = admin.shared.metadata.image();
        let node = admin.shared.config.node_id;
        let resources = [
            (BrokerResource::ClusterDefault, from_file.cluster_default),
            (BrokerResource::Broker(node), from_file.broker),
        ];
        let mut imported = true;
        for (resource, values) in resources {
            let mut configs = image.broker_configs(&resource.name());
            let before = configs.len();
            for (key, value) in values {
                configs.entry(key).or_insert(value);
            }
            if configs.len() == before {
                continue;
            }
            let command = Command::SetBrokerConfigs {
                resource: resource.name(),
                configs,
            };
            if let Err((code, message)) = change(admin, command).await {
                tracing::warn!(code, %message, "cannot import dynamic broker configs; kept for the next start");
                imported = false;
            }
        }
        if imported {
            let mut done = path.clone().into_os_string();
            done.push(".imported");
            match std::fs::rename(&path, &done) {
                Ok(()) => {
                    tracing::info!(file = %path.display(), "dynamic broker configs now live in the metadata log")
                }
                Err(error) => {
                    tracing::warn!(file = %path.display(), %error, "cannot rename the imported dynamic broker configs")
                }
            }
        }
    }
    dynamic::start_following(admin);
    dynamic::follow_image(admin).await;
}
/// Waits until the broker is asked to stop, then asks the active controller to move this
/// broker's leaderships away and take it out of every ISR (Kafka's controlled shutdown), and
/// waits until the metadata that did so is applied here, so clients are told where the
/// partitions went while this broker still answers. Skipped when no other broker is live
/// (there is nowhere to move to); bounded by `broker.session.timeout.ms`, after which the
/// controller would fence the broker anyway. Fires `left` when done.
async fn controlled_shutdown(admin: &Rc<Shard>) {
    let shared = &admin.shared;
    loop {
        let listener = shared.leave.listen();
        if shared.leaving.load(Ordering::Acquire) {
            break;
        }
        listener.await;
    }
    let node = shared.config.node_id;
    let others = shared
        .metadata
        .image()
        .live_brokers()
        .any(|broker| broker.id != node);
    if others {
        let command = Command::ControlledShutdown {
            id: node,
            epoch: shared.broker_epoch.load(Ordering::Relaxed),
        };
        let deadline =
            Instant::now() + Duration::from_millis(shared.config.broker_session_timeout_ms);
        match command_until(admin, command, deadline).await {
            Ok(done) => match wait_applied(admin, done.index, deadline).await {
                Ok(()) => tracing::info!("controlled shutdown: leaderships moved"),
                Err((_, message)) => tracing::warn!(%message, "controlled shutdown incomplete"),
            },
            Err((code, message)) => {
                tracing::warn!(code, %message, "controlled shutdown refused; stopping anyway")
            }
        }
    }
    shared.has_left.store(true, Ordering::Release);
    shared.left.notify(usize::MAX);
}

/// One heartbeat; its answer says whether the broker is fenced after it (`value` 1) and the
/// metadata index that holds its state (`None` when it went unanswered).
async fn heartbeat(admin: &Shard, epoch: i64) -> Option<Done> {
    let shared = &admin.shared;
    let command = Command::Heartbeat {
        id: shared.config.node_id,
        epoch,
        metadata_index: shared.metadata_applied.load(Ordering::Acquire),
    };
    let deadline =
        Instant::now() + Duration::from_millis(admin.shared.config.broker_heartbeat_interval_ms);
    match command_until(admin, command, deadline).await {
        Ok(done) => Some(done),
        Err((code, message)) => {
            tracing::warn!(code, %message, "heartbeat not answered");
            None
        }
    }
}

/// Fetches the metadata log after what this broker has applied, from the voter it last found
/// active (or another), and applies what came back.
async fn fetch_once(admin: &Rc<Shard>) {
    let shared = &admin.shared;
    let after = shared.metadata_applied.load(Ordering::Acquire);
    let voters = shared.controllers.len().max(1);
    let target = shared.active_controller.load(Ordering::Relaxed) % voters;
    let Some(address) = shared.controllers.get(target).copied() else {
        return;
    };
    let request = Request::Fetch {
        after,
        wait_ms: FETCH_WAIT_MS,
    };
    let timeout = Duration::from_millis(FETCH_WAIT_MS) + Duration::from_secs(5);
    match crate::controller::rpc::call(address, &request, timeout).await {
        Ok(Response::Fetch(fetched)) => apply_fetched(admin, fetched).await,
        Ok(_) => {}
        Err(error) => {
            tracing::debug!(%address, %error, "metadata fetch failed; trying another controller");
            shared
                .active_controller
                .store(target + 1, Ordering::Relaxed);
            compio::time::sleep(RETRY_DELAY).await;
        }
    }
}

/// Applies a fetch: batches in order, or a whole image.
async fn apply_fetched(admin: &Rc<Shard>, fetched: Fetched) {
    let shared = &admin.shared;
    let current = shared.metadata.image();
    let leader = fetched.leader.map_or(-1, |id| id as i32);
    let (image, changes, applied) = if let Some(records) = fetched.image {
        let mut delta = MetadataDelta::new(Arc::new(MetadataImage::default()));
        for record in records {
            if let Err(error) = delta.replay(record) {
                tracing::error!(%error, "a metadata image does not replay");
                return;
            }
        }
        let image = delta.apply().0;
        let changes = changes_between(&current, &image);
        (image, changes, fetched.applied)
    } else {
        let mut applied = shared.metadata_applied.load(Ordering::Acquire);
        let mut delta = MetadataDelta::new(current.clone());
        for batch in fetched.batches {
            delta.set_offset(batch.index as i64);
            for record in batch.records {
                if let Err(error) = delta.replay(record) {
                    tracing::error!(index = batch.index, %error, "a metadata record does not replay");
                }
            }
            applied = batch.index;
        }
        if current.controller_id != leader {
            let _ = delta.replay(MetadataRecord::Controller(leader));
        }
        let (image, changes) = delta.apply();
        (image, changes, applied.max(fetched.applied))
    };
    let mut image = image;
    if image.controller_id != leader {
        let mut next = (*image).clone();
        next.controller_id = leader;
        image = Arc::new(next);
    }
    if let Err(error) = apply(admin, image, changes).await {
        tracing::error!(%error, "cannot bring partitions in line with the metadata");
    }
    let unreported = || shared.offline().values().any(|entry| !entry.reported);
    // One report at a time; a later apply sends what is still unreported.
    if shared.metadata_ready.load(Ordering::Acquire)
        && unreported()
        && !shared.offline_reporting.swap(true, Ordering::AcqRel)
    {
        let reporter = admin.clone();
        compio::runtime::spawn(async move {
            report_offline(&reporter).await;
            reporter
                .shared
                .offline_reporting
                .store(false, Ordering::Release);
        })
        .detach();
    }
    dynamic::follow_image(admin).await;
    shared.metadata_applied.store(applied, Ordering::Release);
    shared.metadata_changed.notify(usize::MAX);
}

/// Has every core follow `changes` and publishes `image`: partitions are opened before the
/// image that names them is published, and removed only after the image without them is, so
/// a request never finds a published partition missing on its core. Runs on core 0.
pub async fn apply(
    admin: &Rc<Shard>,
    image: Arc<MetadataImage>,
    changes: Vec<TopicChange>,
) -> Result<(), StorageError> {
    let changes = Arc::new(changes);
    let following = changes.clone();
    let answers = admin
        .broadcast(
            move |core| async move { follow(&core, &following).await.map_err(|e| e.to_string()) },
        )
        .await;
    let mut failed = None;
    for (target, answer) in answers.into_iter().enumerate() {
        if let Some(Err(error)) = answer {
            tracing::error!(core = target, %error, "cannot open partition logs");
            failed = Some(error);
        }
    }
    admin.shared.metadata.publish(image);
    let deleted: Vec<&TopicChange> = changes.iter().filter(|c| c.after.is_none()).collect();
    if !deleted.is_empty() {
        for change in &deleted {
            admin.shared.wakeups.remove_topic(&change.name);
        }
        let dropping = changes.clone();
        let answers = admin
            .broadcast(move |core| async move {
                drop_deleted(&core, &dropping)
                    .await
                    .map_err(|e| e.to_string())
            })
            .await;
        for (target, answer) in answers.into_iter().enumerate() {
            if let Some(Err(error)) = answer {
                tracing::error!(core = target, %error, "deleting partition files failed");
            }
        }
    }
    match failed {
        Some(error) => Err(StorageError::Io(std::io::Error::other(error))),
        None => Ok(()),
    }
}

/// Applies records on this broker alone, without a controller: for tests of what sits on
/// top of the partitions.
#[cfg(test)]
pub async fn apply_locally(admin: &Rc<Shard>, records: Vec<MetadataRecord>) {
    let mut delta = MetadataDelta::new(admin.shared.metadata.image());
    for record in records {
        delta.replay(record).expect("records fit");
    }
    let (image, changes) = delta.apply();
    apply(admin, image, changes).await.expect("applied");
}

/// Brings this core's partitions in line with `changes`, except for topics deleted outright
/// (see `drop_deleted`): the partitions of a topic re-created under a new id are dropped,
/// partitions added and owned here are opened, every owned partition takes the role its image
/// gives this broker, and changed configs are applied.
pub async fn follow(core: &Shard, changes: &[TopicChange]) -> Result<(), StorageError> {
    use futures_util::stream::{self, StreamExt};
    for change in changes {
        let Some(after) = &change.after else {
            continue;
        };
        if change.removed() {
            drop_partitions(core, &change.name).await?;
        }
        let config = core.shared.log_config(&after.configs);
        let node = core.shared.config.node_id;
        let mine = (0..).zip(&after.partitions).filter(|(index, image)| {
            core.shared.owner(&after.name, *index) == core.id && image.replicas.contains(&node)
        });
        // Partitions are independent, and opening one is a chain of small file operations
        // and syncs: many side by side keep io_uring busy where one after another would wait
        // on each sync in turn.
        let in_flight = core
            .shared
            .descriptors
            .partition_steps_in_flight(core.shared.cores, PARTITION_STEPS_IN_FLIGHT);
        stream::iter(mine)
            .for_each_concurrent(in_flight, |(index, image)| {
                follow_partition(core, change, (index, image), &config)
            })
            .await;
    }
    Ok(())
}

/// How many partitions one core opens or brings in line with the metadata at once, at most
/// (fewer under a low open-files limit).
const PARTITION_STEPS_IN_FLIGHT: usize = 256;

/// One partition of `change` that this core owns and this broker holds a replica of: opened
/// if new here, given the role its image says, and reconfigured if the topic's configs
/// changed.
async fn follow_partition(
    core: &Shard,
    change: &TopicChange,
    (index, image): (i32, &PartitionImage),
    config: &sluice_storage::LogConfig,
) {
    let Some(after) = &change.after else {
        return;
    };
    let node = core.shared.config.node_id;
    let opened_now = !core.partitions.contains(&after.name, index);
    if opened_now {
        if core.shared.is_offline(&after.name, index) {
            return;
        }
        let Some(opened) = open_or_take_offline(core, &after.name, index, config).await else {
            return;
        };
        core.partitions.insert((after.name.clone(), index), opened);
    }
    let Some(partition) = core.partitions.get(&after.name, index) else {
        return;
    };
    let before = change.before.as_ref().and_then(|b| b.partition(index));
    // Which replicas are offline is not this replica's role: taking the same role again
    // would drop an ISR change the leader has in flight.
    let role_changed = before.is_none_or(|before| !same_role(before, image));
    if opened_now || change.added_partitions().contains(&index) || role_changed {
        take_role(core, &partition, image).await;
        if after.name == OFFSETS_TOPIC && image.leader != node {
            // A coordinator that lost the partition forgets its groups; one that gained it
            // loads them on its first group request.
            let count = i32::try_from(after.partitions.len()).unwrap_or(i32::MAX);
            core.groups.release(index, count);
        }
    }
    if change.configs_changed() {
        partition.reconfigure(config.clone()).await;
    }
}

/// Opens this broker's copy of a partition. One that cannot be opened (unreadable files)
/// does not stop the broker: it is logged, its directory is removed if
/// this attempt created it, and it is kept offline here (`Shared::offline`) for the
/// controller to hear of, as Kafka treats a failed log directory.
async fn open_or_take_offline(
    core: &Shard,
    topic: &str,
    index: i32,
    config: &sluice_storage::LogConfig,
) -> Option<Partition> {
    let shared = &core.shared;
    let dir = layout::partition_dir(&shared.config.log_dir, topic, index);
    // Only a directory known to be absent counts as made by this attempt.
    let existed = !matches!(
        compio::fs::metadata(&dir).await,
        Err(error) if error.kind() == std::io::ErrorKind::NotFound
    );
    let mut attempts = 0;
    let opened = loop {
        let appended = shared.wakeups.event(topic, index);
        let node = shared.config.node_id;
        // The last run's clean close covers the logs opened during start-up; one opened
        // later is trusted only with its own marker.
        let clean_dir = shared.clean_start.load(Ordering::Relaxed)
            && !shared.metadata_ready.load(Ordering::SeqCst);
        let opened = Partition::open(
            dir.clone(),
            config.clone(),
            node,
            appended,
            now_ms(),
            clean_dir,
        );
        match opened.await {
            // Opens side by side briefly hold a few descriptors each (log, index and
            // checkpoint files); running out for a moment is waited out, not final.
            Err(error) if out_of_descriptors(&error) && attempts < OPEN_RETRIES => {
                attempts += 1;
                compio::time::sleep(OPEN_RETRY_DELAY).await;
            }
            other => break other,
        }
    };
    match opened {
        Ok(partition) => Some(partition),
        Err(error) => {
            tracing::error!(topic, partition = index, dir = %dir.display(), %error,
                "cannot open partition; it is offline on this broker");
            if !existed {
                let made = dir.clone();
                let removed =
                    compio::runtime::spawn_blocking(move || std::fs::remove_dir_all(made)).await;
                if let Ok(Err(error)) = removed {
                    tracing::warn!(dir = %dir.display(), %error, "cannot remove what the failed open made");
                }
            }
            mark_offline(shared, topic, index, error.to_string());
            None
        }
    }
}

/// How often, and how far apart, an open that ran out of descriptors is tried again.
const OPEN_RETRIES: u32 = 20;
const OPEN_RETRY_DELAY: Duration = Duration::from_millis(50);

/// EMFILE or ENFILE.
fn out_of_descriptors(error: &StorageError) -> bool {
    let code = match error {
        StorageError::Io(io) => io.raw_os_error(),
        _ => None,
    };
    matches!(code, Some(libc::EMFILE | libc::ENFILE))
}

/// Keeps a partition offline on this broker, for the controller to hear of.
fn mark_offline(shared: &crate::shard::Shared, topic: &str, index: i32, error: String) {
    let entry = Offline {
        error,
        reported: false,
    };
    shared.offline().insert((topic.to_owned(), index), entry);
    shared.unclean_logs.fetch_add(1, Ordering::Relaxed);
}

/// Tells the controller of partitions this broker could not open and has not reported yet,
/// so their leaderships move and they leave the ISR. Returns the metadata index that holds
/// the change (`None`: nothing to report, or it failed and is retried at the next apply).
/// Runs on core 0 once registered.
pub async fn report_offline(admin: &Shard) -> Option<u64> {
    let shared = &admin.shared;
    let epoch = shared.broker_epoch.load(Ordering::Relaxed);
    let partitions: Vec<(String, i32)> = {
        let offline = shared.offline();
        offline
            .iter()
            .filter(|(_, entry)| !entry.reported)
            .map(|(key, _)| key.clone())
            .collect()
    };
    if partitions.is_empty() || epoch < 0 {
        return None;
    }
    let command = Command::ReplicasOffline {
        id: shared.config.node_id,
        epoch,
        partitions: partitions.clone(),
    };
    match command_until(admin, command, Instant::now() + CHANGE_TIMEOUT).await {
        Ok(done) => {
            let mut offline = shared.offline();
            for key in partitions {
                if let Some(entry) = offline.get_mut(&key) {
                    entry.reported = true;
                }
            }
            Some(done.index)
        }
        Err((code, message)) => {
            tracing::warn!(code, %message, "cannot report offline partitions; retrying later");
            None
        }
    }
}

/// Whether two images of a partition give its replicas the same roles: everything but the
/// offline replicas alike.
fn same_role(a: &PartitionImage, b: &PartitionImage) -> bool {
    (
        &a.replicas,
        &a.isr,
        a.leader,
        a.leader_epoch,
        a.partition_epoch,
    ) == (
        &b.replicas,
        &b.isr,
        b.leader,
        b.leader_epoch,
        b.partition_epoch,
    )
}

/// Leads or follows as the partition's image says.
async fn take_role(core: &Shard, partition: &Partition, image: &PartitionImage) {
    let node = core.shared.config.node_id;
    let epochs = (image.leader_epoch, image.partition_epoch);
    if image.leader == node {
        let (replicas, isr) = (image.replicas.clone(), image.isr.clone());
        partition
            .become_leader(epochs, replicas, isr, now_ms())
            .await;
    } else {
        let leader = (image.leader >= 0).then_some(image.leader);
        partition.become_follower(epochs, image.replicas.clone(), leader);
    }
}

/// Removes this core's partitions of every topic `changes` deleted, and their files.
async fn drop_deleted(core: &Shard, changes: &[TopicChange]) -> Result<(), StorageError> {
    for change in changes.iter().filter(|c| c.after.is_none()) {
        drop_partitions(core, &change.name).await?;
    }
    Ok(())
}

/// Removes this core's partitions of `topic` and deletes their files.
async fn drop_partitions(core: &Shard, topic: &str) -> Result<(), StorageError> {
    // Only this core's entries: another core may be opening the topic's new partitions.
    core.shared
        .offline()
        .retain(|(name, index), _| name != topic || core.shared.owner(name, *index) != core.id);
    // Only the indexes: a held `Rc` would keep `sole_holder` waiting.
    let indexes: Vec<i32> = core
        .partitions
        .of_topic(topic)
        .iter()
        .map(|(i, _)| *i)
        .collect();
    for index in indexes {
        let Some(partition) = core.partitions.remove(topic, index) else {
            continue;
        };
        // Wake fetches waiting on it so they see the topic is gone.
        partition.appended().notify(usize::MAX);
        let held = Rc::downgrade(&partition);
        match sole_holder(partition).await {
            Some(partition) => partition.delete().await?,
            None => {
                // The request still holding it must not write by the old paths, which a
                // topic created under the same name may take.
                if let Some(partition) = held.upgrade() {
                    partition.detach().await;
                }
                set_aside(core, topic, index).await?
            }
        }
    }
    Ok(())
}

/// Renames a partition directory that cannot be deleted yet out of the way, so a topic
/// created under the same name starts empty and start-up neither revives the old one nor
/// keeps it (`layout::remove_set_aside`).
async fn set_aside(core: &Shard, topic: &str, index: i32) -> Result<(), StorageError> {
    let dir = layout::partition_dir(&core.shared.config.log_dir, topic, index);
    let aside = layout::set_aside_dir(&dir);
    tracing::warn!(dir = %dir.display(), aside = %aside.display(),
        "partition still in use when its topic was deleted; removing it at the next start");
    compio::fs::rename(&dir, &aside).await?;
    Ok(())
}

/// The quorum as a voter describes it, asked of the voter last found active, then the others.
pub async fn describe_quorum(core: &Shard) -> Option<crate::controller::rpc::QuorumView> {
    let shared = &core.shared;
    let first = shared.active_controller.load(Ordering::Relaxed);
    for i in 0..shared.controllers.len() {
        let address = shared.controllers[(first + i) % shared.controllers.len()];
        let answer =
            crate::controller::rpc::call(address, &Request::Describe, Duration::from_secs(5));
        if let Ok(Response::Describe(view)) = answer.await {
            if view.leader.is_some() || i + 1 == shared.controllers.len() {
                return Some(view);
            }
        }
    }
    None
}

/// Producer ids the controller hands a broker at a time.
const PRODUCER_ID_BLOCK: i64 = 1000;

/// A producer id unique in the cluster: from this broker's block, or a new block from the
/// controller when that is used up.
pub async fn producer_id(core: &Rc<Shard>) -> Result<i64, i16> {
    loop {
        if let Some(id) = core.shared.take_producer_id() {
            return Ok(id);
        }
        let command = Command::AllocateProducerIds {
            count: PRODUCER_ID_BLOCK,
        };
        let deadline = Instant::now() + CHANGE_TIMEOUT;
        let done = command_until(core, command, deadline)
            .await
            .map_err(|(code, _)| code)?;
        core.shared
            .set_producer_ids(done.value, done.value + PRODUCER_ID_BLOCK);
    }
}
