//! A 3-member etcd cluster on loopback, driven through its HTTP/JSON gateway (and, for
//! comparison, its native gRPC API).

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
use std::time::{Duration, Instant};

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use bytes::Bytes;
use serde_json::Value;
use tonic::transport::{Channel, Endpoint};

use crate::load::{Ack, Cluster, Era, Writer};
use crate::procs::{Proc, free_ports, poll, tail};
use crate::web::{self, Http, post_json};

const PATIENCE: Duration = Duration::from_secs(60);

/// How the load reaches etcd.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Transport {
    /// POST /v3/kv/put with base64 in JSON: what the issue asks for.
    Gateway,
    /// etcdserverpb.KV/Put over gRPC, etcd's native client protocol: shows how much of the
    /// difference is the gateway's JSON and extra hop rather than etcd itself.
    Grpc,
}

/// etcd's Raft timings. etcd refuses an election timeout below 5 heartbeats, so Netting's
/// 50 ms / 100–200 ms cannot be copied as is; 20 ms / 100 ms gives etcd the same randomised
/// election window (it draws from [timeout, 2 × timeout)).
#[derive(Debug, Clone, Copy)]
pub(crate) struct Timing {
    pub(crate) heartbeat_ms: u64,
    pub(crate) election_ms: u64,
}

struct Member {
    client: String,
    log: PathBuf,
    args: Vec<String>,
    proc: Option<Proc>,
}

pub(crate) struct Etcd {
    bin: PathBuf,
    members: Vec<Member>,
    /// Raft member id of each member, by index.
    ids: Vec<u64>,
    http: Http,
    payload: usize,
    pub(crate) transport: Transport,
}

/// What `POST /v3/maintenance/status` says about one member.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Status {
    member_id: u64,
    leader: u64,
    raft_term: u64,
    raft_index: u64,
    revision: u64,
}

/// `etcd` from PATH, installing Debian's `etcd-server` when it is missing.
pub(crate) fn find_or_install() -> Result<PathBuf, String> {
    if let Some(found) = which("etcd") {
        return Ok(found);
    }
    println!(
        "etcd is not on PATH: installing Debian's etcd-server (apt-get install -y etcd-server)"
    );
    let install = || {
        Command::new("apt-get")
            .args(["install", "-y", "--no-install-recommends", "etcd-server"])
            .env("DEBIAN_FRONTEND", "noninteractive")
            .status()
    };
    let mut ok = install().is_ok_and(|s| s.success());
    if !ok {
        // A fresh machine has no package lists yet.
        let updated = Command::new("apt-get")
            .arg("update")
            .status()
            .is_ok_and(|s| s.success());
        ok = updated && install().is_ok_and(|s| s.success());
    }
    match which("etcd") {
        Some(found) if ok => Ok(found),
        _ => Err("apt-get install -y etcd-server failed (not root, or no package mirror)".into()),
    }
}

fn which(name: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .chain([PathBuf::from("/usr/bin"), PathBuf::from("/usr/sbin")])
        .map(|dir| dir.join(name))
        .find(|p| p.is_file())
}

/// The first line of `etcd --version`.
pub(crate) fn version(bin: &Path) -> String {
    Command::new(bin)
        .arg("--version")
        .output()
        .ok()
        .and_then(|o| {
            String::from_utf8_lossy(&o.stdout)
                .lines()
                .next()
                .map(str::to_owned)
        })
        .unwrap_or_else(|| "unknown".into())
}

impl Etcd {
    /// Starts 3 members with fsync on (etcd's default and only safe mode), waits for a leader.
    pub(crate) async fn start(bin: &Path, dir: &Path, timing: Timing, payload: usize) -> Etcd {
        std::fs::create_dir_all(dir)
            .unwrap_or_else(|e| panic!("cannot create {}: {e}", dir.display()));
        let ports: Vec<(u16, u16)> = free_ports(6).chunks(2).map(|p| (p[0], p[1])).collect();
        let initial = ports
            .iter()
            .enumerate()
            .map(|(i, (_, peer))| format!("m{i}=http://127.0.0.1:{peer}"))
            .collect::<Vec<_>>()
            .join(",");
        // A fresh token per run: members of an earlier, killed run can never join this one.
        let token = format!("netting-bench-{}", std::process::id());
        let members = ports
            .iter()
            .enumerate()
            .map(|(i, (client, peer))| {
                let data_dir = dir.join(format!("etcd-{i}"));
                let client_url = format!("http://127.0.0.1:{client}");
                let peer_url = format!("http://127.0.0.1:{peer}");
                let args = vec![
                    format!("--name=m{i}"),
                    format!("--data-dir={}", data_dir.display()),
                    format!("--listen-client-urls={client_url}"),
                    format!("--advertise-client-urls={client_url}"),
                    format!("--listen-peer-urls={peer_url}"),
                    format!("--initial-advertise-peer-urls={peer_url}"),
                    format!("--initial-cluster={initial}"),
                    "--initial-cluster-state=new".to_owned(),
                    format!("--initial-cluster-token={token}"),
                    format!("--heartbeat-interval={}", timing.heartbeat_ms),
                    format!("--election-timeout={}", timing.election_ms),
                    "--logger=zap".to_owned(),
                    "--log-outputs=stderr".to_owned(),
                ];
                Member {
                    client: format!("127.0.0.1:{client}"),
                    log: dir.join(format!("etcd-{i}.log")),
                    args,
                    proc: None,
                }
            })
            .collect();
        let mut etcd = Etcd {
            bin: bin.to_owned(),
            members,
            ids: Vec::new(),
            http: web::client(),
            payload,
            transport: Transport::Gateway,
        };
        for i in 0..3 {
            etcd.spawn(i);
        }
        let mut ids = Vec::new();
        for i in 0..3 {
            let status = poll(PATIENCE, || etcd.status(i)).await;
            match status {
                Some(s) => ids.push(s.member_id),
                None => panic!("etcd member {i} never answered\n{}", etcd.logs()),
            }
        }
        etcd.ids = ids;
        etcd.wait_leader().await;
        etcd
    }

    fn spawn(&mut self, i: usize) {
        let member = &self.members[i];
        let mut cmd = Command::new(&self.bin);
        // Only the flags above: no ETCD_* variable of the caller may change the set-up.
        for (key, _) in std::env::vars_os() {
            if key.to_string_lossy().starts_with("ETCD_") {
                cmd.env_remove(key);
            }
        }
        cmd.args(&member.args);
        let proc = Proc::spawn(&mut cmd, &member.log);
        self.members[i].proc = Some(proc);
    }

    fn logs(&self) -> String {
        self.members
            .iter()
            .map(|m| tail(&m.log, 20))
            .collect::<Vec<_>>()
            .join("\n")
    }

    async fn status(&self, i: usize) -> Option<Status> {
        // A killed member has no status; asking would only wait for the connect to fail.
        self.members[i].proc.as_ref()?;
        let uri = format!("http://{}/v3/maintenance/status", self.members[i].client);
        let call = post_json(&self.http, &uri, Bytes::from_static(b"{}"));
        let json = tokio::time::timeout(Duration::from_secs(1), call)
            .await
            .ok()?
            .ok()?;
        Some(Status {
            member_id: number(&json, &["header", "member_id"])?,
            leader: number(&json, &["leader"]).unwrap_or(0),
            raft_term: number(&json, &["raftTerm"])
                .or_else(|| number(&json, &["raft_term"]))
                .unwrap_or(0),
            raft_index: number(&json, &["raftIndex"])
                .or_else(|| number(&json, &["raft_index"]))
                .unwrap_or(0),
            revision: number(&json, &["header", "revision"]).unwrap_or(0),
        })
    }

    async fn statuses(&self) -> Vec<Option<Status>> {
        let mut out = Vec::new();
        for i in 0..self.members.len() {
            out.push(self.status(i).await);
        }
        out
    }
}

/// A uint64 at `path`; the gateway writes 64-bit numbers as JSON strings.
fn number(json: &Value, path: &[&str]) -> Option<u64> {
    let mut v = json;
    for key in path {
        v = v.get(key)?;
    }
    match v {
        Value::String(s) => s.parse().ok(),
        Value::Number(n) => n.as_u64(),
        _ => None,
    }
}

/// The key writer `writer` puts as its write number `n`: every put creates a new key, as
/// every Netting register creates a new endpoint.
pub(crate) fn key(writer: usize, n: u64) -> String {
    format!("bench/{writer:03}/{n:012}")
}

/// A printable value of `size` bytes.
pub(crate) fn value(size: usize) -> Bytes {
    Bytes::from(
        (0..size)
            .map(|i| b'a' + (i % 26) as u8)
            .collect::<Vec<u8>>(),
    )
}

/// The JSON body of a gateway put.
pub(crate) fn put_body(key: &str, value_b64: &str) -> Bytes {
    Bytes::from(format!(
        r#"{{"key":"{}","value":"{value_b64}"}}"#,
        BASE64.encode(key)
    ))
}

pub(crate) fn encode_value(value: &[u8]) -> Arc<str> {
    Arc::from(BASE64.encode(value))
}

/// One put through the gateway.
pub(crate) async fn put_gateway(
    http: &Http,
    uri: &str,
    writer: usize,
    n: u64,
    value_b64: &str,
) -> Result<Ack, String> {
    let json = post_json(http, uri, put_body(&key(writer, n), value_b64)).await?;
    Ok(Ack {
        leader: None,
        term: number(&json, &["header", "raft_term"]),
    })
}

/// The two etcdserverpb messages a put needs, declared by hand from etcd's documented wire
/// format rather than generated, so the benchmark needs no etcd .proto files.
pub(crate) mod pb {
    #[derive(Clone, PartialEq, prost::Message)]
    pub(crate) struct PutRequest {
        #[prost(bytes = "vec", tag = "1")]
        pub(crate) key: Vec<u8>,
        #[prost(bytes = "bytes", tag = "2")]
        pub(crate) value: bytes::Bytes,
    }

    #[derive(Clone, PartialEq, prost::Message)]
    pub(crate) struct ResponseHeader {
        #[prost(uint64, tag = "1")]
        pub(crate) cluster_id: u64,
        #[prost(uint64, tag = "2")]
        pub(crate) member_id: u64,
        #[prost(int64, tag = "3")]
        pub(crate) revision: i64,
        #[prost(uint64, tag = "4")]
        pub(crate) raft_term: u64,
    }

    #[derive(Clone, PartialEq, prost::Message)]
    pub(crate) struct PutResponse {
        #[prost(message, optional, tag = "1")]
        pub(crate) header: Option<ResponseHeader>,
    }
}

/// One put over gRPC.
pub(crate) async fn put_grpc(
    grpc: &mut tonic::client::Grpc<Channel>,
    writer: usize,
    n: u64,
    value: &Bytes,
) -> Result<Ack, String> {
    grpc.ready().await.map_err(|e| e.to_string())?;
    let request = pb::PutRequest {
        key: key(writer, n).into_bytes(),
        value: value.clone(),
    };
    let path = http::uri::PathAndQuery::from_static("/etcdserverpb.KV/Put");
    let codec = tonic_prost::ProstCodec::<pb::PutRequest, pb::PutResponse>::default();
    let response = grpc
        .unary(tonic::Request::new(request), path, codec)
        .await
        .map_err(|s| format!("{:?}: {}", s.code(), s.message()))?
        .into_inner();
    Ok(Ack {
        leader: None,
        term: response.header.map(|h| h.raft_term),
    })
}

impl Cluster for Etcd {
    fn name(&self) -> &'static str {
        match self.transport {
            Transport::Gateway => "etcd",
            Transport::Grpc => "etcd-grpc",
        }
    }

    async fn wait_leader(&self) -> usize {
        let found = poll(PATIENCE, || async {
            let statuses = self.statuses().await;
            let running: Vec<&Status> = statuses
                .iter()
                .zip(&self.members)
                .filter(|(_, m)| m.proc.is_some())
                .map(|(s, _)| s.as_ref())
                .collect::<Option<_>>()?;
            let leader = running.first()?.leader;
            let agreed = leader != 0 && running.iter().all(|s| s.leader == leader);
            let index = self.ids.iter().position(|id| *id == leader)?;
            (agreed && self.members[index].proc.is_some()).then_some(index)
        })
        .await;
        found.unwrap_or_else(|| panic!("etcd: no agreed leader\n{}", self.logs()))
    }

    async fn writer(&self, member: usize, writer: usize) -> Writer {
        let addr = &self.members[member].client;
        match self.transport {
            Transport::Gateway => {
                // A client (and so a connection pool) per writer, as 64 independent clients
                // would have; the first request opens the connection before timing starts.
                let http = web::client();
                let _ = web::get(&http, &format!("http://{addr}/version")).await;
                Writer::EtcdGateway {
                    http,
                    uri: Arc::from(format!("http://{addr}/v3/kv/put")),
                    writer,
                    value_b64: encode_value(&value(self.payload)),
                }
            }
            Transport::Grpc => {
                let channel = Endpoint::from_shared(format!("http://{addr}"))
                    .expect("a loopback address is a valid URI")
                    .connect_timeout(Duration::from_secs(1))
                    .connect()
                    .await
                    .unwrap_or_else(|e| panic!("etcd: cannot connect to member {member}: {e}"));
                Writer::EtcdGrpc {
                    grpc: tonic::client::Grpc::new(channel),
                    writer,
                    value: value(self.payload),
                }
            }
        }
    }

    async fn era(&self, leader: usize) -> Era {
        let status = poll(PATIENCE, || self.status(leader)).await;
        let term = status
            .map(|s| s.raft_term)
            .unwrap_or_else(|| panic!("etcd: leader {leader} has no status\n{}", self.logs()));
        Era::AfterTerm(term)
    }

    fn pids(&self) -> Vec<u32> {
        self.members
            .iter()
            .filter_map(|m| m.proc.as_ref().and_then(Proc::pid))
            .collect()
    }

    fn metrics_uris(&self) -> Vec<Option<String>> {
        self.members
            .iter()
            .map(|m| {
                m.proc
                    .as_ref()
                    .map(|_| format!("http://{}/metrics", m.client))
            })
            .collect()
    }

    fn sync_histogram(&self) -> &'static str {
        "etcd_disk_wal_fsync_duration_seconds"
    }

    fn leader_histograms(&self) -> &'static [&'static str] {
        &[
            "etcd_disk_wal_fsync_duration_seconds",
            "etcd_disk_backend_commit_duration_seconds",
        ]
    }

    fn kill(&mut self, member: usize) -> Instant {
        let proc = self.members[member].proc.take();
        proc.map_or_else(Instant::now, |mut p| p.kill())
    }

    fn restart(&mut self, member: usize) {
        // With its data directory in place a member rejoins as itself; the --initial-* flags
        // are ignored once it is bootstrapped.
        self.spawn(member);
    }

    async fn wait_converged(&self) {
        let found = poll(PATIENCE, || async {
            let statuses: Vec<Status> = self.statuses().await.into_iter().collect::<Option<_>>()?;
            let first = statuses.first()?;
            let same = statuses.iter().all(|s| {
                s.leader != 0
                    && s.leader == first.leader
                    && s.raft_index == first.raft_index
                    && s.revision == first.revision
            });
            same.then_some(())
        })
        .await;
        if found.is_none() {
            panic!(
                "etcd: members did not converge: {:?}\n{}",
                self.statuses().await,
                self.logs()
            );
        }
    }
}
