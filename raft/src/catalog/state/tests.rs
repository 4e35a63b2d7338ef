use std::net::{IpAddr, Ipv4Addr};

use super::*;
use crate::catalog::model::{EndpointId, ServicePort};

fn key(name: &str) -> ServiceKey {
    ServiceKey {
        namespace: "default".into(),
        name: name.into(),
    }
}

fn endpoint(last_octet: u8) -> EndpointSpec {
    EndpointSpec {
        id: EndpointId {
            address: IpAddr::V4(Ipv4Addr::new(10, 0, 0, last_octet)),
            port: 8080,
        },
        ready: true,
        zone: None,
        pod: None,
    }
}

fn register(name: &str, last_octet: u8) -> CatalogCommand {
    CatalogCommand::RegisterEndpoint {
        key: key(name),
        source: Source::Api,
        endpoint: endpoint(last_octet),
        spec: None,
    }
}

/// Registering creates the service and stamps it with the entry's index.
#[test]
fn register_creates_service_at_index() {
    let mut catalog = Catalog::default();
    assert_eq!(
        catalog.apply(3, &register("web", 1)),
        Ok(Applied { changed: true })
    );
    let service = catalog
        .get(&key("web"))
        .map(|s| (s.create_index, s.modify_index, s.endpoints.len()));
    assert_eq!(service, Some((3, 3, 1)));
    assert_eq!(catalog.version(), 3);
}

/// Repeating a write changes nothing, not even the version: retries and a new leader's
/// re-proposals never make sidecars see churn.
#[test]
fn repeated_register_is_a_no_op() {
    let mut catalog = Catalog::default();
    let _ = catalog.apply(3, &register("web", 1));
    assert_eq!(
        catalog.apply(4, &register("web", 1)),
        Ok(Applied { changed: false })
    );
    assert_eq!(catalog.version(), 3);
    assert_eq!(catalog.get(&key("web")).map(|s| s.modify_index), Some(3));
}

/// Deregistering an endpoint bumps the service's index; an unknown one is refused.
#[test]
fn deregister_endpoint() {
    let mut catalog = Catalog::default();
    let _ = catalog.apply(1, &register("web", 1));
    let _ = catalog.apply(2, &register("web", 2));
    let id = endpoint(1).id;
    let cmd = CatalogCommand::DeregisterEndpoint {
        key: key("web"),
        endpoint: id,
        source: Some(Source::Api),
    };
    assert_eq!(catalog.apply(5, &cmd), Ok(Applied { changed: true }));
    assert_eq!(
        catalog
            .get(&key("web"))
            .map(|s| (s.modify_index, s.endpoints.len())),
        Some((5, 1))
    );
    assert_eq!(
        catalog.apply(6, &cmd),
        Err(ApplyError::EndpointNotFound {
            key: key("web"),
            endpoint: id
        })
    );
    assert_eq!(catalog.version(), 5, "a refused command changes nothing");
}

/// Deleting leaves a tombstone at the deletion index; the delta since an earlier version
/// names the removed service.
#[test]
fn delete_leaves_tombstone_in_delta() {
    let mut catalog = Catalog::default();
    let _ = catalog.apply(1, &register("web", 1));
    let _ = catalog.apply(2, &register("api", 1));
    let _ = catalog.apply(
        3,
        &CatalogCommand::DeleteService {
            key: key("web"),
            source: Some(Source::Api),
        },
    );
    let delta = catalog.changes_since(1).map(|c| {
        (
            c.upserted
                .iter()
                .map(|s| s.key.name.clone())
                .collect::<Vec<_>>(),
            c.removed,
            c.version,
        )
    });
    assert_eq!(delta, Some((vec!["api".to_owned()], vec![key("web")], 3)));
    let none = catalog
        .changes_since(3)
        .map(|c| (c.upserted.len(), c.removed.len()));
    assert_eq!(none, Some((0, 0)));
}

/// Re-creating a deleted service removes its tombstone.
#[test]
fn recreate_clears_tombstone() {
    let mut catalog = Catalog::default();
    let _ = catalog.apply(1, &register("web", 1));
    let _ = catalog.apply(
        2,
        &CatalogCommand::DeleteService {
            key: key("web"),
            source: Some(Source::Api),
        },
    );
    let _ = catalog.apply(3, &register("web", 1));
    assert_eq!(catalog.tombstone_count(), 0);
    assert_eq!(catalog.changes_since(1).map(|c| c.removed.len()), Some(0));
}

/// Once old tombstones are dropped, a delta from before them is impossible and the caller is
/// told so (it must send a snapshot) instead of getting a delta that misses a deletion.
#[test]
fn dropped_tombstones_force_snapshot() {
    let mut catalog = Catalog::with_max_tombstones(10);
    for i in 0..20u8 {
        let name = format!("svc-{i}");
        let base = u64::from(i) * 2 + 1;
        let _ = catalog.apply(base, &register(&name, 1));
        let _ = catalog.apply(
            base + 1,
            &CatalogCommand::DeleteService {
                key: key(&name),
                source: Some(Source::Api),
            },
        );
    }
    assert!(catalog.tombstone_count() <= 11);
    assert!(catalog.changes_since(0).is_none());
    assert!(catalog.changes_since(catalog.version()).is_some());
}

/// PutService replaces the endpoint set and keeps the index of endpoints that did not change;
/// putting the same content again is a no-op.
#[test]
fn put_service_reconciles() {
    let mut catalog = Catalog::default();
    let spec = ServiceSpec {
        ports: vec![ServicePort {
            name: "http".into(),
            port: 80,
            protocol: Default::default(),
        }],
        ..Default::default()
    };
    let put = |eps: Vec<EndpointSpec>| CatalogCommand::PutService {
        key: key("web"),
        source: Source::File,
        spec: spec.clone(),
        endpoints: eps,
    };
    let _ = catalog.apply(1, &put(vec![endpoint(1), endpoint(2)]));
    assert_eq!(
        catalog.apply(2, &put(vec![endpoint(1), endpoint(2)])),
        Ok(Applied { changed: false })
    );
    let _ = catalog.apply(3, &put(vec![endpoint(1), endpoint(3)]));
    let service = catalog.get(&key("web"));
    let indexes: Vec<_> = service
        .map(|s| s.endpoints.values().map(|e| e.modify_index).collect())
        .unwrap_or_default();
    assert_eq!(indexes, vec![1, 3]);
    assert_eq!(
        service.map(|s| (s.create_index, s.modify_index)),
        Some((1, 3))
    );
}

/// A source cannot add endpoints to a service another source owns.
#[test]
fn register_into_file_owned_service_is_refused() {
    let mut catalog = Catalog::default();
    let put = CatalogCommand::PutService {
        key: key("web"),
        source: Source::File,
        spec: ServiceSpec::default(),
        endpoints: vec![],
    };
    let _ = catalog.apply(1, &put);
    assert!(matches!(
        catalog.apply(2, &register("web", 1)),
        Err(ApplyError::OwnedByOtherSource { .. })
    ));
}

/// The cluster id is set once and never changed.
#[test]
fn cluster_id_is_set_once() {
    let mut catalog = Catalog::default();
    let init = |id: &str| CatalogCommand::InitCluster {
        cluster_id: id.into(),
    };
    assert_eq!(catalog.apply(1, &init("a")), Ok(Applied { changed: true }));
    assert_eq!(catalog.apply(2, &init("a")), Ok(Applied { changed: false }));
    assert_eq!(
        catalog.apply(3, &init("b")),
        Err(ApplyError::ClusterIdAlreadySet("a".into()))
    );
    assert_eq!(catalog.cluster_id(), Some("a"));
}

/// The catalog survives a JSON round trip (snapshots are JSON), structured map keys included.
#[test]
fn catalog_round_trips_through_json() {
    let mut catalog = Catalog::default();
    let _ = catalog.apply(1, &register("web", 1));
    let _ = catalog.apply(2, &register("api", 2));
    let _ = catalog.apply(
        3,
        &CatalogCommand::DeleteService {
            key: key("api"),
            source: Some(Source::Api),
        },
    );
    let json = serde_json::to_vec(&catalog).map_err(|e| e.to_string());
    let back: Result<Catalog, String> =
        json.and_then(|j| serde_json::from_slice(&j).map_err(|e| e.to_string()));
    assert_eq!(back, Ok(catalog));
}

/// Namespace lookups see exactly that namespace's services and tombstones.
#[test]
fn namespace_ranges() {
    let mut catalog = Catalog::default();
    let other = ServiceKey {
        namespace: "prod".into(),
        name: "web".into(),
    };
    let _ = catalog.apply(1, &register("web", 1));
    let _ = catalog.apply(2, &register("api", 1));
    let _ = catalog.apply(
        3,
        &CatalogCommand::RegisterEndpoint {
            key: other.clone(),
            source: Source::Api,
            endpoint: endpoint(9),
            spec: None,
        },
    );
    let _ = catalog.apply(
        4,
        &CatalogCommand::DeleteService {
            key: key("api"),
            source: Some(Source::Api),
        },
    );
    let names: Vec<_> = catalog
        .in_namespace("default")
        .map(|s| s.key.name.clone())
        .collect();
    assert_eq!(names, vec!["web".to_owned()]);
    assert_eq!(catalog.in_namespace("prod").count(), 1);
    assert_eq!(catalog.in_namespace("pro").count(), 0);
    let dead: Vec<_> = catalog
        .tombstones_in("default")
        .map(|(k, i)| (k.name.clone(), i))
        .collect();
    assert_eq!(dead, vec![("api".to_owned(), 4)]);
    assert_eq!(catalog.tombstone(&key("api")), Some(4));
    assert!(catalog.delta_possible_since(0));
}

fn put_from_file(name: &str) -> CatalogCommand {
    CatalogCommand::PutService {
        key: key(name),
        source: Source::File,
        spec: ServiceSpec::default(),
        endpoints: vec![endpoint(9)],
    }
}

/// A source never changes what another owns: the catalog file cannot take over a service the
/// API registered, nor the API remove one of the file's. The refusal names the owner, and the
/// catalog (its version too) is as it was.
#[test]
fn a_source_cannot_change_a_service_another_owns() {
    let mut catalog = Catalog::default();
    let _ = catalog.apply(1, &register("web", 1));
    let _ = catalog.apply(2, &put_from_file("files"));
    let before = catalog.clone();

    let refused = [
        put_from_file("web"),
        CatalogCommand::DeleteService {
            key: key("files"),
            source: Some(Source::Api),
        },
        CatalogCommand::DeregisterEndpoint {
            key: key("files"),
            endpoint: endpoint(9).id,
            source: Some(Source::Api),
        },
        register("files", 2),
    ];
    for (offset, command) in (3..).zip(refused.iter()) {
        let answer = catalog.apply(offset, command);
        assert!(
            matches!(&answer, Err(ApplyError::OwnedByOtherSource { owner, .. }) if owner == "api" || owner == "file"),
            "{} was not refused: {answer:?}",
            command.kind()
        );
    }
    assert_eq!(catalog, before);
    let message = catalog
        .apply(9, &put_from_file("web"))
        .err()
        .map(|e| e.to_string());
    assert_eq!(
        message.as_deref(),
        Some("service default/web is owned by source api, not file")
    );
}

/// Entries written before removals named their source are applied as they were then.
#[test]
fn removals_without_a_source_are_not_checked() {
    let mut catalog = Catalog::default();
    let _ = catalog.apply(1, &put_from_file("files"));
    let legacy = CatalogCommand::DeleteService {
        key: key("files"),
        source: None,
    };
    assert_eq!(catalog.apply(2, &legacy), Ok(Applied { changed: true }));
}
