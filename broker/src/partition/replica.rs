//! A partition's replication state as an I/O-free state machine: the leader epoch, the log's
//! bounds, the high watermark, the replica set and the ISR, and what the leader knows of each
//! follower. Log changes and follower fetches go in; the new high watermark comes out. The
//! rules live here and nowhere else:
//!
//! - the high watermark is the smallest log end offset over the ISR (the leader's own included),
//!   and on a leader it never moves backwards;
//! - it never leaves `[log start, log end]`;
//! - batches appended as leader carry the current leader epoch.
//!
//! It holds no clock and does no I/O, so unit and property tests drive it directly.

use std::collections::BTreeMap;

/// A broker id, as Kafka numbers brokers.
pub type BrokerId = i32;

/// What a leader knows about one follower, from the fetches it sends (Kafka's `Replica`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Follower {
    /// The follower's log end offset: the offset of its last fetch.
    pub log_end_offset: i64,
    /// When the follower last fetched up to the leader's log end, in milliseconds.
    pub last_caught_up_ms: i64,
}

/// This broker's part in the partition.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Role {
    /// This broker leads: it stamps appends with the leader epoch and keeps the ISR.
    Leader {
        isr: Vec<BrokerId>,
        followers: BTreeMap<BrokerId, Follower>,
    },
    /// Another broker leads; this one copies its log.
    Follower { leader: Option<BrokerId> },
}

/// One partition's replication state on this broker.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReplicaState {
    local: BrokerId,
    leader_epoch: i32,
    replicas: Vec<BrokerId>,
    role: Role,
    log_start_offset: i64,
    log_end_offset: i64,
    high_watermark: i64,
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
            replicas: vec![local],
            role: Role::Follower { leader: None },
            log_start_offset,
            log_end_offset,
            high_watermark: high_watermark.clamp(log_start_offset, log_end_offset),
        }
    }

    /// This broker leads from now on, in `leader_epoch`, with `isr` in sync. Followers start
    /// with an unknown log end (Kafka's -1), so they hold the high watermark where it is until
    /// they fetch.
    pub fn become_leader(
        &mut self,
        leader_epoch: i32,
        replicas: Vec<BrokerId>,
        isr: Vec<BrokerId>,
    ) {
        debug_assert!(isr.contains(&self.local), "a leader is in its own ISR");
        debug_assert!(
            leader_epoch >= self.leader_epoch,
            "leader epochs never go back"
        );
        let followers = replicas
            .iter()
            .filter(|&&id| id != self.local)
            .map(|&id| {
                let unknown = Follower {
                    log_end_offset: -1,
                    last_caught_up_ms: 0,
                };
                (id, unknown)
            })
            .collect();
        self.leader_epoch = leader_epoch;
        self.replicas = replicas;
        self.role = Role::Leader { isr, followers };
        self.advance_high_watermark();
    }

    /// Another broker leads from now on, in `leader_epoch`.
    pub fn become_follower(
        &mut self,
        leader_epoch: i32,
        replicas: Vec<BrokerId>,
        leader: Option<BrokerId>,
    ) {
        debug_assert!(
            leader_epoch >= self.leader_epoch,
            "leader epochs never go back"
        );
        self.leader_epoch = leader_epoch;
        self.replicas = replicas;
        self.role = Role::Follower { leader };
    }

    pub fn is_leader(&self) -> bool {
        matches!(self.role, Role::Leader { .. })
    }

    pub fn role(&self) -> &Role {
        &self.role
    }

    pub fn leader_epoch(&self) -> i32 {
        self.leader_epoch
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

    pub fn log_start_offset(&self) -> i64 {
        self.log_start_offset
    }

    pub fn log_end_offset(&self) -> i64 {
        self.log_end_offset
    }

    pub fn high_watermark(&self) -> i64 {
        self.high_watermark
    }

    /// The log grew to `log_end_offset` (an append). Returns the new high watermark if it moved.
    pub fn on_log_end(&mut self, log_end_offset: i64) -> Option<i64> {
        assert!(log_end_offset >= self.log_start_offset);
        self.log_end_offset = log_end_offset;
        self.high_watermark = self.high_watermark.min(log_end_offset);
        let before = self.high_watermark;
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

    /// The high watermark a leader may show: the smallest log end over the ISR. A follower
    /// whose log end is unknown holds it where it is. It never moves backwards on a leader.
    fn advance_high_watermark(&mut self) {
        let Role::Leader { isr, followers } = &self.role else {
            return;
        };
        let mut lowest = self.log_end_offset;
        for id in isr.iter().filter(|&&id| id != self.local) {
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
        state.become_leader(0, vec![1, 2, 3], isr.to_vec());
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
        state.become_leader(3, vec![1, 2], vec![1, 2]);
        assert_eq!(state.high_watermark(), 4);
        assert_eq!(state.on_log_end(20), None);
        assert_eq!(state.leader_epoch(), 3);
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
        state.become_follower(4, vec![1, 2], Some(1));
        state.on_leader_high_watermark(9);
        assert_eq!(state.high_watermark(), 6);
        state.on_leader_high_watermark(3);
        assert_eq!(state.high_watermark(), 3);
        assert!(!state.is_leader());
        assert!(state.isr().is_empty());
    }
}
