//! Catalog values the discovery tests share.

#![allow(clippy::unwrap_used)]

use netting_raft::catalog::{CatalogCommand, EndpointId, EndpointSpec, ServiceKey, Source};

use super::hello::Subscription;

pub(crate) fn key(ns: &str, name: &str) -> ServiceKey {
    ServiceKey::new(ns, name).unwrap()
}

/// A ready endpoint `10.0.0.OCTET:80`.
pub(crate) fn endpoint(octet: u8) -> EndpointSpec {
    EndpointSpec {
        id: EndpointId {
            address: format!("10.0.0.{octet}").parse().unwrap(),
            port: 80,
        },
        ready: true,
        zone: None,
        pod: None,
    }
}

/// Registers [`endpoint`]`(octet)` in `ns/name` through the API.
pub(crate) fn register(ns: &str, name: &str, octet: u8) -> CatalogCommand {
    CatalogCommand::RegisterEndpoint {
        key: key(ns, name),
        source: Source::Api,
        endpoint: endpoint(octet),
        spec: None,
    }
}

pub(crate) fn delete(ns: &str, name: &str) -> CatalogCommand {
    CatalogCommand::DeleteService {
        key: key(ns, name),
        source: Some(Source::Api),
    }
}

pub(crate) fn subscription(namespaces: &[&str], services: &[(&str, &str)]) -> Subscription {
    Subscription {
        namespaces: namespaces.iter().map(|s| (*s).to_owned()).collect(),
        services: services.iter().map(|(ns, n)| key(ns, n)).collect(),
    }
}
