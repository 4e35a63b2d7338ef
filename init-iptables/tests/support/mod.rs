//! Shared by the integration tests: the configurations rendered to golden files, and network
//! namespaces that are always removed.

#![allow(clippy::unwrap_used, clippy::expect_used, dead_code, unreachable_pub)]

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};

use clap::Parser;
use netting_init::{Action, Args, Backend, Config, Family, Invocation, Tables};

/// Named configurations, as command-line flags. Each has golden files
/// `tests/golden/<name>.v4.rules` (and `.v6.rules` with `--ipv6`).
pub const CASES: &[(&str, &[&str])] = &[
    ("default", &["--proxy-uid", "1337"]),
    (
        "exclusions",
        &[
            "--proxy-uid",
            "1337",
            "--proxy-gid",
            "1337",
            "--exclude-outbound-ports",
            "22,3306",
            "--exclude-inbound-ports",
            "15020,15021,15090",
            "--exclude-outbound-cidrs",
            "10.96.0.0/12,169.254.169.254",
            "--exclude-inbound-cidrs",
            "192.168.0.0/16",
        ],
    ),
    (
        "include-ports",
        &[
            "--proxy-uid",
            "2102",
            "--outbound-port",
            "16001",
            "--inbound-port",
            "16006",
            "--include-inbound-ports",
            "8080,9090",
        ],
    ),
    (
        "dual-stack",
        &[
            "--proxy-uid",
            "1337",
            "--ipv6",
            "--exclude-inbound-ports",
            "15020",
            "--exclude-outbound-cidrs",
            "10.96.0.0/12,fd00:10:96::/112",
            "--exclude-inbound-cidrs",
            "fe80::/10",
        ],
    ),
];

/// The validated configuration of a case.
pub fn case_config(args: &[&str]) -> Config {
    let mut argv = vec!["netting-init"];
    argv.extend_from_slice(args);
    match Invocation::from_args(&Args::try_parse_from(argv).unwrap())
        .unwrap()
        .action
    {
        Action::Apply(config) => config,
        Action::Cleanup { .. } => panic!("cases apply"),
    }
}

pub fn golden_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/golden")
}

/// The golden file of a case and family.
pub fn golden_path(name: &str, family: Family) -> PathBuf {
    let suffix = match family {
        Family::V4 => "v4",
        Family::V6 => "v6",
    };
    golden_dir().join(format!("{name}.{suffix}.rules"))
}

pub fn read_golden(name: &str, family: Family) -> String {
    let path = golden_path(name, family);
    std::fs::read_to_string(&path).unwrap_or_else(|e| {
        panic!(
            "{}: {e}; create it with NETTING_UPDATE_GOLDEN=1 cargo test -p netting-init --test golden",
            path.display()
        )
    })
}

/// The nat table of a namespace where nothing has been written (built-in chains only).
pub const EMPTY_NAT: &str = "\
*nat
:PREROUTING ACCEPT [0:0]
:INPUT ACCEPT [0:0]
:OUTPUT ACCEPT [0:0]
:POSTROUTING ACCEPT [0:0]
COMMIT
";

/// What a fresh namespace holds after the golden transaction, as a comparable model.
pub fn expected_after(golden: &str) -> Tables {
    Tables::parse(EMPTY_NAT).unwrap().restore(golden).unwrap()
}

/// Why a root-needing test cannot run here. With `NETTING_REQUIRE_TOOLS=1` that is a failure;
/// otherwise the reason is printed and the test returns early (the caller returns on `false`).
pub fn can_run(reason: Option<String>) -> bool {
    let Some(reason) = reason else {
        return true;
    };
    if std::env::var("NETTING_REQUIRE_TOOLS").as_deref() == Ok("1") {
        panic!("{reason} (and NETTING_REQUIRE_TOOLS=1)");
    }
    eprintln!("skipping: {reason}");
    false
}

fn on_path(tool: &str) -> bool {
    std::env::var_os("PATH")
        .is_some_and(|path| std::env::split_paths(&path).any(|dir| dir.join(tool).is_file()))
}

/// Full path of a tool found on PATH.
pub fn which(tool: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|dir| dir.join(tool))
        .find(|p| p.is_file())
}

fn effective_uid() -> Option<u32> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("Uid:"))?;
    line.split_whitespace().nth(2)?.parse().ok()
}

/// The binaries a namespace test with `backend` needs.
pub fn tools_for(backend: Backend) -> Vec<String> {
    let mut tools = vec!["ip".to_owned()];
    for family in ["iptables", "ip6tables"] {
        for verb in ["save", "restore"] {
            tools.push(format!("{family}-{}-{verb}", backend.name()));
        }
    }
    tools
}

/// `None` when namespace tests can run with `backend`, else why not.
pub fn namespace_problem(backend: Backend) -> Option<String> {
    if effective_uid() != Some(0) {
        return Some("namespace tests need root (CAP_SYS_ADMIN, CAP_NET_ADMIN)".to_owned());
    }
    let missing: Vec<String> = tools_for(backend)
        .into_iter()
        .filter(|t| !on_path(t))
        .collect();
    if !missing.is_empty() {
        return Some(format!(
            "missing tools on PATH: {} (Debian packages iproute2, iptables)",
            missing.join(", ")
        ));
    }
    None
}

/// A fresh namespace when `backend` can be tested here, else `None` (after saying why, or
/// failing under `NETTING_REQUIRE_TOOLS=1`).
pub fn namespace(backend: Backend) -> Option<Netns> {
    if !can_run(namespace_problem(backend)) {
        return None;
    }
    match Netns::new() {
        Ok(ns) => Some(ns),
        Err(reason) => {
            can_run(Some(reason));
            None
        }
    }
}

static NEXT: AtomicUsize = AtomicUsize::new(0);
const PREFIX: &str = "ninit-";

/// A network namespace named `ninit-<pid>-<n>`, deleted on drop (also when the test fails).
#[derive(Debug)]
pub struct Netns {
    name: String,
}

impl Netns {
    /// Creates a namespace with `lo` up. Namespaces left by test processes that no longer
    /// exist (killed before their guards ran) are removed first.
    pub fn new() -> Result<Self, String> {
        remove_orphans();
        let name = format!(
            "{PREFIX}{}-{}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::Relaxed)
        );
        let out = Command::new("ip")
            .args(["netns", "add", &name])
            .output()
            .map_err(|e| format!("running ip: {e}"))?;
        if !out.status.success() {
            return Err(format!(
                "ip netns add failed: {}",
                String::from_utf8_lossy(&out.stderr).trim()
            ));
        }
        let ns = Self { name };
        ns.ip(&["link", "set", "lo", "up"]);
        Ok(ns)
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    /// Runs `program args` inside the namespace.
    pub fn exec(&self, program: &str, args: &[&str]) -> Command {
        let mut cmd = Command::new("ip");
        cmd.args(["netns", "exec", &self.name, program]).args(args);
        cmd
    }

    /// `ip -n <ns> args`, which must succeed.
    pub fn ip(&self, args: &[&str]) {
        let out = Command::new("ip")
            .args(["-n", &self.name])
            .args(args)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "ip {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }

    /// Runs the netting-init binary inside the namespace.
    pub fn init(&self, args: &[&str]) -> Output {
        self.init_command(args).output().unwrap()
    }

    pub fn init_command(&self, args: &[&str]) -> Command {
        let mut cmd = self.exec(env!("CARGO_BIN_EXE_netting-init"), args);
        cmd.env_remove("RUST_LOG").env("NETTING_LOG", "debug");
        for (key, _) in std::env::vars() {
            if key.starts_with("NETTING_INIT_") {
                cmd.env_remove(key);
            }
        }
        cmd
    }

    /// Runs the netting-init binary and requires success.
    pub fn init_ok(&self, args: &[&str]) -> Output {
        let out = self.init(args);
        assert!(
            out.status.success(),
            "netting-init {args:?} failed ({}):\n{}",
            out.status,
            String::from_utf8_lossy(&out.stderr)
        );
        out
    }

    /// The raw `*-save` output (all tables) of a back end and family.
    pub fn save_text(&self, backend: Backend, family: Family) -> String {
        let tool = format!("{}-{}-save", family.tool(), backend.name());
        let out = self.exec(&tool, &[]).output().unwrap();
        assert!(
            out.status.success(),
            "{tool}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).unwrap()
    }

    /// All tables of a back end and family, counters and comments dropped.
    pub fn save(&self, backend: Backend, family: Family) -> Tables {
        Tables::parse(&self.save_text(backend, family)).unwrap()
    }

    /// Feeds restore input to `*-restore --noflush` in the namespace; must succeed.
    pub fn restore(&self, backend: Backend, family: Family, input: &str) {
        use std::io::Write;
        let tool = format!("{}-{}-restore", family.tool(), backend.name());
        let mut child = self
            .exec(&tool, &["--noflush", "--wait", "10"])
            .stdin(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        child
            .stdin
            .take()
            .unwrap()
            .write_all(input.as_bytes())
            .unwrap();
        let out = child.wait_with_output().unwrap();
        assert!(
            out.status.success(),
            "{tool}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }

    /// Runs `f` on a new thread that has entered this namespace; sockets it opens live there.
    pub fn within<T: Send + 'static>(&self, f: impl FnOnce() -> T + Send + 'static) -> T {
        let path = format!("/run/netns/{}", self.name);
        std::thread::spawn(move || {
            let file = std::fs::File::open(&path).unwrap();
            nix::sched::setns(&file, nix::sched::CloneFlags::CLONE_NEWNET).unwrap();
            f()
        })
        .join()
        .unwrap()
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        let _ = Command::new("ip")
            .args(["netns", "del", &self.name])
            .stderr(Stdio::null())
            .status();
    }
}

/// Deletes `ninit-<pid>-*` namespaces whose process is gone.
fn remove_orphans() {
    let Ok(entries) = std::fs::read_dir("/run/netns") else {
        return;
    };
    for entry in entries.flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        let Some(pid) = name
            .strip_prefix(PREFIX)
            .and_then(|rest| rest.split('-').next())
            .and_then(|pid| pid.parse::<u32>().ok())
        else {
            continue;
        };
        if pid != std::process::id() && !Path::new(&format!("/proc/{pid}")).exists() {
            let _ = Command::new("ip")
                .args(["netns", "del", &name])
                .stderr(Stdio::null())
                .status();
        }
    }
}

/// Text of a process's stderr.
pub fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}
