//! The replicas of a run: how `netting-control` is started in each namespace, and the
//! operations faults use (kill, pause, restart, wipe, cut). Dropping a `Cluster` kills every
//! replica and removes the namespaces.

use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::time::Duration;

use tracing::{info, warn};

use super::{RunError, RunOptions};
use crate::lab::cuts::Cuts;
use crate::lab::net::Network;
use crate::lab::process::ReplicaProcess;
use crate::lab::{preflight, sweep};
use crate::workload::ReplicaAddress;

/// Ports every replica listens on, inside its own namespace (each has its own address, so
/// the same port on every replica clashes with nothing on the host).
pub const GRPC_PORT: u16 = 7100;
pub const ADMIN_PORT: u16 = 7190;
/// How long a replica has to shut down on SIGTERM before it is killed.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(10);

/// Checks privileges and tools, naming what is missing.
pub fn preflight(iptables: Option<&str>) -> Result<(), RunError> {
    preflight::check(iptables)
        .map(drop)
        .map_err(|e| RunError::Preflight(e.to_string()))
}

/// One replica: its process (when running) and where its files are.
#[derive(Debug)]
struct Replica {
    node_id: u64,
    data_dir: PathBuf,
    log: PathBuf,
    args: Vec<OsString>,
    /// The process, once started: kept across kills so that its log counts the starts.
    process: Option<ReplicaProcess>,
    running: bool,
    paused: bool,
}

/// The replicas of one run in their network.
#[derive(Debug)]
pub struct Cluster {
    network: Network,
    replicas: Vec<Replica>,
    binary: PathBuf,
    root: PathBuf,
    /// Replicas that exited without being told to, with their status and last log lines.
    crashes: Vec<String>,
}

impl Cluster {
    /// Sweeps leftovers of crashed runs, builds the network and starts every replica.
    pub fn start(options: &RunOptions) -> Result<Cluster, RunError> {
        let swept = sweep::sweep_stale().map_err(lab)?;
        info!(?swept, "swept leftovers of earlier runs");
        let tools = preflight::current().map_err(|e| RunError::Preflight(e.to_string()))?;
        let network = Network::create(&tools, options.replicas).map_err(lab)?;
        let root = options.report_dir.join("replicas");
        let peers = (0..options.replicas)
            .map(|i| format!("{}={}:{GRPC_PORT}", i + 1, network.replica_addr(i)))
            .collect::<Vec<_>>()
            .join(",");
        let mut replicas = Vec::with_capacity(options.replicas);
        for index in 0..options.replicas {
            let dir = root.join(format!("replica-{index}"));
            std::fs::create_dir_all(&dir)
                .map_err(|e| RunError::Lab(format!("{}: {e}", dir.display())))?;
            let data_dir = dir.join("data");
            let address = network.replica_addr(index);
            let args: Vec<OsString> = vec![
                "run".into(),
                "--node-id".into(),
                (index + 1).to_string().into(),
                "--cluster-name".into(),
                "chaos".into(),
                "--data-dir".into(),
                data_dir.clone().into(),
                "--grpc-listen".into(),
                format!("{address}:{GRPC_PORT}").into(),
                "--admin-listen".into(),
                format!("{address}:{ADMIN_PORT}").into(),
                "--peer".into(),
                peers.clone().into(),
            ];
            replicas.push(Replica {
                node_id: index as u64 + 1,
                data_dir,
                log: dir.join("replica.log"),
                args,
                process: None,
                running: false,
                paused: false,
            });
        }
        let mut cluster = Cluster {
            network,
            replicas,
            binary: options.control_binary.clone(),
            root,
            crashes: Vec::new(),
        };
        for index in 0..options.replicas {
            cluster.start_replica(index)?;
        }
        Ok(cluster)
    }

    pub fn replicas(&self) -> usize {
        self.replicas.len()
    }

    pub fn node_id(&self, replica: usize) -> u64 {
        self.replicas[replica].node_id
    }

    /// Where the workload reaches each replica.
    pub fn addresses(&self) -> Vec<ReplicaAddress> {
        (0..self.replicas.len())
            .map(|i| {
                let address = self.network.replica_addr(i);
                ReplicaAddress {
                    grpc: format!("{address}:{GRPC_PORT}"),
                    admin: format!("{address}:{ADMIN_PORT}"),
                    node_id: self.replicas[i].node_id,
                }
            })
            .collect()
    }

    /// Looks for replicas that exited although no fault stopped them (a panic, a refused
    /// start); each is recorded once, with the end of its log, and counts as stopped from then
    /// on. Returns the crashes found by this call.
    pub fn find_crashes(&mut self) -> Vec<String> {
        let mut found = Vec::new();
        for (index, replica) in self.replicas.iter_mut().enumerate() {
            if !replica.running {
                continue;
            }
            let Some(status) = replica.process.as_mut().and_then(|p| p.exit_status()) else {
                continue;
            };
            replica.running = false;
            replica.paused = false;
            found.push(format!(
                "replica {index} exited on its own ({status}); its log ends with:\n{}",
                log_tail(&replica.log, 15)
            ));
        }
        self.crashes.extend(found.iter().cloned());
        found
    }

    /// Every crash found during the run.
    pub fn crashes(&self) -> &[String] {
        &self.crashes
    }

    /// Each replica's log file, by index.
    pub fn log_paths(&self) -> Vec<(usize, PathBuf)> {
        self.replicas
            .iter()
            .enumerate()
            .map(|(index, replica)| (index, replica.log.clone()))
            .collect()
    }

    /// Where the replicas' logs are.
    pub fn log_dir(&self) -> PathBuf {
        self.root.clone()
    }

    /// Starts replica `index` (again), with the same command line and data directory.
    pub fn start_replica(&mut self, index: usize) -> Result<(), RunError> {
        let namespace = self.network.namespace(index).to_owned();
        let replica = &mut self.replicas[index];
        match replica.process.as_mut() {
            Some(process) => process.restart().map_err(lab)?,
            None => {
                replica.process = Some(
                    ReplicaProcess::start(
                        &namespace,
                        &self.binary,
                        &replica.args,
                        &replica.log,
                        &[("NETTING_LOG", "info,openraft=warn")],
                    )
                    .map_err(lab)?,
                );
            }
        }
        replica.running = true;
        replica.paused = false;
        Ok(())
    }

    fn process(&mut self, index: usize) -> Result<&mut ReplicaProcess, RunError> {
        let replica = &mut self.replicas[index];
        match replica.process.as_mut() {
            Some(process) if replica.running => Ok(process),
            _ => Err(RunError::Lab(format!("replica {index} is not running"))),
        }
    }

    /// `kill -9`.
    pub fn kill(&mut self, index: usize) -> Result<(), RunError> {
        self.process(index)?.kill().map_err(lab)?;
        self.replicas[index].running = false;
        self.replicas[index].paused = false;
        Ok(())
    }

    pub fn pause(&mut self, index: usize) -> Result<(), RunError> {
        self.process(index)?.pause().map_err(lab)?;
        self.replicas[index].paused = true;
        Ok(())
    }

    pub fn resume(&mut self, index: usize) -> Result<(), RunError> {
        self.process(index)?.resume().map_err(lab)?;
        self.replicas[index].paused = false;
        Ok(())
    }

    /// SIGTERM, and SIGKILL if the replica takes longer than the grace period.
    pub async fn terminate(&mut self, index: usize) -> Result<(), RunError> {
        self.process(index)?
            .terminate(SHUTDOWN_GRACE)
            .await
            .map_err(lab)?;
        self.replicas[index].running = false;
        Ok(())
    }

    /// Deletes the data directory of a stopped replica.
    pub fn wipe(&mut self, index: usize) -> Result<(), RunError> {
        let replica = &self.replicas[index];
        if replica.running {
            return Err(RunError::Lab(format!(
                "replica {index} is running; stop it before wiping its disk"
            )));
        }
        remove_dir(&replica.data_dir)
    }

    /// Replaces the network faults in force with `cuts`.
    pub fn cut(&self, cuts: &Cuts) -> Result<(), RunError> {
        self.network.set_cuts(cuts).map_err(lab)
    }

    pub fn heal_network(&self) -> Result<(), RunError> {
        self.network.heal().map_err(lab)
    }

    /// Undoes every fault: network healed, paused replicas resumed, stopped ones started.
    pub async fn heal_everything(&mut self) -> Result<(), RunError> {
        self.heal_network()?;
        for index in 0..self.replicas.len() {
            if self.replicas[index].paused {
                self.resume(index)?;
            }
            if !self.replicas[index].running {
                self.start_replica(index)?;
            }
        }
        Ok(())
    }

    /// Stops every replica cleanly and removes the network. Data directories are removed
    /// (logs stay with the report).
    pub async fn stop(mut self) {
        for index in 0..self.replicas.len() {
            if self.replicas[index].paused {
                let _ = self.resume(index);
            }
            if self.replicas[index].running {
                let _ = self.terminate(index).await;
            }
            let _ = remove_dir(&self.replicas[index].data_dir);
        }
        if let Err(error) = self.network.teardown() {
            warn!(%error, "tearing the lab network down failed");
        }
    }
}

/// The last `lines` lines of a log, for an error message.
fn log_tail(path: &Path, lines: usize) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let all: Vec<&str> = text.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}

fn remove_dir(path: &Path) -> Result<(), RunError> {
    match std::fs::remove_dir_all(path) {
        Ok(()) => Ok(()),
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(error) => Err(RunError::Lab(format!("{}: {error}", path.display()))),
    }
}

fn lab(error: impl std::fmt::Display) -> RunError {
    RunError::Lab(error.to_string())
}
