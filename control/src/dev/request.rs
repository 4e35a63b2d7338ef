//! `netting-control dev restart`: asks the dev run that holds a directory to start its dead
//! replicas again, and waits until `cluster.json` says they run.
//!
//! The request is SIGUSR1 to the supervisor's pid from `cluster.json`. That pid is only
//! signalled while the directory's lock is held, which only a live dev run does (the kernel
//! drops the lock when it dies), so a stale file never gets a recycled pid signalled.

use std::path::Path;
use std::time::Duration;

use anyhow::{Context, bail};
use netting_raft::NodeId;
use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;

use super::state::{self, ClusterState, DirError, DirState, ReplicaState};
use super::supervise::join_ids;

/// How long the restarted replicas get to show up as running in `cluster.json`.
const WAIT_RUNNING: Duration = Duration::from_secs(15);
const POLL: Duration = Duration::from_millis(100);

pub(super) async fn restart_dead_replicas(dir: &Path) -> anyhow::Result<()> {
    if state::inspect_dir(dir)? != DirState::Dev {
        bail!(
            "{} holds no dev cluster (no cluster.json of netting-control dev); pass the --dir \
             the cluster was started with",
            dir.display()
        );
    }
    let cluster = state::load_cluster(dir)?;
    let pid = match (cluster.state, cluster.supervisor_pid) {
        (ClusterState::Stopped, _) | (_, None) => bail!(
            "the dev cluster in {} is not running; start it with `netting-control dev --dir {}`",
            dir.display(),
            dir.display()
        ),
        (_, Some(pid)) => pid,
    };
    match state::lock_dir(dir, Some(pid)) {
        // We got the lock, so nobody holds it: the run that wrote the file is gone.
        Ok(_lock) => bail!(
            "no netting-control dev runs on {} (cluster.json names pid {pid}, which ended \
             without cleaning up); start it with `netting-control dev --dir {}`",
            dir.display(),
            dir.display()
        ),
        Err(DirError::Locked { .. }) => {}
        Err(err) => return Err(err.into()),
    }
    let dead: Vec<NodeId> = cluster
        .replicas
        .iter()
        .filter(|r| r.state != ReplicaState::Running)
        .map(|r| r.node_id)
        .collect();
    if dead.is_empty() {
        println!(
            "every replica of the dev cluster in {} is running",
            dir.display()
        );
        return Ok(());
    }
    let raw = i32::try_from(pid).context("cluster.json names an impossible pid")?;
    kill(Pid::from_raw(raw), Signal::SIGUSR1)
        .with_context(|| format!("cannot signal netting-control dev (pid {pid})"))?;
    println!(
        "asked netting-control dev (pid {pid}) to restart replica(s) {}",
        join_ids(&dead)
    );
    let deadline = tokio::time::Instant::now() + WAIT_RUNNING;
    loop {
        // A half-written file cannot be seen (it is renamed into place), but a read can race
        // the rename: try again at the next poll.
        if let Ok(now) = state::load_cluster(dir) {
            let running: Vec<(NodeId, Option<u32>, u32)> = now
                .replicas
                .iter()
                .filter(|r| dead.contains(&r.node_id) && r.state == ReplicaState::Running)
                .map(|r| (r.node_id, r.pid, r.restarts))
                .collect();
            if running.len() == dead.len() {
                for (id, pid, restarts) in running {
                    let pid = pid.map(|p| p.to_string()).unwrap_or_else(|| "?".into());
                    println!("replica {id} runs again (pid {pid}, restarts so far: {restarts})");
                }
                return Ok(());
            }
        }
        if tokio::time::Instant::now() >= deadline {
            bail!(
                "replica(s) {} not running {}s after the request; see the dev run's output and \
                 {}/node-<id>.log",
                join_ids(&dead),
                WAIT_RUNNING.as_secs(),
                dir.display()
            );
        }
        tokio::time::sleep(POLL).await;
    }
}
