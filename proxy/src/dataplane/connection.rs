//! Accepting connections and taking each through destination lookup and detection to the
//! HTTP or TCP proxy.

use std::sync::Arc;
use std::time::Duration;

use netting_discovery_client::Protocol;
use tokio::net::TcpStream;
use tracing::Instrument;

use crate::metrics::{self, Direction};

use super::detect::{Detected, detect};
use super::http;
use super::http_conn::HttpConn;
use super::io::ClientIo;
use super::lifecycle::Tracker;
use super::original_dst::{OriginalDestination, canonical};
use super::pool::HttpVersion;
use super::{Listener, Shared, tcp};

/// Detection reads at most this much of a request line before leaving it to hyper.
const MAX_DETECT_LINE: usize = 64 * 1024;

/// Accepts until draining begins, then drops the listener so that new connections are
/// refused.
pub(crate) async fn accept(listener: Listener, shared: Arc<Shared>, tracker: Tracker) {
    let Listener {
        listener,
        direction,
        destination,
    } = listener;
    let draining = shared.signals.draining();
    tokio::pin!(draining);
    loop {
        let accepted = tokio::select! {
            biased;
            () = &mut draining => break,
            accepted = listener.accept() => accepted,
        };
        match accepted {
            Ok((stream, peer)) => {
                let span =
                    tracing::debug_span!("connection", direction = direction.as_str(), %peer);
                let task = handle(
                    Arc::clone(&shared),
                    stream,
                    direction,
                    destination.clone(),
                    tracker.clone(),
                );
                shared.signals.spawn(task.instrument(span));
            }
            Err(error) => {
                // Out of file descriptors, most likely: wait instead of spinning.
                tracing::warn!(direction = direction.as_str(), %error, "accept failed");
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    }
}

async fn handle(
    shared: Arc<Shared>,
    mut stream: TcpStream,
    direction: Direction,
    resolver: OriginalDestination,
    tracker: Tracker,
) {
    if let Err(error) = stream.set_nodelay(true) {
        tracing::debug!(%error, "cannot set TCP_NODELAY");
    }
    let destination = match resolver.resolve(&stream) {
        Ok(destination) => destination,
        Err(error) => {
            metrics::proxy_error(direction, "original_dst");
            tracing::debug!(%error, "no original destination; closing");
            return;
        }
    };
    // A connection made straight to the listener has itself as its "original" destination;
    // forwarding it would come back here.
    if stream.local_addr().map(canonical).ok() == Some(destination) {
        metrics::proxy_error(direction, "loop");
        tracing::debug!(%destination, "connection was not redirected; closing");
        return;
    }
    let line_limit = shared
        .plane
        .settings
        .max_header_bytes
        .clamp(64, MAX_DETECT_LINE);
    let mut config = shared.options.detect;
    if declared_http(&shared, destination) {
        // The catalog says HTTP: a silent client is more likely an HTTP client that connected
        // ahead of its first request than a server-speaks-first one, so give it the whole
        // detection time. The bytes still decide.
        config.first_byte_wait = config.timeout;
    }
    let (detected, prefix) = match detect(&mut stream, config, line_limit).await {
        Ok(found) => found,
        Err(error) => {
            tracing::debug!(%error, "client failed before its protocol was known");
            return;
        }
    };
    tracing::trace!(protocol = detected.as_str(), %destination, "detected");
    let open = metrics::connection_opened(direction, detected.as_str());
    let io = ClientIo::new(stream, prefix.freeze(), direction);
    let version = match detected {
        Detected::Http1 => HttpVersion::Http1,
        Detected::Http2 => HttpVersion::Http2,
        Detected::Tcp => {
            tcp::proxy(&shared, direction, destination, io).await;
            drop((open, tracker));
            return;
        }
    };
    let conn = HttpConn::new(shared, direction, destination, version, tracker, open);
    http::serve(conn, io).await;
}

/// Whether the catalog declares the destination's port as HTTP or gRPC.
fn declared_http(shared: &Shared, destination: std::net::SocketAddr) -> bool {
    let routes = shared.plane.routes.borrow();
    routes
        .lookup(destination)
        .is_some_and(|route| matches!(route.protocol, Protocol::Http | Protocol::Grpc))
}
