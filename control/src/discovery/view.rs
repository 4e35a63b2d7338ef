//! What a subscription sees of the catalog: the sidecar's form of a service, a full snapshot,
//! and a delta since a version.

use std::hash::{DefaultHasher, Hash, Hasher};

use netting_proto::discovery::v1 as pb;
use netting_raft::catalog::{Catalog, LogIndex, Service, ServiceKey};

use super::hello::Subscription;

/// A service as sidecars receive it: only what routing needs.
pub fn service_config(service: &Service) -> pb::ServiceConfig {
    pb::ServiceConfig {
        namespace: service.key.namespace.clone(),
        name: service.key.name.clone(),
        ports: service
            .spec
            .ports
            .iter()
            .map(|p| pb::Port {
                name: p.name.clone(),
                port: u32::from(p.port),
                protocol: p.protocol.as_str().to_owned(),
            })
            .collect(),
        endpoints: service
            .endpoints
            .values()
            .map(|e| pb::Endpoint {
                address: e.spec.id.address.to_string(),
                port: u32::from(e.spec.id.port),
                ready: e.spec.ready,
                zone: e.spec.zone.clone().unwrap_or_default(),
            })
            .collect(),
        policy: Some(pb::Policy {
            request_timeout_ms: service.spec.policy.request_timeout_ms.unwrap_or(0),
            max_retries: service.spec.policy.max_retries,
            load_balancer: service
                .spec
                .policy
                .load_balancer
                .map(|lb| lb.as_str().to_owned())
                .unwrap_or_default(),
        }),
    }
}

/// A hash of exactly what [`service_config`] sends, so that a change to anything else (labels,
/// owning pod, source) is recognised as no change for sidecars.
pub fn fingerprint(service: &Service) -> u64 {
    let mut hasher = DefaultHasher::new();
    for port in &service.spec.ports {
        (&port.name, port.port, port.protocol).hash(&mut hasher);
    }
    for endpoint in service.endpoints.values() {
        let spec = &endpoint.spec;
        (spec.id, spec.ready, &spec.zone).hash(&mut hasher);
    }
    let policy = &service.spec.policy;
    (
        policy.request_timeout_ms,
        policy.max_retries,
        policy.load_balancer.map(|lb| lb.as_str()),
    )
        .hash(&mut hasher);
    hasher.finish()
}

pub fn service_ref(key: &ServiceKey) -> pb::ServiceRef {
    pb::ServiceRef {
        namespace: key.namespace.clone(),
        name: key.name.clone(),
    }
}

/// Every subscribed service, in key order.
pub fn snapshot(catalog: &Catalog, subscription: &Subscription) -> Vec<pb::ServiceConfig> {
    let mut services: Vec<&Service> = subscription
        .namespaces
        .iter()
        .flat_map(|ns| catalog.in_namespace(ns))
        .collect();
    services.extend(
        subscription
            .services
            .iter()
            .filter(|key| !subscription.namespaces.contains(&key.namespace))
            .filter_map(|key| catalog.get(key)),
    );
    services.sort_by(|a, b| a.key.cmp(&b.key));
    services.into_iter().map(service_config).collect()
}

/// The subscribed services changed after `since` and the subscribed services deleted after it,
/// or `None` when the catalog no longer knows every deletion since then.
pub fn delta(
    catalog: &Catalog,
    subscription: &Subscription,
    since: LogIndex,
) -> Option<(Vec<pb::ServiceConfig>, Vec<pb::ServiceRef>)> {
    if !catalog.delta_possible_since(since) {
        return None;
    }
    let mut upserted = Vec::new();
    let mut removed = Vec::new();
    for ns in &subscription.namespaces {
        upserted.extend(
            catalog
                .in_namespace(ns)
                .filter(|s| s.modify_index > since)
                .map(service_config),
        );
        removed.extend(
            catalog
                .tombstones_in(ns)
                .filter(|(_, deleted)| *deleted > since)
                .map(|(key, _)| service_ref(key)),
        );
    }
    for key in &subscription.services {
        if subscription.namespaces.contains(&key.namespace) {
            continue;
        }
        match catalog.get(key) {
            Some(service) if service.modify_index > since => upserted.push(service_config(service)),
            Some(_) => {}
            None => {
                if catalog
                    .tombstone(key)
                    .is_some_and(|deleted| deleted > since)
                {
                    removed.push(service_ref(key));
                }
            }
        }
    }
    Some((upserted, removed))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]

    use std::collections::BTreeMap;

    use netting_raft::catalog::{CatalogCommand, EndpointId, EndpointSpec, ServiceSpec, Source};

    use super::*;

    fn key(ns: &str, name: &str) -> ServiceKey {
        ServiceKey::new(ns, name).unwrap()
    }

    fn register(ns: &str, name: &str, octet: u8) -> CatalogCommand {
        CatalogCommand::RegisterEndpoint {
            key: key(ns, name),
            source: Source::Api,
            endpoint: EndpointSpec {
                id: EndpointId {
                    address: format!("10.0.0.{octet}").parse().unwrap(),
                    port: 80,
                },
                ready: true,
                zone: None,
                pod: None,
            },
            spec: None,
        }
    }

    fn subscription(namespaces: &[&str], services: &[(&str, &str)]) -> Subscription {
        Subscription {
            namespaces: namespaces.iter().map(|s| (*s).to_owned()).collect(),
            services: services.iter().map(|(ns, n)| key(ns, n)).collect(),
        }
    }

    fn names(services: &[pb::ServiceConfig]) -> Vec<String> {
        services
            .iter()
            .map(|s| format!("{}/{}", s.namespace, s.name))
            .collect()
    }

    fn catalog() -> Catalog {
        let mut catalog = Catalog::default();
        catalog.apply(1, &register("default", "web", 1)).unwrap();
        catalog.apply(2, &register("default", "api", 1)).unwrap();
        catalog.apply(3, &register("prod", "db", 1)).unwrap();
        catalog.apply(4, &register("prod", "cache", 1)).unwrap();
        catalog
    }

    /// A snapshot holds the subscribed namespaces and named services, nothing else.
    #[test]
    fn snapshot_filters_by_subscription() {
        let sub = subscription(&["default"], &[("prod", "db")]);
        assert_eq!(
            names(&snapshot(&catalog(), &sub)),
            vec!["default/api", "default/web", "prod/db"]
        );
    }

    /// A delta holds what changed after the version, including deletions of subscribed
    /// services, and nothing of other namespaces.
    #[test]
    fn delta_since_version() {
        let mut catalog = catalog();
        catalog.apply(5, &register("default", "web", 2)).unwrap();
        catalog
            .apply(
                6,
                &CatalogCommand::DeleteService {
                    key: key("prod", "db"),
                    source: Some(Source::Api),
                },
            )
            .unwrap();
        catalog
            .apply(
                7,
                &CatalogCommand::DeleteService {
                    key: key("prod", "cache"),
                    source: Some(Source::Api),
                },
            )
            .unwrap();
        let sub = subscription(&["default"], &[("prod", "db")]);
        let (upserted, removed) = delta(&catalog, &sub, 4).unwrap();
        assert_eq!(names(&upserted), vec!["default/web"]);
        assert_eq!(removed, vec![service_ref(&key("prod", "db"))]);
        let (upserted, removed) = delta(&catalog, &sub, 7).unwrap();
        assert!(upserted.is_empty() && removed.is_empty());
    }

    /// Without the tombstones a delta needs, there is none: the caller sends a snapshot.
    #[test]
    fn no_delta_past_dropped_tombstones() {
        let mut catalog = Catalog::with_max_tombstones(1);
        for i in 0..5u64 {
            let name = format!("svc-{i}");
            catalog
                .apply(i * 2 + 1, &register("default", &name, 1))
                .unwrap();
            catalog
                .apply(
                    i * 2 + 2,
                    &CatalogCommand::DeleteService {
                        key: key("default", &name),
                        source: Some(Source::Api),
                    },
                )
                .unwrap();
        }
        assert!(delta(&catalog, &subscription(&["default"], &[]), 0).is_none());
    }

    /// Fingerprints change with what sidecars use, not with labels or owning pods.
    #[test]
    fn fingerprint_ignores_unused_fields() {
        let catalog = catalog();
        let web = catalog.get(&key("default", "web")).unwrap().clone();
        let mut relabelled = web.clone();
        relabelled.spec.labels = BTreeMap::from([("team".into(), "x".into())]);
        for e in relabelled.endpoints.values_mut() {
            e.spec.pod = Some("web-0".into());
        }
        assert_eq!(fingerprint(&web), fingerprint(&relabelled));
        let mut moved = web.clone();
        moved.spec = ServiceSpec {
            policy: netting_raft::catalog::ServicePolicy {
                max_retries: 3,
                ..Default::default()
            },
            ..Default::default()
        };
        assert_ne!(fingerprint(&web), fingerprint(&moved));
        let mut unready = web;
        for e in unready.endpoints.values_mut() {
            e.spec.ready = false;
        }
        assert_ne!(
            fingerprint(&catalog.get(&key("default", "web")).unwrap().clone()),
            fingerprint(&unready)
        );
    }
}
