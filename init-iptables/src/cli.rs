//! The command line. Values stay text here; [`crate::Invocation::from_args`] validates them so
//! that every error names its flag and value the same way, and so tests can check validation
//! without a process.

use std::path::PathBuf;

use clap::Parser;

use crate::xtables::BackendChoice;

/// Redirects the pod's TCP traffic to the Netting sidecar with iptables (nat table), in the
/// current network namespace. Every flag can also be set with the environment variable shown.
#[derive(Debug, Clone, Parser)]
#[command(name = "netting-init", version)]
pub struct Args {
    /// UID the proxy runs as; its connections are never redirected. Not 0.
    #[arg(
        long,
        env = "NETTING_INIT_PROXY_UID",
        value_name = "UID",
        required_unless_present = "cleanup"
    )]
    pub proxy_uid: Option<String>,

    /// GID the proxy runs as; its connections are never redirected either. Not 0.
    #[arg(long, env = "NETTING_INIT_PROXY_GID", value_name = "GID")]
    pub proxy_gid: Option<String>,

    /// Port of the proxy's outbound listener.
    #[arg(long, env = "NETTING_INIT_OUTBOUND_PORT", default_value = "15001")]
    pub outbound_port: String,

    /// Port of the proxy's inbound listener.
    #[arg(long, env = "NETTING_INIT_INBOUND_PORT", default_value = "15006")]
    pub inbound_port: String,

    /// Comma list of destination ports the application reaches directly, not through the proxy.
    #[arg(
        long,
        env = "NETTING_INIT_EXCLUDE_OUTBOUND_PORTS",
        value_name = "PORTS"
    )]
    pub exclude_outbound_ports: Option<String>,

    /// Comma list of local ports reached directly from outside, not through the proxy
    /// (typically the proxy's admin port).
    #[arg(long, env = "NETTING_INIT_EXCLUDE_INBOUND_PORTS", value_name = "PORTS")]
    pub exclude_inbound_ports: Option<String>,

    /// Local ports whose inbound connections are redirected: `*` for all, or a comma list
    /// (an empty list turns inbound redirection off).
    #[arg(
        long,
        env = "NETTING_INIT_INCLUDE_INBOUND_PORTS",
        value_name = "PORTS",
        default_value = "*"
    )]
    pub include_inbound_ports: String,

    /// Comma list of destination networks (CIDR) the application reaches directly.
    #[arg(
        long,
        env = "NETTING_INIT_EXCLUDE_OUTBOUND_CIDRS",
        value_name = "CIDRS"
    )]
    pub exclude_outbound_cidrs: Option<String>,

    /// Comma list of source networks (CIDR) whose inbound connections are not redirected.
    #[arg(long, env = "NETTING_INIT_EXCLUDE_INBOUND_CIDRS", value_name = "CIDRS")]
    pub exclude_inbound_cidrs: Option<String>,

    /// Also program ip6tables (IPv6 networks in the CIDR lists then go there).
    #[arg(long, env = "NETTING_INIT_IPV6")]
    pub ipv6: bool,

    /// iptables back end: `auto` uses the one that already holds rules, else nft.
    #[arg(long, env = "NETTING_INIT_BACKEND", value_enum, default_value_t = BackendChoice::Auto)]
    pub backend: BackendChoice,

    /// Print the exact iptables-restore input on stdout and change nothing.
    #[arg(long, env = "NETTING_INIT_DRY_RUN")]
    pub dry_run: bool,

    /// Remove Netting's chains and the jumps to them, and nothing else.
    #[arg(long, env = "NETTING_INIT_CLEANUP")]
    pub cleanup: bool,

    /// Directory with the iptables-{nft,legacy}-{save,restore} binaries (default: PATH).
    #[arg(long, env = "NETTING_INIT_IPTABLES_DIR", value_name = "DIR")]
    pub iptables_dir: Option<PathBuf>,
}
