//! A tower layer for the tonic server that counts and times gRPC calls by method and status.
//!
//! A call is recorded once, when its outcome is known: at the trailers (or the end) of the
//! response body, or when the response is dropped before that. The status code comes from, in
//! order: the `grpc-status` trailer; the `grpc-status` header of a trailers-only response
//! (tonic answers errors of unary calls that way); the HTTP status of a response that is not
//! gRPC at all; `OK` for a body that ends without a status. A call whose response never
//! started or ended is recorded as `CANCELLED` (the client went away or the connection broke).

use std::collections::BTreeSet;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Instant;

use http::{HeaderMap, Request, Response, StatusCode};
use hyper::body::{Body, Frame, SizeHint};
use metrics::{counter, histogram};
use tower::{Layer, Service};

use super::recorder::{GRPC_REQUEST_DURATION, GRPC_REQUESTS};

/// Every method Netting's gRPC servers serve, as `package.Service/Method`. A test checks it
/// against the `.proto` files; a path not in the list is labelled `unknown`, so clients cannot
/// create label values.
pub const NETTING_GRPC_METHODS: &[&str] = &[
    "netting.catalog.v1.Catalog/Register",
    "netting.catalog.v1.Catalog/Deregister",
    "netting.catalog.v1.Catalog/GetService",
    "netting.catalog.v1.Catalog/ListServices",
    "netting.catalog.v1.Cluster/Status",
    "netting.catalog.v1.Cluster/Join",
    "netting.catalog.v1.Cluster/RemoveMember",
    "netting.catalog.v1.Cluster/ReadIndex",
    "netting.raft.v1.Raft/AppendEntries",
    "netting.raft.v1.Raft/Vote",
    "netting.raft.v1.Raft/InstallSnapshot",
    "netting.raft.v1.Raft/LeaderLiveness",
    "netting.raft.v1.Raft/PreVote",
    "netting.discovery.v1.Discovery/Stream",
    "netting.discovery.v1.DiscoveryAdmin/ListSessions",
    "netting.discovery.v1.DiscoveryAdmin/SidecarConfig",
];

/// Label of a path that is not a known method.
const UNKNOWN_METHOD: &str = "unknown";

/// Layer producing [`GrpcMetrics`]; add it with `Server::builder().layer(...)`.
#[derive(Debug, Clone)]
pub struct GrpcMetricsLayer {
    methods: Arc<BTreeSet<&'static str>>,
}

impl GrpcMetricsLayer {
    /// Records the methods of [`NETTING_GRPC_METHODS`].
    pub fn new() -> Self {
        Self::with_methods(NETTING_GRPC_METHODS.iter().copied())
    }

    /// Records the given `package.Service/Method` names; every other path as `unknown`.
    pub fn with_methods(methods: impl IntoIterator<Item = &'static str>) -> Self {
        Self {
            methods: Arc::new(methods.into_iter().collect()),
        }
    }
}

impl Default for GrpcMetricsLayer {
    fn default() -> Self {
        Self::new()
    }
}

impl<S> Layer<S> for GrpcMetricsLayer {
    type Service = GrpcMetrics<S>;

    fn layer(&self, inner: S) -> Self::Service {
        GrpcMetrics {
            inner,
            methods: Arc::clone(&self.methods),
        }
    }
}

/// Service recording `netting_grpc_requests_total` and `netting_grpc_request_duration_seconds`
/// around the gRPC service it wraps.
#[derive(Debug, Clone)]
pub struct GrpcMetrics<S> {
    inner: S,
    methods: Arc<BTreeSet<&'static str>>,
}

impl<S> GrpcMetrics<S> {
    /// The bounded label of a request path `/package.Service/Method`.
    fn method_label(&self, path: &str) -> &'static str {
        path.strip_prefix('/')
            .and_then(|method| self.methods.get(method))
            .copied()
            .unwrap_or(UNKNOWN_METHOD)
    }
}

impl<S, ReqBody, ResBody> Service<Request<ReqBody>> for GrpcMetrics<S>
where
    S: Service<Request<ReqBody>, Response = Response<ResBody>>,
    S::Future: Send + 'static,
    ResBody: Body + Unpin,
{
    type Response = Response<RecordedBody<ResBody>>;
    type Error = S::Error;
    type Future = Pin<Box<dyn Future<Output = Result<Self::Response, Self::Error>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: Request<ReqBody>) -> Self::Future {
        // Created before the call so that a call dropped while in the handler still counts.
        let mut record = CallRecord::start(self.method_label(request.uri().path()));
        let response = self.inner.call(request);
        Box::pin(async move {
            match response.await {
                Ok(response) => {
                    record.response_code = response_code(response.status(), response.headers());
                    Ok(response.map(|inner| RecordedBody { inner, record }))
                }
                Err(error) => {
                    // tonic's router never fails; a service that does resets the stream.
                    record.finish("UNKNOWN");
                    Err(error)
                }
            }
        })
    }
}

/// A response body that records its call when it ends or is dropped.
#[derive(Debug)]
pub struct RecordedBody<B> {
    inner: B,
    record: CallRecord,
}

impl<B: Body + Unpin> Body for RecordedBody<B> {
    type Data = B::Data;
    type Error = B::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<B::Data>, B::Error>>> {
        let this = self.get_mut();
        let polled = Pin::new(&mut this.inner).poll_frame(cx);
        match &polled {
            Poll::Ready(Some(Ok(frame))) => {
                if let Some(code) = frame.trailers_ref().and_then(grpc_status) {
                    this.record.finish(code);
                }
            }
            // The stream is reset; the client sees an error we cannot name more precisely.
            Poll::Ready(Some(Err(_))) => this.record.finish("UNKNOWN"),
            Poll::Ready(None) => {
                let code = this.record.response_code.unwrap_or("OK");
                this.record.finish(code);
            }
            Poll::Pending => {}
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

/// One call's method and start time, recorded exactly once.
#[derive(Debug)]
struct CallRecord {
    method: &'static str,
    start: Instant,
    /// The code the response headers imply, if any; see the module documentation.
    response_code: Option<&'static str>,
    finished: bool,
}

impl CallRecord {
    fn start(method: &'static str) -> Self {
        Self {
            method,
            start: Instant::now(),
            response_code: None,
            finished: false,
        }
    }

    fn finish(&mut self, code: &'static str) {
        if self.finished {
            return;
        }
        self.finished = true;
        counter!(GRPC_REQUESTS, "method" => self.method, "code" => code).increment(1);
        histogram!(GRPC_REQUEST_DURATION, "method" => self.method)
            .record(self.start.elapsed().as_secs_f64());
    }
}

impl Drop for CallRecord {
    fn drop(&mut self) {
        // A trailers-only response has an empty body that hyper never polls: its code is known
        // from the headers. Without one, the call was abandoned midway.
        let code = self.response_code.unwrap_or("CANCELLED");
        self.finish(code);
    }
}

/// The code a response's headers imply: `grpc-status` if present (trailers-only), else the
/// gRPC mapping of a non-200 HTTP status, else nothing yet (it comes in the trailers).
fn response_code(status: StatusCode, headers: &HeaderMap) -> Option<&'static str> {
    if let Some(code) = grpc_status(headers) {
        return Some(code);
    }
    if status == StatusCode::OK {
        return None;
    }
    // The mapping of gRPC's "HTTP to gRPC Status Code Mapping" document.
    Some(match status {
        StatusCode::BAD_REQUEST => "INTERNAL",
        StatusCode::UNAUTHORIZED => "UNAUTHENTICATED",
        StatusCode::FORBIDDEN => "PERMISSION_DENIED",
        StatusCode::NOT_FOUND => "UNIMPLEMENTED",
        StatusCode::TOO_MANY_REQUESTS
        | StatusCode::BAD_GATEWAY
        | StatusCode::SERVICE_UNAVAILABLE
        | StatusCode::GATEWAY_TIMEOUT => "UNAVAILABLE",
        _ => "UNKNOWN",
    })
}

/// The name of the `grpc-status` in `headers`; a value that is not a known code is `UNKNOWN`.
fn grpc_status(headers: &HeaderMap) -> Option<&'static str> {
    let value = headers.get("grpc-status")?;
    let code = value
        .to_str()
        .ok()
        .and_then(|text| text.trim().parse::<u8>().ok());
    Some(code.map_or("UNKNOWN", code_name))
}

/// gRPC status code names, as in the gRPC specification.
fn code_name(code: u8) -> &'static str {
    match code {
        0 => "OK",
        1 => "CANCELLED",
        2 => "UNKNOWN",
        3 => "INVALID_ARGUMENT",
        4 => "DEADLINE_EXCEEDED",
        5 => "NOT_FOUND",
        6 => "ALREADY_EXISTS",
        7 => "PERMISSION_DENIED",
        8 => "RESOURCE_EXHAUSTED",
        9 => "FAILED_PRECONDITION",
        10 => "ABORTED",
        11 => "OUT_OF_RANGE",
        12 => "UNIMPLEMENTED",
        13 => "INTERNAL",
        14 => "UNAVAILABLE",
        15 => "DATA_LOSS",
        16 => "UNAUTHENTICATED",
        _ => "UNKNOWN",
    }
}
