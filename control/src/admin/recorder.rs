//! The process-wide Prometheus recorder and the description of every Netting metric.

use metrics::{Unit, describe_counter, describe_gauge, describe_histogram};
use metrics_exporter_prometheus::{BuildError, Matcher, PrometheusBuilder, PrometheusHandle};

/// Histogram buckets, in seconds, of every metric whose name ends in `_seconds`: from half a
/// millisecond (a local catalog read) to five seconds (a write stuck behind an election).
pub const LATENCY_BUCKETS: &[f64] = &[
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0,
];

pub(crate) const RAFT_TERM: &str = "netting_raft_term";
pub(crate) const RAFT_LEADER_ID: &str = "netting_raft_leader_id";
pub(crate) const RAFT_IS_LEADER: &str = "netting_raft_is_leader";
pub(crate) const RAFT_LAST_LOG_INDEX: &str = "netting_raft_last_log_index";
pub(crate) const RAFT_COMMITTED_INDEX: &str = "netting_raft_committed_index";
pub(crate) const RAFT_APPLIED_INDEX: &str = "netting_raft_applied_index";
pub(crate) const RAFT_LEADER_CHANGES: &str = "netting_raft_leader_changes_total";
pub(crate) const RAFT_VOTERS: &str = "netting_raft_voters";
pub(crate) const RAFT_LEARNERS: &str = "netting_raft_learners";
pub(crate) const RAFT_REPLICATION_LAG: &str = "netting_raft_replication_lag_entries";
pub(crate) const CATALOG_VERSION: &str = "netting_catalog_version";
pub(crate) const CATALOG_SERVICES: &str = "netting_catalog_services";
pub(crate) const CATALOG_ENDPOINTS: &str = "netting_catalog_endpoints";
pub(crate) const CATALOG_TOMBSTONES: &str = "netting_catalog_tombstones";
pub(crate) const GRPC_REQUESTS: &str = "netting_grpc_requests_total";
pub(crate) const GRPC_REQUEST_DURATION: &str = "netting_grpc_request_duration_seconds";

/// The builder every Netting recorder starts from (the installed one and the ones of tests):
/// latency buckets for `_seconds` histograms, no listener, no push gateway.
pub fn prometheus_builder() -> Result<PrometheusBuilder, BuildError> {
    PrometheusBuilder::new()
        .set_buckets_for_metric(Matcher::Suffix("_seconds".to_owned()), LATENCY_BUCKETS)
}

/// Installs the global recorder and describes every Netting metric; call once, early.
///
/// Fails when a global recorder is already installed. The returned handle renders the
/// exposition text; [`serve`](super::serve) also runs its periodic upkeep (without which
/// histogram samples pile up between scrapes).
pub fn install_recorder() -> Result<PrometheusHandle, BuildError> {
    let handle = prometheus_builder()?.install_recorder()?;
    describe_metrics();
    Ok(handle)
}

/// Gives every Netting metric its HELP text and unit, on the current recorder (the global one,
/// or a local one inside `metrics::with_local_recorder`).
pub fn describe_metrics() {
    netting_raft::storage::describe_metrics();
    netting_raft::network::describe_metrics();
    netting_raft::elections::describe_metrics();
    crate::actors::describe_metrics();
    crate::grpc::describe_metrics();
    describe_gauge!(RAFT_TERM, Unit::Count, "Current Raft term of this replica.");
    describe_gauge!(
        RAFT_LEADER_ID,
        Unit::Count,
        "Node id of the leader this replica knows, or -1 when it knows none."
    );
    describe_gauge!(
        RAFT_IS_LEADER,
        Unit::Count,
        "1 when this replica is the Raft leader, else 0."
    );
    describe_gauge!(
        RAFT_LAST_LOG_INDEX,
        Unit::Count,
        "Index of the last entry in this replica's Raft log (committed or not), -1 when empty."
    );
    describe_gauge!(
        RAFT_COMMITTED_INDEX,
        Unit::Count,
        "Highest log index this replica knows to be committed, -1 when none; sampled about once a second."
    );
    describe_gauge!(
        RAFT_APPLIED_INDEX,
        Unit::Count,
        "Index of the last log entry applied to this replica's state machine, -1 when none."
    );
    describe_counter!(
        RAFT_LEADER_CHANGES,
        Unit::Count,
        "Times this replica learned of a leader different from the last one it knew."
    );
    describe_gauge!(
        RAFT_VOTERS,
        Unit::Count,
        "Voting members in the membership this replica knows."
    );
    describe_gauge!(
        RAFT_LEARNERS,
        Unit::Count,
        "Non-voting members (learners) in the membership this replica knows."
    );
    describe_gauge!(
        RAFT_REPLICATION_LAG,
        Unit::Count,
        "On the leader: log entries the peer has not yet acknowledged; 0 on other replicas, so \
         join with netting_raft_is_leader == 1."
    );
    describe_gauge!(
        CATALOG_VERSION,
        Unit::Count,
        "Log index of the last applied entry that changed the catalog."
    );
    describe_gauge!(
        CATALOG_SERVICES,
        Unit::Count,
        "Services in the applied catalog."
    );
    describe_gauge!(
        CATALOG_ENDPOINTS,
        Unit::Count,
        "Endpoints of all services in the applied catalog."
    );
    describe_gauge!(
        CATALOG_TOMBSTONES,
        Unit::Count,
        "Deleted services remembered so that sidecars can be sent deltas."
    );
    describe_counter!(
        GRPC_REQUESTS,
        Unit::Count,
        "gRPC calls served, by method and final gRPC status code."
    );
    describe_histogram!(
        GRPC_REQUEST_DURATION,
        Unit::Seconds,
        "Time from a gRPC call's request headers to its final status (for streams, the stream's lifetime)."
    );
}
