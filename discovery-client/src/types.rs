//! The proxy's view of its configuration. These types know nothing of protobuf: the `convert`
//! module is the only place that reads generated structs, so the data path never depends on the
//! wire format.

use std::collections::BTreeMap;
use std::fmt;
use std::net::SocketAddr;
use std::time::Duration;

/// Everything the proxy routes with, at one version of one cluster.
///
/// `Default` is the state before the first update: version 0, no cluster, no services.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ProxyConfig {
    /// The control plane's catalog version (its Raft log index) this config reflects.
    pub version: u64,
    /// The cluster `version` belongs to; empty before the first update.
    pub cluster_id: String,
    /// The subscribed services, ordered by name so dumps and diffs are stable.
    pub services: BTreeMap<ServiceName, ServiceConfig>,
}

impl ProxyConfig {
    /// The service with this name, if the proxy knows it.
    pub fn service(&self, name: &ServiceName) -> Option<&ServiceConfig> {
        self.services.get(name)
    }
}

/// Identifies a service: its namespace and name.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ServiceName {
    pub namespace: String,
    pub name: String,
}

impl ServiceName {
    pub fn new(namespace: impl Into<String>, name: impl Into<String>) -> Self {
        Self {
            namespace: namespace.into(),
            name: name.into(),
        }
    }
}

impl fmt::Display for ServiceName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.namespace, self.name)
    }
}

/// A service as the proxy routes to it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ServiceConfig {
    pub ports: Vec<Port>,
    pub endpoints: Vec<Endpoint>,
    pub policy: Policy,
}

/// A port the service exposes and the protocol spoken on it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Port {
    pub name: String,
    pub port: u16,
    pub protocol: Protocol,
}

/// The application protocol of a port, which picks the proxy mode.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash)]
pub enum Protocol {
    /// Opaque TCP; also what an unspecified protocol means.
    #[default]
    Tcp,
    Http,
    Grpc,
}

/// One backend of a service.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Endpoint {
    pub addr: SocketAddr,
    /// Whether the endpoint should receive new requests.
    pub ready: bool,
    pub zone: Option<String>,
}

/// What the proxy applies when calling the service.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Policy {
    /// `None`: no timeout.
    pub request_timeout: Option<Duration>,
    pub max_retries: u32,
    /// `None`: the proxy's default balancer.
    pub load_balancer: Option<LoadBalancer>,
}

/// How requests are spread over a service's endpoints.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum LoadBalancer {
    RoundRobin,
    LeastRequest,
    P2cEwma,
}
