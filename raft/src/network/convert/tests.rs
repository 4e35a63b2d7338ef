#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::{BTreeMap, BTreeSet};

use netting_proto::raft::v1 as pb;
use openraft::raft::{
    AppendEntriesRequest, AppendEntriesResponse, InstallSnapshotRequest, InstallSnapshotResponse,
    VoteRequest, VoteResponse,
};
use openraft::{BasicNode, CommittedLeaderId, EntryPayload, Membership};
use serde::Serialize;

use super::*;
use crate::catalog::{CatalogCommand, CommandBatch, RequestId, ServiceKey, Source};
use crate::types::{Entry, LogId, SnapshotMeta, StoredMembership, Vote};

fn log_id(term: u64, node: u64, index: u64) -> LogId {
    LogId::new(CommittedLeaderId::new(term, node), index)
}

fn membership() -> Membership<u64, BasicNode> {
    let nodes = BTreeMap::from([
        (1, BasicNode::new("10.0.0.1:7000")),
        (2, BasicNode::new("10.0.0.2:7000")),
        (3, BasicNode::new("10.0.0.3:7000")),
    ]);
    Membership::new(vec![BTreeSet::from([1, 2, 3])], nodes)
}

fn batch() -> CommandBatch {
    CommandBatch {
        commands: vec![
            CatalogCommand::InitCluster {
                cluster_id: "6f1c".to_owned(),
            },
            CatalogCommand::DeleteService {
                key: ServiceKey::new("shop", "cart").unwrap(),
                source: Some(Source::File),
            },
        ],
        request_ids: vec![
            None,
            Some(RequestId {
                client: "nettingctl-1".to_owned(),
                sequence: 3,
            }),
        ],
    }
}

/// One entry of each payload kind.
fn entries() -> Vec<Entry> {
    vec![
        Entry {
            log_id: log_id(2, 1, 7),
            payload: EntryPayload::Blank,
        },
        Entry {
            log_id: log_id(2, 1, 8),
            payload: EntryPayload::Normal(batch()),
        },
        Entry {
            log_id: log_id(2, 1, 9),
            payload: EntryPayload::Membership(membership()),
        },
    ]
}

fn snapshot_meta() -> SnapshotMeta {
    SnapshotMeta {
        last_log_id: Some(log_id(3, 2, 40)),
        last_membership: StoredMembership::new(Some(log_id(1, 1, 3)), membership()),
        snapshot_id: "3-2-40-17".to_owned(),
    }
}

/// openraft's request types do not implement `PartialEq`; their serde form is a faithful
/// stand-in for comparing them.
fn same<T: Serialize>(a: &T, b: &T) {
    assert_eq!(
        serde_json::to_value(a).unwrap(),
        serde_json::to_value(b).unwrap()
    );
}

/// An AppendEntries request with blank, normal and membership entries survives the round trip.
#[test]
fn append_entries_request_round_trips() {
    let req = AppendEntriesRequest::<TypeConfig> {
        vote: Vote::new_committed(2, 1),
        prev_log_id: Some(log_id(1, 3, 6)),
        entries: entries(),
        leader_commit: Some(log_id(2, 1, 7)),
    };
    let back =
        append_entries_request_from_proto(append_entries_request_to_proto(&req).unwrap()).unwrap();
    same(&req, &back);

    // Absent log ids (an empty log) stay absent rather than becoming index 0.
    let heartbeat = AppendEntriesRequest::<TypeConfig> {
        vote: Vote::new(1, 2),
        prev_log_id: None,
        entries: vec![],
        leader_commit: None,
    };
    let back =
        append_entries_request_from_proto(append_entries_request_to_proto(&heartbeat).unwrap())
            .unwrap();
    same(&heartbeat, &back);
}

/// Every AppendEntries outcome, including a partial success with no log id, survives the round trip.
#[test]
fn append_entries_response_round_trips() {
    for resp in [
        AppendEntriesResponse::Success,
        AppendEntriesResponse::PartialSuccess(Some(log_id(4, 2, 11))),
        AppendEntriesResponse::PartialSuccess(None),
        AppendEntriesResponse::Conflict,
        AppendEntriesResponse::HigherVote(Vote::new(5, 3)),
    ] {
        let back =
            append_entries_response_from_proto(append_entries_response_to_proto(&resp)).unwrap();
        assert_eq!(resp, back);
    }
}

/// Vote requests and responses survive the round trip, with and without a last log id.
#[test]
fn vote_round_trips() {
    for last_log_id in [None, Some(log_id(3, 1, 20))] {
        let req = VoteRequest::new(Vote::new(4, 2), last_log_id);
        assert_eq!(
            req,
            vote_request_from_proto(vote_request_to_proto(&req)).unwrap()
        );

        let resp = VoteResponse {
            vote: Vote::new_committed(4, 2),
            vote_granted: true,
            last_log_id,
        };
        assert_eq!(
            resp,
            vote_response_from_proto(vote_response_to_proto(&resp)).unwrap()
        );
    }
}

/// A snapshot chunk, its metadata (membership included) and the answer survive the round trip.
#[test]
fn install_snapshot_round_trips() {
    let req = InstallSnapshotRequest::<TypeConfig> {
        vote: Vote::new_committed(3, 2),
        meta: snapshot_meta(),
        offset: 4096,
        data: vec![1, 2, 3, 0, 255],
        done: true,
    };
    let back = install_snapshot_request_from_proto(
        install_snapshot_request_to_proto(req.clone()).unwrap(),
    )
    .unwrap();
    assert_eq!(req, back);

    let resp = InstallSnapshotResponse {
        vote: Vote::new(6, 1),
    };
    assert_eq!(
        resp,
        install_snapshot_response_from_proto(install_snapshot_response_to_proto(&resp)).unwrap()
    );
}

/// A normal entry is the serde_json of the command batch, byte for byte what the log stores.
#[test]
fn normal_payload_is_the_serde_json_batch() {
    let entry = entry_to_proto(&entries()[1]).unwrap();
    assert_eq!(
        entry.payload,
        Some(pb::entry::Payload::Normal(
            serde_json::to_vec(&batch()).unwrap()
        ))
    );
}

/// A missing vote is refused with an error naming `vote`.
#[test]
fn missing_vote_names_the_field() {
    let err = vote_request_from_proto(pb::VoteRequest {
        vote: None,
        last_log_id: None,
    })
    .unwrap_err();
    assert!(matches!(err, ConvertError::Missing { .. }));
    assert_eq!(err.field(), "vote");
}

/// A log id without its leader, deep in an entry, is refused with the full path of the field.
#[test]
fn missing_nested_leader_id_names_the_path() {
    let mut req = append_entries_request_to_proto(&AppendEntriesRequest::<TypeConfig> {
        vote: Vote::new_committed(2, 1),
        prev_log_id: None,
        entries: entries(),
        leader_commit: None,
    })
    .unwrap();
    if let Some(id) = req.entries[2].log_id.as_mut() {
        id.leader_id = None;
    }
    let err = append_entries_request_from_proto(req).unwrap_err();
    assert_eq!(err.field(), "entries[2].log_id.leader_id");
}

/// Bytes that are not a command batch are refused with an error naming the entry's payload.
#[test]
fn malformed_normal_payload_names_the_field() {
    let req = pb::AppendEntriesRequest {
        vote: Some(vote_to_proto(&Vote::new_committed(2, 1))),
        prev_log_id: None,
        entries: vec![pb::Entry {
            log_id: Some(log_id_to_proto(&log_id(2, 1, 1))),
            payload: Some(pb::entry::Payload::Normal(b"{not json".to_vec())),
        }],
        leader_commit: None,
    };
    let err = append_entries_request_from_proto(req).unwrap_err();
    assert!(matches!(err, ConvertError::Malformed { .. }));
    assert_eq!(err.field(), "entries[0].normal");

    // The server turns it into INVALID_ARGUMENT and the message names the field.
    let status = tonic::Status::from(err);
    assert_eq!(status.code(), tonic::Code::InvalidArgument);
    assert!(status.message().contains("entries[0].normal"), "{status}");
}

/// A snapshot whose membership does not decode is refused naming `meta.last_membership`.
#[test]
fn malformed_snapshot_membership_names_the_field() {
    let mut req = install_snapshot_request_to_proto(InstallSnapshotRequest::<TypeConfig> {
        vote: Vote::new_committed(3, 2),
        meta: snapshot_meta(),
        offset: 0,
        data: vec![],
        done: false,
    })
    .unwrap();
    if let Some(meta) = req.meta.as_mut() {
        meta.last_membership = b"[]".to_vec();
    }
    let err = install_snapshot_request_from_proto(req).unwrap_err();
    assert_eq!(err.field(), "meta.last_membership");
}

/// An AppendEntries response without any outcome is refused naming `result`.
#[test]
fn empty_append_entries_response_names_the_field() {
    let err =
        append_entries_response_from_proto(pb::AppendEntriesResponse { result: None }).unwrap_err();
    assert_eq!(err.field(), "result");
}
