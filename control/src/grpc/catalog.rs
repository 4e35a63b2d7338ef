//! The `Catalog` gRPC service: validated writes through the leader's catalog writer, reads
//! from the applied catalog (or through the leader when they must be linearizable).

use netting_proto::catalog::v1 as pb;
use netting_proto::catalog::v1::catalog_client::CatalogClient;
use netting_proto::catalog::v1::catalog_server::Catalog;
use netting_raft::catalog::{CatalogCommand, InvalidField, RequestId};
use prost::Message;
use tonic::{Request, Response, Status};
use tracing::Instrument;

use super::convert;
use super::request_ids::IdentifiedWrite;
use super::routing::{self, Replica, Route};
use crate::actors::catalog_writer::Propose;

/// The catalog service of one replica.
#[derive(Debug, Clone)]
pub struct CatalogService {
    replica: Replica,
}

impl CatalogService {
    pub fn new(replica: Replica) -> Self {
        Self { replica }
    }

    /// Proposes `command` on the leader, forwarding the original request there when this
    /// replica does not lead. A request without an id gets one here, before it is proposed or
    /// forwarded, so every retry below is of the same request.
    async fn write<Req, Fwd, Fut>(
        &self,
        request: Request<Req>,
        command: CatalogCommand,
        forward: Fwd,
    ) -> Result<Response<pb::WriteResponse>, Status>
    where
        Req: IdentifiedWrite,
        Fwd: Fn(CatalogClient<tonic::transport::Channel>, Request<Req>) -> Fut,
        Fut: Future<Output = Result<Response<pb::WriteResponse>, Status>>,
    {
        let already_forwarded = routing::is_forwarded(&request);
        let mut body = request.into_inner();
        let request_id = match convert::request_id(body.request_id()).map_err(invalid)? {
            Some(id) => id,
            None => {
                let id = self.replica.request_ids.next();
                body.set_request_id(convert::request_id_to_proto(&id));
                id
            }
        };
        let span = tracing::debug_span!(
            "catalog_write",
            request = %request_id,
            command = command.kind(),
            forwarded = already_forwarded,
        );
        self.until_answered(body, &request_id, command, already_forwarded, forward)
            .instrument(span)
            .await
    }

    /// Proposes on this replica while it leads, forwards to the leader otherwise, and after a
    /// failure that leaves the outcome open waits for a leader and tries again, until the
    /// deadline.
    async fn until_answered<Req, Fwd, Fut>(
        &self,
        body: Req,
        request_id: &RequestId,
        command: CatalogCommand,
        already_forwarded: bool,
        forward: Fwd,
    ) -> Result<Response<pb::WriteResponse>, Status>
    where
        Req: IdentifiedWrite,
        Fwd: Fn(CatalogClient<tonic::transport::Channel>, Request<Req>) -> Fut,
        Fut: Future<Output = Result<Response<pb::WriteResponse>, Status>>,
    {
        let deadline = self.replica.leader_deadline();
        loop {
            match self.replica.route(deadline).await? {
                Route::Local => {
                    let answer = self
                        .replica
                        .writer
                        .send(Propose::request(request_id.clone(), command.clone()))
                        .await
                        .map_err(|_| Status::unavailable("the replica is shutting down"))?;
                    match answer {
                        Ok(done) => {
                            if done.duplicate {
                                metrics::counter!("netting_catalog_duplicate_requests_total")
                                    .increment(1);
                                tracing::debug!(
                                    version = done.version,
                                    "answered a repeated request from the record"
                                );
                            }
                            return Ok(Response::new(pb::WriteResponse {
                                version: done.version,
                                leader_id: done.leader_id,
                                duplicate: done.duplicate,
                            }));
                        }
                        Err(crate::actors::catalog_writer::ProposeError::NotLeader { .. })
                            if tokio::time::Instant::now() < deadline =>
                        {
                            self.replica
                                .wait_leader_change(Some(self.replica.node_id), deadline)
                                .await;
                        }
                        Err(err) => return Err(routing::propose_status(err)),
                    }
                }
                Route::Forward { leader, .. } if already_forwarded => {
                    return Err(Status::unavailable(format!(
                        "this replica is no longer the leader (leader: {leader}); retry"
                    )));
                }
                Route::Forward { leader, channel } => {
                    metrics::counter!("netting_catalog_forwarded_total").increment(1);
                    let client = CatalogClient::new(channel);
                    match forward(client, routing::forwarded(body.clone())).await {
                        Err(status)
                            if netting_proto::retry::is_transient(&status)
                                && tokio::time::Instant::now() < deadline =>
                        {
                            tracing::debug!(leader, %status, "forwarding failed; waiting for a leader");
                            self.replica
                                .wait_leader_change(Some(leader), deadline)
                                .await;
                        }
                        other => return other.map_err(routing::forwarding_failure),
                    }
                }
            }
        }
    }

    /// Where a read is served: `None` here (a local read, or a linearizable one this replica
    /// confirmed as leader with a quorum round trip), or the leader to forward to. A forwarded
    /// read is never forwarded again.
    async fn read_route<T>(
        &self,
        request: &Request<T>,
        consistency: i32,
    ) -> Result<Option<CatalogClient<tonic::transport::Channel>>, Status> {
        if !wants_linearizable(consistency) {
            return Ok(None);
        }
        if routing::is_forwarded(request) {
            self.confirm_leadership().await?;
            return Ok(None);
        }
        self.linearizable_route().await
    }

    async fn confirm_leadership(&self) -> Result<(), Status> {
        self.replica
            .ensure_linearizable()
            .await
            .map_err(|e| Status::unavailable(format!("cannot confirm leadership: {e}")))
    }

    /// For linearizable reads: confirms leadership with a quorum round trip, or returns the
    /// leader to forward to.
    async fn linearizable_route(
        &self,
    ) -> Result<Option<CatalogClient<tonic::transport::Channel>>, Status> {
        let deadline = self.replica.leader_deadline();
        match self.replica.route(deadline).await? {
            Route::Local => self.confirm_leadership().await.map(|()| None),
            Route::Forward { channel, .. } => Ok(Some(CatalogClient::new(channel))),
        }
    }
}

fn invalid(err: InvalidField) -> Status {
    Status::invalid_argument(err.to_string())
}

fn wants_linearizable(consistency: i32) -> bool {
    consistency == pb::Consistency::Linearizable as i32
}

/// Names the largest field of a register request, for the size-limit error.
fn largest_register_field(req: &pb::RegisterRequest) -> &'static str {
    let sizes = [
        (
            "labels",
            req.labels
                .iter()
                .map(|(k, v)| k.len() + v.len())
                .sum::<usize>(),
        ),
        ("ports", req.ports.iter().map(Message::encoded_len).sum()),
        (
            "endpoint",
            req.endpoint.as_ref().map_or(0, Message::encoded_len),
        ),
        ("namespace", req.namespace.len()),
        ("service", req.service.len()),
    ];
    sizes
        .iter()
        .max_by_key(|(_, size)| *size)
        .map_or("request", |(name, _)| name)
}

#[tonic::async_trait]
impl Catalog for CatalogService {
    async fn register(
        &self,
        request: Request<pb::RegisterRequest>,
    ) -> Result<Response<pb::WriteResponse>, Status> {
        let req = request.get_ref();
        self.replica
            .check_size(req.encoded_len(), largest_register_field(req))?;
        let command = convert::register_command(req).map_err(invalid)?;
        self.write(request, command, |mut client, req| async move {
            client.register(req).await
        })
        .await
    }

    async fn deregister(
        &self,
        request: Request<pb::DeregisterRequest>,
    ) -> Result<Response<pb::WriteResponse>, Status> {
        let req = request.get_ref();
        self.replica.check_size(req.encoded_len(), "service")?;
        let command = convert::deregister_command(req).map_err(invalid)?;
        self.write(request, command, |mut client, req| async move {
            client.deregister(req).await
        })
        .await
    }

    async fn get_service(
        &self,
        request: Request<pb::GetServiceRequest>,
    ) -> Result<Response<pb::GetServiceResponse>, Status> {
        let req = request.get_ref();
        let key = convert::service_key(&req.namespace, &req.service).map_err(invalid)?;
        if let Some(mut leader) = self.read_route(&request, req.consistency).await? {
            return leader
                .get_service(routing::forwarded(req.clone()))
                .await
                .map_err(routing::forwarding_failure);
        }
        let (service, version) = self
            .replica
            .catalog
            .read(|c| (c.get(&key).map(convert::service_to_proto), c.version()));
        match service {
            Some(service) => Ok(Response::new(pb::GetServiceResponse {
                service: Some(service),
                version,
            })),
            None => Err(Status::not_found(format!("service {key} not found"))),
        }
    }

    async fn list_services(
        &self,
        request: Request<pb::ListServicesRequest>,
    ) -> Result<Response<pb::ListServicesResponse>, Status> {
        let req = request.get_ref();
        let namespace = (!req.namespace.is_empty()).then_some(req.namespace.as_str());
        if let Some(ns) = namespace {
            netting_raft::catalog::validate::dns_label("namespace", ns).map_err(invalid)?;
        }
        if let Some(mut leader) = self.read_route(&request, req.consistency).await? {
            return leader
                .list_services(routing::forwarded(req.clone()))
                .await
                .map_err(routing::forwarding_failure);
        }
        let (services, version) = self.replica.catalog.read(|c| {
            (
                c.list(namespace).map(convert::service_to_proto).collect(),
                c.version(),
            )
        });
        Ok(Response::new(pb::ListServicesResponse {
            services,
            version,
        }))
    }
}

#[cfg(test)]
mod tests;
