//! Membership changes on a running cluster: a new replica joins as a learner and is promoted
//! once caught up; removal is explicit and refused when it would cost the quorum.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use netting_proto::catalog::v1 as pb;
use support::*;

fn voters(status: &pb::StatusResponse) -> Vec<u64> {
    status
        .members
        .iter()
        .filter(|m| m.role == "voter")
        .map(|m| m.node_id)
        .collect()
}

/// A fourth replica (the StatefulSet scaled up) joins by itself and becomes a voter with the
/// whole catalog; `members remove` takes it out again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn new_replica_joins_and_can_be_removed() {
    let mut cluster = TestCluster::start(3, &[]).await;
    let leader = cluster.wait_for_leader().await;
    for i in 0..5u8 {
        register_retrying(
            cluster.replica(leader),
            register_request(&format!("svc-{i}"), i),
        )
        .await;
    }
    let new = cluster.add_replica();
    cluster.replica_mut(new).start();

    let joined = wait_until(PATIENCE, || async {
        let status = cluster.replica(leader).status().await?;
        voters(&status).contains(&new).then_some(())
    })
    .await;
    assert!(
        joined.is_some(),
        "node {new} never became a voter\n{}",
        cluster.logs()
    );
    let version = cluster
        .replica(leader)
        .status()
        .await
        .map(|s| s.catalog_version)
        .unwrap_or(0);
    cluster.wait_converged(version).await;
    assert_eq!(local_services(cluster.replica(new)).await.len(), 5);

    let mut admin = cluster.replica(new).cluster().await;
    let removed = admin
        .remove_member(pb::RemoveMemberRequest { node_id: new })
        .await
        .unwrap()
        .into_inner();
    assert!(!removed.voters.contains(&new));
    assert_eq!(removed.voters.len(), 3);
}

/// With one follower down, removing the other follower would leave a majority that cannot be
/// reached, so it is refused and membership is unchanged.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn removal_that_breaks_quorum_is_refused() {
    let mut cluster = TestCluster::start(3, &[]).await;
    let leader = cluster.wait_for_leader().await;
    let followers: Vec<u64> = (0..3).filter(|id| *id != leader).collect();
    cluster.replica_mut(followers[0]).kill();
    // Let the leader notice the dead follower falling behind.
    for i in 0..3u8 {
        register_retrying(
            cluster.replica(leader),
            register_request(&format!("svc-{i}"), i),
        )
        .await;
    }

    let mut admin = cluster.replica(leader).cluster().await;
    let refused = admin
        .remove_member(pb::RemoveMemberRequest {
            node_id: followers[1],
        })
        .await
        .expect_err("removal must be refused");
    assert_eq!(
        refused.code(),
        tonic::Code::FailedPrecondition,
        "{refused:?}"
    );
    let status = cluster.replica(leader).status().await.unwrap();
    assert_eq!(voters(&status).len(), 3, "membership unchanged");
}
