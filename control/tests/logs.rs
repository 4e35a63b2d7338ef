//! What replicas write to a log file: no colour escape codes, no ERROR for what happens in
//! every healthy cluster (bootstrap, a peer killed and restarted), one WARN when a peer goes
//! down and one INFO when it is back, and JSON lines when asked.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use support::*;

/// The lines of `text` that contain `needle`.
fn lines_with<'t>(text: &'t str, needle: &str) -> Vec<&'t str> {
    text.lines().filter(|l| l.contains(needle)).collect()
}

/// A 3-replica cluster bootstraps from empty disks, loses a follower to `kill -9` and gets it
/// back, with every replica's stderr going to a file: the files hold no escape code, no ERROR
/// line and none of openraft's per-attempt replication lines; the leader says once that the
/// peer stopped answering and once that it answers again; the replica asked for JSON writes
/// only JSON objects.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replica_logs_are_plain_quiet_and_say_a_peer_outage_once() {
    let mut cluster = TestCluster::new(3, &[]);
    cluster.replicas[2]
        .extra_env
        .push(("NETTING_LOG_FORMAT".into(), "json".into()));
    for r in &mut cluster.replicas {
        r.start();
    }
    let leader = cluster.wait_for_leader().await;
    // A follower in plain format, so that its restart is seen in a plain log too.
    let victim = (0..3).find(|id| *id != leader && *id != 2).unwrap_or(2);
    // What the leader says from here on is about this outage (a slow start on a busy machine
    // may have had its own, before).
    let before_kill = cluster.replica(leader).log_text().len();
    cluster.replica_mut(victim).kill();

    let down = format!("raft peer is not answering peer={victim}");
    let said_down = wait_until(PATIENCE, || {
        let log = cluster.replica(leader).log_text();
        let json = leader == 2;
        let found = if json {
            log.contains("raft peer is not answering")
                && log.contains(&format!("\"peer\":{victim}"))
        } else {
            log.contains(&down)
        };
        async move { found.then_some(()) }
    })
    .await;
    assert!(
        said_down.is_some(),
        "the leader never said replica {victim} stopped answering\n{}",
        cluster.logs()
    );

    cluster.replica_mut(victim).start();
    let said_back = wait_until(PATIENCE, || {
        let found = cluster
            .replica(leader)
            .log_text()
            .contains("raft peer is answering again");
        async move { found.then_some(()) }
    })
    .await;
    assert!(
        said_back.is_some(),
        "the leader never said replica {victim} answers again\n{}",
        cluster.logs()
    );

    let leader_log = cluster.replica(leader).log_text()[before_kill..].to_owned();
    assert_eq!(
        lines_with(&leader_log, "raft peer is not answering").len(),
        1,
        "one outage, one WARN:\n{leader_log}"
    );
    assert_eq!(
        lines_with(&leader_log, "raft peer is answering again").len(),
        1,
        "one return, one INFO:\n{leader_log}"
    );
    for r in &cluster.replicas {
        let log = r.log_text();
        assert!(
            !log.contains('\x1b'),
            "replica {} log has escape codes",
            r.id
        );
        assert!(
            lines_with(&log, "ERROR").is_empty()
                && lines_with(&log, "\"level\":\"ERROR\"").is_empty(),
            "replica {} logged an ERROR:\n{log}",
            r.id
        );
        assert!(
            lines_with(&log, "openraft::replication").is_empty(),
            "replica {} logged openraft's per-attempt lines:\n{log}",
            r.id
        );
    }
    let json_log = cluster.replica(2).log_text();
    assert!(!json_log.is_empty());
    for line in json_log.lines() {
        let value: serde_json::Value =
            serde_json::from_str(line).unwrap_or_else(|e| panic!("not a JSON line ({e}): {line}"));
        assert!(value.is_object(), "{line}");
    }
}
