//! Which failed calls to a replica are worth trying on another replica, and what a failure
//! says about whether the request took effect.
//!
//! Every client of the control plane (`nettingctl`, a sidecar, a replica forwarding to its
//! leader, the benches and the chaos lab) talks to one replica at a time. When that replica
//! dies, is cut off or cannot serve, the call fails in a way that says nothing about the
//! request itself, and the next replica may answer. Any other status is the replica's answer
//! to the request and would be the same elsewhere.
//!
//! The decision is made on error kinds, never on message text: the status code, and for a
//! status tonic built from a client-side failure, the error types in its source chain. What
//! tonic 0.14 puts there, seen by experiment:
//!
//! | what happened | code | source chain |
//! |---|---|---|
//! | nothing listens (refused) | UNAVAILABLE | `transport::Error` → `tonic::ConnectError` → … → `io::Error` (`ConnectionRefused`) |
//! | connection closed before the request was handed to it | CANCELLED | `transport::Error` → `hyper::Error` (`is_canceled`) |
//! | connection broken after the request was sent | UNKNOWN | `transport::Error` → `hyper::Error` → `io::Error` (`BrokenPipe`, `ConnectionReset`) |
//! | the server reset the stream or sent GOAWAY (e.g. `ENHANCE_YOUR_CALM` from a replica that woke from a pause to a pile of resets) | the code tonic maps the HTTP/2 reason to (RESOURCE_EXHAUSTED, INTERNAL, UNAVAILABLE, …) | `transport::Error` → `hyper::Error` → `h2::Error` |
//!
//! A status that came over the wire from a server has no source at all, so an UNKNOWN a
//! server sent is never mistaken for a broken connection. An HTTP/2 error is about the
//! connection or the stream, never the server's answer to the request: it is a transport
//! failure, and `REFUSED_STREAM` one that was not sent (RFC 9113 §8.7: the server did no
//! processing of a refused stream).
//!
//! A transient failure of a *write* leaves its outcome unknown unless it is
//! [`FailureKind::NotSent`]: the request may have been applied before the connection broke.
//! Retrying it elsewhere is safe only for requests the server deduplicates (or that are
//! idempotent), and a client must not report the first try as failed.

use std::error::Error;
use std::io;

use tonic::{Code, Status};

/// How a call to a replica failed, as far as the client can tell.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FailureKind {
    /// The request never left this client: no connection could be made (refused,
    /// unreachable, connect timeout) or the connection closed before the request was handed
    /// to it. Nothing happened on the server; any request may be retried anywhere.
    NotSent,
    /// The connection broke under the call (reset, closed, broken pipe): the request may have
    /// been acted on before the replica went away.
    Transport,
    /// UNAVAILABLE: the replica cannot serve now (no leader, shutting down, lost leadership).
    Unavailable,
    /// DEADLINE_EXCEEDED: no answer in time.
    DeadlineExceeded,
    /// CANCELLED: the stream was reset or the call cancelled before an answer.
    Cancelled,
    /// Anything else: the replica's answer to this request, which another replica would give
    /// too.
    Answered(Code),
}

impl FailureKind {
    /// Whether another replica (or the same one later) might succeed where this call failed.
    pub fn is_transient(self) -> bool {
        !matches!(self, FailureKind::Answered(_))
    }

    /// Whether the request may have taken effect although the call failed: true for every
    /// transient failure but [`FailureKind::NotSent`]. An answered error means it did not.
    pub fn outcome_unknown(self) -> bool {
        self.is_transient() && self != FailureKind::NotSent
    }
}

/// Classifies a failed call.
pub fn classify(status: &Status) -> FailureKind {
    // The source chain first: tonic reports a refused connection as UNAVAILABLE and a
    // never-dispatched request as CANCELLED, and both are more precisely "not sent".
    if let Some(kind) = status.source().and_then(classify_error) {
        return kind;
    }
    match status.code() {
        Code::Unavailable => FailureKind::Unavailable,
        Code::DeadlineExceeded => FailureKind::DeadlineExceeded,
        Code::Cancelled => FailureKind::Cancelled,
        code => FailureKind::Answered(code),
    }
}

/// Whether a failed call is worth trying on the next replica (see [`classify`]).
pub fn is_transient(status: &Status) -> bool {
    classify(status).is_transient()
}

/// Classifies a client-side error by the types in its source chain: [`FailureKind::NotSent`]
/// or [`FailureKind::Transport`] when it is a connection failure, `None` when nothing in the
/// chain is one. Use it for errors that are not a [`Status`], e.g. from `Endpoint::connect`.
pub fn classify_error(error: &(dyn Error + 'static)) -> Option<FailureKind> {
    let mut transport = false;
    let mut current = Some(error);
    while let Some(error) = current {
        if error.is::<tonic::ConnectError>() {
            return Some(FailureKind::NotSent);
        }
        if let Some(hyper) = error.downcast_ref::<hyper::Error>()
            && hyper.is_canceled()
        {
            // hyper cancels a request it never took off its queue for the connection.
            return Some(FailureKind::NotSent);
        }
        if let Some(http2) = error.downcast_ref::<h2::Error>() {
            if http2.reason() == Some(h2::Reason::REFUSED_STREAM) {
                return Some(FailureKind::NotSent);
            }
            transport = true;
        }
        if let Some(io) = error.downcast_ref::<io::Error>() {
            if never_connected(io.kind()) {
                return Some(FailureKind::NotSent);
            }
            transport |= broken_connection(io.kind());
        }
        transport |= error.is::<tonic::transport::Error>() || error.is::<hyper::Error>();
        current = error.source();
    }
    transport.then_some(FailureKind::Transport)
}

/// Whether an error, or any error in its source chain, is a connection failure.
pub fn is_transport_error(error: &(dyn Error + 'static)) -> bool {
    classify_error(error).is_some()
}

/// I/O errors that only a connection attempt gives: no byte of a request was sent.
fn never_connected(kind: io::ErrorKind) -> bool {
    use io::ErrorKind::*;
    matches!(
        kind,
        ConnectionRefused | HostUnreachable | NetworkUnreachable | NetworkDown | AddrNotAvailable
    )
}

/// I/O errors of a connection that broke while in use.
fn broken_connection(kind: io::ErrorKind) -> bool {
    use io::ErrorKind::*;
    matches!(
        kind,
        ConnectionReset | ConnectionAborted | NotConnected | BrokenPipe | UnexpectedEof | TimedOut
    )
}

#[cfg(test)]
mod tests;
