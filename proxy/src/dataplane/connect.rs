//! Opening a connection to an upstream endpoint: bounded by the connect timeout, with
//! `TCP_NODELAY` so small requests and responses are not held back by Nagle's algorithm.
//!
//! The proxy runs as a uid that netting-init leaves out of the redirection, so these
//! connections go where they are addressed without any socket option.

use std::net::SocketAddr;
use std::time::Duration;

use tokio::net::TcpStream;

use super::error::ProxyError;

pub(crate) async fn connect(
    endpoint: SocketAddr,
    timeout: Duration,
) -> Result<TcpStream, ProxyError> {
    match tokio::time::timeout(timeout, TcpStream::connect(endpoint)).await {
        Err(_elapsed) => Err(ProxyError::ConnectTimeout(endpoint)),
        Ok(Err(source)) => Err(ProxyError::Connect { endpoint, source }),
        Ok(Ok(stream)) => {
            if let Err(error) = stream.set_nodelay(true) {
                tracing::debug!(%endpoint, %error, "cannot set TCP_NODELAY upstream");
            }
            Ok(stream)
        }
    }
}
