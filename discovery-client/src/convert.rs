//! The edge: protobuf ⇄ domain types. Nothing outside this module reads a generated struct.
//!
//! A response is converted whole before anything is applied, so a bad field anywhere rejects
//! the response as a unit; the error names the field with its path, which is what the NACK
//! carries back to the control plane and what an operator greps for.

use std::collections::BTreeMap;
use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use netting_proto::discovery::v1 as proto;
use thiserror::Error;

use crate::config::{Identity, Subscription};
use crate::types::{Endpoint, LoadBalancer, Policy, Port, Protocol, ServiceConfig, ServiceName};

/// A response field the client cannot use.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[error("invalid {field}: {reason}")]
pub(crate) struct InvalidResponse {
    pub(crate) field: String,
    pub(crate) reason: String,
}

impl InvalidResponse {
    fn new(field: impl Into<String>, reason: impl Into<String>) -> Self {
        Self {
            field: field.into(),
            reason: reason.into(),
        }
    }
}

/// A response in domain terms.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Update {
    pub(crate) version: u64,
    pub(crate) cluster_id: String,
    pub(crate) change: Change,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Change {
    /// The whole subscribed view; replaces everything.
    Snapshot(BTreeMap<ServiceName, ServiceConfig>),
    /// What changed since `from_version`.
    Delta {
        from_version: u64,
        upserted: BTreeMap<ServiceName, ServiceConfig>,
        removed: Vec<ServiceName>,
    },
}

impl TryFrom<proto::DiscoveryResponse> for Update {
    type Error = InvalidResponse;

    fn try_from(response: proto::DiscoveryResponse) -> Result<Self, Self::Error> {
        if response.cluster_id.is_empty() {
            // Without it the client could not tell a rebuilt cluster from its own.
            return Err(InvalidResponse::new("cluster_id", "must not be empty"));
        }
        let change = match response.update {
            None => {
                return Err(InvalidResponse::new(
                    "update",
                    "neither a snapshot nor a delta",
                ));
            }
            Some(proto::discovery_response::Update::Snapshot(snapshot)) => {
                Change::Snapshot(services("snapshot.services", snapshot.services)?)
            }
            Some(proto::discovery_response::Update::Delta(delta)) => {
                if delta.from_version > response.version {
                    return Err(InvalidResponse::new(
                        "delta.from_version",
                        format!(
                            "{} is after the response's version {}",
                            delta.from_version, response.version
                        ),
                    ));
                }
                let upserted = services("delta.upserted", delta.upserted)?;
                let mut removed = Vec::with_capacity(delta.removed.len());
                for (i, service) in delta.removed.into_iter().enumerate() {
                    let field = format!("delta.removed[{i}]");
                    let name = service_name(&field, service.namespace, service.name)?;
                    // Both at once has no defined order; refusing beats guessing.
                    if upserted.contains_key(&name) {
                        return Err(InvalidResponse::new(
                            field,
                            format!("{name} is also in delta.upserted"),
                        ));
                    }
                    removed.push(name);
                }
                Change::Delta {
                    from_version: delta.from_version,
                    upserted,
                    removed,
                }
            }
        };
        Ok(Update {
            version: response.version,
            cluster_id: response.cluster_id,
            change,
        })
    }
}

/// The services of a snapshot or a delta, keyed by name; `field` is the list's path.
fn services(
    field: &str,
    list: Vec<proto::ServiceConfig>,
) -> Result<BTreeMap<ServiceName, ServiceConfig>, InvalidResponse> {
    let mut map = BTreeMap::new();
    for (i, service) in list.into_iter().enumerate() {
        let field = format!("{field}[{i}]");
        let (name, config) = service_config(&field, service)?;
        if map.contains_key(&name) {
            return Err(InvalidResponse::new(
                field,
                format!("{name} appears more than once"),
            ));
        }
        map.insert(name, config);
    }
    Ok(map)
}

fn service_name(
    field: &str,
    namespace: String,
    name: String,
) -> Result<ServiceName, InvalidResponse> {
    if namespace.is_empty() {
        return Err(InvalidResponse::new(
            format!("{field}.namespace"),
            "must not be empty",
        ));
    }
    if name.is_empty() {
        return Err(InvalidResponse::new(
            format!("{field}.name"),
            "must not be empty",
        ));
    }
    Ok(ServiceName { namespace, name })
}

fn service_config(
    field: &str,
    service: proto::ServiceConfig,
) -> Result<(ServiceName, ServiceConfig), InvalidResponse> {
    let name = service_name(field, service.namespace, service.name)?;
    let ports = service
        .ports
        .into_iter()
        .enumerate()
        .map(|(i, p)| port(&format!("{field}.ports[{i}]"), p))
        .collect::<Result<_, _>>()?;
    let endpoints = service
        .endpoints
        .into_iter()
        .enumerate()
        .map(|(i, e)| endpoint(&format!("{field}.endpoints[{i}]"), e))
        .collect::<Result<_, _>>()?;
    let policy = match service.policy {
        None => Policy::default(),
        Some(p) => policy(&format!("{field}.policy"), p)?,
    };
    Ok((
        name,
        ServiceConfig {
            ports,
            endpoints,
            policy,
        },
    ))
}

fn port_number(field: String, value: u32) -> Result<u16, InvalidResponse> {
    match u16::try_from(value) {
        Ok(0) => Err(InvalidResponse::new(field, "port 0 is not allowed")),
        Ok(port) => Ok(port),
        Err(_) => Err(InvalidResponse::new(
            field,
            format!("{value} is above 65535"),
        )),
    }
}

fn port(field: &str, p: proto::Port) -> Result<Port, InvalidResponse> {
    let protocol = match p.protocol.as_str() {
        "" | "tcp" => Protocol::Tcp,
        "http" => Protocol::Http,
        "grpc" => Protocol::Grpc,
        other => {
            return Err(InvalidResponse::new(
                format!("{field}.protocol"),
                format!("{other:?} is not tcp, http or grpc"),
            ));
        }
    };
    Ok(Port {
        name: p.name,
        port: port_number(format!("{field}.port"), p.port)?,
        protocol,
    })
}

fn endpoint(field: &str, e: proto::Endpoint) -> Result<Endpoint, InvalidResponse> {
    // An IP, never a host name: the proxy must not resolve names on its data path.
    let ip: IpAddr = e.address.parse().map_err(|_| {
        InvalidResponse::new(
            format!("{field}.address"),
            format!("{:?} is not an IP address", e.address),
        )
    })?;
    let port = port_number(format!("{field}.port"), e.port)?;
    Ok(Endpoint {
        addr: SocketAddr::new(ip, port),
        ready: e.ready,
        zone: (!e.zone.is_empty()).then_some(e.zone),
    })
}

fn policy(field: &str, p: proto::Policy) -> Result<Policy, InvalidResponse> {
    let load_balancer = match p.load_balancer.as_str() {
        "" => None,
        "round_robin" => Some(LoadBalancer::RoundRobin),
        "least_request" => Some(LoadBalancer::LeastRequest),
        "p2c_ewma" => Some(LoadBalancer::P2cEwma),
        other => {
            return Err(InvalidResponse::new(
                format!("{field}.load_balancer"),
                format!("{other:?} is not round_robin, least_request or p2c_ewma"),
            ));
        }
    };
    Ok(Policy {
        request_timeout: (p.request_timeout_ms > 0)
            .then(|| Duration::from_millis(p.request_timeout_ms)),
        max_retries: p.max_retries,
        load_balancer,
    })
}

/// The first message of a stream: who the proxy is, what it wants, and where it is.
pub(crate) fn hello(
    identity: &Identity,
    subscription: &Subscription,
    last_version: u64,
    cluster_id: &str,
) -> proto::DiscoveryRequest {
    let hello = proto::Hello {
        identity: Some(proto::ProxyIdentity {
            pod: identity.pod.clone(),
            namespace: identity.namespace.clone(),
            service_account: identity.service_account.clone(),
            labels: identity
                .labels
                .iter()
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect(),
            proxy_version: identity.proxy_version.clone(),
        }),
        subscription: Some(proto::Subscription {
            namespaces: subscription.namespaces.clone(),
            services: subscription
                .services
                .iter()
                .map(|s| proto::ServiceRef {
                    namespace: s.namespace.clone(),
                    name: s.name.clone(),
                })
                .collect(),
        }),
        last_version,
        cluster_id: cluster_id.to_owned(),
    };
    proto::DiscoveryRequest {
        message: Some(proto::discovery_request::Message::Hello(hello)),
    }
}

pub(crate) fn ack(version: u64, nonce: String) -> proto::DiscoveryRequest {
    proto::DiscoveryRequest {
        message: Some(proto::discovery_request::Message::Ack(proto::Ack {
            version,
            nonce,
        })),
    }
}

pub(crate) fn nack(version: u64, nonce: String, error: String) -> proto::DiscoveryRequest {
    proto::DiscoveryRequest {
        message: Some(proto::discovery_request::Message::Nack(proto::Nack {
            version,
            nonce,
            error,
        })),
    }
}

#[cfg(test)]
mod tests;
