//! What the figures were measured on, including how long this disk takes to fsync: every
//! acknowledged write of both systems waits for at least one.

use std::io::Write as _;
use std::path::Path;
use std::time::{Duration, Instant};

use crate::host::Host;
use crate::load::Latencies;

#[derive(Debug, Clone)]
pub(crate) struct Machine {
    pub(crate) host: Host,
    pub(crate) filesystem: String,
}

impl Machine {
    /// Reads the machine's description; `data` is where the data directories live.
    pub(crate) fn describe(data: &Path) -> Machine {
        Machine {
            host: Host::describe(),
            filesystem: filesystem_of(data),
        }
    }
}

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
