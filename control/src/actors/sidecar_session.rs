//! One actor per connected sidecar stream. The protocol itself (what was acknowledged, the
//! response in flight, whether a newer update waits) is `discovery::session::SessionState`;
//! this actor carries out its decisions: it reads the catalog for it, hands responses to the
//! stream, runs the acknowledgement timer of each response and the stream's maximum age, and
//! records the metrics.

use std::sync::Arc;
use std::time::{Duration, Instant};

use actix::prelude::*;
use netting_raft::CatalogHandle;
use rand::Rng;
use tokio::sync::mpsc;

use super::session_messages::{
    DescribeSession, Outbound, Outgoing, PushUpdate, SessionClosed, SessionId, SessionInfo,
    SessionOpened, SidecarAck, SidecarNack, StreamEnded,
};
use crate::discovery::applied_times::AppliedTimes;
use crate::discovery::hello::{SidecarIdentity, Subscription};
use crate::discovery::session::{Action, Base, Close, SessionState};

/// Timeouts of a session.
#[derive(Debug, Clone, Copy)]
pub struct SessionLimits {
    pub ack_timeout: Duration,
    pub max_age: Duration,
}

pub struct SidecarSession {
    id: SessionId,
    identity: SidecarIdentity,
    state: SessionState,
    catalog: CatalogHandle,
    outbound: mpsc::Sender<Outbound>,
    connected_at: Instant,
    pusher_open: Recipient<SessionOpened>,
    pusher_closed: Recipient<SessionClosed>,
    max_age: Duration,
    applied_times: AppliedTimes,
    /// Every event this session logs is in this span: which stream, which pod.
    span: tracing::Span,
    /// The ACK timer of the response in flight. Only one response is ever unacknowledged, so
    /// arming a new one cancels the last: actix polls every timer an actor holds on each of
    /// its wake-ups, and timers of acknowledged responses left to expire piled up (one per
    /// update) and made every message cost as much as all of them.
    ack_timer: Option<SpawnHandle>,
}

impl std::fmt::Debug for SidecarSession {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SidecarSession")
            .field("id", &self.id)
            .field("pod", &self.identity.pod)
            .field("state", &self.state)
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
    pub outbound: mpsc::Sender<Outbound>,
    pub base: Base,
    pub pusher_open: Recipient<SessionOpened>,
    pub pusher_closed: Recipient<SessionClosed>,
    pub limits: SessionLimits,
    pub applied_times: AppliedTimes,
}

impl SidecarSession {
    pub fn new(start: SessionStart) -> Self {
        let span = tracing::info_span!(
            "sidecar_session",
            session = start.id,
            pod = %start.identity.pod,
            namespace = %start.identity.namespace,
        );
        Self {
            span,
            ack_timer: None,
            id: start.id,
            identity: start.identity,
            state: SessionState::new(
                Arc::new(start.subscription),
                start.base,
                start.limits.ack_timeout,
            ),
            catalog: start.catalog,
            outbound: start.outbound,
            connected_at: Instant::now(),
            pusher_open: start.pusher_open,
            pusher_closed: start.pusher_closed,
            max_age: start.limits.max_age,
            applied_times: start.applied_times,
        }
    }

    /// Runs `decide` against the live catalog and carries out what it returns.
    fn decide(
        &mut self,
        ctx: &mut Context<Self>,
        decide: impl FnOnce(
            &mut SessionState,
            &netting_raft::catalog::Catalog,
            tokio::time::Instant,
        ) -> Action,
    ) {
        let now = tokio::time::Instant::now();
        let state = &mut self.state;
        let action = self.catalog.read(|catalog| decide(state, catalog, now));
        self.carry_out(action, ctx);
    }

    fn carry_out(&mut self, action: Action, ctx: &mut Context<Self>) {
        let span = self.span.clone();
        let _in_session = span.enter();
        match action {
            Action::Nothing => {}
            Action::Deferred { replaced } => {
                if replaced {
                    metrics::counter!("netting_config_pending_replaced_total").increment(1);
                }
            }
            Action::Send(response) => {
                let (nonce, deadline) = (response.nonce, response.ack_deadline);
                let labels = (response.update.kind(), response.reason.as_str());
                match self
                    .outbound
                    .try_send(Box::new(Outgoing::Response(response)))
                {
                    Ok(()) => {
                        metrics::counter!("netting_config_updates_total", "kind" => labels.0, "reason" => labels.1)
                            .increment(1);
                        // A timer per response, so the timeout holds to the millisecond; the
                        // last response's timer is cancelled, see `ack_timer`.
                        let delay = deadline.saturating_duration_since(tokio::time::Instant::now());
                        if let Some(previous) = self.ack_timer.take() {
                            ctx.cancel_future(previous);
                        }
                        self.ack_timer = Some(ctx.run_later(delay, move |act, ctx| {
                            act.ack_timer = None;
                            let action = act.state.on_timeout(nonce, tokio::time::Instant::now());
                            act.carry_out(action, ctx);
                        }));
                    }
                    // Only one response is ever unacknowledged, so a full channel means the
                    // stream is gone or wedged: either way this session is over.
                    Err(_) => {
                        let action = self.state.close(Close::StreamGone);
                        self.carry_out(action, ctx);
                    }
                }
            }
            Action::Close(reason) => {
                metrics::counter!("netting_sessions_closed_total", "reason" => reason.as_str())
                    .increment(1);
                tracing::debug!(reason = reason.as_str(), "session closed");
                if reason.tells_the_sidecar() {
                    let _ = self.outbound.try_send(Box::new(Outgoing::Close(reason)));
                }
                ctx.stop();
            }
        }
    }

    fn max_age_with_jitter(&self) -> Duration {
        // Up to a quarter earlier than the maximum, so streams opened together (after a
        // replica restart) do not all end together.
        let jitter = rand::rng().random_range(0.0..0.25);
        self.max_age.mul_f64(1.0 - jitter)
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
            subscription: self.state.subscription().clone(),
            push: ctx.address().recipient(),
            describe: ctx.address().recipient(),
        };
        self.pusher_open
            .send(opened)
            .into_actor(self)
            .map(|registered, act, ctx| match registered {
                Ok(()) => act.decide(ctx, |state, catalog, now| state.on_open(catalog, now)),
                Err(_) => {
                    let action = act.state.close(Close::Shutdown);
                    act.carry_out(action, ctx);
                }
            })
            .wait(ctx);
        let max_age = self.max_age_with_jitter();
        ctx.run_later(max_age, |act, ctx| {
            let action = act.state.close(Close::MaxAge);
            act.carry_out(action, ctx);
        });
    }

    fn stopped(&mut self, _: &mut Self::Context) {
        self.pusher_closed.do_send(SessionClosed { id: self.id });
    }
}

impl Handler<PushUpdate> for SidecarSession {
    type Result = ();

    fn handle(&mut self, msg: PushUpdate, ctx: &mut Self::Context) {
        self.decide(ctx, |state, catalog, now| {
            state.on_change(msg.0, catalog, now)
        });
    }
}

impl Handler<SidecarAck> for SidecarSession {
    type Result = ();

    fn handle(&mut self, msg: SidecarAck, ctx: &mut Self::Context) {
        let acked_before = self.state.acked_version();
        self.decide(ctx, |state, catalog, now| {
            state.on_ack(msg.version, &msg.nonce, catalog, now)
        });
        if self.state.acked_version() != acked_before
            && let Some(elapsed) = self.applied_times.since_applied(msg.version)
        {
            metrics::histogram!("netting_config_commit_to_ack_seconds")
                .record(elapsed.as_secs_f64());
        }
    }
}

impl Handler<SidecarNack> for SidecarSession {
    type Result = ();

    fn handle(&mut self, msg: SidecarNack, ctx: &mut Self::Context) {
        let nacks_before = self.state.nacks();
        self.decide(ctx, |state, catalog, now| {
            state.on_nack(msg.version, &msg.nonce, catalog, now)
        });
        if self.state.nacks() != nacks_before {
            metrics::counter!("netting_config_nacks_total").increment(1);
            let _in_session = self.span.enter();
            tracing::warn!(
                version = msg.version,
                error = %msg.error,
                "sidecar refused an update; it keeps its last good configuration"
            );
        }
    }
}

impl Handler<StreamEnded> for SidecarSession {
    type Result = ();

    fn handle(&mut self, msg: StreamEnded, ctx: &mut Self::Context) {
        let reason = match msg.violation {
            Some(why) => Close::ProtocolError(why),
            None => Close::ClientGone,
        };
        let action = self.state.close(reason);
        self.carry_out(action, ctx);
    }
}

impl Handler<DescribeSession> for SidecarSession {
    type Result = MessageResult<DescribeSession>;

    fn handle(&mut self, _: DescribeSession, _: &mut Self::Context) -> Self::Result {
        MessageResult(SessionInfo {
            pod: self.identity.pod.clone(),
            namespace: self.identity.namespace.clone(),
            proxy_version: self.identity.proxy_version.clone(),
            acked_version: self.state.acked_version(),
            sent_version: self.state.sent_version(),
            connected_for: self.connected_at.elapsed(),
            nacks: self.state.nacks(),
            subscription: self.state.subscription().clone(),
        })
    }
}

#[cfg(test)]
mod tests;
