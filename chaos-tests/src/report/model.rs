//! The figures of one run, as `report.json` holds them. The summary and the timeline are drawn
//! from this alone, so a report can be re-rendered from its JSON.

use serde::{Deserialize, Serialize};

use crate::history::Micros;

/// Everything a run produced, except the raw history (written beside it as `history.json`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RunReport {
    pub seed: u64,
    pub replicas: usize,
    pub sidecars: usize,
    /// Wall-clock start, seconds since the Unix epoch (for the reader; all other times are
    /// microseconds since this start on a monotonic clock).
    pub started_unix_secs: u64,
    pub duration: Micros,
    pub faults: Vec<FaultRecord>,
    /// The leader of each term, as the replicas reported it.
    pub terms: Vec<TermRecord>,
    /// Acknowledged writes per bucket of `rate_bucket` microseconds, from the start.
    pub rate_bucket: Micros,
    pub acked_writes_per_bucket: Vec<u32>,
    pub writes: OperationCounts,
    pub reads: OperationCounts,
    pub sidecar_summary: SidecarSummary,
    /// Aggregates over the faults, per kind and overall.
    pub failover: Vec<FailoverStats>,
    pub checks: Vec<CheckResult>,
    /// True when every check passed.
    pub passed: bool,
}

/// One injected fault and what followed it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FaultRecord {
    pub index: usize,
    /// e.g. `kill-leader`, `pause-follower`, `partition-leader-minority`, `wipe-disk`.
    pub kind: String,
    /// Replica indexes the fault hit.
    pub targets: Vec<usize>,
    /// Human-readable detail: which links were cut, which replica lost its disk.
    pub detail: String,
    pub injected: Micros,
    pub healed: Micros,
    /// Leader and term just before the fault, as the observer last saw them.
    pub leader_before: Option<u64>,
    pub term_before: Option<u64>,
    /// The first leader seen after the fault that is not the one before, if leadership moved.
    pub leader_after: Option<u64>,
    pub term_after: Option<u64>,
    /// From the fault to the first write invoked at or after it that was acknowledged.
    pub fault_to_first_ack: Option<Micros>,
    /// From the fault until every sidecar applied the version of that first acknowledged write
    /// (or a later one).
    pub fault_to_sidecars_converged: Option<Micros>,
    /// From the heal to the first write invoked at or after it that was acknowledged.
    pub heal_to_first_ack: Option<Micros>,
    /// From the heal until every sidecar applied the version of that write (or a later one).
    pub heal_to_sidecars_converged: Option<Micros>,
    /// Longest time without any acknowledged write, from the fault until the next fault.
    pub longest_write_gap: Micros,
    /// Catalog versions of the first writes acknowledged after the fault and after the heal
    /// that sidecars are pushed (the versions the convergence times wait for).
    #[serde(default)]
    pub fault_converge_version: Option<u64>,
    #[serde(default)]
    pub heal_converge_version: Option<u64>,
}

/// A term and its leader, with when the observer first and last saw that leader in charge.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TermRecord {
    pub term: u64,
    pub leader: u64,
    pub first_seen: Micros,
    pub last_seen: Micros,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct OperationCounts {
    pub invoked: u64,
    pub ok: u64,
    pub failed: u64,
    pub unknown: u64,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct SidecarSummary {
    pub count: usize,
    /// Configs applied by all sidecars together.
    pub versions_applied: u64,
    /// Sidecars whose last applied config equals the final catalog for their subscription.
    pub converged: usize,
    pub final_version: u64,
}

/// Percentiles of one figure over the faults of one kind (`all` for every kind).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FailoverStats {
    pub kind: String,
    pub figure: String,
    pub count: usize,
    pub p50: Micros,
    pub p99: Micros,
    pub max: Micros,
}

/// The verdict of one invariant check.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CheckResult {
    /// e.g. `no-lost-writes`, `linearizable`, `one-leader-per-term`.
    pub name: String,
    pub passed: bool,
    /// What was checked, in figures: "4213 acknowledged writes found on all 3 replicas".
    pub detail: String,
    /// Each violation names the operations, sidecars, terms or replicas involved.
    pub violations: Vec<String>,
}
