//! Before a run: are we allowed to build a lab here, and with which tools? Each failure says
//! what is missing and how to get it, so that a run never dies half-way through building.

use std::env;
use std::fs;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, OnceLock, PoisonError};

use super::cmd;
use super::cuts::{Cuts, restore_input};
use super::error::LabError;
use super::names::RunId;
use super::owner::MarkerHold;
use super::subnet::LabSubnet;

/// The system tools a lab is driven with, as found by [`check`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Tools {
    /// iproute2's `ip`.
    pub ip: PathBuf,
    /// The `iptables` binary that works here (`iptables`, `iptables-legacy`, ...).
    pub iptables: PathBuf,
    /// Its `-restore` companion, which applies cuts.
    pub iptables_restore: PathBuf,
    /// What `iptables --version` says, e.g. `iptables v1.8.9 (nf_tables)`, for the report.
    pub iptables_version: String,
}

/// Why no lab can be built here.
#[derive(Debug, thiserror::Error)]
pub enum PreflightError {
    /// Namespaces and links need privileges.
    #[error(
        "not running as root (effective uid {euid}): the chaos lab creates network namespaces; \
         run as root or with CAP_NET_ADMIN+CAP_SYS_ADMIN"
    )]
    NotRoot {
        /// Our effective uid.
        euid: u32,
    },
    /// A tool is not installed.
    #[error(
        "`{tool}` not found (searched PATH, /usr/sbin and /sbin): install the Debian package {package}"
    )]
    ToolMissing {
        /// The binary looked for.
        tool: String,
        /// The Debian package that has it.
        package: &'static str,
    },
    /// A tool is there but does not work.
    #[error("`{command}` failed ({status}): {stderr}; {hint}")]
    ToolBroken {
        /// The command line.
        command: String,
        /// Its exit status.
        status: String,
        /// Its stderr.
        stderr: String,
        /// What to do about it.
        hint: &'static str,
    },
    /// The kernel cannot give a namespace the links a lab needs.
    #[error("the kernel cannot create {what} inside a network namespace: {source}; {hint}")]
    Kernel {
        /// veth pairs or bridges.
        what: &'static str,
        /// The failed command.
        #[source]
        source: LabError,
        /// What to do about it.
        hint: &'static str,
    },
    /// No iptables worked inside a namespace.
    #[error(
        "no usable iptables inside a network namespace: {attempts}; iptables-nft needs the \
         kernel's nf_tables (modprobe nf_tables), iptables-legacy needs ip_tables \
         (modprobe ip_tables iptable_filter); pick one explicitly (`iptables-legacy` or `iptables-nft`)"
    )]
    IptablesUnusable {
        /// Each binary tried and how it failed.
        attempts: String,
    },
    /// Something else failed (reading `/proc`, writing the marker, deleting the namespace).
    #[error(transparent)]
    Lab(#[from] LabError),
}

/// The tools of the last successful [`check`] of this process.
static CURRENT: Mutex<Option<Tools>> = Mutex::new(None);

/// Checks that we are privileged, that `ip` works, that veth pairs and bridges can be made in
/// a namespace, and that an iptables (and its `-restore`) works inside a fresh namespace;
/// returns the tools to use, which also become this process's [`current`] tools. Creates and
/// deletes one throwaway namespace.
///
/// `iptables` names the binary to use (`iptables`, `iptables-nft`, `iptables-legacy` or a
/// path; its restore companion is the name with `-restore` appended, e.g.
/// `iptables-legacy-restore`). `None` detects: `iptables` if it works inside a namespace, else
/// `iptables-legacy`.
pub fn check(iptables: Option<&str>) -> Result<Tools, PreflightError> {
    let tools = run_checks(iptables)?;
    *CURRENT.lock().unwrap_or_else(PoisonError::into_inner) = Some(tools.clone());
    Ok(tools)
}

/// The tools of this process's last successful [`check`], or, if there was none, those a
/// check with detection finds now. [`ReplicaProcess::start`](super::process::ReplicaProcess::start)
/// and the sweep use their `ip`.
pub fn current() -> Result<Tools, PreflightError> {
    if let Some(tools) = CURRENT
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
        .clone()
    {
        return Ok(tools);
    }
    check(None)
}

/// The `ip` binary of the current tools, or the one on PATH if preflight has not run (the
/// sweep and process control need nothing else).
pub(crate) fn ip_binary() -> PathBuf {
    CURRENT
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
        .as_ref()
        .map(|t| t.ip.clone())
        .or_else(|| locate("ip"))
        .unwrap_or_else(|| PathBuf::from("ip"))
}

fn run_checks(iptables: Option<&str>) -> Result<Tools, PreflightError> {
    check_privileges()?;
    let ip = find_tool("ip", "iproute2")?;
    if let Err(e) = cmd::run(&mut cmd::ip(&ip, ["netns", "list"])) {
        return Err(broken(
            e,
            "the kernel needs network namespace support (CONFIG_NET_NS) and /run must be writable",
        ));
    }
    let candidates: Vec<String> = match iptables {
        None => vec!["iptables".to_owned(), "iptables-legacy".to_owned()],
        Some(name) => vec![name.to_owned()],
    };
    let mut found = Vec::new();
    let mut attempts = Vec::new();
    for name in &candidates {
        let restore = format!("{name}-restore");
        match (locate(name), locate(&restore)) {
            (Some(bin), Some(restore)) => found.push((bin, restore)),
            (None, _) => attempts.push(format!("`{name}` not found")),
            (Some(_), None) => attempts.push(format!("`{restore}` not found")),
        }
    }
    if found.is_empty() {
        let tool = candidates.first().cloned().unwrap_or_default();
        return Err(PreflightError::ToolMissing {
            tool,
            package: "iptables",
        });
    }

    let _hold = MarkerHold::acquire()?;
    let namespace = throwaway_namespace();
    cmd::run(&mut cmd::ip(&ip, ["netns", "add", &namespace]))?;
    let result = probe_namespace(&ip, &namespace, found, attempts);
    let deleted = cmd::run(&mut cmd::ip(&ip, ["netns", "delete", &namespace]));
    let tools = result?;
    deleted?;
    Ok(tools)
}

/// Creates links and tries each iptables inside `namespace`; the first that works wins.
fn probe_namespace(
    ip: &Path,
    namespace: &str,
    found: Vec<(PathBuf, PathBuf)>,
    mut attempts: Vec<String>,
) -> Result<Tools, PreflightError> {
    cmd::run(&mut cmd::ip(
        ip,
        [
            "-n", namespace, "link", "add", "pf0", "type", "veth", "peer", "name", "pf1",
        ],
    ))
    .map_err(|source| PreflightError::Kernel {
        what: "veth pairs",
        source,
        hint: "load the veth module (modprobe veth)",
    })?;
    cmd::run(&mut cmd::ip(
        ip,
        ["-n", namespace, "link", "add", "pfbr", "type", "bridge"],
    ))
    .map_err(|source| PreflightError::Kernel {
        what: "bridges",
        source,
        hint: "load the bridge module (modprobe bridge)",
    })?;

    // The exact kind of input set_cuts sends, so that a backend that cannot take it is
    // refused here rather than at the first fault.
    let subnet = LabSubnet::new(std::net::Ipv4Addr::new(10, 231, 0, 0));
    let probe = restore_input(&Cuts::none(), 0, &subnet, true);
    for (iptables, restore) in found {
        let listed = cmd::run(
            cmd::ip(ip, ["netns", "exec", namespace])
                .arg(&iptables)
                .args(["-w", "10", "-L", "-n"]),
        );
        let restored = listed.and_then(|_| {
            cmd::run_with_input(
                cmd::ip(ip, ["netns", "exec", namespace])
                    .arg(&restore)
                    .args(["--noflush", "--wait=10"]),
                &probe,
            )
        });
        match restored {
            Ok(_) => {
                let version = cmd::run(std::process::Command::new(&iptables).arg("--version"))
                    .map(|v| v.trim().to_owned())
                    .unwrap_or_default();
                return Ok(Tools {
                    ip: ip.to_path_buf(),
                    iptables,
                    iptables_restore: restore,
                    iptables_version: version,
                });
            }
            Err(e) => attempts.push(e.to_string()),
        }
    }
    Err(PreflightError::IptablesUnusable {
        attempts: attempts.join("; "),
    })
}

fn broken(error: LabError, hint: &'static str) -> PreflightError {
    match error {
        LabError::Command {
            command,
            status,
            stderr,
        } => PreflightError::ToolBroken {
            command,
            status,
            stderr,
            hint,
        },
        other => PreflightError::Lab(other),
    }
}

/// A namespace name of this process no other preflight (another thread) uses.
fn throwaway_namespace() -> String {
    static NEXT: AtomicU64 = AtomicU64::new(0);
    RunId::current().preflight_namespace(NEXT.fetch_add(1, Ordering::Relaxed))
}

/// `CAP_NET_ADMIN` and `CAP_SYS_ADMIN` bits of a capability mask.
const NEEDED_CAPS: u64 = (1 << 12) | (1 << 21);

/// The effective uid and capability mask from the text of `/proc/self/status`.
pub fn parse_status(status: &str) -> Option<(u32, u64)> {
    let mut euid = None;
    let mut caps = None;
    for line in status.lines() {
        if let Some(rest) = line.strip_prefix("Uid:") {
            euid = rest.split_whitespace().nth(1)?.parse().ok();
        } else if let Some(rest) = line.strip_prefix("CapEff:") {
            caps = u64::from_str_radix(rest.trim(), 16).ok();
        }
    }
    Some((euid?, caps?))
}

fn check_privileges() -> Result<(), PreflightError> {
    // Read from /proc rather than with geteuid(): nix's `user` feature is not enabled here.
    let path = Path::new("/proc/self/status");
    let status = fs::read_to_string(path).map_err(|source| LabError::Io {
        action: "read",
        path: path.to_path_buf(),
        source,
    })?;
    let (euid, caps) = parse_status(&status).ok_or_else(|| LabError::Parse {
        command: "cat /proc/self/status".to_owned(),
        detail: "no Uid or CapEff line".to_owned(),
    })?;
    if euid == 0 || caps & NEEDED_CAPS == NEEDED_CAPS {
        Ok(())
    } else {
        Err(PreflightError::NotRoot { euid })
    }
}

fn find_tool(name: &str, package: &'static str) -> Result<PathBuf, PreflightError> {
    locate(name).ok_or_else(|| PreflightError::ToolMissing {
        tool: name.to_owned(),
        package,
    })
}

/// Finds an executable on PATH, then in the sbin directories a non-login root shell may lack.
pub fn locate(name: &str) -> Option<PathBuf> {
    use std::os::unix::fs::PermissionsExt;
    let executable = |p: &Path| {
        fs::metadata(p).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
    };
    if name.contains('/') {
        let path = PathBuf::from(name);
        return executable(&path).then_some(path);
    }
    let path = env::var_os("PATH").unwrap_or_default();
    env::split_paths(&path)
        .chain(["/usr/sbin", "/sbin", "/usr/bin", "/bin"].map(PathBuf::from))
        .map(|dir| dir.join(name))
        .find(|p| executable(p))
}

/// Environment variable that turns "skip" into "fail" in [`tools_or_skip`].
pub const REQUIRE_TOOLS_ENV: &str = "NETTING_REQUIRE_TOOLS";

/// For tests that need a real lab: the tools, or `None` after printing why the test is skipped
/// (not root, tool missing). With `NETTING_REQUIRE_TOOLS=1` it panics with the reason instead,
/// so that CI cannot pass by skipping. Preflight runs once per process.
pub fn tools_or_skip(test: &str) -> Option<Tools> {
    static RESULT: OnceLock<Result<Tools, String>> = OnceLock::new();
    let result = RESULT.get_or_init(|| check(None).map_err(|e| e.to_string()));
    match result {
        Ok(tools) => Some(tools.clone()),
        Err(reason) => {
            if env::var(REQUIRE_TOOLS_ENV).is_ok_and(|v| v == "1") {
                panic!("{test}: the chaos lab cannot run here ({REQUIRE_TOOLS_ENV}=1): {reason}");
            }
            eprintln!("skipping {test}: {reason}");
            None
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;

    #[test]
    fn status_parsing() {
        let status = "Name:\tx\nUid:\t1000\t0\t0\t0\nGid:\t0\t0\t0\t0\n\
                      CapEff:\t0000000000201000\n";
        assert_eq!(parse_status(status), Some((0, 0x0020_1000)));
        assert_eq!(parse_status("Uid:\t1\t1\t1\t1\n"), None);
    }

    #[test]
    fn capabilities_without_root_are_enough() {
        assert_eq!(NEEDED_CAPS, 0x0020_1000);
    }

    #[test]
    fn messages_say_what_to_do() {
        let e = PreflightError::NotRoot { euid: 1000 };
        assert!(e.to_string().contains("CAP_NET_ADMIN+CAP_SYS_ADMIN"));
        let e = PreflightError::ToolMissing {
            tool: "iptables".to_owned(),
            package: "iptables",
        };
        assert!(
            e.to_string()
                .contains("install the Debian package iptables")
        );
    }

    #[test]
    fn locate_finds_sh_and_not_nonsense() {
        assert!(locate("sh").is_some());
        assert!(locate("/bin/sh").is_some());
        assert!(locate("no-such-tool-netting").is_none());
    }
}
