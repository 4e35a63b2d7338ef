//! Exactly-once writes against a 3-replica cluster of real processes: a write sent again with
//! its request id, through any replica, is answered as it was the first time and applied once.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use netting_proto::catalog::v1 as pb;
use support::*;
use tonic::Code;

fn with_id(mut request: pb::RegisterRequest, client: &str, sequence: u64) -> pb::RegisterRequest {
    request.request_id = Some(pb::RequestId {
        client: client.into(),
        sequence,
    });
    request
}

fn zoned(zone: &str) -> pb::RegisterRequest {
    let mut request = register_request("web", 1);
    if let Some(endpoint) = request.endpoint.as_mut() {
        endpoint.zone = zone.into();
    }
    request
}

/// Registers through `replica` and returns its answer.
async fn register(replica: &Replica, request: pb::RegisterRequest) -> pb::WriteResponse {
    replica
        .catalog()
        .await
        .register(request)
        .await
        .unwrap()
        .into_inner()
}

async fn zone_of_web(replica: &Replica) -> String {
    let service = replica
        .catalog()
        .await
        .get_service(pb::GetServiceRequest {
            namespace: "default".into(),
            service: "web".into(),
            consistency: pb::Consistency::Linearizable as i32,
        })
        .await
        .unwrap()
        .into_inner();
    service.service.unwrap().endpoints[0].zone.clone()
}

/// Writer A's write is applied, writer B then changes the same endpoint, and A's write arrives
/// again (a retry through another replica after a lost answer). The retry must be answered
/// with A's first version, marked as a duplicate, and B's value must stay: the shape of the
/// stale read the chaos lab found when forwarded retries were applied twice.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_retried_write_is_answered_from_its_first_application() {
    let cluster = TestCluster::start(3, &[]).await;
    let leader = cluster.wait_for_leader().await;
    let followers: Vec<u64> = (0..3).filter(|id| *id != leader).collect();

    let first = register(
        cluster.replica(followers[0]),
        with_id(zoned("a"), "writer-a", 1),
    )
    .await;
    assert!(!first.duplicate);
    let other = register(cluster.replica(leader), with_id(zoned("b"), "writer-b", 1)).await;
    assert!(other.version > first.version);

    let retry = register(
        cluster.replica(followers[1]),
        with_id(zoned("a"), "writer-a", 1),
    )
    .await;
    assert!(retry.duplicate, "{retry:?}");
    assert_eq!(retry.version, first.version);
    assert_eq!(zone_of_web(cluster.replica(followers[1])).await, "b");

    let next = register(cluster.replica(leader), with_id(zoned("a"), "writer-a", 2)).await;
    assert!(!next.duplicate && next.version > other.version);
    assert_eq!(zone_of_web(cluster.replica(leader)).await, "a");
}

/// A refused write stays refused when sent again, even once it would succeed: the answer is
/// the one it got, not a second application.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_retried_refusal_is_refused_again() {
    let cluster = TestCluster::start(3, &[]).await;
    let leader = cluster.wait_for_leader().await;
    let remove = pb::DeregisterRequest {
        namespace: "default".into(),
        service: "web".into(),
        endpoint: None,
        request_id: Some(pb::RequestId {
            client: "writer-a".into(),
            sequence: 7,
        }),
    };
    let mut client = cluster.replica(leader).catalog().await;
    let refused = client.deregister(remove.clone()).await.unwrap_err();
    assert_eq!(refused.code(), Code::NotFound, "{refused:?}");
    register_retrying(cluster.replica(leader), register_request("web", 1)).await;
    let again = client.deregister(remove).await.unwrap_err();
    assert_eq!(again.code(), Code::NotFound, "{again:?}");
    assert_eq!(zone_of_web(cluster.replica(leader)).await, "");
}

/// A malformed request id is refused before anything is proposed, naming the field.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bad_request_id_is_refused_and_changes_nothing() {
    let cluster = TestCluster::start(3, &[]).await;
    let leader = cluster.wait_for_leader().await;
    let replica = cluster.replica(leader);
    let version = register_retrying(replica, register_request("web", 1)).await;
    let mut client = replica.catalog().await;
    for (request, field) in [
        (with_id(zoned("x"), "", 1), "request_id.client"),
        (with_id(zoned("x"), "has space", 1), "request_id.client"),
        (with_id(zoned("x"), "writer", 0), "request_id.sequence"),
    ] {
        let status = client.register(request).await.unwrap_err();
        assert_eq!(status.code(), Code::InvalidArgument, "{status:?}");
        assert!(status.message().contains(field), "{status:?}");
    }
    let listed = client
        .list_services(pb::ListServicesRequest {
            consistency: pb::Consistency::Linearizable as i32,
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(listed.version, version);
}
