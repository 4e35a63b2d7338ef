//! `netting-control dev`: a cluster of replicas on this machine, as child processes of this
//! one, for trying Netting out and for playing with failover.
//!
//! Ports are fixed, not random: Raft membership stores the peers' addresses in the data
//! directory, so a directory kept between runs must get the same addresses again. The layout
//! is recorded in `DIR/cluster.json` and reused by the next run.
//!
//! - `plan`: pure decisions (layout, reuse, addresses, command lines).
//! - `state`: the directory, `cluster.json`, the lock and `--clean`.
//! - `probe`: port checks and the admin HTTP probes.
//! - `supervise`: the child processes and signals.
//! - `session`: one run: start-up, supervision, restarts, the state file, shutdown.
//! - `restart`: when a replica that died is started again (pure decisions).
//! - `request`: `netting-control dev restart`, which asks a running dev run for that.

mod plan;
mod probe;
mod request;
mod restart;
mod session;
mod state;
mod supervise;

#[cfg(test)]
mod tests;

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context, bail};
use clap::Args;

pub use plan::Layout;
pub use state::{ClusterFile, ClusterState, ReplicaEntry, ReplicaState};

use plan::LayoutFlags;
use restart::RestartPolicy;
use session::Session;
use state::{CLUSTER_FILE, DirState};
use supervise::Supervisor;

/// How long every replica gets to answer `/healthz` before start-up is declared failed.
const HEALTH_TIMEOUT: Duration = Duration::from_secs(30);
/// How long after that before a missing `/readyz` earns a warning (the cluster keeps running).
const READY_TIMEOUT: Duration = Duration::from_secs(30);
const POLL_INTERVAL: Duration = Duration::from_millis(200);
const PROBE_TIMEOUT: Duration = Duration::from_secs(1);
const LOG_TAIL_LINES: usize = 15;

/// Flags of `netting-control dev`.
#[derive(Debug, Clone, Args)]
#[command(args_conflicts_with_subcommands = true)]
pub struct DevArgs {
    #[command(subcommand)]
    pub action: Option<DevAction>,

    /// Directory for the replicas' data, logs and cluster.json; kept between runs.
    #[arg(long, value_name = "PATH", default_value = DEFAULT_DIR)]
    pub dir: PathBuf,

    /// Start a replica that died (kill -9, a crash) again after this pause, e.g. 2s; one
    /// that keeps dying within 10s of starting is given up on after 5 tries. Without it, a
    /// dead replica stays down until `netting-control dev restart`.
    #[arg(long, value_name = "DURATION", value_parser = crate::config::parse_duration)]
    pub restart_after: Option<Duration>,

    /// Delete the dev cluster in --dir first (only a directory a dev run created).
    #[arg(long)]
    pub clean: bool,

    /// Catalog file (YAML or JSON) every replica watches, as its --catalog-file.
    #[arg(long, value_name = "FILE")]
    pub catalog: Option<PathBuf>,

    /// gRPC port of replica 0; replica K gets N+K. [default: 7100, or the previous run's]
    #[arg(long, value_name = "N")]
    pub grpc_base_port: Option<u16>,

    /// Admin HTTP port of replica 0; replica K gets N+K. [default: 7190, or the previous
    /// run's]
    #[arg(long, value_name = "N")]
    pub admin_base_port: Option<u16>,

    /// Number of replicas, 1 to 7. [default: 3, or the previous run's]
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u8).range(1..=7))]
    pub replicas: Option<u8>,

    /// Address the replicas listen on. [default: 127.0.0.1, or the previous run's]
    #[arg(long, value_name = "IP")]
    pub bind: Option<IpAddr>,
}

const DEFAULT_DIR: &str = "./.netting-dev";

/// What `netting-control dev` does besides running a cluster.
#[derive(Debug, Clone, clap::Subcommand)]
pub enum DevAction {
    /// Ask the running dev cluster in --dir to start its dead replicas again now (they keep
    /// their data and catch up), and wait until they run.
    Restart {
        /// The running dev cluster's directory.
        #[arg(long, value_name = "PATH", default_value = DEFAULT_DIR)]
        dir: PathBuf,
    },
}

impl DevArgs {
    fn layout_flags(&self) -> LayoutFlags {
        LayoutFlags {
            bind: self.bind,
            grpc_base_port: self.grpc_base_port,
            admin_base_port: self.admin_base_port,
            replicas: self.replicas,
        }
    }
}

/// Runs a dev cluster until SIGINT/SIGTERM/SIGHUP (`Ok`), or until start-up fails or every
/// replica has exited (`Err`).
pub async fn run(args: DevArgs) -> anyhow::Result<()> {
    if let Some(DevAction::Restart { dir }) = &args.action {
        return request::restart_dead_replicas(dir).await;
    }
    // Checked before anything is created or started, so a typo costs nothing.
    let catalog = args.catalog.as_deref().map(resolve_catalog).transpose()?;
    let prepared = prepare_dir(&args.dir, args.clean)?;
    let dir = prepared.dir.clone();

    let reused = prepared.reuse.as_ref().map(|c| &c.layout);
    let layout = plan::resolve_layout(args.layout_flags(), reused, &dir)?;
    if let Some(previous) = &prepared.reuse {
        println!(
            "reusing the cluster in {} (same ids and ports; --clean starts afresh)",
            dir.display()
        );
        if let (Some(file), None) = (&previous.catalog_file, &catalog) {
            println!(
                "note: the previous run watched --catalog {}; pass it again to keep watching it",
                file.display()
            );
        }
    }
    let replicas = plan::plan_replicas(&layout, &dir);
    if let Err(err) = probe::check_ports(&replicas) {
        bail!(
            "{err}; {}",
            port_hint(prepared.earlier.as_ref(), prepared.reuse.is_some())
        );
    }

    let exe = std::env::current_exe()
        .context("cannot find this executable's path to start the replicas")?;
    let (program, nettingctl_found) = find_nettingctl(&exe);
    let nettingctl = format!("{program} --addr {}", plan::nettingctl_addrs(&replicas));
    let cluster = ClusterFile::new(layout, catalog.clone(), nettingctl, &replicas);
    for r in &replicas {
        std::fs::create_dir_all(&r.data_dir)
            .with_context(|| format!("cannot create data directory {}", r.data_dir.display()))?;
    }
    // Written before any replica writes data, so the directory always looks like a dev
    // directory to the next run (and to --clean) once it holds anything.
    cluster
        .save(&dir)
        .with_context(|| format!("cannot write {}", dir.join(CLUSTER_FILE).display()))?;

    let sup = Supervisor::new(replicas.len())?;
    let mut session = Session {
        dir,
        replicas,
        cluster,
        log_offsets: BTreeMap::new(),
        sup,
        nettingctl_found,
        told_how_to_restart: false,
        exe,
        catalog,
        policy: RestartPolicy::new(args.restart_after),
        restarts: BTreeMap::new(),
        started_at: BTreeMap::new(),
        pending: BTreeMap::new(),
    };
    let result = session.start_and_supervise().await;
    // Keep the lock until the file says "stopped", so the next run never sees a half state.
    drop(prepared.lock);
    result
}

fn resolve_catalog(path: &Path) -> anyhow::Result<PathBuf> {
    let meta = std::fs::metadata(path)
        .with_context(|| format!("--catalog {}: cannot read it", path.display()))?;
    if !meta.is_file() {
        bail!("--catalog {}: not a file", path.display());
    }
    // Absolute, so the replicas find it whatever their working directory.
    std::fs::canonicalize(path).with_context(|| format!("--catalog {}", path.display()))
}

struct Prepared {
    dir: PathBuf,
    lock: std::fs::File,
    /// The earlier run's file, when readable (also after --clean, for hints).
    earlier: Option<ClusterFile>,
    /// The earlier run's file when its cluster is kept and must be reused.
    reuse: Option<ClusterFile>,
}

/// Makes `dir` ready: refuses a directory a dev run did not create, takes the lock, cleans
/// it when asked, and reads the earlier run's cluster.json.
fn prepare_dir(dir: &Path, clean: bool) -> anyhow::Result<Prepared> {
    let state = state::inspect_dir(dir)?;
    match &state {
        DirState::Foreign { reason } if clean => bail!(
            "refusing to --clean {}: {reason}, so it does not look like a directory of \
             `netting-control dev`. Nothing was deleted; remove it yourself if you are sure, or \
             pick another --dir",
            dir.display()
        ),
        DirState::Foreign { reason } => bail!(
            "refusing to use {} for a dev cluster: {reason}. Pick another --dir (a new or \
             empty directory)",
            dir.display()
        ),
        DirState::Missing => std::fs::create_dir_all(dir)
            .with_context(|| format!("cannot create --dir {}", dir.display()))?,
        DirState::Empty | DirState::Dev => {}
    }
    let dir = std::fs::canonicalize(dir)
        .with_context(|| format!("cannot resolve --dir {}", dir.display()))?;
    let earlier = if state == DirState::Dev {
        Some(state::load_cluster(&dir))
    } else {
        None
    };
    let holder = earlier
        .as_ref()
        .and_then(|c| c.as_ref().ok())
        .and_then(|c| c.supervisor_pid);
    let lock = state::lock_dir(&dir, holder)?;
    if !clean {
        let earlier = earlier.transpose()?;
        return Ok(Prepared {
            dir,
            lock,
            reuse: earlier.clone(),
            earlier,
        });
    }
    if state == DirState::Dev {
        println!(
            "--clean: deleting the dev cluster in {} (data, logs and cluster.json)",
            dir.display()
        );
        let removed = state::clean_dir(&dir)?;
        println!("--clean: removed {removed} entries");
    } else {
        println!("--clean: {} is already empty", dir.display());
    }
    Ok(Prepared {
        dir,
        lock,
        earlier: earlier.and_then(Result::ok),
        reuse: None,
    })
}

/// What to suggest when a port is taken: replicas orphaned by an earlier dev run that was
/// killed are the likely culprit when their pids are still alive.
fn port_hint(earlier: Option<&ClusterFile>, reusing: bool) -> String {
    let orphans: Vec<u32> = earlier
        .into_iter()
        .flat_map(|c| c.replicas.iter())
        .filter_map(|r| r.pid)
        .filter(|pid| supervise::pid_alive(*pid))
        .collect();
    if !orphans.is_empty() {
        let pids = orphans
            .iter()
            .map(ToString::to_string)
            .collect::<Vec<_>>()
            .join(" ");
        return format!(
            "replicas of an earlier dev run may still be running; stop them with `kill {pids}`"
        );
    }
    let mut hint = "stop what uses it, or pick other ports with --grpc-base-port and \
                    --admin-base-port"
        .to_owned();
    if reusing {
        hint.push_str(" (with --clean or another --dir, since this directory keeps its ports)");
    }
    hint
}

/// The nettingctl to show, and whether it was found at all.
fn find_nettingctl(exe: &Path) -> (String, bool) {
    let on_path = std::env::var_os("PATH")
        .is_some_and(|paths| std::env::split_paths(&paths).any(|p| p.join("nettingctl").is_file()));
    let sibling = exe
        .parent()
        .map(|p| p.join("nettingctl"))
        .filter(|p| p.is_file());
    let found = on_path || sibling.is_some();
    (plan::nettingctl_program(on_path, sibling.as_deref()), found)
}

/// What the running cluster looks like and how to use it.
fn summary(cluster: &ClusterFile, dir: &Path, nettingctl_found: bool) -> String {
    let n = cluster.layout.replicas;
    let mut out = String::new();
    let tolerated = plan::tolerated_failures(n);
    let plural = if tolerated == 1 { "" } else { "s" };
    let _ = writeln!(
        out,
        "netting-control dev: {n} replica(s) in {} (tolerates {tolerated} failure{plural})\n",
        dir.display()
    );
    let width = cluster
        .replicas
        .iter()
        .map(|r| {
            r.grpc_address
                .to_string()
                .len()
                .max(r.admin_address.to_string().len())
        })
        .max()
        .unwrap_or(0);
    let _ = writeln!(out, "  id  {:<width$}  {:<width$}  pid", "gRPC", "admin");
    for r in &cluster.replicas {
        let pid = r.pid.map(|p| p.to_string()).unwrap_or_else(|| "-".into());
        let _ = writeln!(
            out,
            "  {:<2}  {:<width$}  {:<width$}  {pid}",
            r.node_id,
            r.grpc_address.to_string(),
            r.admin_address.to_string()
        );
    }
    let d = dir.display();
    let _ = writeln!(out, "\n  logs   {d}/node-<id>.log");
    let _ = writeln!(
        out,
        "  data   {d}/node-<id>/  (kept between runs; --clean starts afresh)"
    );
    let _ = writeln!(out, "  state  {d}/{CLUSTER_FILE}\n");
    let ctl = &cluster.nettingctl;
    let _ = writeln!(out, "try:");
    let _ = writeln!(out, "  {ctl} status");
    let _ = writeln!(
        out,
        "  {ctl} catalog register default/web --address 127.0.0.1 --port 8080"
    );
    let _ = writeln!(out, "  {ctl} catalog list");
    if !nettingctl_found {
        let _ = writeln!(
            out,
            "  (nettingctl is not built yet: cargo build -p netting-control --bin nettingctl)"
        );
    }
    if let Some(first) = cluster.replicas.first() {
        let _ = writeln!(
            out,
            "  curl http://{}/readyz   (also /healthz, /metrics, /debug/raft)",
            first.admin_address
        );
    }
    // With fewer than 3 replicas no failure is tolerated, so there is no failover to watch.
    if tolerated > 0 {
        let _ = writeln!(
            out,
            "  kill -9 <pid>   to watch a failover; the other replicas keep running"
        );
        let _ = writeln!(
            out,
            "  netting-control dev restart --dir {}   to bring dead replicas back",
            plan::shell_quote(&d.to_string())
        );
    }
    let _ = write!(out, "\nCtrl-C stops the cluster.");
    out
}
