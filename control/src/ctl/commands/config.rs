//! `nettingctl config NAMESPACE/POD`: one sidecar's view of the catalog (its subscribed
//! services at the replica's version, and the version it acknowledged), read from the replica
//! it is connected to.
//!
//! A sidecar holds one stream to one replica, and only that replica knows its session, so the
//! replicas are asked in order until one has it: NOT_FOUND (and any failure) means "ask the
//! next", never "it does not exist".

use std::io::Write;
use std::net::IpAddr;

use netting_proto::discovery::v1::{ServiceConfig, SidecarConfigRequest, SidecarConfigResponse};
use serde::Serialize;

use super::catalog::{PolicyView, PortView, non_empty};
use super::sessions::SessionView;
use super::status::{KnownReplica, known_replicas};
use crate::ctl::args::{ConfigArgs, PodRef};
use crate::ctl::client::{CallError, Client};
use crate::ctl::error::CtlError;
use crate::ctl::output::{
    OutputFormat, Render, Table, clean, duration_cell, emit, opt_cell, text_cell,
};

/// An endpoint as the sidecar sees it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct SidecarEndpointView {
    pub address: String,
    pub port: u32,
    pub ready: bool,
    pub zone: Option<String>,
}

/// A service as the sidecar sees it: only what routing needs.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct SidecarServiceView {
    pub namespace: String,
    pub name: String,
    pub ports: Vec<PortView>,
    /// Sorted by address, then port.
    pub endpoints: Vec<SidecarEndpointView>,
    pub policy: Option<PolicyView>,
}

impl SidecarServiceView {
    pub fn from_proto(service: &ServiceConfig) -> Self {
        let mut endpoints: Vec<SidecarEndpointView> = service
            .endpoints
            .iter()
            .map(|e| SidecarEndpointView {
                address: e.address.clone(),
                port: e.port,
                ready: e.ready,
                zone: non_empty(&e.zone),
            })
            .collect();
        // Numeric order for IPs (10.0.0.9 before 10.0.0.10); anything else after, as text.
        endpoints
            .sort_by_cached_key(|e| (e.address.parse::<IpAddr>().ok(), e.address.clone(), e.port));
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
            endpoints,
            policy: service.policy.as_ref().map(|p| PolicyView {
                request_timeout_ms: (p.request_timeout_ms != 0).then_some(p.request_timeout_ms),
                max_retries: p.max_retries,
                load_balancer: non_empty(&p.load_balancer),
            }),
        }
    }

    fn ready_count(&self) -> usize {
        self.endpoints.iter().filter(|e| e.ready).count()
    }
}

/// What `config` prints.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct SidecarConfigView {
    /// `namespace/pod`.
    pub sidecar: String,
    /// Node id of the replica the sidecar is connected to, when the cluster reported it.
    pub node_id: Option<u64>,
    /// Address of that replica.
    pub replica: String,
    pub session: SessionView,
    /// That replica's catalog version: `services` is the sidecar's view at it.
    pub catalog_version: u64,
    /// Sorted by namespace, then name.
    pub services: Vec<SidecarServiceView>,
}

impl SidecarConfigView {
    /// The view of one replica's answer; refused when the answer lacks the session.
    pub fn new(
        pod: &PodRef,
        replica: &KnownReplica,
        answer: SidecarConfigResponse,
    ) -> Result<Self, CtlError> {
        let Some(session) = answer.session.as_ref() else {
            return Err(CtlError::Unexpected(format!(
                "replica {} answered without the session of {pod}",
                replica.address
            )));
        };
        let mut services: Vec<SidecarServiceView> = answer
            .services
            .iter()
            .map(SidecarServiceView::from_proto)
            .collect();
        services.sort_by(|a, b| (&a.namespace, &a.name).cmp(&(&b.namespace, &b.name)));
        Ok(Self {
            sidecar: pod.to_string(),
            node_id: replica.node_id,
            replica: replica.address.clone(),
            session: SessionView::from_proto(session),
            catalog_version: answer.version,
            services,
        })
    }

    /// Where the sidecar stands against the replica's catalog version.
    fn progress(&self) -> &'static str {
        let session = &self.session;
        if !session.is_behind(self.catalog_version) {
            "acknowledged"
        } else if session
            .sent_version
            .is_some_and(|sent| sent >= self.catalog_version)
        {
            "sent, not yet acknowledged"
        } else {
            "not yet sent: an update is on its way"
        }
    }
}

impl Render for SidecarConfigView {
    fn to_table(&self) -> String {
        let replica = match self.node_id {
            Some(id) => format!("replica {id} ({})", self.replica),
            None => format!("replica {}", self.replica),
        };
        let session = &self.session;
        let mut text = clean(&format!(
            "sidecar {} is connected to {replica}",
            self.sidecar
        ));
        text.push('\n');
        for (key, value) in [
            ("proxy version:", text_cell(Some(&session.proxy_version))),
            ("acknowledged:", session.acked_version.to_string()),
            ("in flight:", opt_cell(session.sent_version)),
            (
                "catalog:",
                format!("version {} ({})", self.catalog_version, self.progress()),
            ),
            ("connected for:", duration_cell(session.connected_for_ms)),
            ("NACKs:", session.nacks.to_string()),
        ] {
            text.push_str(&format!("{key:<16}{}\n", clean(&value)));
        }
        text.push('\n');
        if self.services.is_empty() {
            text.push_str("no services in its subscription\n");
            return text;
        }
        let mut table = Table::new(&["NAMESPACE", "NAME", "PORTS", "READY/TOTAL", "POLICY"]);
        for service in &self.services {
            let ports: Vec<String> = service.ports.iter().map(PortView::spec).collect();
            table.row(vec![
                service.namespace.clone(),
                service.name.clone(),
                text_cell(Some(&ports.join(","))),
                format!("{}/{}", service.ready_count(), service.endpoints.len()),
                service
                    .policy
                    .as_ref()
                    .map_or_else(|| "-".to_owned(), PolicyView::summary),
            ]);
        }
        text.push_str(&table.render());
        text
    }
}

/// Asks the replicas in order and prints the first one's view of the sidecar; when none has
/// it, fails with every replica's answer.
pub async fn run<W: Write>(
    client: &Client,
    args: &ConfigArgs,
    format: OutputFormat,
    out: &mut W,
) -> Result<(), CtlError> {
    let request = SidecarConfigRequest {
        namespace: args.pod.namespace.clone(),
        pod: args.pod.pod.clone(),
    };
    let mut asked = Vec::new();
    for replica in known_replicas(client).await {
        let result = match &replica.target {
            Ok(target) => client.sidecar_config_of(target, request.clone()).await,
            Err(reason) => Err(CallError::InvalidAddress(reason.clone())),
        };
        match result {
            Ok(answer) => {
                let view = SidecarConfigView::new(&args.pod, &replica, answer)?;
                return emit(out, format, &view);
            }
            // Not found here, or not answering: the sidecar may be connected to the next one.
            Err(error) => asked.push((replica.address, error)),
        }
    }
    Err(CtlError::SidecarNotConnected {
        sidecar: args.pod.to_string(),
        asked,
    })
}

#[cfg(test)]
mod tests;
