//! Sparse per-segment indexes, kept in memory and mirrored to `.index` and `.timeindex` files in
//! Kafka's layout: offset entries are (relative offset u32, position u32), time entries are
//! (timestamp i64, relative offset u32), all big-endian.
//!
//! Offset entries map the last offset of a batch to the position where that batch starts; a
//! lookup takes the greatest entry at or below the target and scans batch headers from there.
//! Time entries record the segment's running maximum timestamp and the offset of the record that
//! set it, so timestamps strictly increase along the index.
//!
//! The files are trusted only as far as cheap checks go (well-formed, monotonic, in range); an
//! entry that points at the wrong batch is caught where it is used: the batch found at an
//! entry's position must end at the entry's offset, and the batch holding a time entry's offset
//! must carry the entry's timestamp. The segment then falls back to scanning from its start and
//! is marked for an index rebuild.

pub const OFFSET_ENTRY_LEN: usize = 8;
pub const TIME_ENTRY_LEN: usize = 12;

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct OffsetIndex {
    entries: Vec<(u32, u32)>,
}

impl OffsetIndex {
    pub fn entries(&self) -> &[(u32, u32)] {
        &self.entries
    }

    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    pub fn push(&mut self, relative_offset: u32, position: u32) {
        if let Some(&(last_offset, last_position)) = self.entries.last() {
            assert!(relative_offset > last_offset && position > last_position);
        }
        self.entries.push((relative_offset, position));
    }

    /// The position to start scanning from for `relative_offset`: the greatest entry at or below
    /// it, or the start of the segment.
    pub fn lookup(&self, relative_offset: u32) -> u32 {
        self.entry_at_or_below(relative_offset)
            .map_or(0, |(_, p)| p)
    }

    /// The greatest entry whose offset is at or below `relative_offset`.
    pub fn entry_at_or_below(&self, relative_offset: u32) -> Option<(u32, u32)> {
        let after = self.entries.partition_point(|&(o, _)| o <= relative_offset);
        after.checked_sub(1).map(|i| self.entries[i])
    }

    /// The greatest entry whose batch starts at or below `position`.
    pub fn floor_entry(&self, position: u32) -> Option<(u32, u32)> {
        let after = self.entries.partition_point(|&(_, p)| p <= position);
        after.checked_sub(1).map(|i| self.entries[i])
    }

    /// Keeps only entries for batches that start before `position`.
    pub fn truncate_to_position(&mut self, position: u32) {
        self.entries.retain(|&(_, p)| p < position);
    }

    pub fn encode_from(&self, first: usize) -> Vec<u8> {
        let mut out = Vec::with_capacity((self.entries.len() - first) * OFFSET_ENTRY_LEN);
        for (offset, position) in &self.entries[first..] {
            out.extend_from_slice(&offset.to_be_bytes());
            out.extend_from_slice(&position.to_be_bytes());
        }
        out
    }

    /// Parses an index file. Returns `None` unless every entry is well formed: strictly
    /// increasing offsets and positions, positions inside a log of `log_len` bytes and offsets
    /// below `offset_limit` (relative). A preallocated tail of zeros is not accepted: files are
    /// trimmed to their entries whenever a clean restart may read them.
    pub fn decode(bytes: &[u8], log_len: u64, offset_limit: u64) -> Option<Self> {
        if !bytes.chunks_exact(OFFSET_ENTRY_LEN).remainder().is_empty() {
            return None;
        }
        let mut index = Self::default();
        for entry in bytes.chunks_exact(OFFSET_ENTRY_LEN) {
            let offset = u32::from_be_bytes([entry[0], entry[1], entry[2], entry[3]]);
            let position = u32::from_be_bytes([entry[4], entry[5], entry[6], entry[7]]);
            if u64::from(position) >= log_len || u64::from(offset) >= offset_limit {
                return None;
            }
            if let Some(&(last_offset, last_position)) = index.entries.last() {
                if offset <= last_offset || position <= last_position {
                    return None;
                }
            }
            index.entries.push((offset, position));
        }
        Some(index)
    }
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TimeIndex {
    entries: Vec<(i64, u32)>,
}

impl TimeIndex {
    pub fn entries(&self) -> &[(i64, u32)] {
        &self.entries
    }

    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    pub fn last(&self) -> Option<(i64, u32)> {
        self.entries.last().copied()
    }

    /// Appends when `timestamp` is above the last entry; returns whether it appended.
    pub fn maybe_push(&mut self, timestamp: i64, relative_offset: u32) -> bool {
        if let Some(&(last_timestamp, last_offset)) = self.entries.last() {
            if timestamp <= last_timestamp {
                return false;
            }
            assert!(relative_offset >= last_offset);
        }
        self.entries.push((timestamp, relative_offset));
        true
    }

    /// A relative offset from which to scan for the first batch with a timestamp at or above
    /// `timestamp`: every batch before the returned entry's batch has a smaller timestamp.
    pub fn lookup(&self, timestamp: i64) -> u32 {
        self.entry_below(timestamp).map_or(0, |(_, o)| o)
    }

    /// The greatest entry whose timestamp is below `timestamp`.
    pub fn entry_below(&self, timestamp: i64) -> Option<(i64, u32)> {
        let below = self.entries.partition_point(|&(t, _)| t < timestamp);
        below.checked_sub(1).map(|i| self.entries[i])
    }

    pub fn truncate_to_offset(&mut self, relative_offset: u32) {
        self.entries.retain(|&(_, o)| o < relative_offset);
    }

    pub fn encode_from(&self, first: usize) -> Vec<u8> {
        let mut out = Vec::with_capacity((self.entries.len() - first) * TIME_ENTRY_LEN);
        for (timestamp, offset) in &self.entries[first..] {
            out.extend_from_slice(&timestamp.to_be_bytes());
            out.extend_from_slice(&offset.to_be_bytes());
        }
        out
    }

    /// Parses a time index file; same acceptance rules as [`OffsetIndex::decode`].
    pub fn decode(bytes: &[u8], offset_limit: u64) -> Option<Self> {
        if !bytes.chunks_exact(TIME_ENTRY_LEN).remainder().is_empty() {
            return None;
        }
        let mut index = Self::default();
        for entry in bytes.chunks_exact(TIME_ENTRY_LEN) {
            let mut timestamp = [0u8; 8];
            timestamp.copy_from_slice(&entry[..8]);
            let timestamp = i64::from_be_bytes(timestamp);
            let offset = u32::from_be_bytes([entry[8], entry[9], entry[10], entry[11]]);
            if u64::from(offset) >= offset_limit {
                return None;
            }
            if let Some(&(last_timestamp, last_offset)) = index.entries.last() {
                if timestamp <= last_timestamp || offset < last_offset {
                    return None;
                }
            }
            index.entries.push((timestamp, offset));
        }
        Some(index)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(entries: &[(u32, u32)], target: u32, expected: u32) {
        let mut index = OffsetIndex::default();
        for &(offset, position) in entries {
            index.push(offset, position);
        }
        assert_eq!(index.lookup(target), expected);
    }

    #[test]
    fn offset_lookup() {
        check(&[], 5, 0);
        check(&[(4, 100), (9, 250)], 3, 0);
        check(&[(4, 100), (9, 250)], 4, 100);
        check(&[(4, 100), (9, 250)], 8, 100);
        check(&[(4, 100), (9, 250)], 100, 250);
    }

    #[test]
    fn offset_codec_rejects_garbage() {
        let mut index = OffsetIndex::default();
        index.push(4, 100);
        index.push(9, 250);
        let bytes = index.encode_from(0);
        assert_eq!(OffsetIndex::decode(&bytes, 300, 20), Some(index.clone()));
        assert_eq!(OffsetIndex::decode(&bytes, 250, 20), None);
        assert_eq!(OffsetIndex::decode(&bytes, 300, 9), None);
        assert_eq!(OffsetIndex::decode(&bytes[..7], 300, 20), None);
        let mut zeros = bytes.clone();
        zeros.extend_from_slice(&[0; 8]);
        assert_eq!(OffsetIndex::decode(&zeros, 300, 20), None);
    }

    #[test]
    fn time_lookup_and_codec() {
        let mut index = TimeIndex::default();
        assert!(index.maybe_push(10, 0));
        assert!(!index.maybe_push(10, 3));
        assert!(index.maybe_push(20, 5));
        assert_eq!(index.lookup(5), 0);
        assert_eq!(index.lookup(15), 0);
        assert_eq!(index.lookup(25), 5);
        let bytes = index.encode_from(0);
        assert_eq!(TimeIndex::decode(&bytes, 6), Some(index.clone()));
        assert_eq!(TimeIndex::decode(&bytes, 5), None);
    }
}
