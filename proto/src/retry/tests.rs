#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tonic::transport::Endpoint;

use super::*;
use crate::catalog::v1 as pb;

/// Codes of a replica that cannot serve now are transient, and say nothing about whether the
/// request took effect.
#[test]
fn codes_of_a_replica_that_cannot_serve_are_transient() {
    for (status, kind) in [
        (Status::unavailable("no leader"), FailureKind::Unavailable),
        (
            Status::deadline_exceeded("late"),
            FailureKind::DeadlineExceeded,
        ),
        (Status::cancelled("reset"), FailureKind::Cancelled),
    ] {
        assert_eq!(classify(&status), kind);
        assert!(is_transient(&status));
        assert!(kind.outcome_unknown());
    }
}

/// A replica's answer is final whatever its message says: the text is never matched.
#[test]
fn answers_are_final_whatever_their_text() {
    for status in [
        Status::unknown("transport error"),
        Status::invalid_argument("connection reset"),
        Status::not_found("unavailable"),
        Status::failed_precondition("owned by another source"),
        Status::internal("broken pipe"),
    ] {
        assert_eq!(classify(&status), FailureKind::Answered(status.code()));
        assert!(!is_transient(&status));
        assert!(!classify(&status).outcome_unknown());
    }
}

/// tonic turns a client-side error it does not recognise into UNKNOWN with the error as its
/// source: a broken connection there is a transport failure, a refused one was never sent,
/// any other error is not a transport failure at all.
#[test]
fn the_source_chain_decides_for_client_side_errors() {
    let reset = io::Error::new(io::ErrorKind::ConnectionReset, "peer reset");
    let status = Status::from_error(Box::new(reset));
    assert_eq!(status.code(), Code::Unknown);
    assert_eq!(classify(&status), FailureKind::Transport);

    let nested = Wrapper(io::Error::new(io::ErrorKind::BrokenPipe, "pipe"));
    assert_eq!(
        classify(&Status::from_error(Box::new(nested))),
        FailureKind::Transport
    );

    let refused = io::Error::new(io::ErrorKind::ConnectionRefused, "refused");
    assert_eq!(
        classify(&Status::from_error(Box::new(refused))),
        FailureKind::NotSent
    );

    let unrelated = io::Error::new(io::ErrorKind::InvalidData, "bad bytes");
    assert_eq!(
        classify(&Status::from_error(Box::new(unrelated))),
        FailureKind::Answered(Code::Unknown)
    );
}

/// An error with another one as its source, as hyper's and tonic's errors have.
#[derive(Debug)]
struct Wrapper(io::Error);

impl std::fmt::Display for Wrapper {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("connection error")
    }
}

impl Error for Wrapper {
    fn source(&self) -> Option<&(dyn Error + 'static)> {
        Some(&self.0)
    }
}

fn free_address() -> String {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    listener.local_addr().unwrap().to_string()
}

/// Reads HTTP/2 frames from a client until the first request's body is complete (a DATA frame
/// with END_STREAM): from then on the request has certainly arrived.
async fn read_whole_request(stream: &mut TcpStream) {
    let mut preface = [0u8; 24];
    stream.read_exact(&mut preface).await.unwrap();
    loop {
        let mut header = [0u8; 9];
        stream.read_exact(&mut header).await.unwrap();
        let length = u32::from_be_bytes([0, header[0], header[1], header[2]]) as usize;
        let (kind, flags) = (header[3], header[4]);
        let mut payload = vec![0u8; length];
        stream.read_exact(&mut payload).await.unwrap();
        const DATA: u8 = 0;
        const END_STREAM: u8 = 1;
        if kind == DATA && flags & END_STREAM != 0 {
            return;
        }
    }
}

/// A "replica" that takes one whole request and then goes away without answering: with a
/// reset (as the kernel of a killed process does) when `reset`, else with a plain close.
async fn replica_that_dies_mid_call(reset: bool) -> (String, tokio::task::JoinHandle<()>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap().to_string();
    let task = tokio::spawn(async move {
        let (mut stream, _) = listener.accept().await.unwrap();
        read_whole_request(&mut stream).await;
        if reset {
            socket2::SockRef::from(&stream)
                .set_linger(Some(Duration::ZERO))
                .unwrap();
        }
        drop(stream);
    });
    (address, task)
}

async fn status_call(address: &str) -> Status {
    let channel = Endpoint::from_shared(format!("http://{address}"))
        .unwrap()
        .connect_timeout(Duration::from_secs(5))
        .connect_lazy();
    pb::cluster_client::ClusterClient::new(channel)
        .status(pb::StatusRequest {})
        .await
        .expect_err("nobody answers")
}

/// Nothing listening: the request was never sent, on a lazy channel and on `connect`.
#[tokio::test]
async fn a_refused_connection_is_not_sent() {
    let address = free_address();
    let status = status_call(&address).await;
    assert_eq!(classify(&status), FailureKind::NotSent, "{status:?}");
    assert!(!classify(&status).outcome_unknown());

    let err = Endpoint::from_shared(format!("http://{address}"))
        .unwrap()
        .connect()
        .await
        .expect_err("nothing listens");
    assert_eq!(classify_error(&err), Some(FailureKind::NotSent), "{err:?}");
}

/// A replica that received the whole request and then died: a transport failure whose outcome
/// is unknown, whether the connection was reset or closed, although tonic says UNKNOWN.
#[tokio::test]
async fn a_replica_dying_after_the_request_arrived_is_a_transport_failure() {
    for reset in [true, false] {
        let (address, replica) = replica_that_dies_mid_call(reset).await;
        let status = status_call(&address).await;
        replica.await.unwrap();
        assert_eq!(status.code(), Code::Unknown, "{status:?}");
        assert_eq!(classify(&status), FailureKind::Transport, "{status:?}");
        assert!(is_transient(&status));
        assert!(classify(&status).outcome_unknown());
    }
}

/// An HTTP/2 frame with an empty flags byte, as a server writes it.
fn frame(kind: u8, stream: u32, payload: &[u8]) -> Vec<u8> {
    let length = u32::try_from(payload.len()).unwrap().to_be_bytes();
    let mut bytes = vec![length[1], length[2], length[3], kind, 0];
    bytes.extend_from_slice(&stream.to_be_bytes());
    bytes.extend_from_slice(payload);
    bytes
}

/// A "replica" that takes one whole request and then, instead of answering, ends it in
/// HTTP/2: with GOAWAY (`goaway`: the connection is going away and the request's stream was
/// not processed, as a replica that woke from a pause to a pile of resets says with
/// ENHANCE_YOUR_CALM) or by resetting the stream, with `reason`.
async fn replica_that_ends_in_http2(
    reason: h2::Reason,
    goaway: bool,
) -> (String, tokio::task::JoinHandle<()>) {
    const SETTINGS: u8 = 0x4;
    const RST_STREAM: u8 = 0x3;
    const GOAWAY: u8 = 0x7;
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap().to_string();
    let code = u32::from(reason).to_be_bytes();
    let task = tokio::spawn(async move {
        let (mut stream, _) = listener.accept().await.unwrap();
        read_whole_request(&mut stream).await;
        let mut reply = frame(SETTINGS, 0, &[]);
        if goaway {
            let last_stream_processed = 0u32.to_be_bytes();
            reply.extend(frame(GOAWAY, 0, &[last_stream_processed, code].concat()));
        } else {
            reply.extend(frame(RST_STREAM, 1, &code));
        }
        stream.write_all(&reply).await.unwrap();
        // Open until the client has read it and gone away.
        let mut rest = Vec::new();
        let _ = stream.read_to_end(&mut rest).await;
    });
    (address, task)
}
/// An HTTP/2 error is a transport failure whatever code tonic maps its reason to, so a
/// client moves on to the next replica: a GOAWAY (RESOURCE_EXHAUSTED from ENHANCE_YOUR_CALM)
/// or a reset leaves the outcome unknown, a refused stream was never processed.
#[tokio::test]
async fn http2_errors_are_transport_failures() {
    for (reason, goaway, code, kind) in [
        (
            h2::Reason::ENHANCE_YOUR_CALM,
            true,
            Code::ResourceExhausted,
            FailureKind::Transport,
        ),
        (
            h2::Reason::INTERNAL_ERROR,
            false,
            Code::Internal,
            FailureKind::Transport,
        ),
        (
            h2::Reason::REFUSED_STREAM,
            false,
            Code::Unavailable,
            FailureKind::NotSent,
        ),
    ] {
        let (address, replica) = replica_that_ends_in_http2(reason, goaway).await;
        let status = status_call(&address).await;
        replica.await.unwrap();
        assert_eq!(status.code(), code, "{reason:?}: {status:?}");
        assert_eq!(classify(&status), kind, "{reason:?}: {status:?}");
        assert!(is_transient(&status), "{reason:?}");
    }
}
