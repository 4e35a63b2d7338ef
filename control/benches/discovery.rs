//! Config distribution: how fast a catalog write reaches every connected sidecar, how sidecars
//! of a killed replica resync, and what a connected session costs a replica in memory.
//!
//! `cargo bench -p netting-control --bench discovery` starts 3 release `netting-control`
//! replicas on loopback and, in this same process, N light-weight simulated sidecars spread
//! evenly over them (one task and one stream each, many streams per HTTP/2 connection; see
//! `discovery/fleet.rs`). Every sidecar subscribes to the namespace holding the catalog, ACKs
//! every response at once and records each applied version with the time and whether it came
//! as a snapshot or a delta. For each N it measures:
//!
//! - memory: each replica's RSS before the sidecars connect and once they are all connected,
//!   current and idle; the difference per session on that replica;
//! - convergence: W writes, one at a time, through the leader; for each, the time from the
//!   write's acknowledgement (Register returned) to the moment the last sidecar applied it;
//! - failover: `kill -9` of a follower (then, on a fresh cluster, of the leader), one write
//!   through a survivor, and the time until every sidecar (the killed replica's ones included,
//!   which reconnect to a survivor with their last version) is at that write's version; how
//!   many of the killed replica's sidecars resynced by delta and how many by snapshot.
//!
//! Run length and shape, from the environment:
//!
//! | variable | default | meaning |
//! |---|---|---|
//! | `NETTING_BENCH_SIDECARS` | `1000,10000` | sidecar counts to run, comma-separated |
//! | `NETTING_BENCH_WRITES` | 100 | sequential writes timed per count |
//! | `NETTING_BENCH_SERVICES` | 100 | services in the subscribed namespace |
//! | `NETTING_BENCH_ENDPOINTS` | 3 | endpoints per service |
//! | `NETTING_BENCH_STREAMS_PER_CONNECTION` | 100 | sidecar streams sharing one HTTP/2 connection |
//! | `NETTING_BENCH_FAILOVER` | `follower,leader` | which replica to kill, each on its own cluster; empty skips |
//! | `NETTING_BENCH_BACKOFF_MS` | 100 | reconnect jitter ceiling after a stream ends (the real client's minimum backoff) |
//! | `NETTING_BENCH_WRITE_GAP_MS` | 50 | idle time between timed writes |
//! | `NETTING_BENCH_NETTING_ARGS` | none | extra flags for every replica, space-separated |
//! | `NETTING_BENCH_PAUSE_SECS` | 0 | pause (printing the replicas' pids) before the sidecars connect and before the timed writes, to attach a profiler |
#![allow(clippy::unwrap_used, clippy::expect_used)]

// Modules live under benches/discovery/ with explicit paths: a plain benches/*.rs file would be
// picked up by cargo as a bench target of its own.
#[path = "discovery/fleet.rs"]
mod fleet;
#[path = "common/host.rs"]
mod host;
#[path = "discovery/machine.rs"]
mod machine;
#[path = "../tests/support/mod.rs"]
mod support;

use std::collections::BTreeMap;
use std::str::FromStr;
use std::time::{Duration, Instant};

use fleet::{Fleet, FleetOptions, Kind};
use machine::Machine;
use netting_proto::catalog::v1 as cpb;
use netting_proto::catalog::v1::catalog_client::CatalogClient;
use support::TestCluster;
use tonic::transport::Channel;

const REPLICAS: u64 = 3;
const NAMESPACE: &str = "default";
/// How long any one wait may take before the run gives up on it (and says so).
const PATIENCE: Duration = Duration::from_secs(60);
/// Idle time before reading memory, so start-up work (snapshots being encoded, buffers in
/// flight) is over.
const SETTLE: Duration = Duration::from_secs(3);

#[derive(Debug, Clone)]
struct Settings {
    sidecars: Vec<usize>,
    writes: usize,
    services: usize,
    endpoints: usize,
    streams_per_connection: usize,
    failovers: Vec<Role>,
    backoff: Duration,
    write_gap: Duration,
    pause: Duration,
    netting_args: Vec<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Role {
    Follower,
    Leader,
}

impl Role {
    fn as_str(self) -> &'static str {
        match self {
            Role::Follower => "follower",
            Role::Leader => "leader",
        }
    }
}

/// `name` parsed, or `default` when unset; a value that does not parse stops the run.
fn env_or<T: FromStr>(name: &str, default: T) -> T {
    match std::env::var(name) {
        Ok(v) if !v.trim().is_empty() => v
            .trim()
            .parse()
            .unwrap_or_else(|_| panic!("{name}={v:?} is not a valid value")),
        _ => default,
    }
}

impl Settings {
    fn from_env() -> Settings {
        let sidecars = std::env::var("NETTING_BENCH_SIDECARS")
            .unwrap_or_else(|_| "1000,10000".into())
            .split(',')
            .filter(|s| !s.trim().is_empty())
            .map(|s| {
                s.trim()
                    .parse()
                    .unwrap_or_else(|_| panic!("NETTING_BENCH_SIDECARS: {s:?} is not a count"))
            })
            .collect();
        let failovers = std::env::var("NETTING_BENCH_FAILOVER")
            .unwrap_or_else(|_| "follower,leader".into())
            .split(',')
            .filter(|s| !s.trim().is_empty())
            .map(|s| match s.trim() {
                "follower" => Role::Follower,
                "leader" => Role::Leader,
                other => panic!("NETTING_BENCH_FAILOVER: {other:?} is not follower or leader"),
            })
            .collect();
        let settings = Settings {
            sidecars,
            writes: env_or("NETTING_BENCH_WRITES", 100),
            services: env_or("NETTING_BENCH_SERVICES", 100),
            endpoints: env_or("NETTING_BENCH_ENDPOINTS", 3),
            streams_per_connection: env_or("NETTING_BENCH_STREAMS_PER_CONNECTION", 100),
            failovers,
            backoff: Duration::from_millis(env_or("NETTING_BENCH_BACKOFF_MS", 100)),
            write_gap: Duration::from_millis(env_or("NETTING_BENCH_WRITE_GAP_MS", 50)),
            pause: Duration::from_secs(env_or("NETTING_BENCH_PAUSE_SECS", 0)),
            netting_args: std::env::var("NETTING_BENCH_NETTING_ARGS")
                .unwrap_or_default()
                .split_whitespace()
                .map(str::to_owned)
                .collect(),
        };
        assert!(
            settings.writes > 0,
            "NETTING_BENCH_WRITES must be at least 1"
        );
        assert!(
            (1..=250).contains(&settings.endpoints),
            "NETTING_BENCH_ENDPOINTS must be 1 to 250"
        );
        assert!(
            settings.services > 0,
            "NETTING_BENCH_SERVICES must be at least 1"
        );
        settings
    }
}

/// Elapsed time since the start of the run, for progress lines.
fn stamp(start: Instant) -> String {
    format!("[{:>7.1}s]", start.elapsed().as_secs_f64())
}

fn ms(d: Duration) -> String {
    format!("{:.1}", d.as_secs_f64() * 1000.0)
}

/// Nearest-rank percentile of sorted values.
fn percentile(sorted: &[Duration], p: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    let rank = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

#[derive(Debug, Clone, Copy, Default)]
struct Summary {
    count: usize,
    p50: Duration,
    p99: Duration,
    max: Duration,
}

impl Summary {
    fn of(values: &[Duration]) -> Summary {
        let mut sorted = values.to_vec();
        sorted.sort();
        Summary {
            count: sorted.len(),
            p50: percentile(&sorted, 50.0),
            p99: percentile(&sorted, 99.0),
            max: sorted.last().copied().unwrap_or_default(),
        }
    }

    fn line(&self) -> String {
        format!(
            "p50 {} ms, p99 {} ms, max {} ms (n={})",
            ms(self.p50),
            ms(self.p99),
            ms(self.max),
            self.count
        )
    }
}

/// A catalog write: one endpoint of service `service`, in zone `zone` (changing the zone
/// changes what sidecars route by, so each such write is pushed).
fn endpoint_request(service: usize, endpoint: usize, zone: &str) -> cpb::RegisterRequest {
    let name = format!("svc-{service:03}");
    cpb::RegisterRequest {
        namespace: NAMESPACE.into(),
        service: name.clone(),
        endpoint: Some(cpb::Endpoint {
            address: format!(
                "10.{}.{}.{}",
                1 + service / 250,
                service % 250,
                10 + endpoint
            ),
            port: 8080,
            ready: true,
            zone: zone.into(),
            pod: format!("{name}-{endpoint}"),
            ..Default::default()
        }),
        ports: vec![cpb::ServicePort {
            name: "http".into(),
            port: 8080,
            protocol: "http".into(),
        }],
        labels: [("app".to_owned(), name)].into(),
        policy: Some(cpb::ServicePolicy {
            request_timeout_ms: 2_000,
            max_retries: 2,
            load_balancer: "round_robin".into(),
        }),
        request_id: None,
    }
}

fn catalog_client(addr: &str) -> CatalogClient<Channel> {
    CatalogClient::new(support::channel(addr))
}

/// Writes through `client`, retrying while the cluster has no leader; the version, and when the
/// write was acknowledged.
async fn write(client: &CatalogClient<Channel>, req: cpb::RegisterRequest) -> (u64, Instant) {
    let deadline = Instant::now() + PATIENCE;
    loop {
        let mut client = client.clone();
        match client.register(req.clone()).await {
            Ok(response) => return (response.into_inner().version, Instant::now()),
            Err(_) if Instant::now() < deadline => {
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
            Err(status) => panic!("write never succeeded: {status:?}"),
        }
    }
}

/// A fresh 3-replica cluster holding the catalog; its leader and catalog version.
async fn start_cluster(settings: &Settings, start: Instant) -> (TestCluster, u64, u64) {
    let args: Vec<&str> = settings.netting_args.iter().map(String::as_str).collect();
    let cluster = TestCluster::start(REPLICAS, &args).await;
    let leader = cluster.wait_settled().await;
    let client = catalog_client(&cluster.replica(leader).grpc);
    let requests: Vec<_> = (0..settings.services)
        .flat_map(|s| (0..settings.endpoints).map(move |e| (s, e)))
        .collect();
    let versions: Vec<u64> = {
        use futures::StreamExt as _;
        futures::stream::iter(requests)
            .map(|(s, e)| write(&client, endpoint_request(s, e, "zone-a")))
            .buffer_unordered(16)
            .map(|(version, _)| version)
            .collect()
            .await
    };
    let version = versions.into_iter().max().unwrap_or(0);
    cluster.wait_converged(version).await;
    println!(
        "{} cluster up: leader node {leader}, catalog {} services x {} endpoints at version {version}",
        stamp(start),
        settings.services,
        settings.endpoints
    );
    (cluster, leader, version)
}

fn rss_of(cluster: &TestCluster) -> Vec<Option<u64>> {
    cluster
        .replicas
        .iter()
        .map(|r| r.pid().and_then(machine::rss_kib))
        .collect()
}

/// Sessions each replica reports (its `netting_sessions_connected` gauge).
async fn sessions_of(cluster: &TestCluster) -> Vec<u64> {
    let mut out = Vec::new();
    for r in &cluster.replicas {
        let text = if r.is_running() {
            r.metrics().await
        } else {
            String::new()
        };
        out.push(support::metric_value(&text, "netting_sessions_connected") as u64);
    }
    out
}

fn fleet_options(settings: &Settings, sidecars: usize) -> FleetOptions {
    FleetOptions {
        sidecars,
        streams_per_connection: settings.streams_per_connection,
        opening_at_once: 512,
        backoff_min: settings.backoff,
        backoff_max: Duration::from_secs(5),
        namespace: NAMESPACE.into(),
    }
}

/// Connects a fleet and waits until every sidecar applied `version`.
async fn connect_fleet(
    cluster: &TestCluster,
    settings: &Settings,
    sidecars: usize,
    version: u64,
    start: Instant,
) -> (Fleet, Duration) {
    let addrs: Vec<String> = cluster.replicas.iter().map(|r| r.grpc.clone()).collect();
    let began = Instant::now();
    let fleet = Fleet::start(&addrs, &fleet_options(settings, sidecars));
    if !fleet.wait_all_at(version, PATIENCE * 3).await {
        panic!(
            "only {} of {sidecars} sidecars reached version {version}\n{}",
            fleet.at_least(version),
            cluster.logs()
        );
    }
    let took = began.elapsed();
    println!(
        "{} {sidecars} sidecars connected and at version {version} in {} ms ({} connections per replica, {} fds open here; snapshot {} bytes encoded)",
        stamp(start),
        ms(took),
        fleet.connections_per_replica,
        machine::open_fds(),
        fleet
            .snapshot_bytes
            .load(std::sync::atomic::Ordering::Relaxed)
    );
    (fleet, took)
}

#[derive(Debug, Clone, Default)]
struct Memory {
    before_kib: Vec<Option<u64>>,
    after_kib: Vec<Option<u64>>,
    after_writes_kib: Vec<Option<u64>>,
    sessions: Vec<u64>,
    bench_kib_per_sidecar: f64,
}

impl Memory {
    /// Bytes per session on replica `i`, from `after`.
    fn per_session(&self, i: usize, after: &[Option<u64>]) -> Option<f64> {
        let (before, after, sessions) = (self.before_kib[i]?, after[i]?, self.sessions[i]);
        (sessions > 0).then(|| (after as f64 - before as f64) * 1024.0 / sessions as f64)
    }

    fn overall(&self, after: &[Option<u64>]) -> Option<f64> {
        let mut grown = 0.0;
        for (before, after) in self.before_kib.iter().zip(after) {
            grown += (*after)? as f64 - (*before)? as f64;
        }
        let sessions: u64 = self.sessions.iter().sum();
        (sessions > 0).then(|| grown * 1024.0 / sessions as f64)
    }
}

#[derive(Debug, Clone, Default)]
struct Convergence {
    /// Per write: acknowledgement to the last sidecar's ACK.
    to_last: Vec<Duration>,
    /// Per write and sidecar: acknowledgement to that sidecar's ACK.
    per_sidecar: Vec<Duration>,
    /// Per replica, per write: acknowledgement to the last ACK of that replica's sidecars.
    by_replica: BTreeMap<usize, Vec<Duration>>,
    timeouts: usize,
    /// CPU time used during the timed writes: each replica, then this process (the sidecars).
    cpu: Vec<Option<Duration>>,
    /// The whole machine's CPU time during the timed writes, and how long they took.
    machine: machine::MachineCpu,
    wall: Duration,
}

impl Convergence {
    /// Cores busy on average during the timed writes: in all, outside the replicas and this
    /// process (other work sharing the machine), and stolen by the hypervisor.
    fn interference(&self) -> String {
        let wall = self.wall.as_secs_f64().max(1e-9);
        let ours: Duration = self.cpu.iter().flatten().sum();
        let others = self.machine.busy.saturating_sub(ours);
        format!(
            "{:.2} cores busy in all, {:.2} outside the replicas and the sidecars, {:.2} stolen",
            self.machine.busy.as_secs_f64() / wall,
            others.as_secs_f64() / wall,
            self.machine.steal.as_secs_f64() / wall
        )
    }
}

async fn measure_convergence(
    cluster: &TestCluster,
    leader: u64,
    fleet: &Fleet,
    settings: &Settings,
    start: Instant,
) -> Convergence {
    let client = catalog_client(&cluster.replica(leader).grpc);
    let all: Vec<usize> = (0..fleet.len()).collect();
    let homes: Vec<usize> = all
        .iter()
        .map(|&i| {
            fleet.sidecars[i]
                .replica
                .load(std::sync::atomic::Ordering::Acquire)
        })
        .collect();
    let mut result = Convergence::default();
    let cpu_before = cpu_of(cluster);
    let machine_before = machine::machine_cpu();
    let began = Instant::now();
    for w in 0..settings.writes {
        let req = endpoint_request(w % settings.services, 0, &format!("zone-w{w}"));
        let (version, acked) = write(&client, req).await;
        if !fleet.wait_all_at(version, PATIENCE).await {
            result.timeouts += 1;
            println!(
                "{} write {w}: only {} of {} sidecars reached version {version} within {PATIENCE:?}",
                stamp(start),
                fleet.at_least(version),
                fleet.len()
            );
            continue;
        }
        let reached = fleet.reached(version, &all);
        let mut last = Duration::ZERO;
        let mut last_by_replica: BTreeMap<usize, Duration> = BTreeMap::new();
        for (i, at) in reached.into_iter().enumerate() {
            let took = at
                .expect("every sidecar reached it")
                .saturating_duration_since(acked);
            result.per_sidecar.push(took);
            last = last.max(took);
            let slot = last_by_replica.entry(homes[i]).or_default();
            *slot = (*slot).max(took);
        }
        result.to_last.push(last);
        for (replica, took) in last_by_replica {
            result.by_replica.entry(replica).or_default().push(took);
        }
        if (w + 1) % 20 == 0 || w + 1 == settings.writes {
            println!(
                "{} {} of {} writes timed; last one reached all {} sidecars {} ms after its ACK",
                stamp(start),
                w + 1,
                settings.writes,
                fleet.len(),
                ms(last)
            );
        }
        tokio::time::sleep(settings.write_gap).await;
    }
    result.cpu = cpu_of(cluster)
        .into_iter()
        .zip(cpu_before)
        .map(|(after, before)| Some(after?.saturating_sub(before?)))
        .collect();
    let machine_after = machine::machine_cpu();
    result.machine = machine::MachineCpu {
        busy: machine_after.busy.saturating_sub(machine_before.busy),
        steal: machine_after.steal.saturating_sub(machine_before.steal),
    };
    result.wall = began.elapsed();
    result
}

/// Gives a profiler time to attach to the replicas, when asked to.
async fn pause(cluster: &TestCluster, settings: &Settings, before: &str, start: Instant) {
    if settings.pause.is_zero() {
        return;
    }
    let pids: Vec<Option<u32>> = cluster.replicas.iter().map(support::Replica::pid).collect();
    println!(
        "{} pausing {:?} before {before}; replica pids {pids:?}, this process {}",
        stamp(start),
        settings.pause,
        std::process::id()
    );
    tokio::time::sleep(settings.pause).await;
}

/// CPU time used so far by each replica, then by this process.
fn cpu_of(cluster: &TestCluster) -> Vec<Option<Duration>> {
    cluster
        .replicas
        .iter()
        .map(|r| r.pid().and_then(machine::cpu_time))
        .chain([machine::cpu_time(std::process::id())])
        .collect()
}

#[derive(Debug, Clone)]
struct Failover {
    role: Role,
    killed: u64,
    wrote_through: u64,
    /// Sidecars whose stream was to the killed replica.
    orphans: usize,
    kill_to_ack: Duration,
    ack_to_all: Option<Duration>,
    kill_to_all: Option<Duration>,
    /// Kill to the last orphan's first response on its new stream.
    kill_to_orphans_resynced: Option<Duration>,
    /// Kill to the last orphan at the write's version.
    kill_to_orphans_at_version: Option<Duration>,
    /// Of the orphans' first responses after the kill.
    resync_deltas: usize,
    resync_snapshots: usize,
    not_resynced: usize,
    /// Snapshots any sidecar received after the kill.
    snapshots_after_kill: usize,
    /// Where the orphans went.
    moved_to: BTreeMap<usize, usize>,
    not_converged: usize,
    sessions_after: Vec<u64>,
}

async fn measure_failover(
    cluster: &mut TestCluster,
    leader: u64,
    fleet: &Fleet,
    role: Role,
    start: Instant,
) -> Failover {
    let killed = match role {
        Role::Leader => leader,
        Role::Follower => (0..REPLICAS).find(|id| *id != leader).unwrap(),
    };
    // The write goes through a survivor: the leader when a follower dies, else the first
    // surviving follower (which waits for the new leader and forwards).
    let wrote_through = match role {
        Role::Follower => leader,
        Role::Leader => (0..REPLICAS).find(|id| *id != killed).unwrap(),
    };
    let client = catalog_client(&cluster.replica(wrote_through).grpc);
    // Open the connection now, so the write after the kill does not pay for it.
    {
        let mut warm = client.clone();
        let _ = warm.get_service(cpb::GetServiceRequest::default()).await;
    }
    let orphans = fleet.on_replica(killed as usize);
    let all: Vec<usize> = (0..fleet.len()).collect();
    println!(
        "{} killing {} node {killed} (kill -9), {} sidecars on it; writing through node {wrote_through}",
        stamp(start),
        role.as_str(),
        orphans.len()
    );
    let kill_at = Instant::now();
    cluster.replica_mut(killed).kill();
    let req = endpoint_request(1, 1, &format!("zone-failover-{}", role.as_str()));
    let (version, acked) = write(&client, req).await;
    let converged = fleet.wait_all_at(version, PATIENCE).await;
    let not_converged = fleet.len() - fleet.at_least(version);
    if !converged {
        println!(
            "{} only {} of {} sidecars reached version {version} within {PATIENCE:?}",
            stamp(start),
            fleet.at_least(version),
            fleet.len()
        );
    }
    let reached_all = fleet.reached(version, &all);
    let last_all = reached_all.iter().copied().collect::<Option<Vec<_>>>();
    let last_all = last_all.and_then(|v| v.into_iter().max());
    let orphans_at_version = fleet
        .reached(version, &orphans)
        .into_iter()
        .collect::<Option<Vec<_>>>()
        .and_then(|v| v.into_iter().max());
    let firsts = fleet.first_after(kill_at, &orphans);
    let resync_deltas = firsts
        .iter()
        .filter(|f| f.is_some_and(|a| a.kind == Kind::Delta))
        .count();
    let resync_snapshots = firsts
        .iter()
        .filter(|f| f.is_some_and(|a| a.kind == Kind::Snapshot))
        .count();
    let not_resynced = firsts.iter().filter(|f| f.is_none()).count();
    let mut moved_to = BTreeMap::new();
    for a in firsts.iter().flatten() {
        *moved_to.entry(a.replica).or_default() += 1;
    }
    let kill_to_orphans_resynced = if not_resynced == 0 {
        firsts
            .iter()
            .flatten()
            .map(|a| a.at.saturating_duration_since(kill_at))
            .max()
    } else {
        None
    };
    // Let the survivors' gauges catch up with the sessions that moved.
    tokio::time::sleep(Duration::from_millis(500)).await;
    Failover {
        role,
        killed,
        wrote_through,
        orphans: orphans.len(),
        kill_to_ack: acked.saturating_duration_since(kill_at),
        ack_to_all: last_all.map(|t| t.saturating_duration_since(acked)),
        kill_to_all: last_all.map(|t| t.saturating_duration_since(kill_at)),
        kill_to_orphans_resynced,
        kill_to_orphans_at_version: orphans_at_version
            .map(|t| t.saturating_duration_since(kill_at)),
        resync_deltas,
        resync_snapshots,
        not_resynced,
        snapshots_after_kill: fleet.snapshots_after(kill_at, &all),
        moved_to,
        not_converged,
        sessions_after: sessions_of(cluster).await,
    }
}

fn print_failover(f: &Failover, start: Instant) {
    let opt =
        |d: Option<Duration>| d.map_or_else(|| "never".to_owned(), |d| format!("{} ms", ms(d)));
    println!(
        "{} {} kill: write acknowledged {} ms after the kill; all sidecars at its version {} after the ACK, {} after the kill",
        stamp(start),
        f.role.as_str(),
        ms(f.kill_to_ack),
        opt(f.ack_to_all),
        opt(f.kill_to_all)
    );
    println!(
        "{}   node {}'s {} sidecars: last resynced {} after the kill, last at the new version {} after the kill; first response after reconnecting: {} delta, {} snapshot, {} not reconnected; moved to {:?}; snapshots sent to anyone after the kill: {}; sessions per replica now {:?}",
        stamp(start),
        f.killed,
        f.orphans,
        opt(f.kill_to_orphans_resynced),
        opt(f.kill_to_orphans_at_version),
        f.resync_deltas,
        f.resync_snapshots,
        f.not_resynced,
        f.moved_to,
        f.snapshots_after_kill,
        f.sessions_after
    );
}

#[derive(Debug, Clone)]
struct RunResult {
    sidecars: usize,
    connections_per_replica: usize,
    connect_time: Duration,
    memory: Memory,
    convergence: Convergence,
    failovers: Vec<Failover>,
    regressions: u64,
}

/// Everything for one sidecar count: a cluster for memory, convergence and the first failover,
/// and a fresh one for each further failover (a killed replica would otherwise skew the next).
async fn run_count(settings: &Settings, sidecars: usize, start: Instant) -> RunResult {
    println!("\n{} === {sidecars} sidecars ===", stamp(start));
    let (mut cluster, leader, version) = start_cluster(settings, start).await;
    tokio::time::sleep(SETTLE).await;
    pause(&cluster, settings, "the sidecars connect", start).await;
    let bench_before = machine::rss_kib(std::process::id()).unwrap_or(0);
    let before_kib = rss_of(&cluster);
    let (fleet, connect_time) = connect_fleet(&cluster, settings, sidecars, version, start).await;
    tokio::time::sleep(SETTLE).await;
    let after_kib = rss_of(&cluster);
    let sessions = sessions_of(&cluster).await;
    let bench_after = machine::rss_kib(std::process::id()).unwrap_or(0);
    let mut memory = Memory {
        before_kib,
        after_kib,
        after_writes_kib: Vec::new(),
        sessions,
        bench_kib_per_sidecar: (bench_after as f64 - bench_before as f64) / sidecars as f64,
    };
    println!(
        "{} RSS KiB before {:?}, after {:?}, sessions {:?}",
        stamp(start),
        memory.before_kib,
        memory.after_kib,
        memory.sessions
    );

    pause(&cluster, settings, "the timed writes", start).await;
    let convergence = measure_convergence(&cluster, leader, &fleet, settings, start).await;
    memory.after_writes_kib = rss_of(&cluster);
    println!(
        "{} write ACK -> last sidecar ACK: {}; CPU per write (ms): {}; machine during the writes: {}",
        stamp(start),
        Summary::of(&convergence.to_last).line(),
        cpu_line(&convergence),
        convergence.interference()
    );

    let mut failovers = Vec::new();
    let mut roles = settings.failovers.iter().copied();
    if let Some(role) = roles.next() {
        let f = measure_failover(&mut cluster, leader, &fleet, role, start).await;
        print_failover(&f, start);
        failovers.push(f);
    }
    let connections_per_replica = fleet.connections_per_replica;
    let mut regressions = fleet.regressions();
    // Gone before the next cluster starts: two at once would share the two cores.
    drop(fleet);
    drop(cluster);
    for role in roles {
        let (mut cluster, leader, version) = start_cluster(settings, start).await;
        let (fleet, _) = connect_fleet(&cluster, settings, sidecars, version, start).await;
        // The same state before the kill as on the first cluster: sidecars that have applied
        // deltas, not only their first snapshot.
        let warm = Settings {
            writes: 5,
            ..settings.clone()
        };
        measure_convergence(&cluster, leader, &fleet, &warm, start).await;
        let f = measure_failover(&mut cluster, leader, &fleet, role, start).await;
        print_failover(&f, start);
        failovers.push(f);
        regressions += fleet.regressions();
    }
    RunResult {
        sidecars,
        connections_per_replica,
        connect_time,
        memory,
        convergence,
        failovers,
        regressions,
    }
}

/// CPU time per timed write of each replica and of the simulated sidecars (which include the
/// idle gaps between writes, where almost nothing runs).
fn cpu_line(c: &Convergence) -> String {
    let writes = c.to_last.len().max(1) as f64;
    let names = (0..c.cpu.len().saturating_sub(1))
        .map(|i| format!("node {i}"))
        .chain(["sidecars".to_owned()]);
    names
        .zip(&c.cpu)
        .map(|(name, cpu)| {
            cpu.map_or_else(
                || format!("{name} ?"),
                |d| format!("{name} {:.1}", d.as_secs_f64() * 1000.0 / writes),
            )
        })
        .collect::<Vec<_>>()
        .join(", ")
}

fn kib(bytes: Option<f64>) -> String {
    bytes.map_or_else(|| "?".into(), |b| format!("{:.1}", b / 1024.0))
}

fn print_results(settings: &Settings, machine: &Machine, results: &[RunResult]) {
    println!("\n## Results\n");
    println!(
        "3 replicas and the sidecars on one machine ({} cores, {}); catalog {} services x {} endpoints in one namespace, every sidecar subscribed to it; {} sidecar streams per HTTP/2 connection; writes through the leader, {} ms apart.\n",
        machine.host.cores,
        machine.host.cpu,
        settings.services,
        settings.endpoints,
        settings.streams_per_connection,
        settings.write_gap.as_millis()
    );
    println!(
        "| sidecars | writes | write ACK -> last sidecar ACK p50 / p99 / max (ms) | per sidecar p50 / p99 (ms) | by replica p99 (ms) | CPU per write (ms) | connecting all (ms) |"
    );
    println!("|---:|---:|---|---|---|---|---:|");
    for r in results {
        let c = &r.convergence;
        let last = Summary::of(&c.to_last);
        let each = Summary::of(&c.per_sidecar);
        let by_replica: Vec<String> = c
            .by_replica
            .iter()
            .map(|(id, v)| format!("node {id}: {}", ms(Summary::of(v).p99)))
            .collect();
        println!(
            "| {} | {}{} | {} / {} / {} | {} / {} | {} | {} | {} ({} connections per replica) |",
            r.sidecars,
            last.count,
            if c.timeouts > 0 {
                format!(" ({} timed out)", c.timeouts)
            } else {
                String::new()
            },
            ms(last.p50),
            ms(last.p99),
            ms(last.max),
            ms(each.p50),
            ms(each.p99),
            by_replica.join(", "),
            cpu_line(c),
            ms(r.connect_time),
            r.connections_per_replica
        );
    }
    for r in results {
        println!(
            "\n{} sidecars, machine during the timed writes: {}",
            r.sidecars,
            r.convergence.interference()
        );
    }
    println!(
        "\n| sidecars | killed | sidecars on it | kill -> write ACK (ms) | write ACK -> all at version (ms) | kill -> its sidecars resynced (ms) | kill -> its sidecars at version (ms) | resync delta / snapshot / none | snapshots after kill |"
    );
    println!("|---:|---|---:|---:|---:|---:|---:|---|---:|");
    let opt = |d: Option<Duration>| d.map_or_else(|| "never".to_owned(), ms);
    for r in results {
        for f in &r.failovers {
            println!(
                "| {} | {} (node {}), write via node {} | {} | {} | {}{} | {} | {} | {} / {} / {} | {} |",
                r.sidecars,
                f.role.as_str(),
                f.killed,
                f.wrote_through,
                f.orphans,
                ms(f.kill_to_ack),
                opt(f.ack_to_all),
                if f.not_converged > 0 {
                    format!(" ({} never)", f.not_converged)
                } else {
                    String::new()
                },
                opt(f.kill_to_orphans_resynced),
                opt(f.kill_to_orphans_at_version),
                f.resync_deltas,
                f.resync_snapshots,
                f.not_resynced,
                f.snapshots_after_kill
            );
        }
    }
    println!(
        "\n| sidecars | sessions per replica | RSS growth per session, per replica (KiB) | overall (KiB) | overall after the writes (KiB) | bench process per sidecar (KiB) |"
    );
    println!("|---:|---|---|---:|---:|---:|");
    for r in results {
        let m = &r.memory;
        let per: Vec<String> = (0..m.sessions.len())
            .map(|i| kib(m.per_session(i, &m.after_kib)))
            .collect();
        println!(
            "| {} | {:?} | {} | {} | {} | {:.1} |",
            r.sidecars,
            m.sessions,
            per.join(" / "),
            kib(m.overall(&m.after_kib)),
            kib(m.overall(&m.after_writes_kib)),
            m.bench_kib_per_sidecar
        );
    }
    let regressions: u64 = results.iter().map(|r| r.regressions).sum();
    println!("\nresponses older than one already applied (never backwards): {regressions}");

    println!("\n## Goals\n");
    let largest = results.iter().max_by_key(|r| r.sidecars);
    if let Some(r) = largest {
        let p99 = Summary::of(&r.convergence.to_last).p99;
        let met = p99 < Duration::from_millis(200);
        println!(
            "- converge 10,000 sidecars, p99 < 200 ms: {} sidecars, p99 {} ms -> {}",
            r.sidecars,
            ms(p99),
            verdict(met, r.sidecars < 10_000)
        );
        for f in &r.failovers {
            let within = f
                .kill_to_orphans_at_version
                .is_some_and(|d| d < Duration::from_secs(1));
            let by_delta = f.resync_snapshots == 0 && f.not_resynced == 0;
            println!(
                "- {} killed: its {} sidecars at the new version within 1 s, by delta: {} after the kill, {} delta / {} snapshot -> {}",
                f.role.as_str(),
                f.orphans,
                f.kill_to_orphans_at_version
                    .map_or_else(|| "never".to_owned(), |d| format!("{} ms", ms(d))),
                f.resync_deltas,
                f.resync_snapshots,
                verdict(within && by_delta, r.sidecars < 10_000)
            );
        }
        let overall = r.memory.overall(&r.memory.after_kib);
        let met = overall.is_some_and(|b| b < 8.0 * 1024.0);
        println!(
            "- under 8 KiB of control-plane memory per session: {} KiB -> {}",
            kib(overall),
            verdict(met, false)
        );
    }
}

/// Whether a goal is met; `partial` when the run was smaller than the goal's size, so the
/// answer is only about that smaller size.
fn verdict(met: bool, partial: bool) -> &'static str {
    match (met, partial) {
        (true, false) => "met",
        (false, false) => "NOT met",
        (true, true) => "met at this size only (the goal is for 10,000)",
        (false, true) => "NOT met even at this size",
    }
}

fn main() {
    let settings = Settings::from_env();
    let machine = Machine::describe();
    let start = Instant::now();
    println!("# Config distribution benchmark\n");
    println!(
        "machine: {} cores ({}), {} memory, kernel {}, {} ; open files limit {}",
        machine.host.cores,
        machine.host.cpu,
        machine.host.memory,
        machine.host.kernel,
        machine.host.date,
        machine.fd_limit
    );
    println!("load average before: {}", machine::load_average());
    println!(
        "busiest processes before (pid %cpu rss comm): {:?}",
        machine::busiest_processes(5)
    );
    println!("settings: {settings:?}");
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    let results = runtime.block_on(async {
        let mut results = Vec::new();
        for &n in &settings.sidecars {
            results.push(run_count(&settings, n, start).await);
        }
        results
    });
    println!(
        "\n{} done; load average after: {}",
        stamp(start),
        machine::load_average()
    );
    println!(
        "busiest processes after (pid %cpu rss comm): {:?}",
        machine::busiest_processes(5)
    );
    print_results(&settings, &machine, &results);
}
