//! The catalog's sources on this replica (the catalog file today) and the leadership they
//! follow; and the cluster id a new cluster's first leader fixes.

use actix::{Actor, Addr, Recipient};
use netting_raft::catalog::CatalogCommand;
use netting_raft::{CatalogHandle, NodeId, Raft};

use crate::actors::catalog_file_watcher::CatalogFileWatcher;
use crate::actors::catalog_writer::{CatalogWriter, Propose};
use crate::actors::leadership::LeadershipChanged;
use crate::config::ReplicaConfig;

/// Starts the sources the configuration names; each is told when leadership changes.
pub(super) fn start(
    config: &ReplicaConfig,
    catalog: &CatalogHandle,
    writer: &Addr<CatalogWriter>,
) -> Vec<Recipient<LeadershipChanged>> {
    let mut sources = Vec::new();
    if let Some(path) = config.catalog_file.clone() {
        let watcher =
            CatalogFileWatcher::new(path, catalog.clone(), writer.clone().recipient()).start();
        sources.push(watcher.recipient());
    }
    sources
}

/// Follows leadership: tells the sources, and on a new leader fixes the cluster id if the
/// cluster has none yet (the bootstrap entry is the first thing a new cluster's leader writes).
pub(super) async fn follow_leadership(
    raft: Raft,
    catalog: CatalogHandle,
    writer: Addr<CatalogWriter>,
    sources: Vec<Recipient<LeadershipChanged>>,
    node_id: NodeId,
) {
    let mut metrics = raft.metrics();
    let mut was_leader = false;
    loop {
        let is_leader = metrics.borrow_and_update().current_leader == Some(node_id);
        if is_leader != was_leader {
            was_leader = is_leader;
            for source in &sources {
                source.do_send(LeadershipChanged { is_leader });
            }
            if is_leader {
                ensure_cluster_id(&raft, &catalog, &writer).await;
            }
        }
        if metrics.changed().await.is_err() {
            return;
        }
    }
}

async fn ensure_cluster_id(raft: &Raft, catalog: &CatalogHandle, writer: &Addr<CatalogWriter>) {
    // Wait until everything committed before this term is applied, so a cluster id set by an
    // earlier leader is seen before deciding there is none.
    if raft.ensure_linearizable().await.is_err() {
        return;
    }
    if catalog.read(|c| c.cluster_id().is_some()) {
        return;
    }
    let cluster_id = uuid::Uuid::new_v4().to_string();
    match writer
        .send(Propose::internal(CatalogCommand::InitCluster {
            cluster_id,
        }))
        .await
    {
        Ok(Ok(done)) => tracing::info!(version = done.version, "cluster id fixed"),
        Ok(Err(err)) => tracing::debug!(error = %err, "cluster id not set by this leader"),
        Err(_) => {}
    }
}
