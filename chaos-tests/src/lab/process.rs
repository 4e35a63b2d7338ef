//! One program run inside a lab namespace, with the signals a chaos schedule needs: kill,
//! pause, resume, terminate, restart.
//!
//! It is started as `ip netns exec <ns> <program> <args...>`. iproute2's `ip netns exec` (checked
//! with iproute2 6.1 on Debian 12) enters the namespace and then `execvp`s the program in its
//! own process — it forks only in `ip -batch` mode — so the child's pid *is* the program's pid:
//! signals reach the program itself, and `/proc/<pid>/ns/net` is the namespace's. The
//! `ip_netns_exec_execs_in_place` test checks that on every machine the tests run on.
//!
//! The child's stdout and stderr are appended to one log file that survives restarts; a line
//! `=== start #N at unix <secs> ... ===` is written before each start.
//!
//! Waiting is short or async: `kill` waits for a SIGKILLed process (immediate), `terminate`
//! waits for the grace period asynchronously.

use std::ffi::{OsStr, OsString};
use std::fs::{File, OpenOptions};
use std::io::Write;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use nix::errno::Errno;
use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;

use super::cmd;
use super::error::LabError;
use super::owner::process_state;
use super::preflight::ip_binary;

/// What to run and where.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProcessSpec {
    /// The network namespace (as in `ip netns list`).
    pub namespace: String,
    /// The program, a path or a name looked up on PATH.
    pub program: PathBuf,
    /// Its arguments.
    pub args: Vec<OsString>,
    /// Extra environment variables (the rest is inherited).
    pub env: Vec<(OsString, OsString)>,
    /// Working directory; inherited when `None`.
    pub cwd: Option<PathBuf>,
    /// File that stdout and stderr are appended to.
    pub log: PathBuf,
}

impl ProcessSpec {
    /// `program` with no arguments in `namespace`, logging to `log`.
    pub fn new(
        namespace: impl Into<String>,
        program: impl Into<PathBuf>,
        log: impl Into<PathBuf>,
    ) -> Self {
        Self {
            namespace: namespace.into(),
            program: program.into(),
            args: Vec::new(),
            env: Vec::new(),
            cwd: None,
            log: log.into(),
        }
    }

    /// Adds arguments.
    #[must_use]
    pub fn args<I, S>(mut self, args: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: AsRef<OsStr>,
    {
        self.args
            .extend(args.into_iter().map(|a| a.as_ref().to_owned()));
        self
    }

    /// Adds an environment variable.
    #[must_use]
    pub fn env(mut self, key: impl AsRef<OsStr>, value: impl AsRef<OsStr>) -> Self {
        self.env
            .push((key.as_ref().to_owned(), value.as_ref().to_owned()));
        self
    }
}

/// A command running `program` inside `namespace` with `ip netns exec`.
pub fn netns_command(ip: &Path, namespace: &str, program: impl AsRef<OsStr>) -> Command {
    let mut command = Command::new(ip);
    command
        .args(["netns", "exec", namespace])
        .arg(program.as_ref());
    command
}

/// How long `pause` and `resume` wait for the kernel to show the new state.
const STATE_WAIT: Duration = Duration::from_secs(2);

/// A program running in a lab namespace. Dropping it kills the program.
#[derive(Debug)]
pub struct ReplicaProcess {
    spec: ProcessSpec,
    ip: PathBuf,
    child: Child,
    /// Set once the child has been reaped: its pid may then belong to someone else, so no
    /// signal is sent any more.
    status: Option<ExitStatus>,
    paused: bool,
    starts: u32,
}

impl ReplicaProcess {
    /// Starts `program args...` in `namespace`, appending its output to `log`, with `env`
    /// added to the inherited environment.
    pub fn start<A, S>(
        namespace: &str,
        program: impl AsRef<OsStr>,
        args: A,
        log: impl AsRef<Path>,
        env: &[(&str, &str)],
    ) -> Result<Self, LabError>
    where
        A: IntoIterator<Item = S>,
        S: AsRef<OsStr>,
    {
        let mut spec =
            ProcessSpec::new(namespace, PathBuf::from(program.as_ref()), log.as_ref()).args(args);
        for (key, value) in env {
            spec = spec.env(key, value);
        }
        Self::start_spec(spec)
    }

    /// Starts the program `spec` describes (start #1), with the `ip` of the
    /// [current](super::preflight::current) tools.
    pub fn start_spec(spec: ProcessSpec) -> Result<Self, LabError> {
        let ip = ip_binary();
        let child = spawn(&ip, &spec, 1)?;
        Ok(Self {
            spec,
            ip,
            child,
            status: None,
            paused: false,
            starts: 1,
        })
    }

    /// Starts the program again with the same spec and log file, killing it first if it is
    /// still running (a crash and a restart).
    pub fn restart(&mut self) -> Result<(), LabError> {
        self.kill()?;
        let n = self.starts + 1;
        self.child = spawn(&self.ip, &self.spec, n)?;
        self.starts = n;
        self.status = None;
        self.paused = false;
        Ok(())
    }

    /// The pid of the latest start (the program's own pid, see the module doc). Once the
    /// process has exited and been reaped the pid may be reused: signal it only through the
    /// methods here.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// What was started.
    pub fn spec(&self) -> &ProcessSpec {
        &self.spec
    }

    /// The log file.
    pub fn log_path(&self) -> &Path {
        &self.spec.log
    }

    /// How many times the program has been started.
    pub fn starts(&self) -> u32 {
        self.starts
    }

    /// Whether the program was paused and not resumed since.
    pub fn is_paused(&self) -> bool {
        self.paused && self.status.is_none()
    }

    /// The exit status, reaping the process if it has exited; `None` while it runs (or is
    /// paused).
    pub fn exit_status(&mut self) -> Option<ExitStatus> {
        if self.status.is_none() {
            match self.child.try_wait() {
                Ok(status) => self.status = status,
                Err(e) => tracing::warn!(pid = self.pid(), error = %e, "try_wait failed"),
            }
        }
        self.status
    }

    /// Whether the program has not exited yet (a paused program is running).
    pub fn is_running(&mut self) -> bool {
        self.exit_status().is_none()
    }

    /// SIGKILL, then reap. Works on a paused process. Returns the exit status (also when the
    /// process had already exited).
    pub fn kill(&mut self) -> Result<ExitStatus, LabError> {
        if let Some(status) = self.exit_status() {
            return Ok(status);
        }
        self.signal(Signal::SIGKILL, "SIGKILL")?;
        let status = self.child.wait().map_err(|source| LabError::Io {
            action: "wait for",
            path: PathBuf::from(format!("/proc/{}", self.pid())),
            source,
        })?;
        self.status = Some(status);
        self.paused = false;
        Ok(status)
    }

    /// SIGSTOP; returns once the kernel shows the process stopped (or after a short wait).
    pub fn pause(&mut self) -> Result<(), LabError> {
        self.require_running()?;
        self.signal(Signal::SIGSTOP, "SIGSTOP")?;
        self.paused = true;
        self.wait_for_state(|state| state == 'T');
        Ok(())
    }

    /// SIGCONT; returns once the kernel no longer shows the process stopped (or after a short
    /// wait).
    pub fn resume(&mut self) -> Result<(), LabError> {
        self.require_running()?;
        self.signal(Signal::SIGCONT, "SIGCONT")?;
        self.paused = false;
        self.wait_for_state(|state| state != 'T');
        Ok(())
    }

    /// SIGTERM, then SIGKILL if the program has not exited within `grace`. A stopped process
    /// does not act on SIGTERM until continued, so SIGCONT is sent right after it.
    pub async fn terminate(&mut self, grace: Duration) -> Result<ExitStatus, LabError> {
        if let Some(status) = self.exit_status() {
            return Ok(status);
        }
        self.signal(Signal::SIGTERM, "SIGTERM")?;
        self.signal(Signal::SIGCONT, "SIGCONT")?;
        self.paused = false;
        let deadline = Instant::now() + grace;
        while Instant::now() < deadline {
            if let Some(status) = self.exit_status() {
                return Ok(status);
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        self.kill()
    }

    fn require_running(&mut self) -> Result<(), LabError> {
        if self.is_running() {
            Ok(())
        } else {
            Err(LabError::NotRunning {
                pid: self.pid(),
                namespace: self.spec.namespace.clone(),
            })
        }
    }

    /// Sends `signal` to the (unreaped, so still ours) child; a process that just exited is
    /// not an error.
    fn signal(&self, signal: Signal, name: &'static str) -> Result<(), LabError> {
        let pid = self.pid();
        let target = Pid::from_raw(i32::try_from(pid).unwrap_or(i32::MAX));
        match kill(target, signal) {
            Ok(()) | Err(Errno::ESRCH) => Ok(()),
            Err(source) => Err(LabError::Signal {
                pid,
                signal: name,
                source,
            }),
        }
    }

    /// Polls `/proc/<pid>/stat` until `accept(state)` or the process is gone, for at most
    /// [`STATE_WAIT`]. Signals are delivered within microseconds, so this normally returns at
    /// once.
    fn wait_for_state(&self, accept: impl Fn(char) -> bool) {
        let deadline = Instant::now() + STATE_WAIT;
        loop {
            match process_state(self.pid()) {
                Some(state) if !accept(state) && state != 'Z' => {}
                _ => return,
            }
            if Instant::now() >= deadline {
                tracing::warn!(pid = self.pid(), "process did not change state in time");
                return;
            }
            std::thread::sleep(Duration::from_millis(1));
        }
    }
}

impl Drop for ReplicaProcess {
    fn drop(&mut self) {
        if let Err(e) = self.kill() {
            tracing::warn!(pid = self.pid(), error = %e, "could not kill replica process");
        }
    }
}

fn open_log(path: &Path) -> Result<File, LabError> {
    OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .map_err(|source| LabError::Io {
            action: "open log file",
            path: path.to_path_buf(),
            source,
        })
}

fn spawn(ip: &Path, spec: &ProcessSpec, start: u32) -> Result<Child, LabError> {
    let mut command = netns_command(ip, &spec.namespace, &spec.program);
    command.args(&spec.args);
    for (key, value) in &spec.env {
        command.env(key, value);
    }
    if let Some(cwd) = &spec.cwd {
        command.current_dir(cwd);
    }
    let line = cmd::describe(&command);

    let mut log = open_log(&spec.log)?;
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default();
    let io_error = |source| LabError::Io {
        action: "write to log file",
        path: spec.log.clone(),
        source,
    };
    writeln!(
        log,
        "=== start #{start} at unix {}.{:03}: {line} ===",
        now.as_secs(),
        now.subsec_millis()
    )
    .map_err(io_error)?;
    let stderr = log.try_clone().map_err(io_error)?;

    command
        .stdin(Stdio::null())
        .stdout(log)
        .stderr(stderr)
        // Its own process group: a Ctrl-C meant for the lab does not reach the replicas
        // behind the lab's back; the lab decides when they die.
        .process_group(0)
        .spawn()
        .map_err(|source| LabError::Spawn {
            command: line,
            source,
        })
}
