//! Running the short system commands the lab is built from (`ip`, `iptables-restore`) and
//! turning their failures into [`LabError`]s that carry the command line, status and stderr.

use std::ffi::OsStr;
use std::io::Write;
use std::path::Path;
use std::process::{Child, Command, ExitStatus, Stdio};

use super::error::LabError;

/// The command line of `cmd`, for error messages and logs.
pub(crate) fn describe(cmd: &Command) -> String {
    let mut line = cmd.get_program().to_string_lossy().into_owned();
    for arg in cmd.get_args() {
        line.push(' ');
        line.push_str(&arg.to_string_lossy());
    }
    line
}

/// How a process ended, in words (`exit status: 1`, `signal: 9 (SIGKILL)`).
pub(crate) fn status_text(status: ExitStatus) -> String {
    status.to_string()
}

/// A command for `ip` with the given arguments.
pub(crate) fn ip<I, S>(ip: &Path, args: I) -> Command
where
    I: IntoIterator<Item = S>,
    S: AsRef<OsStr>,
{
    let mut cmd = Command::new(ip);
    cmd.args(args);
    cmd
}

/// Runs `cmd` to completion and returns its stdout; a non-zero exit is an error.
pub(crate) fn run(cmd: &mut Command) -> Result<String, LabError> {
    let command = describe(cmd);
    let output = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .output()
        .map_err(|source| LabError::Spawn {
            command: command.clone(),
            source,
        })?;
    outcome(command, &output)
}

/// The command's stdout when it succeeded, else an error with its status and stderr.
fn outcome(command: String, output: &std::process::Output) -> Result<String, LabError> {
    if output.status.success() {
        Ok(String::from_utf8_lossy(&output.stdout).into_owned())
    } else {
        Err(LabError::Command {
            command,
            status: status_text(output.status),
            stderr: String::from_utf8_lossy(&output.stderr).trim().to_owned(),
        })
    }
}

/// A command started with [`spawn_with_input`], to be collected with [`Pending::finish`].
#[derive(Debug)]
pub(crate) struct Pending {
    command: String,
    child: Child,
}

/// Starts `cmd` with `input` on its stdin without waiting for it, so that several can run at
/// once (one `iptables-restore` per namespace).
pub(crate) fn spawn_with_input(cmd: &mut Command, input: &str) -> Result<Pending, LabError> {
    let command = describe(cmd);
    let mut child = cmd
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|source| LabError::Spawn {
            command: command.clone(),
            source,
        })?;
    if let Some(mut stdin) = child.stdin.take() {
        // The inputs are a few hundred bytes, far below a pipe's capacity, so this cannot block
        // on a child that is not reading yet. A write error means the child died early; its
        // exit status and stderr, collected below, say why.
        let _ = stdin.write_all(input.as_bytes());
    }
    Ok(Pending { command, child })
}

impl Pending {
    /// Waits for the command; a non-zero exit is an error.
    pub(crate) fn finish(self) -> Result<String, LabError> {
        let command = self.command;
        let output = self
            .child
            .wait_with_output()
            .map_err(|source| LabError::Spawn {
                command: command.clone(),
                source,
            })?;
        outcome(command, &output)
    }
}

/// Runs `cmd` with `input` on its stdin and waits for it.
pub(crate) fn run_with_input(cmd: &mut Command, input: &str) -> Result<String, LabError> {
    spawn_with_input(cmd, input)?.finish()
}
