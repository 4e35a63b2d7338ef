//! Whether each peer answers Raft RPCs, logged the way an operator wants to read it.
//!
//! While a peer is down, openraft retries it every 50–500 ms and would log every attempt;
//! those lines are dropped by the log set-up (see [`crate::log_noise`]) and replaced by these:
//! one WARN once a peer has failed every RPC for [`DOWN_AFTER`], a reminder at most every
//! [`REMINDER_EVERY`] while it stays down (with how long and how many RPCs failed), and one
//! INFO when it answers again. A blip shorter than [`DOWN_AFTER`] (a slow heartbeat on a busy
//! machine) says nothing.
//!
//! [`PeerHealth`] is the decision, a plain state machine over the instants it is given;
//! [`PeerHealthLog`] keeps one per peer and writes the lines.

use std::collections::BTreeMap;
use std::sync::Mutex;
use std::time::Duration;

use tokio::time::Instant;

use crate::types::NodeId;

/// How long a peer must fail every RPC before it is reported down.
pub const DOWN_AFTER: Duration = Duration::from_secs(1);
/// Longest silence about a peer that stays down.
pub const REMINDER_EVERY: Duration = Duration::from_secs(30);

/// When to speak, as [`PeerHealth`] sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Thresholds {
    pub down_after: Duration,
    pub reminder_every: Duration,
}

impl Default for Thresholds {
    fn default() -> Self {
        Thresholds {
            down_after: DOWN_AFTER,
            reminder_every: REMINDER_EVERY,
        }
    }
}

/// What to log after an RPC to one peer. `failures` counts the failed RPCs since the first
/// failure of the outage; `down_for` is the time since then.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PeerEvent {
    /// It has failed every RPC for at least `down_after`.
    WentDown { down_for: Duration, failures: u64 },
    /// It is still down and nothing was said about it for `reminder_every`.
    StillDown { down_for: Duration, failures: u64 },
    /// It answered after having been reported down.
    CameBack { down_for: Duration, failures: u64 },
}

/// One peer's state as far as logging goes.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PeerHealth {
    failing: Option<Failing>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Failing {
    since: Instant,
    failures: u64,
    /// When it was last reported; `None` until it is reported down.
    last_said: Option<Instant>,
}

impl PeerHealth {
    /// An RPC to the peer failed (unreachable, timed out, broken) at `now`.
    pub fn failed(&mut self, now: Instant, limits: Thresholds) -> Option<PeerEvent> {
        let Some(f) = &mut self.failing else {
            self.failing = Some(Failing {
                since: now,
                failures: 1,
                last_said: None,
            });
            return None;
        };
        f.failures += 1;
        let down_for = now.saturating_duration_since(f.since);
        match f.last_said {
            None if down_for >= limits.down_after => {
                f.last_said = Some(now);
                Some(PeerEvent::WentDown {
                    down_for,
                    failures: f.failures,
                })
            }
            Some(said) if now.saturating_duration_since(said) >= limits.reminder_every => {
                f.last_said = Some(now);
                Some(PeerEvent::StillDown {
                    down_for,
                    failures: f.failures,
                })
            }
            _ => None,
        }
    }

    /// The peer answered at `now` (with a result or with a Raft error of its own).
    pub fn answered(&mut self, now: Instant) -> Option<PeerEvent> {
        let f = self.failing.take()?;
        f.last_said?;
        Some(PeerEvent::CameBack {
            down_for: now.saturating_duration_since(f.since),
            failures: f.failures,
        })
    }
}

/// The [`PeerHealth`] of every peer, shared by all the clients openraft creates (one per
/// replication stream and one per election), so a peer is reported once whoever calls it.
#[derive(Debug, Default)]
pub struct PeerHealthLog {
    peers: Mutex<BTreeMap<NodeId, PeerHealth>>,
}

impl PeerHealthLog {
    pub fn failed(&self, peer: NodeId, addr: &str, error: &dyn std::fmt::Display) {
        let event = self.with(peer, |h| h.failed(Instant::now(), Thresholds::default()));
        match event {
            Some(PeerEvent::WentDown { down_for, failures }) => tracing::warn!(
                peer,
                addr,
                down_for = ?round_ms(down_for),
                failed_rpcs = failures,
                %error,
                "raft peer is not answering"
            ),
            Some(PeerEvent::StillDown { down_for, failures }) => tracing::warn!(
                peer,
                addr,
                down_for = ?round_ms(down_for),
                failed_rpcs = failures,
                %error,
                "raft peer is still not answering"
            ),
            _ => tracing::debug!(peer, addr, %error, "raft rpc to peer failed"),
        }
    }

    pub fn answered(&self, peer: NodeId, addr: &str) {
        if let Some(PeerEvent::CameBack { down_for, failures }) =
            self.with(peer, |h| h.answered(Instant::now()))
        {
            tracing::info!(
                peer,
                addr,
                down_for = ?round_ms(down_for),
                failed_rpcs = failures,
                "raft peer is answering again"
            );
        }
    }

    fn with<T>(&self, peer: NodeId, f: impl FnOnce(&mut PeerHealth) -> T) -> T {
        // A panic elsewhere while holding the lock leaves the map usable: it only steers logs.
        let mut peers = self
            .peers
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        f(peers.entry(peer).or_default())
    }
}

fn round_ms(d: Duration) -> Duration {
    Duration::from_millis(u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]

    use super::*;

    const LIMITS: Thresholds = Thresholds {
        down_after: Duration::from_secs(1),
        reminder_every: Duration::from_secs(30),
    };

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    /// A peer that keeps failing every 500 ms is reported once when it has failed for a
    /// second, then once per reminder period with the count of failures, never per attempt.
    #[test]
    fn repeated_failures_are_reported_once_per_period() {
        let t0 = Instant::now();
        let mut h = PeerHealth::default();
        let said: Vec<(u64, PeerEvent)> = (0..=130u64)
            .filter_map(|k| h.failed(t0 + ms(500 * k), LIMITS).map(|e| (k, e)))
            .collect();
        assert_eq!(
            said,
            vec![
                (
                    2,
                    PeerEvent::WentDown {
                        down_for: ms(1000),
                        failures: 3
                    }
                ),
                (
                    62,
                    PeerEvent::StillDown {
                        down_for: ms(31_000),
                        failures: 63
                    }
                ),
                (
                    122,
                    PeerEvent::StillDown {
                        down_for: ms(61_000),
                        failures: 123
                    }
                ),
            ]
        );
    }

    /// Failures for less than `down_after` followed by an answer say nothing at all: a slow
    /// heartbeat is not an outage.
    #[test]
    fn a_short_blip_is_not_reported() {
        let t0 = Instant::now();
        let mut h = PeerHealth::default();
        assert_eq!(h.failed(t0, LIMITS), None);
        assert_eq!(h.failed(t0 + ms(300), LIMITS), None);
        assert_eq!(h.answered(t0 + ms(400)), None);
        // The next failure starts a new count from scratch.
        assert_eq!(h.failed(t0 + ms(1500), LIMITS), None);
    }

    /// The first answer after a reported outage says so once, with how long it lasted;
    /// answers from a peer that was never down say nothing.
    #[test]
    fn coming_back_is_reported_once() {
        let t0 = Instant::now();
        let mut h = PeerHealth::default();
        assert_eq!(h.answered(t0), None);
        h.failed(t0, LIMITS);
        assert!(matches!(
            h.failed(t0 + ms(1200), LIMITS),
            Some(PeerEvent::WentDown { .. })
        ));
        assert_eq!(
            h.answered(t0 + ms(2000)),
            Some(PeerEvent::CameBack {
                down_for: ms(2000),
                failures: 2
            })
        );
        assert_eq!(h.answered(t0 + ms(3000)), None);
        // A new outage is a new WentDown, not a reminder of the old one.
        h.failed(t0 + ms(4000), LIMITS);
        assert!(matches!(
            h.failed(t0 + ms(5000), LIMITS),
            Some(PeerEvent::WentDown { .. })
        ));
    }

    /// Peers are tracked apart: one peer's outage does not silence another's.
    #[test]
    fn peers_are_tracked_apart() {
        let log = PeerHealthLog::default();
        let t0 = Instant::now();
        for peer in [1, 2] {
            assert_eq!(log.with(peer, |h| h.failed(t0, LIMITS)), None);
        }
        for peer in [1, 2] {
            assert!(matches!(
                log.with(peer, |h| h.failed(t0 + ms(1000), LIMITS)),
                Some(PeerEvent::WentDown { .. })
            ));
        }
    }
}
