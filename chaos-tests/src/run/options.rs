//! The options of a run and their checks. Everything here is checked before the lab creates a
//! namespace or starts a process, so a typo costs nothing.

use std::path::{Path, PathBuf};
use std::time::Duration;

use thiserror::Error;

use crate::schedule::{Profile, Schedule, ScheduleError};

/// Where the faults come from.
#[derive(Debug, Clone, PartialEq)]
pub enum FaultSource {
    /// A seeded stream, taken until `faults` were injected or `duration` passed, whichever
    /// comes first (at least one of them is set).
    Generated {
        faults: Option<usize>,
        duration: Option<Duration>,
        profile: Profile,
    },
    /// A fixed list, from a file.
    File(Schedule),
}

/// Everything a run needs to know.
#[derive(Debug, Clone, PartialEq)]
pub struct RunOptions {
    pub seed: u64,
    pub replicas: usize,
    /// Sidecars running the client library.
    pub sidecars: usize,
    /// Sidecars speaking the raw protocol (see `workload::sidecars`).
    pub raw_sidecars: usize,
    pub register_writers: u32,
    pub ledger_writers: u32,
    pub readers: u32,
    /// Pause between two operations of one worker.
    pub operation_pause: Duration,
    /// A new open-loop probe write starts this often (see `workload::catalog::probe_writer`).
    pub probe_interval: Duration,
    pub faults: FaultSource,
    /// Quiet time between the cluster's recovery from one fault and the next fault.
    pub gap: Duration,
    /// How long the cluster may take to recover after a heal before the run says it did not.
    pub settle_timeout: Duration,
    /// The `netting-control` binary to run.
    pub control_binary: PathBuf,
    /// Where the report, the replicas' logs and their data go.
    pub report_dir: PathBuf,
    /// `iptables` or `iptables-legacy`; `None` detects.
    pub iptables: Option<String>,
    /// Write `history.json` even when the run passed.
    pub keep_history: bool,
}

impl RunOptions {
    /// The short run of the test suite: a dozen faults with a fixed seed, a couple of minutes.
    pub fn short(control_binary: PathBuf, report_dir: PathBuf) -> RunOptions {
        RunOptions {
            seed: 20261125,
            replicas: 3,
            sidecars: 200,
            raw_sidecars: 20,
            register_writers: 4,
            ledger_writers: 2,
            readers: 2,
            operation_pause: Duration::from_millis(10),
            probe_interval: Duration::from_millis(20),
            faults: FaultSource::Generated {
                faults: Some(12),
                duration: None,
                profile: Profile::default(),
            },
            gap: Duration::from_millis(500),
            settle_timeout: Duration::from_secs(30),
            control_binary,
            report_dir,
            iptables: None,
            keep_history: false,
        }
    }

    /// Checks every option; the error names the first bad one.
    pub fn validate(&self) -> Result<(), OptionsError> {
        if !(self.replicas == 3 || self.replicas == 5) {
            return Err(OptionsError::new(
                "--replicas",
                format!(
                    "{} is not supported: the lab runs 3 or 5 replicas",
                    self.replicas
                ),
            ));
        }
        if self.sidecars + self.raw_sidecars == 0 {
            return Err(OptionsError::new(
                "--sidecars",
                "at least one sidecar is needed to check convergence",
            ));
        }
        if self.sidecars + self.raw_sidecars > 5_000 {
            return Err(OptionsError::new(
                "--sidecars",
                "more than 5000 sidecars would measure the lab's own machine, not failover",
            ));
        }
        if self.register_writers == 0 || self.ledger_writers == 0 {
            return Err(OptionsError::new(
                "--writers",
                "at least one register writer and one ledger writer are needed",
            ));
        }
        if self.settle_timeout < Duration::from_secs(1) {
            return Err(OptionsError::new(
                "--settle-timeout",
                "must be at least 1s: a cluster needs an election to recover",
            ));
        }
        match &self.faults {
            FaultSource::Generated {
                faults,
                duration,
                profile,
            } => {
                if faults.is_none() && duration.is_none() {
                    return Err(OptionsError::new(
                        "--faults/--duration",
                        "give a number of faults, a duration, or both",
                    ));
                }
                if *faults == Some(0) {
                    return Err(OptionsError::new("--faults", "must be at least 1"));
                }
                if duration.is_some_and(|d| d < Duration::from_secs(5)) {
                    return Err(OptionsError::new(
                        "--duration",
                        "must be at least 5s: the cluster needs time to start",
                    ));
                }
                profile
                    .validate()
                    .map_err(|e| OptionsError::new("--hold", e.to_string()))?;
            }
            FaultSource::File(schedule) => schedule
                .validate(self.replicas)
                .map_err(|e| OptionsError::new("--schedule", e.to_string()))?,
        }
        check_binary(&self.control_binary)?;
        check_report_dir(&self.report_dir)?;
        if let Some(iptables) = &self.iptables
            && iptables != "iptables"
            && iptables != "iptables-legacy"
            && iptables != "iptables-nft"
        {
            return Err(OptionsError::new(
                "--iptables",
                format!("{iptables:?} is not one of iptables, iptables-nft, iptables-legacy"),
            ));
        }
        Ok(())
    }
}

fn check_binary(path: &Path) -> Result<(), OptionsError> {
    use std::os::unix::fs::PermissionsExt;
    let metadata = std::fs::metadata(path).map_err(|e| {
        OptionsError::new(
            "--control-binary",
            format!(
                "{}: {e} (build it with `cargo build -p netting-control`)",
                path.display()
            ),
        )
    })?;
    if !metadata.is_file() || metadata.permissions().mode() & 0o111 == 0 {
        return Err(OptionsError::new(
            "--control-binary",
            format!("{} is not an executable file", path.display()),
        ));
    }
    Ok(())
}

fn check_report_dir(path: &Path) -> Result<(), OptionsError> {
    if path.exists() && !path.is_dir() {
        return Err(OptionsError::new(
            "--report-dir",
            format!("{} exists and is not a directory", path.display()),
        ));
    }
    if path.is_dir()
        && std::fs::read_dir(path)
            .map(|mut entries| entries.next().is_some())
            .unwrap_or(true)
    {
        return Err(OptionsError::new(
            "--report-dir",
            format!(
                "{} is not empty: a run would mix its files with another's",
                path.display()
            ),
        ));
    }
    Ok(())
}

/// A bad option, named with its flag.
#[derive(Debug, Error, PartialEq, Eq)]
#[error("{flag}: {reason}")]
pub struct OptionsError {
    pub flag: String,
    pub reason: String,
}

impl OptionsError {
    pub fn new(flag: impl Into<String>, reason: impl Into<String>) -> OptionsError {
        OptionsError {
            flag: flag.into(),
            reason: reason.into(),
        }
    }
}

impl From<ScheduleError> for OptionsError {
    fn from(error: ScheduleError) -> Self {
        OptionsError::new("--schedule", error.to_string())
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn valid(dir: &Path) -> RunOptions {
        // Any executable file stands in for the binary here.
        RunOptions::short(PathBuf::from("/bin/sh"), dir.join("report"))
    }

    #[test]
    fn the_short_run_is_valid() {
        let dir = tempfile::tempdir().unwrap();
        valid(dir.path()).validate().unwrap();
    }

    #[test]
    fn each_bad_option_is_named() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("a-file");
        std::fs::write(&file, "x").unwrap();
        let full = dir.path().join("full");
        std::fs::create_dir(&full).unwrap();
        std::fs::write(full.join("report.json"), "{}").unwrap();
        type Change = Box<dyn Fn(&mut RunOptions)>;
        let cases: Vec<(Change, &str)> = vec![
            (Box::new(|o| o.replicas = 4), "--replicas"),
            (
                Box::new(|o| {
                    o.sidecars = 0;
                    o.raw_sidecars = 0;
                }),
                "--sidecars",
            ),
            (Box::new(|o| o.ledger_writers = 0), "--writers"),
            (
                Box::new(|o| {
                    o.faults = FaultSource::Generated {
                        faults: None,
                        duration: None,
                        profile: Profile::default(),
                    }
                }),
                "--faults/--duration",
            ),
            (
                Box::new(|o| {
                    o.faults = FaultSource::Generated {
                        faults: None,
                        duration: Some(Duration::from_secs(1)),
                        profile: Profile::default(),
                    }
                }),
                "--duration",
            ),
            (
                Box::new(|o| o.control_binary = PathBuf::from("/nonexistent/netting-control")),
                "--control-binary",
            ),
            (
                Box::new(move |o| o.report_dir = file.clone()),
                "--report-dir",
            ),
            (
                Box::new(move |o| o.report_dir = full.clone()),
                "--report-dir",
            ),
            (
                Box::new(|o| o.iptables = Some("nft".to_owned())),
                "--iptables",
            ),
            (
                Box::new(|o| o.settle_timeout = Duration::from_millis(10)),
                "--settle-timeout",
            ),
        ];
        for (change, flag) in cases {
            let mut options = valid(dir.path());
            change(&mut options);
            let error = options.validate().unwrap_err();
            assert_eq!(error.flag, flag, "{error}");
        }
    }
}
