//! Domain types of the service catalog. They know nothing of protobuf; they are what the Raft
//! log and snapshots store (serde), so the wire format can change without migrating disks.

use std::collections::BTreeMap;
use std::fmt;
use std::net::IpAddr;

use serde::{Deserialize, Serialize};

use super::validate::{self, InvalidField};

/// A Raft log index. The catalog version is the index of the last applied catalog change.
pub type LogIndex = u64;

/// Identifies a service: a DNS-1123 namespace and name.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct ServiceKey {
    pub namespace: String,
    pub name: String,
}

impl ServiceKey {
    /// Builds a key after checking both parts are DNS-1123 labels.
    pub fn new(namespace: &str, name: &str) -> Result<Self, InvalidField> {
        validate::dns_label("namespace", namespace)?;
        validate::dns_label("service", name)?;
        Ok(Self {
            namespace: namespace.to_owned(),
            name: name.to_owned(),
        })
    }
}

impl fmt::Display for ServiceKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.namespace, self.name)
    }
}

/// The application protocol a service port speaks, used by sidecars to pick a proxy mode.
#[derive(
    Debug, Clone, Copy, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize,
)]
#[serde(rename_all = "lowercase")]
pub enum Protocol {
    #[default]
    Tcp,
    Http,
    Grpc,
}

impl Protocol {
    pub fn as_str(self) -> &'static str {
        match self {
            Protocol::Tcp => "tcp",
            Protocol::Http => "http",
            Protocol::Grpc => "grpc",
        }
    }
}

impl std::str::FromStr for Protocol {
    type Err = ();

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "" | "tcp" => Ok(Protocol::Tcp),
            "http" => Ok(Protocol::Http),
            "grpc" => Ok(Protocol::Grpc),
            _ => Err(()),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ServicePort {
    pub name: String,
    pub port: u16,
    #[serde(default)]
    pub protocol: Protocol,
}

/// How sidecars spread requests over a service's endpoints.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum LoadBalancer {
    RoundRobin,
    LeastRequest,
    P2cEwma,
}

impl LoadBalancer {
    pub fn as_str(self) -> &'static str {
        match self {
            LoadBalancer::RoundRobin => "round_robin",
            LoadBalancer::LeastRequest => "least_request",
            LoadBalancer::P2cEwma => "p2c_ewma",
        }
    }
}

impl std::str::FromStr for LoadBalancer {
    type Err = ();

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "round_robin" => Ok(LoadBalancer::RoundRobin),
            "least_request" => Ok(LoadBalancer::LeastRequest),
            "p2c_ewma" => Ok(LoadBalancer::P2cEwma),
            _ => Err(()),
        }
    }
}

/// Traffic policy sidecars apply when calling the service. Filled in by later work; stored now
/// so that adding behaviour never needs a storage migration.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ServicePolicy {
    #[serde(default)]
    pub request_timeout_ms: Option<u64>,
    #[serde(default)]
    pub max_retries: u32,
    #[serde(default)]
    pub load_balancer: Option<LoadBalancer>,
}

/// The definition of a service, apart from its endpoints.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ServiceSpec {
    #[serde(default)]
    pub ports: Vec<ServicePort>,
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
    #[serde(default)]
    pub policy: ServicePolicy,
}

impl ServiceSpec {
    pub fn is_empty(&self) -> bool {
        self == &ServiceSpec::default()
    }
}

/// Identifies an endpoint within its service.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct EndpointId {
    pub address: IpAddr,
    pub port: u16,
}

impl fmt::Display for EndpointId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.address {
            IpAddr::V4(a) => write!(f, "{a}:{}", self.port),
            IpAddr::V6(a) => write!(f, "[{a}]:{}", self.port),
        }
    }
}

/// An endpoint as a writer describes it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct EndpointSpec {
    pub id: EndpointId,
    pub ready: bool,
    #[serde(default)]
    pub zone: Option<String>,
    #[serde(default)]
    pub pod: Option<String>,
}

/// An endpoint as the catalog holds it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Endpoint {
    #[serde(flatten)]
    pub spec: EndpointSpec,
    pub modify_index: LogIndex,
}

/// Which writer owns a service. A source only ever reconciles the services it owns, so the
/// catalog file never deletes what the API registered.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Source {
    Api,
    File,
    Kubernetes,
}

impl Source {
    pub fn as_str(self) -> &'static str {
        match self {
            Source::Api => "api",
            Source::File => "file",
            Source::Kubernetes => "kubernetes",
        }
    }
}

/// A service as the catalog holds it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Service {
    pub key: ServiceKey,
    pub spec: ServiceSpec,
    #[serde(with = "super::map_as_pairs")]
    pub endpoints: BTreeMap<EndpointId, Endpoint>,
    pub source: Source,
    pub create_index: LogIndex,
    /// Index of the last change to anything in this service, its endpoints included.
    pub modify_index: LogIndex,
}
