//! Shared helpers of the data-plane tests: backends on loopback, a proxy with an injected
//! original destination, and routes built from a catalog config. Everything binds port 0.

#![allow(dead_code, unreachable_pub, clippy::unwrap_used, clippy::expect_used)]

use std::collections::BTreeMap;
use std::convert::Infallible;
use std::future::Future;
use std::net::{Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use bytes::Bytes;
use http::{Request, Response, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use netting_discovery_client::{
    Endpoint, Policy, Port, Protocol, ProxyConfig, ServiceConfig, ServiceName,
};
use netting_proxy::balance::Balancer;
use netting_proxy::dataplane::{self, DataPlane, Listener, Options, OriginalDestination, Settings};
use netting_proxy::metrics::Direction;
use netting_proxy::routes::Routes;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio::task::JoinHandle;

/// Bounds what a test waits for something that should happen at once; never reached when
/// things work, so the tests do not depend on the machine's speed.
pub const PATIENCE: Duration = Duration::from_secs(20);

pub async fn within<T>(what: &str, future: impl Future<Output = T>) -> T {
    tokio::time::timeout(PATIENCE, future)
        .await
        .unwrap_or_else(|_| panic!("{what}: not done within {PATIENCE:?}"))
}

/// Polls `condition` until it holds (bounded by [`PATIENCE`]).
pub async fn eventually(what: &str, mut condition: impl FnMut() -> bool) {
    within(what, async {
        while !condition() {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    })
    .await;
}

pub type Body = Full<Bytes>;

/// A text response.
pub fn text(status: StatusCode, body: impl Into<Bytes>) -> Response<Body> {
    let mut response = Response::new(Full::new(body.into()));
    *response.status_mut() = status;
    response
}

/// A listener on 127.0.0.1, on a port of the system's choosing.
pub async fn bind() -> TcpListener {
    TcpListener::bind("127.0.0.1:0").await.unwrap()
}

/// Listeners on 127.0.0.1, 127.0.0.2, ... that share one port: the catalog balances over a
/// service's endpoints *on the same port*, as a Kubernetes service's pods are.
pub async fn same_port(count: u8) -> Vec<TcpListener> {
    for _ in 0..100 {
        let first = bind().await;
        let port = first.local_addr().unwrap().port();
        let mut listeners = vec![first];
        for host in 2..=count {
            match TcpListener::bind((Ipv4Addr::new(127, 0, 0, host), port)).await {
                Ok(listener) => listeners.push(listener),
                Err(_) => break,
            }
        }
        if listeners.len() == usize::from(count) {
            return listeners;
        }
    }
    panic!("no port free on {count} loopback addresses");
}

/// An address on the port of `listener`, on a loopback address where nothing listens:
/// connections to it are refused.
pub fn refused_beside(listener: &TcpListener) -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 99], listener.local_addr().unwrap().port()))
}

/// An HTTP/1 + h2c server on `listener` answering with `handler`.
pub fn http_backend<F, Fut>(listener: TcpListener, handler: F) -> SocketAddr
where
    F: Fn(Request<Incoming>) -> Fut + Clone + Send + Sync + 'static,
    Fut: Future<Output = Response<Body>> + Send + 'static,
{
    http_backend_counting(listener, handler).0
}

/// [`http_backend`], also counting the connections it accepts.
pub fn http_backend_counting<F, Fut>(
    listener: TcpListener,
    handler: F,
) -> (SocketAddr, Arc<AtomicUsize>)
where
    F: Fn(Request<Incoming>) -> Fut + Clone + Send + Sync + 'static,
    Fut: Future<Output = Response<Body>> + Send + 'static,
{
    let address = listener.local_addr().unwrap();
    let accepted = Arc::new(AtomicUsize::new(0));
    let counter = accepted.clone();
    tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                return;
            };
            counter.fetch_add(1, Ordering::SeqCst);
            let handler = handler.clone();
            tokio::spawn(async move {
                let service = service_fn(move |request| {
                    let handler = handler.clone();
                    async move { Ok::<_, Infallible>(handler(request).await) }
                });
                let _ = auto::Builder::new(TokioExecutor::new())
                    .serve_connection_with_upgrades(TokioIo::new(stream), service)
                    .await;
            });
        }
    });
    (address, accepted)
}

/// A backend that counts its requests and answers with its name and the length of the
/// request body; while `release` is false, requests wait (so that tests can have many in flight at once).
#[derive(Clone)]
pub struct Named {
    pub name: &'static str,
    pub hits: Arc<AtomicUsize>,
    pub release: watch::Receiver<bool>,
}

impl Named {
    pub fn hits(&self) -> usize {
        self.hits.load(Ordering::SeqCst)
    }
}

/// A named backend on `listener`; requests wait until `release` is true.
pub fn named_backend(
    listener: TcpListener,
    name: &'static str,
    release: watch::Receiver<bool>,
) -> (SocketAddr, Named) {
    let named = Named {
        name,
        hits: Arc::new(AtomicUsize::new(0)),
        release,
    };
    let state = named.clone();
    let address = http_backend(listener, move |request: Request<Incoming>| {
        let state = state.clone();
        async move {
            state.hits.fetch_add(1, Ordering::SeqCst);
            let mut release = state.release.clone();
            let _ = release.wait_for(|released| *released).await;
            let body = request
                .into_body()
                .collect()
                .await
                .map(|b| b.to_bytes())
                .unwrap_or_default();
            text(StatusCode::OK, format!("{} {}", state.name, body.len()))
        }
    });
    (address, named)
}

/// A TCP backend on `listener` that accepts, counts and closes every connection at once.
pub fn closing_backend(listener: TcpListener) -> (SocketAddr, Arc<AtomicUsize>) {
    let address = listener.local_addr().unwrap();
    let accepted = Arc::new(AtomicUsize::new(0));
    let counter = accepted.clone();
    tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                return;
            };
            counter.fetch_add(1, Ordering::SeqCst);
            let _ = stream.set_zero_linger();
            drop(stream);
        }
    });
    (address, accepted)
}

/// A TCP echo server on `listener` that first sends `banner` (server-speaks-first when
/// non-empty).
pub fn echo_backend(
    listener: TcpListener,
    banner: &'static [u8],
) -> (SocketAddr, Arc<AtomicUsize>) {
    let address = listener.local_addr().unwrap();
    let accepted = Arc::new(AtomicUsize::new(0));
    let counter = accepted.clone();
    tokio::spawn(async move {
        loop {
            let Ok((mut stream, _)) = listener.accept().await else {
                return;
            };
            counter.fetch_add(1, Ordering::SeqCst);
            tokio::spawn(async move {
                if !banner.is_empty() && stream.write_all(banner).await.is_err() {
                    return;
                }
                let (mut reader, mut writer) = stream.split();
                let _ = tokio::io::copy(&mut reader, &mut writer).await;
            });
        }
    });
    (address, accepted)
}

/// A service's catalog entry: ready endpoints and a policy.
pub struct Service {
    pub name: &'static str,
    pub endpoints: Vec<SocketAddr>,
    pub not_ready: Vec<SocketAddr>,
    pub policy: Policy,
    /// The protocol the catalog declares for the endpoints' port (none: TCP).
    pub protocol: Option<Protocol>,
}

impl Service {
    pub fn new(name: &'static str, endpoints: &[SocketAddr]) -> Service {
        Service {
            name,
            endpoints: endpoints.to_vec(),
            not_ready: Vec::new(),
            policy: Policy::default(),
            protocol: None,
        }
    }

    pub fn retries(mut self, max_retries: u32) -> Service {
        self.policy.max_retries = max_retries;
        self
    }

    pub fn protocol(mut self, protocol: Protocol) -> Service {
        self.protocol = Some(protocol);
        self
    }

    pub fn timeout(mut self, timeout: Duration) -> Service {
        self.policy.request_timeout = Some(timeout);
        self
    }
}

/// The routing table of a catalog made of `services` (in namespace `test`).
pub fn routes(version: u64, services: Vec<Service>) -> Routes {
    let endpoint = |addr: SocketAddr, ready: bool| Endpoint {
        addr,
        ready,
        zone: None,
    };
    let services = services
        .into_iter()
        .map(|service| {
            let mut endpoints: Vec<Endpoint> = service
                .endpoints
                .iter()
                .map(|a| endpoint(*a, true))
                .collect();
            endpoints.extend(service.not_ready.iter().map(|a| endpoint(*a, false)));
            let ports = service
                .protocol
                .zip(service.endpoints.first())
                .map(|(protocol, endpoint)| Port {
                    name: "main".to_owned(),
                    port: endpoint.port(),
                    protocol,
                })
                .into_iter()
                .collect();
            let config = ServiceConfig {
                ports,
                endpoints,
                policy: service.policy,
            };
            (ServiceName::new("test", service.name), config)
        })
        .collect::<BTreeMap<_, _>>();
    Routes::from_config(&ProxyConfig {
        version,
        cluster_id: "test".to_owned(),
        services,
    })
    .unwrap()
}

pub fn settings() -> Settings {
    Settings {
        connect_timeout: Duration::from_secs(5),
        request_timeout: Duration::from_secs(30),
        max_header_bytes: 16 * 1024,
    }
}

/// A running data plane with one listener.
pub struct Proxy {
    pub address: SocketAddr,
    pub routes: watch::Sender<Arc<Routes>>,
    pub balancer: Arc<Balancer>,
    pub stop: watch::Sender<bool>,
    pub task: JoinHandle<()>,
}

pub struct ProxyBuilder {
    direction: Direction,
    destination: OriginalDestination,
    routes: Routes,
    settings: Settings,
    options: Options,
    balancer: Arc<Balancer>,
    drain_timeout: Duration,
}

/// A proxy whose every accepted connection "was going to" `destination`.
pub fn proxy(destination: SocketAddr, routes: Routes) -> ProxyBuilder {
    ProxyBuilder {
        direction: Direction::Outbound,
        destination: OriginalDestination::Fixed(destination),
        routes,
        settings: settings(),
        options: Options::default(),
        balancer: Arc::new(Balancer::seeded(7)),
        drain_timeout: PATIENCE,
    }
}

impl ProxyBuilder {
    pub fn inbound(mut self) -> Self {
        self.direction = Direction::Inbound;
        self
    }

    pub fn destination(mut self, destination: OriginalDestination) -> Self {
        self.destination = destination;
        self
    }

    pub fn settings(mut self, settings: Settings) -> Self {
        self.settings = settings;
        self
    }

    pub fn options(mut self, options: Options) -> Self {
        self.options = options;
        self
    }

    pub fn balancer(mut self, balancer: Arc<Balancer>) -> Self {
        self.balancer = balancer;
        self
    }

    pub fn drain_timeout(mut self, drain_timeout: Duration) -> Self {
        self.drain_timeout = drain_timeout;
        self
    }

    pub async fn start(self) -> Proxy {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let address = listener.local_addr().unwrap();
        let (routes, routes_rx) = watch::channel(Arc::new(self.routes));
        let (stop, stop_rx) = watch::channel(false);
        let plane = DataPlane {
            routes: routes_rx,
            balancer: self.balancer.clone(),
            settings: self.settings,
        };
        let listeners = vec![Listener {
            listener,
            direction: self.direction,
            destination: self.destination,
        }];
        let task = tokio::spawn(dataplane::serve_with(
            listeners,
            plane,
            self.options,
            stop_rx,
            self.drain_timeout,
        ));
        Proxy {
            address,
            routes,
            balancer: self.balancer,
            stop,
            task,
        }
    }
}

impl Proxy {
    /// `http://<proxy>/<path>`: what the application would have sent to the destination.
    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.address)
    }
}

/// An HTTP/1.1 client with its own connection pool.
pub fn http1_client() -> Client<HttpConnector, Body> {
    Client::builder(TokioExecutor::new()).build_http()
}

/// An HTTP/2 client with prior knowledge (h2c).
pub fn h2c_client() -> Client<HttpConnector, Body> {
    Client::builder(TokioExecutor::new())
        .http2_only(true)
        .build_http()
}

/// Sends `request`, returns the status and the body as text.
pub async fn call(
    client: &Client<HttpConnector, Body>,
    request: Request<Body>,
) -> (StatusCode, String) {
    let response = within("response", client.request(request)).await.unwrap();
    let status = response.status();
    let body = within("body", response.into_body().collect())
        .await
        .unwrap()
        .to_bytes();
    (status, String::from_utf8_lossy(&body).into_owned())
}

pub fn get(url: &str) -> Request<Body> {
    Request::get(url).body(Body::default()).unwrap()
}

/// Writes `bytes` on a new raw connection to `address` and reads until the peer closes or
/// `until` has been seen.
pub async fn raw_exchange(address: SocketAddr, bytes: &[u8], until: &[u8]) -> Vec<u8> {
    let mut stream = TcpStream::connect(address).await.unwrap();
    stream.write_all(bytes).await.unwrap();
    let mut received = Vec::new();
    within("raw exchange", async {
        let mut buffer = [0u8; 4096];
        loop {
            match stream.read(&mut buffer).await {
                Ok(0) | Err(_) => break,
                Ok(n) => received.extend_from_slice(&buffer[..n]),
            }
            if !until.is_empty() && received.windows(until.len()).any(|w| w == until) {
                break;
            }
        }
    })
    .await;
    received
}
