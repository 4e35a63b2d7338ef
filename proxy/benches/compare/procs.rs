//! CPU time and resident memory of a proxy, from `/proc`: the process and its children (nginx's
//! workers), summed.

use std::process::Command;
use std::time::Duration;

/// `pid` and every descendant of it that is alive now.
pub(crate) fn tree(pid: u32) -> Vec<u32> {
    let mut parents = Vec::new();
    if let Ok(entries) = std::fs::read_dir("/proc") {
        for entry in entries.flatten() {
            let Some(child) = entry
                .file_name()
                .to_str()
                .and_then(|n| n.parse::<u32>().ok())
            else {
                continue;
            };
            if let Some(parent) = stat_fields(child).and_then(|f| f.get(1)?.parse::<u32>().ok()) {
                parents.push((child, parent));
            }
        }
    }
    let mut found = vec![pid];
    let mut i = 0;
    while i < found.len() {
        let current = found[i];
        found.extend(
            parents
                .iter()
                .filter(|(_, p)| *p == current)
                .map(|(c, _)| *c),
        );
        i += 1;
    }
    found
}

/// The fields of `/proc/<pid>/stat` after the command name: `[state, ppid, ...]`, so field
/// `n` of proc(5) (1-based) is at index `n - 3`.
fn stat_fields(pid: u32) -> Option<Vec<String>> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let (_, rest) = stat.rsplit_once(')')?;
    Some(rest.split_whitespace().map(str::to_owned).collect())
}

/// Clock ticks per second of `utime`/`stime` (`getconf CLK_TCK`; 100 on Linux).
pub(crate) fn clock_ticks() -> f64 {
    Command::new("getconf")
        .arg("CLK_TCK")
        .output()
        .ok()
        .and_then(|o| String::from_utf8_lossy(&o.stdout).trim().parse().ok())
        .unwrap_or(100.0)
}

/// User plus system CPU time used so far by `pids` (threads included).
pub(crate) fn cpu(pids: &[u32], ticks: f64) -> Duration {
    let total: u64 = pids
        .iter()
        .filter_map(|&pid| {
            let fields = stat_fields(pid)?;
            // utime is field 14, stime 15.
            let utime: u64 = fields.get(11)?.parse().ok()?;
            let stime: u64 = fields.get(12)?.parse().ok()?;
            Some(utime + stime)
        })
        .sum();
    Duration::from_secs_f64(total as f64 / ticks)
}

/// The sum of `VmRSS` of `pids`, in bytes (shared pages of nginx's master and workers are
/// counted once per process, as `ps` would).
pub(crate) fn rss(pids: &[u32]) -> u64 {
    pids.iter()
        .filter_map(|&pid| {
            let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
            let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
            let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
            Some(kib * 1024)
        })
        .sum()
}
