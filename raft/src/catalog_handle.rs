//! A shared, read-mostly view of the applied catalog for gRPC reads, metrics and (later) the
//! config pusher. The state machine is the only writer.

use std::sync::{Arc, RwLock, RwLockReadGuard, RwLockWriteGuard};

use tokio::sync::watch;

use crate::catalog::{Catalog, LogIndex};

/// Where the state machine stands, published after every applied entry.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct AppliedState {
    /// Log index of the last applied entry of any kind (blank, membership, catalog).
    pub applied_index: LogIndex,
    /// Log index of the last applied entry that changed the catalog.
    pub catalog_version: LogIndex,
}

/// Cloneable handle to the applied catalog.
#[derive(Debug, Clone)]
pub struct CatalogHandle {
    catalog: Arc<RwLock<Catalog>>,
    applied: watch::Sender<AppliedState>,
}

impl Default for CatalogHandle {
    fn default() -> Self {
        Self::new(Catalog::default(), AppliedState::default())
    }
}

impl CatalogHandle {
    pub fn new(catalog: Catalog, applied: AppliedState) -> Self {
        Self {
            catalog: Arc::new(RwLock::new(catalog)),
            applied: watch::Sender::new(applied),
        }
    }

    /// Runs `f` on the current catalog. Keep `f` short: the state machine waits for it.
    pub fn read<T>(&self, f: impl FnOnce(&Catalog) -> T) -> T {
        f(&self.read_guard())
    }

    /// Subscribes to the applied state; the receiver sees every later update.
    pub fn subscribe(&self) -> watch::Receiver<AppliedState> {
        self.applied.subscribe()
    }

    pub fn applied(&self) -> AppliedState {
        *self.applied.borrow()
    }

    /// For the state machine only: mutable access to the catalog.
    pub(crate) fn write_guard(&self) -> RwLockWriteGuard<'_, Catalog> {
        // A poisoned lock means a panic while applying: the catalog may be half-changed, and
        // serving it would spread that, so the panic is propagated.
        match self.catalog.write() {
            Ok(guard) => guard,
            Err(poisoned) => panic!("catalog lock poisoned: {poisoned}"),
        }
    }

    /// For the state machine only: publishes a new applied state.
    pub(crate) fn publish(&self, state: AppliedState) {
        self.applied.send_replace(state);
    }

    fn read_guard(&self) -> RwLockReadGuard<'_, Catalog> {
        match self.catalog.read() {
            Ok(guard) => guard,
            Err(poisoned) => panic!("catalog lock poisoned: {poisoned}"),
        }
    }
}
