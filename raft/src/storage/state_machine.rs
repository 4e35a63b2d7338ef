//! The state machine: the applied catalog in memory, snapshots of it in redb.

use std::io::Cursor;
use std::path::Path;
use std::sync::Arc;
use std::time::Instant;

use openraft::storage::RaftStateMachine;
use openraft::{EntryPayload, ErrorSubject, ErrorVerb, OptionalSend, RaftSnapshotBuilder};
use redb::Durability;
use serde::{Deserialize, Serialize};

use super::db::{self, Db, META, Recovered, SNAPSHOT, SnapshotData, blocking, db_error, key};
use super::error::{StorageError, corrupt};
use super::journal::AppliedJournal;
use crate::catalog::requests::{self, RequestTable};
use crate::catalog::{BatchResponse, Catalog};
use crate::catalog_handle::{AppliedState, CatalogHandle};
use crate::types::{Entry, LogId, NodeId, Snapshot, SnapshotMeta, StoredMembership, TypeConfig};

type RaftResult<T> = Result<T, openraft::StorageError<NodeId>>;

/// What a snapshot's data holds (serde_json): the catalog and where it stands in the log.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct CatalogSnapshot {
    pub(crate) catalog: Catalog,
    /// The record behind exactly-once writes; empty in snapshots from before it existed.
    #[serde(default)]
    pub(crate) requests: RequestTable,
    pub(crate) last_applied: Option<LogId>,
    pub(crate) last_membership: StoredMembership,
}

impl SnapshotData for CatalogSnapshot {
    fn decode(path: &Path, meta: &SnapshotMeta, data: &[u8]) -> Result<Self, StorageError> {
        let payload: CatalogSnapshot =
            db::decode(path, format_args!("snapshot {}", meta.snapshot_id), data)?;
        if payload.last_applied != meta.last_log_id
            || payload.last_membership != meta.last_membership
        {
            return Err(corrupt(
                path,
                format_args!(
                    "snapshot {} holds the state at {:?}, its metadata says {:?}",
                    meta.snapshot_id, payload.last_applied, meta.last_log_id
                ),
            ));
        }
        Ok(payload)
    }

    fn cluster_id(&self) -> Option<&str> {
        self.catalog.cluster_id()
    }
}

impl CatalogSnapshot {
    fn applied_state(&self) -> AppliedState {
        AppliedState {
            applied_index: self.last_applied.map_or(0, |id| id.index),
            catalog_version: self.catalog.version(),
        }
    }
}

/// The Raft state machine: applies committed entries to the in-memory catalog shared through a
/// [`CatalogHandle`], builds and installs snapshots.
///
/// Nothing is written per applied entry. After a restart the catalog is the stored snapshot's,
/// and openraft re-applies the committed entries after it from the log.
#[derive(Debug)]
pub struct StateMachineStore {
    db: Arc<Db>,
    catalog: CatalogHandle,
    requests: RequestTable,
    journal: AppliedJournal,
    last_applied: Option<LogId>,
    last_membership: StoredMembership,
    /// The cluster id as mirrored in the meta table.
    cluster_id: Option<String>,
}

impl StateMachineStore {
    pub(crate) fn new(db: Arc<Db>, recovered: Recovered<CatalogSnapshot>) -> Self {
        let (catalog, requests, last_applied, last_membership) = match recovered.snapshot {
            Some((_, payload)) => {
                let state = payload.applied_state();
                let handle = CatalogHandle::new(payload.catalog, state);
                (
                    handle,
                    payload.requests,
                    payload.last_applied,
                    payload.last_membership,
                )
            }
            None => (
                CatalogHandle::default(),
                RequestTable::default(),
                None,
                StoredMembership::default(),
            ),
        };
        let cluster_id = catalog
            .read(|c| c.cluster_id().map(str::to_owned))
            .or(recovered.cluster_id);
        Self {
            db,
            catalog,
            requests,
            journal: AppliedJournal::default(),
            last_applied,
            last_membership,
            cluster_id,
        }
    }

    /// A handle to the applied catalog, for readers.
    pub fn catalog(&self) -> CatalogHandle {
        self.catalog.clone()
    }

    /// The cluster id, once an `InitCluster` command was applied (it is mirrored on disk).
    pub fn cluster_id(&self) -> Option<&str> {
        self.cluster_id.as_deref()
    }

    fn publish(&self) {
        let catalog_version = self.catalog.read(Catalog::version);
        self.catalog.publish(AppliedState {
            applied_index: self.last_applied.map_or(0, |id| id.index),
            catalog_version,
        });
    }

    /// Mirrors a newly set cluster id into the meta table.
    async fn mirror_cluster_id(&mut self) -> Result<(), StorageError> {
        let current = self.catalog.read(|c| c.cluster_id().map(str::to_owned));
        let Some(cluster_id) = current else {
            return Ok(());
        };
        if self.cluster_id.as_deref() == Some(cluster_id.as_str()) {
            return Ok(());
        }
        let id = cluster_id.clone();
        blocking(&self.db, move |db| db::write_cluster_id(db, &id)).await?;
        tracing::info!(cluster_id = %cluster_id, "cluster id recorded");
        self.cluster_id = Some(cluster_id);
        Ok(())
    }
}

impl RaftStateMachine<TypeConfig> for StateMachineStore {
    type SnapshotBuilder = CatalogSnapshotBuilder;

    async fn applied_state(&mut self) -> RaftResult<(Option<LogId>, StoredMembership)> {
        Ok((self.last_applied, self.last_membership.clone()))
    }

    async fn apply<I>(&mut self, entries: I) -> RaftResult<Vec<BatchResponse>>
    where
        I: IntoIterator<Item = Entry> + OptionalSend,
        I::IntoIter: OptionalSend,
    {
        let started = Instant::now();
        let mut responses = Vec::new();
        {
            let span = tracing::debug_span!("apply", last_index = tracing::field::Empty);
            let _applying = span.enter();
            let mut catalog = self.catalog.write_guard();
            for entry in entries {
                let index = entry.log_id.index;
                span.record("last_index", index);
                let results = match entry.payload {
                    EntryPayload::Blank => Vec::new(),
                    EntryPayload::Normal(batch) => {
                        let applied =
                            requests::apply_batch(&mut catalog, &mut self.requests, index, &batch);
                        for id in &applied.applied_requests {
                            self.journal.note(id, index);
                        }
                        count_outcomes(&applied.outcomes);
                        applied.outcomes
                    }
                    EntryPayload::Membership(membership) => {
                        self.last_membership =
                            StoredMembership::new(Some(entry.log_id), membership);
                        Vec::new()
                    }
                };
                self.last_applied = Some(entry.log_id);
                responses.push(BatchResponse {
                    results,
                    version: catalog.version(),
                });
            }
        }
        self.publish();
        self.mirror_cluster_id()
            .await
            .map_err(|e| e.into_raft(ErrorSubject::StateMachine, ErrorVerb::Write))?;
        metrics::histogram!("netting_raft_apply_seconds").record(started.elapsed().as_secs_f64());
        Ok(responses)
    }

    async fn get_snapshot_builder(&mut self) -> Self::SnapshotBuilder {
        // A copy taken now, so that entries applied while the snapshot is written do not leak
        // into a snapshot that claims to end at `last_applied`.
        let payload = CatalogSnapshot {
            catalog: self.catalog.read(Catalog::clone),
            requests: self.requests.clone(),
            last_applied: self.last_applied,
            last_membership: self.last_membership.clone(),
        };
        CatalogSnapshotBuilder {
            db: Arc::clone(&self.db),
            payload: Arc::new(payload),
        }
    }

    async fn begin_receiving_snapshot(&mut self) -> RaftResult<Box<Cursor<Vec<u8>>>> {
        Ok(Box::new(Cursor::new(Vec::new())))
    }

    #[tracing::instrument(level = "info", skip_all, fields(snapshot = %meta.snapshot_id))]
    async fn install_snapshot(
        &mut self,
        meta: &SnapshotMeta,
        snapshot: Box<Cursor<Vec<u8>>>,
    ) -> RaftResult<()> {
        let snapshot_error = |e: StorageError| {
            e.into_raft(
                ErrorSubject::Snapshot(Some(meta.signature())),
                ErrorVerb::Write,
            )
        };
        let data = snapshot.into_inner();
        let payload =
            CatalogSnapshot::decode(self.db.path(), meta, &data).map_err(snapshot_error)?;
        let cluster_id = payload.catalog.cluster_id().map(str::to_owned);

        // On disk first: once the state machine moves on, openraft may purge the log up to the
        // snapshot, and a restart must find it.
        let stored_meta = meta.clone();
        let mirrored_id = cluster_id.clone();
        blocking(&self.db, move |db| {
            let operation = "installing a snapshot";
            db.write(operation, Durability::Immediate, |txn| {
                write_snapshot(db, txn, &stored_meta, &data, operation)?;
                if let Some(id) = &mirrored_id {
                    let mut meta_table = db::open_writable(txn, db.path(), META, operation)?;
                    db::put_json(db.path(), &mut meta_table, key::CLUSTER_ID, id)?;
                }
                Ok(())
            })
        })
        .await
        .map_err(snapshot_error)?;

        *self.catalog.write_guard() = payload.catalog;
        self.requests = payload.requests;
        self.last_applied = meta.last_log_id;
        self.last_membership = meta.last_membership.clone();
        if cluster_id.is_some() {
            self.cluster_id = cluster_id;
        }
        self.publish();
        metrics::counter!("netting_raft_snapshots_installed_total").increment(1);
        tracing::info!(snapshot = %meta.snapshot_id, last_log_id = ?meta.last_log_id, "installed raft snapshot");
        Ok(())
    }

    async fn get_current_snapshot(&mut self) -> RaftResult<Option<Snapshot>> {
        let stored = blocking(&self.db, |db| {
            let operation = "reading the snapshot";
            db.read(operation, |txn| {
                let table = txn
                    .open_table(SNAPSHOT)
                    .map_err(db_error(db.path(), operation))?;
                db::read_snapshot(db.path(), &table)
            })
        })
        .await
        .map_err(|e| e.into_raft(ErrorSubject::Snapshot(None), ErrorVerb::Read))?;
        Ok(stored.map(|(meta, data)| Snapshot {
            meta,
            snapshot: Box::new(Cursor::new(data)),
        }))
    }
}

/// Counts what the state machine did with each request: applied, answered from the record, or
/// refused. Every replica counts the same entries.
fn count_outcomes(outcomes: &[crate::catalog::Outcome]) {
    for outcome in outcomes {
        let result = match (&outcome.result, outcome.duplicate) {
            (_, true) => "duplicate",
            (Ok(_), false) => "applied",
            (Err(error), false) => error.kind(),
        };
        metrics::counter!("netting_catalog_commands_applied_total", "result" => result)
            .increment(1);
    }
}

/// Replaces the stored snapshot (only the newest one is kept).
fn write_snapshot(
    db: &Db,
    txn: &redb::WriteTransaction,
    meta: &SnapshotMeta,
    data: &[u8],
    operation: &'static str,
) -> Result<(), StorageError> {
    let mut table = db::open_writable(txn, db.path(), SNAPSHOT, operation)?;
    db::put_json(db.path(), &mut table, key::SNAPSHOT_META, meta)?;
    table
        .insert(key::SNAPSHOT_DATA, data)
        .map_err(db_error(db.path(), operation))?;
    Ok(())
}

/// Builds a snapshot from the copy of the state taken by
/// [`RaftStateMachine::get_snapshot_builder`].
#[derive(Debug)]
pub struct CatalogSnapshotBuilder {
    db: Arc<Db>,
    payload: Arc<CatalogSnapshot>,
}

impl RaftSnapshotBuilder<TypeConfig> for CatalogSnapshotBuilder {
    #[tracing::instrument(level = "info", skip_all, fields(last_applied = ?self.payload.last_applied))]
    async fn build_snapshot(&mut self) -> RaftResult<Snapshot> {
        let meta = SnapshotMeta {
            last_log_id: self.payload.last_applied,
            last_membership: self.payload.last_membership.clone(),
            snapshot_id: snapshot_id(self.payload.last_applied),
        };
        let payload = Arc::clone(&self.payload);
        let stored_meta = meta.clone();
        let data = blocking(&self.db, move |db| {
            let data = db::encode("snapshot", &*payload)?;
            let operation = "storing a snapshot";
            db.write(operation, Durability::Immediate, |txn| {
                // A snapshot installed from the leader while this one was built may be newer:
                // keep the newest.
                let table = db::open_writable(txn, db.path(), SNAPSHOT, operation)?;
                let stored: Option<SnapshotMeta> =
                    db::get_json(db.path(), &table, key::SNAPSHOT_META)?;
                drop(table);
                if stored.is_some_and(|s| s.last_log_id > stored_meta.last_log_id) {
                    return Ok(());
                }
                write_snapshot(db, txn, &stored_meta, &data, operation)
            })?;
            Ok(data)
        })
        .await
        .map_err(|e| {
            e.into_raft(
                ErrorSubject::Snapshot(Some(meta.signature())),
                ErrorVerb::Write,
            )
        })?;
        metrics::counter!("netting_raft_snapshots_built_total").increment(1);
        tracing::info!(snapshot = %meta.snapshot_id, last_log_id = ?meta.last_log_id, bytes = data.len(),
            "built raft snapshot");
        Ok(Snapshot {
            meta,
            snapshot: Box::new(Cursor::new(data)),
        })
    }
}

/// Unique per build: two snapshots at the same log id may still differ in bytes.
fn snapshot_id(last_applied: Option<LogId>) -> String {
    let suffix = uuid::Uuid::new_v4().simple().to_string();
    let short = suffix.get(..8).unwrap_or(&suffix);
    match last_applied {
        Some(id) => format!(
            "{}-{}-{}-{short}",
            id.leader_id.term, id.leader_id.node_id, id.index
        ),
        None => format!("empty-{short}"),
    }
}
