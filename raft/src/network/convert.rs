//! Conversions between openraft's RPC messages and `netting.raft.v1`.
//!
//! openraft and the generated code are both foreign to this crate, so the conversions are
//! free functions rather than `From`/`TryFrom` impls. Encoding is fallible only where a serde
//! payload is produced; decoding checks every field the proto3 encoding makes optional but
//! Raft needs, and an error names the field by its path in the message
//! (`entries[3].log_id.leader_id`), which the server returns as `INVALID_ARGUMENT`.
//!
//! Normal entries carry the serde_json bytes of a [`CommandBatch`](crate::catalog::CommandBatch)
//! — the same encoding as the log on disk — and membership payloads the serde_json bytes of
//! openraft's own `Membership` / `StoredMembership`.

use netting_proto::raft::v1 as pb;
use openraft::raft::{
    AppendEntriesRequest, AppendEntriesResponse, InstallSnapshotRequest, InstallSnapshotResponse,
    VoteRequest, VoteResponse,
};
use openraft::{CommittedLeaderId, EntryPayload, LeaderId};
use thiserror::Error;

use crate::types::{Entry, LogId, NodeId, SnapshotMeta, TypeConfig, Vote};

#[cfg(test)]
mod tests;

/// A message that cannot be converted; `field` is the path of the offending field.
#[derive(Debug, Error)]
pub enum ConvertError {
    #[error("field `{field}` is missing")]
    Missing { field: String },
    #[error("field `{field}` does not decode: {source}")]
    Malformed {
        field: String,
        #[source]
        source: serde_json::Error,
    },
    #[error("field `{field}` cannot be encoded: {source}")]
    Unencodable {
        field: String,
        #[source]
        source: serde_json::Error,
    },
}

impl ConvertError {
    /// Path of the field the error is about, e.g. `entries[0].normal`.
    pub fn field(&self) -> &str {
        match self {
            ConvertError::Missing { field }
            | ConvertError::Malformed { field, .. }
            | ConvertError::Unencodable { field, .. } => field,
        }
    }

    fn missing(field: &str) -> Self {
        ConvertError::Missing {
            field: field.to_owned(),
        }
    }

    fn malformed(field: &str, source: serde_json::Error) -> Self {
        ConvertError::Malformed {
            field: field.to_owned(),
            source,
        }
    }

    fn unencodable(field: &str, source: serde_json::Error) -> Self {
        ConvertError::Unencodable {
            field: field.to_owned(),
            source,
        }
    }

    /// Prefixes the field path with the enclosing field, on the error path only so that a
    /// successful conversion allocates no path strings.
    fn within(self, parent: &str) -> Self {
        let nest = |field: String| format!("{parent}.{field}");
        match self {
            ConvertError::Missing { field } => ConvertError::Missing { field: nest(field) },
            ConvertError::Malformed { field, source } => ConvertError::Malformed {
                field: nest(field),
                source,
            },
            ConvertError::Unencodable { field, source } => ConvertError::Unencodable {
                field: nest(field),
                source,
            },
        }
    }
}

impl From<ConvertError> for tonic::Status {
    fn from(err: ConvertError) -> Self {
        tonic::Status::invalid_argument(format!("malformed raft message: {err}"))
    }
}

fn required<T>(value: Option<T>, field: &str) -> Result<T, ConvertError> {
    value.ok_or_else(|| ConvertError::missing(field))
}

fn leader_id_to_proto(term: u64, node_id: NodeId) -> pb::LeaderId {
    pb::LeaderId { term, node_id }
}

pub fn vote_to_proto(vote: &Vote) -> pb::Vote {
    pb::Vote {
        leader_id: Some(leader_id_to_proto(
            vote.leader_id.term,
            vote.leader_id.node_id,
        )),
        committed: vote.committed,
    }
}

pub fn vote_from_proto(vote: pb::Vote) -> Result<Vote, ConvertError> {
    let leader = required(vote.leader_id, "leader_id")?;
    Ok(Vote {
        leader_id: LeaderId::new(leader.term, leader.node_id),
        committed: vote.committed,
    })
}

pub fn log_id_to_proto(log_id: &LogId) -> pb::LogId {
    pb::LogId {
        leader_id: Some(leader_id_to_proto(
            log_id.leader_id.term,
            log_id.leader_id.node_id,
        )),
        index: log_id.index,
    }
}

pub fn log_id_from_proto(log_id: pb::LogId) -> Result<LogId, ConvertError> {
    let leader = required(log_id.leader_id, "leader_id")?;
    Ok(LogId::new(
        CommittedLeaderId::new(leader.term, leader.node_id),
        log_id.index,
    ))
}

fn optional_log_id_from_proto(
    log_id: Option<pb::LogId>,
    field: &str,
) -> Result<Option<LogId>, ConvertError> {
    log_id
        .map(|id| log_id_from_proto(id).map_err(|e| e.within(field)))
        .transpose()
}

fn required_vote_from_proto(vote: Option<pb::Vote>) -> Result<Vote, ConvertError> {
    vote_from_proto(required(vote, "vote")?).map_err(|e| e.within("vote"))
}

pub fn entry_to_proto(entry: &Entry) -> Result<pb::Entry, ConvertError> {
    use pb::entry::Payload;
    let payload = match &entry.payload {
        EntryPayload::Blank => Payload::Blank(pb::Empty {}),
        EntryPayload::Normal(batch) => Payload::Normal(
            serde_json::to_vec(batch).map_err(|e| ConvertError::unencodable("normal", e))?,
        ),
        EntryPayload::Membership(membership) => Payload::Membership(
            serde_json::to_vec(membership)
                .map_err(|e| ConvertError::unencodable("membership", e))?,
        ),
    };
    Ok(pb::Entry {
        log_id: Some(log_id_to_proto(&entry.log_id)),
        payload: Some(payload),
    })
}

pub fn entry_from_proto(entry: pb::Entry) -> Result<Entry, ConvertError> {
    use pb::entry::Payload;
    let log_id =
        log_id_from_proto(required(entry.log_id, "log_id")?).map_err(|e| e.within("log_id"))?;
    let payload = match required(entry.payload, "payload")? {
        Payload::Blank(pb::Empty {}) => EntryPayload::Blank,
        Payload::Normal(bytes) => EntryPayload::Normal(
            serde_json::from_slice(&bytes).map_err(|e| ConvertError::malformed("normal", e))?,
        ),
        Payload::Membership(bytes) => EntryPayload::Membership(
            serde_json::from_slice(&bytes).map_err(|e| ConvertError::malformed("membership", e))?,
        ),
    };
    Ok(Entry { log_id, payload })
}

pub fn snapshot_meta_to_proto(meta: &SnapshotMeta) -> Result<pb::SnapshotMeta, ConvertError> {
    Ok(pb::SnapshotMeta {
        last_log_id: meta.last_log_id.as_ref().map(log_id_to_proto),
        last_membership: serde_json::to_vec(&meta.last_membership)
            .map_err(|e| ConvertError::unencodable("last_membership", e))?,
        snapshot_id: meta.snapshot_id.clone(),
    })
}

pub fn snapshot_meta_from_proto(meta: pb::SnapshotMeta) -> Result<SnapshotMeta, ConvertError> {
    Ok(SnapshotMeta {
        last_log_id: optional_log_id_from_proto(meta.last_log_id, "last_log_id")?,
        last_membership: serde_json::from_slice(&meta.last_membership)
            .map_err(|e| ConvertError::malformed("last_membership", e))?,
        snapshot_id: meta.snapshot_id,
    })
}

pub fn append_entries_request_to_proto(
    req: &AppendEntriesRequest<TypeConfig>,
) -> Result<pb::AppendEntriesRequest, ConvertError> {
    let entries = req
        .entries
        .iter()
        .enumerate()
        .map(|(i, entry)| entry_to_proto(entry).map_err(|e| e.within(&format!("entries[{i}]"))))
        .collect::<Result<Vec<_>, _>>()?;
    Ok(pb::AppendEntriesRequest {
        vote: Some(vote_to_proto(&req.vote)),
        prev_log_id: req.prev_log_id.as_ref().map(log_id_to_proto),
        entries,
        leader_commit: req.leader_commit.as_ref().map(log_id_to_proto),
    })
}

pub fn append_entries_request_from_proto(
    req: pb::AppendEntriesRequest,
) -> Result<AppendEntriesRequest<TypeConfig>, ConvertError> {
    let entries = req
        .entries
        .into_iter()
        .enumerate()
        .map(|(i, entry)| entry_from_proto(entry).map_err(|e| e.within(&format!("entries[{i}]"))))
        .collect::<Result<Vec<_>, _>>()?;
    Ok(AppendEntriesRequest {
        vote: required_vote_from_proto(req.vote)?,
        prev_log_id: optional_log_id_from_proto(req.prev_log_id, "prev_log_id")?,
        entries,
        leader_commit: optional_log_id_from_proto(req.leader_commit, "leader_commit")?,
    })
}

/// `PartialSuccess(None)` ("none of the entries matched") has no natural proto3 form, because
/// a message inside a `oneof` is always present: it travels as a `partial_success` log id
/// without a leader id, which no real log id ever is.
pub fn append_entries_response_to_proto(
    resp: &AppendEntriesResponse<NodeId>,
) -> pb::AppendEntriesResponse {
    use pb::append_entries_response::Result as R;
    let result = match resp {
        AppendEntriesResponse::Success => R::Success(pb::Empty {}),
        AppendEntriesResponse::PartialSuccess(Some(log_id)) => {
            R::PartialSuccess(log_id_to_proto(log_id))
        }
        AppendEntriesResponse::PartialSuccess(None) => R::PartialSuccess(pb::LogId {
            leader_id: None,
            index: 0,
        }),
        AppendEntriesResponse::Conflict => R::Conflict(pb::Empty {}),
        AppendEntriesResponse::HigherVote(vote) => R::HigherVote(vote_to_proto(vote)),
    };
    pb::AppendEntriesResponse {
        result: Some(result),
    }
}

pub fn append_entries_response_from_proto(
    resp: pb::AppendEntriesResponse,
) -> Result<AppendEntriesResponse<NodeId>, ConvertError> {
    use pb::append_entries_response::Result as R;
    Ok(match required(resp.result, "result")? {
        R::Success(pb::Empty {}) => AppendEntriesResponse::Success,
        R::PartialSuccess(pb::LogId {
            leader_id: None, ..
        }) => AppendEntriesResponse::PartialSuccess(None),
        R::PartialSuccess(log_id) => AppendEntriesResponse::PartialSuccess(Some(
            log_id_from_proto(log_id).map_err(|e| e.within("partial_success"))?,
        )),
        R::Conflict(pb::Empty {}) => AppendEntriesResponse::Conflict,
        R::HigherVote(vote) => AppendEntriesResponse::HigherVote(
            vote_from_proto(vote).map_err(|e| e.within("higher_vote"))?,
        ),
    })
}

pub fn vote_request_to_proto(req: &VoteRequest<NodeId>) -> pb::VoteRequest {
    pb::VoteRequest {
        vote: Some(vote_to_proto(&req.vote)),
        last_log_id: req.last_log_id.as_ref().map(log_id_to_proto),
    }
}

pub fn vote_request_from_proto(req: pb::VoteRequest) -> Result<VoteRequest<NodeId>, ConvertError> {
    Ok(VoteRequest {
        vote: required_vote_from_proto(req.vote)?,
        last_log_id: optional_log_id_from_proto(req.last_log_id, "last_log_id")?,
    })
}

pub fn vote_response_to_proto(resp: &VoteResponse<NodeId>) -> pb::VoteResponse {
    pb::VoteResponse {
        vote: Some(vote_to_proto(&resp.vote)),
        vote_granted: resp.vote_granted,
        last_log_id: resp.last_log_id.as_ref().map(log_id_to_proto),
    }
}

pub fn vote_response_from_proto(
    resp: pb::VoteResponse,
) -> Result<VoteResponse<NodeId>, ConvertError> {
    Ok(VoteResponse {
        vote: required_vote_from_proto(resp.vote)?,
        vote_granted: resp.vote_granted,
        last_log_id: optional_log_id_from_proto(resp.last_log_id, "last_log_id")?,
    })
}

/// Takes the request by value: the chunk can be megabytes and is moved, not copied.
pub fn install_snapshot_request_to_proto(
    req: InstallSnapshotRequest<TypeConfig>,
) -> Result<pb::InstallSnapshotRequest, ConvertError> {
    Ok(pb::InstallSnapshotRequest {
        vote: Some(vote_to_proto(&req.vote)),
        meta: Some(snapshot_meta_to_proto(&req.meta).map_err(|e| e.within("meta"))?),
        offset: req.offset,
        data: req.data,
        done: req.done,
    })
}

pub fn install_snapshot_request_from_proto(
    req: pb::InstallSnapshotRequest,
) -> Result<InstallSnapshotRequest<TypeConfig>, ConvertError> {
    let meta = required(req.meta, "meta")?;
    Ok(InstallSnapshotRequest {
        vote: required_vote_from_proto(req.vote)?,
        meta: snapshot_meta_from_proto(meta).map_err(|e| e.within("meta"))?,
        offset: req.offset,
        data: req.data,
        done: req.done,
    })
}

pub fn install_snapshot_response_to_proto(
    resp: &InstallSnapshotResponse<NodeId>,
) -> pb::InstallSnapshotResponse {
    pb::InstallSnapshotResponse {
        vote: Some(vote_to_proto(&resp.vote)),
    }
}

pub fn install_snapshot_response_from_proto(
    resp: pb::InstallSnapshotResponse,
) -> Result<InstallSnapshotResponse<NodeId>, ConvertError> {
    Ok(InstallSnapshotResponse {
        vote: required_vote_from_proto(resp.vote)?,
    })
}
