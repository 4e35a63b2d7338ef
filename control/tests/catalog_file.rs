//! The catalog file against real replica processes: the leader proposes what the file says,
//! follows its edits, and keeps the last good catalog while the file is unusable, also across
//! a change of leader.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use netting_proto::catalog::v1 as pb;
use support::*;
use tonic::Code;

const ERRORS: &str = "netting_catalog_file_errors_total";

const TWO_SERVICES: &str = "\
services:
  - name: web
    ports: [{ name: http, port: 80, protocol: http }]
    labels: { app: web }
    endpoints:
      - { address: 10.0.0.1, port: 8080 }
      - { address: 10.0.0.2, port: 8080 }
  - namespace: shop
    name: api
    endpoints:
      - { address: 10.0.1.1, port: 9090, zone: a }
";

/// `api` removed, one endpoint of `web` moved from 10.0.0.2 to 10.0.0.3.
const EDITED: &str = "\
services:
  - name: web
    ports: [{ name: http, port: 80, protocol: http }]
    labels: { app: web }
    endpoints:
      - { address: 10.0.0.1, port: 8080 }
      - { address: 10.0.0.3, port: 8080 }
";

/// An unclosed flow mapping: a parse error, not an empty document.
const GARBAGE: &str = "\
services:
  - name: web
    endpoints:
      - { address: 10.0.0.1, port: 8080
  this is: [not yaml
";

/// `EDITED` plus a third service.
const WITH_DB: &str = "\
services:
  - name: web
    ports: [{ name: http, port: 80, protocol: http }]
    labels: { app: web }
    endpoints:
      - { address: 10.0.0.1, port: 8080 }
      - { address: 10.0.0.3, port: 8080 }
  - name: db
    endpoints:
      - { address: 10.0.2.1, port: 5432 }
";

/// What a test compares: service key -> (source, endpoints as `address:port`).
type View = BTreeMap<String, (String, BTreeSet<String>)>;

fn view_of(services: &[pb::Service]) -> View {
    services
        .iter()
        .map(|s| {
            let endpoints = s
                .endpoints
                .iter()
                .map(|e| format!("{}:{}", e.address, e.port))
                .collect();
            (
                format!("{}/{}", s.namespace, s.name),
                (s.source.clone(), endpoints),
            )
        })
        .collect()
}

fn file_view(entries: &[(&str, &[&str])]) -> View {
    entries
        .iter()
        .map(|(key, endpoints)| {
            (
                (*key).to_owned(),
                (
                    "file".to_owned(),
                    endpoints.iter().map(|e| (*e).to_owned()).collect(),
                ),
            )
        })
        .collect()
}

/// Replaces the file the way editors and ConfigMap updates do: a temporary file in the same
/// directory, renamed over it.
fn write_atomically(path: &Path, content: &str) {
    let tmp = path.with_extension("yaml.tmp");
    std::fs::write(&tmp, content).unwrap();
    std::fs::rename(&tmp, path).unwrap();
}

/// Overwrites the file in place: truncate, then write (what `echo ... > file` does).
fn overwrite_in_place(path: &Path, content: &str) {
    std::fs::write(path, content).unwrap();
}

/// Each running replica's catalog, read locally.
async fn views(cluster: &TestCluster) -> Vec<(u64, View)> {
    let mut out = Vec::new();
    for r in cluster.replicas.iter().filter(|r| r.is_running()) {
        out.push((r.id, view_of(&local_services(r).await)));
    }
    out
}

/// Waits until every running replica's catalog is `expected`.
async fn wait_all_hold(cluster: &TestCluster, expected: &View, what: &str) {
    let reached = wait_until(PATIENCE, || async {
        views(cluster)
            .await
            .iter()
            .all(|(_, v)| v == expected)
            .then_some(())
    })
    .await;
    if reached.is_none() {
        panic!(
            "{what}: replicas never all held {expected:#?}\nthey hold {:#?}\n{}",
            views(cluster).await,
            cluster.logs()
        );
    }
}

/// Asserts that every running replica holds exactly `expected` now.
async fn assert_all_hold(cluster: &TestCluster, expected: &View, what: &str) {
    for (id, view) in views(cluster).await {
        assert_eq!(&view, expected, "{what}: node {id}");
    }
}

async fn errors_counted(replica: &Replica) -> f64 {
    metric_value(&replica.metrics().await, ERRORS)
}

/// Waits until `replica` has counted more than `before` catalog file errors.
async fn wait_error_counted(cluster: &TestCluster, replica: &Replica, before: f64) -> f64 {
    let counted = wait_until(PATIENCE, || async {
        let now = errors_counted(replica).await;
        (now > before).then_some(now)
    })
    .await;
    counted.unwrap_or_else(|| {
        panic!(
            "node {} never counted the bad catalog file in {ERRORS}\n{}",
            replica.id,
            cluster.logs()
        )
    })
}

fn catalog_dir() -> (tempfile::TempDir, PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("catalog.yaml");
    (dir, path)
}

/// The leader proposes the file's services to every replica (source `file`) and follows an
/// edit, deleting what the file dropped; a garbage file is counted in
/// `netting_catalog_file_errors_total` and changes nothing; a new leader elected while the
/// file is garbage deletes nothing either, and proposes the next valid file.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn catalog_follows_the_file_and_survives_garbage_and_failover() {
    let (_files, path) = catalog_dir();
    write_atomically(&path, TWO_SERVICES);
    let path_arg = path.to_str().unwrap().to_owned();
    let mut cluster = TestCluster::start(3, &["--catalog-file", &path_arg]).await;

    let two = file_view(&[
        ("default/web", &["10.0.0.1:8080", "10.0.0.2:8080"]),
        ("shop/api", &["10.0.1.1:9090"]),
    ]);
    wait_all_hold(&cluster, &two, "initial file").await;

    // Edit, replacing the file by rename.
    write_atomically(&path, EDITED);
    let edited = file_view(&[("default/web", &["10.0.0.1:8080", "10.0.0.3:8080"])]);
    wait_all_hold(&cluster, &edited, "edited file").await;
    for replica in &cluster.replicas {
        let status = replica
            .catalog()
            .await
            .get_service(pb::GetServiceRequest {
                namespace: "shop".into(),
                service: "api".into(),
                consistency: pb::Consistency::Local as i32,
            })
            .await
            .expect_err("the deleted service must be gone");
        assert_eq!(status.code(), Code::NotFound, "node {}", replica.id);
    }

    // Garbage, written in place (truncate, then write).
    let leader = cluster.wait_for_leader().await;
    let version = cluster.wait_converged(1).await;
    let before = errors_counted(cluster.replica(leader)).await;
    overwrite_in_place(&path, GARBAGE);
    wait_error_counted(&cluster, cluster.replica(leader), before).await;
    assert_all_hold(&cluster, &edited, "after the garbage was counted").await;
    assert_eq!(
        cluster.wait_converged(version).await,
        version,
        "the garbage file wrote something"
    );

    // A new leader, elected while the file is garbage, reads it and deletes nothing.
    let mut counted_before = BTreeMap::new();
    for r in &cluster.replicas {
        counted_before.insert(r.id, errors_counted(r).await);
    }
    cluster.replica_mut(leader).kill();
    let new_leader = cluster.wait_for_new_leader(leader).await;
    wait_error_counted(
        &cluster,
        cluster.replica(new_leader),
        counted_before[&new_leader],
    )
    .await;
    assert_all_hold(&cluster, &edited, "after the new leader read the garbage").await;
    assert_eq!(
        cluster.wait_converged(version).await,
        version,
        "the new leader wrote something while the file was garbage"
    );

    // The next valid file is proposed by the new leader.
    write_atomically(&path, WITH_DB);
    let with_db = file_view(&[
        ("default/web", &["10.0.0.1:8080", "10.0.0.3:8080"]),
        ("default/db", &["10.0.2.1:5432"]),
    ]);
    wait_all_hold(&cluster, &with_db, "valid file after failover").await;

    // The old leader comes back and catches up to the same catalog.
    cluster.replica_mut(leader).start();
    let latest = cluster
        .replica(new_leader)
        .status()
        .await
        .map(|s| s.catalog_version)
        .unwrap_or(0);
    cluster.wait_converged(latest).await;
    wait_all_hold(&cluster, &with_db, "after the old leader rejoined").await;
}

/// An emptied file (the moment between truncate and write of an in-place overwrite) is an
/// error like any unusable file: it is counted and deletes nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn emptied_file_deletes_nothing() {
    let (_files, path) = catalog_dir();
    write_atomically(&path, EDITED);
    let path_arg = path.to_str().unwrap().to_owned();
    let cluster = TestCluster::start(1, &["--catalog-file", &path_arg]).await;
    let edited = file_view(&[("default/web", &["10.0.0.1:8080", "10.0.0.3:8080"])]);
    wait_all_hold(&cluster, &edited, "initial file").await;
    let leader = cluster.wait_for_leader().await;
    let version = cluster.wait_converged(1).await;
    let before = errors_counted(cluster.replica(leader)).await;

    // Truncated and left so: what a reader may see halfway through `echo ... > file`.
    overwrite_in_place(&path, "");
    // Either outcome ends the wait: the error is counted, or the service is deleted.
    let outcome = wait_until(PATIENCE, || async {
        let replica = cluster.replica(leader);
        if errors_counted(replica).await > before {
            return Some("counted");
        }
        local_services(replica)
            .await
            .is_empty()
            .then_some("deleted")
    })
    .await;
    assert_eq!(
        outcome,
        Some("counted"),
        "an empty catalog file must be refused, not read as `no services`\n{}",
        cluster.logs()
    );
    assert_all_hold(&cluster, &edited, "after the empty file").await;
    assert_eq!(cluster.wait_converged(version).await, version);
}

/// Ownership holds both ways: the API cannot change or remove a service the file owns (the
/// refusal names the owner and the refusal is counted), and a service the API registered that
/// the file also lists stays the API's, with the conflict counted and logged for that service.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sources_never_change_each_others_services() {
    let (_files, path) = catalog_dir();
    write_atomically(&path, EDITED);
    let path_arg = path.to_str().unwrap().to_owned();
    let cluster = TestCluster::start(1, &["--catalog-file", &path_arg]).await;
    let edited = file_view(&[("default/web", &["10.0.0.1:8080", "10.0.0.3:8080"])]);
    wait_all_hold(&cluster, &edited, "initial file").await;
    let leader = cluster.wait_for_leader().await;
    let replica = cluster.replica(leader);
    let mut client = replica.catalog().await;

    let refused = client
        .register(register_request("web", 9))
        .await
        .expect_err("the API must not change a file-owned service");
    assert_eq!(refused.code(), Code::FailedPrecondition, "{refused:?}");
    assert!(
        refused.message().contains("owned by source file"),
        "{refused:?}"
    );
    let removal = client
        .deregister(pb::DeregisterRequest {
            namespace: "default".into(),
            service: "web".into(),
            endpoint: None,
            request_id: None,
        })
        .await
        .expect_err("the API must not remove a file-owned service");
    assert_eq!(removal.code(), Code::FailedPrecondition, "{removal:?}");
    let refusals = labelled_metric(
        &replica.metrics().await,
        "netting_catalog_writes_refused_total",
        "reason=\"owned_by_other_source\"",
    );
    assert_eq!(refusals, 2.0);
    assert_all_hold(&cluster, &edited, "after the API's attempts").await;

    // The API registers `db`; then the file lists `db` too.
    register_retrying(replica, register_request("db", 7)).await;
    write_atomically(&path, WITH_DB);
    let conflicts = wait_until(PATIENCE, || async {
        let text = cluster.replica(leader).metrics().await;
        (metric_value(&text, "netting_catalog_file_conflicts") >= 1.0).then_some(())
    })
    .await;
    assert!(
        conflicts.is_some(),
        "no conflict counted\n{}",
        cluster.logs()
    );
    let db = client
        .get_service(pb::GetServiceRequest {
            namespace: "default".into(),
            service: "db".into(),
            consistency: pb::Consistency::Linearizable as i32,
        })
        .await
        .unwrap()
        .into_inner()
        .service
        .unwrap();
    assert_eq!(db.source, "api");
    assert_eq!(db.endpoints.len(), 1);
    assert!(
        replica
            .log_text()
            .contains("the catalog file lists a service another source owns"),
        "the conflict was not logged"
    );
}
