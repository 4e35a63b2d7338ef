//! The workload: writers, readers and sidecars that use the cluster the way the mesh does, and
//! an observer that watches each replica's Raft state. Everything they see goes into one
//! [`Recorder`] on one clock; the checks read the resulting [`History`].
//!
//! - [`catalog`]: writers of key-value registers and of ledger entries, and linearizable
//!   readers, each operation recorded with invocation, completion and outcome;
//! - [`keyspace`]: which register a worker uses next (registers rotate so that each one's
//!   history stays small enough to check);
//! - [`sidecars`]: sidecars on the discovery stream, with the client library and raw;
//! - [`observer`]: polls `/debug/raft` of every replica.

pub mod catalog;
pub mod keyspace;
pub mod observer;
pub mod sidecars;

use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use tokio::time::Instant;

use crate::history::{
    History, LedgerWrite, Micros, RegisterOperation, ReplicaSample, SidecarEvent,
};

/// Namespace of the key-value registers; the sidecars subscribe to it.
pub const REGISTER_NAMESPACE: &str = "chaos";
/// Namespace of the ledger entries; no sidecar subscribes to it, so it can grow large.
pub const LEDGER_NAMESPACE: &str = "chaos-ledger";

/// The one clock of a run: microseconds since it started.
#[derive(Debug, Clone, Copy)]
pub struct Clock {
    start: Instant,
}

impl Clock {
    pub fn start() -> Clock {
        Clock {
            start: Instant::now(),
        }
    }

    pub fn now(&self) -> Micros {
        self.micros(Instant::now())
    }

    pub fn micros(&self, at: Instant) -> Micros {
        at.saturating_duration_since(self.start).as_micros() as Micros
    }

    pub fn elapsed(&self) -> Duration {
        self.start.elapsed()
    }
}

/// Where the workload reaches replica `i`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReplicaAddress {
    /// `host:port` of the gRPC API.
    pub grpc: String,
    /// `host:port` of the admin HTTP server.
    pub admin: String,
    pub node_id: u64,
}

/// Collects what every worker saw. Cheap to clone; workers append under a short lock.
#[derive(Debug, Clone, Default)]
pub struct Recorder {
    inner: Arc<Mutex<History>>,
    next_id: Arc<std::sync::atomic::AtomicU64>,
}

impl Recorder {
    pub fn new() -> Recorder {
        Recorder::default()
    }

    /// A fresh operation id, unique in the run.
    pub fn next_id(&self) -> u64 {
        self.next_id
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed)
    }

    fn with<T>(&self, f: impl FnOnce(&mut History) -> T) -> T {
        // A worker that panicked mid-append leaves a history still worth checking.
        let mut history = self.inner.lock().unwrap_or_else(PoisonError::into_inner);
        f(&mut history)
    }

    pub fn register(&self, op: RegisterOperation) {
        self.with(|h| h.registers.push(op));
    }

    pub fn ledger(&self, write: LedgerWrite) {
        self.with(|h| h.ledger.push(write));
    }

    pub fn sidecar(&self, event: SidecarEvent) {
        self.with(|h| h.sidecars.push(event));
    }

    pub fn sample(&self, sample: ReplicaSample) {
        self.with(|h| h.samples.push(sample));
    }

    /// `(sidecar, version)` of every response raw sidecars received.
    pub fn raw_versions(&self) -> Vec<(u32, u64)> {
        self.with(|h| {
            h.sidecars
                .iter()
                .filter(|e| e.kind == crate::history::SidecarEventKind::Received)
                .map(|e| (e.sidecar, e.version))
                .collect()
        })
    }

    /// A copy of everything recorded so far.
    pub fn snapshot(&self) -> History {
        self.with(|h| h.clone())
    }

    /// Takes the history out, leaving an empty one.
    pub fn take(&self) -> History {
        self.with(std::mem::take)
    }
}
