//! A scripted Raft node for the gRPC handlers' tests.

use std::sync::Mutex;

use netting_raft::types::RaftMetrics;
use openraft::error::Fatal;
use tokio::sync::watch;

use super::*;
use crate::admin::probe::CommittedIndexFuture;

/// A node whose metrics the test sets; it confirms reads as leader with `read_index` and
/// records the membership changes asked of it.
#[derive(Debug)]
pub(crate) struct ScriptedConsensus {
    pub(crate) metrics: watch::Sender<RaftMetrics>,
    /// What `ensure_linearizable` answers.
    pub(crate) read_index: Mutex<Result<Option<u64>, String>>,
    pub(crate) membership_changes: Mutex<Vec<String>>,
    /// When set, every membership change is refused with it (and not recorded).
    pub(crate) membership_refusal: Mutex<Option<MembershipError>>,
}

impl ScriptedConsensus {
    pub(crate) fn new(metrics: RaftMetrics) -> Self {
        Self {
            metrics: watch::Sender::new(metrics),
            read_index: Mutex::new(Ok(None)),
            membership_changes: Mutex::new(Vec::new()),
            membership_refusal: Mutex::new(None),
        }
    }

    fn record(&self, change: String) -> Result<(), MembershipError> {
        match locked(&self.membership_refusal).clone() {
            Some(refusal) => Err(refusal),
            None => {
                locked(&self.membership_changes).push(change);
                Ok(())
            }
        }
    }

    /// Makes `leader` the known leader (`None`: no leader).
    pub(crate) fn set_leader(&self, leader: Option<NodeId>) {
        self.metrics.send_modify(|m| m.current_leader = leader);
    }
}

fn locked<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

impl RaftProbe for ScriptedConsensus {
    fn metrics(&self) -> watch::Receiver<RaftMetrics> {
        self.metrics.subscribe()
    }

    fn committed_index(&self) -> CommittedIndexFuture<'_> {
        let committed = self.metrics.borrow().last_applied.map(|l| l.index);
        Box::pin(async move { Ok::<_, Fatal<NodeId>>(committed) })
    }
}

impl Consensus for ScriptedConsensus {
    fn ensure_linearizable(&self) -> ConsensusFuture<'_, Result<Option<u64>, String>> {
        let answer = locked(&self.read_index).clone();
        Box::pin(async move { answer })
    }

    fn wait_applied(&self, index: u64, _: Duration) -> ConsensusFuture<'_, Result<(), String>> {
        let applied = self.metrics.borrow().last_applied.map_or(0, |l| l.index);
        Box::pin(async move {
            if applied >= index {
                Ok(())
            } else {
                Err(format!("applied {applied}, not {index}"))
            }
        })
    }

    fn add_learner(
        &self,
        id: NodeId,
        node: BasicNode,
    ) -> ConsensusFuture<'_, Result<(), MembershipError>> {
        let result = self.record(format!("add learner {id} at {}", node.addr));
        Box::pin(async move { result })
    }

    fn change_membership(
        &self,
        change: ChangeMembers<NodeId, BasicNode>,
        retain: bool,
    ) -> ConsensusFuture<'_, Result<(), MembershipError>> {
        let result = self.record(format!("{change:?} retain={retain}"));
        Box::pin(async move { result })
    }
}
