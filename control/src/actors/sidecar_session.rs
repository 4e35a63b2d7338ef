//! One actor per connected sidecar stream: what the sidecar subscribed to, the version it
//! acknowledged, the response in flight, and whether a newer update waits.
//!
//! At most one response is unacknowledged at a time. Changes that arrive meanwhile only set a
//! flag; the next response is computed from the live catalog when the sidecar acknowledges.
//! So a slow or stuck sidecar costs a constant amount of memory however many writes it misses,
//! and never delays other sessions. A session stuck past the acknowledgement timeout is closed,
//! and every stream is recycled after a jittered maximum age.

use std::sync::Arc;
use std::time::{Duration, Instant};

use actix::prelude::*;
use netting_proto::discovery::v1 as pb;
use netting_raft::CatalogHandle;
use netting_raft::catalog::LogIndex;
use rand::Rng;
use tokio::sync::mpsc;
use tonic::Status;

use super::config_pusher::{AppliedTimes, PushReason, SessionClosed, SessionOpened};
use crate::discovery::hello::{SidecarIdentity, Subscription};
use crate::discovery::view;

pub type SessionId = u64;

/// What a session hands to its stream. Boxed because the channel allocates its slots in
/// blocks of 32 whatever its capacity: unboxed, each session would carry ~3.5 KiB of slots.
pub type Outbound = Box<Result<pb::DiscoveryResponse, Status>>;

/// Where the sidecar is, as far as this session knows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Base {
    /// It has nothing usable from this cluster: it gets a snapshot.
    Nothing,
    /// It has applied this version: it gets deltas from it.
    Version(LogIndex),
}

/// Timeouts of a session.
#[derive(Debug, Clone, Copy)]
pub struct SessionLimits {
    pub ack_timeout: Duration,
    pub max_age: Duration,
}

/// Tells a session that the catalog changed what it may see.
#[derive(Debug, Clone, Copy, Message)]
#[rtype(result = "()")]
pub struct PushUpdate {
    pub version: LogIndex,
    pub reason: PushReason,
    /// `Some(since)` when every service of this session that was written after `since` (the
    /// previous push) is, for sidecars, as it was at `since`: only a session that read the
    /// catalog after `since`, and so may hold a state in between, needs an update.
    pub unchanged_since: Option<LogIndex>,
}

/// The sidecar acknowledged a response.
#[derive(Debug, Message)]
#[rtype(result = "()")]
pub struct SidecarAck {
    pub version: LogIndex,
    pub nonce: String,
}

/// The sidecar refused a response; it keeps its last good configuration.
#[derive(Debug, Message)]
#[rtype(result = "()")]
pub struct SidecarNack {
    pub version: LogIndex,
    pub nonce: String,
    pub error: String,
}

/// The inbound stream ended: the sidecar went away, or broke the protocol (then `status` says
/// how, and is sent back before the stream closes).
#[derive(Debug, Message)]
#[rtype(result = "()")]
pub struct StreamEnded {
    pub violation: Option<Status>,
}

/// Asks a session to describe itself.
#[derive(Debug, Message)]
#[rtype(result = "SessionInfo")]
pub struct DescribeSession;

/// A session as operators see it.
#[derive(Debug, Clone)]
pub struct SessionInfo {
    pub pod: String,
    pub namespace: String,
    pub proxy_version: String,
    pub acked_version: Option<LogIndex>,
    pub sent_version: Option<LogIndex>,
    pub connected_for: Duration,
    pub nacks: u32,
    pub subscription: Arc<Subscription>,
}

struct InFlight {
    nonce: u64,
    version: LogIndex,
}

pub struct SidecarSession {
    id: SessionId,
    identity: SidecarIdentity,
    subscription: Arc<Subscription>,
    catalog: CatalogHandle,
    cluster_id: String,
    outbound: mpsc::Sender<Outbound>,
    base: Base,
    acked_version: Option<LogIndex>,
    in_flight: Option<InFlight>,
    pending: bool,
    next_nonce: u64,
    nacks: u32,
    connected_at: Instant,
    pusher_open: Recipient<SessionOpened>,
    pusher_closed: Recipient<SessionClosed>,
    limits: SessionLimits,
    applied_times: AppliedTimes,
    closing: bool,
}

impl std::fmt::Debug for SidecarSession {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SidecarSession")
            .field("id", &self.id)
            .field("pod", &self.identity.pod)
            .field("base", &self.base)
            .finish_non_exhaustive()
    }
}

/// Everything a session starts with.
#[derive(Debug)]
pub struct SessionStart {
    pub id: SessionId,
    pub identity: SidecarIdentity,
    pub subscription: Subscription,
    pub catalog: CatalogHandle,
    pub cluster_id: String,
    pub outbound: mpsc::Sender<Outbound>,
    pub base: Base,
    pub pusher_open: Recipient<SessionOpened>,
    pub pusher_closed: Recipient<SessionClosed>,
    pub limits: SessionLimits,
    pub applied_times: AppliedTimes,
}

impl SidecarSession {
    pub fn new(start: SessionStart) -> Self {
        Self {
            id: start.id,
            identity: start.identity,
            subscription: Arc::new(start.subscription),
            catalog: start.catalog,
            cluster_id: start.cluster_id,
            outbound: start.outbound,
            base: start.base,
            acked_version: None,
            in_flight: None,
            pending: false,
            next_nonce: 1,
            nacks: 0,
            connected_at: Instant::now(),
            pusher_open: start.pusher_open,
            pusher_closed: start.pusher_closed,
            limits: start.limits,
            applied_times: start.applied_times,
            closing: false,
        }
    }

    /// Sends an update from the sidecar's base to the live catalog: a delta when the catalog
    /// can tell one, else a snapshot. With `always`, an empty delta is sent too (the first
    /// response of a stream tells the sidecar it is current).
    fn send_update(&mut self, reason: PushReason, always: bool, ctx: &mut Context<Self>) {
        if self.closing {
            return;
        }
        if self.in_flight.is_some() {
            if self.pending {
                metrics::counter!("netting_config_pending_replaced_total").increment(1);
            }
            self.pending = true;
            return;
        }
        let subscription = &self.subscription;
        let base = self.base;
        let (version, update) = self.catalog.read(|catalog| {
            let base_version = match base {
                Base::Version(v) => v,
                Base::Nothing => 0,
            };
            // Never below what the sidecar has: a sidecar may claim a version that changed
            // nothing it sees, above this catalog's last change.
            let version = catalog.version().max(base_version);
            let delta = match base {
                Base::Version(v) => view::delta(catalog, subscription, v),
                Base::Nothing => None,
            };
            let update = match delta {
                Some((upserted, removed)) => {
                    if upserted.is_empty() && removed.is_empty() && !always {
                        None
                    } else {
                        Some(pb::discovery_response::Update::Delta(pb::Delta {
                            from_version: base_version,
                            upserted,
                            removed,
                        }))
                    }
                }
                None => Some(pb::discovery_response::Update::Snapshot(pb::Snapshot {
                    services: view::snapshot(catalog, subscription),
                })),
            };
            (version, update)
        });
        let Some(update) = update else {
            return;
        };
        let kind = match update {
            pb::discovery_response::Update::Snapshot(_) => "snapshot",
            pb::discovery_response::Update::Delta(_) => "delta",
        };
        let nonce = self.next_nonce;
        self.next_nonce += 1;
        let response = pb::DiscoveryResponse {
            nonce: nonce.to_string(),
            version,
            cluster_id: self.cluster_id.clone(),
            update: Some(update),
        };
        match self.outbound.try_send(Box::new(Ok(response))) {
            Ok(()) => {
                metrics::counter!("netting_config_updates_total", "kind" => kind, "reason" => reason.as_str())
                    .increment(1);
                self.in_flight = Some(InFlight { nonce, version });
                // One timer per response, so the timeout holds to the millisecond: still in
                // flight when it fires means the sidecar never answered this response.
                ctx.run_later(self.limits.ack_timeout, move |act, ctx| {
                    if act.in_flight.as_ref().is_some_and(|f| f.nonce == nonce) {
                        act.close(
                            Some(Status::deadline_exceeded(
                                "the sidecar did not acknowledge the last update in time",
                            )),
                            "ack_timeout",
                            ctx,
                        );
                    }
                });
            }
            // Only one response is ever unacknowledged, so a full channel means the stream is
            // gone or wedged: either way this session is over.
            Err(_) => self.close(None, "stream_gone", ctx),
        }
    }

    fn close(&mut self, status: Option<Status>, reason: &'static str, ctx: &mut Context<Self>) {
        if self.closing {
            return;
        }
        self.closing = true;
        if let Some(status) = status {
            let _ = self.outbound.try_send(Box::new(Err(status)));
        }
        metrics::counter!("netting_sessions_closed_total", "reason" => reason).increment(1);
        tracing::debug!(session = self.id, pod = %self.identity.pod, reason, "session closed");
        ctx.stop();
    }

    /// Matches an ACK or NACK with the response in flight; anything else breaks the protocol.
    fn take_in_flight(&mut self, version: LogIndex, nonce: &str) -> Result<InFlight, Status> {
        let matches = self
            .in_flight
            .as_ref()
            .is_some_and(|f| nonce.parse::<u64>().ok() == Some(f.nonce) && f.version == version);
        match self.in_flight.take() {
            Some(in_flight) if matches => Ok(in_flight),
            other => {
                self.in_flight = other;
                Err(Status::invalid_argument(format!(
                    "nonce {nonce:?} with version {version} does not match the response in flight"
                )))
            }
        }
    }

    fn after_answer(&mut self, ctx: &mut Context<Self>) {
        if self.pending {
            self.pending = false;
            self.send_update(PushReason::Pending, false, ctx);
        }
    }

    fn max_age_with_jitter(&self) -> Duration {
        // Up to a quarter earlier than the maximum, so streams opened together (after a
        // replica restart) do not all end together.
        let jitter = rand::rng().random_range(0.0..0.25);
        self.limits.max_age.mul_f64(1.0 - jitter)
    }
}

impl Actor for SidecarSession {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Self::Context) {
        // Register first, then compute the first response from the live catalog: any change
        // applied before registration is in that response, any change after it is pushed.
        let opened = SessionOpened {
            id: self.id,
            namespace: self.identity.namespace.clone(),
            pod: self.identity.pod.clone(),
            subscription: self.subscription.clone(),
            push: ctx.address().recipient(),
            describe: ctx.address().recipient(),
        };
        self.pusher_open
            .send(opened)
            .into_actor(self)
            .map(|registered, act, ctx| match registered {
                Ok(()) => act.send_update(PushReason::Connect, true, ctx),
                Err(_) => act.close(
                    Some(Status::unavailable("the replica is shutting down")),
                    "shutdown",
                    ctx,
                ),
            })
            .wait(ctx);
        let max_age = self.max_age_with_jitter();
        ctx.run_later(max_age, |act, ctx| {
            act.close(
                Some(Status::unavailable(
                    "the stream reached its maximum age; reconnect",
                )),
                "max_age",
                ctx,
            );
        });
    }

    fn stopped(&mut self, _: &mut Self::Context) {
        self.pusher_closed.do_send(SessionClosed { id: self.id });
    }
}

impl Handler<PushUpdate> for SidecarSession {
    type Result = ();

    fn handle(&mut self, msg: PushUpdate, ctx: &mut Self::Context) {
        let sent = self
            .in_flight
            .as_ref()
            .map(|f| f.version)
            .or(self.acked_version);
        if sent.is_some_and(|v| v >= msg.version) && !self.pending {
            return;
        }
        // What was sent was read at `sent`, no later than `since`: it already matches the
        // catalog for every service written since.
        if let Some(since) = msg.unchanged_since
            && sent.is_some_and(|v| v <= since)
        {
            return;
        }
        self.send_update(msg.reason, false, ctx);
    }
}

impl Handler<SidecarAck> for SidecarSession {
    type Result = ();

    fn handle(&mut self, msg: SidecarAck, ctx: &mut Self::Context) {
        match self.take_in_flight(msg.version, &msg.nonce) {
            Ok(in_flight) => {
                self.base = Base::Version(in_flight.version);
                self.acked_version = Some(in_flight.version);
                if let Some(elapsed) = self.applied_times.since_applied(in_flight.version) {
                    metrics::histogram!("netting_config_commit_to_ack_seconds")
                        .record(elapsed.as_secs_f64());
                }
                self.after_answer(ctx);
            }
            Err(status) => self.close(Some(status), "protocol_error", ctx),
        }
    }
}

impl Handler<SidecarNack> for SidecarSession {
    type Result = ();

    fn handle(&mut self, msg: SidecarNack, ctx: &mut Self::Context) {
        match self.take_in_flight(msg.version, &msg.nonce) {
            Ok(_) => {
                self.nacks = self.nacks.saturating_add(1);
                metrics::counter!("netting_config_nacks_total").increment(1);
                tracing::warn!(
                    session = self.id,
                    pod = %self.identity.pod,
                    namespace = %self.identity.namespace,
                    version = msg.version,
                    error = %msg.error,
                    "sidecar refused an update; it keeps its last good configuration"
                );
                self.after_answer(ctx);
            }
            Err(status) => self.close(Some(status), "protocol_error", ctx),
        }
    }
}

impl Handler<StreamEnded> for SidecarSession {
    type Result = ();

    fn handle(&mut self, msg: StreamEnded, ctx: &mut Self::Context) {
        match msg.violation {
            Some(status) => self.close(Some(status), "protocol_error", ctx),
            None => self.close(None, "client_gone", ctx),
        }
    }
}

impl Handler<DescribeSession> for SidecarSession {
    type Result = MessageResult<DescribeSession>;

    fn handle(&mut self, _: DescribeSession, _: &mut Self::Context) -> Self::Result {
        MessageResult(SessionInfo {
            pod: self.identity.pod.clone(),
            namespace: self.identity.namespace.clone(),
            proxy_version: self.identity.proxy_version.clone(),
            acked_version: self.acked_version,
            sent_version: self.in_flight.as_ref().map(|f| f.version),
            connected_for: self.connected_at.elapsed(),
            nacks: self.nacks,
            subscription: self.subscription.clone(),
        })
    }
}

#[cfg(test)]
mod tests;
