//! A partition's replication state as an I/O-free state machine: the leader epoch, the log's
//! bounds, the high watermark, the replica set and the ISR, and what the leader knows of each
//! follower. Log changes, follower fetches and the time go in; the new high watermark and the
//! ISR changes to ask the controller for come out. The rules live here and nowhere else:
//!
//! - the high watermark is the smallest log end offset over the ISR (the leader's own
//!   included; an ISR change on its way to the controller counts as if made, the larger set
//!   winning), and on a leader it never moves backwards;
//! - it never leaves `[log start, log end]`;
//! - a follower is caught up when it fetches from the leader's log end, or from what was the
//!   leader's end at its previous fetch (Kafka's `Replica.updateFetchState`);
//! - a follower not caught up for `replica.lag.time.max.ms` leaves the ISR; one whose log end
//!   reaches both the high watermark and the start of the current leader epoch rejoins it;
//! - one ISR change is in flight at a time, and it takes effect once the controller commits it.
//!
//! It holds no clock and does no I/O, so unit and property tests drive it directly.

use std::collections::BTreeMap;

/// A broker id, as Kafka numbers brokers.
pub type BrokerId = i32;

/// What a leader knows about one follower, from the fetches it sends (Kafka's `Replica`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Follower {
    /// The follower's log end offset: the offset of its last fetch (-1 before it fetched).
    pub log_end_offset: i64,
    /// When the follower last was caught up, in milliseconds.
    pub last_caught_up_ms: i64,
    /// The leader's log end at the follower's previous fetch, and when that fetch came.
    last_fetch_leader_end: i64,
    last_fetch_ms: i64,
}

impl Follower {
    /// A follower not heard from yet, counted as caught up `now_ms` so it has a full
    /// `replica.lag.time.max.ms` to fetch before it leaves the ISR.
    fn new(now_ms: i64) -> Self {
        Self {
            log_end_offset: -1,
            last_caught_up_ms: now_ms,
            last_fetch_leader_end: -1,
            last_fetch_ms: now_ms,
        }
    }
}

/// This broker's part in the partition.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Role {
    /// This broker leads: it stamps appends with the leader epoch and keeps the ISR.
    Leader {
        isr: Vec<BrokerId>,
        /// An ISR change sent to the controller and not committed yet.
        pending_isr: Option<Vec<BrokerId>>,
        followers: BTreeMap<BrokerId, Follower>,
        /// The log end when this leader epoch began: a follower must reach it to rejoin.
        epoch_start_offset: i64,
    },
    /// Another broker leads; this one copies its log.
    Follower { leader: Option<BrokerId> },
}

/// One partition's replication state on this broker.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReplicaState {
    local: BrokerId,
    leader_epoch: i32,
    partition_epoch: i32,
    replicas: Vec<BrokerId>,
    role: Role,
    log_start_offset: i64,
    log_end_offset: i64,
    high_watermark: i64,
}

/// An ISR change the leader asks the controller for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IsrChange {
    pub leader_epoch: i32,
    pub partition_epoch: i32,
    pub isr: Vec<BrokerId>,
}

impl ReplicaState {
    /// The state of a log just opened with bounds `[log_start_offset, log_end_offset)`, before
    /// it has a role. `high_watermark` is the last one recorded; it is clamped to the log.
    pub fn new(
        local: BrokerId,
        log_start_offset: i64,
        log_end_offset: i64,
        high_watermark: i64,
    ) -> Self {
        assert!(0 <= log_start_offset && log_start_offset <= log_end_offset);
        Self {
            local,
            leader_epoch: -1,
            partition_epoch: -1,
            replicas: vec![local],
            role: Role::Follower { leader: None },
            log_start_offset,
            log_end_offset,
            high_watermark: high_watermark.clamp(log_start_offset, log_end_offset),
        }
    }

    /// This broker leads in `leader_epoch` at `partition_epoch`, with `isr` in sync. In a new
    /// epoch followers start with an unknown log end (Kafka's -1), so they hold the high
    /// watermark where it is until they fetch; in the same epoch (an ISR change committed)
    /// what the leader knows of them stays.
    pub fn become_leader(
        &mut self,
        epochs: (i32, i32),
        replicas: Vec<BrokerId>,
        isr: Vec<BrokerId>,
        now_ms: i64,
    ) {
        let (leader_epoch, partition_epoch) = epochs;
        debug_assert!(isr.contains(&self.local), "a leader is in its own ISR");
        debug_assert!(
            leader_epoch >= self.leader_epoch,
            "leader epochs never go back"
        );
        let (mut known, epoch_start_offset) =
            match std::mem::replace(&mut self.role, Role::Follower { leader: None }) {
                Role::Leader {
                    followers,
                    epoch_start_offset,
                    ..
                } if leader_epoch == self.leader_epoch => (followers, epoch_start_offset),
                _ => (BTreeMap::new(), self.log_end_offset),
            };
        let followers = replicas
            .iter()
            .filter(|&&id| id != self.local)
            .map(|&id| {
                (
                    id,
                    known.remove(&id).unwrap_or_else(|| Follower::new(now_ms)),
                )
            })
            .collect();
        self.leader_epoch = leader_epoch;
        self.partition_epoch = partition_epoch;
        self.replicas = replicas;
        self.role = Role::Leader {
            isr,
            pending_isr: None,
            followers,
            epoch_start_offset,
        };
        self.advance_high_watermark();
    }

    /// Another broker leads from now on, in `leader_epoch`.
    pub fn become_follower(
        &mut self,
        epochs: (i32, i32),
        replicas: Vec<BrokerId>,
        leader: Option<BrokerId>,
    ) {
        let (leader_epoch, partition_epoch) = epochs;
        debug_assert!(
            leader_epoch >= self.leader_epoch,
            "leader epochs never go back"
        );
        self.leader_epoch = leader_epoch;
        self.partition_epoch = partition_epoch;
        self.replicas = replicas;
        self.role = Role::Follower { leader };
    }

    pub fn is_leader(&self) -> bool {
        matches!(self.role, Role::Leader { .. })
    }

    /// Where this leader's epoch starts in the log (its log end when it took the lead).
    pub fn epoch_start_offset(&self) -> Option<i64> {
        match &self.role {
            Role::Leader {
                epoch_start_offset, ..
            } => Some(*epoch_start_offset),
            _ => None,
        }
    }

    pub fn role(&self) -> &Role {
        &self.role
    }

    pub fn leader_epoch(&self) -> i32 {
        self.leader_epoch
    }

    pub fn partition_epoch(&self) -> i32 {
        self.partition_epoch
    }

    pub fn replicas(&self) -> &[BrokerId] {
        &self.replicas
    }

    /// The in-sync replicas as this broker knows them: the ISR when it leads, else empty.
    pub fn isr(&self) -> &[BrokerId] {
        match &self.role {
            Role::Leader { isr, .. } => isr,
            Role::Follower { .. } => &[],
        }
    }

    /// What the leader knows of each follower (empty on a follower).
    pub fn followers(&self) -> Vec<(BrokerId, Follower)> {
        match &self.role {
            Role::Leader { followers, .. } => followers.iter().map(|(id, f)| (*id, *f)).collect(),
            Role::Follower { .. } => Vec::new(),
        }
    }

    pub fn log_start_offset(&self) -> i64 {
        self.log_start_offset
    }

    pub fn log_end_offset(&self) -> i64 {
        self.log_end_offset
    }

    pub fn high_watermark(&self) -> i64 {
        self.high_watermark
    }

    /// The log end moved to `log_end_offset` (an append, or a truncation). Returns the new
    /// high watermark if it moved.
    pub fn on_log_end(&mut self, log_end_offset: i64) -> Option<i64> {
        assert!(log_end_offset >= self.log_start_offset);
        let before = self.high_watermark;
        self.log_end_offset = log_end_offset;
        self.high_watermark = self.high_watermark.min(log_end_offset);
        if self.is_leader() {
            self.advance_high_watermark();
        }
        (self.high_watermark != before).then_some(self.high_watermark)
    }

    /// The log start moved to `log_start_offset` (DeleteRecords, retention).
    pub fn on_log_start(&mut self, log_start_offset: i64) {
        assert!(log_start_offset <= self.log_end_offset);
        self.log_start_offset = log_start_offset;
        self.high_watermark = self.high_watermark.max(log_start_offset);
    }

    /// A follower's view of the high watermark: the leader's, bounded by its own log end.
    pub fn on_leader_high_watermark(&mut self, leader_high_watermark: i64) {
        debug_assert!(!self.is_leader());
        self.high_watermark =
            leader_high_watermark.clamp(self.log_start_offset, self.log_end_offset);
    }

    /// A follower fetched from `fetch_offset` at `now_ms`. Returns the new high watermark if
    /// it moved, and an ISR expansion to ask for if the follower may rejoin.
    pub fn on_follower_fetch(
        &mut self,
        follower: BrokerId,
        fetch_offset: i64,
        now_ms: i64,
    ) -> (Option<i64>, Option<IsrChange>) {
        let leader_end = self.log_end_offset;
        let before = self.high_watermark;
        let Role::Leader { followers, .. } = &mut self.role else {
            return (None, None);
        };
        let Some(state) = followers.get_mut(&follower) else {
            return (None, None);
        };
        if fetch_offset >= leader_end {
            state.last_caught_up_ms = now_ms;
        } else if fetch_offset >= state.last_fetch_leader_end {
            state.last_caught_up_ms = state.last_caught_up_ms.max(state.last_fetch_ms);
        }
        state.log_end_offset = fetch_offset;
        state.last_fetch_leader_end = leader_end;
        state.last_fetch_ms = now_ms;
        self.advance_high_watermark();
        let moved = (self.high_watermark != before).then_some(self.high_watermark);
        (moved, self.expansion(follower))
    }

    /// The ISR with `follower` added, if it may rejoin now.
    fn expansion(&self, follower: BrokerId) -> Option<IsrChange> {
        let Role::Leader {
            isr,
            pending_isr,
            followers,
            epoch_start_offset,
        } = &self.role
        else {
            return None;
        };
        if isr.contains(&follower) || pending_isr.is_some() {
            return None;
        }
        let end = followers.get(&follower)?.log_end_offset;
        if end < self.high_watermark || end < *epoch_start_offset {
            return None;
        }
        let mut next = isr.clone();
        next.push(follower);
        Some(self.change(next))
    }

    /// The ISR without the followers that have not caught up for `lag_max_ms`, if there are
    /// any and no other change is in flight.
    pub fn shrink(&self, now_ms: i64, lag_max_ms: i64) -> Option<IsrChange> {
        let Role::Leader {
            isr,
            pending_isr: None,
            followers,
            ..
        } = &self.role
        else {
            return None;
        };
        let lagging = |id: &BrokerId| {
            followers
                .get(id)
                .is_some_and(|f| now_ms - f.last_caught_up_ms > lag_max_ms)
        };
        if !isr.iter().any(lagging) {
            return None;
        }
        let next = isr.iter().copied().filter(|id| !lagging(id)).collect();
        Some(self.change(next))
    }

    fn change(&self, isr: Vec<BrokerId>) -> IsrChange {
        IsrChange {
            leader_epoch: self.leader_epoch,
            partition_epoch: self.partition_epoch,
            isr,
        }
    }

    /// An ISR change went to the controller; until it commits (or fails), no other is sent,
    /// and the larger of the two sets decides the high watermark.
    pub fn on_isr_change_sent(&mut self, isr: Vec<BrokerId>) {
        if let Role::Leader { pending_isr, .. } = &mut self.role {
            *pending_isr = Some(isr);
        }
    }

    /// The controller refused or did not answer: another change may be sent.
    pub fn on_isr_change_failed(&mut self) {
        if let Role::Leader { pending_isr, .. } = &mut self.role {
            *pending_isr = None;
        }
    }

    /// The high watermark a leader may show: the smallest log end over the ISR and any
    /// pending change to it. A follower whose log end is unknown holds it where it is. It
    /// never moves backwards on a leader.
    fn advance_high_watermark(&mut self) {
        let Role::Leader {
            isr,
            pending_isr,
            followers,
            ..
        } = &self.role
        else {
            return;
        };
        let members = isr.iter().chain(pending_isr.iter().flatten());
        let mut lowest = self.log_end_offset;
        for id in members.filter(|&&id| id != self.local) {
            let end = followers.get(id).map_or(-1, |f| f.log_end_offset);
            if end < 0 {
                return;
            }
            lowest = lowest.min(end);
        }
        let next = lowest.clamp(self.log_start_offset, self.log_end_offset);
        self.high_watermark = self.high_watermark.max(next);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn leader(isr: &[BrokerId], end: i64) -> ReplicaState {
        let mut state = ReplicaState::new(1, 0, end, 0);
        state.become_leader((0, 0), vec![1, 2, 3], isr.to_vec(), 0);
        state
    }

    #[test]
    fn a_leader_alone_in_its_isr_commits_what_it_appends() {
        let mut state = leader(&[1], 10);
        assert_eq!(state.high_watermark(), 10);
        assert_eq!(state.on_log_end(15), Some(15));
        assert_eq!(state.on_log_end(15), None);
        assert_eq!(state.high_watermark(), 15);
    }

    #[test]
    fn a_follower_of_unknown_progress_holds_the_high_watermark() {
        let mut state = ReplicaState::new(1, 0, 10, 4);
        state.become_leader((3, 0), vec![1, 2], vec![1, 2], 0);
        assert_eq!(state.high_watermark(), 4);
        assert_eq!(state.on_log_end(20), None);
        assert_eq!(state.leader_epoch(), 3);
    }

    #[test]
    fn the_high_watermark_is_the_smallest_log_end_over_the_isr() {
        let mut state = leader(&[1, 2, 3], 10);
        assert_eq!(state.on_follower_fetch(2, 7, 1), (None, None));
        assert_eq!(state.on_follower_fetch(3, 4, 1).0, Some(4));
        assert_eq!(state.on_follower_fetch(3, 9, 2).0, Some(7));
        assert_eq!(state.on_follower_fetch(2, 10, 3).0, Some(9));
        // A follower that fetches from further back never moves it backwards.
        assert_eq!(state.on_follower_fetch(2, 5, 4).0, None);
        assert_eq!(state.high_watermark(), 9);
    }

    #[test]
    fn a_lagging_follower_leaves_and_a_caught_up_one_rejoins() {
        let mut state = leader(&[1, 2, 3], 10);
        state.on_follower_fetch(2, 10, 100);
        state.on_follower_fetch(3, 10, 100);
        assert_eq!(state.shrink(30_000, 30_000), None);
        state.on_follower_fetch(2, 10, 30_000);
        let shrink = state.shrink(30_101, 30_000).expect("3 lags");
        assert_eq!(shrink.isr, vec![1, 2]);
        state.on_isr_change_sent(shrink.isr.clone());
        assert_eq!(state.shrink(40_000, 30_000), None, "one change in flight");
        state.become_leader((0, 1), vec![1, 2, 3], shrink.isr, 30_200);
        assert_eq!(state.isr(), &[1, 2]);
        // Behind the high watermark it cannot rejoin; at it, it can.
        assert_eq!(state.on_follower_fetch(3, 5, 30_300).1, None);
        let (_, expand) = state.on_follower_fetch(3, 10, 30_400);
        assert_eq!(expand.map(|c| c.isr), Some(vec![1, 2, 3]));
    }

    #[test]
    fn a_follower_caught_up_at_its_previous_fetch_stays_caught_up() {
        let mut state = leader(&[1, 2], 10);
        state.on_follower_fetch(2, 10, 1_000);
        assert_eq!(state.on_log_end(20), None);
        // It fetches from 10: behind the end (20), but at the end its previous fetch saw.
        state.on_follower_fetch(2, 10, 2_000);
        let follower = state.followers()[0].1;
        assert_eq!(follower.last_caught_up_ms, 1_000);
        // The end grows again; a fetch from the end its previous fetch saw (20) counts as
        // caught up at that previous fetch.
        state.on_log_end(25);
        state.on_follower_fetch(2, 20, 3_000);
        assert_eq!(state.followers()[0].1.last_caught_up_ms, 2_000);
    }

    #[test]
    fn a_new_epoch_forgets_followers_and_must_be_reached_to_rejoin() {
        let mut state = leader(&[1], 10);
        state.become_leader((1, 1), vec![1, 2], vec![1], 0);
        assert_eq!(
            state.on_follower_fetch(2, 9, 1).1,
            None,
            "before the epoch's start"
        );
        assert!(state.on_follower_fetch(2, 10, 2).1.is_some());
    }

    #[test]
    fn the_high_watermark_stays_inside_the_log() {
        let mut state = ReplicaState::new(1, 5, 8, 100);
        assert_eq!(state.high_watermark(), 8);
        state.on_log_start(7);
        assert_eq!(state.high_watermark(), 8);
        let mut state = ReplicaState::new(1, 5, 8, 0);
        assert_eq!(state.high_watermark(), 5);
        state.on_log_start(7);
        assert_eq!(state.high_watermark(), 7);
    }

    #[test]
    fn a_follower_takes_the_leaders_high_watermark_up_to_its_own_end() {
        let mut state = ReplicaState::new(2, 0, 6, 0);
        state.become_follower((4, 0), vec![1, 2], Some(1));
        state.on_leader_high_watermark(9);
        assert_eq!(state.high_watermark(), 6);
        state.on_leader_high_watermark(3);
        assert_eq!(state.high_watermark(), 3);
        assert!(!state.is_leader());
        assert!(state.isr().is_empty());
    }

    mod properties {
        use super::*;
        use proptest::prelude::*;

        const LAG_MAX_MS: i64 = 1_000;

        /// One step of a leader's life with followers 2 and 3.
        #[derive(Debug, Clone)]
        enum Step {
            /// The leader appends this many records.
            Append(i64),
            /// A follower fetches, having copied up to this many more records first.
            Fetch { follower: BrokerId, copied: i64 },
            /// The clock moves; the leader checks for laggards and asks to shrink.
            Tick(i64),
            /// The controller commits the change in flight.
            Commit,
            /// The controller refuses it.
            Refuse,
        }

        fn step() -> impl Strategy<Value = Step> {
            prop_oneof![
                (1..20i64).prop_map(Step::Append),
                (2..=3, 0..30i64).prop_map(|(follower, copied)| Step::Fetch { follower, copied }),
                (0..800i64).prop_map(Step::Tick),
                Just(Step::Commit),
                Just(Step::Refuse),
            ]
        }

        /// The model: what each follower really holds, and the change in flight.
        struct World {
            state: ReplicaState,
            copied: BTreeMap<BrokerId, i64>,
            pending: Option<IsrChange>,
            now: i64,
        }

        impl World {
            fn new(end: i64) -> Self {
                let mut state = ReplicaState::new(1, 0, end, 0);
                state.become_leader((5, 0), vec![1, 2, 3], vec![1, 2, 3], 0);
                Self {
                    state,
                    copied: BTreeMap::from([(2, 0), (3, 0)]),
                    pending: None,
                    now: 0,
                }
            }

            fn propose(&mut self, change: IsrChange) {
                assert!(self.pending.is_none(), "one change in flight at a time");
                assert!(change.isr.contains(&1), "a leader never drops itself");
                self.state.on_isr_change_sent(change.isr.clone());
                self.pending = Some(change);
            }

            fn apply(&mut self, step: &Step) {
                match *step {
                    Step::Append(records) => {
                        self.state.on_log_end(self.state.log_end_offset() + records);
                    }
                    Step::Fetch { follower, copied } => {
                        let end = self.state.log_end_offset();
                        let have = self.copied.get_mut(&follower).expect("a follower");
                        *have = (*have + copied).min(end);
                        let have = *have;
                        let hw = self.state.high_watermark();
                        let (_, expand) = self.state.on_follower_fetch(follower, have, self.now);
                        if let Some(change) = expand {
                            assert!(have >= hw, "a follower behind the high watermark rejoins");
                            assert!(!self.state.isr().contains(&follower));
                            self.propose(change);
                        }
                    }
                    Step::Tick(ms) => {
                        self.now += ms;
                        if let Some(change) = self.state.shrink(self.now, LAG_MAX_MS) {
                            for dropped in self
                                .state
                                .isr()
                                .iter()
                                .filter(|id| !change.isr.contains(id))
                            {
                                let (_, follower) = self
                                    .state
                                    .followers()
                                    .into_iter()
                                    .find(|(id, _)| id == dropped)
                                    .expect("only followers leave");
                                assert!(self.now - follower.last_caught_up_ms > LAG_MAX_MS);
                            }
                            self.propose(change);
                        }
                    }
                    Step::Commit => {
                        if let Some(change) = self.pending.take() {
                            let epochs = (change.leader_epoch, change.partition_epoch + 1);
                            self.state
                                .become_leader(epochs, vec![1, 2, 3], change.isr, self.now);
                        }
                    }
                    Step::Refuse => {
                        if self.pending.take().is_some() {
                            self.state.on_isr_change_failed();
                        }
                    }
                }
            }
        }

        proptest! {
            /// Whatever happens, the high watermark stays inside the log, never moves back on
            /// the leader, and never passes what a member of the ISR (or of a change in
            /// flight) holds: a record below it is on every in-sync replica.
            #[test]
            fn the_high_watermark_is_held_by_every_in_sync_replica(
                start in 0..50i64,
                steps in proptest::collection::vec(step(), 1..200),
            ) {
                let mut world = World::new(start);
                for step in &steps {
                    let before = world.state.high_watermark();
                    world.apply(step);
                    let state = &world.state;
                    let hw = state.high_watermark();
                    prop_assert!(state.log_start_offset() <= hw && hw <= state.log_end_offset());
                    prop_assert!(hw >= before, "moved back from {} to {}", before, hw);
                    prop_assert!(state.isr().contains(&1));
                    if hw > before {
                        let pending = world.pending.iter().flat_map(|c| c.isr.iter());
                        for id in state.isr().iter().chain(pending).filter(|&&id| id != 1) {
                            prop_assert!(
                                world.copied[id] >= hw,
                                "{} holds {} under a high watermark of {}", id, world.copied[id], hw
                            );
                        }
                    }
                }
            }

            /// Followers that keep fetching to the end take the high watermark to the end and
            /// end up in the ISR, whatever happened before.
            #[test]
            fn followers_that_catch_up_commit_everything_and_rejoin(
                steps in proptest::collection::vec(step(), 0..100),
            ) {
                let mut world = World::new(10);
                for step in &steps {
                    world.apply(step);
                }
                // Settle what is in flight, then let both followers copy everything, twice
                // (the first fetch may only rejoin; the second is at the end).
                world.apply(&Step::Commit);
                for _ in 0..2 {
                    for follower in [2, 3] {
                        world.apply(&Step::Fetch { follower, copied: i64::MAX / 4 });
                        world.apply(&Step::Commit);
                    }
                }
                prop_assert_eq!(world.state.high_watermark(), world.state.log_end_offset());
                let mut isr = world.state.isr().to_vec();
                isr.sort_unstable();
                prop_assert_eq!(isr, vec![1, 2, 3]);
            }
        }
    }
}
