//! Persistent Raft storage: the log, the vote, the commit point and the newest snapshot in one
//! redb database, `raft.redb`, in the replica's data directory; the applied catalog in memory.
//!
//! # Why redb
//!
//! redb is an embedded key-value store in pure Rust: it builds in seconds with the rest of the
//! workspace and needs no C toolchain (RocksDB takes a quarter of an hour to build here and
//! wants libclang). Its transactions are ACID; a commit with [`redb::Durability::Immediate`]
//! returns only after fsync. It writes copy-on-write B-trees and switches to the new root in a
//! single checksummed header update, so a `kill -9` or a power cut at any instant leaves the
//! file at the last committed transaction, never half-written.
//!
//! # Durability
//!
//! - **Vote**: committed and fsync'd before `save_vote` returns, so a node never votes twice
//!   in a term across a crash.
//! - **Log entries**: one transaction per `append`, fsync'd before openraft is told the entries
//!   are flushed (`LogFlushed::log_io_completed`); only then can they count toward a quorum.
//! - **Truncate and purge**: committed and fsync'd; the purge point and the removal of the
//!   entries below it are one transaction.
//! - **Commit point**: written without its own fsync. It only lets a restarted node re-apply
//!   committed entries before it hears from a leader; it reaches disk with the next durable
//!   commit, and an older value after a crash only means re-applying a little later.
//! - **Snapshots**: metadata and data replace the previous snapshot in one fsync'd
//!   transaction, when built and when installed, before openraft may purge the log behind it.
//! - **State machine**: nothing is written per applied entry. The catalog is rebuilt on start
//!   from the stored snapshot (loaded by [`open`]) plus the committed entries openraft re-applies
//!   from the log.
//!
//! Commits run on tokio's blocking pool so that an fsync never stalls the runtime's workers.
//!
//! # Layers
//!
//! `db` owns the file: tables, transactions, encoding, and the checks at open; it stores
//! snapshot data as bytes and knows of it only what its `SnapshotData` trait asks (decode
//! and check it, the cluster id it carries). `log_store` and `state_machine` are openraft's
//! two storage traits on top of it; `identity_file` is the copy of the node's identity kept
//! beside the database; `error` says why any of them refused.
//!
//! # Refusing bad data
//!
//! The first [`open`] records the node's [`NodeIdentity`] and [`STORAGE_FORMAT_VERSION`].
//! Later opens refuse (with a [`StorageError`] that names the file) data of another node or
//! cluster, an unknown format version, a file redb cannot open, and records or entries that do
//! not decode. Nothing is ever deleted or overwritten on such an error: a file redb shut down
//! cleanly is checked through a read-only handle first and is not written at all; a file left by
//! a crash is first recovered by redb to its last commit.

mod db;
mod error;
mod identity_file;
mod journal;
mod log_store;
mod state_machine;

#[cfg(test)]
mod tests;

use std::path::{Path, PathBuf};
use std::sync::Arc;

use serde::{Deserialize, Serialize};

pub use error::StorageError;
pub use log_store::{LogReader, LogStore};
use state_machine::CatalogSnapshot;
pub use state_machine::{CatalogSnapshotBuilder, StateMachineStore};

use crate::types::NodeId;

/// Version of the on-disk layout this build reads and writes. Data of any other version is
/// refused at open, never rewritten.
pub const STORAGE_FORMAT_VERSION: u32 = 1;

/// Who owns a data directory, recorded on first open and checked on every later one.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NodeIdentity {
    pub node_id: NodeId,
    pub cluster_name: String,
}

/// Opens the Raft storage in `data_dir`, creating the directory and the database when missing.
///
/// Returns the log store and the state machine, the latter holding the catalog of the stored
/// snapshot. Refuses (see [`StorageError`]) data that belongs to another node or cluster, has an
/// unknown format version, or is corrupt; the data is left as it was.
pub fn open(
    data_dir: &Path,
    identity: &NodeIdentity,
) -> Result<(LogStore, StateMachineStore), StorageError> {
    let (db, recovered) = db::open::<CatalogSnapshot>(data_dir, identity)?;
    let db = Arc::new(db);
    let state_machine = StateMachineStore::new(Arc::clone(&db), recovered);
    Ok((LogStore::new(db), state_machine))
}

/// Path of the database file inside a data directory.
pub fn database_file(data_dir: &Path) -> PathBuf {
    data_dir.join(db::DB_FILE)
}

/// Registers units and descriptions of the storage metrics with the installed recorder.
pub fn describe_metrics() {
    use metrics::{Unit, describe_counter, describe_histogram};
    describe_histogram!(
        "netting_raft_append_seconds",
        Unit::Seconds,
        "Time to append a batch of entries to the Raft log, fsync included"
    );
    describe_histogram!(
        "netting_raft_apply_seconds",
        Unit::Seconds,
        "Time to apply a batch of committed entries to the catalog"
    );
    describe_counter!(
        "netting_raft_snapshots_built_total",
        "Snapshots of the catalog built and stored by this replica"
    );
    describe_counter!(
        "netting_raft_snapshots_installed_total",
        "Snapshots received from a leader and installed by this replica"
    );
    describe_counter!(
        "netting_catalog_commands_applied_total",
        "Catalog commands the state machine handled, by result: applied, duplicate (answered from the request record) or the refusal"
    );
    describe_counter!(
        "netting_catalog_duplicate_applications_total",
        "Request ids this process applied a second time; anything above 0 means exactly-once writes are broken"
    );
}
