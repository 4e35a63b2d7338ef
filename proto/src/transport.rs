//! The TCP settings of every Netting gRPC connection, client and server side.
//!
//! Control-plane streams are *thin*: a heartbeat, a vote, one config update, one ACK — rarely
//! more than a few packets in flight. When such a packet is lost (a partition, a replica
//! paused), TCP's retransmission timer doubles on every try, so after a cut of a second or two
//! the next retry can be seconds away, and the Raft heartbeats and config pushes queued behind
//! it wait that long after the network is back. `TCP_THIN_LINEAR_TIMEOUTS` tells Linux to keep
//! the timer linear for such streams (for the first six retries), so a healed connection
//! delivers again within a round of the minimum retransmission timeout. `TCP_NODELAY` keeps
//! Nagle from holding small messages back for the peer's delayed ACK.

use std::task::{Context, Poll};

use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;
use tonic::transport::Uri;

/// Applies Netting's TCP options to a connected stream. A failure only costs recovery speed,
/// so it is logged by the caller's choice and otherwise ignored.
pub fn tune(stream: &TcpStream) -> std::io::Result<()> {
    stream.set_nodelay(true)?;
    #[cfg(any(target_os = "linux", target_os = "android"))]
    socket2::SockRef::from(stream).set_tcp_thin_linear_timeouts(true)?;
    Ok(())
}

/// A tonic connector (`Endpoint::connect_with_connector`) that dials like tonic's own and
/// applies [`tune`] to every connection. The endpoint's connect timeout still applies.
#[derive(Debug, Clone)]
pub struct TunedConnector {
    http: HttpConnector,
}

impl TunedConnector {
    pub fn new() -> Self {
        let mut http = HttpConnector::new();
        // The URI says http://; gRPC needs nothing more from the connector.
        http.enforce_http(false);
        http.set_nodelay(true);
        Self { http }
    }
}

impl Default for TunedConnector {
    fn default() -> Self {
        Self::new()
    }
}

impl tower::Service<Uri> for TunedConnector {
    type Response = TokioIo<TcpStream>;
    type Error = <HttpConnector as tower::Service<Uri>>::Error;
    type Future = std::pin::Pin<
        Box<dyn std::future::Future<Output = Result<Self::Response, Self::Error>> + Send>,
    >;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.http.poll_ready(cx)
    }

    fn call(&mut self, uri: Uri) -> Self::Future {
        let connecting = self.http.call(uri);
        Box::pin(async move {
            let io = connecting.await?;
            // Best effort: a connection without the option still works.
            let _ = tune(io.inner());
            Ok(io)
        })
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]

    use tower::Service as _;

    use super::*;

    fn thin_linear(stream: &TcpStream) -> bool {
        socket2::SockRef::from(stream)
            .tcp_thin_linear_timeouts()
            .unwrap()
    }

    /// Both ends of a Netting connection get the options: the dialling side through the
    /// connector, the accepting side through `tune`.
    #[tokio::test]
    async fn both_ends_are_tuned() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let uri: Uri = format!("http://{addr}").parse().unwrap();
        let (dialled, accepted) = tokio::join!(TunedConnector::new().call(uri), listener.accept());
        let dialled = dialled.unwrap();
        let (accepted, _) = accepted.unwrap();
        assert!(thin_linear(dialled.inner()));
        assert!(dialled.inner().nodelay().unwrap());

        assert!(
            !thin_linear(&accepted),
            "off by default, or this test proves nothing"
        );
        tune(&accepted).unwrap();
        assert!(thin_linear(&accepted));
        assert!(accepted.nodelay().unwrap());
    }
}
