//! The task that follows the control plane: one stream at a time, to one replica at a time.

use std::error::Error as StdError;
use std::sync::Arc;
use std::time::Duration;

use netting_proto::discovery::v1 as proto;
use netting_proto::discovery::v1::discovery_client::DiscoveryClient as GrpcClient;
use netting_proto::transport::TunedConnector;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use thiserror::Error;
use tokio::sync::{mpsc, watch};
use tokio::task::JoinHandle;
use tokio::time::{Instant, sleep, timeout, timeout_at};
use tokio_stream::wrappers::ReceiverStream;
use tracing::{Instrument, debug, info, info_span, warn};

use crate::apply::{self, Validator};
use crate::backoff::{Backoff, full_jitter};
use crate::config::{ClientConfig, InvalidConfig, Replica};
use crate::convert;
use crate::metrics;
use crate::types::ProxyConfig;

/// Trailer with which a replica that lags behind the client sends it elsewhere.
const TRY_ANOTHER_REPLICA: &str = "netting-try-another-replica";

/// Stands in for deadlines too far away to represent.
const FAR_FUTURE: Duration = Duration::from_secs(30 * 365 * 24 * 3600);

/// Requests the client may have queued towards the replica. The protocol allows one response
/// in flight, so one reply at a time is normal; a full queue means the replica stopped reading.
const OUTBOUND_CAPACITY: usize = 8;

/// How the connection to the control plane is doing, for readiness probes and debug pages.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ConnectionStatus {
    /// The replica of the open stream; while disconnected, the replica last tried.
    pub connected_to: Option<String>,
    /// Whether a stream is open.
    pub connected: bool,
    /// Connection attempts after the first one.
    pub reconnects: u64,
    /// Why the last stream ended or the last connection attempt failed.
    pub last_error: Option<String>,
    /// The error of the last NACK the client sent.
    pub last_nack: Option<String>,
}

/// Starts discovery clients.
#[derive(Debug)]
pub struct DiscoveryClient {
    _private: (),
}

impl DiscoveryClient {
    /// Validates `config` and spawns the client on the current tokio runtime (panics outside
    /// one, like `tokio::spawn`). `validator` sees every candidate config before it is
    /// published; its `Err` is NACKed and the previous config stays.
    pub fn spawn(
        config: ClientConfig,
        validator: Option<Validator>,
    ) -> Result<ClientHandle, InvalidConfig> {
        let replicas = config.resolve()?;
        let (config_tx, config_rx) = watch::channel(Arc::new(ProxyConfig::default()));
        let (status_tx, status_rx) = watch::channel(ConnectionStatus::default());
        let (stop_tx, stop_rx) = watch::channel(false);
        let span = info_span!(
            "discovery_client",
            pod = %config.identity.pod,
            namespace = %config.identity.namespace,
        );
        let worker = Worker {
            backoff: Backoff::new(config.backoff_min, config.backoff_max),
            rng: StdRng::from_os_rng(),
            replicas,
            config,
            validator,
            current: config_tx,
            status: status_tx,
            stop: stop_rx,
        };
        let task = tokio::spawn(worker.run().instrument(span));
        Ok(ClientHandle {
            config: config_rx,
            status: status_rx,
            stop: stop_tx,
            task,
        })
    }
}

/// The running client. Dropping it stops the client too; receivers already handed out keep
/// the last values.
#[derive(Debug)]
pub struct ClientHandle {
    config: watch::Receiver<Arc<ProxyConfig>>,
    status: watch::Receiver<ConnectionStatus>,
    stop: watch::Sender<bool>,
    task: JoinHandle<()>,
}

impl ClientHandle {
    /// The last good config: version 0 and empty until the first update is applied; then only
    /// ever replaced by a newer, validated one, and kept while no replica is reachable.
    pub fn config(&self) -> watch::Receiver<Arc<ProxyConfig>> {
        self.config.clone()
    }

    pub fn status(&self) -> watch::Receiver<ConnectionStatus> {
        self.status.clone()
    }

    /// Stops the client and waits for its task to end; the open stream is dropped.
    pub async fn shutdown(self) {
        // Err only when the task is already gone, which is the goal anyway.
        let _ = self.stop.send(true);
        if let Err(error) = self.task.await {
            warn!(%error, "discovery client task failed");
        }
    }
}

/// Why a stream ended, as the status and logs show it.
#[derive(Debug, Error)]
enum EndReason {
    #[error("connect failed: {0}")]
    Connect(String),
    #[error("connect timed out after {0:?}")]
    ConnectTimeout(Duration),
    #[error("no response within {0:?} of the hello")]
    ResponseTimeout(Duration),
    #[error("stream closed by the replica")]
    Closed,
    #[error("stream ended with {code:?}: {message}")]
    Status {
        code: tonic::Code,
        message: String,
        try_another: bool,
    },
    #[error("reconnecting after a protocol error: {0}")]
    Resync(String),
    #[error("the replica stopped reading acknowledgements")]
    Stalled,
}

impl EndReason {
    fn from_status(status: &tonic::Status) -> Self {
        let try_another = status.code() == tonic::Code::Unavailable
            && status
                .metadata()
                .get(TRY_ANOTHER_REPLICA)
                .and_then(|v| v.to_str().ok())
                .is_some_and(|v| v.trim().eq_ignore_ascii_case("true"));
        Self::Status {
            code: status.code(),
            message: status.message().to_owned(),
            try_another,
        }
    }

    fn try_another(&self) -> bool {
        matches!(
            self,
            Self::Status {
                try_another: true,
                ..
            }
        )
    }
}

struct StreamEnd {
    /// Whether the stream applied at least one update: the replica was healthy, so the next
    /// reconnect starts from the shortest delay again.
    applied: bool,
    reason: EndReason,
}

/// What the client answers to one response.
enum Reply {
    Ack(proto::DiscoveryRequest),
    Nack {
        request: proto::DiscoveryRequest,
        resync: Option<String>,
    },
}

struct Worker {
    config: ClientConfig,
    replicas: Vec<Replica>,
    validator: Option<Validator>,
    /// The published config; the only copy, so what was last published is what the next hello
    /// resumes from.
    current: watch::Sender<Arc<ProxyConfig>>,
    status: watch::Sender<ConnectionStatus>,
    stop: watch::Receiver<bool>,
    backoff: Backoff,
    rng: StdRng,
}

impl Worker {
    async fn run(mut self) {
        let count = self.replicas.len();
        // A random start spreads proxies that boot together over the replicas.
        let mut index = self.rng.random_range(0..count);
        // Consecutive replicas that sent the client elsewhere. Each replica is asked once
        // without backoff; when all of them lag, waiting is what helps, so backoff applies.
        let mut hops = 0usize;
        let mut stop = self.stop.clone();
        let mut attempts = 0u64;
        loop {
            let replica = self.replicas[index].clone();
            if attempts > 0 {
                self.status.send_modify(|s| s.reconnects += 1);
                metrics::reconnected();
            }
            attempts += 1;
            let span = info_span!("stream", replica = %replica.authority);
            let end = tokio::select! {
                biased;
                () = stopped(&mut stop) => break,
                end = self.stream(&replica).instrument(span) => end,
            };
            metrics::connected(false);
            let error = format!("{}: {}", replica.authority, end.reason);
            self.status.send_modify(|s| {
                s.connected = false;
                s.connected_to = Some(replica.authority.clone());
                s.last_error = Some(error.clone());
            });
            if end.applied {
                self.backoff.reset();
            }
            let try_another = end.reason.try_another();
            hops = match (try_another, end.applied) {
                (false, _) => 0,
                (true, true) => 1,
                (true, false) => hops.saturating_add(1),
            };
            let delay = if try_another && hops < count {
                full_jitter(self.config.try_another_delay, &mut self.rng)
            } else {
                self.backoff.next_delay(&mut self.rng)
            };
            index = (index + 1) % count;
            info!(
                %error,
                ?delay,
                next = %self.replicas[index].authority,
                "stream ended; reconnecting"
            );
            tokio::select! {
                biased;
                () = stopped(&mut stop) => break,
                () = sleep(delay) => {}
            }
        }
        self.status.send_modify(|s| s.connected = false);
        metrics::connected(false);
        info!("discovery client stopped");
    }

    /// One stream, from connecting to its end.
    async fn stream(&mut self, replica: &Replica) -> StreamEnd {
        let ended = |reason| StreamEnd {
            applied: false,
            reason,
        };
        // A fresh connection per stream: the last one may be what just failed, and connecting
        // eagerly turns a refused connection into an error here instead of a hidden retry loop
        // inside the channel.
        let connect_timeout = self.config.connect_timeout;
        // Tuned TCP (netting_proto::transport): an update or ACK lost in a partition is resent
        // soon after it heals, not after an exponentially grown retransmission timeout.
        let connecting = replica
            .endpoint
            .connect_with_connector(TunedConnector::new());
        let channel = match timeout(connect_timeout, connecting).await {
            Err(_) => return ended(EndReason::ConnectTimeout(connect_timeout)),
            Ok(Err(error)) => return ended(EndReason::Connect(error_chain(&error))),
            Ok(Ok(channel)) => channel,
        };
        let mut grpc =
            GrpcClient::new(channel).max_decoding_message_size(self.config.max_response_bytes);

        let (outbound, requests) = mpsc::channel(OUTBOUND_CAPACITY);
        let current = self.current.borrow().clone();
        let hello = convert::hello(
            &self.config.identity,
            &self.config.subscription,
            current.version,
            &current.cluster_id,
        );
        // Queued before the call: tonic sends it as soon as the stream opens.
        if outbound.try_send(hello).is_err() {
            return ended(EndReason::Stalled);
        }
        let response_timeout = self.config.response_timeout;
        // checked: the timeout comes from configuration and may be absurdly large.
        let now = Instant::now();
        let deadline = now
            .checked_add(response_timeout)
            .unwrap_or(now + FAR_FUTURE);
        let mut inbound =
            match timeout_at(deadline, grpc.stream(ReceiverStream::new(requests))).await {
                Err(_) => return ended(EndReason::ResponseTimeout(response_timeout)),
                Ok(Err(status)) => return ended(EndReason::from_status(&status)),
                Ok(Ok(response)) => response.into_inner(),
            };
        self.status.send_modify(|s| {
            s.connected = true;
            s.connected_to = Some(replica.authority.clone());
        });
        metrics::connected(true);
        info!(
            last_version = current.version,
            cluster_id = %current.cluster_id,
            "stream open"
        );

        let mut applied = false;
        let mut first = true;
        loop {
            let message = if first {
                match timeout_at(deadline, inbound.message()).await {
                    Err(_) => {
                        return StreamEnd {
                            applied,
                            reason: EndReason::ResponseTimeout(response_timeout),
                        };
                    }
                    Ok(message) => message,
                }
            } else {
                inbound.message().await
            };
            first = false;
            let response = match message {
                Ok(Some(response)) => response,
                Ok(None) => {
                    return StreamEnd {
                        applied,
                        reason: EndReason::Closed,
                    };
                }
                Err(status) => {
                    return StreamEnd {
                        applied,
                        reason: EndReason::from_status(&status),
                    };
                }
            };
            let (request, resync) = match self.handle(response) {
                Reply::Ack(request) => {
                    applied = true;
                    (request, None)
                }
                Reply::Nack { request, resync } => (request, resync),
            };
            match outbound.try_send(request) {
                Ok(()) => {}
                // The request half is gone with the connection; the next read reports why.
                Err(mpsc::error::TrySendError::Closed(_)) => {}
                Err(mpsc::error::TrySendError::Full(_)) => {
                    return StreamEnd {
                        applied,
                        reason: EndReason::Stalled,
                    };
                }
            }
            if let Some(error) = resync {
                // Closing our half lets tonic flush the NACK before the stream goes; the
                // replica ends its half in answer. Responses still in flight are stale: ignored.
                drop(outbound);
                let _ = timeout(response_timeout, async {
                    while let Ok(Some(_)) = inbound.message().await {}
                })
                .await;
                return StreamEnd {
                    applied,
                    reason: EndReason::Resync(error),
                };
            }
        }
    }

    /// Applies one response and says what to answer. Publishing happens before the ACK is
    /// queued: an ACK means "applied", and the replica may act on it at once.
    fn handle(&mut self, response: proto::DiscoveryResponse) -> Reply {
        let version = response.version;
        let nonce = response.nonce.clone();
        let current = self.current.borrow().clone();
        match apply::apply(&current, response, self.validator.as_ref()) {
            Ok(next) => {
                // An empty delta at the current version changes nothing; not waking the data
                // path for it keeps watch notifications meaningful.
                if next != *current {
                    debug!(
                        version = next.version,
                        cluster_id = %next.cluster_id,
                        services = next.services.len(),
                        "config applied"
                    );
                    metrics::version(next.version);
                    self.current.send_replace(Arc::new(next));
                }
                metrics::update("ack");
                Reply::Ack(convert::ack(version, nonce))
            }
            Err(rejection) => {
                let error = rejection.to_string();
                warn!(version, %nonce, %error, "update rejected");
                metrics::update("nack");
                self.status
                    .send_modify(|s| s.last_nack = Some(error.clone()));
                let resync = rejection.needs_resync().then(|| error.clone());
                Reply::Nack {
                    request: convert::nack(version, nonce, error),
                    resync,
                }
            }
        }
    }
}

/// Resolves when the handle asks the client to stop or is dropped.
async fn stopped(stop: &mut watch::Receiver<bool>) {
    // Err means the handle is gone: nobody can read the config any more, so stop too.
    let _ = stop.wait_for(|stop| *stop).await;
}

/// An error and its causes: tonic's transport errors say only "transport error" at the top.
fn error_chain(error: &(dyn StdError + 'static)) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}
