//! The replica processes: spawning them, learning when one ends, signals to this process, and
//! the orderly stop (SIGTERM, a grace period, then SIGKILL).

use std::collections::BTreeMap;
use std::fs::OpenOptions;
use std::io::{self, Write};
use std::os::unix::process::ExitStatusExt;
use std::path::Path;
use std::process::{ExitStatus, Stdio};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use anyhow::Context;
use netting_raft::NodeId;
use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use tokio::process::{Child, Command};
use tokio::signal::unix::{SignalKind, signal};
use tokio::sync::{mpsc, watch};

use super::plan::{ReplicaPlan, SCRUBBED_ENV};

/// What `netting-control dev restart` sends the supervisor.
pub(crate) const RESTART_SIGNAL: SignalKind = SignalKind::user_defined1();

/// How long replicas get to stop after SIGTERM before they are killed.
pub(crate) const STOP_GRACE: Duration = Duration::from_secs(10);
/// How long to wait for the kernel to report SIGKILLed children as gone.
const KILL_WAIT: Duration = Duration::from_secs(5);

/// What the supervisor wants of every child; a watch channel, so a late reader still sees
/// the latest order.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Order {
    Run,
    Terminate,
    Kill,
}

/// A replica process that ended.
#[derive(Debug)]
pub(crate) struct Exit {
    pub(crate) node_id: NodeId,
    pub(crate) status: io::Result<ExitStatus>,
}

impl Exit {
    /// e.g. `exit code 0`, `signal 9, SIGKILL`.
    pub(crate) fn describe(&self) -> String {
        match &self.status {
            Ok(status) => describe_status(*status),
            Err(err) => format!("unknown status: {err}"),
        }
    }
}

pub(crate) fn describe_status(status: ExitStatus) -> String {
    if let Some(code) = status.code() {
        return format!("exit code {code}");
    }
    match status.signal() {
        Some(sig) => match Signal::try_from(sig) {
            Ok(name) => format!("signal {sig}, {}", name.as_str()),
            Err(_) => format!("signal {sig}"),
        },
        None => format!("{status}"),
    }
}

/// What woke the supervisor up.
#[derive(Debug)]
pub(crate) enum Event {
    Exited(Exit),
    /// SIGINT, SIGTERM or SIGHUP, by name.
    Signal(&'static str),
    /// SIGUSR1: bring back the replicas that died (`netting-control dev restart`).
    RestartRequested,
}

/// A spawned replica.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Spawned {
    pub(crate) pid: u32,
    /// Where this run's output starts in the (appended) log file.
    pub(crate) log_offset: u64,
}

struct Signals {
    interrupt: tokio::signal::unix::Signal,
    terminate: tokio::signal::unix::Signal,
    hangup: tokio::signal::unix::Signal,
}

impl Signals {
    fn install() -> io::Result<Self> {
        Ok(Signals {
            interrupt: signal(SignalKind::interrupt())?,
            terminate: signal(SignalKind::terminate())?,
            // A closed terminal must stop the cluster too, not orphan the replicas.
            hangup: signal(SignalKind::hangup())?,
        })
    }

    async fn next(&mut self) -> &'static str {
        tokio::select! {
            _ = self.interrupt.recv() => "SIGINT",
            _ = self.terminate.recv() => "SIGTERM",
            _ = self.hangup.recv() => "SIGHUP",
        }
    }
}

/// Owns the replica processes. Each child is held by a task that waits for it and carries out
/// the supervisor's orders, so a pid is only ever signalled while its process is unreaped.
pub(crate) struct Supervisor {
    alive: BTreeMap<NodeId, u32>,
    exits_tx: mpsc::Sender<Exit>,
    exits_rx: mpsc::Receiver<Exit>,
    orders: watch::Sender<Order>,
    signals: Signals,
    restart_requests: tokio::signal::unix::Signal,
}

impl std::fmt::Debug for Supervisor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Supervisor")
            .field("alive", &self.alive)
            .finish_non_exhaustive()
    }
}

impl Supervisor {
    /// Installs the signal handlers first, so a Ctrl-C during start-up is not lost.
    pub(crate) fn new(replicas: usize) -> anyhow::Result<Self> {
        let signals = Signals::install().context("cannot install signal handlers")?;
        let restart_requests =
            signal(RESTART_SIGNAL).context("cannot install the SIGUSR1 handler")?;
        // Each child sends exactly one exit, so this capacity never makes a sender wait.
        let (exits_tx, exits_rx) = mpsc::channel(replicas.max(1));
        let (orders, _) = watch::channel(Order::Run);
        Ok(Supervisor {
            alive: BTreeMap::new(),
            exits_tx,
            exits_rx,
            orders,
            signals,
            restart_requests,
        })
    }

    /// Ids of the replicas still running.
    pub(crate) fn alive(&self) -> Vec<NodeId> {
        self.alive.keys().copied().collect()
    }

    pub(crate) fn spawn(
        &mut self,
        exe: &Path,
        replica: &ReplicaPlan,
        args: &[std::ffi::OsString],
    ) -> anyhow::Result<Spawned> {
        let log = &replica.log_file;
        let mut out = OpenOptions::new()
            .create(true)
            .append(true)
            .open(log)
            .with_context(|| format!("cannot open log file {}", log.display()))?;
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or_default();
        writeln!(
            out,
            "--- netting-control dev: starting replica {} (unix time {now}) ---",
            replica.node_id
        )
        .with_context(|| format!("cannot write log file {}", log.display()))?;
        // After the banner: an error report shows what the replica wrote, not ours.
        let log_offset = out
            .metadata()
            .with_context(|| format!("cannot stat log file {}", log.display()))?
            .len();
        let err = out
            .try_clone()
            .with_context(|| format!("cannot reopen log file {}", log.display()))?;

        let mut command = Command::new(exe);
        command
            .args(args)
            .stdin(Stdio::null())
            .stdout(out)
            .stderr(err)
            // Its own process group: a Ctrl-C in the terminal reaches only the supervisor,
            // which then stops the replicas in order instead of racing them.
            .process_group(0)
            .kill_on_drop(true);
        for var in SCRUBBED_ENV {
            command.env_remove(var);
        }
        // The output goes to a file: escape codes would only make it harder to read and grep.
        command.env("NO_COLOR", "1");
        let child = command.spawn().with_context(|| {
            format!(
                "cannot start replica {} ({})",
                replica.node_id,
                exe.display()
            )
        })?;
        let pid = child.id().context("a just-started replica has no pid")?;
        self.alive.insert(replica.node_id, pid);
        tokio::spawn(watch_child(
            replica.node_id,
            child,
            self.orders.subscribe(),
            self.exits_tx.clone(),
        ));
        Ok(Spawned { pid, log_offset })
    }

    /// The next child exit or stop signal. Cancel-safe: it only awaits channel receives.
    pub(crate) async fn next_event(&mut self) -> Event {
        tokio::select! {
            Some(exit) = self.exits_rx.recv() => {
                self.alive.remove(&exit.node_id);
                Event::Exited(exit)
            }
            name = self.signals.next() => Event::Signal(name),
            Some(()) = self.restart_requests.recv() => Event::RestartRequested,
        }
    }

    /// Stops every running child: SIGTERM, then SIGKILL after [`STOP_GRACE`] or at a second
    /// signal. `on_exit` sees each child that ends meanwhile.
    pub(crate) async fn shutdown(&mut self, mut on_exit: impl FnMut(&Exit)) {
        if self.alive.is_empty() {
            return;
        }
        println!(
            "stopping {} replica(s): SIGTERM, then SIGKILL after {}s (Ctrl-C again to kill now)",
            self.alive.len(),
            STOP_GRACE.as_secs()
        );
        self.orders.send_replace(Order::Terminate);
        let grace = tokio::time::sleep(STOP_GRACE);
        tokio::pin!(grace);
        while !self.alive.is_empty() {
            tokio::select! {
                Some(exit) = self.exits_rx.recv() => {
                    self.alive.remove(&exit.node_id);
                    on_exit(&exit);
                }
                () = &mut grace => {
                    println!(
                        "replica(s) {} still running after {}s: sending SIGKILL",
                        join_ids(&self.alive()),
                        STOP_GRACE.as_secs()
                    );
                    break;
                }
                name = self.signals.next() => {
                    println!("{name} again: sending SIGKILL to replica(s) {}", join_ids(&self.alive()));
                    break;
                }
            }
        }
        if self.alive.is_empty() {
            return;
        }
        self.orders.send_replace(Order::Kill);
        let deadline = tokio::time::sleep(KILL_WAIT);
        tokio::pin!(deadline);
        while !self.alive.is_empty() {
            tokio::select! {
                Some(exit) = self.exits_rx.recv() => {
                    self.alive.remove(&exit.node_id);
                    on_exit(&exit);
                }
                () = &mut deadline => {
                    eprintln!(
                        "warning: replica(s) {} did not go away after SIGKILL",
                        join_ids(&self.alive())
                    );
                    return;
                }
            }
        }
    }
}

pub(crate) fn join_ids(ids: &[NodeId]) -> String {
    ids.iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join(", ")
}

/// Waits for one child and carries out orders while it runs. Signals go through the `Child`
/// this task owns: once `wait` has reaped the process its pid is never used again, so a
/// recycled pid cannot be hit.
pub(super) async fn watch_child(
    node_id: NodeId,
    mut child: Child,
    mut orders: watch::Receiver<Order>,
    exits: mpsc::Sender<Exit>,
) {
    let status = loop {
        tokio::select! {
            status = child.wait() => break status,
            changed = orders.changed() => {
                if changed.is_err() {
                    // The supervisor is gone and nobody will stop this child any more.
                    let _ = child.start_kill();
                    break child.wait().await;
                }
                let order = *orders.borrow_and_update();
                match order {
                    Order::Run => {}
                    Order::Terminate => terminate(&child),
                    Order::Kill => {
                        // Fails only if the child already exited, which `wait` reports next.
                        let _ = child.start_kill();
                    }
                }
            }
        }
    };
    // The receiver is gone only when the supervisor is, and then nobody needs to know.
    let _ = exits.send(Exit { node_id, status }).await;
}

fn terminate(child: &Child) {
    let Some(pid) = child.id().and_then(|pid| i32::try_from(pid).ok()) else {
        return;
    };
    // ESRCH means it is exiting anyway, which `wait` reports next.
    let _ = kill(Pid::from_raw(pid), Signal::SIGTERM);
}

/// Whether a pid recorded by an earlier run still names a process (maybe another one, if the
/// pid was reused: callers only use this for hints).
pub(crate) fn pid_alive(pid: u32) -> bool {
    let Ok(raw) = i32::try_from(pid) else {
        return false;
    };
    match kill(Pid::from_raw(raw), None) {
        Ok(()) => true,
        Err(errno) => errno == nix::errno::Errno::EPERM,
    }
}

/// The last `n` lines of what a replica wrote to its log since `offset`, for an error
/// message. Best effort: an unreadable log yields nothing.
pub(crate) fn log_tail(path: &Path, offset: u64, n: usize) -> Vec<String> {
    let Ok(bytes) = std::fs::read(path) else {
        return Vec::new();
    };
    let start = usize::try_from(offset)
        .unwrap_or(usize::MAX)
        .min(bytes.len());
    last_lines(&String::from_utf8_lossy(&bytes[start..]), n)
}

pub(crate) fn last_lines(text: &str, n: usize) -> Vec<String> {
    let lines: Vec<&str> = text.lines().filter(|l| !l.trim().is_empty()).collect();
    lines[lines.len().saturating_sub(n)..]
        .iter()
        .map(|l| (*l).to_owned())
        .collect()
}
