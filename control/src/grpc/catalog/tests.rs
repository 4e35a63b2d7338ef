//! The catalog service in process: a scripted Raft node and catalog writer stand in for the
//! replica, and a second service on a local port plays the leader a follower forwards to.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::Arc;

use netting_proto::catalog::v1::catalog_server::CatalogServer;
use netting_raft::catalog::{ApplyError, RequestId, ServiceKey, Source};
use netting_raft::types::RaftMetrics;
use tonic::Code;

use super::*;
use crate::actors::catalog_writer::{ProposeError, Proposed};
use crate::grpc::consensus::fake::ScriptedConsensus;
use crate::grpc::test_replica::{Proposals, done, metrics, scripted_replica};

fn leader(answers: Vec<Result<Proposed, ProposeError>>) -> Fixture {
    fixture(
        1,
        metrics(1, Some(1), ["127.0.0.1:1", "127.0.0.1:2"]),
        answers,
    )
}

/// The catalog service of a scripted replica.
struct Fixture {
    service: CatalogService,
    consensus: Arc<ScriptedConsensus>,
    proposed: Proposals,
}

fn fixture(id: u64, metrics: RaftMetrics, answers: Vec<Result<Proposed, ProposeError>>) -> Fixture {
    let scripted = scripted_replica(id, metrics, answers);
    Fixture {
        service: CatalogService::new(scripted.replica),
        consensus: scripted.consensus,
        proposed: scripted.proposed,
    }
}

fn register(id: Option<(&str, u64)>) -> pb::RegisterRequest {
    pb::RegisterRequest {
        namespace: "default".into(),
        service: "web".into(),
        endpoint: Some(pb::Endpoint {
            address: "10.0.0.1".into(),
            port: 80,
            ready: true,
            ..Default::default()
        }),
        request_id: id.map(|(client, sequence)| pb::RequestId {
            client: client.into(),
            sequence,
        }),
        ..Default::default()
    }
}

fn proposed_ids(fixture: &Fixture) -> Vec<Option<RequestId>> {
    fixture
        .proposed
        .lock()
        .unwrap()
        .iter()
        .map(|(id, _)| id.clone())
        .collect()
}

/// On the leader a write is proposed once, under the client's request id, and answered with
/// the version it was applied at; a repeated request is answered as such.
#[actix::test]
async fn a_write_on_the_leader_is_proposed_under_its_request_id() {
    let fixture = leader(vec![Ok(done(5, false)), Ok(done(5, true))]);
    let client = RequestId {
        client: "ctl-1".into(),
        sequence: 3,
    };
    for duplicate in [false, true] {
        let answer = fixture
            .service
            .register(Request::new(register(Some(("ctl-1", 3)))))
            .await
            .unwrap()
            .into_inner();
        assert_eq!((answer.version, answer.duplicate), (5, duplicate));
    }
    assert_eq!(
        proposed_ids(&fixture),
        vec![Some(client.clone()), Some(client)]
    );
    let (_, command) = fixture.proposed.lock().unwrap()[0].clone();
    assert!(matches!(
        command,
        CatalogCommand::RegisterEndpoint { ref key, source: Source::Api, .. }
            if *key == ServiceKey::new("default", "web").unwrap()
    ));
}

/// A write sent without a request id gets a fresh one from the replica, so the replica's own
/// retries of it are applied at most once.
#[actix::test]
async fn a_write_without_an_id_gets_a_fresh_one() {
    let fixture = leader(Vec::new());
    for _ in 0..2 {
        fixture
            .service
            .register(Request::new(register(None)))
            .await
            .unwrap();
    }
    let ids = proposed_ids(&fixture);
    let ids: Vec<RequestId> = ids.into_iter().map(Option::unwrap).collect();
    assert!(ids[0].client.starts_with("replica-1-"), "{:?}", ids[0]);
    assert_eq!(ids[0].client, ids[1].client);
    assert_eq!((ids[0].sequence, ids[1].sequence), (1, 2));
}

/// A bad or oversized request is refused with a message naming what is wrong, and nothing
/// is proposed.
#[actix::test]
async fn bad_writes_are_refused_before_anything_is_proposed() {
    let fixture = leader(Vec::new());
    let mut bad_namespace = register(None);
    bad_namespace.namespace = "Not A Label".into();
    let mut bad_id = register(Some(("ctl", 0)));
    bad_id.service = "web".into();
    let mut oversized = register(None);
    oversized.labels = [("k".to_owned(), "v".repeat(2048))].into_iter().collect();
    for (request, names) in [
        (bad_namespace, "namespace"),
        (bad_id, "request_id.sequence"),
        (oversized, "largest field: labels"),
    ] {
        let status = fixture
            .service
            .register(Request::new(request))
            .await
            .unwrap_err();
        assert_eq!(status.code(), Code::InvalidArgument, "{status:?}");
        assert!(status.message().contains(names), "{status:?}");
    }
    assert!(fixture.proposed.lock().unwrap().is_empty());
}

/// What the writer answers reaches the client as the code a client acts on.
#[actix::test]
async fn the_writers_refusals_keep_their_meaning() {
    let owned = ApplyError::OwnedByOtherSource {
        key: ServiceKey::new("default", "web").unwrap(),
        owner: "file".into(),
        writer: "api".into(),
    };
    let fixture = leader(vec![
        Err(ProposeError::QueueFull { queued: 20_000 }),
        Err(ProposeError::Refused {
            error: owned,
            version: 4,
        }),
        Err(ProposeError::Unavailable("raft stopped".into())),
    ]);
    let mut codes = Vec::new();
    for _ in 0..3 {
        let status = fixture
            .service
            .register(Request::new(register(None)))
            .await
            .unwrap_err();
        codes.push((status.code(), status.message().to_owned()));
    }
    assert_eq!(codes[0].0, Code::ResourceExhausted);
    assert!(codes[0].1.contains("not applied"), "{codes:?}");
    assert_eq!(codes[1].0, Code::FailedPrecondition);
    assert!(codes[1].1.contains("file"), "{codes:?}");
    assert_eq!(codes[2].0, Code::Unavailable);
    assert!(codes[2].1.contains("outcome is unknown"), "{codes:?}");
}

/// A leader whose writer keeps saying it does not lead, while no other leader appears, retries
/// until the deadline and then says leadership changed (UNAVAILABLE: retry elsewhere).
#[actix::test]
async fn leadership_lost_without_a_successor_is_unavailable() {
    let fixture = leader(vec![Err(ProposeError::NotLeader { leader: None }); 20]);
    let status = fixture
        .service
        .register(Request::new(register(None)))
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::Unavailable, "{status:?}");
    assert!(
        status.message().contains("leadership changed"),
        "{status:?}"
    );
    assert!(
        !fixture.proposed.lock().unwrap().is_empty(),
        "the write was proposed"
    );
}

/// Without a known leader a write waits for one, then is refused as UNAVAILABLE without
/// being proposed.
#[actix::test]
async fn no_leader_is_unavailable_and_proposes_nothing() {
    let fixture = fixture(
        1,
        metrics(1, None, ["127.0.0.1:1", "127.0.0.1:2"]),
        Vec::new(),
    );
    let status = fixture
        .service
        .register(Request::new(register(None)))
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::Unavailable);
    assert!(
        status.message().contains("no leader is known"),
        "{status:?}"
    );
    assert!(fixture.proposed.lock().unwrap().is_empty());
}

/// A request another replica forwarded is never forwarded again: a replica that is not the
/// leader any more answers UNAVAILABLE, so a request cannot loop between replicas.
#[actix::test]
async fn a_forwarded_write_is_not_forwarded_again() {
    let fixture = fixture(
        1,
        metrics(1, Some(2), ["127.0.0.1:1", "127.0.0.1:2"]),
        Vec::new(),
    );
    let status = fixture
        .service
        .register(routing::forwarded(register(None)))
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::Unavailable);
    assert!(
        status.message().contains("no longer the leader"),
        "{status:?}"
    );
    assert!(fixture.proposed.lock().unwrap().is_empty());
}

/// A follower forwards a write to the leader with the request id it gave it, and passes the
/// leader's answer on; the follower proposes nothing itself.
#[actix::test]
async fn a_follower_forwards_to_the_leader_under_one_request_id() {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let leader_addr = listener.local_addr().unwrap().to_string();
    let addrs = ["127.0.0.1:9", leader_addr.as_str()];
    let leader = fixture(2, metrics(2, Some(2), addrs), vec![Ok(done(11, false))]);
    let server = tokio::spawn(
        tonic::transport::Server::builder()
            .add_service(CatalogServer::new(leader.service.clone()))
            .serve_with_incoming(tokio_stream::wrappers::TcpListenerStream::new(listener)),
    );
    let follower = fixture(1, metrics(1, Some(2), addrs), Vec::new());

    let answer = follower
        .service
        .register(Request::new(register(None)))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(answer.version, 11);
    assert!(follower.proposed.lock().unwrap().is_empty());
    let ids = proposed_ids(&leader);
    assert_eq!(ids.len(), 1);
    let id = ids[0].clone().unwrap();
    assert!(
        id.client.starts_with("replica-1-"),
        "the follower's id: {id:?}"
    );
    server.abort();
}

/// A linearizable read on the leader is answered only after leadership is confirmed.
#[actix::test]
async fn a_linearizable_read_needs_a_confirmed_leader() {
    let fixture = leader(Vec::new());
    *fixture.consensus.read_index.lock().unwrap() = Err("quorum lost".into());
    let read = || pb::GetServiceRequest {
        namespace: "default".into(),
        service: "web".into(),
        consistency: pb::Consistency::Linearizable as i32,
    };
    let status = fixture
        .service
        .get_service(Request::new(read()))
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::Unavailable);
    assert!(status.message().contains("quorum lost"), "{status:?}");

    *fixture.consensus.read_index.lock().unwrap() = Ok(Some(3));
    let status = fixture
        .service
        .get_service(Request::new(read()))
        .await
        .unwrap_err();
    assert_eq!(
        status.code(),
        Code::NotFound,
        "confirmed, then read: {status:?}"
    );
}

/// A write that arrives during an election waits for the leader and is then proposed.
#[actix::test]
async fn a_write_waits_for_a_leader_to_be_elected() {
    let fixture = fixture(
        1,
        metrics(1, None, ["127.0.0.1:1", "127.0.0.1:2"]),
        Vec::new(),
    );
    let consensus = fixture.consensus.clone();
    let write = fixture.service.register(Request::new(register(None)));
    let elect = async move {
        tokio::task::yield_now().await;
        consensus.set_leader(Some(1));
    };
    let (answer, ()) = tokio::join!(write, elect);
    assert_eq!(answer.unwrap().into_inner().version, 7);
    assert_eq!(fixture.proposed.lock().unwrap().len(), 1);
}
