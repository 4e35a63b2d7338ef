//! The server half of the Raft network: the `netting.raft.v1.Raft` gRPC service, answered by
//! the local `openraft::Raft`.

use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use futures::Stream;
use netting_proto::raft::v1 as pb;
use netting_proto::raft::v1::raft_server::RaftServer;
use openraft::ServerState;
use tokio::sync::watch;
use tonic::{Request, Response, Status};

use super::MAX_MESSAGE_BYTES;
use super::convert;
use super::identity::ClusterIdentity;
use super::remote::raft_error_to_status;
use crate::elections::{VoterState, pre_vote_answer};
use crate::types::Raft;

type LivenessStream = Pin<Box<dyn Stream<Item = Result<pb::LeaderLivenessNotice, Status>> + Send>>;

/// Serves Raft RPCs from the other replicas of this cluster, and refuses those of others.
#[derive(Clone)]
pub struct RaftGrpc {
    raft: Raft,
    identity: ClusterIdentity,
    /// False while this replica withholds its vote; see [`RaftGrpc::withhold_votes_until_contacted`].
    may_vote: Arc<AtomicBool>,
    /// Turns true when the replica stops; ends the liveness streams it serves.
    stopping: Option<watch::Receiver<bool>>,
}

impl std::fmt::Debug for RaftGrpc {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RaftGrpc")
            .field("identity", &self.identity)
            .finish_non_exhaustive()
    }
}

impl RaftGrpc {
    pub fn new(raft: Raft, identity: ClusterIdentity) -> Self {
        Self {
            raft,
            identity,
            may_vote: Arc::new(AtomicBool::new(true)),
            stopping: None,
        }
    }

    /// Ends the liveness streams this replica serves when `stopping` turns true, so that its
    /// followers learn of a graceful stop as fast as of a crash, and the server can drain.
    pub fn with_stopping(mut self, stopping: watch::Receiver<bool>) -> Self {
        self.stopping = Some(stopping);
        self
    }

    /// For a replica that started with an empty data directory: refuse vote requests until a
    /// leader has reached it with entries or a snapshot, or `at_most` has passed. A voter that
    /// lost its disk has forgotten whom it voted for, and voting again in the same term could
    /// give that term two leaders; any election it took part in is over once a leader reaches
    /// it, or after a few election timeouts. The time bound keeps a brand-new cluster, whose
    /// replicas all start empty, able to elect its first leader.
    pub fn withhold_votes_until_contacted(self, at_most: std::time::Duration) -> Self {
        self.may_vote.store(false, Ordering::SeqCst);
        let may_vote = self.may_vote.clone();
        tokio::spawn(async move {
            tokio::time::sleep(at_most).await;
            may_vote.store(true, Ordering::SeqCst);
        });
        self
    }

    fn contacted_by_leader(&self) {
        if !self.may_vote.swap(true, Ordering::SeqCst) {
            tracing::info!("reached by a leader; this replica votes again");
        }
    }

    /// The service to add to the replica's tonic router, beside the catalog service.
    pub fn service(raft: Raft, identity: ClusterIdentity) -> RaftServer<Self> {
        Self::new(raft, identity).into_service()
    }

    /// This handler as a tonic service with Raft-sized message limits.
    ///
    /// tonic's default 4 MiB limit is below what Raft sends: a snapshot chunk is up to
    /// openraft's `snapshot_max_chunk_size` (3 MiB by default) plus metadata, and an
    /// AppendEntries batch holds up to `max_payload_entries` command batches of any size.
    pub fn into_service(self) -> RaftServer<Self> {
        RaftServer::new(self)
            .max_decoding_message_size(MAX_MESSAGE_BYTES)
            .max_encoding_message_size(MAX_MESSAGE_BYTES)
    }

    fn admit<T>(&self, rpc: &'static str, request: &Request<T>) -> Result<(), Status> {
        self.identity.check(request.metadata()).map_err(|refusal| {
            // A misconfigured peer retries with backoff (at most a few times a second), so
            // this cannot flood the log, and the operator must see it.
            tracing::warn!(rpc, remote = ?request.remote_addr(), %refusal, "refused raft rpc");
            Status::from(refusal)
        })
    }
}

#[tonic::async_trait]
impl pb::raft_server::Raft for RaftGrpc {
    type LeaderLivenessStream = LivenessStream;

    async fn leader_liveness(
        &self,
        request: Request<pb::LeaderLivenessRequest>,
    ) -> Result<Response<Self::LeaderLivenessStream>, Status> {
        self.admit("leader_liveness", &request)?;
        if !self.raft.metrics().borrow().state.is_leader() {
            return Err(Status::failed_precondition(
                "this replica is not the leader",
            ));
        }
        let mut stopping = self.stopping.clone();
        // Sends nothing while the replica runs; ends when it stops (or with the connection).
        let ends = async move {
            match stopping.as_mut() {
                Some(stopping) => {
                    let _ = stopping.wait_for(|stop| *stop).await;
                }
                None => std::future::pending::<()>().await,
            }
            Err(Status::unavailable("the replica is stopping"))
        };
        Ok(Response::new(Box::pin(futures::stream::once(ends))))
    }

    async fn append_entries(
        &self,
        request: Request<pb::AppendEntriesRequest>,
    ) -> Result<Response<pb::AppendEntriesResponse>, Status> {
        self.admit("append_entries", &request)?;
        let rpc = convert::append_entries_request_from_proto(request.into_inner())?;
        let response = self
            .raft
            .append_entries(rpc)
            .await
            .map_err(|e| raft_error_to_status(&e))?;
        if response.is_success() {
            self.contacted_by_leader();
        }
        Ok(Response::new(convert::append_entries_response_to_proto(
            &response,
        )))
    }

    async fn pre_vote(
        &self,
        request: Request<pb::PreVoteRequest>,
    ) -> Result<Response<pb::PreVoteResponse>, Status> {
        self.admit("pre_vote", &request)?;
        let candidate = request.into_inner().candidate;
        let withholding = !self.may_vote.load(Ordering::SeqCst);
        let raft = self.raft.clone();
        // On a task of its own: a candidate that gives up drops this handler, and openraft
        // logs an ERROR when the answer it computed finds nobody waiting.
        let voter = tokio::spawn(async move {
            raft.with_raft_state(move |st| VoterState {
                is_leader: st.server_state == ServerState::Leader,
                withholding,
                vote_committed: st.vote_ref().is_committed(),
                renewed: st.vote_last_modified(),
            })
            .await
        })
        .await
        .map_err(|e| Status::internal(format!("pre-vote task failed: {e}")))?
        .map_err(|e| Status::unavailable(format!("raft is not running: {e}")))?;
        // openraft's lease is its election_timeout_max.
        let lease = std::time::Duration::from_millis(self.raft.config().election_timeout_max);
        let answer = pre_vote_answer(tokio::time::Instant::now(), voter, lease);
        tracing::debug!(candidate, granted = answer.granted, "pre-vote");
        Ok(Response::new(pb::PreVoteResponse {
            granted: answer.granted,
            lease_remaining_ms: answer.lease_remaining.map_or(0, |r| {
                u64::try_from(r.as_millis()).unwrap_or(u64::MAX).max(1)
            }),
        }))
    }

    async fn vote(
        &self,
        request: Request<pb::VoteRequest>,
    ) -> Result<Response<pb::VoteResponse>, Status> {
        self.admit("vote", &request)?;
        let rpc = convert::vote_request_from_proto(request.into_inner())?;
        if !self.may_vote.load(Ordering::SeqCst) {
            // A refusal, not an error: the candidate counts it as a vote not granted, as when
            // openraft refuses within a leader's lease, and nobody logs an error for what
            // happens at every bootstrap. Its own vote is what openraft would send; its log is
            // empty, since the first entries to arrive end the withholding.
            let vote = self.raft.metrics().borrow().vote;
            tracing::debug!(
                candidate = rpc.vote.leader_id().voted_for(),
                "vote withheld: this replica started without data and no leader has reached it yet"
            );
            return Ok(Response::new(convert::vote_response_to_proto(
                &openraft::raft::VoteResponse::new(vote, None, false),
            )));
        }
        let response = self
            .raft
            .vote(rpc)
            .await
            .map_err(|e| raft_error_to_status(&e))?;
        Ok(Response::new(convert::vote_response_to_proto(&response)))
    }

    async fn install_snapshot(
        &self,
        request: Request<pb::InstallSnapshotRequest>,
    ) -> Result<Response<pb::InstallSnapshotResponse>, Status> {
        self.admit("install_snapshot", &request)?;
        let rpc = convert::install_snapshot_request_from_proto(request.into_inner())?;
        let response = self
            .raft
            .install_snapshot(rpc)
            .await
            .map_err(|e| raft_error_to_status(&e))?;
        self.contacted_by_leader();
        Ok(Response::new(convert::install_snapshot_response_to_proto(
            &response,
        )))
    }
}
