//! Many light-weight simulated sidecars in one process.
//!
//! A sidecar here is one tokio task with one `Discovery/Stream`; it keeps no configuration,
//! only the versions it applied, when, and whether each came as a snapshot or a delta. Streams
//! share HTTP/2 connections: each replica gets a pool of channels, and every channel carries
//! up to `streams_per_connection` sidecars, so 10,000 sidecars need a few hundred sockets
//! rather than 10,000 (the process is limited to 20,000 descriptors, and a connection per
//! sidecar would also measure the kernel rather than the control plane).
//!
//! Reconnects follow the real client (`netting-discovery-client`): after a stream that applied
//! something ends, wait a full-jitter delay below the minimum backoff, then try the next
//! replica in the list, resuming from the last applied version; the ceiling doubles while
//! attempts fail.

use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use netting_proto::discovery::v1 as pb;
use netting_proto::discovery::v1::discovery_client::DiscoveryClient;
use prost::Message as _;
use rand::Rng;
use tokio::sync::{OwnedSemaphorePermit, Semaphore, mpsc};
use tokio::task::JoinHandle;
use tokio_stream::wrappers::ReceiverStream;
use tonic::transport::{Channel, Endpoint};

use crate::support::sidecar::{ack, hello};

/// How an update arrived.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Kind {
    Snapshot,
    Delta,
}

/// One applied response.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Applied {
    pub(crate) version: u64,
    /// Right after the ACK was queued: the sidecar has applied it and said so.
    pub(crate) at: Instant,
    pub(crate) kind: Kind,
    /// The first response of a stream (the answer to the hello).
    pub(crate) first_on_stream: bool,
    pub(crate) replica: usize,
}

/// What one sidecar did; written by its task, read by the benchmark.
#[derive(Debug)]
pub(crate) struct Sidecar {
    /// Highest version applied; polled to see when everyone is there.
    pub(crate) version: AtomicU64,
    /// The replica of the current (or last) stream.
    pub(crate) replica: AtomicUsize,
    pub(crate) log: Mutex<Vec<Applied>>,
    /// Responses with a version below one applied before (the "never backwards" invariant).
    pub(crate) regressions: AtomicU64,
}

/// How the fleet connects.
#[derive(Debug, Clone)]
pub(crate) struct FleetOptions {
    pub(crate) sidecars: usize,
    pub(crate) streams_per_connection: usize,
    /// Streams that may be waiting for their first response at once while the fleet starts,
    /// so the start-up wave does not run into the replicas' hello timeout.
    pub(crate) opening_at_once: usize,
    pub(crate) backoff_min: Duration,
    pub(crate) backoff_max: Duration,
    pub(crate) namespace: String,
}

pub(crate) struct Fleet {
    pub(crate) sidecars: Vec<Arc<Sidecar>>,
    /// Largest snapshot received, encoded, in bytes: what a replica encodes per new session.
    pub(crate) snapshot_bytes: Arc<AtomicUsize>,
    pub(crate) connections_per_replica: usize,
    tasks: Vec<JoinHandle<()>>,
}

impl Drop for Fleet {
    fn drop(&mut self) {
        for task in &self.tasks {
            task.abort();
        }
    }
}

fn endpoint(addr: &str) -> Endpoint {
    Endpoint::from_shared(format!("http://{addr}"))
        .unwrap()
        .connect_timeout(Duration::from_secs(1))
        .tcp_nodelay(true)
        // Many streams share the connection: room for a snapshot on each of them before the
        // client must return flow-control credit.
        .initial_connection_window_size(Some(16 * 1024 * 1024))
        .initial_stream_window_size(Some(1024 * 1024))
        // Every stream's first call passes through the channel's request buffer.
        .buffer_size(4096)
}

impl Fleet {
    /// Starts `options.sidecars` sidecars; sidecar `i` starts on replica `i % replicas.len()`.
    pub(crate) fn start(replicas: &[String], options: &FleetOptions) -> Fleet {
        let count = replicas.len();
        let per_replica = options.sidecars.div_ceil(count);
        let connections = per_replica
            .div_ceil(options.streams_per_connection.max(1))
            .max(1);
        let pools: Arc<Vec<Vec<Channel>>> = Arc::new(
            replicas
                .iter()
                .map(|addr| {
                    (0..connections)
                        .map(|_| endpoint(addr).connect_lazy())
                        .collect()
                })
                .collect(),
        );
        let opening = Arc::new(Semaphore::new(options.opening_at_once.max(1)));
        let snapshot_bytes = Arc::new(AtomicUsize::new(0));
        let mut sidecars = Vec::with_capacity(options.sidecars);
        let mut tasks = Vec::with_capacity(options.sidecars);
        for i in 0..options.sidecars {
            let state = Arc::new(Sidecar {
                version: AtomicU64::new(0),
                replica: AtomicUsize::new(i % count),
                log: Mutex::new(Vec::with_capacity(8)),
                regressions: AtomicU64::new(0),
            });
            sidecars.push(state.clone());
            let run = Run {
                pod: format!("bench-{i}"),
                namespace: options.namespace.clone(),
                home: i % count,
                slot: i / count,
                pools: pools.clone(),
                state,
                snapshot_bytes: snapshot_bytes.clone(),
                backoff_min: options.backoff_min,
                backoff_max: options.backoff_max,
            };
            let opening = opening.clone();
            tasks.push(tokio::spawn(async move {
                let permit = opening.acquire_owned().await.unwrap();
                run.run(permit).await;
            }));
        }
        Fleet {
            sidecars,
            snapshot_bytes,
            connections_per_replica: connections,
            tasks,
        }
    }

    pub(crate) fn len(&self) -> usize {
        self.sidecars.len()
    }

    /// How many sidecars have applied at least `version`.
    pub(crate) fn at_least(&self, version: u64) -> usize {
        self.sidecars
            .iter()
            .filter(|s| s.version.load(Ordering::Acquire) >= version)
            .count()
    }

    /// Waits until every sidecar has applied at least `version`; false after `patience`.
    /// Polling only detects the end: the times come from each sidecar's own record.
    pub(crate) async fn wait_all_at(&self, version: u64, patience: Duration) -> bool {
        let deadline = Instant::now() + patience;
        loop {
            if self.at_least(version) == self.len() {
                return true;
            }
            if Instant::now() > deadline {
                return false;
            }
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
    }

    /// When each chosen sidecar first applied a version of at least `version`.
    pub(crate) fn reached(&self, version: u64, chosen: &[usize]) -> Vec<Option<Instant>> {
        chosen
            .iter()
            .map(|&i| {
                let log = self.sidecars[i].log.lock().unwrap();
                log.iter().find(|a| a.version >= version).map(|a| a.at)
            })
            .collect()
    }

    /// The first response of the first stream each chosen sidecar opened after `since`.
    pub(crate) fn first_after(&self, since: Instant, chosen: &[usize]) -> Vec<Option<Applied>> {
        chosen
            .iter()
            .map(|&i| {
                let log = self.sidecars[i].log.lock().unwrap();
                log.iter()
                    .find(|a| a.first_on_stream && a.at > since)
                    .copied()
            })
            .collect()
    }

    /// Snapshots each chosen sidecar received after `since`.
    pub(crate) fn snapshots_after(&self, since: Instant, chosen: &[usize]) -> usize {
        chosen
            .iter()
            .map(|&i| {
                let log = self.sidecars[i].log.lock().unwrap();
                log.iter()
                    .filter(|a| a.at > since && a.kind == Kind::Snapshot)
                    .count()
            })
            .sum()
    }

    /// Sidecars whose current stream is to `replica`.
    pub(crate) fn on_replica(&self, replica: usize) -> Vec<usize> {
        (0..self.len())
            .filter(|&i| self.sidecars[i].replica.load(Ordering::Acquire) == replica)
            .collect()
    }

    pub(crate) fn regressions(&self) -> u64 {
        self.sidecars
            .iter()
            .map(|s| s.regressions.load(Ordering::Relaxed))
            .sum()
    }
}

struct Run {
    pod: String,
    namespace: String,
    home: usize,
    /// Which connection of a replica's pool this sidecar uses.
    slot: usize,
    pools: Arc<Vec<Vec<Channel>>>,
    state: Arc<Sidecar>,
    snapshot_bytes: Arc<AtomicUsize>,
    backoff_min: Duration,
    backoff_max: Duration,
}

impl Run {
    async fn run(self, permit: OwnedSemaphorePermit) {
        let mut permit = Some(permit);
        let mut target = self.home;
        let mut ceiling = self.backoff_min;
        let mut current = 0u64;
        let mut cluster_id = String::new();
        loop {
            let applied = self
                .stream(target, &mut current, &mut cluster_id, &mut permit)
                .await;
            if applied {
                ceiling = self.backoff_min;
            }
            let delay = {
                let nanos = u64::try_from(ceiling.as_nanos()).unwrap_or(u64::MAX);
                Duration::from_nanos(rand::rng().random_range(0..=nanos))
            };
            ceiling = (ceiling * 2).min(self.backoff_max);
            target = (target + 1) % self.pools.len();
            tokio::time::sleep(delay).await;
        }
    }

    /// One stream, until it ends; whether it applied anything.
    async fn stream(
        &self,
        replica: usize,
        current: &mut u64,
        cluster_id: &mut String,
        permit: &mut Option<OwnedSemaphorePermit>,
    ) -> bool {
        let pool = &self.pools[replica];
        let mut client = DiscoveryClient::new(pool[self.slot % pool.len()].clone());
        // The protocol has at most one response unacknowledged, so one ACK is ever queued.
        let (requests, rx) = mpsc::channel(4);
        let first = hello(&self.pod, &[self.namespace.as_str()], *current, cluster_id);
        requests.try_send(first).unwrap();
        let Ok(response) = client.stream(ReceiverStream::new(rx)).await else {
            return false;
        };
        let mut responses = response.into_inner();
        let mut first_on_stream = true;
        let mut applied = false;
        while let Ok(Some(response)) = responses.message().await {
            let kind = match response.update {
                Some(pb::discovery_response::Update::Snapshot(_)) => {
                    self.snapshot_bytes
                        .fetch_max(response.encoded_len(), Ordering::Relaxed);
                    Kind::Snapshot
                }
                _ => Kind::Delta,
            };
            if response.cluster_id == *cluster_id && response.version < *current {
                self.state.regressions.fetch_add(1, Ordering::Relaxed);
            }
            let _ = requests.try_send(ack(&response));
            let at = Instant::now();
            *current = (*current).max(response.version);
            if *cluster_id != response.cluster_id {
                cluster_id.clone_from(&response.cluster_id);
            }
            self.state.log.lock().unwrap().push(Applied {
                version: response.version,
                at,
                kind,
                first_on_stream,
                replica,
            });
            if first_on_stream {
                self.state.replica.store(replica, Ordering::Release);
                // Let the next sidecar of the start-up wave open its stream.
                permit.take();
            }
            self.state.version.store(*current, Ordering::Release);
            first_on_stream = false;
            applied = true;
        }
        applied
    }
}
