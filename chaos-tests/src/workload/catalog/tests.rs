//! Failover of the lab's clients against fake replicas on 127.0.0.1: tonic servers with
//! scripted answers, a replica that resets the connection mid-call, and a port nobody listens
//! on. What each operation records is checked as the checkers will read it.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::atomic::{AtomicUsize, Ordering};

use netting_proto::catalog::v1::catalog_server::{Catalog, CatalogServer};
use tokio::io::AsyncReadExt;
use tokio::net::TcpListener;
use tokio_stream::wrappers::TcpListenerStream;
use tonic::{Request, Response};

use super::*;

/// How a fake replica answers every call.
#[derive(Debug, Clone)]
enum Answer {
    /// Success at this catalog version, holding this pod in every endpoint it reports.
    Ok { version: u64, pod: &'static str },
    /// This status.
    Status(Code),
}

/// What a fake replica was sent.
#[derive(Debug, Default)]
struct Seen {
    calls: AtomicUsize,
    /// The request id of every write.
    request_ids: std::sync::Mutex<Vec<Option<pb::RequestId>>>,
}

impl Seen {
    fn write(&self, id: Option<pb::RequestId>) {
        self.request_ids.lock().unwrap().push(id);
    }

    fn request_ids(&self) -> Vec<Option<pb::RequestId>> {
        self.request_ids.lock().unwrap().clone()
    }
}

#[derive(Debug)]
struct FakeReplica {
    answer: Answer,
    seen: Arc<Seen>,
}

impl FakeReplica {
    fn reply<T>(&self, ok: impl FnOnce(u64, &'static str) -> T) -> Result<Response<T>, Status> {
        self.seen.calls.fetch_add(1, Ordering::SeqCst);
        match self.answer {
            Answer::Ok { version, pod } => Ok(Response::new(ok(version, pod))),
            Answer::Status(code) => Err(Status::new(code, "scripted")),
        }
    }
}

#[tonic::async_trait]
impl Catalog for FakeReplica {
    async fn register(
        &self,
        request: Request<pb::RegisterRequest>,
    ) -> Result<Response<pb::WriteResponse>, Status> {
        self.seen.write(request.into_inner().request_id);
        self.reply(|version, _| pb::WriteResponse {
            version,
            leader_id: 1,
            duplicate: false,
        })
    }

    async fn deregister(
        &self,
        request: Request<pb::DeregisterRequest>,
    ) -> Result<Response<pb::WriteResponse>, Status> {
        self.seen.write(request.into_inner().request_id);
        self.reply(|version, _| pb::WriteResponse {
            version,
            leader_id: 1,
            duplicate: false,
        })
    }

    async fn get_service(
        &self,
        request: Request<pb::GetServiceRequest>,
    ) -> Result<Response<pb::GetServiceResponse>, Status> {
        let service = request.into_inner().service;
        self.reply(|version, pod| pb::GetServiceResponse {
            service: Some(pb::Service {
                namespace: REGISTER_NAMESPACE.to_owned(),
                name: service,
                endpoints: vec![pb::Endpoint {
                    address: key().address,
                    port: key().port,
                    pod: pod.to_owned(),
                    ready: true,
                    ..Default::default()
                }],
                ..Default::default()
            }),
            version,
        })
    }

    async fn list_services(
        &self,
        _: Request<pb::ListServicesRequest>,
    ) -> Result<Response<pb::ListServicesResponse>, Status> {
        self.reply(|version, _| pb::ListServicesResponse {
            services: Vec::new(),
            version,
        })
    }
}

/// A fake replica serving on a free port; its address and how many calls it got.
async fn fake(answer: Answer) -> (String, Arc<Seen>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    let seen = Arc::new(Seen::default());
    let replica = FakeReplica {
        answer,
        seen: seen.clone(),
    };
    tokio::spawn(
        tonic::transport::Server::builder()
            .add_service(CatalogServer::new(replica))
            .serve_with_incoming(TcpListenerStream::new(listener)),
    );
    (addr, seen)
}

/// A replica that takes the request and resets the connection without answering, as one
/// killed mid-call does: the request may have been acted on.
async fn resetting() -> String {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    tokio::spawn(async move {
        loop {
            let Ok((mut stream, _)) = listener.accept().await else {
                return;
            };
            let mut buf = [0u8; 4096];
            // The HTTP/2 preface, settings and the request's first frames.
            let mut received = 0;
            while received < 64 {
                match stream.read(&mut buf).await {
                    Ok(0) | Err(_) => break,
                    Ok(n) => received += n,
                }
            }
            // Linger 0: closing sends a reset.
            let _ = stream.set_zero_linger();
        }
    });
    addr
}

/// A port nothing listens on: connecting is refused, nothing is sent.
async fn refusing() -> String {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    listener.local_addr().unwrap().to_string()
    // Dropped here: the port is closed.
}

fn key() -> RegisterKey {
    RegisterKey {
        service: "reg-0".to_owned(),
        address: "100.64.0.11".to_owned(),
        port: 80,
    }
}

fn worker(grpc: Vec<String>) -> Worker {
    worker_with_timeouts(grpc, OPERATION_TIMEOUT, ATTEMPT_TIMEOUT)
}

fn worker_with_timeouts(grpc: Vec<String>, operation: Duration, attempt: Duration) -> Worker {
    let replicas = grpc
        .into_iter()
        .enumerate()
        .map(|(i, grpc)| ReplicaAddress {
            grpc,
            admin: String::new(),
            node_id: i as u64 + 1,
        })
        .collect();
    let (_stop, stop) = watch::channel(false);
    Worker {
        client: 3,
        connections: Connections::with_timeouts(replicas, operation, attempt),
        recorder: Recorder::new(),
        clock: Clock::start(),
        stop,
    }
}

/// How many calls each fake got.
fn counts<const N: usize>(fakes: [&Arc<Seen>; N]) -> [usize; N] {
    fakes.map(|f| f.calls.load(Ordering::SeqCst))
}

fn the_write(worker: &Worker) -> RegisterOperation {
    let history = worker.recorder.snapshot();
    assert_eq!(history.registers.len(), 1, "{history:#?}");
    history.registers[0].clone()
}

/// UNAVAILABLE (no leader, say) is no answer to the request: the next replica is tried with
/// the same request id, so the replicas apply the write at most once, and the answer of the
/// second is the write's outcome.
#[tokio::test]
async fn a_write_moves_on_after_unavailable_with_the_same_request_id() {
    let (a, a_calls) = fake(Answer::Status(Code::Unavailable)).await;
    let (b, b_calls) = fake(Answer::Ok {
        version: 7,
        pod: "w3-1",
    })
    .await;
    let worker = worker(vec![a, b]);
    write_register(&worker, 0, &key(), Some("w3-1".to_owned())).await;
    assert_eq!(counts([&a_calls, &b_calls]), [1, 1]);
    let write = the_write(&worker);
    assert_eq!(write.replica, 1);
    assert_eq!(write.version, Some(7));
    assert_eq!(write.outcome, Outcome::Ok);
    assert!(write.completed.is_some());
    let ids = [a_calls.request_ids(), b_calls.request_ids()].concat();
    assert_eq!(ids.len(), 2);
    let id = ids[0].clone().expect("every write carries a request id");
    assert_eq!(ids[1].as_ref(), Some(&id));
    assert_eq!(id.client, "netting-chaos-3");
    assert_eq!(id.sequence, write.id + 1);
}

/// A write whose last try certainly failed may still have been applied by an earlier try that
/// reached a replica: unknown, not failed.
#[tokio::test]
async fn a_certain_failure_after_a_try_that_may_apply_is_unknown() {
    let (a, _) = fake(Answer::Status(Code::Unavailable)).await;
    let (b, _) = fake(Answer::Status(Code::InvalidArgument)).await;
    let worker = worker(vec![a, b]);
    write_register(&worker, 0, &key(), None).await;
    let write = the_write(&worker);
    assert_eq!(write.outcome, Outcome::Unknown);
    assert_eq!(write.completed, None);
}

/// A replica that dies mid-call (the connection reset: tonic's UNKNOWN "transport error") is
/// left for the next one, as the server's forwarding does; matched by error kind.
#[tokio::test]
async fn a_write_moves_on_after_a_connection_reset() {
    let a = resetting().await;
    let (b, b_calls) = fake(Answer::Ok {
        version: 9,
        pod: "w3-1",
    })
    .await;
    let worker = worker(vec![a, b]);
    let tried = worker
        .connections
        .call_with_failover(0, |mut c| async move {
            c.register(pb::RegisterRequest::default()).await
        })
        .await;
    assert_eq!(tried.result.unwrap().version, 9);
    assert_eq!((tried.replica, tried.tries), (1, 2));
    assert!(tried.earlier_may_apply);
    assert_eq!(counts([&b_calls]), [1]);
}

/// A replica that cannot be reached got nothing: the write acknowledged by the next one is
/// acknowledged, with its completion time.
#[tokio::test]
async fn a_write_moves_on_from_an_unreachable_replica_and_stays_acknowledged() {
    let a = refusing().await;
    let (b, _) = fake(Answer::Ok {
        version: 11,
        pod: "w3-1",
    })
    .await;
    let worker = worker(vec![a, b]);
    write_register(&worker, 0, &key(), Some("w3-1".to_owned())).await;
    let write = the_write(&worker);
    assert_eq!(write.outcome, Outcome::Ok);
    assert_eq!((write.replica, write.version), (1, Some(11)));
    assert!(write.completed.is_some());
}

/// A replica's answer is final: it is not asked of another replica.
#[tokio::test]
async fn an_answer_ends_the_operation() {
    let (a, a_calls) = fake(Answer::Status(Code::InvalidArgument)).await;
    let (b, b_calls) = fake(Answer::Ok {
        version: 1,
        pod: "x",
    })
    .await;
    let worker = worker(vec![a, b]);
    write_register(&worker, 0, &key(), Some("w3-1".to_owned())).await;
    assert_eq!(counts([&a_calls, &b_calls]), [1, 0]);
    let write = the_write(&worker);
    assert_eq!(write.outcome, Outcome::Failed);
    assert_eq!(write.replica, 0);
}

/// Every replica refusing the connection: certainly not applied, so `Failed`, after trying
/// each of them until the operation's time is up (short here: however long it is, no try can
/// succeed, and a connect that times out sent nothing either).
#[tokio::test]
async fn a_write_no_replica_received_failed() {
    let worker = worker_with_timeouts(
        vec![refusing().await, refusing().await],
        Duration::from_millis(300),
        Duration::from_millis(100),
    );
    write_register(&worker, 1, &key(), None).await;
    let write = the_write(&worker);
    assert_eq!(write.outcome, Outcome::Failed);
}

/// A linearizable read fails over too, and what the answering replica returned is what was
/// read: a read has no effect, so its earlier tries do not matter.
#[tokio::test]
async fn a_read_moves_on_and_records_the_answer() {
    let a = resetting().await;
    let (b, _) = fake(Answer::Status(Code::DeadlineExceeded)).await;
    let (c, _) = fake(Answer::Ok {
        version: 40,
        pod: "w2-5",
    })
    .await;
    let worker = worker(vec![a, b, c]);
    let read = read_register(&worker, 0, &key()).await;
    assert_eq!(read, Some(Some("w2-5".to_owned())));
    let history = worker.recorder.snapshot();
    let op = &history.registers[0];
    assert_eq!(op.outcome, Outcome::Ok);
    assert_eq!((op.replica, op.version), (2, Some(40)));
}

/// Probes and ledger writers fail over the same way; a removal that finds nothing is a
/// success that changed nothing.
#[tokio::test]
async fn a_ledger_removal_moves_on_and_not_found_is_done() {
    let a = refusing().await;
    let (b, _) = fake(Answer::Status(Code::NotFound)).await;
    let worker = worker(vec![a, b]);
    let outcome = ledger_write(&worker, LEDGER_NAMESPACE, &key(), false, 0).await;
    assert_eq!(outcome, Outcome::Ok);
    let history = worker.recorder.snapshot();
    assert_eq!(history.ledger[0].replica, 1);
    assert_eq!(history.ledger[0].version, None);
}

#[test]
fn earlier_tries_matter_only_when_the_last_one_failed() {
    assert_eq!(outcome_after_tries(Outcome::Ok, false), Outcome::Ok);
    assert_eq!(outcome_after_tries(Outcome::Ok, true), Outcome::Ok);
    assert_eq!(outcome_after_tries(Outcome::Failed, true), Outcome::Unknown);
    assert_eq!(outcome_after_tries(Outcome::Failed, false), Outcome::Failed);
}

/// Only what certainly did not happen is `Failed`: a connection never opened, or a refusal
/// before proposing. Everything that may come after the request reached a leader is `Unknown`.
#[test]
fn only_certain_failures_are_failed() {
    let status = |code| CallError::Status(Status::new(code, "x"));
    assert_eq!(
        classify_write_error(&CallError::Connect("refused".to_owned())),
        Outcome::Failed
    );
    for code in [Code::InvalidArgument, Code::Unimplemented] {
        assert_eq!(
            classify_write_error(&status(code)),
            Outcome::Failed,
            "{code:?}"
        );
    }
    for code in [
        Code::Unavailable,
        Code::DeadlineExceeded,
        Code::Cancelled,
        Code::Unknown,
        Code::Internal,
        Code::ResourceExhausted,
        Code::FailedPrecondition,
        Code::Aborted,
    ] {
        assert_eq!(
            classify_write_error(&status(code)),
            Outcome::Unknown,
            "{code:?}"
        );
    }
    let reset = Status::from_error(Box::new(std::io::Error::new(
        std::io::ErrorKind::ConnectionReset,
        "reset",
    )));
    assert_eq!(
        classify_write_error(&CallError::Status(reset)),
        Outcome::Unknown
    );
}
