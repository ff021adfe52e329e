//! Produce requests pipelined on one connection land in each partition in the order they were
//! sent, as Kafka keeps them: a producer with several requests in flight (librdkafka's
//! default) relies on it for per-partition order, idempotent or not.

mod support;

use std::collections::HashMap;

use kafka_protocol::messages::produce_request::{PartitionProduceData, TopicProduceData};
use kafka_protocol::messages::{ProduceRequest, TopicName};
use kafka_protocol::protocol::StrBytes;
use support::kafka::{self, Conn, Message, PRODUCE_VERSION};
use support::Broker;

const PARTITIONS: i32 = 4;
const CONNECTIONS: usize = 3;
/// Requests each connection sends before it reads any answer: below the broker's default
/// queued.max.requests (500), so the broker keeps reading.
const REQUESTS_PER_CONNECTION: usize = 300;

/// One request carrying a batch for every partition, each batch holding one message
/// named after its connection and sequence number.
fn request(topic: &str, connection: usize, sequence: usize) -> ProduceRequest {
    let partitions = (0..PARTITIONS)
        .map(|index| {
            let value = format!("{connection}:{sequence}");
            let records = kafka::batch(&[Message::new(b"k".to_vec(), value.into_bytes())]);
            PartitionProduceData::default()
                .with_index(index)
                .with_records(Some(records))
        })
        .collect();
    ProduceRequest::default()
        .with_acks(1)
        .with_timeout_ms(10_000)
        .with_topic_data(vec![TopicProduceData::default()
            .with_name(TopicName(StrBytes::from_string(topic.to_owned())))
            .with_partition_data(partitions)])
}

#[test]
fn pipelined_produce_requests_keep_their_order_in_every_partition() {
    let broker = Broker::start(&["sluice.reactors=2", &format!("num.partitions={PARTITIONS}")]);
    let topic = "pipelined";
    // Create the topic first, so every pipelined request finds it.
    let mut conn = Conn::connect(broker.address);
    let first = conn.call(PRODUCE_VERSION, &request(topic, usize::MAX, 0));
    let codes: Vec<i16> = first.responses[0]
        .partition_responses
        .iter()
        .map(|p| p.error_code)
        .collect();
    assert_eq!(codes, vec![0; PARTITIONS as usize], "{first:?}");

    let address = broker.address;
    let senders: Vec<_> = (0..CONNECTIONS)
        .map(|connection| {
            std::thread::spawn(move || {
                let mut conn = Conn::connect(address);
                let sent: Vec<i32> = (0..REQUESTS_PER_CONNECTION)
                    .map(|sequence| {
                        conn.send(PRODUCE_VERSION, &request(topic, connection, sequence))
                    })
                    .collect();
                // Base offsets each partition gave this connection's requests, in send order.
                let mut offsets: HashMap<i32, Vec<i64>> = HashMap::new();
                for correlation_id in sent {
                    let response =
                        conn.receive_response::<ProduceRequest>(PRODUCE_VERSION, correlation_id);
                    for partition in &response.responses[0].partition_responses {
                        assert_eq!(partition.error_code, 0, "{response:?}");
                        offsets
                            .entry(partition.index)
                            .or_default()
                            .push(partition.base_offset);
                    }
                }
                offsets
            })
        })
        .collect();
    for sender in senders {
        let offsets = sender.join().expect("sender thread");
        for (partition, offsets) in offsets {
            assert_eq!(offsets.len(), REQUESTS_PER_CONNECTION);
            assert!(
                offsets.windows(2).all(|pair| pair[0] < pair[1]),
                "partition {partition}: base offsets out of send order: {offsets:?}"
            );
        }
    }

    // What a consumer reads: each connection's messages in the order it sent them.
    for partition in 0..PARTITIONS {
        let consumed = kafka::fetch_all(broker.address, topic, partition, 0);
        assert_eq!(consumed.len(), 1 + CONNECTIONS * REQUESTS_PER_CONNECTION);
        let mut next = [0usize; CONNECTIONS];
        for record in consumed.iter().skip(1) {
            let value = String::from_utf8(record.message.value.clone()).expect("utf-8 value");
            let (connection, sequence) = value.split_once(':').expect("connection:sequence");
            let (connection, sequence): (usize, usize) =
                (connection.parse().unwrap(), sequence.parse().unwrap());
            assert_eq!(
                sequence, next[connection],
                "partition {partition}: connection {connection} out of order at offset {}",
                record.offset
            );
            next[connection] += 1;
        }
    }
}
