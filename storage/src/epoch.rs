//! The leader epoch cache: for each leader epoch, the first offset written in it (KIP-101).
//! Kept in memory and in `leader-epoch-checkpoint` (Kafka's text format).

/// Sorted by epoch and by start offset, both strictly increasing.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LeaderEpochCache {
    entries: Vec<(i32, i64)>,
}

impl LeaderEpochCache {
    pub fn entries(&self) -> &[(i32, i64)] {
        &self.entries
    }

    pub fn latest(&self) -> Option<(i32, i64)> {
        self.entries.last().copied()
    }

    /// Records that `epoch` starts at `start_offset`. Returns whether the cache changed.
    pub fn assign(&mut self, epoch: i32, start_offset: i64) -> bool {
        if epoch < 0 {
            return false;
        }
        if let Some((latest, _)) = self.latest() {
            if epoch <= latest {
                return false;
            }
        }
        // Entries at or past the new start belong to a truncated history.
        self.entries.retain(|&(_, start)| start < start_offset);
        self.entries.push((epoch, start_offset));
        true
    }

    /// The epoch whose range holds `offset`.
    pub fn epoch_for_offset(&self, offset: i64) -> Option<i32> {
        let after = self.entries.partition_point(|&(_, start)| start <= offset);
        after.checked_sub(1).map(|i| self.entries[i].0)
    }

    /// Drops entries starting at or after `end_offset` (the log was truncated there).
    pub fn truncate_from_end(&mut self, end_offset: i64) -> bool {
        let before = self.entries.len();
        self.entries.retain(|&(_, start)| start < end_offset);
        before != self.entries.len()
    }

    /// Drops entries wholly before `start_offset` and moves the one that holds it to start there.
    pub fn truncate_from_start(&mut self, start_offset: i64) -> bool {
        let holding = self
            .entries
            .partition_point(|&(_, start)| start <= start_offset);
        if holding == 0 {
            return false;
        }
        let changed = holding > 1 || self.entries[0].1 != start_offset;
        self.entries.drain(..holding - 1);
        self.entries[0].1 = start_offset;
        changed
    }

    /// Kafka's OffsetForLeaderEpoch answer: the largest epoch at or below `epoch` and the offset
    /// where the next epoch starts (the log end offset for the latest epoch).
    pub fn end_offset_for(&self, epoch: i32, log_end_offset: i64) -> Option<(i32, i64)> {
        let (latest, _) = self.latest()?;
        if epoch == latest {
            return Some((latest, log_end_offset));
        }
        let higher = self.entries.partition_point(|&(e, _)| e <= epoch);
        let &(_, higher_start) = self.entries.get(higher)?;
        match higher.checked_sub(1) {
            Some(floor) => Some((self.entries[floor].0, higher_start)),
            None => Some((epoch, higher_start)),
        }
    }

    pub fn encode(&self) -> Vec<u8> {
        let mut text = format!("0\n{}\n", self.entries.len());
        for (epoch, start) in &self.entries {
            text.push_str(&format!("{epoch} {start}\n"));
        }
        text.into_bytes()
    }

    pub fn decode(bytes: &[u8]) -> Option<Self> {
        let text = std::str::from_utf8(bytes).ok()?;
        let mut lines = text.lines();
        if lines.next()? != "0" {
            return None;
        }
        let count: usize = lines.next()?.trim().parse().ok()?;
        let mut entries = Vec::new();
        for line in lines.by_ref().take(count) {
            let (epoch, start) = line.split_once(' ')?;
            let entry: (i32, i64) = (epoch.parse().ok()?, start.parse().ok()?);
            if let Some(&(last_epoch, last_start)) = entries.last() {
                if entry.0 <= last_epoch || entry.1 < last_start {
                    return None;
                }
            }
            entries.push(entry);
        }
        if entries.len() != count || lines.next().is_some() {
            return None;
        }
        Some(Self { entries })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cache(entries: &[(i32, i64)]) -> LeaderEpochCache {
        let mut cache = LeaderEpochCache::default();
        for &(epoch, start) in entries {
            assert!(cache.assign(epoch, start));
        }
        cache
    }

    fn check(entries: &[(i32, i64)], epoch: i32, expected: Option<(i32, i64)>) {
        assert_eq!(cache(entries).end_offset_for(epoch, 100), expected);
    }

    #[test]
    fn end_offsets() {
        check(&[], 0, None);
        check(&[(1, 0), (3, 10), (5, 20)], 5, Some((5, 100)));
        check(&[(1, 0), (3, 10), (5, 20)], 3, Some((3, 20)));
        check(&[(1, 0), (3, 10), (5, 20)], 4, Some((3, 20)));
        check(&[(1, 0), (3, 10), (5, 20)], 0, Some((0, 0)));
        check(&[(1, 0), (3, 10), (5, 20)], 6, None);
    }

    #[test]
    fn truncation_and_codec() {
        let mut epochs = cache(&[(1, 0), (3, 10), (5, 20)]);
        assert_eq!(epochs.epoch_for_offset(15), Some(3));
        assert_eq!(epochs.epoch_for_offset(-1), None);
        assert!(epochs.truncate_from_end(20));
        assert_eq!(epochs.entries(), &[(1, 0), (3, 10)]);
        assert!(epochs.truncate_from_start(12));
        assert_eq!(epochs.entries(), &[(3, 12)]);
        assert!(!epochs.assign(2, 30));
        let decoded = LeaderEpochCache::decode(&epochs.encode()).unwrap();
        assert_eq!(decoded, epochs);
        assert_eq!(LeaderEpochCache::decode(b"0\n2\n1 0\n"), None);
        assert_eq!(LeaderEpochCache::decode(b"0\n2\n3 0\n1 5\n"), None);
    }
}
