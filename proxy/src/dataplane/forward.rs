//! One HTTP request: where it goes, the attempts (retries included) within the request
//! timeout, and what the client gets when they fail.
//!
//! The request timeout runs from the request's arrival to the upstream's response headers,
//! across all attempts; a response body that then streams for a long time (downloads,
//! server-sent events, gRPC streams) is not cut. Upstream `5xx` responses other than
//! 502/503/504 are the application's answer and pass through as they are.

use std::borrow::Cow;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;

use bytes::Bytes;
use http::request::Parts;
use http::{Method, Request, Response, StatusCode};
use http_body_util::BodyExt;
use hyper::body::{Body, Incoming};
use tokio::time::Instant;

use crate::balance::Outcome;
use crate::metrics::{self, Direction};

use super::Shared;
use super::body::ProxyBody;
use super::error::ProxyError;
use super::headers::strip_hop_by_hop;
use super::http_conn::HttpConn;
use super::pool::HttpVersion;
use super::request_target::{absolute_form, origin_form};
use super::retry::{self, MAX_REPLAY_BODY};
use super::target::Target;
use super::upgrade;

/// hyper's service: every request of a client connection comes through here.
pub(crate) async fn handle(
    conn: Arc<HttpConn>,
    request: Request<Incoming>,
) -> Result<Response<ProxyBody>, Infallible> {
    let started = Instant::now();
    // The table current now: a request never sees half of a config change, and a long-lived
    // connection still follows every change.
    let routes = conn.shared.plane.routes.borrow().clone();
    let target = Target::resolve(conn.direction, conn.destination, &routes);
    let mut record = Record {
        direction: conn.direction,
        service: target.label(),
        started,
        status: None,
    };
    let response = if conn.version == HttpVersion::Http1 && upgrade::requested(&request) {
        upgrade::tunnel(&conn, &target, request).await
    } else if request.method() == Method::CONNECT {
        // HTTP/2 CONNECT (plain or extended): tunnels are only made from HTTP/1.
        ProxyError::Unsupported("CONNECT over HTTP/2").answer(conn.direction)
    } else {
        forward(&conn, &target, request).await
    };
    record.status = Some(response.status());
    Ok(response)
}

/// Counts and times a request when it is answered, or when the client gives up on it.
struct Record {
    direction: Direction,
    service: Cow<'static, str>,
    started: Instant,
    status: Option<StatusCode>,
}

impl Drop for Record {
    fn drop(&mut self) {
        metrics::request_finished(
            self.direction,
            &self.service,
            self.status,
            self.started.elapsed(),
        );
    }
}

async fn forward(
    conn: &HttpConn,
    target: &Target<'_>,
    request: Request<Incoming>,
) -> Response<ProxyBody> {
    let timeout = target.request_timeout(&conn.shared.plane.settings);
    match tokio::time::timeout(timeout, attempts(conn, target, request)).await {
        Ok(Ok(response)) => response,
        Ok(Err(error)) => error.answer(conn.direction),
        Err(_elapsed) => ProxyError::Timeout.answer(conn.direction),
    }
}

/// A request body as the attempts see it.
enum RequestBody {
    /// Sent once, streamed.
    Once(Incoming),
    /// Held in memory: the request may be sent again.
    Replayable(Bytes),
}

async fn attempts(
    conn: &HttpConn,
    target: &Target<'_>,
    request: Request<Incoming>,
) -> Result<Response<ProxyBody>, ProxyError> {
    let shared = &*conn.shared;
    let (mut parts, body) = request.into_parts();
    strip_hop_by_hop(&mut parts.headers, false);
    match conn.version {
        HttpVersion::Http1 => origin_form(&mut parts),
        HttpVersion::Http2 => absolute_form(&mut parts, conn.destination),
    }
    if target.is_balanced() {
        shared.budget.deposit();
    }
    let max_retries = target.max_retries();
    match request_body(&parts, body, max_retries).await? {
        RequestBody::Once(body) => {
            let endpoint = target
                .choose(&shared.plane.balancer, &[])
                .ok_or(ProxyError::NoEndpoint)?;
            let request = Request::from_parts(parts, ProxyBody::Incoming(body));
            let response = send(shared, target, endpoint, conn.version, request).await?;
            Ok(relay(response))
        }
        RequestBody::Replayable(body) => {
            // No allocation unless a retry happens.
            let mut tried: Vec<SocketAddr> = Vec::new();
            loop {
                let endpoint = target
                    .choose(&shared.plane.balancer, &tried)
                    .ok_or(ProxyError::NoEndpoint)?;
                let request = copy(&parts, &body);
                let result = send(shared, target, endpoint, conn.version, request).await;
                let worth_retrying = match &result {
                    Ok(response) => retry::is_retryable_status(response.status()),
                    Err(error) => error.is_retryable(),
                };
                if !worth_retrying || tried.len() >= max_retries as usize {
                    return result.map(relay);
                }
                if target.is_balanced() && !shared.budget.withdraw() {
                    metrics::retry(conn.direction, "budget_exhausted");
                    return result.map(relay);
                }
                metrics::retry(conn.direction, "retried");
                match &result {
                    Ok(response) => {
                        tracing::debug!(%endpoint, status = %response.status(), "retrying")
                    }
                    Err(error) => tracing::debug!(%endpoint, %error, "retrying"),
                }
                tried.push(endpoint);
            }
        }
    }
}

/// Holds the body in memory when the request may be retried and the body is small enough;
/// otherwise it is streamed once. (Trailers of a held body are not kept.)
async fn request_body(
    parts: &Parts,
    body: Incoming,
    max_retries: u32,
) -> Result<RequestBody, ProxyError> {
    if max_retries == 0 || !retry::is_idempotent(&parts.method) {
        return Ok(RequestBody::Once(body));
    }
    if body.is_end_stream() {
        return Ok(RequestBody::Replayable(Bytes::new()));
    }
    match body.size_hint().exact() {
        Some(length) if length <= MAX_REPLAY_BODY => {
            let collected = body.collect().await.map_err(ProxyError::ClientBody)?;
            Ok(RequestBody::Replayable(collected.to_bytes()))
        }
        _ => Ok(RequestBody::Once(body)),
    }
}

/// One attempt, with its endpoint's load and outcome told to the balancer.
async fn send(
    shared: &Shared,
    target: &Target<'_>,
    endpoint: SocketAddr,
    version: HttpVersion,
    request: Request<ProxyBody>,
) -> Result<Response<Incoming>, ProxyError> {
    let in_flight = target
        .is_balanced()
        .then(|| shared.plane.balancer.start(endpoint));
    let result = shared.pool.send(endpoint, version, request).await;
    if let Some(in_flight) = in_flight {
        match &result {
            Ok(response) if !retry::is_retryable_status(response.status()) => in_flight.succeeded(),
            _ => in_flight.finish(Outcome::Failure),
        }
    }
    result
}

/// A new request with the same head and `body` (retries).
fn copy(parts: &Parts, body: &Bytes) -> Request<ProxyBody> {
    let mut request = Request::new(ProxyBody::Full(Some(body.clone())));
    *request.method_mut() = parts.method.clone();
    *request.uri_mut() = parts.uri.clone();
    *request.version_mut() = parts.version;
    *request.headers_mut() = parts.headers.clone();
    request
}

/// The upstream's response, minus its hop-by-hop headers.
fn relay(response: Response<Incoming>) -> Response<ProxyBody> {
    let (mut parts, body) = response.into_parts();
    strip_hop_by_hop(&mut parts.headers, false);
    Response::from_parts(parts, ProxyBody::Incoming(body))
}
