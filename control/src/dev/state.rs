//! The dev directory: `cluster.json` (what runs where), the lock that keeps two dev runs out of
//! one directory, and the checks that keep `--clean` from deleting anything a dev run did not
//! create.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use netting_raft::NodeId;
use serde::{Deserialize, Serialize};
use thiserror::Error;

use super::plan::{Layout, ReplicaPlan};

pub(crate) const CLUSTER_FILE: &str = "cluster.json";
const CLUSTER_TMP: &str = ".cluster.json.tmp";
pub(crate) const LOCK_FILE: &str = "dev.lock";
/// Marks a `cluster.json` as ours: a file of that name in someone's directory is not enough
/// to let `--clean` delete the directory.
pub(crate) const KIND: &str = "netting-control-dev";
pub(crate) const FORMAT: u32 = 1;

/// Contents of `DIR/cluster.json`: the layout to reuse next time and what runs now.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ClusterFile {
    /// Always `netting-control-dev`.
    pub kind: String,
    /// Version of this file's schema.
    pub format: u32,
    pub state: ClusterState,
    /// The `netting-control dev` process supervising the replicas, while it runs.
    pub supervisor_pid: Option<u32>,
    pub layout: Layout,
    pub catalog_file: Option<PathBuf>,
    /// nettingctl with the cluster's addresses; append a command such as `status`.
    pub nettingctl: String,
    pub replicas: Vec<ReplicaEntry>,
}

/// Lifecycle of the whole dev cluster.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ClusterState {
    Starting,
    Running,
    Stopped,
}

/// One replica in `cluster.json`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReplicaEntry {
    pub node_id: NodeId,
    /// Address peers and clients dial.
    pub grpc_address: SocketAddr,
    /// Admin HTTP address: /healthz, /readyz, /metrics, /debug/raft.
    pub admin_address: SocketAddr,
    /// Set while the process runs.
    pub pid: Option<u32>,
    pub state: ReplicaState,
    /// How the process ended, e.g. `signal 9, SIGKILL`.
    pub exit_status: Option<String>,
    /// How many times this dev run started it again after it died.
    #[serde(default)]
    pub restarts: u32,
    pub data_dir: PathBuf,
    pub log_file: PathBuf,
}

/// Lifecycle of one replica process.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ReplicaState {
    NotStarted,
    Running,
    /// Ended on its own (or by someone else's signal) while the cluster ran.
    Exited,
    /// Ended because the dev run stopped it.
    Stopped,
}

impl ClusterFile {
    pub(crate) fn new(
        layout: Layout,
        catalog_file: Option<PathBuf>,
        nettingctl: String,
        replicas: &[ReplicaPlan],
    ) -> Self {
        ClusterFile {
            kind: KIND.to_owned(),
            format: FORMAT,
            state: ClusterState::Starting,
            supervisor_pid: Some(std::process::id()),
            layout,
            catalog_file,
            nettingctl,
            replicas: replicas
                .iter()
                .map(|r| ReplicaEntry {
                    node_id: r.node_id,
                    grpc_address: r.grpc_addr,
                    admin_address: r.admin_addr,
                    pid: None,
                    state: ReplicaState::NotStarted,
                    exit_status: None,
                    restarts: 0,
                    data_dir: r.data_dir.clone(),
                    log_file: r.log_file.clone(),
                })
                .collect(),
        }
    }

    fn entry(&mut self, node_id: NodeId) -> Option<&mut ReplicaEntry> {
        self.replicas.iter_mut().find(|r| r.node_id == node_id)
    }

    pub(crate) fn set_running(&mut self, node_id: NodeId, pid: u32) {
        if let Some(entry) = self.entry(node_id) {
            entry.pid = Some(pid);
            entry.state = ReplicaState::Running;
            entry.exit_status = None;
        }
    }

    pub(crate) fn set_restarts(&mut self, node_id: NodeId, restarts: u32) {
        if let Some(entry) = self.entry(node_id) {
            entry.restarts = restarts;
        }
    }

    /// Records that a replica ended; `stopped` says whether the dev run asked it to.
    pub(crate) fn set_ended(&mut self, node_id: NodeId, status: &str, stopped: bool) {
        if let Some(entry) = self.entry(node_id) {
            entry.pid = None;
            entry.state = if stopped {
                ReplicaState::Stopped
            } else {
                ReplicaState::Exited
            };
            entry.exit_status = Some(status.to_owned());
        }
    }

    /// The whole cluster is down: no pid stays behind for someone to signal by mistake.
    pub(crate) fn set_stopped(&mut self) {
        self.state = ClusterState::Stopped;
        self.supervisor_pid = None;
        for entry in &mut self.replicas {
            if entry.pid.take().is_some() {
                entry.state = ReplicaState::Stopped;
            }
        }
    }

    /// Writes `DIR/cluster.json` atomically: a reader (or the next run after a crash) sees the
    /// old file or the new one, never half of one.
    pub(crate) fn save(&self, dir: &Path) -> io::Result<()> {
        let mut json = serde_json::to_vec_pretty(self).map_err(io::Error::other)?;
        json.push(b'\n');
        let tmp = dir.join(CLUSTER_TMP);
        let mut file = File::create(&tmp)?;
        file.write_all(&json)?;
        file.sync_all()?;
        fs::rename(&tmp, dir.join(CLUSTER_FILE))
    }
}

/// What is at `--dir` before a run touches it.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum DirState {
    Missing,
    /// Empty, or holding only the files a dev run creates first (lock, temporary file).
    Empty,
    /// A directory with our `cluster.json`.
    Dev,
    /// Anything else: never written to or deleted.
    Foreign {
        reason: String,
    },
}

/// Errors of the dev directory, each naming the path.
#[derive(Debug, Error)]
pub(crate) enum DirError {
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("{path} exists and is not a directory")]
    NotADirectory { path: PathBuf },
    #[error(
        "{path}/{CLUSTER_FILE} is not usable ({reason}); add --clean to start a new cluster \
         there (this deletes its data)"
    )]
    BadClusterFile { path: PathBuf, reason: String },
    #[error(
        "another `netting-control dev` is using {path}{}; stop it first or pick another --dir",
        .pid.map(|p| format!(" (pid {p})")).unwrap_or_default()
    )]
    Locked { path: PathBuf, pid: Option<u32> },
}

fn io_err(path: &Path) -> impl FnOnce(io::Error) -> DirError + '_ {
    move |source| DirError::Io {
        path: path.to_owned(),
        source,
    }
}

/// Looks at `dir` without changing it.
pub(crate) fn inspect_dir(dir: &Path) -> Result<DirState, DirError> {
    let meta = match fs::metadata(dir) {
        Ok(meta) => meta,
        Err(err) if err.kind() == io::ErrorKind::NotFound => return Ok(DirState::Missing),
        Err(err) => return Err(io_err(dir)(err)),
    };
    if !meta.is_dir() {
        return Err(DirError::NotADirectory {
            path: dir.to_owned(),
        });
    }
    let mut others = Vec::new();
    let mut has_cluster_file = false;
    for entry in fs::read_dir(dir).map_err(io_err(dir))? {
        let name = entry.map_err(io_err(dir))?.file_name();
        match name.to_str() {
            Some(CLUSTER_FILE) => has_cluster_file = true,
            Some(LOCK_FILE | CLUSTER_TMP) => {}
            _ => others.push(name.to_string_lossy().into_owned()),
        }
    }
    if !has_cluster_file {
        if others.is_empty() {
            return Ok(DirState::Empty);
        }
        others.sort();
        let shown = others
            .iter()
            .take(3)
            .cloned()
            .collect::<Vec<_>>()
            .join(", ");
        let more = others.len().saturating_sub(3);
        let more = if more > 0 {
            format!(" and {more} more")
        } else {
            String::new()
        };
        return Ok(DirState::Foreign {
            reason: format!("it has no {CLUSTER_FILE} but holds {shown}{more}"),
        });
    }
    // Only the marker decides; a cluster.json of ours with an older schema still counts.
    let path = dir.join(CLUSTER_FILE);
    let marked = fs::read(&path)
        .ok()
        .and_then(|bytes| serde_json::from_slice::<serde_json::Value>(&bytes).ok())
        .is_some_and(|v| v.get("kind").and_then(|k| k.as_str()) == Some(KIND));
    if marked {
        Ok(DirState::Dev)
    } else {
        Ok(DirState::Foreign {
            reason: format!("its {CLUSTER_FILE} was not written by netting-control dev"),
        })
    }
}

/// Reads `DIR/cluster.json` of a [`DirState::Dev`] directory.
pub(crate) fn load_cluster(dir: &Path) -> Result<ClusterFile, DirError> {
    let bad = |reason: String| DirError::BadClusterFile {
        path: dir.to_owned(),
        reason,
    };
    let path = dir.join(CLUSTER_FILE);
    let bytes = fs::read(&path).map_err(io_err(&path))?;
    let value: serde_json::Value =
        serde_json::from_slice(&bytes).map_err(|e| bad(e.to_string()))?;
    let format = value.get("format").and_then(serde_json::Value::as_u64);
    if format != Some(u64::from(FORMAT)) {
        return Err(bad(format!(
            "format {format:?}, this netting-control reads format {FORMAT}"
        )));
    }
    serde_json::from_value(value).map_err(|e| bad(e.to_string()))
}

/// Takes the directory's lock for the life of the returned file, so two dev runs never drive
/// the same data. The kernel drops the lock when this process ends, even by SIGKILL, so a
/// crashed run never leaves a stale lock behind.
pub(crate) fn lock_dir(dir: &Path, holder: Option<u32>) -> Result<File, DirError> {
    let path = dir.join(LOCK_FILE);
    let file = OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .open(&path)
        .map_err(io_err(&path))?;
    match file.try_lock() {
        Ok(()) => Ok(file),
        Err(fs::TryLockError::WouldBlock) => Err(DirError::Locked {
            path: dir.to_owned(),
            pid: holder,
        }),
        Err(fs::TryLockError::Error(err)) => Err(io_err(&path)(err)),
    }
}

/// Deletes everything in a dev directory but the lock (which this run holds). Returns how
/// many entries went. The caller has checked that `dir` is [`DirState::Dev`] or empty.
pub(crate) fn clean_dir(dir: &Path) -> Result<usize, DirError> {
    let mut removed = 0;
    for entry in fs::read_dir(dir).map_err(io_err(dir))? {
        let entry = entry.map_err(io_err(dir))?;
        if entry.file_name() == LOCK_FILE {
            continue;
        }
        let path = entry.path();
        // `file_type` does not follow symlinks: a link is removed, never what it points to.
        let is_dir = entry.file_type().map_err(io_err(&path))?.is_dir();
        if is_dir {
            fs::remove_dir_all(&path).map_err(io_err(&path))?;
        } else {
            fs::remove_file(&path).map_err(io_err(&path))?;
        }
        removed += 1;
    }
    Ok(removed)
}
