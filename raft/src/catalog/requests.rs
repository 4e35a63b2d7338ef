//! Exactly-once writes (the client sessions of the Raft dissertation, §6.3).
//!
//! A write that may be retried — a follower retrying a forwarded write on a new leader, a client
//! retrying through another replica — carries a [`RequestId`]. The state machine records what
//! each request did, and answers a request it has seen with that answer instead of applying it
//! again: a retry that lands after another writer's change can no longer undo it.
//!
//! The record is replicated state (every replica decides the same at the same index) and is
//! kept in snapshots. It is bounded: the newest [`KEPT_RESULTS`] results are kept, the oldest
//! dropped first. A client's request older than the oldest result kept for it is refused as
//! expired, never applied, because whether it was applied can no longer be told. A client all
//! of whose results were dropped is forgotten; a retry from it after that many later writes is
//! treated as new.

use std::collections::{BTreeMap, VecDeque};

use serde::{Deserialize, Serialize};

use super::command::{Applied, ApplyError, CommandBatch, Outcome, RequestId};
use super::model::LogIndex;
use super::state::Catalog;

/// Results kept across all clients. A constant, not a flag: replicas with different bounds
/// would drop different results and then disagree on what a retry does.
pub const KEPT_RESULTS: usize = 65_536;

/// What one request did, as its writer was told.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RecordedResult {
    pub result: Result<Applied, ApplyError>,
    /// The catalog version the writer was told.
    pub version: LogIndex,
    /// The log index of the entry that applied it.
    pub index: LogIndex,
}

/// What the record says of a request about to be applied.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Seen<'a> {
    /// Not applied before: apply it.
    New,
    /// Applied before, with this result.
    Duplicate(&'a RecordedResult),
    /// Older than the client's record reaches: refuse it.
    Expired { oldest_kept: u64 },
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
struct ClientRecord {
    #[serde(with = "super::map_as_pairs")]
    results: BTreeMap<u64, RecordedResult>,
    /// Highest sequence whose result was dropped (0: none was).
    dropped_through: u64,
}

/// The results of recent requests, per client.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RequestTable {
    clients: BTreeMap<String, ClientRecord>,
    /// Every kept result, oldest first: the order in which they are dropped.
    order: VecDeque<RequestId>,
    #[serde(skip, default = "kept_results")]
    capacity: usize,
}

fn kept_results() -> usize {
    KEPT_RESULTS
}

impl Default for RequestTable {
    fn default() -> Self {
        Self::with_capacity(KEPT_RESULTS)
    }
}

impl RequestTable {
    /// A table keeping at most `capacity` results (at least one). Production uses
    /// [`KEPT_RESULTS`]; a smaller bound is for tests.
    pub fn with_capacity(capacity: usize) -> Self {
        Self {
            clients: BTreeMap::new(),
            order: VecDeque::new(),
            capacity: capacity.max(1),
        }
    }

    /// What the record says of `id`.
    pub fn check(&self, id: &RequestId) -> Seen<'_> {
        let Some(client) = self.clients.get(&id.client) else {
            return Seen::New;
        };
        if let Some(recorded) = client.results.get(&id.sequence) {
            return Seen::Duplicate(recorded);
        }
        if id.sequence <= client.dropped_through {
            let oldest_kept = client
                .results
                .keys()
                .next()
                .copied()
                .unwrap_or(client.dropped_through + 1);
            return Seen::Expired { oldest_kept };
        }
        Seen::New
    }

    /// Records what `id` did, dropping the oldest result when the table is full.
    pub fn record(&mut self, id: RequestId, recorded: RecordedResult) {
        let client = self.clients.entry(id.client.clone()).or_default();
        if client.results.insert(id.sequence, recorded).is_none() {
            self.order.push_back(id);
        }
        while self.order.len() > self.capacity {
            let Some(oldest) = self.order.pop_front() else {
                break;
            };
            self.drop_result(&oldest);
        }
    }

    fn drop_result(&mut self, id: &RequestId) {
        let Some(client) = self.clients.get_mut(&id.client) else {
            return;
        };
        client.results.remove(&id.sequence);
        client.dropped_through = client.dropped_through.max(id.sequence);
        if client.results.is_empty() {
            self.clients.remove(&id.client);
        }
    }

    /// Results kept.
    pub fn len(&self) -> usize {
        self.order.len()
    }

    pub fn is_empty(&self) -> bool {
        self.order.is_empty()
    }

    /// Clients with at least one kept result.
    pub fn client_count(&self) -> usize {
        self.clients.len()
    }
}

/// What applying a batch did to each command, and which commands were applied rather than
/// answered from the record (for the caller's bookkeeping).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BatchApplied {
    pub outcomes: Vec<Outcome>,
    /// The request ids applied by this entry, in order.
    pub applied_requests: Vec<RequestId>,
}

/// Applies one log entry's batch at `index`: every new command once, a request seen before
/// (in an earlier entry or earlier in this one) answered as it was then.
pub fn apply_batch(
    catalog: &mut Catalog,
    requests: &mut RequestTable,
    index: LogIndex,
    batch: &CommandBatch,
) -> BatchApplied {
    /// How a command's answer is found once the entry's version is known.
    enum Answer {
        Now(Result<Applied, ApplyError>),
        Recorded(RecordedResult),
        /// The same request earlier in this batch, at this position.
        SameAs(usize),
    }
    let mut answers = Vec::with_capacity(batch.commands.len());
    let mut applied_here: BTreeMap<&RequestId, usize> = BTreeMap::new();
    for (position, (id, command)) in batch.requests().enumerate() {
        let answer = match id {
            None => Answer::Now(catalog.apply(index, command)),
            Some(id) => match (applied_here.get(id), requests.check(id)) {
                (Some(first), _) => Answer::SameAs(*first),
                (None, Seen::Duplicate(recorded)) => Answer::Recorded(recorded.clone()),
                (None, Seen::Expired { oldest_kept }) => {
                    Answer::Now(Err(ApplyError::RequestExpired {
                        request: id.sequence,
                        client: id.client.clone(),
                        oldest_kept,
                    }))
                }
                (None, Seen::New) => {
                    applied_here.insert(id, position);
                    Answer::Now(catalog.apply(index, command))
                }
            },
        };
        answers.push(answer);
    }

    let version = catalog.version();
    let mut outcomes: Vec<Outcome> = Vec::with_capacity(answers.len());
    for answer in answers {
        let outcome = match answer {
            Answer::Now(result) => Outcome {
                result,
                version,
                duplicate: false,
            },
            Answer::Recorded(recorded) => Outcome {
                result: recorded.result,
                version: recorded.version,
                duplicate: true,
            },
            Answer::SameAs(first) => Outcome {
                duplicate: true,
                ..outcomes[first].clone()
            },
        };
        outcomes.push(outcome);
    }

    let mut applied_requests = Vec::with_capacity(applied_here.len());
    let mut in_order: Vec<(usize, &RequestId)> = applied_here
        .into_iter()
        .map(|(id, pos)| (pos, id))
        .collect();
    in_order.sort_unstable();
    for (position, id) in in_order {
        let outcome = &outcomes[position];
        requests.record(
            id.clone(),
            RecordedResult {
                result: outcome.result.clone(),
                version: outcome.version,
                index,
            },
        );
        applied_requests.push(id.clone());
    }
    BatchApplied {
        outcomes,
        applied_requests,
    }
}

#[cfg(test)]
mod tests;
