//! Keyed records: the key set a run uses (`--keys`) and the partition each key goes to, by
//! the hash Kafka's default partitioner uses (murmur2 of the key bytes, sign bit cleared,
//! modulo the partition count), so keyed load lands where a Java or librdkafka producer
//! with the consistent_random/murmur2 partitioner would put it.

use bytes::Bytes;

/// The most distinct keys a run may use; each key is kept in memory by every producer.
pub const KEYS_MAX: u64 = 10_000_000;
/// Every key is `key-` and this many decimal digits, so all records have one size.
const KEY_DIGITS: usize = 8;
/// The length of every key this tool makes.
pub const KEY_LEN: usize = 4 + KEY_DIGITS;

const _: () = assert!(KEYS_MAX <= 10u64.pow(KEY_DIGITS as u32));

/// Kafka's murmur2 (the 32-bit MurmurHash2 variant with its fixed seed), as its
/// `Utils.murmur2` computes it over a key's bytes.
pub fn murmur2(data: &[u8]) -> i32 {
    const SEED: u32 = 0x9747_b28c;
    const M: u32 = 0x5bd1_e995;
    const R: u32 = 24;
    let mut h = SEED ^ data.len() as u32;
    let mut chunks = data.chunks_exact(4);
    for chunk in &mut chunks {
        let mut k = u32::from_le_bytes([chunk[0], chunk[1], chunk[2], chunk[3]]);
        k = k.wrapping_mul(M);
        k ^= k >> R;
        k = k.wrapping_mul(M);
        h = h.wrapping_mul(M);
        h ^= k;
    }
    let tail = chunks.remainder();
    if !tail.is_empty() {
        for (i, &byte) in tail.iter().enumerate().rev() {
            h ^= u32::from(byte) << (8 * i);
        }
        h = h.wrapping_mul(M);
    }
    h ^= h >> 13;
    h = h.wrapping_mul(M);
    h ^= h >> 15;
    h as i32
}

/// The partition Kafka's default partitioner picks for a non-null key.
pub fn partition_for(key: &[u8], partitions: i32) -> i32 {
    assert!(partitions >= 1);
    // Kafka's toPositive: clear the sign bit rather than take the absolute value.
    (murmur2(key) & 0x7fff_ffff) % partitions
}

/// Key number `index`: `key-00000042`.
pub fn key(index: u64) -> Bytes {
    debug_assert!(index < KEYS_MAX);
    Bytes::from(format!("key-{index:0width$}", width = KEY_DIGITS))
}

/// The run's keys, grouped by the partition they hash to, and the order in which partitions
/// receive batches: key by key, so a partition gets load in proportion to its keys.
#[derive(Debug, Clone)]
pub struct KeyedPartitions {
    /// For each partition, its keys (possibly none).
    pub keys: Vec<Vec<Bytes>>,
    /// The partition of key 0, key 1, ...; producers walk it round and round.
    pub rotation: Vec<i32>,
}

impl KeyedPartitions {
    pub fn new(keys: u64, partitions: i32) -> Self {
        assert!((1..=KEYS_MAX).contains(&keys));
        let mut by_partition = vec![Vec::new(); partitions as usize];
        let mut rotation = Vec::with_capacity(keys as usize);
        for index in 0..keys {
            let key = key(index);
            let partition = partition_for(&key, partitions);
            by_partition[partition as usize].push(key);
            rotation.push(partition);
        }
        Self {
            keys: by_partition,
            rotation,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(input: &[u8], expected: i32) {
        assert_eq!(
            murmur2(input),
            expected,
            "{}",
            String::from_utf8_lossy(input)
        );
    }

    #[test]
    fn murmur2_matches_kafkas_vectors() {
        // The vectors of Kafka's UtilsTest.testMurmur2, which cover every tail length.
        check(b"21", -973_932_308);
        check(b"foobar", -790_332_482);
        check(b"a-little-bit-long-string", -985_981_536);
        check(b"a-little-bit-longer-string", -1_486_304_829);
        check(
            b"lkjh234lh9fiuh90y23oiuhsafujhadof229phr9h19h89h8",
            -58_897_971,
        );
        check(b"abc", 479_470_107);
    }

    #[test]
    fn partitions_clear_the_sign_bit() {
        // murmur2("foobar") is negative: toPositive keeps the low 31 bits, abs() would not.
        assert_eq!(partition_for(b"foobar", 50), 16);
        assert_eq!(partition_for(b"21", 1), 0);
        for partitions in [1, 3, 16, 100] {
            for index in 0..200 {
                let p = partition_for(&key(index), partitions);
                assert!((0..partitions).contains(&p));
            }
        }
    }

    #[test]
    fn keys_are_grouped_by_their_partition() {
        let keyed = KeyedPartitions::new(100, 7);
        assert_eq!(keyed.rotation.len(), 100);
        assert_eq!(keyed.keys.iter().map(Vec::len).sum::<usize>(), 100);
        for (partition, keys) in keyed.keys.iter().enumerate() {
            for key in keys {
                assert_eq!(key.len(), KEY_LEN);
                assert_eq!(partition_for(key, 7), partition as i32);
            }
        }
        assert_eq!(key(42), Bytes::from_static(b"key-00000042"));
    }
}
