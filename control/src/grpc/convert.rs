//! Conversion between the catalog protocol and the catalog's domain types: the only place the
//! control plane touches generated catalog types. Every invalid field becomes an
//! [`InvalidField`] naming it as the API calls it.

use std::collections::BTreeMap;

use netting_proto::catalog::v1 as pb;
use netting_raft::catalog::validate::{self, InvalidField};
use netting_raft::catalog::{
    CatalogCommand, EndpointId, EndpointSpec, RequestId, Service, ServiceKey, ServicePolicy,
    ServiceSpec, Source,
};

pub fn register_command(req: &pb::RegisterRequest) -> Result<CatalogCommand, InvalidField> {
    let key = ServiceKey::new(&req.namespace, &req.service)?;
    let endpoint = req
        .endpoint
        .as_ref()
        .ok_or_else(|| InvalidField::new("endpoint", "is required"))?;
    let endpoint = endpoint_spec(endpoint)?;
    let spec = service_spec(&req.ports, &req.labels, req.policy.as_ref())?;
    Ok(CatalogCommand::RegisterEndpoint {
        key,
        source: Source::Api,
        endpoint,
        // Empty definition fields keep what the service has: a plain instance registration must
        // not wipe ports and policy another registration set.
        spec: (!spec.is_empty()).then_some(spec),
    })
}

pub fn deregister_command(req: &pb::DeregisterRequest) -> Result<CatalogCommand, InvalidField> {
    let key = ServiceKey::new(&req.namespace, &req.service)?;
    Ok(match &req.endpoint {
        Some(id) => CatalogCommand::DeregisterEndpoint {
            key,
            endpoint: EndpointId {
                address: address("endpoint.address", &id.address)?,
                port: validate::port("endpoint.port", id.port)?,
            },
            source: Some(Source::Api),
        },
        None => CatalogCommand::DeleteService {
            key,
            source: Some(Source::Api),
        },
    })
}

/// A write's request id, when its client sent one.
pub fn request_id(id: Option<&pb::RequestId>) -> Result<Option<RequestId>, InvalidField> {
    let Some(id) = id else {
        return Ok(None);
    };
    validate::request_client("request_id.client", &id.client)?;
    if id.sequence == 0 {
        return Err(InvalidField::new(
            "request_id.sequence",
            "must be greater than 0",
        ));
    }
    Ok(Some(RequestId {
        client: id.client.clone(),
        sequence: id.sequence,
    }))
}

pub fn request_id_to_proto(id: &RequestId) -> pb::RequestId {
    pb::RequestId {
        client: id.client.clone(),
        sequence: id.sequence,
    }
}

pub fn service_key(namespace: &str, name: &str) -> Result<ServiceKey, InvalidField> {
    ServiceKey::new(namespace, name)
}

fn address(field: &str, value: &str) -> Result<std::net::IpAddr, InvalidField> {
    if value.is_empty() {
        return Err(InvalidField::new(field, "is required"));
    }
    value
        .parse()
        .map_err(|_| InvalidField::new(field, format!("{value:?} is not an IPv4 or IPv6 address")))
}

fn endpoint_spec(e: &pb::Endpoint) -> Result<EndpointSpec, InvalidField> {
    let id = EndpointId {
        address: address("endpoint.address", &e.address)?,
        port: validate::port("endpoint.port", e.port)?,
    };
    validate::free_text("endpoint.zone", &e.zone)?;
    validate::free_text("endpoint.pod", &e.pod)?;
    Ok(EndpointSpec {
        id,
        ready: e.ready,
        zone: non_empty(&e.zone),
        pod: non_empty(&e.pod),
    })
}

fn non_empty(s: &str) -> Option<String> {
    (!s.is_empty()).then(|| s.to_owned())
}

fn service_spec(
    ports: &[pb::ServicePort],
    labels: &std::collections::HashMap<String, String>,
    policy: Option<&pb::ServicePolicy>,
) -> Result<ServiceSpec, InvalidField> {
    validate::service_sizes(ports.len(), labels.len())?;
    let ports = ports
        .iter()
        .enumerate()
        .map(|(i, p)| validate::service_port(i, &p.name, p.port, &p.protocol))
        .collect::<Result<Vec<_>, InvalidField>>()?;
    let mut sorted = BTreeMap::new();
    for (k, v) in labels {
        validate::label(k, v)?;
        sorted.insert(k.clone(), v.clone());
    }
    let policy = match policy {
        None => ServicePolicy::default(),
        Some(p) => ServicePolicy {
            request_timeout_ms: (p.request_timeout_ms > 0).then_some(p.request_timeout_ms),
            max_retries: p.max_retries,
            load_balancer: validate::load_balancer(&p.load_balancer)?,
        },
    };
    Ok(ServiceSpec {
        ports,
        labels: sorted,
        policy,
    })
}

pub fn service_to_proto(service: &Service) -> pb::Service {
    pb::Service {
        namespace: service.key.namespace.clone(),
        name: service.key.name.clone(),
        ports: service
            .spec
            .ports
            .iter()
            .map(|p| pb::ServicePort {
                name: p.name.clone(),
                port: u32::from(p.port),
                protocol: p.protocol.as_str().to_owned(),
            })
            .collect(),
        labels: service
            .spec
            .labels
            .iter()
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect(),
        endpoints: service
            .endpoints
            .values()
            .map(|e| pb::Endpoint {
                address: e.spec.id.address.to_string(),
                port: u32::from(e.spec.id.port),
                ready: e.spec.ready,
                zone: e.spec.zone.clone().unwrap_or_default(),
                pod: e.spec.pod.clone().unwrap_or_default(),
                modify_index: e.modify_index,
            })
            .collect(),
        policy: Some(pb::ServicePolicy {
            request_timeout_ms: service.spec.policy.request_timeout_ms.unwrap_or(0),
            max_retries: service.spec.policy.max_retries,
            load_balancer: service
                .spec
                .policy
                .load_balancer
                .map(|lb| lb.as_str().to_owned())
                .unwrap_or_default(),
        }),
        source: service.source.as_str().to_owned(),
        create_index: service.create_index,
        modify_index: service.modify_index,
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]

    use super::*;

    fn register(address: &str, port: u32) -> pb::RegisterRequest {
        pb::RegisterRequest {
            namespace: "default".into(),
            service: "web".into(),
            endpoint: Some(pb::Endpoint {
                address: address.into(),
                port,
                ready: true,
                ..Default::default()
            }),
            ..Default::default()
        }
    }

    fn field_of(result: Result<CatalogCommand, InvalidField>) -> String {
        result.expect_err("must be refused").field
    }

    /// Each bad input is refused naming the field it came from.
    #[test]
    fn bad_register_names_the_field() {
        assert_eq!(
            field_of(register_command(&register("nope", 80))),
            "endpoint.address"
        );
        assert_eq!(
            field_of(register_command(&register("", 80))),
            "endpoint.address"
        );
        assert_eq!(
            field_of(register_command(&register("10.0.0.1", 0))),
            "endpoint.port"
        );
        assert_eq!(
            field_of(register_command(&register("10.0.0.1", 65_536))),
            "endpoint.port"
        );
        let mut no_name = register("10.0.0.1", 80);
        no_name.service.clear();
        assert_eq!(field_of(register_command(&no_name)), "service");
        let mut bad_ns = register("10.0.0.1", 80);
        bad_ns.namespace = "Prod!".into();
        assert_eq!(field_of(register_command(&bad_ns)), "namespace");
        let mut no_endpoint = register("10.0.0.1", 80);
        no_endpoint.endpoint = None;
        assert_eq!(field_of(register_command(&no_endpoint)), "endpoint");
        let mut bad_lb = register("10.0.0.1", 80);
        bad_lb.policy = Some(pb::ServicePolicy {
            load_balancer: "random".into(),
            ..Default::default()
        });
        assert_eq!(field_of(register_command(&bad_lb)), "policy.load_balancer");
    }

    /// A plain registration carries no definition, so it keeps the service's current one.
    #[test]
    fn plain_register_keeps_definition() {
        let command = register_command(&register("fd00::1", 8080)).unwrap();
        assert!(matches!(
            command,
            CatalogCommand::RegisterEndpoint { spec: None, .. }
        ));
    }

    /// Deregister without an endpoint removes the whole service.
    #[test]
    fn deregister_whole_service() {
        let req = pb::DeregisterRequest {
            namespace: "default".into(),
            service: "web".into(),
            endpoint: None,
            request_id: None,
        };
        assert!(matches!(
            deregister_command(&req).unwrap(),
            CatalogCommand::DeleteService {
                source: Some(Source::Api),
                ..
            }
        ));
    }

    /// A request id is optional; a bad one is refused naming its field.
    #[test]
    fn request_ids_are_checked() {
        let id = |client: &str, sequence| {
            request_id(Some(&pb::RequestId {
                client: client.into(),
                sequence,
            }))
        };
        assert_eq!(request_id(None), Ok(None));
        assert_eq!(
            id("nettingctl-4f2a", 3).map(|id| id.map(|id| id.to_string())),
            Ok(Some("nettingctl-4f2a#3".to_owned()))
        );
        let field = |result: Result<Option<RequestId>, InvalidField>| result.unwrap_err().field;
        assert_eq!(field(id("", 1)), "request_id.client");
        assert_eq!(field(id("two words", 1)), "request_id.client");
        assert_eq!(field(id(&"x".repeat(129), 1)), "request_id.client");
        assert_eq!(field(id("c", 0)), "request_id.sequence");
    }
}
