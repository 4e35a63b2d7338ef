//! What every request of one client connection that speaks HTTP shares.

use std::net::SocketAddr;
use std::sync::Arc;

use crate::metrics::{ConnectionGuard, Direction};

use super::Shared;
use super::lifecycle::Tracker;
use super::pool::HttpVersion;

/// What every request of one client connection shares.
#[derive(Debug)]
pub(crate) struct HttpConn {
    pub(crate) shared: Arc<Shared>,
    pub(crate) direction: Direction,
    /// The connection's original destination.
    pub(crate) destination: SocketAddr,
    pub(crate) version: HttpVersion,
    /// Kept while any request or tunnel of the connection lives: draining waits for them, and
    /// the connection stays counted as open.
    _tracker: Tracker,
    _open: ConnectionGuard,
}

impl HttpConn {
    pub(crate) fn new(
        shared: Arc<Shared>,
        direction: Direction,
        destination: SocketAddr,
        version: HttpVersion,
        tracker: Tracker,
        open: ConnectionGuard,
    ) -> HttpConn {
        HttpConn {
            shared,
            direction,
            destination,
            version,
            _tracker: tracker,
            _open: open,
        }
    }
}
