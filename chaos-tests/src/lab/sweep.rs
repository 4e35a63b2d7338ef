//! Removing what crashed runs left behind. A run killed with SIGKILL never tears down: its
//! namespaces, its host veth, the replica processes inside (now orphans) and its marker file
//! stay. Every run sweeps before it builds its own lab.
//!
//! A name `nch<pid>...` is stale when its owner is gone, decided by [`is_stale`]: no marker
//! file for the pid, no live process with the pid, or a live one with another start time (the
//! pid was reused). Labs of live runs, including this process's, are left alone.

use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::io;
use std::path::{Path, PathBuf};

use super::cmd;
use super::error::LabError;
use super::names::RunId;
use super::net::{delete_link, delete_namespace, kill_all_in};
use super::owner::{FileLock, is_stale, marker_path, marker_pids, read_marker, start_time};
use super::preflight::ip_binary;

/// What a sweep removed.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SweepReport {
    /// Pids of the dead runs found.
    pub stale_runs: BTreeSet<u32>,
    /// Namespaces deleted.
    pub namespaces: Vec<String>,
    /// Root-namespace links deleted.
    pub links: Vec<String>,
    /// Processes killed inside those namespaces.
    pub killed: Vec<u32>,
    /// Marker files removed.
    pub markers: Vec<PathBuf>,
}

impl SweepReport {
    /// Whether nothing was found.
    pub fn is_empty(&self) -> bool {
        self.stale_runs.is_empty()
    }
}

/// The names in `ip netns list` output (`name` or `name (id: 3)` per line).
pub fn namespaces_in_list_output(output: &str) -> Vec<String> {
    output
        .lines()
        .filter_map(|line| line.split_whitespace().next())
        .map(str::to_owned)
        .collect()
}

/// The interface names in `ip -o link show` output (`7: name@peer: <...> ...` per line).
pub fn links_in_link_output(output: &str) -> Vec<String> {
    output
        .lines()
        .filter_map(|line| {
            let name = line.split_whitespace().nth(1)?.trim_end_matches(':');
            Some(name.split('@').next()?.to_owned())
        })
        .collect()
}

/// Resources of one run found on the host.
#[derive(Debug, Default)]
struct Found {
    namespaces: Vec<String>,
    links: Vec<String>,
    marker: bool,
}

/// Finds every stale lab, kills the processes in its namespaces, deletes its host link, its
/// namespaces and its marker. Goes on after a failure and returns the first one. Uses the `ip`
/// of the [current](super::preflight::current) tools, or the one on PATH. Sweeps of several
/// processes take turns (see [`SweepLock`]).
pub fn sweep_stale() -> Result<SweepReport, LabError> {
    let lock = SweepLock::acquire()?;
    sweep_stale_holding(&lock, &ip_binary())
}

/// Excludes other sweeps, in this and other processes, while held: the stale-sweep tests hold
/// it while they fake a dead run, so that no concurrent run sweeps it away under them.
#[derive(Debug)]
pub struct SweepLock {
    _lock: FileLock,
}

impl SweepLock {
    /// Blocks until no other sweep runs. Do not call [`sweep_stale`] while holding it (it
    /// would wait for itself); use [`sweep_stale_holding`].
    pub fn acquire() -> Result<Self, LabError> {
        FileLock::acquire("sweep.lock").map(|lock| Self { _lock: lock })
    }
}

/// [`sweep_stale`] for a caller that holds the [`SweepLock`], with the given `ip` binary.
pub fn sweep_stale_holding(_lock: &SweepLock, ip: &Path) -> Result<SweepReport, LabError> {
    let own = std::process::id();
    let mut runs: BTreeMap<u32, Found> = BTreeMap::new();
    let listed = cmd::run(&mut cmd::ip(ip, ["netns", "list"]))?;
    for name in namespaces_in_list_output(&listed) {
        if let Some(id) = RunId::parse(&name) {
            runs.entry(id.pid()).or_default().namespaces.push(name);
        }
    }
    let links = cmd::run(&mut cmd::ip(ip, ["-o", "link", "show"]))?;
    for name in links_in_link_output(&links) {
        if let Some(id) = RunId::parse(&name) {
            runs.entry(id.pid()).or_default().links.push(name);
        }
    }
    for pid in marker_pids() {
        runs.entry(pid).or_default().marker = true;
    }

    let mut report = SweepReport::default();
    let mut first_error = None;
    for (pid, found) in runs {
        if !is_stale(pid, own, read_marker(pid), start_time(pid)) {
            continue;
        }
        tracing::info!(%pid, namespaces = ?found.namespaces, links = ?found.links, "sweeping a stale lab");
        report.stale_runs.insert(pid);
        for namespace in &found.namespaces {
            match kill_all_in(ip, namespace) {
                Ok(pids) => report.killed.extend(pids),
                Err(e) => {
                    first_error.get_or_insert(e);
                }
            }
        }
        for link in found.links {
            match delete_link(ip, &link) {
                Ok(()) => report.links.push(link),
                Err(e) => {
                    first_error.get_or_insert(e);
                }
            }
        }
        for namespace in found.namespaces {
            match delete_namespace(ip, &namespace) {
                Ok(()) => report.namespaces.push(namespace),
                Err(e) => {
                    first_error.get_or_insert(e);
                }
            }
        }
        if found.marker {
            let path = marker_path(pid);
            match fs::remove_file(&path) {
                Ok(()) => report.markers.push(path),
                Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                Err(source) => {
                    first_error.get_or_insert(LabError::Io {
                        action: "remove marker",
                        path,
                        source,
                    });
                }
            }
        }
    }
    match first_error {
        Some(e) => Err(e),
        None => Ok(report),
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;

    #[test]
    fn parses_netns_list() {
        let out = "nch12-1 (id: 3)\nnch12-hub (id: 2)\nninit-probe\n";
        assert_eq!(
            namespaces_in_list_output(out),
            vec!["nch12-1", "nch12-hub", "ninit-probe"]
        );
    }

    #[test]
    fn parses_link_list() {
        let out = "1: lo: <LOOPBACK,UP,LOWER_UP> mtu 65536 qdisc noqueue state UNKNOWN mode DEFAULT group default qlen 1000\\    link/loopback 00:00:00:00:00:00 brd 00:00:00:00:00:00\n\
                   7: nch12@if2: <BROADCAST,MULTICAST,UP,LOWER_UP> mtu 1500 qdisc noqueue state UP mode DEFAULT group default qlen 1000\\    link/ether 0a:08:fd:9d:32:6c brd ff:ff:ff:ff:ff:ff link-netns nch12-hub\n";
        assert_eq!(links_in_link_output(out), vec!["lo", "nch12"]);
    }
}
