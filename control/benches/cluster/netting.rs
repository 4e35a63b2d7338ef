//! A 3-replica Netting cluster of release `netting-control` processes on loopback.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::LazyLock;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use netting_proto::catalog::v1 as pb;
use netting_proto::catalog::v1::catalog_client::CatalogClient;
use netting_proto::catalog::v1::cluster_client::ClusterClient;
use prost::Message;
use tonic::transport::{Channel, Endpoint};

use crate::load::{Ack, Cluster, Era, Writer};
use crate::procs::{Proc, free_ports, poll, tail};

const BIN: &str = env!("CARGO_BIN_EXE_netting-control");

/// The replica binary: this build's, or `NETTING_BENCH_BIN` to measure another build (an
/// earlier commit's) with the same load.
fn replica_binary() -> std::ffi::OsString {
    std::env::var_os("NETTING_BENCH_BIN").unwrap_or_else(|| BIN.into())
}

/// How long start-up, elections and catch-up may take before the run gives up.
const PATIENCE: Duration = Duration::from_secs(60);

/// Encoded sizes of the register requests actually sent, to print the exact payload size.
static SIZE_MIN: AtomicUsize = AtomicUsize::new(usize::MAX);
static SIZE_MAX: AtomicUsize = AtomicUsize::new(0);

struct Node {
    grpc: String,
    admin: String,
    data_dir: PathBuf,
    log: PathBuf,
    proc: Option<Proc>,
}

pub(crate) struct Netting {
    nodes: Vec<Node>,
    peers: String,
    payload: usize,
    extra_args: Vec<String>,
}

impl Netting {
    /// Starts 3 replicas with default flags (heartbeat 50 ms, election 100–200 ms, fsync on
    /// every commit) plus `extra_args`, and waits until they agree on a leader.
    pub(crate) async fn start(dir: &Path, payload: usize, extra_args: &[String]) -> Netting {
        std::fs::create_dir_all(dir)
            .unwrap_or_else(|e| panic!("cannot create {}: {e}", dir.display()));
        let ports = free_ports(6);
        let nodes: Vec<Node> = (0..3)
            .map(|i| Node {
                grpc: format!("127.0.0.1:{}", ports[2 * i]),
                admin: format!("127.0.0.1:{}", ports[2 * i + 1]),
                data_dir: dir.join(format!("netting-{i}")),
                log: dir.join(format!("netting-{i}.log")),
                proc: None,
            })
            .collect();
        let peers = nodes
            .iter()
            .enumerate()
            .map(|(i, n)| format!("{i}={}", n.grpc))
            .collect::<Vec<_>>()
            .join(",");
        let mut cluster = Netting {
            nodes,
            peers,
            payload,
            extra_args: extra_args.to_vec(),
        };
        for i in 0..3 {
            cluster.spawn(i);
        }
        cluster.wait_leader().await;
        cluster
    }

    fn spawn(&mut self, i: usize) {
        let node = &self.nodes[i];
        let mut cmd = Command::new(replica_binary());
        cmd.arg("run")
            .args(["--node-id", &i.to_string()])
            .arg("--data-dir")
            .arg(&node.data_dir)
            .args(["--grpc-listen", &node.grpc])
            .args(["--admin-listen", &node.admin])
            .args(["--peer", &self.peers])
            .args(&self.extra_args)
            // The shipped default level, set explicitly so the caller's environment cannot
            // make the replicas quieter or noisier than in production.
            .env("NETTING_LOG", "info")
            .env_remove("RUST_LOG");
        let proc = Proc::spawn(&mut cmd, &node.log);
        self.nodes[i].proc = Some(proc);
    }

    async fn status(&self, i: usize) -> Option<pb::StatusResponse> {
        let channel = lazy_channel(&self.nodes[i].grpc)?;
        let mut req = tonic::Request::new(pb::StatusRequest {});
        req.set_timeout(Duration::from_secs(1));
        ClusterClient::new(channel)
            .status(req)
            .await
            .ok()
            .map(tonic::Response::into_inner)
    }

    async fn statuses(&self) -> Vec<Option<pb::StatusResponse>> {
        let mut out = Vec::new();
        for i in 0..self.nodes.len() {
            out.push(if self.nodes[i].proc.is_some() {
                self.status(i).await
            } else {
                None
            });
        }
        out
    }

    fn logs(&self) -> String {
        self.nodes
            .iter()
            .map(|n| tail(&n.log, 20))
            .collect::<Vec<_>>()
            .join("\n")
    }
}

/// The request writer `writer` sends as its write number `n`: a new endpoint of the writer's
/// service, with the pod name padded so the encoded request is `size` bytes (or just below,
/// when protobuf's length prefixes make `size` itself unreachable).
pub(crate) fn request(writer: usize, n: u64, size: usize) -> pb::RegisterRequest {
    let service = format!("bench-{writer:03}");
    // Every write adds an endpoint nobody registered before: 10.a.b.c:port taken from the
    // global sequence number. These addresses are catalog data only; nothing connects to them.
    let address = format!("10.{}.{}.{}", (n >> 16) & 0xff, (n >> 8) & 0xff, n & 0xff);
    let port = 1024 + u32::try_from(n >> 24).unwrap_or(0) % 60_000;
    let base_pod = format!("{service}-{n}");
    let mut req = pb::RegisterRequest {
        namespace: "bench".into(),
        service: service.clone(),
        endpoint: Some(pb::Endpoint {
            address,
            port,
            ready: true,
            zone: "zone-a".into(),
            pod: base_pod.clone(),
            modify_index: 0,
        }),
        labels: [
            ("app".to_owned(), service),
            ("tier".to_owned(), "bench".to_owned()),
        ]
        .into_iter()
        .collect(),
        ..Default::default()
    };
    let unpadded = req.encoded_len();
    let mut pad = size.saturating_sub(unpadded).min(200);
    loop {
        if let Some(e) = req.endpoint.as_mut() {
            e.pod = format!("{base_pod}{}", "x".repeat(pad));
        }
        // A longer pod name can grow a varint length prefix by a byte: step back until the
        // request is no larger than asked for.
        if req.encoded_len() <= size || pad == 0 {
            break;
        }
        pad -= 1;
    }
    req
}

/// The smallest and largest encoded register request sent so far.
pub(crate) fn sizes_sent() -> (usize, usize) {
    (
        SIZE_MIN.load(Ordering::Relaxed),
        SIZE_MAX.load(Ordering::Relaxed),
    )
}

fn lazy_channel(addr: &str) -> Option<Channel> {
    Some(
        Endpoint::from_shared(format!("http://{addr}"))
            .ok()?
            .connect_timeout(Duration::from_secs(1))
            .connect_lazy(),
    )
}

impl Cluster for Netting {
    fn name(&self) -> &'static str {
        "netting"
    }

    async fn wait_leader(&self) -> usize {
        let found = poll(PATIENCE, || async {
            let statuses = self.statuses().await;
            let running: Vec<&pb::StatusResponse> = statuses
                .iter()
                .zip(&self.nodes)
                .filter(|(_, n)| n.proc.is_some())
                .map(|(s, _)| s.as_ref())
                .collect::<Option<_>>()?;
            let leader = running.first()?.leader_id?;
            let agreed = running.iter().all(|s| s.leader_id == Some(leader));
            let leader = usize::try_from(leader).ok()?;
            let leads = statuses.get(leader)?.as_ref()?.state == "leader";
            (agreed && leads).then_some(leader)
        })
        .await;
        found.unwrap_or_else(|| panic!("netting: no agreed leader\n{}", self.logs()))
    }

    async fn writer(&self, member: usize, writer: usize) -> Writer {
        let channel = Endpoint::from_shared(format!("http://{}", self.nodes[member].grpc))
            .expect("a loopback address is a valid URI")
            .connect_timeout(Duration::from_secs(1))
            .connect()
            .await
            .unwrap_or_else(|e| panic!("netting: cannot connect to replica {member}: {e}"));
        // The member first, then the others to fail over to, as any client of the cluster.
        let mut clients = vec![CatalogClient::new(channel)];
        let others = (1..self.nodes.len()).map(|k| (member + k) % self.nodes.len());
        clients.extend(
            others
                .filter_map(|m| lazy_channel(&self.nodes[m].grpc))
                .map(CatalogClient::new),
        );
        Writer::Netting {
            clients,
            writer,
            payload: self.payload,
        }
    }

    async fn era(&self, leader: usize) -> Era {
        Era::NotLedBy(leader as u64)
    }

    fn pids(&self) -> Vec<u32> {
        self.nodes
            .iter()
            .filter_map(|n| n.proc.as_ref().and_then(Proc::pid))
            .collect()
    }

    fn metrics_uris(&self) -> Vec<Option<String>> {
        self.nodes
            .iter()
            .map(|n| {
                n.proc
                    .as_ref()
                    .map(|_| format!("http://{}/metrics", n.admin))
            })
            .collect()
    }

    fn sync_histogram(&self) -> &'static str {
        // Every log append is one redb commit with Durability::Immediate, i.e. fsync'd.
        "netting_raft_append_seconds"
    }

    fn leader_histograms(&self) -> &'static [&'static str] {
        &[
            "netting_catalog_write_batch_size",
            "netting_catalog_write_seconds",
            "netting_catalog_propose_seconds",
            "netting_raft_append_seconds",
        ]
    }

    fn kill(&mut self, member: usize) -> Instant {
        let proc = self.nodes[member].proc.take();
        proc.map_or_else(Instant::now, |mut p| p.kill())
    }

    fn restart(&mut self, member: usize) {
        self.spawn(member);
    }

    async fn wait_converged(&self) {
        let found = poll(PATIENCE, || async {
            let statuses: Vec<pb::StatusResponse> =
                self.statuses().await.into_iter().collect::<Option<_>>()?;
            let first = statuses.first()?;
            let same = statuses.iter().all(|s| {
                s.leader_id.is_some()
                    && s.leader_id == first.leader_id
                    && s.applied_index == first.applied_index
                    && s.catalog_version == first.catalog_version
            });
            same.then_some(())
        })
        .await;
        if found.is_none() {
            panic!(
                "netting: replicas did not converge: {:?}\n{}",
                self.statuses()
                    .await
                    .iter()
                    .map(|s| s.as_ref().map(|s| (s.leader_id, s.applied_index)))
                    .collect::<Vec<_>>(),
                self.logs()
            );
        }
    }
}

/// Names this bench process's writes (`RequestId.client`); the sequence is the write's
/// global number, unique within the run.
static CLIENT_ID: LazyLock<String> = LazyLock::new(|| uuid::Uuid::new_v4().to_string());

/// One register through the first of `clients`, moving on to the next on a failure
/// `netting_proto::retry` calls transient, as nettingctl does. Every try sends the same
/// request id, so a write that a failed replica had applied is not applied again.
pub(crate) async fn write(
    clients: &mut [CatalogClient<Channel>],
    writer: usize,
    n: u64,
    payload: usize,
) -> Result<Ack, String> {
    let mut req = request(writer, n, payload);
    let len = req.encoded_len();
    SIZE_MIN.fetch_min(len, Ordering::Relaxed);
    SIZE_MAX.fetch_max(len, Ordering::Relaxed);
    req.request_id = Some(pb::RequestId {
        client: CLIENT_ID.clone(),
        sequence: n,
    });
    let mut failures = Vec::new();
    for client in clients.iter_mut() {
        match client.register(req.clone()).await {
            Ok(response) => {
                return Ok(Ack {
                    leader: Some(response.into_inner().leader_id),
                    term: None,
                });
            }
            Err(status) => {
                let transient = netting_proto::retry::is_transient(&status);
                failures.push(format!("{:?}: {}", status.code(), status.message()));
                if !transient {
                    break;
                }
            }
        }
    }
    Err(failures.join("; then "))
}
