//! The command line (every flag also from a `NETTING_PROXY_*` variable, as a pod spec sets
//! them) and its checks.

use std::net::SocketAddr;
use std::time::Duration;

use clap::Parser;
use netting_discovery_client::{ClientConfig, Identity, InvalidConfig, Subscription};

/// Netting's sidecar proxy.
#[derive(Debug, Clone, Parser)]
#[command(name = "netting-proxy", version, about)]
pub struct Args {
    /// Control-plane replicas (`host:port`, comma separated); any of them will do.
    #[arg(
        long,
        env = "NETTING_PROXY_CONTROL_PLANE",
        value_delimiter = ',',
        required = true
    )]
    pub control_plane: Vec<String>,

    /// This pod's name and namespace, as the control plane knows them.
    #[arg(long, env = "NETTING_PROXY_POD")]
    pub pod: String,
    #[arg(long, env = "NETTING_PROXY_NAMESPACE")]
    pub namespace: String,
    #[arg(long, env = "NETTING_PROXY_SERVICE_ACCOUNT", default_value = "default")]
    pub service_account: String,

    /// Namespaces whose services this proxy routes to (default: its own).
    #[arg(
        long = "subscribe-namespace",
        env = "NETTING_PROXY_SUBSCRIBE_NAMESPACES",
        value_delimiter = ','
    )]
    pub subscribe_namespaces: Vec<String>,
    /// Single services (`namespace/name`) to route to as well.
    #[arg(
        long = "subscribe-service",
        env = "NETTING_PROXY_SUBSCRIBE_SERVICES",
        value_delimiter = ','
    )]
    pub subscribe_services: Vec<String>,

    /// Where redirected outbound connections arrive (netting-init's `--outbound-port`).
    #[arg(
        long,
        env = "NETTING_PROXY_OUTBOUND_LISTEN",
        default_value = "0.0.0.0:15001"
    )]
    pub outbound_listen: SocketAddr,
    /// Where redirected inbound connections arrive (netting-init's `--inbound-port`).
    #[arg(
        long,
        env = "NETTING_PROXY_INBOUND_LISTEN",
        default_value = "0.0.0.0:15006"
    )]
    pub inbound_listen: SocketAddr,
    /// `/metrics`, `/ready`, `/config`; exclude this port from inbound redirection.
    #[arg(
        long,
        env = "NETTING_PROXY_ADMIN_LISTEN",
        default_value = "0.0.0.0:15020"
    )]
    pub admin_listen: SocketAddr,

    /// Time allowed to open a connection to an upstream endpoint.
    #[arg(long, env = "NETTING_PROXY_CONNECT_TIMEOUT", default_value = "1s", value_parser = parse_duration)]
    pub connect_timeout: Duration,
    /// Request timeout when the service's policy sets none.
    #[arg(long, env = "NETTING_PROXY_REQUEST_TIMEOUT", default_value = "30s", value_parser = parse_duration)]
    pub request_timeout: Duration,
    /// Largest HTTP/1 request head accepted; a larger one gets 431.
    #[arg(long, env = "NETTING_PROXY_MAX_HEADER_BYTES", default_value_t = 64 * 1024)]
    pub max_header_bytes: usize,
    /// On SIGTERM: stop accepting, then let requests in flight finish for at most this long.
    #[arg(long, env = "NETTING_PROXY_DRAIN_TIMEOUT", default_value = "10s", value_parser = parse_duration)]
    pub drain_timeout: Duration,
}

/// `500ms`, `2s`, `1m`: the durations flags take.
fn parse_duration(value: &str) -> Result<Duration, String> {
    humantime::parse_duration(value.trim())
        .map_err(|e| format!("{value:?}: {e}; write e.g. 500ms, 2s or 1m"))
}

impl Args {
    /// The discovery client's config; its checks name the bad flag.
    pub fn discovery(&self) -> Result<ClientConfig, InvalidConfig> {
        let mut subscription = Subscription::new();
        let namespaces = if self.subscribe_namespaces.is_empty() {
            std::slice::from_ref(&self.namespace)
        } else {
            &self.subscribe_namespaces[..]
        };
        for namespace in namespaces {
            subscription = subscription.namespace(namespace.clone());
        }
        for service in &self.subscribe_services {
            let (namespace, name) = service.split_once('/').ok_or_else(|| InvalidConfig {
                field: "--subscribe-service".to_owned(),
                reason: format!("{service:?} is not namespace/name"),
            })?;
            subscription = subscription.service(namespace, name);
        }
        let identity = Identity::new(self.pod.clone(), self.namespace.clone())
            .service_account(self.service_account.clone())
            .proxy_version(env!("CARGO_PKG_VERSION"));
        let config = ClientConfig::new(self.control_plane.iter().cloned(), identity, subscription);
        config.validate()?;
        Ok(config)
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn parse(extra: &[&str]) -> Result<Args, clap::Error> {
        let mut args = vec![
            "netting-proxy",
            "--control-plane",
            "10.0.0.1:7100,10.0.0.2:7100",
            "--pod",
            "web-1",
            "--namespace",
            "shop",
        ];
        args.extend_from_slice(extra);
        Args::try_parse_from(args)
    }

    #[test]
    fn defaults_subscribe_to_the_own_namespace() {
        let args = parse(&[]).unwrap();
        assert_eq!(args.outbound_listen.port(), 15001);
        assert_eq!(args.inbound_listen.port(), 15006);
        let config = args.discovery().unwrap();
        assert_eq!(config.replicas.len(), 2);
        assert!(!config.subscription.is_empty());
    }

    #[test]
    fn bad_values_name_their_flag() {
        let error = parse(&["--connect-timeout", "5"]).unwrap_err().to_string();
        assert!(
            error.contains("--connect-timeout") && error.contains("write e.g. 500ms"),
            "{error}"
        );
        let error = parse(&["--outbound-listen", "15001"])
            .unwrap_err()
            .to_string();
        assert!(error.contains("--outbound-listen"), "{error}");
        let args = parse(&["--subscribe-service", "payments"]).unwrap();
        let error = args.discovery().unwrap_err().to_string();
        assert!(error.contains("--subscribe-service"), "{error}");
    }
}
