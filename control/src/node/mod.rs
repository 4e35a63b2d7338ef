//! Wires one replica together and runs it until SIGTERM or Ctrl-C: storage, Raft, the actors,
//! the gRPC and admin servers, and the bootstrap-or-join logic.

use std::sync::Arc;

use actix::{Actor, Addr, Recipient};
use anyhow::Context as _;
use futures::StreamExt as _;
use netting_proto::catalog::v1::catalog_server::CatalogServer;
use netting_proto::catalog::v1::cluster_server::ClusterServer;
use netting_proto::discovery::v1::discovery_admin_server::DiscoveryAdminServer;
use netting_proto::discovery::v1::discovery_server::DiscoveryServer;
use netting_raft::catalog::CatalogCommand;
use netting_raft::elections::{ElectionDriver, ElectionSettings};
use netting_raft::network::{
    ChannelConfig, ClusterIdentity, NetworkFactory, PeerChannels, RaftGrpc,
};
use netting_raft::storage::{self, NodeIdentity};
use netting_raft::{CatalogHandle, Raft};
use openraft::SnapshotPolicy;
use tokio::net::TcpListener;
use tokio::sync::watch;

use crate::actors::catalog_file_watcher::{CatalogFileWatcher, LeadershipChanged};
use crate::actors::catalog_writer::{CatalogWriter, Propose};
use crate::actors::config_pusher::{AppliedTimes, ConfigPusher, ListSessions, PushSettings};
use crate::actors::sidecar_session::SessionLimits;
use crate::admin;
use crate::bootstrap;
use crate::config::ReplicaConfig;
use crate::grpc::Replica;
use crate::grpc::catalog::CatalogService;
use crate::grpc::cluster::ClusterService;
use crate::grpc::discovery::{DiscoveryLimits, DiscoveryService};
use crate::grpc::request_ids::RequestIds;

/// Entries in flight from the catalog writer at once: enough to keep the pipeline busy while
/// one batch is being fsynced, few enough that batches stay large under load.
const WRITER_IN_FLIGHT: usize = 2;

const GRPC_KEEPALIVE_INTERVAL: std::time::Duration = std::time::Duration::from_secs(20);
const GRPC_KEEPALIVE_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(10);

/// Longest each shutdown step may take. Nothing acknowledged depends on a clean shutdown:
/// every acknowledged write is already fsynced on a quorum.
const SHUTDOWN_STEP: std::time::Duration = std::time::Duration::from_secs(3);

/// Runs one replica until it is asked to stop.
pub async fn run(config: ReplicaConfig) -> anyhow::Result<()> {
    let prometheus = admin::install_recorder().context("cannot install the metrics recorder")?;
    let identity = NodeIdentity {
        node_id: config.node_id,
        cluster_name: config.cluster_name.clone(),
    };
    let (mut log_store, state_machine) =
        storage::open(&config.data_dir, &identity).with_context(|| {
            format!(
                "cannot open the data directory {}",
                config.data_dir.display()
            )
        })?;
    let has_local_state = log_store.has_state().with_context(|| {
        format!(
            "cannot read the data directory {}",
            config.data_dir.display()
        )
    })?;
    let catalog = state_machine.catalog();

    // Bind before starting Raft so that a busy port fails start-up cleanly.
    let grpc_listener = TcpListener::bind(config.grpc_listen)
        .await
        .with_context(|| format!("--grpc-listen {}: cannot bind", config.grpc_listen))?;
    let admin_listener = TcpListener::bind(config.admin_listen)
        .await
        .with_context(|| format!("--admin-listen {}: cannot bind", config.admin_listen))?;

    let raft_config = openraft::Config {
        cluster_name: config.cluster_name.clone(),
        heartbeat_interval: millis(config.raft.heartbeat_interval),
        election_timeout_min: millis(config.raft.election_timeout_min),
        election_timeout_max: millis(config.raft.election_timeout_max),
        snapshot_policy: SnapshotPolicy::LogsSinceLast(config.raft.snapshot_every),
        // Keep some log after a snapshot so a briefly lagging follower catches up by entries,
        // not by a whole snapshot.
        max_in_snapshot_log_to_keep: config.raft.snapshot_every.min(1_000),
        // With pre-vote, elections are timed by the election driver (netting_raft::elections),
        // which asks before it raises the term.
        enable_elect: !config.raft.pre_vote,
        ..Default::default()
    }
    .validate()
    .context("invalid Raft timing")?;

    let channels = Arc::new(PeerChannels::new(ChannelConfig::default()));
    let cluster_identity =
        ClusterIdentity::following_catalog(config.cluster_name.clone(), catalog.clone())
            .context("--cluster-name")?;
    let network = NetworkFactory::new(channels.clone(), cluster_identity.clone());
    // The last entry on disk: reads wait for it before trusting the commit index (see
    // `Replica::ensure_linearizable`).
    let startup_log_index = {
        use openraft::storage::RaftLogStorage;
        log_store
            .get_log_state()
            .await
            .context("cannot read the Raft log")?
            .last_log_id
            .map_or(0, |id| id.index)
    };
    let raft = Raft::new(
        config.node_id,
        Arc::new(raft_config),
        network,
        log_store,
        state_machine,
    )
    .await
    .context("cannot start Raft")?;

    let writer = CatalogWriter::new(
        raft.clone(),
        config.node_id,
        config.write_batch_max,
        WRITER_IN_FLIGHT,
    )
    .start();
    let replica = Replica {
        node_id: config.node_id,
        cluster_name: config.cluster_name.clone(),
        advertise: config.grpc_advertise.clone(),
        admin_advertise: config.admin_listen.to_string(),
        raft: raft.clone(),
        catalog: catalog.clone(),
        writer: writer.clone(),
        channels: channels.clone(),
        request_ids: Arc::new(RequestIds::new(config.node_id)),
        leader_wait: config.write_timeout,
        max_request_bytes: config.max_request_bytes,
        startup_log_index,
    };

    let (discovery, sessions) = start_discovery(&config, replica.clone(), &catalog);

    let (stop_tx, stop_rx) = watch::channel(false);
    let discovery = discovery.with_shutdown(stop_rx.clone());
    let stopped = |mut rx: watch::Receiver<bool>| async move {
        let _ = rx.wait_for(|stop| *stop).await;
    };

    let mut raft_service =
        RaftGrpc::new(raft.clone(), cluster_identity.clone()).with_stopping(stop_rx.clone());
    if !has_local_state {
        raft_service =
            raft_service.withhold_votes_until_contacted(config.raft.election_timeout_max * 3);
    }

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
        .add_service(ClusterServer::new(ClusterService::new(replica.clone())))
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
            tonic::transport::server::TcpIncoming::from(grpc_listener)
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
            stopped(stop_rx.clone()),
        );
    let grpc_task = tokio::spawn(grpc);
    let admin_task = tokio::spawn(admin::serve(
        admin_listener,
        admin::AdminState::new(raft.clone(), catalog.clone(), prometheus).with_sessions(sessions),
        stopped(stop_rx.clone()),
    ));
    tokio::spawn(admin::export_raft_metrics(
        raft.clone(),
        catalog.clone(),
        stopped(stop_rx.clone()),
    ));

    let file_watcher = config.catalog_file.clone().map(|path| {
        CatalogFileWatcher::new(path, catalog.clone(), writer.clone().recipient()).start()
    });
    if config.raft.pre_vote || config.raft.fast_failover {
        let elections = ElectionDriver {
            node_id: config.node_id,
            raft: raft.clone(),
            channels: channels.clone(),
            identity: cluster_identity,
            settings: ElectionSettings {
                lease: config.raft.election_timeout_max,
                timeout_min: config.raft.election_timeout_min,
                timeout_max: config.raft.election_timeout_max,
                // A vote request reaches the next follower well within a heartbeat interval.
                turn_gap: config.raft.heartbeat_interval,
                pre_vote: config.raft.pre_vote,
                fast_failover: config.raft.fast_failover,
            },
        };
        tokio::spawn(elections.run(stop_rx.clone()));
    }
    tokio::spawn(watch_leadership(
        raft.clone(),
        catalog.clone(),
        writer.clone(),
        file_watcher,
        config.node_id,
    ));

    tracing::info!(
        node = config.node_id,
        grpc = %config.grpc_listen,
        admin = %config.admin_listen,
        advertise = %config.grpc_advertise,
        data_dir = %config.data_dir.display(),
        has_local_state,
        "replica started"
    );
    {
        let config = config.clone();
        let raft = raft.clone();
        let channels = channels.clone();
        tokio::spawn(async move {
            bootstrap::establish(&config, &raft, &channels, has_local_state).await
        });
    }

    wait_for_signal().await?;
    tracing::info!("stopping: draining servers and shutting Raft down");
    let _ = stop_tx.send(true);
    // Each step is bounded: a peer frozen mid-request (SIGSTOP, a partition) must not keep
    // this replica from exiting.
    let drained = tokio::time::timeout(SHUTDOWN_STEP, async {
        let _ = grpc_task.await;
        let _ = admin_task.await;
    })
    .await;
    if drained.is_err() {
        tracing::warn!("servers did not drain in time; closing remaining connections");
    }
    match tokio::time::timeout(SHUTDOWN_STEP, raft.shutdown()).await {
        Ok(Ok(())) => {}
        Ok(Err(err)) => tracing::warn!(error = %err, "raft did not shut down cleanly"),
        Err(_) => tracing::warn!("raft did not shut down in time"),
    }
    actix::System::current().stop();
    Ok(())
}

/// The config pusher and the discovery service, with session actors spread over one arbiter
/// (thread) per core; also where the admin server lists the sessions.
fn start_discovery(
    config: &ReplicaConfig,
    replica: Replica,
    catalog: &CatalogHandle,
) -> (DiscoveryService, Recipient<ListSessions>) {
    let settings = &config.sidecars;
    let applied_times = AppliedTimes::default();
    let pusher = ConfigPusher::new(
        catalog.clone(),
        PushSettings {
            quiet: settings.push_quiet,
            max_delay: settings.push_max_delay,
            max_in_flight: settings.push_max_in_flight,
            version_only_delay: settings.push_version_only_delay,
        },
        applied_times.clone(),
    )
    .start();
    let threads = std::thread::available_parallelism().map_or(2, usize::from);
    let arbiters = (0..threads)
        .map(|_| actix::Arbiter::new().handle())
        .collect();
    let limits = DiscoveryLimits {
        hello_timeout: settings.hello_timeout,
        catch_up_wait: settings.catch_up_wait,
        session: SessionLimits {
            ack_timeout: settings.ack_timeout,
            max_age: settings.max_age,
        },
    };
    let sessions = pusher.clone().recipient();
    let service = DiscoveryService::new(replica, pusher, arbiters, limits, applied_times);
    (service, sessions)
}

fn millis(d: std::time::Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

/// Follows leadership: tells the file watcher, and on a new leader fixes the cluster id if the
/// cluster has none yet (the bootstrap entry is the first thing a new cluster's leader writes).
async fn watch_leadership(
    raft: Raft,
    catalog: CatalogHandle,
    writer: Addr<CatalogWriter>,
    file_watcher: Option<Addr<CatalogFileWatcher>>,
    node_id: netting_raft::NodeId,
) {
    let mut metrics = raft.metrics();
    let mut was_leader = false;
    loop {
        let is_leader = metrics.borrow_and_update().current_leader == Some(node_id);
        if is_leader != was_leader {
            was_leader = is_leader;
            if let Some(watcher) = &file_watcher {
                watcher.do_send(LeadershipChanged { is_leader });
            }
            if is_leader {
                ensure_cluster_id(&raft, &catalog, &writer).await;
            }
        }
        if metrics.changed().await.is_err() {
            return;
        }
    }
}

async fn ensure_cluster_id(raft: &Raft, catalog: &CatalogHandle, writer: &Addr<CatalogWriter>) {
    // Wait until everything committed before this term is applied, so a cluster id set by an
    // earlier leader is seen before deciding there is none.
    if raft.ensure_linearizable().await.is_err() {
        return;
    }
    if catalog.read(|c| c.cluster_id().is_some()) {
        return;
    }
    let cluster_id = uuid::Uuid::new_v4().to_string();
    match writer
        .send(Propose::internal(CatalogCommand::InitCluster {
            cluster_id,
        }))
        .await
    {
        Ok(Ok(done)) => tracing::info!(version = done.version, "cluster id fixed"),
        Ok(Err(err)) => tracing::debug!(error = %err, "cluster id not set by this leader"),
        Err(_) => {}
    }
}

async fn wait_for_signal() -> anyhow::Result<()> {
    use tokio::signal::unix::{SignalKind, signal};
    let mut term = signal(SignalKind::terminate()).context("cannot listen for SIGTERM")?;
    tokio::select! {
        _ = term.recv() => {}
        res = tokio::signal::ctrl_c() => res.context("cannot listen for Ctrl-C")?,
    }
    Ok(())
}
