//! `sluice produce` (lines of stdin as records) and `sluice consume` (records printed with a
//! kcat-like format). Records go to and come from each partition's leader; batches are
//! Kafka's v2 record batches, uncompressed when produced; compressed ones are inflated to read.

use std::collections::BTreeMap;
use std::io::{BufRead, Write};

use bytes::{Buf, Bytes, BytesMut};
use clap::Args;
use kafka_protocol::messages::fetch_request::{FetchPartition, FetchTopic};
use kafka_protocol::messages::FetchRequest;
use kafka_protocol::records::{
    Compression, Record, RecordBatchDecoder, RecordBatchEncoder, RecordEncodeOptions, TimestampType,
};
use serde_json::json;
use sluice_storage::batch::parse_header;
use sluice_storage::records::{recompress, Compression as Codec};

use super::error::CliError;
use super::offsets::{self, Led};
use super::output::Printed;
use super::session::{topic_name, Session};
use super::topic::partitions_of;
use super::Connection;

/// Records buffered before they are sent, in bytes of keys and values.
const PENDING_BYTES_MAX: usize = 1024 * 1024;
/// What one Fetch may return, in all and per partition.
const FETCH_BYTES_MAX: i32 = 4 * 1024 * 1024;
const FETCH_PARTITION_BYTES_MAX: i32 = 1024 * 1024;
/// How long a Fetch waits at the broker for new records.
const FETCH_WAIT_MS: i32 = 500;
/// A v2 batch: base offset (8) and batch length (4), then the length's bytes, of which the
/// first 49 are header before the records.
const BATCH_PREFIX_BYTES: usize = 12;
const BATCH_HEADER_AFTER_LENGTH: usize = 49;
/// The smallest a record can be: length, attributes, timestamp and offset deltas, key and
/// value lengths, header count, one byte each.
const RECORD_BYTES_MIN: usize = 7;
/// Where the record count sits in a batch, and the attribute bits of its compression.
const RECORD_COUNT_OFFSET: usize = 57;
const ATTRIBUTES_OFFSET: usize = 21;
const LAST_OFFSET_DELTA_OFFSET: usize = 23;
const COMPRESSION_MASK: i16 = 0x07;

const _: () = assert!(RECORD_COUNT_OFFSET + 4 == BATCH_PREFIX_BYTES + BATCH_HEADER_AFTER_LENGTH);

#[derive(Args)]
pub struct ProduceCommand {
    #[command(flatten)]
    pub connection: Connection,
    /// The topic to produce to; it must exist.
    topic: String,
    /// Split each line at the first SEP into key and value; without it each line is a value
    /// with no key.
    #[arg(long, value_name = "SEP")]
    key_separator: Option<String>,
    /// Send every record to this partition. Otherwise a keyed record goes where Kafka's
    /// default partitioner sends it (murmur2 of the key), and the others round-robin.
    #[arg(long)]
    partition: Option<i32>,
    /// Acknowledgements to wait for: 0, 1 or -1 (all in-sync replicas).
    #[arg(long, default_value_t = -1, allow_hyphen_values = true)]
    acks: i16,
}

#[derive(Args)]
pub struct ConsumeCommand {
    #[command(flatten)]
    pub connection: Connection,
    /// The topic to read.
    topic: String,
    /// Start at each partition's log start; otherwise only records produced from now on.
    #[arg(long)]
    from_beginning: bool,
    /// Stop after this many records.
    #[arg(long, value_name = "N")]
    max_messages: Option<u64>,
    /// Stop at the high watermarks seen at start instead of waiting for more (kcat's -e).
    #[arg(long)]
    exit_at_end: bool,
    /// Only this partition.
    #[arg(long)]
    partition: Option<i32>,
    /// How each record prints: %t topic, %p partition, %o offset, %T timestamp (ms), %k key,
    /// %v or %s value, %% a percent sign; \n and \t are a newline and a tab. Each record
    /// ends with a newline unless the format does. With --json each record is a JSON line.
    #[arg(long, default_value = "%v")]
    format: String,
}

/// Kafka's murmur2 hash of a key, as its default partitioner computes it.
fn murmur2(data: &[u8]) -> i32 {
    const SEED: u32 = 0x9747_b28c;
    const M: u32 = 0x5bd1_e995;
    const R: u32 = 24;
    let mut h = SEED ^ (data.len() as u32);
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
        for (i, byte) in tail.iter().enumerate().rev() {
            h ^= u32::from(*byte) << (8 * i);
        }
        h = h.wrapping_mul(M);
    }
    h ^= h >> 13;
    h = h.wrapping_mul(M);
    h ^= h >> 15;
    h as i32
}

/// The partition Kafka's default partitioner gives a key.
fn partition_for(key: &[u8], partitions: usize) -> i32 {
    let positive = (murmur2(key) & 0x7fff_ffff) as usize;
    (positive % partitions.max(1)) as i32
}

pub async fn produce(command: ProduceCommand) -> Result<Printed, CliError> {
    let mut session = Session::open(&command.connection).await?;
    let topic = command.topic.as_str();
    let metadata = session
        .metadata(Some(std::slice::from_ref(&command.topic)))
        .await?;
    let partitions = partitions_of(&metadata, topic)?;
    if let Some(p) = command.partition {
        if !partitions.iter().any(|l| l.partition == p) {
            return Err(CliError::NoSuchPartition {
                topic: topic.to_owned(),
                partition: p,
            });
        }
    }
    let mut pending: BTreeMap<i32, Vec<(Option<Bytes>, Bytes)>> = BTreeMap::new();
    let mut pending_bytes = 0;
    let mut next_keyless = 0usize;
    let mut produced: BTreeMap<i32, u64> = BTreeMap::new();
    let stdin = std::io::stdin();
    for line in stdin.lock().lines() {
        let line = line.map_err(CliError::Stdin)?;
        let (key, value) = match &command.key_separator {
            Some(sep) => match line.split_once(sep.as_str()) {
                Some((key, value)) => (Some(key.to_owned()), value.to_owned()),
                None => (None, line),
            },
            None => (None, line),
        };
        let partition = match (command.partition, &key) {
            (Some(p), _) => p,
            (None, Some(key)) => partition_for(key.as_bytes(), partitions.len()),
            (None, None) => {
                next_keyless = next_keyless.wrapping_add(1);
                (next_keyless % partitions.len().max(1)) as i32
            }
        };
        pending_bytes += key.as_ref().map_or(0, String::len) + value.len();
        pending
            .entry(partition)
            .or_default()
            .push((key.map(Bytes::from), Bytes::from(value)));
        if pending_bytes >= PENDING_BYTES_MAX {
            send_all(
                &mut session,
                &command,
                &partitions,
                &mut pending,
                &mut produced,
            )
            .await?;
            pending_bytes = 0;
        }
    }
    send_all(
        &mut session,
        &command,
        &partitions,
        &mut pending,
        &mut produced,
    )
    .await?;
    let total: u64 = produced.values().sum();
    let text = format!("Produced {total} records to {topic}.\n");
    let per_partition: BTreeMap<String, u64> =
        produced.iter().map(|(p, n)| (p.to_string(), *n)).collect();
    let json = json!({ "topic": topic, "records": total, "partitions": per_partition });
    Ok(Printed::new(text, json))
}

/// Sends what is pending, one request per partition to its leader.
async fn send_all(
    session: &mut Session,
    command: &ProduceCommand,
    partitions: &[Led],
    pending: &mut BTreeMap<i32, Vec<(Option<Bytes>, Bytes)>>,
    produced: &mut BTreeMap<i32, u64>,
) -> Result<(), CliError> {
    let topic = command.topic.as_str();
    for (partition, records) in std::mem::take(pending) {
        let leader = partitions
            .iter()
            .find(|l| l.partition == partition)
            .map_or(-1, |l| l.leader);
        if leader < 0 {
            return Err(CliError::NoLeader {
                topic: topic.to_owned(),
                partition,
            });
        }
        let batch = encode(&records)?;
        let conn = session.broker(leader).await?;
        let answer = conn.produce(topic, partition, command.acks, batch).await?;
        let resource = || format!("partition {topic}:{partition}");
        for p in answer.responses.iter().flat_map(|t| &t.partition_responses) {
            let message = p.error_message.as_deref();
            CliError::check("Produce", resource, p.error_code, message)?;
        }
        *produced.entry(partition).or_default() += records.len() as u64;
    }
    Ok(())
}

/// One uncompressed v2 batch of the records, stamped with the time now.
fn encode(records: &[(Option<Bytes>, Bytes)]) -> Result<Bytes, CliError> {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX));
    let records: Vec<Record> = records
        .iter()
        .enumerate()
        .map(|(i, (key, value))| Record {
            transactional: false,
            control: false,
            delete_horizon: false,
            partition_leader_epoch: -1,
            producer_id: -1,
            producer_epoch: -1,
            timestamp_type: TimestampType::Creation,
            offset: i as i64,
            // kafka-protocol's encoder keeps records in one batch while offset minus sequence
            // stays the same, and Produce v3+ takes one batch per partition; this keeps them
            // together with the batch's base sequence at -1 (no sequence, not idempotent).
            sequence: (i as i32).wrapping_sub(1),
            timestamp: now,
            key: key.clone(),
            value: Some(value.clone()),
            headers: Default::default(),
        })
        .collect();
    let mut buf = BytesMut::new();
    let options = RecordEncodeOptions {
        version: 2,
        compression: Compression::None,
    };
    RecordBatchEncoder::encode(&mut buf, records.iter(), &options)
        .map_err(|e| CliError::Encode(e.to_string()))?;
    Ok(buf.freeze())
}

/// Where consuming one partition stands.
struct Position {
    led: Led,
    next: i64,
    /// With --exit-at-end: the high watermark at start.
    end: Option<i64>,
}

impl Position {
    fn done(&self) -> bool {
        self.end.is_some_and(|end| self.next >= end)
    }
}

pub async fn consume(command: ConsumeCommand) -> Result<Printed, CliError> {
    let mut session = Session::open(&command.connection).await?;
    let topic = command.topic.clone();
    let metadata = session.metadata(Some(std::slice::from_ref(&topic))).await?;
    let mut partitions = partitions_of(&metadata, &topic)?;
    if let Some(p) = command.partition {
        partitions.retain(|l| l.partition == p);
        if partitions.is_empty() {
            return Err(CliError::NoSuchPartition {
                topic,
                partition: p,
            });
        }
    }
    let mut positions = start_positions(&mut session, partitions, &command).await?;
    let format = unescape(&command.format);
    let mut printer = Printer {
        format: &format,
        json: command.connection.json,
        limit: command.max_messages.unwrap_or(u64::MAX),
        printed: 0,
    };
    while !printer.full() && !positions.iter().all(Position::done) {
        let mut leaders: Vec<i32> = positions
            .iter()
            .filter(|p| !p.done())
            .map(|p| p.led.leader)
            .collect();
        leaders.sort_unstable();
        leaders.dedup();
        for leader in leaders {
            fetch_once(&mut session, leader, &mut positions, &mut printer).await?;
            if printer.full() {
                break;
            }
        }
    }
    Ok(Printed::new(String::new(), serde_json::Value::Null))
}

/// Where each partition starts (its log start, or its high watermark for only new records),
/// and with --exit-at-end where it stops.
async fn start_positions(
    session: &mut Session,
    partitions: Vec<Led>,
    command: &ConsumeCommand,
) -> Result<Vec<Position>, CliError> {
    let (earliest, latest, consumer) = (offsets::EARLIEST, offsets::LATEST, offsets::CONSUMER);
    let start_at = if command.from_beginning {
        earliest
    } else {
        latest
    };
    let starts = offsets::at_leaders(session, &partitions, start_at, consumer).await;
    let ends = if command.exit_at_end {
        offsets::at_leaders(session, &partitions, latest, consumer).await
    } else {
        offsets::Found::new()
    };
    let mut positions = Vec::new();
    for led in partitions {
        let key = (led.topic.clone(), led.partition);
        let next = match starts.get(&key) {
            Some(Ok(offset)) => *offset,
            Some(Err(missing)) => {
                return Err(missing.clone().into_error(&led.topic, led.partition))
            }
            None => {
                return Err(CliError::NoLeader {
                    topic: led.topic,
                    partition: led.partition,
                })
            }
        };
        let end = match ends.get(&key) {
            Some(Ok(offset)) => Some(*offset),
            Some(Err(missing)) => {
                return Err(missing.clone().into_error(&led.topic, led.partition))
            }
            None => None,
        };
        positions.push(Position { led, next, end });
    }
    Ok(positions)
}

/// How records print, how many may, and how many have.
struct Printer<'a> {
    format: &'a str,
    json: bool,
    limit: u64,
    printed: u64,
}

impl Printer<'_> {
    fn full(&self) -> bool {
        self.printed >= self.limit
    }

    /// Prints what a partition's fetched bytes hold beyond its position, and moves the
    /// position past them.
    fn print(
        &mut self,
        out: &mut impl Write,
        position: &mut Position,
        records: Bytes,
    ) -> Result<(), CliError> {
        let (topic, partition) = (position.led.topic.clone(), position.led.partition);
        for (last_offset, set) in whole_batches(records, &topic, partition)? {
            let from = position.next;
            let fresh = set.iter().filter(|r| r.offset >= from && !r.control);
            for record in fresh {
                if let Some(end) = position.end.filter(|&end| record.offset >= end) {
                    // Past the end taken at start: this partition is done.
                    position.next = position.next.max(end);
                    return Ok(());
                }
                if self.full() {
                    return Ok(());
                }
                let line = render(self, &topic, partition, record);
                // A closed pipe (`| head`) ends the output, not the tool with a panic.
                if out.write_all(line.as_bytes()).is_err() {
                    self.printed = self.limit;
                    return Ok(());
                }
                self.printed += 1;
                position.next = record.offset + 1;
            }
            position.next = position.next.max(last_offset + 1);
        }
        Ok(())
    }
}

/// One Fetch to `leader` for its partitions that are not done; prints what came back.
async fn fetch_once(
    session: &mut Session,
    leader: i32,
    positions: &mut [Position],
    printer: &mut Printer<'_>,
) -> Result<(), CliError> {
    if leader < 0 {
        let stuck = positions.iter().find(|p| p.led.leader < 0 && !p.done());
        return match stuck {
            Some(p) => Err(CliError::NoLeader {
                topic: p.led.topic.clone(),
                partition: p.led.partition,
            }),
            None => Ok(()),
        };
    }
    let request = fetch_request(positions, leader);
    let answer = session.broker(leader).await?.call(&request).await?;
    CliError::check(
        "Fetch",
        || format!("broker {leader}"),
        answer.error_code,
        None,
    )?;
    let mut out = std::io::stdout().lock();
    for topic in &answer.responses {
        let name = topic.topic.0.as_str();
        for data in &topic.partitions {
            let index = data.partition_index;
            let mine = |p: &&mut Position| p.led.topic == name && p.led.partition == index;
            let Some(position) = positions.iter_mut().find(mine) else {
                continue;
            };
            let resource = || format!("partition {name}:{index}");
            CliError::check("Fetch", resource, data.error_code, None)?;
            if let Some(records) = data.records.clone() {
                printer.print(&mut out, position, records)?;
            }
        }
    }
    let _ = out.flush();
    Ok(())
}

/// A Fetch for the partitions `leader` leads that are not done, each from its position.
fn fetch_request(positions: &[Position], leader: i32) -> FetchRequest {
    let mut topics: BTreeMap<String, Vec<FetchPartition>> = BTreeMap::new();
    for p in positions
        .iter()
        .filter(|p| p.led.leader == leader && !p.done())
    {
        topics.entry(p.led.topic.clone()).or_default().push(
            FetchPartition::default()
                .with_partition(p.led.partition)
                .with_fetch_offset(p.next)
                .with_partition_max_bytes(FETCH_PARTITION_BYTES_MAX),
        );
    }
    FetchRequest::default()
        .with_max_wait_ms(FETCH_WAIT_MS)
        .with_min_bytes(1)
        .with_max_bytes(FETCH_BYTES_MAX)
        .with_topics(
            topics
                .into_iter()
                .map(|(name, partitions)| {
                    FetchTopic::default()
                        .with_topic(topic_name(&name))
                        .with_partitions(partitions)
                })
                .collect(),
        )
}

/// The whole v2 batches in a partition's fetched bytes (a trailing partial batch is left for
/// the next fetch), each with its last offset and its records. A batch's record count is
/// checked against its length before the decoder reserves room for that many records.
fn whole_batches(
    mut bytes: Bytes,
    topic: &str,
    partition: i32,
) -> Result<Vec<(i64, Vec<Record>)>, CliError> {
    let broken = |reason: String| CliError::Records {
        topic: topic.to_owned(),
        partition,
        reason,
    };
    let mut out = Vec::new();
    while bytes.len() >= BATCH_PREFIX_BYTES + BATCH_HEADER_AFTER_LENGTH {
        let length = i32::from_be_bytes([bytes[8], bytes[9], bytes[10], bytes[11]]);
        let Ok(length) = usize::try_from(length) else {
            return Err(broken(format!("batch length {length}")));
        };
        if length < BATCH_HEADER_AFTER_LENGTH {
            return Err(broken(format!("batch length {length}")));
        }
        let Some(total) = length.checked_add(BATCH_PREFIX_BYTES) else {
            return Err(broken(format!("batch length {length}")));
        };
        if bytes.len() < total {
            break;
        }
        let mut batch = bytes.split_to(total);
        let field = |at: usize| [batch[at], batch[at + 1], batch[at + 2], batch[at + 3]];
        let base_offset = (&batch[..8]).get_i64();
        let last_delta = i32::from_be_bytes(field(LAST_OFFSET_DELTA_OFFSET));
        let count = i32::from_be_bytes(field(RECORD_COUNT_OFFSET));
        let compression =
            i16::from_be_bytes([batch[ATTRIBUTES_OFFSET], batch[ATTRIBUTES_OFFSET + 1]])
                & COMPRESSION_MASK;
        if compression != 0 {
            // A compressed batch is checked and inflated (within the storage crate's bound on
            // the inflated size) into the same batch uncompressed, which is then read as any other.
            let header = parse_header(&batch).map_err(|e| broken(e.to_string()))?;
            let plain = recompress(&batch, &header, Codec::None)
                .map_err(|e| broken(format!("the batch at offset {base_offset}: {e}")))?;
            if let Some(plain) = plain {
                batch = Bytes::from(plain);
            }
        }
        let length = batch.len() - BATCH_PREFIX_BYTES;
        let room = (length - BATCH_HEADER_AFTER_LENGTH) / RECORD_BYTES_MIN;
        if !usize::try_from(count).is_ok_and(|c| c <= room) {
            return Err(broken(format!(
                "{count} records in a batch of {length} bytes"
            )));
        }
        let set = RecordBatchDecoder::decode(&mut batch).map_err(|e| broken(e.to_string()))?;
        out.push((base_offset + i64::from(last_delta), set.records));
    }
    Ok(out)
}

fn unescape(format: &str) -> String {
    format.replace("\\n", "\n").replace("\\t", "\t")
}

fn text(bytes: Option<&Bytes>) -> String {
    bytes.map_or_else(String::new, |b| String::from_utf8_lossy(b).into_owned())
}

/// One record as the format (or JSON) says, with its line end.
fn render(printer: &Printer<'_>, topic: &str, partition: i32, record: &Record) -> String {
    if printer.json {
        let value = json!({
            "topic": topic,
            "partition": partition,
            "offset": record.offset,
            "timestamp": record.timestamp,
            "key": record.key.as_ref().map(|k| String::from_utf8_lossy(k).into_owned()),
            "value": record.value.as_ref().map(|v| String::from_utf8_lossy(v).into_owned()),
        });
        return format!("{value}\n");
    }
    let mut line = String::new();
    let mut chars = printer.format.chars();
    while let Some(c) = chars.next() {
        if c != '%' {
            line.push(c);
            continue;
        }
        match chars.next() {
            Some('t') => line.push_str(topic),
            Some('p') => line.push_str(&partition.to_string()),
            Some('o') => line.push_str(&record.offset.to_string()),
            Some('T') => line.push_str(&record.timestamp.to_string()),
            Some('k') => line.push_str(&text(record.key.as_ref())),
            Some('v') | Some('s') => line.push_str(&text(record.value.as_ref())),
            Some('%') => line.push('%'),
            Some(other) => {
                line.push('%');
                line.push(other);
            }
            None => line.push('%'),
        }
    }
    if !line.ends_with('\n') {
        line.push('\n');
    }
    line
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Kafka's own murmur2 cases (UtilsTest).
    #[test]
    fn murmur2_is_kafkas() {
        assert_eq!(murmur2(b"21"), -973_932_308);
        assert_eq!(murmur2(b"foobar"), -790_332_482);
        assert_eq!(murmur2(b"a-little-bit-long-string"), -985_981_536);
        assert_eq!(murmur2(b"a-little-bit-longer-string"), -1_486_304_829);
        assert_eq!(murmur2(b"abc"), 479_470_107);
    }
}
