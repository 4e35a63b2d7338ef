//! Config distribution against real replica processes: snapshots and deltas, what is and is
//! not pushed, resuming on another replica, never going backwards, slow and broken sidecars,
//! leader failure and stream recycling.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::collections::HashMap;

use netting_proto::catalog::v1 as cpb;
use netting_proto::discovery::v1 as pb;
use support::sidecar::*;
use support::*;
use tonic::Code;

/// The trailer a replica sets when the sidecar should reconnect elsewhere.
const TRY_ANOTHER: &str = "netting-try-another-replica";

fn register_in(namespace: &str, service: &str, last_octet: u8) -> cpb::RegisterRequest {
    let mut req = register_request(service, last_octet);
    req.namespace = namespace.into();
    req
}

/// Deletes a whole service; returns the version of the deletion.
async fn delete_service(replica: &Replica, namespace: &str, service: &str) -> u64 {
    let mut client = replica.catalog().await;
    client
        .deregister(cpb::DeregisterRequest {
            namespace: namespace.into(),
            service: service.into(),
            endpoint: None,
            request_id: None,
        })
        .await
        .unwrap()
        .into_inner()
        .version
}

async fn cluster_id(replica: &Replica) -> String {
    let status = replica.status().await.expect("status");
    assert!(!status.cluster_id.is_empty(), "the cluster id is fixed");
    status.cluster_id
}

fn snapshot_of(response: &pb::DiscoveryResponse) -> &pb::Snapshot {
    match &response.update {
        Some(pb::discovery_response::Update::Snapshot(snapshot)) => snapshot,
        _ => panic!("expected a snapshot, got {response:?}"),
    }
}

fn delta_of(response: &pb::DiscoveryResponse) -> &pb::Delta {
    match &response.update {
        Some(pb::discovery_response::Update::Delta(delta)) => delta,
        _ => panic!("expected a delta, got {response:?}"),
    }
}

/// `namespace/name` of each service, sorted.
fn names(services: &[pb::ServiceConfig]) -> Vec<String> {
    let mut out: Vec<String> = services
        .iter()
        .map(|s| format!("{}/{}", s.namespace, s.name))
        .collect();
    out.sort();
    out
}

fn removed_names(refs: &[pb::ServiceRef]) -> Vec<String> {
    let mut out: Vec<String> = refs
        .iter()
        .map(|s| format!("{}/{}", s.namespace, s.name))
        .collect();
    out.sort();
    out
}

/// A raw stream for `pod`, subscribed to `default` from nothing, whose first response (a
/// snapshot) has been acknowledged.
async fn acked_snapshot(replica: &Replica, pod: &str) -> (RawStream, pb::DiscoveryResponse) {
    let mut stream = RawStream::open(&replica.grpc, hello(pod, &["default"], 0, ""))
        .await
        .unwrap();
    let first = stream.next().await.unwrap();
    snapshot_of(&first);
    stream.ack(&first).await;
    (stream, first)
}

fn assert_try_another(status: &tonic::Status, case: &str) {
    assert_eq!(status.code(), Code::Unavailable, "{case}: {status:?}");
    assert_eq!(
        status
            .metadata()
            .get(TRY_ANOTHER)
            .and_then(|v| v.to_str().ok()),
        Some("true"),
        "{case}: the replica must send the sidecar elsewhere: {status:?}"
    );
}

/// Registers `count` distinct endpoints in `namespace` through `writers` concurrent clients of
/// `replica`; returns the highest version written.
async fn write_burst(replica: &Replica, namespace: &str, count: usize, writers: usize) -> u64 {
    let mut tasks = tokio::task::JoinSet::new();
    for w in 0..writers {
        let mut client = replica.catalog().await;
        let namespace = namespace.to_owned();
        tasks.spawn(async move {
            let mut highest = 0;
            for i in (w..count).step_by(writers) {
                let req = cpb::RegisterRequest {
                    namespace: namespace.clone(),
                    service: format!("burst-{}", i % 20),
                    endpoint: Some(cpb::Endpoint {
                        address: format!("10.1.{}.{}", i / 256, i % 256),
                        port: 8080,
                        ready: true,
                        ..Default::default()
                    }),
                    ..Default::default()
                };
                let written = client.register(req).await.expect("register");
                highest = highest.max(written.into_inner().version);
            }
            highest
        });
    }
    let mut highest = 0;
    while let Some(done) = tasks.join_next().await {
        highest = highest.max(done.unwrap());
    }
    highest
}

/// Waits until the TCP port at `addr` accepts connections.
async fn wait_listening(addr: &str) {
    let up = wait_until(PATIENCE, || async {
        tokio::net::TcpStream::connect(addr).await.ok().map(|_| ())
    })
    .await;
    assert!(up.is_some(), "{addr} never accepted connections");
}

/// A new sidecar gets a snapshot; once it ACKed, a change to a subscribed service comes as a
/// delta from the acknowledged version, and a deleted subscribed service in its `removed`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn snapshot_then_deltas_from_the_acked_version() {
    let cluster = TestCluster::start(1, &[]).await;
    cluster.wait_settled().await;
    let replica = cluster.replica(0);
    register_retrying(replica, register_in("default", "web", 1)).await;
    let written = register_retrying(replica, register_in("default", "api", 1)).await;

    let mut stream = RawStream::open(&replica.grpc, hello("web-0", &["default"], 0, ""))
        .await
        .unwrap();
    let first = stream.next().await.unwrap();
    assert_eq!(
        names(&snapshot_of(&first).services),
        ["default/api", "default/web"]
    );
    assert!(first.version >= written, "{first:?}");
    assert_eq!(first.cluster_id, cluster_id(replica).await);
    stream.ack(&first).await;

    let changed = register_retrying(replica, register_in("default", "web", 2)).await;
    let second = stream.next().await.unwrap();
    let delta = delta_of(&second);
    assert_eq!(delta.from_version, first.version, "{second:?}");
    assert_eq!(second.version, changed);
    assert_eq!(names(&delta.upserted), ["default/web"]);
    assert_eq!(delta.upserted[0].endpoints.len(), 2);
    assert!(delta.removed.is_empty(), "{second:?}");
    stream.ack(&second).await;

    let deleted = delete_service(replica, "default", "api").await;
    let third = stream.next().await.unwrap();
    let delta = delta_of(&third);
    assert_eq!(delta.from_version, second.version, "{third:?}");
    assert_eq!(third.version, deleted);
    assert_eq!(removed_names(&delta.removed), ["default/api"]);
    assert!(delta.upserted.is_empty(), "{third:?}");
}

/// A sidecar is sent only what it subscribes to — whole namespaces and named services,
/// including the removal of a named service — and nothing at all for other changes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn only_subscribed_services_are_pushed() {
    let cluster = TestCluster::start(1, &[]).await;
    cluster.wait_settled().await;
    let replica = cluster.replica(0);
    register_retrying(replica, register_in("default", "web", 1)).await;
    register_retrying(replica, register_in("prod", "api", 1)).await;
    register_retrying(replica, register_in("prod", "other", 1)).await;
    register_retrying(replica, register_in("other", "db", 1)).await;
    // A second sidecar that sees the unsubscribed changes: once it has them, the pusher has
    // dealt with them, so a wrong push could not hide in a later, legitimate one.
    let mut probe = SimSidecar::spawn(
        "probe-0".into(),
        vec![replica.grpc.clone()],
        vec!["other".into(), "prod".into()],
    );

    let mut stream = RawStream::open(
        &replica.grpc,
        hello_with("web-0", &["default"], &[("prod", "api")], 0, ""),
    )
    .await
    .unwrap();
    let first = stream.next().await.unwrap();
    assert_eq!(
        names(&snapshot_of(&first).services),
        ["default/web", "prod/api"]
    );
    stream.ack(&first).await;

    register_retrying(replica, register_in("other", "db", 2)).await;
    let unsubscribed = register_retrying(replica, register_in("prod", "other", 2)).await;
    assert!(
        probe.wait_for(unsubscribed).await,
        "the probe sidecar is served"
    );
    let list = list_sessions(&replica.grpc).await;
    let session = session_of(&list, "web-0").expect("session listed");
    assert_eq!(session.acked_version, first.version, "{session:?}");
    assert_eq!(session.sent_version, None, "nothing was sent: {session:?}");

    // The next response must be the subscribed change, from the version acknowledged before
    // the unsubscribed changes: had they been pushed, it would be from a later version.
    let subscribed = register_retrying(replica, register_in("prod", "api", 2)).await;
    let second = stream.next().await.unwrap();
    let delta = delta_of(&second);
    assert_eq!(delta.from_version, first.version, "{second:?}");
    assert_eq!(second.version, subscribed, "{second:?}");
    assert_eq!(names(&delta.upserted), ["prod/api"]);
    assert!(delta.removed.is_empty(), "{second:?}");
    stream.ack(&second).await;

    delete_service(replica, "prod", "other").await;
    let deleted = delete_service(replica, "prod", "api").await;
    let third = stream.next().await.unwrap();
    let delta = delta_of(&third);
    assert_eq!(delta.from_version, second.version, "{third:?}");
    assert_eq!(third.version, deleted, "{third:?}");
    assert_eq!(removed_names(&delta.removed), ["prod/api"]);
    assert!(delta.upserted.is_empty(), "{third:?}");
}

/// A change to a field no sidecar uses (service labels) moves the catalog version but pushes
/// nothing at once; the next real change comes as a delta from the version acknowledged before
/// it. (The version-only notice is put off for an hour here, so it cannot arrive first.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn label_only_change_is_not_pushed() {
    let cluster = TestCluster::start(1, &["--push-version-only-delay", "60m"]).await;
    cluster.wait_settled().await;
    let replica = cluster.replica(0);
    // A sidecar connected before any write learns of writes only through pushes: once it
    // has one, the pusher has dealt with it and everything before.
    let mut probe = SimSidecar::spawn(
        "probe-0".into(),
        vec![replica.grpc.clone()],
        vec!["default".into(), "probe".into()],
    );
    assert!(probe.wait_for(1).await, "the probe sidecar is served");
    let created = register_retrying(replica, register_in("default", "web", 1)).await;
    // Else the label change could be merged into the push of the creation, and rightly sent.
    assert!(probe.wait_for(created).await, "the creation was pushed");

    let (mut stream, first) = acked_snapshot(replica, "web-0").await;

    let mut relabel = register_in("default", "web", 1);
    relabel.labels = HashMap::from([("team".to_owned(), "blue".to_owned())]);
    let relabelled = register_retrying(replica, relabel).await;
    assert!(
        relabelled > first.version,
        "the label change is a catalog write"
    );
    let status = replica.status().await.expect("status");
    assert!(status.catalog_version >= relabelled, "{status:?}");

    // Once the probe has a later change, the pusher has dealt with the label change too.
    let probed = register_retrying(replica, register_in("probe", "p", 1)).await;
    assert!(probe.wait_for(probed).await, "the probe sidecar is served");
    let list = list_sessions(&replica.grpc).await;
    let session = session_of(&list, "web-0").expect("session listed");
    assert_eq!(session.acked_version, first.version, "{session:?}");
    assert_eq!(session.sent_version, None, "nothing was sent: {session:?}");

    let real = register_retrying(replica, register_in("default", "api", 1)).await;
    let second = stream.next().await.unwrap();
    let delta = delta_of(&second);
    assert_eq!(delta.from_version, first.version, "{second:?}");
    assert_eq!(second.version, real, "{second:?}");
    assert!(
        names(&delta.upserted).contains(&"default/api".to_owned()),
        "{second:?}"
    );
}

/// A change no sidecar uses (a new owning pod at the same address) is not pushed at once, but
/// still brings every sidecar it touched to its version after the version-only delay: the
/// convergence the design promises, without a push per such change.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn skipped_change_still_brings_sidecars_to_its_version() {
    let cluster = TestCluster::start(1, &["--push-version-only-delay", "50ms"]).await;
    cluster.wait_settled().await;
    let replica = cluster.replica(0);
    register_retrying(replica, register_in("default", "web", 1)).await;

    let (mut stream, first) = acked_snapshot(replica, "web-0").await;

    let mut moved = register_in("default", "web", 1);
    if let Some(endpoint) = moved.endpoint.as_mut() {
        endpoint.pod = "web-moved".to_owned();
    }
    let moved_at = register_retrying(replica, moved).await;
    assert!(moved_at > first.version, "the move is a catalog write");

    let second = stream.next().await.unwrap();
    assert_eq!(second.version, moved_at, "{second:?}");
    let delta = delta_of(&second);
    assert_eq!(delta.from_version, first.version, "{second:?}");
    assert_eq!(names(&delta.upserted), ["default/web"], "{second:?}");
    assert!(delta.removed.is_empty(), "{second:?}");
    stream.ack(&second).await;
    let metrics = replica.metrics().await;
    assert_eq!(
        labelled_metric(
            &metrics,
            "netting_config_pushes_total",
            "reason=\"version_only\""
        ),
        1.0,
        "{metrics}"
    );
}

/// A sidecar that moves to another replica with its acknowledged version and the cluster id
/// resumes by a delta from that version to the latest write.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reconnect_to_another_replica_resumes_by_delta() {
    let cluster = TestCluster::start(3, &[]).await;
    let leader = cluster.wait_settled().await;
    let a = cluster.replica(leader);
    let b = cluster.replicas.iter().find(|r| r.id != leader).unwrap();
    register_retrying(a, register_in("default", "web", 1)).await;

    let mut stream = RawStream::open(&a.grpc, hello("web-0", &["default"], 0, ""))
        .await
        .unwrap();
    let first = stream.next().await.unwrap();
    snapshot_of(&first);
    stream.ack(&first).await;
    drop(stream);

    register_retrying(a, register_in("default", "web", 2)).await;
    let latest = register_retrying(a, register_in("default", "api", 1)).await;
    // B must have the latest write for the delta to reach it; resuming is what is tested.
    cluster.wait_converged(latest).await;

    let mut stream = RawStream::open(
        &b.grpc,
        hello("web-0", &["default"], first.version, &first.cluster_id),
    )
    .await
    .unwrap();
    let resumed = stream.next().await.unwrap();
    let delta = delta_of(&resumed);
    assert_eq!(delta.from_version, first.version, "{resumed:?}");
    assert!(resumed.version >= latest, "{resumed:?}");
    assert_eq!(names(&delta.upserted), ["default/api", "default/web"]);
    assert_eq!(resumed.cluster_id, first.cluster_id);
}

/// A sidecar whose version belongs to another cluster (one rebuilt from nothing) gets a
/// snapshot, not a delta.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn another_cluster_id_gets_a_snapshot() {
    let cluster = TestCluster::start(1, &[]).await;
    cluster.wait_settled().await;
    let replica = cluster.replica(0);
    register_retrying(replica, register_in("default", "web", 1)).await;
    let mut stream = RawStream::open(&replica.grpc, hello("web-0", &["default"], 0, ""))
        .await
        .unwrap();
    let first = stream.next().await.unwrap();
    drop(stream);

    let elsewhere = uuid::Uuid::new_v4().to_string();
    let mut stream = RawStream::open(
        &replica.grpc,
        hello("web-0", &["default"], first.version, &elsewhere),
    )
    .await
    .unwrap();
    let response = stream.next().await.unwrap();
    assert_eq!(names(&snapshot_of(&response).services), ["default/web"]);
    assert_eq!(response.cluster_id, first.cluster_id);
}

/// A version beyond anything committed is refused with OUT_OF_RANGE by every replica: the
/// leader knows its commit index, a follower asks the leader for its read index. The wait for
/// catching up is long, so a replica that waited and sent the sidecar on instead would answer
/// UNAVAILABLE, not OUT_OF_RANGE.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn version_beyond_commit_is_refused_by_every_replica() {
    let cluster = TestCluster::start(3, &["--sidecar-catch-up-wait", "60s"]).await;
    let leader = cluster.wait_settled().await;
    let written =
        register_retrying(cluster.replica(leader), register_in("default", "web", 1)).await;
    cluster.wait_converged(written).await;
    let id = cluster_id(cluster.replica(leader)).await;
    let beyond = written + 1_000_000;

    for replica in &cluster.replicas {
        let status = refused(&replica.grpc, hello("web-0", &["default"], beyond, &id)).await;
        assert_eq!(
            status.code(),
            Code::OutOfRange,
            "replica {}: {status:?}\n{}",
            replica.id,
            cluster.logs()
        );
        assert!(
            status.message().contains(&beyond.to_string()),
            "the refusal names the version: {status:?}"
        );
    }
}

/// A replica that cannot reach a leader cannot tell whether a version ahead of it exists: it
/// never claims OUT_OF_RANGE, it sends the sidecar on.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn version_ahead_without_a_leader_sends_the_sidecar_on() {
    let mut cluster = TestCluster::start(3, &["--sidecar-catch-up-wait", "300ms"]).await;
    let leader = cluster.wait_settled().await;
    let written =
        register_retrying(cluster.replica(leader), register_in("default", "web", 1)).await;
    cluster.wait_converged(written).await;
    let id = cluster_id(cluster.replica(leader)).await;
    let survivor = cluster.replicas.iter().find(|r| r.id != leader).unwrap().id;
    let others: Vec<_> = cluster
        .replicas
        .iter()
        .map(|r| r.id)
        .filter(|r| *r != survivor)
        .collect();
    for other in others {
        cluster.replica_mut(other).kill();
    }

    let status = refused(
        &cluster.replica(survivor).grpc,
        hello("web-0", &["default"], written + 1_000_000, &id),
    )
    .await;
    assert_try_another(&status, "a replica without a quorum");
}

/// A replica that lags behind the sidecar (restarted after missing writes) never sends it a
/// version below the one it has: it answers from that version or later, or sends it to
/// another replica.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lagging_replica_never_sends_older_state() {
    let mut cluster = TestCluster::start(3, &["--sidecar-catch-up-wait", "100ms"]).await;
    let leader = cluster.wait_settled().await;
    let seeded = register_retrying(cluster.replica(leader), register_in("default", "web", 1)).await;
    cluster.wait_converged(seeded).await;
    let id = cluster_id(cluster.replica(leader)).await;
    let f = cluster.replicas.iter().find(|r| r.id != leader).unwrap().id;

    cluster.replica_mut(f).kill();
    let mut last = 0;
    for i in 0..50u8 {
        last = register_retrying(
            cluster.replica(leader),
            register_in("default", &format!("svc-{}", i % 5), i),
        )
        .await;
    }
    cluster.replica_mut(f).start();
    let addr = cluster.replica(f).grpc.clone();
    wait_listening(&addr).await;

    // Until it has caught up, the replica may send the sidecar elsewhere; it tries again, as
    // a sidecar whose other replicas are all further behind would.
    let mut sent_elsewhere = 0;
    let deadline = std::time::Instant::now() + PATIENCE;
    let served = loop {
        let status = match RawStream::open(&addr, hello("web-0", &["default"], last, &id)).await {
            Ok(mut stream) => match stream.next().await {
                Ok(response) => break Some((stream, response)),
                Err(status) => status,
            },
            Err(status) => status,
        };
        assert_try_another(&status, "the lagging replica");
        sent_elsewhere += 1;
        if std::time::Instant::now() > deadline {
            break None;
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    };
    let (mut stream, first) = served.expect("the restarted replica never served the sidecar");
    assert_eq!(first.cluster_id, id);
    assert!(first.version >= last, "older state sent: {first:?}");
    assert_eq!(delta_of(&first).from_version, last, "{first:?}");
    stream.ack(&first).await;

    let next_write =
        register_retrying(cluster.replica(leader), register_in("default", "web", 2)).await;
    let second = stream.next().await.unwrap();
    assert!(second.version >= next_write, "{second:?}");
    assert_eq!(delta_of(&second).from_version, first.version, "{second:?}");
    eprintln!("the lagging replica sent the sidecar elsewhere {sent_elsewhere} times first");
}

/// A sidecar that never reads nor ACKs holds back no one and costs one pending flag: the
/// others reach the final version, it keeps its first response in flight, and the pending
/// update is replaced rather than queued.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stalled_sidecar_does_not_hold_back_others() {
    // No timeout may close the stalled stream during the test, however slow the machine.
    let cluster = TestCluster::start(
        1,
        &["--sidecar-ack-timeout", "10m", "--sidecar-max-age", "60m"],
    )
    .await;
    cluster.wait_settled().await;
    let replica = cluster.replica(0);
    register_retrying(replica, register_in("default", "seed", 1)).await;

    let mut stalled = RawStream::open(&replica.grpc, hello("stalled-0", &["default"], 0, ""))
        .await
        .unwrap();
    let mut others: Vec<SimSidecar> = (0..4)
        .map(|i| {
            SimSidecar::spawn(
                format!("sim-{i}"),
                vec![replica.grpc.clone()],
                vec!["default".into()],
            )
        })
        .collect();
    let first_sent = wait_until(PATIENCE, || async {
        session_of(&list_sessions(&replica.grpc).await, "stalled-0")?.sent_version
    })
    .await
    .expect("the stalled session has its first response in flight");
    let replaced_before = metric_value(
        &replica.metrics().await,
        "netting_config_pending_replaced_total",
    );

    let burst = write_burst(replica, "default", 1_000, 16).await;
    assert!(burst > first_sent);
    // Concurrent writes share Raft entries, so versions do not count them; the catalog does.
    let written: usize = local_services(replica)
        .await
        .iter()
        .filter(|s| s.name.starts_with("burst-"))
        .map(|s| s.endpoints.len())
        .sum();
    assert_eq!(written, 1_000, "1,000 updates were written");
    // One write after the burst has been pushed: a push that surely finds the stalled
    // session's pending flag already set by a push of the burst.
    for other in &mut others {
        assert!(
            other.wait_for(burst).await,
            "a sidecar that ACKs did not reach {burst}"
        );
    }
    let last = register_retrying(replica, register_in("default", "seed", 2)).await;
    for other in &mut others {
        assert!(
            other.wait_for(last).await,
            "a sidecar that ACKs did not reach {last}"
        );
        assert!(other.record.lock().unwrap().regressions.is_empty());
    }

    let list = list_sessions(&replica.grpc).await;
    let session = session_of(&list, "stalled-0").expect("the stalled session is still there");
    assert_eq!(session.acked_version, 0, "{session:?}");
    assert_eq!(session.sent_version, Some(first_sent), "{session:?}");
    let grew = wait_until(PATIENCE, || async {
        let now = metric_value(
            &replica.metrics().await,
            "netting_config_pending_replaced_total",
        );
        (now > replaced_before).then_some(now)
    })
    .await;
    assert!(
        grew.is_some(),
        "netting_config_pending_replaced_total did not grow from {replaced_before}"
    );

    // What was waiting on the stalled stream all along: only its first response.
    let first = stalled.next().await.unwrap();
    assert_eq!(first.version, first_sent);
    snapshot_of(&first);
}

/// A session whose response stays unacknowledged past --sidecar-ack-timeout is closed with
/// DEADLINE_EXCEEDED and leaves the replica's session list.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unacknowledged_session_is_closed_after_ack_timeout() {
    let cluster = TestCluster::start(1, &["--sidecar-ack-timeout", "1s"]).await;
    cluster.wait_settled().await;
    let replica = cluster.replica(0);
    register_retrying(replica, register_in("default", "web", 1)).await;

    let mut stalled = RawStream::open(&replica.grpc, hello("stalled-0", &["default"], 0, ""))
        .await
        .unwrap();
    let first = stalled.next().await.unwrap();
    snapshot_of(&first);
    let status = stalled.ended().await;
    assert_eq!(status.code(), Code::DeadlineExceeded, "{status:?}");

    let gone = wait_until(PATIENCE, || async {
        session_of(&list_sessions(&replica.grpc).await, "stalled-0")
            .is_none()
            .then_some(())
    })
    .await;
    assert!(gone.is_some(), "the closed session is still listed");
    let closed = labelled_metric(
        &replica.metrics().await,
        "netting_sessions_closed_total",
        "reason=\"ack_timeout\"",
    );
    assert!(closed >= 1.0, "ack_timeout closures: {closed}");
}

/// Sidecars connected to a leader that is killed move to the survivors, resume by delta and
/// converge to the final version, never going backwards.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn leader_killed_sidecars_resume_by_delta() {
    let mut cluster = TestCluster::start(3, &[]).await;
    let leader = cluster.wait_settled().await;
    let seeded = register_retrying(cluster.replica(leader), register_in("default", "web", 1)).await;
    // The leader first, so every sidecar starts there; then the survivors.
    let mut replicas = vec![cluster.replica(leader).grpc.clone()];
    replicas.extend(
        cluster
            .replicas
            .iter()
            .filter(|r| r.id != leader)
            .map(|r| r.grpc.clone()),
    );
    let mut sidecars: Vec<SimSidecar> = (0..30)
        .map(|i| {
            let mut order = replicas.clone();
            // Spread the survivors each sidecar tries first.
            if i % 2 == 1 {
                order[1..].reverse();
            }
            SimSidecar::spawn(format!("sim-{i}"), order, vec!["default".into()])
        })
        .collect();
    for sidecar in &mut sidecars {
        assert!(
            sidecar.wait_for(seeded).await,
            "initial version not reached"
        );
    }
    let on_leader = wait_until(PATIENCE, || async {
        let list = list_sessions(&cluster.replica(leader).grpc).await;
        let n = list
            .sessions
            .iter()
            .filter(|s| s.pod.starts_with("sim-"))
            .count();
        (n == 30).then_some(n)
    })
    .await;
    assert!(
        on_leader.is_some(),
        "the 30 sidecars are not all on the leader"
    );
    let before: Vec<Record> = sidecars
        .iter()
        .map(|s| s.record.lock().unwrap().clone())
        .collect();

    cluster.replica_mut(leader).kill();
    let survivor = cluster.replicas.iter().find(|r| r.id != leader).unwrap();
    let last = register_retrying(survivor, register_in("default", "web", 2)).await;

    for (i, sidecar) in sidecars.iter_mut().enumerate() {
        assert!(
            sidecar.wait_for(last).await,
            "sim-{i} did not reach {last}: {:?}\n{}",
            sidecar.record.lock().unwrap(),
            cluster.logs()
        );
    }
    for (i, sidecar) in sidecars.iter().enumerate() {
        let record = sidecar.record.lock().unwrap().clone();
        assert!(record.regressions.is_empty(), "sim-{i}: {record:?}");
        assert_eq!(
            record.snapshots, 1,
            "sim-{i} resumed by snapshot: {record:?}"
        );
        assert_eq!(before[i].snapshots, 1, "sim-{i}: {:?}", before[i]);
        assert!(
            record.deltas > before[i].deltas,
            "sim-{i} got no delta after the kill: {record:?}"
        );
        assert!(
            record.connects >= 2,
            "sim-{i} never reconnected: {record:?}"
        );
    }
}

/// Bad input ends only the stream that sent it, with a status that says what was wrong: not a
/// hello first, an invalid or empty subscription, an unknown nonce, an oversized message, or
/// silence past the hello timeout. A sidecar on the same replica is not disturbed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_input_ends_only_that_stream() {
    let cluster = TestCluster::start(
        1,
        &[
            "--sidecar-max-message-bytes",
            "2048",
            "--sidecar-hello-timeout",
            "500ms",
        ],
    )
    .await;
    cluster.wait_settled().await;
    let replica = cluster.replica(0);
    let addr = replica.grpc.clone();
    let seeded = register_retrying(replica, register_in("default", "web", 1)).await;
    let mut good = SimSidecar::spawn("good-0".into(), vec![addr.clone()], vec!["default".into()]);
    assert!(good.wait_for(seeded).await);

    let not_hello = pb::DiscoveryRequest {
        message: Some(pb::discovery_request::Message::Ack(pb::Ack {
            version: 1,
            nonce: "1".into(),
        })),
    };
    let status = refused(&addr, not_hello).await;
    assert_eq!(
        status.code(),
        Code::InvalidArgument,
        "ack first: {status:?}"
    );

    // An empty first message is not "the stream ended": it is a message without a hello.
    let status = refused(&addr, pb::DiscoveryRequest { message: None }).await;
    assert_eq!(
        status.code(),
        Code::InvalidArgument,
        "empty first: {status:?}"
    );
    assert!(
        status.message().contains("must be a hello") && status.message().contains("empty"),
        "{status:?}"
    );

    let status = refused(&addr, hello("bad-0", &["Not_A_Namespace"], 0, "")).await;
    assert_eq!(
        status.code(),
        Code::InvalidArgument,
        "bad namespace: {status:?}"
    );
    assert!(
        status
            .message()
            .starts_with("invalid subscription.namespaces[0]: "),
        "{status:?}"
    );

    let status = refused(&addr, hello("bad-0", &[], 0, "")).await;
    assert_eq!(
        status.code(),
        Code::InvalidArgument,
        "empty subscription: {status:?}"
    );
    assert!(
        status.message().starts_with("invalid subscription: "),
        "{status:?}"
    );

    let mut stream = RawStream::open(&addr, hello("bad-1", &["default"], 0, ""))
        .await
        .unwrap();
    let first = stream.next().await.unwrap();
    stream
        .requests
        .send(pb::DiscoveryRequest {
            message: Some(pb::discovery_request::Message::Ack(pb::Ack {
                version: first.version,
                nonce: "never-sent".into(),
            })),
        })
        .await
        .unwrap();
    let status = stream.ended().await;
    assert_eq!(
        status.code(),
        Code::InvalidArgument,
        "unknown nonce: {status:?}"
    );

    let mut huge = hello("bad-2", &["default"], 0, "");
    if let Some(pb::discovery_request::Message::Hello(h)) = &mut huge.message {
        let identity = h.identity.as_mut().unwrap();
        for i in 0..100 {
            identity.labels.insert(format!("label-{i}"), "x".repeat(64));
        }
    }
    let status = refused(&addr, huge).await;
    assert_eq!(
        status.code(),
        Code::InvalidArgument,
        "oversized hello: {status:?}"
    );

    let status = match RawStream::open_silent(&addr).await {
        Err(status) => status,
        Ok(mut stream) => stream.ended().await,
    };
    assert_eq!(status.code(), Code::DeadlineExceeded, "silence: {status:?}");

    let later = register_retrying(replica, register_in("default", "web", 2)).await;
    assert!(
        good.wait_for(later).await,
        "the good sidecar stopped being served"
    );
    let record = good.record.lock().unwrap().clone();
    assert_eq!(
        record.connects, 1,
        "the good sidecar's stream was disturbed: {record:?}"
    );
    assert!(record.endings.is_empty(), "{record:?}");
    let only_good = wait_until(PATIENCE, || async {
        let list = list_sessions(&addr).await;
        let pods: Vec<String> = list.sessions.into_iter().map(|s| s.pod).collect();
        (pods == ["good-0"]).then_some(())
    })
    .await;
    assert!(
        only_good.is_some(),
        "sessions: {:?}",
        list_sessions(&addr).await.sessions
    );
}

/// A stream is ended with UNAVAILABLE once it reaches --sidecar-max-age; the sidecar
/// reconnects and resumes by delta, never going backwards.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn streams_are_recycled_at_max_age() {
    let cluster = TestCluster::start(
        1,
        &["--sidecar-max-age", "2s", "--sidecar-ack-timeout", "1s"],
    )
    .await;
    cluster.wait_settled().await;
    let replica = cluster.replica(0);
    let seeded = register_retrying(replica, register_in("default", "web", 1)).await;
    let mut sidecar = SimSidecar::spawn(
        "sim-0".into(),
        vec![replica.grpc.clone()],
        vec!["default".into()],
    );
    assert!(sidecar.wait_for(seeded).await);

    let recycled = wait_until(PATIENCE, || async {
        let record = sidecar.record.lock().unwrap().clone();
        (record.connects >= 2 && record.endings.contains(&Code::Unavailable)).then_some(())
    })
    .await;
    assert!(
        recycled.is_some(),
        "the stream was not recycled: {:?}",
        sidecar.record.lock().unwrap()
    );
    let later = register_retrying(replica, register_in("default", "web", 2)).await;
    assert!(sidecar.wait_for(later).await);
    let record = sidecar.record.lock().unwrap().clone();
    assert!(record.regressions.is_empty(), "{record:?}");
    assert_eq!(
        record.snapshots, 1,
        "a reconnect was answered by a snapshot: {record:?}"
    );
    assert!(record.deltas >= 1, "{record:?}");
}

/// A sidecar whose update was read from the catalog between two pushes (it saw a state the
/// pusher never compared) still converges: a change that the next push sees as "back to what
/// was pushed" is not lost for it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sidecar_that_saw_an_intermediate_state_converges() {
    // A long debounce window, so the flip below happens between two pushes. A machine too slow
    // to stay inside it only makes the intermediate state unobservable (the test then passes
    // without proving much); it cannot make a correct product fail.
    let cluster = TestCluster::start(1, &["--push-quiet", "3s", "--push-max-delay", "3s"]).await;
    cluster.wait_settled().await;
    let replica = cluster.replica(0);
    // Once a sidecar connected before the write has it, a push has set the pusher's baseline
    // to "ready", and the debounce window that push opened holds the flip below.
    let mut probe = SimSidecar::spawn(
        "probe-0".into(),
        vec![replica.grpc.clone()],
        vec!["default".into()],
    );
    assert!(probe.wait_for(1).await, "the probe sidecar is served");
    let created = register_retrying(replica, register_in("default", "web", 1)).await;
    assert!(probe.wait_for(created).await, "the creation was pushed");
    let mut unready = register_in("default", "web", 1);
    unready.endpoint.as_mut().unwrap().ready = false;
    register_retrying(replica, unready).await;
    let flipped = register_retrying(replica, register_in("default", "temp", 1)).await;

    // The sidecar connects inside the window and is sent the unready endpoint and a service
    // the pusher never saw.
    let mut stream = RawStream::open(&replica.grpc, hello("web-0", &["default"], 0, ""))
        .await
        .unwrap();
    let first = stream.next().await.unwrap();
    let snapshot = snapshot_of(&first);
    assert_eq!(first.version, flipped);
    assert_eq!(names(&snapshot.services), ["default/temp", "default/web"]);
    assert!(!snapshot.services[1].endpoints[0].ready, "{first:?}");
    stream.ack(&first).await;

    // Back to ready, and the new service gone: net of the window nothing changed for the
    // pusher, but for this sidecar both did.
    register_retrying(replica, register_in("default", "web", 1)).await;
    let back = delete_service(replica, "default", "temp").await;
    let mut web_ready = false;
    let mut temp_removed = false;
    let mut from = first.version;
    while !(web_ready && temp_removed) {
        let next = stream.next().await.unwrap();
        let delta = delta_of(&next);
        assert_eq!(delta.from_version, from, "{next:?}");
        for service in &delta.upserted {
            if service.name == "web" {
                web_ready = service.endpoints.iter().all(|e| e.ready);
            }
        }
        temp_removed |= removed_names(&delta.removed).contains(&"default/temp".to_owned());
        stream.ack(&next).await;
        from = next.version;
    }
    assert!(from >= back, "converged at {from}, below {back}");
}

/// Asking what a sidecar was sent, with a malformed namespace or no pod, is refused naming the
/// field; a well-formed name that is not connected is NOT_FOUND.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sidecar_config_validates_its_request() {
    use netting_proto::discovery::v1::discovery_admin_client::DiscoveryAdminClient;
    let cluster = TestCluster::start(1, &[]).await;
    let mut admin = DiscoveryAdminClient::new(channel(&cluster.replica(0).grpc));
    let ask = |namespace: &str, pod: &str| pb::SidecarConfigRequest {
        namespace: namespace.into(),
        pod: pod.into(),
    };
    let bad_ns = admin
        .sidecar_config(ask("Not_A_Label", "web-0"))
        .await
        .unwrap_err();
    assert_eq!(bad_ns.code(), Code::InvalidArgument, "{bad_ns:?}");
    assert!(bad_ns.message().contains("namespace"), "{bad_ns:?}");
    let no_pod = admin.sidecar_config(ask("default", "")).await.unwrap_err();
    assert_eq!(no_pod.code(), Code::InvalidArgument, "{no_pod:?}");
    assert!(no_pod.message().contains("pod"), "{no_pod:?}");
    let absent = admin
        .sidecar_config(ask("default", "web-0"))
        .await
        .unwrap_err();
    assert_eq!(absent.code(), Code::NotFound, "{absent:?}");
}

/// A replica that is asked to stop ends its sidecars' streams at once, sending them to another
/// replica: a long-lived stream must not hold the shutdown (and a leader's successor) back.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stopping_replica_sends_its_sidecars_elsewhere() {
    let cluster = TestCluster::start(1, &[]).await;
    cluster.wait_settled().await;
    let replica = cluster.replica(0);
    register_retrying(replica, register_in("default", "web", 1)).await;
    let mut stream = RawStream::open(&replica.grpc, hello("web-0", &["default"], 0, ""))
        .await
        .unwrap();
    let first = stream.next().await.unwrap();
    stream.ack(&first).await;

    let pid = replica.pid().unwrap();
    sigterm(pid);
    let status = stream.ended().await;
    assert_eq!(status.code(), Code::Unavailable, "{status:?}");
    assert!(status.message().contains("shutting down"), "{status:?}");
    assert_eq!(
        status
            .metadata()
            .get(TRY_ANOTHER)
            .and_then(|v| v.to_str().ok()),
        Some("true"),
        "{status:?}"
    );
    // The sidecar keeps its side of the stream open; the replica still drains and exits
    // without waiting out its drain bound.
    let exited = wait_until(PATIENCE, || async {
        let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
        let state = stat
            .rsplit(')')
            .next()
            .and_then(|rest| rest.split_whitespace().next());
        matches!(state, None | Some("Z")).then_some(())
    })
    .await;
    assert!(
        exited.is_some(),
        "the replica did not exit\n{}",
        cluster.logs()
    );
    let log = std::fs::read_to_string(&replica.log).unwrap();
    assert!(!log.contains("did not drain"), "{log}");
    drop(stream);
}
