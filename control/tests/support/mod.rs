//! Shared helpers for tests that run real `netting-control` processes on loopback.
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used, unreachable_pub)]

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

pub mod sidecar;

use netting_proto::catalog::v1 as pb;
use netting_proto::catalog::v1::catalog_client::CatalogClient;
use netting_proto::catalog::v1::cluster_client::ClusterClient;
use tonic::transport::Channel;

pub const BIN: &str = env!("CARGO_BIN_EXE_netting-control");

/// How long a condition may take before a test gives up. Generous: the suite runs on a busy
/// 2-core machine, and the tests wait on conditions, never on fixed delays.
pub const PATIENCE: Duration = Duration::from_secs(60);

/// A free loopback port, chosen by the kernel.
/// `n` distinct free loopback ports. All are held bound until every one is chosen: ports
/// picked one at a time can come back twice, and two replicas would then fight over one.
pub fn free_ports(n: usize) -> Vec<u16> {
    let listeners: Vec<TcpListener> = (0..n)
        .map(|_| TcpListener::bind("127.0.0.1:0").unwrap())
        .collect();
    listeners
        .iter()
        .map(|l| l.local_addr().unwrap().port())
        .collect()
}

pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// One replica process and how to start it again.
pub struct Replica {
    pub id: u64,
    pub grpc: String,
    pub admin: String,
    pub data_dir: PathBuf,
    pub log: PathBuf,
    pub extra_args: Vec<String>,
    /// Environment variables for the process, after the defaults.
    pub extra_env: Vec<(String, String)>,
    peers: String,
    child: Option<Child>,
}

impl Replica {
    pub fn command(&self) -> Command {
        let mut cmd = Command::new(BIN);
        cmd.arg("run")
            .args(["--node-id", &self.id.to_string()])
            .arg("--data-dir")
            .arg(&self.data_dir)
            .args(["--grpc-listen", &self.grpc])
            .args(["--admin-listen", &self.admin])
            .args(["--peer", &self.peers])
            .args(&self.extra_args)
            .env("NETTING_LOG", "info,openraft=warn")
            // What a log redirected to a file gets on its own, without the usual opt-out.
            .env_remove("NO_COLOR")
            .envs(self.extra_env.iter().map(|(k, v)| (k, v)))
            .stdin(Stdio::null());
        cmd
    }

    pub fn start(&mut self) {
        assert!(self.child.is_none(), "replica {} already running", self.id);
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log)
            .unwrap();
        let child = self
            .command()
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .unwrap();
        self.child = Some(child);
    }

    /// `kill -9`: no chance to flush or say goodbye.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    pub fn is_running(&self) -> bool {
        self.child.is_some()
    }

    pub fn wipe(&self) {
        let _ = std::fs::remove_dir_all(&self.data_dir);
    }

    pub async fn catalog(&self) -> CatalogClient<Channel> {
        CatalogClient::new(channel(&self.grpc))
    }

    pub async fn cluster(&self) -> ClusterClient<Channel> {
        ClusterClient::new(channel(&self.grpc))
    }

    pub async fn status(&self) -> Option<pb::StatusResponse> {
        let mut client = self.cluster().await;
        let mut req = tonic::Request::new(pb::StatusRequest {});
        req.set_timeout(Duration::from_secs(2));
        client
            .status(req)
            .await
            .ok()
            .map(tonic::Response::into_inner)
    }

    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// The admin `/metrics` text.
    pub async fn metrics(&self) -> String {
        http_get(&self.admin, "/metrics").await.unwrap_or_default()
    }
}

impl Drop for Replica {
    fn drop(&mut self) {
        self.kill();
    }
}

pub fn channel(addr: &str) -> Channel {
    tonic::transport::Endpoint::from_shared(format!("http://{addr}"))
        .unwrap()
        .connect_timeout(Duration::from_secs(1))
        .timeout(Duration::from_secs(10))
        .connect_lazy()
}

/// A minimal HTTP/1.0 GET, enough for the admin endpoints.
pub async fn http_get(addr: &str, path: &str) -> Option<String> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut stream = tokio::net::TcpStream::connect(addr).await.ok()?;
    let request = format!("GET {path} HTTP/1.0\r\nHost: {addr}\r\n\r\n");
    stream.write_all(request.as_bytes()).await.ok()?;
    let mut body = String::new();
    stream.read_to_string(&mut body).await.ok()?;
    Some(body)
}

/// A cluster of replica processes on loopback, with data under one temporary directory.
pub struct TestCluster {
    pub dir: tempfile::TempDir,
    pub replicas: Vec<Replica>,
}

impl TestCluster {
    pub async fn start(size: u64, extra_args: &[&str]) -> TestCluster {
        let cluster = Self::new(size, extra_args);
        let mut cluster = cluster;
        for r in &mut cluster.replicas {
            r.start();
        }
        cluster.wait_for_leader().await;
        cluster
    }

    pub fn new(size: u64, extra_args: &[&str]) -> TestCluster {
        let dir = tempfile::tempdir().unwrap();
        let ports = free_ports(2 * size as usize);
        let addrs: Vec<(String, String)> = ports
            .chunks(2)
            .map(|pair| {
                (
                    format!("127.0.0.1:{}", pair[0]),
                    format!("127.0.0.1:{}", pair[1]),
                )
            })
            .collect();
        let peers = addrs
            .iter()
            .enumerate()
            .map(|(i, (grpc, _))| format!("{i}={grpc}"))
            .collect::<Vec<_>>()
            .join(",");
        let replicas = addrs
            .into_iter()
            .enumerate()
            .map(|(i, (grpc, admin))| Replica {
                id: i as u64,
                grpc,
                admin,
                data_dir: dir.path().join(format!("node-{i}")),
                log: dir.path().join(format!("node-{i}.log")),
                extra_args: extra_args.iter().map(|s| (*s).to_owned()).collect(),
                extra_env: Vec::new(),
                peers: peers.clone(),
                child: None,
            })
            .collect();
        TestCluster { dir, replicas }
    }

    /// Waits until every running replica reports the same leader, which is a voter.
    pub async fn wait_for_leader(&self) -> u64 {
        let found = wait_until(PATIENCE, || async {
            let leaders = self.leaders().await;
            let first = leaders.first().copied().flatten()?;
            leaders.iter().all(|l| *l == Some(first)).then_some(first)
        })
        .await;
        match found {
            Some(leader) => leader,
            None => panic!(
                "no agreed leader; replicas report {:?}\n{}",
                self.leaders().await,
                self.logs()
            ),
        }
    }

    /// Waits until every running replica agrees on a leader other than `old`.
    pub async fn wait_for_new_leader(&self, old: u64) -> u64 {
        let found = wait_until(PATIENCE, || async {
            let leaders = self.leaders().await;
            let first = leaders.first().copied().flatten()?;
            (first != old && leaders.iter().all(|l| *l == Some(first))).then_some(first)
        })
        .await;
        found.unwrap_or_else(|| panic!("no new leader after {old}\n{}", self.logs()))
    }

    /// The leader each running replica reports.
    pub async fn leaders(&self) -> Vec<Option<u64>> {
        let mut leaders = Vec::new();
        for r in self.replicas.iter().filter(|r| r.is_running()) {
            leaders.push(r.status().await.and_then(|s| s.leader_id));
        }
        leaders
    }

    /// Adds (without starting) one more replica that knows every existing one as a peer, as a
    /// StatefulSet scaled up would.
    pub fn add_replica(&mut self) -> u64 {
        let id = self.replicas.len() as u64;
        // Not a port of a replica that is down for now and will come back on it.
        let taken: Vec<String> = self
            .replicas
            .iter()
            .flat_map(|r| [r.grpc.clone(), r.admin.clone()])
            .collect();
        let (grpc, admin) = loop {
            let ports = free_ports(2);
            let pair = (
                format!("127.0.0.1:{}", ports[0]),
                format!("127.0.0.1:{}", ports[1]),
            );
            if !taken.contains(&pair.0) && !taken.contains(&pair.1) {
                break pair;
            }
        };
        let mut peers: Vec<String> = self
            .replicas
            .iter()
            .map(|r| format!("{}={}", r.id, r.grpc))
            .collect();
        peers.push(format!("{id}={grpc}"));
        let extra_args = self
            .replicas
            .first()
            .map(|r| r.extra_args.clone())
            .unwrap_or_default();
        self.replicas.push(Replica {
            id,
            grpc,
            admin,
            data_dir: self.dir.path().join(format!("node-{id}")),
            log: self.dir.path().join(format!("node-{id}.log")),
            extra_args,
            extra_env: Vec::new(),
            peers: peers.join(","),
            child: None,
        });
        id
    }

    pub fn replica(&self, id: u64) -> &Replica {
        &self.replicas[id as usize]
    }

    pub fn replica_mut(&mut self, id: u64) -> &mut Replica {
        &mut self.replicas[id as usize]
    }

    /// Waits until every running replica has applied the same catalog version, at least `min`.
    pub async fn wait_converged(&self, min: u64) -> u64 {
        let found = wait_until(PATIENCE, || async {
            let mut versions = Vec::new();
            for r in self.replicas.iter().filter(|r| r.is_running()) {
                versions.push(r.status().await.map(|s| s.catalog_version));
            }
            let first = versions.first().copied().flatten()?;
            (first >= min && versions.iter().all(|v| *v == Some(first))).then_some(first)
        })
        .await;
        found.unwrap_or_else(|| {
            panic!(
                "replicas did not converge to version >= {min}\n{}",
                self.logs()
            )
        })
    }

    pub fn logs(&self) -> String {
        self.replicas
            .iter()
            .map(|r| {
                let text = r.log_text();
                let tail: Vec<&str> = text.lines().rev().take(30).collect();
                let tail: Vec<&str> = tail.into_iter().rev().collect();
                let panics: Vec<&str> = text
                    .lines()
                    .filter(|l| l.contains("panicked"))
                    .take(3)
                    .collect();
                format!(
                    "--- node {} log (panics, tail) ---\n{}\n{}",
                    r.id,
                    panics.join("\n"),
                    tail.join("\n")
                )
            })
            .collect::<Vec<_>>()
            .join("\n")
    }
}

/// Polls `check` until it returns `Some`, or gives up after `patience`.
pub async fn wait_until<T, F, Fut>(patience: Duration, mut check: F) -> Option<T>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let deadline = Instant::now() + patience;
    loop {
        if let Some(value) = check().await {
            return Some(value);
        }
        if Instant::now() > deadline {
            return None;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

pub fn register_request(service: &str, last_octet: u8) -> pb::RegisterRequest {
    pb::RegisterRequest {
        namespace: "default".into(),
        service: service.into(),
        endpoint: Some(pb::Endpoint {
            address: format!("10.0.0.{last_octet}"),
            port: 8080,
            ready: true,
            ..Default::default()
        }),
        ..Default::default()
    }
}

/// Registers through `replica`, retrying while the cluster has no leader. Returns the version.
pub async fn register_retrying(replica: &Replica, req: pb::RegisterRequest) -> u64 {
    let last_error = std::sync::Mutex::new(None);
    let result = wait_until(PATIENCE, || {
        let req = req.clone();
        let last_error = &last_error;
        async move {
            let mut client = replica.catalog().await;
            match client.register(req).await {
                Ok(r) => Some(r.into_inner().version),
                Err(status) => {
                    *last_error.lock().unwrap() = Some(status);
                    None
                }
            }
        }
    })
    .await;
    result.unwrap_or_else(|| {
        panic!(
            "register through node {} never succeeded; last error {:?}\n{}",
            replica.id,
            last_error.lock().unwrap(),
            replica.log_text()
        )
    })
}

/// Services known to `replica`, read locally.
pub async fn local_services(replica: &Replica) -> Vec<pb::Service> {
    let mut client = replica.catalog().await;
    let req = pb::ListServicesRequest {
        namespace: String::new(),
        consistency: pb::Consistency::Local as i32,
    };
    client
        .list_services(req)
        .await
        .map(|r| r.into_inner().services)
        .unwrap_or_default()
}

pub fn files_digest(dir: &Path) -> Vec<(PathBuf, Vec<u8>)> {
    let mut out = Vec::new();
    if let Ok(entries) = std::fs::read_dir(dir) {
        for entry in entries.flatten() {
            let path = entry.path();
            if path.is_file() {
                out.push((path.clone(), std::fs::read(&path).unwrap_or_default()));
            }
        }
    }
    out.sort();
    out
}

/// The `nettingctl` binary of this build.
pub const CTL: &str = env!("CARGO_BIN_EXE_nettingctl");

/// How long a process that must refuse to start may take to exit by itself.
pub const EXIT_PATIENCE: Duration = Duration::from_secs(30);

/// Runs `cmd` to completion like [`Command::output`], but fails the test if the process is
/// still running after `limit` (it is killed first, so no process outlives the test).
pub fn output_within(mut cmd: Command, limit: Duration) -> std::process::Output {
    use std::io::Read;
    let mut child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // Drain both pipes on their own threads, so a chatty process never blocks on a full pipe.
    let drain = |pipe: Option<Box<dyn Read + Send>>| {
        std::thread::spawn(move || {
            let mut bytes = Vec::new();
            if let Some(mut pipe) = pipe {
                let _ = pipe.read_to_end(&mut bytes);
            }
            bytes
        })
    };
    let stdout = drain(
        child
            .stdout
            .take()
            .map(|p| Box::new(p) as Box<dyn Read + Send>),
    );
    let stderr = drain(
        child
            .stderr
            .take()
            .map(|p| Box::new(p) as Box<dyn Read + Send>),
    );
    let deadline = Instant::now() + limit;
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            let stderr = String::from_utf8_lossy(&stderr.join().unwrap_or_default()).into_owned();
            panic!("{cmd:?} was still running after {limit:?}; stderr:\n{stderr}");
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    std::process::Output {
        status,
        stdout: stdout.join().unwrap(),
        stderr: stderr.join().unwrap(),
    }
}

/// The value of an unlabelled Prometheus metric (the sum over its series if it has labels);
/// 0 when the metric is absent, as a counter never incremented is.
pub fn metric_value(text: &str, name: &str) -> f64 {
    text.lines()
        .filter(|line| !line.starts_with('#'))
        .filter(|line| {
            line.strip_prefix(name)
                .is_some_and(|rest| rest.starts_with(' ') || rest.starts_with('{'))
        })
        .filter_map(|line| line.split_whitespace().last()?.parse::<f64>().ok())
        .sum()
}

/// Sum of the series of `name` whose labels include `label` (e.g. `reason="ack_timeout"`).
pub fn labelled_metric(text: &str, name: &str, label: &str) -> f64 {
    text.lines()
        .filter(|line| !line.starts_with('#'))
        .filter(|line| {
            line.strip_prefix(name)
                .is_some_and(|rest| rest.starts_with('{'))
        })
        .filter(|line| {
            line.split_once('}')
                .is_some_and(|(labels, _)| labels.contains(label))
        })
        .filter_map(|line| line.split_whitespace().last()?.parse::<f64>().ok())
        .sum()
}

/// Whether `pid` names a live process (a zombie is not: it has exited).
pub fn pid_alive(pid: u32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        // The state follows the command name, which is in parentheses and may hold spaces.
        Ok(stat) => stat
            .rsplit_once(')')
            .and_then(|(_, rest)| rest.split_whitespace().next())
            .is_some_and(|state| state != "Z" && state != "X"),
        Err(_) => false,
    }
}

/// Sends SIGTERM to `pid`.
pub fn sigterm(pid: u32) {
    use nix::sys::signal::{Signal, kill};
    use nix::unistd::Pid;
    let _ = kill(Pid::from_raw(i32::try_from(pid).unwrap()), Signal::SIGTERM);
}

/// Waits up to `limit` for `child` to exit by itself; kills it and fails the test otherwise.
pub fn wait_exit(child: &mut Child, limit: Duration) -> std::process::ExitStatus {
    let deadline = Instant::now() + limit;
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            return status;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("process {} did not exit within {limit:?}", child.id());
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// A base port such that `base..base + n` are all free on loopback right now. Chosen at random
/// below the kernel's ephemeral range, so outgoing connections of other tests never take them.
pub fn free_port_block(n: u16) -> u16 {
    use rand::Rng;
    let mut rng = rand::rng();
    for _ in 0..1_000 {
        let base: u16 = rng.random_range(20_000..32_000);
        let free = (base..base + n).all(|port| TcpListener::bind(("127.0.0.1", port)).is_ok());
        if free {
            return base;
        }
    }
    panic!("no block of {n} free ports found");
}

/// The first line of an HTTP answer says 200.
pub fn is_http_ok(answer: &str) -> bool {
    answer
        .lines()
        .next()
        .is_some_and(|status| status.split_whitespace().nth(1) == Some("200"))
}

impl Replica {
    /// Asks the replica to stop (SIGTERM) and waits until it has, so its storage is closed
    /// cleanly. Fails the test if it does not exit by itself within [`EXIT_PATIENCE`].
    pub fn terminate(&mut self) -> std::process::ExitStatus {
        let mut child = self.child.take().expect("replica is not running");
        sigterm(child.id());
        wait_exit(&mut child, EXIT_PATIENCE)
    }
}

impl TestCluster {
    /// Waits until the cluster has fixed its id (the first entry a new cluster's leader
    /// writes) and every running replica applied it, so nothing else writes on its own.
    /// Returns the leader.
    pub async fn wait_settled(&self) -> u64 {
        let leader = self.wait_for_leader().await;
        let fixed = wait_until(PATIENCE, || async {
            let status = self.replica(leader).status().await?;
            (!status.cluster_id.is_empty()).then_some(status.catalog_version)
        })
        .await;
        let version = fixed.unwrap_or_else(|| panic!("no cluster id was fixed\n{}", self.logs()));
        self.wait_converged(version).await;
        leader
    }
}

impl Replica {
    /// The process id while the replica runs, e.g. to read its memory from `/proc`.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }
}
