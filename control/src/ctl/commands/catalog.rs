//! `nettingctl catalog register|deregister|get|list`.

use std::collections::{BTreeMap, BTreeSet};
use std::io::Write;
use std::net::IpAddr;

use netting_proto::catalog::v1::{
    Consistency, DeregisterRequest, Endpoint, EndpointId, GetServiceRequest, ListServicesRequest,
    RegisterRequest, Service, ServicePolicy, ServicePort, WriteResponse,
};
use serde::Serialize;

use crate::ctl::args::{CatalogCommand, DeregisterArgs, RegisterArgs, ServiceRef};
use crate::ctl::client::Client;
use crate::ctl::error::CtlError;
use crate::ctl::output::{OutputFormat, Render, Table, clean, emit, text_cell};

/// A service port as shown.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct PortView {
    pub name: String,
    pub port: u32,
    /// `tcp`, `http` or `grpc`.
    pub protocol: String,
}

impl PortView {
    /// The `--service-port` spelling, `name:port:protocol`, so it can be pasted back.
    pub fn spec(&self) -> String {
        format!("{}:{}:{}", self.name, self.port, self.protocol)
    }
}

/// A service's traffic policy as shown; unset fields are null.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct PolicyView {
    pub request_timeout_ms: Option<u64>,
    pub max_retries: u32,
    pub load_balancer: Option<String>,
}

impl PolicyView {
    /// One line: `timeout=… max-retries=… load-balancer=…`.
    pub fn summary(&self) -> String {
        let timeout = self
            .request_timeout_ms
            .map_or_else(|| "none".to_owned(), |ms| format!("{ms}ms"));
        let balancer = self.load_balancer.as_deref().unwrap_or("default");
        format!(
            "timeout={timeout} max-retries={} load-balancer={balancer}",
            self.max_retries
        )
    }
}

/// An endpoint as shown; empty zone and pod are null.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct EndpointView {
    pub address: String,
    pub port: u32,
    pub ready: bool,
    pub zone: Option<String>,
    pub pod: Option<String>,
    pub modify_index: u64,
}

/// A service as shown, endpoints included.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ServiceView {
    pub namespace: String,
    pub name: String,
    pub ports: Vec<PortView>,
    pub labels: BTreeMap<String, String>,
    pub policy: Option<PolicyView>,
    /// `api`, `file` or `kubernetes`.
    pub source: String,
    pub create_index: u64,
    pub modify_index: u64,
    pub endpoints: Vec<EndpointView>,
}

/// The text, or `None` when it is empty (proto3's "unset").
pub fn non_empty(text: &str) -> Option<String> {
    (!text.is_empty()).then(|| text.to_owned())
}

impl ServiceView {
    /// Converts a wire service; endpoints are sorted by address then port for stable output.
    pub fn from_proto(service: &Service) -> Self {
        let mut endpoints: Vec<EndpointView> = service
            .endpoints
            .iter()
            .map(|e: &Endpoint| EndpointView {
                address: e.address.clone(),
                port: e.port,
                ready: e.ready,
                zone: non_empty(&e.zone),
                pod: non_empty(&e.pod),
                modify_index: e.modify_index,
            })
            .collect();
        endpoints.sort_by(|a, b| {
            let key =
                |e: &EndpointView| (e.address.parse::<IpAddr>().ok(), e.address.clone(), e.port);
            key(a).cmp(&key(b))
        });
        Self {
            namespace: service.namespace.clone(),
            name: service.name.clone(),
            ports: service
                .ports
                .iter()
                .map(|p| PortView {
                    name: p.name.clone(),
                    port: p.port,
                    protocol: non_empty(&p.protocol).unwrap_or_else(|| "tcp".to_owned()),
                })
                .collect(),
            labels: service
                .labels
                .iter()
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect(),
            policy: service.policy.as_ref().map(|p| PolicyView {
                request_timeout_ms: (p.request_timeout_ms != 0).then_some(p.request_timeout_ms),
                max_retries: p.max_retries,
                load_balancer: non_empty(&p.load_balancer),
            }),
            source: service.source.clone(),
            create_index: service.create_index,
            modify_index: service.modify_index,
            endpoints,
        }
    }

    fn ready_count(&self) -> usize {
        self.endpoints.iter().filter(|e| e.ready).count()
    }
}

fn services_table(services: &[ServiceView]) -> String {
    let mut table = Table::new(&[
        "NAMESPACE",
        "NAME",
        "PORTS",
        "READY/TOTAL",
        "SOURCE",
        "MODIFY-INDEX",
    ]);
    for service in services {
        let ports: Vec<String> = service.ports.iter().map(PortView::spec).collect();
        table.row(vec![
            service.namespace.clone(),
            service.name.clone(),
            text_cell(Some(&ports.join(","))),
            format!("{}/{}", service.ready_count(), service.endpoints.len()),
            text_cell(Some(&service.source)),
            service.modify_index.to_string(),
        ]);
    }
    table.render()
}

/// `catalog get`: one service and the version it was read at.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ServiceDetail {
    pub version: u64,
    pub service: ServiceView,
}

impl Render for ServiceDetail {
    fn to_table(&self) -> String {
        let service = &self.service;
        let labels: Vec<String> = service
            .labels
            .iter()
            .map(|(k, v)| format!("{k}={v}"))
            .collect();
        let mut text = services_table(std::slice::from_ref(service));
        text.push('\n');
        let policy = service
            .policy
            .as_ref()
            .map_or_else(|| "-".to_owned(), PolicyView::summary);
        for (key, value) in [
            ("labels:", text_cell(Some(&labels.join(",")))),
            ("policy:", policy),
            ("created at:", service.create_index.to_string()),
            ("read at:", format!("version {}", self.version)),
        ] {
            text.push_str(&format!("{key:<12}{}\n", clean(&value)));
        }
        text.push('\n');
        let mut endpoints =
            Table::new(&["ADDRESS", "PORT", "READY", "ZONE", "POD", "MODIFY-INDEX"]);
        for e in &service.endpoints {
            endpoints.row(vec![
                e.address.clone(),
                e.port.to_string(),
                e.ready.to_string(),
                text_cell(e.zone.as_deref()),
                text_cell(e.pod.as_deref()),
                e.modify_index.to_string(),
            ]);
        }
        text.push_str(&endpoints.render());
        text
    }
}

/// `catalog list`: services and the version they were read at.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ServiceList {
    pub version: u64,
    pub services: Vec<ServiceView>,
}

impl Render for ServiceList {
    fn to_table(&self) -> String {
        services_table(&self.services)
    }
}

/// The endpoint a write was about.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct EndpointRef {
    pub address: String,
    pub port: u32,
}

/// The outcome of a register or deregister.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct WriteResult {
    #[serde(skip)]
    pub verb: &'static str,
    pub namespace: String,
    pub service: String,
    /// Absent when the whole service was deregistered.
    pub endpoint: Option<EndpointRef>,
    /// The catalog version (Raft log index) the write was applied at.
    pub version: u64,
    /// The replica that committed the write.
    pub leader_id: u64,
    /// True when an earlier try of this write (one whose replica failed mid-call) had been
    /// applied: `version` is that application's, and nothing was applied again.
    pub duplicate: bool,
}

impl Render for WriteResult {
    fn to_table(&self) -> String {
        let what = match &self.endpoint {
            Some(e) => match e.address.parse::<IpAddr>() {
                Ok(IpAddr::V6(_)) => format!(
                    "[{}]:{} of {}/{}",
                    e.address, e.port, self.namespace, self.service
                ),
                _ => format!(
                    "{}:{} of {}/{}",
                    e.address, e.port, self.namespace, self.service
                ),
            },
            None => format!("service {}/{}", self.namespace, self.service),
        };
        let earlier = if self.duplicate {
            "; applied by an earlier try of this write"
        } else {
            ""
        };
        format!(
            "{} {what} at version {} (leader {}{earlier})\n",
            self.verb, self.version, self.leader_id
        )
    }
}

/// Builds the Register request; refuses labels or service ports given twice, which the wire
/// (a map, a list) would otherwise resolve silently.
pub fn register_request(args: &RegisterArgs) -> Result<RegisterRequest, CtlError> {
    let mut labels = std::collections::HashMap::new();
    for label in &args.labels {
        if labels
            .insert(label.key.clone(), label.value.clone())
            .is_some()
        {
            return Err(CtlError::Usage(format!(
                "label {:?} is given twice",
                label.key
            )));
        }
    }
    let mut names = BTreeSet::new();
    let mut numbers = BTreeSet::new();
    for port in &args.service_ports {
        if !names.insert(port.name.as_str()) {
            return Err(CtlError::Usage(format!(
                "service port name {:?} is given twice",
                port.name
            )));
        }
        if !numbers.insert(port.port) {
            return Err(CtlError::Usage(format!(
                "service port {} is given twice",
                port.port
            )));
        }
    }
    // The policy is one value on the wire: sending it replaces the whole policy, so it is sent
    // only when the operator set part of it.
    let policy =
        (args.timeout_ms.is_some() || args.max_retries.is_some() || args.load_balancer.is_some())
            .then(|| ServicePolicy {
                request_timeout_ms: args.timeout_ms.unwrap_or(0),
                max_retries: args.max_retries.unwrap_or(0),
                load_balancer: args
                    .load_balancer
                    .map(|lb| lb.as_str().to_owned())
                    .unwrap_or_default(),
            });
    Ok(RegisterRequest {
        namespace: args.service.namespace.clone(),
        service: args.service.name.clone(),
        endpoint: Some(Endpoint {
            address: args.address.to_string(),
            port: u32::from(args.port),
            ready: args.ready,
            zone: args.zone.clone().unwrap_or_default(),
            pod: args.pod.clone().unwrap_or_default(),
            modify_index: 0,
        }),
        ports: args
            .service_ports
            .iter()
            .map(|p| ServicePort {
                name: p.name.clone(),
                port: u32::from(p.port),
                protocol: p.protocol.as_str().to_owned(),
            })
            .collect(),
        labels,
        policy,
        request_id: None,
    })
}

/// Builds the Deregister request: an endpoint, or none (the whole service) only with
/// `--whole-service`, which clap keeps exclusive with `--address`/`--port`.
pub fn deregister_request(args: &DeregisterArgs) -> Result<DeregisterRequest, CtlError> {
    let endpoint = match (args.address, args.port, args.whole_service) {
        (Some(address), Some(port), false) => Some(EndpointId {
            address: address.to_string(),
            port: u32::from(port),
        }),
        (None, None, true) => None,
        _ => {
            return Err(CtlError::Usage(
                "give either --address and --port, or --whole-service".to_owned(),
            ));
        }
    };
    Ok(DeregisterRequest {
        namespace: args.service.namespace.clone(),
        service: args.service.name.clone(),
        endpoint,
        request_id: None,
    })
}

fn consistency(linearizable: bool) -> i32 {
    if linearizable {
        Consistency::Linearizable as i32
    } else {
        Consistency::Local as i32
    }
}

fn write_result(
    verb: &'static str,
    service: &ServiceRef,
    endpoint: Option<EndpointRef>,
    answer: &WriteResponse,
) -> WriteResult {
    WriteResult {
        verb,
        namespace: service.namespace.clone(),
        service: service.name.clone(),
        endpoint,
        version: answer.version,
        leader_id: answer.leader_id,
        duplicate: answer.duplicate,
    }
}

pub async fn run<W: Write>(
    client: &Client,
    command: CatalogCommand,
    format: OutputFormat,
    out: &mut W,
) -> Result<(), CtlError> {
    match command {
        CatalogCommand::Register(args) => {
            let mut request = register_request(&args)?;
            // One id for every try, so a retry on another replica is never applied twice.
            request.request_id = Some(client.request_id());
            let answer = client.register(request).await?;
            let endpoint = EndpointRef {
                address: args.address.to_string(),
                port: u32::from(args.port),
            };
            let result = write_result("registered", &args.service, Some(endpoint), &answer.value);
            emit(out, format, &result)
        }
        CatalogCommand::Deregister(args) => {
            let mut request = deregister_request(&args)?;
            request.request_id = Some(client.request_id());
            let endpoint = request.endpoint.as_ref().map(|e| EndpointRef {
                address: e.address.clone(),
                port: e.port,
            });
            let answer = client.deregister(request).await?;
            let result = write_result("deregistered", &args.service, endpoint, &answer.value);
            emit(out, format, &result)
        }
        CatalogCommand::Get(args) => {
            let request = GetServiceRequest {
                namespace: args.service.namespace.clone(),
                service: args.service.name.clone(),
                consistency: consistency(args.linearizable),
            };
            let answer = client.get_service(request).await?;
            let Some(service) = answer.value.service.as_ref() else {
                return Err(CtlError::Unexpected(format!(
                    "service {} not found at version {} (replica {})",
                    args.service, answer.value.version, answer.target
                )));
            };
            let detail = ServiceDetail {
                version: answer.value.version,
                service: ServiceView::from_proto(service),
            };
            emit(out, format, &detail)
        }
        CatalogCommand::List(args) => {
            let request = ListServicesRequest {
                namespace: args.namespace.unwrap_or_default(),
                consistency: consistency(args.linearizable),
            };
            let answer = client.list_services(request).await?;
            let mut services: Vec<ServiceView> = answer
                .value
                .services
                .iter()
                .map(ServiceView::from_proto)
                .collect();
            services.sort_by(|a, b| (&a.namespace, &a.name).cmp(&(&b.namespace, &b.name)));
            let list = ServiceList {
                version: answer.value.version,
                services,
            };
            emit(out, format, &list)
        }
    }
}

#[cfg(test)]
mod tests;
