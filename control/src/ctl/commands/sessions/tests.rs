#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::Duration;

use tonic::Status;

use super::*;
use crate::ctl::target::Target;

fn session(pod: &str, acked: u64, sent: Option<u64>, nacks: u32) -> SessionInfo {
    SessionInfo {
        pod: pod.to_owned(),
        namespace: "default".to_owned(),
        proxy_version: "1.2.0".to_owned(),
        acked_version: acked,
        sent_version: sent,
        connected_for_ms: 185_000,
        nacks,
    }
}

fn views(sessions: &[SessionInfo]) -> Vec<SessionView> {
    sessions.iter().map(SessionView::from_proto).collect()
}

fn known(address: &str, node_id: Option<u64>) -> KnownReplica {
    KnownReplica {
        node_id,
        address: address.to_owned(),
        target: Target::parse(address).map_err(|e| e.to_string()),
    }
}

fn answered(address: &str, node_id: u64, version: u64, sessions: Vec<SessionInfo>) -> Probe {
    Probe {
        replica: known(address, None),
        result: Ok(ListSessionsResponse {
            node_id,
            catalog_version: version,
            sessions,
        }),
    }
}

/// The slowest acknowledged version is the minimum over sessions, "behind" counts acks below the
/// catalog version (an update in flight included), and NACKs add up.
#[test]
fn summary_takes_the_slowest_ack_and_counts_sessions_behind() {
    let sessions = views(&[
        session("a", 12, None, 0),
        session("b", 9, Some(12), 2),
        session("c", 12, None, 1),
    ]);
    assert_eq!(
        Summary::of(12, &sessions),
        Summary {
            session_count: 3,
            slowest_acked_version: Some(9),
            sessions_behind: 1,
            nacks: 3,
        }
    );
}

/// Without sessions there is no slowest version, and a sidecar that acknowledged nothing yet is the slowest (0).
#[test]
fn summary_without_sessions_has_no_slowest_and_unacked_counts_as_zero() {
    assert_eq!(Summary::of(7, &[]).slowest_acked_version, None);
    assert_eq!(Summary::of(7, &[]).sessions_behind, 0);
    let fresh = views(&[session("a", 7, None, 0), session("b", 0, Some(7), 0)]);
    let summary = Summary::of(7, &fresh);
    assert_eq!(summary.slowest_acked_version, Some(0));
    assert_eq!(summary.sessions_behind, 1);
}

/// Merging keeps the lowest slowest version, ignores a side without sessions, and adds the counts.
#[test]
fn merged_summaries_keep_the_overall_slowest() {
    let a = Summary::of(10, &views(&[session("a", 8, None, 1)]));
    let b = Summary::of(
        11,
        &views(&[session("b", 11, None, 0), session("c", 10, None, 0)]),
    );
    let total = a.merge(b).merge(Summary::default());
    assert_eq!(
        total,
        Summary {
            session_count: 3,
            slowest_acked_version: Some(8),
            sessions_behind: 2,
            nacks: 1,
        }
    );
    assert_eq!(
        Summary::default().merge(Summary::default()),
        Summary::default()
    );
}

/// Replicas are sorted by node id with failures last; totals count only replicas that answered;
/// sessions are sorted by namespace and pod.
#[test]
fn report_sorts_replicas_and_totals_the_answered_ones() {
    let probes = vec![
        Probe {
            replica: known("10.0.0.9:7100", None),
            result: Err(CallError::Connect("connection refused".into())),
        },
        answered(
            "10.0.0.2:7100",
            2,
            12,
            vec![
                session("web-1", 12, None, 0),
                session("api-0", 11, Some(12), 1),
            ],
        ),
        answered("10.0.0.1:7100", 1, 12, vec![session("db-0", 12, None, 0)]),
        Probe {
            replica: known("10.0.0.3:7100", Some(3)),
            result: Err(CallError::Status(Status::unimplemented(""))),
        },
    ];
    let report = report(&probes, false);
    let rows: Vec<_> = report
        .replicas
        .iter()
        .map(|r| (r.node_id, r.state.as_str()))
        .collect();
    assert_eq!(
        rows,
        [
            (Some(1), "ok"),
            (Some(2), "ok"),
            (Some(3), "error"),
            (None, "unreachable")
        ]
    );
    let pods: Vec<&str> = report.replicas[1]
        .sessions
        .iter()
        .map(|s| s.pod.as_str())
        .collect();
    assert_eq!(pods, ["api-0", "web-1"]);
    assert_eq!(
        report.total,
        Summary {
            session_count: 3,
            slowest_acked_version: Some(11),
            sessions_behind: 1,
            nacks: 1,
        }
    );
}

/// The table has one row per replica (dashes where unknown), a totals line, and with --verbose
/// every session.
#[test]
fn table_shows_replicas_totals_and_verbose_sessions() {
    let probes = vec![
        answered(
            "10.0.0.1:7100",
            1,
            12,
            vec![
                session("web-0", 12, None, 0),
                session("api-0", 11, Some(12), 2),
            ],
        ),
        answered("10.0.0.2:7100", 2, 12, vec![]),
        Probe {
            replica: known("10.0.0.3:7100", Some(3)),
            result: Err(CallError::TimedOut(Duration::from_secs(5))),
        },
    ];
    let quiet = report(&probes, false);
    assert_eq!(
        quiet.to_table(),
        "ID  ADDRESS        STATE        VERSION  SESSIONS  SLOWEST-ACKED  BEHIND  NACKS  ERROR\n\
         1   10.0.0.1:7100  ok           12       2         11             1       2\n\
         2   10.0.0.2:7100  ok           12       0         -              0       0\n\
         3   10.0.0.3:7100  unreachable  -        -         -              -       -      no answer within 5s\n\
         \n\
         2 sessions on 2 of 3 replicas; slowest acknowledged version 11; 1 behind; 2 NACKs\n"
    );
    let verbose = report(&probes, true).to_table();
    let sessions: Vec<&str> = verbose.lines().skip(7).collect();
    assert_eq!(
        sessions,
        [
            "REPLICA  NAMESPACE/POD  PROXY-VERSION  ACKED  IN-FLIGHT  CONNECTED  NACKS",
            "1        default/api-0  1.2.0          11     12         3m05s      2",
            "1        default/web-0  1.2.0          12     -          3m05s      0",
        ],
        "{verbose}"
    );
}

/// JSON carries every replica with its summary and sessions, and the totals, whatever --verbose says.
#[test]
fn json_has_full_data() {
    let probes = vec![answered(
        "10.0.0.1:7100",
        1,
        12,
        vec![session("web-0", 12, None, 0)],
    )];
    let json = serde_json::to_value(report(&probes, false)).unwrap();
    assert_eq!(json["total"]["session_count"], 1);
    assert_eq!(json["total"]["slowest_acked_version"], 12);
    let replica = &json["replicas"][0];
    assert_eq!(replica["node_id"], 1);
    assert_eq!(replica["catalog_version"], 12);
    assert_eq!(replica["summary"]["sessions_behind"], 0);
    assert_eq!(
        replica["sessions"][0],
        serde_json::json!({
            "namespace": "default",
            "pod": "web-0",
            "proxy_version": "1.2.0",
            "acked_version": 12,
            "sent_version": null,
            "connected_for_ms": 185_000,
            "nacks": 0,
        })
    );
    assert!(json.get("verbose").is_none());
}
