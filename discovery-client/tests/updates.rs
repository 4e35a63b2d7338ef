//! How the client applies, acknowledges and refuses updates on one stream.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::sync::Arc;

use netting_discovery_client::{DiscoveryClient, ProxyConfig, ServiceName, Validator};
use netting_proto::discovery::v1::discovery_request::Message;
use support::{FakeServer, Step, ack, client_config, delta, service, snapshot, wait_until};
use tokio::sync::Notify;

fn names(config: &ProxyConfig) -> Vec<String> {
    config.services.keys().map(|n| n.name.clone()).collect()
}

fn nack_of(message: &Message) -> Option<(u64, String, String)> {
    match message {
        Message::Nack(n) => Some((n.version, n.nonce.clone(), n.error.clone())),
        _ => None,
    }
}

/// A snapshot then a delta are applied in order, each version is published, and each is
/// acknowledged with its own version and nonce.
#[tokio::test]
async fn snapshot_then_delta_are_applied_and_acked() {
    let gate = Arc::new(Notify::new());
    let server = FakeServer::start(vec![vec![
        Step::Respond(snapshot(
            "n1",
            1,
            "c1",
            vec![
                service("web", &["10.0.0.1:8080"]),
                service("db", &["10.0.0.2:5432"]),
            ],
        )),
        Step::AwaitReply,
        Step::Wait(gate.clone()),
        Step::Respond(delta(
            "n2",
            1,
            2,
            "c1",
            vec![service("cart", &["10.0.0.3:8080"])],
            &["db"],
        )),
        Step::AwaitReply,
    ]])
    .await;
    let client = DiscoveryClient::spawn(client_config(&[server.authority()]), None).unwrap();
    let mut config = client.config();
    assert_eq!(**config.borrow(), ProxyConfig::default());

    let first = wait_until(&mut config, "version 1", |c| c.version == 1).await;
    assert_eq!(first.cluster_id, "c1");
    assert_eq!(names(&first), ["db", "web"]);
    let web = first.service(&ServiceName::new("shop", "web")).unwrap();
    assert_eq!(web.endpoints[0].addr, "10.0.0.1:8080".parse().unwrap());

    gate.notify_one();
    let second = wait_until(&mut config, "version 2", |c| c.version == 2).await;
    assert_eq!(names(&second), ["cart", "web"]);

    let received = server
        .wait_for("two acks", |r| {
            r.iter()
                .filter(|r| matches!(r.message, Message::Ack(_)))
                .count()
                == 2
        })
        .await;
    let Message::Hello(hello) = &received[0].message else {
        panic!("the first request must be the hello: {received:?}");
    };
    assert_eq!((hello.last_version, hello.cluster_id.as_str()), (0, ""));
    let identity = hello.identity.as_ref().unwrap();
    assert_eq!(
        (identity.pod.as_str(), identity.namespace.as_str()),
        ("web-0", "shop")
    );
    assert_eq!(hello.subscription.as_ref().unwrap().namespaces, ["shop"]);
    assert_eq!(server.replies(), [ack(1, "n1"), ack(2, "n2")]);
    client.shutdown().await;
}

/// A response with an endpoint that is not an IP address is NACKed with the field's name, the
/// last good config stays, and the stream goes on to apply the next good update.
#[tokio::test]
async fn invalid_endpoint_is_nacked_and_last_good_config_stays() {
    let server = FakeServer::start(vec![vec![
        Step::Respond(snapshot(
            "n1",
            1,
            "c1",
            vec![service("web", &["10.0.0.1:8080"])],
        )),
        Step::AwaitReply,
        Step::Respond(delta(
            "n2",
            1,
            2,
            "c1",
            vec![service("web", &["web.shop.svc:8080"])],
            &[],
        )),
        Step::AwaitReply,
        Step::Respond(delta(
            "n3",
            1,
            3,
            "c1",
            vec![service("web", &["10.0.0.9:8080"])],
            &[],
        )),
        Step::AwaitReply,
    ]])
    .await;
    let client = DiscoveryClient::spawn(client_config(&[server.authority()]), None).unwrap();
    let mut config = client.config();

    let received = server
        .wait_for("a nack", |r| {
            r.iter().any(|r| nack_of(&r.message).is_some())
        })
        .await;
    let (version, nonce, error) = received.iter().find_map(|r| nack_of(&r.message)).unwrap();
    assert_eq!((version, nonce.as_str()), (2, "n2"));
    assert!(
        error.contains("delta.upserted[0].endpoints[0].address"),
        "the NACK should name the field: {error}"
    );
    // The NACK is sent after the decision not to apply: the config is still version 1.
    let kept = config.borrow().clone();
    assert_eq!(kept.version, 1);
    let web = kept.service(&ServiceName::new("shop", "web")).unwrap();
    assert_eq!(web.endpoints[0].addr, "10.0.0.1:8080".parse().unwrap());
    assert_eq!(
        client.status().borrow().last_nack.as_deref(),
        Some(error.as_str())
    );

    let third = wait_until(&mut config, "version 3", |c| c.version == 3).await;
    let web = third.service(&ServiceName::new("shop", "web")).unwrap();
    assert_eq!(web.endpoints[0].addr, "10.0.0.9:8080".parse().unwrap());
    server
        .wait_for("the ack of n3", |r| {
            r.iter().any(|r| r.message == ack(3, "n3"))
        })
        .await;
    // All on one stream: a bad update is not a reason to reconnect.
    assert_eq!(server.hellos().len(), 1);
    client.shutdown().await;
}

/// A config the proxy's validator refuses is NACKed with the validator's reason and not
/// published.
#[tokio::test]
async fn validator_rejection_is_nacked() {
    let server = FakeServer::start(vec![vec![
        Step::Respond(snapshot(
            "n1",
            1,
            "c1",
            vec![service("web", &["10.0.0.1:8080"])],
        )),
        Step::AwaitReply,
        Step::Respond(delta(
            "n2",
            1,
            2,
            "c1",
            vec![service("admin", &["10.0.0.5:8080"])],
            &[],
        )),
        Step::AwaitReply,
    ]])
    .await;
    let validator: Validator =
        Arc::new(
            |config: &ProxyConfig| match config.services.keys().find(|n| n.name == "admin") {
                Some(name) => Err(format!("{name} must not be routed")),
                None => Ok(()),
            },
        );
    let client =
        DiscoveryClient::spawn(client_config(&[server.authority()]), Some(validator)).unwrap();
    let received = server
        .wait_for("a nack", |r| {
            r.iter().any(|r| nack_of(&r.message).is_some())
        })
        .await;
    let (version, nonce, error) = received.iter().find_map(|r| nack_of(&r.message)).unwrap();
    assert_eq!((version, nonce.as_str()), (2, "n2"));
    assert!(error.contains("shop/admin must not be routed"), "{error}");
    let kept = client.config().borrow().clone();
    assert_eq!((kept.version, names(&kept)), (1, vec!["web".to_owned()]));
    assert_eq!(server.replies()[0], ack(1, "n1"));
    client.shutdown().await;
}

/// Within a cluster a lower version is NACKed and not applied; a snapshot of another cluster
/// (rebuilt, versions restarted) is applied even though its version is lower.
#[tokio::test]
async fn lower_version_is_refused_but_a_new_cluster_snapshot_is_taken() {
    let server = FakeServer::start(vec![vec![
        Step::Respond(snapshot(
            "n1",
            5,
            "c1",
            vec![service("web", &["10.0.0.1:8080"])],
        )),
        Step::AwaitReply,
        Step::Respond(snapshot(
            "n2",
            4,
            "c1",
            vec![service("old", &["10.0.0.4:8080"])],
        )),
        Step::AwaitReply,
        Step::Respond(snapshot(
            "n3",
            2,
            "c2",
            vec![service("new", &["10.0.0.2:8080"])],
        )),
        Step::AwaitReply,
    ]])
    .await;
    let client = DiscoveryClient::spawn(client_config(&[server.authority()]), None).unwrap();
    let mut config = client.config();

    let received = server
        .wait_for("a nack", |r| {
            r.iter().any(|r| nack_of(&r.message).is_some())
        })
        .await;
    let (version, nonce, error) = received.iter().find_map(|r| nack_of(&r.message)).unwrap();
    assert_eq!((version, nonce.as_str()), (4, "n2"));
    assert!(error.contains("version goes backwards"), "{error}");
    let kept = config.borrow().clone();
    assert_eq!((kept.version, names(&kept)), (5, vec!["web".to_owned()]));

    let rebuilt = wait_until(&mut config, "cluster c2", |c| c.cluster_id == "c2").await;
    assert_eq!(
        (rebuilt.version, names(&rebuilt)),
        (2, vec!["new".to_owned()])
    );
    server
        .wait_for("the ack of n3", |r| {
            r.iter().any(|r| r.message == ack(2, "n3"))
        })
        .await;
    client.shutdown().await;
}

/// A delta from a version the client does not have is NACKed, nothing is applied, and the
/// client reconnects with a hello from the version it really has.
#[tokio::test]
async fn delta_with_a_gap_is_nacked_and_the_client_resyncs() {
    let server = FakeServer::start(vec![
        vec![
            Step::Respond(snapshot(
                "n1",
                3,
                "c1",
                vec![service("web", &["10.0.0.1:8080"])],
            )),
            Step::AwaitReply,
            Step::Respond(delta("n2", 7, 8, "c1", vec![], &["web"])),
            Step::AwaitReply,
        ],
        vec![Step::RespondTo(Box::new(|hello| {
            delta("n3", hello.last_version, 8, "c1", vec![], &["web"])
        }))],
    ])
    .await;
    let client = DiscoveryClient::spawn(client_config(&[server.authority()]), None).unwrap();
    let mut config = client.config();

    let resynced = wait_until(&mut config, "version 8", |c| c.version == 8).await;
    assert!(resynced.services.is_empty());
    let received = server.received();
    let (version, nonce, error) = received.iter().find_map(|r| nack_of(&r.message)).unwrap();
    assert_eq!((version, nonce.as_str()), (8, "n2"));
    assert!(error.contains("delta from version 7"), "{error}");
    let hellos = server.hellos();
    assert_eq!(hellos.len(), 2);
    assert_eq!(
        (hellos[1].last_version, hellos[1].cluster_id.as_str()),
        (3, "c1")
    );
    client.shutdown().await;
}
