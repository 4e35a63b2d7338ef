//! Finding the leader and getting a request to it.
//!
//! A follower forwards writes (and linearizable reads) to the leader over the one cached
//! channel it keeps per peer, marking the request as forwarded. A replica that receives a
//! forwarded request but has lost leadership in the meantime answers UNAVAILABLE instead of
//! forwarding again, so a request never loops; the original replica then waits for the new
//! leader and tries once more. The retry carries the request id the first replica gave the
//! write, so when the first try did commit, the state machine answers the retry with that
//! first result instead of applying it again.

use std::sync::Arc;
use std::time::Duration;

use actix::Recipient;
use netting_proto::catalog::v1 as pb;
use netting_proto::catalog::v1::cluster_client::ClusterClient;
use netting_proto::retry::FailureKind;
use netting_raft::catalog::ApplyError;
use netting_raft::network::PeerChannels;
use netting_raft::{CatalogHandle, NodeId};
use tokio::time::Instant;
use tonic::transport::Channel;
use tonic::{Request, Status};

use super::consensus::Consensus;
use super::request_ids::RequestIds;
use crate::actors::catalog_writer::{Propose, ProposeError};

/// Metadata key marking a request a follower forwarded to the leader.
pub const FORWARDED_HEADER: &str = "netting-forwarded";

/// Everything a gRPC handler needs of its replica. Cheap to clone.
#[derive(Clone)]
pub struct Replica {
    pub node_id: NodeId,
    pub cluster_name: String,
    pub advertise: String,
    pub admin_advertise: String,
    pub raft: Arc<dyn Consensus>,
    pub catalog: CatalogHandle,
    /// The leader's catalog writer (on a follower it answers `NotLeader`).
    pub writer: Recipient<Propose>,
    pub channels: Arc<PeerChannels>,
    /// Ids for writes that arrive without one.
    pub request_ids: Arc<RequestIds>,
    /// How long a request may wait for a leader.
    pub leader_wait: Duration,
    pub max_request_bytes: usize,
    /// Index of the last log entry this replica had when it started (see
    /// [`Replica::ensure_linearizable`]).
    pub startup_log_index: u64,
}

impl std::fmt::Debug for Replica {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Replica")
            .field("node_id", &self.node_id)
            .field("cluster_name", &self.cluster_name)
            .field("advertise", &self.advertise)
            .finish_non_exhaustive()
    }
}

/// Where a request that needs the leader should go.
#[derive(Debug, Clone)]
pub enum Route {
    Local,
    Forward { leader: NodeId, channel: Channel },
}

impl Replica {
    /// Confirms this replica leads (a quorum round trip) and waits until its state machine has
    /// applied everything committed before the call: then a read of the catalog is
    /// linearizable.
    ///
    /// openraft's read index is the leader's commit index, which lives in memory: a leader
    /// killed right after acknowledging a write comes back as leader of the same term (openraft
    /// restores it at startup) with the commit point it last persisted, which may be older than
    /// that write. Until it has committed its whole log again, its commit index says too
    /// little, so reads also wait for every entry it had at startup: found by the chaos lab as
    /// reads that missed a write acknowledged just before a `kill -9` of the leader.
    pub async fn ensure_linearizable(&self) -> Result<(), String> {
        let read_index = self.raft.ensure_linearizable().await?.unwrap_or(0);
        if read_index >= self.startup_log_index {
            return Ok(());
        }
        self.raft
            .wait_applied(self.startup_log_index, self.leader_wait)
            .await
            .map_err(|e| format!("the log this replica had at startup is not applied yet: {e}"))
    }

    /// The cluster's read index, asked of the leader (forwarded there by a follower): an index
    /// at or above every write acknowledged anywhere before the call. UNAVAILABLE when no
    /// leader confirms itself before the deadline.
    pub async fn read_index(&self, deadline: Instant) -> Result<u64, Status> {
        match self.route(deadline).await? {
            Route::Local => self.local_read_index(deadline).await,
            Route::Forward { channel, .. } => {
                let mut request = forwarded(pb::ReadIndexRequest {});
                request.set_timeout(deadline.saturating_duration_since(Instant::now()));
                let answer = ClusterClient::new(channel)
                    .read_index(request)
                    .await
                    .map_err(forwarding_failure)?;
                Ok(answer.into_inner().index)
            }
        }
    }

    /// The read index on this replica, which must lead: after [`Self::ensure_linearizable`]
    /// everything committed before the call is applied, so the applied index bounds it.
    pub async fn local_read_index(&self, deadline: Instant) -> Result<u64, Status> {
        tokio::time::timeout_at(deadline, self.ensure_linearizable())
            .await
            .map_err(|_| Status::unavailable("the leader could not confirm itself in time"))?
            .map_err(|e| Status::unavailable(format!("cannot confirm leadership: {e}")))?;
        Ok(self
            .raft
            .metrics()
            .borrow()
            .last_applied
            .map_or(0, |l| l.index))
    }

    /// The current leader, waiting up to the deadline for one to be elected.
    pub async fn route(&self, deadline: Instant) -> Result<Route, Status> {
        let mut metrics = self.raft.metrics();
        loop {
            let leader = {
                let m = metrics.borrow_and_update();
                m.current_leader.map(|id| {
                    let addr = m
                        .membership_config
                        .membership()
                        .get_node(&id)
                        .map(|n| n.addr.clone());
                    (id, addr)
                })
            };
            match leader {
                Some((id, _)) if id == self.node_id => return Ok(Route::Local),
                Some((id, Some(addr))) => {
                    let channel = self.channels.get(&addr).map_err(|e| {
                        Status::internal(format!("leader {id} has an unusable address: {e}"))
                    })?;
                    return Ok(Route::Forward {
                        leader: id,
                        channel,
                    });
                }
                // A leader we have no address for yet, or none: wait for the next change.
                _ => {}
            }
            match tokio::time::timeout_at(deadline, metrics.changed()).await {
                Ok(Ok(())) => continue,
                Ok(Err(_)) => return Err(Status::unavailable("raft has shut down")),
                Err(_) => {
                    return Err(Status::unavailable(
                        "no leader is known; the cluster may be electing one or have lost quorum",
                    ));
                }
            }
        }
    }

    /// Waits until the known leader differs from `old` (or the deadline passes), so a retry
    /// after a failed attempt does not spin against the same stale leader.
    pub async fn wait_leader_change(&self, old: Option<NodeId>, deadline: Instant) {
        let mut metrics = self.raft.metrics();
        let settle = Instant::now() + Duration::from_millis(500);
        let until = deadline.min(settle);
        loop {
            if metrics.borrow_and_update().current_leader != old {
                return;
            }
            match tokio::time::timeout_at(until, metrics.changed()).await {
                Ok(Ok(())) => continue,
                _ => return,
            }
        }
    }

    pub fn leader_deadline(&self) -> Instant {
        Instant::now() + self.leader_wait
    }

    /// Refuses a request larger than the configured limit, naming its largest field.
    pub fn check_size(&self, encoded_len: usize, largest_field: &str) -> Result<(), Status> {
        if encoded_len > self.max_request_bytes {
            return Err(Status::invalid_argument(format!(
                "request is {encoded_len} bytes, over the limit of {} bytes (largest field: {largest_field})",
                self.max_request_bytes
            )));
        }
        Ok(())
    }
}

/// Whether a request was already forwarded by another replica.
pub fn is_forwarded<T>(request: &Request<T>) -> bool {
    request.metadata().contains_key(FORWARDED_HEADER)
}

/// Builds a forwarded copy of a request body.
pub fn forwarded<T>(body: T) -> Request<T> {
    let mut request = Request::new(body);
    request.metadata_mut().insert(
        FORWARDED_HEADER,
        tonic::metadata::MetadataValue::from_static("1"),
    );
    request
}

/// What the client is told when forwarding to the leader failed. A broken or refused
/// connection to the leader becomes UNAVAILABLE: passed on as it is, its code would reach the
/// client without the error that explains it (UNKNOWN "transport error", RESOURCE_EXHAUSTED
/// from a GOAWAY) and read as the leader's answer. The leader's answers pass unchanged.
pub fn forwarding_failure(status: Status) -> Status {
    match netting_proto::retry::classify(&status) {
        // Not "not applied" even when the last try was never sent: an earlier try of the same
        // write may have reached the leader before its connection broke.
        FailureKind::NotSent | FailureKind::Transport => Status::unavailable(format!(
            "forwarding to the leader failed ({}); a write's outcome is unknown, and sent again with the same request id it is applied at most once",
            status.message()
        )),
        _ => status,
    }
}

/// The gRPC status for a proposal that did not succeed.
pub fn propose_status(err: ProposeError) -> Status {
    match err {
        ProposeError::Refused { error, .. } => apply_status(&error),
        ProposeError::NotLeader { .. } => {
            Status::unavailable("leadership changed during the write")
        }
        ProposeError::Unavailable(why) => Status::unavailable(format!(
            "the write's outcome is unknown ({why}); send it again with the same request id to apply it at most once and learn its outcome"
        )),
        ProposeError::WriterGone => Status::unavailable("the replica is shutting down"),
        ProposeError::QueueFull { queued } => Status::resource_exhausted(format!(
            "the leader is overloaded: {queued} catalog writes are already waiting; this one was not applied, retry later"
        )),
    }
}

fn apply_status(error: &ApplyError) -> Status {
    match error {
        ApplyError::ServiceNotFound(_) | ApplyError::EndpointNotFound { .. } => {
            Status::not_found(error.to_string())
        }
        ApplyError::OwnedByOtherSource { .. } | ApplyError::RequestExpired { .. } => {
            Status::failed_precondition(error.to_string())
        }
        ApplyError::ClusterIdAlreadySet(_) => Status::already_exists(error.to_string()),
    }
}

#[cfg(test)]
mod tests {
    use std::io;

    use netting_proto::retry::classify;
    use tonic::Code;

    use super::*;

    /// A broken connection to the leader reaches the client as UNAVAILABLE, which it retries,
    /// instead of a code that reads as the leader's answer once the status has crossed the
    /// wire without its source; the leader's own answers are passed on as they are.
    #[test]
    fn a_broken_forward_is_unavailable_and_an_answer_passes() {
        let broken = Status::from_error(Box::new(io::Error::new(
            io::ErrorKind::ConnectionReset,
            "peer reset",
        )));
        assert_eq!(broken.code(), Code::Unknown);
        let told = forwarding_failure(broken);
        assert_eq!(told.code(), Code::Unavailable, "{told:?}");
        assert!(told.message().contains("outcome is unknown"), "{told:?}");
        // As the client sees it: the code alone, no source.
        let over_the_wire = Status::new(told.code(), told.message());
        assert_eq!(classify(&over_the_wire), FailureKind::Unavailable);

        let refused = Status::from_error(Box::new(io::Error::new(
            io::ErrorKind::ConnectionRefused,
            "refused",
        )));
        let told = forwarding_failure(refused);
        assert_eq!(told.code(), Code::Unavailable);
        assert!(told.message().contains("outcome is unknown"), "{told:?}");

        for answer in [
            Status::not_found("service default/web not found"),
            Status::failed_precondition("owned by another source"),
            Status::unavailable("no leader"),
        ] {
            let told = forwarding_failure(answer.clone());
            assert_eq!(
                (told.code(), told.message()),
                (answer.code(), answer.message())
            );
        }
    }
}
