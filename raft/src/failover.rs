//! Faster elections when the leader's process is gone.
//!
//! openraft 0.9 protects a leader with a lease: a voter that heard from its leader within
//! `election_timeout_max` refuses to vote, and a follower starts an election only after the
//! lease *plus* a random election timeout of silence. That random part is there so that
//! followers do not all stand at once when nobody knows whether the leader is alive. Often a
//! follower does know: a leader killed or stopped closes its connections, and nothing is
//! listening at its address any more.
//!
//! So each follower holds a `LeaderLiveness` stream open to its leader. When the stream breaks
//! (or cannot be opened at all) the follower still waits until the leader has been silent for
//! the whole lease — no voter would grant its vote earlier, and a leader that is only slow to
//! answer keeps sending heartbeats and so is left alone — and then starts the election itself
//! instead of waiting out the random timeout too. Followers go one after the other, ordered by
//! node id, so that two of them do not split the vote. A broken stream alone never starts an
//! election; a partition, where nothing is closed, is left to the ordinary timers.

use std::collections::BTreeSet;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use netting_proto::raft::v1 as pb;
use netting_proto::raft::v1::raft_client::RaftClient;
use openraft::ServerState;
use tokio::sync::watch;
use tokio::time::Instant;

use crate::network::{ClusterIdentity, PeerChannels};
use crate::types::{NodeId, Raft};

/// Counter of elections this replica started because its leader's connection closed.
pub const FAST_ELECTIONS_TOTAL: &str = "netting_raft_fast_elections_total";

/// Registers the description of this module's metric with the installed recorder.
pub fn describe_metrics() {
    metrics::describe_counter!(
        FAST_ELECTIONS_TOTAL,
        metrics::Unit::Count,
        "Elections this replica started because its leader's connection closed and the leader stayed silent for its lease."
    );
}

/// A little past the lease, so that a voter whose last heartbeat came a moment after ours has
/// seen its lease run out too.
const LEASE_MARGIN: Duration = Duration::from_millis(10);

/// Pause before opening the stream again after a leader turned out to be alive.
const REOPEN_PAUSE: Duration = Duration::from_millis(100);

/// When this replica last heard from a leader (an AppendEntries it did not refuse as stale).
/// Written by the Raft server, read by [`FastFailover`].
#[derive(Debug, Clone, Default)]
pub struct LeaderContact {
    last: Arc<Mutex<Option<Instant>>>,
}

impl LeaderContact {
    pub fn record(&self) {
        if let Ok(mut last) = self.last.lock() {
            *last = Some(Instant::now());
        }
    }

    pub fn last(&self) -> Option<Instant> {
        self.last.lock().ok().and_then(|last| *last)
    }
}

/// What a follower whose liveness stream to its leader broke does next.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AfterBreak {
    /// The leader spoke after the break: it is alive; watch it again.
    LeaderAlive,
    /// Silent, but not yet for long enough: look again at this instant.
    WaitUntil(Instant),
    /// Silent for the lease and this follower's turn: start an election.
    Elect,
}

/// Decides, from when the stream broke and when the leader last spoke, whether to stand now.
/// `turn_delay` is this follower's place in the queue of followers (0 for the first).
pub fn after_break(
    now: Instant,
    broke_at: Instant,
    last_contact: Option<Instant>,
    lease: Duration,
    turn_delay: Duration,
) -> AfterBreak {
    // A leader can speak a moment after its stream broke (a heartbeat already on the wire);
    // only contact well after the break shows it is alive.
    if last_contact.is_some_and(|at| at > broke_at + LEASE_MARGIN) {
        return AfterBreak::LeaderAlive;
    }
    // Voters heard the leader last about when this follower did: their leases run from there.
    let silent_since = last_contact.unwrap_or(broke_at);
    let stand_at = silent_since + lease + LEASE_MARGIN + turn_delay;
    if now >= stand_at {
        AfterBreak::Elect
    } else {
        AfterBreak::WaitUntil(stand_at)
    }
}

/// This follower's place among the voters that may replace `leader`, by node id.
pub fn turn(voters: &BTreeSet<NodeId>, leader: NodeId, me: NodeId) -> usize {
    voters
        .iter()
        .filter(|id| **id != leader)
        .position(|id| *id == me)
        .unwrap_or(0)
}

/// Watches the leader's liveness stream and stands for election when it is gone.
#[derive(Clone)]
pub struct FastFailover {
    pub node_id: NodeId,
    pub raft: Raft,
    pub channels: Arc<PeerChannels>,
    pub identity: ClusterIdentity,
    pub contact: LeaderContact,
    /// openraft's leader lease: its `election_timeout_max`.
    pub lease: Duration,
    /// Between one follower's turn and the next: long enough for a vote request to arrive.
    pub turn_gap: Duration,
}

impl std::fmt::Debug for FastFailover {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FastFailover")
            .field("node_id", &self.node_id)
            .field("lease", &self.lease)
            .field("turn_gap", &self.turn_gap)
            .finish_non_exhaustive()
    }
}

/// The leader a follower follows, as Raft last reported it.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Followed {
    leader: NodeId,
    term: u64,
    address: String,
    voters: BTreeSet<NodeId>,
}

impl FastFailover {
    /// Runs until `stop` turns true or Raft shuts down.
    pub async fn run(self, mut stop: watch::Receiver<bool>) {
        let mut metrics = self.raft.metrics();
        loop {
            let followed = {
                let m = metrics.borrow_and_update();
                self.followed(&m)
            };
            let Some(followed) = followed else {
                tokio::select! {
                    changed = metrics.changed() => if changed.is_err() { return },
                    _ = stop.wait_for(|s| *s) => return,
                }
                continue;
            };
            tokio::select! {
                () = self.watch(&followed, &mut metrics) => {}
                _ = stop.wait_for(|s| *s) => return,
            }
        }
    }

    fn followed(&self, m: &openraft::RaftMetrics<NodeId, openraft::BasicNode>) -> Option<Followed> {
        if m.state != ServerState::Follower {
            return None;
        }
        let leader = m.current_leader.filter(|l| *l != self.node_id)?;
        let membership = m.membership_config.membership();
        let address = membership.get_node(&leader)?.addr.clone();
        let voters: BTreeSet<NodeId> = membership.voter_ids().collect();
        if !voters.contains(&self.node_id) {
            return None;
        }
        Some(Followed {
            leader,
            term: m.current_term,
            address,
            voters,
        })
    }

    /// Follows one leader until Raft reports a change, or until it is gone and an election was
    /// started.
    async fn watch(
        &self,
        followed: &Followed,
        metrics: &mut watch::Receiver<openraft::RaftMetrics<NodeId, openraft::BasicNode>>,
    ) {
        let still_followed = |m: &openraft::RaftMetrics<NodeId, openraft::BasicNode>| {
            self.followed(m).as_ref() == Some(followed)
        };
        loop {
            let broke = tokio::select! {
                () = self.hold_stream(followed) => Instant::now(),
                changed = metrics.wait_for(|m| !still_followed(m)) => {
                    let _ = changed;
                    return;
                }
            };
            let turn_delay =
                self.turn_gap
                    .saturating_mul(turn(&followed.voters, followed.leader, self.node_id) as u32);
            loop {
                match after_break(
                    Instant::now(),
                    broke,
                    self.contact.last(),
                    self.lease,
                    turn_delay,
                ) {
                    AfterBreak::LeaderAlive => {
                        tokio::time::sleep(REOPEN_PAUSE).await;
                        break;
                    }
                    AfterBreak::WaitUntil(at) => {
                        tokio::select! {
                            () = tokio::time::sleep_until(at) => {}
                            _ = metrics.wait_for(|m| !still_followed(m)) => return,
                        }
                    }
                    AfterBreak::Elect => {
                        if !still_followed(&metrics.borrow()) {
                            return;
                        }
                        tracing::info!(
                            leader = followed.leader,
                            term = followed.term,
                            "the leader's connection closed and it has been silent for its lease; \
                             standing for election"
                        );
                        metrics::counter!(FAST_ELECTIONS_TOTAL).increment(1);
                        if let Err(error) = self.raft.trigger().elect().await {
                            tracing::warn!(%error, "could not start an election");
                        }
                        // Whatever the outcome, Raft reports a new term; follow that.
                        let _ = metrics.wait_for(|m| !still_followed(m)).await;
                        return;
                    }
                }
            }
        }
    }

    /// Holds the liveness stream to the leader open; returns when it breaks or cannot be
    /// opened.
    async fn hold_stream(&self, followed: &Followed) {
        let channel = match self
            .channels
            .get_for_node(followed.leader, &followed.address)
        {
            Ok(channel) => channel,
            Err(error) => {
                tracing::debug!(%error, "leader address unusable; liveness not watched");
                return std::future::pending().await;
            }
        };
        let mut request = tonic::Request::new(pb::LeaderLivenessRequest {});
        if self.identity.stamp(request.metadata_mut()).is_err() {
            return std::future::pending().await;
        }
        match RaftClient::new(channel).leader_liveness(request).await {
            Ok(response) => {
                let mut stream = response.into_inner();
                // Nothing is ever sent; any end of the stream is the news.
                while let Ok(Some(_)) = stream.message().await {}
            }
            Err(status) => {
                tracing::debug!(leader = followed.leader, %status, "liveness stream refused");
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const LEASE: Duration = Duration::from_millis(300);

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    /// The first follower stands once the leader has been silent for the lease (plus the
    /// margin), counted from the leader's last heartbeat, not from the break.
    #[test]
    fn stands_after_the_lease_from_the_last_heartbeat() {
        let t = Instant::now();
        let heard = t;
        let broke = t + ms(30);
        assert_eq!(
            after_break(broke, broke, Some(heard), LEASE, Duration::ZERO),
            AfterBreak::WaitUntil(heard + LEASE + LEASE_MARGIN)
        );
        assert_eq!(
            after_break(heard + ms(309), broke, Some(heard), LEASE, Duration::ZERO),
            AfterBreak::WaitUntil(heard + ms(310))
        );
        assert_eq!(
            after_break(heard + ms(310), broke, Some(heard), LEASE, Duration::ZERO),
            AfterBreak::Elect
        );
    }

    /// A leader that keeps sending heartbeats after its stream broke is alive: nobody stands.
    #[test]
    fn a_leader_that_still_speaks_is_left_alone() {
        let t = Instant::now();
        let broke = t;
        let later_heartbeat = t + ms(50);
        assert_eq!(
            after_break(
                t + ms(400),
                broke,
                Some(later_heartbeat),
                LEASE,
                Duration::ZERO
            ),
            AfterBreak::LeaderAlive
        );
        // A heartbeat already on the wire when the stream broke proves nothing.
        let in_flight = t + ms(5);
        assert_eq!(
            after_break(t + ms(400), broke, Some(in_flight), LEASE, Duration::ZERO),
            AfterBreak::Elect
        );
    }

    /// Never heard from any leader (a restarted follower): the lease counts from the break.
    #[test]
    fn no_contact_counts_from_the_break() {
        let broke = Instant::now();
        assert_eq!(
            after_break(broke, broke, None, LEASE, Duration::ZERO),
            AfterBreak::WaitUntil(broke + ms(310))
        );
    }

    /// The second follower waits one turn more, so the first one's vote request reaches it.
    #[test]
    fn later_turns_wait_longer() {
        let t = Instant::now();
        assert_eq!(
            after_break(t + ms(320), t, Some(t), LEASE, ms(50)),
            AfterBreak::WaitUntil(t + ms(360))
        );
    }

    /// Turns go by node id among the voters other than the leader.
    #[test]
    fn turns_by_node_id() {
        let voters: BTreeSet<NodeId> = [1, 2, 3].into();
        assert_eq!(turn(&voters, 1, 2), 0);
        assert_eq!(turn(&voters, 1, 3), 1);
        assert_eq!(turn(&voters, 2, 1), 0);
        assert_eq!(turn(&voters, 2, 3), 1);
        assert_eq!(turn(&voters, 3, 1), 0);
    }
}
