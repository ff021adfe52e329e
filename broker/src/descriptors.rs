//! File descriptors: the process's limit, how many are open, and the shares kept back.
//!
//! A partition holds `PER_PARTITION` descriptors per segment (its log file; the index files
//! are open only while written), a connection about `PER_CONNECTION` (its socket and the
//! pipe pair its fetches splice through). New partitions may use what is open below the limit less a reserve
//! (`partition_reserve`), which the controller checks before it places them; a new
//! connection is closed on accept once fewer than `roll_reserve` are left, so that a client
//! is never what makes a partition's segment roll fail.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use serde::{Deserialize, Serialize};

/// Descriptors a partition holds per segment.
pub const PER_PARTITION: u64 = 1;
/// Descriptors a client connection holds.
pub const PER_CONNECTION: u64 = 3;

/// What a broker tells the controller in its heartbeats.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Report {
    /// Descriptors new partitions may still use.
    pub left: u64,
    /// Partitions this broker had open when it counted.
    pub partitions: u64,
}

/// This process's descriptor count, sampled, and its limit. Until the first sample there is
/// no limit.
#[derive(Debug)]
pub struct Descriptors {
    limit: AtomicU64,
    open: AtomicU64,
}

impl Default for Descriptors {
    fn default() -> Self {
        Self {
            limit: AtomicU64::new(u64::MAX),
            open: AtomicU64::new(0),
        }
    }
}

impl Descriptors {
    /// Counts the open descriptors and reads the soft limit again (it is raised at start).
    pub fn sample(&self) {
        use rustix::process::{getrlimit, Resource};
        let limit = getrlimit(Resource::Nofile).current.unwrap_or(u64::MAX);
        self.limit.store(limit, Ordering::Relaxed);
        if let Some(open) = count_open() {
            self.open.store(open, Ordering::Relaxed);
        }
    }

    pub fn limit(&self) -> u64 {
        self.limit.load(Ordering::Relaxed)
    }

    /// Open descriptors at the last sample, plus the connections accepted since.
    pub fn open(&self) -> u64 {
        self.open.load(Ordering::Relaxed)
    }

    /// Kept from new partitions: room for connections and segment rolls.
    pub fn partition_reserve(&self) -> u64 {
        reserve(self.limit(), 10, 256)
    }

    /// Kept from new connections: room for segment rolls and partition work.
    pub fn roll_reserve(&self) -> u64 {
        reserve(self.limit(), 50, 64)
    }

    /// When to count again: each second once half the limit is open, else every ten. The
    /// count reads `/proc/self/fd`, whose cost grows with what is open; between counts,
    /// what partitions and connections take and give back keeps the figure current.
    pub fn next_sample_in(&self) -> Duration {
        if self.open() >= self.limit() / 2 {
            Duration::from_secs(1)
        } else {
            Duration::from_secs(10)
        }
    }

    /// Descriptors new partitions may still use.
    pub fn left_for_partitions(&self) -> u64 {
        self.limit()
            .saturating_sub(self.open())
            .saturating_sub(self.partition_reserve())
    }

    /// Counts a partition about to be opened (its first segment), unless that would eat into
    /// the partition reserve, or for one this broker already holds (`existing`), the roll
    /// reserve: a broker that ran with it comes back with it.
    pub fn take_for_partition(&self, existing: bool) -> bool {
        let reserve = if existing {
            self.roll_reserve()
        } else {
            self.partition_reserve()
        };
        self.take_keeping(PER_PARTITION, reserve)
    }

    /// Counts `count` descriptors unless fewer than `reserve` would then be left.
    fn take_keeping(&self, count: u64, reserve: u64) -> bool {
        let limit = self.limit();
        self.open
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |open| {
                (open + count + reserve <= limit).then_some(open + count)
            })
            .is_ok()
    }

    /// Counts descriptors taken since the last sample (a partition just opened). The sample
    /// is a snapshot, so counting what is taken and given back between two keeps it current.
    pub fn taken(&self, count: u64) {
        self.open.fetch_add(count, Ordering::Relaxed);
    }

    /// Counts descriptors given back since the last sample.
    pub fn released(&self, count: u64) {
        let _ = self
            .open
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |open| {
                Some(open.saturating_sub(count))
            });
    }

    /// Why a partition was not opened, for the log and the client.
    pub fn exhausted(&self) -> String {
        format!(
            "no open-file descriptors left for it ({} open of a limit of {}, {} kept for \
             connections and segment rolls); raise the limit (ulimit -n)",
            self.open(),
            self.limit(),
            self.partition_reserve()
        )
    }

    /// Whether a connection may be kept; counts it if so.
    pub fn admit_connection(&self) -> bool {
        self.take_keeping(PER_CONNECTION, self.roll_reserve())
    }
}

/// `limit / divisor`, at least `floor`, but never more than half the limit.
fn reserve(limit: u64, divisor: u64, floor: u64) -> u64 {
    (limit / divisor).max(floor).min(limit / 2)
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
    fn reserves_scale_with_the_limit_and_leave_half() {
        assert_eq!(reserve(20_000, 10, 256), 2_000);
        assert_eq!(reserve(1_024, 10, 256), 256);
        assert_eq!(reserve(300, 10, 256), 150);
    }

    #[test]
    fn a_sample_counts_files_held_open() {
        let descriptors = Descriptors::default();
        assert!(descriptors.take_for_partition(false) && descriptors.admit_connection());
        let held: Vec<std::fs::File> = (0..50)
            .map(|_| std::fs::File::open("/proc/self/status").expect("open"))
            .collect();
        descriptors.sample();
        assert!(descriptors.limit() >= 50);
        assert!(descriptors.open() >= 50, "{}", descriptors.open());
        drop(held);
    }
}
