//! What a subscription sees of the catalog, in domain terms: the sidecar's form of a service,
//! a full snapshot, and a delta since a version. The wire form is built from these values in
//! `grpc::discovery_convert`, and nowhere else.

use std::net::IpAddr;

use netting_raft::catalog::{
    Catalog, Endpoint, LoadBalancer, LogIndex, Protocol, Service, ServiceKey, ServicePolicy,
    ServicePort,
};

use super::hello::Subscription;

/// A service as sidecars receive it: only what routing needs. The update a sidecar is sent
/// and the fingerprint that decides whether it needs one (`discovery::fingerprint`) both
/// derive from the constructors of these values, so they cannot disagree about what a
/// sidecar uses.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct ServiceView {
    pub key: ServiceKey,
    pub ports: Vec<PortView>,
    pub endpoints: Vec<EndpointView>,
    pub policy: PolicyView,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct PortView {
    pub name: String,
    pub port: u16,
    pub protocol: Protocol,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct EndpointView {
    pub address: IpAddr,
    pub port: u16,
    pub ready: bool,
    pub zone: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct PolicyView {
    pub request_timeout_ms: Option<u64>,
    pub max_retries: u32,
    pub load_balancer: Option<LoadBalancer>,
}

impl ServiceView {
    pub fn of(service: &Service) -> Self {
        Self {
            key: service.key.clone(),
            ports: service.spec.ports.iter().map(PortView::of).collect(),
            endpoints: service.endpoints.values().map(EndpointView::of).collect(),
            policy: PolicyView::of(&service.spec.policy),
        }
    }
}

impl PortView {
    pub fn of(port: &ServicePort) -> Self {
        Self {
            name: port.name.clone(),
            port: port.port,
            protocol: port.protocol,
        }
    }
}

impl EndpointView {
    pub fn of(endpoint: &Endpoint) -> Self {
        Self {
            address: endpoint.spec.id.address,
            port: endpoint.spec.id.port,
            ready: endpoint.spec.ready,
            zone: endpoint.spec.zone.clone(),
        }
    }
}

impl PolicyView {
    pub fn of(policy: &ServicePolicy) -> Self {
        Self {
            request_timeout_ms: policy.request_timeout_ms,
            max_retries: policy.max_retries,
            load_balancer: policy.load_balancer,
        }
    }
}

/// What one sidecar is sent to bring it from what it has to the live catalog.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Update {
    /// Every subscribed service: the sidecar replaces what it has.
    Snapshot(Vec<ServiceView>),
    /// What changed since `from_version`, the version the sidecar has.
    Delta {
        from_version: LogIndex,
        upserted: Vec<ServiceView>,
        removed: Vec<ServiceKey>,
    },
}

impl Update {
    /// The metric label of the update's kind.
    pub fn kind(&self) -> &'static str {
        match self {
            Update::Snapshot(_) => "snapshot",
            Update::Delta { .. } => "delta",
        }
    }
}

/// Every subscribed service, in key order.
pub fn snapshot(catalog: &Catalog, subscription: &Subscription) -> Vec<ServiceView> {
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
    services.into_iter().map(ServiceView::of).collect()
}

/// The subscribed services changed after `since` and the subscribed services deleted after it,
/// or `None` when the catalog no longer knows every deletion since then.
pub fn delta(
    catalog: &Catalog,
    subscription: &Subscription,
    since: LogIndex,
) -> Option<(Vec<ServiceView>, Vec<ServiceKey>)> {
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
                .map(ServiceView::of),
        );
        removed.extend(
            catalog
                .tombstones_in(ns)
                .filter(|(_, deleted)| *deleted > since)
                .map(|(key, _)| key.clone()),
        );
    }
    for key in &subscription.services {
        if subscription.namespaces.contains(&key.namespace) {
            continue;
        }
        match catalog.get(key) {
            Some(service) if service.modify_index > since => {
                upserted.push(ServiceView::of(service));
            }
            Some(_) => {}
            None => {
                if catalog
                    .tombstone(key)
                    .is_some_and(|deleted| deleted > since)
                {
                    removed.push(key.clone());
                }
            }
        }
    }
    Some((upserted, removed))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]

    use super::*;
    use crate::discovery::test_catalog::{delete, key, register, subscription};

    fn names(services: &[ServiceView]) -> Vec<String> {
        services.iter().map(|s| s.key.to_string()).collect()
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
        catalog.apply(6, &delete("prod", "db")).unwrap();
        catalog.apply(7, &delete("prod", "cache")).unwrap();
        let sub = subscription(&["default"], &[("prod", "db")]);
        let (upserted, removed) = delta(&catalog, &sub, 4).unwrap();
        assert_eq!(names(&upserted), vec!["default/web"]);
        assert_eq!(removed, vec![key("prod", "db")]);
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
            catalog.apply(i * 2 + 2, &delete("default", &name)).unwrap();
        }
        assert!(delta(&catalog, &subscription(&["default"], &[]), 0).is_none());
    }
}
