//! What the admin endpoints and the metrics exporter need from the Raft node: a seam, so tests
//! can script a node without storage or network.

use std::future::Future;
use std::pin::Pin;

use netting_raft::types::RaftMetrics;
use netting_raft::{NodeId, Raft};
use openraft::error::Fatal;
use tokio::sync::watch;

/// What [`RaftProbe::committed_index`] returns.
pub type CommittedIndexFuture<'a> =
    Pin<Box<dyn Future<Output = Result<Option<u64>, Fatal<NodeId>>> + Send + 'a>>;

/// Read-only view of a Raft node.
pub trait RaftProbe: Send + Sync + 'static {
    /// A receiver of the node's metrics; it sees every later update.
    fn metrics(&self) -> watch::Receiver<RaftMetrics>;

    /// The highest log index this node knows to be committed (`None` before the first commit).
    ///
    /// openraft 0.9's `RaftMetrics` does not carry it, so this asks the Raft core and waits
    /// behind the work queued there; callers bound the wait.
    fn committed_index(&self) -> CommittedIndexFuture<'_>;
}

impl RaftProbe for Raft {
    fn metrics(&self) -> watch::Receiver<RaftMetrics> {
        Raft::metrics(self)
    }

    fn committed_index(&self) -> CommittedIndexFuture<'_> {
        Box::pin(self.with_raft_state(|state| state.committed.as_ref().map(|log_id| log_id.index)))
    }
}

/// Lets a caller keep its own handle on a probe it hands over.
impl<P: RaftProbe> RaftProbe for std::sync::Arc<P> {
    fn metrics(&self) -> watch::Receiver<RaftMetrics> {
        P::metrics(self)
    }

    fn committed_index(&self) -> CommittedIndexFuture<'_> {
        P::committed_index(self)
    }
}

#[cfg(test)]
pub(crate) mod fake {
    use std::sync::Mutex;

    use super::*;

    /// A Raft node whose metrics and commit index the test sets.
    #[derive(Debug)]
    pub(crate) struct ScriptedRaft {
        pub(crate) metrics: watch::Sender<RaftMetrics>,
        /// `None` makes `committed_index` fail as if the Raft core had stopped.
        pub(crate) committed: Mutex<Option<Option<u64>>>,
    }

    impl ScriptedRaft {
        pub(crate) fn new(metrics: RaftMetrics, committed: Option<u64>) -> Self {
            Self {
                metrics: watch::Sender::new(metrics),
                committed: Mutex::new(Some(committed)),
            }
        }
    }

    impl RaftProbe for ScriptedRaft {
        fn metrics(&self) -> watch::Receiver<RaftMetrics> {
            self.metrics.subscribe()
        }

        fn committed_index(&self) -> CommittedIndexFuture<'_> {
            let committed = *self
                .committed
                .lock()
                .unwrap_or_else(|poisoned| poisoned.into_inner());
            Box::pin(async move { committed.ok_or(Fatal::Stopped) })
        }
    }
}
