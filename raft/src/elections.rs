//! When a replica stands for election: pre-vote, and faster failover when the leader is gone.
//!
//! openraft 0.9 protects a leader with a lease: a voter that heard from its leader within
//! `election_timeout_max` refuses to vote. A follower stands after the lease plus a random
//! election timeout of silence, and it raises its term when it does, win or lose. Two things
//! follow, and this module changes both.
//!
//! **Pre-vote.** A replica cut off from the others stands again and again, alone, and its term
//! climbs. When the network heals, its higher term reaches the leader in the first
//! AppendEntries answer and the leader steps down: one healed follower costs the cluster an
//! election (the chaos lab measured writes stalled and sidecars waiting about 1.8 s after such
//! heals). Raft's answer is pre-vote (Ongaro's thesis, section 9.6; etcd and Consul use it),
//! which openraft 0.9 does not have. So openraft's own election timer is turned off and this
//! driver keeps its rule — stand after the lease (when a leader was known) plus a random
//! timeout of silence — but first asks the other voters, with the `PreVote` RPC, whether they
//! would vote now: a voter says yes when it is not the leader and has not heard from one within
//! its lease. Only with a quorum of yeses does the replica stand. An isolated replica never
//! gets one, keeps its term, and rejoins without disturbing anyone. The real vote still
//! decides; pre-vote only keeps hopeless candidacies from raising terms.
//!
//! **Fast failover.** The random part of the timeout is there because a follower cannot tell a
//! dead leader from a slow one. Often it can: a leader that is killed or stopped closes its
//! connections. So each follower holds a `LeaderLiveness` stream open to its leader; once it
//! breaks (or cannot be reopened) the follower stands as soon as the leader has been silent
//! for the lease — no voter would grant its vote sooner, and a leader that still sends
//! heartbeats keeps moving that moment and is left alone. Followers take turns by node id, a
//! heartbeat interval apart, so two of them do not split the vote. A partition, where nothing
//! is closed, is left to the ordinary timeout.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::Duration;

use netting_proto::raft::v1 as pb;
use netting_proto::raft::v1::raft_client::RaftClient;
use openraft::ServerState;
use rand::Rng;
use tokio::sync::watch;
use tokio::time::Instant;

use crate::network::{ClusterIdentity, PeerChannels};
use crate::types::{NodeId, Raft, RaftMetrics};

/// Counter of elections this replica started, by `trigger`: `timeout` (the ordinary rule) or
/// `leader_gone` (the leader's connection closed and its lease ran out).
pub const ELECTIONS_STARTED_TOTAL: &str = "netting_raft_elections_started_total";
/// Counter of pre-vote rounds this replica asked for, by `result`: `granted` or `refused`.
pub const PRE_VOTES_TOTAL: &str = "netting_raft_pre_votes_total";

/// A little past the lease, so that a voter whose last heartbeat came a moment after ours has
/// seen its lease run out too.
const LEASE_MARGIN: Duration = Duration::from_millis(10);

/// Pause before opening the liveness stream again after it broke.
const REOPEN_PAUSE: Duration = Duration::from_millis(100);

/// Registers the descriptions of this module's metrics with the installed recorder.
pub fn describe_metrics() {
    metrics::describe_counter!(
        ELECTIONS_STARTED_TOTAL,
        metrics::Unit::Count,
        "Elections this replica started, by trigger: timeout, or leader_gone (its connection closed and its lease ran out)."
    );
    metrics::describe_counter!(
        PRE_VOTES_TOTAL,
        metrics::Unit::Count,
        "Pre-vote rounds this replica asked for before standing, by result (granted, refused)."
    );
}

/// How elections are timed.
#[derive(Debug, Clone, Copy)]
pub struct ElectionSettings {
    /// openraft's leader lease: its `election_timeout_max`.
    pub lease: Duration,
    /// The random election timeout is drawn from `timeout_min..timeout_max`.
    pub timeout_min: Duration,
    pub timeout_max: Duration,
    /// Between one follower's turn and the next after the leader is gone: long enough for a
    /// vote request to arrive (a heartbeat interval).
    pub turn_gap: Duration,
    /// Ask the other voters before standing. When off, openraft's own timer starts ordinary
    /// elections and only the fast path is driven from here.
    pub pre_vote: bool,
    /// Stand as soon as a closed leader's lease has run out.
    pub fast_failover: bool,
}

/// A voter's answer to a pre-vote request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PreVoteAnswer {
    pub granted: bool,
    /// Set when refused only because a leader was heard from within the lease.
    pub lease_remaining: Option<Duration>,
}

/// What a voter knows when asked: mirrors openraft's own check of a real vote request.
#[derive(Debug, Clone, Copy)]
pub struct VoterState {
    pub is_leader: bool,
    /// It started with an empty disk and withholds its vote until a leader reaches it.
    pub withholding: bool,
    /// Its vote is for a leader that won (committed), and was last renewed at `renewed`.
    pub vote_committed: bool,
    pub renewed: Option<Instant>,
}

/// Would this voter grant a vote now?
pub fn pre_vote_answer(now: Instant, voter: VoterState, lease: Duration) -> PreVoteAnswer {
    let refused = |lease_remaining| PreVoteAnswer {
        granted: false,
        lease_remaining,
    };
    if voter.is_leader || voter.withholding {
        return refused(None);
    }
    if voter.vote_committed
        && let Some(renewed) = voter.renewed
        && now <= renewed + lease
    {
        return refused(Some(renewed + lease - now));
    }
    PreVoteAnswer {
        granted: true,
        lease_remaining: None,
    }
}

/// A quorum of every configuration (two during a membership change) granted.
pub fn is_quorum(granted: &BTreeSet<NodeId>, joint: &[BTreeSet<NodeId>]) -> bool {
    !joint.is_empty()
        && joint
            .iter()
            .all(|config| config.intersection(granted).count() * 2 > config.len())
}

/// This follower's place among the voters that may replace `leader`, by node id.
pub fn turn(voters: &BTreeSet<NodeId>, leader: NodeId, me: NodeId) -> usize {
    voters
        .iter()
        .filter(|id| **id != leader)
        .position(|id| *id == me)
        .unwrap_or(0)
}

/// Whether Raft's metrics say this replica may stand: a follower or candidate that votes.
fn electable_in(m: &RaftMetrics, me: NodeId) -> bool {
    matches!(m.state, ServerState::Follower | ServerState::Candidate)
        && m.membership_config
            .membership()
            .voter_ids()
            .any(|id| id == me)
}

/// What the driver reads from Raft each time it decides.
#[derive(Debug, Clone)]
struct View {
    state: ServerState,
    term: u64,
    /// The leader this replica's vote is committed to, if any.
    leader: Option<NodeId>,
    vote_committed: bool,
    renewed: Option<Instant>,
    joint: Vec<BTreeSet<NodeId>>,
    addresses: BTreeMap<NodeId, String>,
}

impl View {
    fn voters(&self) -> BTreeSet<NodeId> {
        self.joint.iter().flatten().copied().collect()
    }

    /// Nothing happened since `before` was read and a pre-vote started at `asked_at`: same term,
    /// same state, and no word from a leader or candidate since.
    fn still_silent(&self, before: &View, asked_at: Instant) -> bool {
        self.term == before.term
            && self.state == before.state
            && self.renewed.is_none_or(|renewed| renewed < asked_at)
    }
}

/// A liveness stream that broke: to which leader, in which term, and when.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Broken {
    leader: NodeId,
    term: u64,
}

/// Decides when this replica stands for election, and stands.
#[derive(Clone)]
pub struct ElectionDriver {
    pub node_id: NodeId,
    pub raft: Raft,
    pub channels: Arc<PeerChannels>,
    pub identity: ClusterIdentity,
    pub settings: ElectionSettings,
}

impl std::fmt::Debug for ElectionDriver {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ElectionDriver")
            .field("node_id", &self.node_id)
            .field("settings", &self.settings)
            .finish_non_exhaustive()
    }
}

impl ElectionDriver {
    /// Runs until `stop` turns true or Raft shuts down.
    pub async fn run(self, mut stop: watch::Receiver<bool>) {
        let (broken_tx, mut broken) = watch::channel(None);
        if self.settings.fast_failover {
            let watcher = self.clone();
            let stop = stop.clone();
            tokio::spawn(async move { watcher.watch_leaders(broken_tx, stop).await });
        }
        let mut metrics = self.raft.metrics();
        let started = Instant::now();
        // The random timeout, drawn again whenever the silence it measures starts again.
        let mut drawn_for: Option<Instant> = None;
        let mut timeout = self.settings.timeout_min;
        // After an attempt that did not lead anywhere: not again before this.
        let mut not_before: Option<Instant> = None;
        loop {
            let Some(view) = self.view().await else {
                return;
            };
            let voters = view.voters();
            let electable = matches!(view.state, ServerState::Follower | ServerState::Candidate)
                && voters.contains(&self.node_id);
            if !electable {
                // Leaders, learners: nothing to time until Raft says otherwise. Checked on the
                // metrics themselves, so a busy leader does not wake this loop on every write.
                let me = self.node_id;
                tokio::select! {
                    changed = metrics.wait_for(|m| electable_in(m, me)) => if changed.is_err() { return },
                    _ = stop.wait_for(|s| *s) => return,
                }
                // The metrics can run ahead of the state just read; do not spin on the gap.
                tokio::time::sleep(LEASE_MARGIN).await;
                continue;
            }
            if voters.len() == 1 {
                // The only voter: nobody to ask and nobody to wait for.
                if self.settings.pre_vote && view.state != ServerState::Candidate {
                    self.stand("timeout").await;
                }
                tokio::select! {
                    _ = tokio::time::timeout(
                        self.settings.timeout_max,
                        metrics.wait_for(|m| m.state == ServerState::Leader),
                    ) => {}
                    _ = stop.wait_for(|s| *s) => return,
                }
                continue;
            }

            let silent_since = view.renewed.unwrap_or(started);
            if drawn_for != Some(silent_since) {
                drawn_for = Some(silent_since);
                timeout = self.random_timeout();
            }
            let ordinary = self.settings.pre_vote.then(|| {
                let lease = if view.vote_committed {
                    self.settings.lease
                } else {
                    Duration::ZERO
                };
                silent_since + lease + timeout
            });
            let gone = *broken.borrow_and_update();
            let fast = gone
                .filter(|b| Some(b.leader) == view.leader && b.term == view.term)
                .map(|b| {
                    let place = u32::try_from(turn(&voters, b.leader, self.node_id)).unwrap_or(0);
                    silent_since
                        + self.settings.lease
                        + LEASE_MARGIN
                        + self.settings.turn_gap.saturating_mul(place)
                });
            let Some(due) = [ordinary, fast].into_iter().flatten().min() else {
                // Without pre-vote openraft times ordinary elections; only a break matters.
                tokio::select! {
                    changed = broken.changed() => if changed.is_err() { return },
                    _ = stop.wait_for(|s| *s) => return,
                }
                continue;
            };
            let due = not_before.map_or(due, |nb| due.max(nb));
            if Instant::now() < due {
                tokio::select! {
                    () = tokio::time::sleep_until(due) => {}
                    changed = broken.changed() => if changed.is_err() { return },
                    _ = stop.wait_for(|s| *s) => return,
                }
                // Look again: a heartbeat may have moved the silence on meanwhile.
                continue;
            }
            let trigger = if fast.is_some_and(|f| f <= Instant::now()) {
                "leader_gone"
            } else {
                "timeout"
            };
            let retry = self.random_timeout();
            if !self.settings.pre_vote {
                self.stand(trigger).await;
                not_before = Some(Instant::now() + retry);
                continue;
            }
            let asked_at = Instant::now();
            match self.pre_vote(&view).await {
                Ok(()) => {
                    // Someone may have won while we asked: then standing would depose them.
                    if self
                        .view()
                        .await
                        .is_some_and(|now| now.still_silent(&view, asked_at))
                    {
                        self.stand(trigger).await;
                    }
                    not_before = Some(Instant::now() + retry);
                }
                Err(lease_remaining) => {
                    let wait = lease_remaining.map_or(retry, |r| r.min(retry));
                    not_before = Some(Instant::now() + wait + Duration::from_millis(1));
                }
            }
        }
    }

    fn random_timeout(&self) -> Duration {
        let (min, max) = (self.settings.timeout_min, self.settings.timeout_max);
        if max <= min {
            return min;
        }
        rand::rng().random_range(min..max)
    }

    async fn view(&self) -> Option<View> {
        self.raft
            .with_raft_state(|st| {
                let vote = st.vote_ref();
                let membership = st.membership_state.effective().membership();
                let joint = membership.get_joint_config().clone();
                let addresses = joint
                    .iter()
                    .flatten()
                    .filter_map(|id| membership.get_node(id).map(|n| (*id, n.addr.clone())))
                    .collect();
                View {
                    state: st.server_state,
                    term: vote.leader_id().term,
                    leader: vote
                        .is_committed()
                        .then(|| vote.leader_id().voted_for())
                        .flatten(),
                    vote_committed: vote.is_committed(),
                    renewed: st.vote_last_modified(),
                    joint,
                    addresses,
                }
            })
            .await
            .ok()
    }

    async fn stand(&self, trigger: &'static str) {
        tracing::info!(trigger, "standing for election");
        metrics::counter!(ELECTIONS_STARTED_TOTAL, "trigger" => trigger).increment(1);
        if let Err(error) = self.raft.trigger().elect().await {
            tracing::warn!(%error, "could not start an election");
        }
    }

    /// Asks every other voter; `Err` carries how long until the leases that refused end, when
    /// that is all that refused.
    async fn pre_vote(&self, view: &View) -> Result<(), Option<Duration>> {
        let mut answers: futures::stream::FuturesUnordered<_> = view
            .addresses
            .iter()
            .filter(|(id, _)| **id != self.node_id)
            .map(|(id, addr)| async move { (*id, self.ask(*id, addr).await) })
            .collect();
        let mut granted = BTreeSet::from([self.node_id]);
        let mut lease_remaining: Option<Duration> = None;
        // Stop at a quorum: an unreachable voter would otherwise hold the round for a whole
        // timeout, and what the others said would be stale by the end of it.
        while !is_quorum(&granted, &view.joint) {
            let Some((id, answer)) = futures::StreamExt::next(&mut answers).await else {
                break;
            };
            match answer {
                Some(a) if a.granted => {
                    granted.insert(id);
                }
                Some(PreVoteAnswer {
                    lease_remaining: Some(r),
                    ..
                }) => lease_remaining = Some(lease_remaining.map_or(r, |l| l.max(r))),
                _ => {}
            }
        }
        if is_quorum(&granted, &view.joint) {
            metrics::counter!(PRE_VOTES_TOTAL, "result" => "granted").increment(1);
            Ok(())
        } else {
            metrics::counter!(PRE_VOTES_TOTAL, "result" => "refused").increment(1);
            tracing::debug!(?granted, "pre-vote refused");
            Err(lease_remaining)
        }
    }

    async fn ask(&self, voter: NodeId, addr: &str) -> Option<PreVoteAnswer> {
        let channel = self.channels.get_for_node(voter, addr).ok()?;
        let mut request = tonic::Request::new(pb::PreVoteRequest {
            candidate: self.node_id,
        });
        self.identity.stamp(request.metadata_mut()).ok()?;
        request.set_timeout(self.settings.timeout_min);
        let mut client = RaftClient::new(channel);
        let response =
            match tokio::time::timeout(self.settings.timeout_min, client.pre_vote(request))
                .await
                .ok()?
            {
                Ok(response) => response.into_inner(),
                // A replica of a version without pre-vote (during a rolling upgrade) votes by the
                // old rules; counting it as a yes gives the old behaviour rather than no elections.
                Err(status) if status.code() == tonic::Code::Unimplemented => {
                    return Some(PreVoteAnswer {
                        granted: true,
                        lease_remaining: None,
                    });
                }
                Err(_) => return None,
            };
        Some(PreVoteAnswer {
            granted: response.granted,
            lease_remaining: (response.lease_remaining_ms > 0)
                .then(|| Duration::from_millis(response.lease_remaining_ms)),
        })
    }

    /// Holds a liveness stream open to whichever leader Raft reports, and publishes a break.
    async fn watch_leaders(
        &self,
        broken: watch::Sender<Option<Broken>>,
        mut stop: watch::Receiver<bool>,
    ) {
        let mut metrics = self.raft.metrics();
        loop {
            let followed = {
                let m = metrics.borrow_and_update();
                self.followed(&m)
            };
            let Some((leader, term, addr)) = followed else {
                broken.send_replace(None);
                tokio::select! {
                    changed = metrics.changed() => if changed.is_err() { return },
                    _ = stop.wait_for(|s| *s) => return,
                }
                continue;
            };
            let same = |m: &RaftMetrics| {
                self.followed(m)
                    .is_some_and(|(l, t, _)| l == leader && t == term)
            };
            if broken
                .borrow()
                .is_some_and(|b| b.leader != leader || b.term != term)
            {
                broken.send_replace(None);
            }
            let stream_broke = tokio::select! {
                () = self.hold_stream(leader, &addr, &broken) => true,
                _ = metrics.wait_for(|m| !same(m)) => false,
                _ = stop.wait_for(|s| *s) => return,
            };
            if stream_broke {
                broken.send_replace(Some(Broken { leader, term }));
                tokio::select! {
                    () = tokio::time::sleep(REOPEN_PAUSE) => {}
                    _ = metrics.wait_for(|m| !same(m)) => {}
                    _ = stop.wait_for(|s| *s) => return,
                }
            }
        }
    }

    fn followed(&self, m: &RaftMetrics) -> Option<(NodeId, u64, String)> {
        if m.state != ServerState::Follower {
            return None;
        }
        let leader = m.current_leader.filter(|l| *l != self.node_id)?;
        let addr = m
            .membership_config
            .membership()
            .get_node(&leader)?
            .addr
            .clone();
        Some((leader, m.current_term, addr))
    }

    /// Holds the liveness stream to `leader` open; returns when it breaks or cannot be opened.
    /// While it is open, the leader is known alive: any earlier break is withdrawn.
    async fn hold_stream(
        &self,
        leader: NodeId,
        addr: &str,
        broken: &watch::Sender<Option<Broken>>,
    ) {
        let Ok(channel) = self.channels.get_for_node(leader, addr) else {
            return std::future::pending().await;
        };
        let mut request = tonic::Request::new(pb::LeaderLivenessRequest {});
        if self.identity.stamp(request.metadata_mut()).is_err() {
            return std::future::pending().await;
        }
        match RaftClient::new(channel).leader_liveness(request).await {
            Ok(response) => {
                broken.send_replace(None);
                let mut stream = response.into_inner();
                // Nothing is ever sent; any end of the stream is the news.
                while let Ok(Some(_)) = stream.message().await {}
            }
            Err(status) => {
                tracing::debug!(leader, %status, "liveness stream refused");
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const LEASE: Duration = Duration::from_millis(200);

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    fn follower(renewed: Instant) -> VoterState {
        VoterState {
            is_leader: false,
            withholding: false,
            vote_committed: true,
            renewed: Some(renewed),
        }
    }

    /// A follower that heard from its leader within the lease refuses, and says for how long.
    #[test]
    fn refused_within_the_lease() {
        let t = Instant::now();
        assert_eq!(
            pre_vote_answer(t + ms(50), follower(t), LEASE),
            PreVoteAnswer {
                granted: false,
                lease_remaining: Some(ms(150))
            }
        );
        assert!(pre_vote_answer(t + ms(201), follower(t), LEASE).granted);
    }

    /// The leader itself, and a replica that withholds its vote, always refuse.
    #[test]
    fn leader_and_withholding_refuse() {
        let t = Instant::now() - ms(1000);
        let leader = VoterState {
            is_leader: true,
            ..follower(t)
        };
        let withholding = VoterState {
            withholding: true,
            ..follower(t)
        };
        for voter in [leader, withholding] {
            assert_eq!(
                pre_vote_answer(Instant::now(), voter, LEASE),
                PreVoteAnswer {
                    granted: false,
                    lease_remaining: None
                }
            );
        }
    }

    /// A vote for a candidate that has not won yet carries no lease.
    #[test]
    fn uncommitted_vote_has_no_lease() {
        let t = Instant::now();
        let voter = VoterState {
            vote_committed: false,
            ..follower(t)
        };
        assert!(pre_vote_answer(t, voter, LEASE).granted);
    }

    /// A quorum is a majority of each configuration of a joint membership.
    #[test]
    fn quorum_of_every_configuration() {
        let three: BTreeSet<NodeId> = [1, 2, 3].into();
        let five: BTreeSet<NodeId> = [1, 2, 3, 4, 5].into();
        assert!(is_quorum(&[1, 2].into(), std::slice::from_ref(&three)));
        assert!(!is_quorum(&[1].into(), std::slice::from_ref(&three)));
        assert!(!is_quorum(&[1, 2].into(), &[three.clone(), five.clone()]));
        assert!(is_quorum(&[1, 2, 4].into(), &[three, five]));
        assert!(!is_quorum(&[1].into(), &[]));
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
