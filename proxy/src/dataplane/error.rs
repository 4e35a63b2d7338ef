//! Why the proxy could not get a response for a request or a connection, and what the
//! client is told: a short `text/plain` answer for HTTP, a closed connection for TCP.

use std::io;
use std::net::SocketAddr;

use bytes::Bytes;
use http::header::{CONTENT_TYPE, HeaderValue};
use http::{Response, StatusCode};
use thiserror::Error;

use super::body::ProxyBody;
use crate::metrics::{self, Direction};

/// A failure on the way to an upstream response.
#[derive(Debug, Error)]
pub(crate) enum ProxyError {
    #[error("the service has no ready endpoint")]
    NoEndpoint,
    #[error("cannot connect to {endpoint}: {source}")]
    Connect {
        endpoint: SocketAddr,
        source: io::Error,
    },
    #[error("connecting to {0} timed out")]
    ConnectTimeout(SocketAddr),
    #[error("upstream {endpoint} failed before responding: {source}")]
    Upstream {
        endpoint: SocketAddr,
        source: hyper::Error,
    },
    #[error("no response within the request timeout")]
    Timeout,
    #[error("the client's request body failed: {0}")]
    ClientBody(hyper::Error),
    #[error("{0} is not proxied")]
    Unsupported(&'static str),
}

impl ProxyError {
    /// Counts the error and turns it into the client's answer.
    pub(crate) fn answer(self, direction: Direction) -> Response<ProxyBody> {
        metrics::proxy_error(direction, self.kind());
        tracing::debug!(error = %self, "request failed");
        self.response()
    }

    pub(crate) fn upstream(endpoint: SocketAddr, source: hyper::Error) -> ProxyError {
        ProxyError::Upstream { endpoint, source }
    }

    /// The `kind` label of `netting_proxy_errors_total`.
    pub(crate) fn kind(&self) -> &'static str {
        match self {
            ProxyError::NoEndpoint => "no_endpoint",
            ProxyError::Connect { .. } => "connect",
            ProxyError::ConnectTimeout(_) => "connect_timeout",
            ProxyError::Upstream { source, .. } if source.is_parse() => "upstream_malformed",
            // The request body hyper was sending failed: the client went away mid-request.
            ProxyError::Upstream { source, .. } if source.is_user() => "client_reset",
            ProxyError::Upstream { .. } => "upstream_reset",
            ProxyError::Timeout => "timeout",
            ProxyError::ClientBody(_) => "client_reset",
            ProxyError::Unsupported(_) => "unsupported",
        }
    }

    /// Whether another attempt (of an idempotent request) may succeed where this one failed:
    /// the endpoint could not be reached or gave no response.
    pub(crate) fn is_retryable(&self) -> bool {
        match self {
            ProxyError::Connect { .. } | ProxyError::ConnectTimeout(_) => true,
            ProxyError::Upstream { source, .. } => !source.is_user(),
            ProxyError::NoEndpoint
            | ProxyError::Timeout
            | ProxyError::ClientBody(_)
            | ProxyError::Unsupported(_) => false,
        }
    }

    /// The answer the client gets.
    pub(crate) fn response(&self) -> Response<ProxyBody> {
        let (status, text) = match self {
            ProxyError::NoEndpoint => (
                StatusCode::SERVICE_UNAVAILABLE,
                "netting-proxy: no endpoint of the service is ready\n",
            ),
            ProxyError::Connect { .. } | ProxyError::ConnectTimeout(_) => (
                StatusCode::BAD_GATEWAY,
                "netting-proxy: cannot connect to the upstream\n",
            ),
            ProxyError::Upstream { .. } => (
                StatusCode::BAD_GATEWAY,
                "netting-proxy: the upstream failed before responding\n",
            ),
            ProxyError::Timeout => (
                StatusCode::GATEWAY_TIMEOUT,
                "netting-proxy: the upstream did not respond in time\n",
            ),
            ProxyError::ClientBody(_) => (
                StatusCode::BAD_REQUEST,
                "netting-proxy: the request body was cut short\n",
            ),
            ProxyError::Unsupported(_) => (
                StatusCode::NOT_IMPLEMENTED,
                "netting-proxy: this kind of request is not proxied\n",
            ),
        };
        local_response(status, text)
    }
}

/// A response made by the proxy itself.
pub(crate) fn local_response(status: StatusCode, text: &'static str) -> Response<ProxyBody> {
    let mut response = Response::new(ProxyBody::Full(Some(Bytes::from_static(text.as_bytes()))));
    *response.status_mut() = status;
    response.headers_mut().insert(
        CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    response
}
