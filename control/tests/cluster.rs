//! A 3-replica cluster of real processes on loopback: forwarding, failover without losing an
//! acknowledged write, rejoining by snapshot and a full restart.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::collections::BTreeSet;

use netting_proto::catalog::v1 as pb;
use support::*;

fn names(services: &[pb::Service]) -> BTreeSet<String> {
    services.iter().map(|s| s.name.clone()).collect()
}

/// A write sent to a follower is forwarded to the leader and acknowledged with its version,
/// and a linearizable read through another follower sees it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn writes_on_a_follower_are_forwarded() {
    let cluster = TestCluster::start(3, &[]).await;
    let leader = cluster.wait_for_leader().await;
    let followers: Vec<u64> = (0..3).filter(|id| *id != leader).collect();

    let mut client = cluster.replica(followers[0]).catalog().await;
    let written = client
        .register(register_request("web", 1))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        written.leader_id, leader,
        "the leader committed the forwarded write"
    );
    assert!(written.version > 0);

    let mut reader = cluster.replica(followers[1]).catalog().await;
    let read = reader
        .get_service(pb::GetServiceRequest {
            namespace: "default".into(),
            service: "web".into(),
            consistency: pb::Consistency::Linearizable as i32,
        })
        .await
        .unwrap()
        .into_inner();
    assert!(read.version >= written.version);
    assert_eq!(read.service.map(|s| s.endpoints.len()), Some(1));
}

/// kill -9 of the leader: a new leader is elected, writes continue, and once the old leader
/// returns every acknowledged write is in every replica's catalog.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn leader_kill_loses_no_acknowledged_write() {
    let mut cluster = TestCluster::start(3, &[]).await;
    let mut acknowledged = BTreeSet::new();
    for i in 0..10u8 {
        let name = format!("before-{i}");
        register_retrying(
            cluster.replica(u64::from(i % 3)),
            register_request(&name, i),
        )
        .await;
        acknowledged.insert(name);
    }

    let old_leader = cluster.wait_for_leader().await;
    cluster.replica_mut(old_leader).kill();
    let survivors: Vec<u64> = (0..3).filter(|id| *id != old_leader).collect();
    for i in 0..10u8 {
        let name = format!("after-{i}");
        let via = survivors[usize::from(i) % survivors.len()];
        register_retrying(cluster.replica(via), register_request(&name, i)).await;
        acknowledged.insert(name);
    }
    let new_leader = cluster.wait_for_leader().await;
    assert_ne!(new_leader, old_leader);

    cluster.replica_mut(old_leader).start();
    let leader = cluster.replica(new_leader);
    let final_version = leader
        .status()
        .await
        .map(|s| s.catalog_version)
        .unwrap_or(0);
    cluster.wait_converged(final_version).await;
    for replica in &cluster.replicas {
        let present = names(&local_services(replica).await);
        let missing: Vec<_> = acknowledged.difference(&present).collect();
        assert!(
            missing.is_empty(),
            "node {} lost acknowledged writes {missing:?}",
            replica.id
        );
    }
}

/// Raft timing for the fast-failover tests: a lease of 2 s, and a random timeout of 1–2 s on
/// top of it for an ordinary election, so the two paths are a second apart however slow the
/// machine is.
const SLOW_ELECTIONS: [&str; 6] = [
    "--heartbeat-interval",
    "100ms",
    "--election-timeout-min",
    "1000ms",
    "--election-timeout-max",
    "2000ms",
];

/// Stops the leader with `stop` and checks that the survivors replace it with one election,
/// started by the follower whose turn comes first, because the leader's connection closed.
async fn leader_replaced_by_one_fast_election(stop: impl FnOnce(&mut Replica)) {
    let mut cluster = TestCluster::start(3, &SLOW_ELECTIONS).await;
    let old_leader = cluster.wait_settled().await;
    let old_term = cluster
        .replica(old_leader)
        .status()
        .await
        .expect("leader status")
        .term;
    stop(cluster.replica_mut(old_leader));
    let new_leader = cluster.wait_for_new_leader(old_leader).await;
    let survivors: Vec<u64> = (0..3).filter(|id| *id != old_leader).collect();
    let mut fast = Vec::new();
    for id in &survivors {
        let replica = cluster.replica(*id);
        let status = replica.status().await.expect("survivor status");
        assert_eq!(
            status.term,
            old_term + 1,
            "one election, no split vote: node {id}\n{}",
            cluster.logs()
        );
        fast.push(labelled_metric(
            &replica.metrics().await,
            "netting_raft_elections_started_total",
            "trigger=\"leader_gone\"",
        ));
    }
    // Turns go by node id: the lower surviving id stands first and wins.
    assert_eq!(new_leader, survivors[0], "{}", cluster.logs());
    assert_eq!(fast, [1.0, 0.0], "{}", cluster.logs());
}

/// kill -9 of the leader: its connections close, and the first follower stands for election
/// as soon as the leader's lease has run out, not a random election timeout later.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killed_leader_is_replaced_by_a_fast_election() {
    leader_replaced_by_one_fast_election(Replica::kill).await;
}

/// A leader that stops gracefully (SIGTERM, as in a rolling update) ends its liveness streams
/// on the way out, with the same effect as a crash.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stopped_leader_is_replaced_by_a_fast_election() {
    leader_replaced_by_one_fast_election(|replica| {
        replica.terminate();
    })
    .await;
}

/// With --fast-failover false the followers wait for the ordinary election timeout.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fast_failover_can_be_turned_off() {
    let mut args = SLOW_ELECTIONS.to_vec();
    args.extend(["--fast-failover", "false"]);
    let mut cluster = TestCluster::start(3, &args).await;
    let old_leader = cluster.wait_settled().await;
    cluster.replica_mut(old_leader).kill();
    cluster.wait_for_new_leader(old_leader).await;
    for id in (0..3).filter(|id| *id != old_leader) {
        let metrics = cluster.replica(id).metrics().await;
        assert_eq!(
            labelled_metric(
                &metrics,
                "netting_raft_elections_started_total",
                "trigger=\"leader_gone\""
            ),
            0.0,
            "node {id}"
        );
    }
}

/// A replica whose data directory was wiped rejoins and receives the catalog by snapshot (the
/// leader has purged the entries it would otherwise replay).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wiped_replica_rejoins_by_snapshot() {
    let mut cluster = TestCluster::start(3, &["--snapshot-every", "20"]).await;
    let leader = cluster.wait_for_leader().await;
    let victim = (leader + 1) % 3;
    for i in 0..60u8 {
        register_retrying(
            cluster.replica(leader),
            register_request(&format!("svc-{i}"), i),
        )
        .await;
    }
    cluster.replica_mut(victim).kill();
    cluster.replica(victim).wipe();
    cluster.replica_mut(victim).start();

    let version = cluster
        .replica(leader)
        .status()
        .await
        .map(|s| s.catalog_version)
        .unwrap_or(0);
    cluster.wait_converged(version).await;
    let rejoined = cluster.replica(victim);
    assert_eq!(local_services(rejoined).await.len(), 60);
    let metrics = rejoined.metrics().await;
    let installed = metrics
        .lines()
        .find(|l| l.starts_with("netting_raft_snapshots_installed_total"))
        .and_then(|l| l.split_whitespace().last())
        .and_then(|v| v.parse::<f64>().ok())
        .unwrap_or(0.0);
    assert!(
        installed >= 1.0,
        "the wiped replica caught up without a snapshot:\n{metrics}"
    );
}

/// Stopping all three replicas with kill -9 and starting them again recovers the catalog.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn full_restart_recovers_catalog() {
    let mut cluster = TestCluster::start(3, &["--snapshot-every", "25"]).await;
    let leader = cluster.wait_for_leader().await;
    for i in 0..40u8 {
        register_retrying(
            cluster.replica(leader),
            register_request(&format!("svc-{i}"), i),
        )
        .await;
    }
    let deregister = pb::DeregisterRequest {
        namespace: "default".into(),
        service: "svc-0".into(),
        endpoint: None,
        request_id: None,
    };
    let version = cluster
        .replica(leader)
        .catalog()
        .await
        .deregister(deregister)
        .await
        .unwrap()
        .into_inner()
        .version;
    let cluster_id = cluster
        .replica(leader)
        .status()
        .await
        .map(|s| s.cluster_id)
        .unwrap_or_default();
    assert!(!cluster_id.is_empty(), "the bootstrapped cluster has an id");

    for id in 0..3 {
        cluster.replica_mut(id).kill();
    }
    for id in 0..3 {
        cluster.replica_mut(id).start();
    }
    cluster.wait_for_leader().await;
    cluster.wait_converged(version).await;
    for replica in &cluster.replicas {
        let services = local_services(replica).await;
        assert_eq!(services.len(), 39, "node {}", replica.id);
        assert!(!names(&services).contains("svc-0"));
        let status = replica.status().await.unwrap();
        assert_eq!(
            status.cluster_id, cluster_id,
            "a restart never re-initialises the cluster"
        );
    }
}

/// The /metrics of every replica of a cluster that has served writes, forwards and reads is
/// valid Prometheus text that `promtool check metrics` finds nothing to fix in, and reports
/// exactly one leader.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn live_metrics_pass_promtool() {
    let cluster = TestCluster::start(3, &[]).await;
    for i in 0..6u8 {
        register_retrying(
            cluster.replica(u64::from(i % 3)),
            register_request(&format!("svc-{i}"), i),
        )
        .await;
    }
    let Some(promtool) = which("promtool") else {
        assert!(
            std::env::var("NETTING_REQUIRE_TOOLS").as_deref() != Ok("1"),
            "promtool is missing (Debian package prometheus) and NETTING_REQUIRE_TOOLS=1"
        );
        eprintln!("skipped: promtool not found (install Debian's prometheus package)");
        return;
    };
    let mut leaders = 0;
    for replica in &cluster.replicas {
        let response = replica.metrics().await;
        let body = response
            .split_once("\r\n\r\n")
            .map(|(_, b)| b)
            .unwrap_or_default();
        assert!(
            body.contains("netting_raft_term"),
            "node {}: {body}",
            replica.id
        );
        leaders += body
            .lines()
            .filter(|l| *l == "netting_raft_is_leader 1")
            .count();
        let mut child = std::process::Command::new(&promtool)
            .args(["check", "metrics"])
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        use std::io::Write as _;
        child
            .stdin
            .take()
            .unwrap()
            .write_all(body.as_bytes())
            .unwrap();
        let out = child.wait_with_output().unwrap();
        let report = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(
            out.status.success() && report.trim().is_empty(),
            "node {}: promtool says:\n{report}",
            replica.id
        );
    }
    assert_eq!(leaders, 1);
}

fn which(tool: &str) -> Option<std::path::PathBuf> {
    std::env::var_os("PATH")?
        .to_str()?
        .split(':')
        .map(|dir| std::path::Path::new(dir).join(tool))
        .find(|p| p.is_file())
}

/// Replica 0 — the one allowed to bootstrap — loses its disk: it finds that its peers have
/// state, joins instead of creating a new cluster, and gets the catalog; the cluster id stays.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wiped_bootstrapper_rejoins_instead_of_reinitialising() {
    let mut cluster = TestCluster::start(3, &[]).await;
    for i in 0..10u8 {
        register_retrying(
            cluster.replica(u64::from(i % 3)),
            register_request(&format!("svc-{i}"), i),
        )
        .await;
    }
    let cluster_id = cluster
        .replica(1)
        .status()
        .await
        .map(|s| s.cluster_id)
        .unwrap_or_default();
    cluster.replica_mut(0).kill();
    cluster.replica(0).wipe();
    cluster.replica_mut(0).start();

    let leader = cluster.wait_for_leader().await;
    let version = cluster
        .replica(leader)
        .status()
        .await
        .map(|s| s.catalog_version)
        .unwrap_or(0);
    cluster.wait_converged(version).await;
    let status = cluster.replica(0).status().await.unwrap();
    assert_eq!(
        status.cluster_id, cluster_id,
        "replica 0 must not have bootstrapped a new cluster"
    );
    assert_eq!(local_services(cluster.replica(0)).await.len(), 10);
    let bootstraps = cluster
        .replica(0)
        .log_text()
        .matches("bootstrapping a new cluster")
        .count();
    assert_eq!(
        bootstraps,
        1,
        "only the first start bootstraps\n{}",
        cluster.logs()
    );
}
