//! The records a coordinator keeps in `__consumer_offsets`, in Kafka's own versioned key and
//! value formats, so a partition of that topic reads the same as one written by Kafka:
//! OffsetCommitKey (v1) with OffsetCommitValue (v3), GroupMetadataKey (v2) with
//! GroupMetadataValue (v3). A null value is a tombstone. Also the record-batch framing around
//! them: batches are built here for appends and parsed back at start-up.

use bytes::Bytes;
use sluice_storage::batch::{parse_header, BatchBuilder};

/// Bytes of a RecordBatch v2 header, before the first record.
const BATCH_HEADER_LEN: usize = 61;
/// Low bits of the batch attributes that name a compression codec.
const COMPRESSION_MASK: i16 = 0x07;

const OFFSET_KEY_VERSION: i16 = 1;
const GROUP_KEY_VERSION: i16 = 2;
const OFFSET_VALUE_VERSION: i16 = 3;
const GROUP_VALUE_VERSION: i16 = 3;

/// What a record's key names.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Key {
    Offset {
        group: String,
        topic: String,
        partition: i32,
    },
    Group {
        group: String,
    },
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OffsetValue {
    pub offset: i64,
    pub leader_epoch: i32,
    pub metadata: String,
    pub commit_ms: i64,
}

#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct MemberValue {
    pub member_id: String,
    pub instance_id: Option<String>,
    pub client_id: String,
    pub client_host: String,
    pub rebalance_timeout_ms: i32,
    pub session_timeout_ms: i32,
    pub subscription: Bytes,
    pub assignment: Bytes,
}

#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct GroupValue {
    pub protocol_type: String,
    pub generation: i32,
    pub protocol: Option<String>,
    pub leader: Option<String>,
    pub state_ms: i64,
    pub members: Vec<MemberValue>,
}

/// A decoded value; `None` in a [`Record`] is a tombstone.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Value {
    Offset(OffsetValue),
    Group(GroupValue),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Record {
    pub key: Key,
    pub value: Option<Value>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum RecordError {
    #[error("record ends early")]
    Truncated,
    #[error("unknown {what} version {version}")]
    Version { what: &'static str, version: i16 },
    #[error("malformed record: {0}")]
    Malformed(&'static str),
}

pub fn encode_key(key: &Key) -> Vec<u8> {
    let mut out = Vec::new();
    match key {
        Key::Offset {
            group,
            topic,
            partition,
        } => {
            put_i16(&mut out, OFFSET_KEY_VERSION);
            put_str(&mut out, group);
            put_str(&mut out, topic);
            out.extend_from_slice(&partition.to_be_bytes());
        }
        Key::Group { group } => {
            put_i16(&mut out, GROUP_KEY_VERSION);
            put_str(&mut out, group);
        }
    }
    out
}

pub fn encode_value(value: &Value) -> Vec<u8> {
    let mut out = Vec::new();
    match value {
        Value::Offset(v) => {
            put_i16(&mut out, OFFSET_VALUE_VERSION);
            out.extend_from_slice(&v.offset.to_be_bytes());
            out.extend_from_slice(&v.leader_epoch.to_be_bytes());
            put_str(&mut out, &v.metadata);
            out.extend_from_slice(&v.commit_ms.to_be_bytes());
        }
        Value::Group(v) => {
            put_i16(&mut out, GROUP_VALUE_VERSION);
            put_str(&mut out, &v.protocol_type);
            out.extend_from_slice(&v.generation.to_be_bytes());
            put_nullable_str(&mut out, v.protocol.as_deref());
            put_nullable_str(&mut out, v.leader.as_deref());
            out.extend_from_slice(&v.state_ms.to_be_bytes());
            let count = i32::try_from(v.members.len()).unwrap_or(i32::MAX);
            out.extend_from_slice(&count.to_be_bytes());
            for m in &v.members {
                put_str(&mut out, &m.member_id);
                put_nullable_str(&mut out, m.instance_id.as_deref());
                put_str(&mut out, &m.client_id);
                put_str(&mut out, &m.client_host);
                out.extend_from_slice(&m.rebalance_timeout_ms.to_be_bytes());
                out.extend_from_slice(&m.session_timeout_ms.to_be_bytes());
                put_bytes(&mut out, &m.subscription);
                put_bytes(&mut out, &m.assignment);
            }
        }
    }
    out
}

pub fn decode_key(bytes: &[u8]) -> Result<Key, RecordError> {
    let mut r = Reader(bytes);
    match r.i16()? {
        0 | 1 => Ok(Key::Offset {
            group: r.string()?,
            topic: r.string()?,
            partition: r.i32()?,
        }),
        2 => Ok(Key::Group { group: r.string()? }),
        version => Err(RecordError::Version {
            what: "key",
            version,
        }),
    }
}

/// Decodes a value of the kind `key` names, in any version Kafka has written.
pub fn decode_value(key: &Key, bytes: &[u8]) -> Result<Value, RecordError> {
    let mut r = Reader(bytes);
    let version = r.i16()?;
    match key {
        Key::Offset { .. } => decode_offset_value(&mut r, version).map(Value::Offset),
        Key::Group { .. } => decode_group_value(&mut r, version).map(Value::Group),
    }
}

fn decode_offset_value(r: &mut Reader, version: i16) -> Result<OffsetValue, RecordError> {
    if !(0..=3).contains(&version) {
        return Err(RecordError::Version {
            what: "offset value",
            version,
        });
    }
    let offset = r.i64()?;
    let leader_epoch = if version >= 3 { r.i32()? } else { -1 };
    let metadata = r.string()?;
    let commit_ms = r.i64()?;
    if version == 1 {
        r.i64()?; // The expire timestamp of version 1; expiry is the broker's policy now.
    }
    Ok(OffsetValue {
        offset,
        leader_epoch,
        metadata,
        commit_ms,
    })
}

fn decode_group_value(r: &mut Reader, version: i16) -> Result<GroupValue, RecordError> {
    if !(0..=3).contains(&version) {
        return Err(RecordError::Version {
            what: "group value",
            version,
        });
    }
    let protocol_type = r.string()?;
    let generation = r.i32()?;
    let protocol = r.nullable_string()?;
    let leader = r.nullable_string()?;
    let state_ms = if version >= 2 { r.i64()? } else { -1 };
    let count = r.count()?;
    let mut members = Vec::new();
    for _ in 0..count {
        let member_id = r.string()?;
        let instance_id = if version >= 3 {
            r.nullable_string()?
        } else {
            None
        };
        let client_id = r.string()?;
        let client_host = r.string()?;
        let rebalance_timeout_ms = if version >= 1 { r.i32()? } else { -1 };
        let session_timeout_ms = r.i32()?;
        let rebalance_timeout_ms = if version >= 1 {
            rebalance_timeout_ms
        } else {
            session_timeout_ms
        };
        members.push(MemberValue {
            member_id,
            instance_id,
            client_id,
            client_host,
            rebalance_timeout_ms,
            session_timeout_ms,
            subscription: r.bytes()?,
            assignment: r.bytes()?,
        });
    }
    Ok(GroupValue {
        protocol_type,
        generation,
        protocol,
        leader,
        state_ms,
        members,
    })
}

/// One uncompressed RecordBatch v2 holding `records`, ready for `Log::append`.
pub fn encode_batch(records: &[Record], now_ms: i64) -> Vec<u8> {
    debug_assert!(!records.is_empty());
    let mut body = Vec::new();
    for (delta, record) in records.iter().enumerate() {
        let key = encode_key(&record.key);
        let value = record.value.as_ref().map(encode_value);
        let mut inner = Vec::new();
        inner.push(0); // attributes
        put_varint(&mut inner, 0); // timestamp delta
        put_varint(&mut inner, delta as i64);
        put_varint(&mut inner, key.len() as i64);
        inner.extend_from_slice(&key);
        match &value {
            Some(value) => {
                put_varint(&mut inner, value.len() as i64);
                inner.extend_from_slice(value);
            }
            None => put_varint(&mut inner, -1),
        }
        put_varint(&mut inner, 0); // headers
        put_varint(&mut body, inner.len() as i64);
        body.extend_from_slice(&inner);
    }
    let count = i32::try_from(records.len()).unwrap_or(i32::MAX);
    BatchBuilder {
        last_offset_delta: count - 1,
        records_count: count,
        base_timestamp: now_ms,
        max_timestamp: now_ms,
        ..BatchBuilder::default()
    }
    .build(&body)
}

/// Every record in `bytes`, a run of whole batches as read from the log, in log order, and the
/// offset after the last whole batch. Records that do not decode are reported to `skipped` and
/// left out; a torn batch ends the run.
pub fn decode_batches(
    mut bytes: &[u8],
    skipped: &mut dyn FnMut(RecordError),
) -> (Vec<Record>, Option<i64>) {
    let mut out = Vec::new();
    let mut next_offset = None;
    while let Ok(header) = parse_header(bytes) {
        let total = header.total_len();
        if total < BATCH_HEADER_LEN || total > bytes.len() {
            break;
        }
        let (batch, rest) = bytes.split_at(total);
        bytes = rest;
        next_offset = Some(header.next_offset());
        if header.is_control() || header.attributes & COMPRESSION_MASK != 0 {
            // The coordinator writes neither; another writer's batches are not its state.
            continue;
        }
        let mut r = Reader(&batch[BATCH_HEADER_LEN..]);
        for _ in 0..header.records_count.max(0) {
            // A record whose length is readable can be stepped over when its content does not
            // decode; a broken length leaves nothing to find the next record by.
            let framed = match record_frame(&mut r) {
                Ok(framed) => framed,
                Err(error) => {
                    skipped(error);
                    break;
                }
            };
            match decode_record(framed) {
                Ok(Some(record)) => out.push(record),
                Ok(None) => {}
                Err(error) => skipped(error),
            }
        }
    }
    (out, next_offset)
}

/// The bytes of the next record of a batch, after its varint length.
fn record_frame<'a>(r: &mut Reader<'a>) -> Result<&'a [u8], RecordError> {
    let len = r.varint()?;
    let len = usize::try_from(len).map_err(|_| RecordError::Malformed("record length"))?;
    r.take(len)
}

/// One record's content; `None` for a record without a key.
fn decode_record(framed: &[u8]) -> Result<Option<Record>, RecordError> {
    let mut inner = Reader(framed);
    inner.take(1)?; // attributes
    inner.varint()?; // timestamp delta
    inner.varint()?; // offset delta
    let Some(key) = inner.varint_bytes()? else {
        return Ok(None);
    };
    let key = decode_key(key)?;
    let value = match inner.varint_bytes()? {
        Some(value) => Some(decode_value(&key, value)?),
        None => None,
    };
    Ok(Some(Record { key, value }))
}

/// The topic names of a consumer-protocol subscription (ConsumerProtocolSubscription, any
/// version: the topic array comes first after the version in all of them). The rest of the
/// metadata is the client's and is not read.
pub fn subscription_topics(metadata: &[u8]) -> Result<Vec<String>, RecordError> {
    let mut r = Reader(metadata);
    let version = r.i16()?;
    if version < 0 {
        return Err(RecordError::Version {
            what: "subscription",
            version,
        });
    }
    let count = r.count()?;
    let mut topics = Vec::new();
    for _ in 0..count {
        topics.push(r.string()?);
    }
    Ok(topics)
}

fn put_i16(out: &mut Vec<u8>, v: i16) {
    out.extend_from_slice(&v.to_be_bytes());
}

fn put_str(out: &mut Vec<u8>, s: &str) {
    // Names come from requests whose own strings carry an i16 length, so they fit.
    let len = i16::try_from(s.len()).unwrap_or(i16::MAX);
    put_i16(out, len);
    out.extend_from_slice(&s.as_bytes()[..len as usize]);
}

fn put_nullable_str(out: &mut Vec<u8>, s: Option<&str>) {
    match s {
        Some(s) => put_str(out, s),
        None => put_i16(out, -1),
    }
}

fn put_bytes(out: &mut Vec<u8>, b: &[u8]) {
    let len = i32::try_from(b.len()).unwrap_or(i32::MAX);
    out.extend_from_slice(&len.to_be_bytes());
    out.extend_from_slice(&b[..len as usize]);
}

fn put_varint(out: &mut Vec<u8>, v: i64) {
    let mut zigzag = ((v << 1) ^ (v >> 63)) as u64;
    while zigzag >= 0x80 {
        out.push((zigzag as u8) | 0x80);
        zigzag >>= 7;
    }
    out.push(zigzag as u8);
}

/// A checked reader: every length is compared with what remains before it is used.
struct Reader<'a>(&'a [u8]);

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8], RecordError> {
        if n > self.0.len() {
            return Err(RecordError::Truncated);
        }
        let (head, rest) = self.0.split_at(n);
        self.0 = rest;
        Ok(head)
    }

    fn array<const N: usize>(&mut self) -> Result<[u8; N], RecordError> {
        let mut out = [0u8; N];
        out.copy_from_slice(self.take(N)?);
        Ok(out)
    }

    fn i16(&mut self) -> Result<i16, RecordError> {
        self.array().map(i16::from_be_bytes)
    }

    fn i32(&mut self) -> Result<i32, RecordError> {
        self.array().map(i32::from_be_bytes)
    }

    fn i64(&mut self) -> Result<i64, RecordError> {
        self.array().map(i64::from_be_bytes)
    }

    fn nullable_string(&mut self) -> Result<Option<String>, RecordError> {
        let len = self.i16()?;
        if len < 0 {
            return Ok(None);
        }
        let text = self.take(len as usize)?;
        let text = std::str::from_utf8(text).map_err(|_| RecordError::Malformed("utf-8"))?;
        Ok(Some(text.to_owned()))
    }

    fn string(&mut self) -> Result<String, RecordError> {
        self.nullable_string()?
            .ok_or(RecordError::Malformed("null string"))
    }

    fn bytes(&mut self) -> Result<Bytes, RecordError> {
        let len = self.i32()?;
        if len < 0 {
            return Ok(Bytes::new());
        }
        Ok(Bytes::copy_from_slice(self.take(len as usize)?))
    }

    /// An array count, bounded by the bytes left (every element takes at least one).
    fn count(&mut self) -> Result<usize, RecordError> {
        let count = self.i32()?;
        let count = usize::try_from(count).unwrap_or(0);
        if count > self.0.len() {
            return Err(RecordError::Truncated);
        }
        Ok(count)
    }

    fn varint(&mut self) -> Result<i64, RecordError> {
        let mut value: u64 = 0;
        for shift in (0..70).step_by(7) {
            let [byte] = self.array::<1>()?;
            if shift == 63 && byte > 1 {
                return Err(RecordError::Malformed("varint too long"));
            }
            value |= u64::from(byte & 0x7f) << shift;
            if byte & 0x80 == 0 {
                return Ok(((value >> 1) as i64) ^ -((value & 1) as i64));
            }
        }
        Err(RecordError::Malformed("varint too long"))
    }

    /// Varint-length bytes; `None` for length -1.
    fn varint_bytes(&mut self) -> Result<Option<&'a [u8]>, RecordError> {
        let len = self.varint()?;
        if len < 0 {
            return Ok(None);
        }
        let len = usize::try_from(len).map_err(|_| RecordError::Truncated)?;
        self.take(len).map(Some)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(records: Vec<Record>) {
        let batch = encode_batch(&records, 1_700_000_000_000);
        let mut doubled = batch.clone();
        doubled.extend_from_slice(&batch);
        let mut errors = Vec::new();
        let (back, next) = decode_batches(&doubled, &mut |e| errors.push(e));
        assert!(errors.is_empty(), "{errors:?}");
        assert_eq!(next, Some(want_next(&records)));
        let mut want = records.clone();
        want.extend(records);
        assert_eq!(back, want);
    }

    fn want_next(records: &[Record]) -> i64 {
        // Both copies carry base offset 0, so the last one ends where the first does.
        records.len() as i64
    }

    fn offset_key(partition: i32) -> Key {
        Key::Offset {
            group: "g".into(),
            topic: "orders".into(),
            partition,
        }
    }

    #[test]
    fn offsets_and_tombstones_round_trip() {
        check(vec![
            Record {
                key: offset_key(3),
                value: Some(Value::Offset(OffsetValue {
                    offset: 42,
                    leader_epoch: -1,
                    metadata: "meta".into(),
                    commit_ms: 7,
                })),
            },
            Record {
                key: offset_key(4),
                value: None,
            },
        ]);
    }

    #[test]
    fn group_metadata_round_trips() {
        let member = MemberValue {
            member_id: "m-1".into(),
            instance_id: Some("static-1".into()),
            client_id: "c".into(),
            client_host: "/127.0.0.1".into(),
            rebalance_timeout_ms: 300_000,
            session_timeout_ms: 6_000,
            subscription: Bytes::from_static(b"sub"),
            assignment: Bytes::from_static(b"assign"),
        };
        check(vec![Record {
            key: Key::Group { group: "g".into() },
            value: Some(Value::Group(GroupValue {
                protocol_type: "consumer".into(),
                generation: 5,
                protocol: Some("range".into()),
                leader: Some("m-1".into()),
                state_ms: 9,
                members: vec![member],
            })),
        }]);
    }

    #[test]
    fn offset_key_matches_kafka_layout() {
        // Version 1, "g", "t", partition 2: the bytes Kafka's OffsetCommitKey writes.
        let key = Key::Offset {
            group: "g".into(),
            topic: "t".into(),
            partition: 2,
        };
        assert_eq!(encode_key(&key), [0, 1, 0, 1, b'g', 0, 1, b't', 0, 0, 0, 2]);
    }

    #[test]
    fn damaged_input_is_an_error_not_a_panic() {
        let batch = encode_batch(
            &[Record {
                key: Key::Group { group: "g".into() },
                value: None,
            }],
            0,
        );
        for cut in 0..batch.len() {
            let mut errors = 0;
            let (records, next) = decode_batches(&batch[..cut], &mut |_| errors += 1);
            // A cut batch is torn: nothing of it is read, and the run ends before it.
            assert!(records.is_empty(), "cut at {cut}: {records:?}");
            assert_eq!(next, None, "cut at {cut}");
            assert_eq!(errors, 0, "cut at {cut}");
        }
        let (whole, next) = decode_batches(&batch, &mut |e| panic!("{e}"));
        assert_eq!((whole.len(), next), (1, Some(1)));
        assert!(decode_key(&[0, 9]).is_err());
        assert!(decode_key(&[0, 2, 0x7f, 0x7f]).is_err());
        let group = Key::Group { group: "g".into() };
        assert!(decode_value(&group, &[0, 3, 0, 1]).is_err());
        let mut huge_count = vec![0, 3, 0, 0, 0, 0, 0, 0, 0xff, 0xff, 0xff, 0xff];
        huge_count.extend_from_slice(&[0; 8]);
        huge_count.extend_from_slice(&i32::MAX.to_be_bytes());
        assert!(decode_value(&group, &huge_count).is_err());
    }

    #[test]
    fn a_record_that_does_not_decode_does_not_hide_the_ones_after_it() {
        let good = |partition| Record {
            key: offset_key(partition),
            value: None,
        };
        let records = [good(1), good(2), good(3)];
        let mut batch = encode_batch(&records, 0);
        // Give the second record's key an unknown version; its length framing stays valid.
        let key = encode_key(&offset_key(2));
        let at = batch
            .windows(key.len())
            .position(|w| w == key)
            .expect("second key in the batch");
        batch[at + 1] = 9;
        // The batch CRC no longer matches, which the log checks on append, not the decoder.
        let mut errors = Vec::new();
        let (back, next) = decode_batches(&batch, &mut |e| errors.push(e));
        assert_eq!(back, [good(1), good(3)]);
        assert_eq!(next, Some(3));
        assert_eq!(
            errors,
            [RecordError::Version {
                what: "key",
                version: 9
            }]
        );
    }

    #[test]
    fn subscription_topics_are_read_without_trusting_counts() {
        // Version 1, topics ["a", "bc"], then user data the reader does not look at.
        let metadata = [
            0, 1, 0, 0, 0, 2, 0, 1, b'a', 0, 2, b'b', b'c', 0xff, 0xff, 0xff, 0xff,
        ];
        assert_eq!(
            subscription_topics(&metadata),
            Ok(vec!["a".into(), "bc".into()])
        );
        for hostile in [
            &[0u8, 0, 0x7f, 0xff, 0xff, 0xff][..],
            &[0, 0, 0, 0, 0, 3, 0, 1, b'a'],
            &[0xff, 0xff, 0, 0, 0, 0],
            &[0],
        ] {
            assert!(subscription_topics(hostile).is_err(), "{hostile:?}");
        }
    }

    /// Pins an encoding to bytes written out from Kafka's schema: `value` encodes to exactly
    /// `bytes`, and `bytes` decode back to `value`.
    fn golden(key: &Key, value: Value, bytes: &[u8]) {
        assert_eq!(encode_value(&value), bytes, "encoding of {value:?}");
        assert_eq!(decode_value(key, bytes), Ok(value));
    }

    fn group_key() -> Key {
        Key::Group { group: "g".into() }
    }

    /// 1_700_000_000_000 ms as Kafka's INT64: big-endian, eight bytes.
    const STATE_MS: [u8; 8] = [0, 0, 1, 139, 207, 229, 104, 0];
    const STATE_MS_VALUE: i64 = 1_700_000_000_000;

    #[test]
    fn offset_value_v3_matches_kafka_layout() {
        // OffsetCommitValue v3: offset, leaderEpoch, metadata, commitTimestamp.
        #[rustfmt::skip]
        let bytes = [
            &[0, 3][..],                   // version
            &[0, 0, 0, 0, 0, 0, 0, 42],    // offset
            &[0, 0, 0, 7],                 // leaderEpoch
            &[0, 1], b"m",                 // metadata: INT16 length, then UTF-8
            &STATE_MS,                     // commitTimestamp
        ]
        .concat();
        let value = OffsetValue {
            offset: 42,
            leader_epoch: 7,
            metadata: "m".into(),
            commit_ms: STATE_MS_VALUE,
        };
        golden(&offset_key(0), Value::Offset(value), &bytes);
        // No leader epoch is -1, and empty metadata is an empty string, not a null one.
        #[rustfmt::skip]
        let bytes = [
            &[0, 3][..],
            &[0, 0, 0, 0, 0, 0, 0, 0],
            &[0xff, 0xff, 0xff, 0xff],
            &[0, 0],
            &STATE_MS,
        ]
        .concat();
        let value = OffsetValue {
            offset: 0,
            leader_epoch: -1,
            metadata: String::new(),
            commit_ms: STATE_MS_VALUE,
        };
        golden(&offset_key(0), Value::Offset(value), &bytes);
    }

    #[test]
    fn group_value_v3_matches_kafka_layout() {
        // GroupMetadataValue v3: protocolType, generation, protocol, leader,
        // currentStateTimestamp, then members of memberId, groupInstanceId, clientId,
        // clientHost, rebalanceTimeout, sessionTimeout, subscription, assignment.
        #[rustfmt::skip]
        let bytes = [
            &[0, 3][..],          // version
            &[0, 8], b"consumer", // protocolType
            &[0, 0, 0, 5],        // generation
            &[0, 5], b"range",    // protocol
            &[0, 1], b"a",        // leader
            &STATE_MS,            // currentStateTimestamp
            &[0, 0, 0, 2],        // member count
            // A static member.
            &[0, 1], b"a",        // memberId
            &[0, 1], b"i",        // groupInstanceId
            &[0, 1], b"c",        // clientId
            &[0, 1], b"h",        // clientHost
            &[0, 4, 147, 224],    // rebalanceTimeout: 300_000
            &[0, 0, 23, 112],     // sessionTimeout: 6_000
            &[0, 0, 0, 1], b"s",  // subscription: INT32 length, then the bytes
            &[0, 0, 0, 1], b"x",  // assignment
            // A dynamic member that has no assignment yet.
            &[0, 1], b"b",        // memberId
            &[0xff, 0xff],        // groupInstanceId: null
            &[0, 1], b"c",        // clientId
            &[0, 1], b"h",        // clientHost
            &[0, 0, 39, 16],      // rebalanceTimeout: 10_000
            &[0, 0, 23, 112],     // sessionTimeout: 6_000
            &[0, 0, 0, 1], b"s",  // subscription
            &[0, 0, 0, 0],        // assignment: empty
        ]
        .concat();
        let member = |id: &str, instance: Option<&str>, rebalance_ms, assignment: &'static [u8]| {
            MemberValue {
                member_id: id.into(),
                instance_id: instance.map(Into::into),
                client_id: "c".into(),
                client_host: "h".into(),
                rebalance_timeout_ms: rebalance_ms,
                session_timeout_ms: 6_000,
                subscription: Bytes::from_static(b"s"),
                assignment: Bytes::from_static(assignment),
            }
        };
        let value = GroupValue {
            protocol_type: "consumer".into(),
            generation: 5,
            protocol: Some("range".into()),
            leader: Some("a".into()),
            state_ms: STATE_MS_VALUE,
            members: vec![
                member("a", Some("i"), 300_000, b"x"),
                member("b", None, 10_000, b""),
            ],
        };
        golden(&group_key(), Value::Group(value), &bytes);
        // An empty group: no protocol and no leader are nulls, and no members.
        #[rustfmt::skip]
        let bytes = [
            &[0, 3][..],
            &[0, 8], b"consumer",
            &[0, 0, 0, 2],
            &[0xff, 0xff],
            &[0xff, 0xff],
            &STATE_MS,
            &[0, 0, 0, 0],
        ]
        .concat();
        let value = GroupValue {
            protocol_type: "consumer".into(),
            generation: 2,
            protocol: None,
            leader: None,
            state_ms: STATE_MS_VALUE,
            members: Vec::new(),
        };
        golden(&group_key(), Value::Group(value), &bytes);
    }

    #[test]
    fn older_offset_values_decode() {
        // Versions 0 and 2: offset, metadata, commitTimestamp; no leader epoch.
        #[rustfmt::skip]
        let fields = [
            &[0, 0, 0, 0, 0, 0, 0, 42][..], // offset
            &[0, 1], b"m",                  // metadata
            &STATE_MS,                      // commitTimestamp
        ]
        .concat();
        let want = Value::Offset(OffsetValue {
            offset: 42,
            leader_epoch: -1,
            metadata: "m".into(),
            commit_ms: STATE_MS_VALUE,
        });
        for version in [0, 2] {
            let bytes = [&[0, version][..], &fields].concat();
            assert_eq!(
                decode_value(&offset_key(0), &bytes),
                Ok(want.clone()),
                "v{version}"
            );
        }
        // Version 1, which Kafka still writes for a commit that asked for its own retention
        // (OffsetCommit v2 to v4): the same fields, then expireTimestamp.
        #[rustfmt::skip]
        let v1 = [
            &[0, 1][..],                       // version
            &fields,                           // offset, metadata, commitTimestamp
            &[0, 0, 1, 139, 207, 238, 143, 192], // expireTimestamp: ten minutes later
        ]
        .concat();
        assert_eq!(decode_value(&offset_key(0), &v1), Ok(want));
        // The expire timestamp is part of version 1: a value without it is cut short.
        let cut = &v1[..v1.len() - 8];
        assert_eq!(
            decode_value(&offset_key(0), cut),
            Err(RecordError::Truncated)
        );
        // Version 4 is flexible (compact strings, tagged fields); read as version 3 it would
        // be misread, so it is refused and the record skipped.
        let v4 = [&[0, 4][..], &v1[2..]].concat();
        assert_eq!(
            decode_value(&offset_key(0), &v4),
            Err(RecordError::Version {
                what: "offset value",
                version: 4
            })
        );
    }

    #[test]
    fn older_group_values_decode() {
        #[rustfmt::skip]
        let head = [
            &[0, 8][..], b"consumer", // protocolType
            &[0, 0, 0, 5],            // generation
            &[0, 5], b"range",        // protocol
            &[0, 1], b"a",            // leader
        ]
        .concat();
        #[rustfmt::skip]
        let member_head = [
            &[0, 0, 0, 1][..], // member count
            &[0, 1], b"a",     // memberId
            &[0, 1], b"c",     // clientId
            &[0, 1], b"h",     // clientHost
        ]
        .concat();
        let rebalance = [0, 4, 147, 224]; // rebalanceTimeout: 300_000
        #[rustfmt::skip]
        let member_tail = [
            &[0, 0, 23, 112][..],  // sessionTimeout: 6_000
            &[0, 0, 0, 1], b"s",   // subscription
            &[0, 0, 0, 1], b"x",   // assignment
        ]
        .concat();
        // Version 0 has neither currentStateTimestamp nor rebalanceTimeout.
        let v0 = [&[0, 0][..], &head, &member_head, &member_tail].concat();
        // Version 1 adds rebalanceTimeout, before sessionTimeout.
        let v1 = [&[0, 1][..], &head, &member_head, &rebalance, &member_tail].concat();
        // Version 2 adds currentStateTimestamp, after leader.
        let v2 = [
            &[0, 2][..],
            &head,
            &STATE_MS,
            &member_head,
            &rebalance,
            &member_tail,
        ]
        .concat();
        let want = |state_ms, rebalance_timeout_ms| {
            Value::Group(GroupValue {
                protocol_type: "consumer".into(),
                generation: 5,
                protocol: Some("range".into()),
                leader: Some("a".into()),
                state_ms,
                members: vec![MemberValue {
                    member_id: "a".into(),
                    instance_id: None,
                    client_id: "c".into(),
                    client_host: "h".into(),
                    rebalance_timeout_ms,
                    session_timeout_ms: 6_000,
                    subscription: Bytes::from_static(b"s"),
                    assignment: Bytes::from_static(b"x"),
                }],
            })
        };
        // As in Kafka, a version 0 member's rebalance timeout is its session timeout, and a
        // group without a state timestamp has -1.
        assert_eq!(decode_value(&group_key(), &v0), Ok(want(-1, 6_000)));
        assert_eq!(decode_value(&group_key(), &v1), Ok(want(-1, 300_000)));
        assert_eq!(
            decode_value(&group_key(), &v2),
            Ok(want(STATE_MS_VALUE, 300_000))
        );
    }
}
