//! The command line, as clap derive types, and the parsers that refuse bad input before
//! anything is sent.
//!
//! Field rules (DNS-1123 names, label syntax, free text) are the catalog's own
//! (`netting_raft::catalog::validate`), so the client refuses exactly what a replica would,
//! only sooner and with exit code 2.

use std::fmt;
use std::net::IpAddr;
use std::time::Duration;

use clap::{ArgAction, ArgGroup, Args, Parser, Subcommand, ValueEnum};
use netting_raft::catalog::Protocol;
use netting_raft::catalog::validate;

use super::output::OutputFormat;

/// `nettingctl`: operate a Netting control plane.
#[derive(Debug, Parser)]
#[command(
    name = "nettingctl",
    version,
    about = "Operate a Netting control plane: cluster status, members, the service catalog and \
             connected sidecars",
    propagate_version = true
)]
pub struct Cli {
    #[command(flatten)]
    pub global: GlobalArgs,
    #[command(subcommand)]
    pub command: Command,
}

/// Options every command takes.
#[derive(Debug, Args)]
pub struct GlobalArgs {
    /// Replica gRPC address (host:port or http://host:port). Repeat it or give a comma-separated
    /// list; replicas are tried in order until one answers. Give all of them on one side of the
    /// subcommand: those after it replace those before. [env: NETTING_ADDR]
    /// [default: 127.0.0.1:7100]
    // The replacement is clap's (clap-rs/clap#1570): global values are not merged across levels.
    #[arg(long = "addr", value_name = "ADDR", global = true, action = ArgAction::Append)]
    pub addr: Vec<String>,

    /// How long each replica may take to answer, connecting included (e.g. 500ms, 5s, 1m).
    #[arg(
        long,
        value_name = "DURATION",
        default_value = "5s",
        value_parser = parse_duration,
        global = true
    )]
    pub timeout: Duration,

    /// Output format; json is stable for scripts.
    #[arg(long, short = 'o', value_enum, default_value_t, global = true)]
    pub output: OutputFormat,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Ask every replica for its Raft state and show them side by side.
    ///
    /// With a single --addr, the members that replica knows are asked too.
    Status,
    /// Read and write the service catalog.
    #[command(subcommand)]
    Catalog(CatalogCommand),
    /// List or remove control-plane replicas.
    #[command(subcommand)]
    Members(MembersCommand),
    /// Ask every replica for its connected sidecars: how many, and how far behind they are.
    ///
    /// With a single --addr, the members that replica knows are asked too.
    Sessions(SessionsArgs),
    /// Show one sidecar's view of the catalog, from the replica it is connected to: what it
    /// subscribes to at that replica's version, and the version it acknowledged.
    ///
    /// Replicas are asked in order until one has the sidecar; with a single --addr, the members
    /// that replica knows are asked too.
    Config(ConfigArgs),
}

/// Arguments of `sessions`.
#[derive(Debug, Args)]
pub struct SessionsArgs {
    /// Also list every session (with --output json they are always included).
    #[arg(long, short = 'v')]
    pub verbose: bool,
}

/// Arguments of `config`.
#[derive(Debug, Args)]
pub struct ConfigArgs {
    /// The sidecar's pod, as NAMESPACE/POD.
    #[arg(value_name = "NAMESPACE/POD", value_parser = parse_pod_ref)]
    pub pod: PodRef,
}

#[derive(Debug, Subcommand)]
pub enum CatalogCommand {
    /// Register one endpoint of a service, creating the service if needed.
    Register(RegisterArgs),
    /// Remove one endpoint of a service, or the whole service with --whole-service.
    Deregister(DeregisterArgs),
    /// Show one service and its endpoints.
    Get(GetArgs),
    /// List services.
    List(ListArgs),
}

#[derive(Debug, Subcommand)]
pub enum MembersCommand {
    /// List the replicas of the cluster, as the first answering replica knows them.
    List,
    /// Remove a replica from the cluster (refused if the rest could not keep a quorum).
    Remove(RemoveArgs),
}

/// Arguments of `catalog register`.
#[derive(Debug, Args)]
pub struct RegisterArgs {
    /// The service, as NAMESPACE/SERVICE.
    #[arg(value_name = "NAMESPACE/SERVICE", value_parser = parse_service_ref)]
    pub service: ServiceRef,

    /// IP address of the endpoint (IPv4 or IPv6, without port).
    #[arg(long, value_name = "IP")]
    pub address: IpAddr,

    /// Port of the endpoint.
    #[arg(long, value_name = "PORT", value_parser = clap::value_parser!(u16).range(1..))]
    pub port: u16,

    /// Whether the endpoint receives traffic.
    #[arg(long, value_name = "BOOL", action = ArgAction::Set, default_value_t = true)]
    pub ready: bool,

    /// Zone of the endpoint.
    #[arg(long, value_name = "ZONE", value_parser = parse_zone)]
    pub zone: Option<String>,

    /// Pod owning the endpoint.
    #[arg(long, value_name = "POD", value_parser = parse_pod)]
    pub pod: Option<String>,

    /// A port of the service (repeatable); protocol is tcp (default), http or grpc.
    ///
    /// --service-port, --label and the policy options together define the service: giving any
    /// of them replaces its ports, labels and policy as a whole; giving none keeps them.
    #[arg(
        long = "service-port",
        value_name = "NAME:PORT[:PROTOCOL]",
        value_parser = parse_service_port
    )]
    pub service_ports: Vec<PortSpec>,

    /// A label of the service (repeatable); see --service-port for how it replaces.
    #[arg(long = "label", value_name = "KEY=VALUE", value_parser = parse_label)]
    pub labels: Vec<Label>,

    /// Request timeout sidecars apply to the service, in milliseconds (0: none).
    #[arg(long, value_name = "MS")]
    pub timeout_ms: Option<u64>,

    /// Retries sidecars may make for a failed request.
    #[arg(long, value_name = "N")]
    pub max_retries: Option<u32>,

    /// How sidecars spread requests over the endpoints.
    #[arg(long, value_enum, value_name = "POLICY")]
    pub load_balancer: Option<LoadBalancerArg>,
}

/// Arguments of `catalog deregister`: one endpoint, or the whole service only when asked
/// for by name, so a forgotten flag never deletes a service.
#[derive(Debug, Args)]
#[command(group(
    ArgGroup::new("what")
        .required(true)
        .args(["address", "whole_service"])
))]
pub struct DeregisterArgs {
    /// The service, as NAMESPACE/SERVICE.
    #[arg(value_name = "NAMESPACE/SERVICE", value_parser = parse_service_ref)]
    pub service: ServiceRef,

    /// IP address of the endpoint to remove.
    #[arg(long, value_name = "IP", requires = "port")]
    pub address: Option<IpAddr>,

    /// Port of the endpoint to remove.
    #[arg(
        long,
        value_name = "PORT",
        requires = "address",
        value_parser = clap::value_parser!(u16).range(1..)
    )]
    pub port: Option<u16>,

    /// Remove the whole service and all its endpoints.
    #[arg(long, conflicts_with_all = ["address", "port"])]
    pub whole_service: bool,
}

/// Arguments of `catalog get`.
#[derive(Debug, Args)]
pub struct GetArgs {
    /// The service, as NAMESPACE/SERVICE.
    #[arg(value_name = "NAMESPACE/SERVICE", value_parser = parse_service_ref)]
    pub service: ServiceRef,

    /// Have the leader confirm the read with a quorum first (else a replica's local state).
    #[arg(long)]
    pub linearizable: bool,
}

/// Arguments of `catalog list`.
#[derive(Debug, Args)]
pub struct ListArgs {
    /// Only this namespace (default: all).
    #[arg(long, value_name = "NS", value_parser = parse_namespace)]
    pub namespace: Option<String>,

    /// Have the leader confirm the read with a quorum first (else a replica's local state).
    #[arg(long)]
    pub linearizable: bool,
}

/// Arguments of `members remove`.
#[derive(Debug, Args)]
pub struct RemoveArgs {
    /// Raft node id of the replica to remove.
    #[arg(value_name = "NODE_ID")]
    pub node_id: u64,
}

/// A service named on the command line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServiceRef {
    pub namespace: String,
    pub name: String,
}

impl fmt::Display for ServiceRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.namespace, self.name)
    }
}

/// A pod named on the command line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PodRef {
    pub namespace: String,
    pub pod: String,
}

impl fmt::Display for PodRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.namespace, self.pod)
    }
}

/// A `--service-port` value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PortSpec {
    pub name: String,
    pub port: u16,
    pub protocol: Protocol,
}

/// A `--label` value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Label {
    pub key: String,
    pub value: String,
}

/// Load balancers, spelled as the catalog stores them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum LoadBalancerArg {
    #[value(name = "round_robin")]
    RoundRobin,
    #[value(name = "least_request")]
    LeastRequest,
    #[value(name = "p2c_ewma")]
    P2cEwma,
}

impl LoadBalancerArg {
    /// The wire spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            LoadBalancerArg::RoundRobin => "round_robin",
            LoadBalancerArg::LeastRequest => "least_request",
            LoadBalancerArg::P2cEwma => "p2c_ewma",
        }
    }
}

/// Parses `NAMESPACE/SERVICE`, both DNS-1123 labels.
pub fn parse_service_ref(text: &str) -> Result<ServiceRef, String> {
    let Some((namespace, name)) = text.split_once('/') else {
        return Err(format!("expected NAMESPACE/SERVICE, got {text:?}"));
    };
    validate::dns_label("namespace", namespace).map_err(|e| e.to_string())?;
    validate::dns_label("service", name).map_err(|e| e.to_string())?;
    Ok(ServiceRef {
        namespace: namespace.to_owned(),
        name: name.to_owned(),
    })
}

/// Parses `NAMESPACE/POD` with the rules a sidecar's hello is held to: the namespace a DNS-1123
/// label, the pod any non-empty free text.
pub fn parse_pod_ref(text: &str) -> Result<PodRef, String> {
    let Some((namespace, pod)) = text.split_once('/') else {
        return Err(format!("expected NAMESPACE/POD, got {text:?}"));
    };
    validate::dns_label("namespace", namespace).map_err(|e| e.to_string())?;
    if pod.is_empty() {
        return Err(format!(
            "expected NAMESPACE/POD, got {text:?}: the pod is empty"
        ));
    }
    validate::free_text("pod", pod).map_err(|e| e.to_string())?;
    Ok(PodRef {
        namespace: namespace.to_owned(),
        pod: pod.to_owned(),
    })
}

/// Parses a namespace (a DNS-1123 label).
pub fn parse_namespace(text: &str) -> Result<String, String> {
    validate::dns_label("namespace", text).map_err(|e| e.to_string())?;
    Ok(text.to_owned())
}

/// Parses `NAME:PORT[:PROTOCOL]`.
pub fn parse_service_port(text: &str) -> Result<PortSpec, String> {
    let mut parts = text.split(':');
    let (Some(name), Some(port)) = (parts.next(), parts.next()) else {
        return Err(format!("expected NAME:PORT[:PROTOCOL], got {text:?}"));
    };
    let protocol = parts.next();
    if parts.next().is_some() {
        return Err(format!("expected NAME:PORT[:PROTOCOL], got {text:?}"));
    }
    validate::dns_label("service port name", name).map_err(|e| e.to_string())?;
    let port = match port.parse::<u32>() {
        Ok(number) => validate::port("service port", number).map_err(|e| e.to_string())?,
        Err(_) => return Err(format!("port {port:?} is not a number between 1 and 65535")),
    };
    let protocol = match protocol {
        None => Protocol::Tcp,
        Some(name) => name
            .parse::<Protocol>()
            .map_err(|()| format!("protocol {name:?} is not one of tcp, http, grpc"))?,
    };
    Ok(PortSpec {
        name: name.to_owned(),
        port,
        protocol,
    })
}

/// Parses `KEY=VALUE` (the value may be empty, as in Kubernetes).
pub fn parse_label(text: &str) -> Result<Label, String> {
    let Some((key, value)) = text.split_once('=') else {
        return Err(format!("expected KEY=VALUE, got {text:?}"));
    };
    validate::label(key, value).map_err(|e| e.to_string())?;
    Ok(Label {
        key: key.to_owned(),
        value: value.to_owned(),
    })
}

fn parse_zone(text: &str) -> Result<String, String> {
    validate::free_text("zone", text).map_err(|e| e.to_string())?;
    Ok(text.to_owned())
}

fn parse_pod(text: &str) -> Result<String, String> {
    validate::free_text("pod", text).map_err(|e| e.to_string())?;
    Ok(text.to_owned())
}

/// Parses a positive duration: a decimal number and a unit, `ms`, `s` or `m` (`500ms`, `1.5s`).
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    let text = text.trim();
    let split = text
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(text.len());
    let (number, unit) = text.split_at(split);
    let seconds_per_unit = match unit {
        "ms" => 0.001,
        "s" => 1.0,
        "m" => 60.0,
        "" => return Err(format!("{text:?} has no unit; write e.g. 500ms, 5s or 1m")),
        _ => return Err(format!("unknown unit {unit:?}; use ms, s or m")),
    };
    let value: f64 = number
        .parse()
        .map_err(|_| format!("{number:?} is not a number"))?;
    let duration = Duration::try_from_secs_f64(value * seconds_per_unit)
        .map_err(|_| format!("{text:?} is out of range"))?;
    if duration.is_zero() {
        return Err("must be greater than zero".to_owned());
    }
    Ok(duration)
}

#[cfg(test)]
mod tests;
