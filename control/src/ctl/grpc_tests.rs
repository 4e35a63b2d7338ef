//! Whole commands against fake replicas: real tonic servers on 127.0.0.1 that implement the
//! generated `Catalog`, `Cluster` and `DiscoveryAdmin` traits with scripted answers, so the
//! client's gRPC path, failover and output are exercised end to end without a Raft cluster.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use clap::Parser;
use netting_proto::catalog::v1::catalog_server::{Catalog, CatalogServer};
use netting_proto::catalog::v1::cluster_server::{Cluster, ClusterServer};
use netting_proto::catalog::v1::{
    Consistency, DeregisterRequest, Endpoint, GetServiceRequest, GetServiceResponse, JoinRequest,
    JoinResponse, ListServicesRequest, ListServicesResponse, Member, RegisterRequest,
    RemoveMemberRequest, RemoveMemberResponse, RequestId, Service, StatusRequest, StatusResponse,
    WriteResponse,
};
use netting_proto::discovery::v1 as discovery;
use netting_proto::discovery::v1::discovery_admin_server::{DiscoveryAdmin, DiscoveryAdminServer};
use serde_json::{Value, json};
use tokio::net::TcpListener;
use tokio_stream::StreamExt as _;
use tokio_stream::wrappers::TcpListenerStream;
use tonic::{Code, Request, Response, Status};

use super::{Cli, CtlError, Environment, run};
use crate::grpc::test_replica::refused_addr as refused;

/// How a fake replica answers every RPC.
#[derive(Debug, Clone, Copy)]
enum Mode {
    Answer,
    /// As a replica with no leader to forward to.
    Unavailable,
    /// Accepts the call and never answers.
    Hang,
    /// Receives the call, then its connection goes away without an answer, as when the
    /// replica is killed mid-call.
    DieMidCall,
    /// Answers every call with this error, as a replica refusing the request itself.
    Refuse(Code),
}

#[derive(Debug)]
struct FakeReplica {
    node_id: u64,
    mode: Mode,
    state: &'static str,
    applied_index: u64,
    /// The replica's own address, filled in once it listens.
    address: Mutex<String>,
    members: Mutex<Vec<Member>>,
    calls: AtomicUsize,
    registered: Mutex<Vec<RegisterRequest>>,
    deregistered: Mutex<Vec<DeregisterRequest>>,
    gets: Mutex<Vec<GetServiceRequest>>,
    /// The sidecars connected to this fake, for `DiscoveryAdmin`.
    sessions: Mutex<Vec<discovery::SessionInfo>>,
    /// A handle on every accepted connection's socket, so a handler can cut them.
    connections: Mutex<Vec<std::net::TcpStream>>,
    /// The request ids of every write received, answered or not.
    write_ids: Mutex<Vec<Option<RequestId>>>,
    /// The cluster's record of applied request ids and their versions; fakes that share it
    /// behave as replicas of one cluster.
    applied: Arc<Mutex<HashMap<(String, u64), u64>>>,
}

impl FakeReplica {
    fn new(node_id: u64, mode: Mode) -> Self {
        Self {
            node_id,
            mode,
            state: "follower",
            applied_index: 40,
            address: Mutex::new(String::new()),
            members: Mutex::new(Vec::new()),
            calls: AtomicUsize::new(0),
            registered: Mutex::new(Vec::new()),
            deregistered: Mutex::new(Vec::new()),
            gets: Mutex::new(Vec::new()),
            sessions: Mutex::new(Vec::new()),
            connections: Mutex::new(Vec::new()),
            write_ids: Mutex::new(Vec::new()),
            applied: Arc::default(),
        }
    }

    /// Receives a write: a replica about to die mid-call applies it first (at `version - 1`),
    /// one that answers applies it at `version` unless its id was applied before, which it
    /// answers as a duplicate with the first version.
    async fn write(&self, id: Option<RequestId>, version: u64) -> Result<WriteResponse, Status> {
        self.write_ids.lock().unwrap().push(id.clone());
        let key = id.map(|id| (id.client, id.sequence));
        if let (Mode::DieMidCall, Some(key)) = (self.mode, &key) {
            self.applied
                .lock()
                .unwrap()
                .insert(key.clone(), version - 1);
        }
        self.gate().await?;
        let first = key.and_then(|key| {
            let mut applied = self.applied.lock().unwrap();
            let first = applied.get(&key).copied();
            applied.entry(key).or_insert(version);
            first
        });
        Ok(WriteResponse {
            version: first.unwrap_or(version),
            leader_id: 1,
            duplicate: first.is_some(),
        })
    }

    /// Connects a sidecar of `default/<pod>` that acknowledged `acked`.
    fn connect(&self, pod: &str, acked: u64) {
        self.sessions.lock().unwrap().push(discovery::SessionInfo {
            pod: pod.into(),
            namespace: "default".into(),
            proxy_version: "0.9.1".into(),
            acked_version: acked,
            sent_version: (acked < self.applied_index).then_some(self.applied_index),
            connected_for_ms: 65_000,
            nacks: u32::from(acked < self.applied_index),
        });
    }

    fn leader(node_id: u64) -> Self {
        Self {
            state: "leader",
            applied_index: 44,
            ..Self::new(node_id, Mode::Answer)
        }
    }

    fn calls(&self) -> usize {
        self.calls.load(Ordering::SeqCst)
    }

    async fn gate(&self) -> Result<(), Status> {
        self.calls.fetch_add(1, Ordering::SeqCst);
        match self.mode {
            Mode::Answer => Ok(()),
            Mode::Unavailable => Err(Status::unavailable("no leader known")),
            Mode::Hang => std::future::pending().await,
            Mode::DieMidCall => {
                for connection in self.connections.lock().unwrap().iter() {
                    connection.shutdown(std::net::Shutdown::Both).unwrap();
                }
                std::future::pending().await
            }
            Mode::Refuse(code) => Err(Status::new(code, format!("refused with {code:?}"))),
        }
    }
}

fn service(name: &str) -> Service {
    Service {
        namespace: "shop".into(),
        name: name.into(),
        endpoints: vec![Endpoint {
            address: "10.0.0.9".into(),
            port: 8080,
            ready: true,
            modify_index: 11,
            ..Endpoint::default()
        }],
        source: "api".into(),
        create_index: 3,
        modify_index: 11,
        ..Service::default()
    }
}

#[tonic::async_trait]
impl Catalog for FakeReplica {
    async fn register(
        &self,
        request: Request<RegisterRequest>,
    ) -> Result<Response<WriteResponse>, Status> {
        let request = request.into_inner();
        let answer = self.write(request.request_id.clone(), 42).await?;
        self.registered.lock().unwrap().push(request);
        Ok(Response::new(answer))
    }

    async fn deregister(
        &self,
        request: Request<DeregisterRequest>,
    ) -> Result<Response<WriteResponse>, Status> {
        let request = request.into_inner();
        let answer = self.write(request.request_id.clone(), 43).await?;
        self.deregistered.lock().unwrap().push(request);
        Ok(Response::new(answer))
    }

    async fn get_service(
        &self,
        request: Request<GetServiceRequest>,
    ) -> Result<Response<GetServiceResponse>, Status> {
        self.gate().await?;
        let request = request.into_inner();
        self.gets.lock().unwrap().push(request.clone());
        if request.service == "missing" {
            return Err(Status::not_found("service shop/missing not found"));
        }
        Ok(Response::new(GetServiceResponse {
            service: Some(service(&request.service)),
            version: 40,
        }))
    }

    async fn list_services(
        &self,
        _: Request<ListServicesRequest>,
    ) -> Result<Response<ListServicesResponse>, Status> {
        self.gate().await?;
        Ok(Response::new(ListServicesResponse {
            services: vec![service("web"), service("api")],
            version: 40,
        }))
    }
}

#[tonic::async_trait]
impl Cluster for FakeReplica {
    async fn status(&self, _: Request<StatusRequest>) -> Result<Response<StatusResponse>, Status> {
        self.gate().await?;
        Ok(Response::new(StatusResponse {
            node_id: self.node_id,
            address: self.address.lock().unwrap().clone(),
            state: self.state.into(),
            term: 5,
            leader_id: Some(1),
            last_log_index: 45,
            committed_index: 44,
            applied_index: self.applied_index,
            catalog_version: self.applied_index,
            members: self.members.lock().unwrap().clone(),
            ..StatusResponse::default()
        }))
    }

    async fn join(&self, _: Request<JoinRequest>) -> Result<Response<JoinResponse>, Status> {
        Err(Status::unimplemented("not in this fake"))
    }

    async fn remove_member(
        &self,
        request: Request<RemoveMemberRequest>,
    ) -> Result<Response<RemoveMemberResponse>, Status> {
        self.gate().await?;
        if request.into_inner().node_id == 9 {
            return Err(Status::failed_precondition("removing 9 would lose quorum"));
        }
        Ok(Response::new(RemoveMemberResponse { voters: vec![2, 1] }))
    }

    async fn read_index(
        &self,
        _: Request<netting_proto::catalog::v1::ReadIndexRequest>,
    ) -> Result<Response<netting_proto::catalog::v1::ReadIndexResponse>, Status> {
        Err(Status::unimplemented("not in this fake"))
    }
}

#[tonic::async_trait]
impl DiscoveryAdmin for FakeReplica {
    async fn list_sessions(
        &self,
        _: Request<discovery::ListSessionsRequest>,
    ) -> Result<Response<discovery::ListSessionsResponse>, Status> {
        self.gate().await?;
        Ok(Response::new(discovery::ListSessionsResponse {
            node_id: self.node_id,
            catalog_version: self.applied_index,
            sessions: self.sessions.lock().unwrap().clone(),
        }))
    }

    async fn sidecar_config(
        &self,
        request: Request<discovery::SidecarConfigRequest>,
    ) -> Result<Response<discovery::SidecarConfigResponse>, Status> {
        self.gate().await?;
        let request = request.into_inner();
        let session = self
            .sessions
            .lock()
            .unwrap()
            .iter()
            .find(|s| s.namespace == request.namespace && s.pod == request.pod)
            .cloned()
            .ok_or_else(|| Status::not_found("no sidecar of that pod is connected here"))?;
        Ok(Response::new(discovery::SidecarConfigResponse {
            session: Some(session),
            version: self.applied_index,
            services: vec![discovery::ServiceConfig {
                namespace: "shop".into(),
                name: "web".into(),
                ports: vec![discovery::Port {
                    name: "http".into(),
                    port: 8080,
                    protocol: "http".into(),
                }],
                endpoints: vec![discovery::Endpoint {
                    address: "10.0.0.9".into(),
                    port: 8080,
                    ready: true,
                    zone: String::new(),
                }],
                policy: None,
            }],
        }))
    }
}

/// Serves `replica` on an ephemeral port and returns its `host:port`.
async fn serve(replica: &Arc<FakeReplica>) -> String {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap().to_string();
    *replica.address.lock().unwrap() = address.clone();
    let keeper = Arc::clone(replica);
    let incoming = TcpListenerStream::new(listener).map(move |accepted| {
        let stream = accepted?.into_std()?;
        keeper.connections.lock().unwrap().push(stream.try_clone()?);
        tokio::net::TcpStream::from_std(stream)
    });
    let server = tonic::transport::Server::builder()
        .add_service(CatalogServer::from_arc(Arc::clone(replica)))
        .add_service(ClusterServer::from_arc(Arc::clone(replica)))
        .add_service(DiscoveryAdminServer::from_arc(Arc::clone(replica)))
        .serve_with_incoming(incoming);
    tokio::spawn(server);
    address
}

struct FakeEnv(HashMap<String, String>);

impl Environment for FakeEnv {
    fn var(&self, name: &str) -> Option<String> {
        self.0.get(name).cloned()
    }
}

fn no_env() -> FakeEnv {
    FakeEnv(HashMap::new())
}

/// Runs `nettingctl ARGS` and returns what it printed (or its error) and its notes (stderr).
async fn ctl_noting(env: &FakeEnv, args: &[&str]) -> (Result<String, CtlError>, String) {
    let cli = Cli::try_parse_from(std::iter::once("nettingctl").chain(args.iter().copied()))
        .expect("arguments parse");
    let mut out = Vec::new();
    let mut notes = Vec::new();
    let result = run(cli, env, &mut out, &mut notes).await;
    let notes = String::from_utf8(notes).unwrap();
    (result.map(|()| String::from_utf8(out).unwrap()), notes)
}

/// Runs `nettingctl ARGS` and returns what it printed, or its error.
async fn ctl_with(env: &FakeEnv, args: &[&str]) -> Result<String, CtlError> {
    ctl_noting(env, args).await.0
}

async fn ctl(args: &[&str]) -> Result<String, CtlError> {
    ctl_with(&no_env(), args).await
}

fn json_of(text: &str) -> Value {
    serde_json::from_str(text).unwrap()
}

/// The first address refuses connections, the second answers: the write lands there and its version is printed.
#[tokio::test]
async fn refused_replica_fails_over_to_the_next() {
    let replica = Arc::new(FakeReplica::new(2, Mode::Answer));
    let addr = format!("{},{}", refused(), serve(&replica).await);
    let out = ctl(&[
        "--addr",
        &addr,
        "catalog",
        "register",
        "shop/web",
        "--address",
        "10.0.0.7",
        "--port",
        "8080",
        "--zone",
        "eu-1a",
        "--label",
        "app=web",
        "--service-port",
        "http:8080:http",
        "--load-balancer",
        "round_robin",
    ])
    .await
    .unwrap();
    assert_eq!(
        out,
        "registered 10.0.0.7:8080 of shop/web at version 42 (leader 1)\n"
    );

    let sent = replica.registered.lock().unwrap().clone();
    assert_eq!(sent.len(), 1);
    let request = &sent[0];
    assert_eq!(
        (request.namespace.as_str(), request.service.as_str()),
        ("shop", "web")
    );
    let endpoint = request.endpoint.clone().unwrap();
    assert_eq!(
        (endpoint.address.as_str(), endpoint.port, endpoint.ready),
        ("10.0.0.7", 8080, true)
    );
    assert_eq!(endpoint.zone, "eu-1a");
    assert_eq!(request.labels.get("app").map(String::as_str), Some("web"));
    assert_eq!(request.ports[0].protocol, "http");
    assert_eq!(request.policy.clone().unwrap().load_balancer, "round_robin");
}

/// A replica answering UNAVAILABLE is skipped; the next one's answer is printed as JSON.
#[tokio::test]
async fn unavailable_replica_fails_over() {
    let sick = Arc::new(FakeReplica::new(1, Mode::Unavailable));
    let well = Arc::new(FakeReplica::new(2, Mode::Answer));
    let addr = format!("{},{}", serve(&sick).await, serve(&well).await);
    let out = ctl(&["--addr", &addr, "-o", "json", "catalog", "list"])
        .await
        .unwrap();
    let value = json_of(&out);
    assert_eq!(value["version"], 40);
    let names: Vec<&str> = value["services"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["api", "web"], "services are sorted");
    assert_eq!((sick.calls(), well.calls()), (1, 1));
}

/// A replica that accepts the call but never answers is abandoned after --timeout for the next one.
#[tokio::test]
async fn hanging_replica_times_out_and_fails_over() {
    let stuck = Arc::new(FakeReplica::new(1, Mode::Hang));
    let well = Arc::new(FakeReplica::new(2, Mode::Answer));
    let first = serve(&stuck).await;
    let second = serve(&well).await;
    let out = ctl(&[
        "--addr",
        &first,
        "--addr",
        &second,
        "--timeout",
        "300ms",
        "catalog",
        "get",
        "shop/web",
        "--linearizable",
    ])
    .await
    .unwrap();
    assert!(out.contains("10.0.0.9  8080  true"), "{out}");
    assert_eq!(stuck.calls(), 1);
    let gets = well.gets.lock().unwrap().clone();
    assert_eq!(gets[0].consistency, Consistency::Linearizable as i32);
}

/// An application error (NOT_FOUND) is final: it is reported with its code and the next replica is never asked.
#[tokio::test]
async fn application_errors_are_not_retried_elsewhere() {
    let first = Arc::new(FakeReplica::new(1, Mode::Answer));
    let second = Arc::new(FakeReplica::new(2, Mode::Answer));
    let first_addr = serve(&first).await;
    let addr = format!("{first_addr},{}", serve(&second).await);
    let err = ctl(&["--addr", &addr, "catalog", "get", "shop/missing"])
        .await
        .unwrap_err();
    assert!(
        matches!(
            err,
            CtlError::Rpc {
                code: Code::NotFound,
                ..
            }
        ),
        "{err:?}"
    );
    assert_eq!(
        err.to_string(),
        format!("NOT_FOUND: service shop/missing not found (replica {first_addr})")
    );
    assert_eq!(err.exit_code(), 1);
    assert_eq!(second.calls(), 0);
}

/// When no replica answers, the error lists every address with its reason.
#[tokio::test]
async fn no_answer_lists_every_replica() {
    let (a, b) = (refused(), refused());
    let err = ctl(&["--addr", &format!("{a},{b}"), "members", "list"])
        .await
        .unwrap_err();
    let CtlError::NoAnswer(failures) = &err else {
        panic!("expected NoAnswer, got {err:?}");
    };
    assert_eq!(failures.len(), 2);
    let text = err.to_string();
    assert!(text.starts_with("no replica answered\n"), "{text}");
    assert!(text.contains(&format!("  {a}: cannot connect: ")), "{text}");
    assert!(text.to_lowercase().contains("refused"), "{text}");
}

/// With one address, status follows the reported members: answering ones get rows with lag, dead ones "unreachable" rows.
#[tokio::test]
async fn status_follows_members_from_a_single_address() {
    let leader = Arc::new(FakeReplica::leader(1));
    let follower = Arc::new(FakeReplica::new(2, Mode::Answer));
    let leader_addr = serve(&leader).await;
    let follower_addr = serve(&follower).await;
    let dead_addr = refused();
    let member = |id: u64, address: &str| Member {
        node_id: id,
        address: address.to_owned(),
        role: "voter".into(),
        matched_index: None,
    };
    *leader.members.lock().unwrap() = vec![
        member(1, &leader_addr),
        member(2, &format!("http://{follower_addr}")),
        member(3, &dead_addr),
    ];

    let out = ctl(&["--addr", &leader_addr, "-o", "json", "status"])
        .await
        .unwrap();
    let rows = json_of(&out);
    let rows = rows.as_array().unwrap();
    assert_eq!(rows.len(), 3, "{out}");
    assert_eq!(rows[0]["id"], 1);
    assert_eq!(rows[0]["state"], "leader");
    assert_eq!(rows[0]["lag"], 1, "leader: last log 45, applied 44");
    assert_eq!(rows[1]["id"], 2);
    assert_eq!(rows[1]["address"], follower_addr.as_str());
    assert_eq!(rows[1]["lag"], 5, "follower: applied 40");
    assert_eq!(rows[1]["commit_index"], 44);
    assert_eq!(rows[2]["id"], 3);
    assert_eq!(rows[2]["state"], "unreachable");
    assert!(
        rows[2]["error"]
            .as_str()
            .unwrap()
            .starts_with("cannot connect"),
        "{out}"
    );

    let table = ctl(&["--addr", &leader_addr, "status"]).await.unwrap();
    assert_eq!(table.lines().count(), 4, "{table}");
    assert!(
        table.lines().nth(3).unwrap().contains("unreachable"),
        "{table}"
    );
}

/// With several addresses, status asks exactly those, concurrently, and does not follow members.
#[tokio::test]
async fn status_with_several_addresses_asks_only_those() {
    let leader = Arc::new(FakeReplica::leader(1));
    *leader.members.lock().unwrap() = vec![Member {
        node_id: 7,
        address: refused(),
        role: "voter".into(),
        matched_index: None,
    }];
    let stuck = Arc::new(FakeReplica::new(2, Mode::Hang));
    let addr = format!("{},{}", serve(&leader).await, serve(&stuck).await);
    let out = ctl(&[
        "--addr",
        &addr,
        "--timeout",
        "300ms",
        "-o",
        "json",
        "status",
    ])
    .await
    .unwrap();
    let rows = json_of(&out);
    assert_eq!(rows.as_array().unwrap().len(), 2, "{out}");
    assert_eq!(rows[1]["state"], "unreachable");
    assert_eq!(rows[1]["error"], "no answer within 300ms");
}

/// Status prints the unreachable rows and still fails when no replica answered.
#[tokio::test]
async fn status_fails_when_nobody_answers() {
    let cli = Cli::try_parse_from(["nettingctl", "--addr", &refused(), "status"]).unwrap();
    let mut out = Vec::new();
    let err = run(cli, &no_env(), &mut out, &mut Vec::new())
        .await
        .unwrap_err();
    assert_eq!(err.to_string(), "no replica answered");
    let printed = String::from_utf8(out).unwrap();
    assert!(
        printed.lines().nth(1).unwrap().contains("unreachable"),
        "{printed}"
    );
}

/// Member commands: list from the first answering replica; a refused removal is reported with its code.
#[tokio::test]
async fn members_list_and_remove() {
    let leader = Arc::new(FakeReplica::leader(1));
    let addr = serve(&leader).await;
    *leader.members.lock().unwrap() = vec![
        Member {
            node_id: 2,
            address: "b:7100".into(),
            role: "voter".into(),
            matched_index: Some(44),
        },
        Member {
            node_id: 1,
            address: addr.clone(),
            role: "voter".into(),
            matched_index: Some(45),
        },
    ];
    let list = json_of(
        &ctl(&["--addr", &addr, "-o", "json", "members", "list"])
            .await
            .unwrap(),
    );
    assert_eq!(list[0]["id"], 1);
    assert_eq!(list[0]["leader"], true);
    assert_eq!(list[1]["matched_index"], 44);

    let out = ctl(&["--addr", &addr, "members", "remove", "3"])
        .await
        .unwrap();
    assert_eq!(out, "removed node 3; voters now: 1, 2\n");
    let err = ctl(&["--addr", &addr, "members", "remove", "9"])
        .await
        .unwrap_err();
    assert_eq!(
        err.to_string(),
        format!("FAILED_PRECONDITION: removing 9 would lose quorum (replica {addr})")
    );
}

/// Deregistering with --whole-service sends no endpoint; with --address/--port it sends that endpoint.
#[tokio::test]
async fn deregister_sends_what_was_asked() {
    let replica = Arc::new(FakeReplica::new(1, Mode::Answer));
    let addr = serve(&replica).await;
    let out = ctl(&[
        "--addr",
        &addr,
        "catalog",
        "deregister",
        "shop/web",
        "--whole-service",
    ])
    .await
    .unwrap();
    assert_eq!(
        out,
        "deregistered service shop/web at version 43 (leader 1)\n"
    );
    let out = ctl(&[
        "--addr",
        &addr,
        "-o",
        "json",
        "catalog",
        "deregister",
        "shop/web",
        "--address",
        "10.0.0.9",
        "--port",
        "8080",
    ])
    .await
    .unwrap();
    assert_eq!(
        json_of(&out)["endpoint"],
        json!({"address": "10.0.0.9", "port": 8080})
    );
    let sent = replica.deregistered.lock().unwrap().clone();
    assert_eq!(sent[0].endpoint, None);
    assert_eq!(sent[1].endpoint.clone().unwrap().port, 8080);
}

/// Without --addr, NETTING_ADDR (through the Environment seam) names the replicas.
#[tokio::test]
async fn environment_names_the_replicas() {
    let replica = Arc::new(FakeReplica::new(1, Mode::Answer));
    let addr = serve(&replica).await;
    let env = FakeEnv(HashMap::from([(
        "NETTING_ADDR".to_owned(),
        format!("{}, http://{addr}", refused()),
    )]));
    let out = ctl_with(&env, &["-o", "json", "catalog", "get", "shop/web"])
        .await
        .unwrap();
    let value = json_of(&out);
    assert_eq!(value["version"], 40);
    assert_eq!(value["service"]["endpoints"][0]["address"], "10.0.0.9");
    assert_eq!(
        replica.gets.lock().unwrap()[0].consistency,
        Consistency::Local as i32
    );
}

/// `sessions` asks every given replica: each answering one is a row with its count, slowest ACK
/// and sessions behind; a dead one is "unreachable"; the totals cover the answering ones.
#[tokio::test]
async fn sessions_across_replicas_with_one_unreachable() {
    let leader = Arc::new(FakeReplica::leader(1));
    leader.connect("web-0", 44);
    leader.connect("web-1", 41);
    let follower = Arc::new(FakeReplica::new(2, Mode::Answer));
    follower.connect("api-0", 40);
    let dead = refused();
    let addr = format!("{},{dead},{}", serve(&follower).await, serve(&leader).await);

    let report = json_of(
        &ctl(&["--addr", &addr, "-o", "json", "sessions"])
            .await
            .unwrap(),
    );
    let replicas = report["replicas"].as_array().unwrap();
    assert_eq!(replicas.len(), 3, "{report:#}");
    assert_eq!(replicas[0]["node_id"], 1);
    assert_eq!(replicas[0]["summary"]["session_count"], 2);
    assert_eq!(replicas[0]["summary"]["slowest_acked_version"], 41);
    assert_eq!(replicas[0]["summary"]["sessions_behind"], 1);
    assert_eq!(replicas[0]["sessions"][1]["sent_version"], 44);
    assert_eq!(replicas[1]["node_id"], 2);
    assert_eq!(replicas[1]["summary"]["sessions_behind"], 0);
    assert_eq!(replicas[2]["address"], dead.as_str());
    assert_eq!(replicas[2]["state"], "unreachable");
    assert_eq!(replicas[2]["summary"], Value::Null);
    assert_eq!(
        report["total"],
        json!({"session_count": 3, "slowest_acked_version": 40, "sessions_behind": 1, "nacks": 1})
    );

    let table = ctl(&["--addr", &addr, "sessions", "-v"]).await.unwrap();
    let lines: Vec<&str> = table.lines().collect();
    assert!(lines[3].contains("unreachable"), "{table}");
    assert!(
        lines[5].starts_with("3 sessions on 2 of 3 replicas; slowest acknowledged version 40"),
        "{table}"
    );
    assert!(lines[7].starts_with("REPLICA  NAMESPACE/POD"), "{table}");
    assert_eq!(lines.len(), 11, "three session rows: {table}");
    assert!(
        lines[9]
            .split_whitespace()
            .eq(["1", "default/web-1", "0.9.1", "41", "44", "1m05s", "1"]),
        "{table}"
    );
}

/// With one address, `sessions` also asks the members that replica reports.
#[tokio::test]
async fn sessions_follow_members_from_a_single_address() {
    let leader = Arc::new(FakeReplica::leader(1));
    let follower = Arc::new(FakeReplica::new(2, Mode::Answer));
    follower.connect("api-0", 40);
    let leader_addr = serve(&leader).await;
    let follower_addr = serve(&follower).await;
    *leader.members.lock().unwrap() = vec![
        Member {
            node_id: 1,
            address: leader_addr.clone(),
            role: "voter".into(),
            matched_index: None,
        },
        Member {
            node_id: 2,
            address: follower_addr,
            role: "voter".into(),
            matched_index: None,
        },
    ];
    let report = json_of(
        &ctl(&["--addr", &leader_addr, "-o", "json", "sessions"])
            .await
            .unwrap(),
    );
    assert_eq!(
        report["replicas"].as_array().unwrap().len(),
        2,
        "{report:#}"
    );
    assert_eq!(report["total"]["session_count"], 1);
    assert_eq!(report["replicas"][1]["sessions"][0]["pod"], "api-0");
}

/// `sessions` prints the rows and still fails when no replica answered.
#[tokio::test]
async fn sessions_fail_when_nobody_answers() {
    let err = ctl(&["--addr", &refused(), "sessions"]).await.unwrap_err();
    assert_eq!(err.exit_code(), 1);
}

/// `config` moves past a replica answering NOT_FOUND, prints the second one's view, and never
/// asks the third.
#[tokio::test]
async fn config_found_on_the_second_replica_after_not_found() {
    let first = Arc::new(FakeReplica::new(1, Mode::Answer));
    first.connect("other-0", 40);
    let second = Arc::new(FakeReplica::new(2, Mode::Answer));
    second.connect("web-0", 38);
    let third = Arc::new(FakeReplica::new(3, Mode::Answer));
    third.connect("web-0", 40);
    let second_addr = serve(&second).await;
    let addr = format!(
        "{},{second_addr},{}",
        serve(&first).await,
        serve(&third).await
    );

    let view = json_of(
        &ctl(&["--addr", &addr, "-o", "json", "config", "default/web-0"])
            .await
            .unwrap(),
    );
    assert_eq!(view["replica"], second_addr.as_str());
    assert_eq!(view["sidecar"], "default/web-0");
    assert_eq!(view["catalog_version"], 40);
    assert_eq!(view["session"]["acked_version"], 38);
    assert_eq!(view["session"]["sent_version"], 40);
    assert_eq!(view["services"][0]["endpoints"][0]["address"], "10.0.0.9");
    assert_eq!((first.calls(), second.calls(), third.calls()), (1, 1, 0));

    let table = ctl(&["--addr", &addr, "config", "default/web-0"])
        .await
        .unwrap();
    assert!(
        table.starts_with(&format!(
            "sidecar default/web-0 is connected to replica {second_addr}\n"
        )),
        "{table}"
    );
    assert!(
        table.contains("catalog:        version 40 (sent, not yet acknowledged)\n"),
        "{table}"
    );
    assert!(
        table.contains("shop       web   http:8080:http  1/1"),
        "{table}"
    );
}

/// A sidecar that no replica has fails with exit code 1 and names every replica asked, with why.
#[tokio::test]
async fn config_not_found_anywhere_fails_listing_the_replicas() {
    let first = Arc::new(FakeReplica::new(1, Mode::Answer));
    let sick = Arc::new(FakeReplica::new(2, Mode::Unavailable));
    let first_addr = serve(&first).await;
    let sick_addr = serve(&sick).await;
    let dead = refused();
    let err = ctl(&[
        "--addr",
        &format!("{first_addr},{sick_addr},{dead}"),
        "config",
        "default/web-0",
    ])
    .await
    .unwrap_err();
    assert!(
        matches!(err, CtlError::SidecarNotConnected { .. }),
        "{err:?}"
    );
    assert_eq!(err.exit_code(), 1);
    let text = err.to_string();
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(
        lines[0],
        "sidecar default/web-0 is not connected to any replica asked"
    );
    assert_eq!(lines[1], format!("  {first_addr}: not connected here"));
    assert_eq!(
        lines[2],
        format!("  {sick_addr}: UNAVAILABLE: no leader known")
    );
    assert!(
        lines[3].starts_with(&format!("  {dead}: cannot connect")),
        "{text}"
    );
}

const REGISTER: [&str; 7] = [
    "catalog",
    "register",
    "shop/web",
    "--address",
    "10.0.0.7",
    "--port",
    "8080",
];

fn with_addr<'a>(addr: &'a str, command: &[&'a str]) -> Vec<&'a str> {
    let mut args = vec!["--addr", addr];
    args.extend_from_slice(command);
    args
}

/// A replica that dies with a write in flight: the write is retried on the next replica, its
/// answer printed, and a note names the replica that failed, what happened and where the
/// write went instead.
#[tokio::test]
async fn replica_dying_mid_write_fails_over_and_says_so() {
    let dying = Arc::new(FakeReplica::new(1, Mode::DieMidCall));
    let well = Arc::new(FakeReplica::new(2, Mode::Answer));
    let (dying_addr, well_addr) = (serve(&dying).await, serve(&well).await);
    let addr = format!("{dying_addr},{well_addr}");
    let (out, notes) = ctl_noting(&no_env(), &with_addr(&addr, &REGISTER)).await;
    assert_eq!(
        out.unwrap(),
        "registered 10.0.0.7:8080 of shop/web at version 42 (leader 1)\n"
    );
    assert_eq!(
        (dying.calls(), well.registered.lock().unwrap().len()),
        (1, 1)
    );
    let prefix = format!("note: replica {dying_addr} failed mid-call (connection lost mid-call: ");
    assert!(notes.starts_with(&prefix), "{notes}");
    assert!(
        notes.ends_with(&format!("); retried on {well_addr}\n")),
        "{notes}"
    );
    assert_eq!(notes.lines().count(), 1, "{notes}");
}

/// The retry of a write carries the first try's request id, so when the dying replica had
/// applied it, the cluster answers with that first version: the operator is told the real
/// outcome, and that it came from the earlier try.
#[tokio::test]
async fn retried_write_reuses_its_request_id_and_reports_the_first_outcome() {
    let mut dying = FakeReplica::new(1, Mode::DieMidCall);
    let well = FakeReplica::new(2, Mode::Answer);
    dying.applied = Arc::clone(&well.applied);
    let (dying, well) = (Arc::new(dying), Arc::new(well));
    let addr = format!("{},{}", serve(&dying).await, serve(&well).await);
    let (out, notes) = ctl_noting(&no_env(), &with_addr(&addr, &REGISTER)).await;
    assert_eq!(
        out.unwrap(),
        "registered 10.0.0.7:8080 of shop/web at version 41 (leader 1; applied by an earlier \
         try of this write)\n"
    );
    assert!(notes.contains("failed mid-call"), "{notes}");
    let first = dying.write_ids.lock().unwrap().clone();
    let retry = well.write_ids.lock().unwrap().clone();
    assert_eq!(first, retry, "the same id on both replicas");
    let id = first[0].clone().unwrap();
    assert_eq!(id.sequence, 1);
    assert!(uuid::Uuid::parse_str(&id.client).is_ok(), "{id:?}");

    // Another invocation is another client: a new id, applied anew.
    let well_addr = well.address.lock().unwrap().clone();
    let out = ctl(&with_addr(
        &well_addr,
        &[
            "-o",
            "json",
            "catalog",
            "deregister",
            "shop/web",
            "--whole-service",
        ],
    ))
    .await
    .unwrap();
    assert_eq!(json_of(&out)["duplicate"], false);
    let second = well.write_ids.lock().unwrap()[1].clone().unwrap();
    assert_ne!(second.client, id.client);
}

/// A read whose replica dies mid-call fails over silently: nothing was at stake.
#[tokio::test]
async fn replica_dying_mid_read_fails_over_without_a_note() {
    let dying = Arc::new(FakeReplica::new(1, Mode::DieMidCall));
    let well = Arc::new(FakeReplica::new(2, Mode::Answer));
    let addr = format!("{},{}", serve(&dying).await, serve(&well).await);
    let (out, notes) = ctl_noting(
        &no_env(),
        &with_addr(&addr, &["catalog", "get", "shop/web"]),
    )
    .await;
    assert!(out.unwrap().contains("10.0.0.9  8080  true"));
    assert_eq!((dying.calls(), well.calls()), (1, 1));
    assert_eq!(notes, "");
}

/// When every replica fails a write, and one of them after the write reached it, the error
/// says the outcome is unknown, names each replica with what happened there, and exits 3.
#[tokio::test]
async fn write_failing_everywhere_names_each_replica_and_its_failure() {
    let dying = Arc::new(FakeReplica::new(1, Mode::DieMidCall));
    let sick = Arc::new(FakeReplica::new(2, Mode::Unavailable));
    let (dying_addr, sick_addr, dead) = (serve(&dying).await, serve(&sick).await, refused());
    let addr = format!("{dying_addr},{sick_addr},{dead}");
    let (result, notes) = ctl_noting(&no_env(), &with_addr(&addr, &REGISTER)).await;
    let err = result.unwrap_err();
    assert!(matches!(err, CtlError::OutcomeUnknown(_)), "{err:?}");
    assert_eq!(err.exit_code(), 3);
    let text = err.to_string();
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines.len(), 4, "{text}");
    assert!(lines[0].contains("may have been applied"), "{text}");
    assert!(
        lines[1].starts_with(&format!("  {dying_addr}: connection lost mid-call: ")),
        "{text}"
    );
    assert_eq!(
        lines[2],
        format!("  {sick_addr}: UNAVAILABLE: no leader known")
    );
    assert!(
        lines[3].starts_with(&format!("  {dead}: cannot connect: ")),
        "{text}"
    );
    assert!(
        notes.contains(&format!("replica {dying_addr} failed mid-call")),
        "{notes}"
    );

    // Nothing reached any replica: an ordinary failure, not an unknown outcome.
    let addr = format!("{},{}", refused(), refused());
    let err = ctl(&with_addr(&addr, &REGISTER)).await.unwrap_err();
    assert!(matches!(err, CtlError::NoAnswer(_)), "{err:?}");
    assert_eq!(err.exit_code(), 1);
}

/// An answer about the request itself is the same on every replica: it is reported, and the
/// next replica is never asked, for writes and reads alike.
#[tokio::test]
async fn refusals_of_the_request_are_not_retried_elsewhere() {
    for code in [
        Code::InvalidArgument,
        Code::NotFound,
        Code::FailedPrecondition,
    ] {
        let refusing = Arc::new(FakeReplica::new(1, Mode::Refuse(code)));
        let second = Arc::new(FakeReplica::new(2, Mode::Answer));
        let addr = format!("{},{}", serve(&refusing).await, serve(&second).await);
        for command in [&REGISTER[..], &["catalog", "list"][..]] {
            let (result, notes) = ctl_noting(&no_env(), &with_addr(&addr, command)).await;
            let err = result.unwrap_err();
            assert!(
                matches!(err, CtlError::Rpc { code: c, .. } if c == code),
                "{err:?}"
            );
            assert_eq!(notes, "");
        }
        assert_eq!((refusing.calls(), second.calls()), (2, 0), "{code:?}");
    }
}
