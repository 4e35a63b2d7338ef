//! The `Cluster` gRPC service: status, joining replicas and removing them.
//!
//! Membership changes run on the leader (followers forward them). A joining replica is added as
//! a learner, and promoted to voter only once it has caught up, so a new replica never counts
//! towards a quorum it cannot serve. Removal is refused when the voters left could not form a
//! quorum of replicas that are replicating right now.

use std::collections::{BTreeMap, BTreeSet};

use netting_proto::catalog::v1 as pb;
use netting_proto::catalog::v1::cluster_client::ClusterClient;
use netting_proto::catalog::v1::cluster_server::Cluster;
use netting_raft::NodeId;
use netting_raft::types::RaftMetrics;
use openraft::{BasicNode, ChangeMembers, ServerState};
use tonic::{Request, Response, Status};

use super::consensus::MembershipError;
use super::routing::{self, Replica, Route};

/// The cluster service of one replica.
#[derive(Debug, Clone)]
pub struct ClusterService {
    replica: Replica,
}

impl ClusterService {
    pub fn new(replica: Replica) -> Self {
        Self { replica }
    }

    /// Runs `local` on the leader, forwarding the request there when this replica does not lead.
    async fn on_leader<Req, Resp, L, LFut, F, FFut>(
        &self,
        request: Request<Req>,
        local: L,
        forward: F,
    ) -> Result<Response<Resp>, Status>
    where
        L: FnOnce(Req) -> LFut,
        LFut: Future<Output = Result<Resp, Status>>,
        F: FnOnce(ClusterClient<tonic::transport::Channel>, Request<Req>) -> FFut,
        FFut: Future<Output = Result<Response<Resp>, Status>>,
    {
        let already_forwarded = routing::is_forwarded(&request);
        let body = request.into_inner();
        match self.replica.route(self.replica.leader_deadline()).await? {
            Route::Local => local(body).await.map(Response::new),
            Route::Forward { leader, .. } if already_forwarded => Err(Status::unavailable(
                format!("this replica is no longer the leader (leader: {leader}); retry"),
            )),
            Route::Forward { channel, .. } => {
                forward(ClusterClient::new(channel), routing::forwarded(body))
                    .await
                    .map_err(routing::forwarding_failure)
            }
        }
    }

    async fn join_on_leader(&self, req: pb::JoinRequest) -> Result<pb::JoinResponse, Status> {
        let raft = &self.replica.raft;
        let metrics = raft.metrics().borrow().clone();
        let membership = metrics.membership_config.membership().clone();
        let node = BasicNode::new(&req.address);
        let is_voter = membership.voter_ids().any(|id| id == req.node_id);
        let known_addr = membership.get_node(&req.node_id).map(|n| n.addr.clone());
        if is_voter && known_addr.as_deref() == Some(req.address.as_str()) {
            return Ok(pb::JoinResponse {
                leader_id: self.replica.node_id,
                already_member: true,
            });
        }
        if known_addr.is_some() && known_addr.as_deref() != Some(req.address.as_str()) {
            // Same replica, new address (e.g. a pod rescheduled with another IP): update it.
            let nodes = BTreeMap::from([(req.node_id, node.clone())]);
            raft.change_membership(ChangeMembers::SetNodes(nodes), true)
                .await
                .map_err(membership_status)?;
        }
        if !is_voter {
            tracing::info!(node = req.node_id, address = %req.address, "adding replica as learner");
            // Blocking: returns once the learner has caught up with the log.
            raft.add_learner(req.node_id, node)
                .await
                .map_err(membership_status)?;
            tracing::info!(node = req.node_id, "promoting caught-up learner to voter");
            raft.change_membership(
                ChangeMembers::AddVoterIds(BTreeSet::from([req.node_id])),
                false,
            )
            .await
            .map_err(membership_status)?;
        }
        Ok(pb::JoinResponse {
            leader_id: self.replica.node_id,
            already_member: false,
        })
    }

    async fn remove_on_leader(
        &self,
        req: pb::RemoveMemberRequest,
    ) -> Result<pb::RemoveMemberResponse, Status> {
        let raft = &self.replica.raft;
        let metrics = raft.metrics().borrow().clone();
        let membership = metrics.membership_config.membership().clone();
        let voters: BTreeSet<NodeId> = membership.voter_ids().collect();
        let is_member = membership.get_node(&req.node_id).is_some();
        if !is_member {
            return Err(Status::not_found(format!(
                "node {} is not a member",
                req.node_id
            )));
        }
        if voters.contains(&req.node_id) {
            let remaining: BTreeSet<NodeId> = voters
                .iter()
                .copied()
                .filter(|v| *v != req.node_id)
                .collect();
            let healthy = healthy_voters(&self.replica, &metrics, &remaining).await;
            check_removal_keeps_quorum(&remaining, &healthy)?;
            raft.change_membership(
                ChangeMembers::RemoveVoters(BTreeSet::from([req.node_id])),
                false,
            )
            .await
            .map_err(membership_status)?;
        } else {
            raft.change_membership(
                ChangeMembers::RemoveNodes(BTreeSet::from([req.node_id])),
                false,
            )
            .await
            .map_err(membership_status)?;
        }
        let voters = raft
            .metrics()
            .borrow()
            .membership_config
            .membership()
            .voter_ids()
            .collect();
        Ok(pb::RemoveMemberResponse { voters })
    }
}

/// Refuses a removal unless a majority of the remaining voters is healthy.
pub fn check_removal_keeps_quorum(
    remaining: &BTreeSet<NodeId>,
    healthy: &BTreeSet<NodeId>,
) -> Result<(), Status> {
    if remaining.is_empty() {
        return Err(Status::failed_precondition("cannot remove the last voter"));
    }
    let healthy: BTreeSet<NodeId> = remaining.intersection(healthy).copied().collect();
    let needed = remaining.len() / 2 + 1;
    if healthy.len() < needed {
        return Err(Status::failed_precondition(format!(
            "removing would leave voters {remaining:?} of which only {healthy:?} answer and are \
             caught up; {needed} are needed for a quorum"
        )));
    }
    Ok(())
}

/// Entries a voter may lag behind the leader and still count as healthy for a removal.
const HEALTHY_LAG: u64 = 1_000;
const PROBE_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(1);

/// Voters that answer a status probe right now and are close to the leader's log. Replication
/// metrics alone cannot tell: a follower killed a moment ago still shows a recent match.
async fn healthy_voters(
    replica: &Replica,
    metrics: &RaftMetrics,
    voters: &BTreeSet<NodeId>,
) -> BTreeSet<NodeId> {
    let last = metrics.last_log_index.unwrap_or(0);
    let membership = metrics.membership_config.membership();
    let probes = voters.iter().copied().map(|id| {
        let addr = membership.get_node(&id).map(|n| n.addr.clone());
        async move {
            if id == replica.node_id {
                return Some(id);
            }
            let channel = replica.channels.get(&addr?).ok()?;
            let mut request = Request::new(pb::StatusRequest {});
            request.set_timeout(PROBE_TIMEOUT);
            let status = ClusterClient::new(channel)
                .status(request)
                .await
                .ok()?
                .into_inner();
            (status.applied_index + HEALTHY_LAG >= last).then_some(id)
        }
    });
    futures::future::join_all(probes)
        .await
        .into_iter()
        .flatten()
        .collect()
}

fn membership_status(err: MembershipError) -> Status {
    match err {
        MembershipError::InProgress(_) | MembershipError::NotLeader(_) => {
            Status::unavailable(err.to_string())
        }
        MembershipError::Refused(_) => Status::failed_precondition(err.to_string()),
    }
}

fn state_name(state: ServerState) -> &'static str {
    match state {
        ServerState::Leader => "leader",
        ServerState::Follower => "follower",
        ServerState::Candidate => "candidate",
        ServerState::Learner => "learner",
        ServerState::Shutdown => "shutdown",
    }
}

#[tonic::async_trait]
impl Cluster for ClusterService {
    async fn status(
        &self,
        _: Request<pb::StatusRequest>,
    ) -> Result<Response<pb::StatusResponse>, Status> {
        let replica = &self.replica;
        let committed = replica
            .raft
            .committed_index()
            .await
            .map_err(|e| Status::unavailable(format!("raft is not running: {e}")))?;
        let metrics = replica.raft.metrics().borrow().clone();
        let membership = metrics.membership_config.membership();
        let voters: BTreeSet<NodeId> = membership.voter_ids().collect();
        let replication = metrics.replication.clone().unwrap_or_default();
        let members = membership
            .nodes()
            .map(|(id, node)| pb::Member {
                node_id: *id,
                address: node.addr.clone(),
                role: if voters.contains(id) {
                    "voter"
                } else {
                    "learner"
                }
                .to_owned(),
                matched_index: if *id == metrics.id && metrics.state == ServerState::Leader {
                    metrics.last_log_index
                } else {
                    replication.get(id).and_then(|m| m.map(|l| l.index))
                },
            })
            .collect();
        let applied = replica.catalog.applied();
        let cluster_id = replica.catalog.read(|c| c.cluster_id().map(str::to_owned));
        Ok(Response::new(pb::StatusResponse {
            node_id: replica.node_id,
            address: replica.advertise.clone(),
            state: state_name(metrics.state).to_owned(),
            term: metrics.current_term,
            leader_id: metrics.current_leader,
            last_log_index: metrics.last_log_index.unwrap_or(0),
            committed_index: committed.unwrap_or(0),
            applied_index: metrics.last_applied.map_or(0, |l| l.index),
            catalog_version: applied.catalog_version,
            cluster_id: cluster_id.unwrap_or_default(),
            cluster_name: replica.cluster_name.clone(),
            members,
            has_state: metrics.current_term > 0 || metrics.last_log_index.is_some(),
            admin_address: replica.admin_advertise.clone(),
        }))
    }

    async fn join(
        &self,
        request: Request<pb::JoinRequest>,
    ) -> Result<Response<pb::JoinResponse>, Status> {
        let req = request.get_ref();
        if req.cluster_name != self.replica.cluster_name {
            return Err(Status::failed_precondition(format!(
                "replica {} belongs to cluster {:?}, this is {:?}",
                req.node_id, req.cluster_name, self.replica.cluster_name
            )));
        }
        if req.address.is_empty() || !req.address.contains(':') {
            return Err(Status::invalid_argument(format!(
                "address: {:?} is not HOST:PORT",
                req.address
            )));
        }
        self.on_leader(
            request,
            |req| self.join_on_leader(req),
            |mut client, req| async move { client.join(req).await },
        )
        .await
    }

    async fn remove_member(
        &self,
        request: Request<pb::RemoveMemberRequest>,
    ) -> Result<Response<pb::RemoveMemberResponse>, Status> {
        self.on_leader(
            request,
            |req| self.remove_on_leader(req),
            |mut client, req| async move { client.remove_member(req).await },
        )
        .await
    }

    async fn read_index(
        &self,
        request: Request<pb::ReadIndexRequest>,
    ) -> Result<Response<pb::ReadIndexResponse>, Status> {
        let deadline = self.replica.leader_deadline();
        self.on_leader(
            request,
            |_| async move {
                let index = self.replica.local_read_index(deadline).await?;
                Ok(pb::ReadIndexResponse {
                    leader_id: self.replica.node_id,
                    index,
                })
            },
            |mut client, req| async move { client.read_index(req).await },
        )
        .await
    }
}

#[cfg(test)]
mod tests;
