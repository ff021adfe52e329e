//! `sluice config`: describe, set and delete configs of a broker, of the cluster default, or
//! of a topic (DescribeConfigs, IncrementalAlterConfigs), as kafka-configs does.

use clap::{ArgGroup, Args, Subcommand};
use kafka_protocol::messages::describe_configs_request::DescribeConfigsResource;
use kafka_protocol::messages::incremental_alter_configs_request::{
    AlterConfigsResource, AlterableConfig,
};
use kafka_protocol::messages::{DescribeConfigsRequest, IncrementalAlterConfigsRequest};
use kafka_protocol::protocol::StrBytes;
use serde_json::json;

use super::error::CliError;
use super::output::{Printed, Table};
use super::session::{Conn, Session};
use super::topic::pair;
use super::Connection;

/// DescribeConfigs and IncrementalAlterConfigs resource types.
pub const RESOURCE_TOPIC: i8 = 2;
pub const RESOURCE_BROKER: i8 = 4;

/// IncrementalAlterConfigs operations.
const OP_SET: i8 = 0;
const OP_DELETE: i8 = 1;

#[derive(Args)]
pub struct ConfigCommand {
    #[command(flatten)]
    pub connection: Connection,
    #[command(subcommand)]
    action: ConfigAction,
}

/// Which configs: exactly one of a broker, the cluster default, or a topic.
#[derive(Args, Clone)]
#[command(group(
    ArgGroup::new("resource").required(true).args(["broker", "broker_default", "topic"])
))]
struct Target {
    /// A broker's configs (its dynamic ones can be changed), asked of that broker.
    #[arg(long, value_name = "ID")]
    broker: Option<i32>,
    /// The cluster-wide default of the dynamic broker configs.
    #[arg(long)]
    broker_default: bool,
    /// A topic's configs.
    #[arg(long, value_name = "TOPIC")]
    topic: Option<String>,
}

#[derive(Subcommand)]
enum ConfigAction {
    /// Every config of the resource with its value and where the value comes from.
    Describe {
        #[command(flatten)]
        target: Target,
        /// Only these keys; repeat as needed.
        #[arg(long = "key", value_name = "KEY")]
        keys: Vec<String>,
    },
    /// Set configs (IncrementalAlterConfigs SET).
    Set {
        #[command(flatten)]
        target: Target,
        /// KEY=VALUE pairs.
        #[arg(required = true, value_name = "KEY=VALUE")]
        pairs: Vec<String>,
    },
    /// Remove configs, so the next layer's value applies (IncrementalAlterConfigs DELETE).
    Delete {
        #[command(flatten)]
        target: Target,
        /// The keys to remove.
        #[arg(required = true, value_name = "KEY")]
        keys: Vec<String>,
    },
}

/// A resource whose configs are described or changed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Resource {
    Broker(i32),
    ClusterDefault,
    Topic(String),
}

impl Resource {
    fn from(target: Target) -> Resource {
        match (target.broker, target.topic) {
            (Some(id), _) => Resource::Broker(id),
            (None, Some(topic)) => Resource::Topic(topic),
            (None, None) => Resource::ClusterDefault,
        }
    }

    fn kind(&self) -> i8 {
        match self {
            Resource::Topic(_) => RESOURCE_TOPIC,
            Resource::Broker(_) | Resource::ClusterDefault => RESOURCE_BROKER,
        }
    }

    /// The resource name on the wire: a broker's id, `""` for the cluster default.
    fn name(&self) -> String {
        match self {
            Resource::Broker(id) => id.to_string(),
            Resource::ClusterDefault => String::new(),
            Resource::Topic(topic) => topic.clone(),
        }
    }

    fn shown(&self) -> String {
        match self {
            Resource::Broker(id) => format!("broker {id}"),
            Resource::ClusterDefault => "the cluster default".to_owned(),
            Resource::Topic(topic) => format!("topic {topic}"),
        }
    }

    /// Where to send a request about this resource: a broker's own configs are asked of
    /// that broker, as Kafka requires; anything else of the bootstrap broker.
    async fn conn<'a>(&self, session: &'a mut Session) -> Result<&'a mut Conn, CliError> {
        match self {
            Resource::Broker(id) => session.broker(*id).await,
            _ => Ok(session.bootstrap()),
        }
    }
}

pub async fn run(command: ConfigCommand) -> Result<Printed, CliError> {
    let mut session = Session::open(&command.connection).await?;
    match command.action {
        ConfigAction::Describe { target, keys } => {
            describe(&mut session, &Resource::from(target), &keys).await
        }
        ConfigAction::Set { target, pairs } => {
            alter(&mut session, &Resource::from(target), &pairs, &[]).await
        }
        ConfigAction::Delete { target, keys } => {
            alter(&mut session, &Resource::from(target), &[], &keys).await
        }
    }
}

/// Kafka's name of a DescribeConfigs config source.
fn source_name(source: i8) -> &'static str {
    match source {
        1 => "DYNAMIC_TOPIC_CONFIG",
        2 => "DYNAMIC_BROKER_CONFIG",
        3 => "DYNAMIC_DEFAULT_BROKER_CONFIG",
        4 => "STATIC_BROKER_CONFIG",
        5 => "DEFAULT_CONFIG",
        6 => "DYNAMIC_BROKER_LOGGER_CONFIG",
        7 => "CLIENT_METRICS_CONFIG",
        8 => "GROUP_CONFIG",
        _ => "UNKNOWN",
    }
}

async fn describe(
    session: &mut Session,
    resource: &Resource,
    keys: &[String],
) -> Result<Printed, CliError> {
    let wanted = (!keys.is_empty()).then(|| {
        keys.iter()
            .map(|k| StrBytes::from_string(k.clone()))
            .collect()
    });
    let request =
        DescribeConfigsRequest::default().with_resources(vec![DescribeConfigsResource::default()
            .with_resource_type(resource.kind())
            .with_resource_name(StrBytes::from_string(resource.name()))
            .with_configuration_keys(wanted)]);
    let answer = resource.conn(session).await?.call(&request).await?;
    let Some(result) = answer.results.first() else {
        return Err(CliError::Kafka {
            api: "DescribeConfigs",
            resource: resource.shown(),
            error_code: sluice_broker::error_codes::UNKNOWN_SERVER_ERROR,
            message: Some("the answer described nothing".to_owned()),
        });
    };
    let message = result.error_message.as_deref();
    CliError::check(
        "DescribeConfigs",
        || resource.shown(),
        result.error_code,
        message,
    )?;
    let mut configs: Vec<_> = result.configs.iter().collect();
    configs.sort_by(|a, b| a.name.as_str().cmp(b.name.as_str()));
    let mut table = Table::new(&["NAME", "VALUE", "SOURCE", "READ-ONLY"]);
    let mut listed = Vec::new();
    for config in configs {
        let value = if config.is_sensitive {
            Some("(sensitive)".to_owned())
        } else {
            config.value.as_ref().map(|v| v.to_string())
        };
        table.row(vec![
            config.name.to_string(),
            value.clone().unwrap_or_else(|| "(unset)".to_owned()),
            source_name(config.config_source).to_owned(),
            config.read_only.to_string(),
        ]);
        listed.push(json!({
            "name": config.name.as_str(),
            "value": value,
            "source": source_name(config.config_source),
            "read_only": config.read_only,
            "sensitive": config.is_sensitive,
        }));
    }
    let text = format!("Configs of {}:\n{}", resource.shown(), table.render());
    let json = json!({ "resource": resource.shown(), "configs": listed });
    Ok(Printed::new(text, json))
}

/// IncrementalAlterConfigs: `sets` (KEY=VALUE) and `deletes` (KEY) on one resource.
pub async fn alter(
    session: &mut Session,
    resource: &Resource,
    sets: &[String],
    deletes: &[String],
) -> Result<Printed, CliError> {
    if sets.is_empty() && deletes.is_empty() {
        return Err(CliError::NothingToChange);
    }
    let mut configs = Vec::new();
    let mut changes = Vec::new();
    for given in sets {
        let (key, value) = pair(given)?;
        changes.push(json!({ "name": key, "operation": "set", "value": value }));
        configs.push(
            AlterableConfig::default()
                .with_name(StrBytes::from_string(key))
                .with_config_operation(OP_SET)
                .with_value(Some(StrBytes::from_string(value))),
        );
    }
    for key in deletes {
        changes.push(json!({ "name": key, "operation": "delete" }));
        configs.push(
            AlterableConfig::default()
                .with_name(StrBytes::from_string(key.clone()))
                .with_config_operation(OP_DELETE),
        );
    }
    let request = IncrementalAlterConfigsRequest::default().with_resources(vec![
        AlterConfigsResource::default()
            .with_resource_type(resource.kind())
            .with_resource_name(StrBytes::from_string(resource.name()))
            .with_configs(configs),
    ]);
    let answer = resource.conn(session).await?.call(&request).await?;
    let Some(result) = answer.responses.first() else {
        return Err(CliError::Kafka {
            api: "IncrementalAlterConfigs",
            resource: resource.shown(),
            error_code: sluice_broker::error_codes::UNKNOWN_SERVER_ERROR,
            message: Some("the answer said nothing of the resource".to_owned()),
        });
    };
    let message = result.error_message.as_deref();
    CliError::check(
        "IncrementalAlterConfigs",
        || resource.shown(),
        result.error_code,
        message,
    )?;
    let mut text = format!("Changed the configs of {}:\n", resource.shown());
    for key_value in sets {
        text.push_str(&format!("  set {key_value}\n"));
    }
    for key in deletes {
        text.push_str(&format!("  deleted {key}\n"));
    }
    let json = json!({ "resource": resource.shown(), "changes": changes });
    Ok(Printed::new(text, json))
}
