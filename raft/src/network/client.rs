//! The client half of the Raft network: openraft asks the [`NetworkFactory`] for one
//! [`PeerClient`] per replication target and sends its RPCs through it.
//!
//! Errors are classified for openraft, which acts on the variant:
//! - the peer cannot be connected to (or its address is unusable) → `Unreachable`: openraft
//!   backs off with [`PeerClient::backoff`] instead of retrying every heartbeat;
//! - the peer refuses us as a replica of another cluster → also `Unreachable`, for the same
//!   reason: it will keep refusing until an operator fixes the configuration, and hammering it
//!   at the heartbeat rate helps nobody (the message says which cluster refused);
//! - the peer's Raft node returned an error → `RemoteError` with that exact error;
//! - a timeout, a broken connection, a malformed response or any other status →
//!   `NetworkError`, which openraft retries at its next tick;
//! - an AppendEntries batch larger than the message limit → `PayloadTooLarge`, so openraft
//!   resends fewer entries at once.
//!
//! Whether each peer answers is also told to the shared [`PeerHealthLog`], which logs a peer
//! going down and coming back once each instead of openraft's line per attempt.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use netting_proto::raft::v1::raft_client::RaftClient;
use openraft::BasicNode;
use openraft::error::{
    InstallSnapshotError, NetworkError, PayloadTooLarge, RPCError, RaftError, RemoteError,
    Unreachable,
};
use openraft::network::{Backoff, RPCOption, RaftNetwork, RaftNetworkFactory};
use openraft::raft::{
    AppendEntriesRequest, AppendEntriesResponse, InstallSnapshotRequest, InstallSnapshotResponse,
    VoteRequest, VoteResponse,
};
use serde::de::DeserializeOwned;
use thiserror::Error;
use tokio::time::Instant;
use tonic::transport::Channel;
use tonic::{Code, Status};

use super::channels::{InvalidPeerAddress, PeerChannels};
use super::convert::{self, ConvertError};
use super::identity::{ClusterIdentity, InvalidClusterIdentity};
use super::peer_health::PeerHealthLog;
use super::remote::{UndecodableRaftError, raft_error_from_status};
use super::{MAX_MESSAGE_BYTES, RPC_DURATION_SECONDS, RPC_TOTAL};
use crate::types::{NodeId, TypeConfig};

/// First pause after a peer is found unreachable: about one heartbeat on a LAN.
const BACKOFF_FIRST: Duration = Duration::from_millis(50);
/// Longest pause: a peer that comes back is replicated to again within half a second.
const BACKOFF_MAX: Duration = Duration::from_millis(500);

/// Creates a [`PeerClient`] per replication target, over the shared [`PeerChannels`].
#[derive(Debug, Clone)]
pub struct NetworkFactory {
    channels: Arc<PeerChannels>,
    identity: ClusterIdentity,
    health: Arc<PeerHealthLog>,
}

impl NetworkFactory {
    pub fn new(channels: Arc<PeerChannels>, identity: ClusterIdentity) -> Self {
        Self {
            channels,
            identity,
            health: Arc::default(),
        }
    }

    /// The client for `target` at `node.addr`; what openraft's `new_client` returns.
    pub fn client(&self, target: NodeId, node: &BasicNode) -> PeerClient {
        let client = self
            .channels
            .get_for_node(target, &node.addr)
            .map(|channel| {
                RaftClient::new(channel)
                    .max_decoding_message_size(MAX_MESSAGE_BYTES)
                    .max_encoding_message_size(MAX_MESSAGE_BYTES)
            });
        if let Err(err) = &client {
            // Every RPC to this member will fail until its address is fixed by a membership
            // change; say so once here rather than at every retry.
            tracing::warn!(target_node = target, error = %err, "raft peer has an unusable address");
        }
        PeerClient {
            target,
            node: node.clone(),
            client,
            identity: self.identity.clone(),
            health: self.health.clone(),
        }
    }
}

impl RaftNetworkFactory<TypeConfig> for NetworkFactory {
    type Network = PeerClient;

    async fn new_client(&mut self, target: NodeId, node: &BasicNode) -> PeerClient {
        self.client(target, node)
    }
}

/// Sends Raft RPCs to one peer.
#[derive(Debug)]
pub struct PeerClient {
    target: NodeId,
    node: BasicNode,
    /// An unusable address is kept as an error rather than failing `new_client`, which
    /// cannot fail: every RPC then reports the peer unreachable with the reason.
    client: Result<RaftClient<Channel>, InvalidPeerAddress>,
    identity: ClusterIdentity,
    health: Arc<PeerHealthLog>,
}

type RpcResult<T, E = openraft::error::Infallible> =
    Result<T, RPCError<NodeId, BasicNode, RaftError<NodeId, E>>>;

impl RaftNetwork<TypeConfig> for PeerClient {
    #[tracing::instrument(level = "debug", skip_all, fields(target_node = self.target, entries = rpc.entries.len()))]
    async fn append_entries(
        &mut self,
        rpc: AppendEntriesRequest<TypeConfig>,
        option: RPCOption,
    ) -> RpcResult<AppendEntriesResponse<NodeId>> {
        let timer = self.timer(Rpc::AppendEntries);
        let entries = rpc.entries.len();
        let result = async {
            let request =
                convert::append_entries_request_to_proto(&rpc).map_err(Failure::Encode)?;
            let response = self
                .call(option.hard_ttl(), request, |mut c, r| async move {
                    c.append_entries(r).await
                })
                .await?;
            convert::append_entries_response_from_proto(response).map_err(Failure::Decode)
        }
        .await;
        self.finish(timer, result, entries)
    }

    #[tracing::instrument(level = "debug", skip_all, fields(target_node = self.target, snapshot = %rpc.meta.snapshot_id))]
    async fn install_snapshot(
        &mut self,
        rpc: InstallSnapshotRequest<TypeConfig>,
        option: RPCOption,
    ) -> RpcResult<InstallSnapshotResponse<NodeId>, InstallSnapshotError> {
        let timer = self.timer(Rpc::InstallSnapshot);
        let result = async {
            let request =
                convert::install_snapshot_request_to_proto(rpc).map_err(Failure::Encode)?;
            let response = self
                .call(option.hard_ttl(), request, |mut c, r| async move {
                    c.install_snapshot(r).await
                })
                .await?;
            convert::install_snapshot_response_from_proto(response).map_err(Failure::Decode)
        }
        .await;
        self.finish(timer, result, 0)
    }

    #[tracing::instrument(level = "debug", skip_all, fields(target_node = self.target, term = rpc.vote.leader_id.term))]
    async fn vote(
        &mut self,
        rpc: VoteRequest<NodeId>,
        option: RPCOption,
    ) -> RpcResult<VoteResponse<NodeId>> {
        let timer = self.timer(Rpc::Vote);
        let result = async {
            let request = convert::vote_request_to_proto(&rpc);
            let response = self
                .call(option.hard_ttl(), request, |mut c, r| async move {
                    c.vote(r).await
                })
                .await?;
            convert::vote_response_from_proto(response).map_err(Failure::Decode)
        }
        .await;
        self.finish(timer, result, 0)
    }

    /// Exponential from about one heartbeat, capped, never exhausted: openraft asks for the
    /// next pause after every failed attempt and starts over after a success.
    fn backoff(&self) -> Backoff {
        Backoff::new(unreachable_backoff())
    }
}

impl PeerClient {
    pub fn target(&self) -> NodeId {
        self.target
    }

    fn timer(&self, rpc: Rpc) -> RpcTimer {
        RpcTimer::start(
            rpc,
            PeerRef {
                health: self.health.clone(),
                id: self.target,
                addr: self.node.addr.clone(),
            },
        )
    }

    /// Sends one request with the cluster metadata and `ttl` as its deadline. The deadline is
    /// also sent as `grpc-timeout`, so the server stops working on an answer nobody awaits.
    async fn call<Req, Resp, F, Fut>(
        &self,
        ttl: Duration,
        message: Req,
        send: F,
    ) -> Result<Resp, Failure>
    where
        F: FnOnce(RaftClient<Channel>, tonic::Request<Req>) -> Fut,
        Fut: Future<Output = Result<tonic::Response<Resp>, Status>>,
    {
        // Cloning a tonic client clones a handle to the shared channel.
        let client = self.client.clone().map_err(Failure::InvalidAddress)?;
        let mut request = tonic::Request::new(message);
        request.set_timeout(ttl);
        self.identity
            .stamp(request.metadata_mut())
            .map_err(Failure::InvalidIdentity)?;
        match tokio::time::timeout(ttl, send(client, request)).await {
            Err(_) => Err(Failure::Timeout(ttl)),
            Ok(Ok(response)) => Ok(response.into_inner()),
            Ok(Err(status)) => Err(Failure::Status(status)),
        }
    }

    /// Records the outcome and turns a failure into the error openraft acts on.
    // The error type is the one `RaftNetwork` returns; boxing it here would only move the
    // unboxing to every caller.
    #[allow(clippy::result_large_err)]
    fn finish<T, E>(
        &self,
        timer: RpcTimer,
        result: Result<T, Failure>,
        entries: usize,
    ) -> RpcResult<T, E>
    where
        E: std::error::Error + DeserializeOwned,
    {
        let rpc = timer.rpc;
        let failure = match result {
            Ok(value) => {
                timer.finish(Outcome::Ok, Contact::Answered);
                return Ok(value);
            }
            Err(failure) => failure,
        };
        if let Failure::Status(status) = &failure
            && let Some(remote) = raft_error_from_status::<E>(status)
        {
            match remote {
                Ok(err) => {
                    timer.finish(Outcome::Error, Contact::Answered);
                    tracing::debug!(target_node = self.target, rpc = rpc.as_str(), error = %err, "raft rpc: remote error");
                    return Err(RPCError::RemoteError(RemoteError::new_with_node(
                        self.target,
                        self.node.clone(),
                        err,
                    )));
                }
                Err(undecodable) => return Err(self.fail(timer, Failure::Undecodable(undecodable))),
            }
        }
        Err(self.fail_with_hint(timer, failure, entries))
    }

    fn fail<E>(&self, timer: RpcTimer, failure: Failure) -> RPCError<NodeId, BasicNode, E>
    where
        E: std::error::Error,
    {
        self.fail_with_hint(timer, failure, 0)
    }

    fn fail_with_hint<E>(
        &self,
        timer: RpcTimer,
        failure: Failure,
        entries: usize,
    ) -> RPCError<NodeId, BasicNode, E>
    where
        E: std::error::Error,
    {
        let rpc = timer.rpc;
        let verdict = failure.verdict(rpc, entries);
        let err = RpcFailure {
            rpc,
            target: self.target,
            addr: self.node.addr.clone(),
            failure,
        };
        tracing::debug!(target_node = self.target, rpc = rpc.as_str(), error = %err, "raft rpc failed");
        let failed = Contact::Failed(err.failure.to_string());
        match verdict {
            Verdict::Unreachable => {
                timer.finish(Outcome::Unreachable, failed);
                RPCError::Unreachable(Unreachable::new(&err))
            }
            Verdict::Refused => {
                timer.finish(Outcome::Error, failed);
                RPCError::Unreachable(Unreachable::new(&err))
            }
            Verdict::Network => {
                timer.finish(Outcome::Error, failed);
                RPCError::Network(NetworkError::new(&err))
            }
            Verdict::TooLarge => {
                // It answered, only not to a batch this large.
                timer.finish(Outcome::Error, Contact::Answered);
                // Halving converges on a batch that fits in a few round trips; a single entry
                // too large never gets here (see `verdict`), so this cannot loop.
                let hint = u64::try_from(entries / 2).unwrap_or(u64::MAX).max(1);
                RPCError::PayloadTooLarge(
                    PayloadTooLarge::new_entries_hint(hint).with_source_error(&err),
                )
            }
        }
    }
}

/// The pauses openraft takes between attempts to an unreachable peer: 50, 100, 200, 400,
/// 500, 500, ... ms.
fn unreachable_backoff() -> impl Iterator<Item = Duration> + Send + 'static {
    std::iter::successors(Some(BACKOFF_FIRST), |pause| {
        Some(pause.saturating_mul(2).min(BACKOFF_MAX))
    })
}

/// One failed RPC, as openraft will log it.
#[derive(Debug, Error)]
#[error("raft {rpc} to node {target} at {addr}: {failure}")]
struct RpcFailure {
    rpc: Rpc,
    target: NodeId,
    addr: String,
    failure: Failure,
}

#[derive(Debug, Error)]
enum Failure {
    #[error(transparent)]
    InvalidAddress(InvalidPeerAddress),
    #[error("cannot stamp the cluster identity: {0}")]
    InvalidIdentity(InvalidClusterIdentity),
    #[error("cannot encode the request: {0}")]
    Encode(ConvertError),
    #[error("no answer within {0:?}")]
    Timeout(Duration),
    #[error("{}", describe(.0))]
    Status(Status),
    #[error("malformed response: {0}")]
    Decode(ConvertError),
    #[error(transparent)]
    Undecodable(UndecodableRaftError),
}

/// What openraft should do about a failure (see the module documentation).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Verdict {
    Unreachable,
    Refused,
    Network,
    TooLarge,
}

impl Failure {
    fn verdict(&self, rpc: Rpc, entries: usize) -> Verdict {
        match self {
            Failure::InvalidAddress(_) => Verdict::Unreachable,
            Failure::Status(status) if is_connect_error(status) => Verdict::Unreachable,
            Failure::Status(status) => match status.code() {
                Code::FailedPrecondition => Verdict::Refused,
                // tonic's own code for a message over the size limit, on either side.
                Code::OutOfRange if rpc == Rpc::AppendEntries && entries > 1 => Verdict::TooLarge,
                _ => Verdict::Network,
            },
            Failure::InvalidIdentity(_)
            | Failure::Encode(_)
            | Failure::Timeout(_)
            | Failure::Decode(_)
            | Failure::Undecodable(_) => Verdict::Network,
        }
    }
}

/// Whether the status comes from failing to establish the connection (refused, no route,
/// connect timeout), as opposed to an error on an established one.
fn is_connect_error(status: &Status) -> bool {
    let mut source = std::error::Error::source(status);
    while let Some(err) = source {
        if err.is::<tonic::ConnectError>() {
            return true;
        }
        source = err.source();
    }
    false
}

/// The status message followed by its causes: tonic's messages alone ("transport error") do
/// not say what happened.
fn describe(status: &Status) -> String {
    let mut text = format!("{:?}: {}", status.code(), status.message());
    let mut source = std::error::Error::source(status);
    while let Some(err) = source {
        let cause = err.to_string();
        if !text.contains(&cause) {
            text.push_str(": ");
            text.push_str(&cause);
        }
        source = err.source();
    }
    text
}

/// The `rpc` label.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Rpc {
    AppendEntries,
    Vote,
    InstallSnapshot,
}

impl Rpc {
    fn as_str(self) -> &'static str {
        match self {
            Rpc::AppendEntries => "append_entries",
            Rpc::Vote => "vote",
            Rpc::InstallSnapshot => "install_snapshot",
        }
    }
}

impl std::fmt::Display for Rpc {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The `result` label.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Outcome {
    Ok,
    Unreachable,
    Error,
}

impl Outcome {
    fn as_str(self) -> &'static str {
        match self {
            Outcome::Ok => "ok",
            Outcome::Unreachable => "unreachable",
            Outcome::Error => "error",
        }
    }
}

/// Whether the peer answered an RPC, for the [`PeerHealthLog`].
#[derive(Debug)]
enum Contact {
    Answered,
    Failed(String),
    /// openraft dropped the call at its deadline before it returned.
    Abandoned,
}

#[derive(Debug)]
struct PeerRef {
    health: Arc<PeerHealthLog>,
    id: NodeId,
    addr: String,
}

/// Records one RPC's count and duration, and whether the peer answered, when dropped.
/// openraft drops an RPC future that outlives its deadline before the future can return, so
/// recording on drop is what makes a call openraft abandoned count (as an error) at all.
#[derive(Debug)]
struct RpcTimer {
    rpc: Rpc,
    started: Instant,
    outcome: Outcome,
    contact: Contact,
    peer: PeerRef,
}

impl RpcTimer {
    fn start(rpc: Rpc, peer: PeerRef) -> Self {
        Self {
            rpc,
            started: Instant::now(),
            outcome: Outcome::Error,
            contact: Contact::Abandoned,
            peer,
        }
    }

    fn finish(mut self, outcome: Outcome, contact: Contact) {
        self.outcome = outcome;
        self.contact = contact;
    }
}

impl Drop for RpcTimer {
    fn drop(&mut self) {
        let rpc = self.rpc.as_str();
        let elapsed = self.started.elapsed();
        metrics::counter!(RPC_TOTAL, "rpc" => rpc, "result" => self.outcome.as_str()).increment(1);
        metrics::histogram!(RPC_DURATION_SECONDS, "rpc" => rpc).record(elapsed.as_secs_f64());
        let PeerRef { health, id, addr } = &self.peer;
        match &self.contact {
            Contact::Answered => health.answered(*id, addr),
            Contact::Failed(error) => health.failed(*id, addr, &format_args!("{rpc}: {error}")),
            Contact::Abandoned => health.failed(
                *id,
                addr,
                &format_args!("{rpc}: no answer within {elapsed:?}"),
            ),
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]

    use super::*;

    /// The backoff doubles from 50 ms, stays at 500 ms and never runs out.
    #[test]
    fn backoff_is_exponential_and_capped() {
        let pauses: Vec<_> = unreachable_backoff()
            .take(8)
            .map(|d| d.as_millis())
            .collect();
        assert_eq!(pauses, [50, 100, 200, 400, 500, 500, 500, 500]);
        assert_eq!(
            unreachable_backoff().nth(1_000),
            Some(Duration::from_millis(500))
        );
    }

    /// Refusals back off, oversized batches are split, other statuses are retried.
    #[test]
    fn statuses_get_the_right_verdict() {
        let verdict = |status: Status, rpc, entries| Failure::Status(status).verdict(rpc, entries);
        assert_eq!(
            verdict(Status::failed_precondition("other cluster"), Rpc::Vote, 0),
            Verdict::Refused
        );
        assert_eq!(
            verdict(Status::out_of_range("too large"), Rpc::AppendEntries, 10),
            Verdict::TooLarge
        );
        // One entry cannot be split: resending it smaller is impossible.
        assert_eq!(
            verdict(Status::out_of_range("too large"), Rpc::AppendEntries, 1),
            Verdict::Network
        );
        assert_eq!(
            verdict(Status::unavailable("h2 reset"), Rpc::AppendEntries, 3),
            Verdict::Network
        );
        assert_eq!(
            verdict(Status::deadline_exceeded("late"), Rpc::Vote, 0),
            Verdict::Network
        );
    }
}
