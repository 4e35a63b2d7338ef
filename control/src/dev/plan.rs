//! Pure planning of a dev cluster: the layout to use (fresh, or reused from an earlier run),
//! the ids, addresses and paths of each replica, and each child's command line. No IO here,
//! so every decision is unit-tested without processes or sockets.

use std::borrow::Cow;
use std::ffi::OsString;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::path::{Path, PathBuf};

use netting_raft::NodeId;
use serde::{Deserialize, Serialize};
use thiserror::Error;

pub(crate) const DEFAULT_GRPC_BASE_PORT: u16 = 7100;
pub(crate) const DEFAULT_ADMIN_BASE_PORT: u16 = 7190;
pub(crate) const DEFAULT_REPLICAS: u8 = 3;
pub(crate) const MAX_REPLICAS: u8 = 7;
pub(crate) const DEFAULT_BIND: IpAddr = IpAddr::V4(Ipv4Addr::LOCALHOST);

/// What fixes a dev cluster's identity: Raft membership stores the peer addresses derived from
/// it, so a data directory kept between runs must be started with the same layout again.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Layout {
    /// Address every replica listens on.
    pub bind: IpAddr,
    /// gRPC port of replica 0; replica K listens on this + K.
    pub grpc_base_port: u16,
    /// Admin HTTP port of replica 0; replica K listens on this + K.
    pub admin_base_port: u16,
    /// Number of replicas, ids 0..replicas.
    pub replicas: u8,
}

/// The layout flags as typed; `None` means "not on the command line", which is what lets an
/// earlier run's layout be reused without a conflict.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct LayoutFlags {
    pub(crate) bind: Option<IpAddr>,
    pub(crate) grpc_base_port: Option<u16>,
    pub(crate) admin_base_port: Option<u16>,
    pub(crate) replicas: Option<u8>,
}

/// A layout that cannot be used, with what to do about it.
#[derive(Debug, Error, PartialEq, Eq)]
pub(crate) enum PlanError {
    #[error(
        "{dir} holds a cluster started with {previous}, but this run asks for {requested}. \
         Raft keeps the peer addresses in its data, so they cannot change: drop those flags to \
         reuse the cluster, or add --clean to start a new one (this deletes its data)"
    )]
    LayoutChanged {
        dir: String,
        previous: String,
        requested: String,
    },
    #[error("--replicas: {0} is not in 1..={MAX_REPLICAS}")]
    Replicas(u8),
    #[error(
        "{flag}: port 0 would mean random ports, but a dev cluster needs the same ports on \
         every run"
    )]
    ZeroPort { flag: &'static str },
    #[error("{flag}: {base} + {replicas} replicas goes past port 65535")]
    PortOverflow {
        flag: &'static str,
        base: u16,
        replicas: u8,
    },
    #[error(
        "--grpc-base-port {grpc} and --admin-base-port {admin} overlap for {replicas} replicas; \
         keep them at least {replicas} apart"
    )]
    Overlap { grpc: u16, admin: u16, replicas: u8 },
}

/// Picks the layout: explicit flags, else the earlier run's (`previous`), else the defaults.
/// A flag that differs from the earlier run is refused: the data would not match it.
pub(crate) fn resolve_layout(
    flags: LayoutFlags,
    previous: Option<&Layout>,
    dir: &Path,
) -> Result<Layout, PlanError> {
    let layout = Layout {
        bind: flags
            .bind
            .or(previous.map(|p| p.bind))
            .unwrap_or(DEFAULT_BIND),
        grpc_base_port: flags
            .grpc_base_port
            .or(previous.map(|p| p.grpc_base_port))
            .unwrap_or(DEFAULT_GRPC_BASE_PORT),
        admin_base_port: flags
            .admin_base_port
            .or(previous.map(|p| p.admin_base_port))
            .unwrap_or(DEFAULT_ADMIN_BASE_PORT),
        replicas: flags
            .replicas
            .or(previous.map(|p| p.replicas))
            .unwrap_or(DEFAULT_REPLICAS),
    };
    if let Some(previous) = previous
        && *previous != layout
    {
        // Only flags can make them differ, since unset fields were taken from `previous`.
        let mut was = Vec::new();
        let mut asked = Vec::new();
        let mut compare = |flag: &str, old: String, new: String| {
            if old != new {
                was.push(format!("{flag} {old}"));
                asked.push(format!("{flag} {new}"));
            }
        };
        compare("--bind", previous.bind.to_string(), layout.bind.to_string());
        compare(
            "--grpc-base-port",
            previous.grpc_base_port.to_string(),
            layout.grpc_base_port.to_string(),
        );
        compare(
            "--admin-base-port",
            previous.admin_base_port.to_string(),
            layout.admin_base_port.to_string(),
        );
        compare(
            "--replicas",
            previous.replicas.to_string(),
            layout.replicas.to_string(),
        );
        return Err(PlanError::LayoutChanged {
            dir: dir.display().to_string(),
            previous: was.join(" "),
            requested: asked.join(" "),
        });
    }
    validate_layout(&layout)?;
    Ok(layout)
}

fn validate_layout(layout: &Layout) -> Result<(), PlanError> {
    let n = layout.replicas;
    if !(1..=MAX_REPLICAS).contains(&n) {
        return Err(PlanError::Replicas(n));
    }
    for (flag, base) in [
        ("--grpc-base-port", layout.grpc_base_port),
        ("--admin-base-port", layout.admin_base_port),
    ] {
        if base == 0 {
            return Err(PlanError::ZeroPort { flag });
        }
        if base.checked_add(u16::from(n) - 1).is_none() {
            return Err(PlanError::PortOverflow {
                flag,
                base,
                replicas: n,
            });
        }
    }
    // Both ranges are [base, base + n); they overlap when their starts are less than n apart.
    if layout.grpc_base_port.abs_diff(layout.admin_base_port) < u16::from(n) {
        return Err(PlanError::Overlap {
            grpc: layout.grpc_base_port,
            admin: layout.admin_base_port,
            replicas: n,
        });
    }
    Ok(())
}

/// Where one replica listens, how it is reached, and where its files go.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct ReplicaPlan {
    pub(crate) node_id: NodeId,
    pub(crate) grpc_listen: SocketAddr,
    pub(crate) admin_listen: SocketAddr,
    /// What peers and clients dial: the listen address, or loopback for a wildcard bind.
    pub(crate) grpc_addr: SocketAddr,
    pub(crate) admin_addr: SocketAddr,
    pub(crate) data_dir: PathBuf,
    pub(crate) log_file: PathBuf,
}

/// The replicas of a validated layout, ids 0..N, under `dir`.
pub(crate) fn plan_replicas(layout: &Layout, dir: &Path) -> Vec<ReplicaPlan> {
    let dial = connect_ip(layout.bind);
    (0..layout.replicas)
        .map(|k| {
            // `validate_layout` ruled out overflow; saturating keeps this total regardless.
            let grpc = layout.grpc_base_port.saturating_add(u16::from(k));
            let admin = layout.admin_base_port.saturating_add(u16::from(k));
            ReplicaPlan {
                node_id: NodeId::from(k),
                grpc_listen: SocketAddr::new(layout.bind, grpc),
                admin_listen: SocketAddr::new(layout.bind, admin),
                grpc_addr: SocketAddr::new(dial, grpc),
                admin_addr: SocketAddr::new(dial, admin),
                data_dir: dir.join(format!("node-{k}")),
                log_file: dir.join(format!("node-{k}.log")),
            }
        })
        .collect()
}

/// The address to dial for a listen address: a wildcard is not an address peers or
/// nettingctl can be told to use, so loopback of the same family stands in for it.
pub(crate) fn connect_ip(bind: IpAddr) -> IpAddr {
    match bind {
        IpAddr::V4(v4) if v4.is_unspecified() => IpAddr::V4(Ipv4Addr::LOCALHOST),
        IpAddr::V6(v6) if v6.is_unspecified() => IpAddr::V6(Ipv6Addr::LOCALHOST),
        ip => ip,
    }
}

/// The arguments (after the program) that start `replica` as a member of `all`.
pub(crate) fn child_args(
    replica: &ReplicaPlan,
    all: &[ReplicaPlan],
    catalog: Option<&Path>,
) -> Vec<OsString> {
    let peers = all
        .iter()
        .map(|r| format!("{}={}", r.node_id, r.grpc_addr))
        .collect::<Vec<_>>()
        .join(",");
    let mut args: Vec<OsString> = vec![
        "run".into(),
        "--node-id".into(),
        replica.node_id.to_string().into(),
        "--data-dir".into(),
        replica.data_dir.clone().into(),
        "--grpc-listen".into(),
        replica.grpc_listen.to_string().into(),
        "--admin-listen".into(),
        replica.admin_listen.to_string().into(),
        "--peer".into(),
        peers.into(),
    ];
    if let Some(catalog) = catalog {
        args.push("--catalog-file".into());
        args.push(catalog.into());
    }
    args
}

/// Variables of `netting-control run` that the dev mode sets by flag, or that would turn a
/// replica into something else (StatefulSet mode, another catalog). An operator's shell may
/// export them for a real replica; a dev child must not inherit them. Tuning variables
/// (timeouts, cluster name, logging) pass through on purpose.
pub(crate) const SCRUBBED_ENV: &[&str] = &[
    "NETTING_NODE_ID",
    "NETTING_DATA_DIR",
    "NETTING_GRPC_LISTEN",
    "NETTING_GRPC_ADVERTISE",
    "NETTING_ADMIN_LISTEN",
    "NETTING_PEERS",
    "NETTING_STATEFULSET",
    "NETTING_HEADLESS_SERVICE",
    "NETTING_NAMESPACE",
    "NETTING_REPLICAS",
    "NETTING_CATALOG_FILE",
];

/// The `--addr` value for nettingctl: every replica, so it can fail over between them.
pub(crate) fn nettingctl_addrs(replicas: &[ReplicaPlan]) -> String {
    replicas
        .iter()
        .map(|r| r.grpc_addr.to_string())
        .collect::<Vec<_>>()
        .join(",")
}

/// The program to show for nettingctl: the bare name when it is on PATH, else the binary built
/// next to this one, else the bare name (the summary then says how to build it).
pub(crate) fn nettingctl_program(on_path: bool, sibling: Option<&Path>) -> String {
    match sibling {
        Some(path) if !on_path => shell_quote(&path.display().to_string()).into_owned(),
        _ => "nettingctl".to_owned(),
    }
}

/// Quotes `s` for a POSIX shell when it has characters the shell would interpret, so printed
/// commands can be pasted as they are.
pub(crate) fn shell_quote(s: &str) -> Cow<'_, str> {
    let plain = !s.is_empty()
        && s.bytes().all(|b| {
            b.is_ascii_alphanumeric() || matches!(b, b'/' | b'.' | b'-' | b'_' | b':' | b',' | b'=')
        });
    if plain {
        Cow::Borrowed(s)
    } else {
        Cow::Owned(format!("'{}'", s.replace('\'', r"'\''")))
    }
}

/// How many replicas can fail while the rest keep a majority.
pub(crate) fn tolerated_failures(replicas: u8) -> u8 {
    replicas.saturating_sub(1) / 2
}
