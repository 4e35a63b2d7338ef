//! A light-weight simulated sidecar for discovery tests: it speaks the protocol with the raw
//! generated client, records every version it applies, and moves between replicas.
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used, unreachable_pub)]

use std::sync::{Arc, Mutex};
use std::time::Duration;

use netting_proto::discovery::v1 as pb;
use netting_proto::discovery::v1::discovery_admin_client::DiscoveryAdminClient;
use netting_proto::discovery::v1::discovery_client::DiscoveryClient;
use tokio::sync::{mpsc, watch};
use tokio_stream::wrappers::ReceiverStream;

pub fn hello(
    pod: &str,
    namespaces: &[&str],
    last_version: u64,
    cluster_id: &str,
) -> pb::DiscoveryRequest {
    pb::DiscoveryRequest {
        message: Some(pb::discovery_request::Message::Hello(pb::Hello {
            identity: Some(pb::ProxyIdentity {
                pod: pod.into(),
                namespace: "default".into(),
                proxy_version: "test".into(),
                ..Default::default()
            }),
            subscription: Some(pb::Subscription {
                namespaces: namespaces.iter().map(|s| (*s).to_owned()).collect(),
                services: vec![],
            }),
            last_version,
            cluster_id: cluster_id.into(),
        })),
    }
}

/// A hello that subscribes to whole namespaces and to services named `(namespace, name)`.
pub fn hello_with(
    pod: &str,
    namespaces: &[&str],
    services: &[(&str, &str)],
    last_version: u64,
    cluster_id: &str,
) -> pb::DiscoveryRequest {
    let mut request = hello(pod, namespaces, last_version, cluster_id);
    if let Some(pb::discovery_request::Message::Hello(hello)) = &mut request.message {
        hello.subscription = Some(pb::Subscription {
            namespaces: namespaces.iter().map(|s| (*s).to_owned()).collect(),
            services: services
                .iter()
                .map(|(namespace, name)| pb::ServiceRef {
                    namespace: (*namespace).to_owned(),
                    name: (*name).to_owned(),
                })
                .collect(),
        });
    }
    request
}

pub fn ack(response: &pb::DiscoveryResponse) -> pb::DiscoveryRequest {
    pb::DiscoveryRequest {
        message: Some(pb::discovery_request::Message::Ack(pb::Ack {
            version: response.version,
            nonce: response.nonce.clone(),
        })),
    }
}

/// One open stream, driven by hand.
pub struct RawStream {
    pub requests: mpsc::Sender<pb::DiscoveryRequest>,
    pub responses: tonic::Streaming<pb::DiscoveryResponse>,
}

impl RawStream {
    /// Opens a stream and sends `first`.
    pub async fn open(addr: &str, first: pb::DiscoveryRequest) -> Result<RawStream, tonic::Status> {
        let mut client = DiscoveryClient::new(super::channel(addr));
        let (requests, rx) = mpsc::channel(16);
        requests.send(first).await.unwrap();
        let responses = client.stream(ReceiverStream::new(rx)).await?.into_inner();
        Ok(RawStream {
            requests,
            responses,
        })
    }

    /// Opens a stream and sends nothing. The request sender is kept open (dropping it would end
    /// the stream, which the replica answers differently), so the replica only hears silence.
    /// The call returns when the replica answers, that is when it gives up waiting.
    pub async fn open_silent(addr: &str) -> Result<RawStream, tonic::Status> {
        let mut client = DiscoveryClient::new(super::channel(addr));
        let (requests, rx) = mpsc::channel(16);
        let responses = client.stream(ReceiverStream::new(rx)).await?.into_inner();
        Ok(RawStream {
            requests,
            responses,
        })
    }

    /// The next response, or the status that ended the stream.
    pub async fn next(&mut self) -> Result<pb::DiscoveryResponse, tonic::Status> {
        match tokio::time::timeout(super::PATIENCE, self.responses.message()).await {
            Ok(Ok(Some(response))) => Ok(response),
            Ok(Ok(None)) => Err(tonic::Status::cancelled("stream ended without a status")),
            Ok(Err(status)) => Err(status),
            Err(_) => panic!("no response within {:?}", super::PATIENCE),
        }
    }

    pub async fn ack(&self, response: &pb::DiscoveryResponse) {
        self.requests.send(ack(response)).await.unwrap();
    }

    /// The status that ends the stream; fails the test if a response comes first.
    pub async fn ended(&mut self) -> tonic::Status {
        match self.next().await {
            Ok(response) => panic!("expected the stream to end, got a response: {response:?}"),
            Err(status) => status,
        }
    }
}

/// Opens a stream that sends `first` and returns the status the replica ends it with; fails
/// the test if a response comes first. The refusal may come before the response headers (the
/// stream never opens) or after them: both are the same answer to the sidecar.
pub async fn refused(addr: &str, first: pb::DiscoveryRequest) -> tonic::Status {
    match RawStream::open(addr, first).await {
        Err(status) => status,
        Ok(mut stream) => stream.ended().await,
    }
}

/// `DiscoveryAdmin.ListSessions` of the replica at `addr`.
pub async fn list_sessions(addr: &str) -> pb::ListSessionsResponse {
    let mut client = DiscoveryAdminClient::new(super::channel(addr));
    client
        .list_sessions(pb::ListSessionsRequest {})
        .await
        .unwrap()
        .into_inner()
}

/// The session of `pod` in a `ListSessions` answer.
pub fn session_of<'a>(
    list: &'a pb::ListSessionsResponse,
    pod: &str,
) -> Option<&'a pb::SessionInfo> {
    list.sessions.iter().find(|s| s.pod == pod)
}

/// What a simulated sidecar saw.
#[derive(Debug, Default, Clone)]
pub struct Record {
    /// Every version applied, in order.
    pub applied: Vec<u64>,
    pub snapshots: usize,
    pub deltas: usize,
    /// Responses whose version was lower than one applied before (must stay empty).
    pub regressions: Vec<(u64, u64)>,
    pub connects: usize,
    /// The status code of each stream the replica ended with an error, in order.
    pub endings: Vec<tonic::Code>,
}

/// A sidecar that keeps a stream to one of `replicas` open, ACKs everything, resumes with its
/// last version, and moves to the next replica when a stream ends.
pub struct SimSidecar {
    pub version: watch::Receiver<u64>,
    pub record: Arc<Mutex<Record>>,
    task: tokio::task::JoinHandle<()>,
}

impl SimSidecar {
    pub fn spawn(pod: String, replicas: Vec<String>, namespaces: Vec<String>) -> SimSidecar {
        let (version_tx, version) = watch::channel(0);
        let record = Arc::new(Mutex::new(Record::default()));
        let rec = record.clone();
        let task = tokio::spawn(async move {
            let mut current = 0u64;
            let mut cluster_id = String::new();
            let mut next = 0usize;
            loop {
                let addr = &replicas[next % replicas.len()];
                next += 1;
                let ns: Vec<&str> = namespaces.iter().map(String::as_str).collect();
                let Ok(mut stream) =
                    RawStream::open(addr, hello(&pod, &ns, current, &cluster_id)).await
                else {
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                };
                rec.lock().unwrap().connects += 1;
                loop {
                    let response = match stream.responses.message().await {
                        Ok(Some(response)) => response,
                        Ok(None) => break,
                        Err(status) => {
                            rec.lock().unwrap().endings.push(status.code());
                            break;
                        }
                    };
                    {
                        let mut r = rec.lock().unwrap();
                        if response.cluster_id == cluster_id && response.version < current {
                            r.regressions.push((current, response.version));
                        }
                        match response.update {
                            Some(pb::discovery_response::Update::Snapshot(_)) => r.snapshots += 1,
                            Some(pb::discovery_response::Update::Delta(_)) => r.deltas += 1,
                            None => {}
                        }
                        r.applied.push(response.version);
                    }
                    current = current.max(response.version);
                    cluster_id = response.cluster_id.clone();
                    let _ = version_tx.send(current);
                    if stream.requests.send(ack(&response)).await.is_err() {
                        break;
                    }
                }
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        });
        SimSidecar {
            version,
            record,
            task,
        }
    }

    /// Waits until this sidecar has applied at least `version`.
    pub async fn wait_for(&mut self, version: u64) -> bool {
        tokio::time::timeout(super::PATIENCE, self.version.wait_for(|v| *v >= version))
            .await
            .is_ok_and(|r| r.is_ok())
    }
}

impl Drop for SimSidecar {
    fn drop(&mut self) {
        self.task.abort();
    }
}
