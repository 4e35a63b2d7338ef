//! How the client moves between replicas and survives their absence.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::sync::Arc;
use std::time::Duration;

use netting_discovery_client::DiscoveryClient;
use support::{
    FakeServer, Step, client_config, delta, service, snapshot, try_another_replica, wait_until,
};
use tokio::sync::Notify;
use tonic::Status;

const CENTURY: Duration = Duration::from_secs(100 * 365 * 24 * 3600);

/// After a stream ends, the next hello resumes from the last applied version and cluster id,
/// and the replica's delta from there is applied.
#[tokio::test]
async fn reconnect_resumes_from_the_last_version() {
    let server = FakeServer::start(vec![
        vec![
            Step::Respond(snapshot(
                "n1",
                7,
                "c1",
                vec![service("web", &["10.0.0.1:8080"])],
            )),
            Step::AwaitReply,
            Step::End(Status::unavailable("stream reached its maximum age")),
        ],
        vec![Step::RespondTo(Box::new(|hello| {
            delta(
                "n2",
                hello.last_version,
                8,
                "c1",
                vec![service("cart", &["10.0.0.2:8080"])],
                &[],
            )
        }))],
    ])
    .await;
    let client = DiscoveryClient::spawn(client_config(&[server.authority()]), None).unwrap();
    let mut config = client.config();

    let resumed = wait_until(&mut config, "version 8", |c| c.version == 8).await;
    assert_eq!(
        resumed.services.len(),
        2,
        "the delta applies on top of version 7"
    );
    let hellos = server.hellos();
    assert_eq!(hellos.len(), 2);
    assert_eq!(
        (hellos[0].last_version, hellos[0].cluster_id.as_str()),
        (0, "")
    );
    assert_eq!(
        (hellos[1].last_version, hellos[1].cluster_id.as_str()),
        (7, "c1")
    );
    let status = client.status().borrow().clone();
    assert!(status.reconnects >= 1);
    client.shutdown().await;
}

/// When the next replica in turn refuses connections, the client moves past it and reaches the
/// one after.
#[tokio::test]
async fn refused_replica_is_skipped() {
    // Every replica answers its first stream, then holds it until its gate opens and ends it.
    let mut gates = Vec::new();
    let mut servers = Vec::new();
    for i in 0..3 {
        let gate = Arc::new(Notify::new());
        let server = FakeServer::start(vec![vec![
            Step::Respond(snapshot(&format!("n{i}"), 4, "c1", vec![])),
            Step::AwaitReply,
            Step::Wait(gate.clone()),
            Step::End(Status::unavailable("stream reached its maximum age")),
        ]])
        .await;
        gates.push(gate);
        servers.push(Some(server));
    }
    let replicas: Vec<String> = servers
        .iter()
        .flatten()
        .map(FakeServer::authority)
        .collect();
    let client = DiscoveryClient::spawn(client_config(&replicas), None).unwrap();
    let mut status = client.status();

    // The client starts at a random replica; the rotation from there is fixed.
    let first = wait_until(&mut status, "a first stream", |s| s.connected).await;
    let at = replicas
        .iter()
        .position(|r| Some(r) == first.connected_to.as_ref())
        .unwrap();
    let refusing = (at + 1) % 3;
    let target = (at + 2) % 3;
    servers[refusing].take().unwrap().stop().await;
    gates[at].notify_one();

    let reached = wait_until(&mut status, "the replica after the refusing one", |s| {
        s.connected && s.connected_to.as_ref() == Some(&replicas[target])
    })
    .await;
    assert!(
        reached.reconnects >= 2,
        "one refused attempt, then the target: {reached:?}"
    );
    let target_server = servers[target].as_ref().unwrap();
    target_server.wait_for("a hello", |r| !r.is_empty()).await;
    assert_eq!(target_server.hellos()[0].last_version, 4);
    client.shutdown().await;
}

/// UNAVAILABLE with the try-another-replica trailer sends the client to another replica at
/// once: the backoff here is a century, so only the trailer can make the move happen in time.
#[tokio::test]
async fn try_another_replica_moves_on_without_backoff() {
    let mut gates = Vec::new();
    let mut servers = Vec::new();
    for i in 0..2 {
        let gate = Arc::new(Notify::new());
        let server = FakeServer::start(vec![vec![
            Step::Respond(snapshot(&format!("n{i}"), 4, "c1", vec![])),
            Step::AwaitReply,
            Step::Wait(gate.clone()),
            Step::End(try_another_replica()),
        ]])
        .await;
        gates.push(gate);
        servers.push(server);
    }
    let replicas: Vec<String> = servers.iter().map(FakeServer::authority).collect();
    let mut config = client_config(&replicas);
    // A uniform draw from a century falls within the test's wait once in 10^8 runs.
    config.backoff_min = CENTURY;
    config.backoff_max = CENTURY;
    let client = DiscoveryClient::spawn(config, None).unwrap();
    let mut status = client.status();

    let first = wait_until(&mut status, "a first stream", |s| s.connected).await;
    let at = replicas
        .iter()
        .position(|r| Some(r) == first.connected_to.as_ref())
        .unwrap();
    let other = 1 - at;
    gates[at].notify_one();

    wait_until(&mut status, "a stream to the other replica", |s| {
        s.connected && s.connected_to.as_ref() == Some(&replicas[other])
    })
    .await;
    let hello = servers[other].wait_for("a hello", |r| !r.is_empty()).await;
    assert_eq!(servers[other].hellos()[0].last_version, 4, "{hello:?}");
    client.shutdown().await;
}

/// With no replica reachable the last config stays published while the client keeps trying,
/// and it reconnects and resumes when a replica comes back on the same address.
#[tokio::test]
async fn last_config_survives_the_control_plane_going_away() {
    let server = FakeServer::start(vec![vec![Step::Respond(snapshot(
        "n1",
        3,
        "c1",
        vec![service("web", &["10.0.0.1:8080"])],
    ))]])
    .await;
    let addr = server.addr();
    let client = DiscoveryClient::spawn(client_config(&[server.authority()]), None).unwrap();
    let mut config = client.config();
    let mut status = client.status();
    let before = wait_until(&mut config, "version 3", |c| c.version == 3).await;

    server.stop().await;
    let down = wait_until(&mut status, "disconnected", |s| !s.connected).await;
    // Several failed attempts while nothing listens: the client keeps trying on its own.
    wait_until(&mut status, "three more attempts", |s| {
        s.reconnects >= down.reconnects + 3
    })
    .await;
    assert!(!status.borrow().connected);
    assert!(status.borrow().last_error.is_some());
    assert_eq!(
        *config.borrow(),
        before,
        "the last good config stays published"
    );

    let back = FakeServer::start_on(
        addr,
        vec![vec![Step::RespondTo(Box::new(|hello| {
            delta(
                "n2",
                hello.last_version,
                4,
                "c1",
                vec![service("cart", &["10.0.0.2:8080"])],
                &[],
            )
        }))]],
    )
    .await;
    let after = wait_until(&mut config, "version 4", |c| c.version == 4).await;
    assert_eq!(after.services.len(), 2);
    let hello = &back.hellos()[0];
    assert_eq!((hello.last_version, hello.cluster_id.as_str()), (3, "c1"));
    client.shutdown().await;
}
