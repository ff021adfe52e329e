//! What can go wrong in an operator command, and for each Kafka error what the operator can
//! do about it.

use std::net::SocketAddr;

use sluice_broker::error_codes as code;
use sluice_net::client::ClientError;

#[derive(Debug, thiserror::Error)]
pub enum CliError {
    #[error("cannot start the I/O runtime: {0}")]
    Runtime(std::io::Error),
    #[error("{given:?} is not HOST:PORT")]
    BadAddress { given: String },
    #[error("cannot resolve {given}: {source}")]
    Resolve {
        given: String,
        source: std::io::Error,
    },
    #[error("cannot connect to {address}: {source}")]
    Connect {
        address: SocketAddr,
        source: ClientError,
    },
    #[error("no broker of {given} answered (the last said: {last})")]
    NoBootstrap { given: String, last: Box<CliError> },
    #[error("{api} to {address} failed: {source}")]
    Request {
        api: String,
        address: SocketAddr,
        source: ClientError,
    },
    #[error("{api} to {address} was not answered within {timeout_ms} ms")]
    Timeout {
        api: String,
        address: SocketAddr,
        timeout_ms: u128,
    },
    #[error("the broker at {address} serves no version of {api} this tool speaks ({min}..={max})")]
    Unsupported {
        api: String,
        address: SocketAddr,
        min: i16,
        max: i16,
    },
    /// A Kafka error code in an answer, with the resource it concerns.
    #[error("{api} for {resource}: {}{}", kafka_name(.error_code), detail(.message))]
    Kafka {
        api: &'static str,
        resource: String,
        error_code: i16,
        message: Option<String>,
    },
    #[error("broker {id} did not answer earlier in this command ({reason})")]
    Unreachable { id: i32, reason: String },
    #[error("broker {id} is not among the brokers Metadata lists ({known})")]
    UnknownBroker { id: i32, known: String },
    #[error("{given:?} is not KEY=VALUE")]
    NotAPair { given: String },
    #[error("{given:?} is not a UTC time such as 2026-01-01T00:00:00Z")]
    BadDatetime { given: String },
    #[error("{given:?} is not TOPIC or TOPIC:PARTITION,PARTITION...")]
    BadTopicPartitions { given: String },
    #[error("topic {topic} has no partition {partition}")]
    NoSuchPartition { topic: String, partition: i32 },
    #[error("nothing to change: give --set KEY=VALUE or --delete KEY")]
    NothingToChange,
    #[error(
        "group {group} is {state} with {members} member(s); its offsets can be reset only \
         while it is empty"
    )]
    GroupNotEmpty {
        group: String,
        state: String,
        members: usize,
    },
    #[error("{topic}:{partition} has no committed offset in group {group} to shift")]
    NothingToShift {
        group: String,
        topic: String,
        partition: i32,
    },
    #[error("partition {topic}:{partition} has no leader")]
    NoLeader { topic: String, partition: i32 },
    #[error("cannot read stdin: {0}")]
    Stdin(std::io::Error),
    #[error("a record of {topic}:{partition} does not decode: {reason}")]
    Records {
        topic: String,
        partition: i32,
        reason: String,
    },
    #[error("a record does not encode: {0}")]
    Encode(String),
}

fn kafka_name(error_code: &i16) -> String {
    code::name(*error_code)
}

fn detail(message: &Option<String>) -> String {
    match message {
        Some(text) if !text.is_empty() => format!(" ({text})"),
        _ => String::new(),
    }
}

impl CliError {
    /// A Kafka error code as an error, `None` for NONE.
    pub fn check(
        api: &'static str,
        resource: impl FnOnce() -> String,
        error_code: i16,
        message: Option<&str>,
    ) -> Result<(), CliError> {
        if error_code == code::NONE {
            return Ok(());
        }
        Err(CliError::Kafka {
            api,
            resource: resource(),
            error_code,
            message: message.map(str::to_owned),
        })
    }

    /// The Kafka error's name (UNKNOWN_TOPIC_OR_PARTITION) when this is one.
    pub fn kafka_name(&self) -> Option<String> {
        match self {
            CliError::Kafka { error_code, .. } => Some(code::name(*error_code)),
            _ => None,
        }
    }

    /// What the operator can do about this error.
    pub fn advice(&self) -> &'static str {
        match self {
            CliError::Kafka { error_code, .. } => advice(*error_code),
            CliError::Connect { .. }
            | CliError::NoBootstrap { .. }
            | CliError::Resolve { .. }
            | CliError::Unreachable { .. } => {
                "check that a broker listens there (`sluice serve` prints its address) and that \
                 --bootstrap-server names its client listener, not its controller listener"
            }
            CliError::Timeout { .. } => {
                "the broker is up but slow or stuck; check its log, and that a majority of the \
                 controller quorum runs, then retry (a larger --timeout-ms waits longer)"
            }
            CliError::Request { .. } => {
                "the connection broke or the answer did not parse; retry, and check the \
                 broker's log if it happens again"
            }
            CliError::Unsupported { .. } => {
                "the broker is older or newer than this tool's protocol range; use a matching \
                 Kafka tool"
            }
            CliError::UnknownBroker { .. } => {
                "use an id from `sluice cluster info`; a stopped or fenced broker is not listed"
            }
            CliError::GroupNotEmpty { .. } => {
                "stop the group's consumers first (they would commit over the reset) and wait \
                 until `sluice group describe` shows it Empty"
            }
            CliError::NothingToShift { .. } => {
                "commit an offset first, or use --to-earliest, --to-latest or --to-datetime"
            }
            CliError::NoLeader { .. } => {
                "the partition is offline; bring one of its replicas back, or see `sluice \
                 leader-election --unclean`"
            }
            CliError::NoSuchPartition { .. } => {
                "`sluice topic describe TOPIC` lists its partitions"
            }
            CliError::BadAddress { .. }
            | CliError::NotAPair { .. }
            | CliError::BadDatetime { .. }
            | CliError::BadTopicPartitions { .. }
            | CliError::NothingToChange => "see --help for the expected form",
            CliError::Runtime(_)
            | CliError::Stdin(_)
            | CliError::Records { .. }
            | CliError::Encode(_) => "this is a local problem; the message says what failed",
        }
    }
}

/// What to do about a Kafka error code, for an operator at a terminal.
pub fn advice(error_code: i16) -> &'static str {
    match error_code {
        code::UNKNOWN_TOPIC_OR_PARTITION => {
            "check the name with `sluice topic list`; create a topic with `sluice topic create`"
        }
        code::LEADER_NOT_AVAILABLE | code::NOT_LEADER_OR_FOLLOWER => {
            "leadership is moving (a broker started or stopped); retry in a few seconds, and \
             look for offline partitions with `sluice cluster info`"
        }
        code::REQUEST_TIMED_OUT => {
            "the cluster did not finish in time; check that a majority of the controller quorum \
             runs (`sluice cluster info`), then retry"
        }
        code::COORDINATOR_LOAD_IN_PROGRESS
        | code::COORDINATOR_NOT_AVAILABLE
        | code::NOT_COORDINATOR => {
            "the group's coordinator is moving or still loading; retry in a few seconds"
        }
        code::INVALID_TOPIC_EXCEPTION => {
            "a topic name is 1 to 249 of the characters a-z A-Z 0-9 . _ -, and not . or .."
        }
        code::NOT_ENOUGH_REPLICAS | code::NOT_ENOUGH_REPLICAS_AFTER_APPEND => {
            "fewer replicas are in sync than min.insync.replicas; bring brokers back, or lower \
             the topic's min.insync.replicas"
        }
        code::TOPIC_ALREADY_EXISTS => {
            "pick another name, or look at the existing topic with `sluice topic describe`"
        }
        code::INVALID_PARTITIONS => "give --partitions of 1 or more",
        code::INVALID_REPLICATION_FACTOR => {
            "the replication factor can be at most the number of live brokers, which `sluice \
             cluster info` lists"
        }
        code::INVALID_CONFIG => {
            "the broker refused a key or value (the message says which); `sluice config \
             describe` lists the keys and their values in force"
        }
        code::POLICY_VIOLATION => "the broker's policy refused the change; the message says why",
        code::NOT_CONTROLLER => "the controller is changing; retry in a few seconds",
        code::INVALID_REQUEST => {
            "the broker refused the request; its message says why (a broker config that is \
             not dynamic needs a restart with the new value in server.properties)"
        }
        code::UNSUPPORTED_VERSION => "the broker does not serve this request at this version",
        code::NON_EMPTY_GROUP => {
            "the group still has members; stop its consumers and wait until it is Empty"
        }
        code::GROUP_ID_NOT_FOUND => "check the group's name with `sluice group list`",
        code::INVALID_GROUP_ID => "give a non-empty group id",
        code::REBALANCE_IN_PROGRESS | code::ILLEGAL_GENERATION | code::UNKNOWN_MEMBER_ID => {
            "the group has active members; stop its consumers and wait until it is Empty"
        }
        code::PREFERRED_LEADER_NOT_AVAILABLE => {
            "the preferred replica is not alive or not in sync; bring it back and let it catch up"
        }
        code::ELIGIBLE_LEADERS_NOT_AVAILABLE => {
            "no replica in sync is alive; bring one back, or run `sluice leader-election \
             --unclean` and accept that acknowledged records may be lost"
        }
        code::ELECTION_NOT_NEEDED => "nothing to do: the partition already has that leader",
        code::KAFKA_STORAGE_ERROR => {
            "a broker failed to read or write its disk; check the log and the disk of the \
             partition's leader"
        }
        code::OFFSET_OUT_OF_RANGE => {
            "the offset is outside the log; `sluice topic describe` shows its bounds"
        }
        29..=31 => "this client lacks the ACL the request needs; ask the cluster's administrator",
        code::UNKNOWN_SERVER_ERROR => "the broker hit an unexpected error; its log says more",
        _ => "see Kafka's documentation of this error",
    }
}
