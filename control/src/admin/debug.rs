//! The `/debug/raft` view: this replica's Raft state as JSON, built by a plain function.

use std::collections::BTreeMap;

use netting_raft::AppliedState;
use netting_raft::NodeId;
use netting_raft::types::{LogId, RaftMetrics};
use serde::Serialize;

use super::readiness::{entries_behind, state_name};

/// What `/debug/raft` shows. Field names are part of the operator's interface: add, don't rename.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct RaftDebugView {
    pub node_id: NodeId,
    /// `learner`, `follower`, `candidate`, `leader` or `shutdown`.
    pub state: &'static str,
    /// `null` while the Raft core runs, else its fatal error.
    pub fatal_error: Option<String>,
    pub term: u64,
    pub vote: VoteView,
    pub leader: Option<NodeId>,
    pub last_log_index: Option<u64>,
    /// Committed index this replica knows; `null` when none or when the Raft core did not answer.
    pub committed_index: Option<u64>,
    pub last_applied: Option<LogIdView>,
    /// Applied index as published by the state machine (the catalog's view of `last_applied`).
    pub applied_index: u64,
    pub catalog_version: u64,
    pub membership: MembershipView,
    /// Per peer, only on the leader.
    pub replication: Option<BTreeMap<NodeId, ReplicationView>>,
    pub snapshot: Option<LogIdView>,
    pub purged: Option<LogIdView>,
    /// On the leader: milliseconds since a quorum last acknowledged it.
    pub millis_since_quorum_ack: Option<u64>,
}

/// A log id: the term and node of the leader that wrote it, and its index.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct LogIdView {
    pub term: u64,
    pub leader: NodeId,
    pub index: u64,
}

/// The vote this replica holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct VoteView {
    pub term: u64,
    pub node_id: NodeId,
    /// Granted by a quorum: the voted node is the leader of `term`.
    pub committed: bool,
}

/// The effective membership: voters and learners with the address replicas dial.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct MembershipView {
    /// Log id of the entry that introduced this membership.
    pub log_id: Option<LogIdView>,
    /// More than one set while a joint-consensus change is in progress.
    pub voter_sets: Vec<Vec<NodeId>>,
    pub voters: Vec<MemberView>,
    pub learners: Vec<MemberView>,
}

/// One member of the cluster.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct MemberView {
    pub id: NodeId,
    /// `null` when the membership names the node without an address.
    pub addr: Option<String>,
}

/// How far one peer's log is behind the leader's.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct ReplicationView {
    /// Highest index the peer acknowledged; `null` before its first acknowledgement.
    pub matched_index: Option<u64>,
    /// Entries of the leader's log the peer has not acknowledged.
    pub lag_entries: u64,
}

/// Builds the `/debug/raft` view.
pub fn debug_view(
    metrics: &RaftMetrics,
    applied: AppliedState,
    committed_index: Option<u64>,
) -> RaftDebugView {
    let stored = &*metrics.membership_config;
    let membership = stored.membership();
    let member = |id: NodeId| MemberView {
        id,
        addr: membership.get_node(&id).map(|node| node.addr.clone()),
    };
    RaftDebugView {
        node_id: metrics.id,
        state: state_name(metrics.state),
        fatal_error: metrics
            .running_state
            .as_ref()
            .err()
            .map(ToString::to_string),
        term: metrics.current_term,
        vote: VoteView {
            term: metrics.vote.leader_id.term,
            node_id: metrics.vote.leader_id.node_id,
            committed: metrics.vote.committed,
        },
        leader: metrics.current_leader,
        last_log_index: metrics.last_log_index,
        committed_index,
        last_applied: metrics.last_applied.as_ref().map(log_id_view),
        applied_index: applied.applied_index,
        catalog_version: applied.catalog_version,
        membership: MembershipView {
            log_id: stored.log_id().as_ref().map(log_id_view),
            voter_sets: membership
                .get_joint_config()
                .iter()
                .map(|set| set.iter().copied().collect())
                .collect(),
            voters: membership.voter_ids().map(member).collect(),
            learners: membership.learner_ids().map(member).collect(),
        },
        replication: replication_lag(metrics).map(|peers| {
            peers
                .into_iter()
                .map(|(peer, (matched_index, lag_entries))| {
                    (
                        peer,
                        ReplicationView {
                            matched_index,
                            lag_entries,
                        },
                    )
                })
                .collect()
        }),
        snapshot: metrics.snapshot.as_ref().map(log_id_view),
        purged: metrics.purged.as_ref().map(log_id_view),
        millis_since_quorum_ack: metrics.millis_since_quorum_ack,
    }
}

/// On the leader, each peer's (matched index, entries behind the leader's last log index).
/// The leader's own progress is left out: it is not replication.
pub(crate) fn replication_lag(
    metrics: &RaftMetrics,
) -> Option<BTreeMap<NodeId, (Option<u64>, u64)>> {
    let replication = metrics.replication.as_ref()?;
    Some(
        replication
            .iter()
            .filter(|(peer, _)| **peer != metrics.id)
            .map(|(peer, matched)| {
                let matched = matched.as_ref().map(|log_id| log_id.index);
                (
                    *peer,
                    (matched, entries_behind(metrics.last_log_index, matched)),
                )
            })
            .collect(),
    )
}

fn log_id_view(log_id: &LogId) -> LogIdView {
    LogIdView {
        term: log_id.leader_id.term,
        leader: log_id.leader_id.node_id,
        index: log_id.index,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::admin::tests::support::{follower, leader, log_id};

    /// On the leader the view lists each follower's matched index and lag, never the leader.
    #[test]
    fn leader_view_has_replication_without_self() {
        let m = leader(1, 5, Some(log_id(5, 40)), 45);
        let view = debug_view(&m, AppliedState::default(), Some(44));
        let replication = view.replication.unwrap_or_default();
        assert_eq!(replication.keys().copied().collect::<Vec<_>>(), vec![2, 3]);
        assert_eq!(
            replication.get(&2),
            Some(&ReplicationView {
                matched_index: Some(43),
                lag_entries: 2
            })
        );
        assert_eq!(
            replication.get(&3),
            Some(&ReplicationView {
                matched_index: None,
                lag_entries: 46
            })
        );
        assert_eq!(view.state, "leader");
        assert_eq!(view.committed_index, Some(44));
    }

    /// A follower's view has no replication and lists members with their addresses.
    #[test]
    fn follower_view_lists_members_with_addresses() {
        let m = follower(2, 1, 5, Some(log_id(5, 40)));
        let applied = AppliedState {
            applied_index: 40,
            catalog_version: 38,
        };
        let view = debug_view(&m, applied, None);
        assert_eq!(view.replication, None);
        assert_eq!(view.leader, Some(1));
        assert_eq!(view.catalog_version, 38);
        assert_eq!(
            view.membership
                .voters
                .iter()
                .map(|m| m.id)
                .collect::<Vec<_>>(),
            vec![1, 2, 3]
        );
        assert_eq!(
            view.membership.voters[0].addr.as_deref(),
            Some("10.0.0.1:7000")
        );
        assert_eq!(
            view.membership
                .learners
                .iter()
                .map(|m| m.id)
                .collect::<Vec<_>>(),
            vec![4]
        );
    }
}
