#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::Arc;

use super::*;
use crate::types::ServiceName;

fn service(name: &str, ip: &str) -> proto::ServiceConfig {
    proto::ServiceConfig {
        namespace: "shop".into(),
        name: name.into(),
        ports: vec![],
        endpoints: vec![proto::Endpoint {
            address: ip.into(),
            port: 80,
            ready: true,
            zone: String::new(),
        }],
        policy: None,
    }
}

fn snapshot(
    version: u64,
    cluster: &str,
    services: Vec<proto::ServiceConfig>,
) -> proto::DiscoveryResponse {
    proto::DiscoveryResponse {
        nonce: format!("s{version}"),
        version,
        cluster_id: cluster.into(),
        update: Some(proto::discovery_response::Update::Snapshot(
            proto::Snapshot { services },
        )),
    }
}

fn delta(
    from_version: u64,
    version: u64,
    cluster: &str,
    upserted: Vec<proto::ServiceConfig>,
    removed: &[&str],
) -> proto::DiscoveryResponse {
    proto::DiscoveryResponse {
        nonce: format!("d{version}"),
        version,
        cluster_id: cluster.into(),
        update: Some(proto::discovery_response::Update::Delta(proto::Delta {
            from_version,
            upserted,
            removed: removed
                .iter()
                .map(|name| proto::ServiceRef {
                    namespace: "shop".into(),
                    name: (*name).into(),
                })
                .collect(),
        })),
    }
}

fn names(config: &ProxyConfig) -> Vec<String> {
    config.services.keys().map(|n| n.name.clone()).collect()
}

fn at(version: u64, cluster: &str, services: &[&str]) -> ProxyConfig {
    apply(
        &ProxyConfig::default(),
        snapshot(
            version,
            cluster,
            services.iter().map(|s| service(s, "10.0.0.1")).collect(),
        ),
        None,
    )
    .unwrap()
}

/// A snapshot replaces everything; a delta upserts and removes on top of the current config.
#[test]
fn snapshot_replaces_and_delta_patches() {
    let first = at(3, "c1", &["a", "b"]);
    assert_eq!((first.version, first.cluster_id.as_str()), (3, "c1"));
    assert_eq!(names(&first), ["a", "b"]);

    let second = apply(
        &first,
        delta(
            3,
            5,
            "c1",
            vec![service("c", "10.0.0.3"), service("a", "10.0.0.9")],
            &["b"],
        ),
        None,
    )
    .unwrap();
    assert_eq!(second.version, 5);
    assert_eq!(names(&second), ["a", "c"]);
    let a = second.service(&ServiceName::new("shop", "a")).unwrap();
    assert_eq!(a.endpoints[0].addr, "10.0.0.9:80".parse().unwrap());

    let replaced = apply(
        &second,
        snapshot(6, "c1", vec![service("z", "10.0.0.1")]),
        None,
    )
    .unwrap();
    assert_eq!(names(&replaced), ["z"]);
}

/// A delta from an older version the client has already passed is applied (replaying known
/// changes is harmless); an empty delta at the current version is accepted as a no-op.
#[test]
fn delta_from_an_older_base_and_empty_delta() {
    let current = at(7, "c1", &["a"]);
    let next = apply(
        &current,
        delta(5, 8, "c1", vec![service("b", "10.0.0.2")], &[]),
        None,
    )
    .unwrap();
    assert_eq!(
        (next.version, names(&next)),
        (8, vec!["a".into(), "b".into()])
    );
    let same = apply(&next, delta(8, 8, "c1", vec![], &[]), None).unwrap();
    assert_eq!(same, next);
}

/// Within a cluster, a lower version is refused whatever its kind.
#[test]
fn never_backwards_within_a_cluster() {
    let current = at(10, "c1", &["a"]);
    for response in [snapshot(9, "c1", vec![]), delta(8, 9, "c1", vec![], &["a"])] {
        let rejection = apply(&current, response, None).unwrap_err();
        assert!(
            matches!(
                rejection,
                Rejection::Backwards {
                    version: 9,
                    current: 10,
                    ..
                }
            ),
            "{rejection:?}"
        );
        assert!(rejection.to_string().contains("version goes backwards"));
        assert!(!rejection.needs_resync());
    }
}

/// A delta from a version the client does not have is refused and asks for a resync.
#[test]
fn delta_with_a_gap_needs_resync() {
    let current = at(10, "c1", &["a"]);
    let rejection = apply(&current, delta(11, 12, "c1", vec![], &["a"]), None).unwrap_err();
    assert_eq!(
        rejection,
        Rejection::MissingBase {
            from_version: 11,
            current: 10
        }
    );
    assert!(rejection.needs_resync());
}

/// Another cluster id is taken only as a snapshot, even at a lower version; a delta from it
/// asks for a resync.
#[test]
fn another_cluster_only_by_snapshot() {
    let current = at(10, "c1", &["a"]);
    let rebuilt = apply(
        &current,
        snapshot(2, "c2", vec![service("b", "10.0.0.2")]),
        None,
    )
    .unwrap();
    assert_eq!((rebuilt.version, rebuilt.cluster_id.as_str()), (2, "c2"));
    assert_eq!(names(&rebuilt), ["b"]);

    let rejection = apply(&current, delta(10, 11, "c2", vec![], &[]), None).unwrap_err();
    assert!(
        matches!(rejection, Rejection::ForeignDelta { .. }),
        "{rejection:?}"
    );
    assert!(rejection.needs_resync());

    // The very first update must be a snapshot too: the client has no cluster yet.
    let rejection = apply(
        &ProxyConfig::default(),
        delta(0, 1, "c1", vec![], &[]),
        None,
    )
    .unwrap_err();
    assert!(
        matches!(rejection, Rejection::ForeignDelta { .. }),
        "{rejection:?}"
    );
}

/// The validator sees the complete candidate config and its refusal is reported verbatim.
#[test]
fn validator_sees_the_candidate() {
    let validator: Validator = Arc::new(|config: &ProxyConfig| {
        if config.services.keys().any(|n| n.name == "forbidden") {
            Err("service forbidden is not allowed".into())
        } else {
            Ok(())
        }
    });
    let current = at(1, "c1", &["a"]);
    let ok = apply(
        &current,
        delta(1, 2, "c1", vec![service("b", "10.0.0.2")], &[]),
        Some(&validator),
    );
    assert_eq!(ok.unwrap().version, 2);
    let rejection = apply(
        &current,
        delta(1, 2, "c1", vec![service("forbidden", "10.0.0.2")], &[]),
        Some(&validator),
    )
    .unwrap_err();
    assert_eq!(
        rejection,
        Rejection::Validator("service forbidden is not allowed".into())
    );
}
