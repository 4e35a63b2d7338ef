//! Smoke test of the discovery stream against a real replica.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use netting_proto::discovery::v1 as pb;
use support::sidecar::*;
use support::*;

/// A new sidecar gets a snapshot of its subscription, then a delta when a subscribed service
/// changes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn snapshot_then_delta() {
    let cluster = TestCluster::start(1, &[]).await;
    let replica = cluster.replica(0);
    register_retrying(replica, register_request("web", 1)).await;
    let mut stream = RawStream::open(&replica.grpc, hello("web-0", &["default"], 0, ""))
        .await
        .unwrap();
    let first = stream.next().await.unwrap();
    let Some(pb::discovery_response::Update::Snapshot(snapshot)) = &first.update else {
        panic!("expected a snapshot, got {first:?}");
    };
    assert_eq!(snapshot.services.len(), 1);
    stream.ack(&first).await;
    let written = register_retrying(replica, register_request("web", 2)).await;
    let second = stream.next().await.unwrap();
    assert_eq!(second.version, written);
    let Some(pb::discovery_response::Update::Delta(delta)) = &second.update else {
        panic!("expected a delta, got {second:?}");
    };
    assert_eq!(delta.from_version, first.version);
    assert_eq!(delta.upserted.len(), 1);
    assert_eq!(delta.upserted[0].endpoints.len(), 2);
}
