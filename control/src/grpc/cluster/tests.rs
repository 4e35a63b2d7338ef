//! The cluster service: the quorum rule as a function, and status, join and removal in
//! process against a scripted Raft node.

#![allow(clippy::unwrap_used)]

use tonic::Code;

use super::*;
use crate::grpc::consensus::MembershipError;
use crate::grpc::test_replica::{metrics, refused_addr, scripted_replica};

fn set(ids: &[NodeId]) -> BTreeSet<NodeId> {
    ids.iter().copied().collect()
}

/// Removal needs a healthy majority of the voters that remain.
#[test]
fn removal_quorum() {
    assert!(check_removal_keeps_quorum(&set(&[0, 1]), &set(&[0, 1])).is_ok());
    assert!(check_removal_keeps_quorum(&set(&[0, 1]), &set(&[0])).is_err());
    assert!(check_removal_keeps_quorum(&set(&[0, 1, 2, 3]), &set(&[0, 1, 2])).is_ok());
    assert!(check_removal_keeps_quorum(&set(&[0, 1, 2, 3]), &set(&[0, 1, 9])).is_err());
    assert!(check_removal_keeps_quorum(&set(&[]), &set(&[0])).is_err());
}

/// Leader 1 of voters 1 and 2 (node 2 at `node2`).
fn leader_of_two(
    node2: &str,
) -> (
    ClusterService,
    std::sync::Arc<crate::grpc::consensus::fake::ScriptedConsensus>,
) {
    let scripted = scripted_replica(1, metrics(1, Some(1), ["127.0.0.1:1", node2]), Vec::new());
    (ClusterService::new(scripted.replica), scripted.consensus)
}

fn join(node_id: NodeId, address: &str) -> pb::JoinRequest {
    pb::JoinRequest {
        node_id,
        address: address.into(),
        cluster_name: "test".into(),
    }
}

fn changes(consensus: &crate::grpc::consensus::fake::ScriptedConsensus) -> Vec<String> {
    consensus.membership_changes.lock().unwrap().clone()
}

/// A new replica joins as a learner that has caught up, and only then becomes a voter.
#[actix::test]
async fn a_new_replica_is_added_as_learner_then_promoted() {
    let (service, consensus) = leader_of_two("127.0.0.1:2");
    let answer = service
        .join(Request::new(join(3, "127.0.0.1:3")))
        .await
        .unwrap()
        .into_inner();
    assert_eq!((answer.leader_id, answer.already_member), (1, false));
    let changes = changes(&consensus);
    assert_eq!(changes.len(), 2, "{changes:?}");
    assert_eq!(changes[0], "add learner 3 at 127.0.0.1:3");
    assert!(changes[1].starts_with("AddVoterIds({3})"), "{changes:?}");
}

/// A voter joining again at its address changes nothing; at a new address only its address
/// is updated.
#[actix::test]
async fn a_member_joining_again_changes_at_most_its_address() {
    let (service, consensus) = leader_of_two("127.0.0.1:2");
    let answer = service
        .join(Request::new(join(2, "127.0.0.1:2")))
        .await
        .unwrap()
        .into_inner();
    assert!(answer.already_member);
    assert!(changes(&consensus).is_empty());

    let answer = service
        .join(Request::new(join(2, "127.0.0.1:22")))
        .await
        .unwrap()
        .into_inner();
    assert!(!answer.already_member);
    let changes = changes(&consensus);
    assert_eq!(changes.len(), 1, "{changes:?}");
    assert!(changes[0].starts_with("SetNodes({2: "), "{changes:?}");
    assert!(changes[0].contains("127.0.0.1:22"), "{changes:?}");
}

/// A join from another cluster or with an address that is not HOST:PORT is refused, naming
/// what is wrong, and changes nothing.
#[actix::test]
async fn bad_joins_are_refused_and_change_nothing() {
    let (service, consensus) = leader_of_two("127.0.0.1:2");
    let mut other_cluster = join(3, "127.0.0.1:3");
    other_cluster.cluster_name = "prod".into();
    let status = service.join(Request::new(other_cluster)).await.unwrap_err();
    assert_eq!(status.code(), Code::FailedPrecondition);
    assert!(status.message().contains("\"prod\""), "{status:?}");
    let status = service
        .join(Request::new(join(3, "no-port")))
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::InvalidArgument);
    assert!(status.message().contains("HOST:PORT"), "{status:?}");
    assert!(changes(&consensus).is_empty());
}

/// A membership change Raft refuses reaches the client by kind: one in progress or a lost
/// leadership is worth a retry (UNAVAILABLE), anything else is not.
#[actix::test]
async fn refused_membership_changes_keep_their_kind() {
    let (service, consensus) = leader_of_two("127.0.0.1:2");
    for (refusal, code) in [
        (
            MembershipError::InProgress("joint".into()),
            Code::Unavailable,
        ),
        (
            MembershipError::NotLeader("node 2".into()),
            Code::Unavailable,
        ),
        (
            MembershipError::Refused("no learner".into()),
            Code::FailedPrecondition,
        ),
    ] {
        *consensus.membership_refusal.lock().unwrap() = Some(refusal);
        let status = service
            .join(Request::new(join(3, "127.0.0.1:3")))
            .await
            .unwrap_err();
        assert_eq!(status.code(), code, "{status:?}");
    }
}

/// Removal: an unknown node is NOT_FOUND; removing a voter when the one left does not answer
/// is refused before anything changes.
#[actix::test]
async fn removal_needs_a_healthy_quorum_of_the_rest() {
    let (service, consensus) = leader_of_two(&refused_addr());
    let status = service
        .remove_member(Request::new(pb::RemoveMemberRequest { node_id: 9 }))
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::NotFound);

    let status = service
        .remove_member(Request::new(pb::RemoveMemberRequest { node_id: 1 }))
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::FailedPrecondition, "{status:?}");
    assert!(
        status.message().contains("needed for a quorum"),
        "{status:?}"
    );
    assert!(changes(&consensus).is_empty());
}

/// Status reports this replica, its view of the leader and every member with its role.
#[actix::test]
async fn status_reports_the_members_and_their_roles() {
    let (service, consensus) = leader_of_two("127.0.0.1:2");
    consensus.metrics.send_modify(|m| {
        m.current_term = 4;
        m.last_log_index = Some(12);
    });
    let status = service
        .status(Request::new(pb::StatusRequest {}))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        (
            status.node_id,
            status.state.as_str(),
            status.term,
            status.leader_id
        ),
        (1, "leader", 4, Some(1))
    );
    assert_eq!(status.cluster_name, "test");
    assert!(status.has_state);
    let members: Vec<(u64, &str, &str, Option<u64>)> = status
        .members
        .iter()
        .map(|m| {
            (
                m.node_id,
                m.address.as_str(),
                m.role.as_str(),
                m.matched_index,
            )
        })
        .collect();
    assert_eq!(
        members,
        vec![
            (1, "127.0.0.1:1", "voter", Some(12)),
            (2, "127.0.0.1:2", "voter", None)
        ]
    );
}
