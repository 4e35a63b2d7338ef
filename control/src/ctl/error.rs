//! What can go wrong in a `nettingctl` command, and the exit code each failure gives.

use std::io;

use thiserror::Error;
use tonic::Code;

use super::call_error::{CallError, Failure, code_name};
use super::target::{InvalidAddr, Target};

/// Exit code for bad input caught before anything was sent (clap uses the same for its own).
pub const EXIT_USAGE: u8 = 2;
/// Exit code for every other failure.
pub const EXIT_FAILURE: u8 = 1;
/// Exit code for a write no replica confirmed although it may have been applied.
pub const EXIT_OUTCOME_UNKNOWN: u8 = 3;

/// A failed command. `Display` is the message printed after `error: `.
#[derive(Debug, Error)]
pub enum CtlError {
    /// Input refused before anything was sent.
    #[error("{0}")]
    Usage(String),
    /// A replica answered with an error that asking another replica would not change.
    #[error("{}", rpc_message(.target, *.code, .message))]
    Rpc {
        target: Target,
        code: Code,
        message: String,
    },
    /// Every replica was tried and none gave an answer.
    #[error("{}", no_answer_message(.0))]
    NoAnswer(Vec<Failure>),
    /// Every replica was tried for a write, none confirmed it, and at least one failed after
    /// the write reached it: the write may or may not have been applied.
    #[error("{}", outcome_unknown_message(.0))]
    OutcomeUnknown(Vec<Failure>),
    /// No replica asked has a session for the sidecar; each replica's answer, in order.
    #[error("{}", not_connected_message(.sidecar, .asked))]
    SidecarNotConnected {
        sidecar: String,
        asked: Vec<(String, CallError)>,
    },
    /// A replica answered, but not with something this client can use.
    #[error("{0}")]
    Unexpected(String),
    #[error("cannot write output: {0}")]
    Output(#[from] io::Error),
    #[error("cannot encode JSON: {0}")]
    Json(#[from] serde_json::Error),
}

impl CtlError {
    /// The process exit code for this failure.
    pub fn exit_code(&self) -> u8 {
        match self {
            CtlError::Usage(_) => EXIT_USAGE,
            CtlError::OutcomeUnknown(_) => EXIT_OUTCOME_UNKNOWN,
            _ => EXIT_FAILURE,
        }
    }

    /// True when stdout was closed by its reader (`nettingctl ... | head`): nothing to report.
    pub fn is_broken_pipe(&self) -> bool {
        match self {
            CtlError::Output(err) => err.kind() == io::ErrorKind::BrokenPipe,
            CtlError::Json(err) => err.io_error_kind() == Some(io::ErrorKind::BrokenPipe),
            _ => false,
        }
    }
}

impl From<InvalidAddr> for CtlError {
    fn from(err: InvalidAddr) -> Self {
        CtlError::Usage(err.to_string())
    }
}

fn rpc_message(target: &Target, code: Code, message: &str) -> String {
    if message.is_empty() {
        format!("{} (replica {target})", code_name(code))
    } else {
        format!("{}: {message} (replica {target})", code_name(code))
    }
}

fn no_answer_message(failures: &[Failure]) -> String {
    let mut text = String::from("no replica answered");
    for failure in failures {
        text.push_str(&format!("\n  {}: {}", failure.target, failure.error));
    }
    text
}

fn outcome_unknown_message(failures: &[Failure]) -> String {
    let mut text = String::from(
        "no replica confirmed the write, and it may have been applied: \
         check the catalog before trying again",
    );
    for failure in failures {
        text.push_str(&format!("\n  {}: {}", failure.target, failure.error));
    }
    text
}

fn not_connected_message(sidecar: &str, asked: &[(String, CallError)]) -> String {
    let mut text = format!("sidecar {sidecar} is not connected to any replica asked");
    for (address, error) in asked {
        match error {
            // The expected answer of a replica the sidecar is not connected to.
            CallError::Status(status) if status.code() == Code::NotFound => {
                text.push_str(&format!("\n  {address}: not connected here"));
            }
            _ => text.push_str(&format!("\n  {address}: {error}")),
        }
    }
    text
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]

    use super::*;

    /// Application errors print the canonical code, the server's message and which replica said it.
    #[test]
    fn rpc_errors_name_code_message_and_replica() {
        let err = CtlError::Rpc {
            target: Target::parse("127.0.0.1:7100").unwrap(),
            code: Code::NotFound,
            message: "service default/web not found".to_owned(),
        };
        assert_eq!(
            err.to_string(),
            "NOT_FOUND: service default/web not found (replica 127.0.0.1:7100)"
        );
        assert_eq!(err.exit_code(), EXIT_FAILURE);
        assert_eq!(CtlError::Usage("x".into()).exit_code(), EXIT_USAGE);
    }

    /// A sidecar found nowhere names every replica asked, NOT_FOUND as "not connected here".
    #[test]
    fn sidecar_not_connected_lists_every_replica() {
        let err = CtlError::SidecarNotConnected {
            sidecar: "default/web-0".into(),
            asked: vec![
                (
                    "a:7100".into(),
                    CallError::Status(tonic::Status::not_found("no sidecar of pod default/web-0")),
                ),
                (
                    "b:7100".into(),
                    CallError::Connect("connection refused".into()),
                ),
            ],
        };
        assert_eq!(
            err.to_string(),
            "sidecar default/web-0 is not connected to any replica asked\n  \
             a:7100: not connected here\n  \
             b:7100: cannot connect: connection refused"
        );
        assert_eq!(err.exit_code(), EXIT_FAILURE);
    }

    /// A closed stdout is recognised so main can exit quietly.
    #[test]
    fn broken_pipe_is_recognised() {
        let err = CtlError::Output(io::Error::from(io::ErrorKind::BrokenPipe));
        assert!(err.is_broken_pipe());
        assert!(!CtlError::Usage(String::new()).is_broken_pipe());
    }
}
