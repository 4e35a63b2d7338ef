//! The typed commands that change the catalog: one variant per kind of write. A Raft log entry
//! carries a [`CommandBatch`] so that concurrent writers share one entry and one fsync.

use serde::{Deserialize, Serialize};
use thiserror::Error;

use super::model::{EndpointId, EndpointSpec, LogIndex, ServiceKey, ServiceSpec, Source};

/// One catalog write.
///
/// Every command is idempotent: applying it twice leaves the catalog as applying it once did.
/// That is what makes it safe for a follower to retry a forwarded write whose answer it lost.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "snake_case")]
pub enum CatalogCommand {
    /// Fixes the cluster id. Proposed once, by the replica that bootstrapped the cluster.
    InitCluster { cluster_id: String },
    /// Adds or replaces one endpoint, creating the service when it does not exist. When `spec`
    /// is given it replaces the service's definition.
    RegisterEndpoint {
        key: ServiceKey,
        source: Source,
        endpoint: EndpointSpec,
        spec: Option<ServiceSpec>,
    },
    /// Removes one endpoint; the service stays, possibly with no endpoints.
    DeregisterEndpoint {
        key: ServiceKey,
        endpoint: EndpointId,
    },
    /// Sets a service's definition and its complete set of endpoints (what a reconciling
    /// source such as the catalog file proposes).
    PutService {
        key: ServiceKey,
        source: Source,
        spec: ServiceSpec,
        endpoints: Vec<EndpointSpec>,
    },
    /// Removes a service and leaves a tombstone at this index.
    DeleteService { key: ServiceKey },
}

impl CatalogCommand {
    /// A short name for logs and metrics labels (bounded set).
    pub fn kind(&self) -> &'static str {
        match self {
            CatalogCommand::InitCluster { .. } => "init_cluster",
            CatalogCommand::RegisterEndpoint { .. } => "register_endpoint",
            CatalogCommand::DeregisterEndpoint { .. } => "deregister_endpoint",
            CatalogCommand::PutService { .. } => "put_service",
            CatalogCommand::DeleteService { .. } => "delete_service",
        }
    }
}

/// The application data of one Raft log entry.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct CommandBatch {
    pub commands: Vec<CatalogCommand>,
}

/// What applying one command did.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Applied {
    /// False when the command matched the catalog already (an idempotent repeat).
    pub changed: bool,
}

/// Why a command was applied without effect. These are answers to the writer, not faults:
/// every replica reaches the same verdict at the same index.
#[derive(Debug, Clone, PartialEq, Eq, Error, Serialize, Deserialize)]
pub enum ApplyError {
    #[error("service {0} not found")]
    ServiceNotFound(ServiceKey),
    #[error("endpoint {endpoint} of service {key} not found")]
    EndpointNotFound {
        key: ServiceKey,
        endpoint: EndpointId,
    },
    #[error("service {key} is owned by source {owner}, not {writer}")]
    OwnedByOtherSource {
        key: ServiceKey,
        owner: String,
        writer: String,
    },
    #[error("cluster id is already set to {0}")]
    ClusterIdAlreadySet(String),
}

/// The application response of one Raft log entry: one result per command of the batch, and
/// the catalog version after the entry.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct BatchResponse {
    pub results: Vec<Result<Applied, ApplyError>>,
    pub version: LogIndex,
}
