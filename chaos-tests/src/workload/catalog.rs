//! Writers and readers of the catalog. Each sends every operation to a replica picked at random
//! (writes sent to a follower are forwarded by it), records when it was invoked and when it
//! completed, and classifies the outcome conservatively: only what certainly did not happen is
//! `Failed`; anything that may have reached a leader is `Unknown`.

use std::sync::Arc;
use std::time::Duration;

use netting_proto::catalog::v1 as pb;
use netting_proto::catalog::v1::catalog_client::CatalogClient;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use tokio::sync::{Mutex, watch};
use tonic::transport::{Channel, Endpoint};
use tonic::{Code, Status};

use super::keyspace::{Keyspace, RegisterKey};
use super::{Clock, LEDGER_NAMESPACE, REGISTER_NAMESPACE, Recorder, ReplicaAddress};
use crate::history::{LedgerWrite, Outcome, RegisterOp, RegisterOperation};

/// How long one operation may take before its outcome is unknown. Longer than a replica's own
/// write timeout, so that a replica that answers at all is heard.
pub const OPERATION_TIMEOUT: Duration = Duration::from_secs(6);
const CONNECT_TIMEOUT: Duration = Duration::from_millis(500);
/// Snapshots of a long run's ledger exceed tonic's default 4 MiB.
const MAX_MESSAGE: usize = 256 * 1024 * 1024;

/// One lazily opened channel per replica, shared by every worker. A channel whose call failed
/// at the transport is dropped, so the next operation dials again and learns whether the
/// replica is reachable before it sends anything.
#[derive(Debug)]
pub struct Connections {
    replicas: Vec<ReplicaAddress>,
    channels: Vec<Mutex<Option<Channel>>>,
}

/// Why a request was not sent or not answered.
#[derive(Debug)]
pub enum CallError {
    /// The replica could not be reached: nothing was sent.
    Connect(String),
    /// The request was sent; the status says what came back (or that nothing did).
    Status(Status),
}

impl Connections {
    pub fn new(replicas: Vec<ReplicaAddress>) -> Arc<Connections> {
        let channels = replicas.iter().map(|_| Mutex::new(None)).collect();
        Arc::new(Connections { replicas, channels })
    }

    pub fn len(&self) -> usize {
        self.replicas.len()
    }

    pub fn is_empty(&self) -> bool {
        self.replicas.is_empty()
    }

    async fn channel(&self, replica: usize) -> Result<Channel, CallError> {
        let mut slot = self.channels[replica].lock().await;
        if let Some(channel) = slot.as_ref() {
            return Ok(channel.clone());
        }
        let uri = format!("http://{}", self.replicas[replica].grpc);
        let endpoint = Endpoint::from_shared(uri)
            .map_err(|e| CallError::Connect(e.to_string()))?
            .connect_timeout(CONNECT_TIMEOUT)
            .tcp_nodelay(true);
        let channel = tokio::time::timeout(CONNECT_TIMEOUT * 2, endpoint.connect())
            .await
            .map_err(|_| CallError::Connect("connect timed out".to_owned()))?
            .map_err(|e| CallError::Connect(e.to_string()))?;
        *slot = Some(channel.clone());
        Ok(channel)
    }

    async fn forget(&self, replica: usize) {
        *self.channels[replica].lock().await = None;
    }

    /// Runs one catalog call on `replica` within [`OPERATION_TIMEOUT`].
    pub async fn call<T, F, Fut>(&self, replica: usize, call: F) -> Result<T, CallError>
    where
        F: FnOnce(CatalogClient<Channel>) -> Fut,
        Fut: Future<Output = Result<tonic::Response<T>, Status>>,
    {
        let channel = self.channel(replica).await?;
        let client = CatalogClient::new(channel)
            .max_decoding_message_size(MAX_MESSAGE)
            .max_encoding_message_size(MAX_MESSAGE);
        match tokio::time::timeout(OPERATION_TIMEOUT, call(client)).await {
            Ok(Ok(response)) => Ok(response.into_inner()),
            Ok(Err(status)) => {
                if is_transport_failure(&status) {
                    self.forget(replica).await;
                }
                Err(CallError::Status(status))
            }
            Err(_) => {
                self.forget(replica).await;
                Err(CallError::Status(Status::deadline_exceeded(
                    "no answer within the operation timeout",
                )))
            }
        }
    }
}

/// A status after which the connection may be dead: the next operation dials again.
fn is_transport_failure(status: &Status) -> bool {
    matches!(
        status.code(),
        Code::Unavailable | Code::Unknown | Code::Cancelled
    )
}

/// The outcome of a write that did not return success.
pub fn classify_write_error(error: &CallError) -> Outcome {
    match error {
        CallError::Connect(_) => Outcome::Failed,
        CallError::Status(status) => match status.code() {
            // Refused while checking the request, before anything was proposed.
            Code::InvalidArgument | Code::ResourceExhausted | Code::Unimplemented => {
                Outcome::Failed
            }
            _ => Outcome::Unknown,
        },
    }
}

/// What every worker holds: who it is in the history, how it reaches the replicas, where it
/// records, and when to stop.
#[derive(Debug, Clone)]
pub struct Worker {
    pub client: u32,
    pub connections: Arc<Connections>,
    pub recorder: Recorder,
    pub clock: Clock,
    pub stop: watch::Receiver<bool>,
}

/// Settings shared by the workers.
#[derive(Debug, Clone)]
pub struct WorkerSettings {
    /// Pause between two operations of one worker.
    pub pause: Duration,
    pub seed: u64,
}

/// Writes random unique values to registers, and removes them; one operation at a time.
pub async fn register_writer(
    mut worker: Worker,
    keyspace: Arc<Keyspace>,
    settings: WorkerSettings,
) {
    let client = worker.client;
    let mut rng = StdRng::seed_from_u64(settings.seed ^ (u64::from(client) << 32));
    let mut sequence = 0u64;
    while !*worker.stop.borrow() {
        let slot = rng.random_range(0..keyspace.slots());
        let assignment = keyspace.assign(slot);
        let value = if assignment.retire || rng.random_ratio(1, 8) {
            None
        } else {
            sequence += 1;
            Some(format!("w{client}-{sequence}"))
        };
        let replica = rng.random_range(0..worker.connections.len());
        write_register(&worker, replica, &assignment.key, value).await;
        pause(&mut worker.stop, settings.pause).await;
    }
}

/// Sets (`Some`) or removes (`None`) one register and records the operation.
pub async fn write_register(
    worker: &Worker,
    replica: usize,
    key: &RegisterKey,
    value: Option<String>,
) {
    let Worker {
        client,
        connections,
        recorder,
        clock,
        ..
    } = worker;
    let id = recorder.next_id();
    let invoked = clock.now();
    let result = match &value {
        Some(pod) => {
            let request = pb::RegisterRequest {
                namespace: REGISTER_NAMESPACE.to_owned(),
                service: key.service.clone(),
                endpoint: Some(pb::Endpoint {
                    address: key.address.clone(),
                    port: key.port,
                    ready: true,
                    pod: pod.clone(),
                    ..Default::default()
                }),
                ..Default::default()
            };
            connections
                .call(replica, |mut c| async move { c.register(request).await })
                .await
                .map(|r| Some(r.version))
        }
        None => {
            let request = deregister_request(REGISTER_NAMESPACE, &key.service, key);
            match connections
                .call(replica, |mut c| async move { c.deregister(request).await })
                .await
            {
                Ok(response) => Ok(Some(response.version)),
                // Decided when the command was applied: the register was already empty, which
                // is what this write leaves, so it is a successful write of "absent".
                Err(CallError::Status(status)) if status.code() == Code::NotFound => Ok(None),
                Err(error) => Err(error),
            }
        }
    };
    let completed = clock.now();
    let (outcome, completed, version) = match result {
        Ok(version) => (Outcome::Ok, Some(completed), version),
        Err(error) => match classify_write_error(&error) {
            Outcome::Failed => (Outcome::Failed, Some(completed), None),
            _ => (Outcome::Unknown, None, None),
        },
    };
    recorder.register(RegisterOperation {
        id,
        client: *client,
        key: key.name(),
        op: RegisterOp::Write { value },
        invoked,
        completed,
        outcome,
        replica,
        version,
    });
}

fn deregister_request(namespace: &str, service: &str, key: &RegisterKey) -> pb::DeregisterRequest {
    pb::DeregisterRequest {
        namespace: namespace.to_owned(),
        service: service.to_owned(),
        endpoint: Some(pb::EndpointId {
            address: key.address.clone(),
            port: key.port,
        }),
        request_id: None,
    }
}

/// Reads registers with linearizable reads, one at a time.
pub async fn register_reader(
    mut worker: Worker,
    keyspace: Arc<Keyspace>,
    settings: WorkerSettings,
) {
    let seed = settings.seed ^ (u64::from(worker.client) << 32) ^ 0x5eed;
    let mut rng = StdRng::seed_from_u64(seed);
    while !*worker.stop.borrow() {
        let key = keyspace.current(rng.random_range(0..keyspace.slots()));
        let replica = rng.random_range(0..worker.connections.len());
        read_register(&worker, replica, &key).await;
        pause(&mut worker.stop, settings.pause).await;
    }
}

/// Reads one register with a linearizable read and records it. A read that fails tells nothing
/// and is recorded as `Failed` (the checker ignores it).
pub async fn read_register(
    worker: &Worker,
    replica: usize,
    key: &RegisterKey,
) -> Option<Option<String>> {
    let Worker {
        client,
        connections,
        recorder,
        clock,
        ..
    } = worker;
    let id = recorder.next_id();
    let invoked = clock.now();
    let request = pb::GetServiceRequest {
        namespace: REGISTER_NAMESPACE.to_owned(),
        service: key.service.clone(),
        consistency: pb::Consistency::Linearizable as i32,
    };
    let result = connections
        .call(replica, |mut c| async move { c.get_service(request).await })
        .await;
    let completed = clock.now();
    let (observed, version) = match result {
        Ok(response) => {
            let value = response.service.and_then(|service| {
                service
                    .endpoints
                    .into_iter()
                    .find(|e| e.address == key.address && e.port == key.port)
                    .map(|e| e.pod)
            });
            (Some(value), Some(response.version))
        }
        // A linearizable read of a service that does not exist: the register is absent.
        Err(CallError::Status(status)) if status.code() == Code::NotFound => (Some(None), None),
        Err(error) => {
            tracing::debug!(replica, ?error, "read failed");
            (None, None)
        }
    };
    recorder.register(RegisterOperation {
        id,
        client: *client,
        key: key.name(),
        op: RegisterOp::Read {
            value: observed.clone().flatten(),
        },
        invoked,
        completed: Some(completed),
        outcome: if observed.is_some() {
            Outcome::Ok
        } else {
            Outcome::Failed
        },
        replica,
        version,
    });
    observed
}

/// Registers unique entries that are never overwritten, and now and then removes one of its
/// own acknowledged entries: the record the lost-write check reads.
pub async fn ledger_writer(mut worker: Worker, settings: WorkerSettings) {
    let client = worker.client;
    let mut rng = StdRng::seed_from_u64(settings.seed ^ (u64::from(client) << 32) ^ 0x1ed9);
    let mut sequence: u32 = 0;
    let mut live: Vec<RegisterKey> = Vec::new();
    while !*worker.stop.borrow() {
        // As many removals as registrations on average: the ledger stays small in a long run.
        let remove = !live.is_empty() && rng.random_ratio(1, 2);
        let (key, register) = if remove {
            let index = rng.random_range(0..live.len());
            (live.swap_remove(index), false)
        } else {
            sequence += 1;
            (ledger_key(client, sequence), true)
        };
        let replica = rng.random_range(0..worker.connections.len());
        let outcome = ledger_write(&worker, LEDGER_NAMESPACE, &key, register, replica).await;
        // An entry that may have been registered is a candidate for removal later (so the
        // ledger stays small); a removal is tried once, whatever its outcome, so every entry
        // has at most one of each.
        if register && outcome != Outcome::Failed {
            live.push(key);
        }
        pause(&mut worker.stop, settings.pause).await;
    }
}

/// Tries to remove a probe before leaving it in the catalog (each try is recorded).
const PROBE_REMOVAL_ATTEMPTS: usize = 10;

/// How often probes start and how many may wait at once.
#[derive(Debug, Clone, Copy)]
pub struct ProbeSettings {
    pub interval: Duration,
    pub max_in_flight: usize,
    pub seed: u64,
}

/// Open-loop probes: every `interval` a new probe starts, whatever happened to the earlier
/// ones, registers a unique entry in the register namespace (so sidecars are pushed the change)
/// and, once that is acknowledged, removes it again. Closed-loop workers stall while their one
/// operation waits on a frozen leader; probes keep arriving, so the first one acknowledged
/// after a fault tells when the cluster could take writes again. At most `max_in_flight` run
/// at once; a tick with none free is skipped.
pub async fn probe_writer(mut worker: Worker, settings: ProbeSettings) {
    let client = worker.client;
    let slots = Arc::new(tokio::sync::Semaphore::new(settings.max_in_flight));
    let mut rng = StdRng::seed_from_u64(settings.seed ^ 0x960b);
    let mut ticker = tokio::time::interval(settings.interval);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
    let mut sequence: u32 = 0;
    let mut probes = tokio::task::JoinSet::new();
    loop {
        tokio::select! {
            _ = ticker.tick() => {}
            _ = worker.stop.wait_for(|stopped| *stopped) => break,
        }
        let Ok(slot) = slots.clone().try_acquire_owned() else {
            continue;
        };
        sequence += 1;
        let key = RegisterKey {
            service: format!("probe-{}", sequence % 8),
            ..ledger_key(client, sequence)
        };
        let replicas = (
            rng.random_range(0..worker.connections.len()),
            rng.random_range(0..worker.connections.len()),
        );
        let worker = worker.clone();
        probes.spawn(async move {
            let registered =
                ledger_write(&worker, REGISTER_NAMESPACE, &key, true, replicas.0).await;
            // Also after an unknown outcome: a probe that may have landed is removed too, and
            // a removal that did not certainly happen is tried again on another replica, so
            // the namespace sidecars follow stays small however many faults a run injects.
            if registered != Outcome::Failed {
                let mut replica = replicas.1;
                for _ in 0..PROBE_REMOVAL_ATTEMPTS {
                    let removed =
                        ledger_write(&worker, REGISTER_NAMESPACE, &key, false, replica).await;
                    if removed == Outcome::Ok {
                        break;
                    }
                    replica = (replica + 1) % worker.connections.len();
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
            }
            drop(slot);
        });
        // Reap finished probes so the set does not grow with the run.
        while probes.try_join_next().is_some() {}
    }
    while probes.join_next().await.is_some() {}
}

/// Registers (`register`) or removes one unique entry and records it; returns the outcome.
async fn ledger_write(
    worker: &Worker,
    namespace: &str,
    key: &RegisterKey,
    register: bool,
    replica: usize,
) -> Outcome {
    let Worker {
        client,
        connections,
        recorder,
        clock,
        ..
    } = worker;
    let id = recorder.next_id();
    let invoked = clock.now();
    let result = if register {
        let request = pb::RegisterRequest {
            namespace: namespace.to_owned(),
            service: key.service.clone(),
            endpoint: Some(pb::Endpoint {
                address: key.address.clone(),
                port: key.port,
                ready: true,
                ..Default::default()
            }),
            ..Default::default()
        };
        connections
            .call(replica, |mut c| async move { c.register(request).await })
            .await
    } else {
        let request = deregister_request(namespace, &key.service, key);
        match connections
            .call(replica, |mut c| async move { c.deregister(request).await })
            .await
        {
            // Decided when the command was applied: the entry was not there, which is what a
            // removal leaves (its registration had not landed, or never will).
            Err(CallError::Status(status)) if status.code() == Code::NotFound => {
                Ok(pb::WriteResponse::default())
            }
            other => other,
        }
    };
    let completed = clock.now();
    let (outcome, completed, version, leader) = match result {
        // Version 0: a removal that found nothing changed nothing.
        Ok(response) => (
            Outcome::Ok,
            Some(completed),
            Some(response.version).filter(|v| *v > 0),
            Some(response.leader_id).filter(|_| response.version > 0),
        ),
        Err(error) => match classify_write_error(&error) {
            Outcome::Failed => (Outcome::Failed, Some(completed), None, None),
            _ => (Outcome::Unknown, None, None, None),
        },
    };
    recorder.ledger(LedgerWrite {
        id,
        client: *client,
        entry: format!("{namespace}/{}", key.name()),
        register,
        invoked,
        completed,
        outcome,
        replica,
        version,
        leader,
    });
    outcome
}

/// Ledger entries of one writer fill services of 64 endpoints each, so that no service (and no
/// read of it) grows with the length of the run.
pub fn ledger_key(client: u32, sequence: u32) -> RegisterKey {
    let [_, b, c, d] = sequence.to_be_bytes();
    RegisterKey {
        service: format!("ledger-{client}-{}", sequence / 64),
        address: format!("10.{b}.{c}.{d}"),
        port: 1000 + client,
    }
}

/// Sleeps `duration`, waking early when the workload stops.
async fn pause(stop: &mut watch::Receiver<bool>, duration: Duration) {
    if duration.is_zero() {
        tokio::task::yield_now().await;
        return;
    }
    // An error means the sender is gone: stop as if told to.
    let _ = tokio::time::timeout(duration, stop.wait_for(|stopped| *stopped)).await;
}
