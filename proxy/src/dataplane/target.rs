//! Where a connection's or request's traffic goes.
//!
//! Outbound, a destination the catalog knows belongs to a service: traffic is balanced over
//! the service's ready endpoints with the service's policy. A destination it does not know
//! passes through to itself. Inbound, traffic goes to the application on the pod's loopback,
//! on the port it was sent to. Only catalog services are balanced, so the balancer's
//! statistics never grow with arbitrary destinations.

use std::borrow::Cow;
use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr};
use std::time::Duration;

use crate::balance::Balancer;
use crate::metrics::{self, Direction};
use crate::routes::{Route, Routes};

use super::Settings;

#[derive(Debug, Clone, Copy)]
pub(crate) enum Target<'r> {
    /// A catalog service.
    Service(&'r Route),
    /// One address, unbalanced: a passthrough destination or the local application.
    Direct {
        address: SocketAddr,
        label: &'static str,
    },
}

impl<'r> Target<'r> {
    pub(crate) fn resolve(
        direction: Direction,
        destination: SocketAddr,
        routes: &'r Routes,
    ) -> Target<'r> {
        match direction {
            Direction::Outbound => match routes.lookup(destination) {
                Some(route) => Target::Service(route),
                None => Target::Direct {
                    address: destination,
                    label: metrics::PASSTHROUGH,
                },
            },
            Direction::Inbound => Target::Direct {
                address: loopback(destination),
                label: metrics::LOCAL,
            },
        }
    }

    /// The `service` label of request metrics.
    pub(crate) fn label(&self) -> Cow<'static, str> {
        match self {
            Target::Service(route) => Cow::Owned(route.service.to_string()),
            Target::Direct { label, .. } => Cow::Borrowed(label),
        }
    }

    pub(crate) fn is_balanced(&self) -> bool {
        matches!(self, Target::Service(_))
    }

    /// The service's timeout, else the proxy's.
    pub(crate) fn request_timeout(&self, settings: &Settings) -> Duration {
        match self {
            Target::Service(route) => route
                .policy
                .request_timeout
                .unwrap_or(settings.request_timeout),
            Target::Direct { .. } => settings.request_timeout,
        }
    }

    /// Retries allowed by the service's policy. Passthrough and inbound traffic is not retried:
    /// inbound, the caller's own proxy already retries, and retrying at both ends multiplies.
    pub(crate) fn max_retries(&self) -> u32 {
        match self {
            Target::Service(route) => route.policy.max_retries,
            Target::Direct { .. } => 0,
        }
    }

    /// The endpoint for the next attempt: balanced over those not `tried` yet (all of them
    /// again once each was tried). `None` when the service has no ready endpoint.
    pub(crate) fn choose(&self, balancer: &Balancer, tried: &[SocketAddr]) -> Option<SocketAddr> {
        match self {
            Target::Direct { address, .. } => Some(*address),
            Target::Service(route) if tried.is_empty() => balancer.pick(&route.endpoints),
            Target::Service(route) => {
                let untried: Vec<SocketAddr> = route
                    .endpoints
                    .iter()
                    .copied()
                    .filter(|endpoint| !tried.contains(endpoint))
                    .collect();
                if untried.is_empty() {
                    balancer.pick(&route.endpoints)
                } else {
                    balancer.pick(&untried)
                }
            }
        }
    }
}

/// The application's address on the pod's loopback, in the family it was reached by.
pub(crate) fn loopback(destination: SocketAddr) -> SocketAddr {
    match destination {
        SocketAddr::V4(_) => SocketAddr::from((Ipv4Addr::LOCALHOST, destination.port())),
        SocketAddr::V6(_) => SocketAddr::from((Ipv6Addr::LOCALHOST, destination.port())),
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use std::collections::BTreeMap;

    use netting_discovery_client::{Endpoint, Policy, ProxyConfig, ServiceConfig, ServiceName};

    use super::*;

    fn routes() -> Routes {
        let endpoint = |addr: &str| Endpoint {
            addr: addr.parse().unwrap(),
            ready: true,
            zone: None,
        };
        let service = ServiceConfig {
            ports: vec![],
            endpoints: vec![endpoint("10.0.0.1:80"), endpoint("10.0.0.2:80")],
            policy: Policy {
                request_timeout: Some(Duration::from_millis(250)),
                max_retries: 2,
                load_balancer: None,
            },
        };
        let config = ProxyConfig {
            version: 1,
            cluster_id: "c".to_owned(),
            services: BTreeMap::from([(ServiceName::new("shop", "web"), service)]),
        };
        Routes::from_config(&config).unwrap()
    }

    fn settings() -> Settings {
        Settings {
            connect_timeout: Duration::from_secs(1),
            request_timeout: Duration::from_secs(30),
            max_header_bytes: 8192,
        }
    }

    #[test]
    fn outbound_catalog_destinations_are_balanced_with_their_policy() {
        let routes = routes();
        let target = Target::resolve(Direction::Outbound, "10.0.0.2:80".parse().unwrap(), &routes);
        assert!(target.is_balanced());
        assert_eq!(target.label(), "shop/web");
        assert_eq!(
            target.request_timeout(&settings()),
            Duration::from_millis(250)
        );
        assert_eq!(target.max_retries(), 2);
        let balancer = Balancer::seeded(1);
        let tried = ["10.0.0.1:80".parse().unwrap()];
        for _ in 0..20 {
            assert_eq!(
                target.choose(&balancer, &tried),
                Some("10.0.0.2:80".parse().unwrap())
            );
        }
    }

    #[test]
    fn unknown_destinations_pass_through_and_inbound_goes_to_loopback() {
        let routes = routes();
        let elsewhere: SocketAddr = "10.9.9.9:5432".parse().unwrap();
        let target = Target::resolve(Direction::Outbound, elsewhere, &routes);
        assert_eq!(target.label(), metrics::PASSTHROUGH);
        assert_eq!(target.max_retries(), 0);
        assert_eq!(target.request_timeout(&settings()), Duration::from_secs(30));
        assert_eq!(target.choose(&Balancer::seeded(1), &[]), Some(elsewhere));

        let inbound = Target::resolve(Direction::Inbound, "10.0.0.1:80".parse().unwrap(), &routes);
        assert_eq!(inbound.label(), metrics::LOCAL);
        assert_eq!(
            inbound.choose(&Balancer::seeded(1), &[]),
            Some("127.0.0.1:80".parse().unwrap())
        );
        assert_eq!(
            loopback("[fd00::1]:8080".parse().unwrap()),
            "[::1]:8080".parse().unwrap()
        );
    }
}
