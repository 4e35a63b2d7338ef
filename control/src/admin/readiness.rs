//! When a replica is ready to serve: the decision as a plain function of the Raft metrics.
//!
//! Ready means all of:
//!
//! 1. the Raft core runs (no fatal error, not shutting down);
//! 2. a leader is known (the vote this replica holds is committed);
//! 3. this replica has applied an entry of the current term. A leader's first entry of its
//!    term is a blank entry, and once it is applied every entry committed by earlier leaders is
//!    applied too: this is what tells a restarted follower, or a leader just elected, that its
//!    catalog is no longer the one of an earlier term. Without it a follower whose log simply
//!    ends early would look caught up;
//! 4. its applied index is within [`ReadinessPolicy::max_apply_lag`] entries of the commit index
//!    it knows (for a follower, the leader's commit index as last sent to it).
//!
//! openraft 0.9's `RaftMetrics` has no commit index, so the caller asks the Raft core for it
//! (see [`RaftProbe::committed_index`](super::RaftProbe::committed_index)). A replica cannot know
//! entries the leader has not sent it yet; 3 bounds how stale that can make it.

use netting_raft::types::RaftMetrics;
use openraft::ServerState;
use serde::Serialize;

/// Default of [`ReadinessPolicy::max_apply_lag`]. Under a burst of writes a healthy replica's
/// applied index trails the commit index by the batches in flight; turning unready then would
/// push proxies off a replica that is fine, so a few dozen entries are tolerated.
pub const DEFAULT_MAX_APPLY_LAG: u64 = 64;

/// Tunables of [`readiness`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ReadinessPolicy {
    /// Committed entries this replica may still have to apply and be ready.
    pub max_apply_lag: u64,
}

impl Default for ReadinessPolicy {
    fn default() -> Self {
        Self {
            max_apply_lag: DEFAULT_MAX_APPLY_LAG,
        }
    }
}

/// Why a replica is not ready; serialised as the body of a 503 from `/readyz`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, thiserror::Error)]
#[serde(tag = "reason", rename_all = "snake_case")]
pub enum NotReady {
    #[error("the raft core stopped: {error}")]
    RaftStopped { error: String },
    #[error("the raft core did not answer within {timeout_ms} ms")]
    RaftUnresponsive { timeout_ms: u64 },
    #[error("the raft node is shutting down")]
    ShuttingDown,
    #[error("no leader is known in term {term} (this replica is {state})")]
    NoLeader { term: u64, state: &'static str },
    #[error(
        "no entry of the current term {term} is applied yet (last applied term: {applied_term:?})"
    )]
    PreviousTerm {
        term: u64,
        applied_term: Option<u64>,
    },
    #[error(
        "applied index {applied_index:?} is {lag} entries behind committed index {committed_index} (at most {max_lag} allowed)"
    )]
    Behind {
        applied_index: Option<u64>,
        committed_index: u64,
        lag: u64,
        max_lag: u64,
    },
}

/// Decides readiness from the node's metrics and the commit index it knows (see the module
/// documentation for the definition).
pub fn readiness(
    metrics: &RaftMetrics,
    committed: Option<u64>,
    policy: &ReadinessPolicy,
) -> Result<(), NotReady> {
    if let Err(fatal) = &metrics.running_state {
        return Err(NotReady::RaftStopped {
            error: fatal.to_string(),
        });
    }
    if metrics.state == ServerState::Shutdown {
        return Err(NotReady::ShuttingDown);
    }
    if metrics.current_leader.is_none() {
        return Err(NotReady::NoLeader {
            term: metrics.current_term,
            state: state_name(metrics.state),
        });
    }
    let applied_term = metrics
        .last_applied
        .as_ref()
        .map(|log_id| log_id.leader_id.term);
    if applied_term != Some(metrics.current_term) {
        return Err(NotReady::PreviousTerm {
            term: metrics.current_term,
            applied_term,
        });
    }
    let applied_index = metrics.last_applied.as_ref().map(|log_id| log_id.index);
    if let Some(committed_index) = committed {
        let lag = entries_behind(committed, applied_index);
        if lag > policy.max_apply_lag {
            return Err(NotReady::Behind {
                applied_index,
                committed_index,
                lag,
                max_lag: policy.max_apply_lag,
            });
        }
    }
    Ok(())
}

/// How many entries up to `ahead` are missing up to `behind`, where `None` means "no entry";
/// log indexes start at 0, so index `i` means `i + 1` entries.
pub(crate) fn entries_behind(ahead: Option<u64>, behind: Option<u64>) -> u64 {
    let count = |index: Option<u64>| index.map_or(0, |i| i.saturating_add(1));
    count(ahead).saturating_sub(count(behind))
}

/// Stable lower-case name of a server state, for JSON and messages.
pub(crate) fn state_name(state: ServerState) -> &'static str {
    match state {
        ServerState::Learner => "learner",
        ServerState::Follower => "follower",
        ServerState::Candidate => "candidate",
        ServerState::Leader => "leader",
        ServerState::Shutdown => "shutdown",
    }
}

#[cfg(test)]
mod tests {
    use openraft::error::Fatal;

    use super::*;
    use crate::admin::tests::support::{follower, leader, log_id};

    /// A follower that applied everything it knows committed, in the current term, is ready.
    #[test]
    fn caught_up_follower_is_ready() {
        let m = follower(2, 1, 5, Some(log_id(5, 40)));
        assert_eq!(readiness(&m, Some(40), &ReadinessPolicy::default()), Ok(()));
    }

    /// A leader is ready once it applied its own term's entries, even with writes in flight.
    #[test]
    fn leader_with_applied_blank_entry_is_ready() {
        let m = leader(1, 5, Some(log_id(5, 40)), 45);
        assert_eq!(readiness(&m, Some(41), &ReadinessPolicy::default()), Ok(()));
    }

    /// Without a known leader (election, partition, never initialised) a replica is not ready.
    #[test]
    fn no_leader_is_not_ready() {
        let mut m = follower(2, 1, 5, Some(log_id(5, 40)));
        m.current_leader = None;
        m.state = ServerState::Candidate;
        assert_eq!(
            readiness(&m, Some(40), &ReadinessPolicy::default()),
            Err(NotReady::NoLeader {
                term: 5,
                state: "candidate"
            })
        );
    }

    /// A replica whose last applied entry is of an older term (a new leader before its blank
    /// entry is applied, or a restarted follower) is not ready even if nothing is pending.
    #[test]
    fn applied_entry_of_older_term_is_not_ready() {
        let m = leader(1, 6, Some(log_id(5, 40)), 40);
        assert_eq!(
            readiness(&m, Some(40), &ReadinessPolicy::default()),
            Err(NotReady::PreviousTerm {
                term: 6,
                applied_term: Some(5)
            })
        );
        let empty = follower(2, 1, 1, None);
        assert_eq!(
            readiness(&empty, None, &ReadinessPolicy::default()),
            Err(NotReady::PreviousTerm {
                term: 1,
                applied_term: None
            })
        );
    }

    /// Applied more than `max_apply_lag` entries behind the known commit index is not ready;
    /// exactly `max_apply_lag` behind still is.
    #[test]
    fn apply_lag_beyond_policy_is_not_ready() {
        let policy = ReadinessPolicy { max_apply_lag: 3 };
        let m = follower(2, 1, 5, Some(log_id(5, 40)));
        assert_eq!(readiness(&m, Some(43), &policy), Ok(()));
        assert_eq!(
            readiness(&m, Some(44), &policy),
            Err(NotReady::Behind {
                applied_index: Some(40),
                committed_index: 44,
                lag: 4,
                max_lag: 3
            })
        );
    }

    /// A Raft core that stopped on a fatal error, or is shutting down, is not ready.
    #[test]
    fn stopped_or_shutting_down_is_not_ready() {
        let mut m = follower(2, 1, 5, Some(log_id(5, 40)));
        m.running_state = Err(Fatal::Panicked);
        assert!(matches!(
            readiness(&m, Some(40), &ReadinessPolicy::default()),
            Err(NotReady::RaftStopped { .. })
        ));
        let mut m = follower(2, 1, 5, Some(log_id(5, 40)));
        m.state = ServerState::Shutdown;
        assert_eq!(
            readiness(&m, Some(40), &ReadinessPolicy::default()),
            Err(NotReady::ShuttingDown)
        );
    }

    /// The JSON body of a 503 names the reason in snake case with its details.
    #[test]
    fn not_ready_serialises_with_reason_tag() -> Result<(), serde_json::Error> {
        let json = serde_json::to_value(NotReady::NoLeader {
            term: 3,
            state: "follower",
        })?;
        assert_eq!(
            json,
            serde_json::json!({"reason": "no_leader", "term": 3, "state": "follower"})
        );
        Ok(())
    }

    /// Entry counting treats `None` as an empty log and index `i` as `i + 1` entries.
    #[test]
    fn entries_behind_counts_from_index_zero() {
        assert_eq!(entries_behind(None, None), 0);
        assert_eq!(entries_behind(Some(0), None), 1);
        assert_eq!(entries_behind(Some(10), Some(7)), 3);
        assert_eq!(entries_behind(Some(7), Some(10)), 0);
    }
}
