//! What the figures were measured on, and the memory of the replica processes.

use std::process::Command;

use crate::host::Host;

#[derive(Debug, Clone)]
pub(crate) struct Machine {
    pub(crate) host: Host,
    pub(crate) fd_limit: String,
}

impl Machine {
    pub(crate) fn describe() -> Machine {
        let fd_limit = std::fs::read_to_string("/proc/self/limits")
            .ok()
            .and_then(|limits| {
                limits
                    .lines()
                    .find(|l| l.starts_with("Max open files"))
                    .and_then(|l| l.split_whitespace().nth(3).map(str::to_owned))
            })
            .unwrap_or_else(|| "unknown".into());
        Machine {
            host: Host::describe(),
            fd_limit,
        }
    }
}

/// The 1, 5 and 15 minute load averages, as `/proc/loadavg` shows them.
pub(crate) fn load_average() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .ok()
        .map(|s| s.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_else(|| "unknown".into())
}

/// The processes using the most CPU right now (other than this one), to tell whether the run
/// shared the machine with other heavy work.
pub(crate) fn busiest_processes(n: usize) -> Vec<String> {
    let output = Command::new("ps")
        .args(["-eo", "pid,pcpu,rss,comm", "--sort=-pcpu", "--no-headers"])
        .output();
    let me = std::process::id().to_string();
    output
        .map(|o| {
            String::from_utf8_lossy(&o.stdout)
                .lines()
                .filter(|l| l.split_whitespace().next() != Some(me.as_str()))
                .take(n)
                .map(|l| l.split_whitespace().collect::<Vec<_>>().join(" "))
                .collect()
        })
        .unwrap_or_default()
}

/// Resident memory of `pid` in KiB (`VmRSS`).
pub(crate) fn rss_kib(pid: u32) -> Option<u64> {
    proc_field(&format!("/proc/{pid}/status"), "VmRSS:")
}

/// Open file descriptors of this process.
pub(crate) fn open_fds() -> usize {
    std::fs::read_dir("/proc/self/fd").map_or(0, Iterator::count)
}

/// The number after `field` in a `/proc` file of `Name: value kB` lines.
fn proc_field(path: &str, field: &str) -> Option<u64> {
    std::fs::read_to_string(path)
        .ok()?
        .lines()
        .find(|l| l.starts_with(field))?
        .split_whitespace()
        .nth(1)?
        .parse()
        .ok()
}

/// CPU time `pid` has used (user + system), from `/proc/PID/stat`. The kernel reports it in
/// USER_HZ ticks, which Linux fixes at 100 per second for user space.
pub(crate) fn cpu_time(pid: u32) -> Option<std::time::Duration> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // Fields after the command name, which is in parentheses and may hold spaces; utime and
    // stime are the 14th and 15th fields of the line, so the 12th and 13th after it.
    let mut rest = stat.rsplit_once(')')?.1.split_whitespace().skip(11);
    let utime: u64 = rest.next()?.parse().ok()?;
    let stime: u64 = rest.next()?.parse().ok()?;
    Some(std::time::Duration::from_millis((utime + stime) * 10))
}

/// The machine's CPU time so far from the `cpu` line of `/proc/stat` (USER_HZ ticks, 100 per
/// second): time spent working (user, nice, system, irq, softirq) and time stolen by the
/// hypervisor.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct MachineCpu {
    pub(crate) busy: std::time::Duration,
    pub(crate) steal: std::time::Duration,
}

pub(crate) fn machine_cpu() -> MachineCpu {
    let stat = std::fs::read_to_string("/proc/stat").unwrap_or_default();
    let ticks: Vec<u64> = stat
        .lines()
        .find(|l| l.starts_with("cpu "))
        .map(|l| {
            l.split_whitespace()
                .skip(1)
                .filter_map(|v| v.parse().ok())
                .collect()
        })
        .unwrap_or_default();
    let at = |i: usize| ticks.get(i).copied().unwrap_or(0);
    // user nice system idle iowait irq softirq steal
    let busy = at(0) + at(1) + at(2) + at(5) + at(6);
    MachineCpu {
        busy: std::time::Duration::from_millis(busy * 10),
        steal: std::time::Duration::from_millis(at(7) * 10),
    }
}
