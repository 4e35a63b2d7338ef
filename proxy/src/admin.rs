//! The admin server: `/metrics` (Prometheus text), `/ready` (200 once a config was received
//! and while not draining), `/config` (the config the proxy routes with, as JSON). Bind it to
//! a port that netting-init excludes from inbound redirection.

use std::collections::BTreeMap;
use std::convert::Infallible;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use bytes::Bytes;
use http::{Method, Request, Response, StatusCode, header};
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use metrics_exporter_prometheus::PrometheusHandle;
use netting_discovery_client::{ConnectionStatus, LoadBalancer, Protocol, ProxyConfig};
use serde::Serialize;
use tokio::net::TcpListener;
use tokio::sync::watch;

/// What the admin endpoints read. Cheap to clone.
#[derive(Clone)]
pub struct AdminState {
    pub prometheus: PrometheusHandle,
    pub config: watch::Receiver<Arc<ProxyConfig>>,
    pub status: watch::Receiver<ConnectionStatus>,
    /// Set when shutdown begins: the pod leaves its Service's endpoints before it stops.
    pub draining: Arc<AtomicBool>,
}

impl std::fmt::Debug for AdminState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AdminState")
            .field("draining", &self.draining.load(Ordering::Relaxed))
            .finish_non_exhaustive()
    }
}

/// Serves until `stop` turns true; connections then finish their current request.
pub async fn serve(listener: TcpListener, state: AdminState, mut stop: watch::Receiver<bool>) {
    loop {
        let (stream, _) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(error) => {
                    tracing::warn!(%error, "admin accept failed");
                    tokio::time::sleep(std::time::Duration::from_millis(100)).await;
                    continue;
                }
            },
            () = async { let _ = stop.wait_for(|s| *s).await; } => return,
        };
        let state = state.clone();
        let mut stop = stop.clone();
        tokio::spawn(async move {
            let service = service_fn(move |request| {
                let state = state.clone();
                async move { Ok::<_, Infallible>(route(&request, &state)) }
            });
            let builder = auto::Builder::new(TokioExecutor::new());
            let connection = builder.serve_connection(TokioIo::new(stream), service);
            tokio::pin!(connection);
            let result = tokio::select! {
                result = connection.as_mut() => result,
                // Mapped to () so the borrow of the flag ends before the next await.
                () = async { let _ = stop.wait_for(|s| *s).await; } => {
                    connection.as_mut().graceful_shutdown();
                    connection.await
                }
            };
            if let Err(error) = result {
                tracing::debug!(%error, "admin connection ended with an error");
            }
        });
    }
}

/// Answers one admin request; a plain function of the request and the state.
pub fn route(request: &Request<Incoming>, state: &AdminState) -> Response<Full<Bytes>> {
    answer(request.method(), request.uri().path(), state)
}

fn answer(method: &Method, path: &str, state: &AdminState) -> Response<Full<Bytes>> {
    if method != Method::GET && method != Method::HEAD {
        return text(
            StatusCode::METHOD_NOT_ALLOWED,
            "only GET and HEAD\n".to_owned(),
        );
    }
    match path {
        "/metrics" => {
            let mut response = text(StatusCode::OK, state.prometheus.render());
            response.headers_mut().insert(
                header::CONTENT_TYPE,
                header::HeaderValue::from_static("text/plain; version=0.0.4"),
            );
            response
        }
        "/ready" => {
            let version = state.config.borrow().version;
            if state.draining.load(Ordering::Relaxed) {
                text(StatusCode::SERVICE_UNAVAILABLE, "draining\n".to_owned())
            } else if version == 0 {
                text(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "no config received from the control plane yet\n".to_owned(),
                )
            } else {
                text(StatusCode::OK, format!("ready at version {version}\n"))
            }
        }
        "/config" => {
            let config = state.config.borrow().clone();
            let status = state.status.borrow().clone();
            json(&ConfigView::new(&config, &status))
        }
        _ => text(
            StatusCode::NOT_FOUND,
            "not found; try /metrics, /ready or /config\n".to_owned(),
        ),
    }
}

fn text(status: StatusCode, body: String) -> Response<Full<Bytes>> {
    let mut response = Response::new(Full::new(Bytes::from(body)));
    *response.status_mut() = status;
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        header::HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    response
}

fn json(value: &impl Serialize) -> Response<Full<Bytes>> {
    match serde_json::to_vec_pretty(value) {
        Ok(body) => {
            let mut response = Response::new(Full::new(Bytes::from(body)));
            response.headers_mut().insert(
                header::CONTENT_TYPE,
                header::HeaderValue::from_static("application/json"),
            );
            response
        }
        Err(error) => text(
            StatusCode::INTERNAL_SERVER_ERROR,
            format!("cannot encode: {error}\n"),
        ),
    }
}

/// `/config`: the config as an operator reads it, with the connection to the control plane.
#[derive(Debug, Serialize)]
pub struct ConfigView {
    pub version: u64,
    pub cluster_id: String,
    pub control_plane: ControlPlaneView,
    pub services: BTreeMap<String, ServiceView>,
}

#[derive(Debug, Serialize)]
pub struct ControlPlaneView {
    pub connected: bool,
    pub replica: Option<String>,
    pub reconnects: u64,
    pub last_error: Option<String>,
    /// Why the last update was refused, if one was.
    pub last_rejection: Option<String>,
}

#[derive(Debug, Serialize)]
pub struct ServiceView {
    pub ports: Vec<PortView>,
    pub endpoints: Vec<EndpointView>,
    pub request_timeout_ms: Option<u64>,
    pub max_retries: u32,
    pub load_balancer: Option<&'static str>,
}

#[derive(Debug, Serialize)]
pub struct PortView {
    pub name: String,
    pub port: u16,
    pub protocol: &'static str,
}

#[derive(Debug, Serialize)]
pub struct EndpointView {
    pub address: String,
    pub ready: bool,
    pub zone: Option<String>,
}

impl ConfigView {
    pub fn new(config: &ProxyConfig, status: &ConnectionStatus) -> ConfigView {
        let services = config
            .services
            .iter()
            .map(|(name, service)| {
                let view = ServiceView {
                    ports: service
                        .ports
                        .iter()
                        .map(|p| PortView {
                            name: p.name.clone(),
                            port: p.port,
                            protocol: match p.protocol {
                                Protocol::Tcp => "tcp",
                                Protocol::Http => "http",
                                Protocol::Grpc => "grpc",
                            },
                        })
                        .collect(),
                    endpoints: service
                        .endpoints
                        .iter()
                        .map(|e| EndpointView {
                            address: e.addr.to_string(),
                            ready: e.ready,
                            zone: e.zone.clone(),
                        })
                        .collect(),
                    request_timeout_ms: service
                        .policy
                        .request_timeout
                        .map(|t| t.as_millis() as u64),
                    max_retries: service.policy.max_retries,
                    load_balancer: service.policy.load_balancer.map(|lb| match lb {
                        LoadBalancer::RoundRobin => "round_robin",
                        LoadBalancer::LeastRequest => "least_request",
                        LoadBalancer::P2cEwma => "p2c_ewma",
                    }),
                };
                (name.to_string(), view)
            })
            .collect();
        ConfigView {
            version: config.version,
            cluster_id: config.cluster_id.clone(),
            control_plane: ControlPlaneView {
                connected: status.connected,
                replica: status.connected_to.clone(),
                reconnects: status.reconnects,
                last_error: status.last_error.clone(),
                last_rejection: status.last_nack.clone(),
            },
            services,
        }
    }
}
