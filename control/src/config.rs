//! Command-line flags of a replica, parsed once into a typed, validated [`ReplicaConfig`].
//! A bad or conflicting flag stops start-up with a message naming it.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use clap::Args;
use netting_raft::NodeId;
use thiserror::Error;

/// Flags of `netting-control run`. Every flag also reads an environment variable, which is how
/// the Helm chart configures replicas.
#[derive(Debug, Clone, Args)]
pub struct RunArgs {
    /// This replica's id. In StatefulSet mode it defaults to the ordinal of the hostname.
    #[arg(long, env = "NETTING_NODE_ID")]
    pub node_id: Option<NodeId>,

    /// Directory for the Raft log, vote and snapshots. Never deleted or overwritten on error.
    #[arg(long, env = "NETTING_DATA_DIR")]
    pub data_dir: PathBuf,

    /// Operator-chosen cluster name. A data directory or peer of another cluster is refused.
    #[arg(long, env = "NETTING_CLUSTER_NAME", default_value = "netting")]
    pub cluster_name: String,

    /// Address the gRPC server (catalog, cluster and Raft services) listens on.
    #[arg(long, env = "NETTING_GRPC_LISTEN", default_value = "0.0.0.0:7100")]
    pub grpc_listen: SocketAddr,

    /// Address other replicas and clients use to reach this replica's gRPC server
    /// (host:port). Defaults to the StatefulSet DNS name, or to --grpc-listen when that is not
    /// a wildcard address.
    #[arg(long, env = "NETTING_GRPC_ADVERTISE")]
    pub grpc_advertise: Option<String>,

    /// Address of the admin HTTP server (/metrics, /healthz, /readyz, /debug/raft).
    #[arg(long, env = "NETTING_ADMIN_LISTEN", default_value = "0.0.0.0:7190")]
    pub admin_listen: SocketAddr,

    /// A replica of the cluster as ID=HOST:PORT; repeat for each (this replica may be listed).
    /// Used to bootstrap and to find the cluster when joining; membership itself lives in Raft.
    #[arg(
        long = "peer",
        env = "NETTING_PEERS",
        value_delimiter = ',',
        conflicts_with = "statefulset"
    )]
    pub peers: Vec<String>,

    /// StatefulSet mode: the StatefulSet's name. Peers are NAME-K.SERVICE.NAMESPACE.svc:PORT.
    #[arg(long, env = "NETTING_STATEFULSET", requires_all = ["headless_service", "namespace", "replicas"])]
    pub statefulset: Option<String>,

    /// StatefulSet mode: the headless Service that gives the replicas their DNS names.
    #[arg(long, env = "NETTING_HEADLESS_SERVICE")]
    pub headless_service: Option<String>,

    /// StatefulSet mode: the namespace the StatefulSet runs in.
    #[arg(long, env = "NETTING_NAMESPACE")]
    pub namespace: Option<String>,

    /// StatefulSet mode: how many replicas the StatefulSet has.
    #[arg(long, env = "NETTING_REPLICAS")]
    pub replicas: Option<u32>,

    /// StatefulSet mode: this pod's hostname, NAME-ORDINAL.
    #[arg(long, env = "HOSTNAME")]
    pub hostname: Option<String>,

    /// A YAML or JSON file of services; reloaded on change, proposed by the leader only.
    #[arg(long, env = "NETTING_CATALOG_FILE")]
    pub catalog_file: Option<PathBuf>,

    /// Raft heartbeat interval.
    #[arg(long, env = "NETTING_HEARTBEAT_INTERVAL", default_value = "50ms", value_parser = parse_duration)]
    pub heartbeat_interval: Duration,

    /// Lower bound of the randomised Raft election timeout.
    #[arg(long, env = "NETTING_ELECTION_TIMEOUT_MIN", default_value = "100ms", value_parser = parse_duration)]
    pub election_timeout_min: Duration,

    /// Upper bound of the randomised Raft election timeout; also the leader's lease, during
    /// which followers that heard from it refuse to vote.
    #[arg(long, env = "NETTING_ELECTION_TIMEOUT_MAX", default_value = "200ms", value_parser = parse_duration)]
    pub election_timeout_max: Duration,

    /// Stand for election as soon as a leader whose connection closed (killed or stopped) has
    /// been silent for its lease, rather than after the lease and a random election timeout.
    #[arg(long, env = "NETTING_FAST_FAILOVER", default_value_t = true, action = clap::ArgAction::Set)]
    pub fast_failover: bool,

    /// Ask the other voters before standing for election (Raft pre-vote), so that a replica cut
    /// off from the cluster does not raise its term and depose the leader when it returns.
    #[arg(long, env = "NETTING_PRE_VOTE", default_value_t = true, action = clap::ArgAction::Set)]
    pub pre_vote: bool,

    /// Build a snapshot (and purge the log before it) every this many entries.
    #[arg(long, env = "NETTING_SNAPSHOT_EVERY", default_value_t = 10_000)]
    pub snapshot_every: u64,

    /// Largest gRPC request a client may send, in bytes.
    #[arg(long, env = "NETTING_MAX_REQUEST_BYTES", default_value_t = 1024 * 1024)]
    pub max_request_bytes: usize,

    /// Most catalog commands the writer puts into one Raft entry.
    #[arg(long, env = "NETTING_WRITE_BATCH_MAX", default_value_t = 512)]
    pub write_batch_max: usize,

    /// Most catalog commands waiting on the leader for a Raft entry; a write beyond it is
    /// refused at once with RESOURCE_EXHAUSTED, and nothing of it is applied.
    #[arg(long, env = "NETTING_WRITE_QUEUE_MAX", default_value_t = 20_000)]
    pub write_queue_max: usize,

    /// How long a write may wait for a leader to be elected before it fails as UNAVAILABLE.
    #[arg(long, env = "NETTING_WRITE_TIMEOUT", default_value = "5s", value_parser = parse_duration)]
    pub write_timeout: Duration,

    /// Sidecars: how long a new discovery stream may take to send its hello.
    #[arg(long, env = "NETTING_SIDECAR_HELLO_TIMEOUT", default_value = "10s", value_parser = parse_duration)]
    pub sidecar_hello_timeout: Duration,

    /// Sidecars: how long an update may stay unacknowledged before the stream is closed.
    #[arg(long, env = "NETTING_SIDECAR_ACK_TIMEOUT", default_value = "30s", value_parser = parse_duration)]
    pub sidecar_ack_timeout: Duration,

    /// Sidecars: streams are recycled after this age (minus up to a quarter of jitter).
    #[arg(long, env = "NETTING_SIDECAR_MAX_AGE", default_value = "30m", value_parser = parse_duration)]
    pub sidecar_max_age: Duration,

    /// Sidecars: how long a replica behind a sidecar's version waits to catch up before it
    /// sends the sidecar to another replica.
    #[arg(long, env = "NETTING_SIDECAR_CATCH_UP_WAIT", default_value = "2s", value_parser = parse_duration)]
    pub sidecar_catch_up_wait: Duration,

    /// Sidecars: largest message a sidecar may send, in bytes.
    #[arg(long, env = "NETTING_SIDECAR_MAX_MESSAGE_BYTES", default_value_t = 64 * 1024)]
    pub sidecar_max_message_bytes: usize,

    /// Pushes: the quiet period that ends a burst of catalog changes.
    #[arg(long, env = "NETTING_PUSH_QUIET", default_value = "10ms", value_parser = parse_duration)]
    pub push_quiet: Duration,

    /// Pushes: the longest a change waits while the catalog keeps changing.
    #[arg(long, env = "NETTING_PUSH_MAX_DELAY", default_value = "100ms", value_parser = parse_duration)]
    pub push_max_delay: Duration,

    /// Pushes: how many session notifications may be in flight at once, across all pushes.
    #[arg(long, env = "NETTING_PUSH_MAX_IN_FLIGHT", default_value_t = 1024)]
    pub push_max_in_flight: usize,

    /// Pushes: how long a change to fields no sidecar uses (labels, owning pods) waits before
    /// the sidecars it touches are told its version, so every sidecar's version still reaches
    /// the catalog's.
    #[arg(long, env = "NETTING_PUSH_VERSION_ONLY_DELAY", default_value = "1s", value_parser = parse_duration)]
    pub push_version_only_delay: Duration,
}

/// Sidecar discovery settings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DiscoverySettings {
    pub hello_timeout: Duration,
    pub ack_timeout: Duration,
    pub max_age: Duration,
    pub catch_up_wait: Duration,
    pub max_message_bytes: usize,
    pub push_quiet: Duration,
    pub push_max_delay: Duration,
    pub push_max_in_flight: usize,
    pub push_version_only_delay: Duration,
}

/// Where a replica finds its peers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PeerDiscovery {
    /// An explicit list.
    List,
    /// Derived from the StatefulSet's naming pattern.
    StatefulSet { name: String, replicas: u32 },
}

/// Raft timing and log-compaction settings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RaftTiming {
    pub heartbeat_interval: Duration,
    pub election_timeout_min: Duration,
    pub election_timeout_max: Duration,
    pub snapshot_every: u64,
    pub fast_failover: bool,
    pub pre_vote: bool,
}

/// A replica's validated configuration.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReplicaConfig {
    pub node_id: NodeId,
    pub data_dir: PathBuf,
    pub cluster_name: String,
    pub grpc_listen: SocketAddr,
    pub grpc_advertise: String,
    pub admin_listen: SocketAddr,
    /// Every replica the flags name, this one included, by id.
    pub peers: BTreeMap<NodeId, String>,
    pub discovery: PeerDiscovery,
    pub catalog_file: Option<PathBuf>,
    pub raft: RaftTiming,
    pub max_request_bytes: usize,
    pub write_batch_max: usize,
    pub write_queue_max: usize,
    pub write_timeout: Duration,
    pub sidecars: DiscoverySettings,
}

impl ReplicaConfig {
    /// The replica allowed to bootstrap a new cluster: the lowest id (ordinal 0 in a
    /// StatefulSet). Only it may, and only when no peer has state.
    pub fn bootstrapper(&self) -> NodeId {
        self.peers.keys().next().copied().unwrap_or(self.node_id)
    }

    pub fn is_bootstrapper(&self) -> bool {
        self.bootstrapper() == self.node_id
    }

    /// The other replicas' addresses.
    pub fn other_peers(&self) -> impl Iterator<Item = (NodeId, &str)> + '_ {
        self.peers
            .iter()
            .filter(move |(id, _)| **id != self.node_id)
            .map(|(id, addr)| (*id, addr.as_str()))
    }
}

/// A flag that cannot be used, named as the operator typed it.
#[derive(Debug, Error, PartialEq, Eq)]
#[error("{flag}: {reason}")]
pub struct ConfigError {
    pub flag: &'static str,
    pub reason: String,
}

fn err(flag: &'static str, reason: impl Into<String>) -> ConfigError {
    ConfigError {
        flag,
        reason: reason.into(),
    }
}

impl TryFrom<RunArgs> for ReplicaConfig {
    type Error = ConfigError;

    fn try_from(args: RunArgs) -> Result<Self, ConfigError> {
        let raft = RaftTiming {
            heartbeat_interval: args.heartbeat_interval,
            election_timeout_min: args.election_timeout_min,
            election_timeout_max: args.election_timeout_max,
            snapshot_every: args.snapshot_every,
            fast_failover: args.fast_failover,
            pre_vote: args.pre_vote,
        };
        validate_timing(&raft)?;
        if args.cluster_name.is_empty() {
            return Err(err("--cluster-name", "must not be empty"));
        }
        if args.max_request_bytes < 1024 {
            return Err(err("--max-request-bytes", "must be at least 1024"));
        }
        if args.write_batch_max == 0 {
            return Err(err("--write-batch-max", "must be at least 1"));
        }
        if args.write_queue_max < args.write_batch_max {
            return Err(err(
                "--write-queue-max",
                "must be at least --write-batch-max, so that a full batch can queue",
            ));
        }
        if args.write_timeout.is_zero() {
            return Err(err("--write-timeout", "must be more than 0"));
        }
        let sidecars = DiscoverySettings {
            hello_timeout: args.sidecar_hello_timeout,
            ack_timeout: args.sidecar_ack_timeout,
            max_age: args.sidecar_max_age,
            catch_up_wait: args.sidecar_catch_up_wait,
            max_message_bytes: args.sidecar_max_message_bytes,
            push_quiet: args.push_quiet,
            push_max_delay: args.push_max_delay,
            push_max_in_flight: args.push_max_in_flight,
            push_version_only_delay: args.push_version_only_delay,
        };
        validate_discovery(&sidecars)?;
        if args.grpc_listen == args.admin_listen && args.grpc_listen.port() != 0 {
            return Err(err(
                "--admin-listen",
                format!("{} is also --grpc-listen", args.admin_listen),
            ));
        }

        let (node_id, peers, discovery) = match &args.statefulset {
            Some(name) => statefulset_peers(&args, name)?,
            None => list_peers(&args)?,
        };
        let grpc_advertise = match (&args.grpc_advertise, peers.get(&node_id)) {
            (Some(adv), Some(listed)) if adv != listed => {
                return Err(err(
                    "--grpc-advertise",
                    format!("{adv} differs from this replica's peer entry {node_id}={listed}"),
                ));
            }
            (Some(adv), _) => adv.clone(),
            (None, Some(listed)) => listed.clone(),
            (None, None) if !args.grpc_listen.ip().is_unspecified() => args.grpc_listen.to_string(),
            (None, None) => {
                return Err(err(
                    "--grpc-advertise",
                    "required when --grpc-listen is a wildcard address and this replica is not in --peer",
                ));
            }
        };
        validate_host_port("--grpc-advertise", &grpc_advertise)?;
        let mut peers = peers;
        peers.insert(node_id, grpc_advertise.clone());

        Ok(ReplicaConfig {
            node_id,
            data_dir: args.data_dir,
            cluster_name: args.cluster_name,
            grpc_listen: args.grpc_listen,
            grpc_advertise,
            admin_listen: args.admin_listen,
            peers,
            discovery,
            catalog_file: args.catalog_file,
            raft,
            max_request_bytes: args.max_request_bytes,
            write_batch_max: args.write_batch_max,
            write_queue_max: args.write_queue_max,
            write_timeout: args.write_timeout,
            sidecars,
        })
    }
}

fn validate_timing(raft: &RaftTiming) -> Result<(), ConfigError> {
    if raft.heartbeat_interval.is_zero() {
        return Err(err("--heartbeat-interval", "must be more than 0"));
    }
    if raft.election_timeout_min <= raft.heartbeat_interval {
        return Err(err(
            "--election-timeout-min",
            "must be longer than --heartbeat-interval, or followers time out between heartbeats",
        ));
    }
    if raft.election_timeout_max <= raft.election_timeout_min {
        return Err(err(
            "--election-timeout-max",
            "must be longer than --election-timeout-min",
        ));
    }
    if raft.snapshot_every == 0 {
        return Err(err("--snapshot-every", "must be at least 1"));
    }
    Ok(())
}

fn validate_discovery(d: &DiscoverySettings) -> Result<(), ConfigError> {
    let positive: [(&'static str, Duration); 6] = [
        ("--sidecar-hello-timeout", d.hello_timeout),
        ("--sidecar-ack-timeout", d.ack_timeout),
        ("--sidecar-max-age", d.max_age),
        ("--push-quiet", d.push_quiet),
        ("--push-max-delay", d.push_max_delay),
        ("--push-version-only-delay", d.push_version_only_delay),
    ];
    for (flag, value) in positive {
        if value.is_zero() {
            return Err(err(flag, "must be more than 0"));
        }
    }
    if d.push_max_delay < d.push_quiet {
        return Err(err("--push-max-delay", "must be at least --push-quiet"));
    }
    if d.max_age < d.ack_timeout {
        return Err(err(
            "--sidecar-max-age",
            "must be at least --sidecar-ack-timeout",
        ));
    }
    if d.max_message_bytes < 1024 {
        return Err(err("--sidecar-max-message-bytes", "must be at least 1024"));
    }
    if d.push_max_in_flight == 0 {
        return Err(err("--push-max-in-flight", "must be at least 1"));
    }
    Ok(())
}

type Peers = (NodeId, BTreeMap<NodeId, String>, PeerDiscovery);

fn list_peers(args: &RunArgs) -> Result<Peers, ConfigError> {
    let node_id = args
        .node_id
        .ok_or_else(|| err("--node-id", "required unless --statefulset is given"))?;
    let mut peers = BTreeMap::new();
    for entry in &args.peers {
        let (id, addr) = entry
            .split_once('=')
            .ok_or_else(|| err("--peer", format!("{entry:?} is not ID=HOST:PORT")))?;
        let id: NodeId = id
            .trim()
            .parse()
            .map_err(|_| err("--peer", format!("{entry:?}: {id:?} is not a node id")))?;
        let addr = addr.trim();
        validate_host_port("--peer", addr)?;
        if peers.insert(id, addr.to_owned()).is_some() {
            return Err(err("--peer", format!("node id {id} is listed twice")));
        }
    }
    Ok((node_id, peers, PeerDiscovery::List))
}

fn statefulset_peers(args: &RunArgs, name: &str) -> Result<Peers, ConfigError> {
    // clap's `requires_all` guarantees these are present; stay defensive anyway.
    let service = args
        .headless_service
        .as_deref()
        .ok_or_else(|| err("--headless-service", "required with --statefulset"))?;
    let namespace = args
        .namespace
        .as_deref()
        .ok_or_else(|| err("--namespace", "required with --statefulset"))?;
    let replicas = args
        .replicas
        .filter(|r| *r > 0)
        .ok_or_else(|| err("--replicas", "required with --statefulset and at least 1"))?;
    let hostname = args.hostname.as_deref().ok_or_else(|| {
        err(
            "--hostname",
            "required with --statefulset (HOSTNAME is not set)",
        )
    })?;
    let ordinal = ordinal_of(hostname, name)
        .ok_or_else(|| err("--hostname", format!("{hostname:?} is not {name}-ORDINAL")))?;
    if let Some(id) = args.node_id
        && id != ordinal
    {
        return Err(err(
            "--node-id",
            format!("{id} differs from the ordinal {ordinal} of hostname {hostname}"),
        ));
    }
    let port = args.grpc_listen.port();
    let peers = (0..u64::from(replicas))
        .map(|k| (k, format!("{name}-{k}.{service}.{namespace}.svc:{port}")))
        .collect();
    let discovery = PeerDiscovery::StatefulSet {
        name: name.to_owned(),
        replicas,
    };
    Ok((ordinal, peers, discovery))
}

/// The ordinal of a StatefulSet pod's hostname `NAME-N`.
pub fn ordinal_of(hostname: &str, statefulset: &str) -> Option<NodeId> {
    let rest = hostname.strip_prefix(statefulset)?.strip_prefix('-')?;
    if rest.is_empty() || !rest.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    rest.parse().ok()
}

fn validate_host_port(flag: &'static str, value: &str) -> Result<(), ConfigError> {
    let bad = || err(flag, format!("{value:?} is not HOST:PORT"));
    let (host, port) = value.rsplit_once(':').ok_or_else(bad)?;
    if host.is_empty() || host.contains('/') {
        return Err(bad());
    }
    match port.parse::<u16>() {
        Ok(0) | Err(_) => Err(bad()),
        Ok(_) => Ok(()),
    }
}

/// Parses durations such as `50ms`, `2s`, `1m`, `1h` or `1500us`.
pub fn parse_duration(value: &str) -> Result<Duration, String> {
    humantime::parse_duration(value.trim())
        .map_err(|e| format!("{value:?}: {e}; write e.g. 50ms, 2s, 1m or 1h"))
}

#[cfg(test)]
mod tests;
