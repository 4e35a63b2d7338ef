//! How a replica with an empty data directory finds its place: bootstrap a new cluster, or join
//! the existing one.
//!
//! Like Consul's bootstrap-expect, a cluster is created once, by one replica (the lowest id,
//! ordinal 0 in a StatefulSet), and only after it has heard from every configured peer that
//! none has state. A replica that restarts with state just resumes. A replica that lost its
//! disk, or is new (the StatefulSet scaled up), joins through the leader; an existing cluster
//! is never initialised again.

use std::time::Duration;

use netting_proto::catalog::v1 as pb;
use netting_proto::catalog::v1::cluster_client::ClusterClient;
use netting_raft::network::PeerChannels;
use netting_raft::{NodeId, Raft};
use rand::Rng;

use crate::config::ReplicaConfig;

/// What a peer said when asked whether it has Raft state.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PeerState {
    Unreachable,
    Empty,
    HasState,
}

/// What a starting replica does.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StartAction {
    /// It has state: Raft resumes from disk.
    Resume,
    /// Create the cluster with every configured peer as a voter.
    Initialize,
    /// Ask the leader to add this replica.
    Join,
    /// Not every peer has answered yet; ask again.
    Wait,
}

/// Decides what a starting replica does. Pure, so every case is tested.
pub fn decide(has_local_state: bool, is_bootstrapper: bool, peers: &[PeerState]) -> StartAction {
    if has_local_state {
        return StartAction::Resume;
    }
    if !is_bootstrapper || peers.contains(&PeerState::HasState) {
        return StartAction::Join;
    }
    if peers.iter().all(|p| *p == PeerState::Empty) {
        StartAction::Initialize
    } else {
        StartAction::Wait
    }
}

const RPC_TIMEOUT: Duration = Duration::from_secs(2);
/// A join waits on the leader until this replica has caught up, which may take a snapshot.
const JOIN_TIMEOUT: Duration = Duration::from_secs(120);

async fn peer_state(channels: &PeerChannels, addr: &str) -> PeerState {
    let Ok(channel) = channels.get(addr) else {
        return PeerState::Unreachable;
    };
    let mut client = ClusterClient::new(channel);
    let mut request = tonic::Request::new(pb::StatusRequest {});
    request.set_timeout(RPC_TIMEOUT);
    match client.status(request).await {
        Ok(status) if status.get_ref().has_state => PeerState::HasState,
        Ok(_) => PeerState::Empty,
        Err(_) => PeerState::Unreachable,
    }
}

/// Runs until this replica is part of a cluster: bootstraps it, joins it, or resumes.
pub async fn establish(
    config: &ReplicaConfig,
    raft: &Raft,
    channels: &PeerChannels,
    has_local_state: bool,
) {
    let mut backoff = Backoff::new();
    loop {
        let mut peers = Vec::new();
        if !has_local_state && config.is_bootstrapper() {
            for (_, addr) in config.other_peers() {
                peers.push(peer_state(channels, addr).await);
            }
        }
        match decide(has_local_state, config.is_bootstrapper(), &peers) {
            StartAction::Resume => return,
            StartAction::Initialize => {
                let members: std::collections::BTreeMap<NodeId, openraft::BasicNode> = config
                    .peers
                    .iter()
                    .map(|(id, addr)| (*id, openraft::BasicNode::new(addr)))
                    .collect();
                tracing::info!(
                    ?members,
                    "no replica has state: bootstrapping a new cluster"
                );
                match raft.initialize(members).await {
                    Ok(()) => return,
                    // Someone else's entries reached us while we asked: we are part of a cluster.
                    Err(err) if raft.metrics().borrow().last_log_index.is_some() => {
                        tracing::info!(error = %err, "not bootstrapping: this replica already has log entries");
                        return;
                    }
                    Err(err) => tracing::warn!(error = %err, "bootstrap failed; retrying"),
                }
            }
            StartAction::Join => {
                if join(config, raft, channels).await {
                    return;
                }
            }
            StartAction::Wait => {
                tracing::info!(
                    ?peers,
                    "waiting for every peer to answer before bootstrapping"
                );
            }
        }
        tokio::time::sleep(backoff.next_delay()).await;
    }
}

/// One round of join attempts through each peer. True once this replica is a member.
async fn join(config: &ReplicaConfig, raft: &Raft, channels: &PeerChannels) -> bool {
    for (peer, addr) in config.other_peers() {
        if is_member_with_leader(raft, config.node_id) {
            return true;
        }
        let Ok(channel) = channels.get(addr) else {
            continue;
        };
        let mut client = ClusterClient::new(channel);
        let mut request = tonic::Request::new(pb::JoinRequest {
            node_id: config.node_id,
            address: config.grpc_advertise.clone(),
            cluster_name: config.cluster_name.clone(),
        });
        request.set_timeout(JOIN_TIMEOUT);
        match client.join(request).await {
            Ok(answer) => {
                let answer = answer.into_inner();
                tracing::info!(
                    leader = answer.leader_id,
                    already_member = answer.already_member,
                    "joined the cluster"
                );
                return true;
            }
            Err(status) if status.code() == tonic::Code::FailedPrecondition => {
                tracing::error!(peer, %status, "the cluster refused this replica");
            }
            Err(status) => tracing::debug!(peer, %status, "join through this peer failed"),
        }
    }
    is_member_with_leader(raft, config.node_id)
}

fn is_member_with_leader(raft: &Raft, node_id: NodeId) -> bool {
    let metrics = raft.metrics().borrow().clone();
    metrics.current_leader.is_some()
        && metrics
            .membership_config
            .membership()
            .voter_ids()
            .any(|id| id == node_id)
}

/// Exponential backoff with full jitter, so restarted replicas do not ask in lockstep.
#[derive(Debug)]
struct Backoff {
    current: Duration,
}

impl Backoff {
    const MIN: Duration = Duration::from_millis(200);
    const MAX: Duration = Duration::from_secs(5);

    fn new() -> Self {
        Self { current: Self::MIN }
    }

    fn next_delay(&mut self) -> Duration {
        let delay = rand::rng().random_range(Self::MIN..=self.current);
        self.current = (self.current * 2).min(Self::MAX);
        delay
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use PeerState::*;

    /// A replica with state never bootstraps or joins: it resumes.
    #[test]
    fn state_resumes() {
        assert_eq!(decide(true, true, &[Empty, Empty]), StartAction::Resume);
        assert_eq!(decide(true, false, &[]), StartAction::Resume);
    }

    /// Only the bootstrapper initialises, and only when every peer answered empty.
    #[test]
    fn bootstrap_needs_every_peer_empty() {
        assert_eq!(
            decide(false, true, &[Empty, Empty]),
            StartAction::Initialize
        );
        assert_eq!(
            decide(false, true, &[]),
            StartAction::Initialize,
            "a one-replica cluster"
        );
        assert_eq!(
            decide(false, true, &[Empty, Unreachable]),
            StartAction::Wait
        );
        assert_eq!(decide(false, false, &[]), StartAction::Join);
    }

    /// A bootstrapper that lost its disk joins the cluster its peers still have.
    #[test]
    fn wiped_bootstrapper_joins() {
        assert_eq!(
            decide(false, true, &[HasState, Unreachable]),
            StartAction::Join
        );
    }

    /// The backoff grows to its cap and never exceeds it.
    #[test]
    fn backoff_is_capped() {
        let mut backoff = Backoff::new();
        for _ in 0..20 {
            assert!(backoff.next_delay() <= Backoff::MAX);
        }
        assert_eq!(backoff.current, Backoff::MAX);
    }
}
