//! A replica for the gRPC services' in-process tests: a scripted Raft node
//! (`consensus::fake`) and a scripted catalog writer in place of the real ones.

#![allow(clippy::unwrap_used)]

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use actix::{Actor, Context, Handler};
use netting_raft::CatalogHandle;
use netting_raft::catalog::{Applied, CatalogCommand, RequestId};
use netting_raft::network::PeerChannels;
use netting_raft::types::{RaftMetrics, StoredMembership};
use openraft::{BasicNode, Membership, ServerState};

use super::consensus::fake::ScriptedConsensus;
use super::request_ids::RequestIds;
use super::routing::Replica;
use crate::actors::catalog_writer::{Propose, ProposeError, Proposed};

/// Every proposal a scripted writer received, in order.
pub(crate) type Proposals = Arc<Mutex<Vec<(Option<RequestId>, CatalogCommand)>>>;

/// A catalog writer that records what it is asked and answers from a script (then success
/// at version 7).
#[derive(Default)]
struct ScriptedWriter {
    proposed: Proposals,
    answers: VecDeque<Result<Proposed, ProposeError>>,
}

impl Actor for ScriptedWriter {
    type Context = Context<Self>;
}

impl Handler<Propose> for ScriptedWriter {
    type Result = Result<Proposed, ProposeError>;

    fn handle(&mut self, msg: Propose, _: &mut Self::Context) -> Self::Result {
        self.proposed
            .lock()
            .unwrap()
            .push((msg.request, msg.command));
        self.answers.pop_front().unwrap_or(Ok(done(7, false)))
    }
}

/// A committed write at `version`.
pub(crate) fn done(version: u64, duplicate: bool) -> Proposed {
    Proposed {
        applied: Applied { changed: true },
        version,
        log_index: version,
        leader_id: 1,
        duplicate,
    }
}

/// Node `id` of voters 1 and 2 at the given addresses, knowing `leader`.
pub(crate) fn metrics(id: u64, leader: Option<u64>, addrs: [&str; 2]) -> RaftMetrics {
    let nodes: BTreeMap<u64, BasicNode> = [(1, addrs[0]), (2, addrs[1])]
        .into_iter()
        .map(|(id, addr)| (id, BasicNode::new(addr)))
        .collect();
    let mut m = RaftMetrics::new_initial(id);
    m.state = if leader == Some(id) {
        ServerState::Leader
    } else {
        ServerState::Follower
    };
    m.current_leader = leader;
    m.membership_config = Arc::new(StoredMembership::new(
        None,
        Membership::new(vec![BTreeSet::from([1, 2])], nodes),
    ));
    m
}

/// A replica over scripted parts, and handles on them.
pub(crate) struct ScriptedReplica {
    pub(crate) replica: Replica,
    pub(crate) consensus: Arc<ScriptedConsensus>,
    pub(crate) proposed: Proposals,
}

/// Replica `id` of cluster `test` whose node reports `metrics` and whose writer answers
/// `answers` in turn. Must run inside an actix system (`#[actix::test]`).
pub(crate) fn scripted_replica(
    id: u64,
    metrics: RaftMetrics,
    answers: Vec<Result<Proposed, ProposeError>>,
) -> ScriptedReplica {
    let writer = ScriptedWriter {
        answers: answers.into(),
        ..Default::default()
    };
    let proposed = writer.proposed.clone();
    let consensus = Arc::new(ScriptedConsensus::new(metrics));
    let replica = Replica {
        node_id: id,
        cluster_name: "test".into(),
        advertise: format!("127.0.0.1:{id}"),
        admin_advertise: String::new(),
        raft: consensus.clone(),
        catalog: CatalogHandle::default(),
        writer: writer.start().recipient(),
        channels: Arc::new(PeerChannels::default()),
        request_ids: Arc::new(RequestIds::new(id)),
        leader_wait: Duration::from_millis(300),
        max_request_bytes: 1024,
        startup_log_index: 0,
    };
    ScriptedReplica {
        replica,
        consensus,
        proposed,
    }
}

/// An address that refuses connections: a port bound but never listened on, held until the
/// test process ends so that no other bind is given it.
pub(crate) fn refused_addr() -> String {
    static HELD: Mutex<Vec<tokio::net::TcpSocket>> = Mutex::new(Vec::new());
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket.bind("127.0.0.1:0".parse().unwrap()).unwrap();
    let addr = socket.local_addr().unwrap().to_string();
    HELD.lock().unwrap().push(socket);
    addr
}
