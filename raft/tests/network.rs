//! The gRPC Raft network end to end: real tonic servers on 127.0.0.1, real openraft nodes on
//! Netting's redb storage, and the client openraft uses.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::{BTreeMap, HashMap};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use metrics::{
    Counter, CounterFn, Gauge, Histogram, HistogramFn, Key, KeyName, Metadata, Recorder,
    SharedString, Unit,
};
use netting_raft::catalog::{CatalogCommand, CommandBatch};
use netting_raft::network::{ClusterIdentity, NetworkFactory, PeerChannels, PeerClient, RaftGrpc};
use netting_raft::storage::{self, NodeIdentity};
use netting_raft::{CatalogHandle, NodeId, Raft};
use openraft::error::{InstallSnapshotError, RPCError, RaftError};
use openraft::network::{RPCOption, RaftNetwork};
use openraft::raft::{InstallSnapshotRequest, VoteRequest};
use openraft::{BasicNode, Config, SnapshotPolicy, Vote};
use tempfile::TempDir;
use tokio::sync::oneshot;
use tonic::transport::server::TcpIncoming;

const WAIT: Option<Duration> = Some(Duration::from_secs(10));
const TTL: Duration = Duration::from_secs(2);

/// One replica: an openraft node on real storage, served by `RaftGrpc` on its own port.
struct Node {
    raft: Raft,
    addr: SocketAddr,
    catalog: CatalogHandle,
    stop: Option<oneshot::Sender<()>>,
    _data: TempDir,
}

impl Node {
    async fn start(id: NodeId, identity: ClusterIdentity) -> Node {
        let data = TempDir::new().unwrap();
        let (log_store, state_machine) = storage::open(
            data.path(),
            &NodeIdentity {
                node_id: id,
                cluster_name: identity.name().to_owned(),
            },
        )
        .unwrap();
        let catalog = state_machine.catalog();
        let config = Config {
            cluster_name: identity.name().to_owned(),
            heartbeat_interval: 50,
            election_timeout_min: 150,
            election_timeout_max: 300,
            // Snapshots only when a test asks, and then purge everything they cover, so a new
            // member can only catch up through InstallSnapshot.
            snapshot_policy: SnapshotPolicy::Never,
            max_in_snapshot_log_to_keep: 0,
            purge_batch_size: 1,
            ..Config::default()
        }
        .validate()
        .unwrap();
        let network = NetworkFactory::new(Arc::new(PeerChannels::default()), identity.clone());
        let raft = Raft::new(id, Arc::new(config), network, log_store, state_machine)
            .await
            .unwrap();

        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (stop, stopped) = oneshot::channel::<()>();
        let service = RaftGrpc::service(raft.clone(), identity);
        tokio::spawn(async move {
            tonic::transport::Server::builder()
                .add_service(service)
                .serve_with_incoming_shutdown(TcpIncoming::from(listener), async {
                    let _ = stopped.await;
                })
                .await
                .unwrap();
        });
        Node {
            raft,
            addr,
            catalog,
            stop: Some(stop),
            _data: data,
        }
    }

    fn node(&self) -> BasicNode {
        BasicNode::new(self.addr.to_string())
    }

    async fn shutdown(mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        self.raft.shutdown().await.unwrap();
    }
}

/// The client openraft would use to reach `target` as a replica of `identity`.
fn client(identity: ClusterIdentity, target: NodeId, node: &BasicNode) -> PeerClient {
    NetworkFactory::new(Arc::new(PeerChannels::default()), identity).client(target, node)
}

fn identity(name: &str, id: Option<&str>) -> ClusterIdentity {
    ClusterIdentity::fixed(name, id.map(str::to_owned)).unwrap()
}

/// A vote from candidate 2 in term 1 with an empty log.
fn vote_request() -> VoteRequest<NodeId> {
    VoteRequest::new(Vote::new(1, 2), None)
}

/// A replica refuses every RPC from a replica of another cluster name, before its Raft node
/// sees it, and the sender learns which cluster refused it and which it claimed to be.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn other_cluster_name_is_refused_end_to_end() {
    let node = Node::start(1, identity("alpha", None)).await;
    let mut stranger = client(identity("beta", None), 1, &node.node());

    let err = stranger
        .vote(vote_request(), RPCOption::new(TTL))
        .await
        .unwrap_err();
    // Unreachable, so that openraft backs off from a peer that will keep refusing.
    assert!(matches!(err, RPCError::Unreachable(_)), "{err:?}");
    let message = err.to_string();
    assert!(
        message.contains("from cluster `beta`") && message.contains("this is cluster `alpha`"),
        "{message}"
    );

    // The vote never reached Raft: the node is still at term 0.
    assert_eq!(node.raft.metrics().borrow().vote, Vote::default());
    node.shutdown().await;
}

/// A replica of the same name but another cluster id (a cluster rebuilt from nothing) is
/// refused too.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn other_cluster_id_is_refused_end_to_end() {
    let node = Node::start(1, identity("alpha", Some("id-1"))).await;
    let mut rebuilt = client(identity("alpha", Some("id-2")), 1, &node.node());

    let err = rebuilt
        .vote(vote_request(), RPCOption::new(TTL))
        .await
        .unwrap_err();
    assert!(matches!(err, RPCError::Unreachable(_)), "{err:?}");
    assert!(err.to_string().contains("id `id-2`"), "{err}");
    assert_eq!(node.raft.metrics().borrow().vote, Vote::default());
    node.shutdown().await;
}

/// A vote from a replica of the same cluster reaches the remote Raft node and its answer comes
/// back decoded.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn same_cluster_vote_is_answered() {
    let node = Node::start(1, identity("alpha", Some("id-1"))).await;
    // A replica that has not learned the id yet is still one of ours.
    let mut peer = client(identity("alpha", None), 1, &node.node());

    let response = peer
        .vote(vote_request(), RPCOption::new(TTL))
        .await
        .unwrap();
    assert!(response.vote_granted, "{response:?}");
    assert_eq!(response.vote, Vote::new(1, 2));
    node.raft
        .wait(WAIT)
        .vote(Vote::new(1, 2), "node 1 recorded the vote")
        .await
        .unwrap();
    node.shutdown().await;
}

/// A snapshot chunk at an unexpected offset comes back as the remote Raft's own
/// `SnapshotMismatch`, which is what makes openraft restart the transfer from offset 0.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn snapshot_mismatch_comes_back_as_remote_error() {
    let node = Node::start(1, identity("alpha", None)).await;
    let mut leader = client(identity("alpha", None), 1, &node.node());

    let chunk = InstallSnapshotRequest {
        vote: Vote::new_committed(1, 2),
        meta: openraft::SnapshotMeta {
            last_log_id: None,
            last_membership: Default::default(),
            snapshot_id: "never-started".to_owned(),
        },
        offset: 4096,
        data: vec![0; 16],
        done: false,
    };
    let err = leader
        .install_snapshot(chunk, RPCOption::new(TTL))
        .await
        .unwrap_err();
    match err {
        RPCError::RemoteError(remote) => {
            assert_eq!(remote.target, 1);
            assert!(
                matches!(
                    remote.source,
                    RaftError::APIError(InstallSnapshotError::SnapshotMismatch(_))
                ),
                "{:?}",
                remote.source
            );
        }
        other => panic!("expected a remote error, got {other:?}"),
    }
    node.shutdown().await;
}

/// A leader replicates to a new member through the gRPC network: the member catches up from a
/// snapshot (InstallSnapshot, the log behind it being purged), then from the log
/// (AppendEntries with membership and catalog entries), and ends with the same catalog.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn new_member_catches_up_over_grpc() {
    let cluster = identity("alpha", None);
    let leader = Node::start(1, cluster.clone()).await;
    let follower = Node::start(2, cluster.clone()).await;

    leader
        .raft
        .initialize(BTreeMap::from([(1, leader.node())]))
        .await
        .unwrap();
    leader
        .raft
        .wait(WAIT)
        .current_leader(1, "node 1 leads")
        .await
        .unwrap();

    let written = leader
        .raft
        .client_write(CommandBatch::new([(
            None,
            CatalogCommand::InitCluster {
                cluster_id: "id-1".to_owned(),
            },
        )]))
        .await
        .unwrap();
    leader.raft.trigger().snapshot().await.unwrap();
    leader
        .raft
        .wait(WAIT)
        .metrics(
            |m| {
                m.snapshot.is_some_and(|s| s.index >= written.log_id.index)
                    && m.purged.is_some_and(|p| p.index >= written.log_id.index)
            },
            "snapshot built and log purged",
        )
        .await
        .unwrap();

    // Blocks until the learner has caught up, which it can only do from the snapshot.
    leader
        .raft
        .add_learner(2, follower.node(), true)
        .await
        .unwrap();
    let snapshot_index = written.log_id.index;
    follower
        .raft
        .wait(WAIT)
        .metrics(
            |m| m.snapshot.is_some_and(|s| s.index >= snapshot_index),
            "learner installed the snapshot",
        )
        .await
        .unwrap();

    leader.raft.change_membership([1, 2], false).await.unwrap();
    // Refused by the catalog (the id is already set) but still a log entry to replicate.
    let last = leader
        .raft
        .client_write(CommandBatch::new([(
            None,
            CatalogCommand::InitCluster {
                cluster_id: "id-2".to_owned(),
            },
        )]))
        .await
        .unwrap();
    follower
        .raft
        .wait(WAIT)
        .applied_index_at_least(Some(last.log_id.index), "follower applied the last write")
        .await
        .unwrap();

    assert_eq!(
        follower.catalog.read(|c| c.cluster_id().map(str::to_owned)),
        Some("id-1".to_owned())
    );
    assert_eq!(
        follower.catalog.applied().applied_index,
        leader.catalog.applied().applied_index
    );
    follower.shutdown().await;
    leader.shutdown().await;
}

/// A peer with nothing listening is reported `Unreachable` (so openraft backs off) and counted
/// as `netting_raft_rpc_total{rpc="vote",result="unreachable"}`, with its duration recorded.
#[test]
fn unreachable_peer_is_reported_and_counted() {
    let recorder = TestRecorder::default();
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    // Bind then drop a listener: its port is very likely to stay free for the test.
    let addr = runtime.block_on(async {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        listener.local_addr().unwrap()
    });

    // The local recorder sees what this thread records; the client runs on this thread.
    let err = metrics::with_local_recorder(&recorder, || {
        runtime.block_on(async {
            let mut peer = client(
                identity("alpha", None),
                7,
                &BasicNode::new(addr.to_string()),
            );
            peer.vote(vote_request(), RPCOption::new(TTL))
                .await
                .map_err(Box::new)
        })
    })
    .unwrap_err();

    assert!(matches!(*err, RPCError::Unreachable(_)), "{err:?}");
    assert_eq!(
        recorder.counter("netting_raft_rpc_total{result=unreachable,rpc=vote}"),
        1
    );
    assert_eq!(
        recorder.counter("netting_raft_rpc_duration_seconds{rpc=vote}"),
        1
    );
    // No label carries the address.
    assert!(recorder.keys().iter().all(|k| !k.contains("127.0.0.1")));
}

/// Just enough of a metrics recorder to count what was recorded, keyed by
/// `name{label=value,...}` with labels sorted; histograms count their samples.
#[derive(Debug, Default)]
struct TestRecorder {
    values: Mutex<HashMap<String, Arc<Count>>>,
}

#[derive(Debug, Default)]
struct Count(AtomicU64);

impl CounterFn for Count {
    fn increment(&self, value: u64) {
        self.0.fetch_add(value, Ordering::Relaxed);
    }

    fn absolute(&self, value: u64) {
        self.0.store(value, Ordering::Relaxed);
    }
}

impl HistogramFn for Count {
    fn record(&self, _value: f64) {
        self.0.fetch_add(1, Ordering::Relaxed);
    }
}

impl TestRecorder {
    fn entry(&self, key: &Key) -> Arc<Count> {
        let mut labels: Vec<_> = key
            .labels()
            .map(|l| format!("{}={}", l.key(), l.value()))
            .collect();
        labels.sort();
        let name = format!("{}{{{}}}", key.name(), labels.join(","));
        Arc::clone(self.values.lock().unwrap().entry(name).or_default())
    }

    fn counter(&self, name: &str) -> u64 {
        self.values
            .lock()
            .unwrap()
            .get(name)
            .map_or(0, |c| c.0.load(Ordering::Relaxed))
    }

    fn keys(&self) -> Vec<String> {
        self.values.lock().unwrap().keys().cloned().collect()
    }
}

impl Recorder for TestRecorder {
    fn describe_counter(&self, _: KeyName, _: Option<Unit>, _: SharedString) {}
    fn describe_gauge(&self, _: KeyName, _: Option<Unit>, _: SharedString) {}
    fn describe_histogram(&self, _: KeyName, _: Option<Unit>, _: SharedString) {}

    fn register_counter(&self, key: &Key, _: &Metadata<'_>) -> Counter {
        Counter::from_arc(self.entry(key))
    }

    fn register_gauge(&self, _: &Key, _: &Metadata<'_>) -> Gauge {
        Gauge::noop()
    }

    fn register_histogram(&self, key: &Key, _: &Metadata<'_>) -> Histogram {
        Histogram::from_arc(self.entry(key))
    }
}
