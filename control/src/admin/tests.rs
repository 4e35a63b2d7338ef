//! Tests of the admin server through a real socket, of the gRPC layer, and of the rendered
//! metrics as a whole (including `promtool check metrics`).

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::BTreeMap;
use std::convert::Infallible;
use std::io::Write;
use std::net::SocketAddr;
use std::process::{Command, Stdio};
use std::sync::Arc;

use actix::{Actor, ActorContext, Handler, Recipient, ResponseFuture};
use bytes::Bytes;
use http::{HeaderMap, HeaderValue, Method, Request, Response, StatusCode};
use http_body_util::{BodyExt, Empty, Full};
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use metrics_exporter_prometheus::PrometheusRecorder;
use netting_raft::CatalogHandle;
use openraft::ServerState;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::oneshot;
use tokio::task::JoinHandle;
use tower::{Layer, Service, ServiceExt, service_fn};

use super::probe::fake::ScriptedRaft;
use super::*;
use crate::actors::session_messages::ListSessions;
use crate::actors::session_messages::SessionInfo;
use crate::discovery::hello::Subscription;
use support::{follower, leader, log_id, recorder, sample_value};

pub(crate) mod support {
    use std::collections::{BTreeMap, BTreeSet};
    use std::sync::Arc;

    use metrics_exporter_prometheus::PrometheusRecorder;
    use netting_raft::types::{LogId, RaftMetrics, StoredMembership};
    use openraft::{BasicNode, CommittedLeaderId, Membership, ServerState, Vote};

    /// A log id written by the leader of `term` (node 1).
    pub(crate) fn log_id(term: u64, index: u64) -> LogId {
        LogId::new(CommittedLeaderId::new(term, 1), index)
    }

    /// Voters 1, 2, 3 and learner 4, each at `10.0.0.<id>:7000`.
    fn membership() -> Arc<StoredMembership> {
        let nodes: BTreeMap<u64, BasicNode> = (1..=4)
            .map(|id| (id, BasicNode::new(format!("10.0.0.{id}:7000"))))
            .collect();
        let voters: BTreeSet<u64> = [1, 2, 3].into();
        Arc::new(StoredMembership::new(
            Some(log_id(1, 0)),
            Membership::new(vec![voters], nodes),
        ))
    }

    /// Follower `id` of `leader` in `term`, whose log ends at its last applied entry.
    pub(crate) fn follower(
        id: u64,
        leader: u64,
        term: u64,
        last_applied: Option<LogId>,
    ) -> RaftMetrics {
        let mut m = RaftMetrics::new_initial(id);
        m.state = ServerState::Follower;
        m.current_term = term;
        m.vote = Vote::new_committed(term, leader);
        m.current_leader = Some(leader);
        m.last_log_index = last_applied.as_ref().map(|l| l.index);
        m.last_applied = last_applied;
        m.membership_config = membership();
        m
    }

    /// Leader `id` in `term` with `last_log_index`; follower 2 matched two entries behind,
    /// follower 3 nothing yet.
    pub(crate) fn leader(
        id: u64,
        term: u64,
        last_applied: Option<LogId>,
        last_log_index: u64,
    ) -> RaftMetrics {
        let mut m = follower(id, id, term, last_applied);
        m.state = ServerState::Leader;
        m.last_log_index = Some(last_log_index);
        m.millis_since_quorum_ack = Some(12);
        m.replication = Some(
            [
                (id, Some(log_id(term, last_log_index))),
                (2, Some(log_id(term, last_log_index - 2))),
                (3, None),
            ]
            .into_iter()
            .collect(),
        );
        m
    }

    /// A recorder configured like the installed one, for `metrics::with_local_recorder`.
    pub(crate) fn recorder() -> PrometheusRecorder {
        crate::admin::prometheus_builder().unwrap().build_recorder()
    }

    /// The value of the sample line that starts with `series ` (name plus exact labels).
    pub(crate) fn sample_value(text: &str, series: &str) -> Option<f64> {
        text.lines()
            .filter(|line| !line.starts_with('#'))
            .find_map(|line| {
                line.strip_prefix(series)?
                    .strip_prefix(' ')?
                    .trim()
                    .parse()
                    .ok()
            })
    }
}

// ---- the admin server over a real socket ----

struct RunningServer {
    addr: SocketAddr,
    stop: Option<oneshot::Sender<()>>,
    task: JoinHandle<()>,
    raft: Arc<ScriptedRaft>,
    /// Kept alive because the handle in the state renders what it holds.
    _recorder: PrometheusRecorder,
}

impl RunningServer {
    async fn start(raft: ScriptedRaft) -> Self {
        Self::start_with(raft, None).await
    }

    /// A server whose `/debug/sessions` asks `sessions`, when given.
    async fn start_with(raft: ScriptedRaft, sessions: Option<Recipient<ListSessions>>) -> Self {
        let recorder = recorder();
        metrics::with_local_recorder(&recorder, || {
            describe_metrics();
            metrics::counter!("netting_grpc_requests_total", "method" => "unknown", "code" => "OK")
                .increment(1);
        });
        let raft = Arc::new(raft);
        let mut state = AdminState::new(
            Arc::clone(&raft),
            CatalogHandle::default(),
            recorder.handle(),
        );
        if let Some(sessions) = sessions {
            state = state.with_sessions(sessions);
        }
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (stop, stopped) = oneshot::channel::<()>();
        let task = tokio::spawn(serve(listener, state, async {
            let _ = stopped.await;
        }));
        Self {
            addr,
            stop: Some(stop),
            task,
            raft,
            _recorder: recorder,
        }
    }

    async fn request(&self, method: Method, path: &str) -> (StatusCode, HeaderMap, String) {
        let client = Client::builder(TokioExecutor::new()).build_http::<Empty<Bytes>>();
        let request = Request::builder()
            .method(method)
            .uri(format!("http://{}{path}", self.addr))
            .body(Empty::new())
            .unwrap();
        let response = client.request(request).await.unwrap();
        let status = response.status();
        let headers = response.headers().clone();
        let body = response.into_body().collect().await.unwrap().to_bytes();
        (status, headers, String::from_utf8(body.to_vec()).unwrap())
    }

    async fn stop(mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        self.task.await.unwrap();
    }
}

fn ready_follower() -> ScriptedRaft {
    ScriptedRaft::new(follower(2, 1, 5, Some(log_id(5, 40))), Some(40))
}

/// `/healthz` answers 200 "ok" while the server runs.
#[tokio::test]
async fn healthz_is_ok() {
    let server = RunningServer::start(ready_follower()).await;
    let (status, _, body) = server.request(Method::GET, "/healthz").await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(body.trim(), "ok");
    server.stop().await;
}

/// `/metrics` is Prometheus text 0.0.4 with the HELP lines of described metrics.
#[tokio::test]
async fn metrics_is_prometheus_text() {
    let server = RunningServer::start(ready_follower()).await;
    let (status, headers, body) = server.request(Method::GET, "/metrics").await;
    assert_eq!(status, StatusCode::OK);
    let content_type = headers
        .get(http::header::CONTENT_TYPE)
        .unwrap()
        .to_str()
        .unwrap();
    assert!(
        content_type.starts_with("text/plain; version=0.0.4"),
        "{content_type}"
    );
    assert!(
        body.contains("# HELP netting_grpc_requests_total "),
        "{body}"
    );
    assert!(
        body.contains("netting_grpc_requests_total{method=\"unknown\",code=\"OK\"} 1"),
        "{body}"
    );
    server.stop().await;
}

/// Unknown paths are 404 and known paths with another method are 405 with `Allow: GET`.
#[tokio::test]
async fn unknown_path_is_404_and_wrong_method_is_405() {
    let server = RunningServer::start(ready_follower()).await;
    for path in ["/", "/metrics/", "/debug", "/nope?x=1"] {
        let (status, _, _) = server.request(Method::GET, path).await;
        assert_eq!(status, StatusCode::NOT_FOUND, "{path}");
    }
    for (method, path) in [
        (Method::POST, "/metrics"),
        (Method::PUT, "/healthz"),
        (Method::DELETE, "/readyz"),
        (Method::HEAD, "/debug/raft"),
        (Method::POST, "/debug/sessions"),
    ] {
        let (status, headers, _) = server.request(method.clone(), path).await;
        assert_eq!(status, StatusCode::METHOD_NOT_ALLOWED, "{method} {path}");
        assert_eq!(
            headers.get(http::header::ALLOW),
            Some(&HeaderValue::from_static("GET"))
        );
    }
    server.stop().await;
}

/// Garbage on the wire gets a 400 (or a close) and the server keeps serving others.
#[tokio::test]
async fn malformed_request_does_not_stop_the_server() {
    let server = RunningServer::start(ready_follower()).await;
    let mut raw = TcpStream::connect(server.addr).await.unwrap();
    raw.write_all(b"\x00\x01 NOT HTTP \xff\r\n\r\n")
        .await
        .unwrap();
    let mut answer = Vec::new();
    let _ = raw.read_to_end(&mut answer).await;
    let answer = String::from_utf8_lossy(&answer);
    assert!(
        answer.is_empty() || answer.starts_with("HTTP/1.1 400"),
        "{answer}"
    );
    let (status, _, _) = server.request(Method::GET, "/healthz").await;
    assert_eq!(status, StatusCode::OK);
    server.stop().await;
}

/// `/readyz` is 200 for a caught-up replica and 503 with a JSON reason once no leader is known.
#[tokio::test]
async fn readyz_follows_raft_state() {
    let server = RunningServer::start(ready_follower()).await;
    let (status, _, _) = server.request(Method::GET, "/readyz").await;
    assert_eq!(status, StatusCode::OK);

    server.raft.metrics.send_modify(|m| {
        m.current_leader = None;
        m.state = ServerState::Candidate;
    });
    let (status, headers, body) = server.request(Method::GET, "/readyz").await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(
        headers.get(http::header::CONTENT_TYPE),
        Some(&HeaderValue::from_static("application/json"))
    );
    let json: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(json["ready"], false);
    assert_eq!(json["reason"], "no_leader");
    assert!(
        json["message"].as_str().unwrap().contains("no leader"),
        "{json}"
    );
    server.stop().await;
}

/// `/readyz` is 503 `raft_stopped` when the Raft core cannot tell its commit index.
#[tokio::test]
async fn readyz_reports_stopped_raft_core() {
    let raft = ready_follower();
    *raft.committed.lock().unwrap() = None;
    let server = RunningServer::start(raft).await;
    let (status, _, body) = server.request(Method::GET, "/readyz").await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
    let json: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(json["reason"], "raft_stopped");
    server.stop().await;
}

/// `/debug/raft` is JSON with the node, its leader, membership addresses and, on the leader,
/// replication progress.
#[tokio::test]
async fn debug_raft_is_json_view() {
    let server = RunningServer::start(ScriptedRaft::new(
        leader(1, 5, Some(log_id(5, 44)), 45),
        Some(44),
    ))
    .await;
    let (status, _, body) = server.request(Method::GET, "/debug/raft").await;
    assert_eq!(status, StatusCode::OK);
    let json: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(json["node_id"], 1);
    assert_eq!(json["state"], "leader");
    assert_eq!(json["leader"], 1);
    assert_eq!(json["term"], 5);
    assert_eq!(json["last_log_index"], 45);
    assert_eq!(json["committed_index"], 44);
    assert_eq!(json["last_applied"]["index"], 44);
    assert_eq!(json["membership"]["voters"][1]["addr"], "10.0.0.2:7000");
    assert_eq!(json["membership"]["learners"][0]["id"], 4);
    assert_eq!(json["replication"]["2"]["lag_entries"], 2);
    assert_eq!(json["millis_since_quorum_ack"], 12);
    server.stop().await;
}

/// A config pusher stand-in that answers `ListSessions` with fixed sessions, or never.
struct FixedSessions {
    sessions: Vec<SessionInfo>,
    hang: bool,
}

impl Actor for FixedSessions {
    type Context = actix::Context<Self>;
}

impl Handler<ListSessions> for FixedSessions {
    type Result = ResponseFuture<Vec<SessionInfo>>;

    fn handle(&mut self, _: ListSessions, _: &mut Self::Context) -> Self::Result {
        let sessions = self.sessions.clone();
        let hang = self.hang;
        Box::pin(async move {
            if hang {
                std::future::pending::<()>().await;
            }
            sessions
        })
    }
}

/// Stops the stand-in, as a pusher that has shut down.
#[derive(actix::Message)]
#[rtype(result = "()")]
struct Stop;

impl Handler<Stop> for FixedSessions {
    type Result = ();

    fn handle(&mut self, _: Stop, ctx: &mut Self::Context) {
        ctx.stop();
    }
}

fn session_info(namespace: &str, pod: &str, acked: Option<u64>, sent: Option<u64>) -> SessionInfo {
    SessionInfo {
        pod: pod.to_owned(),
        namespace: namespace.to_owned(),
        proxy_version: "1.2.0".to_owned(),
        acked_version: acked,
        sent_version: sent,
        connected_for: std::time::Duration::from_millis(1_500),
        nacks: 1,
        subscription: Arc::new(Subscription::default()),
    }
}

/// `/debug/sessions` is JSON with the node id, the catalog version and every session of the
/// pusher, sorted by namespace and pod, `null` where nothing was acknowledged or is in flight.
#[actix::test]
async fn debug_sessions_lists_the_pushers_sessions() {
    let pusher = FixedSessions {
        sessions: vec![
            session_info("shop", "web-0", Some(40), None),
            session_info("default", "api-0", None, Some(40)),
        ],
        hang: false,
    }
    .start();
    let server = RunningServer::start_with(ready_follower(), Some(pusher.recipient())).await;
    let (status, headers, body) = server.request(Method::GET, "/debug/sessions").await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(
        headers.get(http::header::CONTENT_TYPE),
        Some(&HeaderValue::from_static("application/json"))
    );
    let json: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(json["node_id"], 2);
    assert_eq!(json["catalog_version"], 0);
    assert_eq!(
        json["sessions"],
        serde_json::json!([
            {
                "pod": "api-0", "namespace": "default", "proxy_version": "1.2.0",
                "acked_version": null, "sent_version": 40, "connected_for_ms": 1500, "nacks": 1,
            },
            {
                "pod": "web-0", "namespace": "shop", "proxy_version": "1.2.0",
                "acked_version": 40, "sent_version": null, "connected_for_ms": 1500, "nacks": 1,
            },
        ])
    );
    server.stop().await;
}

/// Without a sessions source `/debug/sessions` is 404 with a reason, not an empty list that would
/// claim no sidecars are connected.
#[tokio::test]
async fn debug_sessions_without_a_source_is_404() {
    let server = RunningServer::start(ready_follower()).await;
    let (status, _, body) = server.request(Method::GET, "/debug/sessions").await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert!(body.contains("no discovery service"), "{body}");
    server.stop().await;
}

/// A pusher that does not answer gives a 503 within the bound, and a stopped one a 503 at once.
#[actix::test]
async fn debug_sessions_is_503_when_the_pusher_cannot_answer() {
    let stuck = FixedSessions {
        sessions: Vec::new(),
        hang: true,
    }
    .start();
    let server = RunningServer::start_with(ready_follower(), Some(stuck.recipient())).await;
    let (status, _, body) = server.request(Method::GET, "/debug/sessions").await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
    assert!(body.contains("did not answer in time"), "{body}");
    server.stop().await;

    let stopped = FixedSessions {
        sessions: Vec::new(),
        hang: false,
    }
    .start();
    let recipient = stopped.clone().recipient();
    stopped.send(Stop).await.unwrap();
    let server = RunningServer::start_with(ready_follower(), Some(recipient)).await;
    let (status, _, body) = server.request(Method::GET, "/debug/sessions").await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
    assert!(body.contains("stopped"), "{body}");
    server.stop().await;
}

/// Shutdown returns promptly even with an idle keep-alive connection open.
#[tokio::test]
async fn shutdown_drains_idle_connections() {
    let server = RunningServer::start(ready_follower()).await;
    let mut idle = TcpStream::connect(server.addr).await.unwrap();
    idle.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
        .await
        .unwrap();
    let mut buf = [0_u8; 256];
    let n = idle.read(&mut buf).await.unwrap();
    assert!(buf[..n].starts_with(b"HTTP/1.1 200"));
    tokio::time::timeout(std::time::Duration::from_secs(3), server.stop())
        .await
        .expect("server did not stop while a keep-alive connection was idle");
}

// ---- the gRPC layer ----

/// A gRPC-like inner service: the path decides the response shape.
async fn fake_grpc(
    request: Request<Full<Bytes>>,
) -> Result<Response<http_body_util::combinators::UnsyncBoxBody<Bytes, Infallible>>, Infallible> {
    {
        let path = request.uri().path().to_owned();
        let response = if path.ends_with("/Register") {
            // A normal unary answer: a message, then `grpc-status: 0` in the trailers.
            let mut trailers = HeaderMap::new();
            trailers.insert("grpc-status", HeaderValue::from_static("0"));
            let body = http_body_util::StreamBody::new(futures::stream::iter([
                Ok::<_, Infallible>(hyper::body::Frame::data(Bytes::from_static(b"\0\0\0\0\0"))),
                Ok(hyper::body::Frame::trailers(trailers)),
            ]));
            Response::new(BodyExt::boxed_unsync(body))
        } else if path.ends_with("/GetService") {
            // Trailers-only error, as tonic answers a failed unary call.
            let mut response = Response::new(BodyExt::boxed_unsync(Empty::new()));
            response
                .headers_mut()
                .insert("grpc-status", HeaderValue::from_static("3"));
            response
        } else {
            // Unknown method: tonic's router answers UNIMPLEMENTED, trailers-only.
            let mut response = Response::new(BodyExt::boxed_unsync(Empty::new()));
            response
                .headers_mut()
                .insert("grpc-status", HeaderValue::from_static("12"));
            response
        };
        Ok(response)
    }
}

/// Sends one request through the layer and consumes the response like hyper would.
async fn call_layer(path: &str) {
    let mut service = GrpcMetricsLayer::new().layer(service_fn(fake_grpc));
    let request = Request::builder()
        .uri(path)
        .body(Full::new(Bytes::new()))
        .unwrap();
    let response = service.ready().await.unwrap().call(request).await.unwrap();
    let body = response.into_body();
    // hyper does not poll a body that is already at its end (trailers-only responses).
    if !hyper::body::Body::is_end_stream(&body) {
        body.collect().await.unwrap();
    }
}

/// The layer labels calls by `package.Service/Method` and takes the code from the trailers
/// or, for trailers-only responses, from the headers.
#[test]
fn grpc_layer_records_method_and_code() {
    let recorder = recorder();
    metrics::with_local_recorder(&recorder, || {
        futures::executor::block_on(async {
            call_layer("/netting.catalog.v1.Catalog/Register").await;
            call_layer("/netting.catalog.v1.Catalog/Register").await;
            call_layer("/netting.catalog.v1.Catalog/GetService").await;
        });
    });
    let text = recorder.handle().render();
    assert_eq!(
        sample_value(
            &text,
            "netting_grpc_requests_total{method=\"netting.catalog.v1.Catalog/Register\",code=\"OK\"}"
        ),
        Some(2.0),
        "{text}"
    );
    assert_eq!(
        sample_value(
            &text,
            "netting_grpc_requests_total{method=\"netting.catalog.v1.Catalog/GetService\",code=\"INVALID_ARGUMENT\"}"
        ),
        Some(1.0),
        "{text}"
    );
    assert_eq!(
        sample_value(
            &text,
            "netting_grpc_request_duration_seconds_count{method=\"netting.catalog.v1.Catalog/Register\"}"
        ),
        Some(2.0),
        "{text}"
    );
    assert!(
        text.contains("netting_grpc_request_duration_seconds_bucket{method=\"netting.catalog.v1.Catalog/Register\",le=\"0.0005\"}"),
        "histogram buckets missing: {text}"
    );
}

/// Paths that are not known methods, however many, share the one label value `unknown`.
#[test]
fn grpc_layer_bounds_unknown_paths() {
    let recorder = recorder();
    metrics::with_local_recorder(&recorder, || {
        futures::executor::block_on(async {
            for path in [
                "/netting.catalog.v1.Catalog/Nope",
                "/x.Y/Z",
                "/",
                "/netting.catalog.v1.Catalog",
            ] {
                call_layer(path).await;
            }
        });
    });
    let text = recorder.handle().render();
    assert_eq!(
        sample_value(
            &text,
            "netting_grpc_requests_total{method=\"unknown\",code=\"UNIMPLEMENTED\"}"
        ),
        Some(4.0),
        "{text}"
    );
    assert_eq!(
        text.matches("netting_grpc_requests_total{").count(),
        1,
        "{text}"
    );
}

/// A call whose response is dropped before its status arrives is recorded once, as CANCELLED.
#[test]
fn grpc_layer_records_abandoned_call_as_cancelled() {
    let recorder = recorder();
    metrics::with_local_recorder(&recorder, || {
        futures::executor::block_on(async {
            let mut service = GrpcMetricsLayer::new().layer(service_fn(fake_grpc));
            let request = Request::builder()
                .uri("/netting.catalog.v1.Catalog/Register")
                .body(Full::new(Bytes::new()))
                .unwrap();
            let response = service.ready().await.unwrap().call(request).await.unwrap();
            drop(response);
        });
    });
    let text = recorder.handle().render();
    assert_eq!(
        sample_value(
            &text,
            "netting_grpc_requests_total{method=\"netting.catalog.v1.Catalog/Register\",code=\"CANCELLED\"}"
        ),
        Some(1.0),
        "{text}"
    );
    assert_eq!(
        text.matches("netting_grpc_requests_total{").count(),
        1,
        "{text}"
    );
}

/// A Cluster service whose answers the tonic end-to-end test below relies on.
#[derive(Debug)]
struct ScriptedCluster;

#[tonic::async_trait]
impl netting_proto::catalog::v1::cluster_server::Cluster for ScriptedCluster {
    async fn status(
        &self,
        _: tonic::Request<netting_proto::catalog::v1::StatusRequest>,
    ) -> Result<tonic::Response<netting_proto::catalog::v1::StatusResponse>, tonic::Status> {
        Ok(tonic::Response::new(Default::default()))
    }

    async fn join(
        &self,
        _: tonic::Request<netting_proto::catalog::v1::JoinRequest>,
    ) -> Result<tonic::Response<netting_proto::catalog::v1::JoinResponse>, tonic::Status> {
        Err(tonic::Status::invalid_argument("scripted"))
    }

    async fn remove_member(
        &self,
        _: tonic::Request<netting_proto::catalog::v1::RemoveMemberRequest>,
    ) -> Result<tonic::Response<netting_proto::catalog::v1::RemoveMemberResponse>, tonic::Status>
    {
        Err(tonic::Status::failed_precondition("scripted"))
    }

    async fn read_index(
        &self,
        _: tonic::Request<netting_proto::catalog::v1::ReadIndexRequest>,
    ) -> Result<tonic::Response<netting_proto::catalog::v1::ReadIndexResponse>, tonic::Status> {
        Err(tonic::Status::unavailable("scripted"))
    }
}

/// Through a real tonic server and client over HTTP/2, the layer records OK from trailers,
/// errors from trailers-only responses, and UNIMPLEMENTED for a service that is not served.
#[test]
fn grpc_layer_records_real_tonic_calls() {
    use netting_proto::catalog::v1::catalog_client::CatalogClient;
    use netting_proto::catalog::v1::cluster_client::ClusterClient;
    use netting_proto::catalog::v1::cluster_server::ClusterServer;
    use netting_proto::catalog::v1::{JoinRequest, RegisterRequest, StatusRequest};

    let recorder = recorder();
    // A current-thread runtime inside the local recorder: the server's tasks run on this
    // thread, where the local recorder is in effect.
    metrics::with_local_recorder(&recorder, || {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        runtime.block_on(async {
            let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
            let addr = listener.local_addr().unwrap();
            let (stop, stopped) = oneshot::channel::<()>();
            let server = tokio::spawn(
                tonic::transport::Server::builder()
                    .layer(GrpcMetricsLayer::new())
                    .add_service(ClusterServer::new(ScriptedCluster))
                    .serve_with_incoming_shutdown(
                        tokio_stream::wrappers::TcpListenerStream::new(listener),
                        async {
                            let _ = stopped.await;
                        },
                    ),
            );
            let channel = tonic::transport::Endpoint::from_shared(format!("http://{addr}"))
                .unwrap()
                .connect()
                .await
                .unwrap();
            let mut cluster = ClusterClient::new(channel.clone());
            cluster.status(StatusRequest::default()).await.unwrap();
            let join = cluster.join(JoinRequest::default()).await.unwrap_err();
            assert_eq!(join.code(), tonic::Code::InvalidArgument);
            let register = CatalogClient::new(channel.clone())
                .register(RegisterRequest::default())
                .await
                .unwrap_err();
            assert_eq!(register.code(), tonic::Code::Unimplemented);
            // Closing the connection and the server drops every response body, so every call
            // is recorded by now.
            drop((cluster, channel));
            let _ = stop.send(());
            server.await.unwrap().unwrap();
        });
    });
    let text = recorder.handle().render();
    for (series, value) in [
        (
            "netting_grpc_requests_total{method=\"netting.catalog.v1.Cluster/Status\",code=\"OK\"}",
            1.0,
        ),
        (
            "netting_grpc_requests_total{method=\"netting.catalog.v1.Cluster/Join\",code=\"INVALID_ARGUMENT\"}",
            1.0,
        ),
        (
            "netting_grpc_requests_total{method=\"netting.catalog.v1.Catalog/Register\",code=\"UNIMPLEMENTED\"}",
            1.0,
        ),
        (
            "netting_grpc_request_duration_seconds_count{method=\"netting.catalog.v1.Cluster/Status\"}",
            1.0,
        ),
    ] {
        assert_eq!(sample_value(&text, series), Some(value), "{series}\n{text}");
    }
    assert_eq!(
        text.matches("netting_grpc_requests_total{").count(),
        3,
        "{text}"
    );
}

/// The method list equals the rpcs declared in the workspace's `.proto` files, so a new rpc
/// cannot silently be labelled `unknown`.
#[test]
fn grpc_method_list_matches_protos() {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../proto/proto");
    let mut declared = std::collections::BTreeSet::new();
    let mut pending = vec![root];
    while let Some(dir) = pending.pop() {
        for entry in std::fs::read_dir(&dir).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                pending.push(path);
            } else if path.extension().is_some_and(|e| e == "proto") {
                declared.extend(rpcs_of(&std::fs::read_to_string(&path).unwrap()));
            }
        }
    }
    let listed: std::collections::BTreeSet<String> = NETTING_GRPC_METHODS
        .iter()
        .map(|m| (*m).to_owned())
        .collect();
    assert_eq!(listed, declared);
}

/// `package.Service/Method` of every rpc in a `.proto` text (one declaration per line, as ours).
fn rpcs_of(proto: &str) -> Vec<String> {
    let mut package = String::new();
    let mut service = String::new();
    let mut rpcs = Vec::new();
    for line in proto.lines().map(str::trim) {
        if let Some(rest) = line.strip_prefix("package ") {
            package = rest.trim_end_matches(';').trim().to_owned();
        } else if let Some(rest) = line.strip_prefix("service ") {
            service = rest.trim_end_matches('{').trim().to_owned();
        } else if let Some(rest) = line.strip_prefix("rpc ") {
            let name = rest.split('(').next().unwrap().trim();
            rpcs.push(format!("{package}.{service}/{name}"));
        }
    }
    rpcs
}

// ---- all metrics together ----

/// Touches every Netting metric through the code that records it in production.
fn render_all_metrics() -> String {
    let recorder = recorder();
    metrics::with_local_recorder(&recorder, || {
        describe_metrics();
        let mut exporter = RaftMetricsExporter::new();
        exporter.observe_raft(&leader(1, 5, Some(log_id(5, 44)), 45));
        exporter.observe_committed(Some(44));
        exporter.observe_applied(netting_raft::AppliedState {
            applied_index: 44,
            catalog_version: 43,
        });
        exporter.observe_catalog(CatalogCounts {
            services: 2,
            endpoints: 5,
            tombstones: 1,
        });
        futures::executor::block_on(async {
            call_layer("/netting.catalog.v1.Catalog/Register").await;
            call_layer("/netting.catalog.v1.Catalog/GetService").await;
            call_layer("/not.a.Service/Method").await;
        });
    });
    recorder.handle().render()
}

/// Every Netting metric renders with HELP and TYPE lines, and nothing else does.
#[test]
fn every_metric_renders_with_help() {
    let text = render_all_metrics();
    let families: BTreeMap<&str, &str> = text
        .lines()
        .filter_map(|line| line.strip_prefix("# TYPE "))
        .filter_map(|rest| rest.split_once(' '))
        .collect();
    let expected = [
        ("netting_raft_term", "gauge"),
        ("netting_raft_leader_id", "gauge"),
        ("netting_raft_is_leader", "gauge"),
        ("netting_raft_last_log_index", "gauge"),
        ("netting_raft_committed_index", "gauge"),
        ("netting_raft_applied_index", "gauge"),
        ("netting_raft_leader_changes_total", "counter"),
        ("netting_raft_voters", "gauge"),
        ("netting_raft_learners", "gauge"),
        ("netting_raft_replication_lag_entries", "gauge"),
        ("netting_catalog_version", "gauge"),
        ("netting_catalog_services", "gauge"),
        ("netting_catalog_endpoints", "gauge"),
        ("netting_catalog_tombstones", "gauge"),
        ("netting_grpc_requests_total", "counter"),
        ("netting_grpc_request_duration_seconds", "histogram"),
    ];
    assert_eq!(
        families,
        expected.into_iter().collect::<BTreeMap<_, _>>(),
        "{text}"
    );
    for (name, _) in expected {
        assert!(
            text.contains(&format!("# HELP {name} ")),
            "no HELP for {name}"
        );
    }
}

/// `promtool check metrics` finds nothing to fix in the rendered metrics. Without promtool the
/// test is skipped, unless `NETTING_REQUIRE_TOOLS=1` (as in CI) makes that a failure.
#[test]
fn promtool_accepts_rendered_metrics() {
    let text = render_all_metrics();
    let child = Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn();
    let mut child = match child {
        Ok(child) => child,
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => {
            assert!(
                std::env::var("NETTING_REQUIRE_TOOLS").as_deref() != Ok("1"),
                "promtool is not on PATH and NETTING_REQUIRE_TOOLS=1 (Debian package: prometheus)"
            );
            eprintln!("skipped: promtool is not on PATH (Debian package: prometheus)");
            return;
        }
        Err(error) => panic!("could not run promtool: {error}"),
    };
    child
        .stdin
        .take()
        .unwrap()
        .write_all(text.as_bytes())
        .unwrap();
    let output = child.wait_with_output().unwrap();
    let report = format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(
        output.status.success(),
        "promtool failed: {report}\n---\n{text}"
    );
    assert!(
        report.trim().is_empty(),
        "promtool reports: {report}\n---\n{text}"
    );
}
