//! What the figures were measured on, including how long this disk takes to fsync: every
//! acknowledged write of both systems waits for at least one.

use std::io::Write as _;
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use crate::load::Latencies;

#[derive(Debug, Clone)]
pub(crate) struct Machine {
    pub(crate) cores: usize,
    pub(crate) cpu: String,
    pub(crate) memory: String,
    pub(crate) kernel: String,
    pub(crate) date: String,
    pub(crate) filesystem: String,
}

impl Machine {
    /// Reads the machine's description; `data` is where the data directories live.
    pub(crate) fn describe(data: &Path) -> Machine {
        let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
        let cpu = cpuinfo
            .lines()
            .find(|l| l.starts_with("model name"))
            .and_then(|l| l.split_once(':'))
            .map_or("unknown", |(_, v)| v.trim())
            .to_owned();
        let meminfo = std::fs::read_to_string("/proc/meminfo").unwrap_or_default();
        let memory = meminfo
            .lines()
            .find(|l| l.starts_with("MemTotal:"))
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|kib| kib.parse::<f64>().ok())
            .map_or_else(
                || "unknown".into(),
                |kib| format!("{:.1} GiB", kib / 1024.0 / 1024.0),
            );
        let kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease")
            .map_or_else(|_| "unknown".into(), |s| s.trim().to_owned());
        let date = Command::new("date")
            .args(["-u", "+%Y-%m-%d %H:%M UTC"])
            .output()
            .ok()
            .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_owned())
            .filter(|s| !s.is_empty())
            .unwrap_or_else(|| "unknown".into());
        Machine {
            cores: std::thread::available_parallelism().map_or(0, usize::from),
            cpu,
            memory,
            kernel,
            date,
            filesystem: filesystem_of(data),
        }
    }
}

/// "device type (mount point)" of the mount holding `path`.
fn filesystem_of(path: &Path) -> String {
    let mounts = std::fs::read_to_string("/proc/mounts").unwrap_or_default();
    mounts
        .lines()
        .filter_map(|l| {
            let mut f = l.split_whitespace();
            let (dev, mount, kind) = (f.next()?, f.next()?, f.next()?);
            path.starts_with(mount)
                .then(|| (mount.len(), format!("{dev} {kind} ({mount})")))
        })
        .max_by_key(|(len, _)| *len)
        .map_or_else(|| "unknown".into(), |(_, fs)| fs)
}

/// `n` times: append 4 KiB to a file in `dir` and fdatasync it. The floor under any write
/// latency that waits for the disk.
pub(crate) fn fsync_latency(dir: &Path, n: usize) -> Latencies {
    let path = dir.join("fsync-probe");
    let mut file = std::fs::File::create(&path).expect("cannot create the fsync probe file");
    let block = [0x5a_u8; 4096];
    let mut all = Vec::with_capacity(n);
    for _ in 0..n {
        let started = Instant::now();
        file.write_all(&block).expect("fsync probe: write failed");
        file.sync_data().expect("fsync probe: fdatasync failed");
        all.push(started.elapsed());
    }
    drop(file);
    let _ = std::fs::remove_file(&path);
    Latencies::new(all)
}

/// How long one step of the run took, for the log.
pub(crate) fn took(since: Instant) -> String {
    let d: Duration = since.elapsed();
    format!("{:.0} s", d.as_secs_f64())
}
