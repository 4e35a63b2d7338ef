//! The admin HTTP server and the metrics of a control-plane replica.
//!
//! Wiring, in the replica's start-up:
//!
//! 1. [`install_recorder`] once, before anything records a metric; keep the returned handle.
//! 2. `tokio::spawn(`[`export_raft_metrics`]`(raft.clone(), catalog.clone(), shutdown))` turns
//!    the Raft node's and the catalog's state into gauges.
//! 3. `tonic::transport::Server::builder().layer(`[`GrpcMetricsLayer::new()`]`)` counts and
//!    times every gRPC call.
//! 4. `tokio::spawn(`[`serve`]`(listener, `[`AdminState::new`]`(raft, catalog, handle), shutdown))`
//!    serves `/metrics`, `/healthz`, `/readyz` and `/debug/raft`; add
//!    [`AdminState::with_sessions`]`(pusher.recipient())` for `/debug/sessions` (without it,
//!    that path answers 404).
//!
//! Label values are bounded everywhere: gRPC methods come from a fixed list, peers are Raft node
//! ids, never addresses or request paths.

mod debug;
mod grpc_metrics;
pub(crate) mod probe;
mod raft_metrics;
mod readiness;
mod recorder;
mod routes;
mod server;
mod sessions;
mod state;

#[cfg(test)]
mod tests;

pub use debug::{RaftDebugView, debug_view};
pub use grpc_metrics::{GrpcMetrics, GrpcMetricsLayer, NETTING_GRPC_METHODS, RecordedBody};
pub use probe::{CommittedIndexFuture, RaftProbe};
pub use raft_metrics::{CatalogCounts, RaftMetricsExporter, export_raft_metrics};
pub use readiness::{DEFAULT_MAX_APPLY_LAG, NotReady, ReadinessPolicy, readiness};
pub use recorder::{LATENCY_BUCKETS, describe_metrics, install_recorder, prometheus_builder};
pub use server::serve;
pub use sessions::{SessionDebugView, SessionsDebugView, sessions_view};
pub use state::AdminState;
