//! The gRPC server (catalog, cluster, discovery, Raft) and its connection settings.

use futures::StreamExt as _;
use netting_proto::catalog::v1::catalog_server::CatalogServer;
use netting_proto::catalog::v1::cluster_server::ClusterServer;
use netting_proto::discovery::v1::discovery_admin_server::DiscoveryAdminServer;
use netting_proto::discovery::v1::discovery_server::DiscoveryServer;
use netting_raft::network::RaftGrpc;
use tokio::net::TcpListener;
use tokio::task::JoinHandle;

use crate::admin;
use crate::config::ReplicaConfig;
use crate::grpc::Replica;
use crate::grpc::catalog::CatalogService;
use crate::grpc::cluster::ClusterService;
use crate::grpc::discovery::DiscoveryService;

const GRPC_KEEPALIVE_INTERVAL: std::time::Duration = std::time::Duration::from_secs(20);
const GRPC_KEEPALIVE_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(10);

/// Serves every gRPC service of the replica on `listener` until `stopped` completes.
pub(super) fn spawn_grpc(
    config: &ReplicaConfig,
    listener: TcpListener,
    replica: Replica,
    discovery: DiscoveryService,
    raft_service: RaftGrpc,
    stopped: impl Future<Output = ()> + Send + 'static,
) -> JoinHandle<Result<(), tonic::transport::Error>> {
    // The decoding limit is a guard well above the configured request limit, so that a request
    // slightly over the limit gets INVALID_ARGUMENT naming its field rather than a bare
    // RESOURCE_EXHAUSTED from the codec.
    let decode_limit = config.max_request_bytes.saturating_mul(4);
    let grpc = tonic::transport::Server::builder()
        // Sidecar streams can sit idle for minutes; keepalive pings find peers that vanished
        // without closing their connection, so their sessions end instead of lingering.
        .http2_keepalive_interval(Some(GRPC_KEEPALIVE_INTERVAL))
        .http2_keepalive_timeout(Some(GRPC_KEEPALIVE_TIMEOUT))
        .layer(admin::GrpcMetricsLayer::new())
        .add_service(
            CatalogServer::new(CatalogService::new(replica.clone()))
                .max_decoding_message_size(decode_limit),
        )
        .add_service(ClusterServer::new(ClusterService::new(replica)))
        .add_service(
            DiscoveryServer::new(discovery.clone())
                .max_decoding_message_size(config.sidecars.max_message_bytes),
        )
        .add_service(DiscoveryAdminServer::new(discovery))
        .add_service(raft_service.into_service())
        .serve_with_incoming_shutdown(
            // Nagle's algorithm would hold small Raft and catalog messages back until the peer's
            // delayed ACK (40 ms on Linux); tonic only applies nodelay to sockets it accepts
            // itself, so it is set on the incoming stream.
            tonic::transport::server::TcpIncoming::from(listener)
                .with_nodelay(Some(true))
                .with_keepalive(Some(GRPC_KEEPALIVE_INTERVAL))
                // Linear retransmission timeouts for these thin streams (Raft, sidecar
                // updates), so a healed partition delivers again at once.
                .inspect(|accepted| {
                    if let Ok(stream) = accepted
                        && let Err(error) = netting_proto::transport::tune(stream)
                    {
                        tracing::debug!(%error, "cannot tune an accepted connection");
                    }
                }),
            stopped,
        );
    tokio::spawn(grpc)
}
