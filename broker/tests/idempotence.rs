//! Idempotent producers across a restart: the broker must remember, per producer, which
//! sequences it has appended, both after a clean stop and after SIGKILL, so that a retried
//! batch is acknowledged with its original offset and never appended twice, and a gap in
//! the sequence is refused.

mod support;

use bytes::{Bytes, BytesMut};
use kafka_protocol::indexmap::IndexMap;
use kafka_protocol::messages::InitProducerIdRequest;
use kafka_protocol::records::{
    Compression, Record, RecordBatchEncoder, RecordEncodeOptions, TimestampType,
};
use support::kafka::{produce, produce_request, stored, Conn, Message};
use support::Broker;

const OUT_OF_ORDER_SEQUENCE_NUMBER: i16 = 45;
const NONE: i16 = 0;

/// The InitProducerId version the tests speak (flexible, as current clients send it).
const INIT_PRODUCER_ID_VERSION: i16 = 4;

/// Records per batch; sequences advance by this much per batch.
const BATCH_RECORDS: i32 = 2;

/// Batches acknowledged before the restart.
const BATCHES_BEFORE_RESTART: i32 = 3;

/// A producer id and epoch from the broker.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Producer {
    id: i64,
    epoch: i16,
}

fn init_producer_id(broker: &Broker) -> Producer {
    let mut conn = Conn::connect(broker.address);
    let request = InitProducerIdRequest::default()
        .with_transactional_id(None)
        .with_transaction_timeout_ms(60_000);
    let response = conn.call(INIT_PRODUCER_ID_VERSION, &request);
    assert_eq!(response.error_code, NONE, "{response:?}");
    assert!(response.producer_id.0 >= 0, "{response:?}");
    Producer {
        id: response.producer_id.0,
        epoch: response.producer_epoch,
    }
}

/// An idempotent batch of `BATCH_RECORDS` records whose sequences start at `base_sequence`.
fn idempotent_batch(producer: Producer, base_sequence: i32) -> Bytes {
    let records: Vec<Record> = (0..BATCH_RECORDS)
        .map(|i| Record {
            transactional: false,
            control: false,
            delete_horizon: false,
            partition_leader_epoch: -1,
            producer_id: producer.id,
            producer_epoch: producer.epoch,
            timestamp_type: TimestampType::Creation,
            offset: i64::from(i),
            sequence: base_sequence + i,
            timestamp: 1_700_000_000_000,
            key: Some(Bytes::from(format!("key-{}", base_sequence + i))),
            value: Some(Bytes::from(format!("value-{}", base_sequence + i))),
            headers: IndexMap::new(),
        })
        .collect();
    let mut buf = BytesMut::new();
    RecordBatchEncoder::encode(
        &mut buf,
        &records,
        &RecordEncodeOptions {
            version: 2,
            compression: Compression::None,
        },
    )
    .expect("batch encodes");
    buf.freeze()
}

/// Produces the batch starting at `base_sequence` with acks=-1: (error code, base offset).
fn send(broker: &Broker, topic: &str, producer: Producer, base_sequence: i32) -> (i16, i64) {
    let mut conn = Conn::connect(broker.address);
    let batch = idempotent_batch(producer, base_sequence);
    produce(&mut conn, &produce_request(topic, 0, Some(batch), -1))
}

/// The messages the batches with sequences `0..end_sequence` hold, in order.
fn expected_messages(end_sequence: i32) -> Vec<Message> {
    (0..end_sequence)
        .map(|sequence| Message::new(format!("key-{sequence}"), format!("value-{sequence}")))
        .collect()
}

fn stored_messages(broker: &Broker, topic: &str) -> Vec<Message> {
    let consumed = stored(broker.address, topic);
    for (expected_offset, record) in consumed.iter().enumerate() {
        assert_eq!(record.offset, expected_offset as i64);
    }
    consumed.into_iter().map(|record| record.message).collect()
}

/// Produces `BATCHES_BEFORE_RESTART` batches, each acknowledged at the offset its sequence
/// predicts (one partition, one producer, so offset == sequence).
fn produce_before_restart(broker: &Broker, topic: &str, producer: Producer) {
    for batch in 0..BATCHES_BEFORE_RESTART {
        let base_sequence = batch * BATCH_RECORDS;
        assert_eq!(
            send(broker, topic, producer, base_sequence),
            (NONE, i64::from(base_sequence)),
            "batch at sequence {base_sequence}"
        );
    }
}

/// After the restart: the last acknowledged batch, retried, is acknowledged at its original
/// offset and not appended again; a gap is OUT_OF_ORDER_SEQUENCE_NUMBER; the next batch in
/// sequence is appended where it belongs.
fn check_after_restart(broker: &Broker, topic: &str, producer: Producer) {
    let appended = BATCHES_BEFORE_RESTART * BATCH_RECORDS;
    assert_eq!(stored_messages(broker, topic), expected_messages(appended));

    let last_base_sequence = appended - BATCH_RECORDS;
    assert_eq!(
        send(broker, topic, producer, last_base_sequence),
        (NONE, i64::from(last_base_sequence)),
        "a retry of the last acknowledged batch gets its original offset"
    );
    assert_eq!(
        stored_messages(broker, topic),
        expected_messages(appended),
        "the retried batch is not appended twice"
    );

    let (error, _) = send(broker, topic, producer, appended + BATCH_RECORDS);
    assert_eq!(error, OUT_OF_ORDER_SEQUENCE_NUMBER, "a gap in the sequence");
    assert_eq!(stored_messages(broker, topic), expected_messages(appended));

    assert_eq!(
        send(broker, topic, producer, appended),
        (NONE, i64::from(appended)),
        "the next batch in sequence"
    );
    assert_eq!(
        stored_messages(broker, topic),
        expected_messages(appended + BATCH_RECORDS)
    );

    // A producer that starts now gets an id of its own, not one handed out before.
    assert_ne!(init_producer_id(broker).id, producer.id);
}

#[test]
fn producer_state_survives_a_clean_restart() {
    let mut broker = Broker::start(&[]);
    let topic = "idempotent-clean";
    let producer = init_producer_id(&broker);
    produce_before_restart(&broker, topic, producer);

    let dir = broker.take_dir();
    let data = broker.data.clone();
    let status = broker.stop();
    assert!(status.success(), "clean stop: {status}");
    let broker = Broker::start_in(&data, &[]);
    check_after_restart(&broker, topic, producer);
    drop(broker);
    drop(dir);
}

#[test]
fn producer_state_survives_sigkill_after_an_acknowledged_produce() {
    let mut broker = Broker::start(&[]);
    let topic = "idempotent-killed";
    let producer = init_producer_id(&broker);
    produce_before_restart(&broker, topic, producer);

    let dir = broker.take_dir();
    let data = broker.data.clone();
    broker.kill();
    let broker = Broker::start_in(&data, &[]);
    check_after_restart(&broker, topic, producer);
    drop(broker);
    drop(dir);
}
