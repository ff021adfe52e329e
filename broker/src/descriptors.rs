//! File descriptors: the process's limit, how many are open, and who may use what.
//!
//! Segment log files are held open only while in use: past a budget, storage closes the
//! least recently used (`sluice_storage::files`). The budget is half the limit
//! (`log_files_max`), so a partition costs a descriptor while it is busy, not because it
//! exists, and a broker hosts many more partitions than its limit. Index and checkpoint
//! files are open only while read or written. A connection holds about `PER_CONNECTION`
//! (its socket and the pipe pair its fetches splice through); a new one is closed on accept
//! unless the log files' whole budget and `reserve` would still be left, so clients never
//! take what log files, index writes and segment rolls need.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use sluice_storage::{Disk, RealDisk};

/// Descriptors a client connection holds.
pub const PER_CONNECTION: u64 = 3;

/// This process's descriptor count, sampled, and its limit. Until the first sample there is
/// no limit.
#[derive(Debug)]
pub struct Descriptors {
    limit: AtomicU64,
    /// Open descriptors other than segment log files: at the last sample, plus the
    /// connections accepted since, less those closed.
    others: AtomicU64,
}

impl Default for Descriptors {
    fn default() -> Self {
        Self {
            limit: AtomicU64::new(u64::MAX),
            others: AtomicU64::new(0),
        }
    }
}

/// Log files segments may hold open under a limit of `limit` descriptors.
pub fn log_files_max(limit: u64) -> u64 {
    (limit / 2).max(1)
}

impl Descriptors {
    /// Counts the open descriptors, reads the soft limit again (it is raised at start) and
    /// gives storage its budget of log files.
    pub fn sample(&self) {
        use rustix::process::{getrlimit, Resource};
        let limit = getrlimit(Resource::Nofile).current.unwrap_or(u64::MAX);
        self.limit.store(limit, Ordering::Relaxed);
        let budget = usize::try_from(log_files_max(limit)).unwrap_or(usize::MAX);
        RealDisk.open_files().set_max(budget);
        if let Some(open) = count_open() {
            let others = open.saturating_sub(self.log_files_open());
            self.others.store(others, Ordering::Relaxed);
        }
    }

    pub fn limit(&self) -> u64 {
        self.limit.load(Ordering::Relaxed)
    }

    /// Open descriptors: log files now, the rest as last counted.
    pub fn open(&self) -> u64 {
        self.others
            .load(Ordering::Relaxed)
            .saturating_add(self.log_files_open())
    }

    /// Log files segments may hold open.
    pub fn log_files_max(&self) -> u64 {
        log_files_max(self.limit())
    }

    /// Segment log files open now.
    pub fn log_files_open(&self) -> u64 {
        RealDisk.open_files().open() as u64
    }

    /// Kept from new connections beyond the log files' budget: room for index and
    /// checkpoint writes, segment rolls and partition opens.
    pub fn reserve(&self) -> u64 {
        let limit = self.limit();
        (limit / 50).max(64).min(limit / 4)
    }

    /// How many partitions one of `cores` cores may open or close at once, up to `most`:
    /// each briefly holds a few descriptors (its log, index and checkpoint files) beyond
    /// the log files' budget, and all cores together stay within a sixteenth of the limit
    /// for every descriptor they may hold.
    pub fn partition_steps_in_flight(&self, cores: usize, most: usize) -> usize {
        const HELD_PER_STEP: u64 = 4;
        let cores = cores.max(1) as u64;
        let fit = self.limit() / 16 / HELD_PER_STEP / cores;
        usize::try_from(fit).unwrap_or(usize::MAX).clamp(4, most)
    }

    /// When to count again: each second once half the limit is open, else every ten. The
    /// count reads `/proc/self/fd`, whose cost grows with what is open; between counts,
    /// what connections take and give back keeps the figure current.
    pub fn next_sample_in(&self) -> Duration {
        if self.open() >= self.limit() / 2 {
            Duration::from_secs(1)
        } else {
            Duration::from_secs(10)
        }
    }

    /// Whether a connection may be kept; counts it if so.
    pub fn admit_connection(&self) -> bool {
        let kept = self.log_files_max().saturating_add(self.reserve());
        let limit = self.limit();
        self.others
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |others| {
                let after = others.saturating_add(PER_CONNECTION);
                (after.saturating_add(kept) <= limit).then_some(after)
            })
            .is_ok()
    }

    /// Counts descriptors given back since the last sample (a connection closed).
    pub fn released(&self, count: u64) {
        let _ = self
            .others
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |others| {
                Some(others.saturating_sub(count))
            });
    }
}

/// Entries of `/proc/self/fd`, less the one reading it.
fn count_open() -> Option<u64> {
    let entries = std::fs::read_dir("/proc/self/fd").ok()?;
    Some((entries.count() as u64).saturating_sub(1))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn log_files_get_half_the_limit_and_connections_what_is_left_beyond_the_reserve() {
        let descriptors = Descriptors::default();
        assert!(
            descriptors.admit_connection(),
            "no limit before the first sample"
        );
        descriptors.limit.store(1_000, Ordering::Relaxed);
        descriptors.others.store(0, Ordering::Relaxed);
        assert_eq!(descriptors.log_files_max(), 500);
        assert_eq!(descriptors.reserve(), 64);
        let admitted = (0..1_000)
            .take_while(|_| descriptors.admit_connection())
            .count() as u64;
        assert_eq!(admitted, (1_000 - 500 - 64) / PER_CONNECTION);
        descriptors.released(PER_CONNECTION);
        assert!(descriptors.admit_connection());
        assert_eq!(descriptors.partition_steps_in_flight(2, 512), 7);
        descriptors.limit.store(100, Ordering::Relaxed);
        assert_eq!(descriptors.partition_steps_in_flight(2, 512), 4);
        descriptors.limit.store(1_048_576, Ordering::Relaxed);
        assert_eq!(descriptors.partition_steps_in_flight(2, 512), 512);
        descriptors.limit.store(20_000, Ordering::Relaxed);
        assert_eq!(descriptors.partition_steps_in_flight(2, 512), 156);
    }

    #[test]
    fn a_sample_counts_files_held_open() {
        let descriptors = Descriptors::default();
        let held: Vec<std::fs::File> = (0..50)
            .map(|_| std::fs::File::open("/proc/self/status").expect("open"))
            .collect();
        descriptors.sample();
        assert!(descriptors.limit() >= 50);
        assert!(descriptors.open() >= 50, "{}", descriptors.open());
        drop(held);
    }
}
