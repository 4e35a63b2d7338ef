//! When each catalog version was applied on this replica, for the commit-to-ACK histogram:
//! the config pusher records, sessions read when their sidecar acknowledges.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use netting_raft::catalog::LogIndex;

/// Bounded: only the most recent versions are kept. Cheap to clone (shared).
#[derive(Debug, Clone, Default)]
pub struct AppliedTimes {
    inner: Arc<Mutex<VecDeque<(LogIndex, Instant)>>>,
}

impl AppliedTimes {
    const KEEP: usize = 4096;

    /// Records that `version` was applied at `at`; versions only ever move forward.
    pub fn record(&self, version: LogIndex, at: Instant) {
        if let Ok(mut times) = self.inner.lock() {
            if times.back().is_some_and(|(v, _)| *v >= version) {
                return;
            }
            if times.len() == Self::KEEP {
                times.pop_front();
            }
            times.push_back((version, at));
        }
    }

    /// Time since `version` was applied, if it is still remembered.
    pub fn since_applied(&self, version: LogIndex) -> Option<Duration> {
        let times = self.inner.lock().ok()?;
        let idx = times.partition_point(|(v, _)| *v < version);
        times
            .get(idx)
            .filter(|(v, _)| *v == version)
            .map(|(_, at)| at.elapsed())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Only versions that were recorded are found, older ones are dropped past the bound, and
    /// a version going backwards is ignored.
    #[test]
    fn keeps_the_newest_versions() {
        let times = AppliedTimes::default();
        let at = Instant::now();
        for version in 1..=(AppliedTimes::KEEP as u64 + 10) {
            times.record(version * 2, at);
        }
        assert!(times.since_applied(2).is_none(), "dropped past the bound");
        assert!(times.since_applied(AppliedTimes::KEEP as u64 * 2).is_some());
        assert!(
            times
                .since_applied(AppliedTimes::KEEP as u64 * 2 + 1)
                .is_none()
        );
        times.record(4, at);
        assert!(
            times.since_applied(4).is_none(),
            "a version going back is ignored"
        );
    }
}
