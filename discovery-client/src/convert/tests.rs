#![allow(clippy::unwrap_used, clippy::expect_used)]

use super::*;

fn service(namespace: &str, name: &str) -> proto::ServiceConfig {
    proto::ServiceConfig {
        namespace: namespace.into(),
        name: name.into(),
        ports: vec![proto::Port {
            name: "http".into(),
            port: 8080,
            protocol: "http".into(),
        }],
        endpoints: vec![proto::Endpoint {
            address: "10.1.2.3".into(),
            port: 8080,
            ready: true,
            zone: "eu-1a".into(),
        }],
        policy: Some(proto::Policy {
            request_timeout_ms: 1500,
            max_retries: 2,
            load_balancer: "p2c_ewma".into(),
        }),
    }
}

fn snapshot(services: Vec<proto::ServiceConfig>) -> proto::DiscoveryResponse {
    proto::DiscoveryResponse {
        nonce: "n1".into(),
        version: 4,
        cluster_id: "c1".into(),
        update: Some(proto::discovery_response::Update::Snapshot(
            proto::Snapshot { services },
        )),
    }
}

fn field_of(response: proto::DiscoveryResponse) -> String {
    Update::try_from(response)
        .expect_err("response should be refused")
        .field
}

/// Every field of a service reaches the domain type, with empty strings and zeros meaning
/// "none".
#[test]
fn service_fields_convert() {
    let mut bare = service("shop", "cart");
    bare.endpoints[0].zone = String::new();
    bare.ports[0].protocol = String::new();
    bare.policy = None;
    let update = Update::try_from(snapshot(vec![service("shop", "web"), bare])).unwrap();
    assert_eq!(update.version, 4);
    assert_eq!(update.cluster_id, "c1");
    let Change::Snapshot(services) = update.change else {
        panic!("expected a snapshot");
    };
    let web = &services[&ServiceName::new("shop", "web")];
    assert_eq!(
        web.ports,
        vec![Port {
            name: "http".into(),
            port: 8080,
            protocol: Protocol::Http
        }]
    );
    assert_eq!(web.endpoints[0].addr, "10.1.2.3:8080".parse().unwrap());
    assert!(web.endpoints[0].ready);
    assert_eq!(web.endpoints[0].zone.as_deref(), Some("eu-1a"));
    assert_eq!(
        web.policy,
        Policy {
            request_timeout: Some(Duration::from_millis(1500)),
            max_retries: 2,
            load_balancer: Some(LoadBalancer::P2cEwma),
        }
    );
    let cart = &services[&ServiceName::new("shop", "cart")];
    assert_eq!(cart.ports[0].protocol, Protocol::Tcp);
    assert_eq!(cart.endpoints[0].zone, None);
    assert_eq!(cart.policy, Policy::default());
}

/// IPv6 endpoints become socket addresses like IPv4 ones.
#[test]
fn ipv6_endpoint() {
    let mut svc = service("shop", "web");
    svc.endpoints[0].address = "fd00::7".into();
    let Change::Snapshot(services) = Update::try_from(snapshot(vec![svc])).unwrap().change else {
        panic!("expected a snapshot");
    };
    assert_eq!(
        services[&ServiceName::new("shop", "web")].endpoints[0].addr,
        "[fd00::7]:8080".parse().unwrap()
    );
}

/// Each kind of bad field is refused with its full path.
#[test]
fn bad_fields_are_named() {
    type Edit = fn(&mut proto::ServiceConfig);
    let bad = |edit: Edit| {
        let mut second = service("shop", "cart");
        edit(&mut second);
        snapshot(vec![service("shop", "web"), second])
    };
    let cases: [(Edit, &str); 8] = [
        (
            |s| s.endpoints[0].address = "web.shop".into(),
            "snapshot.services[1].endpoints[0].address",
        ),
        (
            |s| s.endpoints[0].port = 70000,
            "snapshot.services[1].endpoints[0].port",
        ),
        (
            |s| s.ports[0].port = 0,
            "snapshot.services[1].ports[0].port",
        ),
        (
            |s| s.ports[0].protocol = "udp".into(),
            "snapshot.services[1].ports[0].protocol",
        ),
        (
            |s| {
                if let Some(p) = s.policy.as_mut() {
                    p.load_balancer = "random".into();
                }
            },
            "snapshot.services[1].policy.load_balancer",
        ),
        (|s| s.namespace.clear(), "snapshot.services[1].namespace"),
        (|s| s.name.clear(), "snapshot.services[1].name"),
        (|s| s.name = "web".into(), "snapshot.services[1]"),
    ];
    for (edit, field) in cases {
        assert_eq!(field_of(bad(edit)), field);
    }
}

/// Envelope errors: no cluster id, no update, a delta that ends before it starts, a service
/// both upserted and removed.
#[test]
fn bad_envelopes_are_named() {
    let mut no_cluster = snapshot(vec![]);
    no_cluster.cluster_id.clear();
    assert_eq!(field_of(no_cluster), "cluster_id");

    let mut no_update = snapshot(vec![]);
    no_update.update = None;
    assert_eq!(field_of(no_update), "update");

    let delta = |from_version, removed: Vec<proto::ServiceRef>| proto::DiscoveryResponse {
        nonce: "n2".into(),
        version: 5,
        cluster_id: "c1".into(),
        update: Some(proto::discovery_response::Update::Delta(proto::Delta {
            from_version,
            upserted: vec![service("shop", "web")],
            removed,
        })),
    };
    assert_eq!(field_of(delta(6, vec![])), "delta.from_version");
    let both = vec![
        proto::ServiceRef {
            namespace: "shop".into(),
            name: "old".into(),
        },
        proto::ServiceRef {
            namespace: "shop".into(),
            name: "web".into(),
        },
    ];
    assert_eq!(field_of(delta(4, both)), "delta.removed[1]");
    let nameless = vec![proto::ServiceRef {
        namespace: "shop".into(),
        name: String::new(),
    }];
    assert_eq!(field_of(delta(4, nameless)), "delta.removed[0].name");
}

/// The hello carries the identity, the subscription and the resume point.
#[test]
fn hello_carries_identity_subscription_and_version() {
    let identity = Identity::new("web-0", "shop")
        .service_account("web")
        .label("app", "web")
        .proxy_version("0.1.0");
    let subscription = Subscription::new()
        .namespace("shop")
        .service("payments", "api");
    let request = hello(&identity, &subscription, 42, "c1");
    let Some(proto::discovery_request::Message::Hello(hello)) = request.message else {
        panic!("expected a hello");
    };
    assert_eq!(hello.last_version, 42);
    assert_eq!(hello.cluster_id, "c1");
    let id = hello.identity.unwrap();
    assert_eq!(
        (
            id.pod.as_str(),
            id.namespace.as_str(),
            id.service_account.as_str()
        ),
        ("web-0", "shop", "web")
    );
    assert_eq!(id.labels.get("app").map(String::as_str), Some("web"));
    assert_eq!(id.proxy_version, "0.1.0");
    let sub = hello.subscription.unwrap();
    assert_eq!(sub.namespaces, vec!["shop".to_owned()]);
    assert_eq!(sub.services[0].namespace, "payments");
    assert_eq!(sub.services[0].name, "api");
}
