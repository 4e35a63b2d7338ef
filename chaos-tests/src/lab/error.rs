//! The one error type of the lab: every failure names what was being done, and a failed command
//! carries its command line, exit status and stderr so that a report can be acted on without
//! rerunning anything.

use std::io;
use std::path::PathBuf;

/// What went wrong while building, changing or tearing down the lab.
#[derive(Debug, thiserror::Error)]
pub enum LabError {
    /// A command ran and exited unsuccessfully.
    #[error("`{command}` failed ({status}): {stderr}")]
    Command {
        /// The command line, as run.
        command: String,
        /// How it ended, e.g. `exit status: 2` or `signal: 9 (SIGKILL)`.
        status: String,
        /// What it wrote to stderr, trimmed.
        stderr: String,
    },
    /// A command could not be started at all (binary missing, not executable, ...).
    #[error("could not run `{command}`: {source}")]
    Spawn {
        /// The command line that was to be run.
        command: String,
        /// Why the spawn failed.
        #[source]
        source: io::Error,
    },
    /// A file-system operation on one of the lab's own files failed.
    #[error("could not {action} {}: {source}", path.display())]
    Io {
        /// What was being done, e.g. "open log file".
        action: &'static str,
        /// The file it was done to.
        path: PathBuf,
        /// Why it failed.
        #[source]
        source: io::Error,
    },
    /// A command's output could not be understood.
    #[error("unexpected output of `{command}`: {detail}")]
    Parse {
        /// The command whose output was read.
        command: String,
        /// What was wrong with it.
        detail: String,
    },
    /// An interface name would be longer than the kernel allows (IFNAMSIZ - 1).
    #[error("interface name `{name}` is {len} bytes long; Linux allows at most 15")]
    NameTooLong {
        /// The name that was built.
        name: String,
        /// Its length in bytes.
        len: usize,
    },
    /// A run id that cannot be turned into names.
    #[error("invalid run id: {0}")]
    InvalidRunId(String),
    /// Every /24 of the lab's range overlaps an address or route of this host.
    #[error(
        "no free /24 left in {range}: every one overlaps an address or a route of this host \
         (see `ip -4 addr` and `ip -4 route show table all`)"
    )]
    NoFreeSubnet {
        /// The range that was searched.
        range: String,
    },
    /// A network was asked for with a replica count the addressing cannot hold.
    #[error("a lab network has 1 to {max} replicas, not {replicas}")]
    ReplicaCount {
        /// What was asked for.
        replicas: usize,
        /// The largest count supported.
        max: usize,
    },
    /// A set of cuts that does not fit the network (unknown replica, a replica cut from itself).
    #[error("invalid cut: {0}")]
    InvalidCut(String),
    /// A signal was asked for on a process that has already exited and been reaped.
    #[error("process {pid} in namespace `{namespace}` is not running")]
    NotRunning {
        /// The process's last pid.
        pid: u32,
        /// Its namespace.
        namespace: String,
    },
    /// Sending a signal failed for a reason other than the process being gone.
    #[error("could not send {signal} to pid {pid}: {source}")]
    Signal {
        /// The target.
        pid: u32,
        /// The signal's name.
        signal: &'static str,
        /// The errno.
        #[source]
        source: nix::Error,
    },
}
