//! The `Discovery` gRPC service: one stream per sidecar, handed to a session actor, and the
//! `DiscoveryAdmin` views of those sessions.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::Duration;

use actix::{Actor, Addr, ArbiterHandle};
use futures::future::BoxFuture;
use netting_proto::discovery::v1 as pb;
use netting_proto::discovery::v1::discovery_admin_server::DiscoveryAdmin;
use netting_proto::discovery::v1::discovery_server::Discovery;
use netting_raft::catalog::LogIndex;
use tokio::sync::{mpsc, watch};
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Request, Response, Status, Streaming};

use super::discovery_convert::{self as convert, try_another};
use super::routing::Replica;
use crate::actors::config_pusher::ConfigPusher;
use crate::actors::session_messages::{
    FindSession, ListSessions, Outbound, Outgoing, SidecarAck, SidecarNack, StreamEnded,
};
use crate::actors::sidecar_session::{SessionLimits, SessionStart, SidecarSession};
use crate::discovery::applied_times::AppliedTimes;
use crate::discovery::hello::Hello;
use crate::discovery::session::Base;
use crate::discovery::view;

/// A session's responses in their wire form. When the replica starts shutting down the stream
/// ends at once with a status that sends the sidecar to another replica: a long-lived stream
/// must not hold the shutdown (and, on a leader, the election of the next one) back.
pub struct ResponseStream {
    responses: ReceiverStream<Outbound>,
    cluster_id: String,
    stopping: Option<BoxFuture<'static, ()>>,
}

impl std::fmt::Debug for ResponseStream {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ResponseStream")
            .field("stopped", &self.stopping.is_none())
            .finish()
    }
}

impl tokio_stream::Stream for ResponseStream {
    type Item = Result<pb::DiscoveryResponse, Status>;

    fn poll_next(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Self::Item>> {
        let Some(stopping) = self.stopping.as_mut() else {
            return std::task::Poll::Ready(None);
        };
        if stopping.as_mut().poll(cx).is_ready() {
            self.stopping = None;
            return std::task::Poll::Ready(Some(Err(try_another(
                "the replica is shutting down".to_owned(),
            ))));
        }
        let item = std::task::ready!(std::pin::Pin::new(&mut self.responses).poll_next(cx));
        std::task::Poll::Ready(item.map(|outgoing| match *outgoing {
            Outgoing::Response(response) => Ok(convert::response(&response, &self.cluster_id)),
            Outgoing::Close(close) => Err(convert::close_status(&close)),
        }))
    }
}

/// Limits of the discovery service.
#[derive(Debug, Clone, Copy)]
pub struct DiscoveryLimits {
    /// How long a new stream may take to send its hello.
    pub hello_timeout: Duration,
    /// How long a replica behind the sidecar waits to catch up before sending it elsewhere.
    pub catch_up_wait: Duration,
    pub session: SessionLimits,
}

/// The discovery service of one replica.
#[derive(Debug, Clone)]
pub struct DiscoveryService {
    replica: Replica,
    pusher: Addr<ConfigPusher>,
    arbiters: Arc<Vec<ArbiterHandle>>,
    next_arbiter: Arc<AtomicUsize>,
    next_session: Arc<AtomicU64>,
    limits: DiscoveryLimits,
    applied_times: AppliedTimes,
    stopping: watch::Receiver<bool>,
}

impl DiscoveryService {
    /// Sessions are spread over `arbiters` (one thread each) so that thousands of them use
    /// every core.
    pub fn new(
        replica: Replica,
        pusher: Addr<ConfigPusher>,
        arbiters: Vec<ArbiterHandle>,
        limits: DiscoveryLimits,
        applied_times: AppliedTimes,
    ) -> Self {
        Self {
            replica,
            pusher,
            arbiters: Arc::new(arbiters),
            next_arbiter: Arc::new(AtomicUsize::new(0)),
            next_session: Arc::new(AtomicU64::new(1)),
            limits,
            applied_times,
            // No sender: streams end only by `with_shutdown`'s signal.
            stopping: watch::channel(false).1,
        }
    }

    /// Ends every open stream (telling its sidecar to try another replica) once `stopping`
    /// turns true.
    pub fn with_shutdown(mut self, stopping: watch::Receiver<bool>) -> Self {
        self.stopping = stopping;
        self
    }

    /// Waits, within the bound, until this replica has applied `version`. A version beyond the
    /// cluster's read index has never been committed and is refused on every replica; a
    /// replica that cannot catch up in time sends the sidecar elsewhere.
    async fn catch_up(&self, version: LogIndex) -> Result<(), Status> {
        let mut applied = self.replica.catalog.subscribe();
        if applied.borrow_and_update().applied_index >= version {
            return Ok(());
        }
        let deadline = tokio::time::Instant::now() + self.limits.catch_up_wait;
        // Behind the sidecar: ask the leader whether that version exists at all. Without an
        // answer (no leader in time) nothing is known, and the sidecar is sent on as before.
        match self.replica.read_index(deadline).await {
            Ok(read_index) if read_index < version => {
                return Err(Status::out_of_range(format!(
                    "last_version {version} is beyond anything this cluster has committed (read index {read_index})"
                )));
            }
            Ok(_) => {}
            Err(status) => {
                tracing::debug!(%status, version, "no read index for a sidecar ahead of this replica");
            }
        }
        loop {
            if applied.borrow_and_update().applied_index >= version {
                return Ok(());
            }
            match tokio::time::timeout_at(deadline, applied.changed()).await {
                Ok(Ok(())) => continue,
                Ok(Err(_)) => return Err(Status::unavailable("the replica is shutting down")),
                Err(_) => break,
            }
        }
        let applied_index = self.replica.catalog.applied().applied_index;
        Err(try_another(format!(
            "this replica has applied up to {applied_index}, behind the sidecar's version {version}"
        )))
    }
}

#[tonic::async_trait]
impl Discovery for DiscoveryService {
    type StreamStream = ResponseStream;

    async fn stream(
        &self,
        request: Request<Streaming<pb::DiscoveryRequest>>,
    ) -> Result<Response<Self::StreamStream>, Status> {
        let mut inbound = request.into_inner();
        let first = tokio::time::timeout(self.limits.hello_timeout, inbound.message())
            .await
            .map_err(|_| Status::deadline_exceeded("no hello within the hello timeout"))?
            .map_err(|status| inbound_error(&status).unwrap_or(status))?;
        let Some(first) = first else {
            return Err(Status::invalid_argument("the stream ended before a hello"));
        };
        let hello = match first.message {
            Some(pb::discovery_request::Message::Hello(hello)) => {
                Hello::try_from(&hello).map_err(|e| Status::invalid_argument(e.to_string()))?
            }
            Some(pb::discovery_request::Message::Ack(_)) => {
                return Err(Status::invalid_argument(
                    "the first message must be a hello, not an ack",
                ));
            }
            Some(pb::discovery_request::Message::Nack(_)) => {
                return Err(Status::invalid_argument(
                    "the first message must be a hello, not a nack",
                ));
            }
            None => {
                return Err(Status::invalid_argument(
                    "the first message must be a hello, but it was empty (none of hello, ack, \
                     nack set)",
                ));
            }
        };
        let cluster_id = self
            .replica
            .catalog
            .read(|c| c.cluster_id().map(str::to_owned))
            .ok_or_else(|| try_another("this replica does not know the cluster id yet".into()))?;
        let base = match &hello.resume {
            Some(resume) if resume.cluster_id == cluster_id => {
                self.catch_up(resume.version).await?;
                Base::Version(resume.version)
            }
            // Another cluster (rebuilt from nothing), or nothing yet: a full snapshot.
            _ => Base::Nothing,
        };

        // Two slots: the one response in flight, and the status that may end the stream.
        let (outbound, responses) = mpsc::channel(2);
        let start = SessionStart {
            id: self.next_session.fetch_add(1, Ordering::Relaxed),
            identity: hello.identity,
            subscription: hello.subscription,
            catalog: self.replica.catalog.clone(),
            outbound,
            base,
            pusher_open: self.pusher.clone().recipient(),
            pusher_closed: self.pusher.clone().recipient(),
            limits: self.limits.session,
            applied_times: self.applied_times.clone(),
        };
        let session = match self.arbiters.len() {
            0 => return Err(Status::unavailable("the replica is shutting down")),
            n => {
                let arbiter = &self.arbiters[self.next_arbiter.fetch_add(1, Ordering::Relaxed) % n];
                SidecarSession::start_in_arbiter(arbiter, move |_| SidecarSession::new(start))
            }
        };
        tokio::spawn(read_inbound(inbound, session, self.stopping.clone()));
        let mut stopping = self.stopping.clone();
        Ok(Response::new(ResponseStream {
            responses: ReceiverStream::new(responses),
            cluster_id,
            stopping: Some(Box::pin(async move {
                // Without a sender (no shutdown signal given) the stream never stops this way.
                if stopping.wait_for(|stop| *stop).await.is_err() {
                    std::future::pending::<()>().await;
                }
            })),
        }))
    }
}

/// Names an inbound stream error caused by the sidecar (a message over the size limit): it
/// breaks the protocol, and ends the session with INVALID_ARGUMENT.
fn inbound_violation(status: &Status) -> Option<String> {
    matches!(
        status.code(),
        tonic::Code::OutOfRange | tonic::Code::ResourceExhausted
    )
    .then(|| format!("message rejected: {}", status.message()))
}

fn inbound_error(status: &Status) -> Option<Status> {
    inbound_violation(status).map(Status::invalid_argument)
}

/// Forwards ACKs and NACKs to the session until the sidecar closes its side or breaks the
/// protocol, or the replica stops: dropping the inbound half then resets the stream, so a
/// sidecar slow to close its side cannot hold the server's shutdown.
async fn read_inbound(
    mut inbound: Streaming<pb::DiscoveryRequest>,
    session: Addr<SidecarSession>,
    mut stopping: watch::Receiver<bool>,
) {
    loop {
        let message = tokio::select! {
            message = inbound.message() => message,
            Ok(_) = stopping.wait_for(|stop| *stop) => {
                session.do_send(StreamEnded { violation: None });
                return;
            }
        };
        let violation = match message {
            Ok(Some(request)) => match request.message {
                Some(pb::discovery_request::Message::Ack(ack)) => {
                    let ack = SidecarAck {
                        version: ack.version,
                        nonce: ack.nonce,
                    };
                    if session.send(ack).await.is_err() {
                        return;
                    }
                    continue;
                }
                Some(pb::discovery_request::Message::Nack(nack)) => {
                    let nack = SidecarNack {
                        version: nack.version,
                        nonce: nack.nonce,
                        error: nack.error,
                    };
                    if session.send(nack).await.is_err() {
                        return;
                    }
                    continue;
                }
                Some(pb::discovery_request::Message::Hello(_)) => {
                    Some("a stream sends only one hello".to_owned())
                }
                None => Some("an empty message".to_owned()),
            },
            Ok(None) => None,
            Err(status) => inbound_violation(&status),
        };
        session.do_send(StreamEnded { violation });
        return;
    }
}

#[tonic::async_trait]
impl DiscoveryAdmin for DiscoveryService {
    async fn list_sessions(
        &self,
        _: Request<pb::ListSessionsRequest>,
    ) -> Result<Response<pb::ListSessionsResponse>, Status> {
        let sessions = self
            .pusher
            .send(ListSessions)
            .await
            .map_err(|_| Status::unavailable("the replica is shutting down"))?;
        Ok(Response::new(pb::ListSessionsResponse {
            node_id: self.replica.node_id,
            catalog_version: self.replica.catalog.read(|c| c.version()),
            sessions: sessions.iter().map(convert::session_info).collect(),
        }))
    }

    async fn sidecar_config(
        &self,
        request: Request<pb::SidecarConfigRequest>,
    ) -> Result<Response<pb::SidecarConfigResponse>, Status> {
        let req = request.into_inner();
        netting_raft::catalog::validate::dns_label("namespace", &req.namespace)
            .map_err(|e| Status::invalid_argument(e.to_string()))?;
        if req.pod.is_empty() {
            return Err(Status::invalid_argument("invalid pod: must not be empty"));
        }
        let found = self
            .pusher
            .send(FindSession {
                namespace: req.namespace.clone(),
                pod: req.pod.clone(),
            })
            .await
            .map_err(|_| Status::unavailable("the replica is shutting down"))?;
        let info = found.ok_or_else(|| {
            Status::not_found(format!(
                "no sidecar of pod {}/{} is connected to this replica",
                req.namespace, req.pod
            ))
        })?;
        let (version, services) = self
            .replica
            .catalog
            .read(|c| (c.version(), view::snapshot(c, &info.subscription)));
        let services = convert::services(&services);
        Ok(Response::new(pb::SidecarConfigResponse {
            session: Some(convert::session_info(&info)),
            version,
            services,
        }))
    }
}
