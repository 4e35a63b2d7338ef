//! Netting's replicated service catalog.
//!
//! - [`catalog`]: the domain model, the typed commands that change it and the state machine
//!   that applies them (plain synchronous code, tested without Raft).
//! - [`storage`]: the on-disk Raft log and the state machine store.
//! - [`network`]: Raft RPCs over gRPC.
//! - [`elections`]: when a replica stands for election: pre-vote, and at once when a closed
//!   leader's lease has run out.
//! - [`types`]: the openraft type configuration.
//! - [`log_noise`]: openraft's log lines that Netting replaces, for the log set-up to drop.
//!
//! Log entries are serde-encoded [`catalog::CommandBatch`]es, never generated protobuf types,
//! so the wire format can change without migrating disks.

pub mod catalog;
pub mod catalog_handle;
pub mod elections;
pub mod log_noise;
pub mod network;
pub mod storage;
pub mod types;

pub use catalog_handle::{AppliedState, CatalogHandle};
pub use types::{NodeId, Raft, TypeConfig};
