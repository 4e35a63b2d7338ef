//! The routing table: from the sidecar's config to "which service owns this destination, and
//! where may its traffic go".
//!
//! The catalog names a service's instances by address and port; an application in the mesh
//! dials one of them (what its DNS gave it). The proxy finds the service that owns that
//! address and port and balances the connection or request over all of the service's ready
//! endpoints on the same port. A destination no service owns passes through untouched.
//!
//! A table is built once per config version and never changed: connections take an `Arc` of
//! the current one, so a new config never disturbs a request in flight. Building it also
//! checks the config; a config it cannot use is NACKed (see [`validate`]) and the proxy keeps
//! routing with the last good one.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;

use netting_discovery_client::{Policy, Protocol, ProxyConfig, ServiceName};
use thiserror::Error;

/// Where traffic for one destination may go.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Route {
    pub service: ServiceName,
    pub port: u16,
    /// The application protocol of the port, as the catalog declares it.
    pub protocol: Protocol,
    /// The service's ready endpoints serving `port`, in catalog order.
    pub endpoints: Arc<[SocketAddr]>,
    pub policy: Policy,
}

/// An immutable routing table for one config version.
#[derive(Debug, Clone, Default)]
pub struct Routes {
    version: u64,
    by_destination: HashMap<SocketAddr, Route>,
}

/// Why a config cannot be routed with.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum RouteError {
    /// Two services claim the same endpoint: the proxy could not tell whose policy applies.
    #[error("endpoint {endpoint} belongs to both {first} and {second}")]
    SharedEndpoint {
        endpoint: SocketAddr,
        first: String,
        second: String,
    },
    #[error("service {service} has an endpoint with port 0 ({endpoint})")]
    PortZero {
        service: String,
        endpoint: SocketAddr,
    },
}

impl Routes {
    /// No services: everything passes through.
    pub fn empty() -> Routes {
        Routes::default()
    }

    /// Builds the table for `config`, or says why it cannot be used.
    pub fn from_config(config: &ProxyConfig) -> Result<Routes, RouteError> {
        let mut by_destination: HashMap<SocketAddr, Route> = HashMap::new();
        for (service, spec) in &config.services {
            let mut by_port: HashMap<u16, Vec<SocketAddr>> = HashMap::new();
            for endpoint in &spec.endpoints {
                if endpoint.addr.port() == 0 {
                    return Err(RouteError::PortZero {
                        service: service.to_string(),
                        endpoint: endpoint.addr,
                    });
                }
                let ready = by_port.entry(endpoint.addr.port()).or_default();
                if endpoint.ready {
                    ready.push(endpoint.addr);
                }
            }
            let ready: HashMap<u16, Arc<[SocketAddr]>> = by_port
                .into_iter()
                .map(|(port, endpoints)| (port, Arc::from(endpoints)))
                .collect();
            for endpoint in &spec.endpoints {
                let port = endpoint.addr.port();
                let protocol = spec
                    .ports
                    .iter()
                    .find(|p| p.port == port)
                    .map_or(Protocol::Tcp, |p| p.protocol);
                let route = Route {
                    service: service.clone(),
                    port,
                    protocol,
                    endpoints: ready.get(&port).cloned().unwrap_or_else(|| Arc::from([])),
                    policy: spec.policy.clone(),
                };
                if let Some(existing) = by_destination.get(&endpoint.addr)
                    && existing.service != *service
                {
                    return Err(RouteError::SharedEndpoint {
                        endpoint: endpoint.addr,
                        first: existing.service.to_string(),
                        second: service.to_string(),
                    });
                }
                by_destination.insert(endpoint.addr, route);
            }
        }
        Ok(Routes {
            version: config.version,
            by_destination,
        })
    }

    /// The route of the service owning `destination`, if any.
    pub fn lookup(&self, destination: SocketAddr) -> Option<&Route> {
        self.by_destination.get(&destination)
    }

    /// The config version this table was built from.
    pub fn version(&self) -> u64 {
        self.version
    }

    /// Destinations the table knows.
    pub fn len(&self) -> usize {
        self.by_destination.len()
    }

    pub fn is_empty(&self) -> bool {
        self.by_destination.is_empty()
    }
}

/// The discovery client's validator: a config the table cannot be built from is NACKed with
/// the reason, and the last good config stays in force.
pub fn validate(config: &ProxyConfig) -> Result<(), String> {
    Routes::from_config(config)
        .map(drop)
        .map_err(|e| e.to_string())
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use std::collections::BTreeMap;
    use std::time::Duration;

    use netting_discovery_client::{Endpoint, Port, ServiceConfig};

    use super::*;

    fn endpoint(addr: &str, ready: bool) -> Endpoint {
        Endpoint {
            addr: addr.parse().unwrap(),
            ready,
            zone: None,
        }
    }

    fn config(services: Vec<(&str, ServiceConfig)>) -> ProxyConfig {
        ProxyConfig {
            version: 7,
            cluster_id: "c".to_owned(),
            services: services
                .into_iter()
                .map(|(name, spec)| (ServiceName::new("shop", name), spec))
                .collect::<BTreeMap<_, _>>(),
        }
    }

    fn payments() -> ServiceConfig {
        ServiceConfig {
            ports: vec![Port {
                name: "http".to_owned(),
                port: 8080,
                protocol: Protocol::Http,
            }],
            endpoints: vec![
                endpoint("10.0.0.1:8080", true),
                endpoint("10.0.0.2:8080", false),
                endpoint("10.0.0.3:8080", true),
                endpoint("10.0.0.1:9000", true),
            ],
            policy: Policy {
                request_timeout: Some(Duration::from_secs(2)),
                max_retries: 2,
                load_balancer: None,
            },
        }
    }

    #[test]
    fn a_destination_routes_to_the_ready_endpoints_of_its_service_and_port() {
        let routes = Routes::from_config(&config(vec![("payments", payments())])).unwrap();
        assert_eq!(routes.version(), 7);
        // Even the endpoint that is not ready is recognised as the service's...
        let route = routes.lookup("10.0.0.2:8080".parse().unwrap()).unwrap();
        assert_eq!(route.service, ServiceName::new("shop", "payments"));
        assert_eq!(route.protocol, Protocol::Http);
        assert_eq!(route.policy.max_retries, 2);
        // ...but traffic goes only to ready ones on the same port.
        let endpoints: Vec<String> = route.endpoints.iter().map(|a| a.to_string()).collect();
        assert_eq!(endpoints, ["10.0.0.1:8080", "10.0.0.3:8080"]);
        // Another port of the same service has its own endpoints and, undeclared, is TCP.
        let other = routes.lookup("10.0.0.1:9000".parse().unwrap()).unwrap();
        assert_eq!(other.protocol, Protocol::Tcp);
        assert_eq!(other.endpoints.len(), 1);
        // Outside the catalog: nothing.
        assert!(routes.lookup("10.0.0.9:8080".parse().unwrap()).is_none());
    }

    #[test]
    fn an_endpoint_claimed_by_two_services_is_refused() {
        let mut other = payments();
        other.endpoints = vec![endpoint("10.0.0.3:8080", true)];
        let error =
            Routes::from_config(&config(vec![("payments", payments()), ("z", other)])).unwrap_err();
        assert!(
            matches!(error, RouteError::SharedEndpoint { endpoint, .. } if endpoint.to_string() == "10.0.0.3:8080"),
            "{error}"
        );
        assert!(validate(&config(vec![("payments", payments())])).is_ok());
    }

    #[test]
    fn an_empty_config_routes_nothing() {
        let routes = Routes::from_config(&ProxyConfig::default()).unwrap();
        assert!(routes.is_empty());
        assert!(
            Routes::empty()
                .lookup("10.0.0.1:80".parse().unwrap())
                .is_none()
        );
    }
}
