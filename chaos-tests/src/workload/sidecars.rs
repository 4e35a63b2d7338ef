//! Simulated sidecars on the discovery stream, of two kinds:
//!
//! - **client sidecars** run the real client library (`netting-discovery-client`), as a proxy
//!   does, and record every config it publishes: the proxy's view of "never backwards" and of
//!   convergence;
//! - **raw sidecars** speak the protocol with the generated gRPC client and record every
//!   response a replica sends before anything checks it: the replicas' own promise never to
//!   send state older than what the sidecar has (and never a delta from a version it lacks)
//!   is checked on these, so a client-side guard cannot hide a replica's mistake.

use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use netting_discovery_client::{
    ClientConfig, ClientHandle, DiscoveryClient, Identity, ProxyConfig, Subscription, Validator,
};
use netting_proto::discovery::v1 as pb;
use netting_proto::discovery::v1::discovery_client::DiscoveryClient as RawClient;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use tokio::sync::{mpsc, watch};
use tokio::task::JoinHandle;
use tokio_stream::wrappers::ReceiverStream;
use tonic::transport::Endpoint;

use super::{Clock, REGISTER_NAMESPACE, Recorder, ReplicaAddress};
use crate::history::{SidecarEvent, SidecarEventKind};

/// The last config each client sidecar published, for the final convergence check.
pub type LastConfigs = Arc<Mutex<Vec<Arc<ProxyConfig>>>>;

/// The running sidecars.
#[derive(Debug)]
pub struct Sidecars {
    clients: Vec<ClientHandle>,
    raw: Vec<JoinHandle<()>>,
    stop: watch::Sender<bool>,
}

impl Sidecars {
    /// Starts `clients` client sidecars and `raw` raw sidecars, all subscribed to the
    /// register namespace. Sidecar numbers: clients first, then raw ones.
    pub fn start(
        replicas: &[ReplicaAddress],
        clients: usize,
        raw: usize,
        recorder: &Recorder,
        clock: Clock,
        seed: u64,
    ) -> Result<Sidecars, netting_discovery_client::InvalidConfig> {
        let addresses: Vec<String> = replicas.iter().map(|r| r.grpc.clone()).collect();
        let mut handles = Vec::with_capacity(clients);
        for number in 0..clients {
            let sidecar = number as u32;
            let recorder = recorder.clone();
            let validator: Validator = Arc::new(move |config: &ProxyConfig| {
                recorder.sidecar(SidecarEvent {
                    sidecar,
                    at: clock.now(),
                    cluster_id: config.cluster_id.clone(),
                    version: config.version,
                    replica: None,
                    from_version: None,
                    kind: SidecarEventKind::Applied,
                });
                Ok(())
            });
            let config = ClientConfig::new(
                addresses.iter().cloned(),
                Identity::new(format!("chaos-sidecar-{number}"), REGISTER_NAMESPACE),
                Subscription::new().namespace(REGISTER_NAMESPACE),
            );
            handles.push(DiscoveryClient::spawn(config, Some(validator))?);
        }
        let (stop, stop_rx) = watch::channel(false);
        let raw = (0..raw)
            .map(|number| {
                let sidecar = (clients + number) as u32;
                tokio::spawn(raw_sidecar(
                    sidecar,
                    addresses.clone(),
                    recorder.clone(),
                    clock,
                    seed ^ u64::from(sidecar),
                    stop_rx.clone(),
                ))
            })
            .collect();
        Ok(Sidecars {
            clients: handles,
            raw,
            stop,
        })
    }

    /// The config each client sidecar holds now, in sidecar order.
    pub fn current_configs(&self) -> Vec<Arc<ProxyConfig>> {
        self.clients
            .iter()
            .map(|client| client.config().borrow().clone())
            .collect()
    }

    pub fn client_count(&self) -> usize {
        self.clients.len()
    }

    pub fn raw_count(&self) -> usize {
        self.raw.len()
    }

    /// Stops every sidecar and waits for them.
    pub async fn stop(self) {
        let _ = self.stop.send(true);
        for client in self.clients {
            client.shutdown().await;
        }
        for task in self.raw {
            // A raw sidecar that panicked has recorded what it saw; its end is no news.
            let _ = task.await;
        }
    }
}

/// What a raw sidecar holds: the version it last acknowledged, in which cluster.
#[derive(Debug, Clone, Default)]
struct Applied {
    cluster_id: String,
    version: u64,
}

/// One raw sidecar: open a stream to a random replica, say hello with the last version,
/// record and acknowledge every response, and move to another replica when the stream ends.
async fn raw_sidecar(
    sidecar: u32,
    replicas: Vec<String>,
    recorder: Recorder,
    clock: Clock,
    seed: u64,
    mut stop: watch::Receiver<bool>,
) {
    let mut rng = StdRng::seed_from_u64(seed);
    let applied = Arc::new(Mutex::new(Applied::default()));
    while !*stop.borrow() {
        let replica = rng.random_range(0..replicas.len());
        let stream = follow(
            sidecar,
            replica,
            &replicas[replica],
            &applied,
            &recorder,
            clock,
        );
        tokio::select! {
            _ = stream => {}
            _ = stop.wait_for(|stopped| *stopped) => break,
        }
        let backoff = Duration::from_millis(rng.random_range(20..200));
        let _ = tokio::time::timeout(backoff, stop.wait_for(|stopped| *stopped)).await;
    }
}

/// Follows one stream until it ends.
async fn follow(
    sidecar: u32,
    replica: usize,
    address: &str,
    applied: &Mutex<Applied>,
    recorder: &Recorder,
    clock: Clock,
) {
    let Ok(endpoint) = Endpoint::from_shared(format!("http://{address}")) else {
        return;
    };
    let endpoint = endpoint
        .connect_timeout(Duration::from_millis(500))
        .http2_keep_alive_interval(Duration::from_secs(1))
        .keep_alive_timeout(Duration::from_secs(2));
    let Ok(channel) = endpoint.connect().await else {
        return;
    };
    let start = applied
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
        .clone();
    let (requests, outbound) = mpsc::channel(4);
    if requests.send(hello(sidecar, &start)).await.is_err() {
        return;
    }
    let mut client = RawClient::new(channel).max_decoding_message_size(64 * 1024 * 1024);
    let Ok(response) = client.stream(ReceiverStream::new(outbound)).await else {
        return;
    };
    let mut responses = response.into_inner();
    while let Ok(Some(response)) = responses.message().await {
        recorder.sidecar(SidecarEvent {
            sidecar,
            at: clock.now(),
            cluster_id: response.cluster_id.clone(),
            version: response.version,
            replica: Some(replica),
            from_version: match &response.update {
                Some(pb::discovery_response::Update::Delta(delta)) => Some(delta.from_version),
                _ => None,
            },
            kind: SidecarEventKind::Received,
        });
        // The check reads the recorded responses; the sidecar itself takes whatever it is
        // sent, so one bad response does not hide the ones after it.
        {
            let mut state = applied.lock().unwrap_or_else(PoisonError::into_inner);
            state.cluster_id = response.cluster_id.clone();
            state.version = state.version.max(response.version);
        }
        let ack = pb::DiscoveryRequest {
            message: Some(pb::discovery_request::Message::Ack(pb::Ack {
                version: response.version,
                nonce: response.nonce.clone(),
            })),
        };
        if requests.send(ack).await.is_err() {
            return;
        }
    }
}

fn hello(sidecar: u32, applied: &Applied) -> pb::DiscoveryRequest {
    pb::DiscoveryRequest {
        message: Some(pb::discovery_request::Message::Hello(pb::Hello {
            identity: Some(pb::ProxyIdentity {
                pod: format!("chaos-raw-sidecar-{sidecar}"),
                namespace: REGISTER_NAMESPACE.to_owned(),
                proxy_version: "netting-chaos".to_owned(),
                ..Default::default()
            }),
            subscription: Some(pb::Subscription {
                namespaces: vec![REGISTER_NAMESPACE.to_owned()],
                services: vec![],
            }),
            last_version: applied.version,
            cluster_id: applied.cluster_id.clone(),
        })),
    }
}
