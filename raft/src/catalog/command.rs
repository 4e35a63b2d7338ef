//! The typed commands that change the catalog: one variant per kind of write. A Raft log entry
//! carries a [`CommandBatch`] so that concurrent writers share one entry and one fsync.

use serde::{Deserialize, Serialize};
use thiserror::Error;

use super::model::{EndpointId, EndpointSpec, LogIndex, ServiceKey, ServiceSpec, Source};

/// One catalog write.
///
/// Applying a command twice leaves the catalog as applying it once did, but that alone does not
/// make a retry safe: a retry applied after another writer's change to the same endpoint would
/// undo that change. Writes that may be retried carry a [`RequestId`], and the state machine
/// applies each request at most once (see [`super::requests::RequestTable`]).
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
        /// The source removing it; `None` only in entries written before removals checked the
        /// owner, which are applied as they were then.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        source: Option<Source>,
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
    DeleteService {
        key: ServiceKey,
        /// As for [`CatalogCommand::DeregisterEndpoint`].
        #[serde(default, skip_serializing_if = "Option::is_none")]
        source: Option<Source>,
    },
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

/// Names one write of one client: the client's own id and a number it never reuses for
/// another write. A retry of the write, through any replica, sends the same id.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct RequestId {
    pub client: String,
    pub sequence: u64,
}

impl std::fmt::Display for RequestId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}#{}", self.client, self.sequence)
    }
}

/// The application data of one Raft log entry.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct CommandBatch {
    pub commands: Vec<CatalogCommand>,
    /// The request id of each command, by position; `None` for a command sent without one
    /// (internal writes such as the catalog file's reconciles). Empty in entries written before
    /// request ids existed. Use [`CommandBatch::requests`] rather than indexing it.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub request_ids: Vec<Option<RequestId>>,
}

impl CommandBatch {
    /// A batch of commands, each with its request id (if any).
    pub fn new(requests: impl IntoIterator<Item = (Option<RequestId>, CatalogCommand)>) -> Self {
        let (request_ids, commands): (Vec<_>, Vec<_>) = requests.into_iter().unzip();
        let request_ids = if request_ids.iter().all(Option::is_none) {
            Vec::new()
        } else {
            request_ids
        };
        Self {
            commands,
            request_ids,
        }
    }

    /// Each command with its request id.
    pub fn requests(&self) -> impl Iterator<Item = (Option<&RequestId>, &CatalogCommand)> {
        self.commands
            .iter()
            .enumerate()
            .map(|(i, command)| (self.request_ids.get(i).and_then(Option::as_ref), command))
    }
}

/// What applying one command did.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Applied {
    /// False when the command matched the catalog already (an idempotent repeat).
    pub changed: bool,
}

/// The answer to one command of a batch.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Outcome {
    pub result: Result<Applied, ApplyError>,
    /// The catalog version the writer is told: after the entry that applied the command.
    pub version: LogIndex,
    /// True when the request had been applied before and this is the answer given then.
    pub duplicate: bool,
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
    /// The request's number is below the oldest this client's record still holds: whether it
    /// was applied long ago cannot be told any more, so it is not applied now.
    #[error(
        "request {request} is older than the record of client {client:?} reaches (its oldest kept request is #{oldest_kept}); its outcome can no longer be told"
    )]
    RequestExpired {
        request: u64,
        client: String,
        oldest_kept: u64,
    },
}

impl ApplyError {
    /// A short name for metrics labels (bounded set).
    pub fn kind(&self) -> &'static str {
        match self {
            ApplyError::ServiceNotFound(_) => "service_not_found",
            ApplyError::EndpointNotFound { .. } => "endpoint_not_found",
            ApplyError::OwnedByOtherSource { .. } => "owned_by_other_source",
            ApplyError::ClusterIdAlreadySet(_) => "cluster_id_already_set",
            ApplyError::RequestExpired { .. } => "request_expired",
        }
    }
}

/// The application response of one Raft log entry: one outcome per command of the batch, and
/// the catalog version after the entry.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct BatchResponse {
    pub results: Vec<Outcome>,
    pub version: LogIndex,
}
