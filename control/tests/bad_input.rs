//! Bad input against real replica processes: malformed or oversized writes are refused at the
//! gRPC edge naming the field and write nothing, also on a follower; a data directory of
//! another cluster or node, or a corrupt one, stops start-up and is left byte for byte as it
//! was; conflicting flags stop start-up naming the flag and create nothing.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::collections::HashMap;
use std::process::Output;

use netting_proto::catalog::v1 as pb;
use support::*;
use tonic::Code;

/// What the leader's catalog holds, read linearizably: (version, services).
async fn catalog_state(replica: &Replica) -> (u64, Vec<pb::Service>) {
    let mut client = replica.catalog().await;
    let list = client
        .list_services(pb::ListServicesRequest {
            namespace: String::new(),
            consistency: pb::Consistency::Linearizable as i32,
        })
        .await
        .unwrap()
        .into_inner();
    (list.version, list.services)
}

/// Every running replica's applied catalog version, as `status` reports it.
async fn versions(cluster: &TestCluster) -> Vec<Option<u64>> {
    let mut out = Vec::new();
    for r in cluster.replicas.iter().filter(|r| r.is_running()) {
        out.push(r.status().await.map(|s| s.catalog_version));
    }
    out
}

/// Asserts that `status` is `code` and that its message is the catalog's refusal of `field`
/// (`invalid FIELD: reason`), so the operator learns which field to fix.
fn assert_refused(status: &tonic::Status, code: Code, field: &str, case: &str) {
    assert_eq!(status.code(), code, "{case}: {status:?}");
    assert!(
        status.message().starts_with(&format!("invalid {field}: ")),
        "{case}: the message must name {field:?}: {:?}",
        status.message()
    );
}

/// The malformed registrations of the brief and the field each must be refused for.
fn bad_registrations() -> Vec<(&'static str, &'static str, pb::RegisterRequest)> {
    let good = || register_request("web", 1);
    let mut cases = Vec::new();

    let mut r = good();
    r.service.clear();
    cases.push(("empty service name", "service", r));

    let mut r = good();
    r.namespace = "Prod_1".into();
    cases.push(("invalid namespace", "namespace", r));

    let mut r = good();
    r.endpoint.as_mut().unwrap().address = "10.0.0.300".into();
    cases.push(("unparsable address", "endpoint.address", r));

    let mut r = good();
    r.endpoint.as_mut().unwrap().port = 0;
    cases.push(("port 0", "endpoint.port", r));

    let mut r = good();
    r.endpoint.as_mut().unwrap().port = 65_536;
    cases.push(("port 65536", "endpoint.port", r));

    let mut r = good();
    r.endpoint = None;
    cases.push(("missing endpoint", "endpoint", r));
    cases
}

/// A registration well over 2048 bytes whose every field is valid on its own: 60 labels of
/// about 70 bytes each.
fn oversized_registration() -> pb::RegisterRequest {
    let mut r = register_request("big", 9);
    r.labels = (0..60)
        .map(|i| (format!("label-{i:02}"), "v".repeat(60)))
        .collect::<HashMap<_, _>>();
    r
}

/// Each malformed registration gets INVALID_ARGUMENT naming its field, and nothing is written:
/// the catalog version and the service list stay as they were.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_register_is_refused_naming_the_field() {
    let cluster = TestCluster::start(1, &[]).await;
    let leader = cluster.wait_settled().await;
    let replica = cluster.replica(leader);
    let before = catalog_state(replica).await;

    for (case, field, request) in bad_registrations() {
        let mut client = replica.catalog().await;
        let status = client.register(request).await.expect_err(case);
        assert_refused(&status, Code::InvalidArgument, field, case);
        assert_eq!(
            catalog_state(replica).await,
            before,
            "{case}: the catalog changed"
        );
    }
    let (_, services) = catalog_state(replica).await;
    assert!(services.is_empty(), "no service may appear: {services:?}");
}

/// A registration over `--max-request-bytes` gets INVALID_ARGUMENT naming its largest field
/// (`labels`), and nothing is written.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn oversized_register_is_refused_naming_the_largest_field() {
    let cluster = TestCluster::start(1, &["--max-request-bytes", "2048"]).await;
    let leader = cluster.wait_settled().await;
    let replica = cluster.replica(leader);
    let before = catalog_state(replica).await;

    let request = oversized_registration();
    assert!(prost::Message::encoded_len(&request) > 2048);
    let status = replica
        .catalog()
        .await
        .register(request)
        .await
        .expect_err("an oversized request must be refused");
    assert_eq!(status.code(), Code::InvalidArgument, "{status:?}");
    assert!(
        status.message().contains("over the limit of 2048 bytes")
            && status.message().contains("(largest field: labels)"),
        "the message must give the limit and name labels: {:?}",
        status.message()
    );
    assert_eq!(catalog_state(replica).await, before);

    // The same service with a small payload is accepted: the refusal was about size only.
    register_retrying(replica, register_request("big", 9)).await;
}

/// Deregistering a service or an endpoint that is not there gets NOT_FOUND and changes
/// nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deregister_of_unknown_service_or_endpoint_is_not_found() {
    let cluster = TestCluster::start(1, &[]).await;
    let leader = cluster.wait_settled().await;
    let replica = cluster.replica(leader);
    register_retrying(replica, register_request("web", 1)).await;
    let before = catalog_state(replica).await;

    let unknown_service = pb::DeregisterRequest {
        namespace: "default".into(),
        service: "ghost".into(),
        endpoint: None,
        request_id: None,
    };
    let unknown_endpoint = pb::DeregisterRequest {
        namespace: "default".into(),
        service: "web".into(),
        endpoint: Some(pb::EndpointId {
            address: "10.0.0.2".into(),
            port: 8080,
        }),
        request_id: None,
    };
    let unknown_endpoint_of_unknown_service = pb::DeregisterRequest {
        namespace: "default".into(),
        service: "ghost".into(),
        endpoint: Some(pb::EndpointId {
            address: "10.0.0.1".into(),
            port: 8080,
        }),
        request_id: None,
    };
    for (case, request) in [
        ("unknown service", unknown_service),
        ("unknown endpoint", unknown_endpoint),
        (
            "endpoint of an unknown service",
            unknown_endpoint_of_unknown_service,
        ),
    ] {
        let status = replica
            .catalog()
            .await
            .deregister(request)
            .await
            .expect_err(case);
        assert_eq!(status.code(), Code::NotFound, "{case}: {status:?}");
        assert_eq!(
            catalog_state(replica).await,
            before,
            "{case}: the catalog changed"
        );
    }
    let (_, services) = catalog_state(replica).await;
    assert_eq!(services.len(), 1);
    assert_eq!(services[0].name, "web");
    assert_eq!(services[0].endpoints.len(), 1, "web keeps its endpoint");
}

/// Bad input sent to a follower is refused exactly as on the leader, before anything is
/// forwarded: the follower's forward counter does not move and no replica's catalog changes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_input_to_a_follower_is_refused_before_forwarding() {
    let cluster = TestCluster::start(3, &["--max-request-bytes", "2048"]).await;
    let leader = cluster.wait_settled().await;
    let follower = cluster.replica((leader + 1) % 3);
    let before = catalog_state(cluster.replica(leader)).await;
    let versions_before = versions(&cluster).await;
    let forwarded =
        || async { metric_value(&follower.metrics().await, "netting_catalog_forwarded_total") };
    let forwarded_before = forwarded().await;

    for (case, field, request) in bad_registrations() {
        let status = follower
            .catalog()
            .await
            .register(request)
            .await
            .expect_err(case);
        assert_refused(&status, Code::InvalidArgument, field, case);
    }
    let status = follower
        .catalog()
        .await
        .register(oversized_registration())
        .await
        .expect_err("an oversized request must be refused");
    assert_eq!(status.code(), Code::InvalidArgument, "{status:?}");
    assert!(
        status.message().contains("(largest field: labels)"),
        "{:?}",
        status.message()
    );
    let bad_deregister = pb::DeregisterRequest {
        namespace: "default".into(),
        service: "web".into(),
        endpoint: Some(pb::EndpointId {
            address: "not-an-ip".into(),
            port: 8080,
        }),
        request_id: None,
    };
    let status = follower
        .catalog()
        .await
        .deregister(bad_deregister)
        .await
        .expect_err("a malformed deregister must be refused");
    assert_refused(
        &status,
        Code::InvalidArgument,
        "endpoint.address",
        "deregister",
    );

    assert_eq!(
        forwarded().await,
        forwarded_before,
        "the follower forwarded bad input to the leader"
    );
    assert_eq!(catalog_state(cluster.replica(leader)).await, before);
    assert_eq!(versions(&cluster).await, versions_before);

    // Control: a valid write through the same follower is forwarded and counted, so the
    // counter above would have moved had anything been forwarded.
    register_retrying(follower, register_request("web", 1)).await;
    assert!(forwarded().await > forwarded_before);
}

/// Fails the test, naming the files, if `dir` differs from `before` in any file's bytes.
fn assert_unchanged(dir: &std::path::Path, before: &[(std::path::PathBuf, Vec<u8>)]) {
    let after = files_digest(dir);
    let mut changed = Vec::new();
    for (path, bytes) in before {
        match after.iter().find(|(p, _)| p == path) {
            None => changed.push(format!("{} was removed", path.display())),
            Some((_, now)) if now != bytes => changed.push(format!(
                "{} changed ({} bytes before, {} after, first difference at byte {})",
                path.display(),
                bytes.len(),
                now.len(),
                bytes.iter().zip(now).take_while(|(x, y)| x == y).count()
            )),
            Some(_) => {}
        }
    }
    for (path, _) in &after {
        if !before.iter().any(|(p, _)| p == path) {
            changed.push(format!("{} appeared", path.display()));
        }
    }
    assert!(changed.is_empty(), "the data dir changed: {changed:#?}");
}

/// The process of a refused start-up: exited non-zero by itself, and what it said.
fn refused_start(replica: &Replica) -> (Output, String) {
    let output = output_within(replica.command(), EXIT_PATIENCE);
    let stderr = String::from_utf8_lossy(&output.stderr).into_owned();
    assert!(
        !output.status.success(),
        "start-up must fail: {:?}\n{stderr}",
        output.status
    );
    (output, stderr)
}

/// Starts a single replica that bootstraps itself and writes one service, then stops it with
/// SIGTERM, so the data directory holds a real, cleanly closed Raft store.
async fn make_data_dir(extra_args: &[&str]) -> TestCluster {
    let mut cluster = TestCluster::start(1, extra_args).await;
    let leader = cluster.wait_settled().await;
    register_retrying(cluster.replica(leader), register_request("web", 1)).await;
    let status = cluster.replica_mut(leader).terminate();
    assert!(status.success(), "a SIGTERM stop exits 0: {status:?}");
    cluster
}

/// A data directory written under `--cluster-name alpha` is refused under `--cluster-name
/// beta`: non-zero exit, a message naming both clusters, and every file byte for byte as it
/// was.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn data_dir_of_another_cluster_is_refused_and_untouched() {
    let mut cluster = make_data_dir(&["--cluster-name", "alpha"]).await;
    let replica = cluster.replica_mut(0);
    let before = files_digest(&replica.data_dir);
    assert!(!before.is_empty(), "the first run wrote its store");

    replica.extra_args = vec!["--cluster-name".into(), "beta".into()];
    let (_, stderr) = refused_start(replica);
    assert!(
        stderr.contains("belongs to cluster \"alpha\"")
            && stderr.contains("not to this node's cluster \"beta\""),
        "the message must say the data belongs to another cluster:\n{stderr}"
    );
    assert_unchanged(&replica.data_dir, &before);
}

/// A data directory written by node 0 is refused by a replica started as node 7 on it:
/// non-zero exit, a message naming both nodes, and every file byte for byte as it was.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn data_dir_of_another_node_is_refused_and_untouched() {
    let mut cluster = make_data_dir(&[]).await;
    let replica = cluster.replica_mut(0);
    let before = files_digest(&replica.data_dir);
    assert!(!before.is_empty(), "the first run wrote its store");

    replica.id = 7;
    let (_, stderr) = refused_start(replica);
    assert!(
        stderr.contains("belongs to node 0, not to this node (7)"),
        "the message must say the data belongs to another node:\n{stderr}"
    );
    assert_unchanged(&replica.data_dir, &before);
}

/// A data directory killed with SIGKILL (no clean close) and then started under another
/// cluster name is still refused, and its files are byte for byte as the kill left them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killed_data_dir_of_another_cluster_is_refused_and_untouched() {
    let mut cluster = TestCluster::start(1, &["--cluster-name", "alpha"]).await;
    let leader = cluster.wait_settled().await;
    register_retrying(cluster.replica(leader), register_request("web", 1)).await;
    cluster.replica_mut(leader).kill();
    let replica = cluster.replica_mut(leader);
    let before = files_digest(&replica.data_dir);
    assert!(!before.is_empty(), "the first run wrote its store");

    replica.extra_args = vec!["--cluster-name".into(), "beta".into()];
    let (_, stderr) = refused_start(replica);
    assert!(
        stderr.contains("belongs to cluster \"alpha\""),
        "the message must say the data belongs to another cluster:\n{stderr}"
    );
    assert_unchanged(&replica.data_dir, &before);
}

/// A raft.redb overwritten with garbage is refused as corrupt: non-zero exit, a message that
/// says so and names the file, and the file left exactly as it was.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn corrupt_data_dir_is_refused_and_untouched() {
    let cluster = make_data_dir(&[]).await;
    let replica = cluster.replica(0);
    let db = replica.data_dir.join("raft.redb");
    let garbage: Vec<u8> = (0..16_384u32)
        .map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8)
        .collect();
    std::fs::write(&db, &garbage).unwrap();
    let before = files_digest(&replica.data_dir);

    let (_, stderr) = refused_start(replica);
    assert!(
        stderr.contains("corrupt or unreadable") && stderr.contains(&db.display().to_string()),
        "the message must say the data is corrupt and name {}:\n{stderr}",
        db.display()
    );
    assert_unchanged(&replica.data_dir, &before);
    assert!(std::fs::read(&db).unwrap() == garbage, "raft.redb changed");
}

/// Conflicting flags stop start-up with an error naming the flag, a non-zero exit, and no data
/// directory created.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn conflicting_flags_stop_startup_naming_the_flag() {
    let dir = tempfile::tempdir().unwrap();
    let data_dir = dir.path().join("node-0");
    let ports = free_ports(2);
    let grpc = format!("127.0.0.1:{}", ports[0]);
    let admin = format!("127.0.0.1:{}", ports[1]);
    let peer = format!("0={grpc}");
    let statefulset = [
        "--statefulset",
        "netting",
        "--headless-service",
        "netting-peers",
        "--namespace",
        "netting-system",
        "--replicas",
        "3",
        "--hostname",
        "netting-0",
    ];
    // (case, flags, what the message must contain)
    let cases: Vec<(&str, Vec<&str>, Vec<&str>)> = vec![
        (
            "--peer with --statefulset",
            [
                &[
                    "--grpc-listen",
                    &grpc,
                    "--admin-listen",
                    &admin,
                    "--peer",
                    &peer,
                ][..],
                &statefulset[..],
            ]
            .concat(),
            vec!["--peer", "--statefulset", "cannot be used with"],
        ),
        (
            "--election-timeout-max below --election-timeout-min",
            vec![
                "--grpc-listen",
                &grpc,
                "--admin-listen",
                &admin,
                "--peer",
                &peer,
                "--election-timeout-min",
                "300ms",
                "--election-timeout-max",
                "200ms",
            ],
            vec!["--election-timeout-max: must be longer than --election-timeout-min"],
        ),
        (
            "--admin-listen equal to --grpc-listen",
            vec![
                "--grpc-listen",
                &grpc,
                "--admin-listen",
                &grpc,
                "--peer",
                &peer,
            ],
            vec!["--admin-listen", "is also --grpc-listen"],
        ),
    ];
    for (case, flags, expected) in cases {
        let mut cmd = std::process::Command::new(BIN);
        cmd.args(["run", "--node-id", "0", "--data-dir"])
            .arg(&data_dir)
            .args(&flags);
        let output = output_within(cmd, EXIT_PATIENCE);
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert_eq!(
            output.status.code(),
            Some(2),
            "{case}: start-up must fail as a usage error\n{stderr}"
        );
        for text in expected {
            assert!(
                stderr.contains(text),
                "{case}: the message must contain {text:?}:\n{stderr}"
            );
        }
        assert!(!data_dir.exists(), "{case}: the data dir was created");
    }
}
