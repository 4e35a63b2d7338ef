//! netting-proxy next to haproxy and nginx, on the same machine in the same run.
//!
//! `cargo bench -p netting-proxy --bench compare` (as root) builds a lab of three network
//! namespaces (netting-chaos's lab): a control-plane replica, a client pod and a backend pod.
//! The backend (a small hyper server in this process, one thread, `200 ok`) listens on 8080
//! and 8081 in its pod. In the client pod, `netting-init --proxy-uid 1337
//! --exclude-outbound-ports 8081` redirects outbound TCP to a release `netting-proxy` running
//! as uid 1337, to which the catalog gives `bench/backend` = backend:8080 (HTTP). So the same
//! backend is reached four ways from the client pod, each crossing the same veth hop:
//!
//! | target | the client dials | path |
//! |---|---|---|
//! | direct | backend:8081 | excluded port, no proxy |
//! | netting-proxy | backend:8080 | redirected by iptables to the proxy's outbound listener, which finds the service by the original destination and proxies HTTP over its own keep-alive connections |
//! | haproxy | 127.0.0.1:18081 | `mode http`, `http-reuse always`, to backend:8081 |
//! | nginx | 127.0.0.1:18082 | `proxy_pass` to an upstream with `keepalive 64`, to backend:8081 |
//!
//! For each target, in one run:
//!
//! - **latency at a fixed rate**: `NETTING_BENCH_RATE` requests/s (1000) for
//!   `NETTING_BENCH_SECONDS` (15) in all, over `NETTING_BENCH_CONNECTIONS` (16) keep-alive
//!   connections, with the constant-rate generator of `compare/load.rs` (wrk cannot hold a
//!   rate; see there). The time is split into `NETTING_BENCH_ROUNDS` (3) rounds that visit the
//!   targets in turn, each segment after `NETTING_BENCH_WARMUP_SECONDS` (2) of unmeasured
//!   warm-up on fresh connections. *Added* latency is the target's percentile minus the
//!   direct path's. The proxy's CPU time over these phases gives its share of a core at that
//!   rate.
//! - **saturation**: `wrk -t1 -c<NETTING_BENCH_WRK_CONNECTIONS (16)>
//!   -d<NETTING_BENCH_SATURATION_SECONDS (10)>s --latency`; requests/s, and requests per CPU
//!   second of the proxy (`utime + stime` of its processes from `/proc/<pid>/stat`, across the
//!   run).
//! - **memory**: `VmRSS` of the proxy's processes when started and idle (before any load), and
//!   the highest value sampled every 100 ms under saturation.
//!
//! Run without `--bench` (as `cargo test --all-targets` does), it is a smoke run: 2 s at the
//! fixed rate in one round, 1 s of saturation, unless the variables say otherwise.
//!
//! `NETTING_BENCH_TARGETS` (`direct,netting,haproxy,nginx`) selects targets; haproxy and nginx
//! are skipped with a note when not installed (Debian packages `haproxy`, `nginx`; `wrk` is
//! required). `NETTING_BENCH_KEEP=1` keeps the logs and configs. Not root: prints why and does
//! nothing. The table is printed in Markdown for BENCHMARKS.md, with the machine and how busy
//! it was before the bench started (other load skews the tails most); netting-proxy's
//! `/metrics` at the end is saved as `proxy-metrics.txt` beside the logs.

#![allow(clippy::unwrap_used, clippy::expect_used)]

#[path = "../tests/support/mesh/binaries.rs"]
#[allow(dead_code)]
mod binaries;
#[path = "compare/configs.rs"]
mod configs;
#[path = "compare/load.rs"]
mod load;
#[path = "../tests/support/mesh/netns.rs"]
mod netns;
#[path = "compare/procs.rs"]
mod procs;
#[path = "compare/wrk.rs"]
mod wrk;

use std::convert::Infallible;
use std::fmt::Write as _;
use std::net::{Ipv4Addr, SocketAddr};
use std::path::Path;
use std::process::{Command, ExitCode};
use std::str::FromStr;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use bytes::Bytes;
use http::{Request, Response};
use http_body_util::{BodyExt, Empty, Full};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use netting_chaos::lab::preflight::locate;
use netting_chaos::lab::{Network, ReplicaProcess, preflight};
use netting_proto::catalog::v1 as pb;
use netting_proto::catalog::v1::catalog_client::CatalogClient;
use tokio::net::TcpListener;

use binaries::{PROXY_UID, runnable_by_others};
use load::{RateRun, RateSpec};
use wrk::Saturation;

const CONTROL_NS: usize = 0;
const CLIENT_NS: usize = 1;
const BACKEND_NS: usize = 2;
const MESH_PORT: u16 = 8080;
const DIRECT_PORT: u16 = 8081;
const HAPROXY_PORT: u16 = 18081;
const NGINX_PORT: u16 = 18082;
const ADMIN_PORT: u16 = 15020;
const PATIENCE: Duration = Duration::from_secs(60);

#[derive(Debug, Clone)]
struct Settings {
    rate: u32,
    seconds: u64,
    rounds: u32,
    warmup: u64,
    connections: usize,
    wrk_connections: usize,
    saturation_seconds: u64,
    targets: Vec<String>,
    keep: bool,
    /// Not run by `cargo bench`: a short check that the bench works.
    smoke: bool,
}

fn env_or<T: FromStr>(name: &str, default: T) -> T {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

impl Settings {
    /// From the environment; `smoke` (not run by `cargo bench`) shortens the defaults.
    fn from_env(smoke: bool) -> Settings {
        let long = |bench: u64, quick: u64| if smoke { quick } else { bench };
        Settings {
            rate: env_or("NETTING_BENCH_RATE", 1000),
            seconds: env_or("NETTING_BENCH_SECONDS", long(15, 2)),
            rounds: env_or("NETTING_BENCH_ROUNDS", long(3, 1) as u32).max(1),
            warmup: env_or("NETTING_BENCH_WARMUP_SECONDS", long(2, 1)),
            connections: env_or("NETTING_BENCH_CONNECTIONS", 16),
            wrk_connections: env_or("NETTING_BENCH_WRK_CONNECTIONS", 16),
            saturation_seconds: env_or("NETTING_BENCH_SATURATION_SECONDS", long(10, 1)),
            targets: std::env::var("NETTING_BENCH_TARGETS")
                .unwrap_or_else(|_| "direct,netting,haproxy,nginx".to_owned())
                .split(',')
                .map(|t| t.trim().to_owned())
                .filter(|t| !t.is_empty())
                .collect(),
            keep: env_or::<u8>("NETTING_BENCH_KEEP", 0) == 1,
            smoke,
        }
    }
}

fn main() -> ExitCode {
    // `cargo bench` passes `--bench`; without it (`cargo test --all-targets`) this is a smoke
    // run of a few seconds that checks the bench still works.
    let smoke = !std::env::args().any(|a| a == "--bench");
    let settings = Settings::from_env(smoke);
    let dir = match tempfile::Builder::new().prefix("netting-bench-").tempdir() {
        Ok(dir) => dir,
        Err(error) => {
            eprintln!("bench compare: cannot make a temporary directory: {error}");
            return ExitCode::FAILURE;
        }
    };
    let result = run(&settings, dir.path());
    // Logs and configs stay for a failed run, and when asked for.
    if result.is_err() || settings.keep {
        eprintln!("logs and configs kept in {}", dir.keep().display());
    }
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("bench compare: {error:#}");
            ExitCode::FAILURE
        }
    }
}

/// One way to the backend.
#[derive(Debug)]
struct Target {
    name: String,
    addr: SocketAddr,
    /// The proxy's process (its children count too); `None` for the direct path.
    pid: Option<u32>,
    rss_idle: u64,
    rate: Option<RateRun>,
    /// CPU time the proxy used during the fixed-rate phases, and their wall-clock length.
    rate_cpu: Duration,
    rate_wall: Duration,
    saturation: Option<Saturation>,
}

fn run(settings: &Settings, dir: &Path) -> anyhow::Result<()> {
    let Some(tools) = preflight::tools_or_skip("bench compare") else {
        return Ok(());
    };
    let Some(wrk) = locate("wrk") else {
        if settings.smoke {
            eprintln!("skipping the bench's smoke run: `wrk` is not installed");
            return Ok(());
        }
        bail!("`wrk` not found: install the Debian package wrk");
    };
    let wanted = |name: &str| settings.targets.iter().any(|t| t == name);
    let mut notes = Vec::new();
    let haproxy = if wanted("haproxy") {
        let found = locate("haproxy");
        if found.is_none() {
            notes.push("haproxy skipped: not installed (Debian package haproxy)".to_owned());
        }
        found
    } else {
        None
    };
    let nginx = if wanted("nginx") {
        let found = locate("nginx");
        if found.is_none() {
            notes.push("nginx skipped: not installed (Debian package nginx)".to_owned());
        }
        found
    } else {
        None
    };

    let machine_busy = busy_cores(Duration::from_secs(1));
    let started = now_utc();
    let load_before = std::fs::read_to_string("/proc/loadavg").unwrap_or_default();

    let bins = binaries::binaries()?;
    let proxy_bin = runnable_by_others(&bins.proxy, dir)?;
    if let Err(error) = netting_chaos::lab::sweep_stale() {
        eprintln!("sweeping stale labs failed: {error}");
    }
    let network = Network::create(&tools, 3).context("creating the lab")?;
    let client_ns = network.namespace(CLIENT_NS).to_owned();
    let backend_ip = network.replica_addr(BACKEND_NS);
    let client_ip = network.replica_addr(CLIENT_NS);
    eprintln!(
        "lab {} up: client {client_ip}, backend {backend_ip}",
        network.id()
    );

    // The backend: its own runtime and thread, so its CPU is never the proxy's.
    let backend_rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .thread_name("backend")
        .enable_all()
        .build()?;
    {
        let _inside = backend_rt.enter();
        for port in [MESH_PORT, DIRECT_PORT] {
            let listener = netns::listen(
                network.namespace(BACKEND_NS),
                SocketAddr::from(([0, 0, 0, 0], port)),
            )?;
            backend_rt.spawn(serve_backend(listener));
        }
    }
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;

    // Control plane, catalog.
    let control_addr = SocketAddr::from((network.replica_addr(CONTROL_NS), 7100));
    let _control = ReplicaProcess::start(
        network.namespace(CONTROL_NS),
        &bins.control,
        [
            "run".to_owned(),
            "--node-id".to_owned(),
            "1".to_owned(),
            "--data-dir".to_owned(),
            dir.join("control-data").display().to_string(),
            "--grpc-listen".to_owned(),
            control_addr.to_string(),
            "--admin-listen".to_owned(),
            SocketAddr::from((network.replica_addr(CONTROL_NS), 7190)).to_string(),
            "--peer".to_owned(),
            format!("1={control_addr}"),
        ],
        dir.join("control.log"),
        &[("NETTING_LOG", "warn")],
    )?;
    let backend_mesh = SocketAddr::from((backend_ip, MESH_PORT));
    rt.block_on(register(control_addr, backend_mesh))?;

    // The client pod: redirection, then the proxy as uid 1337.
    let output = network
        .command_in(CLIENT_NS, &bins.init)
        .args([
            "--proxy-uid",
            &PROXY_UID.to_string(),
            "--exclude-inbound-ports",
            &ADMIN_PORT.to_string(),
            "--exclude-outbound-ports",
            &DIRECT_PORT.to_string(),
        ])
        .output()?;
    if !output.status.success() {
        bail!(
            "netting-init failed: {}",
            String::from_utf8_lossy(&output.stderr)
        );
    }
    let id = PROXY_UID.to_string();
    let proxy = ReplicaProcess::start(
        &client_ns,
        &bins.setpriv,
        [
            format!("--reuid={id}"),
            format!("--regid={id}"),
            "--clear-groups".to_owned(),
            "--inh-caps=-all".to_owned(),
            proxy_bin.display().to_string(),
            "--control-plane".to_owned(),
            control_addr.to_string(),
            "--pod".to_owned(),
            "client".to_owned(),
            "--namespace".to_owned(),
            "bench".to_owned(),
        ],
        dir.join("proxy.log"),
        &[("NETTING_LOG", "warn")],
    )?;
    let admin = SocketAddr::from((client_ip, ADMIN_PORT));
    rt.block_on(wait_for("netting-proxy to route bench/backend", || async {
        let config = get_text(&None, admin, "/config").await?;
        config.contains(&backend_mesh.to_string()).then_some(())
    }))?;

    let mut targets = Vec::new();
    if wanted("direct") {
        targets.push(Target::new(
            "direct",
            SocketAddr::from((backend_ip, DIRECT_PORT)),
            None,
        ));
    }
    if wanted("netting") {
        targets.push(Target::new(
            "netting-proxy",
            backend_mesh,
            Some(proxy.pid()),
        ));
    }
    let backend_direct = SocketAddr::from((backend_ip, DIRECT_PORT));
    let mut others = Vec::new();
    if let Some(haproxy) = &haproxy {
        let listen = SocketAddr::from((Ipv4Addr::LOCALHOST, HAPROXY_PORT));
        let config = dir.join("haproxy.cfg");
        std::fs::write(&config, configs::haproxy(listen, backend_direct))?;
        let process = ReplicaProcess::start(
            &client_ns,
            haproxy,
            [OsArg::from("-db"), "-f".into(), config.into_os_string()],
            dir.join("haproxy.log"),
            &[],
        )?;
        targets.push(Target::new(
            &version_of(haproxy, "haproxy"),
            listen,
            Some(process.pid()),
        ));
        others.push(process);
    }
    if let Some(nginx) = &nginx {
        let listen = SocketAddr::from((Ipv4Addr::LOCALHOST, NGINX_PORT));
        let config = dir.join("nginx.conf");
        std::fs::write(&config, configs::nginx(listen, backend_direct, dir))?;
        let process = ReplicaProcess::start(
            &client_ns,
            nginx,
            [
                OsArg::from("-e"),
                dir.join("nginx-startup.log").into_os_string(),
                "-p".into(),
                dir.as_os_str().to_owned(),
                "-c".into(),
                config.into_os_string(),
            ],
            dir.join("nginx.log"),
            &[],
        )?;
        targets.push(Target::new(
            &version_of(nginx, "nginx"),
            listen,
            Some(process.pid()),
        ));
        others.push(process);
    }

    // Every path answers before anything is measured; idle memory is read then.
    for target in &targets {
        let addr = target.addr;
        let answered = rt.block_on(wait_for(&format!("{} to answer", target.name), || async {
            get_text(&Some(client_ns.clone()), addr, "/").await
        }));
        if let Err(error) = answered {
            bail!("{error}; logs in {}", dir.display());
        }
    }
    std::thread::sleep(Duration::from_millis(500));
    for target in &mut targets {
        target.rss_idle = target.pid.map_or(0, |pid| procs::rss(&procs::tree(pid)));
    }

    // The fixed-rate phases in rounds, each target in turn, so that a noisy moment of the
    // machine is shared out rather than landing on one target.
    let segment = Duration::from_secs(settings.seconds).div_f64(settings.rounds as f64);
    let ticks = procs::clock_ticks();
    for round in 1..=settings.rounds {
        for target in &mut targets {
            eprintln!(
                "round {round}/{}: {} at {} req/s for {segment:?} ...",
                settings.rounds, target.name, settings.rate
            );
            let spec = RateSpec {
                namespace: client_ns.clone(),
                target: target.addr,
                rate: settings.rate,
                connections: settings.connections,
                warmup: Duration::from_secs(settings.warmup),
                duration: segment,
            };
            let pids = target.pid.map(procs::tree).unwrap_or_default();
            let (cpu_before, wall_before) = (procs::cpu(&pids, ticks), Instant::now());
            let run = rt.block_on(load::constant_rate(&spec))?;
            target.rate_cpu += procs::cpu(&pids, ticks).saturating_sub(cpu_before);
            target.rate_wall += wall_before.elapsed();
            match &mut target.rate {
                Some(total) => total.merge(run),
                None => target.rate = Some(run),
            }
        }
    }
    // Saturation after every fixed-rate phase, so no latency figure follows a saturation run.
    for target in &mut targets {
        eprintln!(
            "{}: wrk for {} s ...",
            target.name, settings.saturation_seconds
        );
        target.saturation = Some(wrk::saturate(
            &tools.ip,
            &client_ns,
            &wrk,
            &format!("http://{}/", target.addr),
            settings.wrk_connections,
            settings.saturation_seconds,
            target.pid,
        )?);
    }

    // The proxy must have handled the traffic as HTTP requests of the service, or its row
    // measures something else.
    let metrics = rt
        .block_on(get_text(&None, admin, "/metrics"))
        .unwrap_or_default();
    let _ = std::fs::write(dir.join("proxy-metrics.txt"), &metrics);
    let counted = counter_sum(
        &metrics,
        "netting_proxy_requests_total",
        "service=\"bench/backend\"",
    );
    if let Some(target) = targets.iter().find(|t| t.name == "netting-proxy") {
        let sent = target.rate.as_ref().map_or(0, |r| r.latencies.len() as u64)
            + target.saturation.as_ref().map_or(0, |s| s.wrk.requests);
        notes.push(format!(
            "netting-proxy counted {counted:.0} HTTP requests to bench/backend (at least {sent} were sent through it)"
        ));
    }

    let load_after = std::fs::read_to_string("/proc/loadavg").unwrap_or_default();
    println!(
        "{}",
        report(
            settings,
            &targets,
            &started,
            machine_busy,
            &load_before,
            &load_after,
            &notes
        )
    );

    drop(others);
    drop(proxy);
    drop(backend_rt);
    Ok(())
}

type OsArg = std::ffi::OsString;

impl Target {
    fn new(name: &str, addr: SocketAddr, pid: Option<u32>) -> Target {
        Target {
            name: name.to_owned(),
            addr,
            pid,
            rss_idle: 0,
            rate_cpu: Duration::ZERO,
            rate_wall: Duration::ZERO,
            rate: None,
            saturation: None,
        }
    }
}

/// `haproxy 2.6.12`, `nginx 1.22.1`: the program and its version, as the row's name.
fn version_of(program: &Path, name: &str) -> String {
    let Ok(output) = Command::new(program).arg("-v").output() else {
        return name.to_owned();
    };
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    let version = text
        .split(|c: char| c.is_whitespace() || c == '/')
        .find(|w| w.chars().next().is_some_and(|c| c.is_ascii_digit()) && w.contains('.'))
        // `2.6.12-1+deb12u4` → `2.6.12`
        .map(|w| w.split(['-', '+', '~']).next().unwrap_or(w).to_owned());
    match version {
        Some(version) => format!("{name} {version}"),
        None => name.to_owned(),
    }
}

async fn serve_backend(listener: TcpListener) {
    loop {
        let Ok((stream, _)) = listener.accept().await else {
            tokio::time::sleep(Duration::from_millis(10)).await;
            continue;
        };
        let _ = stream.set_nodelay(true);
        tokio::spawn(async move {
            let service = service_fn(|_request: Request<Incoming>| async {
                Ok::<_, Infallible>(Response::new(Full::new(Bytes::from_static(b"ok\n"))))
            });
            let _ = hyper::server::conn::http1::Builder::new()
                .serve_connection(TokioIo::new(stream), service)
                .await;
        });
    }
}

async fn register(control: SocketAddr, endpoint: SocketAddr) -> anyhow::Result<()> {
    let channel = tonic::transport::Endpoint::from_shared(format!("http://{control}"))?
        .connect_timeout(Duration::from_secs(2))
        .timeout(Duration::from_secs(10))
        .connect_lazy();
    let request = pb::RegisterRequest {
        namespace: "bench".to_owned(),
        service: "backend".to_owned(),
        endpoint: Some(pb::Endpoint {
            address: endpoint.ip().to_string(),
            port: u32::from(endpoint.port()),
            ready: true,
            ..Default::default()
        }),
        ports: vec![pb::ServicePort {
            name: "http".to_owned(),
            port: u32::from(endpoint.port()),
            protocol: "http".to_owned(),
        }],
        ..Default::default()
    };
    let last = std::cell::RefCell::new(String::new());
    wait_for("the control plane to accept the registration", || {
        let channel = channel.clone();
        let request = request.clone();
        let last = &last;
        async move {
            match CatalogClient::new(channel).register(request).await {
                Ok(_) => Some(()),
                Err(status) => {
                    *last.borrow_mut() = status.to_string();
                    None
                }
            }
        }
    })
    .await
    .with_context(|| format!("last error: {}", last.borrow()))
}

/// `GET path` from `namespace` (the host's when `None`): the body of a 2xx answer.
async fn get_text(namespace: &Option<String>, addr: SocketAddr, path: &str) -> Option<String> {
    let socket = match namespace {
        Some(ns) => netns::socket(ns).ok()?,
        None => tokio::net::TcpSocket::new_v4().ok()?,
    };
    let exchange = async {
        let stream = socket.connect(addr).await.ok()?;
        let (mut sender, connection) =
            hyper::client::conn::http1::handshake::<_, Empty<Bytes>>(TokioIo::new(stream))
                .await
                .ok()?;
        tokio::spawn(connection);
        let request = Request::get(path)
            .header(http::header::HOST, addr.to_string())
            .body(Empty::new())
            .ok()?;
        let response = sender.send_request(request).await.ok()?;
        if !response.status().is_success() {
            return None;
        }
        let body = response.into_body().collect().await.ok()?.to_bytes();
        Some(String::from_utf8_lossy(&body).into_owned())
    };
    tokio::time::timeout(Duration::from_secs(5), exchange)
        .await
        .ok()
        .flatten()
}

async fn wait_for<T, F, Fut>(what: &str, mut check: F) -> anyhow::Result<T>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let deadline = Instant::now() + PATIENCE;
    loop {
        if let Some(value) = check().await {
            return Ok(value);
        }
        if Instant::now() > deadline {
            bail!("timed out after {PATIENCE:?} waiting for {what}");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// The sum of the series of `name` whose label set contains `label` (`key="value"`).
fn counter_sum(metrics: &str, name: &str, label: &str) -> f64 {
    metrics
        .lines()
        .filter(|l| l.starts_with(name) && l[name.len()..].starts_with('{') && l.contains(label))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

/// How many cores the machine kept busy over `window` (from `/proc/stat`), before the bench
/// starts anything: tells a quiet machine from a shared one.
fn busy_cores(window: Duration) -> f64 {
    fn sample() -> Option<(u64, u64)> {
        let stat = std::fs::read_to_string("/proc/stat").ok()?;
        let line = stat.lines().next()?;
        let values: Vec<u64> = line
            .split_whitespace()
            .skip(1)
            .filter_map(|v| v.parse().ok())
            .collect();
        let total: u64 = values.iter().sum();
        // idle + iowait
        let idle = values.get(3)? + values.get(4).copied().unwrap_or(0);
        Some((total, idle))
    }
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get()) as f64;
    let Some((total_a, idle_a)) = sample() else {
        return f64::NAN;
    };
    std::thread::sleep(window);
    let Some((total_b, idle_b)) = sample() else {
        return f64::NAN;
    };
    let total = total_b.saturating_sub(total_a).max(1) as f64;
    let idle = idle_b.saturating_sub(idle_a) as f64;
    cores * (1.0 - idle / total)
}

fn now_utc() -> String {
    Command::new("date")
        .args(["-u", "+%Y-%m-%d %H:%M:%S UTC"])
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_owned())
        .unwrap_or_default()
}

fn machine() -> String {
    let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    let model = cpuinfo
        .lines()
        .find_map(|l| {
            l.strip_prefix("model name")?
                .split_once(':')
                .map(|(_, m)| m.trim().to_owned())
        })
        .unwrap_or_else(|| "unknown CPU".to_owned());
    let cores = std::thread::available_parallelism().map_or(0, |n| n.get());
    let meminfo = std::fs::read_to_string("/proc/meminfo").unwrap_or_default();
    let mem_gib = meminfo
        .lines()
        .find_map(|l| {
            l.strip_prefix("MemTotal:")?
                .split_whitespace()
                .next()?
                .parse::<f64>()
                .ok()
        })
        .map_or(0.0, |kib| kib / 1024.0 / 1024.0);
    let kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default();
    format!(
        "{cores} cores ({model}), {mem_gib:.1} GiB, Linux {}",
        kernel.trim()
    )
}

fn micros(d: Duration) -> String {
    format!("{:.0}", d.as_secs_f64() * 1e6)
}

fn signed_micros(a: Duration, b: Duration) -> String {
    format!("{:+.0}", (a.as_secs_f64() - b.as_secs_f64()) * 1e6)
}

fn mib(bytes: u64) -> String {
    format!("{:.1}", bytes as f64 / 1024.0 / 1024.0)
}

fn report(
    settings: &Settings,
    targets: &[Target],
    started: &str,
    machine_busy: f64,
    load_before: &str,
    load_after: &str,
    notes: &[String],
) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "\n## netting-proxy next to haproxy and nginx ({started})\n"
    );
    let _ = writeln!(out, "Machine: {}.", machine());
    let _ = writeln!(
        out,
        "Busy cores before the bench started: {machine_busy:.2}; load average before: {}; after: {}.",
        load_before
            .split_whitespace()
            .take(3)
            .collect::<Vec<_>>()
            .join(" "),
        load_after
            .split_whitespace()
            .take(3)
            .collect::<Vec<_>>()
            .join(" ")
    );
    let _ = writeln!(
        out,
        "Fixed rate: {} req/s for {} s per target in {} rounds (each after {} s warm-up) over {} \
         keep-alive connections, constant-rate generator. Saturation: wrk -t1 -c{} -d{}s.\n",
        settings.rate,
        settings.seconds,
        settings.rounds,
        settings.warmup,
        settings.connections,
        settings.wrk_connections,
        settings.saturation_seconds
    );
    let _ = writeln!(
        out,
        "| target | p50 (µs) | p99 (µs) | p99.9 (µs) | added p50 (µs) | added p99 (µs) | errors / late | proxy CPU at the fixed rate (% of a core) | saturation req/s | saturation p50 / p99 (µs) | proxy CPU (s) | req per CPU-second | RSS idle (MiB) | RSS under load (MiB) |"
    );
    let _ = writeln!(
        out,
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"
    );
    let direct = targets
        .iter()
        .find(|t| t.name == "direct")
        .and_then(|t| t.rate.as_ref());
    for t in targets {
        let Some(rate) = &t.rate else { continue };
        let (p50, p99, p999) = (
            rate.quantile(0.5),
            rate.quantile(0.99),
            rate.quantile(0.999),
        );
        let (added50, added99) = match (direct, t.pid) {
            (Some(d), Some(_)) => (
                signed_micros(p50, d.quantile(0.5)),
                signed_micros(p99, d.quantile(0.99)),
            ),
            _ => ("".to_owned(), "".to_owned()),
        };
        let sat = t.saturation.clone().unwrap_or_default();
        let at_rate = if t.pid.is_some() && !t.rate_wall.is_zero() {
            format!(
                "{:.1}",
                100.0 * t.rate_cpu.as_secs_f64() / t.rate_wall.as_secs_f64()
            )
        } else {
            String::new()
        };
        let (cpu, per_cpu, idle, loaded) = if t.pid.is_some() {
            let per_cpu = if sat.cpu.is_zero() {
                "n/a".to_owned()
            } else {
                format!("{:.0}", sat.wrk.requests as f64 / sat.cpu.as_secs_f64())
            };
            (
                format!("{:.2}", sat.cpu.as_secs_f64()),
                per_cpu,
                mib(t.rss_idle),
                mib(sat.rss_max),
            )
        } else {
            ("".to_owned(), "".to_owned(), "".to_owned(), "".to_owned())
        };
        let _ = writeln!(
            out,
            "| {} | {} | {} | {} | {added50} | {added99} | {} / {} | {at_rate} | {:.0} | {} / {} | {cpu} | {per_cpu} | {idle} | {loaded} |",
            t.name,
            micros(p50),
            micros(p99),
            micros(p999),
            rate.errors,
            rate.late,
            sat.wrk.requests_per_second,
            micros(sat.wrk.p50),
            micros(sat.wrk.p99),
        );
    }
    for t in targets {
        if let Some(sat) = &t.saturation
            && !sat.wrk.problems.is_empty()
        {
            let _ = writeln!(
                out,
                "\nwrk against {}: {}",
                t.name,
                sat.wrk.problems.join("; ")
            );
        }
    }
    let _ = writeln!(out);
    for note in notes {
        let _ = writeln!(out, "- {note}");
    }
    let _ = writeln!(
        out,
        "- added = the target's percentile minus the direct path's; req per CPU-second = \
         requests wrk completed / CPU seconds the proxy's processes used during that run; RSS \
         of nginx sums master and workers."
    );
    out.push_str(&goals(targets));
    out
}

/// The goals netting-proxy is measured against (BENCHMARKS.md), met or not in this run.
fn goals(targets: &[Target]) -> String {
    let find = |prefix: &str| targets.iter().find(|t| t.name.starts_with(prefix));
    let p99 = |t: &Target| t.rate.as_ref().map(|r| r.quantile(0.99));
    let mut out = String::from("\n| goal | measured | status |\n|---|---|---|\n");
    let direct = find("direct").and_then(p99);
    if let (Some(direct), Some(netting), Some(haproxy)) = (
        direct,
        find("netting-proxy").and_then(p99),
        find("haproxy").and_then(p99),
    ) {
        let ours = netting.as_secs_f64() - direct.as_secs_f64();
        let theirs = haproxy.as_secs_f64() - direct.as_secs_f64();
        let _ = writeln!(
            out,
            "| added p99 below haproxy's | {:+.0} µs vs {:+.0} µs | {} |",
            ours * 1e6,
            theirs * 1e6,
            if ours < theirs { "met" } else { "**not met**" }
        );
    }
    if let Some(netting) = find("netting-proxy") {
        let _ = writeln!(
            out,
            "| RSS idle under 8 MiB | {} MiB | {} |",
            mib(netting.rss_idle),
            if netting.rss_idle < 8 * 1024 * 1024 {
                "met"
            } else {
                "**not met**"
            }
        );
    }
    out
}
