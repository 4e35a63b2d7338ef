//! Which failed calls to a replica are worth trying on another replica.
//!
//! A client of the control plane (a sidecar, `nettingctl`, a replica forwarding to its leader,
//! the chaos lab's workers) talks to one replica at a time. When that replica dies, is cut off
//! or is not the leader any more, the call fails in one of a few ways that say nothing about
//! the request itself; the right move is the next replica. Any other status is the replica's
//! answer to the request and would be the same elsewhere.
//!
//! The decision is made on error kinds, never on message text: the status code, and for a
//! status tonic built from a client-side failure, the error types in its source chain (tonic's
//! transport error, or an I/O error of a broken connection).
//!
//! A transient failure of a *write* leaves its outcome unknown: the request may have been
//! applied before the connection broke. Retrying it elsewhere is safe only for idempotent or
//! deduplicated requests, and the caller must not report the first try as failed.

use std::error::Error;
use std::io;

use tonic::{Code, Status};

/// How a call to a replica failed, as far as the client can tell.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FailureKind {
    /// The connection failed under the call (refused, reset, closed, broken): the request may
    /// not have arrived, or may have been acted on before the replica went away.
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
}

/// Classifies a failed call.
pub fn classify(status: &Status) -> FailureKind {
    match status.code() {
        Code::Unavailable => FailureKind::Unavailable,
        Code::DeadlineExceeded => FailureKind::DeadlineExceeded,
        Code::Cancelled => FailureKind::Cancelled,
        // tonic reports a broken connection as UNKNOWN with the transport error as its source;
        // an UNKNOWN a server sent has no source.
        _ if status.source().is_some_and(is_transport_error) => FailureKind::Transport,
        code => FailureKind::Answered(code),
    }
}

/// Whether a failed call is worth trying on the next replica (see [`classify`]).
pub fn is_transient(status: &Status) -> bool {
    classify(status).is_transient()
}

/// Whether an error, or any error in its source chain, is a transport failure: tonic's
/// transport error, or an I/O error of a connection that could not be made or broke.
pub fn is_transport_error(error: &(dyn Error + 'static)) -> bool {
    let mut current = Some(error);
    while let Some(error) = current {
        if error.is::<tonic::transport::Error>() {
            return true;
        }
        if let Some(io) = error.downcast_ref::<io::Error>()
            && is_connection_io_error(io.kind())
        {
            return true;
        }
        current = error.source();
    }
    false
}

fn is_connection_io_error(kind: io::ErrorKind) -> bool {
    use io::ErrorKind::*;
    matches!(
        kind,
        ConnectionRefused
            | ConnectionReset
            | ConnectionAborted
            | NotConnected
            | BrokenPipe
            | UnexpectedEof
            | TimedOut
            | HostUnreachable
            | NetworkUnreachable
            | NetworkDown
            | AddrNotAvailable
    )
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]

    use tokio::io::AsyncReadExt;

    use super::*;
    use crate::catalog::v1 as pb;

    #[test]
    fn status_codes_of_a_replica_that_cannot_serve_are_transient() {
        assert_eq!(
            classify(&Status::unavailable("no leader")),
            FailureKind::Unavailable
        );
        assert_eq!(
            classify(&Status::deadline_exceeded("late")),
            FailureKind::DeadlineExceeded
        );
        assert_eq!(
            classify(&Status::cancelled("reset")),
            FailureKind::Cancelled
        );
        assert!(is_transient(&Status::unavailable("")));
    }

    /// A replica's answer is final whatever its message says: the text is never matched.
    #[test]
    fn answers_are_not_transient_whatever_their_text() {
        for status in [
            Status::unknown("transport error"),
            Status::invalid_argument("connection reset"),
            Status::not_found("unavailable"),
            Status::failed_precondition("owned by another source"),
        ] {
            assert_eq!(classify(&status), FailureKind::Answered(status.code()));
            assert!(!is_transient(&status));
        }
    }

    /// tonic turns a client-side error it does not recognise into UNKNOWN with the error as
    /// source; a broken connection's I/O error there is a transport failure, any other error
    /// is not.
    #[test]
    fn unknown_with_a_connection_error_in_its_source_chain_is_transport() {
        let reset = io::Error::new(io::ErrorKind::ConnectionReset, "peer reset");
        let status = Status::from_error(Box::new(reset));
        assert_eq!(status.code(), Code::Unknown);
        assert_eq!(classify(&status), FailureKind::Transport);

        let wrapped = Wrapped(io::Error::new(io::ErrorKind::BrokenPipe, "pipe"));
        assert_eq!(
            classify(&Status::from_error(Box::new(wrapped))),
            FailureKind::Transport
        );

        let unrelated = io::Error::new(io::ErrorKind::InvalidData, "bad bytes");
        assert_eq!(
            classify(&Status::from_error(Box::new(unrelated))),
            FailureKind::Answered(Code::Unknown)
        );
    }

    /// An error that names another as its source, as hyper's and tonic's do.
    #[derive(Debug)]
    struct Wrapped(io::Error);

    impl std::fmt::Display for Wrapped {
        fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.write_str("request failed")
        }
    }

    impl Error for Wrapped {
        fn source(&self) -> Option<&(dyn Error + 'static)> {
            Some(&self.0)
        }
    }

    /// The real thing: a replica that takes the request and resets the connection without
    /// answering. Whatever code tonic gives it, the client must move on.
    #[tokio::test]
    async fn a_connection_reset_mid_call_is_transient() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let server = tokio::spawn(async move {
            let (mut stream, _) = listener.accept().await.unwrap();
            // The HTTP/2 preface (24 bytes) and more: the request is on its way.
            let mut received = 0;
            let mut buf = [0u8; 1024];
            while received < 64 {
                let n = stream.read(&mut buf).await.unwrap();
                if n == 0 {
                    break;
                }
                received += n;
            }
            // Linger 0: close with a reset, as a killed process's kernel does.
            stream.set_zero_linger().unwrap();
            drop(stream);
        });
        let channel = tonic::transport::Endpoint::from_shared(format!("http://{addr}"))
            .unwrap()
            .connect_lazy();
        let mut client = pb::catalog_client::CatalogClient::new(channel);
        let status = client
            .get_service(pb::GetServiceRequest::default())
            .await
            .expect_err("the server never answers");
        server.await.unwrap();
        // tonic says UNKNOWN "transport error", with the reset in the source chain (or
        // UNAVAILABLE if the reset came while it still counted the connection as connecting).
        assert!(
            matches!(
                classify(&status),
                FailureKind::Transport | FailureKind::Unavailable
            ),
            "a reset connection must be transient: {status:?}"
        );
    }
}
