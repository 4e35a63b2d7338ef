//! Writers and readers of the catalog. Each starts every operation at a replica picked at random
//! (writes sent to a follower are forwarded by it) and, like the server forwarding to its
//! leader, moves on to the next replica when a try fails without an answer (see
//! [`netting_proto::retry`]). It records when the operation was invoked and when it completed,
//! and classifies the outcome conservatively: only what certainly did not happen is `Failed`;
//! anything that may have reached a leader is `Unknown`.

use std::sync::Arc;
use std::time::Duration;

use netting_proto::catalog::v1 as pb;
use netting_proto::catalog::v1::catalog_client::CatalogClient;
use netting_proto::retry;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use tokio::sync::{Mutex, watch};
use tokio::time::Instant;
use tonic::transport::{Channel, Endpoint};
use tonic::{Code, Status};

use super::keyspace::{Keyspace, RegisterKey};
use super::{Clock, LEDGER_NAMESPACE, REGISTER_NAMESPACE, Recorder, ReplicaAddress};
use crate::history::{LedgerWrite, Outcome, RegisterOp, RegisterOperation};

/// How long one operation may go on, over all the replicas it tries, before its outcome is
/// unknown. Longer than a replica's own write timeout, so that a replica that answers at all is
/// heard.
pub const OPERATION_TIMEOUT: Duration = Duration::from_secs(6);
/// How long one try on one replica may take before the operation moves to the next replica: a
/// paused or cut-off replica never answers, and a client must not spend its whole operation on
/// it. Longer than an election takes in the lab (up to ~2.5 s), so a replica that is waiting
/// for a new leader to forward to is heard.
pub const ATTEMPT_TIMEOUT: Duration = Duration::from_secs(3);
/// Pause after every replica failed once in a row, before the next round of tries.
const ROUND_PAUSE: Duration = Duration::from_millis(50);
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
    /// [`OPERATION_TIMEOUT`] and [`ATTEMPT_TIMEOUT`], shorter in tests.
    operation_timeout: Duration,
    attempt_timeout: Duration,
}

/// Why a request was not sent or not answered.
#[derive(Debug)]
pub enum CallError {
    /// The replica could not be reached: nothing was sent.
    Connect(String),
    /// The request was sent; the status says what came back (or that nothing did).
    Status(Status),
}

impl CallError {
    /// Whether another replica may answer where this one did not: nothing was sent, or the
    /// try failed without an answer to the request.
    pub fn is_transient(&self) -> bool {
        match self {
            CallError::Connect(_) => true,
            CallError::Status(status) => retry::is_transient(status),
        }
    }

    /// Whether the request certainly had no effect: it was never sent. Every status may come
    /// after a leader received the request, so none is certain here (refusals are told apart by
    /// [`classify_write_error`]).
    fn certainly_not_sent(&self) -> bool {
        matches!(self, CallError::Connect(_))
    }
}

/// What trying one operation on replica after replica came to.
#[derive(Debug)]
pub struct Tried<T> {
    /// The last try's result.
    pub result: Result<T, CallError>,
    /// The replica that gave the last result.
    pub replica: usize,
    /// How many tries were made.
    pub tries: u32,
    /// Whether a try before the last one may have taken effect: a write it carried may still
    /// be applied, once more, after the last try's answer.
    pub earlier_may_apply: bool,
}

impl<T> Tried<T> {
    /// The same tries with the last result's success mapped.
    pub fn map<U>(self, f: impl FnOnce(T) -> U) -> Tried<U> {
        self.map_result(|result| result.map(f))
    }

    /// The same tries with the last result reinterpreted (an answer that means success).
    pub fn map_result<U>(
        self,
        f: impl FnOnce(Result<T, CallError>) -> Result<U, CallError>,
    ) -> Tried<U> {
        Tried {
            result: f(self.result),
            replica: self.replica,
            tries: self.tries,
            earlier_may_apply: self.earlier_may_apply,
        }
    }
}

impl Connections {
    pub fn new(replicas: Vec<ReplicaAddress>) -> Arc<Connections> {
        Self::with_timeouts(replicas, OPERATION_TIMEOUT, ATTEMPT_TIMEOUT)
    }

    /// Like [`Connections::new`], with other limits for an operation and for one try.
    pub fn with_timeouts(
        replicas: Vec<ReplicaAddress>,
        operation_timeout: Duration,
        attempt_timeout: Duration,
    ) -> Arc<Connections> {
        let channels = replicas.iter().map(|_| Mutex::new(None)).collect();
        Arc::new(Connections {
            replicas,
            channels,
            operation_timeout,
            attempt_timeout,
        })
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

    /// Runs one catalog call on `replica` within [`OPERATION_TIMEOUT`], on that replica only.
    pub async fn call<T, F, Fut>(&self, replica: usize, call: F) -> Result<T, CallError>
    where
        F: FnOnce(CatalogClient<Channel>) -> Fut,
        Fut: Future<Output = Result<tonic::Response<T>, Status>>,
    {
        self.try_once(replica, self.operation_timeout, call).await
    }

    /// Runs one catalog call starting at `first` and, while a try fails without an answer,
    /// on the next replica, round after round, until one answers or [`OPERATION_TIMEOUT`]
    /// has passed; each try gets at most [`ATTEMPT_TIMEOUT`]. `call` builds the same request
    /// for every try.
    pub async fn call_with_failover<T, F, Fut>(&self, first: usize, mut call: F) -> Tried<T>
    where
        F: FnMut(CatalogClient<Channel>) -> Fut,
        Fut: Future<Output = Result<tonic::Response<T>, Status>>,
    {
        let deadline = Instant::now() + self.operation_timeout;
        let mut replica = first;
        let mut tries = 0u32;
        let mut earlier_may_apply = false;
        loop {
            tries += 1;
            let left = deadline.saturating_duration_since(Instant::now());
            let result = self
                .try_once(replica, self.attempt_timeout.min(left), &mut call)
                .await;
            let retry = match &result {
                Err(error) => error.is_transient() && Instant::now() < deadline,
                Ok(_) => false,
            };
            if !retry {
                return Tried {
                    result,
                    replica,
                    tries,
                    earlier_may_apply,
                };
            }
            if let Err(error) = &result {
                earlier_may_apply |= !error.certainly_not_sent();
                tracing::debug!(replica, ?error, "try failed; moving to the next replica");
            }
            replica = (replica + 1) % self.len();
            if replica == first {
                tokio::time::sleep(
                    ROUND_PAUSE.min(deadline.saturating_duration_since(Instant::now())),
                )
                .await;
            }
        }
    }

    async fn try_once<T, F, Fut>(
        &self,
        replica: usize,
        timeout: Duration,
        call: F,
    ) -> Result<T, CallError>
    where
        F: FnOnce(CatalogClient<Channel>) -> Fut,
        Fut: Future<Output = Result<tonic::Response<T>, Status>>,
    {
        let channel = self.channel(replica).await?;
        let client = CatalogClient::new(channel)
            .max_decoding_message_size(MAX_MESSAGE)
            .max_encoding_message_size(MAX_MESSAGE);
        match tokio::time::timeout(timeout, call(client)).await {
            Ok(Ok(response)) => Ok(response.into_inner()),
            Ok(Err(status)) => {
                // The connection may be dead: the next operation dials again.
                if retry::is_transient(&status) {
                    self.forget(replica).await;
                }
                Err(CallError::Status(status))
            }
            Err(_) => {
                self.forget(replica).await;
                Err(CallError::Status(Status::deadline_exceeded(
                    "no answer within the try's timeout",
                )))
            }
        }
    }
}

/// The outcome of a write that did not return success.
///
/// RESOURCE_EXHAUSTED is not a refusal: no replica answers a write with it, so it comes from
/// the HTTP/2 layer after the request was sent (a GOAWAY with ENHANCE_YOUR_CALM tears down the
/// connection of a forwarded write in flight, as a paused leader's server does when it wakes to
/// a backlog of reset streams) or from a message-size limit on the answer. Either way the write
/// may have been applied.
pub fn classify_write_error(error: &CallError) -> Outcome {
    match error {
        CallError::Connect(_) => Outcome::Failed,
        CallError::Status(status) => match status.code() {
            // Refused while checking the request, before anything was proposed.
            Code::InvalidArgument | Code::Unimplemented => Outcome::Failed,
            _ => Outcome::Unknown,
        },
    }
}

/// The outcome of a write tried on one replica after another, from its last try's result
/// (`Ok` or [`classify_write_error`]) and whether an earlier try may have taken effect.
///
/// Every try of a write carries the same request id, so the replicas apply it at most once
/// however many tries reached a leader, and answer a repeat with the first application's
/// result: an acknowledged write is acknowledged, at the version it was applied at. A write
/// whose last try certainly failed may still have been applied by an earlier one: unknown.
pub fn outcome_after_tries(last: Outcome, earlier_may_apply: bool) -> Outcome {
    match last {
        Outcome::Failed if earlier_may_apply => Outcome::Unknown,
        other => other,
    }
}

/// How a write ended, from the last try's result and whether an earlier try may still apply.
fn recorded_outcome<T>(last: &Result<T, CallError>, earlier_may_apply: bool) -> Outcome {
    let last = match last {
        Ok(_) => Outcome::Ok,
        Err(error) => classify_write_error(error),
    };
    outcome_after_tries(last, earlier_may_apply)
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

impl Worker {
    /// The request id of operation `id`, sent with every try of it so that the replicas apply
    /// it at most once. Operation ids are unique in a run and increase, and every run starts
    /// a new cluster, so the worker's number names the client.
    fn request_id(&self, id: u64) -> pb::RequestId {
        pb::RequestId {
            client: format!("netting-chaos-{}", self.client),
            sequence: id + 1,
        }
    }
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
    let tried = match &value {
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
                request_id: Some(worker.request_id(id)),
                ..Default::default()
            };
            register_endpoint(connections, replica, request).await
        }
        None => {
            let request =
                deregister_request(REGISTER_NAMESPACE, &key.service, key, worker.request_id(id));
            // A removal that found the register empty leaves what this write means to leave:
            // a successful write of "absent" (at version 0, changing nothing).
            deregister_endpoint(connections, replica, request).await
        }
    }
    .map(|response| Some(response.version).filter(|v| *v > 0));
    let completed = clock.now();
    let outcome = recorded_outcome(&tried.result, tried.earlier_may_apply);
    recorder.register(RegisterOperation {
        id,
        client: *client,
        key: key.name(),
        op: RegisterOp::Write { value },
        invoked,
        completed: (outcome != Outcome::Unknown).then_some(completed),
        outcome,
        replica: tried.replica,
        version: tried.result.ok().flatten(),
        written_at: None,
    });
}

/// Registers an endpoint, failing over.
async fn register_endpoint(
    connections: &Connections,
    replica: usize,
    request: pb::RegisterRequest,
) -> Tried<pb::WriteResponse> {
    connections
        .call_with_failover(replica, |mut c| {
            let request = request.clone();
            async move { c.register(request).await }
        })
        .await
}

/// Removes an endpoint, failing over. NOT_FOUND is decided when the command is applied: the
/// endpoint was not there, which is what a removal leaves, so it is a success that changed
/// nothing (version 0).
async fn deregister_endpoint(
    connections: &Connections,
    replica: usize,
    request: pb::DeregisterRequest,
) -> Tried<pb::WriteResponse> {
    connections
        .call_with_failover(replica, |mut c| {
            let request = request.clone();
            async move { c.deregister(request).await }
        })
        .await
        .map_result(|result| match result {
            Err(CallError::Status(status)) if status.code() == Code::NotFound => {
                Ok(pb::WriteResponse::default())
            }
            other => other,
        })
}

fn deregister_request(
    namespace: &str,
    service: &str,
    key: &RegisterKey,
    request_id: pb::RequestId,
) -> pb::DeregisterRequest {
    pb::DeregisterRequest {
        namespace: namespace.to_owned(),
        service: service.to_owned(),
        endpoint: Some(pb::EndpointId {
            address: key.address.clone(),
            port: key.port,
        }),
        request_id: Some(request_id),
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

/// Reads one register with a linearizable read, failing over like a write, and records it. A
/// read that fails tells nothing and is recorded as `Failed` (the checker ignores it).
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
    let tried = connections
        .call_with_failover(replica, |mut c| {
            let request = request.clone();
            async move { c.get_service(request).await }
        })
        .await;
    let completed = clock.now();
    // A read changes nothing, so earlier tries do not matter: the last one's answer was read
    // at some point between the invocation and now.
    let replica = tried.replica;
    let (observed, version, written_at) = match tried.result {
        Ok(response) => {
            let endpoint = response.service.and_then(|service| {
                service
                    .endpoints
                    .into_iter()
                    .find(|e| e.address == key.address && e.port == key.port)
            });
            let written_at = endpoint.as_ref().map(|e| e.modify_index);
            (
                Some(endpoint.map(|e| e.pod)),
                Some(response.version),
                written_at,
            )
        }
        // A linearizable read of a service that does not exist: the register is absent.
        Err(CallError::Status(status)) if status.code() == Code::NotFound => {
            (Some(None), None, None)
        }
        Err(error) => {
            tracing::debug!(replica, ?error, "read failed");
            (None, None, None)
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
        written_at,
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
    let tried = if register {
        let request = pb::RegisterRequest {
            namespace: namespace.to_owned(),
            service: key.service.clone(),
            endpoint: Some(pb::Endpoint {
                address: key.address.clone(),
                port: key.port,
                ready: true,
                ..Default::default()
            }),
            request_id: Some(worker.request_id(id)),
            ..Default::default()
        };
        register_endpoint(connections, replica, request).await
    } else {
        // A removal that found nothing: its registration had not landed, or never will.
        let request = deregister_request(namespace, &key.service, key, worker.request_id(id));
        deregister_endpoint(connections, replica, request).await
    };
    let completed = clock.now();
    let outcome = recorded_outcome(&tried.result, tried.earlier_may_apply);
    let replica = tried.replica;
    // Version 0: a removal that found nothing changed nothing.
    let (version, leader) = match tried.result {
        Ok(response) => (
            Some(response.version).filter(|v| *v > 0),
            Some(response.leader_id).filter(|_| response.version > 0),
        ),
        Err(_) => (None, None),
    };
    let completed = (outcome != Outcome::Unknown).then_some(completed);
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

#[cfg(test)]
mod tests;
