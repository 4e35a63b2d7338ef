//! Wires one replica together and runs it until SIGTERM or Ctrl-C. Each part is built by its
//! own module from the validated configuration: storage and Raft ([`consensus`]), config
//! distribution ([`discovery`]), the catalog's sources ([`sources`]) and the gRPC server
//! ([`servers`]); [`Running`] holds what shutdown needs, and stops it in one place.

mod consensus;
mod discovery;
mod servers;
mod sources;

use std::sync::Arc;

use actix::Actor;
use anyhow::Context as _;
use netting_raft::Raft;
use netting_raft::elections::{ElectionDriver, ElectionSettings};
use netting_raft::network::RaftGrpc;
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::actors::catalog_writer::{CatalogWriter, WriterLimits};
use crate::admin;
use crate::bootstrap;
use crate::config::ReplicaConfig;
use crate::grpc::Replica;
use crate::grpc::request_ids::RequestIds;
use consensus::Consensus;

/// Entries in flight from the catalog writer at once: enough to keep the pipeline busy while
/// one batch is being fsynced, few enough that batches stay large under load.
const WRITER_IN_FLIGHT: usize = 2;

/// Longest each shutdown step may take. Nothing acknowledged depends on a clean shutdown:
/// every acknowledged write is already fsynced on a quorum.
const SHUTDOWN_STEP: std::time::Duration = std::time::Duration::from_secs(3);

/// Runs one replica until it is asked to stop.
pub async fn run(config: ReplicaConfig) -> anyhow::Result<()> {
    let running = Running::start(&config).await?;
    tracing::info!(
        node = config.node_id,
        grpc = %config.grpc_listen,
        admin = %config.admin_listen,
        advertise = %config.grpc_advertise,
        data_dir = %config.data_dir.display(),
        has_local_state = running.has_local_state,
        "replica started"
    );
    wait_for_signal().await?;
    running.stop().await;
    actix::System::current().stop();
    Ok(())
}

/// A started replica: what stopping it needs.
pub struct Running {
    stop: watch::Sender<bool>,
    grpc: JoinHandle<Result<(), tonic::transport::Error>>,
    admin: JoinHandle<()>,
    raft: Raft,
    has_local_state: bool,
}

impl std::fmt::Debug for Running {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Running")
            .field("has_local_state", &self.has_local_state)
            .finish_non_exhaustive()
    }
}

impl Running {
    pub async fn start(config: &ReplicaConfig) -> anyhow::Result<Self> {
        let prometheus =
            admin::install_recorder().context("cannot install the metrics recorder")?;
        // Bind before starting Raft so that a busy port fails start-up cleanly.
        let grpc_listener = TcpListener::bind(config.grpc_listen)
            .await
            .with_context(|| format!("--grpc-listen {}: cannot bind", config.grpc_listen))?;
        let admin_listener = TcpListener::bind(config.admin_listen)
            .await
            .with_context(|| format!("--admin-listen {}: cannot bind", config.admin_listen))?;
        let consensus = Consensus::open(config).await?;
        let Consensus {
            raft,
            catalog,
            channels,
            identity,
            has_local_state,
            startup_log_index,
        } = consensus;

        let writer = CatalogWriter::new(
            raft.clone(),
            config.node_id,
            WriterLimits {
                max_batch: config.write_batch_max,
                max_in_flight: WRITER_IN_FLIGHT,
                max_queued: config.write_queue_max,
            },
        )
        .start();
        let replica = Replica {
            node_id: config.node_id,
            cluster_name: config.cluster_name.clone(),
            advertise: config.grpc_advertise.clone(),
            admin_advertise: config.admin_listen.to_string(),
            raft: Arc::new(raft.clone()),
            catalog: catalog.clone(),
            writer: writer.clone().recipient(),
            channels: channels.clone(),
            request_ids: Arc::new(RequestIds::new(config.node_id)),
            leader_wait: config.write_timeout,
            max_request_bytes: config.max_request_bytes,
            startup_log_index,
        };

        let (stop, stop_rx) = watch::channel(false);
        let stopped = |mut rx: watch::Receiver<bool>| async move {
            let _ = rx.wait_for(|stop| *stop).await;
        };
        let (discovery, sessions) = discovery::start(config, replica.clone(), &catalog);
        let discovery = discovery.with_shutdown(stop_rx.clone());
        let mut raft_service =
            RaftGrpc::new(raft.clone(), identity.clone()).with_stopping(stop_rx.clone());
        if !has_local_state {
            raft_service =
                raft_service.withhold_votes_until_contacted(config.raft.election_timeout_max * 3);
        }
        let grpc = servers::spawn_grpc(
            config,
            grpc_listener,
            replica,
            discovery,
            raft_service,
            stopped(stop_rx.clone()),
        );
        let admin = tokio::spawn(admin::serve(
            admin_listener,
            admin::AdminState::new(raft.clone(), catalog.clone(), prometheus)
                .with_sessions(sessions),
            stopped(stop_rx.clone()),
        ));
        tokio::spawn(admin::export_raft_metrics(
            raft.clone(),
            catalog.clone(),
            stopped(stop_rx.clone()),
        ));

        if config.raft.pre_vote || config.raft.fast_failover {
            let elections = ElectionDriver {
                node_id: config.node_id,
                raft: raft.clone(),
                channels: channels.clone(),
                identity,
                settings: ElectionSettings {
                    lease: config.raft.election_timeout_max,
                    timeout_min: config.raft.election_timeout_min,
                    timeout_max: config.raft.election_timeout_max,
                    // A vote request reaches the next follower well within a heartbeat
                    // interval.
                    turn_gap: config.raft.heartbeat_interval,
                    pre_vote: config.raft.pre_vote,
                    fast_failover: config.raft.fast_failover,
                },
            };
            tokio::spawn(elections.run(stop_rx.clone()));
        }
        let sources = sources::start(config, &catalog, &writer);
        tokio::spawn(sources::follow_leadership(
            raft.clone(),
            catalog,
            writer,
            sources,
            config.node_id,
        ));
        {
            let config = config.clone();
            let raft = raft.clone();
            tokio::spawn(async move {
                bootstrap::establish(&config, &raft, &channels, has_local_state).await
            });
        }
        Ok(Self {
            stop,
            grpc,
            admin,
            raft,
            has_local_state,
        })
    }

    /// Drains the servers and shuts Raft down. Each step is bounded: a peer frozen
    /// mid-request (SIGSTOP, a partition) must not keep this replica from exiting.
    pub async fn stop(self) {
        tracing::info!("stopping: draining servers and shutting Raft down");
        let _ = self.stop.send(true);
        let drained = tokio::time::timeout(SHUTDOWN_STEP, async {
            let _ = self.grpc.await;
            let _ = self.admin.await;
        })
        .await;
        if drained.is_err() {
            tracing::warn!("servers did not drain in time; closing remaining connections");
        }
        match tokio::time::timeout(SHUTDOWN_STEP, self.raft.shutdown()).await {
            Ok(Ok(())) => {}
            Ok(Err(err)) => tracing::warn!(error = %err, "raft did not shut down cleanly"),
            Err(_) => tracing::warn!("raft did not shut down in time"),
        }
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
