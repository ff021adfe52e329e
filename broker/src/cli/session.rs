//! Connections for an operator command: the bootstrap broker, others by id as Metadata names
//! them, and the group coordinator. Each connection negotiates versions with ApiVersions
//! once, and every request is bounded in time (`--timeout-ms`) and in size (the answer's
//! frame is checked against `RESPONSE_SIZE_MAX` before anything is allocated for it).

use std::collections::BTreeMap;
use std::net::{SocketAddr, ToSocketAddrs};
use std::time::Duration;

use kafka_protocol::messages::api_versions_response::ApiVersion;
use kafka_protocol::messages::find_coordinator_response::FindCoordinatorResponse;
use kafka_protocol::messages::metadata_request::MetadataRequestTopic;
use kafka_protocol::messages::{
    ApiKey, ApiVersionsRequest, FindCoordinatorRequest, MetadataRequest, MetadataResponse,
    ProduceRequest, ProduceResponse, TopicName,
};
use kafka_protocol::protocol::{Request, StrBytes};
use sluice_broker::apis;
use sluice_net::client::Client;

use super::error::CliError;
use super::Connection;

/// The versions this tool builds each request for: (api, lowest, highest). Each range starts
/// where the fields the tool sets exist (Metadata 4 can refuse to create topics) and ends
/// where it stops knowing the request's shape (Fetch and Produce 13 name topics by id).
const SPOKEN: &[(ApiKey, i16, i16)] = &[
    (ApiKey::Produce, 3, 9),
    (ApiKey::Fetch, 4, 12),
    (ApiKey::ListOffsets, 1, 7),
    (ApiKey::Metadata, 4, 12),
    (ApiKey::OffsetCommit, 2, 8),
    (ApiKey::OffsetFetch, 2, 8),
    (ApiKey::FindCoordinator, 1, 4),
    (ApiKey::DescribeGroups, 0, 5),
    (ApiKey::ListGroups, 0, 4),
    (ApiKey::CreateTopics, 2, 7),
    (ApiKey::DeleteTopics, 1, 6),
    (ApiKey::DescribeConfigs, 1, 4),
    (ApiKey::DeleteGroups, 0, 2),
    (ApiKey::ElectLeaders, 1, 2),
    (ApiKey::IncrementalAlterConfigs, 0, 1),
    (ApiKey::DescribeQuorum, 0, 2),
];

/// ApiVersions v3 is flexible and answered by every broker since Kafka 2.4.
const API_VERSIONS_VERSION: i16 = 3;

/// FindCoordinator's key type for a consumer group.
const COORDINATOR_GROUP: i8 = 0;

/// One connection, with the versions both sides speak.
pub struct Conn {
    client: Client,
    pub address: SocketAddr,
    offered: Vec<ApiVersion>,
    timeout: Duration,
}

impl Conn {
    pub async fn open(address: SocketAddr, timeout: Duration) -> Result<Self, CliError> {
        let connecting = Client::connect(address);
        let client = match compio::time::timeout(timeout, connecting).await {
            Ok(Ok(client)) => client,
            Ok(Err(source)) => return Err(CliError::Connect { address, source }),
            Err(_) => return Err(timed_out("connect", address, timeout)),
        };
        let mut conn = Conn {
            client,
            address,
            offered: Vec::new(),
            timeout,
        };
        conn.client.set_client_id("sluice-admin");
        let request = ApiVersionsRequest::default()
            .with_client_software_name(StrBytes::from_static_str("sluice-admin"))
            .with_client_software_version(StrBytes::from_static_str(env!("CARGO_PKG_VERSION")));
        let answer = conn.send(API_VERSIONS_VERSION, &request).await?;
        CliError::check(
            "ApiVersions",
            || address.to_string(),
            answer.error_code,
            None,
        )?;
        conn.offered = answer.api_keys;
        Ok(conn)
    }

    /// The highest version of `R` both this tool and the broker speak.
    pub fn version<R: Request>(&self) -> Result<i16, CliError> {
        let (min, max) = SPOKEN
            .iter()
            .find(|(api, _, _)| *api as i16 == R::KEY)
            .map(|&(_, min, max)| (min, max))
            .unwrap_or((0, -1));
        self.offered
            .iter()
            .find(|offer| offer.api_key == R::KEY)
            .and_then(|offer| {
                let high = offer.max_version.min(max);
                (offer.min_version.max(min) <= high).then_some(high)
            })
            .ok_or(CliError::Unsupported {
                api: apis::name(R::KEY),
                address: self.address,
                min,
                max,
            })
    }

    /// How long a request may wait for its answer.
    pub fn timeout(&self) -> Duration {
        self.timeout
    }

    /// Sends `request` at the negotiated version and waits for the answer.
    pub async fn call<R: Request>(&mut self, request: &R) -> Result<R::Response, CliError> {
        let version = self.version::<R>()?;
        self.send(version, request).await
    }

    /// Sends `request` at `version` and waits for the answer, at most the timeout.
    pub async fn send<R: Request>(
        &mut self,
        version: i16,
        request: &R,
    ) -> Result<R::Response, CliError> {
        let address = self.address;
        let exchange = self.client.send_request(version, request);
        match compio::time::timeout(self.timeout, exchange).await {
            Ok(Ok(answer)) => Ok(answer),
            Ok(Err(source)) => Err(CliError::Request {
                api: apis::name(R::KEY),
                address,
                source,
            }),
            Err(_) => Err(timed_out(&apis::name(R::KEY), address, self.timeout)),
        }
    }
}

impl Conn {
    /// Produces an encoded batch to one partition; with acks 0 nothing comes back and the
    /// answer is empty.
    pub async fn produce(
        &mut self,
        topic: &str,
        partition: i32,
        acks: i16,
        records: bytes::Bytes,
    ) -> Result<ProduceResponse, CliError> {
        let version = self.version::<ProduceRequest>()?;
        let timeout_ms = i32::try_from(self.timeout.as_millis()).unwrap_or(i32::MAX);
        let address = self.address;
        let exchange = self
            .client
            .produce(version, topic, partition, acks, timeout_ms, records);
        match compio::time::timeout(self.timeout, exchange).await {
            Ok(Ok(answer)) => Ok(answer),
            Ok(Err(source)) => Err(CliError::Request {
                api: "Produce".to_owned(),
                address,
                source,
            }),
            Err(_) => Err(timed_out("Produce", address, self.timeout)),
        }
    }
}

fn timed_out(api: &str, address: SocketAddr, timeout: Duration) -> CliError {
    CliError::Timeout {
        api: api.to_owned(),
        address,
        timeout_ms: timeout.as_millis(),
    }
}

/// `host:port` to the addresses it resolves to.
pub fn resolve(given: &str) -> Result<Vec<SocketAddr>, CliError> {
    let given = given.trim();
    let bad = || CliError::BadAddress {
        given: given.to_owned(),
    };
    let (host, port) = given.rsplit_once(':').ok_or_else(bad)?;
    let port: u16 = port.parse().map_err(|_| bad())?;
    let host = host.trim_start_matches('[').trim_end_matches(']');
    if host.is_empty() {
        return Err(bad());
    }
    let found = (host, port)
        .to_socket_addrs()
        .map_err(|source| CliError::Resolve {
            given: given.to_owned(),
            source,
        })?;
    Ok(found.collect())
}

/// A command's view of the cluster: the bootstrap connection, and connections to other
/// brokers made on first use.
pub struct Session {
    bootstrap: Conn,
    /// Broker id to its advertised `host:port`, from the latest Metadata answer; resolved
    /// when a connection to it is first needed.
    addresses: BTreeMap<i32, String>,
    others: BTreeMap<i32, Conn>,
    /// Brokers that could not be reached, with why: asked again, they fail at once rather
    /// than after another timeout.
    unreachable: BTreeMap<i32, String>,
    timeout: Duration,
}

impl Session {
    /// Connects to the first broker of `--bootstrap-server` that answers.
    pub async fn open(connection: &Connection) -> Result<Self, CliError> {
        let timeout = connection.timeout();
        let mut last = None;
        for given in connection.bootstrap_server.split(',') {
            let addresses = match resolve(given) {
                Ok(addresses) => addresses,
                Err(error) => {
                    last = Some(error);
                    continue;
                }
            };
            for address in addresses {
                match Conn::open(address, timeout).await {
                    Ok(bootstrap) => {
                        return Ok(Session {
                            bootstrap,
                            addresses: BTreeMap::new(),
                            others: BTreeMap::new(),
                            unreachable: BTreeMap::new(),
                            timeout,
                        })
                    }
                    Err(error) => last = Some(error),
                }
            }
        }
        let last = last.unwrap_or(CliError::BadAddress {
            given: connection.bootstrap_server.clone(),
        });
        match last {
            // With one address there is nothing to add to its own error.
            single if !connection.bootstrap_server.contains(',') => Err(single),
            last => Err(CliError::NoBootstrap {
                given: connection.bootstrap_server.clone(),
                last: Box::new(last),
            }),
        }
    }

    pub fn bootstrap(&mut self) -> &mut Conn {
        &mut self.bootstrap
    }

    /// Metadata for `topics` (all of them for `None`, none for an empty list), never creating
    /// a topic; remembers where each broker is.
    pub async fn metadata(
        &mut self,
        topics: Option<&[String]>,
    ) -> Result<MetadataResponse, CliError> {
        let request = MetadataRequest::default()
            .with_topics(topics.map(|names| {
                names
                    .iter()
                    .map(|name| MetadataRequestTopic::default().with_name(Some(topic_name(name))))
                    .collect()
            }))
            .with_allow_auto_topic_creation(false);
        let answer = self.bootstrap.call(&request).await?;
        for broker in &answer.brokers {
            let advertised = format!("{}:{}", broker.host.as_str(), broker.port);
            self.addresses.insert(broker.node_id.0, advertised);
        }
        Ok(answer)
    }

    /// The broker ids Metadata named last, in order.
    pub fn broker_ids(&self) -> Vec<i32> {
        self.addresses.keys().copied().collect()
    }

    /// A connection to broker `id`, opened on first use.
    pub async fn broker(&mut self, id: i32) -> Result<&mut Conn, CliError> {
        if self.addresses.is_empty() {
            self.metadata(Some(&[])).await?;
        }
        if !self.others.contains_key(&id) {
            let Some(advertised) = self.addresses.get(&id) else {
                let known: Vec<String> = self.addresses.keys().map(i32::to_string).collect();
                return Err(CliError::UnknownBroker {
                    id,
                    known: known.join(", "),
                });
            };
            let Some(&address) = resolve(advertised)?.first() else {
                return Err(CliError::BadAddress {
                    given: advertised.clone(),
                });
            };
            if let Some(reason) = self.unreachable.get(&id) {
                let reason = reason.clone();
                return Err(CliError::Unreachable { id, reason });
            }
            match Conn::open(address, self.timeout).await {
                Ok(conn) => self.others.insert(id, conn),
                Err(error) => {
                    self.unreachable.insert(id, error.to_string());
                    return Err(error);
                }
            };
        }
        self.others
            .get_mut(&id)
            .ok_or_else(|| CliError::UnknownBroker {
                id,
                known: String::new(),
            })
    }

    /// A connection to the coordinator of `group`, found with FindCoordinator, and its id.
    pub async fn coordinator(&mut self, group: &str) -> Result<(i32, &mut Conn), CliError> {
        let version = self.bootstrap.version::<FindCoordinatorRequest>()?;
        let mut request = FindCoordinatorRequest::default().with_key_type(COORDINATOR_GROUP);
        // Version 4 batched the keys.
        if version >= 4 {
            request.coordinator_keys = vec![StrBytes::from_string(group.to_owned())];
        } else {
            request.key = StrBytes::from_string(group.to_owned());
        }
        let answer = self.bootstrap.send(version, &request).await?;
        let (node_id, host, port) = coordinator_of(&answer, version, group)?;
        // A coordinator that Metadata has not listed yet is reached where the answer says.
        self.addresses
            .entry(node_id)
            .or_insert_with(|| format!("{host}:{port}"));
        let conn = self.broker(node_id).await?;
        Ok((node_id, conn))
    }
}

/// (node id, host, port) of the coordinator named in a FindCoordinator answer.
fn coordinator_of(
    answer: &FindCoordinatorResponse,
    version: i16,
    group: &str,
) -> Result<(i32, String, i32), CliError> {
    let resource = || format!("group {group}");
    if version < 4 {
        let message = answer.error_message.as_deref();
        CliError::check("FindCoordinator", resource, answer.error_code, message)?;
        return Ok((answer.node_id.0, answer.host.to_string(), answer.port));
    }
    let Some(found) = answer.coordinators.iter().find(|c| c.key.as_str() == group) else {
        return Err(CliError::Kafka {
            api: "FindCoordinator",
            resource: resource(),
            error_code: sluice_broker::error_codes::COORDINATOR_NOT_AVAILABLE,
            message: Some("the answer named no coordinator for the group".to_owned()),
        });
    };
    let message = found.error_message.as_deref();
    CliError::check("FindCoordinator", resource, found.error_code, message)?;
    Ok((found.node_id.0, found.host.to_string(), found.port))
}

pub fn topic_name(name: &str) -> TopicName {
    TopicName(StrBytes::from_string(name.to_owned()))
}
