//! The broker a sweep runs against. A managed broker is started with each combination of
//! broker parameters as `--override key=value` (Kafka's and Sluice's form) on a fresh data
//! directory, and stopped with SIGTERM before the next combination. An external broker gets
//! the parameters as dynamic broker configs through IncrementalAlterConfigs.

use std::net::{SocketAddr, TcpStream, ToSocketAddrs};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use kafka_protocol::messages::incremental_alter_configs_request::{
    AlterConfigsResource, AlterableConfig,
};
use kafka_protocol::messages::{ApiKey, ApiVersionsRequest, IncrementalAlterConfigsRequest};
use kafka_protocol::protocol::StrBytes;

use super::plan::BrokerTarget;
use crate::cluster;
use crate::error::error_name;

/// How long a managed broker may take to accept connections, and to exit once asked.
const START_TIMEOUT: Duration = Duration::from_secs(60);
const STOP_TIMEOUT: Duration = Duration::from_secs(30);
const POLL: Duration = Duration::from_millis(100);
/// Kafka's ConfigResource type for a broker, and the SET operation.
const RESOURCE_TYPE_BROKER: i8 = 4;
const OPERATION_SET: i8 = 0;

pub struct Broker {
    target: BrokerTarget,
    /// The parameters currently applied; None before the first run.
    applied: Option<Vec<(String, String)>>,
    running: Option<Running>,
    starts: usize,
}

struct Running {
    child: Child,
    data: PathBuf,
}

impl Broker {
    pub fn new(target: BrokerTarget) -> Self {
        Self {
            target,
            applied: None,
            running: None,
            starts: 0,
        }
    }

    /// Makes the broker run with `params` and returns its bootstrap address.
    pub fn apply(&mut self, params: &[(String, String)]) -> Result<String, String> {
        let unchanged = self.applied.as_deref() == Some(params);
        match self.target.clone() {
            BrokerTarget::Managed {
                command,
                data_dir,
                listener,
            } => {
                if !unchanged || self.running.is_none() {
                    self.stop();
                    self.applied = None;
                    self.start(&command, &data_dir, &listener, params)?;
                }
                self.applied = Some(params.to_vec());
                Ok(listener)
            }
            BrokerTarget::External {
                bootstrap,
                broker_id,
            } => {
                if !unchanged && !params.is_empty() {
                    alter_broker_configs(&bootstrap, &broker_id, params)?;
                }
                self.applied = Some(params.to_vec());
                Ok(bootstrap)
            }
        }
    }

    fn start(
        &mut self,
        command: &[String],
        data_dir: &std::path::Path,
        listener: &str,
        params: &[(String, String)],
    ) -> Result<(), String> {
        self.starts += 1;
        let data = data_dir.join(format!("broker-{}", self.starts));
        if data.exists() {
            std::fs::remove_dir_all(&data).map_err(|e| format!("{}: {e}", data.display()))?;
        }
        let addr = listener
            .to_socket_addrs()
            .ok()
            .and_then(|mut addrs| addrs.next())
            .ok_or_else(|| format!("{listener} is not an address"))?;
        // Sluice binds with SO_REUSEPORT, so a second broker on a taken port would start
        // and silently share the connections with the first one.
        if TcpStream::connect_timeout(&addr, POLL).is_ok() {
            return Err(format!("something already listens on {listener}"));
        }
        let (program, rest) = command.split_first().ok_or("empty broker command")?;
        let mut process = Command::new(program);
        process
            .args(rest)
            .arg("--override")
            .arg(format!("listeners=PLAINTEXT://{listener}"))
            .arg("--override")
            .arg(format!("log.dirs={}", data.display()));
        for (key, value) in params {
            process.arg("--override").arg(format!("{key}={value}"));
        }
        eprintln!(
            "starting broker: {program} {} (data in {})",
            params
                .iter()
                .map(|(k, v)| format!("--override {k}={v}"))
                .collect::<Vec<_>>()
                .join(" "),
            data.display()
        );
        let mut child = process
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()
            .map_err(|e| format!("cannot run {program}: {e}"))?;
        if let Err(reason) = wait_listening(&mut child, addr) {
            let _ = child.kill();
            let _ = child.wait();
            return Err(reason);
        }
        self.running = Some(Running { child, data });
        Ok(())
    }

    /// Stops a managed broker (SIGTERM, then SIGKILL after a deadline) and removes its data.
    pub fn stop(&mut self) {
        let Some(mut running) = self.running.take() else {
            return;
        };
        let pid = running.child.id().to_string();
        // std has no SIGTERM; kill(1) sends it, and a clean stop flushes and closes the logs.
        let _ = Command::new("kill").arg("-TERM").arg(&pid).status();
        let deadline = Instant::now() + STOP_TIMEOUT;
        loop {
            match running.child.try_wait() {
                Ok(Some(_)) => break,
                Ok(None) if Instant::now() < deadline => std::thread::sleep(POLL),
                _ => {
                    eprintln!("broker {pid} did not stop within {STOP_TIMEOUT:?}; killing it");
                    let _ = running.child.kill();
                    let _ = running.child.wait();
                    break;
                }
            }
        }
        let _ = std::fs::remove_dir_all(&running.data);
    }
}

impl Drop for Broker {
    fn drop(&mut self) {
        self.stop();
    }
}

/// Waits until the broker accepts connections, or exits, or the deadline passes.
fn wait_listening(child: &mut Child, addr: SocketAddr) -> Result<(), String> {
    let deadline = Instant::now() + START_TIMEOUT;
    loop {
        if let Ok(Some(status)) = child.try_wait() {
            return Err(format!("the broker exited with {status}"));
        }
        if TcpStream::connect_timeout(&addr, POLL).is_ok() {
            return Ok(());
        }
        if Instant::now() >= deadline {
            return Err(format!("nothing listens on {addr} after {START_TIMEOUT:?}"));
        }
        std::thread::sleep(POLL);
    }
}

/// Sets `params` as dynamic configs of broker `broker_id` with IncrementalAlterConfigs.
fn alter_broker_configs(
    bootstrap: &str,
    broker_id: &str,
    params: &[(String, String)],
) -> Result<(), String> {
    let addr = bootstrap
        .to_socket_addrs()
        .ok()
        .and_then(|mut addrs| addrs.next())
        .ok_or_else(|| format!("{bootstrap} is not an address"))?;
    let runtime = compio::runtime::Runtime::new().map_err(|e| e.to_string())?;
    runtime.block_on(async {
        let mut client = cluster::connect(addr, "sluice-bench-sweep".to_owned())
            .await
            .map_err(|e| e.to_string())?;
        let offered = client
            .send_request(3, &ApiVersionsRequest::default())
            .await
            .map_err(|e| e.to_string())?;
        let version = offered
            .api_keys
            .iter()
            .find(|api| api.api_key == ApiKey::IncrementalAlterConfigs as i16)
            .filter(|api| api.min_version <= 1)
            .map(|api| api.max_version.min(1))
            .ok_or("the broker does not offer IncrementalAlterConfigs v0 or v1")?;
        let configs = params
            .iter()
            .map(|(key, value)| {
                AlterableConfig::default()
                    .with_name(StrBytes::from_string(key.clone()))
                    .with_config_operation(OPERATION_SET)
                    .with_value(Some(StrBytes::from_string(value.clone())))
            })
            .collect();
        let request = IncrementalAlterConfigsRequest::default().with_resources(vec![
            AlterConfigsResource::default()
                .with_resource_type(RESOURCE_TYPE_BROKER)
                .with_resource_name(StrBytes::from_string(broker_id.to_owned()))
                .with_configs(configs),
        ]);
        let response = client
            .send_request(version, &request)
            .await
            .map_err(|e| e.to_string())?;
        for result in &response.responses {
            if result.error_code != 0 {
                let message = result.error_message.as_deref().unwrap_or("");
                return Err(format!("{} {message}", error_name(result.error_code)));
            }
        }
        eprintln!(
            "broker {broker_id} at {bootstrap}: set {}",
            params
                .iter()
                .map(|(k, v)| format!("{k}={v}"))
                .collect::<Vec<_>>()
                .join(" ")
        );
        Ok(())
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_managed_broker_refuses_a_port_already_taken() {
        let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let listener = taken.local_addr().unwrap().to_string();
        let data = std::env::temp_dir().join(format!("sluice-sweep-test-{}", std::process::id()));
        let mut broker = Broker::new(BrokerTarget::Managed {
            command: vec!["true".to_owned()],
            data_dir: data,
            listener: listener.clone(),
        });
        let refused = broker.apply(&[]).unwrap_err();
        assert_eq!(refused, format!("something already listens on {listener}"));
    }

    #[test]
    fn a_broker_that_exits_at_once_is_reported() {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap();
        let data = std::env::temp_dir().join(format!("sluice-sweep-exit-{}", std::process::id()));
        let mut broker = Broker::new(BrokerTarget::Managed {
            command: vec!["false".to_owned()],
            data_dir: data,
            listener: port.to_string(),
        });
        let failed = broker.apply(&[("log.segment.bytes".to_owned(), "1".to_owned())]);
        assert!(failed.unwrap_err().starts_with("the broker exited with"));
    }
}
