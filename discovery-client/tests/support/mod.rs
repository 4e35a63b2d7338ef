//! A scripted control-plane replica for the client's tests.
//!
//! Each accepted stream takes the next script (a list of [`Step`]s) from the server's queue; a
//! stream with no script left holds open without answering. Steps run after the client's hello
//! arrives. Every request the server receives is recorded, in order, with the number of the
//! stream it came on, and tests wait on predicates over that record instead of sleeping.

#![allow(dead_code, unreachable_pub)] // each test binary uses a different part of it

use std::collections::VecDeque;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use netting_discovery_client::{ClientConfig, Identity, Subscription};
use netting_proto::discovery::v1::discovery_request::Message;
use netting_proto::discovery::v1::discovery_server::{Discovery, DiscoveryServer};
use netting_proto::discovery::v1::{self as proto, DiscoveryRequest, DiscoveryResponse, Hello};
use tokio::net::TcpListener;
use tokio::sync::{Notify, mpsc, oneshot, watch};
use tokio::task::JoinHandle;
use tokio_stream::wrappers::{ReceiverStream, TcpListenerStream};
use tonic::metadata::MetadataMap;
use tonic::{Request, Response, Status, Streaming};

/// How long a test waits for a condition before failing. Generous: the tests must pass on a
/// loaded machine, and a passing test never waits this long.
pub const WAIT: Duration = Duration::from_secs(30);

/// One thing the server does on a stream.
pub enum Step {
    /// Sends this response.
    Respond(DiscoveryResponse),
    /// Sends the response this function builds from the stream's hello.
    RespondTo(Box<dyn FnOnce(&Hello) -> DiscoveryResponse + Send>),
    /// Waits for the client's next Ack or Nack.
    AwaitReply,
    /// Waits until the test calls `notify_one` on this gate.
    Wait(Arc<Notify>),
    /// Ends the stream with this status.
    End(Status),
}

impl std::fmt::Debug for Step {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Step::Respond(r) => write!(f, "Respond(v{} {})", r.version, r.nonce),
            Step::RespondTo(_) => f.write_str("RespondTo(..)"),
            Step::AwaitReply => f.write_str("AwaitReply"),
            Step::Wait(_) => f.write_str("Wait"),
            Step::End(status) => write!(f, "End({:?})", status.code()),
        }
    }
}

/// A request the server received, with the number (from 0) of the stream it came on.
#[derive(Debug, Clone, PartialEq)]
pub struct Received {
    pub stream: usize,
    pub message: Message,
}

struct Shared {
    scripts: Mutex<VecDeque<Vec<Step>>>,
    received: watch::Sender<Vec<Received>>,
    streams: AtomicUsize,
    stop: watch::Receiver<bool>,
}

#[derive(Debug)]
pub struct FakeServer {
    addr: SocketAddr,
    shared: Arc<Shared>,
    stop: watch::Sender<bool>,
    task: JoinHandle<()>,
}

impl std::fmt::Debug for Shared {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Shared").finish_non_exhaustive()
    }
}

impl FakeServer {
    /// Starts on a free port of 127.0.0.1, with one script per expected stream.
    pub async fn start(scripts: Vec<Vec<Step>>) -> Self {
        Self::start_on("127.0.0.1:0".parse().unwrap(), scripts).await
    }

    /// Starts on `addr`, e.g. the address of a server that was stopped.
    pub async fn start_on(addr: SocketAddr, scripts: Vec<Vec<Step>>) -> Self {
        let listener = TcpListener::bind(addr).await.expect("bind the fake server");
        let addr = listener.local_addr().unwrap();
        let (stop, stop_rx) = watch::channel(false);
        let shared = Arc::new(Shared {
            scripts: Mutex::new(scripts.into()),
            received: watch::Sender::new(Vec::new()),
            streams: AtomicUsize::new(0),
            stop: stop_rx.clone(),
        });
        let service = DiscoveryServer::new(Handler(shared.clone()));
        let mut shutdown = stop_rx;
        let task = tokio::spawn(async move {
            let result = tonic::transport::Server::builder()
                .add_service(service)
                .serve_with_incoming_shutdown(TcpListenerStream::new(listener), async move {
                    stopped(&mut shutdown).await;
                })
                .await;
            if let Err(error) = result {
                eprintln!("fake server on {addr} failed: {error}");
            }
        });
        Self {
            addr,
            shared,
            stop,
            task,
        }
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// `host:port`, as the client's status reports a replica.
    pub fn authority(&self) -> String {
        self.addr.to_string()
    }

    /// Queues scripts for the next streams.
    pub fn script(&self, scripts: Vec<Vec<Step>>) {
        self.shared.scripts.lock().unwrap().extend(scripts);
    }

    /// Everything received so far.
    pub fn received(&self) -> Vec<Received> {
        self.shared.received.borrow().clone()
    }

    /// Waits until the record satisfies `done`, and returns it.
    pub async fn wait_for(
        &self,
        what: &str,
        mut done: impl FnMut(&[Received]) -> bool,
    ) -> Vec<Received> {
        let mut rx = self.shared.received.subscribe();
        let waited = tokio::time::timeout(WAIT, rx.wait_for(|r| done(r))).await;
        match waited {
            Ok(Ok(received)) => received.clone(),
            _ => panic!(
                "{}: timed out waiting for {what}; received {:#?}",
                self.addr,
                self.received()
            ),
        }
    }

    /// The hellos received, in order.
    pub fn hellos(&self) -> Vec<Hello> {
        self.received()
            .into_iter()
            .filter_map(|r| match r.message {
                Message::Hello(hello) => Some(hello),
                _ => None,
            })
            .collect()
    }

    /// The Acks and Nacks received, in order.
    pub fn replies(&self) -> Vec<Message> {
        self.received()
            .into_iter()
            .map(|r| r.message)
            .filter(|m| !matches!(m, Message::Hello(_)))
            .collect()
    }

    /// Goes away entirely: open streams end with UNAVAILABLE, as a replica shutting down does,
    /// and the port is closed (new connections are refused) once this returns.
    pub async fn stop(self) {
        let _ = self.stop.send(true);
        let mut task = self.task;
        if tokio::time::timeout(WAIT, &mut task).await.is_err() {
            task.abort();
            panic!("fake server on {} did not stop", self.addr);
        }
    }
}

struct Handler(Arc<Shared>);

#[tonic::async_trait]
impl Discovery for Handler {
    type StreamStream = ReceiverStream<Result<DiscoveryResponse, Status>>;

    async fn stream(
        &self,
        request: Request<Streaming<DiscoveryRequest>>,
    ) -> Result<Response<Self::StreamStream>, Status> {
        let shared = self.0.clone();
        let stream = shared.streams.fetch_add(1, Ordering::SeqCst);
        let script = shared
            .scripts
            .lock()
            .unwrap()
            .pop_front()
            .unwrap_or_default();
        let mut inbound = request.into_inner();
        let (out, out_rx) = mpsc::channel(16);
        let (replies_tx, replies) = mpsc::unbounded_channel();
        let (hello_tx, hello) = oneshot::channel();

        let recorder = shared.clone();
        tokio::spawn(async move {
            let mut hello_tx = Some(hello_tx);
            while let Ok(Some(request)) = inbound.message().await {
                let Some(message) = request.message else {
                    continue;
                };
                recorder.received.send_modify(|r| {
                    r.push(Received {
                        stream,
                        message: message.clone(),
                    });
                });
                match message {
                    Message::Hello(h) => {
                        if let Some(tx) = hello_tx.take() {
                            let _ = tx.send(h);
                        }
                    }
                    reply => {
                        let _ = replies_tx.send(reply);
                    }
                }
            }
            // Dropping `replies_tx` tells the driver the client closed its half.
        });
        tokio::spawn(drive(script, hello, replies, out, shared.stop.clone()));
        Ok(Response::new(ReceiverStream::new(out_rx)))
    }
}

type Out = mpsc::Sender<Result<DiscoveryResponse, Status>>;

/// Runs one stream's script, then holds the stream open until the client leaves or the server
/// stops.
async fn drive(
    script: Vec<Step>,
    hello: oneshot::Receiver<Hello>,
    mut replies: mpsc::UnboundedReceiver<Message>,
    out: Out,
    mut stop: watch::Receiver<bool>,
) {
    let Some(Ok(hello)) = unless_stopped(&mut stop, &out, hello).await else {
        return;
    };
    for step in script {
        let go_on = match step {
            Step::Respond(response) => out.send(Ok(response)).await.is_ok(),
            Step::RespondTo(build) => out.send(Ok(build(&hello))).await.is_ok(),
            Step::AwaitReply => matches!(
                unless_stopped(&mut stop, &out, replies.recv()).await,
                Some(Some(_))
            ),
            Step::Wait(gate) => unless_stopped(&mut stop, &out, gate.notified())
                .await
                .is_some(),
            Step::End(status) => {
                let _ = out.send(Err(status)).await;
                false
            }
        };
        if !go_on {
            return;
        }
    }
    // Replies after the script are recorded, nothing more; the stream ends when the client
    // closes its half (as a real replica does) or when the server stops.
    while let Some(Some(_)) = unless_stopped(&mut stop, &out, replies.recv()).await {}
}

/// `work`'s output, or `None` once the server is stopping (the stream is then ended with
/// UNAVAILABLE, as a replica shutting down does).
async fn unless_stopped<T>(
    stop: &mut watch::Receiver<bool>,
    out: &Out,
    work: impl Future<Output = T>,
) -> Option<T> {
    tokio::select! {
        biased;
        () = stopped(stop) => {
            let _ = out.send(Err(Status::unavailable("replica shutting down"))).await;
            None
        }
        value = work => Some(value),
    }
}

async fn stopped(stop: &mut watch::Receiver<bool>) {
    let _ = stop.wait_for(|s| *s).await;
}

/// The status a lagging replica ends a stream with to send the client elsewhere.
pub fn try_another_replica() -> Status {
    let mut metadata = MetadataMap::new();
    metadata.insert("netting-try-another-replica", "true".parse().unwrap());
    Status::with_metadata(
        tonic::Code::Unavailable,
        "this replica is behind the sidecar's version",
        metadata,
    )
}

/// A service of namespace `shop` with one ready endpoint per address (`ip:port`).
pub fn service(name: &str, endpoints: &[&str]) -> proto::ServiceConfig {
    proto::ServiceConfig {
        namespace: "shop".into(),
        name: name.into(),
        ports: vec![proto::Port {
            name: "http".into(),
            port: 8080,
            protocol: "http".into(),
        }],
        endpoints: endpoints
            .iter()
            .map(|e| {
                let (address, port) = e.rsplit_once(':').unwrap();
                proto::Endpoint {
                    address: address.into(),
                    port: port.parse().unwrap(),
                    ready: true,
                    zone: String::new(),
                }
            })
            .collect(),
        policy: None,
    }
}

pub fn snapshot(
    nonce: &str,
    version: u64,
    cluster_id: &str,
    services: Vec<proto::ServiceConfig>,
) -> DiscoveryResponse {
    DiscoveryResponse {
        nonce: nonce.into(),
        version,
        cluster_id: cluster_id.into(),
        update: Some(proto::discovery_response::Update::Snapshot(
            proto::Snapshot { services },
        )),
    }
}

pub fn delta(
    nonce: &str,
    from_version: u64,
    version: u64,
    cluster_id: &str,
    upserted: Vec<proto::ServiceConfig>,
    removed: &[&str],
) -> DiscoveryResponse {
    DiscoveryResponse {
        nonce: nonce.into(),
        version,
        cluster_id: cluster_id.into(),
        update: Some(proto::discovery_response::Update::Delta(proto::Delta {
            from_version,
            upserted,
            removed: removed
                .iter()
                .map(|name| proto::ServiceRef {
                    namespace: "shop".into(),
                    name: (*name).into(),
                })
                .collect(),
        })),
    }
}

pub fn ack(version: u64, nonce: &str) -> Message {
    Message::Ack(proto::Ack {
        version,
        nonce: nonce.into(),
    })
}

/// A client config for these tests: pod `web-0` of `shop`, subscribed to `shop`, with short
/// backoff so that reconnects happen quickly (no test depends on how quickly).
pub fn client_config(replicas: &[String]) -> ClientConfig {
    let mut config = ClientConfig::new(
        replicas.iter().cloned(),
        Identity::new("web-0", "shop").proxy_version("test"),
        Subscription::new().namespace("shop"),
    );
    config.backoff_min = Duration::from_millis(10);
    config.backoff_max = Duration::from_millis(100);
    config.try_another_delay = Duration::from_millis(10);
    config
}

/// Waits until the watched value satisfies `done`, and returns it.
pub async fn wait_until<T: Clone>(
    rx: &mut watch::Receiver<T>,
    what: &str,
    mut done: impl FnMut(&T) -> bool,
) -> T {
    match tokio::time::timeout(WAIT, rx.wait_for(|v| done(v))).await {
        Ok(Ok(value)) => value.clone(),
        Ok(Err(_)) => panic!("the client stopped while waiting for {what}"),
        Err(_) => panic!("timed out waiting for {what}"),
    }
}
