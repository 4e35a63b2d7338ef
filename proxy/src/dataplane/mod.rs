//! The data path: everything between an accepted connection and its upstream.
//!
//! # A connection's life
//!
//! 1. **Accept** (`connection`). Each [`Listener`] has a direction — outbound: the pod's
//!    application calling out; inbound: other pods calling in — and a way to learn where a
//!    connection was going before netting-init redirected it ([`OriginalDestination`]:
//!    `SO_ORIGINAL_DST` in production, an injected answer in tests). A connection without one,
//!    or whose "original" destination is the listener itself (it was not redirected), is
//!    closed: forwarding it would loop.
//! 2. **Detect** (`detect`). The first bytes decide: HTTP/1, HTTP/2 with prior knowledge, or
//!    opaque TCP. A client silent for 100 ms is taken to speak a server-speaks-first protocol
//!    (SMTP, MySQL) and gets TCP — unless the catalog declares the port HTTP or gRPC, in
//!    which case it may stay silent for the whole detection timeout (5 s). The bytes read are
//!    replayed in front of the connection (`io`), which also counts the bytes carried.
//! 3. **Target** (`target`). Outbound, the catalog service that owns the destination
//!    ([`Routes::lookup`]), balanced over its ready endpoints with power of two choices
//!    ([`Balancer`]) and governed by its policy; a destination outside the catalog passes
//!    through to itself. Inbound, the application on the pod's loopback, same port.
//! 4. **Proxy**. HTTP per request (`http` serves the connection, `http_conn` is what its
//!    requests share, `forward` handles one request, `request_target` writes its target in
//!    the upstream's form): each request is balanced on its own
//!    over one shared connection pool (`pool`), bounded by the request timeout, retried when
//!    that is safe and the retry budget allows (`retry`), and answered 502/503/504 by the
//!    proxy when no response can be had (`error`). HTTP/1 upgrades become TCP tunnels
//!    (`upgrade`). TCP per connection (`tcp`): one upstream, bytes copied both ways.
//! 5. **Drain** (`lifecycle`). When `stop` turns true the listeners close (new connections
//!    are refused), HTTP connections finish their requests and close, TCP connections run
//!    on; whatever is left when `drain_timeout` is over is closed.
//!
//! The routing table is read per HTTP request and per TCP connection, so a config change
//! applies to the next request without disturbing one in flight.

mod body;
mod connect;
mod connection;
mod detect;
mod error;
mod forward;
mod headers;
mod http;
mod http_conn;
mod io;
mod lifecycle;
mod original_dst;
mod pool;
mod request_target;
mod retry;
mod target;
mod tcp;
mod upgrade;

use std::sync::Arc;
use std::time::Duration;

use tokio::net::TcpListener;
use tokio::sync::watch;

use crate::balance::Balancer;
use crate::metrics::Direction;
use crate::routes::Routes;

pub use detect::DetectConfig;
pub use original_dst::{DestinationFn, OriginalDestination};
pub use retry::BudgetConfig;

use lifecycle::Signals;
use pool::Pool;
use retry::RetryBudget;

/// What every connection handler shares.
#[derive(Debug, Clone)]
pub struct DataPlane {
    /// The current routing table, read for every HTTP request and every TCP connection.
    pub routes: watch::Receiver<Arc<Routes>>,
    pub balancer: Arc<Balancer>,
    pub settings: Settings,
}

#[derive(Debug, Clone, Copy)]
pub struct Settings {
    pub connect_timeout: Duration,
    /// Request timeout when the service's policy sets none.
    pub request_timeout: Duration,
    pub max_header_bytes: usize,
}

/// Knobs whose defaults suit production; tests shrink them.
#[derive(Debug, Clone, Copy)]
pub struct Options {
    pub detect: DetectConfig,
    pub retry_budget: BudgetConfig,
    /// Upstream HTTP connections unused this long are closed.
    pub idle_timeout: Duration,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            detect: DetectConfig::default(),
            retry_budget: BudgetConfig::default(),
            idle_timeout: Duration::from_secs(30),
        }
    }
}

/// A bound listener and what its connections are.
#[derive(Debug)]
pub struct Listener {
    pub listener: TcpListener,
    pub direction: Direction,
    pub destination: OriginalDestination,
}

impl Listener {
    /// A listener for connections netting-init redirected: `SO_ORIGINAL_DST` tells where
    /// they were going.
    pub fn redirected(listener: TcpListener, direction: Direction) -> Listener {
        Listener {
            listener,
            direction,
            destination: OriginalDestination::Socket,
        }
    }
}

/// Everything the data path's tasks share.
#[derive(Debug)]
struct Shared {
    plane: DataPlane,
    options: Options,
    pool: Pool,
    budget: RetryBudget,
    signals: Signals,
}

/// Serves both listeners until `stop` turns true, then stops accepting and lets connections
/// in flight finish for at most `drain_timeout`.
pub async fn serve(
    outbound: TcpListener,
    inbound: TcpListener,
    plane: DataPlane,
    stop: watch::Receiver<bool>,
    drain_timeout: Duration,
) {
    let listeners = vec![
        Listener::redirected(outbound, Direction::Outbound),
        Listener::redirected(inbound, Direction::Inbound),
    ];
    serve_with(listeners, plane, Options::default(), stop, drain_timeout).await;
}

/// [`serve`] with any listeners and options. Returns once every connection has finished or
/// been closed.
pub async fn serve_with(
    listeners: Vec<Listener>,
    plane: DataPlane,
    options: Options,
    stop: watch::Receiver<bool>,
    drain_timeout: Duration,
) {
    /// After close every task ends at its next poll; this only bounds the wait for one
    /// that does not yield.
    const CLOSE_GRACE: Duration = Duration::from_secs(1);

    let (close, closing) = watch::channel(false);
    let signals = Signals::new(stop, closing);
    let pool = Pool::new(
        plane.settings.connect_timeout,
        options.idle_timeout,
        signals.clone(),
    );
    let shared = Arc::new(Shared {
        budget: RetryBudget::new(options.retry_budget),
        plane,
        options,
        pool: pool.clone(),
        signals: signals.clone(),
    });
    let (tracker, mut all_done) = lifecycle::tracker();
    for listener in listeners {
        signals.spawn(connection::accept(
            listener,
            Arc::clone(&shared),
            tracker.clone(),
        ));
    }
    drop((tracker, shared));
    let sweeper = pool.clone();
    let sweep_every = (options.idle_timeout / 2).max(Duration::from_millis(100));
    signals.spawn(async move {
        loop {
            tokio::time::sleep(sweep_every).await;
            sweeper.sweep();
        }
    });

    signals.draining().await;
    if tokio::time::timeout(drain_timeout, all_done.wait())
        .await
        .is_err()
    {
        tracing::info!(
            ?drain_timeout,
            "drain time over; closing the remaining connections"
        );
    }
    close.send_replace(true);
    let _ = tokio::time::timeout(CLOSE_GRACE, all_done.wait()).await;
    pool.clear();
}
