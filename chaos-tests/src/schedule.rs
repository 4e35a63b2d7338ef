//! The fault schedule: what to break, which replica, for how long.
//!
//! A schedule names replicas by role ("the leader", "a follower") because who leads is only
//! known when the fault is injected; the runner resolves roles against the cluster it observes.
//! The same seed always gives the same schedule (ChaCha8, which promises a stable stream), so
//! a failing run can be repeated with `--seed`. A schedule can also be read from a JSON file;
//! it is checked as a whole before anything starts.

use std::fmt;
use std::path::Path;
use std::time::Duration;

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};
use thiserror::Error;

/// The longest a fault may be held: a longer one is almost certainly a typo (seconds for
/// milliseconds), and it would hold a run's quorum hostage.
pub const MAX_HOLD: Duration = Duration::from_secs(120);

/// What a fault does to its target.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Action {
    /// `kill -9`, started again when the fault heals (same data directory).
    Kill,
    /// SIGSTOP, SIGCONT when the fault heals.
    Pause,
    /// SIGTERM (a clean shutdown), started again when the fault heals.
    Restart,
    /// All traffic between the target and the other replicas is dropped, and so is the
    /// clients' traffic to it: a replica that lost its network.
    Isolate,
    /// The replicas are split in two sides that cannot talk: the target and, with five
    /// replicas, one more on the minority side; the others on the majority side. Clients reach
    /// both sides.
    Partition,
    /// Packets from the target to one other replica are dropped; the other direction works.
    OneWayLoss,
    /// `kill -9`, its data directory deleted, started again when the fault heals: a replica
    /// that lost its disk and must rejoin from its peers.
    WipeDisk,
}

impl Action {
    pub const ALL: [Action; 7] = [
        Action::Kill,
        Action::Pause,
        Action::Restart,
        Action::Isolate,
        Action::Partition,
        Action::OneWayLoss,
        Action::WipeDisk,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Action::Kill => "kill",
            Action::Pause => "pause",
            Action::Restart => "restart",
            Action::Isolate => "isolate",
            Action::Partition => "partition",
            Action::OneWayLoss => "one-way-loss",
            Action::WipeDisk => "wipe-disk",
        }
    }
}

/// Which replica a fault hits.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Target {
    /// The leader when the fault is injected.
    Leader,
    /// One of the followers when the fault is injected; `pick` chooses which (modulo their
    /// number), so a seeded schedule needs no knowledge of the cluster.
    Follower { pick: u32 },
    /// A fixed replica, by index (0-based).
    Replica { index: usize },
}

impl fmt::Display for Target {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Target::Leader => f.write_str("leader"),
            Target::Follower { .. } => f.write_str("follower"),
            Target::Replica { index } => write!(f, "replica-{index}"),
        }
    }
}

/// One fault: what, to whom, and for how long before it heals.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Fault {
    pub action: Action,
    pub target: Target,
    /// How long the fault lasts before it is healed.
    #[serde(with = "millis")]
    pub hold: Duration,
}

impl Fault {
    /// `kill-leader`, `pause-follower`, `wipe-disk-replica-2`: the kind the report groups by.
    pub fn kind(&self) -> String {
        format!("{}-{}", self.action.as_str(), self.target)
    }
}

/// A list of faults, checked for the cluster size it will run against.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Schedule {
    pub faults: Vec<Fault>,
}

/// Why a schedule or an option cannot be used. Raised before anything starts.
#[derive(Debug, Error, PartialEq, Eq)]
pub enum ScheduleError {
    #[error("cannot read schedule file {path}: {reason}")]
    Read { path: String, reason: String },
    #[error("schedule file {path} is not a valid schedule: {reason}")]
    Parse { path: String, reason: String },
    #[error("the schedule has no faults")]
    Empty,
    #[error("fault #{index}: {reason}")]
    Fault { index: usize, reason: String },
}

impl Schedule {
    /// The first `count` faults of the seeded stream for a cluster of `replicas`.
    pub fn generate(seed: u64, replicas: usize, count: usize, profile: &Profile) -> Schedule {
        let mut stream = FaultStream::new(seed, replicas, profile.clone());
        Schedule {
            faults: (0..count).map(|_| stream.next_fault()).collect(),
        }
    }

    /// Reads a JSON schedule, e.g.
    /// `{"faults": [{"action": "kill", "target": "leader", "hold": 1000}]}`
    /// (`hold` in milliseconds; targets `"leader"`, `{"follower": {"pick": 1}}`,
    /// `{"replica": {"index": 2}}`), and checks it for `replicas`.
    pub fn from_file(path: &Path, replicas: usize) -> Result<Schedule, ScheduleError> {
        let shown = path.display().to_string();
        let text = std::fs::read_to_string(path).map_err(|error| ScheduleError::Read {
            path: shown.clone(),
            reason: error.to_string(),
        })?;
        let schedule: Schedule =
            serde_json::from_str(&text).map_err(|error| ScheduleError::Parse {
                path: shown,
                reason: error.to_string(),
            })?;
        schedule.validate(replicas)?;
        Ok(schedule)
    }

    /// Checks every fault against a cluster of `replicas`; the error names the first bad one.
    pub fn validate(&self, replicas: usize) -> Result<(), ScheduleError> {
        if self.faults.is_empty() {
            return Err(ScheduleError::Empty);
        }
        for (index, fault) in self.faults.iter().enumerate() {
            let bad = |reason: String| ScheduleError::Fault { index, reason };
            if let Target::Replica { index: replica } = fault.target
                && replica >= replicas
            {
                return Err(bad(format!(
                    "target replica {replica} does not exist: the cluster has replicas 0..={}",
                    replicas.saturating_sub(1)
                )));
            }
            if fault.hold.is_zero() {
                return Err(bad("hold must be longer than 0 ms".to_owned()));
            }
            if fault.hold > MAX_HOLD {
                return Err(bad(format!(
                    "hold of {} ms is longer than the limit of {} ms",
                    fault.hold.as_millis(),
                    MAX_HOLD.as_millis()
                )));
            }
        }
        Ok(())
    }
}

/// How a generated schedule mixes faults and how long it holds them.
#[derive(Debug, Clone, PartialEq)]
pub struct Profile {
    /// Relative weight of each (action, target-is-leader) pair; zero leaves it out.
    pub weights: Vec<(Action, bool, u32)>,
    pub min_hold: Duration,
    pub max_hold: Duration,
}

impl Default for Profile {
    /// Leader faults dominate: they are the ones that test failover.
    fn default() -> Self {
        Profile {
            weights: vec![
                (Action::Kill, true, 20),
                (Action::Kill, false, 8),
                (Action::Pause, true, 10),
                (Action::Pause, false, 5),
                (Action::Restart, true, 8),
                (Action::Restart, false, 4),
                (Action::Isolate, true, 12),
                (Action::Partition, true, 8),
                (Action::Partition, false, 5),
                (Action::OneWayLoss, true, 8),
                (Action::WipeDisk, false, 8),
                (Action::WipeDisk, true, 4),
            ],
            min_hold: Duration::from_millis(500),
            max_hold: Duration::from_millis(2500),
        }
    }
}

impl Profile {
    /// Checks the profile; the error names what is wrong.
    pub fn validate(&self) -> Result<(), ScheduleError> {
        let total: u64 = self.weights.iter().map(|(_, _, w)| u64::from(*w)).sum();
        if total == 0 {
            return Err(ScheduleError::Empty);
        }
        if self.min_hold.is_zero() || self.min_hold > self.max_hold || self.max_hold > MAX_HOLD {
            return Err(ScheduleError::Fault {
                index: 0,
                reason: format!(
                    "hold range {}..={} ms must be non-empty, above 0 and at most {} ms",
                    self.min_hold.as_millis(),
                    self.max_hold.as_millis(),
                    MAX_HOLD.as_millis()
                ),
            });
        }
        Ok(())
    }
}

/// An endless, seeded stream of faults: a long run takes as many as its duration allows.
#[derive(Debug)]
pub struct FaultStream {
    rng: ChaCha8Rng,
    replicas: usize,
    profile: Profile,
}

impl FaultStream {
    pub fn new(seed: u64, replicas: usize, profile: Profile) -> FaultStream {
        FaultStream {
            rng: ChaCha8Rng::seed_from_u64(seed),
            replicas,
            profile,
        }
    }

    pub fn next_fault(&mut self) -> Fault {
        let total: u32 = self.profile.weights.iter().map(|(_, _, w)| *w).sum();
        let mut roll = self.rng.random_range(0..total.max(1));
        let mut chosen = (Action::Kill, true);
        for (action, leader, weight) in &self.profile.weights {
            if roll < *weight {
                chosen = (*action, *leader);
                break;
            }
            roll -= weight;
        }
        let pick = self.rng.random_range(0..self.replicas.max(1) as u32);
        let min = self.profile.min_hold.as_millis() as u64;
        let max = self.profile.max_hold.as_millis() as u64;
        let hold = Duration::from_millis(self.rng.random_range(min..=max.max(min)));
        Fault {
            action: chosen.0,
            target: if chosen.1 {
                Target::Leader
            } else {
                Target::Follower { pick }
            },
            hold,
        }
    }
}

/// Durations as whole milliseconds in schedule files.
mod millis {
    use std::time::Duration;

    use serde::{Deserialize, Deserializer, Serializer};

    pub(super) fn serialize<S: Serializer>(value: &Duration, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_u64(value.as_millis() as u64)
    }

    pub(super) fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
        u64::deserialize(d).map(Duration::from_millis)
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;

    #[test]
    fn the_same_seed_gives_the_same_schedule() {
        let profile = Profile::default();
        let a = Schedule::generate(42, 3, 200, &profile);
        let b = Schedule::generate(42, 3, 200, &profile);
        let c = Schedule::generate(43, 3, 200, &profile);
        assert_eq!(a, b);
        assert_ne!(a, c);
    }

    #[test]
    fn a_seeded_schedule_does_not_change_between_versions() {
        // Pinned: a run reported with a seed must be repeatable after upgrades.
        let schedule = Schedule::generate(7, 3, 3, &Profile::default());
        let kinds: Vec<String> = schedule.faults.iter().map(Fault::kind).collect();
        let holds: Vec<u128> = schedule.faults.iter().map(|f| f.hold.as_millis()).collect();
        assert_eq!(
            (kinds, holds),
            (
                vec![
                    "kill-leader".to_owned(),
                    "kill-follower".to_owned(),
                    "kill-leader".to_owned()
                ],
                vec![836, 1954, 1219]
            )
        );
    }

    #[test]
    fn a_long_schedule_uses_every_action() {
        let schedule = Schedule::generate(1, 5, 1000, &Profile::default());
        for action in Action::ALL {
            assert!(
                schedule.faults.iter().any(|f| f.action == action),
                "{action:?} never drawn"
            );
        }
        schedule.validate(5).unwrap();
    }

    #[test]
    fn a_schedule_file_round_trips() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("schedule.json");
        std::fs::write(
            &path,
            r#"{"faults": [
                {"action": "kill", "target": "leader", "hold": 1000},
                {"action": "wipe-disk", "target": {"follower": {"pick": 1}}, "hold": 500},
                {"action": "one-way-loss", "target": {"replica": {"index": 2}}, "hold": 250}
            ]}"#,
        )
        .unwrap();
        let schedule = Schedule::from_file(&path, 3).unwrap();
        assert_eq!(schedule.faults.len(), 3);
        assert_eq!(schedule.faults[1].kind(), "wipe-disk-follower");
        assert_eq!(schedule.faults[2].hold, Duration::from_millis(250));
    }

    #[test]
    fn bad_schedules_are_refused_with_the_fault_named() {
        let dir = tempfile::tempdir().unwrap();
        let cases = [
            (r#"{"faults": []}"#, "no faults"),
            (
                r#"{"faults": [{"action": "explode", "target": "leader", "hold": 1}]}"#,
                "unknown variant `explode`",
            ),
            (
                r#"{"faults": [{"action": "kill", "target": {"replica": {"index": 3}}, "hold": 1}]}"#,
                "fault #0: target replica 3 does not exist",
            ),
            (
                r#"{"faults": [{"action": "kill", "target": "leader", "hold": 10},
                               {"action": "kill", "target": "leader", "hold": 0}]}"#,
                "fault #1: hold must be longer than 0 ms",
            ),
            (
                r#"{"faults": [{"action": "pause", "target": "leader", "hold": 3600000}]}"#,
                "longer than the limit",
            ),
            (r#"{"faults": "#, "not a valid schedule"),
        ];
        for (text, expected) in cases {
            let path = dir.path().join("bad.json");
            std::fs::write(&path, text).unwrap();
            let error = Schedule::from_file(&path, 3).unwrap_err().to_string();
            assert!(error.contains(expected), "{text}: got {error}");
        }
        let missing = Schedule::from_file(&dir.path().join("absent.json"), 3).unwrap_err();
        assert!(matches!(missing, ScheduleError::Read { .. }), "{missing}");
    }

    #[test]
    fn bad_profiles_are_refused() {
        let profile = Profile {
            min_hold: Duration::from_secs(3),
            max_hold: Duration::from_secs(1),
            ..Profile::default()
        };
        assert!(profile.validate().is_err());
        let none = Profile {
            weights: vec![(Action::Kill, true, 0)],
            ..Profile::default()
        };
        assert_eq!(none.validate(), Err(ScheduleError::Empty));
        Profile::default().validate().unwrap();
    }

    /// The fixed schedules shipped in `schedules/` (used for the figures in BENCHMARKS.md) load.
    #[test]
    fn shipped_schedules_load() {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("schedules");
        let mut loaded = 0;
        for entry in std::fs::read_dir(&dir).unwrap() {
            let path = entry.unwrap().path();
            let schedule =
                Schedule::from_file(&path, 3).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
            assert!(!schedule.faults.is_empty(), "{}", path.display());
            loaded += 1;
        }
        assert!(
            loaded >= 3,
            "schedules found in {}: {loaded}",
            dir.display()
        );
    }
}
