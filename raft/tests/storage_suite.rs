//! openraft's own storage conformance suite, run against Netting's redb storage.

use netting_raft::TypeConfig;
use netting_raft::storage::{self, LogStore, NodeIdentity, StateMachineStore};
use openraft::testing::{StoreBuilder, Suite};
use openraft::{AnyError, StorageError, StorageIOError};
use tempfile::TempDir;

/// Opens the storage in a fresh temporary data directory per case; the directory lives as long
/// as the guard openraft keeps for the case.
struct TempDirStoreBuilder;

impl StoreBuilder<TypeConfig, LogStore, StateMachineStore, TempDir> for TempDirStoreBuilder {
    async fn build(&self) -> Result<(TempDir, LogStore, StateMachineStore), StorageError<u64>> {
        let dir = TempDir::new().map_err(|e| StorageIOError::write(AnyError::new(&e)))?;
        let identity = NodeIdentity {
            node_id: 0,
            cluster_name: "conformance".to_owned(),
        };
        let (log_store, state_machine) = storage::open(dir.path(), &identity)
            .map_err(|e| StorageIOError::write(AnyError::new(&e)))?;
        Ok((dir, log_store, state_machine))
    }
}

/// The storage satisfies every case of openraft's conformance suite (log, vote, commit point,
/// purge, truncate, apply, snapshot build and install).
#[test]
fn openraft_storage_suite_passes() -> Result<(), Box<StorageError<u64>>> {
    Suite::test_all(TempDirStoreBuilder).map_err(Box::new)
}
