//! Talking to replicas: one bounded attempt per replica, and failover across the list.
//!
//! Every replica serves every RPC (followers forward writes to the leader), so the client does
//! not look for the leader: it asks the replicas in the order given until one answers. Only
//! failures that say "this replica cannot answer now" move on to the next one — a refused or
//! broken connection, UNAVAILABLE, DEADLINE_EXCEEDED, CANCELLED, a timeout — as classified by
//! [`netting_proto::retry`]; an answer that is an application error (INVALID_ARGUMENT,
//! NOT_FOUND, ...) would be the same everywhere and is returned as is.
//!
//! A write whose replica failed mid-call may have been applied there. It is retried on the
//! next replica under the same request id (see [`Client::request_id`]), so the cluster applies
//! it at most once and answers a retry of an applied write with the first application's
//! version; the retry is written down as a note for the operator (see
//! [`Client::take_notes`]). When no replica confirms such a write, the error says that its
//! outcome is unknown instead of calling it failed.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use netting_proto::catalog::v1::catalog_client::CatalogClient;
use netting_proto::catalog::v1::cluster_client::ClusterClient;
use netting_proto::catalog::v1::{
    DeregisterRequest, GetServiceRequest, GetServiceResponse, ListServicesRequest,
    ListServicesResponse, RegisterRequest, RemoveMemberRequest, RemoveMemberResponse, RequestId,
    StatusRequest, StatusResponse, WriteResponse,
};
use netting_proto::discovery::v1::discovery_admin_client::DiscoveryAdminClient;
use netting_proto::discovery::v1::{
    ListSessionsRequest, ListSessionsResponse, SidecarConfigRequest, SidecarConfigResponse,
};
use tonic::Status;
use tonic::transport::{Channel, Endpoint};

use super::call_error::error_chain;
pub use super::call_error::{CallError, Failure};
use super::error::CtlError;
use super::target::Target;

/// A value and the replica that gave it.
#[derive(Debug)]
pub struct Answer<T> {
    pub target: Target,
    pub value: T,
}

/// A replica that failed mid-call, and the next replica asked.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Retried {
    failed: Target,
    error: String,
    retried_on: Target,
}

/// Runs `attempt` against each target in order and returns the first answer.
///
/// A failure for which [`CallError::tries_next`] holds moves on to the next target; any other
/// failure is final and becomes [`CtlError::Rpc`]. When every target failed, all their
/// failures are returned in [`CtlError::NoAnswer`], in order.
pub async fn try_each<T, F>(targets: &[Target], mut attempt: F) -> Result<Answer<T>, CtlError>
where
    F: AsyncFnMut(&Target) -> Result<T, CallError>,
{
    let mut failures = Vec::new();
    for target in targets {
        match attempt(target).await {
            Ok(value) => {
                return Ok(Answer {
                    target: target.clone(),
                    value,
                });
            }
            Err(error) if error.tries_next() => failures.push(Failure {
                target: target.clone(),
                error,
            }),
            Err(CallError::Status(status)) => {
                return Err(CtlError::Rpc {
                    target: target.clone(),
                    code: status.code(),
                    message: status.message().to_owned(),
                });
            }
            // Only statuses can be final (see `tries_next`); kept total rather than panicking.
            Err(error) => failures.push(Failure {
                target: target.clone(),
                error,
            }),
        }
    }
    Err(CtlError::NoAnswer(failures))
}

/// The replicas to ask and how long each may take.
#[derive(Debug, Clone)]
pub struct Client {
    targets: Vec<Target>,
    timeout: Duration,
    /// Names this client's writes: random per process, as `RequestId` asks.
    client_id: String,
    last_sequence: Arc<AtomicU64>,
    /// Writes retried after a replica failed mid-call, for [`Client::take_notes`].
    retried: Arc<Mutex<Vec<Retried>>>,
}

impl Client {
    /// `timeout` bounds each replica's attempt, connecting included.
    pub fn new(targets: Vec<Target>, timeout: Duration) -> Self {
        Self {
            targets,
            timeout,
            client_id: uuid::Uuid::new_v4().to_string(),
            last_sequence: Arc::default(),
            retried: Arc::default(),
        }
    }

    /// A new request id for one write: this client's id and the next sequence number (from 1).
    /// Every try of that write must send the same id.
    pub fn request_id(&self) -> RequestId {
        RequestId {
            client: self.client_id.clone(),
            sequence: self.last_sequence.fetch_add(1, Ordering::Relaxed) + 1,
        }
    }

    /// What the operator should know about how the last calls went, one line each: every
    /// write that was retried on another replica after one failed mid-call (so the first try
    /// may have taken effect). Drains the notes.
    pub fn take_notes(&self) -> Vec<String> {
        let mut retried = self.retried.lock().unwrap_or_else(PoisonError::into_inner);
        retried
            .drain(..)
            .map(|r| {
                format!(
                    "replica {} failed mid-call ({}); retried on {}",
                    r.failed, r.error, r.retried_on
                )
            })
            .collect()
    }

    /// The replicas in the order they are tried.
    pub fn targets(&self) -> &[Target] {
        &self.targets
    }

    /// Connects to one replica and runs `call` on the connection, all within the timeout.
    pub async fn ask<T>(
        &self,
        target: &Target,
        call: impl AsyncFnOnce(Channel) -> Result<T, Status>,
    ) -> Result<T, CallError> {
        let attempt = async {
            let endpoint = Endpoint::from_shared(target.uri().to_owned())
                .map_err(|err| CallError::InvalidAddress(error_chain(&err)))?
                .connect_timeout(self.timeout);
            // Connecting eagerly keeps "nobody listens there" apart from errors of the call.
            let channel = endpoint
                .connect()
                .await
                .map_err(|err| CallError::Connect(error_chain(&err)))?;
            call(channel).await.map_err(CallError::Status)
        };
        tokio::time::timeout(self.timeout, attempt)
            .await
            .unwrap_or(Err(CallError::TimedOut(self.timeout)))
    }

    /// Runs `call` against the replicas in order until one answers (see [`try_each`]).
    pub async fn first_answer<T>(
        &self,
        mut call: impl AsyncFnMut(Channel) -> Result<T, Status>,
    ) -> Result<Answer<T>, CtlError> {
        try_each(&self.targets, async |target: &Target| {
            self.ask(target, async |channel| call(channel).await).await
        })
        .await
    }

    /// Runs a write like [`Client::first_answer`], noting every replica that failed with the
    /// write's outcome unknown before the next was asked. When no replica confirms a write
    /// that may have been applied, the error is [`CtlError::OutcomeUnknown`].
    async fn write<T>(
        &self,
        mut call: impl AsyncFnMut(Channel) -> Result<T, Status>,
    ) -> Result<Answer<T>, CtlError> {
        let mut unconfirmed: Option<(Target, String)> = None;
        let result = try_each(&self.targets, async |target: &Target| {
            if let Some((failed, error)) = unconfirmed.take() {
                self.retried
                    .lock()
                    .unwrap_or_else(PoisonError::into_inner)
                    .push(Retried {
                        failed,
                        error,
                        retried_on: target.clone(),
                    });
            }
            let result = self.ask(target, async |channel| call(channel).await).await;
            if let Err(error) = &result
                && error.tries_next()
                && error.outcome_unknown()
            {
                unconfirmed = Some((target.clone(), error.to_string()));
            }
            result
        })
        .await;
        match result {
            Err(CtlError::NoAnswer(failures))
                if failures.iter().any(|f| f.error.outcome_unknown()) =>
            {
                Err(CtlError::OutcomeUnknown(failures))
            }
            other => other,
        }
    }

    /// `Cluster/Status` of one replica.
    pub async fn status_of(&self, target: &Target) -> Result<StatusResponse, CallError> {
        self.ask(target, async |channel| {
            let response = ClusterClient::new(channel).status(StatusRequest {}).await?;
            Ok(response.into_inner())
        })
        .await
    }

    /// `Cluster/Status` of the first replica that answers.
    pub async fn first_status(&self) -> Result<Answer<StatusResponse>, CtlError> {
        self.first_answer(async |channel| {
            let response = ClusterClient::new(channel).status(StatusRequest {}).await?;
            Ok(response.into_inner())
        })
        .await
    }

    /// `DiscoveryAdmin/ListSessions` of one replica.
    pub async fn sessions_of(&self, target: &Target) -> Result<ListSessionsResponse, CallError> {
        self.ask(target, async |channel| {
            let response = DiscoveryAdminClient::new(channel)
                .list_sessions(ListSessionsRequest {})
                .await?;
            Ok(response.into_inner())
        })
        .await
    }

    /// `DiscoveryAdmin/SidecarConfig` of one replica; NOT_FOUND when the sidecar is not
    /// connected there.
    pub async fn sidecar_config_of(
        &self,
        target: &Target,
        request: SidecarConfigRequest,
    ) -> Result<SidecarConfigResponse, CallError> {
        self.ask(target, async |channel| {
            let response = DiscoveryAdminClient::new(channel)
                .sidecar_config(request)
                .await?;
            Ok(response.into_inner())
        })
        .await
    }

    /// `Cluster/RemoveMember`.
    pub async fn remove_member(
        &self,
        request: RemoveMemberRequest,
    ) -> Result<Answer<RemoveMemberResponse>, CtlError> {
        self.first_answer(async |channel| {
            let response = ClusterClient::new(channel).remove_member(request).await?;
            Ok(response.into_inner())
        })
        .await
    }

    /// `Catalog/Register`.
    pub async fn register(
        &self,
        request: RegisterRequest,
    ) -> Result<Answer<WriteResponse>, CtlError> {
        self.write(async |channel| {
            let response = CatalogClient::new(channel)
                .register(request.clone())
                .await?;
            Ok(response.into_inner())
        })
        .await
    }

    /// `Catalog/Deregister`.
    pub async fn deregister(
        &self,
        request: DeregisterRequest,
    ) -> Result<Answer<WriteResponse>, CtlError> {
        self.write(async |channel| {
            let response = CatalogClient::new(channel)
                .deregister(request.clone())
                .await?;
            Ok(response.into_inner())
        })
        .await
    }

    /// `Catalog/GetService`.
    pub async fn get_service(
        &self,
        request: GetServiceRequest,
    ) -> Result<Answer<GetServiceResponse>, CtlError> {
        self.first_answer(async |channel| {
            let response = CatalogClient::new(channel)
                .get_service(request.clone())
                .await?;
            Ok(response.into_inner())
        })
        .await
    }

    /// `Catalog/ListServices`.
    pub async fn list_services(
        &self,
        request: ListServicesRequest,
    ) -> Result<Answer<ListServicesResponse>, CtlError> {
        self.first_answer(async |channel| {
            let response = CatalogClient::new(channel)
                .list_services(request.clone())
                .await?;
            Ok(response.into_inner())
        })
        .await
    }
}

#[cfg(test)]
mod tests;
