//! How an error of the remote `openraft::Raft` crosses the wire.
//!
//! openraft acts on the exact error: a `SnapshotMismatch` makes the leader restart the
//! snapshot transfer from offset 0, a `Fatal` stops replication to that peer. A gRPC code
//! alone cannot carry that, so the server puts the serde_json of the `RaftError` in a binary
//! metadata entry of the status, and the client rebuilds it. The code is still chosen to make
//! sense to generic gRPC tooling.

use openraft::error::{Fatal, RaftError};
use serde::Serialize;
use serde::de::DeserializeOwned;
use thiserror::Error;
use tonic::metadata::{BinaryMetadataValue, MetadataMap};
use tonic::{Code, Status};

use crate::types::NodeId;

/// Binary metadata key of the serde_json-encoded `RaftError` in an error status.
pub(crate) const RAFT_ERROR_KEY: &str = "netting-raft-error-bin";

/// The remote error entry was present but could not be read.
#[derive(Debug, Error)]
#[error("the peer's raft error does not decode: {0}")]
pub(crate) struct UndecodableRaftError(String);

/// The status a server returns for an error of its Raft node.
pub(crate) fn raft_error_to_status<E>(err: &RaftError<NodeId, E>) -> Status
where
    E: std::error::Error + Serialize,
{
    let code = match err {
        // The node is shutting down: another replica (or this one, restarted) will answer.
        RaftError::Fatal(Fatal::Stopped) => Code::Unavailable,
        RaftError::Fatal(_) => Code::Internal,
        // The only API error of these RPCs is a snapshot chunk at an unexpected offset, which
        // gRPC calls a failed sequencer check.
        RaftError::APIError(_) => Code::Aborted,
    };
    let mut metadata = MetadataMap::new();
    match serde_json::to_vec(err) {
        Ok(json) => {
            metadata.insert_bin(RAFT_ERROR_KEY, BinaryMetadataValue::from_bytes(&json));
        }
        // The client then sees a plain status and treats it as a network error, which
        // openraft retries: worse than exact, never wrong.
        Err(e) => tracing::warn!(error = %e, "cannot encode raft error for the wire"),
    }
    Status::with_metadata(code, err.to_string(), metadata)
}

/// The remote `RaftError` carried by `status`, if it carries one.
pub(crate) fn raft_error_from_status<E>(
    status: &Status,
) -> Option<Result<RaftError<NodeId, E>, UndecodableRaftError>>
where
    E: std::error::Error + DeserializeOwned,
{
    let value = status.metadata().get_bin(RAFT_ERROR_KEY)?;
    Some(
        value
            .to_bytes()
            .map_err(|e| UndecodableRaftError(e.to_string()))
            .and_then(|bytes| {
                serde_json::from_slice(&bytes).map_err(|e| UndecodableRaftError(e.to_string()))
            }),
    )
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]

    use openraft::SnapshotSegmentId;
    use openraft::error::{InstallSnapshotError, SnapshotMismatch};

    use super::*;

    /// A snapshot mismatch survives the trip through a status, so the leader can restart.
    #[test]
    fn snapshot_mismatch_round_trips() {
        let err = RaftError::<NodeId, _>::APIError(InstallSnapshotError::SnapshotMismatch(
            SnapshotMismatch {
                expect: SnapshotSegmentId {
                    id: "s".into(),
                    offset: 0,
                },
                got: SnapshotSegmentId {
                    id: "s".into(),
                    offset: 10,
                },
            },
        ));
        let status = raft_error_to_status(&err);
        assert_eq!(status.code(), Code::Aborted);
        let back = raft_error_from_status::<InstallSnapshotError>(&status)
            .unwrap()
            .unwrap();
        assert_eq!(back, err);
    }

    /// A stopped node answers UNAVAILABLE and the client still learns it is `Fatal::Stopped`.
    #[test]
    fn stopped_round_trips() {
        let err = RaftError::<NodeId>::Fatal(Fatal::Stopped);
        let status = raft_error_to_status(&err);
        assert_eq!(status.code(), Code::Unavailable);
        let back = raft_error_from_status::<openraft::error::Infallible>(&status)
            .unwrap()
            .unwrap();
        assert_eq!(back, err);
    }

    /// A status without the entry is not a remote raft error.
    #[test]
    fn plain_status_has_no_raft_error() {
        let status = Status::unavailable("connection refused");
        assert!(raft_error_from_status::<openraft::error::Infallible>(&status).is_none());
    }
}
