//! Serving one client connection that speaks HTTP: hyper's HTTP/1 or HTTP/2 server, every
//! request handed to [`super::forward::handle`].
//!
//! HTTP/1 heads larger than `Settings::max_header_bytes` get 431 from hyper, HTTP/2 header
//! lists larger than that are refused by the h2 layer. Idle keep-alive connections are left
//! open for as long as the client keeps them, as a direct connection would be. On drain,
//! HTTP/1 connections finish the request in progress and close (`Connection: close`), HTTP/2
//! connections send GOAWAY and finish their open streams.

use std::sync::Arc;

use hyper::server::conn::{http1, http2};
use hyper::service::service_fn;
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::net::TcpStream;

use crate::metrics;

use super::forward;
use super::http_conn::HttpConn;
use super::io::ClientIo;
use super::pool::HttpVersion;

/// Serves the connection until the client closes it, or draining has let it finish.
pub(crate) async fn serve(conn: HttpConn, io: ClientIo<TcpStream>) {
    let signals = conn.shared.signals.clone();
    let settings = conn.shared.plane.settings;
    let direction = conn.direction;
    let version = conn.version;
    let conn = Arc::new(conn);
    let service = service_fn(move |request| forward::handle(Arc::clone(&conn), request));
    let io = TokioIo::new(io);
    let result = match version {
        HttpVersion::Http1 => {
            let connection = http1::Builder::new()
                .max_header_size(settings.max_header_bytes)
                .header_read_timeout(None)
                .serve_connection(io, service)
                .with_upgrades();
            tokio::pin!(connection);
            tokio::select! {
                result = connection.as_mut() => result,
                () = signals.draining() => {
                    connection.as_mut().graceful_shutdown();
                    connection.await
                }
            }
        }
        HttpVersion::Http2 => {
            let header_list = u32::try_from(settings.max_header_bytes).unwrap_or(u32::MAX);
            let connection = http2::Builder::new(signals.executor())
                .timer(TokioTimer::new())
                .max_header_list_size(header_list)
                .serve_connection(io, service);
            tokio::pin!(connection);
            tokio::select! {
                result = connection.as_mut() => result,
                () = signals.draining() => {
                    connection.as_mut().graceful_shutdown();
                    connection.await
                }
            }
        }
    };
    if let Err(error) = result {
        // hyper has already answered 400/431 when it could; a client that went away is not
        // the proxy's error.
        if error.is_parse_too_large() {
            metrics::proxy_error(direction, "too_large");
        } else if error.is_parse() {
            metrics::proxy_error(direction, "malformed");
        }
        tracing::debug!(%error, "client connection ended with an error");
    }
}
