//! What the workload saw: every operation with its invocation and completion time and outcome,
//! every version a sidecar applied, and every look the observer took at a replica. The checks
//! and the report read only this, so they are tested on histories written by hand.
//!
//! Times are microseconds since the start of the run, on one monotonic clock.

use serde::{Deserialize, Serialize};

/// Microseconds since the run started.
pub type Micros = u64;

/// How an operation ended, as far as its client can tell.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Outcome {
    /// Acknowledged: the replica answered with success.
    Ok,
    /// Certainly not applied: the request never reached a replica (the connection could not be
    /// opened), or the replica refused it before doing anything.
    Failed,
    /// May or may not have been applied: the request was sent and no answer came back in time,
    /// or the answer was an error a replica gives after proposing (timeout, leader change).
    Unknown,
}

/// An operation on one register of the key-value model: a catalog endpoint whose value is the
/// pod name written into it, or absent when the endpoint is deregistered.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", tag = "op")]
pub enum RegisterOp {
    /// Set the register (`Some`) or remove it (`None`).
    Write { value: Option<String> },
    /// Read the register; `value` is what the read returned (meaningful only when it was Ok).
    Read { value: Option<String> },
}

/// One operation on the key-value registers, as the linearizability checker takes it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RegisterOperation {
    /// Unique within a run; violations name operations by it.
    pub id: u64,
    /// The worker that issued it (a writer or reader); a worker issues one operation at a time.
    pub client: u32,
    /// The register: `service/address:port`.
    pub key: String,
    pub op: RegisterOp,
    pub invoked: Micros,
    /// `None` when the outcome is unknown: the operation may take effect at any time after it
    /// was invoked, or never.
    pub completed: Option<Micros>,
    pub outcome: Outcome,
    /// The replica (index) the request was sent to.
    pub replica: usize,
    /// The catalog version the replica reported (write: applied at; read: served at).
    pub version: Option<u64>,
    /// For a read that found the endpoint: the log index that last changed it (its
    /// `modify_index`), i.e. where the value read was written. Absent in older histories.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub written_at: Option<u64>,
}

/// One write of a unique entry that is never overwritten: the record the lost-write check
/// reads. A ledger entry is registered once and perhaps deregistered later by the same writer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LedgerWrite {
    pub id: u64,
    pub client: u32,
    /// `namespace/service/address:port`, unique in the run.
    pub entry: String,
    /// `true` registers the entry, `false` deregisters it.
    pub register: bool,
    pub invoked: Micros,
    pub completed: Option<Micros>,
    pub outcome: Outcome,
    pub replica: usize,
    /// Catalog version the write was applied at (Ok only).
    pub version: Option<u64>,
    /// The replica that committed it (Ok only): the leader at the time.
    pub leader: Option<u64>,
}

/// A version a sidecar applied (published to its proxy), or a response it received.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SidecarEvent {
    pub sidecar: u32,
    pub at: Micros,
    pub cluster_id: String,
    pub version: u64,
    /// The replica the sidecar was connected to, when known.
    pub replica: Option<usize>,
    /// For a delta received by a raw sidecar: the version it applies on top of.
    pub from_version: Option<u64>,
    /// What produced the event.
    pub kind: SidecarEventKind,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SidecarEventKind {
    /// The client library published this config to its proxy.
    Applied,
    /// A raw-stream sidecar received this response from a replica (before any client-side
    /// check): the replica's own promise of never sending older state is checked on these.
    Received,
}

/// One look the observer took at a replica's Raft state (its admin `/debug/raft`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReplicaSample {
    pub replica: usize,
    pub node_id: u64,
    pub at: Micros,
    /// `leader`, `follower`, `candidate`, `learner` or `shutdown`.
    pub state: String,
    pub term: u64,
    pub leader: Option<u64>,
    pub applied_index: u64,
    pub catalog_version: u64,
    /// Term and leader of the last applied log entry: who wrote it.
    pub last_applied: Option<(u64, u64)>,
}

/// Everything recorded in one run.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct History {
    pub registers: Vec<RegisterOperation>,
    pub ledger: Vec<LedgerWrite>,
    pub sidecars: Vec<SidecarEvent>,
    pub samples: Vec<ReplicaSample>,
}
