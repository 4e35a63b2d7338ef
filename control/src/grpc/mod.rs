//! The gRPC services a replica serves to clients and peers (catalog and cluster; the Raft
//! service lives in `netting-raft`), and how requests reach the leader.

pub mod catalog;
pub mod cluster;
pub mod convert;
pub mod routing;

pub use routing::Replica;
