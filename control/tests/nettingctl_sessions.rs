//! `nettingctl sessions`, `nettingctl config` and the admin `/debug/sessions` against a real
//! 3-replica cluster with simulated sidecars connected to different replicas.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::collections::BTreeSet;
use std::process::{Command, Output};

use serde_json::Value;
use support::sidecar::SimSidecar;
use support::*;

/// Runs nettingctl off the async workers, so the simulated sidecars keep acknowledging.
async fn nettingctl(args: &[&str]) -> Output {
    let args: Vec<String> = args.iter().map(|a| (*a).to_owned()).collect();
    tokio::task::spawn_blocking(move || {
        let mut cmd = Command::new(CTL);
        cmd.args(&args);
        output_within(cmd, EXIT_PATIENCE)
    })
    .await
    .unwrap()
}

/// Runs nettingctl, requires success, and parses its JSON output.
async fn nettingctl_json(args: &[&str]) -> Value {
    let output = nettingctl(args).await;
    let text = |bytes: &[u8]| String::from_utf8_lossy(bytes).into_owned();
    assert!(
        output.status.success(),
        "nettingctl {args:?} failed ({:?}): {}",
        output.status.code(),
        text(&output.stderr)
    );
    serde_json::from_slice(&output.stdout)
        .unwrap_or_else(|e| panic!("not JSON ({e}): {}", text(&output.stdout)))
}

/// The JSON body of an admin endpoint, if it answered 200.
async fn admin_json(addr: &str, path: &str) -> Option<Value> {
    let answer = http_get(addr, path).await?;
    if !is_http_ok(&answer) {
        return None;
    }
    let (_, body) = answer.split_once("\r\n\r\n")?;
    serde_json::from_str(body).ok()
}

/// Three sidecars, each first dialling a different replica: once they converged, `sessions`
/// counts 3 with the slowest acknowledged version equal to the catalog version, `config` finds
/// each sidecar on some replica, and the replicas' `/debug/sessions` list exactly those pods.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sessions_config_and_debug_sessions_see_connected_sidecars() {
    let cluster = TestCluster::start(3, &[]).await;
    let leader = cluster.wait_settled().await;
    let written = register_retrying(cluster.replica(leader), register_request("web", 1)).await;
    let version = cluster.wait_converged(written).await;

    let grpc: Vec<String> = cluster.replicas.iter().map(|r| r.grpc.clone()).collect();
    let pods = ["web-0", "web-1", "web-2"];
    let mut sidecars: Vec<SimSidecar> = pods
        .iter()
        .enumerate()
        .map(|(i, pod)| {
            let mut order = grpc.clone();
            order.rotate_left(i);
            SimSidecar::spawn((*pod).to_owned(), order, vec!["default".to_owned()])
        })
        .collect();
    for sidecar in &mut sidecars {
        assert!(
            sidecar.wait_for(version).await,
            "a sidecar never reached {version}"
        );
    }

    // The sidecars apply before they ACK, so the replicas may record the ACKs a little later.
    let addrs = grpc.join(",");
    let last = std::sync::Mutex::new(Value::Null);
    let converged = wait_until(PATIENCE, || {
        let addrs = addrs.clone();
        let last = &last;
        async move {
            let report = nettingctl_json(&["--addr", &addrs, "sessions", "--output", "json"]).await;
            *last.lock().unwrap() = report.clone();
            let total = &report["total"];
            let versions: Vec<Option<u64>> = report["replicas"]
                .as_array()?
                .iter()
                .map(|r| r["catalog_version"].as_u64())
                .collect();
            (total["session_count"] == 3
                && total["slowest_acked_version"].as_u64() == Some(version)
                && total["sessions_behind"] == 0
                && versions.iter().all(|v| *v == Some(version)))
            .then_some(report)
        }
    })
    .await;
    let report = converged.unwrap_or_else(|| {
        panic!(
            "sessions never showed 3 sidecars at {version}: {:#}\n{}",
            last.lock().unwrap(),
            cluster.logs()
        )
    });
    let listed: BTreeSet<String> = report["replicas"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|r| r["sessions"].as_array().unwrap().iter())
        .map(|s| {
            format!(
                "{}/{}",
                s["namespace"].as_str().unwrap(),
                s["pod"].as_str().unwrap()
            )
        })
        .collect();
    assert_eq!(
        listed,
        BTreeSet::from(pods.map(|pod| format!("default/{pod}")))
    );

    for pod in pods {
        let view = nettingctl_json(&[
            "--addr",
            &addrs,
            "config",
            &format!("default/{pod}"),
            "--output",
            "json",
        ])
        .await;
        assert_eq!(view["sidecar"], format!("default/{pod}"), "{view:#}");
        assert!(
            grpc.iter().any(|a| view["replica"] == a.as_str()),
            "{view:#}"
        );
        assert_eq!(view["session"]["acked_version"], version, "{view:#}");
        let web = &view["services"][0];
        assert_eq!(
            (&web["namespace"], &web["name"]),
            (&Value::from("default"), &Value::from("web"))
        );
        assert_eq!(web["endpoints"][0]["address"], "10.0.0.1");
    }

    let mut over_http = BTreeSet::new();
    for replica in &cluster.replicas {
        let view = admin_json(&replica.admin, "/debug/sessions")
            .await
            .unwrap_or_else(|| panic!("no /debug/sessions from node {}", replica.id));
        assert_eq!(view["node_id"], replica.id, "{view:#}");
        assert_eq!(view["catalog_version"], version, "{view:#}");
        for session in view["sessions"].as_array().unwrap() {
            assert_eq!(session["acked_version"], version, "{view:#}");
            over_http.insert(session["pod"].as_str().unwrap().to_owned());
        }
    }
    assert_eq!(over_http, BTreeSet::from(pods.map(str::to_owned)));
}

/// `config` for a pod no sidecar runs as exits 1 and names every replica it asked.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn config_of_an_unknown_pod_fails_naming_the_replicas() {
    let cluster = TestCluster::start(3, &[]).await;
    cluster.wait_settled().await;
    let leader_addr = &cluster.replica(0).grpc;
    // One address: the others are found through the members list.
    let output = nettingctl(&["--addr", leader_addr, "config", "default/nobody"]).await;
    assert_eq!(output.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.starts_with("error: sidecar default/nobody is not connected to any replica asked"),
        "{stderr}"
    );
    for replica in &cluster.replicas {
        assert!(
            stderr.contains(&format!("  {}: not connected here", replica.grpc)),
            "{stderr}"
        );
    }
}
