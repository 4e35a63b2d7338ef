//! When the dev supervisor brings a replica back that died: after `--restart-after` on its own,
//! at once on request (`netting-control dev restart`, or SIGUSR1), and not forever when it
//! keeps dying. Pure decisions over the durations they are given, tested without processes.

use std::time::Duration;

/// A run shorter than this counts as a quick failure: the replica likely cannot start.
pub(crate) const QUICK_FAILURE: Duration = Duration::from_secs(10);
/// Quick failures in a row after which automatic restarts stop.
pub(crate) const GIVE_UP_AFTER: u32 = 5;
/// Longest pause between automatic restarts of a replica that keeps failing quickly.
pub(crate) const BACKOFF_MAX: Duration = Duration::from_secs(30);

/// How the dev run restarts replicas.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct RestartPolicy {
    /// `--restart-after`: the pause before an automatic restart; `None` restarts only on
    /// request.
    pub(crate) after: Option<Duration>,
    pub(crate) quick_failure: Duration,
    pub(crate) give_up_after: u32,
    pub(crate) backoff_max: Duration,
}

impl RestartPolicy {
    pub(crate) fn new(after: Option<Duration>) -> Self {
        RestartPolicy {
            after,
            quick_failure: QUICK_FAILURE,
            give_up_after: GIVE_UP_AFTER,
            backoff_max: BACKOFF_MAX,
        }
    }
}

/// What to do about a replica that just exited on its own.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum AfterExit {
    /// Restart it after this pause.
    RestartIn(Duration),
    /// Leave it down until someone asks (no `--restart-after`).
    WaitForRequest,
    /// It failed quickly `quick_failures` times in a row: leave it down until someone asks.
    GiveUp { quick_failures: u32 },
}

/// One replica's restart history.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct Restarts {
    /// Restarts so far in this dev run.
    pub(crate) count: u32,
    /// Consecutive runs shorter than the policy's `quick_failure`.
    pub(crate) quick_failures: u32,
}

impl Restarts {
    /// The replica exited on its own after running for `ran_for`.
    pub(crate) fn exited(&mut self, ran_for: Duration, policy: &RestartPolicy) -> AfterExit {
        if ran_for < policy.quick_failure {
            self.quick_failures += 1;
        } else {
            self.quick_failures = 0;
        }
        let Some(after) = policy.after else {
            return AfterExit::WaitForRequest;
        };
        if self.quick_failures >= policy.give_up_after {
            return AfterExit::GiveUp {
                quick_failures: self.quick_failures,
            };
        }
        // Doubles with every quick failure beyond the first; never below `after`.
        let doublings = self.quick_failures.saturating_sub(1).min(16);
        let pause = after
            .saturating_mul(1 << doublings)
            .min(policy.backoff_max.max(after));
        AfterExit::RestartIn(pause)
    }

    /// Someone asked for the replica back: it is restarted now, and a replica that had been
    /// given up on gets a fresh allowance of quick failures.
    pub(crate) fn requested(&mut self) {
        self.quick_failures = 0;
    }

    /// The replica was started again; returns which restart this is (1 for the first).
    pub(crate) fn restarted(&mut self) -> u32 {
        self.count += 1;
        self.count
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn secs(n: u64) -> Duration {
        Duration::from_secs(n)
    }

    fn auto(after: Duration) -> RestartPolicy {
        RestartPolicy::new(Some(after))
    }

    /// Without `--restart-after`, a dead replica waits for a request, however it died.
    #[test]
    fn without_the_flag_only_a_request_restarts() {
        let policy = RestartPolicy::new(None);
        let mut r = Restarts::default();
        assert_eq!(r.exited(secs(600), &policy), AfterExit::WaitForRequest);
        assert_eq!(r.exited(secs(1), &policy), AfterExit::WaitForRequest);
    }

    /// A replica that ran for a while (a `kill -9` of a healthy replica) comes back after
    /// exactly the configured pause, every time.
    #[test]
    fn a_long_run_restarts_after_the_delay() {
        let policy = auto(Duration::from_millis(500));
        let mut r = Restarts::default();
        for _ in 0..10 {
            assert_eq!(
                r.exited(secs(60), &policy),
                AfterExit::RestartIn(Duration::from_millis(500))
            );
        }
    }

    /// A replica that keeps dying right after it starts is restarted with a doubling pause,
    /// capped, and given up on after the fifth quick failure in a row.
    #[test]
    fn a_crash_loop_backs_off_and_gives_up() {
        let policy = RestartPolicy {
            backoff_max: secs(6),
            ..auto(secs(1))
        };
        let mut r = Restarts::default();
        let decisions: Vec<AfterExit> = (0..5).map(|_| r.exited(secs(2), &policy)).collect();
        assert_eq!(
            decisions,
            vec![
                AfterExit::RestartIn(secs(1)),
                AfterExit::RestartIn(secs(2)),
                AfterExit::RestartIn(secs(4)),
                AfterExit::RestartIn(secs(6)),
                AfterExit::GiveUp { quick_failures: 5 },
            ]
        );
    }

    /// A run that lasts resets the count of quick failures, and so does a request.
    #[test]
    fn a_long_run_or_a_request_resets_the_crash_count() {
        let policy = auto(secs(1));
        let mut r = Restarts::default();
        for _ in 0..4 {
            r.exited(secs(1), &policy);
        }
        assert_eq!(r.exited(secs(20), &policy), AfterExit::RestartIn(secs(1)));
        for _ in 0..5 {
            r.exited(secs(1), &policy);
        }
        assert_eq!(r.quick_failures, 5);
        r.requested();
        assert_eq!(r.exited(secs(1), &policy), AfterExit::RestartIn(secs(1)));
    }

    /// Restarts are numbered from 1.
    #[test]
    fn restarts_are_counted() {
        let mut r = Restarts::default();
        assert_eq!(r.restarted(), 1);
        assert_eq!(r.restarted(), 2);
    }
}
