//! The admin endpoints: one function from request to response, no IO besides the Raft probe.

use std::time::Duration;

use bytes::Bytes;
use http::header::{ALLOW, CONTENT_TYPE, HeaderValue};
use http::{Method, Request, Response, StatusCode};
use http_body_util::Full;
use serde::Serialize;
use tokio::time::timeout;

use super::debug::debug_view;
use super::readiness::{NotReady, readiness};
use super::sessions::sessions_view;
use super::state::AdminState;
use crate::actors::session_messages::ListSessions;

/// How long `/readyz` and `/debug/raft` wait for the Raft core's commit index. A core that
/// cannot answer in this time is not serving either, so `/readyz` says so instead of hanging
/// past the probe's own timeout.
pub(crate) const RAFT_CORE_TIMEOUT: Duration = Duration::from_secs(1);

/// How long `/debug/sessions` waits for the config pusher, which answers from memory unless
/// its mailbox is backed up; a debug endpoint must not hang with it.
pub(crate) const SESSIONS_TIMEOUT: Duration = Duration::from_secs(2);

/// The Prometheus text exposition format, version 0.0.4.
const PROMETHEUS_TEXT: &str = "text/plain; version=0.0.4; charset=utf-8";
const PLAIN_TEXT: &str = "text/plain; charset=utf-8";
const JSON: &str = "application/json";

/// Answers one admin request. Never fails: every outcome is a response.
pub(crate) async fn route<B>(request: Request<B>, state: &AdminState) -> Response<Full<Bytes>> {
    let endpoint = match request.uri().path() {
        "/metrics" => Endpoint::Metrics,
        "/healthz" => Endpoint::Healthz,
        "/readyz" => Endpoint::Readyz,
        "/debug/raft" => Endpoint::DebugRaft,
        "/debug/sessions" => Endpoint::DebugSessions,
        _ => return text(StatusCode::NOT_FOUND, "not found\n"),
    };
    if request.method() != Method::GET {
        let mut response = text(StatusCode::METHOD_NOT_ALLOWED, "method not allowed\n");
        response
            .headers_mut()
            .insert(ALLOW, HeaderValue::from_static("GET"));
        return response;
    }
    match endpoint {
        Endpoint::Metrics => metrics(state),
        Endpoint::Healthz => text(StatusCode::OK, "ok\n"),
        Endpoint::Readyz => readyz(state).await,
        Endpoint::DebugRaft => debug_raft(state).await,
        Endpoint::DebugSessions => debug_sessions(state).await,
    }
}

#[derive(Debug, Clone, Copy)]
enum Endpoint {
    Metrics,
    Healthz,
    Readyz,
    DebugRaft,
    DebugSessions,
}

fn metrics(state: &AdminState) -> Response<Full<Bytes>> {
    let mut response = Response::new(Full::new(Bytes::from(state.prometheus().render())));
    response
        .headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static(PROMETHEUS_TEXT));
    response
}

async fn readyz(state: &AdminState) -> Response<Full<Bytes>> {
    // Cloned so the watch is not borrowed across the await below.
    let metrics = state.raft().metrics().borrow().clone();
    let verdict = match committed_index(state).await {
        Ok(committed) => readiness(&metrics, committed, state.readiness_policy()),
        Err(not_ready) => Err(not_ready),
    };
    match verdict {
        Ok(()) => text(StatusCode::OK, "ready\n"),
        Err(not_ready) => json(
            StatusCode::SERVICE_UNAVAILABLE,
            &NotReadyBody::new(&not_ready),
        ),
    }
}

async fn debug_raft(state: &AdminState) -> Response<Full<Bytes>> {
    let metrics = state.raft().metrics().borrow().clone();
    // The view is still useful without the commit index, e.g. to see why the core is stuck.
    let committed = committed_index(state).await.ok().flatten();
    json(
        StatusCode::OK,
        &debug_view(&metrics, state.catalog().applied(), committed),
    )
}

async fn debug_sessions(state: &AdminState) -> Response<Full<Bytes>> {
    // 404 rather than an empty list: "no sidecars here" would be a claim this server cannot make.
    let Some(sessions) = state.sessions() else {
        return text(
            StatusCode::NOT_FOUND,
            "no discovery service on this server: sessions are not known here\n",
        );
    };
    match timeout(SESSIONS_TIMEOUT, sessions.send(ListSessions)).await {
        Ok(Ok(sessions)) => {
            let node_id = state.raft().metrics().borrow().id;
            let catalog_version = state.catalog().read(|c| c.version());
            json(
                StatusCode::OK,
                &sessions_view(node_id, catalog_version, &sessions),
            )
        }
        Ok(Err(_)) => text(
            StatusCode::SERVICE_UNAVAILABLE,
            "the config pusher has stopped\n",
        ),
        Err(_) => text(
            StatusCode::SERVICE_UNAVAILABLE,
            "the config pusher did not answer in time\n",
        ),
    }
}

/// The commit index the Raft core knows, or why it could not be had.
async fn committed_index(state: &AdminState) -> Result<Option<u64>, NotReady> {
    match timeout(RAFT_CORE_TIMEOUT, state.raft().committed_index()).await {
        Ok(Ok(committed)) => Ok(committed),
        Ok(Err(fatal)) => Err(NotReady::RaftStopped {
            error: fatal.to_string(),
        }),
        Err(_) => Err(NotReady::RaftUnresponsive {
            timeout_ms: u64::try_from(RAFT_CORE_TIMEOUT.as_millis()).unwrap_or(u64::MAX),
        }),
    }
}

/// The 503 body of `/readyz`: `{"ready": false, "message": "...", "reason": "...", ...}`.
#[derive(Debug, Serialize)]
struct NotReadyBody<'a> {
    ready: bool,
    message: String,
    #[serde(flatten)]
    detail: &'a NotReady,
}

impl<'a> NotReadyBody<'a> {
    fn new(detail: &'a NotReady) -> Self {
        Self {
            ready: false,
            message: detail.to_string(),
            detail,
        }
    }
}

fn text(status: StatusCode, body: &'static str) -> Response<Full<Bytes>> {
    let mut response = Response::new(Full::new(Bytes::from_static(body.as_bytes())));
    *response.status_mut() = status;
    response
        .headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static(PLAIN_TEXT));
    response
}

fn json(status: StatusCode, value: &impl Serialize) -> Response<Full<Bytes>> {
    match serde_json::to_vec_pretty(value) {
        Ok(mut body) => {
            body.push(b'\n');
            let mut response = Response::new(Full::new(Bytes::from(body)));
            *response.status_mut() = status;
            response
                .headers_mut()
                .insert(CONTENT_TYPE, HeaderValue::from_static(JSON));
            response
        }
        // Our views only hold strings, numbers and maps keyed by integers, which always
        // serialise; should one not, the operator still gets an answer.
        Err(error) => {
            tracing::warn!(%error, "admin response failed to serialise");
            text(StatusCode::INTERNAL_SERVER_ERROR, "internal error\n")
        }
    }
}
