//! One `netting-control dev` run after its directory is prepared: starting the replicas,
//! probing them through start-up, supervising them (exits, restarts due or asked for), keeping
//! `cluster.json` current, and stopping them.

use std::collections::BTreeMap;
use std::ffi::OsString;
use std::path::PathBuf;

use anyhow::{anyhow, bail};
use netting_raft::NodeId;
use tokio::time::{Instant, MissedTickBehavior};

use super::plan::{self, ReplicaPlan};
use super::probe;
use super::restart::{AfterExit, RestartPolicy, Restarts};
use super::state::{CLUSTER_FILE, ClusterFile, ClusterState};
use super::supervise::{self, Event, Supervisor};
use super::{HEALTH_TIMEOUT, LOG_TAIL_LINES, POLL_INTERVAL, PROBE_TIMEOUT, READY_TIMEOUT, summary};

/// Sleeps until `at`, or forever when there is nothing to wait for.
async fn sleep_until_due(at: Option<Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}

/// Where start-up stands; the probes move it forward.
enum Phase {
    Health { deadline: Instant },
    Ready { since: Instant, warned: bool },
    Running,
}

pub(super) struct Session {
    pub(super) dir: PathBuf,
    pub(super) replicas: Vec<ReplicaPlan>,
    pub(super) cluster: ClusterFile,
    pub(super) log_offsets: BTreeMap<NodeId, u64>,
    pub(super) sup: Supervisor,
    pub(super) nettingctl_found: bool,
    pub(super) told_how_to_restart: bool,
    pub(super) exe: PathBuf,
    pub(super) catalog: Option<PathBuf>,
    pub(super) policy: RestartPolicy,
    pub(super) restarts: BTreeMap<NodeId, Restarts>,
    /// When each running replica was (last) started.
    pub(super) started_at: BTreeMap<NodeId, Instant>,
    /// Automatic restarts to come, by when they are due.
    pub(super) pending: BTreeMap<NodeId, Instant>,
}

impl Session {
    pub(super) async fn start_and_supervise(&mut self) -> anyhow::Result<()> {
        for r in self.replicas.clone() {
            match self.spawn(&r) {
                Ok(_) => {}
                Err(err) => {
                    self.stop().await;
                    return Err(err);
                }
            }
        }
        self.cluster.state = ClusterState::Running;
        self.save();
        println!(
            "{}",
            summary(&self.cluster, &self.dir, self.nettingctl_found)
        );
        println!("\nwaiting for every replica to answer /healthz ...");
        self.supervise().await
    }

    /// Starts one replica and records it; returns its pid.
    fn spawn(&mut self, r: &ReplicaPlan) -> anyhow::Result<u32> {
        let args: Vec<OsString> = plan::child_args(r, &self.replicas, self.catalog.as_deref());
        let spawned = self.sup.spawn(&self.exe, r, &args)?;
        self.cluster.set_running(r.node_id, spawned.pid);
        self.log_offsets.insert(r.node_id, spawned.log_offset);
        self.started_at.insert(r.node_id, Instant::now());
        Ok(spawned.pid)
    }

    async fn supervise(&mut self) -> anyhow::Result<()> {
        let started = Instant::now();
        let mut phase = Phase::Health {
            deadline: started + HEALTH_TIMEOUT,
        };
        let mut tick = tokio::time::interval(POLL_INTERVAL);
        tick.set_missed_tick_behavior(MissedTickBehavior::Delay);
        loop {
            let next_restart = self.pending.values().min().copied();
            tokio::select! {
                event = self.sup.next_event() => match event {
                    Event::Signal(name) => {
                        println!("{name}: stopping the cluster");
                        self.stop().await;
                        println!(
                            "cluster stopped; data kept in {} (run the same command to start it \
                             again)",
                            self.dir.display()
                        );
                        return Ok(());
                    }
                    Event::Exited(exit) => {
                        let status = exit.describe();
                        self.cluster.set_ended(exit.node_id, &status, false);
                        self.save();
                        if matches!(phase, Phase::Health { .. }) {
                            let log = self.show_log_tail(exit.node_id);
                            self.stop().await;
                            bail!(
                                "replica {} exited during start-up ({status}); see its log: {log}",
                                exit.node_id
                            );
                        }
                        self.report_exit(exit.node_id, &status)?;
                    }
                    Event::RestartRequested => self.restart_on_request(),
                },
                () = sleep_until_due(next_restart), if next_restart.is_some() => {
                    self.restart_due();
                }
                _ = tick.tick(), if !matches!(phase, Phase::Running) => {
                    if let Some(next) = self.advance(&mut phase, started).await? {
                        phase = next;
                    }
                }
            }
        }
    }

    /// One probe round of start-up; returns the next phase when this one is over.
    async fn advance(
        &mut self,
        phase: &mut Phase,
        started: Instant,
    ) -> anyhow::Result<Option<Phase>> {
        match phase {
            Phase::Health { deadline } => {
                let failing = self.probe("/healthz").await;
                let Some((id, why)) = failing.into_iter().next() else {
                    println!("all replicas are healthy; waiting for a leader (/readyz) ...");
                    return Ok(Some(Phase::Ready {
                        since: Instant::now(),
                        warned: false,
                    }));
                };
                if Instant::now() < *deadline {
                    return Ok(None);
                }
                let admin = self
                    .replica(id)
                    .map(|r| r.admin_addr.to_string())
                    .unwrap_or_default();
                println!(
                    "replica {id} did not answer /healthz on {admin} within {}s (last try: {why})",
                    HEALTH_TIMEOUT.as_secs()
                );
                let log = self.show_log_tail(id);
                self.stop().await;
                Err(anyhow!(
                    "replica {id} did not become healthy within {}s; see its log: {log}",
                    HEALTH_TIMEOUT.as_secs()
                ))
            }
            Phase::Ready { since, warned } => {
                let failing = self.probe("/readyz").await;
                if failing.is_empty() {
                    println!(
                        "cluster ready ({:.1}s after start)",
                        started.elapsed().as_secs_f64()
                    );
                    return Ok(Some(Phase::Running));
                }
                if !*warned && since.elapsed() >= READY_TIMEOUT {
                    *warned = true;
                    let list = failing
                        .iter()
                        .map(|(id, why)| format!("replica {id}: {why}"))
                        .collect::<Vec<_>>()
                        .join("; ");
                    eprintln!(
                        "warning: not ready after {}s ({list}); the cluster keeps running and \
                         \"cluster ready\" follows if it gets there. Logs: {}/node-<id>.log",
                        READY_TIMEOUT.as_secs(),
                        self.dir.display()
                    );
                }
                Ok(None)
            }
            Phase::Running => Ok(None),
        }
    }

    /// Probes `path` on every running replica; returns those not answering 200, by id.
    async fn probe(&self, path: &str) -> Vec<(NodeId, String)> {
        let alive = self.sup.alive();
        let probes = self
            .replicas
            .iter()
            .filter(|r| alive.contains(&r.node_id))
            .map(|r| async move {
                let answer = probe::http_status(r.admin_addr, path, PROBE_TIMEOUT).await;
                (r.node_id, answer)
            });
        futures::future::join_all(probes)
            .await
            .into_iter()
            .filter_map(|(id, answer)| match answer {
                Ok(200) => None,
                Ok(code) => Some((id, format!("HTTP {code}"))),
                Err(err) => Some((id, err.to_string())),
            })
            .collect()
    }

    fn report_exit(&mut self, node_id: NodeId, status: &str) -> anyhow::Result<()> {
        let alive = self.sup.alive().len();
        let total = self.replicas.len();
        let ran_for = self
            .started_at
            .remove(&node_id)
            .map(|t| t.elapsed())
            .unwrap_or_default();
        let decision = self
            .restarts
            .entry(node_id)
            .or_default()
            .exited(ran_for, &self.policy);
        if let AfterExit::RestartIn(pause) = decision {
            self.pending.insert(node_id, Instant::now() + pause);
        }
        if alive == 0 && self.pending.is_empty() {
            self.cluster.set_stopped();
            self.save();
            bail!(
                "replica {node_id} exited ({status}) and no replica is left; logs are in {}",
                self.dir.display()
            );
        }
        println!("replica {node_id} exited ({status}) after running {ran_for:.1?}");
        if alive <= total / 2 {
            println!(
                "note: {alive} of {total} replicas left, not a majority: writes wait until enough \
                 come back"
            );
        }
        match decision {
            AfterExit::RestartIn(pause) => {
                println!("restarting replica {node_id} in {pause:?} (--restart-after)");
            }
            AfterExit::WaitForRequest if !self.told_how_to_restart => {
                self.told_how_to_restart = true;
                println!(
                    "(to bring it back with its data: netting-control dev restart --dir {}; or \
                     start dev with --restart-after 2s to do it on its own)",
                    plan::shell_quote(&self.dir.display().to_string())
                );
            }
            AfterExit::WaitForRequest => {}
            AfterExit::GiveUp { quick_failures } => {
                let log = self.show_log_tail(node_id);
                eprintln!(
                    "replica {node_id} died {quick_failures} times in a row within {}s of \
                     starting; not restarting it on its own any more. See its log: {log}; \
                     `netting-control dev restart --dir {}` tries again",
                    self.policy.quick_failure.as_secs(),
                    plan::shell_quote(&self.dir.display().to_string())
                );
            }
        }
        Ok(())
    }

    /// SIGUSR1: every dead replica is started now, pending delays or not.
    fn restart_on_request(&mut self) {
        let alive = self.sup.alive();
        let dead: Vec<NodeId> = self
            .replicas
            .iter()
            .map(|r| r.node_id)
            .filter(|id| !alive.contains(id))
            .collect();
        if dead.is_empty() {
            println!("restart requested: every replica is running, nothing to do");
            return;
        }
        println!(
            "restart requested: starting replica(s) {}",
            supervise::join_ids(&dead)
        );
        for id in dead {
            self.pending.remove(&id);
            self.restarts.entry(id).or_default().requested();
            self.restart(id);
        }
    }

    /// Starts the replicas whose `--restart-after` pause is over.
    fn restart_due(&mut self) {
        let now = Instant::now();
        let due: Vec<NodeId> = self
            .pending
            .iter()
            .filter(|(_, at)| **at <= now)
            .map(|(id, _)| *id)
            .collect();
        for id in due {
            self.pending.remove(&id);
            self.restart(id);
        }
    }

    /// Starts a dead replica again on its data directory, so it rejoins and catches up.
    fn restart(&mut self, node_id: NodeId) {
        let Some(plan) = self.replica(node_id).cloned() else {
            return;
        };
        match self.spawn(&plan) {
            Ok(pid) => {
                let count = self.restarts.entry(node_id).or_default().restarted();
                self.cluster.set_restarts(node_id, count);
                self.save();
                println!(
                    "replica {node_id} restarted (pid {pid}, restart {count} of this run); it \
                     catches up from its data in {}",
                    plan.data_dir.display()
                );
            }
            Err(err) => {
                eprintln!("warning: cannot restart replica {node_id}: {err:#}");
            }
        }
    }

    /// Prints what the replica wrote since it started; returns its log's path.
    fn show_log_tail(&self, node_id: NodeId) -> String {
        let Some(r) = self.replica(node_id) else {
            return String::new();
        };
        let offset = self.log_offsets.get(&node_id).copied().unwrap_or(0);
        let lines = supervise::log_tail(&r.log_file, offset, LOG_TAIL_LINES);
        let log = r.log_file.display().to_string();
        if !lines.is_empty() {
            eprintln!("last lines of {log}:");
            for line in lines {
                eprintln!("  | {line}");
            }
        }
        log
    }

    fn replica(&self, node_id: NodeId) -> Option<&ReplicaPlan> {
        self.replicas.iter().find(|r| r.node_id == node_id)
    }

    /// Stops every replica still running and records it in cluster.json.
    async fn stop(&mut self) {
        let Session { sup, cluster, .. } = self;
        sup.shutdown(|exit| {
            let status = exit.describe();
            println!("replica {} stopped ({status})", exit.node_id);
            cluster.set_ended(exit.node_id, &status, true);
        })
        .await;
        self.cluster.set_stopped();
        self.save();
    }

    /// Best effort while running: a failed update of cluster.json must not take the cluster
    /// down, so it is reported and the run goes on.
    fn save(&self) {
        if let Err(err) = self.cluster.save(&self.dir) {
            eprintln!(
                "warning: cannot update {}: {err}",
                self.dir.join(CLUSTER_FILE).display()
            );
        }
    }
}
