//! `nettingctl` against a real 3-replica cluster: status across replicas (one of them a dead
//! address), catalog writes and linearizable reads, the members list, and bad input refused
//! before anything is sent.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::collections::BTreeSet;
use std::process::{Command, Output};

use netting_proto::catalog::v1 as pb;
use serde_json::Value;
use support::*;

fn nettingctl(args: &[&str]) -> Output {
    let mut cmd = Command::new(CTL);
    cmd.args(args);
    output_within(cmd, EXIT_PATIENCE)
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// Runs nettingctl, requires success, and parses its JSON output.
fn nettingctl_json(args: &[&str]) -> Value {
    let output = nettingctl(args);
    assert!(
        output.status.success(),
        "nettingctl {args:?} failed ({:?}): {}",
        output.status.code(),
        text(&output.stderr)
    );
    serde_json::from_slice(&output.stdout)
        .unwrap_or_else(|e| panic!("not JSON ({e}): {}", text(&output.stdout)))
}

/// An address nothing listens on, first in the list, then every replica.
fn addrs_with_a_dead_one(cluster: &TestCluster) -> (String, String) {
    let dead = format!("127.0.0.1:{}", free_port());
    let mut all = vec![dead.clone()];
    all.extend(cluster.replicas.iter().map(|r| r.grpc.clone()));
    (dead, all.join(","))
}

/// `status` over a dead address and the three replicas shows the dead one as unreachable and
/// the three replicas with their ids, exactly one of them the leader, which all of them name.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn status_lists_every_replica_and_one_leader() {
    let cluster = TestCluster::start(3, &[]).await;
    let leader = cluster.wait_for_leader().await;
    let (dead, addrs) = addrs_with_a_dead_one(&cluster);

    // An election may be under way on a busy machine; wait for a stable picture.
    let mut last = Value::Null;
    let settled = wait_until(PATIENCE, || {
        let rows = nettingctl_json(&["--addr", &addrs, "status", "--output", "json"]);
        last = rows.clone();
        async move {
            let rows = rows.as_array()?.clone();
            let leaders: Vec<&Value> = rows.iter().filter(|r| r["state"] == "leader").collect();
            let answered = rows.iter().filter(|r| r["error"].is_null()).count();
            (answered == 3 && leaders.len() == 1).then_some(rows)
        }
    })
    .await;
    let rows = settled.unwrap_or_else(|| panic!("no stable status with one leader: {last:#}"));

    assert_eq!(rows.len(), 4, "one row per address: {rows:#?}");
    let dead_row = rows.iter().find(|r| r["address"] == dead.as_str()).unwrap();
    assert_eq!(dead_row["state"], "unreachable");
    let ids: BTreeSet<u64> = rows
        .iter()
        .filter(|r| r["error"].is_null())
        .filter_map(|r| r["id"].as_u64())
        .collect();
    assert_eq!(ids, BTreeSet::from([0, 1, 2]));
    let the_leader = rows.iter().find(|r| r["state"] == "leader").unwrap();
    let leader_id = the_leader["id"].as_u64().unwrap();
    assert_eq!(leader_id, leader);
    for row in rows.iter().filter(|r| r["error"].is_null()) {
        assert_eq!(row["leader"].as_u64(), Some(leader_id), "{row}");
    }
}

/// `catalog register` through a list starting with a dead address succeeds, and `catalog get
/// --linearizable` then shows the endpoint.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn register_then_linearizable_get_shows_the_endpoint() {
    let cluster = TestCluster::start(3, &[]).await;
    cluster.wait_settled().await;
    let (_, addrs) = addrs_with_a_dead_one(&cluster);

    let written = nettingctl_json(&[
        "--addr",
        &addrs,
        "catalog",
        "register",
        "default/web",
        "--address",
        "10.0.0.1",
        "--port",
        "8080",
        "--output",
        "json",
    ]);
    let version = written["version"].as_u64().unwrap();
    assert!(version > 0, "{written}");

    let got = nettingctl_json(&[
        "--addr",
        &addrs,
        "catalog",
        "get",
        "default/web",
        "--linearizable",
        "--output",
        "json",
    ]);
    assert!(got["version"].as_u64().unwrap() >= version, "{got:#}");
    let service = &got["service"];
    assert_eq!(service["namespace"], "default");
    assert_eq!(service["name"], "web");
    assert_eq!(service["source"], "api");
    let endpoints = service["endpoints"].as_array().unwrap();
    assert_eq!(endpoints.len(), 1, "{got:#}");
    assert_eq!(endpoints[0]["address"], "10.0.0.1");
    assert_eq!(endpoints[0]["port"], 8080);
    assert_eq!(endpoints[0]["ready"], true);
}

/// `members list` shows the three replicas as voters at their addresses, one of them the
/// leader.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn members_list_shows_three_voters_and_the_leader() {
    let cluster = TestCluster::start(3, &[]).await;
    let (_, addrs) = addrs_with_a_dead_one(&cluster);

    let mut last = Value::Null;
    let settled = wait_until(PATIENCE, || {
        let rows = nettingctl_json(&["--addr", &addrs, "members", "list", "--output", "json"]);
        last = rows.clone();
        async move {
            let rows = rows.as_array()?.clone();
            let leaders = rows.iter().filter(|r| r["leader"] == true).count();
            (leaders == 1).then_some(rows)
        }
    })
    .await;
    let rows = settled.unwrap_or_else(|| panic!("no members list with one leader: {last:#}"));

    let listed: BTreeSet<(u64, String, String)> = rows
        .iter()
        .map(|r| {
            (
                r["id"].as_u64().unwrap(),
                r["address"].as_str().unwrap().to_owned(),
                r["role"].as_str().unwrap().to_owned(),
            )
        })
        .collect();
    let expected: BTreeSet<(u64, String, String)> = cluster
        .replicas
        .iter()
        .map(|r| (r.id, r.grpc.clone(), "voter".to_owned()))
        .collect();
    assert_eq!(listed, expected);
}

/// A bad service name (`default/Web`) is refused by nettingctl with exit code 2 and a message
/// naming the field, and nothing is written.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_input_exits_2_and_writes_nothing() {
    let cluster = TestCluster::start(3, &[]).await;
    let leader = cluster.wait_settled().await;
    let (_, addrs) = addrs_with_a_dead_one(&cluster);
    let list = || async {
        cluster
            .replica(leader)
            .catalog()
            .await
            .list_services(pb::ListServicesRequest {
                namespace: String::new(),
                consistency: pb::Consistency::Linearizable as i32,
            })
            .await
            .unwrap()
            .into_inner()
    };
    let before = list().await;

    let output = nettingctl(&[
        "--addr",
        &addrs,
        "catalog",
        "register",
        "default/Web",
        "--address",
        "10.0.0.1",
        "--port",
        "8080",
    ]);
    let stderr = text(&output.stderr);
    assert_eq!(output.status.code(), Some(2), "{stderr}");
    assert!(
        stderr.contains("invalid service") && stderr.contains("\"Web\""),
        "the message must name the field and the value:\n{stderr}"
    );
    assert!(output.stdout.is_empty(), "{}", text(&output.stdout));

    let after = list().await;
    assert_eq!(after.version, before.version, "the catalog version moved");
    assert_eq!(after.services, before.services);
    assert!(
        after
            .services
            .iter()
            .all(|s| !s.name.eq_ignore_ascii_case("web"))
    );
}
