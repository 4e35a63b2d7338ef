//! Storage and Raft: opens the data directory and starts openraft on it.

use std::sync::Arc;

use anyhow::Context as _;
use netting_raft::network::{ChannelConfig, ClusterIdentity, NetworkFactory, PeerChannels};
use netting_raft::storage::{self, NodeIdentity};
use netting_raft::{CatalogHandle, Raft};
use openraft::SnapshotPolicy;

use crate::config::ReplicaConfig;

/// A running Raft member and what the rest of the replica needs of it.
pub(super) struct Consensus {
    pub(super) raft: Raft,
    pub(super) catalog: CatalogHandle,
    /// One cached channel per peer, shared by Raft, forwarding and elections.
    pub(super) channels: Arc<PeerChannels>,
    pub(super) identity: ClusterIdentity,
    /// Whether the data directory held any Raft state (vote or log) at start.
    pub(super) has_local_state: bool,
    /// The last log entry on disk at start: reads wait for it before trusting the commit
    /// index (see `grpc::Replica::ensure_linearizable`).
    pub(super) startup_log_index: u64,
}

impl Consensus {
    pub(super) async fn open(config: &ReplicaConfig) -> anyhow::Result<Self> {
        let identity = NodeIdentity {
            node_id: config.node_id,
            cluster_name: config.cluster_name.clone(),
        };
        let data_dir = config.data_dir.display();
        let (mut log_store, state_machine) = storage::open(&config.data_dir, &identity)
            .with_context(|| format!("cannot open the data directory {data_dir}"))?;
        let has_local_state = log_store
            .has_state()
            .with_context(|| format!("cannot read the data directory {data_dir}"))?;
        let catalog = state_machine.catalog();

        let channels = Arc::new(PeerChannels::new(ChannelConfig::default()));
        let cluster_identity =
            ClusterIdentity::following_catalog(config.cluster_name.clone(), catalog.clone())
                .context("--cluster-name")?;
        let network = NetworkFactory::new(channels.clone(), cluster_identity.clone());
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
            Arc::new(raft_config(config)?),
            network,
            log_store,
            state_machine,
        )
        .await
        .context("cannot start Raft")?;
        Ok(Self {
            raft,
            catalog,
            channels,
            identity: cluster_identity,
            has_local_state,
            startup_log_index,
        })
    }
}

fn raft_config(config: &ReplicaConfig) -> anyhow::Result<openraft::Config> {
    openraft::Config {
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
    .context("invalid Raft timing")
}

fn millis(d: std::time::Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}
