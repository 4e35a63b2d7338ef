//! What the gRPC handlers need of the Raft node: a seam, as `admin::probe` is for the admin
//! endpoints, so that routing, the catalog and the cluster services run in tests against a
//! scripted node, with no storage, network or election.

use std::future::Future;
use std::pin::Pin;
use std::time::Duration;

use netting_raft::{NodeId, Raft};
use openraft::error::{ChangeMembershipError, ClientWriteError, RaftError};
use openraft::{BasicNode, ChangeMembers};

use crate::admin::probe::RaftProbe;

/// A future the trait's methods return (object-safe, so handlers hold an `Arc<dyn Consensus>`).
pub type ConsensusFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// Why a membership change was not made, by kind.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum MembershipError {
    /// Another change is still being committed; retry once it is.
    #[error("another membership change is in progress: {0}")]
    InProgress(String),
    /// This node lost leadership before the change was made.
    #[error("leadership changed: {0}")]
    NotLeader(String),
    /// Refused for good (no such learner, an empty membership) or Raft has stopped.
    #[error("{0}")]
    Refused(String),
}

/// The Raft node as the gRPC handlers use it: its metrics and commit index (the probe), reads
/// confirmed by a quorum, and membership changes.
pub trait Consensus: RaftProbe {
    /// Confirms this node leads with a quorum round trip and waits until everything committed
    /// before the call is applied; returns the read index (`None` before the first entry).
    fn ensure_linearizable(&self) -> ConsensusFuture<'_, Result<Option<u64>, String>>;

    /// Waits until this node has applied `index`, or `timeout` passes.
    fn wait_applied(
        &self,
        index: u64,
        timeout: Duration,
    ) -> ConsensusFuture<'_, Result<(), String>>;

    /// Adds `id` as a learner at `node`'s address, returning once it has caught up.
    fn add_learner(
        &self,
        id: NodeId,
        node: BasicNode,
    ) -> ConsensusFuture<'_, Result<(), MembershipError>>;

    /// Commits a membership change (`retain`: keep removed voters as learners).
    fn change_membership(
        &self,
        change: ChangeMembers<NodeId, BasicNode>,
        retain: bool,
    ) -> ConsensusFuture<'_, Result<(), MembershipError>>;
}

impl Consensus for Raft {
    fn ensure_linearizable(&self) -> ConsensusFuture<'_, Result<Option<u64>, String>> {
        Box::pin(async move {
            Raft::ensure_linearizable(self)
                .await
                .map(|read| read.map(|id| id.index))
                .map_err(|e| e.to_string())
        })
    }

    fn wait_applied(
        &self,
        index: u64,
        timeout: Duration,
    ) -> ConsensusFuture<'_, Result<(), String>> {
        Box::pin(async move {
            self.wait(Some(timeout))
                .applied_index_at_least(Some(index), "a read after a restart")
                .await
                .map(drop)
                .map_err(|e| e.to_string())
        })
    }

    fn add_learner(
        &self,
        id: NodeId,
        node: BasicNode,
    ) -> ConsensusFuture<'_, Result<(), MembershipError>> {
        Box::pin(async move {
            Raft::add_learner(self, id, node, true)
                .await
                .map(drop)
                .map_err(membership_error)
        })
    }

    fn change_membership(
        &self,
        change: ChangeMembers<NodeId, BasicNode>,
        retain: bool,
    ) -> ConsensusFuture<'_, Result<(), MembershipError>> {
        Box::pin(async move {
            Raft::change_membership(self, change, retain)
                .await
                .map(drop)
                .map_err(membership_error)
        })
    }
}

fn membership_error(
    err: RaftError<NodeId, ClientWriteError<NodeId, BasicNode>>,
) -> MembershipError {
    let text = err.to_string();
    match err {
        RaftError::APIError(ClientWriteError::ForwardToLeader(_)) => {
            MembershipError::NotLeader(text)
        }
        RaftError::APIError(ClientWriteError::ChangeMembershipError(
            ChangeMembershipError::InProgress(_),
        )) => MembershipError::InProgress(text),
        _ => MembershipError::Refused(text),
    }
}

#[cfg(test)]
pub(crate) mod fake;

#[cfg(test)]
mod tests {
    use openraft::error::{EmptyMembership, Fatal, ForwardToLeader, InProgress};

    use super::*;

    /// openraft's membership errors are told apart by their variant, never by their text.
    #[test]
    fn membership_errors_by_kind() {
        let api = |e: ClientWriteError<NodeId, BasicNode>| membership_error(RaftError::APIError(e));
        assert!(matches!(
            api(ClientWriteError::ForwardToLeader(ForwardToLeader::empty())),
            MembershipError::NotLeader(_)
        ));
        assert!(matches!(
            api(ClientWriteError::ChangeMembershipError(
                ChangeMembershipError::InProgress(InProgress {
                    committed: None,
                    membership_log_id: None,
                })
            )),
            MembershipError::InProgress(_)
        ));
        assert!(matches!(
            api(ClientWriteError::ChangeMembershipError(
                ChangeMembershipError::EmptyMembership(EmptyMembership {})
            )),
            MembershipError::Refused(_)
        ));
        assert!(matches!(
            membership_error(RaftError::Fatal(Fatal::Stopped)),
            MembershipError::Refused(_)
        ));
    }
}
