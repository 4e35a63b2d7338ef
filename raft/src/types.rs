//! The openraft type configuration shared by every Netting replica.

use std::io::Cursor;

use crate::catalog::{BatchResponse, CommandBatch};

/// Identifies a replica. With a StatefulSet it is the pod's ordinal.
pub type NodeId = u64;

openraft::declare_raft_types!(
    /// Netting's Raft types: entries carry catalog command batches, members are addressed by
    /// their gRPC address.
    pub TypeConfig:
        D = CommandBatch,
        R = BatchResponse,
        NodeId = NodeId,
        Node = openraft::BasicNode,
        Entry = openraft::Entry<TypeConfig>,
        SnapshotData = Cursor<Vec<u8>>,
        AsyncRuntime = openraft::TokioRuntime,
);

pub type Raft = openraft::Raft<TypeConfig>;
pub type LogId = openraft::LogId<NodeId>;
pub type Vote = openraft::Vote<NodeId>;
pub type Entry = openraft::Entry<TypeConfig>;
pub type StoredMembership = openraft::StoredMembership<NodeId, openraft::BasicNode>;
pub type SnapshotMeta = openraft::SnapshotMeta<NodeId, openraft::BasicNode>;
pub type Snapshot = openraft::storage::Snapshot<TypeConfig>;
pub type RaftMetrics = openraft::RaftMetrics<NodeId, openraft::BasicNode>;
