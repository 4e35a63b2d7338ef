//! The admin HTTP/1.1 server: accepts connections, hands requests to [`routes`](super::routes),
//! keeps the Prometheus recorder tidy, and drains on shutdown.

use std::convert::Infallible;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::net::TcpListener;
use tokio::sync::{Semaphore, watch};
use tokio::task::JoinSet;
use tokio::time::{MissedTickBehavior, interval, sleep, timeout};

use super::routes::route;
use super::state::AdminState;

/// Connections served at once; further ones wait in the listen backlog. Scrapers and probes
/// need a handful, and a bound keeps a misbehaving client from exhausting file descriptors.
const MAX_CONNECTIONS: usize = 64;

/// A client must send its request headers within this time or be disconnected.
const HEADER_READ_TIMEOUT: Duration = Duration::from_secs(10);

/// How often the recorder's upkeep runs. Installed without the exporter's own task (see
/// [`install_recorder`](super::install_recorder)), histogram samples are only drained by a
/// scrape or by upkeep; without either they would pile up.
const UPKEEP_PERIOD: Duration = Duration::from_secs(5);

/// After shutdown, how long in-flight requests may take before their connections are dropped.
const DRAIN_TIMEOUT: Duration = Duration::from_secs(5);

/// Pause after a failed `accept` (e.g. out of file descriptors), so the loop does not spin.
const ACCEPT_ERROR_PAUSE: Duration = Duration::from_millis(100);

/// Completes once the server asks connections to stop, or is gone.
async fn stop_requested(stop: &mut watch::Receiver<bool>) {
    // The returned guard borrows the channel; dropping it here keeps the caller's future Send.
    let _ = stop.wait_for(|stop| *stop).await;
}

/// Serves the admin endpoints on `listener` until `shutdown` completes, then lets requests in
/// flight finish (up to a few seconds) and returns. Failures of single connections are logged
/// and never end the server.
pub async fn serve(listener: TcpListener, state: AdminState, shutdown: impl Future<Output = ()>) {
    let mut http = http1::Builder::new();
    http.timer(TokioTimer::new())
        .header_read_timeout(HEADER_READ_TIMEOUT);
    let slots = Arc::new(Semaphore::new(MAX_CONNECTIONS));
    let (stop_tx, stop_rx) = watch::channel(false);
    let mut connections = JoinSet::new();
    let mut upkeep = interval(UPKEEP_PERIOD);
    upkeep.set_missed_tick_behavior(MissedTickBehavior::Delay);

    tokio::pin!(shutdown);
    loop {
        // A slot is taken before accepting, so connections beyond the bound wait in the
        // backlog. Dropping this future (another branch won) gives the slot back, and
        // `accept` is cancel-safe.
        let next = async {
            let slot = Arc::clone(&slots).acquire_owned().await;
            (slot, listener.accept().await)
        };
        tokio::select! {
            biased;
            () = &mut shutdown => break,
            _ = upkeep.tick() => state.prometheus().run_upkeep(),
            (slot, accepted) = next => {
                // The semaphore is never closed, so acquiring cannot fail.
                let Ok(slot) = slot else { continue };
                let stream = match accepted {
                    Ok((stream, _peer)) => stream,
                    Err(error) => {
                        tracing::warn!(%error, "admin server failed to accept a connection");
                        sleep(ACCEPT_ERROR_PAUSE).await;
                        continue;
                    }
                };
                let http = http.clone();
                let state = state.clone();
                let mut stop = stop_rx.clone();
                connections.spawn(async move {
                    let _slot = slot;
                    let service = service_fn(move |request| {
                        let state = state.clone();
                        async move { Ok::<_, Infallible>(route(request, &state).await) }
                    });
                    let connection = http.serve_connection(TokioIo::new(stream), service);
                    tokio::pin!(connection);
                    let result = tokio::select! {
                        result = connection.as_mut() => result,
                        // Also reached if the server is gone (sender dropped).
                        () = stop_requested(&mut stop) => {
                            connection.as_mut().graceful_shutdown();
                            connection.await
                        }
                    };
                    // Malformed requests, timeouts and resets end here: hyper already answered
                    // or closed, and other connections are unaffected.
                    if let Err(error) = result {
                        tracing::debug!(%error, "admin connection ended with an error");
                    }
                });
                // Reap finished connections so the set does not grow with every request.
                while connections.try_join_next().is_some() {}
            }
        }
    }

    // Close the listener first so new connections are refused rather than queued.
    drop(listener);
    stop_tx.send_replace(true);
    if timeout(DRAIN_TIMEOUT, async {
        while connections.join_next().await.is_some() {}
    })
    .await
    .is_err()
    {
        tracing::warn!(
            remaining = connections.len(),
            "admin connections did not drain in time"
        );
        connections.shutdown().await;
    }
}
