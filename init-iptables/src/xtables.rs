//! The iptables binaries: which ones, and how they are run. [`Xtables`] is the seam the runner
//! talks through, so its logic is tested with a fake; [`SystemXtables`] runs the real tools.

use std::fmt;
use std::io::Write;
use std::path::PathBuf;
use std::process::{Command, Stdio};

use thiserror::Error;

/// IPv4 (`iptables`) or IPv6 (`ip6tables`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Family {
    /// iptables.
    V4,
    /// ip6tables.
    V6,
}

impl Family {
    /// `iptables` or `ip6tables`.
    pub fn tool(self) -> &'static str {
        match self {
            Self::V4 => "iptables",
            Self::V6 => "ip6tables",
        }
    }
}

/// The two kernel interfaces iptables 1.8 can drive.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Backend {
    /// nf_tables, through `iptables-nft-*`.
    Nft,
    /// The legacy x_tables interface, through `iptables-legacy-*`.
    Legacy,
}

impl Backend {
    /// `nft` or `legacy`, as in the binaries' names.
    pub fn name(self) -> &'static str {
        match self {
            Self::Nft => "nft",
            Self::Legacy => "legacy",
        }
    }
}

impl fmt::Display for Backend {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// The `--backend` flag.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum BackendChoice {
    /// The back end that already holds rules; nft when neither or both hold as many.
    Auto,
    /// nf_tables.
    Nft,
    /// legacy x_tables.
    Legacy,
}

impl BackendChoice {
    /// The back end forced by the flag, if any.
    pub fn forced(self) -> Option<Backend> {
        match self {
            Self::Auto => None,
            Self::Nft => Some(Backend::Nft),
            Self::Legacy => Some(Backend::Legacy),
        }
    }
}

/// The name of a binary, e.g. `ip6tables-legacy-restore`.
pub fn binary_name(backend: Backend, family: Family, verb: &str) -> String {
    format!("{}-{}-{verb}", family.tool(), backend.name())
}

/// Running an iptables binary failed.
#[derive(Debug, Error)]
pub enum ToolError {
    /// The binary is not there.
    #[error("{binary} not found ({where_})")]
    Missing {
        /// Its name.
        binary: String,
        /// `in PATH` or `in DIR`.
        where_: String,
    },
    /// It could not be started or talked to.
    #[error("running {binary}: {source}")]
    Io {
        /// Its name.
        binary: String,
        /// The error.
        source: std::io::Error,
    },
    /// It ran and failed.
    #[error("{binary} failed ({status}): {stderr}")]
    Failed {
        /// Its name.
        binary: String,
        /// Its exit status.
        status: std::process::ExitStatus,
        /// What it said, trimmed.
        stderr: String,
    },
}

/// What the runner needs from iptables.
pub trait Xtables {
    /// The full `*-save` output (all tables) of one back end and family. The full dump is read
    /// rather than `-t nat` because asking the legacy tool for a table creates it.
    fn save(&self, backend: Backend, family: Family) -> Result<String, ToolError>;

    /// Feeds `input` to `*-restore --noflush` (one transaction). With `check_only` the input is
    /// only parsed and checked (`--test`), never committed.
    fn restore(
        &self,
        backend: Backend,
        family: Family,
        input: &str,
        check_only: bool,
    ) -> Result<(), ToolError>;
}

/// The arguments of every `*-restore` run: keep other tables and chains (`--noflush`), and wait
/// up to 10 s for the xtables lock held by another writer.
pub const RESTORE_ARGS: [&str; 3] = ["--noflush", "--wait", "10"];

/// Runs the real binaries, from `dir` or from `PATH`.
#[derive(Debug, Clone, Default)]
pub struct SystemXtables {
    dir: Option<PathBuf>,
}

impl SystemXtables {
    /// Binaries are looked up in `dir`, or in `PATH` when `None`.
    pub fn new(dir: Option<PathBuf>) -> Self {
        Self { dir }
    }

    fn path(&self, binary: &str) -> PathBuf {
        match &self.dir {
            Some(dir) => dir.join(binary),
            None => PathBuf::from(binary),
        }
    }

    fn run(&self, binary: &str, args: &[&str], input: Option<&str>) -> Result<String, ToolError> {
        let io = |source| ToolError::Io {
            binary: binary.to_owned(),
            source,
        };
        let mut child = Command::new(self.path(binary))
            .args(args)
            .stdin(if input.is_some() {
                Stdio::piped()
            } else {
                Stdio::null()
            })
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .map_err(|e| {
                if e.kind() == std::io::ErrorKind::NotFound {
                    ToolError::Missing {
                        binary: binary.to_owned(),
                        where_: match &self.dir {
                            Some(d) => format!("in {}", d.display()),
                            None => "in PATH".to_owned(),
                        },
                    }
                } else {
                    io(e)
                }
            })?;
        if let (Some(text), Some(mut stdin)) = (input, child.stdin.take()) {
            // The inputs are a few kilobytes; the tool reads all of its input before it
            // writes anything substantial, so writing first and reading after cannot stall.
            // A tool that exits early closes the pipe; its status and stderr say why.
            if let Err(e) = stdin.write_all(text.as_bytes())
                && e.kind() != std::io::ErrorKind::BrokenPipe
            {
                return Err(io(e));
            }
        }
        let output = child.wait_with_output().map_err(io)?;
        if !output.status.success() {
            return Err(ToolError::Failed {
                binary: binary.to_owned(),
                status: output.status,
                stderr: String::from_utf8_lossy(&output.stderr).trim().to_owned(),
            });
        }
        Ok(String::from_utf8_lossy(&output.stdout).into_owned())
    }
}

impl Xtables for SystemXtables {
    fn save(&self, backend: Backend, family: Family) -> Result<String, ToolError> {
        self.run(&binary_name(backend, family, "save"), &[], None)
    }

    fn restore(
        &self,
        backend: Backend,
        family: Family,
        input: &str,
        check_only: bool,
    ) -> Result<(), ToolError> {
        let mut args = RESTORE_ARGS.to_vec();
        if check_only {
            args.push("--test");
        }
        self.run(&binary_name(backend, family, "restore"), &args, Some(input))
            .map(drop)
    }
}
