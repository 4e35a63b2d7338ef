//! Raft RPCs between replicas over gRPC (`netting.raft.v1.Raft`).
//!
//! - [`PeerChannels`]: one lazily connected channel per peer, shared with the control plane
//!   (which forwards writes to the leader over the same connections).
//! - [`NetworkFactory`] / [`PeerClient`]: openraft's `RaftNetworkFactory` / `RaftNetwork`.
//! - [`RaftGrpc`]: the gRPC service, answered by the local `openraft::Raft`.
//! - [`ClusterIdentity`]: the cluster name and id every request carries and every server
//!   checks, so replicas of different clusters never talk Raft to each other.
//! - [`convert`]: openraft messages to and from the generated protobuf types.
//! - [`peer_health`]: a peer going down and coming back, logged once each.
//!
//! Metrics (client side, bounded labels only): `netting_raft_rpc_total{rpc,result}` and
//! `netting_raft_rpc_duration_seconds{rpc}`, with `rpc` one of `append_entries`, `vote`,
//! `install_snapshot` and `result` one of `ok`, `unreachable`, `error`.

mod channels;
mod client;
pub mod convert;
mod identity;
pub mod peer_health;
mod remote;
mod server;

pub use channels::{ChannelConfig, InvalidPeerAddress, PeerChannels};
pub use client::{NetworkFactory, PeerClient};
pub use identity::{
    CLUSTER_ID_HEADER, CLUSTER_NAME_HEADER, ClusterIdentity, ClusterMismatch,
    InvalidClusterIdentity,
};
pub use server::RaftGrpc;

/// Largest gRPC message either side sends or accepts: room for a 3 MiB snapshot chunk or a
/// large AppendEntries batch, with a bound so a corrupt length prefix cannot make a replica
/// allocate without limit.
pub const MAX_MESSAGE_BYTES: usize = 64 * 1024 * 1024;

/// Counter of client RPCs by `rpc` and `result`.
pub const RPC_TOTAL: &str = "netting_raft_rpc_total";
/// Histogram of client RPC durations by `rpc`, in seconds.
pub const RPC_DURATION_SECONDS: &str = "netting_raft_rpc_duration_seconds";

/// Registers the descriptions of this module's metrics with the installed recorder; call once
/// at start-up, after installing it.
pub fn describe_metrics() {
    metrics::describe_counter!(
        RPC_TOTAL,
        metrics::Unit::Count,
        "Raft RPCs sent to peers, by rpc and result (ok, unreachable, error)."
    );
    metrics::describe_histogram!(
        RPC_DURATION_SECONDS,
        metrics::Unit::Seconds,
        "Duration of Raft RPCs sent to peers, by rpc."
    );
}
