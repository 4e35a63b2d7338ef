//! A small mesh in network namespaces: one control-plane replica and three pods.
//!
//! ```text
//!   host (this test process, root namespace): registers endpoints, reads admin ports
//!     │ lab bridge (netting_chaos::lab::Network, one /24)
//!     ├── <lab>-0  control   netting-control (one replica)            :7100 gRPC
//!     ├── <lab>-1  pod a     app + netting-init rules + netting-proxy  the caller
//!     ├── <lab>-2  pod b1    app + netting-init rules + netting-proxy  serves shop/b ...
//!     └── <lab>-3  pod b2    app + netting-init rules + netting-proxy  serves shop/b ...
//! ```
//!
//! Every pod is set up as the injector would: its applications listen on 0.0.0.0, `netting-init
//! --proxy-uid 1337 --exclude-inbound-ports 15020 --exclude-outbound-ports 9100` redirects its
//! TCP, and `netting-proxy` runs as uid 1337 without capabilities (`setpriv`), with the default
//! ports (outbound 15001, inbound 15006, admin 15020). The applications are tasks of the test
//! process whose sockets were created inside the pod's namespace (see [`super::netns`]), so
//! they are in the pod as far as the kernel is concerned.
//!
//! The catalog (namespace `shop`), registered before the proxies start:
//!
//! | service | port | protocol | endpoints |
//! |---------|------|----------|-----------|
//! | b       | 8080 | http     | b1, b2    |
//! | echo    | 9000 | tcp      | b1, b2    |
//! | direct  | 9100 | http     | b1, b2    |
//!
//! Port 9100 is excluded from outbound redirection, so calls to `direct` must bypass the proxy.
//!
//! Each test owns its lab: names carry the test process's pid and a letter per test, so labs of
//! one process (`cargo test`) or of many (`nextest`) never meet. Dropping the lab kills its
//! processes and deletes its namespaces, also when the test panics; it then prints the tail of
//! every process's log.

use std::future::Future;
use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4};
use std::path::PathBuf;
use std::sync::Once;
use std::time::{Duration, Instant};

use http::StatusCode;
use netting_chaos::lab::{Network, ReplicaProcess, RunId, preflight};
use netting_proto::catalog::v1 as pb;
use netting_proto::catalog::v1::catalog_client::CatalogClient;
use tokio::net::TcpSocket;
use tokio::task::JoinHandle;

use super::apps;
use super::binaries::{Binaries, PROXY_UID, binaries, runnable_by_others};
use super::client::{self, Reply};
use super::netns;
use super::prom::Scrape;

/// The Kubernetes-style namespace of every service and pod.
pub(crate) const NAMESPACE: &str = "shop";
/// `shop/b`'s HTTP port.
pub(crate) const HTTP_PORT: u16 = 8080;
/// `shop/echo`'s port: a server-speaks-first TCP protocol.
pub(crate) const ECHO_PORT: u16 = 9000;
/// `shop/direct`'s port, excluded from outbound redirection in every pod.
pub(crate) const EXCLUDED_PORT: u16 = 9100;
/// The proxies' admin port, excluded from inbound redirection.
pub(crate) const ADMIN_PORT: u16 = 15020;
const CONTROL_GRPC_PORT: u16 = 7100;
const CONTROL_ADMIN_PORT: u16 = 7190;

/// How long a condition may take to come true: generous, the suite shares 2 cores.
pub(crate) const PATIENCE: Duration = Duration::from_secs(60);

/// How long the applications take to answer an HTTP request. Longer than the balancer's
/// default estimate for an endpoint it has not measured (10 ms), so that requests overlap and
/// a measured endpoint soon looks dearer than the other: both endpoints get traffic.
const APP_DELAY: Duration = Duration::from_millis(20);

/// The pods, by their namespace index in the lab.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(crate) enum Pod {
    A,
    B1,
    B2,
}

impl Pod {
    pub(crate) const ALL: [Pod; 3] = [Pod::A, Pod::B1, Pod::B2];

    /// The pod's name (what its applications report).
    pub(crate) fn name(self) -> &'static str {
        match self {
            Pod::A => "a",
            Pod::B1 => "b1",
            Pod::B2 => "b2",
        }
    }

    fn index(self) -> usize {
        match self {
            Pod::A => 1,
            Pod::B1 => 2,
            Pod::B2 => 3,
        }
    }
}

/// The catalog every lab starts with: (service, port, protocol), each on b1 and b2.
const SERVICES: [(&str, u16, &str); 3] = [
    ("b", HTTP_PORT, "http"),
    ("echo", ECHO_PORT, "tcp"),
    ("direct", EXCLUDED_PORT, "http"),
];

/// `shop/<name>`: a service's name as the proxy's metrics and config show it.
pub(crate) fn service(name: &str) -> String {
    format!("{NAMESPACE}/{name}")
}

/// The arguments every pod's netting-init gets.
pub(crate) fn init_args() -> Vec<String> {
    vec![
        "--proxy-uid".to_owned(),
        PROXY_UID.to_string(),
        "--exclude-inbound-ports".to_owned(),
        ADMIN_PORT.to_string(),
        "--exclude-outbound-ports".to_owned(),
        EXCLUDED_PORT.to_string(),
    ]
}

/// The network namespaces and tools of a lab test, or `None` (after saying why) when the test
/// cannot run here. Sweeps labs that killed test processes left behind, once per process.
pub(crate) fn network(test: &str, tag: char, namespaces: usize) -> Option<Network> {
    let tools = preflight::tools_or_skip(test)?;
    static SWEEP: Once = Once::new();
    SWEEP.call_once(|| {
        if let Err(error) = netting_chaos::lab::sweep_stale() {
            eprintln!("{test}: sweeping stale labs failed: {error}");
        }
    });
    let id = RunId::new(std::process::id(), Some(tag)).expect("a lowercase tag");
    Some(Network::create_with_id(&tools, id, namespaces).expect("creating the lab network"))
}

/// The running mesh of one test. Field order is teardown order.
#[derive(Debug)]
pub(crate) struct MeshLab {
    proxies: Vec<(Pod, ReplicaProcess)>,
    control: ReplicaProcess,
    apps: Vec<JoinHandle<()>>,
    network: Network,
    dir: tempfile::TempDir,
    binaries: Binaries,
}

impl MeshLab {
    /// Builds the lab (see the module doc) and waits until every proxy is ready and pod a's
    /// proxy routes every service of the catalog to both of its endpoints. `None` when the test
    /// cannot run here (it has said why; with `NETTING_REQUIRE_TOOLS=1` it panics instead).
    pub(crate) async fn start(test: &str, tag: char) -> Option<MeshLab> {
        let network = network(test, tag, 4)?;
        let binaries = match binaries() {
            Ok(binaries) => binaries,
            Err(error) => panic!("{test}: {error:#}"),
        };
        let dir = tempfile::tempdir().expect("a temporary directory");
        let proxy_bin = runnable_by_others(&binaries.proxy, dir.path())
            .expect("a proxy binary uid 1337 can run");

        let control_addr = SocketAddr::from((network.replica_addr(0), CONTROL_GRPC_PORT));
        let control = ReplicaProcess::start(
            network.namespace(0),
            &binaries.control,
            [
                "run".to_owned(),
                "--node-id".to_owned(),
                "1".to_owned(),
                "--data-dir".to_owned(),
                dir.path().join("control-data").display().to_string(),
                "--grpc-listen".to_owned(),
                control_addr.to_string(),
                "--admin-listen".to_owned(),
                SocketAddr::from((network.replica_addr(0), CONTROL_ADMIN_PORT)).to_string(),
                "--peer".to_owned(),
                format!("1={control_addr}"),
            ],
            dir.path().join("control.log"),
            &[("NETTING_LOG", "info,openraft=warn")],
        )
        .expect("starting netting-control");

        let mut lab = MeshLab {
            proxies: Vec::new(),
            control,
            apps: Vec::new(),
            network,
            dir,
            binaries,
        };

        // The catalog first: a proxy is ready only once it has a config with a version.
        for (name, port, protocol) in SERVICES {
            for pod in [Pod::B1, Pod::B2] {
                lab.register(name, lab.addr(pod, port), protocol).await;
            }
        }

        for pod in Pod::ALL {
            lab.start_apps(pod);
            lab.apply_init(pod);
            lab.start_proxy(pod, &proxy_bin);
        }
        for pod in Pod::ALL {
            lab.wait_ready(pod).await;
        }
        for (name, port, _) in SERVICES {
            let expected = [lab.addr(Pod::B1, port), lab.addr(Pod::B2, port)];
            lab.wait_for_endpoints(Pod::A, name, &expected, 0).await;
        }
        Some(lab)
    }

    /// `pod`'s address on the lab network with `port`.
    pub(crate) fn addr(&self, pod: Pod, port: u16) -> SocketAddr {
        SocketAddr::V4(SocketAddrV4::new(self.pod_ip(pod), port))
    }

    pub(crate) fn pod_ip(&self, pod: Pod) -> Ipv4Addr {
        self.network.replica_addr(pod.index())
    }

    fn control_addr(&self) -> SocketAddr {
        SocketAddr::from((self.network.replica_addr(0), CONTROL_GRPC_PORT))
    }

    /// A fresh socket of `pod`: what its application dials with.
    pub(crate) fn socket(&self, pod: Pod) -> TcpSocket {
        netns::socket(self.network.namespace(pod.index())).expect("a socket in the pod")
    }

    /// `GET path` from an application of `from` to `to`, on a new connection.
    pub(crate) async fn get(&self, from: Pod, to: SocketAddr, path: &str) -> anyhow::Result<Reply> {
        client::http_get(self.socket(from), to, path).await
    }

    /// `pod`'s proxy's `/metrics`.
    pub(crate) async fn scrape(&self, pod: Pod) -> Scrape {
        let reply = client::admin_get(self.addr(pod, ADMIN_PORT), "/metrics")
            .await
            .unwrap_or_else(|e| panic!("/metrics of pod {}: {e:#}", pod.name()));
        assert_eq!(reply.status, StatusCode::OK, "/metrics: {}", reply.body);
        Scrape::parse(&reply.body)
    }

    /// `pod`'s proxy's `/config`, or `None` when it cannot be read.
    pub(crate) async fn config(&self, pod: Pod) -> Option<serde_json::Value> {
        let reply = client::admin_get(self.addr(pod, ADMIN_PORT), "/config")
            .await
            .ok()?;
        if reply.status != StatusCode::OK {
            return None;
        }
        serde_json::from_str(&reply.body).ok()
    }

    /// The version of `pod`'s config and the ready endpoints it lists for `shop/<name>`.
    pub(crate) async fn endpoints(&self, pod: Pod, name: &str) -> Option<(u64, Vec<SocketAddr>)> {
        let config = self.config(pod).await?;
        let version = config.get("version")?.as_u64()?;
        let endpoints = config
            .get("services")?
            .get(service(name))?
            .get("endpoints")?
            .as_array()?
            .iter()
            .filter(|e| e.get("ready").and_then(serde_json::Value::as_bool) == Some(true))
            .filter_map(|e| e.get("address")?.as_str()?.parse().ok())
            .collect();
        Some((version, endpoints))
    }

    /// Waits until `pod`'s config is at least `min_version` and lists exactly `expected` (in any
    /// order) as `shop/<name>`'s ready endpoints; returns that version.
    pub(crate) async fn wait_for_endpoints(
        &self,
        pod: Pod,
        name: &str,
        expected: &[SocketAddr],
        min_version: u64,
    ) -> u64 {
        let mut expected = expected.to_vec();
        expected.sort();
        let what = format!(
            "pod {}'s proxy to route {} to {expected:?} at version >= {min_version}",
            pod.name(),
            service(name)
        );
        self.wait_for(&what, || {
            let expected = expected.clone();
            async move {
                let (version, mut endpoints) = self.endpoints(pod, name).await?;
                endpoints.sort();
                (version >= min_version && endpoints == expected).then_some(version)
            }
        })
        .await
    }

    /// Registers `endpoint` as an instance of `shop/<name>` serving `protocol` on its port;
    /// retries while the replica has no leader yet. Returns the catalog version.
    pub(crate) async fn register(&self, name: &str, endpoint: SocketAddr, protocol: &str) -> u64 {
        let request = pb::RegisterRequest {
            namespace: NAMESPACE.to_owned(),
            service: name.to_owned(),
            endpoint: Some(pb::Endpoint {
                address: endpoint.ip().to_string(),
                port: u32::from(endpoint.port()),
                ready: true,
                ..Default::default()
            }),
            ports: vec![pb::ServicePort {
                name: protocol.to_owned(),
                port: u32::from(endpoint.port()),
                protocol: protocol.to_owned(),
            }],
            ..Default::default()
        };
        let deadline = Instant::now() + PATIENCE;
        loop {
            match self.catalog().register(request.clone()).await {
                Ok(response) => return response.into_inner().version,
                Err(status) if Instant::now() > deadline => panic!(
                    "registering {endpoint} in {} failed for {PATIENCE:?}; last error: {status}",
                    service(name)
                ),
                // No leader yet: the replica has just started.
                Err(_) => tokio::time::sleep(Duration::from_millis(100)).await,
            }
        }
    }

    /// Removes `endpoint` from `shop/<name>`. Returns the catalog version of the removal.
    pub(crate) async fn deregister(&self, name: &str, endpoint: SocketAddr) -> u64 {
        let request = pb::DeregisterRequest {
            namespace: NAMESPACE.to_owned(),
            service: name.to_owned(),
            endpoint: Some(pb::EndpointId {
                address: endpoint.ip().to_string(),
                port: u32::from(endpoint.port()),
            }),
            request_id: None,
        };
        let mut catalog = self.catalog();
        match catalog.deregister(request).await {
            Ok(response) => response.into_inner().version,
            Err(status) => panic!("deregistering {endpoint}: {status}\n{}", self.logs()),
        }
    }

    fn catalog(&self) -> CatalogClient<tonic::transport::Channel> {
        let channel =
            tonic::transport::Endpoint::from_shared(format!("http://{}", self.control_addr()))
                .expect("a valid URI")
                .connect_timeout(Duration::from_secs(2))
                .timeout(Duration::from_secs(10))
                .connect_lazy();
        CatalogClient::new(channel)
    }

    /// Kills the control-plane replica (SIGKILL): the whole control plane is gone.
    pub(crate) fn kill_control_plane(&mut self) {
        self.control.kill().expect("killing netting-control");
    }

    /// Polls `check` every 50 ms until it gives a value; panics with `what` and every log after
    /// [`PATIENCE`], or as soon as a proxy has exited.
    pub(crate) async fn wait_for<T, F, Fut>(&self, what: &str, mut check: F) -> T
    where
        F: FnMut() -> Fut,
        Fut: Future<Output = Option<T>>,
    {
        let deadline = Instant::now() + PATIENCE;
        loop {
            if let Some(value) = check().await {
                return value;
            }
            if Instant::now() > deadline {
                panic!("timed out after {PATIENCE:?} waiting for {what}");
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    fn start_apps(&mut self, pod: Pod) {
        let namespace = self.network.namespace(pod.index()).to_owned();
        let listen = |port: u16| {
            netns::listen(&namespace, SocketAddr::from(([0, 0, 0, 0], port)))
                .unwrap_or_else(|e| panic!("listening on :{port} in pod {}: {e}", pod.name()))
        };
        let name = pod.name().to_owned();
        self.apps
            .push(apps::serve_http(listen(HTTP_PORT), name.clone(), APP_DELAY));
        self.apps
            .push(apps::serve_banner_echo(listen(ECHO_PORT), name.clone()));
        self.apps
            .push(apps::serve_http(listen(EXCLUDED_PORT), name, APP_DELAY));
    }

    fn apply_init(&self, pod: Pod) {
        let output = self
            .network
            .command_in(pod.index(), &self.binaries.init)
            .args(init_args())
            .output()
            .expect("running netting-init");
        assert!(
            output.status.success(),
            "netting-init in pod {} failed ({}): {}",
            pod.name(),
            output.status,
            String::from_utf8_lossy(&output.stderr)
        );
    }

    fn start_proxy(&mut self, pod: Pod, proxy_bin: &std::path::Path) {
        let id = PROXY_UID.to_string();
        let args = [
            format!("--reuid={id}"),
            format!("--regid={id}"),
            "--clear-groups".to_owned(),
            "--inh-caps=-all".to_owned(),
            proxy_bin.display().to_string(),
            "--control-plane".to_owned(),
            self.control_addr().to_string(),
            "--pod".to_owned(),
            pod.name().to_owned(),
            "--namespace".to_owned(),
            NAMESPACE.to_owned(),
        ];
        let process = ReplicaProcess::start(
            self.network.namespace(pod.index()),
            &self.binaries.setpriv,
            args,
            self.log_path(pod),
            &[("NETTING_LOG", "info")],
        )
        .unwrap_or_else(|e| panic!("starting the proxy of pod {}: {e}", pod.name()));
        self.proxies.push((pod, process));
    }

    fn log_path(&self, pod: Pod) -> PathBuf {
        self.dir.path().join(format!("proxy-{}.log", pod.name()))
    }

    async fn wait_ready(&mut self, pod: Pod) {
        let addr = self.addr(pod, ADMIN_PORT);
        let deadline = Instant::now() + PATIENCE;
        loop {
            if let Ok(reply) = client::admin_get(addr, "/ready").await
                && reply.status == StatusCode::OK
            {
                return;
            }
            if let Some((_, process)) = self.proxies.iter_mut().find(|(p, _)| *p == pod)
                && let Some(status) = process.exit_status()
            {
                panic!("the proxy of pod {} exited ({status})", pod.name());
            }
            if Instant::now() > deadline {
                panic!(
                    "the proxy of pod {} was not ready after {PATIENCE:?}",
                    pod.name()
                );
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// The last lines of every process's log.
    pub(crate) fn logs(&self) -> String {
        let mut files = vec![(
            "netting-control".to_owned(),
            self.dir.path().join("control.log"),
        )];
        for pod in Pod::ALL {
            files.push((format!("proxy of pod {}", pod.name()), self.log_path(pod)));
        }
        files
            .into_iter()
            .map(|(what, path)| {
                let text = std::fs::read_to_string(&path).unwrap_or_default();
                let lines: Vec<&str> = text.lines().collect();
                let tail = &lines[lines.len().saturating_sub(40)..];
                format!("--- {what} ({}) ---\n{}", path.display(), tail.join("\n"))
            })
            .collect::<Vec<_>>()
            .join("\n")
    }
}

impl Drop for MeshLab {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!("{}", self.logs());
        }
        for app in &self.apps {
            app.abort();
        }
    }
}
