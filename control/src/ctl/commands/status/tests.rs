#![allow(clippy::unwrap_used, clippy::expect_used)]

use netting_proto::catalog::v1::Member;
use tonic::Status;

use super::*;

fn status(id: u64, state: &str, term: u64, last: u64, applied: u64) -> StatusResponse {
    StatusResponse {
        node_id: id,
        address: format!("10.0.0.{id}:7100"),
        state: state.to_owned(),
        term,
        leader_id: Some(1),
        last_log_index: last,
        committed_index: applied,
        applied_index: applied,
        catalog_version: applied,
        ..StatusResponse::default()
    }
}

fn probe(address: &str, result: Result<StatusResponse, CallError>) -> Probe {
    Probe {
        address: address.to_owned(),
        member_id: None,
        result,
    }
}

/// Lag is the leader's last log index minus each replica's applied index, never negative.
#[test]
fn lag_is_measured_against_the_leaders_last_log_index() {
    let rows = rows(&[
        probe("b:1", Ok(status(2, "follower", 4, 40, 37))),
        probe("a:1", Ok(status(1, "leader", 4, 42, 41))),
        probe("c:1", Ok(status(3, "follower", 4, 45, 45))),
    ]);
    let lags: Vec<_> = rows.iter().map(|r| (r.id, r.lag)).collect();
    assert_eq!(
        lags,
        [(Some(1), Some(1)), (Some(2), Some(5)), (Some(3), Some(0))]
    );
    assert_eq!(lag(None, 3), None);
}

/// A deposed leader with an older term is not the lag reference.
#[test]
fn highest_term_leader_is_the_reference() {
    let old = status(1, "leader", 3, 100, 100);
    let new = status(2, "leader", 4, 20, 20);
    assert_eq!(leader_last_log_index([&old, &new]), Some(20));
    assert_eq!(
        leader_last_log_index([&status(3, "follower", 4, 9, 9)]),
        None
    );
}

/// Unreachable replicas are rows with the error, sorted after known ids; application errors say "error".
#[test]
fn failed_replicas_are_rows_with_their_error() {
    let rows = rows(&[
        probe("z:1", Err(CallError::Connect("connection refused".into()))),
        Probe {
            address: "c:1".into(),
            member_id: Some(3),
            result: Err(CallError::TimedOut(std::time::Duration::from_secs(5))),
        },
        probe("y:1", Err(CallError::Status(Status::unimplemented("")))),
        probe("a:1", Ok(status(1, "leader", 2, 10, 10))),
    ]);
    let summary: Vec<_> = rows
        .iter()
        .map(|r| {
            (
                r.id,
                r.address.as_str(),
                r.state.as_str(),
                r.error.as_deref(),
            )
        })
        .collect();
    assert_eq!(
        summary,
        [
            (Some(1), "a:1", "leader", None),
            (Some(3), "c:1", "unreachable", Some("no answer within 5s")),
            (None, "y:1", "error", Some("UNIMPLEMENTED")),
            (
                None,
                "z:1",
                "unreachable",
                Some("cannot connect: connection refused")
            ),
        ]
    );
}

/// The table has one header and one aligned line per replica, with dashes for unknowns.
#[test]
fn status_table_renders() {
    let report = StatusReport(rows(&[
        probe("10.0.0.1:7100", Ok(status(1, "leader", 2, 12, 10))),
        probe("10.0.0.2:7100", Err(CallError::Connect("refused".into()))),
    ]));
    assert_eq!(
        report.to_table(),
        "ID  ADDRESS        STATE        TERM  LEADER  APPLIED  COMMIT  LAG  VERSION  ERROR\n\
         1   10.0.0.1:7100  leader       2     1       10       10      2    10\n\
         -   10.0.0.2:7100  unreachable  -     -       -        -       -    -        cannot connect: refused\n"
    );
}

/// JSON output is an array of objects carrying every column, null when unknown.
#[test]
fn status_json_is_an_array_of_rows() {
    let report = StatusReport(rows(&[probe("a:1", Err(CallError::Connect("x".into())))]));
    let value = serde_json::to_value(&report).unwrap();
    assert_eq!(
        value,
        serde_json::json!([{
            "id": null, "address": "a:1", "state": "unreachable", "term": null,
            "leader": null, "applied_index": null, "commit_index": null, "lag": null,
            "catalog_version": null, "error": "cannot connect: x"
        }])
    );
}

/// Members already asked (by id or address) are not asked twice; bad addresses are kept as errors.
#[test]
fn members_to_follow_skips_what_was_asked() {
    let member = |id: u64, address: &str| Member {
        node_id: id,
        address: address.to_owned(),
        role: "voter".to_owned(),
        matched_index: None,
    };
    let first = StatusResponse {
        node_id: 1,
        members: vec![
            member(1, "10.0.0.1:7100"),
            member(2, "http://svc:7100"),
            member(3, "10.0.0.3:7100"),
            member(4, "not a host"),
        ],
        ..StatusResponse::default()
    };
    let asked = [Target::parse("svc:7100").unwrap()];
    let follow = members_to_follow(&first, &asked);
    assert_eq!(follow.len(), 2);
    assert_eq!(follow[0].node_id, 3);
    assert_eq!(
        follow[0].target,
        Ok(Target::parse("10.0.0.3:7100").unwrap())
    );
    assert_eq!(
        (follow[1].node_id, follow[1].reported.as_str()),
        (4, "not a host")
    );
    assert!(follow[1].target.is_err());
}

/// An unreachable replica listed by an answering peer gets the id the peer knows it by.
#[test]
fn unreachable_rows_take_their_id_from_answering_peers() {
    let mut answering = status(1, "follower", 2, 10, 10);
    answering.members = vec![Member {
        node_id: 2,
        address: "http://B:7100/".into(),
        role: "voter".into(),
        matched_index: None,
    }];
    let rows = rows(&[
        probe("b:7100", Err(CallError::Connect("refused".into()))),
        probe("a:7100", Ok(answering)),
    ]);
    assert_eq!(rows[1].id, Some(2));
    assert_eq!(rows[1].state, "unreachable");
}
