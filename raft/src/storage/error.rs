//! Why the Raft storage refused to open or failed an operation.

use std::fmt::Display;
use std::path::{Path, PathBuf};

use openraft::{AnyError, ErrorSubject, ErrorVerb, StorageIOError};
use thiserror::Error;

use crate::types::NodeId;

/// A failure of the on-disk Raft storage.
///
/// The refusals at open (`WrongNode`, `WrongCluster`, `UnsupportedFormat`, `Corrupt`, `InUse`)
/// are fatal to the replica and leave the data directory as it was: an operator decides what to
/// do with it. The others are I/O failures of a running store; openraft treats them as fatal too.
#[derive(Debug, Error)]
pub enum StorageError {
    #[error("cannot create or read the raft data directory {path}: {source}")]
    DataDir {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },

    #[error(
        "the raft data in {path} belongs to node {found}, not to this node ({expected}); \
         refusing to open it (was the volume of another replica mounted here?)"
    )]
    WrongNode {
        path: PathBuf,
        found: NodeId,
        expected: NodeId,
    },

    #[error(
        "the raft data in {path} belongs to cluster {found:?}, not to this node's cluster \
         {expected:?}; refusing to open it"
    )]
    WrongCluster {
        path: PathBuf,
        found: String,
        expected: String,
    },

    #[error(
        "the raft data in {path} is unreadable by this build: storage format version {found} \
         is not the supported version {supported}; it was left as it is"
    )]
    UnsupportedFormat {
        path: PathBuf,
        found: u32,
        supported: u32,
    },

    #[error(
        "the raft data in {path} is corrupt or unreadable ({reason}); refusing to open it, \
         nothing was deleted"
    )]
    Corrupt { path: PathBuf, reason: String },

    #[error("the raft data in {path} is in use by another process")]
    InUse { path: PathBuf },

    #[error("raft storage {path}: {operation} failed: {source}")]
    Database {
        path: PathBuf,
        operation: &'static str,
        #[source]
        source: Box<redb::Error>,
    },

    #[error("raft storage: cannot encode {what}: {source}")]
    Encode {
        what: &'static str,
        #[source]
        source: serde_json::Error,
    },

    #[error("raft storage: a blocking storage task failed: {0}")]
    Task(String),
}

impl StorageError {
    /// Converts into openraft's error, naming what was being done when it failed.
    pub(crate) fn into_raft(
        self,
        subject: ErrorSubject<NodeId>,
        verb: ErrorVerb,
    ) -> openraft::StorageError<NodeId> {
        StorageIOError::new(subject, verb, AnyError::new(&self)).into()
    }
}

/// The file at `path` cannot be used as it is.
pub(crate) fn corrupt(path: &Path, reason: impl Display) -> StorageError {
    StorageError::Corrupt {
        path: path.to_owned(),
        reason: reason.to_string(),
    }
}
