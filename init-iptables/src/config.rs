//! The validated configuration: every flag value is parsed once, here, into typed data. A bad
//! value becomes a [`ConfigError`] that names the flag and the value, and nothing is applied.

use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::path::PathBuf;

use thiserror::Error;

use crate::cli::Args;
use crate::xtables::{BackendChoice, Family};

/// What one run of `netting-init` does.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Invocation {
    /// Install the redirection, or remove it.
    pub action: Action,
    /// Which iptables back end to use.
    pub backend: BackendChoice,
    /// Print the `iptables-restore` input instead of applying it.
    pub dry_run: bool,
    /// Directory holding the `iptables-*-save`/`-restore` binaries; `None` searches `PATH`.
    pub iptables_dir: Option<PathBuf>,
}

/// The two things `netting-init` can do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    /// Create or refresh the chains and jumps for this configuration.
    Apply(Config),
    /// Remove Netting's chains and the rules that jump to them. `ipv6` makes ip6tables errors
    /// fatal; without it ip6tables is still cleaned when it can be, on a best-effort basis.
    Cleanup { ipv6: bool },
}

/// The redirection to install, validated.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Config {
    /// The proxy's user id; its traffic is never redirected (never 0).
    pub proxy_uid: u32,
    /// Optionally the proxy's group id, excluded the same way (never 0).
    pub proxy_gid: Option<u32>,
    /// Port of the proxy's outbound listener.
    pub outbound_port: u16,
    /// Port of the proxy's inbound listener.
    pub inbound_port: u16,
    /// Destination ports whose outbound connections go direct.
    pub exclude_outbound_ports: Vec<u16>,
    /// Destination ports whose inbound connections go direct (e.g. the proxy's admin port).
    pub exclude_inbound_ports: Vec<u16>,
    /// Which inbound destination ports are redirected.
    pub include_inbound_ports: InboundPorts,
    /// Destination networks whose outbound connections go direct.
    pub exclude_outbound_cidrs: Vec<Cidr>,
    /// Source networks whose inbound connections go direct.
    pub exclude_inbound_cidrs: Vec<Cidr>,
    /// Also program ip6tables.
    pub ipv6: bool,
}

impl Config {
    /// A configuration with the defaults of the command line and the given proxy UID.
    pub fn new(proxy_uid: u32) -> Self {
        Self {
            proxy_uid,
            proxy_gid: None,
            outbound_port: 15001,
            inbound_port: 15006,
            exclude_outbound_ports: Vec::new(),
            exclude_inbound_ports: Vec::new(),
            include_inbound_ports: InboundPorts::All,
            exclude_outbound_cidrs: Vec::new(),
            exclude_inbound_cidrs: Vec::new(),
            ipv6: false,
        }
    }

    /// The address families to program: IPv4 always, IPv6 when asked.
    pub fn families(&self) -> Vec<Family> {
        if self.ipv6 {
            vec![Family::V4, Family::V6]
        } else {
            vec![Family::V4]
        }
    }
}

/// Inbound ports to redirect.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum InboundPorts {
    /// Every TCP port (`*`), minus the excluded ones.
    All,
    /// Only these ports (possibly none: inbound redirection off).
    Only(Vec<u16>),
}

/// A network in CIDR notation whose host bits are all zero, e.g. `10.96.0.0/12` or `fd00::/8`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Cidr {
    addr: IpAddr,
    prefix: u8,
}

impl Cidr {
    /// Parses `ADDRESS/PREFIX` strictly, or a bare address as a single host (`/32`, `/128`).
    /// The prefix must fit the family and the host bits must be zero, so what the operator
    /// wrote is exactly what iptables matches.
    pub fn parse(text: &str) -> Result<Self, CidrError> {
        let (addr_text, prefix_text) = match text.split_once('/') {
            Some((a, p)) => (a, Some(p)),
            None => (text, None),
        };
        let addr: IpAddr = addr_text
            .parse()
            .map_err(|_| CidrError::Address(addr_text.to_owned()))?;
        let max = match addr {
            IpAddr::V4(_) => 32,
            IpAddr::V6(_) => 128,
        };
        let prefix = match prefix_text {
            None => max,
            Some(p) => {
                if p.is_empty() || p.len() > 3 || !p.bytes().all(|b| b.is_ascii_digit()) {
                    return Err(CidrError::Prefix(p.to_owned()));
                }
                let n: u16 = p.parse().map_err(|_| CidrError::Prefix(p.to_owned()))?;
                if n > u16::from(max) {
                    return Err(CidrError::PrefixTooLong { prefix: n, max });
                }
                u8::try_from(n).map_err(|_| CidrError::Prefix(p.to_owned()))?
            }
        };
        let network = Self {
            addr: mask(addr, prefix),
            prefix,
        };
        if network.addr != addr {
            return Err(CidrError::HostBits { network });
        }
        Ok(network)
    }

    /// IPv4 or IPv6.
    pub fn family(&self) -> Family {
        match self.addr {
            IpAddr::V4(_) => Family::V4,
            IpAddr::V6(_) => Family::V6,
        }
    }
}

/// Prints as iptables-save does: `10.96.0.0/12`, `fd00::/8`.
impl fmt::Display for Cidr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.addr, self.prefix)
    }
}

fn mask(addr: IpAddr, prefix: u8) -> IpAddr {
    match addr {
        IpAddr::V4(a) => {
            let bits = u32::from(a);
            let m = u32::MAX.checked_shl(32 - u32::from(prefix)).unwrap_or(0);
            IpAddr::V4(Ipv4Addr::from(bits & m))
        }
        IpAddr::V6(a) => {
            let bits = u128::from(a);
            let m = u128::MAX.checked_shl(128 - u32::from(prefix)).unwrap_or(0);
            IpAddr::V6(Ipv6Addr::from(bits & m))
        }
    }
}

/// Why a CIDR was rejected.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum CidrError {
    /// The part before `/` is not an address.
    #[error("`{0}` is not an IPv4 or IPv6 address")]
    Address(String),
    /// The part after `/` is not a number.
    #[error("prefix length `{0}` is not a number")]
    Prefix(String),
    /// The prefix is longer than the address.
    #[error("prefix length {prefix} is longer than the {max} bits of the address")]
    PrefixTooLong {
        /// The prefix given.
        prefix: u16,
        /// 32 or 128.
        max: u8,
    },
    /// Bits beyond the prefix are set.
    #[error("host bits are set; the network is {network}")]
    HostBits {
        /// The network the operator probably meant.
        network: Cidr,
    },
}

/// A bad flag value or a contradiction between flags. Each names the flag(s) and the value.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum ConfigError {
    /// One flag has a bad value.
    #[error("invalid value \"{value}\" for --{flag}: {problem}")]
    Invalid {
        /// The flag, without `--`.
        flag: &'static str,
        /// The value as given (the whole value, for a list).
        value: String,
        /// What is wrong with it.
        problem: Problem,
    },
    /// `--outbound-port` and `--inbound-port` are the same.
    #[error(
        "--outbound-port and --inbound-port are both {0}: the proxy needs two different listeners"
    )]
    SameProxyPorts(u16),
    /// A port is both redirected and excluded inbound.
    #[error(
        "port {0} is in both --include-inbound-ports and --exclude-inbound-ports; list it in one"
    )]
    IncludedAndExcluded(u16),
    /// Applying needs the proxy's UID.
    #[error("--proxy-uid is required (except with --cleanup)")]
    MissingProxyUid,
}

/// What is wrong with one flag value.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum Problem {
    /// Not a number from 1 to 65535.
    #[error("`{0}` is not a port: expected a number from 1 to 65535")]
    Port(String),
    /// `80,,81` or a trailing comma.
    #[error("empty entry in the comma-separated list")]
    EmptyEntry,
    /// A CIDR that does not parse.
    #[error("`{text}`: {error}")]
    Cidr {
        /// The entry.
        text: String,
        /// Why.
        error: CidrError,
    },
    /// An IPv6 network without `--ipv6`: it would never match anything.
    #[error("`{0}` is an IPv6 network but IPv6 is not enabled (add --ipv6)")]
    NeedsIpv6(String),
    /// The proxy's own listener ports cannot be excluded.
    #[error("{port} is the proxy's own listener port (--{of}) and cannot be excluded")]
    ProxyPort {
        /// The port.
        port: u16,
        /// `outbound-port` or `inbound-port`.
        of: &'static str,
    },
    /// Not a numeric user or group id.
    #[error("`{0}` is not a numeric id from 1 to 4294967294")]
    Id(String),
    /// 0 would exclude root.
    #[error(
        "0 is root: excluding it would let everything running as root bypass the proxy; \
         run the proxy under its own id"
    )]
    Root,
    /// `*` mixed with port numbers.
    #[error("`*` (all ports) cannot be combined with port numbers")]
    StarWithPorts,
}

fn invalid(flag: &'static str, value: &str, problem: Problem) -> ConfigError {
    ConfigError::Invalid {
        flag,
        value: value.to_owned(),
        problem,
    }
}

/// Splits a comma list; an empty or blank value is an empty list, an empty entry an error.
fn entries<'a>(flag: &'static str, value: &'a str) -> Result<Vec<&'a str>, ConfigError> {
    if value.trim().is_empty() {
        return Ok(Vec::new());
    }
    value
        .split(',')
        .map(|e| {
            let e = e.trim();
            if e.is_empty() {
                Err(invalid(flag, value, Problem::EmptyEntry))
            } else {
                Ok(e)
            }
        })
        .collect()
}

fn parse_port_text(text: &str) -> Option<u16> {
    if text.is_empty() || text.len() > 5 || !text.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    text.parse::<u16>().ok().filter(|p| *p != 0)
}

/// Parses one port flag.
pub fn parse_port(flag: &'static str, value: &str) -> Result<u16, ConfigError> {
    parse_port_text(value.trim())
        .ok_or_else(|| invalid(flag, value, Problem::Port(value.trim().to_owned())))
}

/// Parses a comma list of ports; duplicates are dropped, first occurrence kept.
pub fn parse_ports(flag: &'static str, value: &str) -> Result<Vec<u16>, ConfigError> {
    let mut ports = Vec::new();
    for e in entries(flag, value)? {
        let port =
            parse_port_text(e).ok_or_else(|| invalid(flag, value, Problem::Port(e.to_owned())))?;
        if !ports.contains(&port) {
            ports.push(port);
        }
    }
    Ok(ports)
}

/// Parses `--include-inbound-ports`: `*` or a comma list of ports (empty: none).
pub fn parse_inbound_ports(flag: &'static str, value: &str) -> Result<InboundPorts, ConfigError> {
    let list = entries(flag, value)?;
    if list.contains(&"*") {
        if list.len() > 1 {
            return Err(invalid(flag, value, Problem::StarWithPorts));
        }
        return Ok(InboundPorts::All);
    }
    Ok(InboundPorts::Only(parse_ports(flag, value)?))
}

/// Parses a comma list of CIDRs; IPv6 entries need `ipv6`. Duplicates are dropped.
pub fn parse_cidrs(flag: &'static str, value: &str, ipv6: bool) -> Result<Vec<Cidr>, ConfigError> {
    let mut cidrs = Vec::new();
    for e in entries(flag, value)? {
        let cidr = Cidr::parse(e).map_err(|error| {
            invalid(
                flag,
                value,
                Problem::Cidr {
                    text: e.to_owned(),
                    error,
                },
            )
        })?;
        if cidr.family() == Family::V6 && !ipv6 {
            return Err(invalid(flag, value, Problem::NeedsIpv6(e.to_owned())));
        }
        if !cidrs.contains(&cidr) {
            cidrs.push(cidr);
        }
    }
    Ok(cidrs)
}

/// Parses a user or group id: numeric, 1 to 2^32-2 (2^32-1 is the "no id" value).
pub fn parse_id(flag: &'static str, value: &str) -> Result<u32, ConfigError> {
    let text = value.trim();
    let bad = || invalid(flag, value, Problem::Id(text.to_owned()));
    if text.is_empty() || text.len() > 10 || !text.bytes().all(|b| b.is_ascii_digit()) {
        return Err(bad());
    }
    match text.parse::<u32>() {
        Ok(0) => Err(invalid(flag, value, Problem::Root)),
        Ok(u32::MAX) | Err(_) => Err(bad()),
        Ok(id) => Ok(id),
    }
}

impl Invocation {
    /// Validates the command line. With `--cleanup`, rule flags are still checked when given
    /// (a typo is reported, not ignored), but `--proxy-uid` is not required.
    pub fn from_args(args: &Args) -> Result<Self, ConfigError> {
        let config = parse_config(args)?;
        let action = match (args.cleanup, config) {
            (true, _) => Action::Cleanup { ipv6: args.ipv6 },
            (false, Some(config)) => Action::Apply(config),
            (false, None) => return Err(ConfigError::MissingProxyUid),
        };
        Ok(Self {
            action,
            backend: args.backend,
            dry_run: args.dry_run,
            iptables_dir: args.iptables_dir.clone(),
        })
    }
}

/// Parses the rule flags; `None` when `--proxy-uid` is absent (allowed only for cleanup).
fn parse_config(args: &Args) -> Result<Option<Config>, ConfigError> {
    let opt = |v: &Option<String>| v.clone().unwrap_or_default();
    let proxy_uid = args
        .proxy_uid
        .as_deref()
        .map(|v| parse_id("proxy-uid", v))
        .transpose()?;
    let proxy_gid = args
        .proxy_gid
        .as_deref()
        .map(|v| parse_id("proxy-gid", v))
        .transpose()?;
    let outbound_port = parse_port("outbound-port", &args.outbound_port)?;
    let inbound_port = parse_port("inbound-port", &args.inbound_port)?;
    if outbound_port == inbound_port {
        return Err(ConfigError::SameProxyPorts(outbound_port));
    }
    let exclude_outbound_ports_text = opt(&args.exclude_outbound_ports);
    let exclude_inbound_ports_text = opt(&args.exclude_inbound_ports);
    let exclude_outbound_ports =
        parse_ports("exclude-outbound-ports", &exclude_outbound_ports_text)?;
    let exclude_inbound_ports = parse_ports("exclude-inbound-ports", &exclude_inbound_ports_text)?;
    for (flag, text, ports) in [
        (
            "exclude-outbound-ports",
            &exclude_outbound_ports_text,
            &exclude_outbound_ports,
        ),
        (
            "exclude-inbound-ports",
            &exclude_inbound_ports_text,
            &exclude_inbound_ports,
        ),
    ] {
        for (proxy_port, of) in [
            (outbound_port, "outbound-port"),
            (inbound_port, "inbound-port"),
        ] {
            if ports.contains(&proxy_port) {
                return Err(invalid(
                    flag,
                    text,
                    Problem::ProxyPort {
                        port: proxy_port,
                        of,
                    },
                ));
            }
        }
    }
    let include_inbound_ports =
        parse_inbound_ports("include-inbound-ports", &args.include_inbound_ports)?;
    if let InboundPorts::Only(included) = &include_inbound_ports
        && let Some(port) = included.iter().find(|p| exclude_inbound_ports.contains(p))
    {
        return Err(ConfigError::IncludedAndExcluded(*port));
    }
    let exclude_outbound_cidrs = parse_cidrs(
        "exclude-outbound-cidrs",
        &opt(&args.exclude_outbound_cidrs),
        args.ipv6,
    )?;
    let exclude_inbound_cidrs = parse_cidrs(
        "exclude-inbound-cidrs",
        &opt(&args.exclude_inbound_cidrs),
        args.ipv6,
    )?;
    Ok(proxy_uid.map(|proxy_uid| Config {
        proxy_uid,
        proxy_gid,
        outbound_port,
        inbound_port,
        exclude_outbound_ports,
        exclude_inbound_ports,
        include_inbound_ports,
        exclude_outbound_cidrs,
        exclude_inbound_cidrs,
        ipv6: args.ipv6,
    }))
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests;
