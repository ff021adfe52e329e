//! The tool's one error type: everything that can stop a run, from an address that does not
//! resolve to a broker that answers a setup request with an error code.

use std::io;
use std::net::SocketAddr;

use kafka_protocol::error::ParseResponseErrorCode;
use sluice_net::client::ClientError;

use crate::batch::BatchError;

#[derive(Debug, thiserror::Error)]
pub enum BenchError {
    #[error("cannot resolve {bootstrap}: {source}")]
    Resolve {
        bootstrap: String,
        #[source]
        source: io::Error,
    },
    #[error("{0} resolves to no address")]
    NoAddress(String),
    #[error("cannot start a runtime: {0}")]
    Runtime(#[source] io::Error),
    #[error("cannot start a worker thread: {0}")]
    Thread(#[source] io::Error),
    #[error("worker {0} panicked")]
    WorkerPanicked(usize),
    #[error("cannot connect to {addr}: {source}")]
    Connect {
        addr: SocketAddr,
        #[source]
        source: ClientError,
    },
    #[error(transparent)]
    Client(#[from] ClientError),
    #[error("broker {broker} at {addr}: {source}")]
    Connection {
        broker: i32,
        addr: SocketAddr,
        #[source]
        source: ClientError,
    },
    #[error(transparent)]
    Batch(#[from] BatchError),
    #[error("the broker offers no {api} version in {min}..={max}, which is what this tool speaks")]
    Unsupported {
        api: &'static str,
        min: i16,
        max: i16,
    },
    #[error("{during} failed with {}", error_name(*.error_code))]
    Request {
        during: &'static str,
        error_code: i16,
    },
    #[error("topic {topic}: {during} failed with {}", error_name(*.error_code))]
    Topic {
        topic: String,
        during: &'static str,
        error_code: i16,
    },
    #[error("topic {topic} partition {partition}: {during} failed with {}",
            error_name(*.error_code))]
    Partition {
        topic: String,
        partition: i32,
        during: &'static str,
        error_code: i16,
    },
    #[error("topic {0} does not exist")]
    TopicMissing(String),
    #[error("topic {topic} has no partitions in metadata {waited_ms} ms after it was created")]
    TopicNotReady { topic: String, waited_ms: u128 },
    #[error(
        "topic {topic} partition {partition}: {fetches} fetches in a row brought nothing \
             before the end offset"
    )]
    Stalled {
        topic: String,
        partition: i32,
        fetches: u32,
    },
    #[error("topic {topic} partition {partition} has no leader {waited_ms} ms after it was asked")]
    Leaderless {
        topic: String,
        partition: i32,
        waited_ms: u128,
    },
    #[error("partition {partition} is led by broker {leader}, which Metadata does not list")]
    UnknownLeader { partition: i32, leader: i32 },
    #[error(
        "topic {topic} partition {partition}: broker {broker} answered {during} with {}; \
         the partition's leader changed during the run, and sluice-bench does not follow \
         moving leaders",
        error_name(*.error_code)
    )]
    LeaderMoved {
        topic: String,
        partition: i32,
        broker: i32,
        during: &'static str,
        error_code: i16,
    },
    #[error("the broker answered {during} for {topic} without partition {partition}")]
    PartitionMissing {
        topic: String,
        partition: i32,
        during: &'static str,
    },
}

/// A Kafka error code with its name, as in "MESSAGE_TOO_LARGE (10)", for people reading logs.
pub fn error_name(error_code: i16) -> String {
    match error_code.err() {
        Some(error) => format!("{error:?} ({error_code})"),
        None => format!("no error ({error_code})"),
    }
}
