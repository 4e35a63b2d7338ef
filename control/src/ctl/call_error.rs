//! Why one call to one replica gave no usable answer, and how a gRPC status or a transport
//! error is shown to an operator.

use std::error::Error as _;
use std::fmt;
use std::time::Duration;

use netting_proto::retry::{self, FailureKind};
use tonic::{Code, Status};

use super::target::Target;

/// Why one replica gave no usable answer.
#[derive(Debug)]
pub enum CallError {
    /// The address could not be dialled at all (e.g. a bad address reported by the cluster).
    InvalidAddress(String),
    /// No connection could be made: refused, unreachable, name not resolved.
    Connect(String),
    /// Nothing came back within the timeout (connecting included).
    TimedOut(Duration),
    /// The replica answered with a gRPC error status.
    Status(Status),
}

impl CallError {
    /// Whether another replica could answer where this one did not.
    ///
    /// Connection failures (refused, reset, closed mid-call), timeouts, and the statuses
    /// [`retry::is_transient`] accepts: UNAVAILABLE covers a replica that is shutting down or
    /// has no leader to forward to, DEADLINE_EXCEEDED one that is too slow.
    pub fn tries_next(&self) -> bool {
        match self {
            CallError::InvalidAddress(_) | CallError::Connect(_) | CallError::TimedOut(_) => true,
            CallError::Status(status) => retry::is_transient(status),
        }
    }

    /// Whether the request may have taken effect on this replica although it gave no answer:
    /// a connection that broke after the request was sent, a timeout, or a status that leaves
    /// the outcome open (see [`FailureKind::outcome_unknown`]).
    pub fn outcome_unknown(&self) -> bool {
        match self {
            CallError::InvalidAddress(_) | CallError::Connect(_) => false,
            CallError::TimedOut(_) => true,
            CallError::Status(status) => retry::classify(status).outcome_unknown(),
        }
    }
}

impl fmt::Display for CallError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            CallError::InvalidAddress(reason) => f.write_str(reason),
            CallError::Connect(reason) => write!(f, "cannot connect: {reason}"),
            CallError::TimedOut(after) => write!(f, "no answer within {after:?}"),
            // A status tonic made from a broken connection says "UNKNOWN: transport error";
            // what broke is in its sources.
            CallError::Status(status) => match (retry::classify(status), status.source()) {
                (FailureKind::Transport, Some(source)) => {
                    write!(f, "connection lost mid-call: {}", error_chain(source))
                }
                (FailureKind::NotSent, Some(source)) => {
                    write!(
                        f,
                        "connection lost before the request was sent: {}",
                        error_chain(source)
                    )
                }
                _ => StatusText(status).fmt(f),
            },
        }
    }
}

/// One replica that was tried and did not answer.
#[derive(Debug)]
pub struct Failure {
    pub target: Target,
    pub error: CallError,
}

/// The canonical gRPC name of a status code (`NOT_FOUND`), which is what operators search for.
pub fn code_name(code: Code) -> &'static str {
    match code {
        Code::Ok => "OK",
        Code::Cancelled => "CANCELLED",
        Code::Unknown => "UNKNOWN",
        Code::InvalidArgument => "INVALID_ARGUMENT",
        Code::DeadlineExceeded => "DEADLINE_EXCEEDED",
        Code::NotFound => "NOT_FOUND",
        Code::AlreadyExists => "ALREADY_EXISTS",
        Code::PermissionDenied => "PERMISSION_DENIED",
        Code::ResourceExhausted => "RESOURCE_EXHAUSTED",
        Code::FailedPrecondition => "FAILED_PRECONDITION",
        Code::Aborted => "ABORTED",
        Code::OutOfRange => "OUT_OF_RANGE",
        Code::Unimplemented => "UNIMPLEMENTED",
        Code::Internal => "INTERNAL",
        Code::Unavailable => "UNAVAILABLE",
        Code::DataLoss => "DATA_LOSS",
        Code::Unauthenticated => "UNAUTHENTICATED",
    }
}

/// An error and its sources joined with `: `, skipping repeats, because transport errors keep
/// the useful part ("Connection refused") several sources deep.
pub fn error_chain(err: &(dyn std::error::Error + 'static)) -> String {
    let mut parts: Vec<String> = Vec::new();
    let mut current = Some(err);
    while let Some(e) = current {
        let text = e.to_string();
        if !parts.iter().any(|p| p.contains(&text)) {
            parts.push(text);
        }
        current = e.source();
    }
    parts.join(": ")
}

/// Shows a status as `CODE: message`, or just `CODE` when the message is empty.
#[derive(Debug)]
pub struct StatusText<'a>(pub &'a tonic::Status);

impl fmt::Display for StatusText<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let name = code_name(self.0.code());
        match self.0.message() {
            "" => f.write_str(name),
            message => write!(f, "{name}: {message}"),
        }
    }
}

#[cfg(test)]
mod tests {
    use std::io;

    use super::*;

    /// Nested sources are all shown once, outermost first.
    #[test]
    fn error_chain_joins_sources_without_repeats() {
        #[derive(Debug, thiserror::Error)]
        #[error("outer")]
        struct Outer(#[source] io::Error);
        let err = Outer(io::Error::new(io::ErrorKind::ConnectionRefused, "refused"));
        assert_eq!(error_chain(&err), "outer: refused");
    }
}
