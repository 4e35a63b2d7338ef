//! The gRPC services a replica serves to clients and peers (catalog and cluster; the Raft
//! service lives in `netting-raft`), and how requests reach the leader.

pub mod catalog;
pub mod cluster;
pub mod consensus;
pub mod convert;
pub mod discovery;
pub mod discovery_convert;
pub mod request_ids;
pub mod routing;
#[cfg(test)]
pub(crate) mod test_replica;

pub use routing::Replica;

/// HELP text of the gRPC services' own metrics (request counts are the admin layer's).
pub fn describe_metrics() {
    metrics::describe_counter!(
        "netting_catalog_forwarded_total",
        "Catalog writes this replica forwarded to the leader"
    );
    metrics::describe_counter!(
        "netting_catalog_duplicate_requests_total",
        "Catalog writes answered from the record of an earlier application of the same request id"
    );
}
