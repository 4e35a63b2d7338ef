//! Upstream HTTP connections, one pool for the whole proxy: per endpoint, the HTTP/1
//! connections not carrying a request, and one multiplexed HTTP/2 connection.
//!
//! An HTTP/1 connection goes back to the pool as soon as its response headers are in; it is
//! only handed out again once hyper says it is ready for another request (its previous
//! response body fully read), so no task is needed per request to wait for that. Connections
//! idle longer than the idle timeout, or closed by the server, are swept out periodically.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use http::{Request, Response};
use hyper::body::Incoming;
use hyper::client::conn::{http1, http2};
use hyper_util::rt::{TokioIo, TokioTimer};

use super::body::ProxyBody;
use super::connect::connect;
use super::error::ProxyError;
use super::lifecycle::Signals;

/// Connections kept per endpoint; more are closed after their response.
const MAX_HTTP1_PER_ENDPOINT: usize = 256;

/// Which HTTP the upstream connection speaks: the same as the client's connection, since
/// the client chose it knowing the destination (HTTP/2 here means prior knowledge, h2c).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum HttpVersion {
    Http1,
    Http2,
}

#[derive(Debug, Clone)]
pub(crate) struct Pool {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    http1: Mutex<HashMap<SocketAddr, Vec<Pooled1>>>,
    http2: Mutex<HashMap<SocketAddr, Pooled2>>,
    connect_timeout: Duration,
    idle_timeout: Duration,
    signals: Signals,
}

#[derive(Debug)]
struct Pooled1 {
    sender: http1::SendRequest<ProxyBody>,
    /// When it was last given back.
    since: Instant,
}

#[derive(Debug)]
struct Pooled2 {
    sender: http2::SendRequest<ProxyBody>,
    used: Instant,
}

impl Pool {
    pub(crate) fn new(connect_timeout: Duration, idle_timeout: Duration, signals: Signals) -> Pool {
        Pool {
            inner: Arc::new(Inner {
                http1: Mutex::new(HashMap::new()),
                http2: Mutex::new(HashMap::new()),
                connect_timeout,
                idle_timeout,
                signals,
            }),
        }
    }

    /// Sends `request` to `endpoint` over a pooled or a new connection.
    pub(crate) async fn send(
        &self,
        endpoint: SocketAddr,
        version: HttpVersion,
        request: Request<ProxyBody>,
    ) -> Result<Response<Incoming>, ProxyError> {
        match version {
            HttpVersion::Http1 => self.send_http1(endpoint, request).await,
            HttpVersion::Http2 => self.send_http2(endpoint, request).await,
        }
    }

    async fn send_http1(
        &self,
        endpoint: SocketAddr,
        mut request: Request<ProxyBody>,
    ) -> Result<Response<Incoming>, ProxyError> {
        let mut reuse = true;
        loop {
            let pooled = if reuse {
                self.take_http1(endpoint)
            } else {
                None
            };
            let reused = pooled.is_some();
            let mut sender = match pooled {
                Some(sender) => sender,
                None => self.connect_http1(endpoint).await?,
            };
            match sender.try_send_request(request).await {
                Ok(response) => {
                    self.give_back_http1(endpoint, sender);
                    return Ok(response);
                }
                Err(mut error) => match error.take_message() {
                    // A pooled connection closed before the request went out: nothing was
                    // sent, so any request may go again, on a new connection.
                    Some(unsent) if reused => {
                        request = unsent;
                        reuse = false;
                    }
                    _ => return Err(ProxyError::upstream(endpoint, error.into_error())),
                },
            }
        }
    }

    async fn send_http2(
        &self,
        endpoint: SocketAddr,
        mut request: Request<ProxyBody>,
    ) -> Result<Response<Incoming>, ProxyError> {
        let mut reuse = true;
        loop {
            let pooled = if reuse {
                self.take_http2(endpoint)
            } else {
                None
            };
            let reused = pooled.is_some();
            let mut sender = match pooled {
                Some(sender) => sender,
                None => self.connect_http2(endpoint).await?,
            };
            match sender.try_send_request(request).await {
                Ok(response) => return Ok(response),
                Err(mut error) => match error.take_message() {
                    // The connection was going away (GOAWAY, closed) before the stream
                    // opened: nothing was sent.
                    Some(unsent) if reused => {
                        request = unsent;
                        reuse = false;
                    }
                    _ => return Err(ProxyError::upstream(endpoint, error.into_error())),
                },
            }
        }
    }

    /// A pooled HTTP/1 connection ready for a request; closed ones met on the way are dropped.
    fn take_http1(&self, endpoint: SocketAddr) -> Option<http1::SendRequest<ProxyBody>> {
        let mut pools = self
            .inner
            .http1
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        let pooled = pools.get_mut(&endpoint)?;
        pooled.retain(|p| !p.sender.is_closed());
        // The most recently given back first: the warmest connection.
        let ready = pooled.iter().rposition(|p| p.sender.is_ready());
        let taken = ready.map(|index| pooled.swap_remove(index).sender);
        if pooled.is_empty() {
            pools.remove(&endpoint);
        }
        taken
    }

    fn give_back_http1(&self, endpoint: SocketAddr, sender: http1::SendRequest<ProxyBody>) {
        if sender.is_closed() {
            return;
        }
        let mut pools = self
            .inner
            .http1
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        let pooled = pools.entry(endpoint).or_default();
        if pooled.len() < MAX_HTTP1_PER_ENDPOINT {
            pooled.push(Pooled1 {
                sender,
                since: Instant::now(),
            });
        }
    }

    fn take_http2(&self, endpoint: SocketAddr) -> Option<http2::SendRequest<ProxyBody>> {
        let mut pools = self
            .inner
            .http2
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        let pooled = pools.get_mut(&endpoint)?;
        if pooled.sender.is_closed() {
            pools.remove(&endpoint);
            return None;
        }
        pooled.used = Instant::now();
        Some(pooled.sender.clone())
    }

    async fn connect_http1(
        &self,
        endpoint: SocketAddr,
    ) -> Result<http1::SendRequest<ProxyBody>, ProxyError> {
        let stream = connect(endpoint, self.inner.connect_timeout).await?;
        let (sender, connection) = http1::Builder::new()
            .handshake(TokioIo::new(stream))
            .await
            .map_err(|source| ProxyError::upstream(endpoint, source))?;
        self.inner.signals.spawn(async move {
            if let Err(error) = connection.await {
                tracing::debug!(%endpoint, %error, "upstream HTTP/1 connection failed");
            }
        });
        Ok(sender)
    }

    async fn connect_http2(
        &self,
        endpoint: SocketAddr,
    ) -> Result<http2::SendRequest<ProxyBody>, ProxyError> {
        let stream = connect(endpoint, self.inner.connect_timeout).await?;
        let (sender, connection) = http2::Builder::new(self.inner.signals.executor())
            .timer(TokioTimer::new())
            .handshake(TokioIo::new(stream))
            .await
            .map_err(|source| ProxyError::upstream(endpoint, source))?;
        self.inner.signals.spawn(async move {
            if let Err(error) = connection.await {
                tracing::debug!(%endpoint, %error, "upstream HTTP/2 connection failed");
            }
        });
        // Two requests racing may both connect; the later one is kept, the other closes
        // once its request is done.
        let mut pools = self
            .inner
            .http2
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        pools.insert(
            endpoint,
            Pooled2 {
                sender: sender.clone(),
                used: Instant::now(),
            },
        );
        Ok(sender)
    }

    /// Closes connections idle longer than the idle timeout, and forgets closed ones.
    pub(crate) fn sweep(&self) {
        let now = Instant::now();
        let idle_timeout = self.inner.idle_timeout;
        {
            let mut pools = self
                .inner
                .http1
                .lock()
                .unwrap_or_else(PoisonError::into_inner);
            pools.retain(|_, pooled| {
                pooled.retain(|p| {
                    let expired = p.sender.is_ready()
                        && now.saturating_duration_since(p.since) >= idle_timeout;
                    !p.sender.is_closed() && !expired
                });
                !pooled.is_empty()
            });
        }
        let mut pools = self
            .inner
            .http2
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        pools.retain(|_, p| {
            !p.sender.is_closed() && now.saturating_duration_since(p.used) < idle_timeout
        });
    }

    /// Drops every pooled connection (shutdown).
    pub(crate) fn clear(&self) {
        self.inner
            .http1
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clear();
        self.inner
            .http2
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clear();
    }
}
