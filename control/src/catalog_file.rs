//! The catalog file: a YAML (or JSON) list of services, parsed and validated into domain
//! types, and the diff between what it says and what the file source owns in the catalog.
//! Pure functions; the watcher actor does the IO.
//!
//! ```yaml
//! services:
//!   - namespace: default
//!     name: web
//!     ports: [{ name: http, port: 80, protocol: http }]
//!     labels: { app: web }
//!     policy: { request_timeout_ms: 1000, max_retries: 2, load_balancer: p2c_ewma }
//!     endpoints:
//!       - { address: 10.0.0.1, port: 8080, ready: true, zone: a, pod: web-0 }
//! ```

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::path::Path;

use netting_raft::catalog::validate::{self, InvalidField};
use netting_raft::catalog::{
    Catalog, CatalogCommand, EndpointId, EndpointSpec, ServiceKey, ServicePolicy, ServiceSpec,
    Source,
};
use serde::Deserialize;

/// A service as desired by the file, validated.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DesiredService {
    pub key: ServiceKey,
    pub spec: ServiceSpec,
    pub endpoints: Vec<EndpointSpec>,
}

/// Why the file cannot be used. Carries the position when the parser knows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CatalogFileError {
    pub path: String,
    pub line: Option<usize>,
    pub column: Option<usize>,
    pub message: String,
}

impl fmt::Display for CatalogFileError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match (self.line, self.column) {
            (Some(line), Some(column)) => {
                write!(f, "{}:{line}:{column}: {}", self.path, self.message)
            }
            _ => write!(f, "{}: {}", self.path, self.message),
        }
    }
}

impl std::error::Error for CatalogFileError {}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileDoc {
    #[serde(default)]
    services: Vec<FileService>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileService {
    #[serde(default = "default_namespace")]
    namespace: String,
    name: String,
    #[serde(default)]
    ports: Vec<FilePort>,
    #[serde(default)]
    labels: BTreeMap<String, String>,
    #[serde(default)]
    policy: FilePolicy,
    #[serde(default)]
    endpoints: Vec<FileEndpoint>,
}

fn default_namespace() -> String {
    "default".to_owned()
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct FilePort {
    #[serde(default)]
    name: String,
    port: u32,
    #[serde(default)]
    protocol: String,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct FilePolicy {
    request_timeout_ms: Option<u64>,
    #[serde(default)]
    max_retries: u32,
    load_balancer: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileEndpoint {
    address: String,
    port: u32,
    #[serde(default = "default_ready")]
    ready: bool,
    zone: Option<String>,
    pod: Option<String>,
}

fn default_ready() -> bool {
    true
}

/// Parses and validates a catalog file's content. Either the whole file is usable or nothing
/// of it is: a half-applied file would delete services that a typo made unreadable.
pub fn parse(path: &Path, content: &str) -> Result<Vec<DesiredService>, CatalogFileError> {
    let display = path.display().to_string();
    // YAML reads an empty document as "no services", which would delete every file-owned
    // service. An empty file is far more often a write caught halfway (an in-place overwrite
    // truncates first) than a wish, so it is refused; `services: []` says it on purpose.
    if is_blank(content) {
        return Err(CatalogFileError {
            path: display,
            line: None,
            column: None,
            message: "the file is empty; write `services: []` to remove every service it \
                      defines"
                .to_owned(),
        });
    }
    let doc: FileDoc = serde_yaml::from_str(content).map_err(|err| {
        let location = err.location();
        CatalogFileError {
            path: display.clone(),
            line: location.as_ref().map(|l| l.line()),
            column: location.as_ref().map(|l| l.column()),
            message: err.to_string(),
        }
    })?;
    let mut seen = BTreeSet::new();
    let mut services = Vec::with_capacity(doc.services.len());
    for (i, service) in doc.services.into_iter().enumerate() {
        let invalid = |e: InvalidField| CatalogFileError {
            path: display.clone(),
            line: None,
            column: None,
            message: format!(
                "services[{i}] ({}/{}): {e}",
                service_ns(&service),
                service.name
            ),
        };
        let desired = validate_service(&service).map_err(invalid)?;
        if !seen.insert(desired.key.clone()) {
            return Err(CatalogFileError {
                path: display,
                line: None,
                column: None,
                message: format!("services[{i}]: {} is listed twice", desired.key),
            });
        }
        services.push(desired);
    }
    Ok(services)
}

/// No YAML node at all: only whitespace, comments and document markers.
fn is_blank(content: &str) -> bool {
    content.lines().all(|line| {
        let line = line.trim();
        line.is_empty() || line.starts_with('#') || line == "---" || line == "..."
    })
}

fn service_ns(service: &FileService) -> &str {
    &service.namespace
}

fn validate_service(service: &FileService) -> Result<DesiredService, InvalidField> {
    let key = ServiceKey::new(&service.namespace, &service.name)?;
    validate::service_sizes(service.ports.len(), service.labels.len())?;
    let ports = service
        .ports
        .iter()
        .enumerate()
        .map(|(i, p)| validate::service_port(i, &p.name, p.port, &p.protocol))
        .collect::<Result<Vec<_>, InvalidField>>()?;
    for (k, v) in &service.labels {
        validate::label(k, v)?;
    }
    let load_balancer =
        validate::load_balancer(service.policy.load_balancer.as_deref().unwrap_or_default())?;
    let spec = ServiceSpec {
        ports,
        labels: service.labels.clone(),
        policy: ServicePolicy {
            request_timeout_ms: service.policy.request_timeout_ms,
            max_retries: service.policy.max_retries,
            load_balancer,
        },
    };
    let mut ids = BTreeSet::new();
    let mut endpoints = Vec::with_capacity(service.endpoints.len());
    for (i, e) in service.endpoints.iter().enumerate() {
        let address = e.address.parse().map_err(|_| {
            InvalidField::new(
                format!("endpoints[{i}].address"),
                format!("{:?} is not an IP address", e.address),
            )
        })?;
        let id = EndpointId {
            address,
            port: validate::port(&format!("endpoints[{i}].port"), e.port)?,
        };
        if !ids.insert(id) {
            return Err(InvalidField::new(
                format!("endpoints[{i}]"),
                format!("{id} is listed twice"),
            ));
        }
        if let Some(zone) = &e.zone {
            validate::free_text(&format!("endpoints[{i}].zone"), zone)?;
        }
        if let Some(pod) = &e.pod {
            validate::free_text(&format!("endpoints[{i}].pod"), pod)?;
        }
        endpoints.push(EndpointSpec {
            id,
            ready: e.ready,
            zone: e.zone.clone(),
            pod: e.pod.clone(),
        });
    }
    Ok(DesiredService {
        key,
        spec,
        endpoints,
    })
}

/// What reconciling the file proposes, and what it leaves alone.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Reconcile {
    /// A put for every service that is new or differs, a delete for every file-owned service
    /// the file no longer lists.
    pub commands: Vec<CatalogCommand>,
    /// Services the file lists that another source owns: never proposed (the state machine
    /// would refuse them anyway), reported so an operator can rename or remove them.
    pub conflicts: Vec<(ServiceKey, Source)>,
}

/// The commands that make the file-owned part of `catalog` match `desired`. Services owned by
/// other sources are never changed or deleted.
pub fn reconcile(catalog: &Catalog, desired: &[DesiredService]) -> Reconcile {
    let mut plan = Reconcile::default();
    let wanted: BTreeSet<&ServiceKey> = desired.iter().map(|d| &d.key).collect();
    for service in desired {
        let current = catalog.get(&service.key);
        if let Some(current) = current.filter(|c| c.source != Source::File) {
            plan.conflicts.push((service.key.clone(), current.source));
            continue;
        }
        let up_to_date = current.is_some_and(|current| {
            current.spec == service.spec
                && current.endpoints.len() == service.endpoints.len()
                && service
                    .endpoints
                    .iter()
                    .all(|e| current.endpoints.get(&e.id).is_some_and(|c| c.spec == *e))
        });
        if !up_to_date {
            plan.commands.push(CatalogCommand::PutService {
                key: service.key.clone(),
                source: Source::File,
                spec: service.spec.clone(),
                endpoints: service.endpoints.clone(),
            });
        }
    }
    for owned in catalog.owned_by(Source::File) {
        if !wanted.contains(&owned.key) {
            plan.commands.push(CatalogCommand::DeleteService {
                key: owned.key.clone(),
                source: Some(Source::File),
            });
        }
    }
    plan
}

#[cfg(test)]
mod tests;
